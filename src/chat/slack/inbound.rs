//! Slack's slash commands and button clicks, whichever way they arrive: posted to `/slack/*`
//! (`http::slack`, after [`super::verify`]) or delivered over Socket Mode ([`super::socket`]).
//! Both hand the payload here: it becomes the core's [`Request`], goes to the dispatcher, and
//! the core's first answer becomes Slack's (the HTTP 200 body, or the ack's payload); later
//! answers go through the request's `response_url` ([`SlackResponder`]).
//!
//! **Slack takes at most 5 posts per `response_url`** (within 30 minutes), and a long command
//! (a deploy) edits its answer often. The limit is kept by [`SlackResponder`]: edits are
//! coalesced (at most one post every [`EDIT_GAP`], always the newest, never a stale one after a
//! newer), and the last of the 5 is kept for a settled answer: it is spent only once the core
//! dropped the responder (no edit can follow: the result is final) or edits stopped for
//! [`SETTLE`]. Whatever comes after the 5 are spent (or when Slack refuses the URL: expired,
//! used) goes by `chat.postEphemeral` to the person (`chat.postMessage` for an answer meant for
//! the channel), so a result is never lost to the limit.
//!
//! Every post to the URL counts against the 5, a retry too (Slack may have counted the one that
//! failed). A post that timed out may have landed: it is not tried again, by the URL or the Web
//! API, so an answer is never shown twice. The Web API's answers wait their turn when runbot's
//! pacing or Slack's 429 says so, for up to [`API_PATIENCE`], then are logged as lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use slack_morphism::prelude::*;
use tokio::time::Instant;

use super::send::Pace;
use super::{render, response_body, SlackAdapter};
use crate::chat::DeliveryError;
use crate::commands::line;
use crate::invocation::Dispatcher;
use crate::request::{
    Actor, Answer, BoxFuture, ButtonId, Origin, Platform, Reply, Request, Responder,
};

/// Posts one `response_url` takes (Slack: 5 within 30 minutes).
pub const RESPONSE_URL_USES: usize = 5;
/// The shortest time between two posts of edits to one answer.
pub const EDIT_GAP: Duration = Duration::from_secs(2);
/// Edits quiet this long count as settled (for the last `response_url` post, and for answers
/// that cannot replace their message).
pub const SETTLE: Duration = Duration::from_secs(5);
/// Tries of one post to a `response_url` (each one of its 5 uses).
const URL_ATTEMPTS: usize = 3;
/// How long an answer by the Web API waits out rate limits before it is given up.
pub const API_PATIENCE: Duration = Duration::from_secs(60);
/// Longest names kept from what Slack sends.
const NAME_MAX: usize = 80;
const URL_MAX: usize = 2048;

/// Who and where, checked for shape: every id comes from outside.
#[derive(Debug, Clone)]
pub struct Asker {
    pub user_id: String,
    pub user_name: String,
    pub channel_id: String,
    pub response_url: String,
}

/// A slash command's fields (form fields over HTTP, the payload's over Socket Mode).
#[derive(Debug, Clone)]
pub struct SlashCommand {
    pub asker: Asker,
    /// Without the slash.
    pub command: String,
    pub text: String,
}

/// A button clicked (`block_actions`).
#[derive(Debug, Clone)]
pub struct Click {
    pub asker: Asker,
    pub custom_id: String,
    /// The clicked message's `ts`.
    pub message_ts: Option<String>,
    /// Clicked on a message only its asker sees (a prompt), which an answer may replace.
    pub on_ephemeral: bool,
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

/// A message `ts`: `1503435956.000247`.
fn is_ts(v: &str) -> bool {
    v.len() <= 32
        && v.split_once('.').is_some_and(|(s, f)| {
            !s.is_empty()
                && !f.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && f.bytes().all(|b| b.is_ascii_digit())
        })
}

fn asker(
    user_id: Option<&str>,
    user_name: Option<&str>,
    channel_id: Option<&str>,
    response_url: Option<&str>,
) -> Result<Asker, String> {
    let user_id = user_id
        .filter(|u| crate::policy::roles::is_slack_member(u))
        .ok_or("Slack sent no valid user id (U… or W…)")?;
    let channel_id = channel_id
        .filter(|c| crate::config::slack::is_channel_id(c))
        .ok_or("Slack sent no valid channel id (C…, G… or D…)")?;
    let response_url = response_url
        .filter(|u| !u.is_empty() && u.len() <= URL_MAX)
        .ok_or("Slack sent no response_url")?;
    let name = user_name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(user_id);
    Ok(Asker {
        user_id: user_id.to_string(),
        user_name: name
            .chars()
            .filter(|c| !c.is_control())
            .take(NAME_MAX)
            .collect(),
        channel_id: channel_id.to_string(),
        response_url: response_url.to_string(),
    })
}

/// A slash command from its fields (a JSON object of strings).
pub fn slash_command(fields: &Value) -> Result<SlashCommand, String> {
    let asker = asker(
        field(fields, "user_id"),
        field(fields, "user_name"),
        field(fields, "channel_id"),
        field(fields, "response_url"),
    )?;
    let command = field(fields, "command")
        .and_then(|c| c.strip_prefix('/'))
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .ok_or("Slack sent no command")?;
    let text = field(fields, "text").unwrap_or_default();
    if text.len() > line::MAX_LINE {
        return Err(format!(
            "the command's text is longer than {} characters",
            line::MAX_LINE
        ));
    }
    Ok(SlashCommand {
        asker,
        command: command.to_string(),
        text: text.to_string(),
    })
}

/// A button click from a `block_actions` payload.
pub fn block_actions(p: &Value) -> Result<Click, String> {
    if field(p, "type") != Some("block_actions") {
        return Err("runbot answers slash commands and buttons only".into());
    }
    let user = p.get("user").ok_or("Slack sent no user with this click")?;
    let name = field(user, "username").or_else(|| field(user, "name"));
    let channel = p
        .pointer("/channel/id")
        .or_else(|| p.pointer("/container/channel_id"))
        .and_then(Value::as_str);
    let asker = asker(field(user, "id"), name, channel, field(p, "response_url"))?;
    let action = p
        .get("actions")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or("Slack sent a click without its action")?;
    // runbot puts the id in both; `value` is what it meant, `action_id` must be unique.
    let custom_id = field(action, "value")
        .or_else(|| field(action, "action_id"))
        .filter(|id| !id.is_empty() && id.len() <= crate::request::button::MAX_LEN)
        .ok_or("Slack sent a button without a valid id")?;
    let message_ts = p
        .pointer("/container/message_ts")
        .or_else(|| p.pointer("/message/ts"))
        .and_then(Value::as_str);
    if message_ts.is_some_and(|ts| !is_ts(ts)) {
        return Err("Slack sent a message ts of the wrong shape".into());
    }
    Ok(Click {
        asker,
        custom_id: custom_id.to_string(),
        message_ts: message_ts.map(str::to_string),
        on_ephemeral: p.pointer("/container/is_ephemeral") == Some(&Value::Bool(true)),
    })
}

/// A form body's fields as a JSON object of strings (the last of a repeated name wins).
pub fn form_fields(body: &[u8]) -> Value {
    Value::Object(
        url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect(),
    )
}

fn actor(a: &Asker) -> Actor {
    Actor {
        platform: Platform::Slack,
        user_id: a.user_id.clone(),
        name: a.user_name.clone(),
        // Slack has no roles: policies/roles.toml grants them by member id.
        platform_roles: Vec::new(),
        roles: Vec::new(),
    }
}

/// The ephemeral refusal of a request runbot could not read.
pub fn refusal(why: &str) -> Value {
    response_body(
        &Reply {
            text: format!("🚫 {why}"),
            ephemeral: true,
            refused: true,
            ..Reply::default()
        },
        false,
    )
}

/// What turns Slack's requests into the core's and answers them.
pub struct Inbound {
    pub dispatcher: Arc<Dispatcher>,
    pub adapter: Arc<SlackAdapter>,
}

impl Inbound {
    /// A slash command: its first answer (the HTTP 200 body, or the Socket Mode ack's
    /// payload), and the `response_url` later answers go to (which also takes the first when
    /// it could not go with the ack).
    pub async fn command(&self, slash: SlashCommand) -> (Value, Arc<ResponseUrl>) {
        let url = ResponseUrl::new(self.adapter.clone(), &slash.asker);
        let actor = actor(&slash.asker);
        let origin = Origin {
            channel_id: Some(slash.asker.channel_id.clone()),
            message_id: None,
            group_id: None,
        };
        let name = slash.command;
        let mut args = Vec::new();
        // An unknown name goes on to the core, which refuses it with the close names (and
        // audits it); a line that does not parse is refused and audited as the console's is.
        if let Some(spec) = self.dispatcher.commands().get(&name) {
            match line::parse_line(spec, &slash.text) {
                Ok(parsed) => args = parsed,
                Err(e) => {
                    let reason = format!("/{name}: {e}");
                    let answer = self
                        .dispatcher
                        .refuse_unreadable(actor, &name, origin, reason)
                        .await;
                    return (first_body(&answer), url);
                }
            }
        }
        let request = Request::Command {
            actor,
            command: name,
            args,
            origin,
        };
        let responder = Arc::new(SlackResponder::new(url.clone(), true));
        let answer = self.dispatcher.handle(request, responder).await;
        (first_body(&answer), url)
    }

    /// A button click. Slack ignores what the ack carries for a click, so every answer goes
    /// by `response_url`: the caller acks at once and runs this after.
    pub async fn click(&self, click: Click) {
        let url = ResponseUrl::new(self.adapter.clone(), &click.asker);
        // Only a prompt's answer replaces the message clicked: a card's button must never
        // replace the card (it is the channel's, and its buttons are for everyone).
        let prompt = matches!(
            ButtonId::parse(&click.custom_id),
            Some(ButtonId::Prompt { .. })
        );
        let replaces = prompt || click.on_ephemeral;
        let request = Request::Button {
            actor: actor(&click.asker),
            custom_id: click.custom_id,
            origin: Origin {
                channel_id: Some(click.asker.channel_id.clone()),
                message_id: click.message_ts,
                group_id: None,
            },
        };
        let answer_replaces = |a: &Answer| matches!(a, Answer::Update(_)) && replaces;
        let responder = SlackResponder::new(url.clone(), false);
        let mode = responder.mode.clone();
        let answer = self.dispatcher.handle(request, Arc::new(responder)).await;
        // Later edits replace this answer when it replaced the prompt; otherwise each is a
        // new message, so only settled ones are posted.
        *mode.lock().expect("mode lock") = answer_replaces(&answer);
        let posted = match &answer {
            Answer::Message(reply) => url.post(reply, false).await,
            Answer::Update(reply) => url.post(reply, answer_replaces(&answer)).await,
            // Nothing yet: the result comes as an edit (a card's button shows no "working on
            // it" message that would then stay behind).
            Answer::Deferred { .. } => Ok(()),
        };
        url.open();
        if let Err(e) = posted {
            tracing::warn!(error = ?e, "Slack: could not answer a click");
        }
    }
}

/// The core's first answer to a slash command as Slack's message body.
pub fn first_body(answer: &Answer) -> Value {
    match answer {
        Answer::Message(reply) | Answer::Update(reply) => response_body(reply, false),
        Answer::Deferred { ephemeral } => response_body(
            &Reply {
                text: "⏳ Working on it…".into(),
                ephemeral: *ephemeral,
                ..Reply::default()
            },
            false,
        ),
    }
}

/// One request's `response_url` and its budget of 5 posts, with the fallback once it is
/// spent.
pub struct ResponseUrl {
    adapter: Arc<SlackAdapter>,
    url: String,
    channel: String,
    user: String,
    used: Mutex<usize>,
    /// Set once the first answer is with Slack: an edit posted before it could be overwritten
    /// by it, or replace a message Slack does not have yet.
    opened: tokio::sync::watch::Sender<bool>,
    /// How long a Web API answer waits out rate limits ([`API_PATIENCE`]).
    patience: Duration,
}

/// How one post to the URL ended.
enum UrlPost {
    Posted,
    /// It may have landed (a timeout, an answer cut off): not sent again any way.
    MaybePosted(DeliveryError),
    /// It did not land (uses spent, the URL refused, every try failed): the Web API may take it.
    NotPosted(DeliveryError),
}

/// How one try ended, when not posted.
enum Try {
    /// Slack answered an error, or the connection never opened: nothing landed.
    Failed(DeliveryError),
    MaybeLanded(DeliveryError),
}

impl ResponseUrl {
    pub fn new(adapter: Arc<SlackAdapter>, asker: &Asker) -> Arc<ResponseUrl> {
        Arc::new(ResponseUrl {
            adapter,
            url: asker.response_url.clone(),
            channel: asker.channel_id.clone(),
            user: asker.user_id.clone(),
            used: Mutex::new(0),
            opened: tokio::sync::watch::channel(false).0,
            patience: API_PATIENCE,
        })
    }

    /// The first answer is with Slack (or will never be): edits may go.
    pub fn open(&self) {
        self.opened.send_replace(true);
    }

    async fn wait_open(&self) {
        let mut rx = self.opened.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|o| *o).await;
    }

    /// Posts left on the URL.
    pub fn left(&self) -> usize {
        RESPONSE_URL_USES.saturating_sub(*self.used.lock().expect("used lock"))
    }

    /// Takes one of the 5 uses, if any is left.
    fn take_use(&self) -> bool {
        let mut used = self.used.lock().expect("used lock");
        let take = *used < RESPONSE_URL_USES;
        if take {
            *used += 1;
        }
        take
    }

    /// Posts a first answer already shaped as Slack's body (a slash command's, when the ack
    /// could not carry it).
    pub async fn post_body(&self, body: &Value) -> Result<(), DeliveryError> {
        match self.post_to_url(body).await {
            UrlPost::Posted => Ok(()),
            UrlPost::MaybePosted(e) | UrlPost::NotPosted(e) => Err(e),
        }
    }

    /// Posts `reply` to the URL while posts are left, else (or when Slack refuses the URL)
    /// by the Web API.
    pub async fn post(&self, reply: &Reply, replace: bool) -> Result<(), DeliveryError> {
        match self.post_to_url(&response_body(reply, replace)).await {
            UrlPost::Posted => Ok(()),
            UrlPost::MaybePosted(e) => {
                tracing::warn!(error = %e, "Slack: an answer's post to the response_url went unanswered; it may have been shown, so it is not posted again");
                Err(e)
            }
            UrlPost::NotPosted(_) => self.post_by_api(reply).await,
        }
    }

    /// Up to [`URL_ATTEMPTS`] tries, each taking a use.
    async fn post_to_url(&self, body: &Value) -> UrlPost {
        let mut last = DeliveryError::Permanent("the response_url's 5 posts are spent".into());
        for attempt in 0..URL_ATTEMPTS {
            if attempt > 0 && self.left() > 0 {
                let wait = match &last {
                    DeliveryError::RateLimited { retry_after } => *retry_after,
                    _ => Duration::from_secs(1),
                };
                tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
            }
            if !self.take_use() {
                return UrlPost::NotPosted(last);
            }
            match self.try_once(body).await {
                Ok(()) => return UrlPost::Posted,
                Err(Try::MaybeLanded(e)) => return UrlPost::MaybePosted(e),
                Err(Try::Failed(
                    e @ (DeliveryError::Transient(_) | DeliveryError::RateLimited { .. }),
                )) => last = e,
                Err(Try::Failed(e)) => {
                    tracing::warn!(error = %e, "Slack refused the response_url; posting by the Web API instead");
                    *self.used.lock().expect("used lock") = RESPONSE_URL_USES;
                    return UrlPost::NotPosted(e);
                }
            }
        }
        UrlPost::NotPosted(last)
    }

    /// One post to the URL, told apart by whether it may have landed.
    async fn try_once(&self, body: &Value) -> Result<(), Try> {
        self.adapter
            .post_response(&self.url, body)
            .await
            .map_err(|(e, maybe_landed)| {
                if maybe_landed {
                    Try::MaybeLanded(e)
                } else {
                    Try::Failed(e)
                }
            })
    }

    /// `chat.postEphemeral` to the asker, or `chat.postMessage` for an answer meant for the
    /// channel, waiting out rate limits for up to [`API_PATIENCE`]: it is the answer's last
    /// way, so it is not dropped for runbot's own pacing.
    async fn post_by_api(&self, reply: &Reply) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + self.patience;
        loop {
            match self.post_by_api_once(reply).await {
                Err(DeliveryError::RateLimited { retry_after }) => {
                    let at = Instant::now() + retry_after;
                    if at > deadline {
                        tracing::error!(
                            channel = %self.channel,
                            user = %self.user,
                            patience_secs = self.patience.as_secs(),
                            "Slack: an answer could not be posted within the rate limits in time; it is lost"
                        );
                        return Err(DeliveryError::RateLimited { retry_after });
                    }
                    tokio::time::sleep_until(at).await;
                }
                other => return other,
            }
        }
    }

    async fn post_by_api_once(&self, reply: &Reply) -> Result<(), DeliveryError> {
        let content = render::reply(&super::without_attachment(reply)).content();
        if reply.ephemeral {
            let request = SlackApiChatPostEphemeralRequest::new(
                self.channel.clone().into(),
                self.user.clone().into(),
                content,
            );
            let body = serde_json::to_value(&request)
                .map_err(|e| DeliveryError::Permanent(format!("encoding: {e}")))?;
            self.adapter
                .call("chat.postEphemeral", Pace::Tier4, &body, &[])
                .await
                .map(|_| ())
        } else {
            self.adapter
                .post_message(&self.channel, render::reply(reply), None, None)
                .await
                .map(|_| ())
        }
    }
}

/// Edits the answer to one request through its [`ResponseUrl`], coalesced so that the
/// 5-post limit never costs the final result (see the module's documentation).
pub struct SlackResponder {
    shared: Arc<Edits>,
    /// Whether edits replace the answer (set once the first answer is known).
    mode: Arc<Mutex<bool>>,
}

struct Edits {
    url: Arc<ResponseUrl>,
    mode: Arc<Mutex<bool>>,
    state: Mutex<EditState>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct EditState {
    /// The newest edit not posted yet.
    latest: Option<Reply>,
    last_edit: Option<Instant>,
    /// The responder was dropped: no edit can follow.
    closed: bool,
    worker: bool,
}

impl SlackResponder {
    /// `replaces`: edits replace the first answer (a slash command's).
    pub fn new(url: Arc<ResponseUrl>, replaces: bool) -> SlackResponder {
        let mode = Arc::new(Mutex::new(replaces));
        SlackResponder {
            shared: Arc::new(Edits {
                url,
                mode: mode.clone(),
                state: Mutex::new(EditState::default()),
                wake: tokio::sync::Notify::new(),
            }),
            mode,
        }
    }
}

impl Responder for SlackResponder {
    fn edit(&self, reply: Reply) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let start = {
                let mut st = self.shared.state.lock().expect("edit lock");
                st.latest = Some(reply);
                st.last_edit = Some(Instant::now());
                !std::mem::replace(&mut st.worker, true)
            };
            if start {
                tokio::spawn(deliver(self.shared.clone()));
            }
            self.shared.wake.notify_one();
            Ok(())
        })
    }
}

impl Drop for SlackResponder {
    fn drop(&mut self) {
        self.shared.state.lock().expect("edit lock").closed = true;
        self.shared.wake.notify_one();
    }
}

/// Posts the newest edit when its time comes, until the responder is gone and nothing waits.
async fn deliver(edits: Arc<Edits>) {
    let mut last_post: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let due = {
            let st = edits.state.lock().expect("edit lock");
            match (&st.latest, st.closed) {
                (None, true) => return,
                (None, false) => None,
                // Final: nothing can come after it.
                (Some(_), true) => Some(now),
                (Some(_), false) => {
                    let mut at = last_post.map_or(now, |t| t + EDIT_GAP);
                    let replaces = *edits.mode.lock().expect("mode lock");
                    // The last post of the URL, and a post that adds a message rather than
                    // replacing one, wait for the edits to settle.
                    if !replaces || edits.url.left() <= 1 {
                        at = at.max(st.last_edit.unwrap_or(now) + SETTLE);
                    }
                    Some(at)
                }
            }
        };
        match due {
            Some(at) if at <= now => {
                edits.url.wait_open().await;
                let Some(reply) = edits.state.lock().expect("edit lock").latest.take() else {
                    continue;
                };
                let replaces = *edits.mode.lock().expect("mode lock");
                if let Err(e) = edits.url.post(&reply, replaces).await {
                    tracing::warn!(error = ?e, "Slack: could not show an answer");
                }
                last_post = Some(Instant::now());
            }
            Some(at) => {
                tokio::select! {
                    () = edits.wake.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => edits.wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::slack::send::TIER4_BURST;
    use serde_json::json;

    #[test]
    fn ids_are_checked_for_shape() {
        let ok = json!({"user_id": "U0123ABC", "user_name": "ana", "channel_id": "C0123456789",
            "command": "/status", "text": "", "response_url": "https://hooks.slack.com/x"});
        let s = slash_command(&ok).unwrap();
        assert_eq!(s.command, "status");
        assert_eq!(s.asker.user_name, "ana");
        for (k, v) in [
            ("user_id", "u0123"),
            ("user_id", "1234567"),
            ("channel_id", "#ops"),
            ("command", "status"),
            ("response_url", ""),
        ] {
            let mut bad = ok.clone();
            bad[k] = json!(v);
            assert!(slash_command(&bad).is_err(), "{k}={v}");
        }
        assert!(is_ts("1700000000.000100"));
        assert!(!is_ts("1700000000"));
        assert!(!is_ts("17.00.1"));
    }

    #[test]
    fn a_click_carries_the_button_id_and_the_message() {
        let p = json!({"type": "block_actions", "user": {"id": "U1AB", "username": "bo"},
            "channel": {"id": "C0123456789"}, "response_url": "https://hooks.slack.com/x",
            "container": {"message_ts": "1.2", "is_ephemeral": true},
            "actions": [{"action_id": "rb1:7:0", "value": "rb1:7:0"}]});
        let c = block_actions(&p).unwrap();
        assert_eq!(c.custom_id, "rb1:7:0");
        assert_eq!(c.message_ts.as_deref(), Some("1.2"));
        assert!(c.on_ephemeral);
        let mut bad = p.clone();
        bad["container"]["message_ts"] = json!("1.2; drop");
        assert!(block_actions(&bad).is_err());
        let mut other = p.clone();
        other["type"] = json!("view_submission");
        assert!(block_actions(&other).is_err());
    }

    const CHANNEL: &str = "C0OPS00001";

    async fn url_on(fake: &fake_slack::FakeSlack) -> (Arc<ResponseUrl>, String) {
        url_timing_out(fake, 10_000).await
    }

    /// With runbot's requests to Slack given up after `timeout_ms`.
    async fn url_timing_out(
        fake: &fake_slack::FakeSlack,
        timeout_ms: u64,
    ) -> (Arc<ResponseUrl>, String) {
        let env = [
            ("RUNBOT__SLACK__REQUEST_TIMEOUT_MS", timeout_ms.to_string()),
            (
                "RUNBOT__SLACK__BOT_TOKEN",
                fake_slack::BOT_TOKEN.to_string(),
            ),
            ("RUNBOT__SLACK__ALERT_CHANNEL_ID", CHANNEL.to_string()),
            ("RUNBOT__SLACK__API_BASE", fake.api_base()),
            (
                "RUNBOT__SLACK__APP_TOKEN",
                fake_slack::APP_TOKEN.to_string(),
            ),
        ];
        let settings = crate::config::Settings::load_from(
            None,
            env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        )
        .unwrap();
        let adapter = Arc::new(SlackAdapter::new(&settings).unwrap());
        let url = fake.response_url();
        let asker = Asker {
            user_id: "U0ANA0001".into(),
            user_name: "ana".into(),
            channel_id: CHANNEL.into(),
            response_url: url.clone(),
        };
        (ResponseUrl::new(adapter, &asker), url)
    }

    fn text(t: &str) -> Reply {
        Reply {
            text: t.into(),
            ephemeral: true,
            ..Reply::default()
        }
    }

    fn texts(fake: &fake_slack::FakeSlack, url: &str) -> Vec<String> {
        fake.responses(url)
            .iter()
            .map(|b| b["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn settled(fake: &fake_slack::FakeSlack, url: &str, n: usize) {
        for _ in 0..500 {
            if fake.responses(url).len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{:?}", texts(fake, url));
    }

    #[tokio::test]
    async fn edits_are_coalesced_and_the_newest_always_goes() {
        let fake = fake_slack::FakeSlack::start().await;
        let (url, at) = url_on(&fake).await;
        url.open();
        let responder = SlackResponder::new(url.clone(), true);
        for i in 1..=20 {
            responder.edit(text(&format!("step {i}"))).await.unwrap();
        }
        // What came before the post went out is one post: the newest.
        settled(&fake, &at, 1).await;
        assert_eq!(texts(&fake, &at), ["step 20"]);
        for i in 21..=30 {
            responder.edit(text(&format!("step {i}"))).await.unwrap();
        }
        // Nothing sooner than EDIT_GAP after the last post, then the newest.
        tokio::time::sleep(EDIT_GAP / 2).await;
        assert_eq!(texts(&fake, &at), ["step 20"]);
        settled(&fake, &at, 2).await;
        assert_eq!(texts(&fake, &at), ["step 20", "step 30"]);
        assert_eq!(fake.responses(&at)[1]["replace_original"], true);
        // The result, once the core lets go of the responder: at once, not after a gap.
        responder.edit(text("done")).await.unwrap();
        drop(responder);
        settled(&fake, &at, 3).await;
        assert_eq!(texts(&fake, &at).last().unwrap(), "done");
    }

    #[tokio::test]
    async fn the_last_post_waits_for_the_result_and_then_the_api_takes_over() {
        let fake = fake_slack::FakeSlack::start().await;
        let (url, at) = url_on(&fake).await;
        url.open();
        for i in 0..4 {
            url.post(&text(&format!("early {i}")), true).await.unwrap();
        }
        assert_eq!(url.left(), 1);
        // One post left: progress does not spend it while edits keep coming …
        let responder = SlackResponder::new(url.clone(), true);
        responder.edit(text("progress")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fake.responses(&at).len(), 4);
        // … the result does.
        responder.edit(text("the result")).await.unwrap();
        drop(responder);
        settled(&fake, &at, 5).await;
        assert_eq!(texts(&fake, &at).last().unwrap(), "the result");
        // Past the five (or when Slack refuses the URL), chat.postEphemeral to the asker.
        let again = SlackResponder::new(url.clone(), true);
        again.edit(text("after the five")).await.unwrap();
        drop(again);
        let mut got = Vec::new();
        for _ in 0..500 {
            got = fake.ephemerals_in(CHANNEL);
            if !got.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "U0ANA0001");
        assert!(got[0].1.text.contains("after the five"), "{:?}", got[0].1);
        assert_eq!(
            fake.responses(&at).len(),
            5,
            "the URL was not posted to again"
        );
        assert!(!texts(&fake, &at).contains(&"progress".to_string()));
    }

    #[tokio::test]
    async fn every_try_counts_and_a_post_that_may_have_landed_is_not_made_again() {
        let fake = fake_slack::FakeSlack::start().await;
        let (url, at) = url_timing_out(&fake, 400).await;
        url.open();
        // Two 503s, then through: three tries, three of the five uses (Slack may have counted
        // the failed ones).
        fake.fail_next_responses(2);
        url.post(&text("third time"), true).await.unwrap();
        assert_eq!(texts(&fake, &at), ["third time"]);
        assert_eq!(url.left(), 2);

        // Slack takes the post but answers after runbot gave up: tried once, not again, and
        // not by the Web API either: the person would see it twice.
        let (slow, slow_at) = url_timing_out(&fake, 400).await;
        slow.open();
        fake.set_response_delay(Duration::from_millis(1500));
        let posted = slow.post(&text("once"), false).await;
        assert!(
            matches!(posted, Err(DeliveryError::Transient(_))),
            "{posted:?}"
        );
        fake.set_response_delay(Duration::ZERO);
        assert_eq!(texts(&fake, &slow_at), ["once"]);
        assert_eq!(slow.left(), RESPONSE_URL_USES - 1);
        assert!(fake.ephemerals_in(CHANNEL).is_empty());
        assert_eq!(fake.count("chat.postEphemeral"), 0);

        // Failing tries that spend the last uses leave the answer to the Web API.
        fake.fail_next_responses(2);
        url.post(&text("by the api"), true).await.unwrap();
        assert_eq!(url.left(), 0);
        let got = fake.ephemerals_in(CHANNEL);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].1.text.contains("by the api"));
        assert_eq!(texts(&fake, &at), ["third time"]);
    }

    #[tokio::test]
    async fn answers_past_the_five_wait_their_turn_instead_of_being_dropped() {
        let fake = fake_slack::FakeSlack::start().await;
        let (url, _) = url_on(&fake).await;
        url.open();
        *url.used.lock().unwrap() = RESPONSE_URL_USES;
        // More than runbot's Tier 4 burst (10) at once: the rest wait for their turn.
        let n = TIER4_BURST as usize + 3;
        let started = Instant::now();
        for i in 0..n {
            url.post(&text(&format!("answer {i}")), false)
                .await
                .unwrap();
        }
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let got = fake.ephemerals_in(CHANNEL);
        assert_eq!(got.len(), n);
        assert!(got[n - 1].1.text.contains(&format!("answer {}", n - 1)));
        assert_eq!(fake.rate_limited(), 0, "Slack never had to say 429");

        // Held back longer than runbot waits: given up (and logged), not waited for forever.
        let (mut held, _) = url_on(&fake).await;
        Arc::get_mut(&mut held).unwrap().patience = Duration::from_millis(300);
        *held.used.lock().unwrap() = RESPONSE_URL_USES;
        held.adapter
            .pacing
            .pause(Pace::Tier4, Duration::from_secs(30));
        let started = Instant::now();
        let posted = held.post(&text("too late"), false).await;
        assert!(
            matches!(posted, Err(DeliveryError::RateLimited { .. })),
            "{posted:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(fake.ephemerals_in(CHANNEL).len(), n);
    }
}
