//! Slack: one chat platform. The adapter turns a [`Card`](crate::chat::Card) or a
//! [`Reply`] into Block Kit messages ([`render`], slack-morphism's models), sends them through
//! the Web API with Slack's pacing ([`send`]), pages people by DM ([`page`]) and describes the
//! app to create ([`manifest`]).
//!
//! Slack has no nonce: a retried `chat.postMessage` makes a second message. So each card
//! carries its nonce in the message's `metadata`, and a post that was planned but never
//! answered (a crash, a timeout) is first looked up in the channel's history
//! ([`SlackAdapter::recover`]) before it is posted again.

pub mod inbound;
pub mod manifest;
pub mod page;
pub mod render;
pub mod send;
pub mod socket;
pub mod verify;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use slack_morphism::prelude::*;

use self::render::Rendered;
use self::send::{outcome, Pace, Pacing};
use crate::chat::platform::{ChatPlatform, Delivery, Limits, Method, Outgoing};
use crate::chat::{DeliveryError, Posted};
use crate::config::{AlertRoute, Settings};
use crate::request::{BoxFuture, Platform, Reply};
use crate::store::GroupView;

/// Slack's documented limits (protocols.md; Block Kit reference).
pub mod limits {
    pub const BLOCKS: usize = 50;
    pub const HEADER_TEXT: usize = 150;
    pub const SECTION_TEXT: usize = 3000;
    pub const FIELDS: usize = 10;
    pub const FIELD_TEXT: usize = 2000;
    pub const ACTIONS_ELEMENTS: usize = 25;
    pub const BUTTON_TEXT: usize = 75;
    pub const ACTION_ID: usize = 255;
    pub const CONTEXT_ELEMENTS: usize = 10;
    /// A message's `text`; Slack truncates past 40 000 and refuses far more.
    pub const TEXT: usize = 40_000;
    /// Replies carry no file on Slack (files need `files.uploadV2`): the text says so.
    pub const ATTACHMENT_BYTES: usize = 0;
}

/// The `metadata.event_type` of runbot's messages; `event_payload.nonce` finds a card again.
const EVENT_TYPE: &str = "runbot_message";
/// Messages of a channel's history read per page when looking for a post after a crash.
const RECOVER_SCAN: u32 = 200;
/// Pages read at most: a thousand messages back covers a storm's worth of posts.
const RECOVER_PAGES: usize = 5;
/// Nonces remembered as not posted; past this the memory starts over (and a retry looks first).
const UNPOSTED_MAX: usize = 10_000;
/// DM channels remembered (one per person paged).
const DM_CHANNELS_MAX: usize = 4096;

pub struct SlackAdapter {
    client: reqwest::Client,
    /// `Bearer xoxb-…`; never logged.
    authorization: String,
    api_base: String,
    alert_channel_id: Option<String>,
    routes: Vec<AlertRoute>,
    delivery: Delivery,
    pacing: Pacing,
    /// DM channel per user id, so a page opens each DM once.
    dm_channels: Mutex<HashMap<String, String>>,
    /// Nonces of posts Slack is known not to have made (it answered an error, or could not be
    /// reached), so their retry posts at once instead of first reading the channel's history.
    /// After a restart it is empty, and every unanswered post is looked for.
    unposted: Mutex<std::collections::HashSet<String>>,
}

impl SlackAdapter {
    pub fn new(all: &Settings) -> anyhow::Result<SlackAdapter> {
        let s = &all.slack;
        let token = s
            .bot_token
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("slack.bot_token is not set"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(s.request_timeout_ms))
            .connect_timeout(Duration::from_millis(s.request_timeout_ms.min(5000)))
            .build()?;
        Ok(SlackAdapter {
            client,
            authorization: format!("Bearer {}", token.expose_secret()),
            api_base: s.api_base.trim_end_matches('/').to_string(),
            alert_channel_id: s.alert_channel_id.clone(),
            routes: all.parsed.slack_routes.clone(),
            delivery: Delivery {
                digest_after: s.digest_after,
                refire_window: Duration::from_secs(s.refire_window_secs),
            },
            pacing: Pacing::default(),
            dm_channels: Mutex::new(HashMap::new()),
            unposted: Mutex::new(Default::default()),
        })
    }

    /// The Web API's base, e.g. `https://slack.com/api`.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The HTTP client runbot talks to Slack with (its timeouts set).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Calls a Web API method with the bot token, paced: over runbot's own pacing or Slack's
    /// 429 it answers [`DeliveryError::RateLimited`] with the wait.
    pub async fn call(
        &self,
        method: &str,
        pace: Pace<'_>,
        body: &Value,
        gone_when: &[&str],
    ) -> Result<Value, DeliveryError> {
        self.call_classified(method, pace, body, gone_when)
            .await
            .map_err(|(e, _)| e)
    }

    /// [`Self::call`], and on failure whether Slack may have done it anyway (a timeout, an
    /// answer cut off): only then is a post looked for before it is made again.
    async fn call_classified(
        &self,
        method: &str,
        pace: Pace<'_>,
        body: &Value,
        gone_when: &[&str],
    ) -> Result<Value, (DeliveryError, bool)> {
        // Over runbot's own pacing: the caller waits its turn (the outbox sends another
        // channel's cards meanwhile), as after a 429, but without having sent anything.
        if let Err(wait) = self.pacing.take(pace) {
            return Err((DeliveryError::RateLimited { retry_after: wait }, false));
        }
        let url = format!("{}/{method}", self.api_base);
        // Slack's read methods take no JSON body: their arguments go as a form.
        let (content_type, payload) = if FORM_ONLY.contains(&method) {
            ("application/x-www-form-urlencoded", form(body))
        } else {
            ("application/json; charset=utf-8", body.to_string())
        };
        let sent = self
            .client
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(payload)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let maybe_done = !e.is_connect();
                return Err((
                    DeliveryError::Transient(format!(
                        "{method}: {}",
                        crate::domain::redact::request_error(e)
                    )),
                    maybe_done,
                ));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Err((
                    DeliveryError::Transient(format!(
                        "{method}: reading the answer: {}",
                        crate::domain::redact::request_error(e)
                    )),
                    true,
                ))
            }
        };
        metrics::counter!(crate::telemetry::CHAT_REQUESTS, "platform" => "slack", "status" => crate::telemetry::status_label(status)).increment(1);
        let result = outcome(status, retry_after, &bytes, gone_when);
        if let Err(DeliveryError::RateLimited { retry_after }) = &result {
            self.pacing.pause(pace, *retry_after);
        }
        // An answer Slack gave (an error, a 429, a 5xx of its own) means the call did not
        // happen.
        result.map_err(|e| (e, false))
    }

    /// `chat.postMessage`: answers the message's `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        rendered: Rendered,
        thread_ts: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, DeliveryError> {
        let mut content = rendered.content();
        if let Some(n) = nonce {
            content = content.with_metadata(SlackMessageMetadata {
                event_type: EVENT_TYPE.into(),
                event_payload: Some(HashMap::from([("nonce".to_string(), n.to_string())])),
            });
        }
        let mut request = SlackApiChatPostMessageRequest::new(channel.into(), content)
            .with_unfurl_links(false)
            .with_unfurl_media(false);
        if let Some(ts) = thread_ts {
            request = request.with_thread_ts(ts.into());
        }
        let body = to_json(&request)?;
        let answer = match self
            .call_classified("chat.postMessage", Pace::Post(channel), &body, &[])
            .await
        {
            Ok(a) => {
                if let Some(n) = nonce {
                    self.unposted.lock().expect("unposted lock").remove(n);
                }
                a
            }
            Err((e, maybe_done)) => {
                if let Some(n) = nonce {
                    let mut unposted = self.unposted.lock().expect("unposted lock");
                    if maybe_done {
                        unposted.remove(n);
                    } else {
                        if unposted.len() >= UNPOSTED_MAX {
                            unposted.clear();
                        }
                        unposted.insert(n.to_string());
                    }
                }
                return Err(e);
            }
        };
        answer
            .get("ts")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| DeliveryError::Transient("Slack's answer has no ts".into()))
    }

    /// `chat.update` of a message runbot posted.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        rendered: Rendered,
    ) -> Result<(), DeliveryError> {
        let mut content = rendered.content();
        // An update keeps what it does not name: an empty list removes the blocks or buttons.
        if content.blocks.is_none() {
            content.blocks = Some(Vec::new());
        }
        if content.attachments.is_none() {
            content.attachments = Some(Vec::new());
        }
        let request = SlackApiChatUpdateRequest::new(channel.into(), content, ts.into());
        let body = to_json(&request)?;
        self.call(
            "chat.update",
            Pace::Update,
            &body,
            &[
                "message_not_found",
                "cant_update_message",
                "channel_not_found",
            ],
        )
        .await
        .map(|_| ())
    }

    /// Looks for a message runbot posted with `nonce`: among the channel's latest messages, or
    /// the replies to `thread`. Reads back [`RECOVER_PAGES`] pages of history at most.
    pub async fn find_by_nonce(
        &self,
        channel: &str,
        nonce: &str,
        thread: Option<&str>,
    ) -> Result<Option<String>, DeliveryError> {
        // This process saw Slack refuse that post: nothing to look for.
        if self.unposted.lock().expect("unposted lock").contains(nonce) {
            return Ok(None);
        }
        let mut cursor: Option<String> = None;
        for _ in 0..RECOVER_PAGES {
            let mut body = json!({
                "channel": channel,
                "limit": RECOVER_SCAN,
                "include_all_metadata": true,
            });
            let method = match thread {
                Some(ts) => {
                    body["ts"] = json!(ts);
                    "conversations.replies"
                }
                None => "conversations.history",
            };
            if let Some(c) = &cursor {
                body["cursor"] = json!(c);
            }
            let answer = self.call(method, Pace::Tier3, &body, &[]).await?;
            let found = answer
                .get("messages")
                .and_then(|m| m.as_array())
                .into_iter()
                .flatten()
                .find(|m| {
                    m.pointer("/metadata/event_type").and_then(|v| v.as_str()) == Some(EVENT_TYPE)
                        && m.pointer("/metadata/event_payload/nonce")
                            .and_then(|v| v.as_str())
                            == Some(nonce)
                })
                .and_then(|m| m.get("ts").and_then(|v| v.as_str()).map(str::to_string));
            if found.is_some() {
                return Ok(found);
            }
            cursor = answer
                .pointer("/response_metadata/next_cursor")
                .and_then(|v| v.as_str())
                .filter(|c| !c.is_empty() && c.len() <= 512)
                .map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// The DM channel with `user` (`conversations.open`), remembered.
    pub async fn dm_channel(&self, user: &str) -> Result<String, DeliveryError> {
        if let Some(c) = self.dm_channels.lock().expect("dm lock").get(user) {
            return Ok(c.clone());
        }
        let answer = self
            .call(
                "conversations.open",
                Pace::Tier3,
                &json!({ "users": user }),
                &[],
            )
            .await?;
        let channel = answer
            .pointer("/channel/id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| DeliveryError::Transient("Slack's answer has no channel id".into()))?;
        let mut dms = self.dm_channels.lock().expect("dm lock");
        if dms.len() >= DM_CHANNELS_MAX {
            dms.clear();
        }
        dms.insert(user.to_string(), channel.clone());
        Ok(channel)
    }

    /// Whether `url` may take a `response_url` post: Slack's hooks host, or the host of
    /// `api_base` (a proxy, or the tests' fake). Anything else is refused, so a forged URL
    /// never makes runbot post elsewhere.
    pub fn response_url_allowed(&self, url: &str) -> bool {
        let Ok(u) = url::Url::parse(url) else {
            return false;
        };
        if u.scheme() == "https" && u.host_str() == Some("hooks.slack.com") {
            return true;
        }
        let Ok(base) = url::Url::parse(&self.api_base) else {
            return false;
        };
        u.scheme() == base.scheme()
            && u.host_str() == base.host_str()
            && u.port_or_known_default() == base.port_or_known_default()
    }

    /// Posts an answer to a request's `response_url` (at most 5 per URL, within 30 minutes).
    pub async fn respond(&self, response_url: &str, body: &Value) -> Result<(), DeliveryError> {
        self.post_response(response_url, body)
            .await
            .map_err(|(e, _)| e)
    }

    /// [`Self::respond`], and on failure whether the post may have landed anyway (a timeout,
    /// a gateway's 504): only a connection never made, or Slack's own refusal, surely carried
    /// nothing.
    pub async fn post_response(
        &self,
        response_url: &str,
        body: &Value,
    ) -> Result<(), (DeliveryError, bool)> {
        if !self.response_url_allowed(response_url) {
            return Err((
                DeliveryError::Permanent("the response_url is not Slack's: not posted".into()),
                false,
            ));
        }
        let sent = self
            .client
            .post(response_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body.to_string())
            .send()
            .await;
        let answer = match sent {
            Ok(a) => a,
            Err(e) => {
                let maybe = !e.is_connect();
                let e = DeliveryError::Transient(format!(
                    "response_url: {}",
                    crate::domain::redact::request_error(e)
                ));
                return Err((e, maybe));
            }
        };
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        match status {
            200..=299 => Ok(()),
            429 => Err((
                DeliveryError::RateLimited {
                    retry_after: Duration::from_secs(1),
                },
                false,
            )),
            504 => Err((
                DeliveryError::Transient("response_url answered HTTP 504".into()),
                true,
            )),
            s if s >= 500 => Err((
                DeliveryError::Transient(format!("response_url answered HTTP {s}")),
                false,
            )),
            s => Err((
                DeliveryError::Permanent(format!(
                    "response_url answered HTTP {s}: {}",
                    crate::domain::text::clip(&text, 200)
                )),
                false,
            )),
        }
    }

    fn rendered(message: Outgoing<'_>) -> Rendered {
        match message {
            Outgoing::Card(card) => render::card(card),
            Outgoing::Digest { title, list } => render::digest(title, list),
            Outgoing::Text(text) => render::text(text),
            Outgoing::InThread { text, .. } => render::text(text),
            Outgoing::Prompt(reply) => render::reply(reply),
        }
    }
}

/// A reply as a `response_url` body: replaces the message it answers (the deferred "working
/// on it", or the prompt whose button was clicked), ephemeral unless it is for everyone.
pub fn response_body(reply: &Reply, replace_original: bool) -> Value {
    let rendered = render::reply(&without_attachment(reply));
    let mut body = json!({
        "text": rendered.text,
        "blocks": rendered.blocks,
        "response_type": if reply.ephemeral { "ephemeral" } else { "in_channel" },
    });
    if replace_original {
        body["replace_original"] = json!(true);
    }
    body
}

/// Slack replies carry no file: the text says what was left out.
fn without_attachment(reply: &Reply) -> Reply {
    let mut r = reply.clone();
    if let Some(file) = r.attachment.take() {
        r.text.push_str(&format!(
            "\n(only the end is shown: the whole output, {} bytes, is a file, which Slack replies cannot carry; run the command from the console to download `{}`)",
            file.content.len(),
            file.filename
        ));
    }
    r
}

/// Methods whose arguments Slack reads from a form or the query string only.
const FORM_ONLY: [&str; 2] = ["conversations.history", "conversations.replies"];

/// A flat JSON object as `application/x-www-form-urlencoded`.
fn form(body: &Value) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in body.as_object().into_iter().flatten() {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.append_pair(k, &v);
    }
    out.finish()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, DeliveryError> {
    serde_json::to_value(v).map_err(|e| DeliveryError::Permanent(format!("encoding: {e}")))
}

impl ChatPlatform for SlackAdapter {
    fn name(&self) -> Platform {
        Platform::Slack
    }

    fn limits(&self) -> Limits {
        Limits {
            text: limits::SECTION_TEXT,
            buttons: limits::ACTIONS_ELEMENTS,
            attachment_bytes: limits::ATTACHMENT_BYTES,
        }
    }

    fn delivery(&self) -> Delivery {
        self.delivery
    }

    fn channel_for(&self, group: &GroupView) -> String {
        crate::chat::platform::route_channel(&self.routes, self.alert_channel_id.as_deref(), group)
    }

    fn alert_channel(&self) -> Option<&str> {
        self.alert_channel_id.as_deref()
    }

    fn room(&self, method: Method, channel: &str) -> Option<u64> {
        Some(match method {
            Method::Post => self.pacing.room(Pace::Post(channel)),
            Method::Edit => self.pacing.room(Pace::Update),
        })
    }

    fn threads(&self) -> bool {
        true
    }

    fn post<'a>(
        &'a self,
        channel: &'a str,
        message: Outgoing<'a>,
        nonce: &'a str,
    ) -> BoxFuture<'a, Result<Posted, DeliveryError>> {
        Box::pin(async move {
            let thread = match message {
                Outgoing::InThread { parent, .. } => Some(parent),
                _ => None,
            };
            let ts = self
                .post_message(channel, Self::rendered(message), thread, Some(nonce))
                .await?;
            Ok(Posted { message_id: ts })
        })
    }

    fn recover<'a>(
        &'a self,
        channel: &'a str,
        nonce: &'a str,
        thread: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Posted>, DeliveryError>> {
        Box::pin(async move {
            Ok(self
                .find_by_nonce(channel, nonce, thread)
                .await?
                .map(|message_id| Posted { message_id }))
        })
    }

    fn edit<'a>(
        &'a self,
        channel: &'a str,
        message_id: &'a str,
        message: Outgoing<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.update_message(channel, message_id, Self::rendered(message)))
    }

    /// `reply_to` is the request's `response_url`.
    fn edit_reply<'a>(
        &'a self,
        reply_to: &'a str,
        reply: &'a Reply,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move { self.respond(reply_to, &response_body(reply, true)).await })
    }
}
