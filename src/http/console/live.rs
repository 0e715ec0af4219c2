//! The console as a chat: the live feed (`GET /api/events`, Server-Sent Events), commands and
//! buttons through the invocation core (`POST /api/commands`, `/api/buttons`,
//! `/api/prompts/{id}/{button}`), the catalog the command bar completes from, and the files
//! answers carry. Thin: who asks comes from the gate's [`Viewer`], what they ask goes to the
//! core as a [`Request`] of platform `console`, and its answer comes back as JSON.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::chat::console::events::{Entry, RESYNC};
use crate::chat::console::platform::{reply_to, CHANNEL};
use crate::chat::console::Viewer;
use crate::chat::platform::{ChatPlatform, ReplyEditor};
use crate::commands::line::{self, kind_name};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::request::{
    Actor, Answer, BoxFuture, ButtonId, Origin, RawValue, Request, Responder, Verb,
};

/// Entries a page that reconnects may have missed and still be given one by one; more, and
/// it is told to reload (`event: resync`).
const REPLAY_MAX: i64 = 2000;
/// Entries read back at a time, so a page catching up holds a few in memory, not thousands.
const REPLAY_STEP: i64 = 100;

fn unavailable(e: sqlx::Error) -> ApiError {
    tracing::warn!(error = %e, "console: the database did not answer");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the database cannot be reached right now; nothing was done, try again",
    )
}

fn sse_event(row: &Entry) -> Event {
    Event::default()
        .id(row.id.to_string())
        .event(row.kind.as_str())
        .data(&row.data)
}

/// `GET /api/events`: the feed from now on, or from after `Last-Event-ID` when a page
/// reconnects: every card, answer and announcement this viewer may see, in order, each with
/// its id. A page too far behind (or older than what is kept, or ahead of the feed after a
/// restored database) gets `event: resync`; once its session ends or its token is revoked,
/// `event: signed-out`, and the stream ends.
pub(super) async fn events(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let feed = state.console.feed().clone();
    let me = viewer.actor().map(|a| a.user_id);
    let slot = feed
        .admit(me.as_deref().unwrap_or("console.token"))
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why))?;
    // Subscribed first, so nothing falls between what is read back and what follows.
    let mut live = feed.subscribe();
    // A browser that reconnects sends Last-Event-ID; a page opens with `after`, the feed's head
    // when it was rendered, so nothing between the render and the stream is missed.
    let resume: Option<i64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.after)
        .filter(|id: &i64| *id >= 0);
    let start = resume.unwrap_or_else(|| feed.head());
    let store = feed.store().clone();
    let closing = feed.closing();
    let rules = state.edge.sessions;
    let stream = async_stream(move |tx| async move {
        let _slot = slot;
        let mut sent = start;
        let resync = |head: i64| {
            Event::default()
                .event("resync")
                .id(head.to_string())
                .data("{}")
        };
        // Where this stream starts, so a reconnect resumes here even if nothing came yet.
        let hello = Event::default()
            .event("hello")
            .id(start.to_string())
            .data(json!({ "after": start }).to_string());
        if tx.send(hello).await.is_err() {
            return;
        }
        // Resumed: what came after `start`, read back from the store a page at a time.
        let mut catch_up = resume.is_some();
        let mut recheck =
            tokio::time::interval_at(tokio::time::Instant::now() + rules.recheck, rules.recheck);
        loop {
            if catch_up {
                catch_up = false;
                let Ok((tail, head)) = store.console_bounds().await else {
                    return;
                };
                // Too far behind, behind what is kept, or ahead of the feed (ids went back: a
                // restored database): the page reloads instead.
                if head - sent > REPLAY_MAX || (sent > 0 && tail > sent + 1) || sent > head {
                    if tx.send(resync(head)).await.is_err() {
                        return;
                    }
                    sent = head;
                } else {
                    loop {
                        let Ok(rows) = store.console_events_after(sent, REPLAY_STEP).await else {
                            return;
                        };
                        let more = rows.len() as i64 == REPLAY_STEP;
                        for row in rows {
                            sent = row.id;
                            if row.visible_to(me.as_deref())
                                && tx.send(sse_event(&Arc::new(row))).await.is_err()
                            {
                                return;
                            }
                        }
                        if !more {
                            break;
                        }
                    }
                }
            }
            // A page that went away frees its task at once, not at the next entry it may see.
            let next = tokio::select! {
                next = live.recv() => next,
                _ = tx.closed() => return,
                _ = closing.cancelled() => return,
                _ = recheck.tick() => {
                    // Fail closed: a check the database cannot answer ends the stream too; the
                    // page reconnects, through the gate.
                    if !matches!(viewer.still_valid(&store, &rules).await, Ok(true)) {
                        let _ = tx.send(Event::default().event("signed-out").data("{}")).await;
                        return;
                    }
                    continue;
                }
            };
            match next {
                Ok(row) if row.kind == RESYNC => {
                    if tx.send(resync(row.id)).await.is_err() {
                        return;
                    }
                    sent = row.id;
                }
                Ok(row) => {
                    if row.id <= sent {
                        continue;
                    }
                    sent = row.id;
                    if row.visible_to(me.as_deref()) && tx.send(sse_event(&row)).await.is_err() {
                        return;
                    }
                }
                // Too slow for the channel: read what was missed from the store.
                Err(RecvError::Lagged(_)) => catch_up = true,
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    after: Option<i64>,
}

/// A stream fed by a task through a small channel: the task ends when the page goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

/// The person asking, or 403 for `console.token` (it reads; it acts as nobody).
fn actor_of(viewer: &Viewer) -> Result<Actor, ApiError> {
    viewer.actor().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "console.token can read the console but acts as nobody: sign in, or use an API token (runbot token create)",
        )
    })
}

fn core(state: &AppState) -> Result<&Arc<crate::invocation::Dispatcher>, ApiError> {
    state.dispatcher.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this runbot takes no commands",
        )
    })
}

/// Hands a request to the core with a responder that shows later answers on the console, and
/// answers what the core answered first, as JSON (and in the feed). `answers` is the request
/// whose message this one's answers replace (a prompt's); empty for a new command.
async fn ask(
    state: &AppState,
    actor: Actor,
    request: Request,
    answers: &str,
) -> Result<Response, ApiError> {
    let dispatcher = core(state)?;
    let console = state.console.clone();
    let id = uuid::Uuid::new_v4().simple().to_string();
    // A new command answers with a message of its own; a prompt's button, the prompt's.
    let answers = if answers.is_empty() {
        id.as_str()
    } else {
        answers
    };
    // Later answers (a result, an expiry) replace the message this request answers, once the
    // first answer is in the feed.
    let platform: Arc<dyn ChatPlatform> = console.clone();
    let (first_shown, shown) = tokio::sync::watch::channel(false);
    let responder = Arc::new(AfterFirst {
        editor: ReplyEditor::new(platform, reply_to(answers, &actor.user_id)),
        shown,
    });
    let answer = dispatcher.handle(request, responder).await;
    let (kind, reply, at) = match answer {
        Answer::Message(reply) => ("message", reply, id.as_str()),
        Answer::Update(reply) => ("update", reply, answers),
        Answer::Deferred { ephemeral } => (
            "deferred",
            crate::request::Reply {
                text: "⏳ Working on it…".into(),
                ephemeral,
                ..Default::default()
            },
            answers,
        ),
    };
    let data = console.answer(at, &actor.user_id, &reply).await;
    first_shown.send_replace(true);
    let data = match data {
        Ok(data) => data,
        // The core has acted (or refused, audited); only showing it failed. Saying "nothing was
        // done" would have the person ask again and, say, restart twice.
        Err(e) => {
            tracing::warn!(error = %e, "console: could not add an answer to the feed");
            json!({
                "request": at,
                "reply": crate::chat::console::render::reply_json(&reply, None),
                "html": crate::chat::console::render::reply(at, &reply, None).into_string(),
                "warning": "runbot did this but could not add the answer to the console's feed (the database did not answer): other pages may not show it; do not ask again",
            })
        }
    };
    let refused = reply.refused;
    let mut body = json!({ "request_id": at, "answer": kind, "refused": refused });
    if let (Value::Object(b), Value::Object(d)) = (&mut body, data) {
        b.extend(d);
    }
    Ok(Json(body).into_response())
}

/// The core's responder for a console request: its edits wait until the first answer is in
/// the feed. A quick run (`/oncall`) can end before [`ask`] has appended "Working on it…", which
/// would then come after the result and replace it on the page and in `/api/requests/{id}`.
/// The wait ends too when `ask` goes away without appending (the client left).
struct AfterFirst {
    editor: ReplyEditor,
    shown: tokio::sync::watch::Receiver<bool>,
}

impl Responder for AfterFirst {
    fn edit(&self, reply: crate::request::Reply) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut shown = self.shown.clone();
            // An error means the sender is gone: nothing more will be appended before this.
            let _ = shown.wait_for(|shown| *shown).await;
            self.editor.edit(reply).await
        })
    }
}

/// A body the JSON extractor refused: 413 when it is over `http.max_body_bytes`, else 400.
fn rejected(e: &axum::extract::rejection::JsonRejection) -> StatusCode {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandBody {
    /// `logs`, `/logs`, or a whole line: `/logs service:backend tail:100`.
    command: String,
    #[serde(default)]
    options: Map<String, Value>,
    group_id: Option<i64>,
}

fn raw_value(name: &str, v: Value) -> Result<RawValue, ApiError> {
    Ok(match v {
        Value::String(s) => RawValue::Text(s),
        Value::Bool(b) => RawValue::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RawValue::Integer(i),
            None => RawValue::Text(n.to_string()),
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "option {:?} must be a string, a number or a boolean",
                    crate::domain::text::clip(name, 64)
                ),
            ))
        }
    })
}

/// `POST /api/commands`: `{"command": "logs", "options": {"service": "backend"}, "group_id": 7}`
/// or `{"command": "/logs service:backend tail:100"}`.
pub(super) async fn command(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    body: Result<Json<CommandBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            rejected(&e),
            format!(
                "expected {{\"command\": \"…\", \"options\": {{…}}, \"group_id\": N}}: {}",
                e.body_text()
            ),
        )
    })?;
    let actor = actor_of(&viewer)?;
    if body.command.len() > line::MAX_LINE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the command is longer than {} characters", line::MAX_LINE),
        ));
    }
    let (name, rest) = line::split_name(&body.command);
    let origin = Origin {
        channel_id: Some(CHANNEL.into()),
        message_id: None,
        group_id: body.group_id,
    };
    let mut args = Vec::new();
    if !rest.is_empty() {
        let dispatcher = core(&state)?;
        // An unknown name goes on to the core, which refuses it (and audits the refusal).
        if let Some(spec) = dispatcher.commands().get(name) {
            match line::parse_line(spec, rest) {
                Ok(parsed) => args = parsed,
                Err(e) => {
                    // Refused like any invalid request: audited, and said to the caller.
                    let reason = format!("/{name}: {e}");
                    dispatcher
                        .refuse_unreadable(actor, name, origin, reason.clone())
                        .await;
                    return Err(ApiError::new(StatusCode::BAD_REQUEST, reason));
                }
            }
        }
    }
    for (k, v) in body.options {
        let value = raw_value(&k, v)?;
        args.push((k, value));
    }
    let request = Request::Command {
        actor: actor.clone(),
        command: name.to_string(),
        args,
        origin,
    };
    ask(&state, actor, request, "").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ButtonBody {
    id: String,
}

/// `POST /api/buttons`: `{"id": "rb1:7:0"}`, a card's button (or a command button of an answer).
pub(super) async fn button(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    body: Result<Json<ButtonBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            rejected(&e),
            format!("expected {{\"id\": \"…\"}}: {}", e.body_text()),
        )
    })?;
    let actor = actor_of(&viewer)?;
    let Some(parsed) = ButtonId::parse(&body.id) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not a button runbot made",
        ));
    };
    if let ButtonId::Prompt { pending, verb } = parsed {
        return prompt_answer(&state, actor, &pending, verb).await;
    }
    let group_id = match parsed {
        ButtonId::CardAction { group_id, .. } => Some(group_id),
        _ => None,
    };
    let request = Request::Button {
        actor: actor.clone(),
        custom_id: body.id,
        origin: Origin {
            channel_id: Some(CHANNEL.into()),
            message_id: group_id.map(|g| format!("group-{g}")),
            group_id,
        },
    };
    ask(&state, actor, request, "").await
}

/// `POST /api/prompts/{id}/{button}`: Confirm, Cancel, Approve or Reject on prompt `id`.
pub(super) async fn prompt(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path((pending, verb)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let actor = actor_of(&viewer)?;
    let Some(verb) = Verb::parse(&verb) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "a prompt's buttons are confirm, cancel, approve and reject",
        ));
    };
    prompt_answer(&state, actor, &pending, verb).await
}

async fn prompt_answer(
    state: &AppState,
    actor: Actor,
    pending: &str,
    verb: Verb,
) -> Result<Response, ApiError> {
    let custom_id = ButtonId::Prompt {
        pending: pending.to_string(),
        verb,
    }
    .format()
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such prompt"))?;
    // The answer that showed the prompt: the core's reply replaces it.
    let answers = state
        .console
        .feed()
        .store()
        .console_prompt_ref(pending)
        .await
        .map_err(unavailable)?
        .unwrap_or_default();
    let request = Request::Button {
        actor: actor.clone(),
        custom_id,
        origin: Origin {
            channel_id: Some(CHANNEL.into()),
            message_id: None,
            group_id: None,
        },
    };
    ask(state, actor, request, &answers).await
}

/// `GET /api/commands`: what the command bar completes from: each command, its options, and a
/// usage line.
pub(super) async fn catalog(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let dispatcher = core(&state)?;
    let list: Vec<Value> = dispatcher
        .commands()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "description": c.description,
                "usage": line::usage(c),
                "options": c.options.iter().map(|o| json!({
                    "name": o.name,
                    "description": o.description,
                    "type": kind_name(o.kind),
                    "required": o.required,
                    "choices": o.choices,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `GET /api/requests/{id}`: the latest answer to one request (a script that got `deferred`
/// asks here for the result, or follows `/api/events`).
pub(super) async fn request(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let me = viewer.actor().map(|a| a.user_id);
    let row = state
        .console
        .feed()
        .store()
        .console_latest(&crate::domain::text::clip(&id, 64))
        .await
        .map_err(unavailable)?
        .filter(|r| r.visible_to(me.as_deref()));
    match row {
        Some(r) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], r.data.clone()).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no answer to that request for you",
        )),
    }
}

/// `GET /api/files/{id}`: a file an answer carried, for the person it answered.
pub(super) async fn file(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "no such file for you");
    let me = viewer.actor().ok_or_else(missing)?.user_id;
    if id.len() > 64 {
        return Err(missing());
    }
    let Some((name, content)) = state
        .console
        .feed()
        .store()
        .console_file(&id, &me)
        .await
        .map_err(unavailable)?
    else {
        return Err(missing());
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        content,
    )
        .into_response())
}
