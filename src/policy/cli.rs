//! `runbot policy explain` and `runbot policy test`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::incident::{incident_for, Incident, OpenGroup, Target, TARGET_LABELS};
use super::{Decision, Effect, Identity, Policies, PolicyRequest};
use crate::commands::{parse_some_args, Args, Commands, Value};
use crate::config::Settings;
use crate::domain::Severity;
use crate::request::RawValue;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Decide one request and say why: the effect, the reason, the roles considered, on-call
    /// state and the policies that decided. Exit 0 whatever the effect.
    Explain(Box<ExplainArgs>),
    /// Check a table of expected decisions (default: tests.toml in the policies folder).
    /// Exit 0 when all pass, 1 on any mismatch (each named with the actual reason).
    Test {
        /// The table to check.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The requester's user id on the platform (Discord user id, Slack member id, console name).
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// discord, slack, console or cli.
    #[arg(long, default_value = "discord", value_parser = ["discord", "slack", "console", "cli"])]
    pub platform: String,
    /// Runbot roles to add to those roles.toml gives the user, e.g. backend-lead,dba.
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Discord role ids the user holds (runbot cannot ask Discord from here).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub platform_roles: Vec<String>,
    /// The command, as named in commands/ (deploy, restart, …).
    #[arg(long, value_name = "NAME")]
    pub command: String,
    /// The alert group's severity: sev1 to sev4, or none. Without --open-group or --live, the
    /// decision sees only this severity.
    #[arg(long, value_name = "SEV")]
    pub severity: Option<String>,
    /// An open alert group, as `[ID:]SEV[:LABEL=VALUE,…]` (e.g. `12:sev1:service=backend`);
    /// repeat for more. The request is then decided as chat decides it: under the most severe
    /// open group that concerns its service, else the most severe open group of the stack.
    #[arg(long = "open-group", value_name = "SPEC", value_parser = parse_open_group)]
    pub open_groups: Vec<GroupSpec>,
    /// The group the request comes from (a card's button, or group:N): one of the open groups.
    #[arg(long, value_name = "ID")]
    pub from_group: Option<i64>,
    /// Read the open groups from the database (database.url), as `runbot serve` would now.
    #[arg(long, conflicts_with = "open_groups")]
    pub live: bool,
    /// When (RFC 3339, e.g. 2026-11-28T03:00:00Z). Default: now.
    #[arg(long, value_name = "TIME", value_parser = crate::domain::time::parse_cli_time)]
    pub at: Option<DateTime<Utc>>,
    /// Ask for a dry run of a mutating command.
    #[arg(long)]
    pub dry_run: bool,
    /// Roles of the people who approved so far, e.g. cto.
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    pub approvals: Vec<String>,
    /// One of the command's options, e.g. backup=backup_20261127_031500.sql.gz; repeat for
    /// more. Checked as the command's file says; defaults fill the rest, as in chat. Policies
    /// read them as context.args. Required options may be left out.
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = parse_arg)]
    pub args: Vec<(String, String)>,
}

fn parse_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!(
            "{s:?}: write NAME=VALUE, e.g. backup=backup_20261127_031500.sql.gz"
        )),
    }
}

/// An `--open-group` as given: its id may be left for [`number_groups`] to give.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    id: Option<i64>,
    severity: Severity,
    labels: BTreeMap<String, String>,
}

/// `[ID:]SEV[:LABEL=VALUE,…]`.
fn parse_open_group(s: &str) -> Result<GroupSpec, String> {
    let usage = "write [ID:]SEV[:LABEL=VALUE,…], e.g. 12:sev1:service=backend";
    let mut parts = s.splitn(3, ':');
    let mut first = parts.next().unwrap_or_default();
    let mut id = None;
    if let Ok(n) = first.parse::<i64>() {
        if n <= 0 {
            return Err(format!("{s:?}: a group id is a positive number; {usage}"));
        }
        id = Some(n);
        first = parts.next().unwrap_or_default();
    }
    let severity = Severity::parse(first)
        .ok_or_else(|| format!("{s:?}: {first:?} is not sev1, sev2, sev3 or sev4; {usage}"))?;
    let mut labels = BTreeMap::new();
    if let Some(rest) = parts.next() {
        for pair in rest.split(',').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    labels.insert(k.to_string(), v.to_string());
                }
                _ => return Err(format!("{s:?}: {pair:?} is not LABEL=VALUE; {usage}")),
            }
        }
    }
    Ok(GroupSpec {
        id,
        severity,
        labels,
    })
}

/// The groups, those without an id given the next free ones, in order.
fn number_groups(specs: &[GroupSpec]) -> Vec<OpenGroup> {
    let mut next = specs.iter().filter_map(|g| g.id).max().unwrap_or(0);
    specs
        .iter()
        .map(|g| {
            let id = g.id.unwrap_or_else(|| {
                next += 1;
                next
            });
            OpenGroup::from_labels(id, g.severity, &g.labels)
        })
        .collect()
}

/// The open groups `runbot serve` sees now, from `database.url`.
async fn live_groups(settings: &Settings) -> anyhow::Result<Vec<OpenGroup>> {
    let store = crate::audit::open_store(&settings.database).await?;
    let rows = store.open_group_targets(&TARGET_LABELS).await;
    store.close().await;
    Ok(OpenGroup::from_stored(rows?))
}

/// A console account, as `policy explain --platform console` reports it.
enum Account {
    /// No database yet, so no accounts.
    NoDatabase(String),
    Missing,
    Disabled,
    Enabled(Vec<String>),
}

/// The console account `name`, from `database.url` (never made here: a missing SQLite file
/// means there are no accounts yet).
async fn console_account(settings: &Settings, name: &str) -> anyhow::Result<Account> {
    let store = match crate::audit::open_existing_store(&settings.database).await? {
        Ok(s) => s,
        Err(path) => {
            return Ok(Account::NoDatabase(format!(
                "no database at {}",
                path.display()
            )))
        }
    };
    let row = store.account(name).await;
    store.close().await;
    Ok(match row? {
        None => Account::Missing,
        Some(a) if a.disabled_at.is_some() => Account::Disabled,
        Some(a) => Account::Enabled(serde_json::from_str(&a.roles).unwrap_or_default()),
    })
}

/// Runs one `runbot policy …` command; returns the exit code.
pub async fn run(settings: &Settings, command: PolicyCommand, out: &mut dyn Write) -> u8 {
    let loaded = Commands::from_settings(settings).and_then(|(commands, _)| {
        let policies = Policies::load(settings, &commands)?;
        let guard = settings.parsed.guard.clone();
        Ok((commands, policies, guard))
    });
    let (commands, policies, guard) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("runbot: {e:#}");
            return 2;
        }
    };
    let result = match command {
        PolicyCommand::Explain(args) => {
            let open = if args.live {
                match live_groups(settings).await {
                    Ok(groups) => groups,
                    Err(e) => {
                        eprintln!("runbot: --live: {e:#}");
                        return 2;
                    }
                }
            } else {
                number_groups(&args.open_groups)
            };
            let account = if args.platform == "console" {
                match console_account(settings, &args.user).await {
                    Ok(a) => Some(a),
                    Err(e) => {
                        eprintln!("runbot: cannot read the console accounts: {e:#}");
                        return 2;
                    }
                }
            } else {
                None
            };
            explain(
                &policies,
                &commands,
                &guard,
                &args,
                &open,
                account.as_ref(),
                out,
            )
        }
        PolicyCommand::Test { file } => {
            let file = file.or_else(|| settings.policy.resolve_dir().map(|d| d.join("tests.toml")));
            test(&policies, &commands, &guard, file.as_deref(), out)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("runbot: {e:#}");
            2
        }
    }
}

fn severity(s: Option<&str>) -> anyhow::Result<Option<Severity>> {
    match s {
        None | Some("none") => Ok(None),
        Some(s) => Severity::parse(s)
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("severity {s:?}: use sev1, sev2, sev3, sev4 or none")),
    }
}

fn check_roles(policies: &Policies, what: &str, roles: &[String]) -> anyhow::Result<()> {
    for r in roles {
        if policies.roles().get(r).is_none() {
            anyhow::bail!(
                "{what}: {r:?} is no role in policies/roles.toml; known: {}",
                policies.roles().names().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(())
}

/// One request as the CLI describes it.
struct Ask<'a> {
    who: Identity,
    /// What the person's console account holds (`runbot user add --role`).
    account_roles: &'a [String],
    extra_roles: &'a [String],
    command: &'a str,
    severity: Option<Severity>,
    at: DateTime<Utc>,
    dry_run: bool,
    approvals: &'a [String],
    /// The command's options as given, before validation.
    args: Vec<(String, RawValue)>,
    /// Open groups, when the incident rule applies (then `severity` is not used).
    open: Option<&'a [OpenGroup]>,
    /// The group the request comes from, among `open`.
    from_group: Option<i64>,
}

struct Asked {
    from_file: Vec<String>,
    from_account: Vec<String>,
    roles: Vec<String>,
    /// The validated arguments the decision saw.
    args: Args,
    /// The group that set the severity, when the incident rule applied.
    incident: Option<Incident>,
    severity: Option<Severity>,
    decision: Decision,
}

fn ask(
    policies: &Policies,
    commands: &Commands,
    guard: &crate::domain::net::Guard,
    a: &Ask<'_>,
) -> anyhow::Result<Asked> {
    let spec = commands.get(a.command).ok_or_else(|| {
        anyhow::anyhow!(
            "no command {:?} in commands/; known: {}",
            a.command,
            commands
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    check_roles(policies, "roles", a.extra_roles)?;
    check_roles(policies, "approvals", a.approvals)?;
    let from_file = policies.roles_of(&a.who);
    let mut roles: Vec<String> = from_file
        .iter()
        .chain(a.account_roles)
        .chain(a.extra_roles)
        .cloned()
        .collect();
    roles.sort();
    roles.dedup();
    let mut raw = a.args.clone();
    if raw.iter().any(|(name, _)| name == "dry_run") {
        anyhow::bail!(
            "dry_run is not an option here: use --dry-run (dry_run = true in tests.toml)"
        );
    }
    if spec.takes_dry_run() {
        raw.push(("dry_run".into(), RawValue::Boolean(a.dry_run)));
    }
    // The chat platforms' validation, so each value has the type the schema gives it.
    let args = parse_some_args(spec, raw).map_err(|e| anyhow::anyhow!("/{}: {e}", spec.name))?;
    // The rule chat applies (crate::policy::incident), when open groups are given.
    let (incident, severity) = match a.open {
        Some(open) => {
            if a.severity.is_some() {
                anyhow::bail!("give the severity of the group a request comes from with --open-group and --from-group (from_group in tests.toml), not with --severity");
            }
            let origin = match a.from_group {
                Some(id) => Some(open.iter().find(|g| g.id == id).ok_or_else(|| {
                    anyhow::anyhow!(
                        "the group the request comes from, #{id}, is not among the open groups"
                    )
                })?),
                None => None,
            };
            let incident = incident_for(origin, Target::of(spec, &args), open);
            let severity = incident.as_ref().map(|i| i.severity);
            (incident, severity)
        }
        None => (None, a.severity),
    };
    let decision = policies.decide(&PolicyRequest {
        who: &a.who,
        roles: &roles,
        command: spec,
        args: &args,
        severity,
        at: a.at,
        approver_roles: a.approvals,
        wide_range: crate::commands::wide_range(guard, spec, &args),
    });
    Ok(Asked {
        from_file,
        from_account: a.account_roles.to_vec(),
        roles,
        args,
        incident,
        severity,
        decision,
    })
}

fn explain(
    policies: &Policies,
    commands: &Commands,
    guard: &crate::domain::net::Guard,
    args: &ExplainArgs,
    open_groups: &[OpenGroup],
    account: Option<&Account>,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let at = args.at.unwrap_or_else(Utc::now);
    let sev = severity(args.severity.as_deref())?;
    let incident_rule = args.live || !open_groups.is_empty() || args.from_group.is_some();
    let who = Identity {
        platform: args.platform.clone(),
        user_id: args.user.clone(),
        platform_roles: args.platform_roles.clone(),
        roles: Vec::new(),
    };
    let asked = ask(
        policies,
        commands,
        guard,
        &Ask {
            who,
            account_roles: match account {
                Some(Account::Enabled(roles)) => roles,
                _ => &[],
            },
            extra_roles: &args.roles,
            command: &args.command,
            severity: sev,
            at,
            dry_run: args.dry_run,
            approvals: &args.approvals,
            args: args
                .args
                .iter()
                .map(|(k, v)| (k.clone(), RawValue::Text(v.clone())))
                .collect(),
            open: incident_rule.then_some(open_groups),
            from_group: args.from_group,
        },
    )?;
    let clock = policies.clock();
    let moment = clock.moment(at);
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    writeln!(
        out,
        "/{} by {}:{} at {} ({}), severity {}{}{}",
        args.command,
        args.platform,
        args.user,
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        clock.describe(at),
        asked.severity.map_or("none", Severity::as_str),
        if args.dry_run { ", dry run" } else { "" },
        if args.approvals.is_empty() {
            String::new()
        } else {
            format!(", approved so far by {}", args.approvals.join(", "))
        }
    )?;
    if incident_rule {
        writeln!(
            out,
            "incident: {}",
            match &asked.incident {
                Some(i) => i.sentence(),
                None => format!(
                    "none: no open alert group{}, so no severity",
                    if args.live {
                        " in the database"
                    } else {
                        " given"
                    }
                ),
            }
        )?;
    }
    writeln!(out, "effect:   {}", asked.decision.effect)?;
    writeln!(out, "reason:   {}", asked.decision.reason)?;
    let roles: Vec<String> = asked
        .roles
        .iter()
        .map(|r| {
            let from: Vec<&str> = [
                (asked.from_file.contains(r), "roles.toml"),
                (asked.from_account.contains(r), "console account"),
                (args.roles.contains(r), "--roles"),
            ]
            .into_iter()
            .filter_map(|(held, from)| held.then_some(from))
            .collect();
            format!("{r} ({})", from.join(" + "))
        })
        .collect();
    writeln!(
        out,
        "roles:    {}",
        if roles.is_empty() {
            "none (not in policies/roles.toml, and no --roles)".to_string()
        } else {
            roles.join(", ")
        }
    )?;
    if let Some(account) = account {
        let user = &args.user;
        let said = match account {
            Account::NoDatabase(why) => format!("none: {why}"),
            Account::Missing => format!("no console account named {user:?}"),
            Account::Disabled => {
                format!("{user} is disabled: it cannot sign in and holds no roles")
            }
            Account::Enabled(r) if r.is_empty() => {
                format!("{user}, enabled, with no roles of its own")
            }
            Account::Enabled(r) => format!("{user}, enabled, holds {}", r.join(", ")),
        };
        writeln!(out, "account:  {said}")?;
    }
    let on_call: Vec<String> = policies
        .oncall(at)
        .into_iter()
        .filter(|o| asked.roles.contains(&o.role.name))
        .map(|o| {
            format!(
                "{} {}{}",
                o.role.name,
                o.hours_text,
                if o.on_call_now { ": on call now" } else { "" }
            )
        })
        .collect();
    writeln!(
        out,
        "on call:  {}{}",
        yes_no(policies.on_call(&asked.roles, at)),
        if on_call.is_empty() {
            String::new()
        } else {
            format!(" ({})", on_call.join("; "))
        }
    )?;
    writeln!(
        out,
        "time:     business hours {} ({} {}), weekend {}",
        yes_no(moment.business_hours),
        clock.business,
        clock.tz.name(),
        yes_no(moment.weekend)
    )?;
    let given = shown_args(&asked.args);
    writeln!(
        out,
        "args:     {}",
        if given.is_empty() {
            "none".to_string()
        } else {
            given
        }
    )?;
    if asked.decision.policies.is_empty() {
        writeln!(out, "policies: none (nothing permits it)")?;
    }
    for (i, id) in asked.decision.policies.iter().enumerate() {
        let notes = policies
            .rules()
            .iter()
            .find(|r| &r.id == id)
            .map(|r| {
                r.annotations
                    .iter()
                    .map(|(k, v)| format!("@{k}({v:?})"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let label = if i == 0 { "policies:" } else { "" };
        writeln!(out, "{label:<9} {id}  {notes}")?;
    }
    Ok(0)
}

/// `context.args` as a person reads it: `backup="backup_…", tag="v1"`.
fn shown_args(args: &Args) -> String {
    args.iter()
        .filter(|(name, _)| *name != "dry_run")
        .map(|(name, v)| match v {
            Value::Text(t) => format!("{name}={t:?}"),
            Value::Integer(i) => format!("{name}={i}"),
            Value::Boolean(b) => format!("{name}={b}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    tests: Vec<toml::Spanned<TestRow>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
    Approval,
}

/// One expected decision. Without `user`, the roles are exactly `roles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRow {
    #[serde(default)]
    roles: Vec<String>,
    command: String,
    severity: Option<String>,
    at: String,
    #[serde(default)]
    dry_run: bool,
    /// Roles of the people who approved so far.
    #[serde(default)]
    approvals: Vec<String>,
    /// The command's options, checked as in chat: `args = { backup = "backup_….sql.gz" }`.
    #[serde(default)]
    args: BTreeMap<String, toml::Value>,
    /// A user id looked up in roles.toml (with `platform`, default discord).
    user: Option<String>,
    platform: Option<String>,
    /// With `user`: the Discord role ids they hold.
    #[serde(default)]
    platform_roles: Vec<String>,
    expect: Expect,
    /// For `expect = "approval"`: the roles that may approve, in any order.
    eligible: Option<Vec<String>>,
    /// Text the reason must contain.
    reason_contains: Option<String>,
    /// Open alert groups when the request is made: it is then decided as in chat, under the
    /// incident it acts in (see crate::policy::incident), and `severity` must be left out.
    #[serde(default)]
    open_groups: Vec<TestGroup>,
    /// The group the request comes from (a card's button), one of `open_groups`.
    from_group: Option<i64>,
    /// The id of the group expected to set the severity (0: none).
    severity_from: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    id: i64,
    severity: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn test(
    policies: &Policies,
    commands: &Commands,
    guard: &crate::domain::net::Guard,
    file: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let (name, text) = match file {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "reading {}: {e} (write a table of expected decisions there, or pass --file)",
                    path.display()
                )
            })?,
        ),
        None => ("built-in tests.toml".into(), super::EMBEDDED_TESTS.into()),
    };
    let table: TestFile = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let mut failed = 0;
    for (i, row) in table.tests.iter().enumerate() {
        let line = text[..row.span().start].matches('\n').count() + 1;
        let row_ref = row.get_ref();
        let args: Vec<String> = row_ref
            .args
            .iter()
            .map(|(k, v)| match v {
                toml::Value::String(t) => format!(" {k}={t:?}"),
                toml::Value::Integer(i) => format!(" {k}={i}"),
                toml::Value::Boolean(b) => format!(" {k}={b}"),
                other => format!(" {k}={other:?}"),
            })
            .collect();
        let label = format!(
            "row {} (line {line}): roles [{}]{}, /{}{}, {}{}{}, at {}",
            i + 1,
            row_ref.roles.join(", "),
            row_ref
                .user
                .as_ref()
                .map_or(String::new(), |u| format!(" + user {u}")),
            row_ref.command,
            args.concat(),
            if row_ref.open_groups.is_empty() {
                row_ref
                    .severity
                    .as_deref()
                    .unwrap_or("no severity")
                    .to_string()
            } else {
                let groups: Vec<String> = row_ref
                    .open_groups
                    .iter()
                    .map(|g| format!("#{} {}", g.id, g.severity))
                    .collect();
                format!("during [{}]", groups.join(", "))
            },
            if row_ref.dry_run { ", dry run" } else { "" },
            if row_ref.approvals.is_empty() {
                String::new()
            } else {
                format!(", approved by [{}]", row_ref.approvals.join(", "))
            },
            row_ref.at
        );
        match check_row(policies, commands, guard, row_ref) {
            Ok(None) => {}
            Ok(Some(problem)) | Err(problem) => {
                failed += 1;
                writeln!(out, "FAIL {label}\n     {problem}")?;
            }
        }
    }
    let total = table.tests.len();
    if failed == 0 {
        writeln!(out, "{total} passed, 0 failed ({name})")?;
        Ok(0)
    } else {
        writeln!(out, "{} passed, {failed} failed ({name})", total - failed)?;
        Ok(1)
    }
}

/// None when the row holds; else what differs, with the actual reason.
fn check_row(
    policies: &Policies,
    commands: &Commands,
    guard: &crate::domain::net::Guard,
    row: &TestRow,
) -> Result<Option<String>, String> {
    let at = crate::domain::time::parse_cli_time(&row.at).map_err(|e| format!("at: {e}"))?;
    let sev = severity(row.severity.as_deref()).map_err(|e| e.to_string())?;
    let who = Identity {
        platform: row.platform.clone().unwrap_or_else(|| "discord".into()),
        user_id: row.user.clone().unwrap_or_else(|| "policy-test".into()),
        platform_roles: row.platform_roles.clone(),
        roles: Vec::new(),
    };
    let mut args = Vec::new();
    for (name, value) in &row.args {
        let raw = match value {
            toml::Value::String(s) => RawValue::Text(s.clone()),
            toml::Value::Integer(i) => RawValue::Integer(*i),
            toml::Value::Boolean(b) => RawValue::Boolean(*b),
            other => {
                return Err(format!(
                    "args.{name}: {other:?} is not a string, integer or boolean"
                ))
            }
        };
        args.push((name.clone(), raw));
    }
    let mut open = Vec::new();
    for g in &row.open_groups {
        let severity = Severity::parse(&g.severity).ok_or_else(|| {
            format!(
                "open_groups: group {} has severity {:?}; use sev1, sev2, sev3 or sev4",
                g.id, g.severity
            )
        })?;
        open.push(OpenGroup::from_labels(g.id, severity, &g.labels));
    }
    let incident_rule =
        !row.open_groups.is_empty() || row.from_group.is_some() || row.severity_from.is_some();
    let asked = ask(
        policies,
        commands,
        guard,
        &Ask {
            who,
            account_roles: &[],
            extra_roles: &row.roles,
            command: &row.command,
            severity: sev,
            at,
            dry_run: row.dry_run,
            approvals: &row.approvals,
            args,
            open: incident_rule.then_some(&open[..]),
            from_group: row.from_group,
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    if let Some(want) = row.severity_from {
        let got = asked.incident.as_ref().map_or(0, |i| i.group_id);
        if got != want {
            return Ok(Some(format!(
                "expected the severity to come from group {want}, got {}",
                asked
                    .incident
                    .as_ref()
                    .map_or("no group".to_string(), Incident::sentence)
            )));
        }
    }
    let d = &asked.decision;
    let got = match &d.effect {
        Effect::Allow => Expect::Allow,
        Effect::Deny => Expect::Deny,
        Effect::NeedsApproval { .. } => Expect::Approval,
    };
    let name = |e: Expect| match e {
        Expect::Allow => "allow",
        Expect::Deny => "deny",
        Expect::Approval => "approval",
    };
    if got != row.expect {
        return Ok(Some(format!(
            "expected {}, got {}: {}",
            name(row.expect),
            name(got),
            d.reason
        )));
    }
    if let (Some(want), Effect::NeedsApproval { eligible }) = (&row.eligible, &d.effect) {
        let mut want = want.clone();
        want.sort();
        let mut have = eligible.clone();
        have.sort();
        if want != have {
            return Ok(Some(format!(
                "expected approval from [{}], got [{}]: {}",
                want.join(", "),
                have.join(", "),
                d.reason
            )));
        }
    }
    if let Some(text) = &row.reason_contains {
        if !d.reason.contains(text.as_str()) {
            return Ok(Some(format!(
                "expected the reason to contain {text:?}, got: {}",
                d.reason
            )));
        }
    }
    Ok(None)
}
