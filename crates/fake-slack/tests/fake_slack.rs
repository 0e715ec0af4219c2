//! The fake Slack refuses what Slack refuses. Each test calls it the way a client would.

use std::time::Duration;

use fake_slack::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Ws;

async fn call_with(
    fake: &FakeSlack,
    method: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/{method}", fake.api_base()))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
        retry,
    )
}

async fn call(fake: &FakeSlack, method: &str, body: Value) -> Value {
    let (status, v, _) = call_with(fake, method, Some(BOT_TOKEN), body).await;
    assert_eq!(status, 200, "{method}: {v}");
    v
}

async fn call_form(fake: &FakeSlack, method: &str, form: &[(&str, &str)]) -> Value {
    let body = form_body(form);
    reqwest::Client::new()
        .post(format!("{}/{method}", fake.api_base()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {BOT_TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap()
}

fn form_body(form: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in form.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                s.push(b as char);
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
    }
    s
}

fn error(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "expected a refusal, got {v}");
    v["error"].as_str().unwrap()
}

fn messages(v: &Value) -> String {
    v["response_metadata"]["messages"].to_string()
}

#[test]
fn signature_matches_slacks_test_vector() {
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    assert_eq!(
        sign(SIGNING_SECRET, 1531420618, body.as_bytes()),
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
    assert_ne!(
        sign(SIGNING_SECRET, 1531420619, body.as_bytes()),
        sign(SIGNING_SECRET, 1531420618, body.as_bytes())
    );
}

#[test]
fn slash_command_form_carries_what_slack_sends() {
    let form = slash_command_form("/logs", "backend tail:200", "U1", "ana", "C1", "http://x/r");
    for field in [
        "team_id=T0FAKE",
        "channel_id=C1",
        "user_id=U1",
        "user_name=ana",
        "command=%2Flogs",
        "text=backend+tail%3A200",
        "api_app_id=A0FAKE",
        "response_url=http%3A%2F%2Fx%2Fr",
        "trigger_id=",
    ] {
        assert!(form.contains(field), "{field} missing from {form}");
    }
    let p = block_actions_payload("ack:g1", "g1", "U1", "ana", "C1", "1.000001", "http://x/r");
    assert!(interaction_form(&p).starts_with("payload=%7B%22"));
    assert_eq!(p["container"]["message_ts"], "1.000001");
    assert_eq!(p["actions"][0]["action_id"], "ack:g1");
}

#[tokio::test]
async fn calls_without_the_right_token_are_refused_and_change_nothing() {
    let fake = FakeSlack::start().await;
    let msg = json!({"channel": "C0OPS", "text": "hi"});
    let (s, v, _) = call_with(&fake, "chat.postMessage", None, msg.clone()).await;
    assert_eq!((s, error(&v)), (200, "not_authed"));
    let (_, v, _) = call_with(&fake, "chat.postMessage", Some("xoxb-nope"), msg.clone()).await;
    assert_eq!(error(&v), "invalid_auth");
    let (_, v, _) = call_with(&fake, "chat.postMessage", Some(APP_TOKEN), msg.clone()).await;
    assert_eq!(error(&v), "not_allowed_token_type");
    let (_, v, _) = call_with(&fake, "apps.connections.open", Some(BOT_TOKEN), json!({})).await;
    assert_eq!(error(&v), "not_allowed_token_type");
    assert!(fake.messages_in("C0OPS").is_empty());
    assert_eq!(fake.connections_opened(), 0);
    let (s, v, _) = call_with(&fake, "chat.delete", Some(BOT_TOKEN), msg).await;
    assert_eq!((s, error(&v)), (404, "unknown_method"));
    assert_eq!(
        call(&fake, "auth.test", json!({})).await["user_id"],
        BOT_USER_ID
    );
}

#[tokio::test]
async fn unknown_and_missing_arguments_are_refused_by_name() {
    let fake = FakeSlack::start().await;
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "x", "colour": "red"}),
    )
    .await;
    assert_eq!(error(&v), "invalid_arguments");
    assert!(messages(&v).contains("'colour'"), "{v}");
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "x", "client_msg_id": "abc"}),
    )
    .await;
    assert_eq!(error(&v), "invalid_arguments");
    assert!(messages(&v).contains("client_msg_id"), "{v}");
    let v = call(&fake, "chat.postMessage", json!({"text": "x"})).await;
    assert_eq!(error(&v), "invalid_arguments");
    assert!(messages(&v).contains("channel"), "{v}");
    let v = call(&fake, "chat.postMessage", json!({"channel": "C0OPS"})).await;
    assert_eq!(error(&v), "no_text");
    let v = call(
        &fake,
        "chat.update",
        json!({"channel": "C0OPS", "text": "x"}),
    )
    .await;
    assert!(messages(&v).contains("ts"), "{v}");
    let v = call(&fake, "conversations.open", json!({})).await;
    assert_eq!(error(&v), "users_list_not_supplied");
    let v = call(
        &fake,
        "chat.postEphemeral",
        json!({"channel": "C0OPS", "text": "x"}),
    )
    .await;
    assert!(messages(&v).contains("user"), "{v}");
    // conversations.history reads no JSON body (its spec consumes only forms).
    let v = call(&fake, "conversations.history", json!({"channel": "C0OPS"})).await;
    assert_eq!(error(&v), "invalid_arguments");
    assert!(fake.messages_in("C0OPS").is_empty());
    assert_eq!(fake.count("chat.postMessage"), 0);
}

#[tokio::test]
async fn block_kit_limits_are_enforced() {
    let fake = FakeSlack::start().await;
    let button = |id: &str| json!({"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": id});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}}]),
            "/blocks/0/text/text",
        ),
        (
            json!([{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]),
            "/blocks/0/text/type",
        ),
        (
            json!([{"type": "section", "text": {"type": "mrkdwn", "text": "s".repeat(3001)}}]),
            "/blocks/0/text/text",
        ),
        (
            json!([{"type": "section", "fields": vec![json!({"type": "mrkdwn", "text": "f"}); 11]}]),
            "/blocks/0/fields",
        ),
        (
            json!([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f".repeat(2001)}]}]),
            "/blocks/0/fields/0/text",
        ),
        (
            json!([{"type": "actions", "elements": (0..26).map(|i| button(&format!("a{i}"))).collect::<Vec<_>>()}]),
            "/blocks/0/elements",
        ),
        (
            json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b".repeat(76)}}]}]),
            "/blocks/0/elements/0/text/text",
        ),
        (
            json!([{"type": "actions", "elements": [button(&"a".repeat(256))]}]),
            "/blocks/0/elements/0/action_id",
        ),
        (
            json!([{"type": "actions", "elements": [button("a")]}, {"type": "actions", "elements": [button("a")]}]),
            "duplicate action_id",
        ),
        (
            json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b"}, "value": "v".repeat(2001)}]}]),
            "/blocks/0/elements/0/value",
        ),
        (
            json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b"}, "url": "u".repeat(3001)}]}]),
            "/blocks/0/elements/0/url",
        ),
        (
            json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b"}, "style": "warning"}]}]),
            "/blocks/0/elements/0/style",
        ),
        (
            json!([{"type": "divider", "block_id": "x".repeat(256)}]),
            "/blocks/0/block_id",
        ),
        (
            json!([{"type": "divider", "block_id": "x"}, {"type": "divider", "block_id": "x"}]),
            "duplicate block_id",
        ),
        (
            json!([{"type": "context", "elements": vec![json!({"type": "mrkdwn", "text": "c"}); 11]}]),
            "/blocks/0/elements",
        ),
        (json!([{"type": "video"}]), "unsupported type: video"),
        (
            json!([{"type": "divider", "colour": "red"}]),
            "unsupported property 'colour'",
        ),
        (json!([{"type": "section"}]), "either text or fields"),
        (
            Value::Array(vec![json!({"type": "divider"}); 51]),
            "no more than 50 items",
        ),
    ];
    for (blocks, expected) in cases {
        let v = call(
            &fake,
            "chat.postMessage",
            json!({"channel": "C0OPS", "text": "t", "blocks": blocks}),
        )
        .await;
        assert_eq!(error(&v), "invalid_blocks", "{blocks}");
        assert!(messages(&v).contains(expected), "{expected} not in {v}");
    }
    assert!(fake.messages_in("C0OPS").is_empty());
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "x".repeat(40_001)}),
    )
    .await;
    assert_eq!(error(&v), "msg_too_long");

    // A card at the limits is taken; without text it is taken with a warning.
    let card = json!([
        {"type": "header", "text": {"type": "plain_text", "text": "h".repeat(150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "s".repeat(3000)},
         "fields": vec![json!({"type": "mrkdwn", "text": "f".repeat(2000)}); 10]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "<http://x|runbook>"},
            {"type": "image", "image_url": "http://x/i.png", "alt_text": "i"}]},
        {"type": "actions", "elements": (0..25).map(|i| json!({"type": "button",
            "text": {"type": "plain_text", "text": "b".repeat(75)}, "action_id": format!("a{i}"),
            "value": "v".repeat(2000), "style": if i == 0 { "danger" } else { "primary" }})).collect::<Vec<_>>()},
        {"type": "divider"},
    ]);
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "fallback", "blocks": card}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(v.get("warning").is_none(), "{v}");
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "blocks": [{"type": "divider"}]}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["warning"], "missing_text_or_fallback_or_attachments");
    // Form bodies carry blocks as a JSON string.
    let v = call_form(
        &fake,
        "chat.postMessage",
        &[
            ("channel", "C0OPS"),
            ("text", "t"),
            ("blocks", "[{\"type\":\"nope\"}]"),
        ],
    )
    .await;
    assert_eq!(error(&v), "invalid_blocks");
    let v = call_form(
        &fake,
        "chat.postMessage",
        &[("channel", "C0OPS"), ("text", "t"), ("blocks", "[{")],
    )
    .await;
    assert_eq!(error(&v), "invalid_blocks_format");
    assert_eq!(fake.messages_in("C0OPS").len(), 2);
}

#[tokio::test]
async fn channels_must_be_ids_the_bot_can_post_in() {
    let fake = FakeSlack::start().await;
    for ch in ["#ops", "ops", "U0PERSON", "D0NEVEROPENED", "c0lower"] {
        let v = call(
            &fake,
            "chat.postMessage",
            json!({"channel": ch, "text": "x"}),
        )
        .await;
        assert_eq!(error(&v), "channel_not_found", "{ch}");
    }
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "G0PRIVATE", "text": "x"}),
    )
    .await;
    assert_eq!(v["ok"], true);
}

#[tokio::test]
async fn update_needs_the_ts_of_a_bot_message_in_that_channel() {
    let fake = FakeSlack::start().await;
    let posted = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "v1"}),
    )
    .await;
    let ts = posted["ts"].as_str().unwrap().to_string();
    let (secs, frac) = ts.split_once('.').unwrap();
    assert_eq!((secs.len(), frac.len()), (10, 6), "{ts}");
    let v = call(
        &fake,
        "chat.update",
        json!({"channel": "C0OPS", "ts": "1700000000.000001", "text": "v2"}),
    )
    .await;
    assert_eq!(error(&v), "message_not_found");
    let v = call(
        &fake,
        "chat.update",
        json!({"channel": "C0OTHER", "ts": ts, "text": "v2"}),
    )
    .await;
    assert_eq!(error(&v), "message_not_found");
    let theirs = fake.post_as_user("C0OPS", "U0ANA", "mine");
    let v = call(
        &fake,
        "chat.update",
        json!({"channel": "C0OPS", "ts": theirs, "text": "v2"}),
    )
    .await;
    assert_eq!(error(&v), "cant_update_message");
    let v = call(
        &fake,
        "chat.update",
        json!({"channel": "C0OPS", "ts": ts, "text": "v2",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "resolved"}}]}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let m = fake.message("C0OPS", &ts).unwrap();
    assert_eq!((m.text.as_str(), m.edits, m.blocks.len()), ("v2", 1, 1));
    // ts values only grow.
    let later = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "v3"}),
    )
    .await;
    assert!(later["ts"].as_str().unwrap() > theirs.as_str());
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let fake = FakeSlack::start().await;
    for i in 0..3 {
        let (s, v, _) = call_with(
            &fake,
            "chat.postMessage",
            Some(BOT_TOKEN),
            json!({"channel": "C0A", "text": i.to_string()}),
        )
        .await;
        assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
    }
    let (s, v, retry) = call_with(
        &fake,
        "chat.postMessage",
        Some(BOT_TOKEN),
        json!({"channel": "C0A", "text": "4"}),
    )
    .await;
    assert_eq!((s, error(&v)), (429, "ratelimited"));
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(fake.rate_limited(), 1);
    assert_eq!(fake.messages_in("C0A").len(), 3, "a 429 is not applied");
    // Per channel: another channel still has its burst.
    let (s, _, _) = call_with(
        &fake,
        "chat.postMessage",
        Some(BOT_TOKEN),
        json!({"channel": "C0B", "text": "x"}),
    )
    .await;
    assert_eq!(s, 200);
    // chat.update: a bucket of 20 per app.
    let ts = fake.messages_in("C0A")[0].ts.clone();
    let mut statuses = Vec::new();
    for i in 0..21 {
        let (s, _, _) = call_with(
            &fake,
            "chat.update",
            Some(BOT_TOKEN),
            json!({"channel": "C0A", "ts": ts, "text": i.to_string()}),
        )
        .await;
        statuses.push(s);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20);
    assert_eq!(statuses[20], 429);
    // A second later the channel has a token again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _, _) = call_with(
        &fake,
        "chat.postMessage",
        Some(BOT_TOKEN),
        json!({"channel": "C0A", "text": "5"}),
    )
    .await;
    assert_eq!(s, 200);
    fake.set_limits(false);
    for _ in 0..10 {
        let (s, _, _) = call_with(
            &fake,
            "chat.postMessage",
            Some(BOT_TOKEN),
            json!({"channel": "C0A", "text": "x"}),
        )
        .await;
        assert_eq!(s, 200);
    }
    assert_eq!(fake.rate_limited(), 2);
}

#[tokio::test]
async fn a_dm_goes_to_the_channel_conversations_open_gave() {
    let fake = FakeSlack::start().await;
    let v = call(&fake, "conversations.open", json!({"users": "U0LUIS"})).await;
    let dm = v["channel"]["id"].as_str().unwrap().to_string();
    assert!(dm.starts_with('D'), "{v}");
    let again = call(&fake, "conversations.open", json!({"users": ["U0LUIS"]})).await;
    assert_eq!(again["channel"]["id"], dm.as_str());
    assert_eq!(again["already_open"], true);
    let v = call(&fake, "conversations.open", json!({"users": "#ops"})).await;
    assert_eq!(error(&v), "user_not_found");
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": dm, "text": "You are paged"}),
    )
    .await;
    assert_eq!(v["ok"], true);
    let dms = fake.dms_to("U0LUIS");
    assert_eq!(dms.len(), 1);
    assert_eq!(dms[0].text, "You are paged");
    assert!(fake.dms_to("U0ANA").is_empty());
}

#[tokio::test]
async fn history_and_replies_find_messages_by_metadata() {
    let fake = FakeSlack::start().await;
    fake.set_limits(false);
    let md = json!({"event_type": "runbot_card", "event_payload": {"group": "g1"}});
    let card = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "card", "metadata": md}),
    )
    .await;
    let card_ts = card["ts"].as_str().unwrap().to_string();
    for i in 0..3 {
        call(
            &fake,
            "chat.postMessage",
            json!({"channel": "C0OPS", "text": format!("n{i}")}),
        )
        .await;
    }
    let reply = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "acked", "thread_ts": card_ts}),
    )
    .await;
    assert_eq!(reply["ok"], true);
    assert_eq!(fake.replies("C0OPS", &card_ts).len(), 1);
    assert_eq!(
        fake.messages_in("C0OPS").len(),
        4,
        "a reply is not top-level"
    );

    let v = call_form(
        &fake,
        "conversations.history",
        &[("channel", "C0OPS"), ("limit", "2")],
    )
    .await;
    let texts: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["n2", "n1"], "newest first");
    assert_eq!(v["has_more"], true);
    let cursor = v["response_metadata"]["next_cursor"].as_str().unwrap();
    let v = call_form(
        &fake,
        "conversations.history",
        &[("channel", "C0OPS"), ("cursor", cursor)],
    )
    .await;
    let last = v["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ts"], card_ts.as_str());
    assert!(
        last.get("metadata").is_none(),
        "metadata only with include_all_metadata"
    );
    assert_eq!(last["reply_count"], 1);
    let v = call_form(
        &fake,
        "conversations.history",
        &[("channel", "C0OPS"), ("include_all_metadata", "true")],
    )
    .await;
    let found = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metadata"]["event_payload"]["group"] == "g1");
    assert_eq!(found.unwrap()["ts"], card_ts.as_str());
    let v = call_form(
        &fake,
        "conversations.history",
        &[("channel", "C0OPS"), ("limit", "1001")],
    )
    .await;
    assert_eq!(error(&v), "invalid_limit");
    let v = call_form(
        &fake,
        "conversations.history",
        &[("channel", "C0OPS"), ("cursor", "bogus")],
    )
    .await;
    assert_eq!(error(&v), "invalid_cursor");

    let v = call_form(
        &fake,
        "conversations.replies",
        &[("channel", "C0OPS"), ("ts", &card_ts)],
    )
    .await;
    let texts: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["card", "acked"]);
    let v = call_form(
        &fake,
        "conversations.replies",
        &[("channel", "C0OPS"), ("ts", "1600000000.000001")],
    )
    .await;
    assert_eq!(error(&v), "thread_not_found");

    // A thread_ts of no message: Slack takes it, and the reply is seen nowhere.
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "lost", "thread_ts": "1600000000.000001"}),
    )
    .await;
    assert_eq!(v["ok"], true);
    assert_eq!(fake.messages_in("C0OPS").len(), 4);
    assert_eq!(fake.replies("C0OPS", &card_ts).len(), 1);
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "x", "thread_ts": "yesterday"}),
    )
    .await;
    assert_eq!(error(&v), "invalid_thread_ts");
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "x", "metadata": {"event_type": "x"}}),
    )
    .await;
    assert_eq!(error(&v), "invalid_metadata_format");
}

#[tokio::test]
async fn outage_and_scripted_failures_change_nothing() {
    let fake = FakeSlack::start().await;
    fake.set_down(true);
    let (s, _, _) = call_with(
        &fake,
        "chat.postMessage",
        Some(BOT_TOKEN),
        json!({"channel": "C0OPS", "text": "x"}),
    )
    .await;
    assert_eq!(s, 503);
    fake.set_down(false);
    fake.fail_next("chat.postMessage", "fatal_error");
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "x"}),
    )
    .await;
    assert_eq!(error(&v), "fatal_error");
    assert!(fake.messages_in("C0OPS").is_empty());
    let v = call(
        &fake,
        "chat.postMessage",
        json!({"channel": "C0OPS", "text": "x"}),
    )
    .await;
    assert_eq!(v["ok"], true);
    assert_eq!(fake.count("chat.postMessage"), 1);
    assert_eq!(fake.requests().len(), 3);
    let got = fake
        .wait_for("one message", Duration::from_secs(1), |f| {
            let m = f.messages_in("C0OPS");
            (m.len() == 1).then(|| m[0].text.clone())
        })
        .await;
    assert_eq!(got, "x");
}

#[tokio::test]
#[should_panic(expected = "a second message")]
async fn wait_for_names_what_it_waited_for() {
    let fake = FakeSlack::start().await;
    fake.wait_for("a second message", Duration::from_millis(100), |f| {
        (f.messages_in("C0OPS").len() >= 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_response_url_takes_five_valid_posts() {
    let fake = FakeSlack::start().await;
    let url = fake.response_url();
    let post = |body: Value| {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(),
            )
        }
    };
    let (s, v) = post(json!({"response_type": "shouting", "text": "x"})).await;
    assert_eq!((s, error(&v)), (400, "invalid_payload"));
    let (s, v) = post(json!({"response_type": "ephemeral"})).await;
    assert_eq!((s, error(&v)), (400, "no_text"));
    let (s, v) = post(json!({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}}]})).await;
    assert_eq!((s, error(&v)), (400, "invalid_blocks"));
    let (s, v) = post(json!({"text": "x", "ephemeral": true})).await;
    assert_eq!((s, error(&v)), (400, "invalid_payload"));
    for i in 0..5 {
        let (s, v) = post(json!({"text": format!("answer {i}"), "replace_original": i > 0})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = post(json!({"text": "sixth"})).await;
    assert_eq!((s, error(&v)), (404, "used_url"));
    let bodies = fake.responses(&url);
    assert_eq!(bodies.len(), 5);
    assert_eq!(bodies[0]["text"], "answer 0");
    assert!(fake.responses(&fake.response_url()).is_empty());
}

async fn connect(fake: &FakeSlack) -> (String, Socket) {
    let (_, v, _) = call_with(fake, "apps.connections.open", Some(APP_TOKEN), json!({})).await;
    let url = v["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["connection_info"]["app_id"], APP_ID);
    (url, ws)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Socket) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .expect("a frame");
        if let Ws::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn socket_mode_round_trip_with_acks_redelivery_and_one_time_urls() {
    let fake = FakeSlack::start().await;
    let (url, mut ws) = connect(&fake).await;
    assert_eq!(fake.connected(), 1);
    assert_eq!(fake.connections_opened(), 1);
    // A URL works once.
    let again = tokio_tungstenite::connect_async(&url).await;
    assert!(again.is_err(), "a second connect to a used URL must fail");

    let payload =
        slash_command_payload("/status", "", "U0ANA", "ana", "C0OPS", &fake.response_url());
    let id = fake
        .send_envelope("slash_commands", payload.clone(), true)
        .await;
    let env = next_json(&mut ws).await;
    assert_eq!(env["envelope_id"], id.as_str());
    assert_eq!(env["type"], "slash_commands");
    assert_eq!(env["payload"], payload);
    assert_eq!(
        (
            env["accepts_response_payload"].clone(),
            env["retry_attempt"].clone()
        ),
        (json!(true), json!(0))
    );
    ws.send(Ws::Text(
        json!({"envelope_id": id, "payload": {"text": "ok"}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let ack = fake
        .wait_ack(&id, Duration::from_secs(2))
        .await
        .expect("the ack is recorded");
    assert_eq!(ack.payload, Some(json!({"text": "ok"})));
    assert_eq!(ack.count, 1);
    assert!(ack.after < Duration::from_secs(2));
    ws.send(Ws::Text(json!({"envelope_id": "nope"}).to_string().into()))
        .await
        .unwrap();
    fake.wait_for("a bad ack", Duration::from_secs(2), |f| {
        (!f.bad_acks().is_empty()).then_some(())
    })
    .await;
    assert!(fake.bad_acks()[0].contains("unknown envelope nope"));

    // Not acked: delivered again after 3 s, once, as a retry.
    let id2 = fake
        .send_envelope("interactive", json!({"type": "block_actions"}), false)
        .await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["envelope_id"], id2.as_str());
    let retry = next_json(&mut ws).await;
    assert_eq!(retry["envelope_id"], id2.as_str());
    assert_eq!(
        (
            retry["retry_attempt"].clone(),
            retry["retry_reason"].clone()
        ),
        (json!(1), json!("timeout"))
    );
    ws.send(Ws::Text(json!({"envelope_id": id2}).to_string().into()))
        .await
        .unwrap();
    assert!(fake.wait_ack(&id2, Duration::from_secs(2)).await.is_some());
    assert_eq!(fake.acks().len(), 2);

    fake.set_redeliver(false);
    let id3 = fake
        .send_envelope("events_api", json!({"type": "event_callback"}), false)
        .await;
    assert_eq!(next_json(&mut ws).await["envelope_id"], id3.as_str());
    assert!(
        tokio::time::timeout(Duration::from_millis(3500), ws.next())
            .await
            .is_err(),
        "no redelivery when off"
    );
    fake.resend_envelope(&id3).await;
    assert_eq!(next_json(&mut ws).await["retry_attempt"], 1);
}

#[tokio::test]
async fn socket_mode_refresh_and_drop() {
    let fake = FakeSlack::start().await;
    let (_, mut ws) = connect(&fake).await;
    fake.request_refresh().await;
    let d = next_json(&mut ws).await;
    assert_eq!(
        (d["type"].clone(), d["reason"].clone()),
        (json!("disconnect"), json!("refresh_requested"))
    );
    // Closed about a second later.
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.next().await {
                Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(end.is_ok());
    fake.wait_for("no connection", Duration::from_secs(2), |f| {
        (f.connected() == 0).then_some(())
    })
    .await;

    let (_, mut ws) = connect(&fake).await;
    assert_eq!(fake.connections_opened(), 2);
    fake.drop_connections().await;
    assert_eq!(fake.connected(), 0);
    let after = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap();
    assert!(
        !matches!(after, Some(Ok(Ws::Close(_)))),
        "a dropped connection sends no close frame"
    );
}

#[tokio::test]
async fn apps_connections_open_is_tier_1() {
    let fake = FakeSlack::start().await;
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let (s, _, _) = call_with(&fake, "apps.connections.open", Some(APP_TOKEN), json!({})).await;
        statuses.push(s);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10);
    assert_eq!(statuses[10], 429);
    assert_eq!(fake.connections_opened(), 10);
}
