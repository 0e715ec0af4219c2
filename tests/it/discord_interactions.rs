//! `POST /discord/interactions`: only requests signed with the application's key, fresh, and
//! not seen before get an answer; everything else is a 401 that changes nothing.

use crate::common;

use common::{Db, Options, TestApp};
use ed25519_dalek::{Signer, SigningKey};
use fake_discord::{FakeDiscord, FakeUser};
use serde_json::{json, Value};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public_hex(k: &SigningKey) -> String {
    k.verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sign(k: &SigningKey, timestamp: &str, body: &str) -> String {
    let sig = k.sign(format!("{timestamp}{body}").as_bytes());
    sig.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

async fn app(k: &SigningKey) -> TestApp {
    TestApp::spawn_with(Options::new(Db::Sqlite).set("RUNBOT__DISCORD__PUBLIC_KEY", &public_hex(k)))
        .await
}

async fn send(
    app: &TestApp,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut req = app
        .client
        .post(format!("{}/discord/interactions", app.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        req = req.header("x-signature-ed25519", s);
    }
    if let Some(t) = timestamp {
        req = req.header("x-signature-timestamp", t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn ping(id: &str) -> String {
    json!({"id": id, "type": 1, "application_id": "1", "token": "t", "version": 1}).to_string()
}

#[tokio::test]
async fn only_fresh_correctly_signed_unseen_interactions_are_answered() {
    let k = key(7);
    let app = app(&k).await;
    let ts = now().to_string();

    // Good: PING answered with PONG.
    let body = ping("1001");
    let (status, text) = send(&app, Some(&sign(&k, &ts, &body)), Some(&ts), &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"type": 1})
    );

    // The same interaction again: refused.
    let (status, text) = send(&app, Some(&sign(&k, &ts, &body)), Some(&ts), &body).await;
    assert_eq!(
        (status, text.as_str()),
        (401, "interaction already received")
    );

    let body = ping("1002");
    let good = sign(&k, &ts, &body);
    let cases: Vec<(&str, Option<String>, Option<String>, String)> = vec![
        ("no signature", None, Some(ts.clone()), body.clone()),
        ("no timestamp", Some(good.clone()), None, body.clone()),
        (
            "signed by another key",
            Some(sign(&key(8), &ts, &body)),
            Some(ts.clone()),
            body.clone(),
        ),
        (
            "body changed after signing",
            Some(good.clone()),
            Some(ts.clone()),
            body.replace("1002", "1003"),
        ),
        (
            "timestamp changed after signing",
            Some(good.clone()),
            Some((now() + 1).to_string()),
            body.clone(),
        ),
        (
            "signature not hex",
            Some("zz".repeat(64)),
            Some(ts.clone()),
            body.clone(),
        ),
        (
            "signature truncated",
            Some(good[..100].to_string()),
            Some(ts.clone()),
            body.clone(),
        ),
    ];
    for (what, sig, t, b) in cases {
        let (status, _) = send(&app, sig.as_deref(), t.as_deref(), &b).await;
        assert_eq!(status, 401, "{what}");
    }
    // Refusals did not mark the id as seen: the genuine request still goes through.
    let (status, _) = send(&app, Some(&good), Some(&ts), &body).await;
    assert_eq!(status, 200);

    // Correctly signed but stale, or from the future: a minute past the 300 s allowed, so
    // that the seconds the request takes to arrive never bring it back within.
    for (what, t) in [("stale", now() - 360), ("future", now() + 360)] {
        let t = t.to_string();
        let body = ping(&format!("2{what}"));
        let (status, text) = send(&app, Some(&sign(&k, &t, &body)), Some(&t), &body).await;
        assert_eq!(
            (status, text.as_str()),
            (401, "request timestamp too old or in the future"),
            "{what}"
        );
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("runbot_interactions_refused_total"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_public_key_the_endpoint_is_not_there() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let (status, text) = send(&app, None, None, "{}").await;
    assert_eq!(status, 404);
    assert!(text.contains("discord.public_key"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn interactions_signed_by_the_fake_discord_are_answered_in_time_and_in_shape() {
    let fake = FakeDiscord::start("fake-bot-token-0123456789abcdef").await;
    let app = TestApp::spawn_with(
        Options::new(Db::Sqlite).set("RUNBOT__DISCORD__PUBLIC_KEY", &fake.public_key_hex()),
    )
    .await;
    let url = format!("{}/discord/interactions", app.url);

    let pong = fake.send_interaction(&url, fake.ping()).await;
    assert_eq!((pong.status, &pong.body), (200, &json!({"type": 1})));

    let user = FakeUser::new(1_300_000_000_000_000_001, "Ana Ops", &["DevOps Lead"]);
    let channel = 111_111_111_111_111_111;
    let sent = fake
        .send_interaction(&url, fake.slash_command("status", &[], &user, channel))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.failure.is_none(), "{:?}", sent.failure);
    let i = fake.interaction(&sent.id);
    assert_eq!(i.response_type, Some(4));
    assert!(i.ephemeral, "only the person who asked sees the answer");
    // Without a bot token runbot cannot edit answers later, so it says what to set.
    assert!(
        i.content()
            .contains("set discord.bot_token and discord.application_id"),
        "{}",
        i.content()
    );
    let other = FakeUser::new(1_300_000_000_000_000_002, "Bo", &[]);
    assert!(fake.messages_visible_to(channel, &other.id).is_empty());
    app.stop().await;
}

/// The replay check holds across replicas and restarts: interaction ids are kept in the
/// database, so the same signed request sent to a second replica, or to a runbot started after
/// the first stopped, is refused as the first refused it.
#[tokio::test]
async fn a_replayed_interaction_is_refused_by_another_replica_and_after_a_restart() {
    for db in common::BOTH {
        let k = key(9);
        // One database, outliving every runbot that uses it.
        let dir = tempfile::tempdir().unwrap();
        let url = common::fresh_database(db, dir.path()).await;
        let opts = || {
            let mut o = Options::new(db).set("RUNBOT__DISCORD__PUBLIC_KEY", &public_hex(&k));
            o.database_url = Some(url.clone());
            o
        };
        let first = TestApp::spawn_with(opts()).await;
        let second = TestApp::spawn_with(opts()).await;
        let ts = now().to_string();
        let body = ping("3001");
        let sig = sign(&k, &ts, &body);
        assert_eq!(send(&first, Some(&sig), Some(&ts), &body).await.0, 200);
        assert_eq!(
            send(&second, Some(&sig), Some(&ts), &body).await,
            (401, "interaction already received".to_string()),
            "{db:?}: another replica"
        );
        first.stop().await;
        let restarted = TestApp::spawn_with(opts()).await;
        assert_eq!(
            send(&restarted, Some(&sig), Some(&ts), &body).await,
            (401, "interaction already received".to_string()),
            "{db:?}: after a restart"
        );
        let other = ping("3002");
        let (status, _) = send(&second, Some(&sign(&k, &ts, &other)), Some(&ts), &other).await;
        assert_eq!(status, 200, "a new interaction still passes");
        second.stop().await;
        restarted.stop().await;
    }
}
