//! Deploy history and the deploy lock (see `migrations/*/0006_deploys.sql`), and announcements:
//! chat messages that are not cards.
//!
//! A deploy's times (started, heartbeat, finished) come from the database's clock, and whether
//! its heartbeat is stale is decided in SQL against that clock: replicas on hosts whose clocks
//! disagree never take a live deploy for dead (see [`super::locks`]).

use super::locks::{db_age, db_now};
use super::sql::{insert_or_holder, Bind};
use super::Store;

/// One deploy or rollback as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeployRow {
    pub id: i64,
    pub project: String,
    pub kind: String,
    pub tag: String,
    pub from_tag: Option<String>,
    pub actor: String,
    pub invocation_id: String,
    pub platform: String,
    pub channel_id: Option<String>,
    pub state: String,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    /// JSON array of steps.
    pub steps: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub heartbeat_at: String,
    pub owner: String,
}

pub(super) const DEPLOY_COLUMNS: &str =
    "id, project, kind, tag, from_tag, actor, invocation_id, platform, \
    channel_id, state, failed_step, error, steps, started_at, finished_at, heartbeat_at, owner";

/// What a new deploy needs to take the lock.
#[derive(Debug, Clone)]
pub struct NewDeploy<'a> {
    pub project: &'a str,
    pub kind: &'a str,
    pub tag: &'a str,
    pub from_tag: Option<&'a str>,
    pub actor: &'a str,
    pub invocation_id: &'a str,
    pub platform: &'a str,
    pub channel_id: Option<&'a str>,
    pub owner: &'a str,
}

/// The lock: taken, or held by another deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    Taken(i64),
    HeldBy(Box<DeployRow>),
}

/// A message for a channel, waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Announcement {
    pub id: i64,
    pub channel_id: Option<String>,
    pub text: String,
    /// A prompt's buttons, as JSON (`[{"id", "label", "style"}]`); None for plain text.
    pub buttons: Option<String>,
    /// A note on this alert group: it goes into the thread of the group's card.
    pub group_id: Option<i64>,
    pub created_at: String,
    /// Set before each post: a post may have been made if this is set and it is not sent.
    pub tried_at: Option<String>,
}

impl Store {
    /// Takes the project's deploy lock by inserting a running deploy; the unique index refuses
    /// a second one, and then the holder is returned.
    pub async fn begin_deploy(&self, d: &NewDeploy<'_>) -> Result<Lock, sqlx::Error> {
        let now = db_now(self.backend);
        let sql = format!(
            "INSERT INTO deploys (project, kind, tag, from_tag, actor, invocation_id, platform, \
             channel_id, state, steps, started_at, heartbeat_at, owner) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', '[]', {now}, {now}, $9) RETURNING id"
        );
        let insert = sqlx::query(&sql).bind_all((
            d.project,
            d.kind,
            d.tag,
            d.from_tag,
            d.actor,
            d.invocation_id,
            d.platform,
            d.channel_id,
            d.owner,
        ));
        // A holder that finished between the two statements: the caller may try again.
        let holder = || self.running_deploy(d.project);
        Ok(match insert_or_holder(&self.pool, insert, holder).await? {
            Ok(id) => Lock::Taken(id),
            Err(holder) => Lock::HeldBy(Box::new(holder)),
        })
    }

    pub async fn running_deploy(&self, project: &str) -> Result<Option<DeployRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE project = $1 AND state = 'running'"
        );
        self.fetch_optional(&sql, (project,)).await
    }

    /// Saves the steps so far and renews the heartbeat. False when the row is no longer
    /// running (another runbot marked it interrupted): the caller has lost the lock.
    pub async fn deploy_progress(
        &self,
        id: i64,
        owner: &str,
        steps: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = format!(
            "UPDATE deploys SET steps = $1, heartbeat_at = {} \
             WHERE id = $2 AND owner = $3 AND state = 'running'",
            db_now(self.backend)
        );
        Ok(self.execute(&sql, (steps, id, owner)).await? == 1)
    }

    /// Records the outcome, which releases the lock.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_deploy(
        &self,
        id: i64,
        owner: &str,
        state: &str,
        failed_step: Option<&str>,
        error: Option<&str>,
        steps: &str,
    ) -> Result<bool, sqlx::Error> {
        let now = db_now(self.backend);
        let sql = format!(
            "UPDATE deploys SET state = $1, failed_step = $2, error = $3, steps = $4, \
             finished_at = {now}, heartbeat_at = {now} \
             WHERE id = $5 AND owner = $6 AND state = 'running'"
        );
        let values = (state, failed_step, error, steps, id, owner);
        Ok(self.execute(&sql, values).await? == 1)
    }

    /// Marks running deploys whose heartbeat is older than `stale_secs` by the database's
    /// clock interrupted, and returns them: their process stopped without finishing. Deploys
    /// of `alive` (the caller's own process) are left alone: a stale heartbeat there means the
    /// store was unreachable, not that the deploy died. One statement, so a deploy that beats
    /// meanwhile is not marked.
    pub async fn interrupt_stale_deploys(
        &self,
        stale_secs: u64,
        alive: &str,
    ) -> Result<Vec<DeployRow>, sqlx::Error> {
        let sql = format!(
            "UPDATE deploys SET state = 'interrupted', finished_at = {now}, \
             error = 'runbot stopped while it ran (no heartbeat since ' || heartbeat_at || ')' \
             WHERE state = 'running' AND owner <> $1 AND {age} > $2 \
             RETURNING {DEPLOY_COLUMNS}",
            now = db_now(self.backend),
            age = db_age(self.backend, "heartbeat_at"),
        );
        self.fetch_all(&sql, (alive, stale_secs as f64)).await
    }

    /// Marks the running deploys of `owner` (this process, stopping) interrupted, and returns them.
    pub async fn interrupt_own_deploys(&self, owner: &str) -> Result<Vec<DeployRow>, sqlx::Error> {
        let sql = format!(
            "UPDATE deploys SET state = 'interrupted', finished_at = {now}, \
             error = 'runbot stopped while it ran (shutdown.grace_secs ran out)' \
             WHERE state = 'running' AND owner = $1 \
             RETURNING {DEPLOY_COLUMNS}",
            now = db_now(self.backend),
        );
        self.fetch_all(&sql, (owner,)).await
    }

    /// The newest deploys of a project, newest first.
    pub async fn recent_deploys(
        &self,
        project: &str,
        limit: i64,
    ) -> Result<Vec<DeployRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE project = $1 ORDER BY id DESC LIMIT $2"
        );
        self.fetch_all(&sql, (project, limit)).await
    }

    /// Queues a message for a channel of `platform` (None: the platform's default channel),
    /// and for the console's activity feed, which shows every announcement whatever platform
    /// the request came from.
    pub async fn announce(
        &self,
        platform: &str,
        channel_id: Option<&str>,
        text: &str,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO announcements (platform, channel_id, text, created_at) \
                   VALUES ($1, $2, $3, $4)";
        self.execute(sql, (platform, channel_id, text, now)).await?;
        let console = crate::request::Platform::Console.as_str();
        if platform != console && self.chat_platforms.iter().any(|p| p == console) {
            self.execute(sql, (console, None::<&str>, text, now))
                .await?;
        }
        Ok(())
    }

    /// Queues a note on an alert group for every platform that keeps a thread under each card
    /// ([`Store::with_thread_platforms`]): its card's thread becomes the incident's timeline.
    pub async fn note_group(
        &self,
        group_id: i64,
        text: &str,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        for platform in self.thread_platforms.iter() {
            let sql =
                "INSERT INTO announcements (platform, channel_id, text, group_id, created_at) \
                       VALUES ($1, NULL, $2, $3, $4)";
            self.execute(sql, (platform.as_str(), text, group_id, now))
                .await?;
        }
        Ok(())
    }

    /// Queues a prompt (text and buttons, as JSON) for `platform`'s default channel only.
    pub async fn announce_prompt(
        &self,
        platform: &str,
        text: &str,
        buttons: &str,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO announcements (platform, channel_id, text, buttons, created_at) \
                   VALUES ($1, NULL, $2, $3, $4)";
        self.execute(sql, (platform, text, buttons, now)).await?;
        Ok(())
    }

    pub async fn due_announcements(
        &self,
        platform: &str,
        limit: i64,
        notes_wait_until: &str,
    ) -> Result<Vec<Announcement>, sqlx::Error> {
        // A note waits, out of the way of the rest, until its card is posted (or it has waited
        // `notes_wait_until`, after which it goes alone).
        let sql = "SELECT id, channel_id, text, buttons, group_id, created_at, tried_at \
             FROM announcements a WHERE platform = $1 AND sent_at IS NULL AND (group_id IS NULL \
             OR created_at < $3 OR EXISTS (SELECT 1 FROM chat_cards c WHERE c.group_id = a.group_id \
             AND c.platform = a.platform AND c.message_id IS NOT NULL)) ORDER BY id LIMIT $2";
        self.fetch_all(sql, (platform, limit, notes_wait_until))
            .await
    }

    /// Recent announcements of `platform`, sent or not, newest first: (created at, text).
    pub async fn recent_announcements(
        &self,
        platform: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let sql = "SELECT created_at, text FROM announcements WHERE platform = $1 \
             AND buttons IS NULL ORDER BY id DESC LIMIT $2";
        self.fetch_all(sql, (platform, limit)).await
    }

    /// Records that a post of the announcement is about to be tried.
    pub async fn announcement_trying(&self, id: i64, now: &str) -> Result<(), sqlx::Error> {
        let sql = "UPDATE announcements SET tried_at = $1 WHERE id = $2";
        self.execute(sql, (now, id)).await?;
        Ok(())
    }

    pub async fn announcement_sent(&self, id: i64, now: &str) -> Result<(), sqlx::Error> {
        let sql = "UPDATE announcements SET sent_at = $1 WHERE id = $2";
        self.execute(sql, (now, id)).await?;
        Ok(())
    }

    pub async fn announcement_failed(&self, id: i64, error: &str) -> Result<(), sqlx::Error> {
        let sql = "UPDATE announcements SET attempts = attempts + 1, last_error = $1 WHERE id = $2";
        self.execute(sql, (error, id)).await?;
        Ok(())
    }
}
