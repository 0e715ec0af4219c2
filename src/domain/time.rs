//! Timestamps as the store keeps them.

use chrono::{DateTime, SecondsFormat, Utc};

/// The stored form of a time: fixed width, UTC, so text order is time order in both databases.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A time given on the command line (`--at`, `--since`): RFC 3339.
pub fn parse_cli_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time such as 2026-11-28T03:00:00Z ({e})"))
}

pub fn parse_stored_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
