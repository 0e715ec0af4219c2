//! What Slack posts in HTTP mode, checked before anything else is read from it: the content
//! type, Slack's v0 signature (HMAC-SHA256 of `v0:{timestamp}:{raw body}` with the signing
//! secret, compared in constant time), a timestamp no older (or newer) than
//! `slack.request_max_age_secs`, and a request not seen before by any replica (its signature,
//! kept in the database's seen table, so a replay to another replica or after a restart is
//! refused too).
//!
//! Why not slack-morphism's `SlackEventSignatureVerifier`: it always reads the wall clock and
//! holds its own fixed 5-minute window, so `request_max_age_secs` could not be honoured, nor the
//! check tested at a given time; and it takes the body as `&str`. The same three lines of
//! hmac + subtle (both already in the tree) hash the raw bytes.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config::slack::SlackSettings;

/// The seen table's platform for signed HTTP requests (keyed by signature).
pub const SEEN_REQUESTS: &str = "slack";
/// The seen table's platform for Socket Mode envelopes (keyed by envelope id).
pub const SEEN_ENVELOPES: &str = "slack-envelope";

/// The largest body a Slack route reads. A `block_actions` payload carries the whole message
/// it was clicked on, url-encoded; runbot's own cards stay within Block Kit's limits and come
/// to well under 100 KB that way, and a slash command is a few hundred bytes. 1 MiB leaves
/// room and bounds what an unsigned request can make runbot hold before it is refused.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a request was refused: one of a closed set (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    WrongContentType,
    TooLarge,
    MissingSignature,
    BadSignature,
    Stale,
    Replayed,
    /// The database could not record the request, so a replay could not be told apart.
    Unrecorded,
    /// Signed, but not what Slack sends (no payload, a field of the wrong shape).
    Malformed,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::WrongContentType => "WrongContentType",
            Refusal::TooLarge => "TooLarge",
            Refusal::MissingSignature => "MissingSignature",
            Refusal::BadSignature => "BadSignature",
            Refusal::Stale => "Stale",
            Refusal::Replayed => "Replayed",
            Refusal::Unrecorded => "Unrecorded",
            Refusal::Malformed => "Malformed",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::WrongContentType => "wrong content type: Slack posts commands and interactions as application/x-www-form-urlencoded, events as application/json",
            Refusal::TooLarge => "request body larger than runbot takes from Slack (1 MiB)",
            Refusal::MissingSignature => "missing X-Slack-Signature or X-Slack-Request-Timestamp",
            Refusal::BadSignature => "invalid request signature (check slack.signing_secret)",
            Refusal::Stale => "request timestamp too old or in the future (check the clock, or slack.request_max_age_secs)",
            Refusal::Replayed => "request already received",
            Refusal::Unrecorded => "runbot cannot record requests right now; try again",
            Refusal::Malformed => "not a request Slack sends",
        }
    }
}

/// Checks Slack's signature, the request's age and replays.
pub struct RequestGuard {
    secret: SecretString,
    max_age: Duration,
}

impl RequestGuard {
    /// None without `slack.signing_secret` (socket mode needs none).
    pub fn from_settings(s: &SlackSettings) -> Option<RequestGuard> {
        Some(RequestGuard {
            secret: s.signing_secret.clone()?,
            max_age: Duration::from_secs(s.request_max_age_secs),
        })
    }

    /// `v0=` + hex of the HMAC of `v0:{timestamp}:{body}`.
    fn expected(&self, timestamp: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        let mut out = String::with_capacity(67);
        out.push_str("v0=");
        for b in mac.finalize().into_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Checks the signature and the age. The signature is checked first, so an unsigned
    /// request learns nothing about runbot's clock.
    pub fn check(
        &self,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), Refusal> {
        let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
            return Err(Refusal::MissingSignature);
        };
        // Slack's timestamps are whole seconds; anything else is not worth hashing.
        if timestamp.is_empty()
            || timestamp.len() > 12
            || !timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Refusal::BadSignature);
        }
        let expected = self.expected(timestamp, body);
        if expected.as_bytes().ct_eq(signature.as_bytes()).unwrap_u8() != 1 {
            return Err(Refusal::BadSignature);
        }
        let sent: i64 = timestamp.parse().map_err(|_| Refusal::BadSignature)?;
        if now_unix.abs_diff(sent) > self.max_age.as_secs() {
            return Err(Refusal::Stale);
        }
        Ok(())
    }

    /// Records the request's signature: a replay (to any replica, before or after a restart)
    /// is refused. The signature covers the timestamp and the body, so it names one request;
    /// kept twice the freshness window, so a request is never both fresh and forgotten.
    pub async fn first_sight(
        &self,
        store: &crate::store::Store,
        signature: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Refusal> {
        // Checked by `check` already: `v0=` and 64 hex digits.
        let key = signature.strip_prefix("v0=").unwrap_or(signature);
        first_sight(store, SEEN_REQUESTS, key, self.max_age * 2, now).await
    }
}

/// Records `id` under `platform` in the seen table for `keep`: [`Refusal::Replayed`] when it
/// was there already, [`Refusal::Unrecorded`] when the store could not be written (freshness
/// then cannot be proven, so the request is refused).
pub async fn first_sight(
    store: &crate::store::Store,
    platform: &str,
    id: &str,
    keep: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Refusal> {
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::hours(2));
    let expires = crate::domain::format_time(now + keep);
    match store.first_sight(platform, id, &expires).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::Replayed),
        Err(e) => {
            tracing::error!(error = %e, "could not record a Slack request in the seen table");
            Err(Refusal::Unrecorded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_age: u64) -> RequestGuard {
        RequestGuard {
            secret: SecretString::from("8f742231b10e8888abcd99yyyzzz85a5"),
            max_age: Duration::from_secs(max_age),
        }
    }

    /// Slack's own test vector (protocols.md).
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const TS: i64 = 1531420618;

    #[test]
    fn slacks_test_vector_passes_and_any_change_fails() {
        let g = guard(300);
        let ts = TS.to_string();
        assert_eq!(
            g.check(Some(SIGNATURE), Some(&ts), BODY.as_bytes(), TS + 10),
            Ok(())
        );
        let mut tampered = BODY.as_bytes().to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            g.check(Some(SIGNATURE), Some(&ts), &tampered, TS),
            Err(Refusal::BadSignature)
        );
        let later = (TS + 1).to_string();
        assert_eq!(
            g.check(Some(SIGNATURE), Some(&later), BODY.as_bytes(), TS),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            g.check(None, Some(&ts), BODY.as_bytes(), TS),
            Err(Refusal::MissingSignature)
        );
        assert_eq!(
            g.check(Some(SIGNATURE), Some("-1"), BODY.as_bytes(), TS),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn old_and_future_timestamps_are_stale() {
        let g = guard(300);
        let ts = TS.to_string();
        assert_eq!(
            g.check(Some(SIGNATURE), Some(&ts), BODY.as_bytes(), TS + 301),
            Err(Refusal::Stale)
        );
        assert_eq!(
            g.check(Some(SIGNATURE), Some(&ts), BODY.as_bytes(), TS - 301),
            Err(Refusal::Stale)
        );
        // A longer window (request_max_age_secs) is honoured.
        assert_eq!(
            guard(900).check(Some(SIGNATURE), Some(&ts), BODY.as_bytes(), TS + 600),
            Ok(())
        );
    }
}
