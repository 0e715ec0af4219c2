//! The web console: pages for people, `/api/*` for pages and scripts. Server-rendered with
//! maud, which escapes every value it prints; one small script of runbot's own keeps pages live.
//!
//! Every route here sits behind the console's gate (`http::guard::console_gate`), which puts a
//! [`Viewer`](crate::chat::console::Viewer) on the request; [`public_router`] holds the few
//! that do not: the stylesheet and the script, and ([`auth`]) signing in and the setup link.

pub mod api;
pub mod audit;
pub mod auth;
pub mod deploys;
pub mod group;
pub mod layout;
pub mod live;
pub mod oncall;
pub mod pages;
pub mod report;
pub mod runbook;

use axum::routing::{get, post};
use axum::Router;

use super::AppState;

/// Rows a page of the audit trail or of deploys lists, by default and at most.
pub(super) const ROWS_DEFAULT: i64 = 50;
pub(super) const ROWS_MAX: i64 = 200;

/// A page of rows, newest first, as its query asks (values already picked out: `None` when
/// not given): how many, and before which id. `id_is` says what the id is, for the error.
pub(super) fn rows_page(
    limit: Option<&str>,
    before: Option<&str>,
    id_is: &str,
) -> Result<(i64, Option<i64>), crate::http::error::ApiError> {
    let bad = |m: String| crate::http::error::ApiError::new(axum::http::StatusCode::BAD_REQUEST, m);
    let limit = match limit {
        None => ROWS_DEFAULT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=ROWS_MAX).contains(n))
            .ok_or_else(|| bad(format!("limit must be a number from 1 to {ROWS_MAX}")))?,
    };
    let before = match before {
        None => None,
        Some(b) => Some(
            b.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("before must be {id_is} (a positive number)")))?,
        ),
    };
    Ok((limit, before))
}

/// Routes behind the gate.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::index))
        .route("/groups/{id}", get(group::group_page))
        .route("/groups/{id}/timeline.md", get(group::timeline_md))
        .route("/audit", get(audit::audit_page))
        .route("/audit/export", get(audit::export))
        .route("/oncall", get(oncall::oncall_page))
        .route("/deploys", get(deploys::deploys_page))
        .route("/report", get(report::report_page))
        .route("/backlog", get(report::backlog_page))
        .route("/runbook", get(runbook::runbook_index))
        .route("/runbook/{alert}", get(runbook::runbook_entry))
        .route("/api/alert-groups", get(api::api_groups))
        .route("/api/alert-groups/{id}", get(api::api_group))
        .route("/api/oncall", get(oncall::api_oncall))
        .route("/api/deploys", get(deploys::api_deploys))
        .route("/api/report", get(report::api_report))
        .route("/api/backlog", get(report::api_backlog))
        .route("/api/events", get(live::events))
        .route("/api/commands", get(live::catalog).post(live::command))
        .route("/api/buttons", post(live::button))
        .route("/api/prompts/{id}/{button}", post(live::prompt))
        .route("/api/requests/{id}", get(live::request))
        .route("/api/files/{id}", get(live::file))
        .merge(auth::router())
}

/// Routes open to anyone: static assets (they hold nothing secret), signing in, the setup link.
pub fn public_router() -> Router<AppState> {
    Router::new()
        .merge(auth::public_router())
        .route(layout::CSS_PATH, get(layout::css))
        .route(layout::JS_PATH, get(layout::js))
}
