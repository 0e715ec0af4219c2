//! `/status`, `/stats`, `/logs`, `/restart` and `/scale` against a real Docker engine (the one scripts/test starts, with the
//! images of scripts/test-images). Each test makes its own docker-compose project: containers
//! with compose's labels, created through the engine's API, then runs the commands through
//! the real dispatcher and checks the answers against what the engine runs.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use bollard::models::{
    ContainerInspectResponse, HealthStatusEnum, RestartPolicy, RestartPolicyNameEnum,
};
use chrono::{DateTime, Utc};
use common::docker::{docker_host, quick_stop, Project};
use common::rig::{devops, message, text, Edits, Rig};
use common::Db;
use runbot::audit::{AuditFilter, Step};
use runbot::request::Answer;
use runbot::request::RawValue;
use runbot::request::Reply;

/// The dispatcher with the shipped commands and policies, a fresh SQLite database and the
/// given Docker settings.
async fn rig_with(docker: &[(&str, &str)]) -> Rig {
    Rig::new(Db::Sqlite, docker, runbot::domain::clock::system_clock()).await
}

/// For the test engine and this project.
async fn rig_on(project: &Project) -> Rig {
    rig_with(&[
        ("RUNBOT__DOCKER__HOST", &docker_host()),
        ("RUNBOT__DOCKER__PROJECT", &project.name),
    ])
    .await
}

/// Runs a read command as the DevOps Lead and returns the result it edits in.
async fn run(rig: &Rig, command: &str, args: &[(&str, RawValue)]) -> Reply {
    let edits = Arc::new(Edits::default());
    let answer = rig.ask(devops(), command, args, &edits).await;
    assert_eq!(
        answer,
        Answer::Deferred { ephemeral: true },
        "/{command} is a read: deferred, seen by the requester only"
    );
    edits.wait(1).await.remove(0)
}

/// The last audit row: its step, reason and summary.
async fn last_audit(rig: &Rig) -> (Step, Option<String>, Option<String>) {
    let row = rig
        .audit
        .recent(1, &AuditFilter::default())
        .await
        .unwrap()
        .remove(0);
    let summary = row
        .detail
        .as_ref()
        .and_then(|d| d.get("summary"))
        .and_then(|s| s.as_str())
        .map(str::to_string);
    (row.step, row.reason, summary)
}

/// The block's rows, each as its words.
fn table(reply: &Reply) -> Vec<Vec<String>> {
    reply
        .code_block
        .as_deref()
        .unwrap_or_else(|| panic!("no table in {reply:?}"))
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], name: &str) -> &'a [String] {
    rows.iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

fn block_lines(reply: &Reply) -> Vec<&str> {
    reply
        .code_block
        .as_deref()
        .map(|b| b.lines().collect())
        .unwrap_or_default()
}

/// The content Discord would get for the reply.
fn discord_content(reply: &Reply) -> String {
    let body =
        serde_json::to_value(runbot::chat::discord::render::edit_original_body(reply)).unwrap();
    body["content"].as_str().unwrap_or_default().to_string()
}

const BACKEND_LOG: [&str; 7] = [
    "INFO starting backend v1 on :8000",
    "INFO connecting to postgres://app:***@db/app",
    "INFO cache settings: host=redis password=*** ttl=300",
    "INFO calling billing with Authorization: Bearer ***",
    "WARN slow start: 3 migrations pending",
    "ERROR could not warm the menu cache: redis timeout after 5s",
    "INFO ready",
];

#[tokio::test]
async fn status_shows_what_each_container_runs_and_how_it_is() {
    let p = Project::new().await;
    let backend = p.run("backend", "runbot-test/backend:v2", 1, |_| {}).await;
    let nginx = p.run("nginx", "runbot-test/backend:v3", 1, |_| {}).await;
    p.run("worker", "runbot-test/worker:v1", 1, |_| {}).await;
    p.run("worker", "runbot-test/worker:v1", 2, |_| {}).await;
    // Crashes at once; the engine restarts it twice, then leaves it exited.
    let beat = p
        .run("beat", "runbot-test/worker:v1", 1, |c| {
            c.cmd = Some(vec!["sh".into(), "-c".into(), "echo crash; exit 3".into()]);
            c.host_config.as_mut().unwrap().restart_policy = Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(2),
            });
        })
        .await;
    // Another project's containers are not this stack's.
    let other = Project::new().await;
    other
        .run("backend", "runbot-test/backend:v1", 1, |_| {})
        .await;

    p.wait_health(&backend, HealthStatusEnum::HEALTHY).await;
    p.wait_health(&nginx, HealthStatusEnum::UNHEALTHY).await;
    p.wait_until(&beat, "exited after 2 restarts", |i| {
        i.restart_count == Some(2)
            && i.state.as_ref().and_then(|s| s.running) == Some(false)
            && i.state.as_ref().and_then(|s| s.restarting) == Some(false)
    })
    .await;

    let rig = rig_on(&p).await;
    let reply = run(&rig, "status", &[]).await;
    assert!(reply.ephemeral);
    assert!(
        reply.text.contains(&format!(
            "**{}**: 5 containers: 4 running, 1 not running, 1 unhealthy",
            p.name
        )),
        "{}",
        reply.text
    );
    let rows = table(&reply);
    assert_eq!(
        rows[0],
        ["SERVICE", "STATE", "HEALTH", "FOR", "IMAGE", "RESTARTS"]
    );
    assert_eq!(
        rows.len(),
        6,
        "a header and one row per container: {rows:?}"
    );
    let b = row(&rows, "backend");
    assert_eq!(
        (&b[1], &b[2], &b[4], &b[5]),
        (
            &"running".into(),
            &"healthy".into(),
            &"backend:v2".into(),
            &"0".into()
        ),
        "{b:?}"
    );
    assert!(
        b[3].ends_with('s') || b[3].ends_with('m'),
        "up for seconds: {b:?}"
    );
    let n = row(&rows, "nginx");
    assert_eq!(
        (&n[1], &n[2], &n[4]),
        (&"running".into(), &"unhealthy".into(), &"backend:v3".into()),
        "{n:?}"
    );
    for w in ["worker-1", "worker-2"] {
        let w = row(&rows, w);
        assert_eq!(
            (&w[1], &w[2], &w[4], &w[5]),
            (
                &"running".into(),
                &"-".into(),
                &"worker:v1".into(),
                &"0".into()
            ),
            "{w:?}"
        );
    }
    let beat_row = row(&rows, "beat");
    assert_eq!(
        beat_row.join(" "),
        format!("beat exited (3) - {} worker:v1 2", beat_row[4]),
        "{beat_row:?}"
    );
    assert!(
        !reply.code_block.as_deref().unwrap().contains("backend:v1"),
        "another project's container is not listed"
    );
    assert_eq!(
        last_audit(&rig).await,
        (
            Step::Succeeded,
            None,
            Some("5 containers: 4 running, 1 not running, 1 unhealthy".into())
        )
    );

    let workers = run(&rig, "status", &[("service", text("worker"))]).await;
    let rows = table(&workers);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[1..].iter().all(|r| r[0].starts_with("worker-")));

    // The command's choices allow redis, but this project has none.
    let missing = run(&rig, "status", &[("service", text("redis"))]).await;
    let want = format!(
        "no service redis in project {}; known: backend, beat, nginx, worker",
        p.name
    );
    assert!(missing.text.contains(&want), "{}", missing.text);
    let (step, reason, _) = last_audit(&rig).await;
    assert_eq!(
        (step, reason.as_deref()),
        (Step::Failed, Some(want.as_str()))
    );
}

#[tokio::test]
async fn logs_show_the_newest_lines_with_secrets_masked() {
    let p = Project::new().await;
    let backend = p.run("backend", "runbot-test/backend:v1", 1, |_| {}).await;
    p.wait_log(&backend, "INFO ready").await;
    let rig = rig_on(&p).await;

    let all = run(&rig, "logs", &[("service", text("backend"))]).await;
    assert_eq!(
        block_lines(&all),
        BACKEND_LOG,
        "stdout and stderr, demultiplexed"
    );
    assert!(
        all.text
            .contains("Logs of **backend** (tail 100): 7 lines.")
            && all.text.contains("Secrets masked in 3 lines."),
        "{}",
        all.text
    );
    let content = discord_content(&all);
    assert!(!content.contains("hunter2"), "{content}");
    assert!(
        content.starts_with(&all.text) && content.ends_with("INFO ready\n```"),
        "{content}"
    );
    assert_eq!(
        last_audit(&rig).await,
        (
            Step::Succeeded,
            None,
            Some("showed 7 of 7 lines of backend, secrets masked".into())
        )
    );

    let tail = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("tail", RawValue::Integer(2))],
    )
    .await;
    assert_eq!(block_lines(&tail), BACKEND_LOG[5..]);

    let errors = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("grep", text("ERROR"))],
    )
    .await;
    assert_eq!(block_lines(&errors), [BACKEND_LOG[5]]);
    assert!(
        errors.text.contains("1 of 7 lines match."),
        "{}",
        errors.text
    );

    // Masked before the filter: a guessed password finds nothing.
    let guess = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("grep", text("hunter2"))],
    )
    .await;
    assert_eq!(guess.code_block, None);
    assert!(
        guess.text.contains("no lines (of 7 read)"),
        "{}",
        guess.text
    );
    // A plain substring, not a pattern.
    let plain = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("grep", text("a.e"))],
    )
    .await;
    assert_eq!(plain.code_block, None, "{plain:?}");
}

/// What a container prints that must never reach chat: a PEM private key over several lines
/// and one inside JSON, a Stripe secret key, an Authorization header and a Cookie header.
const LEAKY_LOG: [&str; 10] = [
    "INFO loading the signing key",
    "-----BEGIN RSA PRIVATE KEY-----",
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
    "-----END RSA PRIVATE KEY-----",
    "INFO charging with sk_live_51H8abcDEF0123456789xyz",
    r#"DEBUG > Authorization: Digest username="ana", response="6629fae49393a05397450978507c4ef1""#,
    "DEBUG > Cookie: sessionid=q8v1k2hunter; csrftoken=Zx81",
    r#"DEBUG {"tls_key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n-----END PRIVATE KEY-----\n"}"#,
    "INFO done",
];

#[tokio::test]
async fn logs_mask_private_keys_stripe_keys_and_authorization_and_cookie_headers() {
    let p = Project::new().await;
    let leaky = p
        .run("backend", "runbot-test/worker:v1", 1, |c| {
            // printf's %s prints each line as it is: no escapes interpreted.
            let mut cmd = vec!["printf".to_string(), "%s\\n".into()];
            cmd.extend(LEAKY_LOG.iter().map(|l| l.to_string()));
            let script = "\"$@\"; exec sleep 3600";
            c.cmd = Some(
                ["sh", "-c", script, "sh"]
                    .into_iter()
                    .map(String::from)
                    .chain(cmd)
                    .collect(),
            );
        })
        .await;
    p.wait_log(&leaky, "INFO done").await;
    let rig = rig_on(&p).await;

    let all = run(&rig, "logs", &[("service", text("backend"))]).await;
    assert_eq!(
        block_lines(&all),
        [
            "INFO loading the signing key",
            "-----BEGIN RSA PRIVATE KEY-----",
            "***",
            "***",
            "-----END RSA PRIVATE KEY-----",
            "INFO charging with sk_live_***",
            "DEBUG > Authorization: Digest ***",
            "DEBUG > Cookie: ***",
            r#"DEBUG {"tls_key":"-----BEGIN PRIVATE KEY-----***-----END PRIVATE KEY-----\n"}"#,
            "INFO done",
        ]
    );
    assert!(
        all.text.contains("Secrets masked in 6 lines."),
        "{}",
        all.text
    );
    // A tail that starts inside the key: the key's first line is not among those read.
    let cut = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("tail", RawValue::Integer(7))],
    )
    .await;
    assert_eq!(
        block_lines(&cut)[..2],
        ["***", "-----END RSA PRIVATE KEY-----"]
    );
    for reply in [&all, &cut] {
        let content = discord_content(reply);
        for secret in [
            "MIIE",
            "VTLw7onL",
            "51H8abc",
            "6629fae4",
            "q8v1k2hunter",
            "Zx81",
        ] {
            assert!(!content.contains(secret), "{secret} in {content}");
        }
    }
}

#[tokio::test]
async fn logs_since_a_duration_leave_out_older_lines() {
    let p = Project::new().await;
    let worker = p.run("worker", "runbot-test/worker:v1", 1, |_| {}).await;
    p.wait_log(&worker, "worker tick 5").await;
    let rig = rig_on(&p).await;

    let ticks = |r: &Reply| -> Vec<u32> {
        block_lines(r)
            .iter()
            .map(|l| {
                l.strip_prefix("INFO worker tick ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected line {l:?}"))
            })
            .collect()
    };
    let hour = ticks(
        &run(
            &rig,
            "logs",
            &[("service", text("worker")), ("since", text("1h"))],
        )
        .await,
    );
    assert_eq!(hour[0], 0, "{hour:?}");
    assert!(hour.len() >= 6, "{hour:?}");

    let recent = ticks(
        &run(
            &rig,
            "logs",
            &[("service", text("worker")), ("since", text("2s"))],
        )
        .await,
    );
    // One line a second: the last two or three seconds' worth, none of the first.
    assert!(
        (1..=4).contains(&recent.len()) && recent[0] >= 3,
        "{recent:?} (of {hour:?})"
    );
}

#[tokio::test]
async fn long_logs_show_the_newest_lines_that_fit_one_discord_message() {
    let p = Project::new().await;
    let bulk = p
        .run("backend", "runbot-test/worker:v1", 1, |c| {
            c.cmd = Some(vec![
                "sh".into(),
                "-c".into(),
                r#"i=0; while [ $i -lt 3000 ]; do echo "bulk line $i of a long log"; i=$((i+1)); done; exec sleep 3600"#.into(),
            ]);
        })
        .await;
    p.wait_log(&bulk, "bulk line 2999 ").await;
    let rig = rig_on(&p).await;

    let reply = run(
        &rig,
        "logs",
        &[
            ("service", text("backend")),
            ("tail", RawValue::Integer(5000)),
        ],
    )
    .await;
    let lines = block_lines(&reply);
    let shown = lines.len();
    assert!(
        shown > 40 && shown < 100,
        "about 2,000 characters of lines: {shown}"
    );
    assert_eq!(lines.last(), Some(&"bulk line 2999 of a long log"));
    assert_eq!(
        lines[0],
        format!("bulk line {} of a long log", 3000 - shown)
    );
    assert!(
        reply.text.contains(&format!(
            "Logs of **backend** (tail 5000): last {shown} of 3000 lines shown; all 3000 attached."
        )),
        "{}",
        reply.text
    );
    let file = reply.attachment.as_ref().expect("the rest is attached");
    assert_eq!(String::from_utf8_lossy(&file.content).lines().count(), 3000);
    let content = discord_content(&reply);
    assert!(content.chars().count() <= 2000, "{}", content.len());
    assert!(
        content.starts_with(&reply.text) && content.contains(&format!("```\n{}\n", lines[0])),
        "nothing was cut by the adapter: {content}"
    );
}

#[tokio::test]
async fn stats_show_cpu_memory_against_the_limit_and_pids_of_each_container() {
    let p = Project::new().await;
    // A busy loop limited to 64 MiB. This engine (cgroup v1) reports CPU, memory and PIDs.
    p.run("backend", "runbot-test/worker:v1", 1, |c| {
        c.cmd = Some(vec!["sh".into(), "-c".into(), "while :; do :; done".into()]);
        c.host_config.as_mut().unwrap().memory = Some(64 << 20);
    })
    .await;
    p.run("worker", "runbot-test/worker:v1", 1, |_| {}).await;
    p.run("worker", "runbot-test/worker:v1", 2, |_| {}).await;
    let beat = p
        .run("beat", "runbot-test/worker:v1", 1, |c| {
            c.cmd = Some(vec!["sh".into(), "-c".into(), "exit 0".into()]);
        })
        .await;
    p.wait_until(&beat, "exited", |i| {
        i.state.as_ref().and_then(|s| s.running) == Some(false)
    })
    .await;
    let rig = rig_on(&p).await;

    let all = run(&rig, "stats", &[]).await;
    let rows = table(&all);
    assert_eq!(
        rows[0],
        ["SERVICE", "STATE", "CPU", "%", "MEM", "USAGE", "LIMIT", "MEM", "%", "PIDS"]
    );
    let percent = |s: &str| -> f64 {
        s.strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a percentage: {s}"))
    };
    let backend = row(&rows, "backend");
    assert_eq!(backend[1], "running");
    assert!(percent(&backend[2]) > 10.0, "a busy loop: {backend:?}");
    assert_eq!(
        backend[4], "64MiB",
        "the container's own limit: {backend:?}"
    );
    assert!(percent(&backend[5]) < 100.0, "{backend:?}");
    assert_eq!(backend[6], "1", "one process: {backend:?}");
    for name in ["worker-1", "worker-2"] {
        let w = row(&rows, name);
        assert_eq!(w[1], "running");
        assert_ne!(w[4], "64MiB", "no limit: the host's memory: {w:?}");
        assert!(w[6].parse::<u64>().unwrap() >= 1, "{w:?}");
        assert!(percent(&w[2]) < 50.0, "an idle worker: {w:?}");
    }
    assert_eq!(
        row(&rows, "beat"),
        ["beat", "exited", "(0)", "-", "-", "-", "-", "-"],
        "stopped: no numbers"
    );
    assert!(
        all.text
            .contains(&format!("📊 **{}**: 4 containers, 3 running; CPU ", p.name)),
        "{}",
        all.text
    );
    assert!(!all.text.contains("no cgroup figures"), "{}", all.text);
    let (step, _, summary) = last_audit(&rig).await;
    assert_eq!(step, Step::Succeeded);
    assert!(
        summary
            .as_deref()
            .unwrap_or("")
            .starts_with("4 containers, 3 running; CPU "),
        "{summary:?}"
    );

    let workers = run(&rig, "stats", &[("service", text("worker"))]).await;
    let names: Vec<String> = table(&workers)[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, ["worker-1", "worker-2"]);

    let unknown = run(&rig, "stats", &[("service", text("redis"))]).await;
    assert!(
        unknown.text.contains(&format!(
            "no service redis in project {}; known: backend, beat, worker",
            p.name
        )),
        "{}",
        unknown.text
    );
    assert_eq!(unknown.code_block, None);
}

/// The lines of an attached file.
fn attached_lines(reply: &Reply) -> Vec<String> {
    let file = reply
        .attachment
        .as_ref()
        .unwrap_or_else(|| panic!("no attachment in {reply:?}"));
    String::from_utf8(file.content.clone())
        .expect("UTF-8 text")
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn logs_that_do_not_fit_attach_every_matched_line_with_secrets_masked() {
    let p = Project::new().await;
    let noisy = p
        .run("backend", "runbot-test/worker:v1", 1, |c| {
            c.cmd = Some(vec![
                "sh".into(),
                "-c".into(),
                r#"i=0; while [ $i -lt 1000 ]; do echo "req $i user=ana password=hunter2$i"; echo "tick $i"; i=$((i+1)); done; exec sleep 3600"#.into(),
            ]);
        })
        .await;
    p.wait_log(&noisy, "tick 999").await;
    let rig = rig_on(&p).await;

    let reply = run(
        &rig,
        "logs",
        &[
            ("service", text("backend")),
            ("tail", RawValue::Integer(5000)),
            ("grep", text("user=ana")),
        ],
    )
    .await;
    let shown = block_lines(&reply);
    let n = shown.len();
    assert!(n > 20 && n < 100, "about 2,000 characters of lines: {n}");
    assert_eq!(
        shown.last(),
        Some(&"req 999 user=ana password=***"),
        "the newest line, masked"
    );
    let file = reply.attachment.as_ref().unwrap();
    let name = file
        .filename
        .strip_prefix("logs-backend-")
        .and_then(|n| n.strip_suffix(".txt"))
        .unwrap_or_else(|| panic!("{}", file.filename));
    assert!(
        chrono::NaiveDateTime::parse_from_str(name, "%Y%m%d-%H%M%S").is_ok(),
        "{}",
        file.filename
    );
    let all = attached_lines(&reply);
    let want: Vec<String> = (0..1000)
        .map(|i| format!("req {i} user=ana password=***"))
        .collect();
    assert_eq!(all, want, "every matched line, masked, oldest first");
    assert!(
        !String::from_utf8_lossy(&file.content).contains("hunter2"),
        "no secret in the file"
    );
    assert_eq!(
        all[all.len() - n..],
        shown[..],
        "the message shows the file's end"
    );
    assert!(
        reply.text.contains(&format!(
            "Logs of **backend** (tail 5000, containing `user=ana`): 1000 of 2000 lines match; last {n} shown, all 1000 attached."
        )) && reply.text.contains("Secrets masked in 1000 lines."),
        "{}",
        reply.text
    );
    assert!(discord_content(&reply).chars().count() <= 2000);
    assert_eq!(
        last_audit(&rig).await.2,
        Some(format!(
            "showed {n} of 1000 lines of backend, attached all 1000, secrets masked"
        ))
    );

    // What fits needs no file.
    let few = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("tail", RawValue::Integer(4))],
    )
    .await;
    assert_eq!(block_lines(&few).len(), 4);
    assert_eq!(few.attachment, None);
}

#[tokio::test]
async fn logs_over_the_upload_limit_attach_the_newest_lines_that_fit() {
    let p = Project::new().await;
    // 5,000 lines of 2,313 bytes ("big NNNN " and 2,304 x): 11.6 MB, over the 10 MiB a file
    // may take.
    let big = p
        .run("backend", "runbot-test/worker:v1", 1, |c| {
            c.cmd = Some(vec![
                "sh".into(),
                "-c".into(),
                r#"s=x; u=x; n=0; while [ $n -lt 11 ]; do s=$s$s; n=$((n+1)); done; n=0; while [ $n -lt 8 ]; do u=$u$u; n=$((n+1)); done; i=1000; while [ $i -lt 6000 ]; do echo "big $i $s$u"; i=$((i+1)); done; exec sleep 3600"#.into(),
            ]);
        })
        .await;
    p.wait_log(&big, "big 5999 ").await;
    let rig = rig_on(&p).await;

    let reply = run(
        &rig,
        "logs",
        &[
            ("service", text("backend")),
            ("tail", RawValue::Integer(5000)),
        ],
    )
    .await;
    let file = reply.attachment.as_ref().expect("a file");
    assert!(
        file.content.len() <= runbot::request::ATTACHMENT_MAX_BYTES,
        "{}",
        file.content.len()
    );
    let lines = attached_lines(&reply);
    let kept = lines.len();
    // 10 MiB / 2,314 bytes a line with its newline.
    assert_eq!(kept, 10 * 1024 * 1024 / 2314, "the newest that fit");
    assert!(
        lines[0].starts_with(&format!("big {} x", 6000 - kept)),
        "{}",
        &lines[0][..20]
    );
    assert!(lines[kept - 1].starts_with("big 5999 x"));
    assert!(
        reply.text.contains(&format!(
            "; the newest {kept} attached (uploads are limited to 10 MiB)."
        )) && reply.text.contains(" of 5000 lines shown"),
        "{}",
        reply.text
    );
    assert!(discord_content(&reply).chars().count() <= 2000);
    assert_eq!(
        last_audit(&rig).await.2,
        Some(format!(
            "showed 1 of 5000 lines of backend, attached the newest {kept}"
        ))
    );
}

#[tokio::test]
async fn logs_asked_from_discord_arrive_with_every_line_attached() {
    use fake_discord::{FakeDiscord, FakeUser};
    const BOT_TOKEN: &str = "fake-bot-token-0123456789abcdef";
    const CHANNEL: u64 = 111_111_111_111_111_111;
    let p = Project::new().await;
    let noisy = p
        .run("backend", "runbot-test/worker:v1", 1, |c| {
            c.cmd = Some(vec![
                "sh".into(),
                "-c".into(),
                r#"i=0; while [ $i -lt 600 ]; do echo "GET /menu/$i 200 token=abc$i"; i=$((i+1)); done; exec sleep 3600"#.into(),
            ]);
        })
        .await;
    p.wait_log(&noisy, "GET /menu/599 ").await;
    let fake = FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let policies = common::rig::shipped_policies(dir.path(), common::rig::ROLES);
    let app = common::TestApp::spawn_with(
        common::Options::new(Db::Sqlite)
            .set("RUNBOT__DISCORD__BOT_TOKEN", BOT_TOKEN)
            .set("RUNBOT__DISCORD__ALERT_CHANNEL_ID", &CHANNEL.to_string())
            .set("RUNBOT__DISCORD__API_BASE", &fake.base_url())
            .set("RUNBOT__DISCORD__APPLICATION_ID", fake.application_id())
            .set("RUNBOT__DISCORD__PUBLIC_KEY", &fake.public_key_hex())
            .set("RUNBOT__POLICY__DIR", &policies.display().to_string())
            .set("RUNBOT__DOCKER__HOST", &docker_host())
            .set("RUNBOT__DOCKER__PROJECT", &p.name),
    )
    .await;
    // The DevOps Lead of common::rig::ROLES, by Discord user id.
    let dana = FakeUser::new(100_000_000_000_000_001, "Dana", &[]);

    let sent = fake
        .send_interaction(
            &format!("{}/discord/interactions", app.url),
            fake.slash_command(
                "logs",
                &[
                    ("service", serde_json::json!("backend")),
                    ("tail", serde_json::json!(5000)),
                ],
                &dana,
                CHANNEL,
            ),
        )
        .await;
    assert!(sent.failure.is_none(), "{:?}", sent.failure);
    assert_eq!(sent.body["type"], 5, "deferred: {}", sent.body);
    let i = fake
        .wait_for_interaction(&sent.id, Duration::from_secs(30), |i| !i.edits.is_empty())
        .await;
    assert!(i.ephemeral, "logs are for the requester only");
    let content = i.content();
    assert!(
        content.contains("Logs of **backend** (tail 5000): last ")
            && content
                .contains(" of 600 lines shown; all 600 attached. Secrets masked in 600 lines."),
        "{content}"
    );
    assert!(
        content.ends_with("GET /menu/599 200 token=***\n```"),
        "{content}"
    );
    let original = i.original.expect("the edited answer");
    assert_eq!(original.files.len(), 1, "{:?}", original.body);
    let file = &original.files[0];
    assert!(
        file.filename.starts_with("logs-backend-") && file.filename.ends_with(".txt"),
        "{}",
        file.filename
    );
    let text = String::from_utf8(file.content.clone()).unwrap();
    let want: String = (0..600)
        .map(|i| format!("GET /menu/{i} 200 token=***\n"))
        .collect();
    assert_eq!(text, want, "every line, secrets masked");
    assert_eq!(
        original.body["attachments"][0]["filename"],
        file.filename.as_str()
    );
    let edit = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "PATCH" && r.path.ends_with("/messages/@original"))
        .expect("the edit of @original");
    assert!(
        edit.header("content-type")
            .is_some_and(|c| c.starts_with("multipart/form-data")),
        "{edit:?}"
    );
    assert_eq!(edit.status, 200);
}

#[tokio::test]
async fn docker_unreachable_is_said_plainly_and_audited_as_a_failure() {
    // A port nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (host, cause) in [
        (
            "unix:///nonexistent/runbot/docker.sock".to_string(),
            "there is no socket at /nonexistent/runbot/docker.sock".to_string(),
        ),
        (
            format!("tcp://127.0.0.1:{closed}"),
            "Connection refused".to_string(),
        ),
    ] {
        let rig = rig_with(&[
            ("RUNBOT__DOCKER__HOST", &host),
            ("RUNBOT__DOCKER__PROJECT", "saas"),
        ])
        .await;
        for (command, args) in [
            ("status", vec![]),
            ("logs", vec![("service", text("backend"))]),
        ] {
            let reply = run(&rig, command, &args).await;
            let said = format!("Docker at {host} cannot be reached: {cause}");
            assert!(
                reply.text.contains(&said) && reply.text.contains("nothing was changed"),
                "{}",
                reply.text
            );
            let (step, reason, _) = last_audit(&rig).await;
            assert_eq!(step, Step::Failed);
            assert!(reason.unwrap().contains(&said));
        }
        // The changes say the same, after their confirmation.
        for (command, args) in [
            ("restart", vec![("service", text("backend"))]),
            (
                "scale",
                vec![
                    ("service", text("backend")),
                    ("replicas", RawValue::Integer(2)),
                ],
            ),
        ] {
            let reply = confirmed(&rig, command, &args).await;
            let said = format!("Docker at {host} cannot be reached: {cause}");
            assert!(
                reply.text.contains(&said) && reply.text.contains("nothing was changed"),
                "{}",
                reply.text
            );
            assert_eq!(last_audit(&rig).await.0, Step::Failed);
        }
    }
}

#[tokio::test]
async fn without_a_project_or_its_containers_runbot_says_what_to_check() {
    let rig = rig_with(&[("RUNBOT__DOCKER__HOST", &docker_host())]).await;
    let reply = run(&rig, "status", &[]).await;
    assert!(
        reply
            .text
            .contains("set docker.project (RUNBOT__DOCKER__PROJECT)"),
        "{}",
        reply.text
    );
    assert_eq!(last_audit(&rig).await.0, Step::Failed);

    let empty = Project::new().await;
    let rig = rig_on(&empty).await;
    let status = run(&rig, "status", &[]).await;
    assert!(
        status.text.contains(&format!(
            "Project **{}** has no containers on Docker at {}",
            empty.name,
            docker_host()
        )),
        "{}",
        status.text
    );
    let logs = run(&rig, "logs", &[("service", text("backend"))]).await;
    assert!(
        logs.text.contains(&format!(
            "no service backend in project {}; it has no containers on this engine (is docker.project right?)",
            empty.name
        )),
        "{}",
        logs.text
    );
}

/// Asks for a command that needs confirming as the DevOps Lead, presses Confirm and returns
/// the result the core edits in.
async fn confirmed(rig: &Rig, command: &str, args: &[(&str, RawValue)]) -> Reply {
    let edits = Arc::new(Edits::default());
    let prompt = rig.ask(devops(), command, args, &edits).await;
    let prompt = message(&prompt);
    assert!(
        prompt.text.contains("Confirm within"),
        "/{command} asks to confirm first: {prompt:?}"
    );
    let confirm = prompt
        .buttons
        .iter()
        .find(|b| b.label == "Confirm")
        .unwrap_or_else(|| panic!("no Confirm button in {prompt:?}"))
        .id
        .clone();
    let clicked = rig.click(devops(), &confirm, &edits).await;
    assert!(
        matches!(clicked, Answer::Update(_)),
        "the prompt is replaced: {clicked:?}"
    );
    edits.wait(1).await.remove(0)
}

/// The plan of a dry run, as the DevOps Lead.
async fn dry_run(rig: &Rig, command: &str, args: &[(&str, RawValue)]) -> String {
    let mut args = args.to_vec();
    args.push(("dry_run", RawValue::Boolean(true)));
    let edits = Arc::new(Edits::default());
    let answer = rig.ask(devops(), command, &args, &edits).await;
    let text = message(&answer).text.clone();
    assert!(text.contains("Dry run"), "{text}");
    text
}

/// What the engine runs for one service of the project, by replica number.
async fn replicas(p: &Project, service: &str) -> Vec<ContainerInspectResponse> {
    let mut out = p.inspect_service(service, &[]).await;
    out.sort_by_key(number);
    out
}

fn label<'a>(i: &'a ContainerInspectResponse, key: &str) -> &'a str {
    i.config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .unwrap_or_default()
}

fn number(i: &ContainerInspectResponse) -> u32 {
    label(i, "com.docker.compose.container-number")
        .parse()
        .unwrap_or(0)
}

fn started_at(i: &ContainerInspectResponse) -> DateTime<Utc> {
    let s = i
        .state
        .as_ref()
        .and_then(|s| s.started_at.as_deref())
        .unwrap();
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn running(i: &ContainerInspectResponse) -> bool {
    i.state.as_ref().and_then(|s| s.running) == Some(true)
}

fn health(i: &ContainerInspectResponse) -> Option<HealthStatusEnum> {
    i.state.as_ref()?.health.as_ref()?.status
}

#[tokio::test]
async fn restart_gives_every_replica_a_new_start_and_waits_until_it_is_healthy() {
    let p = Project::new().await;
    let one = p
        .run("backend", "runbot-test/backend:v1", 1, quick_stop)
        .await;
    let two = p
        .run("backend", "runbot-test/backend:v1", 2, quick_stop)
        .await;
    p.wait_health(&one, HealthStatusEnum::HEALTHY).await;
    p.wait_health(&two, HealthStatusEnum::HEALTHY).await;
    let rig = rig_on(&p).await;
    let before: Vec<DateTime<Utc>> = replicas(&p, "backend")
        .await
        .iter()
        .map(started_at)
        .collect();

    let plan = dry_run(&rig, "restart", &[("service", text("backend"))]).await;
    assert!(
        plan.contains(&format!(
            "restart backend-1, backend-2 of project {}",
            p.name
        )),
        "{plan}"
    );
    let unchanged: Vec<DateTime<Utc>> = replicas(&p, "backend")
        .await
        .iter()
        .map(started_at)
        .collect();
    assert_eq!(unchanged, before, "a dry run restarts nothing");

    let reply = confirmed(&rig, "restart", &[("service", text("backend"))]).await;
    assert!(
        reply.text.contains(&format!(
            "restarted **backend** of {}: 2 containers, each running again and healthy",
            p.name
        )),
        "{}",
        reply.text
    );
    let rows = table(&reply);
    assert_eq!(
        rows[0].join(" "),
        "REPLICA STARTED BEFORE STARTED NOW STATE HEALTH"
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (r, name) in rows[1..].iter().zip(["backend-1", "backend-2"]) {
        assert_eq!(
            (r[0].as_str(), r[3].as_str(), r[4].as_str()),
            (name, "running", "healthy")
        );
    }
    let after = replicas(&p, "backend").await;
    assert_eq!(after.len(), 2);
    for (i, b) in after.iter().zip(&before) {
        assert!(started_at(i) > *b, "{:?} started again", i.name);
        assert!(running(i), "{:?}", i.state);
        assert_eq!(health(i), Some(HealthStatusEnum::HEALTHY), "{:?}", i.name);
    }
    assert_eq!(
        last_audit(&rig).await,
        (
            Step::Succeeded,
            None,
            Some("restarted backend-1, backend-2: running, healthy".into())
        )
    );

    // The command's choices allow worker, but this project has none.
    let missing = confirmed(&rig, "restart", &[("service", text("worker"))]).await;
    let want = format!("no service worker in project {}; known: backend", p.name);
    assert!(missing.text.contains(&want), "{}", missing.text);
    assert_eq!(last_audit(&rig).await.0, Step::Failed);
}

#[tokio::test]
async fn restart_stops_at_a_replica_that_comes_back_unhealthy() {
    let p = Project::new().await;
    // v3 answers 404 on /health: it turns unhealthy after every start.
    let one = p
        .run("backend", "runbot-test/backend:v3", 1, quick_stop)
        .await;
    let two = p
        .run("backend", "runbot-test/backend:v3", 2, quick_stop)
        .await;
    p.wait_health(&one, HealthStatusEnum::UNHEALTHY).await;
    let before = started_at(&p.docker.inspect_container(&two, None).await.unwrap());
    let rig = rig_on(&p).await;

    let reply = confirmed(&rig, "restart", &[("service", text("backend"))]).await;
    assert!(
        reply
            .text
            .contains("backend-1 did not come back ready within 30 s")
            && reply.text.contains("it is running, unhealthy")
            && reply
                .text
                .contains("not restarted, so that they keep serving: backend-2"),
        "{}",
        reply.text
    );
    let second = p.docker.inspect_container(&two, None).await.unwrap();
    assert_eq!(started_at(&second), before, "backend-2 was left alone");
    assert_eq!(last_audit(&rig).await.0, Step::Failed);
}

#[tokio::test]
async fn scale_makes_replicas_like_compose_and_removes_the_newest_first() {
    let p = Project::new().await;
    let first = p
        .run("backend", "runbot-test/backend:v2", 1, |c| {
            quick_stop(c);
            c.env = Some(vec!["APP_MODE=prod".into()]);
            c.host_config.as_mut().unwrap().restart_policy = Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            });
        })
        .await;
    p.wait_health(&first, HealthStatusEnum::HEALTHY).await;
    let rig = rig_on(&p).await;
    let scale_to = |n: i64| {
        vec![
            ("service", text("backend")),
            ("replicas", RawValue::Integer(n)),
        ]
    };

    let plan = dry_run(&rig, "scale", &scale_to(3)).await;
    assert!(
        plan.contains("scale backend from 1 to 3: create backend-2, backend-3"),
        "{plan}"
    );
    assert_eq!(
        replicas(&p, "backend").await.len(),
        1,
        "a dry run creates nothing"
    );

    let up = confirmed(&rig, "scale", &scale_to(3)).await;
    assert!(
        up.text.contains(&format!(
            "scaled **backend** of {} from 1 to 3: created backend-2, backend-3",
            p.name
        )),
        "{}",
        up.text
    );
    let three = replicas(&p, "backend").await;
    assert_eq!(three.len(), 3);
    assert_eq!(
        three[0].id.as_deref(),
        Some(first.as_str()),
        "number 1 is kept"
    );
    for (i, n) in three.iter().zip(1u32..) {
        assert_eq!(
            i.name.as_deref(),
            Some(format!("/{}-backend-{n}", p.name).as_str())
        );
        assert_eq!(label(i, "com.docker.compose.project"), p.name);
        assert_eq!(label(i, "com.docker.compose.service"), "backend");
        assert_eq!(number(i), n);
        assert_eq!(label(i, "com.docker.compose.oneoff"), "False");
        let config = i.config.as_ref().unwrap();
        assert_eq!(config.image.as_deref(), Some("runbot-test/backend:v2"));
        assert_eq!(i.image, three[0].image, "the same image");
        assert!(
            config
                .env
                .as_ref()
                .unwrap()
                .contains(&"APP_MODE=prod".to_string()),
            "{:?}",
            config.env
        );
        assert!(config.healthcheck.is_some());
        let host = i.host_config.as_ref().unwrap();
        assert_eq!(
            host.restart_policy.as_ref().and_then(|r| r.name),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert!(running(i), "{:?}", i.state);
    }
    // It waited until the new ones were healthy.
    assert!(three[1..]
        .iter()
        .all(|i| health(i) == Some(HealthStatusEnum::HEALTHY)));
    assert_eq!(table(&up).len(), 4, "the service's replicas now");
    assert_eq!(
        last_audit(&rig).await,
        (
            Step::Succeeded,
            None,
            Some("scaled backend from 1 to 3: created backend-2, backend-3".into())
        )
    );

    let same = confirmed(&rig, "scale", &scale_to(3)).await;
    assert!(
        same.text
            .contains("**backend** already runs 3 replicas; nothing changed."),
        "{}",
        same.text
    );
    let ids = |v: &[ContainerInspectResponse]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&replicas(&p, "backend").await), ids(&three));

    let plan = dry_run(&rig, "scale", &scale_to(1)).await;
    assert!(
        plan.contains("scale backend from 3 to 1: stop and remove backend-3, backend-2"),
        "{plan}"
    );
    assert_eq!(
        replicas(&p, "backend").await.len(),
        3,
        "a dry run removes nothing"
    );

    let down = confirmed(&rig, "scale", &scale_to(1)).await;
    assert!(
        down.text
            .contains("from 3 to 1: stopped and removed backend-3, backend-2"),
        "{}",
        down.text
    );
    let one = replicas(&p, "backend").await;
    assert_eq!(
        ids(&one),
        [Some(first.clone())],
        "number 1 stays, 2 and 3 are gone"
    );
    assert!(running(&one[0]));

    // Zero is refused before anything runs.
    let edits = Arc::new(Edits::default());
    let zero = rig.ask(devops(), "scale", &scale_to(0), &edits).await;
    let said = &message(&zero).text;
    assert!(said.contains("replicas"), "{said}");
    assert_eq!(last_audit(&rig).await.0, Step::Invalid);
    assert_eq!(ids(&replicas(&p, "backend").await), [Some(first)]);
}
