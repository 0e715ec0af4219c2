//! Delivers announcements: messages to a channel that are not alert cards (a deploy started,
//! finished, or was interrupted). They wait in the store until sent, so a restart or a platform
//! outage loses none. One worker runs per chat platform, over that platform's rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::platform::{ChatPlatform, Outgoing};
use super::DeliveryError;
use crate::domain::format_time;
use crate::store::Store;

const POLL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The worker's name in logs and metrics.
const WORKER: &str = "announcements";

/// A store write this loop could not make: logged and counted, since a mark that is lost
/// means the message is posted again.
fn store_failed(e: &sqlx::Error, what: &str) {
    crate::telemetry::worker_error(WORKER);
    tracing::warn!(worker = WORKER, error = %e, "could not {what}");
}

/// Marks an announcement sent; false (logged and counted) when the store did not take it.
async fn mark_sent(store: &Store, id: i64) -> bool {
    match store.announcement_sent(id, &format_time(Utc::now())).await {
        Ok(()) => true,
        Err(e) => {
            store_failed(
                &e,
                "mark an announcement sent; it is marked again, not posted again",
            );
            false
        }
    }
}

/// Posts a platform's announcements to their channel (or `default_channel`), oldest first.
pub async fn deliver(store: Store, platform: Arc<dyn ChatPlatform>, default_channel: String) {
    let name = platform.name();
    let mut backoff = POLL;
    // Sent (or refused for good) but not yet marked: only the mark is tried again.
    let mut unmarked = std::collections::HashSet::new();
    loop {
        let mut pause = POLL;
        match store.due_announcements(name.as_str(), 20).await {
            Ok(due) => {
                unmarked.retain(|id| due.iter().any(|a| a.id == *id));
                for a in due {
                    if unmarked.contains(&a.id) {
                        if mark_sent(&store, a.id).await {
                            unmarked.remove(&a.id);
                        } else {
                            pause = Duration::from_secs(5);
                            break;
                        }
                        continue;
                    }
                    let channel = a.channel_id.as_deref().unwrap_or(&default_channel);
                    let nonce = format!("rb-ann-{}", a.id);
                    match platform
                        .post(channel, Outgoing::Text(&a.text), &nonce)
                        .await
                    {
                        Ok(_) => {
                            backoff = POLL;
                            if !mark_sent(&store, a.id).await {
                                unmarked.insert(a.id);
                            }
                        }
                        Err(DeliveryError::RateLimited { retry_after }) => {
                            pause = retry_after;
                            break;
                        }
                        Err(DeliveryError::Transient(e)) => {
                            if let Err(e) = store.announcement_failed(a.id, &e).await {
                                store_failed(&e, "record a failed announcement");
                            }
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            pause = backoff;
                            break;
                        }
                        // Refused for good (e.g. no access to that channel): recorded, not retried.
                        Err(e) => {
                            tracing::error!(error = %e, channel, "{} refused an announcement", name.title());
                            if let Err(e) = store.announcement_failed(a.id, &e.to_string()).await {
                                store_failed(&e, "record a refused announcement");
                            }
                            if !mark_sent(&store, a.id).await {
                                unmarked.insert(a.id);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                store_failed(&e, "read announcements");
                pause = Duration::from_secs(5);
            }
        }
        tokio::time::sleep(pause).await;
    }
}
