//! The audit trail's rows (see `migrations/*/0004_audit.sql`). Only SQL lives here; the hash
//! chain, verification and export are in [`crate::audit`].
//!
//! Appends go through the shared pool, not the alert writer: they are few, and each must be
//! committed before the step it records goes ahead. Committed means on disk: the pool's
//! SQLite setting `synchronous = NORMAL` lets a power cut undo the last commits, so an append
//! runs its connection at `FULL` (PostgreSQL: never `synchronous_commit = off`); see
//! [`Store::append_audit_row`].

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};

use super::sql::Bind;
use super::Store;
use crate::config::Backend;

/// One row as stored, every field as text the way it was hashed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub invocation_id: String,
    pub step: String,
    pub actor_platform: String,
    pub actor_id: String,
    pub actor_name: String,
    pub command: String,
    pub args: String,
    pub origin: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The end of the chain when a row is appended.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditHead {
    pub id: i64,
    pub hash: String,
}

const HEAD: &str = "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1";

/// Which rows to read. Every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Rows written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Rows written before this time.
    pub until: Option<DateTime<Utc>>,
    pub actor_id: Option<String>,
    pub command: Option<String>,
    /// The step (`requested`, `succeeded`, …): what became of the request.
    pub step: Option<String>,
    pub invocation_id: Option<String>,
}

/// Two keys (a key space apart from the single-key locks on alert groups): "runb", "audi".
const PG_LOCK: &str = "SELECT pg_advisory_xact_lock(1920298594, 1635083369)";

/// `SET LOCAL synchronous_commit = on` when it is `off`: only `off` returns before the commit
/// is flushed to disk, and a blanket `on` would lower `remote_apply`.
const PG_SYNC_COMMIT: &str = "SELECT set_config('synchronous_commit', 'on', true) \
                              WHERE current_setting('synchronous_commit') = 'off'";

const COLUMNS: &str = "id, at, invocation_id, step, actor_platform, actor_id, actor_name, \
                       command, args, origin, reason, detail, prev_hash, hash";

impl Store {
    /// Appends one row under a lock that every appender takes, so the chain stays linear with
    /// any number of writers and replicas: `seal` gets the head (None for an empty trail) and
    /// returns the complete row, which is inserted in the same transaction.
    ///
    /// SQLite: `BEGIN IMMEDIATE` takes the write lock before the head is read (a deferred
    /// transaction that reads first could not upgrade once another writer committed).
    /// PostgreSQL: a transaction-scoped advisory lock, then the read.
    ///
    /// The row is on disk when this returns, whatever the shared setting: the pool runs SQLite
    /// with `synchronous = NORMAL`, whose commits a power cut can undo, so this connection is
    /// switched to `FULL` (the WAL is fsynced at commit) for the append only; PostgreSQL's
    /// `synchronous_commit = off`, if the server or database is set so, is raised to `on` for
    /// this transaction (`local` and stronger levels are kept: they flush locally already).
    pub async fn append_audit_row<F>(&self, seal: F) -> Result<AuditRow, sqlx::Error>
    where
        F: FnOnce(Option<AuditHead>) -> AuditRow + Send,
    {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = FullSync::acquire(&self.pool).await?;
                let mut tx = begin_immediate(&mut conn).await?;
                let row = insert_sealed(&mut tx, seal).await?;
                tx.commit().await?;
                conn.restore().await;
                Ok(row)
            }
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query(PG_LOCK).execute(&mut *tx).await?;
                sqlx::query(PG_SYNC_COMMIT).execute(&mut *tx).await?;
                let row = insert_sealed(&mut tx, seal).await?;
                tx.commit().await?;
                Ok(row)
            }
        }
    }

    /// Appends several rows in order under one lock and one flushed commit, as
    /// [`Store::append_audit_row`] does for one: a busy moment (a thousand escalation steps due
    /// at once) costs one fsync, not one per row. All are written or none.
    pub async fn append_audit_rows<F>(&self, seals: Vec<F>) -> Result<Vec<AuditRow>, sqlx::Error>
    where
        F: FnOnce(Option<AuditHead>) -> AuditRow + Send,
    {
        let mut rows = Vec::with_capacity(seals.len());
        match self.backend {
            Backend::Sqlite => {
                let mut conn = FullSync::acquire(&self.pool).await?;
                let mut tx = begin_immediate(&mut conn).await?;
                for seal in seals {
                    rows.push(insert_sealed(&mut tx, seal).await?);
                }
                tx.commit().await?;
                conn.restore().await;
            }
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query(PG_LOCK).execute(&mut *tx).await?;
                sqlx::query(PG_SYNC_COMMIT).execute(&mut *tx).await?;
                for seal in seals {
                    rows.push(insert_sealed(&mut tx, seal).await?);
                }
                tx.commit().await?;
            }
        }
        Ok(rows)
    }

    /// The hash of row `id`, when there is such a row.
    pub async fn audit_hash_of(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Up to `limit` rows with an id above `after`, in id order: one page of a walk.
    pub async fn audit_rows_after(
        &self,
        after: i64,
        limit: i64,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRow>, sqlx::Error> {
        let mut q = Query::new();
        q.and("id > ", Bound::Int(after));
        q.filter(filter);
        q.fetch(self, "ORDER BY id", limit).await
    }

    /// The `limit` most recent rows, newest first.
    pub async fn audit_recent(
        &self,
        limit: i64,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRow>, sqlx::Error> {
        let mut q = Query::new();
        q.filter(filter);
        q.fetch(self, "ORDER BY id DESC", limit).await
    }

    /// Up to `limit` rows below id `before` (all rows when None), newest first: one page of
    /// the console's audit page.
    pub async fn audit_page(
        &self,
        before: Option<i64>,
        limit: i64,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRow>, sqlx::Error> {
        let mut q = Query::new();
        if let Some(before) = before {
            q.and("id < ", Bound::Int(before));
        }
        q.filter(filter);
        q.fetch(self, "ORDER BY id DESC", limit).await
    }

    /// The last `limit` rows (oldest first) of every request that acted on alert group
    /// `group_id`, written at or after `since` (the group's creation: nothing acts on a group
    /// before it exists, and `at` is indexed, so older rows are never read).
    ///
    /// A request's origin names its group as `"group_id":N` in canonical JSON (keys sorted,
    /// no whitespace: see [`crate::audit`]), which a text match finds the same way on both
    /// databases; `_` is escaped, as LIKE reads it as any character. Every row of such a
    /// request counts, including those written before its group was known (`requested`).
    pub async fn audit_of_group(
        &self,
        group_id: i64,
        since: &str,
        limit: i64,
    ) -> Result<Vec<AuditRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM audit_log WHERE at >= $1 AND \
             invocation_id IN (SELECT invocation_id FROM audit_log WHERE at >= $1 AND \
             (origin LIKE $2 ESCAPE '!' OR origin LIKE $3 ESCAPE '!')) \
             ORDER BY id DESC LIMIT $4) AS last ORDER BY id"
        );
        sqlx::query_as(&sql)
            .bind_all((
                since,
                format!("%\"group!_id\":{group_id},%"),
                format!("%\"group!_id\":{group_id}}}%"),
                limit.max(0),
            ))
            .fetch_all(&self.pool)
            .await
    }

    /// The last row's id and hash.
    pub async fn audit_head(&self) -> Result<Option<AuditHead>, sqlx::Error> {
        sqlx::query_as(HEAD).fetch_optional(&self.pool).await
    }

    /// The id of a row whose `column` (`hash` or `prev_hash`) has this value. Only used to
    /// explain a broken chain or find an expected head once, so a scan is fine.
    pub async fn audit_id_where(
        &self,
        column: AuditHashColumn,
        value: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        let col = match column {
            AuditHashColumn::Hash => "hash",
            AuditHashColumn::PrevHash => "prev_hash",
        };
        sqlx::query_scalar(&format!(
            "SELECT id FROM audit_log WHERE {col} = $1 ORDER BY id LIMIT 1"
        ))
        .bind(value)
        .fetch_optional(&self.pool)
        .await
    }
}

/// Reads the head, seals the row and inserts it, inside the caller's locked transaction.
async fn insert_sealed<F>(conn: &mut AnyConnection, seal: F) -> Result<AuditRow, sqlx::Error>
where
    F: FnOnce(Option<AuditHead>) -> AuditRow + Send,
{
    let head = sqlx::query_as(HEAD).fetch_optional(&mut *conn).await?;
    let row = seal(head);
    sqlx::query(&format!(
        "INSERT INTO audit_log ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind_all((
        row.id,
        &row.at,
        &row.invocation_id,
        &row.step,
        &row.actor_platform,
        &row.actor_id,
        &row.actor_name,
        &row.command,
        &row.args,
        &row.origin,
        &row.reason,
        &row.detail,
        &row.prev_hash,
        &row.hash,
    ))
    .execute(&mut *conn)
    .await?;
    Ok(row)
}

/// `BEGIN IMMEDIATE`, tried again while SQLite says the database is locked: besides the busy
/// timeout's wait, SQLite answers "locked" at once in some moments of another process's
/// checkpoint (seen with `runbot token revoke` beside a busy runbot), and an audited change
/// must not fail for that. Nothing is read or written before the lock is held, so trying
/// again is safe.
async fn begin_immediate(conn: &mut FullSync) -> Result<sqlx::Transaction<'_, Any>, sqlx::Error> {
    const TRIES: u32 = 40;
    let mut wait = std::time::Duration::from_millis(25);
    for _ in 1..TRIES {
        match sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn.conn)
            .await
        {
            Ok(_) => {
                sqlx::query("ROLLBACK").execute(&mut *conn.conn).await?;
                break;
            }
            Err(e) if is_locked(&e) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
    conn.begin_with("BEGIN IMMEDIATE").await
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6).
fn is_locked(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("5") | Some("6"))
                || d.message().contains("database is locked")
        }
        _ => false,
    }
}

/// A pooled SQLite connection set to `synchronous = FULL` for one append. `PRAGMA
/// synchronous` cannot change inside a transaction, so it is set before `BEGIN` and put back
/// after `COMMIT`. Dropped before that (an error, a request cancelled midway), the connection
/// is closed instead of going back to the pool, so no other write inherits a slower setting
/// or a half-finished transaction.
struct FullSync {
    conn: PoolConnection<Any>,
    restored: bool,
}

impl FullSync {
    async fn acquire(pool: &AnyPool) -> Result<FullSync, sqlx::Error> {
        let mut sync = FullSync {
            conn: pool.acquire().await?,
            restored: false,
        };
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *sync.conn)
            .await?;
        Ok(sync)
    }

    /// Back to the pool's setting (see [`Store::connect`]). The row is committed either way,
    /// so a failure here only costs the connection.
    async fn restore(mut self) {
        match sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *self.conn)
            .await
        {
            Ok(_) => self.restored = true,
            Err(e) => tracing::warn!(
                error = %e,
                "could not set an audit connection back to synchronous = NORMAL; closing it"
            ),
        }
    }
}

impl std::ops::Deref for FullSync {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for FullSync {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl Drop for FullSync {
    fn drop(&mut self) {
        if !self.restored {
            self.conn.close_on_drop();
        }
    }
}

/// Which hash column [`Store::audit_id_where`] looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditHashColumn {
    Hash,
    PrevHash,
}

/// A WHERE clause with numbered placeholders and the values bound to them.
struct Query {
    conditions: Vec<String>,
    values: Vec<Bound>,
}

enum Bound {
    Int(i64),
    Text(String),
}

impl Query {
    fn new() -> Query {
        Query {
            conditions: Vec::new(),
            values: Vec::new(),
        }
    }

    /// `column_op` is trusted SQL such as `"at >= "`; `value` is bound.
    fn and(&mut self, column_op: &str, value: Bound) {
        self.values.push(value);
        self.conditions
            .push(format!("{column_op}${}", self.values.len()));
    }

    fn filter(&mut self, f: &AuditFilter) {
        if let Some(since) = f.since {
            self.and("at >= ", Bound::Text(crate::domain::format_time(since)));
        }
        if let Some(until) = f.until {
            self.and("at < ", Bound::Text(crate::domain::format_time(until)));
        }
        if let Some(a) = &f.actor_id {
            self.and("actor_id = ", Bound::Text(a.clone()));
        }
        if let Some(c) = &f.command {
            self.and("command = ", Bound::Text(c.clone()));
        }
        if let Some(s) = &f.step {
            self.and("step = ", Bound::Text(s.clone()));
        }
        if let Some(i) = &f.invocation_id {
            self.and("invocation_id = ", Bound::Text(i.clone()));
        }
    }

    fn conditions(&self) -> String {
        if self.conditions.is_empty() {
            "1 = 1".to_string()
        } else {
            self.conditions.join(" AND ")
        }
    }

    /// The rows that meet the conditions, in `order`, at most `limit` of them.
    async fn fetch(
        self,
        store: &Store,
        order: &str,
        limit: i64,
    ) -> Result<Vec<AuditRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE {} {order} LIMIT {}",
            self.conditions(),
            limit.max(0)
        );
        let mut q = sqlx::query_as(&sql);
        for v in self.values {
            q = match v {
                Bound::Int(n) => q.bind(n),
                Bound::Text(t) => q.bind(t),
            };
        }
        q.fetch_all(&store.pool).await
    }
}
