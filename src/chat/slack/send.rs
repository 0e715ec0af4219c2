//! Slack, sending: one Web API call with Slack's pacing, and its answer turned into what the
//! outbox does next. Slack answers errors as HTTP 200 with `{"ok":false,"error":…}`, and its
//! limits as HTTP 429 with `Retry-After`.
//!
//! Pacing, kept under Slack's published limits so that a storm gets no 429 at all:
//! `chat.postMessage` about one message per second per channel ([`POST_EVERY`]); `chat.update`
//! Tier 3, 50+ per minute per workspace ([`UPDATES_PER_MINUTE`], with a small burst); the
//! `conversations.*` methods Tier 3 too; `chat.postEphemeral` Tier 4, 100+ per minute
//! ([`TIER4_PER_MINUTE`]), its own bucket so answers to people do not queue behind DM opens and
//! history reads. A 429 pauses that method (and channel) for as long as
//! Slack says.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::chat::DeliveryError;

/// One new message per channel this often: Slack's "about 1 per second per channel".
pub const POST_EVERY: Duration = Duration::from_millis(1000);
/// Posts that may go at once to a quiet channel: Slack allows short bursts; two keeps well
/// inside them.
pub const POST_BURST: f64 = 2.0;
/// Edits per minute across the workspace: under Tier 3's 50.
pub const UPDATES_PER_MINUTE: f64 = 45.0;
/// Edits that may go at once after a quiet time.
pub const UPDATE_BURST: f64 = 5.0;
/// `chat.postEphemeral` per minute across the workspace: under Tier 4's 100.
pub const TIER4_PER_MINUTE: f64 = 90.0;
/// Tier 4 calls that may go at once after a quiet time.
pub const TIER4_BURST: f64 = 10.0;
/// Channel entries kept at most (routes, DMs): idle ones are dropped past this.
const CHANNELS_MAX: usize = 4096;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64) -> Bucket {
        Bucket {
            tokens: capacity,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, capacity: f64, per_sec: f64, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * per_sec;
        self.tokens = (self.tokens + gained).min(capacity);
        self.at = now;
    }

    /// How long until one token is there.
    fn wait(&self, per_sec: f64) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / per_sec)
        }
    }
}

/// What a call is paced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace<'a> {
    /// `chat.postMessage` to this channel.
    Post(&'a str),
    /// `chat.update`.
    Update,
    /// Tier 3 reads and DM opens (`conversations.*`).
    Tier3,
    /// Tier 4: `chat.postEphemeral` (answers to one person).
    Tier4,
    /// Unpaced: `response_url` posts (their own limit: 5 per URL), `apps.connections.open`.
    None,
}

/// Slack's limits as runbot keeps them.
pub struct Pacing {
    inner: Mutex<PacingState>,
}

struct PacingState {
    posts: HashMap<String, Bucket>,
    updates: Bucket,
    tier3: Bucket,
    tier4: Bucket,
    /// A 429 holds a method (and, for posts, a channel) until then.
    paused: HashMap<String, Instant>,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            inner: Mutex::new(PacingState {
                posts: HashMap::new(),
                updates: Bucket::full(UPDATE_BURST),
                tier3: Bucket::full(UPDATE_BURST),
                tier4: Bucket::full(TIER4_BURST),
                paused: HashMap::new(),
            }),
        }
    }
}

fn pause_key(pace: Pace<'_>) -> Option<String> {
    match pace {
        Pace::Post(channel) => Some(format!("post:{channel}")),
        Pace::Update => Some("update".into()),
        Pace::Tier3 => Some("tier3".into()),
        Pace::Tier4 => Some("tier4".into()),
        Pace::None => None,
    }
}

impl Pacing {
    /// Calls `pace` allows now (0 or more); the outbox asks before it sends.
    pub fn room(&self, pace: Pace<'_>) -> u64 {
        let now = Instant::now();
        let mut s = self.inner.lock().expect("pacing lock");
        if let Some(key) = pause_key(pace) {
            if s.paused.get(&key).is_some_and(|until| *until > now) {
                return 0;
            }
        }
        match pace {
            Pace::Post(channel) => match s.posts.get_mut(channel) {
                None => POST_BURST as u64,
                Some(b) => {
                    b.refill(POST_BURST, 1.0 / POST_EVERY.as_secs_f64(), now);
                    b.tokens as u64
                }
            },
            Pace::Update => {
                s.updates
                    .refill(UPDATE_BURST, UPDATES_PER_MINUTE / 60.0, now);
                s.updates.tokens as u64
            }
            Pace::Tier3 => {
                s.tier3.refill(UPDATE_BURST, UPDATES_PER_MINUTE / 60.0, now);
                s.tier3.tokens as u64
            }
            Pace::Tier4 => {
                s.tier4.refill(TIER4_BURST, TIER4_PER_MINUTE / 60.0, now);
                s.tier4.tokens as u64
            }
            Pace::None => u64::MAX,
        }
    }

    /// Takes a token, or says how long to wait for one.
    pub fn take(&self, pace: Pace<'_>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut s = self.inner.lock().expect("pacing lock");
        if let Some(key) = pause_key(pace) {
            if let Some(until) = s.paused.get(&key).copied() {
                if until > now {
                    return Err(until - now);
                }
                s.paused.remove(&key);
            }
        }
        let (bucket, capacity, per_sec) = match pace {
            Pace::Post(channel) => {
                if s.posts.len() >= CHANNELS_MAX && !s.posts.contains_key(channel) {
                    // Full buckets are idle channels: forgetting them changes nothing.
                    s.posts.retain(|_, b| {
                        let mut b = *b;
                        b.refill(POST_BURST, 1.0, now);
                        b.tokens < POST_BURST
                    });
                }
                let b = s
                    .posts
                    .entry(channel.to_string())
                    .or_insert_with(|| Bucket::full(POST_BURST));
                (b, POST_BURST, 1.0 / POST_EVERY.as_secs_f64())
            }
            Pace::Update => (&mut s.updates, UPDATE_BURST, UPDATES_PER_MINUTE / 60.0),
            Pace::Tier3 => (&mut s.tier3, UPDATE_BURST, UPDATES_PER_MINUTE / 60.0),
            Pace::Tier4 => (&mut s.tier4, TIER4_BURST, TIER4_PER_MINUTE / 60.0),
            Pace::None => return Ok(()),
        };
        bucket.refill(capacity, per_sec, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(bucket.wait(per_sec))
        }
    }

    /// Slack said 429: hold this method (and channel) for `retry_after`.
    pub fn pause(&self, pace: Pace<'_>, retry_after: Duration) {
        if let Some(key) = pause_key(pace) {
            let mut s = self.inner.lock().expect("pacing lock");
            if s.paused.len() > CHANNELS_MAX {
                let now = Instant::now();
                s.paused.retain(|_, until| *until > now);
            }
            s.paused.insert(key, Instant::now() + retry_after);
        }
    }
}

/// Slack's error codes that a retry may change; any other `ok: false` is for good.
fn transient_error(code: &str) -> bool {
    matches!(
        code,
        "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
            | "team_added_to_org"
    )
}

/// The answer of a Web API call as the outbox's next step: `ok: true` answers the body.
pub fn outcome(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    gone_when: &[&str],
) -> Result<serde_json::Value, DeliveryError> {
    if status == 429 {
        return Err(DeliveryError::RateLimited {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        });
    }
    if status >= 500 || status == 408 {
        return Err(DeliveryError::Transient(format!(
            "Slack answered HTTP {status}"
        )));
    }
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if status >= 400 => {
            return Err(DeliveryError::Permanent(format!(
                "Slack answered HTTP {status}"
            )))
        }
        Err(e) => {
            return Err(DeliveryError::Transient(format!(
                "Slack's answer is not JSON: {e}"
            )))
        }
    };
    if value.get("ok").and_then(|v| v.as_bool()) == Some(true) {
        return Ok(value);
    }
    let code = value
        .get("error")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown_error");
    // What Slack said about the arguments, for the log (never the token).
    let detail = value
        .pointer("/response_metadata/messages")
        .and_then(|m| m.as_array())
        .map(|m| {
            m.iter()
                .filter_map(|x| x.as_str())
                .take(3)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|d| !d.is_empty())
        .map(|d| format!(" ({})", crate::domain::text::clip(&d, 300)))
        .unwrap_or_default();
    if code == "ratelimited" {
        return Err(DeliveryError::RateLimited {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        });
    }
    if gone_when.contains(&code) {
        return Err(DeliveryError::MessageGone);
    }
    if transient_error(code) {
        return Err(DeliveryError::Transient(format!("Slack: {code}{detail}")));
    }
    Err(DeliveryError::Permanent(format!("Slack: {code}{detail}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_are_one_per_second_per_channel() {
        let p = Pacing::default();
        assert_eq!(p.room(Pace::Post("C1")), 2);
        assert!(p.take(Pace::Post("C1")).is_ok());
        assert!(p.take(Pace::Post("C1")).is_ok());
        assert_eq!(p.room(Pace::Post("C1")), 0);
        let wait = p.take(Pace::Post("C1")).unwrap_err();
        assert!(wait > Duration::from_millis(900), "{wait:?}");
        // Another channel has its own.
        assert!(p.take(Pace::Post("C2")).is_ok());
    }

    #[test]
    fn updates_burst_then_keep_under_tier_3() {
        let p = Pacing::default();
        for _ in 0..UPDATE_BURST as usize {
            assert!(p.take(Pace::Update).is_ok());
        }
        let wait = p.take(Pace::Update).unwrap_err();
        assert!(wait > Duration::from_millis(1000), "{wait:?}");
    }

    #[test]
    fn ephemerals_have_their_own_tier_4_bucket() {
        let p = Pacing::default();
        // Tier 3 spent (DM opens, history reads) leaves answers to people untouched.
        while p.take(Pace::Tier3).is_ok() {}
        for _ in 0..TIER4_BURST as usize {
            assert!(p.take(Pace::Tier4).is_ok());
        }
        let wait = p.take(Pace::Tier4).unwrap_err();
        // One every 60/90 s: well under Tier 3's 1.33 s.
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_millis(667),
            "{wait:?}"
        );
        p.pause(Pace::Tier4, Duration::from_secs(30));
        assert_eq!(p.room(Pace::Tier4), 0);
        assert!(p.room(Pace::Tier3) == 0 && p.room(Pace::Update) > 0);
    }

    #[test]
    fn a_429_pauses_the_method() {
        let p = Pacing::default();
        p.pause(Pace::Post("C1"), Duration::from_secs(30));
        assert_eq!(p.room(Pace::Post("C1")), 0);
        assert!(p.take(Pace::Post("C1")).unwrap_err() > Duration::from_secs(29));
        assert_eq!(p.room(Pace::Post("C2")), POST_BURST as u64);
    }

    #[test]
    fn answers_become_next_steps() {
        let ok = outcome(200, None, br#"{"ok":true,"ts":"1.2"}"#, &[]).unwrap();
        assert_eq!(ok["ts"], "1.2");
        assert!(matches!(
            outcome(429, Some(Duration::from_secs(7)), b"{}", &[]),
            Err(DeliveryError::RateLimited { retry_after }) if retry_after == Duration::from_secs(7)
        ));
        assert!(matches!(
            outcome(
                200,
                None,
                br#"{"ok":false,"error":"message_not_found"}"#,
                &["message_not_found"]
            ),
            Err(DeliveryError::MessageGone)
        ));
        assert!(matches!(
            outcome(200, None, br#"{"ok":false,"error":"invalid_blocks","response_metadata":{"messages":["[ERROR] too long"]}}"#, &[]),
            Err(DeliveryError::Permanent(e)) if e.contains("too long")
        ));
        assert!(matches!(
            outcome(503, None, b"", &[]),
            Err(DeliveryError::Transient(_))
        ));
        assert!(matches!(
            outcome(200, None, br#"{"ok":false,"error":"internal_error"}"#, &[]),
            Err(DeliveryError::Transient(_))
        ));
    }
}
