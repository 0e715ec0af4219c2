//! `runbot discord register-commands`: the real binary registers every command of `commands/`
//! with the fake Discord, which refuses what Discord refuses.

use std::path::Path;
use std::process::{Command, Output};

use fake_discord::{FakeDiscord, APPLICATION_ID, GUILD_ID};
use runbot::commands::{Commands, OptionKind};
use serde_json::{json, Value};

const BOT_TOKEN: &str = "fake-bot-token-0123456789abcdef";
const CHANNEL: u64 = 111_111_111_111_111_111;

fn commands_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("commands")
}

/// The binary with only the settings a test gives it.
fn runbot(fake: &FakeDiscord, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            c.env_remove(k);
        }
    }
    c.current_dir(dir)
        .env("RUNBOT__DISCORD__API_BASE", fake.base_url())
        .env("RUNBOT__DISCORD__APPLICATION_ID", APPLICATION_ID)
        .env("RUNBOT__COMMANDS__DIR", commands_dir());
    c
}

fn with_token(mut c: Command, token: &str) -> Command {
    c.env("RUNBOT__DISCORD__BOT_TOKEN", token)
        .env("RUNBOT__DISCORD__ALERT_CHANNEL_ID", CHANNEL.to_string());
    c
}

fn run(mut c: Command, args: &[&str]) -> (Output, String, String) {
    let out = c
        .args(["discord", "register-commands"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// Every command of the folder is registered as the file says.
fn assert_matches_the_folder(registered: &[Value]) {
    let commands = Commands::load(Some(&commands_dir())).unwrap();
    assert_eq!(registered.len(), commands.len());
    for spec in commands.iter() {
        let c = registered
            .iter()
            .find(|c| c["name"] == spec.name.as_str())
            .unwrap_or_else(|| panic!("/{} was not registered", spec.name));
        assert_eq!(c["type"], 1);
        assert_eq!(c["description"], spec.description.as_str());
        let options = c["options"].as_array().cloned().unwrap_or_default();
        let named = |n: &str| options.iter().find(|o| o["name"] == n).cloned();
        for o in &spec.options {
            let got = named(&o.name).unwrap_or_else(|| panic!("/{} {}", spec.name, o.name));
            let kind = match o.kind {
                OptionKind::Integer => 4,
                OptionKind::Boolean => 5,
                _ => 3,
            };
            assert_eq!(got["type"], kind, "/{} {}", spec.name, o.name);
            assert_eq!(got["description"], o.description.as_str());
            assert_eq!(
                got["required"].as_bool().unwrap_or(false),
                o.required,
                "/{} {}",
                spec.name,
                o.name
            );
            let choices: Vec<&str> = got["choices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["value"].as_str().unwrap())
                .collect();
            assert_eq!(choices, o.choices, "/{} {}", spec.name, o.name);
            assert_eq!(
                got["min_value"].as_i64(),
                o.min,
                "/{} {}",
                spec.name,
                o.name
            );
            assert_eq!(
                got["max_value"].as_i64(),
                o.max,
                "/{} {}",
                spec.name,
                o.name
            );
            if let Some(max) = o.max_length {
                assert_eq!(got["max_length"].as_u64(), Some(max as u64));
            }
        }
        let dry_run = named("dry_run");
        assert_eq!(dry_run.is_some(), spec.takes_dry_run(), "/{}", spec.name);
        if let Some(d) = dry_run {
            assert_eq!(
                (&d["type"], &d["description"]),
                (&json!(5), &json!("Show what would happen, change nothing"))
            );
            assert_eq!(options.last(), Some(&d), "dry_run comes last");
        }
        assert_eq!(
            options.len(),
            spec.options.len() + usize::from(spec.takes_dry_run())
        );
    }
}

#[tokio::test]
async fn register_commands_sends_every_command_and_a_second_run_overwrites() {
    let fake = FakeDiscord::start(BOT_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();

    let (out, stdout, stderr) = run(with_token(runbot(&fake, dir.path()), BOT_TOKEN), &[]);
    assert!(out.status.success(), "{stdout}{stderr}");
    let first = fake.registered_commands(None);
    assert_matches_the_folder(&first);
    assert!(
        stdout.contains(&format!("registered {} commands globally", first.len())),
        "{stdout}"
    );
    assert!(stdout.contains("/restart service dry_run"), "{stdout}");
    assert!(!stdout.contains(BOT_TOKEN) && !stderr.contains(BOT_TOKEN));

    let (out, stdout, stderr) = run(with_token(runbot(&fake, dir.path()), BOT_TOKEN), &[]);
    assert!(out.status.success(), "{stdout}{stderr}");
    let second = fake.registered_commands(None);
    assert_eq!(second.len(), first.len(), "overwritten, not added to");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a["id"], b["id"], "a command keeps its id");
    }
    let puts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/commands"))
        .count();
    assert_eq!(puts, 2, "one bulk overwrite per run");
}

#[tokio::test]
async fn register_commands_in_one_guild() {
    let fake = FakeDiscord::start(BOT_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let guild = GUILD_ID.to_string();
    let (out, stdout, stderr) = run(
        with_token(runbot(&fake, dir.path()), BOT_TOKEN),
        &["--guild", &guild],
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("in guild {guild}")), "{stdout}");
    assert_matches_the_folder(&fake.registered_commands(Some(GUILD_ID)));
    assert!(fake.registered_commands(None).is_empty());

    // A guild the bot is not in: Discord's refusal, printed, exit 1.
    let (out, _, stderr) = run(
        with_token(runbot(&fake, dir.path()), BOT_TOKEN),
        &["--guild", "42000000000000000"],
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Missing Access") && stderr.contains("50001"),
        "{stderr}"
    );
}

#[tokio::test]
async fn register_commands_fails_clearly_without_a_token_or_with_a_refused_one() {
    let fake = FakeDiscord::start(BOT_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();

    let (out, _, stderr) = run(runbot(&fake, dir.path()), &[]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("discord.bot_token is not set"), "{stderr}");

    let mut no_app = with_token(runbot(&fake, dir.path()), BOT_TOKEN);
    no_app.env_remove("RUNBOT__DISCORD__APPLICATION_ID");
    let (out, _, stderr) = run(no_app, &[]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("discord.application_id is not set"),
        "{stderr}"
    );

    let wrong = "another-bot-token-0123456789abcdef";
    let (out, _, stderr) = run(with_token(runbot(&fake, dir.path()), wrong), &[]);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains(wrong), "the token was printed: {stderr}");

    let (out, _, stderr) = run(
        with_token(runbot(&fake, dir.path()), BOT_TOKEN),
        &["--guild", "general"],
    );
    assert!(!out.status.success());
    assert!(stderr.contains("not a Discord id"), "{stderr}");
    assert!(fake.registered_commands(None).is_empty());
}
