//! The store goes away and comes back: 503 and not ready meanwhile, nothing lost after.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{fresh_database, webhook, Db, Options, Proxy, TestApp};
use serde_json::json;
use sqlx::Connection;

fn body(fp: &str) -> String {
    webhook(
        "APIDown",
        "firing",
        &[(fp, "firing", json!({"severity": "critical"}))],
    )
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_then_recovers_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let real_url = fresh_database(Db::Postgres, dir.path()).await;
    // runbot reaches PostgreSQL through a proxy the test can cut, like a network outage.
    let (head, db_name) = real_url.rsplit_once('/').unwrap();
    let host_port = head.rsplit_once('@').unwrap().1;
    let upstream: SocketAddr = host_port.parse().unwrap();
    let mut proxy = Proxy::start(upstream).await;
    let proxied = format!(
        "postgres://runbot:runbot@127.0.0.1:{}/{db_name}",
        proxy.port
    );
    let mut opts = Options::new(Db::Postgres).set("RUNBOT__DATABASE__ACQUIRE_TIMEOUT_MS", "1000");
    opts.database_url = Some(proxied);
    let app = TestApp::spawn_with(opts).await;

    assert_eq!(
        app.post_webhook(body("0000000000000a01")).await.status(),
        200
    );
    assert_eq!(app.get("/readyz").await.status(), 200);

    proxy.cut();
    let r = app.post_webhook(body("0000000000000a02")).await;
    assert_eq!(r.status(), 503, "Alertmanager must retry");
    assert_eq!(r.headers()["retry-after"], "5");
    let text = r.text().await.unwrap();
    assert!(text.contains("retry later"), "{text}");
    assert!(
        !text.contains("runbot:runbot"),
        "no connection details leak: {text}"
    );
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "the process itself is fine"
    );

    proxy.restore().await;
    // Alertmanager's retry of the same webhook now succeeds.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = app.post_webhook(body("0000000000000a02")).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.get("/readyz").await.status(), 200);
    let groups = app.groups().await;
    let mut fps: Vec<&str> = groups[0]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["fingerprint"].as_str().unwrap())
        .collect();
    fps.sort();
    assert_eq!(fps, ["0000000000000a01", "0000000000000a02"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_answers_503_then_recovers_with_nothing_lost() {
    let app = TestApp::spawn(Db::Sqlite).await;
    assert_eq!(
        app.post_webhook(body("0000000000000b01")).await.status(),
        200
    );

    // Another process holds the write lock (a backup tool, a stuck migration, …).
    let mut other = sqlx::SqliteConnection::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let r = app.post_webhook(body("0000000000000b02")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(app.get("/readyz").await.status(), 503);

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(
        app.post_webhook(body("0000000000000b02")).await.status(),
        200
    );
    let groups = app.groups().await;
    assert_eq!(groups[0]["alerts"].as_array().unwrap().len(), 2);
    app.stop().await;
}

/// An API token that cannot be checked opens nothing: 503 while the database is away (a
/// script retries), the token works again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_is_never_taken_unchecked_while_the_database_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let real_url = fresh_database(Db::Postgres, dir.path()).await;
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"))
        .current_dir(dir.path())
        .env_remove("RUNBOT_CONFIG")
        .env("RUNBOT__DATABASE__URL", &real_url)
        .args(["token", "create", "--name", "ci-script"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8_lossy(&made.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("rbt_"))
        .unwrap()
        .to_string();
    let (head, db_name) = real_url.rsplit_once('/').unwrap();
    let upstream: SocketAddr = head.rsplit_once('@').unwrap().1.parse().unwrap();
    let mut proxy = Proxy::start(upstream).await;
    let mut opts = Options::new(Db::Postgres).set("RUNBOT__DATABASE__ACQUIRE_TIMEOUT_MS", "1000");
    opts.database_url = Some(format!(
        "postgres://runbot:runbot@127.0.0.1:{}/{db_name}",
        proxy.port
    ));
    let app = TestApp::spawn_with(opts).await;
    // Through a proxy on this host: not a local caller, so the token is what opens the API.
    let ask = || {
        app.client
            .get(format!("{}/api/alert-groups", app.url))
            .header("x-forwarded-for", "203.0.113.5")
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(ask().await.unwrap().status(), 200);
    proxy.cut();
    let r = ask().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("cannot check the API token now"));
    proxy.restore().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = ask().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 while it reconnects");
        assert!(
            std::time::Instant::now() < deadline,
            "the token never worked again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
