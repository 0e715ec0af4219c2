//! Discord, outbound: a [`Card`] becomes a message built with serenity's builders, sent through
//! serenity's request routes with runbot's own pacing.
//!
//! serenity's own rate limiter cannot be used with a custom API base (see `design.md`), so
//! this adapter paces itself: a global limiter under Discord's 50 requests/s, and per-route
//! buckets learnt from Discord's `X-RateLimit-*` headers, which are respected before a request
//! is sent rather than after a 429. A 429 still sets the bucket (or the global pause) from
//! `retry_after`.
//!
//! Interaction replies go the same way: the first answer is the HTTP response to Discord's
//! request ([`initial_response`] and its siblings), later ones are requests to the interaction's
//! webhook ([`DiscordAdapter::interaction_edit_original`], [`DiscordAdapter::interaction_followup`]).
//! Those are not counted against the bot's global limit (Discord does not), but their routes
//! still have buckets and can answer 429. A reply's file goes up with the edit of `@original`,
//! where command results arrive: `multipart/form-data` with the message as `payload_json` and
//! the file as `files[0]` (Discord's "Uploading Files"); the other answers carry no files.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret;
use serenity::all::{
    ApplicationId, ButtonStyle, ChannelId, CreateActionRow, CreateAllowedMentions,
    CreateAttachment, CreateButton, CreateCommand, CreateEmbed, CreateEmbedFooter,
    CreateInteractionResponse, CreateInteractionResponseFollowup, CreateInteractionResponseMessage,
    CreateMessage, EditInteractionResponse, EditMessage, GuildId, MessageId, Nonce,
};
use serenity::http::{LightMethod, Multipart, MultipartUpload, Request, Route};

use super::{Card, DeliveryError, Posted};
use crate::alerts::parse_stored_time;
use crate::config::DiscordSettings;
use crate::policy::Severity;
use crate::request::{Attachment, Reply, ReplyButton};

/// Discord's documented limits for one message.
pub mod limits {
    pub const TITLE: usize = 256;
    pub const DESCRIPTION: usize = 4096;
    pub const FIELDS: usize = 25;
    pub const FIELD_NAME: usize = 256;
    pub const FIELD_VALUE: usize = 1024;
    pub const FOOTER: usize = 2048;
    pub const EMBED_TOTAL: usize = 6000;
    pub const ROWS: usize = 5;
    pub const BUTTONS_PER_ROW: usize = 5;
    pub const BUTTON_LABEL: usize = 80;
    pub const CUSTOM_ID: usize = 100;
    pub const NONCE: usize = 25;
    pub const CONTENT: usize = 2000;
    /// Per file, for bots in a guild without boosts; more is refused with 413 (code 40005).
    pub const ATTACHMENT_BYTES: usize = crate::request::ATTACHMENT_MAX_BYTES;
    pub const ATTACHMENTS: usize = 10;
}

/// Buckets of interaction webhooks are kept while their window lasts; one per token would
/// otherwise pile up.
const INTERACTION_BUCKETS_KEPT: usize = 1024;

/// Alerts listed on a card; the rest are counted.
const LISTED_ALERTS: usize = 15;
/// The card's description is kept short enough that every part fits in 6000 characters.
const DESCRIPTION_BUDGET: usize = 1500;

/// Where one request goes, for pacing: per route and channel, as Discord buckets them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    method: &'static str,
    channel: String,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Requests a window allows, as Discord last said.
    limit: Option<u64>,
    /// Requests left in the current window, as Discord last said.
    remaining: Option<u64>,
    /// When the window ends.
    reset_at: Option<Instant>,
}

pub struct DiscordAdapter {
    client: reqwest::Client,
    /// `Bot <token>`; never logged.
    authorization: String,
    api_base: String,
    /// `discord.application_id`: needed for interaction webhooks and commands only.
    application_id: Option<ApplicationId>,
    global: DefaultDirectRateLimiter,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    /// A global 429 pauses everything until then.
    global_pause: Mutex<Option<Instant>>,
}

impl DiscordAdapter {
    pub fn new(settings: &DiscordSettings) -> anyhow::Result<DiscordAdapter> {
        let token = settings
            .bot_token
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("discord.bot_token is not set"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.request_timeout_ms.min(5000)))
            .build()?;
        let per_sec = NonZeroU32::new(settings.global_requests_per_sec.max(1)).expect("at least 1");
        // Evenly spaced, no burst: at most per_sec + 1 requests in any one-second window.
        let quota = Quota::per_second(per_sec).allow_burst(NonZeroU32::MIN);
        Ok(DiscordAdapter {
            client,
            authorization: format!("Bot {}", token.expose_secret()),
            api_base: settings.api_base.trim_end_matches('/').to_string(),
            application_id: settings
                .application_id
                .as_deref()
                .and_then(|id| id.parse::<u64>().ok())
                .filter(|&id| id != 0)
                .map(ApplicationId::new),
            global: RateLimiter::direct(quota),
            buckets: Mutex::new(HashMap::new()),
            global_pause: Mutex::new(None),
        })
    }

    /// Posts a new card. `nonce` makes a retried post return the first message instead of
    /// making a second one.
    pub async fn post(
        &self,
        channel: &str,
        card: &Card,
        nonce: &str,
    ) -> Result<Posted, DeliveryError> {
        let (embed, rows) = render(card);
        let body = CreateMessage::new().embed(embed).components(rows);
        self.create(channel, body, nonce).await
    }

    /// Edits a card in place; a resolved card loses its buttons.
    pub async fn edit(
        &self,
        channel: &str,
        message_id: &str,
        card: &Card,
    ) -> Result<(), DeliveryError> {
        let (embed, rows) = render(card);
        self.patch(
            channel,
            message_id,
            EditMessage::new().embed(embed).components(rows),
        )
        .await
    }

    /// Posts a plain message (an announcement such as "the deploy was interrupted"), with no
    /// mentions allowed: the text may quote what people typed.
    pub async fn post_text(
        &self,
        channel: &str,
        text: &str,
        nonce: &str,
    ) -> Result<Posted, DeliveryError> {
        let body = CreateMessage::new()
            .content(crate::domain::text::clip(text, 1999))
            .allowed_mentions(serenity::builder::CreateAllowedMentions::new());
        self.create(channel, body, nonce).await
    }

    /// Posts a channel's storm digest (see [`crate::chat::Digest`]).
    pub async fn post_digest(
        &self,
        channel: &str,
        title: &str,
        list: &str,
        nonce: &str,
    ) -> Result<Posted, DeliveryError> {
        self.create(
            channel,
            CreateMessage::new().embed(digest_embed(title, list)),
            nonce,
        )
        .await
    }

    pub async fn edit_digest(
        &self,
        channel: &str,
        message_id: &str,
        title: &str,
        list: &str,
    ) -> Result<(), DeliveryError> {
        self.patch(
            channel,
            message_id,
            EditMessage::new().embed(digest_embed(title, list)),
        )
        .await
    }

    /// Creates a message; `nonce` makes a retried create return the first message instead of
    /// making a second one.
    async fn create(
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

    async fn patch(
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

    fn application_id(&self) -> Result<ApplicationId, DeliveryError> {
        self.application_id.ok_or_else(|| {
            DeliveryError::Permanent(
                "discord.application_id is not set: copy it from Developer Portal → General Information".into(),
            )
        })
    }

    /// Replaces the interaction's first answer (`@original`): the deferred "thinking…"
    /// message, the reply, or, for a button, the message the button is on.
    pub async fn interaction_edit_original(
        &self,
        token: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        let route = Route::WebhookOriginalInteractionResponse {
            application_id: self.application_id()?,
            token,
        };
        let body = match &reply.attachment {
            None => Body::Json(to_json(&edit_original_body(reply))?),
            Some(file) => Body::Upload {
                payload_json: String::from_utf8(to_json(&edit_original_upload(reply))?)
                    .map_err(|e| DeliveryError::Permanent(format!("encoding: {e}")))?,
                file: file.clone(),
            },
        };
        self.send(
            route,
            LightMethod::Patch,
            &interaction_bucket(token),
            Pacing::InteractionWebhook,
            Some(body),
        )
        .await
        .map(|_| ())
    }

    /// Sends one more message for the interaction; answers its message id, so it can be edited
    /// and its buttons clicked later. Discord always waits for the message on this route.
    pub async fn interaction_followup(
        &self,
        token: &str,
        reply: &Reply,
    ) -> Result<String, DeliveryError> {
        let route = Route::WebhookFollowupMessages {
            application_id: self.application_id()?,
            token,
        };
        let body = followup_body(reply);
        let answer = self
            .send(
                route,
                LightMethod::Post,
                &interaction_bucket(token),
                Pacing::InteractionWebhook,
                Some(Body::Json(to_json(&body)?)),
            )
            .await?;
        answer
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| DeliveryError::Transient("Discord's answer has no message id".into()))
    }

    /// Replaces every command of the application, globally or in one guild, with `commands`
    /// (Discord's bulk overwrite). Answers the commands as Discord now has them.
    pub async fn overwrite_commands(
        &self,
        guild: Option<u64>,
        commands: &[CreateCommand],
    ) -> Result<Vec<serde_json::Value>, DeliveryError> {
        let application_id = self.application_id()?;
        let route = match guild {
            Some(g) => Route::GuildCommands {
                application_id,
                guild_id: GuildId::new(g.max(1)),
            },
            None => Route::Commands { application_id },
        };
        let answer = self
            .send(
                route,
                LightMethod::Put,
                &format!("commands:{application_id}"),
                Pacing::Bot,
                Some(Body::Json(to_json(&commands)?)),
            )
            .await?;
        match answer {
            serde_json::Value::Array(list) => Ok(list),
            other => Err(DeliveryError::Permanent(format!(
                "Discord answered something other than a list of commands: {}",
                other.to_string().chars().take(300).collect::<String>()
            ))),
        }
    }

    /// Requests this channel's bucket lets out now, as Discord last said: what is left of the
    /// window, or a whole window once it has passed. None before the first answer.
    pub fn room(&self, method: LightMethod, channel: &str) -> Option<u64> {
        let buckets = self.buckets.lock().unwrap();
        let b = buckets.get(&bucket_key(method, channel))?;
        match b.reset_at {
            Some(reset) if reset > Instant::now() => b.remaining,
            _ => b.limit.or(b.remaining),
        }
    }

    /// How long until a request to this channel may go out without breaking a limit.
    pub fn wait_for(&self, method: LightMethod, channel: &str) -> Option<Duration> {
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
    async fn send(
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
enum Body {
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
enum Pacing {
    Bot,
    /// Discord does not count interaction webhooks against the global limit.
    InteractionWebhook,
}

const INTERACTION_BUCKET: &str = "interaction:";

/// Discord buckets webhook routes by webhook and token.
fn interaction_bucket(token: &str) -> String {
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

fn parse_id(id: &str) -> Result<u64, DeliveryError> {
    id.parse::<u64>()
        .ok()
        .filter(|&n| n != 0)
        .ok_or_else(|| DeliveryError::Permanent(format!("{id:?} is not a Discord id")))
}

fn to_json(body: &impl serde::Serialize) -> Result<Vec<u8>, DeliveryError> {
    serde_json::to_vec(body).map_err(|e| DeliveryError::Permanent(format!("encoding: {e}")))
}

/// Cuts `s` to at most `max` characters, marking the cut.
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn colour(card: &Card) -> u32 {
    if card.resolved {
        return 0x2EB67D;
    }
    match card.severity {
        Severity::Sev1 => 0xE01E5A,
        Severity::Sev2 => 0xF2711C,
        Severity::Sev3 => 0xECB22E,
        Severity::Sev4 => 0x36C5F0,
    }
}

/// `<t:UNIX:R>`: Discord shows it as "5 minutes ago" in the reader's own time zone.
fn relative_time(rfc3339: &str) -> String {
    parse_stored_time(rfc3339)
        .map(|t| format!("<t:{}:R>", t.timestamp()))
        .unwrap_or_else(|| rfc3339.to_string())
}

/// Discord shows `<t:…:f>` as a date and time in each reader's own time zone.
fn absolute_time(rfc3339: &str) -> String {
    parse_stored_time(rfc3339)
        .map(|t| format!("<t:{}:f>", t.timestamp()))
        .unwrap_or_else(|| rfc3339.to_string())
}

/// Lines joined until the next one would not fit in `max`; then "+N more".
fn lines_within(lines: &[String], max: usize, more: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for (i, line) in lines.iter().enumerate() {
        let left = lines.len() - i - 1 + more;
        let tail = if left > 0 { 20 } else { 0 };
        if out.chars().count() + line.chars().count() + 1 + tail > max {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
        shown += 1;
    }
    let hidden = lines.len() - shown + more;
    if hidden > 0 {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("+{hidden} more"));
    }
    out
}

fn digest_embed(title: &str, list: &str) -> CreateEmbed {
    CreateEmbed::new()
        .title(fit(title, limits::TITLE))
        .description(fit(list, limits::DESCRIPTION))
        .colour(0xE01E5A)
        .footer(CreateEmbedFooter::new(
            "runbot · storm digest: cards follow as Discord's limits allow",
        ))
}

/// Interaction response types (Discord API).
pub mod response_type {
    pub const CHANNEL_MESSAGE_WITH_SOURCE: u64 = 4;
    pub const DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: u64 = 5;
    pub const DEFERRED_UPDATE_MESSAGE: u64 = 6;
    pub const UPDATE_MESSAGE: u64 = 7;
}

fn response_json(response: CreateInteractionResponse) -> serde_json::Value {
    serde_json::to_value(response).expect("serenity's response builders serialize to JSON")
}

/// Type 4, CHANNEL_MESSAGE_WITH_SOURCE: the reply itself, as the HTTP answer to the interaction.
pub fn initial_response(reply: &Reply) -> serde_json::Value {
    let r = render_reply(reply);
    let mut message = CreateInteractionResponseMessage::new()
        .embeds(r.embeds)
        .components(r.rows)
        .allowed_mentions(no_pings());
    if !r.content.is_empty() {
        message = message.content(r.content);
    }
    if reply.ephemeral {
        message = message.ephemeral(true);
    }
    response_json(CreateInteractionResponse::Message(message))
}

/// Type 5, DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: Discord shows "thinking…" until
/// [`DiscordAdapter::interaction_edit_original`] (or the first followup) replaces it. Whether it
/// is ephemeral is decided now, not by the later reply.
pub fn deferred_response(ephemeral: bool) -> serde_json::Value {
    let mut message = CreateInteractionResponseMessage::new();
    if ephemeral {
        message = message.ephemeral(true);
    }
    response_json(CreateInteractionResponse::Defer(message))
}

/// Type 6, DEFERRED_UPDATE_MESSAGE: for a button; nothing shows now, and `@original` is the
/// message the button is on.
pub fn deferred_update() -> serde_json::Value {
    response_json(CreateInteractionResponse::Acknowledge)
}

/// Type 7, UPDATE_MESSAGE: for a button; the message it is on becomes the reply. Its buttons are
/// replaced too, so an empty list removes them.
pub fn update_message(reply: &Reply) -> serde_json::Value {
    let r = render_reply(reply);
    let message = CreateInteractionResponseMessage::new()
        .content(r.content)
        .embeds(r.embeds)
        .components(r.rows)
        .allowed_mentions(no_pings());
    response_json(CreateInteractionResponse::UpdateMessage(message))
}

/// The body of `PATCH …/messages/@original`: every part is set, so what the reply lacks is
/// cleared (`components: []` removes the buttons of an answered prompt).
pub fn edit_original_body(reply: &Reply) -> EditInteractionResponse {
    let r = render_reply(reply);
    EditInteractionResponse::new()
        .content(r.content)
        .embeds(r.embeds)
        .components(r.rows)
        .allowed_mentions(no_pings())
}

/// The `payload_json` of an edit of `@original` that uploads the reply's file: the same
/// message, and `attachments` naming the file by the index of its `files[n]` part. Listing only
/// the new file also drops any the message had, as the rest of the message is replaced too.
pub fn edit_original_upload(reply: &Reply) -> serde_json::Value {
    let mut body = serde_json::to_value(edit_original_body(reply))
        .expect("serenity's edit builder serializes to JSON");
    if let (Some(file), Some(map)) = (&reply.attachment, body.as_object_mut()) {
        map.insert(
            "attachments".into(),
            serde_json::json!([{ "id": "0", "filename": file.filename }]),
        );
    }
    body
}

pub fn followup_body(reply: &Reply) -> CreateInteractionResponseFollowup {
    let r = render_reply(reply);
    let mut body = CreateInteractionResponseFollowup::new()
        .embeds(r.embeds)
        .components(r.rows)
        .allowed_mentions(no_pings());
    if !r.content.is_empty() {
        body = body.content(r.content);
    }
    if reply.ephemeral {
        body = body.ephemeral(true);
    }
    body
}

/// Replies echo what people typed, so nothing in them pings anyone.
fn no_pings() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

/// A reply within Discord's limits.
struct RenderedReply {
    content: String,
    /// None or one.
    embeds: Vec<CreateEmbed>,
    rows: Vec<CreateActionRow>,
}

fn render_reply(reply: &Reply) -> RenderedReply {
    RenderedReply {
        content: reply_content(&reply.text, reply.code_block.as_deref()),
        embeds: reply_embed(&reply.fields).into_iter().collect(),
        rows: reply_rows(&reply.buttons),
    }
}

/// The text, then the code block; each cut so both fit in one message's content.
fn reply_content(text: &str, code: Option<&str>) -> String {
    let text = text.trim_end();
    let Some(code) = code else {
        return fit(text, limits::CONTENT);
    };
    // A fence inside the block would end it early.
    let code = code.trim_end_matches('\n').replace("```", "`\u{200b}``");
    let fences = if text.is_empty() { 8 } else { 9 };
    let (text_len, code_len) = (text.chars().count(), code.chars().count());
    let text = if text_len + fences + code_len <= limits::CONTENT {
        text.to_string()
    } else {
        // The block keeps at least half the message when it is that long.
        fit(
            text,
            text_len.min(limits::CONTENT - fences - code_len.min(limits::CONTENT / 2)),
        )
    };
    let code = fit_tail(&code, limits::CONTENT - fences - text.chars().count());
    if text.is_empty() {
        format!("```\n{code}\n```")
    } else {
        format!("{text}\n```\n{code}\n```")
    }
}

/// Keeps the end of `s` within `max` characters, from a line start when it can, marking the cut.
fn fit_tail(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    let tail: String = s.chars().skip(count - max.saturating_sub(2)).collect();
    let tail = match tail.find('\n') {
        Some(i) if i + 1 < tail.len() => &tail[i + 1..],
        _ => tail.as_str(),
    };
    format!("…\n{tail}")
}

/// Discord refuses blank field names and values.
fn field_text(s: &str, max: usize) -> String {
    if s.trim().is_empty() {
        "\u{200b}".to_string()
    } else {
        fit(s, max)
    }
}

/// The fields as one embed, as many as fit in 25 fields and 6000 characters; the rest counted.
fn reply_embed(fields: &[(String, String)]) -> Option<CreateEmbed> {
    if fields.is_empty() {
        return None;
    }
    // Room kept for the "+N more" field.
    const MORE: usize = 40;
    let mut embed = CreateEmbed::new();
    let (mut used, mut shown) = (0, 0);
    for (i, (name, value)) in fields.iter().enumerate() {
        let (name, value) = (
            field_text(name, limits::FIELD_NAME),
            field_text(value, limits::FIELD_VALUE),
        );
        let size = name.chars().count() + value.chars().count();
        let more_follow = i + 1 < fields.len();
        if used + size > limits::EMBED_TOTAL - MORE || (more_follow && shown + 1 >= limits::FIELDS)
        {
            break;
        }
        used += size;
        shown += 1;
        embed = embed.field(name, value, false);
    }
    if shown < fields.len() {
        embed = embed.field("…", format!("+{} more", fields.len() - shown), false);
    }
    Some(embed)
}

/// Buttons five to a row, five rows at most. A button whose id Discord would refuse (empty,
/// too long, or repeated) is left out rather than cut: a cut id would run something else.
fn reply_rows(buttons: &[ReplyButton]) -> Vec<CreateActionRow> {
    let mut seen = std::collections::HashSet::new();
    let usable: Vec<&ReplyButton> = buttons
        .iter()
        .filter(|b| {
            !b.id.is_empty()
                && b.id.chars().count() <= limits::CUSTOM_ID
                && seen.insert(b.id.as_str())
        })
        .take(limits::ROWS * limits::BUTTONS_PER_ROW)
        .collect();
    usable
        .chunks(limits::BUTTONS_PER_ROW)
        .map(|chunk| {
            CreateActionRow::Buttons(
                chunk
                    .iter()
                    .map(|b| {
                        let label = if b.label.trim().is_empty() {
                            "…".to_string()
                        } else {
                            fit(&b.label, limits::BUTTON_LABEL)
                        };
                        CreateButton::new(b.id.clone())
                            .label(label)
                            .style(match b.style {
                                crate::request::ButtonStyle::Primary => ButtonStyle::Primary,
                                crate::request::ButtonStyle::Secondary => ButtonStyle::Secondary,
                                crate::request::ButtonStyle::Success => ButtonStyle::Success,
                                crate::request::ButtonStyle::Danger => ButtonStyle::Danger,
                            })
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The embed and the button rows for a card, within Discord's limits.
pub fn render(card: &Card) -> (CreateEmbed, Vec<CreateActionRow>) {
    let mut description = String::new();
    if card.resolved {
        match card.fired_for {
            Some(d) => description.push_str(&format!(
                "✅ **Resolved** after {}\n",
                crate::domain::duration::short(d)
            )),
            None => description.push_str("✅ **Resolved**\n"),
        }
    }
    if let Some(ack) = &card.acknowledged {
        description.push_str(&format!(
            "👀 Acknowledged by **{}** {}\n",
            fit(&ack.by, 100),
            relative_time(&ack.at)
        ));
    }
    if let Some(silence) = &card.silenced {
        description.push_str(&format!(
            "🔕 Silenced by **{}** until {}\n",
            fit(&silence.by, 100),
            absolute_time(&silence.at)
        ));
    }
    for part in [&card.summary, &card.description, &card.meaning]
        .into_iter()
        .flatten()
    {
        if !description.contains(part.as_str()) {
            description.push_str(part);
            description.push('\n');
        }
    }
    let description = fit(description.trim_end(), DESCRIPTION_BUDGET);

    let firing = card.alerts.iter().filter(|a| a.firing).count();
    let alert_lines: Vec<String> = card
        .alerts
        .iter()
        .take(LISTED_ALERTS)
        .map(|a| {
            let mark = if a.firing { "🔴" } else { "🟢" };
            format!(
                "{mark} {} · since {}",
                fit(&a.name, 120),
                relative_time(&a.since)
            )
        })
        .collect();
    let unlisted = card.alerts.len().saturating_sub(LISTED_ALERTS)
        + usize::try_from(card.truncated_alerts).unwrap_or(0);
    let mut embed = CreateEmbed::new()
        .title(fit(&card.title, limits::TITLE))
        .colour(colour(card))
        .field(
            fit(
                &format!(
                    "Alerts: {firing} firing, {} resolved",
                    card.alerts.len() - firing
                ),
                limits::FIELD_NAME,
            ),
            lines_within(&alert_lines, limits::FIELD_VALUE, unlisted),
            false,
        );
    if !description.is_empty() {
        embed = embed.description(description);
    }
    if !card.checks.is_empty() && !card.resolved {
        let checks: Vec<String> = card
            .checks
            .iter()
            .map(|c| format!("• {}", fit(c, 200)))
            .collect();
        embed = embed.field(
            "What to check",
            lines_within(&checks, limits::FIELD_VALUE, 0),
            false,
        );
    }
    let links: Vec<String> = card
        .links
        .iter()
        .map(|l| format!("[{}]({})", l.label, l.url))
        .filter(|l| l.chars().count() <= 500)
        .collect();
    if !links.is_empty() {
        embed = embed.field("Links", fit(&links.join(" · "), limits::FIELD_VALUE), false);
    }
    let mut footer = format!("runbot · group {}", card.group_id);
    if let Some(note) = &card.note {
        footer.push_str(" · ");
        footer.push_str(note);
    }
    embed = embed.footer(CreateEmbedFooter::new(fit(&footer, 300)));
    if let Some(t) = parse_stored_time(&card.started_at) {
        if let Ok(ts) = serenity::model::Timestamp::from_unix_timestamp(t.timestamp()) {
            embed = embed.timestamp(ts);
        }
    }

    let rows = card
        .actions
        .chunks(limits::BUTTONS_PER_ROW)
        .take(limits::ROWS)
        .map(|chunk| {
            CreateActionRow::Buttons(
                chunk
                    .iter()
                    .filter(|a| a.id.len() <= limits::CUSTOM_ID)
                    .map(|a| {
                        CreateButton::new(a.id.clone())
                            .label(fit(&a.label, limits::BUTTON_LABEL))
                            .style(if a.risky {
                                ButtonStyle::Danger
                            } else {
                                ButtonStyle::Secondary
                            })
                    })
                    .collect(),
            )
        })
        .collect();
    (embed, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{CardAction, CardAlert};

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

    fn big_card() -> Card {
        Card {
            group_id: 1,
            resolved: false,
            severity: Severity::Sev2,
            title: "T".repeat(400),
            summary: Some("s".repeat(5000)),
            description: Some("d".repeat(5000)),
            meaning: None,
            alerts: (0..300)
                .map(|i| CardAlert {
                    name: format!("host-{i}-{}", "x".repeat(100)),
                    firing: i % 2 == 0,
                    since: "2026-11-27T10:00:00Z".into(),
                })
                .collect(),
            truncated_alerts: 12,
            links: vec![],
            checks: (0..40)
                .map(|i| format!("check {i} {}", "c".repeat(80)))
                .collect(),
            actions: (0..40)
                .map(|i| CardAction {
                    id: format!("rb1:1:{i}"),
                    label: "L".repeat(100),
                    risky: false,
                })
                .collect(),
            fired_for: None,
            started_at: "2026-11-27T10:00:00Z".into(),
            note: Some("n".repeat(3000)),
            acknowledged: Some(crate::chat::Mark {
                by: "a".repeat(500),
                at: "2026-11-27T10:00:00Z".into(),
            }),
            silenced: Some(crate::chat::Mark {
                by: "b".repeat(500),
                at: "2026-11-27T11:00:00Z".into(),
            }),
        }
    }

    fn big_reply() -> Reply {
        let mut buttons: Vec<ReplyButton> = (0..40)
            .map(|i| ReplyButton {
                id: format!("rb1:confirm:{i}"),
                label: "L".repeat(120),
                style: crate::request::ButtonStyle::Danger,
            })
            .collect();
        buttons.insert(
            0,
            ReplyButton {
                id: "x".repeat(101),
                label: "too long an id".into(),
                style: crate::request::ButtonStyle::Primary,
            },
        );
        buttons.insert(1, buttons[1].clone());
        Reply {
            text: "t".repeat(5000),
            ephemeral: true,
            buttons,
            fields: (0..60)
                .map(|i| (format!("name {i} {}", "n".repeat(300)), "v".repeat(2000)))
                .chain([(String::new(), " ".into())])
                .collect(),
            code_block: Some(
                (0..2000)
                    .map(|i| format!("line {i} ```"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            attachment: None,
        }
    }

    fn check_message(m: &serde_json::Value) {
        let content = m["content"].as_str().unwrap_or("");
        assert!(
            content.chars().count() <= limits::CONTENT,
            "{}",
            content.len()
        );
        let embeds = m["embeds"].as_array().unwrap();
        assert_eq!(embeds.len(), 1);
        let fields = embeds[0]["fields"].as_array().unwrap();
        assert!(fields.len() <= limits::FIELDS);
        let mut total = 0;
        for f in fields {
            let (n, v) = (f["name"].as_str().unwrap(), f["value"].as_str().unwrap());
            assert!(!n.trim().is_empty() && n.chars().count() <= limits::FIELD_NAME);
            assert!(!v.trim().is_empty() && v.chars().count() <= limits::FIELD_VALUE);
            total += n.chars().count() + v.chars().count();
        }
        assert!(total <= limits::EMBED_TOTAL, "{total}");
        assert!(fields.last().unwrap()["value"]
            .as_str()
            .unwrap()
            .ends_with("more"));
        let rows = m["components"].as_array().unwrap();
        assert_eq!(rows.len(), limits::ROWS);
        let mut ids = std::collections::HashSet::new();
        for r in rows {
            let buttons = r["components"].as_array().unwrap();
            assert!(buttons.len() <= limits::BUTTONS_PER_ROW);
            for b in buttons {
                assert!(b["label"].as_str().unwrap().chars().count() <= limits::BUTTON_LABEL);
                let id = b["custom_id"].as_str().unwrap();
                assert!(id.chars().count() <= limits::CUSTOM_ID);
                assert!(ids.insert(id.to_string()), "{id} twice");
                assert_eq!(b["style"], 4);
            }
        }
    }

    #[test]
    fn an_oversized_reply_is_cut_to_discords_limits() {
        let reply = big_reply();
        let initial = initial_response(&reply);
        assert_eq!(initial["type"], response_type::CHANNEL_MESSAGE_WITH_SOURCE);
        assert_eq!(initial["data"]["flags"], 64);
        check_message(&initial["data"]);
        check_message(&serde_json::to_value(edit_original_body(&reply)).unwrap());
        check_message(&serde_json::to_value(followup_body(&reply)).unwrap());
        check_message(&update_message(&reply)["data"]);

        let content = initial["data"]["content"].as_str().unwrap();
        assert!(content.starts_with("ttt") && content.ends_with("line 1999 `\u{200b}``\n```"));
        assert_eq!(
            content.matches("```").count(),
            2,
            "only the block's own fences"
        );
        assert!(content.contains("…\nline "), "the cut keeps whole lines");
    }

    #[test]
    fn each_initial_answer_has_its_type_and_an_empty_button_list_clears_buttons() {
        let plain = Reply {
            text: "done".into(),
            ..Reply::default()
        };
        assert_eq!(
            deferred_response(true),
            serde_json::json!({"type": 5, "data": {"flags": 64, "attachments": []}})
        );
        assert_eq!(deferred_response(false)["type"], 5);
        assert!(deferred_response(false)["data"].get("flags").is_none());
        assert_eq!(
            deferred_update(),
            serde_json::json!({"type": 6, "data": null})
        );
        let update = update_message(&plain);
        assert_eq!(update["type"], response_type::UPDATE_MESSAGE);
        assert_eq!(update["data"]["components"], serde_json::json!([]));
        assert_eq!(update["data"]["embeds"], serde_json::json!([]));
        let edit = serde_json::to_value(edit_original_body(&plain)).unwrap();
        assert_eq!(edit["components"], serde_json::json!([]));
        assert_eq!(edit["content"], "done");
        assert!(
            edit.get("flags").is_none(),
            "an edit cannot change ephemerality"
        );
        let initial = initial_response(&plain);
        assert!(initial["data"].get("flags").is_none());
        assert_eq!(
            initial["data"]["allowed_mentions"]["parse"],
            serde_json::json!([])
        );
        let short = reply_content("see", Some("a\nb"));
        assert_eq!(short, "see\n```\na\nb\n```");
    }

    #[test]
    fn an_oversized_card_is_cut_to_discords_limits() {
        let (embed, rows) = render(&big_card());
        let v = serde_json::to_value(&embed).unwrap();
        let chars = |p: &str| {
            v.pointer(p)
                .and_then(|s| s.as_str())
                .map_or(0, |s| s.chars().count())
        };
        assert!(chars("/title") <= limits::TITLE);
        assert!(chars("/description") <= limits::DESCRIPTION);
        assert!(chars("/footer/text") <= limits::FOOTER);
        let fields = v["fields"].as_array().unwrap();
        assert!(fields.len() <= limits::FIELDS);
        let mut total = chars("/title") + chars("/description") + chars("/footer/text");
        for f in fields {
            let (n, val) = (f["name"].as_str().unwrap(), f["value"].as_str().unwrap());
            assert!(n.chars().count() <= limits::FIELD_NAME);
            assert!(val.chars().count() <= limits::FIELD_VALUE, "{}", val.len());
            total += n.chars().count() + val.chars().count();
        }
        assert!(total <= limits::EMBED_TOTAL, "{total}");
        assert!(fields[0]["value"].as_str().unwrap().ends_with("more"));
        let rows = serde_json::to_value(&rows).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), limits::ROWS);
        for r in rows {
            let buttons = r["components"].as_array().unwrap();
            assert!(buttons.len() <= limits::BUTTONS_PER_ROW);
            for b in buttons {
                assert!(b["label"].as_str().unwrap().chars().count() <= limits::BUTTON_LABEL);
            }
        }
    }
}
