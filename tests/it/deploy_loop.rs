//! The runbook's whole loop, from deploy/: a real Prometheus evaluates
//! `deploy/prometheus/alerts.yml` against a stand-in exporter whose health probe fails, sends
//! APIDown to a real Alertmanager running `deploy/alertmanager/alertmanager.yml`, which posts it
//! to a real runbot: the group shows up with its runbook entry linked.
//!
//! Only what a test machine needs is changed in copies of the two files: APIDown's `for: 2m`
//! becomes `1s` (the expression, labels and annotations are the shipped ones), and the
//! receiver's address and token file point at this test's runbot.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Alertmanager, Db, TestApp, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `/metrics` that says the backend's health probe fails.
async fn exporter() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "# TYPE probe_success gauge\nprobe_success 0\n";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn deploy(path: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_apidown_through_alertmanager_into_a_runbot_card() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();

    // Alertmanager with the shipped routing, pointed at this runbot.
    let token = dir.path().join("webhook_token");
    std::fs::write(&token, TOKEN).unwrap();
    let am_config = deploy("alertmanager/alertmanager.yml")
        .replace("http://runbot:8080", &app.url)
        .replace("/run/secrets/webhook_token", token.to_str().unwrap());
    assert_ne!(am_config, deploy("alertmanager/alertmanager.yml"));
    let am = Alertmanager::start(&am_config).await;

    // The shipped rules, APIDown's duration shortened.
    let rules = deploy("prometheus/alerts.yml");
    let apidown = rules.find("- alert: APIDown").unwrap();
    let at = apidown + rules[apidown..].find("for: 2m").unwrap();
    let rules = format!("{}for: 1s{}", &rules[..at], &rules[at + "for: 2m".len()..]);
    std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
    let exporter = exporter().await;
    let am_target = am.url.trim_start_matches("http://");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{rules}]\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{am_target}\"]\n\
             scrape_configs:\n  - job_name: blackbox\n    static_configs:\n      - targets: [\"127.0.0.1:{exporter}\"]\n        labels:\n          service: backend\n",
            rules = dir.path().join("alerts.yml").display()
        ),
    )
    .unwrap();
    let bin = std::env::var("RUNBOT_TEST_PROMETHEUS_BIN")
        .unwrap_or_else(|_| "/usr/bin/prometheus".into());
    let port = common::free_port();
    let _prometheus = Prometheus(
        Command::new(&bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): run the tests with scripts/test")
            }),
    );

    // Scrape, evaluate, fire, Alertmanager's 10 s group_wait for critical alerts, the webhook.
    let deadline = Instant::now() + Duration::from_secs(60);
    let group = loop {
        let found = app
            .groups()
            .await
            .into_iter()
            .find(|g| g.to_string().contains("APIDown"));
        if let Some(g) = found {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "no APIDown group reached runbot within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let id = group["id"].as_i64().unwrap();
    let detail = app.group(id).await.to_string();
    assert!(
        detail.contains("https://runbot.example.com/runbook/APIDown"),
        "the group carries its runbook entry's link: {detail}"
    );
    let page = app
        .get(&format!("/groups/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("https://runbot.example.com/runbook/APIDown"),
        "the card links the runbook entry"
    );
    assert!(page.contains("Sev1"), "critical is Sev1 on the card");
    app.stop().await;
}
