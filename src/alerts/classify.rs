//! Decides what runbot adds to a webhook before it is stored: severities and the runbook entry.

use super::Webhook;
use crate::domain::alert::{labels_json, IncomingAlert, IncomingGroup};
use crate::domain::{format_time, AlertStatus, Severity};
use crate::policy::SeverityMap;
use crate::runbook::Runbook;

/// The webhook with runbot's judgement attached, in the form the store keeps (made here, on the
/// HTTP threads, rather than on the one writer).
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
        .filter(|(a, _)| a.status == AlertStatus::Firing)
        .map(|(_, s)| *s)
        .min();
    let severity = firing
        .or_else(|| alert_severities.iter().copied().min())
        .unwrap_or(Severity::Sev4);
    let runbook = webhook
        .alertname()
        .and_then(|name| runbook.entry(name))
        .map(|(key, _)| key.to_string());
    IncomingGroup {
        group_labels: labels_json(&webhook.group_labels),
        common_labels: labels_json(&webhook.common_labels),
        common_annotations: labels_json(&webhook.common_annotations),
        receiver: webhook.receiver,
        group_key: webhook.group_key,
        status: webhook.status,
        severity,
        severity_note: note,
        runbook,
        external_url: webhook.external_url,
        truncated_alerts: webhook.truncated_alerts,
        alerts: webhook
            .alerts
            .into_iter()
            .zip(alert_severities)
            .map(|(a, severity)| IncomingAlert {
                labels: labels_json(&a.labels),
                annotations: labels_json(&a.annotations),
                starts_at: format_time(a.starts_at),
                ends_at: a.ends_at.map(format_time),
                fingerprint: a.fingerprint,
                status: a.status,
                severity,
                generator_url: a.generator_url,
            })
            .collect(),
    }
}
