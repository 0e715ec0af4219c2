//! What only the console's pages read: a group's cards and pending card changes, and the
//! deploy history of every project, a page at a time.

use sqlx::Row;

use super::deploys::{DeployRow, DEPLOY_COLUMNS};
use super::sql::Bind;
use super::Store;

/// The card a group has on one platform, as the outbox last left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardState {
    pub platform: String,
    pub channel_id: String,
    /// None while the first post has not been answered.
    pub message_id: Option<String>,
    /// The group's status the card last showed.
    pub shown_status: Option<String>,
    /// When the card was planned, posted or last edited.
    pub updated_at: String,
}

/// A change of the group's card still waiting to reach a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCard {
    pub platform: String,
    pub due_at: String,
    pub attempts: i64,
    /// A 4xx no retry can change: the card stays as it was until the group changes again.
    pub dead: bool,
}

impl Store {
    /// The group's cards (one per platform) and the card changes not delivered yet.
    pub async fn group_cards(
        &self,
        group_id: i64,
    ) -> Result<(Vec<CardState>, Vec<PendingCard>), sqlx::Error> {
        let cards = sqlx::query(
            "SELECT platform, channel_id, message_id, shown_status, updated_at FROM chat_cards \
             WHERE group_id = $1 ORDER BY platform",
        )
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(CardState {
                platform: r.try_get("platform")?,
                channel_id: r.try_get("channel_id")?,
                message_id: r.try_get("message_id")?,
                shown_status: r.try_get("shown_status")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let pending = sqlx::query(
            "SELECT platform, due_at, attempts, dead FROM chat_outbox WHERE group_id = $1 \
             ORDER BY platform",
        )
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(PendingCard {
                platform: r.try_get("platform")?,
                due_at: r.try_get("due_at")?,
                attempts: r.try_get("attempts")?,
                dead: r.try_get::<i64, _>("dead")? != 0,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((cards, pending))
    }

    /// Up to `limit` deploys and rollbacks of every project with an id below `before` (all
    /// when None), newest first.
    pub async fn deploys_page(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeployRow>, sqlx::Error> {
        let sql =
            format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE id < $1 ORDER BY id DESC LIMIT $2");
        sqlx::query_as(&sql)
            .bind_all((before.unwrap_or(i64::MAX), limit.max(0)))
            .fetch_all(&self.pool)
            .await
    }
}
