//! The console's live feed: what the console shows (cards, answers, announcements) is appended
//! to the store, and every process follows the store and hands new entries to its connected
//! pages. The store is the truth, so any replica serves any page, and a page that reconnects
//! with the last id it saw gets exactly what it missed.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use crate::store::{ConsoleEventRow, NewConsoleEvent, Store};

/// How often a process looks for entries other replicas appended (its own wake it at once).
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Entries read from the store at a time.
const READ_STEP: i64 = 500;
/// Entries a slow page may fall behind before it reads what it missed from the store instead.
const CHANNEL: usize = 1024;

/// What kind of thing an entry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An alert group's card, new or changed.
    Card,
    /// An answer to a request (a result, a prompt, a refusal), or a new version of one.
    Reply,
    /// A message to everyone: a deploy started or ended, a block expired.
    Announcement,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Card => "card",
            Kind::Reply => "reply",
            Kind::Announcement => "announcement",
        }
    }
}

/// One entry as pages get it.
pub type Entry = Arc<ConsoleEventRow>;

impl ConsoleEventRow {
    /// Whether `viewer` (an actor's user id; None for `console.token`) may see this entry.
    pub fn visible_to(&self, viewer: Option<&str>) -> bool {
        match &self.audience {
            None => true,
            Some(a) => viewer == Some(a.as_str()),
        }
    }
}

/// An entry to append.
pub struct Publish<'a> {
    pub kind: Kind,
    pub group_id: Option<i64>,
    /// Who alone may see it; None: everyone signed in.
    pub audience: Option<&'a str>,
    /// The request it answers.
    pub reference: Option<&'a str>,
    /// The pending request whose buttons it carries.
    pub prompt: Option<&'a str>,
    pub data: &'a serde_json::Value,
}

/// The feed of one process.
pub struct Feed {
    store: Store,
    tx: broadcast::Sender<Entry>,
    wake: Notify,
    /// The newest id handed to pages.
    head: AtomicI64,
    /// Appends go one at a time. On SQLite, appends on several of the pool's connections at once
    /// collide on the write lock, and SQLite's busy handler sleeps 1, 2, 5… up to 100 ms between
    /// tries; queued here, an append waits only for the ones ahead of it.
    append: tokio::sync::Mutex<()>,
}

impl Feed {
    /// Starts at the store's newest entry: pages opened from now on get what follows.
    pub async fn new(store: Store) -> Result<Arc<Feed>, sqlx::Error> {
        let head = store.console_head().await?;
        let (tx, _) = broadcast::channel(CHANNEL);
        Ok(Arc::new(Feed {
            store,
            tx,
            wake: Notify::new(),
            head: AtomicI64::new(head),
            append: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The newest id handed to pages: a page that starts now resumes after it.
    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    /// Appends an entry; the follower hands it to pages at once.
    pub async fn publish(&self, p: Publish<'_>) -> Result<i64, sqlx::Error> {
        let at = crate::domain::format_time(chrono::Utc::now());
        let data = p.data.to_string();
        let one_at_a_time = self.append.lock().await;
        let id = self
            .store
            .add_console_event(&NewConsoleEvent {
                at: &at,
                kind: p.kind.as_str(),
                group_id: p.group_id,
                audience: p.audience,
                reference: p.reference,
                prompt: p.prompt,
                data: &data,
            })
            .await?;
        drop(one_at_a_time);
        self.wake.notify_one();
        Ok(id)
    }

    /// New entries as they come; subscribe before reading what came before, so nothing falls
    /// between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Entry> {
        self.tx.subscribe()
    }

    /// Pages connected now.
    pub fn pages(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Follows the store until stopped: hands every new entry, in order, to the pages.
    pub async fn follow(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
            loop {
                let head = self.head();
                let rows = match self.store.console_events_after(head, READ_STEP).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        // Pages wait; nothing is lost, the entries are read once it answers.
                        crate::telemetry::worker_error("console-feed");
                        tracing::warn!(error = %e, "cannot read the console's feed; retrying");
                        break;
                    }
                };
                let full = rows.len() as i64 == READ_STEP;
                for row in rows {
                    // The head moves first: a page that reads it after this has the entry
                    // behind it, one that read it before gets the entry from the channel.
                    self.head.store(row.id, Ordering::Release);
                    // Nobody listening is not an error: the entry is in the store.
                    let _ = self.tx.send(Arc::new(row));
                }
                if !full {
                    break;
                }
            }
        }
    }
}
