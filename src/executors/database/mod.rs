//! `/backup`, `/backups`, `/restore` and `/db CHECK`: the stack's application database,
//! through its [`engine`].

pub mod engine;

use std::time::Instant;

use super::format::{bytes, table};
use super::lease::{self, Lease, Locks};
use super::{read_only_plan, reply, Ctx, Done, ExecError, Executor, Failure};
use crate::commands::DatabaseOp;
use crate::domain::clock::Clock;
use crate::domain::duration;
use crate::domain::text::plural;
use crate::executors::database::engine::{backup_name, took, AppDatabase, AppDbError, Check};

/// Discord's limit for one message's content, which the reply's text and code block share.
const MESSAGE_MAX: usize = 2000;
/// "\n```\n" before the block and "\n```" after it.
const FENCES: usize = 9;
/// The most backups `/backups` lists; older ones are counted.
const LIST_MAX: usize = 30;

/// `/backup`, `/backups`, `/restore` and `/db`.
pub struct Database {
    /// The stack's application database; None when `app_database.url` is not set.
    pub app_db: Option<AppDatabase>,
    pub locks: Locks,
    /// The dispatcher's clock (tests drive it): names the backups.
    pub clock: Clock,
}

impl Executor for Database {
    type Op = DatabaseOp;

    async fn plan(&self, op: DatabaseOp, ctx: &Ctx<'_>) -> String {
        let Some(db) = &self.app_db else {
            return match op {
                DatabaseOp::Backup | DatabaseOp::Restore => {
                    "nothing: app_database.url is not set".into()
                }
                DatabaseOp::Backups | DatabaseOp::Diagnostics => read_only_plan(ctx),
            };
        };
        match op {
            DatabaseOp::Backup => plan_backup(db, ctx),
            DatabaseOp::Restore => plan_restore(db, ctx).await,
            DatabaseOp::Backups | DatabaseOp::Diagnostics => read_only_plan(ctx),
        }
    }

    async fn run(&self, op: DatabaseOp, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        let db = configured(&self.app_db)?;
        Ok(match op {
            DatabaseOp::Backup => self.backup(db, ctx).await?,
            DatabaseOp::Backups => backups(db, ctx).await?,
            DatabaseOp::Restore => self.restore(db, ctx).await?,
            DatabaseOp::Diagnostics => diagnostics(db, ctx).await?,
        })
    }
}

/// The application database, or what to set when `app_database.url` is not.
fn configured(app_db: &Option<AppDatabase>) -> Result<&AppDatabase, ExecError> {
    app_db.as_ref().ok_or_else(|| {
        ExecError(
            "runbot does not know the application database: set app_database.url (RUNBOT__APP_DATABASE__URL) to postgres://USER:PASSWORD@HOST:PORT/DATABASE. Nothing was changed."
                .into(),
        )
    })
}

impl From<AppDbError> for ExecError {
    fn from(e: AppDbError) -> Self {
        ExecError(e.to_string())
    }
}

fn backup_arg<'a>(ctx: &'a Ctx<'_>) -> Result<&'a str, ExecError> {
    ctx.text("backup").ok_or_else(|| {
        ExecError(
            "/restore needs backup: the file's name, as /backups lists it. Nothing was changed."
                .into(),
        )
    })
}

/// What `/backup` would do.
fn plan_backup(db: &AppDatabase, ctx: &Ctx<'_>) -> String {
    format!(
        "back up database {} to {} (pg_dump, gzip)",
        db.target(),
        db.backup_dir().join(backup_name(ctx.now)).display()
    )
}

/// What `/restore` would do; reads the folder, changes nothing.
async fn plan_restore(db: &AppDatabase, ctx: &Ctx<'_>) -> String {
    let Ok(name) = backup_arg(ctx) else {
        return "restore the database from a backup".into();
    };
    match db.find(name).await {
        Ok(b) => format!(
            "restore database {} from {} ({}, taken {} UTC) after a safety backup to {}; psql runs it in one transaction",
            db.target(),
            b.path.display(),
            bytes(b.bytes),
            b.created.format("%Y-%m-%d %H:%M:%S"),
            db.backup_dir().join(backup_name(ctx.now)).display()
        ),
        Err(e) => format!("nothing: {e}"),
    }
}

impl Database {
    /// `/backup`, holding the database's lease: one backup or restore of it at a time, across
    /// replicas.
    async fn backup(&self, db: &AppDatabase, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let want = lease::database(db, lease::holder(ctx), "backing up the database".into());
        let held = self.locks.for_command(ctx, want).await.map_err(ExecError)?;
        let started = Instant::now();
        // Named for when the dump starts: the request may have waited for the lease.
        let b = held.during(db.backup((self.clock)())).await?;
        let took = took(started.elapsed());
        Ok(Done {
            reply: reply(
                format!(
                    "💾 **{}** backed up database {} to `{}` ({}) in {took}.",
                    ctx.actor.name,
                    db.target(),
                    b.path.display(),
                    bytes(b.bytes)
                ),
                false,
            ),
            summary: format!("backup {} ({} bytes, {took})", b.name, b.bytes),
        })
    }

    /// `/restore backup`, holding the stack's lease (when there is a stack: the application must
    /// not be mid-deploy while its data is replaced) and then the database's.
    async fn restore(&self, db: &AppDatabase, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let name = backup_arg(ctx)?;
        // A missing or misnamed backup is said at once, not after waiting for the locks.
        db.find(name).await?;
        let doing = format!("restoring {name}");
        let stack: Option<Lease> = match self.locks.stack(lease::holder(ctx), doing.clone()) {
            Some(want) => Some(self.locks.for_command(ctx, want).await.map_err(ExecError)?),
            None => None,
        };
        let restored = async {
            let held = self
                .locks
                .for_command(ctx, lease::database(db, lease::holder(ctx), doing))
                .await
                .map_err(ExecError)?;
            held.during(db.restore(name, (self.clock)()))
                .await
                .map_err(ExecError::from)
        };
        let r = match stack {
            Some(l) => l.during(restored).await,
            None => restored.await,
        }?;
        Ok(Done {
            reply: reply(
                format!(
                    "♻️ **{}** restored database {} from `{}` in {}. The state just before was saved as `{}`: to undo, /restore backup:{}.",
                    ctx.actor.name,
                    db.target(),
                    r.name,
                    took(r.took),
                    r.safety_backup,
                    r.safety_backup
                ),
                false,
            ),
            summary: format!("restored {} (safety backup {})", r.name, r.safety_backup),
        })
    }
}

/// `/backups`: newest first.
async fn backups(db: &AppDatabase, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let all = db.list().await?;
    let dir = db.backup_dir().display().to_string();
    if all.is_empty() {
        return Ok(Done {
            reply: reply(
                format!("There are no backups in {dir} yet: /backup makes one."),
                true,
            ),
            summary: "no backups".into(),
        });
    }
    let total: u64 = all.iter().map(|b| b.bytes).sum();
    let mut rows = vec![["BACKUP".to_string(), "SIZE".into(), "AGE".into()]];
    for b in all.iter().take(LIST_MAX) {
        // A safety backup taken in a second already named is named for the next one, so it
        // may be up to a few seconds "ahead": that is age 0, not an error.
        let age = duration::short(
            (ctx.now - b.created)
                .max(chrono::Duration::zero())
                .to_std()
                .unwrap_or_default(),
        );
        rows.push([b.name.clone(), bytes(b.bytes), age]);
    }
    let more = all.len().saturating_sub(LIST_MAX);
    let mut block = table(&rows);
    if more > 0 {
        block.push_str(&format!("\n… and {more} older"));
    }
    let summary = format!(
        "{} backup{} in {dir}, {} in all",
        all.len(),
        plural(all.len()),
        bytes(total)
    );
    let mut r = reply(format!("🗄️ {summary}, newest first:"), true);
    r.code_block = Some(block);
    Ok(Done { reply: r, summary })
}

/// `/db check`.
async fn diagnostics(db: &AppDatabase, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let check = ctx
        .text("check")
        .and_then(Check::parse)
        .ok_or_else(|| ExecError("/db needs check: connections, slow, sizes or locks.".into()))?;
    let t = db.diagnostics(check).await?;
    if t.rows.is_empty() {
        let none = match check {
            Check::Connections => "no client connections",
            Check::Slow => "no query has been running for over 1 s",
            Check::Sizes => "no tables",
            Check::Locks => "no lock is waiting",
        };
        return Ok(Done {
            reply: reply(format!("✅ {}: nothing found — {none}.", db.target()), true),
            summary: format!("{}: nothing found", check.name()),
        });
    }
    let text = format!("🔎 {}: {}", db.target(), t.summary);
    let room = MESSAGE_MAX.saturating_sub(text.chars().count() + FENCES);
    let mut r = reply(text, true);
    r.code_block = Some(fit(&t.header, &t.rows, room));
    Ok(Done {
        reply: r,
        summary: format!("{}: {}", check.name(), t.summary),
    })
}

/// The table with as many rows as fit in `room` characters, and a line counting the rest.
fn fit(header: &[String], rows: &[Vec<String>], room: usize) -> String {
    let mut n = rows.len();
    loop {
        let mut all = vec![header.to_vec()];
        all.extend(rows[..n].iter().cloned());
        let mut block = table(&all);
        if n < rows.len() {
            block.push_str(&format!("\n… {} more not shown", rows.len() - n));
        }
        if block.chars().count() <= room || n == 0 {
            // Even the header alone may be too wide: cut it rather than fail to send.
            return block.chars().take(room).collect();
        }
        n -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_table_is_cut_to_fit_and_says_how_much_is_left() {
        let header = vec!["PID".to_string(), "QUERY".to_string()];
        let rows: Vec<Vec<String>> = (0..200)
            .map(|i| vec![i.to_string(), "SELECT pg_sleep(10)".repeat(3)])
            .collect();
        let block = fit(&header, &rows, 1900);
        assert!(block.chars().count() <= 1900);
        assert!(block.starts_with("PID"), "{block}");
        assert!(block.contains("more not shown"), "{block}");
    }
}
