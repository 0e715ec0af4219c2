//! `/backup`, `/backups`, `/restore` and `/db` against a real PostgreSQL (the one scripts/test
//! starts): each test makes its own application database and role with a password, asks the
//! commands through the real dispatcher, and checks what PostgreSQL then holds.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::app_db::{files, gunzip, AppDb};
use common::rig::{button, message, person, text, Edits, Rig, ROLES};
use common::Db;
use runbot::audit::Step;
use runbot::config::AppDatabaseSettings;
use runbot::domain::clock::Clock;
use runbot::domain::pg_url::PgUrl;
use runbot::executors::database::engine::{AppDatabase, AppDbError};
use runbot::request::RawValue;
use runbot::request::Reply;
use runbot::request::{Actor, Answer};

/// A second dba, so a restore can be approved by someone other than who asked.
fn roles() -> String {
    ROLES.replace(
        "[roles.dba]\ndiscord_users = [\"100000000000000005\"]",
        "[roles.dba]\ndiscord_users = [\"100000000000000005\", \"100000000000000006\"]",
    )
}

fn dba() -> Actor {
    person("100000000000000005", "Dora")
}
fn other_dba() -> Actor {
    person("100000000000000006", "Diego")
}

fn system() -> Clock {
    runbot::domain::clock::system_clock()
}

/// Polls `sql` (one boolean) on the application database until it is true, for up to 20 s.
async fn wait_for_server(app: &AppDb, what: &str, sql: &str) {
    let mut c = app.connect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sqlx::query_scalar::<_, bool>(sql)
        .fetch_one(&mut c)
        .await
        .unwrap()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 20 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rig_for(url: &str, backups: &Path) -> Rig {
    Rig::with_roles(
        Db::Sqlite,
        &[
            ("RUNBOT__APP_DATABASE__URL", url),
            (
                "RUNBOT__APP_DATABASE__BACKUP_DIR",
                &backups.display().to_string(),
            ),
        ],
        system(),
        &roles(),
    )
    .await
}

/// Asks, expects the work to be deferred, and returns the edit that reports the result.
async fn run(rig: &Rig, who: Actor, command: &str, args: &[(&str, RawValue)]) -> Reply {
    let edits = Arc::new(Edits::default());
    let answer = rig.ask(who, command, args, &edits).await;
    assert!(
        matches!(answer, Answer::Deferred { .. }),
        "/{command}: {answer:?}"
    );
    edits.wait(1).await.remove(0)
}

/// `/restore backup` by the dba, approved by the other dba; returns the result's edit.
async fn approved_restore(rig: &Rig, name: &str) -> Reply {
    let edits = Arc::new(Edits::default());
    let asked = rig
        .ask(dba(), "restore", &[("backup", text(name))], &edits)
        .await;
    let prompt = message(&asked).clone();
    assert!(prompt.text.contains("dba"), "{}", prompt.text);
    let approve = button(&prompt, "Approve");
    let approved = rig.click(other_dba(), &approve, &edits).await;
    assert!(
        message(&approved).text.contains("approved by Diego"),
        "{approved:?}"
    );
    edits.wait(1).await.remove(0)
}

/// No audit row, anywhere in it, holds `secret`.
async fn audit_never_holds(rig: &Rig, secret: &str) {
    let rows = rig.count("SELECT count(*) FROM audit_log").await;
    assert!(rows > 0);
    let leaks = rig
        .count(&format!(
            "SELECT count(*) FROM audit_log WHERE (args || origin || coalesce(reason, '') || coalesce(detail, '')) LIKE '%{secret}%'"
        ))
        .await;
    assert_eq!(leaks, 0, "the audit trail holds the password");
}

#[tokio::test]
async fn backup_then_restore_with_another_dbas_approval_brings_back_the_data() {
    let app = AppDb::new().await;
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let rig = rig_for(&app.url(), &backups).await;

    // /backup: one file with the runbook's name, valid gzip, holding the tables and rows.
    let done = run(&rig, dba(), "backup", &[]).await;
    assert!(done.text.contains("backed up database"), "{}", done.text);
    let made = files(&backups);
    assert_eq!(made.len(), 1, "{made:?}");
    let name = made[0].clone();
    assert!(
        runbot::executors::database::engine::backup_time(&name).is_some(),
        "{name} is named backup_YYYYmmdd_HHMMSS.sql.gz"
    );
    assert!(done.text.contains(&name), "{}", done.text);
    let sql = gunzip(&backups.join(&name));
    assert!(sql.contains("CREATE TABLE public.customers"), "{sql}");
    assert!(sql.contains("COPY public.orders"), "{sql}");
    assert!(sql.contains("customer 50"), "the rows are in it");
    assert!(
        sql.contains("DROP TABLE IF EXISTS public.menu"),
        "--clean --if-exists"
    );
    assert!(!sql.contains("OWNER TO"), "--no-owner");

    // Someone changes the data: rows deleted and added, a table dropped.
    app.exec(
        "DELETE FROM orders WHERE id <= 120;
         INSERT INTO customers (name) SELECT 'late ' || g FROM generate_series(1, 7) g;
         DROP TABLE menu;",
    )
    .await;
    assert_eq!(app.count("orders").await, 80);
    assert_eq!(app.count("customers").await, 57);

    // /restore needs another dba: the requester cannot approve it, nor can a developer.
    let edits = Arc::new(Edits::default());
    let asked = rig
        .ask(dba(), "restore", &[("backup", text(&name))], &edits)
        .await;
    let prompt = message(&asked).clone();
    assert!(
        prompt.text.contains("needs a dba's approval"),
        "{}",
        prompt.text
    );
    let approve = button(&prompt, "Approve");
    rig.approval_refused_to_self_and_developer(dba(), &approve, &edits)
        .await;
    assert_eq!(app.count("orders").await, 80, "nothing restored yet");

    let approved = rig.click(other_dba(), &approve, &edits).await;
    assert!(
        message(&approved).text.contains("approved by Diego"),
        "{approved:?}"
    );
    let result = edits.wait(1).await.remove(0);
    assert!(result.text.contains("restored database"), "{}", result.text);

    // PostgreSQL holds what it held at backup time.
    assert_eq!(app.count("customers").await, 50);
    assert_eq!(app.count("orders").await, 200);
    assert!(app.table_exists("menu").await);
    assert_eq!(app.count("menu").await, 10);

    // The safety backup holds the state just before the restore, and the reply names it.
    let now = files(&backups);
    assert_eq!(now.len(), 2, "{now:?}");
    let safety = now.iter().find(|n| **n != name).unwrap().clone();
    assert!(
        result.text.contains(&format!("saved as `{safety}`")),
        "{}",
        result.text
    );
    let before = gunzip(&backups.join(&safety));
    assert!(before.contains("late 7"), "the rows added after the backup");
    assert!(
        !before.contains("CREATE TABLE public.menu"),
        "menu was dropped then"
    );

    // /backups lists both, newest (the safety backup) first.
    let listed = run(&rig, dba(), "backups", &[]).await;
    let block = listed.code_block.clone().unwrap_or_default();
    let (first, second) = (block.find(&safety), block.find(&name));
    assert!(
        first.is_some() && second.is_some() && first < second,
        "{block}"
    );
    assert!(listed.text.contains("2 backups"), "{}", listed.text);

    let steps: Vec<Step> = rig.trail().await.into_iter().map(|r| r.0).collect();
    assert!(steps.contains(&Step::Approved), "{steps:?}");
    assert_eq!(
        steps.iter().filter(|s| **s == Step::Succeeded).count(),
        3,
        "{steps:?}"
    );
    for r in [&done, &result, &listed] {
        assert!(!r.text.contains(&app.password), "{}", r.text);
    }
    audit_never_holds(&rig, &app.password).await;
    assert!(rig.audit.verify().await.is_ok());
}

#[tokio::test]
async fn db_checks_see_real_connections_slow_queries_sizes_and_locks() {
    // `/db slow` and `/db locks` see every database of the server.
    let _alone = common::PG_SERVER_WIDE.lock().await;
    let app = AppDb::new().await;
    app.exec(
        "CREATE TABLE big (id serial PRIMARY KEY, payload text);
         INSERT INTO big (payload) SELECT repeat('x', 200) FROM generate_series(1, 20000);
         ANALYZE big;
         CREATE TABLE small (id int);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_for(&app.url(), &dir.path().join("backups")).await;
    let db = |check: &str| [("check", text(check))];

    // sizes: the big table first, with its estimated rows.
    let sizes = run(&rig, dba(), "db", &db("sizes")).await;
    let block = sizes.code_block.clone().unwrap_or_default();
    let big = block.find("public.big").expect("big is listed");
    let small = block.find("public.small").expect("small is listed");
    assert!(big < small, "{block}");
    assert!(block.contains("20000"), "{block}");

    // slow: a query sleeping on another connection for longer than 1 s.
    let mut sleeper = app.connect().await;
    let sleeper_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut sleeper)
        .await
        .unwrap();
    let sleeping = tokio::spawn(async move {
        // Far longer than the check can take on a loaded machine; cancelled once seen.
        let cancelled = sqlx::query("SELECT pg_sleep(120)")
            .execute(&mut sleeper)
            .await;
        assert!(cancelled.is_err(), "pg_sleep(120) is cancelled");
        sleeper
    });
    wait_for_server(
        &app,
        "the sleeper's query running for over 1 s",
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {sleeper_pid} \
             AND state = 'active' AND query_start < clock_timestamp() - interval '1.2 seconds')"
        ),
    )
    .await;
    let slow = run(&rig, dba(), "db", &db("slow")).await;
    let block = slow.code_block.clone().unwrap_or_default();
    assert!(
        block.contains(&sleeper_pid.to_string()) && block.contains("pg_sleep(120)"),
        "{slow:?}"
    );
    assert!(block.contains("Timeout:PgSleep"), "the wait event: {block}");
    assert!(slow.text.contains("1 query running"), "{}", slow.text);

    // locks: one connection holds big exclusively, another waits to read it.
    let mut holder = app.connect().await;
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE;")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut waiter = app.connect().await;
    let waiter_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut waiter)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM big")
            .fetch_one(&mut waiter)
            .await
            .unwrap();
        n
    });
    wait_for_server(
        &app,
        "the reader waiting for the holder's lock",
        &format!("SELECT {holder_pid} = ANY(pg_blocking_pids({waiter_pid}))"),
    )
    .await;
    let locks = run(&rig, dba(), "db", &db("locks")).await;
    let block = locks.code_block.clone().unwrap_or_default();
    let line = block
        .lines()
        .find(|l| l.starts_with(&waiter_pid.to_string()))
        .unwrap_or_else(|| panic!("the waiting pid {waiter_pid} is listed: {block}"));
    assert!(
        line.contains("AccessShareLock on big") && line.contains(&holder_pid.to_string()),
        "{line}"
    );
    assert!(
        line.contains("LOCK TABLE big"),
        "the blocker's query: {line}"
    );

    // connections: the role's connections by state, against max_connections.
    let conns = run(&rig, dba(), "db", &db("connections")).await;
    assert!(conns.text.contains("of max_connections"), "{}", conns.text);
    let block = conns.code_block.clone().unwrap_or_default();
    assert!(
        block
            .lines()
            .any(|l| l.starts_with("idle in transaction") && l.contains(&app.role)),
        "{block}"
    );

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(waiting.await.unwrap(), 20000);
    app.exec(&format!("SELECT pg_cancel_backend({sleeper_pid})"))
        .await;
    drop(sleeping.await.unwrap());

    // With nothing slow or waiting, the checks say so.
    let slow = run(&rig, dba(), "db", &db("locks")).await;
    assert!(slow.text.contains("nothing found"), "{}", slow.text);
    // The checks are read-only: they changed nothing.
    assert_eq!(app.count("big").await, 20000);
    drop(holder);
}

#[tokio::test]
async fn a_failing_restore_changes_nothing_and_a_damaged_or_missing_backup_is_refused() {
    let app = AppDb::new().await;
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let rig = rig_for(&app.url(), &backups).await;

    // A name that matches but is not there: refused before any safety backup.
    let missing = approved_restore(&rig, "backup_20200101_000000.sql.gz").await;
    assert!(
        missing
            .text
            .contains("there is no backup backup_20200101_000000.sql.gz")
            && missing.text.contains("Nothing was changed."),
        "{}",
        missing.text
    );
    assert!(files(&backups).is_empty());

    // A path instead of a name never reaches the executor.
    let edits = Arc::new(Edits::default());
    let asked = rig
        .ask(
            dba(),
            "restore",
            &[("backup", text("../backup_20200101_000000.sql.gz"))],
            &edits,
        )
        .await;
    assert!(
        message(&asked).text.contains("backup"),
        "{:?}",
        message(&asked)
    );
    assert_eq!(rig.trail().await.last().unwrap().0, Step::Invalid);

    // A damaged file (cut short): refused before anything changes.
    let good = {
        let mut raw = Vec::new();
        let mut gz = flate2::write::GzEncoder::new(&mut raw, flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"DELETE FROM orders;\n".repeat(5000).as_slice())
            .unwrap();
        gz.finish().unwrap();
        raw
    };
    std::fs::write(
        backups.join("backup_20200101_000001.sql.gz"),
        &good[..good.len() / 2],
    )
    .unwrap();
    let damaged = approved_restore(&rig, "backup_20200101_000001.sql.gz").await;
    assert!(
        damaged.text.contains("is damaged") && damaged.text.contains("Nothing was changed."),
        "{}",
        damaged.text
    );
    assert_eq!(app.count("orders").await, 200);
    assert_eq!(files(&backups).len(), 1, "no safety backup was needed");

    // A backup whose SQL fails part-way: the deletes before the error are rolled back.
    let failing = {
        let mut raw = Vec::new();
        let mut gz = flate2::write::GzEncoder::new(&mut raw, flate2::Compression::default());
        std::io::Write::write_all(
            &mut gz,
            b"DELETE FROM orders;\nDELETE FROM customers;\nSELECT 1/0;\n",
        )
        .unwrap();
        gz.finish().unwrap();
        raw
    };
    std::fs::write(backups.join("backup_20200101_000002.sql.gz"), failing).unwrap();
    let failed = approved_restore(&rig, "backup_20200101_000002.sql.gz").await;
    assert!(
        failed.text.contains("rolled all of it back") && failed.text.contains("division by zero"),
        "{}",
        failed.text
    );
    assert_eq!(app.count("orders").await, 200);
    assert_eq!(app.count("customers").await, 50);
    assert_eq!(
        files(&backups).len(),
        3,
        "the safety backup was taken first"
    );
    assert!(files(&backups).iter().all(|f| !f.ends_with(".partial")));
    audit_never_holds(&rig, &app.password).await;
}

/// A PostgreSQL server of the test's own that checks passwords (scram-sha-256 over TCP): the
/// shared test server trusts every local login, so a wrong password would pass there.
/// Stopped when dropped.
struct PasswordPg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server's programs as the postgres user: PostgreSQL refuses to run as root.
    as_postgres: bool,
}

const SUPERUSER_PASSWORD: &str = "SuperPw4411";

impl PasswordPg {
    /// None when no PostgreSQL server programs are installed.
    fn start() -> Option<PasswordPg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").is_file())?;
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        if as_postgres {
            let chown = std::process::Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PasswordPg {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            pg.dir.path().display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                pg.dir.path().join("log").as_os_str(),
                "-w".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        );
        Some(pg)
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn admin_url(&self) -> String {
        format!(
            "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PasswordPg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let path = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test]
async fn a_wrong_password_makes_backup_fail_clearly_leaving_no_file_and_no_password() {
    let Some(server) = PasswordPg::start() else {
        panic!(
            "no PostgreSQL server programs under /usr/lib/postgresql: scripts/test installs them"
        );
    };
    let app = AppDb::on(server.admin_url()).await;
    app.seed().await;
    let wrong = "WrongPw7731xyz";
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");

    // The right password works: it reaches pg_dump (as PGPASSWORD) and sqlx.
    let right = direct(&app.url(), &backups, "pg_dump", 60);
    let made = right.backup(Utc::now()).await.unwrap();
    assert!(gunzip(&made.path).contains("COPY public.orders"));
    std::fs::remove_file(&made.path).unwrap();

    let url = format!("postgres://{}:{wrong}@{}/{}", app.role, app.addr, app.name);
    let rig = rig_for(&url, &backups).await;
    let failed = run(&rig, dba(), "backup", &[]).await;
    assert!(
        failed.text.contains("pg_dump failed")
            && failed.text.contains("password authentication failed")
            && failed.text.contains("no backup was written"),
        "{}",
        failed.text
    );
    assert!(!failed.text.contains(wrong), "{}", failed.text);
    assert!(files(&backups).is_empty(), "{:?}", files(&backups));
    assert_eq!(rig.trail().await.last().unwrap().0, Step::Failed);
    audit_never_holds(&rig, wrong).await;

    // /db with the same credentials fails just as plainly.
    let db = run(&rig, dba(), "db", &[("check", text("sizes"))]).await;
    assert!(
        db.text.contains("cannot reach the application database")
            && db.text.contains("password authentication failed"),
        "{}",
        db.text
    );
    assert!(!db.text.contains(wrong), "{}", db.text);
    assert_eq!(app.count("orders").await, 200);
    drop(app);
    drop(server);
}

#[tokio::test]
async fn without_app_database_url_the_commands_say_what_to_set() {
    let rig = Rig::with_roles(Db::Sqlite, &[], system(), &roles()).await;
    for (command, args) in [
        ("backup", vec![]),
        ("backups", vec![]),
        ("db", vec![("check", text("locks"))]),
    ] {
        let r = run(&rig, dba(), command, &args).await;
        assert!(
            r.text.contains("set app_database.url")
                && r.text.contains("RUNBOT__APP_DATABASE__URL")
                && r.text.contains("Nothing was changed."),
            "/{command}: {}",
            r.text
        );
    }
    let restore = approved_restore(&rig, "backup_20200101_000000.sql.gz").await;
    assert!(
        restore.text.contains("set app_database.url"),
        "{}",
        restore.text
    );
}

/// The engine built directly, not through settings: some tests need a timeout shorter than
/// `app_database.timeout_secs` allows.
fn direct(url: &str, dir: &Path, pg_dump: &str, timeout_secs: u64) -> AppDatabase {
    AppDatabase::new(
        PgUrl::parse(url).unwrap(),
        PathBuf::from(dir),
        pg_dump.into(),
        AppDatabaseSettings::default().psql,
        Duration::from_secs(timeout_secs),
    )
}

#[tokio::test]
async fn a_backup_that_takes_too_long_is_stopped_and_leaves_no_partial_file() {
    let app = AppDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // A pg_dump that writes a little and then hangs.
    let slow = dir.path().join("slow_pg_dump");
    std::fs::write(&slow, "#!/bin/sh\necho 'SELECT 1;'\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let backups = dir.path().join("backups");
    let db = direct(&app.url(), &backups, &slow.display().to_string(), 1);
    let started = std::time::Instant::now();
    let err = db.backup(Utc::now()).await.unwrap_err();
    assert!(matches!(err, AppDbError::TimedOut { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(files(&backups).is_empty(), "{:?}", files(&backups));

    // A second backup in the same second never overwrites the first: it is named for the
    // next free second.
    let real = direct(&app.url(), &backups, "pg_dump", 60);
    let now = Utc::now();
    let first = real.backup(now).await.unwrap();
    let first_bytes = std::fs::read(&first.path).unwrap();
    let again = real.backup(now).await.unwrap();
    assert_eq!(
        again.name,
        runbot::executors::database::engine::backup_name(now + chrono::Duration::seconds(1))
    );
    assert_eq!(
        real.list().await.unwrap(),
        vec![again.clone(), first.clone()]
    );
    assert_eq!(std::fs::read(&first.path).unwrap(), first_bytes);
    assert!(gunzip(&again.path).contains("PostgreSQL database dump complete"));
    assert!(files(&backups).iter().all(|f| !f.ends_with(".partial")));

    // A program that is not there says what to set.
    let none = direct(&app.url(), &backups, "/nonexistent/pg_dump", 60);
    let err = none
        .backup(now + chrono::Duration::hours(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("app_database.pg_dump"), "{err}");
}

fn gzip_file(path: &Path, sql: &[u8]) {
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, sql).unwrap();
    gz.finish().unwrap();
}

#[tokio::test]
async fn a_restore_stopped_part_way_commits_nothing() {
    // Its stalled restore is a slow query that `/db slow` would see from another test.
    let _alone = common::PG_SERVER_WIDE.lock().await;
    let app = AppDb::new().await;
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    // Deletes, then stalls with far more input behind it than a pipe holds, so the timeout
    // stops psql while runbot is still feeding it.
    let mut sql = b"DELETE FROM orders;\nSELECT pg_sleep(20);\n".to_vec();
    sql.extend(b"-- padding padding padding padding padding padding padding\n".repeat(40_000));
    sql.extend(b"DELETE FROM customers;\n");
    gzip_file(&backups.join("backup_20200101_000003.sql.gz"), &sql);
    let db = direct(&app.url(), &backups, "pg_dump", 4);

    let started = std::time::Instant::now();
    let err = db
        .restore("backup_20200101_000003.sql.gz", Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, AppDbError::TimedOut { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("psql was stopped before it committed"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(app.count("orders").await, 200);
    assert_eq!(app.count("customers").await, 50);
    // The stopped restore's server session is gone too, so its row locks are: a write to
    // the rows it had deleted goes through at once instead of waiting for its pg_sleep.
    let mut c = app.connect().await;
    sqlx::raw_sql("SET lock_timeout = '2s'; UPDATE orders SET total = total WHERE id = 1;")
        .execute(&mut c)
        .await
        .expect("no lock left behind");
    // The safety backup was taken and kept.
    assert_eq!(db.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn dry_runs_say_what_backup_and_restore_would_do_and_change_nothing() {
    let app = AppDb::new().await;
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    gzip_file(
        &backups.join("backup_20200101_000004.sql.gz"),
        b"DELETE FROM orders;\n",
    );
    let rig = rig_for(&app.url(), &backups).await;
    let edits = Arc::new(Edits::default());

    let backup = rig
        .ask(
            dba(),
            "backup",
            &[("dry_run", RawValue::Boolean(true))],
            &edits,
        )
        .await;
    let r = message(&backup);
    assert!(
        r.text.contains("Dry run")
            && r.text.contains(&format!("back up database {}@", app.role))
            && r.text.contains("backup_")
            && r.text.contains("pg_dump"),
        "{}",
        r.text
    );
    assert!(!r.text.contains(&app.password), "{}", r.text);

    // A dry run needs no approval, even for /restore.
    let restore = rig
        .ask(
            dba(),
            "restore",
            &[
                ("backup", text("backup_20200101_000004.sql.gz")),
                ("dry_run", RawValue::Boolean(true)),
            ],
            &edits,
        )
        .await;
    let r = message(&restore);
    assert!(
        r.text.contains("restore database")
            && r.text.contains("backup_20200101_000004.sql.gz")
            && r.text.contains("after a safety backup"),
        "{}",
        r.text
    );
    assert_eq!(files(&backups), ["backup_20200101_000004.sql.gz"]);
    assert_eq!(app.count("orders").await, 200);
    let steps: Vec<Step> = rig.trail().await.into_iter().map(|r| r.0).collect();
    assert_eq!(
        steps,
        [Step::Requested, Step::DryRun, Step::Requested, Step::DryRun]
    );
}

/// A psql that says it is `version` and is the real psql otherwise: a client too old for
/// `\restrict`, for the scan-alone path.
fn psql_claiming(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join("old_psql");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'psql (PostgreSQL) {version}'; exit 0; fi\nexec psql \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn with_psql(url: &str, dir: &Path, psql: &Path) -> AppDatabase {
    let defaults = AppDatabaseSettings::default();
    AppDatabase::new(
        PgUrl::parse(url).unwrap(),
        PathBuf::from(dir),
        defaults.pg_dump.clone(),
        psql.display().to_string(),
        defaults.timeout(),
    )
}

/// Backups that would each run something as runbot (or change data) through a psql
/// meta-command: (what, the script, the command the refusal names).
fn poisoned(marker: &Path, side: &Path) -> Vec<(&'static str, String, &'static str)> {
    let m = marker.display();
    vec![
        (
            "a shell line",
            format!("DELETE FROM orders;\n\\! touch {m}\n"),
            "!",
        ),
        (
            "a shell command after a statement on the same line",
            format!("DELETE FROM orders;\nSELECT 1; \\! touch {m}\n"),
            "!",
        ),
        (
            "output to a file",
            format!("DELETE FROM orders;\n\\o {m}\nSELECT 1;\n"),
            "o",
        ),
        (
            "\\copy to a program",
            format!("DELETE FROM orders;\n\\copy (SELECT 1) to program 'touch {m}'\n"),
            "copy",
        ),
        (
            "results run as SQL",
            "DELETE FROM orders;\nSELECT 'DELETE FROM customers' \\gexec\n".into(),
            "gexec",
        ),
        (
            "another file included",
            format!("DELETE FROM orders;\n\\i {}\n", side.display()),
            "i",
        ),
        (
            "a variable",
            "DELETE FROM orders;\n\\set ON_ERROR_STOP 0\n".into(),
            "set",
        ),
        (
            "an environment variable",
            format!("DELETE FROM orders;\n\\setenv PAGER 'touch {m}'\n"),
            "setenv",
        ),
    ]
}

#[tokio::test]
async fn a_backup_holding_a_psql_meta_command_is_refused_before_anything_runs() {
    let app = AppDb::new().await;
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let marker = dir.path().join("ran");
    // What `\i` would read: a shell line.
    let side = dir.path().join("side.sql");
    std::fs::write(&side, format!("\\! touch {}\n", marker.display())).unwrap();
    let db = direct(&app.url(), &backups, "pg_dump", 60);

    let mut names = Vec::new();
    for (n, (what, sql, command)) in poisoned(&marker, &side).into_iter().enumerate() {
        let name = format!("backup_20200102_0000{n:02}.sql.gz");
        gzip_file(&backups.join(&name), sql.as_bytes());
        names.push(name.clone());

        let err = db.restore(&name, Utc::now()).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, AppDbError::Unsafe { .. }), "{what}: {text}");
        assert!(
            text.contains(&format!("runbot refuses to restore backup {name}"))
                && text.contains(&format!("line 2 holds the psql meta-command `\\{command}`"))
                && text.contains("Nothing was changed."),
            "{what}: {text}"
        );
        // Only the command's name: never its arguments.
        assert!(
            !text.contains(&marker.display().to_string()),
            "{what}: {text}"
        );
        assert!(!marker.exists(), "{what}: the meta-command ran");
        assert_eq!(app.count("orders").await, 200, "{what}");
        assert_eq!(app.count("customers").await, 50, "{what}");
        // Refused before the safety backup: the folder holds only the poisoned files.
        assert_eq!(files(&backups), names, "{what}");
    }
}

#[tokio::test]
async fn psqls_restricted_mode_stops_a_meta_command_the_check_cannot_see() {
    let app = AppDb::new().await;
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let marker = dir.path().join("ran");
    // Read as pg_dump writes SQL (standard_conforming_strings on), line 3 is one string up
    // to the end. Once line 2 has run, psql reads `\'` as an escaped quote, so the string
    // ends there and `\!` is a command: only psql, in \restrict mode, can refuse it.
    let sql = format!(
        "DELETE FROM orders;\nSET standard_conforming_strings = off;\nSELECT 'a\\'' \\! touch {}\n'';\n",
        marker.display()
    );
    let name = "backup_20200103_000000.sql.gz";
    gzip_file(&backups.join(name), sql.as_bytes());
    let db = direct(&app.url(), &backups, "pg_dump", 60);

    let err = db.restore(name, Utc::now()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AppDbError::RestoreFailed { .. }), "{text}");
    assert!(
        text.contains("backslash commands are restricted")
            && text.contains("rolled all of it back"),
        "{text}"
    );
    assert!(!marker.exists(), "the meta-command ran");
    assert_eq!(app.count("orders").await, 200);
    assert_eq!(
        files(&backups).len(),
        2,
        "the safety backup was taken and kept"
    );

    // With a psql too old for \restrict the check alone protects, so it refuses what it
    // cannot be sure of, before the safety backup, and says how to fix it.
    let old = with_psql(&app.url(), &backups, &psql_claiming(dir.path(), "12.22"));
    let err = old.restore(name, Utc::now()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AppDbError::Unsafe { .. }), "{text}");
    assert!(
        text.contains("line 3: a quoted string has a backslash right before a quote")
            && text.contains("psql (PostgreSQL) 12.22 cannot refuse meta-commands itself")
            && text.contains("app_database.psql")
            && text.contains("Nothing was changed."),
        "{text}"
    );
    assert!(!marker.exists());
    assert_eq!(files(&backups).len(), 2, "no second safety backup");

    // That old psql still restores an ordinary backup, and still refuses a plain `\!`.
    let fresh = db
        .backup(Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    app.exec("DELETE FROM orders WHERE id > 100").await;
    old.restore(&fresh.name, Utc::now() + chrono::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(app.count("orders").await, 200);
    let shell = "backup_20200103_000001.sql.gz";
    gzip_file(
        &backups.join(shell),
        format!("\\! touch {}\n", marker.display()).as_bytes(),
    );
    let err = old
        .restore(shell, Utc::now())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("meta-command `\\!`"), "{err}");
    assert!(!marker.exists());
}

#[tokio::test]
async fn a_dump_full_of_backslashes_quotes_and_copy_data_still_restores() {
    let app = AppDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let m = marker.display().to_string();
    // Everything a psql lexer must not mistake for a command: backslashes in plain and E''
    // strings, in a column default and a comment, regexes in function bodies, a BEGIN ATOMIC
    // body with `;`s inside, a column named copy, and COPY data holding `\.`, `\!` and tabs.
    app.exec(&format!(
        r#"CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL,
                               copy text DEFAULT 'C:\', CHECK (body !~ '^\\\\\\.$'));
           COMMENT ON TABLE notes IS 'a \ comment with ''quotes'' and \! touch {m}';
           CREATE FUNCTION is_code(t text) RETURNS boolean LANGUAGE plpgsql AS $f$
           BEGIN
             RAISE NOTICE E'checking \\! %', t;
             RETURN t ~ E'^\\d+\\\\$' AND t !~ '\.' AND t <> $$\! touch {m}$$;
           END $f$;
           CREATE FUNCTION note_count() RETURNS bigint LANGUAGE sql
             BEGIN ATOMIC SELECT 1; SELECT count(*) FROM notes; END;
           CREATE VIEW odd AS SELECT E'tab\there\\back' AS s, 'it''s' AS q, E'\\' AS b;
           INSERT INTO notes (id, body) VALUES
             (1, E'line one\nline two'), (2, E'\\.'), (3, E'\\! touch {m}'),
             (4, E'tab\tsep\\\\'), (5, 'Cafetería ñandú €'), (6, E'\\.\r'),
             (7, E'back\\slash \\''quote'), (8, '$$ \! $$');"#
    ))
    .await;
    let dump_rows = |c: &'static str| {
        format!("SELECT string_agg(id || ':' || {c}, '|' ORDER BY id) FROM notes")
    };
    let read = |sql: String| {
        let app = &app;
        async move {
            let mut c = app.connect().await;
            sqlx::query_scalar::<_, String>(&sql)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    };
    let before = read(dump_rows("body || coalesce(copy, '-')")).await;
    let backups = dir.path().join("backups");
    let db = direct(&app.url(), &backups, "pg_dump", 60);
    let taken = db.backup(Utc::now()).await.unwrap();
    let sql = gunzip(&taken.path);
    assert!(
        sql.contains("\\restrict "),
        "pg_dump 15.14+ writes it: {sql}"
    );
    assert!(
        sql.contains("COPY public.notes (id, body, copy) FROM stdin;"),
        "{sql}"
    );

    app.exec("DELETE FROM notes; DROP VIEW odd; DROP FUNCTION is_code(text);")
        .await;
    db.restore(&taken.name, Utc::now() + chrono::Duration::seconds(5))
        .await
        .unwrap();

    assert_eq!(read(dump_rows("body || coalesce(copy, '-')")).await, before);
    assert_eq!(
        read("SELECT s || q || b FROM odd".into()).await,
        "tab\there\\backit's\\"
    );
    assert_eq!(
        read("SELECT is_code('123\\')::text || note_count()::text".into()).await,
        "true8"
    );
    assert!(!marker.exists());
}

#[tokio::test]
async fn restore_refuses_a_poisoned_backup_with_a_clear_answer_and_a_failed_audit_row() {
    let app = AppDb::new().await;
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let marker = dir.path().join("ran");
    let name = "backup_20200104_000000.sql.gz";
    gzip_file(
        &backups.join(name),
        format!(
            "--\n-- PostgreSQL database dump\n--\n\nDELETE FROM orders;\nSELECT 1; \\! touch {}\n",
            marker.display()
        )
        .as_bytes(),
    );
    let rig = rig_for(&app.url(), &backups).await;

    let result = approved_restore(&rig, name).await;
    assert!(
        result
            .text
            .contains(&format!("runbot refuses to restore backup {name}"))
            && result
                .text
                .contains("line 6 holds the psql meta-command `\\!`")
            && result.text.contains("Nothing was changed."),
        "{}",
        result.text
    );
    assert!(!marker.exists(), "the meta-command ran");
    assert_eq!(app.count("orders").await, 200);
    assert_eq!(files(&backups), [name], "no safety backup");

    let trail = rig.trail().await;
    let steps: Vec<Step> = trail.iter().map(|r| r.0).collect();
    assert_eq!(
        steps,
        [Step::Requested, Step::Approved, Step::Started, Step::Failed],
        "{trail:?}"
    );
    let (_, command, actor, reason) = trail.last().unwrap();
    assert_eq!(command, "restore");
    assert_eq!(actor, &dba().user_id);
    let reason = reason.clone().unwrap_or_default();
    assert!(
        reason.contains("line 6 holds the psql meta-command `\\!`"),
        "{reason}"
    );
    audit_never_holds(&rig, &app.password).await;
    assert!(rig.audit.verify().await.is_ok());
}

#[tokio::test]
async fn a_backup_swapped_for_a_poisoned_one_after_the_check_is_stopped_before_it_commits() {
    let app = AppDb::new().await;
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let marker = dir.path().join("ran");
    let name = "backup_20200105_000000.sql.gz";
    gzip_file(&backups.join(name), b"DELETE FROM orders;\n");
    // The poisoned file deletes first, with more than one read chunk before its `\!`, so
    // psql has that part when runbot stops it.
    let mut sql = b"DELETE FROM orders;\nDELETE FROM customers;\n".to_vec();
    sql.extend(b"-- padding padding padding padding padding padding padding\n".repeat(4_000));
    sql.extend(format!("\\! touch {}\n", marker.display()).as_bytes());
    let poisoned = dir.path().join("poisoned.sql.gz");
    gzip_file(&poisoned, &sql);
    // The safety backup runs between the check and the restore: its pg_dump swaps the file.
    let swapping = dir.path().join("swapping_pg_dump");
    std::fs::write(
        &swapping,
        format!(
            "#!/bin/sh\nmv {} {}\nexec pg_dump \"$@\"\n",
            poisoned.display(),
            backups.join(name).display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&swapping, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = direct(&app.url(), &backups, &swapping.display().to_string(), 60);

    let err = db.restore(name, Utc::now()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AppDbError::Unsafe { .. }), "{text}");
    let safety = files(&backups)
        .into_iter()
        .find(|f| f != name)
        .expect("the safety backup");
    assert!(
        text.contains("it changed after runbot checked it, and now line")
            && text.contains("holds the psql meta-command `\\!`")
            && text.contains("psql was stopped before that line and before it committed")
            && text.contains(&format!("The safety backup {safety} was kept.")),
        "{text}"
    );
    assert!(!marker.exists(), "the meta-command ran");
    assert_eq!(app.count("orders").await, 200, "nothing committed");
    assert_eq!(app.count("customers").await, 50);
}
