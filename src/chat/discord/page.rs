//! Discord, pages: a person is woken by a DM ([`DiscordAdapter`] as a [`Pager`], via `discord`)
//! or by a mention in a channel ([`DiscordMention`], via `discord-mention`). Both carry an
//! Acknowledge button that runs `/ack` on the group through the ordinary interaction path, and
//! both go through the adapter's one request path (pacing, 429s, nonces).

use std::sync::Arc;

use serenity::all::{
    ButtonStyle, CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed,
    CreateEmbedFooter, CreateMessage, RoleId, UserId,
};
use serenity::http::{LightMethod, Route};

use super::render::fit;
use super::send::{to_json, Body, Pacing};
use super::{limits, render, DiscordAdapter};
use crate::chat::DeliveryError;
use crate::domain::Severity;
use crate::request::page::{ack_button_id, Page, PageError, Pager};
use crate::request::BoxFuture;

/// DM channels remembered per user; past this the memory starts over (opening a DM again is
/// one cheap request that answers the same channel).
pub(super) const DM_CHANNELS_KEPT: usize = 4096;
/// Discord buckets `POST /users/@me/channels` on its own.
const DM_BUCKET: &str = "users/@me/channels";

/// Pages as mentions in a channel: target `CHANNEL_ID/USER_ID` or `CHANNEL_ID/&ROLE_ID`.
pub struct DiscordMention {
    adapter: Arc<DiscordAdapter>,
}

impl DiscordMention {
    pub fn new(adapter: Arc<DiscordAdapter>) -> DiscordMention {
        DiscordMention { adapter }
    }
}

/// Whom a mention pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mentioned {
    User(u64),
    Role(u64),
}

/// A Discord id as Discord writes it: digits only, never 0, fits in 64 bits.
fn snowflake(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|&n| n != 0)
}

/// Ids one mention names at most, users and roles together: their tags (up to 23 characters
/// each) must fit one message of 2,000, and `allowed_mentions` takes 100 of each.
const MENTIONED_MAX: usize = 80;

/// `CHANNEL/WHO[,WHO…]`, each WHO a user id or `&ROLE_ID`: everyone a step pages, in one
/// message, so a step costs the channel one post however many it pages.
fn mention_target(target: &str) -> Result<(u64, Vec<Mentioned>), PageError> {
    let bad = || {
        PageError::Permanent(format!(
            "{:?} is not a Discord mention target: CHANNEL_ID/USER_ID[,USER_ID|&ROLE_ID…]",
            crate::domain::text::clip(target, 60)
        ))
    };
    let (channel, list) = target.split_once('/').ok_or_else(bad)?;
    let channel = snowflake(channel).ok_or_else(bad)?;
    let mut who = Vec::new();
    for one in list.split(',') {
        who.push(match one.strip_prefix('&') {
            Some(role) => Mentioned::Role(snowflake(role).ok_or_else(bad)?),
            None => Mentioned::User(snowflake(one).ok_or_else(bad)?),
        });
    }
    let users = who
        .iter()
        .filter(|w| matches!(w, Mentioned::User(_)))
        .count();
    if users > MENTIONED_MAX || who.len() - users > MENTIONED_MAX {
        return Err(bad());
    }
    Ok((channel, who))
}

/// Discord's colour for a severity, as on the cards.
fn colour(severity: Option<&str>) -> u32 {
    severity
        .and_then(Severity::parse)
        .map(render::severity_colour)
        .unwrap_or(0x5865F2)
}

/// The page as an embed: title, summary, why, and the console's link when runbot knows it.
fn page_embed(page: &Page) -> CreateEmbed {
    let mut embed = CreateEmbed::new()
        .title(fit(&page.title, limits::TITLE))
        .colour(colour(page.severity.as_deref()));
    if !page.summary.trim().is_empty() {
        embed = embed.description(fit(&page.summary, 1500));
    }
    if !page.reason.trim().is_empty() {
        embed = embed.field("Why you", fit(&page.reason, limits::FIELD_VALUE), false);
    }
    if let Some(url) = page
        .url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .filter(|u| u.len() <= 1000)
    {
        embed = embed.url(url).field(
            "Console",
            fit(&format!("[Open the group]({url})"), limits::FIELD_VALUE),
            false,
        );
    }
    let mut footer = format!("runbot · page {}", page.id);
    if let Some(g) = page.group_id {
        footer.push_str(&format!(" · group {g}"));
    }
    embed.footer(CreateEmbedFooter::new(footer))
}

fn ack_row(page: &Page) -> Vec<CreateActionRow> {
    match page.group_id {
        Some(g) => vec![CreateActionRow::Buttons(vec![CreateButton::new(
            ack_button_id(g),
        )
        .label("Acknowledge")
        .style(ButtonStyle::Primary)])],
        None => Vec::new(),
    }
}

/// A nonce per page and way, so a retried send of the same page gives back the first message.
fn nonce(kind: &str, page: &Page) -> String {
    format!("rb-{kind}-{}", page.id)
}

fn page_error(e: DeliveryError) -> PageError {
    match e {
        DeliveryError::RateLimited { retry_after } => PageError::Temporary {
            reason: "over Discord's rate limit".into(),
            retry_after: Some(retry_after),
        },
        DeliveryError::Transient(reason) => PageError::Temporary {
            reason,
            retry_after: None,
        },
        DeliveryError::MessageGone => PageError::Permanent("Discord lost the message".into()),
        DeliveryError::Permanent(reason) if reason.contains("50007") => PageError::Permanent(
            format!(
                "Discord will not deliver a DM to this user (50007: they share no server with the bot, or do not take DMs): {}",
                fit(&reason, 300)
            ),
        ),
        DeliveryError::Permanent(reason) => PageError::Permanent(fit(&reason, 500)),
    }
}

impl DiscordAdapter {
    /// The DM channel with `user`, opened once and then remembered.
    async fn dm_channel(&self, user: u64) -> Result<String, DeliveryError> {
        let key = user.to_string();
        if let Some(c) = self.dm_channels.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let body = serde_json::json!({ "recipient_id": key });
        let answer = self
            .send(
                Route::UserMeDmChannels,
                LightMethod::Post,
                DM_BUCKET,
                Pacing::Bot,
                Some(Body::Json(to_json(&body)?)),
            )
            .await?;
        let channel = answer
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|id| snowflake(id).is_some())
            .ok_or_else(|| DeliveryError::Transient("Discord's DM channel has no valid id".into()))?
            .to_string();
        let mut kept = self.dm_channels.lock().unwrap();
        if kept.len() >= DM_CHANNELS_KEPT {
            kept.clear();
        }
        kept.insert(key, channel.clone());
        Ok(channel)
    }

    /// Sends a page as a DM to user `target` (a Discord user id).
    pub async fn page_dm(&self, target: &str, page: &Page) -> Result<(), PageError> {
        let user = snowflake(target).ok_or_else(|| {
            PageError::Permanent(format!(
                "{:?} is not a Discord user id (a number such as 100000000000000001)",
                crate::domain::text::clip(target, 40)
            ))
        })?;
        let channel = self.dm_channel(user).await.map_err(page_error)?;
        let message = CreateMessage::new()
            .content(fit(&format!("🚨 You are paged: {}", page.title), 1999))
            .embed(page_embed(page))
            .components(ack_row(page))
            .allowed_mentions(CreateAllowedMentions::new());
        match self.create(&channel, message, &nonce("dm", page)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // A channel Discord no longer knows is opened again on the next try.
                if matches!(e, DeliveryError::Permanent(_)) {
                    self.dm_channels.lock().unwrap().remove(&user.to_string());
                }
                Err(page_error(e))
            }
        }
    }

    /// Mentions the users and roles of `target` (`CHANNEL/USER,&ROLE,…`) in its channel,
    /// pinging only them.
    pub async fn page_mention(&self, target: &str, page: &Page) -> Result<(), PageError> {
        let (channel, who) = mention_target(target)?;
        let mut tags = Vec::with_capacity(who.len());
        let (mut users, mut roles) = (Vec::new(), Vec::new());
        for w in &who {
            match *w {
                Mentioned::User(u) => {
                    tags.push(format!("<@{u}>"));
                    users.push(UserId::new(u));
                }
                Mentioned::Role(r) => {
                    tags.push(format!("<@&{r}>"));
                    roles.push(RoleId::new(r));
                }
            }
        }
        let tag = tags.join(" ");
        let allowed = CreateAllowedMentions::new().users(users).roles(roles);
        // The tags are kept whole: the title and reason are cut to what is left.
        let rest = format!(" paged: {} · {}", page.title, page.reason);
        let text = format!(
            "{tag}{}",
            fit(&rest, 1999usize.saturating_sub(tag.chars().count()))
        );
        let message = CreateMessage::new()
            .content(text)
            .embed(page_embed(page))
            .components(ack_row(page))
            .allowed_mentions(allowed);
        self.create(&channel.to_string(), message, &nonce("mention", page))
            .await
            .map(|_| ())
            .map_err(page_error)
    }
}

impl Pager for DiscordAdapter {
    fn via(&self) -> &'static str {
        "discord"
    }

    fn send<'a>(&'a self, target: &'a str, page: &'a Page) -> BoxFuture<'a, Result<(), PageError>> {
        Box::pin(self.page_dm(target, page))
    }
}

impl Pager for DiscordMention {
    fn via(&self) -> &'static str {
        "discord-mention"
    }

    fn send<'a>(&'a self, target: &'a str, page: &'a Page) -> BoxFuture<'a, Result<(), PageError>> {
        Box::pin(self.adapter.page_mention(target, page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ButtonId;

    #[test]
    fn mention_targets_are_a_channel_and_a_user_or_role() {
        assert_eq!(
            mention_target("123/456"),
            Ok((123, vec![Mentioned::User(456)]))
        );
        assert_eq!(
            mention_target("123/&789"),
            Ok((123, vec![Mentioned::Role(789)]))
        );
        assert_eq!(
            mention_target("123/456,&789,457"),
            Ok((
                123,
                vec![
                    Mentioned::User(456),
                    Mentioned::Role(789),
                    Mentioned::User(457)
                ]
            ))
        );
        let many = (1..=101)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            mention_target(&format!("123/{many}")).is_err(),
            "over 100 users"
        );
        for bad in [
            "",
            "123",
            "123/",
            "/456",
            "123/@456",
            "123/&",
            "abc/456",
            "123/456/7",
            "123/456,",
            "123/,456",
            "0/456",
            "123/-4",
            "123/99999999999999999999999",
        ] {
            assert!(
                matches!(mention_target(bad), Err(PageError::Permanent(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_ack_button_is_a_command_button_for_the_group() {
        assert_eq!(ack_button_id(12), "rb1c:ack:group=12");
        assert_eq!(
            ButtonId::parse(&ack_button_id(12)),
            Some(ButtonId::Command {
                command: "ack".into(),
                args: vec![("group".into(), "12".into())]
            })
        );
    }

    #[test]
    fn errors_map_to_retry_or_not() {
        let wait = std::time::Duration::from_millis(1500);
        assert_eq!(
            page_error(DeliveryError::RateLimited { retry_after: wait }),
            PageError::Temporary {
                reason: "over Discord's rate limit".into(),
                retry_after: Some(wait)
            }
        );
        assert!(matches!(
            page_error(DeliveryError::Transient("Discord answered 502".into())),
            PageError::Temporary {
                retry_after: None,
                ..
            }
        ));
        let e = page_error(DeliveryError::Permanent(
            r#"Discord answered 403: {"message":"Cannot send messages to this user","code":50007}"#
                .into(),
        ));
        assert!(
            matches!(&e, PageError::Permanent(m) if m.contains("will not deliver a DM")),
            "{e:?}"
        );
    }
}
