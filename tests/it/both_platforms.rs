//! Discord, Slack and the console at once: an alert group has a card on each, and what people
//! do on one platform (an acknowledgement, a command on the group) shows on every card.

use crate::common;

use std::time::Duration;

use common::rig::{roles_toml, shipped_policies};
use common::{webhook, Db, Options, TestApp};
use fake_discord::{FakeDiscord, FakeUser};
use fake_slack::FakeSlack;
use serde_json::json;

use crate::slack_cards::{buttons, footer, is_card, text_of, CHANNEL as SLACK_CHANNEL};

const BOT_TOKEN: &str = "fake-bot-token-0123456789abcdef";
const DISCORD_CHANNEL: u64 = 111_111_111_111_111_111;
const WAIT: Duration = Duration::from_secs(15);
/// Ana on Slack: a devops lead there (`slack_users`).
const ANA_SLACK: &str = "U0ANA00001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_in_slack_shows_on_the_discord_card_and_the_console_and_a_discord_click_in_the_slack_thread(
) {
    let discord = FakeDiscord::start_with_channels(BOT_TOKEN, &[DISCORD_CHANNEL]).await;
    let slack = FakeSlack::start().await;
    // Discord roles as the Discord tests have them, and Ana's Slack id in devops-lead.
    let roles = roles_toml(&discord).replacen(
        "[roles.devops-lead]\ndiscord_roles",
        &format!("[roles.devops-lead]\nslack_users = [\"{ANA_SLACK}\"]\ndiscord_roles"),
        1,
    );
    let roles = roles.replacen("slack_users = []\nhours = \"24/7\"", "hours = \"24/7\"", 1);
    let policies = shipped_policies(&tempfile::tempdir().unwrap().keep(), &roles);
    let app = TestApp::spawn_with(
        Options::new(Db::Postgres)
            .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
            .set(
                "RUNBOT__DISCORD__ALERT_CHANNEL_ID",
                &DISCORD_CHANNEL.to_string(),
            )
            .set("RUNBOT__DISCORD__API_BASE", &discord.base_url())
            .set("RUNBOT__DISCORD__APPLICATION_ID", discord.application_id())
            .set("RUNBOT__DISCORD__PUBLIC_KEY", &discord.public_key_hex())
            .set("RUNBOT__SLACK__BOT_TOKEN", fake_slack::BOT_TOKEN)
            .set("RUNBOT__SLACK__APP_TOKEN", fake_slack::APP_TOKEN)
            .set("RUNBOT__SLACK__ALERT_CHANNEL_ID", SLACK_CHANNEL)
            .set("RUNBOT__SLACK__API_BASE", &slack.api_base())
            .set("RUNBOT__POLICY__DIR", &policies.display().to_string()),
    )
    .await;
    slack
        .wait_for("a Socket Mode connection", WAIT, |f| {
            (f.connected() > 0).then_some(())
        })
        .await;

    // A Sev3: its silence needs no second person.
    let alert = json!({"severity": "warning", "instance": "api-1:8000"});
    let body = webhook(
        "APIDown",
        "firing",
        &[("aaaa000000000001", "firing", alert)],
    );
    assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);

    // A card on each platform.
    let discord_card = discord
        .wait_for(WAIT, "the Discord card", |m, _| m.first().cloned())
        .await;
    let slack_card = slack
        .wait_for("the Slack card", WAIT, |f| {
            f.messages_in(SLACK_CHANNEL).into_iter().find(is_card)
        })
        .await;
    let group: i64 = footer(&slack_card)
        .unwrap()
        .rsplit('#')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        app.groups().await.iter().any(|g| g["id"] == group),
        "the console lists it"
    );

    // Ana acknowledges from Slack (Socket Mode): the card's Acknowledge button.
    let ack = buttons(&slack_card)
        .into_iter()
        .map(|(id, _)| id)
        .find(|id| id.ends_with(":4"))
        .expect("the APIDown card's Acknowledge");
    let url = slack.response_url();
    let payload = fake_slack::block_actions_payload(
        &ack,
        &ack,
        ANA_SLACK,
        "ana",
        SLACK_CHANNEL,
        &slack_card.ts,
        &url,
    );
    let id = slack.send_envelope("interactive", payload, false).await;
    assert!(slack.wait_ack(&id, Duration::from_secs(3)).await.is_some());

    // The Discord card, the Slack card and the console's group all say so.
    discord
        .wait_for(WAIT, "the Discord card acknowledged", |m, _| {
            m.iter()
                .find(|c| c.id == discord_card.id)
                .filter(|c| {
                    c.body["embeds"][0]["description"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("Acknowledged by")
                })
                .cloned()
        })
        .await;
    slack
        .wait_for("the Slack card acknowledged", WAIT, |f| {
            f.message(SLACK_CHANNEL, &slack_card.ts)
                .filter(|m| text_of(m).contains("Acknowledged by"))
        })
        .await;
    // The console: the group's page.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let page = app
            .get(&format!("/groups/{group}"))
            .await
            .text()
            .await
            .unwrap();
        if page.contains("acknowledged by ana") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the console's group page shows the acknowledgement"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A click on the Discord card (Silence 1h: a change, so a note) lands in the Slack card's
    // thread, whether the silence worked or not (no Alertmanager here: it says why not).
    let status = discord_card
        .custom_ids()
        .into_iter()
        .nth(3)
        .expect("the card's fourth button");
    let lead = FakeUser::new(1_300_000_000_000_000_009, "Dev Lead", &["DevOps Lead"]);
    let sent = discord
        .send_interaction(
            &format!("{}/discord/interactions", app.url),
            discord.button_click(&discord_card.id, &status, &lead, DISCORD_CHANNEL),
        )
        .await;
    assert_eq!(sent.status, 200);
    let thread = slack
        .wait_for(
            "the Discord click in the Slack thread",
            Duration::from_secs(30),
            |f| {
                let replies = f.replies(SLACK_CHANNEL, &slack_card.ts);
                replies
                    .iter()
                    .any(|m| m.text.contains("Dev Lead"))
                    .then_some(replies)
            },
        )
        .await;
    assert!(
        thread.iter().any(|m| m.text.contains("ana")),
        "the thread holds the acknowledgement first: {:?}",
        thread.iter().map(|m| &m.text).collect::<Vec<_>>()
    );
    app.stop().await;
}
