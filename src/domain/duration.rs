//! Durations as people write them (`30m`) and as runbot shows them.
//!
//! Two shapes, on purpose: [`short`] for how long something has run or may run (`3h 5m`,
//! in cards and tables, approximate), and [`span`] for a span someone asked for, said back in
//! a sentence (`silenced for 1 h`).

use std::time::Duration;

/// `30s`, `15m`, `2h`, `7d`: at least a minute's silence makes sense, at most 30 days.
pub fn parse(s: &str) -> Option<Duration> {
    parse_unbounded(s).filter(|d| d.as_secs() <= 30 * 86_400)
}

/// A duration of any length from a second (`90d` for a report's window): the caller bounds it.
pub fn parse_unbounded(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs >= 1).then(|| Duration::from_secs(secs))
}

/// `45s`, `12m`, `3h 5m`, `4d 3h`.
pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// To the second under an hour, as people quote response times: `45s`, `3m 12s`, `1h 5m`.
pub fn precise(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => short(d),
    }
}

/// `90 s`, `2 min`, `15 min`, `1 h`, `90 min`, `2 d`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s.is_multiple_of(86_400) {
        format!("{} d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else {
        format!("{} min", s / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_within_a_minute_and_thirty_days() {
        assert_eq!(parse("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse("0m"), None);
        assert_eq!(parse("31d"), None);
        assert_eq!(parse("1w"), None);
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short(Duration::from_secs(40)), "40s");
        assert_eq!(short(Duration::from_secs(45)), "45s");
        assert_eq!(short(Duration::from_secs(12 * 60 + 5)), "12m");
        assert_eq!(short(Duration::from_secs(3 * 3600 + 300)), "3h 5m");
        assert_eq!(short(Duration::from_secs(3 * 3600 + 12 * 60)), "3h 12m");
        assert_eq!(short(Duration::from_secs(2 * 86_400 + 3600)), "2d 1h");
        assert_eq!(short(Duration::from_secs(4 * 86_400 + 7200)), "4d 2h");
    }

    #[test]
    fn spans_are_said_in_whole_units() {
        assert_eq!(span(Duration::from_secs(90)), "90 s");
        assert_eq!(span(Duration::from_secs(120)), "2 min");
        assert_eq!(span(Duration::from_secs(3600)), "1 h");
        assert_eq!(span(Duration::from_secs(5400)), "90 min");
        assert_eq!(span(Duration::from_secs(2 * 86_400)), "2 d");
    }
}
