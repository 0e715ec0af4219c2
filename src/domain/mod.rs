//! Leaf values that several layers share. Nothing here imports the rest of the crate.
//!
//! - [`clock`]. The clock runbot decides its own times by (tests drive it).
//! - [`net`]. Addresses and ranges as /block-ip takes them, and what may never be blocked.
//! - [`names`]. The Docker engine's address, compose project and service names.
//! - [`duration`]. Durations as people write them, and the shapes runbot shows them in.
//! - [`text`]. Clipping, plurals, hex.
//! - [`pg_url`]. The application database's address, parsed from its URL.
//! - [`redact`]. Secrets masked out of text that leaves runbot (logs, replies, URLs).

pub mod clock;
pub mod duration;
pub mod names;
pub mod net;
pub mod pg_url;
pub mod redact;
pub mod text;
