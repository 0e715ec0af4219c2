//! Escalation: who is paged, when, and the ways a page leaves runbot besides chat
//! ([`email`], signed outbound [`webhook`]s), each a `request::page::Pager`.

pub mod email;
pub mod webhook;
