//! The `runbot` command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runbot::app::{shutdown_signal, Application, Data};
use runbot::config::Settings;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::CheckConfig => check_config(&settings),
        Command::Serve => {
            runbot::telemetry::init_tracing(&settings.log);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let app = Application::build(settings).await?;
                app.run(shutdown_signal()).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "runbot failed");
                    eprintln!("runbot: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check_config(settings: &Settings) -> ExitCode {
    let data = match Data::load(settings) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("invalid data files: {e:#}");
            return ExitCode::from(2);
        }
    };
    let auth = match (
        &settings.alertmanager.webhook_token,
        &settings.alertmanager.basic_auth,
    ) {
        (Some(_), Some(_)) => "bearer token or basic auth",
        (Some(_), None) => "bearer token",
        (None, Some(_)) => "basic auth",
        (None, None) => "none: loopback callers only",
    };
    println!("settings ok");
    println!("  http.listen          {}", settings.http.listen);
    println!("  http.max_body_bytes  {}", settings.http.max_body_bytes);
    println!(
        "  database             {:?}",
        settings.database.backend().expect("validated")
    );
    println!("  webhook auth         {auth}");
    println!("  policies             {}", data.policy_source);
    println!(
        "  commands             {} ({} runbook entries)",
        data.commands_source,
        data.runbook.len()
    );
    ExitCode::SUCCESS
}
