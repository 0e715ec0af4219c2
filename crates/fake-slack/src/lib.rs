//! A fake Slack for the integration tests: the Web API methods runbot calls, `response_url`,
//! and Socket Mode.
//!
//! It is as strict as the real Slack, and stricter where Slack would silently do the wrong
//! thing (each such place says so):
//!
//! - `POST|GET /api/{method}` for `auth.test`, `chat.postMessage`, `chat.update`,
//!   `chat.postEphemeral`, `conversations.open`, `conversations.history`,
//!   `conversations.replies`, `apps.connections.open`; any other method is 404
//!   `unknown_method`. Arguments come from the query string, a form body, or a JSON body
//!   (`application/json; charset=utf-8`; without the charset Slack adds the warning
//!   `missing_charset`) for the methods whose spec takes JSON ([`spec`]).
//! - `Authorization: Bearer` [`BOT_TOKEN`] (or [`APP_TOKEN`] for `apps.connections.open`):
//!   missing → `not_authed`, the other kind of token → `not_allowed_token_type`, anything
//!   else → `invalid_auth`. Errors are HTTP 200 `{"ok":false,"error":...}` as Slack's are.
//! - Unknown arguments are refused with `invalid_arguments` and a
//!   `response_metadata.messages` entry naming them (Slack ignores them: a misspelt argument
//!   would silently do nothing there). Missing ones get Slack's error names.
//! - `blocks` are checked against Block Kit's documented limits ([`blocks`]) →
//!   `invalid_blocks`; `text` over 40 000 characters → `msg_too_long`.
//! - Channels: any `C…` or `G…` id exists (the bot is in it); `D…` only once
//!   `conversations.open` gave it; names (`#ops`) and user ids are refused with
//!   `channel_not_found` (Slack takes them; runbot must use ids).
//! - `ts` values `1700000000.000100`, strictly increasing.
//! - Rate limits (switchable, [`FakeSlack::set_limits`]): HTTP 429, `Retry-After`, `ratelimited`.
//! - `POST /response/{id}` ([`FakeSlack::response_url`]): at most 5 posts within 30 minutes.
//! - Socket Mode: `apps.connections.open` gives a one-time `ws://…/socket/{id}`; the fake sends
//!   `hello`, envelopes, `disconnect`, records acks, redelivers an envelope not acked in 3 s.
//!
//! The fake runs on its own thread and Tokio runtime, so it keeps serving while a test blocks
//! and across restarts of the process under test. Its state lives as long as the last clone
//! of the [`FakeSlack`] handle.

pub mod blocks;
pub mod spec;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

/// The bot token the fake accepts (Slack's `xoxb-` shape).
pub const BOT_TOKEN: &str = "xoxb-1111111111-2222222222-fakeslackbottoken0";
/// The app-level token, for `apps.connections.open` only.
pub const APP_TOKEN: &str = "xapp-1-A0FAKE-1111111111-fakeslackapptoken0";
/// The signing secret a test signs HTTP-mode requests with ([`sign`]).
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const TEAM_ID: &str = "T0FAKE";
pub const APP_ID: &str = "A0FAKE";
/// The bot user every message posted with [`BOT_TOKEN`] is authored by.
pub const BOT_USER_ID: &str = "U0FAKEBOT";
pub const BOT_ID: &str = "B0FAKE";
/// Message `text` longer than this is `msg_too_long`.
pub const MAX_TEXT_CHARS: usize = 40_000;
/// Posts one `response_url` takes, and for how long.
pub const RESPONSE_URL_USES: usize = 5;
pub const RESPONSE_URL_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// An envelope not acknowledged within this is redelivered (once).
pub const ACK_DEADLINE: Duration = Duration::from_secs(3);

/// A message as the fake holds it (in its current state).
#[derive(Clone, Debug)]
pub struct Message {
    pub ts: String,
    pub channel: String,
    pub text: String,
    pub blocks: Vec<Value>,
    /// Legacy attachments (a colour bar with blocks inside), as last posted or updated.
    pub attachments: Vec<Value>,
    /// The thread it replies to (`None` for a top-level message).
    pub thread_ts: Option<String>,
    /// How many `chat.update`s it went through.
    pub edits: usize,
    /// Always `None` for the bot's messages: Slack sets it only for its own clients, and
    /// chat.postMessage takes no such argument (see [`spec`]).
    pub client_msg_id: Option<String>,
    /// The author: [`BOT_USER_ID`], or the person given to [`FakeSlack::post_as_user`].
    pub user: String,
    /// `{event_type, event_payload}` when posted or updated with `metadata`.
    pub metadata: Option<Value>,
    /// The message as Slack returns it (with `metadata`, as `include_all_metadata` does).
    pub raw: Value,
}

/// One call the fake received (Web API method, or `response_url` as method `"response_url"`).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The HTTP status answered.
    pub status: u16,
    pub ok: bool,
    pub error: Option<String>,
    /// The arguments, as a JSON object (form and query values as strings).
    pub body: Value,
    /// The answer's body.
    pub answer: Value,
    pub content_type: Option<String>,
    pub at: Instant,
}

/// What the fake saw of the acknowledgements of one envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    /// The `payload` of the first ack (a slash command's first answer).
    pub payload: Option<Value>,
    /// From the delivery it acknowledged to the first ack.
    pub after: Duration,
    /// Acks received for the envelope so far.
    pub count: usize,
}

enum Out {
    Text(String),
    Close,
    Abort,
    /// Stop reading and sending (pings go unanswered) but keep the TCP connection open.
    Freeze,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Envelope {
    kind: String,
    payload: Value,
    accepts: bool,
    retry_attempt: u32,
    last_delivery: Option<Instant>,
    ack: Option<Ack>,
}

struct ResponseUrl {
    created: Instant,
    bodies: Vec<Value>,
}

struct State {
    port: u16,
    down: bool,
    /// Answers come this late, after the call took effect (a slow network, a lost answer).
    answer_delay: Duration,
    limits: bool,
    redeliver: bool,
    last_ts: u64,
    next_id: u64,
    messages: Vec<Message>,
    ephemerals: Vec<(String, Message)>,
    requests: Vec<Recorded>,
    rate_limited: usize,
    buckets: HashMap<String, Bucket>,
    fail_next: HashMap<String, VecDeque<String>>,
    /// `response_url` posts still to answer 503 without taking effect.
    fail_responses: usize,
    /// `response_url` answers come this late, after the post took effect.
    response_delay: Duration,
    /// DM channel of each user conversations.open was asked about.
    dms: HashMap<String, String>,
    /// Multi-person DMs opened, by their sorted member list.
    mpims: HashMap<String, String>,
    opened: HashSet<String>,
    responses: HashMap<String, ResponseUrl>,
    /// One-time Socket Mode URLs: id → used.
    socket_urls: HashMap<String, bool>,
    connections: BTreeMap<u64, mpsc::UnboundedSender<Out>>,
    /// Connections [`FakeSlack::freeze_connections`] silenced: open, but nothing goes either
    /// way, so no envelope is sent to them.
    frozen: HashSet<u64>,
    next_connection: u64,
    round_robin: usize,
    connections_opened: usize,
    envelopes: HashMap<String, Envelope>,
    acks: Vec<(String, Ack)>,
    bad_acks: Vec<String>,
}

impl State {
    fn new(port: u16) -> State {
        State {
            port,
            down: false,
            answer_delay: Duration::ZERO,
            limits: true,
            redeliver: true,
            last_ts: 0,
            next_id: 0,
            messages: Vec::new(),
            ephemerals: Vec::new(),
            requests: Vec::new(),
            rate_limited: 0,
            buckets: HashMap::new(),
            fail_next: HashMap::new(),
            fail_responses: 0,
            response_delay: Duration::ZERO,
            dms: HashMap::new(),
            mpims: HashMap::new(),
            opened: HashSet::new(),
            responses: HashMap::new(),
            socket_urls: HashMap::new(),
            connections: BTreeMap::new(),
            frozen: HashSet::new(),
            next_connection: 0,
            round_robin: 0,
            connections_opened: 0,
            envelopes: HashMap::new(),
            acks: Vec::new(),
            bad_acks: Vec::new(),
        }
    }

    /// The next message `ts`: microseconds since the epoch, strictly increasing.
    fn next_ts(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let v = now.max(self.last_ts + 1);
        self.last_ts = v;
        format!("{}.{:06}", v / 1_000_000, v % 1_000_000)
    }

    /// A fresh id for URLs and envelopes (hard to guess is not needed; unique is).
    fn next_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{prefix}{:04}{:08x}", self.next_id, nanos)
    }

    /// Takes one token from a bucket of `capacity` refilled at `per_second`; `Err(seconds)`
    /// to wait when it is empty.
    fn take(&mut self, key: String, capacity: f64, per_second: f64) -> Result<(), u64> {
        if !self.limits {
            return Ok(());
        }
        let now = Instant::now();
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_second).min(capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.tokens) / per_second).ceil() as u64).max(1))
        }
    }

    fn channel_exists(&self, channel: &str) -> bool {
        let mut chars = channel.chars();
        let first = chars.next();
        let rest_ok = channel.len() >= 3
            && channel[1..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        match first {
            Some('C') | Some('G') => rest_ok,
            Some('D') => rest_ok && self.opened.contains(channel),
            _ => false,
        }
    }

    /// Sends an envelope to one open connection; false when none is open.
    fn deliver(&mut self, id: &str) -> bool {
        let Some(env) = self.envelopes.get(id) else {
            return false;
        };
        let text = json!({
            "envelope_id": id,
            "type": env.kind,
            "payload": env.payload,
            "accepts_response_payload": env.accepts,
            "retry_attempt": env.retry_attempt,
            "retry_reason": if env.retry_attempt == 0 { "" } else { "timeout" },
        })
        .to_string();
        let ids: Vec<u64> = self
            .connections
            .keys()
            .filter(|id| !self.frozen.contains(id))
            .copied()
            .collect();
        for i in 0..ids.len() {
            let pick = ids[(self.round_robin + i) % ids.len()];
            if self.connections[&pick]
                .send(Out::Text(text.clone()))
                .is_ok()
            {
                self.round_robin = self.round_robin.wrapping_add(i + 1);
                if let Some(env) = self.envelopes.get_mut(id) {
                    env.last_delivery = Some(Instant::now());
                }
                return true;
            }
        }
        false
    }
}

struct Shared {
    state: Mutex<State>,
    port: u16,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

/// The fake Slack. Clones share the server and its state.
#[derive(Clone)]
pub struct FakeSlack {
    inner: Arc<Inner>,
}

impl FakeSlack {
    /// Starts the fake on 127.0.0.1 on a free port.
    pub async fn start() -> FakeSlack {
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fake-slack".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("fake-slack-worker")
                    .enable_all()
                    .build()
                    .expect("the fake Slack's runtime starts");
                let _ = handle_tx.send(rt.handle().clone());
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                rt.shutdown_background();
            })
            .expect("spawn the fake Slack's thread");
        let rt: tokio::runtime::Handle = handle_rx.await.expect("the fake Slack's runtime");
        let listener = rt
            .spawn(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .await
            .unwrap()
            .expect("bind the fake Slack");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(port)),
            port,
        });
        let app = Router::new()
            .route("/api/{method}", any(web_api))
            .route("/response/{id}", post(response_url))
            .route("/socket/{id}", get(socket))
            .with_state(shared.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSlack {
            inner: Arc::new(Inner {
                shared,
                rt,
                stop: Mutex::new(Some(stop_tx)),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.shared.lock()
    }

    pub fn port(&self) -> u16 {
        self.inner.shared.port
    }

    /// `http://127.0.0.1:PORT/api`: what runbot's `slack.api_base` is set to.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port())
    }

    /// Top-level messages of a channel, oldest first, as last updated.
    pub fn messages_in(&self, channel: &str) -> Vec<Message> {
        self.state()
            .messages
            .iter()
            .filter(|m| m.channel == channel && m.thread_ts.is_none())
            .cloned()
            .collect()
    }

    /// The replies in a thread, oldest first (the parent is not among them).
    pub fn replies(&self, channel: &str, thread_ts: &str) -> Vec<Message> {
        self.state()
            .messages
            .iter()
            .filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(thread_ts))
            .cloned()
            .collect()
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<Message> {
        self.state()
            .messages
            .iter()
            .find(|m| m.channel == channel && m.ts == ts)
            .cloned()
    }

    /// Ephemeral messages (chat.postEphemeral) in a channel, with the user each was for.
    pub fn ephemerals_in(&self, channel: &str) -> Vec<(String, Message)> {
        self.state()
            .ephemerals
            .iter()
            .filter(|(_, m)| m.channel == channel)
            .cloned()
            .collect()
    }

    /// Posts a message as a person (not the bot), e.g. to see `cant_update_message`.
    pub fn post_as_user(&self, channel: &str, user: &str, text: &str) -> String {
        let mut st = self.state();
        let ts = st.next_ts();
        let raw = json!({"type": "message", "user": user, "text": text, "ts": ts, "team": TEAM_ID});
        st.messages.push(Message {
            ts: ts.clone(),
            channel: channel.to_string(),
            text: text.to_string(),
            blocks: Vec::new(),
            thread_ts: None,
            edits: 0,
            attachments: Vec::new(),
            client_msg_id: None,
            user: user.to_string(),
            metadata: None,
            raw,
        });
        ts
    }

    /// Every Web API call (and `response_url` post), in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// Calls of `method` that succeeded.
    pub fn count(&self, method: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method && r.ok)
            .count()
    }

    /// 429s answered so far.
    pub fn rate_limited(&self) -> usize {
        self.state().rate_limited
    }

    /// An outage: every Web API call and `response_url` post answers 503 and changes nothing.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Answers every Web API call this late, after it took effect: a client that times out
    /// sooner does not know whether its post was made.
    pub fn set_answer_delay(&self, delay: Duration) {
        self.state().answer_delay = delay;
    }

    /// Rate limits on (the default) or off. Turning them on again starts with full buckets.
    pub fn set_limits(&self, enforce: bool) {
        let mut st = self.state();
        st.limits = enforce;
        st.buckets.clear();
    }

    /// The next call of `method` (that passes authentication) answers
    /// `{"ok":false,"error":error}` and changes nothing.
    pub fn fail_next(&self, method: &str, error: &str) {
        self.state()
            .fail_next
            .entry(method.to_string())
            .or_default()
            .push_back(error.to_string());
    }

    /// Waits until `f` finds what it wants; panics with `what` and the last requests after
    /// `timeout`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&FakeSlack) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = f(self) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; last requests (newest first):\n{}",
                    self.summary(12)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` requests, newest first, one line each.
    pub fn summary(&self, n: usize) -> String {
        let st = self.state();
        st.requests
            .iter()
            .rev()
            .take(n)
            .map(|r| format!("{} -> {} {}", r.method, r.status, r.answer))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A fresh `response_url`: `http://127.0.0.1:PORT/response/<id>`.
    pub fn response_url(&self) -> String {
        let mut st = self.state();
        let id = st.next_id("R");
        st.responses.insert(
            id.clone(),
            ResponseUrl {
                created: Instant::now(),
                bodies: Vec::new(),
            },
        );
        format!("http://127.0.0.1:{}/response/{id}", self.port())
    }

    /// Bodies accepted at that `response_url`, in order.
    pub fn responses(&self, url: &str) -> Vec<Value> {
        let id = url.rsplit('/').next().unwrap_or("");
        self.state()
            .responses
            .get(id)
            .map(|r| r.bodies.clone())
            .unwrap_or_default()
    }

    /// Messages in the DM channel conversations.open gave for `user`, replies included,
    /// oldest first.
    pub fn dms_to(&self, user: &str) -> Vec<Message> {
        let st = self.state();
        let Some(channel) = st.dms.get(user) else {
            return Vec::new();
        };
        st.messages
            .iter()
            .filter(|m| &m.channel == channel)
            .cloned()
            .collect()
    }

    /// Sends an envelope over Socket Mode to one open connection and returns its id; waits up
    /// to 10 s for a connection. Unless acknowledged within 3 s it is redelivered once (see
    /// [`FakeSlack::set_redeliver`]).
    pub async fn send_envelope(
        &self,
        kind: &str,
        payload: Value,
        accepts_response_payload: bool,
    ) -> String {
        assert!(
            matches!(kind, "slash_commands" | "interactive" | "events_api"),
            "unknown envelope type {kind}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let mut st = self.state();
                if !st.connections.is_empty() {
                    let id = st.next_id("E");
                    st.envelopes.insert(
                        id.clone(),
                        Envelope {
                            kind: kind.to_string(),
                            payload: payload.clone(),
                            accepts: accepts_response_payload,
                            retry_attempt: 0,
                            last_delivery: None,
                            ack: None,
                        },
                    );
                    if st.deliver(&id) {
                        drop(st);
                        self.inner
                            .rt
                            .spawn(redeliver_unacked(self.inner.shared.clone(), id.clone()));
                        return id;
                    }
                    st.envelopes.remove(&id);
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no Socket Mode connection open after 10 s to send a {kind} envelope; last requests:\n{}",
                    self.summary(12)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Delivers an envelope again, as Slack does when it got no ack (retry_attempt + 1,
    /// retry_reason "timeout"); waits up to 10 s for a connection.
    pub async fn resend_envelope(&self, envelope_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut bumped = false;
        loop {
            {
                let mut st = self.state();
                let Some(env) = st.envelopes.get_mut(envelope_id) else {
                    panic!("no envelope {envelope_id} was sent");
                };
                if !bumped {
                    env.retry_attempt += 1;
                    bumped = true;
                }
                if st.deliver(envelope_id) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("no Socket Mode connection open after 10 s to resend {envelope_id}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the envelope's first ack.
    pub async fn wait_ack(&self, envelope_id: &str, timeout: Duration) -> Option<Ack> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self
                .state()
                .envelopes
                .get(envelope_id)
                .and_then(|e| e.ack.clone())
            {
                return Some(a);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every ack received, in order (`count` is how many that envelope had by then).
    pub fn acks(&self) -> Vec<(String, Ack)> {
        self.state().acks.clone()
    }

    /// What the client sent over Socket Mode that was not a good ack: unknown envelope ids,
    /// bad JSON, unknown keys, a payload the envelope did not accept or an invalid one.
    pub fn bad_acks(&self) -> Vec<String> {
        self.state().bad_acks.clone()
    }

    /// Whether an envelope not acked in 3 s is redelivered (on by default).
    pub fn set_redeliver(&self, on: bool) {
        self.state().redeliver = on;
    }

    /// apps.connections.open calls that succeeded.
    pub fn connections_opened(&self) -> usize {
        self.state().connections_opened
    }

    /// WebSockets open now and not frozen.
    pub fn connected(&self) -> usize {
        let st = self.state();
        st.connections.len() - st.frozen.len()
    }

    /// A connection a NAT silently dropped: every socket open now stays open (TCP and all)
    /// but the fake stops reading from it and sending on it, so pings go unanswered and no
    /// envelope goes there. New connections work as usual.
    pub fn freeze_connections(&self) {
        let mut st = self.state();
        let ids: Vec<u64> = st.connections.keys().copied().collect();
        for id in ids {
            if st.connections[&id].send(Out::Freeze).is_ok() {
                st.frozen.insert(id);
            }
        }
    }

    /// The next `n` `response_url` posts answer 503 and take no effect.
    pub fn fail_next_responses(&self, n: usize) {
        self.state().fail_responses = n;
    }

    /// `response_url` posts take effect at once but are answered this late: a client that
    /// times out sooner does not know whether its post landed.
    pub fn set_response_delay(&self, delay: Duration) {
        self.state().response_delay = delay;
    }

    /// Closes every socket abruptly: no disconnect message, no close frame.
    pub async fn drop_connections(&self) {
        {
            let st = self.state();
            for tx in st.connections.values() {
                let _ = tx.send(Out::Abort);
            }
        }
        self.wait_closed().await;
    }

    /// Sends `{"type":"disconnect","reason":"refresh_requested"}` on every socket and closes
    /// them 1 s later, as Slack does before it recycles a connection.
    pub async fn request_refresh(&self) {
        let ids: Vec<u64> = {
            let st = self.state();
            let msg = json!({"type": "disconnect", "reason": "refresh_requested",
                "debug_info": {"host": "fake-slack"}})
            .to_string();
            for tx in st.connections.values() {
                let _ = tx.send(Out::Text(msg.clone()));
            }
            st.connections.keys().copied().collect()
        };
        let shared = self.inner.shared.clone();
        self.inner.rt.spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let st = shared.lock();
            for id in ids {
                if let Some(tx) = st.connections.get(&id) {
                    let _ = tx.send(Out::Close);
                }
            }
        });
    }

    async fn wait_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.connected() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn redeliver_unacked(shared: Arc<Shared>, id: String) {
    tokio::time::sleep(ACK_DEADLINE).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let mut st = shared.lock();
            let pending = st
                .envelopes
                .get(&id)
                .is_some_and(|e| e.ack.is_none() && e.retry_attempt == 0);
            if !pending || !st.redeliver {
                return;
            }
            if let Some(e) = st.envelopes.get_mut(&id) {
                e.retry_attempt = 1;
            }
            if st.deliver(&id) {
                return;
            }
            if let Some(e) = st.envelopes.get_mut(&id) {
                e.retry_attempt = 0;
            }
        }
        if Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Web API

/// Why a call is refused.
enum Refusal {
    Error(&'static str, Vec<String>),
    Limited(u64),
}

fn refuse(error: &'static str) -> Refusal {
    Refusal::Error(error, Vec::new())
}

fn refuse_with(error: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::Error(error, vec![message.into()])
}

type Outcome = Result<Value, Refusal>;

/// The arguments of one call.
struct Args {
    map: Map<String, Value>,
}

impl Args {
    fn str(&self, name: &str) -> Result<Option<String>, Refusal> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(_) => Err(refuse_with(
                "invalid_arguments",
                format!("[ERROR] must be a string [json-pointer:/{name}]"),
            )),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, Refusal> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" || s == "1" => Ok(true),
            Some(Value::String(s)) if s == "false" || s == "0" || s.is_empty() => Ok(false),
            Some(_) => Err(refuse_with(
                "invalid_arguments",
                format!("[ERROR] must be a boolean [json-pointer:/{name}]"),
            )),
        }
    }

    /// A JSON argument: as JSON in a JSON body, or a JSON string in a form.
    fn json(&self, name: &str, bad: &'static str) -> Result<Option<Value>, Refusal> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(Some)
                .map_err(|e| refuse_with(bad, format!("[ERROR] {name} is not valid JSON: {e}"))),
            Some(v) => Ok(Some(v.clone())),
        }
    }
}

struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = (
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("content-type", "application/json; charset=utf-8")],
            self.body.to_string(),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert("retry-after", s.to_string().parse().unwrap());
        }
        r
    }
}

async fn web_api(
    AxState(shared): AxState<Arc<Shared>>,
    Path(method): Path<String>,
    verb: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Reply {
    let at = Instant::now();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (reply, delay) = {
        let mut st = shared.lock();
        let mut args_seen = Value::Object(Map::new());
        let reply = call(
            &mut st,
            &method,
            &verb,
            &headers,
            query.as_deref(),
            &body,
            &mut args_seen,
        );
        if reply.status == 429 {
            st.rate_limited += 1;
        }
        let ok = reply.body.get("ok").and_then(Value::as_bool) == Some(true);
        st.requests.push(Recorded {
            method: method.chars().take(100).collect(),
            status: reply.status,
            ok,
            error: reply
                .body
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string),
            body: args_seen,
            answer: reply.body.clone(),
            content_type,
            at,
        });
        (reply, st.answer_delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    reply
}

fn call(
    st: &mut State,
    method: &str,
    verb: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    args_seen: &mut Value,
) -> Reply {
    if st.down {
        return Reply {
            status: 503,
            body: json!({"ok": false, "error": "service_unavailable"}),
            retry_after: None,
        };
    }
    let Some(spec) = spec::method(method) else {
        return Reply {
            status: 404,
            body: json!({"ok": false, "error": "unknown_method", "req_method": method}),
            retry_after: None,
        };
    };
    let mut warnings = Vec::new();
    let outcome = (|| {
        authenticate(spec, headers)?;
        let args = parse_args(spec, verb, headers, query, body, &mut warnings)?;
        *args_seen = Value::Object(args.map.clone());
        if let Some(error) = st.fail_next.get_mut(method).and_then(VecDeque::pop_front) {
            return Err(Refusal::Error(leak(error), Vec::new()));
        }
        let unknown: Vec<&String> = args
            .map
            .keys()
            .filter(|k| !spec.args.contains(&k.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(Refusal::Error(
                "invalid_arguments",
                unknown
                    .iter()
                    .map(|k| {
                        let why = match k.as_str() {
                            "token" => " (send the token in the Authorization header)",
                            "client_msg_id" => {
                                " (Slack keeps client_msg_id for its own clients; find messages by metadata)"
                            }
                            _ => "",
                        };
                        format!("[ERROR] unknown argument '{k}' for {method}{why}")
                    })
                    .collect(),
            ));
        }
        match method {
            "auth.test" => Ok(json!({
                "url": "https://fake-slack.example/", "team": "Fake", "user": "runbot",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
                "is_enterprise_install": false,
            })),
            "chat.postMessage" => post_message(st, &args, &mut warnings),
            "chat.update" => update_message(st, &args, &mut warnings),
            "chat.postEphemeral" => post_ephemeral(st, &args, &mut warnings),
            "conversations.open" => open_conversation(st, &args),
            "conversations.history" => history(st, &args),
            "conversations.replies" => replies(st, &args),
            "apps.connections.open" => open_connection(st),
            _ => unreachable!("every method of the spec table is served"),
        }
    })();
    let mut reply = match outcome {
        Ok(mut v) => {
            v.as_object_mut()
                .expect("answers are objects")
                .insert("ok".into(), Value::Bool(true));
            Reply {
                status: 200,
                body: v,
                retry_after: None,
            }
        }
        Err(Refusal::Limited(secs)) => Reply {
            status: 429,
            body: json!({"ok": false, "error": "ratelimited"}),
            retry_after: Some(secs),
        },
        Err(Refusal::Error(error, messages)) => {
            let mut body = json!({"ok": false, "error": error});
            if !messages.is_empty() {
                body["response_metadata"] = json!({ "messages": messages });
            }
            Reply {
                status: 200,
                body,
                retry_after: None,
            }
        }
    };
    if !warnings.is_empty() && reply.status == 200 {
        reply.body["warning"] = Value::String(warnings.join(","));
        let meta = reply.body.as_object_mut().unwrap();
        let rm = meta.entry("response_metadata").or_insert_with(|| json!({}));
        rm["warnings"] = json!(warnings);
    }
    reply
}

/// `fail_next` takes any error name; the few distinct ones a test uses live for the run.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn authenticate(spec: &spec::MethodSpec, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(value) = headers.get("authorization") else {
        return Err(refuse("not_authed"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| refuse("invalid_auth"))?;
    let (wanted, other) = if spec.app_token {
        (APP_TOKEN, BOT_TOKEN)
    } else {
        (BOT_TOKEN, APP_TOKEN)
    };
    if token == wanted {
        Ok(())
    } else if token == other {
        Err(refuse("not_allowed_token_type"))
    } else {
        Err(refuse("invalid_auth"))
    }
}

fn parse_args(
    spec: &spec::MethodSpec,
    verb: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    warnings: &mut Vec<String>,
) -> Result<Args, Refusal> {
    let mut map = Map::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        map.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    if *verb != Method::GET && *verb != Method::POST {
        return Err(refuse_with(
            "invalid_arguments",
            format!("[ERROR] the Web API takes GET or POST, not {verb}"),
        ));
    }
    if *verb == Method::GET || body.is_empty() {
        return Ok(Args { map });
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    match mime {
        "application/x-www-form-urlencoded" => {
            for (k, v) in form_urlencoded::parse(body) {
                map.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
        "application/json" => {
            if !spec.json {
                return Err(refuse_with(
                    "invalid_arguments",
                    format!(
                        "[ERROR] {} does not read a JSON body; send its arguments as a form or a query string",
                        spec.name
                    ),
                ));
            }
            if !ct.contains("charset") {
                warnings.push("missing_charset".into());
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(o)) => map.extend(o),
                _ => return Err(refuse("invalid_json")),
            }
        }
        _ => {
            return Err(refuse_with(
                "invalid_form_data",
                format!("[ERROR] unsupported content type '{mime}'"),
            ))
        }
    }
    Ok(Args { map })
}

/// text, blocks and attachments of a message, checked; `None` fields were not given.
struct Content {
    text: Option<String>,
    blocks: Option<Value>,
    attachments: Option<Value>,
    metadata: Option<Value>,
}

fn content(args: &Args, warnings: &mut Vec<String>) -> Result<Content, Refusal> {
    let text = args.str("text")?;
    let blocks = args.json("blocks", "invalid_blocks_format")?;
    let attachments = args.json("attachments", "invalid_attachments")?;
    if let Some(t) = &text {
        if t.chars().count() > MAX_TEXT_CHARS {
            return Err(refuse("msg_too_long"));
        }
    }
    if let Some(b) = &blocks {
        if !b.is_array() {
            return Err(refuse_with(
                "invalid_blocks_format",
                "[ERROR] blocks must be an array",
            ));
        }
        blocks::check(b).map_err(|m| Refusal::Error("invalid_blocks", m))?;
    }
    if let Some(a) = &attachments {
        let Some(list) = a.as_array() else {
            return Err(refuse_with(
                "invalid_attachments",
                "[ERROR] attachments must be an array",
            ));
        };
        // Slack takes at most 100 attachments; blocks inside one obey Block Kit's limits, and
        // `color` is a hex colour or one of Slack's three names.
        if list.len() > 100 {
            return Err(refuse_with(
                "too_many_attachments",
                "[ERROR] no more than 100 attachments allowed",
            ));
        }
        for (i, att) in list.iter().enumerate() {
            if let Some(b) = att.get("blocks") {
                blocks::check(b).map_err(|m| {
                    Refusal::Error(
                        "invalid_attachments",
                        m.into_iter()
                            .map(|e| format!("{e} [attachment {i}]"))
                            .collect(),
                    )
                })?;
            }
            if let Some(c) = att.get("color") {
                let ok = c.as_str().is_some_and(|c| {
                    matches!(c, "good" | "warning" | "danger")
                        || (c.len() == 7
                            && c.starts_with('#')
                            && c[1..].bytes().all(|b| b.is_ascii_hexdigit()))
                });
                if !ok {
                    return Err(refuse_with(
                        "invalid_attachments",
                        format!("[ERROR] attachment {i}: color must be #RRGGBB, good, warning or danger"),
                    ));
                }
            }
        }
    }
    let has_text = text.as_deref().is_some_and(|t| !t.is_empty());
    let has_blocks = blocks
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_text && has_blocks {
        // Slack takes it, but the notification and screen readers get nothing.
        warnings.push("missing_text_or_fallback_or_attachments".into());
    }
    let metadata = args.json("metadata", "invalid_metadata_format")?;
    if let Some(m) = &metadata {
        let ok = m.as_object().is_some_and(|o| {
            o.get("event_type")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty())
                && o.get("event_payload").is_some_and(Value::is_object)
                && o.keys().all(|k| k == "event_type" || k == "event_payload")
        });
        if !ok {
            return Err(refuse_with(
                "invalid_metadata_format",
                "[ERROR] metadata must be {\"event_type\": string, \"event_payload\": object}",
            ));
        }
    }
    Ok(Content {
        text,
        blocks,
        attachments,
        metadata,
    })
}

fn required(args: &Args, name: &str) -> Result<String, Refusal> {
    match args.str(name)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(refuse_with(
            "invalid_arguments",
            format!("[ERROR] missing required field: {name}"),
        )),
    }
}

fn ts_micros(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 6
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac: u64 = format!("{frac:0<6}").parse().ok()?;
    Some(secs.parse::<u64>().ok()?.checked_mul(1_000_000)? + frac)
}

fn raw_message(m: &Message) -> Value {
    let mut raw = json!({
        "type": "message", "user": m.user, "text": m.text, "ts": m.ts, "team": TEAM_ID,
    });
    if m.user == BOT_USER_ID {
        raw["bot_id"] = json!(BOT_ID);
        raw["app_id"] = json!(APP_ID);
    }
    if !m.blocks.is_empty() {
        raw["blocks"] = json!(m.blocks);
    }
    if !m.attachments.is_empty() {
        raw["attachments"] = json!(m.attachments);
    }
    if let Some(t) = &m.thread_ts {
        raw["thread_ts"] = json!(t);
    }
    if m.edits > 0 {
        raw["edited"] = json!({"user": m.user, "ts": m.ts});
    }
    if let Some(md) = &m.metadata {
        raw["metadata"] = md.clone();
    }
    raw
}

fn post_message(st: &mut State, args: &Args, warnings: &mut Vec<String>) -> Outcome {
    let channel = required(args, "channel")?;
    let c = content(args, warnings)?;
    if c.text.as_deref().unwrap_or("").is_empty()
        && c.blocks
            .as_ref()
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && c.attachments
            .as_ref()
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        return Err(refuse("no_text"));
    }
    if !st.channel_exists(&channel) {
        return Err(refuse("channel_not_found"));
    }
    let thread_ts = match args.str("thread_ts")? {
        // A well-formed thread_ts of no message is accepted by Slack: the reply lands in a
        // thread nobody can see (python-slack-sdk#840). The fake does the same: it is kept as
        // a reply to that ts, absent from messages_in and from every existing thread.
        Some(t) if ts_micros(&t).is_some() => Some(t),
        Some(t) if t.is_empty() => None,
        Some(t) => {
            return Err(refuse_with(
                "invalid_thread_ts",
                format!("[ERROR] {t} is not a valid thread_ts"),
            ))
        }
        None => None,
    };
    st.take(format!("chat.postMessage:{channel}"), 3.0, 1.0)
        .map_err(Refusal::Limited)?;
    let ts = st.next_ts();
    let mut m = Message {
        ts: ts.clone(),
        channel: channel.clone(),
        text: c.text.unwrap_or_default(),
        blocks: c
            .blocks
            .as_ref()
            .map(|b| blocks::with_block_ids(b, &format!("b{}", &ts[ts.len() - 4..])))
            .unwrap_or_default(),
        attachments: c
            .attachments
            .as_ref()
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        thread_ts,
        edits: 0,
        client_msg_id: None,
        user: BOT_USER_ID.to_string(),
        metadata: c.metadata,
        raw: Value::Null,
    };
    m.raw = raw_message(&m);
    let mut shown = m.raw.clone();
    if let Some(a) = c.attachments {
        shown["attachments"] = a;
    }
    st.messages.push(m);
    Ok(json!({"channel": channel, "ts": ts, "message": shown}))
}

fn update_message(st: &mut State, args: &Args, warnings: &mut Vec<String>) -> Outcome {
    let channel = required(args, "channel")?;
    let ts = required(args, "ts")?;
    let c = content(args, warnings)?;
    if c.text.is_none() && c.blocks.is_none() && c.attachments.is_none() {
        return Err(refuse("no_text"));
    }
    if !st.channel_exists(&channel) {
        return Err(refuse("channel_not_found"));
    }
    let Some(i) = st
        .messages
        .iter()
        .position(|m| m.channel == channel && m.ts == ts)
    else {
        return Err(refuse("message_not_found"));
    };
    if st.messages[i].user != BOT_USER_ID {
        return Err(refuse("cant_update_message"));
    }
    st.take("chat.update".into(), 20.0, 50.0 / 60.0)
        .map_err(Refusal::Limited)?;
    let m = &mut st.messages[i];
    // Slack keeps what the update leaves out (an empty blocks array removes the blocks).
    if let Some(t) = c.text {
        m.text = t;
    }
    if let Some(a) = c.attachments.as_ref().and_then(Value::as_array) {
        m.attachments = a.clone();
    }
    if let Some(b) = &c.blocks {
        m.blocks = blocks::with_block_ids(b, &format!("u{}", m.edits + 1));
    }
    if c.metadata.is_some() {
        m.metadata = c.metadata;
    }
    m.edits += 1;
    m.raw = raw_message(m);
    let mut answer = json!({"channel": channel, "ts": ts, "text": m.text, "message": m.raw});
    if let Some(t) = &m.thread_ts {
        answer["thread_ts"] = json!(t);
    }
    Ok(answer)
}

fn post_ephemeral(st: &mut State, args: &Args, warnings: &mut Vec<String>) -> Outcome {
    let channel = required(args, "channel")?;
    let user = required(args, "user")?;
    let c = content(args, warnings)?;
    if c.text.as_deref().unwrap_or("").is_empty()
        && c.blocks
            .as_ref()
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && c.attachments
            .as_ref()
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        return Err(refuse("no_text"));
    }
    if !st.channel_exists(&channel) {
        return Err(refuse("channel_not_found"));
    }
    if !(user.starts_with('U') || user.starts_with('W')) {
        return Err(refuse("user_not_found"));
    }
    st.take("chat.postEphemeral".into(), 100.0, 100.0 / 60.0)
        .map_err(Refusal::Limited)?;
    let ts = st.next_ts();
    let mut m = Message {
        ts: ts.clone(),
        channel,
        text: c.text.unwrap_or_default(),
        blocks: c
            .blocks
            .as_ref()
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        attachments: c
            .attachments
            .as_ref()
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        thread_ts: args.str("thread_ts")?,
        edits: 0,
        client_msg_id: None,
        user: BOT_USER_ID.to_string(),
        metadata: None,
        raw: Value::Null,
    };
    m.raw = raw_message(&m);
    st.ephemerals.push((user, m));
    Ok(json!({ "message_ts": ts }))
}

fn open_conversation(st: &mut State, args: &Args) -> Outcome {
    let users: Vec<String> = match args.map.get("users") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|u| u.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| refuse_with("invalid_arguments", "[ERROR] users must be user ids"))?,
        Some(_) => {
            return Err(refuse_with(
                "invalid_arguments",
                "[ERROR] users must be a comma-separated list of user ids",
            ))
        }
    };
    let channel = args.str("channel")?;
    if users.is_empty() {
        return match channel {
            Some(c) if st.opened.contains(&c) => {
                Ok(json!({"channel": {"id": c}, "no_op": true, "already_open": true}))
            }
            Some(_) => Err(refuse("channel_not_found")),
            None => Err(refuse("users_list_not_supplied")),
        };
    }
    if channel.is_some() {
        return Err(refuse_with(
            "invalid_arguments",
            "[ERROR] give channel or users, not both",
        ));
    }
    if users.len() > 8 {
        return Err(refuse("too_many_users"));
    }
    if users
        .iter()
        .any(|u| !(u.starts_with('U') || u.starts_with('W')) || u.len() < 3)
    {
        return Err(refuse("user_not_found"));
    }
    st.take("conversations.open".into(), 50.0, 50.0 / 60.0)
        .map_err(Refusal::Limited)?;
    let (id, already) = if users.len() == 1 {
        match st.dms.get(&users[0]) {
            Some(id) => (id.clone(), true),
            None => {
                let id = format!("D{:08}", st.dms.len() + 1);
                st.dms.insert(users[0].clone(), id.clone());
                (id, false)
            }
        }
    } else {
        let mut key = users.clone();
        key.sort();
        let key = key.join(",");
        match st.mpims.get(&key) {
            Some(id) => (id.clone(), true),
            None => {
                let id = format!("G{:08}", st.mpims.len() + 1);
                st.mpims.insert(key, id.clone());
                (id, false)
            }
        }
    };
    st.opened.insert(id.clone());
    let mut channel = json!({ "id": id });
    if args.bool("return_im")? {
        channel["is_im"] = json!(users.len() == 1);
        channel["user"] = json!(users[0]);
    }
    let mut answer = json!({ "channel": channel });
    if already {
        answer["no_op"] = json!(true);
        answer["already_open"] = json!(true);
    }
    Ok(answer)
}

/// limit, oldest, latest, inclusive and cursor of a listing.
struct Page {
    limit: usize,
    oldest: u64,
    latest: u64,
    inclusive: bool,
    offset: usize,
}

fn page(args: &Args, default_limit: usize) -> Result<Page, Refusal> {
    let limit = match args.str("limit")? {
        None => default_limit,
        Some(l) => match l.parse::<usize>() {
            Ok(0) => default_limit,
            Ok(n) if n <= 1000 => n,
            _ => return Err(refuse("invalid_limit")),
        },
    };
    let bound = |name: &str, default: u64| -> Result<u64, Refusal> {
        match args.str(name)? {
            None => Ok(default),
            Some(s) if s.is_empty() => Ok(default),
            Some(s) => ts_micros(&s).ok_or_else(|| {
                refuse_with(
                    "invalid_arguments",
                    format!("[ERROR] {name} must be a timestamp like 1700000000.000100"),
                )
            }),
        }
    };
    let offset = match args.str("cursor")? {
        None => 0,
        Some(c) if c.is_empty() => 0,
        Some(c) => c
            .strip_prefix("bmV4dF9vZmZzZXQ6")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| refuse("invalid_cursor"))?,
    };
    Ok(Page {
        limit,
        oldest: bound("oldest", 0)?,
        latest: bound("latest", u64::MAX)?,
        inclusive: args.bool("inclusive")?,
        offset,
    })
}

fn in_page(p: &Page, ts: &str) -> bool {
    let Some(t) = ts_micros(ts) else { return false };
    if p.inclusive {
        t >= p.oldest && t <= p.latest
    } else {
        t > p.oldest && t < p.latest
    }
}

/// A listed message as Slack shows it: metadata only when asked, thread facts on parents.
fn listed(st: &State, m: &Message, metadata: bool) -> Value {
    let mut v = m.raw.clone();
    if !metadata {
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
        }
    }
    if m.thread_ts.is_none() {
        let replies: Vec<&Message> = st
            .messages
            .iter()
            .filter(|r| r.channel == m.channel && r.thread_ts.as_deref() == Some(&m.ts))
            .collect();
        if let Some(last) = replies.last() {
            v["thread_ts"] = json!(m.ts);
            v["reply_count"] = json!(replies.len());
            v["latest_reply"] = json!(last.ts);
        }
    }
    v
}

fn listing(st: &State, all: Vec<&Message>, p: &Page, metadata: bool) -> Value {
    let total = all.len();
    let shown: Vec<Value> = all
        .into_iter()
        .skip(p.offset)
        .take(p.limit)
        .map(|m| listed(st, m, metadata))
        .collect();
    let next = p.offset + shown.len();
    let has_more = next < total;
    json!({
        "messages": shown,
        "has_more": has_more,
        "response_metadata": {
            "next_cursor": if has_more { format!("bmV4dF9vZmZzZXQ6{next}") } else { String::new() }
        },
    })
}

fn history(st: &mut State, args: &Args) -> Outcome {
    let channel = required(args, "channel")?;
    let p = page(args, 100)?;
    let metadata = args.bool("include_all_metadata")?;
    if !st.channel_exists(&channel) {
        return Err(refuse("channel_not_found"));
    }
    st.take("conversations.history".into(), 50.0, 50.0 / 60.0)
        .map_err(Refusal::Limited)?;
    let all: Vec<&Message> = st
        .messages
        .iter()
        .rev()
        .filter(|m| m.channel == channel && m.thread_ts.is_none() && in_page(&p, &m.ts))
        .collect();
    Ok(listing(st, all, &p, metadata))
}

fn replies(st: &mut State, args: &Args) -> Outcome {
    let channel = required(args, "channel")?;
    let ts = required(args, "ts")?;
    let p = page(args, 1000)?;
    let metadata = args.bool("include_all_metadata")?;
    if !st.channel_exists(&channel) {
        return Err(refuse("channel_not_found"));
    }
    let Some(found) = st
        .messages
        .iter()
        .find(|m| m.channel == channel && m.ts == ts)
    else {
        return Err(refuse("thread_not_found"));
    };
    let parent = found.thread_ts.clone().unwrap_or(found.ts.clone());
    st.take("conversations.replies".into(), 50.0, 50.0 / 60.0)
        .map_err(Refusal::Limited)?;
    let all: Vec<&Message> = st
        .messages
        .iter()
        .filter(|m| {
            m.channel == channel
                && (m.ts == parent || m.thread_ts.as_deref() == Some(&parent))
                && in_page(&p, &m.ts)
        })
        .collect();
    Ok(listing(st, all, &p, metadata))
}

fn open_connection(st: &mut State) -> Outcome {
    // Tier 1: the fake allows 10 a minute.
    st.take("apps.connections.open".into(), 10.0, 10.0 / 60.0)
        .map_err(Refusal::Limited)?;
    let id = st.next_id("S");
    st.socket_urls.insert(id.clone(), false);
    st.connections_opened += 1;
    Ok(json!({ "url": format!("ws://127.0.0.1:{}/socket/{id}", st.port) }))
}

// ---------------------------------------------------------------------------------------
// response_url

async fn response_url(
    AxState(shared): AxState<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let at = Instant::now();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (status, body, delay) = {
        let mut st = shared.lock();
        let (status, error, messages) = if st.fail_responses > 0 && !st.down {
            st.fail_responses -= 1;
            (503, Some("service_unavailable"), Vec::new())
        } else {
            check_response(&mut st, &id, content_type.as_deref(), &parsed)
        };
        let body = match error {
            None => json!({"ok": true}),
            Some(e) => {
                let mut b = json!({"ok": false, "error": e});
                if !messages.is_empty() {
                    b["response_metadata"] = json!({ "messages": messages });
                }
                b
            }
        };
        st.requests.push(Recorded {
            method: "response_url".into(),
            status,
            ok: status == 200,
            error: error.map(str::to_string),
            body: parsed.unwrap_or(Value::Null),
            answer: body.clone(),
            content_type,
            at,
        });
        (status, body, st.response_delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Reply {
        status,
        body,
        retry_after: None,
    }
}

fn check_response(
    st: &mut State,
    id: &str,
    content_type: Option<&str>,
    parsed: &Option<Value>,
) -> (u16, Option<&'static str>, Vec<String>) {
    if st.down {
        return (503, Some("service_unavailable"), Vec::new());
    }
    let Some(url) = st.responses.get(id) else {
        return (404, Some("no_service"), Vec::new());
    };
    if url.created.elapsed() > RESPONSE_URL_LIFETIME {
        return (404, Some("expired_url"), Vec::new());
    }
    if url.bodies.len() >= RESPONSE_URL_USES {
        return (404, Some("used_url"), Vec::new());
    }
    if !content_type.is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json")) {
        return (
            400,
            Some("invalid_payload"),
            vec!["[ERROR] a response_url takes application/json".into()],
        );
    }
    let Some(Value::Object(o)) = parsed else {
        return (400, Some("invalid_payload"), Vec::new());
    };
    const KEYS: &[&str] = &[
        "text",
        "blocks",
        "attachments",
        "response_type",
        "replace_original",
        "delete_original",
        "thread_ts",
        "mrkdwn",
        "unfurl_links",
        "unfurl_media",
        "metadata",
    ];
    let unknown: Vec<String> = o
        .keys()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .map(|k| format!("[ERROR] unknown field '{k}'"))
        .collect();
    if !unknown.is_empty() {
        return (400, Some("invalid_payload"), unknown);
    }
    if let Some(t) = o.get("response_type") {
        if !matches!(t.as_str(), Some("in_channel") | Some("ephemeral")) {
            return (
                400,
                Some("invalid_payload"),
                vec!["[ERROR] response_type must be in_channel or ephemeral".into()],
            );
        }
    }
    for flag in ["replace_original", "delete_original"] {
        if o.get(flag).is_some_and(|v| !v.is_boolean()) {
            return (
                400,
                Some("invalid_payload"),
                vec![format!("[ERROR] {flag} must be a boolean")],
            );
        }
    }
    let delete = o.get("delete_original") == Some(&Value::Bool(true));
    let text = o.get("text").and_then(Value::as_str).unwrap_or("");
    if text.chars().count() > MAX_TEXT_CHARS {
        return (400, Some("msg_too_long"), Vec::new());
    }
    if let Some(b) = o.get("blocks") {
        if let Err(m) = blocks::check(b) {
            return (400, Some("invalid_blocks"), m);
        }
    }
    let has_blocks = o
        .get("blocks")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !delete && text.is_empty() && !has_blocks && o.get("attachments").is_none() {
        return (400, Some("no_text"), Vec::new());
    }
    let body = parsed.clone().unwrap();
    st.responses.get_mut(id).unwrap().bodies.push(body);
    (200, None, Vec::new())
}

// ---------------------------------------------------------------------------------------
// Socket Mode

async fn socket(
    AxState(shared): AxState<Arc<Shared>>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    {
        let mut st = shared.lock();
        match st.socket_urls.get_mut(&id) {
            Some(used) if !*used => *used = true,
            // Each URL works once; a reconnect must ask apps.connections.open again.
            _ => {
                return (
                    StatusCode::FORBIDDEN,
                    "this Socket Mode URL was used or never issued",
                )
                    .into_response()
            }
        }
    }
    ws.on_upgrade(move |socket| connection(shared, socket))
}

async fn connection(shared: Arc<Shared>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (id, n) = {
        let mut st = shared.lock();
        st.next_connection += 1;
        let id = st.next_connection;
        st.connections.insert(id, tx);
        (id, st.connections.len())
    };
    let hello = json!({
        "type": "hello",
        "num_connections": n,
        "debug_info": {"host": "fake-slack", "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID},
    });
    if socket
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_ok()
    {
        loop {
            tokio::select! {
                m = socket.recv() => match m {
                    Some(Ok(WsMessage::Text(t))) => on_client_text(&shared, t.as_str()),
                    Some(Ok(WsMessage::Binary(_))) => shared.lock().bad_acks.push("a binary frame".into()),
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                o = rx.recv() => match o {
                    Some(Out::Text(s)) => {
                        if socket.send(WsMessage::Text(s.into())).await.is_err() {
                            break;
                        }
                    }
                    Some(Out::Close) => {
                        let _ = socket.send(WsMessage::Close(None)).await;
                        break;
                    }
                    // Dropping the socket ends the TCP connection without a close frame.
                    Some(Out::Abort) | None => break,
                    // The socket is held, never read or written, until told to go.
                    Some(Out::Freeze) => {
                        while let Some(o) = rx.recv().await {
                            if matches!(o, Out::Abort | Out::Close) {
                                break;
                            }
                        }
                        break;
                    }
                },
            }
        }
    }
    let mut st = shared.lock();
    st.connections.remove(&id);
    st.frozen.remove(&id);
}

fn on_client_text(shared: &Shared, text: &str) {
    let mut st = shared.lock();
    let short: String = text.chars().take(300).collect();
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text) else {
        st.bad_acks.push(format!("not a JSON object: {short}"));
        return;
    };
    let Some(id) = o.get("envelope_id").and_then(Value::as_str) else {
        st.bad_acks.push(format!("no envelope_id: {short}"));
        return;
    };
    if let Some(k) = o.keys().find(|k| *k != "envelope_id" && *k != "payload") {
        st.bad_acks
            .push(format!("unknown key '{k}' in ack: {short}"));
    }
    let payload = o.get("payload").cloned();
    let Some(env) = st.envelopes.get(id) else {
        st.bad_acks.push(format!("ack for unknown envelope {id}"));
        return;
    };
    let mut problems = Vec::new();
    if let Some(p) = &payload {
        if !env.accepts {
            problems.push(format!(
                "ack of {id} carries a payload the envelope did not accept"
            ));
        }
        if let Some(b) = p.get("blocks") {
            if let Err(m) = blocks::check(b) {
                problems.push(format!("ack of {id}: invalid blocks: {}", m.join("; ")));
            }
        }
    }
    let after = env.last_delivery.map(|d| d.elapsed()).unwrap_or_default();
    let env = st.envelopes.get_mut(id).unwrap();
    let count = env.ack.as_ref().map_or(0, |a| a.count) + 1;
    let ack = match env.ack.take() {
        None => Ack {
            payload,
            after,
            count,
        },
        Some(first) => Ack { count, ..first },
    };
    env.ack = Some(ack.clone());
    let id = id.to_string();
    st.acks.push((id, ack));
    st.bad_acks.extend(problems);
}

// ---------------------------------------------------------------------------------------
// What Slack sends to the app

/// `v0=` + hex(HMAC-SHA256(secret, `v0:{timestamp}:{body}`)): Slack's request signature.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    let mut out = String::from("v0=");
    for b in mac.finalize().into_bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn slash_command_fields<'a>(
    command: &'a str,
    text: &'a str,
    user_id: &'a str,
    user_name: &'a str,
    channel_id: &'a str,
    response_url: &'a str,
) -> Vec<(&'static str, &'a str)> {
    vec![
        ("token", "fakeverificationtoken0"),
        ("team_id", TEAM_ID),
        ("team_domain", "fake"),
        ("channel_id", channel_id),
        ("channel_name", "ops"),
        ("user_id", user_id),
        ("user_name", user_name),
        ("command", command),
        ("text", text),
        ("api_app_id", APP_ID),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", "1337.42.fa4e7c0ffee"),
    ]
}

/// A slash command's form body as Slack POSTs it to the app (HTTP mode).
pub fn slash_command_form(
    command: &str,
    text: &str,
    user_id: &str,
    user_name: &str,
    channel_id: &str,
    response_url: &str,
) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in slash_command_fields(command, text, user_id, user_name, channel_id, response_url)
    {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The same slash command as a Socket Mode `slash_commands` envelope's payload.
pub fn slash_command_payload(
    command: &str,
    text: &str,
    user_id: &str,
    user_name: &str,
    channel_id: &str,
    response_url: &str,
) -> Value {
    let map: Map<String, Value> =
        slash_command_fields(command, text, user_id, user_name, channel_id, response_url)
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
    Value::Object(map)
}

/// A `block_actions` payload for a button click, as Slack sends it (over HTTP inside
/// [`interaction_form`], over Socket Mode as an `interactive` envelope's payload).
pub fn block_actions_payload(
    action_id: &str,
    value: &str,
    user_id: &str,
    user_name: &str,
    channel_id: &str,
    message_ts: &str,
    response_url: &str,
) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "fakeverificationtoken0",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": false},
        "trigger_id": "1337.42.fa4e7c0ffee",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": channel_id, "name": "ops"},
        "message": {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": message_ts, "text": ""},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{
            "type": "button",
            "action_id": action_id,
            "block_id": "actions",
            "text": {"type": "plain_text", "text": action_id, "emoji": true},
            "value": value,
            "action_ts": format!("{}.000100", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()),
        }],
    })
}

/// `payload=<url-encoded JSON>`: an interaction's form body.
pub fn interaction_form(payload: &Value) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

/// POSTs `body` to `url` signed as Slack signs it (`X-Slack-Signature`,
/// `X-Slack-Request-Timestamp`); the answer's status and body.
pub async fn post_signed(
    url: &str,
    content_type: &str,
    body: String,
    secret: &str,
    timestamp: i64,
) -> (u16, String) {
    let signature = sign(secret, timestamp, body.as_bytes());
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}
