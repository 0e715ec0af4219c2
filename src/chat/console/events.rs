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
/// Streams one process serves at once, and per person (or token): each costs a task and a
/// place in the channel, and anyone signed in may open them.
pub const STREAMS_MAX: usize = 2000;
pub const STREAMS_PER_VIEWER: usize = 250;
/// How often the follower checks that the store's ids did not go back (a restored database).
const HEAD_CHECK: Duration = Duration::from_secs(5);
/// The kind of the entry the follower hands pages when the store's ids went back: they reload.
pub const RESYNC: &str = "resync";

/// What kind of thing an entry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An alert group's card, new or changed.
    Card,
    /// An answer to a request (a result, a prompt, a refusal), or a new version of one.
    Reply,
    /// A message to everyone: a deploy started or ended, a block expired.
    Announcement,
    /// A person paged: for their account alone.
    Page,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Card => "card",
            Kind::Reply => "reply",
            Kind::Announcement => "announcement",
            Kind::Page => "page",
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

impl<'a> Publish<'a> {
    /// An entry everyone signed in sees, answering no request.
    pub fn for_everyone(kind: Kind, group_id: Option<i64>, data: &'a serde_json::Value) -> Self {
        Publish {
            kind,
            group_id,
            audience: None,
            reference: None,
            prompt: None,
            data,
        }
    }
}

/// The feed of one process.
pub struct Feed {
    store: Store,
    tx: broadcast::Sender<Entry>,
    wake: Notify,
    /// The newest id handed to pages.
    head: AtomicI64,
    /// Cancelled when the server stops taking requests: streams end, so a shutdown need not
    /// wait `http.shutdown_timeout_secs` for pages that would never leave by themselves.
    closing: tokio_util::sync::CancellationToken,
    /// Streams open now, per viewer.
    streams: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Appends go one at a time. On SQLite, appends on several of the pool's connections at once
    /// collide on the write lock, and SQLite's busy handler sleeps 1, 2, 5… up to 100 ms between
    /// tries; queued here, an append waits only for the ones ahead of it.
    append: tokio::sync::Mutex<()>,
}

/// A stream's place among those a process serves; given back when the stream ends.
pub struct StreamSlot {
    feed: Arc<Feed>,
    viewer: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.feed.streams.lock().expect("never poisoned");
        if let Some(n) = streams.get_mut(&self.viewer) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.viewer);
            }
        }
    }
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
            closing: Default::default(),
            streams: Default::default(),
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

    /// Ends every stream (the server is stopping); a page reconnects to another replica, or
    /// to this one once it is back, and resumes where it was.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Cancelled once [`Feed::close`] is called.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.closing.clone()
    }

    /// A place for one more stream of `viewer`, or why not.
    pub fn admit(self: &Arc<Self>, viewer: &str) -> Result<StreamSlot, &'static str> {
        let mut streams = self.streams.lock().expect("never poisoned");
        let total: usize = streams.values().sum();
        if total >= STREAMS_MAX {
            return Err("runbot serves as many live streams as it can now; try again later");
        }
        let mine = streams.entry(viewer.to_string()).or_default();
        if *mine >= STREAMS_PER_VIEWER {
            return Err("too many live streams open for you: close some tabs");
        }
        *mine += 1;
        Ok(StreamSlot {
            feed: self.clone(),
            viewer: viewer.to_string(),
        })
    }

    /// Pages connected now.
    pub fn pages(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Follows the store until stopped: hands every new entry, in order, to the pages.
    pub async fn follow(self: Arc<Self>) {
        let mut pause = FOLLOW_POLL;
        let mut failing = false;
        let mut head_checked = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            metrics::gauge!(crate::telemetry::CONSOLE_STREAMS).set(self.pages() as f64);
            match self.pass(&mut head_checked).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("the console's feed can be read again");
                    }
                    failing = false;
                    pause = FOLLOW_POLL;
                }
                Err(e) => {
                    // Pages wait; nothing is lost, the entries are read once it answers. Said
                    // once per outage, and tried less often while it lasts.
                    crate::telemetry::worker_error("console-feed");
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the console's feed; retrying");
                    }
                    failing = true;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Hands pages what was appended since the head; and, now and then, notices when the
    /// store's ids went back (a restored database) and sends every page a resync.
    async fn pass(&self, head_checked: &mut tokio::time::Instant) -> Result<(), sqlx::Error> {
        loop {
            let rows = self
                .store
                .console_events_after(self.head(), READ_STEP)
                .await?;
            let full = rows.len() as i64 == READ_STEP;
            let empty = rows.is_empty();
            for row in rows {
                // The head moves first: a page that reads it after this has the entry behind
                // it, one that read it before gets the entry from the channel.
                self.head.store(row.id, Ordering::Release);
                // Nobody listening is not an error: the entry is in the store.
                let _ = self.tx.send(Arc::new(row));
            }
            if empty && head_checked.elapsed() >= HEAD_CHECK {
                *head_checked = tokio::time::Instant::now();
                let stored = self.store.console_head().await?;
                if stored < self.head() {
                    tracing::warn!(
                        stored,
                        followed = self.head(),
                        "the console's feed went back (a restored database?): pages reload"
                    );
                    self.head.store(stored, Ordering::Release);
                    let _ = self.tx.send(Arc::new(ConsoleEventRow {
                        id: stored,
                        at: crate::domain::format_time(chrono::Utc::now()),
                        kind: RESYNC.into(),
                        group_id: None,
                        audience: None,
                        reference: None,
                        prompt: None,
                        data: "{}".into(),
                    }));
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}
