//! The console's own message format: HTML fragments of a [`Card`], a [`Reply`] and an
//! announcement, the same on the first page load and in the live feed. maud escapes every value;
//! links are only those the card already vetted as http(s).

use maud::{html, Markup};
use serde_json::{json, Value};

use crate::chat::Card;
use crate::request::{ButtonId, Reply, ReplyButton};

/// A time as the page shows it: the stored RFC 3339 value, which the script turns into "3m ago".
fn time(at: &str) -> Markup {
    html! { time datetime=(at) { (at) } }
}

/// How cards sort on the page: most severe first, then oldest.
pub fn rank(card: &Card) -> String {
    format!("{}|{}", card.severity.as_str(), card.started_at)
}

pub fn card(card: &Card) -> Markup {
    let firing = card.alerts_firing;
    let listed = card.alerts.len().min(50);
    // Not `firing`/`resolved`: those colour a status word, not a whole card.
    let state = if card.resolved {
        "state-resolved"
    } else {
        "state-firing"
    };
    html! {
        article class={ "card " (card.severity.as_str()) " " (state) } id={ "group-" (card.group_id) }
            data-group-id=(card.group_id) data-rank=(rank(card)) data-resolved=(card.resolved) {
            h2 {
                span class={ "sev " (card.severity.as_str()) } { (card.severity.title()) } " "
                a href={ "/groups/" (card.group_id) } { (card.title) }
            }
            p class="marks" {
                @if card.resolved {
                    span class="resolved" {
                        "✅ Resolved"
                        @if let Some(d) = card.fired_for { " after " (crate::domain::duration::short(d)) }
                    }
                } @else {
                    span class="firing" { "🔴 Firing since " (time(&card.started_at)) }
                }
                @if let Some(ack) = &card.acknowledged {
                    span class="ack" { "👀 Acknowledged by " strong { (ack.by) }
                        @if let Some(a) = card.escalation.as_ref().and_then(|e| e.acked_after.as_deref()) { " after " (a) }
                        " " (time(&ack.at)) }
                }
                @if let Some(e) = card.escalation.as_ref().filter(|_| !card.resolved) {
                    @if let Some(p) = &e.paging {
                        span class="paging" { (p)
                            @if let Some((who, at)) = &e.next { " · next: " (who) " " (time(at)) }
                        }
                    }
                    @for n in e.notes.iter().take(3) { span class="skipped" { "⏭️ " (n) } }
                }
                @if let Some(s) = &card.silenced {
                    span class="silenced" { "🔕 Silenced by " strong { (s.by) } " until " (time(&s.at)) }
                }
            }
            @for part in [&card.summary, &card.description, &card.meaning].into_iter().flatten() {
                p { (part) }
            }
            details open[!card.resolved] {
                summary { "Alerts: " (firing) " firing, " (card.alerts_total - firing) " resolved"
                    @if card.truncated_alerts > 0 { " (+" (card.truncated_alerts) " not sent)" } }
                ul class="alerts" {
                    @for a in card.alerts.iter().take(50) {
                        li class=(if a.firing { "firing" } else { "resolved" }) {
                            (if a.firing { "🔴 " } else { "🟢 " }) (a.name) " · since " (time(&a.since))
                        }
                    }
                    @if card.alerts_total > listed as i64 { li class="muted" { (card.alerts_total - listed as i64) " more on the group's page" } }
                }
            }
            @if !card.checks.is_empty() && !card.resolved {
                details {
                    summary { "What to check" }
                    ul { @for c in &card.checks { li { (c) } } }
                }
            }
            @if !card.links.is_empty() {
                p class="links" {
                    @for l in &card.links {
                        a href=(l.url) target="_blank" rel="noopener noreferrer" { (l.label) } " "
                    }
                }
            }
            @if !card.actions.is_empty() {
                div class="actions" {
                    @for a in &card.actions {
                        button type="button" class=(if a.risky { "action danger" } else { "action" }) data-button=(a.id) { (a.label) }
                    }
                }
            }
            @if let Some(note) = &card.note { p class="note" { (note) } }
        }
    }
}

/// The pending request a prompt's buttons answer, if these are a prompt's.
pub fn prompt_of(buttons: &[ReplyButton]) -> Option<String> {
    buttons.iter().find_map(|b| match ButtonId::parse(&b.id) {
        Some(ButtonId::Prompt { pending, .. }) => Some(pending),
        _ => None,
    })
}

/// A file kept for the requester: where to download it.
pub struct FileLink {
    pub url: String,
    pub filename: String,
    pub bytes: usize,
}

fn button(b: &ReplyButton) -> Markup {
    match ButtonId::parse(&b.id) {
        Some(ButtonId::Prompt { pending, verb }) => html! {
            button type="button" class={ "prompt " (b.style.as_str()) } data-prompt=(pending) data-verb=(verb.as_str()) { (b.label) }
        },
        _ => html! {
            button type="button" class=(b.style.as_str()) data-button=(b.id) { (b.label) }
        },
    }
}

/// Text as the core writes it for chat: `**bold**` and `` `code` `` become markup, every piece
/// escaped; anything else stays text.
pub fn inline(text: &str) -> Markup {
    let mut out = String::new();
    let (mut bold, mut code) = (false, false);
    let mut rest = text;
    while !rest.is_empty() {
        let next = [(!code).then(|| rest.find("**")).flatten(), rest.find('`')];
        let at = next.iter().flatten().min().copied();
        let Some(at) = at else {
            out.push_str(&maud::html! { (rest) }.into_string());
            break;
        };
        out.push_str(&maud::html! { (&rest[..at]) }.into_string());
        if rest[at..].starts_with('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = &rest[at + 1..];
        } else {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = &rest[at + 2..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    maud::PreEscaped(out)
}

/// An answer to request `request`.
pub fn reply(request: &str, reply: &Reply, file: Option<&FileLink>) -> Markup {
    let refused = reply.refused;
    html! {
        div class={ "result" @if refused { " refused" } } data-request=(request) {
            @if !reply.text.is_empty() { div class="text pre-wrap" { (inline(&reply.text)) } }
            @if !reply.fields.is_empty() {
                dl class="fields" { @for (k, v) in &reply.fields { dt { (k) } dd class="pre-wrap" { (v) } } }
            }
            @if let Some(code) = &reply.code_block { pre { (code) } }
            @if let Some(f) = file {
                p { a class="file" href=(f.url) download=(f.filename) { "⬇ " (f.filename) } " (" (f.bytes) " bytes)" }
            }
            @if !reply.buttons.is_empty() {
                div class="buttons" { @for b in &reply.buttons { (button(b)) } }
            }
        }
    }
}

/// A reply as JSON for scripts: what Discord's message would carry.
pub fn reply_json(reply: &Reply, file: Option<&FileLink>) -> Value {
    json!({
        "text": reply.text,
        "ephemeral": reply.ephemeral,
        "fields": reply.fields.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "code_block": reply.code_block,
        "attachment": file.map(|f| json!({"url": f.url, "filename": f.filename, "bytes": f.bytes})),
        "buttons": reply.buttons.iter().map(|b| {
            let mut v = json!({"id": b.id, "label": b.label, "style": b.style.as_str()});
            if let Some(ButtonId::Prompt { pending, verb }) = ButtonId::parse(&b.id) {
                v["prompt"] = json!(pending);
                v["verb"] = json!(verb.as_str());
                v["answer"] = json!(format!("/api/prompts/{pending}/{}", verb.as_str()));
            }
            v
        }).collect::<Vec<_>>(),
    })
}

pub fn announcement(at: &str, text: &str) -> Markup {
    html! { li { (time(at)) " " span class="pre-wrap" { (text) } } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_emphasis_becomes_markup_and_everything_else_stays_text() {
        assert_eq!(
            inline("**ana** ran `/restart <b>` & <i>x</i>").into_string(),
            "<strong>ana</strong> ran <code>/restart &lt;b&gt;</code> &amp; &lt;i&gt;x&lt;/i&gt;"
        );
        // Unclosed marks are closed, so nothing after the answer is swallowed.
        assert_eq!(
            inline("**open `code").into_string(),
            "<strong>open <code>code</code></strong>"
        );
        // ** inside code is code.
        assert_eq!(inline("`a**b`").into_string(), "<code>a**b</code>");
    }
}
