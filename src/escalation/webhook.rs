//! Pages to outbound webhooks (SMS and phone gateways, other paging tools), signed so the
//! receiver knows runbot sent them and the body was not changed.
//!
//! Each page is one `POST` of a JSON body with:
//! - `X-Runbot-Timestamp: <unix seconds>`
//! - `X-Runbot-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
//! - `Idempotency-Key: page-<id>`, the same on every retry of the page.
//!
//! The timestamp is inside the signature so a receiver can refuse old deliveries: without it a
//! captured request could be replayed at any later time and would still verify. docs/notify.md
//! shows how a receiver checks both. One attempt per call: retrying with backoff is the
//! engine's (durable) job; this sender only says whether a retry can help, and when.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;

use crate::config::WebhookTarget;
use crate::request::page::{Page, PageError, Pager};
use crate::request::BoxFuture;

pub const SIGNATURE_HEADER: &str = "X-Runbot-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Runbot-Timestamp";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A receiver's `Retry-After` is its wish, not an order: a longer wait than this would leave a
/// page undelivered for hours, so the engine retries no later than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The configured webhooks by name; `target` is a webhook's name.
pub struct Webhooks {
    client: reqwest::Client,
    targets: HashMap<String, WebhookTarget>,
    /// Names in settings order, for `check-config`.
    names: Vec<String>,
}

/// The JSON body of a page. Field names are a contract with receivers: add, never rename.
#[derive(Debug, Serialize)]
struct Body<'a> {
    page_id: i64,
    group_id: Option<i64>,
    severity: Option<&'a str>,
    title: &'a str,
    summary: &'a str,
    person: &'a str,
    role: Option<&'a str>,
    reason: &'a str,
    url: Option<&'a str>,
    sent_at: String,
}

impl Webhooks {
    /// The webhooks of `[[notify.webhooks]]` (validated settings); None when there are none.
    pub fn new(targets: &[WebhookTarget]) -> anyhow::Result<Option<Webhooks>> {
        if targets.is_empty() {
            return Ok(None);
        }
        // No redirects: following one would send the signed page to an address nobody
        // configured; a receiver that moved answers 3xx and the page fails visibly.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("runbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Webhooks {
            client,
            names: targets.iter().map(|t| t.name.clone()).collect(),
            targets: targets
                .iter()
                .map(|t| (t.name.clone(), t.clone()))
                .collect(),
        }))
    }

    /// The webhooks' names, in settings order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    async fn deliver(&self, name: &str, page: &Page) -> Result<(), PageError> {
        let Some(target) = self.targets.get(name) else {
            return Err(PageError::Permanent(format!(
                "no webhook is named {name:?} in [[notify.webhooks]]"
            )));
        };
        let now = SystemTime::now();
        let body = serde_json::to_vec(&Body {
            page_id: page.id,
            group_id: page.group_id,
            severity: page.severity.as_deref(),
            title: &page.title,
            summary: &page.summary,
            person: &page.person,
            role: page.role.as_deref(),
            reason: &page.reason,
            url: page.url.as_deref(),
            sent_at: chrono::DateTime::<chrono::Utc>::from(now)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .map_err(|e| PageError::Permanent(format!("cannot encode the page: {e}")))?;
        let timestamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let signature = sign(target.secret.expose_secret().as_bytes(), &timestamp, &body);
        let sent = self
            .client
            .post(target.url.clone())
            .timeout(target.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, format!("sha256={signature}"))
            .header(IDEMPOTENCY_HEADER, format!("page-{}", page.id))
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // without_url: the URL may hold credentials or a token; the name says which.
            Err(e) if e.is_builder() => {
                return Err(PageError::Permanent(format!(
                    "webhook {name}: {}",
                    e.without_url()
                )))
            }
            Err(e) => {
                return Err(PageError::Temporary {
                    reason: format!("webhook {name}: {}", error_chain(&e.without_url())),
                    retry_after: None,
                })
            }
        };
        classify(name, response.status(), response.headers())
    }
}

/// The signature the receiver recomputes: hex HMAC-SHA256 over `timestamp.body`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The receiver's answer as the engine needs it. The body is never read: it is the receiver's
/// text, of any size, and the status says enough.
fn classify(
    name: &str,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Result<(), PageError> {
    if status.is_success() {
        return Ok(());
    }
    // 408 is the receiver's own timeout: as worth retrying as ours.
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        return Err(PageError::Temporary {
            reason: format!("webhook {name} answered {status}"),
            retry_after: retry_after(headers, SystemTime::now()),
        });
    }
    let hint = if status.is_redirection() {
        ": redirects are not followed, set its url to the final address"
    } else {
        ""
    };
    Err(PageError::Permanent(format!(
        "webhook {name} answered {status}{hint}"
    )))
}

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`]; None when absent
/// or unreadable (the engine's own backoff then applies).
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A transport error with its causes ("error sending request: connection refused"), which
/// reqwest's Display alone leaves out.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Pager for Webhooks {
    fn via(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, target: &'a str, page: &'a Page) -> BoxFuture<'a, Result<(), PageError>> {
        Box::pin(self.deliver(target, page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently with Python's hmac module.
        assert_eq!(
            sign(
                b"0123456789abcdef-secret",
                "1700000000",
                br#"{"page_id":1}"#
            ),
            "1fc5bf50d7fd1948ac6239e89d2c5a55633b43d8001a2a5914a8081ed671af18"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("99999999"));
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
