//! Locks that hold across replicas and restarts: the stack's lease, which `/restart`, `/scale`
//! and `/restore` wait for while a deploy runs (and say so), and the database's, which keeps
//! backups and restores of one database to one at a time. Two runbots ("replicas") share one
//! database here, each with its own dispatcher and process owner, against the real Docker
//! engine and PostgreSQL; every age is by the database's clock.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use chrono::{DateTime, Utc};
use common::app_db::{files, gunzip, AppDb};
use common::docker::{docker_host, Project};
use common::rig::{button, devops, message, person, text, Edits, Rig, ROLES};
use common::Db;
use runbot::audit::Step;
use runbot::domain::clock::{system_clock, Clock};
use runbot::request::Answer;
use runbot::request::RawValue;
use runbot::request::Reply;
use runbot::store::{Store, TakeLock};
use sqlx::Connection;

// ---------------------------------------------------------------------------------------------
// The store's lease API, on both databases.

async fn two_stores(db: Db, dir: &Path) -> (String, Store, Store) {
    let url = common::fresh_database(db, dir).await;
    let settings = runbot::config::Settings::load_from(
        None,
        vec![("RUNBOT__DATABASE__URL".into(), url.clone())],
    )
    .unwrap();
    let a = Store::connect(&settings.database).await.unwrap();
    let b = Store::connect(&settings.database).await.unwrap();
    (url, a, b)
}

/// Runs one statement on the database at `url`.
async fn exec(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }
}

/// SQL for the database's own clock `secs` ago, as runbot stores times.
fn db_ago(url: &str, secs: u64) -> String {
    if url.starts_with("sqlite:") {
        format!("(strftime('%Y-%m-%dT%H:%M:%f', 'now', '-{secs} seconds') || '000000Z')")
    } else {
        format!(
            "(to_char((now() - interval '{secs} seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '000Z')"
        )
    }
}

/// Sets a time of lock `name` back by `secs`, by the database's clock.
async fn set_back(url: &str, name: &str, column: &str, secs: u64) {
    exec(
        url,
        &format!(
            "UPDATE locks SET {column} = {} WHERE name = '{name}'",
            db_ago(url, secs)
        ),
    )
    .await;
}

#[tokio::test]
async fn a_lease_is_held_renewed_and_released_by_its_owner_only_and_taken_over_once_stale() {
    for db in common::BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (url, a, b) = two_stores(db, dir.path()).await;
        let name = "stack:saas";
        let dana = "deploy #3 of v2 by Dana";
        let bruno = "/restart backend by Bruno";
        assert_eq!(
            a.take_lock(name, "a1", dana, Some("inv-a"), 60)
                .await
                .unwrap(),
            TakeLock::Taken,
            "{db:?}"
        );

        // Another replica is told who holds it, and for how long by the database's clock.
        set_back(&url, name, "taken_at", 40).await;
        let TakeLock::Held(h) = b.take_lock(name, "b1", bruno, None, 60).await.unwrap() else {
            panic!("{db:?}: two holders at once")
        };
        assert_eq!(
            (
                h.owner.as_str(),
                h.holder.as_str(),
                h.invocation_id.as_deref()
            ),
            ("a1", dana, Some("inv-a")),
            "{db:?}"
        );
        assert!((40..45).contains(&h.held.as_secs()), "{db:?}: {h:?}");
        assert!(h.silent < Duration::from_secs(5), "{db:?}: {h:?}");

        // Only its owner renews or frees it.
        assert!(!b.renew_lock(name, "b1").await.unwrap(), "{db:?}");
        assert!(!b.release_lock(name, "b1").await.unwrap(), "{db:?}");
        assert!(a.renew_lock(name, "a1").await.unwrap(), "{db:?}");
        assert_eq!(a.lock_holder(name).await.unwrap().unwrap().owner, "a1");

        // Another name is another lock.
        assert_eq!(
            b.take_lock(
                "database:app@db:5432/app",
                "b2",
                "/backup by Dora",
                None,
                60
            )
            .await
            .unwrap(),
            TakeLock::Taken,
            "{db:?}"
        );

        // Silent for 50 s is not stale at 60 s.
        set_back(&url, name, "heartbeat_at", 50).await;
        assert!(
            matches!(
                b.take_lock(name, "b1", bruno, None, 60).await.unwrap(),
                TakeLock::Held(_)
            ),
            "{db:?}"
        );

        // Silent for 2 minutes (its runbot died): taken over. The old owner learns it lost it
        // at its next renewal and cannot free the new owner's lock.
        set_back(&url, name, "heartbeat_at", 120).await;
        assert_eq!(
            b.take_lock(name, "b1", bruno, None, 60).await.unwrap(),
            TakeLock::Taken,
            "{db:?}"
        );
        let h = a.lock_holder(name).await.unwrap().unwrap();
        assert_eq!((h.owner.as_str(), h.holder.as_str()), ("b1", bruno));
        assert!(h.held < Duration::from_secs(5), "{db:?}: {h:?}");
        assert!(!a.renew_lock(name, "a1").await.unwrap(), "{db:?}");
        assert!(!a.release_lock(name, "a1").await.unwrap(), "{db:?}");
        assert!(b.release_lock(name, "b1").await.unwrap(), "{db:?}");
        assert_eq!(a.lock_holder(name).await.unwrap(), None, "{db:?}");
        assert_eq!(
            a.take_lock(name, "a2", dana, None, 60).await.unwrap(),
            TakeLock::Taken,
            "{db:?}"
        );
    }
}

#[tokio::test]
async fn of_many_replicas_trying_at_once_exactly_one_gets_a_free_or_stale_lease() {
    for db in common::BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (url, a, b) = two_stores(db, dir.path()).await;
        for round in 0..2 {
            let tries = (0..16).map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                async move {
                    store
                        .take_lock("stack:saas", &format!("o{round}-{i}"), "x", None, 60)
                        .await
                        .unwrap()
                }
            });
            let results = futures_util::future::join_all(tries).await;
            let taken = results.iter().filter(|r| **r == TakeLock::Taken).count();
            assert_eq!(taken, 1, "{db:?} round {round}: {results:?}");
            // The winner dies: its lease goes stale and the next round takes it over.
            set_back(&url, "stack:saas", "heartbeat_at", 120).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Two replicas and a real stack.

/// Two workers on `tag`, which stop at once.
async fn workers(p: &Project, tag: &str) {
    for n in 1..=2 {
        p.run("worker", &format!("runbot-test/worker:{tag}"), n, |c| {
            c.stop_timeout = Some(1)
        })
        .await;
    }
}

/// A deploy of the workers whose migration takes `migrate_secs`; a lock is waited for at most
/// `wait_secs`.
fn settings(p: &Project, migrate_secs: u64, wait_secs: u64) -> String {
    format!(
        r#"
[docker]
host = "{host}"
project = "{project}"
timeout_secs = 20

[deploy]
services = ["worker"]
backup = false
ready_timeout_secs = 20
heartbeat_secs = 1
lock_stale_secs = 3
lock_wait_secs = {wait_secs}

[deploy.migrate]
service = "worker"
command = ["sleep", "{migrate_secs}"]
timeout_secs = 30
"#,
        host = docker_host(),
        project = p.name,
    )
}

/// Asks as the DevOps Lead and presses Confirm; the result arrives in `edits`.
async fn confirmed(rig: &Rig, command: &str, args: &[(&str, RawValue)], edits: &Arc<Edits>) {
    let prompt = rig.ask(devops(), command, args, edits).await;
    let confirm = button(message(&prompt), "Confirm");
    let clicked = rig.click(devops(), &confirm, edits).await;
    assert!(matches!(clicked, Answer::Update(_)), "{clicked:?}");
}

/// The first edit that `pred` accepts, waited for at most 90 s.
async fn until(edits: &Edits, what: &str, pred: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let all = edits.replies.lock().unwrap().clone();
        if let Some(r) = all.iter().find(|r| pred(r)) {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 90 s; the edits: {:#?}",
            all.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn said(edits: &Edits, part: &str) -> bool {
    edits
        .replies
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.text.contains(part))
}

/// The project's worker replicas (not the migration's one-off), by number.
async fn worker_replicas(p: &Project) -> Vec<ContainerInspectResponse> {
    let mut out = p
        .inspect_service("worker", &["com.docker.compose.oneoff=False"])
        .await;
    out.sort_by_key(|i| i.name.clone());
    out
}

fn started_at(i: &ContainerInspectResponse) -> DateTime<Utc> {
    let s = i.state.as_ref().unwrap().started_at.as_deref().unwrap();
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn image(i: &ContainerInspectResponse) -> String {
    i.config.as_ref().unwrap().image.clone().unwrap()
}

/// The steps of `command`'s audit rows, oldest first.
async fn steps_of(rig: &Rig, command: &str) -> Vec<Step> {
    rig.trail()
        .await
        .into_iter()
        .filter(|r| r.1 == command)
        .map(|r| r.0)
        .collect()
}

#[tokio::test]
async fn a_restart_asked_of_another_replica_mid_deploy_waits_says_so_and_runs_after_the_deploy() {
    let p = Project::new().await;
    workers(&p, "v1").await;
    let toml = settings(&p, 5, 120);
    let a = Rig::with_config(Db::Postgres, &toml, &[], system_clock()).await;
    let b = a.replica(&toml, &[], system_clock()).await;

    let deploy = Arc::new(Edits::default());
    confirmed(&a, "deploy", &[("tag", text("v2"))], &deploy).await;
    until(&deploy, "the deploy migrates", |r| {
        r.text.contains("⏳ **migrate**")
    })
    .await;

    let restart = Arc::new(Edits::default());
    confirmed(&b, "restart", &[("service", text("worker"))], &restart).await;
    let waiting = until(&restart, "the restart says it waits", |r| {
        r.text.contains("⏳ Waiting for")
    })
    .await;
    assert!(
        waiting
            .text
            .contains("⏳ Waiting for deploy #1 of v2 by Dana (running ")
            && waiting
                .text
                .contains(") to finish before restarting worker…"),
        "{}",
        waiting.text
    );
    assert!(!said(&restart, "restarted **worker**"));

    until(&deploy, "the deploy's outcome", |r| {
        r.text.contains("✅ **v2** is running")
    })
    .await;
    let done = until(&restart, "the restart's outcome", |r| {
        r.text.contains("restarted **worker**") || r.text.contains("failed")
    })
    .await;
    assert!(
        done.text.contains(&format!(
            "restarted **worker** of {}: 2 containers, each running again",
            p.name
        )),
        "{}",
        done.text
    );
    // It restarted the deploy's containers, after the deploy had finished.
    let finished: String = sqlx::query_scalar("SELECT finished_at FROM deploys WHERE id = 1")
        .fetch_one(&mut sqlx::PgConnection::connect(&a.database_url).await.unwrap())
        .await
        .unwrap();
    let finished = runbot::domain::parse_stored_time(&finished).unwrap();
    let now = worker_replicas(&p).await;
    assert_eq!(now.len(), 2);
    for w in &now {
        assert_eq!(image(w), "runbot-test/worker:v2", "{:?}", w.name);
        assert!(
            started_at(w) > finished,
            "{:?} restarted after the deploy",
            w.name
        );
    }
    assert_eq!(
        steps_of(&b, "restart").await,
        [
            Step::Requested,
            Step::Confirmed,
            Step::Started,
            Step::Succeeded
        ]
    );
    assert_eq!(
        b.count("SELECT COUNT(*) FROM locks").await,
        0,
        "all released"
    );
}

#[tokio::test]
async fn a_scale_that_waits_past_deploy_lock_wait_secs_names_the_holder_and_changes_nothing() {
    let p = Project::new().await;
    workers(&p, "v1").await;
    let a = Rig::with_config(Db::Sqlite, &settings(&p, 6, 120), &[], system_clock()).await;
    let b = a.replica(&settings(&p, 6, 1), &[], system_clock()).await;

    let deploy = Arc::new(Edits::default());
    confirmed(&a, "deploy", &[("tag", text("v2"))], &deploy).await;
    until(&deploy, "the deploy migrates", |r| {
        r.text.contains("⏳ **migrate**")
    })
    .await;
    let before: Vec<String> = worker_replicas(&p)
        .await
        .iter()
        .map(|w| w.id.clone().unwrap())
        .collect();

    let scale = Arc::new(Edits::default());
    confirmed(
        &b,
        "scale",
        &[
            ("service", text("worker")),
            ("replicas", RawValue::Integer(3)),
        ],
        &scale,
    )
    .await;
    let refused = until(&scale, "the scale's outcome", |r| r.text.contains("failed")).await;
    assert!(
        refused.text.contains(&format!(
            "deploy #1 of v2 by Dana still holds the stack {} (running ",
            p.name
        )) && refused
            .text
            .contains("(deploy.lock_wait_secs) and gave up scaling worker to 3")
            && refused.text.contains("Nothing was changed"),
        "{}",
        refused.text
    );
    assert!(said(&scale, "⏳ Waiting for deploy #1 of v2 by Dana"));
    let during: Vec<String> = worker_replicas(&p)
        .await
        .iter()
        .map(|w| w.id.clone().unwrap())
        .collect();
    assert_eq!(during, before, "no replica was added");
    assert_eq!(
        steps_of(&b, "scale").await,
        [
            Step::Requested,
            Step::Confirmed,
            Step::Started,
            Step::Failed
        ]
    );

    // The deploy went on undisturbed.
    until(&deploy, "the deploy's outcome", |r| {
        r.text.contains("✅ **v2** is running")
    })
    .await;
    assert_eq!(worker_replicas(&p).await.len(), 2);
}

#[tokio::test]
async fn a_deploy_waits_on_its_lock_step_for_a_restart_holding_the_stack_and_gives_up_at_the_bound()
{
    let p = Project::new().await;
    workers(&p, "v1").await;
    let rig = Rig::with_config(Db::Sqlite, &settings(&p, 1, 1), &[], system_clock()).await;
    // A /restart on another replica holds the stack, alive.
    let name = format!("stack:{}", p.name);
    let taken = rig
        .store
        .take_lock(&name, "other-replica", "/restart worker by Bruno", None, 60)
        .await
        .unwrap();
    assert_eq!(taken, TakeLock::Taken);

    let deploy = Arc::new(Edits::default());
    confirmed(&rig, "deploy", &[("tag", text("v2"))], &deploy).await;
    let done = until(&deploy, "the deploy's outcome", |r| {
        r.text.contains("failed at")
    })
    .await;
    assert!(
        done.text.contains(
            "❌ The deploy failed at **lock**: /restart worker by Bruno still holds the stack"
        ) && done
            .text
            .contains("gave up deploying v2. Nothing was changed")
            && done.text.contains("Still running: v1"),
        "{}",
        done.text
    );
    assert!(
        deploy.replies.lock().unwrap().iter().any(|r| r
            .text
            .lines()
            .any(|l| l.starts_with("⏳ **lock**")
                && l.contains(" — Waiting for /restart worker by Bruno (running ")
                && l.ends_with("to finish before deploying v2…"))),
        "the lock step says what it waits for"
    );
    for w in worker_replicas(&p).await {
        assert_eq!(image(&w), "runbot-test/worker:v1");
    }
    let state: String = {
        let mut c = sqlx::SqliteConnection::connect(&rig.database_url)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT state || ' at ' || failed_step FROM deploys")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert_eq!(state, "failed at lock");
    // The restart's lease is still its own; the deploy's row no longer holds the deploy lock.
    assert_eq!(
        rig.store.lock_holder(&name).await.unwrap().unwrap().owner,
        "other-replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_is_an_hour_ahead_keeps_a_live_deploy_and_takes_over_a_dead_ones_lock(
) {
    let p = Project::new().await;
    workers(&p, "v1").await;
    let toml = settings(&p, 7, 120);
    let a = Rig::with_config(Db::Postgres, &toml, &[], system_clock()).await;
    let ahead: Clock = Arc::new(|| Utc::now() + chrono::Duration::hours(1));
    let b = a.replica(&toml, &[], ahead).await;

    let deploy = Arc::new(Edits::default());
    confirmed(&a, "deploy", &[("tag", text("v2"))], &deploy).await;
    until(&deploy, "the deploy migrates", |r| {
        r.text.contains("⏳ **migrate**")
    })
    .await;
    // Longer than deploy.lock_stale_secs (3 s): by B's clock, A's heartbeats are an hour old.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let marked = runbot::executors::docker::deploy::recover(&b.dispatcher.executors().deploys)
        .await
        .unwrap();
    assert_eq!(marked, 0, "B took A's live deploy for dead");
    let done = until(&deploy, "the deploy's outcome", |r| {
        r.text.contains("is running (was") || r.text.contains("failed at")
    })
    .await;
    assert!(done.text.contains("✅ **v2** is running"), "{}", done.text);

    // A runbot killed mid-deploy left its row and the stack's lease behind, silent for an
    // hour by the database's clock.
    let url = &a.database_url;
    let hour_ago = db_ago(url, 3600);
    exec(
        url,
        &format!(
            "INSERT INTO deploys (project, kind, tag, from_tag, actor, invocation_id, platform, \
             channel_id, state, steps, started_at, heartbeat_at, owner) \
             VALUES ('{p}', 'deploy', 'v3', 'v2', 'Dana', 'dead-invocation', 'discord', NULL, \
             'running', '[]', {hour_ago}, {hour_ago}, 'dead-runbot'); \
             INSERT INTO locks (name, owner, holder, invocation_id, taken_at, heartbeat_at) \
             VALUES ('stack:{p}', 'dead-lease', 'deploy #2 of v3 by Dana', 'dead-invocation', \
             {hour_ago}, {hour_ago})",
            p = p.name
        ),
    )
    .await;
    let marked = runbot::executors::docker::deploy::recover(&b.dispatcher.executors().deploys)
        .await
        .unwrap();
    assert_eq!(marked, 1, "the dead runbot's deploy is marked interrupted");
    let restart = Arc::new(Edits::default());
    confirmed(&b, "restart", &[("service", text("worker"))], &restart).await;
    let r = until(&restart, "the restart's outcome", |r| {
        r.text.contains("restarted **worker**") || r.text.contains("failed")
    })
    .await;
    assert!(r.text.contains("restarted **worker**"), "{}", r.text);
    assert!(
        !said(&restart, "Waiting"),
        "a dead lease is taken over at once"
    );
    assert_eq!(b.count("SELECT COUNT(*) FROM locks").await, 0);
}

// ---------------------------------------------------------------------------------------------
// The application database's lock.

/// An application database of the test's own with 100 orders, dropped with it.
async fn app_with_orders() -> AppDb {
    let db = AppDb::new().await;
    db.exec(
        "CREATE TABLE orders (id serial PRIMARY KEY, total numeric(10,2) NOT NULL);
         INSERT INTO orders (total) SELECT g * 1.25 FROM generate_series(1, 100) g;",
    )
    .await;
    db
}

fn dora() -> runbot::request::Actor {
    person("100000000000000005", "Dora")
}

#[tokio::test]
async fn two_backups_asked_of_two_replicas_in_one_second_both_succeed_one_after_the_other() {
    let app = app_with_orders().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    // A pg_dump that takes two seconds, so the two surely overlap.
    let slow = dir.path().join("slow_pg_dump");
    std::fs::write(&slow, "#!/bin/sh\nsleep 2\nexec pg_dump \"$@\"\n").unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (url, folder, program) = (
        app.url(),
        backups.display().to_string(),
        slow.display().to_string(),
    );
    let extra = [
        ("RUNBOT__APP_DATABASE__URL", url.as_str()),
        ("RUNBOT__APP_DATABASE__BACKUP_DIR", folder.as_str()),
        ("RUNBOT__APP_DATABASE__PG_DUMP", program.as_str()),
    ];
    // Both clocks stopped in the same second.
    let at = Utc::now();
    let frozen: Clock = Arc::new(move || at);
    let a = Rig::new(Db::Postgres, &extra, frozen.clone()).await;
    let b = a.replica("", &extra, frozen).await;

    let (first, second) = (Arc::new(Edits::default()), Arc::new(Edits::default()));
    let (x, y) = tokio::join!(
        a.ask(dora(), "backup", &[], &first),
        b.ask(dora(), "backup", &[], &second)
    );
    assert!(matches!(x, Answer::Deferred { .. }), "{x:?}");
    assert!(matches!(y, Answer::Deferred { .. }), "{y:?}");
    for edits in [&first, &second] {
        let r = until(edits, "a backup's outcome", |r| {
            r.text.contains("backed up database") || r.text.contains("failed")
        })
        .await;
        assert!(r.text.contains("backed up database"), "{}", r.text);
    }
    assert!(
        said(&first, "⏳ Waiting for /backup by Dora (running ")
            || said(&second, "⏳ Waiting for /backup by Dora (running "),
        "one waited for the other, and said so"
    );
    let names = [
        runbot::executors::database::engine::backup_name(at),
        runbot::executors::database::engine::backup_name(at + chrono::Duration::seconds(1)),
    ];
    assert_eq!(files(&backups), names, "two files, no partial one left");
    for name in &names {
        let sql = gunzip(&backups.join(name));
        assert!(
            sql.contains("COPY public.orders") && sql.contains("dump complete"),
            "{name} is a whole dump"
        );
    }
    assert_eq!(
        a.count("SELECT COUNT(*) FROM locks").await,
        0,
        "all released"
    );
}

#[tokio::test]
async fn a_restore_while_a_deploy_holds_the_stack_waits_then_gives_up_with_the_data_untouched() {
    let app = app_with_orders().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let backup = "backup_20200101_000001.sql.gz";
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(backups.join(backup)).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, b"DELETE FROM orders;\n").unwrap();
    gz.finish().unwrap();
    let (url, folder) = (app.url(), backups.display().to_string());
    let roles = ROLES.replace(
        "[roles.dba]\ndiscord_users = [\"100000000000000005\"]",
        "[roles.dba]\ndiscord_users = [\"100000000000000005\", \"100000000000000006\"]",
    );
    let rig = Rig::with_roles(
        Db::Sqlite,
        &[
            ("RUNBOT__APP_DATABASE__URL", url.as_str()),
            ("RUNBOT__APP_DATABASE__BACKUP_DIR", folder.as_str()),
            ("RUNBOT__DOCKER__HOST", &docker_host()),
            ("RUNBOT__DOCKER__PROJECT", "lockedsaas"),
            ("RUNBOT__DEPLOY__LOCK_WAIT_SECS", "1"),
        ],
        system_clock(),
        &roles,
    )
    .await;
    // A deploy on another replica holds the stack, alive (a fresh heartbeat).
    assert_eq!(
        rig.store
            .take_lock(
                "stack:lockedsaas",
                "other-replica",
                "deploy #7 of v2 by Dana",
                None,
                60
            )
            .await
            .unwrap(),
        TakeLock::Taken
    );

    let edits = Arc::new(Edits::default());
    let asked = rig
        .ask(dora(), "restore", &[("backup", text(backup))], &edits)
        .await;
    let approve = button(message(&asked), "Approve");
    rig.click(person("100000000000000006", "Diego"), &approve, &edits)
        .await;
    let r = until(&edits, "the restore's outcome", |r| {
        r.text.contains("failed")
    })
    .await;
    assert!(
        r.text
            .contains("deploy #7 of v2 by Dana still holds the stack lockedsaas")
            && r.text.contains(&format!("gave up restoring {backup}"))
            && r.text.contains("Nothing was changed"),
        "{}",
        r.text
    );
    assert!(said(
        &edits,
        &format!("to finish before restoring {backup}…")
    ));
    assert_eq!(app.count("orders").await, 100, "the data is untouched");
    assert_eq!(
        files(&backups),
        [backup],
        "not even a safety backup was taken"
    );
    // Only the other replica's lease is left.
    assert_eq!(rig.count("SELECT COUNT(*) FROM locks").await, 1);
}
