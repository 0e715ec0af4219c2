//! The console's pages for alert groups.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};

use super::api::{
    encode_cursor, status_param, store_error, ListQuery, GROUP_ALERTS_MAX, GROUP_EVENTS_MAX,
};
use super::layout::{age, group_name, page, severity_badge};
use crate::chat::console::Viewer;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::{GroupFilter, GroupView};

pub(super) async fn index(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ApiError> {
    let (filter, limit) = q.parse(GroupFilter::Open)?;
    // One more than shown tells whether there is a next page; the counts come without alerts.
    let mut groups = state
        .store
        .list_groups(filter, limit + 1, q.cursor()?.as_ref(), Some(0))
        .await
        .map_err(store_error)?;
    let next = if groups.len() as i64 > limit {
        groups.truncate(limit as usize);
        groups.last().map(|g| encode_cursor(&g.cursor()))
    } else {
        None
    };
    let status = status_param(filter);
    let heading = match filter {
        GroupFilter::Open => "Open alert groups",
        GroupFilter::Resolved => "Resolved alert groups",
        GroupFilter::All => "All alert groups",
    };
    Ok(page(
        Some(&viewer),
        heading,
        html! {
            p class="muted" {
                a href="/?status=open" { "open" } " · " a href="/?status=resolved" { "resolved" } " · " a href="/?status=all" { "all" }
            }
            @if groups.is_empty() {
                p id="empty" { "No alert groups here. Alertmanager sends to POST /webhooks/alertmanager." }
            } @else {
                // A table wider than a phone scrolls in its own box instead of the whole page.
                div class="table-wrap" { table id="groups" {
                    thead { tr { th { "Severity" } th { "Status" } th { "Group" } th { "Alerts" } th { "Age" } th { "Runbook checks" } } }
                    tbody {
                        @for g in &groups {
                            tr data-group-id=(g.id) {
                                td { (severity_badge(g.severity)) }
                                td class=(g.status.as_str()) { (g.status.as_str()) }
                                td {
                                    a href={ "/groups/" (g.id) } { (group_name(g)) }
                                    @if let Some(summary) = g.common_annotations.get("summary") { div class="muted" { (summary) } }
                                }
                                td {
                                    (g.alerts_firing) " firing / " (g.alerts_total)
                                    @if g.truncated_alerts > 0 { " (+" (g.truncated_alerts) " not sent)" }
                                }
                                td title=(g.started_at) { (age(&g.started_at)) }
                                td { (checks(&state, g)) }
                            }
                        }
                    }
                } }
                @if let Some(cursor) = &next {
                    p { a id="next" href={ "/?status=" (status) "&limit=" (limit) "&cursor=" (cursor) } { "Next page" } }
                }
            }
        },
    ))
}

fn checks(state: &AppState, g: &GroupView) -> Markup {
    match g.runbook.as_deref().and_then(|k| state.runbook.entry(k)) {
        Some((_, entry)) => html! { ul { @for c in &entry.checks { li { (c) } } } },
        None => html! { span class="muted" { "no runbook entry" } },
    }
}

pub(super) async fn group_page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let Some((g, timeline, events_total)) = state
        .store
        .group(id, GROUP_ALERTS_MAX, GROUP_EVENTS_MAX)
        .await
        .map_err(store_error)?
    else {
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
    let entry = g.runbook.as_deref().and_then(|k| state.runbook.entry(k));
    let title = group_name(&g);
    Ok(page(
        Some(&viewer),
        &title,
        html! {
            h1 { (severity_badge(g.severity)) " " (title) " " span class=(g.status.as_str()) { (g.status.as_str()) } }
            p class="muted" {
                "Receiver " (g.receiver) " · started " (g.started_at) " (" (age(&g.started_at)) " ago)"
                @if let Some(r) = &g.resolved_at { " · resolved " (r) }
            }
            @if let Some(note) = &g.severity_note { p class="note" { "Severity: " (note) } }
            @if let Some((_, e)) = entry {
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
            div class="table-wrap" { table id="alerts" {
                thead { tr { th { "Status" } th { "Severity" } th { "Labels" } th { "Summary" } th { "Since" } } }
                tbody {
                    @for a in &g.alerts {
                        tr data-fingerprint=(a.fingerprint) {
                            td class=(a.status.as_str()) { (a.status.as_str()) }
                            td { (severity_badge(a.severity)) }
                            td { @for (k, v) in &a.labels { div { (k) "=" (v) } } }
                            td { (a.annotations.get("summary").map(String::as_str).unwrap_or("")) }
                            td title=(a.starts_at) { (age(&a.starts_at)) }
                        }
                    }
                }
            } }
            @if g.alerts_total > g.alerts.len() as i64 { p class="muted" { (g.alerts_total - g.alerts.len() as i64) " more alerts are not shown here." } }
            @if g.truncated_alerts > 0 { p class="muted" { (g.truncated_alerts) " more alerts were not sent by Alertmanager (max_alerts)." } }
            h2 { "Timeline" }
            @if events_total > timeline.len() as i64 { p class="muted" { "The last " (timeline.len()) " of " (events_total) " entries." } }
            div class="table-wrap" { table id="timeline" {
                thead { tr { th { "At" } th { "Event" } th { "Alert" } } }
                tbody {
                    @for e in &timeline {
                        tr { td { (e.at) } td { (e.kind.as_str().replace('_', " ")) } td { (e.fingerprint.as_deref().unwrap_or("")) } }
                    }
                }
            } }
        },
    )
    .into_response())
}
