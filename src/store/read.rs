//! What the console and the API read: groups with their alerts, and a group's timeline.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::ingest::Columns;
use super::{placeholders, Store};
use crate::domain::alert::{EventKind, Labels};
use crate::domain::{AlertStatus, GroupStatus, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFilter {
    /// Groups with at least one firing alert.
    Open,
    Resolved,
    All,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub id: i64,
    pub receiver: String,
    pub group_key: String,
    pub status: GroupStatus,
    pub severity: Severity,
    pub severity_note: Option<String>,
    pub runbook: Option<String>,
    pub group_labels: Labels,
    pub common_labels: Labels,
    pub common_annotations: Labels,
    pub external_url: String,
    pub truncated_alerts: i64,
    pub started_at: String,
    pub resolved_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Who acknowledged this episode (display name and platform id), and when.
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<String>,
    /// The Alertmanager silence runbot made for it, by whom, until when.
    pub silence_id: Option<String>,
    pub silenced_by: Option<String>,
    pub silenced_until: Option<String>,
    /// Its alerts, firing first; lists may hold only the first of them (see `alerts_total`).
    pub alerts: Vec<AlertView>,
    /// How many alerts the group has, and how many of them fire, whether or not all are listed.
    pub alerts_total: i64,
    pub alerts_firing: i64,
    /// The escalation of this episode, once runbot started one.
    pub escalation: Option<super::EscalationRow>,
}

impl GroupView {
    /// Its `alertname`, from the labels its alerts share or its group labels.
    pub fn alertname(&self) -> Option<&str> {
        self.common_labels
            .get("alertname")
            .or_else(|| self.group_labels.get("alertname"))
            .map(String::as_str)
    }

    /// How a message names it: `APIDown (#12)`.
    pub fn name(&self) -> String {
        format!(
            "{} (#{})",
            self.alertname().unwrap_or("alert group"),
            self.id
        )
    }

    /// The values labels `keys` take on the group and on its firing alerts.
    pub fn label_values(&self, keys: &[&str]) -> std::collections::BTreeSet<String> {
        let firing = self
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing);
        [&self.group_labels, &self.common_labels]
            .into_iter()
            .chain(firing.map(|a| &a.labels))
            .flat_map(|labels| keys.iter().filter_map(|k| labels.get(*k).cloned()))
            .collect()
    }

    /// Where the page after this group starts.
    pub fn cursor(&self) -> GroupCursor {
        GroupCursor {
            updated_at: self.updated_at.clone(),
            id: self.id,
        }
    }
}

/// Where a page of groups starts: after the group with this `updated_at` and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCursor {
    pub updated_at: String,
    pub id: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub fingerprint: String,
    pub status: AlertStatus,
    pub severity: Severity,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub generator_url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub id: i64,
    pub kind: EventKind,
    pub fingerprint: Option<String>,
    pub at: String,
    pub recorded_at: String,
}

fn labels(row: &AnyRow, col: &str) -> Result<Labels, sqlx::Error> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn group_from_row(row: &AnyRow) -> Result<GroupView, sqlx::Error> {
    Ok(GroupView {
        id: row.try_get("id")?,
        receiver: row.try_get("receiver")?,
        group_key: row.try_get("group_key")?,
        status: row.parsed("status", GroupStatus::parse)?,
        severity: row.parsed("severity", Severity::parse)?,
        severity_note: row.try_get("severity_note")?,
        runbook: row.try_get("runbook")?,
        group_labels: labels(row, "group_labels")?,
        common_labels: labels(row, "common_labels")?,
        common_annotations: labels(row, "common_annotations")?,
        external_url: row.try_get("external_url")?,
        truncated_alerts: row.try_get("truncated_alerts")?,
        started_at: row.try_get("started_at")?,
        resolved_at: row.try_get("resolved_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        acknowledged_at: row.try_get("acknowledged_at")?,
        silence_id: row.try_get("silence_id")?,
        silenced_by: row.try_get("silenced_by")?,
        silenced_until: row.try_get("silenced_until")?,
        alerts: Vec::new(),
        alerts_total: 0,
        alerts_firing: 0,
        escalation: None,
    })
}

const GROUP_SELECT: &str = "SELECT id, receiver, group_key, status, severity, severity_note, \
    runbook, group_labels, common_labels, common_annotations, external_url, truncated_alerts, \
    started_at, resolved_at, created_at, updated_at, acknowledged_by, acknowledged_at, \
    silence_id, silenced_by, silenced_until FROM alert_groups";

impl Store {
    /// Up to `limit` groups, most recently changed first, starting after `after`, each with at
    /// most `alerts_each` of its alerts (firing first; None: all).
    pub async fn list_groups(
        &self,
        filter: GroupFilter,
        limit: i64,
        after: Option<&GroupCursor>,
        alerts_each: Option<i64>,
    ) -> Result<Vec<GroupView>, sqlx::Error> {
        let mut conditions = Vec::new();
        match filter {
            GroupFilter::Open => conditions.push("status = 'firing'"),
            GroupFilter::Resolved => conditions.push("status = 'resolved'"),
            GroupFilter::All => {}
        }
        if after.is_some() {
            conditions.push("(updated_at < $2 OR (updated_at = $2 AND id < $3))");
        }
        let condition = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!("{GROUP_SELECT} {condition} ORDER BY updated_at DESC, id DESC LIMIT $1");
        let mut q = sqlx::query(&sql).bind(limit);
        if let Some(c) = after {
            q = q.bind(&c.updated_at).bind(c.id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut groups: Vec<GroupView> =
            rows.iter().map(group_from_row).collect::<Result<_, _>>()?;
        self.attach_alerts(&mut groups, alerts_each).await?;
        self.attach_escalations(&mut groups).await?;
        Ok(groups)
    }

    /// These groups (those that exist), each with at most `alerts_each` of its alerts.
    pub async fn group_views(
        &self,
        ids: &[i64],
        alerts_each: i64,
    ) -> Result<Vec<GroupView>, sqlx::Error> {
        let mut groups = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let list = placeholders(self.backend, chunk.len(), 1);
            let sql = format!("{GROUP_SELECT} WHERE id IN ({list})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                groups.push(group_from_row(&row)?);
            }
        }
        self.attach_alerts(&mut groups, Some(alerts_each)).await?;
        self.attach_escalations(&mut groups).await?;
        Ok(groups)
    }

    /// One group with its alerts, without its timeline (what a chat card shows).
    pub async fn group_view(&self, id: i64) -> Result<Option<GroupView>, sqlx::Error> {
        self.group_with_alerts(id, None).await
    }

    /// One group with at most `alerts_max` of its alerts, firing first (its counts are of all).
    pub async fn group_view_capped(
        &self,
        id: i64,
        alerts_max: i64,
    ) -> Result<Option<GroupView>, sqlx::Error> {
        self.group_with_alerts(id, Some(alerts_max)).await
    }

    /// One group with at most `alerts_max` of its alerts (firing first; None: all).
    async fn group_with_alerts(
        &self,
        id: i64,
        alerts_max: Option<i64>,
    ) -> Result<Option<GroupView>, sqlx::Error> {
        let sql = format!("{GROUP_SELECT} WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut groups = vec![group_from_row(&row)?];
        self.attach_alerts(&mut groups, alerts_max).await?;
        self.attach_escalations(&mut groups).await?;
        Ok(groups.pop())
    }

    /// One group with at most `alerts_max` of its alerts and the last `events_max` entries of
    /// its timeline (oldest first), and how many entries the timeline has.
    pub async fn group(
        &self,
        id: i64,
        alerts_max: i64,
        events_max: i64,
    ) -> Result<Option<(GroupView, Vec<EventView>, i64)>, sqlx::Error> {
        let Some(group) = self.group_with_alerts(id, Some(alerts_max)).await? else {
            return Ok(None);
        };
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM alert_events WHERE group_id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        let events = sqlx::query(
            "SELECT id, kind, fingerprint, at, recorded_at FROM (SELECT id, kind, fingerprint, \
             at, recorded_at FROM alert_events WHERE group_id = $1 ORDER BY id DESC LIMIT $2) \
             AS last ORDER BY id",
        )
        .bind(id)
        .bind(events_max)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(EventView {
                id: r.try_get("id")?,
                kind: r.parsed("kind", EventKind::parse)?,
                fingerprint: r.try_get("fingerprint")?,
                at: r.try_get("at")?,
                recorded_at: r.try_get("recorded_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some((group, events, total)))
    }

    /// Each group's alert counts, and its alerts (firing first): all of them, or at most
    /// `each` when given, so a group with thousands of alerts does not make every page that
    /// lists it that large. Counting takes a query of its own only when the list is bounded.
    async fn attach_escalations(&self, groups: &mut [GroupView]) -> Result<(), sqlx::Error> {
        let ids: Vec<i64> = groups.iter().map(|g| g.id).collect();
        let mut found: HashMap<i64, super::EscalationRow> = self
            .current_escalations(&ids)
            .await?
            .into_iter()
            .map(|e| (e.group_id, e))
            .collect();
        for g in groups {
            g.escalation = found.remove(&g.id);
        }
        Ok(())
    }

    async fn attach_alerts(
        &self,
        groups: &mut [GroupView],
        each: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        let index: HashMap<i64, usize> =
            groups.iter().enumerate().map(|(i, g)| (g.id, i)).collect();
        for chunk in groups.iter().map(|g| g.id).collect::<Vec<_>>().chunks(1000) {
            let ids = placeholders(self.backend, chunk.len(), 1);
            let sql = match each {
                None => format!(
                    "SELECT group_id, fingerprint, status, severity, labels, annotations, \
                     starts_at, ends_at, generator_url FROM alerts WHERE group_id IN ({ids}) \
                     ORDER BY status, starts_at, fingerprint"
                ),
                Some(_) => {
                    let counts = format!(
                        "SELECT group_id, COUNT(*) AS total, \
                         SUM(CASE WHEN status = 'firing' THEN 1 ELSE 0 END) AS firing \
                         FROM alerts WHERE group_id IN ({ids}) GROUP BY group_id"
                    );
                    let mut q = sqlx::query(&counts);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    for row in q.fetch_all(&self.pool).await? {
                        let gid: i64 = row.try_get("group_id")?;
                        let g = &mut groups[index[&gid]];
                        g.alerts_total = row.try_get("total")?;
                        g.alerts_firing = row.try_get("firing")?;
                    }
                    let limit = match self.backend {
                        crate::config::Backend::Sqlite => "?".to_string(),
                        crate::config::Backend::Postgres => format!("${}", chunk.len() + 1),
                    };
                    format!(
                        "SELECT group_id, fingerprint, status, severity, labels, annotations, \
                         starts_at, ends_at, generator_url FROM (SELECT *, ROW_NUMBER() OVER \
                         (PARTITION BY group_id ORDER BY status, starts_at, fingerprint) AS n \
                         FROM alerts WHERE group_id IN ({ids})) AS a WHERE n <= {limit} \
                         ORDER BY status, starts_at, fingerprint"
                    )
                }
            };
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            if let Some(each) = each {
                q = q.bind(each);
            }
            for row in q.fetch_all(&self.pool).await? {
                let gid: i64 = row.try_get("group_id")?;
                groups[index[&gid]].alerts.push(AlertView {
                    fingerprint: row.try_get("fingerprint")?,
                    status: row.parsed("status", AlertStatus::parse)?,
                    severity: row.parsed("severity", Severity::parse)?,
                    labels: labels(&row, "labels")?,
                    annotations: labels(&row, "annotations")?,
                    starts_at: row.try_get("starts_at")?,
                    ends_at: row.try_get("ends_at")?,
                    generator_url: row.try_get("generator_url")?,
                });
            }
        }
        if each.is_none() {
            for g in groups.iter_mut() {
                g.alerts_total = g.alerts.len() as i64;
                g.alerts_firing = (g.alerts.iter())
                    .filter(|a| a.status == AlertStatus::Firing)
                    .count() as i64;
            }
        }
        Ok(())
    }
}

/// An open group's severity and what it is about, for the policy's incident rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTargets {
    pub id: i64,
    pub severity: Severity,
    /// The alertname of the group (or of all its alerts), when it has one.
    pub alertname: Option<String>,
    /// Values of the asked labels on the group and on its firing alerts.
    pub targets: std::collections::BTreeSet<String>,
}

impl Store {
    /// Every open group with the values its labels `keys` take. Alerts are read only for groups
    /// whose common labels lack one of the keys (their alerts may differ), so the usual case is
    /// one small query.
    pub async fn open_group_targets(
        &self,
        keys: &[&str],
    ) -> Result<Vec<GroupTargets>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, severity, group_labels, common_labels FROM alert_groups \
             WHERE status = 'firing' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut groups = Vec::with_capacity(rows.len());
        let mut mixed: HashMap<i64, usize> = HashMap::new();
        for row in &rows {
            let group_labels = labels(row, "group_labels")?;
            let common = labels(row, "common_labels")?;
            let mut targets = std::collections::BTreeSet::new();
            for k in keys {
                for l in [&group_labels, &common] {
                    if let Some(v) = l.get(*k) {
                        targets.insert(v.clone());
                    }
                }
            }
            let id: i64 = row.try_get("id")?;
            if keys.iter().any(|k| !common.contains_key(*k)) {
                mixed.insert(id, groups.len());
            }
            groups.push(GroupTargets {
                id,
                severity: row.parsed("severity", Severity::parse)?,
                alertname: group_labels
                    .get("alertname")
                    .or_else(|| common.get("alertname"))
                    .cloned(),
                targets,
            });
        }
        let ids: Vec<i64> = mixed.keys().copied().collect();
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT group_id, labels FROM alerts WHERE status = 'firing' AND group_id IN ({})",
                placeholders(self.backend, chunk.len(), 1)
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                let gid: i64 = row.try_get("group_id")?;
                let alert = labels(&row, "labels")?;
                let g = &mut groups[mixed[&gid]];
                for k in keys {
                    if let Some(v) = alert.get(*k) {
                        g.targets.insert(v.clone());
                    }
                }
            }
        }
        Ok(groups)
    }
}
