//! The seam between runbot's chat delivery and one chat platform. The outbox, announcements and
//! the answers to requests talk to a [`ChatPlatform`] and never name one: adding a platform is a
//! folder that implements this trait, plus one line where `app.rs` lists the platforms.

use std::sync::Arc;
use std::time::Duration;

use super::{Card, DeliveryError, Posted};
use crate::config::AlertRoute;
use crate::request::{BoxFuture, Platform, Reply, Responder};
use crate::store::GroupView;

/// A kind of request, as a platform paces them: new messages and edits are limited apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Edit,
}

/// What one message can hold on a platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Characters of plain text.
    pub text: usize,
    pub buttons: usize,
    /// Bytes of one attached file.
    pub attachment_bytes: usize,
}

/// How the outbox delivers cards to a platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// More new cards waiting for one channel than this, and more than its limits let out now,
    /// is a storm: one digest message names them all until their cards follow.
    pub digest_after: usize,
    /// A group firing again within this long of resolving gets its old card back; later, a
    /// new card (the old one stays as history).
    pub refire_window: Duration,
}

/// What runbot posts to a channel, or puts in place of what it posted there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outgoing<'a> {
    /// An alert group's card.
    Card(&'a Card),
    /// A channel's storm digest (see [`super::Digest`]).
    Digest { title: &'a str, list: &'a str },
    /// Plain text (an announcement) that pings nobody: it may quote what people typed.
    Text(&'a str),
    /// A request's prompt with its buttons, for everyone in the channel to answer: an approval
    /// asked on another platform (the console's, shown in Discord's channel too).
    Prompt(&'a Reply),
    /// A note on an alert group (acknowledged, silenced, paged, a command's result) as a reply
    /// in the thread of its card (`parent`, the card's message id). Only platforms whose
    /// [`ChatPlatform::threads`] is true are sent these.
    InThread { parent: &'a str, text: &'a str },
}

/// One chat platform, as the outbox, announcements and replies use it. Sends answer a
/// [`DeliveryError`] that says what to do next; the platform translates and holds no business
/// rules. `channel` and message ids are the platform's own, kept by the store as text.
pub trait ChatPlatform: Send + Sync + 'static {
    /// Also the store's `platform` column for the platform's outbox and announcements.
    fn name(&self) -> Platform;

    fn limits(&self) -> Limits;

    fn delivery(&self) -> Delivery;

    /// The channel a group's card goes to (the platform's routes).
    fn channel_for(&self, group: &GroupView) -> String;

    /// Where cards go when no route matches, and announcements without a channel of their own.
    fn alert_channel(&self) -> Option<&str>;

    /// Requests of this kind the platform's limits let out now for this channel; None while
    /// unknown (no limit learnt yet, or none).
    fn room(&self, method: Method, channel: &str) -> Option<u64>;

    /// Whether the platform keeps a thread under each card, which then takes the group's notes
    /// (acknowledgements, silences, pages, results of commands run on it) as its timeline.
    fn threads(&self) -> bool {
        false
    }

    /// For a post that was planned with `nonce` but never answered (a crash, a timeout): the
    /// message it made, if it made one. Platforms whose posts take a nonce need not look
    /// (posting again with it gives back the first message), so by default there is none.
    /// `thread`: the message the post replied to, for a post in a thread.
    fn recover<'a>(
        &'a self,
        _channel: &'a str,
        _nonce: &'a str,
        _thread: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Posted>, DeliveryError>> {
        Box::pin(async { Ok(None) })
    }

    /// Posts a message; `nonce` makes a retried post give back the message it first made
    /// instead of a second one.
    fn post<'a>(
        &'a self,
        channel: &'a str,
        message: Outgoing<'a>,
        nonce: &'a str,
    ) -> BoxFuture<'a, Result<Posted, DeliveryError>>;

    /// Puts `message` in place of one posted before; a resolved card loses its buttons.
    fn edit<'a>(
        &'a self,
        channel: &'a str,
        message_id: &'a str,
        message: Outgoing<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Replaces the answer to one request; `reply_to` is the platform's handle for it (Discord:
    /// the interaction's token).
    fn edit_reply<'a>(
        &'a self,
        reply_to: &'a str,
        reply: &'a Reply,
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// The core's [`Responder`] on any platform: edits the answer to one request.
pub struct ReplyEditor {
    platform: Arc<dyn ChatPlatform>,
    reply_to: String,
}

impl ReplyEditor {
    pub fn new(platform: Arc<dyn ChatPlatform>, reply_to: String) -> ReplyEditor {
        ReplyEditor { platform, reply_to }
    }
}

impl Responder for ReplyEditor {
    fn edit(&self, reply: Reply) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let title = self.platform.name().title();
            // A result must not be lost to a rate limit (a deploy edits its message often) or
            // to a refused upload: wait out the limit a few times, then send the text alone.
            let mut reply = reply;
            for _ in 0..4 {
                match self.platform.edit_reply(&self.reply_to, &reply).await {
                    Ok(()) => return Ok(()),
                    Err(DeliveryError::RateLimited { retry_after }) => {
                        tokio::time::sleep(retry_after.min(Duration::from_secs(10))).await;
                    }
                    Err(DeliveryError::Permanent(e)) if reply.attachment.is_some() => {
                        tracing::warn!(error = %e, "{title} refused the attachment; sending the text alone");
                        reply.attachment = None;
                        reply
                            .text
                            .push_str(&format!("\n(the attached file was refused by {title})"));
                    }
                    Err(e) => return Err(anyhow::anyhow!("{e:?}")),
                }
            }
            Err(anyhow::anyhow!("{title} kept rate-limiting the edit"))
        })
    }
}

/// The channel of the first of `routes` that takes `group`, else `alert_channel` (empty when
/// neither: the send then fails with the platform's own error).
pub fn route_channel(
    routes: &[AlertRoute],
    alert_channel: Option<&str>,
    group: &GroupView,
) -> String {
    routes
        .iter()
        .find(|r| route_matches(r, group))
        .map(|r| r.channel_id.clone())
        .or_else(|| alert_channel.map(str::to_string))
        .unwrap_or_default()
}

/// Whether a `routes` entry takes `group`: its severity is listed (or none are), and every
/// matcher equals the group's common or group label.
pub fn route_matches(route: &AlertRoute, group: &GroupView) -> bool {
    let label = |k: &str| {
        group
            .common_labels
            .get(k)
            .or_else(|| group.group_labels.get(k))
    };
    let severity_ok = route.severities.is_empty() || route.severities.contains(&group.severity);
    severity_ok
        && route
            .matchers
            .iter()
            .all(|(k, v)| label(k).is_some_and(|have| have == v))
}
