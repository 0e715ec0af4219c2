//! `[email]` and `[notify]`: the ways pages leave runbot besides chat. Kept apart from the
//! other sections so the escalation settings can grow beside them without one huge file.

use std::net::IpAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Key, Section};
use crate::domain::redact::shown_url;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a relay on this host.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// The SMTP relay; setting it turns email pages on.
    pub host: Option<String>,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The sender, `runbot@example.com` or `Runbot <runbot@example.com>`.
    pub from: Option<String>,
    pub timeout_secs: u64,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            host: None,
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            from: None,
            timeout_secs: 10,
        }
    }
}

/// `[email]` in the settings reference: one entry per field above.
impl EmailSettings {
    pub const REFERENCE: Section = Section {
        name: "email",
        about: "Pages by email through an SMTP relay (see docs/notify.md). Unset `host`: no email pages.",
        defaults: || format!("{:?}", EmailSettings::default()),
        keys: &[
            Key {
                name: "host",
                kind: "string",
                default: "unset",
                about: "the SMTP relay's host name or address; setting it turns email pages on",
            },
            Key {
                name: "port",
                kind: "integer",
                default: "`587`",
                about: "the relay's port (587 for STARTTLS, 465 for TLS)",
            },
            Key {
                name: "tls",
                kind: "`starttls`, `tls` or `none`",
                default: "`starttls`",
                about: "`starttls`: the relay must offer STARTTLS; `tls`: TLS from the first byte; `none`: no encryption, allowed only to a loopback host (`localhost`, `127.0.0.1`, `::1`)",
            },
            Key {
                name: "username",
                kind: "string",
                default: "unset",
                about: "SMTP login; set with `password`",
            },
            Key {
                name: "password",
                kind: "secret string",
                default: "unset",
                about: "SMTP password; never shown",
            },
            Key {
                name: "from",
                kind: "address",
                default: "unset",
                about: "the sender, `runbot@example.com` or `Runbot <runbot@example.com>` (required with `host`)",
            },
            Key {
                name: "timeout_secs",
                kind: "seconds",
                default: "`10`",
                about: "one delivery's time limit (connect, TLS, the whole SMTP exchange), 1–60; past it the page is retried",
            },
        ],
    };
}

/// `[notify]`: outbound webhooks (SMS and phone gateways, other paging tools).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    pub webhooks: Vec<WebhookSettings>,
}

/// A `[[notify.webhooks]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub name: String,
    pub url: String,
    pub secret: SecretString,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// `[notify]` in the settings reference.
impl NotifySettings {
    pub const REFERENCE: Section = Section {
        name: "notify",
        about: "Signed outbound webhooks pages can go to (`notify = [\"webhook:NAME\"]` in a chain; see docs/notify.md).",
        defaults: || format!("{:?}", NotifySettings::default()),
        keys: &[Key {
            name: "webhooks",
            kind: "list of tables",
            default: "none",
            about: "`[[notify.webhooks]]` entries `{ name, url, secret, timeout_secs }`: `name` unique (1-32 lowercase letters, digits or -, starting with a letter), `url` http(s), `secret` 16+ characters that sign each body (HMAC-SHA256), `timeout_secs` 1 to 60 (default 10)",
        }],
    };
}

/// The webhook timeout when an entry sets none.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// `[email]` parsed: what a mailer needs, checked.
#[derive(Debug, Clone)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub login: Option<(String, SecretString)>,
    pub from: lettre::message::Mailbox,
    pub timeout: Duration,
}

/// A `[[notify.webhooks]]` entry parsed.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub name: String,
    pub url: reqwest::Url,
    pub secret: SecretString,
    pub timeout: Duration,
}

/// Whether `host` names this machine, so plain SMTP to it never crosses a network.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The same rule as role names, so `webhook:NAME` in a chain reads like `role:NAME`.
fn is_webhook_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl EmailSettings {
    /// Checks `[email]`; None when email is off (no host) or a problem was noted.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> Option<SmtpServer> {
        let Some(host) = &self.host else {
            if self.from.is_some() || self.username.is_some() || self.password.is_some() {
                problems.push("email.host is missing: email pages need the SMTP relay's host (or remove the other email.* keys)".into());
            }
            return None;
        };
        let before = problems.len();
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.push(format!(
                "email.host = {host:?} is not a host name: use e.g. smtp.example.com"
            ));
        }
        if self.port == 0 {
            problems.push("email.port must be 1 to 65535 (default 587)".into());
        }
        if self.tls == SmtpTls::None && !is_loopback_host(host) {
            problems.push(format!(
                "email.tls = \"none\" sends mail (and any password) unencrypted, so it is allowed only to a relay on this host (localhost, 127.0.0.1, ::1), not {host:?}: use tls = \"starttls\" or \"tls\""
            ));
        }
        // Under the escalation engine's own limit for one send (65 s), so a slow relay that
        // does deliver is not cut off and sent to again.
        if !(1..=60).contains(&self.timeout_secs) {
            problems.push(format!(
                "email.timeout_secs = {} must be 1 to 60 (default 10)",
                self.timeout_secs
            ));
        }
        let login = match (&self.username, &self.password) {
            (Some(user), Some(password)) => {
                if user.is_empty() || password.expose_secret().is_empty() {
                    problems.push("email.username and email.password must not be empty".into());
                }
                Some((user.clone(), password.clone()))
            }
            (None, None) => None,
            _ => {
                problems.push("email.username and email.password go together: set both, or neither for a relay that needs no login".into());
                None
            }
        };
        let from = match &self.from {
            None => {
                problems.push("email.from is required with email.host: the sender address, e.g. \"Runbot <runbot@example.com>\"".into());
                None
            }
            Some(from) => match from.parse::<lettre::message::Mailbox>() {
                Ok(mailbox) => Some(mailbox),
                Err(e) => {
                    problems.push(format!(
                        "email.from = {from:?} is not an address ({e}): use e.g. runbot@example.com or \"Runbot <runbot@example.com>\""
                    ));
                    None
                }
            },
        };
        (problems.len() == before).then(|| SmtpServer {
            host: host.clone(),
            port: self.port,
            tls: self.tls,
            login,
            from: from.expect("no problem noted, so parsed"),
            timeout: Duration::from_secs(self.timeout_secs),
        })
    }
}

impl NotifySettings {
    /// Checks `[[notify.webhooks]]`; the entries in order, or None when a problem was noted.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> Option<Vec<WebhookTarget>> {
        let before = problems.len();
        let mut targets = Vec::with_capacity(self.webhooks.len());
        let mut seen = std::collections::BTreeSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let key = format!("notify.webhooks[{i}]");
            if !is_webhook_name(&w.name) {
                problems.push(format!(
                    "{key}.name = {:?}: use 1-32 lowercase letters, digits or -, starting with a letter",
                    w.name
                ));
            } else if !seen.insert(w.name.as_str()) {
                problems.push(format!(
                    "{key}.name = {:?} is used twice: each webhook needs its own name",
                    w.name
                ));
            }
            // Never echo the URL whole: it may carry credentials or a token in its path.
            let url = match reqwest::Url::parse(&w.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
                _ => {
                    problems.push(format!(
                        "{key}.url = {:?} must be an http(s) URL, e.g. https://sms.example.com/hook",
                        shown_url(&w.url)
                    ));
                    None
                }
            };
            let secret = w.secret.expose_secret();
            if secret.chars().count() < 16 || secret.chars().any(|c| c.is_control()) {
                problems.push(format!(
                    "{key}.secret must be at least 16 characters: generate one with `openssl rand -hex 32` and give the receiver the same"
                ));
            }
            let timeout = match w.timeout_secs {
                None => DEFAULT_WEBHOOK_TIMEOUT,
                Some(s @ 1..=60) => Duration::from_secs(s),
                Some(s) => {
                    problems.push(format!(
                        "{key}.timeout_secs = {s} must be 1 to 60 (default 10)"
                    ));
                    DEFAULT_WEBHOOK_TIMEOUT
                }
            };
            if let Some(url) = url {
                targets.push(WebhookTarget {
                    name: w.name.clone(),
                    url,
                    secret: w.secret.clone(),
                    timeout,
                });
            }
        }
        (problems.len() == before).then_some(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_only_this_machine() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "smtp.example.com",
            "10.0.0.1",
            "localhost.example.com",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
