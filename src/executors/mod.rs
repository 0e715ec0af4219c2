//! What commands run, by the `executor` their file in `commands/` names. Each executor says
//! what it would do (dry runs) and does it.

pub mod alertmanager;
pub mod database;
pub mod docker;
pub mod format;
pub mod lease;
pub mod nginx;
pub mod security;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::audit::Audit;
use crate::commands::{
    Args, CommandSpec, CoreOp, DatabaseOp, DeployOp, DockerOp, ExecutorKind, NginxOp, SecurityOp,
    SilenceOp, Value,
};
use crate::domain::{format_time, parse_stored_time};
use crate::policy::Policies;
use crate::request::Actor;
use crate::request::Reply;
use crate::store::{Acked, GroupView, Store};

/// What an executor gets.
pub struct Ctx<'a> {
    pub actor: &'a Actor,
    pub spec: &'a CommandSpec,
    pub args: &'a Args,
    pub group: Option<&'a GroupView>,
    pub now: DateTime<Utc>,
    /// Shared by every audit row of this request.
    pub invocation_id: &'a str,
    /// Where it was asked (a channel id), for messages to the channel.
    pub channel_id: Option<&'a str>,
    /// Edits the request's answer while a long command runs (None in dry runs).
    pub progress: Option<Arc<dyn crate::request::Responder>>,
    /// The people who approved the request (empty when it needed no approval).
    pub approved_by: &'a [String],
}

impl Ctx<'_> {
    fn text(&self, name: &str) -> Option<&str> {
        match self.args.get(name) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    fn integer(&self, name: &str) -> Option<i64> {
        match self.args.get(name) {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        }
    }

    fn group(&self) -> Result<&GroupView, ExecError> {
        self.group.ok_or_else(|| {
            ExecError(format!(
                "/{} needs an alert group (its card's button, or the group option)",
                self.spec.name
            ))
        })
    }
}

/// What [`Executors::dispatch`] answers: a dry run's plan, or a finished command.
enum Outcome {
    Plan(String),
    Done(Done),
}

/// A finished command: what to show, and a short summary for the audit trail.
pub struct Done {
    pub reply: Reply,
    pub summary: String,
}

/// Why a command failed, in words for the person who asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// A failed command: the reason (for the audit trail), and what to show when a plain
/// "failed: reason" would say too little (a deploy's steps).
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    pub reply: Option<Reply>,
}

impl From<ExecError> for Failure {
    fn from(e: ExecError) -> Failure {
        Failure {
            reason: e.0,
            reply: None,
        }
    }
}

#[derive(Clone)]
pub struct Executors {
    pub store: Store,
    pub audit: Audit,
    pub policies: Arc<Policies>,
    /// None when `alertmanager.url` is not set.
    pub alertmanager: Option<alertmanager::engine::Alertmanager>,
    /// None when `docker.project` is not set.
    pub docker: Option<crate::executors::docker::engine::Docker>,
    /// The stack's application database; None when `app_database.url` is not set.
    pub app_db: Option<crate::executors::database::engine::AppDatabase>,
    /// Wakes the chat outbox when a group's card changed.
    pub chat_wake: Option<Arc<tokio::sync::Notify>>,
    pub deploy: crate::config::DeploySettings,
    /// This process, as the owner of the deploys it runs (random per start).
    pub owner: String,
    /// The dispatcher's clock (tests drive it), for the times runbot itself decides.
    pub clock: crate::domain::clock::Clock,
    /// For the deploy's HTTP health checks and smoke tests.
    pub http: reqwest::Client,
    /// None when `nginx.deny_file` is not set.
    pub nginx: Option<crate::executors::nginx::engine::Nginx>,
    /// What may never be blocked, and how wide a block may be without approval.
    pub guard: crate::domain::net::Guard,
    pub security: crate::config::SecuritySettings,
}

fn reply(text: String, ephemeral: bool) -> Reply {
    Reply {
        text,
        ephemeral,
        buttons: Vec::new(),
        fields: Vec::new(),
        code_block: None,
        attachment: None,
    }
}

/// `APIDown (#12)`: how people recognise a group.
fn group_name(g: &GroupView) -> String {
    let name = g
        .common_labels
        .get("alertname")
        .or_else(|| g.group_labels.get("alertname"))
        .map(String::as_str)
        .unwrap_or("alert group");
    format!("{name} (#{})", g.id)
}

fn utc_minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl Executors {
    /// Now, by this runbot's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn card_changed(&self) {
        if let Some(w) = &self.chat_wake {
            w.notify_one();
        }
    }

    /// Checks of valid arguments that need no policy and no outside call, run before anything
    /// is asked or confirmed: an address that must never be blocked. The executor checks
    /// again when it runs.
    pub fn precheck(&self, spec: &CommandSpec, args: &Args) -> Result<(), String> {
        if spec.executor == ExecutorKind::Nginx(NginxOp::BlockIp) {
            if let Some(Value::Text(a)) = args.get("address") {
                let net = crate::domain::net::parse_range(a)?;
                self.guard.refuse_dangerous(&net, &[])?;
            }
        }
        Ok(())
    }

    /// What the command would do, for a dry run (`plan`), or does it (`run`): the one place
    /// an executor kind meets its code.
    async fn dispatch(&self, ctx: &Ctx<'_>, plan: bool) -> Result<Outcome, Failure> {
        use ExecutorKind as K;
        // Macros, not closures: a closure returning Result<_, Failure> trips clippy's
        // result_large_err, which async fns are spared.
        macro_rules! planned {
            ($plan:expr) => {
                Ok(Outcome::Plan($plan))
            };
        }
        macro_rules! ran {
            ($done:expr) => {
                $done.map(Outcome::Done).map_err(Failure::from)
            };
        }
        match (ctx.spec.executor, plan) {
            (K::Core(CoreOp::Ack), true) => planned!(match ctx.group {
                Some(g) => format!("mark {} acknowledged by {}", group_name(g), ctx.actor.name),
                None => "acknowledge an alert group".into(),
            }),
            (K::Core(CoreOp::Ack), false) => ran!(self.ack(ctx).await),
            (K::Silences(SilenceOp::Silence), true) => planned!(self.plan_silence(ctx)),
            (K::Silences(SilenceOp::Silence), false) => ran!(self.silence(ctx).await),
            (K::Silences(SilenceOp::Unsilence), true) => planned!(self.plan_unsilence(ctx)),
            (K::Silences(SilenceOp::Unsilence), false) => ran!(self.unsilence(ctx).await),
            (K::Core(CoreOp::Oncall), false) => Ok(Outcome::Done(self.oncall(ctx))),
            (K::Core(CoreOp::AuditRecent), false) => ran!(self.audit_recent(ctx).await),
            (K::Docker(DockerOp::Restart), true) => planned!(match &self.docker {
                Some(d) => docker::plan_restart(d, ctx).await,
                None => "nothing: docker.project is not set".into(),
            }),
            (K::Docker(DockerOp::Scale), true) => planned!(match &self.docker {
                Some(d) => docker::plan_scale(d, ctx).await,
                None => "nothing: docker.project is not set".into(),
            }),
            (K::Docker(DockerOp::Status), false) => ran!(docker::status(self.docker()?, ctx).await),
            (K::Docker(DockerOp::Stats), false) => ran!(docker::stats(self.docker()?, ctx).await),
            (K::Docker(DockerOp::Logs), false) => ran!(docker::logs(self.docker()?, ctx).await),
            (K::Docker(DockerOp::Restart), false) => ran!(docker::restart(self, self.docker()?, ctx).await),
            (K::Docker(DockerOp::Scale), false) => ran!(docker::scale(self, self.docker()?, ctx).await),
            (K::Deploy(DeployOp::Run), true) => planned!(docker::deploy::plan(self, ctx, false).await),
            (K::Deploy(DeployOp::Rollback), true) => planned!(docker::deploy::plan(self, ctx, true).await),
            (K::Deploy(DeployOp::Run), false) => docker::deploy::deploy(self, ctx).await.map(Outcome::Done),
            (K::Deploy(DeployOp::Rollback), false) => {
                docker::deploy::rollback(self, ctx).await.map(Outcome::Done)
            }
            (K::Deploy(DeployOp::History), false) => ran!(docker::deploy::history(self, ctx).await),
            (K::Database(DatabaseOp::Backup), true) => planned!(match &self.app_db {
                Some(db) => database::plan_backup(db, ctx),
                None => "nothing: app_database.url is not set".into(),
            }),
            (K::Database(DatabaseOp::Restore), true) => planned!(match &self.app_db {
                Some(db) => database::plan_restore(db, ctx).await,
                None => "nothing: app_database.url is not set".into(),
            }),
            (K::Database(DatabaseOp::Backup), false) => ran!(database::backup(self, self.app_db()?, ctx).await),
            (K::Database(DatabaseOp::Backups), false) => ran!(database::backups(self.app_db()?, ctx).await),
            (K::Database(DatabaseOp::Restore), false) => {
                ran!(database::restore(self, self.app_db()?, ctx).await)
            }
            (K::Database(DatabaseOp::Diagnostics), false) => {
                ran!(database::diagnostics(self.app_db()?, ctx).await)
            }
            (K::Nginx(NginxOp::BlockIp), true) => planned!(nginx::plan(self, ctx, false).await),
            (K::Nginx(NginxOp::UnblockIp), true) => planned!(nginx::plan(self, ctx, true).await),
            (K::Nginx(NginxOp::BlockIp), false) => ran!(nginx::block(self, ctx).await),
            (K::Nginx(NginxOp::UnblockIp), false) => ran!(nginx::unblock(self, ctx).await),
            (K::Nginx(NginxOp::Blocked), false) => ran!(nginx::blocked(self, ctx).await),
            (K::Security(SecurityOp::TopIps), false) => ran!(security::top_ips(self, ctx).await),
            (K::NotYet(name), false) => Err(ExecError(format!(
                "this runbot cannot run /{} yet: its executor {name} is not part of this version. Nothing was changed.",
                ctx.spec.name
            ))
            .into()),
            // Read-only commands take no dry run; a plan says what would run.
            (
                K::Core(CoreOp::Oncall)
                | K::Core(CoreOp::AuditRecent)
                | K::Docker(DockerOp::Status)
                | K::Docker(DockerOp::Stats)
                | K::Docker(DockerOp::Logs)
                | K::Deploy(DeployOp::History)
                | K::Database(DatabaseOp::Backups)
                | K::Database(DatabaseOp::Diagnostics)
                | K::Nginx(NginxOp::Blocked)
                | K::Security(SecurityOp::TopIps)
                | K::NotYet(_),
                true,
            ) => planned!(format!(
                "run {} with {}",
                ctx.spec.executor,
                crate::commands::args_line(ctx.args)
            )),
        }
    }

    /// What the command would do, for a dry run. Reads nothing it would change.
    pub async fn plan(&self, ctx: &Ctx<'_>) -> String {
        match self.dispatch(ctx, true).await {
            Ok(Outcome::Plan(p)) => p,
            // Not reached: asked to plan, dispatch only plans. Said plainly all the same.
            Ok(Outcome::Done(d)) => d.summary,
            Err(f) => format!("nothing: {}", f.reason),
        }
    }

    pub async fn run(&self, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        match self.dispatch(ctx, false).await? {
            Outcome::Done(d) => Ok(d),
            // Not reached: asked to run, dispatch only runs.
            Outcome::Plan(p) => Ok(Done {
                reply: reply(p.clone(), true),
                summary: p,
            }),
        }
    }

    async fn ack(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let g = ctx.group()?;
        let acked = self
            .store
            .ack_group(g.id, &ctx.actor.name, &format_time(ctx.now))
            .await
            .map_err(|e| {
                ExecError(format!(
                    "the database did not take the acknowledgement ({e})"
                ))
            })?;
        let name = group_name(g);
        if acked == Acked::Now {
            self.card_changed();
        }
        let (text, summary) = match acked {
            Acked::Now => (
                format!("👀 **{}** acknowledged {name}.", ctx.actor.name),
                format!("acknowledged {name}"),
            ),
            Acked::Already { by, at } => {
                let when = parse_stored_time(&at).map(utc_minute).unwrap_or(at);
                (
                    format!("{name} was already acknowledged by {by} at {when}; nothing changed."),
                    format!("already acknowledged by {by}"),
                )
            }
            Acked::Resolved => (
                format!("{name} is resolved; there is nothing to acknowledge."),
                "already resolved".into(),
            ),
            Acked::NoSuchGroup => return Err(ExecError(format!("alert group #{} is gone", g.id))),
        };
        Ok(Done {
            reply: reply(text, false),
            summary,
        })
    }

    fn docker(&self) -> Result<&crate::executors::docker::engine::Docker, ExecError> {
        self.docker.as_ref().ok_or_else(|| {
            ExecError(
                "runbot does not know which docker-compose project is the stack: set docker.project (RUNBOT__DOCKER__PROJECT) to its name, as `docker compose ls` shows it. Nothing was changed."
                    .into(),
            )
        })
    }

    fn app_db(&self) -> Result<&crate::executors::database::engine::AppDatabase, ExecError> {
        self.app_db.as_ref().ok_or_else(|| {
            ExecError(
                "runbot does not know the application database: set app_database.url (RUNBOT__APP_DATABASE__URL) to postgres://USER:PASSWORD@HOST:PORT/DATABASE. Nothing was changed."
                    .into(),
            )
        })
    }

    fn oncall(&self, ctx: &Ctx<'_>) -> Done {
        let mut r = reply(format!("On call now ({}):", utc_minute(ctx.now)), true);
        for role in self.policies.oncall(ctx.now) {
            let mut who: Vec<String> = Vec::new();
            who.extend(role.discord_users.iter().map(|u| format!("<@{u}>")));
            who.extend(role.discord_roles.iter().map(|r| format!("<@&{r}>")));
            who.extend(role.slack_users.iter().map(|u| format!("<@{u}>")));
            who.extend(role.console_users.iter().cloned());
            let state = if role.on_call_now {
                "🟢 on call"
            } else {
                "⚪ off"
            };
            let who = if who.is_empty() {
                "nobody assigned (policies/roles.toml)".to_string()
            } else {
                who.join(", ")
            };
            r.fields
                .push((format!("{} · {} · {state}", role.name, role.hours), who));
        }
        Done {
            reply: r,
            summary: "listed on-call roles".into(),
        }
    }

    async fn audit_recent(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let limit = ctx.integer("limit").unwrap_or(20);
        let rows = self
            .audit
            .recent(limit.max(1) as usize, &crate::audit::AuditFilter::default())
            .await
            .map_err(|e| ExecError(format!("the audit trail cannot be read ({e})")))?;
        let mut lines: Vec<String> = rows
            .iter()
            .map(|r| {
                let when = parse_stored_time(&r.at)
                    .map(|t| t.format("%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| r.at.clone());
                let why = r
                    .reason
                    .as_deref()
                    .map(|w| format!(" · {}", crate::domain::text::clip(w, 80)))
                    .unwrap_or_default();
                format!(
                    "#{} {when} {:<12} /{} by {}{why}",
                    r.id,
                    r.step.as_str(),
                    r.command,
                    r.actor_name
                )
            })
            .collect();
        lines.reverse();
        let mut r = reply(
            format!(
                "The last {} entries of the audit trail, oldest first:",
                lines.len()
            ),
            true,
        );
        r.code_block = Some(lines.join("\n"));
        Ok(Done {
            reply: r,
            summary: format!("showed {} audit rows", rows.len()),
        })
    }
}
