//! Signing in to the console: sessions, anti-forgery tokens, the throttle, the setup link, and
//! the gate in front of every console route.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use common::{hidden_field, Browser, Db, Options, TestApp};

const ANA_PASSWORD: &str = "correct horse battery";
const BOB_PASSWORD: &str = "another long passphrase";

/// The audit rows of the console's sign-ins and account changes, oldest first:
/// (command, step, actor, reason).
async fn console_audit(app: &TestApp) -> Vec<(String, String, String, Option<String>)> {
    let store = app.store().await;
    let rows = runbot::audit::Audit::new(store.clone())
        .recent(1000, &Default::default())
        .await
        .unwrap();
    store.close().await;
    rows.into_iter()
        .rev()
        .filter(|r| r.actor_platform == runbot::request::Platform::Console)
        .map(|r| (r.command, r.step.as_str().to_string(), r.actor_id, r.reason))
        .collect()
}

/// A session row's columns, by the hash of its cookie.
async fn session_row(app: &TestApp, cookie: &str) -> Option<runbot::store::SessionRow> {
    let store = app.store().await;
    let row = store
        .session(&runbot::chat::console::sessions::hash(cookie))
        .await
        .unwrap();
    store.close().await;
    row
}

/// Runs SQL against the app's database (to age a session).
async fn sql(app: &TestApp, statement: &str) {
    sqlx::any::install_default_drivers();
    let url = if app.database_url.starts_with("sqlite") {
        format!("{}?mode=rw", app.database_url)
    } else {
        app.database_url.clone()
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query(statement).execute(&pool).await.unwrap();
    pool.close().await;
}

fn hours_ago(h: i64) -> String {
    runbot::domain::format_time(chrono::Utc::now() - chrono::Duration::hours(h))
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Sign in, use the console, sign out; the cookie is what the issue asks for, the database
/// keeps only its hash, and the cookie is worth nothing after sign-out.
#[tokio::test]
async fn signing_in_opens_the_console_and_signing_out_closes_it() {
    for db in common::BOTH {
        let app = TestApp::spawn(db).await;
        app.add_account("ana", ANA_PASSWORD, &["devops-lead"]).await;
        let b = app.browser();

        let r = b.get("/").await;
        assert_eq!((r.status().as_u16(), location(&r)), (303, "/login".into()));
        let r = b.get("/groups/7?x=1").await;
        assert_eq!(location(&r), "/login?next=%2Fgroups%2F7%3Fx%3D1");

        let form = b.get("/login?next=%2Fgroups%2F7").await;
        assert_eq!(form.status(), 200);
        let set: Vec<String> = form
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(
            set.iter().any(|c| c.starts_with("runbot_login=")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Strict")),
            "{set:?}"
        );
        let page = form.text().await.unwrap();
        for field in [
            "name=\"username\"",
            "name=\"password\"",
            "name=\"csrf_token\"",
        ] {
            assert!(page.contains(field), "{field}: {page}");
        }
        let token = hidden_field(&page, "csrf_token").unwrap();
        assert_eq!(Some(token.clone()), b.cookie("runbot_login"));
        assert_eq!(hidden_field(&page, "next").as_deref(), Some("/groups/7"));

        let r = b
            .post_form(
                "/login",
                &[
                    ("username", "ana"),
                    ("password", ANA_PASSWORD),
                    ("csrf_token", &token),
                    ("next", "/groups/7"),
                ],
            )
            .await;
        assert_eq!(r.status(), 303, "{db:?}");
        assert_eq!(location(&r), "/groups/7", "back where the person was going");
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|c| c.starts_with("runbot_session="))
            .unwrap()
            .to_string();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "{cookie}");
        }
        assert!(
            !cookie.contains("Secure"),
            "console.insecure_cookies is set in tests"
        );
        let value = b.cookie("runbot_session").unwrap();
        assert_eq!(value.len(), 64);
        let row = session_row(&app, &value)
            .await
            .expect("the session is stored");
        assert_eq!(row.account, "ana");
        assert_ne!(row.id_hash, value, "only the hash is kept");

        let home = b.get("/").await;
        assert_eq!(home.status(), 200);
        let html = home.text().await.unwrap();
        assert!(html.contains("<span id=\"me\">ana</span>"), "{html}");
        let csrf = b.csrf().await;
        assert_eq!(csrf, row.csrf);
        assert_eq!(b.get("/api/alert-groups").await.status(), 200);

        let r = b.post_form("/logout", &[("csrf_token", &csrf)]).await;
        assert_eq!((r.status().as_u16(), location(&r)), (303, "/login".into()));
        assert_eq!(b.cookie("runbot_session"), None, "the cookie is cleared");
        assert!(session_row(&app, &value).await.unwrap().ended_at.is_some());

        // The old cookie, kept by someone who copied it, opens nothing.
        let thief = Browser::new(&app.url);
        thief.set_cookie("runbot_session", &value);
        assert_eq!(thief.get("/").await.status(), 303);
        assert_eq!(thief.get("/api/alert-groups").await.status(), 401);

        // An absolute `next` is never followed.
        let b2 = app.browser();
        let page = b2.get("/login").await.text().await.unwrap();
        let token = hidden_field(&page, "csrf_token").unwrap();
        let r = b2
            .post_form(
                "/login",
                &[
                    ("username", "ana"),
                    ("password", ANA_PASSWORD),
                    ("csrf_token", &token),
                    ("next", "//evil.example/"),
                ],
            )
            .await;
        assert_eq!(location(&r), "/");

        let audit = console_audit(&app).await;
        let steps: Vec<(&str, &str)> = audit
            .iter()
            .map(|(c, s, _, _)| (c.as_str(), s.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("login", "succeeded"),
                ("logout", "succeeded"),
                ("login", "succeeded")
            ]
        );
        app.stop().await;
    }
}

/// Secure cookies by default: a browser never sends them over plain HTTP to anyone else.
#[tokio::test]
async fn cookies_are_secure_unless_told_otherwise() {
    let mut opts = Options::new(Db::Sqlite);
    opts.env
        .push(("RUNBOT__CONSOLE__INSECURE_COOKIES".into(), "false".into()));
    let app = TestApp::spawn_with(opts).await;
    app.add_account("ana", ANA_PASSWORD, &[]).await;
    let b = app.browser();
    let r = b.sign_in("ana", ANA_PASSWORD).await;
    assert_eq!(r.status(), 303);
    let cookies: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("runbot_session=") && c.ends_with("; Secure")),
        "{cookies:?}"
    );
}

/// A wrong password, an unknown name and a disabled account get the same answer; five
/// failures in a minute lock the name and the address (429 with Retry-After), even for the
/// right password; the lock is audited once however long the flood, and each failure is.
#[tokio::test]
async fn failed_sign_ins_look_alike_and_the_sixth_is_locked_out() {
    for db in common::BOTH {
        let app = TestApp::spawn(db).await;
        app.add_account("ana", ANA_PASSWORD, &[]).await;
        app.add_account("bob", BOB_PASSWORD, &[]).await;
        let store = app.store().await;
        store
            .disable_account("bob", "2026-01-01T00:00:00Z")
            .await
            .unwrap();
        store.close().await;
        let b = app.browser();
        let mut bodies = BTreeSet::new();
        for (name, password) in [
            ("nobody", ANA_PASSWORD),
            ("bob", BOB_PASSWORD),
            ("ana", "wrong password here"),
        ] {
            let started = Instant::now();
            let r = b.sign_in(name, password).await;
            assert_eq!(r.status(), 401, "{db:?} {name}");
            let body = r.text().await.unwrap();
            assert!(body.contains("wrong user name or password"), "{body}");
            bodies.insert(body);
            // Every attempt costs an Argon2 check, existing account or not.
            assert!(started.elapsed() > Duration::from_millis(5));
        }
        assert_eq!(bodies.len(), 1, "one answer for every failure");
        assert_eq!(b.cookie("runbot_session"), None);
        for _ in 0..2 {
            assert_eq!(b.sign_in("ana", "still the wrong one").await.status(), 401);
        }
        // The sixth: locked, and so is the right password, and any name from this address.
        for (name, password) in [
            ("ana", "still the wrong one"),
            ("ana", ANA_PASSWORD),
            ("carol", "whatever it may be"),
            ("ana", ANA_PASSWORD),
        ] {
            let r = b.sign_in(name, password).await;
            assert_eq!(r.status(), 429, "{db:?} {name}");
            let wait: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
            assert!(r.text().await.unwrap().contains("too many failed sign-ins"));
        }
        assert_eq!(b.cookie("runbot_session"), None, "no session while locked");

        let audit = console_audit(&app).await;
        let failed: Vec<(&str, Option<&str>)> = audit
            .iter()
            .filter(|(c, s, _, _)| c == "login" && s == "failed")
            .map(|(_, _, actor, reason)| (actor.as_str(), reason.as_deref()))
            .collect();
        assert_eq!(
            failed,
            [
                ("nobody", Some("no such account")),
                ("bob", Some("the account is disabled")),
                ("ana", Some("wrong password")),
                ("ana", Some("wrong password")),
                ("ana", Some("wrong password")),
            ]
        );
        let locked = audit
            .iter()
            .filter(|(c, s, _, _)| c == "login" && s == "rate_limited")
            .count();
        assert_eq!(locked, 1, "a locked-out flood is audited once: {audit:?}");
        // The rest are counted, under a label from a fixed set (the recorder is the process's:
        // other tests may add to it, never take away).
        let page = app.get("/metrics").await.text().await.unwrap();
        let counted: f64 = page
            .lines()
            .find(|l| l.starts_with("runbot_console_signins_total{outcome=\"locked\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        assert!(counted >= 4.0, "{page}");
        assert!(!audit.iter().any(|(_, s, _, _)| s == "succeeded"));
        // The attempted password is nowhere in the trail.
        let store = app.store().await;
        for r in runbot::audit::Audit::new(store.clone())
            .recent(100, &Default::default())
            .await
            .unwrap()
        {
            let text = serde_json::to_string(&r).unwrap();
            assert!(!text.contains("still the wrong one") && !text.contains(ANA_PASSWORD));
        }
        store.close().await;
        app.stop().await;
    }
}

/// Every change made with a session carries its anti-forgery token; without it (or with
/// another) the answer is 403 and nothing happens. The sign-in form has its own.
#[tokio::test]
async fn changes_without_the_anti_forgery_token_are_refused() {
    let app = TestApp::spawn(Db::Sqlite).await;
    app.add_account("ana", ANA_PASSWORD, &[]).await;
    let b = app.sign_in("ana", ANA_PASSWORD).await;
    let value = b.cookie("runbot_session").unwrap();
    let csrf = b.csrf().await;
    let forged = "0".repeat(64);
    let url = format!("{}/logout", app.url);
    for (what, req) in [
        ("no token", b.client.post(&url)),
        ("an empty form", b.client.post(&url).form(&[("x", "1")])),
        (
            "a forged form field",
            b.client.post(&url).form(&[("csrf_token", forged.as_str())]),
        ),
        (
            "a forged header",
            b.client.post(&url).header("x-csrf-token", &forged),
        ),
        (
            "a forged header beside the right field",
            b.client
                .post(&url)
                .header("x-csrf-token", &forged)
                .form(&[("csrf_token", csrf.as_str())]),
        ),
        (
            "a JSON body",
            b.client
                .post(&url)
                .json(&serde_json::json!({ "csrf_token": csrf })),
        ),
    ] {
        let r = b.send(req).await;
        assert_eq!(r.status(), 403, "{what}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("missing or wrong anti-forgery token"),
            "{what}"
        );
        assert!(
            session_row(&app, &value).await.unwrap().ended_at.is_none(),
            "{what}: nothing changed"
        );
    }
    assert_eq!(b.get("/").await.status(), 200, "still signed in");
    // The header works as well as the field.
    let r = b
        .send(b.client.post(&url).header("x-csrf-token", &csrf))
        .await;
    assert_eq!(r.status(), 303);
    assert!(session_row(&app, &value).await.unwrap().ended_at.is_some());

    // The sign-in form: its field must match the browser's own cookie.
    let fresh = app.browser();
    let r = fresh
        .post_form(
            "/login",
            &[
                ("username", "ana"),
                ("password", ANA_PASSWORD),
                ("csrf_token", &forged),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(fresh.cookie("runbot_session"), None);
    // Each refused change is recorded as what it looks like (a forged request); nothing else
    // happened: the login, six refusals, and the logout.
    let steps = console_audit(&app).await;
    let kinds: Vec<(&str, &str)> = steps
        .iter()
        .map(|(c, s, _, _)| (c.as_str(), s.as_str()))
        .collect();
    assert_eq!(kinds.first(), Some(&("login", "succeeded")), "{steps:?}");
    assert_eq!(kinds.last(), Some(&("logout", "succeeded")), "{steps:?}");
    assert!(
        kinds[1..kinds.len() - 1] == [("request", "denied"); 6],
        "{steps:?}"
    );
}

/// A session ends after `console.session_idle_minutes` without a request and
/// `console.session_max_hours` after sign-in, and as soon as its account is disabled;
/// `last_seen_at` moves at most once a minute.
#[tokio::test]
async fn sessions_end_when_idle_too_old_or_their_account_is_disabled() {
    for db in common::BOTH {
        let app = TestApp::spawn(db).await;
        app.add_account("ana", ANA_PASSWORD, &[]).await;

        // Busy: one write a minute at most.
        let b = app.sign_in("ana", ANA_PASSWORD).await;
        let value = b.cookie("runbot_session").unwrap();
        let seen = session_row(&app, &value).await.unwrap().last_seen_at;
        for _ in 0..3 {
            assert_eq!(b.get("/api/alert-groups").await.status(), 200);
        }
        assert_eq!(session_row(&app, &value).await.unwrap().last_seen_at, seen);
        let hash = runbot::chat::console::sessions::hash(&value);
        let two_minutes_ago =
            runbot::domain::format_time(chrono::Utc::now() - chrono::Duration::minutes(2));
        sql(
            &app,
            &format!("UPDATE console_sessions SET last_seen_at = '{two_minutes_ago}' WHERE id_hash = '{hash}'"),
        )
        .await;
        assert_eq!(b.get("/").await.status(), 200);
        assert!(session_row(&app, &value).await.unwrap().last_seen_at > two_minutes_ago);

        // Idle for more than an hour.
        sql(
            &app,
            &format!(
                "UPDATE console_sessions SET last_seen_at = '{}' WHERE id_hash = '{hash}'",
                hours_ago(2)
            ),
        )
        .await;
        assert_eq!(b.get("/").await.status(), 303, "{db:?}");
        assert_eq!(b.get("/api/alert-groups").await.status(), 401);
        assert!(session_row(&app, &value).await.unwrap().ended_at.is_some());

        // Busy, but signed in more than twelve hours ago.
        let b = app.sign_in("ana", ANA_PASSWORD).await;
        let value = b.cookie("runbot_session").unwrap();
        let hash = runbot::chat::console::sessions::hash(&value);
        sql(
            &app,
            &format!(
                "UPDATE console_sessions SET created_at = '{}' WHERE id_hash = '{hash}'",
                hours_ago(13)
            ),
        )
        .await;
        assert_eq!(b.get("/api/alert-groups").await.status(), 401, "{db:?}");

        // Disabled with `runbot user disable`: the live session dies at once, and no new one.
        let b = app.sign_in("ana", ANA_PASSWORD).await;
        let value = b.cookie("runbot_session").unwrap();
        assert_eq!(b.get("/").await.status(), 200);
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbot"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNBOT") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .current_dir(dir.path())
            .env("RUNBOT__DATABASE__URL", &app.database_url)
            .args(["user", "disable", "ana"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("its 1 open session ended"), "{said}");
        assert!(session_row(&app, &value).await.unwrap().ended_at.is_some());
        assert_eq!(b.get("/").await.status(), 303);
        let r = app.browser().sign_in("ana", ANA_PASSWORD).await;
        assert_eq!(r.status(), 401);
        app.stop().await;
    }
}

/// Disabling an account in the database alone (another replica's `runbot user disable`, a
/// row edited by hand) stops its sessions too: the account is read with every session.
#[tokio::test]
async fn a_disabled_account_is_refused_even_before_its_sessions_are_ended() {
    let app = TestApp::spawn(Db::Sqlite).await;
    app.add_account("ana", ANA_PASSWORD, &[]).await;
    let b = app.sign_in("ana", ANA_PASSWORD).await;
    assert_eq!(b.get("/").await.status(), 200);
    sql(
        &app,
        "UPDATE console_accounts SET disabled_at = '2026-01-01T00:00:00Z' WHERE name = 'ana'",
    )
    .await;
    assert_eq!(b.get("/").await.status(), 303);
}

/// Every route behind the console's gate, read from the sources (so a route added later is
/// covered without editing this test): without a session or a token, pages send the caller to
/// /login and the API answers 401, whatever the method, from this very machine.
#[tokio::test]
async fn every_console_route_needs_a_session_or_a_token() {
    let routes = console_routes();
    for known in [
        ("get", "/"),
        ("get", "/api/alert-groups/1"),
        ("post", "/logout"),
    ] {
        assert!(
            routes.contains(&(known.0.to_string(), known.1.to_string())),
            "{known:?} in {routes:?}"
        );
    }
    let app = TestApp::spawn(Db::Sqlite).await;
    app.add_account("ana", ANA_PASSWORD, &[]).await;
    let anonymous = app.browser();
    let ana = app.sign_in("ana", ANA_PASSWORD).await;
    for (method, path) in &routes {
        let url = format!("{}{path}", app.url);
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = anonymous
            .send(anonymous.client.request(method.clone(), &url))
            .await;
        if path.starts_with("/api/") {
            assert_eq!(r.status(), 401, "{method} {path}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("sign in"));
        } else {
            assert_eq!(r.status(), 303, "{method} {path}");
            assert!(location(&r).starts_with("/login"), "{method} {path}");
        }
        // A session opens it (a change still needs its anti-forgery token: 403, not 401).
        let r = ana.send(ana.client.request(method.clone(), &url)).await;
        let expected: &[u16] = if method == reqwest::Method::GET {
            &[200, 404]
        } else {
            &[403]
        };
        assert!(
            expected.contains(&r.status().as_u16()),
            "{method} {path} with a session: {}",
            r.status()
        );
    }
    // The open ones stay open.
    for path in ["/login", "/setup", "/healthz", "/readyz", "/metrics"] {
        let r = anonymous.get(path).await;
        assert!(
            [200, 404].contains(&r.status().as_u16()),
            "{path}: {}",
            r.status()
        );
    }
}

/// (method, path) of every route in the console's routers, `{param}` filled with `1`.
fn console_routes() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/console");
    let open = ["/login", "/setup"];
    let mut routes = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices(".route(") {
            let call = &text[at + 7..];
            let Some(path) = call
                .trim_start()
                .strip_prefix('"')
                .and_then(|rest| rest.split('"').next())
            else {
                continue; // a constant: the static assets
            };
            if open.contains(&path) {
                continue;
            }
            let end = call.find(")\n").unwrap_or(call.len());
            let filled: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "1" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            for method in ["get", "post", "put", "patch", "delete"] {
                if call[..end].contains(&format!("{method}(")) {
                    routes.push((method.to_string(), filled.clone()));
                }
            }
        }
    }
    routes
}

/// `runbot serve` with no account logs a one-time setup link; it makes the first account
/// (devops-lead, signed in) once; then the page says to sign in. A link from before a restart
/// is dead, and with an account no link is logged at all.
#[tokio::test]
async fn the_setup_link_makes_the_first_account_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let start = |log: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbot"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNBOT") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(dir.path())
            .arg("serve")
            .env("RUNBOT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUNBOT__CONSOLE__INSECURE_COOKIES", "true")
            .stdout(std::fs::File::create(dir.path().join(log)).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let url = format!("http://127.0.0.1:{port}");
    // The link, once `serve` has logged that it is ready (the link comes right after).
    let link_in = |log: &str| -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
            if text.contains("runbot ready") {
                std::thread::sleep(Duration::from_millis(300));
                let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
                let line = BufReader::new(text.as_bytes())
                    .lines()
                    .map(|l| l.unwrap())
                    .find(|l| l.contains("first run: create the first account at"))?;
                let at = line.find("http://").unwrap();
                let link: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ":/.?=_".contains(*c))
                    .collect();
                assert_eq!(line.matches("setup?token=").count(), 1);
                return Some(link);
            }
            assert!(
                Instant::now() < deadline,
                "runbot serve did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let mut first = start("first.log");
    let old = link_in("first.log").expect("a first run logs the link");
    assert!(old.starts_with(&format!("{url}/setup?token=")), "{old}");
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = start("second.log");
    let link = link_in("second.log").expect("still no account: a new link");
    assert_ne!(link, old);
    let b = Browser::new(&url);
    let path = |l: &str| l[url.len()..].to_string();
    let r = b.get(&path(&old)).await;
    assert_eq!(r.status(), 404, "the link dies at restart");
    assert!(r.text().await.unwrap().contains("not valid"));
    assert_eq!(b.get("/setup?token=guess").await.status(), 404);
    assert_eq!(b.get("/setup").await.status(), 404);

    let page = b.get(&path(&link)).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let token = hidden_field(&page.text().await.unwrap(), "token").unwrap();
    let post = |name: &'static str, pw: &'static str, again: &'static str, token: String| {
        let b = &b;
        async move {
            b.post_form(
                "/setup",
                &[
                    ("token", token.as_str()),
                    ("username", name),
                    ("password", pw),
                    ("password_again", again),
                ],
            )
            .await
        }
    };
    let r = post("ana", ANA_PASSWORD, "not the same one", token.clone()).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("the two passwords differ"));
    let r = post("ana", "short", "short", token.clone()).await;
    assert_eq!(r.status(), 400);
    let r = post("ana", ANA_PASSWORD, ANA_PASSWORD, "f".repeat(64)).await;
    assert_eq!(r.status(), 404, "a wrong token does nothing");
    let r = post("ana", ANA_PASSWORD, ANA_PASSWORD, token.clone()).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/".into()));
    let home = b.get("/").await;
    assert_eq!(home.status(), 200, "signed in");
    assert!(home
        .text()
        .await
        .unwrap()
        .contains("<span id=\"me\">ana</span>"));

    // Used: the page says so and points to /login; a second account cannot be made.
    let r = b.get(&path(&link)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("href=\"/login\"") && text.contains("already"),
        "{text}"
    );
    let r = post("mallory", BOB_PASSWORD, BOB_PASSWORD, token.clone()).await;
    assert_eq!(r.status(), 409);
    second.kill().unwrap();
    second.wait().unwrap();

    let mut third = start("third.log");
    assert_eq!(link_in("third.log"), None, "an account exists: no link");
    third.kill().unwrap();
    third.wait().unwrap();

    let store = runbot::store::Store::connect(&runbot::config::DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("runbot.db").display()).into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let accounts = store.accounts().await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].name, "ana");
    assert_eq!(accounts[0].roles, r#"["devops-lead"]"#);
    let rows = runbot::audit::Audit::new(store.clone())
        .recent(10, &Default::default())
        .await
        .unwrap();
    assert!(rows.iter().any(|r| r.command == "user.add"
        && r.actor_platform == runbot::request::Platform::Console
        && r.step == runbot::audit::Step::Succeeded));
}

/// A session that cannot be checked (the database is away) opens nothing: 503, never the
/// page; once the database is back, the same cookie works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_never_taken_unchecked_while_the_database_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let real_url = common::fresh_database(Db::Postgres, dir.path()).await;
    let (head, db_name) = real_url.rsplit_once('/').unwrap();
    let upstream: std::net::SocketAddr = head.rsplit_once('@').unwrap().1.parse().unwrap();
    let mut proxy = common::Proxy::start(upstream).await;
    let mut opts = Options::new(Db::Postgres).set("RUNBOT__DATABASE__ACQUIRE_TIMEOUT_MS", "1000");
    opts.database_url = Some(format!(
        "postgres://runbot:runbot@127.0.0.1:{}/{db_name}",
        proxy.port
    ));
    let app = TestApp::spawn_with(opts).await;
    app.add_account("ana", ANA_PASSWORD, &[]).await;
    let b = app.sign_in("ana", ANA_PASSWORD).await;
    assert_eq!(b.get("/").await.status(), 200);
    proxy.cut();
    for path in ["/", "/api/alert-groups"] {
        let r = b.get(path).await;
        assert_eq!(r.status(), 503, "{path}");
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("cannot check the session now"));
    }
    // Signing in cannot be decided either: 503, no session.
    let fresh = app.browser();
    let r = fresh.sign_in("ana", ANA_PASSWORD).await;
    assert_eq!(r.status(), 503);
    assert_eq!(fresh.cookie("runbot_session"), None);
    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.get("/").await.status() != 200 {
        assert!(Instant::now() < deadline, "the session did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
