//! A group as stored, with its runbook entry, becomes a [`Card`].

use crate::domain::{parse_stored_time, AlertStatus, GroupStatus};
use crate::request::ButtonId;
use crate::runbook::Runbook;
use crate::store::GroupView;

use super::{Card, CardAction, CardAlert, Link, Mark};

/// Builds the card for a group.
pub fn card(group: &GroupView, runbook: &Runbook) -> Card {
    let resolved = group.status == GroupStatus::Resolved;
    let severity = group.severity;
    let alertname = group
        .common_labels
        .get("alertname")
        .or_else(|| group.group_labels.get("alertname"))
        .cloned();
    let entry = group
        .runbook
        .as_deref()
        .and_then(|key| runbook.entry(key))
        .map(|(_, e)| e);
    let name = alertname.clone().unwrap_or_else(|| group_label_text(group));
    let title = match entry {
        Some(e) => format!("{} · {name}: {}", severity.title(), e.title),
        None => format!("{} · {name}", severity.title()),
    };
    let mut alerts: Vec<CardAlert> = group
        .alerts
        .iter()
        .map(|a| CardAlert {
            name: a
                .labels
                .get("instance")
                .or_else(|| a.labels.get("alertname"))
                .cloned()
                .unwrap_or_else(|| a.fingerprint.clone()),
            firing: a.status == AlertStatus::Firing,
            since: a.starts_at.clone(),
        })
        .collect();
    // Firing first, then oldest first.
    alerts.sort_by(|a, b| b.firing.cmp(&a.firing).then(a.since.cmp(&b.since)));

    let mut links = Vec::new();
    if let Some(url) = group
        .alerts
        .iter()
        .map(|a| a.generator_url.as_str())
        .find(|u| is_web_url(u))
    {
        links.push(Link {
            label: "Prometheus".into(),
            url: url.to_string(),
        });
    }
    if let Some(url) = annotation(group, "runbook_url").filter(|u| is_web_url(u)) {
        links.push(Link {
            label: "Runbook".into(),
            url,
        });
    }
    if is_web_url(&group.external_url) && !resolved {
        links.push(Link {
            label: "Silence".into(),
            url: silence_url(&group.external_url, group),
        });
    }

    let actions = match (entry, resolved) {
        (Some(e), false) => e
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| CardAction {
                id: ButtonId::CardAction {
                    group_id: group.id,
                    index: i,
                }
                .to_string(),
                label: a.label.clone(),
                risky: a.risky,
            })
            .collect(),
        _ => Vec::new(),
    };
    let fired_for = if resolved {
        match (
            parse_stored_time(&group.started_at),
            group.resolved_at.as_deref().and_then(parse_stored_time),
        ) {
            (Some(start), Some(end)) if end >= start => (end - start).to_std().ok(),
            _ => None,
        }
    } else {
        None
    };
    Card {
        group_id: group.id,
        resolved,
        severity,
        title,
        summary: annotation(group, "summary"),
        description: annotation(group, "description"),
        meaning: entry.map(|e| e.meaning.clone()),
        alerts,
        alerts_total: group.alerts_total,
        alerts_firing: group.alerts_firing,
        truncated_alerts: group.truncated_alerts,
        links,
        checks: entry.map(|e| e.checks.clone()).unwrap_or_default(),
        actions,
        fired_for,
        started_at: group.started_at.clone(),
        note: group.severity_note.clone(),
        acknowledged: mark(&group.acknowledged_by, &group.acknowledged_at),
        // A silence that ran out says nothing any more.
        silenced: mark(&group.silenced_by, &group.silenced_until)
            .filter(|m| parse_stored_time(&m.at).is_some_and(|until| until > chrono::Utc::now())),
        escalation: group.escalation.as_ref().and_then(escalation_line),
    }
}

/// What the card says of the episode's escalation; None when there is nothing to say.
fn escalation_line(e: &crate::store::EscalationRow) -> Option<super::EscalationLine> {
    let acked_after = match (&e.acked_at, parse_stored_time(&e.started_at)) {
        (Some(at), Some(start)) => parse_stored_time(at)
            .map(|at| crate::domain::duration::precise((at - start).to_std().unwrap_or_default())),
        _ => None,
    };
    let open = matches!(e.state.as_str(), "active" | "done" | "backlog");
    let paging = match (e.state.as_str(), &e.paging) {
        ("backlog", _) => Some("📥 In the backlog: nobody paged".to_string()),
        (_, Some(who)) if who == crate::store::PAGING_CHANNEL => {
            Some("📢 For the channel: nobody paged".to_string())
        }
        ("active" | "done", Some(who)) => Some(format!("📟 Paging {who}")),
        _ => None,
    };
    let next = match (&e.next_label, &e.due_at) {
        (Some(who), Some(at)) if open && e.state == "active" => Some((who.clone(), at.clone())),
        _ => None,
    };
    let notes: Vec<String> = e
        .note
        .iter()
        .flat_map(|n| n.lines())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if paging.is_none() && next.is_none() && acked_after.is_none() && notes.is_empty() {
        return None;
    }
    Some(super::EscalationLine {
        paging: paging.filter(|_| e.acked_at.is_none()),
        next: next.filter(|_| e.acked_at.is_none() || e.forced == 1),
        acked_after,
        notes,
    })
}

fn mark(by: &Option<String>, at: &Option<String>) -> Option<Mark> {
    Some(Mark {
        by: by.clone()?,
        at: at.clone()?,
    })
}

/// An annotation the group's alerts share (Alertmanager's common annotations), else the first
/// firing alert's.
fn annotation(group: &GroupView, key: &str) -> Option<String> {
    group
        .common_annotations
        .get(key)
        .or_else(|| {
            group
                .alerts
                .iter()
                .filter(|a| a.status == AlertStatus::Firing)
                .chain(group.alerts.iter())
                .find_map(|a| a.annotations.get(key))
        })
        .filter(|v| !v.trim().is_empty())
        .cloned()
}

fn group_label_text(group: &GroupView) -> String {
    if group.group_labels.is_empty() {
        return format!("group {}", group.id);
    }
    group
        .group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Only http(s) links are shown: a label value is not a trusted URL scheme.
fn is_web_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && !url.contains(char::is_whitespace)
}

/// Alertmanager's "new silence" page, prefilled with the group's labels.
fn silence_url(external_url: &str, group: &GroupView) -> String {
    let matchers = group
        .group_labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{}/#/silences/new?filter={}",
        external_url.trim_end_matches('/'),
        percent_encode(&format!("{{{matchers}}}"))
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Severity;
    use crate::store::AlertView;

    fn group(status: GroupStatus) -> GroupView {
        let resolved = status == GroupStatus::Resolved;
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        GroupView {
            id: 7,
            receiver: "bot".into(),
            group_key: "k".into(),
            status,
            severity: Severity::Sev1,
            severity_note: None,
            runbook: Some("APIDown".into()),
            group_labels: labels(&[("alertname", "APIDown")]),
            common_labels: labels(&[("alertname", "APIDown")]),
            common_annotations: labels(&[("summary", "API is down")]),
            external_url: "http://am:9093".into(),
            truncated_alerts: 0,
            started_at: "2026-11-27T10:00:00.000000000Z".into(),
            resolved_at: resolved.then(|| "2026-11-27T10:42:00.000000000Z".into()),
            created_at: "2026-11-27T10:00:00.000000000Z".into(),
            updated_at: "2026-11-27T10:00:00.000000000Z".into(),
            acknowledged_by: None,
            acknowledged_at: None,
            silence_id: None,
            silenced_by: None,
            silenced_until: None,
            alerts_total: 1,
            alerts_firing: i64::from(!resolved),
            escalation: None,
            alerts: vec![AlertView {
                fingerprint: "aaaa000000000001".into(),
                status: if resolved {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Firing
                },
                severity: Severity::Sev1,
                labels: labels(&[("alertname", "APIDown"), ("instance", "api-1:8000")]),
                annotations: labels(&[]),
                starts_at: "2026-11-27T10:00:00.000000000Z".into(),
                ends_at: None,
                generator_url: "javascript:alert(1)".into(),
            }],
        }
    }

    #[test]
    fn a_firing_group_gets_its_runbook_actions_and_a_silence_link() {
        let rb = Runbook::load(None).unwrap();
        let c = card(&group(GroupStatus::Firing), &rb);
        assert_eq!(c.title, "Sev1 · APIDown: API down");
        assert_eq!(c.summary.as_deref(), Some("API is down"));
        assert_eq!(c.alerts[0].name, "api-1:8000");
        assert_eq!(c.actions.len(), 5);
        assert_eq!(c.actions[0].id, "rb1:7:0");
        assert!(c
            .actions
            .iter()
            .any(|a| a.label == "Restart backend" && a.risky));
        assert!(c
            .actions
            .iter()
            .any(|a| a.label == "Acknowledge" && !a.risky));
        // The generator URL is not http(s): no link is made of it.
        assert_eq!(c.links.len(), 1);
        assert_eq!(
            c.links[0].url,
            "http://am:9093/#/silences/new?filter=%7Balertname%3D%22APIDown%22%7D"
        );
    }

    #[test]
    fn a_resolved_group_loses_its_buttons_and_says_how_long_it_fired() {
        let rb = Runbook::load(None).unwrap();
        let c = card(&group(GroupStatus::Resolved), &rb);
        assert!(c.resolved);
        assert!(c.actions.is_empty());
        assert_eq!(
            c.fired_for.map(crate::domain::duration::short).as_deref(),
            Some("42m")
        );
    }
}
