//! `runbot oncall who` and `runbot escalation explain`: the on-call files' answer for a moment,
//! from the command line, to check the files before anyone is woken by them. Overrides live in
//! the database (`/oncall override`) and are not read here.

use std::io::Write;

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::escalation::Chain;
use super::oncall::{parse_time, DutySource};
use super::Policies;
use crate::commands::Commands;
use crate::config::Settings;
use crate::domain::Severity;
use crate::runbook::Runbook;

#[derive(Debug, clap::Subcommand)]
pub enum OncallCommand {
    /// Who is on duty for a role: since and until when, who is next, and whether the role's
    /// hours cover the moment. Exit 2 for an unknown role (the roles are listed).
    Who {
        /// The role, as roles.toml names it (devops-lead, dba, …).
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// When: RFC 3339 (2026-12-07T09:00:00Z) or local to policy.timezone
        /// (2026-12-07T09:00). Default: now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum EscalationCommand {
    /// Each step of the chain a group would follow: when it pages (offset and time) and whom,
    /// or whom it skips and why. Exit 2 for an unknown severity or alert (the choices listed).
    Explain {
        /// sev1, sev2, sev3 or sev4.
        #[arg(long, value_name = "SEV")]
        severity: String,
        /// An alert of commands/alerts.toml: its runbook entry may name its own chain.
        #[arg(long, value_name = "NAME")]
        alert: Option<String>,
        /// When the group starts firing: RFC 3339 or local to policy.timezone
        /// (2026-12-12T03:00). Default: now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
}

fn load(settings: &Settings) -> anyhow::Result<Policies> {
    let (commands, _) = Commands::from_settings(settings)?;
    Policies::load(settings, &commands)
}

fn moment(policies: &Policies, at: Option<&str>) -> Result<DateTime<Utc>, String> {
    match at {
        None => Ok(Utc::now()),
        Some(t) => parse_time(t, policies.clock().tz).map_err(|e| format!("--at: {e}")),
    }
}

/// `2026-12-14 09:00 Mon Europe/Madrid`.
fn local(policies: &Policies, t: DateTime<Utc>) -> String {
    let tz = policies.clock().tz;
    let l = t.with_timezone(&tz);
    format!(
        "{}-{:02}-{:02} {:02}:{:02} {} {}",
        l.year(),
        l.month(),
        l.day(),
        l.hour(),
        l.minute(),
        l.weekday(),
        tz.name()
    )
}

/// `Ana (ana), Luis (luis)`.
fn names(policies: &Policies, ids: &[String]) -> String {
    if ids.is_empty() {
        return "nobody named".into();
    }
    ids.iter()
        .map(|id| format!("{} ({id})", policies.people().name_of(id)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `runbot oncall …`; returns the exit code.
pub fn run_oncall(settings: &Settings, command: OncallCommand, out: &mut dyn Write) -> u8 {
    let policies = match load(settings) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("runbot: {e:#}");
            return 2;
        }
    };
    let OncallCommand::Who { role, at } = command;
    let at = match moment(&policies, at.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("runbot: {e}");
            return 2;
        }
    };
    match who(&policies, &role, at, out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("runbot: {e:#}");
            2
        }
    }
}

fn who(
    policies: &Policies,
    role: &str,
    at: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let Some(duty) = policies.on_duty(role, at, &[]) else {
        eprintln!(
            "runbot: --role {role:?} is no role in roles.toml; roles: {}",
            policies.roles().names().collect::<Vec<_>>().join(", ")
        );
        return Ok(2);
    };
    let r = policies.roles().get(role).expect("on_duty found it");
    writeln!(out, "{role} at {}", local(policies, at))?;
    let how = match duty.source {
        DutySource::Rotation => {
            let rot = policies.rotations().get(role).expect("a rotation");
            format!(
                "their turn in the rotation ({} each: {})",
                rot.turn,
                rot.people.join(", ")
            )
        }
        DutySource::Override => "an override".into(),
        DutySource::Holders => match policies.rotations().get(role) {
            Some(_) => "everyone the role lists (the rotation has not started)".into(),
            None => "everyone the role lists (no rotation)".into(),
        },
    };
    writeln!(out, "  on duty  {}: {how}", names(policies, &duty.people))?;
    if duty.people.is_empty() {
        let discord = &r.holders.discord_roles;
        if discord.is_empty() {
            writeln!(
                out,
                "           nobody to page: add people = [...] to [roles.{role}] in roles.toml"
            )?;
        } else {
            writeln!(
                out,
                "           pages mention the Discord roles {}",
                discord.join(", ")
            )?;
        }
    }
    if let Some(since) = duty.since {
        writeln!(out, "  since    {}", local(policies, since))?;
    }
    match duty.until {
        Some(until) => writeln!(out, "  until    {}", local(policies, until))?,
        None => writeln!(out, "  until    no change ahead")?,
    }
    if let Some((next, when)) = &duty.next {
        writeln!(
            out,
            "  next     {} at {}",
            names(policies, next),
            local(policies, *when)
        )?;
    }
    writeln!(
        out,
        "  hours    {}: {}",
        r.hours.on_call_text(),
        if duty.in_hours {
            "on call at this moment"
        } else {
            "not on call at this moment (a when_on_call step skips the role)"
        }
    )?;
    writeln!(
        out,
        "  (overrides taken with /oncall override are in the database and not shown here)"
    )?;
    Ok(0)
}

/// Runs `runbot escalation …`; returns the exit code.
pub fn run_escalation(settings: &Settings, command: EscalationCommand, out: &mut dyn Write) -> u8 {
    let policies = match load(settings) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("runbot: {e:#}");
            return 2;
        }
    };
    let EscalationCommand::Explain {
        severity,
        alert,
        at,
    } = command;
    let Some(sev) = Severity::parse(&severity) else {
        eprintln!("runbot: --severity {severity:?}: use sev1, sev2, sev3 or sev4");
        return 2;
    };
    let at = match moment(&policies, at.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("runbot: {e}");
            return 2;
        }
    };
    let runbook_chain = match &alert {
        None => None,
        Some(name) => {
            let runbook = match Runbook::load(settings.commands.resolve("commands").as_deref()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("runbot: {e:#}");
                    return 2;
                }
            };
            match runbook.entry(name) {
                Some((_, entry)) => entry.escalation.clone(),
                None => {
                    let known: Vec<&str> = runbook.iter().map(|(n, _)| n).collect();
                    eprintln!(
                        "runbot: --alert {name:?} is not in commands/alerts.toml; alerts: {}",
                        known.join(", ")
                    );
                    return 2;
                }
            }
        }
    };
    let Some(chain) = policies.chain_for(sev, runbook_chain.as_deref()) else {
        eprintln!(
            "runbot: escalation.toml has no chain {}: nobody would be paged; chains: {}",
            runbook_chain.as_deref().unwrap_or(sev.as_str()),
            policies.chains().names().collect::<Vec<_>>().join(", ")
        );
        return 2;
    };
    match explain(&policies, chain, sev, alert.as_deref(), at, out) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("runbot: {e:#}");
            2
        }
    }
}

fn explain(
    policies: &Policies,
    chain: &Chain,
    sev: Severity,
    alert: Option<&str>,
    at: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let why = match alert {
        Some(a) if chain.name != sev.as_str() => format!("the chain {a}'s runbook entry names"),
        _ => format!("the chain of {}", sev.title()),
    };
    writeln!(
        out,
        "chain {}: {why}; the group fires at {}",
        chain.name,
        local(policies, at)
    )?;
    let mut offset = std::time::Duration::ZERO;
    for (i, step) in chain.steps.iter().enumerate() {
        offset += step.after;
        let when = at + chrono::Duration::from_std(offset)?;
        let plan = policies.plan_step(step, when, &[]);
        writeln!(
            out,
            "  step {}  +{:<7} {}{}",
            i + 1,
            crate::domain::duration::short(offset),
            local(policies, when),
            if step.when_on_call {
                "  (when on call)"
            } else {
                ""
            }
        )?;
        for (person, role) in &plan.people {
            let p = policies.people().get(person);
            let ways: Vec<&str> = p
                .map(|p| {
                    [
                        ("discord", &p.discord),
                        ("slack", &p.slack),
                        ("console", &p.console),
                        ("email", &p.email),
                    ]
                    .into_iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k)
                    .collect()
                })
                .unwrap_or_default();
            writeln!(
                out,
                "          pages {}{} by {}",
                names(policies, std::slice::from_ref(person)),
                role.as_ref()
                    .map(|r| format!(" for {r}"))
                    .unwrap_or_default(),
                if ways.is_empty() {
                    "no way: give them an address in people.toml".to_string()
                } else {
                    ways.join(", ")
                }
            )?;
        }
        for r in &plan.discord_roles {
            writeln!(out, "          mentions Discord role {r}")?;
        }
        if plan.channel {
            writeln!(out, "          posts in the group's channel, nobody paged")?;
        }
        if plan.backlog {
            writeln!(out, "          adds the group to the backlog")?;
        }
        for w in &plan.webhooks {
            writeln!(out, "          calls webhook {w}")?;
        }
        for s in &plan.skipped {
            writeln!(out, "          {s}")?;
        }
        if plan.is_empty() {
            writeln!(out, "          reaches nobody")?;
        }
    }
    if let Some(every) = chain.repeat_last_every {
        writeln!(
            out,
            "  then step {} again every {} until someone acknowledges",
            chain.steps.len(),
            crate::domain::duration::short(every)
        )?;
    }
    writeln!(out, "  (an acknowledgement or resolution stops the chain; overrides in the database are not shown)")?;
    Ok(())
}
