//! Escalation: paging the person on call for the role a chain names, and the next one when
//! nobody acknowledges. [`engine`] runs the durable timers and delivers pages through the
//! `request::page::Pager`s the settings enable; the ways a page leaves runbot besides chat
//! ([`email`], signed outbound [`webhook`]s) live here too. Who is on call and what a step
//! pages are the policy's decisions (`policy::oncall`, `policy::escalation`), pure.

pub mod email;
pub mod engine;
pub mod webhook;

use std::collections::BTreeSet;

use crate::policy::people::Person;
use crate::runbook::Runbook;
use crate::store::GroupView;

/// The ways of paging this runbot has (the `via` of each pager configured).
#[derive(Debug, Clone, Default)]
pub struct Reach {
    pub vias: BTreeSet<&'static str>,
}

/// Every way to reach `person` that is configured: (via, target).
pub fn ways(person: &Person, reach: &Reach) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let has = |v: &str| reach.vias.contains(v);
    if let Some(id) = &person.discord {
        if has("discord") {
            out.push(("discord", id.clone()));
        }
        if has("discord-mention") {
            out.push(("discord-mention", id.clone()));
        }
    }
    if let Some(id) = &person.slack {
        if has("slack") {
            out.push(("slack", id.clone()));
        }
    }
    if let Some(account) = &person.console {
        if has("console") {
            out.push(("console", account.clone()));
        }
    }
    if let Some(address) = &person.email {
        if has("email") {
            out.push(("email", address.clone()));
        }
    }
    out
}

/// A page's title and summary for a group: "Sev1 · APIDown: API down" and what is wrong.
pub fn page_title(group: &GroupView, runbook: &Runbook) -> (String, String) {
    let name = group
        .alertname()
        .map_or_else(|| format!("alert group #{}", group.id), str::to_string);
    let entry = group
        .runbook
        .as_deref()
        .and_then(|k| runbook.entry(k))
        .map(|(_, e)| e);
    let title = match entry {
        Some(e) => format!("{} · {name}: {}", group.severity.title(), e.title),
        None => format!("{} · {name}", group.severity.title()),
    };
    let mut summary = group
        .common_annotations
        .get("summary")
        .cloned()
        .or_else(|| entry.map(|e| e.meaning.clone()))
        .unwrap_or_default();
    summary = crate::domain::text::clip(&summary, 500).to_string();
    let firing = group.alerts_firing;
    if firing > 1 {
        summary.push_str(&format!("\n{firing} alerts firing."));
    }
    (title, summary)
}
