//! `GET /healthz`, `GET /readyz`, `GET /metrics`: for orchestrators and Prometheus.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::guard::{metrics_gate, Edge};
use super::AppState;
use crate::domain::Severity;
use crate::telemetry::ALERTS_FIRING;

pub fn router(edge: Arc<Edge>) -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(metrics_text).route_layer(middleware::from_fn_with_state(edge, metrics_gate)),
        )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when a write to the store would succeed now.
async fn readyz(State(state): State<AppState>) -> Response {
    let probe = tokio::time::timeout(Duration::from_secs(3), state.writer.probe()).await;
    match probe {
        Ok(Ok(())) => Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "the database cannot be written" })),
            )
                .into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: the store did not answer within 3 s");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "the database did not answer within 3 s" })),
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match state.store.firing_by_severity().await {
        Ok(counts) => {
            for sev in Severity::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == sev.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!(ALERTS_FIRING, "severity" => sev.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not count firing alerts for /metrics"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
