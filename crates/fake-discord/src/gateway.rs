//! The Gateway, as Discord runs it for a bot with no intents: what runbot's gateway mode
//! connects to.
//!
//! - `GET /api/v10/gateway/bot` (bot token required) answers the WebSocket's address
//!   ([`FakeDiscord::gateway_url`]), one shard and a session start limit.
//! - The WebSocket (`?v=10&encoding=json` required, else close 4012) sends HELLO with
//!   [`FakeDiscord::set_heartbeat_interval`]'s interval; IDENTIFY is checked (the bot token,
//!   else close 4004; an integer `intents` and `properties` with `os`, `browser`, `device`, else
//!   close 4002; twice: 4005) and answered with READY (`session_id`, `resume_gateway_url`);
//!   anything but IDENTIFY or RESUME first closes 4003; an unknown opcode 4001.
//! - HEARTBEAT → HEARTBEAT_ACK (unless [`FakeDiscord::set_heartbeat_acks`] turned them off),
//!   each heartbeat's `d` recorded ([`FakeDiscord::gateway_heartbeats`]).
//! - DISPATCH with increasing `s` per session; each session keeps its dispatches, so a RESUME
//!   (token, `session_id` and a `seq` no later than the last sent, else close 4007) replays
//!   those after `seq`, then RESUMED. An unknown session is answered INVALID_SESSION `false`.
//!   Stricter than Discord: a RESUME must come to `resume_gateway_url` (Discord says to use it
//!   and disconnects more often otherwise), else INVALID_SESSION `false`.
//! - [`FakeDiscord::gateway_drop`] ends the connection without a close frame,
//!   [`FakeDiscord::gateway_reconnect`] sends op 7, [`FakeDiscord::gateway_invalid_session`]
//!   op 9 (a session not resumable is forgotten), [`FakeDiscord::gateway_close`] a close code.
//! - Interactions: [`FakeDiscord::gateway_dispatch_interaction`] sends one built as for HTTP
//!   ([`FakeDiscord::slash_command`], [`FakeDiscord::button_click`]) as `INTERACTION_CREATE`.
//!   It is answered with `POST /api/v10/interactions/{id}/{token}/callback` (no bot token), once
//!   (else 400, code 40060 "Interaction has already been acknowledged"), within 3 s of its
//!   first dispatch (else 404, code 10062 "Unknown interaction", as for an unknown id or
//!   token), the body checked as the HTTP answer is; 204 when accepted. Until then its webhook
//!   (`@original`, followups) is 404 Unknown Webhook: there is no HTTP answer to wait for.
//!   [`FakeDiscord::gateway_callbacks`] lists every callback and its answer.
//!   [`FakeDiscord::backdate_interaction`] makes one as a RESUME replays it minutes later: its
//!   id says so, and its 3 s are over.
//! - [`FakeDiscord::set_resume_url_refusing`]: READY gives a `resume_gateway_url` where nothing
//!   listens, as when that host is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::header::HeaderMap;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::{
    accept_initial, header, Answer, AnswerBody, FakeDiscord, Interaction, Shared, State,
    APPLICATION_ID, BOT_USERNAME, BOT_USER_ID, GUILD_ID,
};

/// Discord's usual interval; tests set a shorter one.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(41_250);

/// One answered (or refused) callback.
#[derive(Clone, Debug)]
pub struct Callback {
    pub interaction_id: String,
    pub status: u16,
    /// What the application sent.
    pub body: Value,
    /// The fake's error body, when refused.
    pub error: Option<Value>,
    pub at: Instant,
}

#[derive(Default)]
pub(crate) struct GatewayState {
    port: u16,
    heartbeat_interval: Option<Duration>,
    no_acks: bool,
    /// A port nothing listens on, given as `resume_gateway_url`'s.
    refusing_resume_port: Option<u16>,
    sessions: HashMap<String, Session>,
    /// The session dispatches go to: the one READY gave last.
    current: Option<String>,
    live: Option<Live>,
    next_connection: u64,
    connections: usize,
    identifies: Vec<Value>,
    resumes: Vec<Value>,
    heartbeats: Vec<Value>,
    /// Close codes the application sent (None: a close frame without a code).
    client_closes: Vec<Option<u16>>,
    callbacks: Vec<Callback>,
}

struct Session {
    seq: u64,
    /// Every dispatch of the session with its `s`, for RESUME.
    log: Vec<(u64, Value)>,
}

/// The connection that dispatches go to.
struct Live {
    connection: u64,
    session: String,
    tx: mpsc::UnboundedSender<Control>,
}

enum Control {
    Send(Value),
    /// End the connection without a close frame.
    Drop,
    Close(u16),
}

impl GatewayState {
    fn control(&self, c: Control) -> bool {
        self.live.as_ref().is_some_and(|l| l.tx.send(c).is_ok())
    }

    /// Appends a dispatch to the current session and sends it if a connection is live.
    fn dispatch(&mut self, t: &str, d: Value) -> u64 {
        let id = self
            .current
            .clone()
            .expect("no Gateway session: the application has not identified");
        let session = self.sessions.get_mut(&id).expect("the current session");
        session.seq += 1;
        let event = json!({"op": 0, "s": session.seq, "t": t, "d": d});
        session.log.push((session.seq, event.clone()));
        let seq = session.seq;
        if self.live.as_ref().is_some_and(|l| l.session == id) {
            self.control(Control::Send(event));
        }
        seq
    }
}

pub(crate) async fn start(rt: &tokio::runtime::Handle, shared: Arc<Shared>) {
    let listener = rt
        .spawn(TcpListener::bind(("127.0.0.1", 0)))
        .await
        .unwrap()
        .expect("bind the fake Gateway");
    shared.lock().gateway.port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, shared.clone()));
        }
    });
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn close(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

async fn send(ws: &mut Ws, v: &Value) -> bool {
    ws.send(Message::Text(v.to_string())).await.is_ok()
}

// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let mut uri = String::new();
    let accepted = tokio_tungstenite::accept_hdr_async(
        stream,
        |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
         resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
            uri = req.uri().to_string();
            Ok(resp)
        },
    )
    .await;
    let Ok(mut ws) = accepted else { return };
    let (path, query) = uri.split_once('?').unwrap_or((uri.as_str(), ""));
    let path = path.to_string();
    let mut params: Vec<&str> = query.split('&').collect();
    params.sort_unstable();
    if params != ["encoding=json", "v=10"] {
        close(&mut ws, 4012, "Invalid API version").await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (connection, interval) = {
        let mut st = shared.lock();
        let g = &mut st.gateway;
        g.next_connection += 1;
        g.connections += 1;
        (
            g.next_connection,
            g.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
        )
    };
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": interval.as_millis() as u64}});
    if !send(&mut ws, &hello).await {
        return;
    }
    let mut session: Option<String> = None;
    loop {
        tokio::select! {
            c = rx.recv() => match c {
                Some(Control::Send(v)) => {
                    if !send(&mut ws, &v).await { break; }
                }
                Some(Control::Close(code)) => {
                    close(&mut ws, code, "closed by the test").await;
                    break;
                }
                // Dropping the stream ends the TCP connection with no close frame.
                Some(Control::Drop) | None => break,
            },
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(frame))) => {
                        shared.lock().gateway.client_closes.push(frame.map(|f| u16::from(f.code)));
                        break;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        close(&mut ws, 4002, "Decode error").await;
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                match receive(&shared, &text, connection, &path, &tx, &mut session) {
                    Reply::Frames(frames) => {
                        for f in frames {
                            if !send(&mut ws, &f).await { break; }
                        }
                    }
                    Reply::Close(code, reason) => {
                        close(&mut ws, code, reason).await;
                        break;
                    }
                }
            }
        }
    }
    let mut st = shared.lock();
    if st
        .gateway
        .live
        .as_ref()
        .is_some_and(|l| l.connection == connection)
    {
        st.gateway.live = None;
    }
}

enum Reply {
    Frames(Vec<Value>),
    Close(u16, &'static str),
}

/// One message from the application, under the lock: what to send back.
fn receive(
    shared: &Shared,
    text: &str,
    connection: u64,
    path: &str,
    tx: &mpsc::UnboundedSender<Control>,
    session: &mut Option<String>,
) -> Reply {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Reply::Close(4002, "Decode error");
    };
    let mut st = shared.lock();
    let port = st.gateway.port;
    let resume_port = st.gateway.refusing_resume_port.unwrap_or(port);
    let token = shared.token.clone();
    let g = &mut st.gateway;
    let d = &v["d"];
    match v["op"].as_u64() {
        Some(1) => {
            g.heartbeats.push(d.clone());
            if g.no_acks {
                Reply::Frames(Vec::new())
            } else {
                Reply::Frames(vec![json!({"op": 11, "s": null, "t": null, "d": null})])
            }
        }
        Some(2) => {
            if session.is_some() {
                return Reply::Close(4005, "Already authenticated");
            }
            if d["token"].as_str() != Some(token.as_str()) {
                return Reply::Close(4004, "Authentication failed");
            }
            let properties_ok = ["os", "browser", "device"]
                .iter()
                .all(|k| d["properties"][k].is_string());
            if !d["intents"].is_u64() || !properties_ok {
                return Reply::Close(4002, "Decode error");
            }
            g.identifies.push(v.clone());
            let id = session_id(connection);
            g.sessions.insert(
                id.clone(),
                Session {
                    seq: 0,
                    log: Vec::new(),
                },
            );
            g.current = Some(id.clone());
            g.live = Some(Live {
                connection,
                session: id.clone(),
                tx: tx.clone(),
            });
            *session = Some(id.clone());
            let ready = json!({
                "v": 10,
                "user": {"id": BOT_USER_ID, "username": BOT_USERNAME, "discriminator": "0", "global_name": null, "avatar": null, "bot": true, "flags": 0},
                "guilds": [{"id": GUILD_ID.to_string(), "unavailable": true}],
                "session_id": id,
                "session_type": "normal",
                "resume_gateway_url": format!("ws://127.0.0.1:{resume_port}/resume"),
                "shard": [0, 1],
                "application": {"id": APPLICATION_ID, "flags": 0},
            });
            // Sent through the channel, so that it goes before any later dispatch.
            g.dispatch("READY", ready);
            Reply::Frames(Vec::new())
        }
        Some(6) => {
            if session.is_some() {
                return Reply::Close(4005, "Already authenticated");
            }
            if d["token"].as_str() != Some(token.as_str()) {
                return Reply::Close(4004, "Authentication failed");
            }
            g.resumes.push(v.clone());
            let invalid = json!({"op": 9, "s": null, "t": null, "d": false});
            let Some(id) = d["session_id"].as_str().map(str::to_string) else {
                return Reply::Close(4002, "Decode error");
            };
            if !path.starts_with("/resume") || !g.sessions.contains_key(&id) {
                return Reply::Frames(vec![invalid]);
            }
            let s = g.sessions.get_mut(&id).unwrap();
            let after = match d["seq"].as_u64() {
                Some(seq) if seq <= s.seq => seq,
                None if d["seq"].is_null() => 0,
                _ => return Reply::Close(4007, "Invalid seq"),
            };
            let mut frames: Vec<Value> = s
                .log
                .iter()
                .filter(|(seq, _)| *seq > after)
                .map(|(_, e)| e.clone())
                .collect();
            s.seq += 1;
            let resumed = json!({"op": 0, "s": s.seq, "t": "RESUMED", "d": {}});
            s.log.push((s.seq, resumed.clone()));
            frames.push(resumed);
            g.current = Some(id.clone());
            g.live = Some(Live {
                connection,
                session: id.clone(),
                tx: tx.clone(),
            });
            *session = Some(id);
            Reply::Frames(frames)
        }
        Some(_) if session.is_none() => Reply::Close(4003, "Not authenticated"),
        // Presence and voice updates: runbot sends none, the fake takes them silently.
        Some(3 | 4 | 8) => Reply::Frames(Vec::new()),
        _ => Reply::Close(4001, "Unknown opcode"),
    }
}

fn session_id(connection: u64) -> String {
    use sha2::Digest;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let digest = sha2::Sha256::digest(format!("session:{connection}:{nanos}"));
    super::hex(&digest[..16])
}

/// `GET /api/v10/gateway/bot`.
pub(crate) fn gateway_bot(st: &State) -> Answer {
    Answer::json(
        200,
        json!({
            "url": format!("ws://127.0.0.1:{}", st.gateway.port),
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1},
        }),
    )
}

/// `POST /api/v10/interactions/{id}/{token}/callback`.
pub(crate) fn callback(
    st: &mut State,
    id: &str,
    token: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let answer = decide(st, id, token, headers, &request);
    let error = match &answer.body {
        AnswerBody::Json(v) => Some(v.clone()),
        _ => None,
    };
    st.gateway.callbacks.push(Callback {
        interaction_id: id.to_string(),
        status: answer.status,
        body: request,
        error,
        at: Instant::now(),
    });
    answer
}

fn decide(st: &mut State, id: &str, token: &str, headers: &HeaderMap, request: &Value) -> Answer {
    let unknown = || Answer::error(404, "Unknown interaction", 10062);
    let Some(index) = st
        .interactions
        .iter()
        .position(|i| i.id == id && i.token == token && i.kind != 1)
    else {
        return unknown();
    };
    if st.interactions[index].response_type.is_some() {
        return Answer::error(400, "Interaction has already been acknowledged.", 40060);
    }
    let elapsed = st.interactions[index].issued.elapsed();
    if elapsed > st.interaction_deadline {
        return unknown();
    }
    if request.is_null() {
        return Answer::error(400, "The request body contains invalid JSON.", 50109);
    }
    let content_type = header(headers, "content-type").unwrap_or("");
    match accept_initial(st, index, 200, content_type, Some(request), elapsed) {
        Some(failure) => Answer::json(
            400,
            json!({"message": "Invalid Form Body", "code": 50035, "fake_discord": failure}),
        ),
        None => {
            let i = &mut st.interactions[index];
            i.latency = Some(elapsed);
            i.initial = Some(request.clone());
            Answer {
                status: 204,
                headers: Vec::new(),
                body: AnswerBody::Empty,
            }
        }
    }
}

impl FakeDiscord {
    /// The WebSocket's address, as `GET /gateway/bot` answers it.
    pub fn gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.state().gateway.port)
    }

    /// The interval HELLO gives to the next connections.
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        self.state().gateway.heartbeat_interval = Some(interval);
    }

    /// Whether heartbeats are acknowledged (they are unless turned off).
    pub fn set_heartbeat_acks(&self, on: bool) {
        self.state().gateway.no_acks = !on;
    }

    /// Sends `interaction` as `INTERACTION_CREATE` on the current session (kept for a RESUME if
    /// no connection is live); answers its `s`. Its 3 s start at its first dispatch.
    pub fn gateway_dispatch_interaction(&self, interaction: &Interaction) -> u64 {
        let mut st = self.state();
        let i = st
            .interactions
            .iter_mut()
            .find(|i| i.id == interaction.id)
            .expect("an interaction the fake built");
        if !i.via_gateway {
            i.via_gateway = true;
            i.issued = Instant::now();
        }
        st.gateway
            .dispatch("INTERACTION_CREATE", interaction.body.clone())
    }

    /// `interaction` as Discord replays it after a RESUME `age` after making it: a new id (a
    /// snowflake's top bits say when Discord made it) from `age` ago, and its callback refused
    /// (10062) as Discord refuses one after 3 s. The interaction built earlier is replaced.
    pub fn backdate_interaction(&self, interaction: &Interaction, age: Duration) -> Interaction {
        let mut st = self.state();
        // The low 22 bits of a fresh one keep the id unique.
        let low: u64 = st.next_snowflake().parse::<u64>().unwrap() & ((1 << 22) - 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let made = now - age.as_millis() as u64;
        let id = (((made - super::DISCORD_EPOCH_MS) << 22) | low).to_string();
        let i = st
            .interactions
            .iter_mut()
            .find(|i| i.id == interaction.id)
            .expect("an interaction the fake built");
        i.id = id.clone();
        i.payload["id"] = json!(id);
        i.via_gateway = true;
        i.issued = Instant::now().checked_sub(age).expect("age since boot");
        let mut body = interaction.body.clone();
        body["id"] = json!(id);
        Interaction {
            id,
            token: interaction.token.clone(),
            body,
        }
    }

    /// Whether READY gives a `resume_gateway_url` that refuses connections (from the next
    /// IDENTIFY on), as a resume host gone from DNS or moved.
    pub fn set_resume_url_refusing(&self, on: bool) {
        let port = on.then(|| {
            // Bound then closed: nothing listens there, so connecting is refused.
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            l.local_addr().unwrap().port()
        });
        self.state().gateway.refusing_resume_port = port;
    }

    /// Waits until a callback for `interaction_id` was accepted; panics after `timeout`.
    pub async fn gateway_wait_for_callback(
        &self,
        interaction_id: &str,
        timeout: Duration,
    ) -> Callback {
        self.wait_gateway(timeout, &format!("a callback for {interaction_id}"), |g| {
            g.callbacks
                .iter()
                .find(|c| c.interaction_id == interaction_id && c.status == 204)
                .cloned()
        })
        .await
    }

    /// Waits until `f` finds something in the Gateway's state; panics after `timeout`.
    async fn wait_gateway<T>(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&GatewayView) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.gateway_view();
            if let Some(t) = f(&view) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; connected: {}, identifies: {}, resumes: {:?}, callbacks: {:?}",
                    view.connected,
                    view.identifies.len(),
                    view.resumes,
                    view.callbacks
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn gateway_view(&self) -> GatewayView {
        let st = self.state();
        let g = &st.gateway;
        GatewayView {
            connected: g.live.is_some(),
            connections: g.connections,
            identifies: g.identifies.clone(),
            resumes: g.resumes.clone(),
            heartbeats: g.heartbeats.clone(),
            client_closes: g.client_closes.clone(),
            callbacks: g.callbacks.clone(),
            seq: g
                .current
                .as_ref()
                .and_then(|id| g.sessions.get(id))
                .map_or(0, |s| s.seq),
        }
    }

    /// Waits until a connection has identified or resumed (and is live); panics after `timeout`.
    pub async fn gateway_wait_connected(&self, timeout: Duration) {
        self.wait_gateway(timeout, "a live Gateway session", |g| {
            g.connected.then_some(())
        })
        .await
    }

    /// Waits until `n` IDENTIFYs or `n` RESUMEs were received, as `f` counts them.
    pub async fn gateway_wait_until(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&GatewayView) -> bool,
    ) -> GatewayView {
        self.wait_gateway(timeout, what, |g| f(g).then(|| g.clone()))
            .await
    }

    /// A connection is live (identified or resumed, not closed).
    pub fn gateway_connected(&self) -> bool {
        self.state().gateway.live.is_some()
    }

    /// The payloads of the IDENTIFYs received (`{"op": 2, "d": …}`).
    pub fn gateway_identifies(&self) -> Vec<Value> {
        self.state().gateway.identifies.clone()
    }

    /// The payloads of the RESUMEs received (`{"op": 6, "d": …}`).
    pub fn gateway_resumes(&self) -> Vec<Value> {
        self.state().gateway.resumes.clone()
    }

    /// The `d` of each HEARTBEAT received: the last sequence the application had.
    pub fn gateway_heartbeats(&self) -> Vec<Value> {
        self.state().gateway.heartbeats.clone()
    }

    pub fn gateway_callbacks(&self) -> Vec<Callback> {
        self.state().gateway.callbacks.clone()
    }

    /// Ends the live connection without a close frame, as a network failure does.
    pub fn gateway_drop(&self) -> bool {
        let mut st = self.state();
        let sent = st.gateway.control(Control::Drop);
        st.gateway.live = None;
        sent
    }

    /// Sends op 7 RECONNECT on the live connection.
    pub fn gateway_reconnect(&self) -> bool {
        self.state().gateway.control(Control::Send(
            json!({"op": 7, "s": null, "t": null, "d": null}),
        ))
    }

    /// Sends op 9 INVALID_SESSION; a session not resumable is forgotten.
    pub fn gateway_invalid_session(&self, resumable: bool) -> bool {
        let mut st = self.state();
        let g = &mut st.gateway;
        if !resumable {
            if let Some(id) = g.live.as_ref().map(|l| l.session.clone()) {
                g.sessions.remove(&id);
            }
        }
        g.control(Control::Send(
            json!({"op": 9, "s": null, "t": null, "d": resumable}),
        ))
    }

    /// Closes the live connection with `code`.
    pub fn gateway_close(&self, code: u16) -> bool {
        self.state().gateway.control(Control::Close(code))
    }
}

/// The Gateway's state as a test reads it.
#[derive(Clone, Debug)]
pub struct GatewayView {
    pub connected: bool,
    /// WebSocket connections accepted so far.
    pub connections: usize,
    pub identifies: Vec<Value>,
    pub resumes: Vec<Value>,
    pub heartbeats: Vec<Value>,
    pub client_closes: Vec<Option<u16>>,
    pub callbacks: Vec<Callback>,
    /// The last `s` of the current session.
    pub seq: u64,
}
