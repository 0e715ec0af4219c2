//! Silences through Alertmanager's API v2.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::alert::Labels;

/// Alertmanager's API at `alertmanager.url`.
#[derive(Clone)]
pub struct Alertmanager {
    /// May hold `user:password@`, which reqwest sends as basic auth.
    base: String,
    /// `base` as answers, the audit trail and logs show it: without credentials.
    shown: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Alertmanager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alertmanager")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Matcher<'a> {
    name: &'a str,
    value: &'a str,
    is_regex: bool,
    is_equal: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence<'a> {
    matchers: Vec<Matcher<'a>>,
    starts_at: String,
    ends_at: String,
    created_by: &'a str,
    comment: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

/// A silence as Alertmanager reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub status: SilenceStatus,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SilenceStatus {
    /// `active`, `pending` or `expired`.
    pub state: String,
}

/// What went wrong, in words for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("Alertmanager at {0} cannot be reached ({1}); nothing was changed")]
    Unreachable(String, String),
    #[error("Alertmanager refused the request ({0}): {1}")]
    Refused(u16, String),
    #[error(
        "Alertmanager does not know silence {0} (it may have expired or been removed already)"
    )]
    UnknownSilence(String),
    #[error("this group has no labels to silence on")]
    NoLabels,
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Alertmanager {
    pub fn new(url: &str) -> anyhow::Result<Alertmanager> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("runbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = url.trim_end_matches('/').to_string();
        Ok(Alertmanager {
            shown: crate::domain::redact::shown_url(&base),
            base,
            client,
        })
    }

    /// The matchers a silence of this group uses: the labels Alertmanager grouped it by, else
    /// the labels all its alerts share. Equality only, so nothing else is caught.
    pub fn matchers(group_labels: &Labels, common_labels: &Labels) -> Vec<(String, String)> {
        let labels = if group_labels.is_empty() {
            common_labels
        } else {
            group_labels
        };
        labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Creates a silence; answers its id.
    pub async fn create_silence(
        &self,
        matchers: &[(String, String)],
        starts: DateTime<Utc>,
        ends: DateTime<Utc>,
        created_by: &str,
        comment: &str,
    ) -> Result<String, AlertmanagerError> {
        if matchers.is_empty() {
            return Err(AlertmanagerError::NoLabels);
        }
        let body = PostableSilence {
            matchers: matchers
                .iter()
                .map(|(name, value)| Matcher {
                    name,
                    value,
                    is_regex: false,
                    is_equal: true,
                })
                .collect(),
            starts_at: at(starts),
            ends_at: at(ends),
            created_by,
            comment,
        };
        let response = self
            .client
            .post(format!("{}/api/v2/silences", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(refused(status.as_u16(), response).await);
        }
        let created: Created = response.json().await.map_err(|e| {
            AlertmanagerError::Refused(status.as_u16(), crate::domain::redact::request_error(e))
        })?;
        Ok(created.silence_id)
    }

    /// Expires a silence. Alertmanager answers 500 for an id it does not know (API v2), so
    /// that answer is checked against a lookup before it is called unknown.
    pub async fn expire_silence(&self, id: &str) -> Result<(), AlertmanagerError> {
        let response = self
            .client
            .delete(format!("{}/api/v2/silence/{id}", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.as_u16() == 404 || status.as_u16() == 500 {
            match self.silence(id).await {
                Ok(None) => return Err(AlertmanagerError::UnknownSilence(id.to_string())),
                Ok(Some(s)) if s.status.state == "expired" => {
                    return Err(AlertmanagerError::UnknownSilence(id.to_string()))
                }
                _ => {}
            }
        }
        Err(refused(status.as_u16(), response).await)
    }

    /// One silence, or None if Alertmanager does not know it.
    pub async fn silence(&self, id: &str) -> Result<Option<Silence>, AlertmanagerError> {
        let response = self
            .client
            .get(format!("{}/api/v2/silence/{id}", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.as_u16() == 404 {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(refused(status.as_u16(), response).await);
        }
        response.json().await.map(Some).map_err(|e| {
            AlertmanagerError::Refused(status.as_u16(), crate::domain::redact::request_error(e))
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> AlertmanagerError {
        let why = if e.is_timeout() {
            "no answer within 10 s".to_string()
        } else if e.is_connect() {
            "connection refused".to_string()
        } else {
            crate::domain::redact::request_error(e)
        };
        AlertmanagerError::Unreachable(self.shown.clone(), why)
    }
}

async fn refused(status: u16, response: reqwest::Response) -> AlertmanagerError {
    let text = response.text().await.unwrap_or_default();
    let text: String = text.trim().chars().take(300).collect();
    AlertmanagerError::Refused(status, crate::domain::redact::redact(&text).into_owned())
}
