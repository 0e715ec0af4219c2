//! Background loops that do not die quietly. A loop that panics (a remote party's odd answer
//! meeting a bug) is logged with its panic message, counted in
//! `runbot_worker_restarts_total{worker}`, and started again after a pause that doubles from
//! 1 s to 60 s while it keeps dying. Without this, one panic in the outbox stopped every card for
//! the rest of the process's life, and nobody was told.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// The first pause before a restart, and the longest.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// A worker that ran this long before dying starts again from the first pause.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Aborts the task when dropped, so aborting a supervisor also stops the worker it watches.
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `make()` as a task, and again each time it panics. `name` is a metric label: a fixed
/// name from the code, never anything from outside. Returns when the worker ends normally;
/// aborting the returned handle stops the worker too.
pub fn spawn<F, Fut>(name: &'static str, mut make: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut pause = FIRST_PAUSE;
        loop {
            let started = Instant::now();
            let mut worker = Owned(tokio::spawn(make()));
            match (&mut worker.0).await {
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
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
                // Cancelled: runbot is stopping.
                Err(_) => return,
            }
        }
    })
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
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_panics_is_started_again_with_a_growing_pause() {
        let runs = Arc::new(AtomicUsize::new(0));
        let seen = runs.clone();
        let done = Arc::new(tokio::sync::Notify::new());
        let finished = done.clone();
        let handle = spawn("test-worker", move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let finished = finished.clone();
            async move {
                if n < 3 {
                    panic!("odd answer number {n}");
                }
                finished.notify_one();
            }
        });
        let started = tokio::time::Instant::now();
        done.notified().await;
        handle.await.unwrap();
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
    async fn aborting_the_supervisor_stops_its_worker() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let seen = ticks.clone();
        let handle = spawn("test-loop", move || {
            let seen = seen.clone();
            async move {
                loop {
                    seen.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        handle.abort();
        let _ = handle.await;
        let at_stop = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), at_stop);
    }
}
