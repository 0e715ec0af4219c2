//! Commands as data: one file per command in `commands/` (name, description, typed options,
//! risk, confirmation, executor). The one definition drives registration with chat platforms,
//! argument parsing and validation, help text and the policy check.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::request::RawValue;

pub mod line;

/// The files built into the binary, used when there is no `commands/` folder.
const EMBEDDED: &[(&str, &str)] = &[
    ("ack.toml", include_str!("../commands/ack.toml")),
    ("audit.toml", include_str!("../commands/audit.toml")),
    ("backlog.toml", include_str!("../commands/backlog.toml")),
    ("backup.toml", include_str!("../commands/backup.toml")),
    ("block-ip.toml", include_str!("../commands/block-ip.toml")),
    ("blocked.toml", include_str!("../commands/blocked.toml")),
    ("backups.toml", include_str!("../commands/backups.toml")),
    ("db.toml", include_str!("../commands/db.toml")),
    ("deploy.toml", include_str!("../commands/deploy.toml")),
    ("deploys.toml", include_str!("../commands/deploys.toml")),
    ("disk.toml", include_str!("../commands/disk.toml")),
    ("escalate.toml", include_str!("../commands/escalate.toml")),
    (
        "disk-cleanup.toml",
        include_str!("../commands/disk-cleanup.toml"),
    ),
    ("logs.toml", include_str!("../commands/logs.toml")),
    ("oncall.toml", include_str!("../commands/oncall.toml")),
    ("page.toml", include_str!("../commands/page.toml")),
    ("report.toml", include_str!("../commands/report.toml")),
    ("restart.toml", include_str!("../commands/restart.toml")),
    ("restore.toml", include_str!("../commands/restore.toml")),
    ("rollback.toml", include_str!("../commands/rollback.toml")),
    ("scale.toml", include_str!("../commands/scale.toml")),
    ("security.toml", include_str!("../commands/security.toml")),
    ("silence.toml", include_str!("../commands/silence.toml")),
    ("stats.toml", include_str!("../commands/stats.toml")),
    ("status.toml", include_str!("../commands/status.toml")),
    (
        "unblock-ip.toml",
        include_str!("../commands/unblock-ip.toml"),
    ),
    ("unsilence.toml", include_str!("../commands/unsilence.toml")),
];

/// The file in `commands/` that holds the runbook, not a command.
const RUNBOOK_FILE: &str = "alerts.toml";

/// Discord's limits for a command, which are the tightest of the platforms.
const NAME_MAX: usize = 32;
const DESCRIPTION_MAX: usize = 100;
const OPTIONS_MAX: usize = 25;
const CHOICES_MAX: usize = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Only reads.
    Read,
    /// Changes the stack in a way that can be undone.
    Write,
    /// Changes the stack in a way that may not be undone (deploy, restore, deletions).
    Destructive,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::Destructive => "destructive",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionKind {
    String,
    Integer,
    Boolean,
    /// An IPv4 or IPv6 address.
    Ip,
    /// An IPv4 or IPv6 address or a CIDR range (`198.51.100.0/24`), kept in canonical form.
    Cidr,
    /// An image tag: letters, digits, `_`, `.`, `-`, at most 128, not starting with `.` or `-`.
    Tag,
    /// `30s`, `15m`, `2h`, `7d`.
    Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptionSpec {
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: OptionKind,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub choices: Vec<String>,
    /// A regular expression the whole value must match.
    pub pattern: Option<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub max_length: Option<usize>,
    pub default: Option<toml::Value>,
}

/// What runs a command: the `executor` its file in `commands/` names. A name runbot does not
/// know is refused when the commands load (and so by `runbot check-config`). One variant per
/// family of commands, each family built once with only the engines it needs
/// ([`crate::executors::Executors`]), so each matches only its own operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutorKind {
    Core(CoreOp),
    Silences(SilenceOp),
    Docker(DockerOp),
    Deploy(DeployOp),
    Database(DatabaseOp),
    Nginx(NginxOp),
    Security(SecurityOp),
    /// Registered (the command shows in chat) but not part of this version: `/disk`,
    /// `/disk-cleanup`. Running it says so and changes nothing.
    NotYet(&'static str),
}

/// Alert groups, on-call roles and the audit trail: runbot's own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoreOp {
    Ack,
    Oncall,
    AuditRecent,
    Escalate,
    Page,
    /// `/report`: how fast the team answered, per severity.
    Report,
    /// `/backlog`: the groups the chain put in the backlog, still open.
    Backlog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SilenceOp {
    Silence,
    Unsilence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DockerOp {
    Status,
    Stats,
    Logs,
    Restart,
    Scale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeployOp {
    Run,
    Rollback,
    History,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatabaseOp {
    Backup,
    Backups,
    Restore,
    Diagnostics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NginxOp {
    BlockIp,
    UnblockIp,
    Blocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityOp {
    TopIps,
}

/// Every executor name, as the files in `commands/` write it.
const EXECUTORS: &[(&str, ExecutorKind)] = &[
    ("alerts.ack", ExecutorKind::Core(CoreOp::Ack)),
    (
        "alertmanager.silence",
        ExecutorKind::Silences(SilenceOp::Silence),
    ),
    (
        "alertmanager.unsilence",
        ExecutorKind::Silences(SilenceOp::Unsilence),
    ),
    ("audit.recent", ExecutorKind::Core(CoreOp::AuditRecent)),
    ("policy.oncall", ExecutorKind::Core(CoreOp::Oncall)),
    ("escalation.escalate", ExecutorKind::Core(CoreOp::Escalate)),
    ("escalation.page", ExecutorKind::Core(CoreOp::Page)),
    ("escalation.report", ExecutorKind::Core(CoreOp::Report)),
    ("escalation.backlog", ExecutorKind::Core(CoreOp::Backlog)),
    ("docker.status", ExecutorKind::Docker(DockerOp::Status)),
    ("docker.stats", ExecutorKind::Docker(DockerOp::Stats)),
    ("docker.logs", ExecutorKind::Docker(DockerOp::Logs)),
    ("docker.restart", ExecutorKind::Docker(DockerOp::Restart)),
    ("docker.scale", ExecutorKind::Docker(DockerOp::Scale)),
    ("deploy.run", ExecutorKind::Deploy(DeployOp::Run)),
    ("deploy.rollback", ExecutorKind::Deploy(DeployOp::Rollback)),
    ("deploy.history", ExecutorKind::Deploy(DeployOp::History)),
    (
        "database.backup",
        ExecutorKind::Database(DatabaseOp::Backup),
    ),
    (
        "database.backups",
        ExecutorKind::Database(DatabaseOp::Backups),
    ),
    (
        "database.restore",
        ExecutorKind::Database(DatabaseOp::Restore),
    ),
    (
        "database.diagnostics",
        ExecutorKind::Database(DatabaseOp::Diagnostics),
    ),
    ("nginx.block_ip", ExecutorKind::Nginx(NginxOp::BlockIp)),
    ("nginx.unblock_ip", ExecutorKind::Nginx(NginxOp::UnblockIp)),
    ("nginx.blocked", ExecutorKind::Nginx(NginxOp::Blocked)),
    (
        "security.top_ips",
        ExecutorKind::Security(SecurityOp::TopIps),
    ),
    ("docker.disk", ExecutorKind::NotYet("docker.disk")),
    (
        "docker.disk_cleanup",
        ExecutorKind::NotYet("docker.disk_cleanup"),
    ),
];

/// An executor name runbot does not know, and the known one closest to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownExecutor {
    pub name: String,
    pub closest: &'static str,
}

impl ExecutorKind {
    pub fn parse(name: &str) -> Result<ExecutorKind, UnknownExecutor> {
        if let Some((_, kind)) = EXECUTORS.iter().find(|(n, _)| *n == name) {
            return Ok(*kind);
        }
        let closest = EXECUTORS
            .iter()
            .map(|(n, _)| *n)
            .max_by(|a, b| strsim::jaro_winkler(name, a).total_cmp(&strsim::jaro_winkler(name, b)))
            .unwrap_or_default();
        Err(UnknownExecutor {
            name: name.to_string(),
            closest,
        })
    }

    /// The name the command's file gives, e.g. `docker.restart`.
    pub fn as_str(self) -> &'static str {
        EXECUTORS
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .expect("every kind has a name")
    }
}

impl std::fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for UnknownExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown executor {:?}; did you mean {:?}?",
            self.name, self.closest
        )
    }
}

impl<'de> Deserialize<'de> for ExecutorKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ExecutorKind::parse(&name).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ExecutorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub name: String,
    pub description: String,
    pub risk: Risk,
    /// Shows Confirm/Cancel to the requester before it runs.
    #[serde(default)]
    pub confirm: bool,
    /// Which executor runs it, e.g. `docker.restart`.
    pub executor: ExecutorKind,
    /// A runbook action: after it succeeds on a firing group, runbot watches whether the group
    /// resolves within `escalation.verify_after`, and moves the escalation on if not.
    #[serde(default)]
    pub verify: bool,
    #[serde(default)]
    pub options: Vec<OptionSpec>,
}

impl CommandSpec {
    /// Mutating commands take `dry_run`, which shows what would happen and changes nothing.
    pub fn takes_dry_run(&self) -> bool {
        self.risk != Risk::Read
    }

    /// Whether it acts on one alert group, and cannot run without one (from its card or a
    /// `group` option).
    pub fn acts_on_group(&self) -> bool {
        matches!(
            self.executor,
            ExecutorKind::Core(CoreOp::Ack | CoreOp::Escalate)
                | ExecutorKind::Silences(SilenceOp::Silence)
        )
    }
}

/// A validated argument value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

/// Validated arguments by option name, defaults filled in; `dry_run` is always present for
/// mutating commands.
pub type Args = BTreeMap<String, Value>;

/// Why arguments were refused: a sentence the person who typed them can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(pub String);

/// Every command, by name.
#[derive(Debug, Clone, Default)]
pub struct Commands {
    by_name: BTreeMap<String, CommandSpec>,
}

impl Commands {
    /// The commands of `commands/` as the settings say (or the built-in set), and where they
    /// came from.
    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<(Commands, String)> {
        let dir = settings.commands.resolve("commands");
        Ok((
            Commands::load(dir.as_deref())?,
            crate::config::describe_dir(&dir),
        ))
    }

    /// Loads every `*.toml` of `dir` but the runbook, or the built-in set when `dir` is None.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Commands> {
        let mut files: Vec<(String, String)> = Vec::new();
        match dir {
            Some(dir) => {
                for entry in
                    std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?
                {
                    let path = entry?.path();
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .to_string();
                    if name.ends_with(".toml") && name != RUNBOOK_FILE {
                        let text = std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        files.push((name, text));
                    }
                }
            }
            None => files.extend(EMBEDDED.iter().map(|(n, t)| (n.to_string(), t.to_string()))),
        }
        let mut by_name = BTreeMap::new();
        for (file, text) in files {
            // Said first and plainly: a misspelt executor would otherwise surface as a TOML
            // error, or (before) only when someone ran the command.
            if let Some(name) = toml::from_str::<toml::Table>(&text)
                .ok()
                .and_then(|t| t.get("executor")?.as_str().map(str::to_string))
            {
                if let Err(e) = ExecutorKind::parse(&name) {
                    bail!(
                        "unknown executor {:?} in commands/{file}; did you mean {:?}?",
                        e.name,
                        e.closest
                    );
                }
            }
            let spec: CommandSpec =
                toml::from_str(&text).with_context(|| format!("commands/{file}"))?;
            check(&spec).with_context(|| format!("commands/{file}"))?;
            if file.trim_end_matches(".toml") != spec.name {
                bail!(
                    "commands/{file}: the file must be named after the command ({}.toml)",
                    spec.name
                );
            }
            by_name.insert(spec.name.clone(), spec);
        }
        Ok(Commands { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&CommandSpec> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &CommandSpec> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What a file must hold so every platform accepts the command and its options.
fn check(spec: &CommandSpec) -> anyhow::Result<()> {
    if !valid_name(&spec.name) {
        bail!(
            "name {:?}: use 1-32 lowercase letters, digits, - or _",
            spec.name
        );
    }
    if spec.description.is_empty() || spec.description.chars().count() > DESCRIPTION_MAX {
        bail!("description: 1 to {DESCRIPTION_MAX} characters");
    }
    if spec.options.len() > OPTIONS_MAX - 1 {
        bail!("at most {} options", OPTIONS_MAX - 1);
    }
    let mut seen = std::collections::HashSet::new();
    for o in &spec.options {
        if !valid_name(&o.name) || o.name == "dry_run" {
            bail!("option {:?}: use 1-32 lowercase letters, digits, - or _ (dry_run is added by runbot)", o.name);
        }
        if !seen.insert(o.name.as_str()) {
            bail!("option {:?} appears twice", o.name);
        }
        if o.description.is_empty() || o.description.chars().count() > DESCRIPTION_MAX {
            bail!(
                "option {}: description of 1 to {DESCRIPTION_MAX} characters",
                o.name
            );
        }
        if o.choices.len() > CHOICES_MAX {
            bail!("option {}: at most {CHOICES_MAX} choices", o.name);
        }
        if let Some(p) = &o.pattern {
            regex::Regex::new(p).with_context(|| format!("option {}: pattern", o.name))?;
        }
        if let (Some(min), Some(max)) = (o.min, o.max) {
            if min > max {
                bail!("option {}: min is above max", o.name);
            }
        }
        if let Some(d) = &o.default {
            let raw = match d {
                toml::Value::String(s) => RawValue::Text(s.clone()),
                toml::Value::Integer(i) => RawValue::Integer(*i),
                toml::Value::Boolean(b) => RawValue::Boolean(*b),
                other => bail!(
                    "option {}: default {other:?} is not a string, integer or boolean",
                    o.name
                ),
            };
            parse_value(o, raw).map_err(|e| anyhow::anyhow!("option {}: default: {e}", o.name))?;
        }
    }
    Ok(())
}

/// Characters a shell, a config file or a log would read as more than text. Arguments never
/// reach a shell, but refusing them early keeps them out of nginx files and log lines too.
const METACHARACTERS: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '\\', '"', '\'', '\n', '\r', '\0', '{', '}', '(', ')', '*',
    '?', '!', '#', '~',
];

fn parse_value(o: &OptionSpec, raw: RawValue) -> Result<Value, ArgError> {
    let name = &o.name;
    let value = match (o.kind, raw) {
        (OptionKind::Integer, RawValue::Integer(i)) => Value::Integer(i),
        (OptionKind::Integer, RawValue::Text(t)) => Value::Integer(
            t.trim()
                .parse()
                .map_err(|_| ArgError(format!("{name} must be a whole number, not {t:?}")))?,
        ),
        (OptionKind::Boolean, RawValue::Boolean(b)) => Value::Boolean(b),
        (OptionKind::Boolean, RawValue::Text(t)) => match t.as_str() {
            "true" | "yes" => Value::Boolean(true),
            "false" | "no" => Value::Boolean(false),
            _ => return Err(ArgError(format!("{name} must be true or false"))),
        },
        (_, RawValue::Text(t)) => Value::Text(t),
        (_, RawValue::Integer(i)) => Value::Text(i.to_string()),
        (_, RawValue::Boolean(b)) => Value::Text(b.to_string()),
    };
    match (&value, o.kind) {
        (Value::Integer(i), _) => {
            if o.min.is_some_and(|m| *i < m) || o.max.is_some_and(|m| *i > m) {
                return Err(ArgError(format!(
                    "{name} must be between {} and {}, not {i}",
                    o.min.map_or("any".into(), |m| m.to_string()),
                    o.max.map_or("any".into(), |m| m.to_string())
                )));
            }
        }
        (Value::Text(t), kind) => {
            let limit = o.max_length.unwrap_or(200);
            if t.chars().count() > limit {
                return Err(ArgError(format!(
                    "{name} is longer than {limit} characters"
                )));
            }
            if t.trim().is_empty() {
                return Err(ArgError(format!("{name} is empty")));
            }
            if let Some(c) = t
                .chars()
                .find(|c| METACHARACTERS.contains(c) || c.is_control())
            {
                return Err(ArgError(format!("{name} may not contain {c:?}")));
            }
            match kind {
                OptionKind::Ip if t.parse::<IpAddr>().is_err() => {
                    return Err(ArgError(format!(
                        "{name}: {t:?} is not a valid IPv4 or IPv6 address"
                    )));
                }
                OptionKind::Cidr => {
                    let net = crate::domain::net::parse_range(t)
                        .map_err(|e| ArgError(format!("{name}: {e}")))?;
                    return Ok(Value::Text(crate::domain::net::canonical(&net)));
                }
                OptionKind::Tag => {
                    let ok = t.len() <= 128
                        && !t.starts_with(['.', '-'])
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
                    if !ok {
                        return Err(ArgError(format!(
                            "{name}: {t:?} is not an image tag (letters, digits, _ . -, e.g. v1.2.3)"
                        )));
                    }
                }
                OptionKind::Duration => {
                    crate::domain::duration::parse(t).ok_or_else(|| {
                        ArgError(format!(
                            "{name}: {t:?} is not a duration such as 30m, 2h or 1d"
                        ))
                    })?;
                }
                _ => {}
            }
            if !o.choices.is_empty() && !o.choices.iter().any(|c| c == t) {
                return Err(ArgError(format!(
                    "{name} must be one of {}, not {t:?}",
                    o.choices.join(", ")
                )));
            }
            if let Some(p) = &o.pattern {
                let re = regex::Regex::new(p).map_err(|e| ArgError(e.to_string()))?;
                if !re.is_match(t) {
                    return Err(ArgError(format!(
                        "{name}: {t:?} is not in the expected form"
                    )));
                }
            }
        }
        (Value::Boolean(_), _) => {}
    }
    Ok(value)
}

/// `service:backend tail:100`.
pub fn args_line(args: &Args) -> String {
    let parts: Vec<String> = args
        .iter()
        .map(|(k, v)| match v {
            Value::Text(t) => format!("{k}:{}", crate::domain::text::clip(t, 60)),
            Value::Integer(i) => format!("{k}:{i}"),
            Value::Boolean(b) => format!("{k}:{b}"),
        })
        .collect();
    if parts.is_empty() {
        "no arguments".into()
    } else {
        parts.join(" ")
    }
}

/// Whether a command's cidr argument (e.g. /block-ip address) is wider than `guard` allows
/// without approval: `context.wide_range` for the policies.
pub fn wide_range(guard: &crate::domain::net::Guard, spec: &CommandSpec, args: &Args) -> bool {
    spec.options
        .iter()
        .filter(|o| o.kind == OptionKind::Cidr)
        .filter_map(|o| match args.get(&o.name) {
            Some(Value::Text(t)) => crate::domain::net::parse_range(t).ok(),
            _ => None,
        })
        .any(|net| guard.is_wide(&net))
}

/// Validates what a platform sent against the command's options: unknown options, missing
/// required ones, types, choices, patterns, ranges, lengths. Defaults are filled in.
pub fn parse_args(spec: &CommandSpec, raw: Vec<(String, RawValue)>) -> Result<Args, ArgError> {
    parse(spec, raw, true)
}

/// Like [`parse_args`], but a missing required option is no error: for `runbot policy explain`
/// and `policy test`, where a decision can be asked about without every argument.
pub fn parse_some_args(spec: &CommandSpec, raw: Vec<(String, RawValue)>) -> Result<Args, ArgError> {
    parse(spec, raw, false)
}

fn parse(
    spec: &CommandSpec,
    raw: Vec<(String, RawValue)>,
    require: bool,
) -> Result<Args, ArgError> {
    let mut args = Args::new();
    for (name, value) in raw {
        if name == "dry_run" && spec.takes_dry_run() {
            let b = match value {
                RawValue::Boolean(b) => b,
                _ => return Err(ArgError("dry_run must be true or false".into())),
            };
            args.insert(name, Value::Boolean(b));
            continue;
        }
        let Some(o) = spec.options.iter().find(|o| o.name == name) else {
            return Err(ArgError(format!("/{} has no option {name:?}", spec.name)));
        };
        if args.contains_key(&name) {
            return Err(ArgError(format!("{name} is given twice")));
        }
        args.insert(name, parse_value(o, value)?);
    }
    for o in &spec.options {
        if args.contains_key(&o.name) {
            continue;
        }
        match &o.default {
            Some(toml::Value::String(s)) => {
                args.insert(o.name.clone(), Value::Text(s.clone()));
            }
            Some(toml::Value::Integer(i)) => {
                args.insert(o.name.clone(), Value::Integer(*i));
            }
            Some(toml::Value::Boolean(b)) => {
                args.insert(o.name.clone(), Value::Boolean(*b));
            }
            _ if o.required && require => {
                return Err(ArgError(format!(
                    "/{} needs {}: {}",
                    spec.name, o.name, o.description
                )))
            }
            _ => {}
        }
    }
    if spec.takes_dry_run() {
        args.entry("dry_run".into())
            .or_insert(Value::Boolean(false));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::Runbook;

    fn text(pairs: &[(&str, &str)]) -> Vec<(String, RawValue)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), RawValue::Text(v.to_string())))
            .collect()
    }

    #[test]
    fn the_shipped_commands_load_and_cover_every_runbook_action() {
        let commands = Commands::load(None).unwrap();
        let from_folder = Commands::load(Some(Path::new("commands"))).unwrap();
        assert_eq!(commands.len(), from_folder.len(), "every file is built in");
        let runbook = Runbook::load(None).unwrap();
        for (alert, entry) in runbook.iter() {
            for action in &entry.actions {
                let spec = commands
                    .get(&action.command)
                    .unwrap_or_else(|| panic!("{alert}: no command {:?}", action.command));
                let raw = action.raw_args();
                parse_args(spec, raw).unwrap_or_else(|e| panic!("{alert}: {}: {e}", action.label));
            }
        }
    }

    #[test]
    fn arguments_are_typed_checked_and_defaulted() {
        let c = Commands::load(None).unwrap();
        let logs = c.get("logs").unwrap();
        let args = parse_args(logs, text(&[("service", "backend")])).unwrap();
        assert_eq!(args["tail"], Value::Integer(100));
        assert!(!args.contains_key("dry_run"), "a read takes no dry run");
        let restart = c.get("restart").unwrap();
        let args = parse_args(restart, text(&[("service", "worker")])).unwrap();
        assert_eq!(args["dry_run"], Value::Boolean(false));

        let refused = |cmd: &str, raw: Vec<(String, RawValue)>| {
            parse_args(c.get(cmd).unwrap(), raw).unwrap_err().0
        };
        assert_eq!(
            refused("logs", text(&[("service", "mysql")])),
            "service must be one of backend, worker, beat, nginx, postgres, redis, not \"mysql\""
        );
        assert!(refused("logs", vec![]).contains("needs service"));
        assert!(
            refused("logs", text(&[("service", "backend"), ("tail", "9999")]))
                .contains("between 1 and 5000")
        );
        assert!(
            refused("logs", text(&[("service", "backend"), ("tail", "ten")]))
                .contains("whole number")
        );
        assert!(refused(
            "logs",
            text(&[("service", "backend"), ("grep", "x; rm -rf /")])
        )
        .contains("may not contain ';'"));
        assert!(
            refused("logs", text(&[("service", "backend"), ("color", "red")]))
                .contains("no option \"color\"")
        );
        assert!(refused("block-ip", text(&[("address", "123.456.789.0")]))
            .contains("not a valid IPv4 address: each of its four numbers must be 0 to 255, and 456 is not"));
        assert!(refused(
            "block-ip",
            text(&[("address", "1.2.3.4; include /etc/passwd")])
        )
        .contains("may not contain ';'"));
        let block = c.get("block-ip").unwrap();
        let args = parse_args(
            block,
            text(&[("address", "2001:DB8::1/128"), ("ttl", "2h")]),
        )
        .unwrap();
        assert_eq!(
            args["address"],
            Value::Text("2001:db8::1".into()),
            "canonical form"
        );
        assert!(refused(
            "block-ip",
            text(&[("address", "10.0.0.1"), ("ttl", "forever")])
        )
        .contains("not a duration"));
        assert!(refused("deploy", text(&[("tag", "v1.2.3$(id)")])).contains("may not contain"));
        assert!(refused("deploy", text(&[("tag", "-latest")])).contains("not an image tag"));
        assert!(refused("silence", text(&[("duration", "forever")])).contains("not a duration"));
        assert!(refused("restore", text(&[("backup", "../etc/passwd")]))
            .contains("not in the expected form"));
        assert!(refused(
            "block-ip",
            text(&[("address", "10.0.0.1"), ("reason", &"x".repeat(201))])
        )
        .contains("longer than 200"));
    }

    #[test]
    fn some_args_are_checked_and_defaulted_but_none_is_required() {
        let c = Commands::load(None).unwrap();
        let logs = c.get("logs").unwrap();
        let args = parse_some_args(logs, vec![]).unwrap();
        assert_eq!(args["tail"], Value::Integer(100));
        assert!(!args.contains_key("service"));
        assert!(parse_some_args(logs, text(&[("tail", "ten")]))
            .unwrap_err()
            .0
            .contains("whole number"));
        assert!(parse_args(logs, vec![]).is_err(), "chat still insists");
    }

    #[test]
    fn an_unknown_executor_is_refused_with_the_closest_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("restart.toml"),
            "name = \"restart\"\ndescription = \"x\"\nrisk = \"write\"\nexecutor = \"docker.restrat\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Commands::load(Some(dir.path())).unwrap_err());
        assert_eq!(
            err,
            "unknown executor \"docker.restrat\" in commands/restart.toml; did you mean \"docker.restart\"?"
        );
    }

    #[test]
    fn every_executor_name_reads_back_as_itself() {
        for (name, kind) in EXECUTORS {
            assert_eq!(ExecutorKind::parse(name), Ok(*kind));
            assert_eq!(kind.as_str(), *name);
        }
        let shipped = Commands::load(None).unwrap();
        let disk = shipped.get("disk").unwrap();
        assert_eq!(disk.executor, ExecutorKind::NotYet("docker.disk"));
    }

    #[test]
    fn a_bad_command_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("oops.toml"),
            "name = \"Oops!\"\ndescription = \"x\"\nrisk = \"read\"\nexecutor = \"alerts.ack\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Commands::load(Some(dir.path())).unwrap_err());
        assert!(
            err.contains("commands/oops.toml") && err.contains("lowercase"),
            "{err}"
        );
    }
}
