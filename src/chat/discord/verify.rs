//! Discord's interactions, checked before anything else is read from them: the signature over
//! `timestamp ‖ raw body` (serenity's `Verifier`), a timestamp no older (or newer) than
//! `discord.interaction_max_age_secs`, and an interaction id not seen before by any replica
//! (kept in the database, so a replay to another replica or after a restart is refused too).
//! Discord itself sends bad signatures on purpose to check this.

use std::time::Duration;

use serenity::interactions_endpoint::Verifier;

use crate::config::DiscordSettings;
use crate::request::Platform;

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
    /// The metric label: one of a closed set.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::MissingSignature => "MissingSignature",
            Refusal::BadSignature => "BadSignature",
            Refusal::Stale => "Stale",
            Refusal::Replayed => "Replayed",
            Refusal::Unrecorded => "Unrecorded",
        }
    }

    pub fn message(&self) -> &'static str {
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

    /// Checks a request's signature (`X-Signature-Ed25519`) and age (`X-Signature-Timestamp`);
    /// on success answers the parsed interaction. Whether it is a replay is
    /// [`InteractionGuard::first_sight`]'s to say.
    pub fn check(
        &self,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<serde_json::Value, Refusal> {
        let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
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
        first_sight(store, interaction, self.max_age * 2, now).await
    }
}

/// Records the interaction's id in the database for `keep`; answers [`Refusal::Replayed`] when
/// it was there already. Shared by the HTTP route and the Gateway, which may deliver an
/// interaction again after a resume: either way it runs once.
pub async fn first_sight(
    store: &crate::store::Store,
    interaction: &serde_json::Value,
    keep: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Refusal> {
    let id = interaction
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|id| !id.is_empty() && id.len() <= 32)
        .ok_or(Refusal::BadSignature)?;
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::hours(2));
    let expires = crate::domain::format_time(now + keep);
    match store
        .first_sight(Platform::Discord.as_str(), id, &expires)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::Replayed),
        Err(e) => {
            tracing::error!(error = %e, "could not record a Discord interaction id");
            Err(Refusal::Unrecorded)
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
