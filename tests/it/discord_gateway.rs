//! Discord in gateway mode (`discord.mode = "gateway"`): runbot opens the Gateway connection to
//! the fake Discord, receives interactions as `INTERACTION_CREATE` and answers them through
//! the callback route, with the same answers and refusals as over HTTP. The connection
//! survives what Discord does to it (a drop, op 7, op 9, missing heartbeat acks), and an
//! interaction delivered twice runs once, one replayed long after it was made not at all.

use crate::common;

use std::time::Duration;

use common::rig::policies_dir;
use common::{webhook, Db, Options, TestApp};
use fake_discord::{FakeDiscord, FakeUser, GatewayView};
use serde_json::{json, Value};

const BOT_TOKEN: &str = "fake-bot-token-0123456789abcdef";
const CHANNEL: u64 = 111_111_111_111_111_111;
const WAIT: Duration = Duration::from_secs(10);

async fn fake() -> FakeDiscord {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    // Discord's is 41.25 s; a short one lets a test see heartbeats and missing acks.
    fake.set_heartbeat_interval(Duration::from_millis(1000));
    fake
}

/// runbot in gateway mode against the fake: no public key, no inbound route.
async fn start(fake: &FakeDiscord) -> TestApp {
    let policies = policies_dir(fake);
    let app = TestApp::spawn_with(
        Options::new(Db::Sqlite)
            .set("RUNBOT__DISCORD__MODE", "gateway")
            .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
            .set("RUNBOT__DISCORD__ALERT_CHANNEL_ID", &CHANNEL.to_string())
            .set("RUNBOT__DISCORD__API_BASE", &fake.base_url())
            .set("RUNBOT__DISCORD__APPLICATION_ID", fake.application_id())
            .set("RUNBOT__POLICY__DIR", &policies.display().to_string()),
    )
    .await;
    fake.gateway_wait_connected(WAIT).await;
    app
}

fn ana() -> FakeUser {
    FakeUser::new(1_300_000_000_000_000_001, "Ana Ops", &["DevOps Lead"])
}

fn dev() -> FakeUser {
    FakeUser::new(1_300_000_000_000_000_004, "Dev", &["Developer"])
}

fn lead() -> FakeUser {
    FakeUser::new(1_300_000_000_000_000_003, "Bruno", &["Backend Lead"])
}

/// The steps of the audit trail, in order.
fn audit_steps(app: &TestApp) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"))
        .args(["audit", "export", "--format", "jsonl"])
        .env("RUNBOT__DATABASE__URL", &app.database_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Callbacks the fake received for one interaction.
fn callbacks_for(fake: &FakeDiscord, id: &str) -> Vec<fake_discord::Callback> {
    fake.gateway_callbacks()
        .into_iter()
        .filter(|c| c.interaction_id == id)
        .collect()
}

#[tokio::test]
async fn a_command_and_a_refusal_are_answered_through_the_callback() {
    let fake = fake().await;
    let app = start(&fake).await;

    // One IDENTIFY as Discord wants it: the bot token, no intents, the properties.
    let identify = fake.gateway_identifies().remove(0);
    assert_eq!(identify["d"]["token"], BOT_TOKEN);
    assert_eq!(identify["d"]["intents"], 0);
    assert_eq!(identify["d"]["properties"]["browser"], "runbot");

    // The HTTP route is off in gateway mode, and says why.
    let r = app
        .client
        .post(format!("{}/discord/interactions", app.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("gateway mode is on"));

    let status = fake.slash_command("status", &[], &ana(), CHANNEL);
    fake.gateway_dispatch_interaction(&status);
    let callback = fake.gateway_wait_for_callback(&status.id, WAIT).await;
    assert!(
        [4, 5].contains(&callback.body["type"].as_u64().unwrap()),
        "{}",
        callback.body
    );
    // No Docker project is set here: the answer says what to set, as over HTTP.
    let i = fake
        .wait_for_interaction(&status.id, WAIT, |i| i.content().contains("docker.project"))
        .await;
    assert!(i.failure.is_none(), "{:?}", i.failure);
    assert!(i.latency.unwrap() < Duration::from_secs(3));

    // A refusal by policy, with the reason, only to the requester.
    let restart = fake.slash_command("restart", &[("service", json!("backend"))], &dev(), CHANNEL);
    fake.gateway_dispatch_interaction(&restart);
    let callback = fake.gateway_wait_for_callback(&restart.id, WAIT).await;
    assert_eq!(callback.body["type"], 4, "{}", callback.body);
    assert_eq!(callback.body["data"]["flags"], 64);
    let text = callback.body["data"]["content"].as_str().unwrap();
    assert!(
        text.contains("/restart needs devops-lead or backend-lead")
            && text.contains("you hold developer"),
        "{text}"
    );
    assert!(audit_steps(&app).contains(&"denied".to_string()));

    // Heartbeats carry the last sequence number runbot saw.
    let view = fake
        .gateway_wait_until(WAIT, "a heartbeat after the dispatches", |g| {
            g.heartbeats.iter().any(|h| h.as_u64() == Some(g.seq))
        })
        .await;
    assert!(view.seq >= 3, "READY and two interactions: {}", view.seq);
    app.stop().await;
}

#[tokio::test]
async fn a_button_on_a_card_and_a_confirmation_prompt_work_over_the_gateway() {
    let fake = fake().await;
    let app = start(&fake).await;
    // A command that asks for confirmation: the prompt, then its Confirm button. (Before any
    // alert: during a Sev1 the same /restart waits for a second person instead.)
    let restart = fake.slash_command("restart", &[("service", json!("worker"))], &lead(), CHANNEL);
    fake.gateway_dispatch_interaction(&restart);
    let callback = fake.gateway_wait_for_callback(&restart.id, WAIT).await;
    assert_eq!(callback.body["type"], 4, "{}", callback.body);
    let prompt = fake.interaction(&restart.id).original.expect("the prompt");
    assert!(prompt.is_ephemeral());
    let confirm = prompt
        .custom_ids()
        .into_iter()
        .find(|c| c.ends_with(":confirm"))
        .expect("a Confirm button");
    let click = fake.button_click(&prompt.id, &confirm, &lead(), CHANNEL);
    fake.gateway_dispatch_interaction(&click);
    let callback = fake.gateway_wait_for_callback(&click.id, WAIT).await;
    assert_eq!(
        callback.body["type"], 7,
        "the prompt is replaced: {}",
        callback.body
    );
    let i = fake
        .wait_for_interaction(&click.id, WAIT, |i| !i.edits.is_empty())
        .await;
    assert!(
        i.content().contains("set docker.project"),
        "{}",
        i.content()
    );
    assert!(
        i.components().is_empty(),
        "no buttons on an answered prompt"
    );

    // A button on an alert card.
    let alert = json!({"severity": "critical", "instance": "api-1:8000"});
    let body = webhook(
        "APIDown",
        "firing",
        &[("aaaa000000000001", "firing", alert)],
    );
    assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    let card = fake
        .wait_for(WAIT, "the alert card", |messages, _| {
            messages
                .iter()
                .find(|m| m.interaction_id.is_none())
                .cloned()
        })
        .await;
    let ack = card
        .custom_ids()
        .into_iter()
        .nth(4)
        .expect("the APIDown card's fifth button");

    let click = fake.button_click(&card.id, &ack, &lead(), CHANNEL);
    fake.gateway_dispatch_interaction(&click);
    let callback = fake.gateway_wait_for_callback(&click.id, WAIT).await;
    assert_eq!(callback.body["type"], 5, "deferred: {}", callback.body);
    let i = fake
        .wait_for_interaction(&click.id, WAIT, |i| !i.edits.is_empty())
        .await;
    assert!(
        i.content().contains("Bruno** acknowledged APIDown"),
        "{}",
        i.content()
    );
    fake.wait_for(WAIT, "the card to say who acknowledged", |messages, _| {
        messages
            .iter()
            .find(|m| m.id == card.id)
            .is_some_and(|m| {
                m.body["embeds"][0]["description"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Acknowledged by **Bruno**")
            })
            .then_some(())
    })
    .await;

    let steps = audit_steps(&app);
    let confirmed = steps.iter().position(|s| s == "confirmed");
    let requested = steps.iter().position(|s| s == "requested");
    assert!(
        requested.is_some() && requested < confirmed,
        "requested, then confirmed: {steps:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_is_resumed_and_what_was_sent_meanwhile_runs_once() {
    let fake = fake().await;
    let app = start(&fake).await;
    let before = fake.slash_command("status", &[], &ana(), CHANNEL);
    let seen = fake.gateway_dispatch_interaction(&before);
    fake.gateway_wait_for_callback(&before.id, WAIT).await;

    // The network fails; an interaction is dispatched while runbot is away.
    assert!(fake.gateway_drop());
    let during = fake.slash_command("restart", &[("service", json!("backend"))], &dev(), CHANNEL);
    fake.gateway_dispatch_interaction(&during);

    // runbot resumes on resume_gateway_url (the fake refuses a RESUME elsewhere) with the last
    // sequence it saw, and gets what it missed.
    let view = fake
        .gateway_wait_until(WAIT, "a RESUME", |g| !g.resumes.is_empty() && g.connected)
        .await;
    assert_eq!(view.identifies.len(), 1, "resumed, not identified again");
    let resume = &view.resumes[0]["d"];
    assert_eq!(resume["token"], BOT_TOKEN);
    assert_eq!(resume["seq"], seen, "the last sequence runbot saw");
    let callback = fake.gateway_wait_for_callback(&during.id, WAIT).await;
    assert!(callback.body["data"]["content"]
        .as_str()
        .unwrap()
        .contains("you hold developer"));

    // Replayed again (as a second RESUME from an older seq would): not run, not answered.
    fake.gateway_dispatch_interaction(&during);
    fake.gateway_dispatch_interaction(&before);
    let after = fake.slash_command("status", &[], &ana(), CHANNEL);
    fake.gateway_dispatch_interaction(&after);
    fake.gateway_wait_for_callback(&after.id, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(callbacks_for(&fake, &during.id).len(), 1);
    assert_eq!(callbacks_for(&fake, &before.id).len(), 1);
    assert_eq!(
        audit_steps(&app).iter().filter(|s| *s == "denied").count(),
        1,
        "the refused /restart is in the trail once"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_interaction_delivered_twice_runs_once() {
    let fake = fake().await;
    let app = start(&fake).await;
    let restart = fake.slash_command("restart", &[("service", json!("backend"))], &dev(), CHANNEL);
    fake.gateway_dispatch_interaction(&restart);
    fake.gateway_dispatch_interaction(&restart);
    fake.gateway_wait_for_callback(&restart.id, WAIT).await;
    // Another one after both, to know the second delivery was read and passed over.
    let marker = fake.slash_command("status", &[], &ana(), CHANNEL);
    fake.gateway_dispatch_interaction(&marker);
    fake.gateway_wait_for_callback(&marker.id, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let callbacks = callbacks_for(&fake, &restart.id);
    assert_eq!(callbacks.len(), 1, "{callbacks:?}");
    assert_eq!(callbacks[0].status, 204);
    assert_eq!(
        audit_steps(&app).iter().filter(|s| *s == "denied").count(),
        1
    );
    app.stop().await;
}

/// A line of `/metrics` (name and labels as written), once it shows `value`; panics after
/// `timeout` with the whole page.
async fn wait_for_metric(app: &TestApp, line: &str, value: f64, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        let now = text
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse::<f64>().ok());
        if now == Some(value) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{line} is {now:?}, not {value}, after {timeout:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CONNECTED: &str = "runbot_chat_connected{platform=\"discord\"}";

#[tokio::test]
async fn an_interaction_replayed_long_after_it_was_made_is_not_run() {
    let fake = fake().await;
    let app = start(&fake).await;
    // As a RESUME replays one made a minute ago: Discord showed it failed long since.
    let restart = fake.slash_command("restart", &[("service", json!("backend"))], &dev(), CHANNEL);
    let stale = fake.backdate_interaction(&restart, Duration::from_secs(60));
    fake.gateway_dispatch_interaction(&stale);
    // Another one after it, to know the stale one was read and passed over.
    let marker = fake.slash_command("status", &[], &ana(), CHANNEL);
    fake.gateway_dispatch_interaction(&marker);
    fake.gateway_wait_for_callback(&marker.id, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        callbacks_for(&fake, &stale.id).is_empty(),
        "no callback Discord would refuse"
    );
    assert!(
        !audit_steps(&app).contains(&"denied".to_string()),
        "not run: {:?}",
        audit_steps(&app)
    );
    wait_for_metric(
        &app,
        "runbot_interactions_refused_total{platform=\"discord\",reason=\"Stale\"}",
        1.0,
        WAIT,
    )
    .await;
    // A fresh one still runs.
    let fresh = fake.slash_command("restart", &[("service", json!("backend"))], &dev(), CHANNEL);
    fake.gateway_dispatch_interaction(&fresh);
    fake.gateway_wait_for_callback(&fresh.id, WAIT).await;
    assert!(audit_steps(&app).contains(&"denied".to_string()));
    app.stop().await;
}

#[tokio::test]
async fn a_resume_url_that_keeps_refusing_is_given_up_for_a_new_session() {
    let fake = fake().await;
    // The host READY names for resuming refuses connections (gone from DNS, moved).
    fake.set_resume_url_refusing(true);
    let app = start(&fake).await;
    wait_for_metric(&app, CONNECTED, 1.0, WAIT).await;
    let gateway_bot = || {
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/gateway/bot"))
            .count()
    };
    assert_eq!(gateway_bot(), 1);

    let at = std::time::Instant::now();
    assert!(fake.gateway_drop());
    wait_for_metric(&app, CONNECTED, 0.0, WAIT).await;
    // Three refused connections (two backoffs, 1 s and 2 s, between them), then a new session
    // on the address /gateway/bot answers.
    let view = fake
        .gateway_wait_until(Duration::from_secs(30), "a second IDENTIFY", |g| {
            g.identifies.len() == 2 && g.connected
        })
        .await;
    assert!(at.elapsed() >= Duration::from_secs(3), "{:?}", at.elapsed());
    assert!(view.resumes.is_empty(), "{:?}", view.resumes);
    assert_eq!(gateway_bot(), 2, "the address asked again");
    wait_for_metric(&app, CONNECTED, 1.0, WAIT).await;
    still_answers(&fake).await;
    app.stop().await;
}

/// After op 7, op 9 and a silent Discord, runbot is connected again and still answers.
async fn still_answers(fake: &FakeDiscord) {
    let status = fake.slash_command("status", &[], &ana(), CHANNEL);
    fake.gateway_dispatch_interaction(&status);
    fake.gateway_wait_for_callback(&status.id, WAIT).await;
}

#[tokio::test]
async fn reconnect_and_invalid_session_are_followed() {
    let fake = fake().await;
    let app = start(&fake).await;
    let resumed = |n: usize| move |g: &GatewayView| g.resumes.len() == n && g.connected;

    // op 7: reconnect and resume.
    assert!(fake.gateway_reconnect());
    fake.gateway_wait_until(WAIT, "a RESUME after op 7", resumed(1))
        .await;
    still_answers(&fake).await;

    // op 9, resumable: resume.
    assert!(fake.gateway_invalid_session(true));
    fake.gateway_wait_until(WAIT, "a RESUME after op 9 true", resumed(2))
        .await;
    still_answers(&fake).await;

    // op 9, not resumable: IDENTIFY again, after Discord's 1 to 5 s.
    let at = std::time::Instant::now();
    assert!(fake.gateway_invalid_session(false));
    let view = fake
        .gateway_wait_until(WAIT, "a second IDENTIFY", |g| {
            g.identifies.len() == 2 && g.connected
        })
        .await;
    assert!(at.elapsed() >= Duration::from_secs(1), "{:?}", at.elapsed());
    assert_eq!(view.resumes.len(), 2, "no RESUME of a session that is gone");
    // runbot closed the connections it left with a code that keeps the session (not 1000).
    assert!(
        view.client_closes.iter().all(|c| *c == Some(4000)),
        "{:?}",
        view.client_closes
    );
    still_answers(&fake).await;
    app.stop().await;
}

#[tokio::test]
async fn missing_heartbeat_acks_make_runbot_resume_and_a_refused_token_stops_it() {
    let fake = fake().await;
    let app = start(&fake).await;
    fake.set_heartbeat_acks(false);
    let view = fake
        .gateway_wait_until(WAIT, "a RESUME after unacknowledged heartbeats", |g| {
            !g.resumes.is_empty()
        })
        .await;
    assert!(
        view.client_closes.contains(&Some(4000)),
        "{:?}",
        view.client_closes
    );
    fake.set_heartbeat_acks(true);
    fake.gateway_wait_connected(WAIT).await;
    still_answers(&fake).await;
    wait_for_metric(&app, CONNECTED, 1.0, WAIT).await;

    // 4004: the token was refused. Retrying cannot help: runbot stops trying.
    let connections = fake
        .gateway_wait_until(WAIT, "connected", |g| g.connected)
        .await
        .connections;
    assert!(fake.gateway_close(4004));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = fake.gateway_wait_until(WAIT, "the state", |_| true).await;
    assert!(!view.connected);
    assert_eq!(
        view.connections, connections,
        "no new connection after 4004"
    );
    // The worker stopped: not connected, and /metrics says so.
    wait_for_metric(&app, CONNECTED, 0.0, WAIT).await;
    app.stop().await;
}

#[tokio::test]
async fn gateway_mode_settings_are_checked() {
    let load = |env: &[(&str, &str)]| {
        runbot::config::Settings::load_from(
            None,
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    };
    // Without a token or an application id, gateway mode cannot work: each is named.
    let err = format!(
        "{:#}",
        load(&[("RUNBOT__DISCORD__MODE", "gateway")]).unwrap_err()
    );
    assert!(
        err.contains("discord.mode = \"gateway\" needs discord.bot_token")
            && err.contains("discord.mode = \"gateway\" needs discord.application_id"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        load(&[
            ("RUNBOT__DISCORD__MODE", "gateway"),
            ("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN),
            ("RUNBOT__DISCORD__ALERT_CHANNEL_ID", "1200000000000000001"),
        ])
        .unwrap_err()
    );
    assert!(err.contains("needs discord.application_id"), "{err}");
    assert!(!err.contains("needs discord.bot_token"), "{err}");
    assert!(!err.contains(BOT_TOKEN), "no secret in the message: {err}");
    let err = format!(
        "{:#}",
        load(&[("RUNBOT__DISCORD__MODE", "websocket")]).unwrap_err()
    );
    assert!(
        err.contains("discord.mode") || err.contains("websocket"),
        "{err}"
    );

    // A complete gateway mode needs no public key, and check-config says which mode.
    let good = [
        ("RUNBOT__DISCORD__MODE", "gateway"),
        ("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN),
        ("RUNBOT__DISCORD__ALERT_CHANNEL_ID", "1200000000000000001"),
        ("RUNBOT__DISCORD__APPLICATION_ID", "1180000000000000001"),
    ];
    load(&good).expect("gateway mode without a public key is valid");
    let dir = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            c.env_remove(k);
        }
    }
    let out = c
        .current_dir(dir.path())
        .arg("check-config")
        .envs(good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("discord              gateway mode"),
        "{stdout}"
    );
    assert!(!stdout.contains(BOT_TOKEN));
}

/// The fake Gateway refuses what Discord refuses, so the tests above prove something.
#[tokio::test]
async fn the_fake_gateway_refuses_what_discord_refuses() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;
    async fn open(url: &str) -> Ws {
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }
    /// The next JSON message, or the close code.
    async fn next(ws: &mut Ws) -> Result<Value, Option<u16>> {
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(f))) => return Err(f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                _ => return Err(None),
            }
        }
    }
    async fn say(ws: &mut Ws, v: Value) {
        ws.send(Message::Text(v.to_string())).await.unwrap();
    }
    let identify = |token: &str| {
        json!({"op": 2, "d": {"token": token, "intents": 0,
            "properties": {"os": "linux", "browser": "t", "device": "t"}}})
    };
    let fake = fake().await;
    let http = reqwest::Client::new();
    let gateway_bot = |auth: Option<&str>| {
        let mut r = http
            .get(format!("{}/api/v10/gateway/bot", fake.base_url()))
            .header("user-agent", "DiscordBot (https://example.com, 1)");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(gateway_bot(None).await.unwrap().status(), 401);
    let answer: Value = gateway_bot(Some(&format!("Bot {BOT_TOKEN}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let base = answer["url"].as_str().unwrap().to_string();
    assert_eq!(base, fake.gateway_url());
    assert_eq!(answer["session_start_limit"]["max_concurrency"], 1);
    let url = format!("{base}/?v=10&encoding=json");

    // No API version: 4012. A wrong token: 4004. Anything before IDENTIFY: 4003.
    let mut ws = open(&format!("{base}/")).await;
    assert_eq!(next(&mut ws).await, Err(Some(4012)));
    let mut ws = open(&url).await;
    let hello = next(&mut ws).await.unwrap();
    assert_eq!(
        (
            hello["op"].as_u64(),
            hello["d"]["heartbeat_interval"].as_u64()
        ),
        (Some(10), Some(1000))
    );
    say(&mut ws, identify("not-the-token-0123456789")).await;
    assert_eq!(next(&mut ws).await, Err(Some(4004)));
    let mut ws = open(&url).await;
    next(&mut ws).await.unwrap();
    say(&mut ws, json!({"op": 3, "d": {}})).await;
    assert_eq!(next(&mut ws).await, Err(Some(4003)));

    // IDENTIFY → READY; an interaction arrives with the next `s`.
    let mut ws = open(&url).await;
    next(&mut ws).await.unwrap();
    say(&mut ws, identify(BOT_TOKEN)).await;
    let ready = next(&mut ws).await.unwrap();
    assert_eq!(
        (ready["t"].as_str(), ready["s"].as_u64()),
        (Some("READY"), Some(1))
    );
    let session = ready["d"]["session_id"].as_str().unwrap().to_string();
    let resume_url = ready["d"]["resume_gateway_url"]
        .as_str()
        .unwrap()
        .to_string();
    say(&mut ws, json!({"op": 1, "d": 1})).await;
    assert_eq!(next(&mut ws).await.unwrap()["op"], 11);
    let status = fake.slash_command("status", &[], &ana(), CHANNEL);
    fake.gateway_dispatch_interaction(&status);
    let event = next(&mut ws).await.unwrap();
    assert_eq!(
        (event["t"].as_str(), event["s"].as_u64()),
        (Some("INTERACTION_CREATE"), Some(2))
    );
    assert_eq!(event["d"], status.body);

    // The callback: its body checked, taken once; unknown ids and tokens are 10062.
    let callback = |id: &str, token: &str, body: Value| {
        http.post(format!(
            "{}/api/v10/interactions/{id}/{token}/callback",
            fake.base_url()
        ))
        .header("user-agent", "DiscordBot (https://example.com, 1)")
        .json(&body)
        .send()
    };
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body["code"].as_u64())
    };
    let good = json!({"type": 4, "data": {"content": "hi", "flags": 64}});
    let r = callback(
        &status.id,
        &status.token,
        json!({"type": 4, "data": {"content": "", "bogus": 1}}),
    );
    assert_eq!(code(r.await.unwrap()).await, (400, Some(50035)));
    let r = callback(&status.id, "not-its-token", good.clone());
    assert_eq!(code(r.await.unwrap()).await, (404, Some(10062)));
    let r = callback(&status.id, &status.token, good.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = callback(&status.id, &status.token, good.clone());
    assert_eq!(code(r.await.unwrap()).await, (400, Some(40060)));
    // Too late: Discord forgets an interaction unanswered for 3 s.
    fake.set_interaction_deadline(Duration::from_millis(100));
    let late = fake.slash_command("status", &[], &ana(), CHANNEL);
    fake.gateway_dispatch_interaction(&late);
    next(&mut ws).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = callback(&late.id, &late.token, good.clone());
    assert_eq!(code(r.await.unwrap()).await, (404, Some(10062)));
    drop(ws);

    // RESUME: only on resume_gateway_url, with a seq the session reached; it replays the rest.
    let resume =
        |seq: u64| json!({"op": 6, "d": {"token": BOT_TOKEN, "session_id": session, "seq": seq}});
    let mut ws = open(&url).await;
    next(&mut ws).await.unwrap();
    say(&mut ws, resume(1)).await;
    assert_eq!(
        next(&mut ws).await.unwrap(),
        json!({"op": 9, "s": null, "t": null, "d": false})
    );
    let resume_at = format!("{resume_url}?v=10&encoding=json");
    let mut ws = open(&resume_at).await;
    next(&mut ws).await.unwrap();
    say(&mut ws, resume(99)).await;
    assert_eq!(next(&mut ws).await, Err(Some(4007)));
    let mut ws = open(&resume_at).await;
    next(&mut ws).await.unwrap();
    say(&mut ws, resume(1)).await;
    let replayed: Vec<(Option<u64>, Option<String>)> = [
        next(&mut ws).await,
        next(&mut ws).await,
        next(&mut ws).await,
    ]
    .into_iter()
    .map(|e| {
        let e = e.unwrap();
        (e["s"].as_u64(), e["t"].as_str().map(str::to_string))
    })
    .collect();
    assert_eq!(
        replayed,
        [
            (Some(2), Some("INTERACTION_CREATE".to_string())),
            (Some(3), Some("INTERACTION_CREATE".to_string())),
            (Some(4), Some("RESUMED".to_string())),
        ]
    );
}
