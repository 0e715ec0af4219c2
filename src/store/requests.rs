//! What people's requests change in the store: acknowledgements and silences on a group (both
//! shown on its card), and requests waiting for a confirmation or an approval
//! (see `migrations/*/0005_requests.sql`).

use sqlx::{Any, Row, Transaction};

use super::ingest::{Columns, OUTBOX_INSERT, OUTBOX_UPSERT};
use super::sql::{Bind, Values};
use super::Store;
use crate::domain::GroupStatus;

/// What `/ack` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// Recorded now.
    Now,
    /// Someone had already acknowledged it: who and when (RFC 3339).
    Already {
        by: String,
        at: String,
    },
    /// The group is resolved: nothing to acknowledge.
    Resolved,
    NoSuchGroup,
}

/// A request waiting for a click.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingRow {
    pub id: String,
    pub kind: String,
    pub invocation_id: String,
    /// JSON written by the invocation core.
    pub request: String,
    pub requester: String,
    /// JSON array of role names.
    pub eligible_roles: String,
    /// JSON array written by the invocation core.
    pub approvals: String,
    pub state: String,
    pub created_at: String,
    pub expires_at: String,
    pub resolved_by: Option<String>,
}

const PENDING_COLUMNS: &str = "id, kind, invocation_id, request, requester, eligible_roles, \
    approvals, state, created_at, expires_at, resolved_by";

impl Store {
    /// Records who acknowledged a firing group, unless someone already did, and queues its
    /// card in the same transaction.
    pub async fn ack_group(
        &self,
        group_id: i64,
        by: &str,
        now: &str,
    ) -> Result<Acked, sqlx::Error> {
        let ack = "UPDATE alert_groups SET acknowledged_by = $1, acknowledged_at = $2, \
                   updated_at = $2 WHERE id = $3 AND status <> 'resolved' AND acknowledged_by IS NULL";
        let (mut tx, done) = self
            .update_group(ack, (by, now, group_id), group_id, now)
            .await?;
        if done {
            tx.commit().await?;
            return Ok(Acked::Now);
        }
        let row = sqlx::query(
            "SELECT status, acknowledged_by, acknowledged_at FROM alert_groups WHERE id = $1",
        )
        .bind(group_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(Acked::NoSuchGroup);
        };
        if row.parsed("status", GroupStatus::parse)? == GroupStatus::Resolved {
            return Ok(Acked::Resolved);
        }
        Ok(Acked::Already {
            by: row
                .try_get::<Option<String>, _>("acknowledged_by")?
                .unwrap_or_default(),
            at: row
                .try_get::<Option<String>, _>("acknowledged_at")?
                .unwrap_or_default(),
        })
    }

    /// Records the silence made for a group (or clears it with `None`), and queues its card.
    pub async fn set_group_silence(
        &self,
        group_id: i64,
        silence: Option<(&str, &str, &str)>,
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let (id, by, until) = match silence {
            Some((id, by, until)) => (Some(id), Some(by), Some(until)),
            None => (None, None, None),
        };
        let silence = "UPDATE alert_groups SET silence_id = $1, silenced_by = $2, \
                       silenced_until = $3, updated_at = $4 WHERE id = $5";
        let values = (id, by, until, now, group_id);
        let (tx, done) = self.update_group(silence, values, group_id, now).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// The group that carries this silence, if runbot made it for one.
    pub async fn group_of_silence(&self, silence_id: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT id FROM alert_groups WHERE silence_id = $1")
            .bind(silence_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Runs `update` of group `group_id` in a new transaction and, when it changed the row,
    /// queues the group's card in the same transaction. Answers the transaction, still open,
    /// and whether the row changed. Writes first: a deferred SQLite transaction that read
    /// first could not upgrade once the writer thread committed.
    async fn update_group<'q>(
        &self,
        update: &'q str,
        values: impl Values<'q>,
        group_id: i64,
        now: &str,
    ) -> Result<(Transaction<'static, Any>, bool), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(update)
            .bind_all(values)
            .execute(&mut *tx)
            .await?;
        let changed = done.rows_affected() == 1;
        if changed {
            for platform in self.chat_platforms().iter() {
                sqlx::query(&format!("{OUTBOX_INSERT} ($1, $2, 1, $3) {OUTBOX_UPSERT}"))
                    .bind_all((group_id, platform, now))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok((tx, changed))
    }

    pub async fn insert_pending(&self, row: &PendingRow) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO pending_requests ({PENDING_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        let values = (
            &row.id,
            &row.kind,
            &row.invocation_id,
            &row.request,
            &row.requester,
            &row.eligible_roles,
            &row.approvals,
            &row.state,
            &row.created_at,
            &row.expires_at,
            &row.resolved_by,
        );
        self.execute(&sql, values).await?;
        Ok(())
    }

    pub async fn pending(&self, id: &str) -> Result<Option<PendingRow>, sqlx::Error> {
        let sql = format!("SELECT {PENDING_COLUMNS} FROM pending_requests WHERE id = $1");
        self.fetch_optional(&sql, (id,)).await
    }

    /// Moves a still-pending request to `state`. Only one caller wins: a double click, or two
    /// replicas, run a request once. `before` bounds the expiry (RFC 3339): a request past it
    /// can only move to `expired`.
    pub async fn claim_pending(
        &self,
        id: &str,
        state: &str,
        by: &str,
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let expiry = if state == "expired" {
            "expires_at <= $4"
        } else {
            "expires_at > $4"
        };
        let sql = format!(
            "UPDATE pending_requests SET state = $1, resolved_by = $2, resolved_at = $4 \
             WHERE id = $3 AND state = 'pending' AND {expiry}"
        );
        Ok(self.execute(&sql, (state, by, id, now)).await? == 1)
    }

    /// Records an approval that is not yet enough; fails (false) if the request moved on or
    /// someone else recorded one meanwhile (`seen` is the approvals JSON the caller read).
    pub async fn add_approval(
        &self,
        id: &str,
        seen: &str,
        approvals: &str,
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE pending_requests SET approvals = $1 \
                   WHERE id = $2 AND state = 'pending' AND approvals = $3 AND expires_at > $4";
        Ok(self.execute(sql, (approvals, id, seen, now)).await? == 1)
    }

    /// Requests whose time ran out and nobody has marked yet.
    pub async fn overdue_pending(&self, now: &str) -> Result<Vec<PendingRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {PENDING_COLUMNS} FROM pending_requests \
             WHERE state = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT 100"
        );
        self.fetch_all(&sql, (now,)).await
    }
}
