//! `runbot discord register-commands`: each command in `commands/` becomes one Discord slash
//! command, and all of them are registered in one bulk overwrite, so Discord's list is exactly
//! the folder's (a removed file removes its command).

use std::time::Duration;

use serenity::all::{
    CommandOptionType, CommandType, CreateCommand, CreateCommandOption, InstallationContext,
    InteractionContext,
};

use super::DiscordAdapter;
use crate::chat::DeliveryError;
use crate::commands::{CommandSpec, Commands, OptionKind, OptionSpec};
use crate::config::Settings;

pub const DRY_RUN: &str = "dry_run";
pub const DRY_RUN_DESCRIPTION: &str = "Show what would happen, change nothing";

/// Discord's longest string option value.
const STRING_MAX: usize = 6000;
/// Text options without a `max_length` are limited to this by runbot's own parsing.
const TEXT_DEFAULT_MAX: usize = 200;
/// The longest text form of an IPv6 address (with an embedded IPv4 one).
const IP_MAX: usize = 45;
const TAG_MAX: usize = 128;
const DURATION_MAX: usize = 16;
/// How often a 429 is waited out before giving up.
const RATE_LIMIT_RETRIES: usize = 3;

/// One command as Discord's CHAT_INPUT command. Required options come first (Discord refuses
/// them after optional ones); mutating commands get `dry_run` last.
pub fn build(spec: &CommandSpec) -> CreateCommand {
    let (required, optional): (Vec<&OptionSpec>, Vec<&OptionSpec>) =
        spec.options.iter().partition(|o| o.required);
    let mut options: Vec<CreateCommandOption> =
        required.into_iter().chain(optional).map(option).collect();
    if spec.takes_dry_run() {
        options.push(CreateCommandOption::new(
            CommandOptionType::Boolean,
            DRY_RUN,
            DRY_RUN_DESCRIPTION,
        ));
    }
    CreateCommand::new(&spec.name)
        .kind(CommandType::ChatInput)
        .description(&spec.description)
        .set_options(options)
        // Servers only: policy decides by a member's roles, which DMs do not have.
        .contexts(vec![InteractionContext::Guild])
        .integration_types(vec![InstallationContext::Guild])
}

fn option(o: &OptionSpec) -> CreateCommandOption {
    let kind = match o.kind {
        OptionKind::Integer => CommandOptionType::Integer,
        OptionKind::Boolean => CommandOptionType::Boolean,
        OptionKind::String
        | OptionKind::Ip
        | OptionKind::Cidr
        | OptionKind::Tag
        | OptionKind::Duration => CommandOptionType::String,
    };
    let mut opt = CreateCommandOption::new(kind, &o.name, &o.description).required(o.required);
    match o.kind {
        OptionKind::Integer => {
            if let Some(min) = o.min {
                opt = match u64::try_from(min) {
                    Ok(m) => opt.min_int_value(m),
                    // serenity takes only unsigned integer bounds; a float one is the same number.
                    Err(_) => opt.min_number_value(min as f64),
                };
            }
            if let Some(max) = o.max {
                opt = match u64::try_from(max) {
                    Ok(m) => opt.max_int_value(m),
                    Err(_) => opt.max_number_value(max as f64),
                };
            }
            for c in &o.choices {
                if let Ok(v) = c.parse::<i32>() {
                    opt = opt.add_int_choice(c, v);
                }
            }
        }
        OptionKind::Boolean => {}
        OptionKind::String
        | OptionKind::Ip
        | OptionKind::Cidr
        | OptionKind::Tag
        | OptionKind::Duration => {
            if o.choices.is_empty() {
                let default = match o.kind {
                    OptionKind::Ip => IP_MAX,
                    // An IPv6 address and /128.
                    OptionKind::Cidr => IP_MAX + 4,
                    OptionKind::Tag => TAG_MAX,
                    OptionKind::Duration => DURATION_MAX,
                    _ => TEXT_DEFAULT_MAX,
                };
                let max = o.max_length.unwrap_or(default).clamp(1, STRING_MAX);
                opt = opt.max_length(u16::try_from(max).unwrap_or(u16::MAX));
            } else {
                for c in &o.choices {
                    opt = opt.add_string_choice(c, c);
                }
            }
        }
    }
    opt
}

pub fn build_all(commands: &Commands) -> Vec<CreateCommand> {
    commands.iter().map(build).collect()
}

/// Replaces the application's commands (global, or in one guild) with `commands`. A 429 is
/// waited out a few times; anything else Discord refuses is returned as it said it.
pub async fn register(
    adapter: &DiscordAdapter,
    commands: &Commands,
    guild: Option<u64>,
) -> Result<Vec<serde_json::Value>, DeliveryError> {
    let body = build_all(commands);
    let mut tries = 0;
    loop {
        match adapter.overwrite_commands(guild, &body).await {
            Err(DeliveryError::RateLimited { retry_after }) if tries < RATE_LIMIT_RETRIES => {
                tries += 1;
                tokio::time::sleep(retry_after.min(Duration::from_secs(60))).await;
            }
            other => return other,
        }
    }
}

/// What was registered, as Discord answered it.
#[derive(Debug)]
pub struct Registration {
    /// `globally` or `in guild N`.
    pub scope: String,
    /// (name, option names) of each command Discord now has.
    pub commands: Vec<(String, Vec<String>)>,
    /// Where the command files came from.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Settings or command files are missing or wrong: nothing was sent.
    #[error("{0}")]
    Setup(String),
    /// Discord did not take the commands.
    #[error("Discord did not register the commands: {0}")]
    Discord(DeliveryError),
}

/// Loads `commands/`, builds the adapter from settings, and registers.
pub async fn register_from_settings(
    settings: &Settings,
    guild: Option<u64>,
) -> Result<Registration, RegisterError> {
    let d = &settings.discord;
    if d.bot_token.is_none() {
        return Err(RegisterError::Setup(
            "discord.bot_token is not set: registering commands needs the bot's token \
             (RUNBOT__DISCORD__BOT_TOKEN, or bot_token under [discord])"
                .into(),
        ));
    }
    if d.application_id.is_none() {
        return Err(RegisterError::Setup(
            "discord.application_id is not set: copy it from Developer Portal → General Information \
             (RUNBOT__DISCORD__APPLICATION_ID, or application_id under [discord])"
                .into(),
        ));
    }
    let (commands, source) = crate::commands::Commands::from_settings(settings)
        .map_err(|e| RegisterError::Setup(format!("invalid command files: {e:#}")))?;
    let adapter =
        DiscordAdapter::new(settings).map_err(|e| RegisterError::Setup(format!("{e:#}")))?;
    let answer = register(&adapter, &commands, guild)
        .await
        .map_err(RegisterError::Discord)?;
    let names = |v: &serde_json::Value| v["name"].as_str().unwrap_or("?").to_string();
    Ok(Registration {
        scope: match guild {
            Some(g) => format!("in guild {g}"),
            None => "globally".into(),
        },
        commands: answer
            .iter()
            .map(|c| {
                let options = c["options"]
                    .as_array()
                    .map(|o| o.iter().map(names).collect())
                    .unwrap_or_default();
                (names(c), options)
            })
            .collect(),
        source,
    })
}

/// `runbot discord register-commands`: prints what was registered (exit 0), or what Discord
/// refused (exit 1); exit 2 when settings or command files are wrong. Tracing stays off:
/// stdout says what was registered.
pub async fn register_cli(settings: &Settings, guild: Option<u64>) -> u8 {
    match register_from_settings(settings, guild).await {
        Ok(done) => {
            println!(
                "registered {} commands {} (from {}):",
                done.commands.len(),
                done.scope,
                done.source
            );
            for (name, options) in &done.commands {
                println!("  /{name} {}", options.join(" "));
            }
            0
        }
        Err(e @ RegisterError::Setup(_)) => {
            eprintln!("runbot: {e}");
            2
        }
        Err(e @ RegisterError::Discord(_)) => {
            eprintln!("runbot: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_command_builds_with_required_options_first() {
        let commands = Commands::load(None).unwrap();
        for spec in commands.iter() {
            let v = serde_json::to_value(build(spec)).unwrap();
            assert_eq!(v["name"], spec.name.as_str());
            assert_eq!(v["type"], 1);
            let options = v["options"].as_array().unwrap();
            let first_optional = options
                .iter()
                .position(|o| o["required"] != true)
                .unwrap_or(options.len());
            assert!(
                options[first_optional..]
                    .iter()
                    .all(|o| o["required"] != true),
                "{}: {options:?}",
                spec.name
            );
            let dry_run = options.iter().find(|o| o["name"] == DRY_RUN);
            assert_eq!(dry_run.is_some(), spec.takes_dry_run(), "{}", spec.name);
        }
        let logs = serde_json::to_value(build(commands.get("logs").unwrap())).unwrap();
        assert_eq!(logs["options"][0]["choices"][0]["value"], "backend");
        assert_eq!(logs["options"][1]["type"], 4);
        assert_eq!(logs["options"][1]["min_value"], 1);
        assert_eq!(logs["options"][1]["max_value"], 5000);
        assert_eq!(logs["options"][2]["max_length"], 64);
        let block = serde_json::to_value(build(commands.get("block-ip").unwrap())).unwrap();
        assert_eq!(block["options"][0]["max_length"], IP_MAX + 4);
        assert_eq!(block["options"][3]["name"], DRY_RUN);
        assert_eq!(block["options"][3]["type"], 5);
    }
}
