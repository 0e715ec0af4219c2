//! Slack, pages: a person is woken by a DM (`conversations.open`, then `chat.postMessage`)
//! with an Acknowledge button that runs `/ack` on the group through the ordinary interaction
//! path. Via `slack`; the target is a Slack member id (`people.slack`).

use slack_morphism::prelude::*;

use super::render::{button_blocks, escape, fit, severity_colour, Rendered};
use super::SlackAdapter;
use crate::chat::DeliveryError;
use crate::domain::Severity;
use crate::policy::roles::is_slack_member;
use crate::request::page::{ack_button_id, Page, PageError, Pager};
use crate::request::{BoxFuture, ButtonStyle, ReplyButton};

fn page_error(e: DeliveryError) -> PageError {
    match e {
        DeliveryError::RateLimited { retry_after } => PageError::Temporary {
            reason: "over Slack's rate limit".into(),
            retry_after: Some(retry_after),
        },
        DeliveryError::Transient(reason) => PageError::Temporary {
            reason,
            retry_after: None,
        },
        DeliveryError::MessageGone => PageError::Permanent("Slack lost the message".into()),
        DeliveryError::Permanent(reason) => PageError::Permanent(fit(&reason, 500)),
    }
}

/// The page as a message: who and why, the summary, the console's link, and Acknowledge.
pub fn page_message(page: &Page) -> Rendered {
    let mut lines = vec![format!("*{}*", escape(&fit(&page.title, 280)))];
    if !page.summary.trim().is_empty() {
        lines.push(escape(&fit(&page.summary, 1500)));
    }
    if !page.reason.trim().is_empty() {
        lines.push(format!("*Why you:* {}", escape(&fit(&page.reason, 500))));
    }
    if let Some(url) = page
        .url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .filter(|u| u.len() <= 1000)
    {
        lines.push(format!(
            "<{}|Open the group in the console>",
            url.replace('|', "%7C")
        ));
    }
    let mut blocks: Vec<SlackBlock> = vec![SlackSectionBlock::new()
        .with_text(SlackBlockMarkDownText::new(lines.join("\n")).into())
        .into()];
    let mut footer = format!("runbot · page {}", page.id);
    if let Some(g) = page.group_id {
        footer.push_str(&format!(" · group #{g}"));
        blocks.extend(button_blocks(&[ReplyButton {
            id: ack_button_id(g),
            label: "Acknowledge".into(),
            style: ButtonStyle::Primary,
        }]));
    }
    blocks.push(SlackContextBlock::new(vec![SlackBlockMarkDownText::new(footer).into()]).into());
    let colour = page
        .severity
        .as_deref()
        .and_then(Severity::parse)
        .map(severity_colour)
        .unwrap_or("#5865F2");
    let text = escape(&fit(&format!("🚨 You are paged: {}", page.title), 300));
    Rendered {
        text: text.clone(),
        blocks: Vec::new(),
        attachments: vec![SlackMessageAttachment::new()
            .with_color(colour.to_string())
            .with_fallback(text)
            .with_blocks(blocks)],
    }
}

impl SlackAdapter {
    /// Sends a page as a DM to member `target`. The page's id rides in the message's metadata,
    /// so a retry after a lost answer finds the first DM instead of sending a second.
    pub async fn page_dm(&self, target: &str, page: &Page) -> Result<(), PageError> {
        // The same rule people.toml's `slack` ids were checked by when they loaded.
        if !is_slack_member(target) {
            return Err(PageError::Permanent(format!(
                "{:?} is not a Slack member id (such as U024BE7LH)",
                fit(target, 40)
            )));
        }
        let channel = self.dm_channel(target).await.map_err(page_error)?;
        let nonce = format!("rb-page-{}", page.id);
        // A page may be a retry (a lost answer, a restart): pages are few, so the DM is
        // always looked at first. Without the history scope the page still goes.
        match self.find_by_nonce(&channel, &nonce, None).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) | Err(DeliveryError::Permanent(_)) => {}
            Err(e) => return Err(page_error(e)),
        }
        self.post_message(&channel, page_message(page), None, Some(&nonce))
            .await
            .map(|_| ())
            .map_err(page_error)
    }
}

impl Pager for SlackAdapter {
    fn via(&self) -> &'static str {
        "slack"
    }

    fn send<'a>(&'a self, target: &'a str, page: &'a Page) -> BoxFuture<'a, Result<(), PageError>> {
        Box::pin(self.page_dm(target, page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_has_an_acknowledge_button_for_its_group() {
        let page = Page {
            id: 3,
            group_id: Some(12),
            severity: Some("sev1".into()),
            title: "Sev1 · APIDown <!here>".into(),
            summary: "down".into(),
            person: "Ana".into(),
            role: Some("devops-lead".into()),
            reason: "step 1".into(),
            url: None,
        };
        let v = serde_json::to_value(page_message(&page).content()).unwrap();
        let s = v.to_string();
        assert!(s.contains("rb1c:ack:group=12"), "{s}");
        assert!(!s.contains("<!here>"));
        assert_eq!(v["attachments"][0]["color"], "#E01E5A");
        assert!(
            is_slack_member("U024BE7LH")
                && !is_slack_member("ana")
                && !is_slack_member("C024BE7LH")
        );
    }
}
