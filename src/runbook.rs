//! Data from `commands/alerts.toml`: what each alert means, what to check, which actions fit.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

const EMBEDDED_ALERTS: &str = include_str!("../commands/alerts.toml");

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunbookEntry {
    pub title: String,
    pub meaning: String,
    pub checks: Vec<String>,
    #[serde(default)]
    pub actions: Vec<RunbookAction>,
    /// A chain of `policies/escalation.toml` for this alert instead of its severity's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
}

/// One next step; later it becomes a button that runs `command` with `args`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunbookAction {
    pub label: String,
    pub command: String,
    #[serde(default)]
    pub args: BTreeMap<String, toml::Value>,
    /// Changes the stack (restart, rollback…) rather than only reading it.
    #[serde(default)]
    pub risky: bool,
}

impl RunbookAction {
    /// The action's arguments as a platform would send them, for the command's validation.
    pub fn raw_args(&self) -> Vec<(String, crate::request::RawValue)> {
        use crate::request::RawValue;
        self.args
            .iter()
            .map(|(k, v)| {
                let raw = match v {
                    toml::Value::Integer(i) => RawValue::Integer(*i),
                    toml::Value::Boolean(b) => RawValue::Boolean(*b),
                    other => RawValue::Text(other.as_str().unwrap_or_default().to_string()),
                };
                (k.clone(), raw)
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    alerts: BTreeMap<String, RunbookEntry>,
}

/// The runbook entries by alert name.
#[derive(Debug, Clone, Default)]
pub struct Runbook {
    entries: BTreeMap<String, RunbookEntry>,
}

impl Runbook {
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let text = match dir {
            Some(dir) => {
                let path = dir.join("alerts.toml");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
            }
            None => EMBEDDED_ALERTS.to_string(),
        };
        Self::parse(&text).context("commands/alerts.toml")
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: AlertsFile = toml::from_str(text)?;
        for (name, entry) in &file.alerts {
            if entry.checks.is_empty() {
                bail!("alert {name}: `checks` must list at least one check");
            }
            // A button label is shown on a Discord button, which holds 80 characters.
            if let Some(a) = entry.actions.iter().find(|a| a.label.chars().count() > 80) {
                bail!(
                    "alert {name}: action label {:?} is longer than 80 characters",
                    a.label
                );
            }
        }
        Ok(Self {
            entries: file.alerts,
        })
    }

    /// The entry key and entry for an alert name, if the runbook covers it.
    pub fn entry(&self, alertname: &str) -> Option<(&str, &RunbookEntry)> {
        self.entries
            .get_key_value(alertname)
            .map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry, by alert name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RunbookEntry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks that every `escalation` names one of `chains`; the error names the alert and
    /// the fix.
    pub fn check_chains(&self, chains: &[&str]) -> anyhow::Result<()> {
        for (name, entry) in &self.entries {
            if let Some(chain) = &entry.escalation {
                if !chains.contains(&chain.as_str()) {
                    bail!(
                        "commands/alerts.toml: alert {name}: escalation = {chain:?} is no chain of policies/escalation.toml: add [chains.{chain}] there, or use one of: {}",
                        if chains.is_empty() { "none".to_string() } else { chains.join(", ") }
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_runbook_covers_the_nine_alerts() {
        let rb = Runbook::load(None).unwrap();
        for name in [
            "APIDown",
            "HighErrorRate",
            "DatabaseConnectionsFull",
            "DiskSpaceCritical",
            "SSLCertificateExpiring",
            "BackupFailed",
            "SlowResponseTime",
            "HighMemoryUsage",
            "CeleryQueueBacklog",
        ] {
            let (_, entry) = rb.entry(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(!entry.checks.is_empty());
            assert!(!entry.actions.is_empty());
        }
        assert_eq!(rb.len(), 9);
        assert!(rb.entry("NoSuchAlert").is_none());
    }

    #[test]
    fn database_alerts_name_their_chain_and_unknown_chains_are_refused() {
        let rb = Runbook::load(None).unwrap();
        for name in ["DatabaseConnectionsFull", "BackupFailed"] {
            assert_eq!(
                rb.entry(name).unwrap().1.escalation.as_deref(),
                Some("database")
            );
        }
        assert_eq!(rb.entry("APIDown").unwrap().1.escalation, None);
        assert!(rb.check_chains(&["database", "sev1"]).is_ok());
        let e = rb.check_chains(&["sev1", "sev2"]).unwrap_err().to_string();
        assert!(
            e.contains("alert BackupFailed: escalation = \"database\"") && e.contains("sev1, sev2"),
            "{e}"
        );
    }

    #[test]
    fn an_entry_without_checks_is_refused() {
        let err =
            Runbook::parse("[alerts.X]\ntitle=\"x\"\nmeaning=\"y\"\nchecks=[]\n").unwrap_err();
        assert!(err.to_string().contains("checks"));
    }
}
