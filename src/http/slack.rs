//! `POST /slack/commands`, `/slack/interactions` and `/slack/events`: what Slack posts in HTTP
//! mode (`slack.mode = "http"`). Thin routes: check ([`crate::chat::slack::verify`]: content
//! type, body size, v0 signature, age, replay), then hand over to
//! [`crate::chat::slack::inbound`], which Socket Mode shares. A failed check is a 401 (503 when
//! the replay record could not be written, 413 too large, 415 the wrong content type) with a
//! one-line reason, counted, and changes nothing. In socket mode, or with Slack off, the
//! routes answer 404 saying why.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::chat::slack::inbound::{self, Inbound};
use crate::chat::slack::verify::{Refusal, MAX_BODY_BYTES};

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactions", post(interactions))
        .route("/slack/events", post(events))
        .route_layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

fn refused(refusal: Refusal) -> Response {
    metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "slack", "reason" => refusal.label()).increment(1);
    tracing::warn!(reason = refusal.message(), "Slack request refused");
    let status = match refusal {
        Refusal::Unrecorded => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::WrongContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::UNAUTHORIZED,
    };
    (status, refusal.message()).into_response()
}

/// The checks every route shares; the inbound side and the raw body once they pass.
/// `record`: refuse a replay (off for an event Slack retries, which runs nothing).
async fn checked(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    content_type: &str,
    record: bool,
) -> Result<(Arc<Inbound>, Bytes), Response> {
    if state.slack_socket {
        return Err((
            StatusCode::NOT_FOUND,
            "Slack Socket Mode is on (slack.mode = \"socket\"): commands and clicks arrive over runbot's own connection, not here",
        )
            .into_response());
    }
    let (Some(inbound), Some(guard)) = (&state.slack_inbound, &state.slack_requests) else {
        return Err((
            StatusCode::NOT_FOUND,
            "Slack is not set up here: set slack.bot_token, slack.signing_secret and slack.mode = \"http\" (see docs/slack.md)",
        )
            .into_response());
    };
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = sent_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(content_type) {
        return Err(refused(Refusal::WrongContentType));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            refused(Refusal::TooLarge)
        } else {
            (
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
                .into_response()
        }
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now();
    let signature = header("x-slack-signature");
    guard
        .check(
            signature,
            header("x-slack-request-timestamp"),
            &body,
            now.timestamp(),
        )
        .map_err(refused)?;
    if record {
        guard
            .first_sight(&state.store, signature.unwrap_or_default(), now)
            .await
            .map_err(refused)?;
    }
    Ok((inbound.clone(), body))
}

async fn commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (inbound, body) = match checked(&state, &headers, body, FORM, true).await {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let slash = match inbound::slash_command(&inbound::form_fields(&body)) {
        Ok(s) => s,
        Err(why) => {
            metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "slack", "reason" => Refusal::Malformed.label()).increment(1);
            // Signed by Slack: the person sees why, as a message only they see.
            return Json(inbound::refusal(&why)).into_response();
        }
    };
    let (first, url) = inbound.command(slash).await;
    // The 200 goes out now; edits wait for it (see ResponseUrl::open).
    url.open();
    Json(first).into_response()
}

async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (inbound, body) = match checked(&state, &headers, body, FORM, true).await {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let fields = inbound::form_fields(&body);
    let payload: Option<Value> = fields["payload"]
        .as_str()
        .and_then(|p| serde_json::from_str(p).ok());
    let Some(payload) = payload else {
        return refused(Refusal::Malformed);
    };
    if payload["type"] != json!("block_actions") {
        // Views and shortcuts: runbot opens none; acknowledged so Slack shows no error.
        return StatusCode::OK.into_response();
    }
    match inbound::block_actions(&payload) {
        // Slack wants the 200 within 3 s and ignores its body for a click: the answer goes by
        // response_url, from a task of its own.
        Ok(click) => {
            tokio::spawn(async move { inbound.click(click).await });
            StatusCode::OK.into_response()
        }
        Err(why) => {
            metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "slack", "reason" => Refusal::Malformed.label()).increment(1);
            tracing::warn!(reason = %why, "Slack click refused");
            (StatusCode::OK, why).into_response()
        }
    }
}

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Slack retries an event it got no timely 200 for, signed anew (or, within the same
    // second, the same): runbot acts on no event, so a retry is answered without the record.
    let retry = headers.contains_key("x-slack-retry-num");
    let (_, body) = match checked(&state, &headers, body, JSON, !retry).await {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return refused(Refusal::Malformed);
    };
    match event["type"].as_str() {
        Some("url_verification") => match event["challenge"].as_str() {
            Some(c) if c.len() <= 512 => Json(json!({ "challenge": c })).into_response(),
            _ => refused(Refusal::Malformed),
        },
        // runbot subscribes to no events: each (and each of Slack's retries of it, which carry
        // X-Slack-Retry-Num and a new signature) is acknowledged and nothing runs.
        _ => StatusCode::OK.into_response(),
    }
}
