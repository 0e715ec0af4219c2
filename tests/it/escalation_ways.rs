//! Escalation through the other ways out: a page by email to a real SMTP server, a signed
//! webhook retried after a 503, and a rotation's hand-off (then an override) under a test
//! clock.

use crate::common;
use crate::escalation::{
    ana_week, chains, dms, policies, with_discord, BOT_TOKEN, CHANNEL, LUIS, MARTA, ONCALL, PEOPLE,
};
use crate::notify::{receiver_accepts, Delivery};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use common::{webhook, Db, Options, TestApp};
use fake_discord::FakeDiscord;
use serde_json::{json, Value};

const SECRET: &str = "sms-gateway-shared-secret-0123";

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}", nanos % 1_000_000_000_000)
}

fn sev1(alertname: &str, fingerprint: &str) -> Value {
    webhook(
        alertname,
        "firing",
        &[(
            fingerprint,
            "firing",
            json!({"severity": "critical", "instance": "api-1:8000"}),
        )],
    )
}

/// The shipped policies, with `people` instead of the default people file.
fn policies_with(dir: &Path, people: &str, oncall: &str, chains: &str) -> PathBuf {
    let p = policies(dir, oncall, chains);
    std::fs::write(p.join("people.toml"), people).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sev1_pages_ana_by_email_through_a_real_smtp_server() {
    let port = std::env::var("RUNBOT_TEST_SMTP_PORT").expect("RUNBOT_TEST_SMTP_PORT is not set");
    let sink: PathBuf = std::env::var("RUNBOT_TEST_SMTP_DIR")
        .expect("RUNBOT_TEST_SMTP_DIR is not set")
        .into();
    let people = PEOPLE.replacen(
        "console = \"ana\"\n",
        "console = \"ana\"\nemail = \"ana@example.com\"\n",
        1,
    );
    assert_ne!(people, PEOPLE);
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies_with(dir.path(), &people, ONCALL, &chains("1h"));
    let app = TestApp::spawn_with(
        with_discord(Options::new(Db::Sqlite), &fake, &policies)
            .set("RUNBOT__EMAIL__HOST", "127.0.0.1")
            .set("RUNBOT__EMAIL__PORT", &port)
            .set("RUNBOT__EMAIL__TLS", "none")
            .set("RUNBOT__EMAIL__FROM", "Runbot <runbot@example.com>")
            .clock_from(ana_week()),
    )
    .await;
    // A name no earlier run against the same sink used.
    let name = unique("MailPath");
    assert_eq!(
        app.post_webhook(sev1(&name, "cccc000000000001").to_string())
            .await
            .status(),
        200
    );
    let needle = "X-Rcpt-Args: <ana@example.com>";
    let start = Instant::now();
    let found = loop {
        let found: Vec<String> = std::fs::read_dir(&sink)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .filter(|t| t.contains(&name))
            .collect();
        if !found.is_empty() {
            // Give a duplicate the time to show up before counting.
            tokio::time::sleep(Duration::from_secs(2)).await;
            break std::fs::read_dir(&sink)
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
                .filter(|t| t.contains(&name))
                .collect::<Vec<_>>();
        }
        if start.elapsed() > Duration::from_secs(10) {
            let store = app.store().await;
            let pages = store.pages_of_group(1).await.unwrap();
            panic!(
                "no message about {name} in {}; pages {pages:?}",
                sink.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found.len(), 1, "one message, not {}", found.len());
    let msg = &found[0];
    assert!(msg.contains(needle), "{msg}");
    let subject = msg
        .lines()
        .find(|l| l.starts_with("Subject: "))
        .unwrap_or_else(|| panic!("no subject in {msg}"));
    assert!(subject.contains(&name), "{subject}");
    // Luis is not on call: no message to anybody else about this group.
    assert!(!msg.contains("X-Rcpt-Args: <luis"), "{msg}");
    app.stop().await;
}

/// Answers 503 to the first delivery, 204 after, recording each.
async fn flaky_receiver() -> (u16, Arc<Mutex<Vec<(Instant, Delivery)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let mut seen = record.lock().unwrap();
                seen.push((Instant::now(), Delivery::new(headers, body.to_vec())));
                if seen.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_page_answered_503_is_retried_with_backoff_signed_and_ends_sent() {
    let (port, seen) = flaky_receiver().await;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let all = chains("1h");
    let first = "steps = [\n  { notify = [\"role:devops-lead\"] },\n  { after = \"1h\", notify = [\"role:cto\"] },\n]";
    let chain = all.replacen(
        first,
        r#"steps = [{ notify = ["role:devops-lead", "webhook:sms"] }]"#,
        1,
    );
    assert_ne!(chain, all);
    let policies = policies(dir.path(), ONCALL, &chain);
    let mut opts = with_discord(Options::new(Db::Sqlite), &fake, &policies).clock_from(ana_week());
    opts.config_toml = format!(
        r#"
[[notify.webhooks]]
name = "sms"
url = "http://127.0.0.1:{port}/hook"
secret = "{SECRET}"
"#
    );
    let app = TestApp::spawn_with(opts).await;
    assert_eq!(
        app.post_webhook(sev1("APIDown", "dddd000000000001").to_string())
            .await
            .status(),
        200
    );
    let start = Instant::now();
    while seen.lock().unwrap().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the webhook got {} deliveries",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let gap = seen[1].0 - seen[0].0;
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    for (_, d) in &seen {
        assert!(receiver_accepts(SECRET, d), "the signature does not verify");
        assert!(!receiver_accepts("another-secret-0123456789", d));
    }
    let body: Value = serde_json::from_slice(seen[1].1.body()).unwrap();
    assert!(body.to_string().contains("APIDown"), "{body}");
    let group = app.groups().await[0]["id"].as_i64().unwrap();
    let store = app.store().await;
    let start = Instant::now();
    loop {
        let pages = store.pages_of_group(group).await.unwrap();
        let hook: Vec<_> = pages.iter().filter(|p| p.2 == "webhook").collect();
        assert_eq!(hook.len(), 1, "{pages:?}");
        if hook[0].3 == "sent" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{pages:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
    // Ana (on call this week) is paged too.
    dms(&fake, crate::escalation::ANA, 1, Duration::from_secs(5)).await;
    app.stop().await;
}

/// Asks a command from the console as the signed-in browser, and waits for its final answer.
async fn command(b: &common::Browser, csrf: &str, text: &str) -> Value {
    let r = b
        .send(
            b.client
                .post(format!("{}/api/commands", b.url))
                .header("x-csrf-token", csrf)
                .json(&json!({ "command": text })),
        )
        .await;
    let status = r.status().as_u16();
    let mut v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{text}: {v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while v["reply"]["text"]
        .as_str()
        .is_some_and(|t| t.starts_with('⏳'))
    {
        assert!(Instant::now() < deadline, "no answer: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id = v["request_id"].as_str().unwrap().to_string();
        let r = b
            .send(b.client.get(format!("{}/api/requests/{id}", b.url)))
            .await;
        if r.status() == 200 {
            v = r.json().await.unwrap();
        }
    }
    v
}

/// Luis's day starts at 09:00 on 2026-12-08 (day 337 of a daily rotation from 2026-01-05,
/// Ana's days even): three seconds before it, runbot announces the hand-off when it comes;
/// then an override puts Marta on call, and the next Sev1 pages her, not Luis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_hands_off_at_its_boundary_and_an_override_takes_the_pages() {
    let daily = ONCALL.replace("turn = \"1w\"", "turn = \"1d\"");
    assert_ne!(daily, ONCALL);
    let boundary = chrono::DateTime::parse_from_rfc3339("2026-12-08T09:00:00Z").unwrap();
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), &daily, &chains("1h"));
    // Marta holds devops-lead too (outside the rotation), so she may take a shift.
    let roles = crate::escalation::ROLES.replacen(
        "people = [\"ana\", \"luis\"]",
        "people = [\"ana\", \"luis\", \"marta\"]",
        1,
    );
    assert_ne!(roles, crate::escalation::ROLES);
    std::fs::write(policies.join("roles.toml"), roles).unwrap();
    // The test clock starts at boundary - 3s now: nothing may be announced before 3s pass.
    let clock_start = Instant::now();
    let app = TestApp::spawn_with(
        with_discord(Options::new(Db::Sqlite), &fake, &policies)
            .clock_from((boundary - chrono::Duration::seconds(3)).into()),
    )
    .await;
    let handoff = |fake: &FakeDiscord| {
        fake.messages_in(CHANNEL)
            .into_iter()
            .map(|m| m.body.to_string())
            .find(|b| b.contains("Hand-off"))
    };
    let started = Instant::now();
    let text = loop {
        if let Some(t) = handoff(&fake) {
            break t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "no hand-off in the alert channel: {:?}",
            fake.messages_in(CHANNEL)
                .iter()
                .map(|m| m.body.to_string())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        clock_start.elapsed() >= Duration::from_millis(2900),
        "announced {:?} after a clock 3s before the boundary",
        clock_start.elapsed()
    );
    assert!(text.contains("Luis"), "{text}");
    assert!(text.contains("devops-lead"), "{text}");

    // Ana (a devops-lead) hands her role to Marta for 8 hours from the console.
    app.add_account("ana", "ana-password-0123", &["devops-lead"])
        .await;
    let ana = app.sign_in("ana", "ana-password-0123").await;
    let csrf = ana.csrf().await;
    // Bea (a backend-lead) may cover too: the answer says what she cannot do as one.
    let v = command(
        &ana,
        &csrf,
        "/oncall override role:devops-lead person:bea for:1h",
    )
    .await;
    assert!(
        v.to_string().contains("is on call for **devops-lead**"),
        "{v}"
    );
    assert!(
        v.to_string().contains("Bea does not hold devops-lead"),
        "{v}"
    );
    let v = command(
        &ana,
        &csrf,
        "/oncall override role:devops-lead person:marta for:8h",
    )
    .await;
    let reply = v["reply"]["text"].as_str().unwrap_or_default().to_string();
    assert!(reply.contains("Marta"), "{v}");
    let v = command(&ana, &csrf, "/oncall").await;
    let line = v["reply"]["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| {
            f["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("devops-lead"))
        })
        .and_then(|f| f["value"].as_str())
        .unwrap_or_else(|| panic!("no devops-lead in {v}"));
    assert!(line.starts_with("Marta (override)"), "{v}");

    assert_eq!(
        app.post_webhook(sev1("APIDown", "eeee000000000001").to_string())
            .await
            .status(),
        200
    );
    dms(&fake, MARTA, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        fake.dms_to(LUIS).is_empty(),
        "the rotation's Luis was paged"
    );
    assert!(fake.dms_to(crate::escalation::ANA).is_empty());
    app.stop().await;
}
