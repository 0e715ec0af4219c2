//! `runbot slack manifest`: the Slack app to create, as a manifest (JSON, which Slack's "Create
//! an app → From a manifest" takes as well as YAML), generated from `commands/` so the slash
//! commands Slack shows are exactly the ones runbot runs.

use serde_json::{json, Value};

use crate::commands::line::usage;
use crate::commands::Commands;
use crate::config::{Settings, SlackMode};

/// Bot scopes: post and edit cards (`chat:write`), in public channels runbot was not invited
/// to (`chat:write.public`), slash commands (`commands`), DMs for pages (`im:write`), and the
/// history read to find a message after a crash (`channels:history`, `groups:history`,
/// `im:history` for DM pages).
pub const BOT_SCOPES: [&str; 7] = [
    "chat:write",
    "chat:write.public",
    "commands",
    "im:write",
    "channels:history",
    "groups:history",
    "im:history",
];

/// Slack's limits for a slash command in a manifest.
const DESCRIPTION_MAX: usize = 100;
const USAGE_HINT_MAX: usize = 100;

/// The manifest for `mode`; `url` is runbot's public address, needed in HTTP mode only.
pub fn manifest(commands: &Commands, mode: SlackMode, url: Option<&str>) -> Result<Value, String> {
    let base = match (mode, url) {
        (SlackMode::Http, None) => {
            return Err(
                "--url is required with --mode http: the https address Slack reaches runbot at, e.g. https://runbot.example.com".into(),
            )
        }
        (_, Some(u)) => {
            let parsed = url::Url::parse(u).map_err(|_| format!("--url {u:?} is not a URL"))?;
            if parsed.scheme() != "https" {
                return Err(format!(
                    "--url {u:?} must be https: Slack only posts to https addresses"
                ));
            }
            Some(u.trim_end_matches('/').to_string())
        }
        (SlackMode::Socket, None) => None,
    };
    let http = mode == SlackMode::Http;
    let slash_commands: Vec<Value> = commands
        .iter()
        .map(|c| {
            let hint = usage(c);
            let hint = hint
                .strip_prefix(&format!("/{}", c.name))
                .unwrap_or(&hint)
                .trim();
            let mut entry = json!({
                "command": format!("/{}", c.name),
                "description": crate::domain::text::clip(&c.description, DESCRIPTION_MAX),
                "should_escape": false,
            });
            if !hint.is_empty() {
                entry["usage_hint"] = json!(crate::domain::text::clip(hint, USAGE_HINT_MAX));
            }
            if let (true, Some(b)) = (http, &base) {
                entry["url"] = json!(format!("{b}/slack/commands"));
            }
            entry
        })
        .collect();
    let mut interactivity = json!({ "is_enabled": true });
    let mut settings = json!({
        "org_deploy_enabled": false,
        "socket_mode_enabled": !http,
        "token_rotation_enabled": false,
    });
    if let (true, Some(b)) = (http, &base) {
        // No event subscription: runbot acts on no event (`/slack/events` still answers
        // Slack's url_verification, should someone subscribe one).
        interactivity["request_url"] = json!(format!("{b}/slack/interactions"));
    }
    settings["interactivity"] = interactivity;
    Ok(json!({
        "_metadata": { "major_version": 1, "minor_version": 1 },
        "display_information": {
            "name": "runbot",
            "description": "Incident response: alert cards, runbook actions, on-call pages, everything audited.",
            "background_color": "#1d1c1d",
        },
        "features": {
            "bot_user": { "display_name": "runbot", "always_online": true },
            "slash_commands": slash_commands,
        },
        "oauth_config": { "scopes": { "bot": BOT_SCOPES } },
        "settings": settings,
    }))
}

/// `runbot slack manifest`: prints the manifest (exit 0), or what is wrong (exit 2).
pub fn run_cli(
    settings: &Settings,
    mode: Option<SlackMode>,
    url: Option<&str>,
    out: &mut impl std::io::Write,
) -> u8 {
    let dir = settings.commands.resolve("commands");
    let commands = match Commands::load(dir.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return 2;
        }
    };
    // The flag, else what the settings say, else Socket Mode (nothing to expose).
    let s = &settings.slack;
    let mode = mode
        .or(s.mode)
        .unwrap_or(if s.signing_secret.is_some() && s.app_token.is_none() {
            SlackMode::Http
        } else {
            SlackMode::Socket
        });
    match manifest(&commands, mode, url) {
        Ok(m) => {
            let text = serde_json::to_string_pretty(&m).expect("a manifest serializes");
            if writeln!(out, "{text}").is_err() {
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_a_slash_command_with_a_usage_hint() {
        let commands = Commands::load(None).unwrap();
        let m = manifest(&commands, SlackMode::Socket, None).unwrap();
        let list = m["features"]["slash_commands"].as_array().unwrap();
        assert_eq!(list.len(), commands.iter().count());
        let logs = list.iter().find(|c| c["command"] == "/logs").unwrap();
        assert!(logs["usage_hint"].as_str().unwrap().contains("service:"));
        assert!(logs.get("url").is_none());
        assert_eq!(m["settings"]["socket_mode_enabled"], true);
        for c in list {
            assert!(c["description"].as_str().unwrap().chars().count() <= DESCRIPTION_MAX);
        }
    }

    #[test]
    fn http_mode_needs_an_https_url_and_points_every_part_at_it() {
        let commands = Commands::load(None).unwrap();
        assert!(manifest(&commands, SlackMode::Http, None)
            .unwrap_err()
            .contains("--url is required"));
        assert!(
            manifest(&commands, SlackMode::Http, Some("http://x.example"))
                .unwrap_err()
                .contains("https")
        );
        let m = manifest(&commands, SlackMode::Http, Some("https://rb.example.com/")).unwrap();
        assert_eq!(m["settings"]["socket_mode_enabled"], false);
        assert_eq!(
            m["settings"]["interactivity"]["request_url"],
            "https://rb.example.com/slack/interactions"
        );
        assert!(m["features"]["slash_commands"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["url"] == "https://rb.example.com/slack/commands"));
    }
}
