//! Alert cards in Slack: a real Alertmanager → runbot → the fake Slack, which accepts only what
//! Slack accepts (Block Kit limits, its arguments, one post per second per channel).

use crate::common;

use std::time::Duration;

use common::{webhook, Alertmanager, Db, Options, TestApp, BOTH, TOKEN};
use fake_slack::{FakeSlack, Message};
use serde_json::{json, Value};

pub(crate) const CHANNEL: &str = "C0ALERTS01";
const RED: &str = "#E01E5A";
const GREEN: &str = "#2EB67D";

/// A runbot with Slack (HTTP mode) pointed at `fake`.
pub(crate) fn with_slack(db: Db, fake: &FakeSlack) -> Options {
    Options::new(db)
        .set("RUNBOT__SLACK__BOT_TOKEN", fake_slack::BOT_TOKEN)
        .set("RUNBOT__SLACK__SIGNING_SECRET", fake_slack::SIGNING_SECRET)
        .set("RUNBOT__SLACK__ALERT_CHANNEL_ID", CHANNEL)
        .set("RUNBOT__SLACK__API_BASE", &fake.api_base())
        .set("RUNBOT__SLACK__REQUEST_TIMEOUT_MS", "2000")
}

/// The blocks of a card (inside its coloured attachment).
pub(crate) fn blocks(m: &Message) -> Vec<Value> {
    m.raw["attachments"][0]["blocks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn colour(m: &Message) -> String {
    m.raw["attachments"][0]["color"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// "runbot · group #N", which only cards carry.
pub(crate) fn footer(m: &Message) -> Option<String> {
    blocks(m).iter().find_map(|b| {
        (b["type"] == "context").then(|| {
            b["elements"]
                .as_array()?
                .iter()
                .filter_map(|e| e["text"].as_str())
                .find(|t| t.starts_with("runbot · group #"))
                .map(|t| t.split(" · ").take(2).collect::<Vec<_>>().join(" · "))
        })?
    })
}

pub(crate) fn is_card(m: &Message) -> bool {
    footer(m).is_some()
}

pub(crate) fn text_of(m: &Message) -> String {
    serde_json::to_string(&m.raw).unwrap()
}

/// The buttons of a card: (action_id, style).
pub(crate) fn buttons(m: &Message) -> Vec<(String, String)> {
    blocks(m)
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["action_id"].as_str().unwrap_or("").to_string(),
                e["style"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn cards(fake: &FakeSlack, channel: &str) -> Vec<Message> {
    fake.messages_in(channel)
        .into_iter()
        .filter(is_card)
        .collect()
}

fn assert_one_card_each(cards: &[Message], groups: usize) {
    let mut footers: Vec<String> = cards.iter().filter_map(footer).collect();
    footers.sort();
    footers.dedup();
    assert_eq!(
        footers.len(),
        cards.len(),
        "a group has two cards: {footers:?}"
    );
    assert_eq!(cards.len(), groups);
}

fn alert(instance: &str, ends_at: Option<&str>) -> Value {
    let mut a = json!({
        "labels": {"alertname": "APIDown", "service": "backend", "instance": instance, "severity": "critical"},
        "annotations": {"summary": "The API is down", "runbook_url": "https://wiki.example.com/apidown"},
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    });
    if let Some(t) = ends_at {
        a["endsAt"] = json!(t);
    }
    a
}

fn group_body(name: &str, fps: &[&str]) -> String {
    let alerts: Vec<(&str, &str, Value)> = fps
        .iter()
        .map(|fp| (*fp, "firing", json!({"severity": "warning"})))
        .collect();
    webhook(name, "firing", &alerts).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_keeps_one_slack_card_through_join_resolve_and_refire_with_its_thread() {
    for db in BOTH {
        let fake = FakeSlack::start().await;
        let app = TestApp::spawn_with(with_slack(db, &fake)).await;
        let am = Alertmanager::start(&common::alertmanager_config(&app)).await;
        let wait = Duration::from_secs(20);

        am.push(json!([alert("backend-1:8000", None)])).await;
        let card = fake
            .wait_for("the APIDown card", wait, |f| {
                cards(f, CHANNEL).first().cloned()
            })
            .await;
        let b = blocks(&card);
        assert_eq!(b[0]["type"], "header", "{db:?}");
        assert_eq!(b[0]["text"]["text"], "Sev1 · APIDown: API down");
        assert_eq!(colour(&card), RED);
        assert!(card.text.contains("APIDown"), "the notification's text");
        let all = text_of(&card);
        assert!(all.contains("The API is down"));
        for link in [
            "http://prometheus:9090/graph?g0.expr=up",
            "https://wiki.example.com/apidown",
        ] {
            assert!(all.contains(link), "{db:?}: card links to {link}: {all}");
        }
        let bs = buttons(&card);
        assert_eq!(bs.len(), 5, "the runbook's five actions: {bs:?}");
        assert!(bs.iter().all(|(id, _)| id.starts_with("rb1:")));
        assert!(
            bs.iter().any(|(_, style)| style == "danger"),
            "risky actions are danger: {bs:?}"
        );
        assert!(card.metadata.is_some(), "the card carries its nonce");

        // A second alert joins: the same message, edited.
        am.push(json!([
            alert("backend-1:8000", None),
            alert("backend-2:8000", None)
        ]))
        .await;
        let joined = fake
            .wait_for("the card edited with two alerts", wait, |f| {
                f.message(CHANNEL, &card.ts)
                    .filter(|m| text_of(m).contains("2 of 2"))
            })
            .await;
        assert!(joined.edits >= 1);

        // Acknowledged from the console: the card says so, and its thread tells the story.
        let group = footer(&card)
            .unwrap()
            .rsplit('#')
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap();
        app.add_account("ana", "correct horse battery", &["devops-lead"])
            .await;
        let ana = app.sign_in("ana", "correct horse battery").await;
        let csrf = ana.csrf().await;
        let (status, answer) = crate::console_live::command(
            &ana,
            &csrf,
            json!({"command": format!("/ack group:{group}")}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        fake.wait_for("the card says acknowledged", wait, |f| {
            f.message(CHANNEL, &card.ts)
                .filter(|m| text_of(m).contains("Acknowledged by"))
        })
        .await;
        let note = fake
            .wait_for("the ack in the card's thread", wait, |f| {
                f.replies(CHANNEL, &card.ts).into_iter().next()
            })
            .await;
        assert!(note.text.contains("ack"), "{}", note.text);
        assert_eq!(note.thread_ts.as_deref(), Some(card.ts.as_str()));

        // Resolved: green, without buttons.
        let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
        am.push(json!([
            alert("backend-1:8000", Some(&past)),
            alert("backend-2:8000", Some(&past))
        ]))
        .await;
        let resolved = fake
            .wait_for("the card resolved", Duration::from_secs(40), |f| {
                f.message(CHANNEL, &card.ts).filter(|m| colour(m) == GREEN)
            })
            .await;
        assert!(buttons(&resolved).is_empty(), "no buttons once resolved");

        // Fires again within the window: the same card comes back.
        am.push(json!([alert("backend-1:8000", None)])).await;
        fake.wait_for("the card firing again", Duration::from_secs(40), |f| {
            f.message(CHANNEL, &card.ts)
                .filter(|m| colour(m) == RED && !buttons(m).is_empty())
        })
        .await;
        assert_eq!(cards(&fake, CHANNEL).len(), 1, "{db:?}: still one card");
        assert_eq!(fake.rate_limited(), 0);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_slack_outage_loses_nothing_and_duplicates_nothing() {
    for db in BOTH {
        let fake = FakeSlack::start().await;
        let app = TestApp::spawn_with(with_slack(db, &fake)).await;
        assert_eq!(
            app.post_webhook(group_body("Before", &["f000000000000001"]))
                .await
                .status(),
            200
        );
        fake.wait_for("the first card", Duration::from_secs(10), |f| {
            cards(f, CHANNEL).first().cloned()
        })
        .await;
        fake.set_down(true);
        for i in 0..4 {
            let body = group_body(&format!("During{i}"), &["f000000000000002"]);
            assert_eq!(app.post_webhook(body).await.status(), 200);
        }
        // An alert joins a group whose card is waiting, and one whose card exists.
        for (name, fps) in [
            ("During0", ["f000000000000002", "f000000000000003"]),
            ("Before", ["f000000000000001", "f000000000000003"]),
        ] {
            assert_eq!(app.post_webhook(group_body(name, &fps)).await.status(), 200);
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        fake.set_down(false);
        let all = fake
            .wait_for(
                "every card after the outage",
                Duration::from_secs(60),
                |f| {
                    let c = cards(f, CHANNEL);
                    let done = c.len() == 5
                        && c.iter()
                            .filter(|m| m.text.contains("During0") || m.text.contains("Before"))
                            .all(|m| text_of(m).contains("2 of 2"));
                    done.then_some(c)
                },
            )
            .await;
        assert_one_card_each(&all, 5);
        assert_eq!(fake.rate_limited(), 0, "{db:?}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_answer_was_lost_is_found_not_posted_twice() {
    let fake = FakeSlack::start().await;
    // Slack makes the message, but its answer comes after runbot gave up waiting.
    fake.set_answer_delay(Duration::from_millis(2500));
    let app = TestApp::spawn_with(
        with_slack(Db::Sqlite, &fake).set("RUNBOT__SLACK__REQUEST_TIMEOUT_MS", "500"),
    )
    .await;
    assert_eq!(
        app.post_webhook(group_body("Slow", &["f000000000000001"]))
            .await
            .status(),
        200
    );
    fake.wait_for("the card made", Duration::from_secs(10), |f| {
        cards(f, CHANNEL).first().cloned()
    })
    .await;
    fake.set_answer_delay(Duration::ZERO);
    // The retry looks in the channel's history and finds it.
    fake.wait_for("the history read", Duration::from_secs(20), |f| {
        (f.count("conversations.history") > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_one_card_each(&cards(&fake, CHANNEL), 1);
    app.stop().await;
}

/// The real binary with Slack, started and killed with SIGKILL like a crash.
struct Runbot {
    child: std::process::Child,
    base: String,
}

impl Runbot {
    async fn start(dir: &std::path::Path, port: u16, fake: &FakeSlack) -> Runbot {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"))
            .current_dir(dir)
            .arg("serve")
            .env_remove("RUNBOT_CONFIG")
            .env("RUNBOT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN", TOKEN)
            .env("RUNBOT__SLACK__BOT_TOKEN", fake_slack::BOT_TOKEN)
            .env("RUNBOT__SLACK__SIGNING_SECRET", fake_slack::SIGNING_SECRET)
            .env("RUNBOT__SLACK__ALERT_CHANNEL_ID", CHANNEL)
            .env("RUNBOT__SLACK__API_BASE", fake.api_base())
            .env("RUNBOT__SLACK__REQUEST_TIMEOUT_MS", "1000")
            .env("RUNBOT__ESCALATION__ENABLED", "false")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "runbot did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Runbot { child, base }
    }

    async fn post(&self, body: String) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/webhooks/alertmanager", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for Runbot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_slack_cards_pending_or_in_flight_then_restart_delivers_each_once() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();

    // Slack is down: the webhooks are accepted, their cards wait in the outbox.
    fake.set_down(true);
    let runbot = Runbot::start(dir.path(), port, &fake).await;
    for i in 0..4 {
        let status = runbot
            .post(group_body(&format!("Crash{i}"), &["c000000000000001"]))
            .await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(runbot);

    // Slack is back but slow: it makes the first card, and runbot dies before the answer.
    fake.set_down(false);
    fake.set_answer_delay(Duration::from_secs(3));
    let runbot = Runbot::start(dir.path(), port, &fake).await;
    fake.wait_for("one card", Duration::from_secs(10), |f| {
        cards(f, CHANNEL).first().cloned()
    })
    .await;
    drop(runbot);
    assert_eq!(
        cards(&fake, CHANNEL).len(),
        1,
        "one card made it before the crash"
    );

    // Restarted: every card arrives, the one already posted is found, not posted again.
    fake.set_answer_delay(Duration::ZERO);
    let runbot = Runbot::start(dir.path(), port, &fake).await;
    fake.wait_for("four cards", Duration::from_secs(30), |f| {
        (cards(f, CHANNEL).len() >= 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_one_card_each(&cards(&fake, CHANNEL), 4);
    assert!(
        fake.count("conversations.history") >= 1,
        "the crash's post was looked for"
    );
    drop(runbot);
}

/// Eight channels, one route each by the `shard` label.
fn shard_routes() -> String {
    (0..8)
        .map(|i| {
            format!(
                "[[slack.routes]]\nchannel_id = \"C0SHARD0{i}\"\nmatchers = {{ shard = \"{i}\" }}\n"
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_200_groups_reaches_slack_under_its_limits_without_a_429() {
    let fake = FakeSlack::start().await;
    let mut opts = with_slack(Db::Sqlite, &fake);
    opts.config_toml = shard_routes();
    let app = TestApp::spawn_with(opts).await;
    let started = std::time::Instant::now();
    for g in 0..200 {
        let shard = (g % 8).to_string();
        let mut body = webhook(
            &format!("Storm{g:03}"),
            "firing",
            &[(
                "a000000000000001",
                "firing",
                json!({"severity": "warning", "shard": shard}),
            )],
        );
        body["commonLabels"]["shard"] = json!(shard);
        assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    }
    // While the cards queue at one per second per channel, each channel's digest names
    // every group still waiting.
    let digested = |f: &FakeSlack| -> Vec<usize> {
        (0..8)
            .filter(|i| {
                f.messages_in(&format!("C0SHARD0{i}"))
                    .iter()
                    .any(|m| m.text.contains("more group"))
            })
            .collect()
    };
    let waited = std::time::Instant::now();
    while digested(&fake).len() < 8 {
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "a digest in each channel; in {:?} only; messages: {:?}",
            digested(&fake),
            (0..8)
                .map(|i| fake
                    .messages_in(&format!("C0SHARD0{i}"))
                    .iter()
                    .map(|m| m.text.chars().take(30).collect::<String>())
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fake.wait_for("200 cards", Duration::from_secs(120), |f| {
        let n: usize = (0..8)
            .map(|i| cards(f, &format!("C0SHARD0{i}")).len())
            .sum();
        (n == 200).then_some(())
    })
    .await;
    for i in 0..8 {
        assert_one_card_each(&cards(&fake, &format!("C0SHARD0{i}")), 25);
    }
    assert_eq!(fake.rate_limited(), 0, "no 429 at all");
    // One post per second per channel: 25 cards and a digest each take about 25 s.
    assert!(started.elapsed() > Duration::from_secs(20));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sev1_page_reaches_the_person_on_call_by_slack_dm_with_an_acknowledge_button() {
    use crate::escalation::{chains, ONCALL, ROLES};
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = common::rig::shipped_policies(dir.path(), ROLES);
    // The people of the escalation tests, reachable by Slack.
    let people = "[people.ana]\nname = \"Ana\"\nslack = \"U0000000A1\"\n\
                  [people.luis]\nname = \"Luis\"\nslack = \"U0000000L1\"\n\
                  [people.marta]\nname = \"Marta\"\nslack = \"U0000000M1\"\n\
                  [people.bea]\nname = \"Bea\"\nslack = \"U0000000B1\"\n";
    std::fs::write(policies.join("people.toml"), people).unwrap();
    std::fs::write(policies.join("oncall.toml"), ONCALL).unwrap();
    std::fs::write(policies.join("escalation.toml"), chains("3s")).unwrap();
    let opts = with_slack(Db::Sqlite, &fake)
        .escalating()
        .set("RUNBOT__POLICY__DIR", &policies.display().to_string());
    let app = TestApp::spawn_with(opts).await;
    let body = webhook(
        "APIDown",
        "firing",
        &[(
            "a000000000000009",
            "firing",
            json!({"severity": "critical", "service": "backend"}),
        )],
    );
    assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    let on_call = ["U0000000A1", "U0000000L1"];
    let dm = fake
        .wait_for(
            "a DM to the devops lead on call",
            Duration::from_secs(20),
            |f| on_call.iter().flat_map(|u| f.dms_to(u)).next(),
        )
        .await;
    let all = text_of(&dm);
    assert!(
        all.contains("rb1c:ack:group="),
        "an Acknowledge button: {all}"
    );
    assert!(dm.text.contains("You are paged"), "{}", dm.text);
    // The step is a note in the card's thread too.
    let card = fake
        .wait_for("the card", Duration::from_secs(10), |f| {
            cards(f, CHANNEL).first().cloned()
        })
        .await;
    fake.wait_for(
        "the page in the card's thread",
        Duration::from_secs(10),
        |f| {
            f.replies(CHANNEL, &card.ts)
                .into_iter()
                .find(|m| m.text.contains("Paging"))
        },
    )
    .await;
    app.stop().await;
}
