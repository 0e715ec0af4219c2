//! Decides what runbot adds to a webhook before it is stored: severities and the runbook entry.

use super::Webhook;
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
    IncomingGroup {
        webhook,
        alert_severities,
        severity,
        severity_note: note,
        runbook,
    }
}
