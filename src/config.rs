//! Settings: built-in defaults < optional `runbot.toml` < `RUNBOT__SECTION__KEY` environment.
//!
//! Loaded once at start and validated; every problem names the key and how to fix it.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use ipnet::IpNet;

use crate::domain::hours::{BusinessHours, Clock};
use crate::domain::names::{DockerHost, ProjectName};
use crate::domain::net::{parse_range, Guard};
use crate::domain::pg_url::PgUrl;
use crate::domain::Severity;

pub mod notify;
pub mod reference;
pub mod secret_files;
pub mod slack;
pub use notify::{EmailSettings, NotifySettings, SmtpServer, SmtpTls, WebhookTarget};
pub use reference::{Key, Section};
pub use slack::{SlackMode, SlackSettings};

/// The file read when neither `--config` nor `RUNBOT_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "runbot.toml";
const ENV_PREFIX: &str = "RUNBOT";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub alertmanager: AlertmanagerSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub commands: DataDir,
    #[serde(default)]
    pub discord: DiscordSettings,
    #[serde(default)]
    pub interactions: InteractionSettings,
    #[serde(default)]
    pub docker: DockerSettings,
    #[serde(default)]
    pub app_database: AppDatabaseSettings,
    #[serde(default)]
    pub deploy: DeploySettings,
    #[serde(default)]
    pub nginx: NginxSettings,
    #[serde(default)]
    pub security: SecuritySettings,
    #[serde(default)]
    pub console: ConsoleSettings,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub shutdown: ShutdownSettings,
    #[serde(default)]
    pub escalation: EscalationSettings,
    #[serde(default)]
    pub email: EmailSettings,
    #[serde(default)]
    pub notify: NotifySettings,
    #[serde(default)]
    pub slack: SlackSettings,
    /// The values validation parsed from the strings above; filled by [`Settings::load_from`].
    #[serde(skip)]
    pub parsed: Parsed,
}

/// Settings that are strings in the file, parsed once by [`Settings::validate`] so that
/// nothing downstream parses them again (or could find them wrong after start-up).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// `http.listen`.
    pub listen: SocketAddr,
    /// `http.allowed_hosts`; None when unset.
    pub allowed_hosts: Option<Vec<HostPattern>>,
    /// `docker.host`.
    pub docker_host: DockerHost,
    /// `docker.project`; None when unset.
    pub docker_project: Option<ProjectName>,
    /// `app_database.url`; None when unset.
    pub app_database: Option<PgUrl>,
    /// `nginx.allow_list`, `nginx.max_prefix_v4` and `nginx.max_prefix_v6`.
    pub guard: Guard,
    /// `policy.timezone` and `policy.business_hours`.
    pub policy_clock: Clock,
    /// `discord.application_id` as a number; None when unset.
    pub discord_application_id: Option<u64>,
    /// `discord.routes`, in order, with their severities parsed.
    pub discord_routes: Vec<AlertRoute>,
    /// `[email]`; None when `email.host` is unset (no email pages).
    pub email: Option<SmtpServer>,
    /// `[[notify.webhooks]]`, in order.
    pub webhooks: Vec<WebhookTarget>,
    /// `slack.routes`, in order, with their severities parsed.
    pub slack_routes: Vec<AlertRoute>,
}

/// A `discord.routes` entry: a group goes to `channel_id` when every matcher equals one of its
/// labels and, when `severities` is not empty, its severity is one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRoute {
    pub channel_id: String,
    pub matchers: std::collections::BTreeMap<String, String>,
    pub severities: Vec<Severity>,
}

/// The documented defaults, parsed from the sections' defaults so they are stated once.
impl Default for Parsed {
    fn default() -> Self {
        const VALID: &str = "the documented defaults are valid";
        Parsed {
            listen: HttpSettings::default().listen.parse().expect(VALID),
            allowed_hosts: None,
            docker_host: DockerSettings::default().engine_host().expect(VALID),
            docker_project: None,
            app_database: None,
            guard: NginxSettings::default().guard().expect(VALID),
            policy_clock: PolicySettings::default().clock().expect(VALID),
            discord_application_id: None,
            discord_routes: Vec::new(),
            email: None,
            webhooks: Vec::new(),
            slack_routes: Vec::new(),
        }
    }
}

impl Parsed {
    /// Whether `http.listen` is a loopback address: nobody else can connect.
    pub fn loopback_only(&self) -> bool {
        is_loopback(&self.listen)
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Where nginx runs: its commands run on runbot's host, or inside a container of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NginxMode {
    Host,
    Container,
}

/// `[nginx]`: the deny list `/block-ip` keeps, and how nginx checks and reloads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NginxSettings {
    /// The file runbot owns and rewrites whole (nginx's config `include`s it inside `http` or
    /// `server`). Unset: the block commands say to set it.
    pub deny_file: Option<PathBuf>,
    pub mode: NginxMode,
    /// Argument vectors, never a shell. In container mode they run inside the container.
    pub test: Vec<String>,
    pub reload: Vec<String>,
    /// Container mode: the compose service (of `docker.project`) that runs nginx.
    pub service: String,
    /// Ranges wider than these prefix lengths need a second person's approval.
    pub max_prefix_v4: u8,
    pub max_prefix_v6: u8,
    /// Addresses and ranges never blocked (the team's office, VPN, monitoring).
    pub allow_list: Vec<String>,
    /// Longest wait for `test` or `reload`.
    pub timeout_secs: u64,
    /// How often timed blocks are checked for expiry.
    pub expiry_check_secs: u64,
    /// This host, as /blocked names it: one per nginx whose deny file runbot keeps. Default:
    /// the machine's hostname.
    pub host_id: String,
    /// How often this runbot makes its nginx follow the blocks in the database (made through
    /// any replica).
    pub sync_secs: u64,
}

/// The machine's hostname (Linux), or empty when it cannot be read: validation then asks for
/// `nginx.host_id`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

impl Default for NginxSettings {
    fn default() -> Self {
        Self {
            deny_file: None,
            mode: NginxMode::Host,
            test: vec!["nginx".into(), "-t".into()],
            reload: vec!["nginx".into(), "-s".into(), "reload".into()],
            service: "nginx".into(),
            max_prefix_v4: 16,
            max_prefix_v6: 48,
            allow_list: Vec::new(),
            timeout_secs: 30,
            expiry_check_secs: 15,
            host_id: hostname(),
            sync_secs: 5,
        }
    }
}

/// `[nginx]` in the settings reference: one entry per field above.
impl NginxSettings {
    pub const REFERENCE: Section = Section {
        name: "nginx",
        about: "The deny list `/block-ip` keeps, and how nginx checks and reloads it.",
        defaults: || format!("{:?}", NginxSettings::default()),
        keys: &[
            Key {
                name: "deny_file",
                kind: "path",
                default: "unset",
                about: "the deny list runbot owns, e.g. `/etc/nginx/runbot-deny.conf`; nginx's config must `include` it (see [nginx](#nginx) below). Its folder must exist. runbot rewrites the whole file from its database on every change and whenever it differs from the database (manual edits are lost), beside `<deny_file>.lock` and a temporary `<deny_file>.runbot-tmp`. Unset, `/block-ip`, `/unblock-ip` and `/blocked` say to set it",
            },
            Key {
                name: "mode",
                kind: "`host` or `container`",
                default: "`host`",
                about: "`host`: `test` and `reload` run where runbot runs; `container`: they run inside a running container of `nginx.service` in `docker.project`, through the engine's exec API, and `deny_file` must be on a bind mount both see. Mount its **folder** (`./nginx/runbot:/etc/nginx/runbot`), not the file alone: runbot replaces the file atomically (a new file renamed over the old), and a single-file bind mount would keep showing nginx the old one",
            },
            Key {
                name: "test",
                kind: "list of strings",
                default: "`[\"nginx\", \"-t\"]`",
                about: "the argument vector (never a shell) that checks nginx's config, e.g. `[\"/usr/sbin/nginx\", \"-c\", \"/etc/nginx/nginx.conf\", \"-t\"]`",
            },
            Key {
                name: "reload",
                kind: "list of strings",
                default: "`[\"nginx\", \"-s\", \"reload\"]`",
                about: "the argument vector that reloads nginx without a restart or downtime",
            },
            Key {
                name: "service",
                kind: "string",
                default: "`nginx`",
                about: "container mode: nginx's compose service",
            },
            Key {
                name: "max_prefix_v4",
                kind: "integer",
                default: "`16`",
                about: "an IPv4 range wider than this (`10.0.0.0/8`) needs a second person's approval (security or devops-lead)",
            },
            Key {
                name: "max_prefix_v6",
                kind: "integer",
                default: "`48`",
                about: "the same for IPv6 (`2001:db8::/32`)",
            },
            Key {
                name: "allow_list",
                kind: "list of strings",
                default: "none",
                about: "addresses and ranges never blocked (offices, VPN, monitoring), e.g. `[\"198.51.100.0/24\", \"2001:db8:1::/48\"]`",
            },
            Key {
                name: "timeout_secs",
                kind: "seconds",
                default: "`30`",
                about: "longest `test` or `reload` may take (1–600)",
            },
            Key {
                name: "expiry_check_secs",
                kind: "seconds",
                default: "`15`",
                about: "how often timed blocks are checked for expiry (1–3600)",
            },
            Key {
                name: "host_id",
                kind: "string",
                default: "the machine's hostname",
                about: "names this host's nginx in `/blocked`. Each runbot with its own deny file needs its own id; runbots sharing one deny file on one host share it. In containers, where the hostname changes with each container, set it. 1–64 letters, digits, `.`, `-`, `_`; checked only when `deny_file` is set",
            },
            Key {
                name: "sync_secs",
                kind: "seconds",
                default: "`5`",
                about: "how often each runbot makes its nginx follow the blocks in the database (1–300); also at start. See [nginx with replicas](how-it-works.md#nginx-with-replicas)",
            },
        ],
    };
}

impl NginxSettings {
    /// What may never be blocked, and how wide a block may be without approval; or a problem
    /// for each `nginx.allow_list` entry that is not a range. Read it in [`Parsed::guard`].
    fn guard(&self) -> Result<Guard, Vec<String>> {
        Ok(Guard {
            allow_list: self.allow_list()?,
            max_prefix_v4: self.max_prefix_v4,
            max_prefix_v6: self.max_prefix_v6,
        })
    }

    /// `nginx.allow_list` parsed, or a problem for each entry that is not a range.
    fn allow_list(&self) -> Result<Vec<IpNet>, Vec<String>> {
        let (nets, problems): (Vec<_>, Vec<_>) = self
            .allow_list
            .iter()
            .map(|a| parse_range(a))
            .partition(Result::is_ok);
        if problems.is_empty() {
            Ok(nets.into_iter().flatten().collect())
        } else {
            Err(problems
                .into_iter()
                .filter_map(Result::err)
                .map(|e| format!("nginx.allow_list: {e}"))
                .collect())
        }
    }

    /// How long `nginx -t` and the reload may take (`nginx.timeout_secs`).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// How often this runbot makes its nginx follow the database (`nginx.sync_secs`).
    pub fn sync(&self) -> Duration {
        Duration::from_secs(self.sync_secs)
    }
}

/// `[security]`: the stack's security log, which `/security top-ips` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// JSON lines with `event`, `ip_address` and a `timestamp`. Unset: /security says to set it.
    pub log_path: Option<PathBuf>,
    /// How many addresses `/security top-ips` lists.
    pub top: usize,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            log_path: None,
            top: 10,
        }
    }
}

/// `[security]` in the settings reference: one entry per field above.
impl SecuritySettings {
    pub const REFERENCE: Section = Section {
        name: "security",
        about: "The stack's security log, which `/security top-ips` reads.",
        defaults: || format!("{:?}", SecuritySettings::default()),
        keys: &[
            Key {
                name: "log_path",
                kind: "path",
                default: "unset",
                about: "the stack's `logs/security.log` (JSON lines with `timestamp`, `event`, `ip_address`), read by `/security`",
            },
            Key {
                name: "top",
                kind: "integer",
                default: "`10`",
                about: "how many addresses `/security top-ips` lists, each with a Block button (1–25)",
            },
        ],
    };
}

/// `[audit]`: the audit trail's head, reported so a cut-off tail can be noticed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// `runbot serve` logs the last row's id and hash ("audit head") and sets the gauge
    /// `runbot_audit_head_id` this often, for `runbot audit verify --expect-head`.
    pub head_log_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { head_log_secs: 300 }
    }
}

/// `[audit]` in the settings reference: one entry per field above.
impl AuditSettings {
    pub const REFERENCE: Section = Section {
        name: "audit",
        about: "The audit trail's head, reported so a cut-off tail can be noticed.",
        defaults: || format!("{:?}", AuditSettings::default()),
        keys: &[
            Key {
                name: "head_log_secs",
                kind: "seconds",
                default: "`300`",
                about: "how often `runbot serve` logs \"audit head\" (id, hash) and sets `runbot_audit_head_id` (10–86400); see [The end of the trail](audit.md#the-end-of-the-trail)",
            },
        ],
    };
}

/// `[escalation]`: paging people along `policies/escalation.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationSettings {
    /// Off: no chain starts and nobody is paged (cards still post).
    pub enabled: bool,
    /// After a runbook action on a firing group, how long it may take to resolve before
    /// runbot says so and moves the chain on (`10m`).
    pub verify_after: String,
    /// runbot's own address as people reach it (`https://runbot.example.com`), for links to a
    /// group's console page in pages; unset: pages carry no link.
    pub public_url: Option<String>,
}

impl Default for EscalationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            verify_after: "10m".into(),
            public_url: None,
        }
    }
}

impl EscalationSettings {
    /// `verify_after`, checked at load.
    pub fn verify_after(&self) -> std::time::Duration {
        crate::domain::duration::parse(&self.verify_after)
            .unwrap_or(std::time::Duration::from_secs(600))
    }

    pub const REFERENCE: Section = Section {
        name: "escalation",
        about: "Paging people along the chains of `policies/escalation.toml` (who is on call: `policies/oncall.toml`).",
        defaults: || format!("{:?}", EscalationSettings::default()),
        keys: &[
            Key {
                name: "enabled",
                kind: "boolean",
                default: "`true`",
                about: "off: no chain starts and nobody is paged; cards are posted as before",
            },
            Key {
                name: "verify_after",
                kind: "duration",
                default: "`\"10m\"`",
                about: "after a runbook action (`/restart`, `/rollback`, `/scale`, `/deploy`) on a firing group, how long it may take to resolve: then runbot says in the group's channel that it still fires and moves the chain to its next step (`1s` to `1d`)",
            },
            Key {
                name: "public_url",
                kind: "URL",
                default: "unset",
                about: "runbot's address as people reach it (`https://runbot.example.com`): pages link to the group's console page under it; unset, pages carry no link",
            },
        ],
    };
}

/// `[shutdown]`: what runbot finishes after SIGTERM or Ctrl-C, once it stopped taking requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// How long the outbox may keep delivering what waits and running commands may take to
    /// finish; then what is left stays queued and the commands are recorded as interrupted.
    pub grace_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { grace_secs: 10 }
    }
}

/// `[shutdown]` in the settings reference: one entry per field above.
impl ShutdownSettings {
    pub const REFERENCE: Section = Section {
        name: "shutdown",
        about: "What runbot finishes after SIGTERM or Ctrl-C, once it stopped taking requests.",
        defaults: || format!("{:?}", ShutdownSettings::default()),
        keys: &[
            Key {
                name: "grace_secs",
                kind: "seconds",
                default: "`10`",
                about: "how long the outbox may keep delivering the cards that wait, and running commands may take to finish (0–600). Then what the outbox has not sent stays queued for the next start, and commands still running are stopped and recorded as `interrupted` in the audit trail; runbot exits 0",
            },
        ],
    };
}

/// `[app_database]`: the stack's application database, which `/backup`, `/restore` and `/db`
/// act on. Not runbot's own store (`[database]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppDatabaseSettings {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`. No default: unset, the database
    /// commands say to set it.
    pub url: Option<SecretString>,
    /// Where backups are written and read, `backup_YYYYmmdd_HHMMSS.sql.gz`.
    pub backup_dir: PathBuf,
    /// The `pg_dump` program (a name on PATH or a path); its major version must be at least
    /// the server's.
    pub pg_dump: String,
    /// The `psql` program that restores run.
    pub psql: String,
    /// Longest a backup or a restore may run before it is stopped.
    pub timeout_secs: u64,
}

impl Default for AppDatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            backup_dir: PathBuf::from("backups"),
            pg_dump: "pg_dump".into(),
            psql: "psql".into(),
            timeout_secs: 900,
        }
    }
}

/// `[app_database]` in the settings reference: one entry per field above.
impl AppDatabaseSettings {
    pub const REFERENCE: Section = Section {
        name: "app_database",
        about: "The stack's application database, which `/backup`, `/restore` and `/db` act on. Not runbot's own store (`[database]`).",
        defaults: || format!("{:?}", AppDatabaseSettings::default()),
        keys: &[
            Key {
                name: "url",
                kind: "secret URL",
                default: "unset",
                about: "the stack's application database (not runbot's own, `database.url`): `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (`postgresql://` too; `?host=/run/postgresql` for a socket folder). `/backup`, `/restore` and `/db` act on it; unset, they say to set it. The password reaches `pg_dump` and `psql` as `PGPASSWORD`, never on a command line, and is never logged or shown",
            },
            Key {
                name: "backup_dir",
                kind: "path",
                default: "`backups`",
                about: "where backups are written and read, as `backup_YYYYmmdd_HHMMSS.sql.gz` (UTC); relative to runbot's working directory",
            },
            Key {
                name: "pg_dump",
                kind: "program",
                default: "`pg_dump`",
                about: "the `pg_dump` program (on PATH, or a path); its major version must be at least the server's",
            },
            Key {
                name: "psql",
                kind: "program",
                default: "`psql`",
                about: "the `psql` program restores run",
            },
            Key {
                name: "timeout_secs",
                kind: "seconds",
                default: "`900`",
                about: "longest a backup or restore may run (10–86400); then it is stopped: a backup leaves no file, a restore commits nothing",
            },
        ],
    };
}

/// Shows the URL with its password masked, so settings can be logged whole.
impl std::fmt::Debug for AppDatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self
            .url
            .as_ref()
            .map(|u| crate::domain::redact::redact(u.expose_secret()).into_owned());
        f.debug_struct("AppDatabaseSettings")
            .field("url", &url)
            .field("backup_dir", &self.backup_dir)
            .field("pg_dump", &self.pg_dump)
            .field("psql", &self.psql)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl AppDatabaseSettings {
    /// `app_database.url` parsed; None when unset. The error never holds the URL (it holds a
    /// password). Read it in [`Parsed::app_database`].
    fn target(&self) -> Result<Option<PgUrl>, String> {
        self.url
            .as_ref()
            .map(|u| {
                PgUrl::parse(u.expose_secret())
                    .map_err(|e| format!("app_database.url is not usable: {e}"))
            })
            .transpose()
    }

    /// Longest a backup or a restore may run (`app_database.timeout_secs`).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// `[docker]`: the engine, and the docker-compose project whose services commands act on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSettings {
    /// `unix:///var/run/docker.sock` (default), `tcp://HOST:PORT` or `http://HOST:PORT`.
    pub host: String,
    /// The compose project name (the `com.docker.compose.project` label on its containers).
    /// No default: a wrong guess would show someone else's containers or none. Unset, Docker
    /// commands say to set it.
    pub project: Option<String>,
    /// Longest wait for one answer from the engine.
    pub timeout_secs: u64,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            host: DockerHost::DEFAULT.into(),
            project: None,
            timeout_secs: 30,
        }
    }
}

/// `[docker]` in the settings reference: one entry per field above.
impl DockerSettings {
    pub const REFERENCE: Section = Section {
        name: "docker",
        about: "The engine, and the docker-compose project whose services commands act on.",
        defaults: || format!("{:?}", DockerSettings::default()),
        keys: &[
            Key {
                name: "host",
                kind: "URL",
                default: "`unix:///var/run/docker.sock`",
                about: "the Docker engine: `unix:///path/docker.sock`, or `tcp://HOST:PORT` / `http://HOST:PORT` (plain HTTP; no TLS). runbot connects on first use and agrees the API version with the engine, so older engines (Debian 12's speaks 1.41) work",
            },
            Key {
                name: "project",
                kind: "string",
                default: "unset",
                about: "the docker-compose project of your stack (`docker compose ls` shows it; by default compose names it after the compose file's folder). runbot finds services by the labels compose puts on containers (`com.docker.compose.project`, `com.docker.compose.service`). Unset, the Docker commands say to set it",
            },
            Key {
                name: "timeout_secs",
                kind: "seconds",
                default: "`30`",
                about: "longest wait for one answer from the engine (1–300), and for each replica `/restart` or `/scale` starts to be ready; a stop may take the container's stop grace period on top",
            },
        ],
    };
}

impl DockerSettings {
    /// Where the engine listens (`docker.host`). Read it in [`Parsed::docker_host`].
    fn engine_host(&self) -> Result<DockerHost, String> {
        DockerHost::parse(&self.host).map_err(|e| {
            format!(
                "docker.host = {:?}: {e}; {}",
                crate::domain::redact::shown_url(&self.host),
                DockerHost::FORM
            )
        })
    }

    /// The stack's compose project (`docker.project`); None when unset. Read it in
    /// [`Parsed::docker_project`].
    fn project(&self) -> Result<Option<ProjectName>, String> {
        self.project
            .as_deref()
            .map(|p| {
                ProjectName::parse(p).map_err(|e| {
                    format!("docker.project = {p:?} is not a compose project name: {e}")
                })
            })
            .transpose()
    }

    /// Longest wait for one answer from the engine (`docker.timeout_secs`).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// `[deploy]`: the runbook's deploy pipeline (`/deploy`, `/rollback`, `/deploys`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySettings {
    /// The services that run the team's own image and get the new tag, in this order. Their
    /// image's repository stays; only the tag changes. Empty: `/deploy` says to set it.
    pub services: Vec<String>,
    /// Back up the application database (`[app_database]`) before migrating. On by default: a
    /// deploy without a backup is refused, unless this is turned off.
    pub backup: bool,
    /// The one-off migration run in a container of the new image (none when unset).
    pub migrate: Option<MigrateSettings>,
    /// HTTP checks after the containers are recreated: each must answer 2xx within its timeout.
    pub health: Vec<HttpCheck>,
    /// HTTP checks after the health checks (the runbook's smoke tests).
    pub smoke: Vec<HttpCheck>,
    /// How long a recreated container may take to run (and be healthy, if it has a health check).
    pub ready_timeout_secs: u64,
    /// How long pulling an image that is not on the engine may take.
    pub pull_timeout_secs: u64,
    /// A running deploy renews its lock this often; one silent for `lock_stale_secs` was
    /// interrupted (runbot was killed) and its lock is released.
    pub heartbeat_secs: u64,
    pub lock_stale_secs: u64,
    /// How long `/restart`, `/scale`, `/restore`, `/backup` and a deploy wait for a lock another
    /// request holds (a deploy of the stack, a backup of the database) before giving up with
    /// nothing changed. 0: do not wait.
    pub lock_wait_secs: u64,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            services: Vec::new(),
            backup: true,
            migrate: None,
            health: Vec::new(),
            smoke: Vec::new(),
            ready_timeout_secs: 120,
            pull_timeout_secs: 600,
            heartbeat_secs: 5,
            lock_stale_secs: 60,
            lock_wait_secs: 120,
        }
    }
}

/// `[deploy]` in the settings reference: one entry per field above.
impl DeploySettings {
    pub const REFERENCE: Section = Section {
        name: "deploy",
        about: "The runbook's deploy pipeline (`/deploy`, `/rollback`, `/deploys`).",
        defaults: || format!("{:?}", DeploySettings::default()),
        keys: &[
            Key {
                name: "services",
                kind: "list of strings",
                default: "none",
                about: "the services that run your own image, in the order a deploy recreates them, e.g. `[\"backend\", \"worker\", \"beat\"]`. A deploy keeps each one's image repository and changes the tag. Unset, `/deploy` and `/rollback` say to set it",
            },
            Key {
                name: "backup",
                kind: "bool",
                default: "`true`",
                about: "back up `app_database` before migrating; with it on and `app_database.url` unset, `/deploy` is refused. Set `false` to deploy without a backup",
            },
            Key {
                name: "migrate",
                kind: "table",
                default: "unset",
                about: "`{ service = \"backend\", command = [\"alembic\", \"upgrade\", \"head\"], timeout_secs = 600 }`: a one-off container of the new image, made like that service's first replica (env, mounts, networks), runs the command (arguments, never a shell); exit 0 passes. Not run by `/rollback`",
            },
            Key {
                name: "health",
                kind: "list of tables",
                default: "none",
                about: "HTTP checks after the containers are recreated, each `{ name, url, status, contains, timeout_secs = 30 }`: a GET from where runbot runs, retried until it answers `status` (default any 2xx) with `contains` in the body, or its time runs out. Docker's own health checks of the new containers are waited for first",
            },
            Key {
                name: "smoke",
                kind: "list of tables",
                default: "none",
                about: "the runbook's smoke tests: HTTP checks of the same shape, run after the health checks",
            },
            Key {
                name: "ready_timeout_secs",
                kind: "seconds",
                default: "`120`",
                about: "how long a recreated container may take to run, and to be healthy if its image has a health check (1–3600)",
            },
            Key {
                name: "pull_timeout_secs",
                kind: "seconds",
                default: "`600`",
                about: "how long pulling a tag that is not on the engine may take (1–7200)",
            },
            Key {
                name: "heartbeat_secs",
                kind: "seconds",
                default: "`5`",
                about: "a running deploy, and every held lock (see [Locks](how-it-works.md#locks)), is renewed this often",
            },
            Key {
                name: "lock_stale_secs",
                kind: "seconds",
                default: "`60`",
                about: "a deploy or lock silent this long by the database's clock (its runbot was killed) is taken over: a deploy is marked interrupted and its lock released. At least twice `deploy.heartbeat_secs`",
            },
            Key {
                name: "lock_wait_secs",
                kind: "seconds",
                default: "`120`",
                about: "how long `/restart`, `/scale`, `/restore`, `/backup` and a deploy wait for a lock another request holds (a deploy of the stack, a backup of the database) before giving up with nothing changed, naming the holder; 0: do not wait. The wait is shown in the request's message (0–3600)",
            },
        ],
    };
}

/// `[deploy.migrate]`: e.g. `service = "backend"`, `command = ["alembic", "upgrade", "head"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateSettings {
    /// Whose configuration (env, mounts, networks) the one-off container copies.
    pub service: String,
    /// The command, as arguments (never through a shell).
    pub command: Vec<String>,
    #[serde(default = "default_migrate_timeout")]
    pub timeout_secs: u64,
}

fn default_migrate_timeout() -> u64 {
    600
}

/// One HTTP check: `[[deploy.health]]` or `[[deploy.smoke]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// What the step shows, e.g. "backend /health" (default: the URL).
    pub name: Option<String>,
    /// A GET to this URL, from where runbot runs.
    pub url: String,
    /// The status expected (default: any 2xx).
    pub status: Option<u16>,
    /// Text the body must contain.
    pub contains: Option<String>,
    /// Keep trying until this long has passed.
    #[serde(default = "default_check_timeout")]
    pub timeout_secs: u64,
}

fn default_check_timeout() -> u64 {
    30
}

impl HttpCheck {
    /// Its name, else its URL as it may be shown (no credentials).
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => crate::domain::redact::shown_url(&self.url),
        }
    }
}

/// How people's requests (slash commands, buttons) are handled, whatever the platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InteractionSettings {
    /// Requests one person may make per minute; more get a polite refusal (audited).
    pub per_user_per_minute: u32,
    /// How many of those may come at once.
    pub per_user_burst: u32,
    /// How long a Confirm/Cancel prompt waits for its requester.
    pub confirm_timeout_secs: u64,
    /// How long an approval request waits. At most 900: Discord lets runbot edit its answer
    /// for 15 minutes.
    pub approval_timeout_secs: u64,
}

impl Default for InteractionSettings {
    fn default() -> Self {
        Self {
            per_user_per_minute: 30,
            per_user_burst: 10,
            confirm_timeout_secs: 120,
            approval_timeout_secs: 900,
        }
    }
}

/// `[interactions]` in the settings reference: one entry per field above.
impl InteractionSettings {
    pub const REFERENCE: Section = Section {
        name: "interactions",
        about: "How people's requests (slash commands, buttons) are handled, whatever the platform.",
        defaults: || format!("{:?}", InteractionSettings::default()),
        keys: &[
            Key {
                name: "per_user_per_minute",
                kind: "integer",
                default: "`30`",
                about: "requests (commands and buttons) one person may make per minute; more get a polite refusal, audited (the first in a minute at once, the rest as one count: see [Audit trail](audit.md))",
            },
            Key {
                name: "per_user_burst",
                kind: "integer",
                default: "`10`",
                about: "how many of those may come at once",
            },
            Key {
                name: "confirm_timeout_secs",
                kind: "seconds",
                default: "`120`",
                about: "how long a Confirm/Cancel prompt waits for its requester (10–900)",
            },
            Key {
                name: "approval_timeout_secs",
                kind: "seconds",
                default: "`900`",
                about: "how long an approval request waits (10–900: Discord lets runbot edit its answer for 15 minutes)",
            },
        ],
    };
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address the HTTP server binds.
    pub listen: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// The `Host` values runbot answers to (`host` or `host:port`). Unset: with a loopback
    /// `listen`, 127.0.0.1, localhost and [::1] with the port (a page on another site that
    /// resolves its name to 127.0.0.1 cannot reach runbot); with any other `listen`, every host.
    pub allowed_hosts: Option<Vec<String>>,
    /// How long a client may take to send a request's headers (and how long an idle
    /// keep-alive connection stays open); then the connection is closed.
    pub header_timeout_secs: u64,
    /// How long a client may take to send a request's body once its headers arrived; then 408.
    pub body_timeout_secs: u64,
    /// Connections served at once; more wait in the listen queue until one closes.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take before their connections are closed.
    pub shutdown_timeout_secs: u64,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>`.
    pub metrics_token: Option<SecretString>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            allowed_hosts: None,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 1024,
            shutdown_timeout_secs: 20,
            metrics_token: None,
        }
    }
}

/// `[http]` in the settings reference: one entry per field above.
impl HttpSettings {
    pub const REFERENCE: Section = Section {
        name: "http",
        about: "The HTTP server: webhooks, Discord interactions, the console, `/api/*`, `/metrics`.",
        defaults: || format!("{:?}", HttpSettings::default()),
        keys: &[
            Key {
                name: "listen",
                kind: "address",
                default: "`127.0.0.1:8080`",
                about: "address and port to listen on. An address other machines can reach (anything but loopback) needs `alertmanager.webhook_token` or `alertmanager.basic_auth`: without them `serve` does not start and `check-config` exits 2 with the fix",
            },
            Key {
                name: "max_body_bytes",
                kind: "integer",
                default: "`1048576`",
                about: "largest request body (1024–67108864); larger ones get 413",
            },
            Key {
                name: "allowed_hosts",
                kind: "list of strings",
                default: "unset",
                about: "the `Host` values runbot answers to, each `host` or `host:port` (IPv6 in brackets); any other `Host` gets 421. Unset: with a loopback `http.listen`, `127.0.0.1`, `localhost` and `[::1]` with runbot's port (so a web page elsewhere that resolves its own name to 127.0.0.1, DNS rebinding, gets 421); with any other listen, every host. Set it (e.g. `[\"runbot.example.com\", \"127.0.0.1:8080\"]`) when a proxy forwards your public name as `Host`. An entry without a port matches any port; a `Host` without a port counts as port 80",
            },
            Key {
                name: "header_timeout_secs",
                kind: "seconds",
                default: "`10`",
                about: "how long a client may take to send a request's headers, and how long an idle keep-alive connection stays open (1–300); then the connection is closed",
            },
            Key {
                name: "body_timeout_secs",
                kind: "seconds",
                default: "`30`",
                about: "how long a request's body may take once its headers arrived (1–3600); then 408",
            },
            Key {
                name: "max_connections",
                kind: "integer",
                default: "`1024`",
                about: "connections served at once (1–100000); more wait in the listen queue",
            },
            Key {
                name: "shutdown_timeout_secs",
                kind: "seconds",
                default: "`20`",
                about: "at shutdown, how long requests in flight may take before their connections are closed (1–600)",
            },
            Key {
                name: "metrics_token",
                kind: "secret",
                default: "unset",
                about: "when set, `/metrics` answers only `Authorization: Bearer <token>` (Prometheus: `authorization: { credentials: … }` in the scrape config), others get 401; at least 16 characters, no spaces (`openssl rand -hex 32`). Unset: `/metrics` is open, as it is to a local Prometheus",
            },
        ],
    };
}

/// One entry of `http.allowed_hosts`, or a `Host` header: a name or address (lowercase, IPv6 in
/// brackets) and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPattern {
    /// `name`, `name:port`, `1.2.3.4:80`, `[::1]:8080`; None for anything else.
    pub fn parse(s: &str) -> Option<HostPattern> {
        let (host, port) = Self::split(s)?;
        Some(HostPattern {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// A `Host` value's host (IPv6 with its brackets) and port, borrowed: every request's
    /// `Host` is checked, so this allocates nothing. None for anything but a name or address.
    pub fn split(s: &str) -> Option<(&str, Option<u16>)> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest.split_once(']')?;
            addr.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?.parse().ok()?),
            };
            return Some((&s[..addr.len() + 2], port));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (s, None),
        };
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        name_ok.then_some((host, port))
    }

    /// Whether a request's `Host` (as [`HostPattern::split`] gives it) matches: the same host
    /// in any case, and the same port when one is given here (a Host without a port means the
    /// scheme's default, 80).
    pub fn matches(&self, host: &str, port: Option<u16>) -> bool {
        self.host.eq_ignore_ascii_case(host) && self.port.is_none_or(|p| p == port.unwrap_or(80))
    }
}

/// The web console: its sessions and the token for scripts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// A bearer token that opens the console and `/api/*` to scripts (reads everything, acts as
    /// nobody).
    pub token: Option<SecretString>,
    /// A session ends after this many minutes without a request.
    pub session_idle_minutes: u64,
    /// A session ends this many hours after sign-in, however busy.
    pub session_max_hours: u64,
    /// Cookies without `Secure`, for a browser on plain HTTP (loopback, no TLS proxy).
    pub insecure_cookies: bool,
    /// How often a live stream (`GET /api/events`) checks that its session or token holds.
    pub stream_recheck_secs: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            token: None,
            session_idle_minutes: 60,
            session_max_hours: 12,
            insecure_cookies: false,
            stream_recheck_secs: 60,
        }
    }
}

/// `[console]` in the settings reference: one entry per field above.
impl ConsoleSettings {
    pub const REFERENCE: Section = Section {
        name: "console",
        about: "The web console: sign-in sessions, and a token for scripts.",
        defaults: || format!("{:?}", ConsoleSettings::default()),
        keys: &[
            Key {
                name: "token",
                kind: "secret string",
                default: "unset",
                about: "opens the console and `/api/*` to scripts that send `Authorization: Bearer TOKEN` (basic auth with TOKEN as the password also works for GET and HEAD). It reads everything and acts as nobody; people sign in at `/login` instead, and scripts that act use an API token (`runbot token create`). At least 16 characters, no spaces (`openssl rand -hex 32`)",
            },
            Key {
                name: "session_idle_minutes",
                kind: "minutes",
                default: "`60`",
                about: "a console session ends after this many minutes without a request (1–1440, at most `session_max_hours`); checked at every request, to the minute",
            },
            Key {
                name: "session_max_hours",
                kind: "hours",
                default: "`12`",
                about: "a console session ends this many hours after sign-in, however busy (1–720)",
            },
            Key {
                name: "insecure_cookies",
                kind: "boolean",
                default: "`false`",
                about: "send the session cookie without `Secure`, for a browser that reaches runbot over plain HTTP (on loopback, or a trusted network without a TLS proxy). Leave it off behind HTTPS: a `Secure` cookie never travels unencrypted",
            },
            Key {
                name: "stream_recheck_secs",
                kind: "seconds",
                default: "`60`",
                about: "how often a live stream (`GET /api/events`) checks that its session is still live and its API token not revoked; a stream whose session ended (sign-out, idle, age, a disabled account) gets `event: signed-out` and ends (1–3600)",
            },
        ],
    };
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (default `sqlite://runbot.db`) or `postgres://user:pass@host/db`.
    pub url: SecretString,
    pub max_connections: u32,
    /// How long a request waits for a database connection before giving up (then 503).
    pub acquire_timeout_ms: u64,
    /// Most webhooks written in one transaction.
    pub write_batch_max: usize,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://runbot.db"),
            max_connections: 8,
            acquire_timeout_ms: 3000,
            write_batch_max: 512,
        }
    }
}

/// `[database]` in the settings reference: one entry per field above.
impl DatabaseSettings {
    pub const REFERENCE: Section = Section {
        name: "database",
        about: "runbot's own store (not the stack's application database, `[app_database]`).",
        defaults: || format!("{:?}", DatabaseSettings::default()),
        keys: &[
            Key {
                name: "url",
                kind: "secret URL",
                default: "`sqlite://runbot.db`",
                about: "`sqlite://PATH` (WAL mode) or `postgres://user:pass@host:5432/db`",
            },
            Key {
                name: "max_connections",
                kind: "integer",
                default: "`8`",
                about: "connection pool size",
            },
            Key {
                name: "acquire_timeout_ms",
                kind: "milliseconds",
                default: "`3000`",
                about: "how long to wait for a connection before answering 503",
            },
            Key {
                name: "write_batch_max",
                kind: "integer",
                default: "`512`",
                about: "most webhooks stored in one transaction",
            },
        ],
    };
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerSettings {
    /// Expected `Authorization: Bearer <token>` on webhooks.
    pub webhook_token: Option<SecretString>,
    /// Expected basic auth on webhooks.
    pub basic_auth: Option<BasicAuth>,
    /// Alertmanager's root URL (`{url}/api/v2/...`), for silences. Unset: /silence says so.
    pub url: Option<String>,
}

/// `[alertmanager]` in the settings reference: one entry per field above.
impl AlertmanagerSettings {
    pub const REFERENCE: Section = Section {
        name: "alertmanager",
        about: "The webhooks Alertmanager sends, and its API for silences.",
        defaults: || format!("{:?}", AlertmanagerSettings::default()),
        keys: &[
            Key {
                name: "webhook_token",
                kind: "secret string",
                default: "unset",
                about: "bearer token Alertmanager must send (8+ characters)",
            },
            Key {
                name: "basic_auth.username",
                kind: "string",
                default: "unset",
                about: "basic auth Alertmanager may send instead of the token: the user name",
            },
            Key {
                name: "basic_auth.password",
                kind: "secret string",
                default: "unset",
                about: "and its password",
            },
            Key {
                name: "url",
                kind: "URL",
                default: "unset",
                about: "Alertmanager's root (e.g. `http://alertmanager:9093`) for `/silence` and `/unsilence` through its API v2; unset, they say so and change nothing. It may carry basic-auth credentials, `http://user:pass@host:9093`; they are never shown",
            },
        ],
    };
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter such as `info` or `runbot=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
    /// `auto` (JSON unless stdout is a terminal), `json` or `text`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

/// `[log]` in the settings reference: one entry per field above.
impl LogSettings {
    pub const REFERENCE: Section = Section {
        name: "log",
        about: "runbot's own log.",
        defaults: || format!("{:?}", LogSettings::default()),
        keys: &[
            Key {
                name: "level",
                kind: "string",
                default: "`info`",
                about: "a filter such as `info`, `debug`, `runbot=debug,warn`; `RUST_LOG` wins when set",
            },
            Key {
                name: "format",
                kind: "`auto`, `json` or `text`",
                default: "`auto`",
                about: "`json`, `text`, or `auto` (JSON unless stdout is a terminal)",
            },
        ],
    };
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

/// How Discord's interactions reach runbot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiscordMode {
    /// Discord posts them to `/discord/interactions` (a public HTTPS address, `public_key`).
    #[default]
    Http,
    /// runbot keeps a Gateway connection open and receives them over it: nothing inbound.
    Gateway,
}

impl DiscordMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscordMode::Http => "http",
            DiscordMode::Gateway => "gateway",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordSettings {
    /// The bot's token; setting it turns Discord on.
    pub bot_token: Option<SecretString>,
    /// How interactions arrive: posted to runbot (`http`) or over the Gateway (`gateway`).
    pub mode: DiscordMode,
    /// The application's id (Developer Portal → General Information).
    pub application_id: Option<String>,
    /// The application's public key, which signs interactions (hex).
    pub public_key: Option<String>,
    /// Replaces `https://discord.com` (tests, proxies); requests go to `{api_base}/api/v10/…`.
    pub api_base: String,
    /// Where alert cards go unless a route says otherwise.
    pub alert_channel_id: Option<String>,
    /// Routes checked in order; the first that matches a group picks its channel.
    pub routes: Vec<DiscordRoute>,
    /// A group that fires again within this many seconds of resolving edits its old card
    /// instead of posting a new one.
    pub refire_window_secs: u64,
    /// Give up on one request after this long (then retry with backoff).
    pub request_timeout_ms: u64,
    /// Requests per second across all of Discord, kept under Discord's global 50.
    pub global_requests_per_sec: u32,
    /// Interactions signed longer ago (or further ahead) than this are refused.
    pub interaction_max_age_secs: u64,
    /// In a storm, when more groups than this wait for their first card in one channel, one
    /// digest message names them all until their cards follow.
    pub digest_after: usize,
}

impl Default for DiscordSettings {
    fn default() -> Self {
        Self {
            bot_token: None,
            mode: DiscordMode::Http,
            application_id: None,
            public_key: None,
            api_base: "https://discord.com".into(),
            alert_channel_id: None,
            routes: Vec::new(),
            refire_window_secs: 3600,
            request_timeout_ms: 10_000,
            global_requests_per_sec: 45,
            digest_after: 5,
            interaction_max_age_secs: 300,
        }
    }
}

/// `[discord]` in the settings reference: one entry per field above.
impl DiscordSettings {
    pub const REFERENCE: Section = Section {
        name: "discord",
        about: "The Discord bot: alert cards, slash commands, buttons.",
        defaults: || format!("{:?}", DiscordSettings::default()),
        keys: &[
            Key {
                name: "bot_token",
                kind: "secret string",
                default: "unset",
                about: "the bot's token; setting it turns Discord on",
            },
            Key {
                name: "mode",
                kind: "`http` or `gateway`",
                default: "`http`",
                about: "how interactions reach runbot: `http`, Discord posts them to `/discord/interactions` (a public HTTPS address and `public_key` needed); `gateway`, runbot keeps a Gateway connection open and receives them over it, so nothing needs to reach runbot from outside (`bot_token` and `application_id` needed; `public_key` unused and `/discord/interactions` answers 404)",
            },
            Key {
                name: "application_id",
                kind: "string",
                default: "unset",
                about: "the application's id (Developer Portal → General Information)",
            },
            Key {
                name: "public_key",
                kind: "string",
                default: "unset",
                about: "the application's public key (64 hex characters), which signs interactions; required for `/discord/interactions` (`mode = \"http\"`)",
            },
            Key {
                name: "alert_channel_id",
                kind: "string",
                default: "unset",
                about: "channel for alert cards (required with a token)",
            },
            Key {
                name: "routes",
                kind: "list of tables",
                default: "none",
                about: "`{ channel_id, matchers = { label = \"value\" }, severities = [\"sev1\"] }`, checked in order; the first that matches a group picks its channel",
            },
            Key {
                name: "api_base",
                kind: "URL",
                default: "`https://discord.com`",
                about: "Discord's address; requests go to `{api_base}/api/v10/…` (tests, proxies, air-gapped relays)",
            },
            Key {
                name: "refire_window_secs",
                kind: "seconds",
                default: "`3600`",
                about: "a group firing again within this long of resolving edits its old card",
            },
            Key {
                name: "request_timeout_ms",
                kind: "milliseconds",
                default: "`10000`",
                about: "one request's time limit before it is retried",
            },
            Key {
                name: "global_requests_per_sec",
                kind: "integer",
                default: "`45`",
                about: "pace of all Discord requests; Discord's global limit is 50, so raise this only if Discord raised your bot's limit (up to 10000)",
            },
            Key {
                name: "interaction_max_age_secs",
                kind: "seconds",
                default: "`300`",
                about: "interactions signed longer ago, or further ahead, than this are refused (401); their ids are kept in the database twice this long, so a replay is refused too",
            },
            Key {
                name: "digest_after",
                kind: "integer",
                default: "`5`",
                about: "in a storm, when more groups than this wait for their first card in one channel, a digest message names them all",
            },
        ],
    };
}

impl DiscordSettings {
    pub fn enabled(&self) -> bool {
        self.bot_token.is_some()
    }
}

/// Sends the groups it matches to `channel_id`. Every listed label must have the given value,
/// and when `severities` is set, the group's severity must be one of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordRoute {
    pub channel_id: String,
    #[serde(default)]
    pub matchers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub severities: Vec<String>,
}

/// A folder of data files. Unset means `./<name>` when it exists, else the copy built into the binary.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DataDir {
    pub dir: Option<PathBuf>,
}

/// `[commands]` in the settings reference: one entry per field above.
impl DataDir {
    pub const REFERENCE: Section = Section {
        name: "commands",
        about: "Where `commands/` is.",
        defaults: || format!("{:?}", DataDir::default()),
        keys: &[Key {
            name: "dir",
            kind: "path",
            default: "`./commands` if present, else built in",
            about: "folder with one file per command and `alerts.toml` (the runbook entries)",
        }],
    };
}

impl DataDir {
    /// The folder to read, or None for the copy built into the binary.
    pub fn resolve(&self, name: &str) -> Option<PathBuf> {
        resolve_data_dir(&self.dir, name)
    }
}

/// An unset folder means `./<name>` when it exists, else None: the copy built into the binary.
pub fn resolve_data_dir(dir: &Option<PathBuf>, name: &str) -> Option<PathBuf> {
    dir.clone()
        .or_else(|| Path::new(name).is_dir().then(|| PathBuf::from(name)))
}

/// `[policy]`: where `policies/` is, and the clock on-call hours are read with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Unset means `./policies` when it exists, else the copy built into the binary.
    pub dir: Option<PathBuf>,
    /// IANA time zone name; business hours, weekends and on-call hours are read in it.
    pub timezone: String,
    /// `HH:MM-HH:MM`, Monday to Friday, or with days first: `Sun-Thu 08:00-17:00`.
    pub business_hours: String,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            dir: None,
            timezone: "UTC".into(),
            business_hours: "09:00-18:00".into(),
        }
    }
}

/// `[policy]` in the settings reference: one entry per field above.
impl PolicySettings {
    pub const REFERENCE: Section = Section {
        name: "policy",
        about: "Where `policies/` is, and the clock on-call hours are read with.",
        defaults: || format!("{:?}", PolicySettings::default()),
        keys: &[
            Key {
                name: "dir",
                kind: "path",
                default: "`./policies` if present, else built in",
                about: "folder with `severities.toml`, `roles.toml`, `runbot.cedarschema`, `runbot.cedar`, the on-call files `people.toml`, `oncall.toml`, `escalation.toml` (optional in a folder of one's own) and `tests.toml` for `runbot policy test`",
            },
            Key {
                name: "timezone",
                kind: "IANA time zone",
                default: "`UTC`",
                about: "the time zone (e.g. `Europe/Madrid`) in which business hours, weekends and on-call hours are read",
            },
            Key {
                name: "business_hours",
                kind: "hours",
                default: "`09:00-18:00`",
                about: "business hours, Monday to Friday; other days go first: `Sun-Thu 08:00-17:00`. The other days are the weekend",
            },
        ],
    };
}

impl PolicySettings {
    /// The folder to read, or None for the copy built into the binary.
    pub fn resolve_dir(&self) -> Option<PathBuf> {
        resolve_data_dir(&self.dir, "policies")
    }

    /// The clock, or a message naming the key at fault. Read it in [`Parsed::policy_clock`].
    fn clock(&self) -> Result<Clock, Vec<String>> {
        let tz = crate::domain::hours::parse_timezone(&self.timezone)
            .map_err(|e| format!("policy.timezone = {e}"));
        let business = BusinessHours::parse(&self.business_hours).map_err(|e| {
            format!(
                "policy.business_hours = {:?}: {e}; {}",
                self.business_hours,
                BusinessHours::FORM
            )
        });
        match (tz, business) {
            (Ok(tz), Ok(business)) => Ok(Clock { tz, business }),
            (tz, business) => Err(tz.err().into_iter().chain(business.err()).collect()),
        }
    }
}

/// Where the database lives, decided once from `database.url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl DatabaseSettings {
    pub fn backend(&self) -> Option<Backend> {
        let url = self.url.expose_secret();
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

impl Settings {
    /// Loads settings from the optional file and the environment. `file` is `--config`/`RUNBOT_CONFIG`;
    /// when it is given the file must exist.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("RUNBOT__"))
            .collect();
        Self::load_from(file, env)
    }

    /// Like [`Settings::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_from(
        file: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError(vec![format!(
                        "config file {} does not exist: fix the path given with --config or RUNBOT_CONFIG",
                        path.display()
                    )]));
                }
                builder =
                    builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
            }
            None => {
                builder = builder.add_source(
                    config::File::with_name(DEFAULT_CONFIG_FILE)
                        .format(config::FileFormat::Toml)
                        .required(false),
                );
            }
        }
        let env_map: std::collections::HashMap<String, String> = env.into_iter().collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env_map)),
        );
        let mut tree = builder
            .build()
            .map_err(|e| ConfigError(vec![explain(&e.to_string())]))?
            .cache;
        let problems = secret_files::resolve(&mut tree);
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        let mut settings: Settings = tree
            .try_deserialize()
            .map_err(|e| ConfigError(vec![explain(&e.to_string())]))?;
        settings.parsed = settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot (addresses, URLs, ranges, pairs that go together) and parses
    /// what is a string in the file into its typed value; every problem is reported at once.
    pub fn validate(&self) -> Result<Parsed, ConfigError> {
        let mut problems = Vec::new();
        let listen = self.http.listen.parse::<SocketAddr>().ok();
        if listen.is_none() {
            problems.push(format!(
                "http.listen = {:?} is not an address: use IP:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
                self.http.listen
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            problems.push(format!(
                "http.max_body_bytes = {} is out of range: use 1024 to 67108864 (default 1048576)",
                self.http.max_body_bytes
            ));
        }
        let allowed_hosts = self.validate_http(listen, &mut problems);
        if self.database.backend().is_none() {
            // Never echo the URL: it may hold a password.
            problems.push(
                "database.url must start with sqlite:// (a file) or postgres:// (a server)".into(),
            );
        }
        if self.database.url.expose_secret().contains(":memory:") {
            problems.push("database.url: an in-memory SQLite database loses every alert on restart; use a file, e.g. sqlite://runbot.db".into());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1 (default 8)".into());
        }
        if self.database.acquire_timeout_ms == 0 {
            problems.push("database.acquire_timeout_ms must be at least 1 (default 3000)".into());
        }
        if self.database.write_batch_max == 0 {
            problems.push("database.write_batch_max must be at least 1 (default 512)".into());
        }
        problems.extend(weak_token(
            "alertmanager.webhook_token",
            &self.alertmanager.webhook_token,
            8,
        ));
        if let Some(basic) = &self.alertmanager.basic_auth {
            if basic.username.is_empty() || basic.username.contains(':') {
                problems.push(
                    "alertmanager.basic_auth.username must be non-empty and contain no ':'".into(),
                );
            }
            if basic.password.expose_secret().len() < 8 {
                problems
                    .push("alertmanager.basic_auth.password must be at least 8 characters".into());
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!(
                "log.level = {:?} is not a valid filter ({e}): use e.g. info, debug or runbot=debug,warn",
                self.log.level
            ));
        }
        let policy_clock = self.policy.clock().map_err(|e| problems.extend(e)).ok();
        for (key, dir) in [
            ("policy.dir", &self.policy.dir),
            ("commands.dir", &self.commands.dir),
        ] {
            if let Some(path) = dir {
                if !path.is_dir() {
                    problems.push(format!(
                        "{key} = {} is not a folder: fix the path, or remove the key to use the built-in data",
                        path.display()
                    ));
                }
            }
        }
        let (discord_application_id, discord_routes) = self.validate_discord(&mut problems);
        self.validate_interactions(&mut problems);
        let (docker_host, docker_project) = self.validate_docker(&mut problems);
        let app_database = self.validate_app_database(&mut problems);
        self.validate_deploy(&mut problems);
        let email = self.email.validate(&mut problems);
        let webhooks = self.notify.validate(&mut problems).unwrap_or_default();
        let slack_routes = self.slack.validate(&mut problems);
        let guard = self.validate_nginx(&mut problems);
        if !(10..=86_400).contains(&self.audit.head_log_secs) {
            problems.push(format!(
                "audit.head_log_secs = {} must be 10 to 86400 (default 300)",
                self.audit.head_log_secs
            ));
        }
        match crate::domain::duration::parse(&self.escalation.verify_after) {
            Some(d) if d.as_secs() <= 86_400 => {}
            _ => problems.push(format!(
                "escalation.verify_after = {:?} must be a duration from 1s to 1d, such as \"10m\"",
                self.escalation.verify_after
            )),
        }
        if let Some(u) = &self.escalation.public_url {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {}
                _ => problems.push(format!(
                    "escalation.public_url = {u:?} must be an http(s) address such as \"https://runbot.example.com\""
                )),
            }
        }
        if self.shutdown.grace_secs > 600 {
            problems.push(format!(
                "shutdown.grace_secs = {} must be 0 to 600 (default 10)",
                self.shutdown.grace_secs
            ));
        }
        // A value is missing only where a problem was noted, so no problems means all are here.
        match (
            listen,
            docker_host,
            docker_project,
            app_database,
            guard,
            policy_clock,
        ) {
            (
                Some(listen),
                Some(docker_host),
                Some(docker_project),
                Some(app_database),
                Some(guard),
                Some(policy_clock),
            ) if problems.is_empty() => Ok(Parsed {
                listen,
                allowed_hosts,
                docker_host,
                docker_project,
                app_database,
                guard,
                policy_clock,
                discord_application_id,
                discord_routes,
                email,
                webhooks,
                slack_routes,
            }),
            _ => Err(ConfigError(problems)),
        }
    }

    /// Checks `[http]` and what makes runbot reachable; returns `http.allowed_hosts` parsed.
    fn validate_http(
        &self,
        listen: Option<SocketAddr>,
        problems: &mut Vec<String>,
    ) -> Option<Vec<HostPattern>> {
        let h = &self.http;
        for (key, value, range, default) in [
            (
                "http.header_timeout_secs",
                h.header_timeout_secs,
                1..=300,
                10,
            ),
            ("http.body_timeout_secs", h.body_timeout_secs, 1..=3600, 30),
            (
                "http.shutdown_timeout_secs",
                h.shutdown_timeout_secs,
                1..=600,
                20,
            ),
        ] {
            if !range.contains(&value) {
                problems.push(format!(
                    "{key} = {value} must be {} to {} (default {default})",
                    range.start(),
                    range.end()
                ));
            }
        }
        if !(1..=100_000).contains(&h.max_connections) {
            problems.push(format!(
                "http.max_connections = {} must be 1 to 100000 (default 1024)",
                h.max_connections
            ));
        }
        let allowed_hosts = h.allowed_hosts.as_ref().map(|list| {
            list.iter()
                .filter_map(|host| {
                    let pattern = HostPattern::parse(host);
                    if pattern.is_none() {
                        problems.push(format!(
                            "http.allowed_hosts: {host:?} is not a host name or address, with an optional port (e.g. runbot.example.com or 10.0.0.5:8080)"
                        ));
                    }
                    pattern
                })
                .collect()
        });
        // A listener others can reach would take alerts from anyone: "the caller is local" is
        // no credential once a proxy on this host forwards to runbot.
        if !listen.is_some_and(|a| is_loopback(&a)) && !self.webhook_auth_configured() {
            problems.push(format!(
                "http.listen = {} can be reached from other machines, but no webhook credentials are set, so anyone could post alerts: set alertmanager.webhook_token (e.g. RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN=$(openssl rand -hex 32)) or alertmanager.basic_auth, or listen on 127.0.0.1",
                h.listen
            ));
        }
        // Discord must reach /discord/interactions from the internet, so runbot is exposed,
        // often through a proxy on this host that makes every caller look local.
        if self.discord.public_key.is_some()
            && self.discord.mode == DiscordMode::Http
            && !self.webhook_auth_configured()
        {
            problems.push("discord.public_key is set, so runbot takes requests from the internet (Discord must reach /discord/interactions), but no webhook credentials are set: anyone could post alerts through the same address. Set alertmanager.webhook_token (e.g. RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN=$(openssl rand -hex 32)) or alertmanager.basic_auth".into());
        }
        // The same for Slack's HTTP mode (Socket Mode needs no inbound connection).
        if self.slack.enabled()
            && self.slack.effective_mode() == SlackMode::Http
            && !self.webhook_auth_configured()
        {
            problems.push("slack.mode is http, so runbot takes requests from the internet (Slack must reach /slack/commands), but no webhook credentials are set: anyone could post alerts through the same address. Set alertmanager.webhook_token (e.g. RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN=$(openssl rand -hex 32)) or alertmanager.basic_auth, or use Socket Mode (slack.app_token)".into());
        }
        problems.extend(weak_token(
            "http.metrics_token",
            &self.http.metrics_token,
            16,
        ));
        problems.extend(weak_token("console.token", &self.console.token, 16));
        let c = &self.console;
        if !(1..=720).contains(&c.session_max_hours) {
            problems.push(format!(
                "console.session_max_hours = {} must be 1 to 720 (default 12)",
                c.session_max_hours
            ));
        }
        if !(1..=3600).contains(&c.stream_recheck_secs) {
            problems.push(format!(
                "console.stream_recheck_secs = {} must be 1 to 3600 (default 60)",
                c.stream_recheck_secs
            ));
        }
        if !(1..=1440).contains(&c.session_idle_minutes) {
            problems.push(format!(
                "console.session_idle_minutes = {} must be 1 to 1440 (default 60)",
                c.session_idle_minutes
            ));
        } else if c.session_idle_minutes > c.session_max_hours.saturating_mul(60) {
            problems.push(format!(
                "console.session_idle_minutes = {} is longer than console.session_max_hours = {}: a session ends at the shorter one anyway; lower it or raise session_max_hours",
                c.session_idle_minutes, c.session_max_hours
            ));
        }
        allowed_hosts
    }

    /// Checks `[discord]`; returns the application id and the routes, parsed.
    fn validate_discord(&self, problems: &mut Vec<String>) -> (Option<u64>, Vec<AlertRoute>) {
        let d = &self.discord;
        let snowflake =
            |v: &str| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
        if !(d.api_base.starts_with("https://") || d.api_base.starts_with("http://")) {
            problems.push(format!(
                "discord.api_base = {:?} must be an http(s) URL (default https://discord.com)",
                crate::domain::redact::shown_url(&d.api_base)
            ));
        }
        for (key, value) in [
            ("discord.application_id", &d.application_id),
            ("discord.alert_channel_id", &d.alert_channel_id),
        ] {
            if let Some(v) = value {
                if !snowflake(v) {
                    problems.push(format!("{key} = {v:?} is not a Discord id: copy it with Developer Mode on (a number of up to 20 digits)"));
                }
            }
        }
        if let Some(key) = &d.public_key {
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push("discord.public_key must be the 64 hex characters shown in the Developer Portal".into());
            }
        }
        let mut routes = Vec::with_capacity(d.routes.len());
        for (i, r) in d.routes.iter().enumerate() {
            if !snowflake(&r.channel_id) {
                problems.push(format!(
                    "discord.routes[{i}].channel_id = {:?} is not a Discord id",
                    r.channel_id
                ));
            }
            let mut severities = Vec::with_capacity(r.severities.len());
            for s in &r.severities {
                match Severity::parse(s) {
                    Some(severity) => severities.push(severity),
                    None => problems.push(format!("discord.routes[{i}].severities: {s:?} is not one of sev1, sev2, sev3, sev4")),
                }
            }
            routes.push(AlertRoute {
                channel_id: r.channel_id.clone(),
                matchers: r.matchers.clone(),
                severities,
            });
        }
        if let Some(token) = &d.bot_token {
            let t = token.expose_secret();
            if t.len() < 20 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push("discord.bot_token does not look like a bot token: copy it from Developer Portal → Bot → Reset Token".into());
            }
            if d.alert_channel_id.is_none() {
                problems.push("discord.alert_channel_id is required when discord.bot_token is set: the channel alert cards go to".into());
            }
        } else if d.alert_channel_id.is_some() || !d.routes.is_empty() {
            problems.push(
                "discord.bot_token is missing: cards cannot be sent to Discord without it".into(),
            );
        }
        if d.mode == DiscordMode::Gateway {
            if d.bot_token.is_none() {
                problems.push("discord.mode = \"gateway\" needs discord.bot_token: the Gateway connection is opened with it".into());
            }
            if d.application_id.is_none() {
                problems.push("discord.mode = \"gateway\" needs discord.application_id: interactions are answered through the application's webhooks (Developer Portal → General Information)".into());
            }
        }
        // Discord's global limit is 50/s unless Discord raised it for a large bot, so higher
        // values are allowed, and documented as such.
        if d.global_requests_per_sec == 0 || d.global_requests_per_sec > 10_000 {
            problems.push(format!("discord.global_requests_per_sec = {} must be 1 to 10000 (Discord's global limit is 50 unless Discord raised your bot's; default 45)", d.global_requests_per_sec));
        }
        if !(5..=3600).contains(&d.interaction_max_age_secs) {
            problems.push(format!(
                "discord.interaction_max_age_secs = {} must be 5 to 3600 (default 300)",
                d.interaction_max_age_secs
            ));
        }
        if d.request_timeout_ms < 100 {
            problems.push("discord.request_timeout_ms must be at least 100 (default 10000)".into());
        }
        // Up to 20 digits can still overflow a u64: such an id is left unset, as before.
        let application_id = d.application_id.as_deref().and_then(|id| id.parse().ok());
        (application_id, routes)
    }

    fn validate_interactions(&self, problems: &mut Vec<String>) {
        let i = &self.interactions;
        if i.per_user_per_minute == 0 || i.per_user_per_minute > 6000 {
            problems.push(format!(
                "interactions.per_user_per_minute = {} must be 1 to 6000 (default 30)",
                i.per_user_per_minute
            ));
        }
        if i.per_user_burst == 0 || i.per_user_burst > 1000 {
            problems.push(format!(
                "interactions.per_user_burst = {} must be 1 to 1000 (default 10)",
                i.per_user_burst
            ));
        }
        if !(10..=900).contains(&i.confirm_timeout_secs) {
            problems.push(format!(
                "interactions.confirm_timeout_secs = {} must be 10 to 900 (default 120)",
                i.confirm_timeout_secs
            ));
        }
        if !(10..=900).contains(&i.approval_timeout_secs) {
            problems.push(format!("interactions.approval_timeout_secs = {} must be 10 to 900 (default 900): Discord lets runbot edit its answer for 15 minutes", i.approval_timeout_secs));
        }
        if let Some(url) = &self.alertmanager.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                let url = crate::domain::redact::shown_url(url);
                problems.push(format!(
                    "alertmanager.url = {url:?} must be Alertmanager's http(s) root, e.g. http://alertmanager:9093"
                ));
            }
        }
    }

    /// Checks `[docker]`; returns the engine's address and the project, each None when wrong.
    fn validate_docker(
        &self,
        problems: &mut Vec<String>,
    ) -> (Option<DockerHost>, Option<Option<ProjectName>>) {
        let d = &self.docker;
        let host = d.engine_host().map_err(|e| problems.push(e)).ok();
        let project = d.project().map_err(|e| problems.push(e)).ok();
        if !(1..=300).contains(&d.timeout_secs) {
            problems.push(format!(
                "docker.timeout_secs = {} must be 1 to 300 (default 30)",
                d.timeout_secs
            ));
        }
        (host, project)
    }

    /// Checks `[app_database]`; returns its URL (Some(None) when unset), None when wrong.
    fn validate_app_database(&self, problems: &mut Vec<String>) -> Option<Option<PgUrl>> {
        let a = &self.app_database;
        let target = a.target().map_err(|e| problems.push(e)).ok();
        for (key, program) in [
            ("app_database.pg_dump", &a.pg_dump),
            ("app_database.psql", &a.psql),
        ] {
            if program.trim().is_empty() {
                problems.push(format!(
                    "{key} must name a program (a name on PATH or a path)"
                ));
            }
        }
        if a.backup_dir.as_os_str().is_empty() {
            problems.push("app_database.backup_dir must be a folder (default backups)".into());
        }
        if !(10..=86_400).contains(&a.timeout_secs) {
            problems.push(format!(
                "app_database.timeout_secs = {} must be 10 to 86400 (default 900)",
                a.timeout_secs
            ));
        }
        target
    }

    /// Checks `[nginx]` and `[security]`; returns the block guard, None when wrong.
    fn validate_nginx(&self, problems: &mut Vec<String>) -> Option<Guard> {
        let n = &self.nginx;
        if let Some(f) = &n.deny_file {
            if f.file_name().is_none()
                || f.parent()
                    .is_none_or(|p| !p.as_os_str().is_empty() && !p.is_dir())
            {
                problems.push(format!(
                    "nginx.deny_file = {}: its folder must exist (runbot writes the file beside a temporary copy and renames it)",
                    f.display()
                ));
            }
        }
        for (key, argv) in [("nginx.test", &n.test), ("nginx.reload", &n.reload)] {
            if argv.is_empty() || argv[0].trim().is_empty() {
                problems.push(format!(
                    "{key} must be a program and its arguments, e.g. [\"nginx\", \"-t\"]"
                ));
            }
        }
        if n.mode == NginxMode::Container {
            if self.docker.project.is_none() {
                problems.push(
                    "nginx.mode = \"container\" needs docker.project (the stack nginx runs in)"
                        .into(),
                );
            }
            if n.service.trim().is_empty() {
                problems
                    .push("nginx.service must name nginx's compose service (default nginx)".into());
            }
        }
        if !(1..=32).contains(&n.max_prefix_v4) {
            problems.push(format!(
                "nginx.max_prefix_v4 = {} must be 1 to 32 (default 16)",
                n.max_prefix_v4
            ));
        }
        if !(1..=128).contains(&n.max_prefix_v6) {
            problems.push(format!(
                "nginx.max_prefix_v6 = {} must be 1 to 128 (default 48)",
                n.max_prefix_v6
            ));
        }
        let guard = n.guard().map_err(|e| problems.extend(e)).ok();
        if !(1..=600).contains(&n.timeout_secs) {
            problems.push(format!(
                "nginx.timeout_secs = {} must be 1 to 600 (default 30)",
                n.timeout_secs
            ));
        }
        if !(1..=3600).contains(&n.expiry_check_secs) {
            problems.push(format!(
                "nginx.expiry_check_secs = {} must be 1 to 3600 (default 15)",
                n.expiry_check_secs
            ));
        }
        if n.deny_file.is_some() {
            let id = &n.host_id;
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                problems.push(format!(
                    "nginx.host_id = {id:?} must be 1 to 64 letters, digits, '.', '-' or '_' (it names this host's nginx in /blocked; default: the machine's hostname)"
                ));
            }
        }
        if !(1..=300).contains(&n.sync_secs) {
            problems.push(format!(
                "nginx.sync_secs = {} must be 1 to 300 (default 5)",
                n.sync_secs
            ));
        }
        if !(1..=25).contains(&self.security.top) {
            problems.push(format!(
                "security.top = {} must be 1 to 25 (default 10; one button each)",
                self.security.top
            ));
        }
        guard
    }

    fn validate_deploy(&self, problems: &mut Vec<String>) {
        let d = &self.deploy;
        for s in &d.services {
            if crate::domain::names::ServiceName::parse(s).is_none() {
                problems.push(format!(
                    "deploy.services: {s:?} is not a compose service name"
                ));
            }
        }
        if let Some(m) = &d.migrate {
            if m.command.is_empty() {
                problems.push("deploy.migrate.command is empty: give the migration as arguments, e.g. [\"alembic\", \"upgrade\", \"head\"], or remove [deploy.migrate]".into());
            }
            if !(1..=7200).contains(&m.timeout_secs) {
                problems.push(format!(
                    "deploy.migrate.timeout_secs = {} must be 1 to 7200",
                    m.timeout_secs
                ));
            }
        }
        for (key, checks) in [("deploy.health", &d.health), ("deploy.smoke", &d.smoke)] {
            for c in checks {
                match reqwest::Url::parse(&c.url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => problems.push(format!(
                        "{key}: url {:?} is not an http(s) URL",
                        crate::domain::redact::shown_url(&c.url)
                    )),
                }
                if !(1..=3600).contains(&c.timeout_secs) {
                    problems.push(format!(
                        "{key} {:?}: timeout_secs = {} must be 1 to 3600",
                        c.label(),
                        c.timeout_secs
                    ));
                }
            }
        }
        if !(1..=7200).contains(&d.pull_timeout_secs) {
            problems.push(format!(
                "deploy.pull_timeout_secs = {} must be 1 to 7200 (default 600)",
                d.pull_timeout_secs
            ));
        }
        if !(1..=3600).contains(&d.ready_timeout_secs) {
            problems.push(format!(
                "deploy.ready_timeout_secs = {} must be 1 to 3600 (default 120)",
                d.ready_timeout_secs
            ));
        }
        if d.lock_wait_secs > 3600 {
            problems.push(format!(
                "deploy.lock_wait_secs = {} must be 0 to 3600 (default 120)",
                d.lock_wait_secs
            ));
        }
        if d.heartbeat_secs == 0 || d.lock_stale_secs < 2 * d.heartbeat_secs {
            problems.push(format!(
                "deploy.lock_stale_secs = {} must be at least twice deploy.heartbeat_secs = {} (and that at least 1), or a live deploy would look interrupted",
                d.lock_stale_secs, d.heartbeat_secs
            ));
        }
    }

    /// Webhooks are open to any local process when no credentials are configured.
    pub fn webhook_auth_configured(&self) -> bool {
        self.alertmanager.webhook_token.is_some() || self.alertmanager.basic_auth.is_some()
    }
}

/// Every problem found in the settings, each a sentence naming the key and the fix.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid settings:")?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Turns serde's "unknown field" into a message that names the full key and suggests a fix.
fn explain(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let mut parts = rest.split('`');
    let field = parts.next().unwrap_or_default();
    let expected: Vec<&str> = rest
        .split("expected ")
        .nth(1)
        .map(|e| e.split(" for key").next().unwrap_or(e))
        .unwrap_or("")
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    let section = rest
        .rsplit_once("for key `")
        .map(|(_, k)| k.trim_end_matches('`'))
        .filter(|k| !k.is_empty());
    let full = |k: &str| match section {
        Some(sec) => format!("{sec}.{k}"),
        None => k.to_string(),
    };
    let hint = expected
        .iter()
        .map(|k| (strsim::jaro_winkler(field, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" (did you mean `{}`?)", full(k)))
        .unwrap_or_default();
    let hint = if field.ends_with(secret_files::SUFFIX) {
        format!(
            " (only secret settings are read from a file with `{}`)",
            secret_files::SUFFIX
        )
    } else {
        hint
    };
    let env = format!("RUNBOT__{}", full(field).replace('.', "__").to_uppercase());
    format!(
        "unknown setting `{}`{hint}: rename or remove it in the settings file or the {env} environment variable; known keys here: {}",
        full(field),
        expected.join(", ")
    )
}

/// Where data came from, for `check-config` and the start-up log: a folder, or `built-in`.
pub fn describe_dir(dir: &Option<PathBuf>) -> String {
    dir.as_ref()
        .map_or_else(|| "built-in".to_string(), |d| d.display().to_string())
}

/// The problem with a shared secret that is set but too short or holds spaces (each says how
/// to make a good one); None when it is unset or good.
fn weak_token(key: &str, token: &Option<SecretString>, min: usize) -> Option<String> {
    let t = token.as_ref()?.expose_secret();
    (t.len() < min || t.chars().any(|c| c.is_whitespace() || c.is_control())).then(|| {
        format!("{key} must be at least {min} characters with no spaces: generate one with `openssl rand -hex 32`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_settings_at_all_gives_the_documented_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("absent.toml");
        std::fs::write(&file, "").unwrap();
        let s = Settings::load_from(Some(&file), vec![]).unwrap();
        assert_eq!(s.http.listen, "127.0.0.1:8080");
        assert_eq!(s.database.url.expose_secret(), "sqlite://runbot.db");
        assert_eq!(s.http.max_body_bytes, 1024 * 1024);
        assert!(!s.webhook_auth_configured());
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(
            &file,
            "[http]\nlisten = \"127.0.0.1:9000\"\nmax_body_bytes = 2048\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&file),
            env(&[
                ("RUNBOT__HTTP__LISTEN", "127.0.0.1:9100"),
                ("RUNBOT__ALERTMANAGER__BASIC_AUTH__USERNAME", "am"),
                ("RUNBOT__ALERTMANAGER__BASIC_AUTH__PASSWORD", "0123456789"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http.listen, "127.0.0.1:9100");
        assert_eq!(s.http.max_body_bytes, 2048);
        let basic = s.alertmanager.basic_auth.unwrap();
        assert_eq!(basic.username, "am");
        // A numeric-looking secret keeps its leading zero.
        assert_eq!(basic.password.expose_secret(), "0123456789");
    }

    #[test]
    fn a_misspelt_key_is_an_error_that_suggests_the_right_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(&file, "[http]\nlisen = \"127.0.0.1:9000\"\n").unwrap();
        let err = Settings::load_from(Some(&file), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("did you mean `http.listen`"), "{err}");

        std::fs::write(&file, "").unwrap();
        let err = Settings::load_from(Some(&file), env(&[("RUNBOT__DATABSE__URL", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("databse"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_never_echo_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(
            &file,
            "[http]\nlisten = \"localhost\"\n[database]\nurl = \"mysql://root:hunter22@db/x\"\n[alertmanager]\nwebhook_token = \"short\"\n",
        )
        .unwrap();
        let err = Settings::load_from(Some(&file), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen"), "{err}");
        assert!(err.contains("database.url"), "{err}");
        assert!(err.contains("alertmanager.webhook_token"), "{err}");
        assert!(!err.contains("hunter22"), "{err}");
        assert!(!err.contains("short\""), "{err}");
    }

    #[test]
    fn policy_clock_settings_are_checked_by_key() {
        let s = Settings::load_from(
            None,
            env(&[
                ("RUNBOT__POLICY__TIMEZONE", "Europe/Madrid"),
                ("RUNBOT__POLICY__BUSINESS_HOURS", "08:30-17:30"),
            ]),
        )
        .unwrap();
        assert_eq!(s.policy.timezone, "Europe/Madrid");
        assert_eq!(s.parsed.policy_clock.tz.name(), "Europe/Madrid");
        assert_eq!(
            s.parsed.policy_clock.business.to_string(),
            "Mon-Fri 08:30-17:30"
        );
        assert_eq!(PolicySettings::default().timezone, "UTC");

        let err = Settings::load_from(
            None,
            env(&[
                ("RUNBOT__POLICY__TIMEZONE", "Mars/Olympus"),
                ("RUNBOT__POLICY__BUSINESS_HOURS", "9 to 5"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("policy.timezone = \"Mars/Olympus\""), "{err}");
        assert!(err.contains("policy.business_hours = \"9 to 5\""), "{err}");
    }

    #[test]
    fn the_audit_head_is_logged_every_five_minutes_unless_set_within_range() {
        let s = Settings::load_from(None, vec![]).unwrap();
        assert_eq!(s.audit.head_log_secs, 300);
        let s = Settings::load_from(None, env(&[("RUNBOT__AUDIT__HEAD_LOG_SECS", "60")])).unwrap();
        assert_eq!(s.audit.head_log_secs, 60);
        for bad in ["9", "86401"] {
            let err = Settings::load_from(None, env(&[("RUNBOT__AUDIT__HEAD_LOG_SECS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("audit.head_log_secs = {bad} must be 10 to 86400")),
                "{err}"
            );
        }
    }

    #[test]
    fn console_sessions_last_an_hour_idle_and_twelve_in_all_unless_set_within_range() {
        let s = Settings::load_from(None, vec![]).unwrap();
        assert_eq!(
            (
                s.console.session_idle_minutes,
                s.console.session_max_hours,
                s.console.insecure_cookies
            ),
            (60, 12, false)
        );
        for (key, value, said) in [
            (
                "RUNBOT__CONSOLE__SESSION_IDLE_MINUTES",
                "0",
                "console.session_idle_minutes = 0 must be 1 to 1440",
            ),
            (
                "RUNBOT__CONSOLE__SESSION_MAX_HOURS",
                "721",
                "console.session_max_hours = 721 must be 1 to 720",
            ),
            (
                "RUNBOT__CONSOLE__SESSION_IDLE_MINUTES",
                "900",
                "console.session_idle_minutes = 900 is longer than console.session_max_hours = 12",
            ),
        ] {
            let err = Settings::load_from(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(said), "{err}");
        }
    }

    #[test]
    fn the_shutdown_grace_is_ten_seconds_unless_set_within_range() {
        let s = Settings::load_from(None, vec![]).unwrap();
        assert_eq!(s.shutdown.grace_secs, 10);
        let s = Settings::load_from(None, env(&[("RUNBOT__SHUTDOWN__GRACE_SECS", "0")])).unwrap();
        assert_eq!(s.shutdown.grace_secs, 0);
        let err = Settings::load_from(None, env(&[("RUNBOT__SHUTDOWN__GRACE_SECS", "601")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shutdown.grace_secs = 601 must be 0 to 600"),
            "{err}"
        );
    }

    #[test]
    fn docker_settings_default_to_the_local_socket_and_are_checked_by_key() {
        let s = Settings::load_from(None, vec![]).unwrap();
        assert_eq!(s.docker.host, "unix:///var/run/docker.sock");
        assert_eq!(s.docker.project, None);
        assert_eq!(s.docker.timeout_secs, 30);

        let ok = Settings::load_from(
            None,
            env(&[
                ("RUNBOT__DOCKER__HOST", "tcp://docker.internal:2375"),
                ("RUNBOT__DOCKER__PROJECT", "saas_cafeterias"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.docker.project.as_deref(), Some("saas_cafeterias"));

        let err = Settings::load_from(
            None,
            env(&[
                ("RUNBOT__DOCKER__HOST", "https://docker:2376"),
                ("RUNBOT__DOCKER__PROJECT", "SaaS Cafeterias"),
                ("RUNBOT__DOCKER__TIMEOUT_SECS", "0"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("docker.host = \"https://docker:2376\""),
            "{err}"
        );
        assert!(
            err.contains("docker.project = \"SaaS Cafeterias\""),
            "{err}"
        );
        assert!(err.contains("docker.timeout_secs = 0"), "{err}");
    }

    #[test]
    fn the_engines_get_the_values_the_settings_checked() {
        let ok = Settings::load_from(
            None,
            env(&[
                ("RUNBOT__DOCKER__HOST", "tcp://docker.internal:2375"),
                ("RUNBOT__DOCKER__PROJECT", "saas_cafeterias"),
                (
                    "RUNBOT__APP_DATABASE__URL",
                    "postgres://app:pw@db:5432/saas_cafeterias_prod",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            ok.parsed.docker_host,
            DockerHost::Http("docker.internal:2375".into())
        );
        assert_eq!(
            ok.parsed.docker_project.as_ref().unwrap().as_str(),
            "saas_cafeterias"
        );
        assert_eq!(
            ok.parsed.app_database.as_ref().unwrap().target(),
            "app@db:5432/saas_cafeterias_prod"
        );
        assert!(ok.parsed.guard.allow_list.is_empty());

        // The problems, word for word and in order, as `runbot check-config` prints them.
        let err = Settings::load_from(
            None,
            env(&[
                ("RUNBOT__DOCKER__HOST", "ftp://docker"),
                ("RUNBOT__DOCKER__PROJECT", "SaaS"),
                ("RUNBOT__APP_DATABASE__URL", "mysql://u:hunter22@db/app"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            [
                "docker.host = \"ftp://docker\": unknown scheme; use unix:///path/to/docker.sock, tcp://HOST:PORT or http://HOST:PORT (default unix:///var/run/docker.sock)",
                "docker.project = \"SaaS\" is not a compose project name: lowercase letters, digits, - and _, starting with a letter or digit (`docker compose ls` lists the projects)",
                "app_database.url is not usable: its scheme is \"mysql\", not postgres or postgresql; use postgres://USER:PASSWORD@HOST:PORT/DATABASE, e.g. postgres://prod_user:PASSWORD@postgres:5432/saas_cafeterias_prod",
            ]
        );
    }

    #[test]
    fn loading_parses_every_value_once_and_the_defaults_match_the_documented_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(&file, "").unwrap();
        let defaults = Settings::load_from(Some(&file), vec![]).unwrap().parsed;
        assert_eq!(defaults.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(defaults.loopback_only());
        assert_eq!(defaults.allowed_hosts, None);
        assert_eq!(
            defaults.docker_host,
            DockerHost::Unix("/var/run/docker.sock".into())
        );
        assert!(defaults.docker_project.is_none());
        assert!(defaults.app_database.is_none());
        assert_eq!(
            (defaults.guard.max_prefix_v4, defaults.guard.max_prefix_v6),
            (16, 48)
        );
        assert_eq!(defaults.policy_clock.tz.name(), "UTC");
        assert_eq!(
            defaults.policy_clock.business.to_string(),
            "Mon-Fri 09:00-18:00"
        );
        // `Settings::default()` (tests, and serde's skipped field) holds the same values.
        assert_eq!(
            format!("{:?}", Settings::default().parsed),
            format!("{defaults:?}")
        );

        std::fs::write(
            &file,
            "[http]\nlisten = \"0.0.0.0:9000\"\nallowed_hosts = [\"Runbot.Example.com\", \"[::1]:9000\"]\n\n[alertmanager]\nwebhook_token = \"0123456789abcdef\"\n\n[docker]\nhost = \"unix:///run/docker.sock\"\nproject = \"shop\"\n\n[nginx]\nallow_list = [\"10.0.0.0/8\", \"192.0.2.7\"]\nmax_prefix_v4 = 24\n\n[policy]\ntimezone = \"America/New_York\"\nbusiness_hours = \"Sun-Thu 08:00-17:00\"\n\n[discord]\nbot_token = \"a-bot-token-long-enough\"\napplication_id = \"1180000000000000001\"\nalert_channel_id = \"1200000000000000001\"\n\n[[discord.routes]]\nchannel_id = \"1200000000000000002\"\nmatchers = { team = \"db\" }\nseverities = [\"sev1\", \"SEV2\"]\n",
        )
        .unwrap();
        let p = Settings::load_from(Some(&file), vec![]).unwrap().parsed;
        assert_eq!(p.listen, "0.0.0.0:9000".parse().unwrap());
        assert!(!p.loopback_only());
        assert_eq!(
            p.allowed_hosts,
            Some(vec![
                HostPattern {
                    host: "runbot.example.com".into(),
                    port: None
                },
                HostPattern {
                    host: "[::1]".into(),
                    port: Some(9000)
                },
            ])
        );
        assert_eq!(p.docker_host, DockerHost::Unix("/run/docker.sock".into()));
        assert_eq!(p.docker_project.unwrap().as_str(), "shop");
        assert_eq!(
            p.guard.allow_list,
            [
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        assert_eq!((p.guard.max_prefix_v4, p.guard.max_prefix_v6), (24, 48));
        assert_eq!(p.policy_clock.tz.name(), "America/New_York");
        assert_eq!(p.policy_clock.business.to_string(), "Sun-Thu 08:00-17:00");
        assert_eq!(p.discord_application_id, Some(1_180_000_000_000_000_001));
        assert_eq!(
            p.discord_routes,
            [AlertRoute {
                channel_id: "1200000000000000002".into(),
                matchers: [("team".to_string(), "db".to_string())].into(),
                severities: vec![Severity::Sev1, Severity::Sev2],
            }]
        );
    }

    #[test]
    fn urls_with_credentials_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(
            &file,
            "[deploy]\nservices = [\"backend\"]\n[[deploy.health]]\nurl = \"ftp://ops:hunter2@backend/health\"\n",
        )
        .unwrap();
        let err = Settings::load_from(
            Some(&file),
            env(&[
                ("RUNBOT__ALERTMANAGER__URL", "am:hunter2@alertmanager:9093"),
                ("RUNBOT__DOCKER__HOST", "tcp://ops:hunter2@docker:2376"),
                ("RUNBOT__DISCORD__API_BASE", "proxy:hunter2@proxy:3128"),
            ]),
        )
        .unwrap_err()
        .to_string();
        for key in [
            "alertmanager.url = \"alertmanager:9093\"",
            "docker.host = \"tcp://docker:2376\"",
            "discord.api_base = \"proxy:3128\"",
            "deploy.health: url \"ftp://backend/health\"",
        ] {
            assert!(err.contains(key), "{key} in {err}");
        }
        assert!(!err.contains("hunter2"), "{err}");

        let check = HttpCheck {
            name: None,
            url: "http://ops:hunter2@backend:8000/health?token=abc".into(),
            status: None,
            contains: None,
            timeout_secs: 30,
        };
        assert_eq!(check.label(), "http://backend:8000/health?token=***");
    }

    #[test]
    fn nginx_settings_are_checked_by_key() {
        let s = Settings::load_from(None, vec![]).unwrap();
        assert_eq!(s.nginx.deny_file, None);
        assert_eq!(s.nginx.test, ["nginx", "-t"]);
        assert_eq!((s.nginx.max_prefix_v4, s.nginx.max_prefix_v6), (16, 48));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(
            &file,
            "[nginx]\nmode = \"container\"\ntest = []\nallow_list = [\"123.456.789.0\", \"10.0.0.1/8\"]\nmax_prefix_v6 = 0\n\n[security]\ntop = 40\n",
        )
        .unwrap();
        let err = Settings::load_from(Some(&file), vec![])
            .unwrap_err()
            .to_string();
        for want in [
            "nginx.test must be a program",
            "nginx.mode = \"container\" needs docker.project",
            "nginx.allow_list: \"123.456.789.0\" is not a valid IPv4 address",
            "nginx.allow_list: \"10.0.0.1/8\" has bits set after the /8 prefix",
            "nginx.max_prefix_v6 = 0 must be 1 to 128",
            "security.top = 40 must be 1 to 25",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn nginx_host_id_defaults_to_the_hostname_and_is_checked_with_sync_secs() {
        let s = Settings::load_from(None, vec![]).unwrap();
        assert_eq!(s.nginx.host_id, super::hostname());
        assert!(!s.nginx.host_id.is_empty());
        assert_eq!(s.nginx.sync_secs, 5);
        let dir = tempfile::tempdir().unwrap();
        let deny = dir.path().join("deny.conf").display().to_string();
        let ok = Settings::load_from(
            None,
            env(&[
                ("RUNBOT__NGINX__DENY_FILE", &deny),
                ("RUNBOT__NGINX__HOST_ID", "web-1.eu_west"),
                ("RUNBOT__NGINX__SYNC_SECS", "300"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.nginx.host_id, "web-1.eu_west");
        for (id, secs) in [("web 1", "0"), ("", "301"), (&"w".repeat(65) as &str, "5")] {
            let err = Settings::load_from(
                None,
                env(&[
                    ("RUNBOT__NGINX__DENY_FILE", &deny),
                    ("RUNBOT__NGINX__HOST_ID", id),
                    ("RUNBOT__NGINX__SYNC_SECS", secs),
                ]),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!("nginx.host_id = {id:?} must be 1 to 64 letters")),
                "{err}"
            );
            if secs != "5" {
                assert!(
                    err.contains(&format!("nginx.sync_secs = {secs} must be 1 to 300")),
                    "{err}"
                );
            }
        }
        // Without a deny file the host is never named, so its id is not checked.
        Settings::load_from(None, env(&[("RUNBOT__NGINX__HOST_ID", "web 1")])).unwrap();
    }

    #[test]
    fn deploy_lock_wait_defaults_to_two_minutes_and_is_checked_by_key() {
        let s = Settings::load_from(None, vec![]).unwrap();
        assert_eq!(s.deploy.lock_wait_secs, 120);
        let s = Settings::load_from(None, env(&[("RUNBOT__DEPLOY__LOCK_WAIT_SECS", "0")])).unwrap();
        assert_eq!(s.deploy.lock_wait_secs, 0, "0: do not wait");
        let err = Settings::load_from(None, env(&[("RUNBOT__DEPLOY__LOCK_WAIT_SECS", "7200")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deploy.lock_wait_secs = 7200 must be 0 to 3600 (default 120)"),
            "{err}"
        );
    }

    #[test]
    fn app_database_settings_are_checked_and_never_show_the_password() {
        let s = Settings::load_from(None, vec![]).unwrap();
        assert!(s.app_database.url.is_none());
        assert_eq!(s.app_database.backup_dir, PathBuf::from("backups"));
        assert_eq!(s.app_database.pg_dump, "pg_dump");
        assert_eq!(s.app_database.psql, "psql");
        assert_eq!(s.app_database.timeout_secs, 900);

        let ok = Settings::load_from(
            None,
            env(&[(
                "RUNBOT__APP_DATABASE__URL",
                "postgres://prod_user:hunter22@postgres:5432/saas_cafeterias_prod",
            )]),
        )
        .unwrap();
        let shown = format!("{:?}", ok.app_database);
        assert!(
            shown.contains("prod_user:***@postgres") && !shown.contains("hunter22"),
            "{shown}"
        );

        let err = Settings::load_from(
            None,
            env(&[
                ("RUNBOT__APP_DATABASE__URL", "mysql://root:hunter22@db/app"),
                ("RUNBOT__APP_DATABASE__TIMEOUT_SECS", "0"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("app_database.url is not usable"), "{err}");
        assert!(err.contains("app_database.timeout_secs = 0"), "{err}");
        assert!(!err.contains("hunter22"), "{err}");
    }

    #[test]
    fn a_missing_config_file_given_explicitly_is_an_error() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/runbot.toml")), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn discord_settings_are_checked_and_the_token_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(
            &file,
            "[discord]\nbot_token = \"secret token with spaces-123456\"\napplication_id = \"12ab\"\n\
             public_key = \"xyz\"\n[[discord.routes]]\nchannel_id = \"#alerts\"\nseverities = [\"p1\"]\n",
        )
        .unwrap();
        let err = Settings::load_from(Some(&file), vec![])
            .unwrap_err()
            .to_string();
        for key in [
            "discord.bot_token",
            "discord.application_id",
            "discord.public_key",
            "discord.alert_channel_id is required",
            "discord.routes[0].channel_id",
            "discord.routes[0].severities",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(!err.contains("secret token"), "{err}");

        let ok = Settings::load_from(
            None,
            vec![
                (
                    "RUNBOT__DISCORD__BOT_TOKEN".into(),
                    "a-proper-looking-bot-token-0123".into(),
                ),
                (
                    "RUNBOT__DISCORD__ALERT_CHANNEL_ID".into(),
                    "111111111111111111".into(),
                ),
            ],
        )
        .unwrap();
        assert!(ok.discord.enabled());
        assert_eq!(ok.discord.api_base, "https://discord.com");
    }
}
