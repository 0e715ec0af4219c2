//! The console's live feed and the files that go with its answers
//! (`migrations/*/0014_console_events.sql`). SQL only: what an event holds is
//! `chat::console::events`'s business.

use sqlx::Row;

use super::sql::Bind;
use super::Store;
use crate::config::Backend;

/// One entry of the console's feed, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsoleEventRow {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub group_id: Option<i64>,
    pub audience: Option<String>,
    #[sqlx(rename = "ref")]
    pub reference: Option<String>,
    pub prompt: Option<String>,
    pub data: String,
}

/// An entry not yet stored.
#[derive(Debug, Clone)]
pub struct NewConsoleEvent<'a> {
    pub at: &'a str,
    pub kind: &'a str,
    pub group_id: Option<i64>,
    pub audience: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub data: &'a str,
}

const EVENT_COLUMNS: &str = "id, at, kind, group_id, audience, ref, prompt, data";

/// Serializes the feed's writers on PostgreSQL, so ids become visible in order (a sequence
/// hands them out at insert, not at commit). Any fixed number unique to this table will do.
const FEED_LOCK: i64 = 0x7275_6e62_6f74_4531;

impl Store {
    /// Appends to the feed; answers the entry's id.
    pub async fn add_console_event(&self, e: &NewConsoleEvent<'_>) -> Result<i64, sqlx::Error> {
        let sql = "INSERT INTO console_events (at, kind, group_id, audience, ref, prompt, data) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
        let values = (
            e.at,
            e.kind,
            e.group_id,
            e.audience,
            e.reference,
            e.prompt,
            e.data,
        );
        let row = match self.backend {
            Backend::Sqlite => {
                sqlx::query(sql)
                    .bind_all(values)
                    .fetch_one(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(FEED_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(sql)
                    .bind_all(values)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                row
            }
        };
        row.try_get("id")
    }

    /// Entries after `after`, oldest first, at most `limit`.
    pub async fn console_events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ConsoleEventRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM console_events WHERE id > $1 ORDER BY id LIMIT $2"
        );
        self.fetch_all(&sql, (after, limit)).await
    }

    /// The newest entry's id (0 when there is none).
    pub async fn console_head(&self) -> Result<i64, sqlx::Error> {
        Ok(self.console_bounds().await?.1)
    }

    /// The oldest entry's id still kept and the newest one's, read together (0 when there is
    /// none): everything below the oldest is gone, as the prune leaves no hole.
    pub async fn console_bounds(&self) -> Result<(i64, i64), sqlx::Error> {
        let row = sqlx::query(
            "SELECT COALESCE(MIN(id), 0) AS tail, COALESCE(MAX(id), 0) AS head \
             FROM console_events",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("tail")?, row.try_get("head")?))
    }

    /// The newest entry about request `reference` (its latest answer).
    pub async fn console_latest(
        &self,
        reference: &str,
    ) -> Result<Option<ConsoleEventRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM console_events WHERE ref = $1 ORDER BY id DESC LIMIT 1"
        );
        self.fetch_optional(&sql, (reference,)).await
    }

    /// The request whose answer carries the buttons of prompt `pending`.
    pub async fn console_prompt_ref(&self, pending: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT ref FROM console_events WHERE prompt = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(pending)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("ref"))
            .transpose()
            .map(Option::flatten)
    }

    pub async fn add_console_file(
        &self,
        id: &str,
        audience: &str,
        filename: &str,
        content: &[u8],
        now: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO console_files (id, audience, filename, content, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind_all((id, audience, filename, content.to_vec(), now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A file, when it is `audience`'s: (file name, content).
    pub async fn console_file(
        &self,
        id: &str,
        audience: &str,
    ) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT filename, content FROM console_files WHERE id = $1 AND audience = $2",
        )
        .bind_all((id, audience))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("filename")?, r.try_get("content")?)))
            .transpose()
    }

    /// Forgets the feed up to its last entry older than `events_before`, and files older than
    /// `files_before`; answers how many rows went. By id, never leaving a hole: every entry
    /// below the oldest kept is gone, so a page resuming from before it is told to reload.
    pub async fn prune_console(
        &self,
        events_before: &str,
        files_before: &str,
    ) -> Result<u64, sqlx::Error> {
        let events = self
            .execute(
                "DELETE FROM console_events WHERE id <= \
                 (SELECT COALESCE(MAX(id), 0) FROM console_events WHERE at < $1)",
                (events_before,),
            )
            .await?;
        let files = self
            .execute(
                "DELETE FROM console_files WHERE created_at < $1",
                (files_before,),
            )
            .await?;
        Ok(events + files)
    }
}
