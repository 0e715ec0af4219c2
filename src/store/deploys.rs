//! Deploy history and the deploy lock (see `migrations/*/0006_deploys.sql`), and announcements:
//! chat messages that are not cards.
//!
//! A deploy's times (started, heartbeat, finished) come from the database's clock, and whether
//! its heartbeat is stale is decided in SQL against that clock: replicas on hosts whose clocks
//! disagree never take a live deploy for dead (see [`super::locks`]).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::locks::{db_age, db_now};
use super::Store;

/// One deploy or rollback as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
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

const DEPLOY_COLUMNS: &str = "id, project, kind, tag, from_tag, actor, invocation_id, platform, \
    channel_id, state, failed_step, error, steps, started_at, finished_at, heartbeat_at, owner";

fn deploy_from_row(r: &AnyRow) -> Result<DeployRow, sqlx::Error> {
    Ok(DeployRow {
        id: r.try_get("id")?,
        project: r.try_get("project")?,
        kind: r.try_get("kind")?,
        tag: r.try_get("tag")?,
        from_tag: r.try_get("from_tag")?,
        actor: r.try_get("actor")?,
        invocation_id: r.try_get("invocation_id")?,
        platform: r.try_get("platform")?,
        channel_id: r.try_get("channel_id")?,
        state: r.try_get("state")?,
        failed_step: r.try_get("failed_step")?,
        error: r.try_get("error")?,
        steps: r.try_get("steps")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        heartbeat_at: r.try_get("heartbeat_at")?,
        owner: r.try_get("owner")?,
    })
}

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub id: i64,
    pub channel_id: Option<String>,
    pub text: String,
}

impl Store {
    /// Takes the project's deploy lock by inserting a running deploy; the unique index refuses
    /// a second one, and then the holder is returned.
    pub async fn begin_deploy(&self, d: &NewDeploy<'_>) -> Result<Lock, sqlx::Error> {
        let now = db_now(self.backend);
        let inserted = sqlx::query(&format!(
            "INSERT INTO deploys (project, kind, tag, from_tag, actor, invocation_id, platform, \
             channel_id, state, steps, started_at, heartbeat_at, owner) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', '[]', {now}, {now}, $9) RETURNING id"
        ))
        .bind(d.project)
        .bind(d.kind)
        .bind(d.tag)
        .bind(d.from_tag)
        .bind(d.actor)
        .bind(d.invocation_id)
        .bind(d.platform)
        .bind(d.channel_id)
        .bind(d.owner)
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => Ok(Lock::Taken(row.try_get("id")?)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                match self.running_deploy(d.project).await? {
                    Some(holder) => Ok(Lock::HeldBy(Box::new(holder))),
                    // Finished between the two statements: the caller may try again.
                    None => Err(sqlx::Error::Database(e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn running_deploy(&self, project: &str) -> Result<Option<DeployRow>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE project = $1 AND state = 'running'"
        ))
        .bind(project)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| deploy_from_row(&r))
        .transpose()
    }

    /// Saves the steps so far and renews the heartbeat. False when the row is no longer
    /// running (another runbot marked it interrupted): the caller has lost the lock.
    pub async fn deploy_progress(
        &self,
        id: i64,
        owner: &str,
        steps: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(&format!(
            "UPDATE deploys SET steps = $1, heartbeat_at = {} \
             WHERE id = $2 AND owner = $3 AND state = 'running'",
            db_now(self.backend)
        ))
        .bind(steps)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
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
        let done = sqlx::query(&format!(
            "UPDATE deploys SET state = $1, failed_step = $2, error = $3, steps = $4, \
             finished_at = {now}, heartbeat_at = {now} \
             WHERE id = $5 AND owner = $6 AND state = 'running'"
        ))
        .bind(state)
        .bind(failed_step)
        .bind(error)
        .bind(steps)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
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
        sqlx::query(&format!(
            "UPDATE deploys SET state = 'interrupted', finished_at = {now}, \
             error = 'runbot stopped while it ran (no heartbeat since ' || heartbeat_at || ')' \
             WHERE state = 'running' AND owner <> $1 AND {age} > $2 \
             RETURNING {DEPLOY_COLUMNS}",
            now = db_now(self.backend),
            age = db_age(self.backend, "heartbeat_at"),
        ))
        .bind(alive)
        .bind(stale_secs as f64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(deploy_from_row)
        .collect()
    }

    /// Marks the running deploys of `owner` (this process, stopping) interrupted, and returns them.
    pub async fn interrupt_own_deploys(&self, owner: &str) -> Result<Vec<DeployRow>, sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE deploys SET state = 'interrupted', finished_at = {now}, \
             error = 'runbot stopped while it ran (shutdown.grace_secs ran out)' \
             WHERE state = 'running' AND owner = $1 \
             RETURNING {DEPLOY_COLUMNS}",
            now = db_now(self.backend),
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(deploy_from_row)
        .collect()
    }

    /// The newest deploys of a project, newest first.
    pub async fn recent_deploys(
        &self,
        project: &str,
        limit: i64,
    ) -> Result<Vec<DeployRow>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE project = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(project)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(deploy_from_row)
        .collect()
    }

    /// Queues a message for a channel of `platform` (None: the platform's default channel).
    pub async fn announce(
        &self,
        platform: &str,
        channel_id: Option<&str>,
        text: &str,
        now: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO announcements (platform, channel_id, text, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(platform)
        .bind(channel_id)
        .bind(text)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn due_announcements(
        &self,
        platform: &str,
        limit: i64,
    ) -> Result<Vec<Announcement>, sqlx::Error> {
        sqlx::query(
            "SELECT id, channel_id, text FROM announcements \
             WHERE platform = $1 AND sent_at IS NULL ORDER BY id LIMIT $2",
        )
        .bind(platform)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Announcement {
                id: r.try_get("id")?,
                channel_id: r.try_get("channel_id")?,
                text: r.try_get("text")?,
            })
        })
        .collect()
    }

    /// Recent announcements, sent or not, newest first (the console shows them).
    pub async fn recent_announcements(
        &self,
        platform: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        sqlx::query(
            "SELECT created_at, text FROM announcements WHERE platform = $1 \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(platform)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("created_at")?, r.try_get("text")?)))
        .collect()
    }

    pub async fn announcement_sent(&self, id: i64, now: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE announcements SET sent_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn announcement_failed(&self, id: i64, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE announcements SET attempts = attempts + 1, last_error = $1 WHERE id = $2",
        )
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
