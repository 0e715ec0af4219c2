//! The `runbot` command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runbot::app::{shutdown_signal, Application, Data};
use runbot::audit::{Audit, AuditFilter, ExportFormat};
use runbot::config::Settings;
use runbot::policy::cli::PolicyCommand;

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
    /// Discord: register the slash commands.
    #[command(subcommand)]
    Discord(DiscordCommand),
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

fn parse_snowflake(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|&n| n != 0)
        .ok_or_else(|| format!("{s:?} is not a Discord id (a number of up to 20 digits)"))
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; name the first row that was changed, removed or reordered
    /// (exit 1), or say how many rows are intact (exit 0). Exit 2 if it cannot be read.
    Verify {
        /// Also fail (exit 1) unless this head, printed earlier by `runbot audit head` or
        /// logged by `runbot serve` ("audit head"), is still in the trail: catches a cut-off
        /// or rewritten end, which the chain alone cannot show. ID:HASH, "ID HASH" or HASH.
        #[arg(long, value_name = "ID:HASH")]
        expect_head: Option<runbot::audit::ExpectedHead>,
    },
    /// Print the last row's id and hash ("ID HASH"), to keep for `verify --expect-head`.
    Head,
    /// Write audit rows to stdout, oldest first.
    Export {
        /// jsonl (one JSON object per line) or csv (with a header row).
        #[arg(long, value_name = "FORMAT", default_value = "jsonl")]
        format: ExportFormat,
        /// Only rows written at or after this time (RFC 3339, e.g. 2026-05-01T00:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only rows of this actor (the platform's user id).
        #[arg(long, value_name = "ID")]
        actor: Option<String>,
        /// Only rows of this command.
        #[arg(long, value_name = "NAME")]
        command: Option<String>,
    },
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 time such as 2026-05-01T00:00:00Z ({e})"))
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
        Command::Audit(command) => audit(&settings, command),
        Command::Discord(DiscordCommand::RegisterCommands { guild }) => {
            register_commands(&settings, guild)
        }
        Command::Policy(command) => ExitCode::from(runbot::policy::cli::run(
            &settings,
            command,
            &mut std::io::stdout().lock(),
        )),
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

/// `runbot audit …`: exit 0 when done (and the chain intact), 1 when the chain is broken,
/// 2 when the trail cannot be read. Tracing stays off: stdout carries the export.
fn audit(settings: &Settings, command: AuditCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let store = match runbot::audit::open_store(&settings.database).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("runbot: {e:#}");
                return ExitCode::from(2);
            }
        };
        let audit = Audit::new(store.clone());
        let code = match command {
            AuditCommand::Verify { expect_head } => {
                let checked = async {
                    let report = audit.verify().await?;
                    let head = match &expect_head {
                        Some(expected) => Some(audit.check_head(expected).await?),
                        None => None,
                    };
                    Ok::<_, runbot::audit::AuditError>((report, head))
                };
                match checked.await {
                    Ok((report, head)) => {
                        println!("{report}");
                        if let (None, Some(last)) = (&report.problem, &report.head) {
                            println!("last row {}, hash {}", last.id, last.hash);
                        }
                        if let Some(check) = &head {
                            println!("{check}");
                        }
                        if report.is_intact() && head.as_ref().is_none_or(|c| c.passed()) {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                    Err(e) => {
                        eprintln!("runbot: cannot verify the audit trail: {e}");
                        ExitCode::from(2)
                    }
                }
            }
            AuditCommand::Head => match audit.head().await {
                Ok(Some(head)) => {
                    println!("{} {}", head.id, head.hash);
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    println!("audit trail empty: no rows yet");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("runbot: cannot read the audit head: {e}");
                    ExitCode::from(2)
                }
            },
            AuditCommand::Export {
                format,
                since,
                actor,
                command,
            } => {
                let filter = AuditFilter {
                    since,
                    actor_id: actor,
                    command,
                    invocation_id: None,
                };
                match audit
                    .export(format, &filter, std::io::stdout().lock())
                    .await
                {
                    Ok(_) => ExitCode::SUCCESS,
                    // `runbot audit export | head` is not an error.
                    Err(runbot::audit::AuditError::Io(e))
                        if e.kind() == std::io::ErrorKind::BrokenPipe =>
                    {
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("runbot: cannot export the audit trail: {e}");
                        ExitCode::from(2)
                    }
                }
            }
        };
        store.close().await;
        code
    })
}

/// `runbot discord register-commands`. Tracing stays off: stdout says what was registered.
fn register_commands(settings: &Settings, guild: Option<u64>) -> ExitCode {
    use runbot::chat::discord_commands::{register_from_settings, RegisterError};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(register_from_settings(settings, guild)) {
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
            ExitCode::SUCCESS
        }
        Err(e @ RegisterError::Setup(_)) => {
            eprintln!("runbot: {e}");
            ExitCode::from(2)
        }
        Err(e @ RegisterError::Discord(_)) => {
            eprintln!("runbot: {e}");
            ExitCode::FAILURE
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
    let h = &settings.http;
    println!(
        "  http limits          headers {} s, body {} s, {} connections, shutdown {} s",
        h.header_timeout_secs, h.body_timeout_secs, h.max_connections, h.shutdown_timeout_secs
    );
    println!(
        "  http hosts           {}",
        match &h.allowed_hosts {
            Some(list) => list.join(", "),
            None if h.loopback_only() => "127.0.0.1, localhost, [::1] (with the port)".into(),
            None => "any".into(),
        }
    );
    println!(
        "  console              {}",
        if settings.console.token.is_some() {
            "this machine, and others with console.token"
        } else {
            "this machine only (console.token unset)"
        }
    );
    println!(
        "  database             {:?}",
        settings.database.backend().expect("validated")
    );
    println!("  webhook auth         {auth}");
    println!("  policies             {}", data.policy_source);
    let roles: Vec<&str> = data.policies.roles().names().collect();
    println!(
        "  roles                {} ({})",
        roles.len(),
        roles.join(", ")
    );
    println!(
        "  policy rules         {} in runbot.cedar, valid against the schema of {} commands",
        data.policies.rules().len(),
        data.commands.len()
    );
    let clock = data.policies.clock();
    println!(
        "  policy clock         {}, business hours {}",
        clock.tz.name(),
        clock.business
    );
    println!(
        "  commands             {} ({} runbook entries)",
        data.commands_source,
        data.runbook.len()
    );
    match &settings.docker.project {
        Some(project) => println!(
            "  docker               project {project} at {}",
            settings.docker.host
        ),
        None => {
            println!("  docker               docker.project not set: /status and /logs will say so")
        }
    }
    match runbot::app::app_database(&settings.app_database) {
        Ok(Some(db)) => println!(
            "  app database         {}, backups in {}",
            db.target(),
            db.backup_dir().display()
        ),
        Ok(None) => println!(
            "  app database         app_database.url not set: /backup, /restore and /db will say so"
        ),
        Err(e) => println!("  app database         {e}"),
    }
    let d = &settings.deploy;
    if d.services.is_empty() {
        println!(
            "  deploy               deploy.services not set: /deploy and /rollback will say so"
        );
    } else {
        println!(
            "  deploy               {}; backup {}; migrate {}; {} health and {} smoke checks",
            d.services.join(", "),
            if d.backup { "first" } else { "off" },
            d.migrate
                .as_ref()
                .map(|m| format!("`{}` in {}", m.command.join(" "), m.service))
                .unwrap_or_else(|| "none".into()),
            d.health.len(),
            d.smoke.len()
        );
    }
    let n = &settings.nginx;
    match &n.deny_file {
        None => println!(
            "  nginx                nginx.deny_file not set: /block-ip, /unblock-ip and /blocked will say so"
        ),
        Some(f) => println!(
            "  nginx                deny list {} ({}); test `{}`, reload `{}`; approval beyond /{} and /{}; {} allow-listed",
            f.display(),
            match n.mode {
                runbot::config::NginxMode::Host => "on this host".to_string(),
                runbot::config::NginxMode::Container => format!("in service {}", n.service),
            },
            n.test.join(" "),
            n.reload.join(" "),
            n.max_prefix_v4,
            n.max_prefix_v6,
            n.allow_list.len()
        ),
    }
    match &settings.security.log_path {
        None => println!("  security log         security.log_path not set: /security will say so"),
        Some(p) => println!("  security log         {}", p.display()),
    }
    ExitCode::SUCCESS
}
