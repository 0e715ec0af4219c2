//! Decides what runbot adds to a webhook before it is stored: severities and the runbook entry.

use super::{format_time, Labels, Webhook};
use crate::policy::{Severity, SeverityMap};
use crate::runbook::Runbook;

/// A webhook with runbot's judgement attached, ready to store.
#[derive(Debug, Clone)]
pub struct IncomingGroup {
    pub webhook: Webhook,
    /// One per alert, in the webhook's order.
    pub alert_severities: Vec<Severity>,
    /// The most severe of the firing alerts (or of all alerts when none fire).
    pub severity: Severity,
    /// Set when some alert had no known severity label.
    pub severity_note: Option<String>,
    /// The runbook entry's key, when the runbook covers this alert.
    pub runbook: Option<String>,
    /// The text the store writes, made here, on the HTTP threads, rather than on the one writer.
    pub stored: StoredForm,
}

/// Label sets as JSON and times as fixed-width RFC 3339, as the store keeps them.
#[derive(Debug, Clone)]
pub struct StoredForm {
    pub group_labels: String,
    pub common_labels: String,
    pub common_annotations: String,
    /// One per alert, in the webhook's order.
    pub alerts: Vec<StoredAlert>,
}

#[derive(Debug, Clone)]
pub struct StoredAlert {
    pub labels: String,
    pub annotations: String,
    pub starts_at: String,
    pub ends_at: Option<String>,
}

/// A label set as the store keeps it: JSON with keys in order.
pub fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels).expect("a map of strings always serializes")
}

pub fn classify(webhook: Webhook, severities: &SeverityMap, runbook: &Runbook) -> IncomingGroup {
    let mut note = None;
    let alert_severities: Vec<Severity> = webhook
        .alerts
        .iter()
        .map(|a| {
            let c = severities.classify(&a.labels);
            if note.is_none() {
                note = c.note;
            }
            c.severity
        })
        .collect();
    let firing = webhook
        .alerts
        .iter()
        .zip(&alert_severities)
        .filter(|(a, _)| a.status == super::AlertStatus::Firing)
        .map(|(_, s)| *s)
        .min();
    let severity = firing
        .or_else(|| alert_severities.iter().copied().min())
        .unwrap_or(Severity::Sev4);
    let runbook = webhook
        .alertname()
        .and_then(|name| runbook.entry(name))
        .map(|(key, _)| key.to_string());
    let stored = StoredForm {
        group_labels: labels_json(&webhook.group_labels),
        common_labels: labels_json(&webhook.common_labels),
        common_annotations: labels_json(&webhook.common_annotations),
        alerts: webhook
            .alerts
            .iter()
            .map(|a| StoredAlert {
                labels: labels_json(&a.labels),
                annotations: labels_json(&a.annotations),
                starts_at: format_time(a.starts_at),
                ends_at: a.ends_at.map(format_time),
            })
            .collect(),
    };
    IncomingGroup {
        stored,
        webhook,
        alert_severities,
        severity,
        severity_note: note,
        runbook,
    }
}
