//! `POST /webhooks/alertmanager` against the real app, on SQLite and on PostgreSQL.

use crate::common;

use common::{fixtures, webhook, Db, Options, TestApp, BOTH, TOKEN};
use serde_json::{json, Value};

fn find<'a>(groups: &'a [Value], alertname: &str) -> &'a Value {
    groups
        .iter()
        .find(|g| g["group_labels"]["alertname"] == alertname)
        .unwrap_or_else(|| panic!("no group {alertname}"))
}

#[tokio::test]
async fn captured_fixtures_replayed_byte_for_byte_build_the_right_groups() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        for f in fixtures() {
            let mut req = app.client.post(app.webhook_url()).body(f.body.clone());
            for (k, v) in &f.headers {
                // Host and Content-Length describe the capture's connection, not ours.
                if !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("content-length") {
                    req = req.header(k, v);
                }
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.status(),
                200,
                "{db:?} {}: {}",
                f.name,
                r.text().await.unwrap()
            );
        }
        let groups = app.groups().await;
        assert_eq!(groups.len(), 7, "{db:?}: one group per alertname+service");

        let api = find(&groups, "APIDown");
        assert_eq!(api["status"], "resolved", "{db:?}");
        assert_eq!(api["runbook"], "APIDown");
        assert_eq!(api["severity"], "sev1");
        let alerts = api["alerts"].as_array().unwrap();
        assert_eq!(
            alerts.len(),
            2,
            "{db:?}: the second APIDown alert joined the group"
        );
        assert!(alerts.iter().all(|a| a["status"] == "resolved"));
        assert!(alerts.iter().all(|a| a["ends_at"].is_string()));

        let big = find(&groups, "BigGroup");
        assert_eq!(big["truncated_alerts"], 7, "{db:?}: truncatedAlerts kept");
        assert_eq!(big["alerts"].as_array().unwrap().len(), 5);
        assert_eq!(big["runbook"], Value::Null, "no runbook entry for BigGroup");
        assert_eq!(big["severity"], "sev3");

        let slow = find(&groups, "SlowResponseTime");
        assert_eq!(slow["status"], "resolved");
        assert_eq!(
            slow["common_annotations"]["summary"], "P95 above 1s <slow> & \"quoted\" — ünïcode",
            "Go's \\u003c escapes and non-ASCII survive"
        );

        let high = find(&groups, "HighErrorRate");
        assert_eq!(high["status"], "firing");
        let a = &high["alerts"][0];
        assert_eq!(a["fingerprint"], "1e2c446e93601f97");
        assert_eq!(
            a["starts_at"], "2026-11-27T19:31:13.991875004Z",
            "nanoseconds kept"
        );
        assert_eq!(
            a["ends_at"],
            Value::Null,
            "Go's zero time means still firing"
        );
        assert_eq!(a["labels"]["instance"], "backend-1");
        assert_eq!(
            a["annotations"]["runbook_url"],
            "https://runbook.example/HighErrorRate"
        );

        // The timeline of APIDown: opened firing, two alerts fired, then both resolved.
        let kinds = app.timeline_kinds(api["id"].as_i64().unwrap()).await;
        assert_eq!(
            kinds,
            [
                "group_firing",
                "alert_firing",
                "alert_firing",
                "alert_resolved",
                "alert_resolved",
                "group_resolved"
            ],
            "{db:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_resend_changes_nothing_and_creates_no_duplicate() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        let body = webhook(
            "APIDown",
            "firing",
            &[(
                "aaaa000000000001",
                "firing",
                json!({"severity": "critical"}),
            )],
        );
        let first: Value = app
            .post_webhook(body.to_string())
            .await
            .json()
            .await
            .unwrap();
        assert!(first["changes"].as_u64().unwrap() > 0);
        let before = app.group(first["group_id"].as_i64().unwrap()).await;
        for _ in 0..5 {
            let r = app.post_webhook(body.to_string()).await;
            assert_eq!(r.status(), 200);
            let receipt: Value = r.json().await.unwrap();
            assert_eq!(receipt["changes"], 0, "{db:?}");
            assert_eq!(receipt["group_id"], first["group_id"]);
        }
        // Many concurrent re-sends, as from several Alertmanager peers at once.
        let sends: Vec<_> = (0..20)
            .map(|_| {
                let req = app
                    .client
                    .post(app.webhook_url())
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body.to_string());
                tokio::spawn(async move { req.send().await.unwrap().status() })
            })
            .collect();
        for s in sends {
            assert_eq!(s.await.unwrap(), 200);
        }
        let after = app.group(first["group_id"].as_i64().unwrap()).await;
        assert_eq!(
            before, after,
            "{db:?}: a re-send changes nothing, not even updated_at"
        );
        assert_eq!(app.groups().await.len(), 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn firing_resolved_firing_is_recorded_as_a_timeline_on_one_group() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        let fp = "bbbb000000000001";
        let firing = webhook(
            "HighErrorRate",
            "firing",
            &[(fp, "firing", json!({"severity": "critical"}))],
        );
        let resolved = webhook(
            "HighErrorRate",
            "resolved",
            &[(fp, "resolved", json!({"severity": "critical"}))],
        );
        let mut refire = firing.clone();
        refire["alerts"][0]["startsAt"] = json!("2026-11-27T20:00:00Z");
        for body in [&firing, &resolved, &resolved, &refire] {
            assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
        }
        let groups = app.groups().await;
        assert_eq!(groups.len(), 1, "{db:?}: re-firing reuses the group");
        let g = app.group(groups[0]["id"].as_i64().unwrap()).await;
        assert_eq!(g["status"], "firing");
        assert_eq!(
            g["started_at"], "2026-11-27T20:00:00.000000000Z",
            "re-fire restarts the clock"
        );
        assert_eq!(g["resolved_at"], Value::Null);
        let kinds = app.timeline_kinds(g["id"].as_i64().unwrap()).await;
        assert_eq!(
            kinds,
            [
                "group_firing",
                "alert_firing",
                "alert_resolved",
                "group_resolved",
                "alert_firing",
                "group_firing"
            ],
            "{db:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_resolved_group_resolves_alerts_that_were_truncated_away() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        let labels = json!({"severity": "warning"});
        let mut firing = webhook(
            "CeleryQueueBacklog",
            "firing",
            &[
                ("c000000000000001", "firing", labels.clone()),
                ("c000000000000002", "firing", labels.clone()),
            ],
        );
        firing["truncatedAlerts"] = json!(1);
        app.post_webhook(firing.to_string()).await;
        let mut resolved = webhook(
            "CeleryQueueBacklog",
            "resolved",
            &[("c000000000000001", "resolved", labels.clone())],
        );
        resolved["truncatedAlerts"] = json!(1);
        app.post_webhook(resolved.to_string()).await;
        let groups = app.groups().await;
        let alerts = groups[0]["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        assert!(
            alerts.iter().all(|a| a["status"] == "resolved"),
            "{db:?}: {alerts:?}"
        );
        assert_eq!(groups[0]["status"], "resolved");
        app.stop().await;
    }
}

#[tokio::test]
async fn unknown_severity_falls_back_to_the_default_and_is_noted() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        let body = webhook(
            "DiskSpaceCritical",
            "firing",
            &[(
                "d000000000000001",
                "firing",
                json!({"severity": "apocalyptic"}),
            )],
        );
        app.post_webhook(body.to_string()).await;
        let g = &app.groups().await[0];
        assert_eq!(g["severity"], "sev3", "{db:?}");
        assert!(g["severity_note"].as_str().unwrap().contains("apocalyptic"));
        app.stop().await;
    }
}

/// Every bad request gets its status and a message that says what is wrong, and changes nothing.
#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    for db in BOTH {
        let app =
            TestApp::spawn_with(Options::new(db).set("RUNBOT__HTTP__MAX_BODY_BYTES", "65536"))
                .await;
        // Something already accepted, which nothing below may lose or change.
        let good = webhook(
            "APIDown",
            "firing",
            &[(
                "e000000000000001",
                "firing",
                json!({"severity": "critical"}),
            )],
        );
        assert_eq!(app.post_webhook(good.to_string()).await.status(), 200);
        let before = app.groups().await;

        let body = good.to_string();
        let url = app.webhook_url();
        let c = &app.client;
        let json_ct = ("content-type", "application/json");
        let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
            (
                "no auth",
                c.post(&url).header(json_ct.0, json_ct.1).body(body.clone()),
                401,
                "missing Authorization",
            ),
            (
                "wrong token",
                c.post(&url)
                    .bearer_auth("not-the-token")
                    .header(json_ct.0, json_ct.1)
                    .body(body.clone()),
                401,
                "invalid bearer token",
            ),
            (
                "token prefix",
                c.post(&url)
                    .bearer_auth("fixture-toke")
                    .header(json_ct.0, json_ct.1)
                    .body(body.clone()),
                401,
                "invalid bearer token",
            ),
            (
                "wrong scheme",
                c.post(&url)
                    .header("authorization", format!("Token {TOKEN}"))
                    .header(json_ct.0, json_ct.1)
                    .body(body.clone()),
                401,
                "unsupported Authorization scheme",
            ),
            (
                "wrong basic password",
                c.post(&url)
                    .basic_auth("am", Some("wrong-pass"))
                    .header(json_ct.0, json_ct.1)
                    .body(body.clone()),
                401,
                "invalid basic auth",
            ),
            (
                "wrong content type",
                c.post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "text/plain")
                    .body(body.clone()),
                415,
                "Content-Type must be application/json",
            ),
            (
                "no content type",
                c.post(&url).bearer_auth(TOKEN).body(body.clone()),
                415,
                "Content-Type",
            ),
            (
                "truncated JSON",
                c.post(&url)
                    .bearer_auth(TOKEN)
                    .header(json_ct.0, json_ct.1)
                    .body(body[..body.len() / 2].to_string()),
                400,
                "truncated",
            ),
            (
                "invalid JSON",
                c.post(&url)
                    .bearer_auth(TOKEN)
                    .header(json_ct.0, json_ct.1)
                    .body("{\"receiver\": bot}"),
                400,
                "not valid JSON",
            ),
            (
                "empty body",
                c.post(&url)
                    .bearer_auth(TOKEN)
                    .header(json_ct.0, json_ct.1)
                    .body(""),
                400,
                "truncated",
            ),
            (
                "oversize body",
                c.post(&url)
                    .bearer_auth(TOKEN)
                    .header(json_ct.0, json_ct.1)
                    .body("x".repeat(70_000)),
                413,
                "http.max_body_bytes",
            ),
        ];
        for (name, req, status, message) in cases {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{db:?} {name}");
            if status == 401 {
                assert!(r.headers().contains_key("www-authenticate"), "{name}");
            }
            let text = r.text().await.unwrap();
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
            assert!(
                v["error"].as_str().unwrap().contains(message),
                "{db:?} {name}: {text}"
            );
            assert!(
                !text.contains("not-the-token") && !text.contains("wrong-pass"),
                "{name}: echoes a secret"
            );
        }

        // Payloads that parse as JSON but are not a version 4 webhook.
        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            v.to_string()
        };
        let shapes: Vec<(&str, String, &str)> = vec![
            (
                "version 3",
                mutate(&|v| v["version"] = json!("3")),
                "version \"3\"",
            ),
            (
                "no version",
                mutate(&|v| {
                    v.as_object_mut().unwrap().remove("version");
                }),
                "version",
            ),
            (
                "no groupKey",
                mutate(&|v| {
                    v.as_object_mut().unwrap().remove("groupKey");
                }),
                "groupKey",
            ),
            (
                "no alerts",
                mutate(&|v| {
                    v.as_object_mut().unwrap().remove("alerts");
                }),
                "alerts",
            ),
            (
                "empty alerts",
                mutate(&|v| v["alerts"] = json!([])),
                "alerts is empty",
            ),
            (
                "no fingerprint",
                mutate(&|v| {
                    v["alerts"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("fingerprint");
                }),
                "alerts[0].fingerprint",
            ),
            (
                "no startsAt",
                mutate(&|v| {
                    v["alerts"][0].as_object_mut().unwrap().remove("startsAt");
                }),
                "startsAt",
            ),
            (
                "bad status",
                mutate(&|v| v["alerts"][0]["status"] = json!("exploding")),
                "alerts[0]: status",
            ),
            (
                "bad time",
                mutate(&|v| v["alerts"][0]["startsAt"] = json!("yesterday")),
                "RFC 3339",
            ),
            (
                "labels not strings",
                mutate(&|v| v["alerts"][0]["labels"]["severity"] = json!(1)),
                "alerts[0].labels",
            ),
            (
                "hostile fingerprint",
                mutate(&|v| v["alerts"][0]["fingerprint"] = json!("x'; DROP TABLE alerts;--")),
                "fingerprint",
            ),
            ("array body", "[]".to_string(), "invalid webhook"),
        ];
        for (name, body, message) in shapes {
            let r = app.post_webhook(body).await;
            assert_eq!(r.status().as_u16(), 400, "{db:?} {name}");
            let v: Value = r.json().await.unwrap();
            assert!(
                v["error"].as_str().unwrap().contains(message),
                "{db:?} {name}: {v}"
            );
        }

        assert_eq!(
            app.groups().await,
            before,
            "{db:?}: refused requests changed the store"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn hostile_label_values_are_stored_exactly_and_escaped_in_the_console() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        let long = "ñ".repeat(20_000);
        let labels = json!({
            "severity": "critical",
            "quote": "\"'; DROP TABLE alerts; --",
            "html": "<script>alert(1)</script><img src=x onerror=alert(2)>",
            "unicode": "日本語 🚨 \u{202e}reversed",
            "long": long,
        });
        let mut body = webhook(
            "APIDown",
            "firing",
            &[("f000000000000001", "firing", labels.clone())],
        );
        body["commonAnnotations"]["summary"] = json!("<b>bold</b> & \"quoted\"");
        let r = app.post_webhook(body.to_string()).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let g = &app.groups().await[0];
        for key in ["quote", "html", "unicode", "long"] {
            assert_eq!(g["alerts"][0]["labels"][key], labels[key], "{db:?} {key}");
        }
        let id = g["id"].as_i64().unwrap();
        for path in ["/".to_string(), format!("/groups/{id}")] {
            let html = app.get(&path).await.text().await.unwrap();
            assert!(
                !html.contains("<script>alert(1)"),
                "{path} renders raw HTML"
            );
            assert!(!html.contains("<b>bold</b>"), "{path} renders raw HTML");
            assert!(!html.contains("<img src=x"), "{path} renders raw HTML");
        }
        let page = app
            .get(&format!("/groups/{id}"))
            .await
            .text()
            .await
            .unwrap();
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("日本語 🚨"));
        app.stop().await;
    }
}

#[tokio::test]
async fn without_credentials_configured_only_loopback_callers_are_accepted() {
    let mut opts = Options::new(Db::Sqlite);
    opts.auth = false;
    let app = TestApp::spawn_with(opts).await;
    let body = webhook(
        "APIDown",
        "firing",
        &[("a100000000000001", "firing", json!({}))],
    );
    let r = app
        .client
        .post(app.webhook_url())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a loopback caller is accepted");
    app.stop().await;

    // A caller from another address, handed to the routes as the server would (no packet leaves).
    use axum::extract::ConnectInfo;
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("runbot.toml");
    std::fs::write(&empty, "").unwrap();
    let settings = runbot::config::Settings::load_from(
        Some(&empty),
        vec![
            ("RUNBOT__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            (
                "RUNBOT__DATABASE__URL".into(),
                format!("sqlite://{}", dir.path().join("r.db").display()),
            ),
        ],
    )
    .unwrap();
    let remote = runbot::app::Application::build(settings).await.unwrap();
    let own = format!("127.0.0.1:{}", remote.port());
    // "Local" is not a credential when a proxy on this host forwards to runbot (every caller
    // is then 127.0.0.1) or when a web page rebinds its own name to 127.0.0.1 (its name is the
    // Host): those are refused too.
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, u16);
    let cases: [Case; 7] = [
        ("10.20.30.40:5555", &own, None, 403),
        ("[2001:db8::1]:5555", &own, None, 403),
        ("[::ffff:127.0.0.1]:5555", &own, None, 200),
        (
            "127.0.0.1:5555",
            &own,
            Some(("x-forwarded-for", "203.0.113.9")),
            403,
        ),
        (
            "127.0.0.1:5555",
            &own,
            Some(("forwarded", "for=203.0.113.9")),
            403,
        ),
        ("127.0.0.1:5555", "evil.example:8080", None, 421),
        ("127.0.0.1:5555", "localhost:1", None, 421),
    ];
    for (peer, host, extra, status) in cases {
        let mut req = axum::http::Request::post("/webhooks/alertmanager")
            .header("content-type", "application/json")
            .header("host", host);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        let mut req = req.body(axum::body::Body::from(body.to_string())).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()));
        let r = remote.router().oneshot(req).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{peer} {host} {extra:?}");
        let bytes = axum::body::to_bytes(r.into_body(), 10_000).await.unwrap();
        let text = String::from_utf8_lossy(&bytes);
        match status {
            403 => assert!(text.contains("alertmanager.webhook_token"), "{text}"),
            421 => assert!(text.contains("http.allowed_hosts"), "{text}"),
            _ => {}
        }
    }
}

/// An acknowledgement belongs to one episode: it survives further webhooks and the
/// resolution, and a group firing again after it resolved is nobody's until acknowledged again.
#[tokio::test]
async fn an_acknowledgement_lasts_until_the_group_fires_again_after_resolving() {
    for db in BOTH {
        let app = TestApp::spawn(db).await;
        let labels = json!({"severity": "critical"});
        let firing = webhook(
            "APIDown",
            "firing",
            &[("aaaa000000000001", "firing", labels.clone())],
        );
        let resolved = webhook(
            "APIDown",
            "resolved",
            &[("aaaa000000000001", "resolved", labels)],
        );
        let post = |body: Value| {
            let app = &app;
            async move {
                let r = app.post_webhook(body.to_string()).await;
                assert_eq!(r.status(), 200);
            }
        };
        post(firing.clone()).await;
        let id = app.groups().await[0]["id"].as_i64().unwrap();
        let settings = runbot::config::Settings::load_from(
            None,
            vec![("RUNBOT__DATABASE__URL".into(), app.database_url.clone())],
        )
        .unwrap();
        let store = runbot::store::Store::connect(&settings.database)
            .await
            .unwrap();
        let now = runbot::domain::format_time(chrono::Utc::now());
        assert_eq!(
            store.ack_group(id, "Ana", &now).await.unwrap(),
            runbot::store::Acked::Now
        );
        let acked_by = |g: Value| g["acknowledged_by"].as_str().map(str::to_string);
        post(firing.clone()).await;
        assert_eq!(acked_by(app.group(id).await), Some("Ana".into()), "{db:?}");
        post(resolved).await;
        assert_eq!(
            acked_by(app.group(id).await),
            Some("Ana".into()),
            "kept with the episode"
        );
        post(firing).await;
        assert_eq!(acked_by(app.group(id).await), None, "{db:?}: a new episode");
        assert!(app.group(id).await["acknowledged_at"].is_null());
        store.close().await;
        app.stop().await;
    }
}
