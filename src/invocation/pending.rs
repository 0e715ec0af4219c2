//! Requests waiting for a click: the requester's confirmation, or other people's approval.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{args_json, origin_json, Flight, Ready};
use crate::domain::{format_time, parse_stored_time};
use crate::store::PendingRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    /// The requester confirms a risky command.
    Confirm,
    /// Another person with an eligible role approves.
    Approval,
}

impl PendingKind {
    fn as_str(self) -> &'static str {
        match self {
            PendingKind::Confirm => "confirm",
            PendingKind::Approval => "approval",
        }
    }
}

/// One approval given so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Approval {
    /// `platform:user id`.
    pub who: String,
    pub name: String,
    /// The eligible roles they hold.
    pub roles: Vec<String>,
}

pub(crate) struct Pending {
    pub id: String,
    pub kind: PendingKind,
    pub ready: Ready,
    pub eligible: Vec<String>,
    pub approvals: Vec<Approval>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Pending {
    pub fn new(
        kind: PendingKind,
        ready: Ready,
        eligible: Vec<String>,
        now: DateTime<Utc>,
        timeout: Duration,
    ) -> Pending {
        Pending {
            // Unguessable: the id is all a button carries.
            id: uuid::Uuid::new_v4().simple().to_string(),
            kind,
            ready,
            eligible,
            approvals: Vec::new(),
            created_at: now,
            expires_at: now + chrono::Duration::from_std(timeout).unwrap_or_default(),
        }
    }

    pub fn timeout(&self) -> Duration {
        (self.expires_at - self.created_at)
            .to_std()
            .unwrap_or_default()
    }

    pub fn to_row(&self) -> PendingRow {
        PendingRow {
            id: self.id.clone(),
            kind: self.kind.as_str().to_string(),
            invocation_id: self.ready.invocation_id.clone(),
            request: serde_json::to_string(&self.ready).expect("a request serializes"),
            requester: self.ready.actor.key(),
            eligible_roles: serde_json::to_string(&self.eligible).expect("roles serialize"),
            approvals: serde_json::to_string(&self.approvals).expect("approvals serialize"),
            state: "pending".into(),
            created_at: format_time(self.created_at),
            expires_at: format_time(self.expires_at),
            resolved_by: None,
        }
    }

    pub fn from_row(row: &PendingRow) -> anyhow::Result<Pending> {
        let kind = match row.kind.as_str() {
            "confirm" => PendingKind::Confirm,
            "approval" => PendingKind::Approval,
            other => anyhow::bail!("unknown pending kind {other:?}"),
        };
        let time =
            |s: &str| parse_stored_time(s).ok_or_else(|| anyhow::anyhow!("unreadable time {s:?}"));
        Ok(Pending {
            id: row.id.clone(),
            kind,
            ready: serde_json::from_str(&row.request)?,
            eligible: serde_json::from_str(&row.eligible_roles)?,
            approvals: serde_json::from_str(&row.approvals)?,
            created_at: time(&row.created_at)?,
            expires_at: time(&row.expires_at)?,
        })
    }

    /// Audit rows about this request share its invocation id, command and arguments.
    pub fn flight(&self) -> Flight {
        Flight {
            invocation_id: self.ready.invocation_id.clone(),
            actor: self.ready.actor.clone(),
            command: self.ready.command.clone(),
            args: args_json(&self.ready.args),
            origin: origin_json(&self.ready.origin),
        }
    }
}
