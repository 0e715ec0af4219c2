//! `POST /discord/interactions`: Discord's HTTP interactions, signed with Ed25519. A thin
//! route: verify ([`crate::chat::discord::verify`]), parse into the core's [`Request`], hand
//! over to the dispatcher. Any failed check is a 401 (503 when the replay check could not be
//! recorded) that changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::chat::discord::render::{deferred_response, initial_response, update_message};
use crate::chat::discord::verify::Refusal;
use crate::chat::platform::ReplyEditor;
use crate::request::RawValue;
use crate::request::{Actor, Answer, Origin, Platform, Reply, Request};

/// Interaction types (Discord API).
const PING: u64 = 1;
/// Response types.
const PONG: u64 = 1;

pub fn router() -> Router<AppState> {
    Router::new().route("/discord/interactions", post(interactions))
}

async fn interactions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
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
    let kind = interaction.get("type").and_then(|t| t.as_u64());
    if kind == Some(PING) {
        return Json(json!({ "type": PONG })).into_response();
    }
    if kind == Some(AUTOCOMPLETE) {
        // runbot registers no autocomplete options; an empty list is the valid answer.
        return Json(json!({ "type": AUTOCOMPLETE_RESULT, "data": { "choices": [] } }))
            .into_response();
    }
    let (Some(dispatcher), Some(adapter)) = (&state.dispatcher, &state.discord) else {
        return Json(initial_response(&Reply {
            text: "runbot is not set up to run commands from Discord: set discord.bot_token and discord.application_id.".into(),
            ephemeral: true,
            ..Reply::default()
        }))
        .into_response();
    };
    let request = match to_request(&interaction) {
        Ok(r) => r,
        Err(why) => {
            return Json(initial_response(&Reply {
                text: format!("🚫 {why}"),
                ephemeral: true,
                refused: true,
                ..Reply::default()
            }))
            .into_response()
        }
    };
    let component = kind == Some(MESSAGE_COMPONENT);
    let token = interaction
        .get("token")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    // Later answers edit this one through the interaction's token (valid 15 minutes).
    let responder = Arc::new(ReplyEditor::new(adapter.clone(), token));
    let answer = dispatcher.handle(request, responder).await;
    Json(answer_json(&answer, component)).into_response()
}

/// 503 when runbot could not check it (Discord may send the next one), else 401.
fn status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Unrecorded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    }
}

/// Interaction types.
const APPLICATION_COMMAND: u64 = 2;
const MESSAGE_COMPONENT: u64 = 3;
const AUTOCOMPLETE: u64 = 4;
/// Response types.
const AUTOCOMPLETE_RESULT: u64 = 8;

/// Discord's interaction as the core's request: who, what, where. No Discord type passes.
fn to_request(i: &serde_json::Value) -> Result<Request, String> {
    let member = i.get("member");
    let user = member
        .and_then(|m| m.get("user"))
        .or_else(|| i.get("user"))
        .ok_or("Discord sent no user with this interaction")?;
    let user_id = user
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("Discord sent an interaction without a valid user id")?;
    let name = member
        .and_then(|m| m.get("nick"))
        .and_then(|v| v.as_str())
        .or_else(|| user.get("global_name").and_then(|v| v.as_str()))
        .or_else(|| user.get("username").and_then(|v| v.as_str()))
        .unwrap_or(user_id);
    let platform_roles = member
        .and_then(|m| m.get("roles"))
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let actor = Actor {
        platform: Platform::Discord,
        user_id: user_id.to_string(),
        name: name.chars().take(80).collect(),
        platform_roles,
        roles: Vec::new(),
    };
    let origin = Origin {
        channel_id: i
            .get("channel_id")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        message_id: i
            .get("message")
            .and_then(|m| m.get("id"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        group_id: None,
    };
    let data = i
        .get("data")
        .ok_or("Discord sent no data with this interaction")?;
    match i.get("type").and_then(|t| t.as_u64()) {
        Some(APPLICATION_COMMAND) => {
            let command = data
                .get("name")
                .and_then(|v| v.as_str())
                .ok_or("Discord sent a command without a name")?
                .to_string();
            let args = data
                .get("options")
                .and_then(|o| o.as_array())
                .map(|options| {
                    options
                        .iter()
                        .filter_map(|o| {
                            let name = o.get("name")?.as_str()?.to_string();
                            let value = match o.get("value")? {
                                serde_json::Value::Bool(b) => RawValue::Boolean(*b),
                                serde_json::Value::Number(n) => match n.as_i64() {
                                    Some(i) => RawValue::Integer(i),
                                    None => RawValue::Text(n.to_string()),
                                },
                                serde_json::Value::String(s) => RawValue::Text(s.clone()),
                                other => RawValue::Text(other.to_string()),
                            };
                            Some((name, value))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Request::Command {
                actor,
                command,
                args,
                origin,
            })
        }
        Some(MESSAGE_COMPONENT) => {
            let custom_id = data
                .get("custom_id")
                .and_then(|v| v.as_str())
                .ok_or("Discord sent a button without its id")?
                .to_string();
            Ok(Request::Button {
                actor,
                custom_id,
                origin,
            })
        }
        _ => Err("runbot answers slash commands and buttons only.".into()),
    }
}

/// The core's first answer as Discord's interaction response.
fn answer_json(answer: &Answer, component: bool) -> serde_json::Value {
    match answer {
        Answer::Message(reply) => initial_response(reply),
        Answer::Deferred { ephemeral } => deferred_response(*ephemeral),
        // Only a button's message can be replaced; anything else gets a new message.
        Answer::Update(reply) if component => update_message(reply),
        Answer::Update(reply) => initial_response(reply),
    }
}
