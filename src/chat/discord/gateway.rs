//! Discord's Gateway, for `discord.mode = "gateway"`: runbot opens the connection, so nothing
//! has to reach runbot from outside. Interactions arrive as `INTERACTION_CREATE` dispatches and
//! are answered with `POST /interactions/{id}/{token}/callback` (within Discord's 3 s); later
//! answers edit `@original` as over HTTP. Each goes through [`super::inbound`], as the HTTP
//! route's do, after the same replay record ([`super::verify::first_sight`]): an interaction
//! delivered again (a RESUME replays what the connection may have lost) runs once.
//!
//! The protocol, as Discord documents it: `GET /gateway/bot` for the address; HELLO gives the
//! heartbeat interval; IDENTIFY (intents 0: interactions need none) → READY with the session
//! and `resume_gateway_url`; a HEARTBEAT with the last sequence every interval (the first after
//! a random part of it), and a connection whose HEARTBEAT_ACK does not come before the next one
//! is closed and resumed; RECONNECT (op 7) and a dropped connection → RESUME on
//! `resume_gateway_url` with the session and the last sequence; INVALID_SESSION (op 9) → RESUME
//! when `d` is true, else IDENTIFY again after 1–5 s. Close codes that retrying cannot fix
//! (4004 authentication failed, 4010–4014) stop the worker with an error that says why; the
//! others reconnect, with a backoff from 1 s to 60 s while connecting keeps failing; after
//! 3 failed connections to `resume_gateway_url` (gone from DNS, moved) the session is given up
//! and a new one identified on the address `/gateway/bot` answers. An interaction older than
//! 15 s by its id is not run: a RESUME replays what the connection missed, however old, and
//! Discord takes no answer to it after 3 s. `runbot_chat_connected{platform="discord"}` is 1
//! while a session is live.
//!
//! Why not serenity's gateway client: serenity 0.12.5 can be pointed at a local Gateway (it
//! connects to the `ws://` URL `/gateway/bot` answers, asked through its HTTP proxy setting),
//! but it hands interactions over only as its own model. An interaction that model cannot
//! parse (runbot pins serenity exactly because these payloads change between its releases)
//! is dropped unanswered where the HTTP route answers it, its sequence number is not kept, and
//! serenity logs the whole payload, interaction token included, at warn. It also resumes on
//! the first address rather than `resume_gateway_url`. Here the interaction stays the JSON
//! Discord sent, as over HTTP, on tokio-tungstenite (the version serenity already brings).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use super::render::initial_response;
use super::verify::{first_sight, Refusal};
use super::{inbound, DiscordAdapter};
use crate::chat::platform::ReplyEditor;
use crate::chat::DeliveryError;
use crate::config::Settings;
use crate::invocation::Dispatcher;
use crate::request::{BoxFuture, Reply, Responder};
use crate::store::Store;

/// Opcodes.
const DISPATCH: u64 = 0;
const HEARTBEAT: u64 = 1;
const IDENTIFY: u64 = 2;
const RESUME: u64 = 6;
const RECONNECT: u64 = 7;
const INVALID_SESSION: u64 = 9;
const HELLO: u64 = 10;
const HEARTBEAT_ACK: u64 = 11;

/// How long connecting, and then HELLO, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Discord's messages are far smaller with no intents (READY lists no guilds' contents); a
/// bigger one is refused rather than buffered.
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Interactions being answered at once; more are left unanswered (Discord shows them failed)
/// rather than piling up tasks.
const MAX_IN_FLIGHT: usize = 256;
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);
/// Older than this (by its id), an interaction is not run. Discord takes its callback only
/// within 3 s of making it, so one a RESUME replays later could only run unseen (a restart,
/// say) after the person was shown "interaction failed", and then fail to answer (10062).
/// 3 s plus room for runbot's clock and Discord's to disagree.
const MAX_INTERACTION_AGE: Duration = Duration::from_secs(15);
/// Discord's epoch (2015-01-01) in Unix milliseconds: a snowflake's top 42 bits count from it.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// Failed connections to `resume_gateway_url` in a row after which the session is given up:
/// that host may be gone for good, and a new session on `/gateway/bot`'s address works.
const RESUME_CONNECT_FAILURES: u32 = 3;

/// One Gateway connection for the whole process, kept open by [`Gateway::run`].
pub struct Gateway {
    adapter: Arc<DiscordAdapter>,
    dispatcher: Arc<Dispatcher>,
    store: Store,
    /// Sent in IDENTIFY and RESUME only; never logged.
    token: SecretString,
    /// How long an interaction's id is kept for the replay check.
    keep_seen: Duration,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The session a connection can resume.
struct Session {
    id: String,
    resume_url: String,
    /// The last sequence number received: sent in heartbeats and RESUME.
    seq: Option<u64>,
}

/// How one connection ended, and what to do next.
#[derive(Debug)]
enum Ended {
    /// Connect again and RESUME the session (or IDENTIFY, when there is none yet).
    Reconnect,
    /// The session is gone: IDENTIFY again, after `wait`.
    Identify { wait: Duration },
    /// Retrying cannot help.
    Fatal(String),
}

impl Gateway {
    pub fn new(
        settings: &Settings,
        adapter: Arc<DiscordAdapter>,
        dispatcher: Arc<Dispatcher>,
        store: Store,
    ) -> anyhow::Result<Gateway> {
        let token =
            settings.discord.bot_token.clone().ok_or_else(|| {
                anyhow::anyhow!("discord.mode = \"gateway\" needs discord.bot_token")
            })?;
        Ok(Gateway {
            adapter,
            dispatcher,
            store,
            token,
            keep_seen: Duration::from_secs(settings.discord.interaction_max_age_secs * 2),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Keeps a connection open until cancelled (the worker is dropped at shutdown) or a close
    /// code says retrying cannot help.
    pub async fn run(self: Arc<Self>) {
        // 0 from the start, and again however the worker ends (returned, aborted, panicked).
        let _disconnected = Disconnected;
        set_connected(false);
        let mut session: Option<Session> = None;
        let mut gateway_url: Option<String> = None;
        // Connection attempts since the last READY or RESUMED.
        let mut attempts: u32 = 0;
        // Failed connections to the session's `resume_gateway_url` in a row.
        let mut resume_failures: u32 = 0;
        loop {
            if attempts > 0 {
                let wait = backoff(attempts);
                tracing::warn!(
                    attempt = attempts + 1,
                    wait_ms = wait.as_millis() as u64,
                    "Discord Gateway: reconnecting after a pause"
                );
                tokio::time::sleep(wait).await;
            }
            attempts = attempts.saturating_add(1);
            let url = match (&session, &gateway_url) {
                (Some(s), _) => s.resume_url.clone(),
                (None, Some(u)) => u.clone(),
                (None, None) => match self.adapter.gateway_url().await {
                    Ok(u) => {
                        gateway_url = Some(u.clone());
                        u
                    }
                    Err(DeliveryError::Permanent(why)) => {
                        tracing::error!(
                            error = %why,
                            "Discord Gateway: GET /gateway/bot was refused (check discord.bot_token); gateway mode stops"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = ?e, "Discord Gateway: cannot ask Discord for the Gateway's address");
                        continue;
                    }
                },
            };
            let ended = match self.connect(&url).await {
                Ok(ws) => {
                    resume_failures = 0;
                    let ended = self.serve(ws, &mut session, &mut attempts).await;
                    set_connected(false);
                    ended
                }
                Err(why) => {
                    tracing::warn!(error = %why, "Discord Gateway: cannot connect");
                    if session.is_some() {
                        resume_failures += 1;
                        if resume_failures < RESUME_CONNECT_FAILURES {
                            continue;
                        }
                        tracing::warn!(
                            failures = resume_failures,
                            "Discord Gateway: resume_gateway_url keeps refusing; giving the session up to identify a new one"
                        );
                        session = None;
                        resume_failures = 0;
                    }
                    // Ask again next time: the address may have changed.
                    gateway_url = None;
                    continue;
                }
            };
            match ended {
                Ended::Reconnect => {}
                Ended::Identify { wait } => {
                    session = None;
                    tokio::time::sleep(wait).await;
                }
                Ended::Fatal(why) => {
                    tracing::error!("Discord Gateway: {why}; gateway mode stops (interactions are not received until runbot restarts)");
                    return;
                }
            }
        }
    }

    async fn connect(&self, base: &str) -> Result<Ws, String> {
        let mut url = url::Url::parse(base).map_err(|e| format!("bad Gateway address: {e}"))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(format!(
                "the Gateway's address is not ws:// or wss:// but {}://",
                url.scheme()
            ));
        }
        url.set_query(Some("v=10&encoding=json"));
        let config = WebSocketConfig {
            max_message_size: Some(MAX_MESSAGE_BYTES),
            max_frame_size: Some(MAX_MESSAGE_BYTES),
            ..WebSocketConfig::default()
        };
        let connecting =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false);
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
        }
    }

    /// One connection, from HELLO until it ends.
    async fn serve(
        self: &Arc<Self>,
        ws: Ws,
        session: &mut Option<Session>,
        attempts: &mut u32,
    ) -> Ended {
        let (mut sink, mut stream) = ws.split();
        let hello = match tokio::time::timeout(CONNECT_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text).ok(),
            _ => None,
        };
        let interval = hello
            .as_ref()
            .filter(|v| v["op"].as_u64() == Some(HELLO))
            .and_then(|v| v["d"]["heartbeat_interval"].as_u64())
            .filter(|ms| (100..=600_000).contains(ms))
            .map(Duration::from_millis);
        let Some(interval) = interval else {
            tracing::warn!("Discord Gateway: no valid HELLO after connecting");
            return Ended::Reconnect;
        };
        let first = match session {
            Some(s) => {
                tracing::info!(seq = ?s.seq, "Discord Gateway: resuming the session");
                json!({"op": RESUME, "d": {
                    "token": self.token.expose_secret(),
                    "session_id": s.id,
                    "seq": s.seq,
                }})
            }
            None => json!({"op": IDENTIFY, "d": {
                "token": self.token.expose_secret(),
                "intents": 0,
                "properties": {"os": std::env::consts::OS, "browser": "runbot", "device": "runbot"},
            }}),
        };
        if let Err(e) = sink.send(Message::Text(first.to_string())).await {
            tracing::warn!(error = %e, "Discord Gateway: could not identify");
            return Ended::Reconnect;
        }
        let mut acked = true;
        let mut next_beat = Instant::now() + interval.mul_f64(random_fraction());
        loop {
            let message = tokio::select! {
                () = tokio::time::sleep_until(next_beat) => {
                    if !acked {
                        tracing::warn!("Discord Gateway: no HEARTBEAT_ACK within an interval; reconnecting to resume");
                        close_for_resume(&mut sink).await;
                        return Ended::Reconnect;
                    }
                    let seq = session.as_ref().and_then(|s| s.seq);
                    if sink.send(Message::Text(json!({"op": HEARTBEAT, "d": seq}).to_string())).await.is_err() {
                        return Ended::Reconnect;
                    }
                    acked = false;
                    next_beat = Instant::now() + interval;
                    continue;
                }
                m = stream.next() => m,
            };
            let text = match message {
                None => {
                    tracing::warn!(
                        "Discord Gateway: the connection ended without a close frame; resuming"
                    );
                    return Ended::Reconnect;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Discord Gateway: the connection failed; resuming");
                    return Ended::Reconnect;
                }
                Some(Ok(Message::Close(frame))) => return closed(frame),
                Some(Ok(Message::Text(text))) => text,
                // Pings are answered by tungstenite; runbot asks for no compression, so no
                // binary frames.
                Some(Ok(_)) => continue,
            };
            let Ok(event) = serde_json::from_str::<Value>(&text) else {
                tracing::warn!("Discord Gateway: a message that is not JSON; reconnecting");
                close_for_resume(&mut sink).await;
                return Ended::Reconnect;
            };
            if let (Some(seq), Some(s)) = (event["s"].as_u64(), session.as_mut()) {
                s.seq = Some(seq);
            }
            match event["op"].as_u64() {
                Some(DISPATCH) => match event["t"].as_str() {
                    Some("READY") => {
                        let d = &event["d"];
                        match (d["session_id"].as_str(), d["resume_gateway_url"].as_str()) {
                            (Some(id), Some(url)) => {
                                *session = Some(Session {
                                    id: id.chars().take(128).collect(),
                                    resume_url: url.chars().take(512).collect(),
                                    seq: event["s"].as_u64(),
                                });
                                *attempts = 0;
                                set_connected(true);
                                tracing::info!(
                                    "Discord Gateway: connected, receiving interactions"
                                );
                            }
                            _ => {
                                tracing::warn!("Discord Gateway: READY without session_id or resume_gateway_url");
                                return Ended::Identify {
                                    wait: Duration::from_secs(1),
                                };
                            }
                        }
                    }
                    Some("RESUMED") => {
                        *attempts = 0;
                        set_connected(true);
                        tracing::info!("Discord Gateway: session resumed");
                    }
                    Some("INTERACTION_CREATE") => self.receive(event["d"].clone()),
                    _ => {}
                },
                Some(HEARTBEAT) => {
                    let seq = session.as_ref().and_then(|s| s.seq);
                    if sink
                        .send(Message::Text(
                            json!({"op": HEARTBEAT, "d": seq}).to_string(),
                        ))
                        .await
                        .is_err()
                    {
                        return Ended::Reconnect;
                    }
                }
                Some(HEARTBEAT_ACK) => acked = true,
                Some(RECONNECT) => {
                    tracing::info!("Discord Gateway: Discord asked to reconnect (op 7); resuming");
                    close_for_resume(&mut sink).await;
                    return Ended::Reconnect;
                }
                Some(INVALID_SESSION) => {
                    close_for_resume(&mut sink).await;
                    if event["d"].as_bool() == Some(true) && session.is_some() {
                        tracing::warn!(
                            "Discord Gateway: session invalidated (resumable); resuming"
                        );
                        return Ended::Reconnect;
                    }
                    // Discord asks for a wait of 1 to 5 seconds before identifying again.
                    let wait = Duration::from_millis(1000 + (random_fraction() * 4000.0) as u64);
                    tracing::warn!(
                        wait_ms = wait.as_millis() as u64,
                        "Discord Gateway: session invalidated; identifying again"
                    );
                    return Ended::Identify { wait };
                }
                _ => {}
            }
        }
    }

    /// Answers one interaction in a task of its own, so the connection keeps reading and
    /// heartbeating meanwhile.
    fn receive(self: &Arc<Self>, interaction: Value) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(
                "Discord Gateway: {MAX_IN_FLIGHT} interactions already being answered; one left unanswered"
            );
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            me.answer(interaction).await;
            drop(permit);
        });
    }

    async fn answer(&self, interaction: Value) {
        let id = interaction["id"].as_str().unwrap_or_default().to_string();
        let token = interaction["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if id.is_empty() || token.is_empty() || token.len() > 1024 {
            tracing::warn!("Discord Gateway: an interaction without an id or a token");
            return;
        }
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
        let age = snowflake_age(&id, now_ms);
        if age.is_none_or(|age| age > MAX_INTERACTION_AGE) {
            // Not answered at all: Discord would refuse the callback, and the person already
            // saw the interaction fail.
            let stale = Refusal::Stale;
            metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "discord", "reason" => stale.label()).increment(1);
            // Discord's command names are at most 32 characters.
            let command: String = interaction["data"]["name"]
                .as_str()
                .unwrap_or("(a component)")
                .chars()
                .take(32)
                .collect();
            tracing::warn!(
                interaction = %id,
                command,
                age_secs = age.map(|a| a.as_secs()),
                "Discord Gateway: an interaction too old to answer (replayed after a resume, or the clock is off); not run"
            );
            return;
        }
        let response = match first_sight(
            &self.store,
            &interaction,
            self.keep_seen,
            chrono::Utc::now(),
        )
        .await
        {
            Ok(()) => None,
            Err(refusal @ Refusal::Replayed) => {
                // The first delivery was answered; a second answer would be refused (40060).
                metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "discord", "reason" => refusal.label()).increment(1);
                tracing::info!(interaction = %id, "Discord Gateway: an interaction delivered again; it ran once already");
                return;
            }
            Err(refusal) => {
                metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "discord", "reason" => refusal.label()).increment(1);
                tracing::warn!(interaction = %id, reason = refusal.message(), "Discord interaction refused");
                Some(initial_response(&Reply {
                    text: format!("🚫 {}", refusal.message()),
                    ephemeral: true,
                    refused: true,
                    ..Reply::default()
                }))
            }
        };
        // Edits of `@original` wait for the callback: before it, Discord knows no original.
        let (answered, gate) = tokio::sync::watch::channel(false);
        let response = match response {
            Some(r) => r,
            None => {
                inbound::respond(
                    &interaction,
                    Some(&self.dispatcher),
                    Some(&self.adapter),
                    |adapter, token| {
                        Arc::new(AfterCallback {
                            inner: ReplyEditor::new(adapter.clone(), token),
                            answered: gate,
                        })
                    },
                )
                .await
            }
        };
        let sent = self
            .adapter
            .interaction_callback(&id, &token, &response)
            .await;
        answered.send_replace(true);
        if let Err(e) = sent {
            tracing::warn!(interaction = %id, error = ?e, "Discord Gateway: the interaction's callback failed");
        }
    }
}

/// How long ago Discord made the object with snowflake `id`, at `now_ms` (Unix milliseconds);
/// zero for one from the future (clocks disagree), None when `id` is not a snowflake.
fn snowflake_age(id: &str, now_ms: u64) -> Option<Duration> {
    let made = (id.parse::<u64>().ok()? >> 22) + DISCORD_EPOCH_MS;
    Some(Duration::from_millis(now_ms.saturating_sub(made)))
}

fn set_connected(on: bool) {
    metrics::gauge!(crate::telemetry::CHAT_CONNECTED, "platform" => "discord").set(if on {
        1.0
    } else {
        0.0
    });
}

/// Sets the gauge to 0 when dropped: the worker stopped.
struct Disconnected;

impl Drop for Disconnected {
    fn drop(&mut self) {
        set_connected(false);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Edits the answer once the callback went out.
struct AfterCallback {
    inner: ReplyEditor,
    answered: tokio::sync::watch::Receiver<bool>,
}

impl Responder for AfterCallback {
    fn edit(&self, reply: Reply) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut answered = self.answered.clone();
            // A sender gone without `true` cannot happen before the callback was tried; the
            // edit then says for itself whether Discord takes it.
            let _ = answered.wait_for(|a| *a).await;
            self.inner.edit(reply).await
        })
    }
}

/// A close code other than 1000/1001, so that Discord keeps the session for a RESUME.
async fn close_for_resume(sink: &mut futures_util::stream::SplitSink<Ws, Message>) {
    let frame = CloseFrame {
        code: CloseCode::Library(4000),
        reason: "reconnecting".into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

/// What Discord's close code asks for (Gateway close event codes).
fn closed(frame: Option<CloseFrame<'_>>) -> Ended {
    let code = frame.as_ref().map(|f| u16::from(f.code));
    let fatal = |why: &str| {
        Ended::Fatal(format!(
            "Discord closed the connection with {}: {why}",
            code.unwrap_or_default()
        ))
    };
    match code {
        Some(4004) => fatal(
            "authentication failed (check discord.bot_token: Developer Portal → Bot → Reset Token)",
        ),
        Some(4010) => fatal("invalid shard"),
        Some(4011) => fatal("sharding required (the bot is in too many guilds for one connection)"),
        Some(4012) => fatal("invalid API version"),
        Some(4013) => fatal("invalid intents"),
        Some(4014) => fatal("disallowed intents"),
        // The session cannot be resumed.
        Some(4007) | Some(4009) => {
            tracing::warn!(code = ?code, "Discord Gateway: closed, the session is gone; identifying again");
            Ended::Identify {
                wait: Duration::from_secs(1),
            }
        }
        _ => {
            tracing::warn!(code = ?code, "Discord Gateway: closed by Discord; resuming");
            Ended::Reconnect
        }
    }
}

/// 1 s, 2 s, 4 s, … up to 60 s, each with up to a quarter more at random so that replicas do
/// not reconnect in step.
fn backoff(attempts: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(LONGEST_BACKOFF);
    base + base.mul_f64(random_fraction() / 4.0)
}

/// A number in [0, 1), random enough for jitter (std's hasher keys are random per process).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        for (attempts, low) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            let wait = backoff(attempts);
            let low = Duration::from_secs(low);
            assert!(wait >= low && wait <= low + low / 4, "{attempts}: {wait:?}");
        }
    }

    #[test]
    fn an_interaction_s_age_is_read_from_its_snowflake() {
        // Discord's documented example: 175928847299117063 was made at 1462015105796.
        let made = 1_462_015_105_796;
        let age = |now| snowflake_age("175928847299117063", now);
        assert_eq!(age(made + 16_000), Some(Duration::from_secs(16)));
        assert_eq!(age(made), Some(Duration::ZERO));
        assert_eq!(age(made - 5_000), Some(Duration::ZERO), "from the future");
        assert_eq!(snowflake_age("not-a-snowflake", made), None);
        assert_eq!(snowflake_age("", made), None);
    }

    #[test]
    fn close_codes_that_retrying_cannot_fix_stop_the_gateway() {
        let close = |code: u16| {
            closed(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
        };
        match close(4004) {
            Ended::Fatal(why) => assert!(why.contains("authentication failed"), "{why}"),
            other => panic!("{other:?}"),
        }
        for code in [4010, 4011, 4012, 4013, 4014] {
            assert!(matches!(close(code), Ended::Fatal(_)), "{code}");
        }
        for code in [4007, 4009] {
            assert!(matches!(close(code), Ended::Identify { .. }), "{code}");
        }
        for code in [1000, 1001, 4000, 4001, 4002, 4003, 4005, 4008] {
            assert!(matches!(close(code), Ended::Reconnect), "{code}");
        }
        assert!(matches!(closed(None), Ended::Reconnect));
    }
}
