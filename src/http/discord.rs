//! `POST /discord/interactions`: Discord's HTTP interactions, signed with Ed25519. A thin
//! route: verify ([`crate::chat::discord::verify`]), then hand over to
//! [`crate::chat::discord::inbound`], which the Gateway shares. Any failed check is a 401
//! (503 when the replay check could not be recorded) that changes nothing. In gateway mode
//! (`discord.mode = "gateway"`) interactions do not come here: 404.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::AppState;
use crate::chat::discord::inbound;
use crate::chat::discord::verify::Refusal;
use crate::chat::platform::ReplyEditor;

pub fn router() -> Router<AppState> {
    Router::new().route("/discord/interactions", post(interactions))
}

async fn interactions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if state.discord_gateway {
        return (
            StatusCode::NOT_FOUND,
            "Discord gateway mode is on (discord.mode = \"gateway\"): interactions arrive over runbot's Gateway connection, not here",
        )
            .into_response();
    }
    let Some(guard) = &state.discord_interactions else {
        return (
            StatusCode::NOT_FOUND,
            "Discord interactions are not configured: set discord.public_key",
        )
            .into_response();
    };
    let now = chrono::Utc::now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let checked = match guard.check(
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
        &body,
        now.timestamp(),
    ) {
        Ok(i) => guard.first_sight(&state.store, &i, now).await.map(|()| i),
        Err(refusal) => Err(refusal),
    };
    let interaction = match checked {
        Ok(i) => i,
        Err(refusal) => {
            metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "discord", "reason" => refusal.label()).increment(1);
            tracing::warn!(reason = refusal.message(), "Discord interaction refused");
            return (status(&refusal), refusal.message()).into_response();
        }
    };
    // Later answers edit this one through the interaction's token.
    let answer = inbound::respond(
        &interaction,
        state.dispatcher.as_ref(),
        state.discord.as_ref(),
        |adapter, token| Arc::new(ReplyEditor::new(adapter.clone(), token)),
    )
    .await;
    Json(answer).into_response()
}

/// 503 when runbot could not check it (Discord may send the next one), else 401.
fn status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Unrecorded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    }
}
