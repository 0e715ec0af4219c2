//! Delivers announcements: messages to a channel that are not alert cards (a deploy started,
//! finished, or was interrupted). They wait in the store until sent, so a restart or a platform
//! outage loses none. One worker runs per chat platform, over that platform's rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::platform::{ChatPlatform, Outgoing};
use super::DeliveryError;
use crate::domain::format_time;
use crate::request::{ButtonStyle, Reply, ReplyButton};
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
        let cutoff = format_time(Utc::now() - NOTE_WAITS_FOR_CARD);
        match store.due_announcements(name.as_str(), 100, &cutoff).await {
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
                    // A note on a group goes into its card's thread, once the card is there.
                    let mut thread: Option<(String, String)> = None;
                    if let Some(gid) = a.group_id {
                        match store.chat_card(gid, name.as_str()).await {
                            Ok(Some(card)) if card.message_id.is_some() => {
                                thread = card.message_id.map(|m| (card.channel_id, m));
                            }
                            // The card is still on its way (a storm, an outage): the note
                            // waits for it, unless that has been long; then it goes alone.
                            Ok(_) if !waited_too_long(&a.created_at) => continue,
                            Ok(_) => {}
                            Err(e) => {
                                store_failed(&e, "read a card for a note");
                                pause = Duration::from_secs(5);
                                break;
                            }
                        }
                    }
                    let channel = match &thread {
                        Some((c, _)) => c.as_str(),
                        None => a.channel_id.as_deref().unwrap_or(&default_channel),
                    };
                    let nonce = format!("rb-ann-{}", a.id);
                    // With buttons, a prompt (an approval asked on another platform).
                    let prompt = a.buttons.as_deref().map(|b| Reply {
                        text: a.text.clone(),
                        buttons: buttons_from_json(b),
                        ..Default::default()
                    });
                    let message = match (&prompt, &thread) {
                        (Some(reply), _) => Outgoing::Prompt(reply),
                        (None, Some((_, parent))) => Outgoing::InThread {
                            parent,
                            text: &a.text,
                        },
                        (None, None) => Outgoing::Text(&a.text),
                    };
                    // Tried before and not marked sent: it may be out already (a lost
                    // answer, a crash). Platforms with nonces answer None at once.
                    if a.tried_at.is_some() {
                        let parent = thread.as_ref().map(|(_, p)| p.as_str());
                        match platform.recover(channel, &nonce, parent).await {
                            Ok(Some(_)) => {
                                if !mark_sent(&store, a.id).await {
                                    unmarked.insert(a.id);
                                }
                                continue;
                            }
                            Ok(None) | Err(DeliveryError::Permanent(_)) => {}
                            Err(DeliveryError::RateLimited { retry_after }) => {
                                pause = retry_after;
                                break;
                            }
                            Err(_) => {
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                                pause = backoff;
                                break;
                            }
                        }
                    }
                    // Not fatal: without the record, only a restart right after this post
                    // could repeat it (and only where posts have no nonce).
                    if let Err(e) = store
                        .announcement_trying(a.id, &format_time(Utc::now()))
                        .await
                    {
                        store_failed(&e, "record an announcement's post");
                    }
                    match platform.post(channel, message, &nonce).await {
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

/// How long a note waits for its group's card before it is posted on its own.
const NOTE_WAITS_FOR_CARD: chrono::Duration = chrono::Duration::minutes(10);

fn waited_too_long(created_at: &str) -> bool {
    crate::domain::parse_stored_time(created_at)
        .is_none_or(|t| Utc::now() - t > NOTE_WAITS_FOR_CARD)
}

/// A prompt's buttons as an announcement keeps them (`[{"id", "label", "style"}]`).
pub fn buttons_json(buttons: &[ReplyButton]) -> String {
    serde_json::Value::Array(
        buttons
            .iter()
            .map(|b| serde_json::json!({"id": b.id, "label": b.label, "style": b.style.as_str()}))
            .collect(),
    )
    .to_string()
}

/// Buttons read back from [`buttons_json`]; those that do not read are left out.
pub fn buttons_from_json(text: &str) -> Vec<ReplyButton> {
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|b| {
            Some(ReplyButton {
                id: b["id"].as_str()?.to_string(),
                label: b["label"].as_str()?.to_string(),
                style: ButtonStyle::parse(b["style"].as_str()?)?,
            })
        })
        .collect()
}
