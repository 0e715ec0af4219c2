//! `/security top-ips [window]`: the runbook's review of `security.log`
//! (`grep login_failure | jq .ip_address | sort | uniq -c | sort -rn`), with a Block button per
//! address that asks for `/block-ip` (policy and confirmation as for the slash command).
//!
//! The log is JSON lines in time order, so it is read from its end backwards and only as far
//! as the window reaches; lines that are not JSON, have no time or no valid address are
//! counted and skipped.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::format::table;
use super::{reply, Ctx, Done, ExecError, Executors};
use crate::chat::{ButtonStyle, ReplyButton};
use crate::commands::parse_duration;

/// Bytes read per step backwards.
const CHUNK: u64 = 64 * 1024;
/// Lines older than the window read in a row before the scan stops: a few lines out of order
/// at the edge are still counted.
const OLDER_IN_A_ROW: usize = 50;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Failures by address, most first (ties by address).
    pub top: Vec<(String, u64)>,
    /// Login failures in the window.
    pub failures: u64,
    /// Lines that were not JSON objects, or a login_failure without a valid ip_address.
    pub bad: u64,
    /// Lines without a readable time.
    pub undated: u64,
}

/// The time of a log line: `timestamp`, `time`, `@timestamp` or `ts`, as RFC 3339 or
/// `YYYY-mm-dd HH:MM:SS[.f]` (taken as UTC).
fn line_time(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    let s = ["timestamp", "time", "@timestamp", "ts"]
        .iter()
        .find_map(|k| v.get(k).and_then(|t| t.as_str()))?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

/// Reads `path` backwards from its end until lines are older than `since`.
pub fn scan(path: &Path, since: DateTime<Utc>) -> std::io::Result<Scan> {
    let mut f = std::fs::File::open(path)?;
    let mut pos = f.seek(SeekFrom::End(0))?;
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut scan = Scan::default();
    let mut carry: Vec<u8> = Vec::new();
    let mut older = 0usize;
    let mut handle = |line: &[u8], scan: &mut Scan| -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return true;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            scan.bad += 1;
            return true;
        };
        if !v.is_object() {
            scan.bad += 1;
            return true;
        }
        let Some(t) = line_time(&v) else {
            scan.undated += 1;
            return true;
        };
        if t < since {
            older += 1;
            return older < OLDER_IN_A_ROW;
        }
        older = 0;
        if v.get("event").and_then(|e| e.as_str()) != Some("login_failure") {
            return true;
        }
        match v
            .get("ip_address")
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse::<IpAddr>().ok())
        {
            Some(ip) => {
                *counts.entry(ip.to_string()).or_default() += 1;
                scan.failures += 1;
            }
            None => scan.bad += 1,
        }
        true
    };
    'outer: while pos > 0 {
        let step = CHUNK.min(pos);
        pos -= step;
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = vec![0u8; step as usize];
        f.read_exact(&mut buf)?;
        buf.extend_from_slice(&carry);
        // Everything after the first newline is whole lines; the part before may continue
        // in the previous chunk.
        let first_nl = if pos == 0 {
            None
        } else {
            buf.iter().position(|b| *b == b'\n')
        };
        let (head, whole) = match first_nl {
            Some(i) => (buf[..i].to_vec(), &buf[i + 1..]),
            // No newline and more file before it: all of it is part of one long line.
            None if pos > 0 => {
                carry = buf;
                continue;
            }
            None => (Vec::new(), &buf[..]),
        };
        for line in whole.rsplit(|b| *b == b'\n') {
            if !handle(line, &mut scan) {
                break 'outer;
            }
        }
        carry = head;
    }
    let mut top: Vec<(String, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scan.top = top;
    Ok(scan)
}

/// `/security report:top-ips [window]`.
pub async fn top_ips(ex: &Executors, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let path = ex.security.log_path.clone().ok_or_else(|| {
        ExecError(
            "runbot does not know where the security log is: set security.log_path (RUNBOT__SECURITY__LOG_PATH) to the stack's logs/security.log"
                .into(),
        )
    })?;
    let window_text = ctx.text("window").unwrap_or("1h").to_string();
    let window = parse_duration(&window_text).unwrap_or(std::time::Duration::from_secs(3600));
    let since = ctx.now - chrono::Duration::from_std(window).unwrap_or_default();
    let shown = path.display().to_string();
    let scanned = tokio::task::spawn_blocking(move || scan(&path, since))
        .await
        .map_err(|e| ExecError(e.to_string()))?
        .map_err(|e| ExecError(format!("cannot read {shown}: {e}")))?;
    let blocked: Vec<ipnet::IpNet> = ex
        .store
        .active_blocks()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|b| crate::nginx::parse_range(&b.network).ok())
        .collect();
    let mut notes = Vec::new();
    if scanned.bad > 0 {
        notes.push(format!("{} unreadable line(s) skipped", scanned.bad));
    }
    if scanned.undated > 0 {
        notes.push(format!(
            "{} line(s) without a time skipped",
            scanned.undated
        ));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    if scanned.top.is_empty() {
        return Ok(Done {
            reply: reply(
                format!("No failed logins in {shown} in the last {window_text}{notes}."),
                true,
            ),
            summary: format!("no login failures in {window_text}"),
        });
    }
    let mut rows = vec![["ADDRESS".to_string(), "FAILURES".into(), "NOTE".into()]];
    let mut buttons = Vec::new();
    for (ip, n) in scanned.top.iter().take(ex.security.top) {
        let net = crate::nginx::parse_range(ip).ok();
        let note = match &net {
            Some(net) if blocked.iter().any(|b| b.contains(net)) => "blocked".to_string(),
            Some(net) => match ex.guard.refuse_dangerous(net, &[]) {
                Err(_) => "never blocked (allow-list or special)".into(),
                Ok(()) => {
                    let reason = format!("{n} failed logins in {window_text} per security.log");
                    let id = crate::invocation::command_button_id(
                        "block-ip",
                        &[("address", ip), ("reason", &reason)],
                    )
                    .or_else(|| {
                        crate::invocation::command_button_id("block-ip", &[("address", ip)])
                    });
                    if let Some(id) = id {
                        buttons.push(ReplyButton {
                            id,
                            label: crate::invocation::text::clip(&format!("Block {ip}"), 78),
                            style: ButtonStyle::Danger,
                        });
                    }
                    String::new()
                }
            },
            None => String::new(),
        };
        rows.push([ip.clone(), n.to_string(), note]);
    }
    let mut r = reply(
        format!(
            "Failed logins in the last {window_text} by address ({} in all, {} address{}){notes}. Block asks for /block-ip, with confirmation:",
            scanned.failures,
            scanned.top.len(),
            if scanned.top.len() == 1 { "" } else { "es" }
        ),
        true,
    );
    r.code_block = Some(table(&rows));
    r.buttons = buttons;
    Ok(Done {
        reply: r,
        summary: format!(
            "{} login failures from {} addresses in {window_text}",
            scanned.failures,
            scanned.top.len()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_window_from_the_end_and_counts_what_it_skips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.log");
        let mut text = String::new();
        // Old failures, outside the window: never counted.
        for i in 0..200 {
            text.push_str(&format!(
                "{{\"timestamp\":\"2026-11-27T0{}:00:00Z\",\"event\":\"login_failure\",\"ip_address\":\"192.0.2.1\"}}\n",
                i % 10
            ));
        }
        for i in 0..5000 {
            let ip = if i % 3 == 0 {
                "203.0.113.7"
            } else {
                "198.51.100.20"
            };
            let event = if i % 2 == 0 {
                "login_failure"
            } else {
                "login_success"
            };
            text.push_str(&format!(
                "{{\"timestamp\":\"2026-11-28T03:{:02}:{:02}Z\",\"event\":\"{event}\",\"ip_address\":\"{ip}\"}}\n",
                i / 100 % 60,
                i % 60
            ));
        }
        text.push_str("not json\n{\"event\":\"login_failure\",\"ip_address\":\"203.0.113.9\"}\n");
        text.push_str("{\"timestamp\":\"2026-11-28 03:59:00\",\"event\":\"login_failure\",\"ip_address\":\"999.1.1.1\"}\n");
        std::fs::write(&path, text).unwrap();
        let s = scan(&path, "2026-11-28T03:00:00Z".parse().unwrap()).unwrap();
        assert_eq!(s.failures, 2500);
        assert_eq!(
            s.top,
            [
                ("198.51.100.20".to_string(), 1666),
                ("203.0.113.7".to_string(), 834)
            ]
        );
        assert_eq!((s.bad, s.undated), (2, 1));
    }

    #[test]
    fn a_line_longer_than_a_read_step_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.log");
        let failure = |ip: &str, extra: &str| {
            format!(
                "{{\"timestamp\":\"2026-11-28T03:30:00Z\",\"event\":\"login_failure\",\"ip_address\":\"{ip}\",\"ua\":\"{extra}\"}}\n"
            )
        };
        // 200 KiB of user agent: three read steps inside one line.
        let text = failure("203.0.113.7", "")
            + &failure("203.0.113.8", &"x".repeat(200 * 1024))
            + &failure("203.0.113.7", "");
        std::fs::write(&path, text).unwrap();
        let s = scan(&path, "2026-11-28T03:00:00Z".parse().unwrap()).unwrap();
        assert_eq!((s.failures, s.bad, s.undated), (3, 0, 0), "{s:?}");
        assert_eq!(
            s.top,
            [
                ("203.0.113.7".to_string(), 2),
                ("203.0.113.8".to_string(), 1)
            ]
        );
    }
}
