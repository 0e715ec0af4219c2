//! Discord: one chat platform. The adapter turns a [`Card`] or a [`Reply`] into Discord's
//! messages ([`render`]), sends them with its own pacing ([`send`]), registers the slash
//! commands ([`commands`]) and checks the signature of each interaction ([`verify`]).
//! Interactions reach the core through [`inbound`], whether Discord posts them to
//! `/discord/interactions` or sends them over the Gateway ([`gateway`], `discord.mode`).
//!
//! Interaction replies: the first answer is the HTTP response to Discord's request
//! ([`render::initial_response`] and its siblings), later ones are requests to the
//! interaction's webhook ([`DiscordAdapter::interaction_edit_original`],
//! [`DiscordAdapter::interaction_followup`]). A reply's file goes up with the edit of
//! `@original`, where command results arrive: `multipart/form-data` with the message as
//! `payload_json` and the file as `files[0]` (Discord's "Uploading Files"); the other answers
//! carry no files.

pub mod commands;
pub mod gateway;
pub mod inbound;
pub mod page;
pub mod render;
mod send;
pub mod verify;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use serenity::all::{
    ApplicationId, CreateCommand, CreateMessage, EditMessage, GuildId, InteractionId,
};
use serenity::http::{LightMethod, Route};

use self::render::{digest_embed, edit_original_body, edit_original_upload, followup_body};
use self::send::{interaction_bucket, parse_id, to_json, Body, Bucket, BucketKey, Pacing};
use crate::chat::platform::{ChatPlatform, Delivery, Limits, Method, Outgoing};
use crate::chat::{DeliveryError, Posted};
use crate::config::{AlertRoute, Settings};
use crate::request::{BoxFuture, Platform, Reply};
use crate::store::GroupView;

/// Discord's documented limits for one message.
pub mod limits {
    pub const TITLE: usize = 256;
    pub const DESCRIPTION: usize = 4096;
    pub const FIELDS: usize = 25;
    pub const FIELD_NAME: usize = 256;
    pub const FIELD_VALUE: usize = 1024;
    pub const FOOTER: usize = 2048;
    pub const EMBED_TOTAL: usize = 6000;
    pub const ROWS: usize = 5;
    pub const BUTTONS_PER_ROW: usize = 5;
    pub const BUTTON_LABEL: usize = 80;
    pub const CUSTOM_ID: usize = 100;
    pub const NONCE: usize = 25;
    pub const CONTENT: usize = 2000;
    /// Per file, for bots in a guild without boosts; more is refused with 413 (code 40005).
    pub const ATTACHMENT_BYTES: usize = crate::request::ATTACHMENT_MAX_BYTES;
    pub const ATTACHMENTS: usize = 10;
}

pub struct DiscordAdapter {
    client: reqwest::Client,
    /// `Bot <token>`; never logged.
    authorization: String,
    api_base: String,
    /// `discord.application_id`: needed for interaction webhooks and commands only.
    application_id: Option<ApplicationId>,
    global: DefaultDirectRateLimiter,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    /// A global 429 pauses everything until then.
    global_pause: Mutex<Option<Instant>>,
    /// `discord.alert_channel_id`: cards no route takes, and announcements.
    alert_channel_id: Option<String>,
    /// `discord.routes`: the first that matches a group picks its channel.
    routes: Vec<AlertRoute>,
    delivery: Delivery,
    /// DM channel per user id, so a page opens each DM once (bounded: [`page`]).
    dm_channels: Mutex<HashMap<String, String>>,
}

impl DiscordAdapter {
    pub fn new(all: &Settings) -> anyhow::Result<DiscordAdapter> {
        let settings = &all.discord;
        let token = settings
            .bot_token
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("discord.bot_token is not set"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.request_timeout_ms.min(5000)))
            .build()?;
        let per_sec = NonZeroU32::new(settings.global_requests_per_sec.max(1)).expect("at least 1");
        // Evenly spaced, no burst: at most per_sec + 1 requests in any one-second window.
        let quota = Quota::per_second(per_sec).allow_burst(NonZeroU32::MIN);
        Ok(DiscordAdapter {
            client,
            authorization: format!("Bot {}", token.expose_secret()),
            api_base: settings.api_base.trim_end_matches('/').to_string(),
            // serenity's ids are never 0.
            application_id: all
                .parsed
                .discord_application_id
                .filter(|&id| id != 0)
                .map(ApplicationId::new),
            global: RateLimiter::direct(quota),
            buckets: Mutex::new(HashMap::new()),
            global_pause: Mutex::new(None),
            alert_channel_id: settings.alert_channel_id.clone(),
            routes: all.parsed.discord_routes.clone(),
            delivery: Delivery {
                digest_after: settings.digest_after,
                refire_window: Duration::from_secs(settings.refire_window_secs),
            },
            dm_channels: Mutex::new(HashMap::new()),
        })
    }

    /// Posts a message. `nonce` makes a retried post return the first message instead of
    /// making a second one.
    pub async fn post(
        &self,
        channel: &str,
        message: Outgoing<'_>,
        nonce: &str,
    ) -> Result<Posted, DeliveryError> {
        let body = match message {
            Outgoing::Card(card) => {
                let (embed, rows) = render::card(card);
                CreateMessage::new().embed(embed).components(rows)
            }
            Outgoing::Digest { title, list } => {
                CreateMessage::new().embed(digest_embed(title, list))
            }
            // No mentions allowed: the text may quote what people typed.
            Outgoing::Text(text) | Outgoing::InThread { text, .. } => CreateMessage::new()
                .content(crate::domain::text::clip(text, 1999))
                .allowed_mentions(serenity::builder::CreateAllowedMentions::new()),
            Outgoing::Prompt(reply) => {
                let (content, embeds, rows) = render::prompt_message(reply);
                CreateMessage::new()
                    .content(content)
                    .embeds(embeds)
                    .components(rows)
                    .allowed_mentions(serenity::builder::CreateAllowedMentions::new())
            }
        };
        self.create(channel, body, nonce).await
    }

    /// Edits a message in place; a resolved card loses its buttons.
    pub async fn edit(
        &self,
        channel: &str,
        message_id: &str,
        message: Outgoing<'_>,
    ) -> Result<(), DeliveryError> {
        let body = match message {
            Outgoing::Card(card) => {
                let (embed, rows) = render::card(card);
                EditMessage::new().embed(embed).components(rows)
            }
            Outgoing::Digest { title, list } => EditMessage::new().embed(digest_embed(title, list)),
            Outgoing::Text(text) | Outgoing::InThread { text, .. } => EditMessage::new()
                .content(crate::domain::text::clip(text, 1999))
                .allowed_mentions(serenity::builder::CreateAllowedMentions::new()),
            Outgoing::Prompt(reply) => {
                let (content, embeds, rows) = render::prompt_message(reply);
                EditMessage::new()
                    .content(content)
                    .embeds(embeds)
                    .components(rows)
                    .allowed_mentions(serenity::builder::CreateAllowedMentions::new())
            }
        };
        self.patch(channel, message_id, body).await
    }

    fn application_id(&self) -> Result<ApplicationId, DeliveryError> {
        self.application_id.ok_or_else(|| {
            DeliveryError::Permanent(
                "discord.application_id is not set: copy it from Developer Portal → General Information".into(),
            )
        })
    }

    /// Replaces the interaction's first answer (`@original`): the deferred "thinking…"
    /// message, the reply, or, for a button, the message the button is on.
    pub async fn interaction_edit_original(
        &self,
        token: &str,
        reply: &Reply,
    ) -> Result<(), DeliveryError> {
        let route = Route::WebhookOriginalInteractionResponse {
            application_id: self.application_id()?,
            token,
        };
        let body = match &reply.attachment {
            None => Body::Json(to_json(&edit_original_body(reply))?),
            Some(file) => Body::Upload {
                payload_json: String::from_utf8(to_json(&edit_original_upload(reply))?)
                    .map_err(|e| DeliveryError::Permanent(format!("encoding: {e}")))?,
                file: file.clone(),
            },
        };
        self.send(
            route,
            LightMethod::Patch,
            &interaction_bucket(token),
            Pacing::InteractionWebhook,
            Some(body),
        )
        .await
        .map(|_| ())
    }

    /// Sends one more message for the interaction; answers its message id, so it can be edited
    /// and its buttons clicked later. Discord always waits for the message on this route.
    pub async fn interaction_followup(
        &self,
        token: &str,
        reply: &Reply,
    ) -> Result<String, DeliveryError> {
        let route = Route::WebhookFollowupMessages {
            application_id: self.application_id()?,
            token,
        };
        let body = followup_body(reply);
        let answer = self
            .send(
                route,
                LightMethod::Post,
                &interaction_bucket(token),
                Pacing::InteractionWebhook,
                Some(Body::Json(to_json(&body)?)),
            )
            .await?;
        answer
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| DeliveryError::Transient("Discord's answer has no message id".into()))
    }

    /// Answers an interaction that came over the Gateway with its initial response (Discord
    /// waits 3 s for it). Interaction routes are not counted against the bot's global limit.
    pub async fn interaction_callback(
        &self,
        interaction_id: &str,
        token: &str,
        response: &serde_json::Value,
    ) -> Result<(), DeliveryError> {
        let route = Route::InteractionResponse {
            interaction_id: InteractionId::new(parse_id(interaction_id)?),
            token,
        };
        self.send(
            route,
            LightMethod::Post,
            &interaction_bucket(token),
            Pacing::InteractionWebhook,
            Some(Body::Json(to_json(response)?)),
        )
        .await
        .map(|_| ())
    }

    /// The Gateway's address, from `GET /gateway/bot` (with the bot token).
    pub async fn gateway_url(&self) -> Result<String, DeliveryError> {
        let answer = self
            .send(
                Route::GatewayBot,
                LightMethod::Get,
                "gateway",
                Pacing::Bot,
                None,
            )
            .await?;
        answer
            .get("url")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                DeliveryError::Transient("Discord's /gateway/bot answer has no url".into())
            })
    }

    /// Replaces every command of the application, globally or in one guild, with `commands`
    /// (Discord's bulk overwrite). Answers the commands as Discord now has them.
    pub async fn overwrite_commands(
        &self,
        guild: Option<u64>,
        commands: &[CreateCommand],
    ) -> Result<Vec<serde_json::Value>, DeliveryError> {
        let application_id = self.application_id()?;
        let route = match guild {
            Some(g) => Route::GuildCommands {
                application_id,
                guild_id: GuildId::new(g.max(1)),
            },
            None => Route::Commands { application_id },
        };
        let answer = self
            .send(
                route,
                LightMethod::Put,
                &format!("commands:{application_id}"),
                Pacing::Bot,
                Some(Body::Json(to_json(&commands)?)),
            )
            .await?;
        match answer {
            serde_json::Value::Array(list) => Ok(list),
            other => Err(DeliveryError::Permanent(format!(
                "Discord answered something other than a list of commands: {}",
                other.to_string().chars().take(300).collect::<String>()
            ))),
        }
    }
}

impl ChatPlatform for DiscordAdapter {
    fn name(&self) -> Platform {
        Platform::Discord
    }

    fn limits(&self) -> Limits {
        Limits {
            text: limits::CONTENT,
            buttons: limits::ROWS * limits::BUTTONS_PER_ROW,
            attachment_bytes: limits::ATTACHMENT_BYTES,
        }
    }

    fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The first route that matches the group, else the alert channel.
    fn channel_for(&self, group: &GroupView) -> String {
        crate::chat::platform::route_channel(&self.routes, self.alert_channel_id.as_deref(), group)
    }

    fn alert_channel(&self) -> Option<&str> {
        self.alert_channel_id.as_deref()
    }

    fn room(&self, method: Method, channel: &str) -> Option<u64> {
        let method = match method {
            Method::Post => LightMethod::Post,
            Method::Edit => LightMethod::Patch,
        };
        self.room_for(method, channel)
    }

    fn post<'a>(
        &'a self,
        channel: &'a str,
        message: Outgoing<'a>,
        nonce: &'a str,
    ) -> BoxFuture<'a, Result<Posted, DeliveryError>> {
        Box::pin(DiscordAdapter::post(self, channel, message, nonce))
    }

    fn edit<'a>(
        &'a self,
        channel: &'a str,
        message_id: &'a str,
        message: Outgoing<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(DiscordAdapter::edit(self, channel, message_id, message))
    }

    fn edit_reply<'a>(
        &'a self,
        reply_to: &'a str,
        reply: &'a Reply,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.interaction_edit_original(reply_to, reply))
    }
}
