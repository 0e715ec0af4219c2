//! Logs and metrics. Metric names are declared here once.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

pub const WEBHOOKS_RECEIVED: &str = "runbot_webhooks_received_total";
pub const ALERTS_RECEIVED: &str = "runbot_alerts_received_total";
pub const ALERTS_FIRING: &str = "runbot_alerts_firing";
pub const SEVERITY_DEFAULTED: &str = "runbot_severity_defaulted_total";
pub const HTTP_REQUEST_DURATION: &str = "runbot_http_request_duration_seconds";
/// Requests to a chat platform, by platform and HTTP status.
pub const CHAT_REQUESTS: &str = "runbot_chat_requests_total";
/// Interactions refused before anything was read from them, by platform and reason.
pub const INTERACTIONS_REFUSED: &str = "runbot_interactions_refused_total";
/// People's requests refused (invalid, denied, rate limited), by platform and audit step.
pub const REQUESTS_REFUSED: &str = "runbot_requests_refused_total";
/// From a request reaching the core to its first answer.
pub const REQUEST_FIRST_ANSWER: &str = "runbot_request_first_answer_seconds";
/// Commands run, by command and result (ok, failed, interrupted).
pub const COMMANDS_RUN: &str = "runbot_commands_run_total";
/// Deploys and rollbacks finished, by kind and result (succeeded, rolled_back, failed,
/// interrupted).
pub const DEPLOYS: &str = "runbot_deploys_total";
/// Background workers started again after a panic, by worker.
pub const WORKER_RESTARTS: &str = "runbot_worker_restarts_total";
/// Background work that failed and was logged (a pass of a loop, a store write it could not
/// make), by worker: a fixed name from the code.
pub const WORKER_ERRORS: &str = "runbot_worker_errors_total";
/// Cards posted or edited, by platform and what was done.
pub const CHAT_DELIVERED: &str = "runbot_chat_cards_delivered_total";
/// Card deliveries given up on (an answer no retry changes), by platform.
pub const CHAT_FAILED: &str = "runbot_chat_delivery_failed_total";
/// Groups whose card is waiting to be delivered, by platform.
pub const CHAT_BACKLOG: &str = "runbot_chat_backlog";
/// 1 while runbot's own connection to a platform (Slack's Socket Mode, Discord's Gateway) is
/// up, else 0, by platform.
pub const CHAT_CONNECTED: &str = "runbot_chat_connected";
/// From a change being stored to its card being delivered, by platform.
pub const CHAT_DELIVERY_LAG: &str = "runbot_chat_delivery_lag_seconds";
/// The last audit row's id, set every `audit.head_log_secs` (the hash goes to the log only).
pub const AUDIT_HEAD_ID: &str = "runbot_audit_head_id";
/// Console sign-in attempts, by outcome: succeeded, failed, locked (refused by the throttle
/// without a check; only each lock's first refusal is audited).
pub const CONSOLE_SIGNINS: &str = "runbot_console_signins_total";
/// Console pages (and scripts) following the live feed (`GET /api/events`) now.
pub const CONSOLE_STREAMS: &str = "runbot_console_streams";
/// Pages, by way (`discord`, `discord-mention`, `console`, `email`, `webhook`) and result
/// (`sent`, `retried`, `refused`, `cancelled`).
pub const PAGES: &str = "runbot_pages_total";
/// From a group starting to fire to its first acknowledgement, by severity.
pub const TIME_TO_ACK: &str = "runbot_time_to_ack_seconds";

/// Counts a failed pass of background work `worker` (a fixed name from the code) in
/// [`WORKER_ERRORS`]; the caller logs what failed.
pub fn worker_error(worker: &'static str) {
    metrics::counter!(WORKER_ERRORS, "worker" => worker).increment(1);
}

/// A label for an HTTP method: the ones runbot's routes serve, else `other`. The method is
/// the caller's to choose (`FOO123` is a valid token), so it never becomes a label as sent:
/// each new value would be a new series held forever.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        _ => "other",
    }
}

/// A label for an HTTP status: the codes runbot answers or that a platform documents, else
/// the class (`4xx`); a status a remote server makes up must not widen the series.
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        421 => "421",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "other",
        },
    }
}

/// Installs the global subscriber. JSON unless stdout is a terminal (or as configured);
/// `RUST_LOG` overrides `log.level`. A second call (tests) is a no-op.
pub fn init_tracing(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(TIME_TO_ACK.into()),
                    &[
                        10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
                        14400.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_seconds".into()),
                        &[
                            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                            2.5, 5.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("runbot_store_batch_webhooks".into()),
                        &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0],
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            metrics::describe_counter!(
                WEBHOOKS_RECEIVED,
                "Webhooks received, by source and result"
            );
            metrics::describe_counter!(ALERTS_RECEIVED, "Alerts received in accepted webhooks");
            metrics::describe_gauge!(ALERTS_FIRING, "Alerts currently firing, by severity");
            metrics::describe_counter!(
                SEVERITY_DEFAULTED,
                "Webhooks with an alert whose severity label was missing or unknown"
            );
            metrics::describe_histogram!(HTTP_REQUEST_DURATION, "HTTP request latency");
            metrics::describe_gauge!(
                CONSOLE_STREAMS,
                "Streams following the console's live feed (GET /api/events)"
            );
            metrics::describe_gauge!(
                CHAT_CONNECTED,
                "1 while runbot's connection to the platform (Socket Mode, Gateway) is up"
            );
            metrics::describe_gauge!(
                AUDIT_HEAD_ID,
                "Id of the last audit row; its hash is in the `audit head` log line"
            );
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_closed_sets() {
        let mut seen = std::collections::BTreeSet::new();
        for s in 0..=u16::MAX {
            seen.insert(status_label(s));
        }
        assert!(seen.len() < 30, "{seen:?}");
        assert_eq!(status_label(429), "429");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(1000), "other");
        let odd = axum::http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&axum::http::Method::POST), "POST");
    }
}
