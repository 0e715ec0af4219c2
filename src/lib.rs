//! runbot: a ChatOps bot for incident response.
//!
//! The path of a request, and the module that owns each step:
//!
//! - [`config`]: settings (defaults < `runbot.toml` < `RUNBOT__*` environment), validated once.
//! - [`telemetry`]: tracing (JSON when not on a terminal) and the Prometheus recorder.
//! - [`app`]: wiring. Builds the store, the writer and the HTTP server from settings; shuts down cleanly.
//! - [`http`]: axum routes, one module per inbound party (Alertmanager, console, ops).
//! - [`alerts`]: the Alertmanager webhook model, parsed into validated domain types.
//! - [`policy`]: data from `policies/`: severity mapping, roles and on-call hours, Cedar
//!   policies; decides allow / deny / needs approval with a reason, and `runbot policy explain|test`.
//! - [`runbook`]: data from `commands/` (the runbook entry for each alert).
//! - [`commands`]: data from `commands/`: one file per command, its typed options and risk;
//!   parses and validates arguments.
//! - [`chat`]: the card each alert group shows, the outbox that delivers it (rate-limited,
//!   retried, edited in place), and one adapter per platform (Discord).
//! - [`invocation`]: the core of a request: rate limit → validate → decide (policy) → audit →
//!   confirm or collect approval → execute → reply → audit the outcome.
//! - [`executors`]: what commands run (acknowledgements, Alertmanager silences, Docker status
//!   and logs, …).
//! - [`docker`]: the Docker engine (bollard): a compose project's containers, found by their
//!   labels, and their logs.
//! - [`nginx`]: the deny list `/block-ip` keeps: strict address parsing, what may never be
//!   blocked, the include file written atomically, `nginx -t` and reload, rollback on refusal.
//! - [`app_database`]: the stack's application database: pg_dump backups into gzip files,
//!   restores through psql in one transaction, read-only diagnostic queries.
//! - [`psql_script`]: reads a backup's SQL the way psql will, refusing psql meta-commands.
//! - [`audit`]: the append-only audit trail: rows chained by SHA-256, verify, export.
//! - [`supervise`]: background loops that are restarted (logged, counted) when they panic.
//! - [`store`]: sqlx storage (SQLite by default, PostgreSQL at scale) and the single batching writer.

pub mod alerts;
pub mod app;
pub mod app_database;
pub mod audit;
pub mod chat;
pub mod commands;
pub mod config;
pub mod docker;
pub mod domain;
pub mod executors;
pub mod http;
pub mod invocation;
pub mod nginx;
pub mod policy;
pub mod psql_script;
pub mod request;
pub mod runbook;
pub mod store;
pub mod supervise;
pub mod telemetry;
