//! Wiring: builds every part from settings, runs the server, shuts down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::chat::console::events::Feed;
use crate::chat::console::platform::ConsolePlatform;
use crate::chat::discord::DiscordAdapter;
use crate::chat::outbox::Outbox;
use crate::chat::platform::ChatPlatform;
use crate::chat::slack::SlackAdapter;
use crate::commands::Commands;
use crate::config::{NginxMode, NginxSettings, Settings};
use crate::domain::clock::Clock;
use crate::escalation::Reach;
use crate::executors::alertmanager::engine::Alertmanager;
use crate::executors::alertmanager::Silences;
use crate::executors::core::Core;
use crate::executors::database::engine::AppDatabase;
use crate::executors::database::Database;
use crate::executors::docker::deploy::Deploys;
use crate::executors::docker::engine::Docker;
use crate::executors::docker::DockerOps;
use crate::executors::lease::Locks;
use crate::executors::nginx::engine::{self as nginx, Nginx, RunsIn};
use crate::executors::nginx::Blocks;
use crate::executors::security::Security;
use crate::executors::{CardWake, Executors};
use crate::http::{self, alertmanager::WebhookAuth, AppState};
use crate::invocation::Dispatcher;
use crate::policy::{Policies, SeverityMap};
use crate::request::page::{Page, PageError, Pager};
use crate::request::Platform;
use crate::runbook::Runbook;
use crate::store::writer::{Writer, WriterDone};
use crate::store::Store;
use crate::telemetry;
use crate::workers::Workers;

pub mod alert_test;
pub mod healthcheck;
pub mod memory;
pub mod report;

/// The data runbot serves, loaded from `policies/` and `commands/`.
pub struct Data {
    pub severities: SeverityMap,
    pub runbook: Runbook,
    pub commands: Commands,
    /// Roles, on-call hours and the Cedar policies, checked against the commands.
    pub policies: Policies,
    /// Where each came from, for `check-config` and the start-up log.
    pub policy_source: String,
    pub commands_source: String,
}

impl Data {
    pub fn load(settings: &Settings) -> anyhow::Result<Data> {
        // An unset folder means `./<name>` when it exists, else the copy built into the binary.
        let policy = settings.policy.resolve_dir();
        let commands_dir = settings.commands.resolve("commands");
        let commands = Commands::load(commands_dir.as_deref())?;
        let severities = SeverityMap::load(policy.as_deref())?;
        let runbook = Runbook::load(commands_dir.as_deref())?;
        let policies =
            Policies::load_from(policy.as_deref(), &settings.parsed.policy_clock, &commands)?;
        runbook.check_chains(&policies.chains().names().collect::<Vec<_>>())?;
        Ok(Data {
            severities,
            runbook,
            policies,
            commands,
            policy_source: crate::config::describe_dir(&policy),
            commands_source: crate::config::describe_dir(&commands_dir),
        })
    }
}

/// The invocation core, built from settings with its own copy of the data (tests use this).
pub fn dispatcher(
    settings: &Settings,
    store: Store,
    chat_wake: Option<Arc<tokio::sync::Notify>>,
    clock: Clock,
) -> anyhow::Result<Dispatcher> {
    let data = Data::load(settings)?;
    build_dispatcher(
        settings,
        Arc::new(data.commands),
        Arc::new(data.runbook),
        Arc::new(data.policies),
        store,
        chat_wake,
        None,
        clock,
    )
}

/// The Docker engine; None when `docker.project` is unset (runbot cannot tell which
/// containers are the stack's).
pub fn docker(settings: &Settings) -> Option<Docker> {
    let project = settings.parsed.docker_project.clone()?;
    let host = settings.parsed.docker_host.clone();
    Some(Docker::new(host, project, settings.docker.timeout()))
}

/// The nginx whose deny file runbot keeps; None when `nginx.deny_file` is unset.
pub fn nginx(s: &NginxSettings, docker: Option<&Docker>) -> anyhow::Result<Option<Nginx>> {
    let Some(deny_file) = s.deny_file.clone() else {
        return Ok(None);
    };
    let runs_in = match (s.mode, docker) {
        (NginxMode::Host, _) => RunsIn::Host,
        (NginxMode::Container, Some(docker)) => RunsIn::Container {
            docker: docker.clone(),
            service: s.service.clone(),
        },
        (NginxMode::Container, None) => anyhow::bail!(
            "nginx.mode = \"container\" needs docker.project (the stack nginx runs in)"
        ),
    };
    Ok(Some(Nginx::new(nginx::Options {
        deny_file,
        runs_in,
        test: s.test.clone(),
        reload: s.reload.clone(),
        timeout: s.timeout(),
        host_id: s.host_id.clone(),
        sync: s.sync(),
    })))
}

/// The stack's application database; None when `app_database.url` is unset.
pub fn app_database(settings: &Settings) -> Option<AppDatabase> {
    let url = settings.parsed.app_database.clone()?;
    let s = &settings.app_database;
    Some(AppDatabase::new(
        url,
        s.backup_dir.clone(),
        s.pg_dump.clone(),
        s.psql.clone(),
        s.timeout(),
    ))
}

#[allow(clippy::too_many_arguments)]
fn build_dispatcher(
    settings: &Settings,
    commands: Arc<Commands>,
    runbook: Arc<Runbook>,
    policies: Arc<Policies>,
    store: Store,
    chat_wake: Option<Arc<tokio::sync::Notify>>,
    escalation_wake: Option<Arc<tokio::sync::Notify>>,
    clock: Clock,
) -> anyhow::Result<Dispatcher> {
    let alertmanager = settings
        .alertmanager
        .url
        .as_deref()
        .map(Alertmanager::new)
        .transpose()?;
    let docker = docker(settings);
    let nginx = nginx(&settings.nginx, docker.as_ref())?;
    let guard = settings.parsed.guard.clone();
    let app_db = app_database(settings);
    // This process, as the owner of the deploys it runs and the block expiries it claims.
    let owner = uuid::Uuid::new_v4().simple().to_string();
    let audit = crate::audit::Audit::new(store.clone());
    let cards = CardWake(chat_wake);
    let locks = Locks::new(
        store.clone(),
        &settings.deploy,
        docker.as_ref().map(|d| d.project().clone()),
    );
    // Each family built once, with only the engines it uses.
    let executors = Executors {
        core: Core {
            store: store.clone(),
            audit: audit.clone(),
            policies: policies.clone(),
            cards: cards.clone(),
            reach: reach(settings),
            escalation: CardWake(escalation_wake),
            runbook: runbook.clone(),
        },
        silences: Silences {
            alertmanager,
            store: store.clone(),
            cards,
        },
        docker: DockerOps {
            docker: docker.clone(),
            locks: locks.clone(),
        },
        deploys: Deploys {
            docker: docker.clone(),
            app_db: app_db.clone(),
            deploy: settings.deploy.clone(),
            store: store.clone(),
            audit: audit.clone(),
            http: reqwest::Client::builder()
                .user_agent(concat!("runbot/", env!("CARGO_PKG_VERSION")))
                .build()?,
            owner: owner.clone(),
            clock: clock.clone(),
            locks: locks.clone(),
        },
        database: Database {
            app_db,
            locks,
            clock: clock.clone(),
        },
        blocks: Blocks {
            nginx,
            store: store.clone(),
            audit,
            guard: guard.clone(),
            docker,
            owner,
        },
        security: Security {
            settings: settings.security.clone(),
            guard,
            store: store.clone(),
        },
    };
    Ok(Dispatcher::new(
        store,
        commands,
        runbook,
        policies,
        executors,
        settings.interactions.clone(),
        clock,
    )
    .with_verify_after(settings.escalation.verify_after()))
}

/// The ways of paging people the settings enable: the console always, Discord (a DM and a
/// mention in the group's channel) and Slack (a DM) when set up, email and webhooks when
/// configured.
pub fn reach(settings: &Settings) -> Reach {
    let mut vias = std::collections::BTreeSet::new();
    vias.insert("console");
    if settings.discord.enabled() {
        vias.insert("discord");
        vias.insert("discord-mention");
    }
    if settings.slack.enabled() {
        vias.insert("slack");
    }
    if settings.parsed.email.is_some() {
        vias.insert("email");
    }
    if !settings.parsed.webhooks.is_empty() {
        vias.insert("webhook");
    }
    Reach { vias }
}

/// Every `webhook:NAME` an escalation chain names must be a `[[notify.webhooks]]` entry.
pub(crate) fn check_chain_webhooks(settings: &Settings, policies: &Policies) -> anyhow::Result<()> {
    for chain in policies.chains().iter() {
        for (i, step) in chain.steps.iter().enumerate() {
            for t in &step.notify {
                if let crate::policy::escalation::Target::Webhook(name) = t {
                    if !settings.parsed.webhooks.iter().any(|w| &w.name == name) {
                        let known: Vec<&str> = settings
                            .parsed
                            .webhooks
                            .iter()
                            .map(|w| w.name.as_str())
                            .collect();
                        anyhow::bail!(
                            "policies/escalation.toml: chains.{}.steps[{i}] notifies webhook:{name}, which is not a [[notify.webhooks]] entry in the settings ({})",
                            chain.name,
                            if known.is_empty() { "none is configured".to_string() } else { format!("configured: {}", known.join(", ")) }
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// A mention in the group's Discord channel: the channel of its card (the routes'), found
/// here so the engine stores only whom to mention.
struct MentionInChannel {
    store: Store,
    discord: Arc<DiscordAdapter>,
    inner: crate::chat::discord::page::DiscordMention,
}

impl Pager for MentionInChannel {
    fn via(&self) -> &'static str {
        self.inner.via()
    }

    fn send<'a>(
        &'a self,
        target: &'a str,
        page: &'a Page,
    ) -> crate::request::BoxFuture<'a, Result<(), PageError>> {
        Box::pin(async move {
            let group =
                match page.group_id {
                    Some(id) => self.store.group_view_capped(id, 1).await.map_err(|e| {
                        PageError::Temporary {
                            reason: format!("the database did not answer ({e})"),
                            retry_after: None,
                        }
                    })?,
                    None => None,
                };
            let channel = match &group {
                Some(g) => self.discord.channel_for(g),
                None => self.discord.alert_channel().unwrap_or_default().to_string(),
            };
            if channel.is_empty() {
                return Err(PageError::Permanent(
                    "no Discord channel for this group: set discord.alert_channel_id".into(),
                ));
            }
            self.inner.send(&format!("{channel}/{target}"), page).await
        })
    }
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    writer_done: WriterDone,
    /// One chat outbox worker per platform configured.
    outboxes: Vec<Arc<Outbox>>,
    limits: crate::http::server::Limits,
    /// Every background loop, stopped together at shutdown.
    workers: Workers,
    /// `shutdown.grace_secs`: how long the outbox and running commands get after SIGTERM.
    grace: Duration,
}

impl Application {
    /// Connects the store, loads the data and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, crate::domain::clock::system_clock()).await
    }

    /// [`Application::build`] with the clock runbot decides its times by (on-call hours,
    /// escalation steps, hand-offs): tests set one to a Saturday night.
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Application> {
        let data = Data::load(&settings)?;
        // The chat platforms configured, each built once; a new platform is one line here.
        let discord = if settings.discord.enabled() {
            Some(Arc::new(DiscordAdapter::new(&settings)?))
        } else {
            None
        };
        let slack = if settings.slack.enabled() {
            Some(Arc::new(SlackAdapter::new(&settings)?))
        } else {
            None
        };
        // The console is always on: it is the chat of a runbot with no other configured.
        let mut names = vec![Platform::Console];
        if let Some(d) = &discord {
            names.push(d.name());
        }
        if let Some(s) = &slack {
            names.push(s.name());
        }
        let store = Store::connect(&settings.database)
            .await?
            .with_chat_platforms(names.iter().map(|p| p.as_str().to_string()).collect())
            .with_thread_platforms(
                slack
                    .iter()
                    .filter(|s| s.threads())
                    .map(|s| s.name().as_str().to_string())
                    .collect(),
            );
        let feed = Feed::new(store.clone())
            .await
            .context("reading the console's feed")?;
        let console = Arc::new(ConsolePlatform::new(feed.clone()));
        let mut platforms: Vec<Arc<dyn ChatPlatform>> = vec![console.clone()];
        if let Some(d) = &discord {
            platforms.push(d.clone());
        }
        if let Some(s) = &slack {
            platforms.push(s.clone());
        }
        let (writer, writer_done) = Writer::spawn(
            store.clone(),
            settings.database.write_batch_max,
            crate::alerts::lifecycle::apply,
        )
        .context("starting the writer thread")?;
        let listener = TcpListener::bind(settings.parsed.listen)
            .await
            .with_context(|| format!("binding http.listen = {}", settings.http.listen))?;
        if !settings.webhook_auth_configured() {
            tracing::warn!(
                "no webhook credentials configured: only loopback callers may post alerts; \
                 set alertmanager.webhook_token before exposing runbot"
            );
        }
        tracing::info!(
            listen = %listener.local_addr()?,
            database = ?store.backend(),
            policies = %data.policy_source,
            commands = %data.commands_source,
            runbook_entries = data.runbook.len(),
            "runbot ready"
        );
        let metrics = telemetry::metrics_handle();
        let upkeep = metrics.clone();
        let workers = Workers::new();
        // Histograms keep samples until rendered; drain them even if nobody scrapes.
        workers.every("metrics-upkeep", Duration::from_secs(5), move || {
            upkeep.run_upkeep();
            std::future::ready(Ok::<_, std::convert::Infallible>(()))
        });
        let runbook = Arc::new(data.runbook);
        let chat_wake = Arc::new(tokio::sync::Notify::new());
        if settings.discord.enabled() && settings.discord.global_requests_per_sec > 50 {
            tracing::warn!(
                per_sec = settings.discord.global_requests_per_sec,
                "discord.global_requests_per_sec is above Discord's usual global limit of 50/s: \
                 keep it only if Discord raised your bot's limit"
            );
        }
        // One outbox per platform, each with its own wake: ingestion and the core notify the
        // shared one once, and a small task passes it on to every outbox, so each sends its
        // cards at once (a Notify wakes one waiter only).
        let outboxes: Vec<Arc<Outbox>> = platforms
            .iter()
            .map(|p| {
                Arc::new(Outbox::new(
                    store.clone(),
                    runbook.clone(),
                    p.clone(),
                    Arc::new(tokio::sync::Notify::new()),
                ))
            })
            .collect();
        let (hub, each): (_, Vec<Arc<tokio::sync::Notify>>) = (
            chat_wake.clone(),
            outboxes.iter().map(|o| o.wake.clone()).collect(),
        );
        workers.spawn("chat-wake", move || {
            let (hub, each) = (hub.clone(), each.clone());
            async move {
                loop {
                    hub.notified().await;
                    for w in &each {
                        w.notify_one();
                    }
                }
            }
        });
        let gateway_mode = settings.discord.mode == crate::config::DiscordMode::Gateway;
        // In gateway mode interactions come over the Gateway only: the route takes none.
        let discord_interactions = if gateway_mode {
            None
        } else {
            crate::chat::discord::verify::InteractionGuard::from_settings(&settings.discord)?
                .map(Arc::new)
        };
        let card_wake = Some(chat_wake.clone());
        let policies = Arc::new(data.policies);
        check_chain_webhooks(&settings, &policies)?;
        let escalation_wake = Arc::new(tokio::sync::Notify::new());
        let dispatcher = Arc::new(build_dispatcher(
            &settings,
            Arc::new(data.commands),
            runbook.clone(),
            policies.clone(),
            store.clone(),
            card_wake.clone(),
            Some(escalation_wake.clone()),
            clock.clone(),
        )?);
        // Escalation: each way of paging people the settings enable, and the engine that
        // moves the chains on and delivers their pages.
        let mut pagers: std::collections::HashMap<&'static str, Arc<dyn Pager>> =
            std::collections::HashMap::new();
        let console_pager: Arc<dyn Pager> =
            Arc::new(crate::chat::console::page::ConsolePager::new(feed.clone()));
        pagers.insert(console_pager.via(), console_pager);
        if let Some(d) = &discord {
            let dm: Arc<dyn Pager> = d.clone();
            pagers.insert(dm.via(), dm);
            let mention: Arc<dyn Pager> = Arc::new(MentionInChannel {
                store: store.clone(),
                discord: d.clone(),
                inner: crate::chat::discord::page::DiscordMention::new(d.clone()),
            });
            pagers.insert(mention.via(), mention);
        }
        if let Some(s) = &slack {
            let dm: Arc<dyn Pager> = s.clone();
            pagers.insert(dm.via(), dm);
        }
        if let Some(server) = &settings.parsed.email {
            let mail: Arc<dyn Pager> = Arc::new(crate::escalation::email::Mailer::new(server)?);
            pagers.insert(mail.via(), mail);
        }
        if let Some(hooks) = crate::escalation::webhook::Webhooks::new(&settings.parsed.webhooks)? {
            let hooks: Arc<dyn Pager> = Arc::new(hooks);
            pagers.insert(hooks.via(), hooks);
        }
        if settings.escalation.enabled {
            let engine = Arc::new(crate::escalation::engine::Engine {
                store: store.clone(),
                policies: policies.clone(),
                runbook: runbook.clone(),
                audit: crate::audit::Audit::new(store.clone()),
                clock: clock.clone(),
                pagers,
                verify_after: settings.escalation.verify_after(),
                console_url: settings.escalation.public_url.clone(),
                wake: escalation_wake,
                cards: Some(chat_wake.clone()),
                last_handoffs: Default::default(),
            });
            workers.spawn("escalation", move || engine.clone().run());
            // The backlog's weekly summary: Mondays from 09:00 in policy.timezone, once a week
            // across replicas.
            let (weekly, tz, at) = (store.clone(), policies.clock().tz, clock.clone());
            workers.every("backlog-summary", Duration::from_secs(300), move || {
                let weekly = weekly.clone();
                let now = at();
                async move {
                    crate::executors::report::weekly_backlog(&weekly, now, tz)
                        .await
                        .map(|_| ())
                }
            });
        }
        // Refusals by the rate limit, written as one row per person and window.
        let limits = dispatcher.clone();
        workers.every("rate-limit-summaries", Duration::from_secs(10), move || {
            let limits = limits.clone();
            async move {
                limits.flush_rate_limited(false).await;
                Ok::<_, std::convert::Infallible>(())
            }
        });
        // Discord without a public endpoint: one Gateway connection, kept open until shutdown.
        if let (true, Some(adapter)) = (gateway_mode, &discord) {
            let gateway = Arc::new(crate::chat::discord::gateway::Gateway::new(
                &settings,
                adapter.clone(),
                dispatcher.clone(),
                store.clone(),
            )?);
            workers.spawn("discord-gateway", move || gateway.clone().run());
        }
        // Slack's commands and clicks: over Socket Mode (a connection runbot opens) or posted
        // to /slack/* (HTTP mode, signed with slack.signing_secret).
        let slack_inbound = slack.as_ref().map(|adapter| {
            Arc::new(crate::chat::slack::inbound::Inbound {
                dispatcher: dispatcher.clone(),
                adapter: adapter.clone(),
            })
        });
        let slack_socket = slack_inbound.is_some()
            && settings.slack.effective_mode() == crate::config::SlackMode::Socket;
        let slack_requests = if slack_inbound.is_some() && !slack_socket {
            crate::chat::slack::verify::RequestGuard::from_settings(&settings.slack).map(Arc::new)
        } else {
            None
        };
        if let (true, Some(inbound)) = (slack_socket, &slack_inbound) {
            let socket = Arc::new(crate::chat::slack::socket::SocketMode::new(
                &settings,
                inbound.clone(),
                store.clone(),
            )?);
            workers.spawn("slack-socket", move || socket.clone().run());
        }
        // Interaction ids kept for the replay check, once their requests are stale anyway.
        if discord_interactions.is_some() || gateway_mode || slack_inbound.is_some() {
            let seen = store.clone();
            workers.every("seen-interactions", Duration::from_secs(60), move || {
                let seen = seen.clone();
                async move {
                    seen.forget_seen(&crate::domain::format_time(chrono::Utc::now()))
                        .await
                }
            });
        }
        // Prompts a previous process left waiting: recorded as expired, then swept each minute
        // in case this process stops before its own timers fire.
        let sweeper = dispatcher.clone();
        workers.every("prompt-sweeper", Duration::from_secs(60), move || {
            let sweeper = sweeper.clone();
            async move { sweeper.expire_overdue().await }
        });
        // The audit head to the log and metrics, for `runbot audit verify --expect-head`.
        let audit = crate::audit::Audit::new(store.clone());
        workers.every(
            "audit-head",
            Duration::from_secs(settings.audit.head_log_secs),
            move || {
                let audit = audit.clone();
                async move { audit.log_head().await }
            },
        );
        // Deploys a killed runbot left running: marked interrupted at start, and then whenever
        // a heartbeat goes stale (another replica may die too).
        let deploys = dispatcher.executors().deploys.clone();
        let stale = Duration::from_secs((deploys.deploy.lock_stale_secs / 2).max(1));
        workers.every("deploy-recovery", stale, move || {
            let deploys = deploys.clone();
            async move { crate::executors::docker::deploy::recover(&deploys).await }
        });
        // Timed blocks: those due while no runbot ran are lifted at start, then every
        // nginx.expiry_check_secs; each replica sweeps, and a claim lets only one act on a block.
        if dispatcher.executors().blocks.nginx.is_some() {
            let blocks = dispatcher.executors().blocks.clone();
            // This host's nginx follows the blocks in the database, at start and every
            // nginx.sync_secs, whichever replica made them.
            crate::executors::nginx::start_following(&workers, &blocks);
            workers.every(
                "nginx-expiry",
                Duration::from_secs(settings.nginx.expiry_check_secs),
                move || {
                    let blocks = blocks.clone();
                    async move { crate::executors::nginx::expire_due(&blocks).await }
                },
            );
        }
        for p in &platforms {
            let Some(channel) = p.alert_channel() else {
                continue;
            };
            let (store, p, channel) = (store.clone(), p.clone(), channel.to_string());
            workers.spawn("announcements", move || {
                crate::chat::announce::deliver(store.clone(), p.clone(), channel.clone())
            });
        }
        // The console's pages follow the feed; an hour of it is kept for pages that reconnect
        // (cards carry their HTML: a day of a busy stack's would be large), files a day.
        workers.spawn("console-feed", move || feed.clone().follow());
        let prune = store.clone();
        workers.every("console-prune", Duration::from_secs(60), move || {
            let prune = prune.clone();
            async move {
                let now = chrono::Utc::now();
                prune
                    .prune_console(
                        &crate::domain::format_time(now - chrono::Duration::hours(1)),
                        &crate::domain::format_time(now - chrono::Duration::hours(24)),
                    )
                    .await
            }
        });
        let signin = Arc::new(crate::chat::console::signin::SignIn::new(
            store.clone(),
            crate::chat::console::sessions::Rules::from_settings(&settings.console),
        ));
        // First run: a one-time link that makes the first account, in memory only (it dies at
        // restart). It is logged, once: it is how the person who started runbot gets in.
        if let Some(token) = signin
            .open_setup()
            .await
            .context("counting the console accounts")?
        {
            tracing::info!(
                "first run: create the first account at http://{}/setup?token={token}",
                listener.local_addr()?
            );
        }
        // Sessions are kept past their end for the record, then forgotten a day after the
        // longest a session can live.
        let purge = store.clone();
        let kept = chrono::Duration::hours(settings.console.session_max_hours as i64 + 24);
        workers.every("console-sessions", Duration::from_secs(3600), move || {
            let purge = purge.clone();
            async move {
                purge
                    .purge_sessions(&crate::domain::format_time(chrono::Utc::now() - kept))
                    .await
            }
        });
        let state = AppState {
            console,
            signin: signin.clone(),
            dispatcher: Some(dispatcher),
            discord,
            discord_interactions,
            discord_gateway: gateway_mode,
            slack_inbound,
            slack_requests: slack_requests.clone(),
            slack_socket,
            slack,
            store: store.clone(),
            writer,
            severities: Arc::new(data.severities),
            runbook,
            chat_wake: card_wake,
            webhook_auth: Arc::new(WebhookAuth::from_settings(&settings.alertmanager)),
            metrics,
            max_body_bytes: settings.http.max_body_bytes,
            edge: Arc::new(crate::http::guard::Edge {
                hosts: crate::http::guard::HostGuard::new(
                    &settings.parsed,
                    listener.local_addr()?.port(),
                    (settings.discord.public_key.is_some() && !gateway_mode)
                        || slack_requests.is_some(),
                ),
                body_timeout: Duration::from_secs(settings.http.body_timeout_secs),
                console_token: settings.console.token.clone(),
                sessions: signin.rules,
                max_body_bytes: settings.http.max_body_bytes,
                metrics_token: settings.http.metrics_token.clone(),
                store: store.clone(),
            }),
        };
        Ok(Application {
            listener,
            state,
            writer_done,
            outboxes,
            limits: crate::http::server::Limits::from_settings(&settings.http),
            workers,
            grace: Duration::from_secs(settings.shutdown.grace_secs),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The routes, for driving the app without a socket.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `shutdown` completes. Then: stops taking requests (those in flight get
    /// `http.shutdown_timeout_secs`), waits until every accepted webhook is stored, gives the
    /// outbox and running commands `shutdown.grace_secs` (what the outbox has not sent stays
    /// queued for the next start; commands still running are recorded as interrupted), and
    /// stops every worker.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            writer_done,
            outboxes,
            limits,
            workers,
            grace,
        } = self;
        // Started here, not in build: an application only built (tests) sends nothing.
        // Anything they have not sent stays in the outbox for the next start.
        let delivering: Vec<String> = outboxes
            .iter()
            .map(|o| o.platform.name().to_string())
            .collect();
        for o in outboxes {
            workers.spawn("outbox", move || o.clone().run());
        }
        let store = state.store.clone();
        let dispatcher = state.dispatcher.clone();
        let feed = state.console.feed().clone();
        let router = http::router(state);
        // Pages following the live feed never end their request by themselves: end them when
        // the shutdown starts, so the server's grace goes to requests that finish.
        let shutdown = async move {
            shutdown.await;
            feed.close();
        };
        http::server::serve(listener, router, limits, shutdown).await;
        let stopping = tokio::time::Instant::now();
        tracing::info!("stopped accepting requests; finishing queued writes");
        if tokio::time::timeout(Duration::from_secs(30), writer_done)
            .await
            .is_err()
        {
            tracing::error!("queued writes did not finish within 30 s");
        }
        let deadline = tokio::time::Instant::now() + grace;
        let (queued, interrupted) = tokio::join!(
            async {
                let mut left = 0;
                for platform in &delivering {
                    left += outbox_drained(&store, platform, deadline).await;
                }
                left
            },
            async {
                match &dispatcher {
                    Some(d) => d.finish_runs(deadline).await,
                    None => 0,
                }
            }
        );
        if !workers.stop(WORKERS_STOP).await {
            tracing::warn!("some background workers did not stop in time");
        }
        if let Some(d) = dispatcher {
            d.flush_rate_limited(true).await;
        }
        store.close().await;
        tracing::info!(
            still_queued = queued,
            interrupted,
            took_ms = stopping.elapsed().as_millis() as u64,
            "runbot stopped"
        );
        Ok(())
    }
}

/// How long workers get to end once told to stop: each stops at its next await.
const WORKERS_STOP: Duration = Duration::from_secs(5);

/// Waits until `platform`'s outbox has delivered everything queued, or until `deadline`. Answers how
/// many notices are still queued (they stay in the database for the next start).
async fn outbox_drained(store: &Store, platform: &str, deadline: tokio::time::Instant) -> i64 {
    loop {
        let left = match store.notice_backlog(platform).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the chat outbox while stopping");
                return -1;
            }
        };
        if left == 0 {
            return 0;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                left,
                "the chat outbox still holds notices after shutdown.grace_secs; they are sent at the next start"
            );
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `runbot serve`: builds the application and serves until SIGTERM or Ctrl-C; the exit code.
pub async fn serve(settings: Settings) -> u8 {
    telemetry::init_tracing(&settings.log);
    let result = async {
        let app = Application::build(settings).await?;
        // Start-up is over once the listener is bound and the workers run; a second later,
        // runbot lets go of the code only start-up ran (most of an idle runbot's RSS).
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let asked = tokio::task::spawn_blocking(memory::release_startup_code)
                .await
                .unwrap_or(0);
            tracing::debug!(
                mib = asked >> 20,
                "handed start-up code pages back to the kernel"
            );
        });
        app.run(shutdown_signal()).await
    };
    match result.await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "runbot failed");
            eprintln!("runbot: {e:#}");
            1
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
}
