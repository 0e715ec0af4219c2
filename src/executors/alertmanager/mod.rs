//! Alertmanager: its API client ([`engine`]).

pub mod engine;
