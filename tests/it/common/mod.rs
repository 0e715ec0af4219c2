//! Test helpers: the real application on a random port, against real databases and a real
//! Alertmanager. Each test gets its own database.

pub mod app_db;
pub mod browser;
pub mod docker;
pub mod nginx;
pub mod rig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runbot::app::Application;
use runbot::config::Settings;
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::oneshot;

pub const TOKEN: &str = "fixture-token";
pub const BASIC_USER: &str = "am";
pub const BASIC_PASS: &str = "fixture-pass";
/// `console.token` of every [`TestApp`] unless told otherwise; [`TestApp::get`] sends it.
pub const CONSOLE_TOKEN: &str = "console-token-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub const BOTH: [Db; 2] = [Db::Sqlite, Db::Postgres];

/// All tests share one PostgreSQL server and, since they are one binary, run side by side.
/// `/db slow` and `/db locks` list every database's sessions, so the test that counts what
/// they list holds this, and so does each test that leaves a slow query or a lock wait on the
/// server.
pub static PG_SERVER_WIDE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL server started by scripts/test.
pub fn pg_admin_url() -> String {
    std::env::var("RUNBOT_TEST_PG_URL").expect(
        "RUNBOT_TEST_PG_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
    )
}

/// A fresh database: a SQLite file in `dir`, or a new PostgreSQL database.
pub async fn fresh_database(db: Db, dir: &Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("runbot.db").display()),
        Db::Postgres => {
            let admin = pg_admin_url();
            let name = format!("runbot_test_{}", unique());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("connect to the test PostgreSQL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let base = admin.rsplit_once('/').unwrap().0;
            format!("{base}/{name}")
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    pub database_url: String,
    pub client: reqwest::Client,
    /// Holds the app's files (the SQLite database) until the test ends.
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub struct Options {
    pub db: Db,
    /// Extra `RUNBOT__…` settings.
    pub env: Vec<(String, String)>,
    /// Use this database instead of a fresh one.
    pub database_url: Option<String>,
    /// Configure the fixture credentials (bearer `fixture-token`, basic `am`/`fixture-pass`).
    pub auth: bool,
    /// The settings file's text (empty by default), for what environment variables cannot
    /// say, such as lists of tables.
    pub config_toml: String,
    /// Set `console.token` to [`CONSOLE_TOKEN`] (and cookies without `Secure`, for plain HTTP).
    pub console_token: bool,
    /// The clock runbot decides its times by; None: the system's.
    pub clock: Option<runbot::domain::clock::Clock>,
    /// Run the escalation engine (`escalation.enabled`). Off unless a test is about paging:
    /// the shipped example people would otherwise be paged, and their pages would change
    /// the groups and channels other tests compare.
    pub escalation: bool,
}

impl Options {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            env: Vec::new(),
            database_url: None,
            auth: true,
            config_toml: String::new(),
            console_token: true,
            clock: None,
            escalation: false,
        }
    }

    /// With the escalation engine running, as `runbot serve` runs it by default.
    pub fn escalating(mut self) -> Self {
        self.escalation = true;
        self
    }

    /// A clock that reads `start` now and runs at the real pace from there.
    pub fn clock_from(mut self, start: chrono::DateTime<chrono::Utc>) -> Self {
        let offset = start - chrono::Utc::now();
        self.clock = Some(std::sync::Arc::new(move || chrono::Utc::now() + offset));
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

impl TestApp {
    pub async fn spawn(db: Db) -> TestApp {
        Self::spawn_with(Options::new(db)).await
    }

    pub async fn spawn_with(opts: Options) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match opts.database_url {
            Some(u) => u,
            None => fresh_database(opts.db, dir.path()).await,
        };
        let mut env = vec![
            (
                "RUNBOT__HTTP__LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            ("RUNBOT__DATABASE__URL".to_string(), database_url.clone()),
        ];
        if opts.auth {
            env.push(("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN".into(), TOKEN.into()));
            env.push((
                "RUNBOT__ALERTMANAGER__BASIC_AUTH__USERNAME".into(),
                BASIC_USER.into(),
            ));
            env.push((
                "RUNBOT__ALERTMANAGER__BASIC_AUTH__PASSWORD".into(),
                BASIC_PASS.into(),
            ));
        }
        if opts.console_token {
            env.push(("RUNBOT__CONSOLE__TOKEN".into(), CONSOLE_TOKEN.into()));
        }
        env.push(("RUNBOT__CONSOLE__INSECURE_COOKIES".into(), "true".into()));
        env.push((
            "RUNBOT__ESCALATION__ENABLED".into(),
            opts.escalation.to_string(),
        ));
        env.extend(opts.env);
        let file = dir.path().join("runbot.toml");
        std::fs::write(&file, &opts.config_toml).unwrap();
        let settings = Settings::load_from(Some(&file), env).expect("test settings are valid");
        let clock = opts
            .clock
            .unwrap_or_else(runbot::domain::clock::system_clock);
        let app = Application::build_with_clock(settings, clock)
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            url: format!("http://{addr}"),
            database_url,
            // runbot closes a keep-alive connection idle for `http.header_timeout_secs` (10 s);
            // a client that keeps it longer races that close and sees a reset, as any HTTP
            // client would, so this one lets idle connections go first.
            client: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            _dir: dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the app the way SIGTERM does and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/alertmanager", self.url)
    }

    /// Posts a body with the bearer token and JSON content type.
    pub async fn post_webhook(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.webhook_url())
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// GET with `console.token`, which opens every console page and `/api/*` to read.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(CONSOLE_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// The app's database, opened again (for arranging rows and checking them).
    pub async fn store(&self) -> runbot::store::Store {
        runbot::store::Store::connect(&runbot::config::DatabaseSettings {
            url: self.database_url.clone().into(),
            ..Default::default()
        })
        .await
        .unwrap()
    }

    /// Creates a console account straight in the store, as `runbot user add` would.
    pub async fn add_account(&self, name: &str, password: &str, roles: &[&str]) {
        let store = self.store().await;
        let hash = runbot::chat::console::accounts::hash_password(password).unwrap();
        let roles = serde_json::to_string(roles).unwrap();
        let now = runbot::domain::format_time(chrono::Utc::now());
        assert!(store.add_account(name, &hash, &roles, &now).await.unwrap());
        store.close().await;
    }

    /// A browser with no cookies yet.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.url)
    }

    /// A browser signed in as `name`.
    pub async fn sign_in(&self, name: &str, password: &str) -> Browser {
        let b = self.browser();
        let r = b.sign_in(name, password).await;
        assert_eq!(
            r.status(),
            303,
            "sign-in of {name}: {}",
            r.text().await.unwrap()
        );
        b
    }

    /// Every group, following the API's pages.
    pub async fn groups(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut path = "/api/alert-groups?status=all&limit=500".to_string();
        loop {
            let r = self.get(&path).await;
            assert_eq!(r.status(), 200);
            let next = r
                .headers()
                .get("x-next-cursor")
                .map(|c| c.to_str().unwrap().to_string());
            let page: Vec<Value> = r.json().await.unwrap();
            all.extend(page);
            match next {
                Some(c) => path = format!("/api/alert-groups?status=all&limit=500&cursor={c}"),
                None => return all,
            }
        }
    }

    pub async fn group(&self, id: i64) -> Value {
        let r = self.get(&format!("/api/alert-groups/{id}")).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The kinds of a group's timeline entries, oldest first.
    pub async fn timeline_kinds(&self, id: i64) -> Vec<String> {
        self.group(id).await["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// Polls until `f` finds what it wants in the groups, or panics after `secs`.
    pub async fn wait_for<T>(&self, secs: u64, what: &str, f: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let groups = self.groups().await;
            if let Some(t) = f(&groups) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; groups: {}",
                    serde_json::to_string_pretty(&groups).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A browser, as far as runbot can tell: it keeps the cookies runbot sets (whatever their
/// `Secure`, since tests speak plain HTTP) and sends them back, and follows no redirect, so a
/// test sees each 303.
pub struct Browser {
    pub client: reqwest::Client,
    pub url: String,
    cookies: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl Browser {
    pub fn new(url: &str) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            url: url.to_string(),
            cookies: Default::default(),
        }
    }

    /// The cookie `name`'s value, if the browser holds it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .unwrap()
            .insert(name.to_string(), value.to_string());
    }

    /// Sends `req` with the cookies held; keeps those the answer sets.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let header = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if header.is_empty() {
            req
        } else {
            req.header("cookie", header)
        };
        let r = req.send().await.unwrap();
        for set in r.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attrs) = set.split_once(';').unwrap_or((set, ""));
            let (k, v) = pair.split_once('=').unwrap();
            let mut jar = self.cookies.lock().unwrap();
            if v.is_empty() || attrs.contains("Max-Age=0") {
                jar.remove(k);
            } else {
                jar.insert(k.to_string(), v.to_string());
            }
        }
        r
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.send(self.client.get(format!("{}{path}", self.url)))
            .await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.send(self.client.post(format!("{}{path}", self.url)).form(form))
            .await
    }

    /// GET /login, then posts the form with its anti-forgery field.
    pub async fn sign_in(&self, name: &str, password: &str) -> reqwest::Response {
        let page = self.get("/login").await.text().await.unwrap();
        let token = hidden_field(&page, "csrf_token").expect("the form has its token");
        self.post_form(
            "/login",
            &[
                ("username", name),
                ("password", password),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// The session's anti-forgery token, from a page's `<meta name="csrf-token">`.
    pub async fn csrf(&self) -> String {
        let r = self.get("/").await;
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        let at = page
            .find("name=\"csrf-token\" content=\"")
            .expect("a signed-in page has its anti-forgery token");
        let rest = &page[at + "name=\"csrf-token\" content=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

/// The value of a hidden form field `name` in a page.
pub fn hidden_field(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &page[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

/// One captured webhook from `shared/fixtures/alertmanager`.
pub struct Fixture {
    pub name: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub fn fixtures_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for candidate in [
        root.join("../shared/fixtures/alertmanager"),
        root.join("tests/fixtures/alertmanager"),
    ] {
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!("no Alertmanager fixtures in ../shared/fixtures/alertmanager or tests/fixtures/alertmanager");
}

pub fn fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            Fixture {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                headers: v["headers"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                body: v["body"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// A webhook body of our own: one group, the given alerts as (fingerprint, status, labels).
pub fn webhook(group: &str, status: &str, alerts: &[(&str, &str, Value)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(fp, st, labels)| {
            let mut labels = labels.clone();
            labels["alertname"] = Value::String(group.to_string());
            serde_json::json!({
                "status": st,
                "labels": labels,
                "annotations": {"summary": format!("{group} {fp}")},
                "startsAt": "2026-11-27T19:31:13.991875004Z",
                "endsAt": if *st == "resolved" { "2026-11-27T19:41:13.5Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": fp,
            })
        })
        .collect();
    serde_json::json!({
        "receiver": "bot",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": group},
        "commonLabels": {"alertname": group},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{group}\"}}"),
        "truncatedAlerts": 0,
    })
}

/// An Alertmanager configuration that sends every alert to `app`'s webhook with its token:
/// grouped by alert name and service, sent 100 ms after the first alert and every second after.
pub fn alertmanager_config(app: &TestApp) -> String {
    format!(
        r#"
route:
  receiver: runbot
  group_by: [alertname, service]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: runbot
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {TOKEN}
"#,
        url = app.webhook_url()
    )
}

/// A port that is free now, for a child process to listen on. Taken from below the kernel's
/// ephemeral range (32768–60999 by default) so that no socket bound to port 0 in the meantime
/// (runbot's own listeners, outgoing connections) can take it before the child binds it; the
/// CI once lost a run to that race. Ports are spread by process id and handed out once each.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + base.wrapping_add(n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

/// A real Alertmanager process (Debian's prometheus-alertmanager), killed on drop.
pub struct Alertmanager {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (YAML), waiting until it is ready.
    pub async fn start(config: &str) -> Alertmanager {
        let bin = std::env::var("RUNBOT_TEST_ALERTMANAGER_BIN")
            .unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".into());
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, config).unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): run the tests with scripts/test")
            });
        let am = Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{}/-/ready", am.url)).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        am
    }

    /// Pushes alerts through Alertmanager's API v2, as Prometheus does.
    pub async fn push(&self, alerts: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&alerts)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// A counter from Alertmanager's own /metrics (summed over label sets matching `filter`).
    pub async fn metric(&self, name: &str, filter: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of a database that a test can cut and restore, like a network outage.
pub struct Proxy {
    pub port: u16,
    upstream: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let mut p = Proxy {
            port: free_port(),
            upstream,
            stop: None,
        };
        p.restore().await;
        p
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }

    pub async fn restore(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let upstream = self.upstream;
        tokio::spawn(async move {
            let mut stop = rx.clone();
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let mut stop = rx.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                            tokio::select! {
                                _ = stop.changed() => {}
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            }
                        });
                    }
                }
            }
        });
        self.stop = Some(tx);
    }
}

/// Discord settings for `runbot serve` against a fake Discord (see [`Serve`]).
pub const BOT_TOKEN: &str = "fake-bot-token-0123456789abcdef";
pub const CHANNEL: u64 = 111_111_111_111_111_111;

/// `runbot serve` as a process of its own in `dir` (its runbot.toml and SQLite file there),
/// talking to `fake` as its Discord; killed with SIGKILL, like a crash, when dropped.
pub struct Serve {
    child: Child,
    pub url: String,
}

/// `runbot serve`'s settings for a runbot on 127.0.0.1:`port` that talks to `fake`: cards in
/// its channel, interactions signed with its key, webhooks with [`TOKEN`].
pub fn serve_against<'c>(
    cmd: &'c mut Command,
    port: u16,
    fake: &fake_discord::FakeDiscord,
) -> &'c mut Command {
    cmd.env_remove("RUNBOT_CONFIG")
        .env("RUNBOT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
        .env("RUNBOT__DISCORD__ALERT_CHANNEL_ID", CHANNEL.to_string())
        .env("RUNBOT__DISCORD__API_BASE", fake.base_url())
        .env("RUNBOT__DISCORD__APPLICATION_ID", fake.application_id())
        .env("RUNBOT__DISCORD__PUBLIC_KEY", fake.public_key_hex())
        .env("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN", TOKEN)
}

impl Serve {
    pub async fn start(dir: &Path, fake: &fake_discord::FakeDiscord) -> Serve {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbot"));
        cmd.current_dir(dir).arg("serve");
        let child = serve_against(&mut cmd, port, fake)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("serve-{port}.log"))).unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{url}/healthz")).await.is_err() {
            assert!(Instant::now() < deadline, "runbot did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Serve { child, url }
    }

    pub fn interactions_url(&self) -> String {
        format!("{}/discord/interactions", self.url)
    }

    /// SIGTERM, as systemd or Docker stop it, then waits up to `within` for it to exit: its
    /// exit status, and how long it took.
    pub fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let sent = Instant::now();
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, sent.elapsed());
            }
            assert!(
                sent.elapsed() < within,
                "runbot did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `runbot audit verify` in `dir` (its runbot.toml and database) passes: the chain is whole.
pub fn assert_audit_verifies(dir: &Path) {
    let verify = Command::new(env!("CARGO_BIN_EXE_runbot"))
        .current_dir(dir)
        .args(["audit", "verify"])
        .env_remove("RUNBOT_CONFIG")
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
