//! Escalation end to end: a real Alertmanager fires a Sev1 group, runbot DMs the devops-lead
//! on call through the fake Discord, pages the CTO when nobody acknowledges within the step's
//! time, and stops at an acknowledgement or a resolution.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{webhook, Db, Options, TestApp};
use fake_discord::FakeDiscord;
use serde_json::json;

pub const BOT_TOKEN: &str = "fake-bot-token-0123456789abcdef";
pub const CHANNEL: u64 = 111_111_111_111_111_111;
pub const ANA: &str = "1300000000000000001";
pub const LUIS: &str = "1300000000000000002";
pub const MARTA: &str = "1300000000000000003";
pub const BEA: &str = "1300000000000000004";

/// People with Discord ids the fake knows, and roles that list them.
pub const PEOPLE: &str = r#"
[people.ana]
name = "Ana"
discord = "1300000000000000001"
console = "ana"
[people.luis]
name = "Luis"
discord = "1300000000000000002"
[people.marta]
name = "Marta"
discord = "1300000000000000003"
[people.bea]
name = "Bea"
discord = "1300000000000000004"
console = "bea"
"#;

pub const ROLES: &str = r#"
[roles.devops-lead]
people = ["ana", "luis"]
hours = "24/7"
[roles.backend-lead]
people = ["bea"]
hours = "business"
[roles.dba]
hours = "weekends"
[roles.security]
hours = "24/7"
[roles.cto]
people = ["marta"]
hours = "24/7"
[roles.developer]
hours = "business"
[roles.viewer]
hours = "business"
"#;

/// Ana's week, then Luis's, from a Monday long ago.
pub const ONCALL: &str = r#"
[rotations.devops-lead]
people = ["ana", "luis"]
turn = "1w"
start = "2026-01-05T09:00:00"
"#;

/// The shipped chains with steps seconds apart.
pub fn chains(after: &str) -> String {
    format!(
        r#"
[chains.sev1]
steps = [
  {{ notify = ["role:devops-lead"] }},
  {{ after = "{after}", notify = ["role:cto"] }},
]
[chains.sev2]
steps = [
  {{ notify = ["role:backend-lead"], when_on_call = true }},
  {{ after = "{after}", notify = ["role:devops-lead"] }},
]
[chains.sev3]
steps = [{{ notify = ["channel"] }}]
[chains.sev4]
steps = [{{ notify = ["backlog"] }}]
[chains.database]
steps = [{{ notify = ["role:dba"] }}, {{ after = "{after}", notify = ["role:devops-lead"] }}]
"#
    )
}

/// A policies folder: the shipped files with these people, roles, rotations and chains.
pub fn policies(dir: &Path, oncall: &str, chains: &str) -> PathBuf {
    let p = common::rig::shipped_policies(dir, ROLES);
    std::fs::write(p.join("people.toml"), PEOPLE).unwrap();
    std::fs::write(p.join("oncall.toml"), oncall).unwrap();
    std::fs::write(p.join("escalation.toml"), chains).unwrap();
    p
}

/// Settings for a runbot on the fake Discord with `policies`.
pub fn with_discord(opts: Options, fake: &FakeDiscord, policies: &Path) -> Options {
    opts.escalating()
        .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
        .set("RUNBOT__DISCORD__ALERT_CHANNEL_ID", &CHANNEL.to_string())
        .set("RUNBOT__DISCORD__API_BASE", &fake.base_url())
        .set("RUNBOT__DISCORD__APPLICATION_ID", fake.application_id())
        .set("RUNBOT__DISCORD__PUBLIC_KEY", &fake.public_key_hex())
        .set("RUNBOT__POLICY__DIR", &policies.display().to_string())
}

/// Waits until `user` has `n` DMs, and answers how long it took.
pub async fn dms(fake: &FakeDiscord, user: &str, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = fake.dms_to(user).len();
        if got >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{user} got {got} DMs, not {n}, within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a card's description in the fake Discord satisfies `ok`.
pub async fn card_says(fake: &FakeDiscord, what: &str, ok: impl Fn(&str) -> bool) {
    fake.wait_for(Duration::from_secs(10), what, |messages, _| {
        messages
            .iter()
            .any(|m| {
                ok(m.body["embeds"][0]["description"]
                    .as_str()
                    .unwrap_or_default())
            })
            .then_some(())
    })
    .await;
}

pub fn apidown(status: &str) -> serde_json::Value {
    webhook(
        "APIDown",
        status,
        &[(
            "aaaa000000000001",
            status,
            json!({"severity": "critical", "instance": "api-1:8000"}),
        )],
    )
}

/// Ana is on call (week one of the rotation) at this moment.
pub fn ana_week() -> chrono::DateTime<chrono::Utc> {
    // 2026-12-07 is a Monday: its 09:00 starts a turn; weeks alternate from 2026-01-05 (ana).
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-05T10:00:00Z").unwrap();
    let now = chrono::Utc::now();
    let weeks = (now - start.with_timezone(&chrono::Utc)).num_weeks();
    // An even week since the start is Ana's.
    start.with_timezone(&chrono::Utc) + chrono::Duration::weeks(weeks - weeks % 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sev1_from_alertmanager_pages_the_devops_lead_then_the_cto_and_an_ack_stops_it() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), ONCALL, &chains("3s"));
    let app = TestApp::spawn_with(
        with_discord(Options::new(Db::Sqlite), &fake, &policies).clock_from(ana_week()),
    )
    .await;
    let am = common::Alertmanager::start(&common::alertmanager_config(&app)).await;
    let fired = Instant::now();
    am.push(json!([{
        "labels": {"alertname": "APIDown", "severity": "critical", "instance": "api-1:8000"},
        "annotations": {"summary": "The API is down"},
    }]))
    .await;
    // Ana (devops-lead on call this week) gets a DM with the acknowledge button; Luis does not.
    dms(&fake, ANA, 1, Duration::from_secs(10)).await;
    let first = fired.elapsed();
    let dm = &fake.dms_to(ANA)[0];
    assert!(dm.body.to_string().contains("APIDown"), "{}", dm.body);
    assert_eq!(dm.custom_ids().len(), 1, "{}", dm.body);
    assert!(fake.dms_to(LUIS).is_empty());
    assert!(
        fake.dms_to(MARTA).is_empty(),
        "the CTO is not paged at once"
    );
    // The console's on-call page says the same: Ana by the rotation, then Luis.
    let oncall: serde_json::Value = app.get("/api/oncall").await.json().await.unwrap();
    let devops = oncall["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "devops-lead")
        .unwrap()
        .clone();
    assert_eq!(devops["on_duty"], json!(["Ana"]), "{devops}");
    assert_eq!(devops["duty_source"], "rotation", "{devops}");
    assert_eq!(devops["next"], json!(["Luis"]), "{devops}");
    // The card says whom runbot is paging and who is next.
    card_says(&fake, "the card's paging line", |d| {
        d.contains("📟 Paging Ana (devops-lead) · next: Marta (cto) <t:")
    })
    .await;
    // Nobody acknowledges: three seconds later the CTO is paged.
    let waited = dms(&fake, MARTA, 1, Duration::from_secs(10)).await;
    assert!(
        waited >= Duration::from_secs(2),
        "the CTO was paged after {waited:?}"
    );
    // Marta acknowledges from her DM: the chain stops, and nothing more arrives.
    let dm = fake.dms_to(MARTA)[0].clone();
    let marta = fake_discord::FakeUser::new(MARTA.parse().unwrap(), "marta", &[]);
    let click = fake.dm_button_click(&dm.id, &dm.custom_ids()[0], &marta);
    let sent = fake
        .send_interaction(&format!("{}/discord/interactions", app.url), click)
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let group = app
        .wait_for(10, "the group acknowledged", |groups| {
            groups
                .iter()
                .find(|g| !g["acknowledged_by"].is_null())
                .cloned()
        })
        .await;
    assert_eq!(group["escalation"]["state"], "acked", "{group}");
    card_says(&fake, "the card's acknowledgement", |d| {
        d.contains("Acknowledged by **marta** after ") && !d.contains("📟 Paging")
    })
    .await;
    // Every page counted, and how long the acknowledgement took.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("runbot_pages_total{via=\"discord\",result=\"sent\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runbot_time_to_ack_seconds_bucket{severity=\"sev1\""),
        "{metrics}"
    );
    let before = (fake.dms_to(ANA).len(), fake.dms_to(MARTA).len());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((fake.dms_to(ANA).len(), fake.dms_to(MARTA).len()), before);
    eprintln!("first page {first:?} after Alertmanager got the alert");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resolved_before_the_second_step_never_pages_the_cto() {
    for db in common::BOTH {
        let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
        let dir = tempfile::tempdir().unwrap();
        let policies = policies(dir.path(), ONCALL, &chains("3s"));
        let app = TestApp::spawn_with(
            with_discord(Options::new(db), &fake, &policies).clock_from(ana_week()),
        )
        .await;
        assert_eq!(
            app.post_webhook(apidown("firing").to_string())
                .await
                .status(),
            200
        );
        let took = dms(&fake, ANA, 1, Duration::from_secs(5)).await;
        assert!(
            took < Duration::from_secs(2),
            "{db:?}: the first page took {took:?}"
        );
        assert_eq!(
            app.post_webhook(apidown("resolved").to_string())
                .await
                .status(),
            200
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            fake.dms_to(MARTA).is_empty(),
            "{db:?}: the CTO was paged after the resolution"
        );
        assert_eq!(fake.dms_to(ANA).len(), 1, "{db:?}");
        let g = &app.groups().await[0];
        assert_eq!(g["escalation"]["state"], "resolved", "{db:?}: {g}");
        // It fires again (a new startsAt, as Alertmanager sends): the chain starts over.
        let mut again = apidown("firing");
        again["alerts"][0]["startsAt"] = json!("2026-11-27T20:00:00Z");
        assert_eq!(app.post_webhook(again.to_string()).await.status(), 200);
        dms(&fake, ANA, 2, Duration::from_secs(5)).await;
        // Resolved, and back with the same startsAt (Alertmanager resolved it by
        // resolve_timeout, then the alert returned): the chain starts over too.
        let mut gone = apidown("resolved");
        gone["alerts"][0]["startsAt"] = json!("2026-11-27T20:00:00Z");
        assert_eq!(app.post_webhook(gone.to_string()).await.status(), 200);
        app.wait_for(10, "the resolution", |gs| {
            (gs[0]["escalation"]["state"] == "resolved").then_some(())
        })
        .await;
        assert_eq!(app.post_webhook(again.to_string()).await.status(), 200);
        dms(&fake, ANA, 3, Duration::from_secs(5)).await;
        app.stop().await;
    }
}

/// Sev2 on a Saturday at 23:00 skips the Backend Lead (business hours) at once, says so on the
/// card, and pages the DevOps Lead; on a Tuesday at 11:00 it pages the Backend Lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sev2_out_of_hours_skips_the_backend_lead_and_in_hours_pages_her() {
    let high = |name: &str| {
        webhook(
            name,
            "firing",
            &[(
                "bbbb000000000001",
                "firing",
                json!({"severity": "high", "instance": "api-1:8000"}),
            )],
        )
    };
    let saturday = chrono::DateTime::parse_from_rfc3339("2026-12-12T23:00:00Z").unwrap();
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), ONCALL, &chains("15m"));
    let app = TestApp::spawn_with(
        with_discord(Options::new(Db::Sqlite), &fake, &policies).clock_from(saturday.into()),
    )
    .await;
    assert_eq!(
        app.post_webhook(high("HighErrorRate").to_string())
            .await
            .status(),
        200
    );
    // Not 15 minutes later: the skipped step moves on at once, to whoever's week it is.
    let start = Instant::now();
    loop {
        if !fake.dms_to(ANA).is_empty() || !fake.dms_to(LUIS).is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "nobody was paged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fake.dms_to(BEA).is_empty(),
        "the Backend Lead was paged out of hours"
    );
    let g = &app.groups().await[0];
    let note = g["escalation"]["note"].as_str().unwrap_or_default();
    assert!(note.contains("backend-lead"), "{g}");
    app.stop().await;

    let tuesday = chrono::DateTime::parse_from_rfc3339("2026-12-08T11:00:00Z").unwrap();
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let app = TestApp::spawn_with(
        with_discord(Options::new(Db::Sqlite), &fake, &policies).clock_from(tuesday.into()),
    )
    .await;
    assert_eq!(
        app.post_webhook(high("HighErrorRate").to_string())
            .await
            .status(),
        200
    );
    dms(&fake, BEA, 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(fake.dms_to(ANA).is_empty() && fake.dms_to(LUIS).is_empty());
    app.stop().await;
}

/// A runbook action on a firing group is followed up: resolved after it, said in the channel;
/// still firing `escalation.verify_after` later, said too, and the chain moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_action_is_followed_up_when_the_group_resolves_or_still_fires() {
    use crate::console_live::{command, press, prompt_of, result};
    let tuesday = chrono::DateTime::parse_from_rfc3339("2026-12-08T11:00:00Z").unwrap();
    let p = common::docker::Project::with_healthy_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), ONCALL, &chains("15m"));
    let app = TestApp::spawn_with(
        p.options(Db::Sqlite)
            .escalating()
            .set("RUNBOT__POLICY__DIR", &policies.display().to_string())
            .set("RUNBOT__ESCALATION__VERIFY_AFTER", "3s")
            .clock_from(tuesday.into()),
    )
    .await;
    app.add_account("ana", "correct horse battery", &["devops-lead"])
        .await;
    let ana = app.sign_in("ana", "correct horse battery").await;
    let csrf = ana.csrf().await;
    let sev2 = |name: &str, fp: &str, status: &str| {
        webhook(
            name,
            status,
            &[(
                fp,
                status,
                json!({"severity": "high", "instance": "api-1:8000"}),
            )],
        )
    };
    let restart = |group: i64| json!({"command": "restart", "options": {"service": "backend"}, "group_id": group});
    let store = app.store().await;
    let said = |want: &'static str| {
        let store = store.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let all = store.recent_announcements("console", 50).await.unwrap();
                if let Some((_, text)) = all.iter().find(|(_, t)| t.contains(want)) {
                    return text.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "no announcement with {want:?}: {all:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    // HighErrorRate: restarted, then resolved.
    app.post_webhook(sev2("HighErrorRate", "c000000000000001", "firing").to_string())
        .await;
    let id = app
        .wait_for(10, "the group", |g| {
            g.first().and_then(|g| g["id"].as_i64())
        })
        .await;
    let (status, asked) = command(&ana, &csrf, restart(id)).await;
    assert_eq!(status, 200, "{asked}");
    let done = press(&ana, &csrf, &prompt_of(&asked, "confirm"), "confirm").await;
    result(&ana, done["request_id"].as_str().unwrap(), "restarted").await;
    app.post_webhook(sev2("HighErrorRate", "c000000000000001", "resolved").to_string())
        .await;
    let text = said("resolved").await;
    assert!(
        text.contains("HighErrorRate") && text.contains("/restart service:backend by ana"),
        "{text}"
    );

    // SlowResponseTime: restarted, still firing 3 s later: said, and the chain moves on to the
    // DevOps Lead at once (its own step was 15 minutes away).
    app.post_webhook(sev2("SlowResponseTime", "c000000000000002", "firing").to_string())
        .await;
    let id = app
        .wait_for(10, "the second group", |gs| {
            gs.iter()
                .find(|g| g["common_labels"]["alertname"] == "SlowResponseTime")
                .and_then(|g| g["id"].as_i64())
        })
        .await;
    let (_, asked) = command(&ana, &csrf, restart(id)).await;
    let done = press(&ana, &csrf, &prompt_of(&asked, "confirm"), "confirm").await;
    result(&ana, done["request_id"].as_str().unwrap(), "restarted").await;
    let text = said("still firing").await;
    assert!(
        text.contains("SlowResponseTime") && text.contains("moving the escalation on"),
        "{text}"
    );
    let g = app
        .wait_for(10, "the second step", |gs| {
            gs.iter()
                .find(|g| g["id"] == id && g["escalation"]["steps_fired"] == 2)
                .cloned()
        })
        .await;
    assert!(
        g["escalation"]["paging"]
            .as_str()
            .unwrap_or_default()
            .contains("Ana"),
        "{g}"
    );
    app.stop().await;
}

/// A Sev3 group joined by a critical alert follows the Sev1 chain from its first step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_becomes_sev1_is_paged_as_one() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), ONCALL, &chains("1h"));
    let app = TestApp::spawn_with(
        with_discord(Options::new(Db::Sqlite), &fake, &policies).clock_from(ana_week()),
    )
    .await;
    let warning = json!({"severity": "warning", "instance": "api-1:8000"});
    let body = webhook(
        "APIDown",
        "firing",
        &[("f000000000000001", "firing", warning.clone())],
    );
    assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    app.wait_for(10, "the Sev3 step", |gs| {
        (gs.len() == 1 && gs[0]["escalation"]["steps_fired"] == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(fake.dms_to(ANA).is_empty(), "a Sev3 pages nobody");
    let critical = json!({"severity": "critical", "instance": "api-2:8000"});
    let body = webhook(
        "APIDown",
        "firing",
        &[
            ("f000000000000001", "firing", warning),
            ("f000000000000002", "firing", critical),
        ],
    );
    assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    dms(&fake, ANA, 1, Duration::from_secs(5)).await;
    let g = &app.groups().await[0];
    assert_eq!(g["escalation"]["chain"], "sev1", "{g}");
    assert!(
        g["escalation"]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("raised to Sev1"),
        "{g}"
    );
    app.stop().await;
}

/// Sev3 goes to the channel and pages nobody; Sev4 goes to the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sev3_pages_nobody_and_sev4_lands_in_the_backlog() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), ONCALL, &chains("2s"));
    let app = TestApp::spawn_with(with_discord(Options::new(Db::Sqlite), &fake, &policies)).await;
    for (name, fp, severity) in [
        ("DiskAlmostFull", "d000000000000001", "warning"),
        ("OldCertificate", "d000000000000002", "low"),
    ] {
        let body = webhook(
            name,
            "firing",
            &[(fp, "firing", json!({"severity": severity}))],
        );
        assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    }
    let groups = app
        .wait_for(10, "both escalations", |gs| {
            (gs.len() == 2 && gs.iter().all(|g| g["escalation"]["steps_fired"] == 1))
                .then(|| gs.to_vec())
        })
        .await;
    let of = |name: &str| {
        groups
            .iter()
            .find(|g| g["common_labels"]["alertname"] == name)
            .unwrap()["escalation"]
            .clone()
    };
    assert_eq!(of("DiskAlmostFull")["state"], "done");
    assert_eq!(of("DiskAlmostFull")["paging"], "the channel");
    assert_eq!(of("OldCertificate")["state"], "backlog");
    let backlog: serde_json::Value = app.get("/api/backlog").await.json().await.unwrap();
    assert!(backlog.to_string().contains("OldCertificate"), "{backlog}");
    assert!(!backlog.to_string().contains("DiskAlmostFull"), "{backlog}");
    card_says(&fake, "the Sev3 card's line", |d| {
        d.contains("📢 For the channel: nobody paged")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for user in [ANA, LUIS, MARTA, BEA] {
        assert!(fake.dms_to(user).is_empty(), "{user} was paged");
    }
    app.stop().await;
}

/// Out of the box, `policies/people.toml` holds examples (`examples = true`): a Sev1 pages
/// nobody, and its card says why and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_example_people_are_never_paged() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let app = TestApp::spawn_with(
        Options::new(Db::Sqlite)
            .escalating()
            .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
            .set("RUNBOT__DISCORD__ALERT_CHANNEL_ID", &CHANNEL.to_string())
            .set("RUNBOT__DISCORD__API_BASE", &fake.base_url()),
    )
    .await;
    assert_eq!(
        app.post_webhook(apidown("firing").to_string())
            .await
            .status(),
        200
    );
    card_says(&fake, "the card's note", |d| {
        d.contains("still holds the shipped examples")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fake.messages_in(CHANNEL).len(),
        1,
        "only the card: no mention"
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/users/@me/channels")),
        "no DM was opened"
    );
    app.stop().await;
}
