//! runbot: a ChatOps bot for incident response.
//!
//! The path of a request, and the module that owns each step:
//!
//! - [`config`]: settings (defaults < `runbot.toml` < `RUNBOT__*` environment), validated once.
//! - [`telemetry`]: tracing (JSON when not on a terminal) and the Prometheus recorder.
//! - [`app`]: wiring. Builds the store, the writer and the HTTP server from settings; shuts down cleanly.
//! - [`http`]: axum routes, one module per inbound party (Alertmanager, console, ops).
//! - [`domain`]: leaf values several layers share (severities, statuses, stored times, an alert
//!   group's typed state); imports nothing of the crate.
//! - [`alerts`]: the Alertmanager webhook model, parsed into validated domain types, and the
//!   group lifecycle (firing → resolved → firing again) as pure code the writer runs.
//! - [`policy`]: data from `policies/`: severity mapping, roles and on-call hours, Cedar
//!   policies; decides allow / deny / needs approval with a reason, and `runbot policy explain|test`.
//! - [`runbook`]: data from `commands/` (the runbook entry for each alert).
//! - [`commands`]: data from `commands/`: one file per command, its typed options and risk;
//!   parses and validates arguments.
//! - [`chat`]: the card each alert group shows, the outbox that delivers it (rate-limited,
//!   retried, edited in place), and one adapter per platform (Discord).
//! - [`invocation`]: the core of a request: rate limit → validate → decide (policy) → audit →
//!   confirm or collect approval → execute → reply → audit the outcome.
//! - [`executors`]: what commands run (acknowledgements, silences, Docker, deploys, nginx,
//!   the application database), one folder per outside system holding its engine (driver)
//!   and its commands: `docker/` (with the deploy pipeline), `nginx/`, `database/`,
//!   `alertmanager/`.
//! - [`domain`]: leaf values shared by every layer: address ranges and the block guard,
//!   names, durations, text helpers, redaction.
//! - [`audit`]: the append-only audit trail: rows chained by SHA-256, verify, export.
//! - [`workers`]: every background loop, named, on one task tracker and cancellation token;
//!   restarted (logged, counted) when it panics, stopped together at shutdown.
//! - [`store`]: sqlx storage (SQLite by default, PostgreSQL at scale) and the single batching writer.

pub mod alerts;
pub mod app;
pub mod audit;
pub mod chat;
pub mod commands;
pub mod config;
pub mod domain;
pub mod executors;
pub mod http;
pub mod invocation;
pub mod policy;
pub mod request;
pub mod runbook;
pub mod store;
pub mod telemetry;
pub mod workers;
