//! `/deploy`, `/rollback` and `/deploys` against a real Docker engine (scripts/test's, with the
//! images of scripts/test-images). The backend runs on the host's network on a port of the
//! test's own, so runbot's HTTP health checks and smoke tests reach it as they would in
//! production; the checks are on what the engine runs afterwards.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use common::docker::{docker_host, Project};
use common::rig::{devops, message, text, Edits, Rig};
use common::{free_port, Db, Serve, BOT_TOKEN, CHANNEL};
use runbot::audit::Step;
use runbot::request::Answer;
use runbot::request::RawValue;
use runbot::request::Reply;

/// A stack: one backend on `port` (host network) and two workers, all on `tag`.
async fn stack(p: &Project, port: u16, tag: &str) {
    p.run("backend", &format!("runbot-test/backend:{tag}"), 1, |c| {
        c.env = Some(vec![format!("PORT={port}"), "APP_SECRET=kept".into()]);
        // busybox as PID 1 ignores SIGTERM: without this every stop waits Docker's 10 s.
        c.stop_timeout = Some(1);
        let h = c.host_config.as_mut().unwrap();
        h.network_mode = Some("host".into());
        // A bind mount and a named volume, which a deploy must keep.
        h.binds = Some(vec![
            "/tmp:/srv/uploads:ro".into(),
            format!("{}-media:/srv/media", p.name),
        ]);
        c.labels
            .as_mut()
            .unwrap()
            .insert("team.owner".into(), "payments".into());
    })
    .await;
    for n in 1..=2 {
        p.run("worker", &format!("runbot-test/worker:{tag}"), n, |c| {
            c.stop_timeout = Some(1)
        })
        .await;
    }
}

fn settings(p: &Project, port: u16, migrate: &str) -> String {
    format!(
        r#"
[docker]
host = "{host}"
project = "{project}"
timeout_secs = 20

[deploy]
services = ["backend", "worker"]
backup = false
ready_timeout_secs = 20
heartbeat_secs = 1
lock_stale_secs = 3

[deploy.migrate]
service = "backend"
command = ["sh", "-c", "{migrate}"]
timeout_secs = 20

[[deploy.health]]
name = "backend /health"
url = "http://127.0.0.1:{port}/health"
timeout_secs = 5

[[deploy.smoke]]
name = "version page"
url = "http://127.0.0.1:{port}/health"
contains = "ok backend"
timeout_secs = 5
"#,
        host = docker_host(),
        project = p.name,
    )
}

async fn rig_for(p: &Project, port: u16, migrate: &str) -> Rig {
    Rig::with_config(
        Db::Sqlite,
        &settings(p, port, migrate),
        &[],
        runbot::domain::clock::system_clock(),
    )
    .await
}

/// Asks, confirms, and returns every edit up to the final one (the one with the outcome).
async fn confirmed(rig: &Rig, command: &str, args: &[(&str, RawValue)]) -> Vec<Reply> {
    let edits = Arc::new(Edits::default());
    let prompt = rig.ask(devops(), command, args, &edits).await;
    let confirm = message(&prompt)
        .buttons
        .iter()
        .find(|b| b.label == "Confirm")
        .unwrap_or_else(|| panic!("/{command} asks to confirm: {prompt:?}"))
        .id
        .clone();
    let clicked = rig.click(devops(), &confirm, &edits).await;
    assert!(matches!(clicked, Answer::Update(_)), "{clicked:?}");
    final_edit(&edits).await
}

fn is_final(r: &Reply) -> bool {
    r.text.contains("is running (was")
        || r.text.contains("failed at **")
        || r.text.contains("failed: ")
}

async fn final_edit(edits: &Edits) -> Vec<Reply> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let all = edits.replies.lock().unwrap().clone();
        if all.last().is_some_and(is_final) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no outcome within 120 s; the last edit: {:?}",
            all.last().map(|r| &r.text)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn inspect(p: &Project, service: &str, n: u32) -> ContainerInspectResponse {
    p.docker
        .inspect_container(&format!("{}-{service}-{n}", p.name), None)
        .await
        .unwrap_or_else(|e| panic!("{service}-{n}: {e}"))
}

async fn image_of(p: &Project, service: &str, n: u32) -> String {
    inspect(p, service, n).await.config.unwrap().image.unwrap()
}

async fn health_page(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn container_count(p: &Project) -> usize {
    p.containers().await.len()
}

#[tokio::test]
async fn deploy_v2_then_v3_rolls_back_by_itself_then_rollback_to_v1() {
    let p = Project::new().await;
    let port = free_port();
    stack(&p, port, "v1").await;
    let rig = rig_for(&p, port, "echo migrated on $PORT").await;
    let before = inspect(&p, "backend", 1).await;

    // v1 → v2: every step done, live.
    let edits = confirmed(&rig, "deploy", &[("tag", text("v2"))]).await;
    let last = edits.last().unwrap();
    assert!(
        last.text.contains("✅ **v2** is running (was v1)"),
        "{}",
        last.text
    );
    for step in ["lock", "image", "migrate", "recreate", "health", "smoke"] {
        assert!(
            last.text.contains(&format!("✅ **{step}**")),
            "{step} done: {}",
            last.text
        );
    }
    assert!(last.text.contains("⏭️ **backup**"), "{}", last.text);
    assert!(last.text.contains("migrated on"), "{}", last.text);
    assert!(
        edits.iter().any(|e| e.text.contains("⏳")),
        "the message showed a step running before the end: {edits:?}"
    );
    // What the engine runs: the new image, with the container's own env, labels and network.
    let after = inspect(&p, "backend", 1).await;
    assert_ne!(after.id, before.id, "recreated");
    let config = after.config.clone().unwrap();
    assert_eq!(config.image.as_deref(), Some("runbot-test/backend:v2"));
    let env = config.env.unwrap();
    assert!(env.contains(&format!("PORT={port}")), "{env:?}");
    assert!(env.contains(&"APP_SECRET=kept".to_string()), "{env:?}");
    let labels = config.labels.unwrap();
    assert_eq!(labels["team.owner"], "payments");
    assert_eq!(labels["com.docker.compose.service"], "backend");
    assert_eq!(labels["com.docker.compose.container-number"], "1");
    let host_config = after.host_config.unwrap();
    assert_eq!(host_config.network_mode.as_deref(), Some("host"));
    assert_eq!(
        host_config.binds.unwrap(),
        [
            "/tmp:/srv/uploads:ro".to_string(),
            format!("{}-media:/srv/media", p.name)
        ]
    );
    assert_eq!(health_page(port).await.trim(), "ok backend v2");
    for n in 1..=2 {
        assert_eq!(image_of(&p, "worker", n).await, "runbot-test/worker:v2");
    }
    // No one-off migration container and no replaced container left behind.
    assert_eq!(container_count(&p).await, 3);

    // v2 → v3: v3's health check fails, so runbot goes back to v2 by itself.
    let edits = confirmed(&rig, "deploy", &[("tag", text("v3"))]).await;
    let last = edits.last().unwrap();
    assert!(
        last.text.contains("failed at **health**") && last.text.contains("unhealthy"),
        "{}",
        last.text
    );
    assert!(
        last.text
            .contains("Rolled back automatically: v2 is running again"),
        "{}",
        last.text
    );
    assert!(last.text.contains("✅ **rollback**"), "{}", last.text);
    assert!(
        last.text
            .contains("The database keeps v3's migrations: a rollback does not undo them"),
        "{}",
        last.text
    );
    assert_eq!(image_of(&p, "backend", 1).await, "runbot-test/backend:v2");
    assert_eq!(health_page(port).await.trim(), "ok backend v2");
    for n in 1..=2 {
        assert_eq!(image_of(&p, "worker", n).await, "runbot-test/worker:v2");
    }
    assert_eq!(container_count(&p).await, 3);

    // /rollback with no tag: the successful deploy before the running v2, which is v1.
    let edits = confirmed(&rig, "rollback", &[]).await;
    let last = edits.last().unwrap();
    assert!(
        last.text.contains("✅ **v1** is running (was v2)"),
        "{}",
        last.text
    );
    assert_eq!(image_of(&p, "backend", 1).await, "runbot-test/backend:v1");
    assert_eq!(health_page(port).await.trim(), "ok backend v1");

    // The history, newest first.
    let history = Arc::new(Edits::default());
    let answer = rig
        .ask(
            devops(),
            "deploys",
            &[("limit", RawValue::Integer(5))],
            &history,
        )
        .await;
    assert_eq!(answer, Answer::Deferred { ephemeral: true });
    let shown = history.wait(1).await.remove(0);
    let block = shown.code_block.unwrap();
    let rows: Vec<&str> = block.lines().collect();
    assert!(
        rows[1].contains("rollback → v1") && rows[1].contains("succeeded"),
        "{block}"
    );
    assert!(
        rows[2].contains("v2 → v3") && rows[2].contains("rolled back (health)"),
        "{block}"
    );
    assert!(
        rows[3].contains("v1 → v2") && rows[3].contains("succeeded"),
        "{block}"
    );
    assert!(rows.iter().all(|r| !r.contains("running")), "{block}");
    assert!(block.contains("unhealthy"), "the failure's reason: {block}");

    // The audit trail: two successes and the failure, each with its reason.
    let trail = rig.trail().await;
    let outcomes: Vec<(Step, String)> = trail
        .iter()
        .filter(|(s, c, ..)| matches!(s, Step::Succeeded | Step::Failed) && c != "deploys")
        .map(|(s, c, ..)| (*s, c.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Step::Succeeded, "deploy".to_string()),
            (Step::Failed, "deploy".to_string()),
            (Step::Succeeded, "rollback".to_string()),
        ]
    );
    // The team saw each start and end in the channel.
    let announced = rig
        .count("SELECT COUNT(*) FROM announcements WHERE channel_id = '300000000000000001'")
        .await;
    assert_eq!(announced, 6);

    // Pressing /rollback again does not go "back" to v2, which the last one left: no deploy
    // brought v1, so runbot asks for a tag and changes nothing.
    let edits = confirmed(&rig, "rollback", &[]).await;
    let last = edits.last().unwrap();
    assert!(
        last.text
            .contains("no record of what ran before v1 (no successful /deploy of it)")
            && last.text.contains("Nothing was changed"),
        "{}",
        last.text
    );
    assert_eq!(image_of(&p, "backend", 1).await, "runbot-test/backend:v1");
}

#[tokio::test]
async fn a_tag_outside_the_pattern_or_not_on_the_engine_changes_nothing() {
    let p = Project::new().await;
    let port = free_port();
    stack(&p, port, "v1").await;
    let rig = rig_for(&p, port, "echo migrated").await;
    let before = inspect(&p, "backend", 1).await.id;

    for bad in ["latest", "v1;rm -rf /", "main"] {
        let edits = Arc::new(Edits::default());
        let answer = rig
            .ask(devops(), "deploy", &[("tag", text(bad))], &edits)
            .await;
        let r = message(&answer);
        assert!(r.ephemeral && r.buttons.is_empty(), "{r:?}");
        assert!(r.text.contains("tag"), "{bad}: {}", r.text);
    }

    let edits = confirmed(&rig, "deploy", &[("tag", text("v9"))]).await;
    let last = edits.last().unwrap();
    assert!(
        last.text.contains("failed at **image**")
            && last
                .text
                .contains("runbot-test/backend:v9 is not on the engine and could not be pulled"),
        "{}",
        last.text
    );
    assert!(last.text.contains("Nothing was changed"), "{}", last.text);
    assert!(last.text.contains("▫️ **migrate**"), "{}", last.text);
    assert_eq!(inspect(&p, "backend", 1).await.id, before);
    assert_eq!(container_count(&p).await, 3);
    let state = rig
        .count("SELECT COUNT(*) FROM deploys WHERE state = 'failed' AND failed_step = 'image'")
        .await;
    assert_eq!(state, 1);

    // A migration that fails leaves the containers alone and says so.
    let p2 = Project::new().await;
    let port2 = free_port();
    stack(&p2, port2, "v1").await;
    let rig2 = rig_for(&p2, port2, "echo cannot reach the database >&2; exit 3").await;
    let before = inspect(&p2, "backend", 1).await.id;
    let edits = confirmed(&rig2, "deploy", &[("tag", text("v2"))]).await;
    let last = edits.last().unwrap();
    assert!(
        last.text.contains("failed at **migrate**")
            && last.text.contains("exit code 3")
            && last.text.contains("cannot reach the database"),
        "{}",
        last.text
    );
    assert!(
        last.text.contains("containers were not changed"),
        "{}",
        last.text
    );
    assert_eq!(inspect(&p2, "backend", 1).await.id, before);
    assert_eq!(container_count(&p2).await, 3, "the one-off is removed");

    // deploy.services naming a service the stack does not have: the known ones are listed.
    let rig3 = Rig::with_config(
        Db::Sqlite,
        &settings(&p2, port2, "true").replace(
            "services = [\"backend\", \"worker\"]",
            "services = [\"backend\", \"api\"]",
        ),
        &[],
        runbot::domain::clock::system_clock(),
    )
    .await;
    let edits = confirmed(&rig3, "deploy", &[("tag", text("v2"))]).await;
    let last = &edits.last().unwrap().text;
    assert!(
        last.contains("deploy.services names \"api\"")
            && last.contains("known: backend, worker")
            && last.contains("Nothing was changed"),
        "{last}"
    );
    assert_eq!(inspect(&p2, "backend", 1).await.id, before);
}

#[tokio::test]
async fn one_deploy_at_a_time_and_the_second_is_told_who_holds_the_lock() {
    let p = Project::new().await;
    let port = free_port();
    stack(&p, port, "v1").await;
    // A slow migration keeps the first deploy busy.
    let rig = rig_for(&p, port, "sleep 4; echo migrated").await;
    let first = Arc::new(Edits::default());
    let prompt = rig
        .ask(devops(), "deploy", &[("tag", text("v2"))], &first)
        .await;
    let confirm = message(&prompt).buttons[0].id.clone();
    rig.click(devops(), &confirm, &first).await;
    // Wait until it is migrating.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = first.replies.lock().unwrap().last().cloned();
        if r.is_some_and(|r| r.text.contains("⏳ **migrate**")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never migrating");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = confirmed(&rig, "deploy", &[("tag", text("v3"))]).await;
    let refused = second.last().unwrap();
    assert!(
        refused.text.contains("a deploy of v2 by Dana is running"),
        "{}",
        refused.text
    );
    assert!(
        refused.text.contains("Nothing was changed"),
        "{}",
        refused.text
    );
    let done = final_edit(&first).await;
    assert!(
        done.last().unwrap().text.contains("✅ **v2** is running"),
        "{}",
        done.last().unwrap().text
    );
    assert_eq!(image_of(&p, "backend", 1).await, "runbot-test/backend:v2");
    // The lock is free again.
    let edits = confirmed(&rig, "rollback", &[("tag", text("v1"))]).await;
    assert!(
        edits.last().unwrap().text.contains("✅ **v1** is running"),
        "{}",
        edits.last().unwrap().text
    );
}

#[tokio::test]
async fn a_dry_run_says_every_step_and_changes_nothing() {
    let p = Project::new().await;
    let port = free_port();
    stack(&p, port, "v1").await;
    let rig = rig_for(&p, port, "echo migrated").await;
    let before = inspect(&p, "backend", 1).await.id;
    let edits = Arc::new(Edits::default());
    let answer = rig
        .ask(
            devops(),
            "deploy",
            &[("tag", text("v2")), ("dry_run", RawValue::Boolean(true))],
            &edits,
        )
        .await;
    let plan = &message(&answer).text;
    for part in [
        "v1 → v2",
        "take the deploy lock",
        "runbot-test/backend:v2",
        "run `sh -c echo migrated` in a one-off backend container of v2",
        "recreate 3 containers (backend ×1, worker ×2) on v2",
        "on failure go back to v1",
    ] {
        assert!(plan.contains(part), "{part:?} in {plan}");
    }
    assert_eq!(inspect(&p, "backend", 1).await.id, before);
    assert_eq!(rig.count("SELECT COUNT(*) FROM deploys").await, 0);
}

/// An application database of the test's own on scripts/test's PostgreSQL, with `rows` orders.
async fn app_database(rows: i64) -> (String, String) {
    use sqlx::Connection;
    let admin = common::pg_admin_url();
    let name = format!("rb_deploy_app_{}_{}", std::process::id(), free_port());
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let url = {
        let mut u = url::Url::parse(&admin).unwrap();
        u.set_path(&name);
        u.to_string()
    };
    let mut app = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE orders (id serial PRIMARY KEY, total numeric NOT NULL);
         INSERT INTO orders (total) SELECT g FROM generate_series(1, {rows}) g;"
    ))
    .execute(&mut app)
    .await
    .unwrap();
    (name, url)
}

async fn orders(url: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_deploy_backs_up_first_and_a_rollback_restores_a_backup_once_a_dba_approves() {
    let p = Project::new().await;
    let port = free_port();
    stack(&p, port, "v1").await;
    let (_, app_url) = app_database(10).await;
    let backups = tempfile::tempdir().unwrap();
    let toml = settings(&p, port, "echo migrated").replace("backup = false", "backup = true")
        + &format!(
            "\n[app_database]\nurl = \"{app_url}\"\nbackup_dir = \"{}\"\n",
            backups.path().display()
        );
    let rig = Rig::with_config(
        Db::Sqlite,
        &toml,
        &[],
        runbot::domain::clock::system_clock(),
    )
    .await;

    let edits = confirmed(&rig, "deploy", &[("tag", text("v2"))]).await;
    let last = edits.last().unwrap();
    assert!(last.text.contains("✅ **v2** is running"), "{}", last.text);
    let files: Vec<String> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let backup = files[0].clone();
    assert!(
        backup.starts_with("backup_") && backup.ends_with(".sql.gz"),
        "{backup}"
    );
    assert!(
        last.text.contains("✅ **backup**") && last.text.contains(&backup),
        "{}",
        last.text
    );

    // The new version wrote rows the team wants gone: back to v1 and to the backup.
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&app_url).await.unwrap();
        sqlx::query("INSERT INTO orders (total) SELECT g FROM generate_series(1, 5) g")
            .execute(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(orders(&app_url).await, 15);
    let edits = Arc::new(Edits::default());
    let asked = rig
        .ask(
            devops(),
            "rollback",
            &[("tag", text("v1")), ("backup", text(&backup))],
            &edits,
        )
        .await;
    let prompt = message(&asked);
    assert!(
        prompt.text.contains("dba") && !prompt.ephemeral,
        "an approval request the channel sees: {prompt:?}"
    );
    // Nothing happens before a dba approves.
    assert_eq!(orders(&app_url).await, 15);
    assert_eq!(image_of(&p, "backend", 1).await, "runbot-test/backend:v2");
    let approve = prompt
        .buttons
        .iter()
        .find(|b| b.label == "Approve")
        .unwrap()
        .id
        .clone();
    let dba = common::rig::person("100000000000000005", "Dora");
    let clicked = rig.click(dba, &approve, &edits).await;
    assert!(matches!(clicked, Answer::Update(_)), "{clicked:?}");
    let last = final_edit(&edits).await.pop().unwrap();
    assert!(
        last.text.contains("✅ **v1** is running (was v2)"),
        "{}",
        last.text
    );
    assert!(
        last.text.contains("✅ **restore**") && last.text.contains(&backup),
        "{}",
        last.text
    );
    assert_eq!(orders(&app_url).await, 10, "the backup's rows");
    assert_eq!(image_of(&p, "backend", 1).await, "runbot-test/backend:v1");
    // The restore kept a safety backup of the state it replaced.
    assert_eq!(std::fs::read_dir(backups.path()).unwrap().count(), 2);
}

async fn sqlite_rows(db: &std::path::Path, sql: &str) -> Vec<(String, String)> {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_mid_way_is_marked_interrupted_by_the_next_runbot_which_says_what_runs() {
    use fake_discord::{FakeDiscord, FakeUser};
    use serde_json::json;
    let p = Project::new().await;
    let port = free_port();
    stack(&p, port, "v1").await;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = common::rig::policies_dir(&fake);
    std::fs::write(
        dir.path().join("runbot.toml"),
        settings(&p, port, "echo migrating; sleep 60")
            + &format!("\n[policy]\ndir = \"{}\"\n", policies.display()),
    )
    .unwrap();
    let db = dir.path().join("runbot.db");

    let runbot = Serve::start(dir.path(), &fake).await;
    let interactions = runbot.interactions_url();
    let dana = FakeUser::new(1_300_000_000_000_000_001, "Dana", &["DevOps Lead"]);
    let sent = fake
        .send_interaction(
            &interactions,
            fake.slash_command("deploy", &[("tag", json!("v2"))], &dana, CHANNEL),
        )
        .await;
    let click = fake.confirm(&interactions, &sent, &dana, CHANNEL).await;
    assert_eq!(click.body["type"], 7, "{}", click.body);
    fake.wait_for_interaction(&click.id, Duration::from_secs(30), |i| {
        i.content().contains("⏳ **migrate**")
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while container_count(&p).await < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the migration's one-off never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A crash in the middle of the migration.
    drop(runbot);
    let running = sqlite_rows(&db, "SELECT tag, state FROM deploys").await;
    assert_eq!(running, [("v2".to_string(), "running".to_string())]);

    // The next runbot finds it once its heartbeat is stale (3 s here), says so in the
    // channel with what runs now, and frees the lock.
    let runbot = Serve::start(dir.path(), &fake).await;
    let said = fake
        .wait_for(
            Duration::from_secs(30),
            "the interrupted deploy announced",
            |messages, _| {
                messages
                    .iter()
                    .find(|m| m.content().contains("was interrupted"))
                    .map(|m| m.content().to_string())
            },
        )
        .await;
    assert!(
        said.contains("The deploy of **v2** by **Dana**")
            && said.contains("during **migrate**")
            && said.contains("The deploy lock is released")
            && said.contains("Running now: backend v1 ×1 (running), worker v1 ×2 (running)"),
        "{said}"
    );
    let state = sqlite_rows(&db, "SELECT tag, state FROM deploys").await;
    assert_eq!(state, [("v2".to_string(), "interrupted".to_string())]);
    // Its audit trail ends with `interrupted`, and the chain still verifies.
    let steps = sqlite_rows(
        &db,
        "SELECT step, command FROM audit_log WHERE command = 'deploy' ORDER BY id",
    )
    .await;
    let steps: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        steps,
        ["requested", "confirmed", "started", "interrupted"],
        "{steps:?}"
    );
    common::assert_audit_verifies(dir.path());
    // The migration's container is gone and nothing changed: v1 still runs.
    assert_eq!(container_count(&p).await, 3);
    assert_eq!(image_of(&p, "backend", 1).await, "runbot-test/backend:v1");
    drop(runbot);
}

/// SIGTERM during a deploy that outlasts `shutdown.grace_secs`: this runbot records it
/// interrupted itself (once), frees its lock and says so, and exits 0; the next runbot has
/// nothing left to recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_running_at_sigterm_is_marked_interrupted_by_the_stopping_runbot() {
    use fake_discord::{FakeDiscord, FakeUser};
    use serde_json::json;
    let p = Project::new().await;
    let port = free_port();
    stack(&p, port, "v1").await;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = common::rig::policies_dir(&fake);
    std::fs::write(
        dir.path().join("runbot.toml"),
        settings(&p, port, "echo migrating; sleep 60")
            + &format!(
                "\n[policy]\ndir = \"{}\"\n\n[shutdown]\ngrace_secs = 1\n",
                policies.display()
            ),
    )
    .unwrap();
    let db = dir.path().join("runbot.db");

    let mut runbot = Serve::start(dir.path(), &fake).await;
    let interactions = runbot.interactions_url();
    let dana = FakeUser::new(1_300_000_000_000_000_001, "Dana", &["DevOps Lead"]);
    let sent = fake
        .send_interaction(
            &interactions,
            fake.slash_command("deploy", &[("tag", json!("v2"))], &dana, CHANNEL),
        )
        .await;
    let click = fake.confirm(&interactions, &sent, &dana, CHANNEL).await;
    assert_eq!(click.body["type"], 7, "{}", click.body);
    fake.wait_for_interaction(&click.id, Duration::from_secs(30), |i| {
        i.content().contains("⏳ **migrate**")
    })
    .await;

    let (status, took) = runbot.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    eprintln!("shutdown during a deploy took {took:?} (grace 1 s)");
    let state = sqlite_rows(&db, "SELECT tag, state FROM deploys").await;
    assert_eq!(state, [("v2".to_string(), "interrupted".to_string())]);
    let steps = || async {
        let rows = sqlite_rows(
            &db,
            "SELECT step, command FROM audit_log WHERE command = 'deploy' ORDER BY id",
        )
        .await;
        rows.into_iter().map(|(s, _)| s).collect::<Vec<String>>()
    };
    assert_eq!(
        steps().await,
        ["requested", "confirmed", "started", "interrupted"]
    );
    // The migration's one-off is gone; v1 still runs.
    assert_eq!(container_count(&p).await, 3);
    assert_eq!(image_of(&p, "backend", 1).await, "runbot-test/backend:v1");

    // The next runbot sends the announcement the stopping one queued.
    let runbot = Serve::start(dir.path(), &fake).await;
    let said = fake
        .wait_for(
            Duration::from_secs(30),
            "the interrupted deploy announced",
            |messages, _| {
                messages
                    .iter()
                    .find(|m| m.content().contains("was interrupted"))
                    .map(|m| m.content().to_string())
            },
        )
        .await;
    assert!(
        said.contains("during **migrate**") && said.contains("The deploy lock is released"),
        "{said}"
    );
    // Its start-up recovery found nothing left running to mark a second time.
    assert_eq!(
        steps().await,
        ["requested", "confirmed", "started", "interrupted"]
    );
    drop(runbot);
    common::assert_audit_verifies(dir.path());
}

/// Sets a deploy's heartbeat back by `secs`, by the database's own clock: as a runbot that
/// stopped renewing it that long ago would have left it.
async fn silence_deploy(url: &str, db: common::Db, id: i64, secs: i64) {
    use sqlx::Connection;
    match db {
        common::Db::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(
                "UPDATE deploys SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%f', 'now', $1) || '000000Z' WHERE id = $2",
            )
            .bind(format!("-{secs} seconds"))
            .bind(id)
            .execute(&mut c)
            .await
            .unwrap();
        }
        common::Db::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(
                "UPDATE deploys SET heartbeat_at = to_char((now() - make_interval(secs => $1)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '000Z' WHERE id = $2",
            )
            .bind(secs as f64)
            .bind(id)
            .execute(&mut c)
            .await
            .unwrap();
        }
    }
}

/// The lock as two replicas see it, on both databases: one deploy at a time, a second told who
/// holds it, and a stale one taken over; stale by the database's clock, which also wrote the
/// heartbeats.
#[tokio::test]
async fn the_deploy_lock_is_shared_by_replicas_on_both_databases() {
    use runbot::store::{Lock, NewDeploy, Store};
    for db in common::BOTH {
        let dir = tempfile::tempdir().unwrap();
        let url = common::fresh_database(db, dir.path()).await;
        let settings = runbot::config::Settings::load_from(
            None,
            vec![("RUNBOT__DATABASE__URL".into(), url.clone())],
        )
        .unwrap();
        let a = Store::connect(&settings.database).await.unwrap();
        let b = Store::connect(&settings.database).await.unwrap();
        let new = |owner: &'static str, tag: &'static str| NewDeploy {
            project: "saas",
            kind: "deploy",
            tag,
            from_tag: Some("v1"),
            actor: owner,
            invocation_id: owner,
            platform: "discord",
            channel_id: None,
            owner,
        };
        let Lock::Taken(first) = a.begin_deploy(&new("ana", "v2")).await.unwrap() else {
            panic!("{db:?}: the first deploy takes the lock")
        };
        match b.begin_deploy(&new("bea", "v3")).await.unwrap() {
            Lock::HeldBy(holder) => {
                assert_eq!((holder.id, holder.actor.as_str()), (first, "ana"), "{db:?}");
                // Written by the database's clock, as format_time writes times.
                let started = runbot::domain::parse_stored_time(&holder.started_at).unwrap();
                let off = (chrono::Utc::now() - started).num_seconds().abs();
                assert!(off < 60, "{db:?}: {}", holder.started_at);
                assert_eq!(
                    holder.heartbeat_at.len(),
                    "2026-11-28T03:00:00.000000000Z".len()
                );
            }
            Lock::Taken(_) => panic!("{db:?}: two deploys at once"),
        }
        // Another project has its own lock.
        let other = NewDeploy {
            project: "other",
            ..new("bea", "v3")
        };
        let Lock::Taken(other) = b.begin_deploy(&other).await.unwrap() else {
            panic!("{db:?}: another project's lock is its own")
        };
        assert!(b
            .finish_deploy(other, "bea", "succeeded", None, None, "[]")
            .await
            .unwrap());
        // A's heartbeat is fresh: nothing is interrupted.
        assert!(a.deploy_progress(first, "ana", "[]").await.unwrap());
        let stale = b.interrupt_stale_deploys(60, "bea").await.unwrap();
        assert!(stale.is_empty(), "{db:?}: {stale:?}");
        // A goes silent for two minutes: A itself never takes its own deploy for dead (its
        // store was away); B marks it interrupted, A learns it lost the lock, B may deploy.
        silence_deploy(&url, db, first, 120).await;
        let own = a.interrupt_stale_deploys(60, "ana").await.unwrap();
        assert!(own.is_empty(), "{db:?}: {own:?}");
        let stale = b.interrupt_stale_deploys(60, "bea").await.unwrap();
        assert_eq!(stale.len(), 1, "{db:?}");
        assert_eq!(stale[0].state, "interrupted");
        assert!(stale[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no heartbeat since")));
        assert!(!a.deploy_progress(first, "ana", "[]").await.unwrap());
        assert!(!a
            .finish_deploy(first, "ana", "succeeded", None, None, "[]")
            .await
            .unwrap());
        assert!(matches!(
            b.begin_deploy(&new("bea", "v3")).await.unwrap(),
            Lock::Taken(_)
        ));
        let history = b.recent_deploys("saas", 10).await.unwrap();
        let states: Vec<&str> = history.iter().map(|d| d.state.as_str()).collect();
        assert_eq!(states, ["running", "interrupted"], "{db:?}");
    }
}
