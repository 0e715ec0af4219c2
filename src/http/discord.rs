//! `POST /discord/interactions`: Discord's HTTP interactions, signed with Ed25519.
//!
//! Every request is checked before anything else is read from it: the signature over
//! `timestamp ‖ raw body` (serenity's `Verifier`), a timestamp no older (or newer) than
//! `discord.interaction_max_age_secs`, and an interaction id not seen before. Any failure is a
//! 401 that changes nothing; Discord itself sends bad signatures on purpose to check this.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use serenity::interactions_endpoint::Verifier;

use super::AppState;
use crate::chat::discord::initial_response;
use crate::chat::Reply;
use crate::config::DiscordSettings;

/// Interaction types (Discord API).
const PING: u64 = 1;
/// Response types.
const PONG: u64 = 1;

/// Checks Discord's signature, the request's age and replays.
pub struct InteractionGuard {
    verifier: Verifier,
    max_age: Duration,
    /// Interaction ids seen within `max_age`: older requests are refused by their timestamp.
    seen: Mutex<HashMap<String, Instant>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    MissingSignature,
    BadSignature,
    Stale,
    Replayed,
}

impl Refusal {
    fn message(&self) -> &'static str {
        match self {
            Refusal::MissingSignature => "missing X-Signature-Ed25519 or X-Signature-Timestamp",
            Refusal::BadSignature => "invalid request signature",
            Refusal::Stale => "request timestamp too old or in the future",
            Refusal::Replayed => "interaction already received",
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
            seen: Mutex::new(HashMap::new()),
        }))
    }

    /// Checks a request; on success answers the parsed interaction.
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
        let id = interaction
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let mut seen = self.seen.lock().unwrap();
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) <= self.max_age);
        if seen.insert(id, now).is_some() {
            return Err(Refusal::Replayed);
        }
        Ok(interaction)
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
    let interaction = match guard.check(&headers, &body, chrono::Utc::now().timestamp()) {
        Ok(i) => i,
        Err(refusal) => {
            metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "discord", "reason" => format!("{refusal:?}")).increment(1);
            tracing::warn!(reason = refusal.message(), "Discord interaction refused");
            return (StatusCode::UNAUTHORIZED, refusal.message()).into_response();
        }
    };
    if interaction.get("type").and_then(|t| t.as_u64()) == Some(PING) {
        return Json(json!({ "type": PONG })).into_response();
    }
    // Commands and buttons reach the invocation core in a later step; until then, say so
    // plainly and only to the person who asked.
    Json(initial_response(&Reply {
        text: "runbot received this, but it does not run commands or buttons yet.".into(),
        ephemeral: true,
        ..Reply::default()
    }))
    .into_response()
}
