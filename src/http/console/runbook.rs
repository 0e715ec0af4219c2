//! `GET /runbook` and `GET /runbook/{alert}`: the runbook's entries as runbot holds them
//! (`commands/alerts.toml`): what an alert means, what to check, and the actions its card
//! offers. The `runbook_url` annotations of `deploy/prometheus/alerts.yml` point here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::html;

use super::layout::page;
use crate::chat::console::Viewer;
use crate::http::AppState;

/// `GET /runbook`: every entry, by alert name.
pub async fn runbook_index(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    page(
        Some(&viewer),
        "Runbook",
        html! {
            @if state.runbook.is_empty() {
                p id="empty" { "The runbook has no entries (commands/alerts.toml)." }
            } @else {
                ul id="runbook" {
                    @for (name, entry) in state.runbook.iter() {
                        li { a href=(format!("/runbook/{name}")) { code { (name) } } " · " (entry.title) }
                    }
                }
            }
        },
    )
    .into_response()
}

/// `GET /runbook/{alert}`: one entry; 404 naming the known ones for an alert without one.
pub async fn runbook_entry(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(alert): Path<String>,
) -> Response {
    let Some((name, entry)) = state.runbook.entry(&alert) else {
        // The name is the caller's: shown clipped, escaped by the template.
        let body = html! {
            p id="unknown" {
                "No runbook entry for " code { (crate::domain::text::clip(&alert, 100)) } ". "
                a href="/runbook" { "The entries" } "."
            }
        };
        return (StatusCode::NOT_FOUND, page(Some(&viewer), "Runbook", body)).into_response();
    };
    page(
        Some(&viewer),
        &format!("Runbook · {name}"),
        html! {
            article id="entry" data-alert=(name) {
                h2 { code { (name) } " · " (entry.title) }
                h3 { "What it means" }
                p id="meaning" { (entry.meaning) }
                h3 { "Check" }
                ol id="checks" { @for c in &entry.checks { li { (c) } } }
                @if !entry.actions.is_empty() {
                    h3 { "Act" }
                    ul id="actions" {
                        @for a in &entry.actions {
                            li {
                                (a.label) " · " code {
                                    "/" (a.command)
                                    @for (k, v) in &a.args { " " (k) ":" (arg(v)) }
                                }
                                @if a.risky { " " span class="risky" { "changes the stack" } }
                            }
                        }
                    }
                }
                @if let Some(chain) = &entry.escalation {
                    p { "Escalation chain: " code { (chain) } " (policies/escalation.toml)." }
                }
            }
        },
    )
    .into_response()
}

/// An action's argument as it would be typed.
fn arg(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Float(f) => f.to_string(),
        _ => "…".into(),
    }
}
