//! The single writer: webhooks queue here and are stored in batches, one transaction each.
//!
//! Under load, whatever arrives while a transaction commits goes into the next one, so the cost
//! of a commit (and its fsync) is shared by many webhooks while each still waits for its own
//! data to be durable before it is answered.

use std::time::Instant;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use super::{is_unavailable, Receipt, Store};
use crate::alerts::IncomingGroup;

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

/// A handle to the writer task. Cheap to clone; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

/// Completes when the writer has answered every queued webhook and stopped.
pub type WriterDone = oneshot::Receiver<()>;

impl Writer {
    /// Starts the writer on a thread of its own, so its turns between database round trips
    /// never wait behind the HTTP tasks in the shared runtime's queue.
    pub fn spawn(store: Store, batch_max: usize) -> std::io::Result<(Writer, WriterDone)> {
        let (tx, rx) = mpsc::channel(batch_max * 4);
        let (done_tx, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("runbot-writer".into())
            .spawn(move || {
                runtime.block_on(run(store, rx, batch_max));
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

fn classify_error(e: &sqlx::Error) -> WriteError {
    if is_unavailable(e) {
        WriteError::Unavailable(e.to_string())
    } else {
        WriteError::Refused(e.to_string())
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, batch_max: usize) {
    let mut jobs: Vec<Job> = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut jobs, batch_max).await > 0 {
        let mut groups: Vec<IncomingGroup> = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut probes = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Ingest(g, reply) => {
                    groups.push(*g);
                    replies.push(reply);
                }
                Job::Probe(reply) => probes.push(reply),
            }
        }
        if !groups.is_empty() {
            write_batch(&store, &groups, replies).await;
        }
        if !probes.is_empty() {
            let result = store.probe_write().await.map_err(|e| classify_error(&e));
            for p in probes {
                let _ = p.send(result.clone());
            }
        }
    }
    tracing::debug!("writer stopped: every queued webhook was answered");
}

async fn write_batch(
    store: &Store,
    groups: &[IncomingGroup],
    replies: Vec<oneshot::Sender<Result<Receipt, WriteError>>>,
) {
    let started = Instant::now();
    let refs: Vec<&IncomingGroup> = groups.iter().collect();
    let result = store.ingest(&refs, Utc::now()).await;
    metrics::histogram!("runbot_store_batch_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("runbot_store_batch_webhooks").record(groups.len() as f64);
    match result {
        Ok(receipts) => {
            for (reply, receipt) in replies.into_iter().zip(receipts) {
                // The caller may have gone away; its data is stored all the same.
                let _ = reply.send(Ok(receipt));
            }
        }
        Err(e) if groups.len() > 1 && !is_unavailable(&e) => {
            // One webhook's data spoiled the batch: store the others alone, so only it fails.
            tracing::warn!(error = %e, webhooks = groups.len(), "batch refused; storing its webhooks one by one");
            for (g, reply) in groups.iter().zip(replies) {
                let result = store
                    .ingest(&[g], Utc::now())
                    .await
                    .map(|mut r| r.remove(0))
                    .map_err(|e| classify_error(&e));
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let err = classify_error(&e);
            tracing::error!(error = %e, webhooks = groups.len(), "could not store webhooks");
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
