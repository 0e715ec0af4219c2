//! IP blocks (see `migrations/*/0007_ip_blocks.sql`): what nginx's deny file is written from,
//! and the durable schedule of their expiry; and which hosts' nginx applied them
//! (`migrations/*/0009_nginx_hosts.sql`).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::locks::db_now;
use super::Store;

#[derive(Debug, Clone, PartialEq, Eq)]
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

fn block_from_row(r: &AnyRow) -> Result<BlockRow, sqlx::Error> {
    Ok(BlockRow {
        id: r.try_get("id")?,
        network: r.try_get("network")?,
        reason: r.try_get("reason")?,
        actor: r.try_get("actor")?,
        invocation_id: r.try_get("invocation_id")?,
        platform: r.try_get("platform")?,
        channel_id: r.try_get("channel_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        state: r.try_get("state")?,
    })
}

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
        let inserted = sqlx::query(
            "INSERT INTO ip_blocks (network, reason, actor, invocation_id, platform, channel_id, \
             created_at, expires_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active') RETURNING id",
        )
        .bind(b.network)
        .bind(b.reason)
        .bind(b.actor)
        .bind(b.invocation_id)
        .bind(b.platform)
        .bind(b.channel_id)
        .bind(b.now)
        .bind(b.expires_at)
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => Ok(Added::Added(row.try_get("id")?)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                match self.active_block(b.network).await? {
                    Some(holder) => Ok(Added::Already(Box::new(holder))),
                    None => Err(sqlx::Error::Database(e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Takes back a block nginx did not accept.
    pub async fn delete_block(&self, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM ip_blocks WHERE id = $1 AND state = 'active'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn active_block(&self, network: &str) -> Result<Option<BlockRow>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ip_blocks WHERE network = $1 AND state = 'active'"
        ))
        .bind(network)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| block_from_row(&r))
        .transpose()
    }

    /// Every active block, oldest first: the deny file's content.
    pub async fn active_blocks(&self) -> Result<Vec<BlockRow>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ip_blocks WHERE state = 'active' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(block_from_row)
        .collect()
    }

    /// Ends an active block (`removed` or `expired`); false when it was not active any more.
    pub async fn end_block(
        &self,
        id: i64,
        state: &str,
        by: &str,
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE ip_blocks SET state = $1, ended_by = $2, ended_at = $3 \
             WHERE id = $4 AND state = 'active'",
        )
        .bind(state)
        .bind(by)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Makes an ended block active again (nginx refused the file without it). An expiry's
    /// claim stays, so a failing expiry is tried again once the claim is stale, not at once.
    pub async fn reopen_block(&self, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE ip_blocks SET state = 'active', ended_by = NULL, ended_at = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
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
        let due: Vec<BlockRow> = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ip_blocks WHERE state = 'active' AND expires_at IS NOT NULL \
             AND expires_at <= $1 AND (claimed_at IS NULL OR claimed_at < $2) ORDER BY expires_at"
        ))
        .bind(now)
        .bind(stale_before)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(block_from_row)
        .collect::<Result<_, _>>()?;
        let mut claimed = Vec::new();
        for b in due {
            let done = sqlx::query(
                "UPDATE ip_blocks SET claimed_by = $1, claimed_at = $2 WHERE id = $3 \
                 AND state = 'active' AND (claimed_at IS NULL OR claimed_at < $4)",
            )
            .bind(owner)
            .bind(now)
            .bind(b.id)
            .bind(stale_before)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                claimed.push(b);
            }
        }
        Ok(claimed)
    }
}

/// One host's nginx, as its runbot last reported it (`nginx_hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
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

fn host_from_row(r: &AnyRow) -> Result<NginxHost, sqlx::Error> {
    Ok(NginxHost {
        host_id: r.try_get("host_id")?,
        applied: r.try_get("applied")?,
        blocks: r.try_get("blocks")?,
        applied_at: r.try_get("applied_at")?,
        seen_at: r.try_get("seen_at")?,
        error: r.try_get("error")?,
        failed_at: r.try_get("failed_at")?,
    })
}

impl Store {
    pub async fn nginx_host(&self, host_id: &str) -> Result<Option<NginxHost>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {HOST_COLUMNS} FROM nginx_hosts WHERE host_id = $1"
        ))
        .bind(host_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| host_from_row(&r))
        .transpose()
    }

    /// Every host that reported, by name.
    pub async fn nginx_hosts(&self) -> Result<Vec<NginxHost>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {HOST_COLUMNS} FROM nginx_hosts ORDER BY host_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(host_from_row)
        .collect()
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
        sqlx::query(&format!(
            "INSERT INTO nginx_hosts (host_id, applied, blocks, applied_at, seen_at, error, failed_at) \
             VALUES ($1, $2, $3, {now}, {now}, NULL, NULL) \
             ON CONFLICT (host_id) DO UPDATE SET applied = excluded.applied, blocks = excluded.blocks, \
             applied_at = excluded.applied_at, seen_at = excluded.seen_at, error = NULL, failed_at = NULL"
        ))
        .bind(host_id)
        .bind(applied)
        .bind(blocks)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `host_id`'s nginx did not take the newest list: it keeps what it applied before.
    pub async fn nginx_host_failed(&self, host_id: &str, error: &str) -> Result<(), sqlx::Error> {
        let now = db_now(self.backend);
        sqlx::query(&format!(
            "INSERT INTO nginx_hosts (host_id, seen_at, error, failed_at) VALUES ($1, {now}, $2, {now}) \
             ON CONFLICT (host_id) DO UPDATE SET seen_at = excluded.seen_at, error = excluded.error, \
             failed_at = excluded.failed_at"
        ))
        .bind(host_id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `host_id`'s runbot made a pass and found nothing to do; `clear_error` once the list
    /// nginx refused is no longer the one asked for.
    pub async fn nginx_host_seen(
        &self,
        host_id: &str,
        clear_error: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE nginx_hosts SET seen_at = {}{} WHERE host_id = $1",
            db_now(self.backend),
            if clear_error {
                ", error = NULL, failed_at = NULL"
            } else {
                ""
            }
        ))
        .bind(host_id)
        .execute(&self.pool)
        .await?;
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
        Ok(sqlx::query("DELETE FROM nginx_hosts WHERE seen_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
