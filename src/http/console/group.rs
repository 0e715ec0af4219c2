//! One alert group's page: what its card shows, and its timeline: alert changes, cards posted
//! and edited, the acknowledgement, and every request that acted on it with its outcome from
//! the audit trail, merged by time. `timeline.md` gives the same as Markdown for a postmortem.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::html;
use serde::Serialize;
use serde_json::Value;

use super::api::{store_error, GROUP_ALERTS_MAX, GROUP_EVENTS_MAX};
use super::layout::{age, page, severity_badge, time_cell, when};
use crate::audit::AuditRow;
use crate::chat::console::Viewer;
use crate::chat::{render, Card};
use crate::domain::{parse_stored_time, GroupStatus};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::{EventView, GroupView};

/// Entries a timeline holds at most: the most recent ones; the page says when more exist.
pub(super) const TIMELINE_MAX: usize = 1000;
/// How far before a group's creation its requests are looked for: replicas' clocks differ,
/// and a row written by one that runs behind may carry an earlier time.
const CLOCK_SLACK: chrono::Duration = chrono::Duration::hours(1);

/// One thing that happened to a group.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Entry {
    /// RFC 3339, as stored.
    pub at: String,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum What {
    /// A status change Alertmanager reported: `group_firing`, `alert_resolved`, ….
    Alert {
        event: String,
        fingerprint: Option<String>,
        /// The alert's `instance` or `alertname`, when it is still in the group.
        alert: Option<String>,
    },
    /// The group's card on a platform as last posted or edited.
    Card {
        platform: String,
        channel_id: String,
        message_id: Option<String>,
        shows: Option<String>,
    },
    /// A card change not delivered yet (due at `at`).
    CardPending {
        platform: String,
        attempts: i64,
        dead: bool,
    },
    Acknowledged {
        by: String,
    },
    /// One step of a request that acted on the group, from the audit trail.
    Command {
        who: String,
        platform: String,
        actor_id: String,
        command: String,
        args: Value,
        step: String,
        /// Why it was refused or failed.
        reason: Option<String>,
        /// What it did (`summary`, for a success).
        outcome: Option<String>,
        invocation_id: String,
    },
}

/// A group's timeline, oldest first.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Timeline {
    pub entries: Vec<Entry>,
    /// Older entries exist that are not here.
    pub more: bool,
}

impl What {
    /// Who did it, for the table's "Who" column.
    fn who(&self) -> &str {
        match self {
            What::Alert { .. } => "Alertmanager",
            What::Card { .. } | What::CardPending { .. } => "runbot",
            What::Acknowledged { by } => by,
            What::Command { who, .. } => who,
        }
    }

    /// What happened, in a sentence without markup.
    fn text(&self) -> String {
        match self {
            What::Alert {
                event,
                fingerprint,
                alert,
            } => {
                let event = event.replace('_', " ");
                match (alert, fingerprint) {
                    (Some(a), _) => format!("{event}: {a}"),
                    (None, Some(f)) => format!("{event}: {f}"),
                    (None, None) => event,
                }
            }
            What::Card {
                platform,
                channel_id,
                message_id,
                shows,
            } => {
                let state = match (message_id, shows) {
                    (None, _) => "being posted".to_string(),
                    (Some(_), Some(s)) => format!("posted, last shown as {s}"),
                    (Some(_), None) => "posted".to_string(),
                };
                format!("card on {platform} (channel {channel_id}) {state}")
            }
            What::CardPending {
                platform,
                attempts,
                dead,
            } => {
                if *dead {
                    format!("card change for {platform} refused by the platform after {attempts} attempts")
                } else {
                    format!("card change for {platform} waiting to be sent ({attempts} attempts so far)")
                }
            }
            What::Acknowledged { by } => format!("acknowledged by {by}"),
            What::Command { command, args, .. } => command_text(command, args),
        }
    }

    /// How it ended, for a request's step.
    fn outcome(&self) -> Option<String> {
        match self {
            What::Command {
                step,
                reason,
                outcome,
                ..
            } => {
                let mut s = step.replace('_', " ");
                if let Some(text) = reason.as_ref().or(outcome.as_ref()) {
                    let _ = write!(s, ": {text}");
                }
                Some(s)
            }
            _ => None,
        }
    }
}

/// `/restart service:backend`, from a request's stored arguments (`dry_run:false`, which every
/// request carries, left out).
pub(super) fn command_text(command: &str, args: &Value) -> String {
    let mut line = format!("/{command}");
    if let Some(map) = args.as_object() {
        for (k, v) in map {
            if k == "dry_run" && v == &Value::Bool(false) {
                continue;
            }
            match v {
                Value::String(s) => {
                    let _ = write!(line, " {k}:{s}");
                }
                other => {
                    let _ = write!(line, " {k}:{other}");
                }
            }
        }
    }
    line
}

fn sort_key(at: &str) -> Option<DateTime<Utc>> {
    parse_stored_time(at)
}

/// Reads and merges a group's timeline: at most [`TIMELINE_MAX`] of the latest entries.
pub(super) async fn timeline(
    state: &AppState,
    g: &GroupView,
    events: Vec<EventView>,
    events_total: i64,
) -> Result<Timeline, ApiError> {
    let mut more = events_total > events.len() as i64;
    let names: HashMap<&str, &str> = g
        .alerts
        .iter()
        .filter_map(|a| {
            let name = a
                .labels
                .get("instance")
                .or_else(|| a.labels.get("alertname"))?;
            Some((a.fingerprint.as_str(), name.as_str()))
        })
        .collect();
    let mut entries: Vec<Entry> = events
        .into_iter()
        .map(|e| Entry {
            what: What::Alert {
                alert: e
                    .fingerprint
                    .as_deref()
                    .and_then(|f| names.get(f))
                    .map(|n| n.to_string()),
                event: e.kind.as_str().to_string(),
                fingerprint: e.fingerprint,
            },
            at: e.at,
        })
        .collect();
    let (cards, pending) = state.store.group_cards(g.id).await.map_err(store_error)?;
    entries.extend(cards.into_iter().map(|c| Entry {
        at: c.updated_at,
        what: What::Card {
            platform: c.platform,
            channel_id: c.channel_id,
            message_id: c.message_id,
            shows: c.shown_status,
        },
    }));
    entries.extend(pending.into_iter().map(|p| Entry {
        at: p.due_at,
        what: What::CardPending {
            platform: p.platform,
            attempts: p.attempts,
            dead: p.dead,
        },
    }));
    if let (Some(by), Some(at)) = (&g.acknowledged_by, &g.acknowledged_at) {
        entries.push(Entry {
            at: at.clone(),
            what: What::Acknowledged { by: by.clone() },
        });
    }
    let since = parse_stored_time(&g.created_at)
        .map(|t| crate::domain::format_time(t - CLOCK_SLACK))
        .unwrap_or_default();
    // One more than kept tells whether older rows exist.
    let rows = state
        .store
        .audit_of_group(g.id, &since, TIMELINE_MAX as i64 + 1)
        .await
        .map_err(store_error)?;
    let mut rows = rows.as_slice();
    if rows.len() > TIMELINE_MAX {
        more = true;
        rows = &rows[1..];
    }
    entries.extend(rows.iter().map(command_entry));
    // A stable sort: entries of one instant keep the order of their sources.
    entries.sort_by_key(|e| sort_key(&e.at));
    if entries.len() > TIMELINE_MAX {
        more = true;
        entries.drain(..entries.len() - TIMELINE_MAX);
    }
    Ok(Timeline { entries, more })
}

fn command_entry(r: &AuditRow) -> Entry {
    let detail: Option<Value> = r
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok());
    let outcome = detail.as_ref().and_then(|d| {
        let summary = d.get("summary").and_then(Value::as_str)?;
        Some(match d.get("duration_ms").and_then(Value::as_i64) {
            Some(ms) => format!("{summary} ({ms} ms)"),
            None => summary.to_string(),
        })
    });
    Entry {
        at: r.at.clone(),
        what: What::Command {
            who: r.actor_name.clone(),
            platform: r.actor_platform.clone(),
            actor_id: r.actor_id.clone(),
            command: r.command.clone(),
            args: serde_json::from_str(&r.args).unwrap_or(Value::Null),
            step: r.step.clone(),
            reason: r.reason.clone(),
            outcome,
            invocation_id: r.invocation_id.clone(),
        },
    }
}

/// How long the group fired: to its resolution, or so far.
fn duration_text(g: &GroupView) -> String {
    let Some(start) = parse_stored_time(&g.started_at) else {
        return "unknown".into();
    };
    let (end, so_far) = match g.resolved_at.as_deref().and_then(parse_stored_time) {
        Some(end) if g.status == GroupStatus::Resolved => (end, false),
        _ => (Utc::now(), true),
    };
    let d = (end - start).to_std().unwrap_or_default();
    let text = crate::domain::duration::short(d);
    if so_far {
        format!("{text} so far")
    } else {
        text
    }
}

/// Text for Markdown: backslash before every character Markdown or HTML could read as
/// markup inside a line, and no line breaks, so a label value stays one inert piece of text.
/// (`-`, `+`, `.` only mean something at a line's start, where values never are.)
pub(super) fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '<' | '>' | '(' | ')' | '#' | '!'
            | '|' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The postmortem summary: title, severity, times, alerts, then the timeline as a list.
pub(super) fn markdown(g: &GroupView, card: &Card, t: &Timeline) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {} (alert group #{})\n", md(&card.title), g.id);
    let _ = writeln!(s, "- Severity: {}", card.severity.title());
    let _ = writeln!(s, "- Status: {}", g.status.as_str());
    let _ = writeln!(s, "- Started: {}", when(&g.started_at));
    match &g.resolved_at {
        Some(r) if g.status == GroupStatus::Resolved => {
            let _ = writeln!(s, "- Resolved: {}", when(r));
        }
        _ => {
            let _ = writeln!(s, "- Resolved: not yet");
        }
    }
    let _ = writeln!(s, "- Duration: {}", duration_text(g));
    if let Some(a) = &card.acknowledged {
        let _ = writeln!(s, "- Acknowledged by {} at {}", md(&a.by), when(&a.at));
    }
    if let Some(summary) = &card.summary {
        let _ = writeln!(s, "- Summary: {}", md(summary));
    }
    let _ = writeln!(s, "\n## Alerts\n");
    for a in &g.alerts {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            s,
            "- {} since {}: {}",
            a.status.as_str(),
            when(&a.starts_at),
            md(&labels.join(", "))
        );
    }
    if g.alerts_total > g.alerts.len() as i64 {
        let _ = writeln!(s, "- … and {} more", g.alerts_total - g.alerts.len() as i64);
    }
    let _ = writeln!(s, "\n## Timeline (UTC)\n");
    if t.more {
        let _ = writeln!(s, "- … older entries left out");
    }
    for e in &t.entries {
        let _ = write!(
            s,
            "- {} · {} · {}",
            when(&e.at),
            md(e.what.who()),
            md(&e.what.text())
        );
        if let Some(o) = e.what.outcome() {
            let _ = write!(s, " · {}", md(&o));
        }
        s.push('\n');
    }
    s
}

async fn load(state: &AppState, id: i64) -> Result<Option<(GroupView, Card, Timeline)>, ApiError> {
    let Some((g, events, total)) = state
        .store
        .group(id, GROUP_ALERTS_MAX, GROUP_EVENTS_MAX)
        .await
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let t = timeline(state, &g, events, total).await?;
    let card = render::card(&g, &state.runbook);
    Ok(Some((g, card, t)))
}

/// `GET /groups/{id}/timeline.md`: the postmortem summary as Markdown.
pub(super) async fn timeline_md(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let Some((g, card, t)) = load(&state, id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no alert group {id}"),
        ));
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/markdown; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"alert-group-{id}.md\""),
            ),
        ],
        markdown(&g, &card, &t),
    )
        .into_response())
}

/// `GET /groups/{id}`.
pub(super) async fn group_page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let Some((g, card, t)) = load(&state, id).await? else {
        return Ok((
            StatusCode::NOT_FOUND,
            page(
                Some(&viewer),
                "Not found",
                html! { p { "No alert group " (id) "." } },
            ),
        )
            .into_response());
    };
    let entry = g
        .runbook
        .as_deref()
        .and_then(|k| state.runbook.entry(k))
        .map(|(_, e)| e);
    let md_text = markdown(&g, &card, &t);
    Ok(page(
        Some(&viewer),
        &card.title,
        html! {
            section id="card" class={ "card " (g.severity.as_str()) @if card.resolved { " resolved" } } {
                p class="marks" {
                    (severity_badge(g.severity)) " "
                    span class=(g.status.as_str()) { (g.status.as_str()) } " "
                    @if let Some(a) = &card.acknowledged {
                        span id="acknowledged" { "👀 acknowledged by " (a.by) " at " (time_cell(&a.at)) } " "
                    }
                    @if let Some(m) = &card.silenced {
                        span id="silenced" { "🔕 silenced by " (m.by) " until " (time_cell(&m.at)) }
                    }
                }
                p class="muted" {
                    "Alert group #" (g.id) " · receiver " (g.receiver) " · started " (time_cell(&g.started_at))
                    " (" (age(&g.started_at)) " ago)"
                    @if let Some(r) = &g.resolved_at { " · resolved " (time_cell(r)) }
                    " · " (duration_text(&g))
                }
                @if let Some(note) = &g.severity_note { p class="note" { "Severity: " (note) } }
                @if let Some(s) = &card.summary { p id="summary" { (s) } }
                @if let Some(d) = &card.description { p class="muted" { (d) } }
                @if !card.links.is_empty() {
                    p id="links" {
                        // render::card keeps only http(s) links, so no href here runs script.
                        @for l in &card.links { a href=(l.url) rel="noopener noreferrer" { (l.label) } " " }
                    }
                }
            }
            @if let Some(e) = entry {
                section id="runbook" {
                    h2 { "Runbook: " (e.title) }
                    p { (e.meaning) }
                    h3 { "Check" }
                    ul { @for c in &e.checks { li { (c) } } }
                    h3 { "Next steps" }
                    ul { @for a in &e.actions { li { (a.label) } } }
                }
            }
            h2 { "Alerts" }
            div class="table-wrap" {
                table id="alerts" {
                    thead { tr { th { "Status" } th { "Severity" } th { "Labels" } th { "Summary" } th { "Since" } } }
                    tbody {
                        @for a in &g.alerts {
                            tr data-fingerprint=(a.fingerprint) {
                                td class=(a.status.as_str()) { (a.status.as_str()) }
                                td { (severity_badge(a.severity)) }
                                td { @for (k, v) in &a.labels { div { (k) "=" (v) } } }
                                td { (a.annotations.get("summary").map(String::as_str).unwrap_or("")) }
                                td { (time_cell(&a.starts_at)) div class="muted" { (age(&a.starts_at)) } }
                            }
                        }
                    }
                }
            }
            @if g.alerts_total > g.alerts.len() as i64 { p class="muted" { (g.alerts_total - g.alerts.len() as i64) " more alerts are not shown here." } }
            @if g.truncated_alerts > 0 { p class="muted" { (g.truncated_alerts) " more alerts were not sent by Alertmanager (max_alerts)." } }
            h2 { "Timeline" }
            @if t.more { p id="timeline-more" class="muted" { "Only the last " (t.entries.len()) " entries are shown; older ones exist." } }
            div class="table-wrap" {
                table id="timeline" {
                    thead { tr { th { "At (UTC)" } th { "Who" } th { "What" } th { "Outcome" } } }
                    tbody {
                        @for e in &t.entries {
                            tr data-kind=(kind_name(&e.what)) {
                                td { (time_cell(&e.at)) }
                                td { (e.what.who()) }
                                td { (e.what.text()) }
                                td { (e.what.outcome().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
            section id="markdown" {
                h2 { label for="timeline-md" { "Copy as Markdown" } }
                textarea id="timeline-md" readonly rows="12" { (md_text) }
                p {
                    button type="button" data-copy="timeline-md" { "Copy" } " "
                    a href={ "/groups/" (g.id) "/timeline.md" } { "Open as a .md file" }
                }
            }
        },
    )
    .into_response())
}

fn kind_name(w: &What) -> &'static str {
    match w {
        What::Alert { .. } => "alert",
        What::Card { .. } => "card",
        What::CardPending { .. } => "card_pending",
        What::Acknowledged { .. } => "acknowledged",
        What::Command { .. } => "command",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_is_inert() {
        assert_eq!(
            md("<script>alert(1)</script>"),
            "\\<script\\>alert\\(1\\)\\</script\\>"
        );
        assert_eq!(md("[x](javascript:evil)"), "\\[x\\]\\(javascript:evil\\)");
        assert_eq!(md("a\nb"), "a b");
        assert_eq!(md("10.0.0.1 \"x\""), "10.0.0.1 \"x\"");
    }

    #[test]
    fn command_lines_show_arguments_as_typed() {
        let args = serde_json::json!({"dry_run": false, "group": 3, "service": "backend"});
        assert_eq!(command_text("ack", &args), "/ack group:3 service:backend");
        let args = serde_json::json!({"dry_run": true});
        assert_eq!(command_text("restart", &args), "/restart dry_run:true");
    }
}
