//! The console as a [`Pager`] (via `console`, target: an account name): a page becomes a feed
//! entry of kind `page` that only that account sees, live or on resume; the page script shows
//! a badge and, where the browser allows, a notification.

use std::sync::Arc;

use maud::html;
use serde_json::json;

use super::events::{Feed, Kind, Publish};
use crate::request::page::{Page, PageError, Pager};
use crate::request::BoxFuture;

pub struct ConsolePager {
    feed: Arc<Feed>,
}

impl ConsolePager {
    pub fn new(feed: Arc<Feed>) -> ConsolePager {
        ConsolePager { feed }
    }

    /// Publishes the page for `account` alone; a page sent again (a retry) is not shown twice.
    pub async fn page(&self, account: &str, page: &Page) -> Result<(), PageError> {
        super::accounts::check_name(account).map_err(PageError::Permanent)?;
        let store = self.feed.store();
        let temporary = |e: sqlx::Error| PageError::Temporary {
            reason: format!("the console's feed could not be written: {e}"),
            retry_after: None,
        };
        match store.account(account).await.map_err(temporary)? {
            Some(a) if a.disabled_at.is_none() => {}
            Some(_) => {
                return Err(PageError::Permanent(format!(
                    "console account {account:?} is disabled"
                )))
            }
            None => {
                return Err(PageError::Permanent(format!(
                    "there is no console account {account:?} (runbot user add)"
                )))
            }
        }
        let reference = format!("page-{}", page.id);
        if store
            .console_latest(&reference)
            .await
            .map_err(temporary)?
            .is_some_and(|row| row.audience.as_deref() == Some(account))
        {
            return Ok(());
        }
        // The group's own page here: the console knows its address relative to itself.
        let link = page.group_id.map(|g| format!("/groups/{g}"));
        let at = crate::domain::format_time(chrono::Utc::now());
        let html = html! {
            li class="page" {
                time datetime=(at) { (at) } " 🚨 "
                @match &link {
                    Some(l) => a href=(l) data-page=(page.id) { strong { (page.title) } },
                    None => strong { (page.title) },
                }
                " · " span class="pre-wrap" { (page.reason) }
            }
        };
        let data = json!({
            "page_id": page.id,
            "group_id": page.group_id,
            "severity": page.severity,
            "title": page.title,
            "summary": page.summary,
            "reason": page.reason,
            "url": link,
            "html": html.into_string(),
        });
        self.feed
            .publish(Publish {
                kind: Kind::Page,
                group_id: page.group_id,
                audience: Some(account),
                reference: Some(&reference),
                prompt: None,
                data: &data,
            })
            .await
            .map_err(temporary)?;
        Ok(())
    }
}

impl Pager for ConsolePager {
    fn via(&self) -> &'static str {
        "console"
    }

    fn send<'a>(&'a self, target: &'a str, page: &'a Page) -> BoxFuture<'a, Result<(), PageError>> {
        Box::pin(self.page(target, page))
    }
}
