//! One transaction for a batch of webhooks: load what the batch touches, run the group
//! lifecycle (passed in: it lives in `alerts`, above the store) on each webhook in arrival
//! order in memory, then write only what changed with a few multi-row statements.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::sql::{write_rows, Bind};
use super::{placeholders, Store};
use crate::config::Backend;
use crate::domain::alert::{
    AlertEvent, AlertState, AlertStates, GroupState, IncomingGroup, Lifecycle,
};
use crate::domain::{format_time, AlertStatus, GroupStatus, Severity};

/// What storing one webhook did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub group_id: i64,
    /// Alerts in the webhook.
    pub alerts: usize,
    /// Timeline entries this webhook added (0 for a pure re-send).
    pub changes: usize,
    /// The group's status after this webhook when the webhook changed it (opened, resolved,
    /// fired again); None otherwise.
    pub group_became: Option<GroupStatus>,
}

/// Rows per multi-row statement: well under SQLite's 32766 and PostgreSQL's 65535 parameters.
const ROWS_PER_STATEMENT: usize = 400;
/// Groups have more columns.
const GROUPS_PER_STATEMENT: usize = ROWS_PER_STATEMENT / 4;
const KEYS_PER_QUERY: usize = 1000;

/// A stable 64-bit key for a PostgreSQL advisory lock on one group (FNV-1a).
fn lock_key(receiver: &str, group_key: &str) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in receiver.bytes().chain([0u8]).chain(group_key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h as i64
}

/// What one batch works on: the groups and alerts it touches, loaded from the store by a
/// backend-specific loader, then changed in memory by [`WorkingSet::apply_all`].
pub(super) struct WorkingSet<'a> {
    pub batch: &'a [&'a IncomingGroup],
    /// Distinct (receiver, group key) pairs, in first-seen order.
    pub keys: Vec<(&'a str, &'a str)>,
    pub index: HashMap<(&'a str, &'a str), usize>,
    pub groups: Vec<Option<GroupState>>,
    /// Per group: its id once stored.
    pub ids: Vec<Option<i64>>,
    pub alerts: Vec<AlertStates>,
    pub now: String,
}

/// The outcome of applying a batch, ready to be written.
pub(super) struct Applied {
    pub groups: Vec<GroupState>,
    /// Per group: its id, None for a new group.
    pub ids: Vec<Option<i64>>,
    /// Per group: whether its own row changed.
    pub dirty: Vec<bool>,
    pub alerts: Vec<AlertStates>,
    /// In webhook order; `pending` says which group each belongs to.
    pub events: Vec<AlertEvent>,
    /// Per webhook: (group index, alerts, changes, group status change).
    pending: Vec<(usize, usize, usize, Option<GroupStatus>)>,
}

impl<'a> WorkingSet<'a> {
    pub fn new(batch: &'a [&'a IncomingGroup], now: DateTime<Utc>) -> Self {
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        let mut keys: Vec<(&str, &str)> = Vec::new();
        for g in batch {
            let k = (g.receiver.as_str(), g.group_key.as_str());
            if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(k) {
                slot.insert(keys.len());
                keys.push(k);
            }
        }
        WorkingSet {
            batch,
            groups: (0..keys.len()).map(|_| None).collect(),
            ids: vec![None; keys.len()],
            alerts: (0..keys.len()).map(|_| HashMap::new()).collect(),
            keys,
            index,
            now: format_time(now),
        }
    }

    pub fn group_of(&self, g: &IncomingGroup) -> usize {
        self.index[&(g.receiver.as_str(), g.group_key.as_str())]
    }

    /// Stores a loaded group row under its batch index.
    pub fn loaded(&mut self, gi: usize, (id, state): (i64, GroupState)) {
        self.ids[gi] = Some(id);
        self.groups[gi] = Some(state);
    }

    /// Runs the lifecycle on every webhook in arrival order.
    pub fn apply_all(mut self, lifecycle: Lifecycle) -> Applied {
        let mut events: Vec<AlertEvent> = Vec::new();
        let mut dirty = vec![false; self.groups.len()];
        let mut pending = Vec::with_capacity(self.batch.len());
        for g in self.batch {
            let gi = self.group_of(g);
            let before = events.len();
            let t = lifecycle(
                g,
                &mut self.groups[gi],
                &mut self.alerts[gi],
                &mut events,
                &self.now,
            );
            dirty[gi] |= t.group_changed;
            pending.push((gi, g.alerts.len(), events.len() - before, t.group_became));
        }
        Applied {
            groups: self
                .groups
                .into_iter()
                .map(|g| g.expect("every group in the batch was loaded or created"))
                .collect(),
            ids: self.ids,
            dirty,
            alerts: self.alerts,
            events,
            pending,
        }
    }
}

impl Applied {
    /// Alerts to write, with their group's index.
    pub fn changed_alerts(&self) -> impl Iterator<Item = (usize, &String, &AlertState)> {
        self.alerts.iter().enumerate().flat_map(|(gi, m)| {
            m.iter()
                .filter(|(_, (_, changed))| *changed)
                .map(move |(fp, (s, _))| (gi, fp, s))
        })
    }

    /// Groups this batch changed in any way (new, updated, or with a changed alert): their
    /// chat cards are out of date.
    pub fn changed_groups(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.groups.len()).filter(|&gi| {
            self.ids[gi].is_none()
                || self.dirty[gi]
                || self.alerts[gi].values().any(|(_, changed)| *changed)
        })
    }

    /// Each timeline entry with its group's index.
    pub fn events(&self) -> impl Iterator<Item = (usize, &AlertEvent)> {
        self.pending
            .iter()
            .flat_map(|&(gi, _, changes, _)| std::iter::repeat_n(gi, changes))
            .zip(&self.events)
    }

    /// One receipt per webhook, once every group has its id.
    pub fn receipts(&self, ids: &[i64]) -> Vec<Receipt> {
        self.pending
            .iter()
            .map(|&(gi, alerts, changes, group_became)| Receipt {
                group_id: ids[gi],
                alerts,
                changes,
                group_became,
            })
            .collect()
    }
}

/// Reads a stored row, whichever driver fetched it.
pub(super) trait Columns {
    type Error;
    fn text(&self, col: &str) -> Result<String, Self::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, Self::Error>;
    fn int(&self, col: &str) -> Result<i64, Self::Error>;
    /// The error for a stored value runbot does not know.
    fn unknown(&self, col: &str, value: String) -> Self::Error;

    /// A column holding an enum's stored text.
    fn parsed<T>(&self, col: &str, parse: fn(&str) -> Option<T>) -> Result<T, Self::Error> {
        let text = self.text(col)?;
        parse(&text).ok_or_else(|| self.unknown(col, text))
    }

    fn opt_parsed<T>(
        &self,
        col: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<Option<T>, Self::Error> {
        let text = self.opt_text(col)?;
        text.map(|t| parse(&t).ok_or_else(|| self.unknown(col, t)))
            .transpose()
    }
}

impl Columns for AnyRow {
    type Error = sqlx::Error;
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(col)
    }
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.try_get(col)
    }
    fn unknown(&self, col: &str, value: String) -> sqlx::Error {
        super::unknown_value(col, value)
    }
}

impl Store {
    /// Stores a batch of webhooks in one transaction and says what each did. SQLite's writer
    /// thread uses [`super::sqlite_writer`] instead, which makes no async round trips.
    pub async fn ingest(
        &self,
        batch: &[&IncomingGroup],
        now: DateTime<Utc>,
        lifecycle: Lifecycle,
    ) -> Result<Vec<Receipt>, sqlx::Error> {
        let mut set = WorkingSet::new(batch, now);
        let now = set.now.clone();
        let mut tx = self.write_pool.begin().await?;

        if self.backend == Backend::Postgres {
            // Replicas may receive the same group at once (several Alertmanager peers): serialize
            // per group, in a fixed order so two batches never wait on each other in a cycle.
            let mut locks: Vec<i64> = set.keys.iter().map(|(r, k)| lock_key(r, k)).collect();
            locks.sort_unstable();
            locks.dedup();
            for l in locks {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(l)
                    .execute(&mut *tx)
                    .await?;
            }
        }

        load_groups(&mut tx, self.backend, &mut set).await?;
        load_alerts(&mut tx, self.backend, &mut set).await?;
        let applied = set.apply_all(lifecycle);
        let ids = write_groups(&mut tx, self.backend, &applied).await?;
        write_changes(
            &mut tx,
            self.backend,
            &ids,
            &applied,
            &self.chat_platforms,
            &now,
        )
        .await?;
        tx.commit().await?;
        Ok(applied.receipts(&ids))
    }
}

/// Queues a group's card for each chat platform. A row already waiting only gets a higher
/// version (so changes collapse into one send); one given up on (`dead`) is revived.
pub(super) const OUTBOX_INSERT: &str =
    "INSERT INTO chat_outbox (group_id, platform, version, due_at) VALUES";
pub(super) const OUTBOX_UPSERT: &str = "ON CONFLICT (group_id, platform) DO UPDATE SET \
    version = chat_outbox.version + 1, \
    attempts = CASE WHEN chat_outbox.dead = 1 THEN 0 ELSE chat_outbox.attempts END, \
    due_at = CASE WHEN chat_outbox.dead = 1 THEN excluded.due_at ELSE chat_outbox.due_at END, \
    dead = 0";

pub(super) const GROUP_COLUMNS: &str =
    "receiver, group_key, status, severity, severity_note, runbook, \
    group_labels, common_labels, common_annotations, external_url, truncated_alerts, \
    started_at, resolved_at, created_at, updated_at";

/// The values of a group row in the order of `GROUP_COLUMNS`, after the `$first` values (its
/// id, to update it): one tuple for sqlx's `bind_all` and for rusqlite alike.
macro_rules! group_row {
    ($($first:expr),*; $group:expr) => {{
        let g: &crate::domain::alert::GroupState = $group;
        (
            $($first,)*
            &g.receiver,
            &g.group_key,
            g.status.as_str(),
            g.severity.as_str(),
            &g.severity_note,
            &g.runbook,
            &g.group_labels,
            &g.common_labels,
            &g.common_annotations,
            &g.external_url,
            g.truncated_alerts,
            &g.started_at,
            &g.resolved_at,
            &g.created_at,
            &g.updated_at,
        )
    }};
}
pub(super) use group_row;

async fn load_groups(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    set: &mut WorkingSet<'_>,
) -> Result<(), sqlx::Error> {
    let mut group_keys: Vec<&str> = set.keys.iter().map(|(_, k)| *k).collect();
    group_keys.sort_unstable();
    group_keys.dedup();
    for chunk in group_keys.chunks(KEYS_PER_QUERY) {
        let sql = format!(
            "SELECT id, {GROUP_COLUMNS} FROM alert_groups WHERE group_key IN ({})",
            placeholders(backend, chunk.len(), 1)
        );
        let mut q = sqlx::query(&sql);
        for k in chunk {
            q = q.bind(*k);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let receiver: String = row.try_get("receiver")?;
            let group_key: String = row.try_get("group_key")?;
            if let Some(&gi) = set.index.get(&(receiver.as_str(), group_key.as_str())) {
                set.loaded(gi, group_from_row(&row)?);
            }
        }
    }
    Ok(())
}

/// A group's id and state.
pub(super) fn group_from_row<R: Columns>(row: &R) -> Result<(i64, GroupState), R::Error> {
    let state = GroupState {
        receiver: row.text("receiver")?,
        group_key: row.text("group_key")?,
        status: row.parsed("status", GroupStatus::parse)?,
        severity: row.parsed("severity", Severity::parse)?,
        severity_note: row.opt_text("severity_note")?,
        runbook: row.opt_text("runbook")?,
        group_labels: row.text("group_labels")?,
        common_labels: row.text("common_labels")?,
        common_annotations: row.text("common_annotations")?,
        external_url: row.text("external_url")?,
        truncated_alerts: row.int("truncated_alerts")?,
        started_at: row.text("started_at")?,
        resolved_at: row.opt_text("resolved_at")?,
        created_at: row.text("created_at")?,
        updated_at: row.text("updated_at")?,
    };
    Ok((row.int("id")?, state))
}

pub(super) fn alert_from_row<R: Columns>(row: &R) -> Result<AlertState, R::Error> {
    Ok(AlertState {
        status: row.parsed("status", AlertStatus::parse)?,
        severity: row.parsed("severity", Severity::parse)?,
        labels: row.text("labels")?,
        annotations: row.text("annotations")?,
        starts_at: row.text("starts_at")?,
        ends_at: row.opt_text("ends_at")?,
        generator_url: row.text("generator_url")?,
        first_seen_at: row.text("first_seen_at")?,
        updated_at: row.text("updated_at")?,
    })
}

pub(super) const ALERT_COLUMNS: &str =
    "status, severity, labels, annotations, starts_at, ends_at, \
    generator_url, first_seen_at, updated_at";

/// The values of an alert row in the order of `ALERT_COLUMNS`, after the `$first` values
/// (its group and fingerprint): one tuple for sqlx's `bind_all` and for rusqlite alike.
macro_rules! alert_row {
    ($($first:expr),*; $alert:expr) => {{
        let s: &crate::domain::alert::AlertState = $alert;
        (
            $($first,)*
            s.status.as_str(),
            s.severity.as_str(),
            &s.labels,
            &s.annotations,
            &s.starts_at,
            &s.ends_at,
            &s.generator_url,
            &s.first_seen_at,
            &s.updated_at,
        )
    }};
}
pub(super) use alert_row;

/// What an alert row takes from a newer state (first_seen_at stays).
pub(super) const ALERT_UPSERT: &str = "ON CONFLICT (group_id, fingerprint) DO UPDATE SET \
    status = excluded.status, severity = excluded.severity, labels = excluded.labels, \
    annotations = excluded.annotations, starts_at = excluded.starts_at, ends_at = excluded.ends_at, \
    generator_url = excluded.generator_url, updated_at = excluded.updated_at";

/// What a group row takes from a newer state (receiver, group_key, created_at stay).
/// An acknowledgement belongs to one episode: a group firing again after it resolved is
/// nobody's until someone acknowledges it again.
pub(super) const GROUP_UPSERT: &str = "ON CONFLICT (id) DO UPDATE SET \
    status = excluded.status, severity = excluded.severity, \
    severity_note = excluded.severity_note, runbook = excluded.runbook, \
    group_labels = excluded.group_labels, common_labels = excluded.common_labels, \
    common_annotations = excluded.common_annotations, external_url = excluded.external_url, \
    truncated_alerts = excluded.truncated_alerts, started_at = excluded.started_at, \
    resolved_at = excluded.resolved_at, updated_at = excluded.updated_at, \
    acknowledged_by = CASE WHEN alert_groups.status = 'resolved' AND excluded.status <> 'resolved' \
        THEN NULL ELSE alert_groups.acknowledged_by END, \
    acknowledged_at = CASE WHEN alert_groups.status = 'resolved' AND excluded.status <> 'resolved' \
        THEN NULL ELSE alert_groups.acknowledged_at END";

async fn load_alerts(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    set: &mut WorkingSet<'_>,
) -> Result<(), sqlx::Error> {
    let by_id: HashMap<i64, usize> = set
        .ids
        .iter()
        .enumerate()
        .filter_map(|(gi, id)| id.map(|id| (id, gi)))
        .collect();
    if by_id.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = by_id.keys().copied().collect();
    let mut fingerprints: Vec<&str> = Vec::new();
    // Groups that resolve as a whole need every firing alert, also those not in the webhook.
    let mut resolving: Vec<i64> = Vec::new();
    for g in set.batch {
        let Some(id) = set.ids[set.group_of(g)] else {
            continue;
        };
        fingerprints.extend(g.alerts.iter().map(|a| a.fingerprint.as_str()));
        if g.status == GroupStatus::Resolved {
            resolving.push(id);
        }
    }
    fingerprints.sort_unstable();
    fingerprints.dedup();
    resolving.sort_unstable();
    resolving.dedup();

    let mut rows: Vec<AnyRow> = Vec::new();
    for id_chunk in ids.chunks(KEYS_PER_QUERY) {
        for fp_chunk in fingerprints.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT group_id, fingerprint, {ALERT_COLUMNS} FROM alerts \
                 WHERE group_id IN ({}) AND fingerprint IN ({})",
                placeholders(backend, id_chunk.len(), 1),
                placeholders(backend, fp_chunk.len(), id_chunk.len() + 1)
            );
            let mut q = sqlx::query(&sql);
            for id in id_chunk {
                q = q.bind(*id);
            }
            for fp in fp_chunk {
                q = q.bind(*fp);
            }
            rows.extend(q.fetch_all(&mut **tx).await?);
        }
    }
    for chunk in resolving.chunks(KEYS_PER_QUERY) {
        let sql = format!(
            "SELECT group_id, fingerprint, {ALERT_COLUMNS} FROM alerts \
             WHERE group_id IN ({}) AND status = 'firing'",
            placeholders(backend, chunk.len(), 1)
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        rows.extend(q.fetch_all(&mut **tx).await?);
    }
    for row in rows {
        let gid: i64 = row.try_get("group_id")?;
        set.alerts[by_id[&gid]].insert(row.try_get("fingerprint")?, (alert_from_row(&row)?, false));
    }
    Ok(())
}

/// Inserts new groups and updates changed ones; returns every group's id by batch index.
async fn write_groups(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    applied: &Applied,
) -> Result<Vec<i64>, sqlx::Error> {
    let groups = &applied.groups;
    let mut ids: Vec<i64> = applied.ids.iter().map(|id| id.unwrap_or(0)).collect();
    let new: Vec<usize> = (0..groups.len())
        .filter(|&i| applied.ids[i].is_none())
        .collect();
    let insert = format!("INSERT INTO alert_groups ({GROUP_COLUMNS}) VALUES");
    let returning = "RETURNING id, receiver, group_key";
    let inserted = write_rows(
        tx,
        backend,
        (&insert, returning),
        &new,
        GROUPS_PER_STATEMENT,
        |args, &i| args.bind_all(group_row!(; &groups[i])),
    )
    .await?;
    let by_key: HashMap<(&str, &str), usize> = new
        .iter()
        .map(|&i| {
            (
                (groups[i].receiver.as_str(), groups[i].group_key.as_str()),
                i,
            )
        })
        .collect();
    for row in inserted {
        let receiver: String = row.try_get("receiver")?;
        let group_key: String = row.try_get("group_key")?;
        let i = by_key[&(receiver.as_str(), group_key.as_str())];
        ids[i] = row.try_get("id")?;
    }
    // Changed existing groups: one multi-row upsert on the id rather than an UPDATE each.
    let changed: Vec<(i64, &GroupState)> = (0..groups.len())
        .filter_map(|i| Some((applied.ids[i]?, &groups[i])).filter(|_| applied.dirty[i]))
        .collect();
    let upsert = format!("INSERT INTO alert_groups (id, {GROUP_COLUMNS}) VALUES");
    write_rows(
        tx,
        backend,
        (&upsert, GROUP_UPSERT),
        &changed,
        GROUPS_PER_STATEMENT,
        |args, (id, g)| args.bind_all(group_row!(*id; g)),
    )
    .await?;
    Ok(ids)
}

/// Writes the batch's changed alerts and timeline entries, and queues a card for each changed
/// group on each chat platform.
async fn write_changes(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    ids: &[i64],
    applied: &Applied,
    platforms: &[String],
    now: &str,
) -> Result<(), sqlx::Error> {
    let alerts: Vec<(usize, &String, &AlertState)> = applied.changed_alerts().collect();
    let upsert = format!("INSERT INTO alerts (group_id, fingerprint, {ALERT_COLUMNS}) VALUES");
    write_rows(
        tx,
        backend,
        (&upsert, ALERT_UPSERT),
        &alerts,
        ROWS_PER_STATEMENT,
        |args, (gi, fp, s)| args.bind_all(alert_row!(ids[*gi], fp.as_str(); s)),
    )
    .await?;

    let events: Vec<(usize, &AlertEvent)> = applied.events().collect();
    let insert = "INSERT INTO alert_events (group_id, fingerprint, kind, at, recorded_at) VALUES";
    write_rows(
        tx,
        backend,
        (insert, ""),
        &events,
        ROWS_PER_STATEMENT,
        |args, (gi, e)| args.bind_all((ids[*gi], &e.fingerprint, e.kind.as_str(), &e.at, now)),
    )
    .await?;

    let cards: Vec<(i64, &str)> = applied
        .changed_groups()
        .flat_map(|gi| platforms.iter().map(move |p| (ids[gi], p.as_str())))
        .collect();
    write_rows(
        tx,
        backend,
        (OUTBOX_INSERT, OUTBOX_UPSERT),
        &cards,
        ROWS_PER_STATEMENT,
        |args, (id, platform)| args.bind_all((*id, *platform, 1_i64, now)),
    )
    .await?;
    Ok(())
}
