//! One transaction for a batch of webhooks: load what the batch touches, apply each webhook in
//! arrival order in memory, then write only what changed with a few multi-row statements.
//!
//! Alertmanager re-sends whole groups (repeat_interval, retries, several peers), so applying a
//! webhook that matches the stored state writes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{placeholders, values_list, Store};
use crate::alerts::{format_time, AlertStatus, IncomingGroup};
use crate::config::Backend;

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
    pub group_became: Option<&'static str>,
}

pub(super) struct GroupState {
    pub(super) id: Option<i64>,
    pub(super) receiver: String,
    pub(super) group_key: String,
    pub(super) status: String,
    pub(super) severity: String,
    pub(super) severity_note: Option<String>,
    pub(super) runbook: Option<String>,
    pub(super) group_labels: String,
    pub(super) common_labels: String,
    pub(super) common_annotations: String,
    pub(super) external_url: String,
    pub(super) truncated_alerts: i64,
    pub(super) started_at: String,
    pub(super) resolved_at: Option<String>,
    pub(super) created_at: String,
    pub(super) updated_at: String,
    pub(super) dirty: bool,
}

#[derive(Clone, PartialEq)]
pub(super) struct AlertState {
    pub(super) status: String,
    pub(super) severity: String,
    pub(super) labels: String,
    pub(super) annotations: String,
    pub(super) starts_at: String,
    pub(super) ends_at: Option<String>,
    pub(super) generator_url: String,
    pub(super) first_seen_at: String,
    pub(super) updated_at: String,
}

pub(super) struct Event {
    pub(super) group: usize,
    pub(super) fingerprint: Option<String>,
    pub(super) kind: &'static str,
    pub(super) at: String,
}

/// Rows per multi-row statement: well under SQLite's 32766 and PostgreSQL's 65535 parameters.
const ROWS_PER_STATEMENT: usize = 400;
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
    /// Per group: fingerprint → (state, changed).
    pub alerts: Vec<HashMap<String, (AlertState, bool)>>,
    pub now: String,
}

/// The outcome of applying a batch, ready to be written.
pub(super) struct Applied {
    pub groups: Vec<GroupState>,
    pub alerts: Vec<HashMap<String, (AlertState, bool)>>,
    pub events: Vec<Event>,
    /// Per webhook: (group index, alerts, changes, group status change).
    pending: Vec<(usize, usize, usize, Option<&'static str>)>,
}

impl<'a> WorkingSet<'a> {
    pub fn new(batch: &'a [&'a IncomingGroup], now: DateTime<Utc>) -> Self {
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        let mut keys: Vec<(&str, &str)> = Vec::new();
        for g in batch {
            let k = (g.webhook.receiver.as_str(), g.webhook.group_key.as_str());
            if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(k) {
                slot.insert(keys.len());
                keys.push(k);
            }
        }
        WorkingSet {
            batch,
            groups: (0..keys.len()).map(|_| None).collect(),
            alerts: (0..keys.len()).map(|_| HashMap::new()).collect(),
            keys,
            index,
            now: format_time(now),
        }
    }

    pub fn group_of(&self, g: &IncomingGroup) -> usize {
        self.index[&(g.webhook.receiver.as_str(), g.webhook.group_key.as_str())]
    }

    /// Applies every webhook in arrival order.
    pub fn apply_all(mut self) -> Applied {
        let mut events: Vec<Event> = Vec::new();
        let mut pending = Vec::with_capacity(self.batch.len());
        for g in self.batch {
            let gi = self.group_of(g);
            let before = events.len();
            apply(
                g,
                gi,
                &mut self.groups[gi],
                &mut self.alerts[gi],
                &mut events,
                &self.now,
            );
            let became = events[before..]
                .iter()
                .any(|e| e.fingerprint.is_none())
                .then(|| g.webhook.status.as_str());
            pending.push((gi, g.webhook.alerts.len(), events.len() - before, became));
        }
        Applied {
            groups: self
                .groups
                .into_iter()
                .map(|g| g.expect("every group in the batch was loaded or created"))
                .collect(),
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
            let g = &self.groups[gi];
            g.id.is_none() || g.dirty || self.alerts[gi].values().any(|(_, changed)| *changed)
        })
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
}

impl Store {
    /// Stores a batch of webhooks in one transaction and says what each did. SQLite's writer
    /// thread uses [`super::sqlite_writer`] instead, which makes no async round trips.
    pub async fn ingest(
        &self,
        batch: &[&IncomingGroup],
        now: DateTime<Utc>,
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
        let applied = set.apply_all();
        let ids = write_groups(&mut tx, self.backend, &applied.groups).await?;
        write_alerts(&mut tx, self.backend, &ids, &applied).await?;
        write_events(&mut tx, self.backend, &ids, &applied.events, &now).await?;
        write_outbox(
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
                set.groups[gi] = Some(group_from_row(&row)?);
            }
        }
    }
    Ok(())
}

pub(super) fn group_from_row<R: Columns>(row: &R) -> Result<GroupState, R::Error> {
    Ok(GroupState {
        id: Some(row.int("id")?),
        receiver: row.text("receiver")?,
        group_key: row.text("group_key")?,
        status: row.text("status")?,
        severity: row.text("severity")?,
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
        dirty: false,
    })
}

pub(super) fn alert_from_row<R: Columns>(row: &R) -> Result<AlertState, R::Error> {
    Ok(AlertState {
        status: row.text("status")?,
        severity: row.text("severity")?,
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
        .groups
        .iter()
        .enumerate()
        .filter_map(|(gi, g)| g.as_ref().and_then(|g| g.id).map(|id| (id, gi)))
        .collect();
    if by_id.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = by_id.keys().copied().collect();
    let mut fingerprints: Vec<&str> = Vec::new();
    // Groups that resolve as a whole need every firing alert, also those not in the webhook.
    let mut resolving: Vec<i64> = Vec::new();
    for g in set.batch {
        let Some(id) = set.groups[set.group_of(g)].as_ref().and_then(|s| s.id) else {
            continue;
        };
        fingerprints.extend(g.webhook.alerts.iter().map(|a| a.fingerprint.as_str()));
        if g.webhook.status == AlertStatus::Resolved {
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

/// Applies one webhook to the group's state in memory, recording each transition as an event.
pub(super) fn apply(
    g: &IncomingGroup,
    gi: usize,
    group: &mut Option<GroupState>,
    alerts: &mut HashMap<String, (AlertState, bool)>,
    events: &mut Vec<Event>,
    now: &str,
) {
    let w = &g.webhook;
    let start = events.len();
    let mut event = |fingerprint: Option<String>, kind: &'static str, at: String| {
        events.push(Event {
            group: gi,
            fingerprint,
            kind,
            at,
        })
    };

    for ((alert, severity), text) in w
        .alerts
        .iter()
        .zip(&g.alert_severities)
        .zip(&g.stored.alerts)
    {
        let fp = alert.fingerprint.as_str();
        let incoming = AlertState {
            status: alert.status.as_str().to_string(),
            severity: severity.as_str().to_string(),
            labels: text.labels.clone(),
            annotations: text.annotations.clone(),
            starts_at: text.starts_at.clone(),
            ends_at: text.ends_at.clone(),
            generator_url: alert.generator_url.clone(),
            first_seen_at: now.to_string(),
            updated_at: now.to_string(),
        };
        let transition_at = match alert.status {
            AlertStatus::Firing => incoming.starts_at.clone(),
            AlertStatus::Resolved => incoming.ends_at.clone().unwrap_or_else(|| now.to_string()),
        };
        let kind = match alert.status {
            AlertStatus::Firing => "alert_firing",
            AlertStatus::Resolved => "alert_resolved",
        };
        match alerts.get_mut(fp) {
            None => {
                event(Some(fp.to_string()), kind, transition_at);
                alerts.insert(fp.to_string(), (incoming, true));
            }
            Some((stored, dirty)) => {
                let same = stored.status == incoming.status
                    && stored.severity == incoming.severity
                    && stored.labels == incoming.labels
                    && stored.annotations == incoming.annotations
                    && stored.starts_at == incoming.starts_at
                    && stored.ends_at == incoming.ends_at
                    && stored.generator_url == incoming.generator_url;
                if !same {
                    if stored.status != incoming.status {
                        event(Some(fp.to_string()), kind, transition_at);
                    }
                    let first_seen = std::mem::take(&mut stored.first_seen_at);
                    *stored = AlertState {
                        first_seen_at: first_seen,
                        ..incoming
                    };
                    *dirty = true;
                }
            }
        }
    }

    if w.status == AlertStatus::Resolved {
        // The whole group is resolved: so is every alert not in (a truncated) webhook.
        for (fp, (stored, dirty)) in alerts.iter_mut() {
            if stored.status == "firing" {
                stored.status = "resolved".into();
                stored.ends_at = Some(now.to_string());
                stored.updated_at = now.to_string();
                *dirty = true;
                event(Some(fp.clone()), "alert_resolved", now.to_string());
            }
        }
    }

    let firing_start = w
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .map(|a| a.starts_at)
        .min()
        .or_else(|| w.alerts.iter().map(|a| a.starts_at).min())
        .map(format_time)
        .unwrap_or_else(|| now.to_string());
    let resolved_at = (w.status == AlertStatus::Resolved).then(|| {
        w.alerts
            .iter()
            .filter_map(|a| a.ends_at)
            .max()
            .map(format_time)
            .unwrap_or_else(|| now.to_string())
    });
    let next = GroupState {
        id: None,
        receiver: w.receiver.clone(),
        group_key: w.group_key.clone(),
        status: w.status.as_str().to_string(),
        severity: g.severity.as_str().to_string(),
        severity_note: g.severity_note.clone(),
        runbook: g.runbook.clone(),
        group_labels: g.stored.group_labels.clone(),
        common_labels: g.stored.common_labels.clone(),
        common_annotations: g.stored.common_annotations.clone(),
        external_url: w.external_url.clone(),
        truncated_alerts: w.truncated_alerts,
        started_at: firing_start,
        resolved_at,
        created_at: now.to_string(),
        updated_at: now.to_string(),
        dirty: true,
    };
    match group {
        None => {
            // A new group's timeline opens with the group, before its alerts.
            events.insert(
                start,
                Event {
                    group: gi,
                    fingerprint: None,
                    kind: group_kind(w.status),
                    at: next.started_at.clone(),
                },
            );
            *group = Some(next);
        }
        Some(stored) => {
            let status_changed = stored.status != next.status;
            if status_changed {
                let at = next.resolved_at.clone().unwrap_or(next.started_at.clone());
                event(None, group_kind(w.status), at);
            }
            // While a group keeps firing, it started when it first fired.
            let started_at = if status_changed && w.status == AlertStatus::Firing {
                next.started_at.clone()
            } else {
                stored.started_at.clone()
            };
            let changed = status_changed
                || stored.severity != next.severity
                || stored.severity_note != next.severity_note
                || stored.runbook != next.runbook
                || stored.group_labels != next.group_labels
                || stored.common_labels != next.common_labels
                || stored.common_annotations != next.common_annotations
                || stored.external_url != next.external_url
                || stored.truncated_alerts != next.truncated_alerts
                || stored.resolved_at != next.resolved_at
                || stored.started_at != started_at;
            if changed {
                *stored = GroupState {
                    id: stored.id,
                    created_at: std::mem::take(&mut stored.created_at),
                    started_at,
                    ..next
                };
            }
        }
    }
}

fn group_kind(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "group_firing",
        AlertStatus::Resolved => "group_resolved",
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// Binds the columns of `GROUP_COLUMNS`, in order.
fn bind_group<'q>(q: AnyQuery<'q>, g: &'q GroupState) -> AnyQuery<'q> {
    q.bind(&g.receiver)
        .bind(&g.group_key)
        .bind(&g.status)
        .bind(&g.severity)
        .bind(&g.severity_note)
        .bind(&g.runbook)
        .bind(&g.group_labels)
        .bind(&g.common_labels)
        .bind(&g.common_annotations)
        .bind(&g.external_url)
        .bind(g.truncated_alerts)
        .bind(&g.started_at)
        .bind(&g.resolved_at)
        .bind(&g.created_at)
        .bind(&g.updated_at)
}

/// Inserts new groups and updates changed ones; returns every group's id by batch index.
async fn write_groups(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    groups: &[GroupState],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut ids: Vec<i64> = groups.iter().map(|g| g.id.unwrap_or(0)).collect();
    let new: Vec<usize> = (0..groups.len())
        .filter(|&i| groups[i].id.is_none())
        .collect();
    for chunk in new.chunks(ROWS_PER_STATEMENT / 4) {
        let sql = format!(
            "INSERT INTO alert_groups ({GROUP_COLUMNS}) VALUES {} RETURNING id, receiver, group_key",
            values_list(backend, chunk.len(), 15, 1)
        );
        let mut q = sqlx::query(&sql);
        for &i in chunk {
            q = bind_group(q, &groups[i]);
        }
        let by_key: HashMap<(&str, &str), usize> = chunk
            .iter()
            .map(|&i| {
                (
                    (groups[i].receiver.as_str(), groups[i].group_key.as_str()),
                    i,
                )
            })
            .collect();
        for row in q.fetch_all(&mut **tx).await? {
            let receiver: String = row.try_get("receiver")?;
            let group_key: String = row.try_get("group_key")?;
            let i = by_key[&(receiver.as_str(), group_key.as_str())];
            ids[i] = row.try_get("id")?;
        }
    }
    // Changed existing groups: one multi-row upsert on the id rather than an UPDATE each.
    let changed: Vec<&GroupState> = groups
        .iter()
        .filter(|g| g.id.is_some() && g.dirty)
        .collect();
    for chunk in changed.chunks(ROWS_PER_STATEMENT / 4) {
        let sql = format!(
            "INSERT INTO alert_groups (id, {GROUP_COLUMNS}) VALUES {} {GROUP_UPSERT}",
            values_list(backend, chunk.len(), 16, 1)
        );
        let mut q = sqlx::query(&sql);
        for g in chunk {
            q = bind_group(q.bind(g.id), g);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(ids)
}

async fn write_alerts(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    ids: &[i64],
    applied: &Applied,
) -> Result<(), sqlx::Error> {
    let changed: Vec<(usize, &String, &AlertState)> = applied.changed_alerts().collect();
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO alerts (group_id, fingerprint, {ALERT_COLUMNS}) VALUES {} {ALERT_UPSERT}",
            values_list(backend, chunk.len(), 11, 1)
        );
        let mut q = sqlx::query(&sql);
        for (gi, fp, s) in chunk {
            q = q
                .bind(ids[*gi])
                .bind(fp.as_str())
                .bind(&s.status)
                .bind(&s.severity)
                .bind(&s.labels)
                .bind(&s.annotations)
                .bind(&s.starts_at)
                .bind(&s.ends_at)
                .bind(&s.generator_url)
                .bind(&s.first_seen_at)
                .bind(&s.updated_at);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn write_events(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    ids: &[i64],
    events: &[Event],
    now: &str,
) -> Result<(), sqlx::Error> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO alert_events (group_id, fingerprint, kind, at, recorded_at) VALUES {}",
            values_list(backend, chunk.len(), 5, 1)
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(ids[e.group])
                .bind(&e.fingerprint)
                .bind(e.kind)
                .bind(&e.at)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn write_outbox(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    ids: &[i64],
    applied: &Applied,
    platforms: &[String],
    now: &str,
) -> Result<(), sqlx::Error> {
    if platforms.is_empty() {
        return Ok(());
    }
    let rows: Vec<(i64, &str)> = applied
        .changed_groups()
        .flat_map(|gi| platforms.iter().map(move |p| (ids[gi], p.as_str())))
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "{OUTBOX_INSERT} {} {OUTBOX_UPSERT}",
            values_list(backend, chunk.len(), 4, 1)
        );
        let mut q = sqlx::query(&sql);
        for (id, platform) in chunk {
            q = q.bind(*id).bind(*platform).bind(1_i64).bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
