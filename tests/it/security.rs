//! Regressions for the holes a security review found (issue 12): what an outsider controls never
//! becomes unbounded memory or a metric label; the console and its API are not open to the
//! network; "local" is not a credential; slow clients cannot hold sockets; refusals cannot flood
//! the audit trail.

use crate::common;

use std::collections::BTreeSet;

use common::{Db, Options, TestApp};

/// Every value the label `name` takes in the series of `metric` in a Prometheus text page.
fn label_values(page: &str, metric: &str, name: &str) -> BTreeSet<String> {
    let key = format!("{name}=\"");
    page.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| {
            let start = l.find(&key)? + key.len();
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_string())
        })
        .collect()
}

/// Made-up methods and paths are the caller's to choose; each would be a new series kept
/// forever. They are labelled from a closed set, so the page does not grow with them.
#[tokio::test]
async fn made_up_methods_and_paths_never_become_metric_labels() {
    let app = TestApp::spawn_with(Options::new(Db::Sqlite)).await;
    let send = |method: String, path: &'static str| {
        let client = app.client.clone();
        let url = format!("{}{path}", app.url);
        async move {
            client
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
                // Past the console's gate, which refuses anonymous callers before the method.
                .bearer_auth(common::CONSOLE_TOKEN)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let metric = "runbot_http_request_duration_seconds_count";
    // The recorder is the process's, shared with the tests running beside this one: count the
    // series these requests could add, not the page's whole.
    let series_before = app
        .get("/metrics")
        .await
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(metric))
        .count();
    let mut statuses = BTreeSet::new();
    for i in 0..200 {
        for path in ["/webhooks/alertmanager", "/metrics", "/api/alert-groups"] {
            statuses.insert(send(format!("M{i}X"), path).await.as_u16());
        }
        send("GET".into(), "/no/such/path").await;
    }
    assert_eq!(
        statuses,
        BTreeSet::from([405]),
        "made-up methods are refused"
    );
    let page = app.get("/metrics").await.text().await.unwrap();
    let methods = label_values(&page, metric, "method");
    assert!(
        methods.is_subset(&BTreeSet::from(
            ["GET", "HEAD", "POST", "other"].map(String::from)
        )),
        "{methods:?}"
    );
    assert!(methods.contains("other"), "{methods:?}");
    let routes = label_values(&page, metric, "route");
    assert!(
        routes.iter().all(|r| !r.contains("no/such")),
        "paths that match no route are no label: {routes:?}"
    );
    let series = page.lines().filter(|l| l.starts_with(metric)).count() - series_before;
    assert!(series < 30, "{series} new series:\n{page}");
    app.stop().await;
}

/// A request as the server hands it to the routes, from `peer`, with `headers`.
fn request(
    method: &str,
    path: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> axum::http::Request<axum::body::Body> {
    let mut b = axum::http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(axum::body::Body::empty()).unwrap();
    req.extensions_mut().insert(axum::extract::ConnectInfo(
        peer.parse::<std::net::SocketAddr>().unwrap(),
    ));
    req
}

async fn app_with(env: &[(&str, &str)]) -> runbot::app::Application {
    let dir = tempfile::tempdir().unwrap().keep();
    let empty = dir.join("runbot.toml");
    std::fs::write(&empty, "").unwrap();
    let mut vars = vec![
        (
            "RUNBOT__HTTP__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "RUNBOT__DATABASE__URL".to_string(),
            format!("sqlite://{}", dir.join("r.db").display()),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = runbot::config::Settings::load_from(Some(&empty), vars).unwrap();
    runbot::app::Application::build(settings).await.unwrap()
}

const CONSOLE_TOKEN: &str = common::CONSOLE_TOKEN;

/// The console and `/api/*` show every alert's labels, annotations and silences, and take
/// commands: served only with a session or a token. Being on this machine is no credential
/// (a proxy on this host, or a rebound name, looks the same), so without one a page sends the
/// caller to /login and the API answers 401, from loopback as from anywhere.
#[tokio::test]
async fn the_console_and_its_api_are_not_open_to_the_network() {
    use tower::ServiceExt;
    let basic = |user: &str, pass: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    let bearer = format!("Bearer {CONSOLE_TOKEN}");
    let basic_ok = basic("anyone", CONSOLE_TOKEN);
    let basic_bad = basic("anyone", "console-token-wrong-value");

    let closed = app_with(&[]).await;
    let host = format!("127.0.0.1:{}", closed.port());
    let h = host.as_str();
    for peer in ["10.1.2.3:4000", "127.0.0.1:4000"] {
        for (path, status) in [
            ("/", 303),
            ("/groups/1", 303),
            ("/api/alert-groups", 401),
            ("/api/alert-groups/1", 401),
        ] {
            let r = closed
                .router()
                .oneshot(request("GET", path, peer, &[("host", h)]))
                .await
                .unwrap();
            assert_eq!(r.status(), status, "{path} from {peer}");
            if status == 303 {
                assert!(r.headers()["location"]
                    .to_str()
                    .unwrap()
                    .starts_with("/login"));
            } else {
                let body = axum::body::to_bytes(r.into_body(), 10_000).await.unwrap();
                assert!(String::from_utf8_lossy(&body).contains("sign in at /login"));
            }
        }
    }
    let r = closed
        .router()
        .oneshot(request("GET", "/healthz", "10.1.2.3:4000", &[("host", h)]))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "health stays open");

    let open = app_with(&[("RUNBOT__CONSOLE__TOKEN", CONSOLE_TOKEN)]).await;
    let host = format!("127.0.0.1:{}", open.port());
    let h = host.as_str();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        ("10.1.2.3:4000", vec![], 401),
        ("10.1.2.3:4000", vec![("authorization", "Bearer nope")], 401),
        ("10.1.2.3:4000", vec![("authorization", &basic_bad)], 401),
        ("10.1.2.3:4000", vec![("authorization", &bearer)], 200),
        (
            "[2001:db8::7]:4000",
            vec![("authorization", &basic_ok)],
            200,
        ),
        ("127.0.0.1:4000", vec![], 401),
        ("127.0.0.1:4000", vec![("x-real-ip", "203.0.113.5")], 401),
        (
            "127.0.0.1:4000",
            vec![
                ("x-forwarded-for", "203.0.113.5"),
                ("authorization", &bearer),
            ],
            200,
        ),
    ];
    for (peer, extra, status) in cases {
        let mut headers = vec![("host", h)];
        headers.extend(extra.iter().cloned());
        let r = open
            .router()
            .oneshot(request("GET", "/api/alert-groups", peer, &headers))
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{peer} {extra:?}");
        if status == 401 {
            // Not Basic: a browser would pop up a password dialog for a page's script.
            let challenge = r.headers()["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer realm=\"runbot api\""));
        }
    }
}

/// Answers are bounded whatever the caller asks: a page holds at most 500 groups (100 by
/// default), at most 100 alerts of each, and no more than 4 MiB past its first group; the
/// rest is one `Link: rel="next"` away, and following the links reaches every group once.
#[tokio::test]
async fn api_answers_are_paged_and_bounded() {
    for db in common::BOTH {
        let app = TestApp::spawn(db).await;
        for i in 0..230 {
            let body = common::webhook(
                &format!("Alert{i:03}"),
                "firing",
                &[(&format!("{i:016x}"), "firing", serde_json::json!({}))],
            );
            assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
        }
        // One group with 300 alerts.
        let many: Vec<(String, &str, serde_json::Value)> = (0..300)
            .map(|n| {
                (
                    format!("b{n:015x}"),
                    "firing",
                    serde_json::json!({ "n": n.to_string() }),
                )
            })
            .collect();
        let many: Vec<(&str, &str, serde_json::Value)> = many
            .iter()
            .map(|(f, s, l)| (f.as_str(), *s, l.clone()))
            .collect();
        let body = common::webhook("Crowded", "firing", &many);
        assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);

        let r = app.get("/api/alert-groups?limit=10000").await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("between 1 and 500"));
        let r = app.get("/api/alert-groups?cursor=not-one-of-ours").await;
        assert_eq!(r.status(), 400);

        let r = app.get("/api/alert-groups").await;
        assert_eq!(r.status(), 200);
        let link = r.headers()["link"].to_str().unwrap().to_string();
        let first: Vec<serde_json::Value> = r.json().await.unwrap();
        assert_eq!(first.len(), 100, "the default page");
        assert!(
            link.contains("rel=\"next\"") && link.contains("cursor="),
            "{link}"
        );
        let crowded = &first[0];
        assert_eq!(crowded["group_labels"]["alertname"], "Crowded");
        assert_eq!(crowded["alerts"].as_array().unwrap().len(), 100);
        assert_eq!(crowded["alerts_total"], 300);
        assert_eq!(crowded["alerts_firing"], 300);
        let one = app.group(crowded["id"].as_i64().unwrap()).await;
        assert_eq!(one["alerts"].as_array().unwrap().len(), 300);

        let all = app.groups().await;
        let ids: BTreeSet<i64> = all.iter().map(|g| g["id"].as_i64().unwrap()).collect();
        assert_eq!((all.len(), ids.len()), (231, 231), "every group once");

        // Big annotations: the page stops at its byte budget, not at its count.
        for i in 0..60 {
            let mut body = common::webhook(
                &format!("Big{i:02}"),
                "firing",
                &[(&format!("c{i:015x}"), "firing", serde_json::json!({}))],
            );
            body["alerts"][0]["annotations"]["description"] = "x".repeat(100_000).into();
            assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
        }
        let r = app.get("/api/alert-groups?limit=500").await;
        assert!(r.headers().contains_key("link"));
        let bytes = r.bytes().await.unwrap();
        assert!(bytes.len() <= 4 * 1024 * 1024, "{} bytes", bytes.len());
        let page: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        assert!(page.len() < 60, "{} groups", page.len());
        assert_eq!(app.groups().await.len(), 291);
        app.stop().await;
    }
}

/// With no webhook credentials, "the caller is on this machine" was the only check: refused
/// at start when others can reach the listener, with the fix in the message; and on loopback a
/// Host that is not runbot's own name (DNS rebinding) gets nowhere.
#[tokio::test]
async fn a_listener_others_can_reach_needs_webhook_credentials_and_hosts_are_checked() {
    let settings = |env: &[(&str, &str)]| {
        let mut vars: Vec<(String, String)> = vec![(
            "RUNBOT__DATABASE__URL".into(),
            "sqlite:///tmp/unused-runbot.db".into(),
        )];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(&file, "").unwrap();
        runbot::config::Settings::load_from(Some(&file), vars)
    };
    let refused = settings(&[("RUNBOT__HTTP__LISTEN", "0.0.0.0:8080")]).unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("http.listen = 0.0.0.0:8080 can be reached from other machines")
            && text.contains("set alertmanager.webhook_token"),
        "{text}"
    );
    assert!(settings(&[
        ("RUNBOT__HTTP__LISTEN", "0.0.0.0:8080"),
        ("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN", "a-long-enough-token"),
    ])
    .is_ok());
    assert!(settings(&[("RUNBOT__HTTP__LISTEN", "127.0.0.1:8080")]).is_ok());
    let exposed = settings(&[("RUNBOT__DISCORD__PUBLIC_KEY", &"ab".repeat(32))])
        .unwrap_err()
        .to_string();
    assert!(
        exposed.contains("discord.public_key is set") && exposed.contains("webhook_token"),
        "{exposed}"
    );
    assert!(settings(&[("RUNBOT__HTTP__ALLOWED_HOSTS", "[\"bad host!\"]")]).is_err());

    // The real binary: check-config says what to do, serve does not start.
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNBOT") {
                c.env_remove(k);
            }
        }
        c.current_dir(dir.path())
            .env("RUNBOT__HTTP__LISTEN", "0.0.0.0:0")
            .args(args)
            .output()
            .unwrap()
    };
    for args in [&["check-config"][..], &["serve"][..]] {
        let out = run(args);
        assert!(!out.status.success(), "{args:?}");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("alertmanager.webhook_token"),
            "{args:?}: {said}"
        );
    }
    assert!(
        !dir.path().join("runbot.db").exists(),
        "serve stopped before touching anything"
    );

    // DNS rebinding: a page at evil.example resolved to 127.0.0.1 sends its own name.
    let app = TestApp::spawn_with(Options::new(Db::Sqlite)).await;
    for host in ["evil.example", "evil.example:80", "127.0.0.1.evil.example"] {
        let r = app
            .client
            .get(format!("{}/api/alert-groups", app.url))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421, "{host}");
        assert!(r.text().await.unwrap().contains("http.allowed_hosts"));
    }
    let own = format!("localhost:{}", app.addr.port());
    let r = app
        .client
        .get(format!("{}/api/alert-groups", app.url))
        .bearer_auth(CONSOLE_TOKEN)
        .header("host", own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

/// Slow clients cannot hold runbot's sockets: headers (and an idle keep-alive connection) get
/// `http.header_timeout_secs`, a body `http.body_timeout_secs` (then 408), at most
/// `http.max_connections` are served at once (the rest wait their turn), and a shutdown does not
/// wait for a client that never finishes its request.
#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_stall_a_shutdown() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(
        Options::new(Db::Sqlite)
            .set("RUNBOT__HTTP__HEADER_TIMEOUT_SECS", "1")
            .set("RUNBOT__HTTP__BODY_TIMEOUT_SECS", "1")
            .set("RUNBOT__HTTP__MAX_CONNECTIONS", "3")
            .set("RUNBOT__HTTP__SHUTDOWN_TIMEOUT_SECS", "2"),
    )
    .await;
    let host = format!("127.0.0.1:{}", app.addr.port());

    // Reads until the server closes the connection; what it said, and when.
    async fn until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> (String, Duration) {
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("the connection is still open after {limit:?}"),
            }
        }
        (String::from_utf8_lossy(&got).to_string(), started.elapsed())
    }

    // Headers a byte at a time: cut off at the header timeout, not served forever.
    let mut loris = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let trickle = tokio::spawn(async move {
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: ", "x");
        for b in head.bytes().chain(std::iter::repeat(b'a')) {
            if loris.write_all(&[b]).await.is_err() {
                return loris;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loris
    });
    // Silent: connects and sends nothing.
    let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (_, took) = until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let loris = tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("the slow client's connection is closed")
        .unwrap();
    drop(loris);

    // A body a byte at a time: 408 after the body timeout.
    let mut body = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/alertmanager HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        common::TOKEN
    );
    body.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = body.into_split();
    let dribble = tokio::spawn(async move {
        for _ in 0..50 {
            if wr.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut answer))
        .await
        .expect("an answer within the body timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("http.body_timeout_secs"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    dribble.abort();

    // Three idle connections take every slot: a fourth request waits until one is cut off.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served at once despite the limit: {:?}",
        started.elapsed()
    );
    drop(idle);

    // A client stuck halfway through its headers does not hold the shutdown.
    let mut stuck = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the shutdown finished");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// `/metrics` with `http.metrics_token`: only for the bearer token, whoever asks (even this
/// machine: a scraper is not a person at the console); open without it, as before.
#[tokio::test]
async fn metrics_can_be_closed_with_a_token_of_their_own() {
    const METRICS_TOKEN: &str = "metrics-token-0123456789";
    let mut opts = Options::new(Db::Sqlite);
    opts.env
        .push(("RUNBOT__HTTP__METRICS_TOKEN".into(), METRICS_TOKEN.into()));
    let app = TestApp::spawn_with(opts).await;
    let get = |auth: Option<String>| {
        let mut r = app.client.get(format!("{}/metrics", app.url));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let none = get(None).await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"runbot metrics\""
    );
    let body = none.text().await.unwrap();
    assert!(body.contains("http.metrics_token"), "{body}");
    assert!(!body.contains("runbot_"), "no metric leaks: {body}");
    for wrong in [
        format!("Bearer {METRICS_TOKEN}x"),
        "Bearer metrics-token".to_string(),
        format!("Basic {METRICS_TOKEN}"),
    ] {
        assert_eq!(
            get(Some(wrong.clone())).await.unwrap().status(),
            401,
            "{wrong}"
        );
    }
    let ok = get(Some(format!("Bearer {METRICS_TOKEN}"))).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("runbot_alerts_firing"));
    // Health probes stay open to the orchestrator.
    let health = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let open = TestApp::spawn(Db::Sqlite).await;
    let r = open
        .client
        .get(format!("{}/metrics", open.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "without the setting /metrics stays open");

    // A short token is refused by the settings, with how to make one.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runbot.toml");
    std::fs::write(&file, "").unwrap();
    let e = runbot::config::Settings::load_from(
        Some(&file),
        vec![("RUNBOT__HTTP__METRICS_TOKEN".into(), "short".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("http.metrics_token must be at least 16 characters") && !e.contains("short\""),
        "{e}"
    );
}

/// API tokens (`runbot token create`) open `/api/*` to scripts elsewhere, not the pages; a
/// revoked, forged or malformed token opens nothing, and the token is shown once, never kept.
#[tokio::test]
async fn api_tokens_open_the_api_to_scripts_until_revoked() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let token_cli = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNBOT") {
                c.env_remove(k);
            }
        }
        c.current_dir(dir.path())
            .env("RUNBOT__DATABASE__URL", &url)
            .arg("token")
            .args(args)
            .output()
            .unwrap()
    };
    let made = token_cli(&["create", "--name", "grafana", "--role", "devops-lead"]);
    let out = String::from_utf8_lossy(&made.stdout).to_string();
    assert!(
        made.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("rbt_"))
        .expect("the token is printed")
        .to_string();
    assert_eq!(
        token_cli(&["create", "--name", "grafana"]).status.code(),
        Some(1),
        "a name in use is refused"
    );
    let bad_name = token_cli(&["create", "--name", "two words"]);
    assert_eq!(bad_name.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_name.stderr)
            .contains("\"two words\" is not a token name: use 1 to 64 characters, no spaces"),
        "{}",
        String::from_utf8_lossy(&bad_name.stderr)
    );
    let listed = String::from_utf8_lossy(&token_cli(&["list"]).stdout).to_string();
    assert!(
        listed.contains("grafana") && listed.contains("in use") && !listed.contains(&token),
        "{listed}"
    );

    let file = dir.path().join("runbot.toml");
    std::fs::write(&file, "").unwrap();
    let settings = runbot::config::Settings::load_from(
        Some(&file),
        vec![
            ("RUNBOT__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("RUNBOT__DATABASE__URL".into(), url.clone()),
        ],
    )
    .unwrap();
    let app = runbot::app::Application::build(settings).await.unwrap();
    let host = format!("127.0.0.1:{}", app.port());
    let status = |path: &'static str, auth: String| {
        let req = request(
            "GET",
            path,
            "10.1.2.3:4000",
            &[("host", &host), ("authorization", &auth)],
        );
        let router = app.router();
        async move { router.oneshot(req).await.unwrap().status().as_u16() }
    };
    let bearer = format!("Bearer {token}");
    assert_eq!(status("/api/alert-groups", bearer.clone()).await, 200);
    assert_eq!(
        status("/", bearer.clone()).await,
        303,
        "a script's token does not open the pages: they send it to /login"
    );
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        status("/api/alert-groups", format!("Bearer {forged}")).await,
        401
    );
    assert_eq!(
        status("/api/alert-groups", "Bearer rbt_nonsense".into()).await,
        401
    );

    let revoked = token_cli(&["revoke", "grafana"]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert_eq!(
        status("/api/alert-groups", bearer.clone()).await,
        401,
        "a revoked token stops at once"
    );
    let again = token_cli(&["revoke", "grafana"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The trail has both changes, and never the token.
    let store = runbot::store::Store::connect(&runbot::config::DatabaseSettings {
        url: url.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let rows = runbot::audit::Audit::new(store.clone())
        .recent(20, &Default::default())
        .await
        .unwrap();
    let commands: Vec<&str> = rows.iter().map(|r| r.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "token.revoke",
            "token.revoke",
            "token.create",
            "token.create",
            "token.create"
        ]
    );
    for r in &rows {
        assert!(!serde_json::to_string(r).unwrap().contains(&token[12..]));
    }
}
