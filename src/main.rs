//! The `runbot` command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runbot::audit::cli::AuditCommand;
use runbot::chat::console::cli::{TokenCommand, UserCommand};
use runbot::config::Settings;
use runbot::policy::cli::PolicyCommand;
use runbot::policy::oncall_cli::{EscalationCommand, OncallCommand};

// glibc malloc was a tenth of the writer's time under load (arena locks, consolidation).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "runbot",
    version,
    about = "ChatOps for incident response: Alertmanager in, runbook actions out, everything audited."
)]
struct Cli {
    /// Settings file (TOML). Default: ./runbot.toml when present.
    #[arg(long, global = true, env = "RUNBOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: webhooks, console, API.
    Serve,
    /// Load and validate the settings and data files, print what is wrong, exit non-zero on error.
    CheckConfig,
    /// The audit trail: check its hash chain, print its head, export it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Policies: explain one decision, check the table of expected decisions.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// On call: who is on duty for a role at a moment, from policies/oncall.toml.
    #[command(subcommand)]
    Oncall(OncallCommand),
    /// Escalation: the steps of a chain and whom each would page, from policies/escalation.toml.
    #[command(subcommand)]
    Escalation(EscalationCommand),
    /// Discord: register the slash commands.
    #[command(subcommand)]
    Discord(DiscordCommand),
    /// Slack: print the app manifest to create the app from.
    #[command(subcommand)]
    Slack(SlackCommand),
    /// Settings: print the reference of every key.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Console accounts: add, set a password, disable, list.
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens for scripts: create, revoke, list.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Alerts: send a test one to a running runbot.
    #[command(subcommand)]
    Alert(AlertCommand),
    /// GET a running runbot's /healthz: exit 0 when it answers 200, 1 otherwise. For container
    /// health checks where there is no shell or curl.
    Healthcheck {
        /// runbot's address (default: http.listen, on loopback when it listens on all).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3, value_name = "SECS")]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum AlertCommand {
    /// Post a sample Alertmanager webhook for one of the runbook's alerts to a running runbot,
    /// with the credentials its settings configure, so its card shows within seconds.
    Test {
        /// The runbook's alert to fire.
        #[arg(long, default_value = "APIDown")]
        alertname: String,
        /// The severity label's value, as an alert rule sets it.
        #[arg(long, default_value = "critical")]
        severity: String,
        /// runbot's address (default: http.listen, on loopback when it listens on all).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every settings key with its type, default, environment variable and what it
    /// does, in Markdown (docs/settings.md holds it).
    Reference,
}

#[derive(Subcommand)]
enum DiscordCommand {
    /// Replace the application's slash commands with one per file in commands/ (exit 0), or
    /// print what Discord refused (exit 1). Exit 2 when settings or command files are wrong.
    RegisterCommands {
        /// Register in this server (guild) only, instead of globally: handy for trying changes.
        #[arg(long, value_name = "ID", value_parser = parse_snowflake)]
        guild: Option<u64>,
    },
}

#[derive(Subcommand)]
enum SlackCommand {
    /// Print the Slack app's manifest (JSON), generated from commands/: paste it in
    /// api.slack.com/apps → Create New App → From a manifest.
    Manifest {
        /// socket (no inbound connection) or http (Slack posts to --url). Default: slack.mode,
        /// else socket.
        #[arg(long, value_parser = ["socket", "http"])]
        mode: Option<String>,
        /// runbot's public https address, for http mode.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

fn parse_snowflake(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|&n| n != 0)
        .ok_or_else(|| format!("{s:?} is not a Discord id (a number of up to 20 digits)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no settings: it describes them.
    if let Command::Config(ConfigCommand::Reference) = cli.command {
        print!("{}", runbot::config::reference::markdown());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // One runtime for whichever command runs.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            // `serve` fails with 1; the other commands' "cannot even start" is 2.
            let code = if matches!(cli.command, Command::Serve) {
                1
            } else {
                2
            };
            return ExitCode::from(code);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve => runbot::app::serve(settings).await,
            // Tracing stays off for the others: stdout carries their output.
            Command::Audit(command) => {
                runbot::audit::cli::run(&settings, command, &mut std::io::stdout().lock()).await
            }
            Command::Policy(command) => {
                runbot::policy::cli::run(&settings, command, &mut std::io::stdout().lock()).await
            }
            Command::Oncall(command) => runbot::policy::oncall_cli::run_oncall(
                &settings,
                command,
                &mut std::io::stdout().lock(),
            ),
            Command::Escalation(command) => runbot::policy::oncall_cli::run_escalation(
                &settings,
                command,
                &mut std::io::stdout().lock(),
            ),
            Command::Discord(DiscordCommand::RegisterCommands { guild }) => {
                runbot::chat::discord::commands::register_cli(&settings, guild).await
            }
            Command::Slack(SlackCommand::Manifest { mode, url }) => {
                let mode = mode.map(|m| match m.as_str() {
                    "http" => runbot::config::SlackMode::Http,
                    _ => runbot::config::SlackMode::Socket,
                });
                runbot::chat::slack::manifest::run_cli(
                    &settings,
                    mode,
                    url.as_deref(),
                    &mut std::io::stdout().lock(),
                )
            }
            Command::User(command) => {
                runbot::chat::console::cli::run(&settings, command, &mut std::io::stdout().lock())
                    .await
            }
            Command::Alert(AlertCommand::Test {
                alertname,
                severity,
                url,
            }) => {
                let asked = runbot::app::alert_test::AlertTest {
                    alertname,
                    severity,
                    url,
                };
                runbot::app::alert_test::run(&settings, asked, &mut std::io::stdout().lock()).await
            }
            Command::Token(command) => {
                runbot::chat::console::cli::run_token(
                    &settings,
                    command,
                    &mut std::io::stdout().lock(),
                )
                .await
            }
            Command::Healthcheck { url, timeout } => {
                runbot::app::healthcheck::run(
                    &settings,
                    url,
                    std::time::Duration::from_secs(timeout),
                )
                .await
            }
            Command::CheckConfig => runbot::app::report::check_config(&settings),
            Command::Config(ConfigCommand::Reference) => unreachable!("printed above"),
        }
    });
    ExitCode::from(code)
}
