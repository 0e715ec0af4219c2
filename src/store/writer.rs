//! The single writer: webhooks queue here and are stored in batches, one transaction each.
//!
//! Under load, whatever arrives while a transaction commits goes into the next one, so the cost
//! of a commit is shared by many webhooks while each still waits for its own data to be
//! committed before it is answered. The writer has a thread of its own: SQLite is written from
//! it directly; PostgreSQL through sqlx on a small runtime owned by the thread.

use std::time::Instant;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use super::sqlite_writer::SqliteWriter;
use super::{is_unavailable, Receipt, Store};
use crate::domain::alert::{IncomingGroup, Lifecycle};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The database cannot be reached or is locked: worth retrying later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused this webhook's data.
    #[error("the database refused the data: {0}")]
    Refused(String),
    /// runbot is shutting down.
    #[error("runbot is shutting down")]
    Closed,
}

enum Job {
    Ingest(
        Box<IncomingGroup>,
        oneshot::Sender<Result<Receipt, WriteError>>,
    ),
    Probe(oneshot::Sender<Result<(), WriteError>>),
}

/// A handle to the writer. Cheap to clone; the writer stops when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

/// Completes when the writer has answered every queued webhook and stopped.
pub type WriterDone = oneshot::Receiver<()>;

/// How the writer thread reaches the database.
enum Backend {
    Sqlite(SqliteWriter),
    Postgres(Store, tokio::runtime::Runtime),
}

impl Backend {
    fn ingest(
        &mut self,
        batch: &[&IncomingGroup],
        lifecycle: Lifecycle,
    ) -> Result<Vec<Receipt>, (WriteError, bool)> {
        match self {
            Backend::Sqlite(w) => w.ingest(batch, Utc::now(), lifecycle).map_err(sqlite_error),
            Backend::Postgres(store, rt) => rt
                .block_on(store.ingest(batch, Utc::now(), lifecycle))
                .map_err(|e| sqlx_error(&e)),
        }
    }

    fn probe(&mut self) -> Result<(), WriteError> {
        match self {
            Backend::Sqlite(w) => w.probe().map_err(|e| sqlite_error(e).0),
            Backend::Postgres(store, rt) => rt
                .block_on(store.probe_write())
                .map_err(|e| sqlx_error(&e).0),
        }
    }
}

/// The error, and whether it concerns the whole database rather than this data.
fn sqlx_error(e: &sqlx::Error) -> (WriteError, bool) {
    if is_unavailable(e) {
        (WriteError::Unavailable(e.to_string()), true)
    } else {
        (WriteError::Refused(e.to_string()), false)
    }
}

fn sqlite_error(e: rusqlite::Error) -> (WriteError, bool) {
    use rusqlite::ErrorCode::*;
    let whole_database = matches!(
        e.sqlite_error_code(),
        Some(
            DatabaseBusy
                | DatabaseLocked
                | DiskFull
                | SystemIoFailure
                | CannotOpen
                | ReadOnly
                | OutOfMemory
        )
    );
    if whole_database {
        (WriteError::Unavailable(e.to_string()), true)
    } else {
        (WriteError::Refused(e.to_string()), false)
    }
}

impl Writer {
    /// Starts the writer thread, which runs `lifecycle` on each webhook under the store's locks.
    pub fn spawn(
        store: Store,
        batch_max: usize,
        lifecycle: Lifecycle,
    ) -> anyhow::Result<(Writer, WriterDone)> {
        let backend = match store.sqlite_path() {
            Some(path) => Backend::Sqlite(SqliteWriter::open(
                path,
                store.wal_shared(),
                store.chat_platforms(),
            )?),
            None => Backend::Postgres(
                store,
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
            ),
        };
        let (tx, rx) = mpsc::channel(batch_max * 4);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("runbot-writer".into())
            .spawn(move || {
                run(backend, rx, batch_max, lifecycle);
                let _ = done_tx.send(());
            })?;
        Ok((Writer { tx }, done))
    }

    /// Stores one webhook; returns once it is committed.
    pub async fn ingest(&self, group: IncomingGroup) -> Result<Receipt, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Ingest(Box::new(group), reply))
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?
    }

    /// Checks that a write would succeed now.
    pub async fn probe(&self) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Probe(reply))
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?
    }
}

fn run(mut backend: Backend, mut rx: mpsc::Receiver<Job>, batch_max: usize, lifecycle: Lifecycle) {
    let (answerer, answers) = std::sync::mpsc::channel::<Answers>();
    let answer_thread = std::thread::Builder::new()
        .name("runbot-answers".into())
        .spawn(move || answer(answers))
        .ok();
    while let Some(first) = rx.blocking_recv() {
        let mut groups: Vec<IncomingGroup> = Vec::new();
        let mut replies = Vec::new();
        let mut probes = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Ingest(g, reply) => {
                    groups.push(*g);
                    replies.push(reply);
                }
                Job::Probe(reply) => probes.push(reply),
            }
            if groups.len() + probes.len() < batch_max {
                next = rx.try_recv().ok();
            }
        }
        if !groups.is_empty() {
            write_batch(&answerer, &mut backend, lifecycle, &groups, replies);
        }
        if let Backend::Sqlite(w) = &mut backend {
            w.finish_checkpoint();
        }
        if !probes.is_empty() {
            let result = backend.probe();
            for p in probes {
                let _ = p.send(result.clone());
            }
        }
    }
    drop(answerer);
    if let Some(t) = answer_thread {
        let _ = t.join();
    }
    tracing::debug!("writer stopped: every queued webhook was answered");
}

type Answers = Vec<(oneshot::Sender<Result<Receipt, WriteError>>, Receipt)>;

/// Hands stored webhooks their receipts. The caller may have gone away; its data is stored
/// all the same.
fn answer(rx: std::sync::mpsc::Receiver<Answers>) {
    for answers in rx {
        for (reply, receipt) in answers {
            let _ = reply.send(Ok(receipt));
        }
    }
}

fn write_batch(
    answerer: &std::sync::mpsc::Sender<Answers>,
    backend: &mut Backend,
    lifecycle: Lifecycle,
    groups: &[IncomingGroup],
    replies: Vec<oneshot::Sender<Result<Receipt, WriteError>>>,
) {
    let started = Instant::now();
    let refs: Vec<&IncomingGroup> = groups.iter().collect();
    let result = backend.ingest(&refs, lifecycle);
    metrics::histogram!("runbot_store_batch_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("runbot_store_batch_webhooks").record(groups.len() as f64);
    match result {
        Ok(receipts) => {
            // Each answer wakes an HTTP task, a system call apiece; another thread makes them
            // so the writer can start on the next batch.
            let answers: Vec<_> = replies.into_iter().zip(receipts).collect();
            if let Err(std::sync::mpsc::SendError(answers)) = answerer.send(answers) {
                for (reply, receipt) in answers {
                    let _ = reply.send(Ok(receipt));
                }
            }
        }
        Err((e, false)) if groups.len() > 1 => {
            // One webhook's data spoiled the batch: store the others alone, so only it fails.
            tracing::warn!(error = %e, webhooks = groups.len(), "batch refused; storing its webhooks one by one");
            for (g, reply) in refs.iter().zip(replies) {
                let result = backend
                    .ingest(&[g], lifecycle)
                    .map(|mut r| r.remove(0))
                    .map_err(|(e, _)| e);
                let _ = reply.send(result);
            }
        }
        Err((e, _)) => {
            tracing::error!(error = %e, webhooks = groups.len(), "could not store webhooks");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
