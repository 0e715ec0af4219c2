//! Delivers the outbox: each group whose card is out of date gets it posted the first time and
//! edited afterwards. The outbox row is written with the change itself (see the store), so a
//! crash or a Discord outage loses nothing: whatever is still queued is sent when it can be.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;

use super::discord::DiscordAdapter;
use super::{render, DeliveryError};
use crate::alerts::{format_time, parse_stored_time};
use crate::config::{DiscordRoute, DiscordSettings};
use crate::policy::Severity;
use crate::runbook::Runbook;
use crate::store::{GroupView, Notice, Store};
use crate::telemetry;

pub const DISCORD: &str = "discord";

/// Notices taken per round.
const ROUND: i64 = 100;
/// Longest sleep between rounds when nothing wakes the worker.
const IDLE_POLL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub struct Outbox {
    pub store: Store,
    /// Set by a temporary failure, cleared by the next success (which releases the backlog).
    pub failing: std::sync::atomic::AtomicBool,
    pub runbook: Arc<Runbook>,
    pub discord: DiscordAdapter,
    pub settings: DiscordSettings,
    /// Notified by ingestion after each stored webhook.
    pub wake: Arc<Notify>,
}

enum Outcome {
    Done,
    /// Not sent yet; try again after this long.
    Later(Duration),
}

impl Outbox {
    pub async fn run(self) {
        loop {
            let now = format_time(Utc::now());
            let due = match self.store.due_notices(DISCORD, &now, ROUND).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the chat outbox failed; retrying");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            };
            let mut sleep = IDLE_POLL;
            let mut sent_any = false;
            for notice in &due {
                match self.deliver(notice).await {
                    Outcome::Done => sent_any = true,
                    Outcome::Later(wait) => sleep = sleep.min(wait),
                }
            }
            if let Ok(n) = self.store.notice_backlog(DISCORD).await {
                metrics::gauge!(telemetry::CHAT_BACKLOG, "platform" => DISCORD).set(n as f64);
            }
            if sent_any && due.len() as i64 == ROUND {
                continue;
            }
            // A notice in backoff: wake when it falls due. (Notices already due but held by a
            // rate limit set `sleep` above.)
            if let Ok(Some(next)) = self.store.next_notice_due(DISCORD).await {
                if let Some(t) = parse_stored_time(&next) {
                    let until = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    if !until.is_zero() {
                        sleep = sleep.min(until);
                    }
                }
            }
            if sleep.is_zero() && !sent_any {
                sleep = Duration::from_millis(10);
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    async fn deliver(&self, notice: &Notice) -> Outcome {
        match self.try_deliver(notice).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(group_id = notice.group_id, error = %e, "chat outbox: store error; will retry");
                Outcome::Later(IDLE_POLL)
            }
        }
    }

    async fn try_deliver(&self, notice: &Notice) -> Result<Outcome, sqlx::Error> {
        let gid = notice.group_id;
        let Some((group, _)) = self.store.group(gid).await? else {
            self.store.notice_done(gid, DISCORD, notice.version).await?;
            return Ok(Outcome::Done);
        };
        let card = render::card(&group, &self.runbook);
        let now = Utc::now();
        let now_s = format_time(now);
        let record = self.store.chat_card(gid, DISCORD).await?;
        let refire_after_window = |resolved_at: &Option<String>| {
            let window = chrono::Duration::seconds(self.settings.refire_window_secs as i64);
            resolved_at
                .as_deref()
                .and_then(parse_stored_time)
                .is_some_and(|t| now - t > window)
        };
        let (channel, message_id) = match record {
            Some(r)
                if !(group.status == "firing"
                    && r.shown_status.as_deref() == Some("resolved")
                    && refire_after_window(&r.resolved_at)) =>
            {
                if r.message_id.is_none() {
                    // A post that was never answered (crash, timeout): the same nonce makes
                    // Discord return that message if it did go through.
                    (r.channel_id, None)
                } else {
                    (r.channel_id, r.message_id)
                }
            }
            _ => {
                let channel = pick_channel(&group, &self.settings);
                let nonce = new_nonce(gid, now.timestamp_millis());
                self.store
                    .card_planned(gid, DISCORD, &channel, &nonce, &now_s)
                    .await?;
                (channel, None)
            }
        };
        let result = match &message_id {
            None => {
                let nonce = self
                    .store
                    .chat_card(gid, DISCORD)
                    .await?
                    .map(|r| r.nonce)
                    .unwrap_or_else(|| new_nonce(gid, now.timestamp_millis()));
                self.discord
                    .post(&channel, &card, &nonce)
                    .await
                    .map(|p| (p.message_id, "posted"))
            }
            Some(m) => self
                .discord
                .edit(&channel, m, &card)
                .await
                .map(|()| (m.clone(), "edited")),
        };
        match result {
            Ok((message_id, what)) => {
                self.store
                    .card_shown(
                        gid,
                        DISCORD,
                        &message_id,
                        &group.status,
                        group.resolved_at.as_deref(),
                        &now_s,
                    )
                    .await?;
                self.store.notice_done(gid, DISCORD, notice.version).await?;
                metrics::counter!(telemetry::CHAT_DELIVERED, "platform" => DISCORD, "action" => what)
                    .increment(1);
                if let Some(changed) = parse_stored_time(&group.updated_at) {
                    if let Ok(lag) = (Utc::now() - changed).to_std() {
                        metrics::histogram!(telemetry::CHAT_DELIVERY_LAG, "platform" => DISCORD)
                            .record(lag.as_secs_f64());
                    }
                }
                tracing::debug!(group_id = gid, %message_id, what, "card delivered");
                if self
                    .failing
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    let released = self.store.release_backoff(DISCORD, &now_s).await?;
                    tracing::info!(released, "Discord answers again; sending the backlog now");
                }
                Ok(Outcome::Done)
            }
            Err(DeliveryError::RateLimited { retry_after }) => Ok(Outcome::Later(retry_after)),
            Err(DeliveryError::MessageGone) => {
                // Someone deleted the card: post a new one.
                let nonce = new_nonce(gid, now.timestamp_millis() + 1);
                self.store
                    .card_planned(gid, DISCORD, &channel, &nonce, &now_s)
                    .await?;
                tracing::info!(
                    group_id = gid,
                    "the card was deleted in Discord; posting a new one"
                );
                Ok(Outcome::Later(Duration::ZERO))
            }
            Err(DeliveryError::Transient(e)) => {
                self.failing
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let attempts = notice.attempts + 1;
                let delay = backoff(attempts, gid);
                let due = format_time(now + chrono::Duration::from_std(delay).unwrap_or_default());
                self.store
                    .notice_retry(gid, DISCORD, &due, attempts, &e)
                    .await?;
                if attempts <= 3 || attempts % 20 == 0 {
                    tracing::warn!(group_id = gid, attempts, retry_in = ?delay, error = %e, "card not delivered; will retry");
                }
                Ok(Outcome::Later(delay))
            }
            Err(DeliveryError::Permanent(e)) => {
                self.store
                    .notice_dead(gid, DISCORD, notice.version, &e)
                    .await?;
                metrics::counter!(telemetry::CHAT_FAILED, "platform" => DISCORD).increment(1);
                tracing::error!(group_id = gid, error = %e, "Discord refused the card; not retrying until the group changes");
                Ok(Outcome::Done)
            }
        }
    }
}

/// The first route that matches the group, else the alert channel.
pub fn pick_channel(group: &GroupView, settings: &DiscordSettings) -> String {
    settings
        .routes
        .iter()
        .find(|r| route_matches(r, group))
        .map(|r| r.channel_id.clone())
        .or_else(|| settings.alert_channel_id.clone())
        .unwrap_or_default()
}

fn route_matches(route: &DiscordRoute, group: &GroupView) -> bool {
    let label = |k: &str| {
        group
            .common_labels
            .get(k)
            .or_else(|| group.group_labels.get(k))
    };
    let severity_ok = route.severities.is_empty()
        || route
            .severities
            .iter()
            .filter_map(|s| Severity::parse(s))
            .any(|s| Some(s) == Severity::parse(&group.severity));
    severity_ok
        && route
            .matchers
            .iter()
            .all(|(k, v)| label(k).is_some_and(|have| have == v))
}

/// A nonce for a new card: Discord keeps at most 25 characters.
fn new_nonce(group_id: i64, millis: i64) -> String {
    let mut n = format!("rb{group_id:x}.{millis:x}");
    n.truncate(25);
    n
}

/// 1 s, 2 s, 4 s… up to a minute, with ±20% jitter so retries after an outage spread out.
fn backoff(attempts: i64, salt: i64) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.clamp(1, 7).saturating_sub(1)).min(BACKOFF_MAX);
    let nanos = Utc::now().timestamp_subsec_nanos() as i64;
    let jitter = ((nanos ^ salt.wrapping_mul(2654435761)) % 401 - 200) as f64 / 1000.0;
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_minute_with_jitter() {
        let b1 = backoff(1, 3);
        assert!(
            b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200),
            "{b1:?}"
        );
        let b10 = backoff(10, 3);
        assert!(
            b10 >= Duration::from_secs(48) && b10 <= Duration::from_secs(72),
            "{b10:?}"
        );
    }

    #[test]
    fn nonces_fit_discords_25_characters() {
        assert!(new_nonce(i64::MAX, i64::MAX).len() <= 25);
        assert_ne!(new_nonce(1, 1000), new_nonce(1, 1001));
    }
}
