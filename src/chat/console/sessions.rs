//! Console sessions: what a signed-in browser holds, and the rules that end it.
//!
//! The cookie `runbot_session` carries 32 random bytes (64 hex digits); the database keeps only
//! their SHA-256, so whoever reads the database cannot sign in as anyone (the value has 256
//! random bits, so a fast hash is as good as a slow one, and every request checks one). Each
//! session has its own anti-forgery token, which its pages carry and every change sends back.
//!
//! A session ends at sign-out, as soon as its account is disabled (the account is read with the
//! session at every request), after `console.session_idle_minutes` without a request, and
//! `console.session_max_hours` after sign-in. `last_seen_at` moves at most once a minute, so a
//! busy page costs one write a minute, not one per request; the idle limit is exact to that
//! minute.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::ConsoleSettings;
use crate::domain::text::hex;
use crate::domain::{format_time, parse_stored_time};
use crate::store::Store;

/// The session cookie's name.
pub const COOKIE: &str = "runbot_session";
/// How often a session's `last_seen_at` is written, at most.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// 32 random bytes as 64 lowercase hex digits: a session cookie, an anti-forgery token.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// The SHA-256 of a cookie value, hex: what the database keeps.
pub fn hash(cookie: &str) -> String {
    hex(&Sha256::digest(cookie.as_bytes()))
}

/// Whether `value` is shaped like a cookie runbot made (64 lowercase hex digits).
fn well_formed(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How long sessions live, from `[console]`.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub idle: chrono::Duration,
    pub max: chrono::Duration,
    /// Cookies carry `Secure` (off only with `console.insecure_cookies`).
    pub secure: bool,
    /// How often a live stream checks its session (`console.stream_recheck_secs`).
    pub recheck: std::time::Duration,
}

impl Rules {
    pub fn from_settings(s: &ConsoleSettings) -> Rules {
        Rules {
            idle: chrono::Duration::minutes(s.session_idle_minutes as i64),
            max: chrono::Duration::hours(s.session_max_hours as i64),
            secure: !s.insecure_cookies,
            recheck: std::time::Duration::from_secs(s.stream_recheck_secs),
        }
    }

    /// The `Set-Cookie` value that gives a browser `value` as its session.
    pub fn cookie(&self, value: &str) -> String {
        format!(
            "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            self.max.num_seconds(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that makes a browser forget its session.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// A session just started: the cookie's value goes to the browser once, then only its hash is
/// known.
pub struct Started {
    pub cookie: String,
    pub id_hash: String,
    pub csrf: String,
}

/// A live session, as the gate found it.
#[derive(Debug, Clone)]
pub struct Live {
    pub id_hash: String,
    pub account: String,
    pub roles: Vec<String>,
    pub csrf: String,
}

/// Starts a session for `account` (already checked).
pub async fn start(store: &Store, account: &str) -> Result<Started, sqlx::Error> {
    let cookie = random_token();
    let started = Started {
        id_hash: hash(&cookie),
        csrf: random_token(),
        cookie,
    };
    store
        .add_session(
            &started.id_hash,
            account,
            &started.csrf,
            &format_time(Utc::now()),
        )
        .await?;
    Ok(started)
}

/// The live session a cookie value opens, if any; touches it when its last sight is a minute
/// old. A database error is an error, never a yes.
pub async fn check(
    store: &Store,
    rules: &Rules,
    cookie: &str,
    now: DateTime<Utc>,
) -> Result<Option<Live>, sqlx::Error> {
    if !well_formed(cookie) {
        return Ok(None);
    }
    check_hash(store, rules, &hash(cookie), now, true).await
}

/// The live session stored as `id_hash`, if any. `touch`: the person did something now (a
/// request), which keeps the session from going idle; a live stream following the feed checks
/// without touching, so a page left open still ends when its session does.
pub async fn check_hash(
    store: &Store,
    rules: &Rules,
    id_hash: &str,
    now: DateTime<Utc>,
    touch: bool,
) -> Result<Option<Live>, sqlx::Error> {
    let Some(row) = store.session(id_hash).await? else {
        return Ok(None);
    };
    if row.ended_at.is_some() || row.disabled_at.is_some() {
        return Ok(None);
    }
    // A time that cannot be read ends the session: it proves nothing.
    let (Some(created), Some(seen)) = (
        parse_stored_time(&row.created_at),
        parse_stored_time(&row.last_seen_at),
    ) else {
        return Ok(None);
    };
    if now - seen > rules.idle || now - created > rules.max {
        // Recorded, so the row says when it stopped counting, whatever the settings say later.
        store.end_session(&row.id_hash, &format_time(now)).await?;
        return Ok(None);
    }
    if touch && now - seen >= TOUCH_EVERY {
        store.touch_session(&row.id_hash, &format_time(now)).await?;
    }
    Ok(Some(Live {
        // Roles the account no longer parses as a list are none: they open nothing.
        roles: serde_json::from_str(&row.roles).unwrap_or_default(),
        id_hash: row.id_hash,
        account: row.account,
        csrf: row.csrf,
    }))
}

/// Ends a session (sign-out); false when it had ended already.
pub async fn end(store: &Store, id_hash: &str) -> Result<bool, sqlx::Error> {
    store.end_session(id_hash, &format_time(Utc::now())).await
}

/// A cookie's value from a `Cookie` header (`a=1; b=2`), if the header names it once; a cookie
/// named twice (one set by a sibling site for the same host, say) counts as none.
pub fn cookie_value<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    let mut found = None;
    for pair in header.split(';') {
        let Some((k, v)) = pair.trim().split_once('=') else {
            continue;
        };
        if k.trim() == name {
            if found.is_some() {
                return None;
            }
            found = Some(v.trim().trim_matches('"'));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_random_hex_and_kept_only_as_their_hash() {
        let a = random_token();
        assert!(well_formed(&a), "{a}");
        assert_ne!(a, random_token());
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
        assert!(!well_formed(&a.to_uppercase()));
        assert!(!well_formed(&a[1..]));
    }

    #[test]
    fn the_cookie_header_is_read_for_one_name_once() {
        let h = "theme=dark; runbot_session=abc; other=\"x\"";
        assert_eq!(cookie_value(h, COOKIE), Some("abc"));
        assert_eq!(cookie_value(h, "other"), Some("x"));
        assert_eq!(cookie_value(h, "missing"), None);
        assert_eq!(
            cookie_value("runbot_session=a; runbot_session=b", COOKIE),
            None
        );
    }

    #[test]
    fn cookies_say_secure_unless_told_otherwise() {
        let mut s = ConsoleSettings::default();
        let c = Rules::from_settings(&s).cookie("v");
        assert!(c.starts_with("runbot_session=v; HttpOnly; SameSite=Strict; Path=/"));
        assert!(c.ends_with("; Secure"), "{c}");
        s.insecure_cookies = true;
        assert!(!Rules::from_settings(&s).cookie("v").contains("Secure"));
        assert!(Rules::from_settings(&s)
            .clear_cookie()
            .contains("Max-Age=0"));
    }
}
