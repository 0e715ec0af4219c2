//! `runbot healthcheck`: GETs a running runbot's `/healthz` and exits 0 when it answers 200,
//! 1 otherwise. For container health checks in images with no shell and no curl (see
//! deploy/Dockerfile).

use std::time::Duration;

use crate::config::Settings;

/// Exit code: 0 when `/healthz` answered 200 within `timeout`, 1 when it did not (the reason on
/// stderr), 2 when the URL is not a plain-HTTP one.
pub async fn run(settings: &Settings, url: Option<String>, timeout: Duration) -> u8 {
    let base = url.unwrap_or_else(|| super::alert_test::default_url(settings.parsed.listen));
    if !base.starts_with("http://") {
        eprintln!(
            "runbot: --url {base:?}: give runbot's plain-HTTP address, e.g. http://127.0.0.1:8080"
        );
        return 2;
    }
    let url = format!("{}/healthz", base.trim_end_matches('/'));
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runbot: cannot make an HTTP client: {e}");
            return 1;
        }
    };
    match client.get(&url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => 0,
        Ok(r) => {
            eprintln!("runbot: {url} answered {}", r.status());
            1
        }
        Err(e) => {
            eprintln!("runbot: {url} did not answer: {e}");
            1
        }
    }
}
