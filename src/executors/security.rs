//! `/security top-ips [window]`: the runbook's review of `security.log`
//! (`grep login_failure | jq .ip_address | sort | uniq -c | sort -rn`), with a Block button per
//! address that asks for `/block-ip` (policy and confirmation as for the slash command).
//!
//! The log is JSON lines in time order, so it is read from its end backwards and only as far
//! as the window reaches; lines that are not JSON, have no time or no valid address are
//! counted and skipped.
//!
//! The log is written by the outside world, so the scan is bounded whatever it holds: a line
//! longer than [`MAX_LINE`] is counted as unreadable without being kept whole, and failures are
//! counted per source in a Space-Saving summary of [`TRACKED`] sources (Metwally, Agrawal and
//! El Abbadi, 2005): a spray of millions of addresses costs the same memory as ten thousand,
//! every source with more than 1/[`TRACKED`] of the failures is still in it, and the answer says
//! when counts are estimates.
//!
//! IPv6 is counted by /64: a site gets at least a /64, and its hosts rotate privacy addresses
//! inside it (RFC 4941), so one attacker spraying from their own /64 is one hot source, not
//! thousands of cold ones. A /64 from which a single address failed is shown as that address.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::format::table;
use super::{read_only_plan, reply, Ctx, Done, ExecError, Executor, Failure};
use crate::commands::SecurityOp;
use crate::config::SecuritySettings;
use crate::domain::duration;
use crate::domain::net::Guard;
use crate::request::{ButtonId, ButtonStyle, ReplyButton};
use crate::store::Store;

/// Bytes read per step backwards.
const CHUNK: u64 = 64 * 1024;
/// Lines older than the window read in a row before the scan stops: a few lines out of order
/// at the edge are still counted.
const OLDER_IN_A_ROW: usize = 50;
/// A longer line is counted as unreadable and skipped: no login event is this long.
pub const MAX_LINE: usize = 1024 * 1024;
/// Sources counted one by one; past this many, the least counted make room.
pub const TRACKED: usize = 10_000;

/// One source of failures, most first in [`Scan::top`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    /// An address, or an IPv6 /64 (`2001:db8:1:2::/64`) several of whose addresses failed.
    pub source: String,
    /// Failures from it; an upper bound when [`Scan::estimated`].
    pub failures: u64,
    /// The fewest failures it can have had (equal to `failures` when the count is exact).
    pub at_least: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Failures by source, most first (ties by name); at most [`TRACKED`].
    pub top: Vec<Top>,
    /// Login failures in the window.
    pub failures: u64,
    /// Lines that were not JSON objects, longer than [`MAX_LINE`], or a login_failure without
    /// a valid ip_address.
    pub bad: u64,
    /// Lines without a readable time.
    pub undated: u64,
    /// Sources that failed: exact, or about this many when `estimated`.
    pub sources: u64,
    /// More sources failed than [`TRACKED`], so counts are estimates.
    pub estimated: bool,
}

/// What failures are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Source {
    V4(Ipv4Addr),
    /// The /64 prefix.
    V6(u64),
}

#[derive(Debug)]
struct Entry {
    count: u64,
    /// How much of `count` may belong to the sources it replaced.
    error: u64,
    /// The one address seen in this source; None once a second one failed.
    only: Option<IpAddr>,
}

/// The Space-Saving summary: at most `capacity` sources, each with a count that is never
/// below its true count and at most `error` above it. A new source, when full, replaces the
/// least counted one and inherits its count as its error. The counts are also kept in order,
/// so finding the least counted costs O(log capacity), not a pass over all of them.
pub struct TopSources {
    capacity: usize,
    entries: HashMap<Source, Entry>,
    by_count: BTreeSet<(u64, Source)>,
    replaced: u64,
    distinct: Distinct,
}

impl TopSources {
    pub fn new(capacity: usize) -> TopSources {
        TopSources {
            capacity: capacity.max(1),
            entries: HashMap::with_capacity(capacity.min(TRACKED)),
            by_count: BTreeSet::new(),
            replaced: 0,
            distinct: Distinct::new(),
        }
    }

    pub fn add(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let source = match ip {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => Source::V6((a.to_bits() >> 64) as u64),
        };
        self.distinct.add(&source);
        if let Some(e) = self.entries.get_mut(&source) {
            self.by_count.remove(&(e.count, source));
            e.count += 1;
            if e.only != Some(ip) {
                e.only = None;
            }
            self.by_count.insert((e.count, source));
            return;
        }
        let mut entry = Entry {
            count: 1,
            error: 0,
            only: Some(ip),
        };
        if self.entries.len() >= self.capacity {
            if let Some((least, gone)) = self.by_count.pop_first() {
                self.entries.remove(&gone);
                self.replaced += 1;
                entry.count = least + 1;
                entry.error = least;
            }
        }
        self.by_count.insert((entry.count, source));
        self.entries.insert(source, entry);
    }

    /// Sources held: never more than the capacity.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether every count is exact (no source was ever replaced).
    pub fn exact(&self) -> bool {
        self.replaced == 0
    }

    /// Sources seen: exact while nothing was replaced, else an estimate.
    pub fn sources(&self) -> u64 {
        if self.exact() {
            self.entries.len() as u64
        } else {
            self.distinct.estimate().max(self.entries.len() as u64 + 1)
        }
    }

    /// The sources, most failures first (ties by name).
    pub fn top(&self) -> Vec<Top> {
        let mut top: Vec<Top> = self
            .entries
            .iter()
            .map(|(source, e)| Top {
                source: match (source, e.only) {
                    (_, Some(ip)) => ip.to_string(),
                    (Source::V4(a), None) => a.to_string(),
                    (Source::V6(prefix), None) => {
                        format!("{}/64", Ipv6Addr::from_bits(u128::from(*prefix) << 64))
                    }
                },
                failures: e.count,
                at_least: e.count - e.error,
            })
            .collect();
        top.sort_by(|a, b| {
            b.failures
                .cmp(&a.failures)
                .then_with(|| a.source.cmp(&b.source))
        });
        top
    }
}

/// About how many distinct sources were added (HyperLogLog, 2^14 one-byte registers: 16 KiB,
/// about 1% off), for when there are more than the summary holds.
struct Distinct {
    registers: Vec<u8>,
    /// Seeded per scan, so nobody can choose addresses that skew the estimate.
    hasher: RandomState,
}

const HLL_BITS: u32 = 14;

impl Distinct {
    fn new() -> Distinct {
        Distinct {
            registers: vec![0; 1 << HLL_BITS],
            hasher: RandomState::new(),
        }
    }

    fn add(&mut self, source: &Source) {
        let h = self.hasher.hash_one(source);
        let index = (h >> (64 - HLL_BITS)) as usize;
        let rank = ((h << HLL_BITS).leading_zeros() + 1).min(64 - HLL_BITS + 1) as u8;
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    fn estimate(&self) -> u64 {
        let m = self.registers.len() as f64;
        let sum: f64 = self.registers.iter().map(|r| (-f64::from(*r)).exp2()).sum();
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
        let zeros = self.registers.iter().filter(|r| **r == 0).count();
        // Few sources: linear counting is closer.
        let e = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        e.round() as u64
    }
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

/// The part of a line read so far, backwards: the pieces after its start, newest first. Each
/// byte is copied once into a piece and once into the whole line, so a long line costs linear
/// time; past [`MAX_LINE`] the pieces are dropped and only the line's start is looked for.
#[derive(Default)]
struct Partial {
    pieces: Vec<Vec<u8>>,
    len: usize,
    too_long: bool,
}

impl Partial {
    /// Holds `piece`, which comes before what is held.
    fn prepend(&mut self, piece: &[u8]) {
        if self.too_long || piece.is_empty() {
            return;
        }
        if self.len + piece.len() > MAX_LINE {
            *self = Partial {
                too_long: true,
                ..Partial::default()
            };
            return;
        }
        self.pieces.push(piece.to_vec());
        self.len += piece.len();
    }

    /// The whole line that starts with `head` (None if too long), and empties what is held.
    fn finish<T>(&mut self, head: &[u8], f: impl FnOnce(Option<&[u8]>) -> T) -> T {
        let held = std::mem::take(self);
        if held.too_long || held.len + head.len() > MAX_LINE {
            return f(None);
        }
        if held.pieces.is_empty() {
            return f(Some(head));
        }
        let mut line = Vec::with_capacity(head.len() + held.len);
        line.extend_from_slice(head);
        for piece in held.pieces.iter().rev() {
            line.extend_from_slice(piece);
        }
        f(Some(&line))
    }
}

/// Reads `path` backwards from its end until lines are older than `since`.
pub fn scan(path: &Path, since: DateTime<Utc>) -> std::io::Result<Scan> {
    let mut f = std::fs::File::open(path)?;
    let mut pos = f.seek(SeekFrom::End(0))?;
    let mut counts = TopSources::new(TRACKED);
    let mut scan = Scan::default();
    let mut older = 0usize;
    let mut handle = |line: Option<&[u8]>, scan: &mut Scan| -> bool {
        let Some(line) = line else {
            scan.bad += 1;
            return true;
        };
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
                counts.add(ip);
                scan.failures += 1;
            }
            None => scan.bad += 1,
        }
        true
    };
    let mut partial = Partial::default();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut stopped = false;
    'outer: while pos > 0 {
        let step = CHUNK.min(pos);
        pos -= step;
        f.seek(SeekFrom::Start(pos))?;
        let chunk = &mut buf[..step as usize];
        f.read_exact(chunk)?;
        // Lines that start in this chunk, newest first; the part before the first newline
        // continues in the chunk before.
        let mut end = chunk.len();
        while let Some(nl) = chunk[..end].iter().rposition(|b| *b == b'\n') {
            if !partial.finish(&chunk[nl + 1..end], |line| handle(line, &mut scan)) {
                stopped = true;
                break 'outer;
            }
            end = nl;
        }
        partial.prepend(&chunk[..end]);
    }
    if !stopped {
        // The file's first line.
        partial.finish(&[], |line| handle(line, &mut scan));
    }
    scan.top = counts.top();
    scan.sources = counts.sources();
    scan.estimated = !counts.exact();
    Ok(scan)
}

/// `/security`.
pub struct Security {
    pub settings: SecuritySettings,
    /// Addresses that must never be blocked get no Block button.
    pub guard: Guard,
    /// The active blocks, so that blocked addresses get none either.
    pub store: Store,
}

impl Executor for Security {
    type Op = SecurityOp;

    async fn plan(&self, op: SecurityOp, ctx: &Ctx<'_>) -> String {
        match op {
            SecurityOp::TopIps => read_only_plan(ctx),
        }
    }

    async fn run(&self, op: SecurityOp, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        match op {
            SecurityOp::TopIps => Ok(top_ips(self, ctx).await?),
        }
    }
}

/// `/security report:top-ips [window]`.
async fn top_ips(ex: &Security, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let path = ex.settings.log_path.clone().ok_or_else(|| {
        ExecError(
            "runbot does not know where the security log is: set security.log_path (RUNBOT__SECURITY__LOG_PATH) to the stack's logs/security.log"
                .into(),
        )
    })?;
    let window_text = ctx.text("window").unwrap_or("1h").to_string();
    let window = duration::parse(&window_text).unwrap_or(std::time::Duration::from_secs(3600));
    let since = ctx.now - chrono::Duration::from_std(window).unwrap_or_default();
    let shown = path.display().to_string();
    let scanned = tokio::task::spawn_blocking(move || scan(&path, since))
        .await
        .map_err(|e| ExecError(e.to_string()))?
        .map_err(|e| ExecError(format!("cannot read {shown}: {e}")))?;
    // Without the blocks every address would look unblocked and get a Block button.
    let blocked: Vec<ipnet::IpNet> = ex
        .store
        .active_blocks()
        .await
        .map_err(|e| {
            ExecError(format!(
                "the blocks cannot be read from the database ({e}), so runbot cannot say which addresses are blocked already; try again in a minute"
            ))
        })?
        .iter()
        .filter_map(|b| crate::domain::net::parse_range(&b.network).ok())
        .collect();
    let mut notes = Vec::new();
    if scanned.estimated {
        notes.push(format!(
            "about {} more addresses than the {TRACKED} runbot counts one by one, so counts are estimates: a range is the fewest and the most each can be",
            scanned.sources.saturating_sub(TRACKED as u64)
        ));
    }
    if scanned
        .top
        .iter()
        .take(ex.settings.top)
        .any(|t| t.source.ends_with("/64"))
    {
        notes.push("IPv6 counted by /64 network where several of its addresses failed".into());
    }
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
    for Top {
        source: ip,
        failures,
        at_least,
    } in scanned.top.iter().take(ex.settings.top)
    {
        let shown = if at_least == failures {
            failures.to_string()
        } else {
            format!("{at_least}-{failures}")
        };
        let net = crate::domain::net::parse_range(ip).ok();
        let note = match &net {
            Some(net) if blocked.iter().any(|b| b.contains(net)) => "blocked".to_string(),
            Some(net) => {
                match ex.guard.refuse_dangerous(net, &[]) {
                    Err(_) => "never blocked (allow-list or special)".into(),
                    Ok(()) => {
                        let reason = if at_least == failures {
                            format!("{failures} failed logins in {window_text} per security.log")
                        } else {
                            format!("at least {at_least} failed logins in {window_text} per security.log")
                        };
                        let block = |args: &[(&str, &str)]| {
                            ButtonId::Command {
                                command: "block-ip".into(),
                                args: args
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_string()))
                                    .collect(),
                            }
                            .format()
                        };
                        let id = block(&[("address", ip), ("reason", &reason)])
                            .or_else(|| block(&[("address", ip)]));
                        if let Some(id) = id {
                            buttons.push(ReplyButton {
                                id,
                                label: crate::domain::text::clip(&format!("Block {ip}"), 78),
                                style: ButtonStyle::Danger,
                            });
                        }
                        String::new()
                    }
                }
            }
            None => String::new(),
        };
        rows.push([ip.clone(), shown, note]);
    }
    let about = if scanned.estimated { "about " } else { "" };
    let addresses = format!(
        "{about}{} address{}",
        scanned.sources,
        if scanned.sources == 1 { "" } else { "es" }
    );
    let mut r = reply(
        format!(
            "Failed logins in the last {window_text} by address ({} in all, {addresses}){notes}. Block asks for /block-ip, with confirmation:",
            scanned.failures,
        ),
        true,
    );
    r.code_block = Some(table(&rows));
    r.buttons = buttons;
    Ok(Done {
        reply: r,
        summary: format!(
            "{} login failures from {addresses} in {window_text}",
            scanned.failures,
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
        assert_eq!(counts(&s), [("198.51.100.20", 1666), ("203.0.113.7", 834)]);
        assert_eq!((s.sources, s.estimated), (2, false));
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
        assert_eq!(counts(&s), [("203.0.113.7", 2), ("203.0.113.8", 1)]);
    }

    /// Exact counts as (source, failures).
    fn counts(s: &Scan) -> Vec<(&str, u64)> {
        s.top
            .iter()
            .map(|t| {
                assert_eq!(t.at_least, t.failures, "exact: {t:?}");
                (t.source.as_str(), t.failures)
            })
            .collect()
    }

    fn failure(ip: &str) -> String {
        format!(
            "{{\"timestamp\":\"2026-11-28T03:30:00Z\",\"event\":\"login_failure\",\"ip_address\":\"{ip}\"}}\n"
        )
    }

    #[test]
    fn a_spray_of_addresses_keeps_memory_bounded_and_the_hot_address_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.log");
        // 200,000 addresses, each in a /64 of its own, once each; one address 100 times
        // among them.
        let mut text = String::with_capacity(200_100 * 100);
        for i in 0..200_000u32 {
            text.push_str(&failure(&format!(
                "2001:db8:{:x}:{:x}::1",
                i >> 16,
                i & 0xffff
            )));
            if i % 2000 == 0 {
                text.push_str(&failure("2001:db8:ffff:ffff::7"));
            }
        }
        std::fs::write(&path, text).unwrap();
        let started = std::time::Instant::now();
        let s = scan(&path, "2026-11-28T03:00:00Z".parse().unwrap()).unwrap();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(60), "{took:?}");
        assert_eq!(s.failures, 200_100);
        assert!(s.top.len() <= TRACKED, "{} sources held", s.top.len());
        assert_eq!(
            s.top[0].source,
            "2001:db8:ffff:ffff::7",
            "{:?}",
            &s.top[..3]
        );
        assert!(
            s.top[0].failures >= 100 && s.top[0].at_least <= 100,
            "{:?}",
            s.top[0]
        );
        assert!(s.top[1].failures < 100, "{:?}", s.top[1]);
        assert!(s.estimated);
        assert!(
            (195_000..=205_000).contains(&s.sources),
            "about 200,001 sources: {}",
            s.sources
        );
    }

    #[test]
    fn the_summary_never_holds_more_than_its_capacity_and_finds_the_heavy_hitters() {
        let mut top = TopSources::new(1000);
        let started = std::time::Instant::now();
        for i in 0..1_000_000u32 {
            top.add(IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 | i)));
            if i % 100 == 0 {
                top.add("203.0.113.9".parse().unwrap());
            }
            if i % 250 == 0 {
                top.add("198.51.100.4".parse().unwrap());
            }
            assert!(top.len() <= 1000);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        let shown: Vec<String> = top.top().into_iter().take(2).map(|t| t.source).collect();
        assert_eq!(shown, ["203.0.113.9", "198.51.100.4"]);
        let first = &top.top()[0];
        assert!(
            first.at_least <= 10_000 && first.failures >= 10_000,
            "{first:?}"
        );
        assert!(!top.exact());
    }

    #[test]
    fn ipv6_is_counted_by_64_and_a_lone_address_is_shown_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.log");
        let mut text = String::new();
        for i in 0..300u32 {
            text.push_str(&failure(&format!("2001:db8:1:2::{:x}", i + 1)));
        }
        for _ in 0..3 {
            text.push_str(&failure("2001:db8:9::5"));
            text.push_str(&failure("::ffff:192.0.2.4"));
            text.push_str(&failure("192.0.2.4"));
        }
        std::fs::write(&path, text).unwrap();
        let s = scan(&path, "2026-11-28T03:00:00Z".parse().unwrap()).unwrap();
        assert_eq!(
            counts(&s),
            [
                ("2001:db8:1:2::/64", 300),
                ("192.0.2.4", 6),
                ("2001:db8:9::5", 3)
            ]
        );
        assert_eq!((s.sources, s.estimated), (3, false));
    }

    #[test]
    fn a_huge_file_without_a_newline_is_read_once_as_one_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.log");
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            let block = vec![b'x'; 1 << 20];
            for _ in 0..64 {
                f.write_all(&block).unwrap();
            }
        }
        let started = std::time::Instant::now();
        let s = scan(&path, "2026-11-28T03:00:00Z".parse().unwrap()).unwrap();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
        assert_eq!((s.failures, s.bad, s.undated), (0, 1, 0), "{s:?}");
    }

    #[test]
    fn a_line_over_the_bound_is_one_bad_line_between_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.log");
        let long = format!(
            "{{\"timestamp\":\"2026-11-28T03:30:00Z\",\"event\":\"login_failure\",\"ip_address\":\"203.0.113.8\",\"ua\":\"{}\"}}\n",
            "x".repeat(MAX_LINE)
        );
        let text = failure("203.0.113.7") + &long + &failure("203.0.113.7");
        std::fs::write(&path, text).unwrap();
        let s = scan(&path, "2026-11-28T03:00:00Z".parse().unwrap()).unwrap();
        assert_eq!((s.failures, s.bad), (2, 1), "{s:?}");
        assert_eq!(counts(&s), [("203.0.113.7", 2)]);
    }
}
