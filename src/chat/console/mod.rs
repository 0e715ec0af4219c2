//! The web console as a chat platform of its own: its accounts (who may sign in), sessions, API
//! tokens, the `runbot user` and `runbot token` commands, and who is looking at a page
//! ([`Viewer`]).

pub mod accounts;
pub mod cli;
pub mod events;
pub mod page;
pub mod platform;
pub mod render;
pub mod sessions;
pub mod signin;
pub mod throttle;
pub mod tokens;

use serde_json::{Map, Value};

use crate::request::{Actor, Platform};

/// A JSON object literal as an audit entry's `args` or `origin` map (anything else: empty).
fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Who a console request comes from, as the gate established it (a request extension on every
/// route behind the gate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The console account's name, or the API token's name.
    pub name: String,
    /// runbot roles the account or token holds (`runbot user add --role`); `console_users` in
    /// `policies/roles.toml` adds to them.
    pub roles: Vec<String>,
    pub via: Via,
}

/// How the viewer proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A signed-in browser: the session's id (its hash, as stored) and the anti-forgery token
    /// its pages carry.
    Session { session: String, csrf: String },
    /// `Authorization: Bearer rbt_…` (`runbot token create`): the token's public id.
    ApiToken { id: String },
    /// `console.token`: reads everything, acts as nobody.
    ConsoleToken,
}

impl Viewer {
    /// Who the invocation core sees; None for `console.token`, which names no person.
    pub fn actor(&self) -> Option<Actor> {
        let user_id = match self.via {
            Via::Session { .. } => self.name.clone(),
            Via::ApiToken { .. } => format!("token:{}", self.name),
            Via::ConsoleToken => return None,
        };
        Some(Actor {
            platform: Platform::Console,
            user_id,
            name: self.name.clone(),
            platform_roles: Vec::new(),
            roles: self.roles.clone(),
        })
    }

    /// Whether what let this viewer in still holds now: the session is live (not ended,
    /// expired or its account disabled), the API token not revoked. For what outlasts one
    /// request (a live stream). A database error is an error, never a yes.
    pub async fn still_valid(
        &self,
        store: &crate::store::Store,
        rules: &sessions::Rules,
    ) -> Result<bool, sqlx::Error> {
        Ok(match &self.via {
            Via::Session { session, .. } => {
                sessions::check_hash(store, rules, session, chrono::Utc::now(), false)
                    .await?
                    .is_some()
            }
            Via::ApiToken { id } => store
                .api_token(id)
                .await?
                .is_some_and(|t| t.revoked_at.is_none()),
            Via::ConsoleToken => true,
        })
    }

    /// The anti-forgery token a page must send back with each change; None off a session.
    pub fn csrf(&self) -> Option<&str> {
        match &self.via {
            Via::Session { csrf, .. } => Some(csrf),
            _ => None,
        }
    }
}
