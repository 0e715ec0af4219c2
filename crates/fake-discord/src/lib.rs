//! A fake Discord HTTP API (v10) for the integration tests.
//!
//! Discord cannot be reached from a test machine, so this stands in for it. It is strict: it
//! accepts only what the real API accepts, and refuses with Discord's own status codes and
//! error shapes.
//!
//! - Routes: `POST /api/v10/channels/{channel_id}/messages` and
//!   `PATCH /api/v10/channels/{channel_id}/messages/{message_id}`, and
//!   `POST /api/v10/users/@me/channels {"recipient_id"}` to open a DM (type 1, the same channel
//!   for the same user; messages to it as to any channel, recorded per user:
//!   [`FakeDiscord::dms_to`]; a user who takes no DMs ([`FakeDiscord::refuse_dms`]) gets 403
//!   code 50007). Anything else is 404 `{"message": "404: Not Found", "code": 0}`.
//! - `allowed_mentions` as Discord reads it: known keys, `parse` of users/roles/everyone, a
//!   kind parsed or listed but not both, at most 100 ids of a kind.
//! - `User-Agent: DiscordBot ($url, $versionNumber)` (Discord documents it as required) and
//!   `Authorization: Bot <token>`.
//! - Bodies must be `application/json` and are validated against the request schemas of
//!   Discord's official OpenAPI description (`crates/fake-discord/discord-openapi.json`:
//!   `MessageCreateRequest`, `MessageEditRequestPartial`), then against the documented limits
//!   that the description does not carry (2000 characters of content, 6000 characters of embed
//!   text, 5 action rows, button rules, unique custom ids, ...).
//! - Rate limits with Discord's headers: per-route buckets keyed by (route, channel) and a
//!   global limit; over a limit the answer is a 429 that is not applied.
//! - Failure modes switched at run time: [`FakeDiscord::fail_with`], [`FakeDiscord::set_delay`],
//!   [`FakeDiscord::go_down`] / [`FakeDiscord::come_back`].
//!
//! Interactions, as Discord does them over HTTP:
//!
//! - Application commands: `PUT` (bulk overwrite) and `GET` of
//!   `/applications/{app}/commands` and `/applications/{app}/guilds/{guild}/commands`, with the
//!   bot token; bodies are checked against the spec's request schema and the documented rules
//!   it lacks (names, required options first, unique names, sizes, at most 100 commands).
//!   [`FakeDiscord::registered_commands`] reads them.
//! - The fake sends interactions to an application's endpoint the way Discord does
//!   ([`FakeDiscord::slash_command`], [`FakeDiscord::button_click`],
//!   [`FakeDiscord::send_interaction`]): real payload shapes, signed with the fake's Ed25519 key
//!   ([`FakeDiscord::public_key_hex`]) over `timestamp ‖ body`. The HTTP answer is the initial
//!   response; it must come within 3 s and be valid, or the interaction failed, as Discord shows
//!   "The application did not respond" / "This interaction failed".
//! - The interaction's webhook: `PATCH`/`GET /webhooks/{app}/{token}/messages/@original` and
//!   `POST /webhooks/{app}/{token}` (followups), no bot token needed; the token must be one the
//!   fake issued, answered, and not older than 15 minutes, else 404 Unknown Webhook (10015).
//!   A webhook request that arrives while the fake still reads the application's answer waits
//!   for that answer, as Discord handles the answer it was sent first.
//!   [`FakeDiscord::interaction`] tells what became of an interaction.
//!
//! Interactions over the Gateway (a bot with no public endpoint): `gateway.rs` (a WebSocket on
//! a port of its own, `GET /gateway/bot`, and the interaction callback route).
//!
//! Uploads: `PATCH …/messages/@original` also takes `multipart/form-data` as Discord documents
//! it (Uploading Files): the message as JSON in a `payload_json` part, files in `files[n]`
//! parts, each named in `attachments` by its `n`. It refuses an invalid `payload_json` (50109),
//! an `attachments` id that is neither a `files[n]` part nor an attachment of the message, more
//! than 10 files, and a file over 10 MiB (413, 40005 "Request entity too large"); the message's
//! files are kept ([`FakeMessage::files`]). Other routes take JSON only.
//!
//! Where the fake is stricter than Discord, it says so in the error: Discord silently drops
//! unknown fields, the fake refuses them ([`FakeDiscord::set_reject_unknown_fields`] turns this
//! off); a multipart body must carry `payload_json` (Discord would also read plain form fields),
//! and a `files[n]` part that `attachments` does not name is refused (Discord drops it).
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

mod gateway;
pub use gateway::{Callback, GatewayView, DEFAULT_HEARTBEAT_INTERVAL};

/// The id of the bot user the fake's messages are authored by.
pub const BOT_USER_ID: &str = "1180000000000000001";
pub const BOT_USERNAME: &str = "runbot";
/// Discord gives an application's bot user the application's id.
pub const APPLICATION_ID: &str = BOT_USER_ID;
/// The guild the fake's interactions come from, and where guild commands may be registered.
pub const GUILD_ID: u64 = 1_190_000_000_000_000_001;

/// The request body of the bulk overwrite of commands (an inline schema in the spec).
pub const COMMANDS_SCHEMA: &str = "put /applications/{application_id}/commands";
/// `PATCH /webhooks/{application_id}/{token}/messages/@original`.
pub const WEBHOOK_EDIT_SCHEMA: &str = "IncomingWebhookUpdateRequestPartial";
/// `POST /webhooks/{application_id}/{token}` (followup messages).
pub const WEBHOOK_CREATE_SCHEMA: &str = "IncomingWebhookRequestPartial";
/// Initial responses of types 4 and 5.
pub const CALLBACK_MESSAGE_SCHEMA: &str = "CreateMessageInteractionCallbackRequest";
/// Initial responses of types 6 and 7.
pub const CALLBACK_UPDATE_SCHEMA: &str = "UpdateMessageInteractionCallbackRequest";

/// Documented limits of application commands.
pub const MAX_COMMANDS: usize = 100;
pub const MAX_COMMAND_SIZE: usize = 4000;
pub const MAX_CHOICE_VALUE_CHARS: usize = 100;
/// Discord waits this long for the first answer to an interaction.
pub const INTERACTION_DEADLINE: Duration = Duration::from_secs(3);
/// An interaction's token works this long.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
pub const FLAG_EPHEMERAL: u64 = 1 << 6;
/// The "thinking…" state of a deferred response.
pub const FLAG_LOADING: u64 = 1 << 7;

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
/// Discord's default upload limit per file for bots in a guild without boosts; a bigger file
/// is answered 413, code 40005.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// Files one message takes.
pub const MAX_FILES: usize = 10;
/// How long `enforce_nonce` remembers a nonce ("the past few minutes" in Discord's docs).
pub const NONCE_WINDOW: Duration = Duration::from_secs(120);

const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// The routes the fake serves; each has its own rate-limit bucket per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    CreateMessage,
    EditMessage,
    /// Application commands, per application.
    Commands,
    /// `@original` of an interaction, per token; not counted against the global limit.
    InteractionOriginal,
    /// Followups of an interaction, per token; not counted against the global limit.
    InteractionFollowup,
    /// `POST /users/@me/channels`: opening a DM, one bucket for the bot.
    OpenDm,
}

impl Route {
    const ALL: [Route; 6] = [
        Route::CreateMessage,
        Route::EditMessage,
        Route::Commands,
        Route::InteractionOriginal,
        Route::InteractionFollowup,
        Route::OpenDm,
    ];

    /// Discord does not count interaction webhooks against the bot's global limit.
    fn global(self) -> bool {
        !matches!(
            self,
            Route::InteractionOriginal | Route::InteractionFollowup
        )
    }
}

impl Route {
    /// Discord's `X-RateLimit-Bucket` is an opaque hash per route; the channel (the "major
    /// parameter") is not part of it, so two channels share the hash but not the bucket.
    pub fn bucket_hash(self) -> &'static str {
        match self {
            Route::CreateMessage => "80c17d2f203122d936070c88c8d10f33",
            Route::EditMessage => "b6cd0d7e7a5e4f35a1d2c3f4e5a6b7c8",
            Route::Commands => "3c5e9a1f0b7d4e2c8a6f1d3b5e7c9a0f",
            Route::InteractionOriginal => "d41f7a2e9c3b5d6e8f0a1b2c3d4e5f60",
            Route::InteractionFollowup => "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
            Route::OpenDm => "5f1e2d3c4b5a69788796a5b4c3d2e1f0",
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
    /// For an ephemeral message: the only user who sees it.
    pub visible_to: Option<String>,
    /// The interaction whose response or followup this message is.
    pub interaction_id: Option<String>,
    /// The files attached to it, in the order of its `attachments`.
    pub files: Vec<FakeFile>,
}

/// A file uploaded with a message.
#[derive(Clone, Debug)]
pub struct FakeFile {
    /// The attachment's snowflake, as Discord gives it.
    pub id: String,
    pub filename: String,
    /// The part's `Content-Type`, if it had one.
    pub content_type: Option<String>,
    pub content: Vec<u8>,
}

impl FakeMessage {
    pub fn content(&self) -> &str {
        self.body["content"].as_str().unwrap_or("")
    }

    pub fn flags(&self) -> u64 {
        self.body["flags"].as_u64().unwrap_or(0)
    }

    pub fn is_ephemeral(&self) -> bool {
        self.flags() & FLAG_EPHEMERAL != 0
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
    /// Answers given as they are to the next requests, before anything else is checked.
    scripted: std::collections::VecDeque<Answer>,
    delay: Duration,
    reject_unknown_fields: bool,
    require_user_agent: bool,
    last_snowflake: u64,
    nonces: HashMap<String, (usize, Instant)>,
    guilds: HashSet<u64>,
    /// Registered commands as Discord answers them, by guild (None: global).
    commands: HashMap<Option<u64>, Vec<Value>>,
    interactions: Vec<InteractionState>,
    interaction_deadline: Duration,
    token_lifetime: Duration,
    /// Role names of fake users and the ids they were given.
    roles: HashMap<String, String>,
    /// The DM channel of each user the bot opened one with (Discord gives the same one again).
    dm_channels: HashMap<String, String>,
    /// Users who take no DMs from the bot: a message to their DM gets 403, code 50007.
    dm_refusing: HashSet<String>,
    gateway: gateway::GatewayState,
}

impl State {
    fn new(channels: &[u64]) -> State {
        State {
            channels: channels.iter().copied().collect(),
            messages: Vec::new(),
            requests: Vec::new(),
            route_limits: Route::ALL
                .iter()
                .map(|r| (*r, (5, Duration::from_secs(5))))
                .collect(),
            global_limit: (50, Duration::from_secs(1)),
            buckets: HashMap::new(),
            global: None,
            count_429: 0,
            fail_with: None,
            scripted: Default::default(),
            delay: Duration::ZERO,
            reject_unknown_fields: true,
            require_user_agent: true,
            last_snowflake: 0,
            nonces: HashMap::new(),
            guilds: HashSet::from([GUILD_ID]),
            commands: HashMap::new(),
            interactions: Vec::new(),
            interaction_deadline: INTERACTION_DEADLINE,
            token_lifetime: TOKEN_LIFETIME,
            roles: HashMap::new(),
            dm_channels: HashMap::new(),
            dm_refusing: HashSet::new(),
            gateway: Default::default(),
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
    /// Signs the interactions the fake sends.
    signing_key: ed25519_dalek::SigningKey,
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
            for schema in [
                CREATE_SCHEMA,
                EDIT_SCHEMA,
                COMMANDS_SCHEMA,
                WEBHOOK_EDIT_SCHEMA,
                WEBHOOK_CREATE_SCHEMA,
                CALLBACK_MESSAGE_SCHEMA,
                CALLBACK_UPDATE_SCHEMA,
            ] {
                validator(schema, true);
            }
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
            signing_key: new_signing_key(port),
            state: Mutex::new(State::new(channels)),
            open_connections: AtomicUsize::new(0),
            sockets: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        gateway::start(&rt, shared.clone()).await;
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

    /// Sets the per-route limit of every route: `limit` requests per `per` in one bucket (a
    /// channel, an application, an interaction token).
    pub fn set_route_limit(&self, limit: u32, per: Duration) {
        let mut st = self.state();
        for r in Route::ALL {
            st.route_limits.insert(r, (limit, per));
        }
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

    /// The next request gets this answer as it is, whatever it asked: for answers Discord is
    /// not documented to give but a proxy in between or a bug might (a negative or enormous
    /// `retry_after`), which runbot must survive.
    pub fn answer_next(&self, status: u16, body: Value) {
        self.state().scripted.push_back(Answer::json(status, body));
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
    if let Some(token) = webhook_token(parts.uri.path()) {
        wait_for_answer(&shared, token).await;
    }
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
                AnswerBody::Html(_) | AnswerBody::Empty => None,
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
    /// 204 No Content.
    Empty,
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
            AnswerBody::Empty => {
                return Response::builder()
                    .status(self.status)
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
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

/// What a request is for.
enum Target {
    Channel {
        route: Route,
        channel: String,
        message: Option<String>,
    },
    Commands {
        app: String,
        guild: Option<String>,
        write: bool,
    },
    Original {
        app: String,
        token: String,
        write: bool,
    },
    Followup {
        app: String,
        token: String,
    },
    OpenDm,
    /// `GET /gateway/bot`.
    GatewayBot,
    /// `POST /interactions/{id}/{token}/callback`: a Gateway interaction's answer.
    Callback {
        id: String,
        token: String,
    },
}

impl Target {
    fn route(&self) -> Route {
        match self {
            Target::Channel { route, .. } => *route,
            Target::Commands { .. } => Route::Commands,
            Target::Original { .. } => Route::InteractionOriginal,
            Target::Followup { .. } => Route::InteractionFollowup,
            Target::OpenDm => Route::OpenDm,
            Target::GatewayBot | Target::Callback { .. } => {
                unreachable!("answered before rate limits")
            }
        }
    }

    /// The rate-limit bucket's major parameter.
    fn bucket(&self) -> &str {
        match self {
            Target::Channel { channel, .. } => channel,
            Target::Commands { app, .. } => app,
            Target::Original { token, .. } | Target::Followup { token, .. } => token,
            Target::OpenDm => "@me",
            Target::GatewayBot => "gateway",
            Target::Callback { token, .. } => token,
        }
    }

    /// Interaction webhooks are authorized by their token alone.
    fn needs_bot_token(&self) -> bool {
        matches!(
            self,
            Target::Channel { .. } | Target::Commands { .. } | Target::OpenDm | Target::GatewayBot
        )
    }
}

fn match_route(method: &Method, path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/api/v10/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let s = |x: &&str| x.to_string();
    match (method, segments.as_slice()) {
        (&Method::POST, ["channels", channel, "messages"]) => Some(Target::Channel {
            route: Route::CreateMessage,
            channel: s(channel),
            message: None,
        }),
        (&Method::PATCH, ["channels", channel, "messages", message]) => Some(Target::Channel {
            route: Route::EditMessage,
            channel: s(channel),
            message: Some(s(message)),
        }),
        (&Method::PUT | &Method::GET, ["applications", app, "commands"]) => {
            Some(Target::Commands {
                app: s(app),
                guild: None,
                write: method == Method::PUT,
            })
        }
        (&Method::PUT | &Method::GET, ["applications", app, "guilds", guild, "commands"]) => {
            Some(Target::Commands {
                app: s(app),
                guild: Some(s(guild)),
                write: method == Method::PUT,
            })
        }
        (&Method::PATCH | &Method::GET, ["webhooks", app, token, "messages", "@original"]) => {
            Some(Target::Original {
                app: s(app),
                token: s(token),
                write: method == Method::PATCH,
            })
        }
        (&Method::POST, ["webhooks", app, token]) => Some(Target::Followup {
            app: s(app),
            token: s(token),
        }),
        (&Method::POST, ["users", "@me", "channels"]) => Some(Target::OpenDm),
        (&Method::GET, ["gateway", "bot"]) => Some(Target::GatewayBot),
        (&Method::POST, ["interactions", id, token, "callback"]) => Some(Target::Callback {
            id: s(id),
            token: s(token),
        }),
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
    if let Some(answer) = st.scripted.pop_front() {
        return answer;
    }
    if let Some(status) = st.fail_with {
        return outage(status);
    }
    let Some(target) = match_route(method, path) else {
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
    if target.needs_bot_token()
        && header(headers, "authorization") != Some(format!("Bot {token}").as_str())
    {
        return Answer::error(401, "401: Unauthorized", 0);
    }
    // Neither is one of the fake's rate-limited routes.
    match &target {
        Target::GatewayBot => return gateway::gateway_bot(st),
        Target::Callback { id, token } => return gateway::callback(st, id, token, headers, body),
        _ => {}
    }
    let now = Instant::now();
    let rate_headers = match take_rate_limit(st, target.route(), target.bucket(), now) {
        Ok(h) => h,
        Err(answer) => return answer,
    };
    let mut answer = match &target {
        Target::Channel {
            route,
            channel,
            message,
        } => apply(st, *route, channel, message.as_deref(), headers, body),
        Target::Commands { app, guild, write } => {
            apply_commands(st, app, guild.as_deref(), *write, headers, body)
        }
        Target::Original { app, token, write } => {
            apply_original(st, app, token, *write, headers, body)
        }
        Target::Followup { app, token } => apply_followup(st, app, token, headers, body),
        Target::OpenDm => open_dm(st, headers, body),
        Target::GatewayBot | Target::Callback { .. } => unreachable!("answered above"),
    };
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
    let counts_global = route.global();
    let global = Window::current(&mut st.global, now, global_per);
    if counts_global && global.count >= global_limit {
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
    if counts_global {
        global.count += 1;
    }
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
    if route == Route::CreateMessage
        && st
            .dm_channels
            .iter()
            .any(|(user, dm)| dm == channel && st.dm_refusing.contains(user))
    {
        return Answer::error(403, "Cannot send messages to this user", 50007);
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

    let schema = match route {
        Route::CreateMessage => CREATE_SCHEMA,
        Route::EditMessage => EDIT_SCHEMA,
        other => unreachable!("{other:?} is not a channel route"),
    };
    let request = match schema_body(st, headers, body, schema) {
        Ok(r) => r,
        Err(a) => return a,
    };
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

/// The body of `POST /users/@me/channels`.
pub const OPEN_DM_SCHEMA: &str = "CreatePrivateChannelRequest";

/// `POST /users/@me/channels {"recipient_id"}`: the DM channel with that user, the same one each
/// time; messages can then be created in it like in any channel.
fn open_dm(st: &mut State, headers: &HeaderMap, body: &Bytes) -> Answer {
    let request = match schema_body(st, headers, body, OPEN_DM_SCHEMA) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut errors = FormErrors::default();
    // A bot opens a DM with one recipient; `access_tokens` is for group DMs of OAuth2 apps.
    let recipient = match request.get("recipient_id") {
        None | Some(Value::Null) => {
            errors.add(
                &["recipient_id"],
                "BASE_TYPE_REQUIRED",
                "This field is required",
            );
            return errors.answer();
        }
        Some(v) => v,
    };
    let Some(user) = recipient
        .as_str()
        .filter(|id| parse_snowflake(id).is_some_and(|n| n != 0))
    else {
        errors.add(
            &["recipient_id"],
            "NUMBER_TYPE_COERCE",
            format!("Value \"{}\" is not snowflake.", short(recipient)),
        );
        return errors.answer();
    };
    if user == BOT_USER_ID {
        return Answer::error(400, "Cannot send messages to this user", 50007);
    }
    let channel = match st.dm_channels.get(user) {
        Some(c) => c.clone(),
        None => {
            let c = st.next_snowflake();
            st.channels.insert(c.parse().expect("a snowflake"));
            st.dm_channels.insert(user.to_string(), c.clone());
            c
        }
    };
    Answer::json(
        200,
        json!({
            "id": channel,
            "type": 1,
            "last_message_id": null,
            "flags": 0,
            "recipients": [discord_user(user, &format!("user{}", &user[user.len().saturating_sub(4)..]))],
        }),
    )
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
        visible_to: None,
        interaction_id: None,
        files: Vec::new(),
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

    fn answer_body(&self) -> Value {
        json!({"message": "Invalid Form Body", "code": 50035, "errors": self.tree})
    }

    fn answer(self) -> Answer {
        Answer::json(400, self.answer_body())
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
    check_allowed_mentions(m.get("allowed_mentions"), errors);
}

/// Ids one kind of `allowed_mentions` may list.
pub const MAX_ALLOWED_MENTION_IDS: usize = 100;

/// `allowed_mentions` as Discord reads it: known keys only, `parse` of `users`/`roles`/
/// `everyone`, and a kind either parsed or listed, not both; at most 100 ids of each kind.
/// (Checked whether or not unknown fields are refused elsewhere: Discord refuses these.)
fn check_allowed_mentions(v: Option<&Value>, errors: &mut FormErrors) {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return;
    };
    let path = ["allowed_mentions"];
    let Some(m) = v.as_object() else {
        errors.add(
            &path,
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType",
        );
        return;
    };
    for key in m.keys() {
        if !["parse", "users", "roles", "replied_user"].contains(&key.as_str()) {
            errors.add(
                &["allowed_mentions", key.as_str()],
                "UNKNOWN_FIELD",
                format!("fake Discord: allowed_mentions has no field {key:?}"),
            );
        }
    }
    let parse: Vec<&str> = m
        .get("parse")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (i, p) in parse.iter().enumerate() {
        if !["users", "roles", "everyone"].contains(p) {
            errors.add(
                &["allowed_mentions", "parse", &i.to_string()],
                "BASE_TYPE_CHOICES",
                format!("Value must be one of {{'roles', 'users', 'everyone'}}, not {p:?}."),
            );
        }
    }
    for kind in ["users", "roles"] {
        let listed = m.get(kind).and_then(Value::as_array);
        if let Some(ids) = listed {
            if ids.len() > MAX_ALLOWED_MENTION_IDS {
                errors.add(
                    &["allowed_mentions", kind],
                    "BASE_TYPE_MAX_LENGTH",
                    format!("Must be {MAX_ALLOWED_MENTION_IDS} or fewer in length."),
                );
            }
            for (i, id) in ids.iter().enumerate() {
                if id.as_str().and_then(parse_snowflake).is_none() {
                    errors.add(
                        &["allowed_mentions", kind, &i.to_string()],
                        "NUMBER_TYPE_COERCE",
                        format!("Value \"{}\" is not snowflake.", short(id)),
                    );
                }
            }
        }
        if parse.contains(&kind) && listed.is_some_and(|ids| !ids.is_empty()) {
            errors.add(
                &path,
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                format!("parse:[\"{kind}\"] and {kind}: [ids...] are mutually exclusive."),
            );
        }
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
// Interactions: application commands, interactions sent to an application, their webhooks.

/// A member of the fake's guild, who types commands and clicks buttons.
#[derive(Clone, Debug)]
pub struct FakeUser {
    pub id: String,
    pub name: String,
    /// Role names or ids. Discord sends role ids, so a name gets a stable id of its own
    /// ([`FakeDiscord::role_id`]).
    pub roles: Vec<String>,
}

impl FakeUser {
    pub fn new(id: u64, name: &str, roles: &[&str]) -> FakeUser {
        FakeUser {
            id: id.to_string(),
            name: name.to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }
}

/// An interaction the fake built, ready to send: its payload as Discord sends it.
#[derive(Clone, Debug)]
pub struct Interaction {
    pub id: String,
    pub token: String,
    pub body: Value,
}

/// What the application answered to one interaction.
#[derive(Clone, Debug)]
pub struct Sent {
    /// 0 when the application could not be reached.
    pub status: u16,
    /// The answer's body: JSON, else the text as a JSON string.
    pub body: Value,
    pub latency: Duration,
    pub token: String,
    pub id: String,
    /// Why Discord would show the interaction as failed, when it would.
    pub failure: Option<String>,
}

/// An interaction as a test reads it, in its current state.
#[derive(Clone, Debug)]
pub struct FakeInteraction {
    pub id: String,
    pub token: String,
    /// 1 PING, 2 APPLICATION_COMMAND, 3 MESSAGE_COMPONENT.
    pub kind: u64,
    pub user_id: String,
    pub channel_id: String,
    /// What the fake sent.
    pub payload: Value,
    /// The type of the initial response, once a valid one arrived in time.
    pub response_type: Option<u64>,
    /// The initial response's body, as the application answered it.
    pub initial: Option<Value>,
    pub latency: Option<Duration>,
    /// Why Discord would show the interaction as failed.
    pub failure: Option<String>,
    /// The message `@original` refers to, in its current state: the response's own message,
    /// or, for a button answered with type 6 or 7, the message the button is on.
    pub original: Option<FakeMessage>,
    pub ephemeral: bool,
    /// Bodies of the accepted edits of `@original`, in order (a first followup after a
    /// deferred response edits `@original` too, as on Discord, and is listed here).
    pub edits: Vec<Value>,
    /// Followup messages, in their current state.
    pub followups: Vec<FakeMessage>,
}

impl FakeInteraction {
    pub fn content(&self) -> &str {
        self.original.as_ref().map_or("", |m| m.content())
    }

    pub fn embeds(&self) -> Vec<Value> {
        self.original
            .as_ref()
            .and_then(|m| m.body["embeds"].as_array().cloned())
            .unwrap_or_default()
    }

    pub fn components(&self) -> Vec<Value> {
        self.original
            .as_ref()
            .and_then(|m| m.body["components"].as_array().cloned())
            .unwrap_or_default()
    }

    pub fn custom_ids(&self) -> Vec<String> {
        self.original
            .as_ref()
            .map(FakeMessage::custom_ids)
            .unwrap_or_default()
    }

    /// A valid initial response arrived in time.
    pub fn acknowledged(&self) -> bool {
        self.response_type.is_some()
    }
}

struct InteractionState {
    id: String,
    token: String,
    kind: u64,
    user_id: String,
    channel_id: String,
    payload: Value,
    /// For a button: the message it is on.
    source_message: Option<String>,
    /// When it was built, then when it was sent: the token lives from then.
    issued: Instant,
    /// Sent, and its answer not read yet.
    in_flight: bool,
    /// Sent over the Gateway: answered by a callback, its 3 s from the first dispatch.
    via_gateway: bool,
    response_type: Option<u64>,
    initial: Option<Value>,
    latency: Option<Duration>,
    failure: Option<String>,
    /// The id of the message `@original` refers to.
    original: Option<String>,
    ephemeral: bool,
    edits: Vec<Value>,
    followups: Vec<String>,
}

impl InteractionState {
    fn view(&self, messages: &[FakeMessage]) -> FakeInteraction {
        let find = |id: &str| messages.iter().find(|m| m.id == id).cloned();
        FakeInteraction {
            id: self.id.clone(),
            token: self.token.clone(),
            kind: self.kind,
            user_id: self.user_id.clone(),
            channel_id: self.channel_id.clone(),
            payload: self.payload.clone(),
            response_type: self.response_type,
            initial: self.initial.clone(),
            latency: self.latency,
            failure: self.failure.clone(),
            original: self.original.as_deref().and_then(find),
            ephemeral: self.ephemeral,
            edits: self.edits.clone(),
            followups: self.followups.iter().filter_map(|id| find(id)).collect(),
        }
    }
}

fn new_signing_key(port: u16) -> ed25519_dalek::SigningKey {
    use sha2::Digest;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = sha2::Sha256::digest(format!("{port}:{nanos}:{}", std::process::id()));
    ed25519_dalek::SigningKey::from_bytes(&seed.into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Interaction tokens look like Discord's: URL-safe base64 around the interaction's id.
fn new_token(id: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = hex(&sha2::Sha256::digest(format!("{id}:{nanos}")));
    let secret2 = hex(&sha2::Sha256::digest(&secret));
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("interaction:{id}:{secret}{secret2}"))
}

fn discord_user(id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "username": name.to_lowercase().replace(' ', "_"),
        "global_name": name,
        "avatar": null,
        "avatar_decoration_data": null,
        "discriminator": "0",
        "public_flags": 0,
        "clan": null,
    })
}

/// What a member of a guild may do (Administrator aside): view, send, read history, use
/// application commands.
const MEMBER_PERMISSIONS: &str = "2248473465835073";
/// What the application may do in the channel.
const APP_PERMISSIONS: &str = "562949953601536";
/// Discord's upload limit for a server without boosts (10 MiB).
const ATTACHMENT_SIZE_LIMIT: u64 = 10 * 1024 * 1024;

fn role_id(st: &mut State, role: &str) -> String {
    if parse_snowflake(role).is_some() {
        return role.to_string();
    }
    if let Some(id) = st.roles.get(role) {
        return id.clone();
    }
    let id = st.next_snowflake();
    st.roles.insert(role.to_string(), id.clone());
    id
}

/// The fields every interaction from a guild channel carries.
fn interaction_payload(
    st: &mut State,
    kind: u64,
    id: &str,
    token: &str,
    user: &FakeUser,
    channel: &str,
) -> Value {
    let roles: Vec<String> = user.roles.iter().map(|r| role_id(st, r)).collect();
    let guild = GUILD_ID.to_string();
    json!({
        "id": id,
        "application_id": APPLICATION_ID,
        "type": kind,
        "token": token,
        "version": 1,
        "guild_id": guild,
        "guild": {"id": guild, "locale": "en-US", "features": []},
        "channel_id": channel,
        "channel": {
            "id": channel,
            "type": 0,
            "guild_id": guild,
            "name": "alerts",
            "position": 0,
            "flags": 0,
            "parent_id": null,
            "topic": null,
            "nsfw": false,
            "last_message_id": null,
            "rate_limit_per_user": 0,
            "permissions": MEMBER_PERMISSIONS,
        },
        "member": {
            "user": discord_user(&user.id, &user.name),
            "roles": roles,
            "permissions": MEMBER_PERMISSIONS,
            "nick": null,
            "avatar": null,
            "banner": null,
            "joined_at": "2025-01-15T09:30:00.000000+00:00",
            "premium_since": null,
            "deaf": false,
            "mute": false,
            "flags": 0,
            "pending": false,
            "communication_disabled_until": null,
            "unusual_dm_activity_until": null,
        },
        "locale": "en-US",
        "guild_locale": "en-US",
        "app_permissions": APP_PERMISSIONS,
        "entitlements": [],
        "authorizing_integration_owners": {"0": guild},
        "context": 0,
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
    })
}

/// The option type Discord would send for a value: the registered option's, else guessed.
fn option_type(registered: Option<&Value>, name: &str, value: &Value) -> u64 {
    let known = registered
        .and_then(|c| c["options"].as_array())
        .and_then(|opts| opts.iter().find(|o| o["name"] == name))
        .and_then(|o| o["type"].as_u64());
    known.unwrap_or(match value {
        Value::Bool(_) => 5,
        Value::Number(n) if n.is_i64() || n.is_u64() => 4,
        Value::Number(_) => 10,
        _ => 3,
    })
}

impl FakeDiscord {
    /// The application's id, which is also its bot user's.
    pub fn application_id(&self) -> &'static str {
        APPLICATION_ID
    }

    /// Makes a guild known: guild commands can be registered there.
    pub fn add_guild(&self, id: u64) {
        self.state().guilds.insert(id);
    }

    /// The public key that checks the fake's signatures: `discord.public_key`.
    pub fn public_key_hex(&self) -> String {
        hex(self.inner.shared.signing_key.verifying_key().as_bytes())
    }

    /// How long the fake waits for an interaction's first answer (3 s, as Discord).
    pub fn set_interaction_deadline(&self, deadline: Duration) {
        self.state().interaction_deadline = deadline;
    }

    /// How long interaction tokens work (15 minutes, as Discord).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().token_lifetime = lifetime;
    }

    /// The commands registered globally (None) or in a guild, as Discord answers them.
    pub fn registered_commands(&self, guild: Option<u64>) -> Vec<Value> {
        self.state()
            .commands
            .get(&guild)
            .cloned()
            .unwrap_or_default()
    }

    /// The id the fake gave a role name (a snowflake is its own id).
    pub fn role_id(&self, role: &str) -> String {
        role_id(&mut self.state(), role)
    }

    /// `user` takes no DMs from the bot (no shared server, or DMs closed): messages to their DM
    /// channel get 403, code 50007, as on Discord.
    pub fn refuse_dms(&self, user_id: &str) {
        self.state().dm_refusing.insert(user_id.to_string());
    }

    /// The DM channel the bot opened with `user_id`, if it did.
    pub fn dm_channel_of(&self, user_id: &str) -> Option<u64> {
        self.state()
            .dm_channels
            .get(user_id)
            .and_then(|c| c.parse().ok())
    }

    /// Every message sent to `user_id` in a DM, in order.
    pub fn dms_to(&self, user_id: &str) -> Vec<FakeMessage> {
        match self.dm_channel_of(user_id) {
            Some(c) => self.messages_in(c),
            None => Vec::new(),
        }
    }

    /// `user` clicks the button `custom_id` of message `message_id` in their DM with the bot:
    /// as Discord sends it, without `guild_id` and `member`, with a top-level `user`.
    pub fn dm_button_click(
        &self,
        message_id: &str,
        custom_id: &str,
        user: &FakeUser,
    ) -> Interaction {
        let channel = self
            .dm_channel_of(&user.id)
            .unwrap_or_else(|| panic!("the bot has no DM with {}", user.id));
        let message = self
            .state()
            .messages
            .iter()
            .find(|m| m.id == message_id)
            .cloned()
            .unwrap_or_else(|| panic!("no message {message_id} to click on"));
        assert_eq!(
            message.channel_id,
            channel.to_string(),
            "message {message_id} is not in {}'s DM",
            user.id
        );
        assert!(
            message.custom_ids().iter().any(|c| c == custom_id),
            "message {message_id} has no button {custom_id:?} (it has {:?})",
            message.custom_ids()
        );
        let (id, token) = {
            let mut st = self.state();
            let id = st.next_snowflake();
            let token = new_token(&id);
            (id, token)
        };
        let channel = channel.to_string();
        let body = json!({
            "id": id,
            "application_id": APPLICATION_ID,
            "type": 3,
            "token": token,
            "version": 1,
            "channel_id": channel,
            "channel": {
                "id": channel,
                "type": 1,
                "last_message_id": message_id,
                "flags": 0,
                "recipients": [discord_user(&user.id, &user.name)],
            },
            "user": discord_user(&user.id, &user.name),
            "locale": "en-US",
            "app_permissions": APP_PERMISSIONS,
            "entitlements": [],
            "authorizing_integration_owners": {"0": "0"},
            // BOT_DM
            "context": 1,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "data": {"custom_id": custom_id, "component_type": 2},
            "message": message.body,
        });
        let interaction = Interaction { id, token, body };
        self.record(&interaction, 3, &user.id, Some(message.id));
        interaction
    }

    /// Every message `user` sees in a channel: ephemeral ones only if they are theirs.
    pub fn messages_visible_to(&self, channel_id: u64, user_id: &str) -> Vec<FakeMessage> {
        self.messages_in(channel_id)
            .into_iter()
            .filter(|m| m.visible_to.as_deref().is_none_or(|u| u == user_id))
            .collect()
    }

    fn issue(&self, kind: u64, user: &FakeUser, channel: &str) -> (String, String, Value) {
        let mut st = self.state();
        if let Some(c) = parse_snowflake(channel) {
            // A person typed there, so the channel exists.
            st.channels.insert(c);
        }
        let id = st.next_snowflake();
        let token = new_token(&id);
        let payload = interaction_payload(&mut st, kind, &id, &token, user, channel);
        (id, token, payload)
    }

    fn record(&self, interaction: &Interaction, kind: u64, user: &str, source: Option<String>) {
        let mut st = self.state();
        st.interactions.push(InteractionState {
            id: interaction.id.clone(),
            token: interaction.token.clone(),
            kind,
            user_id: user.to_string(),
            channel_id: interaction.body["channel_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            payload: interaction.body.clone(),
            source_message: source,
            issued: Instant::now(),
            in_flight: false,
            via_gateway: false,
            response_type: None,
            initial: None,
            latency: None,
            failure: None,
            original: None,
            ephemeral: false,
            edits: Vec::new(),
            followups: Vec::new(),
        });
    }

    /// The PING Discord sends to check an Interactions Endpoint URL.
    pub fn ping(&self) -> Interaction {
        let (id, token) = {
            let mut st = self.state();
            let id = st.next_snowflake();
            let token = new_token(&id);
            (id, token)
        };
        let body = json!({
            "id": id,
            "application_id": APPLICATION_ID,
            "type": 1,
            "token": token,
            "version": 1,
            "user": discord_user("643945264868098049", "Discord"),
            "entitlements": [],
            "authorizing_integration_owners": {},
        });
        let interaction = Interaction { id, token, body };
        self.record(&interaction, 1, "643945264868098049", None);
        interaction
    }

    /// `/name option:value…` typed by `user` in `channel`. Option types are the registered
    /// command's (guild first, then global), else guessed from the JSON values.
    pub fn slash_command(
        &self,
        name: &str,
        options: &[(&str, Value)],
        user: &FakeUser,
        channel: u64,
    ) -> Interaction {
        let channel = channel.to_string();
        let (id, token, mut body) = self.issue(2, user, &channel);
        let (registered, guild) = {
            let st = self.state();
            let find = |g: Option<u64>| {
                st.commands
                    .get(&g)
                    .and_then(|list| list.iter().find(|c| c["name"] == name && c["type"] == 1))
                    .cloned()
            };
            match find(Some(GUILD_ID)) {
                Some(c) => (Some(c), true),
                None => (find(None), false),
            }
        };
        let command_id = match &registered {
            Some(c) => c["id"].as_str().unwrap_or_default().to_string(),
            None => self.state().next_snowflake(),
        };
        let mut data = json!({"id": command_id, "name": name, "type": 1});
        if guild {
            data["guild_id"] = json!(GUILD_ID.to_string());
        }
        if !options.is_empty() {
            data["options"] = Value::Array(
                options
                    .iter()
                    .map(|(n, v)| {
                        json!({"name": n, "type": option_type(registered.as_ref(), n, v), "value": v})
                    })
                    .collect(),
            );
        }
        body["data"] = data;
        let interaction = Interaction { id, token, body };
        self.record(&interaction, 2, &user.id, None);
        interaction
    }

    /// `user` clicks the button `custom_id` of message `message_id` in `channel`. Panics when
    /// Discord could not send that click: no such message or button, or an ephemeral message
    /// of someone else.
    pub fn button_click(
        &self,
        message_id: &str,
        custom_id: &str,
        user: &FakeUser,
        channel: u64,
    ) -> Interaction {
        let message = self
            .state()
            .messages
            .iter()
            .find(|m| m.id == message_id)
            .cloned()
            .unwrap_or_else(|| panic!("no message {message_id} to click on"));
        assert_eq!(
            message.channel_id,
            channel.to_string(),
            "message {message_id} is not in channel {channel}"
        );
        assert!(
            message.custom_ids().iter().any(|c| c == custom_id),
            "message {message_id} has no button {custom_id:?} (it has {:?})",
            message.custom_ids()
        );
        if let Some(only) = &message.visible_to {
            assert_eq!(
                only, &user.id,
                "message {message_id} is ephemeral: only {only} sees it"
            );
        }
        let (id, token, mut body) = self.issue(3, user, &channel.to_string());
        body["data"] = json!({"custom_id": custom_id, "component_type": 2});
        body["message"] = message.body.clone();
        let interaction = Interaction { id, token, body };
        self.record(&interaction, 3, &user.id, Some(message.id));
        interaction
    }

    /// Presses Confirm on the prompt that answered `sent` (a slash command), as `user` in
    /// `channel`; returns the click.
    pub async fn confirm(&self, url: &str, sent: &Sent, user: &FakeUser, channel: u64) -> Sent {
        let prompt = self
            .interaction(&sent.id)
            .original
            .unwrap_or_else(|| panic!("no prompt answered the command: {}", sent.body));
        let confirm = prompt
            .custom_ids()
            .into_iter()
            .find(|c| c.ends_with(":confirm"))
            .unwrap_or_else(|| panic!("no Confirm button on {}", prompt.content()));
        self.send_interaction(url, self.button_click(&prompt.id, &confirm, user, channel))
            .await
    }

    /// Sends an interaction to an application's endpoint as Discord does: signed, with
    /// Discord's headers, and the answer held to Discord's deadline and rules.
    pub async fn send_interaction(&self, url: &str, interaction: Interaction) -> Sent {
        use ed25519_dalek::Signer;
        let body = interaction.body.to_string();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let signature = hex(&self
            .inner
            .shared
            .signing_key
            .sign(format!("{timestamp}{body}").as_bytes())
            .to_bytes());
        {
            let mut st = self.state();
            let i = st
                .interactions
                .iter_mut()
                .find(|i| i.id == interaction.id)
                .expect("an interaction the fake built");
            i.issued = Instant::now();
            i.in_flight = true;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let started = Instant::now();
        let answer = client
            .post(url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                "Discord-Interactions/1.0 (+https://discord.com)",
            )
            .header("x-signature-ed25519", &signature)
            .header("x-signature-timestamp", &timestamp)
            .body(body)
            .send()
            .await;
        let (status, content_type, text) = match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let ct = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                (status, ct, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, String::new(), e.to_string()),
        };
        let latency = started.elapsed();
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let failure = {
            let mut st = self.state();
            let index = st
                .interactions
                .iter()
                .position(|i| i.id == interaction.id)
                .unwrap();
            let failure = accept_initial(
                &mut st,
                index,
                status,
                &content_type,
                json.as_ref(),
                latency,
            );
            let i = &mut st.interactions[index];
            i.in_flight = false;
            i.latency = Some(latency);
            i.initial = json.clone();
            i.failure = failure.clone();
            failure
        };
        Sent {
            status,
            body: json.unwrap_or(Value::String(text)),
            latency,
            token: interaction.token,
            id: interaction.id,
            failure,
        }
    }

    pub fn try_interaction(&self, token_or_id: &str) -> Option<FakeInteraction> {
        let st = self.state();
        st.interactions
            .iter()
            .find(|i| i.id == token_or_id || i.token == token_or_id)
            .map(|i| i.view(&st.messages))
    }

    /// An interaction by its token or id; panics if the fake did not build it.
    pub fn interaction(&self, token_or_id: &str) -> FakeInteraction {
        self.try_interaction(token_or_id)
            .unwrap_or_else(|| panic!("the fake built no interaction {token_or_id}"))
    }

    /// Waits until the interaction satisfies `f`; panics after `timeout` with its state.
    pub async fn wait_for_interaction(
        &self,
        token_or_id: &str,
        timeout: Duration,
        f: impl Fn(&FakeInteraction) -> bool,
    ) -> FakeInteraction {
        let deadline = Instant::now() + timeout;
        loop {
            let i = self.interaction(token_or_id);
            if f(&i) {
                return i;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for interaction {token_or_id}: {i:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn type_of(v: &Value) -> u64 {
    v.get("type").and_then(Value::as_u64).unwrap_or(0)
}

/// Checks the application's answer to an interaction and applies it; answers why Discord
/// would show the interaction as failed, if it would.
fn accept_initial(
    st: &mut State,
    index: usize,
    status: u16,
    content_type: &str,
    body: Option<&Value>,
    latency: Duration,
) -> Option<String> {
    if status == 0 {
        return Some("The application did not respond: it could not be reached".into());
    }
    if latency > st.interaction_deadline {
        return Some(format!(
            "The application did not respond: it answered after {latency:?}, Discord waits {:?}",
            st.interaction_deadline
        ));
    }
    if status != 200 {
        return Some(format!(
            "This interaction failed: the application answered {status}"
        ));
    }
    if !content_type.starts_with("application/json") {
        return Some(format!(
            "This interaction failed: the answer's content type is {content_type:?}, not application/json"
        ));
    }
    let Some(body) = body else {
        return Some("This interaction failed: the answer is not JSON".into());
    };
    let kind = st.interactions[index].kind;
    let response = type_of(body);
    let schema = match (kind, response) {
        (1, 1) => {
            st.interactions[index].response_type = Some(1);
            return None;
        }
        (1, _) => return Some("This interaction failed: a PING is answered {\"type\": 1}".into()),
        (_, 4) | (_, 5) => CALLBACK_MESSAGE_SCHEMA,
        (3, 6) | (3, 7) => CALLBACK_UPDATE_SCHEMA,
        (_, 6) | (_, 7) => {
            return Some(format!(
                "This interaction failed: response type {response} is only for components"
            ))
        }
        (_, 1) => return Some("This interaction failed: PONG answers only a PING".into()),
        (_, other) => {
            return Some(format!(
                "fake Discord: response type {other} is not implemented (only 4, 5, 6, 7)"
            ))
        }
    };
    let mut errors = FormErrors::default();
    validate_schema(schema, st.reject_unknown_fields, body, &[], &mut errors, 0);
    if !errors.is_empty() {
        // `data` is `oneOf: [null, …]`: say what is wrong inside it rather than "no choice".
        let data_schema = match response {
            4 | 5 => "IncomingWebhookInteractionRequest",
            _ => "IncomingWebhookUpdateForInteractionCallbackRequestPartial",
        };
        if let Some(data) = body.get("data").filter(|d| d.is_object()) {
            let mut inner = FormErrors::default();
            let path = ["data".to_string()];
            validate_schema(
                data_schema,
                st.reject_unknown_fields,
                data,
                &path,
                &mut inner,
                0,
            );
            if !inner.is_empty() {
                errors = inner;
            }
        }
        return Some(format!("This interaction failed: {}", errors.answer_body()));
    }
    let data = body
        .get("data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let data_path = ["data".to_string()];
    let flags = data.get("flags").and_then(Value::as_u64).unwrap_or(0);
    let source = st.interactions[index].source_message.clone();
    match response {
        4 | 5 => {
            let ephemeral = flags & FLAG_EPHEMERAL != 0;
            let mut view = data.clone();
            if response == 5 {
                // A deferral shows "thinking…"; content comes later.
                view = Map::new();
                view.insert(
                    "flags".into(),
                    json!(FLAG_LOADING | (flags & FLAG_EPHEMERAL)),
                );
            } else {
                check_limits(&view, &mut errors);
                prefix_errors(&mut errors, &data_path);
                if !errors.is_empty() {
                    return Some(format!("This interaction failed: {}", errors.answer_body()));
                }
                if is_empty_message(&view) {
                    return Some(
                        "This interaction failed: Cannot send an empty message (50006)".into(),
                    );
                }
            }
            let id = create_interaction_message(st, index, &view, ephemeral, None);
            let i = &mut st.interactions[index];
            i.original = Some(id);
            i.ephemeral = ephemeral;
        }
        _ => {
            let source = source.expect("a component interaction has its message");
            let Some(m) = st.messages.iter().position(|m| m.id == source) else {
                return Some("This interaction failed: the message is gone".into());
            };
            if response == 7 {
                let view = edited_view(&st.messages[m].body, &data);
                check_limits(&view, &mut errors);
                prefix_errors(&mut errors, &data_path);
                if !errors.is_empty() {
                    return Some(format!("This interaction failed: {}", errors.answer_body()));
                }
                if is_empty_message(&view) {
                    return Some(
                        "This interaction failed: Cannot send an empty message (50006)".into(),
                    );
                }
                edit_message(st, m, &data);
            }
            let ephemeral = st.messages[m].is_ephemeral();
            let i = &mut st.interactions[index];
            i.original = Some(source);
            i.ephemeral = ephemeral;
        }
    }
    st.interactions[index].response_type = Some(response);
    None
}

/// Errors found on a part of a body are reported under that part's path.
fn prefix_errors(errors: &mut FormErrors, prefix: &[String]) {
    if errors.is_empty() || prefix.is_empty() {
        return;
    }
    let mut tree = std::mem::take(&mut errors.tree);
    for seg in prefix.iter().rev() {
        let mut outer = Map::new();
        outer.insert(seg.clone(), Value::Object(tree));
        tree = outer;
    }
    errors.tree = tree;
}

/// A message an interaction created: its response, or a followup.
fn create_interaction_message(
    st: &mut State,
    index: usize,
    req: &Map<String, Value>,
    ephemeral: bool,
    original_response: Option<&str>,
) -> String {
    let id = st.next_snowflake();
    let i = &st.interactions[index];
    let user = i.payload["member"]["user"].clone();
    let mut metadata = json!({
        "id": i.id,
        "type": i.kind,
        "user": user,
        "authorizing_integration_owners": {"0": GUILD_ID.to_string()},
    });
    if let Some(source) = &i.source_message {
        metadata["interacted_message_id"] = json!(source);
    }
    if let Some(o) = original_response {
        metadata["original_response_message_id"] = json!(o);
    }
    let kind = match (original_response, i.kind) {
        (Some(_), _) => 0,
        // A reply to a slash command, or to a click.
        (None, 2) => 20,
        (None, _) => 19,
    };
    let channel = i.channel_id.clone();
    let flags = req.get("flags").and_then(Value::as_u64).unwrap_or(0)
        | if ephemeral { FLAG_EPHEMERAL } else { 0 };
    let visible_to = ephemeral.then(|| i.user_id.clone());
    let interaction_id = i.id.clone();
    let body = json!({
        "type": kind,
        "channel_id": channel,
        "content": req.get("content").and_then(Value::as_str).unwrap_or(""),
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": normalize_embeds(req.get("embeds")),
        "timestamp": now_timestamp(),
        "edited_timestamp": null,
        "flags": flags,
        "components": normalize_components(req.get("components")),
        "id": id,
        "author": author(),
        "pinned": false,
        "mention_everyone": false,
        "tts": false,
        "webhook_id": APPLICATION_ID,
        "application_id": APPLICATION_ID,
        "interaction_metadata": metadata,
    });
    st.messages.push(FakeMessage {
        id: id.clone(),
        channel_id: channel,
        body,
        edits: 0,
        visible_to,
        interaction_id: Some(interaction_id),
        files: Vec::new(),
    });
    id
}

/// The interaction a webhook token belongs to, if Discord would still take requests for it.
fn webhook_interaction(st: &State, app: &str, token: &str) -> Result<usize, Answer> {
    let unknown = || Answer::error(404, "Unknown Webhook", 10015);
    if app != APPLICATION_ID {
        return Err(unknown());
    }
    let index = st
        .interactions
        .iter()
        .position(|i| i.token == token)
        .ok_or_else(unknown)?;
    let i = &st.interactions[index];
    if i.issued.elapsed() > st.token_lifetime || i.response_type.is_none() || i.kind == 1 {
        return Err(unknown());
    }
    Ok(index)
}

fn apply_original(
    st: &mut State,
    app: &str,
    token: &str,
    write: bool,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let index = match webhook_interaction(st, app, token) {
        Ok(i) => i,
        Err(a) => return a,
    };
    let Some(m) = st.interactions[index]
        .original
        .as_ref()
        .and_then(|id| st.messages.iter().position(|m| &m.id == id))
    else {
        return Answer::error(404, "Unknown Message", 10008);
    };
    if !write {
        return Answer::json(200, st.messages[m].body.clone());
    }
    let (request, uploads) = if is_multipart(headers) {
        match upload_body(st, headers, body, WEBHOOK_EDIT_SCHEMA) {
            Ok(r) => r,
            Err(a) => return a,
        }
    } else {
        match schema_body(st, headers, body, WEBHOOK_EDIT_SCHEMA) {
            Ok(r) => (r, Vec::new()),
            Err(a) => return a,
        }
    };
    let req = request.as_object().expect("the schema requires an object");
    edit_webhook_message(st, index, m, req, uploads)
}

/// A `files[n]` part of a multipart request.
struct Upload {
    index: usize,
    filename: String,
    content_type: Option<String>,
    content: Vec<u8>,
}

fn is_multipart(headers: &HeaderMap) -> bool {
    header(headers, "content-type").is_some_and(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("multipart/form-data")
    })
}

/// A `multipart/form-data` body as Discord reads one with files: the message as JSON in the
/// `payload_json` part (checked against `schema`), and files in `files[n]` parts.
fn upload_body(
    st: &State,
    headers: &HeaderMap,
    body: &Bytes,
    schema: &str,
) -> Result<(Value, Vec<Upload>), Answer> {
    let content_type = header(headers, "content-type").unwrap_or("");
    let parts = parse_multipart(content_type, body).map_err(|why| {
        Answer::error(
            400,
            &format!("fake Discord: malformed multipart body: {why}"),
            0,
        )
    })?;
    let mut payload = None;
    let mut uploads: Vec<Upload> = Vec::new();
    for part in parts {
        if part.name == "payload_json" {
            payload = Some(part.data);
            continue;
        }
        let index = part
            .name
            .strip_prefix("files[")
            .and_then(|n| n.strip_suffix(']'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<usize>().ok());
        let Some(index) = index else {
            return Err(Answer::error(
                400,
                &format!(
                    "fake Discord: unexpected multipart part \"{}\" (only payload_json and files[n] are implemented)",
                    part.name
                ),
                0,
            ));
        };
        // Discord refuses an upload over the limit before it reads the rest.
        if part.data.len() > MAX_FILE_BYTES {
            return Err(Answer::error(413, "Request entity too large", 40005));
        }
        let Some(filename) = part.filename.filter(|f| !f.is_empty()) else {
            return Err(Answer::error(
                400,
                &format!("fake Discord: files[{index}] has no filename"),
                0,
            ));
        };
        if uploads.iter().any(|u| u.index == index) {
            return Err(Answer::error(
                400,
                &format!("fake Discord: files[{index}] is sent twice"),
                0,
            ));
        }
        uploads.push(Upload {
            index,
            filename,
            content_type: part.content_type,
            content: part.data,
        });
    }
    if uploads.len() > MAX_FILES {
        let mut errors = FormErrors::default();
        errors.add(
            &["files"],
            "BASE_TYPE_MAX_LENGTH",
            format!("Must be {MAX_FILES} or fewer in length."),
        );
        return Err(errors.answer());
    }
    let Some(payload) = payload else {
        return Err(Answer::error(
            400,
            "fake Discord: a multipart body needs a payload_json part (Discord would also read plain form fields; that is not implemented)",
            0,
        ));
    };
    let request: Value = serde_json::from_slice(&payload)
        .map_err(|_| Answer::error(400, "The request body contains invalid JSON.", 50109))?;
    let mut errors = FormErrors::default();
    validate_schema(
        schema,
        st.reject_unknown_fields,
        &request,
        &[],
        &mut errors,
        0,
    );
    if !errors.is_empty() {
        return Err(errors.answer());
    }
    Ok((request, uploads))
}

/// One part of a `multipart/form-data` body.
struct FormPart {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

/// RFC 7578: parts between `--boundary` lines, each with its headers, a blank line and its
/// bytes; the last boundary ends with `--`.
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<FormPart>, String> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty())
        .ok_or("no boundary in the Content-Type")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let find = |from: usize, needle: &[u8]| {
        body.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut at = find(0, &delimiter).ok_or("the boundary never appears")? + delimiter.len();
    let next_delimiter = [b"\r\n".as_slice(), &delimiter].concat();
    let mut parts = Vec::new();
    loop {
        match body.get(at..at + 2) {
            Some(b"--") => return Ok(parts),
            Some(b"\r\n") => at += 2,
            _ => return Err("a boundary is not followed by CRLF or --".into()),
        }
        let end = find(at, &next_delimiter).ok_or("a part is not closed by a boundary")?;
        let part = &body[at..end];
        let split = part
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("a part has no blank line after its headers")?;
        let head = String::from_utf8_lossy(&part[..split]);
        let data = part[split + 4..].to_vec();
        let (mut name, mut filename, mut part_type) = (None, None, None);
        for line in head.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("content-type") {
                part_type = Some(value.trim().to_string());
            } else if key.trim().eq_ignore_ascii_case("content-disposition") {
                for param in value.split(';').skip(1) {
                    if let Some((k, v)) = param.trim().split_once('=') {
                        let v = v.trim().trim_matches('"').to_string();
                        match k.trim() {
                            "name" => name = Some(v),
                            "filename" => filename = Some(v),
                            _ => {}
                        }
                    }
                }
            }
        }
        parts.push(FormPart {
            name: name.ok_or("a part has no name in its Content-Disposition")?,
            filename,
            content_type: part_type,
            data,
        });
        at = end + next_delimiter.len();
    }
}

/// The message's attachments after an edit: those `attachments` keeps (existing ones by id,
/// new ones by the `n` of their `files[n]` part), or, without `attachments`, the old ones and
/// every new file.
fn edited_attachments(
    st: &mut State,
    m: usize,
    req: &Map<String, Value>,
    uploads: Vec<Upload>,
) -> Result<Vec<FakeFile>, Answer> {
    let existing = st.messages[m].files.clone();
    let listed = match req.get("attachments") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(v) => Some(v.as_array().cloned().unwrap_or_default()),
    };
    let Some(listed) = listed else {
        let mut files = existing;
        for u in uploads {
            files.push(FakeFile {
                id: st.next_snowflake(),
                filename: u.filename,
                content_type: u.content_type,
                content: u.content,
            });
        }
        return Ok(files);
    };
    let mut errors = FormErrors::default();
    let mut files = Vec::new();
    let mut used = HashSet::new();
    for (i, a) in listed.iter().enumerate() {
        let id = a.get("id").and_then(Value::as_str).unwrap_or("");
        let upload = id
            .parse::<usize>()
            .ok()
            .and_then(|n| uploads.iter().position(|u| u.index == n));
        if let Some(u) = upload {
            used.insert(u);
            let u = &uploads[u];
            files.push(FakeFile {
                id: st.next_snowflake(),
                filename: a
                    .get("filename")
                    .and_then(Value::as_str)
                    .unwrap_or(&u.filename)
                    .to_string(),
                content_type: u.content_type.clone(),
                content: u.content.clone(),
            });
        } else if let Some(old) = existing.iter().find(|f| f.id == id) {
            files.push(old.clone());
        } else {
            errors.add(
                &["attachments".to_string(), i.to_string(), "id".to_string()],
                "ATTACHMENT_NOT_FOUND",
                format!("Unknown attachment {id}: no files[{id}] part and no such attachment on the message."),
            );
        }
    }
    if let Some(u) = uploads.iter().enumerate().find(|(i, _)| !used.contains(i)) {
        errors.add(
            &["attachments"],
            "ATTACHMENT_NOT_LISTED",
            format!(
                "fake Discord: files[{}] is not listed in attachments, so Discord would drop it",
                u.1.index
            ),
        );
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors.answer())
    }
}

/// An attachment object as Discord answers it.
fn attachment_json(channel: &str, f: &FakeFile) -> Value {
    let url = format!(
        "https://cdn.discordapp.com/attachments/{channel}/{}/{}",
        f.id, f.filename
    );
    let mut a = json!({
        "id": f.id,
        "filename": f.filename,
        "size": f.content.len(),
        "url": url,
        "proxy_url": url.replace("cdn.discordapp.com", "media.discordapp.net"),
    });
    if let Some(t) = &f.content_type {
        a["content_type"] = json!(t);
    }
    a
}

/// Applies an edit of an interaction's message; the message stays as ephemeral as it was, and
/// stops "thinking".
fn edit_webhook_message(
    st: &mut State,
    index: usize,
    m: usize,
    req: &Map<String, Value>,
    uploads: Vec<Upload>,
) -> Answer {
    let mut errors = FormErrors::default();
    let mut req = req.clone();
    let files = match edited_attachments(st, m, &req, uploads) {
        Ok(f) => f,
        Err(a) => return a,
    };
    let channel = st.messages[m].channel_id.clone();
    let attachments = Value::Array(files.iter().map(|f| attachment_json(&channel, f)).collect());
    let kept = st.messages[m].flags() & FLAG_EPHEMERAL;
    let asked = req.get("flags").and_then(Value::as_u64).unwrap_or(0);
    req.insert(
        "flags".into(),
        json!((asked & !(FLAG_EPHEMERAL | FLAG_LOADING)) | kept),
    );
    let mut view = edited_view(&st.messages[m].body, &req);
    view.insert("attachments".into(), attachments.clone());
    check_limits(&view, &mut errors);
    if !errors.is_empty() {
        return errors.answer();
    }
    if is_empty_message(&view) {
        return Answer::error(400, "Cannot send an empty message", 50006);
    }
    st.messages[m].body["attachments"] = attachments;
    st.messages[m].files = files;
    let answer = edit_message(st, m, &req);
    st.interactions[index].edits.push(Value::Object(req));
    answer
}

fn apply_followup(
    st: &mut State,
    app: &str,
    token: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let index = match webhook_interaction(st, app, token) {
        Ok(i) => i,
        Err(a) => return a,
    };
    let request = match schema_body(st, headers, body, WEBHOOK_CREATE_SCHEMA) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let req = request.as_object().expect("the schema requires an object");
    // After a deferral, the first followup fills the "thinking…" message, which keeps the
    // deferral's ephemerality.
    let loading = st.interactions[index]
        .original
        .as_ref()
        .and_then(|id| st.messages.iter().position(|m| &m.id == id))
        .filter(|&m| st.messages[m].flags() & FLAG_LOADING != 0);
    if let Some(m) = loading {
        return edit_webhook_message(st, index, m, req, Vec::new());
    }
    let view = req.clone();
    let mut errors = FormErrors::default();
    check_limits(&view, &mut errors);
    if !errors.is_empty() {
        return errors.answer();
    }
    if is_empty_message(&view) {
        return Answer::error(400, "Cannot send an empty message", 50006);
    }
    let ephemeral = req.get("flags").and_then(Value::as_u64).unwrap_or(0) & FLAG_EPHEMERAL != 0;
    let original = st.interactions[index].original.clone();
    let id = create_interaction_message(st, index, req, ephemeral, original.as_deref());
    st.interactions[index].followups.push(id.clone());
    let m = st.messages.iter().find(|m| m.id == id).unwrap();
    Answer::json(200, m.body.clone())
}

// --- Application commands

/// Fields of Discord's documented application command that the spec's request schemas lack.
fn documented_command_fields(schema: &str) -> Vec<(&'static str, Value)> {
    // Option fields that do not apply to an option's type are accepted only unset: serenity
    // sends them all (empty), and Discord accepts that, but refuses e.g. autocomplete on a
    // boolean.
    let unset = json!({"anyOf": [
        {"type": "null"},
        {"type": "array", "maxItems": 0},
        {"const": false},
    ]});
    match schema {
        "ApplicationCommandUpdateRequest" => vec![("nsfw", json!({"type": ["boolean", "null"]}))],
        s if s.starts_with("ApplicationCommand") && s.ends_with("Option") => [
            "options",
            "choices",
            "channel_types",
            "min_value",
            "max_value",
            "min_length",
            "max_length",
            "autocomplete",
            "required",
        ]
        .into_iter()
        .map(|f| (f, unset.clone()))
        .collect(),
        _ => Vec::new(),
    }
}

/// The schema of an application command option, by its `type`.
fn option_schema(kind: u64) -> Option<&'static str> {
    Some(match kind {
        1 => "ApplicationCommandSubcommandOption",
        2 => "ApplicationCommandSubcommandGroupOption",
        3 => "ApplicationCommandStringOption",
        4 => "ApplicationCommandIntegerOption",
        5 => "ApplicationCommandBooleanOption",
        6 => "ApplicationCommandUserOption",
        7 => "ApplicationCommandChannelOption",
        8 => "ApplicationCommandRoleOption",
        9 => "ApplicationCommandMentionableOption",
        10 => "ApplicationCommandNumberOption",
        11 => "ApplicationCommandAttachmentOption",
        _ => return None,
    })
}

/// Discord's rule for command and option names: 1 to 32 letters, digits, `-` or `_`, in lower
/// case where the letter has one.
fn valid_command_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=32).contains(&n)
        && name.chars().all(|c| {
            (c.is_alphanumeric() || c == '-' || c == '_') && c.to_lowercase().eq(std::iter::once(c))
        })
}

fn check_options(options: &[Value], path: &[String], errors: &mut FormErrors) -> usize {
    let mut size = 0;
    let mut names = HashSet::new();
    let mut optional_seen = false;
    for (j, o) in options.iter().enumerate() {
        let p = with(path, &["options", &j.to_string()]);
        let name = o["name"].as_str().unwrap_or("");
        size += name.chars().count() + chars(o.get("description"));
        if !valid_command_name(name) {
            errors.add(
                &with(&p, &["name"]),
                "APPLICATION_COMMAND_INVALID_NAME",
                "Command name is invalid",
            );
        }
        if !names.insert(name.to_string()) {
            errors.add(
                &with(&p, &["name"]),
                "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                "Option names must be unique",
            );
        }
        let required = o["required"].as_bool() == Some(true);
        if required && optional_seen {
            errors.add(
                &p,
                "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                "Required options must be placed before non-required options",
            );
        }
        if !required {
            optional_seen = true;
        }
        for (k, c) in o["choices"].as_array().into_iter().flatten().enumerate() {
            size += chars(c.get("name"));
            if let Some(v) = c["value"].as_str() {
                size += v.chars().count();
                if v.chars().count() > MAX_CHOICE_VALUE_CHARS {
                    errors.add(
                        &with(&p, &["choices", &k.to_string(), "value"]),
                        "BASE_TYPE_MAX_LENGTH",
                        format!("Must be {MAX_CHOICE_VALUE_CHARS} or fewer in length."),
                    );
                }
            }
        }
        if let Some(sub) = o["options"].as_array() {
            size += check_options(sub, &p, errors);
        }
    }
    size
}

/// The documented rules the spec does not carry, for a bulk overwrite.
fn check_commands(list: &[Value], errors: &mut FormErrors) -> Option<Answer> {
    let chat_input = list.iter().filter(|c| c["type"].as_u64().unwrap_or(1) == 1);
    if chat_input.count() > MAX_COMMANDS {
        return Some(Answer::error(
            400,
            &format!("Maximum number of application commands reached ({MAX_COMMANDS})"),
            30032,
        ));
    }
    let mut names = HashSet::new();
    for (i, c) in list.iter().enumerate() {
        let p = vec![i.to_string()];
        let kind = c["type"].as_u64().unwrap_or(1);
        let name = c["name"].as_str().unwrap_or("");
        if kind == 1 {
            if !valid_command_name(name) {
                errors.add(
                    &with(&p, &["name"]),
                    "APPLICATION_COMMAND_INVALID_NAME",
                    "Command name is invalid",
                );
            }
            if c["description"].as_str().is_none_or(str::is_empty) {
                errors.add(
                    &with(&p, &["description"]),
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                );
            }
        }
        if !names.insert((kind, name.to_string())) {
            errors.add(
                &with(&p, &["name"]),
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                "Application command names must be unique",
            );
        }
        let options = c["options"].as_array().cloned().unwrap_or_default();
        let size = name.chars().count()
            + chars(c.get("description"))
            + check_options(&options, &p, errors);
        if size > MAX_COMMAND_SIZE {
            errors.add(
                &p,
                "APPLICATION_COMMAND_TOO_LARGE",
                format!("Command exceeds maximum size ({MAX_COMMAND_SIZE})"),
            );
        }
    }
    None
}

/// An option as Discord answers it: unset fields left out.
fn normalize_option(o: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in o.as_object().into_iter().flatten() {
        let unset = v.is_null()
            || v.as_array().is_some_and(Vec::is_empty)
            || v.as_object().is_some_and(Map::is_empty)
            || (v == &json!(false) && (k == "required" || k == "autocomplete"));
        if unset {
            continue;
        }
        let v = if k == "options" {
            Value::Array(v.as_array().unwrap().iter().map(normalize_option).collect())
        } else {
            v.clone()
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

fn command_answer(c: &Value, id: String, version: String, guild: Option<u64>) -> Value {
    let kind = c["type"].as_u64().unwrap_or(1);
    let mut out = json!({
        "id": id,
        "application_id": APPLICATION_ID,
        "version": version,
        "default_member_permissions": c.get("default_member_permissions")
            .and_then(|p| p.as_u64().map(|n| n.to_string()).or_else(|| p.as_str().map(str::to_string))),
        "type": kind,
        "name": c["name"],
        "description": c["description"].as_str().unwrap_or(""),
        "nsfw": c["nsfw"].as_bool().unwrap_or(false),
        "integration_types": c.get("integration_types").filter(|v| !v.is_null()).cloned().unwrap_or(json!([0])),
        "contexts": c.get("contexts").cloned().unwrap_or(Value::Null),
    });
    if let Some(options) = c["options"].as_array().filter(|o| !o.is_empty()) {
        out["options"] = Value::Array(options.iter().map(normalize_option).collect());
    }
    match guild {
        Some(g) => out["guild_id"] = json!(g.to_string()),
        None => out["dm_permission"] = json!(c["dm_permission"].as_bool().unwrap_or(true)),
    }
    for key in ["name_localizations", "description_localizations"] {
        if let Some(v) = c
            .get(key)
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        {
            out[key] = v.clone();
        }
    }
    out
}

fn apply_commands(
    st: &mut State,
    app: &str,
    guild: Option<&str>,
    write: bool,
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    let missing_access = || Answer::error(403, "Missing Access", 50001);
    if app != APPLICATION_ID {
        return missing_access();
    }
    let guild = match guild {
        None => None,
        Some(g) => match parse_snowflake(g) {
            Some(id) if st.guilds.contains(&id) => Some(id),
            Some(_) => return missing_access(),
            None => {
                let mut errors = FormErrors::default();
                errors.add(
                    &["guild_id"],
                    "NUMBER_TYPE_COERCE",
                    format!("Value \"{g}\" is not snowflake."),
                );
                return errors.answer();
            }
        },
    };
    if !write {
        return Answer::json(
            200,
            Value::Array(st.commands.get(&guild).cloned().unwrap_or_default()),
        );
    }
    let request = match schema_body(st, headers, body, COMMANDS_SCHEMA) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let mut errors = FormErrors::default();
    let list = request.as_array().cloned().unwrap_or_default();
    if let Some(refused) = check_commands(&list, &mut errors) {
        return refused;
    }
    if !errors.is_empty() {
        return errors.answer();
    }
    // A command keeps its id when one of its name and type was there before.
    let old = st.commands.remove(&guild).unwrap_or_default();
    let mut now = Vec::new();
    for c in &list {
        let kind = c["type"].as_u64().unwrap_or(1);
        let id = old
            .iter()
            .find(|o| o["name"] == c["name"] && o["type"].as_u64() == Some(kind))
            .and_then(|o| o["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| st.next_snowflake());
        let version = st.next_snowflake();
        now.push(command_answer(c, id, version, guild));
    }
    st.commands.insert(guild, now.clone());
    Answer::json(200, Value::Array(now))
}

/// The JSON body of a request, valid against the spec's `schema`, or Discord's answer to a
/// body it refuses.
fn schema_body(
    st: &State,
    headers: &HeaderMap,
    body: &Bytes,
    schema: &str,
) -> Result<Value, Answer> {
    let request = json_body(headers, body)?;
    let mut errors = FormErrors::default();
    validate_schema(
        schema,
        st.reject_unknown_fields,
        &request,
        &[],
        &mut errors,
        0,
    );
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(errors.answer())
    }
}

/// The JSON body of a request, or Discord's answer to one it cannot read.
fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Answer> {
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
            return Err(Answer::error(
                400,
                "fake Discord: only application/json bodies are implemented (no uploads)",
                0,
            ));
        }
        // Without a JSON content type Discord reads no fields at all.
        return Err(Answer::error(400, "Cannot send an empty message", 50006));
    }
    serde_json::from_slice(body)
        .map_err(|_| Answer::error(400, "The request body contains invalid JSON.", 50109))
}

/// The token of an interaction webhook request, if the path is one.
fn webhook_token(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/v10/webhooks/")?;
    rest.split('/').nth(1).filter(|t| !t.is_empty())
}

/// Waits while the interaction of `token` is being answered: Discord handles the answer it
/// was sent before requests that follow it.
async fn wait_for_answer(shared: &Shared, token: &str) {
    let deadline = {
        let st = shared.lock();
        Instant::now() + st.interaction_deadline + Duration::from_secs(1)
    };
    loop {
        let in_flight = shared
            .lock()
            .interactions
            .iter()
            .any(|i| i.token == token && i.in_flight);
        if !in_flight || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI description and its JSON Schemas.

/// Discord's OpenAPI description, loaded once.
pub fn openapi() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/discord-openapi.json");
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

/// The root of a schema to validate with: a named schema of the description, or, for a name
/// such as `put /applications/{application_id}/commands`, that operation's inline JSON request
/// body schema.
fn schema_root(name: &str) -> Value {
    match name.split_once(' ') {
        Some((method, path)) => openapi()
            .pointer(&format!(
                "/paths/{}/{method}/requestBody/content/application~1json/schema",
                path.replace('~', "~0").replace('/', "~1")
            ))
            .cloned()
            .unwrap_or_else(|| {
                panic!("no JSON request body for {name} in the OpenAPI description")
            }),
        None => json!({"$ref": format!("#/components/schemas/{name}")}),
    }
}

fn build_validator(name: &str, strict: bool) -> jsonschema::Validator {
    let all = openapi()["components"]["schemas"]
        .as_object()
        .expect("components.schemas in the OpenAPI description");
    let mut root = schema_root(name);
    let mut schemas = Map::new();
    let mut todo = Vec::new();
    collect_refs(&root, &mut todo);
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
            let mut allowed: Vec<(&str, Value)> = IGNORED_ECHOES
                .iter()
                .filter(|(owner, _)| n == owner)
                .map(|(_, field)| (*field, json!({"type": ["string", "null"]})))
                .collect();
            allowed.extend(documented_command_fields(n));
            if let Some(p) = s.get_mut("properties").and_then(Value::as_object_mut) {
                for (field, schema) in allowed {
                    p.entry(field).or_insert(schema);
                }
            }
            close_objects(s);
        }
        close_objects(&mut root);
    }
    let mut document = root;
    document["components"] = json!({"schemas": schemas});
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
                    // Items of `options` are command options; other typed objects, components.
                    let in_options = path.len() >= 2 && path[path.len() - 2] == "options";
                    let by_type = value.get("type").and_then(Value::as_u64).and_then(|t| {
                        if in_options {
                            option_schema(t)
                        } else {
                            component_schema(t)
                        }
                    });
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
