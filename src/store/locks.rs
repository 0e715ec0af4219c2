//! Leases in the database (see `migrations/*/0008_locks.sql`): a named lock that holds across
//! replicas and restarts. Its holder renews it; one whose heartbeat went stale, by the
//! database's clock, is taken over. Runbot's own clock is never compared with a stored time:
//! two hosts whose clocks disagree would not agree on what is stale.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::sql::Bind;
use super::Store;
use crate::config::Backend;

/// Who holds a lock, and for how long by the database's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct LockHolder {
    pub name: String,
    pub owner: String,
    /// In words: "deploy #3 of v2 by Dana", "/restart backend by Bruno".
    pub holder: String,
    pub invocation_id: Option<String>,
    pub taken_at: String,
    /// Since it was taken.
    pub held: Duration,
    /// Since its last heartbeat.
    pub silent: Duration,
}

/// What an attempt to take a lock came to.
#[derive(Debug, Clone, PartialEq)]
pub enum TakeLock {
    Taken,
    Held(LockHolder),
}

/// The database's clock as stored text, the fixed-width RFC 3339 that `format_time` writes.
/// PostgreSQL's `now()` is the statement's start here (each statement is its own transaction),
/// so a row's times taken in one statement are equal.
pub(super) fn db_now(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000000Z')",
        Backend::Postgres => {
            "(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '000Z')"
        }
    }
}

/// Seconds from the stored time in `column` to the database's now.
pub(super) fn db_age(backend: Backend, column: &str) -> String {
    match backend {
        Backend::Sqlite => format!("((julianday('now') - julianday({column})) * 86400.0)"),
        Backend::Postgres => {
            format!("CAST(EXTRACT(EPOCH FROM (now() - CAST({column} AS timestamptz))) AS float8)")
        }
    }
}

fn seconds(s: Option<f64>) -> Duration {
    // A stored time ahead of the database's clock (written before a clock step) is "just now".
    Duration::from_secs_f64(s.unwrap_or(0.0).clamp(0.0, 1.0e9))
}

fn holder_from_row(r: &AnyRow) -> Result<LockHolder, sqlx::Error> {
    Ok(LockHolder {
        name: r.try_get("name")?,
        owner: r.try_get("owner")?,
        holder: r.try_get("holder")?,
        invocation_id: r.try_get("invocation_id")?,
        taken_at: r.try_get("taken_at")?,
        held: seconds(r.try_get("held")?),
        silent: seconds(r.try_get("silent")?),
    })
}

impl Store {
    /// Takes lock `name` for `owner` (unique per acquisition) if it is free, or if its
    /// heartbeat is older than `stale_secs` by the database's clock (its runbot died); in one
    /// statement, so two replicas never both get it. Otherwise says who holds it.
    pub async fn take_lock(
        &self,
        name: &str,
        owner: &str,
        holder: &str,
        invocation_id: Option<&str>,
        stale_secs: u64,
    ) -> Result<TakeLock, sqlx::Error> {
        let now = db_now(self.backend);
        let age = db_age(self.backend, "locks.heartbeat_at");
        let sql = format!(
            "INSERT INTO locks (name, owner, holder, invocation_id, taken_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, {now}, {now}) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, holder = excluded.holder, \
             invocation_id = excluded.invocation_id, taken_at = excluded.taken_at, \
             heartbeat_at = excluded.heartbeat_at \
             WHERE {age} > $5 \
             RETURNING owner"
        );
        // Freed between the two statements: try again (a few times; each is a fresh race).
        for _ in 0..3 {
            let taken = sqlx::query(&sql)
                .bind_all((name, owner, holder, invocation_id, stale_secs as f64))
                .fetch_optional(&self.pool)
                .await?;
            if taken.is_some() {
                return Ok(TakeLock::Taken);
            }
            if let Some(h) = self.lock_holder(name).await? {
                return Ok(TakeLock::Held(h));
            }
        }
        Err(sqlx::Error::Protocol(format!(
            "lock {name} was taken and freed three times while runbot tried to take it"
        )))
    }

    /// Renews the heartbeat. False when `owner` no longer holds the lock (it went stale and
    /// another runbot took it over): the caller has lost it.
    pub async fn renew_lock(&self, name: &str, owner: &str) -> Result<bool, sqlx::Error> {
        let sql = format!(
            "UPDATE locks SET heartbeat_at = {} WHERE name = $1 AND owner = $2",
            db_now(self.backend)
        );
        Ok(self.execute(&sql, (name, owner)).await? == 1)
    }

    /// Frees the lock, only if `owner` still holds it. False when it did not.
    pub async fn release_lock(&self, name: &str, owner: &str) -> Result<bool, sqlx::Error> {
        let sql = "DELETE FROM locks WHERE name = $1 AND owner = $2";
        Ok(self.execute(sql, (name, owner)).await? == 1)
    }

    /// Who holds lock `name` (a stale holder too), with its ages by the database's clock.
    pub async fn lock_holder(&self, name: &str) -> Result<Option<LockHolder>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT name, owner, holder, invocation_id, taken_at, {} AS held, {} AS silent \
             FROM locks WHERE name = $1",
            db_age(self.backend, "taken_at"),
            db_age(self.backend, "heartbeat_at")
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| holder_from_row(&r))
        .transpose()
    }

    /// Now by the database's clock, for showing how long ago a stored time was.
    pub async fn database_now(&self) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
        let now: String = sqlx::query(&format!("SELECT {} AS now", db_now(self.backend)))
            .fetch_one(&self.pool)
            .await?
            .try_get("now")?;
        crate::domain::parse_stored_time(&now)
            .ok_or_else(|| sqlx::Error::Protocol(format!("the database's clock read {now:?}")))
    }
}
