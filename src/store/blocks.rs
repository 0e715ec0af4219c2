//! IP blocks (see `migrations/*/0007_ip_blocks.sql`): what nginx's deny file is written from,
//! and the durable schedule of their expiry; and which hosts' nginx applied them
//! (`migrations/*/0009_nginx_hosts.sql`).

use super::locks::db_now;
use super::sql::{insert_or_holder, Bind};
use super::Store;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BlockRow {
    pub id: i64,
    pub network: String,
    pub reason: Option<String>,
    pub actor: String,
    pub invocation_id: String,
    pub platform: String,
    pub channel_id: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub state: String,
}

const COLUMNS: &str = "id, network, reason, actor, invocation_id, platform, channel_id, \
    created_at, expires_at, state";

/// A block to add.
#[derive(Debug, Clone)]
pub struct NewBlock<'a> {
    pub network: &'a str,
    pub reason: Option<&'a str>,
    pub actor: &'a str,
    pub invocation_id: &'a str,
    pub platform: &'a str,
    pub channel_id: Option<&'a str>,
    pub now: &'a str,
    pub expires_at: Option<&'a str>,
}

/// Adding a block: added, or the network was already blocked (by that row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    Added(i64),
    Already(Box<BlockRow>),
}

impl Store {
    /// The unique index on active rows refuses a second block of one network, even from two
    /// requests at once; then the existing block is returned.
    pub async fn add_block(&self, b: &NewBlock<'_>) -> Result<Added, sqlx::Error> {
        let insert = sqlx::query(
            "INSERT INTO ip_blocks (network, reason, actor, invocation_id, platform, channel_id, \
             created_at, expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active') RETURNING id",
        )
        .bind_all((
            b.network,
            b.reason,
            b.actor,
            b.invocation_id,
            b.platform,
            b.channel_id,
            b.now,
            b.expires_at,
        ));
        let holder = || self.active_block(b.network);
        Ok(match insert_or_holder(&self.pool, insert, holder).await? {
            Ok(id) => Added::Added(id),
            Err(holder) => Added::Already(Box::new(holder)),
        })
    }

    /// Takes back a block nginx did not accept.
    pub async fn delete_block(&self, id: i64) -> Result<(), sqlx::Error> {
        let sql = "DELETE FROM ip_blocks WHERE id = $1 AND state = 'active'";
        self.execute(sql, (id,)).await?;
        Ok(())
    }

    pub async fn active_block(&self, network: &str) -> Result<Option<BlockRow>, sqlx::Error> {
        let sql =
            format!("SELECT {COLUMNS} FROM ip_blocks WHERE network = $1 AND state = 'active'");
        self.fetch_optional(&sql, (network,)).await
    }

    /// Every active block, oldest first: the deny file's content.
    pub async fn active_blocks(&self) -> Result<Vec<BlockRow>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM ip_blocks WHERE state = 'active' ORDER BY id");
        self.fetch_all(&sql, ()).await
    }

    /// Ends an active block (`removed` or `expired`); false when it was not active any more.
    pub async fn end_block(
        &self,
        id: i64,
        state: &str,
        by: &str,
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE ip_blocks SET state = $1, ended_by = $2, ended_at = $3 \
                   WHERE id = $4 AND state = 'active'";
        Ok(self.execute(sql, (state, by, now, id)).await? == 1)
    }

    /// Makes an ended block active again (nginx refused the file without it). An expiry's
    /// claim stays, so a failing expiry is tried again once the claim is stale, not at once.
    pub async fn reopen_block(&self, id: i64) -> Result<(), sqlx::Error> {
        let sql = "UPDATE ip_blocks SET state = 'active', ended_by = NULL, ended_at = NULL \
                   WHERE id = $1";
        self.execute(sql, (id,)).await?;
        Ok(())
    }

    /// Claims the active blocks due by `now` for `owner`: a conditional UPDATE per row, so of
    /// several runbots only one acts on each. A claim older than `stale_before` (its runbot
    /// stopped) is taken over.
    pub async fn claim_due_blocks(
        &self,
        owner: &str,
        now: &str,
        stale_before: &str,
    ) -> Result<Vec<BlockRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ip_blocks WHERE state = 'active' AND expires_at IS NOT NULL \
             AND expires_at <= $1 AND (claimed_at IS NULL OR claimed_at < $2) ORDER BY expires_at"
        );
        let due: Vec<BlockRow> = self.fetch_all(&sql, (now, stale_before)).await?;
        let mut claimed = Vec::new();
        for b in due {
            let sql = "UPDATE ip_blocks SET claimed_by = $1, claimed_at = $2 WHERE id = $3 \
                       AND state = 'active' AND (claimed_at IS NULL OR claimed_at < $4)";
            if self.execute(sql, (owner, now, b.id, stale_before)).await? == 1 {
                claimed.push(b);
            }
        }
        Ok(claimed)
    }
}

/// One host's nginx, as its runbot last reported it (`nginx_hosts`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NginxHost {
    pub host_id: String,
    /// The hash of the deny file it last applied (the SHA-256 of its text).
    pub applied: Option<String>,
    pub blocks: Option<i64>,
    pub applied_at: Option<String>,
    pub seen_at: String,
    pub error: Option<String>,
    pub failed_at: Option<String>,
}

const HOST_COLUMNS: &str = "host_id, applied, blocks, applied_at, seen_at, error, failed_at";

impl Store {
    pub async fn nginx_host(&self, host_id: &str) -> Result<Option<NginxHost>, sqlx::Error> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM nginx_hosts WHERE host_id = $1");
        self.fetch_optional(&sql, (host_id,)).await
    }

    /// Every host that reported, by name.
    pub async fn nginx_hosts(&self) -> Result<Vec<NginxHost>, sqlx::Error> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM nginx_hosts ORDER BY host_id");
        self.fetch_all(&sql, ()).await
    }

    /// `host_id`'s nginx took the deny file hashed `applied`, with `blocks` lines; any earlier
    /// refusal is over.
    pub async fn nginx_host_applied(
        &self,
        host_id: &str,
        applied: &str,
        blocks: i64,
    ) -> Result<(), sqlx::Error> {
        let now = db_now(self.backend);
        let sql = format!(
            "INSERT INTO nginx_hosts (host_id, applied, blocks, applied_at, seen_at, error, failed_at) \
             VALUES ($1, $2, $3, {now}, {now}, NULL, NULL) \
             ON CONFLICT (host_id) DO UPDATE SET applied = excluded.applied, blocks = excluded.blocks, \
             applied_at = excluded.applied_at, seen_at = excluded.seen_at, error = NULL, failed_at = NULL"
        );
        self.execute(&sql, (host_id, applied, blocks)).await?;
        Ok(())
    }

    /// `host_id`'s nginx did not take the newest list: it keeps what it applied before.
    pub async fn nginx_host_failed(&self, host_id: &str, error: &str) -> Result<(), sqlx::Error> {
        let now = db_now(self.backend);
        let sql = format!(
            "INSERT INTO nginx_hosts (host_id, seen_at, error, failed_at) VALUES ($1, {now}, $2, {now}) \
             ON CONFLICT (host_id) DO UPDATE SET seen_at = excluded.seen_at, error = excluded.error, \
             failed_at = excluded.failed_at"
        );
        self.execute(&sql, (host_id, error)).await?;
        Ok(())
    }

    /// `host_id`'s runbot made a pass and found nothing to do; `clear_error` once the list
    /// nginx refused is no longer the one asked for.
    pub async fn nginx_host_seen(
        &self,
        host_id: &str,
        clear_error: bool,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "UPDATE nginx_hosts SET seen_at = {}{} WHERE host_id = $1",
            db_now(self.backend),
            if clear_error {
                ", error = NULL, failed_at = NULL"
            } else {
                ""
            }
        );
        self.execute(&sql, (host_id,)).await?;
        Ok(())
    }

    /// Forgets hosts silent for `silent_for` by the database's clock: replicas replaced long
    /// ago.
    pub async fn forget_nginx_hosts(
        &self,
        silent_for: std::time::Duration,
    ) -> Result<u64, sqlx::Error> {
        let now = self.database_now().await?;
        let before = chrono::Duration::from_std(silent_for)
            .map(|d| crate::domain::format_time(now - d))
            .map_err(|e| sqlx::Error::Decode(e.into()))?;
        self.execute("DELETE FROM nginx_hosts WHERE seen_at < $1", (before,))
            .await
    }
}
