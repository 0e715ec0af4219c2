//! Discord, sending: serenity's request routes with runbot's own pacing.
//!
//! serenity's own rate limiter cannot be used with a custom API base (see `design.md`), so
//! this adapter paces itself: a global limiter under Discord's 50 requests/s, and per-route
//! buckets learnt from Discord's `X-RateLimit-*` headers, which are respected before a request
//! is sent rather than after a 429. A 429 still sets the bucket (or the global pause) from
//! `retry_after`. Interaction webhooks are not counted against the bot's global limit (Discord
//! does not), but their routes still have buckets and can answer 429.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serenity::all::{ChannelId, CreateAttachment, CreateMessage, EditMessage, MessageId, Nonce};
use serenity::http::{LightMethod, Multipart, MultipartUpload, Request, Route};

use super::{limits, DiscordAdapter};
use crate::chat::{DeliveryError, Posted};
use crate::request::Attachment;

/// Buckets of interaction webhooks are kept while their window lasts; one per token would
/// otherwise pile up.
const INTERACTION_BUCKETS_KEPT: usize = 1024;

/// Where one request goes, for pacing: per route and channel, as Discord buckets them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct BucketKey {
    method: &'static str,
    channel: String,
}

#[derive(Debug, Default)]
pub(super) struct Bucket {
    /// Requests a window allows, as Discord last said.
    limit: Option<u64>,
    /// Requests left in the current window, as Discord last said.
    remaining: Option<u64>,
    /// When the window ends.
    reset_at: Option<Instant>,
}

impl DiscordAdapter {
    /// Creates a message; `nonce` makes a retried create return the first message instead of
    /// making a second one.
    pub(super) async fn create(
        &self,
        channel: &str,
        body: CreateMessage,
        nonce: &str,
    ) -> Result<Posted, DeliveryError> {
        let body = body
            .nonce(Nonce::String(nonce.chars().take(limits::NONCE).collect()))
            .enforce_nonce(true);
        let channel_id = parse_id(channel).map(ChannelId::new)?;
        let route = Route::ChannelMessages { channel_id };
        let answer = self
            .send(
                route,
                LightMethod::Post,
                channel,
                Pacing::Bot,
                Some(Body::Json(to_json(&body)?)),
            )
            .await?;
        answer
            .get("id")
            .and_then(|v| v.as_str())
            .map(|id| Posted {
                message_id: id.to_string(),
            })
            .ok_or_else(|| DeliveryError::Transient("Discord's answer has no message id".into()))
    }

    pub(super) async fn patch(
        &self,
        channel: &str,
        message_id: &str,
        body: EditMessage,
    ) -> Result<(), DeliveryError> {
        let route = Route::ChannelMessage {
            channel_id: parse_id(channel).map(ChannelId::new)?,
            message_id: parse_id(message_id).map(MessageId::new)?,
        };
        self.send(
            route,
            LightMethod::Patch,
            channel,
            Pacing::Bot,
            Some(Body::Json(to_json(&body)?)),
        )
        .await
        .map(|_| ())
    }

    /// Requests this channel's bucket lets out now, as Discord last said: what is left of the
    /// window, or a whole window once it has passed. None before the first answer.
    pub(super) fn room_for(&self, method: LightMethod, channel: &str) -> Option<u64> {
        let buckets = self.buckets.lock().unwrap();
        let b = buckets.get(&bucket_key(method, channel))?;
        match b.reset_at {
            Some(reset) if reset > Instant::now() => b.remaining,
            _ => b.limit.or(b.remaining),
        }
    }

    /// How long until a request to this channel may go out without breaking a limit.
    fn wait_for(&self, method: LightMethod, channel: &str) -> Option<Duration> {
        self.global_wait()
            .or_else(|| self.bucket_wait(method, channel))
    }

    /// How long a global 429 still pauses bot requests.
    fn global_wait(&self) -> Option<Duration> {
        let now = Instant::now();
        let until = (*self.global_pause.lock().unwrap())?;
        (until > now).then(|| until - now)
    }

    fn bucket_wait(&self, method: LightMethod, bucket: &str) -> Option<Duration> {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap();
        let b = buckets.get(&bucket_key(method, bucket))?;
        match (b.remaining, b.reset_at) {
            (Some(0), Some(reset)) if reset > now => Some(reset - now),
            _ => None,
        }
    }

    /// One request, paced by `bucket` (the route's major parameter: a channel, an application,
    /// an interaction token) and, for bot requests, by the global limit.
    pub(super) async fn send(
        &self,
        route: Route<'_>,
        method: LightMethod,
        bucket: &str,
        pacing: Pacing,
        body: Option<Body>,
    ) -> Result<serde_json::Value, DeliveryError> {
        let wait = match pacing {
            Pacing::Bot => self.wait_for(method, bucket),
            Pacing::InteractionWebhook => self.bucket_wait(method, bucket),
        };
        if let Some(wait) = wait {
            return Err(DeliveryError::RateLimited { retry_after: wait });
        }
        if pacing == Pacing::Bot {
            self.global.until_ready().await;
        }
        let request = match body {
            Some(Body::Json(bytes)) => Request::new(route, method).body(Some(bytes)),
            Some(Body::Upload { payload_json, file }) => {
                Request::new(route, method).multipart(Some(Multipart {
                    // serenity names the part `files[{id}]`; the id is 0, as in payload_json.
                    upload: MultipartUpload::Attachments(vec![CreateAttachment::bytes(
                        file.content,
                        file.filename,
                    )]),
                    fields: Vec::new(),
                    payload_json: Some(payload_json),
                }))
            }
            None => Request::new(route, method),
        };
        let request = request
            .build(&self.client, &self.authorization, Some(&self.api_base))
            .map_err(|e| DeliveryError::Permanent(format!("building the request: {e}")))?;
        let response = request.send().await.map_err(|e| {
            // reqwest's message names the URL, never the bot token; an interaction's URL holds
            // its token, so that one is left out.
            let e = match pacing {
                Pacing::InteractionWebhook => e.without_url(),
                Pacing::Bot => e,
            };
            DeliveryError::Transient(if e.is_timeout() {
                "Discord did not answer in time".to_string()
            } else if e.is_connect() {
                "cannot connect to Discord".to_string()
            } else {
                format!("request to Discord failed: {e}")
            })
        })?;
        let status = response.status().as_u16();
        self.learn(method, bucket, response.headers(), status);
        let text = response.text().await.unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        metrics::counter!(crate::telemetry::CHAT_REQUESTS, "platform" => "discord", "status" => crate::telemetry::status_label(status)).increment(1);
        match status {
            200..=299 => Ok(json),
            429 => {
                let retry_after = json
                    .get("retry_after")
                    .and_then(|v| v.as_f64())
                    .map(wait_of)
                    .unwrap_or(Duration::from_secs(1));
                if json.get("global").and_then(|v| v.as_bool()) == Some(true) {
                    *self.global_pause.lock().unwrap() = Some(Instant::now() + retry_after);
                }
                Err(DeliveryError::RateLimited { retry_after })
            }
            404 if json.get("code").and_then(|c| c.as_i64()) == Some(10008) => {
                Err(DeliveryError::MessageGone)
            }
            500..=599 => Err(DeliveryError::Transient(format!(
                "Discord answered {status}"
            ))),
            // Discord's error body names the field at fault; long enough for a command list's.
            _ => Err(DeliveryError::Permanent(format!(
                "Discord answered {status}: {}",
                text.chars().take(2000).collect::<String>()
            ))),
        }
    }

    /// Keeps what Discord says of the bucket this request counted against.
    fn learn(&self, method: LightMethod, channel: &str, headers: &HeaderMap, status: u16) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let remaining = number("x-ratelimit-remaining");
        let limit = number("x-ratelimit-limit");
        let reset_after = number("x-ratelimit-reset-after")
            .or_else(|| (status == 429).then(|| number("retry-after")).flatten());
        let global = headers
            .get("x-ratelimit-global")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if global {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() > INTERACTION_BUCKETS_KEPT {
            let now = Instant::now();
            buckets.retain(|k, b| {
                !k.channel.starts_with(INTERACTION_BUCKET) || b.reset_at.is_some_and(|r| r > now)
            });
        }
        let b = buckets.entry(bucket_key(method, channel)).or_default();
        if let Some(l) = limit {
            b.limit = Some(l.max(0.0) as u64);
        }
        if status == 429 {
            b.remaining = Some(0);
        } else if let Some(r) = remaining {
            b.remaining = Some(r.max(0.0) as u64);
        }
        if let Some(after) = reset_after {
            b.reset_at = Some(Instant::now() + wait_of(after));
        }
    }
}

/// The longest wait a rate-limit answer can impose at once; a longer one is waited out in steps.
const LONGEST_WAIT: Duration = Duration::from_secs(300);

/// A wait Discord's answer asks for (`retry_after`, `X-RateLimit-Reset-After`), as a duration
/// that cannot panic: negative is none, not-a-number is a second, and anything above
/// [`LONGEST_WAIT`] is cut to it (a proxy or a bug could send 1e300, which would otherwise
/// overflow, or stall every card for ages).
fn wait_of(secs: f64) -> Duration {
    if secs.is_nan() {
        return Duration::from_secs(1);
    }
    Duration::from_secs_f64(secs.clamp(0.0, LONGEST_WAIT.as_secs_f64()))
}

/// What a request carries.
pub(super) enum Body {
    Json(Vec<u8>),
    /// `multipart/form-data`: the message as `payload_json` and one file as `files[0]`, as
    /// Discord takes uploads.
    Upload {
        payload_json: String,
        file: Attachment,
    },
}

/// Whether a request counts against the bot's global limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pacing {
    Bot,
    /// Discord does not count interaction webhooks against the global limit.
    InteractionWebhook,
}

const INTERACTION_BUCKET: &str = "interaction:";

/// Discord buckets webhook routes by webhook and token.
pub(super) fn interaction_bucket(token: &str) -> String {
    format!("{INTERACTION_BUCKET}{token}")
}

fn bucket_key(method: LightMethod, channel: &str) -> BucketKey {
    BucketKey {
        method: match method {
            LightMethod::Post => "post",
            LightMethod::Patch => "patch",
            LightMethod::Put => "put",
            _ => "other",
        },
        channel: channel.to_string(),
    }
}

pub(super) fn parse_id(id: &str) -> Result<u64, DeliveryError> {
    id.parse::<u64>()
        .ok()
        .filter(|&n| n != 0)
        .ok_or_else(|| DeliveryError::Permanent(format!("{id:?} is not a Discord id")))
}

pub(super) fn to_json(body: &impl serde::Serialize) -> Result<Vec<u8>, DeliveryError> {
    serde_json::to_vec(body).map_err(|e| DeliveryError::Permanent(format!("encoding: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_wait_discord_asks_for_is_a_duration_without_a_panic() {
        for (secs, want) in [
            (-5.0, Duration::ZERO),
            (f64::NEG_INFINITY, Duration::ZERO),
            (0.25, Duration::from_millis(250)),
            (1e300, LONGEST_WAIT),
            (f64::INFINITY, LONGEST_WAIT),
            (f64::NAN, Duration::from_secs(1)),
        ] {
            assert_eq!(wait_of(secs), want, "{secs}");
        }
    }
}
