//! `POST /webhooks/alertmanager`: Alertmanager's webhook (payload version 4).
//!
//! Answers 200 only once every alert is stored; 503 when the store cannot take them, so
//! Alertmanager retries; 4xx only for requests that can never succeed.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::guard::{presented, Presented};
use super::AppState;
use crate::alerts::{classify, Webhook};
use crate::config::AlertmanagerSettings;
use crate::store::writer::WriteError;
use crate::telemetry::{ALERTS_RECEIVED, SEVERITY_DEFAULTED, WEBHOOKS_RECEIVED};

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/alertmanager", post(receive))
}

/// The credentials Alertmanager must present. With none configured, only loopback callers.
pub struct WebhookAuth {
    token: Option<SecretString>,
    basic: Option<(String, SecretString)>,
}

impl WebhookAuth {
    pub fn from_settings(s: &AlertmanagerSettings) -> Self {
        Self {
            token: s.webhook_token.clone(),
            basic: s
                .basic_auth
                .as_ref()
                .map(|b| (b.username.clone(), b.password.clone())),
        }
    }

    fn configured(&self) -> bool {
        self.token.is_some() || self.basic.is_some()
    }

    fn challenge(&self) -> &'static str {
        match (&self.token, &self.basic) {
            (None, Some(_)) => "Basic realm=\"runbot\"",
            _ => "Bearer realm=\"runbot\"",
        }
    }

    /// Checks the Authorization header; every comparison takes the same time whatever matches.
    fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        match (presented(headers), &self.token, &self.basic) {
            (Presented::Missing, _, _) => Err("missing Authorization header: send the credentials configured in alertmanager.webhook_token or alertmanager.basic_auth"),
            (Presented::Bearer(t), Some(token), _) => {
                if bool::from(t.ct_eq(token.expose_secret().as_bytes())) {
                    Ok(())
                } else {
                    Err("invalid bearer token")
                }
            }
            (Presented::Basic(decoded), _, Some((user, pass))) => {
                let expected = format!("{user}:{}", pass.expose_secret());
                if bool::from(decoded.ct_eq(expected.as_bytes())) {
                    Ok(())
                } else {
                    Err("invalid basic auth credentials")
                }
            }
            _ => Err("unsupported Authorization scheme: use the one configured (Bearer for alertmanager.webhook_token, Basic for alertmanager.basic_auth)"),
        }
    }
}

fn refuse(result: &'static str, status: StatusCode, message: impl Into<String>) -> Response {
    metrics::counter!(WEBHOOKS_RECEIVED, "source" => "alertmanager", "result" => result)
        .increment(1);
    let message = message.into();
    tracing::warn!(%status, result, reason = %message, "webhook refused");
    ApiError::new(status, message).into_response()
}

async fn receive(State(state): State<AppState>, request: Request) -> Response {
    let auth = &state.webhook_auth;
    if auth.configured() {
        if let Err(why) = auth.check(request.headers()) {
            let mut response = refuse("unauthorized", StatusCode::UNAUTHORIZED, why);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(auth.challenge()),
            );
            return response;
        }
    } else {
        // Local as guard::check_host judges it: not forwarded by a proxy, not a rebound name.
        let local = request
            .extensions()
            .get::<super::guard::Caller>()
            .is_some_and(|c| c.local);
        if !local {
            return refuse(
                "forbidden",
                StatusCode::FORBIDDEN,
                "no webhook credentials are configured, so only local callers are accepted: set alertmanager.webhook_token",
            );
        }
    }

    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return refuse(
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }

    let body: Body = request.into_body();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body is larger than http.max_body_bytes ({} bytes): lower max_alerts in Alertmanager's webhook_config or raise the setting",
                    state.max_body_bytes
                ),
            )
        }
    };

    let webhook = match Webhook::parse(&bytes) {
        Ok(w) => w,
        Err(e) => return refuse("bad_request", StatusCode::BAD_REQUEST, e.0),
    };
    let group = classify(webhook, &state.severities, &state.runbook);
    if let Some(note) = &group.severity_note {
        metrics::counter!(SEVERITY_DEFAULTED).increment(1);
        tracing::info!(note = %note, "severity defaulted");
    }
    let alerts = group.alerts.len();
    match state.writer.ingest(group).await {
        Ok(receipt) => {
            if let Some(wake) = &state.chat_wake {
                wake.notify_one();
            }
            metrics::counter!(WEBHOOKS_RECEIVED, "source" => "alertmanager", "result" => "accepted")
                .increment(1);
            metrics::counter!(ALERTS_RECEIVED).increment(alerts as u64);
            // One line per group that opens, resolves or fires again; every webhook at debug,
            // so a storm does not turn into a log storm.
            match receipt.group_became.map(|s| s.as_str()) {
                Some(status) => tracing::info!(
                    group_id = receipt.group_id,
                    status,
                    alerts,
                    changes = receipt.changes,
                    "alert group is now {status}"
                ),
                None => tracing::debug!(
                    group_id = receipt.group_id,
                    alerts,
                    changes = receipt.changes,
                    "webhook stored"
                ),
            }
            (StatusCode::OK, Json(receipt)).into_response()
        }
        Err(e @ (WriteError::Unavailable(_) | WriteError::Closed)) => {
            tracing::error!(error = %e, "webhook not stored; Alertmanager will retry");
            let mut response = refuse(
                "store_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "runbot cannot store alerts right now; retry later",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            response
        }
        Err(e @ WriteError::Refused(_)) => {
            tracing::error!(error = %e, "webhook not stored");
            refuse(
                "store_refused",
                StatusCode::INTERNAL_SERVER_ERROR,
                "runbot could not store these alerts; see runbot's log",
            )
        }
    }
}
