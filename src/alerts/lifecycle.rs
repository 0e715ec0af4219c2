//! The life of an alert group, as pure code: firing → resolved → firing again, alerts joining
//! a group, truncated webhooks. The store loads the state under its locks, calls [`apply`] for
//! each webhook in arrival order, and writes what changed.
//!
//! Alertmanager re-sends whole groups (repeat_interval, retries, several peers), so a webhook
//! that matches the state changes nothing and records nothing.

use crate::domain::alert::{
    AlertEvent, AlertState, AlertStates, EventKind, GroupState, IncomingGroup, Transition,
};
use crate::domain::{AlertStatus, GroupStatus};

/// Applies one webhook to its group (None: not seen before) and the group's known alerts,
/// appending the timeline entries it causes; `now` is in the stored form.
///
/// The alerts must hold every stored alert the webhook names and, when the webhook resolves
/// the group, every firing one (also those a truncated webhook left out).
pub fn apply(
    incoming: &IncomingGroup,
    group: &mut Option<GroupState>,
    alerts: &mut AlertStates,
    events: &mut Vec<AlertEvent>,
    now: &str,
) -> Transition {
    let w = incoming;
    let next = next_group(w, now);
    let is_new = group.is_none();
    if is_new {
        // A new group's timeline opens with the group, before its alerts.
        events.push(AlertEvent {
            fingerprint: None,
            kind: EventKind::group(w.status),
            at: next.started_at.clone(),
        });
    }
    let mut event = |fingerprint: &str, kind, at| {
        events.push(AlertEvent {
            fingerprint: Some(fingerprint.to_string()),
            kind,
            at,
        })
    };

    for alert in &w.alerts {
        let fp = alert.fingerprint.as_str();
        let incoming = AlertState {
            status: alert.status,
            severity: alert.severity,
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.starts_at.clone(),
            ends_at: alert.ends_at.clone(),
            generator_url: alert.generator_url.clone(),
            first_seen_at: now.to_string(),
            updated_at: now.to_string(),
        };
        let transition_at = match alert.status {
            AlertStatus::Firing => incoming.starts_at.clone(),
            AlertStatus::Resolved => incoming.ends_at.clone().unwrap_or_else(|| now.to_string()),
        };
        let kind = EventKind::alert(alert.status);
        match alerts.get_mut(fp) {
            None => {
                event(fp, kind, transition_at);
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
                        event(fp, kind, transition_at);
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

    if w.status == GroupStatus::Resolved {
        // The whole group is resolved: so is every alert not in (a truncated) webhook.
        for (fp, (stored, dirty)) in alerts.iter_mut() {
            if stored.status == AlertStatus::Firing {
                stored.status = AlertStatus::Resolved;
                stored.ends_at = Some(now.to_string());
                stored.updated_at = now.to_string();
                *dirty = true;
                event(fp, EventKind::AlertResolved, now.to_string());
            }
        }
    }

    let Some(stored) = group else {
        *group = Some(next);
        return Transition {
            group_changed: true,
            group_became: Some(w.status),
        };
    };
    let status_changed = stored.status != next.status;
    if status_changed {
        let at = next.resolved_at.clone().unwrap_or(next.started_at.clone());
        events.push(AlertEvent {
            fingerprint: None,
            kind: EventKind::group(w.status),
            at,
        });
    }
    // While a group keeps firing, it started when it first fired.
    let started_at = if status_changed && w.status == GroupStatus::Firing {
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
            created_at: std::mem::take(&mut stored.created_at),
            started_at,
            ..next
        };
    }
    Transition {
        group_changed: changed,
        group_became: status_changed.then_some(w.status),
    }
}

/// The group as this webhook alone describes it. Stored times are fixed width, so the earliest
/// text is the earliest time.
fn next_group(w: &IncomingGroup, now: &str) -> GroupState {
    let firing_start = w
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .map(|a| a.starts_at.as_str())
        .min()
        .or_else(|| w.alerts.iter().map(|a| a.starts_at.as_str()).min())
        .unwrap_or(now)
        .to_string();
    let resolved_at = (w.status == GroupStatus::Resolved).then(|| {
        w.alerts
            .iter()
            .filter_map(|a| a.ends_at.as_deref())
            .max()
            .unwrap_or(now)
            .to_string()
    });
    GroupState {
        receiver: w.receiver.clone(),
        group_key: w.group_key.clone(),
        status: w.status,
        severity: w.severity,
        severity_note: w.severity_note.clone(),
        runbook: w.runbook.clone(),
        group_labels: w.group_labels.clone(),
        common_labels: w.common_labels.clone(),
        common_annotations: w.common_annotations.clone(),
        external_url: w.external_url.clone(),
        truncated_alerts: w.truncated_alerts,
        started_at: firing_start,
        resolved_at,
        created_at: now.to_string(),
        updated_at: now.to_string(),
    }
}
