//! The console's JSON API for alert groups: a page of groups, one group with its timeline.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::domain::parse_stored_time;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::{GroupCursor, GroupFilter};

/// Groups in one page, by default and at most: a page is built in memory, so its size is ours
/// to bound, not the caller's.
pub(super) const PAGE_DEFAULT: i64 = 100;
pub(super) const PAGE_MAX: i64 = 500;
/// Alerts listed per group in a page of groups (the group's page shows more).
pub(super) const ALERTS_PER_GROUP: i64 = 100;
/// Alerts and timeline entries on one group's page.
pub(super) const GROUP_ALERTS_MAX: i64 = 1000;
pub(super) const GROUP_EVENTS_MAX: i64 = 1000;
/// A page of groups stops growing past this many bytes; the rest is on the next page.
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Groups read from the store at a time while a page is filled.
const READ_STEP: i64 = 50;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<i64>,
    /// Where the page starts: the `cursor` of the previous page's `Link: rel="next"`.
    pub cursor: Option<String>,
}

/// A cursor as the API shows it: `updated_at` and id, base64url so it is one opaque word.
pub(super) fn encode_cursor(c: &GroupCursor) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{}", c.updated_at, c.id))
}

fn decode_cursor(s: &str) -> Option<GroupCursor> {
    use base64::Engine;
    if s.len() > 200 {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (at, id) = raw.rsplit_once('|')?;
    parse_stored_time(at)?;
    Some(GroupCursor {
        updated_at: at.to_string(),
        id: id.parse().ok()?,
    })
}

/// The `status` query value that asks for `filter`, for the next page's link.
pub(super) fn status_param(filter: GroupFilter) -> &'static str {
    match filter {
        GroupFilter::Open => "open",
        GroupFilter::Resolved => "resolved",
        GroupFilter::All => "all",
    }
}

impl ListQuery {
    pub(super) fn cursor(&self) -> Result<Option<GroupCursor>, ApiError> {
        match &self.cursor {
            None => Ok(None),
            Some(c) => decode_cursor(c).map(Some).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "cursor is not one runbot gave: use the one in the previous page's Link header",
                )
            }),
        }
    }

    pub(super) fn parse(&self, default: GroupFilter) -> Result<(GroupFilter, i64), ApiError> {
        let filter = match self.status.as_deref() {
            None => default,
            Some("open" | "firing") => GroupFilter::Open,
            Some("resolved") => GroupFilter::Resolved,
            Some("all") => GroupFilter::All,
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "status must be open, resolved or all",
                ))
            }
        };
        let limit = self.limit.unwrap_or(PAGE_DEFAULT);
        if !(1..=PAGE_MAX).contains(&limit) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {PAGE_MAX}; for more, follow the Link header's next page"),
            ));
        }
        Ok((filter, limit))
    }
}

pub(super) fn store_error(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "console could not read the store");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database cannot be read right now",
    )
}

/// `GET /api/alert-groups`: groups with their alerts, most recently changed first, one page at
/// a time: at most `limit` groups and, past the first, no more than [`PAGE_BYTES`] of JSON.
/// `Link: <…&cursor=…>; rel="next"` (and `X-Next-Cursor`) name the next page when there is one.
pub(super) async fn api_groups(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (filter, limit) = q.parse(GroupFilter::All)?;
    let mut after = q.cursor()?;
    let mut body = Vec::with_capacity(4096);
    body.push(b'[');
    let mut count = 0;
    let next = 'fill: loop {
        let want = (limit - count).min(READ_STEP);
        let step = state
            .store
            .list_groups(filter, want, after.as_ref(), Some(ALERTS_PER_GROUP))
            .await
            .map_err(store_error)?;
        let ended = (step.len() as i64) < want;
        for g in &step {
            let mark = body.len();
            if count > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, g).expect("views serialize");
            if count > 0 && body.len() > PAGE_BYTES {
                body.truncate(mark);
                break 'fill after;
            }
            count += 1;
            after = Some(g.cursor());
        }
        if ended {
            break None;
        }
        if count >= limit {
            break after;
        }
    };
    body.push(b']');
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(next) = next {
        let status = status_param(filter);
        let cursor = encode_cursor(&next);
        let link = format!(
            "</api/alert-groups?status={status}&limit={limit}&cursor={cursor}>; rel=\"next\""
        );
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::LINK,
            link.parse().expect("the link is ASCII"),
        );
        headers.insert(
            "x-next-cursor",
            cursor.parse().expect("the cursor is ASCII"),
        );
    }
    Ok(response)
}

/// `GET /api/alert-groups/{id}`: one group, its alerts, its timeline of alert changes and its
/// merged `activity` (see [`super::group`]).
pub(super) async fn api_group(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state
        .store
        .group(id, GROUP_ALERTS_MAX, GROUP_EVENTS_MAX)
        .await
        .map_err(store_error)?
    {
        Some((group, timeline, total)) => {
            // `timeline` stays the alert changes it always was; `activity` is the page's
            // merged timeline (alerts, cards, acknowledgement, requests and their outcomes).
            let activity = super::group::timeline(&state, &group, timeline.clone(), total).await?;
            let mut value = serde_json::to_value(group).expect("views serialize");
            value["timeline"] = serde_json::to_value(timeline).expect("views serialize");
            value["timeline_total"] = total.into();
            value["activity"] = serde_json::to_value(activity).expect("views serialize");
            Ok(Json(value))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no alert group {id}"),
        )),
    }
}
