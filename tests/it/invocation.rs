//! The invocation core with the shipped commands and policies, a real database and a real
//! Alertmanager: confirmation, approval (self-approval refused), expiry on tokio's paused
//! clock, dry runs, rate limits, acknowledgements and silences. Every refusal leaves exactly
//! one audit row and changes nothing else.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::rig::{
    backend, button, cto, developer, devops, message, person, text, Capture, Edits, Rig,
};
use common::{Alertmanager, Db, BOTH};
use runbot::audit::Step;
use runbot::domain::clock::Clock;
use runbot::request::RawValue;
use runbot::request::{Actor, Answer, Origin, Request};
use serde_json::Value;

/// Who asks, the command, its options, the audit step and what the answer says.
type Case = (
    Actor,
    &'static str,
    Vec<(&'static str, RawValue)>,
    Step,
    &'static str,
);

fn system() -> Clock {
    runbot::domain::clock::system_clock()
}

#[tokio::test]
async fn refusals_are_audited_once_and_change_nothing() {
    for db in BOTH {
        let rig = Rig::new(db, &[], system()).await;
        let edits = Arc::new(Edits::default());
        let cases: Vec<Case> = vec![
            (
                devops(),
                "reboot-everything",
                vec![],
                Step::Invalid,
                "no command /reboot-everything",
            ),
            (
                devops(),
                "restat",
                vec![],
                Step::Invalid,
                "Did you mean /restart?",
            ),
            (
                devops(),
                "restart",
                vec![("service", text("mysql"))],
                Step::Invalid,
                "service must be one of",
            ),
            (
                devops(),
                "restart",
                vec![("service", text("backend; rm -rf /"))],
                Step::Invalid,
                "may not contain",
            ),
            (
                devops(),
                "block-ip",
                vec![("address", text("123.456.789.0"))],
                Step::Invalid,
                "\"123.456.789.0\" is not a valid IPv4 address: each of its four numbers must be 0 to 255, and 456 is not",
            ),
            (
                devops(),
                "silence",
                vec![("group", RawValue::Integer(999))],
                Step::Invalid,
                "no alert group #999",
            ),
            (
                devops(),
                "ack",
                vec![],
                Step::Invalid,
                "needs an alert group",
            ),
            (
                developer(),
                "restart",
                vec![("service", text("backend"))],
                Step::Denied,
                "/restart needs",
            ),
            (
                person("199999999999999999", "Stranger"),
                "status",
                vec![],
                Step::Denied,
                "no runbot role",
            ),
        ];
        let n = cases.len();
        for (actor, command, args, step, says) in cases {
            let answer = rig.ask(actor, command, &args, &edits).await;
            let reply = message(&answer);
            assert!(reply.ephemeral, "refusals go only to the requester");
            assert!(
                reply.text.contains(says),
                "{command}: {:?} lacks {says:?}",
                reply.text
            );
            assert!(reply.buttons.is_empty());
            let trail = rig.trail().await;
            assert_eq!(trail.last().unwrap().0, step, "{command}: {trail:?}");
        }
        let trail = rig.trail().await;
        assert_eq!(trail.len(), n, "one row per refusal: {trail:?}");
        assert!(trail.iter().all(|r| r.3.is_some()), "each refusal says why");
        assert_eq!(rig.count("SELECT COUNT(*) FROM pending_requests").await, 0);
        assert_eq!(
            rig.count("SELECT COUNT(*) FROM alert_groups WHERE acknowledged_by IS NOT NULL")
                .await,
            0
        );
        assert!(edits.replies.lock().unwrap().is_empty(), "nothing ran");
        assert_eq!(rig.audit.verify().await.unwrap().rows, n as u64);
    }
}

#[tokio::test]
async fn confirmation_belongs_to_the_requester_and_cancel_runs_nothing() {
    for db in BOTH {
        let rig = Rig::new(db, &[], system()).await;
        let edits = Arc::new(Edits::default());
        // /restart needs confirming.
        let prompt = rig
            .ask(
                backend(),
                "restart",
                &[("service", text("backend"))],
                &edits,
            )
            .await;
        let prompt = message(&prompt).clone();
        assert!(prompt.ephemeral);
        assert!(
            prompt.text.contains("/restart") && prompt.text.contains("Confirm within"),
            "{}",
            prompt.text
        );
        let confirm = button(&prompt, "Confirm");
        let cancel = button(&prompt, "Cancel");

        // Somebody else cannot answer it.
        let other = rig.click(devops(), &confirm, &edits).await;
        assert!(
            message(&other).text.contains("Only Bruno can confirm"),
            "{other:?}"
        );

        let done = rig.click(backend(), &cancel, &edits).await;
        let Answer::Update(r) = &done else {
            panic!("{done:?}")
        };
        assert!(
            r.text.contains("cancelled by Bruno") && r.buttons.is_empty(),
            "{}",
            r.text
        );
        // A second click on the answered prompt does nothing.
        let again = rig.click(backend(), &confirm, &edits).await;
        assert!(
            message(&again).text.contains("already cancelled"),
            "{again:?}"
        );

        // Confirmed this time: it runs (and, with no Docker project set, says what to set).
        let prompt = rig
            .ask(backend(), "restart", &[("service", text("worker"))], &edits)
            .await;
        let confirm = button(message(&prompt), "Confirm");
        let running = rig.click(backend(), &confirm, &edits).await;
        let Answer::Update(r) = &running else {
            panic!("{running:?}")
        };
        assert!(r.text.contains("Confirmed by Bruno"), "{}", r.text);
        let result = edits.wait(1).await;
        assert!(
            result[0].text.contains("set docker.project"),
            "{:?}",
            result[0]
        );

        let steps: Vec<Step> = rig.trail().await.into_iter().map(|r| r.0).collect();
        assert_eq!(
            steps,
            [
                Step::Requested,
                Step::Denied,
                Step::Cancelled,
                Step::Invalid,
                Step::Requested,
                Step::Confirmed,
                Step::Started,
                Step::Failed
            ],
            "on {db:?}"
        );
    }
}

/// A Sev1 group: silencing it needs a second person with devops-lead or cto; the silence is
/// then made in a real Alertmanager, which reports the group's alert as silenced by it.
#[tokio::test]
async fn sev1_silence_needs_a_second_approver_then_alertmanager_silences_it() {
    let am = Alertmanager::start("route:\n  receiver: none\nreceivers:\n  - name: none\n").await;
    am.push(serde_json::json!([{
        "labels": { "alertname": "APIDown", "severity": "critical" },
        "annotations": { "summary": "API down" },
    }]))
    .await;
    for db in BOTH {
        let rig = Rig::new(db, &[("RUNBOT__ALERTMANAGER__URL", &am.url)], system()).await;
        let group = rig.group("APIDown", "sev1").await;
        let edits = Arc::new(Edits::default());
        let asked = rig
            .ask(
                devops(),
                "silence",
                &[
                    ("group", RawValue::Integer(group)),
                    ("duration", text("2h")),
                    ("comment", text("deploying a fix")),
                ],
                &edits,
            )
            .await;
        let prompt = message(&asked).clone();
        assert!(!prompt.ephemeral, "approvers must see it");
        assert!(
            prompt.text.contains("devops-lead or cto")
                || prompt.text.contains("cto or devops-lead"),
            "{}",
            prompt.text
        );
        let approve = button(&prompt, "Approve");

        rig.approval_refused_to_self_and_developer(devops(), &approve, &edits)
            .await;
        assert_eq!(silences(&am).await, 0, "nothing made before approval");

        let approved = rig.click(cto(), &approve, &edits).await;
        let Answer::Update(r) = &approved else {
            panic!("{approved:?}")
        };
        assert!(
            r.text.contains("approved by Carla") && r.buttons.is_empty(),
            "{}",
            r.text
        );
        let result = edits.wait(1).await;
        assert!(
            result[0].text.contains("silenced APIDown"),
            "{:?}",
            result[0]
        );

        let id = silence_id(&result[0].text);
        let s: Value = reqwest::get(format!("{}/api/v2/silence/{id}", am.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(s["status"]["state"], "active");
        assert_eq!(s["comment"], "deploying a fix");
        assert_eq!(s["createdBy"], "Dana via runbot");
        assert_eq!(s["matchers"][0]["name"], "alertname");
        assert_eq!(s["matchers"][0]["value"], "APIDown");
        let ends = DateTime::parse_from_rfc3339(s["endsAt"].as_str().unwrap()).unwrap();
        let left = ends.with_timezone(&Utc) - Utc::now();
        assert!(
            left > chrono::Duration::minutes(118) && left <= chrono::Duration::minutes(120),
            "{left}"
        );
        // Alertmanager itself now treats the alert as silenced by it.
        let alerts: Value = reqwest::get(format!(
            "{}/api/v2/alerts?filter=alertname%3D%22APIDown%22",
            am.url
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(alerts[0]["status"]["state"], "suppressed", "{alerts}");
        assert!(alerts[0]["status"]["silencedBy"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == id.as_str()));
        let view = rig.store.group_view(group).await.unwrap().unwrap();
        assert_eq!(view.silence_id.as_deref(), Some(id.as_str()));
        assert_eq!(view.silenced_by.as_deref(), Some("Dana"));

        // /unsilence by group number: lifting a silence changes nothing in the stack, so
        // even on Sev1 it needs no second person.
        let asked = rig
            .ask(
                cto(),
                "unsilence",
                &[("group", RawValue::Integer(group))],
                &edits,
            )
            .await;
        assert_eq!(asked, Answer::Deferred { ephemeral: false });
        let result = edits.wait(2).await;
        assert!(
            result[1].text.contains("removed silence"),
            "{:?}",
            result[1]
        );
        let s: Value = reqwest::get(format!("{}/api/v2/silence/{id}", am.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(s["status"]["state"], "expired");
        assert!(rig
            .store
            .group_view(group)
            .await
            .unwrap()
            .unwrap()
            .silence_id
            .is_none());

        let steps: Vec<(Step, String)> =
            rig.trail().await.into_iter().map(|r| (r.0, r.2)).collect();
        assert_eq!(
            steps.iter().map(|s| s.0).collect::<Vec<_>>(),
            [
                Step::Requested,
                Step::Denied,
                Step::Denied,
                Step::Approved,
                Step::Started,
                Step::Succeeded,
                Step::Requested,
                Step::Started,
                Step::Succeeded
            ]
        );
        assert_eq!(
            steps[3].1, "100000000000000002",
            "the approval row names the approver"
        );
        assert!(rig.audit.verify().await.is_ok());
    }
}

/// The group is read again when an approved request runs: when the database cannot give it,
/// nothing runs (a silence without its group's labels would silence nothing, or the wrong
/// thing) and the trail says why.
#[tokio::test]
async fn an_approved_request_whose_group_cannot_be_read_runs_nothing() {
    let am = Alertmanager::start("route:\n  receiver: none\nreceivers:\n  - name: none\n").await;
    for db in BOTH {
        let rig = Rig::new(db, &[("RUNBOT__ALERTMANAGER__URL", &am.url)], system()).await;
        let group = rig.group("APIDown", "sev1").await;
        let edits = Arc::new(Edits::default());
        let asked = rig
            .ask(
                devops(),
                "silence",
                &[
                    ("group", RawValue::Integer(group)),
                    ("duration", text("1h")),
                ],
                &edits,
            )
            .await;
        let approve = button(message(&asked), "Approve");
        rig.execute("ALTER TABLE alert_groups RENAME TO alert_groups_gone")
            .await;

        let approved = rig.click(cto(), &approve, &edits).await;
        assert!(matches!(approved, Answer::Update(_)), "{approved:?}");
        let result = edits.wait(1).await;
        assert!(
            result[0].text.contains(&format!(
                "cannot read alert group #{group} from its database right now; nothing was run"
            )),
            "{db:?}: {:?}",
            result[0]
        );
        assert_eq!(silences(&am).await, 0, "{db:?}: nothing silenced");
        let trail = rig.trail().await;
        let steps: Vec<Step> = trail.iter().map(|r| r.0).collect();
        assert_eq!(
            steps,
            [Step::Requested, Step::Approved, Step::Started, Step::Failed],
            "{db:?}"
        );
        assert!(
            trail[3].3.as_deref().unwrap().contains("nothing was run"),
            "{db:?}: {:?}",
            trail[3]
        );
    }
}

/// The prompt sweep reports a database that refuses the expiry instead of finding nothing to
/// do, and expires the prompt once the database takes it.
#[tokio::test]
async fn a_prompt_sweep_the_database_refuses_fails_loudly_and_expires_the_prompt_later() {
    for db in BOTH {
        let later = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let skipped = later.clone();
        let clock: Clock = Arc::new(move || {
            let ahead = if skipped.load(std::sync::atomic::Ordering::SeqCst) {
                chrono::Duration::minutes(30)
            } else {
                chrono::Duration::zero()
            };
            Utc::now() + ahead
        });
        let rig = Rig::new(db, &[], clock).await;
        let edits = Arc::new(Edits::default());
        let prompt = rig
            .ask(
                backend(),
                "restart",
                &[("service", text("backend"))],
                &edits,
            )
            .await;
        button(message(&prompt), "Confirm");
        let (refuse, allow) = match db {
            Db::Sqlite => (
                "CREATE TRIGGER refuse_pending BEFORE UPDATE ON pending_requests \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
                "DROP TRIGGER refuse_pending;",
            ),
            Db::Postgres => (
                "CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
                 CREATE TRIGGER refuse_pending BEFORE UPDATE ON pending_requests \
                 FOR EACH ROW EXECUTE FUNCTION refuse_write();",
                "DROP TRIGGER refuse_pending ON pending_requests;",
            ),
        };
        rig.execute(refuse).await;
        later.store(true, std::sync::atomic::Ordering::SeqCst);

        let swept = rig.dispatcher.expire_overdue().await;
        let e = swept.expect_err("a refused expiry is an error, not zero prompts");
        assert!(e.to_string().contains("injected failure"), "{db:?}: {e}");
        assert_eq!(
            rig.count("SELECT COUNT(*) FROM pending_requests WHERE state = 'pending'")
                .await,
            1,
            "{db:?}"
        );

        rig.execute(allow).await;
        assert_eq!(rig.dispatcher.expire_overdue().await.unwrap(), 1, "{db:?}");
        let steps: Vec<Step> = rig.trail().await.into_iter().map(|r| r.0).collect();
        assert_eq!(steps, [Step::Requested, Step::Expired], "{db:?}");
    }
}

/// `alertmanager.url` may carry basic-auth credentials (reqwest sends them); when Alertmanager
/// cannot be reached, the answer and the audit trail name it without them.
#[tokio::test]
async fn alertmanager_credentials_appear_in_no_answer_and_no_audit_row() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://am:hunter2@127.0.0.1:{port}");
    for db in BOTH {
        let rig = Rig::new(db, &[("RUNBOT__ALERTMANAGER__URL", &url)], system()).await;
        let group = rig.group("HighErrorRate", "sev3").await;
        let edits = Arc::new(Edits::default());
        let mut said = Vec::new();
        for (command, args) in [
            ("silence", vec![("group", RawValue::Integer(group))]),
            (
                "unsilence",
                vec![("silence_id", text("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"))],
            ),
        ] {
            let mut answer = rig.ask(devops(), command, &args, &edits).await;
            if let Answer::Message(r) = &answer {
                if r.buttons.iter().any(|b| b.label == "Confirm") {
                    said.push(r.text.clone());
                    answer = rig.click(devops(), &button(r, "Confirm"), &edits).await;
                }
            }
            if let Answer::Message(r) | Answer::Update(r) = &answer {
                said.push(r.text.clone());
            }
        }
        let results = edits.wait(2).await;
        for r in &results {
            assert!(
                r.text.contains(&format!(
                    "Alertmanager at http://127.0.0.1:{port} cannot be reached"
                )),
                "{db:?}: {r:?}"
            );
        }
        said.extend(results.iter().map(|r| format!("{r:?}")));
        let rows = rig
            .audit
            .recent(10_000, &runbot::audit::AuditFilter::default())
            .await
            .unwrap();
        assert_eq!(
            rows.iter().filter(|r| r.step == Step::Failed).count(),
            2,
            "{db:?}: {rows:?}"
        );
        said.extend(rows.iter().map(|r| serde_json::to_string(r).unwrap()));
        for text in &said {
            assert!(
                !text.contains("hunter2") && !text.contains("am:"),
                "{db:?}: {text}"
            );
        }
    }
}

async fn silences(am: &Alertmanager) -> usize {
    let all: Value = reqwest::get(format!("{}/api/v2/silences", am.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"]["state"] == "active")
        .count()
}

fn silence_id(text: &str) -> String {
    let start = text.find('`').unwrap() + 1;
    let end = start + text[start..].find('`').unwrap();
    text[start..end].to_string()
}

#[tokio::test]
async fn a_dry_run_says_what_it_would_do_and_changes_nothing() {
    let am = Alertmanager::start("route:\n  receiver: none\nreceivers:\n  - name: none\n").await;
    let rig = Rig::new(
        Db::Sqlite,
        &[("RUNBOT__ALERTMANAGER__URL", &am.url)],
        system(),
    )
    .await;
    let group = rig.group("HighErrorRate", "sev2").await;
    let edits = Arc::new(Edits::default());
    let answer = rig
        .ask(
            devops(),
            "silence",
            &[
                ("group", RawValue::Integer(group)),
                ("dry_run", RawValue::Boolean(true)),
            ],
            &edits,
        )
        .await;
    let r = message(&answer);
    assert!(
        r.text.contains("Dry run")
            && r.text.contains("alertname=\"HighErrorRate\"")
            && r.text.contains("for 1 h"),
        "{}",
        r.text
    );
    assert_eq!(silences(&am).await, 0);
    let steps: Vec<Step> = rig.trail().await.into_iter().map(|r| r.0).collect();
    assert_eq!(steps, [Step::Requested, Step::DryRun]);
}

#[tokio::test]
async fn ack_from_the_card_button_marks_the_group_once() {
    for db in BOTH {
        let rig = Rig::new(db, &[], system()).await;
        let group = rig.group("APIDown", "sev1").await;
        let edits = Arc::new(Edits::default());
        // The APIDown card's fifth button is Acknowledge (commands/alerts.toml).
        let answer = rig
            .click(backend(), &format!("rb1:{group}:4"), &edits)
            .await;
        assert_eq!(
            answer,
            Answer::Deferred { ephemeral: false },
            "an ack needs no approval, even on Sev1"
        );
        let done = edits.wait(1).await;
        assert!(
            done[0].text.contains("Bruno** acknowledged APIDown"),
            "{:?}",
            done[0]
        );
        let view = rig.store.group_view(group).await.unwrap().unwrap();
        assert_eq!(view.acknowledged_by.as_deref(), Some("Bruno"));
        assert!(view.acknowledged_at.is_some());

        rig.click(devops(), &format!("rb1:{group}:4"), &edits).await;
        let done = edits.wait(2).await;
        assert!(
            done[1].text.contains("already acknowledged by Bruno"),
            "{:?}",
            done[1]
        );
        assert_eq!(
            rig.store
                .group_view(group)
                .await
                .unwrap()
                .unwrap()
                .acknowledged_by
                .as_deref(),
            Some("Bruno")
        );

        // A stale button of a group that does not exist.
        let gone = rig.click(backend(), "rb1:424242:0", &edits).await;
        assert!(
            message(&gone).text.contains("no longer matches"),
            "{gone:?}"
        );
        let forged = rig.click(backend(), "rb9:what", &edits).await;
        assert!(
            message(&forged).text.contains("not one runbot knows"),
            "{forged:?}"
        );
    }
}

#[tokio::test]
async fn oncall_and_audit_answer_the_requester() {
    let rig = Rig::new(Db::Sqlite, &[], system()).await;
    let edits = Arc::new(Edits::default());
    assert_eq!(
        rig.ask(developer(), "oncall", &[], &edits).await,
        Answer::Deferred { ephemeral: true }
    );
    let r = edits.wait(1).await;
    let devops_field = r[0]
        .fields
        .iter()
        .find(|(k, _)| k.starts_with("devops-lead"))
        .expect("devops-lead listed");
    assert!(devops_field.0.contains("on call"), "{devops_field:?}");
    // Before the shipped rotation's first turn (2026-12-07 09:00 UTC) the role's holders are
    // named by their ids; from then on, whose turn it is, until when, and who is next.
    assert!(
        devops_field.1.contains("<@100000000000000001>")
            || (["Ana", "Luis"]
                .iter()
                .any(|p| devops_field.1.starts_with(p))
                && devops_field.1.contains(" · until ")
                && devops_field.1.contains(" · next: ")),
        "{devops_field:?}"
    );

    let denied = rig.ask(developer(), "audit", &[], &edits).await;
    assert!(message(&denied).text.contains("/audit needs"), "{denied:?}");
    rig.ask(
        devops(),
        "audit",
        &[("limit", RawValue::Integer(10))],
        &edits,
    )
    .await;
    let r = edits.wait(2).await;
    let block = r[1].code_block.as_deref().unwrap();
    assert!(
        block.contains("denied") && block.contains("/audit by Dev"),
        "{block}"
    );
}

#[tokio::test]
async fn past_the_per_user_limit_requests_are_refused_politely() {
    let rig = Rig::new(
        Db::Sqlite,
        &[
            ("RUNBOT__INTERACTIONS__PER_USER_PER_MINUTE", "2"),
            ("RUNBOT__INTERACTIONS__PER_USER_BURST", "2"),
        ],
        system(),
    )
    .await;
    let edits = Arc::new(Edits::default());
    for _ in 0..2 {
        assert!(matches!(
            rig.ask(devops(), "status", &[], &edits).await,
            Answer::Deferred { .. }
        ));
    }
    let third = rig.ask(devops(), "status", &[], &edits).await;
    let r = message(&third);
    assert!(
        r.ephemeral && r.text.contains("at most 2 a minute"),
        "{}",
        r.text
    );
    // Someone else is not held back.
    assert!(matches!(
        rig.ask(backend(), "status", &[], &edits).await,
        Answer::Deferred { .. }
    ));
    let trail = rig.trail().await;
    assert!(trail
        .iter()
        .any(|r| r.0 == Step::RateLimited && r.2 == "100000000000000001"));
}

/// A flood of requests past the limit is refused one by one, but audited as two rows per person
/// and window (the first at once, then one with the count), not one row each under the trail's
/// lock; made-up command names are counted, not kept; the limiter forgets idle people.
#[tokio::test]
async fn a_flood_past_the_limit_is_audited_as_a_count_not_a_row_each() {
    for db in BOTH {
        let rig = Rig::new(
            db,
            &[
                ("RUNBOT__INTERACTIONS__PER_USER_PER_MINUTE", "2"),
                ("RUNBOT__INTERACTIONS__PER_USER_BURST", "2"),
            ],
            system(),
        )
        .await;
        let edits = Arc::new(Edits::default());
        for i in 0..300 {
            let command = if i % 3 == 0 {
                format!("made-up-{i}")
            } else {
                "status".to_string()
            };
            let answer = rig.ask(developer(), &command, &[], &edits).await;
            if i >= 2 {
                assert!(
                    message(&answer)
                        .text
                        .contains("faster than runbot takes them"),
                    "{i}: {answer:?}"
                );
            }
        }
        let limited = |trail: &[(Step, String, String, Option<String>)]| {
            trail.iter().filter(|r| r.0 == Step::RateLimited).count()
        };
        assert_eq!(limited(&rig.trail().await), 1, "the first refusal, at once");
        assert_eq!(
            rig.dispatcher.flush_rate_limited(false).await,
            0,
            "the window is open"
        );
        assert_eq!(rig.dispatcher.flush_rate_limited(true).await, 1);
        let rows = rig.audit_records().await;
        let summary = rows.iter().rfind(|r| r.step == Step::RateLimited).unwrap();
        assert!(
            summary
                .reason
                .as_deref()
                .unwrap()
                .starts_with("297 more requests refused"),
            "{summary:?}"
        );
        let detail = summary.detail.as_ref().unwrap();
        assert_eq!(detail["repeated"], 297);
        let commands = detail["commands"].as_object().unwrap();
        assert!(commands.len() <= 21, "{commands:?}");
        let counted: u64 = commands.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(counted, 297);
        assert_eq!(limited(&rig.trail().await), 2);
        assert!(runbot::audit::Audit::new(rig.store.clone())
            .verify()
            .await
            .unwrap()
            .problem
            .is_none());
    }
}

/// The limiter keeps a little state per person; people who stopped asking are forgotten.
#[tokio::test]
async fn the_rate_limiter_forgets_people_who_stopped_asking() {
    let rig = Rig::new(
        Db::Sqlite,
        &[
            ("RUNBOT__INTERACTIONS__PER_USER_PER_MINUTE", "6000"),
            ("RUNBOT__INTERACTIONS__PER_USER_BURST", "1"),
        ],
        system(),
    )
    .await;
    let edits = Arc::new(Edits::default());
    for i in 0..500 {
        let who = person(&format!("2{i:017}"), "Someone");
        rig.ask(who, "oncall", &[], &edits).await;
    }
    assert_eq!(rig.dispatcher.limiter_len(), 500);
    tokio::time::sleep(Duration::from_millis(50)).await;
    rig.dispatcher.flush_rate_limited(false).await;
    assert_eq!(rig.dispatcher.limiter_len(), 0);
}

/// Prompts expire on tokio's paused clock: the prompt is edited to say so, the trail records
/// it, and a late click runs nothing.
#[tokio::test(flavor = "current_thread")]
async fn unanswered_prompts_expire() {
    let base = Utc::now();
    let start = tokio::time::Instant::now();
    let clock: Clock =
        Arc::new(move || base + chrono::Duration::from_std(start.elapsed()).unwrap());
    let rig = Rig::new(
        Db::Sqlite,
        &[("RUNBOT__INTERACTIONS__CONFIRM_TIMEOUT_SECS", "120")],
        clock,
    )
    .await;
    let edits = Arc::new(Edits::default());
    let prompt = rig
        .ask(
            backend(),
            "restart",
            &[("service", text("backend"))],
            &edits,
        )
        .await;
    let confirm = button(message(&prompt), "Confirm");

    skip(Duration::from_secs(119)).await;
    let unknown = rig.click(backend(), "rb1p:nonsense:confirm", &edits).await;
    assert!(message(&unknown).text.contains("not known"), "{unknown:?}");
    assert!(
        edits.replies.lock().unwrap().is_empty(),
        "not expired before its time"
    );
    skip(Duration::from_secs(2)).await;
    let expired = edits.wait(1).await;
    assert!(
        expired[0].text.contains("expired") && expired[0].buttons.is_empty(),
        "{:?}",
        expired[0]
    );
    let late = rig.click(backend(), &confirm, &edits).await;
    assert!(message(&late).text.contains("already expired"), "{late:?}");
    let steps: Vec<Step> = rig.trail().await.into_iter().map(|r| r.0).collect();
    assert_eq!(
        steps,
        [Step::Requested, Step::Invalid, Step::Expired, Step::Invalid]
    );
    assert_eq!(
        rig.count("SELECT COUNT(*) FROM pending_requests WHERE state = 'expired'")
            .await,
        1
    );
}

/// Moves tokio's clock forward at once. Time runs normally otherwise: paused time would also
/// jump whenever the runtime waits for the database, firing the pool's own timeouts.
async fn skip(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// The dispatcher decides with the request's arguments: `/rollback` with a backup restores the
/// database too, so it asks for a dba (and, re-deciding after each approval, still does);
/// without one it is the plain confirmation.
#[tokio::test]
async fn a_rollback_with_a_backup_waits_for_a_dba_and_without_one_asks_to_confirm() {
    const BACKUP: &str = "backup_20261127_031500.sql.gz";
    for db in BOTH {
        let rig = Rig::new(db, &[], system()).await;
        let edits = Arc::new(Edits::default());
        let asked = rig
            .ask(
                devops(),
                "rollback",
                &[("tag", text("v1")), ("backup", text(BACKUP))],
                &edits,
            )
            .await;
        let prompt = message(&asked).clone();
        assert!(!prompt.ephemeral, "approvers must see it");
        assert!(
            prompt
                .text
                .contains("/rollback with a backup to restore needs a dba's approval")
                && prompt.text.contains("An approver must hold dba and"),
            "{}",
            prompt.text
        );
        let approve = button(&prompt, "Approve");
        let unfit = rig.click(cto(), &approve, &edits).await;
        assert!(
            message(&unfit)
                .text
                .contains("Only someone who holds dba can approve this request; you hold cto"),
            "{unfit:?}"
        );

        let asked = rig
            .ask(devops(), "rollback", &[("tag", text("v1"))], &edits)
            .await;
        let prompt = message(&asked).clone();
        assert!(prompt.ephemeral);
        assert!(
            prompt.text.contains("/rollback") && prompt.text.contains("Confirm within"),
            "{}",
            prompt.text
        );
        button(&prompt, "Confirm");

        // On a Sev1 a cto's approval lifts only the Sev1 rule: the re-decision still sees the
        // backup and waits for a dba.
        let group = rig.group("APIDown", "sev1").await;
        let request = Request::Command {
            actor: devops(),
            command: "rollback".into(),
            args: vec![("tag".into(), text("v1")), ("backup".into(), text(BACKUP))],
            origin: Origin {
                channel_id: Some("300000000000000001".into()),
                group_id: Some(group),
                ..Origin::default()
            },
        };
        let asked = rig
            .dispatcher
            .handle(request, Arc::new(Capture(edits.clone())))
            .await;
        let prompt = message(&asked).clone();
        assert!(
            prompt
                .text
                .contains("needs a dba's approval, and on a Sev1 group"),
            "{}",
            prompt.text
        );
        let approved = rig.click(cto(), &button(&prompt, "Approve"), &edits).await;
        let Answer::Update(r) = &approved else {
            panic!("{approved:?}")
        };
        assert!(
            r.text
                .contains("Approved by Carla; it still needs someone who holds dba."),
            "{}",
            r.text
        );
        let steps: Vec<Step> = rig.trail().await.into_iter().map(|r| r.0).collect();
        assert_eq!(
            steps,
            [
                Step::Requested,
                Step::Denied,
                Step::Requested,
                Step::Requested,
                Step::Approved
            ],
            "nothing started, on {db:?}"
        );
    }
}

/// The `incident` the `requested` row of the newest request recorded.
async fn recorded_incident(rig: &Rig) -> Value {
    let rows = rig
        .audit_records()
        .await
        .into_iter()
        .filter(|r| r.step == Step::Requested)
        .collect::<Vec<_>>();
    let last = rows.last().expect("a requested row");
    last.detail.as_ref().expect("a detail")["incident"].clone()
}

/// A typed command carries no card, yet it acts in the open incident: during a Sev1 on backend a
/// typed `/restart service:backend` needs the same second person as the card's Restart button,
/// and the answer and the audit row name the group that set the severity. The same holds for
/// the other changes, decided under the most severe open group of the stack; a button on a
/// milder card cannot lower the severity; a read is not held up.
#[tokio::test]
async fn a_typed_command_during_a_sev1_needs_the_second_person_a_button_needs() {
    for db in BOTH {
        let rig = Rig::new(db, &[], system()).await;
        let edits = Arc::new(Edits::default());
        let restart = [("service", text("backend"))];

        // Nothing open: the requester's own Confirm is enough.
        let quiet = rig.ask(devops(), "restart", &restart, &edits).await;
        button(message(&quiet), "Confirm");

        let sev1 = rig
            .group_with(
                serde_json::json!({ "alertname": "APIDown", "service": "backend" }),
                "sev1",
            )
            .await;
        let typed = rig.ask(devops(), "restart", &restart, &edits).await;
        let reply = message(&typed);
        assert!(
            reply
                .text
                .contains("on a Sev1 group needs a second person's approval: devops-lead or cto"),
            "{reply:?}"
        );
        assert!(
            reply.text.contains(&format!(
                "Decided as Sev1: alert group #{sev1} (APIDown) is the most severe open alert group on backend."
            )),
            "{reply:?}"
        );
        let approve = button(reply, "Approve");
        assert_eq!(
            recorded_incident(&rig).await,
            serde_json::json!({ "group_id": sev1, "severity": "sev1", "title": "APIDown", "basis": "service", "service": "backend" })
        );
        rig.approval_refused_to_self_and_developer(devops(), &approve, &edits)
            .await;

        // Changes with no service of their own: the most severe open group of the stack.
        for (command, args) in [
            ("deploy", vec![("tag", text("v2"))]),
            ("rollback", vec![("tag", text("v1"))]),
            ("backup", vec![]),
            (
                "scale",
                vec![
                    ("service", text("worker")),
                    ("replicas", RawValue::Integer(2)),
                ],
            ),
        ] {
            let answer = rig.ask(devops(), command, &args, &edits).await;
            let reply = message(&answer);
            assert!(
                reply.text.contains("needs a second person's approval"),
                "/{command}: {reply:?}"
            );
            assert!(
                reply.text.contains(&format!(
                    "alert group #{sev1} (APIDown) is the most severe open alert group of the stack"
                )),
                "/{command}: {reply:?}"
            );
            assert_eq!(
                recorded_incident(&rig).await["basis"],
                "stack",
                "/{command}"
            );
        }

        // A button on a Sev3 card (HighMemoryUsage: Restart backend is its third action) acts on
        // backend too, where the Sev1 is open: the card cannot lower the severity.
        let sev3 = rig
            .group_with(
                serde_json::json!({ "alertname": "HighMemoryUsage", "service": "worker" }),
                "sev3",
            )
            .await;
        let pressed = rig
            .click(
                devops(),
                &runbot::request::ButtonId::CardAction {
                    group_id: sev3,
                    index: 2,
                }
                .to_string(),
                &edits,
            )
            .await;
        let reply = message(&pressed);
        assert!(
            reply.text.contains("needs a second person's approval"),
            "{reply:?}"
        );
        assert_eq!(recorded_incident(&rig).await["group_id"], sev1);

        // A read is never held up, and says nothing about severities.
        let logs = rig.ask(devops(), "logs", &restart, &edits).await;
        assert!(matches!(logs, Answer::Deferred { .. }), "{logs:?}");
    }
}
