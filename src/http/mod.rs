//! HTTP: one module per inbound party, merged here with the layers every route shares.

pub mod alertmanager;
pub mod console;
pub mod discord;
pub mod error;
pub mod guard;
pub mod ops;
pub mod server;
pub mod slack;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::policy::SeverityMap;
use crate::runbook::Runbook;
use crate::store::writer::Writer;
use crate::store::Store;

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub writer: Writer,
    pub severities: Arc<SeverityMap>,
    pub runbook: Arc<Runbook>,
    pub webhook_auth: Arc<alertmanager::WebhookAuth>,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
    /// Checks Discord interactions; None without `discord.public_key`.
    pub discord_interactions: Option<Arc<crate::chat::discord::verify::InteractionGuard>>,
    /// `discord.mode = "gateway"`: interactions come over the Gateway, not to the route.
    pub discord_gateway: bool,
    /// Slack's commands and clicks (HTTP or Socket Mode); None with Slack off.
    pub slack_inbound: Option<Arc<crate::chat::slack::inbound::Inbound>>,
    /// Checks what Slack posts to `/slack/*`; Some only in HTTP mode.
    pub slack_requests: Option<Arc<crate::chat::slack::verify::RequestGuard>>,
    /// `slack.mode = "socket"`: commands come over runbot's connection, not to the routes.
    pub slack_socket: bool,
    /// Wakes the chat outbox after a webhook is stored; None when no chat platform is on.
    pub chat_wake: Option<Arc<tokio::sync::Notify>>,
    /// The invocation core: people's commands and buttons.
    pub dispatcher: Option<Arc<crate::invocation::Dispatcher>>,
    /// Answers Discord interactions later (edits); None without a bot token.
    pub discord: Option<Arc<crate::chat::discord::DiscordAdapter>>,
    /// Slack: answers commands and clicks later (response_url); None without a bot token.
    pub slack: Option<Arc<crate::chat::slack::SlackAdapter>>,
    /// The console as a chat platform: its live feed and the answers it shows.
    pub console: Arc<crate::chat::console::platform::ConsolePlatform>,
    /// The `Host` check, local callers, body deadlines and the console's gate.
    pub edge: Arc<guard::Edge>,
    /// Console sign-in: the throttle, sessions, the first-run setup link.
    pub signin: Arc<crate::chat::console::signin::SignIn>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.max_body_bytes;
    Router::new()
        .merge(alertmanager::router())
        .merge(discord::router())
        .merge(slack::router())
        .merge(
            console::router()
                .route_layer(middleware::from_fn_with_state(
                    state.edge.clone(),
                    guard::console_gate,
                ))
                .route_layer(middleware::from_fn(guard::console_headers)),
        )
        .merge(console::public_router().route_layer(middleware::from_fn(guard::console_headers)))
        .merge(ops::router(state.edge.clone()))
        // A route layer, so the matched route is known when latency is recorded.
        .route_layer(middleware::from_fn(track_latency))
        .layer(middleware::from_fn_with_state(
            state.edge.clone(),
            guard::edge,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(RequestIds::default()))
        .with_state(state)
}

/// Request ids: a per-process random prefix and a counter, cheap and unique enough to grep.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self {
            prefix: format!(
                "{:08x}",
                (nanos as u64 ^ u64::from(std::process::id())) as u32
            )
            .into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

async fn track_latency(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = crate::telemetry::method_label(req.method());
    let response = next.run(req).await;
    metrics::histogram!(
        crate::telemetry::HTTP_REQUEST_DURATION,
        "method" => method,
        "route" => route,
        "status" => crate::telemetry::status_label(response.status().as_u16())
    )
    .record(started.elapsed().as_secs_f64());
    response
}
