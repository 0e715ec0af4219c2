//! A real Alertmanager (Debian's prometheus-alertmanager) sending to the real app.

use crate::common;

use std::time::Duration;

use common::{Alertmanager, Db, TestApp, BASIC_PASS, BASIC_USER, BOTH, TOKEN};
use serde_json::{json, Value};

/// Routes: `runbot` (bearer) for everything, `capped` (basic auth, max_alerts 2) for BigGroup.
fn config(app: &TestApp, repeat_interval: &str) -> String {
    format!(
        r#"
route:
  receiver: runbot
  group_by: [alertname, service]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: {repeat_interval}
  routes:
    - receiver: capped
      matchers: ['alertname="BigGroup"']
receivers:
  - name: runbot
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {TOKEN}
  - name: capped
    webhook_configs:
      - url: {url}
        send_resolved: true
        max_alerts: 2
        http_config:
          basic_auth:
            username: {BASIC_USER}
            password: {BASIC_PASS}
"#,
        url = app.webhook_url()
    )
}

fn alert(name: &str, instance: &str, severity: &str, ends_at: Option<&str>) -> Value {
    let mut a = json!({
        "labels": {"alertname": name, "service": "backend", "instance": instance, "severity": severity},
        "annotations": {"summary": format!("{name} on {instance}")},
        "generatorURL": "http://prometheus:9090/graph",
    });
    if let Some(t) = ends_at {
        a["endsAt"] = json!(t);
    }
    a
}

fn past() -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339()
}

fn alerts_of<'a>(groups: &'a [Value], name: &str) -> Option<&'a Value> {
    groups
        .iter()
        .find(|g| g["group_labels"]["alertname"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_join_a_group_then_resolve_through_a_real_alertmanager() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        let am = Alertmanager::start(&config(&app, "1h")).await;

        am.push(json!([alert("APIDown", "backend-1", "critical", None)]))
            .await;
        let id = app
            .wait_for(15, "the APIDown group", |gs| {
                alerts_of(gs, "APIDown")
                    .filter(|g| g["alerts"].as_array().unwrap().len() == 1)
                    .map(|g| g["id"].clone())
            })
            .await;

        am.push(json!([alert("APIDown", "backend-2", "critical", None)]))
            .await;
        let g = app
            .wait_for(15, "a second alert joining", |gs| {
                alerts_of(gs, "APIDown")
                    .filter(|g| g["alerts"].as_array().unwrap().len() == 2)
                    .cloned()
            })
            .await;
        assert_eq!(
            g["id"], id,
            "{db:?}: the second alert joined the same group"
        );
        assert_eq!(g["status"], "firing");
        assert_eq!(g["severity"], "sev1");
        assert_eq!(g["runbook"], "APIDown");
        assert_eq!(g["receiver"], "runbot");

        let t = past();
        am.push(json!([
            alert("APIDown", "backend-1", "critical", Some(&t)),
            alert("APIDown", "backend-2", "critical", Some(&t)),
        ]))
        .await;
        let g = app
            .wait_for(15, "the group to resolve", |gs| {
                alerts_of(gs, "APIDown")
                    .filter(|g| g["status"] == "resolved")
                    .cloned()
            })
            .await;
        assert!(
            g["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["status"] == "resolved"),
            "{db:?}"
        );
        assert_eq!(app.groups().await.len(), 1, "{db:?}: no duplicate group");

        let kinds = app.timeline_kinds(id.as_i64().unwrap()).await;
        assert_eq!(
            kinds.iter().filter(|k| **k == "alert_firing").count(),
            2,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "alert_resolved").count(),
            2,
            "{kinds:?}"
        );
        assert_eq!(kinds.last().map(String::as_str), Some("group_resolved"));
        assert_eq!(
            am.metric("alertmanager_notifications_failed_total", "webhook")
                .await,
            0.0
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_group_keeps_its_truncated_count() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let am = Alertmanager::start(&config(&app, "1h")).await;
    let alerts: Vec<Value> = (0..5)
        .map(|i| alert("BigGroup", &format!("worker-{i}"), "warning", None))
        .collect();
    am.push(Value::Array(alerts)).await;
    let g = app
        .wait_for(15, "the capped BigGroup", |gs| {
            alerts_of(gs, "BigGroup").cloned()
        })
        .await;
    assert_eq!(g["receiver"], "capped", "sent with basic auth");
    assert_eq!(g["alerts"].as_array().unwrap().len(), 2, "max_alerts 2");
    assert_eq!(g["truncated_alerts"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_notifications_create_no_duplicates() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        // repeat_interval 1s: Alertmanager re-sends the whole group every group_interval.
        let am = Alertmanager::start(&config(&app, "1s")).await;
        am.push(json!([
            alert("HighErrorRate", "backend-1", "critical", None),
            alert("HighErrorRate", "backend-2", "critical", None),
        ]))
        .await;
        let g = app
            .wait_for(15, "the HighErrorRate group", |gs| {
                alerts_of(gs, "HighErrorRate")
                    .filter(|g| g["alerts"].as_array().unwrap().len() == 2)
                    .cloned()
            })
            .await;
        let id = g["id"].as_i64().unwrap();
        // The group and its timeline, without `activity`: that also shows its card's delivery
        // (the console's outbox posts it in its own time), which re-sends do not touch.
        let group = |mut g: serde_json::Value| {
            g.as_object_mut().unwrap().remove("activity");
            g
        };
        let before = group(app.group(id).await);
        let sent_before = am
            .metric("alertmanager_notifications_total", "webhook")
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while am
            .metric("alertmanager_notifications_total", "webhook")
            .await
            < sent_before + 3.0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "Alertmanager did not re-send"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let after = group(app.group(id).await);
        assert_eq!(before, after, "{db:?}: re-sends changed the group");
        assert_eq!(app.groups().await.len(), 1);
        assert_eq!(
            am.metric("alertmanager_notifications_failed_total", "webhook")
                .await,
            0.0
        );
        app.stop().await;
    }
}
