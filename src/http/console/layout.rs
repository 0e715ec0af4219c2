//! What every console page shares: the frame (header, navigation, the anti-forgery token), the
//! stylesheet and script (served from the binary, nothing from outside), and small renderers.

use axum::http::header;
use axum::response::IntoResponse;
use chrono::Utc;
use maud::{html, Markup, DOCTYPE};

use crate::chat::console::Viewer;
use crate::domain::{parse_stored_time, Severity};
use crate::store::GroupView;

/// The stylesheet and script, versioned by the build so a new binary is never served an old
/// copy from a browser's cache.
pub const CSS: &str = include_str!("static/console.css");
pub const JS: &str = include_str!("static/console.js");
pub const CSS_PATH: &str = concat!("/static/console-", env!("CARGO_PKG_VERSION"), ".css");
pub const JS_PATH: &str = concat!("/static/console-", env!("CARGO_PKG_VERSION"), ".js");

pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        CSS,
    )
}

pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        JS,
    )
}

/// "3m", "2h 5m", "4d 1h": how long ago an RFC 3339 time was.
pub fn age(since: &str) -> String {
    match parse_stored_time(since) {
        Some(t) => crate::domain::duration::short((Utc::now() - t).to_std().unwrap_or_default()),
        None => "?".into(),
    }
}

/// A page: `viewer` is who is signed in (None on the sign-in and setup pages).
pub fn page(viewer: Option<&Viewer>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                @if let Some(csrf) = viewer.and_then(Viewer::csrf) {
                    meta name="csrf-token" content=(csrf);
                }
                title { (title) " · runbot" }
                link rel="stylesheet" href=(CSS_PATH);
                script src=(JS_PATH) defer {}
            }
            body {
                header {
                    a class="brand" href="/" { "runbot" }
                    @if let Some(v) = viewer {
                        nav {
                            a href="/" { "Alerts" }
                            a href="/audit" { "Audit" }
                            a href="/oncall" { "On call" }
                            a href="/deploys" { "Deploys" }
                            a href="/report" { "Report" }
                            a href="/backlog" { "Backlog" }
                            a href="/runbook" { "Runbook" }
                        }
                        span class="who" {
                            // Shown by the script when a page arrives for this person.
                            a id="pages-badge" href="/" hidden title="Pages for you" {
                                "🚨 " span id="pages-count" { "0" }
                            }
                            button id="notify-pages" type="button" hidden { "Notify me of pages" }
                            span id="me" { (v.name) }
                            @if v.csrf().is_some() {
                                form id="logout" method="post" action="/logout" {
                                    input type="hidden" name="csrf_token" value=(v.csrf().unwrap_or_default());
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main id="main" { h1 { (title) } (body) }
            }
        }
    }
}

pub fn severity_badge(sev: Severity) -> Markup {
    html! { span class={ "sev " (sev.as_str()) } { (sev.title()) } }
}

pub fn group_name(g: &GroupView) -> String {
    g.group_labels
        .get("alertname")
        .or_else(|| g.common_labels.get("alertname"))
        .cloned()
        .unwrap_or_else(|| g.group_key.clone())
}

/// A stored time as people read it: `2026-12-07 01:02:03 UTC` (the text itself when it is not
/// a time).
pub fn when(at: &str) -> String {
    match parse_stored_time(at) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => at.to_string(),
    }
}

/// A time element: readable text, the exact stored value for machines.
pub fn time_cell(at: &str) -> Markup {
    html! { time datetime=(at) { (when(at)) } }
}
