//! The incident a request acts in, which sets the severity its policy decision sees.
//!
//! A card's button carries its group; a typed command carries none, and deciding it with no
//! severity would let `/restart service:backend` during a Sev1 skip the Sev1 approval a button
//! asks for. So every request is decided under the most severe open group that concerns its
//! target: a group whose `service` or `job` label (of the group or of one of its firing alerts)
//! names the command's `service` argument; when no open group concerns it, or the command has no
//! service, the most severe open group of the stack. A group the request came from (a card, or
//! `group:N`) counts too, and the more severe of the two wins: a button on a Sev3 card cannot
//! lower the severity of a Sev1 on the same service. A command on a group itself (`/ack`, `/silence`)
//! is decided by that group alone: silencing a Sev4's noise must not wait for a Sev1 elsewhere.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::commands::{Args, CommandSpec, Value};
use crate::domain::Severity;

/// The labels that name what an alert is about, matched against a command's `service`.
pub const TARGET_LABELS: [&str; 2] = ["service", "job"];

/// An alert group as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenGroup {
    pub id: i64,
    pub severity: Severity,
    /// For people: the group's alertname, or its group labels.
    pub title: String,
    /// Values of [`TARGET_LABELS`] on the group and on its firing alerts.
    pub targets: BTreeSet<String>,
}

impl OpenGroup {
    /// The store's open groups as the rule sees them.
    pub fn from_stored(groups: Vec<crate::store::GroupTargets>) -> Vec<OpenGroup> {
        groups
            .into_iter()
            .map(|g| Self::new(g.id, g.severity, g.alertname.as_ref(), g.targets))
            .collect()
    }

    /// The group a request came from (a card, or `group:N`), open or not.
    pub fn from_view(g: &crate::store::GroupView) -> OpenGroup {
        let alertname = g
            .group_labels
            .get("alertname")
            .or_else(|| g.common_labels.get("alertname"));
        Self::new(g.id, g.severity, alertname, g.label_values(&TARGET_LABELS))
    }

    /// A group described by its labels (`policy explain --open-group`, `tests.toml`).
    pub fn from_labels(
        id: i64,
        severity: Severity,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> OpenGroup {
        let targets = TARGET_LABELS
            .iter()
            .filter_map(|k| labels.get(*k).cloned())
            .collect();
        Self::new(id, severity, labels.get("alertname"), targets)
    }

    fn new(
        id: i64,
        severity: Severity,
        alertname: Option<&String>,
        targets: BTreeSet<String>,
    ) -> OpenGroup {
        OpenGroup {
            id,
            severity,
            title: alertname.map_or_else(|| format!("group #{id}"), String::clone),
            targets,
        }
    }
}

/// Why a group set the severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The request came from it (a card's button, or `group:N`).
    Origin,
    /// The most severe open group that concerns the command's service.
    Service(String),
    /// The most severe open group of the stack.
    Stack,
}

/// The group whose severity a request is decided under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub group_id: i64,
    pub severity: Severity,
    pub title: String,
    pub basis: Basis,
}

impl Incident {
    /// One sentence for the requester and the audit trail.
    pub fn sentence(&self) -> String {
        let why = match &self.basis {
            Basis::Origin => "the alert group this request came from".to_string(),
            Basis::Service(s) => format!("the most severe open alert group on {s}"),
            Basis::Stack => "the most severe open alert group of the stack".to_string(),
        };
        format!(
            "Decided as {}: alert group #{} ({}) is {why}.",
            self.severity.title(),
            self.group_id,
            self.title
        )
    }

    /// What the audit row keeps of it.
    pub fn detail(&self) -> Json {
        let mut v = json!({
            "group_id": self.group_id,
            "severity": self.severity.as_str(),
            "title": self.title,
        });
        match &self.basis {
            Basis::Origin => v["basis"] = json!("origin"),
            Basis::Service(s) => {
                v["basis"] = json!("service");
                v["service"] = json!(s);
            }
            Basis::Stack => v["basis"] = json!("stack"),
        }
        v
    }
}

/// Most severe first; among equals the oldest (lowest id), so the answer is stable.
fn most_severe<'a>(groups: impl Iterator<Item = &'a OpenGroup>) -> Option<&'a OpenGroup> {
    groups.min_by_key(|g| (g.severity, g.id))
}

/// What a command acts on, as far as the incident rule is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The alert group itself (`/ack`, `/silence`): only that group's severity counts.
    Group,
    /// A service of the stack (its `service` argument).
    Service(&'a str),
    /// The stack as a whole (`/deploy`, `/backup`, `/block-ip`, …).
    Stack,
}

impl<'a> Target<'a> {
    /// What `spec` run with `args` acts on: its group, the service it names, or the stack.
    pub fn of(spec: &CommandSpec, args: &'a Args) -> Target<'a> {
        if spec.acts_on_group() {
            return Target::Group;
        }
        match args.get("service") {
            Some(Value::Text(s)) => Target::Service(s),
            _ => Target::Stack,
        }
    }
}

/// The incident a request acts in: `origin` is the group it came from (open or not), `open`
/// every open group. None when nothing is open and the request names no group.
pub fn incident_for(
    origin: Option<&OpenGroup>,
    target: Target<'_>,
    open: &[OpenGroup],
) -> Option<Incident> {
    let inferred = match target {
        Target::Group => None,
        Target::Service(s) => most_severe(open.iter().filter(|g| g.targets.contains(s)))
            .map(|g| (g, Basis::Service(s.to_string())))
            .or_else(|| most_severe(open.iter()).map(|g| (g, Basis::Stack))),
        Target::Stack => most_severe(open.iter()).map(|g| (g, Basis::Stack)),
    };
    let (group, basis) = match (origin, inferred) {
        (Some(o), Some((g, basis))) if g.severity < o.severity => (g, basis),
        (Some(o), _) => (o, Basis::Origin),
        (None, Some(picked)) => picked,
        (None, None) => return None,
    };
    Some(Incident {
        group_id: group.id,
        severity: group.severity,
        title: group.title.clone(),
        basis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: i64, sev: Severity, targets: &[&str]) -> OpenGroup {
        OpenGroup {
            id,
            severity: sev,
            title: format!("G{id}"),
            targets: targets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_typed_command_takes_the_most_severe_group_on_its_service() {
        let open = [
            group(1, Severity::Sev3, &["backend"]),
            group(2, Severity::Sev1, &["backend"]),
            group(3, Severity::Sev1, &["worker"]),
        ];
        let i = incident_for(None, Target::Service("backend"), &open).unwrap();
        assert_eq!((i.group_id, i.severity), (2, Severity::Sev1));
        assert_eq!(i.basis, Basis::Service("backend".into()));
        assert!(i.sentence().contains("#2"), "{}", i.sentence());
    }

    #[test]
    fn a_group_on_the_service_wins_over_a_more_severe_one_elsewhere() {
        let open = [
            group(1, Severity::Sev1, &["worker"]),
            group(2, Severity::Sev3, &["redis"]),
        ];
        let i = incident_for(None, Target::Service("redis"), &open).unwrap();
        assert_eq!((i.group_id, i.severity), (2, Severity::Sev3));
    }

    #[test]
    fn without_a_group_on_the_service_the_stack_decides() {
        let open = [
            group(4, Severity::Sev2, &[]),
            group(5, Severity::Sev1, &["worker"]),
            group(6, Severity::Sev1, &["nginx"]),
        ];
        let i = incident_for(None, Target::Service("redis"), &open).unwrap();
        assert_eq!((i.group_id, i.basis.clone()), (5, Basis::Stack));
        let j = incident_for(None, Target::Stack, &open).unwrap();
        assert_eq!(j.group_id, 5);
        assert_eq!(incident_for(None, Target::Service("backend"), &[]), None);
    }

    #[test]
    fn the_origin_counts_unless_an_open_group_is_more_severe() {
        let card = group(7, Severity::Sev3, &["backend"]);
        let open = [card.clone(), group(8, Severity::Sev1, &["backend"])];
        let i = incident_for(Some(&card), Target::Service("backend"), &open).unwrap();
        assert_eq!((i.group_id, i.severity), (8, Severity::Sev1));
        let sev1 = group(9, Severity::Sev1, &[]);
        let i = incident_for(Some(&sev1), Target::Service("backend"), &open).unwrap();
        assert_eq!((i.group_id, i.basis), (9, Basis::Origin));
        let i = incident_for(Some(&card), Target::Stack, &[]).unwrap();
        assert_eq!((i.group_id, i.basis), (7, Basis::Origin));
    }

    #[test]
    fn a_command_on_a_group_is_decided_by_that_group_alone() {
        let card = group(7, Severity::Sev4, &["backend"]);
        let open = [card.clone(), group(8, Severity::Sev1, &["backend"])];
        let i = incident_for(Some(&card), Target::Group, &open).unwrap();
        assert_eq!((i.group_id, i.basis), (7, Basis::Origin));
        assert_eq!(incident_for(None, Target::Group, &open), None);
    }
}
