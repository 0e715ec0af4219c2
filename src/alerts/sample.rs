//! A sample Alertmanager webhook for one of the runbook's alerts (`runbot alert test`), shaped
//! as Alertmanager 0.25 sends it, so a newcomer sees a real card within seconds of starting.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::runbook::RunbookEntry;

/// What a sample alert says about itself.
pub struct Sample<'a> {
    pub alertname: &'a str,
    pub entry: &'a RunbookEntry,
    /// The label that carries the severity (`policies/severities.toml`), and its value.
    pub severity_label: &'a str,
    pub severity: &'a str,
    pub now: DateTime<Utc>,
    /// Fresh for every sample: each is a new alert in the alert's group.
    pub fingerprint: &'a str,
}

/// The webhook's body: one firing alert, labelled `runbot_test="true"` so nobody takes it for a
/// real one, in the group Alertmanager would make of it (`alertname` and `service`).
pub fn webhook(s: &Sample<'_>) -> Value {
    let mut labels = json!({
        "alertname": s.alertname,
        "instance": "backend-1",
        "job": "backend",
        "service": "backend",
        "runbot_test": "true",
    });
    labels[s.severity_label] = json!(s.severity);
    let annotations = json!({
        "summary": format!("{} (a test alert sent by `runbot alert test`)", s.entry.title),
        "description": s.entry.meaning,
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\", service=\"backend\"}}", s.alertname),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "runbot",
        "groupLabels": { "alertname": s.alertname, "service": "backend" },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://alertmanager.invalid",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": s.now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.invalid/graph",
            "fingerprint": s.fingerprint,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_a_webhook_runbot_takes_and_classifies_as_asked() {
        let runbook = crate::runbook::Runbook::load(None).unwrap();
        let (name, entry) = runbook.entry("APIDown").unwrap();
        let body = webhook(&Sample {
            alertname: name,
            entry,
            severity_label: "severity",
            severity: "critical",
            now: Utc::now(),
            fingerprint: "0123456789abcdef",
        });
        let parsed = crate::alerts::Webhook::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.alerts.len(), 1);
        assert_eq!(parsed.alertname(), Some("APIDown"));
        assert_eq!(parsed.common_labels["runbot_test"], "true");
        let severities = crate::policy::SeverityMap::load(None).unwrap();
        let classified = crate::alerts::classify(parsed, &severities, &runbook);
        assert_eq!(classified.severity, crate::domain::Severity::Sev1);
        assert_eq!(classified.runbook.as_deref(), Some("APIDown"));
    }
}
