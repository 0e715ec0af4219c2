//! Recent deploys and rollbacks of every project, newest first: who, what, how it went.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::html;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::store_error;
use super::layout::{page, time_cell};
use crate::chat::console::Viewer;
use crate::domain::parse_stored_time;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::DeployRow;

/// An error message is shown up to this many characters (the audit trail has it whole).
const ERROR_MAX: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeploysQuery {
    limit: Option<String>,
    before: Option<String>,
}

impl DeploysQuery {
    fn parse(&self) -> Result<(i64, Option<i64>), ApiError> {
        super::rows_page(
            self.limit.as_deref().filter(|s| !s.is_empty()),
            self.before.as_deref().filter(|s| !s.is_empty()),
            "a deploy id",
        )
    }
}

#[derive(Debug, Serialize)]
pub(super) struct DeployView {
    pub id: i64,
    pub project: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    pub tag: String,
    pub from_tag: Option<String>,
    /// Who asked (display name).
    pub actor: String,
    pub platform: String,
    pub invocation_id: String,
    /// running | succeeded | rolled_back | failed | interrupted
    pub state: String,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// From start to finish; None while it runs.
    pub duration_secs: Option<i64>,
    /// Each step's name, state, detail and milliseconds, as the deploy recorded them.
    pub steps: Value,
}

impl From<DeployRow> for DeployView {
    fn from(d: DeployRow) -> DeployView {
        let duration_secs = match (
            parse_stored_time(&d.started_at),
            d.finished_at.as_deref().and_then(parse_stored_time),
        ) {
            (Some(s), Some(f)) => Some((f - s).num_seconds().max(0)),
            _ => None,
        };
        DeployView {
            id: d.id,
            project: d.project,
            kind: d.kind,
            tag: d.tag,
            from_tag: d.from_tag,
            actor: d.actor,
            platform: d.platform,
            invocation_id: d.invocation_id,
            state: d.state,
            failed_step: d.failed_step,
            error: d.error.map(|e| crate::domain::text::clip(&e, ERROR_MAX)),
            started_at: d.started_at,
            finished_at: d.finished_at,
            duration_secs,
            steps: serde_json::from_str(&d.steps).unwrap_or(Value::Null),
        }
    }
}

async fn deploys(state: &AppState, q: &DeploysQuery) -> Result<(Vec<DeployView>, i64), ApiError> {
    let (limit, before) = q.parse()?;
    let rows = state
        .store
        .deploys_page(before, limit)
        .await
        .map_err(store_error)?;
    Ok((rows.into_iter().map(DeployView::from).collect(), limit))
}

/// `GET /api/deploys?limit=&before=`: newest first; the next page is `before=` the last id.
pub(super) async fn api_deploys(
    State(state): State<AppState>,
    Query(q): Query<DeploysQuery>,
) -> Result<Json<Vec<DeployView>>, ApiError> {
    Ok(Json(deploys(&state, &q).await?.0))
}

/// `GET /deploys`.
pub(super) async fn deploys_page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<DeploysQuery>,
) -> Result<Response, ApiError> {
    let (rows, limit) = deploys(&state, &q).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|d| d.id))
        .flatten();
    Ok(page(
        Some(&viewer),
        "Deploys",
        html! {
            @if rows.is_empty() {
                p id="empty" { "No deploys on record yet. /deploy starts one." }
            } @else {
                div class="table-wrap" {
                    table id="deploys" {
                        thead { tr { th { "#" } th { "Started (UTC)" } th { "Who" } th { "What" } th { "Result" } th { "Took" } } }
                        tbody {
                            @for d in &rows {
                                tr data-id=(d.id) data-state=(d.state) {
                                    td { (d.id) }
                                    td { (time_cell(&d.started_at)) }
                                    td { (d.actor) div class="muted" { (d.platform) } }
                                    td {
                                        (d.kind) " " (d.project) " "
                                        @if let Some(from) = &d.from_tag { code { (from) } " → " }
                                        code { (d.tag) }
                                    }
                                    td class=(state_class(&d.state)) {
                                        (d.state.replace('_', " "))
                                        @if let Some(step) = &d.failed_step { " at " (step) }
                                        @if let Some(e) = &d.error { div class="muted" { (e) } }
                                    }
                                    td {
                                        @match d.duration_secs {
                                            Some(s) => (crate::domain::duration::short(std::time::Duration::from_secs(s as u64))),
                                            None => span class="muted" { "running" },
                                        }
                                        @if let Some(f) = &d.finished_at { div class="muted" { "until " (time_cell(f)) } }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(id) = next {
                    p { a id="next" rel="next" href={ "/deploys?limit=" (limit) "&before=" (id) } { "Older deploys" } }
                }
            }
        },
    )
    .into_response())
}

fn state_class(state: &str) -> &'static str {
    match state {
        "succeeded" => "resolved",
        "failed" | "interrupted" | "rolled_back" => "firing",
        _ => "",
    }
}
