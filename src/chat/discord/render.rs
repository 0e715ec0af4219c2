//! Discord, rendering: a [`Card`] or a [`Reply`] becomes a message built with serenity's
//! builders, cut to Discord's limits.

use serenity::all::{
    ButtonStyle, CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed,
    CreateEmbedFooter, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, EditInteractionResponse,
};

use super::limits;
use crate::chat::Card;
use crate::domain::parse_stored_time;
pub(super) use crate::domain::text::fit;
use crate::domain::text::{fit_tail, lines_within};
use crate::domain::Severity;
use crate::request::{Reply, ReplyButton};

/// Alerts listed on a card; the rest are counted.
const LISTED_ALERTS: usize = 15;
/// The card's description is kept short enough that every part fits in 6000 characters.
const DESCRIPTION_BUDGET: usize = 1500;

fn colour(card: &Card) -> u32 {
    if card.resolved {
        return 0x2EB67D;
    }
    severity_colour(card.severity)
}

/// A severity's colour on cards and pages.
pub(super) fn severity_colour(severity: Severity) -> u32 {
    match severity {
        Severity::Sev1 => 0xE01E5A,
        Severity::Sev2 => 0xF2711C,
        Severity::Sev3 => 0xECB22E,
        Severity::Sev4 => 0x36C5F0,
    }
}

/// `<t:UNIX:R>`: Discord shows it as "5 minutes ago" in the reader's own time zone.
fn relative_time(rfc3339: &str) -> String {
    parse_stored_time(rfc3339)
        .map(|t| format!("<t:{}:R>", t.timestamp()))
        .unwrap_or_else(|| rfc3339.to_string())
}

/// Discord shows `<t:…:f>` as a date and time in each reader's own time zone.
fn absolute_time(rfc3339: &str) -> String {
    parse_stored_time(rfc3339)
        .map(|t| format!("<t:{}:f>", t.timestamp()))
        .unwrap_or_else(|| rfc3339.to_string())
}

pub(super) fn digest_embed(title: &str, list: &str) -> CreateEmbed {
    CreateEmbed::new()
        .title(fit(title, limits::TITLE))
        .description(fit(list, limits::DESCRIPTION))
        .colour(0xE01E5A)
        .footer(CreateEmbedFooter::new(
            "runbot · storm digest: cards follow as Discord's limits allow",
        ))
}

/// Interaction response types (Discord API).
pub mod response_type {
    pub const CHANNEL_MESSAGE_WITH_SOURCE: u64 = 4;
    pub const DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: u64 = 5;
    pub const DEFERRED_UPDATE_MESSAGE: u64 = 6;
    pub const UPDATE_MESSAGE: u64 = 7;
}

fn response_json(response: CreateInteractionResponse) -> serde_json::Value {
    serde_json::to_value(response).expect("serenity's response builders serialize to JSON")
}

/// Type 4, CHANNEL_MESSAGE_WITH_SOURCE: the reply itself, as the HTTP answer to the interaction.
pub fn initial_response(reply: &Reply) -> serde_json::Value {
    let r = render_reply(reply);
    let mut message = CreateInteractionResponseMessage::new()
        .embeds(r.embeds)
        .components(r.rows)
        .allowed_mentions(no_pings());
    if !r.content.is_empty() {
        message = message.content(r.content);
    }
    if reply.ephemeral {
        message = message.ephemeral(true);
    }
    response_json(CreateInteractionResponse::Message(message))
}

/// Type 5, DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: Discord shows "thinking…" until
/// [`DiscordAdapter::interaction_edit_original`] (or the first followup) replaces it. Whether it
/// is ephemeral is decided now, not by the later reply.
pub fn deferred_response(ephemeral: bool) -> serde_json::Value {
    let mut message = CreateInteractionResponseMessage::new();
    if ephemeral {
        message = message.ephemeral(true);
    }
    response_json(CreateInteractionResponse::Defer(message))
}

/// Type 6, DEFERRED_UPDATE_MESSAGE: for a button; nothing shows now, and `@original` is the
/// message the button is on.
pub fn deferred_update() -> serde_json::Value {
    response_json(CreateInteractionResponse::Acknowledge)
}

/// Type 7, UPDATE_MESSAGE: for a button; the message it is on becomes the reply. Its buttons are
/// replaced too, so an empty list removes them.
pub fn update_message(reply: &Reply) -> serde_json::Value {
    let r = render_reply(reply);
    let message = CreateInteractionResponseMessage::new()
        .content(r.content)
        .embeds(r.embeds)
        .components(r.rows)
        .allowed_mentions(no_pings());
    response_json(CreateInteractionResponse::UpdateMessage(message))
}

/// The body of `PATCH …/messages/@original`: every part is set, so what the reply lacks is
/// cleared (`components: []` removes the buttons of an answered prompt).
pub fn edit_original_body(reply: &Reply) -> EditInteractionResponse {
    let r = render_reply(reply);
    EditInteractionResponse::new()
        .content(r.content)
        .embeds(r.embeds)
        .components(r.rows)
        .allowed_mentions(no_pings())
}

/// The `payload_json` of an edit of `@original` that uploads the reply's file: the same
/// message, and `attachments` naming the file by the index of its `files[n]` part. Listing only
/// the new file also drops any the message had, as the rest of the message is replaced too.
pub fn edit_original_upload(reply: &Reply) -> serde_json::Value {
    let mut body = serde_json::to_value(edit_original_body(reply))
        .expect("serenity's edit builder serializes to JSON");
    if let (Some(file), Some(map)) = (&reply.attachment, body.as_object_mut()) {
        map.insert(
            "attachments".into(),
            serde_json::json!([{ "id": "0", "filename": file.filename }]),
        );
    }
    body
}

pub fn followup_body(reply: &Reply) -> CreateInteractionResponseFollowup {
    let r = render_reply(reply);
    let mut body = CreateInteractionResponseFollowup::new()
        .embeds(r.embeds)
        .components(r.rows)
        .allowed_mentions(no_pings());
    if !r.content.is_empty() {
        body = body.content(r.content);
    }
    if reply.ephemeral {
        body = body.ephemeral(true);
    }
    body
}

/// A prompt posted to a channel as a message of its own, with its buttons.
pub fn prompt_message(reply: &Reply) -> (String, Vec<CreateEmbed>, Vec<CreateActionRow>) {
    let r = render_reply(reply);
    (r.content, r.embeds, r.rows)
}

/// Replies echo what people typed, so nothing in them pings anyone.
fn no_pings() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

/// A reply within Discord's limits.
struct RenderedReply {
    content: String,
    /// None or one.
    embeds: Vec<CreateEmbed>,
    rows: Vec<CreateActionRow>,
}

fn render_reply(reply: &Reply) -> RenderedReply {
    RenderedReply {
        content: reply_content(&reply.text, reply.code_block.as_deref()),
        embeds: reply_embed(&reply.fields).into_iter().collect(),
        rows: reply_rows(&reply.buttons),
    }
}

/// The text, then the code block; each cut so both fit in one message's content.
fn reply_content(text: &str, code: Option<&str>) -> String {
    let text = text.trim_end();
    let Some(code) = code else {
        return fit(text, limits::CONTENT);
    };
    // A fence inside the block would end it early.
    let code = code.trim_end_matches('\n').replace("```", "`\u{200b}``");
    let fences = if text.is_empty() { 8 } else { 9 };
    let (text_len, code_len) = (text.chars().count(), code.chars().count());
    let text = if text_len + fences + code_len <= limits::CONTENT {
        text.to_string()
    } else {
        // The block keeps at least half the message when it is that long.
        fit(
            text,
            text_len.min(limits::CONTENT - fences - code_len.min(limits::CONTENT / 2)),
        )
    };
    let code = fit_tail(&code, limits::CONTENT - fences - text.chars().count());
    if text.is_empty() {
        format!("```\n{code}\n```")
    } else {
        format!("{text}\n```\n{code}\n```")
    }
}

/// Discord refuses blank field names and values.
fn field_text(s: &str, max: usize) -> String {
    if s.trim().is_empty() {
        "\u{200b}".to_string()
    } else {
        fit(s, max)
    }
}

/// The fields as one embed, as many as fit in 25 fields and 6000 characters; the rest counted.
fn reply_embed(fields: &[(String, String)]) -> Option<CreateEmbed> {
    if fields.is_empty() {
        return None;
    }
    // Room kept for the "+N more" field.
    const MORE: usize = 40;
    let mut embed = CreateEmbed::new();
    let (mut used, mut shown) = (0, 0);
    for (i, (name, value)) in fields.iter().enumerate() {
        let (name, value) = (
            field_text(name, limits::FIELD_NAME),
            field_text(value, limits::FIELD_VALUE),
        );
        let size = name.chars().count() + value.chars().count();
        let more_follow = i + 1 < fields.len();
        if used + size > limits::EMBED_TOTAL - MORE || (more_follow && shown + 1 >= limits::FIELDS)
        {
            break;
        }
        used += size;
        shown += 1;
        embed = embed.field(name, value, false);
    }
    if shown < fields.len() {
        embed = embed.field("…", format!("+{} more", fields.len() - shown), false);
    }
    Some(embed)
}

/// Buttons five to a row, five rows at most. A button whose id Discord would refuse (empty,
/// too long, or repeated) is left out rather than cut: a cut id would run something else.
fn reply_rows(buttons: &[ReplyButton]) -> Vec<CreateActionRow> {
    let mut seen = std::collections::HashSet::new();
    let usable: Vec<&ReplyButton> = buttons
        .iter()
        .filter(|b| {
            !b.id.is_empty()
                && b.id.chars().count() <= limits::CUSTOM_ID
                && seen.insert(b.id.as_str())
        })
        .take(limits::ROWS * limits::BUTTONS_PER_ROW)
        .collect();
    usable
        .chunks(limits::BUTTONS_PER_ROW)
        .map(|chunk| {
            CreateActionRow::Buttons(
                chunk
                    .iter()
                    .map(|b| {
                        let label = if b.label.trim().is_empty() {
                            "…".to_string()
                        } else {
                            fit(&b.label, limits::BUTTON_LABEL)
                        };
                        CreateButton::new(b.id.clone())
                            .label(label)
                            .style(match b.style {
                                crate::request::ButtonStyle::Primary => ButtonStyle::Primary,
                                crate::request::ButtonStyle::Secondary => ButtonStyle::Secondary,
                                crate::request::ButtonStyle::Success => ButtonStyle::Success,
                                crate::request::ButtonStyle::Danger => ButtonStyle::Danger,
                            })
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The embed and the button rows for a card, within Discord's limits.
pub fn card(card: &Card) -> (CreateEmbed, Vec<CreateActionRow>) {
    let mut description = String::new();
    if card.resolved {
        match card.fired_for {
            Some(d) => description.push_str(&format!(
                "✅ **Resolved** after {}\n",
                crate::domain::duration::short(d)
            )),
            None => description.push_str("✅ **Resolved**\n"),
        }
    }
    if let Some(ack) = &card.acknowledged {
        let after = card
            .escalation
            .as_ref()
            .and_then(|e| e.acked_after.as_deref())
            .map(|a| format!(" after {a}"))
            .unwrap_or_default();
        description.push_str(&format!(
            "👀 Acknowledged by **{}**{after} {}\n",
            fit(&ack.by, 100),
            relative_time(&ack.at)
        ));
    }
    if let Some(e) = card.escalation.as_ref().filter(|_| !card.resolved) {
        if let Some(paging) = &e.paging {
            description.push_str(&fit(paging, 300));
            if let Some((who, at)) = &e.next {
                description.push_str(&format!(" · next: {} {}", fit(who, 200), relative_time(at)));
            }
            description.push('\n');
        }
        for n in e.notes.iter().take(3) {
            description.push_str(&format!("⏭️ {}\n", fit(n, 200)));
        }
    }
    if let Some(silence) = &card.silenced {
        description.push_str(&format!(
            "🔕 Silenced by **{}** until {}\n",
            fit(&silence.by, 100),
            absolute_time(&silence.at)
        ));
    }
    for part in [&card.summary, &card.description, &card.meaning]
        .into_iter()
        .flatten()
    {
        if !description.contains(part.as_str()) {
            description.push_str(part);
            description.push('\n');
        }
    }
    let description = fit(description.trim_end(), DESCRIPTION_BUDGET);

    let firing = card.alerts_firing;
    let alert_lines: Vec<String> = card
        .alerts
        .iter()
        .take(LISTED_ALERTS)
        .map(|a| {
            let mark = if a.firing { "🔴" } else { "🟢" };
            format!(
                "{mark} {} · since {}",
                fit(&a.name, 120),
                relative_time(&a.since)
            )
        })
        .collect();
    let listed = card.alerts.len().min(LISTED_ALERTS);
    let unlisted = usize::try_from(card.alerts_total)
        .unwrap_or(0)
        .saturating_sub(listed)
        + usize::try_from(card.truncated_alerts).unwrap_or(0);
    let mut embed = CreateEmbed::new()
        .title(fit(&card.title, limits::TITLE))
        .colour(colour(card))
        .field(
            fit(
                &format!(
                    "Alerts: {firing} firing, {} resolved",
                    card.alerts_total - firing
                ),
                limits::FIELD_NAME,
            ),
            lines_within(&alert_lines, limits::FIELD_VALUE, unlisted),
            false,
        );
    if !description.is_empty() {
        embed = embed.description(description);
    }
    if !card.checks.is_empty() && !card.resolved {
        let checks: Vec<String> = card
            .checks
            .iter()
            .map(|c| format!("• {}", fit(c, 200)))
            .collect();
        embed = embed.field(
            "What to check",
            lines_within(&checks, limits::FIELD_VALUE, 0),
            false,
        );
    }
    let links: Vec<String> = card
        .links
        .iter()
        .map(|l| format!("[{}]({})", l.label, l.url))
        .filter(|l| l.chars().count() <= 500)
        .collect();
    if !links.is_empty() {
        embed = embed.field("Links", fit(&links.join(" · "), limits::FIELD_VALUE), false);
    }
    let mut footer = format!("runbot · group {}", card.group_id);
    if let Some(note) = &card.note {
        footer.push_str(" · ");
        footer.push_str(note);
    }
    embed = embed.footer(CreateEmbedFooter::new(fit(&footer, 300)));
    if let Some(t) = parse_stored_time(&card.started_at) {
        if let Ok(ts) = serenity::model::Timestamp::from_unix_timestamp(t.timestamp()) {
            embed = embed.timestamp(ts);
        }
    }

    let rows = card
        .actions
        .chunks(limits::BUTTONS_PER_ROW)
        .take(limits::ROWS)
        .map(|chunk| {
            CreateActionRow::Buttons(
                chunk
                    .iter()
                    .filter(|a| a.id.len() <= limits::CUSTOM_ID)
                    .map(|a| {
                        CreateButton::new(a.id.clone())
                            .label(fit(&a.label, limits::BUTTON_LABEL))
                            .style(if a.risky {
                                ButtonStyle::Danger
                            } else {
                                ButtonStyle::Secondary
                            })
                    })
                    .collect(),
            )
        })
        .collect();
    (embed, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{CardAction, CardAlert};

    fn big_card() -> Card {
        Card {
            group_id: 1,
            resolved: false,
            severity: Severity::Sev2,
            title: "T".repeat(400),
            summary: Some("s".repeat(5000)),
            description: Some("d".repeat(5000)),
            meaning: None,
            alerts: (0..300)
                .map(|i| CardAlert {
                    name: format!("host-{i}-{}", "x".repeat(100)),
                    firing: i % 2 == 0,
                    since: "2026-11-27T10:00:00Z".into(),
                })
                .collect(),
            alerts_total: 300,
            alerts_firing: 150,
            truncated_alerts: 12,
            links: vec![],
            checks: (0..40)
                .map(|i| format!("check {i} {}", "c".repeat(80)))
                .collect(),
            actions: (0..40)
                .map(|i| CardAction {
                    id: format!("rb1:1:{i}"),
                    label: "L".repeat(100),
                    risky: false,
                })
                .collect(),
            fired_for: None,
            started_at: "2026-11-27T10:00:00Z".into(),
            note: Some("n".repeat(3000)),
            acknowledged: Some(crate::chat::Mark {
                by: "a".repeat(500),
                at: "2026-11-27T10:00:00Z".into(),
            }),
            silenced: Some(crate::chat::Mark {
                by: "b".repeat(500),
                at: "2026-11-27T11:00:00Z".into(),
            }),
            escalation: Some(crate::chat::EscalationLine {
                paging: Some(format!("📟 Paging {}", "p".repeat(2000))),
                next: Some(("n".repeat(2000), "2026-11-27T11:00:00Z".into())),
                acked_after: None,
                notes: vec!["s".repeat(2000); 10],
            }),
        }
    }

    fn big_reply() -> Reply {
        let mut buttons: Vec<ReplyButton> = (0..40)
            .map(|i| ReplyButton {
                id: format!("rb1:confirm:{i}"),
                label: "L".repeat(120),
                style: crate::request::ButtonStyle::Danger,
            })
            .collect();
        buttons.insert(
            0,
            ReplyButton {
                id: "x".repeat(101),
                label: "too long an id".into(),
                style: crate::request::ButtonStyle::Primary,
            },
        );
        buttons.insert(1, buttons[1].clone());
        Reply {
            text: "t".repeat(5000),
            refused: false,
            ephemeral: true,
            buttons,
            fields: (0..60)
                .map(|i| (format!("name {i} {}", "n".repeat(300)), "v".repeat(2000)))
                .chain([(String::new(), " ".into())])
                .collect(),
            code_block: Some(
                (0..2000)
                    .map(|i| format!("line {i} ```"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            attachment: None,
        }
    }

    fn check_message(m: &serde_json::Value) {
        let content = m["content"].as_str().unwrap_or("");
        assert!(
            content.chars().count() <= limits::CONTENT,
            "{}",
            content.len()
        );
        let embeds = m["embeds"].as_array().unwrap();
        assert_eq!(embeds.len(), 1);
        let fields = embeds[0]["fields"].as_array().unwrap();
        assert!(fields.len() <= limits::FIELDS);
        let mut total = 0;
        for f in fields {
            let (n, v) = (f["name"].as_str().unwrap(), f["value"].as_str().unwrap());
            assert!(!n.trim().is_empty() && n.chars().count() <= limits::FIELD_NAME);
            assert!(!v.trim().is_empty() && v.chars().count() <= limits::FIELD_VALUE);
            total += n.chars().count() + v.chars().count();
        }
        assert!(total <= limits::EMBED_TOTAL, "{total}");
        assert!(fields.last().unwrap()["value"]
            .as_str()
            .unwrap()
            .ends_with("more"));
        let rows = m["components"].as_array().unwrap();
        assert_eq!(rows.len(), limits::ROWS);
        let mut ids = std::collections::HashSet::new();
        for r in rows {
            let buttons = r["components"].as_array().unwrap();
            assert!(buttons.len() <= limits::BUTTONS_PER_ROW);
            for b in buttons {
                assert!(b["label"].as_str().unwrap().chars().count() <= limits::BUTTON_LABEL);
                let id = b["custom_id"].as_str().unwrap();
                assert!(id.chars().count() <= limits::CUSTOM_ID);
                assert!(ids.insert(id.to_string()), "{id} twice");
                assert_eq!(b["style"], 4);
            }
        }
    }

    #[test]
    fn an_oversized_reply_is_cut_to_discords_limits() {
        let reply = big_reply();
        let initial = initial_response(&reply);
        assert_eq!(initial["type"], response_type::CHANNEL_MESSAGE_WITH_SOURCE);
        assert_eq!(initial["data"]["flags"], 64);
        check_message(&initial["data"]);
        check_message(&serde_json::to_value(edit_original_body(&reply)).unwrap());
        check_message(&serde_json::to_value(followup_body(&reply)).unwrap());
        check_message(&update_message(&reply)["data"]);

        let content = initial["data"]["content"].as_str().unwrap();
        assert!(content.starts_with("ttt") && content.ends_with("line 1999 `\u{200b}``\n```"));
        assert_eq!(
            content.matches("```").count(),
            2,
            "only the block's own fences"
        );
        assert!(content.contains("…\nline "), "the cut keeps whole lines");
    }

    #[test]
    fn each_initial_answer_has_its_type_and_an_empty_button_list_clears_buttons() {
        let plain = Reply {
            text: "done".into(),
            ..Reply::default()
        };
        assert_eq!(
            deferred_response(true),
            serde_json::json!({"type": 5, "data": {"flags": 64, "attachments": []}})
        );
        assert_eq!(deferred_response(false)["type"], 5);
        assert!(deferred_response(false)["data"].get("flags").is_none());
        assert_eq!(
            deferred_update(),
            serde_json::json!({"type": 6, "data": null})
        );
        let update = update_message(&plain);
        assert_eq!(update["type"], response_type::UPDATE_MESSAGE);
        assert_eq!(update["data"]["components"], serde_json::json!([]));
        assert_eq!(update["data"]["embeds"], serde_json::json!([]));
        let edit = serde_json::to_value(edit_original_body(&plain)).unwrap();
        assert_eq!(edit["components"], serde_json::json!([]));
        assert_eq!(edit["content"], "done");
        assert!(
            edit.get("flags").is_none(),
            "an edit cannot change ephemerality"
        );
        let initial = initial_response(&plain);
        assert!(initial["data"].get("flags").is_none());
        assert_eq!(
            initial["data"]["allowed_mentions"]["parse"],
            serde_json::json!([])
        );
        let short = reply_content("see", Some("a\nb"));
        assert_eq!(short, "see\n```\na\nb\n```");
    }

    #[test]
    fn an_oversized_card_is_cut_to_discords_limits() {
        let (embed, rows) = card(&big_card());
        let v = serde_json::to_value(&embed).unwrap();
        let chars = |p: &str| {
            v.pointer(p)
                .and_then(|s| s.as_str())
                .map_or(0, |s| s.chars().count())
        };
        assert!(chars("/title") <= limits::TITLE);
        assert!(chars("/description") <= limits::DESCRIPTION);
        assert!(chars("/footer/text") <= limits::FOOTER);
        let fields = v["fields"].as_array().unwrap();
        assert!(fields.len() <= limits::FIELDS);
        let mut total = chars("/title") + chars("/description") + chars("/footer/text");
        for f in fields {
            let (n, val) = (f["name"].as_str().unwrap(), f["value"].as_str().unwrap());
            assert!(n.chars().count() <= limits::FIELD_NAME);
            assert!(val.chars().count() <= limits::FIELD_VALUE, "{}", val.len());
            total += n.chars().count() + val.chars().count();
        }
        assert!(total <= limits::EMBED_TOTAL, "{total}");
        assert!(fields[0]["value"].as_str().unwrap().ends_with("more"));
        let rows = serde_json::to_value(&rows).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), limits::ROWS);
        for r in rows {
            let buttons = r["components"].as_array().unwrap();
            assert!(buttons.len() <= limits::BUTTONS_PER_ROW);
            for b in buttons {
                assert!(b["label"].as_str().unwrap().chars().count() <= limits::BUTTON_LABEL);
            }
        }
    }
}
