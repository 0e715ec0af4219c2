//! `deploy/prometheus/` and `deploy/alertmanager/` checked with the real tools: promtool
//! (Debian's `prometheus`) checks the rules and runs their unit tests, amtool checks the
//! Alertmanager config and where each alert is routed, and a real Alertmanager loaded with the
//! shipped file applies its inhibition. A failure shows the tool's own output.

use crate::common::Alertmanager;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn deploy(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(sub)
}

fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

fn promtool() -> String {
    tool("RUNBOT_TEST_PROMTOOL_BIN", "/usr/bin/promtool")
}

fn amtool() -> String {
    tool("RUNBOT_TEST_AMTOOL_BIN", "/usr/bin/amtool")
}

/// Runs `bin args` in `dir`; panics with its output unless it succeeds.
fn run(bin: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} ({e}): run the tests with scripts/test"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{bin} {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// `(alertname, severity)` of every rule in alerts.yml, read from its lines: each
/// `- alert: NAME` must be followed by its `severity:` label before the next rule.
fn rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let mut rules: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            rules.push((name.to_string(), None));
        } else if let Some(sev) = line.strip_prefix("severity: ") {
            let last = rules.last_mut().expect("a severity before any alert");
            assert!(last.1.is_none(), "{} has two severities", last.0);
            last.1 = Some(sev.to_string());
        }
    }
    rules
        .into_iter()
        .map(|(n, s)| {
            let s = s.unwrap_or_else(|| panic!("{n} has no severity label"));
            (n, s)
        })
        .collect()
}

#[test]
fn promtool_accepts_the_rules() {
    let out = run(
        &promtool(),
        &["check", "rules", "alerts.yml"],
        &deploy("prometheus"),
    );
    assert!(out.contains("SUCCESS: 10 rules found"), "{out}");
}

#[test]
fn every_alert_fires_past_its_threshold_and_duration_and_not_under_it() {
    let out = run(
        &promtool(),
        &["test", "rules", "alerts.test.yml"],
        &deploy("prometheus"),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The rules are runbot's runbook: the same alert names as commands/alerts.toml (a card finds
/// its checks and buttons by name), severities runbot knows, and a link to each entry.
#[test]
fn the_rules_name_the_runbook_entries_with_known_severities() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let entries: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("commands/alerts.toml")).unwrap())
            .unwrap();
    let mut expected: BTreeSet<String> = entries["alerts"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(expected.len(), 9, "the runbook has nine alerts");
    expected.insert("Watchdog".into());

    let rules = rules();
    let names: BTreeSet<String> = rules.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, expected);
    assert_eq!(rules.len(), names.len(), "an alert is defined twice");

    let severities: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("policies/severities.toml")).unwrap())
            .unwrap();
    let known = severities["map"].as_table().unwrap();
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    for (name, severity) in &rules {
        assert!(
            known.contains_key(severity),
            "{name}: severity {severity:?} is not in policies/severities.toml"
        );
        if name != "Watchdog" {
            let url = format!("runbook_url: \"https://runbot.example.com/runbook/{name}\"");
            assert!(text.contains(&url), "{name} has no {url}");
        }
    }
}

#[test]
fn amtool_accepts_the_alertmanager_config() {
    let out = run(
        &amtool(),
        &["check-config", "alertmanager.yml"],
        &deploy("alertmanager"),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Each alert of the rules, with its severity, reaches the receiver for that severity.
#[test]
fn every_alert_is_routed_by_its_severity() {
    let dir = deploy("alertmanager");
    let mut cases: Vec<(String, String, &str)> = rules()
        .into_iter()
        .map(|(name, severity)| {
            let receiver = match (name.as_str(), severity.as_str()) {
                ("Watchdog", _) => "null",
                (_, "critical") => "runbot-critical",
                (_, "warning") => "runbot-warning",
                (n, s) => panic!("{n}: no expected receiver for severity {s}"),
            };
            (name, severity, receiver)
        })
        .collect();
    // A severity the routes do not name still reaches runbot.
    cases.push(("SomethingElse".into(), "info".into(), "runbot"));
    for (name, severity, receiver) in cases {
        let verify = format!("--verify.receivers={receiver}");
        let alertname = format!("alertname={name}");
        let sev = format!("severity={severity}");
        run(
            &amtool(),
            &[
                "config",
                "routes",
                "test",
                "--config.file=alertmanager.yml",
                &verify,
                &alertname,
                &sev,
                "service=backend",
            ],
            &dir,
        );
    }
}

/// A real Alertmanager with the shipped file: APIDown of the backend mutes the backend's
/// HighErrorRate and SlowResponseTime, and nothing of another service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_mutes_errors_and_latency_of_the_same_service() {
    let config = std::fs::read_to_string(deploy("alertmanager/alertmanager.yml")).unwrap();
    let am = Alertmanager::start(&config).await;
    let alert = |name: &str, service: &str, severity: &str| json!({"labels": {"alertname": name, "service": service, "severity": severity}});
    am.push(json!([
        alert("APIDown", "backend", "critical"),
        alert("HighErrorRate", "backend", "critical"),
        alert("SlowResponseTime", "backend", "warning"),
        alert("HighErrorRate", "nginx", "critical"),
        alert("HighMemoryUsage", "backend", "warning"),
    ]))
    .await;

    let want: BTreeSet<(String, String, bool)> = [
        ("APIDown", "backend", false),
        ("HighErrorRate", "backend", true),
        ("SlowResponseTime", "backend", true),
        ("HighErrorRate", "nginx", false),
        ("HighMemoryUsage", "backend", false),
    ]
    .iter()
    .map(|(n, s, i)| (n.to_string(), s.to_string(), *i))
    .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts: Vec<Value> = reqwest::get(format!("{}/api/v2/alerts", am.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let got: BTreeSet<(String, String, bool)> = alerts
            .iter()
            .map(|a| {
                let inhibited = a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty());
                (
                    a["labels"]["alertname"].as_str().unwrap().to_string(),
                    a["labels"]["service"].as_str().unwrap().to_string(),
                    inhibited,
                )
            })
            .collect();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "inhibition: got {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
