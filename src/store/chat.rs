//! The chat outbox and the cards it has posted (see `migrations/*/0003_chat_outbox.sql`).
//!
//! The delivery worker writes through the shared pool: PostgreSQL's write pool belongs to the
//! writer thread.

use sqlx::Row;

use super::ingest::Columns;
use super::sql::Bind;
use super::Store;
use crate::domain::GroupStatus;

/// A group whose card is out of date on one platform.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Notice {
    pub group_id: i64,
    pub version: i64,
    pub attempts: i64,
}

/// The card a group has on one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    pub channel_id: String,
    pub nonce: String,
    /// None while the first post has not been answered.
    pub message_id: Option<String>,
    pub shown_status: Option<GroupStatus>,
    pub resolved_at: Option<String>,
}

impl Store {
    /// Notices due at `now` (RFC 3339), oldest first.
    pub async fn due_notices(
        &self,
        platform: &str,
        now: &str,
        limit: i64,
    ) -> Result<Vec<Notice>, sqlx::Error> {
        let sql = "SELECT group_id, version, attempts FROM chat_outbox \
             WHERE dead = 0 AND platform = $1 AND due_at <= $2 ORDER BY due_at, group_id LIMIT $3";
        self.fetch_all(sql, (platform, now, limit)).await
    }

    /// When the next notice falls due (RFC 3339), if any is waiting.
    pub async fn next_notice_due(&self, platform: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query("SELECT MIN(due_at) AS due FROM chat_outbox WHERE dead = 0 AND platform = $1")
            .bind(platform)
            .fetch_one(&self.pool)
            .await?
            .try_get("due")
    }

    /// Notices waiting (not given up on): the delivery backlog.
    pub async fn notice_backlog(&self, platform: &str) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) AS n FROM chat_outbox WHERE dead = 0 AND platform = $1")
            .bind(platform)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")
    }

    /// The notice was delivered: remove it, unless a newer change came in meanwhile.
    pub async fn notice_done(
        &self,
        group_id: i64,
        platform: &str,
        version: i64,
    ) -> Result<(), sqlx::Error> {
        self.execute(
            "DELETE FROM chat_outbox WHERE group_id = $1 AND platform = $2 AND version = $3",
            (group_id, platform, version),
        )
        .await?;
        Ok(())
    }

    /// Try again at `due_at`; `attempts` counts failures for the backoff.
    pub async fn notice_retry(
        &self,
        group_id: i64,
        platform: &str,
        due_at: &str,
        attempts: i64,
        error: &str,
    ) -> Result<(), sqlx::Error> {
        self.execute(
            "UPDATE chat_outbox SET due_at = $1, attempts = $2, last_error = $3 \
             WHERE group_id = $4 AND platform = $5",
            (due_at, attempts, error, group_id, platform),
        )
        .await?;
        Ok(())
    }

    /// No retry will help: keep the notice with its error, out of the queue until the group
    /// changes again.
    pub async fn notice_dead(
        &self,
        group_id: i64,
        platform: &str,
        version: i64,
        error: &str,
    ) -> Result<(), sqlx::Error> {
        self.execute(
            "UPDATE chat_outbox SET dead = 1, last_error = $1 \
             WHERE group_id = $2 AND platform = $3 AND version = $4",
            (error, group_id, platform, version),
        )
        .await?;
        Ok(())
    }

    /// The platform answers again: notices waiting out a backoff are due now.
    pub async fn release_backoff(&self, platform: &str, now: &str) -> Result<u64, sqlx::Error> {
        let sql = "UPDATE chat_outbox SET due_at = $1 WHERE dead = 0 AND platform = $2 \
                   AND attempts > 0 AND due_at > $1";
        self.execute(sql, (now, platform)).await
    }

    pub async fn chat_card(
        &self,
        group_id: i64,
        platform: &str,
    ) -> Result<Option<CardRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT channel_id, nonce, message_id, shown_status, resolved_at FROM chat_cards \
             WHERE group_id = $1 AND platform = $2",
        )
        .bind_all((group_id, platform))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(CardRecord {
                channel_id: r.try_get("channel_id")?,
                nonce: r.try_get("nonce")?,
                message_id: r.try_get("message_id")?,
                shown_status: r.opt_parsed("shown_status", GroupStatus::parse)?,
                resolved_at: r.try_get("resolved_at")?,
            })
        })
        .transpose()
    }

    /// Records, before posting, that the group's (new) card goes to `channel_id` with `nonce`.
    pub async fn card_planned(
        &self,
        group_id: i64,
        platform: &str,
        channel_id: &str,
        nonce: &str,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        self.execute(
            "INSERT INTO chat_cards (group_id, platform, channel_id, nonce, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (group_id, platform) DO UPDATE SET channel_id = excluded.channel_id, \
             nonce = excluded.nonce, message_id = NULL, shown_status = NULL, resolved_at = NULL, \
             updated_at = excluded.updated_at",
            (group_id, platform, channel_id, nonce, now),
        )
        .await?;
        Ok(())
    }

    /// Records what the card shows now, and its message once posted.
    pub async fn card_shown(
        &self,
        group_id: i64,
        platform: &str,
        message_id: &str,
        status: GroupStatus,
        resolved_at: Option<&str>,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        self.execute(
            "UPDATE chat_cards SET message_id = $1, shown_status = $2, resolved_at = $3, \
             updated_at = $4 WHERE group_id = $5 AND platform = $6",
            (
                message_id,
                status.as_str(),
                resolved_at,
                now,
                group_id,
                platform,
            ),
        )
        .await?;
        Ok(())
    }
}
