//! Secrets out of text that runbot shows in chat. Log lines carry database URLs, tokens and
//! keys more often than anyone intends, and a chat channel keeps them forever.
//!
//! [`redact`] masks one piece of text; [`Redactor`] masks the lines of one stream in order,
//! because a PEM private key spans lines and only its first and last say what it is;
//! [`shown_url`] is how runbot shows a URL it was configured with or talks to.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// How a match is rewritten: a template (`${name}` keeps a group) or a function.
enum With {
    Template(String),
    Function(fn(&Captures) -> String),
}

/// A header value as it appears in a log line: quoted (JSON, a Python dict) up to its closing
/// quote, else the rest of the line (a Digest or AWS4 value holds spaces and commas).
const HEADER_VALUE: &str =
    r#"(?:"(?P<dq>(?:[^"\\\r\n]|\\.)+)"|'(?P<sq>(?:[^'\\\r\n]|\\.)+)'|(?P<bare>[^\s"'][^\r\n]*))"#;

/// The value of a header [`HEADER_VALUE`] matched, and the quote around it.
fn header_value<'c>(c: &'c Captures) -> (&'c str, &'static str) {
    if let Some(v) = c.name("dq") {
        (v.as_str(), "\"")
    } else if let Some(v) = c.name("sq") {
        (v.as_str(), "'")
    } else {
        (c.name("bare").map_or("", |v| v.as_str()), "")
    }
}

/// `Authorization: SCHEME CREDENTIALS` keeps the scheme, whichever it is (Bearer, Basic,
/// Token, Digest, AWS4-HMAC-SHA256, ApiKey, …), and masks everything after it.
fn authorization(c: &Captures) -> String {
    let (value, quote) = header_value(c);
    let scheme = value
        .split_once(char::is_whitespace)
        .filter(|(s, rest)| {
            !rest.trim().is_empty()
                && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(|(s, _)| s);
    match scheme {
        Some(s) => format!("{}{quote}{s} {MASK}{quote}", &c["k"]),
        None => format!("{}{quote}{MASK}{quote}", &c["k"]),
    }
}

/// A cookie header: every cookie in it may be a session, so all of its value goes.
fn whole_value(c: &Captures) -> String {
    let (_, quote) = header_value(c);
    format!("{}{quote}{MASK}{quote}", &c["k"])
}

/// The first and last line of a PEM private key (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP, …).
const PEM_BEGIN: &str = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z0-9 ]*-----";
const PEM_END: &str = r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z0-9 ]*-----";

static BEGIN: LazyLock<Regex> = LazyLock::new(|| Regex::new(PEM_BEGIN).expect("compiles"));
static END: LazyLock<Regex> = LazyLock::new(|| Regex::new(PEM_END).expect("compiles"));

/// Masks the body of every PEM private key in `text`, keeping its first and last line: over
/// several lines of one text, or on one line with `\n` escapes (JSON). A key without its end
/// (cut off) loses everything after its start.
fn mask_keys(text: &str) -> Cow<'_, str> {
    let Some(first) = BEGIN.find(text) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut at = 0;
    let mut next = Some(first);
    while let Some(begin) = next {
        out.push_str(&text[at..begin.end()]);
        let end = END.find_at(text, begin.end());
        let body_end = end.map_or(text.len(), |e| e.start());
        if body_end > begin.end() {
            out.push_str(MASK);
            changed = true;
        }
        at = body_end;
        next = end.and_then(|e| BEGIN.find_at(text, e.end()));
    }
    out.push_str(&text[at..]);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// (pattern, replacement): each keeps what names the secret and masks the secret itself.
static PATTERNS: LazyLock<Vec<(Regex, With)>> = LazyLock::new(|| {
    let keep = |group: &str| With::Template(format!("${{{group}}}{MASK}"));
    let mask = || With::Template(MASK.to_string());
    [
        // scheme://user:SECRET@host (the user may be empty: redis://:SECRET@host)
        (
            r"(?i)(?P<k>\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@".into(),
            With::Template(format!("${{k}}{MASK}@")),
        ),
        // Authorization and Proxy-Authorization headers, any scheme.
        (
            format!(r#"(?i)(?P<k>\b(?:proxy-)?authorization\\?["']?\s*[:=]\s*\\?){HEADER_VALUE}"#),
            With::Function(authorization),
        ),
        // Cookie and Set-Cookie headers.
        (
            format!(r#"(?i)(?P<k>\b(?:set-)?cookie\\?["']?\s*[:=]\s*\\?){HEADER_VALUE}"#),
            With::Function(whole_value),
        ),
        // Bearer TOKEN, wherever it appears.
        (
            r"(?i)(?P<k>\bbearer\s+)[A-Za-z0-9._~+/=-]+".into(),
            keep("k"),
        ),
        // Headers named like keys: X-Api-Key, X-Functions-Key, X-Vault-Token, X-Auth, …
        (
            r#"(?i)(?P<k>\b[a-z0-9-]*-(?:key|token|secret|auth)\\?["']?\s*:\s*\\?["']?)[^\s"',;]+"#
                .into(),
            keep("k"),
        ),
        // password=…, "api_key": "…", DB_PASSWORD: …, aws_secret_access_key=…
        (
            r#"(?i)(?P<k>[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|auth[_-]?key|credential|signature|session[_-]?(?:id|key))[a-z0-9_.-]*"?\s*[=:]\s*"?)[^\s"',;&]+"#
                .into(),
            keep("k"),
        ),
        // SQL: CREATE/ALTER ROLE … PASSWORD 'secret' (queries /db shows from pg_stat_activity).
        (r"(?i)(?P<k>\bpassword\s+)'(?:[^']|'')*'".into(), keep("k")),
        // JSON Web Tokens, wherever they appear.
        (
            r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+".into(),
            mask(),
        ),
        // AWS access key ids.
        (
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b".into(),
            mask(),
        ),
        // GitHub and Slack tokens.
        (
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,})"
                .into(),
            mask(),
        ),
        // Stripe secret and restricted keys, live and test (test keys read the test account's
        // data and leak with the live ones), and webhook signing secrets. Publishable keys
        // (`pk_…`) are public by design: shown, they help debugging.
        (
            r"\b(?P<k>(?:sk|rk)_(?:live|test)_)[A-Za-z0-9]{8,}".into(),
            keep("k"),
        ),
        (r"\b(?P<k>whsec_)[A-Za-z0-9+/=]{16,}".into(), keep("k")),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(&p).expect("the secret patterns compile"), r))
    .collect()
});

/// `text` with every known kind of secret masked; borrowed when there was none.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = mask_keys(text);
    for (re, with) in PATTERNS.iter() {
        let replaced = match with {
            With::Template(t) => re.replace_all(&out, t.as_str()),
            With::Function(f) => re.replace_all(&out, |c: &Captures| f(c)),
        };
        if let Cow::Owned(s) = replaced {
            out = Cow::Owned(s);
        }
    }
    out
}

/// Lines of a key body masked before its end shows up: more than any real key takes (an
/// RSA-16384 key is about 200 lines), so a key printed without its end does not hide the rest
/// of the log.
const MAX_KEY_LINES: usize = 400;

/// Masks the lines of one stream (a container's log), in order. Unlike [`redact`] it
/// remembers being inside a PEM private key, so the key's body lines are masked too.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Body lines masked so far, while inside a key.
    in_key: Option<usize>,
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// `line` with its secrets masked; borrowed when there was none.
    pub fn line<'a>(&mut self, line: &'a str) -> Cow<'a, str> {
        if let Some(n) = self.in_key {
            return match END.find(line) {
                Some(end) => {
                    self.in_key = None;
                    let (before, marker) = (&line[..end.start()], &line[..end.end()]);
                    match self.line(&line[end.end()..]) {
                        Cow::Borrowed(_) if before.trim().is_empty() => Cow::Borrowed(line),
                        rest if before.trim().is_empty() => Cow::Owned(format!("{marker}{rest}")),
                        rest => Cow::Owned(format!("{MASK}{}{rest}", end.as_str())),
                    }
                }
                None => {
                    self.in_key = (n + 1 < MAX_KEY_LINES).then_some(n + 1);
                    Cow::Owned(MASK.into())
                }
            };
        }
        // A key starts here and does not end on this line.
        if let Some(begin) = BEGIN.find_iter(line).last() {
            if !END.is_match(&line[begin.end()..]) {
                self.in_key = Some(0);
            }
        }
        redact(line)
    }
}

/// Masks the lines of one stream, oldest first, in place; says which lines changed. Also
/// masks the body of a key whose first line is not among them (a log's tail cut into it): the
/// lines that look like key material before its last line.
pub fn redact_lines(lines: &mut [String]) -> Vec<bool> {
    let mut r = Redactor::new();
    let mut masked = vec![false; lines.len()];
    let mut seen_begin = false;
    for i in 0..lines.len() {
        let orphan_end = !seen_begin && r.in_key.is_none() && END.is_match(&lines[i]);
        seen_begin |= BEGIN.is_match(&lines[i]);
        if let Cow::Owned(s) = r.line(&lines[i]) {
            lines[i] = s;
            masked[i] = true;
        }
        if orphan_end {
            for j in (0..i).rev().take(MAX_KEY_LINES) {
                if masked[j] || !looks_like_key_material(&lines[j]) {
                    break;
                }
                lines[j] = MASK.into();
                masked[j] = true;
            }
        }
    }
    masked
}

/// A line of a PEM body: base64, or one of the headers of an encrypted key.
fn looks_like_key_material(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("Proc-Type:")
        || t.starts_with("DEK-Info:")
        || (!t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='))
}

/// Secret-looking query parameters: their values are masked in shown URLs.
static SECRET_QUERY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?P<k>[?&;][^=&#]*(?:pass|pwd|secret|token|key|sig|auth|credential|session|code)[^=&#]*=)[^&#]*",
    )
    .expect("compiles")
});

/// A URL fit to show in chat, the audit trail or a log: without its userinfo (`user:pass@`),
/// with secret-looking query values masked and any other known secret masked. Works on text
/// that does not parse as a URL too, since that is where a typo in a setting ends up.
pub fn shown_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host_start = rest[..authority_end].rfind('@').map_or(0, |i| i + 1);
    let stripped = format!("{}{}", &url[..start], &rest[host_start..]);
    let masked = SECRET_QUERY.replace_all(&stripped, format!("${{k}}{MASK}").as_str());
    redact(&masked).into_owned()
}

/// A failed HTTP request in words, without the URL reqwest puts in its message (it may hold a
/// key in its query, or credentials after a redirect): callers name the URL with [`shown_url`].
/// The innermost cause says the most ("Connection refused", "dns error: …").
pub fn request_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    redact(&why).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_what_names_them_is_kept() {
        let cases = [
            (
                "connecting to postgres://app:hunter2@db/app",
                "connecting to postgres://app:***@db/app",
            ),
            (
                "REDIS_URL=redis://:s3cr3t@redis:6379/0",
                "REDIS_URL=redis://:***@redis:6379/0",
            ),
            (
                "cache settings: host=redis password=hunter2 ttl=300",
                "cache settings: host=redis password=*** ttl=300",
            ),
            ("DB_PASSWORD: hunter2", "DB_PASSWORD: ***"),
            (
                "ALTER ROLE app PASSWORD 'it''s hunter2'",
                "ALTER ROLE app PASSWORD ***",
            ),
            (
                r#"{"level":"info","api_key": "abc123","user":"ana"}"#,
                r#"{"level":"info","api_key": "***","user":"ana"}"#,
            ),
            (
                "GET /cb?access_token=abc.def&page=2",
                "GET /cb?access_token=***&page=2",
            ),
            (
                "Authorization: Bearer abc.DEF-123_x",
                "Authorization: Bearer ***",
            ),
            (
                "Authorization: Basic YXBwOmh1bnRlcjI=",
                "Authorization: Basic ***",
            ),
            (
                "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key=***",
            ),
            ("key id AKIAIOSFODNN7EXAMPLE used", "key id *** used"),
            (
                "session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl ok",
                "session *** ok",
            ),
            (
                "cloned with ghp_abcdefghijklmnopqrstuvwxyz0123",
                "cloned with ***",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
    }

    #[test]
    fn authorization_headers_keep_their_scheme_whatever_it_is() {
        let cases = [
            ("> Authorization: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "> Authorization: Token ***"),
            (
                r#"Authorization: Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e", response="6629fae49393a05397450978507c4ef1""#,
                "Authorization: Digest ***",
            ),
            (
                "authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
                "authorization: AWS4-HMAC-SHA256 ***",
            ),
            ("AUTHORIZATION=ApiKey c2VjcmV0LWtleQ==", "AUTHORIZATION=ApiKey ***"),
            ("Authorization: s3cr3t-without-a-scheme", "Authorization: ***"),
            (
                "Proxy-Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l",
                "Proxy-Authorization: Basic ***",
            ),
            (
                r#"{"headers":{"authorization":"Digest username=\"ana\", response=\"6629fae4\"","host":"api"}}"#,
                r#"{"headers":{"authorization":"Digest ***","host":"api"}}"#,
            ),
            (
                "headers={'Authorization': 'Token abc123', 'Host': 'api'}",
                "headers={'Authorization': 'Token ***', 'Host': 'api'}",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
    }

    #[test]
    fn cookies_lose_their_values_and_keep_the_header_name() {
        let cases = [
            ("Cookie: sessionid=q8v1k2; csrftoken=Zx81", "Cookie: ***"),
            (
                "< Set-Cookie: sessionid=q8v1k2; Path=/; HttpOnly; Secure",
                "< Set-Cookie: ***",
            ),
            (
                r#"{"method":"GET","cookie":"_session=abc","path":"/"}"#,
                r#"{"method":"GET","cookie":"***","path":"/"}"#,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
    }

    #[test]
    fn key_headers_are_masked() {
        let cases = [
            ("X-Api-Key: 3f9c2a7e", "X-Api-Key: ***"),
            ("x-functions-key: AbC123==", "x-functions-key: ***"),
            ("X-Vault-Token: hvs.CAESIJ", "X-Vault-Token: ***"),
            ("PRIVATE-TOKEN: glpat-xxxxxxxx", "PRIVATE-TOKEN: ***"),
            (
                r#"{"X-Auth": "letmein", "Accept": "*/*"}"#,
                r#"{"X-Auth": "***", "Accept": "*/*"}"#,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
    }

    #[test]
    fn stripe_secret_keys_are_masked_and_publishable_keys_are_not() {
        let cases = [
            (
                "charging with sk_live_51H8abcDEF0123456789xyz",
                "charging with sk_live_***",
            ),
            (
                "sk_test_4eC39HqLyjWDarjtT1zdp7dc in CI",
                "sk_test_*** in CI",
            ),
            (
                "restricted rk_live_51H8abcDEF0123456",
                "restricted rk_live_***",
            ),
            (
                "webhook secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "webhook secret whsec_***",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
        let public = "checkout uses pk_live_51H8abcDEF0123456789xyz";
        assert!(matches!(redact(public), Cow::Borrowed(_)));
    }

    #[test]
    fn a_private_key_in_one_text_keeps_only_its_first_and_last_line() {
        let json = r#"{"tls_key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n","ok":true}"#;
        assert_eq!(
            redact(json),
            r#"{"tls_key":"-----BEGIN PRIVATE KEY-----***-----END PRIVATE KEY-----\n","ok":true}"#
        );
        let text = "loaded:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nthen -----BEGIN EC PRIVATE KEY-----MHcCAQEEI\n";
        assert_eq!(
            redact(text),
            "loaded:\n-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----\nthen -----BEGIN EC PRIVATE KEY-----***"
        );
        // A certificate is public.
        let cert = "-----BEGIN CERTIFICATE-----MIIDdzCCAl+gAwIBAgIE-----END CERTIFICATE-----";
        assert!(matches!(redact(cert), Cow::Borrowed(_)));
    }

    #[test]
    fn a_private_key_over_several_lines_is_masked_up_to_its_end() {
        let log = [
            "INFO loading the signing key",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
            "QyNTUxOQAAACDpd9cQ5lj2ZGPbnD0Wnes0y9ywGIhAMuTn2gwiEYJ7pwAAAJjVbkhY1W5I",
            "QyNTUxOQAAACDpd9cQ5lj2ZGPbnD0Wn-----END OPENSSH PRIVATE KEY----- loaded",
            "-----BEGIN EC PRIVATE KEY-----",
            "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5Is",
            "-----END EC PRIVATE KEY-----",
            "INFO password=hunter2 ready",
            "INFO listening on :8000",
        ];
        let mut r = Redactor::new();
        let out: Vec<Cow<str>> = log.iter().map(|l| r.line(l)).collect();
        assert_eq!(
            out,
            [
                "INFO loading the signing key",
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                "***",
                "***",
                "***-----END OPENSSH PRIVATE KEY----- loaded",
                "-----BEGIN EC PRIVATE KEY-----",
                "***",
                "-----END EC PRIVATE KEY-----",
                "INFO password=*** ready",
                "INFO listening on :8000",
            ]
        );
        for i in [0, 1, 7, 9] {
            assert!(matches!(out[i], Cow::Borrowed(_)), "{}", out[i]);
        }
    }

    #[test]
    fn a_key_without_its_end_hides_no_more_than_a_key_can_take() {
        let mut r = Redactor::new();
        assert_eq!(
            r.line("key: -----BEGIN PRIVATE KEY-----"),
            "key: -----BEGIN PRIVATE KEY-----"
        );
        for _ in 0..MAX_KEY_LINES {
            assert_eq!(r.line("INFO looks ordinary but may be key"), MASK);
        }
        assert!(matches!(r.line("INFO served /"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_tail_that_starts_inside_a_key_masks_its_body_too() {
        let mut lines: Vec<String> = [
            "INFO before",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
            "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1G",
            "Zm9v==",
            "-----END PRIVATE KEY-----",
            "INFO after",
        ]
        .map(String::from)
        .to_vec();
        let masked = redact_lines(&mut lines);
        assert_eq!(
            lines,
            [
                "INFO before",
                "***",
                "***",
                "***",
                "-----END PRIVATE KEY-----",
                "INFO after"
            ]
        );
        assert_eq!(masked, [false, true, true, true, false, false]);
    }

    #[test]
    fn ordinary_lines_are_left_alone_and_not_copied() {
        for line in [
            "INFO GET /health 200 3ms",
            "ERROR could not warm the menu cache: redis timeout after 5s",
            "see https://example.com/docs/page",
            "user ana@example.com logged in",
            "Vary: Cookie",
            "Access-Control-Allow-Headers: Authorization, Cookie, X-Api-Key",
            "authorization policy allowed the request",
            "-----BEGIN PRIVATE KEY-----",
            "",
        ] {
            assert!(matches!(redact(line), Cow::Borrowed(_)), "{line}");
            assert!(
                matches!(Redactor::new().line(line), Cow::Borrowed(_)),
                "{line}"
            );
        }
    }

    #[test]
    fn shown_urls_have_no_userinfo_and_no_secret_query_values() {
        let cases = [
            ("http://am:hunter2@127.0.0.1:9093", "http://127.0.0.1:9093"),
            ("http://alertmanager:9093/", "http://alertmanager:9093/"),
            (
                "https://ops@am.example.com/api",
                "https://am.example.com/api",
            ),
            ("http://u:p@ss@host:1/x", "http://host:1/x"),
            ("http://host/a@b", "http://host/a@b"),
            (
                "https://backend/health?token=abc&verbose=1&X-Amz-Signature=f00d",
                "https://backend/health?token=***&verbose=1&X-Amz-Signature=***",
            ),
            ("am:hunter2@127.0.0.1:9093", "127.0.0.1:9093"),
            ("htp://am:hunter2@am:9093", "htp://am:9093"),
        ];
        for (url, want) in cases {
            assert_eq!(shown_url(url), want, "{url}");
        }
    }
}
