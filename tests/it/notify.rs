//! Pages that leave runbot by email and by signed webhook: email through a real SMTP server
//! (postfix's smtp-sink, started by scripts/test, dumping each message to a folder), webhooks
//! to a small receiver in the test that checks the signature the way docs/notify.md tells
//! receivers to.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use runbot::config::{Settings, SmtpServer, SmtpTls, WebhookTarget};
use runbot::escalation::email::Mailer;
use runbot::escalation::webhook::Webhooks;
use runbot::request::page::{Page, PageError, Pager};
use secrecy::SecretString;
use sha2::Sha256;

use crate::common::free_port;

const SECRET: &str = "receiver-shared-secret-0123456789";

fn page(id: i64) -> Page {
    Page {
        id,
        group_id: Some(17),
        severity: Some("sev1".into()),
        title: "Sev1 · APIDown: API down".into(),
        summary: "backend answers 502 on /api/health for 3 minutes".into(),
        person: "Ana".into(),
        role: Some("devops-lead".into()),
        reason: "step 1 of sev1".into(),
        url: Some("https://runbot.example.com/groups/17".into()),
    }
}

/// A page id no other test (or earlier run against the same sink) uses.
fn unique_id() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (nanos % 1_000_000_000_000) as i64
}

fn smtp_port() -> u16 {
    std::env::var("RUNBOT_TEST_SMTP_PORT")
        .expect("RUNBOT_TEST_SMTP_PORT is not set: run the tests with scripts/test, which starts smtp-sink")
        .parse()
        .expect("RUNBOT_TEST_SMTP_PORT is a port")
}

fn smtp_dir() -> PathBuf {
    std::env::var("RUNBOT_TEST_SMTP_DIR")
        .expect("RUNBOT_TEST_SMTP_DIR is not set: run the tests with scripts/test, which starts smtp-sink")
        .into()
}

fn loopback_server(port: u16) -> SmtpServer {
    SmtpServer {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        login: None,
        from: "Runbot <runbot@example.com>".parse().unwrap(),
        timeout: Duration::from_secs(5),
    }
}

/// The message smtp-sink dumped for `rcpt`, waiting a little for the file to be written.
fn dumped_message_for(rcpt: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let needle = format!("X-Rcpt-Args: <{rcpt}>");
    loop {
        for entry in std::fs::read_dir(smtp_dir()).unwrap() {
            let path = entry.unwrap().path();
            if let Ok(text) = std::fs::read_to_string(&path) {
                if text.contains(&needle) && text.contains("runbot page") {
                    return text;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no message to {rcpt} in {}",
            smtp_dir().display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_page_by_email_reaches_a_real_smtp_server_with_its_subject_body_and_headers() {
    // Built from settings the way runbot builds it, so the environment's strings are checked too.
    let settings = Settings::load_from(
        None,
        vec![
            ("RUNBOT__EMAIL__HOST".into(), "localhost".into()),
            ("RUNBOT__EMAIL__PORT".into(), smtp_port().to_string()),
            ("RUNBOT__EMAIL__TLS".into(), "none".into()),
            // smtp-sink offers AUTH and takes any login: this checks runbot logs in.
            ("RUNBOT__EMAIL__USERNAME".into(), "runbot".into()),
            (
                "RUNBOT__EMAIL__PASSWORD".into(),
                "smtp-password-0123".into(),
            ),
            (
                "RUNBOT__EMAIL__FROM".into(),
                "Runbot <runbot@example.com>".into(),
            ),
        ],
    )
    .unwrap();
    let mailer = Mailer::new(settings.parsed.email.as_ref().expect("email is on")).unwrap();
    assert_eq!(mailer.via(), "email");
    let id = unique_id();
    let rcpt = format!("ana-{id}@example.com");

    mailer.send(&rcpt, &page(id)).await.unwrap();

    let text = dumped_message_for(&rcpt);
    let (headers, body) = text
        .split_once("\n\n")
        .expect("headers, a blank line, a body");
    // smtp-sink's own lines first, then the message as runbot sent it.
    assert!(
        headers.contains("X-Mail-Args: <runbot@example.com>"),
        "{text}"
    );
    assert!(headers.contains(&format!("To: {rcpt}")), "{text}");
    assert!(
        headers.contains("From: Runbot <runbot@example.com>"),
        "{text}"
    );
    // The middle dot is encoded (RFC 2047); the rest stays readable.
    assert!(
        headers.contains("\nSubject: Sev1 =?utf-8?b?wrc=?= APIDown: API down\n"),
        "{text}"
    );
    assert!(
        headers.contains(&format!("Message-ID: <page-{id}@example.com>")),
        "{text}"
    );
    assert!(headers.contains(&format!("X-Runbot-Page: {id}")), "{text}");
    assert!(headers.contains("Content-Type: text/plain"), "{text}");
    for line in [
        "backend answers 502 on /api/health for 3 minutes",
        "Paged: Ana",
        "Role: devops-lead",
        "Why: step 1 of sev1",
        "Console: https://runbot.example.com/groups/17",
    ] {
        assert!(body.contains(line), "{line:?} missing from {body}");
    }
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_a_temporary_failure() {
    // A port nobody listens on: the connection is refused.
    let port = free_port();
    let mailer = Mailer::new(&loopback_server(port)).unwrap();
    let err = mailer
        .send("ana@example.com", &page(unique_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, PageError::Temporary { .. }), "{err:?}");
}

/// An smtp-sink of the test's own, answering `args` (e.g. `-f RCPT`: 5xx to RCPT TO).
struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    fn start(args: &[&str]) -> Sink {
        let bin = std::env::var("RUNBOT_TEST_SMTP_SINK_BIN").expect(
            "RUNBOT_TEST_SMTP_SINK_BIN is not set: run the tests with scripts/test, which installs postfix's smtp-sink",
        );
        let port = free_port();
        let mut cmd = Command::new(bin);
        // As root, smtp-sink must drop to another user.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .args(args)
            .arg(format!("127.0.0.1:{port}"))
            .arg("8")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sink { child, port }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_relay_refusing_with_5xx_is_permanent_and_with_4xx_temporary() {
    let hard = Sink::start(&["-f", "RCPT"]);
    let err = Mailer::new(&loopback_server(hard.port))
        .unwrap()
        .send("ana@example.com", &page(unique_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, PageError::Permanent(_)), "{err:?}");

    // A refused login is for good too, and shows runbot does log in when told to.
    let no_login = Sink::start(&["-f", "AUTH"]);
    let mut server = loopback_server(no_login.port);
    let mailer_without_login = Mailer::new(&server).unwrap();
    server.login = Some(("runbot".into(), SecretString::from("smtp-password-0123")));
    let err = Mailer::new(&server)
        .unwrap()
        .send("ana@example.com", &page(unique_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, PageError::Permanent(_)), "{err:?}");
    mailer_without_login
        .send("ana@example.com", &page(unique_id()))
        .await
        .unwrap();

    let soft = Sink::start(&["-r", "RCPT"]);
    let err = Mailer::new(&loopback_server(soft.port))
        .unwrap()
        .send("ana@example.com", &page(unique_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, PageError::Temporary { .. }), "{err:?}");
}

/// What the receiver saw of one delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Delivery {
    pub fn new(headers: HeaderMap, body: Vec<u8>) -> Delivery {
        Delivery { headers, body }
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A webhook receiver on a free port: records each delivery and answers `status` with
/// `headers`, after `delay`.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

async fn receiver(
    status: StatusCode,
    extra: &'static [(&'static str, &'static str)],
    delay: Duration,
) -> Receiver {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(Delivery {
                    headers,
                    body: body.to_vec(),
                });
                tokio::time::sleep(delay).await;
                let mut response = axum::http::Response::builder().status(status);
                for (k, v) in extra {
                    response = response.header(*k, *v);
                }
                response.body(axum::body::Body::empty()).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { port, seen }
}

fn target(name: &str, url: String, timeout: Duration) -> WebhookTarget {
    WebhookTarget {
        name: name.into(),
        url: url.parse().unwrap(),
        secret: SecretString::from(SECRET),
        timeout,
    }
}

fn webhooks(targets: Vec<WebhookTarget>) -> Webhooks {
    Webhooks::new(&targets).unwrap().expect("some webhooks")
}

/// What docs/notify.md tells a receiver to do: recompute the HMAC over `timestamp.body` with
/// the shared secret, compare in constant time, and refuse an old timestamp.
pub fn receiver_accepts(secret: &str, d: &Delivery) -> bool {
    let header = |name: &str| d.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) =
        (header("x-runbot-timestamp"), header("x-runbot-signature"))
    else {
        return false;
    };
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sent) = timestamp.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(sent) > 300 {
        return false;
    }
    let Some(bytes) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&d.body);
    mac.verify_slice(&bytes).is_ok()
}

#[tokio::test]
async fn a_webhook_page_is_signed_so_the_receiver_can_verify_it_and_a_wrong_secret_cannot() {
    let rx = receiver(StatusCode::NO_CONTENT, &[], Duration::ZERO).await;
    let hooks = webhooks(vec![target(
        "sms",
        format!("http://127.0.0.1:{}/hook", rx.port),
        Duration::from_secs(5),
    )]);
    assert_eq!(hooks.via(), "webhook");

    hooks.send("sms", &page(4242)).await.unwrap();

    let seen = rx.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one attempt, one delivery");
    let d = &seen[0];
    assert!(receiver_accepts(SECRET, d), "{d:?}");
    assert!(!receiver_accepts("another-secret-0123456789", d));
    // A body changed on the way no longer verifies.
    let mut tampered = d.clone();
    tampered.body = String::from_utf8(d.body.clone())
        .unwrap()
        .replace("Ana", "Eve")
        .into_bytes();
    assert!(!receiver_accepts(SECRET, &tampered));

    assert_eq!(d.headers["idempotency-key"], "page-4242");
    assert_eq!(d.headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(body["page_id"], 4242);
    assert_eq!(body["group_id"], 17);
    assert_eq!(body["severity"], "sev1");
    assert_eq!(body["title"], "Sev1 · APIDown: API down");
    assert_eq!(body["person"], "Ana");
    assert_eq!(body["role"], "devops-lead");
    assert_eq!(body["reason"], "step 1 of sev1");
    assert_eq!(body["url"], "https://runbot.example.com/groups/17");
    let sent_at = chrono::DateTime::parse_from_rfc3339(body["sent_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let stamped: i64 = d.headers["x-runbot-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sent_at, stamped,
        "sent_at and the signed timestamp are one instant"
    );
    assert_eq!(
        body["summary"],
        "backend answers 502 on /api/health for 3 minutes"
    );
}

#[tokio::test]
async fn a_webhook_answering_503_is_temporary_and_400_permanent() {
    let busy = receiver(StatusCode::SERVICE_UNAVAILABLE, &[], Duration::ZERO).await;
    let bad = receiver(StatusCode::BAD_REQUEST, &[], Duration::ZERO).await;
    let hooks = webhooks(vec![
        target(
            "busy",
            format!("http://127.0.0.1:{}/hook", busy.port),
            Duration::from_secs(5),
        ),
        target(
            "bad",
            format!("http://127.0.0.1:{}/hook", bad.port),
            Duration::from_secs(5),
        ),
    ]);

    let err = hooks.send("busy", &page(1)).await.unwrap_err();
    assert_eq!(
        err,
        PageError::Temporary {
            reason: "webhook busy answered 503 Service Unavailable".into(),
            retry_after: None
        }
    );
    let err = hooks.send("bad", &page(2)).await.unwrap_err();
    assert!(
        matches!(err, PageError::Permanent(ref r) if r.contains("400")),
        "{err:?}"
    );
    // One attempt each: retrying is the engine's job.
    assert_eq!(busy.seen.lock().unwrap().len(), 1);
    assert_eq!(bad.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_webhook_answering_429_passes_on_its_retry_after() {
    let limited = receiver(
        StatusCode::TOO_MANY_REQUESTS,
        &[("retry-after", "7")],
        Duration::ZERO,
    )
    .await;
    let hooks = webhooks(vec![target(
        "gateway",
        format!("http://127.0.0.1:{}/hook", limited.port),
        Duration::from_secs(5),
    )]);
    let err = hooks.send("gateway", &page(3)).await.unwrap_err();
    assert!(
        matches!(err, PageError::Temporary { retry_after: Some(wait), .. } if wait == Duration::from_secs(7)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_slow_or_unreachable_webhook_is_temporary_and_never_shows_its_url_credentials() {
    let slow = receiver(StatusCode::OK, &[], Duration::from_secs(5)).await;
    let closed = free_port();
    let hooks = webhooks(vec![
        target(
            "slow",
            format!("http://127.0.0.1:{}/hook", slow.port),
            Duration::from_secs(1),
        ),
        target(
            "closed",
            format!("http://user:hunter2-token@127.0.0.1:{closed}/hook?key=hunter3"),
            Duration::from_secs(1),
        ),
    ]);
    let started = Instant::now();
    let err = hooks.send("slow", &page(5)).await.unwrap_err();
    assert!(matches!(err, PageError::Temporary { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout applied"
    );

    let err = hooks.send("closed", &page(6)).await.unwrap_err();
    let PageError::Temporary { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("closed"), "{reason}");
    assert!(!reason.contains("hunter"), "{reason}");
}

#[tokio::test]
async fn a_page_to_an_unknown_webhook_is_refused_for_good() {
    let hooks = webhooks(vec![target(
        "sms",
        format!("http://127.0.0.1:{}/hook", free_port()),
        Duration::from_secs(1),
    )]);
    let err = hooks.send("pager", &page(7)).await.unwrap_err();
    assert!(
        matches!(err, PageError::Permanent(ref r) if r.contains("pager")),
        "{err:?}"
    );
}

fn load(toml: &str) -> Result<Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runbot.toml");
    std::fs::write(&file, toml).unwrap();
    Settings::load_from(Some(&file), vec![]).map_err(|e| e.to_string())
}

#[test]
fn bad_webhook_settings_name_the_key_and_the_fix_and_never_echo_a_secret() {
    let err = load(
        r#"
[[notify.webhooks]]
name = "sms"
url = "ftp://user:pw-hunter2@sms.example.com/hook"
secret = "short-hunter"

[[notify.webhooks]]
name = "sms"
url = "https://sms.example.com/hook"
secret = "long-enough-secret-0123456789"
timeout_secs = 0

[[notify.webhooks]]
name = "Pager!"
url = "not a url"
secret = "long-enough-secret-0123456789"
"#,
    )
    .unwrap_err();
    for part in [
        "notify.webhooks[0].url",
        "must be an http(s) URL",
        "notify.webhooks[0].secret must be at least 16 characters",
        "notify.webhooks[1].name = \"sms\" is used twice",
        "notify.webhooks[1].timeout_secs = 0 must be 1 to 60",
        "notify.webhooks[2].name = \"Pager!\"",
        "notify.webhooks[2].url",
    ] {
        assert!(err.contains(part), "{part:?} missing from {err}");
    }
    assert!(!err.contains("hunter"), "a secret was echoed: {err}");
}

#[test]
fn bad_email_settings_name_the_key_and_the_fix_and_never_echo_the_password() {
    let err = load(
        r#"
[email]
host = "smtp.example.com"
tls = "none"
username = "runbot"
password = "pw-hunter2"
from = "not an address"
timeout_secs = 0
"#,
    )
    .unwrap_err();
    for part in [
        "email.tls = \"none\"",
        "only to a relay on this host",
        "email.from = \"not an address\" is not an address",
        "email.timeout_secs = 0 must be 1 to 60",
    ] {
        assert!(err.contains(part), "{part:?} missing from {err}");
    }
    assert!(!err.contains("hunter"), "a secret was echoed: {err}");

    let err = load("[email]\nhost = \"smtp.example.com\"\nusername = \"runbot\"\n").unwrap_err();
    assert!(
        err.contains("email.username and email.password go together"),
        "{err}"
    );
    assert!(err.contains("email.from is required"), "{err}");
    let err = load("[email]\ntls = \"smime\"\n").unwrap_err();
    assert!(err.contains("smime"), "{err}");

    // Unset host: no mailer, and the defaults are the documented ones.
    let s = load("").unwrap();
    assert!(s.parsed.email.is_none());
    assert!(s.parsed.webhooks.is_empty());
    assert_eq!(
        (s.email.port, s.email.tls, s.email.timeout_secs),
        (587, SmtpTls::Starttls, 10)
    );
    // tls = "none" is fine to this host.
    let s =
        load("[email]\nhost = \"::1\"\ntls = \"none\"\nfrom = \"runbot@example.com\"\n").unwrap();
    assert_eq!(s.parsed.email.unwrap().tls, SmtpTls::None);
}

#[test]
fn check_config_names_the_relay_and_the_webhooks_but_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runbot.toml");
    std::fs::write(
        &file,
        r#"
[email]
host = "smtp.example.com"
username = "runbot"
password = "pw-hunter2"
from = "Runbot <runbot@example.com>"

[[notify.webhooks]]
name = "sms"
url = "https://user:url-hunter3@sms.example.com/hook"
secret = "webhook-hunter4-0123456789"

[[notify.webhooks]]
name = "pager"
url = "https://pager.example.com/hook"
secret = "webhook-hunter5-0123456789"
"#,
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .current_dir(dir.path())
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "email                smtp.example.com:587 starttls from runbot@example.com (with a login)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhooks             sms, pager"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter") && !stderr.contains("hunter"),
        "{stdout}{stderr}"
    );
}
