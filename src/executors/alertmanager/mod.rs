//! Alertmanager: its API client ([`engine`]) and the commands that silence alert groups
//! through it (`/silence`, `/unsilence`).

pub mod engine;

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{group_name, reply, utc_minute, CardWake, Ctx, Done, ExecError, Executor, Failure};
use crate::commands::SilenceOp;
use crate::domain::duration;
use crate::domain::format_time;
use crate::store::Store;
use engine::Alertmanager;

/// `/silence` and `/unsilence`.
pub struct Silences {
    /// None when `alertmanager.url` is not set.
    pub alertmanager: Option<Alertmanager>,
    pub store: Store,
    pub cards: CardWake,
}

impl Executor for Silences {
    type Op = SilenceOp;

    async fn plan(&self, op: SilenceOp, ctx: &Ctx<'_>) -> String {
        match op {
            SilenceOp::Silence => self.plan_silence(ctx),
            SilenceOp::Unsilence => self.plan_unsilence(ctx),
        }
    }

    async fn run(&self, op: SilenceOp, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        Ok(match op {
            SilenceOp::Silence => self.silence(ctx).await?,
            SilenceOp::Unsilence => self.unsilence(ctx).await?,
        })
    }
}

impl Silences {
    fn plan_unsilence(&self, ctx: &Ctx<'_>) -> String {
        match (ctx.text("silence_id"), ctx.group) {
            (Some(id), _) => format!("expire Alertmanager silence {id}"),
            (None, Some(g)) => match &g.silence_id {
                Some(id) => format!("expire silence {id} of {}", group_name(g)),
                None => format!("nothing: {} has no silence made by runbot", group_name(g)),
            },
            (None, None) => "expire a silence".into(),
        }
    }

    fn plan_silence(&self, ctx: &Ctx<'_>) -> String {
        let (d, until) = self.silence_span(ctx);
        let matchers = ctx
            .group
            .map(|g| {
                Alertmanager::matchers(&g.group_labels, &g.common_labels)
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        format!(
            "create an Alertmanager silence on {{{matchers}}} for {}, until {}",
            duration::span(d),
            utc_minute(until)
        )
    }

    fn silence_span(&self, ctx: &Ctx<'_>) -> (Duration, DateTime<Utc>) {
        let d = ctx
            .text("duration")
            .and_then(duration::parse)
            .unwrap_or(Duration::from_secs(3600));
        (
            d,
            ctx.now + chrono::Duration::from_std(d).unwrap_or_default(),
        )
    }

    fn alertmanager(&self) -> Result<&Alertmanager, ExecError> {
        self.alertmanager.as_ref().ok_or_else(|| {
            ExecError(
                "runbot does not know where Alertmanager is: set alertmanager.url (e.g. http://alertmanager:9093). Nothing was changed."
                    .into(),
            )
        })
    }

    async fn silence(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let g = ctx.group()?;
        let am = self.alertmanager()?;
        let (d, until) = self.silence_span(ctx);
        let matchers = Alertmanager::matchers(&g.group_labels, &g.common_labels);
        let by = format!("{} via runbot", ctx.actor.name);
        let comment = ctx
            .text("comment")
            .map(str::to_string)
            .unwrap_or_else(|| format!("Silenced from runbot for {}", group_name(g)));
        let id = am
            .create_silence(&matchers, ctx.now, until, &by, &comment)
            .await
            .map_err(|e| ExecError(e.to_string()))?;
        // Alertmanager holds the silence now; failing to note it on the card loses nothing.
        if let Err(e) = self
            .store
            .set_group_silence(
                g.id,
                Some((&id, &ctx.actor.name, &format_time(until))),
                &format_time(ctx.now),
            )
            .await
        {
            tracing::warn!(error = %e, silence = %id, "silence made but not noted on the group");
        }
        self.cards.changed();
        let name = group_name(g);
        Ok(Done {
            reply: reply(
                format!(
                    "🔕 **{}** silenced {name} for {}, until {}. Silence id `{id}` (undo with /unsilence).",
                    ctx.actor.name,
                    duration::span(d),
                    utc_minute(until)
                ),
                false,
            ),
            summary: format!("silence {id} until {}", format_time(until)),
        })
    }

    async fn unsilence(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let am = self.alertmanager()?;
        let id = match (ctx.text("silence_id"), ctx.group) {
            (Some(id), _) => id.to_string(),
            (None, Some(g)) => g.silence_id.clone().ok_or_else(|| {
                ExecError(format!(
                    "{} has no silence made by runbot; give silence_id for others",
                    group_name(g)
                ))
            })?,
            (None, None) => {
                return Err(ExecError(
                    "/unsilence needs group or silence_id. Nothing was changed.".into(),
                ))
            }
        };
        am.expire_silence(&id)
            .await
            .map_err(|e| ExecError(e.to_string()))?;
        let group = match ctx.group {
            Some(g) if g.silence_id.as_deref() == Some(id.as_str()) => Some(g.id),
            _ => match self.store.group_of_silence(&id).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, silence = %id, "silence expired, but its group cannot be read to clear the note");
                    None
                }
            },
        };
        if let Some(gid) = group {
            if let Err(e) = self
                .store
                .set_group_silence(gid, None, &format_time(ctx.now))
                .await
            {
                tracing::warn!(error = %e, silence = %id, "silence expired but still noted on the group");
            }
            self.cards.changed();
        }
        Ok(Done {
            reply: reply(
                format!("🔔 **{}** removed silence `{id}`.", ctx.actor.name),
                false,
            ),
            summary: format!("expired silence {id}"),
        })
    }
}
