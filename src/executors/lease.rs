//! Locks that hold across replicas and restarts, as a guard: taken (waiting a bounded time, and
//! saying so), renewed on a heartbeat while held, released when done, also when the task
//! panics or is dropped. The rows are in the store ([`crate::store::Store::take_lock`]), so every
//! runbot on the database sees them; a runbot killed while holding one stops renewing it, and
//! the next one to ask takes it over once it is `deploy.lock_stale_secs` old by the database's
//! clock.
//!
//! The locks: `stack:<docker.project>` (a deploy or rollback for its whole run, `/restart`,
//! `/scale`, `/restore`) and `database:<target>` (`/backup`, `/restore`, a deploy's backup or
//! restore step). Always the stack's before the database's, never the other way, so two
//! requests never wait for each other.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{reply, Ctx};
use crate::domain::duration;
use crate::domain::names::ProjectName;
use crate::store::{LockHolder, Store, TakeLock};

/// How often a waiting request asks again.
const POLL: Duration = Duration::from_millis(500);
/// How often at most the waiting message is edited: each edit counts against chat rate limits.
const SAY_EVERY: Duration = Duration::from_secs(5);

/// What to lock, and how to name who holds it and what waits.
pub struct Want {
    /// `stack:saas`, `database:app@db:5432/app`.
    pub name: String,
    /// The locked thing in words: "the stack saas".
    pub what: String,
    /// Who will hold it, in words: "/restart backend by Bruno".
    pub holder: String,
    /// What the request does once it holds it: "restarting backend".
    pub doing: String,
}

/// What the locks need: the database that holds them, how long to wait and when a holder is
/// stale (`deploy.*`), and the stack (`docker.project`) whose lock changes of it take.
#[derive(Clone)]
pub struct Locks {
    store: Store,
    /// `deploy.lock_wait_secs`.
    wait: Duration,
    /// `deploy.lock_stale_secs`.
    stale_secs: u64,
    /// `deploy.heartbeat_secs`.
    heartbeat: Duration,
    /// `docker.project`; None when no stack is configured.
    stack: Option<ProjectName>,
}

impl Locks {
    pub fn new(
        store: Store,
        deploy: &crate::config::DeploySettings,
        stack: Option<ProjectName>,
    ) -> Locks {
        Locks {
            store,
            wait: Duration::from_secs(deploy.lock_wait_secs),
            stale_secs: deploy.lock_stale_secs,
            heartbeat: Duration::from_secs(deploy.heartbeat_secs.max(1)),
            stack,
        }
    }

    /// The stack's lock, for `holder` to do `doing`. None when no stack is configured
    /// (`docker.project`): there is nothing to lock.
    pub fn stack(&self, holder: String, doing: String) -> Option<Want> {
        let project = self.stack.as_ref()?;
        Some(Want {
            name: format!("stack:{project}"),
            what: format!("the stack {project}"),
            holder,
            doing,
        })
    }

    /// Takes the lock for a plain command, saying in its message while it waits.
    pub async fn for_command(&self, ctx: &Ctx<'_>, want: Want) -> Result<Lease, String> {
        let progress = ctx.progress.clone();
        Lease::acquire(self, want, ctx.invocation_id, move |line| {
            let progress = progress.clone();
            async move {
                if let Some(p) = progress {
                    if let Err(e) = p.edit(reply(line, false)).await {
                        tracing::debug!(error = %e, "could not say that the request waits");
                    }
                }
            }
        })
        .await
    }
}

/// The application database's lock.
pub fn database(
    db: &crate::executors::database::engine::AppDatabase,
    holder: String,
    doing: String,
) -> Want {
    Want {
        name: format!("database:{}", db.target()),
        what: format!("database {}", db.target()),
        holder,
        doing,
    }
}

/// "/restart backend by Bruno": who holds a lock a plain command takes.
pub fn holder(ctx: &Ctx<'_>) -> String {
    format!("{} by {}", request_line(ctx), ctx.actor.name)
}

/// `/restart backend`: the command and its main argument, as the holder's name.
fn request_line(ctx: &Ctx<'_>) -> String {
    let main = ["service", "backup", "tag"]
        .iter()
        .find_map(|k| ctx.text(k))
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    format!("/{}{main}", ctx.spec.name)
}

/// A held lock. Renewed every `deploy.heartbeat_secs` until released or dropped.
pub struct Lease {
    store: Store,
    name: String,
    owner: String,
    lost: Arc<AtomicBool>,
    beat: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    /// Takes the lock, waiting at most `deploy.lock_wait_secs` while another request holds it;
    /// `waiting` is told so (now, then every few seconds) in a sentence for the requester. At
    /// the bound, the error names the holder and says nothing was changed.
    pub async fn acquire<F, Fut>(
        locks: &Locks,
        want: Want,
        invocation_id: &str,
        mut waiting: F,
    ) -> Result<Lease, String>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let invocation_id = Some(invocation_id).filter(|i| !i.is_empty());
        let started = Instant::now();
        let deadline = started + locks.wait;
        let mut said: Option<Instant> = None;
        loop {
            let taken = locks
                .store
                .take_lock(
                    &want.name,
                    &owner,
                    &want.holder,
                    invocation_id,
                    locks.stale_secs,
                )
                .await
                .map_err(|e| {
                    format!(
                        "the lock of {} cannot be taken: the database answered {e}. Nothing was changed.",
                        want.what
                    )
                })?;
            let holder = match taken {
                TakeLock::Taken => {
                    if said.is_some() {
                        tracing::info!(lock = %want.name, waited = ?started.elapsed(), "took the lock after waiting");
                    }
                    return Ok(Lease::start(locks, want.name, owner));
                }
                TakeLock::Held(h) => h,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "{} still holds {} (running {}); runbot waited {} (deploy.lock_wait_secs) and gave up {}. Nothing was changed: try again once it is done.",
                    holder.holder,
                    want.what,
                    duration::short(holder.held),
                    duration::short(started.elapsed()),
                    want.doing
                ));
            }
            if said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
                waiting(waiting_line(&holder, &want.doing)).await;
                said = Some(Instant::now());
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    fn start(locks: &Locks, name: String, owner: String) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let beat = tokio::spawn(heartbeat(
            locks.store.clone(),
            name.clone(),
            owner.clone(),
            locks.heartbeat,
            lost.clone(),
        ));
        Lease {
            store: locks.store.clone(),
            name,
            owner,
            lost,
            beat,
            released: false,
        }
    }

    /// Set once another runbot took the lock over (this one's heartbeat did not reach the
    /// database for `deploy.lock_stale_secs`).
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Runs `work` while holding the lock, then releases it, whatever `work` came to.
    pub async fn during<T>(self, work: impl Future<Output = T>) -> T {
        let done = work.await;
        self.release().await;
        done
    }

    pub async fn release(mut self) {
        self.beat.abort();
        self.released = true;
        match self.store.release_lock(&self.name, &self.owner).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(lock = %self.name, "the lock had been taken over by another runbot before it was released")
            }
            Err(e) => {
                tracing::warn!(error = %e, lock = %self.name, "could not release a lock; it frees itself once its heartbeat is stale")
            }
        }
    }
}

impl Drop for Lease {
    /// Also when the request panics or is dropped: a heartbeat left running would hold the
    /// lock forever, and one never released would hold it until it goes stale.
    fn drop(&mut self) {
        self.beat.abort();
        if self.released {
            return;
        }
        let (store, name, owner) = (self.store.clone(), self.name.clone(), self.owner.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release_lock(&name, &owner).await {
                    tracing::warn!(error = %e, lock = %name, "could not release a dropped lock; it frees itself once its heartbeat is stale");
                }
            });
        }
    }
}

/// "⏳ Waiting for deploy #3 of v2 by Dana (running 40 s) to finish before restarting backend…"
fn waiting_line(h: &LockHolder, doing: &str) -> String {
    format!(
        "⏳ Waiting for {} (running {}) to finish before {doing}…",
        h.holder,
        duration::short(h.held)
    )
}

async fn heartbeat(
    store: Store,
    name: String,
    owner: String,
    every: Duration,
    lost: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.renew_lock(&name, &owner).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(lock = %name, "lost a lock: another runbot took it over");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => tracing::warn!(error = %e, lock = %name, "could not renew a lock"),
        }
    }
}
