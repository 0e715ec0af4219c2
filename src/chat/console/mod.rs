//! The web console as a chat platform of its own. For now: its accounts (who may sign in) and
//! the `runbot user` commands that keep them.

pub mod accounts;
pub mod cli;
pub mod tokens;
