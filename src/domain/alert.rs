//! An alert group as the store keeps it: what comes in (a classified webhook, ready to store),
//! the typed state the lifecycle changes, and the timeline entries it records.
//!
//! Label sets are JSON text and times their stored form ([`super::format_time`]): the store
//! compares and writes them as they are, and that text is made on the HTTP threads rather
//! than on the one writer.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{AlertStatus, GroupStatus, Severity};

pub type Labels = BTreeMap<String, String>;

/// Alertmanager's identity for an alert: a hash of its labels (16 hex digits from Alertmanager).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "fingerprint {:?} is not 1 to 64 letters and digits",
                s.chars().take(80).collect::<String>()
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A label set as the store keeps it: JSON with keys in order.
pub fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels).expect("a map of strings always serializes")
}

/// One webhook, parsed and classified: the whole current state of one alert group.
#[derive(Debug, Clone)]
pub struct IncomingGroup {
    pub receiver: String,
    pub group_key: String,
    pub status: GroupStatus,
    /// The most severe of the firing alerts (or of all alerts when none fire).
    pub severity: Severity,
    /// Set when some alert had no known severity label.
    pub severity_note: Option<String>,
    /// The runbook entry's key, when the runbook covers this alert.
    pub runbook: Option<String>,
    pub group_labels: String,
    pub common_labels: String,
    pub common_annotations: String,
    pub external_url: String,
    /// Alerts Alertmanager left out of this webhook (its `max_alerts`).
    pub truncated_alerts: i64,
    /// No fingerprint twice.
    pub alerts: Vec<IncomingAlert>,
}

#[derive(Debug, Clone)]
pub struct IncomingAlert {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub severity: Severity,
    pub labels: String,
    pub annotations: String,
    pub starts_at: String,
    /// None while firing.
    pub ends_at: Option<String>,
    pub generator_url: String,
}

/// A group as the lifecycle sees it: its row in `alert_groups` without the id and the columns
/// others own (acknowledgement, silence).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupState {
    pub receiver: String,
    pub group_key: String,
    pub status: GroupStatus,
    pub severity: Severity,
    pub severity_note: Option<String>,
    pub runbook: Option<String>,
    pub group_labels: String,
    pub common_labels: String,
    pub common_annotations: String,
    pub external_url: String,
    pub truncated_alerts: i64,
    /// When the current episode started firing.
    pub started_at: String,
    pub resolved_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// An alert as the lifecycle sees it: its row in `alerts` without the keys.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertState {
    pub status: AlertStatus,
    pub severity: Severity,
    pub labels: String,
    pub annotations: String,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub generator_url: String,
    pub first_seen_at: String,
    pub updated_at: String,
}

/// A group's known alerts by fingerprint, each with whether it changed (and must be written).
pub type AlertStates = HashMap<String, (AlertState, bool)>;

/// What a timeline entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    GroupFiring,
    GroupResolved,
    AlertFiring,
    AlertResolved,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        Self::GroupFiring,
        Self::GroupResolved,
        Self::AlertFiring,
        Self::AlertResolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GroupFiring => "group_firing",
            Self::GroupResolved => "group_resolved",
            Self::AlertFiring => "alert_firing",
            Self::AlertResolved => "alert_resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn group(status: GroupStatus) -> Self {
        match status {
            GroupStatus::Firing => Self::GroupFiring,
            GroupStatus::Resolved => Self::GroupResolved,
        }
    }

    pub fn alert(status: AlertStatus) -> Self {
        match status {
            AlertStatus::Firing => Self::AlertFiring,
            AlertStatus::Resolved => Self::AlertResolved,
        }
    }
}

/// One entry of a group's timeline: the group (no fingerprint) or one of its alerts changed
/// status at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    pub fingerprint: Option<String>,
    pub kind: EventKind,
    pub at: String,
}

/// What one webhook did to its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transition {
    /// The group's own row changed (a new group counts).
    pub group_changed: bool,
    /// The group's status after the webhook, when the webhook opened, resolved or re-fired it.
    pub group_became: Option<GroupStatus>,
}

/// The group lifecycle (`alerts::lifecycle::apply`): applies one webhook to its group's state
/// and alerts (None: a group not seen before), appending the timeline entries it causes;
/// `now` is in the stored form. The store runs it under its locks and takes it as a value
/// because it sits below `alerts`.
pub type Lifecycle = fn(
    incoming: &IncomingGroup,
    group: &mut Option<GroupState>,
    alerts: &mut AlertStates,
    events: &mut Vec<AlertEvent>,
    now: &str,
) -> Transition;
