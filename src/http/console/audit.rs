//! The audit page: the trail newest first, filtered by person, command, outcome and time, a page
//! at a time; and its download, written by the same code as `runbot audit export`.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::api::store_error;
use super::layout::{page, time_cell};
use crate::audit::{Audit, AuditError, AuditFilter, AuditRow, ExportFormat, Step};
use crate::chat::console::Viewer;
use crate::http::error::ApiError;
use crate::http::AppState;

/// An export is built in memory (the export code writes to a `Write` between awaits), so it
/// has a ceiling; past it the caller is told to narrow the filter or use the command line.
const EXPORT_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Exports built at once, so a few clicks cannot hold more than this many ceilings of memory.
static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// A filter value longer than this is no name runbot wrote.
const VALUE_MAX: usize = 200;

/// The query of `/audit` and `/audit/export`. Every value is text, so a bad one gets runbot's
/// own message; an empty one (a form's blank field) means no filter.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditQuery {
    actor: Option<String>,
    command: Option<String>,
    step: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    format: Option<String>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// RFC 3339, or what a `datetime-local` field sends (`2026-12-07T01:30`, seconds optional),
/// read as UTC.
fn parse_time(name: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Some(t) = crate::domain::parse_stored_time(s) {
        return Ok(t);
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc());
        }
    }
    Err(bad(format!(
        "{name} is not a time: use RFC 3339 (2026-12-07T01:30:00Z) or 2026-12-07T01:30 (UTC)"
    )))
}

/// What a query asks for, checked.
#[derive(Debug, Clone, Default)]
struct Asked {
    filter: AuditFilter,
    limit: i64,
    before: Option<i64>,
}

impl AuditQuery {
    fn parse(&self) -> Result<Asked, ApiError> {
        let text = |name: &str, v: &Option<String>| -> Result<Option<String>, ApiError> {
            match given(v) {
                Some(s) if s.chars().count() > VALUE_MAX => {
                    Err(bad(format!("{name} is longer than {VALUE_MAX} characters")))
                }
                other => Ok(other.map(str::to_string)),
            }
        };
        let step = match given(&self.step) {
            None => None,
            Some(s) => Some(s.parse::<Step>().map_err(|_| {
                let all: Vec<&str> = Step::ALL.iter().map(|s| s.as_str()).collect();
                bad(format!("step must be one of {}", all.join(", ")))
            })?),
        };
        let since = given(&self.since)
            .map(|s| parse_time("since", s))
            .transpose()?;
        let until = given(&self.until)
            .map(|s| parse_time("until", s))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if u <= s {
                return Err(bad("until must be after since"));
            }
        }
        let (limit, before) =
            super::rows_page(given(&self.limit), given(&self.before), "a row id")?;
        Ok(Asked {
            filter: AuditFilter {
                since,
                until,
                actor_id: text("actor", &self.actor)?,
                command: text("command", &self.command)?,
                step: step.map(|s| s.as_str().to_string()),
                invocation_id: None,
            },
            limit,
            before,
        })
    }
}

/// The filter as a query string (no `?`), values percent-encoded: for links to more pages and
/// downloads, which then start with a fixed path and cannot become another scheme.
fn query_string(f: &AuditFilter, extra: &[(&str, String)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(a) = &f.actor_id {
        q.append_pair("actor", a);
    }
    if let Some(c) = &f.command {
        q.append_pair("command", c);
    }
    if let Some(s) = &f.step {
        q.append_pair("step", s);
    }
    if let Some(t) = f.since {
        q.append_pair("since", &crate::domain::format_time(t));
    }
    if let Some(t) = f.until {
        q.append_pair("until", &crate::domain::format_time(t));
    }
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    q.finish()
}

/// A `datetime-local` field's value for a time (UTC).
fn local_value(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `GET /audit`.
pub(super) async fn audit_page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let asked = match q.parse() {
        Ok(a) => a,
        Err(e) => {
            let body = html! {
                (filters(&AuditFilter::default(), super::ROWS_DEFAULT))
                p class="error" role="alert" { (e.message) }
            };
            return Ok((
                StatusCode::BAD_REQUEST,
                page(Some(&viewer), "Audit trail", body),
            )
                .into_response());
        }
    };
    let mut rows = state
        .store
        .audit_page(asked.before, asked.limit + 1, &asked.filter)
        .await
        .map_err(store_error)?;
    let next = if rows.len() as i64 > asked.limit {
        rows.truncate(asked.limit as usize);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    let f = &asked.filter;
    let body = html! {
        (filters(f, asked.limit))
        p class="muted" {
            "Download what this filter selects, oldest first, as "
            a id="export-csv" href={ "/audit/export?" (query_string(f, &[("format", "csv".into())])) } { "CSV" }
            " or "
            a id="export-jsonl" href={ "/audit/export?" (query_string(f, &[("format", "jsonl".into())])) } { "JSON lines" }
            " (the same as runbot audit export)."
        }
        @if rows.is_empty() {
            p id="empty" { "No audit rows match." }
        } @else {
            div class="table-wrap" {
                table id="audit" {
                    thead { tr { th { "#" } th { "At (UTC)" } th { "Who" } th { "Command" } th { "Step" } th { "Reason or outcome" } th { "Group" } } }
                    tbody { @for r in &rows { (row(r)) } }
                }
            }
            @if let Some(id) = next {
                p { a id="next" rel="next" href={ "/audit?" (query_string(f, &[("limit", asked.limit.to_string()), ("before", id.to_string())])) } { "Older rows" } }
            }
        }
    };
    Ok(page(Some(&viewer), "Audit trail", body).into_response())
}

fn filters(f: &AuditFilter, limit: i64) -> Markup {
    html! {
        form class="filters" method="get" action="/audit" {
            label { "Person (user id)" input type="search" name="actor" value=(f.actor_id.as_deref().unwrap_or("")); }
            label { "Command" input type="search" name="command" value=(f.command.as_deref().unwrap_or("")); }
            label { "Outcome (step)"
                select name="step" {
                    option value="" { "any" }
                    @for s in Step::ALL {
                        option value=(s.as_str()) selected[f.step.as_deref() == Some(s.as_str())] { (s.as_str().replace('_', " ")) }
                    }
                }
            }
            label { "From (UTC)" input type="datetime-local" step="1" name="since" value=(local_value(f.since)); }
            label { "Before (UTC)" input type="datetime-local" step="1" name="until" value=(local_value(f.until)); }
            input type="hidden" name="limit" value=(limit);
            button type="submit" class="primary" { "Filter" }
            a href="/audit" { "Clear" }
        }
    }
}

fn row(r: &AuditRow) -> Markup {
    let args: Value = serde_json::from_str(&r.args).unwrap_or(Value::Null);
    let origin: Value = serde_json::from_str(&r.origin).unwrap_or(Value::Null);
    let detail: Option<Value> = r
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok());
    let summary = detail
        .as_ref()
        .and_then(|d| d.get("summary"))
        .and_then(Value::as_str);
    let group = origin.get("group_id").and_then(Value::as_i64);
    let by_actor = query_string(
        &AuditFilter {
            actor_id: Some(r.actor_id.clone()),
            ..AuditFilter::default()
        },
        &[],
    );
    html! {
        tr data-id=(r.id) data-step=(r.step) {
            td { (r.id) }
            td { (time_cell(&r.at)) }
            td {
                a href={ "/audit?" (by_actor) } title="Only this person" { (r.actor_name) }
                div class="muted" { (r.actor_platform) " " (r.actor_id) }
            }
            td { code { (super::group::command_text(&r.command, &args)) } }
            td class=(step_class(&r.step)) { (r.step.replace('_', " ")) }
            td {
                @if let Some(reason) = &r.reason { (reason) }
                @else if let Some(s) = summary { (s) }
            }
            td { @if let Some(g) = group { a href={ "/groups/" (g) } { "#" (g) } } }
        }
    }
}

fn step_class(step: &str) -> &'static str {
    match step {
        "succeeded" | "approved" | "confirmed" => "resolved",
        "denied" | "invalid" | "failed" | "rejected" | "rate_limited" | "interrupted" => "firing",
        _ => "",
    }
}

/// Collects an export in memory, refusing to grow past its ceiling.
struct Capped {
    buf: Vec<u8>,
    max: usize,
}

impl Capped {
    fn new(max: usize) -> Capped {
        Capped {
            buf: Vec::new(),
            max,
        }
    }

    fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// The error a [`Capped`] writer fails with once full.
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the export is over its size limit")
    }
}

impl std::error::Error for TooLarge {}

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > self.max {
            return Err(std::io::Error::other(TooLarge));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /audit/export?format=csv|jsonl&…`: the rows the filter selects, oldest first, as
/// `runbot audit export` writes them (the same function writes both).
pub(super) async fn export(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let asked = q.parse()?;
    let format: ExportFormat = given(&q.format)
        .unwrap_or("jsonl")
        .parse()
        .map_err(|_| bad("format must be csv or jsonl"))?;
    let Ok(_turn) = EXPORTS.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "other exports are being built: try again in a moment",
        ));
    };
    let mut out = Capped::new(EXPORT_MAX_BYTES);
    match Audit::new(state.store.clone())
        .export(format, &asked.filter, &mut out)
        .await
    {
        Ok(_) => {}
        Err(AuditError::Io(e)) if e.get_ref().is_some_and(|i| i.is::<TooLarge>()) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the export would be over {} MiB: narrow it (since, until, actor, command, step) or use runbot audit export",
                    EXPORT_MAX_BYTES / 1024 / 1024
                ),
            ));
        }
        Err(AuditError::Store(e)) => return Err(store_error(e)),
        Err(e) => {
            tracing::error!(error = %e, "the console could not export the audit trail");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the audit trail could not be exported: see runbot's log",
            ));
        }
    }
    let (content_type, name) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "runbot-audit.csv"),
        ExportFormat::Jsonl => ("application/x-ndjson", "runbot-audit.jsonl"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        out.into_inner(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_export_stops_at_its_ceiling() {
        let mut out = Capped::new(10);
        out.write_all(b"0123456789").unwrap();
        let e = out.write_all(b"x").unwrap_err();
        assert!(e.get_ref().is_some_and(|i| i.is::<TooLarge>()));
        assert_eq!(out.into_inner().len(), 10);
    }

    #[test]
    fn times_are_rfc_3339_or_a_datetime_local_value_in_utc() {
        let t = parse_time("since", "2026-12-07T01:30").unwrap();
        assert_eq!(
            crate::domain::format_time(t),
            "2026-12-07T01:30:00.000000000Z"
        );
        let t = parse_time("since", "2026-12-07T02:30:05+01:00").unwrap();
        assert_eq!(
            crate::domain::format_time(t),
            "2026-12-07T01:30:05.000000000Z"
        );
        assert!(parse_time("since", "yesterday").is_err());
    }
}
