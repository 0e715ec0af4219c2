//! Slack's Socket Mode, for `slack.mode = "socket"`: runbot opens a WebSocket to Slack, so
//! nothing has to reach runbot from outside. `apps.connections.open` with the app-level token
//! gives a single-use `wss://` address; Slack says `hello`, then sends envelopes
//! (`slash_commands`, `interactive`, `events_api`), each acknowledged within 3 s by sending
//! `{"envelope_id": …}` back, with the slash command's first answer as `payload` when Slack
//! accepts one and the core answered in time (else the answer goes by `response_url`). The
//! payload goes through [`super::inbound`], as over HTTP.
//!
//! An envelope is handled once: its id is recorded in the seen table first, so a redelivery
//! (Slack resends what was not acked in time, maybe to another replica's connection) is
//! acknowledged and passed over. `{"type":"disconnect"}` with `refresh_requested` or `warning`
//! opens the next connection before leaving the old one; any other end reconnects with a
//! backoff of 1 s doubling to 30 s, reset after a connection that stayed up a minute.
//!
//! A connection can die without a word (a NAT forgetting it): runbot pings every
//! [`PING_EVERY`] and counts a connection from which nothing at all (pong, envelope, anything)
//! came for [`SILENCE_LIMIT`] as dropped. `runbot_chat_connected{platform="slack"}` is 1 while
//! a connection that said `hello` is open.
//! Nothing logged carries the app token or the address (its `ticket` opens a connection).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::inbound::{self, Inbound};
use super::verify::{first_sight, Refusal, SEEN_ENVELOPES};
use crate::config::Settings;
use crate::store::Store;

/// How long connecting, and then `hello`, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack wants an ack within 3 s; the core gets this long to give the ack a first answer.
const ANSWER_IN_ACK: Duration = Duration::from_millis(2000);
/// A `block_actions` envelope carries the clicked message: well under this; a bigger frame is
/// refused rather than buffered.
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Envelopes being handled at once; more are left unacknowledged (Slack redelivers them)
/// rather than piling up tasks.
const MAX_IN_FLIGHT: usize = 256;
const LONGEST_BACKOFF: Duration = Duration::from_secs(30);
/// A connection up this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);
/// A ping this often, so a silent connection shows.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// Nothing heard for this long: the connection is dead (three pings unanswered).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
/// The next connection, being opened while the old one still serves.
type Opening = Pin<Box<dyn Future<Output = Result<Conn, OpenError>> + Send>>;

/// Socket Mode for the whole process, kept open by [`SocketMode::run`].
pub struct SocketMode {
    inbound: Arc<Inbound>,
    store: Store,
    /// `Bearer xapp-…`; never logged.
    authorization: SecretString,
    /// How long an envelope id is kept for the replay check (Slack redelivers within minutes).
    keep_seen: Duration,
    in_flight: Arc<tokio::sync::Semaphore>,
    ping_every: Duration,
    silence_limit: Duration,
}

/// Connections that said `hello` and are open, in the whole process (two for a moment during
/// a refresh; the gauge is the process's too). The gauge is set under the lock, so it always
/// agrees with the count.
static LIVE: Mutex<usize> = Mutex::new(0);

fn set_connected(live: usize) {
    metrics::gauge!(crate::telemetry::CHAT_CONNECTED, "platform" => "slack").set(if live > 0 {
        1.0
    } else {
        0.0
    });
}

/// A connection that said `hello`; the gauge counts it until it is dropped.
struct Live(());

impl Live {
    fn new() -> Live {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        *live += 1;
        set_connected(*live);
        Live(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        *live = live.saturating_sub(1);
        set_connected(*live);
    }
}

/// An open connection, counted as live.
struct Conn {
    ws: Ws,
    _live: Live,
}

/// How one connection ended.
enum Ended {
    /// Slack asked for a new connection; here it is, already open (None: opening it failed).
    Refreshed(Option<Box<Conn>>),
    /// Dropped or closed: reconnect after the backoff.
    Dropped,
}

/// Why a connection could not be opened.
enum OpenError {
    /// Retrying cannot help (the token was refused).
    Fatal(String),
    Retry(String),
}

impl SocketMode {
    pub fn new(
        settings: &Settings,
        inbound: Arc<Inbound>,
        store: Store,
    ) -> anyhow::Result<SocketMode> {
        let token = settings.slack.app_token.as_ref().ok_or_else(|| {
            anyhow::anyhow!("slack.mode = \"socket\" needs slack.app_token (xapp-…)")
        })?;
        Ok(SocketMode {
            inbound,
            store,
            authorization: SecretString::from(format!("Bearer {}", token.expose_secret())),
            keep_seen: Duration::from_secs(3600),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            ping_every: PING_EVERY,
            silence_limit: SILENCE_LIMIT,
        })
    }

    /// Pings every `ping_every`; a connection silent for `silence_limit` is dropped (tests
    /// shorten both from [`PING_EVERY`] and [`SILENCE_LIMIT`]).
    pub fn with_keepalive(mut self, ping_every: Duration, silence_limit: Duration) -> SocketMode {
        self.ping_every = ping_every;
        self.silence_limit = silence_limit.max(ping_every);
        self
    }

    /// Keeps a connection open until cancelled (the worker is dropped at shutdown) or Slack
    /// refuses the app token.
    pub async fn run(self: Arc<Self>) {
        let mut failures: u32 = 0;
        let mut ready: Option<Conn> = None;
        // Said before the first connection, so the gauge shows a runbot not connected yet.
        set_connected(*LIVE.lock().unwrap_or_else(|e| e.into_inner()));
        loop {
            let ws = match ready.take() {
                Some(ws) => ws,
                None => {
                    if failures > 0 {
                        let wait = backoff(failures);
                        tracing::warn!(
                            attempt = failures + 1,
                            wait_ms = wait.as_millis() as u64,
                            "Slack Socket Mode: reconnecting after a pause"
                        );
                        tokio::time::sleep(wait).await;
                    }
                    match self.open().await {
                        Ok(ws) => ws,
                        Err(OpenError::Fatal(why)) => {
                            tracing::error!("Slack Socket Mode: {why}; Socket Mode stops (commands and clicks are not received until runbot restarts)");
                            return;
                        }
                        Err(OpenError::Retry(why)) => {
                            tracing::warn!(error = %why, "Slack Socket Mode: cannot connect");
                            failures = failures.saturating_add(1);
                            continue;
                        }
                    }
                }
            };
            let up = Instant::now();
            let ended = self.serve(ws).await;
            if up.elapsed() >= HEALTHY {
                failures = 0;
            }
            match ended {
                Ended::Refreshed(next) => ready = next.map(|c| *c),
                Ended::Dropped => failures = failures.saturating_add(1),
            }
        }
    }

    /// `apps.connections.open`, the WebSocket, and its `hello`.
    async fn open(&self) -> Result<Conn, OpenError> {
        let adapter = &self.inbound.adapter;
        let answer = adapter
            .client()
            .post(format!("{}/apps.connections.open", adapter.api_base()))
            .header(
                reqwest::header::AUTHORIZATION,
                self.authorization.expose_secret(),
            )
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("")
            .send()
            .await
            .map_err(|e| {
                OpenError::Retry(format!(
                    "apps.connections.open: {}",
                    crate::domain::redact::request_error(e)
                ))
            })?;
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if body["ok"] != json!(true) {
            let error = body["error"].as_str().unwrap_or("no answer");
            let error = crate::domain::text::clip(error, 60);
            return Err(match error.as_str() {
                "invalid_auth" | "not_authed" | "not_allowed_token_type" | "account_inactive"
                | "token_revoked" | "missing_scope" => OpenError::Fatal(format!(
                    "Slack refused the app token ({error}): check slack.app_token (xapp-…, scope connections:write)"
                )),
                _ => OpenError::Retry(format!("apps.connections.open answered HTTP {status}: {error}")),
            });
        }
        let url = body["url"]
            .as_str()
            .filter(|u| u.starts_with("wss://") || u.starts_with("ws://"))
            .ok_or_else(|| {
                OpenError::Retry("apps.connections.open gave no ws(s):// address".into())
            })?;
        let config = WebSocketConfig {
            max_message_size: Some(MAX_MESSAGE_BYTES),
            max_frame_size: Some(MAX_MESSAGE_BYTES),
            ..WebSocketConfig::default()
        };
        let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
        let mut ws = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((ws, _))) => ws,
            // The error, not the address: its ticket opens a connection.
            Ok(Err(e)) => {
                return Err(OpenError::Retry(format!(
                    "connecting: {}",
                    crate::domain::redact::redact(&e.to_string())
                )))
            }
            Err(_) => {
                return Err(OpenError::Retry(format!(
                    "no connection within {CONNECT_TIMEOUT:?}"
                )))
            }
        };
        let hello = loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => break serde_json::from_str::<Value>(&t).ok(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                _ => break None,
            }
        };
        if hello.as_ref().and_then(|h| h["type"].as_str()) != Some("hello") {
            return Err(OpenError::Retry("no hello after connecting".into()));
        }
        tracing::info!("Slack Socket Mode: connected, receiving commands and clicks");
        Ok(Conn {
            ws,
            _live: Live::new(),
        })
    }

    /// One connection, from `hello` until it ends.
    async fn serve(self: &Arc<Self>, conn: Conn) -> Ended {
        // Counted as live until this returns.
        let Conn { ws, _live } = conn;
        let (mut sink, mut stream) = ws.split();
        // Acks from the envelopes' tasks, written here in order.
        let (acks, mut to_send) = mpsc::channel::<String>(MAX_IN_FLIGHT);
        let mut opening: Option<Opening> = None;
        let mut ping = tokio::time::interval_at(Instant::now() + self.ping_every, self.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        loop {
            // A write blocked by a dead peer must not outlast the silence limit either.
            let silent_at = heard + self.silence_limit;
            tokio::select! {
                () = tokio::time::sleep_until(silent_at) => {
                    tracing::warn!(silent_secs = self.silence_limit.as_secs_f64(), "Slack Socket Mode: nothing heard on the connection (pings unanswered); it counts as dropped, reconnecting");
                    return self.after_drop(opening).await;
                }
                _ = ping.tick() => {
                    match tokio::time::timeout_at(silent_at, sink.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        _ => {
                            tracing::warn!("Slack Socket Mode: the connection failed while pinging; reconnecting");
                            return self.after_drop(opening).await;
                        }
                    }
                }
                next = async { opening.as_mut().expect("guarded").await }, if opening.is_some() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(None))).await;
                    return Ended::Refreshed(match next {
                        Ok(ws) => Some(Box::new(ws)),
                        Err(OpenError::Fatal(why) | OpenError::Retry(why)) => {
                            tracing::warn!(error = %why, "Slack Socket Mode: could not open the next connection");
                            None
                        }
                    });
                }
                Some(ack) = to_send.recv() => {
                    if !matches!(tokio::time::timeout_at(silent_at, sink.send(Message::Text(ack))).await, Ok(Ok(()))) {
                        tracing::warn!("Slack Socket Mode: the connection failed while acknowledging; reconnecting");
                        return self.after_drop(opening).await;
                    }
                }
                message = stream.next() => {
                    if matches!(message, Some(Ok(_))) {
                        heard = Instant::now();
                    }
                    let text = match message {
                        None | Some(Ok(Message::Close(_))) => {
                            tracing::info!("Slack Socket Mode: the connection was closed");
                            return self.after_drop(opening).await;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %crate::domain::redact::redact(&e.to_string()), "Slack Socket Mode: the connection failed");
                            return self.after_drop(opening).await;
                        }
                        Some(Ok(Message::Text(t))) => t,
                        // Pings are answered by tungstenite; pongs only say the line is alive.
                        Some(Ok(_)) => continue,
                    };
                    let Ok(event) = serde_json::from_str::<Value>(&text) else {
                        tracing::warn!("Slack Socket Mode: a message that is not JSON; ignored");
                        continue;
                    };
                    match event["type"].as_str() {
                        Some("hello") => {}
                        Some("disconnect") => {
                            let reason = event["reason"].as_str().unwrap_or("");
                            if matches!(reason, "refresh_requested" | "warning") {
                                if opening.is_none() {
                                    tracing::info!(reason, "Slack Socket Mode: Slack asked for a new connection; opening it first");
                                    let me = self.clone();
                                    opening = Some(Box::pin(async move { me.open().await }));
                                }
                            } else {
                                tracing::warn!(reason = %crate::domain::text::clip(reason, 40), "Slack Socket Mode: Slack is closing the connection; reconnecting");
                                return Ended::Dropped;
                            }
                        }
                        Some("slash_commands" | "interactive" | "events_api") => {
                            self.receive(event, acks.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The old connection ended while the next one was being opened: wait for that one.
    async fn after_drop(&self, opening: Option<Opening>) -> Ended {
        match opening {
            Some(o) => Ended::Refreshed(o.await.ok().map(Box::new)),
            None => Ended::Dropped,
        }
    }

    /// Handles one envelope in a task of its own, so the connection keeps reading meanwhile.
    fn receive(self: &Arc<Self>, envelope: Value, acks: mpsc::Sender<String>) {
        let received = Instant::now();
        let Some(id) = envelope["envelope_id"]
            .as_str()
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(str::to_string)
        else {
            tracing::warn!("Slack Socket Mode: an envelope without a valid envelope_id; ignored");
            return;
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!("Slack Socket Mode: {MAX_IN_FLIGHT} envelopes already being handled; one left for Slack to redeliver");
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            me.handle(id, envelope, acks, received).await;
            drop(permit);
        });
    }

    async fn handle(
        &self,
        id: String,
        envelope: Value,
        acks: mpsc::Sender<String>,
        received: Instant,
    ) {
        let ack = |payload: Option<Value>| {
            let mut a = json!({ "envelope_id": id });
            if let Some(p) = payload {
                a["payload"] = p;
            }
            a.to_string()
        };
        let kind = envelope["type"].as_str().unwrap_or_default().to_string();
        let accepts = envelope["accepts_response_payload"] == json!(true);
        let payload = &envelope["payload"];
        match first_sight(
            &self.store,
            SEEN_ENVELOPES,
            &id,
            self.keep_seen,
            chrono::Utc::now(),
        )
        .await
        {
            Ok(()) => {}
            Err(refusal @ Refusal::Replayed) => {
                metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "slack", "reason" => refusal.label()).increment(1);
                tracing::info!(envelope = %id, "Slack Socket Mode: an envelope delivered again; it was handled once already");
                let _ = acks.send(ack(None)).await;
                return;
            }
            Err(refusal) => {
                metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "slack", "reason" => refusal.label()).increment(1);
                tracing::warn!(envelope = %id, reason = refusal.message(), "Slack envelope refused");
                let answer = (kind == "slash_commands" && accepts)
                    .then(|| inbound::refusal(refusal.message()));
                let _ = acks.send(ack(answer)).await;
                return;
            }
        }
        match kind.as_str() {
            "slash_commands" => {
                let slash = match inbound::slash_command(payload) {
                    Ok(s) => s,
                    Err(why) => {
                        metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "slack", "reason" => Refusal::Malformed.label()).increment(1);
                        tracing::warn!(envelope = %id, reason = %why, "Slack slash command refused");
                        let _ = acks
                            .send(ack(accepts.then(|| inbound::refusal(&why))))
                            .await;
                        return;
                    }
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                let inbound = self.inbound.clone();
                // Its own task: if the answer misses the ack, it still goes, by response_url.
                tokio::spawn(async move {
                    let (body, url) = inbound.command(slash).await;
                    if let Err((body, url)) = tx.send((body, url)) {
                        if let Err(e) = url.post_body(&body).await {
                            tracing::warn!(error = ?e, "Slack: could not post a command's first answer");
                        }
                        url.open();
                    }
                });
                let budget = ANSWER_IN_ACK.saturating_sub(received.elapsed());
                match tokio::time::timeout(budget, rx).await {
                    Ok(Ok((body, url))) => {
                        if accepts {
                            if acks.send(ack(Some(body.clone()))).await.is_err() {
                                // The connection went before the ack: the answer goes the
                                // other way (a redelivery is passed over).
                                let _ = url.post_body(&body).await;
                            }
                        } else {
                            let _ = acks.send(ack(None)).await;
                            if let Err(e) = url.post_body(&body).await {
                                tracing::warn!(error = ?e, "Slack: could not post a command's first answer");
                            }
                        }
                        url.open();
                    }
                    _ => {
                        tracing::warn!(envelope = %id, "Slack Socket Mode: the first answer was not ready within 2 s; it goes by response_url");
                        let _ = acks.send(ack(None)).await;
                    }
                }
            }
            "interactive" => {
                let _ = acks.send(ack(None)).await;
                if payload["type"] != json!("block_actions") {
                    return;
                }
                match inbound::block_actions(payload) {
                    Ok(click) => self.inbound.click(click).await,
                    Err(why) => {
                        metrics::counter!(crate::telemetry::INTERACTIONS_REFUSED, "platform" => "slack", "reason" => Refusal::Malformed.label()).increment(1);
                        tracing::warn!(envelope = %id, reason = %why, "Slack click refused");
                    }
                }
            }
            // runbot subscribes to no events; acknowledged so Slack does not resend them.
            _ => {
                let _ = acks.send(ack(None)).await;
            }
        }
    }
}

/// 1 s, 2 s, 4 s, … up to 30 s, each with up to a tenth more at random so that replicas do
/// not reconnect in step.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(LONGEST_BACKOFF);
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(failures);
    let fraction = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    base + base.mul_f64(fraction / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_is_one_while_a_connection_is_up() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let gauge = || {
            handle
                .render()
                .lines()
                .find_map(|l| l.strip_prefix("runbot_chat_connected{platform=\"slack\"} "))
                .map(str::to_string)
        };
        metrics::with_local_recorder(&recorder, || {
            let first = Live::new();
            assert_eq!(gauge().as_deref(), Some("1"));
            // A refresh: the next connection is up before the old one goes.
            let next = Live::new();
            drop(first);
            assert_eq!(gauge().as_deref(), Some("1"));
            drop(next);
            assert_eq!(gauge().as_deref(), Some("0"));
        });
    }

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        for (n, low) in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)] {
            let wait = backoff(n);
            let low = Duration::from_secs(low);
            assert!(wait >= low && wait <= low + low / 10, "{n}: {wait:?}");
        }
    }
}
