//! What commands run, by the `executor` their file in `commands/` names: one [`Executor`] per
//! family of commands, each built once with only the engines it needs. Each says what it
//! would refuse early, what it would do (dry runs), and does it.

pub mod alertmanager;
pub mod core;
pub mod database;
pub mod docker;
pub mod format;
pub mod lease;
pub mod nginx;
pub mod oncall;
pub mod report;
pub mod security;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::commands::{Args, CommandSpec, ExecutorKind, Value};
use crate::request::Actor;
use crate::request::Reply;
use crate::store::GroupView;

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

/// Wakes the chat outbox when a group's card changed; empty when no platform shows cards.
#[derive(Clone, Default)]
pub struct CardWake(pub Option<Arc<tokio::sync::Notify>>);

impl CardWake {
    pub fn changed(&self) {
        if let Some(w) = &self.0 {
            w.notify_one();
        }
    }
}

/// One family of commands (the operations of one [`ExecutorKind`] variant).
// Native async fns: dispatch is static (one match in `Executors::ask`, over concrete
// families), so no caller needs the trait to promise `Send` futures.
#[allow(async_fn_in_trait)]
pub trait Executor {
    type Op: Copy;

    /// Checks of valid arguments that need no policy and no outside call, run before anything
    /// is asked or confirmed (an address that must never be blocked). The executor checks
    /// again when it runs.
    fn precheck(&self, _op: Self::Op, _args: &Args) -> Result<(), String> {
        Ok(())
    }

    /// What the command would do, for a dry run. Reads nothing it would change.
    async fn plan(&self, op: Self::Op, ctx: &Ctx<'_>) -> String;

    async fn run(&self, op: Self::Op, ctx: &Ctx<'_>) -> Result<Done, Failure>;
}

/// The plan of a read-only command, which takes no dry run: what would run.
fn read_only_plan(ctx: &Ctx<'_>) -> String {
    format!(
        "run {} with {}",
        ctx.spec.executor,
        crate::commands::args_line(ctx.args)
    )
}

/// Every family of commands, each built once (in `app`).
pub struct Executors {
    pub core: core::Core,
    pub silences: alertmanager::Silences,
    pub docker: docker::DockerOps,
    pub deploys: docker::deploy::Deploys,
    pub database: database::Database,
    pub blocks: nginx::Blocks,
    pub security: security::Security,
}

fn reply(text: String, ephemeral: bool) -> Reply {
    Reply {
        text,
        ephemeral,
        ..Default::default()
    }
}

/// `APIDown (#12)`: how people recognise a group.
fn group_name(g: &GroupView) -> String {
    g.name()
}

fn utc_minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// One thing asked of the family that runs a command.
trait Ask {
    type Answer;
    async fn ask<E: Executor>(self, family: &E, op: E::Op) -> Self::Answer;
    /// For a command registered without an executor in this version (`/disk`).
    fn not_yet(self, name: &'static str) -> Self::Answer;
}

struct Precheck<'c>(&'c Args);

impl Ask for Precheck<'_> {
    type Answer = Result<(), String>;
    async fn ask<E: Executor>(self, family: &E, op: E::Op) -> Self::Answer {
        family.precheck(op, self.0)
    }
    fn not_yet(self, _: &'static str) -> Self::Answer {
        Ok(())
    }
}

struct Plan<'c, 'a>(&'c Ctx<'a>);

impl Ask for Plan<'_, '_> {
    type Answer = String;
    async fn ask<E: Executor>(self, family: &E, op: E::Op) -> String {
        family.plan(op, self.0).await
    }
    fn not_yet(self, _: &'static str) -> String {
        read_only_plan(self.0)
    }
}

struct Run<'c, 'a>(&'c Ctx<'a>);

impl Ask for Run<'_, '_> {
    type Answer = Result<Done, Failure>;
    async fn ask<E: Executor>(self, family: &E, op: E::Op) -> Self::Answer {
        family.run(op, self.0).await
    }
    fn not_yet(self, name: &'static str) -> Self::Answer {
        Err(ExecError(format!(
            "this runbot cannot run /{} yet: its executor {name} is not part of this version. Nothing was changed.",
            self.0.spec.name
        ))
        .into())
    }
}

impl Executors {
    /// The one place an executor kind meets the family that runs it.
    async fn ask<A: Ask>(&self, kind: ExecutorKind, asked: A) -> A::Answer {
        use ExecutorKind as K;
        match kind {
            K::Core(op) => asked.ask(&self.core, op).await,
            K::Silences(op) => asked.ask(&self.silences, op).await,
            K::Docker(op) => asked.ask(&self.docker, op).await,
            K::Deploy(op) => asked.ask(&self.deploys, op).await,
            K::Database(op) => asked.ask(&self.database, op).await,
            K::Nginx(op) => asked.ask(&self.blocks, op).await,
            K::Security(op) => asked.ask(&self.security, op).await,
            K::NotYet(name) => asked.not_yet(name),
        }
    }

    /// See [`Executor::precheck`].
    pub async fn precheck(&self, spec: &CommandSpec, args: &Args) -> Result<(), String> {
        self.ask(spec.executor, Precheck(args)).await
    }

    /// What the command would do, for a dry run. Reads nothing it would change.
    pub async fn plan(&self, ctx: &Ctx<'_>) -> String {
        self.ask(ctx.spec.executor, Plan(ctx)).await
    }

    pub async fn run(&self, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        self.ask(ctx.spec.executor, Run(ctx)).await
    }

    /// What may never be blocked, and how wide a block may be without approval (the
    /// policies' `context.wide_range`).
    pub fn guard(&self) -> &crate::domain::net::Guard {
        &self.blocks.guard
    }
}
