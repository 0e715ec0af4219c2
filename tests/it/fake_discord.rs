//! The fake Discord API refuses what the real one refuses: each test sends real HTTP requests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_discord::{
    self, FakeDiscord, FakeUser, APPLICATION_ID, CREATE_SCHEMA, EDIT_SCHEMA, GUILD_ID,
};
use runbot::chat::discord::render::{
    deferred_response, deferred_update, initial_response, update_message,
};
use runbot::chat::discord::DiscordAdapter;
use runbot::chat::DeliveryError;
use runbot::request::{ButtonStyle, Reply as ChatReply, ReplyButton};
use serde_json::{json, Value};

const TOKEN: &str = "MTE4MDAwMDAwMDAwMDAwMDAwMQ.fake.token";
const CH: u64 = 1_200_000_000_000_000_001;
const CH2: u64 = 1_200_000_000_000_000_002;
const UA: &str = "DiscordBot (https://github.com/serenity-rs/serenity, 0.12.5)";

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `_errors` codes at a dotted path of a 50035 answer.
    fn error_codes(&self, path: &str) -> Vec<String> {
        assert_eq!(
            self.status, 400,
            "expected 400, got {}: {}",
            self.status, self.body
        );
        assert_eq!(self.body["code"], 50035, "{}", self.body);
        assert_eq!(self.body["message"], "Invalid Form Body", "{}", self.body);
        let mut node = &self.body["errors"];
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            node = &node[seg];
        }
        node["_errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors at {path}: {}", self.body))
            .iter()
            .map(|e| e["code"].as_str().unwrap().to_string())
            .collect()
    }

    fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        self.body
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().user_agent(UA).build().unwrap()
}

async fn fake() -> FakeDiscord {
    FakeDiscord::start_with_channels(TOKEN, &[CH, CH2]).await
}

/// A fake whose rate limits do not get in the way of tests about bodies.
async fn unlimited() -> FakeDiscord {
    let f = fake().await;
    f.set_route_limit(10_000, Duration::from_secs(1));
    f.set_global_limit(10_000, Duration::from_secs(1));
    f
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    auth: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut req = client.request(method, url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.expect("the fake answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn post(f: &FakeDiscord, channel: u64, body: &Value) -> Reply {
    send(
        &client(),
        reqwest::Method::POST,
        format!("{}/api/v10/channels/{channel}/messages", f.base_url()),
        Some(&format!("Bot {TOKEN}")),
        Some(body),
    )
    .await
}

async fn patch(f: &FakeDiscord, channel: u64, id: &str, body: &Value) -> Reply {
    send(
        &client(),
        reqwest::Method::PATCH,
        format!("{}/api/v10/channels/{channel}/messages/{id}", f.base_url()),
        Some(&format!("Bot {TOKEN}")),
        Some(body),
    )
    .await
}

fn button(id: &str) -> Value {
    json!({"type": 2, "style": 1, "custom_id": id, "label": "Run"})
}

fn row(buttons: Vec<Value>) -> Value {
    json!({"type": 1, "components": buttons})
}

fn card() -> Value {
    json!({
        "content": "**HighLatency** firing in prod",
        "embeds": [{
            "title": "HighLatency",
            "description": "p99 latency above 2s for 10m",
            "color": 15158332,
            "timestamp": "2026-11-27T19:31:13.991Z",
            "fields": [
                {"name": "service", "value": "checkout", "inline": true},
                {"name": "severity", "value": "page", "inline": true}
            ],
            "footer": {"text": "runbot"},
            "author": {"name": "Alertmanager"}
        }],
        "components": [row(vec![
            json!({"type": 2, "style": 3, "custom_id": "ack:42", "label": "Acknowledge"}),
            json!({"type": 2, "style": 5, "url": "https://runbook.example/high-latency", "label": "Runbook"})
        ])],
        "allowed_mentions": {"parse": []}
    })
}

fn as_serenity_message(body: &Value) -> serenity::model::channel::Message {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("serenity cannot read the fake's message ({e}): {body}"))
}

#[test]
fn the_schemas_are_the_ones_the_spec_names_for_the_operations() {
    assert_eq!(
        fake_discord::request_schema_name("/channels/{channel_id}/messages", "post").as_deref(),
        Some(CREATE_SCHEMA)
    );
    assert_eq!(
        fake_discord::request_schema_name("/channels/{channel_id}/messages/{message_id}", "patch")
            .as_deref(),
        Some(EDIT_SCHEMA)
    );
    assert_eq!(
        fake_discord::request_schema_name(
            "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
            "patch"
        )
        .as_deref(),
        Some(fake_discord::WEBHOOK_EDIT_SCHEMA)
    );
    // The spec allows 4000 characters of content: the 2000 limit below is the fake's own.
    let spec = fake_discord::openapi();
    assert_eq!(
        spec.pointer("/components/schemas/MessageCreateRequest/properties/content/maxLength"),
        Some(&json!(4000))
    );
}

#[tokio::test]
async fn a_valid_create_is_accepted_recorded_and_readable_by_serenity() {
    let f = fake().await;
    let r = post(&f, CH, &card()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = &r.body;
    let id = m["id"].as_str().unwrap();
    assert!(id.parse::<u64>().unwrap() > 0);
    assert_eq!(m["channel_id"], CH.to_string());
    assert_eq!(m["type"], 0);
    assert_eq!(m["content"], "**HighLatency** firing in prod");
    assert_eq!(m["embeds"][0]["title"], "HighLatency");
    assert_eq!(m["embeds"][0]["type"], "rich");
    assert_eq!(m["components"][0]["components"][0]["custom_id"], "ack:42");
    assert_eq!(m["author"]["bot"], true);
    assert_eq!(m["author"]["id"], fake_discord::BOT_USER_ID);
    assert!(m["edited_timestamp"].is_null());
    for key in [
        "timestamp",
        "tts",
        "mention_everyone",
        "mentions",
        "mention_roles",
        "attachments",
        "pinned",
        "flags",
    ] {
        assert!(m.get(key).is_some(), "no {key} in {m}");
    }
    let parsed = as_serenity_message(m);
    assert_eq!(parsed.id.get().to_string(), id);
    assert_eq!(parsed.embeds[0].fields.len(), 2);

    let second = post(&f, CH, &json!({"content": "second"})).await.ok();
    let second_id: u64 = second["id"].as_str().unwrap().parse().unwrap();
    assert!(second_id > id.parse::<u64>().unwrap(), "ids increase");

    let messages = f.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].id, id);
    assert_eq!(messages[0].channel_id, CH.to_string());
    assert_eq!(messages[0].edits, 0);
    assert_eq!(messages[0].custom_ids(), vec!["ack:42".to_string()]);
    assert_eq!(messages[1].content(), "second");
    let requests = f.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, format!("/api/v10/channels/{CH}/messages"));
    assert_eq!(requests[0].status, 200);
    assert_eq!(
        requests[0].body.as_ref().unwrap()["content"],
        card()["content"]
    );
    assert!(requests[0].at <= requests[1].at);
}

#[tokio::test]
async fn what_serenity_0_12_5_builders_send_is_accepted() {
    use serenity::builder::{
        CreateActionRow, CreateButton, CreateEmbed, CreateEmbedAuthor, CreateEmbedFooter,
        CreateMessage, EditMessage,
    };
    use serenity::model::application::ButtonStyle;
    let f = fake().await;
    let embed = CreateEmbed::new()
        .title("DiskFull")
        .description("/var is 97% full")
        .field("host", "db-1", true)
        .footer(CreateEmbedFooter::new("runbot"))
        .author(CreateEmbedAuthor::new("Alertmanager"))
        .thumbnail("https://runbot.example/icon.png")
        .image("https://runbot.example/graph.png")
        .colour(0xe74c3c);
    let buttons = CreateActionRow::Buttons(vec![
        CreateButton::new("run:cleanup")
            .label("Clean up")
            .style(ButtonStyle::Danger),
        CreateButton::new_link("https://runbook.example/disk").label("Runbook"),
    ]);
    let create = serde_json::to_value(
        CreateMessage::new()
            .content("DiskFull on db-1")
            .embed(embed)
            .components(vec![buttons]),
    )
    .unwrap();
    let created = post(&f, CH, &create).await.ok();
    let id = created["id"].as_str().unwrap().to_string();
    let edit = serde_json::to_value(
        EditMessage::new()
            .content("DiskFull on db-1: resolved")
            .components(vec![]),
    )
    .unwrap();
    let edited = patch(&f, CH, &id, &edit).await.ok();
    assert_eq!(edited["content"], "DiskFull on db-1: resolved");
    as_serenity_message(&edited);
}

#[tokio::test]
async fn an_edit_applies_and_counts() {
    let f = fake().await;
    let id = post(&f, CH, &card()).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = patch(
        &f,
        CH,
        &id,
        &json!({"content": "HighLatency acknowledged by @ana", "components": []}),
    )
    .await;
    let m = r.ok();
    assert_eq!(m["content"], "HighLatency acknowledged by @ana");
    assert_eq!(m["components"], json!([]));
    assert_eq!(
        m["embeds"][0]["title"], "HighLatency",
        "fields left out stay"
    );
    assert!(m["edited_timestamp"].is_string());
    as_serenity_message(&m);
    patch(&f, CH, &id, &json!({"embeds": []})).await.ok();
    let stored = &f.messages()[0];
    assert_eq!(stored.edits, 2);
    assert_eq!(stored.content(), "HighLatency acknowledged by @ana");
    assert_eq!(stored.body["embeds"], json!([]));
}

#[tokio::test]
async fn unknown_messages_and_channels_are_404() {
    let f = fake().await;
    let r = patch(&f, CH, "1200000000000000999", &json!({"content": "x"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, json!({"message": "Unknown Message", "code": 10008}));
    // A message of another channel is unknown in this one.
    let id = post(&f, CH2, &json!({"content": "x"})).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = patch(&f, CH, &id, &json!({"content": "y"})).await;
    assert_eq!(r.body["code"], 10008, "{}", r.body);
    assert_eq!(f.messages()[0].edits, 0);

    let r = post(&f, 1_200_000_000_000_000_777, &json!({"content": "x"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, json!({"message": "Unknown Channel", "code": 10003}));
    f.add_channel(1_200_000_000_000_000_777);
    post(&f, 1_200_000_000_000_000_777, &json!({"content": "x"}))
        .await
        .ok();

    let r = send(
        &client(),
        reqwest::Method::GET,
        format!("{}/api/v10/users/@me/guilds", f.base_url()),
        Some(&format!("Bot {TOKEN}")),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, json!({"message": "404: Not Found", "code": 0}));
    let r = send(
        &client(),
        reqwest::Method::POST,
        format!("{}/api/v9/channels/{CH}/messages", f.base_url()),
        Some(&format!("Bot {TOKEN}")),
        Some(&json!({"content": "x"})),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_401() {
    let f = fake().await;
    let url = format!("{}/api/v10/channels/{CH}/messages", f.base_url());
    let body = json!({"content": "x"});
    for auth in [
        None,
        Some("Bot wrong-token".to_string()),
        Some(format!("Bearer {TOKEN}")),
        Some(TOKEN.to_string()),
        Some(format!("Bot {TOKEN}x")),
    ] {
        let r = send(
            &client(),
            reqwest::Method::POST,
            url.clone(),
            auth.as_deref(),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.body, json!({"message": "401: Unauthorized", "code": 0}));
    }
    assert!(f.messages().is_empty());
    // The User-Agent Discord requires.
    let r = send(
        &reqwest::Client::new(),
        reqwest::Method::POST,
        url,
        Some(&format!("Bot {TOKEN}")),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(f.messages().is_empty());
}

#[tokio::test]
async fn the_openapi_schema_refuses_unknown_fields_and_wrong_types() {
    let f = unlimited().await;
    // `embed` was removed in v8: Discord drops it silently, the fake refuses it.
    let r = post(&f, CH, &json!({"content": "x", "embed": {"title": "t"}})).await;
    assert_eq!(r.error_codes("embed"), ["UNKNOWN_FIELD"]);
    assert!(
        r.header("x-ratelimit-bucket").is_some(),
        "routed answers carry the headers"
    );
    // Unknown fields deep inside, found through the oneOf of components.
    let mut b = button("a");
    b["colour"] = json!("red");
    let r = post(&f, CH, &json!({"components": [row(vec![b])]})).await;
    assert_eq!(
        r.error_codes("components.0.components.0.colour"),
        ["UNKNOWN_FIELD"]
    );
    // Wrong types.
    let r = post(&f, CH, &json!({"content": 5})).await;
    assert_eq!(r.error_codes("content"), ["BASE_TYPE_STRING"]);
    let r = post(&f, CH, &json!({"content": "x", "tts": "yes"})).await;
    assert_eq!(r.error_codes("tts"), ["BASE_TYPE_BOOLEAN"]);
    let r = post(&f, CH, &json!({"content": "x", "embeds": {"title": "t"}})).await;
    assert_eq!(r.error_codes("embeds"), ["LIST_TYPE_CONVERT"]);
    let r = post(&f, CH, &json!([{"content": "x"}])).await;
    assert_eq!(r.error_codes(""), ["DICT_TYPE_CONVERT"]);
    // Limits and values the spec itself carries.
    let r = post(&f, CH, &json!({"embeds": [{"title": "t".repeat(257)}]})).await;
    assert_eq!(r.error_codes("embeds.0.title"), ["BASE_TYPE_MAX_LENGTH"]);
    let r = post(
        &f,
        CH,
        &json!({"embeds": [{"title": "t", "color": 16777216}]}),
    )
    .await;
    assert_eq!(r.error_codes("embeds.0.color"), ["NUMBER_TYPE_MAX"]);
    let r = post(&f, CH, &json!({"embeds": [{"fields": [{"name": "n"}]}]})).await;
    assert_eq!(
        r.error_codes("embeds.0.fields.0.value"),
        ["BASE_TYPE_REQUIRED"]
    );
    let r = post(
        &f,
        CH,
        &json!({"embeds": [{"title": "t", "url": "not a url"}]}),
    )
    .await;
    assert_eq!(r.error_codes("embeds.0.url"), ["URL_TYPE_INVALID_URL"]);
    let mut b = button("a");
    b["style"] = json!(7);
    let r = post(&f, CH, &json!({"components": [row(vec![b])]})).await;
    assert!(!r.error_codes("components.0.components.0.style").is_empty());
    let r = post(&f, CH, &json!({"components": [row(vec![])]})).await;
    assert_eq!(
        r.error_codes("components.0.components"),
        ["BASE_TYPE_BAD_LENGTH"]
    );
    let r = post(
        &f,
        CH,
        &json!({"content": "x", "message_reference": {"message_id": "abc"}}),
    )
    .await;
    assert!(!r.error_codes("message_reference.message_id").is_empty());
    assert!(f.messages().is_empty(), "nothing refused was applied");

    // Discord itself only drops unknown fields.
    f.set_reject_unknown_fields(false);
    post(&f, CH, &json!({"content": "x", "embed": {"title": "t"}}))
        .await
        .ok();

    // Bodies that are not JSON.
    let url = format!("{}/api/v10/channels/{CH}/messages", f.base_url());
    let r = client()
        .post(&url)
        .header("authorization", format!("Bot {TOKEN}"))
        .header("content-type", "application/json")
        .body("{\"content\": \"x\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"message": "The request body contains invalid JSON.", "code": 50109})
    );
    let r = client()
        .post(&url)
        .header("authorization", format!("Bot {TOKEN}"))
        .body("{\"content\": \"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "no JSON content type: Discord reads no fields"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 50006);
    assert_eq!(f.messages().len(), 1);
}

#[tokio::test]
async fn content_is_limited_to_2000_characters() {
    let f = unlimited().await;
    // Characters, not bytes: "é" is two bytes.
    post(&f, CH, &json!({"content": "é".repeat(2000)}))
        .await
        .ok();
    let r = post(&f, CH, &json!({"content": "é".repeat(2001)})).await;
    assert_eq!(r.error_codes("content"), ["BASE_TYPE_MAX_LENGTH"]);
    // Also when editing.
    let id = f.messages()[0].id.clone();
    let r = patch(&f, CH, &id, &json!({"content": "x".repeat(2001)})).await;
    assert_eq!(r.error_codes("content"), ["BASE_TYPE_MAX_LENGTH"]);
    assert_eq!(f.messages().len(), 1);
    assert_eq!(f.messages()[0].edits, 0);
}

#[tokio::test]
async fn embed_limits_are_enforced() {
    let f = unlimited().await;
    let fields = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"name": format!("f{i}"), "value": "v"}))
            .collect()
    };
    post(&f, CH, &json!({"embeds": [{"fields": fields(25)}]}))
        .await
        .ok();
    let r = post(&f, CH, &json!({"embeds": [{"fields": fields(26)}]})).await;
    assert_eq!(r.error_codes("embeds.0.fields"), ["BASE_TYPE_BAD_LENGTH"]);

    let r = post(&f, CH, &json!({"embeds": vec![json!({"title": "t"}); 11]})).await;
    assert_eq!(r.error_codes("embeds"), ["BASE_TYPE_BAD_LENGTH"]);

    // 6000 characters over all embeds is the most; each embed alone is within its limits.
    let desc = |n: usize| json!({"description": "d".repeat(n)});
    post(
        &f,
        CH,
        &json!({"embeds": [desc(3000), desc(2990), {"title": "t".repeat(10)}]}),
    )
    .await
    .ok();
    let r = post(
        &f,
        CH,
        &json!({"embeds": [desc(3000), desc(2990), {"title": "t".repeat(11)}]}),
    )
    .await;
    assert_eq!(r.error_codes("embeds"), ["MAX_EMBED_SIZE_EXCEEDED"]);
    let r = post(
        &f,
        CH,
        &json!({"embeds": [{"description": "d".repeat(4000), "footer": {"text": "f".repeat(2001)}}]}),
    )
    .await;
    assert_eq!(r.error_codes("embeds"), ["MAX_EMBED_SIZE_EXCEEDED"]);

    let r = post(
        &f,
        CH,
        &json!({"embeds": [{"fields": [{"name": "n", "value": ""}]}]}),
    )
    .await;
    assert_eq!(
        r.error_codes("embeds.0.fields.0.value"),
        ["BASE_TYPE_REQUIRED"]
    );
    let r = post(
        &f,
        CH,
        &json!({"embeds": [{"description": "d".repeat(4097)}]}),
    )
    .await;
    assert_eq!(
        r.error_codes("embeds.0.description"),
        ["BASE_TYPE_MAX_LENGTH"]
    );
    let r = post(
        &f,
        CH,
        &json!({"embeds": [{"fields": [{"name": "n".repeat(257), "value": "v"}]}]}),
    )
    .await;
    assert_eq!(
        r.error_codes("embeds.0.fields.0.name"),
        ["BASE_TYPE_MAX_LENGTH"]
    );
    let r = post(
        &f,
        CH,
        &json!({"embeds": [{"fields": [{"name": "n", "value": "v".repeat(1025)}]}]}),
    )
    .await;
    assert_eq!(
        r.error_codes("embeds.0.fields.0.value"),
        ["BASE_TYPE_MAX_LENGTH"]
    );
    assert_eq!(f.messages().len(), 2);
}

#[tokio::test]
async fn component_limits_are_enforced() {
    let f = unlimited().await;
    let rows = |n: usize, per: usize| -> Vec<Value> {
        (0..n)
            .map(|r| row((0..per).map(|b| button(&format!("r{r}b{b}"))).collect()))
            .collect()
    };
    post(&f, CH, &json!({"components": rows(5, 5)})).await.ok();
    let r = post(&f, CH, &json!({"components": rows(6, 1)})).await;
    assert_eq!(r.error_codes("components"), ["BASE_TYPE_BAD_LENGTH"]);
    let r = post(&f, CH, &json!({"components": rows(1, 6)})).await;
    assert_eq!(
        r.error_codes("components.0.components"),
        ["BASE_TYPE_BAD_LENGTH"]
    );

    post(
        &f,
        CH,
        &json!({"components": [row(vec![button(&"i".repeat(100))])]}),
    )
    .await
    .ok();
    let r = post(
        &f,
        CH,
        &json!({"components": [row(vec![button(&"i".repeat(101))])]}),
    )
    .await;
    assert_eq!(
        r.error_codes("components.0.components.0.custom_id"),
        ["BASE_TYPE_MAX_LENGTH"]
    );
    let mut long_label = button("a");
    long_label["label"] = json!("l".repeat(81));
    let r = post(&f, CH, &json!({"components": [row(vec![long_label])]})).await;
    assert_eq!(
        r.error_codes("components.0.components.0.label"),
        ["BASE_TYPE_MAX_LENGTH"]
    );

    let r = post(
        &f,
        CH,
        &json!({"components": [row(vec![button("same")]), row(vec![button("same")])]}),
    )
    .await;
    assert_eq!(
        r.error_codes("components.1.components.0.custom_id"),
        ["COMPONENT_CUSTOM_ID_DUPLICATED"]
    );

    let link_with_id =
        json!({"type": 2, "style": 5, "url": "https://x.example", "custom_id": "a", "label": "L"});
    let r = post(&f, CH, &json!({"components": [row(vec![link_with_id])]})).await;
    assert!(!r
        .error_codes("components.0.components.0.custom_id")
        .is_empty());
    let link_without_url = json!({"type": 2, "style": 5, "label": "L"});
    let r = post(
        &f,
        CH,
        &json!({"components": [row(vec![link_without_url])]}),
    )
    .await;
    assert_eq!(
        r.error_codes("components.0.components.0.url"),
        ["BASE_TYPE_REQUIRED"]
    );
    let primary_with_url = json!({"type": 2, "style": 1, "url": "https://x.example", "label": "L"});
    let r = post(
        &f,
        CH,
        &json!({"components": [row(vec![primary_with_url])]}),
    )
    .await;
    assert_eq!(
        r.error_codes("components.0.components.0.custom_id"),
        ["BASE_TYPE_REQUIRED"]
    );
    assert!(!r.error_codes("components.0.components.0.url").is_empty());
    let ftp = json!({"type": 2, "style": 5, "url": "ftp://x.example/f", "label": "L"});
    let r = post(&f, CH, &json!({"components": [row(vec![ftp])]})).await;
    assert_eq!(
        r.error_codes("components.0.components.0.url"),
        ["URL_TYPE_INVALID_SCHEME"]
    );
    // A bare button outside an action row needs the components v2 flag.
    let r = post(&f, CH, &json!({"components": [button("a")]})).await;
    assert!(!r.error_codes("components.0").is_empty());
    assert_eq!(f.messages().len(), 2);
}

#[tokio::test]
async fn an_empty_message_is_refused() {
    let f = unlimited().await;
    for body in [
        json!({}),
        json!({"content": ""}),
        json!({"content": "  \n", "embeds": [], "components": [], "tts": false}),
    ] {
        let r = post(&f, CH, &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(
            r.body,
            json!({"message": "Cannot send an empty message", "code": 50006})
        );
    }
    let id = post(&f, CH, &json!({"content": "x"})).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = patch(&f, CH, &id, &json!({"content": ""})).await;
    assert_eq!(r.body["code"], 50006, "an edit cannot empty a message");
    let r = patch(&f, CH, &id, &json!({"content": null})).await;
    assert_eq!(r.body["code"], 50006);
    assert_eq!(f.messages().len(), 1);
    assert_eq!(f.messages()[0].content(), "x");
}

#[tokio::test]
async fn enforce_nonce_returns_the_first_message() {
    let f = fake().await;
    let body = json!({"content": "x", "nonce": "alert-42", "enforce_nonce": true});
    let a = post(&f, CH, &body).await.ok();
    let b = post(&f, CH, &body).await.ok();
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["nonce"], "alert-42");
    assert_eq!(f.messages().len(), 1);
    post(&f, CH, &json!({"content": "x", "nonce": "alert-42"}))
        .await
        .ok();
    assert_eq!(
        f.messages().len(),
        2,
        "without enforce_nonce Discord posts again"
    );
}

#[tokio::test]
async fn the_sixth_post_in_a_channel_within_5s_is_429() {
    let f = fake().await;
    let mut bucket = None;
    for i in 0..5 {
        let r = post(&f, CH, &json!({"content": format!("m{i}")})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((4 - i).to_string().as_str())
        );
        let after: f64 = r
            .header("x-ratelimit-reset-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!(after > 0.0 && after <= 5.0, "{after}");
        let reset: f64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(reset > now && reset <= now + 5.1, "{reset} vs {now}");
        let b = r.header("x-ratelimit-bucket").unwrap().to_string();
        assert_eq!(bucket.get_or_insert(b.clone()), &b);
    }
    let r = post(&f, CH, &json!({"content": "m5"})).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["message"], "You are being rate limited.");
    assert_eq!(r.body["global"], false);
    let retry = r.body["retry_after"].as_f64().unwrap();
    assert!(retry > 0.0 && retry <= 5.0, "{retry}");
    let header: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(header, retry.ceil() as u64);
    assert_eq!(r.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("x-ratelimit-global").is_none());
    assert_eq!(f.messages().len(), 5, "a 429 is not applied");
    assert_eq!(f.count_429(), 1);

    // Another channel has its own bucket (same route, same hash), and so does editing.
    let other = post(&f, CH2, &json!({"content": "elsewhere"})).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-ratelimit-bucket"), bucket.as_deref());
    let id = f.messages()[0].id.clone();
    patch(&f, CH, &id, &json!({"content": "edited"})).await.ok();
    assert_eq!(f.count_429(), 1);
}

#[tokio::test]
async fn a_bucket_opens_again_after_retry_after() {
    let f = fake().await;
    f.set_route_limit(2, Duration::from_millis(400));
    post(&f, CH, &json!({"content": "a"})).await.ok();
    post(&f, CH, &json!({"content": "b"})).await.ok();
    let r = post(&f, CH, &json!({"content": "c"})).await;
    assert_eq!(r.status, 429);
    let retry = r.body["retry_after"].as_f64().unwrap();
    assert!(retry <= 0.4, "{retry}");
    tokio::time::sleep(Duration::from_secs_f64(retry)).await;
    let r = post(&f, CH, &json!({"content": "c"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"), "a new window");
    assert_eq!(f.messages().len(), 3);
}

#[tokio::test]
async fn the_global_limit_answers_a_global_429() {
    let f = fake().await;
    f.set_global_limit(3, Duration::from_secs(1));
    for (i, ch) in [CH, CH2, CH].into_iter().enumerate() {
        post(&f, ch, &json!({"content": format!("m{i}")}))
            .await
            .ok();
    }
    let r = post(&f, CH2, &json!({"content": "m3"})).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["global"], true);
    assert_eq!(r.body["message"], "You are being rate limited.");
    assert!(r.body["retry_after"].as_f64().unwrap() <= 1.0);
    assert_eq!(r.header("x-ratelimit-global"), Some("true"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("global"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(f.messages().len(), 3);
    assert_eq!(f.count_429(), 1);
}

#[tokio::test]
async fn fail_with_answers_5xx_without_applying_and_recovers() {
    let f = fake().await;
    f.fail_with(Some(503));
    let r = post(&f, CH, &json!({"content": "x"})).await;
    assert_eq!(r.status, 503);
    f.fail_with(Some(500));
    let r = post(&f, CH, &json!({"content": "x"})).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body["message"], "500: Internal Server Error");
    assert!(f.messages().is_empty());
    f.fail_with(None);
    post(&f, CH, &json!({"content": "x"})).await.ok();
    assert_eq!(f.messages().len(), 1);
    let statuses: Vec<u16> = f.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 500, 200]);
}

#[tokio::test]
async fn go_down_refuses_connections_and_come_back_keeps_the_state() {
    let f = fake().await;
    let keep_alive = client();
    let url = format!("{}/api/v10/channels/{CH}/messages", f.base_url());
    let first = send(
        &keep_alive,
        reqwest::Method::POST,
        url.clone(),
        Some(&format!("Bot {TOKEN}")),
        Some(&json!({"content": "before"})),
    )
    .await
    .ok();
    // An open connection that has not sent anything yet.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", f.port()))
        .await
        .unwrap();

    f.go_down().await;
    assert!(!f.is_up());
    let refused = std::net::TcpStream::connect(("127.0.0.1", f.port())).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let err = keep_alive
        .post(&url)
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&json!({"content": "while down"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    // The idle connection was closed, not left hanging.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("the connection is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    f.come_back().await;
    assert!(f.is_up());
    let id = first["id"].as_str().unwrap();
    let r = send(
        &keep_alive,
        reqwest::Method::PATCH,
        format!("{url}/{id}"),
        Some(&format!("Bot {TOKEN}")),
        Some(&json!({"content": "after"})),
    )
    .await
    .ok();
    assert_eq!(r["id"], first["id"]);
    let messages = f.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].content(), "after");
    assert_eq!(messages[0].edits, 1);
}

#[tokio::test]
async fn set_delay_makes_an_impatient_client_time_out() {
    let f = fake().await;
    f.set_delay(Duration::from_millis(800));
    let impatient = reqwest::Client::builder()
        .user_agent(UA)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = impatient
        .post(format!("{}/api/v10/channels/{CH}/messages", f.base_url()))
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&json!({"content": "slow"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(700));
    // Like a slow Discord, the fake handled the request even though the answer came too late.
    assert_eq!(f.messages().len(), 1);
    f.set_delay(Duration::ZERO);
    let r = impatient
        .post(format!("{}/api/v10/channels/{CH}/messages", f.base_url()))
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&json!({"content": "fast"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let all = f.wait_for_messages(2, Duration::from_secs(2)).await;
    assert_eq!(all[1].content(), "fast");
}

// ---------------------------------------------------------------------------------------------
// Interactions: commands, signed deliveries, the interaction webhook.

type Answerer = Arc<dyn Fn(&Value) -> (Duration, Value) + Send + Sync>;

/// An application's interactions endpoint, as a test writes it: checks Discord's signature
/// with serenity's `Verifier`, keeps what it received, answers what `answer` says after the
/// delay it says.
struct App {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

async fn app(
    public_key: &str,
    answer: impl Fn(&Value) -> (Duration, Value) + Send + Sync + 'static,
) -> App {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&public_key[2 * i..2 * i + 2], 16).unwrap();
    }
    let verifier = Arc::new(serenity::interactions_endpoint::Verifier::try_new(key).unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let answer: Answerer = Arc::new(answer);
    let (kept, verify) = (received.clone(), verifier.clone());
    let handler = move |headers: HeaderMap, body: Bytes| {
        let (kept, verify, answer) = (kept.clone(), verify.clone(), answer.clone());
        async move {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
            if verify
                .verify(h("x-signature-ed25519"), h("x-signature-timestamp"), &body)
                .is_err()
            {
                return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
            }
            let interaction: Value = serde_json::from_slice(&body).unwrap();
            kept.lock().unwrap().push(interaction.clone());
            let (delay, reply) = answer(&interaction);
            tokio::time::sleep(delay).await;
            axum::Json(reply).into_response()
        }
    };
    let router = axum::Router::new().route("/interactions", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/interactions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    App { url, received }
}

fn now_answer(v: Value) -> impl Fn(&Value) -> (Duration, Value) + Send + Sync + 'static {
    move |_| (Duration::ZERO, v.clone())
}

fn ana() -> FakeUser {
    FakeUser::new(1_300_000_000_000_000_001, "Ana Ops", &["DevOps Lead"])
}

fn adapter(f: &FakeDiscord) -> DiscordAdapter {
    adapter_with(f, &[])
}

/// An adapter for the fake, built from settings as runbot builds it, plus `more` of them.
fn adapter_with(f: &FakeDiscord, more: &[(&str, &str)]) -> DiscordAdapter {
    let mut env = vec![
        ("RUNBOT__DISCORD__BOT_TOKEN".to_string(), TOKEN.to_string()),
        (
            "RUNBOT__DISCORD__APPLICATION_ID".to_string(),
            APPLICATION_ID.to_string(),
        ),
        ("RUNBOT__DISCORD__API_BASE".to_string(), f.base_url()),
        // Required with a bot token; these tests name their channels.
        (
            "RUNBOT__DISCORD__ALERT_CHANNEL_ID".to_string(),
            CH.to_string(),
        ),
    ];
    env.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = runbot::config::Settings::load_from(None, env).unwrap();
    DiscordAdapter::new(&settings).unwrap()
}

fn reply(text: &str, buttons: &[&str]) -> ChatReply {
    ChatReply {
        text: text.into(),
        buttons: buttons
            .iter()
            .map(|id| ReplyButton {
                id: id.to_string(),
                label: format!("Do {id}"),
                style: ButtonStyle::Primary,
            })
            .collect(),
        ..ChatReply::default()
    }
}

fn runbot_commands() -> Value {
    let commands = runbot::commands::Commands::load(None).unwrap();
    serde_json::to_value(runbot::chat::discord::commands::build_all(&commands)).unwrap()
}

async fn put_commands(
    f: &FakeDiscord,
    guild: Option<u64>,
    body: &Value,
    auth: Option<&str>,
) -> Reply {
    let url = match guild {
        Some(g) => format!(
            "{}/applications/{APPLICATION_ID}/guilds/{g}/commands",
            f.api_url()
        ),
        None => format!("{}/applications/{APPLICATION_ID}/commands", f.api_url()),
    };
    send(&client(), reqwest::Method::PUT, url, auth, Some(body)).await
}

async fn webhook(
    f: &FakeDiscord,
    method: reqwest::Method,
    token: &str,
    original: bool,
    body: Option<&Value>,
) -> Reply {
    let mut url = format!("{}/webhooks/{APPLICATION_ID}/{token}", f.api_url());
    if original {
        url.push_str("/messages/@original");
    }
    // No bot token: the interaction's token is the credential.
    send(&client(), method, url, None, body).await
}

#[tokio::test]
async fn runbots_commands_are_registered_kept_and_overwritten_like_discord() {
    let f = unlimited().await;
    let body = runbot_commands();
    let first = put_commands(&f, None, &body, Some(&format!("Bot {TOKEN}")))
        .await
        .ok();
    let first = first.as_array().unwrap();
    assert_eq!(first.len(), body.as_array().unwrap().len());
    for c in first {
        assert_eq!(c["application_id"], APPLICATION_ID);
        assert!(c["id"].as_str().unwrap().parse::<u64>().is_ok());
        assert!(c["version"].as_str().unwrap().parse::<u64>().is_ok());
        let parsed: serenity::model::application::Command = serde_json::from_value(c.clone())
            .unwrap_or_else(|e| panic!("serenity cannot read the fake's command ({e}): {c}"));
        assert_eq!(parsed.name, c["name"].as_str().unwrap());
    }
    let logs = first.iter().find(|c| c["name"] == "logs").unwrap();
    assert_eq!(logs["options"][0]["required"], true);
    assert!(
        logs["options"][1].get("required").is_none(),
        "Discord leaves out false"
    );
    assert_eq!(f.registered_commands(None), *first);
    assert!(f.registered_commands(Some(GUILD_ID)).is_empty());

    // Again: same ids, new versions, same count. GET answers the same list.
    let second = put_commands(&f, None, &body, Some(&format!("Bot {TOKEN}")))
        .await
        .ok();
    for (a, b) in first.iter().zip(second.as_array().unwrap()) {
        assert_eq!(a["id"], b["id"]);
        assert_ne!(a["version"], b["version"]);
    }
    let listed = send(
        &client(),
        reqwest::Method::GET,
        format!("{}/applications/{APPLICATION_ID}/commands", f.api_url()),
        Some(&format!("Bot {TOKEN}")),
        None,
    )
    .await
    .ok();
    assert_eq!(listed, second);

    // A guild's commands are its own; an empty list removes them all.
    let g = put_commands(
        &f,
        Some(GUILD_ID),
        &json!([body[0]]),
        Some(&format!("Bot {TOKEN}")),
    )
    .await
    .ok();
    assert_eq!(g[0]["guild_id"], GUILD_ID.to_string());
    assert_eq!(f.registered_commands(None).len(), first.len());
    put_commands(
        &f,
        Some(GUILD_ID),
        &json!([]),
        Some(&format!("Bot {TOKEN}")),
    )
    .await
    .ok();
    assert!(f.registered_commands(Some(GUILD_ID)).is_empty());
}

#[tokio::test]
async fn malformed_command_registrations_are_refused() {
    let f = unlimited().await;
    let auth = format!("Bot {TOKEN}");
    let opt = |name: &str, kind: u64, required: bool| json!({"type": kind, "name": name, "description": "d", "required": required});
    let cmd = |name: &str, options: Vec<Value>| json!({"type": 1, "name": name, "description": "does things", "options": options});
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "upper case",
            json!([cmd("Restart", vec![])]),
            "0.name",
            "APPLICATION_COMMAND_INVALID_NAME",
        ),
        (
            "a space",
            json!([cmd("re start", vec![])]),
            "0.name",
            "APPLICATION_COMMAND_INVALID_NAME",
        ),
        (
            "33 characters",
            json!([cmd(&"a".repeat(33), vec![])]),
            "0.name",
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            "no description",
            json!([{"type": 1, "name": "status", "description": ""}]),
            "0.description",
            "BASE_TYPE_REQUIRED",
        ),
        (
            "101-character description",
            json!([{"type": 1, "name": "status", "description": "d".repeat(101)}]),
            "0.description",
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            "26 options",
            json!([cmd(
                "status",
                (0..26).map(|i| opt(&format!("o{i}"), 3, false)).collect()
            )]),
            "0.options",
            "BASE_TYPE_BAD_LENGTH",
        ),
        (
            "26 choices",
            json!([cmd(
                "logs",
                vec![json!({
                    "type": 3, "name": "service", "description": "d",
                    "choices": (0..26).map(|i| json!({"name": format!("c{i}"), "value": format!("c{i}")})).collect::<Vec<_>>(),
                })]
            )]),
            "0.options.0.choices",
            "BASE_TYPE_BAD_LENGTH",
        ),
        (
            "a required option after an optional one",
            json!([cmd(
                "logs",
                vec![opt("tail", 4, false), opt("service", 3, true)]
            )]),
            "0.options.1",
            "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
        ),
        (
            "two options of one name",
            json!([cmd(
                "logs",
                vec![opt("service", 3, true), opt("service", 3, false)]
            )]),
            "0.options.1.name",
            "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
        ),
        (
            "two commands of one name",
            json!([cmd("status", vec![]), cmd("status", vec![])]),
            "1.name",
            "APPLICATION_COMMANDS_DUPLICATE_NAME",
        ),
        (
            "an option type that does not exist",
            json!([cmd("status", vec![opt("x", 99, false)])]),
            "0.options.0",
            "UNION_TYPE_CHOICES",
        ),
        (
            "autocomplete on a boolean",
            json!([cmd(
                "status",
                vec![json!({"type": 5, "name": "x", "description": "d", "autocomplete": true})]
            )]),
            "0.options.0.autocomplete",
            "UNION_TYPE_CHOICES",
        ),
        (
            "a string choice value over 100 characters",
            json!([cmd(
                "logs",
                vec![
                    json!({"type": 3, "name": "s", "description": "d", "choices": [{"name": "n", "value": "v".repeat(101)}]})
                ]
            )]),
            "0.options.0.choices.0.value",
            "BASE_TYPE_MAX_LENGTH",
        ),
    ];
    for (what, body, path, code) in cases {
        let r = put_commands(&f, None, &body, Some(&auth)).await;
        let codes = r.error_codes(path);
        assert!(
            codes.iter().any(|c| c == code),
            "{what}: {codes:?} {}",
            r.body
        );
    }
    let many: Vec<Value> = (0..101).map(|i| cmd(&format!("c{i}"), vec![])).collect();
    let r = put_commands(&f, None, &json!(many), Some(&auth)).await;
    assert_eq!(
        (r.status, r.body["code"].as_u64()),
        (400, Some(30032)),
        "{}",
        r.body
    );

    let good = runbot_commands();
    assert_eq!(put_commands(&f, None, &good, None).await.status, 401);
    let other_app = send(
        &client(),
        reqwest::Method::PUT,
        format!("{}/applications/1234567890123/commands", f.api_url()),
        Some(&auth),
        Some(&good),
    )
    .await;
    assert_eq!(
        (other_app.status, other_app.body["code"].as_u64()),
        (403, Some(50001))
    );
    let r = put_commands(&f, Some(42_000_000_000_000_000), &good, Some(&auth)).await;
    assert_eq!(
        (r.status, r.body["code"].as_u64()),
        (403, Some(50001)),
        "a guild the bot is not in"
    );
    assert!(
        f.registered_commands(None).is_empty(),
        "nothing refused was kept"
    );
}

#[tokio::test]
async fn interactions_are_signed_and_shaped_like_discords() {
    let f = fake().await;
    put_commands(&f, None, &runbot_commands(), Some(&format!("Bot {TOKEN}")))
        .await
        .ok();
    let app = app(&f.public_key_hex(), |i: &Value| {
        let reply = if i["type"] == 1 {
            json!({"type": 1})
        } else {
            initial_response(&reply("ok", &[]))
        };
        (Duration::ZERO, reply)
    })
    .await;

    let pong = f.send_interaction(&app.url, f.ping()).await;
    assert_eq!((pong.status, &pong.body), (200, &json!({"type": 1})));
    assert!(pong.failure.is_none());

    let user = ana();
    let i = f.slash_command(
        "logs",
        &[("service", json!("backend")), ("tail", json!(50))],
        &user,
        CH,
    );
    let sent = f.send_interaction(&app.url, i.clone()).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.failure.is_none(), "{:?}", sent.failure);
    assert!(sent.latency < Duration::from_secs(3));

    let got = app.received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(got, i.body, "the application got what the fake signed");
    assert_eq!(
        (got["type"].as_u64(), got["version"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(got["application_id"], APPLICATION_ID);
    assert_eq!(got["token"], sent.token.as_str());
    assert_eq!(got["guild_id"], GUILD_ID.to_string());
    assert_eq!(got["member"]["user"]["id"], user.id.as_str());
    assert_eq!(got["member"]["user"]["global_name"], "Ana Ops");
    assert_eq!(got["member"]["roles"], json!([f.role_id("DevOps Lead")]));
    let registered = f.registered_commands(None);
    let logs = registered.iter().find(|c| c["name"] == "logs").unwrap();
    assert_eq!(got["data"]["id"], logs["id"]);
    assert_eq!(
        got["data"]["options"],
        json!([
            {"name": "service", "type": 3, "value": "backend"},
            {"name": "tail", "type": 4, "value": 50},
        ])
    );
    match serde_json::from_value::<serenity::model::application::Interaction>(got.clone()) {
        Ok(serenity::model::application::Interaction::Command(c)) => {
            assert_eq!(c.data.name, "logs");
            assert_eq!(c.user.id.get().to_string(), user.id);
        }
        other => panic!("serenity reads {other:?} from {got}"),
    }
    let seen = f.interaction(&sent.id);
    assert_eq!(seen.response_type, Some(4));
    assert_eq!(seen.content(), "ok");
    assert_eq!(f.interaction(&sent.token).id, sent.id, "by token or by id");

    // The verifier is no rubber stamp: a request the fake did not sign is refused.
    let r = client()
        .post(&app.url)
        .header("x-signature-ed25519", "00".repeat(64))
        .header("x-signature-timestamp", "1700000000")
        .body(i.body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_deferred_command_is_edited_followed_up_and_its_followups_buttons_click() {
    let f = fake().await;
    let app = app(&f.public_key_hex(), |i: &Value| {
        let answer = match i["type"].as_u64() {
            Some(2) => deferred_response(false),
            // A click on the confirmation: it becomes the outcome, without buttons.
            _ => update_message(&reply("Restarted backend", &[])),
        };
        (Duration::ZERO, answer)
    })
    .await;
    let user = ana();
    let adapter = adapter(&f);

    let sent = f
        .send_interaction(
            &app.url,
            f.slash_command("restart", &[("service", json!("backend"))], &user, CH),
        )
        .await;
    let i = f.interaction(&sent.id);
    assert_eq!(i.response_type, Some(5));
    assert_ne!(i.original.as_ref().unwrap().flags() & 128, 0, "thinking…");

    adapter
        .interaction_edit_original(
            &sent.token,
            &reply("Restart backend?", &["rb1:confirm", "rb1:cancel"]),
        )
        .await
        .unwrap();
    let i = f.interaction(&sent.id);
    assert_eq!(i.content(), "Restart backend?");
    assert_eq!(i.custom_ids(), ["rb1:confirm", "rb1:cancel"]);
    assert_eq!(
        i.original.as_ref().unwrap().flags() & 128,
        0,
        "no longer thinking"
    );
    assert_eq!(i.edits.len(), 1);

    let followup = adapter
        .interaction_followup(&sent.token, &reply("Or confirm here", &["rb1:confirm2"]))
        .await
        .unwrap();
    let i = f.interaction(&sent.id);
    assert_eq!(i.followups.len(), 1);
    assert_eq!(i.followups[0].id, followup);
    assert!(
        f.messages().iter().any(|m| m.id == followup),
        "followups live in the channel"
    );

    let click = f.button_click(&followup, "rb1:confirm2", &user, CH);
    assert_eq!(click.body["message"]["id"], followup.as_str());
    let clicked = f.send_interaction(&app.url, click).await;
    assert!(clicked.failure.is_none(), "{:?}", clicked.failure);
    let c = f.interaction(&clicked.id);
    assert_eq!(c.response_type, Some(7));
    assert_eq!(c.original.as_ref().unwrap().id, followup);
    let m = f.messages().into_iter().find(|m| m.id == followup).unwrap();
    assert_eq!(m.content(), "Restarted backend");
    assert!(
        m.custom_ids().is_empty(),
        "an empty button list cleared them"
    );

    // The prompt itself is answered through @original of the command: buttons go away.
    adapter
        .interaction_edit_original(&sent.token, &reply("Confirmed below", &[]))
        .await
        .unwrap();
    assert!(f.interaction(&sent.id).custom_ids().is_empty());

    // A click answered with type 6 changes nothing now; @original is then the clicked message.
    let app6 = self::app(&f.public_key_hex(), now_answer(deferred_update())).await;
    let prompt = f.interaction(&sent.id).original.unwrap().id;
    adapter
        .interaction_edit_original(&sent.token, &reply("Again?", &["rb1:again"]))
        .await
        .unwrap();
    let c6 = f
        .send_interaction(&app6.url, f.button_click(&prompt, "rb1:again", &user, CH))
        .await;
    assert_eq!(f.interaction(&c6.id).response_type, Some(6));
    adapter
        .interaction_edit_original(&c6.token, &reply("Done", &[]))
        .await
        .unwrap();
    let m = f.messages().into_iter().find(|m| m.id == prompt).unwrap();
    assert_eq!((m.content(), m.custom_ids().len()), ("Done", 0));
}

#[tokio::test]
async fn ephemeral_answers_are_seen_only_by_their_user() {
    let f = fake().await;
    let app = app(&f.public_key_hex(), |i: &Value| {
        let answer = if i["data"]["name"] == "status" {
            initial_response(&ChatReply {
                ephemeral: true,
                ..reply("only you see this", &["rb1:x"])
            })
        } else {
            deferred_response(true)
        };
        (Duration::ZERO, answer)
    })
    .await;
    let (user, other) = (ana(), FakeUser::new(1_300_000_000_000_000_002, "Bo", &[]));
    let sent = f
        .send_interaction(&app.url, f.slash_command("status", &[], &user, CH))
        .await;
    let i = f.interaction(&sent.id);
    assert!(i.ephemeral);
    let m = i.original.unwrap();
    assert!(m.is_ephemeral());
    assert_eq!(m.visible_to.as_deref(), Some(user.id.as_str()));
    assert!(f
        .messages_visible_to(CH, &user.id)
        .iter()
        .any(|v| v.id == m.id));
    assert!(!f
        .messages_visible_to(CH, &other.id)
        .iter()
        .any(|v| v.id == m.id));

    // A deferred ephemeral answer: the first followup fills it and it stays ephemeral.
    let sent = f
        .send_interaction(&app.url, f.slash_command("audit", &[], &user, CH))
        .await;
    let id = adapter(&f)
        .interaction_followup(&sent.token, &reply("the trail", &[]))
        .await
        .unwrap();
    let i = f.interaction(&sent.id);
    assert_eq!(
        i.original.as_ref().unwrap().id,
        id,
        "the followup replaced \"thinking…\""
    );
    assert!(i.followups.is_empty());
    assert_eq!(i.content(), "the trail");
    assert!(i.original.unwrap().is_ephemeral());
}

#[tokio::test]
async fn the_interaction_webhook_takes_only_issued_answered_fresh_tokens() {
    let f = fake().await;
    let app = app(&f.public_key_hex(), |i: &Value| {
        let slow = i["data"]["name"] == "deploy";
        let delay = if slow {
            Duration::from_millis(700)
        } else {
            Duration::ZERO
        };
        (delay, initial_response(&reply("ok", &[])))
    })
    .await;
    let user = ana();
    let body = json!({"content": "edited"});
    let unknown_webhook = |r: &Reply, what: &str| {
        assert_eq!(
            (r.status, r.body["code"].as_u64()),
            (404, Some(10015)),
            "{what}: {}",
            r.body
        );
        assert_eq!(r.body["message"], "Unknown Webhook", "{what}");
    };

    let r = webhook(&f, reqwest::Method::PATCH, "not-a-token", true, Some(&body)).await;
    unknown_webhook(&r, "a token the fake never issued");

    // Built (so issued) but never answered: an edit before the initial response.
    let early = f.slash_command("status", &[], &user, CH);
    let r = webhook(&f, reqwest::Method::PATCH, &early.token, true, Some(&body)).await;
    unknown_webhook(&r, "an edit before the initial response");
    let r = webhook(&f, reqwest::Method::POST, &early.token, false, Some(&body)).await;
    unknown_webhook(&r, "a followup before the initial response");

    let sent = f.send_interaction(&app.url, early).await;
    let r = webhook(&f, reqwest::Method::PATCH, &sent.token, true, Some(&body)).await;
    assert_eq!(r.ok()["content"], "edited");
    let r = webhook(&f, reqwest::Method::GET, &sent.token, true, None).await;
    assert_eq!(r.ok()["content"], "edited");
    let other_app = send(
        &client(),
        reqwest::Method::PATCH,
        format!(
            "{}/webhooks/1234567890123/{}/messages/@original",
            f.api_url(),
            sent.token
        ),
        None,
        Some(&body),
    )
    .await;
    unknown_webhook(&other_app, "another application's webhook");

    // Too late an answer: the interaction failed, and its token is no good.
    f.set_interaction_deadline(Duration::from_millis(300));
    let late = f
        .send_interaction(&app.url, f.slash_command("deploy", &[], &user, CH))
        .await;
    assert_eq!(late.status, 200);
    assert!(
        late.failure.as_deref().unwrap().contains("did not respond"),
        "{:?}",
        late.failure
    );
    assert!(!f.interaction(&late.id).acknowledged());
    let r = webhook(&f, reqwest::Method::PATCH, &late.token, true, Some(&body)).await;
    unknown_webhook(&r, "an interaction answered too late");

    // Expired.
    f.set_token_lifetime(Duration::from_millis(300));
    let fresh = f
        .send_interaction(&app.url, f.slash_command("status", &[], &user, CH))
        .await;
    assert_eq!(
        webhook(&f, reqwest::Method::PATCH, &fresh.token, true, Some(&body))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = webhook(&f, reqwest::Method::PATCH, &fresh.token, true, Some(&body)).await;
    unknown_webhook(&r, "an expired token");
    let r = webhook(&f, reqwest::Method::POST, &fresh.token, false, Some(&body)).await;
    unknown_webhook(&r, "a followup with an expired token");

    // The adapter sees Discord's refusal as one no retry changes.
    let e = adapter(&f)
        .interaction_edit_original(&fresh.token, &reply("x", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DeliveryError::Permanent(m) if m.contains("10015")),
        "{e:?}"
    );
}

#[tokio::test]
async fn oversized_or_invalid_interaction_answers_are_refused() {
    let f = fake().await;
    let app = app(&f.public_key_hex(), |i: &Value| {
        let answer = match i["data"]["name"].as_str() {
            Some("status") => json!({"type": 4, "data": {"content": "x".repeat(2001)}}),
            Some("disk") => json!({"type": 7, "data": {"content": "not for a command"}}),
            Some("oncall") => json!({"type": 4, "data": {"content": "x", "colour": 1}}),
            Some("audit") => json!({"type": 4, "data": {}}),
            _ => initial_response(&reply("fine", &[])),
        };
        (Duration::ZERO, answer)
    })
    .await;
    let user = ana();
    for (command, expected) in [
        ("status", "BASE_TYPE_MAX_LENGTH"),
        ("disk", "only for components"),
        ("oncall", "UNKNOWN_FIELD"),
        ("audit", "empty message"),
    ] {
        let sent = f
            .send_interaction(&app.url, f.slash_command(command, &[], &user, CH))
            .await;
        let failure = sent.failure.unwrap_or_default();
        assert!(failure.contains(expected), "{command}: {failure}");
        assert!(!f.interaction(&sent.id).acknowledged(), "{command}");
    }

    let sent = f
        .send_interaction(&app.url, f.slash_command("logs", &[], &user, CH))
        .await;
    assert!(sent.failure.is_none());
    let r = webhook(
        &f,
        reqwest::Method::PATCH,
        &sent.token,
        true,
        Some(&json!({"content": "x".repeat(2001)})),
    )
    .await;
    assert!(r
        .error_codes("content")
        .contains(&"BASE_TYPE_MAX_LENGTH".to_string()));
    let rows: Vec<Value> = (0..6)
        .map(|i| row(vec![button(&format!("b{i}"))]))
        .collect();
    let r = webhook(
        &f,
        reqwest::Method::POST,
        &sent.token,
        false,
        Some(&json!({"content": "x", "components": rows})),
    )
    .await;
    assert!(r
        .error_codes("components")
        .contains(&"BASE_TYPE_BAD_LENGTH".to_string()));
    let r = webhook(
        &f,
        reqwest::Method::POST,
        &sent.token,
        false,
        Some(&json!({"embeds": []})),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_u64()),
        (400, Some(50006)),
        "{}",
        r.body
    );
    assert!(f.interaction(&sent.id).followups.is_empty());
    assert_eq!(
        f.interaction(&sent.id).content(),
        "fine",
        "nothing refused was applied"
    );
}

#[tokio::test]
async fn interaction_webhooks_are_not_held_to_the_bots_global_pace() {
    let f = unlimited().await;
    let app = app(&f.public_key_hex(), now_answer(deferred_response(false))).await;
    // One bot request a second: four would take three seconds.
    let adapter = adapter_with(&f, &[("RUNBOT__DISCORD__GLOBAL_REQUESTS_PER_SEC", "1")]);
    let sent = f
        .send_interaction(&app.url, f.slash_command("status", &[], &ana(), CH))
        .await;
    let started = Instant::now();
    for n in 0..4 {
        adapter
            .interaction_edit_original(&sent.token, &reply(&format!("step {n}"), &[]))
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(f.interaction(&sent.id).edits.len(), 4);
    assert_eq!(f.interaction(&sent.id).content(), "step 3");
}

/// A `multipart/form-data` body of `parts` (name, filename, bytes), as a client sends one:
/// the Content-Type with its boundary, and the body.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "runbot-test-boundary-7d2c";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n").as_bytes());
        if filename.is_some() {
            body.extend_from_slice(b"Content-Type: text/plain\r\n");
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `PATCH …/messages/@original` with a multipart body.
async fn upload(f: &FakeDiscord, token: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Reply {
    let (content_type, body) = form(parts);
    let r = client()
        .patch(format!(
            "{}/webhooks/{APPLICATION_ID}/{token}/messages/@original",
            f.api_url()
        ))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the fake answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// A deferred slash command, ready for its `@original` to be edited, and the app that answered
/// it (keep it while the test runs).
async fn deferred(f: &FakeDiscord) -> (App, fake_discord::Sent) {
    let app = app(&f.public_key_hex(), |_: &Value| {
        (Duration::ZERO, deferred_response(true))
    })
    .await;
    let sent = f
        .send_interaction(
            &app.url,
            f.slash_command("logs", &[("service", json!("backend"))], &ana(), CH),
        )
        .await;
    assert_eq!(f.interaction(&sent.id).response_type, Some(5));
    (app, sent)
}

#[tokio::test]
async fn an_upload_to_original_is_taken_as_discord_documents_and_its_file_kept() {
    let f = unlimited().await;
    let (_app, sent) = deferred(&f).await;
    let payload = json!({
        "content": "all 3 lines attached",
        "attachments": [{"id": "0", "filename": "logs-backend.txt"}],
    })
    .to_string();
    let answer = upload(
        &f,
        &sent.token,
        &[
            ("payload_json", None, payload.as_bytes()),
            ("files[0]", Some("logs-backend.txt"), b"one\ntwo\nthree\n"),
        ],
    )
    .await
    .ok();
    let a = &answer["attachments"][0];
    assert_eq!(a["filename"], "logs-backend.txt");
    assert_eq!(a["size"], 14);
    assert_eq!(a["content_type"], "text/plain");
    assert!(a["id"].as_str().unwrap().parse::<u64>().is_ok(), "{a}");
    assert!(a["url"].as_str().unwrap().ends_with("/logs-backend.txt"));
    let i = f.interaction(&sent.id);
    assert_eq!(i.content(), "all 3 lines attached");
    let original = i.original.unwrap();
    assert_eq!(original.files.len(), 1);
    assert_eq!(original.files[0].content, b"one\ntwo\nthree\n");
    assert_eq!(original.files[0].id, a["id"].as_str().unwrap());

    // A JSON edit without `attachments` keeps the file; naming it by id keeps it too.
    webhook(
        &f,
        reqwest::Method::PATCH,
        &sent.token,
        true,
        Some(&json!({"content": "still attached"})),
    )
    .await
    .ok();
    let kept = webhook(
        &f,
        reqwest::Method::PATCH,
        &sent.token,
        true,
        Some(&json!({"attachments": [{"id": a["id"]}]})),
    )
    .await
    .ok();
    assert_eq!(kept["attachments"][0]["id"], a["id"]);
    // `attachments: []` removes it.
    let cleared = webhook(
        &f,
        reqwest::Method::PATCH,
        &sent.token,
        true,
        Some(&json!({"content": "no file", "attachments": []})),
    )
    .await
    .ok();
    assert_eq!(cleared["attachments"], json!([]));
    assert!(f.interaction(&sent.id).original.unwrap().files.is_empty());
}

#[tokio::test]
async fn uploads_to_original_are_refused_as_discord_refuses_them() {
    let f = unlimited().await;
    let (_app, sent) = deferred(&f).await;
    let token = sent.token.as_str();
    let one =
        json!({"content": "x", "attachments": [{"id": "0", "filename": "a.txt"}]}).to_string();
    let file: &[u8] = b"line\n";

    // payload_json that is not JSON.
    let r = upload(
        &f,
        token,
        &[
            ("payload_json", None, b"{not json"),
            ("files[0]", Some("a.txt"), file),
        ],
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_u64()),
        (400, Some(50109)),
        "{}",
        r.body
    );

    // No payload_json at all.
    let r = upload(&f, token, &[("files[0]", Some("a.txt"), file)]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("payload_json"),
        "{}",
        r.body
    );

    // payload_json is held to the same schema as a JSON body.
    let r = upload(
        &f,
        token,
        &[(
            "payload_json",
            None,
            json!({"content": "x".repeat(2001)}).to_string().as_bytes(),
        )],
    )
    .await;
    assert_eq!(r.error_codes("content"), ["BASE_TYPE_MAX_LENGTH"]);

    // An attachment id with no files[n] part (and no such attachment on the message).
    let two = json!({"attachments": [{"id": "0", "filename": "a.txt"}, {"id": "1", "filename": "b.txt"}]})
        .to_string();
    let r = upload(
        &f,
        token,
        &[
            ("payload_json", None, two.as_bytes()),
            ("files[0]", Some("a.txt"), file),
        ],
    )
    .await;
    assert_eq!(r.error_codes("attachments.1.id"), ["ATTACHMENT_NOT_FOUND"]);

    // A file that `attachments` does not name: Discord would drop it silently.
    let r = upload(
        &f,
        token,
        &[
            ("payload_json", None, one.as_bytes()),
            ("files[0]", Some("a.txt"), file),
            ("files[1]", Some("b.txt"), file),
        ],
    )
    .await;
    assert_eq!(r.error_codes("attachments"), ["ATTACHMENT_NOT_LISTED"]);

    // More than 10 files.
    let names: Vec<(String, String)> = (0..11)
        .map(|i| (format!("files[{i}]"), format!("f{i}.txt")))
        .collect();
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("payload_json", None, one.as_bytes())];
    parts.extend(
        names
            .iter()
            .map(|(n, f)| (n.as_str(), Some(f.as_str()), file)),
    );
    let r = upload(&f, token, &parts).await;
    assert_eq!(r.error_codes("files"), ["BASE_TYPE_MAX_LENGTH"]);

    // A file over 10 MiB: 413, before anything else is read.
    let big = vec![b'x'; fake_discord::MAX_FILE_BYTES + 1];
    let r = upload(
        &f,
        token,
        &[
            ("payload_json", None, one.as_bytes()),
            ("files[0]", Some("a.txt"), &big),
        ],
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"message": "Request entity too large", "code": 40005})
    );

    // A body that is not multipart as its Content-Type says.
    let r = client()
        .patch(format!(
            "{}/webhooks/{APPLICATION_ID}/{token}/messages/@original",
            f.api_url()
        ))
        .header("content-type", "multipart/form-data; boundary=nope")
        .body("just text")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // None of it changed the message; exactly 10 MiB is taken.
    assert!(f.interaction(&sent.id).edits.is_empty());
    let limit = vec![b'y'; fake_discord::MAX_FILE_BYTES];
    let ok = upload(
        &f,
        token,
        &[
            ("payload_json", None, one.as_bytes()),
            ("files[0]", Some("a.txt"), &limit),
        ],
    )
    .await
    .ok();
    assert_eq!(ok["attachments"][0]["size"], fake_discord::MAX_FILE_BYTES);
}

#[tokio::test]
async fn the_adapter_uploads_a_replys_file_with_its_edit_of_original() {
    let f = unlimited().await;
    let (_app, sent) = deferred(&f).await;
    let adapter = adapter(&f);
    let content: Vec<u8> = (0..5000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let mut r = reply("last 3 of 5000 lines shown; all 5000 attached.", &[]);
    r.code_block = Some("line 4997\nline 4998\nline 4999".into());
    r.attachment = Some(runbot::request::Attachment {
        filename: "logs-backend-20261128-023700.txt".into(),
        content: content.clone(),
    });
    adapter
        .interaction_edit_original(&sent.token, &r)
        .await
        .unwrap();
    let i = f.interaction(&sent.id);
    assert!(
        i.content().starts_with("last 3 of 5000 lines shown"),
        "{}",
        i.content()
    );
    assert!(i.content().ends_with("line 4999\n```"), "{}", i.content());
    let original = i.original.unwrap();
    assert_eq!(original.files.len(), 1);
    assert_eq!(
        original.files[0].filename,
        "logs-backend-20261128-023700.txt"
    );
    assert_eq!(original.files[0].content, content);
    assert_eq!(
        original.files[0].content_type.as_deref(),
        Some("text/plain")
    );
    let request = f.requests().into_iter().last().unwrap();
    assert!(
        request
            .header("content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary="),
        "{request:?}"
    );
    // Without a file the edit stays JSON.
    adapter
        .interaction_edit_original(&sent.token, &reply("done", &[]))
        .await
        .unwrap();
    let request = f.requests().into_iter().last().unwrap();
    assert_eq!(request.header("content-type"), Some("application/json"));
}

async fn open_dm(f: &FakeDiscord, auth: Option<&str>, body: &Value) -> Reply {
    send(
        &client(),
        reqwest::Method::POST,
        format!("{}/api/v10/users/@me/channels", f.base_url()),
        auth,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_dm_is_opened_once_per_user_and_takes_messages_like_a_channel() {
    let f = unlimited().await;
    let bot = format!("Bot {TOKEN}");
    let ana = "1300000000000000001";
    let dm = open_dm(&f, Some(&bot), &json!({"recipient_id": ana}))
        .await
        .ok();
    assert_eq!(dm["type"], 1, "{dm}");
    assert_eq!(dm["recipients"][0]["id"], ana);
    let again = open_dm(&f, Some(&bot), &json!({"recipient_id": ana}))
        .await
        .ok();
    assert_eq!(
        again["id"], dm["id"],
        "the same DM channel for the same user"
    );
    let other = open_dm(
        &f,
        Some(&bot),
        &json!({"recipient_id": "1300000000000000002"}),
    )
    .await
    .ok();
    assert_ne!(other["id"], dm["id"]);

    let channel: u64 = dm["id"].as_str().unwrap().parse().unwrap();
    post(&f, channel, &json!({"content": "wake up"})).await.ok();
    let dms = f.dms_to(ana);
    assert_eq!(dms.len(), 1);
    assert_eq!(dms[0].content(), "wake up");
    assert!(f.dms_to("1300000000000000002").is_empty());

    // Without the bot token, or with a recipient that is not a user id: refused.
    let r = open_dm(&f, None, &json!({"recipient_id": ana})).await;
    assert_eq!(r.status, 401);
    let r = open_dm(&f, Some(&bot), &json!({"recipient_id": "ana"})).await;
    assert_eq!(r.error_codes("recipient_id").len(), 1, "{}", r.body);
    let r = open_dm(&f, Some(&bot), &json!({})).await;
    assert_eq!(r.error_codes("recipient_id"), ["BASE_TYPE_REQUIRED"]);
    let r = open_dm(&f, Some(&bot), &json!({"recipient_id": ana, "extra": 1})).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // A user who takes no DMs: 403, 50007, nothing recorded.
    f.refuse_dms(ana);
    let r = post(&f, channel, &json!({"content": "again"})).await;
    assert_eq!((r.status, r.body["code"].as_u64()), (403, Some(50007)));
    assert_eq!(f.dms_to(ana).len(), 1);
}

#[tokio::test]
async fn allowed_mentions_are_refused_as_discord_refuses_them() {
    let f = unlimited().await;
    let ok = json!({"content": "<@1300000000000000001> paged", "allowed_mentions": {"parse": [], "users": ["1300000000000000001"]}});
    post(&f, CH, &ok).await.ok();
    let role = json!({"content": "<@&1300000000000000009>", "allowed_mentions": {"parse": [], "roles": ["1300000000000000009"]}});
    post(&f, CH, &role).await.ok();
    let parse_only = json!({"content": "x", "allowed_mentions": {"parse": ["users", "roles"]}});
    post(&f, CH, &parse_only).await.ok();

    let both = json!({"content": "x", "allowed_mentions": {"parse": ["users"], "users": ["1300000000000000001"]}});
    let r = post(&f, CH, &both).await;
    assert_eq!(
        r.error_codes("allowed_mentions"),
        ["MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE"]
    );
    let both = json!({"content": "x", "allowed_mentions": {"parse": ["roles"], "roles": ["1300000000000000009"]}});
    let r = post(&f, CH, &both).await;
    assert_eq!(
        r.error_codes("allowed_mentions"),
        ["MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE"]
    );
    let many: Vec<String> = (0..101).map(|i| format!("13000000000000{i:05}")).collect();
    let r = post(
        &f,
        CH,
        &json!({"content": "x", "allowed_mentions": {"parse": [], "users": many}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.to_string().contains("allowed_mentions"),
        "{}",
        r.body
    );
    // Unknown keys and values are refused even when unknown fields elsewhere are let through.
    f.set_reject_unknown_fields(false);
    let r = post(
        &f,
        CH,
        &json!({"content": "x", "allowed_mentions": {"parse": [], "people": ["1"]}}),
    )
    .await;
    assert_eq!(r.error_codes("allowed_mentions.people"), ["UNKNOWN_FIELD"]);
    let r = post(
        &f,
        CH,
        &json!({"content": "x", "allowed_mentions": {"parse": ["here"]}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(f.messages().len(), 3, "only the valid three were posted");
}
