//! The escalation engine: starts a chain when a group starts firing, fires each step when its
//! durable timer falls due (one process wins each step, by a compare-and-set in the store),
//! delivers the pages the steps queue through the [`Pager`]s configured, and watches runbook
//! actions. Decisions (who is on call, what a step pages) are the policy's, pure; this module
//! only moves rows and calls pagers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{page_title, ways, Reach};
use crate::audit::{Audit, AuditEntry, Step as AuditStep};
use crate::domain::clock::Clock;
use crate::domain::duration::{precise, short};
use crate::domain::{format_time, parse_stored_time, Severity};
use crate::policy::escalation::{Chain, StepPlan};
use crate::policy::oncall::{DutySource, OnDuty, Override};
use crate::policy::Policies;
use crate::request::page::{Page, PageError, Pager};
use crate::runbook::Runbook;
use crate::store::{EscalationRow, GroupView, NewPage, OverrideRow, PageRow, StepFired, Store};
use crate::telemetry;

/// On the card while `policies/people.toml` holds the shipped examples.
pub const EXAMPLES_NOTE: &str = "nobody paged: policies/people.toml still holds the shipped examples (delete `examples = true` once it lists your team)";
/// People one channel mention names at most (their tags fit one Discord message).
const MENTIONS_MAX: usize = 60;
/// Steps fired and pages claimed per round.
const ROUND: i64 = 500;
/// Pages sent at once.
const SENDS_AT_ONCE: usize = 128;
/// How long a claimed page is this process's to send before another may try it: longer than
/// one send may take, so a slow send is never sent again by another replica meanwhile.
const CLAIM: Duration = Duration::from_secs(120);
/// A pager that does not answer within this long failed this attempt (the email and webhook
/// settings' own timeouts are at most 60 s).
const SEND_TIMEOUT: Duration = Duration::from_secs(65);
/// A page not delivered after this many attempts (about an hour of backoff) is given up,
/// audited as failed: after that it would only wake someone about an old state.
const ATTEMPTS_MAX: i64 = 16;
const IDLE_POLL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often hand-offs are looked for, and how late one may still be announced.
const HANDOFF_EVERY: Duration = Duration::from_secs(5);
const HANDOFF_WINDOW: Duration = Duration::from_secs(600);
/// Open groups a hand-off summary names.
const HANDOFF_GROUPS: i64 = 15;

pub struct Engine {
    pub store: Store,
    pub policies: Arc<Policies>,
    pub runbook: Arc<Runbook>,
    pub audit: Audit,
    pub clock: Clock,
    pub pagers: HashMap<&'static str, Arc<dyn Pager>>,
    /// `escalation.verify_after`: how long a runbook action gets to resolve its group.
    pub verify_after: Duration,
    /// Where a group's console page is, for links in pages: `{base}/groups/{id}`.
    pub console_url: Option<String>,
    /// Notified when something may have become due (a webhook stored, an ack, /escalate).
    pub wake: Arc<Notify>,
    /// Notified after a step fired: its card changed.
    pub cards: Option<Arc<Notify>>,
    /// When hand-offs were last looked for.
    pub last_handoffs: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Engine {
    /// What the configured pagers can reach.
    pub fn reach(&self) -> Reach {
        Reach {
            vias: self.pagers.keys().copied().collect(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Starts chains, fires due steps and delivers pages until aborted; run again after a
    /// panic, it picks up where the store says.
    pub async fn run(self: Arc<Self>) {
        let mut sends = tokio::task::JoinSet::new();
        // Pages delivered and not yet marked sent: written together, one statement a round.
        let mut sent: Vec<i64> = Vec::new();
        let mut failing = false;
        loop {
            let outcome = self.round(&mut sends, &mut sent).await;
            let sleep = match outcome {
                Ok(true) => continue,
                Ok(false) => {
                    failing = false;
                    // With every send slot taken, due pages wait for a slot, not the clock.
                    self.sleep_until_due(sends.len() < SENDS_AT_ONCE).await
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "escalation: the database did not answer; retrying");
                    }
                    failing = true;
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                Some(done) = sends.join_next(), if !sends.is_empty() => {
                    sent.extend(done.ok().flatten());
                }
            }
        }
    }

    async fn sleep_until_due(&self, pages_too: bool) -> Duration {
        let mut sleep = IDLE_POLL;
        let now = self.now();
        let stamp = format_time(now);
        let pages = if pages_too {
            self.store.next_page_due(&stamp).await
        } else {
            Ok(None)
        };
        for due in [self.store.next_escalation_due(&stamp).await, pages]
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(t) = parse_stored_time(&due) {
                sleep = sleep.min((t - now).to_std().unwrap_or(Duration::ZERO));
            }
        }
        sleep.max(Duration::from_millis(5))
    }

    /// One round; true when there may be more to do at once.
    async fn round(
        self: &Arc<Self>,
        sends: &mut tokio::task::JoinSet<Option<i64>>,
        sent: &mut Vec<i64>,
    ) -> Result<bool, sqlx::Error> {
        let now = self.now();
        let stamp = format_time(now);
        while let Some(done) = sends.try_join_next() {
            sent.extend(done.ok().flatten());
        }
        if !sent.is_empty() {
            self.store.pages_sent(sent, &stamp).await?;
            sent.clear();
        }
        self.store.close_resolved_escalations(&stamp).await?;
        self.store.reopen_refired(&stamp).await?;
        self.rechain_outranked(&stamp).await?;
        let started = self.start_episodes(now).await?;
        let fired = self.fire_due(now).await?;
        let claimed = self.deliver(now, sends).await?;
        self.check_actions(now).await?;
        if self.handoff_due(now) {
            self.handoffs(now).await?;
        }
        Ok(started == ROUND as usize || fired == ROUND as usize || claimed == ROUND as usize)
    }

    /// A group that became more severe follows its new severity's chain from its first step
    /// (unless its runbook entry names a chain: that one holds whatever the severity).
    async fn rechain_outranked(&self, stamp: &str) -> Result<(), sqlx::Error> {
        for o in self.store.outranked_escalations().await? {
            let Some(severity) = Severity::parse(&o.group_severity) else {
                continue;
            };
            let named = o
                .runbook
                .as_deref()
                .and_then(|k| self.runbook.entry(k))
                .and_then(|(_, e)| e.escalation.as_deref());
            if named.is_some() {
                self.store.set_escalation_severity(&o, stamp).await?;
                continue;
            }
            let chain = self.policies.chain_for(severity, None);
            let note = format!(
                "raised to {}: its chain starts over from the first step",
                severity.title()
            );
            self.store
                .rechain(&o, chain.map(|c| c.name.as_str()), &note, stamp)
                .await?;
        }
        Ok(())
    }

    async fn start_episodes(&self, now: DateTime<Utc>) -> Result<usize, sqlx::Error> {
        let stamp = format_time(now);
        let new = self.store.episodes_to_start(ROUND).await?;
        for ep in &new {
            let severity = Severity::parse(&ep.severity).unwrap_or(Severity::Sev3);
            let runbook_chain = ep
                .runbook
                .as_deref()
                .and_then(|k| self.runbook.entry(k))
                .and_then(|(_, e)| e.escalation.as_deref());
            let chain = self.policies.chain_for(severity, runbook_chain);
            let (state, due) = match chain {
                Some(c) if !c.steps.is_empty() => ("active", Some(stamp.as_str())),
                _ => ("done", None),
            };
            self.store
                .start_escalation(ep, chain.map(|c| c.name.as_str()), state, due, &stamp)
                .await?;
        }
        Ok(new.len())
    }

    async fn overrides(&self, now: DateTime<Utc>) -> Result<Vec<Override>, sqlx::Error> {
        active_overrides(&self.store, now).await
    }

    /// Fires every due step: planned in memory, written in one transaction, audited in one.
    async fn fire_due(&self, now: DateTime<Utc>) -> Result<usize, sqlx::Error> {
        let stamp = format_time(now);
        let due = self.store.due_escalations(&stamp, ROUND).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let overrides = self.overrides(now).await?;
        let ids: Vec<i64> = due.iter().map(|r| r.group_id).collect();
        let groups: HashMap<i64, GroupView> = self
            .store
            .group_views(&ids, 5)
            .await?
            .into_iter()
            .map(|g| (g.id, g))
            .collect();
        let planned: Vec<(&EscalationRow, StepFired)> = due
            .iter()
            .filter_map(|row| {
                let fired = self.plan_fire(row, groups.get(&row.group_id), now, &overrides)?;
                Some((row, fired))
            })
            .collect();
        let batch: Vec<(&EscalationRow, &StepFired)> =
            planned.iter().map(|(r, f)| (*r, f)).collect();
        let results = self.store.fire_steps(&batch, &stamp).await?;
        let entries: Vec<AuditEntry> = batch
            .iter()
            .zip(&results)
            .filter_map(|((row, fired), ids)| Some(step_entry(row, fired, ids.as_ref()?)))
            .collect();
        if !entries.is_empty() {
            if let Err(e) = self.audit.append_many(entries).await {
                tracing::error!(error = %e, "escalation: the audit trail did not take the steps' pages");
            }
            if let Some(w) = &self.cards {
                w.notify_one();
            }
        }
        // Each step that paged someone, as a note in the thread of the group's card.
        for ((row, fired), ids) in batch.iter().zip(&results) {
            if let (Some(_), Some(paging), false) = (ids, &fired.paging, fired.pages.is_empty()) {
                let note = format!("📟 Paging {paging}");
                if let Err(e) = self.store.note_group(row.group_id, &note, &stamp).await {
                    tracing::warn!(error = %e, group = row.group_id, "escalation: could not queue the step's note");
                }
            }
        }
        Ok(due.len())
    }

    /// What firing the row's next step writes; None when its chain is gone from the files.
    fn plan_fire(
        &self,
        row: &EscalationRow,
        group: Option<&GroupView>,
        now: DateTime<Utc>,
        overrides: &[Override],
    ) -> Option<StepFired> {
        let Some(chain) = row.chain.as_deref().and_then(|c| self.policies.chain(c)) else {
            tracing::warn!(
                group = row.group_id,
                chain = ?row.chain,
                "escalation: the chain is no longer in policies/escalation.toml; stopping it"
            );
            return Some(StepFired {
                next_step: row.next_step,
                state: "done".into(),
                note: Some("its escalation chain is no longer in policies/escalation.toml".into()),
                ..Default::default()
            });
        };
        let idx = row.next_step.max(0) as usize;
        let last = chain.steps.len().saturating_sub(1);
        let repeating = idx > last;
        let step = &chain.steps[idx.min(last)];
        let mut plan = self.policies.plan_step(step, now, overrides);
        if self.policies.people().are_examples() {
            // The shipped examples are nobody's team: page nobody, and say why on the card.
            plan.people.clear();
            plan.discord_roles.clear();
            plan.skipped.push(EXAMPLES_NOTE.into());
        }
        let group = group?;
        let reach = self.reach();
        let reason = if repeating {
            format!(
                "{} again: nobody has acknowledged yet",
                step_name(chain, idx.min(last))
            )
        } else if idx == 0 {
            format!("{} started firing", group.name())
        } else {
            format!(
                "{}: nobody acknowledged {} after {}",
                step_name(chain, idx),
                group.name(),
                short(step.after)
            )
        };
        let (title, summary) = page_title(group, &self.runbook);
        let url = self
            .console_url
            .as_ref()
            .map(|base| format!("{}/groups/{}", base.trim_end_matches('/'), group.id));
        // A page of this step for `person` (as shown) by `via` to `target`; `who` is the stored
        // person (ids).
        let queue = |who: String, person: String, role: Option<String>, via: &str, target| {
            let page = Page {
                id: 0,
                group_id: Some(group.id),
                severity: Some(group.severity.as_str().to_string()),
                title: title.clone(),
                summary: summary.clone(),
                person,
                role: role.clone(),
                reason: reason.clone(),
                url: url.clone(),
            };
            NewPage {
                person: who,
                role,
                via: via.to_string(),
                target,
                body: serde_json::to_string(&page).unwrap_or_default(),
            }
        };
        let mut pages = Vec::new();
        let mut paged_names = Vec::new();
        // (Discord id or &role id, who) to mention in the group's channel, in one message.
        let mut mentioned: Vec<(String, String, String)> = Vec::new();
        let mut unreachable = Vec::new();
        for (person_id, role) in &plan.people {
            let person = self.policies.people().get(person_id);
            let name = person.map_or(person_id.as_str(), |p| p.name.as_str());
            let label = match role {
                Some(r) => format!("{name} ({r})"),
                None => name.to_string(),
            };
            let found = person.map(|p| ways(p, &reach)).unwrap_or_default();
            // The card names only people a page went to; the others, and why, as a note.
            if found.is_empty() {
                unreachable.push(format!(
                    "{label}: no way to reach them is configured (policies/people.toml)"
                ));
                continue;
            }
            paged_names.push(label);
            for (via, target) in found {
                // One mention per step names everyone it pages (below).
                if via == "discord-mention" {
                    mentioned.push((target, name.to_string(), person_id.clone()));
                    continue;
                }
                pages.push(queue(
                    person_id.clone(),
                    name.to_string(),
                    role.clone(),
                    via,
                    target,
                ));
            }
        }
        if reach.vias.contains(&"discord-mention") {
            for role_id in &plan.discord_roles {
                mentioned.push((
                    format!("&{role_id}"),
                    format!("Discord role {role_id}"),
                    format!("&{role_id}"),
                ));
            }
        }
        if !mentioned.is_empty() {
            // Everyone's tag must fit one message (2,000 characters) with the title.
            mentioned.truncate(MENTIONS_MAX);
            let who: Vec<&str> = mentioned.iter().map(|(_, n, _)| n.as_str()).collect();
            let ids: Vec<&str> = mentioned.iter().map(|(_, _, id)| id.as_str()).collect();
            let targets: Vec<&str> = mentioned.iter().map(|(t, _, _)| t.as_str()).collect();
            pages.push(queue(
                ids.join(","),
                who.join(", "),
                None,
                "discord-mention",
                targets.join(","),
            ));
        }
        for hook in &plan.webhooks {
            pages.push(queue(
                format!("webhook:{hook}"),
                paged_names.join(", "),
                None,
                "webhook",
                hook.clone(),
            ));
        }
        // Where the chain goes next.
        let mut state = "active".to_string();
        let (next_step, next_due, next_label) = if idx < last {
            let next = &chain.steps[idx + 1];
            // A step that pages nobody (every role off hours) moves on at once.
            let nobody = pages.is_empty() && !plan.channel && !plan.backlog;
            let at = if nobody {
                now
            } else {
                now + chrono::Duration::from_std(next.after).unwrap_or_default()
            };
            let label = self.plan_names(&self.policies.plan_step(next, at, overrides));
            (idx as i64 + 1, Some(format_time(at)), label)
        } else if let Some(every) = chain.repeat_last_every.filter(|_| !pages.is_empty()) {
            let at = now + chrono::Duration::from_std(every).unwrap_or_default();
            (
                last as i64 + 1,
                Some(format_time(at)),
                Some(format!(
                    "{} again",
                    self.plan_names(&plan).unwrap_or_default()
                )),
            )
        } else {
            state = if plan.backlog { "backlog" } else { "done" }.into();
            (last as i64 + 1, None, None)
        };
        let mut notes: Vec<String> = row
            .note
            .iter()
            .flat_map(|n| n.split('\n').map(str::to_string))
            .filter(|n| !n.is_empty())
            .collect();
        for s in plan.skipped.iter().chain(&unreachable) {
            if !notes.contains(s) {
                notes.push(s.clone());
            }
        }
        let paging = if !paged_names.is_empty() {
            Some(paged_names.join(", "))
        } else if plan.channel {
            Some(crate::store::PAGING_CHANNEL.into())
        } else if plan.backlog {
            Some("the backlog".into())
        } else {
            None
        };
        Some(StepFired {
            next_step,
            next_due,
            state,
            paging,
            next_label,
            note: (!notes.is_empty()).then(|| notes.join("\n")),
            pages,
        })
    }

    /// "Marta (cto)" for the people a step would page.
    fn plan_names(&self, plan: &StepPlan) -> Option<String> {
        if self.policies.people().are_examples() {
            return None;
        }
        let names: Vec<String> = plan
            .people
            .iter()
            .map(|(id, role)| {
                let name = self.policies.people().name_of(id);
                match role {
                    Some(r) => format!("{name} ({r})"),
                    None => name.to_string(),
                }
            })
            .collect();
        if !names.is_empty() {
            Some(names.join(", "))
        } else if plan.channel {
            Some("the channel".into())
        } else {
            None
        }
    }

    /// Claims due pages and sends them, at most [`SENDS_AT_ONCE`] at a time.
    async fn deliver(
        self: &Arc<Self>,
        now: DateTime<Utc>,
        sends: &mut tokio::task::JoinSet<Option<i64>>,
    ) -> Result<usize, sqlx::Error> {
        let room = SENDS_AT_ONCE.saturating_sub(sends.len());
        if room == 0 {
            return Ok(0);
        }
        let until = now + chrono::Duration::from_std(CLAIM).unwrap_or_default();
        let pages = self
            .store
            .claim_pages(&format_time(now), &format_time(until), room as i64)
            .await?;
        let n = pages.len();
        // An acknowledgement or a resolution since the page was queued: it stays unsent.
        let ids: Vec<i64> = pages.iter().map(|p| p.id).collect();
        let wanted = self.store.pages_still_wanted(&ids).await?;
        for page in pages {
            if !wanted.contains(&page.id) {
                let why = "the group was acknowledged or resolved before it was sent";
                self.store.page_dropped(page.id, "cancelled", why).await?;
                metrics::counter!(telemetry::PAGES, "via" => via_label(&page.via), "result" => "cancelled")
                    .increment(1);
                continue;
            }
            let me = self.clone();
            sends.spawn(async move { me.send(page).await });
        }
        Ok(if n == room { ROUND as usize } else { n })
    }

    /// Sends one page; Some(its id) when delivered (the engine marks those sent together),
    /// None when it recorded another outcome itself.
    async fn send(&self, row: PageRow) -> Option<i64> {
        let result = self.try_send(&row).await;
        let (label, write) = match result {
            Ok(()) => {
                metrics::counter!(telemetry::PAGES, "via" => via_label(&row.via), "result" => "sent")
                    .increment(1);
                return Some(row.id);
            }
            Err(PageError::Permanent(why)) => {
                tracing::warn!(page = row.id, via = %row.via, error = %why, "a page was refused");
                self.audit_failed(&row, &why).await;
                (
                    "refused",
                    self.store.page_dropped(row.id, "failed", &why).await,
                )
            }
            Err(PageError::Temporary { reason, .. }) if row.attempts >= ATTEMPTS_MAX => {
                let why = format!("given up after {} attempts: {reason}", row.attempts);
                tracing::warn!(page = row.id, via = %row.via, error = %why, "a page was given up");
                self.audit_failed(&row, &why).await;
                (
                    "refused",
                    self.store.page_dropped(row.id, "failed", &why).await,
                )
            }
            Err(PageError::Temporary {
                reason,
                retry_after,
            }) => {
                let backoff = retry_after.unwrap_or_else(|| {
                    Duration::from_secs(1u64 << row.attempts.clamp(0, 9) as u32).min(BACKOFF_MAX)
                });
                tracing::warn!(page = row.id, via = %row.via, error = %reason, retry_in = ?backoff, "a page was not delivered; retrying");
                let due = self.now() + chrono::Duration::from_std(backoff).unwrap_or_default();
                (
                    "retried",
                    self.store
                        .page_retry(row.id, &reason, &format_time(due))
                        .await,
                )
            }
        };
        metrics::counter!(telemetry::PAGES, "via" => via_label(&row.via), "result" => label)
            .increment(1);
        if let Err(e) = write {
            tracing::error!(error = %e, page = row.id, "escalation: could not record a page's outcome; it is sent again after its claim ends");
        }
        None
    }

    async fn try_send(&self, row: &PageRow) -> Result<(), PageError> {
        let Some(pager) = self.pagers.get(row.via.as_str()) else {
            return Err(PageError::Permanent(format!(
                "no way to send `{}` pages is configured any more",
                row.via
            )));
        };
        let mut page: Page = serde_json::from_str(&row.body)
            .map_err(|e| PageError::Permanent(format!("the stored page is unreadable ({e})")))?;
        page.id = row.id;
        match tokio::time::timeout(SEND_TIMEOUT, pager.send(&row.target, &page)).await {
            Ok(r) => r,
            Err(_) => Err(PageError::Temporary {
                reason: format!("no answer within {}s", SEND_TIMEOUT.as_secs()),
                retry_after: None,
            }),
        }
    }

    async fn audit_failed(&self, row: &PageRow, why: &str) {
        let entry = page_entry(format!("page-{}", row.id), AuditStep::Failed)
            .args(serde_json::Map::from_iter([
                ("person".to_string(), serde_json::json!(row.person)),
                ("via".to_string(), serde_json::json!(row.via)),
            ]))
            .reason(why.to_string());
        if let Err(e) = self.audit.append(entry).await {
            tracing::error!(error = %e, "escalation: the audit trail did not take a refused page");
        }
    }

    /// Whether the hand-off pass is due (every [`HANDOFF_EVERY`]).
    fn handoff_due(&self, now: DateTime<Utc>) -> bool {
        let mut last = self.last_handoffs.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| {
            now - t < chrono::Duration::from_std(HANDOFF_EVERY).unwrap_or_default()
        }) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// At each hand-off (a rotation's turn, an override starting), posts a summary to the alert
    /// channels once: who is on call now, and the open groups with who acknowledged what.
    async fn handoffs(&self, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        // The shipped example people are nobody's team: their turns are not announced (a
        // newcomer's channel would hear every Monday that an example person took over).
        if self.policies.people().are_examples() {
            return Ok(());
        }
        let stamp = format_time(now);
        let overrides = self.overrides(now).await?;
        for role in self.policies.roles().iter() {
            let Some(duty) = self.policies.on_duty(&role.name, now, &overrides) else {
                continue;
            };
            if matches!(duty.source, DutySource::Holders) {
                continue;
            }
            let Some(since) = duty.since else { continue };
            // Only hand-offs that just happened: a runbot starting mid-turn says nothing.
            if since > now
                || now - since > chrono::Duration::from_std(HANDOFF_WINDOW).unwrap_or_default()
            {
                continue;
            }
            let key = format!("handoff:{}:{}", role.name, format_time(since));
            if !self.store.post_once(&key, &stamp).await? {
                continue;
            }
            let before = self
                .policies
                .on_duty(&role.name, since - chrono::Duration::seconds(1), &overrides)
                .map(|d| d.people)
                .unwrap_or_default();
            let text = self.handoff_text(&role.name, &duty, &before).await?;
            self.store.announce_everywhere(&text, &stamp).await?;
        }
        Ok(())
    }

    fn names(&self, ids: &[String]) -> String {
        if ids.is_empty() {
            return "nobody".into();
        }
        let people = self.policies.people();
        ids.iter()
            .map(|id| people.name_of(id))
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn handoff_text(
        &self,
        role: &str,
        duty: &OnDuty,
        before: &[String],
    ) -> Result<String, sqlx::Error> {
        let mut text = format!(
            "🔁 Hand-off: **{}** is on call for **{role}**{}{}.",
            self.names(&duty.people),
            duty.until
                .map(|u| format!(" until {}", u.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default(),
            if before.is_empty() || before == duty.people.as_slice() {
                String::new()
            } else {
                format!(", taking over from {}", self.names(before))
            }
        );
        let open = self
            .store
            .list_groups(
                crate::store::GroupFilter::Open,
                HANDOFF_GROUPS + 1,
                None,
                Some(0),
            )
            .await?;
        if open.is_empty() {
            text.push_str(" No alert group is open.");
            return Ok(text);
        }
        text.push_str(&format!(
            " Open groups ({}{}):",
            open.len().min(HANDOFF_GROUPS as usize),
            if open.len() > HANDOFF_GROUPS as usize {
                "+"
            } else {
                ""
            }
        ));
        for g in open.iter().take(HANDOFF_GROUPS as usize) {
            let state = match (&g.acknowledged_by, g.escalation.as_ref()) {
                (Some(by), _) => format!("acknowledged by {by}"),
                (None, Some(e)) if e.state == "backlog" => "in the backlog".into(),
                (None, Some(e)) => match &e.paging {
                    Some(p) => format!("not acknowledged; paging {p}"),
                    None => "not acknowledged".into(),
                },
                (None, None) => "not acknowledged".into(),
            };
            text.push_str(&format!(
                "\n• {} {} — {state}",
                g.severity.title(),
                g.name()
            ));
        }
        Ok(text)
    }

    /// Runbook actions on a group: resolved since, or still firing when their time is up.
    async fn check_actions(&self, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let stamp = format_time(now);
        for c in self.store.action_checks_ready(&stamp).await? {
            let at = parse_stored_time(&c.at).unwrap_or(now);
            let group = self.store.group_view_capped(c.group_id, 1).await?;
            let label = group
                .as_ref()
                .map_or_else(|| format!("#{}", c.group_id), |g| g.name());
            if c.group_started_at != c.episode {
                self.store.finish_action_check(c.id, "gone").await?;
            } else if c.group_status == "resolved" {
                if !self.store.finish_action_check(c.id, "resolved").await? {
                    continue;
                }
                let resolved = c
                    .resolved_at
                    .as_deref()
                    .and_then(parse_stored_time)
                    .unwrap_or(now);
                let took = (resolved - at).to_std().unwrap_or_default();
                let text = format!(
                    "✅ {label} resolved {} after {} by {}.",
                    precise(took),
                    c.command,
                    c.actor
                );
                self.store
                    .announce_to_group(c.group_id, &text, &stamp)
                    .await?;
            } else {
                if !self.store.finish_action_check(c.id, "still_firing").await? {
                    continue;
                }
                let esc = self.store.current_escalation(c.group_id).await?;
                let moved = match &esc {
                    Some(e) => self.store.set_escalation_due(e.id, &stamp).await?,
                    None => false,
                };
                let text = format!(
                    "⚠️ {label} is still firing {} after {} by {}{}",
                    precise(self.verify_after),
                    c.command,
                    c.actor,
                    if moved {
                        "; moving the escalation on to its next step."
                    } else {
                        "."
                    }
                );
                self.store
                    .announce_to_group(c.group_id, &text, &stamp)
                    .await?;
                if moved {
                    self.wake.notify_one();
                }
            }
        }
        Ok(())
    }
}

/// The audit entry of one step fired: the group, the chain, the step, and every page queued.
fn step_entry(row: &EscalationRow, fired: &StepFired, ids: &[i64]) -> AuditEntry {
    let pages: Vec<serde_json::Value> = fired
        .pages
        .iter()
        .zip(ids)
        .map(|(p, id)| serde_json::json!({"page": id, "person": p.person, "role": p.role, "via": p.via}))
        .collect();
    page_entry(
        uuid::Uuid::new_v4().simple().to_string(),
        AuditStep::Started,
    )
    .args(serde_json::Map::from_iter([
        ("group".to_string(), serde_json::json!(row.group_id)),
        ("chain".to_string(), serde_json::json!(row.chain)),
        ("step".to_string(), serde_json::json!(row.next_step)),
    ]))
    .origin(serde_json::Map::from_iter([(
        "alert_group".to_string(),
        serde_json::json!(row.group_id),
    )]))
    .detail(serde_json::json!({
        "pages": pages,
        "paging": fired.paging,
        "skipped": fired.note,
    }))
}

/// An audit entry of runbot's own paging (actor `runbot`, command `page`).
fn page_entry(invocation_id: String, step: AuditStep) -> AuditEntry {
    AuditEntry::new(
        invocation_id,
        step,
        crate::request::Platform::Cli,
        "runbot",
        "runbot",
        "page",
    )
}

/// The overrides that have not ended by `now`, as the policy reads them.
pub async fn active_overrides(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<Override>, sqlx::Error> {
    let rows = store.overrides_after(&format_time(now)).await?;
    Ok(rows.iter().filter_map(override_of).collect())
}

/// A stored override, as the policy reads it; None when its times are unreadable.
fn override_of(r: &OverrideRow) -> Option<Override> {
    Some(Override {
        role: r.role.clone(),
        person: r.person.clone(),
        from: parse_stored_time(&r.starts_at)?,
        until: parse_stored_time(&r.ends_at)?,
    })
}

fn step_name(chain: &Chain, idx: usize) -> String {
    format!("step {} of {}", idx + 1, chain.name)
}

/// The pagers' names are code, never outside input; still, only known ones become labels.
fn via_label(via: &str) -> &'static str {
    match via {
        "discord" => "discord",
        "discord-mention" => "discord-mention",
        "console" => "console",
        "email" => "email",
        "webhook" => "webhook",
        "slack" => "slack",
        _ => "other",
    }
}
