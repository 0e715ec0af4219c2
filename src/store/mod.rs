//! Storage with sqlx: SQLite by default, PostgreSQL at scale, one SQL text for both.
//!
//! Queries use `$N` placeholders, which both SQLite and PostgreSQL accept, through sqlx's `Any`
//! driver; times are stored as fixed-width RFC 3339 text and label sets as JSON text, so no
//! type differs between the two. Writes of alerts go through [`writer`], which batches them.

mod ingest;
mod read;
pub mod writer;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub use ingest::Receipt;
pub use read::{AlertView, EventView, GroupFilter, GroupView};

use crate::config::{Backend, DatabaseSettings};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads: the console, the API, metrics.
    pool: AnyPool,
    /// Writes: one connection, used only by the writer task, so SQLite's page cache stays warm
    /// and writes never wait on each other.
    write_pool: AnyPool,
    backend: Backend,
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
            if !url.contains('?') && !url.contains(":memory:") {
                url.push_str("?mode=rwc");
            }
            if url.contains(":memory:") {
                // Every connection to :memory: is a different database: keep exactly one, forever.
                options = options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            }
            options = options
                // One local file: a failed query says the same as a ping would, cheaper.
                .test_before_acquire(false)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                });
        }
        let memory = url.contains(":memory:");
        let write_options = options.clone().max_connections(1);
        let write_options = if backend == Backend::Sqlite {
            // The writer touches the indexes all over; a bigger cache saves re-reading pages.
            write_options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
                         PRAGMA cache_size = -16384;",
                    )
                    .await?;
                    Ok(())
                })
            })
        } else {
            write_options
        };
        let write_pool = write_options
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the {backend:?} database in database.url"))?;
        // A second pool on :memory: would be a second, empty database.
        let pool = if memory {
            write_pool.clone()
        } else {
            options.connect_lazy(&url)?
        };
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&write_pool)
            .await
            .context("applying database migrations")?;
        Ok(Store {
            pool,
            write_pool,
            backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Can we read?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Can we write? Takes the same write lock an ingest would.
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
