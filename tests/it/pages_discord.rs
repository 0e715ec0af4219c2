//! Pages on Discord: the DM pager and the mention pager against the fake Discord, which opens
//! DMs and refuses mentions as Discord does; an Acknowledge pressed in a DM acknowledges the
//! group through the ordinary interaction path.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::rig::shipped_policies;
use common::{webhook, Db, Options, TestApp};
use fake_discord::{FakeDiscord, FakeUser};
use runbot::chat::discord::page::DiscordMention;
use runbot::chat::discord::DiscordAdapter;
use runbot::request::page::ack_button_id;
use runbot::request::page::{Page, PageError, Pager};
use serde_json::{json, Value};

const BOT_TOKEN: &str = "fake-bot-token-0123456789abcdef";
const CHANNEL: u64 = 111_111_111_111_111_111;
const ANA: &str = "1300000000000000001";
const ROLE: &str = "1300000000000000077";

fn adapter(fake: &FakeDiscord) -> DiscordAdapter {
    let env = [
        ("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN.to_string()),
        ("RUNBOT__DISCORD__API_BASE", fake.base_url()),
        ("RUNBOT__DISCORD__ALERT_CHANNEL_ID", CHANNEL.to_string()),
        (
            "RUNBOT__DISCORD__APPLICATION_ID",
            fake.application_id().to_string(),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let settings = runbot::config::Settings::load_from(None, env.to_vec()).unwrap();
    DiscordAdapter::new(&settings).unwrap()
}

fn page(id: i64, group_id: Option<i64>) -> Page {
    Page {
        id,
        group_id,
        severity: Some("sev1".into()),
        title: "Sev1 · APIDown: API down".into(),
        summary: "The API is down".into(),
        person: "Ana".into(),
        role: Some("devops-lead".into()),
        reason: "step 1 of sev1".into(),
        url: Some("http://runbot.example/groups/7".into()),
    }
}

fn opens(fake: &FakeDiscord) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path.ends_with("/users/@me/channels"))
        .count()
}

#[tokio::test]
async fn a_dm_page_opens_the_dm_once_and_carries_the_acknowledge_button() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let pager = adapter(&fake);
    assert_eq!(Pager::via(&pager), "discord");
    pager.send(ANA, &page(41, Some(7))).await.unwrap();
    let dms = fake.dms_to(ANA);
    assert_eq!(dms.len(), 1);
    let m = &dms[0];
    assert_eq!(m.custom_ids(), vec![ack_button_id(7)]);
    assert_eq!(m.custom_ids(), vec!["rb1c:ack:group=7".to_string()]);
    let embed = &m.body["embeds"][0];
    assert_eq!(embed["title"], "Sev1 · APIDown: API down");
    assert_eq!(embed["color"], 0xE01E5A);
    assert_eq!(embed["description"], "The API is down");
    let text = embed.to_string();
    assert!(text.contains("step 1 of sev1"), "{text}");
    assert!(text.contains("http://runbot.example/groups/7"), "{text}");
    let sent = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/messages"))
        .unwrap();
    let body = sent.body.unwrap();
    assert_eq!(body["enforce_nonce"], true);
    assert_eq!(body["nonce"], "rb-dm-41");
    assert_eq!(body["allowed_mentions"]["parse"], json!([]));

    // The same page again (a retry): Discord gives back the first message. Another page: one
    // more message, and the DM is not opened again.
    pager.send(ANA, &page(41, Some(7))).await.unwrap();
    pager.send(ANA, &page(42, None)).await.unwrap();
    let dms = fake.dms_to(ANA);
    assert_eq!(dms.len(), 2);
    assert!(dms[1].custom_ids().is_empty(), "no group, nothing to ack");
    assert_eq!(opens(&fake), 1);
}

#[tokio::test]
async fn a_mention_pings_only_its_person_or_role() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let pager = DiscordMention::new(Arc::new(adapter(&fake)));
    assert_eq!(pager.via(), "discord-mention");
    pager
        .send(&format!("{CHANNEL}/{ANA}"), &page(50, Some(7)))
        .await
        .unwrap();
    pager
        .send(&format!("{CHANNEL}/&{ROLE}"), &page(51, Some(7)))
        .await
        .unwrap();
    let messages = fake.messages_in(CHANNEL);
    assert_eq!(messages.len(), 2);
    assert!(
        messages[0]
            .content()
            .starts_with(&format!("<@{ANA}> paged: Sev1 · APIDown")),
        "{}",
        messages[0].content()
    );
    assert!(messages[1]
        .content()
        .starts_with(&format!("<@&{ROLE}> paged:")));
    assert_eq!(messages[0].custom_ids(), vec![ack_button_id(7)]);
    let bodies: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/messages"))
        .map(|r| r.body.unwrap())
        .collect();
    let allowed = |b: &Value| {
        let a = &b["allowed_mentions"];
        (a["parse"].clone(), a["users"].clone(), a["roles"].clone())
    };
    assert_eq!(allowed(&bodies[0]), (json!([]), json!([ANA]), json!([])));
    assert_eq!(allowed(&bodies[1]), (json!([]), json!([]), json!([ROLE])));
    assert_eq!(bodies[0]["nonce"], "rb-mention-50");
}

#[tokio::test]
async fn failures_say_whether_to_retry() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dm = Arc::new(adapter(&fake));
    let mention = DiscordMention::new(dm.clone());

    // Targets that cannot be right: refused without a request.
    for bad in [
        "",
        "ana",
        "-1",
        "0",
        "1300000000000000001/2",
        "99999999999999999999999",
    ] {
        let e = dm.send(bad, &page(60, Some(7))).await.unwrap_err();
        assert!(matches!(e, PageError::Permanent(_)), "{bad:?}: {e:?}");
    }
    for bad in ["", "111", "111/", "111/@2", "x/2", "111/&", "111/2/3", ANA] {
        let e = mention.send(bad, &page(61, Some(7))).await.unwrap_err();
        assert!(matches!(e, PageError::Permanent(_)), "{bad:?}: {e:?}");
    }
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // A rate limit: retry after what Discord said.
    fake.answer_next(
        429,
        json!({"message": "You are being rate limited.", "retry_after": 2.5, "global": false}),
    );
    let e = dm.send(ANA, &page(62, Some(7))).await.unwrap_err();
    assert_eq!(
        e,
        PageError::Temporary {
            reason: "over Discord's rate limit".into(),
            retry_after: Some(Duration::from_millis(2500))
        }
    );
    // Discord down: retry, no wait given.
    fake.fail_with(Some(502));
    let e = dm.send(ANA, &page(63, Some(7))).await.unwrap_err();
    assert!(
        matches!(
            e,
            PageError::Temporary {
                retry_after: None,
                ..
            }
        ),
        "{e:?}"
    );
    fake.fail_with(None);
    // A user who takes no DMs: no retry will help.
    fake.refuse_dms(ANA);
    let e = dm.send(ANA, &page(64, Some(7))).await.unwrap_err();
    assert!(
        matches!(&e, PageError::Permanent(m) if m.contains("50007")),
        "{e:?}"
    );
    // A channel Discord does not know: refused.
    let e = mention
        .send(
            "1200000000000000999/1300000000000000001",
            &page(65, Some(7)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, PageError::Permanent(_)), "{e:?}");
    assert!(fake.dms_to(ANA).is_empty());
}

/// roles.toml where Ana holds devops-lead by her Discord user id, not by a Discord role.
fn roles_with_ana(fake: &FakeDiscord) -> String {
    common::rig::roles_toml(fake).replacen(
        "discord_users = []",
        &format!("discord_users = [\"{ANA}\"]"),
        1,
    )
}

#[tokio::test]
async fn acknowledge_pressed_in_a_dm_acknowledges_the_group() {
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let roles = roles_with_ana(&fake);
    assert!(roles.starts_with("[roles.devops-lead]"), "{roles}");
    let policies = shipped_policies(&tempfile::tempdir().unwrap().keep(), &roles);
    let app = TestApp::spawn_with(
        Options::new(Db::Sqlite)
            .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
            .set("RUNBOT__DISCORD__ALERT_CHANNEL_ID", &CHANNEL.to_string())
            .set("RUNBOT__DISCORD__API_BASE", &fake.base_url())
            .set("RUNBOT__DISCORD__APPLICATION_ID", fake.application_id())
            .set("RUNBOT__DISCORD__PUBLIC_KEY", &fake.public_key_hex())
            // The test sends the page itself (the engine is off unless a test asks for it).
            .set("RUNBOT__POLICY__DIR", &policies.display().to_string()),
    )
    .await;
    let alert = json!({"severity": "critical", "instance": "api-1:8000"});
    let body = webhook(
        "APIDown",
        "firing",
        &[("aaaa000000000001", "firing", alert)],
    );
    assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    let card = fake
        .wait_for_messages(1, Duration::from_secs(10))
        .await
        .remove(0);
    let group: i64 = card.custom_ids()[0]
        .split(':')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();

    let pager = adapter(&fake);
    pager.send(ANA, &page(70, Some(group))).await.unwrap();
    let dm = fake.dms_to(ANA).remove(0);
    let ana = FakeUser::new(ANA.parse().unwrap(), "Ana Ops", &[]);
    let click = fake.dm_button_click(&dm.id, &ack_button_id(group), &ana);
    assert!(click.body.get("guild_id").is_none() && click.body.get("member").is_none());
    let url = format!("{}/discord/interactions", app.url);
    let sent = fake.send_interaction(&url, click).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.failure.is_none(), "{:?}", sent.failure);
    let i = fake
        .wait_for_interaction(&sent.id, Duration::from_secs(10), |i| {
            !i.edits.is_empty() || i.initial.as_ref().is_some_and(|b| b["type"] == 4)
        })
        .await;
    let said = format!("{} {}", i.content(), sent.body);
    assert!(said.contains("acknowledged APIDown"), "{said}");
    // The card in the channel says who, as after a click on the card itself.
    fake.wait_for(
        Duration::from_secs(10),
        "the card to say Ana acknowledged",
        |messages, _| {
            messages
                .iter()
                .find(|m| m.id == card.id)
                .is_some_and(|m| {
                    m.body["embeds"][0]["description"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("Acknowledged by **Ana Ops**")
                })
                .then_some(())
        },
    )
    .await;

    // Someone else pressing a button in their own DM, without a runbot role: refused.
    let bo = "1300000000000000002";
    pager.send(bo, &page(71, Some(group))).await.unwrap();
    let dm = fake.dms_to(bo).remove(0);
    let bo_user = FakeUser::new(bo.parse().unwrap(), "Bo", &[]);
    let sent = fake
        .send_interaction(
            &url,
            fake.dm_button_click(&dm.id, &ack_button_id(group), &bo_user),
        )
        .await;
    assert_eq!(sent.body["type"], 4, "{}", sent.body);
    assert!(
        sent.body["data"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("no runbot role"),
        "{}",
        sent.body
    );
    app.stop().await;
}
