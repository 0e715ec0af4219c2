//! A fake Discord HTTP API (v10) for the integration tests.
//!
//! Discord cannot be reached from a test machine, so this stands in for it. It is strict: it
//! accepts only what the real API accepts, and refuses with Discord's own status codes and
//! error shapes.
//!
//! - Routes: `POST /api/v10/channels/{channel_id}/messages` and
//!   `PATCH /api/v10/channels/{channel_id}/messages/{message_id}`. Anything else is
//!   404 `{"message": "404: Not Found", "code": 0}`.
//! - `User-Agent: DiscordBot ($url, $versionNumber)` (Discord documents it as required) and
//!   `Authorization: Bot <token>`.
//! - Bodies must be `application/json` and are validated against the request schemas of
//!   Discord's official OpenAPI description (`tests/fixtures/discord-openapi.json`:
//!   `MessageCreateRequest`, `MessageEditRequestPartial`), then against the documented limits
//!   that the description does not carry (2000 characters of content, 6000 characters of embed
//!   text, 5 action rows, button rules, unique custom ids, ...).
//! - Rate limits with Discord's headers: per-route buckets keyed by (route, channel) and a
//!   global limit; over a limit the answer is a 429 that is not applied.
//! - Failure modes switched at run time: [`FakeDiscord::fail_with`], [`FakeDiscord::set_delay`],
//!   [`FakeDiscord::go_down`] / [`FakeDiscord::come_back`].
//!
//! Where the fake is stricter than Discord, it says so in the error: Discord silently drops
//! unknown fields, the fake refuses them ([`FakeDiscord::set_reject_unknown_fields`] turns this
//! off), and it supports only JSON bodies, not multipart uploads.
//!
//! The fake runs on its own thread and Tokio runtime, so it keeps serving while a test blocks,
//! and across restarts of the process under test. Its state lives as long as the last clone of
//! the [`FakeDiscord`] handle.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The id of the bot user the fake's messages are authored by.
pub const BOT_USER_ID: &str = "1180000000000000001";
pub const BOT_USERNAME: &str = "runbot";

/// The OpenAPI schema of the JSON body of `POST /channels/{channel.id}/messages`.
pub const CREATE_SCHEMA: &str = "MessageCreateRequest";
/// The OpenAPI schema of the JSON body of `PATCH /channels/{channel.id}/messages/{message.id}`.
pub const EDIT_SCHEMA: &str = "MessageEditRequestPartial";

/// Documented limits (https://discord.com/developers/docs/resources/message).
pub const MAX_CONTENT_CHARS: usize = 2000;
pub const MAX_EMBED_TOTAL_CHARS: usize = 6000;
pub const MAX_ACTION_ROWS: usize = 5;
pub const MAX_COMPONENTS_V2: usize = 40;
/// `IS_COMPONENTS_V2` message flag.
pub const FLAG_COMPONENTS_V2: u64 = 1 << 15;
/// How long `enforce_nonce` remembers a nonce ("the past few minutes" in Discord's docs).
pub const NONCE_WINDOW: Duration = Duration::from_secs(120);

const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// The routes the fake serves; each has its own rate-limit bucket per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    CreateMessage,
    EditMessage,
}

impl Route {
    /// Discord's `X-RateLimit-Bucket` is an opaque hash per route; the channel (the "major
    /// parameter") is not part of it, so two channels share the hash but not the bucket.
    pub fn bucket_hash(self) -> &'static str {
        match self {
            Route::CreateMessage => "80c17d2f203122d936070c88c8d10f33",
            Route::EditMessage => "b6cd0d7e7a5e4f35a1d2c3f4e5a6b7c8",
        }
    }
}

/// A message created through the fake, in its current state.
#[derive(Clone, Debug)]
pub struct FakeMessage {
    pub id: String,
    pub channel_id: String,
    /// The Discord Message object as the fake last answered it.
    pub body: Value,
    /// How many edits were applied.
    pub edits: usize,
}

impl FakeMessage {
    pub fn content(&self) -> &str {
        self.body["content"].as_str().unwrap_or("")
    }

    /// Every `custom_id` of the message's components, depth first.
    pub fn custom_ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_custom_ids(&self.body["components"], &mut out);
        out
    }
}

fn collect_custom_ids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect_custom_ids(i, out)),
        Value::Object(o) => {
            if let Some(id) = o.get("custom_id").and_then(Value::as_str) {
                out.push(id.to_string());
            }
            for key in ["components", "accessory"] {
                if let Some(c) = o.get(key) {
                    collect_custom_ids(c, out);
                }
            }
        }
        _ => {}
    }
}

/// One request the fake received, and what it answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Request headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The request body when it was JSON.
    pub body: Option<Value>,
    /// The raw request body (lossy UTF-8).
    pub raw_body: String,
    pub status: u16,
    /// The answer's body when it was JSON.
    pub answer: Option<Value>,
    pub at: Instant,
    pub time: SystemTime,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A window of a fixed-window rate limit: it starts at the first request after the previous
/// one ended.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u32,
}

impl Window {
    fn current(slot: &mut Option<Window>, now: Instant, per: Duration) -> &mut Window {
        match slot {
            Some(w) if now.duration_since(w.start) < per => {}
            _ => {
                *slot = Some(Window {
                    start: now,
                    count: 0,
                })
            }
        }
        slot.as_mut().unwrap()
    }
}

struct State {
    channels: HashSet<u64>,
    messages: Vec<FakeMessage>,
    requests: Vec<Recorded>,
    route_limits: HashMap<Route, (u32, Duration)>,
    global_limit: (u32, Duration),
    buckets: HashMap<(Route, String), Option<Window>>,
    global: Option<Window>,
    count_429: usize,
    fail_with: Option<u16>,
    delay: Duration,
    reject_unknown_fields: bool,
    require_user_agent: bool,
    last_snowflake: u64,
    nonces: HashMap<String, (usize, Instant)>,
}

impl State {
    fn new(channels: &[u64]) -> State {
        State {
            channels: channels.iter().copied().collect(),
            messages: Vec::new(),
            requests: Vec::new(),
            route_limits: HashMap::from([
                (Route::CreateMessage, (5, Duration::from_secs(5))),
                (Route::EditMessage, (5, Duration::from_secs(5))),
            ]),
            global_limit: (50, Duration::from_secs(1)),
            buckets: HashMap::new(),
            global: None,
            count_429: 0,
            fail_with: None,
            delay: Duration::ZERO,
            reject_unknown_fields: true,
            require_user_agent: true,
            last_snowflake: 0,
            nonces: HashMap::new(),
        }
    }

    fn next_snowflake(&mut self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let candidate = (ms.saturating_sub(DISCORD_EPOCH_MS) << 22) | (1 << 17);
        let id = candidate.max(self.last_snowflake + 1);
        self.last_snowflake = id;
        id.to_string()
    }
}

struct Shared {
    token: String,
    state: Mutex<State>,
    open_connections: AtomicUsize,
    /// A second handle on every open connection's socket, to shut it down from outside.
    sockets: Mutex<HashMap<u64, std::net::TcpStream>>,
    next_connection: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    shared: Arc<Shared>,
    port: u16,
    rt: tokio::runtime::Handle,
    accept: Mutex<Option<JoinHandle<()>>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

/// The fake Discord API. Clones share the server and its state.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Inner>,
}

impl FakeDiscord {
    /// Starts the fake on 127.0.0.1 on a free port, accepting `Authorization: Bot {bot_token}`.
    /// It knows no channel yet: see [`FakeDiscord::add_channel`].
    pub async fn start(bot_token: &str) -> FakeDiscord {
        Self::start_with_channels(bot_token, &[]).await
    }

    pub async fn start_with_channels(bot_token: &str, channels: &[u64]) -> FakeDiscord {
        Self::start_on(bot_token, channels, 0).await
    }

    /// Like [`FakeDiscord::start_with_channels`], on 127.0.0.1:`port` (0: a free port).
    pub async fn start_on(bot_token: &str, channels: &[u64], port: u16) -> FakeDiscord {
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fake-discord".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("fake-discord-worker")
                    .enable_all()
                    .build()
                    .expect("the fake Discord's runtime starts");
                let _ = handle_tx.send(rt.handle().clone());
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                rt.shutdown_background();
            })
            .expect("spawn the fake Discord's thread");
        let rt: tokio::runtime::Handle = handle_rx.await.expect("the fake Discord's runtime");
        // Compile the schemas now, so that the first request is not slow.
        rt.spawn_blocking(|| {
            validator(CREATE_SCHEMA, true);
            validator(EDIT_SCHEMA, true);
        })
        .await
        .expect("the Discord OpenAPI schemas compile");
        let listener = rt
            .spawn(TcpListener::bind(("127.0.0.1", port)))
            .await
            .unwrap()
            .expect("bind the fake Discord");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            token: bot_token.to_string(),
            state: Mutex::new(State::new(channels)),
            open_connections: AtomicUsize::new(0),
            sockets: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let accept = rt.spawn(accept_loop(listener, shared.clone()));
        FakeDiscord {
            inner: Arc::new(Inner {
                shared,
                port,
                rt,
                accept: Mutex::new(Some(accept)),
                stop: Mutex::new(Some(stop_tx)),
            }),
        }
    }

    /// `http://127.0.0.1:PORT`: what `discord.api_base` is set to; requests go to
    /// `{base_url}/api/v10/...`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    /// `{base_url}/api/v10`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v10", self.base_url())
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    pub fn bot_token(&self) -> &str {
        &self.inner.shared.token
    }

    /// Makes a channel known; messages to other channels get 404 Unknown Channel.
    pub fn add_channel(&self, id: u64) {
        self.state().channels.insert(id);
    }

    /// Sets the per-route limit of both routes: `limit` requests per `per` in one channel.
    pub fn set_route_limit(&self, limit: u32, per: Duration) {
        let mut st = self.state();
        st.route_limits.insert(Route::CreateMessage, (limit, per));
        st.route_limits.insert(Route::EditMessage, (limit, per));
    }

    pub fn set_route_limit_for(&self, route: Route, limit: u32, per: Duration) {
        self.state().route_limits.insert(route, (limit, per));
    }

    /// Sets the global limit: `limit` requests per `per` over all routes (default 50 per second).
    pub fn set_global_limit(&self, limit: u32, per: Duration) {
        self.state().global_limit = (limit, per);
    }

    /// Forgets every rate-limit window, as if the limits had all reset.
    pub fn reset_rate_limits(&self) {
        let mut st = self.state();
        st.buckets.clear();
        st.global = None;
    }

    /// `Some(status)`: answer every request with that 5xx without applying it; `None`: normal.
    pub fn fail_with(&self, status: Option<u16>) {
        if let Some(s) = status {
            assert!(
                (500..600).contains(&s),
                "fail_with takes a 5xx status, not {s}"
            );
        }
        self.state().fail_with = status;
    }

    /// Waits that long before answering. The request itself is handled (and applied) when it
    /// arrives, as a slow Discord would: a client that times out may still have posted.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Discord silently drops unknown fields; the fake refuses them unless this is turned off.
    pub fn set_reject_unknown_fields(&self, reject: bool) {
        self.state().reject_unknown_fields = reject;
    }

    /// Whether requests must carry `User-Agent: DiscordBot (...)` (on by default).
    pub fn set_require_user_agent(&self, require: bool) {
        self.state().require_user_agent = require;
    }

    /// Closes the listener and every open connection: new connections are refused, and a
    /// client's keep-alive connections see the end of the stream.
    pub async fn go_down(&self) {
        let task = self.inner.accept.lock().unwrap().take();
        if let Some(task) = task {
            // Dropping the accept loop drops the listener and aborts every connection's task.
            task.abort();
            let _ = task.await;
        }
        // And the sockets are shut down at once, whenever the aborted tasks get dropped.
        let sockets: Vec<_> = {
            let mut open = self.inner.shared.sockets.lock().unwrap();
            open.drain().map(|(_, s)| s).collect()
        };
        for s in sockets {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.inner.shared.open_connections.load(Ordering::SeqCst) > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How many connections the fake holds open.
    pub fn open_connections(&self) -> usize {
        self.inner.shared.open_connections.load(Ordering::SeqCst)
    }

    /// Listens again on the same port, with the same state.
    pub async fn come_back(&self) {
        if self.is_up() {
            return;
        }
        let port = self.inner.port;
        let listener = self
            .inner
            .rt
            .spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => return l,
                        Err(e) if Instant::now() > deadline => {
                            panic!("the fake Discord cannot listen on {port} again: {e}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
            .await
            .expect("re-bind the fake Discord");
        let task = self
            .inner
            .rt
            .spawn(accept_loop(listener, self.inner.shared.clone()));
        *self.inner.accept.lock().unwrap() = Some(task);
    }

    pub fn is_up(&self) -> bool {
        self.inner.accept.lock().unwrap().is_some()
    }

    /// Every message created, in creation order, in its current state.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.state().messages.clone()
    }

    pub fn messages_in(&self, channel_id: u64) -> Vec<FakeMessage> {
        let channel = channel_id.to_string();
        self.state()
            .messages
            .iter()
            .filter(|m| m.channel_id == channel)
            .cloned()
            .collect()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The requests received from the `from`-th on (counting from 0), in order: follows the
    /// log without copying all of it each time.
    pub fn requests_since(&self, from: usize) -> Vec<Recorded> {
        let st = self.state();
        st.requests.get(from..).unwrap_or_default().to_vec()
    }

    /// How many 429 answers the fake sent.
    pub fn count_429(&self) -> usize {
        self.state().count_429
    }

    /// Waits until `f` finds what it wants in the messages and requests; panics after `timeout`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&[FakeMessage], &[Recorded]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let st = self.state();
                if let Some(t) = f(&st.messages, &st.requests) {
                    return t;
                }
                if Instant::now() > deadline {
                    let last: Vec<String> = st
                        .requests
                        .iter()
                        .rev()
                        .take(10)
                        .map(|r| {
                            format!(
                                "{} {} -> {} {}",
                                r.method,
                                r.path,
                                r.status,
                                r.answer.as_ref().map(Value::to_string).unwrap_or_default()
                            )
                        })
                        .collect();
                    panic!(
                        "timed out after {timeout:?} waiting for {what}; {} messages; last requests (newest first):\n{}",
                        st.messages.len(),
                        last.join("\n")
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` messages exist and returns them all.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<FakeMessage> {
        self.wait_for(timeout, &format!("{n} messages"), |m, _| {
            (m.len() >= n).then(|| m.to_vec())
        })
        .await
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.shared.lock()
    }
}

/// Counts a connection as open, and keeps a handle on its socket, for as long as its task lives.
struct ConnectionGuard(Arc<Shared>, u64);

impl ConnectionGuard {
    fn new(shared: Arc<Shared>, socket: std::net::TcpStream) -> Self {
        let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
        shared.open_connections.fetch_add(1, Ordering::SeqCst);
        shared.sockets.lock().unwrap().insert(id, socket);
        ConnectionGuard(shared, id)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut open) = self.0.sockets.lock() {
            open.remove(&self.1);
        }
    }
}

/// The stream for the connection's task and a second handle on the same socket.
fn split_handle(
    stream: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let second = std_stream.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std_stream)?, second))
}

/// Accepts connections until aborted; aborting it drops the listener and, with the `JoinSet`,
/// every connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok((stream, socket)) = split_handle(stream) else { continue };
                let guard = ConnectionGuard::new(shared.clone(), socket);
                let shared = shared.clone();
                connections.spawn(async move {
                    let _guard = guard;
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let time = SystemTime::now();
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let (answer, delay) = {
        let mut st = shared.lock();
        let answer = process(
            &shared.token,
            &mut st,
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            &bytes,
        );
        if answer.status == 429 {
            st.count_429 += 1;
        }
        let path = match parts.uri.query() {
            Some(q) => format!("{}?{q}", parts.uri.path()),
            None => parts.uri.path().to_string(),
        };
        st.requests.push(Recorded {
            method: parts.method.to_string(),
            path,
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_slice(&bytes).ok(),
            raw_body: String::from_utf8_lossy(&bytes).into_owned(),
            status: answer.status,
            answer: match &answer.body {
                AnswerBody::Json(v) => Some(v.clone()),
                AnswerBody::Html(_) => None,
            },
            at,
            time,
        });
        (answer, st.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    answer.into_response()
}

enum AnswerBody {
    Json(Value),
    Html(String),
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: AnswerBody,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: AnswerBody::Json(body),
        }
    }

    fn error(status: u16, message: &str, code: u64) -> Answer {
        Answer::json(status, json!({"message": message, "code": code}))
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let (content_type, bytes) = match self.body {
            AnswerBody::Json(v) => ("application/json", Bytes::from(v.to_string())),
            AnswerBody::Html(s) => ("text/html", Bytes::from(s)),
        };
        let mut r = Response::builder()
            .status(self.status)
            .header("content-type", content_type);
        for (k, v) in self.headers {
            r = r.header(k, v);
        }
        r.body(Full::new(bytes)).unwrap()
    }
}

/// What an outage looks like: Discord's own 500 is JSON, the gateway errors in front of it are
/// HTML pages.
fn outage(status: u16) -> Answer {
    if status == 500 {
        return Answer::error(500, "500: Internal Server Error", 0);
    }
    let reason = match status {
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Server Error",
    };
    Answer {
        status,
        headers: Vec::new(),
        body: AnswerBody::Html(format!(
            "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
        )),
    }
}

fn match_route(method: &Method, path: &str) -> Option<(Route, String, Option<String>)> {
    let rest = path.strip_prefix("/api/v10/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["channels", channel, "messages"]) if !channel.is_empty() => {
            Some((Route::CreateMessage, channel.to_string(), None))
        }
        (&Method::PATCH, ["channels", channel, "messages", message])
            if !channel.is_empty() && !message.is_empty() =>
        {
            Some((
                Route::EditMessage,
                channel.to_string(),
                Some(message.to_string()),
            ))
        }
        _ => None,
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn process(
    token: &str,
    st: &mut State,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    if let Some(status) = st.fail_with {
        return outage(status);
    }
    let Some((route, channel, message)) = match_route(method, path) else {
        return Answer::error(404, "404: Not Found", 0);
    };
    if st.require_user_agent
        && !header(headers, "user-agent").is_some_and(|ua| ua.starts_with("DiscordBot"))
    {
        return Answer::error(
            400,
            "fake Discord: Discord requires `User-Agent: DiscordBot ($url, $versionNumber)` \
             (https://discord.com/developers/docs/reference#user-agent)",
            0,
        );
    }
    if header(headers, "authorization") != Some(format!("Bot {token}").as_str()) {
        return Answer::error(401, "401: Unauthorized", 0);
    }
    let now = Instant::now();
    let rate_headers = match take_rate_limit(st, route, &channel, now) {
        Ok(h) => h,
        Err(answer) => return answer,
    };
    let mut answer = apply(st, route, &channel, message.as_deref(), headers, body);
    answer.headers.extend(rate_headers);
    answer
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).ceil() / 1000.0
}

fn bucket_headers(
    route: Route,
    limit: u32,
    remaining: u32,
    reset_after: Duration,
) -> Vec<(String, String)> {
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + seconds(reset_after);
    vec![
        ("x-ratelimit-limit".into(), limit.to_string()),
        ("x-ratelimit-remaining".into(), remaining.to_string()),
        ("x-ratelimit-reset".into(), format!("{reset:.3}")),
        (
            "x-ratelimit-reset-after".into(),
            format!("{:.3}", seconds(reset_after)),
        ),
        ("x-ratelimit-bucket".into(), route.bucket_hash().into()),
    ]
}

fn too_many(retry_after: Duration, global: bool, mut headers: Vec<(String, String)>) -> Answer {
    let retry = seconds(retry_after).max(0.001);
    headers.push((
        "retry-after".into(),
        (retry.ceil() as u64).max(1).to_string(),
    ));
    if global {
        headers.push(("x-ratelimit-global".into(), "true".into()));
        headers.push(("x-ratelimit-scope".into(), "global".into()));
    } else {
        headers.push(("x-ratelimit-scope".into(), "user".into()));
    }
    Answer {
        status: 429,
        headers,
        body: AnswerBody::Json(json!({
            "message": "You are being rate limited.",
            "retry_after": retry,
            "global": global,
        })),
    }
}

/// Counts the request against the global limit and its route's bucket, or answers 429.
fn take_rate_limit(
    st: &mut State,
    route: Route,
    channel: &str,
    now: Instant,
) -> Result<Vec<(String, String)>, Answer> {
    let (global_limit, global_per) = st.global_limit;
    let (limit, per) = st.route_limits[&route];
    let bucket = Window::current(
        st.buckets.entry((route, channel.to_string())).or_default(),
        now,
        per,
    );
    let reset_after = (bucket.start + per).saturating_duration_since(now);
    let bucket_full = bucket.count >= limit;
    let bucket_count = bucket.count;
    let global = Window::current(&mut st.global, now, global_per);
    if global.count >= global_limit {
        let retry = (global.start + global_per).saturating_duration_since(now);
        let peek = bucket_headers(
            route,
            limit,
            limit.saturating_sub(bucket_count),
            reset_after,
        );
        return Err(too_many(retry, true, peek));
    }
    if bucket_full {
        return Err(too_many(
            reset_after,
            false,
            bucket_headers(route, limit, 0, reset_after),
        ));
    }
    global.count += 1;
    let bucket = st
        .buckets
        .get_mut(&(route, channel.to_string()))
        .unwrap()
        .as_mut()
        .unwrap();
    bucket.count += 1;
    Ok(bucket_headers(
        route,
        limit,
        limit - bucket.count,
        reset_after,
    ))
}

fn parse_snowflake(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn apply(
    st: &mut State,
    route: Route,
    channel: &str,
    message: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let mut errors = FormErrors::default();
    let Some(channel_id) = parse_snowflake(channel) else {
        errors.add(
            &["channel_id"],
            "NUMBER_TYPE_COERCE",
            format!("Value \"{channel}\" is not snowflake."),
        );
        return errors.answer();
    };
    if !st.channels.contains(&channel_id) {
        return Answer::error(404, "Unknown Channel", 10003);
    }
    let index = match message {
        None => None,
        Some(m) => {
            if parse_snowflake(m).is_none() {
                errors.add(
                    &["message_id"],
                    "NUMBER_TYPE_COERCE",
                    format!("Value \"{m}\" is not snowflake."),
                );
                return errors.answer();
            }
            match st
                .messages
                .iter()
                .position(|x| x.id == m && x.channel_id == channel)
            {
                Some(i) => Some(i),
                None => return Answer::error(404, "Unknown Message", 10008),
            }
        }
    };

    let content_type = header(headers, "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if content_type != "application/json" {
        if content_type == "multipart/form-data"
            || content_type == "application/x-www-form-urlencoded"
        {
            return Answer::error(
                400,
                "fake Discord: only application/json bodies are implemented (no uploads)",
                0,
            );
        }
        // Without a JSON content type Discord reads no fields at all.
        return Answer::error(400, "Cannot send an empty message", 50006);
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Answer::error(400, "The request body contains invalid JSON.", 50109),
    };

    let schema = match route {
        Route::CreateMessage => CREATE_SCHEMA,
        Route::EditMessage => EDIT_SCHEMA,
    };
    validate_schema(
        schema,
        st.reject_unknown_fields,
        &request,
        &[],
        &mut errors,
        0,
    );
    if !errors.is_empty() {
        return errors.answer();
    }
    let req = request.as_object().expect("the schema requires an object");

    // The message as it will be once this request is applied.
    let view = match index {
        None => req.clone(),
        Some(i) => edited_view(&st.messages[i].body, req),
    };
    check_limits(&view, &mut errors);
    if !errors.is_empty() {
        return errors.answer();
    }
    if is_empty_message(&view) {
        return Answer::error(400, "Cannot send an empty message", 50006);
    }
    match index {
        None => create_message(st, channel, req),
        Some(i) => edit_message(st, i, req),
    }
}

fn edited_view(stored: &Value, req: &Map<String, Value>) -> Map<String, Value> {
    let mut view = stored.as_object().cloned().unwrap_or_default();
    for key in ["content", "embeds", "components", "flags", "attachments"] {
        match req.get(key) {
            None => {}
            Some(Value::Null) => {
                let cleared = match key {
                    "content" => json!(""),
                    "flags" => view.get("flags").cloned().unwrap_or(json!(0)),
                    _ => json!([]),
                };
                view.insert(key.into(), cleared);
            }
            Some(v) => {
                view.insert(key.into(), v.clone());
            }
        }
    }
    view
}

fn non_empty_array(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

fn is_empty_message(m: &Map<String, Value>) -> bool {
    let content = m
        .get("content")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.trim().is_empty());
    let poll = m.get("poll").is_some_and(|p| !p.is_null());
    !(content
        || poll
        || non_empty_array(m.get("embeds"))
        || non_empty_array(m.get("components"))
        || non_empty_array(m.get("sticker_ids"))
        || non_empty_array(m.get("attachments")))
}

fn now_timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

fn author() -> Value {
    json!({
        "id": BOT_USER_ID,
        "username": BOT_USERNAME,
        "avatar": null,
        "discriminator": "0",
        "public_flags": 0,
        "flags": 0,
        "bot": true,
        "banner": null,
        "accent_color": null,
        "global_name": null,
        "avatar_decoration_data": null,
        "banner_color": null,
    })
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Embeds as Discord answers them: no nulls, `type: "rich"`, `inline` on every field.
fn normalize_embeds(v: Option<&Value>) -> Value {
    let embeds = v.and_then(Value::as_array).cloned().unwrap_or_default();
    Value::Array(
        embeds
            .iter()
            .map(|e| {
                let mut e = strip_nulls(e);
                if let Some(o) = e.as_object_mut() {
                    o.entry("type").or_insert(json!("rich"));
                    if let Some(fields) = o.get_mut("fields").and_then(Value::as_array_mut) {
                        for f in fields {
                            if let Some(f) = f.as_object_mut() {
                                f.entry("inline").or_insert(json!(false));
                            }
                        }
                    }
                }
                e
            })
            .collect(),
    )
}

/// Components as Discord answers them: no nulls, each with a numeric `id`.
fn normalize_components(v: Option<&Value>) -> Value {
    fn number(v: &mut Value, next: &mut u64) {
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| number(i, next)),
            Value::Object(o) => {
                if o.contains_key("type") && !o.contains_key("id") {
                    o.insert("id".into(), json!(*next));
                }
                *next += 1;
                for key in ["components", "accessory"] {
                    if let Some(c) = o.get_mut(key) {
                        number(c, next);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = strip_nulls(v.unwrap_or(&json!([])));
    if !out.is_array() {
        out = json!([]);
    }
    let mut next = 1;
    number(&mut out, &mut next);
    out
}

fn create_message(st: &mut State, channel: &str, req: &Map<String, Value>) -> Answer {
    let nonce = req.get("nonce").filter(|n| !n.is_null()).cloned();
    let enforce = req.get("enforce_nonce").and_then(Value::as_bool) == Some(true);
    let now = Instant::now();
    let nonce_key = nonce.as_ref().map(|n| match n {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if let (true, Some(key)) = (enforce, nonce_key.as_ref()) {
        if let Some((i, at)) = st.nonces.get(key) {
            if now.duration_since(*at) < NONCE_WINDOW {
                return Answer::json(200, st.messages[*i].body.clone());
            }
        }
    }
    let id = st.next_snowflake();
    let mut body = json!({
        "type": 0,
        "channel_id": channel,
        "content": req.get("content").and_then(Value::as_str).unwrap_or(""),
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": normalize_embeds(req.get("embeds")),
        "timestamp": now_timestamp(),
        "edited_timestamp": null,
        "flags": req.get("flags").and_then(Value::as_u64).unwrap_or(0),
        "components": normalize_components(req.get("components")),
        "id": id,
        "author": author(),
        "pinned": false,
        "mention_everyone": false,
        "tts": req.get("tts").and_then(Value::as_bool).unwrap_or(false),
    });
    if let Some(n) = nonce {
        body["nonce"] = n;
    }
    st.messages.push(FakeMessage {
        id,
        channel_id: channel.to_string(),
        body: body.clone(),
        edits: 0,
    });
    if let Some(key) = nonce_key {
        st.nonces.insert(key, (st.messages.len() - 1, now));
    }
    Answer::json(200, body)
}

fn edit_message(st: &mut State, index: usize, req: &Map<String, Value>) -> Answer {
    let m = &mut st.messages[index];
    if let Some(c) = req.get("content") {
        m.body["content"] = json!(c.as_str().unwrap_or(""));
    }
    if let Some(e) = req.get("embeds") {
        m.body["embeds"] = normalize_embeds(Some(e));
    }
    if let Some(c) = req.get("components") {
        m.body["components"] = normalize_components(Some(c));
    }
    if let Some(f) = req.get("flags").and_then(Value::as_u64) {
        m.body["flags"] = json!(f);
    }
    m.body["edited_timestamp"] = json!(now_timestamp());
    m.edits += 1;
    Answer::json(200, m.body.clone())
}

/// Discord's "Invalid Form Body" errors: a tree that mirrors the body, with `_errors` lists
/// at the places of the problems.
#[derive(Default)]
struct FormErrors {
    tree: Map<String, Value>,
    seen: HashSet<(String, String)>,
}

impl FormErrors {
    fn add<S: AsRef<str>>(&mut self, path: &[S], code: &str, message: impl Into<String>) {
        let key = path
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(".");
        if !self.seen.insert((key, code.to_string())) {
            return;
        }
        let mut node = &mut self.tree;
        for seg in path {
            node = node
                .entry(seg.as_ref().to_string())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("error tree nodes are objects");
        }
        node.entry("_errors")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("_errors is a list")
            .push(json!({"code": code, "message": message.into()}));
    }

    fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn answer(self) -> Answer {
        Answer::json(
            400,
            json!({"message": "Invalid Form Body", "code": 50035, "errors": self.tree}),
        )
    }
}

fn with(path: &[String], more: &[&str]) -> Vec<String> {
    let mut p = path.to_vec();
    p.extend(more.iter().map(|s| s.to_string()));
    p
}

fn chars(v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, |s| s.chars().count())
}

fn url_scheme_ok(url: &str, schemes: &[&str]) -> Result<(), String> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    if schemes.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    let allowed = schemes
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "Scheme \"{scheme}\" is not supported. Scheme must be one of ({allowed})."
    ))
}

/// The documented limits and rules that the OpenAPI description does not carry.
fn check_limits(m: &Map<String, Value>, errors: &mut FormErrors) {
    let flags = m.get("flags").and_then(Value::as_u64).unwrap_or(0);
    let v2 = flags & FLAG_COMPONENTS_V2 != 0;

    let content = chars(m.get("content"));
    if content > MAX_CONTENT_CHARS {
        errors.add(
            &["content"],
            "BASE_TYPE_MAX_LENGTH",
            format!("Must be {MAX_CONTENT_CHARS} or fewer in length."),
        );
    }

    let embeds = m
        .get("embeds")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut total = 0;
    for (i, e) in embeds.iter().enumerate() {
        let path = vec!["embeds".to_string(), i.to_string()];
        total += chars(e.get("title")) + chars(e.get("description"));
        total += chars(e.pointer("/footer/text")) + chars(e.pointer("/author/name"));
        for (j, f) in e
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            total += chars(f.get("name")) + chars(f.get("value"));
            for key in ["name", "value"] {
                if f.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.trim().is_empty())
                {
                    errors.add(
                        &with(&path, &["fields", &j.to_string(), key]),
                        "BASE_TYPE_REQUIRED",
                        "This field is required",
                    );
                }
            }
        }
        let web = ["http", "https"];
        let media = ["http", "https", "attachment"];
        for (pointer, schemes) in [
            ("/url", &web[..]),
            ("/author/url", &web[..]),
            ("/author/icon_url", &media[..]),
            ("/footer/icon_url", &media[..]),
            ("/image/url", &media[..]),
            ("/thumbnail/url", &media[..]),
        ] {
            if let Some(url) = e.pointer(pointer).and_then(Value::as_str) {
                if let Err(msg) = url_scheme_ok(url, schemes) {
                    let segs: Vec<&str> = pointer[1..].split('/').collect();
                    errors.add(&with(&path, &segs), "URL_TYPE_INVALID_SCHEME", msg);
                }
            }
        }
    }
    if total > MAX_EMBED_TOTAL_CHARS {
        errors.add(
            &["embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            format!("Embed size exceeds maximum size of {MAX_EMBED_TOTAL_CHARS}"),
        );
    }

    if v2 {
        if m.get("content")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty())
        {
            errors.add(
                &["content"],
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' field cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            );
        }
        if !embeds.is_empty() {
            errors.add(
                &["embeds"],
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'embeds' field cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            );
        }
    }

    let components = m
        .get("components")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !v2 {
        if components.len() > MAX_ACTION_ROWS {
            errors.add(
                &["components"],
                "BASE_TYPE_BAD_LENGTH",
                format!("Must be between 0 and {MAX_ACTION_ROWS} in length."),
            );
        }
        for (i, c) in components.iter().enumerate() {
            if c.get("type").and_then(Value::as_u64) != Some(1) {
                errors.add(
                    &["components", &i.to_string()],
                    "COMPONENT_LAYOUT_REQUIRES_COMPONENTS_V2",
                    "Only action rows (type 1) are allowed at the top level without the IS_COMPONENTS_V2 flag",
                );
            }
        }
    }
    let mut ids = HashSet::new();
    let mut count = 0;
    for (i, c) in components.iter().enumerate() {
        check_component(
            c,
            vec!["components".into(), i.to_string()],
            &mut ids,
            &mut count,
            errors,
        );
    }
    if v2 && count > MAX_COMPONENTS_V2 {
        errors.add(
            &["components"],
            "BASE_TYPE_BAD_LENGTH",
            format!("Must be between 1 and {MAX_COMPONENTS_V2} in length (all components)."),
        );
    }
}

fn is_select(c: &Value) -> bool {
    matches!(
        c.get("type").and_then(Value::as_u64),
        Some(3) | Some(5) | Some(6) | Some(7) | Some(8)
    )
}

fn check_component(
    c: &Value,
    path: Vec<String>,
    ids: &mut HashSet<String>,
    count: &mut usize,
    errors: &mut FormErrors,
) {
    *count += 1;
    let Some(o) = c.as_object() else { return };
    if let Some(id) = o.get("custom_id").and_then(Value::as_str) {
        if !ids.insert(id.to_string()) {
            errors.add(
                &with(&path, &["custom_id"]),
                "COMPONENT_CUSTOM_ID_DUPLICATED",
                "Component custom id cannot be duplicated",
            );
        }
    }
    let has = |k: &str| o.get(k).is_some_and(|v| !v.is_null());
    match o.get("type").and_then(Value::as_u64) {
        Some(1) => {
            let children = o
                .get("components")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if children.len() > 1 && children.iter().any(is_select) {
                errors.add(
                    &with(&path, &["components"]),
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "The specified component exceeds the maximum width (a select menu must be alone in its row)",
                );
            }
            for (j, child) in children.iter().enumerate() {
                check_component(
                    child,
                    with(&path, &["components", &j.to_string()]),
                    ids,
                    count,
                    errors,
                );
            }
        }
        Some(2) => {
            let style = o.get("style").and_then(Value::as_u64).unwrap_or(0);
            let not_allowed = |errors: &mut FormErrors, key: &str, why: &str| {
                errors.add(
                    &with(&path, &[key]),
                    "BUTTON_COMPONENT_FIELD_NOT_ALLOWED",
                    why.to_string(),
                );
            };
            let required = |errors: &mut FormErrors, key: &str| {
                errors.add(
                    &with(&path, &[key]),
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                );
            };
            match style {
                5 => {
                    if !has("url") {
                        required(errors, "url");
                    }
                    if has("custom_id") {
                        not_allowed(errors, "custom_id", "A link button cannot have a custom_id");
                    }
                    if has("sku_id") {
                        not_allowed(errors, "sku_id", "A link button cannot have a sku_id");
                    }
                    if let Some(url) = o.get("url").and_then(Value::as_str) {
                        if let Err(msg) = url_scheme_ok(url, &["http", "https", "discord"]) {
                            errors.add(&with(&path, &["url"]), "URL_TYPE_INVALID_SCHEME", msg);
                        }
                    }
                }
                6 => {
                    if !has("sku_id") {
                        required(errors, "sku_id");
                    }
                    for key in ["custom_id", "url", "label", "emoji"] {
                        if has(key) {
                            not_allowed(errors, key, "A premium button cannot have this field");
                        }
                    }
                }
                _ => {
                    if !has("custom_id") {
                        required(errors, "custom_id");
                    }
                    if has("url") {
                        not_allowed(errors, "url", "Only link buttons can have a url");
                    }
                    if has("sku_id") {
                        not_allowed(errors, "sku_id", "Only premium buttons can have a sku_id");
                    }
                }
            }
            if style != 6 && !has("label") && !has("emoji") {
                errors.add(
                    &path,
                    "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
                    "A button must have a label or an emoji",
                );
            }
        }
        Some(9) | Some(17) => {
            for (j, child) in o
                .get("components")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                check_component(
                    child,
                    with(&path, &["components", &j.to_string()]),
                    ids,
                    count,
                    errors,
                );
            }
            if let Some(acc) = o.get("accessory") {
                check_component(acc, with(&path, &["accessory"]), ids, count, errors);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI description and its JSON Schemas.

/// Discord's OpenAPI description, loaded once.
pub fn openapi() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/discord-openapi.json"
        );
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read Discord's OpenAPI description {path}: {e}"));
        serde_json::from_str(&text).expect("Discord's OpenAPI description is JSON")
    })
}

/// The schema name of the `application/json` request body of an operation, from the spec.
pub fn request_schema_name(path: &str, method: &str) -> Option<String> {
    let r = openapi()
        .pointer(&format!(
            "/paths/{}/{method}/requestBody/content/application~1json/schema/$ref",
            path.replace('~', "~0").replace('/', "~1")
        ))?
        .as_str()?;
    r.strip_prefix("#/components/schemas/").map(str::to_string)
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                if k == "$ref" {
                    if let Some(name) = v
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    {
                        out.push(name.to_string());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Adds `additionalProperties: false` to every object schema that lists its properties and
/// does not say otherwise (not inside `allOf`, where it would refuse the other parts).
fn close_objects(schema: &mut Value) {
    let Some(o) = schema.as_object_mut() else {
        return;
    };
    let composed = ["allOf", "anyOf", "oneOf"]
        .iter()
        .any(|k| o.contains_key(*k));
    if o.get("properties").is_some_and(Value::is_object)
        && !composed
        && !o.contains_key("additionalProperties")
        && !o.contains_key("unevaluatedProperties")
    {
        o.insert("additionalProperties".into(), json!(false));
    }
    if let Some(props) = o.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(close_objects);
    }
    for key in ["items", "not", "additionalProperties"] {
        if let Some(s) = o.get_mut(key) {
            close_objects(s);
        }
    }
    for key in ["oneOf", "anyOf", "prefixItems"] {
        if let Some(list) = o.get_mut(key).and_then(Value::as_array_mut) {
            list.iter_mut().for_each(close_objects);
        }
    }
}

/// Read-only fields of Discord's answers that clients (serenity among them) send back and that
/// Discord ignores: allowed even when unknown fields are refused.
const IGNORED_ECHOES: &[(&str, &str)] = &[
    ("RichEmbedImage", "proxy_url"),
    ("RichEmbedThumbnail", "proxy_url"),
    ("RichEmbedVideo", "proxy_url"),
    ("RichEmbedAuthor", "proxy_icon_url"),
    ("RichEmbedFooter", "proxy_icon_url"),
];

fn build_validator(name: &str, strict: bool) -> jsonschema::Validator {
    let all = openapi()["components"]["schemas"]
        .as_object()
        .expect("components.schemas in the OpenAPI description");
    let mut schemas = Map::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        if schemas.contains_key(&n) {
            continue;
        }
        let s = all
            .get(&n)
            .unwrap_or_else(|| panic!("no schema {n} in the OpenAPI description"));
        collect_refs(s, &mut todo);
        schemas.insert(n, s.clone());
    }
    if strict {
        for (n, s) in schemas.iter_mut() {
            for (owner, field) in IGNORED_ECHOES {
                if n == owner {
                    if let Some(p) = s.get_mut("properties").and_then(Value::as_object_mut) {
                        p.entry(*field)
                            .or_insert(json!({"type": ["string", "null"]}));
                    }
                }
            }
            close_objects(s);
        }
    }
    let document = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": {"schemas": schemas},
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(true)
        .build(&document)
        .unwrap_or_else(|e| panic!("compile the OpenAPI schema {name}: {e}"))
}

type ValidatorCache = HashMap<(String, bool), Arc<jsonschema::Validator>>;

/// The compiled validator for a schema of the description; `strict` refuses unknown fields.
pub fn validator(name: &str, strict: bool) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<ValidatorCache>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(&(name.to_string(), strict)) {
        return v.clone();
    }
    let v = Arc::new(build_validator(name, strict));
    cache
        .lock()
        .unwrap()
        .entry((name.to_string(), strict))
        .or_insert(v)
        .clone()
}

/// The schema of a component, by its `type`, to explain why a `oneOf` of components failed.
fn component_schema(kind: u64) -> Option<&'static str> {
    Some(match kind {
        1 => "ActionRowComponentForMessageRequest",
        2 => "ButtonComponentForMessageRequest",
        3 => "StringSelectComponentForMessageRequest",
        5 => "UserSelectComponentForMessageRequest",
        6 => "RoleSelectComponentForMessageRequest",
        7 => "MentionableSelectComponentForMessageRequest",
        8 => "ChannelSelectComponentForMessageRequest",
        9 => "SectionComponentForMessageRequest",
        10 => "TextDisplayComponentForMessageRequest",
        11 => "ThumbnailComponentForMessageRequest",
        12 => "MediaGalleryComponentForMessageRequest",
        13 => "FileComponentForMessageRequest",
        14 => "SeparatorComponentForMessageRequest",
        17 => "ContainerComponentForMessageRequest",
        _ => return None,
    })
}

/// The schema of a nullable object field (`oneOf: [null, X]`), by the field's name.
fn field_schema(field: &str) -> Option<&'static str> {
    Some(match field {
        "allowed_mentions" => "MessageAllowedMentionsRequest",
        "message_reference" => "MessageReferenceRequest",
        "poll" => "PollCreateRequest",
        "author" => "RichEmbedAuthor",
        "footer" => "RichEmbedFooter",
        "image" => "RichEmbedImage",
        "thumbnail" => "RichEmbedThumbnail",
        "video" => "RichEmbedVideo",
        "provider" => "RichEmbedProvider",
        "emoji" => "ComponentEmojiForRequest",
        _ => return None,
    })
}

fn pointer_segments(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// Validates `instance` against the named schema and adds Discord-shaped errors under `base`.
fn validate_schema(
    name: &str,
    strict: bool,
    instance: &Value,
    base: &[String],
    out: &mut FormErrors,
    depth: usize,
) {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let v = validator(name, strict);
    for err in v.iter_errors(instance) {
        let mut path = base.to_vec();
        path.extend(pointer_segments(err.instance_path.as_str()));
        let value = err.instance.as_ref();
        match &err.kind {
            K::Required { property } => {
                path.push(property.as_str().unwrap_or("?").to_string());
                out.add(&path, "BASE_TYPE_REQUIRED", "This field is required");
            }
            K::AdditionalProperties { unexpected } => {
                for field in unexpected {
                    out.add(
                        &with(&path, &[field]),
                        "UNKNOWN_FIELD",
                        format!(
                            "fake Discord: unknown field \"{field}\" (Discord would silently drop it)"
                        ),
                    );
                }
            }
            K::MaxLength { limit } => out.add(
                &path,
                "BASE_TYPE_MAX_LENGTH",
                format!("Must be {limit} or fewer in length."),
            ),
            K::MinLength { limit } => out.add(
                &path,
                "BASE_TYPE_MIN_LENGTH",
                format!("Must be {limit} or more in length."),
            ),
            K::MaxItems { limit } => out.add(
                &path,
                "BASE_TYPE_BAD_LENGTH",
                format!("Must be between 0 and {limit} in length."),
            ),
            K::MinItems { limit } => out.add(
                &path,
                "BASE_TYPE_BAD_LENGTH",
                format!("Must be {limit} or more in length."),
            ),
            K::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(ts) => ts
                        .iter()
                        .map(|t| t.to_string())
                        .find(|t| t != "null")
                        .unwrap_or_else(|| "null".into()),
                };
                let (code, message) = match expected.as_str() {
                    "string" => (
                        "BASE_TYPE_STRING",
                        format!("Could not interpret \"{}\" as string.", short(value)),
                    ),
                    "integer" | "number" => (
                        "NUMBER_TYPE_COERCE",
                        format!("Value \"{}\" is not int.", short(value)),
                    ),
                    "boolean" => ("BASE_TYPE_BOOLEAN", "Must be either true or false.".into()),
                    "array" => (
                        "LIST_TYPE_CONVERT",
                        "Only iterables may be used in a ListType".into(),
                    ),
                    "object" => (
                        "DICT_TYPE_CONVERT",
                        "Only dictionaries may be used in a DictType".into(),
                    ),
                    other => ("BASE_TYPE_INVALID", format!("Must be {other}.")),
                };
                out.add(&path, code, message);
            }
            K::Minimum { limit } | K::ExclusiveMinimum { limit } => out.add(
                &path,
                "NUMBER_TYPE_MIN",
                format!("int value should be greater than or equal to {limit}."),
            ),
            K::Maximum { limit } | K::ExclusiveMaximum { limit } => out.add(
                &path,
                "NUMBER_TYPE_MAX",
                format!("int value should be less than or equal to {limit}."),
            ),
            K::Enum { options } => out.add(
                &path,
                "BASE_TYPE_CHOICES",
                format!("Value must be one of {options}."),
            ),
            K::Constant { expected_value } => out.add(
                &path,
                "BASE_TYPE_CHOICES",
                format!("Value must be one of ({expected_value},)."),
            ),
            K::Format { format } => {
                let (code, message) = match format.as_str() {
                    "uri" => ("URL_TYPE_INVALID_URL", "Not a well formed URL.".to_string()),
                    "date-time" => (
                        "DATE_TIME_TYPE_PARSE",
                        format!("Could not parse {}. Should be ISO8601.", short(value)),
                    ),
                    other => ("BASE_TYPE_BAD_FORMAT", format!("Not a valid {other}.")),
                };
                out.add(&path, code, message);
            }
            K::Pattern { .. } => out.add(
                &path,
                "NUMBER_TYPE_COERCE",
                format!("Value \"{}\" is not snowflake.", short(value)),
            ),
            K::OneOfNotValid { .. } | K::AnyOf { .. } => {
                // Say which part of the chosen schema is wrong, as Discord does, instead of
                // "matches none of the alternatives".
                let refined = if depth < 8 {
                    let by_type = value
                        .get("type")
                        .and_then(Value::as_u64)
                        .and_then(component_schema);
                    let by_field = path.last().and_then(|f| field_schema(f));
                    match (value.is_object(), by_type.or(by_field)) {
                        (true, Some(schema)) => {
                            let before = out.seen.len();
                            validate_schema(schema, strict, value, &path, out, depth + 1);
                            out.seen.len() > before
                        }
                        _ => false,
                    }
                } else {
                    false
                };
                if !refined {
                    let message = match value.get("type").and_then(Value::as_u64) {
                        Some(t) => format!("Component type {t} is not allowed here."),
                        None => format!("Value \"{}\" is not a valid choice.", short(value)),
                    };
                    out.add(&path, "UNION_TYPE_CHOICES", message);
                }
            }
            _ => out.add(&path, "BASE_TYPE_INVALID", err.to_string()),
        }
    }
}
