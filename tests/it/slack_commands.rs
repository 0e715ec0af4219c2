//! Slash commands and buttons from Slack, end to end, over HTTP (signed posts to `/slack/*`)
//! and over Socket Mode (envelopes on runbot's own connection to the fake Slack): the same
//! answers, refusals and audit rows either way. Slack has no roles: people hold runbot's
//! roles by member id (`slack_users` in policies/roles.toml).

use crate::common;

use std::time::{Duration, Instant};

use common::rig::shipped_policies;
use common::{webhook, Db, Options, TestApp};
use fake_slack::{FakeSlack, BOT_TOKEN, SIGNING_SECRET};
use serde_json::{json, Value};

const CHANNEL: &str = "C0OPS00001";
const WAIT: Duration = Duration::from_secs(10);
const FORM: &str = "application/x-www-form-urlencoded";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Http,
    Socket,
}

struct Person {
    id: &'static str,
    name: &'static str,
}

const ANA: Person = Person {
    id: "U0ANA0001",
    name: "ana",
};
const BRUNO: Person = Person {
    id: "U0BRUNO01",
    name: "bruno",
};
const CARLA: Person = Person {
    id: "U0CARLA01",
    name: "carla",
};
const DEV: Person = Person {
    id: "U0DEV0001",
    name: "dev",
};
const STRANGER: Person = Person {
    id: "U0NOBODY1",
    name: "stranger",
};

/// Roles by Slack member id.
fn roles_toml() -> String {
    let role = |name: &str, hours: &str, user: &str| {
        format!("[roles.{name}]\ndiscord_roles = []\ndiscord_users = []\nslack_users = [{user}]\nhours = \"{hours}\"\n\n")
    };
    let q = |p: &Person| format!("\"{}\"", p.id);
    [
        role("devops-lead", "24/7", &q(&ANA)),
        role("backend-lead", "24/7", &q(&BRUNO)),
        role("cto", "24/7", &q(&CARLA)),
        role("dba", "24/7", ""),
        role("security", "24/7", ""),
        role("developer", "24/7", &q(&DEV)),
        role("viewer", "business", ""),
    ]
    .concat()
}

/// What a command got back: its first answer and the response_url later answers went to.
struct Sent {
    first: Value,
    url: String,
}

struct Slack {
    fake: FakeSlack,
    app: TestApp,
    mode: Mode,
}

impl Slack {
    async fn start(mode: Mode) -> Slack {
        Self::start_with(mode, &[]).await
    }

    async fn start_with(mode: Mode, extra: &[(&str, &str)]) -> Slack {
        Self::start_on(mode, extra, None).await
    }

    /// On `database_url` when given (a replica of another runbot), else a fresh database.
    async fn start_on(mode: Mode, extra: &[(&str, &str)], database_url: Option<String>) -> Slack {
        let fake = FakeSlack::start().await;
        let policies = shipped_policies(&tempfile::tempdir().unwrap().keep(), &roles_toml());
        let mut opts = Options::new(Db::Sqlite)
            .set("RUNBOT__SLACK__BOT_TOKEN", BOT_TOKEN)
            .set("RUNBOT__SLACK__ALERT_CHANNEL_ID", CHANNEL)
            .set("RUNBOT__SLACK__API_BASE", &fake.api_base())
            .set("RUNBOT__POLICY__DIR", &policies.display().to_string());
        opts = match mode {
            Mode::Http => opts
                .set("RUNBOT__SLACK__MODE", "http")
                .set("RUNBOT__SLACK__SIGNING_SECRET", SIGNING_SECRET),
            Mode::Socket => opts
                .set("RUNBOT__SLACK__MODE", "socket")
                .set("RUNBOT__SLACK__APP_TOKEN", fake_slack::APP_TOKEN),
        };
        for (k, v) in extra {
            opts = opts.set(k, v);
        }
        opts.database_url = database_url;
        let app = TestApp::spawn_with(opts).await;
        if mode == Mode::Socket {
            fake.wait_for("a Socket Mode connection", WAIT, |f| {
                (f.connected() > 0).then_some(())
            })
            .await;
        }
        Slack { fake, app, mode }
    }

    async fn post(&self, path: &str, content_type: &str, body: String) -> (u16, String) {
        fake_slack::post_signed(
            &format!("{}{path}", self.app.url),
            content_type,
            body,
            SIGNING_SECRET,
            chrono::Utc::now().timestamp(),
        )
        .await
    }

    /// `/command text` typed by `who`.
    async fn command(&self, who: &Person, command: &str, text: &str) -> Sent {
        let url = self.fake.response_url();
        let command = format!("/{command}");
        let first = match self.mode {
            Mode::Http => {
                let form =
                    fake_slack::slash_command_form(&command, text, who.id, who.name, CHANNEL, &url);
                let (status, body) = self.post("/slack/commands", FORM, form).await;
                assert_eq!(status, 200, "{body}");
                serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
            }
            Mode::Socket => {
                let payload = fake_slack::slash_command_payload(
                    &command, text, who.id, who.name, CHANNEL, &url,
                );
                let id = self
                    .fake
                    .send_envelope("slash_commands", payload, true)
                    .await;
                let ack = self
                    .fake
                    .wait_ack(&id, Duration::from_secs(3))
                    .await
                    .expect("an ack within 3 s");
                assert!(ack.after < Duration::from_secs(3), "{:?}", ack.after);
                ack.payload.expect("the first answer rides on the ack")
            }
        };
        assert!(
            self.fake.bad_acks().is_empty(),
            "{:?}",
            self.fake.bad_acks()
        );
        Sent { first, url }
    }

    /// A click on button `action_id` of message `ts` by `who`; the response_url it answers on.
    async fn click(&self, who: &Person, action_id: &str, ts: &str) -> String {
        let url = self.fake.response_url();
        let payload = fake_slack::block_actions_payload(
            action_id, action_id, who.id, who.name, CHANNEL, ts, &url,
        );
        match self.mode {
            Mode::Http => {
                let (status, body) = self
                    .post(
                        "/slack/interactions",
                        FORM,
                        fake_slack::interaction_form(&payload),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
            Mode::Socket => {
                let id = self.fake.send_envelope("interactive", payload, false).await;
                let ack = self.fake.wait_ack(&id, Duration::from_secs(3)).await;
                assert!(ack.is_some_and(|a| a.payload.is_none()));
            }
        }
        url
    }

    /// Waits for a post to `url` whose text says `text`.
    async fn answer_saying(&self, url: &str, text: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self
                .fake
                .responses(url)
                .into_iter()
                .rev()
                .find(|v| said(v).contains(text))
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no answer saying {text:?} on {url}: {:?}",
                self.fake.responses(url)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The audit trail, oldest first.
    fn audit(&self) -> Vec<Value> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"))
            .args(["audit", "export", "--format", "jsonl"])
            .env("RUNBOT__DATABASE__URL", &self.app.database_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn steps(&self) -> Vec<String> {
        self.audit()
            .iter()
            .map(|e| e["step"].as_str().unwrap().to_string())
            .collect()
    }

    async fn stop(self) {
        self.app.stop().await;
    }
}

/// Every string in a message body, joined: its text, blocks and fields.
fn said(v: &Value) -> String {
    let mut out = String::new();
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

/// The `action_id`s of a message's buttons.
fn action_ids(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => {
                if let Some(id) = o.get("action_id").and_then(Value::as_str) {
                    out.push(id.to_string());
                }
                o.values().for_each(|x| walk(x, out));
            }
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

fn button(v: &Value, suffix: &str) -> String {
    action_ids(v)
        .into_iter()
        .find(|id| id.ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix} button in {v}"))
}

// ---------------------------------------------------------------------------------------
// Both ways

async fn allowed_denied_unknown_and_unparsable(mode: Mode) {
    let s = Slack::start(mode).await;

    // A read command: "working on it" to the requester, then the result by response_url.
    let sent = s.command(&ANA, "status", "").await;
    assert_eq!(sent.first["response_type"], "ephemeral", "{}", sent.first);
    let done = s.answer_saying(&sent.url, "docker.project").await;
    assert_eq!(done["replace_original"], true, "{done}");

    // Someone in no role: refused with the reason, to them only, nothing run.
    let sent = s.command(&DEV, "restart", "backend").await;
    let text = said(&sent.first);
    assert_eq!(sent.first["response_type"], "ephemeral");
    assert!(
        text.contains("/restart needs devops-lead or backend-lead") && text.contains("developer"),
        "{text}"
    );
    let sent = s.command(&STRANGER, "status", "").await;
    assert!(
        said(&sent.first).contains("no runbot role"),
        "{}",
        sent.first
    );

    // An unknown command: the close name and the known ones.
    let sent = s.command(&ANA, "restat", "").await;
    assert!(
        said(&sent.first).contains("Did you mean /restart?"),
        "{}",
        sent.first
    );
    // A line that does not parse: what is wrong and the usage line; audited as invalid.
    let sent = s.command(&ANA, "logs", "backend worker").await;
    let text = said(&sent.first);
    assert!(
        text.contains("does not take") && text.contains("usage: /logs"),
        "{text}"
    );
    // A dry run says what it would do and changes nothing.
    let sent = s.command(&BRUNO, "restart", "worker dry_run:true").await;
    assert!(said(&sent.first).contains("Dry run"), "{}", sent.first);

    let steps = s.steps();
    assert_eq!(
        steps,
        [
            "requested",
            "started",
            "failed",
            "denied",
            "denied",
            "invalid",
            "invalid",
            "requested",
            "dry_run"
        ],
        "{steps:?}"
    );
    // Who: the Slack member, by the name Slack gave.
    let audit = s.audit();
    assert_eq!(audit[0]["actor_platform"], "slack", "{}", audit[0]);
    assert_eq!(audit[0]["actor_id"], ANA.id);
    assert_eq!(audit[0]["actor_name"], ANA.name);
    s.stop().await;
}

#[tokio::test]
async fn commands_allowed_denied_and_refused_over_http() {
    allowed_denied_unknown_and_unparsable(Mode::Http).await;
}

#[tokio::test]
async fn commands_allowed_denied_and_refused_over_socket_mode() {
    allowed_denied_unknown_and_unparsable(Mode::Socket).await;
}

async fn confirm_then_approval(mode: Mode) {
    let s = Slack::start(mode).await;
    // A command that asks for confirmation: an ephemeral prompt, then its Confirm button.
    let sent = s.command(&BRUNO, "restart", "worker").await;
    assert_eq!(sent.first["response_type"], "ephemeral", "{}", sent.first);
    let confirm = button(&sent.first, ":confirm");
    let url = s.click(&BRUNO, &confirm, "1700000000.000001").await;
    let done = s.answer_saying(&url, "set docker.project").await;
    assert_eq!(done["replace_original"], true, "the prompt is replaced");
    assert!(action_ids(&done).is_empty(), "no buttons left: {done}");

    // During a Sev1 the same command waits for a second person, asked in the channel.
    let alert = json!({"severity": "critical", "instance": "api-1:8000"});
    let body = webhook(
        "APIDown",
        "firing",
        &[("aaaa000000000001", "firing", alert)],
    );
    assert_eq!(s.app.post_webhook(body.to_string()).await.status(), 200);
    let sent = s.command(&BRUNO, "restart", "worker").await;
    assert_eq!(
        sent.first["response_type"], "in_channel",
        "approvers must see it: {}",
        sent.first
    );
    assert!(said(&sent.first).contains("asks to run"), "{}", sent.first);
    let approve = button(&sent.first, ":approve");
    // Not by the requester.
    let own = s.click(&BRUNO, &approve, "1700000000.000002").await;
    let refused = s.answer_saying(&own, "your own request").await;
    assert_eq!(refused["response_type"], "ephemeral");
    assert_ne!(
        refused["replace_original"], true,
        "a refusal leaves the prompt"
    );
    // By the CTO: the prompt is replaced, and the command runs.
    let ok = s.click(&CARLA, &approve, "1700000000.000002").await;
    s.answer_saying(&ok, "set docker.project").await;
    let steps = s.steps();
    assert!(steps.contains(&"approved".to_string()), "{steps:?}");
    assert!(steps.contains(&"confirmed".to_string()), "{steps:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_prompt_is_confirmed_and_a_sev1_command_approved_over_http() {
    confirm_then_approval(Mode::Http).await;
}

#[tokio::test]
async fn a_prompt_is_confirmed_and_a_sev1_command_approved_over_socket_mode() {
    confirm_then_approval(Mode::Socket).await;
}

async fn rate_limited(mode: Mode) {
    let s = Slack::start_with(
        mode,
        &[
            ("RUNBOT__INTERACTIONS__PER_USER_PER_MINUTE", "2"),
            ("RUNBOT__INTERACTIONS__PER_USER_BURST", "2"),
        ],
    )
    .await;
    for _ in 0..2 {
        let sent = s.command(&ANA, "status", "").await;
        assert!(!said(&sent.first).contains("faster"), "{}", sent.first);
    }
    let sent = s.command(&ANA, "status", "").await;
    assert!(
        said(&sent.first).contains("faster than runbot takes them"),
        "{}",
        sent.first
    );
    // Someone else is not held back.
    let sent = s.command(&BRUNO, "status", "").await;
    assert!(!said(&sent.first).contains("faster"), "{}", sent.first);
    assert!(s.steps().contains(&"rate_limited".to_string()));
    s.stop().await;
}

#[tokio::test]
async fn the_per_user_limit_refuses_over_http() {
    rate_limited(Mode::Http).await;
}

#[tokio::test]
async fn the_per_user_limit_refuses_over_socket_mode() {
    rate_limited(Mode::Socket).await;
}

async fn card_button(mode: Mode) {
    let s = Slack::start(mode).await;
    let alert = json!({"severity": "critical", "instance": "api-1:8000"});
    let body = webhook(
        "APIDown",
        "firing",
        &[("aaaa000000000001", "firing", alert)],
    );
    assert_eq!(s.app.post_webhook(body.to_string()).await.status(), 200);
    // The card as runbot posted it (the fake keeps a message's top-level blocks only; the
    // card's are in its coloured attachment).
    let (ts, ids) = s
        .fake
        .wait_for("the alert card", WAIT, |f| {
            f.requests()
                .into_iter()
                .filter(|r| r.method == "chat.postMessage" && r.ok)
                .map(|r| {
                    (
                        r.answer["ts"].as_str().unwrap_or_default().to_string(),
                        action_ids(&r.body),
                    )
                })
                .find(|(_, ids)| !ids.is_empty())
        })
        .await;
    let ack = ids
        .iter()
        .find(|id| id.starts_with("rb1:") && id.ends_with(":4"))
        .cloned()
        .unwrap_or_else(|| panic!("the APIDown card's fifth button: {ids:?}"));
    let url = s.click(&BRUNO, &ack, &ts).await;
    let done = s.answer_saying(&url, "acknowledged APIDown").await;
    // A card's button never replaces the card: the answer is a message of its own.
    assert_ne!(done["replace_original"], true, "{done}");
    s.fake
        .wait_for("the card to say who acknowledged", WAIT, |f| {
            f.requests().into_iter().find(|r| {
                r.method == "chat.update"
                    && r.body["ts"] == ts.as_str()
                    && said(&r.body).contains("Acknowledged by")
            })
        })
        .await;
    s.stop().await;
}

#[tokio::test]
async fn a_button_on_a_card_works_over_http() {
    card_button(Mode::Http).await;
}

#[tokio::test]
async fn a_button_on_a_card_works_over_socket_mode() {
    card_button(Mode::Socket).await;
}

/// Each option type typed as text, through Slack's path: what the core received is in the
/// audit trail's args (a person in no role is refused after the options were validated).
#[tokio::test]
async fn typed_options_of_every_type_are_parsed_and_their_errors_said() {
    let s = Slack::start_with(
        Mode::Http,
        &[
            ("RUNBOT__INTERACTIONS__PER_USER_PER_MINUTE", "600"),
            ("RUNBOT__INTERACTIONS__PER_USER_BURST", "100"),
        ],
    )
    .await;
    let good = [
        // choices (positional), integer, quoted string, duration
        (
            "logs",
            r#"worker tail:200 grep:"connection refused" since:15m"#,
            json!({"service": "worker", "tail": 200, "grep": "connection refused", "since": "15m"}),
        ),
        // cidr (an address, and a range), duration, single quotes
        (
            "block-ip",
            "203.0.113.7 ttl:12h reason:'port scan'",
            json!({"address": "203.0.113.7", "ttl": "12h", "reason": "port scan"}),
        ),
        (
            "block-ip",
            "address:198.51.100.0/24",
            json!({"address": "198.51.100.0/24"}),
        ),
        // tag, boolean
        (
            "deploy",
            "v1.2.3 dry_run:false",
            json!({"tag": "v1.2.3", "dry_run": false}),
        ),
        // a named choice and an integer
        (
            "scale",
            "service:backend replicas:3",
            json!({"service": "backend", "replicas": 3}),
        ),
    ];
    for (command, text, _) in &good {
        let sent = s.command(&STRANGER, command, text).await;
        assert!(
            said(&sent.first).contains("no runbot role"),
            "/{command} {text}: {}",
            sent.first
        );
    }
    let audit = s.audit();
    assert_eq!(audit.len(), good.len());
    for (entry, (command, text, want)) in audit.iter().zip(&good) {
        assert_eq!(entry["step"], "denied", "{entry}");
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&entry["args"][k], v, "/{command} {text}: {k} in {entry}");
        }
    }

    let bad = [
        ("logs", "worker tail:many", "tail"),
        ("logs", "service:mainframe", "mainframe"),
        ("logs", r#"worker grep:"open"#, "not closed"),
        ("logs", "worker extra", "does not take"),
        ("block-ip", "not-an-address", "address"),
        ("block-ip", "203.0.113.7 ttl:forever", "ttl"),
        ("deploy", "latest; rm -rf /", "does not take"),
        ("deploy", "'latest; rm -rf /'", "tag"),
        ("deploy", "v1.2.3 dry_run:maybe", "dry_run"),
        ("scale", "backend replicas:3.5", "replicas"),
    ];
    for (command, text, says) in bad {
        let sent = s.command(&STRANGER, command, text).await;
        let answer = said(&sent.first);
        assert!(
            answer.contains(says) && answer.contains('🚫'),
            "/{command} {text}: {answer}"
        );
    }
    let steps = s.steps();
    assert_eq!(
        steps.iter().filter(|s| *s == "invalid").count(),
        bad.len(),
        "{steps:?}"
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// HTTP only

fn refused_total(metrics: &str, reason: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("runbot_interactions_refused_total")
                && l.contains("platform=\"slack\"")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn forged_stale_and_replayed_requests_are_refused_and_change_nothing() {
    let s = Slack::start(Mode::Http).await;
    let url = s.fake.response_url();
    let form = fake_slack::slash_command_form("/status", "", ANA.id, ANA.name, CHANNEL, &url);
    let commands = format!("{}/slack/commands", s.app.url);
    let now = chrono::Utc::now().timestamp();

    // Forged: signed with another secret.
    let (status, body) = fake_slack::post_signed(
        &commands,
        FORM,
        form.clone(),
        "0000000000000000aaaaaaaaaaaaaaaa",
        now,
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("invalid request signature"), "{body}");
    // Unsigned.
    let r = s
        .app
        .client
        .post(&commands)
        .header("content-type", FORM)
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Stale: signed right, ten minutes ago.
    let (status, body) =
        fake_slack::post_signed(&commands, FORM, form.clone(), SIGNING_SECRET, now - 600).await;
    assert_eq!(status, 401);
    assert!(body.contains("too old"), "{body}");
    // The wrong content type.
    let (status, _) = fake_slack::post_signed(
        &commands,
        "application/json",
        form.clone(),
        SIGNING_SECRET,
        now,
    )
    .await;
    assert_eq!(status, 415);
    // Over the body limit (1 MiB), signed or not.
    let (status, _) = fake_slack::post_signed(
        &commands,
        FORM,
        format!("{form}&pad={}", "a".repeat(1 << 20)),
        SIGNING_SECRET,
        now,
    )
    .await;
    assert_eq!(status, 413);
    assert!(s.audit().is_empty(), "nothing ran");
    assert!(s.fake.responses(&url).is_empty());

    // Accepted once; the same signed request again is a replay.
    let signature = fake_slack::sign(SIGNING_SECRET, now, form.as_bytes());
    let send = || {
        s.app
            .client
            .post(&commands)
            .header("content-type", FORM)
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", &signature)
            .body(form.clone())
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let r = send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("already received"));
    s.answer_saying(&url, "docker.project").await;
    let ran = s.audit().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.audit().len(), ran, "the replay ran nothing");
    assert_eq!(s.steps().iter().filter(|s| *s == "requested").count(), 1);

    // Another replica on the same database refuses it too (the record is in the database).
    let replica = Slack::start_on(Mode::Http, &[], Some(s.app.database_url.clone())).await;
    let r = replica
        .app
        .client
        .post(format!("{}/slack/commands", replica.app.url))
        .header("content-type", FORM)
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", &signature)
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("already received"));
    replica.stop().await;
    assert_eq!(s.steps().iter().filter(|s| *s == "requested").count(), 1);

    let metrics = s
        .app
        .client
        .get(format!("{}/metrics", s.app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The recorder is the process's: other tests running at once count too.
    for reason in [
        "BadSignature",
        "MissingSignature",
        "Stale",
        "WrongContentType",
        "Replayed",
    ] {
        assert!(refused_total(&metrics, reason) >= 1, "{reason}: {metrics}");
    }
    s.stop().await;
}

#[tokio::test]
async fn events_url_verification_and_retries() {
    let s = Slack::start(Mode::Http).await;
    let challenge = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
    let (status, body) = s
        .post("/slack/events", "application/json", challenge.to_string())
        .await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["challenge"], challenge["challenge"]);
    // Another event, and Slack's retries of it: acknowledged, nothing runs. (The same bytes
    // within the same second sign the same: only a retry is let through again.)
    let event = json!({"type": "event_callback", "event": {"type": "app_mention", "text": "/restart backend"}}).to_string();
    let now = chrono::Utc::now().timestamp();
    let post = |retry: Option<&'static str>| {
        let mut r = s
            .app
            .client
            .post(format!("{}/slack/events", s.app.url))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", now.to_string())
            .header(
                "x-slack-signature",
                fake_slack::sign(SIGNING_SECRET, now, event.as_bytes()),
            )
            .body(event.clone());
        if let Some(n) = retry {
            r = r
                .header("x-slack-retry-num", n)
                .header("x-slack-retry-reason", "http_timeout");
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 200);
    assert_eq!(post(Some("1")).await.unwrap().status(), 200);
    assert_eq!(post(Some("2")).await.unwrap().status(), 200);
    // Not a retry: the same request again is a replay.
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert!(s.audit().is_empty());
    // Commands are forms, events JSON: the wrong one is refused.
    let (status, _) = s.post("/slack/events", FORM, "a=b".into()).await;
    assert_eq!(status, 415);
    s.stop().await;
}

#[tokio::test]
async fn in_socket_mode_the_routes_say_so() {
    let s = Slack::start(Mode::Socket).await;
    for path in ["/slack/commands", "/slack/interactions", "/slack/events"] {
        let (status, body) = s.post(path, FORM, "a=b".into()).await;
        assert_eq!(status, 404);
        assert!(body.contains("Socket Mode is on"), "{body}");
    }
    s.stop().await;
    // With Slack off: how to turn it on.
    let app = TestApp::spawn(Db::Sqlite).await;
    let r = app
        .client
        .post(format!("{}/slack/commands", app.url))
        .body("a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("slack.signing_secret"));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Socket Mode only

#[tokio::test]
async fn a_redelivered_envelope_runs_once() {
    let s = Slack::start(Mode::Socket).await;
    let url = s.fake.response_url();
    let payload =
        fake_slack::slash_command_payload("/restart", "backend", DEV.id, DEV.name, CHANNEL, &url);
    let id = s.fake.send_envelope("slash_commands", payload, true).await;
    let ack = s.fake.wait_ack(&id, Duration::from_secs(3)).await.unwrap();
    assert!(said(ack.payload.as_ref().unwrap()).contains("developer"));
    s.fake.resend_envelope(&id).await;
    s.fake
        .wait_for("the second ack", WAIT, |f| {
            f.acks()
                .iter()
                .any(|(e, a)| *e == id && a.count == 2)
                .then_some(())
        })
        .await;
    // A later command, so the redelivery was surely read before counting.
    let sent = s.command(&ANA, "status", "").await;
    s.answer_saying(&sent.url, "docker.project").await;
    assert_eq!(
        s.steps().iter().filter(|s| *s == "denied").count(),
        1,
        "{:?}",
        s.steps()
    );
    assert!(s.fake.bad_acks().is_empty(), "{:?}", s.fake.bad_acks());
    s.stop().await;
}

#[tokio::test]
async fn without_accepts_response_payload_the_first_answer_goes_by_response_url() {
    let s = Slack::start(Mode::Socket).await;
    let url = s.fake.response_url();
    let payload =
        fake_slack::slash_command_payload("/restart", "backend", DEV.id, DEV.name, CHANNEL, &url);
    let id = s.fake.send_envelope("slash_commands", payload, false).await;
    let ack = s.fake.wait_ack(&id, Duration::from_secs(3)).await.unwrap();
    assert!(ack.payload.is_none());
    let answer = s.answer_saying(&url, "developer").await;
    assert_eq!(answer["response_type"], "ephemeral");
    // An events_api envelope is acknowledged and runs nothing.
    let id = s
        .fake
        .send_envelope(
            "events_api",
            json!({"type": "event_callback", "event": {"type": "app_mention"}}),
            false,
        )
        .await;
    assert!(s.fake.wait_ack(&id, Duration::from_secs(3)).await.is_some());
    assert!(s.fake.bad_acks().is_empty(), "{:?}", s.fake.bad_acks());
    assert_eq!(s.steps(), ["denied"]);
    s.stop().await;
}

#[tokio::test]
async fn refresh_and_dropped_connections_reconnect() {
    let s = Slack::start(Mode::Socket).await;
    let opened = s.fake.connections_opened();
    assert_eq!(opened, 1);

    // Slack asks for a refresh: the new connection is opened, then the old one left.
    // Runbot opens the new connection before it leaves the old one (which the fake closes
    // 1 s after asking): it is never without one, where reconnecting after the close would
    // leave it without for the backoff's second.
    s.fake.request_refresh().await;
    let until = Instant::now() + Duration::from_millis(1500);
    let mut fewest = usize::MAX;
    while Instant::now() < until {
        fewest = fewest.min(s.fake.connected());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(s.fake.connections_opened(), 2);
    assert_eq!(fewest, 1, "a moment without a connection");
    assert_eq!(s.fake.connected(), 1);
    let sent = s.command(&ANA, "status", "").await;
    s.answer_saying(&sent.url, "docker.project").await;

    // The network drops: runbot reconnects (after 1 s) and the next command works.
    s.fake.drop_connections().await;
    s.fake
        .wait_for("a connection after the drop", WAIT, |f| {
            (f.connections_opened() == 3 && f.connected() == 1).then_some(())
        })
        .await;
    let sent = s.command(&BRUNO, "status", "").await;
    s.answer_saying(&sent.url, "docker.project").await;
    s.stop().await;
}

/// `/status` by `who` over Socket Mode, answered on the ack and then by response_url.
async fn status_over_socket(fake: &FakeSlack, who: &Person) {
    let url = fake.response_url();
    let payload = fake_slack::slash_command_payload("/status", "", who.id, who.name, CHANNEL, &url);
    let id = fake.send_envelope("slash_commands", payload, true).await;
    let ack = fake.wait_ack(&id, Duration::from_secs(3)).await;
    assert!(
        ack.is_some_and(|a| a.payload.is_some()),
        "no answer on the ack"
    );
    fake.wait_for("the status by response_url", WAIT, |f| {
        f.responses(&url)
            .iter()
            .any(|v| said(v).contains("docker.project"))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_silent_connection_is_noticed_by_its_pings_and_replaced() {
    use runbot::chat::slack::{inbound::Inbound, socket::SocketMode, SlackAdapter};
    use std::sync::Arc;
    // The recorder first: a gauge set before it is installed is lost.
    let metrics = runbot::telemetry::metrics_handle();
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = shipped_policies(dir.path(), &roles_toml());
    let env = [
        (
            "RUNBOT__DATABASE__URL",
            common::fresh_database(Db::Sqlite, dir.path()).await,
        ),
        ("RUNBOT__POLICY__DIR", policies.display().to_string()),
        (
            "RUNBOT__COMMANDS__DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/commands").into(),
        ),
        ("RUNBOT__SLACK__BOT_TOKEN", BOT_TOKEN.into()),
        ("RUNBOT__SLACK__APP_TOKEN", fake_slack::APP_TOKEN.into()),
        ("RUNBOT__SLACK__MODE", "socket".into()),
        ("RUNBOT__SLACK__ALERT_CHANNEL_ID", CHANNEL.into()),
        ("RUNBOT__SLACK__API_BASE", fake.api_base()),
    ];
    let settings = runbot::config::Settings::load_from(
        None,
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    )
    .unwrap();
    let store = runbot::store::Store::connect(&settings.database)
        .await
        .unwrap();
    let dispatcher = runbot::app::dispatcher(
        &settings,
        store.clone(),
        None,
        runbot::domain::clock::system_clock(),
    )
    .unwrap();
    let inbound = Arc::new(Inbound {
        dispatcher: Arc::new(dispatcher),
        adapter: Arc::new(SlackAdapter::new(&settings).unwrap()),
    });
    // The worker app.rs starts, with its pings every 200 ms and 1 s of silence allowed
    // (10 s and 30 s in production).
    let socket = SocketMode::new(&settings, inbound, store)
        .unwrap()
        .with_keepalive(Duration::from_millis(200), Duration::from_secs(1));
    let worker = tokio::spawn(Arc::new(socket).run());
    fake.wait_for("a Socket Mode connection", WAIT, |f| {
        (f.connected() == 1).then_some(())
    })
    .await;
    status_over_socket(&fake, &ANA).await;
    let gauge = metrics
        .render()
        .lines()
        .find(|l| l.starts_with("runbot_chat_connected{platform=\"slack\"}"))
        .map(str::to_string);
    assert_eq!(
        gauge.as_deref(),
        Some("runbot_chat_connected{platform=\"slack\"} 1")
    );

    // Quiet but alive: the pings' pongs keep it, well past the silence allowed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fake.connections_opened(),
        1,
        "a live connection was dropped"
    );

    // The connection goes silent without closing: runbot notices and opens another.
    let frozen = Instant::now();
    fake.freeze_connections();
    assert_eq!(fake.connected(), 0);
    fake.wait_for("a new connection after the silence", WAIT, |f| {
        (f.connections_opened() == 2 && f.connected() == 1).then_some(())
    })
    .await;
    assert!(
        frozen.elapsed() >= Duration::from_millis(900),
        "replaced before it was silent for long: {:?}",
        frozen.elapsed()
    );
    status_over_socket(&fake, &BRUNO).await;
    worker.abort();
}
