//! What every request passes before a route sees it: the `Host` check, who counts as a local
//! caller, the body's deadline, and the console's gate.
//!
//! "The caller is on this machine" is only worth something when it is true of the person behind
//! the request. It is not when a proxy on the same host forwards to runbot (every caller then
//! comes from 127.0.0.1), nor when a web page in a local browser resolves its own name to
//! 127.0.0.1 (DNS rebinding: the browser sends that page's name as `Host`). So a caller is
//! local only when it connects from loopback, names runbot by a loopback name in `Host`, and
//! carries no header a proxy adds. And once runbot takes Discord interactions, it is reachable
//! from the internet (through a proxy that may add no header at all), so nobody is local then.
//! Only the webhook without credentials trusts a local caller; the console trusts nobody for
//! where they are: it needs a session or a token from every caller ([`console_gate`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::chat::console::{sessions, tokens, Via, Viewer};
use crate::config::{HostPattern, Parsed};

/// Who sent a request, as far as runbot can tell; every request carries one.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub peer: Option<SocketAddr>,
    /// On this machine, and neither forwarded nor rebound (see the module's doc).
    pub local: bool,
}

/// Headers a reverse proxy or CDN adds: a request that carries one came from somewhere else.
/// (nginx adds none unless told to, so a proxy on this host must send `X-Forwarded-For`, or
/// pass the public name as `Host`: see the security docs.)
static FORWARDED: [HeaderName; 10] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("via"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("x-original-forwarded-for"),
];

/// The `Host` values runbot answers to, and its loopback names.
#[derive(Debug)]
pub struct HostGuard {
    /// None: any host (a public listener without `http.allowed_hosts`).
    allowed: Option<Vec<HostPattern>>,
    loopback: Vec<HostPattern>,
    /// False when runbot is reachable from the internet (it takes Discord interactions).
    trust_local: bool,
}

impl HostGuard {
    /// `port` is the port runbot listens on (the bound one, when `listen` asked for port 0);
    /// `exposed`: runbot takes requests from the internet, so no caller counts as local.
    pub fn new(settings: &Parsed, port: u16, exposed: bool) -> HostGuard {
        let loopback: Vec<HostPattern> = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| HostPattern {
                host: h.to_string(),
                port: Some(port),
            })
            .collect();
        let allowed = match &settings.allowed_hosts {
            Some(list) => Some(list.clone()),
            None if settings.loopback_only() => Some(loopback.clone()),
            None => None,
        };
        HostGuard {
            allowed,
            loopback,
            trust_local: !exposed,
        }
    }

    /// The request's `Host` (or the authority of an absolute-form target), split.
    fn host_of(req: &Request) -> Option<(&str, Option<u16>)> {
        let raw = match req.headers().get(header::HOST) {
            Some(v) => v.to_str().ok()?,
            None => req.uri().authority()?.as_str(),
        };
        HostPattern::split(raw)
    }
}

/// What the edge of the HTTP server checks, from settings. Its own small state, apart from
/// [`AppState`]: a middleware's state is cloned for every request.
#[derive(Debug)]
pub struct Edge {
    pub hosts: HostGuard,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
    /// `console.token`: opens the console and `/api/*` to scripts (reads only).
    pub console_token: Option<SecretString>,
    /// How long console sessions live, and their cookies.
    pub sessions: sessions::Rules,
    /// `http.max_body_bytes`: the most the gate reads of a form to find its anti-forgery token.
    pub max_body_bytes: usize,
    /// `http.metrics_token`: `/metrics` only with it; None: open, as Prometheus expects.
    pub metrics_token: Option<SecretString>,
    /// Where API tokens are checked.
    pub store: crate::store::Store,
}

/// Every request: refuses a `Host` runbot does not answer to, tags the request with its
/// [`Caller`], and gives its body a deadline.
pub async fn edge(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    if let Some(refused) = check_host(&edge.hosts, &mut req) {
        return refused;
    }
    body_deadline(edge.body_timeout, req, next).await
}

/// The refusal of a `Host` runbot does not answer to; else tags the request with its
/// [`Caller`].
fn check_host(guard: &HostGuard, req: &mut Request) -> Option<Response> {
    let host = HostGuard::host_of(req);
    if let Some(allowed) = &guard.allowed {
        let ok = host.is_some_and(|(h, p)| allowed.iter().any(|a| a.matches(h, p)));
        if !ok {
            let shown: String = req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(100)
                .collect();
            tracing::warn!(host = %shown, "request refused: Host is not one runbot answers to");
            return Some(
                ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "Host {shown:?} is not one runbot answers to: add it to http.allowed_hosts"
                    ),
                )
                .into_response(),
            );
        }
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(p)| *p);
    let local = guard.trust_local
        && peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
        && host.is_some_and(|(h, p)| guard.loopback.iter().any(|l| l.matches(h, p)))
        && !FORWARDED.iter().any(|h| req.headers().contains_key(h));
    req.extensions_mut().insert(Caller { peer, local });
    None
}

/// Why a body stopped arriving.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// A body that fails once its deadline passes, so a client sending a byte now and then cannot
/// hold a handler (and a connection) for as long as it likes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives a request's body `http.body_timeout_secs` from the moment its headers arrived; a body
/// still arriving then gets 408, whatever the route would have said about the broken body.
async fn body_deadline(timeout: Duration, req: Request, next: Next) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let fired = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            fired: fired.clone(),
        })
    });
    let response = next.run(req).await;
    if fired.load(Ordering::Relaxed) {
        tracing::warn!(
            secs = timeout.as_secs(),
            "request refused: its body did not arrive in time"
        );
        let mut r = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s (http.body_timeout_secs)",
                timeout.as_secs()
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    response
}

/// What an `Authorization` header presents, parsed once for every route that checks one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    Missing,
    /// `Bearer TOKEN`: the token's bytes.
    Bearer(Vec<u8>),
    /// `Basic …`: the decoded `user:password` (empty when it was not base64).
    Basic(Vec<u8>),
    /// Another scheme.
    Other,
}

pub(crate) fn presented(headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Presented::Missing;
    };
    let value = value.as_bytes();
    let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
        None => (value, &b""[..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        Presented::Bearer(rest.to_vec())
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        Presented::Basic(
            base64::engine::general_purpose::STANDARD
                .decode(rest)
                .unwrap_or_default(),
        )
    } else {
        Presented::Other
    }
}

/// Whether `headers` carry the console token: `Authorization: Bearer TOKEN`, or, when `basic`
/// (a request that changes nothing), basic auth with TOKEN as the password.
fn carries_token(headers: &HeaderMap, token: &SecretString, basic: bool) -> bool {
    let password = match presented(headers) {
        Presented::Bearer(t) => t,
        Presented::Basic(decoded) if basic => match decoded.iter().position(|b| *b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => return false,
        },
        Presented::Basic(_) | Presented::Missing | Presented::Other => return false,
    };
    bool::from(password.ct_eq(token.expose_secret().as_bytes()))
}

/// The console and its JSON API show every alert's labels, annotations and silences, and take
/// commands: everything behind this gate needs a signed-in session (the `runbot_session`
/// cookie), an API token (`Authorization: Bearer rbt_…`, on `/api/*` only) or `console.token`.
/// Being on this machine is no credential here. Anonymous pages are sent to `/login`, anonymous
/// API calls get 401. A change (any method but GET and HEAD) made with a session must carry the
/// session's anti-forgery token, as `X-CSRF-Token` or the form field `csrf_token`: a browser
/// sends the cookie with a request another site makes it send, but that site cannot know the
/// token. Puts the [`Viewer`] on the request.
pub async fn console_gate(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    // Scripts: an API token (`runbot token create`) opens /api/*, not the pages.
    if api {
        if let Presented::Bearer(t) = presented(req.headers()) {
            if tokens::looks_like_one(&t) {
                return match tokens::check(&edge.store, &t).await {
                    Ok(Some(row)) => {
                        req.extensions_mut().insert(Viewer {
                            roles: serde_json::from_str(&row.roles).unwrap_or_default(),
                            name: row.name,
                            via: Via::ApiToken { id: row.id },
                        });
                        next.run(req).await
                    }
                    Ok(None) => unauthorized(
                        "invalid or revoked API token: `runbot token list` shows those in use, `runbot token create` makes one",
                        "Bearer realm=\"runbot api\"",
                    ),
                    // Fail closed: a token that cannot be checked opens nothing.
                    // Counted with every answer, by its status (503).
                    Err(e) => {
                        tracing::warn!(error = %e, "could not check an API token");
                        unavailable("cannot check the API token now: the database did not answer; try again")
                    }
                };
            }
        }
    }
    if let Some(token) = &edge.console_token {
        // Basic auth is what a browser sends by itself once it has the password, to any site's
        // request: good enough to read, never to change anything.
        if carries_token(req.headers(), token, safe) {
            // It reads everything and acts as nobody: refused here for every change, so no
            // route has to remember to refuse it. (A method no route takes gets its 405.)
            let changes = matches!(
                *req.method(),
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            );
            if changes {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "console.token can read the console but acts as nobody: sign in, or use an API token (runbot token create)",
                )
                .into_response();
            }
            req.extensions_mut().insert(Viewer {
                name: "console.token".into(),
                roles: Vec::new(),
                via: Via::ConsoleToken,
            });
            return next.run(req).await;
        }
    }
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| sessions::cookie_value(h, sessions::COOKIE))
        .map(str::to_string);
    if let Some(cookie) = cookie {
        match sessions::check(&edge.store, &edge.sessions, &cookie, chrono::Utc::now()).await {
            Ok(Some(live)) => {
                let req = if safe {
                    req
                } else {
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default();
                    let method = crate::telemetry::method_label(req.method());
                    match carries_csrf(req, &live.csrf, edge.max_body_bytes).await {
                        Ok(req) => req,
                        Err(refused) => {
                            if refused.status() == StatusCode::FORBIDDEN {
                                audit_forged(&edge.store, &live.account, method, &route).await;
                            }
                            return refused;
                        }
                    }
                };
                let mut req = req;
                req.extensions_mut().insert(Viewer {
                    name: live.account,
                    roles: live.roles,
                    via: Via::Session {
                        session: live.id_hash,
                        csrf: live.csrf,
                    },
                });
                return next.run(req).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not check a console session");
                return unavailable(
                    "cannot check the session now: the database did not answer; try again",
                );
            }
        }
    }
    if api {
        unauthorized(
            "sign in at /login, or send an API token (`runbot token create`) as `Authorization: Bearer …`",
            "Bearer realm=\"runbot api\"",
        )
    } else {
        to_login(&req)
    }
}

/// 503 for a check the database could not answer: the caller may retry, nothing was let in.
fn unavailable(message: &'static str) -> Response {
    let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// 303 to the sign-in page, which comes back to this page (a GET) once signed in.
fn to_login(req: &Request) -> Response {
    let mut location = String::from("/login");
    if req.method() == Method::GET {
        if let Some(pq) = req.uri().path_and_query() {
            if pq.as_str() != "/" {
                location.push_str("?next=");
                location.extend(percent_encoding::utf8_percent_encode(
                    pq.as_str(),
                    percent_encoding::NON_ALPHANUMERIC,
                ));
            }
        }
    }
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("percent-encoded text is a header value"),
    );
    r
}

/// The request, if it carries `csrf` as `X-CSRF-Token` or as the form field `csrf_token`;
/// else the 403 that refuses it. A form's body is read (within `http.max_body_bytes`) and put
/// back for the route.
async fn carries_csrf(req: Request, csrf: &str, max_body: usize) -> Result<Request, Response> {
    let same = |v: &[u8]| bool::from(v.ct_eq(csrf.as_bytes()));
    let api = req.uri().path().starts_with("/api/");
    if let Some(v) = req.headers().get(CSRF_HEADER) {
        return if same(v.as_bytes()) {
            Ok(req)
        } else {
            Err(forged(api))
        };
    }
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(forged(api));
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, max_body).await {
        Ok(b) => b,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is larger than http.max_body_bytes, or did not arrive in time",
            )
            .into_response())
        }
    };
    let ok = url::form_urlencoded::parse(&bytes)
        .filter(|(k, _)| k == "csrf_token")
        .map(|(_, v)| same(v.as_bytes()))
        .next()
        .unwrap_or(false);
    if ok {
        Ok(Request::from_parts(parts, Body::from(bytes)))
    } else {
        Err(forged(api))
    }
}

/// A change refused for its anti-forgery token is written to the audit trail: it is what a
/// forged request from another site looks like. The route is the matched pattern (runbot's
/// own text), never the path as sent.
async fn audit_forged(store: &crate::store::Store, account: &str, method: &str, route: &str) {
    let entry = crate::audit::AuditEntry::new(
        uuid::Uuid::new_v4().simple().to_string(),
        crate::audit::Step::Denied,
        crate::request::Platform::Console,
        account,
        account,
        "request",
    )
    .reason(FORGED)
    .detail(serde_json::json!({ "method": method, "route": route }));
    if let Err(e) = crate::audit::Audit::new(store.clone()).append(entry).await {
        tracing::error!(error = %e, "could not audit a request refused for its anti-forgery token");
    }
}

/// The header a page's script sends its anti-forgery token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// What a change without the right anti-forgery token is told.
pub const FORGED: &str = "missing or wrong anti-forgery token";

/// 403 for a change without the session's anti-forgery token: JSON for the API, a page else.
fn forged(api: bool) -> Response {
    tracing::warn!("a change was refused: missing or wrong anti-forgery token");
    if api {
        return ApiError::new(StatusCode::FORBIDDEN, FORGED).into_response();
    }
    let page = super::console::layout::page(
        None,
        "Refused",
        maud::html! {
            p { (FORGED) ": nothing was changed. Reload the page and try again." }
        },
    );
    (StatusCode::FORBIDDEN, page).into_response()
}

/// What every console answer carries: nothing from elsewhere may load or frame it, nothing is
/// kept by caches (it shows alerts and who did what), and a page runs only runbot's own script
/// and stylesheet (no inline script or style: an injected one would not run).
pub async fn console_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    response
}

/// `/metrics` when `http.metrics_token` is set: only for `Authorization: Bearer TOKEN`, as
/// Prometheus sends it with `authorization: { credentials: … }` in its scrape config.
pub async fn metrics_gate(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    let Some(token) = &edge.metrics_token else {
        return next.run(req).await;
    };
    match presented(req.headers()) {
        Presented::Bearer(t) if bool::from(t.ct_eq(token.expose_secret().as_bytes())) => {
            next.run(req).await
        }
        _ => unauthorized(
            "/metrics needs http.metrics_token as a bearer token (Prometheus: authorization.credentials in the scrape config)",
            "Bearer realm=\"runbot metrics\"",
        ),
    }
}

/// 401 with what to send, and the challenge that tells a client (or a browser) how.
fn unauthorized(message: &'static str, challenge: &'static str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn one_parser_reads_every_authorization_header() {
        assert_eq!(presented(&HeaderMap::new()), Presented::Missing);
        assert_eq!(
            presented(&with("bearer  s3cret ")),
            Presented::Bearer(b"s3cret".to_vec())
        );
        // "am:pass word" in base64.
        assert_eq!(
            presented(&with("Basic YW06cGFzcyB3b3Jk")),
            Presented::Basic(b"am:pass word".to_vec())
        );
        assert_eq!(presented(&with("Basic !!!")), Presented::Basic(Vec::new()));
        assert_eq!(presented(&with("Digest x")), Presented::Other);
        let token = SecretString::from("console-token-0123456789");
        assert!(carries_token(
            &with("Bearer console-token-0123456789"),
            &token,
            false
        ));
        // A browser's basic auth: any user, the token as the password; only to read.
        let basic = with("Basic eDpjb25zb2xlLXRva2VuLTAxMjM0NTY3ODk=");
        assert!(carries_token(&basic, &token, true));
        assert!(!carries_token(&basic, &token, false));
        assert!(!carries_token(&with("Bearer console-token"), &token, true));
        assert!(!carries_token(&with("Basic !!!"), &token, true));
    }
}
