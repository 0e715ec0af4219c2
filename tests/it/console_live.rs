//! The console as a chat platform: the live feed (SSE), commands, buttons and prompts through
//! the invocation core with platform `console`, who may act, and what is audited.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;
use common::docker::Project;
use common::{Browser, Db, Options, TestApp, CONSOLE_TOKEN};

const ANA: &str = "correct horse battery";
const LUIS: &str = "another long passphrase";

/// One Server-Sent Events stream, read as it comes.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

/// One event: (id, event, data).
type Event = (i64, String, Value);

impl Stream {
    async fn open(app: &TestApp, last_event_id: Option<i64>) -> Stream {
        let mut req = app
            .client
            .get(format!("{}/api/events", app.url))
            .bearer_auth(CONSOLE_TOKEN);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// A stream a signed-in browser opened.
    fn of(response: reqwest::Response) -> Stream {
        assert_eq!(response.status(), 200);
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), or None after `within`.
    async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (0, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().unwrap();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if event.is_empty() {
                    continue;
                }
                return Some((id, event, serde_json::from_str(&data).unwrap()));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(_) => return None,
                Err(_) => return None,
            }
        }
    }

    /// The next event of kind `kind`, skipping others.
    async fn next_of(&mut self, kind: &str, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.next(left).await?;
            if e.1 == kind {
                return Some(e);
            }
        }
    }
}

fn sev1(group: &str, fingerprint: &str) -> Value {
    common::webhook(
        group,
        "firing",
        &[(
            fingerprint,
            "firing",
            json!({"severity": "critical", "service": "backend"}),
        )],
    )
}

#[tokio::test]
async fn a_hundred_streams_get_each_card_and_a_dropped_stream_resumes_without_loss() {
    for db in common::BOTH {
        let app = TestApp::spawn(db).await;
        let mut streams = Vec::new();
        for _ in 0..100 {
            let mut s = Stream::open(&app, None).await;
            let (_, kind, _) = s.next(Duration::from_secs(5)).await.unwrap();
            assert_eq!(kind, "hello");
            streams.push(s);
        }
        assert_eq!(
            app.post_webhook(sev1("APIDown", "a000000000000001").to_string())
                .await
                .status(),
            200
        );
        let group = app.groups().await[0]["id"].as_i64().unwrap();
        let mut last = 0;
        for (i, s) in streams.iter_mut().enumerate() {
            let (id, _, data) = s
                .next_of("card", Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("{db:?}: stream {i} got no card"));
            assert_eq!(data["group_id"], group);
            assert!(data["html"].as_str().unwrap().contains("APIDown"));
            last = id;
        }
        drop(streams);

        // A page that dropped its stream after `last` comes back with Last-Event-ID: it gets
        // what happened while it was away, in order, and nothing twice.
        for n in 2..=4 {
            let body = sev1(&format!("Away{n}"), &format!("a00000000000000{n}"));
            assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
        }
        let expected: Vec<String> = (2..=4).map(|n| format!("Away{n}")).collect();
        // The outbox delivers them in its own time: wait until all three are in the feed.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen: Vec<String>;
        loop {
            let mut back = Stream::open(&app, Some(last)).await;
            assert_eq!(back.next(Duration::from_secs(5)).await.unwrap().1, "hello");
            seen = Vec::new();
            while let Some((_, _, data)) = back.next_of("card", Duration::from_millis(500)).await {
                let html = data["html"].as_str().unwrap().to_string();
                seen.push(
                    expected
                        .iter()
                        .find(|e| html.contains(e.as_str()))
                        .cloned()
                        .unwrap_or(html),
                );
            }
            if seen.len() >= 3 || Instant::now() > deadline {
                break;
            }
        }
        assert_eq!(seen, expected, "{db:?}: resumed stream");
        app.stop().await;
    }
}

pub(crate) async fn command(b: &Browser, csrf: &str, body: Value) -> (u16, Value) {
    let r = b
        .send(
            b.client
                .post(format!("{}/api/commands", b.url))
                .header("x-csrf-token", csrf)
                .json(&body),
        )
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

pub(crate) async fn press(b: &Browser, csrf: &str, prompt: &str, verb: &str) -> Value {
    let r = b
        .send(
            b.client
                .post(format!("{}/api/prompts/{prompt}/{verb}", b.url))
                .header("x-csrf-token", csrf),
        )
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

pub(crate) fn prompt_of(answer: &Value, verb: &str) -> String {
    answer["reply"]["buttons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["verb"] == verb)
        .unwrap_or_else(|| panic!("no {verb} button in {answer}"))["prompt"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Polls the answer to `request` until it says `want`.
pub(crate) async fn result(b: &Browser, request: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = b.get(&format!("/api/requests/{request}")).await;
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            if v["reply"]["text"].as_str().unwrap_or("").contains(want) {
                return v;
            }
            assert!(Instant::now() < deadline, "no {want:?} in {v}");
        } else {
            assert!(Instant::now() < deadline, "no answer to {request}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn audit(app: &TestApp) -> Vec<(String, String, String)> {
    let store = app.store().await;
    let rows = runbot::audit::Audit::new(store.clone())
        .recent(1000, &Default::default())
        .await
        .unwrap();
    store.close().await;
    rows.into_iter()
        .rev()
        .filter(|r| r.actor_platform == runbot::request::Platform::Console && r.command != "login")
        .map(|r| (r.actor_id, r.command, r.step.as_str().to_string()))
        .collect()
}

#[tokio::test]
async fn a_restart_from_the_console_is_confirmed_approved_by_a_second_person_and_audited() {
    let p = Project::with_healthy_backend().await;
    let app = TestApp::spawn_with(p.options(Db::Sqlite)).await;
    app.add_account("ana", ANA, &["devops-lead"]).await;
    app.add_account("luis", LUIS, &["devops-lead"]).await;
    let ana = app.sign_in("ana", ANA).await;
    let ana_csrf = ana.csrf().await;

    // Without the anti-forgery token nothing runs and nothing is recorded.
    let r = ana
        .send(
            ana.client
                .post(format!("{}/api/commands", ana.url))
                .json(&json!({"command": "/restart backend"})),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        audit(&app).await,
        vec![("ana".into(), "request".into(), "denied".into())],
        "only the refusal is recorded"
    );

    // A typed line, with no group open: Confirm/Cancel to the requester only.
    let (status, asked) = command(&ana, &ana_csrf, json!({"command": "/restart backend"})).await;
    assert_eq!(status, 200, "{asked}");
    assert_eq!(asked["answer"], "message");
    assert_eq!(asked["reply"]["ephemeral"], true, "{asked}");
    let pending = prompt_of(&asked, "confirm");
    let confirmed = press(&ana, &ana_csrf, &pending, "confirm").await;
    let request = confirmed["request_id"].as_str().unwrap().to_string();
    assert_eq!(
        request,
        asked["request_id"].as_str().unwrap(),
        "the answer replaces the prompt"
    );
    let done = result(&ana, &request, "restarted **backend**").await;
    assert!(done["html"].as_str().unwrap().contains("restarted"));

    // With a Sev1 open on backend, a second person must approve: everyone signed in sees the
    // prompt in the feed, and another devops-lead approves it.
    assert_eq!(
        app.post_webhook(sev1("APIDown", "b000000000000001").to_string())
            .await
            .status(),
        200
    );
    let mut feed = Stream::open(&app, None).await;
    let (status, asked) = command(
        &ana,
        &ana_csrf,
        json!({"command": "restart", "options": {"service": "backend"}}),
    )
    .await;
    assert_eq!(status, 200, "{asked}");
    let approve = prompt_of(&asked, "approve");
    assert_eq!(
        asked["reply"]["ephemeral"], false,
        "an approval is for everyone: {asked}"
    );
    // The feed shows the approval prompt to everyone (here: a console.token reader).
    let mut shown = false;
    while let Some((_, _, data)) = feed.next_of("reply", Duration::from_secs(5)).await {
        if data["reply"]["buttons"].to_string().contains("approve") {
            shown = true;
            break;
        }
    }
    assert!(shown, "the approval prompt reached the feed");
    // The requester cannot approve their own request.
    let own = press(&ana, &ana_csrf, &approve, "approve").await;
    assert!(
        own["reply"]["text"].as_str().unwrap().starts_with('🚫'),
        "{own}"
    );
    let luis = app.sign_in("luis", LUIS).await;
    let luis_csrf = luis.csrf().await;
    let approved = press(&luis, &luis_csrf, &approve, "approve").await;
    let request = approved["request_id"].as_str().unwrap().to_string();
    result(&luis, &request, "restarted **backend**").await;

    let rows = audit(&app).await;
    let steps: Vec<String> = rows
        .iter()
        .filter(|(_, c, _)| c == "restart")
        .map(|(who, _, step)| format!("{who}:{step}"))
        .collect();
    for want in [
        "ana:requested",
        "ana:confirmed",
        "ana:succeeded",
        "luis:approved",
    ] {
        assert!(steps.iter().any(|s| s == want), "{want} in {steps:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_api_token_acts_with_its_roles_and_console_token_acts_as_nobody() {
    let app = TestApp::spawn_with(Options::new(Db::Sqlite)).await;
    let store = app.store().await;
    let mut tokens = Vec::new();
    for (name, role) in [("reader", "viewer"), ("lead", "devops-lead")] {
        let t = runbot::chat::console::tokens::generate();
        let row = runbot::store::ApiTokenRow {
            id: t.id.clone(),
            name: name.into(),
            token_hash: t.hash.clone(),
            roles: json!([role]).to_string(),
            created_at: runbot::domain::format_time(chrono::Utc::now()),
            revoked_at: None,
        };
        assert!(store.add_api_token(&row).await.unwrap());
        tokens.push(t.token);
    }
    store.close().await;
    let post = |token: String, body: Value| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(format!("{}/api/commands", app.url))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // A viewer may not restart: refused by policy with its reason, audited, nothing run.
    let (status, refused) = post(
        tokens[0].clone(),
        json!({"command": "restart", "options": {"service": "backend"}}),
    )
    .await;
    assert_eq!(status, 200);
    let text = refused["reply"]["text"].as_str().unwrap();
    assert!(
        text.starts_with('🚫') && text.contains("/restart"),
        "{text}"
    );
    assert_eq!(refused["refused"], true);
    // A read command answers at once, as Discord's first answer would.
    let (status, oncall) = post(tokens[1].clone(), json!({"command": "oncall"})).await;
    assert_eq!(status, 200);
    assert_eq!(oncall["refused"], false, "{oncall}");
    // Bad input: an unknown option, a bad line, a wrong JSON shape.
    let (status, _) = post(
        tokens[1].clone(),
        json!({"command": "/logs service:\"backend"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(tokens[1].clone(), json!({"command": 1})).await;
    assert_eq!(status, 400);
    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, too_big) = post(tokens[1].clone(), json!({"command": huge})).await;
    assert_eq!(status, 413, "{too_big}");
    let (_, unknown) = post(tokens[1].clone(), json!({"command": "/reboot-everything"})).await;
    assert!(
        unknown["reply"]["text"]
            .as_str()
            .unwrap()
            .contains("no command"),
        "{unknown}"
    );
    // console.token reads but acts as nobody.
    let r = app
        .client
        .post(format!("{}/api/commands", app.url))
        .bearer_auth(CONSOLE_TOKEN)
        .json(&json!({"command": "oncall"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Every console answer says: only runbot's own script and styles, no framing, no caching.
    let page = app.get("/").await;
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let rows = audit(&app).await;
    assert!(
        rows.contains(&("token:reader".into(), "restart".into(), "denied".into())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&("token:lead".into(), "oncall".into(), "succeeded".into())),
        "{rows:?}"
    );
    // A line that does not parse is refused like any invalid request: audited.
    assert!(
        rows.contains(&("token:lead".into(), "logs".into(), "invalid".into())),
        "{rows:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_file_an_answer_carries_downloads_for_its_requester_only() {
    let app = TestApp::spawn(Db::Sqlite).await;
    app.add_account("ana", ANA, &["devops-lead"]).await;
    app.add_account("luis", LUIS, &["devops-lead"]).await;
    // An answer with a file, as the core hands one to the console (a long /logs).
    let store = app.store().await;
    let console = runbot::chat::console::platform::ConsolePlatform::new(
        runbot::chat::console::events::Feed::new(store.clone())
            .await
            .unwrap(),
    );
    let reply = runbot::request::Reply {
        text: "the last 5 of 5000 lines; the whole log is attached".into(),
        ephemeral: true,
        attachment: Some(runbot::request::Attachment {
            filename: "logs-backend-20261207-030000.txt\r\nx: y".into(),
            content: b"line 1\nline 2\n".to_vec(),
        }),
        ..Default::default()
    };
    let shown = console.answer("req-1", "ana", &reply).await.unwrap();
    store.close().await;
    let url = shown["reply"]["attachment"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        shown["reply"]["attachment"]["filename"], "logs-backend-20261207-030000.txtxy",
        "a file name is kept plain: it becomes a header"
    );
    let ana = app.sign_in("ana", ANA).await;
    let r = ana.get(&url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"logs-backend-20261207-030000.txtxy\""
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"line 1\nline 2\n");
    // Someone else, or nobody, gets nothing.
    let luis = app.sign_in("luis", LUIS).await;
    assert_eq!(luis.get(&url).await.status(), 404);
    assert_eq!(
        app.get(&url).await.status(),
        404,
        "console.token names nobody"
    );
    assert_eq!(app.browser().get(&url).await.status(), 401);
    // The answer itself is ana's alone too.
    assert_eq!(ana.get("/api/requests/req-1").await.status(), 200);
    assert_eq!(luis.get("/api/requests/req-1").await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn an_approval_asked_on_the_console_shows_in_discords_channel_with_its_buttons() {
    use common::{BOT_TOKEN, CHANNEL};
    let fake = fake_discord::FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let app = TestApp::spawn_with(
        Options::new(Db::Sqlite)
            .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
            .set("RUNBOT__DISCORD__API_BASE", &fake.base_url())
            .set("RUNBOT__DISCORD__ALERT_CHANNEL_ID", &CHANNEL.to_string()),
    )
    .await;
    app.add_account("ana", ANA, &["devops-lead"]).await;
    let ana = app.sign_in("ana", ANA).await;
    let csrf = ana.csrf().await;
    // A restore needs a dba's approval.
    let (status, asked) = command(
        &ana,
        &csrf,
        json!({"command": "/restore backup_20261127_031500.sql.gz"}),
    )
    .await;
    assert_eq!(status, 200, "{asked}");
    let approve = prompt_of(&asked, "approve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let found = fake
            .messages_in(CHANNEL)
            .into_iter()
            .find(|m| m.custom_ids().iter().any(|id| id.contains(&approve)));
        if let Some(m) = found {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no approval in Discord's channel: {:?}",
            fake.messages()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        shown.content().contains("asks to run"),
        "{}",
        shown.content()
    );
    app.stop().await;
}

#[tokio::test]
async fn announcements_from_any_platform_reach_the_consoles_activity_feed() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let mut feed = Stream::open(&app, None).await;
    // A deploy started from Discord announces in Discord's channel, and on the console too.
    let store = app
        .store()
        .await
        .with_chat_platforms(vec!["console".into(), "discord".into()]);
    let now = runbot::domain::format_time(chrono::Utc::now());
    store
        .announce(
            "discord",
            Some("111111111111111111"),
            "🚀 **ana** started deploying **v2** <b>",
            &now,
        )
        .await
        .unwrap();
    store.close().await;
    let (_, _, data) = feed
        .next_of("announcement", Duration::from_secs(10))
        .await
        .expect("the announcement reaches the console");
    assert_eq!(data["text"], "🚀 **ana** started deploying **v2** <b>");
    assert!(
        data["html"].as_str().unwrap().contains("&lt;b&gt;"),
        "{data}"
    );
    // The front page lists it in the activity feed.
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains("started deploying"), "{page}");
    // A page still following the feed does not hold a shutdown for http.shutdown_timeout_secs:
    // its stream ends, and the page would resume elsewhere.
    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert!(
        feed.next(Duration::from_secs(2)).await.is_none(),
        "the stream ended"
    );
}

#[tokio::test]
async fn a_burst_of_sign_ins_sent_at_once_gets_no_more_guesses_than_the_throttle_allows() {
    let app = TestApp::spawn(Db::Sqlite).await;
    app.add_account("ana", ANA, &["devops-lead"]).await;
    let page = app.browser();
    let form = page.get("/login").await.text().await.unwrap();
    let token = common::hidden_field(&form, "csrf_token").unwrap();
    let cookie = page.cookie("runbot_login").unwrap();
    let attempts = (0..20).map(|i| {
        let client = app.client.clone();
        let (url, token, cookie) = (format!("{}/login", app.url), token.clone(), cookie.clone());
        async move {
            client
                .post(url)
                .header("cookie", format!("runbot_login={cookie}"))
                .form(&[
                    ("username", "ana"),
                    ("password", &format!("wrong guess number {i}")),
                    ("csrf_token", &token),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (5, 15), "{statuses:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_live_stream_ends_with_its_session_or_its_token() {
    let app = TestApp::spawn_with(
        Options::new(Db::Sqlite).set("RUNBOT__CONSOLE__STREAM_RECHECK_SECS", "1"),
    )
    .await;
    app.add_account("ana", ANA, &["devops-lead"]).await;
    let ana = app.sign_in("ana", ANA).await;
    let csrf = ana.csrf().await;
    let session = ana.cookie("runbot_session").unwrap();
    let open = |auth: (&'static str, String)| {
        let app = &app;
        async move {
            let r = app
                .client
                .get(format!("{}/api/events", app.url))
                .header(auth.0, auth.1)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            Stream {
                response: r,
                buffer: String::new(),
            }
        }
    };
    let mut stream = open(("cookie", format!("runbot_session={session}"))).await;
    assert_eq!(
        stream.next(Duration::from_secs(5)).await.unwrap().1,
        "hello"
    );
    // Still live after a few checks…
    assert!(stream
        .next_of("signed-out", Duration::from_millis(2500))
        .await
        .is_none());
    // …until the session ends elsewhere.
    let r = ana
        .post_form("/logout", &[("csrf_token", csrf.as_str())])
        .await;
    assert_eq!(r.status(), 303);
    assert!(stream
        .next_of("signed-out", Duration::from_secs(5))
        .await
        .is_some());
    assert!(
        stream.next(Duration::from_secs(2)).await.is_none(),
        "and the stream ended"
    );

    // The same for an API token once revoked.
    let t = runbot::chat::console::tokens::generate();
    let store = app.store().await;
    let now = runbot::domain::format_time(chrono::Utc::now());
    assert!(store
        .add_api_token(&runbot::store::ApiTokenRow {
            id: t.id.clone(),
            name: "ci".into(),
            token_hash: t.hash.clone(),
            roles: "[]".into(),
            created_at: now.clone(),
            revoked_at: None,
        })
        .await
        .unwrap());
    let mut stream = open(("authorization", format!("Bearer {}", t.token))).await;
    assert_eq!(
        stream.next(Duration::from_secs(5)).await.unwrap().1,
        "hello"
    );
    assert!(store.revoke_api_token("ci", &now).await.unwrap());
    store.close().await;
    assert!(stream
        .next_of("signed-out", Duration::from_secs(5))
        .await
        .is_some());
    app.stop().await;
}

#[tokio::test]
async fn signing_in_ends_the_session_the_browser_held_before() {
    let app = TestApp::spawn(Db::Sqlite).await;
    app.add_account("ana", ANA, &["devops-lead"]).await;
    let b = app.sign_in("ana", ANA).await;
    let before = b.cookie("runbot_session").unwrap();
    let r = b.sign_in("ana", ANA).await;
    assert_eq!(r.status(), 303);
    let after = b.cookie("runbot_session").unwrap();
    assert_ne!(before, after);
    let old = app.browser();
    old.set_cookie("runbot_session", &before);
    assert_eq!(
        old.get("/api/alert-groups").await.status(),
        401,
        "the old session ended"
    );
    assert_eq!(b.get("/api/alert-groups").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_card_of_a_big_group_counts_every_alert_but_is_built_from_a_cards_worth() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let mut feed = Stream::open(&app, None).await;
    let alerts: Vec<(String, &str, Value)> = (0..150)
        .map(|i| {
            (
                format!("c{i:015x}"),
                "firing",
                json!({"severity": "warning", "instance": format!("host-{i}")}),
            )
        })
        .collect();
    let alerts: Vec<(&str, &str, Value)> = alerts
        .iter()
        .map(|(f, s, l)| (f.as_str(), *s, l.clone()))
        .collect();
    let body = common::webhook("Crowded", "firing", &alerts);
    assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    let (_, _, card) = feed
        .next_of("card", Duration::from_secs(10))
        .await
        .expect("the card");
    let html = card["html"].as_str().unwrap();
    assert!(html.contains("Alerts: 150 firing, 0 resolved"), "{html}");
    assert!(html.contains("100 more on the group"), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn a_page_resuming_from_before_what_is_kept_is_told_to_reload() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let store = app.store().await;
    let old = runbot::domain::format_time(chrono::Utc::now() - chrono::Duration::hours(3));
    let now = runbot::domain::format_time(chrono::Utc::now());
    let mut ids = Vec::new();
    for at in [&old, &old, &now, &old, &now] {
        ids.push(
            store
                .add_console_event(&runbot::store::NewConsoleEvent {
                    at,
                    kind: "announcement",
                    group_id: None,
                    audience: None,
                    reference: None,
                    prompt: None,
                    data: r#"{"text":"x","html":"<li>x</li>"}"#,
                })
                .await
                .unwrap(),
        );
    }
    // Pruned by id up to the last old entry: nothing below the oldest kept is left (the
    // recent third entry goes too, being below it).
    let hour_ago = runbot::domain::format_time(chrono::Utc::now() - chrono::Duration::hours(1));
    assert_eq!(store.prune_console(&hour_ago, &hour_ago).await.unwrap(), 4);
    store.close().await;
    let mut s = Stream::open(&app, Some(ids[0])).await;
    assert_eq!(s.next(Duration::from_secs(5)).await.unwrap().1, "hello");
    assert_eq!(
        s.next(Duration::from_secs(5)).await.unwrap().1,
        "resync",
        "what it missed is gone: it reloads"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_page_on_one_replica_sees_what_another_delivered_and_survives_a_restart() {
    let first = TestApp::spawn(Db::Postgres).await;
    let mut opts = Options::new(Db::Postgres);
    opts.database_url = Some(first.database_url.clone());
    let second = TestApp::spawn_with(opts).await;
    // A page on the second replica; the webhook reaches the first.
    let mut feed = Stream::open(&second, None).await;
    assert_eq!(feed.next(Duration::from_secs(5)).await.unwrap().1, "hello");
    let body = sev1("Elsewhere", "d000000000000001");
    assert_eq!(first.post_webhook(body.to_string()).await.status(), 200);
    let (seen, _, card) = feed
        .next_of("card", Duration::from_secs(10))
        .await
        .expect("the card reaches a page on the other replica");
    assert!(card["html"].as_str().unwrap().contains("Elsewhere"));
    // The page's replica restarts; the page comes back to the other one and resumes after
    // what it saw, missing nothing delivered in between.
    drop(feed);
    second.stop().await;
    let body = sev1("Meanwhile", "d000000000000002");
    assert_eq!(first.post_webhook(body.to_string()).await.status(), 200);
    let mut back = Stream::open(&first, Some(seen)).await;
    assert_eq!(back.next(Duration::from_secs(5)).await.unwrap().1, "hello");
    let (_, _, card) = back
        .next_of("card", Duration::from_secs(10))
        .await
        .expect("what came while the page was away");
    assert!(
        card["html"].as_str().unwrap().contains("Meanwhile"),
        "{card}"
    );
    first.stop().await;
}

/// A signed-in browser's live stream, from after `after` when given.
async fn open_as(b: &Browser, after: Option<i64>) -> reqwest::Response {
    let mut req = b.client.get(format!("{}/api/events", b.url));
    if let Some(id) = after {
        req = req.header("last-event-id", id.to_string());
    }
    b.send(req).await
}

/// A page for one account reaches that account's stream, live and on resume, and nobody
/// else's; a page sent again is not shown twice; an unknown account is refused.
#[tokio::test]
async fn a_console_page_reaches_its_account_alone() {
    use runbot::request::page::{Page, PageError, Pager};
    let app = TestApp::spawn(Db::Sqlite).await;
    app.add_account("ana", ANA, &["devops-lead"]).await;
    app.add_account("luis", LUIS, &["devops-lead"]).await;
    let ana = app.sign_in("ana", ANA).await;
    let luis = app.sign_in("luis", LUIS).await;
    let wait = Duration::from_secs(5);
    let mut ana_live = Stream::of(open_as(&ana, None).await);
    let mut luis_live = Stream::of(open_as(&luis, None).await);
    let start = ana_live.next(wait).await.unwrap();
    assert_eq!(start.1, "hello");
    assert_eq!(luis_live.next(wait).await.unwrap().1, "hello");

    let store = app.store().await;
    let feed = runbot::chat::console::events::Feed::new(store.clone())
        .await
        .unwrap();
    let pager = runbot::chat::console::page::ConsolePager::new(feed.clone());
    assert_eq!(pager.via(), "console");
    let page = Page {
        id: 41,
        group_id: Some(7),
        severity: Some("sev1".into()),
        title: "Sev1 · APIDown: API down".into(),
        summary: "The API is down".into(),
        person: "Ana".into(),
        role: Some("devops-lead".into()),
        reason: "step 1 of sev1 <b>".into(),
        url: None,
    };
    pager.send("ana", &page).await.unwrap();
    // A retry of the same page: shown once.
    pager.send("ana", &page).await.unwrap();
    for bad in ["nobody", "a b", "", "token:ana"] {
        let e = pager.send(bad, &page).await.unwrap_err();
        assert!(matches!(e, PageError::Permanent(_)), "{bad:?}: {e:?}");
    }
    let news = json!({"text": "after the page", "html": "<li>after the page</li>"});
    feed.publish(runbot::chat::console::events::Publish::for_everyone(
        runbot::chat::console::events::Kind::Announcement,
        None,
        &news,
    ))
    .await
    .unwrap();

    let (_, kind, data) = ana_live.next(wait).await.unwrap();
    assert_eq!(kind, "page");
    assert_eq!(data["title"], "Sev1 · APIDown: API down");
    assert_eq!(data["summary"], "The API is down");
    assert_eq!(data["reason"], "step 1 of sev1 <b>");
    assert_eq!(data["url"], "/groups/7");
    let html = data["html"].as_str().unwrap();
    assert!(
        html.contains("&lt;b&gt;") && html.contains("href=\"/groups/7\""),
        "{html}"
    );
    assert_eq!(
        ana_live.next(wait).await.unwrap().1,
        "announcement",
        "one page, not two"
    );
    // Luis's stream goes on to the announcement: the page was never his.
    assert_eq!(luis_live.next(wait).await.unwrap().1, "announcement");

    // Resuming from before the page: the same for each.
    let mut ana_again = Stream::of(open_as(&ana, Some(start.0)).await);
    let mut luis_again = Stream::of(open_as(&luis, Some(start.0)).await);
    assert_eq!(ana_again.next(wait).await.unwrap().1, "hello");
    assert_eq!(ana_again.next(wait).await.unwrap().1, "page");
    assert_eq!(luis_again.next(wait).await.unwrap().1, "hello");
    assert_eq!(luis_again.next(wait).await.unwrap().1, "announcement");
    // console.token names nobody: no page either.
    let mut token = Stream::open(&app, Some(start.0)).await;
    assert_eq!(token.next(wait).await.unwrap().1, "hello");
    assert_eq!(token.next(wait).await.unwrap().1, "announcement");
    // Nor can anyone else read it as an answer.
    assert_eq!(ana.get("/api/requests/page-41").await.status(), 200);
    assert_eq!(luis.get("/api/requests/page-41").await.status(), 404);
    store.close().await;
    app.stop().await;
}
