//! Storage with sqlx: SQLite by default, PostgreSQL at scale, one SQL text for both.
//!
//! Queries use `$N` placeholders, which both SQLite and PostgreSQL accept, through sqlx's `Any`
//! driver; times are stored as fixed-width RFC 3339 text and label sets as JSON text, so no
//! type differs between the two. Writes of alerts go through [`writer`], which batches them.

mod accounts;
pub mod audit;
mod blocks;
mod chat;
mod console;
mod deploys;
mod escalation;
mod ingest;
mod locks;
mod pages;
mod read;
mod requests;
mod seen;
mod sessions;
mod sql;
mod sqlite_writer;
pub mod writer;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Executor, Row};

pub use accounts::{AccountRow, ApiTokenRow};
pub use blocks::{Added, BlockRow, NewBlock, NginxHost};
pub use chat::{CardRecord, Notice};
pub use console::{ConsoleEventRow, NewConsoleEvent};
pub use deploys::{Announcement, DeployRow, Lock, NewDeploy};
pub use escalation::{
    ActionCheck, BacklogGroup, EpisodeStats, EpisodeToStart, EscalationRow, NewPage, Outranked,
    OverrideRow, PageRow, ReportEpisode, StepFired, PAGING_CHANNEL,
};
pub use ingest::Receipt;
pub use locks::{LockHolder, TakeLock};
pub use pages::{CardState, PendingCard};
pub use read::{AlertView, EventView, GroupCursor, GroupFilter, GroupTargets, GroupView};
pub use requests::{Acked, PendingRow};
pub use sessions::SessionRow;

use crate::config::{Backend, DatabaseSettings};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads: the console, the API, metrics.
    pool: AnyPool,
    /// PostgreSQL writes: one connection, used only by the writer thread.
    write_pool: AnyPool,
    /// SQLite: the file the writer thread opens itself.
    sqlite_path: Option<std::path::PathBuf>,
    /// What the SQLite writer and the checkpointer tell each other.
    wal: Arc<WalShared>,
    /// Chat platforms (`discord`, …) whose cards each change of a group queues in the outbox.
    chat_platforms: Arc<[String]>,
    /// Platforms that take notes on a group in its card's thread.
    thread_platforms: Arc<[String]>,
    backend: Backend,
}

/// What SQLite's writer thread and the checkpointer share.
#[derive(Debug, Default)]
pub(crate) struct WalShared {
    /// Webhooks committed so far; tells the checkpointer how busy the writer is.
    pub written: AtomicU64,
    /// Set by the checkpointer once only the log's tail is left to copy: the writer copies it
    /// between two batches, after which its next commit starts the log over. Nobody waits for
    /// a lock, which a RESTART checkpoint would make the writer do.
    pub finish_wanted: AtomicBool,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = settings
            .backend()
            .context("database.url must start with sqlite:// or postgres://")?;
        let mut url = settings.url.expose_secret().to_string();
        let mut options = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms));
        if backend == Backend::Sqlite {
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
            options = options
                // One local file: a failed query says the same as a ping would, cheaper.
                .test_before_acquire(false)
                // A second process on the same file (`runbot token revoke` beside a running
                // runbot) waits its turn: an audited write fsyncs, and on a loaded machine the
                // other side's writes may hold the lock for seconds.
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 15000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                });
        }
        let pool =
            options.clone().connect(&url).await.with_context(|| {
                format!("connecting to the {backend:?} database in database.url")
            })?;
        let (write_pool, sqlite_path) = match backend {
            Backend::Postgres => (options.max_connections(1).connect_lazy(&url)?, None),
            Backend::Sqlite => {
                let path = SqliteConnectOptions::from_str(&url)?
                    .get_filename()
                    .to_path_buf();
                (pool.clone(), Some(path))
            }
        };
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        if backend == Backend::Sqlite {
            upgrade_first_release(&pool)
                .await
                .context("upgrading a database made by runbot's first release")?;
        }
        migrator
            .run(&pool)
            .await
            .context("applying database migrations")?;
        let wal = Arc::new(WalShared::default());
        if sqlite_path.is_some() {
            tokio::spawn(checkpoint_wal(pool.clone(), wal.clone()));
        }
        Ok(Store {
            pool,
            write_pool,
            sqlite_path,
            wal,
            chat_platforms: Arc::from([]),
            thread_platforms: Arc::from([]),
            backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Queues a card for these chat platforms with every change of a group. Set before the
    /// writer starts.
    pub fn with_chat_platforms(mut self, platforms: Vec<String>) -> Store {
        self.chat_platforms = platforms.into();
        self
    }

    /// The platforms [`Store::note_group`] writes notes for. Set at start.
    pub fn with_thread_platforms(mut self, platforms: Vec<String>) -> Store {
        self.thread_platforms = platforms.into();
        self
    }

    pub(crate) fn chat_platforms(&self) -> Arc<[String]> {
        self.chat_platforms.clone()
    }

    /// What the SQLite writer shares with the checkpointer.
    pub(crate) fn wal_shared(&self) -> Arc<WalShared> {
        self.wal.clone()
    }

    /// The SQLite file, which the writer thread opens itself; None for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite_path.as_deref()
    }

    /// Can we write? Takes the same write lock an ingest would (PostgreSQL; SQLite's writer
    /// probes its own connection).
    pub async fn probe_write(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.write_pool.begin().await?;
        sqlx::query("UPDATE runbot_meta SET value = value WHERE key = 'probe'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Firing alerts by severity, for the `runbot_alerts_firing` gauge.
    pub async fn firing_by_severity(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows: Vec<AnyRow> = sqlx::query(
            "SELECT severity, COUNT(*) AS n FROM alerts WHERE status = 'firing' GROUP BY severity",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("severity")?, r.try_get("n")?)))
            .collect()
    }

    pub async fn close(&self) {
        self.write_pool.close().await;
        self.pool.close().await;
    }
}

/// The checksum (SHA-384) of the first release's `migrations/sqlite/0001_alerts.sql`. The file
/// was edited after that release (`alerts` became a rowid table with an `id`), so sqlx refuses a
/// database it made as "previously applied but modified".
const SQLITE_FIRST_RELEASE_0001: &str =
    "e806308c27b4274865c19075285e1c0cb82fecbdb4a68c5685dc4335fef595dfd808349a14839c029ee4d049aa69880b";

/// Brings a SQLite database made by the first release to today's migration 1, once: the
/// `alerts` table is rebuilt in today's shape with every row, and migration 1 is recorded with
/// today's checksum, in one transaction. Any other database is left as it is.
async fn upgrade_first_release(pool: &AnyPool) -> anyhow::Result<()> {
    let recorded: Option<Vec<u8>> =
        match sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
            .fetch_optional(pool)
            .await
        {
            Ok(c) => c,
            // A new database has no migrations table yet.
            Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => None,
            Err(e) => return Err(e.into()),
        };
    let Some(recorded) = recorded else {
        return Ok(());
    };
    if crate::domain::text::hex(&recorded) != SQLITE_FIRST_RELEASE_0001 {
        return Ok(());
    }
    let today = SQLITE_MIGRATIONS
        .iter()
        .find(|m| m.version == 1)
        .expect("migration 1 is built in");
    tracing::warn!("this database was made by runbot's first release: rebuilding its alerts table in today's shape");
    let mut tx = pool.begin().await?;
    for sql in [
        "CREATE TABLE alerts_today (
            id            INTEGER PRIMARY KEY,
            group_id      INTEGER NOT NULL REFERENCES alert_groups (id),
            fingerprint   TEXT    NOT NULL,
            status        TEXT    NOT NULL,
            severity      TEXT    NOT NULL,
            labels        TEXT    NOT NULL,
            annotations   TEXT    NOT NULL,
            starts_at     TEXT    NOT NULL,
            ends_at       TEXT,
            generator_url TEXT    NOT NULL,
            first_seen_at TEXT    NOT NULL,
            updated_at    TEXT    NOT NULL,
            UNIQUE (group_id, fingerprint)
        )",
        "INSERT INTO alerts_today (group_id, fingerprint, status, severity, labels, annotations,
            starts_at, ends_at, generator_url, first_seen_at, updated_at)
         SELECT group_id, fingerprint, status, severity, labels, annotations,
            starts_at, ends_at, generator_url, first_seen_at, updated_at
         FROM alerts ORDER BY group_id, fingerprint",
        "DROP TABLE alerts",
        "ALTER TABLE alerts_today RENAME TO alerts",
        "CREATE INDEX alerts_firing ON alerts (status, severity)",
    ] {
        tx.execute(sql).await?;
    }
    sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1")
        .bind(today.checksum.to_vec())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Copies SQLite's write-ahead log into the database file from a reader connection, so the
/// writer never runs a long checkpoint in the middle of answering webhooks.
///
/// A checkpoint ends with an fsync, and on ext4 that briefly holds up every write to the
/// filesystem, the writer's included; the pause grows with what the checkpoint copies. So a
/// checkpoint runs every 20 ms at ordinary rates, and in a storm once 5,000 webhooks have
/// been written since the last one: fewer fsyncs while it lasts, and never a big copy left for
/// the first quiet moment after it.
///
/// A passive checkpoint never catches the tail of a log that is still being written, and the
/// log only starts over once one has. So when the log holds more than 64 MiB, passive passes
/// run until one is quick, and the writer is asked to copy the little written since (see
/// [`WalShared::finish_wanted`]). A RESTART checkpoint would do the same but wait for the write
/// lock, meanwhile letting the writer add far more for it to copy while the writer waits.
async fn checkpoint_wal(pool: AnyPool, wal: Arc<WalShared>) {
    const TICK: Duration = Duration::from_millis(20);
    // About 4,000 webhooks/s: above this, checkpoint by amount written rather than by time.
    const STORM_WEBHOOKS_PER_TICK: u64 = 80;
    const STORM_WEBHOOKS_PER_CHECKPOINT: u64 = 5_000;
    const FINISH_ABOVE_BYTES: i64 = 64 * 1024 * 1024;
    // A passive pass this short leaves the writer a short copy; at most this many passes try.
    const QUICK_PASS: Duration = Duration::from_millis(5);
    const MAX_PASSES: usize = 4;
    let page_size: i64 = match sqlx::query("PRAGMA page_size").fetch_one(&pool).await {
        Ok(row) => row.try_get(0).unwrap_or(4096),
        Err(_) => 4096,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = wal.written.load(Ordering::Relaxed);
    let mut checkpointed = seen;
    while !pool.is_closed() {
        tick.tick().await;
        let now = wal.written.load(Ordering::Relaxed);
        let storm = now - seen > STORM_WEBHOOKS_PER_TICK;
        seen = now;
        let since = now - checkpointed;
        if since == 0
            || (storm && since < STORM_WEBHOOKS_PER_CHECKPOINT)
            || wal.finish_wanted.load(Ordering::Acquire)
        {
            continue;
        }
        let mut result = Ok(());
        for pass in 1..=MAX_PASSES {
            let started = std::time::Instant::now();
            match passive_checkpoint(&pool).await {
                Ok(frames) => {
                    let took = started.elapsed();
                    tracing::debug!(pass, frames, ?took, "passive WAL checkpoint");
                    if frames * page_size <= FINISH_ABOVE_BYTES {
                        break;
                    }
                    if took <= QUICK_PASS || pass == MAX_PASSES {
                        wal.finish_wanted.store(true, Ordering::Release);
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        match result {
            Ok(()) => checkpointed = now,
            Err(e) if !pool.is_closed() => {
                tracing::warn!(error = %e, "WAL checkpoint failed; will retry")
            }
            Err(_) => {}
        }
    }
}

/// Runs a passive checkpoint; answers how many frames the log held.
async fn passive_checkpoint(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get::<i64, _>(1))
}

/// `($s,$s+1,…),(…)`: a VALUES list of `rows` rows of `cols` placeholders, numbered from `start`.
/// SQLite gets plain `?`: sqlx looks up each named parameter by scanning the statement's list
/// of names, which makes binding a 400-row insert quadratic.
fn values_list(backend: Backend, rows: usize, cols: usize, start: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    let mut n = start;
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&n.to_string());
                }
            }
            n += 1;
        }
        s.push(')');
    }
    s
}

/// `$s,$s+1,…` (`?,?,…` for SQLite): `count` placeholders for an IN list.
fn placeholders(backend: Backend, count: usize, start: usize) -> String {
    values_list(backend, 1, count, start)
        .trim_matches(|c| c == '(' || c == ')')
        .to_string()
}

/// A stored value runbot does not know (a status or severity written by something else).
#[derive(Debug, thiserror::Error)]
#[error("{column} holds {value:?}, which runbot does not know")]
pub struct UnknownValue {
    pub column: String,
    pub value: String,
}

fn unknown_value(column: &str, value: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(UnknownValue {
            column: column.to_string(),
            value,
        }),
    }
}

/// Errors that mean the database cannot be reached at all, as opposed to one bad statement.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLite: locked, busy, disk full, read-only. PostgreSQL: class 08 (connection), 57 (shutdown), 53 (resources).
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            matches!(&*code, "5" | "6" | "13" | "8" | "261" | "517")
                || code.starts_with("08")
                || code.starts_with("57")
                || code.starts_with("53")
                || db.message().contains("database is locked")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_lists_number_placeholders_in_order() {
        use crate::config::Backend::{Postgres, Sqlite};
        assert_eq!(
            super::values_list(Postgres, 2, 3, 1),
            "($1,$2,$3),($4,$5,$6)"
        );
        assert_eq!(super::placeholders(Postgres, 3, 4), "$4,$5,$6");
        assert_eq!(super::values_list(Sqlite, 2, 2, 1), "(?,?),(?,?)");
        assert_eq!(super::placeholders(Sqlite, 3, 4), "?,?,?");
    }
}
