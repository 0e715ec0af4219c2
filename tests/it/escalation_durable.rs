//! Escalation survives crashes and runs once among several runbots: a `runbot serve` killed
//! with SIGKILL between two steps pages the second step on time after a restart, and two
//! runbots on one PostgreSQL database page every person once per step.

use crate::common;
use crate::escalation::{apidown, chains, dms, policies, with_discord, ANA, LUIS, MARTA};

use std::time::{Duration, Instant};

use common::{webhook, Db, Options, Serve, TestApp, BOT_TOKEN, CHANNEL, TOKEN};
use fake_discord::FakeDiscord;
use serde_json::json;

/// No rotations: every devops-lead holder (Ana and Luis) is paged, whatever the day, since a
/// `runbot serve` process cannot be given the test clock.
const NO_ROTATIONS: &str = "";

async fn post(url: &str, body: &serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("{url}/webhooks/alertmanager"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbot_killed_between_two_steps_pages_the_second_once_and_on_time_after_a_restart() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), NO_ROTATIONS, &chains("5s"));
    std::fs::write(
        dir.path().join("runbot.toml"),
        format!("[policy]\ndir = \"{}\"\n", policies.display()),
    )
    .unwrap();
    let first = Serve::start(dir.path(), &fake).await;
    let fired = Instant::now();
    post(&first.url, &apidown("firing")).await;
    dms(&fake, ANA, 1, Duration::from_secs(5)).await;
    dms(&fake, LUIS, 1, Duration::from_secs(5)).await;
    // Let the sends be recorded: a page sent but not yet marked is sent again when its claim
    // lapses (at least once), which is not what this test is about.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The crash: SIGKILL, no shutdown, the step-2 timer only in the SQLite file.
    drop(first);
    let killed = fired.elapsed();
    assert!(
        killed < Duration::from_secs(3),
        "step 1 took {killed:?}: the kill is not between the steps"
    );
    assert!(fake.dms_to(MARTA).is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Serve::start(dir.path(), &fake).await;
    let waited = {
        let start = Instant::now();
        loop {
            if !fake.dms_to(MARTA).is_empty() {
                break fired.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "Marta was never paged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Due 5 s after the group fired; allowed 1.5 s late (and the fake's polling).
    assert!(
        waited >= Duration::from_millis(4_800) && waited <= Duration::from_millis(6_700),
        "the CTO was paged {waited:?} after the group fired, not about 5 s"
    );
    // Nothing is sent twice: not step 1 again by the new process, not step 2 twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.dms_to(MARTA).len(), 1);
    assert_eq!(fake.dms_to(ANA).len(), 1);
    assert_eq!(fake.dms_to(LUIS).len(), 1);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runbots_on_one_postgres_database_page_each_person_once_per_step() {
    const GROUPS: usize = 12;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(dir.path(), NO_ROTATIONS, &chains("2s"));
    let url = common::fresh_database(Db::Postgres, dir.path()).await;
    let spawn = || {
        let mut opts = with_discord(Options::new(Db::Postgres), &fake, &policies);
        opts.database_url = Some(url.clone());
        TestApp::spawn_with(opts)
    };
    let apps = [spawn().await, spawn().await];
    for g in 0..GROUPS {
        let name = format!("APIDown{g:02}");
        let body = webhook(
            &name,
            "firing",
            &[(
                &format!("cccc{g:012}"),
                "firing",
                json!({"severity": "critical", "instance": "api-1:8000"}),
            )],
        );
        let res = apps[g % 2].post_webhook(body.to_string()).await;
        assert_eq!(res.status(), 200);
    }
    for who in [ANA, LUIS, MARTA] {
        dms(&fake, who, GROUPS, Duration::from_secs(30)).await;
    }
    // Long enough for a second copy of any step or page to show.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for who in [ANA, LUIS, MARTA] {
        assert_eq!(fake.dms_to(who).len(), GROUPS, "DMs to {who}");
    }
    // Channel mentions queue behind Discord's rate limit: wait until no page is left queued.
    let start = Instant::now();
    let rows = loop {
        let rows: Vec<PageRow> =
            sqlx::query_as("SELECT group_id, step, person, via, state, last_error FROM pages")
                .fetch_all(&mut *pg(&url).await)
                .await
                .unwrap();
        if rows.iter().all(|r| r.4 != "queued") || start.elapsed() > Duration::from_secs(60) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let retried: std::collections::BTreeSet<_> = rows.iter().filter_map(|r| r.5.clone()).collect();
    eprintln!(
        "pages settled {:?} after the DMs; errors: {retried:?}",
        start.elapsed()
    );
    let mut keys: Vec<_> = rows
        .iter()
        .map(|(g, s, p, v, _, _)| (*g, *s, p.clone(), v.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), rows.len(), "a page was queued twice: {rows:?}");
    for (g, s, p, v, state, error) in &rows {
        let want = if *s == Some(1) { "marta" } else { "ana luis" };
        // A mention names everyone its step pages, in one message: "ana,luis".
        assert!(
            p.split(',').all(|one| want.contains(one)),
            "group {g} step {s:?} paged {p}"
        );
        // Ana's console page fails: she has no console session open. Every other way is sent.
        if v != "console" {
            assert_eq!(state, "sent", "group {g} step {s:?} {p} by {v}: {error:?}");
        }
    }
    let dms: Vec<_> = rows.iter().filter(|r| r.3 == "discord").collect();
    assert_eq!(dms.len(), GROUPS * 3, "{rows:?}");
    let groups: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(groups.len(), GROUPS);
    let [a, b] = apps;
    a.stop().await;
    b.stop().await;
}

/// A `pages` row: group, step, person, via, state, last error.
type PageRow = (i64, Option<i64>, String, String, String, Option<String>);

async fn pg(url: &str) -> Box<sqlx::PgConnection> {
    use sqlx::Connection;
    Box::new(sqlx::PgConnection::connect(url).await.unwrap())
}
