//! Who holds each on-call role now: the roles of `policies/roles.toml`, whether each is on call
//! (its hours, in `policy.timezone`: the same [`Policies::oncall`] that `/oncall` answers
//! from), whom runbot pages for it (rotation, override or its people) until when, and who
//! holds it on each platform, console accounts included.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::html;
use serde::Serialize;

use super::api::store_error;
use super::layout::{page, time_cell};
use crate::chat::console::Viewer;
use crate::http::error::ApiError;
use crate::http::AppState;

#[derive(Debug, Serialize)]
pub(super) struct OnCallView {
    /// When this was worked out, RFC 3339.
    pub at: String,
    /// `policy.timezone`, in which the hours are read.
    pub timezone: String,
    pub roles: Vec<RoleView>,
}

#[derive(Debug, Serialize)]
pub(super) struct RoleView {
    pub role: String,
    /// As roles.toml writes it: `24/7`, `business`, `weekends`.
    pub hours: &'static str,
    /// For people: `on call in business hours, Mon-Fri 09:00-18:00 Europe/Madrid`.
    pub hours_text: String,
    pub on_call_now: bool,
    pub discord_users: Vec<String>,
    pub discord_roles: Vec<String>,
    pub slack_users: Vec<String>,
    /// `console_users` in roles.toml.
    pub console_users: Vec<String>,
    /// Enabled console accounts given the role (`runbot user add --role`).
    pub console_accounts: Vec<String>,
    /// Who runbot pages for the role now (names from people.toml): the rotation's turn, an
    /// override, or the role's people.
    pub on_duty: Vec<String>,
    /// `rotation`, `override` or `holders`.
    pub duty_source: &'static str,
    /// When the duty changes hands, RFC 3339; and who takes over.
    pub until: Option<String>,
    pub next: Vec<String>,
}

async fn oncall(state: &AppState) -> Result<OnCallView, ApiError> {
    let Some(dispatcher) = &state.dispatcher else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this runbot has no policies loaded",
        ));
    };
    let policies = dispatcher.policies();
    let accounts = state.store.accounts().await.map_err(store_error)?;
    let accounts: Vec<(String, Vec<String>)> = accounts
        .into_iter()
        .filter(|a| a.disabled_at.is_none())
        .map(|a| {
            // The roles column is written by runbot as a JSON array; anything else holds none.
            let roles = serde_json::from_str(&a.roles).unwrap_or_default();
            (a.name, roles)
        })
        .collect();
    let now = dispatcher.now();
    let overrides = crate::escalation::engine::active_overrides(&state.store, now)
        .await
        .map_err(store_error)?;
    let names = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .map(|id| policies.people().name_of(id).to_string())
            .collect()
    };
    let roles = policies
        .oncall(now)
        .into_iter()
        .map(|on| {
            let duty = policies.on_duty(&on.role.name, now, &overrides);
            let h = on.role.holders;
            RoleView {
                on_duty: duty.as_ref().map(|d| names(&d.people)).unwrap_or_default(),
                duty_source: match duty.as_ref().map(|d| &d.source) {
                    Some(crate::policy::oncall::DutySource::Rotation) => "rotation",
                    Some(crate::policy::oncall::DutySource::Override) => "override",
                    _ => "holders",
                },
                until: duty
                    .as_ref()
                    .and_then(|d| d.until)
                    .map(crate::domain::format_time),
                next: duty
                    .as_ref()
                    .and_then(|d| d.next.as_ref())
                    .map(|(ids, _)| names(ids))
                    .unwrap_or_default(),
                console_accounts: accounts
                    .iter()
                    .filter(|(_, roles)| roles.contains(&on.role.name))
                    .map(|(name, _)| name.clone())
                    .collect(),
                role: on.role.name,
                hours: on.role.hours.as_str(),
                hours_text: on.hours_text,
                on_call_now: on.on_call_now,
                discord_users: h.discord_users,
                discord_roles: h.discord_roles,
                slack_users: h.slack_users,
                console_users: h.console_users,
            }
        })
        .collect();
    Ok(OnCallView {
        at: crate::domain::format_time(now),
        timezone: policies.clock().tz.name().to_string(),
        roles,
    })
}

/// `GET /api/oncall`.
pub(super) async fn api_oncall(
    State(state): State<AppState>,
) -> Result<Json<OnCallView>, ApiError> {
    Ok(Json(oncall(&state).await?))
}

/// `GET /oncall`.
pub(super) async fn oncall_page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, ApiError> {
    let v = oncall(&state).await?;
    let list = |label: &str, items: &[String]| {
        html! {
            @if !items.is_empty() {
                div { span class="muted" { (label) ": " } (items.join(", ")) }
            }
        }
    };
    Ok(page(
        Some(&viewer),
        "On call",
        html! {
            p class="muted" { "As of " (time_cell(&v.at)) "; hours are read in " (v.timezone) " (policy.timezone)." }
            div class="table-wrap" {
                table id="oncall" {
                    thead { tr { th { "Role" } th { "Now" } th { "Paged" } th { "Hours" } th { "Held by" } } }
                    tbody {
                        @for r in &v.roles {
                            tr data-role=(r.role) data-on-call=(r.on_call_now) {
                                td { strong { (r.role) } }
                                td class=(if r.on_call_now { "resolved" } else { "muted" }) {
                                    @if r.on_call_now { "on call" } @else { "off" }
                                }
                                td class="duty" {
                                    @if r.on_duty.is_empty() { span class="muted" { "nobody by name" } }
                                    @else { strong { (r.on_duty.join(", ")) } }
                                    @if r.duty_source == "override" { " (override)" }
                                    @if let Some(until) = &r.until {
                                        div class="muted" { "until " (time_cell(until))
                                            @if !r.next.is_empty() { ", then " (r.next.join(", ")) } }
                                    }
                                }
                                td { (r.hours_text) }
                                td {
                                    (list("Discord users", &r.discord_users))
                                    (list("Discord roles", &r.discord_roles))
                                    (list("Slack", &r.slack_users))
                                    (list("Console (roles.toml)", &r.console_users))
                                    (list("Console accounts", &r.console_accounts))
                                    @if r.discord_users.is_empty() && r.discord_roles.is_empty() && r.slack_users.is_empty()
                                        && r.console_users.is_empty() && r.console_accounts.is_empty() {
                                        span class="muted" { "nobody assigned (policies/roles.toml)" }
                                    }
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
