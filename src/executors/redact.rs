//! Secrets out of text that runbot shows in chat. Log lines carry database URLs, tokens and
//! keys more often than anyone intends, and a chat channel keeps them forever.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// (pattern, replacement): each keeps what names the secret and masks the secret itself.
static PATTERNS: LazyLock<Vec<(Regex, String)>> = LazyLock::new(|| {
    let keep = |group: &str| format!("${{{group}}}{MASK}");
    [
        // scheme://user:SECRET@host (the user may be empty: redis://:SECRET@host)
        (
            r"(?i)(?P<k>\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@",
            format!("${{k}}{MASK}@"),
        ),
        // Authorization: Basic BASE64
        (
            r#"(?i)(?P<k>authorization"?\s*[=:]\s*"?basic\s+)[A-Za-z0-9+/=]+"#,
            keep("k"),
        ),
        // Bearer TOKEN
        (r"(?i)(?P<k>\bbearer\s+)[A-Za-z0-9._~+/=-]+", keep("k")),
        // password=…, "api_key": "…", DB_PASSWORD: …, aws_secret_access_key=…
        (
            r#"(?i)(?P<k>[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)[a-z0-9_.-]*"?\s*[=:]\s*"?)[^\s"',;&]+"#,
            keep("k"),
        ),
        // SQL: CREATE/ALTER ROLE … PASSWORD 'secret' (queries /db shows from pg_stat_activity).
        (r"(?i)(?P<k>\bpassword\s+)'(?:[^']|'')*'", keep("k")),
        // JSON Web Tokens, wherever they appear.
        (
            r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+",
            MASK.to_string(),
        ),
        // AWS access key ids.
        (
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
            MASK.to_string(),
        ),
        // GitHub and Slack tokens.
        (
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,})",
            MASK.to_string(),
        ),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).expect("the secret patterns compile"), r))
    .collect()
});

/// `line` with every known kind of secret masked; borrowed when there was none.
pub fn redact(line: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(line);
    for (re, with) in PATTERNS.iter() {
        if let Cow::Owned(s) = re.replace_all(&out, with.as_str()) {
            out = Cow::Owned(s);
        }
    }
    out
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
    fn ordinary_lines_are_left_alone_and_not_copied() {
        for line in [
            "INFO GET /health 200 3ms",
            "ERROR could not warm the menu cache: redis timeout after 5s",
            "see https://example.com/docs/page",
            "user ana@example.com logged in",
            "",
        ] {
            assert!(matches!(redact(line), Cow::Borrowed(_)), "{line}");
        }
    }
}
