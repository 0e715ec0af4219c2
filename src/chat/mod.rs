//! Chat: the card an alert group shows, the outbox that delivers it, one adapter per platform.
//!
//! The core renders a platform-neutral [`Card`]; an adapter ([`discord`]) turns it into the
//! platform's message and sends it. Adapters translate and hold no business rules.

pub mod discord;
pub mod outbox;
pub mod render;

use std::time::Duration;

use crate::policy::Severity;

/// What a card shows about one alert group, whatever the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub group_id: i64,
    pub resolved: bool,
    pub severity: Severity,
    /// E.g. `Sev1 · APIDown: API down`.
    pub title: String,
    /// The `summary` annotation, when the alerts agree on one.
    pub summary: Option<String>,
    /// The `description` annotation, when the alerts agree on one.
    pub description: Option<String>,
    /// The runbook's "what it means".
    pub meaning: Option<String>,
    /// Every alert of the group, firing first; the adapter shows as many as fit.
    pub alerts: Vec<CardAlert>,
    /// Alerts Alertmanager left out of the webhook (`truncatedAlerts`).
    pub truncated_alerts: i64,
    pub links: Vec<Link>,
    /// The runbook's checks.
    pub checks: Vec<String>,
    /// Buttons: the runbook's actions that fit this alert; none once resolved.
    pub actions: Vec<CardAction>,
    /// For a resolved group: how long it fired.
    pub fired_for: Option<Duration>,
    /// When the group started firing, RFC 3339.
    pub started_at: String,
    /// A note for the footer, e.g. the unknown severity label.
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CardAlert {
    /// The `instance` label, else the alert name, else the fingerprint.
    pub name: String,
    pub firing: bool,
    /// When it started, RFC 3339.
    pub since: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub label: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CardAction {
    /// A compact reference the interactions handler resolves: `rb1:{group}:{action index}`.
    pub id: String,
    pub label: String,
    /// Changes something (restart, rollback…) rather than only reading.
    pub risky: bool,
}

/// A message a platform gave back for a posted card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub message_id: String,
}

/// Why a delivery failed, as far as what to do next is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryError {
    /// Over a rate limit: try again after this long (no backoff growth).
    RateLimited { retry_after: Duration },
    /// 5xx, timeout, refused connection: retry with backoff, without limit in time.
    Transient(String),
    /// The message being edited is gone: post a new card.
    MessageGone,
    /// A 4xx that no retry will change.
    Permanent(String),
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryError::RateLimited { retry_after } => {
                write!(f, "rate limited for {retry_after:?}")
            }
            DeliveryError::Transient(e) => write!(f, "temporary failure: {e}"),
            DeliveryError::MessageGone => write!(f, "the card's message no longer exists"),
            DeliveryError::Permanent(e) => write!(f, "refused: {e}"),
        }
    }
}
