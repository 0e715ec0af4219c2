//! Background work with a lifetime. Every loop runbot keeps (the outbox, the sweeps, the nginx
//! follower, announcements, metrics upkeep, …) is a named worker started on one task tracker and
//! stopped by one cancellation token, so a shutdown can stop them all and know when they are
//! gone, instead of aborting handles it may have lost track of. (The webhook writer is a
//! thread of its own, `store::writer`: it ends when the HTTP server's handles to it are gone,
//! and the shutdown waits for that first. Commands run on the dispatcher's own tracker.)
//!
//! Workers do not die quietly either. A worker that panics (a remote party's odd answer meeting
//! a bug) is logged with its panic message, counted in `runbot_worker_restarts_total{worker}`,
//! and started again after a pause that doubles from 1 s to 60 s while it keeps dying. Without
//! this, one panic in the outbox stopped every card for the rest of the process's life, and
//! nobody was told.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first pause before a restart, and the longest.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// A worker that ran this long before dying starts again from the first pause.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The background workers of one runbot process.
#[derive(Clone, Default)]
pub struct Workers {
    tracker: TaskTracker,
    stop: CancellationToken,
}

/// Aborts the task when dropped, so a supervisor that stops also stops the worker it watches.
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Workers {
    pub fn new() -> Workers {
        Workers::default()
    }

    /// Runs `make()` as the worker `name`, and again each time it panics, until [`Workers::stop`].
    /// `name` is a metric label: a fixed name from the code, never anything from outside. A
    /// worker that returns is done and not started again.
    pub fn spawn<F, Fut>(&self, name: &'static str, mut make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tracker, stop) = (self.tracker.clone(), self.stop.clone());
        self.tracker.spawn(async move {
            let mut pause = FIRST_PAUSE;
            loop {
                let started = Instant::now();
                let mut worker = Owned(tracker.spawn(make()));
                let ended = tokio::select! {
                    ended = &mut worker.0 => ended,
                    // Dropping `worker` aborts it; the tracker waits until it is gone.
                    () = stop.cancelled() => return,
                };
                match ended {
                    Ok(()) => return,
                    Err(e) if e.is_panic() => {
                        let message = panic_message(e.into_panic());
                        if started.elapsed() >= HEALTHY_RUN {
                            pause = FIRST_PAUSE;
                        }
                        metrics::counter!(crate::telemetry::WORKER_RESTARTS, "worker" => name)
                            .increment(1);
                        tracing::error!(
                            worker = name,
                            panic = %message,
                            restart_in_secs = pause.as_secs(),
                            "a background worker died; starting it again"
                        );
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = stop.cancelled() => return,
                        }
                        pause = (pause * 2).min(LONGEST_PAUSE);
                    }
                    // Aborted from outside: nothing to restart.
                    Err(_) => return,
                }
            }
        });
    }

    /// A worker that runs `pass` at once and then every `period`; a pass that fails is logged
    /// and the next one tries again.
    pub fn every<F, Fut, T, E>(&self, name: &'static str, period: Duration, pass: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let pass = Arc::new(pass);
        self.spawn(name, move || {
            let pass = pass.clone();
            async move {
                let mut tick = tokio::time::interval(period);
                // After a stall (a slow pass, a suspended host), one pass, not a burst.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = pass().await {
                        crate::telemetry::worker_error(name);
                        tracing::warn!(worker = name, error = %e, "a background pass failed; the next one tries again");
                    }
                }
            }
        });
    }

    /// Stops every worker (each at its next await) and waits up to `within` until all have
    /// ended. Answers whether they all did.
    pub async fn stop(&self, within: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// The text a panic carried, when it is a string.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "(no message)".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_panics_is_started_again_with_a_growing_pause() {
        let runs = Arc::new(AtomicUsize::new(0));
        let seen = runs.clone();
        let workers = Workers::new();
        workers.spawn("test-worker", move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    panic!("odd answer number {n}");
                }
            }
        });
        let started = tokio::time::Instant::now();
        // Closed but not cancelled: waits until the worker ends on its own.
        workers.tracker.close();
        workers.tracker.wait().await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three panics, then a clean run"
        );
        // Paused 1 s, 2 s and 4 s between the four runs.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_every_worker_also_one_waiting_to_restart() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let seen = ticks.clone();
        let workers = Workers::new();
        workers.every("test-loop", Duration::from_secs(1), move || {
            seen.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, std::convert::Infallible>(()))
        });
        workers.spawn("test-panics", || async { panic!("always") });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(workers.stop(Duration::from_secs(1)).await, "all ended");
        let at_stop = ticks.load(Ordering::SeqCst);
        assert_eq!(at_stop, 3, "ticks at 0, 1 and 2 s");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), at_stop);
    }
}
