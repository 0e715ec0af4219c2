//! The web console (read-only for now): open alert groups, a page per group, and a JSON API.
//!
//! Server-rendered with maud, which escapes every value it prints.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::domain::{parse_stored_time, Severity};
use crate::store::{GroupCursor, GroupFilter, GroupView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/groups/{id}", get(group_page))
        .route("/api/alert-groups", get(api_groups))
        .route("/api/alert-groups/{id}", get(api_group))
}

/// Groups in one page, by default and at most: a page is built in memory, so its size is ours
/// to bound, not the caller's.
const PAGE_DEFAULT: i64 = 100;
const PAGE_MAX: i64 = 500;
/// Alerts listed per group in a page of groups (the group's page shows more).
const ALERTS_PER_GROUP: i64 = 100;
/// Alerts and timeline entries on one group's page.
const GROUP_ALERTS_MAX: i64 = 1000;
const GROUP_EVENTS_MAX: i64 = 1000;
/// A page of groups stops growing past this many bytes; the rest is on the next page.
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Groups read from the store at a time while a page is filled.
const READ_STEP: i64 = 50;

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    /// Where the page starts: the `cursor` of the previous page's `Link: rel="next"`.
    cursor: Option<String>,
}

/// A cursor as the API shows it: `updated_at` and id, base64url so it is one opaque word.
fn encode_cursor(c: &GroupCursor) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{}", c.updated_at, c.id))
}

fn decode_cursor(s: &str) -> Option<GroupCursor> {
    use base64::Engine;
    if s.len() > 200 {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (at, id) = raw.rsplit_once('|')?;
    parse_stored_time(at)?;
    Some(GroupCursor {
        updated_at: at.to_string(),
        id: id.parse().ok()?,
    })
}

/// The `status` query value that asks for `filter`, for the next page's link.
fn status_param(filter: GroupFilter) -> &'static str {
    match filter {
        GroupFilter::Open => "open",
        GroupFilter::Resolved => "resolved",
        GroupFilter::All => "all",
    }
}

impl ListQuery {
    fn cursor(&self) -> Result<Option<GroupCursor>, ApiError> {
        match &self.cursor {
            None => Ok(None),
            Some(c) => decode_cursor(c).map(Some).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "cursor is not one runbot gave: use the one in the previous page's Link header",
                )
            }),
        }
    }

    fn parse(&self, default: GroupFilter) -> Result<(GroupFilter, i64), ApiError> {
        let filter = match self.status.as_deref() {
            None => default,
            Some("open" | "firing") => GroupFilter::Open,
            Some("resolved") => GroupFilter::Resolved,
            Some("all") => GroupFilter::All,
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "status must be open, resolved or all",
                ))
            }
        };
        let limit = self.limit.unwrap_or(PAGE_DEFAULT);
        if !(1..=PAGE_MAX).contains(&limit) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {PAGE_MAX}; for more, follow the Link header's next page"),
            ));
        }
        Ok((filter, limit))
    }
}

fn store_error(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "console could not read the store");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database cannot be read right now",
    )
}

/// `GET /api/alert-groups`: groups with their alerts, most recently changed first, one page at
/// a time: at most `limit` groups and, past the first, no more than [`PAGE_BYTES`] of JSON.
/// `Link: <…&cursor=…>; rel="next"` (and `X-Next-Cursor`) name the next page when there is one.
async fn api_groups(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (filter, limit) = q.parse(GroupFilter::All)?;
    let mut after = q.cursor()?;
    let mut body = Vec::with_capacity(4096);
    body.push(b'[');
    let mut count = 0;
    let next = 'fill: loop {
        let want = (limit - count).min(READ_STEP);
        let step = state
            .store
            .list_groups(filter, want, after.as_ref(), Some(ALERTS_PER_GROUP))
            .await
            .map_err(store_error)?;
        let ended = (step.len() as i64) < want;
        for g in &step {
            let mark = body.len();
            if count > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, g).expect("views serialize");
            if count > 0 && body.len() > PAGE_BYTES {
                body.truncate(mark);
                break 'fill after;
            }
            count += 1;
            after = Some(g.cursor());
        }
        if ended {
            break None;
        }
        if count >= limit {
            break after;
        }
    };
    body.push(b']');
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(next) = next {
        let status = status_param(filter);
        let cursor = encode_cursor(&next);
        let link = format!(
            "</api/alert-groups?status={status}&limit={limit}&cursor={cursor}>; rel=\"next\""
        );
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::LINK,
            link.parse().expect("the link is ASCII"),
        );
        headers.insert(
            "x-next-cursor",
            cursor.parse().expect("the cursor is ASCII"),
        );
    }
    Ok(response)
}

/// `GET /api/alert-groups/{id}`: one group, its alerts and its timeline.
async fn api_group(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state
        .store
        .group(id, GROUP_ALERTS_MAX, GROUP_EVENTS_MAX)
        .await
        .map_err(store_error)?
    {
        Some((group, timeline, total)) => {
            let mut value = serde_json::to_value(group).expect("views serialize");
            value["timeline"] = serde_json::to_value(timeline).expect("views serialize");
            value["timeline_total"] = total.into();
            Ok(Json(value))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no alert group {id}"),
        )),
    }
}

/// "3m", "2h 5m", "4d 1h": how long ago an RFC 3339 time was.
fn age(since: &str) -> String {
    let Some(t) = parse_stored_time(since) else {
        return "?".into();
    };
    let secs = (Utc::now() - t).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d {}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · runbot" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header { a href="/" { "runbot" } " · " (title) }
                main { (body) }
            }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:.6rem 1rem;font-weight:600}header a{color:#fff;text-decoration:none}\
main{padding:1rem}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #e3e6eb;vertical-align:top}\
.sev{font-weight:700;border-radius:3px;padding:0 .3rem;color:#fff}\
.sev1{background:#c0262d}.sev2{background:#e0711c}.sev3{background:#c9a400}.sev4{background:#5b6b7d}\
.firing{color:#c0262d;font-weight:600}.resolved{color:#1e8a3c;font-weight:600}\
ul{margin:.2rem 0;padding-left:1.2rem}.muted{color:#6b7380}.note{color:#8a5a00}";

fn severity_badge(sev: Severity) -> Markup {
    html! { span class={ "sev " (sev.as_str()) } { (sev.title()) } }
}

fn group_name(g: &GroupView) -> String {
    g.group_labels
        .get("alertname")
        .or_else(|| g.common_labels.get("alertname"))
        .cloned()
        .unwrap_or_else(|| g.group_key.clone())
}

async fn index(
    State(state): State<AppState>,
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

async fn group_page(
    State(state): State<AppState>,
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
            page("Not found", html! { p { "No alert group " (id) "." } }),
        )
            .into_response());
    };
    let entry = g.runbook.as_deref().and_then(|k| state.runbook.entry(k));
    let title = group_name(&g);
    Ok(page(
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
            table id="alerts" {
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
            }
            @if g.alerts_total > g.alerts.len() as i64 { p class="muted" { (g.alerts_total - g.alerts.len() as i64) " more alerts are not shown here." } }
            @if g.truncated_alerts > 0 { p class="muted" { (g.truncated_alerts) " more alerts were not sent by Alertmanager (max_alerts)." } }
            h2 { "Timeline" }
            @if events_total > timeline.len() as i64 { p class="muted" { "The last " (timeline.len()) " of " (events_total) " entries." } }
            table id="timeline" {
                thead { tr { th { "At" } th { "Event" } th { "Alert" } } }
                tbody {
                    @for e in &timeline {
                        tr { td { (e.at) } td { (e.kind.as_str().replace('_', " ")) } td { (e.fingerprint.as_deref().unwrap_or("")) } }
                    }
                }
            }
        },
    )
    .into_response())
}
