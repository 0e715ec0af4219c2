//! `/block-ip`, `/unblock-ip`, `/blocked`, expiry and `/security top-ips` against a real nginx
//! (Debian's nginx-light, under scripts/test): what counts is the status nginx answers a
//! client, and the deny file nginx reads.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::nginx::TestNginx;
use common::rig::{devops, message, person, text, Edits, Rig, ROLES};
use common::{Db, Serve, BOTH, BOT_TOKEN, CHANNEL};
use runbot::audit::Step;
use runbot::executors::nginx::{follow, start_following, Followed};
use runbot::request::RawValue;
use runbot::request::Reply;
use runbot::request::{Actor, Answer};

async fn rig(db: Db, nginx: &TestNginx, extra_toml: &str) -> Rig {
    Rig::with_config(
        db,
        &format!("{}\n{extra_toml}", nginx.settings()),
        &[],
        runbot::domain::clock::system_clock(),
    )
    .await
}

/// Asks as `who`, confirms, and returns the outcome's text; Err with the refusal when runbot
/// answered without a Confirm prompt.
async fn run_as(
    rig: &Rig,
    who: Actor,
    command: &str,
    args: &[(&str, RawValue)],
) -> Result<String, String> {
    let edits = Arc::new(Edits::default());
    let answer = rig.ask(who.clone(), command, args, &edits).await;
    confirm(rig, who, answer, &edits).await
}

async fn confirm(
    rig: &Rig,
    who: Actor,
    answer: Answer,
    edits: &Arc<Edits>,
) -> Result<String, String> {
    let prompt = message(&answer);
    let Some(confirm) = prompt.buttons.iter().find(|b| b.label == "Confirm") else {
        return Err(prompt.text.clone());
    };
    let clicked = rig.click(who, &confirm.id, edits).await;
    assert!(matches!(clicked, Answer::Update(_)), "{clicked:?}");
    Ok(edits.wait(1).await[0].text.clone())
}

async fn run(rig: &Rig, command: &str, args: &[(&str, RawValue)]) -> Result<String, String> {
    run_as(rig, devops(), command, args).await
}

/// A read: its deferred answer's edit.
async fn read(rig: &Rig, command: &str, args: &[(&str, RawValue)]) -> Reply {
    let edits = Arc::new(Edits::default());
    let answer = rig.ask(devops(), command, args, &edits).await;
    assert!(matches!(answer, Answer::Deferred { .. }), "{answer:?}");
    edits.wait(1).await.remove(0)
}

#[tokio::test]
async fn a_client_gets_403_once_blocked_and_200_again_once_unblocked() {
    let nginx = TestNginx::start().await;
    let rig = rig(Db::Sqlite, &nginx, "").await;
    let attacker = "203.0.113.7";
    assert_eq!(nginx.status(attacker).await, 200);

    let said = run(
        &rig,
        "block-ip",
        &[
            ("address", text(attacker)),
            ("reason", text("credential stuffing")),
        ],
    )
    .await
    .unwrap();
    assert!(
        said.contains("blocked **203.0.113.7** with no expiry — credential stuffing")
            && said.contains("nginx checked and reloaded"),
        "{said}"
    );
    nginx.wait_status(attacker, 403).await;
    assert_eq!(nginx.status("203.0.113.8").await, 200, "only that address");
    let file = nginx.deny_file();
    assert!(
        file.contains("# by Dana at ")
            && file.contains("until no expiry: credential stuffing\ndeny 203.0.113.7;\n"),
        "{file}"
    );

    // Twice: nothing changes, and it says who blocked it.
    let again = run(&rig, "block-ip", &[("address", text(attacker))])
        .await
        .unwrap();
    assert!(again.contains("already blocked, by **Dana**"), "{again}");
    assert_eq!(nginx.denied(), [attacker]);
    assert_eq!(rig.count("SELECT COUNT(*) FROM ip_blocks").await, 1);

    let listed = read(&rig, "blocked", &[]).await;
    let table = listed.code_block.unwrap();
    assert!(
        table.contains("203.0.113.7")
            && table.contains("Dana")
            && table.contains("no expiry")
            && table.contains("credential stuffing"),
        "{table}"
    );

    let said = run(&rig, "unblock-ip", &[("address", text(attacker))])
        .await
        .unwrap();
    assert!(
        said.contains("unblocked **203.0.113.7** (blocked by Dana: credential stuffing)"),
        "{said}"
    );
    nginx.wait_status(attacker, 200).await;
    assert!(nginx.denied().is_empty());
    assert!(nginx.config_ok());

    // Every attempt is in the trail, which verifies.
    let trail = rig.trail().await;
    let succeeded: Vec<&str> = trail
        .iter()
        .filter(|(s, ..)| *s == Step::Succeeded)
        .map(|(_, c, ..)| c.as_str())
        .collect();
    assert_eq!(succeeded, ["block-ip", "block-ip", "blocked", "unblock-ip"]);
    assert!(rig.audit.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn ipv6_and_ranges_are_written_in_canonical_form_and_a_timed_block_expires_by_itself() {
    let nginx = TestNginx::start().await;
    let rig = rig(Db::Postgres, &nginx, "").await;
    run(&rig, "block-ip", &[("address", text("2001:DB8:0:0::7"))])
        .await
        .unwrap();
    run(
        &rig,
        "block-ip",
        &[("address", text("203.0.113.0/24")), ("ttl", text("5s"))],
    )
    .await
    .unwrap();
    // Not yet due: the sweep leaves it. (Asked at once, well within the block's 5 s.)
    let blocks = &rig.dispatcher.executors().blocks;
    assert_eq!(
        runbot::executors::nginx::expire_due(blocks).await.unwrap(),
        0
    );
    assert_eq!(nginx.denied(), ["2001:db8::7", "203.0.113.0/24"]);
    nginx.wait_status("203.0.113.99", 403).await;
    nginx.wait_status("2001:db8::7", 403).await;
    let file = nginx.deny_file();
    assert!(file.contains("until 20"), "the expiry is written: {file}");

    // Once due, a sweep lifts it: polled, since a loaded machine may get there late.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let expired = runbot::executors::nginx::expire_due(blocks).await.unwrap();
        if expired > 0 {
            assert_eq!(expired, 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the 5 s block was not expired within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nginx.wait_status("203.0.113.99", 200).await;
    assert_eq!(
        nginx.status("2001:db8::7").await,
        403,
        "the other block stays"
    );
    assert_eq!(nginx.denied(), ["2001:db8::7"]);
    assert_eq!(
        rig.count("SELECT COUNT(*) FROM ip_blocks WHERE state = 'expired'")
            .await,
        1
    );
    // Audited with runbot as the actor, and told to the channel it was blocked from.
    let trail = rig.trail().await;
    let expiry: Vec<_> = trail
        .iter()
        .filter(|(_, c, who, _)| c == "unblock-ip" && who == "runbot")
        .map(|(s, ..)| *s)
        .collect();
    assert_eq!(expiry, [Step::Started, Step::Succeeded]);
    assert!(rig.audit.verify().await.unwrap().is_intact());
    assert_eq!(
        rig.count("SELECT COUNT(*) FROM announcements WHERE channel_id = '300000000000000001' AND text LIKE '%203.0.113.0/24%expired%'").await,
        1
    );
    // Once only.
    assert_eq!(
        runbot::executors::nginx::expire_due(blocks).await.unwrap(),
        0
    );

    // A deny file that lost its lines (edited by hand, or runbot stopped between saving a
    // block and writing the file) is put back from the database by the next pass.
    std::fs::write(&nginx.deny, "").unwrap();
    assert_eq!(
        follow(blocks).await.unwrap(),
        Followed::Applied { entries: 1 }
    );
    assert_eq!(nginx.denied(), ["2001:db8::7"]);
    assert_eq!(follow(blocks).await.unwrap(), Followed::Unchanged);
}

/// An address inside a range already blocked is blocked too, and the answer names the range
/// (from the list nginx took, not from a second read).
#[tokio::test]
async fn blocking_an_address_inside_a_blocked_range_names_the_range() {
    let nginx = TestNginx::start().await;
    let rig = rig(Db::Sqlite, &nginx, "").await;
    run(&rig, "block-ip", &[("address", text("203.0.113.0/24"))])
        .await
        .unwrap();
    let said = run(&rig, "block-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    assert!(
        said.contains("(2 entries). (It was already inside 203.0.113.0/24.)"),
        "{said}"
    );
}

#[tokio::test]
async fn concurrent_blocks_and_unblocks_leave_a_valid_file_with_every_entry() {
    for db in BOTH {
        let nginx = TestNginx::start().await;
        // One person sends 48 requests (and clicks) at once here.
        let rig = Arc::new(
            rig(
                db,
                &nginx,
                "[interactions]\nper_user_per_minute = 1000\nper_user_burst = 1000\n",
            )
            .await,
        );
        let addresses: Vec<String> = (1..=12).map(|i| format!("203.0.113.{i}")).collect();
        let blocks = addresses.iter().map(|a| {
            let rig = rig.clone();
            let a = a.clone();
            tokio::spawn(async move { run(&rig, "block-ip", &[("address", text(&a))]).await })
        });
        for r in futures_util::future::join_all(blocks).await {
            let said = r.unwrap().unwrap();
            assert!(said.contains("⛔"), "{db:?}: {said}");
        }
        let mut denied = nginx.denied();
        denied.sort();
        let mut want = addresses.clone();
        want.sort();
        assert_eq!(denied, want, "{db:?}: every block is in the file");
        assert!(nginx.config_ok());

        // Half unblocked while the other half is blocked again (already blocked: no change).
        let mixed = addresses.iter().enumerate().map(|(i, a)| {
            let rig = rig.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let command = if i % 2 == 0 { "unblock-ip" } else { "block-ip" };
                run(&rig, command, &[("address", text(&a))]).await
            })
        });
        for r in futures_util::future::join_all(mixed).await {
            r.unwrap().unwrap();
        }
        let left: Vec<String> = addresses.iter().skip(1).step_by(2).cloned().collect();
        let mut denied = nginx.denied();
        denied.sort();
        let mut want = left.clone();
        want.sort();
        assert_eq!(denied, want, "{db:?}");
        assert!(nginx.config_ok());
        for a in &left {
            nginx.wait_status(a, 403).await;
        }
        nginx.wait_status("203.0.113.1", 200).await;
        assert_eq!(
            rig.count("SELECT COUNT(*) FROM ip_blocks WHERE state = 'active'")
                .await,
            6
        );
    }
}

#[tokio::test]
async fn invalid_and_dangerous_addresses_are_refused_with_a_reason_and_change_nothing() {
    let nginx = TestNginx::start().await;
    let rig = rig(
        Db::Sqlite,
        &nginx,
        "[interactions]\nper_user_per_minute = 1000\nper_user_burst = 1000\n",
    )
    .await;
    run(&rig, "block-ip", &[("address", text("192.0.2.1"))])
        .await
        .unwrap();
    let before = nginx.deny_file();

    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("address", "123.456.789.0")],
            "each of its four numbers must be 0 to 255, and 456 is not",
        ),
        (&[("address", "1.2.3")], "is not an IPv4 or IPv6 address"),
        (
            &[("address", "example.com")],
            "is not an IPv4 or IPv6 address",
        ),
        (
            &[("address", "203.0.113.7/33")],
            "prefix length after / must be a number from 0 to 32",
        ),
        (&[("address", "10.1.2.3/8")], "the range is 10.0.0.0/8"),
        (
            &[("address", "::ffff:203.0.113.7")],
            "give it as 203.0.113.7",
        ),
        (
            &[("address", "1.2.3.4; include /etc/passwd")],
            "may not contain ';'",
        ),
        (
            &[("address", "1.2.3.4\ninclude /etc/passwd")],
            "may not contain '\\n'",
        ),
        (&[("address", "$(reboot)")], "may not contain '$'"),
        (
            &[
                ("address", "203.0.113.7"),
                ("reason", "x;\ninclude /etc/passwd"),
            ],
            "may not contain ';'",
        ),
        (
            &[("address", "203.0.113.7"), ("ttl", "forever")],
            "not a duration",
        ),
        (
            &[("address", "203.0.113.7"), ("ttl", "31d")],
            "not a duration",
        ),
        (
            &[("address", "0.0.0.0/0")],
            "every IPv4 address: it would lock everyone out",
        ),
        (&[("address", "::/0")], "every IPv6 address"),
        (&[("address", "127.0.0.1")], "loopback"),
        (&[("address", "::1")], "loopback"),
        (&[("address", "0.0.0.0")], "unspecified"),
        (&[("address", "169.254.169.254")], "link-local"),
        (&[("address", "224.0.0.1")], "multicast"),
        (&[("address", "198.51.100.7")], "nginx.allow_list"),
        (&[("address", "198.0.0.0/8")], "nginx.allow_list"),
        (&[], "needs address"),
    ];
    for (args, why) in cases {
        let args: Vec<(&str, RawValue)> = args.iter().map(|(k, v)| (*k, text(v))).collect();
        let refused = run(&rig, "block-ip", &args)
            .await
            .expect_err("refused before any prompt");
        assert!(refused.contains(why), "{args:?}: {refused}");
    }
    // Unblocking what is not blocked says what is.
    let failed = run(&rig, "unblock-ip", &[("address", text("192.0.2.0/24"))])
        .await
        .unwrap();
    assert!(
        failed.contains("192.0.2.0/24 is not blocked by runbot; it is covered by 192.0.2.1"),
        "{failed}"
    );
    // A wide range waits for a second person: nothing runs meanwhile.
    let edits = Arc::new(Edits::default());
    let asked = rig
        .ask(
            devops(),
            "block-ip",
            &[("address", text("10.0.0.0/8"))],
            &edits,
        )
        .await;
    let prompt = message(&asked);
    assert!(prompt.text.contains("approv"), "{}", prompt.text);
    assert!(prompt.buttons.iter().all(|b| b.label != "Confirm"));

    // A dry run says what it would do, and does nothing.
    let edits = Arc::new(Edits::default());
    let dry = rig
        .ask(
            devops(),
            "block-ip",
            &[
                ("address", text("203.0.113.9")),
                ("ttl", text("1h")),
                ("dry_run", RawValue::Boolean(true)),
            ],
            &edits,
        )
        .await;
    let plan = &message(&dry).text;
    assert!(
        plan.contains("add `deny 203.0.113.9;` to") && plan.contains("for 1 h, run nginx -t"),
        "{plan}"
    );

    assert_eq!(nginx.deny_file(), before, "the file did not change");
    assert_eq!(rig.count("SELECT COUNT(*) FROM ip_blocks").await, 1);
    assert_eq!(nginx.status("203.0.113.7").await, 200);
    let invalid = rig
        .trail()
        .await
        .iter()
        .filter(|(s, ..)| *s == Step::Invalid)
        .count();
    assert_eq!(invalid, cases.len(), "every refusal is audited");
}

/// A second person with security, so a wide range can be approved.
fn roles_with_security() -> String {
    ROLES.replace(
        "[roles.security]\ndiscord_users = []",
        "[roles.security]\ndiscord_users = [\"100000000000000009\"]",
    )
}

#[tokio::test]
async fn a_wide_range_is_blocked_once_security_approves() {
    let nginx = TestNginx::start().await;
    let rig = Rig::with_config_and_roles(
        Db::Sqlite,
        &nginx.settings(),
        runbot::domain::clock::system_clock(),
        &roles_with_security(),
    )
    .await;
    let sam = person("100000000000000009", "Sam");
    let edits = Arc::new(Edits::default());
    let asked = rig
        .ask(
            devops(),
            "block-ip",
            &[("address", text("10.0.0.0/8")), ("reason", text("botnet"))],
            &edits,
        )
        .await;
    let approve = message(&asked)
        .buttons
        .iter()
        .find(|b| b.label == "Approve")
        .unwrap_or_else(|| panic!("{asked:?}"))
        .id
        .clone();
    let clicked = rig.click(sam, &approve, &edits).await;
    assert!(matches!(clicked, Answer::Update(_)), "{clicked:?}");
    let said = edits.wait(1).await[0].text.clone();
    assert!(said.contains("blocked **10.0.0.0/8**"), "{said}");
    nginx.wait_status("10.9.8.7", 403).await;
}

#[tokio::test]
async fn a_deny_list_nginx_refuses_is_rolled_back_with_nginx_own_words() {
    let nginx = TestNginx::start().await;
    let rig = rig(Db::Sqlite, &nginx, "").await;
    run(&rig, "block-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    nginx.wait_status("203.0.113.7", 403).await;
    run(
        &rig,
        "block-ip",
        &[("address", text("203.0.113.20")), ("ttl", text("1s"))],
    )
    .await
    .unwrap();
    let before = nginx.deny_file();

    // Someone left a broken edit elsewhere in nginx's configuration.
    nginx.break_config(true);
    let failed = run(&rig, "block-ip", &[("address", text("203.0.113.8"))])
        .await
        .unwrap();
    assert!(
        failed.contains("203.0.113.8 was not blocked: nginx refused the new deny list, so the previous one was put back and nothing was reloaded")
            && failed.contains("[emerg] unknown directive \"this_is_not_a_directive\""),
        "{failed}"
    );
    assert_eq!(
        nginx.deny_file(),
        before,
        "the previous file is back, byte for byte"
    );
    assert_eq!(rig.count("SELECT COUNT(*) FROM ip_blocks").await, 2);
    assert_eq!(nginx.status("203.0.113.8").await, 200);
    assert_eq!(
        nginx.status("203.0.113.7").await,
        403,
        "nginx kept running as before"
    );

    // An unblock nginx refuses leaves the block in place, in the file and the database.
    let failed = run(&rig, "unblock-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    assert!(
        failed.contains("203.0.113.7 is still blocked: nginx refused"),
        "{failed}"
    );
    assert_eq!(nginx.deny_file(), before);
    assert_eq!(
        rig.count("SELECT COUNT(*) FROM ip_blocks WHERE state = 'active'")
            .await,
        2
    );

    // An expiry nginx refuses: the block stays, the failure is audited once, and it is not
    // tried again at every sweep (only once its claim is stale).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let blocks = &rig.dispatcher.executors().blocks;
    for _ in 0..2 {
        assert_eq!(
            runbot::executors::nginx::expire_due(blocks).await.unwrap(),
            0
        );
    }
    assert_eq!(nginx.deny_file(), before);
    let expiry_failures: Vec<String> = rig
        .trail()
        .await
        .into_iter()
        .filter(|(s, c, who, _)| *s == Step::Failed && c == "unblock-ip" && who == "runbot")
        .filter_map(|(.., why)| why)
        .collect();
    assert_eq!(expiry_failures.len(), 1, "{expiry_failures:?}");
    assert!(
        expiry_failures[0].contains("the block of 203.0.113.20 is due but nginx did not take the list without it: nginx refused"),
        "{}",
        expiry_failures[0]
    );
    assert_eq!(
        rig.count("SELECT COUNT(*) FROM ip_blocks WHERE state = 'active'")
            .await,
        2
    );

    nginx.break_config(false);
    run(&rig, "unblock-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    nginx.wait_status("203.0.113.7", 200).await;
    let failures = rig
        .trail()
        .await
        .iter()
        .filter(|(s, ..)| *s == Step::Failed)
        .count();
    assert_eq!(failures, 3, "each refused change is audited as failed");
}

#[tokio::test]
async fn security_top_ips_counts_failed_logins_and_its_block_button_asks_for_block_ip() {
    let nginx = TestNginx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("security.log");
    let now = chrono::Utc::now();
    let mut lines = String::new();
    let mut line = |mins_ago: i64, event: &str, ip: &str| {
        let t = (now - chrono::Duration::minutes(mins_ago)).to_rfc3339();
        lines.push_str(&format!(
            "{{\"timestamp\":\"{t}\",\"event\":\"{event}\",\"ip_address\":\"{ip}\",\"user\":\"ana\"}}\n"
        ));
    };
    for _ in 0..30 {
        line(300, "login_failure", "192.0.2.200"); // outside the window
    }
    for i in 0..9 {
        line(50 - i, "login_failure", "203.0.113.66");
    }
    for i in 0..4 {
        line(40 - i, "login_failure", "198.51.100.7"); // allow-listed
        line(40 - i, "login_success", "203.0.113.5");
    }
    line(10, "login_failure", "2001:db8::66");
    std::fs::write(&log, lines + "garbage\n").unwrap();
    let rig = rig(
        Db::Sqlite,
        &nginx,
        &format!("[security]\nlog_path = {:?}\n", log.display().to_string()),
    )
    .await;

    let r = read(
        &rig,
        "security",
        &[("report", text("top-ips")), ("window", text("1h"))],
    )
    .await;
    assert!(
        r.text.contains("14 in all, 3 addresses") && r.text.contains("1 unreadable line"),
        "{}",
        r.text
    );
    let table = r.code_block.clone().unwrap();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(
        rows[0].starts_with("203.0.113.66") && rows[0].contains(" 9"),
        "{table}"
    );
    assert!(
        rows[1].starts_with("198.51.100.7") && rows[1].contains("never blocked"),
        "{table}"
    );
    assert!(!table.contains("192.0.2.200"));
    let labels: Vec<&str> = r.buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Block 203.0.113.66", "Block 2001:db8::66"]);

    // The button is a /block-ip request: same policy, same confirmation.
    let edits = Arc::new(Edits::default());
    let clicked = rig.click(devops(), &r.buttons[0].id, &edits).await;
    let said = confirm(&rig, devops(), clicked, &edits).await.unwrap();
    assert!(
        said.contains(
            "blocked **203.0.113.66** with no expiry — 9 failed logins in 1h per security.log"
        ),
        "{said}"
    );
    nginx.wait_status("203.0.113.66", 403).await;
    // Someone without the role gets the policy's answer, not a block.
    let edits = Arc::new(Edits::default());
    let denied = rig
        .click(common::rig::developer(), &r.buttons[1].id, &edits)
        .await;
    assert!(
        message(&denied).text.contains("/block-ip needs"),
        "{denied:?}"
    );
    let again = read(&rig, "security", &[("report", text("top-ips"))]).await;
    assert!(
        again.code_block.unwrap().contains("blocked"),
        "now noted as blocked"
    );
}

/// Blocks that cannot be read make no report: every address would look unblocked and get a
/// Block button.
#[tokio::test]
async fn security_top_ips_without_the_blocks_says_so_and_offers_no_button() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("security.log");
    let t = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    std::fs::write(
        &log,
        format!("{{\"timestamp\":\"{t}\",\"event\":\"login_failure\",\"ip_address\":\"203.0.113.66\"}}\n"),
    )
    .unwrap();
    for db in BOTH {
        let rig = Rig::with_config(
            db,
            &format!("[security]\nlog_path = {:?}\n", log.display().to_string()),
            &[],
            runbot::domain::clock::system_clock(),
        )
        .await;
        rig.execute("ALTER TABLE ip_blocks RENAME TO ip_blocks_gone")
            .await;
        let r = read(&rig, "security", &[("report", text("top-ips"))]).await;
        assert!(
            r.text
                .contains("the blocks cannot be read from the database")
                && r.text.contains("cannot say which addresses are blocked"),
            "{db:?}: {}",
            r.text
        );
        assert!(r.buttons.is_empty(), "{db:?}: {:?}", r.buttons);
        let last = rig.trail().await.pop().unwrap();
        assert_eq!(last.0, Step::Failed, "{db:?}: {last:?}");
    }
}

/// A spray of more sources than runbot counts one by one: the answer says the counts are
/// estimates, the hot sources still come first, and addresses of one IPv6 /64 are one source.
#[tokio::test]
async fn security_top_ips_under_a_spray_says_its_counts_are_estimates() {
    let nginx = TestNginx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("security.log");
    let t = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let line = |ip: &str| {
        format!("{{\"timestamp\":\"{t}\",\"event\":\"login_failure\",\"ip_address\":\"{ip}\"}}\n")
    };
    let mut lines = String::new();
    for i in 0..30_000u32 {
        // Each once, from a /64 of its own.
        lines.push_str(&line(&format!(
            "2001:db8:{:x}:{:x}::1",
            16 + (i >> 16),
            i & 0xffff
        )));
        if i % 300 == 0 {
            lines.push_str(&line("203.0.113.66"));
            lines.push_str(&line(&format!("2001:db8:1:2::{:x}", i + 1)));
        }
    }
    std::fs::write(&log, lines).unwrap();
    let rig = rig(
        Db::Sqlite,
        &nginx,
        &format!("[security]\nlog_path = {:?}\n", log.display().to_string()),
    )
    .await;

    let r = read(&rig, "security", &[("report", text("top-ips"))]).await;
    assert!(
        r.text.contains("30200 in all, about ")
            && r.text.contains(
                "more addresses than the 10000 runbot counts one by one, so counts are estimates"
            )
            && r.text.contains("IPv6 counted by /64 network"),
        "{}",
        r.text
    );
    let table = r.code_block.clone().unwrap();
    let mut first_two: Vec<&str> = table
        .lines()
        .skip(1)
        .take(2)
        .map(|row| row.split_whitespace().next().unwrap())
        .collect();
    first_two.sort();
    assert_eq!(first_two, ["2001:db8:1:2::/64", "203.0.113.66"], "{table}");
    assert_eq!(table.lines().count(), 11, "the ten busiest: {table}");
    let labels: Vec<&str> = r.buttons.iter().map(|b| b.label.as_str()).collect();
    assert!(
        labels.contains(&"Block 2001:db8:1:2::/64") && labels.contains(&"Block 203.0.113.66"),
        "{labels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_block_due_while_runbot_was_down_is_lifted_when_it_starts_and_the_channel_is_told()
{
    use fake_discord::{FakeDiscord, FakeUser};
    use serde_json::json;
    let nginx = TestNginx::start().await;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = common::rig::policies_dir(&fake);
    std::fs::write(
        dir.path().join("runbot.toml"),
        nginx.settings() + &format!("\n[policy]\ndir = \"{}\"\n", policies.display()),
    )
    .unwrap();

    let runbot = Serve::start(dir.path(), &fake).await;
    let interactions = runbot.interactions_url();
    let sam = FakeUser::new(1_300_000_000_000_000_009, "Sam", &["Security"]);
    let sent = fake
        .send_interaction(
            &interactions,
            fake.slash_command(
                "block-ip",
                &[
                    ("address", json!("203.0.113.77")),
                    ("ttl", json!("4s")),
                    ("reason", json!("scanner")),
                ],
                &sam,
                CHANNEL,
            ),
        )
        .await;
    fake.confirm(&interactions, &sent, &sam, CHANNEL).await;
    nginx.wait_status("203.0.113.77", 403).await;
    let blocked_at = std::time::Instant::now();

    // runbot dies before the block is due, and stays down past it.
    drop(runbot);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(blocked_at.elapsed() > Duration::from_secs(4));
    assert_eq!(
        nginx.status("203.0.113.77").await,
        403,
        "nobody lifted it while runbot was down"
    );

    // The next runbot lifts it at start and says so where it was blocked.
    let runbot = Serve::start(dir.path(), &fake).await;
    nginx.wait_status("203.0.113.77", 200).await;
    assert!(nginx.denied().is_empty());
    let said = fake
        .wait_for(
            Duration::from_secs(30),
            "the expiry announced",
            |messages, _| {
                messages
                    .iter()
                    .find(|m| m.content().contains("expired"))
                    .map(|m| (m.channel_id.clone(), m.content().to_string()))
            },
        )
        .await;
    assert_eq!(said.0, CHANNEL.to_string());
    assert!(
        said.1
            .contains("The block of **203.0.113.77** by **Sam** (scanner) expired"),
        "{}",
        said.1
    );
    common::assert_audit_verifies(dir.path());
    drop(runbot);
}

/// nginx in a container of the stack (runbot-test/nginx:v1: the host's nginx-light in an
/// image of its own, see scripts/test-images), its config and deny file on a bind mount shared
/// with runbot; `nginx -t` and `nginx -s reload` run in it through the engine's exec API.
#[tokio::test]
async fn in_container_mode_nginx_is_tested_and_reloaded_inside_its_container_through_docker_exec() {
    use common::docker::{docker_host, Project};
    let nginx = TestNginx::files(Some("/run/nginx.pid"));
    let p = Project::new().await;
    let dir = nginx.dir.display().to_string();
    let mut cmd = vec!["/usr/sbin/nginx".to_string()];
    cmd.extend(nginx.args(&["-g", "daemon off;"]));
    p.run("nginx", "runbot-test/nginx:v1", 1, |c| {
        c.cmd = Some(cmd);
        let host = c.host_config.as_mut().unwrap();
        // The host's network, so the test reaches it on 127.0.0.1 (the engine has no bridge).
        host.network_mode = Some("host".into());
        host.binds = Some(vec![format!("{dir}:{dir}")]);
        c.stop_timeout = Some(1);
    })
    .await;
    nginx.wait_listening().await;
    let settings = format!(
        "[docker]\nhost = {:?}\nproject = {:?}\ntimeout_secs = 20\n\n{}\nservice = \"nginx\"\n",
        docker_host(),
        p.name,
        nginx.settings_for("container", "/usr/sbin/nginx"),
    );
    let rig = Rig::with_config(
        Db::Sqlite,
        &settings,
        &[],
        runbot::domain::clock::system_clock(),
    )
    .await;
    assert_eq!(nginx.status("203.0.113.7").await, 200);
    let said = run(&rig, "block-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    assert!(said.contains("nginx checked and reloaded"), "{said}");
    nginx.wait_status("203.0.113.7", 403).await;

    // nginx -t fails inside the container: its own words come back and the file is restored.
    let before = nginx.deny_file();
    nginx.break_config(true);
    let failed = run(&rig, "block-ip", &[("address", text("203.0.113.8"))])
        .await
        .unwrap();
    assert!(
        failed.contains("nginx refused the new deny list")
            && failed.contains("unknown directive \"this_is_not_a_directive\""),
        "{failed}"
    );
    assert_eq!(nginx.deny_file(), before);
    nginx.break_config(false);

    run(&rig, "unblock-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    nginx.wait_status("203.0.113.7", 200).await;
}

/// The stack's own networks come from Docker: blocking them would make nginx refuse the
/// stack's own traffic. Refused when it would run, and nothing changes.
#[tokio::test]
async fn the_stack_own_networks_and_containers_are_never_blocked() {
    use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
    use common::docker::{docker_host, Project};
    let nginx = TestNginx::start().await;
    let p = Project::new().await;
    let subnet = format!("172.31.{}.0/24", 20 + std::process::id() % 200);
    let network = format!("{}_default", p.name);
    p.docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = p
        .run("worker", "runbot-test/worker:v1", 1, |c| {
            c.host_config.as_mut().unwrap().network_mode = Some(network.clone());
            c.stop_timeout = Some(1);
        })
        .await;
    let ip = p
        .docker
        .inspect_container(&id, None)
        .await
        .unwrap()
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get(&network).and_then(|e| e.ip_address.clone()))
        .expect("an address on the stack's network");
    let settings = format!(
        "[docker]\nhost = {:?}\nproject = {:?}\n\n{}",
        docker_host(),
        p.name,
        nginx.settings()
    );
    let rig = Rig::with_config(
        Db::Sqlite,
        &settings,
        &[],
        runbot::domain::clock::system_clock(),
    )
    .await;
    let before = nginx.deny_file();
    for address in [ip.as_str(), subnet.as_str()] {
        let failed = run(&rig, "block-ip", &[("address", text(address))])
            .await
            .unwrap();
        assert!(
            failed.contains(&format!(
                "overlaps {subnet}, a network of the stack's own containers"
            )) && failed.contains("Nothing was changed"),
            "{address}: {failed}"
        );
    }
    assert_eq!(nginx.deny_file(), before);
    // Anything else still goes through.
    run(&rig, "block-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    nginx.wait_status("203.0.113.7", 403).await;
    drop(p);
    let engine = common::docker::engine().await;
    let _ = engine.remove_network(&network).await;
}

/// Two runbots on one database, each on its own host with its own nginx and deny file:
/// web-1 and web-2, following the database every second.
async fn two_hosts(db: Db) -> (TestNginx, Rig, TestNginx, Rig) {
    let nginx_1 = TestNginx::start().await;
    let web_1 = Rig::with_config(
        db,
        &nginx_1.settings_as("web-1"),
        &[],
        runbot::domain::clock::system_clock(),
    )
    .await;
    let nginx_2 = TestNginx::start().await;
    let web_2 = Rig::replica_of(&web_1, &nginx_2.settings_as("web-2")).await;
    (nginx_1, web_1, nginx_2, web_2)
}

/// A host whose runbot last reported `ago` (by the database's clock: this machine's).
async fn silent_host(rig: &Rig, host_id: &str, ago: chrono::Duration) {
    let then = (chrono::Utc::now() - ago)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    rig.count(&format!(
        "INSERT INTO nginx_hosts (host_id, applied, blocks, applied_at, seen_at) \
         VALUES ('{host_id}', 'an-old-list', 0, '{then}', '{then}') RETURNING CAST(1 AS BIGINT)"
    ))
    .await;
}

/// Asks `/blocked` until its text holds every one of `want` (hosts report within a pass).
async fn blocked_until(rig: &Rig, want: &[&str]) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = read(rig, "blocked", &[]).await;
        if want.iter().all(|w| r.text.contains(w)) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/blocked never said {want:?}; last: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_made_through_one_runbot_is_applied_on_every_host_and_blocked_names_them() {
    for db in BOTH {
        let (nginx_1, web_1, nginx_2, web_2) = two_hosts(db).await;
        // A replica replaced over a week ago is forgotten when a runbot starts following.
        silent_host(&web_1, "web-0", chrono::Duration::days(8)).await;
        // Each runbot follows the database as `runbot serve` has it do.
        let followers = runbot::workers::Workers::new();
        for r in [&web_1, &web_2] {
            start_following(&followers, &r.dispatcher.executors().blocks);
        }
        let attacker = "203.0.113.7";
        blocked_until(&web_1, &["Applied on web-1 (", " and web-2 ("]).await;
        assert_eq!(
            web_1
                .count("SELECT COUNT(*) FROM nginx_hosts WHERE host_id = 'web-0'")
                .await,
            0,
            "{db:?}"
        );

        let said = run(&web_1, "block-ip", &[("address", text(attacker))])
            .await
            .unwrap();
        assert!(
            said.contains("nginx checked and reloaded") && said.contains("web-2 follows within 1s"),
            "{db:?}: {said}"
        );
        nginx_1.wait_status(attacker, 403).await;
        // Nobody asks web-2's runbot anything: its nginx follows by itself.
        let asked = std::time::Instant::now();
        nginx_2.wait_status(attacker, 403).await;
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{db:?}: web-2 took {:?}",
            asked.elapsed()
        );
        assert_eq!(nginx_2.deny_file(), nginx_1.deny_file(), "{db:?}");
        let listed = blocked_until(&web_2, &["Applied on web-1 (", " and web-2 ("]).await;
        assert!(
            listed
                .text
                .starts_with("1 address blocked in nginx. Applied on web-1 (")
                && !listed.text.contains('⚠'),
            "{db:?}: {}",
            listed.text
        );
        assert!(listed.code_block.unwrap().contains(attacker));

        // Passes with nothing to do write nothing and reload nothing.
        let (written, workers) = (nginx_2.deny_mtime(), nginx_2.worker_pids());
        assert_eq!(workers.len(), 1, "{db:?}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            nginx_2.deny_mtime(),
            written,
            "{db:?}: the file was rewritten"
        );
        assert_eq!(nginx_2.worker_pids(), workers, "{db:?}: nginx was reloaded");
        assert_eq!(
            follow(&web_2.dispatcher.executors().blocks).await.unwrap(),
            Followed::Unchanged
        );

        // An unblock through web-2 is followed by web-1.
        let said = run(&web_2, "unblock-ip", &[("address", text(attacker))])
            .await
            .unwrap();
        assert!(
            said.contains("unblocked **203.0.113.7**") && said.contains("web-1 follows within 1s"),
            "{db:?}: {said}"
        );
        nginx_2.wait_status(attacker, 200).await;
        nginx_1.wait_status(attacker, 200).await;
        assert!(nginx_1.denied().is_empty(), "{db:?}");
        let listed = blocked_until(&web_1, &["Applied on web-1 (", " and web-2 ("]).await;
        assert!(
            listed.text.starts_with("No address is blocked"),
            "{db:?}: {}",
            listed.text
        );
        assert!(followers.stop(Duration::from_secs(5)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_nginx_refuses_the_list_keeps_the_old_one_and_blocked_shows_nginx_words() {
    let (nginx_1, web_1, nginx_2, web_2) = two_hosts(Db::Postgres).await;
    // No loops here: the test makes each host's passes itself, to see each outcome.
    let (ex_1, ex_2) = (
        &web_1.dispatcher.executors().blocks,
        &web_2.dispatcher.executors().blocks,
    );
    run(&web_1, "block-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    assert_eq!(
        follow(ex_2).await.unwrap(),
        Followed::Applied { entries: 1 }
    );
    nginx_2.wait_status("203.0.113.7", 403).await;
    let before = nginx_2.deny_file();

    // Someone left a broken edit in web-2's nginx configuration; web-1 is fine.
    nginx_2.break_config(true);
    run(&web_1, "block-ip", &[("address", text("203.0.113.8"))])
        .await
        .unwrap();
    nginx_1.wait_status("203.0.113.8", 403).await;
    let Followed::Refused(why) = follow(ex_2).await.unwrap() else {
        panic!("web-2's nginx took a list with its config broken");
    };
    assert!(
        why.contains("nginx refused the new deny list")
            && why.contains("unknown directive \"this_is_not_a_directive\""),
        "{why}"
    );
    assert_eq!(nginx_2.deny_file(), before, "the old list, byte for byte");
    assert_eq!(nginx_2.status("203.0.113.8").await, 200);
    assert_eq!(
        nginx_2.status("203.0.113.7").await,
        403,
        "nginx runs as before"
    );
    // The same list is not tried again at every pass.
    let written = nginx_2.deny_mtime();
    assert_eq!(follow(ex_2).await.unwrap(), Followed::Postponed);
    assert_eq!(nginx_2.deny_mtime(), written);

    // A host that has not reported for long (its runbot is down) is named as such.
    silent_host(&web_1, "web-3", chrono::Duration::hours(1)).await;

    let listed = read(&web_1, "blocked", &[]).await;
    let lines: Vec<&str> = listed.text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", listed.text);
    assert!(
        lines[0].starts_with("2 addresses blocked in nginx. Applied on web-1 (")
            && !lines[0].contains("web-2"),
        "{}",
        listed.text
    );
    assert!(
        lines[1].starts_with("⚠ web-2 has not applied the last change (last applied ")
            && lines[1].contains("nginx refused the new deny list")
            && lines[1].contains("unknown directive \"this_is_not_a_directive\""),
        "{}",
        listed.text
    );
    assert!(
        lines[2].starts_with("⚠ web-3 has not reported for 1h 0m")
            && lines[2].contains("has an older list"),
        "{}",
        listed.text
    );
    let said = run(&web_1, "block-ip", &[("address", text("203.0.113.9"))])
        .await
        .unwrap();
    assert!(
        said.contains("web-2 follows within 1s")
            && said
                .contains("⚠ Not following until their runbot is back: web-3 (silent for 1h 0m)"),
        "{said}"
    );

    // Mended, web-2 takes the current list at once when it changes; web-1 follows web-2.
    nginx_2.break_config(false);
    run(&web_2, "unblock-ip", &[("address", text("203.0.113.7"))])
        .await
        .unwrap();
    nginx_2.wait_status("203.0.113.8", 403).await;
    nginx_2.wait_status("203.0.113.7", 200).await;
    assert_eq!(
        follow(ex_1).await.unwrap(),
        Followed::Applied { entries: 2 }
    );
    nginx_1.wait_status("203.0.113.7", 200).await;
    assert_eq!(nginx_1.deny_file(), nginx_2.deny_file());
    let listed = read(&web_1, "blocked", &[]).await;
    let lines: Vec<&str> = listed.text.lines().collect();
    assert!(
        lines[0].contains("Applied on web-1 (") && lines[0].contains(" and web-2 ("),
        "{}",
        listed.text
    );
    assert!(
        lines[1].starts_with("⚠ web-3 has not reported"),
        "{}",
        listed.text
    );
    assert_eq!(lines.len(), 2, "{}", listed.text);
}
