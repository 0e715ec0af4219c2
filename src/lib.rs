//! runbot: a ChatOps bot for incident response.
//!
//! ## Layers
//!
//! Lowest first. A module imports modules of lower layers, and of its own layer without a
//! circle; never a higher one. `tests/it/architecture.rs` reads the numbered lines below and
//! checks every `crate::` path in `src/` against them, naming the file and line.
//!
//! 1. `domain`, `request`: leaves. [`domain`]: values every layer shares (severities,
//!    statuses, stored times, an alert group's typed state, address ranges and the block guard,
//!    names, durations and their formatter, text helpers, redaction, the clock).
//!    [`request`]: who asks, from where, what the core answers, every button id, the
//!    `Responder` seam.
//! 2. `config`, `telemetry`, `workers`: [`config`]: settings (defaults < `runbot.toml` <
//!    `RUNBOT__*`) parsed into domain values, and `runbot config reference`. [`telemetry`]:
//!    tracing and the Prometheus recorder. [`workers`]: every background loop, named, on one
//!    task tracker and cancellation token, restarted when it panics.
//! 3. `commands`, `runbook`: the data of `commands/`: each command's options, risk and
//!    executor kind; the runbook entry of each alert.
//! 4. `store`: rows and SQL only (SQLite by default, PostgreSQL at scale), the batching writer.
//! 5. `alerts`, `policy`, `audit`: [`alerts`]: the webhook model and the group lifecycle as
//!    pure code. [`policy`]: roles, hours and Cedar policies from `policies/`; decides and
//!    explains. [`audit`]: the hash-chained trail: append, verify, export.
//! 6. `escalation`, `executors`: [`escalation`]: paging along the chains of `policies/`, on
//!    durable timers, through the `Pager`s configured (email and webhooks live there; chat
//!    platforms implement theirs). [`executors`]: what commands run: one `Executor` per
//!    command family, each built with only the engines it uses, and one folder per outside
//!    system holding its engine (driver) and its commands: `docker/` (with the deploy
//!    pipeline), `nginx/`, `database/`, `alertmanager/`.
//! 7. `invocation`: a request's path: rate limit → validate → decide → audit → confirm or
//!    approve → execute → reply → audit the outcome.
//! 8. `chat`: cards, the outbox, announcements, the `ChatPlatform` seam, and one folder per
//!    platform (`discord/`).
//! 9. `http`: thin routes per inbound party: verify, parse, hand over.
//! 10. `app`: wiring: builds the parts the settings enable, runs and stops them.
//!
//! Beyond the layers: the core (`alerts`, `policy`, `executors`, `invocation`) never names a
//! chat platform or `http`; an engine (`executors/*/engine.rs`) imports only `domain`,
//! `request` and other engines.

pub mod alerts;
pub mod app;
pub mod audit;
pub mod chat;
pub mod commands;
pub mod config;
pub mod domain;
pub mod escalation;
pub mod executors;
pub mod http;
pub mod invocation;
pub mod policy;
pub mod request;
pub mod runbook;
pub mod store;
pub mod telemetry;
pub mod workers;
