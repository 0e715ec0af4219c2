//! The console's front page: the command bar, the open groups as live cards (most severe
//! first), the recently resolved ones, and the activity feed. The page script keeps it live from
//! `GET /api/events`, starting after the feed's head read before anything else, so nothing
//! that happens while the page is built is missed.

use axum::extract::State;
use axum::Extension;
use maud::{html, Markup};

use super::api::store_error;
use super::layout::page;
use crate::chat::console::{render, Viewer};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::request::Platform;
use crate::store::GroupFilter;

/// Open groups shown as cards; past this, the page says how to see the rest.
const OPEN_MAX: i64 = 500;
/// Resolved groups shown, most recently changed first.
const RESOLVED_SHOWN: i64 = 20;
/// Alerts read per group (a card lists 50).
const ALERTS_EACH: i64 = 51;
/// Activity entries shown.
const ACTIVITY_SHOWN: i64 = 30;

pub(super) async fn index(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, ApiError> {
    let after = state.console.feed().head();
    let store = &state.store;
    let mut open = store
        .list_groups(GroupFilter::Open, OPEN_MAX + 1, None, Some(ALERTS_EACH))
        .await
        .map_err(store_error)?;
    let more_open = open.len() as i64 > OPEN_MAX;
    open.truncate(OPEN_MAX as usize);
    let resolved = store
        .list_groups(
            GroupFilter::Resolved,
            RESOLVED_SHOWN,
            None,
            Some(ALERTS_EACH),
        )
        .await
        .map_err(store_error)?;
    // From the announcements themselves, which are kept longer than the live feed.
    let activity = store
        .recent_announcements(Platform::Console.as_str(), ACTIVITY_SHOWN)
        .await
        .map_err(store_error)?;
    let mut open: Vec<_> = open
        .iter()
        .map(|g| crate::chat::render::card(g, &state.runbook))
        .collect();
    open.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then_with(|| a.started_at.cmp(&b.started_at))
    });
    let resolved: Vec<_> = resolved
        .iter()
        .map(|g| crate::chat::render::card(g, &state.runbook))
        .collect();
    let can_act = viewer.actor().is_some();
    Ok(page(
        Some(&viewer),
        "Alerts",
        html! {
            div id="live" data-after=(after) {
                @if can_act {
                    form id="command-bar" autocomplete="off" {
                        label for="command" class="visually-hidden" { "Command" }
                        input id="command" name="command" type="text" list="command-list"
                            placeholder="/status   /logs service:backend tail:100   /restart backend"
                            spellcheck="false" autocapitalize="off" enterkeyhint="send";
                        datalist id="command-list" {}
                        button type="submit" class="primary" { "Run" }
                    }
                    p id="command-help" class="muted status-line" {}
                } @else {
                    p class="muted" { "Signed in with console.token: you can read, not act." }
                }
                p id="connection" class="muted status-line" aria-live="polite" { "Connecting…" }
                div id="results" class="results" aria-live="polite" {}
                section id="open-groups" {
                    h2 { "Open" }
                    p id="no-open" class="muted" hidden[!open.is_empty()] {
                        "Nothing is firing. Alertmanager sends to POST /webhooks/alertmanager; `runbot alert test` sends a sample."
                    }
                    div class="cards" id="open-cards" {
                        @for c in &open { (render::card(c)) }
                    }
                    @if more_open {
                        p class="muted" { "More than " (OPEN_MAX) " groups are open; the rest are in " a href="/api/alert-groups?status=open" { "/api/alert-groups" } "." }
                    }
                }
                section id="resolved-groups" {
                    h2 { "Recently resolved" }
                    div class="cards" id="resolved-cards" {
                        @for c in &resolved { (render::card(c)) }
                    }
                }
                section id="activity-feed" {
                    h2 { "Activity" }
                    ul id="activity" {
                        @for (at, text) in &activity {
                            (render::announcement(at, text))
                        }
                    }
                }
            }
        },
    ))
}
