//! The console as a [`ChatPlatform`]: the outbox "posts" a card by appending it to the live
//! feed, announcements go to the activity feed, and answers to requests become entries for
//! their requester (or everyone, when the answer is for everyone: an approval prompt).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::events::{Feed, Kind, Publish};
use super::render::{self, FileLink};
use crate::chat::platform::{ChatPlatform, Delivery, Limits, Method, Outgoing};
use crate::chat::{DeliveryError, Posted};
use crate::request::{BoxFuture, ButtonId, Platform, Reply, Verb, ATTACHMENT_MAX_BYTES};
use crate::store::GroupView;

/// The console's one "channel".
pub const CHANNEL: &str = "console";

pub struct ConsolePlatform {
    feed: Arc<Feed>,
}

/// Where an answer goes: `{request}|{requester}` (the requester's user id).
pub fn reply_to(request: &str, requester: &str) -> String {
    format!("{request}|{requester}")
}

fn store_error(e: sqlx::Error) -> DeliveryError {
    DeliveryError::Transient(format!("the console's feed could not be written: {e}"))
}

impl ConsolePlatform {
    pub fn new(feed: Arc<Feed>) -> ConsolePlatform {
        ConsolePlatform { feed }
    }

    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    async fn show(&self, message: Outgoing<'_>) -> Result<Posted, DeliveryError> {
        match message {
            Outgoing::Card(card) => {
                let data = json!({
                    "group_id": card.group_id,
                    "resolved": card.resolved,
                    "rank": render::rank(card),
                    "html": render::card(card).into_string(),
                });
                self.feed
                    .publish(Publish::for_everyone(
                        Kind::Card,
                        Some(card.group_id),
                        &data,
                    ))
                    .await
                    .map_err(store_error)?;
                Ok(Posted {
                    message_id: format!("group-{}", card.group_id),
                })
            }
            Outgoing::Digest { title, list } => self.announce(&format!("{title}\n{list}")).await,
            Outgoing::Text(text) | Outgoing::InThread { text, .. } => self.announce(text).await,
            // The console shows its own prompts as answers; one from elsewhere is news.
            Outgoing::Prompt(reply) => self.announce(&reply.text).await,
        }
    }

    async fn announce(&self, text: &str) -> Result<Posted, DeliveryError> {
        let at = crate::domain::format_time(chrono::Utc::now());
        let data = json!({
            "text": text,
            "html": render::announcement(&at, text).into_string(),
        });
        let id = self
            .feed
            .publish(Publish::for_everyone(Kind::Announcement, None, &data))
            .await
            .map_err(store_error)?;
        Ok(Posted {
            message_id: format!("activity-{id}"),
        })
    }

    /// Shows an answer to `request`: to its requester alone when ephemeral, else to everyone.
    /// Keeps its file for the requester. Answers the JSON a script gets for it.
    pub async fn answer(
        &self,
        request: &str,
        requester: &str,
        reply: &Reply,
    ) -> Result<serde_json::Value, sqlx::Error> {
        let store = self.feed.store();
        let file = match &reply.attachment {
            Some(a) if a.content.len() <= ATTACHMENT_MAX_BYTES => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let now = crate::domain::format_time(chrono::Utc::now());
                // The name came from runbot's own code, but it is shown and sent as a header:
                // keep it plain.
                let filename: String = a
                    .filename
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                    .take(100)
                    .collect();
                store
                    .add_console_file(&id, requester, &filename, &a.content, &now)
                    .await?;
                Some(FileLink {
                    url: format!("/api/files/{id}"),
                    filename,
                    bytes: a.content.len(),
                })
            }
            _ => None,
        };
        let prompt = render::prompt_of(&reply.buttons);
        let first_showing = match &prompt {
            Some(p) => store.console_prompt_ref(p).await?.is_none(),
            None => false,
        };
        let data = json!({
            "request": request,
            "reply": render::reply_json(reply, file.as_ref()),
            "html": render::reply(request, reply, file.as_ref()).into_string(),
        });
        self.feed
            .publish(Publish {
                kind: Kind::Reply,
                group_id: None,
                audience: reply.ephemeral.then_some(requester),
                reference: Some(request),
                prompt: prompt.as_deref(),
                data: &data,
            })
            .await?;
        if first_showing && !reply.ephemeral {
            self.share_approval(reply).await?;
        }
        Ok(data)
    }

    /// An approval asked on the console is shown in every other platform's alert channel too,
    /// so the people who can approve see it wherever they are; its buttons are the same
    /// prompt's, so a click there goes through the same core. Queued as an announcement:
    /// delivered even if that platform is away right now.
    async fn share_approval(&self, reply: &Reply) -> Result<(), sqlx::Error> {
        let approval = reply.buttons.iter().any(|b| {
            matches!(
                ButtonId::parse(&b.id),
                Some(ButtonId::Prompt {
                    verb: Verb::Approve,
                    ..
                })
            )
        });
        if !approval {
            return Ok(());
        }
        let store = self.feed.store();
        let now = crate::domain::format_time(chrono::Utc::now());
        let buttons = crate::chat::announce::buttons_json(&reply.buttons);
        for platform in store.chat_platforms().iter() {
            if platform != Platform::Console.as_str() {
                store
                    .announce_prompt(platform, &reply.text, &buttons, &now)
                    .await?;
            }
        }
        Ok(())
    }
}

impl ChatPlatform for ConsolePlatform {
    fn name(&self) -> Platform {
        Platform::Console
    }

    fn limits(&self) -> Limits {
        Limits {
            text: 100_000,
            buttons: 25,
            attachment_bytes: ATTACHMENT_MAX_BYTES,
        }
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            // The page shows every card at once: no storm to digest.
            digest_after: usize::MAX,
            refire_window: Duration::from_secs(3600),
        }
    }

    fn channel_for(&self, _group: &GroupView) -> String {
        CHANNEL.to_string()
    }

    fn alert_channel(&self) -> Option<&str> {
        Some(CHANNEL)
    }

    fn room(&self, _method: Method, _channel: &str) -> Option<u64> {
        None
    }

    fn post<'a>(
        &'a self,
        _channel: &'a str,
        message: Outgoing<'a>,
        _nonce: &'a str,
    ) -> BoxFuture<'a, Result<Posted, DeliveryError>> {
        // A post tried again shows the same card again, which the page puts in the same place.
        Box::pin(self.show(message))
    }

    fn edit<'a>(
        &'a self,
        _channel: &'a str,
        _message_id: &'a str,
        message: Outgoing<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move { self.show(message).await.map(|_| ()) })
    }

    fn edit_reply<'a>(
        &'a self,
        reply_to: &'a str,
        reply: &'a Reply,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let Some((request, requester)) = reply_to.split_once('|') else {
                return Err(DeliveryError::Permanent(format!(
                    "not a console answer: {reply_to:?}"
                )));
            };
            self.answer(request, requester, reply)
                .await
                .map(|_| ())
                .map_err(store_error)
        })
    }
}
