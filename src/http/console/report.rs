//! How fast the team answered (`/report?window=7d`) and what waits in the backlog
//! (`/backlog`): the same numbers `/report` and `/backlog` give in chat
//! ([`crate::executors::report`]), as tables and a bar chart drawn on the server.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use maud::{html, PreEscaped};
use serde::Deserialize;

use super::api::store_error;
use super::layout::{page, time_cell};
use crate::chat::console::Viewer;
use crate::executors::report::{
    self as reports, bar_chart_svg, BacklogItem, Report, ReportError, Spread, WINDOW_DEFAULT,
};
use crate::http::error::ApiError;
use crate::http::AppState;

#[derive(Debug, Default, Deserialize)]
pub(super) struct ReportQuery {
    window: Option<String>,
}

async fn report(state: &AppState, q: &ReportQuery) -> Result<Report, ApiError> {
    let window = q
        .window
        .as_deref()
        .filter(|w| !w.is_empty())
        .unwrap_or(WINDOW_DEFAULT);
    reports::report(&state.store, Utc::now(), window)
        .await
        .map_err(|e| match e {
            ReportError::BadWindow(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            ReportError::Store(e) => store_error(e),
        })
}

/// `GET /api/report?window=7d`.
pub(super) async fn api_report(
    State(state): State<AppState>,
    Query(q): Query<ReportQuery>,
) -> Result<Json<Report>, ApiError> {
    Ok(Json(report(&state, &q).await?))
}

fn spread_cell(s: Option<Spread>) -> String {
    let f =
        |secs: i64| crate::domain::duration::precise(std::time::Duration::from_secs(secs as u64));
    match s {
        Some(s) => format!("{} / {}", f(s.median_secs), f(s.p90_secs)),
        None => "–".into(),
    }
}

/// `GET /report?window=7d`.
pub(super) async fn report_page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let r = report(&state, &q).await?;
    let total: u64 = r.severities.iter().map(|s| s.count).sum();
    Ok(page(
        Some(&viewer),
        "Report",
        html! {
            form class="filters" method="get" action="/report" {
                label { "Window " input type="text" name="window" value=(r.window) size="5"; }
                button type="submit" { "Show" }
                span class="muted" { " e.g. 24h, 7d, 30d; at most 90d" }
            }
            p id="summary" {
                (total) " incidents from " (time_cell(&r.from)) " to " (time_cell(&r.to)) ". "
                "MTTA is the time from an incident's start to its first acknowledgement, MTTR to its resolution; median / p90. "
                "Incidents never acknowledged or still open are counted apart, not as zero."
                @if r.truncated { " Only the oldest 100,000 incidents were counted." }
            }
            div class="table-wrap" {
                table id="report" {
                    thead { tr {
                        th { "Severity" } th { "Incidents" } th { "MTTA" } th { "Never acked" }
                        th { "MTTR" } th { "Not resolved" } th { "Pages sent" } th { "Escalated" }
                    } }
                    tbody {
                        @for s in &r.severities {
                            tr data-severity=(s.severity) {
                                td { span class={ "sev " (s.severity) } { (s.severity) } }
                                td { (s.count) }
                                td { (spread_cell(s.time_to_ack)) }
                                td { (s.not_acked) }
                                td { (spread_cell(s.time_to_resolve)) }
                                td { (s.unresolved) }
                                td { (s.pages_sent) }
                                td { (s.escalated) }
                            }
                        }
                    }
                }
            }
            h2 { "Incidents per day (UTC)" }
            div class="chart-wrap" id="chart" {
                // Numbers and dates only, formatted by runbot: see `bar_chart_svg`.
                (PreEscaped(bar_chart_svg(&r.per_day)))
            }
        },
    )
    .into_response())
}

async fn backlog(state: &AppState) -> Result<Vec<BacklogItem>, ApiError> {
    reports::backlog(&state.store).await.map_err(store_error)
}

/// `GET /api/backlog`: open backlog groups, newest first.
pub(super) async fn api_backlog(
    State(state): State<AppState>,
) -> Result<Json<Vec<BacklogItem>>, ApiError> {
    Ok(Json(backlog(&state).await?))
}

/// `GET /backlog`.
pub(super) async fn backlog_page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, ApiError> {
    let items = backlog(&state).await?;
    Ok(page(
        Some(&viewer),
        "Backlog",
        html! {
            @if items.is_empty() {
                p id="empty" { "Nothing waits in the backlog." }
            } @else {
                p class="muted" { "Groups the escalation chain put aside (Sev4), still open, newest first. A summary goes to the alert channel every Monday." }
                div class="table-wrap" {
                    table id="backlog" {
                        thead { tr { th { "Group" } th { "Severity" } th { "Since (UTC)" } th { "For" } } }
                        tbody {
                            @for i in &items {
                                tr data-id=(i.group_id) {
                                    td { a href=(i.link) { (i.name) } " " span class="muted" { "#" (i.group_id) } }
                                    td { span class={ "sev " (i.severity) } { (i.severity) } }
                                    td { (time_cell(&i.since)) }
                                    td { (super::layout::age(&i.since)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response())
}
