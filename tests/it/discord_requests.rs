//! People's requests from Discord, end to end: the fake Discord signs and sends interactions
//! as Discord does, runbot answers within the deadline, decides by the Discord roles people
//! hold (policies/roles.toml), and edits its answers and the alert card.

use crate::common;

use std::time::Duration;

use common::rig::policies_dir;
use common::{webhook, Db, Options, TestApp};
use fake_discord::{FakeDiscord, FakeMessage, FakeUser};
use serde_json::{json, Value};

const BOT_TOKEN: &str = "fake-bot-token-0123456789abcdef";
const CHANNEL: u64 = 111_111_111_111_111_111;

/// A firing Sev1 APIDown group, and the card it gets.
async fn sev1_card(app: &TestApp, fake: &FakeDiscord) -> FakeMessage {
    let alert = json!({"severity": "critical", "instance": "api-1:8000"});
    let body = webhook(
        "APIDown",
        "firing",
        &[("aaaa000000000001", "firing", alert)],
    );
    let r = app.post_webhook(body.to_string()).await;
    assert_eq!(r.status(), 200);
    fake.wait_for_messages(1, Duration::from_secs(10))
        .await
        .remove(0)
}

/// Waits until the card's text says `text`.
async fn card_says(fake: &FakeDiscord, card_id: &str, text: &str) {
    fake.wait_for(
        Duration::from_secs(10),
        &format!("the card to say {text:?}"),
        |messages, _| {
            messages
                .iter()
                .find(|m| m.id == card_id)
                .is_some_and(|m| {
                    m.body["embeds"][0]["description"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(text)
                })
                .then_some(())
        },
    )
    .await;
}

async fn start(fake: &FakeDiscord) -> TestApp {
    let policies = policies_dir(fake);
    TestApp::spawn_with(
        Options::new(Db::Sqlite)
            .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
            .set("RUNBOT__DISCORD__ALERT_CHANNEL_ID", &CHANNEL.to_string())
            .set("RUNBOT__DISCORD__API_BASE", &fake.base_url())
            .set("RUNBOT__DISCORD__APPLICATION_ID", fake.application_id())
            .set("RUNBOT__DISCORD__PUBLIC_KEY", &fake.public_key_hex())
            .set("RUNBOT__POLICY__DIR", &policies.display().to_string()),
    )
    .await
}

#[tokio::test]
async fn a_click_on_the_card_acknowledges_and_the_card_says_who() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let app = start(&fake).await;
    let url = format!("{}/discord/interactions", app.url);
    let card = sev1_card(&app, &fake).await;
    let ack = card
        .custom_ids()
        .into_iter()
        .nth(4)
        .expect("the APIDown card's fifth button");

    let ana = FakeUser::new(1_300_000_000_000_000_001, "Ana Ops", &["Backend Lead"]);
    let sent = fake
        .send_interaction(&url, fake.button_click(&card.id, &ack, &ana, CHANNEL))
        .await;
    assert_eq!(sent.status, 200);
    assert!(sent.failure.is_none(), "{:?}", sent.failure);
    assert_eq!(sent.body["type"], 5, "deferred: {}", sent.body);
    let i = fake
        .wait_for_interaction(&sent.id, Duration::from_secs(10), |i| !i.edits.is_empty())
        .await;
    assert!(
        i.content().contains("Ana Ops** acknowledged APIDown"),
        "{}",
        i.content()
    );
    // The card itself now says who is on it.
    card_says(&fake, &card.id, "Acknowledged by **Ana Ops**").await;

    // Someone without a runbot role clicking the same button is refused, only to them.
    let stranger = FakeUser::new(1_300_000_000_000_000_009, "Stranger", &[]);
    let sent = fake
        .send_interaction(&url, fake.button_click(&card.id, &ack, &stranger, CHANNEL))
        .await;
    assert_eq!(sent.body["type"], 4, "{}", sent.body);
    assert_eq!(sent.body["data"]["flags"], 64);
    assert!(sent.body["data"]["content"]
        .as_str()
        .unwrap()
        .contains("no runbot role"));
    app.stop().await;
}

#[tokio::test]
async fn a_slash_command_is_confirmed_by_its_requester_and_denied_to_others() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let app = start(&fake).await;
    let url = format!("{}/discord/interactions", app.url);
    let dev = FakeUser::new(1_300_000_000_000_000_004, "Dev", &["Developer"]);
    let sent = fake
        .send_interaction(
            &url,
            fake.slash_command("restart", &[("service", json!("backend"))], &dev, CHANNEL),
        )
        .await;
    assert_eq!(sent.body["type"], 4);
    assert_eq!(
        sent.body["data"]["flags"], 64,
        "a refusal is for the requester only"
    );
    let text = sent.body["data"]["content"].as_str().unwrap();
    assert!(
        text.contains("/restart needs devops-lead or backend-lead")
            && text.contains("you hold developer"),
        "{text}"
    );

    let lead = FakeUser::new(1_300_000_000_000_000_003, "Bruno", &["Backend Lead"]);
    let sent = fake
        .send_interaction(
            &url,
            fake.slash_command("restart", &[("service", json!("worker"))], &lead, CHANNEL),
        )
        .await;
    assert_eq!(sent.body["type"], 4);
    let prompt = fake
        .interaction(&sent.id)
        .original
        .expect("the prompt is a message");
    assert!(prompt.is_ephemeral());
    let click = fake.confirm(&url, &sent, &lead, CHANNEL).await;
    assert_eq!(
        click.body["type"], 7,
        "the prompt is replaced: {}",
        click.body
    );
    let i = fake
        .wait_for_interaction(&click.id, Duration::from_secs(10), |i| !i.edits.is_empty())
        .await;
    // No Docker project is set here: it says what to set.
    assert!(
        i.content().contains("set docker.project"),
        "{}",
        i.content()
    );
    assert!(
        i.components().is_empty(),
        "no buttons left on an answered prompt"
    );

    // Unknown command names and forged buttons get a clear answer, not an error.
    let sent = fake
        .send_interaction(&url, fake.slash_command("restat", &[], &lead, CHANNEL))
        .await;
    let text = sent.body["data"]["content"].as_str().unwrap();
    assert!(text.contains("Did you mean /restart?"), "{text}");

    // Every step above is in the audit trail, in order, and the chain verifies.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbot"))
        .args(["audit", "export", "--format", "jsonl"])
        .env("RUNBOT__DATABASE__URL", &app.database_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        steps,
        [
            "denied",
            "requested",
            "confirmed",
            "started",
            "failed",
            "invalid"
        ]
    );
    app.stop().await;
}

/// On a Sev1 group, `/silence` asks a second person in the channel; the CTO approves from
/// Discord and the silence lands in a real Alertmanager.
#[tokio::test]
async fn a_second_person_approves_from_discord() {
    let am =
        common::Alertmanager::start("route:\n  receiver: none\nreceivers:\n  - name: none\n").await;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let policies = policies_dir(&fake);
    let app = TestApp::spawn_with(
        Options::new(Db::Postgres)
            .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
            .set("RUNBOT__DISCORD__ALERT_CHANNEL_ID", &CHANNEL.to_string())
            .set("RUNBOT__DISCORD__API_BASE", &fake.base_url())
            .set("RUNBOT__DISCORD__APPLICATION_ID", fake.application_id())
            .set("RUNBOT__DISCORD__PUBLIC_KEY", &fake.public_key_hex())
            .set("RUNBOT__ALERTMANAGER__URL", &am.url)
            .set("RUNBOT__POLICY__DIR", &policies.display().to_string()),
    )
    .await;
    let url = format!("{}/discord/interactions", app.url);
    let card = sev1_card(&app, &fake).await;
    let silence = card.custom_ids().into_iter().nth(3).expect("Silence 1h");

    let dana = FakeUser::new(1_300_000_000_000_000_001, "Dana", &["DevOps Lead"]);
    let asked = fake
        .send_interaction(&url, fake.button_click(&card.id, &silence, &dana, CHANNEL))
        .await;
    assert_eq!(asked.body["type"], 4, "{}", asked.body);
    let prompt = fake
        .interaction(&asked.id)
        .original
        .expect("the approval request");
    assert!(!prompt.is_ephemeral(), "approvers must see it");
    assert!(
        prompt.content().contains("Dana** asks to run `/silence"),
        "{}",
        prompt.content()
    );
    let approve = prompt
        .custom_ids()
        .into_iter()
        .find(|c| c.ends_with(":approve"))
        .unwrap();

    // Dana cannot approve her own request; Carla, the CTO, can.
    let own = fake
        .send_interaction(
            &url,
            fake.button_click(&prompt.id, &approve, &dana, CHANNEL),
        )
        .await;
    assert_eq!(own.body["data"]["flags"], 64);
    assert!(own.body["data"]["content"]
        .as_str()
        .unwrap()
        .contains("your own request"));
    let carla = FakeUser::new(1_300_000_000_000_000_002, "Carla", &["CTO"]);
    let ok = fake
        .send_interaction(
            &url,
            fake.button_click(&prompt.id, &approve, &carla, CHANNEL),
        )
        .await;
    assert_eq!(ok.body["type"], 7, "{}", ok.body);
    let done = fake
        .wait_for_interaction(&ok.id, Duration::from_secs(10), |i| !i.edits.is_empty())
        .await;
    assert!(
        done.content().contains("silenced APIDown"),
        "{}",
        done.content()
    );
    let silences: Value = reqwest::get(format!("{}/api/v2/silences", am.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let active: Vec<&Value> = silences
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"]["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{silences}");
    assert_eq!(active[0]["createdBy"], "Dana via runbot");
    // The card shows the silence.
    card_says(&fake, &card.id, "Silenced by **Dana**").await;
    app.stop().await;
}
