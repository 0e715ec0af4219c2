//! The stack's application database (`[app_database]`; not runbot's own store): backups with
//! `pg_dump` into gzip files, restores through `psql`, and the runbook's read-only diagnostic
//! queries.
//!
//! `pg_dump` and `psql` run as processes with argument vectors, never through a shell. The
//! connection reaches them as `PG*` environment variables, so the password is never on a
//! command line where `ps` would show it.
//!
//! A backup file is not trusted: a `\! command` line in it would run as runbot when psql
//! reads it. A restore reads it through [`psql_script`] first and refuses one holding
//! any psql meta-command, reads it through again as it feeds psql, and, where psql supports
//! it (13.22, 14.19, 15.14, 16.10, 17.6 and later), starts psql's input with `\restrict` so
//! that psql itself refuses whatever the check might miss.

pub mod psql_script;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use regex::Regex;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::domain::duration;
use crate::domain::pg_url::PgUrl;
use crate::domain::redact::{redact, MASK};
use psql_script::{Problem, Refusal, Scanner};

/// `backup_YYYYmmdd_HHMMSS.sql.gz`, the runbook's names; the only files runbot lists or restores.
static BACKUP_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^backup_([0-9]{8}_[0-9]{6})\.sql\.gz$").expect("the backup name pattern compiles")
});

/// How many of the last lines of pg_dump's or psql's stderr an error shows.
const STDERR_LINES: usize = 12;
/// Pipe chunks between the process and the gzip thread.
const CHUNK: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A backup file in the backup folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    pub name: String,
    pub path: PathBuf,
    /// Compressed size on disk.
    pub bytes: u64,
    /// When it was taken (UTC), read from its name.
    pub created: DateTime<Utc>,
}

/// A finished restore.
#[derive(Debug, Clone)]
pub struct Restored {
    pub name: String,
    /// The backup of the state just before the restore: restoring it undoes the restore.
    pub safety_backup: String,
    pub took: Duration,
}

/// The runbook's diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Connections,
    Slow,
    Sizes,
    Locks,
}

impl Check {
    pub const ALL: [Check; 4] = [Check::Connections, Check::Slow, Check::Sizes, Check::Locks];

    pub fn parse(s: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Check::Connections => "connections",
            Check::Slow => "slow",
            Check::Sizes => "sizes",
            Check::Locks => "locks",
        }
    }
}

/// A diagnostic's answer: one line that sums it up, then the rows under `header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub summary: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Why an operation on the application database failed, in words for the person who asked.
/// No variant carries the password: process output and driver errors are scrubbed first.
#[derive(Debug, thiserror::Error)]
pub enum AppDbError {
    #[error("{0:?} is not a backup name: backups are named like backup_20261127_031500.sql.gz (/backups lists them). Nothing was changed.")]
    BadName(String),
    #[error("there is no backup {name} in {dir} (/backups lists them). Nothing was changed.")]
    NotFound { name: String, dir: String },
    #[error("a backup named {name} already exists in {dir}, and runbot never overwrites one: try again in a second. Nothing was changed.")]
    Exists { name: String, dir: String },
    #[error("runbot could not start {program} ({reason}): install the PostgreSQL client, or set app_database.{key} to its path. Nothing was changed.")]
    Spawn {
        program: String,
        key: &'static str,
        reason: String,
    },
    #[error("pg_dump failed ({status}) after {took}, so no backup was written (its partial file was removed); the database was only read. pg_dump said: {stderr}")]
    DumpFailed {
        status: String,
        took: String,
        stderr: String,
    },
    #[error(
        "{what} took longer than app_database.timeout_secs = {secs} s and was stopped. {after}"
    )]
    TimedOut {
        what: &'static str,
        secs: u64,
        after: String,
    },
    #[error("backup {name} is damaged ({reason}), so it cannot be restored: choose another from /backups. Nothing was changed.")]
    Damaged { name: String, reason: String },
    /// The backup holds (or may hold) a psql meta-command, which psql would run as runbot.
    #[error("runbot refuses to restore backup {name}: {why} {after}")]
    Unsafe {
        name: String,
        why: String,
        after: String,
    },
    #[error("the safety backup of the current database failed, so the restore did not start. Nothing was changed. Why: {0}")]
    SafetyBackup(Box<AppDbError>),
    #[error("the restore of {name} failed ({status}) after {took}; psql stopped inside one transaction, so PostgreSQL rolled all of it back and the database is as it was. The safety backup {safety} was kept. psql said: {stderr}")]
    RestoreFailed {
        name: String,
        status: String,
        took: String,
        safety: String,
        stderr: String,
    },
    #[error("{what} failed: {reason}. {after}")]
    Io {
        what: String,
        reason: String,
        after: &'static str,
    },
    #[error(
        "runbot cannot reach the application database {target}: {reason}. Nothing was changed."
    )]
    Connect { target: String, reason: String },
    #[error("the {check} query failed: {reason}. Nothing was changed.")]
    Query { check: &'static str, reason: String },
}

/// What libpq's clients (pg_dump, psql) and sqlx make of the parsed URL.
trait Libpq {
    fn apply(&self, cmd: &mut Command);
    fn options(&self) -> PgConnectOptions;
    fn scrub(&self, text: &str) -> String;
}

impl Libpq for PgUrl {
    /// What pg_dump and psql get instead of a connection string on their command line.
    fn apply(&self, cmd: &mut Command) {
        // Ours win over whatever runbot's own environment says.
        for k in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGSERVICE",
        ] {
            cmd.env_remove(k);
        }
        if let Some(h) = &self.host {
            cmd.env("PGHOST", h);
        }
        if let Some(p) = self.port {
            cmd.env("PGPORT", p.to_string());
        }
        if let Some(u) = &self.user {
            cmd.env("PGUSER", u);
        }
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p.expose_secret());
        }
        cmd.env("PGDATABASE", &self.database)
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string())
            .env("PGAPPNAME", "runbot");
    }

    fn options(&self) -> PgConnectOptions {
        let mut o = PgConnectOptions::new_without_pgpass()
            .database(&self.database)
            .application_name("runbot");
        match self.host.as_deref() {
            Some(h) if h.starts_with('/') => o = o.socket(h),
            Some(h) => o = o.host(h),
            None => {}
        }
        if let Some(p) = self.port {
            o = o.port(p);
        }
        if let Some(u) = &self.user {
            o = o.username(u);
        }
        if let Some(p) = &self.password {
            o = o.password(p.expose_secret());
        }
        o
    }

    /// `text` with secrets masked: the known patterns, and this password wherever it appears.
    fn scrub(&self, text: &str) -> String {
        let mut out = redact(text).into_owned();
        if let Some(p) = &self.password {
            let p = p.expose_secret();
            // A one- or two-letter password would mask ordinary letters; libpq never echoes
            // a password, so this is only a second guard.
            if p.len() >= 3 {
                out = out.replace(p, MASK);
            }
        }
        out
    }
}

/// The name of a backup taken at `now`.
pub fn backup_name(now: DateTime<Utc>) -> String {
    format!("backup_{}.sql.gz", now.format("%Y%m%d_%H%M%S"))
}

/// When a backup named `name` was taken; None for names that are not backups.
pub fn backup_time(name: &str) -> Option<DateTime<Utc>> {
    let stamp = BACKUP_NAME.captures(name)?.get(1)?.as_str();
    NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S")
        .ok()
        .map(|t| Utc.from_utc_datetime(&t))
}

fn status_text(s: ExitStatus) -> String {
    match s.code() {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".into(),
    }
}

/// How long a backup or restore took: milliseconds under a second.
pub(super) fn took(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        duration::short(d)
    }
}

/// The last lines a process wrote to stderr, each clipped, for error messages.
async fn stderr_tail(stderr: Option<tokio::process::ChildStderr>) -> String {
    let Some(stderr) = stderr else {
        return String::new();
    };
    let mut lines: VecDeque<String> = VecDeque::new();
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if line.is_empty() {
                    continue;
                }
                if lines.len() == STDERR_LINES {
                    lines.pop_front();
                }
                lines.push_back(line.chars().take(300).collect());
            }
        }
    }
    if lines.is_empty() {
        "(nothing)".into()
    } else {
        lines.into_iter().collect::<Vec<_>>().join("\n")
    }
}

/// The application database's operations. Cheap to clone.
#[derive(Clone)]
pub struct AppDatabase {
    inner: Arc<Inner>,
}

struct Inner {
    conn: PgUrl,
    backup_dir: PathBuf,
    pg_dump: String,
    psql: String,
    timeout: Duration,
    /// What `psql` can do, asked once it is first needed.
    psql_client: tokio::sync::OnceCell<PsqlClient>,
}

impl Inner {
    /// Starts `pg_dump` or `psql` (`key`, the setting naming `program`) against the target:
    /// the connection goes in the environment, never the arguments, under `session` as its
    /// application name when given; stderr is kept for error messages; the process dies with
    /// the future that holds it.
    fn start(
        &self,
        mut cmd: Command,
        program: &str,
        key: &'static str,
        session: Option<&str>,
    ) -> Result<(tokio::process::Child, tokio::task::JoinHandle<String>), AppDbError> {
        self.conn.apply(&mut cmd);
        if let Some(name) = session {
            cmd.env("PGAPPNAME", name);
        }
        cmd.stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| AppDbError::Spawn {
            program: program.into(),
            key,
            reason: e.to_string(),
        })?;
        let stderr = tokio::spawn(stderr_tail(child.stderr.take()));
        Ok((child, stderr))
    }
}

impl std::fmt::Debug for AppDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppDatabase")
            .field("target", &self.inner.conn.target())
            .field("backup_dir", &self.inner.backup_dir)
            .finish_non_exhaustive()
    }
}

impl AppDatabase {
    /// The database at `conn`, backed up into `backup_dir` with these client programs, each
    /// run stopped after `timeout`.
    pub fn new(
        conn: PgUrl,
        backup_dir: PathBuf,
        pg_dump: String,
        psql: String,
        timeout: Duration,
    ) -> AppDatabase {
        AppDatabase {
            inner: Arc::new(Inner {
                conn,
                backup_dir,
                pg_dump,
                psql,
                timeout,
                psql_client: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// What the configured psql can do; asked once, again after a failure.
    async fn psql_client(&self) -> Result<PsqlClient, AppDbError> {
        let inner = &self.inner;
        inner
            .psql_client
            .get_or_try_init(|| probe_psql(&inner.psql))
            .await
            .cloned()
    }

    /// `prod_user@postgres:5432/saas_cafeterias_prod`, with no password.
    pub fn target(&self) -> String {
        self.inner.conn.target()
    }

    pub fn backup_dir(&self) -> &Path {
        &self.inner.backup_dir
    }

    fn dir_text(&self) -> String {
        self.inner.backup_dir.display().to_string()
    }

    /// Dumps the database into `backup_dir/backup_YYYYmmdd_HHMMSS.sql.gz` (UTC of `at`), or,
    /// when a backup already has that second's name, the next free second's: backups are named
    /// by the second, an existing one is never replaced, and two taken in one second both keep.
    ///
    /// One backup or restore of a database at a time is the caller's lock to take (the
    /// executors hold `database:<target>` in runbot's store, shared by replicas); this writes
    /// safely either way.
    #[tracing::instrument(skip(self), fields(target = %self.target()))]
    pub async fn backup(&self, at: DateTime<Utc>) -> Result<BackupFile, AppDbError> {
        let started = Instant::now();
        let inner = &self.inner;
        let dir = inner.backup_dir.clone();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| AppDbError::Io {
                what: format!("creating the backup folder {}", dir.display()),
                reason: e.to_string(),
                after: "Nothing was changed.",
            })?;
        // A name of its own, created only if new: another backup (a replica, a second one in the
        // same second) never writes into it or truncates it.
        let partial = Partial {
            path: dir.join(format!(
                ".{}.{}.partial",
                backup_name(at).trim_end_matches(".sql.gz"),
                uuid::Uuid::new_v4().simple()
            )),
        };
        // Created here rather than on the gzip thread, so the guard above always sees it.
        let file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&partial.path)
            .map_err(|e| AppDbError::Io {
                what: format!("creating a file in the backup folder {}", self.dir_text()),
                reason: e.to_string(),
                after: "Nothing was changed.",
            })?;

        let mut cmd = Command::new(&inner.pg_dump);
        cmd.args([
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--format=plain",
        ]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let (mut child, stderr) = inner.start(cmd, &inner.pg_dump, "pg_dump", None)?;
        let stdout = child.stdout.take();

        // gzip on a blocking thread; the async side only moves chunks from the pipe.
        let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
        let writer = tokio::task::spawn_blocking(move || write_gzip(file, rx));
        let pump = async move {
            let Some(mut out) = stdout else {
                return;
            };
            let mut buf = vec![0u8; CHUNK];
            loop {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    // The writer stopped (a full disk): dropping the pipe stops pg_dump too.
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                }
            }
        };
        let ran = tokio::time::timeout(inner.timeout, async {
            let ((), status) = tokio::join!(pump, child.wait());
            status
        })
        .await;
        let status = match ran {
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let _ = writer.await;
                return Err(AppDbError::TimedOut {
                    what: "pg_dump",
                    secs: inner.timeout.as_secs(),
                    after: "No backup was written (its partial file was removed); the database was only read.".into(),
                });
            }
            Ok(Err(e)) => {
                let _ = writer.await;
                return Err(AppDbError::Io {
                    what: "waiting for pg_dump".into(),
                    reason: e.to_string(),
                    after: "No backup was written.",
                });
            }
            Ok(Ok(s)) => s,
        };
        let written = writer.await;
        let stderr = stderr.await.unwrap_or_default();
        // A write that failed (a full disk) closes the pipe and pg_dump dies of it: say the cause.
        if let Ok(Err(e)) = &written {
            return Err(AppDbError::Io {
                what: format!("writing the backup into {}", self.dir_text()),
                reason: e.to_string(),
                after: "No backup was written (its partial file was removed); the database was only read.",
            });
        }
        if !status.success() {
            return Err(AppDbError::DumpFailed {
                status: status_text(status),
                took: took(started.elapsed()),
                stderr: inner.conn.scrub(&stderr),
            });
        }
        let bytes = match written {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Err(AppDbError::Io {
                    what: format!("writing the backup into {}", self.dir_text()),
                    reason: e.to_string(),
                    after: "No backup was written (its partial file was removed); the database was only read.",
                });
            }
            Err(e) => {
                return Err(AppDbError::Io {
                    what: "the gzip writer".into(),
                    reason: e.to_string(),
                    after: "No backup was written; the database was only read.",
                });
            }
        };
        let (name, path) = self.name_backup(&partial.path, at)?;
        // The name is durable only once the folder is synced; the file is whole either way.
        if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
            tracing::warn!(error = %e, backup = %name, "backup folder not synced");
        }
        tracing::info!(backup = %name, bytes, took = ?started.elapsed(), "database backed up");
        Ok(BackupFile {
            // As the name says it, to the second, so it equals what list() reads back.
            created: backup_time(&name).unwrap_or(at),
            name,
            path,
            bytes,
        })
    }

    /// Gives the finished partial file the first free name from `at`'s second on (at most a
    /// minute later). A hard link never replaces a file (rename would, silently), so a name
    /// another runbot or a person took meanwhile is skipped, not overwritten.
    fn name_backup(
        &self,
        partial: &Path,
        at: DateTime<Utc>,
    ) -> Result<(String, PathBuf), AppDbError> {
        let dir = &self.inner.backup_dir;
        for s in 0..60 {
            let name = backup_name(at + chrono::Duration::seconds(s));
            let path = dir.join(&name);
            let placed = match std::fs::hard_link(partial, &path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                // A folder without hard links (vfat, some network mounts): rename after a look,
                // which the database lock keeps to one backup of this database at a time.
                Err(_) if path.exists() => continue,
                Err(_) => std::fs::rename(partial, &path),
                Ok(()) => Ok(()),
            };
            return match placed {
                Ok(()) => Ok((name, path)),
                Err(e) => Err(AppDbError::Io {
                    what: format!("naming the backup {name}"),
                    reason: e.to_string(),
                    after: "No backup was written; the database was only read.",
                }),
            };
        }
        Err(AppDbError::Exists {
            name: backup_name(at),
            dir: self.dir_text(),
        })
    }

    /// The backups in the backup folder, newest first. A folder that does not exist yet has none.
    pub async fn list(&self) -> Result<Vec<BackupFile>, AppDbError> {
        let dir = self.inner.backup_dir.clone();
        let dir_text = self.dir_text();
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(AppDbError::Io {
                        what: format!("reading the backup folder {dir_text}"),
                        reason: e.to_string(),
                        after: "Nothing was changed.",
                    })
                }
            };
            let mut found = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let (Some(created), Ok(meta)) = (backup_time(&name), entry.metadata()) else {
                    continue;
                };
                if meta.is_file() {
                    found.push(BackupFile {
                        path: entry.path(),
                        name,
                        bytes: meta.len(),
                        created,
                    });
                }
            }
            found.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
            Ok(found)
        })
        .await
        .map_err(|e| AppDbError::Io {
            what: "listing backups".into(),
            reason: e.to_string(),
            after: "Nothing was changed.",
        })?
    }

    /// The backup called `name`, if it is one and it exists.
    pub async fn find(&self, name: &str) -> Result<BackupFile, AppDbError> {
        let created = backup_time(name).ok_or_else(|| AppDbError::BadName(name.into()))?;
        // The pattern admits no '/' and no "..", so the path stays inside the folder.
        let path = self.inner.backup_dir.join(name);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(BackupFile {
                name: name.into(),
                path,
                bytes: m.len(),
                created,
            }),
            _ => Err(AppDbError::NotFound {
                name: name.into(),
                dir: self.dir_text(),
            }),
        }
    }

    /// Replaces the database's contents with backup `name`, after a safety backup of the
    /// current state, in one transaction: a restore that fails changes nothing. A backup
    /// holding a psql meta-command is refused before the safety backup.
    #[tracing::instrument(skip(self), fields(target = %self.target()))]
    pub async fn restore(&self, name: &str, now: DateTime<Utc>) -> Result<Restored, AppDbError> {
        let backup = self.find(name).await?;
        let started = Instant::now();
        let client = self.psql_client().await?;
        let enforced = client.restrict;
        // A damaged file, or one holding a psql meta-command, is found before anything else
        // happens, not halfway into psql.
        let check = backup.path.clone();
        let scanned = tokio::task::spawn_blocking(move || scan_gzip(&check, enforced))
            .await
            .unwrap_or_else(|e| Err(ScanFail::Read(e.to_string())));
        match scanned {
            Ok(()) => {}
            Err(ScanFail::Read(reason)) => {
                return Err(AppDbError::Damaged {
                    name: name.into(),
                    reason,
                })
            }
            Err(ScanFail::Refused(r)) => {
                return Err(AppDbError::Unsafe {
                    name: name.into(),
                    why: refusal_text(&r, &client),
                    after: "Nothing was changed.".into(),
                })
            }
        }

        // Named like every backup, so the one that makes a restore undoable never fails on a
        // name.
        let safety = self
            .backup(now)
            .await
            .map_err(|e| AppDbError::SafetyBackup(Box::new(e)))?;

        let inner = &self.inner;
        let mut cmd = Command::new(&inner.psql);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]);
        // A name of its own, so a psql that must be stopped can have its server session
        // ended too (see end_session).
        let session = format!("runbot-restore-{}", uuid::Uuid::new_v4().simple());
        cmd.stdin(Stdio::piped()).stdout(Stdio::null());
        let (mut child, stderr) = inner.start(cmd, &inner.psql, "psql", Some(&session))?;
        let stdin = child.stdin.take();
        let mut psql = Psql { child, stdin };

        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let source = backup.path.clone();
        // Checked again as it is sent: the file may have changed since (the safety backup
        // takes a while), and this way psql never gets a byte that was not checked.
        let scanner = Scanner::new(enforced);
        let reader = tokio::task::spawn_blocking(move || read_gzip(&source, tx, scanner));
        let deadline = tokio::time::Instant::now() + inner.timeout;
        let key = uuid::Uuid::new_v4().simple().to_string();
        let feed = async {
            let Some(input) = psql.stdin.as_mut() else {
                return Ok(());
            };
            // psql's own guard against what the check might miss. Tried with psql 15.18
            // (Debian 12): after `\restrict KEY` every other backslash command fails with
            // "backslash commands are restricted; only \unrestrict is allowed" and runs
            // nothing; ON_ERROR_STOP=1 makes psql exit 3 at once and --single-transaction
            // rolls back all the script did. COPY … FROM stdin data, backslashes and all, is
            // read as before up to its `\.`, and the transaction commits at the end as usual.
            // The key is random, so the script cannot `\unrestrict` it (pg_dump's own
            // \restrict lines were left out by the scanner).
            if enforced
                && input
                    .write_all(format!("\\restrict {key}\n").as_bytes())
                    .await
                    .is_err()
            {
                return Ok(());
            }
            while let Some(chunk) = rx.recv().await {
                // psql stopped reading: it hit an error and is rolling back; its exit says why.
                if input.write_all(&chunk).await.is_err() {
                    return Ok(());
                }
            }
            match reader.await {
                Ok(Ok(())) => input.flush().await.or(Ok(())),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(ScanFail::Read(e.to_string())),
            }
        };
        let fed = tokio::time::timeout_at(deadline, feed).await;
        let kept = format!(
            "psql was stopped before it committed, so the database is as it was. The safety backup {} was kept.",
            safety.name
        );
        match fed {
            Ok(Ok(())) => {}
            Ok(Err(failed)) => {
                // Killed before its input closes (see Psql): end of input would commit.
                let _ = psql.child.start_kill();
                let _ = psql.child.wait().await;
                self.end_session(&session).await;
                return Err(match failed {
                    ScanFail::Read(reason) => AppDbError::Io {
                        what: format!("reading backup {name}"),
                        reason,
                        after: "psql was stopped before it committed, so the database is as it was.",
                    },
                    ScanFail::Refused(r) => AppDbError::Unsafe {
                        name: name.into(),
                        why: format!(
                            "it changed after runbot checked it, and now {}",
                            refusal_text(&r, &client)
                        ),
                        after: format!(
                            "psql was stopped before that line and before it committed, so the database is as it was. The safety backup {} was kept.",
                            safety.name
                        ),
                    },
                });
            }
            Err(_) => {
                let _ = psql.child.start_kill();
                let _ = psql.child.wait().await;
                self.end_session(&session).await;
                return Err(AppDbError::TimedOut {
                    what: "the restore",
                    secs: inner.timeout.as_secs(),
                    after: kept,
                });
            }
        }
        // End of input: psql commits the single transaction, or rolls it back on an error.
        drop(psql.stdin.take());
        let status = match tokio::time::timeout_at(deadline, psql.child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(AppDbError::Io {
                what: "waiting for psql".into(),
                reason: e.to_string(),
                after:
                    "Whether the restore committed is unknown: check the data before acting again.",
            }),
            Err(_) => {
                let _ = psql.child.start_kill();
                let _ = psql.child.wait().await;
                self.end_session(&session).await;
                return Err(AppDbError::TimedOut {
                    what: "the restore",
                    secs: inner.timeout.as_secs(),
                    after: format!(
                        "All of the backup had been sent, so PostgreSQL may have been committing it: check the data before acting again. The safety backup {} was kept.",
                        safety.name
                    ),
                });
            }
        };
        let stderr = stderr.await.unwrap_or_default();
        if !status.success() {
            return Err(AppDbError::RestoreFailed {
                name: name.into(),
                status: status_text(status),
                took: took(started.elapsed()),
                safety: safety.name,
                stderr: inner.conn.scrub(&stderr),
            });
        }
        tracing::info!(backup = %name, safety = %safety.name, took = ?started.elapsed(), "database restored");
        Ok(Restored {
            name: name.into(),
            safety_backup: safety.name,
            took: started.elapsed(),
        })
    }

    /// Ends the server session of a psql that was killed. PostgreSQL notices a vanished
    /// client only when it next talks to it, so a session busy with a long statement would
    /// hold its locks and its uncommitted work until that statement ends; ended now, it rolls
    /// back at once. Best effort: it never commits either way.
    async fn end_session(&self, application_name: &str) {
        let conn = &self.inner.conn;
        let ended = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut db = PgConnection::connect_with(&conn.options()).await?;
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(application_name)
            .execute(&mut db)
            .await?;
            db.close().await
        })
        .await;
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %conn.scrub(&e.to_string()), "could not end a stopped restore's session")
            }
            Err(_) => tracing::warn!("could not end a stopped restore's session: no answer"),
        }
    }

    /// One of the runbook's diagnostics, read in a READ ONLY transaction with a 5 s statement
    /// timeout, so it cannot change data or pile onto a struggling server.
    pub async fn diagnostics(&self, check: Check) -> Result<Table, AppDbError> {
        let conn = &self.inner.conn;
        let connect =
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&conn.options()))
                .await;
        let mut db = match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(AppDbError::Connect {
                    target: conn.target(),
                    reason: conn.scrub(&e.to_string()),
                })
            }
            Err(_) => {
                return Err(AppDbError::Connect {
                    target: conn.target(),
                    reason: format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
                })
            }
        };
        let result = run_check(&mut db, check)
            .await
            .map_err(|e| AppDbError::Query {
                check: check.name(),
                reason: conn.scrub(&e.to_string()),
            });
        let _ = db.close().await;
        result
    }
}

/// A backup being written: its name removed when dropped (a finished one lives on under its
/// final name), so neither a failure nor runbot stopping mid-backup leaves one behind.
struct Partial {
    path: PathBuf,
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Already gone when a folder without hard links had it renamed.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// psql and the pipe it reads the backup from. Dropped before the input is complete (an
/// error, a timeout, runbot stopping), it kills psql first: closing its input would make it
/// commit what it had read so far.
struct Psql {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
}

impl Drop for Psql {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.start_kill();
        }
    }
}

fn write_gzip(file: std::fs::File, mut rx: mpsc::Receiver<Vec<u8>>) -> std::io::Result<u64> {
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(CHUNK, file),
        flate2::Compression::default(),
    );
    while let Some(chunk) = rx.blocking_recv() {
        gz.write_all(&chunk)?;
    }
    let file = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

/// Why a backup's SQL was not (all) read.
enum ScanFail {
    /// The file could not be read or decompressed.
    Read(String),
    Refused(Refusal),
}

/// Decompresses the backup in chunks through `scanner`; `each` gets what psql may receive.
/// Returns Ok(false) when `each` asked to stop.
fn scan_chunks(
    path: &Path,
    mut scanner: Scanner,
    mut each: impl FnMut(Vec<u8>) -> bool,
) -> Result<bool, ScanFail> {
    let read = |e: std::io::Error| ScanFail::Read(e.to_string());
    let file = std::fs::File::open(path).map_err(read)?;
    let mut gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match gz.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read(e)),
        };
        let mut out = Vec::with_capacity(n);
        scanner
            .push(&buf[..n], &mut out)
            .map_err(ScanFail::Refused)?;
        if !out.is_empty() && !each(out) {
            return Ok(false);
        }
    }
    scanner.finish().map_err(ScanFail::Refused)?;
    Ok(true)
}

/// The whole backup read and checked, nothing kept: memory stays at one chunk.
fn scan_gzip(path: &Path, enforced: bool) -> Result<(), ScanFail> {
    scan_chunks(path, Scanner::new(enforced), |_| true).map(|_| ())
}

fn read_gzip(path: &Path, tx: mpsc::Sender<Vec<u8>>, scanner: Scanner) -> Result<(), ScanFail> {
    // A send that fails means the feeder stopped (psql failed or the restore timed out); it
    // says why.
    scan_chunks(path, scanner, |chunk| tx.blocking_send(chunk).is_ok()).map(|_| ())
}

/// The configured psql: its version line, and whether it enforces `\restrict`.
#[derive(Debug, Clone)]
struct PsqlClient {
    version: String,
    restrict: bool,
}

/// Asks `psql --version`. A psql that cannot be started is an error (a restore needs it);
/// one whose version cannot be read is taken as one without `\restrict`.
async fn probe_psql(program: &str) -> Result<PsqlClient, AppDbError> {
    let spawn = |reason: String| AppDbError::Spawn {
        program: program.into(),
        key: "psql",
        reason,
    };
    let mut cmd = Command::new(program);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(CONNECT_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(spawn(e.to_string())),
        Err(_) => {
            return Err(spawn(format!(
                "`psql --version` gave no answer in {} s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version: String = text
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(80)
        .collect();
    let restrict = out.status.success() && has_restrict(&version);
    if restrict {
        tracing::info!(psql = %program, %version, "restores run psql under \\restrict");
    } else {
        tracing::warn!(
            psql = %program,
            %version,
            "this psql has no \\restrict (13.22, 14.19, 15.14, 16.10, 17.6 and later have it): restores rely on runbot's own check of each backup alone, which then also refuses non-ASCII SQL text"
        );
    }
    Ok(PsqlClient { version, restrict })
}

/// psql gained `\restrict` in 13.22, 14.19, 15.14, 16.10, 17.6 and 18.0; pre-releases are
/// taken as without it.
fn has_restrict(version: &str) -> bool {
    static VERSION: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^psql \(PostgreSQL\) ([0-9]+)(?:\.([0-9]+))?(\S*)")
            .expect("the psql version pattern compiles")
    });
    let Some(c) = VERSION.captures(version) else {
        return false;
    };
    let major: u32 = c[1].parse().unwrap_or(0);
    let minor: u32 = c.get(2).and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
    let fixed_in = match major {
        13 => 22,
        14 => 19,
        15 => 14,
        16 => 10,
        17 => 6,
        m if m >= 18 => 0,
        _ => return false,
    };
    c[3].is_empty() && c.get(2).is_some() && minor >= fixed_in
}

/// A refusal in words for the person who asked.
fn refusal_text(r: &Refusal, client: &PsqlClient) -> String {
    match &r.problem {
        Problem::MetaCommand(_) => format!(
            "{r}, which psql would run as runbot (a meta-command can start programs and write files); a backup taken by /backup holds none."
        ),
        Problem::Unclear(_) => {
            format!("{r}, so runbot cannot be sure psql would run no meta-command from it.")
        }
        Problem::NeedsRestrict(_) => {
            let psql = if client.version.is_empty() {
                "this psql"
            } else {
                &client.version
            };
            format!(
                "{r}. {psql} cannot refuse meta-commands itself (psql 13.22, 14.19, 15.14, 16.10, 17.6 and later can, with \\restrict), so runbot's check must be sure: install a newer PostgreSQL client, or set app_database.psql to one."
            )
        }
    }
}

/// Clips a query for a table cell: one line, at most `max` characters.
fn clip_query(q: &str, max: usize) -> String {
    // Other sessions' statements can hold passwords (ALTER ROLE … PASSWORD '…') or tokens.
    let one_line = q.split_whitespace().collect::<Vec<_>>().join(" ");
    let one_line = crate::domain::redact::redact(&one_line).into_owned();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut s: String = one_line.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        duration::short(Duration::from_secs_f64(s.max(0.0)))
    }
}

/// How one column of a check's answer becomes a table cell.
#[derive(Clone, Copy)]
enum Cell {
    Text(&'static str),
    /// A process id (int4).
    Pid(&'static str),
    /// A count (int8).
    Count(&'static str),
    /// Seconds (float8), shown as `2.5s` or `3m 10s`.
    Seconds(&'static str),
    /// Statement text (or a name), on one line, secrets masked, clipped to this many characters.
    Query(&'static str, usize),
    /// A row estimate (float8); -1 means never vacuumed or analyzed, so no estimate yet.
    Estimate(&'static str),
}

/// A check's rows as table cells, column by column.
fn cells(
    rows: &[sqlx::postgres::PgRow],
    columns: &[Cell],
) -> Result<Vec<Vec<String>>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    Ok(match *c {
                        Cell::Text(name) => r.try_get::<String, _>(name)?,
                        Cell::Pid(name) => r.try_get::<i32, _>(name)?.to_string(),
                        Cell::Count(name) => r.try_get::<i64, _>(name)?.to_string(),
                        Cell::Seconds(name) => seconds(r.try_get(name)?),
                        Cell::Query(name, max) => clip_query(&r.try_get::<String, _>(name)?, max),
                        Cell::Estimate(name) => match r.try_get::<f64, _>(name)? {
                            est if est < 0.0 => "?".into(),
                            est => format!("{est:.0}"),
                        },
                    })
                })
                .collect()
        })
        .collect()
}

async fn run_check(db: &mut PgConnection, check: Check) -> Result<Table, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL statement_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    let header = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let table = match check {
        Check::Connections => {
            let max: String = sqlx::query_scalar("SELECT current_setting('max_connections')")
                .fetch_one(&mut *tx)
                .await?;
            let rows = sqlx::query(
                "SELECT coalesce(state, '?') AS state, coalesce(usename, '-') AS usename, \
                        coalesce(datname, '-') AS datname, count(*) AS n \
                 FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 GROUP BY 1, 2, 3 ORDER BY n DESC, 1, 2, 3",
            )
            .fetch_all(&mut *tx)
            .await?;
            let total = rows
                .iter()
                .map(|r| r.try_get::<i64, _>("n"))
                .sum::<Result<i64, _>>()?;
            let rows = cells(
                &rows,
                &[
                    Cell::Text("state"),
                    Cell::Text("usename"),
                    Cell::Text("datname"),
                    Cell::Count("n"),
                ],
            )?;
            let pct = max
                .parse::<f64>()
                .ok()
                .filter(|m| *m > 0.0)
                .map(|m| format!(" ({:.0}%)", total as f64 * 100.0 / m))
                .unwrap_or_default();
            Table {
                summary: format!("{total} of max_connections = {max} connections in use{pct}."),
                header: header(&["STATE", "USER", "DATABASE", "COUNT"]),
                rows,
            }
        }
        Check::Slow => {
            let rows = sqlx::query(
                "SELECT pid, coalesce(usename, '-') AS usename, \
                        extract(epoch FROM clock_timestamp() - query_start)::float8 AS secs, \
                        coalesce(wait_event_type || ':' || wait_event, '-') AS wait, \
                        coalesce(query, '') AS query \
                 FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND state = 'active' \
                   AND pid <> pg_backend_pid() \
                   AND query_start < clock_timestamp() - interval '1 second' \
                 ORDER BY query_start LIMIT 20",
            )
            .fetch_all(&mut *tx)
            .await?;
            let rows = cells(
                &rows,
                &[
                    Cell::Pid("pid"),
                    Cell::Text("usename"),
                    Cell::Seconds("secs"),
                    Cell::Text("wait"),
                    Cell::Query("query", 60),
                ],
            )?;
            Table {
                summary: format!(
                    "{} quer{} running for over 1 s.",
                    rows.len(),
                    if rows.len() == 1 { "y" } else { "ies" }
                ),
                header: header(&["PID", "USER", "FOR", "WAIT", "QUERY"]),
                rows,
            }
        }
        Check::Sizes => {
            let total: String =
                sqlx::query_scalar("SELECT pg_size_pretty(pg_database_size(current_database()))")
                    .fetch_one(&mut *tx)
                    .await?;
            let rows = sqlx::query(
                "SELECT n.nspname || '.' || c.relname AS name, \
                        pg_size_pretty(pg_total_relation_size(c.oid)) AS total, \
                        pg_size_pretty(pg_relation_size(c.oid)) AS heap, \
                        pg_size_pretty(pg_indexes_size(c.oid)) AS indexes, \
                        c.reltuples::float8 AS est \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'm') \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg_toast%' \
                 ORDER BY pg_total_relation_size(c.oid) DESC, 1 LIMIT 15",
            )
            .fetch_all(&mut *tx)
            .await?;
            let rows = cells(
                &rows,
                &[
                    Cell::Query("name", 40),
                    Cell::Text("total"),
                    Cell::Text("heap"),
                    Cell::Text("indexes"),
                    Cell::Estimate("est"),
                ],
            )?;
            Table {
                summary: format!(
                    "The database is {total}; its {} largest table{}:",
                    rows.len(),
                    crate::domain::text::plural(rows.len())
                ),
                header: header(&["TABLE", "TOTAL", "DATA", "INDEXES", "~ROWS"]),
                rows,
            }
        }
        Check::Locks => {
            let rows = sqlx::query(
                "SELECT w.pid, coalesce(w.usename, '-') AS usename, \
                        l.mode || ' on ' || coalesce(l.relation::regclass::text, l.locktype) AS wants, \
                        coalesce(extract(epoch FROM clock_timestamp() - w.query_start)::float8, 0) AS secs, \
                        array_to_string(pg_blocking_pids(w.pid), ',') AS blockers, \
                        coalesce((SELECT string_agg(b.pid || ': ' || coalesce(b.query, ''), ' | ') \
                                  FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(w.pid))), '') AS blocker_query, \
                        coalesce(w.query, '') AS query \
                 FROM pg_locks l JOIN pg_stat_activity w ON w.pid = l.pid \
                 WHERE NOT l.granted ORDER BY secs DESC LIMIT 20",
            )
            .fetch_all(&mut *tx)
            .await?;
            let rows = cells(
                &rows,
                &[
                    Cell::Pid("pid"),
                    Cell::Text("usename"),
                    Cell::Text("wants"),
                    Cell::Seconds("secs"),
                    Cell::Text("blockers"),
                    Cell::Query("blocker_query", 40),
                    Cell::Query("query", 40),
                ],
            )?;
            Table {
                summary: format!(
                    "{} lock{} waiting.",
                    rows.len(),
                    crate::domain::text::plural(rows.len())
                ),
                header: header(&[
                    "PID",
                    "USER",
                    "WANTS",
                    "WAITING",
                    "BLOCKED BY",
                    "BLOCKER'S QUERY",
                    "QUERY",
                ]),
                rows,
            }
        }
    };
    tx.rollback().await?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_are_strict_and_carry_their_time() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 3, 15, 0).unwrap();
        assert_eq!(backup_name(t), "backup_20261127_031500.sql.gz");
        assert_eq!(backup_time("backup_20261127_031500.sql.gz"), Some(t));
        for bad in [
            "../backup_20261127_031500.sql.gz",
            "backup_20261127_031500.sql.gz/..",
            "backup_20261127_031500.sql",
            ".backup_20261127_031500.partial",
            "backup_20261399_031500.sql.gz",
        ] {
            assert_eq!(backup_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn psql_has_restrict_from_the_minor_releases_that_added_it() {
        for (v, yes) in [
            ("psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", true),
            ("psql (PostgreSQL) 15.14", true),
            ("psql (PostgreSQL) 15.13", false),
            ("psql (PostgreSQL) 13.22", true),
            ("psql (PostgreSQL) 14.18", false),
            (
                "psql (PostgreSQL) 16.10 (Ubuntu 16.10-0ubuntu0.24.04.1)",
                true,
            ),
            ("psql (PostgreSQL) 17.5", false),
            ("psql (PostgreSQL) 17.6", true),
            ("psql (PostgreSQL) 18.0", true),
            ("psql (PostgreSQL) 18beta1", false),
            ("psql (PostgreSQL) 12.22", false),
            ("psql (PostgreSQL) 9.6.24", false),
            ("", false),
            ("psql 15.18", false),
        ] {
            assert_eq!(has_restrict(v), yes, "{v}");
        }
    }

    #[test]
    fn scrub_masks_the_password_wherever_it_appears() {
        let c = PgUrl::parse("postgres://app:s3cretpw@db/app").unwrap();
        let out = c.scrub("FATAL: password s3cretpw rejected for postgres://app:s3cretpw@db/app");
        assert!(!out.contains("s3cretpw"), "{out}");
    }
}
