//! The console's pages for alert groups.

use axum::extract::{Query, State};
use axum::Extension;
use maud::{html, Markup};

use super::api::{encode_cursor, status_param, store_error, ListQuery};
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
                table id="groups" {
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
                }
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
