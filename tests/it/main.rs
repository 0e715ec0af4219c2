//! runbot's integration tests: one binary, one module per area, so the test helpers and the
//! crate are compiled and linked once. Run one area with `cargo test --test it webhook::`.
//!
//! Every test gets its own database, ports and temp dirs, so tests run side by side in this
//! process. What a process has once is shared by all of them: the metrics recorder (a test
//! reads only what its own app adds, or polls until its value shows) and the PostgreSQL
//! server's activity (see `common::PG_SERVER_WIDE`).

mod common;

mod accounts;
mod alertmanager;
mod app_database;
mod architecture;
mod audit;
mod both_platforms;
mod browser;
mod cli;
mod console_auth;
mod console_live;
mod console_pages;
mod deploy;
mod deploy_compose;
mod deploy_files;
mod deploy_image;
mod deploy_loop;
mod discord;
mod discord_commands;
mod discord_gateway;
mod discord_interactions;
mod discord_requests;
mod docker;
mod escalation;
mod escalation_durable;
mod escalation_ways;
mod fake_discord;
mod invocation;
mod locks;
mod migrations;
mod nginx;
mod notify;
mod oncall_files;
mod pages_discord;
mod policy;
mod report;
mod security;
mod shutdown;
mod slack_cards;
mod slack_commands;
mod store_down;
mod webhook;
