//! Pages by email: one SMTP delivery per page through the relay `[email]` names.
//!
//! The `Message-ID` is derived from the page's id, so when the engine retries a page the relay
//! or the reader's client sees the same message again, not a second one; `X-Runbot-Page` carries
//! the bare id for mail filters. One attempt per call: retrying is the engine's (durable) job.

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{SmtpServer, SmtpTls};
use crate::request::page::{Page, PageError, Pager};
use crate::request::BoxFuture;

/// Sends pages by email; `target` is the person's address.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of every `Message-ID`: the sender's domain.
    id_domain: String,
    /// `host:port tls`, for `check-config` and logs; never the login.
    shown: String,
}

impl Mailer {
    /// Builds the mailer `[email]` describes (validated settings); fails only when the TLS
    /// setup itself fails (no root certificates).
    pub fn new(server: &SmtpServer) -> anyhow::Result<Mailer> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)
            .port(server.port)
            .timeout(Some(server.timeout));
        builder = match server.tls {
            SmtpTls::None => builder.tls(Tls::None),
            // Required: a relay that stops offering STARTTLS (a downgrade) gets no mail and
            // no password.
            SmtpTls::Starttls => {
                builder.tls(Tls::Required(TlsParameters::new(server.host.clone())?))
            }
            SmtpTls::Tls => builder.tls(Tls::Wrapper(TlsParameters::new(server.host.clone())?)),
        };
        if let Some((user, password)) = &server.login {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Mailer {
            transport: builder.build(),
            id_domain: server.from.email.domain().to_string(),
            from: server.from.clone(),
            shown: describe(server),
        })
    }

    /// `smtp.example.com:587 starttls from runbot@example.com`.
    pub fn describe(&self) -> &str {
        &self.shown
    }

    /// The message a page becomes (public so a test or `runbot` tooling can show it).
    pub fn message(&self, to: &str, page: &Page) -> Result<Message, PageError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| PageError::Permanent(format!("{to:?} is not an email address ({e})")))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(one_line(&page.title))
            .message_id(Some(format!("<page-{}@{}>", page.id, self.id_domain)))
            .header(XRunbotPage(page.id.to_string()))
            .header(ContentType::TEXT_PLAIN)
            .body(body(page))
            .map_err(|e| PageError::Permanent(format!("cannot build the email: {e}")))
    }
}

/// What `check-config` shows for `[email]`.
pub fn describe(server: &SmtpServer) -> String {
    let tls = match server.tls {
        SmtpTls::Starttls => "starttls",
        SmtpTls::Tls => "tls",
        SmtpTls::None => "no tls",
    };
    format!(
        "{}:{} {tls} from {}{}",
        server.host,
        server.port,
        server.from.email,
        if server.login.is_some() {
            " (with a login)"
        } else {
            ""
        }
    )
}

/// A subject is one line: a title with a line break (from an alert's labels) must not end the
/// header early, whatever the encoder does with it.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The plain-text body: the summary, then why, for which role, and where to act.
fn body(page: &Page) -> String {
    let mut out = String::with_capacity(page.summary.len() + 256);
    out.push_str(page.summary.trim_end());
    out.push_str("\n\n");
    out.push_str(&format!("Paged: {}\n", page.person));
    if let Some(role) = &page.role {
        out.push_str(&format!("Role: {role}\n"));
    }
    out.push_str(&format!("Why: {}\n", page.reason));
    if let Some(url) = &page.url {
        out.push_str(&format!("Console: {url}\n"));
    }
    out.push_str(&format!("\nrunbot page {}\n", page.id));
    out
}

/// `X-Runbot-Page: <id>`: the page's id, for filters and de-duplication.
#[derive(Debug, Clone)]
struct XRunbotPage(String);

impl Header for XRunbotPage {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Runbot-Page")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// SMTP's verdict as the engine needs it: 5xx (and a message the client refuses to send) will
/// never succeed; 4xx, timeouts, refused connections and TLS trouble may.
fn classify(e: lettre::transport::smtp::Error) -> PageError {
    if e.is_permanent() || e.is_client() {
        PageError::Permanent(e.to_string())
    } else {
        PageError::Temporary {
            reason: e.to_string(),
            retry_after: None,
        }
    }
}

impl Pager for Mailer {
    fn via(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, target: &'a str, page: &'a Page) -> BoxFuture<'a, Result<(), PageError>> {
        Box::pin(async move {
            let message = self.message(target, page)?;
            self.transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(classify)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Page {
        Page {
            id: 42,
            group_id: Some(7),
            severity: Some("sev1".into()),
            title: "Sev1 · APIDown\r\nBcc: evil@example.com".into(),
            summary: "API down".into(),
            person: "Ana".into(),
            role: Some("devops-lead".into()),
            reason: "step 1 of sev1".into(),
            url: None,
        }
    }

    fn mailer() -> Mailer {
        Mailer::new(&SmtpServer {
            host: "127.0.0.1".into(),
            port: 25,
            tls: SmtpTls::None,
            login: None,
            from: "Runbot <runbot@example.com>".parse().unwrap(),
            timeout: std::time::Duration::from_secs(1),
        })
        .unwrap()
    }

    #[test]
    fn a_line_break_in_the_title_adds_no_header() {
        let text = String::from_utf8(
            mailer()
                .message("ana@example.com", &page())
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(!text.lines().any(|l| l.starts_with("Bcc:")), "{text}");
        assert!(text.contains("Message-ID: <page-42@example.com>"), "{text}");
        assert!(text.contains("X-Runbot-Page: 42"), "{text}");
    }

    #[test]
    fn a_target_that_is_no_address_is_refused_for_good() {
        let err = mailer().message("not an address", &page()).unwrap_err();
        assert!(matches!(err, PageError::Permanent(_)), "{err:?}");
    }
}
