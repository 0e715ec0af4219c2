//! The audit trail on SQLite and PostgreSQL alike: the hash chain holds under concurrent
//! appends, tampering by someone who dropped the append-only triggers is caught and named,
//! the triggers refuse changes while they stand, exports filter and quote correctly, and
//! `runbot audit verify|export` say so from the command line. Appends are on disk before they
//! return; the head (`runbot audit head`, logged by `serve`) catches a cut-off tail.

use crate::common;

use std::process::Command;

use common::{fresh_database, Db, BOTH};
use runbot::audit::{
    canonical_json, row_hash, Audit, AuditEntry, AuditFilter, AuditRecord, AuditRow, ExportFormat,
    Problem, Step, GENESIS,
};
use runbot::config::DatabaseSettings;
use runbot::request::Platform;
use runbot::store::Store;
use serde_json::{json, Map, Value};
use sqlx::{AnyPool, Row};

/// A store on a fresh database, and that database's URL.
async fn store(db: Db, dir: &std::path::Path) -> (Store, String) {
    let url = fresh_database(db, dir).await;
    let settings = DatabaseSettings {
        url: url.clone().into(),
        ..DatabaseSettings::default()
    };
    (
        Store::connect(&settings).await.expect("store connects"),
        url,
    )
}

/// A connection of our own to the database, as an attacker with SQL access would have.
async fn raw(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.expect("raw connection")
}

/// What someone who owns the database does first.
async fn drop_triggers(db: Db, pool: &AnyPool) {
    let statements: &[&str] = match db {
        Db::Sqlite => &[
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
        Db::Postgres => &["DROP TRIGGER audit_log_no_update_or_delete ON audit_log"],
    };
    for s in statements {
        sqlx::query(s).execute(pool).await.unwrap();
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn entry(n: usize) -> AuditEntry {
    let step = Step::ALL[n % Step::ALL.len()];
    let e = AuditEntry::new(
        format!("inv-{}", n / 3),
        step,
        Platform::Discord,
        format!("user-{}", n % 2),
        format!("User {}", n % 2),
        if n.is_multiple_of(2) {
            "restart"
        } else {
            "deploy"
        },
    )
    .args(obj(json!({"service": "backend", "n": n})))
    .origin(obj(
        json!({"channel": "c1", "message": format!("m{n}"), "group_id": 7}),
    ));
    match step {
        Step::Denied | Step::Failed => e.reason("you hold viewer"),
        Step::Succeeded => e.detail(json!({"duration_ms": 12, "approver": "u9"})),
        _ => e,
    }
}

async fn append_n(audit: &Audit, n: usize) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(audit.append(entry(i)).await.unwrap());
    }
    out
}

/// Every row in id order, as stored.
async fn all_rows(store: &Store) -> Vec<AuditRow> {
    store
        .audit_rows_after(0, 100_000, &AuditFilter::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_rows_form_a_chain_that_verifies() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store(db, dir.path()).await;
        let audit = Audit::new(store.clone()).with_page_size(3);

        let empty = audit.verify().await.unwrap();
        assert!(empty.is_intact(), "{db:?}: {empty}");
        assert_eq!(empty.rows, 0);
        assert_eq!(empty.to_string(), "audit trail intact: 0 rows");

        let records = append_n(&audit, 7).await;
        let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7], "{db:?}");
        assert_eq!(records[0].prev_hash, GENESIS);
        for w in records.windows(2) {
            assert_eq!(w[1].prev_hash, w[0].hash, "{db:?}: rows link");
        }
        for (record, row) in records.iter().zip(all_rows(&store).await) {
            assert_eq!(row_hash(&row), record.hash, "{db:?}: the stored row hashes");
            assert_eq!(record.hash.len(), 64);
            assert!(record.hash.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(record.at.len(), "2026-11-27T19:31:13.991875004Z".len());
        }
        assert_eq!(records[1].step, Step::Denied);
        assert_eq!(records[1].reason.as_deref(), Some("you hold viewer"));
        assert_eq!(records[0].args, json!({"service": "backend", "n": 0}));
        assert_eq!(records[0].origin["group_id"], 7);

        let report = audit.verify().await.unwrap();
        assert!(report.is_intact(), "{db:?}: {report}");
        assert_eq!(report.rows, 7);
        assert_eq!(report.to_string(), "audit trail intact: 7 rows");
        let head = report.head.unwrap();
        assert_eq!((head.id, head.hash.as_str()), (7, records[6].hash.as_str()));

        let recent = audit.recent(3, &AuditFilter::default()).await.unwrap();
        let ids: Vec<i64> = recent.iter().map(|r| r.id).collect();
        assert_eq!(ids, [7, 6, 5], "{db:?}: newest first");
        assert_eq!(recent[2], records[4], "{db:?}: read back as written");
        let one_request = AuditFilter {
            invocation_id: Some("inv-1".into()),
            ..AuditFilter::default()
        };
        let ids: Vec<i64> = audit
            .recent(100, &one_request)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [6, 5, 4], "{db:?}");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_keep_the_chain_linear() {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store(db, dir.path()).await;
        let audit = Audit::new(store.clone());
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let audit = audit.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        let mut e = entry(i);
                        e.invocation_id = format!("task-{t}-{i}");
                        audit.append(e).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }

        let report = audit.verify().await.unwrap();
        assert!(report.is_intact(), "{db:?}: {report}");
        assert_eq!(report.rows, (TASKS * EACH) as u64, "{db:?}");
        let rows = all_rows(&store).await;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let expected: Vec<i64> = (1..=(TASKS * EACH) as i64).collect();
        assert_eq!(ids, expected, "{db:?}: ids are contiguous");
        assert!(
            rows.windows(2).all(|w| w[0].at <= w[1].at),
            "{db:?}: times follow the chain"
        );
        store.close().await;
    }
}

/// Ten rows, verified in pages of three so problems sit on and across page boundaries.
async fn ten_rows(db: Db, dir: &std::path::Path) -> (Audit, Store, AnyPool) {
    let (store, url) = store(db, dir).await;
    let audit = Audit::new(store.clone()).with_page_size(3);
    append_n(&audit, 10).await;
    assert!(audit.verify().await.unwrap().is_intact());
    let pool = raw(&url).await;
    drop_triggers(db, &pool).await;
    (audit, store, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_field_is_named() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (audit, store, pool) = ten_rows(db, dir.path()).await;
        // Row 2 was a denial; make it look like a success.
        sqlx::query("UPDATE audit_log SET step = 'succeeded' WHERE id = 2 AND step = 'denied'")
            .execute(&pool)
            .await
            .unwrap();

        let report = audit.verify().await.unwrap();
        assert_eq!(report.problem, Some(Problem::Changed { id: 2 }), "{db:?}");
        assert_eq!(report.rows, 1);
        assert!(
            report.to_string().contains("row 2 was changed"),
            "{db:?}: {report}"
        );
        pool.close().await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_with_a_recomputed_hash_breaks_the_next_link() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (audit, store, pool) = ten_rows(db, dir.path()).await;
        // A careful attacker rehashes the row they change; the next row still names the old hash.
        let mut row = all_rows(&store).await.remove(4);
        row.actor_id = "someone-else".into();
        row.hash = row_hash(&row);
        sqlx::query("UPDATE audit_log SET actor_id = $1, hash = $2 WHERE id = 5")
            .bind(&row.actor_id)
            .bind(&row.hash)
            .execute(&pool)
            .await
            .unwrap();

        let report = audit.verify().await.unwrap();
        assert_eq!(
            report.problem,
            Some(Problem::BrokenLink {
                id: 6,
                written_after: None
            }),
            "{db:?}"
        );
        assert!(
            report.to_string().contains("breaks before row 6"),
            "{db:?}: {report}"
        );
        pool.close().await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_named_by_the_row_after_the_gap() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (audit, store, pool) = ten_rows(db, dir.path()).await;
        sqlx::query("DELETE FROM audit_log WHERE id = 6")
            .execute(&pool)
            .await
            .unwrap();

        let report = audit.verify().await.unwrap();
        assert_eq!(
            report.problem,
            Some(Problem::Removed {
                id: 7,
                first_missing: 6,
                last_missing: 6
            }),
            "{db:?}"
        );
        let text = report.to_string();
        assert!(
            text.contains("the row before 7 was removed") && text.contains("row 6 is missing"),
            "{db:?}: {text}"
        );

        // The first rows gone: the chain no longer starts at 1.
        sqlx::query("DELETE FROM audit_log WHERE id <= 2")
            .execute(&pool)
            .await
            .unwrap();
        let report = audit.verify().await.unwrap();
        assert_eq!(
            report.problem,
            Some(Problem::Removed {
                id: 3,
                first_missing: 1,
                last_missing: 2
            }),
            "{db:?}"
        );
        pool.close().await;
        store.close().await;
    }
}

/// Swaps every column but the id between two rows.
async fn swap(pool: &AnyPool, store: &Store, a: i64, b: i64) {
    let rows = all_rows(store).await;
    let find = |id: i64| rows.iter().find(|r| r.id == id).unwrap().clone();
    for (id, from) in [(a, find(b)), (b, find(a))] {
        sqlx::query(
            "UPDATE audit_log SET at = $1, invocation_id = $2, step = $3, actor_platform = $4, \
             actor_id = $5, actor_name = $6, command = $7, args = $8, origin = $9, reason = $10, \
             detail = $11, prev_hash = $12, hash = $13 WHERE id = $14",
        )
        .bind(from.at)
        .bind(from.invocation_id)
        .bind(from.step)
        .bind(from.actor_platform)
        .bind(from.actor_id)
        .bind(from.actor_name)
        .bind(from.command)
        .bind(from.args)
        .bind(from.origin)
        .bind(from.reason)
        .bind(from.detail)
        .bind(from.prev_hash)
        .bind(from.hash)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_rows_are_caught_at_the_first_swapped_position() {
    for db in BOTH {
        for (a, b) in [(4, 8), (5, 6), (3, 10)] {
            let dir = tempfile::tempdir().unwrap();
            let (audit, store, pool) = ten_rows(db, dir.path()).await;
            swap(&pool, &store, a, b).await;

            let report = audit.verify().await.unwrap();
            assert_eq!(
                report.problem,
                Some(Problem::Moved {
                    id: a,
                    written_as: b
                }),
                "{db:?} swapping {a} and {b}"
            );
            assert_eq!(report.rows, (a - 1) as u64);
            let text = report.to_string();
            assert!(
                text.contains(&format!("row {a} was changed"))
                    && text.contains(&format!("written as row {b}"))
                    && text.contains("reordered"),
                "{db:?}: {text}"
            );
            pool.close().await;
            store.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_delete_are_refused_while_the_triggers_stand() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (store, url) = store(db, dir.path()).await;
        let audit = Audit::new(store.clone());
        append_n(&audit, 3).await;
        let before = all_rows(&store).await;
        let pool = raw(&url).await;

        let mut refused = vec![
            sqlx::query("UPDATE audit_log SET step = 'succeeded' WHERE id = 2")
                .execute(&pool)
                .await,
            sqlx::query("DELETE FROM audit_log WHERE id = 3")
                .execute(&pool)
                .await,
            sqlx::query("DELETE FROM audit_log").execute(&pool).await,
        ];
        if db == Db::Postgres {
            refused.push(sqlx::query("TRUNCATE audit_log").execute(&pool).await);
        }
        for (i, result) in refused.into_iter().enumerate() {
            let e = result.expect_err("the database refuses it");
            assert!(
                e.to_string().contains("audit rows are append-only"),
                "{db:?} statement {i}: {e}"
            );
        }
        assert_eq!(all_rows(&store).await, before, "{db:?}: nothing changed");
        assert!(audit.verify().await.unwrap().is_intact());
        // Appends still work.
        assert_eq!(audit.append(entry(3)).await.unwrap().id, 4);
        pool.close().await;
        store.close().await;
    }
}

/// A value that needs every kind of CSV quoting.
const AWKWARD: &str = "db-1, \"primary\"\nsecond line";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_filter_rows_and_quote_csv_correctly() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store(db, dir.path()).await;
        let audit = Audit::new(store.clone()).with_page_size(2);
        let early = append_n(&audit, 4).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let since = chrono::Utc::now();
        let awkward = audit
            .append(
                AuditEntry::new(
                    "inv-x",
                    Step::Failed,
                    Platform::Slack,
                    "user-1",
                    AWKWARD,
                    "restore",
                )
                .args(obj(json!({"target": AWKWARD})))
                .reason(AWKWARD)
                .detail(json!({"error": AWKWARD, "duration_ms": 3})),
            )
            .await
            .unwrap();
        let late = audit.append(entry(5)).await.unwrap();

        // JSON lines, everything.
        let mut out = Vec::new();
        let n = audit
            .export(ExportFormat::Jsonl, &AuditFilter::default(), &mut out)
            .await
            .unwrap();
        assert_eq!(n, 6);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 6, "{db:?}: {text}");
        assert_eq!(lines[4], serde_json::to_value(&awkward).unwrap());
        assert_eq!(lines[4]["args"]["target"], AWKWARD);
        assert_eq!(lines[4]["step"], "failed");
        assert_eq!(lines[4]["actor_platform"], "slack");
        for key in [
            "id",
            "at",
            "invocation_id",
            "step",
            "actor_platform",
            "actor_id",
            "actor_name",
            "command",
            "args",
            "origin",
            "reason",
            "detail",
            "prev_hash",
            "hash",
        ] {
            assert!(lines[0].get(key).is_some(), "{db:?}: {key} in {}", lines[0]);
        }

        // Filters.
        let ids = |text: &str| -> Vec<i64> {
            text.lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["id"]
                        .as_i64()
                        .unwrap()
                })
                .collect()
        };
        for (filter, expected) in [
            (
                AuditFilter {
                    actor_id: Some("user-1".into()),
                    ..AuditFilter::default()
                },
                vec![2, 4, 5, 6],
            ),
            (
                AuditFilter {
                    command: Some("restart".into()),
                    ..AuditFilter::default()
                },
                vec![1, 3],
            ),
            (
                AuditFilter {
                    since: Some(since),
                    ..AuditFilter::default()
                },
                vec![5, 6],
            ),
            (
                AuditFilter {
                    since: Some(since),
                    actor_id: Some("user-1".into()),
                    command: Some("restore".into()),
                    ..AuditFilter::default()
                },
                vec![5],
            ),
        ] {
            let mut out = Vec::new();
            audit
                .export(ExportFormat::Jsonl, &filter, &mut out)
                .await
                .unwrap();
            assert_eq!(
                ids(&String::from_utf8(out).unwrap()),
                expected,
                "{db:?}: {filter:?}"
            );
        }

        // CSV: a header, then every row, the awkward one back exactly as written.
        let mut out = Vec::new();
        let filter = AuditFilter {
            actor_id: Some("user-1".into()),
            ..AuditFilter::default()
        };
        assert_eq!(
            audit
                .export(ExportFormat::Csv, &filter, &mut out)
                .await
                .unwrap(),
            4
        );
        let mut reader = csv::Reader::from_reader(out.as_slice());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        assert_eq!(header, runbot::audit::CSV_HEADER);
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 4, "{db:?}");
        let cell = |r: &csv::StringRecord, name: &str| -> String {
            let i = header.iter().position(|h| h == name).unwrap();
            r[i].to_string()
        };
        let row = &rows[2];
        assert_eq!(cell(row, "id"), "5");
        assert_eq!(cell(row, "actor_name"), AWKWARD);
        assert_eq!(cell(row, "reason"), AWKWARD);
        let args: Value = serde_json::from_str(&cell(row, "args")).unwrap();
        assert_eq!(args["target"], AWKWARD);
        assert_eq!(cell(row, "args"), canonical_json(&awkward.args));
        assert_eq!(cell(row, "hash"), awkward.hash);
        // Absent reason and detail are empty cells.
        assert_eq!(cell(&rows[0], "id"), "2");
        assert_eq!(cell(&rows[0], "reason"), "you hold viewer");
        assert_eq!(cell(&rows[0], "detail"), "");
        // Every exported CSV row still hashes as stored.
        for r in &rows {
            let opt = |s: String| (!s.is_empty()).then_some(s);
            let stored = AuditRow {
                id: cell(r, "id").parse().unwrap(),
                at: cell(r, "at"),
                invocation_id: cell(r, "invocation_id"),
                step: cell(r, "step"),
                actor_platform: cell(r, "actor_platform"),
                actor_id: cell(r, "actor_id"),
                actor_name: cell(r, "actor_name"),
                command: cell(r, "command"),
                args: cell(r, "args"),
                origin: cell(r, "origin"),
                reason: opt(cell(r, "reason")),
                detail: opt(cell(r, "detail")),
                prev_hash: cell(r, "prev_hash"),
                hash: cell(r, "hash"),
            };
            assert_eq!(row_hash(&stored), stored.hash, "{db:?}: row {}", stored.id);
        }
        assert_eq!(early.len() + 2, late.id as usize);
        store.close().await;
    }
}

fn runbot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            c.env_remove(k);
        }
    }
    c
}

fn run(dir: &std::path::Path, url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = runbot()
        .current_dir(dir)
        .env("RUNBOT__DATABASE__URL", url)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_verifies_and_exports_the_trail() {
    let help = runbot().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("audit"), "{help}");
    let help = runbot().args(["audit", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("verify") && help.contains("export"), "{help}");

    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (store, url) = store(db, dir.path()).await;
        let audit = Audit::new(store.clone());
        append_n(&audit, 5).await;
        let head = audit.head().await.unwrap().unwrap();

        let (code, stdout, stderr) = run(dir.path(), &url, &["audit", "verify"]);
        assert_eq!(code, Some(0), "{db:?}: {stdout}{stderr}");
        assert!(
            stdout.contains("audit trail intact: 5 rows") && stdout.contains(&head.hash),
            "{db:?}: {stdout}"
        );
        assert!(!stdout.contains("runbot:runbot"), "no secrets printed");

        let (code, stdout, stderr) = run(
            dir.path(),
            &url,
            &["audit", "export", "--format", "csv", "--actor", "user-0"],
        );
        assert_eq!(code, Some(0), "{db:?}: {stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{db:?}: header and rows 1, 3, 5: {stdout}");
        assert!(lines[0].starts_with("id,at,invocation_id,step"), "{stdout}");
        assert!(lines[1].starts_with("1,") && lines[3].starts_with("5,"));

        let (code, stdout, _) = run(
            dir.path(),
            &url,
            &[
                "audit",
                "export",
                "--command",
                "deploy",
                "--since",
                "2000-01-01T00:00:00Z",
            ],
        );
        assert_eq!(code, Some(0));
        assert_eq!(stdout.lines().count(), 2, "{db:?}: jsonl, rows 2 and 4");
        let (code, _, stderr) = run(
            dir.path(),
            &url,
            &["audit", "export", "--since", "yesterday"],
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("RFC 3339"), "{stderr}");

        let pool = raw(&url).await;
        drop_triggers(db, &pool).await;
        sqlx::query("UPDATE audit_log SET actor_name = 'nobody' WHERE id = 3")
            .execute(&pool)
            .await
            .unwrap();
        let (code, stdout, stderr) = run(dir.path(), &url, &["audit", "verify"]);
        assert_eq!(code, Some(1), "{db:?}: {stdout}{stderr}");
        assert!(stdout.contains("row 3 was changed"), "{db:?}: {stdout}");
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit_log")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("n");
        assert_eq!(count, 5, "verify changes nothing");
        pool.close().await;
        store.close().await;
    }

    // A SQLite file that is not there is an error, not an empty trail.
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let (code, _, stderr) = run(dir.path(), &missing, &["audit", "verify"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!dir.path().join("nope.db").exists());
}

/// The synchronous level each audit insert ran with, recorded by a trigger that a DBA (or
/// this test) adds: SQLite's `synchronous` (1 NORMAL, 2 FULL), PostgreSQL's
/// `synchronous_commit`. Also notes SQLite's level for the readiness probe's write, which uses
/// the same pool.
async fn note_sync_levels(db: Db, pool: &AnyPool) {
    let statements: &[&str] = match db {
        Db::Sqlite => &[
            "CREATE TABLE seen_sync (what TEXT, level TEXT)",
            "CREATE TRIGGER note_audit_sync AFTER INSERT ON audit_log BEGIN \
             INSERT INTO seen_sync SELECT 'audit', synchronous FROM pragma_synchronous; END",
            "CREATE TRIGGER note_probe_sync AFTER UPDATE ON runbot_meta BEGIN \
             INSERT INTO seen_sync SELECT 'probe', synchronous FROM pragma_synchronous; END",
        ],
        Db::Postgres => &[
            "CREATE TABLE seen_sync (what TEXT, level TEXT)",
            "CREATE FUNCTION note_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             INSERT INTO seen_sync VALUES ('audit', current_setting('synchronous_commit')); \
             RETURN NEW; END $$",
            "CREATE TRIGGER note_audit_sync AFTER INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION note_sync()",
        ],
    };
    for s in statements {
        sqlx::query(s).execute(pool).await.unwrap();
    }
}

async fn seen_sync(pool: &AnyPool) -> Vec<(String, String)> {
    sqlx::query("SELECT what, CAST(level AS TEXT) AS level FROM seen_sync")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("what"), r.get("level")))
        .collect()
}

/// SQLite's shared `synchronous = NORMAL` lets a power cut undo the last commits: the audit
/// append runs at FULL, and only the append. A failed append leaves no FULL connection (nor
/// a half-done transaction) behind in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_audit_appends_commit_at_synchronous_full_and_other_writes_stay_normal() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Db::Sqlite, dir.path()).await;
    // One connection: the probe's write runs on the very connection the appends used.
    let settings = DatabaseSettings {
        url: url.clone().into(),
        max_connections: 1,
        ..DatabaseSettings::default()
    };
    let store = Store::connect(&settings).await.unwrap();
    let pool = raw(&url).await;
    note_sync_levels(Db::Sqlite, &pool).await;
    let audit = Audit::new(store.clone());

    append_n(&audit, 2).await;
    store.probe_write().await.unwrap();
    // An append that fails between setting FULL and putting NORMAL back: row 1's id again.
    let failed = store.append_audit_row(|_| colliding_row(1)).await;
    assert!(failed.is_err(), "a duplicate id is refused");
    store.probe_write().await.unwrap();
    assert_eq!(audit.append(entry(2)).await.unwrap().id, 3, "appends go on");
    store.probe_write().await.unwrap();

    let full = "2".to_string();
    let normal = "1".to_string();
    assert_eq!(
        seen_sync(&pool).await,
        [
            ("audit".into(), full.clone()),
            ("audit".into(), full.clone()),
            ("probe".into(), normal.clone()),
            ("probe".into(), normal.clone()),
            ("audit".into(), full),
            ("probe".into(), normal),
        ]
    );
    assert!(audit.verify().await.unwrap().is_intact());
    pool.close().await;
    store.close().await;
}

/// A row that collides with row `id`, for an append that must fail at the insert.
fn colliding_row(id: i64) -> AuditRow {
    AuditRow {
        id,
        at: "2026-11-27T19:31:13.991875004Z".into(),
        invocation_id: "dup".into(),
        step: "requested".into(),
        actor_platform: "cli".into(),
        actor_id: "u".into(),
        actor_name: "U".into(),
        command: "c".into(),
        args: "{}".into(),
        origin: "{}".into(),
        reason: None,
        detail: None,
        prev_hash: GENESIS.into(),
        hash: GENESIS.into(),
    }
}

/// A server or database set to `synchronous_commit = off` acknowledges commits before they
/// are on disk: audit rows are committed at `on` regardless, and a stronger level is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_audit_appends_are_never_committed_with_synchronous_commit_off() {
    for (configured, expected) in [
        ("off", "on"),
        ("local", "local"),
        ("remote_apply", "remote_apply"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(Db::Postgres, dir.path()).await;
        let name = url.rsplit('/').next().unwrap();
        let admin = raw(&common::pg_admin_url()).await;
        sqlx::query(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = {configured}"
        ))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
        let settings = DatabaseSettings {
            url: url.clone().into(),
            ..DatabaseSettings::default()
        };
        let store = Store::connect(&settings).await.unwrap();
        let pool = raw(&url).await;
        note_sync_levels(Db::Postgres, &pool).await;
        let audit = Audit::new(store.clone());

        append_n(&audit, 2).await;

        let seen = seen_sync(&pool).await;
        assert_eq!(
            seen,
            [
                ("audit".into(), expected.into()),
                ("audit".into(), expected.into())
            ],
            "configured {configured}"
        );
        // The database really is set so: a new session gets the configured level.
        let session: String = sqlx::query("SELECT current_setting('synchronous_commit') AS s")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("s");
        assert_eq!(session, configured);
        pool.close().await;
        store.close().await;
    }
}

/// One system call from `strace -f -yy -o FILE`, joined with its `<... resumed>` half.
#[derive(Debug)]
struct Syscall {
    tid: u32,
    name: String,
    /// The arguments and result as strace printed them (fds as `N</path>` or `N<TCP:[…]>`).
    text: String,
    /// Line index where it started (its first half when strace split it).
    entered: usize,
    /// Line index where it returned.
    returned: usize,
}

/// Parses strace's `-f -o` output: `TID name(args) = ret`, or `TID name(args <unfinished ...>`
/// and later `TID <... name resumed>rest) = ret`. Signals and exits come back as a `---` or
/// `+++` pseudo call.
fn parse_strace(text: &str) -> Vec<Syscall> {
    let mut calls = Vec::new();
    let mut pending: std::collections::HashMap<u32, (String, String, usize)> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(tid) = tid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("---") || rest.starts_with("+++") {
            calls.push(Syscall {
                tid,
                name: rest[..3].into(),
                text: rest.into(),
                entered: i,
                returned: i,
            });
        } else if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            if let Some((n, head, entered)) = pending.remove(&tid) {
                debug_assert_eq!(n, name);
                calls.push(Syscall {
                    tid,
                    name: n,
                    text: head + tail,
                    entered,
                    returned: i,
                });
            }
        } else if let Some((name, _)) = rest.split_once('(') {
            match rest.strip_suffix(" <unfinished ...>") {
                Some(head) => {
                    pending.insert(tid, (name.into(), head.into(), i));
                }
                None => calls.push(Syscall {
                    tid,
                    name: name.into(),
                    text: rest.into(),
                    entered: i,
                    returned: i,
                }),
            }
        }
    }
    calls.sort_by_key(|c| c.returned);
    calls
}

/// The audit row must be on disk before anyone is told it happened: a denied command (one
/// audit row, nothing in the background) is answered only after SQLite fsynced the WAL frames
/// that hold the row. Seen from outside with strace on the real `runbot serve`:
///
/// - the row's frames are the WAL writes carrying the requester's (unique) user id;
/// - the fsync must come from the thread that wrote them (each sqlx SQLite connection has
///   its own), after them, and return before the HTTP answer is written;
/// - a checkpoint could fsync the WAL too, and always then writes pages into the database
///   file: an attempt where that happens proves nothing either way and is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_audit_row_is_fsynced_before_the_request_is_answered() {
    use common::{BOT_TOKEN, CHANNEL};
    use fake_discord::{FakeDiscord, FakeUser};
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is not installed: scripts/test installs it (apt-get install strace)");
    }
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = common::rig::policies_dir(&fake);
    std::fs::write(
        dir.path().join("runbot.toml"),
        format!("[policy]\ndir = \"{}\"\n", policies.display()),
    )
    .unwrap();
    let trace = dir.path().join("strace.txt");
    let port = common::free_port();
    let mut strace = Command::new("strace");
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            strace.env_remove(k);
        }
    }
    strace
        .current_dir(dir.path())
        .args(["-f", "-yy", "-s", "8192", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=pwrite64,fsync,fdatasync,write,writev,sendto,sendmsg",
        ])
        .arg(env!("CARGO_BIN_EXE_runbot"))
        .arg("serve");
    let mut strace = common::serve_against(&mut strace, port, &fake)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline && strace.try_wait().unwrap().is_none(),
            "runbot did not start under strace: {}",
            std::fs::read_to_string(dir.path().join("serve.err")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    const ATTEMPTS: u64 = 3;
    let users: Vec<String> = (0..ATTEMPTS)
        .map(|n| (1_300_000_000_000_000_700 + n).to_string())
        .collect();
    for id in &users {
        let dev = FakeUser::new(id.parse().unwrap(), "Dev", &["Developer"]);
        let sent = fake
            .send_interaction(
                &format!("{url}/discord/interactions"),
                fake.slash_command("restart", &[("service", json!("backend"))], &dev, CHANNEL),
            )
            .await;
        let text = sent.body["data"]["content"].as_str().unwrap_or_default();
        assert!(text.contains("/restart needs"), "denied: {}", sent.body);
    }

    // SIGTERM to runbot (strace's child): it stops, and strace with it, flushing the trace.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).unwrap();
    let runbot_pid = children
        .split_whitespace()
        .next()
        .expect("runbot runs under strace");
    assert!(Command::new("kill")
        .args(["-TERM", runbot_pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while strace.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "strace did not stop");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let calls = parse_strace(&std::fs::read_to_string(&trace).unwrap());

    let wal = "/runbot.db-wal>";
    let db_file = "/runbot.db>";
    let answer_to_client = format!("<TCP:[127.0.0.1:{port}->");
    let stopped = calls
        .iter()
        .find(|c| c.name == "---" && c.text.contains("SIGTERM"))
        .map_or(usize::MAX, |c| c.entered);
    let mut conclusive = 0;
    for (n, id) in users.iter().enumerate() {
        let frames = |c: &&Syscall| {
            c.name == "pwrite64" && c.text.contains(wal) && c.text.contains(id.as_str())
        };
        let row = calls
            .iter()
            .find(frames)
            .unwrap_or_else(|| panic!("no WAL write holds user {id}"));
        let answer = calls
            .iter()
            .filter(|c| c.entered > row.entered)
            .find(|c| {
                ["write", "writev", "sendto", "sendmsg"].contains(&c.name.as_str())
                    && c.text.contains(&answer_to_client)
                    && c.text.contains("\"HTTP/1.1 ")
            })
            .unwrap_or_else(|| panic!("no HTTP answer after user {id}'s row"));
        let window_end = users
            .get(n + 1)
            .and_then(|next| {
                calls
                    .iter()
                    .find(|c| frames(c) && c.text.contains(next.as_str()))
            })
            .map_or(stopped, |c| c.entered);
        let checkpointed = calls.iter().any(|c| {
            c.entered > row.entered
                && c.entered < window_end
                && c.name == "pwrite64"
                && c.text.contains(db_file)
        });
        if checkpointed {
            continue;
        }
        conclusive += 1;
        let synced = calls.iter().any(|c| {
            c.tid == row.tid
                && (c.name == "fsync" || c.name == "fdatasync")
                && c.text.contains(wal)
                && c.entered > row.returned
                && c.returned < answer.entered
        });
        assert!(
            synced,
            "user {id}'s audit row (WAL write on thread {}) was not fsynced before the answer \
             was written",
            row.tid
        );
    }
    assert!(
        conclusive > 0,
        "a checkpoint ran in every attempt; nothing was shown"
    );
    common::assert_audit_verifies(dir.path());
}

/// `runbot audit head` prints the line to keep; `verify --expect-head` passes while that row
/// is there (the trail may grow) and fails, naming what is missing, once the end was cut off
/// or rewritten, which the chain alone does not show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_with_an_expected_head_catches_a_cut_off_or_rewritten_tail() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (store, url) = store(db, dir.path()).await;
        let audit = Audit::new(store.clone());
        let run = |args: &[&str]| run(dir.path(), &url, args);

        let (code, stdout, stderr) = run(&["audit", "head"]);
        assert_eq!(code, Some(0), "{db:?}: {stderr}");
        assert_eq!(stdout, "audit trail empty: no rows yet\n", "{db:?}");

        let rows = append_n(&audit, 5).await;
        let (code, stdout, stderr) = run(&["audit", "head"]);
        assert_eq!(code, Some(0), "{db:?}: {stderr}");
        assert_eq!(stdout, format!("5 {}\n", rows[4].hash), "{db:?}");
        let printed = stdout.clone();
        let five = format!("5:{}", rows[4].hash);

        // Intact, in every accepted form: ID:HASH, the printed line, the hash alone.
        for expected in [five.as_str(), printed.as_str(), rows[4].hash.as_str()] {
            let (code, stdout, stderr) = run(&["audit", "verify", "--expect-head", expected]);
            assert_eq!(code, Some(0), "{db:?} {expected:?}: {stdout}{stderr}");
            assert!(
                stdout.contains("audit trail intact: 5 rows")
                    && stdout.contains("expected head present: row 5 is still the last row"),
                "{db:?}: {stdout}"
            );
        }

        // The trail grew: still fine.
        let more = append_n(&audit, 2).await;
        let (code, stdout, _) = run(&["audit", "verify", "--expect-head", &five]);
        assert_eq!(code, Some(0), "{db:?}: {stdout}");
        assert!(
            stdout.contains("expected head present: row 5, and 2 rows written since (last row 7)"),
            "{db:?}: {stdout}"
        );

        // The last two rows are cut off: the chain still verifies, the expected head does not.
        let seven = format!("7:{}", more[1].hash);
        let pool = raw(&url).await;
        drop_triggers(db, &pool).await;
        sqlx::query("DELETE FROM audit_log WHERE id >= 6")
            .execute(&pool)
            .await
            .unwrap();
        let (code, stdout, _) = run(&["audit", "verify"]);
        assert_eq!(
            code,
            Some(0),
            "{db:?}: without a head the cut is invisible: {stdout}"
        );
        for (expected, missing) in [
            (
                seven.clone(),
                format!("no row 7 with hash {}", more[1].hash),
            ),
            (
                more[1].hash.clone(),
                format!("no row with hash {}", more[1].hash),
            ),
        ] {
            let (code, stdout, stderr) = run(&["audit", "verify", "--expect-head", &expected]);
            assert_eq!(code, Some(1), "{db:?}: {stdout}{stderr}");
            assert!(
                stdout.contains("audit trail intact: 5 rows")
                    && stdout.contains(&format!("expected head missing: {missing}"))
                    && stdout.contains("the highest id present is 5")
                    && stdout.contains("cut off or rewritten"),
                "{db:?}: {stdout}"
            );
        }

        // Rewritten: a new row 6 in place of the old one, or the wrong hash for a row.
        let new_six = audit.append(entry(40)).await.unwrap();
        let old_six = format!("6:{}", more[0].hash);
        let (code, stdout, _) = run(&["audit", "verify", "--expect-head", &old_six]);
        assert_eq!(code, Some(1), "{db:?}: {stdout}");
        assert!(
            stdout.contains(&format!(
                "expected head changed: row 6 has hash {}, not {}",
                new_six.hash, more[0].hash
            )),
            "{db:?}: {stdout}"
        );
        let wrong = format!("3:{}", rows[3].hash);
        let (code, stdout, _) = run(&["audit", "verify", "--expect-head", &wrong]);
        assert_eq!(code, Some(1), "{db:?}: {stdout}");
        assert!(
            stdout.contains(&format!("row 3 has hash {}", rows[2].hash)),
            "{db:?}: {stdout}"
        );

        // A broken chain still fails with a head that is present.
        sqlx::query("UPDATE audit_log SET actor_name = 'nobody' WHERE id = 2")
            .execute(&pool)
            .await
            .unwrap();
        let (code, stdout, _) = run(&["audit", "verify", "--expect-head", &five]);
        assert_eq!(code, Some(1), "{db:?}: {stdout}");
        assert!(stdout.contains("row 2 was changed"), "{db:?}: {stdout}");

        // Bad input is a usage error that reads nothing.
        let short = &rows[4].hash[..20];
        for bad in ["", "latest", short, "0:abc", &format!("x:{}", rows[4].hash)] {
            let (code, stdout, stderr) = run(&["audit", "verify", "--expect-head", bad]);
            assert_eq!(code, Some(2), "{db:?} {bad:?}: {stdout}{stderr}");
            assert!(
                stderr.contains("--expect-head") && stderr.contains("64 hex digits"),
                "{db:?} {bad:?}: {stderr}"
            );
            assert!(stdout.is_empty(), "{stdout}");
        }
        pool.close().await;
        store.close().await;
    }

    // A SQLite file that is not there is an error, as for verify.
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let (code, _, stderr) = run(dir.path(), &missing, &["audit", "head"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!dir.path().join("nope.db").exists());
}

/// `runbot serve` in `dir` on `url`, its JSON log (and any error) in `dir/serve.log`.
fn serve(dir: &std::path::Path, url: &str, port: u16, env: &[(&str, &str)]) -> std::process::Child {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    runbot()
        .current_dir(dir)
        .arg("serve")
        .env("RUNBOT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUNBOT__DATABASE__URL", url)
        .env("RUNBOT__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stderr(log.try_clone().unwrap())
        .stdout(log)
        .spawn()
        .unwrap()
}

/// Polls `/metrics` until a line starts with `prefix`; answers the whole text.
async fn wait_for_metric(dir: &std::path::Path, port: u16, prefix: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            let text = r.text().await.unwrap_or_default();
            if text.lines().any(|l| l.starts_with(prefix)) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {prefix:?} in /metrics:\n{text}"
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runbot serve did not answer: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The head goes to the log (id and hash, to keep outside the database) and its id to a gauge
/// (never the hash: one series per append), when `serve` starts and every
/// `audit.head_log_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_the_audit_head_and_exports_its_id_as_a_gauge() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (store, url) = store(db, dir.path()).await;
        let audit = Audit::new(store.clone());
        let rows = append_n(&audit, 3).await;
        let port = common::free_port();
        let mut child = serve(
            dir.path(),
            &url,
            port,
            &[("RUNBOT__AUDIT__HEAD_LOG_SECS", "10")],
        );

        let metrics = wait_for_metric(dir.path(), port, "runbot_audit_head_id 3", 30).await;
        assert!(
            !metrics.contains(&rows[2].hash),
            "{db:?}: a hash in /metrics"
        );
        // The next pass, one interval later, sees a row written meanwhile.
        let four = audit.append(entry(3)).await.unwrap();
        wait_for_metric(dir.path(), port, "runbot_audit_head_id 4", 30).await;
        child.kill().unwrap();
        child.wait().unwrap();

        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
        let heads: Vec<(i64, String)> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "audit head")
            .map(|v| {
                assert_eq!(v["level"], "INFO", "{v}");
                (
                    v["id"].as_i64().unwrap(),
                    v["hash"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            heads,
            [(3, rows[2].hash.clone()), (4, four.hash.clone())],
            "{db:?}: {log}"
        );
        store.close().await;
    }
}
