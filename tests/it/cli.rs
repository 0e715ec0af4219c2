//! The `runbot` binary itself: check-config, --version, --help, and serve with SIGTERM.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures, free_port};

fn runbot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbot"));
    // Only what a test sets may reach the binary.
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn check_config_accepts_good_settings_and_explains_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[http]\nlisten = \"0.0.0.0:9090\"\n[alertmanager]\nwebhook_token = \"s3cret-token-value\"\n",
    )
    .unwrap();
    let out = runbot()
        .current_dir(dir.path())
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("settings ok") && stdout.contains("0.0.0.0:9090"),
        "{stdout}"
    );
    assert!(stdout.contains("bearer token"), "{stdout}");
    assert!(stdout.contains("9 runbook entries"), "{stdout}");
    assert!(
        !stdout.contains("s3cret-token-value"),
        "a secret was printed"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[http]\nlisen = \"0.0.0.0:9090\"\n").unwrap();
    let out = runbot()
        .current_dir(dir.path())
        .arg("check-config")
        .env("RUNBOT_CONFIG", &bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("http.lisen") && stderr.contains("did you mean `http.listen`"),
        "{stderr}"
    );

    let out = runbot()
        .current_dir(dir.path())
        .arg("check-config")
        .env("RUNBOT__DATABASE__URL", "mysql://root:hunter22@db/x")
        .env("RUNBOT__HTTP__MAX_BODY_BYTES", "lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("max_body_bytes"), "{stderr}");
    assert!(!stderr.contains("hunter22"), "{stderr}");

    let out = runbot()
        .current_dir(dir.path())
        .arg("check-config")
        .env("RUNBOT__DATABASE__URL", "mysql://root:hunter22@db/x")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("database.url must start with"), "{stderr}");
    assert!(!stderr.contains("hunter22"), "{stderr}");

    let broken_policies = dir.path().join("policies");
    std::fs::create_dir(&broken_policies).unwrap();
    std::fs::write(
        broken_policies.join("severities.toml"),
        "label = \"severity\"\ndefault = \"sev9\"\n[map]\n",
    )
    .unwrap();
    let out = runbot()
        .current_dir(dir.path())
        .arg("check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("severities.toml"), "{stderr}");
}

#[test]
fn check_config_reads_a_secret_from_a_private_file_and_refuses_one_open_to_others() {
    use std::os::unix::fs::PermissionsExt;
    const TOKEN: &str = "discord-bot-token-in-a-mounted-secret";
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("discord_token");
    std::fs::write(&secret, format!("{TOKEN}\n")).unwrap();
    let check = |mode: u32| {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = runbot()
            .current_dir(dir.path())
            .arg("check-config")
            .env("RUNBOT__DISCORD__ALERT_CHANNEL_ID", "123456789012345678")
            .env("RUNBOT__DISCORD__BOT_TOKEN_FILE", &secret)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(TOKEN), "the secret was printed: {all}");
        (out.status.code(), all)
    };
    let (code, all) = check(0o600);
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("settings ok"), "{all}");
    let (code, all) = check(0o644);
    assert_eq!(code, Some(2), "{all}");
    assert!(
        all.contains("discord.bot_token_file") && all.contains("chmod 600"),
        "{all}"
    );
}

#[test]
fn check_config_refuses_an_unknown_executor_and_names_the_closest() {
    let dir = tempfile::tempdir().unwrap();
    let commands = dir.path().join("commands");
    std::fs::create_dir(&commands).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("commands");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, commands.join(path.file_name().unwrap())).unwrap();
    }
    let restart = commands.join("restart.toml");
    let text = std::fs::read_to_string(&restart).unwrap();
    std::fs::write(
        &restart,
        text.replace("\"docker.restart\"", "\"docker.restrat\""),
    )
    .unwrap();
    let out = runbot()
        .current_dir(dir.path())
        .arg("check-config")
        .env("RUNBOT__COMMANDS__DIR", &commands)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "unknown executor \"docker.restrat\" in commands/restart.toml; did you mean \"docker.restart\"?"
        ),
        "{stderr}"
    );
}

#[test]
fn version_and_help_list_the_commands() {
    let out = runbot().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("runbot "));
    let out = runbot().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("serve") && help.contains("check-config") && help.contains("--config"),
        "{help}"
    );
}

/// With no settings at all the binary serves, logs JSON with request ids, never logs the
/// token, stops on SIGTERM, and what it accepted is there after a restart.
#[test]
fn serve_runs_logs_json_stops_on_sigterm_and_keeps_what_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let start = || {
        runbot()
            .current_dir(dir.path())
            .arg("serve")
            .env("RUNBOT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN", "fixture-token")
            .env("RUNBOT__CONSOLE__TOKEN", "console-token-0123456789")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let wait_ready = || {
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while client.get(format!("{base}/healthz")).send().await.is_err() {
                assert!(Instant::now() < deadline, "runbot serve did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut child = start();
    wait_ready();
    let fixture = &fixtures()[0];
    let status = rt.block_on(async {
        client
            .post(format!("{base}/webhooks/alertmanager"))
            .bearer_auth("fixture-token")
            .header("content-type", "application/json")
            .header("x-request-id", "trace-me-42")
            .body(fixture.body.clone())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    let refused = rt.block_on(async {
        client
            .post(format!("{base}/webhooks/alertmanager"))
            .bearer_auth("guessed-token-123")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(refused, 401);

    let metrics = rt.block_on(async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains(
            "runbot_webhooks_received_total{source=\"alertmanager\",result=\"accepted\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("result=\"unauthorized\"} 1"), "{metrics}");
    assert!(
        metrics.contains("runbot_alerts_firing{severity=\"sev1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runbot_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    let pid = child.id() as i32;
    let stopped = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "runbot did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit}");
    let stdout: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .collect();
    let stderr: String = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map(|l| l.unwrap() + "\n")
        .collect();
    let all = stdout.join("\n") + &stderr;
    assert!(
        !all.contains("fixture-token") && !all.contains("guessed-token-123"),
        "a token was logged:\n{all}"
    );
    for line in &stdout {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
    }
    assert!(
        stdout
            .iter()
            .any(|l| l.contains("alert group is now firing")
                && l.contains("\"request_id\":\"trace-me-42\"")),
        "the request id is on the request's log lines:\n{all}"
    );
    assert!(stdout.iter().any(|l| l.contains("SIGTERM")), "{all}");
    assert!(
        dir.path().join("runbot.db").exists(),
        "the default store is ./runbot.db"
    );

    // A restart finds what was accepted.
    let mut child = start();
    wait_ready();
    let groups: serde_json::Value = rt.block_on(async {
        client
            .get(format!("{base}/api/alert-groups"))
            .bearer_auth("console-token-0123456789")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(groups.as_array().unwrap().len(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_test_fires_a_runbook_alert_whose_card_shows_and_says_what_went_wrong() {
    use common::{Serve, BOT_TOKEN, CHANNEL, TOKEN};
    let fake = fake_discord::FakeDiscord::start_with_channels(BOT_TOKEN, &[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let runbot_server = Serve::start(dir.path(), &fake).await;
    let port = runbot_server.url.rsplit(':').next().unwrap().to_string();
    let alert_test = |token: &str, args: &[&str]| {
        runbot()
            .current_dir(dir.path())
            .env("RUNBOT__HTTP__LISTEN", format!("0.0.0.0:{port}"))
            .env("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN", token)
            .args(["alert", "test"])
            .args(args)
            .output()
            .unwrap()
    };
    let said = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // The defaults: APIDown, critical, runbot's own http.listen (0.0.0.0 reached on loopback),
    // the configured token.
    let sent = alert_test(TOKEN, &[]);
    assert!(sent.status.success(), "{}", said(&sent));
    assert!(
        said(&sent).contains("Sent a test APIDown (severity = critical)")
            && said(&sent).contains("alert group #1"),
        "{}",
        said(&sent)
    );
    // A card, as a newcomer would see it, within seconds.
    let cards = fake.wait_for_messages(1, Duration::from_secs(10)).await;
    let card = cards[0].body.to_string();
    assert!(card.contains("API down") && card.contains("Sev1"), "{card}");
    assert!(
        card.contains("a test alert sent by `runbot alert test`"),
        "it says it is a test: {card}"
    );

    let refused = alert_test("not-the-token", &["--alertname", "HighErrorRate"]);
    assert_eq!(refused.status.code(), Some(1), "{}", said(&refused));
    assert!(
        said(&refused)
            .contains("runbot refused the test alert (401 Unauthorized): invalid bearer token"),
        "{}",
        said(&refused)
    );
    let unknown = alert_test(TOKEN, &["--alertname", "APIDowm"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", said(&unknown));
    assert!(
        said(&unknown).contains("\"APIDowm\" is not an alert of the runbook: use one of")
            && said(&unknown).contains("APIDown"),
        "{}",
        said(&unknown)
    );
    let severity = alert_test(TOKEN, &["--severity", "catastrophic"]);
    assert_eq!(severity.status.code(), Some(2), "{}", said(&severity));
    assert!(
        said(&severity).contains("severity \"catastrophic\" is not in policies/severities.toml"),
        "{}",
        said(&severity)
    );
    let nobody = alert_test(
        TOKEN,
        &[
            "--url",
            &format!("http://127.0.0.1:{}", common::free_port()),
        ],
    );
    assert_eq!(nobody.status.code(), Some(1), "{}", said(&nobody));
    assert!(
        said(&nobody).contains("no runbot answered at") && said(&nobody).contains("runbot serve"),
        "{}",
        said(&nobody)
    );
    // Only the first reached runbot: one group, one card.
    assert_eq!(fake.messages_in(CHANNEL).len(), 1);
}
