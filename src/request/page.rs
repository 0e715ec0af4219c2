//! A page: runbot waking one person (or a gateway) about an alert group, and the seam every way
//! of reaching people implements ([`Pager`]). The escalation engine writes each page to the
//! store before sending it and hands it to the pager of its `via`; chat platforms, email and
//! outbound webhooks implement the seam, so the engine never names one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BoxFuture, ButtonId};

/// What a page says, whichever way it travels. Built by the escalation engine from the group
/// and the step; the pager only formats it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The page's row in the store: a stable id for retries (a Discord nonce, an idempotency
    /// key for webhook receivers).
    pub id: i64,
    /// The alert group it is about; None for a page by hand without a group.
    pub group_id: Option<i64>,
    /// `sev1`..`sev4`, when about a group.
    pub severity: Option<String>,
    /// One line: "Sev1 · APIDown: API down".
    pub title: String,
    /// The card's summary: what is wrong, a few lines at most.
    pub summary: String,
    /// Who is paged, as people read it: "Ana".
    pub person: String,
    /// The role they are paged for ("devops-lead"), when paged for one.
    pub role: Option<String>,
    /// Why now: "step 2 of sev1: nobody acknowledged in 10m", "paged by hand by Ana: …".
    pub reason: String,
    /// The group's page in the console, when runbot knows its own address.
    pub url: Option<String>,
}

/// Why a page was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageError {
    /// Worth retrying: 5xx, timeout, refused connection, a rate limit (with its wait).
    Temporary {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No retry will change it: a 4xx, an address the server refuses.
    Permanent(String),
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageError::Temporary { reason, .. } => write!(f, "temporary failure: {reason}"),
            PageError::Permanent(reason) => write!(f, "refused: {reason}"),
        }
    }
}

/// One way of reaching people: a Discord DM, a channel mention, the console, email, a webhook.
pub trait Pager: Send + Sync + 'static {
    /// The store's `via` for its pages and the label of `runbot_pages_total`: `discord`,
    /// `discord-mention`, `console`, `email`, `webhook`.
    fn via(&self) -> &'static str;

    /// Delivers one page to `target` (a user id, a `channel/user` pair, an account, an address,
    /// a webhook's name: whatever this pager's targets are, as the engine stored them).
    fn send<'a>(&'a self, target: &'a str, page: &'a Page) -> BoxFuture<'a, Result<(), PageError>>;
}

/// The id of a page's Acknowledge button: `/ack group:N`, decided and audited like the card's
/// button, on every platform. (The card's own `rb1:{group}:{index}` names the runbook action by
/// its place, which the page does not know, and which moves when the runbook changes.)
pub fn ack_button_id(group_id: i64) -> String {
    ButtonId::Command {
        command: "ack".into(),
        args: vec![("group".into(), group_id.to_string())],
    }
    .to_string()
}
