//! Data from `policies/` and the decisions made with it.
//!
//! - severities: how alert labels map to Sev1–Sev4 (`severities.toml`, in this file).
//! - [`roles`]: who holds which runbot role, per platform, and when each role is on call (`roles.toml`).
//! - [`hours`]: `policy.timezone` and `policy.business_hours`: when a role's hours cover a moment.
//! - [`cedar`]: the Cedar schema and policies (`runbot.cedarschema`, `runbot.cedar`), checked at load.
//! - [`Policies::decide`]: allow, deny, or needs a second person's approval, with a reason a
//!   person can act on.
//! - [`people`]: who may be paged, and their address on each platform (`people.toml`).
//! - [`oncall`]: rotations (`oncall.toml`) and who is on duty at a moment, overrides included.
//! - [`escalation`]: the chains of pages (`escalation.toml`) and whom one step pages.
//! - [`cli`]: `runbot policy explain` and `runbot policy test`; [`oncall_cli`]: `runbot oncall
//!   who` and `runbot escalation explain`.

pub mod cedar;
pub mod cli;
pub mod escalation;
pub mod incident;
pub mod oncall;
pub mod oncall_cli;
pub mod people;
pub mod roles;

mod decide;
mod located;

pub use decide::{Decision, Effect, Identity, OnCall, Policies, PolicyRequest};
pub use escalation::{Chain, Step, StepPlan, Target};
pub use oncall::{DutySource, OnDuty, Override};
pub use people::{People, Person};

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::domain::Severity;

const EMBEDDED_SEVERITIES: &str = include_str!("../../policies/severities.toml");
pub(crate) const EMBEDDED_ROLES: &str = include_str!("../../policies/roles.toml");
pub(crate) const EMBEDDED_SCHEMA: &str = include_str!("../../policies/runbot.cedarschema");
pub(crate) const EMBEDDED_POLICIES: &str = include_str!("../../policies/runbot.cedar");
pub(crate) const EMBEDDED_PEOPLE: &str = include_str!("../../policies/people.toml");
pub(crate) const EMBEDDED_ONCALL: &str = include_str!("../../policies/oncall.toml");
pub(crate) const EMBEDDED_ESCALATION: &str = include_str!("../../policies/escalation.toml");
pub(crate) const EMBEDDED_TESTS: &str = include_str!("../../policies/tests.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeverityFile {
    label: String,
    default: Severity,
    map: HashMap<String, Severity>,
}

/// How an alert's labels become a severity.
#[derive(Debug, Clone)]
pub struct SeverityMap {
    label: String,
    default: Severity,
    map: HashMap<String, Severity>,
}

/// A severity, and why it was chosen when it was not from the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub severity: Severity,
    /// Set when the default was used: says which label value was missing or unknown.
    pub note: Option<String>,
}

impl SeverityMap {
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let text = match dir {
            Some(dir) => {
                let path = dir.join("severities.toml");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
            }
            None => EMBEDDED_SEVERITIES.to_string(),
        };
        Self::parse(&text).context("policies/severities.toml")
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: SeverityFile = toml::from_str(text)?;
        if file.label.is_empty() {
            bail!("`label` must name the alert label that carries the severity");
        }
        Ok(Self {
            label: file.label,
            default: file.default,
            map: file
                .map
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        })
    }

    /// The alert label that carries the severity.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The label values the map knows, sorted.
    pub fn values(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.map.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub fn classify(&self, labels: &std::collections::BTreeMap<String, String>) -> Classified {
        match labels.get(&self.label) {
            Some(value) => match self.map.get(&value.to_ascii_lowercase()) {
                Some(sev) => Classified {
                    severity: *sev,
                    note: None,
                },
                None => Classified {
                    severity: self.default,
                    note: Some(format!(
                        "label {}={:?} is not in policies/severities.toml; treated as {} (the default)",
                        self.label,
                        crate::domain::text::clip(value, 64),
                        self.default.title()
                    )),
                },
            },
            None => Classified {
                severity: self.default,
                note: Some(format!(
                    "no {} label; treated as {} (the default)",
                    self.label,
                    self.default.title()
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(sev: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("severity".to_string(), sev.to_string())])
    }

    #[test]
    fn the_shipped_map_follows_the_runbook() {
        let map = SeverityMap::load(None).unwrap();
        assert_eq!(map.classify(&labels("critical")).severity, Severity::Sev1);
        assert_eq!(map.classify(&labels("warning")).severity, Severity::Sev3);
        assert_eq!(map.classify(&labels("CRITICAL")).severity, Severity::Sev1);
        assert!(map.classify(&labels("critical")).note.is_none());
    }

    #[test]
    fn an_unknown_value_falls_back_to_the_default_and_is_noted() {
        let map = SeverityMap::load(None).unwrap();
        let c = map.classify(&labels("apocalyptic"));
        assert_eq!(c.severity, Severity::Sev3);
        assert!(c.note.unwrap().contains("apocalyptic"));
        let c = map.classify(&BTreeMap::new());
        assert!(c.note.unwrap().contains("no severity label"));
    }

    #[test]
    fn a_bad_file_is_refused() {
        assert!(SeverityMap::parse("label = \"severity\"\ndefault = \"sev9\"\n[map]\n").is_err());
        assert!(
            SeverityMap::parse("label = \"severity\"\ndefault = \"sev3\"\ntypo = 1\n[map]\n")
                .is_err()
        );
    }
}
