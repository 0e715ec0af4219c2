//! The Alertmanager webhook (payload version 4), parsed into validated domain types.
//!
//! Parsing is the only way in: after [`Webhook::parse`], the rest of runbot trusts the data.
//! [`classify`] turns it into what the store keeps; [`lifecycle`] decides what each webhook
//! changes in its group.

mod classify;
pub mod lifecycle;
pub mod sample;

pub use classify::classify;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;

use crate::domain::alert::{Fingerprint, Labels};
use crate::domain::{AlertStatus, GroupStatus};

/// One alert as Alertmanager last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: DateTime<Utc>,
    /// None while firing (Alertmanager sends year 1).
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: String,
}

/// A validated webhook: the whole current state of one alert group.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub receiver: String,
    pub group_key: String,
    pub status: GroupStatus,
    pub group_labels: Labels,
    pub common_labels: Labels,
    pub common_annotations: Labels,
    pub external_url: String,
    pub truncated_alerts: i64,
    pub alerts: Vec<Alert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawWebhook {
    version: String,
    group_key: String,
    status: String,
    receiver: String,
    #[serde(default)]
    group_labels: Labels,
    #[serde(default)]
    common_labels: Labels,
    #[serde(default)]
    common_annotations: Labels,
    #[serde(default, rename = "externalURL")]
    external_url: String,
    #[serde(default)]
    truncated_alerts: i64,
    alerts: Vec<RawAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAlert {
    status: String,
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

/// Why a webhook body was refused; the message is meant for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WebhookError(pub String);

impl Webhook {
    pub fn parse(body: &[u8]) -> Result<Webhook, WebhookError> {
        // The fast path; only a body that fails is parsed again to say where.
        if let Ok(raw) = serde_json::from_slice::<RawWebhook>(body) {
            return raw.validate();
        }
        let de = &mut serde_json::Deserializer::from_slice(body);
        let raw: RawWebhook = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let what = if inner.is_eof() {
                format!("body is truncated JSON ({inner})")
            } else if inner.is_syntax() {
                format!("body is not valid JSON ({inner})")
            } else {
                // Data errors: name the full path of the field, without serde's line/column.
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                let prefix = if path == "." {
                    String::new()
                } else {
                    format!("{path}.")
                };
                match msg
                    .strip_prefix("missing field `")
                    .and_then(|r| r.split('`').next())
                {
                    Some(field) => format!("invalid webhook: `{prefix}{field}` is missing"),
                    None if path == "." => format!("invalid webhook: {msg}"),
                    None => format!("invalid webhook: `{path}`: {msg}"),
                }
            };
            WebhookError(what)
        })?;
        raw.validate()
    }
}

impl RawWebhook {
    fn validate(self) -> Result<Webhook, WebhookError> {
        let err = |m: String| Err(WebhookError(m));
        if self.version != "4" {
            return err(format!(
                "unsupported webhook version {:?}: runbot understands Alertmanager's version \"4\"",
                self.version.chars().take(20).collect::<String>()
            ));
        }
        let Some(status) = GroupStatus::parse(&self.status) else {
            return err(format!(
                "status must be \"firing\" or \"resolved\", got {:?}",
                self.status.chars().take(40).collect::<String>()
            ));
        };
        if self.group_key.is_empty() {
            return err("groupKey is empty".into());
        }
        if self.receiver.is_empty() {
            return err("receiver is empty".into());
        }
        if self.truncated_alerts < 0 {
            return err("truncatedAlerts is negative".into());
        }
        if self.alerts.is_empty() {
            return err("alerts is empty: a webhook carries at least one alert".into());
        }
        let mut alerts: Vec<Alert> = Vec::with_capacity(self.alerts.len());
        for (i, a) in self.alerts.into_iter().enumerate() {
            let at = |m: String| WebhookError(format!("alerts[{i}]: {m}"));
            let fingerprint = Fingerprint::parse(&a.fingerprint).map_err(at)?;
            let status = AlertStatus::parse(&a.status).ok_or_else(|| {
                at(format!(
                    "status must be \"firing\" or \"resolved\", got {:?}",
                    a.status.chars().take(40).collect::<String>()
                ))
            })?;
            let starts_at = parse_time(&a.starts_at)
                .map_err(|e| at(format!("startsAt: {e}")))?
                .ok_or_else(|| at("startsAt is the zero time".into()))?;
            let ends_at = match a.ends_at.as_deref() {
                None | Some("") => None,
                Some(s) => parse_time(s).map_err(|e| at(format!("endsAt: {e}")))?,
            };
            let alert = Alert {
                fingerprint,
                status,
                labels: a.labels,
                annotations: a.annotations,
                starts_at,
                ends_at,
                generator_url: a.generator_url,
            };
            // Alertmanager never repeats a fingerprint in one group; if a sender does, the last wins.
            match alerts
                .iter_mut()
                .find(|x| x.fingerprint == alert.fingerprint)
            {
                Some(existing) => *existing = alert,
                None => alerts.push(alert),
            }
        }
        Ok(Webhook {
            receiver: self.receiver,
            group_key: self.group_key,
            status,
            group_labels: self.group_labels,
            common_labels: self.common_labels,
            common_annotations: self.common_annotations,
            external_url: self.external_url,
            truncated_alerts: self.truncated_alerts,
            alerts,
        })
    }
}

impl Webhook {
    /// The alert name the group is about, used to find its runbook entry.
    pub fn alertname(&self) -> Option<&str> {
        self.group_labels
            .get("alertname")
            .or_else(|| self.common_labels.get("alertname"))
            .or_else(|| self.alerts.iter().find_map(|a| a.labels.get("alertname")))
            .map(String::as_str)
    }
}

/// Parses an RFC 3339 time; Go's zero time (year 1) means "not set".
fn parse_time(s: &str) -> Result<Option<DateTime<Utc>>, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| {
            format!(
                "{:?} is not an RFC 3339 time ({e})",
                s.chars().take(40).collect::<String>()
            )
        })?
        .with_timezone(&Utc);
    Ok((t.year() > 1).then_some(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::format_time;

    const ONE: &str = r#"{"receiver":"bot","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"APIDown","severity":"critical"},"annotations":{"summary":"down"},"startsAt":"2026-11-27T19:31:13.991875004Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://p/graph","fingerprint":"1e2c446e93601f97"}],"groupLabels":{"alertname":"APIDown"},"commonLabels":{"alertname":"APIDown"},"commonAnnotations":{},"externalURL":"http://am:9093","version":"4","groupKey":"{}:{alertname=\"APIDown\"}","truncatedAlerts":0}"#;

    #[test]
    fn a_version_4_webhook_parses() {
        let w = Webhook::parse(ONE.as_bytes()).unwrap();
        assert_eq!(w.alerts.len(), 1);
        assert_eq!(w.alerts[0].ends_at, None);
        assert_eq!(w.alertname(), Some("APIDown"));
        assert_eq!(
            format_time(w.alerts[0].starts_at),
            "2026-11-27T19:31:13.991875004Z"
        );
    }

    #[test]
    fn errors_say_where_the_problem_is() {
        let missing = ONE.replace(r#""fingerprint":"1e2c446e93601f97""#, r#""x":"y""#);
        let e = Webhook::parse(missing.as_bytes()).unwrap_err().0;
        assert!(e.contains("alerts[0]") && e.contains("fingerprint"), "{e}");

        let v3 = ONE.replace(r#""version":"4""#, r#""version":"3""#);
        let e = Webhook::parse(v3.as_bytes()).unwrap_err().0;
        assert!(e.contains("version \"3\""), "{e}");

        let e = Webhook::parse(&ONE.as_bytes()[..50]).unwrap_err().0;
        assert!(e.contains("truncated"), "{e}");

        let e = Webhook::parse(b"{not json").unwrap_err().0;
        assert!(e.contains("not valid JSON"), "{e}");

        let bad_time = ONE.replace("2026-11-27T19:31:13.991875004Z", "yesterday");
        let e = Webhook::parse(bad_time.as_bytes()).unwrap_err().0;
        assert!(e.contains("startsAt"), "{e}");

        let bad_fp = ONE.replace("1e2c446e93601f97", "'; DROP TABLE alerts;--");
        let e = Webhook::parse(bad_fp.as_bytes()).unwrap_err().0;
        assert!(e.contains("fingerprint"), "{e}");
    }
}
