//! `GET|POST /login`, `POST /logout`, `GET|POST /setup`: the only console pages open to
//! anonymous callers (besides static assets), and sign-out, which is behind the gate.
//!
//! The sign-in form is protected against login forgery (another site signing a browser in as
//! someone else) by a double-submit token: a random value in a `SameSite=Strict` cookie that
//! only `/login` sees, and the same value in the form; they must match.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout::page;
use crate::chat::console::sessions::{self, cookie_value, random_token, Rules, Started};
use crate::chat::console::signin::{Outcome, SetupOutcome, FIRST_ROLE, WRONG};
use crate::chat::console::{Via, Viewer};
use crate::http::guard::{Caller, FORGED};
use crate::http::AppState;

/// The sign-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "runbot_login";
/// Longest `next` path kept.
const NEXT_MAX: usize = 2048;

/// Routes open to anyone: signing in, and the first-run setup link.
pub fn public_router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/setup", get(setup_page).post(setup))
}

/// Routes behind the gate.
pub fn router() -> Router<AppState> {
    Router::new().route("/logout", post(logout))
}

/// Where to go after signing in: a path on this site, never another site (`//evil`, `/\evil`
/// and absolute URLs are refused); None for anything else.
fn same_site(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= NEXT_MAX
        && !next.bytes().any(|b| b.is_ascii_control() || b == b'\\');
    ok.then_some(next)
}

fn client(caller: Option<Extension<Caller>>) -> String {
    caller
        .and_then(|Extension(c)| c.peer)
        .map_or_else(|| "unknown".into(), |p| p.ip().to_canonical().to_string())
}

/// Pages with credentials in them (a form, the setup token in the URL) are neither cached nor
/// named in a `Referer`.
fn private(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

fn set_cookie(r: &mut Response, cookie: &str) {
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(cookie).expect("cookies are ASCII"),
    );
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(location).expect("a checked path is a header value"),
    );
    r
}

/// Signed in: the session cookie, the form's cookie forgotten, and on to `next`.
fn signed_in(rules: &Rules, session: &Started, next: Option<&str>) -> Response {
    let mut r = see_other(next.and_then(same_site).unwrap_or("/"));
    set_cookie(&mut r, &rules.cookie(&session.cookie));
    set_cookie(&mut r, &login_cookie(rules, ""));
    r
}

fn login_cookie(rules: &Rules, value: &str) -> String {
    format!(
        "{LOGIN_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/login{}{}",
        if value.is_empty() { "; Max-Age=0" } else { "" },
        if rules.secure { "; Secure" } else { "" }
    )
}

/// The form's double-submit value from the request's cookie, if it holds one of ours.
fn login_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie_value(h, LOGIN_COOKIE))
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

fn login_form(token: &str, next: Option<&str>, message: Option<&str>) -> Markup {
    page(
        None,
        "Sign in",
        html! {
            @if let Some(m) = message { p class="error" id="login-error" role="alert" { (m) } }
            form id="login" method="post" action="/login" {
                input type="hidden" name="csrf_token" value=(token);
                @if let Some(n) = next.and_then(same_site) { input type="hidden" name="next" value=(n); }
                p { label { "User name" br; input name="username" autocomplete="username" required autofocus; } }
                p { label { "Password" br; input type="password" name="password" autocomplete="current-password" required; } }
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

/// The form, with its double-submit cookie (the browser's own when it has one).
fn login_response(
    rules: &Rules,
    headers: &HeaderMap,
    status: StatusCode,
    next: Option<&str>,
    message: Option<&str>,
) -> Response {
    let (value, fresh) = match login_value(headers) {
        Some(v) => (v, false),
        None => (random_token(), true),
    };
    let mut r = (status, login_form(&value, next, message)).into_response();
    if fresh {
        set_cookie(&mut r, &login_cookie(rules, &value));
    }
    private(r)
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    login_response(
        &state.signin.rules,
        &headers,
        StatusCode::OK,
        q.next.as_deref(),
        None,
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let rules = &state.signin.rules;
    let next = form.next.as_deref();
    let matches = login_value(&headers)
        .is_some_and(|v| bool::from(v.as_bytes().ct_eq(form.csrf_token.as_bytes())));
    if !matches {
        tracing::warn!("a sign-in was refused: missing or wrong anti-forgery token");
        let message = format!("{FORGED}: reload the page and sign in again");
        return login_response(rules, &headers, StatusCode::FORBIDDEN, next, Some(&message));
    }
    match state
        .signin
        .sign_in(&form.username, &form.password, &client(caller))
        .await
    {
        Ok(Outcome::SignedIn(session)) => {
            // The session this browser held before (another account's, or one someone planted)
            // ends: a sign-in always starts afresh.
            let before = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|h| sessions::cookie_value(h, sessions::COOKIE));
            if let Some(old) = before {
                if let Err(e) = sessions::end(&state.store, &sessions::hash(old)).await {
                    tracing::warn!(error = %e, "could not end the session a browser held before signing in");
                }
            }
            signed_in(rules, &session, next)
        }
        Ok(Outcome::Wrong) => {
            login_response(rules, &headers, StatusCode::UNAUTHORIZED, next, Some(WRONG))
        }
        Ok(Outcome::Locked { retry_after }) => {
            let secs = retry_after.as_secs().max(1);
            let message = format!(
                "too many failed sign-ins for this name or from this address: try again in {}",
                if secs < 120 {
                    format!("{secs} seconds")
                } else {
                    format!("{} minutes", secs.div_ceil(60))
                }
            );
            let mut r = login_response(
                rules,
                &headers,
                StatusCode::TOO_MANY_REQUESTS,
                next,
                Some(&message),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "could not decide a sign-in");
            let mut r = login_response(
                rules,
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                next,
                Some("runbot cannot check sign-ins right now (its database did not answer): try again in a moment"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// `POST /logout`: ends the session (the gate checked its anti-forgery token), forgets the
/// cookie, back to the sign-in page.
async fn logout(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let Via::Session { session, .. } = &viewer.via else {
        return crate::http::error::ApiError::new(
            StatusCode::BAD_REQUEST,
            "sign-out ends a browser's session; a token has none (revoke an API token with `runbot token revoke`)",
        )
        .into_response();
    };
    if let Err(e) = state
        .signin
        .sign_out(&viewer.name, session, &client(caller))
        .await
    {
        tracing::error!(error = %e, "could not end a session");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            page(
                Some(&viewer),
                "Not signed out",
                html! { p { "runbot could not end the session (its database did not answer): try again." } },
            ),
        )
            .into_response();
    }
    let mut r = see_other("/login");
    set_cookie(&mut r, &state.signin.rules.clear_cookie());
    r
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct SetupQuery {
    #[serde(default)]
    token: String,
}

fn setup_form(token: &str, name: &str, message: Option<&str>) -> Markup {
    page(
        None,
        "Create the first account",
        html! {
            p { "This account gets the " code { (FIRST_ROLE) } " role and is signed in. Add more people later with " code { "runbot user add" } "." }
            @if let Some(m) = message { p class="error" id="setup-error" role="alert" { (m) } }
            form id="setup" method="post" action="/setup" {
                input type="hidden" name="token" value=(token);
                p { label { "User name" br; input name="username" value=(name) autocomplete="username" required autofocus; } }
                p { label { "Password (at least 12 characters)" br; input type="password" name="password" autocomplete="new-password" required; } }
                p { label { "Password again" br; input type="password" name="password_again" autocomplete="new-password" required; } }
                p { button type="submit" { "Create and sign in" } }
            }
        },
    )
}

fn setup_refusal(outcome: &SetupOutcome, post: bool) -> Option<Response> {
    let r = match outcome {
        SetupOutcome::AlreadySetUp => (
            if post {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            },
            page(
                None,
                "Already set up",
                html! { p id="setup-done" { "runbot has a console account already, so this link does nothing. " a href="/login" { "Sign in" } " instead; " code { "runbot user add" } " makes more accounts." } },
            ),
        ),
        SetupOutcome::BadToken => (
            StatusCode::NOT_FOUND,
            page(
                None,
                "Not a setup link",
                html! { p id="setup-invalid" { "This setup link is not valid: it was used already, or runbot restarted since it was printed. While no account exists, runbot prints a new one in its log at every start; " code { "runbot user add NAME --role devops-lead" } " also makes an account." } },
            ),
        ),
        _ => return None,
    };
    Some(private(r.into_response()))
}

fn unavailable_page(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "could not run the setup link");
    private(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            page(
                None,
                "Try again",
                html! { p { "runbot cannot do this right now (its database did not answer): try again in a moment." } },
            ),
        )
            .into_response(),
    )
}

async fn setup_page(State(state): State<AppState>, Query(q): Query<SetupQuery>) -> Response {
    match state.signin.setup_state(&q.token).await {
        Ok(outcome) => setup_refusal(&outcome, false)
            .unwrap_or_else(|| private(setup_form(&q.token, "", None).into_response())),
        Err(e) => unavailable_page(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_again: String,
}

async fn setup(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Form(form): Form<SetupForm>,
) -> Response {
    let outcome = state
        .signin
        .setup(
            &form.token,
            &form.username,
            &form.password,
            &form.password_again,
            &client(caller),
        )
        .await;
    match outcome {
        Ok(SetupOutcome::Done { session, .. }) => signed_in(&state.signin.rules, &session, None),
        Ok(SetupOutcome::Invalid(message)) => private(
            (
                StatusCode::BAD_REQUEST,
                setup_form(&form.token, &form.username, Some(&message)),
            )
                .into_response(),
        ),
        Ok(other) => setup_refusal(&other, true).expect("a refusal"),
        Err(e) => unavailable_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_path_on_this_site_or_nothing() {
        assert_eq!(same_site("/groups/4?x=1"), Some("/groups/4?x=1"));
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "evil",
            "",
            "/a\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(same_site(bad), None, "{bad:?}");
        }
        assert_eq!(same_site(&format!("/{}", "a".repeat(NEXT_MAX))), None);
    }
}
