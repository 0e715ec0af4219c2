//! `[slack]`: the Slack app (cards, slash commands, buttons, DMs), over Socket Mode or HTTP.
//! Kept apart from the other sections, as `[email]` and `[notify]` are.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{AlertRoute, DiscordRoute, Key, Section};
use crate::domain::Severity;

/// How Slack reaches runbot with commands and clicks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlackMode {
    /// runbot opens a WebSocket to Slack (`app_token`): no inbound connection at all.
    Socket,
    /// Slack posts to `/slack/commands`, `/slack/interactions` and `/slack/events`, signed
    /// with `signing_secret`.
    Http,
}

impl SlackMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SlackMode::Socket => "socket",
            SlackMode::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackSettings {
    /// The bot token (`xoxb-…`); setting it turns Slack on.
    pub bot_token: Option<SecretString>,
    /// The app's signing secret (Basic Information → App Credentials), which signs what Slack
    /// posts in HTTP mode.
    pub signing_secret: Option<SecretString>,
    /// An app-level token (`xapp-…`, scope `connections:write`) for Socket Mode.
    pub app_token: Option<SecretString>,
    /// `socket` or `http`; unset: socket when `app_token` is set, else http.
    pub mode: Option<SlackMode>,
    /// Replaces `https://slack.com/api` (tests, proxies).
    pub api_base: String,
    /// Where alert cards go unless a route says otherwise.
    pub alert_channel_id: Option<String>,
    /// Routes checked in order; the first that matches a group picks its channel.
    pub routes: Vec<DiscordRoute>,
    /// A group that fires again within this many seconds of resolving edits its old card.
    pub refire_window_secs: u64,
    /// Give up on one request after this long (then retry with backoff).
    pub request_timeout_ms: u64,
    /// Signed requests older (or further ahead) than this are refused.
    pub request_max_age_secs: u64,
    /// In a storm, more groups than this waiting for a first card in one channel get one
    /// digest message naming them all.
    pub digest_after: usize,
}

impl Default for SlackSettings {
    fn default() -> Self {
        Self {
            bot_token: None,
            signing_secret: None,
            app_token: None,
            mode: None,
            api_base: "https://slack.com/api".into(),
            alert_channel_id: None,
            routes: Vec::new(),
            refire_window_secs: 3600,
            request_timeout_ms: 10_000,
            request_max_age_secs: 300,
            digest_after: 5,
        }
    }
}

/// `[slack]` in the settings reference: one entry per field above.
impl SlackSettings {
    pub const REFERENCE: Section = Section {
        name: "slack",
        about: "The Slack app: alert cards, slash commands, buttons and DMs (see docs/slack.md). `runbot slack manifest` prints the app to create.",
        defaults: || format!("{:?}", SlackSettings::default()),
        keys: &[
            Key {
                name: "bot_token",
                kind: "secret string",
                default: "unset",
                about: "the bot token (`xoxb-…`, OAuth & Permissions); setting it turns Slack on",
            },
            Key {
                name: "signing_secret",
                kind: "secret string",
                default: "unset",
                about: "the signing secret (Basic Information → App Credentials); required in `http` mode",
            },
            Key {
                name: "app_token",
                kind: "secret string",
                default: "unset",
                about: "an app-level token (`xapp-…`, scope `connections:write`); required in `socket` mode",
            },
            Key {
                name: "mode",
                kind: "`socket` or `http`",
                default: "unset",
                about: "how commands and clicks reach runbot: `socket` (a WebSocket runbot opens, no inbound connection) or `http` (Slack posts to `/slack/*`); unset: `socket` when `app_token` is set, else `http`",
            },
            Key {
                name: "api_base",
                kind: "URL",
                default: "`https://slack.com/api`",
                about: "Slack's Web API (tests, proxies)",
            },
            Key {
                name: "alert_channel_id",
                kind: "string",
                default: "unset",
                about: "channel for alert cards, e.g. `C0123456789` (required with a token)",
            },
            Key {
                name: "routes",
                kind: "list of tables",
                default: "none",
                about: "`{ channel_id, matchers = { label = \"value\" }, severities = [\"sev1\"] }`, checked in order; the first that matches a group picks its channel",
            },
            Key {
                name: "refire_window_secs",
                kind: "seconds",
                default: "`3600`",
                about: "a group firing again within this long of resolving gets its old card back",
            },
            Key {
                name: "request_timeout_ms",
                kind: "milliseconds",
                default: "`10000`",
                about: "give up on one request to Slack after this long (then retry with backoff)",
            },
            Key {
                name: "request_max_age_secs",
                kind: "seconds",
                default: "`300`",
                about: "signed requests (HTTP mode) older or further ahead than this are refused; Slack's advice is 5 minutes",
            },
            Key {
                name: "digest_after",
                kind: "integer",
                default: "`5`",
                about: "in a storm, more groups than this waiting for a first card in one channel get one digest message",
            },
        ],
    };

    /// Whether Slack is on (a bot token is set).
    pub fn enabled(&self) -> bool {
        self.bot_token.is_some()
    }

    /// The mode in effect: `mode`, else socket when an app token is set, else http.
    pub fn effective_mode(&self) -> SlackMode {
        self.mode.unwrap_or(if self.app_token.is_some() {
            SlackMode::Socket
        } else {
            SlackMode::Http
        })
    }

    /// Checks `[slack]`; returns the routes, parsed.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> Vec<AlertRoute> {
        if !(self.api_base.starts_with("https://") || self.api_base.starts_with("http://")) {
            problems.push(format!(
                "slack.api_base = {:?} must be an http(s) URL (default https://slack.com/api)",
                crate::domain::redact::shown_url(&self.api_base)
            ));
        }
        if let Some(c) = &self.alert_channel_id {
            if !is_channel_id(c) {
                problems.push(format!("slack.alert_channel_id = {c:?} is not a Slack channel id: open the channel's details and copy the id at the bottom (e.g. C0123456789)"));
            }
        }
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            if !is_channel_id(&r.channel_id) {
                problems.push(format!(
                    "slack.routes[{i}].channel_id = {:?} is not a Slack channel id (e.g. C0123456789)",
                    r.channel_id
                ));
            }
            let mut severities = Vec::with_capacity(r.severities.len());
            for s in &r.severities {
                match Severity::parse(s) {
                    Some(severity) => severities.push(severity),
                    None => problems.push(format!(
                        "slack.routes[{i}].severities: {s:?} is not one of sev1, sev2, sev3, sev4"
                    )),
                }
            }
            routes.push(AlertRoute {
                channel_id: r.channel_id.clone(),
                matchers: r.matchers.clone(),
                severities,
            });
        }
        // Shapes only: the values are never echoed.
        let shaped = |t: &SecretString, prefix: &str| {
            let t = t.expose_secret();
            t.starts_with(prefix)
                && t.len() >= 20
                && t.len() <= 255
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if let Some(t) = &self.bot_token {
            if !shaped(t, "xoxb-") {
                problems.push("slack.bot_token does not look like a bot token (xoxb-…): copy the Bot User OAuth Token from OAuth & Permissions".into());
            }
            if self.alert_channel_id.is_none() {
                problems.push("slack.alert_channel_id is required when slack.bot_token is set: the channel alert cards go to".into());
            }
        } else if self.alert_channel_id.is_some()
            || !self.routes.is_empty()
            || self.app_token.is_some()
            || self.signing_secret.is_some()
        {
            problems.push(
                "slack.bot_token is missing: runbot cannot post to Slack without it (xoxb-…, OAuth & Permissions)".into(),
            );
        }
        if let Some(t) = &self.app_token {
            if !shaped(t, "xapp-") {
                problems.push("slack.app_token does not look like an app-level token (xapp-…): Basic Information → App-Level Tokens, scope connections:write".into());
            }
        }
        if let Some(s) = &self.signing_secret {
            let s = s.expose_secret();
            if s.len() < 16 || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                problems.push("slack.signing_secret does not look like a signing secret: copy it from Basic Information → App Credentials".into());
            }
        }
        if self.enabled() {
            match self.effective_mode() {
                SlackMode::Socket if self.app_token.is_none() => problems.push("slack.mode = \"socket\" needs slack.app_token (xapp-…, scope connections:write), or set slack.mode = \"http\" with slack.signing_secret".into()),
                SlackMode::Http if self.signing_secret.is_none() => problems.push("slack.mode is http (no slack.app_token), so slack.signing_secret is required to check what Slack posts; or set slack.app_token for Socket Mode".into()),
                _ => {}
            }
        }
        if !(5..=3600).contains(&self.request_max_age_secs) {
            problems.push(format!(
                "slack.request_max_age_secs = {} must be 5 to 3600 (default 300)",
                self.request_max_age_secs
            ));
        }
        if self.request_timeout_ms < 100 {
            problems.push("slack.request_timeout_ms must be at least 100 (default 10000)".into());
        }
        routes
    }
}

/// A Slack conversation id: `C…` (channel), `G…` (private), `D…` (DM), upper-case letters and
/// digits.
pub fn is_channel_id(v: &str) -> bool {
    (9..=24).contains(&v.len())
        && matches!(v.as_bytes()[0], b'C' | b'G' | b'D')
        && v.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_are_slacks() {
        assert!(is_channel_id("C0123456789"));
        assert!(is_channel_id("G01ABCDEF"));
        assert!(!is_channel_id("#alerts"));
        assert!(!is_channel_id("c0123456789"));
        assert!(!is_channel_id("C01"));
    }
}
