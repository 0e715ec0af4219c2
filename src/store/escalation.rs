//! Escalation rows (see `migrations/*/0016_escalation.sql`): one per firing episode of a group,
//! the pages each step queues, on-call overrides, checks after runbook actions, and messages
//! posted once across replicas. Rows and SQL only: the escalation engine decides.

use serde::Serialize;
use sqlx::Row;

use super::ingest::{OUTBOX_INSERT, OUTBOX_UPSERT};
use super::sql::Bind;
use super::Store;
use crate::config::Backend;

/// A firing group whose current episode has no escalation yet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EpisodeToStart {
    pub group_id: i64,
    /// The group's `started_at`: the episode's key.
    pub episode: String,
    pub severity: String,
    pub runbook: Option<String>,
}

/// An escalation, as the engine and the card read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EscalationRow {
    pub id: i64,
    pub group_id: i64,
    pub episode: String,
    pub severity: String,
    pub chain: Option<String>,
    pub state: String,
    pub next_step: i64,
    pub due_at: Option<String>,
    pub forced: i64,
    pub started_at: String,
    pub acked_at: Option<String>,
    pub acked_by: Option<String>,
    pub resolved_at: Option<String>,
    pub pages: i64,
    pub steps_fired: i64,
    pub paging: Option<String>,
    pub next_label: Option<String>,
    pub note: Option<String>,
}

/// `paging` of a step that notifies the group's channel and pages nobody.
pub const PAGING_CHANNEL: &str = "the channel";

const ESCALATION_COLUMNS: &str = "id, group_id, episode, severity, chain, state, next_step, \
    due_at, forced, started_at, acked_at, acked_by, resolved_at, pages, steps_fired, paging, \
    next_label, note";

/// What firing one step writes: where the chain goes next, what the card says, the pages.
#[derive(Debug, Clone, Default)]
pub struct StepFired {
    /// The step after this one (may equal the chain's length: nothing more, unless repeating).
    pub next_step: i64,
    pub next_due: Option<String>,
    /// `active`, or `done` / `backlog` when nothing more will fire.
    pub state: String,
    pub paging: Option<String>,
    pub next_label: Option<String>,
    pub note: Option<String>,
    pub pages: Vec<NewPage>,
}

/// An escalation whose group became more severe.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Outranked {
    pub id: i64,
    /// What the chain was chosen for, and the group's severity now.
    pub severity: String,
    pub group_severity: String,
    pub runbook: Option<String>,
}

/// A page to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPage {
    pub person: String,
    pub role: Option<String>,
    pub via: String,
    pub target: String,
    /// The `request::page::Page` as JSON, its `id` filled when sent.
    pub body: String,
}

/// A page claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PageRow {
    pub id: i64,
    pub escalation_id: Option<i64>,
    pub group_id: Option<i64>,
    pub step: Option<i64>,
    pub person: String,
    pub role: Option<String>,
    pub via: String,
    pub target: String,
    pub body: String,
    pub attempts: i64,
    pub created_at: String,
}

const PAGE_COLUMNS: &str = "id, escalation_id, group_id, step, person, role, via, target, body, \
    attempts, created_at";

/// A shift taken by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OverrideRow {
    pub id: i64,
    pub role: String,
    pub person: String,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub created_at: String,
}

/// A runbook action being watched, with what its group did since.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActionCheck {
    pub id: i64,
    pub group_id: i64,
    pub command: String,
    pub actor: String,
    pub at: String,
    pub due_at: String,
    /// The group's status and current episode now.
    pub group_status: String,
    pub group_started_at: String,
    pub episode: String,
    pub resolved_at: Option<String>,
}

/// One episode for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EpisodeStats {
    pub severity: String,
    pub started_at: String,
    pub acked_at: Option<String>,
    pub resolved_at: Option<String>,
    pub pages: i64,
    pub steps_fired: i64,
}

impl Store {
    /// Firing groups whose episode has no escalation yet, oldest first.
    pub async fn episodes_to_start(&self, limit: i64) -> Result<Vec<EpisodeToStart>, sqlx::Error> {
        let sql = "SELECT g.id AS group_id, g.started_at AS episode, g.severity, g.runbook \
             FROM alert_groups g WHERE g.status = 'firing' AND NOT EXISTS (SELECT 1 FROM \
             escalations e WHERE e.group_id = g.id AND e.episode = g.started_at) \
             ORDER BY g.id LIMIT $1";
        self.fetch_all(sql, (limit,)).await
    }

    /// Escalations whose group fires again within the same episode (Alertmanager resolved it,
    /// say after `resolve_timeout`, and the same alert came back with its first `startsAt`):
    /// they start over, as a re-fire does. Answers how many.
    pub async fn reopen_refired(&self, now: &str) -> Result<u64, sqlx::Error> {
        // Found from the firing groups, which are few, not from every resolved escalation kept
        // for the report.
        let sql = "UPDATE escalations SET state = CASE WHEN chain IS NULL THEN 'done' ELSE \
             'active' END, next_step = 0, due_at = CASE WHEN chain IS NULL THEN NULL ELSE $1 END, \
             forced = 0, started_at = $1, acked_at = NULL, acked_by = NULL, resolved_at = NULL, \
             paging = NULL, next_label = NULL, note = NULL, updated_at = $1 \
             WHERE id IN (SELECT e.id FROM alert_groups g JOIN escalations e ON \
             e.group_id = g.id AND e.episode = g.started_at WHERE g.status = 'firing' AND \
             e.state = 'resolved')";
        self.execute(sql, (now,)).await
    }

    /// Open, unacknowledged escalations whose group has become more severe than the chain
    /// was chosen for (a Sev3 group joined by a critical alert).
    pub async fn outranked_escalations(&self) -> Result<Vec<Outranked>, sqlx::Error> {
        // `sev1` < `sev2` < …: more severe sorts first.
        let sql = "SELECT e.id, e.severity, g.severity AS group_severity, g.runbook FROM \
             escalations e JOIN alert_groups g ON g.id = e.group_id AND g.started_at = e.episode \
             WHERE e.state IN ('active', 'done', 'backlog') AND e.acked_at IS NULL AND \
             g.status = 'firing' AND g.severity < e.severity ORDER BY e.id LIMIT 500";
        self.fetch_all(sql, ()).await
    }

    /// Starts an escalation over on another chain for its group's new severity; false when
    /// something changed it first.
    pub async fn rechain(
        &self,
        o: &Outranked,
        chain: Option<&str>,
        note: &str,
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE escalations SET severity = $1, chain = $2, state = CASE WHEN $2 IS \
             NULL THEN 'done' ELSE 'active' END, next_step = 0, due_at = CASE WHEN $2 IS NULL \
             THEN NULL ELSE $3 END, forced = 0, note = $4, next_label = NULL, updated_at = $3 \
             WHERE id = $5 AND severity = $6 AND acked_at IS NULL";
        let values = (&o.group_severity, chain, now, note, o.id, &o.severity);
        Ok(self.execute(sql, values).await? == 1)
    }

    /// Records the group's new severity and leaves the chain as it is (a chain the runbook
    /// names for the alert holds whatever the severity).
    pub async fn set_escalation_severity(
        &self,
        o: &Outranked,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        let sql = "UPDATE escalations SET severity = $1, updated_at = $2 WHERE id = $3 AND \
             severity = $4";
        self.execute(sql, (&o.group_severity, now, o.id, &o.severity))
            .await?;
        Ok(())
    }

    /// Opens an episode's escalation; None when another process (or an earlier round) did.
    pub async fn start_escalation(
        &self,
        ep: &EpisodeToStart,
        chain: Option<&str>,
        state: &str,
        due_at: Option<&str>,
        now: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        let sql = "INSERT INTO escalations (group_id, episode, severity, chain, state, \
             next_step, due_at, started_at, updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $7) \
             ON CONFLICT (group_id, episode) DO NOTHING RETURNING id";
        let row = sqlx::query(sql)
            .bind_all((
                ep.group_id,
                &ep.episode,
                &ep.severity,
                chain,
                state,
                due_at,
                now,
            ))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("id")).transpose()
    }

    /// Active escalations whose next step is due and whose group lets it fire (firing, same
    /// episode, not acknowledged unless forced, not silenced).
    pub async fn due_escalations(
        &self,
        now: &str,
        limit: i64,
    ) -> Result<Vec<EscalationRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM escalations e WHERE e.state = 'active' AND e.due_at IS NOT NULL \
             AND e.due_at <= $1 AND {FIRES} ORDER BY e.due_at, e.id LIMIT $2",
            prefixed("e", ESCALATION_COLUMNS)
        );
        self.fetch_all(&sql, (now, limit)).await
    }

    /// The earliest due time of an active escalation, to sleep until.
    /// (Steps held by an acknowledgement or a silence do not count: they would wake the
    /// engine for nothing.)
    pub async fn next_escalation_due(&self, now: &str) -> Result<Option<String>, sqlx::Error> {
        let sql = format!(
            "SELECT MIN(e.due_at) FROM escalations e WHERE e.state = 'active' AND \
             e.due_at IS NOT NULL AND {FIRES}"
        );
        sqlx::query_scalar(&sql)
            .bind(now)
            .fetch_one(&self.pool)
            .await
    }

    /// Fires each row's step `row.next_step` if it is still due and nobody else fired it: moves
    /// the chain on, queues the step's pages and the group's card, all in one transaction.
    /// Answers, per row, the ids of the pages queued, or None when another process won or the
    /// group no longer lets it fire.
    pub async fn fire_steps(
        &self,
        steps: &[(&EscalationRow, &StepFired)],
        now: &str,
    ) -> Result<Vec<Option<Vec<i64>>>, sqlx::Error> {
        let claim = format!(
            "UPDATE escalations SET next_step = $1, due_at = $2, state = $3, forced = 0, \
             steps_fired = steps_fired + 1, pages = pages + $4, paging = COALESCE($5, paging), \
             next_label = $6, note = $7, updated_at = $8 \
             WHERE id = $9 AND next_step = $10 AND state = 'active' AND due_at IS NOT NULL \
             AND due_at <= $8 AND {}",
            FIRES.replace("e.", "escalations.").replace("$1", "$8")
        );
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(steps.len());
        for (row, fired) in steps {
            let done = sqlx::query(&claim)
                .bind_all((
                    fired.next_step,
                    fired.next_due.as_deref(),
                    &fired.state,
                    fired.pages.len() as i64,
                    fired.paging.as_deref(),
                    fired.next_label.as_deref(),
                    fired.note.as_deref(),
                    now,
                    row.id,
                    row.next_step,
                ))
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != 1 {
                out.push(None);
                continue;
            }
            let mut ids = Vec::with_capacity(fired.pages.len());
            for p in &fired.pages {
                let at = (Some(row.id), Some(row.group_id), Some(row.next_step));
                ids.push(insert_page(&mut tx, at, p, now).await?);
            }
            self.queue_card(&mut tx, row.group_id, now).await?;
            out.push(Some(ids));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Queues pages by hand (`/page`), not tied to a chain step.
    pub async fn queue_pages(
        &self,
        group_id: Option<i64>,
        pages: &[NewPage],
        now: &str,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(pages.len());
        for p in pages {
            ids.push(insert_page(&mut tx, (None, group_id, None), p, now).await?);
        }
        if let Some(g) = group_id {
            sqlx::query(
                "UPDATE escalations SET pages = pages + $1 WHERE group_id = $2 AND episode = \
                 (SELECT started_at FROM alert_groups WHERE id = $2)",
            )
            .bind_all((pages.len() as i64, g))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn queue_card(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        group_id: i64,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        for platform in self.chat_platforms().iter() {
            sqlx::query(&format!("{OUTBOX_INSERT} ($1, $2, 1, $3) {OUTBOX_UPSERT}"))
                .bind_all((group_id, platform, now))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Marks escalations whose group resolved (or fired anew) resolved, and cancels their
    /// queued pages. Answers how many it closed.
    pub async fn close_resolved_escalations(&self, now: &str) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let gone = "EXISTS (SELECT 1 FROM alert_groups g WHERE g.id = escalations.group_id \
             AND (g.status = 'resolved' OR g.started_at <> escalations.episode))";
        let closed = sqlx::query(&format!(
            "UPDATE escalations SET state = 'resolved', due_at = NULL, updated_at = $1, \
             resolved_at = COALESCE((SELECT g.resolved_at FROM alert_groups g WHERE \
             g.id = escalations.group_id AND g.started_at = escalations.episode), $1) \
             WHERE state IN ('active', 'acked', 'done', 'backlog') AND {gone}"
        ))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if closed > 0 {
            sqlx::query(
                "UPDATE pages SET state = 'cancelled', last_error = 'resolved before it was sent' \
                 WHERE state = 'queued' AND EXISTS (SELECT 1 FROM escalations e WHERE \
                 e.id = pages.escalation_id AND e.state = 'resolved')",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(closed)
    }

    /// The escalation of a group's current episode.
    pub async fn current_escalation(
        &self,
        group_id: i64,
    ) -> Result<Option<EscalationRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM escalations e JOIN alert_groups g ON g.id = e.group_id AND \
             g.started_at = e.episode WHERE e.group_id = $1",
            prefixed("e", ESCALATION_COLUMNS)
        );
        self.fetch_optional(&sql, (group_id,)).await
    }

    /// The escalations of these groups' current episodes.
    pub async fn current_escalations(
        &self,
        group_ids: &[i64],
    ) -> Result<Vec<EscalationRow>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in group_ids.chunks(500) {
            let ids = super::placeholders(self.backend, chunk.len(), 1);
            let sql = format!(
                "SELECT {} FROM escalations e JOIN alert_groups g ON g.id = e.group_id AND \
                 g.started_at = e.episode WHERE e.group_id IN ({ids})",
                prefixed("e", ESCALATION_COLUMNS)
            );
            let mut q = sqlx::query_as(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
    }

    /// `/escalate`: the next step fires at once, even if someone acknowledged. False when the
    /// group's episode has no escalation, or nothing is left to fire.
    pub async fn escalate_now(&self, group_id: i64, now: &str) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE escalations SET state = 'active', forced = 1, due_at = $1, \
             updated_at = $1 WHERE group_id = $2 AND episode = (SELECT started_at FROM \
             alert_groups WHERE id = $2 AND status = 'firing') AND chain IS NOT NULL AND \
             state IN ('active', 'acked', 'done')";
        Ok(self.execute(sql, (now, group_id)).await? == 1)
    }

    /// Moves a chain on at once, as `/escalate` does; for a runbook action that did not help.
    pub async fn set_escalation_due(&self, id: i64, now: &str) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE escalations SET state = 'active', forced = 1, due_at = $1, \
             updated_at = $1 WHERE id = $2 AND state IN ('active', 'acked', 'done')";
        Ok(self.execute(sql, (now, id)).await? == 1)
    }

    /// Claims up to `limit` due pages for `lease` (until `until`), oldest first.
    pub async fn claim_pages(
        &self,
        now: &str,
        until: &str,
        limit: i64,
    ) -> Result<Vec<PageRow>, sqlx::Error> {
        let pick = "SELECT id FROM pages WHERE state = 'queued' AND due_at <= $1 AND \
             (claimed_until IS NULL OR claimed_until <= $1) ORDER BY id LIMIT $3";
        let sql = match self.backend {
            Backend::Postgres => format!(
                "UPDATE pages SET claimed_until = $2, attempts = attempts + 1 WHERE id IN \
                 ({pick} FOR UPDATE SKIP LOCKED) RETURNING {PAGE_COLUMNS}"
            ),
            Backend::Sqlite => format!(
                "UPDATE pages SET claimed_until = $2, attempts = attempts + 1 WHERE id IN \
                 ({pick}) RETURNING {PAGE_COLUMNS}"
            ),
        };
        let mut rows: Vec<PageRow> = self.fetch_all(&sql, (now, until, limit)).await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// The earliest due time of a queued page.
    /// The earliest due time of a queued page nobody is sending.
    pub async fn next_page_due(&self, now: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT MIN(due_at) FROM pages WHERE state = 'queued' AND \
             (claimed_until IS NULL OR claimed_until <= $1)",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
    }

    /// Which of these pages should still go out: a page by hand always; a chain's while its
    /// group fires unacknowledged (or the chain was pushed on, or its step is still active).
    pub async fn pages_still_wanted(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
        let mut out = std::collections::HashSet::new();
        for chunk in ids.chunks(500) {
            let list = super::placeholders(self.backend, chunk.len(), 1);
            let sql = format!(
                "SELECT p.id FROM pages p WHERE p.id IN ({list}) AND (p.escalation_id IS NULL \
                 OR EXISTS (SELECT 1 FROM escalations e JOIN alert_groups g ON \
                 g.id = e.group_id AND g.started_at = e.episode WHERE e.id = p.escalation_id \
                 AND g.status = 'firing' AND (g.acknowledged_at IS NULL OR e.forced = 1 OR \
                 e.state = 'active')))"
            );
            let mut q = sqlx::query_scalar::<_, i64>(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
    }

    /// Marks these pages sent, in one statement.
    pub async fn pages_sent(&self, ids: &[i64], now: &str) -> Result<(), sqlx::Error> {
        for chunk in ids.chunks(500) {
            // One placeholder style per statement (SQLite's `?` after a `$1` is refused).
            let at = super::placeholders(self.backend, 1, 1);
            let list = super::placeholders(self.backend, chunk.len(), 2);
            let sql = format!(
                "UPDATE pages SET state = 'sent', sent_at = {at}, claimed_until = NULL, \
                 last_error = NULL WHERE id IN ({list})"
            );
            let mut q = sqlx::query(&sql).bind(now);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// A page that will not be sent: refused for good, or no longer wanted.
    pub async fn page_dropped(&self, id: i64, state: &str, why: &str) -> Result<(), sqlx::Error> {
        let sql =
            "UPDATE pages SET state = $1, last_error = $2, claimed_until = NULL WHERE id = $3";
        self.execute(sql, (state, why, id)).await?;
        Ok(())
    }

    /// A page to try again at `due_at`.
    pub async fn page_retry(&self, id: i64, why: &str, due_at: &str) -> Result<(), sqlx::Error> {
        let sql =
            "UPDATE pages SET last_error = $1, due_at = $2, claimed_until = NULL WHERE id = $3";
        self.execute(sql, (why, due_at, id)).await?;
        Ok(())
    }

    /// Pages of a group's current episode, oldest first: (person, role, via, state, created).
    pub async fn pages_of_group(
        &self,
        group_id: i64,
    ) -> Result<Vec<(String, Option<String>, String, String, String)>, sqlx::Error> {
        let sql = "SELECT person, role, via, state, created_at FROM pages WHERE group_id = $1 \
             ORDER BY id";
        self.fetch_all(sql, (group_id,)).await
    }

    /// Records an acknowledgement on the group's current episode (after `ack_group`), stops its
    /// chain and cancels its queued pages. Answers when the episode started, for time to ack.
    pub async fn ack_escalation(
        &self,
        group_id: i64,
        by: &str,
        now: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let started: Option<String> = sqlx::query_scalar(
            "UPDATE escalations SET state = CASE WHEN state = 'backlog' THEN state ELSE 'acked' \
             END, acked_at = $1, acked_by = $2, due_at = NULL, forced = 0, updated_at = $1 \
             WHERE group_id = $3 AND acked_at IS NULL AND episode = (SELECT started_at FROM \
             alert_groups WHERE id = $3) RETURNING started_at",
        )
        .bind_all((now, by, group_id))
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE pages SET state = 'cancelled', last_error = 'acknowledged before it was sent' \
             WHERE group_id = $1 AND state = 'queued' AND escalation_id IS NOT NULL",
        )
        .bind(group_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(started)
    }

    pub async fn add_override(
        &self,
        role: &str,
        person: &str,
        from: &str,
        until: &str,
        by: &str,
        now: &str,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO oncall_overrides (role, person, starts_at, ends_at, created_by, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind_all((role, person, from, until, by, now))
        .fetch_one(&self.pool)
        .await
    }

    /// Overrides that have not ended by `at`, oldest first.
    pub async fn overrides_after(&self, at: &str) -> Result<Vec<OverrideRow>, sqlx::Error> {
        let sql = "SELECT id, role, person, starts_at, ends_at, created_by, created_at FROM \
             oncall_overrides WHERE ends_at > $1 ORDER BY id";
        self.fetch_all(sql, (at,)).await
    }

    /// True for the one process that gets to post the message named `key`.
    pub async fn post_once(&self, key: &str, now: &str) -> Result<bool, sqlx::Error> {
        let sql = "INSERT INTO posted_once (key, posted_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO NOTHING";
        Ok(self.execute(sql, (key, now)).await? == 1)
    }

    /// Starts watching a runbook action on a firing group.
    pub async fn watch_action(
        &self,
        group_id: i64,
        command: &str,
        actor: &str,
        now: &str,
        due_at: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = "INSERT INTO action_checks (group_id, episode, command, actor, at, due_at, \
             state) SELECT id, started_at, $1, $2, $3, $4, 'watching' FROM alert_groups \
             WHERE id = $5 AND status = 'firing'";
        Ok(self
            .execute(sql, (command, actor, now, due_at, group_id))
            .await?
            == 1)
    }

    /// Watched actions whose group resolved or fired anew, or whose time is up.
    pub async fn action_checks_ready(&self, now: &str) -> Result<Vec<ActionCheck>, sqlx::Error> {
        let sql = "SELECT c.id, c.group_id, c.command, c.actor, c.at, c.due_at, \
             g.status AS group_status, g.started_at AS group_started_at, c.episode, \
             g.resolved_at FROM action_checks c JOIN alert_groups g ON g.id = c.group_id \
             WHERE c.state = 'watching' AND (c.due_at <= $1 OR g.status = 'resolved' OR \
             g.started_at <> c.episode) ORDER BY c.id LIMIT 100";
        self.fetch_all(sql, (now,)).await
    }

    /// Closes a watched action; false when another process closed it first.
    pub async fn finish_action_check(&self, id: i64, state: &str) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE action_checks SET state = $1 WHERE id = $2 AND state = 'watching'";
        Ok(self.execute(sql, (state, id)).await? == 1)
    }

    /// Queues a message for the channel of a group's card on every platform (the alert channel
    /// where it has no card yet).
    pub async fn announce_to_group(
        &self,
        group_id: i64,
        text: &str,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        for platform in self.chat_platforms().iter() {
            let sql = "INSERT INTO announcements (platform, channel_id, text, created_at) \
                 SELECT $1, (SELECT channel_id FROM chat_cards WHERE group_id = $2 AND \
                 platform = $1), $3, $4";
            self.execute(sql, (platform.as_str(), group_id, text, now))
                .await?;
        }
        Ok(())
    }

    /// Queues a message for the alert channel of every chat platform.
    pub async fn announce_everywhere(&self, text: &str, now: &str) -> Result<(), sqlx::Error> {
        for platform in self.chat_platforms().iter() {
            let sql = "INSERT INTO announcements (platform, channel_id, text, created_at) \
                 VALUES ($1, NULL, $2, $3)";
            self.execute(sql, (platform.as_str(), text, now)).await?;
        }
        Ok(())
    }

    /// Escalations (one per episode) started in [from, to), oldest first.
    pub async fn episodes_between(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<EpisodeStats>, sqlx::Error> {
        let sql = "SELECT severity, started_at, acked_at, resolved_at, pages, steps_fired FROM \
             escalations WHERE started_at >= $1 AND started_at < $2 ORDER BY started_at";
        self.fetch_all(sql, (from, to)).await
    }

    /// Groups in the backlog (their episode's chain put them there) still open, newest first.
    pub async fn backlog(&self, limit: i64) -> Result<Vec<EscalationRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM escalations e WHERE e.state = 'backlog' ORDER BY e.id DESC LIMIT $1",
            prefixed("e", ESCALATION_COLUMNS)
        );
        self.fetch_all(&sql, (limit,)).await
    }

    /// Like [`Store::episodes_between`], with the pages each episode's chain actually sent
    /// (queued pages cancelled by an acknowledgement were not), for the report. At most
    /// `limit` episodes, oldest first.
    pub async fn report_episodes(
        &self,
        from: &str,
        to: &str,
        limit: i64,
    ) -> Result<Vec<ReportEpisode>, sqlx::Error> {
        let sql = "SELECT e.severity, e.started_at, e.acked_at, e.resolved_at, e.steps_fired, \
             (SELECT COUNT(*) FROM pages p WHERE p.escalation_id = e.id AND p.state = 'sent') \
             AS pages_sent FROM escalations e WHERE e.started_at >= $1 AND e.started_at < $2 \
             ORDER BY e.started_at LIMIT $3";
        self.fetch_all(sql, (from, to, limit)).await
    }

    /// The open backlog with what people recognise a group by, newest first.
    pub async fn backlog_groups(&self, limit: i64) -> Result<Vec<BacklogGroup>, sqlx::Error> {
        let sql = "SELECT e.group_id, e.severity, e.started_at, g.group_key, g.group_labels, \
             g.common_labels FROM escalations e JOIN alert_groups g ON g.id = e.group_id \
             WHERE e.state = 'backlog' ORDER BY e.id DESC LIMIT $1";
        self.fetch_all(sql, (limit,)).await
    }
}

/// Queues one page: of (escalation, group, step) when a chain's step sends it.
async fn insert_page(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    (escalation, group, step): (Option<i64>, Option<i64>, Option<i64>),
    p: &NewPage,
    now: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO pages (escalation_id, group_id, step, person, role, via, target, body, \
         state, due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $9) \
         RETURNING id",
    )
    .bind_all((
        escalation,
        group,
        step,
        &p.person,
        p.role.as_deref(),
        &p.via,
        &p.target,
        &p.body,
        now,
    ))
    .fetch_one(&mut **tx)
    .await
}

/// The condition under which an escalation's step may fire, on its group (`$1`: now).
const FIRES: &str = "EXISTS (SELECT 1 FROM alert_groups g WHERE g.id = e.group_id AND \
     g.status = 'firing' AND g.started_at = e.episode AND (e.forced = 1 OR \
     g.acknowledged_at IS NULL) AND (g.silenced_until IS NULL OR g.silenced_until <= $1))";

/// `a, b` → `e.a, e.b`.
fn prefixed(table: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One episode for the report: its times, and what its chain did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReportEpisode {
    pub severity: String,
    pub started_at: String,
    pub acked_at: Option<String>,
    pub resolved_at: Option<String>,
    pub steps_fired: i64,
    pub pages_sent: i64,
}

/// A group in the backlog: its labels as stored (JSON objects), to name it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BacklogGroup {
    pub group_id: i64,
    pub severity: String,
    pub started_at: String,
    pub group_key: String,
    pub group_labels: String,
    pub common_labels: String,
}
