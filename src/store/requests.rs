//! What people's requests change in the store: acknowledgements and silences on a group (both
//! shown on its card), and requests waiting for a confirmation or an approval
//! (see `migrations/*/0005_requests.sql`).

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::ingest::{Columns, OUTBOX_INSERT, OUTBOX_UPSERT};
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

fn pending_from_row(r: &AnyRow) -> Result<PendingRow, sqlx::Error> {
    Ok(PendingRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        invocation_id: r.try_get("invocation_id")?,
        request: r.try_get("request")?,
        requester: r.try_get("requester")?,
        eligible_roles: r.try_get("eligible_roles")?,
        approvals: r.try_get("approvals")?,
        state: r.try_get("state")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        resolved_by: r.try_get("resolved_by")?,
    })
}

impl Store {
    /// Records who acknowledged a firing group, unless someone already did, and queues its
    /// card in the same transaction.
    pub async fn ack_group(
        &self,
        group_id: i64,
        by: &str,
        now: &str,
    ) -> Result<Acked, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Write first: a deferred SQLite transaction that read first could not upgrade once
        // the writer thread committed.
        let done = sqlx::query(
            "UPDATE alert_groups SET acknowledged_by = $1, acknowledged_at = $2, updated_at = $2 \
             WHERE id = $3 AND status <> 'resolved' AND acknowledged_by IS NULL",
        )
        .bind(by)
        .bind(now)
        .bind(group_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            self.queue_card(&mut tx, group_id, now).await?;
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE alert_groups SET silence_id = $1, silenced_by = $2, silenced_until = $3, \
             updated_at = $4 WHERE id = $5",
        )
        .bind(id)
        .bind(by)
        .bind(until)
        .bind(now)
        .bind(group_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            self.queue_card(&mut tx, group_id, now).await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    /// The group that carries this silence, if runbot made it for one.
    pub async fn group_of_silence(&self, silence_id: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query("SELECT id FROM alert_groups WHERE silence_id = $1")
            .bind(silence_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("id"))
            .transpose()
    }

    async fn queue_card(
        &self,
        tx: &mut Transaction<'_, Any>,
        group_id: i64,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        for platform in self.chat_platforms().iter() {
            sqlx::query(&format!("{OUTBOX_INSERT} ($1, $2, 1, $3) {OUTBOX_UPSERT}"))
                .bind(group_id)
                .bind(platform)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn insert_pending(&self, row: &PendingRow) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "INSERT INTO pending_requests ({PENDING_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&row.id)
        .bind(&row.kind)
        .bind(&row.invocation_id)
        .bind(&row.request)
        .bind(&row.requester)
        .bind(&row.eligible_roles)
        .bind(&row.approvals)
        .bind(&row.state)
        .bind(&row.created_at)
        .bind(&row.expires_at)
        .bind(&row.resolved_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn pending(&self, id: &str) -> Result<Option<PendingRow>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {PENDING_COLUMNS} FROM pending_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(pending_from_row)
        .transpose()
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
        let done = sqlx::query(&format!(
            "UPDATE pending_requests SET state = $1, resolved_by = $2, resolved_at = $4 \
             WHERE id = $3 AND state = 'pending' AND {expiry}"
        ))
        .bind(state)
        .bind(by)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
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
        let done = sqlx::query(
            "UPDATE pending_requests SET approvals = $1 \
             WHERE id = $2 AND state = 'pending' AND approvals = $3 AND expires_at > $4",
        )
        .bind(approvals)
        .bind(id)
        .bind(seen)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Requests whose time ran out and nobody has marked yet.
    pub async fn overdue_pending(&self, now: &str) -> Result<Vec<PendingRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {PENDING_COLUMNS} FROM pending_requests \
             WHERE state = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT 100"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }
}
