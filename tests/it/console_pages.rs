//! The console's incident pages over HTTP, against the real application: a group's timeline
//! (and its Markdown), the audit page and its downloads, on call, deploys. Requests are made
//! through the real invocation core on the app's own database, as a chat platform would.

use std::sync::Arc;

use runbot::request::RawValue;
use runbot::store::NewDeploy;
use serde_json::{json, Value};

use crate::common::rig::{backend, developer, devops, shipped_policies, text, Edits, Rig, ROLES};
use crate::common::{webhook, Db, Options, TestApp, BOTH};

/// Values that would run script if a page printed them as markup.
const SCRIPT: &str = "<script>alert(1)</script>";
const ATTR: &str = "\"><img src=x onerror=alert(1)>";
const JS_URL: &str = "javascript:alert(1)";

/// A rig (the invocation core) and the app on one database, the app with `roles`.
async fn rig_and_app(db: Db, roles: &str) -> (Rig, TestApp, tempfile::TempDir) {
    let rig = Rig::with_roles(db, &[], runbot::domain::clock::system_clock(), roles).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = shipped_policies(dir.path(), roles);
    let mut opts = Options::new(db).set("RUNBOT__POLICY__DIR", &policies.display().to_string());
    opts.database_url = Some(rig.database_url.clone());
    let app = TestApp::spawn_with(opts).await;
    (rig, app, dir)
}

async fn page(app: &TestApp, path: &str) -> (u16, String) {
    let r = app.get(path).await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// Nothing an outsider wrote came out as markup.
fn assert_inert(body: &str) {
    assert!(!body.contains("<script>alert"), "raw script tag: {body}");
    assert!(!body.contains("<img src=x"), "raw img tag: {body}");
    assert!(!body.contains("href=\"javascript:"), "script link: {body}");
}

fn pos(body: &str, needle: &str) -> usize {
    body.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {body}"))
}

/// The `href` of the element with this id, with `&amp;` read back.
fn href_of(body: &str, id: &str) -> Option<String> {
    let at = body.find(&format!("id=\"{id}\""))?;
    let rest = &body[at..];
    let start = rest.find("href=\"")? + 6;
    let end = rest[start..].find('"')? + start;
    Some(rest[start..end].replace("&amp;", "&"))
}

/// The ids of the audit rows a page lists, in page order.
fn row_ids(body: &str) -> Vec<i64> {
    body.match_indices("<tr data-id=\"")
        .map(|(i, m)| {
            let rest = &body[i + m.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_timeline_shows_the_alert_the_acknowledgement_and_commands_in_order() {
    for db in BOTH {
        let (rig, app, _dir) = rig_and_app(db, ROLES).await;
        let labels =
            json!({"severity": "critical", "instance": SCRIPT, "evil": ATTR, "link": JS_URL});
        let r = app
            .post_webhook(
                webhook("APIDown", "firing", &[("f00d0001", "firing", labels)]).to_string(),
            )
            .await;
        assert_eq!(r.status(), 200, "{db:?}: {}", r.text().await.unwrap());
        let id = app
            .wait_for(10, "the group", |gs| {
                gs.first().and_then(|g| g["id"].as_i64())
            })
            .await;

        let edits = Arc::new(Edits::default());
        rig.ask(devops(), "ack", &[("group", RawValue::Integer(id))], &edits)
            .await;
        edits.wait(1).await;
        rig.ask(
            backend(),
            "ack",
            &[("group", RawValue::Integer(id))],
            &edits,
        )
        .await;
        edits.wait(2).await;
        // Requests on other groups stay off this one's timeline, whatever their ids' digits.
        for n in 0..10 {
            rig.group_with(
                json!({"alertname": "HighErrorRate", "n": n.to_string()}),
                "sev2",
            )
            .await;
        }
        let other = rig.group("DiskFull", "sev3").await;
        assert!(
            other.to_string().starts_with(&id.to_string()),
            "{id} is a prefix of {other}"
        );
        rig.ask(
            devops(),
            "ack",
            &[("group", RawValue::Integer(other))],
            &edits,
        )
        .await;
        edits.wait(3).await;

        // JSON: `timeline` is what it was; `activity` is the merged timeline, oldest first.
        let g = app.group(id).await;
        assert_eq!(g["timeline"][0]["kind"], "group_firing", "{db:?}: {g}");
        let entries = g["activity"]["entries"].as_array().unwrap().clone();
        assert_eq!(g["activity"]["more"], false);
        let find = |f: &dyn Fn(&Value) -> bool| {
            entries
                .iter()
                .position(f)
                .unwrap_or_else(|| panic!("{db:?}: not in {entries:#?}"))
        };
        let fired = find(&|e| e["kind"] == "alert" && e["event"] == "group_firing");
        let asked =
            find(&|e| e["kind"] == "command" && e["step"] == "requested" && e["who"] == "Dana");
        let acked = find(&|e| {
            e["kind"] == "command"
                && e["step"] == "succeeded"
                && e["outcome"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("acknowledged APIDown"))
        });
        let mark = find(&|e| e["kind"] == "acknowledged" && e["by"] == "Dana");
        let again = find(&|e| {
            e["kind"] == "command"
                && e["who"] == "Bruno"
                && e["outcome"]
                    .as_str()
                    .is_some_and(|o| o.contains("already acknowledged by Dana"))
        });
        assert!(
            fired < asked && asked < acked && acked < again,
            "{db:?}: {entries:#?}"
        );
        assert!(fired < mark && mark < again, "{db:?}: {entries:#?}");
        assert!(
            !entries.iter().any(|e| e["args"]["group"] == other),
            "{db:?}: group {other}'s ack is not on {id}'s timeline: {entries:#?}"
        );
        assert_eq!(entries[acked]["command"], "ack");
        assert_eq!(entries[acked]["args"]["group"], id);
        let times: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "{db:?}: oldest first");

        // The page: the card's content and the same timeline, hostile labels inert.
        let (status, body) = page(&app, &format!("/groups/{id}")).await;
        assert_eq!(status, 200, "{db:?}");
        assert_inert(&body);
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{body}"
        );
        assert!(
            body.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
            "{body}"
        );
        assert!(body.contains("acknowledged by Dana"), "{body}");
        assert!(body.contains("id=\"runbook\""), "{db:?}: the runbook entry");
        assert!(
            body.contains("class=\"table-wrap\""),
            "narrow screens scroll tables"
        );
        let timeline = &body[pos(&body, "id=\"timeline\"")..];
        let fired = pos(timeline, "group firing");
        let acked = pos(timeline, "succeeded: acknowledged APIDown");
        let again = pos(timeline, "already acknowledged by Dana");
        assert!(fired < acked && acked < again, "{db:?}: {timeline}");
        assert!(timeline.contains(&format!("/ack group:{id}")), "{timeline}");
        assert!(
            body.contains("data-copy=\"timeline-md\"")
                && body.contains("<textarea id=\"timeline-md\" readonly")
        );

        // Markdown for the postmortem: the same facts, inert.
        let r = app.get(&format!("/groups/{id}/timeline.md")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/markdown; charset=utf-8");
        let md = r.text().await.unwrap();
        assert!(md.starts_with("# Sev1"), "{md}");
        assert!(md.contains(&format!("(alert group #{id})")), "{md}");
        for line in [
            "- Severity: Sev1",
            "- Status: firing",
            "- Resolved: not yet",
            "## Alerts",
            "## Timeline",
        ] {
            assert!(md.contains(line), "{line}: {md}");
        }
        assert!(md.contains("\\<script\\>alert\\(1\\)\\</script\\>"), "{md}");
        // Past runbot's own headings, every bracket comes from data and is escaped.
        let data = &md[pos(&md, "## Alerts") + 9..];
        let data = data.replace("## Timeline (UTC)", "");
        assert!(
            data.match_indices(['<', '>', '[', '('])
                .all(|(i, _)| data[..i].ends_with('\\')),
            "every bracket escaped: {md}"
        );
        let fired = pos(&md, "group firing");
        let acked = pos(&md, "Dana · /ack group:");
        let done = pos(&md, "succeeded: acknowledged APIDown");
        let again = pos(&md, "already acknowledged by Dana");
        assert!(fired < acked && acked < done && done < again, "{md}");
        // The page's textarea holds the same text. (Fetched a moment apart, the two may differ
        // by a card delivery the outbox made in between: ask again until they agree.)
        let same = |body: &str, md: &str| {
            body.contains(
                &md.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;"),
            )
        };
        let mut agreed = same(&body, &md);
        for _ in 0..20 {
            if agreed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let (_, body) = page(&app, &format!("/groups/{id}")).await;
            let md = app
                .get(&format!("/groups/{id}/timeline.md"))
                .await
                .text()
                .await
                .unwrap();
            agreed = same(&body, &md);
        }
        assert!(agreed, "the page's textarea and timeline.md differ: {md}");

        let (status, _) = page(&app, "/groups/424242").await;
        assert_eq!(status, 404);
        assert_eq!(app.get("/groups/424242/timeline.md").await.status(), 404);
        app.stop().await;
    }
}

/// `runbot audit export ARGS` against `url`: its standard output.
fn cli_export(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUNBOT__DATABASE__URL", url)
        .args(["audit", "export"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_filters_and_pages_and_downloads_what_the_cli_exports() {
    for db in BOTH {
        let (rig, app, _dir) = rig_and_app(db, ROLES).await;
        let group = rig.group("APIDown", "sev1").await;
        let edits = Arc::new(Edits::default());
        rig.ask(
            devops(),
            "ack",
            &[("group", RawValue::Integer(group))],
            &edits,
        )
        .await;
        edits.wait(1).await;
        rig.ask(developer(), "logs", &[("service", text(SCRIPT))], &edits)
            .await;
        rig.ask(
            developer(),
            "restart",
            &[("service", text("backend"))],
            &edits,
        )
        .await;
        rig.ask(backend(), "oncall", &[], &edits).await;
        // The ack and /oncall answer later: their last rows are written by then.
        edits.wait(2).await;
        let all = rig.audit_records().await;
        assert!(all.len() >= 6, "{db:?}: {all:#?}");

        // Everything, newest first, hostile arguments inert.
        let (status, body) = page(&app, "/audit").await;
        assert_eq!(status, 200, "{db:?}");
        assert_inert(&body);
        assert!(body.contains("&lt;script&gt;"), "{body}");
        let mut newest_first: Vec<i64> = all.iter().map(|r| r.id).collect();
        newest_first.reverse();
        assert_eq!(row_ids(&body), newest_first, "{db:?}");
        assert!(
            body.contains(&format!("href=\"/groups/{group}\"")),
            "the group is linked"
        );

        // Each filter narrows to what the trail holds.
        let dev = "100000000000000004";
        let want = |f: &dyn Fn(&runbot::audit::AuditRecord) -> bool| -> Vec<i64> {
            all.iter().rev().filter(|r| f(r)).map(|r| r.id).collect()
        };
        for (query, expected) in [
            (format!("actor={dev}"), want(&|r| r.actor_id == dev)),
            ("command=ack".to_string(), want(&|r| r.command == "ack")),
            (
                "step=denied".to_string(),
                want(&|r| r.step.as_str() == "denied"),
            ),
            (
                format!("actor={dev}&step=invalid"),
                want(&|r| r.actor_id == dev && r.step.as_str() == "invalid"),
            ),
            ("until=2000-01-01T00:00".to_string(), vec![]),
            (
                "since=2000-01-01T00:00:00Z&until=2999-01-01T00:00".to_string(),
                newest_first.clone(),
            ),
            ("since=&actor=&step=".to_string(), newest_first.clone()),
        ] {
            assert!(
                !expected.is_empty() || query.starts_with("until"),
                "{query}"
            );
            let (status, body) = page(&app, &format!("/audit?{query}")).await;
            assert_eq!(status, 200, "{db:?} {query}: {body}");
            assert_eq!(row_ids(&body), expected, "{db:?} {query}");
        }

        // Pages of two, following the link, cover the trail once.
        let mut path = "/audit?limit=2".to_string();
        let mut seen = Vec::new();
        loop {
            let (status, body) = page(&app, &path).await;
            assert_eq!(status, 200, "{path}");
            let ids = row_ids(&body);
            assert!(ids.len() <= 2);
            seen.extend(ids);
            match href_of(&body, "next") {
                Some(next) => path = next,
                None => break,
            }
        }
        assert_eq!(seen, newest_first, "{db:?}");

        // Bad input: a clear answer, nothing listed.
        for (query, says) in [
            ("step=exploded", "step must be one of"),
            ("since=yesterday", "since is not a time"),
            (
                "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
                "until must be after since",
            ),
            ("limit=0", "limit must be a number from 1 to 200"),
            ("before=-3", "before must be a row id"),
        ] {
            let (status, body) = page(&app, &format!("/audit?{query}")).await;
            assert_eq!(status, 400, "{query}");
            assert!(body.contains(says), "{query}: {body}");
            assert!(row_ids(&body).is_empty());
        }
        let r = app.get("/audit/export?format=xml").await;
        assert_eq!(r.status(), 400);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("format must be csv or jsonl"));

        // Downloads: byte for byte what `runbot audit export` writes for the same filter.
        let since = &all[1].at;
        for (query, args) in [
            ("format=csv".to_string(), vec!["--format", "csv"]),
            (
                format!("format=csv&actor={dev}"),
                vec!["--format", "csv", "--actor", dev],
            ),
            (
                "format=jsonl&command=ack&step=succeeded".to_string(),
                vec![
                    "--format",
                    "jsonl",
                    "--command",
                    "ack",
                    "--step",
                    "succeeded",
                ],
            ),
            (
                format!("format=jsonl&since={}", urlencode(since)),
                vec!["--format", "jsonl", "--since", since.as_str()],
            ),
        ] {
            let r = app.get(&format!("/audit/export?{query}")).await;
            assert_eq!(r.status(), 200, "{query}");
            let attachment = r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(attachment.starts_with("attachment"), "{attachment}");
            let got = r.text().await.unwrap();
            let want = cli_export(&rig.database_url, &args);
            assert!(!want.is_empty());
            assert_eq!(got, want, "{db:?} {query}");
        }
        let csv = app
            .get(&format!("/audit/export?format=csv&actor={dev}"))
            .await
            .text()
            .await
            .unwrap();
        for id in want(&|r| r.actor_id == dev) {
            assert!(csv.contains(&format!("\n{id},")), "row {id}: {csv}");
        }
        assert!(
            !csv.contains(&format!("\n{},", all[0].id)),
            "Dana's first row is not Dev's: {csv}"
        );
        app.stop().await;
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn on_call_lists_each_role_whether_it_is_on_call_and_who_holds_it() {
    // Every role runbot.cedar names must exist; the ones looked at here have holders.
    let roles = r#"
[roles.devops-lead]
discord_users = ["100000000000000001"]
discord_roles = ["900000000000000001"]
slack_users = ["U024BE7LH"]
console_users = ["dana"]
hours = "24/7"

[roles.dba]
hours = "business"

[roles.viewer]
hours = "weekends"

[roles.cto]
hours = "24/7"

[roles.backend-lead]
hours = "24/7"

[roles.developer]
hours = "24/7"

[roles.security]
hours = "24/7"
"#;
    let (rig, app, _dir) = rig_and_app(Db::Sqlite, roles).await;
    let hash = runbot::chat::console::accounts::hash_password("a long enough passphrase").unwrap();
    let now = runbot::domain::format_time(chrono::Utc::now());
    assert!(rig
        .store
        .add_account("olga", &hash, r#"["dba"]"#, &now)
        .await
        .unwrap());
    assert!(rig
        .store
        .add_account("gone", &hash, r#"["dba"]"#, &now)
        .await
        .unwrap());
    assert!(rig.store.disable_account("gone", &now).await.unwrap());

    let r = app.get("/api/oncall").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let names: Vec<&str> = v["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "backend-lead",
            "cto",
            "dba",
            "developer",
            "devops-lead",
            "security",
            "viewer"
        ],
        "{v}"
    );
    let lead = &v["roles"][4];
    assert_eq!(lead["on_call_now"], true, "24/7 is always on call: {v}");
    assert_eq!(lead["hours"], "24/7");
    assert_eq!(lead["discord_users"], json!(["100000000000000001"]));
    assert_eq!(lead["discord_roles"], json!(["900000000000000001"]));
    assert_eq!(lead["slack_users"], json!(["U024BE7LH"]));
    assert_eq!(lead["console_users"], json!(["dana"]));
    let dba = &v["roles"][2];
    assert_eq!(
        dba["console_accounts"],
        json!(["olga"]),
        "enabled accounts only: {v}"
    );
    // Business hours and weekends never overlap.
    assert!(
        !(dba["on_call_now"] == true && v["roles"][6]["on_call_now"] == true),
        "{v}"
    );
    assert!(v["timezone"].is_string() && v["at"].is_string());

    let (status, body) = page(&app, "/oncall").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("data-role=\"devops-lead\" data-on-call=\"true\""),
        "{body}"
    );
    for holder in [
        "100000000000000001",
        "900000000000000001",
        "U024BE7LH",
        "dana",
        "olga",
    ] {
        assert!(body.contains(holder), "{holder}: {body}");
    }
    assert!(!body.contains("gone"), "a disabled account holds nothing");
    assert!(
        body.contains("nobody assigned"),
        "viewer has nobody: {body}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_lists_recorded_deploys_newest_first() {
    for db in BOTH {
        let (rig, app, _dir) = rig_and_app(db, ROLES).await;
        let (status, body) = page(&app, "/deploys").await;
        assert_eq!(status, 200);
        assert!(body.contains("id=\"empty\""), "{body}");

        let new = |tag: &'static str, invocation: &'static str| NewDeploy {
            project: "cafe",
            kind: "deploy",
            tag,
            from_tag: Some("v1.0"),
            actor: "Dana",
            invocation_id: invocation,
            platform: "discord",
            channel_id: None,
            owner: "owner-1",
        };
        let runbot::store::Lock::Taken(first) =
            rig.store.begin_deploy(&new("v1.1", "inv-1")).await.unwrap()
        else {
            panic!("the lock is free");
        };
        let steps = json!([{"name": "pull", "state": "ok", "detail": "", "ms": 12}]).to_string();
        assert!(rig
            .store
            .finish_deploy(
                first,
                "owner-1",
                "failed",
                Some("health"),
                Some(SCRIPT),
                &steps
            )
            .await
            .unwrap());
        let runbot::store::Lock::Taken(second) =
            rig.store.begin_deploy(&new("v1.2", "inv-2")).await.unwrap()
        else {
            panic!("the lock is free again");
        };

        let r = app.get("/api/deploys").await;
        assert_eq!(r.status(), 200);
        let v: Vec<Value> = r.json().await.unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0]["id"], second);
        assert_eq!(v[0]["state"], "running");
        assert_eq!(v[0]["duration_secs"], Value::Null);
        assert_eq!(v[1]["id"], first);
        assert_eq!(v[1]["tag"], "v1.1");
        assert_eq!(v[1]["from_tag"], "v1.0");
        assert_eq!(v[1]["actor"], "Dana");
        assert_eq!(v[1]["state"], "failed");
        assert_eq!(v[1]["failed_step"], "health");
        assert!(v[1]["duration_secs"].as_i64().unwrap() >= 0);
        assert!(v[1]["finished_at"].is_string());
        assert_eq!(v[1]["steps"][0]["name"], "pull");

        let (status, body) = page(&app, "/deploys").await;
        assert_eq!(status, 200);
        assert_inert(&body);
        let newer = pos(&body, "<code>v1.2</code>");
        let older = pos(&body, "<code>v1.1</code>");
        assert!(newer < older, "newest first");
        assert!(body.contains("failed at health") && body.contains("&lt;script&gt;"));

        let (_, body) = page(&app, "/deploys?limit=1").await;
        assert_eq!(body.matches("<tr data-id=").count(), 1);
        let next = href_of(&body, "next").expect("a link to older deploys");
        let (_, body) = page(&app, &next).await;
        assert!(
            body.contains("<code>v1.1</code>") && !body.contains("<code>v1.2</code>"),
            "{body}"
        );
        let r = app.get("/api/deploys?limit=500").await;
        assert_eq!(r.status(), 400);
        app.stop().await;
    }
}

/// The new pages sit behind the console's gate like `/`: a caller from the network without
/// credentials is turned away (whatever way the gate turns it away) and sees no data.
#[tokio::test]
async fn the_incident_pages_are_behind_the_console_gate() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("runbot.toml"), "").unwrap();
    let settings = runbot::config::Settings::load_from(
        Some(&dir.path().join("runbot.toml")),
        vec![
            ("RUNBOT__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            (
                "RUNBOT__DATABASE__URL".into(),
                format!("sqlite://{}", dir.path().join("r.db").display()),
            ),
        ],
    )
    .unwrap();
    let app = runbot::app::Application::build(settings).await.unwrap();
    let host = format!("127.0.0.1:{}", app.port());
    for path in [
        "/groups/1",
        "/groups/1/timeline.md",
        "/audit",
        "/audit/export?format=csv",
        "/oncall",
        "/api/oncall",
        "/deploys",
        "/api/deploys",
    ] {
        let mut req = axum::http::Request::get(path)
            .header("host", &host)
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut().insert(axum::extract::ConnectInfo(
            "10.1.2.3:4000".parse::<std::net::SocketAddr>().unwrap(),
        ));
        let r = app.router().oneshot(req).await.unwrap();
        assert!(
            matches!(r.status().as_u16(), 302 | 303 | 401 | 403),
            "{path}: {}",
            r.status()
        );
        let body = axum::body::to_bytes(r.into_body(), 100_000).await.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("hash") && !body.contains("devops-lead"),
            "{path}: {body}"
        );
    }
}
