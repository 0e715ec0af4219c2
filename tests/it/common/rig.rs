//! The invocation core with the shipped commands and policies on a fresh database: a
//! dispatcher, people to ask as, and a responder that keeps what the core edits in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use runbot::audit::{Audit, AuditFilter, Step};
use runbot::config::Settings;
use runbot::domain::clock::Clock;
use runbot::invocation::Dispatcher;
use runbot::request::RawValue;
use runbot::request::Reply;
use runbot::request::{Actor, Answer, BoxFuture, Origin, Platform, Request, Responder};
use runbot::store::Store;
use sqlx::Connection;

use super::{fresh_database, Db};
use fake_discord::FakeDiscord;

/// Everyone on call around the clock, so these tests do not depend on the hour; hours are
/// covered by tests/it/policy.rs.
pub const ROLES: &str = r#"
[roles.devops-lead]
discord_users = ["100000000000000001"]
discord_roles = []
slack_users = []
hours = "24/7"

[roles.cto]
discord_users = ["100000000000000002"]
discord_roles = []
slack_users = []
hours = "24/7"

[roles.backend-lead]
discord_users = ["100000000000000003"]
discord_roles = ["900000000000000003"]
slack_users = []
hours = "24/7"

[roles.developer]
discord_users = ["100000000000000004"]
discord_roles = []
slack_users = []
hours = "24/7"

[roles.dba]
discord_users = ["100000000000000005"]
discord_roles = []
slack_users = []
hours = "24/7"

[roles.security]
discord_users = []
discord_roles = []
slack_users = []
hours = "24/7"

[roles.viewer]
discord_users = []
discord_roles = []
slack_users = []
hours = "business"
"#;

pub fn person(id: &str, name: &str) -> Actor {
    Actor {
        platform: Platform::Discord,
        user_id: id.into(),
        name: name.into(),
        platform_roles: vec![],
        roles: vec![],
    }
}

pub fn devops() -> Actor {
    person("100000000000000001", "Dana")
}
pub fn cto() -> Actor {
    person("100000000000000002", "Carla")
}
pub fn backend() -> Actor {
    person("100000000000000003", "Bruno")
}
pub fn developer() -> Actor {
    person("100000000000000004", "Dev")
}

pub fn text(s: &str) -> RawValue {
    RawValue::Text(s.into())
}

/// The answer as a message (a prompt, a dry run or a refusal).
pub fn message(answer: &Answer) -> &Reply {
    match answer {
        Answer::Message(r) | Answer::Update(r) => r,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The custom id of the reply's button labelled `label`.
pub fn button(reply: &Reply, label: &str) -> String {
    reply
        .buttons
        .iter()
        .find(|b| b.label == label)
        .unwrap_or_else(|| panic!("no {label} button in {reply:?}"))
        .id
        .clone()
}

/// Keeps what the core edits into its answers.
#[derive(Default)]
pub struct Edits {
    pub replies: Mutex<Vec<Reply>>,
    pub changed: tokio::sync::Notify,
}

pub struct Capture(pub Arc<Edits>);

impl Responder for Capture {
    fn edit(&self, reply: Reply) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.0.replies.lock().unwrap().push(reply);
            self.0.changed.notify_waiters();
            Ok(())
        })
    }
}

impl Edits {
    pub async fn wait(&self, n: usize) -> Vec<Reply> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.changed.notified();
            {
                let r = self.replies.lock().unwrap();
                if r.len() >= n {
                    return r.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "the core edited its answer {} times, expected {n}",
                    self.replies.lock().unwrap().len()
                );
            }
        }
    }
}

/// A copy of the shipped `policies/` in `dir`, with `roles` as its roles.toml.
pub fn shipped_policies(dir: &std::path::Path, roles: &str) -> std::path::PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(policies.join("roles.toml"), roles).unwrap();
    policies
}

pub struct Rig {
    pub dispatcher: Arc<Dispatcher>,
    pub store: Store,
    pub audit: Audit,
    pub database_url: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    pub async fn new(db: Db, extra: &[(&str, &str)], clock: Clock) -> Rig {
        Self::build(db, "", extra, clock, ROLES).await
    }

    /// Like [`Rig::new`] with `roles` as roles.toml, for tests that need more people.
    pub async fn with_roles(db: Db, extra: &[(&str, &str)], clock: Clock, roles: &str) -> Rig {
        Self::build(db, "", extra, clock, roles).await
    }

    /// With a settings file as well, for what environment variables cannot say (lists).
    pub async fn with_config(db: Db, toml: &str, extra: &[(&str, &str)], clock: Clock) -> Rig {
        Self::build(db, toml, extra, clock, ROLES).await
    }

    /// A settings file and roles.toml both.
    pub async fn with_config_and_roles(db: Db, toml: &str, clock: Clock, roles: &str) -> Rig {
        Self::build(db, toml, &[], clock, roles).await
    }

    /// Another runbot on this rig's database (a replica, with a process owner of its own),
    /// with these settings and clock and the default roles.
    pub async fn replica(&self, toml: &str, extra: &[(&str, &str)], clock: Clock) -> Rig {
        Self::build_on(
            Some(self.database_url.clone()),
            Db::Sqlite,
            toml,
            extra,
            clock,
            ROLES,
        )
        .await
    }

    async fn build(db: Db, toml: &str, extra: &[(&str, &str)], clock: Clock, roles: &str) -> Rig {
        Self::build_on(None, db, toml, extra, clock, roles).await
    }

    async fn build_on(
        database_url: Option<String>,
        db: Db,
        toml: &str,
        extra: &[(&str, &str)],
        clock: Clock,
        roles: &str,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(&file, toml).unwrap();
        let database_url = match database_url {
            Some(url) => url,
            None => fresh_database(db, dir.path()).await,
        };
        let policies = shipped_policies(dir.path(), roles);
        let mut env: Vec<(String, String)> = vec![
            ("RUNBOT__DATABASE__URL".into(), database_url.clone()),
            ("RUNBOT__POLICY__DIR".into(), policies.display().to_string()),
            (
                "RUNBOT__COMMANDS__DIR".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/commands").into(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = Settings::load_from(Some(&file), env).expect("valid settings");
        let store = Store::connect(&settings.database).await.unwrap();
        let dispatcher = runbot::app::dispatcher(&settings, store.clone(), None, clock).unwrap();
        Rig {
            dispatcher: Arc::new(dispatcher),
            audit: Audit::new(store.clone()),
            store,
            database_url,
            _dir: dir,
        }
    }

    /// A second runbot on `other`'s database (another replica), with settings of its own.
    pub async fn replica_of(other: &Rig, toml: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(&file, toml).unwrap();
        let policies = shipped_policies(dir.path(), ROLES);
        let env: Vec<(String, String)> = vec![
            ("RUNBOT__DATABASE__URL".into(), other.database_url.clone()),
            ("RUNBOT__POLICY__DIR".into(), policies.display().to_string()),
            (
                "RUNBOT__COMMANDS__DIR".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/commands").into(),
            ),
        ];
        let settings = Settings::load_from(Some(&file), env).expect("valid settings");
        let store = Store::connect(&settings.database).await.unwrap();
        let clock = runbot::domain::clock::system_clock();
        let dispatcher = runbot::app::dispatcher(&settings, store.clone(), None, clock).unwrap();
        Rig {
            dispatcher: Arc::new(dispatcher),
            audit: Audit::new(store.clone()),
            store,
            database_url: other.database_url.clone(),
            _dir: dir,
        }
    }

    pub async fn ask(
        &self,
        actor: Actor,
        command: &str,
        args: &[(&str, RawValue)],
        edits: &Arc<Edits>,
    ) -> Answer {
        let request = Request::Command {
            actor,
            command: command.into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            origin: Origin {
                channel_id: Some("300000000000000001".into()),
                ..Origin::default()
            },
        };
        self.dispatcher
            .handle(request, Arc::new(Capture(edits.clone())))
            .await
    }

    pub async fn click(&self, actor: Actor, custom_id: &str, edits: &Arc<Edits>) -> Answer {
        let request = Request::Button {
            actor,
            custom_id: custom_id.into(),
            origin: Origin::default(),
        };
        self.dispatcher
            .handle(request, Arc::new(Capture(edits.clone())))
            .await
    }

    /// Presses Approve as the requester and as a developer: both are refused.
    pub async fn approval_refused_to_self_and_developer(
        &self,
        requester: Actor,
        approve: &str,
        edits: &Arc<Edits>,
    ) {
        let own = self.click(requester, approve, edits).await;
        assert!(
            message(&own)
                .text
                .contains("cannot approve or reject your own request"),
            "{own:?}"
        );
        let unfit = self.click(developer(), approve, edits).await;
        assert!(
            message(&unfit).text.contains("you hold developer"),
            "{unfit:?}"
        );
    }

    /// Every audit row, oldest first, whole.
    pub async fn audit_records(&self) -> Vec<runbot::audit::AuditRecord> {
        let mut rows = self
            .audit
            .recent(10_000, &AuditFilter::default())
            .await
            .unwrap();
        rows.reverse();
        rows
    }

    /// Every audit row, oldest first, as (step, command, actor id, reason).
    pub async fn trail(&self) -> Vec<(Step, String, String, Option<String>)> {
        self.audit_records()
            .await
            .into_iter()
            .map(|r| (r.step, r.command, r.actor_id, r.reason))
            .collect()
    }

    /// A query's one integer (a count, a returned id).
    pub async fn count(&self, sql: &str) -> i64 {
        match self.store.backend() {
            runbot::config::Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            runbot::config::Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    /// Runs `sql` (one or more statements) on the rig's database directly, e.g. to break a
    /// table under runbot.
    pub async fn execute(&self, sql: &str) {
        match self.store.backend() {
            runbot::config::Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
            runbot::config::Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// A firing group as Alertmanager would have sent it.
    pub async fn group(&self, alertname: &str, severity: &str) -> i64 {
        self.group_with(serde_json::json!({ "alertname": alertname }), severity)
            .await
    }

    /// A firing group with these group (and common) labels; `alertname` names its runbook entry.
    pub async fn group_with(&self, labels: serde_json::Value, severity: &str) -> i64 {
        let alertname = labels["alertname"]
            .as_str()
            .unwrap_or("Unknown")
            .to_string();
        // Alertmanager's key lists the group labels: one key per distinct set.
        let key: Vec<String> = labels
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap()))
            .collect();
        let key = format!("{{}}:{{{}}}", key.join(","));
        let labels = labels.to_string();
        let now = runbot::domain::format_time(Utc::now());
        let sql = format!(
            "INSERT INTO alert_groups (receiver, group_key, status, severity, runbook, group_labels, \
             common_labels, common_annotations, external_url, truncated_alerts, started_at, created_at, updated_at) \
             VALUES ('runbot', '{key}', 'firing', '{severity}', '{alertname}', '{labels}', \
             '{labels}', '{{}}', 'http://am', 0, '{now}', '{now}', '{now}') RETURNING id"
        );
        self.count(&sql).await
    }
}

/// Roles by Discord role: the fake gives each role name a stable id.
pub fn roles_toml(fake: &FakeDiscord) -> String {
    let role = |name: &str, hours: &str, discord_role: &str| {
        format!(
            "[roles.{name}]\ndiscord_roles = [\"{}\"]\ndiscord_users = []\nslack_users = []\nhours = \"{hours}\"\n\n",
            fake.role_id(discord_role)
        )
    };
    [
        role("devops-lead", "24/7", "DevOps Lead"),
        role("backend-lead", "24/7", "Backend Lead"),
        role("cto", "24/7", "CTO"),
        role("dba", "24/7", "DBA"),
        role("security", "24/7", "Security"),
        role("developer", "24/7", "Developer"),
        role("viewer", "business", "Viewer"),
    ]
    .concat()
}

/// The shipped policies with [`roles_toml`].
pub fn policies_dir(fake: &FakeDiscord) -> std::path::PathBuf {
    shipped_policies(&tempfile::tempdir().unwrap().keep(), &roles_toml(fake))
}
