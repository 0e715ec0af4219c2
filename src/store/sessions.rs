//! Console sessions (`migrations/*/0013_console_sessions.sql`). Only SQL lives here; the rules
//! (expiry, how often `last_seen_at` moves, the cookie) are in `chat::console::sessions`.

use super::Store;

/// A session as the gate reads it, with what its account is now.
#[derive(Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: String,
    pub account: String,
    pub csrf: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub ended_at: Option<String>,
    /// The account's roles (JSON array) and whether it is disabled, read in the same query.
    pub roles: String,
    pub disabled_at: Option<String>,
}

/// Never prints the anti-forgery token.
impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("account", &self.account)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("ended_at", &self.ended_at)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Records a new session (`now` is its creation and first sight).
    pub async fn add_session(
        &self,
        id_hash: &str,
        account: &str,
        csrf: &str,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        self.execute(
            "INSERT INTO console_sessions (id_hash, account, csrf, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $4)",
            (id_hash, account, csrf, now),
        )
        .await?;
        Ok(())
    }

    /// The session with this hash and its account's state; ended ones included.
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRow>, sqlx::Error> {
        self.fetch_optional(
            "SELECT s.id_hash, s.account, s.csrf, s.created_at, s.last_seen_at, s.ended_at, \
             a.roles, a.disabled_at \
             FROM console_sessions s JOIN console_accounts a ON a.name = s.account \
             WHERE s.id_hash = $1",
            (id_hash,),
        )
        .await
    }

    /// Moves a live session's `last_seen_at` to `now`.
    pub async fn touch_session(&self, id_hash: &str, now: &str) -> Result<(), sqlx::Error> {
        self.execute(
            "UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2 AND ended_at IS NULL",
            (now, id_hash),
        )
        .await?;
        Ok(())
    }

    /// Ends a live session; false when there was none.
    pub async fn end_session(&self, id_hash: &str, now: &str) -> Result<bool, sqlx::Error> {
        let n = self
            .execute(
                "UPDATE console_sessions SET ended_at = $1 WHERE id_hash = $2 AND ended_at IS NULL",
                (now, id_hash),
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends every live session of an account; how many there were.
    pub async fn end_account_sessions(&self, account: &str, now: &str) -> Result<u64, sqlx::Error> {
        self.execute(
            "UPDATE console_sessions SET ended_at = $1 WHERE account = $2 AND ended_at IS NULL",
            (now, account),
        )
        .await
    }

    /// Forgets sessions created before `before` (long expired by then); how many.
    pub async fn purge_sessions(&self, before: &str) -> Result<u64, sqlx::Error> {
        self.execute(
            "DELETE FROM console_sessions WHERE created_at < $1",
            (before,),
        )
        .await
    }

    /// How many console accounts exist, disabled ones included.
    pub async fn count_accounts(&self) -> Result<i64, sqlx::Error> {
        let n: Option<(i64,)> = self
            .fetch_optional("SELECT COUNT(*) FROM console_accounts", ())
            .await?;
        Ok(n.map_or(0, |(n,)| n))
    }
}
