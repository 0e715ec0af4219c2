//! Leaf values that several layers share. Nothing here imports the rest of the crate.
//!
//! - [`severity`]. Sev1–Sev4.
//! - [`status`]. Firing or resolved, for an alert and for its group.
//! - [`time`]. The stored form of a timestamp.
//! - [`alert`]. An alert group as the store keeps it: the classified webhook that comes in,
//!   the typed state the lifecycle changes, the timeline entries it records.

pub mod alert;
pub mod severity;
pub mod status;
pub mod time;

pub use severity::Severity;
pub use status::{AlertStatus, GroupStatus};
pub use time::{format_time, parse_stored_time};
