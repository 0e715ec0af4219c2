//! Delivers the outbox: each group whose card is out of date gets it posted the first time and
//! edited afterwards. The outbox row is written with the change itself (see the store), so a
//! crash or a platform outage loses nothing: whatever is still queued is sent when it can be.
//! One outbox runs per chat platform, over that platform's rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;

use super::platform::{ChatPlatform, Method, Outgoing};
use super::{render, Card, DeliveryError, Digest};
use crate::alerts::lifecycle;
use crate::domain::{format_time, parse_stored_time};
use crate::runbook::Runbook;
use crate::store::{GroupView, Notice, Store};
use crate::telemetry;

/// Notices taken per round.
const ROUND: i64 = 500;
/// Longest sleep between rounds when nothing wakes the worker.
const IDLE_POLL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub struct Outbox {
    pub store: Store,
    /// Set by a temporary failure, cleared by the next success (which releases the backlog).
    pub failing: std::sync::atomic::AtomicBool,
    pub runbook: Arc<Runbook>,
    pub platform: Arc<dyn ChatPlatform>,
    /// Notified by ingestion after each stored webhook.
    pub wake: Arc<Notify>,
}

enum Outcome {
    Done,
    /// Not sent yet; try again after this long.
    Later(Duration),
}

/// One notice, ready to send: the group's card and where it goes.
struct Job {
    notice: Notice,
    group: GroupView,
    card: Card,
    channel: String,
    /// The card's message; None when a (new) card is to be posted.
    message_id: Option<String>,
    /// The nonce of a post that was planned but never answered.
    planned_nonce: Option<String>,
}

/// The digest message of one channel, while a storm lasts.
struct DigestMessage {
    message_id: Option<String>,
    nonce: String,
    shown: Option<(String, String)>,
    /// The groups it names.
    listed: std::collections::HashSet<i64>,
    /// A post of it was tried and not answered: look for it before posting again.
    tried: bool,
}

impl Outbox {
    pub fn new(
        store: Store,
        runbook: Arc<Runbook>,
        platform: Arc<dyn ChatPlatform>,
        wake: Arc<Notify>,
    ) -> Outbox {
        Outbox {
            store,
            failing: Default::default(),
            runbook,
            platform,
            wake,
        }
    }

    /// The platform's name: its rows in the store, and the label of its metrics.
    fn name(&self) -> &'static str {
        self.platform.name().as_str()
    }

    /// Delivers notices until aborted; run again after a panic, it picks up where the outbox
    /// table says (a storm's digest message is then posted anew).
    pub async fn run(self: Arc<Self>) {
        let mut digests: HashMap<String, DigestMessage> = HashMap::new();
        loop {
            let (sleep, progressed, full) = self.round(&mut digests).await;
            if let Ok(n) = self.store.notice_backlog(self.name()).await {
                metrics::gauge!(telemetry::CHAT_BACKLOG, "platform" => self.name()).set(n as f64);
            }
            if progressed && full {
                continue;
            }
            let mut sleep = sleep;
            // A notice in backoff: wake when it falls due. (Notices due but held by a rate
            // limit set `sleep` already.)
            if let Ok(Some(next)) = self.store.next_notice_due(self.name()).await {
                if let Some(t) = parse_stored_time(&next) {
                    let until = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    if !until.is_zero() {
                        sleep = sleep.min(until);
                    }
                }
            }
            if !progressed {
                // Everything waits on a limit or a backoff: a new webhook need not wake us at
                // once, which would only read the same waiting notices again.
                let pause = sleep.clamp(Duration::from_millis(10), Duration::from_millis(100));
                tokio::time::sleep(pause).await;
                sleep = sleep.saturating_sub(pause);
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Sends what is due. Answers how long until something can be sent again, whether
    /// anything was sent, and whether the round was full (more may be due).
    async fn round(&self, digests: &mut HashMap<String, DigestMessage>) -> (Duration, bool, bool) {
        let now = format_time(Utc::now());
        let due = match self.store.due_notices(self.name(), &now, ROUND).await {
            Ok(due) => due,
            Err(e) => {
                crate::telemetry::worker_error("outbox");
                tracing::warn!(error = %e, "reading the chat outbox failed; retrying");
                return (IDLE_POLL, false, false);
            }
        };
        let full = due.len() as i64 == ROUND;
        let mut sleep = IDLE_POLL;
        let mut progressed = false;
        let mut by_channel: Vec<(String, Vec<Job>)> = Vec::new();
        for notice in due {
            match self.prepare(notice).await {
                Ok(Some(job)) => match by_channel.iter_mut().find(|(c, _)| *c == job.channel) {
                    Some((_, jobs)) => jobs.push(job),
                    None => by_channel.push((job.channel.clone(), vec![job])),
                },
                Ok(None) => progressed = true,
                Err(e) => {
                    crate::telemetry::worker_error("outbox");
                    tracing::warn!(error = %e, "chat outbox: store error; will retry")
                }
            }
        }
        let mut note = |outcome: Outcome| match outcome {
            Outcome::Done => progressed = true,
            Outcome::Later(wait) => sleep = sleep.min(wait),
        };
        for (channel, jobs) in by_channel {
            let (mut new, edits): (Vec<Job>, Vec<Job>) =
                jobs.into_iter().partition(|j| j.message_id.is_none());
            // Most severe first, then oldest: in a storm they get their own cards first.
            new.sort_by(|a, b| {
                a.card
                    .severity
                    .cmp(&b.card.severity)
                    .then(a.group.started_at.cmp(&b.group.started_at))
            });
            // A storm: more new cards than the digest threshold, and more than the channel's
            // limit lets out now. Without a binding limit the cards themselves go out at once.
            let room = self.platform.room(Method::Post, &channel);
            let storm = new.len() > self.platform.delivery().digest_after
                && room.is_some_and(|r| (r as usize) < new.len());
            // First make every waiting group visible, then post cards as limits allow: until
            // the digest is out, it has the channel's next post. The last post of a window also
            // goes to the digest rather than a card (below): once it is out, groups that arrive
            // while the channel's posts are spent show on it through edits, which platforms
            // limit separately.
            let digest_out = digests
                .get(&channel)
                .is_some_and(|d| d.message_id.is_some());
            let mut limited = false;
            if (storm || digests.contains_key(&channel)) && !digest_out {
                match self.show_digest(&channel, &new, digests).await {
                    Outcome::Done => note(Outcome::Done),
                    later => {
                        limited = true;
                        note(later);
                    }
                }
            }
            let mut waiting = Vec::new();
            let mut new = new.into_iter().peekable();
            while let Some(job) = new.next() {
                if limited {
                    waiting.push(job);
                    continue;
                }
                let digest_out = digests
                    .get(&channel)
                    .is_some_and(|d| d.message_id.is_some());
                if !digest_out
                    && new.peek().is_some()
                    && self.platform.room(Method::Post, &channel) == Some(1)
                {
                    // The window's last post: the digest, naming this group and the rest.
                    waiting.push(job);
                    waiting.extend(new.by_ref());
                    limited = true;
                    note(self.show_digest(&channel, &waiting, digests).await);
                    continue;
                }
                match self.send(&job).await {
                    Outcome::Later(wait) => {
                        limited = true;
                        note(Outcome::Later(wait));
                        waiting.push(job);
                    }
                    done => note(done),
                }
            }
            // The digest's edit shares the channel's edit limit with the cards' edits: it goes
            // first while it would name a group not yet visible, after them otherwise.
            let unseen = digests.get(&channel).is_some_and(|d| {
                waiting
                    .iter()
                    .any(|j| !d.listed.contains(&j.notice.group_id))
            });
            if unseen {
                note(self.show_digest(&channel, &waiting, digests).await);
            }
            for job in edits {
                note(self.send(&job).await);
            }
            if !unseen && digests.contains_key(&channel) {
                note(self.show_digest(&channel, &waiting, digests).await);
            }
        }
        (sleep, progressed, full)
    }

    /// Loads a notice's group and decides where its card goes; None when the group is gone.
    async fn prepare(&self, notice: Notice) -> Result<Option<Job>, sqlx::Error> {
        let gid = notice.group_id;
        let Some(group) = self
            .store
            .group_view_capped(gid, super::CARD_ALERTS)
            .await?
        else {
            self.store
                .notice_done(gid, self.name(), notice.version)
                .await?;
            return Ok(None);
        };
        let card = render::card(&group, &self.runbook);
        let now = Utc::now();
        let window =
            chrono::Duration::seconds(self.platform.delivery().refire_window.as_secs() as i64);
        let record = self.store.chat_card(gid, self.name()).await?;
        let (channel, message_id, planned_nonce) = match record {
            // It fires again long after resolving: a new card; the old one stays as history.
            Some(r)
                if lifecycle::fires_anew(
                    group.status,
                    r.shown_status,
                    r.resolved_at.as_deref().and_then(parse_stored_time),
                    now,
                    window,
                ) =>
            {
                (self.platform.channel_for(&group), None, None)
            }
            // A post that was never answered (crash, timeout): the same nonce makes the
            // platform return that message if it did go through.
            Some(r) if r.message_id.is_none() => (r.channel_id, None, Some(r.nonce)),
            Some(r) => (r.channel_id, r.message_id, None),
            None => (self.platform.channel_for(&group), None, None),
        };
        // The card holds what it shows; a job waiting its turn keeps the group without its
        // alerts (their labels and annotations are most of a group's memory).
        let mut group = group;
        group.alerts = Vec::new();
        Ok(Some(Job {
            notice,
            group,
            card,
            channel,
            message_id,
            planned_nonce,
        }))
    }

    /// Posts or edits the digest that names the groups still waiting for their own card, or
    /// closes it once none wait.
    async fn show_digest(
        &self,
        channel: &str,
        waiting: &[Job],
        digests: &mut HashMap<String, DigestMessage>,
    ) -> Outcome {
        let digest = Digest {
            waiting: waiting
                .iter()
                .map(|j| (j.card.title.clone(), j.card.alerts.len(), j.card.resolved))
                .collect(),
        };
        let text = digest.text();
        let entry = digests
            .entry(channel.to_string())
            .or_insert_with(|| DigestMessage {
                message_id: None,
                nonce: new_nonce(0, Utc::now().timestamp_millis()),
                shown: None,
                listed: Default::default(),
                tried: false,
            });
        if entry.shown.as_ref() == Some(&text) {
            return Outcome::Done;
        }
        let message = Outgoing::Digest {
            title: &text.0,
            list: &text.1,
        };
        // A post tried before may have made the digest (platforms without nonces).
        if entry.message_id.is_none() && entry.tried {
            match self.platform.recover(channel, &entry.nonce, None).await {
                Ok(Some(found)) => entry.message_id = Some(found.message_id),
                Ok(None) | Err(DeliveryError::Permanent(_)) => {}
                Err(DeliveryError::RateLimited { retry_after }) => {
                    return Outcome::Later(retry_after)
                }
                Err(_) => return Outcome::Later(Duration::from_secs(1)),
            }
        }
        let result = match &entry.message_id {
            None => {
                entry.tried = true;
                self.platform
                    .post(channel, message, &entry.nonce)
                    .await
                    .map(|p| Some(p.message_id))
            }
            Some(m) => self.platform.edit(channel, m, message).await.map(|()| None),
        };
        match result {
            Ok(posted) => {
                if let Some(id) = posted {
                    entry.message_id = Some(id);
                }
                entry.shown = Some(text);
                entry.listed = waiting.iter().map(|j| j.notice.group_id).collect();
                if digest.waiting.is_empty() {
                    digests.remove(channel);
                }
                Outcome::Done
            }
            Err(DeliveryError::RateLimited { retry_after }) => Outcome::Later(retry_after),
            Err(e) => {
                tracing::warn!(channel, error = %e, "the storm digest was not delivered");
                if matches!(e, DeliveryError::MessageGone) {
                    entry.message_id = None;
                }
                Outcome::Later(Duration::from_secs(1))
            }
        }
    }

    async fn send(&self, job: &Job) -> Outcome {
        match self.try_send(job).await {
            Ok(outcome) => outcome,
            Err(e) => {
                crate::telemetry::worker_error("outbox");
                tracing::warn!(group_id = job.notice.group_id, error = %e, "chat outbox: store error; will retry");
                Outcome::Later(IDLE_POLL)
            }
        }
    }

    async fn try_send(&self, job: &Job) -> Result<Outcome, sqlx::Error> {
        let (notice, group, card, channel) = (&job.notice, &job.group, &job.card, &job.channel);
        let gid = notice.group_id;
        let now = Utc::now();
        let now_s = format_time(now);
        let result = match &job.message_id {
            None => {
                // A post planned before but never answered may have made its message: a
                // platform without nonces finds it, and the card is edited instead.
                let found = match &job.planned_nonce {
                    Some(n) => match self.platform.recover(channel, n, None).await {
                        // Looking cannot work (no history scope, no access): a card posted
                        // twice is better than none.
                        Err(DeliveryError::Permanent(e)) => {
                            tracing::warn!(group_id = gid, error = %e, "could not look for a card an unanswered post may have made; posting it");
                            Ok(None)
                        }
                        other => other,
                    },
                    None => Ok(None),
                };
                match found {
                    Ok(Some(posted)) => {
                        tracing::info!(group_id = gid, message_id = %posted.message_id, "found the card a previous attempt posted");
                        self.platform
                            .edit(channel, &posted.message_id, Outgoing::Card(card))
                            .await
                            .map(|()| (posted.message_id, "edited"))
                    }
                    Err(e) => Err(e),
                    Ok(None) => {
                        let nonce = match &job.planned_nonce {
                            Some(n) => n.clone(),
                            None => {
                                let nonce = new_nonce(gid, now.timestamp_millis());
                                self.store
                                    .card_planned(gid, self.name(), channel, &nonce, &now_s)
                                    .await?;
                                nonce
                            }
                        };
                        self.platform
                            .post(channel, Outgoing::Card(card), &nonce)
                            .await
                            .map(|p| (p.message_id, "posted"))
                    }
                }
            }
            Some(m) => self
                .platform
                .edit(channel, m, Outgoing::Card(card))
                .await
                .map(|()| (m.clone(), "edited")),
        };
        match result {
            Ok((message_id, what)) => {
                self.store
                    .card_shown(
                        gid,
                        self.name(),
                        &message_id,
                        group.status,
                        group.resolved_at.as_deref(),
                        &now_s,
                    )
                    .await?;
                self.store
                    .notice_done(gid, self.name(), notice.version)
                    .await?;
                metrics::counter!(telemetry::CHAT_DELIVERED, "platform" => self.name(), "action" => what)
                    .increment(1);
                if let Some(changed) = parse_stored_time(&group.updated_at) {
                    if let Ok(lag) = (Utc::now() - changed).to_std() {
                        metrics::histogram!(telemetry::CHAT_DELIVERY_LAG, "platform" => self.name())
                            .record(lag.as_secs_f64());
                    }
                }
                tracing::debug!(group_id = gid, %message_id, what, "card delivered");
                if self
                    .failing
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    let released = self.store.release_backoff(self.name(), &now_s).await?;
                    tracing::info!(
                        released,
                        "{} answers again; sending the backlog now",
                        self.platform.name().title()
                    );
                }
                Ok(Outcome::Done)
            }
            Err(DeliveryError::RateLimited { retry_after }) => Ok(Outcome::Later(retry_after)),
            Err(DeliveryError::MessageGone) => {
                // Someone deleted the card: post a new one.
                let nonce = new_nonce(gid, now.timestamp_millis() + 1);
                self.store
                    .card_planned(gid, self.name(), channel, &nonce, &now_s)
                    .await?;
                tracing::info!(
                    group_id = gid,
                    "the card was deleted in {}; posting a new one",
                    self.platform.name().title()
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
                    .notice_retry(gid, self.name(), &due, attempts, &e)
                    .await?;
                if attempts <= 3 || attempts % 20 == 0 {
                    tracing::warn!(group_id = gid, attempts, retry_in = ?delay, error = %e, "card not delivered; will retry");
                }
                Ok(Outcome::Later(delay))
            }
            Err(DeliveryError::Permanent(e)) => {
                self.store
                    .notice_dead(gid, self.name(), notice.version, &e)
                    .await?;
                metrics::counter!(telemetry::CHAT_FAILED, "platform" => self.name()).increment(1);
                tracing::error!(group_id = gid, error = %e, "{} refused the card; not retrying until the group changes", self.platform.name().title());
                Ok(Outcome::Done)
            }
        }
    }
}

/// A nonce for a new card, within Discord's 25 characters (the shortest limit).
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
