//! Timestamps as the store keeps them.

use chrono::{DateTime, SecondsFormat, Utc};

/// The stored form of a time: fixed width, UTC, so text order is time order in both databases.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub fn parse_stored_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
