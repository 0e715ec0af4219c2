//! `runbot alert test`: posts a sample Alertmanager webhook for one of the runbook's alerts to a
//! running runbot, with the credentials its settings configure, and says what became of it.

use std::io::Write;

use secrecy::ExposeSecret;

use super::Data;
use crate::alerts::sample::{self, Sample};
use crate::config::Settings;

/// What `runbot alert test` was asked.
pub struct AlertTest {
    pub alertname: String,
    /// A value of the severity label, as an alert rule would set it (`critical`, `warning`…).
    pub severity: String,
    /// runbot's address; default: `http.listen` (0.0.0.0 and :: become loopback).
    pub url: Option<String>,
}

/// Exit code: 0 when runbot took the webhook, 1 when it refused it or could not be reached,
/// 2 when the request itself is wrong (an alert not in the runbook, an unknown severity).
pub async fn run(settings: &Settings, asked: AlertTest, out: &mut dyn Write) -> u8 {
    match send(settings, &asked).await {
        Ok(said) => match writeln!(out, "{said}") {
            Ok(()) => 0,
            Err(_) => 2,
        },
        Err((code, why)) => {
            eprintln!("runbot: {why}");
            code
        }
    }
}

async fn send(settings: &Settings, asked: &AlertTest) -> Result<String, (u8, String)> {
    let data = Data::load(settings).map_err(|e| (2, format!("{e:#}")))?;
    let Some((alertname, entry)) = data.runbook.entry(&asked.alertname) else {
        let known: Vec<&str> = data.runbook.iter().map(|(name, _)| name).collect();
        return Err((
            2,
            format!(
                "{:?} is not an alert of the runbook: use one of {}",
                asked.alertname,
                known.join(", ")
            ),
        ));
    };
    let values = data.severities.values();
    if !values.contains(&asked.severity.to_ascii_lowercase().as_str()) {
        return Err((
            2,
            format!(
                "severity {:?} is not in policies/severities.toml: use one of {}",
                asked.severity,
                values.join(", ")
            ),
        ));
    }
    let base = asked
        .url
        .clone()
        .unwrap_or_else(|| default_url(settings.parsed.listen));
    if !base.starts_with("http://") {
        return Err((
            2,
            format!("--url {base:?}: give runbot's plain-HTTP address, e.g. http://127.0.0.1:8080"),
        ));
    }
    let url = format!("{}/webhooks/alertmanager", base.trim_end_matches('/'));
    let fingerprint = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let body = sample::webhook(&Sample {
        alertname,
        entry,
        severity_label: data.severities.label(),
        severity: &asked.severity,
        now: chrono::Utc::now(),
        fingerprint: &fingerprint,
    });
    let client = reqwest::Client::builder()
        .user_agent(concat!(
            "runbot/",
            env!("CARGO_PKG_VERSION"),
            " (alert test)"
        ))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| (2, format!("cannot make an HTTP client: {e}")))?;
    let mut request = client.post(&url).json(&body);
    // The credentials Alertmanager would send, as the settings configure them.
    if let Some(token) = &settings.alertmanager.webhook_token {
        request = request.bearer_auth(token.expose_secret());
    } else if let Some(basic) = &settings.alertmanager.basic_auth {
        request = request.basic_auth(&basic.username, Some(basic.password.expose_secret()));
    }
    let response = request.send().await.map_err(|e| {
        (
            1,
            format!("no runbot answered at {base} ({e}): start it with `runbot serve`, or give its address with --url"),
        )
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if !status.is_success() {
        let why = answer["error"].as_str().unwrap_or(text.as_str());
        return Err((
            1,
            format!("runbot refused the test alert ({status}): {why}"),
        ));
    }
    let group = answer["group_id"]
        .as_i64()
        .map(|id| format!("alert group #{id}"))
        .unwrap_or_else(|| "an alert group".into());
    Ok(format!(
        "Sent a test {alertname} ({} = {}) to {url}: runbot filed it under {group}. Its card shows in the console at {base}/ and in any chat runbot posts to; it is labelled runbot_test=\"true\".",
        data.severities.label(),
        asked.severity,
    ))
}

/// runbot's own address from `http.listen`: a wildcard listener is reached on loopback.
pub(crate) fn default_url(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("http://{ip}:{}", listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        assert_eq!(
            default_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            default_url("[::]:9000".parse().unwrap()),
            "http://[::1]:9000"
        );
        assert_eq!(
            default_url("10.0.0.5:80".parse().unwrap()),
            "http://10.0.0.5:80"
        );
    }
}
