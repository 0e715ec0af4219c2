//! The clock runbot decides its own times by.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// The current time. A function so tests can drive it (e.g. from tokio's paused clock).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}
