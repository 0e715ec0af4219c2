//! Discord's interactions, whichever way they arrive: posted to `/discord/interactions`
//! (`http::discord`, after the signature check) or delivered over the Gateway ([`super::gateway`]).
//! Both hand the interaction's JSON here, already checked and seen once; this turns it into the
//! core's [`Request`], hands it to the dispatcher and answers Discord's interaction response
//! (the HTTP answer, or the body of the Gateway's callback). So both ways give the same
//! answers and the same refusals.

use std::sync::Arc;

use serde_json::json;

use super::render::{deferred_response, initial_response, update_message};
use super::DiscordAdapter;
use crate::invocation::Dispatcher;
use crate::request::{Actor, Answer, Origin, Platform, RawValue, Reply, Request, Responder};

/// Interaction types (Discord API).
pub const PING: u64 = 1;
pub const APPLICATION_COMMAND: u64 = 2;
pub const MESSAGE_COMPONENT: u64 = 3;
pub const AUTOCOMPLETE: u64 = 4;
/// Response types.
const PONG: u64 = 1;
const AUTOCOMPLETE_RESULT: u64 = 8;

/// The interaction response for `interaction`. `responder` makes what edits the answer later,
/// from the adapter and the interaction's token (valid 15 minutes).
pub async fn respond(
    interaction: &serde_json::Value,
    dispatcher: Option<&Arc<Dispatcher>>,
    adapter: Option<&Arc<DiscordAdapter>>,
    responder: impl FnOnce(&Arc<DiscordAdapter>, String) -> Arc<dyn Responder>,
) -> serde_json::Value {
    let kind = interaction.get("type").and_then(|t| t.as_u64());
    if kind == Some(PING) {
        return json!({ "type": PONG });
    }
    if kind == Some(AUTOCOMPLETE) {
        // runbot registers no autocomplete options; an empty list is the valid answer.
        return json!({ "type": AUTOCOMPLETE_RESULT, "data": { "choices": [] } });
    }
    let (Some(dispatcher), Some(adapter)) = (dispatcher, adapter) else {
        return initial_response(&Reply {
            text: "runbot is not set up to run commands from Discord: set discord.bot_token and discord.application_id.".into(),
            ephemeral: true,
            ..Reply::default()
        });
    };
    let request = match to_request(interaction) {
        Ok(r) => r,
        Err(why) => {
            return initial_response(&Reply {
                text: format!("🚫 {why}"),
                ephemeral: true,
                refused: true,
                ..Reply::default()
            })
        }
    };
    let component = kind == Some(MESSAGE_COMPONENT);
    let token = interaction
        .get("token")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let answer = dispatcher.handle(request, responder(adapter, token)).await;
    answer_json(&answer, component)
}

/// Discord's interaction as the core's request: who, what, where. No Discord type passes.
pub fn to_request(i: &serde_json::Value) -> Result<Request, String> {
    let member = i.get("member");
    let user = member
        .and_then(|m| m.get("user"))
        .or_else(|| i.get("user"))
        .ok_or("Discord sent no user with this interaction")?;
    let user_id = user
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("Discord sent an interaction without a valid user id")?;
    let name = member
        .and_then(|m| m.get("nick"))
        .and_then(|v| v.as_str())
        .or_else(|| user.get("global_name").and_then(|v| v.as_str()))
        .or_else(|| user.get("username").and_then(|v| v.as_str()))
        .unwrap_or(user_id);
    let platform_roles = member
        .and_then(|m| m.get("roles"))
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let actor = Actor {
        platform: Platform::Discord,
        user_id: user_id.to_string(),
        name: name.chars().take(80).collect(),
        platform_roles,
        roles: Vec::new(),
    };
    let origin = Origin {
        channel_id: i
            .get("channel_id")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        message_id: i
            .get("message")
            .and_then(|m| m.get("id"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        group_id: None,
    };
    let data = i
        .get("data")
        .ok_or("Discord sent no data with this interaction")?;
    match i.get("type").and_then(|t| t.as_u64()) {
        Some(APPLICATION_COMMAND) => {
            let command = data
                .get("name")
                .and_then(|v| v.as_str())
                .ok_or("Discord sent a command without a name")?
                .to_string();
            let args = data
                .get("options")
                .and_then(|o| o.as_array())
                .map(|options| {
                    options
                        .iter()
                        .filter_map(|o| {
                            let name = o.get("name")?.as_str()?.to_string();
                            let value = match o.get("value")? {
                                serde_json::Value::Bool(b) => RawValue::Boolean(*b),
                                serde_json::Value::Number(n) => match n.as_i64() {
                                    Some(i) => RawValue::Integer(i),
                                    None => RawValue::Text(n.to_string()),
                                },
                                serde_json::Value::String(s) => RawValue::Text(s.clone()),
                                other => RawValue::Text(other.to_string()),
                            };
                            Some((name, value))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Request::Command {
                actor,
                command,
                args,
                origin,
            })
        }
        Some(MESSAGE_COMPONENT) => {
            let custom_id = data
                .get("custom_id")
                .and_then(|v| v.as_str())
                .ok_or("Discord sent a button without its id")?
                .to_string();
            Ok(Request::Button {
                actor,
                custom_id,
                origin,
            })
        }
        _ => Err("runbot answers slash commands and buttons only.".into()),
    }
}

/// The core's first answer as Discord's interaction response.
pub fn answer_json(answer: &Answer, component: bool) -> serde_json::Value {
    match answer {
        Answer::Message(reply) => initial_response(reply),
        Answer::Deferred { ephemeral } => deferred_response(*ephemeral),
        // Only a button's message can be replaced; anything else gets a new message.
        Answer::Update(reply) if component => update_message(reply),
        Answer::Update(reply) => initial_response(reply),
    }
}
