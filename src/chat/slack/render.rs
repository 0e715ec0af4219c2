//! Slack, rendering: a [`Card`], a digest or a [`Reply`] becomes a Block Kit message built with
//! slack-morphism's models, cut to Slack's documented limits (`limits`). A card sits in one
//! attachment, the only way Slack gives a message a colour bar, with its blocks inside.

use slack_morphism::prelude::*;

use super::limits;
use crate::chat::{Card, Mark};
pub use crate::domain::text::fit;
use crate::domain::text::{fit_tail, lines_within};
use crate::domain::{parse_stored_time, Severity};
use crate::request::{ButtonStyle, Reply, ReplyButton};

/// Alerts listed on a card; the rest are counted.
const LISTED_ALERTS: usize = 15;

/// Text Slack shows as typed: `&`, `<` and `>` are the only characters its mrkdwn needs
/// escaped, and escaping them keeps `<!channel>` or `<@U…>` in a label from pinging anyone.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A severity's colour on cards, as Discord's.
pub fn severity_colour(severity: Severity) -> &'static str {
    match severity {
        Severity::Sev1 => "#E01E5A",
        Severity::Sev2 => "#F2711C",
        Severity::Sev3 => "#ECB22E",
        Severity::Sev4 => "#36C5F0",
    }
}

const RESOLVED_COLOUR: &str = "#2EB67D";

/// `<!date^UNIX^{date_short_pretty} {time}|fallback>`: Slack shows it in each reader's own time
/// zone.
fn slack_time(rfc3339: &str, format: &str) -> String {
    parse_stored_time(rfc3339)
        .map(|t| format!("<!date^{}^{format}|{}>", t.timestamp(), t.to_rfc3339()))
        .unwrap_or_else(|| escape(rfc3339))
}

fn relative(rfc3339: &str) -> String {
    slack_time(rfc3339, "{ago}")
}

fn absolute(rfc3339: &str) -> String {
    slack_time(rfc3339, "{date_short_pretty} {time}")
}

fn mrkdwn(text: String) -> SlackBlockText {
    SlackBlockMarkDownText::new(text).into()
}

fn section(text: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(mrkdwn(fit(&text, limits::SECTION_TEXT)))
        .into()
}

fn mark_line(emoji: &str, what: &str, mark: &Mark, when: String, after: &str) -> String {
    format!(
        "{emoji} {what} *{}*{after} {when}",
        escape(&fit(&mark.by, 100))
    )
}

/// A message's parts: the notification text (also what screen readers and search see), and
/// the attachment that holds the blocks with a colour bar.
pub struct Rendered {
    pub text: String,
    pub attachments: Vec<SlackMessageAttachment>,
    pub blocks: Vec<SlackBlock>,
}

impl Rendered {
    pub fn content(self) -> SlackMessageContent {
        let mut content = SlackMessageContent::new().with_text(self.text);
        if !self.blocks.is_empty() {
            content = content.with_blocks(self.blocks);
        }
        if !self.attachments.is_empty() {
            content = content.with_attachments(self.attachments);
        }
        content
    }
}

/// A card: header, what it means, the escalation line, alerts, runbook checks, links, and the
/// runbook's actions as buttons (risky ones `danger`); green and without buttons once resolved.
pub fn card(card: &Card) -> Rendered {
    let mut blocks: Vec<SlackBlock> = Vec::new();
    let status = if card.resolved { "✅ " } else { "" };
    blocks.push(
        SlackHeaderBlock::new(SlackBlockPlainTextOnly::from(fit(
            &format!("{status}{}", card.title),
            limits::HEADER_TEXT,
        )))
        .into(),
    );

    let mut lines: Vec<String> = Vec::new();
    if card.resolved {
        lines.push(match card.fired_for {
            Some(d) => format!("*Resolved* after {}", crate::domain::duration::short(d)),
            None => "*Resolved*".to_string(),
        });
    }
    if let Some(ack) = &card.acknowledged {
        let after = card
            .escalation
            .as_ref()
            .and_then(|e| e.acked_after.as_deref())
            .map(|a| format!(" after {a}"))
            .unwrap_or_default();
        lines.push(mark_line(
            "👀",
            "Acknowledged by",
            ack,
            relative(&ack.at),
            &after,
        ));
    }
    if let Some(e) = card.escalation.as_ref().filter(|_| !card.resolved) {
        if let Some(paging) = &e.paging {
            let mut line = escape(&fit(paging, 300));
            if let Some((who, at)) = &e.next {
                line.push_str(&format!(
                    " · next: {} {}",
                    escape(&fit(who, 200)),
                    relative(at)
                ));
            }
            lines.push(line);
        }
        for n in e.notes.iter().take(3) {
            lines.push(format!("⏭️ {}", escape(&fit(n, 200))));
        }
    }
    if let Some(s) = &card.silenced {
        lines.push(mark_line("🔕", "Silenced by", s, absolute(&s.at), " until"));
    }
    for part in [&card.summary, &card.description, &card.meaning]
        .into_iter()
        .flatten()
    {
        let part = escape(part);
        if !lines.iter().any(|l| l.contains(part.as_str())) {
            lines.push(part);
        }
    }
    if !lines.is_empty() {
        blocks.push(section(lines_within(&lines, 2900, 0)));
    }

    let listed = card.alerts.len().min(LISTED_ALERTS);
    let alert_lines: Vec<String> = card
        .alerts
        .iter()
        .take(LISTED_ALERTS)
        .map(|a| {
            let mark = if a.firing { "🔴" } else { "🟢" };
            format!(
                "{mark} {} · since {}",
                escape(&fit(&a.name, 120)),
                relative(&a.since)
            )
        })
        .collect();
    let unlisted = usize::try_from(card.alerts_total)
        .unwrap_or(0)
        .saturating_sub(listed)
        + usize::try_from(card.truncated_alerts).unwrap_or(0);
    let mut fields = vec![
        mrkdwn(format!(
            "*Firing*\n{} of {}",
            card.alerts_firing, card.alerts_total
        )),
        mrkdwn(format!("*Started*\n{}", absolute(&card.started_at))),
    ];
    if !alert_lines.is_empty() {
        fields.push(mrkdwn(format!(
            "*Alerts*\n{}",
            lines_within(&alert_lines, limits::FIELD_TEXT - 20, unlisted)
        )));
    }
    blocks.push(SlackSectionBlock::new().with_fields(fields).into());

    if !card.checks.is_empty() {
        let checks: Vec<String> = card
            .checks
            .iter()
            .map(|c| format!("• {}", escape(&fit(c, 300))))
            .collect();
        blocks.push(section(format!(
            "*Checks*\n{}",
            lines_within(&checks, limits::SECTION_TEXT - 20, 0)
        )));
    }

    let mut context: Vec<SlackContextBlockElement> = card
        .links
        .iter()
        .filter(|l| l.url.starts_with("https://") || l.url.starts_with("http://"))
        .take(limits::CONTEXT_ELEMENTS - 1)
        .map(|l| {
            SlackBlockMarkDownText::new(format!(
                "<{}|{}>",
                fit(&l.url.replace('|', "%7C").replace('>', "%3E"), 2000),
                escape(&fit(&l.label, 100))
            ))
            .into()
        })
        .collect();
    let mut footer = format!("runbot · group #{}", card.group_id);
    if let Some(n) = &card.note {
        footer.push_str(&format!(" · {}", escape(&fit(n, 300))));
    }
    context.push(SlackBlockMarkDownText::new(footer).into());
    blocks.push(SlackContextBlock::new(context).into());

    if !card.resolved && !card.actions.is_empty() {
        let buttons: Vec<ReplyButton> = card
            .actions
            .iter()
            .map(|a| ReplyButton {
                id: a.id.clone(),
                label: a.label.clone(),
                style: if a.risky {
                    ButtonStyle::Danger
                } else {
                    ButtonStyle::Secondary
                },
            })
            .collect();
        blocks.extend(button_blocks(&buttons));
    }

    let colour = if card.resolved {
        RESOLVED_COLOUR
    } else {
        severity_colour(card.severity)
    };
    let text = fit(
        &format!(
            "{}{}{}",
            status,
            card.title,
            card.summary
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        ),
        300,
    );
    Rendered {
        text: escape(&text),
        attachments: vec![SlackMessageAttachment::new()
            .with_color(colour.to_string())
            .with_fallback(escape(&text))
            .with_blocks(blocks)],
        blocks: Vec::new(),
    }
}

/// A storm's digest: the groups still waiting for a card of their own.
pub fn digest(title: &str, list: &str) -> Rendered {
    let blocks = vec![
        SlackHeaderBlock::new(SlackBlockPlainTextOnly::from(fit(
            title,
            limits::HEADER_TEXT,
        )))
        .into(),
        section(escape(list)),
        SlackContextBlock::new(vec![SlackBlockMarkDownText::new(
            "runbot · storm digest: cards follow as Slack's limits allow".into(),
        )
        .into()])
        .into(),
    ];
    Rendered {
        text: escape(&fit(title, 300)),
        attachments: vec![SlackMessageAttachment::new()
            .with_color(severity_colour(Severity::Sev1).to_string())
            .with_blocks(blocks)],
        blocks: Vec::new(),
    }
}

/// Plain text that pings nobody (it may quote what people typed).
pub fn text(text: &str) -> Rendered {
    let text = escape(text.trim_end());
    Rendered {
        text: fit(&text, limits::TEXT),
        blocks: Vec::new(),
        attachments: Vec::new(),
    }
}

/// A reply (or a prompt) as blocks: its text, fields, code block and buttons. Slack's message
/// text stays as the notification's fallback.
pub fn reply(reply: &Reply) -> Rendered {
    let mut blocks: Vec<SlackBlock> = Vec::new();
    let text = escape(reply.text.trim_end());
    if !text.is_empty() {
        blocks.push(section(text.clone()));
    }
    if !reply.fields.is_empty() {
        let mut fields: Vec<SlackBlockText> = reply
            .fields
            .iter()
            .take(limits::FIELDS - 1)
            .map(|(n, v)| {
                mrkdwn(fit(
                    &format!("*{}*\n{}", escape(n), escape(v)),
                    limits::FIELD_TEXT,
                ))
            })
            .collect();
        if reply.fields.len() >= limits::FIELDS {
            fields.push(mrkdwn(format!(
                "+{} more",
                reply.fields.len() - (limits::FIELDS - 1)
            )));
        }
        blocks.push(SlackSectionBlock::new().with_fields(fields).into());
    }
    if let Some(code) = &reply.code_block {
        // A fence inside the block would end it early.
        let code = code.trim_end_matches('\n').replace("```", "`\u{200b}``");
        let budget = limits::SECTION_TEXT - 8;
        blocks.push(section(format!("```\n{}\n```", fit_tail(&code, budget))));
    }
    blocks.extend(button_blocks(&reply.buttons));
    if blocks.is_empty() {
        blocks.push(section("…".into()));
    }
    let fallback = if text.is_empty() {
        "runbot".to_string()
    } else {
        text
    };
    Rendered {
        text: fit(&fallback, 300),
        blocks,
        attachments: Vec::new(),
    }
}

/// Buttons in actions blocks. A button whose id Slack would refuse (empty, too long, or
/// repeated in the message) is left out rather than cut: a cut id would run something else.
/// The id goes in both `action_id` and `value`, as clicks come back with both.
pub fn button_blocks(buttons: &[ReplyButton]) -> Vec<SlackBlock> {
    let mut seen = std::collections::HashSet::new();
    let usable: Vec<&ReplyButton> = buttons
        .iter()
        .filter(|b| {
            !b.id.is_empty() && b.id.len() <= limits::ACTION_ID && seen.insert(b.id.as_str())
        })
        .take(limits::ACTIONS_ELEMENTS)
        .collect();
    if usable.is_empty() {
        return Vec::new();
    }
    let elements: Vec<SlackActionBlockElement> = usable
        .iter()
        .map(|b| {
            let label = if b.label.trim().is_empty() {
                "…".to_string()
            } else {
                fit(&b.label, limits::BUTTON_TEXT)
            };
            let mut button = SlackBlockButtonElement::new(SlackBlockPlainTextOnly::from(label))
                .with_action_id(b.id.clone().into())
                .with_value(b.id.clone());
            match b.style {
                ButtonStyle::Danger => button = button.with_style(SlackBlockButtonStyle::Danger),
                ButtonStyle::Primary | ButtonStyle::Success => {
                    button = button.with_style(SlackBlockButtonStyle::Primary)
                }
                ButtonStyle::Secondary => {}
            }
            button.into()
        })
        .collect();
    vec![SlackActionsBlock::new(elements).into()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{CardAction, CardAlert, Link};

    fn sample() -> Card {
        Card {
            group_id: 7,
            resolved: false,
            severity: Severity::Sev1,
            title: "Sev1 · APIDown: API down".into(),
            summary: Some("API <!channel> is down".into()),
            description: None,
            meaning: Some("Users cannot log in".into()),
            alerts: (0..40)
                .map(|i| CardAlert {
                    name: format!("api-{i}"),
                    firing: i % 2 == 0,
                    since: "2026-12-07T02:00:00Z".into(),
                })
                .collect(),
            alerts_total: 60,
            alerts_firing: 30,
            truncated_alerts: 0,
            links: vec![Link {
                label: "Runbook".into(),
                url: "https://runbook.example.com/apidown".into(),
            }],
            checks: vec!["curl -f https://api/health".into()],
            actions: vec![
                CardAction {
                    id: "rb1:7:0".into(),
                    label: "Restart backend".into(),
                    risky: true,
                },
                CardAction {
                    id: "rb1:7:1".into(),
                    label: "Logs".into(),
                    risky: false,
                },
            ],
            fired_for: None,
            started_at: "2026-12-07T02:00:00Z".into(),
            note: None,
            acknowledged: None,
            silenced: None,
            escalation: None,
        }
    }

    fn json(r: Rendered) -> serde_json::Value {
        serde_json::to_value(r.content()).unwrap()
    }

    #[test]
    fn a_card_has_colour_header_and_danger_buttons_and_escapes_mentions() {
        let v = json(card(&sample()));
        let a = &v["attachments"][0];
        assert_eq!(a["color"], "#E01E5A");
        let blocks = a["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let all = v.to_string();
        assert!(!all.contains("<!channel>"), "{all}");
        assert!(all.contains("&lt;!channel&gt;"));
        let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
        assert_eq!(actions["elements"][0]["style"], "danger");
        assert_eq!(actions["elements"][0]["action_id"], "rb1:7:0");
        assert!(actions["elements"][1].get("style").is_none());
        assert!(all.contains("+"), "unlisted alerts are counted");
        assert!(v["text"].as_str().unwrap().contains("APIDown"));
    }

    #[test]
    fn a_resolved_card_is_green_without_buttons() {
        let mut c = sample();
        c.resolved = true;
        let v = json(card(&c));
        assert_eq!(v["attachments"][0]["color"], RESOLVED_COLOUR);
        assert!(!v.to_string().contains("\"actions\""));
    }

    #[test]
    fn long_texts_are_cut_to_the_limits() {
        let mut c = sample();
        c.title = "x".repeat(500);
        c.summary = Some("y".repeat(9000));
        let v = json(card(&c));
        for b in v["attachments"][0]["blocks"].as_array().unwrap() {
            if b["type"] == "header" {
                assert!(b["text"]["text"].as_str().unwrap().chars().count() <= 150);
            }
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= 3000);
            }
        }
        let r = reply(&Reply {
            text: "z".repeat(10_000),
            code_block: Some("line\n".repeat(5000)),
            buttons: vec![
                ReplyButton {
                    id: "same".into(),
                    label: "a".into(),
                    style: ButtonStyle::Primary,
                },
                ReplyButton {
                    id: "same".into(),
                    label: "b".into(),
                    style: ButtonStyle::Danger,
                },
            ],
            ..Reply::default()
        });
        let v = json(r);
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .all(|t| t.chars().count() <= 3000));
        let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
        assert_eq!(actions["elements"].as_array().unwrap().len(), 1);
    }
}
