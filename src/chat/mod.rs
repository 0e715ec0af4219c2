//! Chat: the card an alert group shows, the outbox that delivers it, one folder per platform.
//!
//! The core renders a platform-neutral [`Card`] or [`Reply`](crate::request::Reply); the
//! outbox, announcements and replies hand it to a [`platform::ChatPlatform`], which turns it
//! into the platform's message and sends it ([`discord`]). Platforms translate and hold no
//! business rules.

pub mod announce;
pub mod console;
pub mod discord;
#[cfg(test)]
pub mod memory;
pub mod outbox;
pub mod platform;
pub mod render;
pub mod slack;

use std::time::Duration;

use crate::domain::Severity;

/// Alerts a card is built with at most: as many as any platform lists (the rest are counted),
/// so a group of thousands of alerts costs a card's worth of memory, not the whole group's.
pub const CARD_ALERTS: i64 = 50;

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
    /// The group's alerts, firing first, as many as a card lists at most
    /// ([`CARD_ALERTS`]); the adapter shows as many as fit.
    pub alerts: Vec<CardAlert>,
    /// All the group's alerts, and those firing: `alerts` may hold fewer.
    pub alerts_total: i64,
    pub alerts_firing: i64,
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
    /// Who acknowledged this episode, and when.
    pub acknowledged: Option<Mark>,
    /// The silence runbot made: by whom, and until when (`at`).
    pub silenced: Option<Mark>,
    /// Who runbot is paging, who is next and when, or how fast it was acknowledged.
    pub escalation: Option<EscalationLine>,
}

/// The card's escalation line: "Paging Ana (devops-lead) · next: Marta (cto) in 8 min", then
/// "Acknowledged by Ana after 3m 12s".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EscalationLine {
    /// What runbot is doing: "Paging Ana (devops-lead)", "In the backlog: nobody paged". None
    /// once acknowledged or resolved.
    pub paging: Option<String>,
    /// The next step: who it pages, and when (RFC 3339).
    pub next: Option<(String, String)>,
    /// From the chain's start to the acknowledgement: "3m 12s".
    pub acked_after: Option<String>,
    /// Steps skipped and why: "backend-lead is off hours (…): skipped".
    pub notes: Vec<String>,
}

/// Someone did something to the group at a time (RFC 3339).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub by: String,
    pub at: String,
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

/// In a storm, one message per channel names the groups still waiting for their own card, so
/// every group is visible at once whatever the rate limits allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    /// (card title, alerts, resolved) of each waiting group, most urgent first.
    pub waiting: Vec<(String, usize, bool)>,
}

impl Digest {
    /// Characters of the list, well inside any platform's message limit.
    const LIST_BUDGET: usize = 3500;

    /// The title and the list.
    pub fn text(&self) -> (String, String) {
        if self.waiting.is_empty() {
            return (
                "Every group has its own card".into(),
                "The storm is over: each alert group now has a card of its own.".into(),
            );
        }
        let n = self.waiting.len();
        let title = format!(
            "{n} more {} firing",
            if n == 1 { "group" } else { "groups" }
        );
        let mut list = String::new();
        let mut shown = 0;
        for (title, alerts, resolved) in &self.waiting {
            let line = format!(
                "• {title} · {alerts} {}{}",
                if *alerts == 1 { "alert" } else { "alerts" },
                if *resolved { " (resolved)" } else { "" }
            );
            if list.chars().count() + line.chars().count() + 20 > Self::LIST_BUDGET {
                break;
            }
            list.push_str(&line);
            list.push('\n');
            shown += 1;
        }
        if shown < n {
            list.push_str(&format!("+{} more", n - shown));
        }
        (title, list.trim_end().to_string())
    }
}
