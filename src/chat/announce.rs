//! Delivers announcements: messages to a channel that are not alert cards (a deploy started,
//! finished, or was interrupted). They wait in the store until sent, so a restart or a Discord
//! outage loses none.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::discord::DiscordAdapter;
use super::outbox::DISCORD;
use super::DeliveryError;
use crate::domain::format_time;
use crate::store::Store;

const POLL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Posts Discord announcements to their channel (or `default_channel`), oldest first.
pub async fn deliver(store: Store, discord: Arc<DiscordAdapter>, default_channel: String) {
    let mut backoff = POLL;
    loop {
        let mut pause = POLL;
        match store.due_announcements(DISCORD, 20).await {
            Ok(due) => {
                for a in due {
                    let channel = a.channel_id.as_deref().unwrap_or(&default_channel);
                    let nonce = format!("rb-ann-{}", a.id);
                    match discord.post_text(channel, &a.text, &nonce).await {
                        Ok(_) => {
                            backoff = POLL;
                            if let Err(e) = store
                                .announcement_sent(a.id, &format_time(Utc::now()))
                                .await
                            {
                                tracing::warn!(error = %e, "an announcement was sent but not marked");
                            }
                        }
                        Err(DeliveryError::RateLimited { retry_after }) => {
                            pause = retry_after;
                            break;
                        }
                        Err(DeliveryError::Transient(e)) => {
                            let _ = store.announcement_failed(a.id, &e).await;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            pause = backoff;
                            break;
                        }
                        // Refused for good (e.g. no access to that channel): recorded, not retried.
                        Err(e) => {
                            tracing::error!(error = %e, channel, "Discord refused an announcement");
                            let _ = store.announcement_failed(a.id, &e.to_string()).await;
                            let _ = store
                                .announcement_sent(a.id, &format_time(Utc::now()))
                                .await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read announcements");
                pause = Duration::from_secs(5);
            }
        }
        tokio::time::sleep(pause).await;
    }
}
