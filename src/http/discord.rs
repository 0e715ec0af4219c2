//! `POST /discord/interactions`: Discord's HTTP interactions, signed with Ed25519.
//!
//! Every request is checked before anything else is read from it: the signature over
//! `timestamp ‖ raw body` (serenity's `Verifier`), a timestamp no older (or newer) than
//! `discord.interaction_max_age_secs`, and an interaction id not seen before by any replica
//! (kept in the database, so a replay to another replica or after a restart is refused too).
//! Any failure is a 401 that changes nothing; Discord itself sends bad signatures on purpose to
//! check this.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use serenity::interactions_endpoint::Verifier;

use super::AppState;
use crate::chat::discord::render::{deferred_response, initial_response, update_message};
use crate::chat::discord::DiscordAdapter;
use crate::chat::DeliveryError;
use crate::config::DiscordSettings;
use crate::request::RawValue;
use crate::request::{Actor, Answer, BoxFuture, Origin, Platform, Reply, Request, Responder};

/// Interaction types (Discord API).
const PING: u64 = 1;
/// Response types.
const PONG: u64 = 1;

/// Checks Discord's signature, the request's age and replays.
pub struct InteractionGuard {
    verifier: Verifier,
    max_age: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    MissingSignature,
    BadSignature,
    Stale,
    Replayed,
    /// The database could not record the id, so a replay could not be told apart.
    Unrecorded,
}

impl Refusal {
    /// 503 when runbot could not check it (Discord may send the next one), else 401.
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Unrecorded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The metric label: one of a closed set.
    fn label(&self) -> &'static str {
        match self {
            Refusal::MissingSignature => "MissingSignature",
            Refusal::BadSignature => "BadSignature",
            Refusal::Stale => "Stale",
            Refusal::Replayed => "Replayed",
            Refusal::Unrecorded => "Unrecorded",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Refusal::MissingSignature => "missing X-Signature-Ed25519 or X-Signature-Timestamp",
            Refusal::BadSignature => "invalid request signature",
            Refusal::Stale => "request timestamp too old or in the future",
            Refusal::Replayed => "interaction already received",
            Refusal::Unrecorded => "runbot cannot record interactions right now; try again",
        }
    }
}

impl InteractionGuard {
    /// None when Discord interactions are not configured (no `discord.public_key`).
    pub fn from_settings(settings: &DiscordSettings) -> anyhow::Result<Option<InteractionGuard>> {
        let Some(hex) = &settings.public_key else {
            return Ok(None);
        };
        let bytes = decode_hex32(hex)
            .ok_or_else(|| anyhow::anyhow!("discord.public_key must be 64 hex characters"))?;
        let verifier = Verifier::try_new(bytes).map_err(|e| {
            anyhow::anyhow!("discord.public_key is not a valid Ed25519 public key: {e}")
        })?;
        Ok(Some(InteractionGuard {
            verifier,
            max_age: Duration::from_secs(settings.interaction_max_age_secs),
        }))
    }

    /// Checks a request's signature and age; on success answers the parsed interaction. Whether
    /// it is a replay is [`InteractionGuard::first_sight`]'s to say.
    pub fn check(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<serde_json::Value, Refusal> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(timestamp)) = (
            header("x-signature-ed25519"),
            header("x-signature-timestamp"),
        ) else {
            return Err(Refusal::MissingSignature);
        };
        self.verifier
            .verify(signature, timestamp, body)
            .map_err(|()| Refusal::BadSignature)?;
        let sent: i64 = timestamp.trim().parse().map_err(|_| Refusal::Stale)?;
        if now_unix.abs_diff(sent) > self.max_age.as_secs() {
            return Err(Refusal::Stale);
        }
        // Signed by Discord, so a body that is not JSON is Discord's to fix; still refused.
        let interaction: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| Refusal::BadSignature)?;
        Ok(interaction)
    }

    /// Records the interaction's id in the database: a replay (to any replica, before or after
    /// a restart) is refused. Kept twice the freshness window, so a request is never both
    /// fresh and forgotten whatever the clocks of the replicas say. A store that cannot be
    /// written refuses the request: its freshness cannot be proven.
    pub async fn first_sight(
        &self,
        store: &crate::store::Store,
        interaction: &serde_json::Value,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Refusal> {
        let id = interaction
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|id| !id.is_empty() && id.len() <= 32)
            .ok_or(Refusal::BadSignature)?;
        let keep =
            chrono::Duration::from_std(self.max_age * 2).unwrap_or(chrono::Duration::hours(2));
        let expires = crate::alerts::format_time(now + keep);
        match store.first_sight("discord", id, &expires).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::Replayed),
            Err(e) => {
                tracing::error!(error = %e, "could not record a Discord interaction id");
                Err(Refusal::Unrecorded)
            }
        }
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

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
    let checked = match guard.check(&headers, &body, now.timestamp()) {
        Ok(i) => guard.first_sight(&state.store, &i, now).await.map(|()| i),
        Err(refusal) => Err(refusal),
    };
    let interaction = match checked {
        Ok(i) => i,
        Err(refusal) => {
            metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "discord", "reason" => refusal.label()).increment(1);
            tracing::warn!(reason = refusal.message(), "Discord interaction refused");
            return (refusal.status(), refusal.message()).into_response();
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
    let responder = Arc::new(DiscordResponder {
        adapter: adapter.clone(),
        token,
    });
    let answer = dispatcher.handle(request, responder).await;
    Json(answer_json(&answer, component)).into_response()
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

/// Edits the answer through the interaction's token (valid 15 minutes).
struct DiscordResponder {
    adapter: Arc<DiscordAdapter>,
    token: String,
}

impl Responder for DiscordResponder {
    fn edit(&self, reply: Reply) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            // A result must not be lost to a rate limit (a deploy edits its message often) or
            // to a refused upload: wait out the limit a few times, then send the text alone.
            let mut reply = reply;
            for _ in 0..4 {
                match self
                    .adapter
                    .interaction_edit_original(&self.token, &reply)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(DeliveryError::RateLimited { retry_after }) => {
                        tokio::time::sleep(retry_after.min(Duration::from_secs(10))).await;
                    }
                    Err(DeliveryError::Permanent(e)) if reply.attachment.is_some() => {
                        tracing::warn!(error = %e, "Discord refused the attachment; sending the text alone");
                        reply.attachment = None;
                        reply
                            .text
                            .push_str("\n(the attached file was refused by Discord)");
                    }
                    Err(e) => return Err(anyhow::anyhow!("{e:?}")),
                }
            }
            Err(anyhow::anyhow!("Discord kept rate-limiting the edit"))
        })
    }
}
