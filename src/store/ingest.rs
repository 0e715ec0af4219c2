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
use crate::alerts::{format_time, AlertStatus, IncomingGroup, Labels};
use crate::config::Backend;

/// What storing one webhook did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub group_id: i64,
    /// Alerts in the webhook.
    pub alerts: usize,
    /// Timeline entries this webhook added (0 for a pure re-send).
    pub changes: usize,
}

struct GroupState {
    id: Option<i64>,
    receiver: String,
    group_key: String,
    status: String,
    severity: String,
    severity_note: Option<String>,
    runbook: Option<String>,
    group_labels: String,
    common_labels: String,
    common_annotations: String,
    external_url: String,
    truncated_alerts: i64,
    started_at: String,
    resolved_at: Option<String>,
    created_at: String,
    updated_at: String,
    dirty: bool,
}

#[derive(Clone, PartialEq)]
struct AlertState {
    status: String,
    severity: String,
    labels: String,
    annotations: String,
    starts_at: String,
    ends_at: Option<String>,
    generator_url: String,
    first_seen_at: String,
    updated_at: String,
}

struct Event {
    group: usize,
    fingerprint: Option<String>,
    kind: &'static str,
    at: String,
}

/// Rows per multi-row statement: well under SQLite's 32766 and PostgreSQL's 65535 parameters.
const ROWS_PER_STATEMENT: usize = 400;
const KEYS_PER_QUERY: usize = 1000;

fn json(labels: &Labels) -> String {
    serde_json::to_string(labels).expect("a map of strings always serializes")
}

/// A stable 64-bit key for a PostgreSQL advisory lock on one group (FNV-1a).
fn lock_key(receiver: &str, group_key: &str) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in receiver.bytes().chain([0u8]).chain(group_key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h as i64
}

impl Store {
    /// Stores a batch of webhooks in one transaction and says what each did.
    pub async fn ingest(
        &self,
        batch: &[&IncomingGroup],
        now: DateTime<Utc>,
    ) -> Result<Vec<Receipt>, sqlx::Error> {
        let now = format_time(now);
        let mut tx = self.write_pool.begin().await?;

        // Distinct groups, in first-seen order.
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        let mut keys: Vec<(&str, &str)> = Vec::new();
        for g in batch {
            let k = (g.webhook.receiver.as_str(), g.webhook.group_key.as_str());
            if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(k) {
                slot.insert(keys.len());
                keys.push(k);
            }
        }

        if self.backend == Backend::Postgres {
            // Replicas may receive the same group at once (several Alertmanager peers): serialize
            // per group, in a fixed order so two batches never wait on each other in a cycle.
            let mut locks: Vec<i64> = keys.iter().map(|(r, k)| lock_key(r, k)).collect();
            locks.sort_unstable();
            locks.dedup();
            for l in locks {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(l)
                    .execute(&mut *tx)
                    .await?;
            }
        }

        let mut groups: Vec<Option<GroupState>> = (0..keys.len()).map(|_| None).collect();
        load_groups(&mut tx, self.backend, &keys, &index, &mut groups).await?;

        // Existing alerts that the batch may touch.
        let mut alerts: Vec<HashMap<String, (AlertState, bool)>> =
            (0..keys.len()).map(|_| HashMap::new()).collect();
        load_alerts(&mut tx, self.backend, batch, &index, &groups, &mut alerts).await?;

        let mut events: Vec<Event> = Vec::new();
        let mut receipts_pending: Vec<(usize, usize, usize)> = Vec::with_capacity(batch.len());
        for g in batch {
            let gi = index[&(g.webhook.receiver.as_str(), g.webhook.group_key.as_str())];
            let before = events.len();
            apply(g, gi, &mut groups[gi], &mut alerts[gi], &mut events, &now);
            receipts_pending.push((gi, g.webhook.alerts.len(), events.len() - before));
        }

        let groups: Vec<GroupState> = groups
            .into_iter()
            .map(|g| g.expect("every group in the batch was loaded or created"))
            .collect();
        let ids = write_groups(&mut tx, self.backend, &groups).await?;
        write_alerts(&mut tx, self.backend, &ids, &alerts).await?;
        write_events(&mut tx, self.backend, &ids, &events, &now).await?;
        tx.commit().await?;

        Ok(receipts_pending
            .into_iter()
            .map(|(gi, alerts, changes)| Receipt {
                group_id: ids[gi],
                alerts,
                changes,
            })
            .collect())
    }
}

const GROUP_COLUMNS: &str = "receiver, group_key, status, severity, severity_note, runbook, \
    group_labels, common_labels, common_annotations, external_url, truncated_alerts, \
    started_at, resolved_at, created_at, updated_at";

async fn load_groups(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    keys: &[(&str, &str)],
    index: &HashMap<(&str, &str), usize>,
    groups: &mut [Option<GroupState>],
) -> Result<(), sqlx::Error> {
    let mut group_keys: Vec<&str> = keys.iter().map(|(_, k)| *k).collect();
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
            if let Some(&gi) = index.get(&(receiver.as_str(), group_key.as_str())) {
                groups[gi] = Some(group_from_row(&row)?);
            }
        }
    }
    Ok(())
}

fn group_from_row(row: &AnyRow) -> Result<GroupState, sqlx::Error> {
    Ok(GroupState {
        id: Some(row.try_get("id")?),
        receiver: row.try_get("receiver")?,
        group_key: row.try_get("group_key")?,
        status: row.try_get("status")?,
        severity: row.try_get("severity")?,
        severity_note: row.try_get("severity_note")?,
        runbook: row.try_get("runbook")?,
        group_labels: row.try_get("group_labels")?,
        common_labels: row.try_get("common_labels")?,
        common_annotations: row.try_get("common_annotations")?,
        external_url: row.try_get("external_url")?,
        truncated_alerts: row.try_get("truncated_alerts")?,
        started_at: row.try_get("started_at")?,
        resolved_at: row.try_get("resolved_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        dirty: false,
    })
}

const ALERT_COLUMNS: &str = "status, severity, labels, annotations, starts_at, ends_at, \
    generator_url, first_seen_at, updated_at";

async fn load_alerts(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    batch: &[&IncomingGroup],
    index: &HashMap<(&str, &str), usize>,
    groups: &[Option<GroupState>],
    alerts: &mut [HashMap<String, (AlertState, bool)>],
) -> Result<(), sqlx::Error> {
    let by_id: HashMap<i64, usize> = groups
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
    for g in batch {
        let gi = index[&(g.webhook.receiver.as_str(), g.webhook.group_key.as_str())];
        let Some(id) = groups[gi].as_ref().and_then(|s| s.id) else {
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
        let state = AlertState {
            status: row.try_get("status")?,
            severity: row.try_get("severity")?,
            labels: row.try_get("labels")?,
            annotations: row.try_get("annotations")?,
            starts_at: row.try_get("starts_at")?,
            ends_at: row.try_get("ends_at")?,
            generator_url: row.try_get("generator_url")?,
            first_seen_at: row.try_get("first_seen_at")?,
            updated_at: row.try_get("updated_at")?,
        };
        alerts[by_id[&gid]].insert(row.try_get("fingerprint")?, (state, false));
    }
    Ok(())
}

/// Applies one webhook to the group's state in memory, recording each transition as an event.
fn apply(
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

    for (alert, severity) in w.alerts.iter().zip(&g.alert_severities) {
        let fp = alert.fingerprint.as_str();
        let incoming = AlertState {
            status: alert.status.as_str().to_string(),
            severity: severity.as_str().to_string(),
            labels: json(&alert.labels),
            annotations: json(&alert.annotations),
            starts_at: format_time(alert.starts_at),
            ends_at: alert.ends_at.map(format_time),
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
        group_labels: json(&w.group_labels),
        common_labels: json(&w.common_labels),
        common_annotations: json(&w.common_annotations),
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
            "INSERT INTO alert_groups (id, {GROUP_COLUMNS}) VALUES {} ON CONFLICT (id) DO UPDATE SET \
             status = excluded.status, severity = excluded.severity, \
             severity_note = excluded.severity_note, runbook = excluded.runbook, \
             group_labels = excluded.group_labels, common_labels = excluded.common_labels, \
             common_annotations = excluded.common_annotations, external_url = excluded.external_url, \
             truncated_alerts = excluded.truncated_alerts, started_at = excluded.started_at, \
             resolved_at = excluded.resolved_at, updated_at = excluded.updated_at",
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
    alerts: &[HashMap<String, (AlertState, bool)>],
) -> Result<(), sqlx::Error> {
    let dirty: Vec<(i64, &String, &AlertState)> = alerts
        .iter()
        .enumerate()
        .flat_map(|(gi, m)| {
            m.iter()
                .filter(|(_, (_, d))| *d)
                .map(move |(fp, (s, _))| (ids[gi], fp, s))
        })
        .collect();
    for chunk in dirty.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO alerts (group_id, fingerprint, {ALERT_COLUMNS}) VALUES {} \
             ON CONFLICT (group_id, fingerprint) DO UPDATE SET status = excluded.status, \
             severity = excluded.severity, labels = excluded.labels, \
             annotations = excluded.annotations, starts_at = excluded.starts_at, \
             ends_at = excluded.ends_at, generator_url = excluded.generator_url, \
             updated_at = excluded.updated_at",
            values_list(backend, chunk.len(), 11, 1)
        );
        let mut q = sqlx::query(&sql);
        for (gid, fp, s) in chunk {
            q = q
                .bind(*gid)
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
