//! `/report` and `/backlog` against the real application on SQLite and PostgreSQL: real groups
//! from the webhook, escalation rows written through the store's own functions (as the engine
//! writes them), then the numbers read back through the console API, the pages and the
//! commands, checked against the times the test chose.

use chrono::{DateTime, Duration, Utc};
use runbot::domain::format_time;
use runbot::store::{EpisodeToStart, NewPage, StepFired, Store};
use serde_json::{json, Value};

use crate::common::{webhook, Options, TestApp, BOTH};

/// A firing (or resolved) group `name` whose alert started at `start` (and ended at `end`).
fn alert(name: &str, severity: &str, start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> Value {
    let status = if end.is_some() { "resolved" } else { "firing" };
    let mut w = webhook(
        name,
        status,
        &[("f1", status, json!({"severity": severity}))],
    );
    w["alerts"][0]["startsAt"] = json!(format_time(start));
    if let Some(end) = end {
        w["alerts"][0]["endsAt"] = json!(format_time(end));
    }
    w
}

fn episode(eps: &[EpisodeToStart], severity: &str, nth: usize) -> EpisodeToStart {
    eps.iter()
        .filter(|e| e.severity == severity)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {severity} episode #{nth} in {eps:?}"))
        .clone()
}

fn page_to(person: &str) -> NewPage {
    NewPage {
        person: person.into(),
        role: Some("devops-lead".into()),
        via: "discord".into(),
        target: "100000000000000001".into(),
        body: "{}".into(),
    }
}

/// Fires the escalation's next step with one page, and marks the page sent.
async fn fire(store: &Store, group_id: i64, at: DateTime<Utc>, last: bool) {
    let row = store.current_escalation(group_id).await.unwrap().unwrap();
    let fired = StepFired {
        next_step: row.next_step + 1,
        next_due: (!last).then(|| format_time(at + Duration::seconds(30))),
        state: if last { "done" } else { "active" }.into(),
        pages: vec![page_to("ana")],
        ..Default::default()
    };
    let ids = store
        .fire_steps(&[(&row, &fired)], &format_time(at))
        .await
        .unwrap()
        .remove(0)
        .expect("the step was due and ours");
    store
        .pages_sent(&ids, &format_time(at + Duration::seconds(1)))
        .await
        .unwrap();
}

/// Asks a command as the token's holder and waits for its final answer (a command that
/// takes a moment first answers "Working on it").
async fn post(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}/api/commands", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut v: Value = r.json().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while v["reply"]["text"]
        .as_str()
        .is_some_and(|t| t.starts_with('⏳'))
    {
        assert!(std::time::Instant::now() < deadline, "no answer: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let id = v["request_id"].as_str().unwrap().to_string();
        let r = app
            .client
            .get(format!("{}/api/requests/{id}", app.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let mut next: Value = r.json().await.unwrap();
            next["request_id"] = json!(id);
            v = next;
        }
    }
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_and_the_backlog_show_what_the_escalation_rows_hold() {
    for db in BOTH {
        let app = TestApp::spawn_with(
            // The test writes the escalation rows itself, as the engine would (the engine is
            // off unless a test asks for it).
            Options::new(db),
        )
        .await;
        let now = Utc::now();
        let (a_start, b_start, c_start, d_start) = (
            now - Duration::hours(3),
            now - Duration::hours(2),
            now - Duration::hours(1),
            now - Duration::minutes(30),
        );
        for w in [
            alert("APIDown", "critical", a_start, None),
            alert("DBDown", "critical", b_start, None),
            alert("SlowPage", "high", c_start, None),
            alert("LogNoise<b>", "info", d_start, None),
        ] {
            let r = app.post_webhook(w.to_string()).await;
            assert_eq!(r.status(), 200, "{db:?}");
        }
        let store = app.store().await;
        let eps = store.episodes_to_start(10).await.unwrap();
        assert_eq!(eps.len(), 4, "{db:?}: {eps:?}");
        let (a, b, c, d) = (
            episode(&eps, "sev1", 0),
            episode(&eps, "sev1", 1),
            episode(&eps, "sev2", 0),
            episode(&eps, "sev4", 0),
        );
        let started = |ep: &EpisodeToStart, chain: &str, state: &str, at: DateTime<Utc>| {
            let store = store.clone();
            let (ep, chain, state) = (ep.clone(), chain.to_string(), state.to_string());
            async move {
                let due = (state == "active").then(|| format_time(at));
                store
                    .start_escalation(&ep, Some(&chain), &state, due.as_deref(), &format_time(at))
                    .await
                    .unwrap()
                    .expect("nobody else started this episode")
            }
        };
        // A: two steps (one page each, both sent), acknowledged after 60 s, resolved after 600 s.
        started(&a, "sev1", "active", a_start).await;
        fire(&store, a.group_id, a_start, false).await;
        fire(&store, a.group_id, a_start + Duration::seconds(30), true).await;
        let ack = store
            .ack_escalation(
                a.group_id,
                "Ana",
                &format_time(a_start + Duration::seconds(60)),
            )
            .await
            .unwrap();
        assert!(ack.is_some(), "{db:?}");
        // B: one step, a page still queued (not sent), acknowledged after 180 s, still firing.
        started(&b, "sev1", "active", b_start).await;
        let row = store.current_escalation(b.group_id).await.unwrap().unwrap();
        let fired = StepFired {
            next_step: 1,
            state: "done".into(),
            pages: vec![page_to("luis")],
            ..Default::default()
        };
        store
            .fire_steps(&[(&row, &fired)], &format_time(b_start))
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        store
            .ack_escalation(
                b.group_id,
                "Luis",
                &format_time(b_start + Duration::seconds(180)),
            )
            .await
            .unwrap();
        // C: nobody answered. D: put in the backlog.
        started(&c, "sev2", "active", c_start).await;
        started(&d, "sev4", "backlog", d_start).await;
        let r = app
            .post_webhook(
                alert(
                    "APIDown",
                    "critical",
                    a_start,
                    Some(a_start + Duration::seconds(600)),
                )
                .to_string(),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            store
                .close_resolved_escalations(&format_time(now))
                .await
                .unwrap(),
            1
        );

        let r = app.get("/api/report?window=1d").await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let sev = |s: &str| {
            v["severities"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["severity"] == s)
                .unwrap()
                .clone()
        };
        let s1 = sev("sev1");
        assert_eq!(
            (
                &s1["count"],
                &s1["acked"],
                &s1["not_acked"],
                &s1["resolved"],
                &s1["unresolved"]
            ),
            (&json!(2), &json!(2), &json!(0), &json!(1), &json!(1)),
            "{db:?}: {s1}"
        );
        assert_eq!(
            s1["time_to_ack"],
            json!({"median_secs": 60, "p90_secs": 180}),
            "{db:?}"
        );
        assert_eq!(
            s1["time_to_resolve"],
            json!({"median_secs": 600, "p90_secs": 600}),
            "{db:?}"
        );
        assert_eq!(s1["pages_sent"], 2, "B's page was never sent: {db:?}");
        assert_eq!(s1["escalated"], 1, "{db:?}");
        let s2 = sev("sev2");
        assert_eq!((&s2["count"], &s2["not_acked"]), (&json!(1), &json!(1)));
        assert_eq!(
            s2["time_to_ack"],
            Value::Null,
            "never acknowledged is not zero"
        );
        assert_eq!(sev("sev4")["count"], 1);
        assert_eq!(sev("sev3")["count"], 0);
        let per_day: u64 = v["per_day"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["count"].as_u64().unwrap())
            .sum();
        assert_eq!(per_day, 4);
        // A window of an hour holds only D (started 30 min ago).
        let v: Value = app.get("/api/report?window=1h").await.json().await.unwrap();
        let counts: Vec<u64> = v["severities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["count"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, [0, 0, 0, 1], "{db:?}");

        // Bad windows: 400, a sentence, nothing echoed as markup.
        for (w, says) in [
            ("91d", "from 1 h to 90 d"),
            ("soon", "not a duration"),
            ("%3Cscript%3E", "not a duration"),
        ] {
            let r = app.get(&format!("/api/report?window={w}")).await;
            assert_eq!(r.status(), 400, "{w}");
            let body = r.text().await.unwrap();
            assert!(
                body.contains(says) && !body.contains("<script>"),
                "{w}: {body}"
            );
            let r = app.get(&format!("/report?window={w}")).await;
            assert_eq!(r.status(), 400, "{w}");
        }

        let r = app.get("/report?window=1d").await;
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        let row = &body[body.find("data-severity=\"sev1\"").unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        for cell in ["<td>2</td>", "1m / 3m", "10m / 10m", "<td>1</td>"] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
        assert!(body.contains("<svg class=\"chart\""), "{body}");
        assert!(!body.contains("style="), "the CSP allows no inline style");
        assert!(body.contains("href=\"/report\""), "the nav links the page");

        // The backlog: D, named, linked, escaped.
        let v: Vec<Value> = app.get("/api/backlog").await.json().await.unwrap();
        assert_eq!(v.len(), 1, "{db:?}: {v:?}");
        assert_eq!(v[0]["group_id"], d.group_id);
        assert_eq!(v[0]["name"], "LogNoise<b>");
        assert_eq!(v[0]["severity"], "sev4");
        assert_eq!(v[0]["since"], format_time(d_start));
        assert_eq!(v[0]["link"], format!("/groups/{}", d.group_id));
        let body = app.get("/backlog").await.text().await.unwrap();
        assert!(
            body.contains(&format!(
                "href=\"/groups/{}\">LogNoise&lt;b&gt;</a>",
                d.group_id
            )),
            "{body}"
        );

        // The commands, as a person with a role asks them.
        let t = runbot::chat::console::tokens::generate();
        let token = runbot::store::ApiTokenRow {
            id: t.id.clone(),
            name: "lead".into(),
            token_hash: t.hash.clone(),
            roles: json!(["devops-lead"]).to_string(),
            created_at: format_time(now),
            revoked_at: None,
        };
        assert!(store.add_api_token(&token).await.unwrap());
        let (status, r) = post(
            &app,
            &t.token,
            json!({"command": "report", "options": {"window": "1d"}}),
        )
        .await;
        assert_eq!(status, 200);
        let text = r["reply"]["text"].as_str().unwrap();
        assert!(text.contains("4 incidents"), "{text}");
        let table = r["reply"]["code_block"].as_str().unwrap();
        let sev1: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(sev1, ["sev1", "2", "1m/3m", "10m/10m", "2", "1"], "{table}");
        assert!(
            table.contains("sev2: 1 never acknowledged, 1 not resolved"),
            "{table}"
        );
        let (_, r) = post(
            &app,
            &t.token,
            json!({"command": "report", "options": {"window": "91d"}}),
        )
        .await;
        assert!(
            r.to_string()
                .contains("window must be from 1 h to 90 d, not 91d"),
            "{r}"
        );
        let (_, r) = post(&app, &t.token, json!({"command": "backlog"})).await;
        let listed = r["reply"]["code_block"].as_str().unwrap_or_default();
        assert!(
            listed.contains("LogNoise<b>") && listed.contains(&format!("#{}", d.group_id)),
            "{r}"
        );

        // D resolves: the backlog is empty.
        let r = app
            .post_webhook(alert("LogNoise<b>", "info", d_start, Some(now)).to_string())
            .await;
        assert_eq!(r.status(), 200);
        store
            .close_resolved_escalations(&format_time(now))
            .await
            .unwrap();
        let v: Vec<Value> = app.get("/api/backlog").await.json().await.unwrap();
        assert!(v.is_empty(), "{v:?}");
        store.close().await;
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_backlog_summary_is_queued_once_per_week() {
    for db in BOTH {
        let app = TestApp::spawn_with(
            // The test writes the escalation rows itself, as the engine would (the engine is
            // off unless a test asks for it).
            Options::new(db),
        )
        .await;
        let start = Utc::now() - Duration::hours(1);
        let r = app
            .post_webhook(alert("LogNoise", "info", start, None).to_string())
            .await;
        assert_eq!(r.status(), 200);
        let store = app
            .store()
            .await
            .with_chat_platforms(vec!["discord".into(), "console".into()]);
        let monday_nine: DateTime<Utc> = "2026-12-07T08:00:00Z".parse().unwrap();
        let tz: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
        use runbot::executors::report::weekly_backlog;
        // Nothing in the backlog: nothing posted, the week not claimed.
        assert!(!weekly_backlog(&store, monday_nine, tz).await.unwrap());
        let ep = store.episodes_to_start(10).await.unwrap().remove(0);
        store
            .start_escalation(&ep, Some("sev4"), "backlog", None, &format_time(start))
            .await
            .unwrap()
            .unwrap();
        // A runbot with no chat platform has nowhere to post, and leaves the week unclaimed.
        let bare = app.store().await;
        assert!(!weekly_backlog(&bare, monday_nine, tz).await.unwrap());
        bare.close().await;
        // Before 09:00 in Madrid: not yet.
        let early = monday_nine - Duration::minutes(1);
        assert!(!weekly_backlog(&store, early, tz).await.unwrap());
        assert!(weekly_backlog(&store, monday_nine, tz).await.unwrap());
        // A second pass (or replica) the same week posts nothing.
        assert!(
            !weekly_backlog(&store, monday_nine + Duration::hours(2), tz)
                .await
                .unwrap()
        );
        let queued = store
            .due_announcements("discord", 10, "0000")
            .await
            .unwrap();
        assert_eq!(queued.len(), 1, "{db:?}: {queued:?}");
        assert!(
            queued[0].text.contains("Weekly backlog: 1 open group")
                && queued[0].text.contains("LogNoise"),
            "{}",
            queued[0].text
        );
        assert_eq!(queued[0].channel_id, None, "the alert channel");
        let feed = store.recent_announcements("console", 10).await.unwrap();
        assert_eq!(feed.len(), 1, "one copy in the console's feed: {feed:?}");
        // The next Monday, again.
        assert!(weekly_backlog(&store, monday_nine + Duration::days(7), tz)
            .await
            .unwrap());
        store.close().await;
        app.stop().await;
    }
}
