//! `/report` and `/backlog`, and the weekly backlog summary: how fast the team answered, from
//! the escalation rows (one per firing episode), and what waits in the backlog.
//!
//! The numbers are worked out by pure functions ([`compute`], [`bar_chart_svg`],
//! [`backlog_summary`]) that the console's pages share with the commands.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

use super::core::Core;
use super::{reply, utc_minute, Ctx, Done, ExecError};
use crate::domain::duration::{precise, span};
use crate::domain::{format_time, parse_stored_time, Severity};
use crate::store::{BacklogGroup, ReportEpisode, Store};

/// The window `/report` reads when none is given, and the longest it may read.
pub const WINDOW_DEFAULT: &str = "7d";
pub const WINDOW_MIN: Duration = Duration::from_secs(3600);
pub const WINDOW_MAX: Duration = Duration::from_secs(90 * 86_400);
/// Episodes a report reads at most: a bound on memory whatever the window holds.
pub const EPISODES_MAX: i64 = 100_000;
/// Backlog groups listed at most.
pub const BACKLOG_MAX: i64 = 200;

/// `7d`, `24h`: a report's window, from an hour to 90 days, or a sentence saying what to write.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    // The value is said back only when it is plainly a word: it may come from a URL.
    let shown = if s.len() <= 12 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("{s:?}")
    } else {
        "that".into()
    };
    let d = crate::domain::duration::parse_unbounded(s)
        .ok_or_else(|| format!("window: {shown} is not a duration such as 24h, 7d or 30d"))?;
    if d < WINDOW_MIN || d > WINDOW_MAX {
        return Err(format!(
            "window must be from {} to {}, not {}",
            span(WINDOW_MIN),
            span(WINDOW_MAX),
            shown.trim_matches('"')
        ));
    }
    Ok(d)
}

/// `/report`'s window, refused before anything else with the same sentence as the console's.
/// (It is a string option: a duration option stops at 30 days, and Discord takes no bounds on
/// a string.)
pub(super) fn precheck(args: &crate::commands::Args) -> Result<(), String> {
    match args.get("window") {
        Some(crate::commands::Value::Text(w)) => parse_window(w).map(|_| ()),
        _ => Ok(()),
    }
}

/// Median and 90th percentile of some durations, in seconds (nearest rank: each is a time
/// that really happened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub median_secs: i64,
    pub p90_secs: i64,
}

/// What one severity's episodes in the window came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeverityStats {
    pub severity: &'static str,
    /// Episodes (a group firing, or firing again after it resolved) started in the window.
    pub count: u64,
    /// Of those, acknowledged; the rest were never acknowledged and have no time to ack.
    pub acked: u64,
    pub not_acked: u64,
    /// Of those, resolved; the rest still fire and have no time to resolve.
    pub resolved: u64,
    pub unresolved: u64,
    /// From start to acknowledgement (MTTA) and to resolution (MTTR); None with no sample.
    pub time_to_ack: Option<Spread>,
    pub time_to_resolve: Option<Spread>,
    /// Pages the chains sent.
    pub pages_sent: i64,
    /// Episodes whose chain went past its first step.
    pub escalated: u64,
}

/// Episodes started on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCount {
    pub day: NaiveDate,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    /// As asked: `7d`.
    pub window: String,
    /// Sev1 to Sev4, each listed even when nothing happened.
    pub severities: Vec<SeverityStats>,
    /// Every day of the window, oldest first.
    pub per_day: Vec<DayCount>,
    /// True when the window held more than [`EPISODES_MAX`] episodes and only the oldest
    /// were counted.
    pub truncated: bool,
}

/// Nearest-rank percentile of sorted values (`p` in 1..=100).
fn percentile(sorted: &[i64], p: usize) -> i64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn spread(mut secs: Vec<i64>) -> Option<Spread> {
    if secs.is_empty() {
        return None;
    }
    secs.sort_unstable();
    Some(Spread {
        median_secs: percentile(&secs, 50),
        p90_secs: percentile(&secs, 90),
    })
}

/// Seconds from `start` to `end`, when both are times (a clock step backwards counts as 0).
fn secs_between(start: Option<DateTime<Utc>>, end: Option<&str>) -> Option<i64> {
    let end = parse_stored_time(end?)?;
    Some((end - start?).num_seconds().max(0))
}

/// The report of `rows` (episodes started in [from, to)).
pub fn compute(
    rows: &[ReportEpisode],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    window: &str,
) -> Report {
    let severities = Severity::ALL
        .into_iter()
        .map(|sev| {
            let mine: Vec<&ReportEpisode> = rows
                .iter()
                .filter(|r| Severity::parse(&r.severity) == Some(sev))
                .collect();
            let mut ack = Vec::new();
            let mut resolve = Vec::new();
            for r in &mine {
                let start = parse_stored_time(&r.started_at);
                ack.extend(secs_between(start, r.acked_at.as_deref()));
                resolve.extend(secs_between(start, r.resolved_at.as_deref()));
            }
            let count = mine.len() as u64;
            SeverityStats {
                severity: sev.as_str(),
                count,
                acked: ack.len() as u64,
                not_acked: count - ack.len() as u64,
                resolved: resolve.len() as u64,
                unresolved: count - resolve.len() as u64,
                time_to_ack: spread(ack),
                time_to_resolve: spread(resolve),
                pages_sent: mine.iter().map(|r| r.pages_sent).sum(),
                escalated: mine.iter().filter(|r| r.steps_fired > 1).count() as u64,
            }
        })
        .collect();
    let mut per_day: Vec<DayCount> = from
        .date_naive()
        .iter_days()
        .take_while(|d| *d <= to.date_naive())
        .map(|day| DayCount { day, count: 0 })
        .collect();
    for r in rows {
        if let Some(t) = parse_stored_time(&r.started_at) {
            if let Some(d) = per_day.iter_mut().find(|d| d.day == t.date_naive()) {
                d.count += 1;
            }
        }
    }
    Report {
        from: format_time(from),
        to: format_time(to),
        window: window.to_string(),
        severities,
        per_day,
        truncated: rows.len() as i64 >= EPISODES_MAX,
    }
}

/// Reads the episodes of the `window` before `now` and works out the report.
pub async fn report(
    store: &Store,
    now: DateTime<Utc>,
    window: &str,
) -> Result<Report, ReportError> {
    let d = parse_window(window).map_err(ReportError::BadWindow)?;
    let from = now - chrono::Duration::from_std(d).expect("at most 90 days");
    let rows = store
        .report_episodes(&format_time(from), &format_time(now), EPISODES_MAX)
        .await
        .map_err(ReportError::Store)?;
    Ok(compute(&rows, from, now, window.trim()))
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    BadWindow(String),
    #[error("the escalation history cannot be read ({0})")]
    Store(sqlx::Error),
}

/// Chart size, in SVG user units.
const CHART_W: u32 = 720;
const CHART_H: u32 = 180;
const AXIS_H: u32 = 20;
const TOP: u32 = 16;

/// A bar chart of episodes per day, as SVG text. Only numbers and dates (formatted here) go
/// in it, so nothing anyone sent can become markup; styles come from `console.css` classes,
/// because the console's CSP allows no inline style.
pub fn bar_chart_svg(days: &[DayCount]) -> String {
    use std::fmt::Write;
    let max = days.iter().map(|d| d.count).max().unwrap_or(0).max(1);
    let n = days.len().max(1) as u32;
    let slot = CHART_W / n;
    let bar_w = (slot * 3 / 4).max(1);
    let plot_h = CHART_H - AXIS_H - TOP;
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"Incidents per day\">"
    );
    let _ = write!(
        svg,
        "<line class=\"chart-axis\" x1=\"0\" y1=\"{y}\" x2=\"{CHART_W}\" y2=\"{y}\"/>",
        y = CHART_H - AXIS_H
    );
    // A label every few days, so 90 of them do not overlap.
    let every = (days.len() / 10).max(1);
    for (i, d) in days.iter().enumerate() {
        let x = i as u32 * slot + (slot - bar_w) / 2;
        let h = (d.count * plot_h as u64 / max) as u32;
        let y = CHART_H - AXIS_H - h;
        let _ = write!(
            svg,
            "<rect class=\"chart-bar\" x=\"{x}\" y=\"{y}\" width=\"{bar_w}\" height=\"{h}\"><title>{} {}</title></rect>",
            d.day.format("%Y-%m-%d"),
            d.count
        );
        if d.count > 0 {
            let _ = write!(
                svg,
                "<text class=\"chart-count\" x=\"{}\" y=\"{}\">{}</text>",
                x + bar_w / 2,
                y.saturating_sub(3).max(10),
                d.count
            );
        }
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text class=\"chart-day\" x=\"{}\" y=\"{}\">{}</text>",
                x + bar_w / 2,
                CHART_H - 5,
                d.day.format("%m-%d")
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// `3m 12s`, or `–` with no sample.
fn secs(s: Option<i64>) -> String {
    match s {
        Some(s) => precise(Duration::from_secs(s.max(0) as u64)),
        None => "–".into(),
    }
}

/// The report as a fixed-width table, for chat.
pub fn report_table(r: &Report) -> String {
    let mut lines = vec![format!(
        "{:<5} {:>5} {:>15} {:>15} {:>5} {:>9}",
        "sev", "count", "MTTA med/p90", "MTTR med/p90", "pages", "escalated"
    )];
    for s in &r.severities {
        let pair = |sp: Option<Spread>| {
            format!(
                "{}/{}",
                secs(sp.map(|s| s.median_secs)),
                secs(sp.map(|s| s.p90_secs))
            )
        };
        lines.push(format!(
            "{:<5} {:>5} {:>15} {:>15} {:>5} {:>9}",
            s.severity,
            s.count,
            pair(s.time_to_ack),
            pair(s.time_to_resolve),
            s.pages_sent,
            s.escalated
        ));
    }
    let open: Vec<String> = r
        .severities
        .iter()
        .filter(|s| s.not_acked > 0 || s.unresolved > 0)
        .map(|s| {
            format!(
                "{}: {} never acknowledged, {} not resolved",
                s.severity, s.not_acked, s.unresolved
            )
        })
        .collect();
    if !open.is_empty() {
        lines.push(String::new());
        lines.push(format!("Not in the times above: {}", open.join("; ")));
    }
    lines.join("\n")
}

/// A backlog entry, as the command, the console and the summary show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BacklogItem {
    pub group_id: i64,
    /// The group's alertname (its key when it has none).
    pub name: String,
    pub severity: String,
    /// When the episode started, RFC 3339.
    pub since: String,
    /// The group's console page.
    pub link: String,
}

impl From<BacklogGroup> for BacklogItem {
    fn from(g: BacklogGroup) -> BacklogItem {
        let label = |json: &str| {
            serde_json::from_str::<std::collections::BTreeMap<String, String>>(json)
                .ok()
                .and_then(|m| m.get("alertname").cloned())
        };
        let name = label(&g.group_labels)
            .or_else(|| label(&g.common_labels))
            .unwrap_or(g.group_key);
        BacklogItem {
            link: format!("/groups/{}", g.group_id),
            group_id: g.group_id,
            name: crate::domain::text::clip(&name, 100),
            severity: g.severity,
            since: g.started_at,
        }
    }
}

/// The open backlog, newest first (at most [`BACKLOG_MAX`]).
pub async fn backlog(store: &Store) -> Result<Vec<BacklogItem>, sqlx::Error> {
    Ok(store
        .backlog_groups(BACKLOG_MAX)
        .await?
        .into_iter()
        .map(BacklogItem::from)
        .collect())
}

/// `2026-12-07 09:00`: a stored time, to the minute.
fn minute(at: &str) -> String {
    parse_stored_time(at)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| at.to_string())
}

/// The weekly summary of the backlog, oldest first, as chat text.
pub fn backlog_summary(items: &[BacklogItem], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "📋 Weekly backlog: nothing waits in the backlog.".into();
    }
    let mut lines = vec![format!(
        "📋 Weekly backlog: {} open group{} (Sev4 and others the chain put aside), oldest first:",
        items.len(),
        if items.len() == 1 { "" } else { "s" }
    )];
    const SHOWN: usize = 20;
    let mut oldest: Vec<&BacklogItem> = items.iter().collect();
    oldest.sort_by(|a, b| a.since.cmp(&b.since));
    for i in oldest.iter().take(SHOWN) {
        let age = parse_stored_time(&i.since)
            .map(|t| {
                crate::domain::duration::short((now - t).to_std().unwrap_or_default()) + " ago"
            })
            .unwrap_or_default();
        lines.push(format!(
            "• {} (#{}) · {} · since {} UTC ({age})",
            i.name,
            i.group_id,
            i.severity,
            minute(&i.since)
        ));
    }
    if items.len() > SHOWN {
        lines.push(format!(
            "… and {} more: /backlog or the console's Backlog page.",
            items.len() - SHOWN
        ));
    }
    lines.join("\n")
}

/// The key of the week `now` falls in, in `tz`, when it is time for that week's summary
/// (Monday from 09:00); None otherwise.
pub fn summary_week(now: DateTime<Utc>, tz: Tz) -> Option<String> {
    let local = now.with_timezone(&tz);
    if local.weekday() != Weekday::Mon || local.hour() < 9 {
        return None;
    }
    let week = local.iso_week();
    Some(format!("backlog:{}-W{:02}", week.year(), week.week()))
}

/// One pass of the weekly backlog summary: on Mondays from 09:00 in `tz`, the one process
/// that claims the week queues the summary to every chat platform's alert channel. Answers
/// whether this pass queued it. An empty backlog posts nothing and claims nothing.
pub async fn weekly_backlog(store: &Store, now: DateTime<Utc>, tz: Tz) -> anyhow::Result<bool> {
    let Some(key) = summary_week(now, tz) else {
        return Ok(false);
    };
    let platforms = store.chat_platforms();
    let items = backlog(store).await?;
    // Nowhere to post, or nothing to say: the week stays unclaimed.
    if platforms.is_empty() || items.is_empty() {
        return Ok(false);
    }
    let at = format_time(now);
    if !store.post_once(&key, &at).await? {
        return Ok(false);
    }
    let text = backlog_summary(&items, now);
    let console = crate::request::Platform::Console.as_str();
    // `announce` copies every message into the console's feed: name the console itself only
    // when it is the one platform.
    let chats: Vec<&String> = platforms.iter().filter(|p| *p != console).collect();
    let targets: Vec<&str> = if chats.is_empty() {
        platforms.iter().map(String::as_str).collect()
    } else {
        chats.into_iter().map(String::as_str).collect()
    };
    for p in targets {
        store.announce(p, None, &text, &at).await?;
    }
    Ok(true)
}

impl Core {
    pub(super) async fn report(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let window = ctx.text("window").unwrap_or(WINDOW_DEFAULT);
        let r = report(&self.store, ctx.now, window)
            .await
            .map_err(|e| ExecError(e.to_string()))?;
        let total: u64 = r.severities.iter().map(|s| s.count).sum();
        let mut out = reply(
            format!(
                "How fast we answered, last {window} (until {}): {total} incident{}. MTTA: start to acknowledgement; MTTR: start to resolution; median/p90.{}",
                utc_minute(ctx.now),
                if total == 1 { "" } else { "s" },
                if r.truncated { " Only the oldest 100,000 incidents were counted." } else { "" }
            ),
            true,
        );
        out.code_block = Some(report_table(&r));
        Ok(Done {
            reply: out,
            summary: format!("reported {total} incidents over {window}"),
        })
    }

    pub(super) async fn backlog(&self, _ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let items = backlog(&self.store)
            .await
            .map_err(|e| ExecError(format!("the backlog cannot be read ({e})")))?;
        if items.is_empty() {
            return Ok(Done {
                reply: reply("Nothing waits in the backlog.".into(), true),
                summary: "listed an empty backlog".into(),
            });
        }
        let mut out = reply(
            format!(
                "{} group{} in the backlog, newest first:",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            ),
            true,
        );
        out.code_block = Some(
            items
                .iter()
                .map(|i| {
                    format!(
                        "#{:<6} {:<5} since {} UTC  {}  ({})",
                        i.group_id,
                        i.severity,
                        minute(&i.since),
                        i.name,
                        i.link
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        );
        Ok(Done {
            reply: out,
            summary: format!("listed {} backlog groups", items.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_stored_time(s).unwrap()
    }

    fn ep(
        sev: &str,
        start: &str,
        ack: Option<i64>,
        res: Option<i64>,
        steps: i64,
        pages: i64,
    ) -> ReportEpisode {
        let plus = |s: i64| format_time(t(start) + chrono::Duration::seconds(s));
        ReportEpisode {
            severity: sev.into(),
            started_at: start.into(),
            acked_at: ack.map(plus),
            resolved_at: res.map(plus),
            steps_fired: steps,
            pages_sent: pages,
        }
    }

    #[test]
    fn stats_per_severity_use_nearest_rank_and_count_open_episodes_apart() {
        let rows = vec![
            ep("sev1", "2026-12-01T10:00:00Z", Some(60), Some(600), 1, 1),
            ep("sev1", "2026-12-01T11:00:00Z", Some(120), Some(1200), 2, 3),
            ep("sev1", "2026-12-02T10:00:00Z", Some(180), None, 1, 1),
            ep("sev1", "2026-12-03T10:00:00Z", Some(240), Some(1800), 3, 4),
            ep("sev1", "2026-12-03T12:00:00Z", None, None, 2, 2),
            ep("sev2", "2026-12-03T13:00:00Z", Some(30), Some(90), 1, 1),
            ep("sev4", "2026-12-04T13:00:00Z", None, Some(50), 1, 0),
        ];
        let r = compute(
            &rows,
            t("2026-11-30T14:00:00Z"),
            t("2026-12-07T14:00:00Z"),
            "7d",
        );
        let s1 = &r.severities[0];
        assert_eq!(
            (s1.severity, s1.count, s1.acked, s1.not_acked),
            ("sev1", 5, 4, 1)
        );
        assert_eq!((s1.resolved, s1.unresolved), (3, 2));
        // Acks 60, 120, 180, 240: the median is the 2nd (nearest rank), p90 the 4th.
        assert_eq!(
            s1.time_to_ack,
            Some(Spread {
                median_secs: 120,
                p90_secs: 240
            })
        );
        // Resolutions 600, 1200, 1800: never-resolved ones are not zeros.
        assert_eq!(
            s1.time_to_resolve,
            Some(Spread {
                median_secs: 1200,
                p90_secs: 1800
            })
        );
        assert_eq!((s1.pages_sent, s1.escalated), (11, 3));
        let s2 = &r.severities[1];
        assert_eq!(
            s2.time_to_ack,
            Some(Spread {
                median_secs: 30,
                p90_secs: 30
            })
        );
        let s3 = &r.severities[2];
        assert_eq!(
            (s3.count, s3.time_to_ack, s3.time_to_resolve),
            (0, None, None)
        );
        let s4 = &r.severities[3];
        assert_eq!((s4.not_acked, s4.time_to_ack), (1, None));
        assert_eq!(s4.time_to_resolve.unwrap().median_secs, 50);
        // Eight days from Nov 30 to Dec 7, both ends counted.
        let days: Vec<(String, u64)> = r
            .per_day
            .iter()
            .map(|d| (d.day.format("%m-%d").to_string(), d.count))
            .collect();
        assert_eq!(days.len(), 8);
        assert_eq!(days[0], ("11-30".into(), 0));
        assert_eq!(days[1], ("12-01".into(), 2));
        assert_eq!(days[3], ("12-03".into(), 3));
        assert_eq!(r.per_day.iter().map(|d| d.count).sum::<u64>(), 7);
        let table = report_table(&r);
        let sev1: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            sev1,
            ["sev1", "5", "2m/4m", "20m/30m", "11", "3"],
            "{table}"
        );
        assert!(
            table.contains("sev1: 1 never acknowledged, 2 not resolved"),
            "{table}"
        );
    }

    #[test]
    fn percentiles_of_ten_values() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50), 5);
        assert_eq!(percentile(&v, 90), 9);
        assert_eq!(percentile(&[7], 90), 7);
    }

    #[test]
    fn a_window_is_an_hour_to_ninety_days() {
        assert_eq!(parse_window("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_window("90d"), Ok(WINDOW_MAX));
        assert!(parse_window("91d")
            .unwrap_err()
            .contains("from 1 h to 90 d, not 91d"));
        assert!(parse_window("5m").unwrap_err().contains("from 1 h"));
        assert!(parse_window("soon").unwrap_err().contains("not a duration"));
        assert!(parse_window("<b>").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn the_chart_draws_one_bar_per_day_scaled_to_the_busiest() {
        let day = |d: u32, count| DayCount {
            day: NaiveDate::from_ymd_opt(2026, 12, d).unwrap(),
            count,
        };
        let svg = bar_chart_svg(&[day(1, 0), day(2, 4), day(3, 2)]);
        assert_eq!(svg.matches("<rect ").count(), 3);
        let plot = CHART_H - AXIS_H - TOP;
        assert!(
            svg.contains(&format!("height=\"{plot}\"><title>2026-12-02 4</title>")),
            "{svg}"
        );
        assert!(
            svg.contains(&format!(
                "height=\"{}\"><title>2026-12-03 2</title>",
                plot / 2
            )),
            "{svg}"
        );
        assert!(
            svg.contains("height=\"0\"><title>2026-12-01 0</title>"),
            "{svg}"
        );
        assert!(!svg.contains("style"), "the CSP allows no inline style");
        // Every text node is a number or a date.
        for text in svg
            .split('>')
            .filter_map(|s| s.split('<').next())
            .filter(|s| !s.is_empty())
        {
            assert!(
                text.chars().all(|c| c.is_ascii_digit() || "- ".contains(c)),
                "{text:?}"
            );
        }
        assert_eq!(bar_chart_svg(&[]).matches("<rect ").count(), 0);
    }

    #[test]
    fn the_weekly_summary_is_due_on_monday_from_nine_local_time() {
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        // Monday 2026-12-07 08:30 in Madrid is 07:30 UTC: not yet.
        assert_eq!(summary_week(t("2026-12-07T07:30:00Z"), madrid), None);
        assert_eq!(
            summary_week(t("2026-12-07T08:00:00Z"), madrid).as_deref(),
            Some("backlog:2026-W50")
        );
        assert_eq!(summary_week(t("2026-12-08T10:00:00Z"), madrid), None);
        // Sunday 23:30 UTC is already Monday 00:30 in Madrid, but before 09:00.
        assert_eq!(summary_week(t("2026-12-06T23:30:00Z"), madrid), None);
    }

    #[test]
    fn the_summary_lists_the_oldest_first_and_says_how_many_more() {
        let item = |id: i64, since: &str| BacklogItem {
            group_id: id,
            name: format!("DiskSlow{id}"),
            severity: "sev4".into(),
            since: since.into(),
            link: format!("/groups/{id}"),
        };
        let now = t("2026-12-07T09:00:00Z");
        let text = backlog_summary(
            &[
                item(2, "2026-12-05T09:00:00Z"),
                item(1, "2026-12-01T09:00:00Z"),
            ],
            now,
        );
        assert!(
            text.starts_with("📋 Weekly backlog: 2 open groups"),
            "{text}"
        );
        let first = text.find("DiskSlow1 (#1)").unwrap();
        assert!(first < text.find("DiskSlow2 (#2)").unwrap(), "{text}");
        assert!(
            text.contains("since 2026-12-01 09:00 UTC (6d 0h ago)"),
            "{text}"
        );
        let many: Vec<BacklogItem> = (0..25).map(|i| item(i, "2026-12-01T09:00:00Z")).collect();
        let text = backlog_summary(&many, now);
        assert_eq!(text.lines().count(), 22, "{text}");
        assert!(text.ends_with("… and 5 more: /backlog or the console's Backlog page."));
        assert!(backlog_summary(&[], now).contains("nothing waits"));
    }
}
