//! `/ack`, `/oncall` and `/audit`: runbot's own data (alert groups, on-call roles, the audit
//! trail), no outside system.

use std::sync::Arc;

use super::{
    group_name, read_only_plan, reply, utc_minute, CardWake, Ctx, Done, ExecError, Executor,
    Failure,
};
use crate::audit::Audit;
use crate::commands::CoreOp;
use crate::domain::{format_time, parse_stored_time};
use crate::escalation::Reach;
use crate::policy::Policies;
use crate::store::{Acked, Store};

/// `/ack`, `/oncall`, `/escalate`, `/page` and `/audit`.
pub struct Core {
    pub store: Store,
    pub audit: Audit,
    pub policies: Arc<Policies>,
    pub cards: CardWake,
    /// The ways of paging people configured, for `/page`.
    pub reach: Reach,
    /// Wakes the escalation engine (`/escalate`, `/page`).
    pub escalation: CardWake,
    pub runbook: Arc<crate::runbook::Runbook>,
}

impl Executor for Core {
    type Op = CoreOp;

    fn precheck(&self, op: CoreOp, args: &crate::commands::Args) -> Result<(), String> {
        match op {
            CoreOp::Report => super::report::precheck(args),
            _ => Ok(()),
        }
    }

    async fn plan(&self, op: CoreOp, ctx: &Ctx<'_>) -> String {
        match op {
            CoreOp::Ack => match ctx.group {
                Some(g) => format!("mark {} acknowledged by {}", group_name(g), ctx.actor.name),
                None => "acknowledge an alert group".into(),
            },
            CoreOp::Oncall if ctx.text("action") == Some("override") => format!(
                "give {}'s shift to {} ({})",
                ctx.text("role").unwrap_or("?"),
                ctx.text("person").unwrap_or("?"),
                match (ctx.text("for"), ctx.text("from"), ctx.text("until")) {
                    (Some(d), _, _) => format!("for {d} from now"),
                    (None, f, u) =>
                        format!("from {} until {}", f.unwrap_or("now"), u.unwrap_or("?")),
                }
            ),
            CoreOp::Escalate => match ctx.group {
                Some(g) => format!("page the next step of {}'s escalation now", group_name(g)),
                None => "page the next step of an alert group's escalation now".into(),
            },
            CoreOp::Page => format!(
                "page {}",
                match (ctx.text("role"), ctx.text("person")) {
                    (Some(r), _) => format!("whoever is on call for {r}"),
                    (None, Some(p)) => p.to_string(),
                    (None, None) => "nobody (give role or person)".into(),
                }
            ),
            CoreOp::Oncall | CoreOp::AuditRecent | CoreOp::Report | CoreOp::Backlog => {
                read_only_plan(ctx)
            }
        }
    }

    async fn run(&self, op: CoreOp, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        match op {
            CoreOp::Ack => Ok(self.ack(ctx).await?),
            CoreOp::Oncall if ctx.text("action") == Some("override") => {
                Ok(self.take_shift(ctx).await?)
            }
            CoreOp::Oncall => Ok(self.oncall(ctx).await?),
            CoreOp::AuditRecent => Ok(self.audit_recent(ctx).await?),
            CoreOp::Escalate => Ok(self.escalate(ctx).await?),
            CoreOp::Page => Ok(self.page(ctx).await?),
            CoreOp::Report => Ok(self.report(ctx).await?),
            CoreOp::Backlog => Ok(self.backlog(ctx).await?),
        }
    }
}

impl Core {
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
            // The chain stops; the time it took is the team's time to acknowledge.
            match self
                .store
                .ack_escalation(g.id, &ctx.actor.name, &format_time(ctx.now))
                .await
            {
                Ok(Some(started)) => {
                    if let Some(t) = parse_stored_time(&started) {
                        let secs = (ctx.now - t).num_milliseconds().max(0) as f64 / 1000.0;
                        metrics::histogram!(crate::telemetry::TIME_TO_ACK, "severity" => g.severity.as_str())
                            .record(secs);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, group = g.id, "the acknowledgement is recorded, but its escalation could not be stopped; the engine stops it at its next step");
                }
            }
            self.cards.changed();
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
