//! A chat platform held in memory, for tests: what a real platform would show, kept as data.
//! It behaves like one where runbot can tell: a repeated nonce gives back the message it first
//! made, editing an unknown message is [`DeliveryError::MessageGone`], and text or a file over
//! its limits is refused for good.

use std::sync::Mutex;
use std::time::Duration;

use super::platform::{ChatPlatform, Delivery, Limits, Method, Outgoing};
use super::{Card, DeliveryError, Posted};
use crate::request::{BoxFuture, Platform, Reply};
use crate::store::GroupView;

pub struct MemoryPlatform {
    name: Platform,
    /// Every card and announcement goes here.
    channel: String,
    limits: Limits,
    shown: Mutex<Shown>,
}

/// What the platform shows, and how many requests made it so.
#[derive(Debug, Default, Clone)]
pub struct Shown {
    pub messages: Vec<Message>,
    /// The answers to requests, by the handle they were edited through.
    pub replies: Vec<(String, Reply)>,
    pub posts: usize,
    pub edits: usize,
}

impl Shown {
    pub fn cards(&self) -> impl Iterator<Item = (&Message, &Card)> {
        self.messages.iter().filter_map(|m| match &m.body {
            Body::Card(c) => Some((m, &**c)),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub channel: String,
    pub nonce: String,
    pub body: Body,
    /// Times it was edited since it was posted.
    pub edits: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Card(Box<Card>),
    Digest { title: String, list: String },
    Text(String),
}

impl MemoryPlatform {
    /// Small limits, so tests can reach them.
    pub fn new(name: Platform) -> MemoryPlatform {
        MemoryPlatform {
            name,
            channel: "alerts".into(),
            limits: Limits {
                text: 200,
                buttons: 5,
                attachment_bytes: 1024,
            },
            shown: Mutex::new(Shown::default()),
        }
    }

    pub fn shown(&self) -> Shown {
        self.shown.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until what the platform shows passes `check`, and answers it.
    pub async fn until(&self, what: &str, check: impl Fn(&Shown) -> bool) -> Shown {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let shown = self.shown();
            if check(&shown) {
                return shown;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 10 s; the platform shows {shown:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the platform keeps of a message; text over its limit is refused for good.
    fn body(&self, message: Outgoing<'_>) -> Result<Body, DeliveryError> {
        Ok(match message {
            Outgoing::Card(card) => Body::Card(Box::new(card.clone())),
            Outgoing::Digest { title, list } => Body::Digest {
                title: title.into(),
                list: list.into(),
            },
            Outgoing::Text(text) | Outgoing::InThread { text, .. }
                if text.chars().count() > self.limits.text =>
            {
                return Err(DeliveryError::Permanent(format!(
                    "text over {} characters",
                    self.limits.text
                )))
            }
            Outgoing::Text(text) | Outgoing::InThread { text, .. } => Body::Text(text.into()),
            Outgoing::Prompt(reply) => Body::Text(reply.text.clone()),
        })
    }

    fn keep(&self, channel: &str, nonce: &str, body: Body) -> Result<Posted, DeliveryError> {
        let mut shown = self.shown.lock().unwrap();
        shown.posts += 1;
        if let Some(m) = shown.messages.iter().find(|m| m.nonce == nonce) {
            return Ok(Posted {
                message_id: m.id.clone(),
            });
        }
        let id = (shown.messages.len() + 1).to_string();
        shown.messages.push(Message {
            id: id.clone(),
            channel: channel.to_string(),
            nonce: nonce.to_string(),
            body,
            edits: 0,
        });
        Ok(Posted { message_id: id })
    }

    fn replace(&self, channel: &str, message_id: &str, body: Body) -> Result<(), DeliveryError> {
        let mut shown = self.shown.lock().unwrap();
        shown.edits += 1;
        let m = shown
            .messages
            .iter_mut()
            .find(|m| m.id == message_id && m.channel == channel)
            .ok_or(DeliveryError::MessageGone)?;
        m.body = body;
        m.edits += 1;
        Ok(())
    }
}

impl ChatPlatform for MemoryPlatform {
    fn name(&self) -> Platform {
        self.name
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            digest_after: 5,
            refire_window: Duration::from_secs(3600),
        }
    }

    fn channel_for(&self, _group: &GroupView) -> String {
        self.channel.clone()
    }

    fn alert_channel(&self) -> Option<&str> {
        Some(&self.channel)
    }

    /// No rate limits: everything may go at once.
    fn room(&self, _method: Method, _channel: &str) -> Option<u64> {
        None
    }

    fn post<'a>(
        &'a self,
        channel: &'a str,
        message: Outgoing<'a>,
        nonce: &'a str,
    ) -> BoxFuture<'a, Result<Posted, DeliveryError>> {
        Box::pin(async move {
            let body = self.body(message)?;
            self.keep(channel, nonce, body)
        })
    }

    fn edit<'a>(
        &'a self,
        channel: &'a str,
        message_id: &'a str,
        message: Outgoing<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let body = self.body(message)?;
            self.replace(channel, message_id, body)
        })
    }

    fn edit_reply<'a>(
        &'a self,
        reply_to: &'a str,
        reply: &'a Reply,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            if reply
                .attachment
                .as_ref()
                .is_some_and(|f| f.content.len() > self.limits.attachment_bytes)
            {
                return Err(DeliveryError::Permanent("file too large".into()));
            }
            let mut shown = self.shown.lock().unwrap();
            shown.edits += 1;
            shown.replies.retain(|(to, _)| to != reply_to);
            shown.replies.push((reply_to.to_string(), reply.clone()));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;
    use crate::alerts::{classify, Webhook};
    use crate::chat::outbox::Outbox;
    use crate::chat::platform::ReplyEditor;
    use crate::config::Settings;
    use crate::domain::alert::IncomingGroup;
    use crate::policy::SeverityMap;
    use crate::request::{Attachment, Responder};
    use crate::runbook::Runbook;
    use crate::store::writer::Writer;
    use crate::store::Store;

    /// Alertmanager's webhook for one group with these alerts firing (Alertmanager always
    /// sends the whole group).
    fn webhook(instances: &[&str]) -> IncomingGroup {
        let alerts: Vec<serde_json::Value> = instances
            .iter()
            .enumerate()
            .map(|(i, instance)| {
                serde_json::json!({
                    "status": "firing",
                    "labels": {"alertname": "DiskFull", "instance": instance},
                    "annotations": {}, "startsAt": "2026-11-27T19:31:13Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://p",
                    "fingerprint": format!("{i:016x}"),
                })
            })
            .collect();
        let body = serde_json::json!({
            "version": "4", "status": "firing", "receiver": "bot",
            "groupKey": "{}:{alertname=\"DiskFull\"}",
            "truncatedAlerts": 0, "groupLabels": {"alertname": "DiskFull"},
            "commonLabels": {"alertname": "DiskFull"},
            "commonAnnotations": {}, "externalURL": "http://am:9093",
            "alerts": alerts,
        });
        classify(
            Webhook::parse(body.to_string().as_bytes()).unwrap(),
            &SeverityMap::load(None).unwrap(),
            &Runbook::load(None).unwrap(),
        )
    }

    fn names(card: &Card) -> Vec<&str> {
        let mut names: Vec<&str> = card.alerts.iter().map(|a| a.name.as_str()).collect();
        names.sort();
        names
    }

    // The real store and the real outbox, delivering to a platform that is not Discord.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_outbox_posts_a_card_once_then_edits_it_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let settings =
            Settings::load_from(None, vec![("RUNBOT__DATABASE__URL".into(), url)]).unwrap();
        let platform = Arc::new(MemoryPlatform::new(Platform::Console));
        let store = Store::connect(&settings.database)
            .await
            .unwrap()
            .with_chat_platforms(vec![platform.name().to_string()]);
        let (writer, _done) =
            Writer::spawn(store.clone(), 100, crate::alerts::lifecycle::apply).unwrap();
        let runbook = Arc::new(Runbook::load(None).unwrap());
        let wake = Arc::new(Notify::new());
        let start = || {
            let outbox = Outbox::new(
                store.clone(),
                runbook.clone(),
                platform.clone(),
                wake.clone(),
            );
            tokio::spawn(Arc::new(outbox).run())
        };

        let outbox = start();
        writer.ingest(webhook(&["db-1"])).await.unwrap();
        wake.notify_one();
        let shown = platform
            .until("the group's card", |s| s.cards().count() == 1)
            .await;
        let (message, card) = shown.cards().next().unwrap();
        assert_eq!(
            (message.channel.as_str(), names(card)),
            ("alerts", vec!["db-1"])
        );
        let id = message.id.clone();

        // An alert joins the group: the same card shows it.
        writer.ingest(webhook(&["db-1", "db-2"])).await.unwrap();
        wake.notify_one();
        let shown = platform
            .until("the card edited", |s| {
                s.cards().any(|(_, c)| c.alerts.len() == 2)
            })
            .await;
        assert_eq!(shown.cards().count(), 1, "{shown:#?}");
        assert_eq!(shown.posts, 1);
        let (message, card) = shown.cards().next().unwrap();
        assert_eq!((message.id.as_str(), message.edits), (id.as_str(), 1));
        assert_eq!(names(card), ["db-1", "db-2"]);

        // The outbox stops and starts again: it finds the card in the store and edits it.
        drained(&store, &platform).await;
        outbox.abort();
        assert!(outbox.await.unwrap_err().is_cancelled());
        let outbox = start();
        writer
            .ingest(webhook(&["db-1", "db-2", "db-3"]))
            .await
            .unwrap();
        wake.notify_one();
        let shown = platform
            .until("the card edited after a restart", |s| {
                s.cards().any(|(_, c)| c.alerts.len() == 3)
            })
            .await;
        assert_eq!(shown.posts, 1, "posted twice: {shown:#?}");
        assert_eq!(shown.messages.len(), 1);
        assert_eq!(shown.messages[0].edits, 2);
        drained(&store, &platform).await;
        outbox.abort();
    }

    /// Waits until the outbox has marked every notice done: it does so just after the edit
    /// returns, so a card can be seen edited a moment before.
    async fn drained(store: &Store, platform: &MemoryPlatform) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = store
                .notice_backlog(platform.name().as_str())
                .await
                .unwrap();
            if left == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{left} notices still queued"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn text_and_files_over_the_platforms_limits_are_refused() {
        let platform = Arc::new(MemoryPlatform::new(Platform::Console));
        let long = "x".repeat(platform.limits().text + 1);
        assert!(matches!(
            platform.post("alerts", Outgoing::Text(&long), "n1").await,
            Err(DeliveryError::Permanent(_))
        ));
        assert!(platform.shown().messages.is_empty());

        // The responder any platform gets sends the text alone when the file is refused.
        let editor = ReplyEditor::new(platform.clone(), "request-1".into());
        let reply = Reply {
            text: "the logs".into(),
            attachment: Some(Attachment {
                filename: "logs.txt".into(),
                content: vec![b'l'; platform.limits().attachment_bytes + 1],
            }),
            ..Reply::default()
        };
        editor.edit(reply).await.unwrap();
        let shown = platform.shown();
        let (to, sent) = &shown.replies[0];
        assert_eq!(to, "request-1");
        assert_eq!(sent.attachment, None);
        assert_eq!(
            sent.text,
            "the logs\n(the attached file was refused by the console)"
        );
    }
}
