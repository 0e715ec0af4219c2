//! Leaf values that several layers share. Nothing here imports the rest of the crate.
//!
//! - [`severity`]. Sev1–Sev4.
//! - [`status`]. Firing or resolved, for an alert and for its group.
//! - [`time`]. The stored form of a timestamp.
//! - [`alert`]. An alert group as the store keeps it: the classified webhook that comes in,
//!   the typed state the lifecycle changes, the timeline entries it records.
//! - [`clock`]. The clock runbot decides its own times by (tests drive it).
//! - [`net`]. Addresses and ranges as /block-ip takes them, and what may never be blocked.
//! - [`names`]. The Docker engine's address, compose project and service names.
//! - [`hours`]. When a role is on call: always, business hours, weekends, in a time zone.
//! - [`duration`]. Durations as people write them, and the shapes runbot shows them in.
//! - [`text`]. Clipping, plurals, hex.
//! - [`pg_url`]. The application database's address, parsed from its URL.
//! - [`redact`]. Secrets masked out of text that leaves runbot (logs, replies, URLs).

pub mod alert;
pub mod clock;
pub mod duration;
pub mod hours;
pub mod names;
pub mod net;
pub mod pg_url;
pub mod redact;
pub mod severity;
pub mod status;
pub mod text;
pub mod time;

pub use severity::Severity;
pub use status::{AlertStatus, GroupStatus};
pub use time::{format_time, parse_stored_time};
