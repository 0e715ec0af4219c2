//! SIGTERM to the real binary: runbot stops taking requests, gives the outbox and running
//! commands `shutdown.grace_secs`, records what it could not finish, and exits 0.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use crate::common;
use bollard::models::HealthStatusEnum;
use common::docker::{docker_host, quick_stop, Project};
use common::{Serve, BOT_TOKEN, CHANNEL, TOKEN};
use fake_discord::{FakeDiscord, FakeMessage, FakeUser};
use serde_json::json;

async fn sqlite_column(db: &Path, sql: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
}

/// The group a card is for, from its footer ("runbot · group 12 · …").
fn card_group(m: &FakeMessage) -> Option<String> {
    let footer = m.body["embeds"][0]["footer"]["text"].as_str()?;
    let rest = footer.strip_prefix("runbot · group ")?;
    Some(
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .to_string(),
    )
}

/// Cards posted per group id.
fn cards_by_group(messages: &[FakeMessage]) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for g in messages.iter().filter_map(card_group) {
        *by.entry(g).or_insert(0) += 1;
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_a_storm_exits_0_and_loses_no_card_it_accepted() {
    const GROUPS: usize = 60;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    // Five messages a second in the channel: the storm's cards need ~12 s, the grace is 2 s.
    fake.set_route_limit(5, Duration::from_secs(1));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("runbot.toml"),
        "[shutdown]\ngrace_secs = 2\n",
    )
    .unwrap();
    let mut runbot = Serve::start(dir.path(), &fake).await;
    let client = reqwest::Client::new();
    let posts = (0..GROUPS).map(|g| {
        let body = common::webhook(
            &format!("Storm{g:03}"),
            "firing",
            &[(
                &format!("{g:016x}"),
                "firing",
                json!({"severity": "warning"}),
            )],
        );
        client
            .post(format!("{}/webhooks/alertmanager", runbot.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    });
    for answer in futures_util::future::join_all(posts).await {
        assert_eq!(answer.unwrap().status(), 200, "accepted");
    }
    fake.wait_for(Duration::from_secs(20), "the first cards", |m, _| {
        (!cards_by_group(m).is_empty()).then_some(())
    })
    .await;

    let (status, took) = runbot.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    eprintln!("shutdown in a storm took {took:?} (grace 2 s)");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "the outbox had the grace, no more: {took:?}"
    );

    // Every group accepted either has its card, or still waits in the outbox.
    let db = dir.path().join("runbot.db");
    let groups: BTreeSet<String> = sqlite_column(&db, "SELECT CAST(id AS TEXT) FROM alert_groups")
        .await
        .into_iter()
        .collect();
    assert_eq!(groups.len(), GROUPS);
    let waiting: BTreeSet<String> = sqlite_column(
        &db,
        "SELECT CAST(group_id AS TEXT) FROM chat_outbox WHERE dead = 0",
    )
    .await
    .into_iter()
    .collect();
    let carded = cards_by_group(&fake.messages());
    assert!(
        !waiting.is_empty(),
        "the storm outlasted the grace, so some cards still wait"
    );
    let lost: Vec<&String> = groups
        .iter()
        .filter(|g| !carded.contains_key(*g) && !waiting.contains(*g))
        .collect();
    assert!(
        lost.is_empty(),
        "groups with no card and none queued: {lost:?}"
    );

    // The next start sends the rest: one card per group, none twice.
    fake.reset_rate_limits();
    let mut runbot = Serve::start(dir.path(), &fake).await;
    let carded = fake
        .wait_for(Duration::from_secs(60), "a card for every group", |m, _| {
            let by = cards_by_group(m);
            (by.len() == GROUPS).then_some(by)
        })
        .await;
    assert!(carded.values().all(|&n| n == 1), "{carded:?}");
    // With nothing left to deliver, a stop is quick.
    let (status, took) = runbot.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    eprintln!("idle shutdown took {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// `runbot serve` against the fake Discord and the test engine's project, with `grace` s.
async fn restart_rig(p: &Project, fake: &FakeDiscord, grace: u64) -> (tempfile::TempDir, Serve) {
    let dir = tempfile::tempdir().unwrap();
    let policies = common::rig::policies_dir(fake);
    std::fs::write(
        dir.path().join("runbot.toml"),
        format!(
            "[docker]\nhost = \"{}\"\nproject = \"{}\"\ntimeout_secs = 20\n\n\
             [shutdown]\ngrace_secs = {grace}\n\n[policy]\ndir = \"{}\"\n",
            docker_host(),
            p.name,
            policies.display()
        ),
    )
    .unwrap();
    let runbot = Serve::start(dir.path(), fake).await;
    (dir, runbot)
}

/// Asks for `/restart backend` and confirms it: the restart is running when this returns.
/// Answers the click, whose message the result edits.
async fn restart_backend(fake: &FakeDiscord, runbot: &Serve) -> fake_discord::Sent {
    let interactions = runbot.interactions_url();
    let dana = FakeUser::new(1_300_000_000_000_000_001, "Dana", &["DevOps Lead"]);
    let sent = fake
        .send_interaction(
            &interactions,
            fake.slash_command("restart", &[("service", json!("backend"))], &dana, CHANNEL),
        )
        .await;
    let click = fake.confirm(&interactions, &sent, &dana, CHANNEL).await;
    assert_eq!(click.body["type"], 7, "{}", click.body);
    click
}

async fn restart_steps(dir: &Path) -> Vec<String> {
    sqlite_column(
        &dir.join("runbot.db"),
        "SELECT step FROM audit_log WHERE command = 'restart' ORDER BY id",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_restart_lets_it_finish_within_the_grace() {
    let p = Project::new().await;
    let one = p
        .run("backend", "runbot-test/backend:v1", 1, quick_stop)
        .await;
    p.wait_health(&one, HealthStatusEnum::HEALTHY).await;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let (dir, mut runbot) = restart_rig(&p, &fake, 30).await;
    restart_backend(&fake, &runbot).await;

    let (status, took) = runbot.terminate(Duration::from_secs(40));
    assert!(status.success(), "exit status {status}");
    eprintln!("shutdown during a restart that finished took {took:?}");
    assert_eq!(
        restart_steps(dir.path()).await,
        ["requested", "confirmed", "started", "succeeded"]
    );
    common::assert_audit_verifies(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_restart_longer_than_the_grace_records_it_interrupted() {
    let p = Project::new().await;
    // v3 answers 404 on /health: the restart waits up to docker.timeout_secs (20 s) for it.
    let one = p
        .run("backend", "runbot-test/backend:v3", 1, quick_stop)
        .await;
    p.wait_health(&one, HealthStatusEnum::UNHEALTHY).await;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let (dir, mut runbot) = restart_rig(&p, &fake, 1).await;
    let click = restart_backend(&fake, &runbot).await;
    // Under way: started, with no outcome yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while restart_steps(dir.path()).await.last().map(String::as_str) != Some("started") {
        assert!(
            std::time::Instant::now() < deadline,
            "the restart never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, took) = runbot.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    eprintln!("shutdown during a restart that was interrupted took {took:?} (grace 1 s)");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(
        restart_steps(dir.path()).await,
        ["requested", "confirmed", "started", "interrupted"]
    );
    let reason = sqlite_column(
        &dir.path().join("runbot.db"),
        "SELECT reason FROM audit_log WHERE step = 'interrupted'",
    )
    .await;
    assert!(reason[0].contains("shutdown.grace_secs"), "{reason:?}");
    // The requester was told before runbot exited.
    let told = fake.interaction(&click.id);
    assert!(
        told.content()
            .contains("runbot stopped before this finished"),
        "{}",
        told.content()
    );
    common::assert_audit_verifies(dir.path());
}
