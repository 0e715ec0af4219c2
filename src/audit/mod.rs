//! The audit trail: one append-only row per step of a request, chained by SHA-256.
//!
//! Every row stores `prev_hash` (the previous row's `hash`; 64 zeros for the first row) and
//!
//! ```text
//! hash = lowercase hex SHA-256( prev_hash + "\n" + canonical content )
//! ```
//!
//! The **canonical content** is a JSON object of every column except `hash`, with keys in
//! byte order and no whitespace, as `serde_json` writes it:
//!
//! ```text
//! {"actor_id":…,"actor_name":…,"actor_platform":…,"args":…,"at":…,"command":…,"detail":…,
//!  "id":…,"invocation_id":…,"origin":…,"prev_hash":…,"reason":…,"step":…}
//! ```
//!
//! `id` is a JSON number; `reason` and `detail` are `null` when absent; every other value is a
//! JSON string holding the column's text exactly as stored. `args`, `origin` and `detail` are
//! therefore JSON *strings* whose content is JSON text: runbot writes that text itself in
//! canonical form (object keys sorted, no whitespace), but the hash covers the stored bytes,
//! so nothing needs to be re-serialized to check it. `at` is fixed-width RFC 3339 UTC with
//! nanoseconds ([`crate::domain::format_time`]). The key order comes from the field order of a
//! private struct (alphabetical), not from a map, so it cannot change with serde_json features.
//!
//! Appends take a lock every writer shares (see [`Store::append_audit_row`]), so the chain
//! stays linear with several tasks and replicas, and ids are contiguous: a gap means a removed
//! row. [`Audit::verify`] walks the chain and names the first problem.
//!
//! The chain has no key: whoever can write the table can also rewrite every row from some
//! point to the end with fresh hashes, or drop the last rows. The database refuses UPDATE and
//! DELETE through triggers, and the head (the last row's id and hash: `runbot audit head`,
//! [`VerifyReport::head`], and the `audit head` line `runbot serve` logs every
//! `audit.head_log_secs`) is what to keep elsewhere to catch that: `runbot audit verify
//! --expect-head ID:HASH` fails when that row is gone or holds another hash ([`HeadCheck`]).
//!
//! Each append is durable when it returns, not only committed: SQLite runs the append's
//! connection at `synchronous = FULL` (the shared setting, `NORMAL`, can lose the last
//! commits to a power cut, which would silently cut the trail's tail), and PostgreSQL's
//! `synchronous_commit = off` is raised to `on` for the append's transaction.

pub mod cli;
mod export;
mod verify;

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use export::{ExportFormat, CSV_HEADER};
pub use verify::{ExpectedHead, HeadCheck, Problem, VerifyReport};

use crate::config::{Backend, DatabaseSettings};
use crate::request::Platform;
pub use crate::store::audit::{AuditFilter, AuditHead, AuditRow};
use crate::store::Store;

/// Turns an entry into the row that follows `head` on the chain (called under the trail's lock).
fn sealer(entry: AuditEntry) -> impl FnOnce(Option<AuditHead>) -> AuditRow + Send {
    let args = canonical_json(&Value::Object(entry.args));
    let origin = canonical_json(&Value::Object(entry.origin));
    let detail = entry.detail.as_ref().map(canonical_json);
    move |head| {
        let (id, prev_hash) = match head {
            Some(h) => (h.id + 1, h.hash),
            None => (1, GENESIS.to_string()),
        };
        let mut row = AuditRow {
            id,
            // Taken under the lock, so times never go backwards along the chain
            // (unless the clock does).
            at: crate::domain::format_time(Utc::now()),
            invocation_id: entry.invocation_id,
            step: entry.step.as_str().to_string(),
            actor_platform: entry.actor_platform.as_str().to_string(),
            actor_id: entry.actor_id,
            actor_name: entry.actor_name,
            command: entry.command,
            args,
            origin,
            reason: entry.reason,
            detail,
            prev_hash,
            hash: String::new(),
        };
        row.hash = row_hash(&row);
        row
    }
}

/// The first row's `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows read per query by [`Audit::verify`] and [`Audit::export`].
pub const DEFAULT_PAGE_SIZE: i64 = 1000;

/// One step in the life of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Requested,
    Denied,
    Invalid,
    RateLimited,
    Confirmed,
    Cancelled,
    Approved,
    Rejected,
    Expired,
    Started,
    Succeeded,
    Failed,
    DryRun,
    /// runbot stopped while the command ran; written by the runbot that found it.
    Interrupted,
}

impl Step {
    pub const ALL: [Step; 14] = [
        Step::Requested,
        Step::Denied,
        Step::Invalid,
        Step::RateLimited,
        Step::Confirmed,
        Step::Cancelled,
        Step::Approved,
        Step::Rejected,
        Step::Expired,
        Step::Started,
        Step::Succeeded,
        Step::Failed,
        Step::DryRun,
        Step::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Requested => "requested",
            Step::Denied => "denied",
            Step::Invalid => "invalid",
            Step::RateLimited => "rate_limited",
            Step::Confirmed => "confirmed",
            Step::Cancelled => "cancelled",
            Step::Approved => "approved",
            Step::Rejected => "rejected",
            Step::Expired => "expired",
            Step::Started => "started",
            Step::Succeeded => "succeeded",
            Step::Failed => "failed",
            Step::DryRun => "dry_run",
            Step::Interrupted => "interrupted",
        }
    }
}

impl FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> Result<Step, String> {
        Step::ALL
            .into_iter()
            .find(|step| step.as_str() == s)
            .ok_or_else(|| format!("unknown audit step {s:?}"))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller records; the trail adds the id, the time and the hashes.
///
/// `args` are stored as given: the invocation core must not put secrets in them.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Shared by every row of one request.
    pub invocation_id: String,
    pub step: Step,
    pub actor_platform: Platform,
    pub actor_id: String,
    pub actor_name: String,
    pub command: String,
    pub args: Map<String, Value>,
    /// Where the request came from: channel, message, alert group id, …
    pub origin: Map<String, Value>,
    /// Why it was denied, invalid, rate limited or failed.
    pub reason: Option<String>,
    /// Anything else: the approver, the error, `duration_ms`, …
    pub detail: Option<Value>,
}

impl AuditEntry {
    /// An entry with empty args and origin and no reason or detail.
    pub fn new(
        invocation_id: impl Into<String>,
        step: Step,
        actor_platform: Platform,
        actor_id: impl Into<String>,
        actor_name: impl Into<String>,
        command: impl Into<String>,
    ) -> AuditEntry {
        AuditEntry {
            invocation_id: invocation_id.into(),
            step,
            actor_platform,
            actor_id: actor_id.into(),
            actor_name: actor_name.into(),
            command: command.into(),
            args: Map::new(),
            origin: Map::new(),
            reason: None,
            detail: None,
        }
    }

    pub fn args(mut self, args: Map<String, Value>) -> AuditEntry {
        self.args = args;
        self
    }

    pub fn origin(mut self, origin: Map<String, Value>) -> AuditEntry {
        self.origin = origin;
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> AuditEntry {
        self.reason = Some(reason.into());
        self
    }

    pub fn detail(mut self, detail: Value) -> AuditEntry {
        self.detail = Some(detail);
        self
    }

    fn check(&self) -> Result<(), AuditError> {
        for (name, value) in [
            ("invocation_id", &self.invocation_id),
            ("actor_id", &self.actor_id),
            ("command", &self.command),
        ] {
            if value.is_empty() {
                return Err(AuditError::Invalid(format!("{name} is empty")));
            }
        }
        // PostgreSQL's text cannot hold NUL; refuse it on both databases alike. (JSON text
        // escapes it, so only the plain columns can carry one.)
        for (name, value) in [
            ("invocation_id", Some(&self.invocation_id)),
            ("actor_id", Some(&self.actor_id)),
            ("actor_name", Some(&self.actor_name)),
            ("command", Some(&self.command)),
            ("reason", self.reason.as_ref()),
        ] {
            if value.is_some_and(|v| v.contains('\0')) {
                return Err(AuditError::Invalid(format!(
                    "{name} contains a NUL character"
                )));
            }
        }
        Ok(())
    }
}

/// One row as read back: the entry plus what the trail added.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    /// RFC 3339 UTC, fixed width.
    pub at: String,
    pub invocation_id: String,
    pub step: Step,
    pub actor_platform: Platform,
    pub actor_id: String,
    pub actor_name: String,
    pub command: String,
    pub args: Value,
    pub origin: Value,
    pub reason: Option<String>,
    pub detail: Option<Value>,
    pub prev_hash: String,
    pub hash: String,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = AuditError;

    fn try_from(row: AuditRow) -> Result<AuditRecord, AuditError> {
        let id = row.id;
        let unreadable = |what: String| AuditError::Unreadable { id, what };
        let json = |name: &str, text: &str| {
            serde_json::from_str::<Value>(text)
                .map_err(|e| unreadable(format!("{name} is not JSON ({e})")))
        };
        Ok(AuditRecord {
            id,
            step: row.step.parse().map_err(unreadable)?,
            actor_platform: row.actor_platform.parse().map_err(unreadable)?,
            args: json("args", &row.args)?,
            origin: json("origin", &row.origin)?,
            detail: row
                .detail
                .as_deref()
                .map(|d| json("detail", d))
                .transpose()?,
            at: row.at,
            invocation_id: row.invocation_id,
            actor_id: row.actor_id,
            actor_name: row.actor_name,
            command: row.command,
            reason: row.reason,
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit entry refused: {0}")]
    Invalid(String),
    #[error("audit store: {0}")]
    Store(#[from] sqlx::Error),
    /// A row that cannot be read back as an [`AuditRecord`]; `runbot audit verify` says more.
    #[error("audit row {id}: {what}")]
    Unreadable { id: i64, what: String },
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the export: {0}")]
    Export(String),
}

/// The audit trail in a store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Audit {
    store: Store,
    page_size: i64,
}

impl Audit {
    pub fn new(store: Store) -> Audit {
        Audit {
            store,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// Rows read per query while verifying or exporting (at least 1).
    pub fn with_page_size(mut self, rows: i64) -> Audit {
        self.page_size = rows.max(1);
        self
    }

    /// Appends one row and returns it once committed: record a step before it takes effect.
    #[tracing::instrument(skip_all, fields(invocation_id = %entry.invocation_id, step = %entry.step, command = %entry.command))]
    pub async fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        entry.check()?;
        let step = entry.step;
        let row = self.store.append_audit_row(sealer(entry)).await?;
        metrics::counter!("runbot_audit_appended_total", "step" => step.as_str()).increment(1);
        tracing::debug!(id = row.id, "audit row appended");
        AuditRecord::try_from(row)
    }

    /// Appends several entries in order, all or none, in one transaction (one flush to disk):
    /// for runbot's own bursts, such as the escalation steps of many groups falling due at once.
    pub async fn append_many(
        &self,
        entries: Vec<AuditEntry>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        for e in &entries {
            e.check()?;
        }
        let steps: Vec<Step> = entries.iter().map(|e| e.step).collect();
        let rows = self
            .store
            .append_audit_rows(entries.into_iter().map(sealer).collect())
            .await?;
        for step in steps {
            metrics::counter!("runbot_audit_appended_total", "step" => step.as_str()).increment(1);
        }
        rows.into_iter().map(AuditRecord::try_from).collect()
    }

    /// The `limit` most recent rows that match, newest first (at most 10,000).
    pub async fn recent(
        &self,
        limit: usize,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let limit = limit.min(10_000) as i64;
        self.store
            .audit_recent(limit, filter)
            .await?
            .into_iter()
            .map(AuditRecord::try_from)
            .collect()
    }

    /// The last row's id and hash, or None for an empty trail.
    pub async fn head(&self) -> Result<Option<AuditHead>, AuditError> {
        Ok(self.store.audit_head().await?)
    }

    /// One pass of the head report `runbot serve` makes every `audit.head_log_secs`: logs the
    /// head's id and hash at info (kept with the logs, outside the database) and sets the
    /// gauge [`crate::telemetry::AUDIT_HEAD_ID`] to its id (0 for an empty trail). The hash
    /// is never a metric label: every append would add a series.
    pub async fn log_head(&self) -> Result<Option<AuditHead>, AuditError> {
        let head = self.head().await?;
        match &head {
            Some(h) => tracing::info!(id = h.id, hash = %h.hash, "audit head"),
            None => tracing::info!(id = 0, "audit head"),
        }
        metrics::gauge!(crate::telemetry::AUDIT_HEAD_ID)
            .set(head.as_ref().map_or(0, |h| h.id) as f64);
        Ok(head)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn page_size(&self) -> i64 {
        self.page_size
    }
}

/// The hash a row should have: SHA-256 over `prev_hash`, a newline and the canonical content.
pub fn row_hash(row: &AuditRow) -> String {
    let mut h = Sha256::new();
    h.update(row.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical_content(row).as_bytes());
    crate::domain::text::hex(&h.finalize())
}

/// The row's columns except `hash`, as described in the module documentation.
pub fn canonical_content(row: &AuditRow) -> String {
    // Fields in alphabetical order: serde writes them in declaration order.
    #[derive(Serialize)]
    struct Canonical<'a> {
        actor_id: &'a str,
        actor_name: &'a str,
        actor_platform: &'a str,
        args: &'a str,
        at: &'a str,
        command: &'a str,
        detail: Option<&'a str>,
        id: i64,
        invocation_id: &'a str,
        origin: &'a str,
        prev_hash: &'a str,
        reason: Option<&'a str>,
        step: &'a str,
    }
    serde_json::to_string(&Canonical {
        actor_id: &row.actor_id,
        actor_name: &row.actor_name,
        actor_platform: &row.actor_platform,
        args: &row.args,
        at: &row.at,
        command: &row.command,
        detail: row.detail.as_deref(),
        id: row.id,
        invocation_id: &row.invocation_id,
        origin: &row.origin,
        prev_hash: &row.prev_hash,
        reason: row.reason.as_deref(),
        step: &row.step,
    })
    .expect("strings and numbers always serialize")
}

/// JSON text with object keys sorted at every level and no whitespace, whatever serde_json's
/// features (`preserve_order` would keep insertion order otherwise).
pub fn canonical_json(value: &Value) -> String {
    struct Sorted<'a>(&'a Value);
    impl Serialize for Sorted<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            match self.0 {
                Value::Object(m) => {
                    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    let mut map = s.serialize_map(Some(entries.len()))?;
                    for (k, v) in entries {
                        map.serialize_entry(k, &Sorted(v))?;
                    }
                    map.end()
                }
                Value::Array(items) => s.collect_seq(items.iter().map(Sorted)),
                other => other.serialize(s),
            }
        }
    }
    serde_json::to_string(&Sorted(value)).expect("a JSON value always serializes")
}

/// Opens the configured database for the `audit` commands. Unlike `serve`, a SQLite file that
/// does not exist is an error: an empty new database would "verify" and hide a wrong path.
pub async fn open_store(settings: &DatabaseSettings) -> anyhow::Result<Store> {
    match open_existing_store(settings).await? {
        Ok(store) => Ok(store),
        Err(path) => anyhow::bail!(
            "no database at {}: run this where `runbot serve` runs, or set database.url",
            path.display()
        ),
    }
}

/// The configured database, or the path of the SQLite file that does not exist yet (never
/// made here).
pub async fn open_existing_store(
    settings: &DatabaseSettings,
) -> anyhow::Result<Result<Store, std::path::PathBuf>> {
    if settings.backend() == Some(Backend::Sqlite) {
        use secrecy::ExposeSecret;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(settings.url.expose_secret())
            .context("database.url is not a SQLite URL")?;
        let path = options.get_filename();
        if !path.exists() {
            return Ok(Err(path.to_path_buf()));
        }
    }
    Ok(Ok(Store::connect(settings).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            id: 1,
            at: "2026-11-27T19:31:13.991875004Z".into(),
            invocation_id: "inv-1".into(),
            step: "requested".into(),
            actor_platform: "discord".into(),
            actor_id: "42".into(),
            actor_name: "Ana".into(),
            command: "restart".into(),
            args: r#"{"service":"backend"}"#.into(),
            origin: r#"{"channel":"c1"}"#.into(),
            reason: None,
            detail: None,
            prev_hash: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn canonical_content_has_sorted_keys_and_no_whitespace() {
        assert_eq!(
            canonical_content(&row()),
            concat!(
                r#"{"actor_id":"42","actor_name":"Ana","actor_platform":"discord","#,
                r#""args":"{\"service\":\"backend\"}","at":"2026-11-27T19:31:13.991875004Z","#,
                r#""command":"restart","detail":null,"id":1,"invocation_id":"inv-1","#,
                r#""origin":"{\"channel\":\"c1\"}","prev_hash":"#,
                r#""0000000000000000000000000000000000000000000000000000000000000000","#,
                r#""reason":null,"step":"requested"}"#
            )
        );
    }

    /// The hash is a contract with every stored row: this value was computed independently
    /// (Python: hashlib.sha256((prev + "\n" + json.dumps(fields, sort_keys=True,
    /// separators=(",", ":"))).encode()).hexdigest()).
    #[test]
    fn row_hash_is_stable() {
        assert_eq!(
            row_hash(&row()),
            "e854157017236a7a35529b7216b0a2b6127825170d69f20e9467157096420518"
        );
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":"x y"}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x y","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn steps_and_platforms_round_trip_through_text() {
        for s in Step::ALL {
            assert_eq!(s.as_str().parse::<Step>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!("exploded".parse::<Step>().is_err());
    }

    #[test]
    fn empty_ids_and_nul_characters_are_refused() {
        let ok = AuditEntry::new("i", Step::Requested, Platform::Cli, "u", "n", "c");
        assert!(ok.check().is_ok());
        let mut e = ok.clone();
        e.command.clear();
        assert!(matches!(e.check(), Err(AuditError::Invalid(m)) if m.contains("command")));
        let e = ok.reason("bad\0");
        assert!(matches!(e.check(), Err(AuditError::Invalid(m)) if m.contains("reason")));
    }
}
