//! Upgrading a database an older runbot wrote: later migrations keep every group, alert and
//! timeline entry, and new entries follow the old ones.

use crate::common;

use common::{fresh_database, webhook, Db, Options, TestApp};
use serde_json::{json, Value};
use sqlx::Executor;

const GROUP_KEY: &str = "{}:{alertname=\"DiskFull\"}";
const T: &str = "2026-11-27T19:31:13.991875004Z";

/// Applies the first release's only migration, and stores one firing group with one alert and
/// its timeline the way that release stored them. The migration is a frozen copy
/// (`tests/fixtures/first-release/`, from commit 1b1e75f), not today's `0001_alerts.sql`: that
/// file was edited after it shipped, and users upgrade from what shipped.
async fn database_as_first_release_left_it(db: common::Db, dir: &std::path::Path) -> String {
    let url = fresh_database(db, dir).await;
    let kind = match db {
        common::Db::Sqlite => "sqlite",
        common::Db::Postgres => "postgres",
    };
    let first = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!(
            "{}/tests/fixtures/first-release/{kind}/0001_alerts.sql",
            env!("CARGO_MANIFEST_DIR")
        ),
        first.path().join("0001_alerts.sql"),
    )
    .unwrap();
    sqlx::any::install_default_drivers();
    let connect_url = match db {
        common::Db::Sqlite => format!("{url}?mode=rwc"),
        common::Db::Postgres => url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&connect_url).await.unwrap();
    sqlx::migrate::Migrator::new(first.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let labels = r#"{"alertname":"DiskFull"}"#;
    pool.execute(
        sqlx::query(
            "INSERT INTO alert_groups (receiver, group_key, status, severity, runbook, group_labels, \
             common_labels, common_annotations, external_url, truncated_alerts, started_at, \
             created_at, updated_at) \
             VALUES ('bot', $1, 'firing', 'Sev3', 'DiskFull', $2, $2, '{}', 'http://am:9093', 0, $3, $3, $3)",
        )
        .bind(GROUP_KEY)
        .bind(labels)
        .bind(T),
    )
    .await
    .unwrap();
    pool.execute(
        sqlx::query(
            "INSERT INTO alerts (group_id, fingerprint, status, severity, labels, annotations, \
             starts_at, generator_url, first_seen_at, updated_at) \
             VALUES (1, 'dddd000000000001', 'firing', 'Sev3', $1, '{}', $2, 'http://p', $2, $2)",
        )
        .bind(labels)
        .bind(T),
    )
    .await
    .unwrap();
    for (fp, kind) in [
        (None, "group_firing"),
        (Some("dddd000000000001"), "alert_firing"),
    ] {
        pool.execute(
            sqlx::query(
                "INSERT INTO alert_events (group_id, fingerprint, kind, at, recorded_at) \
                 VALUES (1, $1, $2, $3, $3)",
            )
            .bind(fp)
            .bind(kind)
            .bind(T),
        )
        .await
        .unwrap();
    }
    pool.close().await;
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_keeps_every_group_alert_and_timeline_entry_postgres() {
    upgrading_keeps_every_group_alert_and_timeline_entry(&[Db::Postgres]).await
}

/// Fails today: SQLite's 0001_alerts.sql was edited after the first release (commit 68055ca
/// made `alerts` a rowid table), so sqlx finds migration 1's checksum changed and
/// `runbot serve` on a database that release made exits 1 with "applying database
/// migrations: migration 1 was previously applied but has been modified".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_keeps_every_group_alert_and_timeline_entry_sqlite() {
    upgrading_keeps_every_group_alert_and_timeline_entry(&[Db::Sqlite]).await
}

async fn upgrading_keeps_every_group_alert_and_timeline_entry(dbs: &[Db]) {
    for &db in dbs {
        let dir = tempfile::tempdir().unwrap();
        let url = database_as_first_release_left_it(db, dir.path()).await;
        let mut opts = Options::new(db);
        opts.database_url = Some(url);
        let app = TestApp::spawn_with(opts).await;

        let groups = app.groups().await;
        assert_eq!(groups.len(), 1, "{db:?}: {groups:?}");
        assert_eq!(groups[0]["runbook"], "DiskFull");
        assert_eq!(
            app.timeline_kinds(1).await,
            ["group_firing", "alert_firing"],
            "{db:?}"
        );

        // The same group gains an alert: it joins the old group, after the old entries.
        let body = webhook(
            "DiskFull",
            "firing",
            &[
                ("dddd000000000001", "firing", json!({"severity": "warning"})),
                ("dddd000000000002", "firing", json!({"severity": "warning"})),
            ],
        );
        let mut body = body;
        body["alerts"][0]["labels"] = json!({"alertname": "DiskFull"});
        assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
        assert_eq!(app.groups().await.len(), 1, "{db:?}: no second group");
        let g = app.group(1).await;
        let timeline = g["timeline"].as_array().unwrap();
        let kinds: Vec<&str> = timeline
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["group_firing", "alert_firing", "alert_firing"],
            "{db:?}"
        );
        assert_eq!(timeline[2]["fingerprint"], "dddd000000000002");
        let ids: Vec<i64> = timeline.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{db:?}: {ids:?}");
        let alerts: Vec<&Value> = g["alerts"].as_array().unwrap().iter().collect();
        assert_eq!(alerts.len(), 2, "{db:?}: {alerts:?}");
        app.stop().await;
    }
}
