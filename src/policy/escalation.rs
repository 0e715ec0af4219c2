//! `policies/escalation.toml`: the chain of pages for each severity (or a runbook entry's own
//! chain), and the pure planner that says whom one step pages at a moment.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use toml::Spanned;

use super::located::{self, choices, Problems};
use super::oncall::{parse_length, Override};
use super::people::People;
use super::roles::Roles;
use super::Policies;
use crate::domain::hours::Hours;
use crate::domain::Severity;

/// Whom a step notifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `role:NAME`: whoever is on duty for it.
    Role(String),
    /// `person:ID`: one person of people.toml.
    Person(String),
    /// `channel`: the group's channel, nobody paged.
    Channel,
    /// `backlog`: the backlog list.
    Backlog,
    /// `webhook:NAME`: one of the `[[notify.webhooks]]` of the settings.
    Webhook(String),
}

impl Target {
    pub const FORMS: &'static str = "role:NAME, person:NAME, channel, backlog or webhook:NAME";

    pub fn parse(text: &str) -> Option<Target> {
        match text.split_once(':') {
            None if text == "channel" => Some(Target::Channel),
            None if text == "backlog" => Some(Target::Backlog),
            Some(("role", n)) if !n.is_empty() => Some(Target::Role(n.into())),
            Some(("person", n)) if !n.is_empty() => Some(Target::Person(n.into())),
            Some(("webhook", n)) if !n.is_empty() => Some(Target::Webhook(n.into())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Role(n) => write!(f, "role:{n}"),
            Target::Person(n) => write!(f, "person:{n}"),
            Target::Channel => write!(f, "channel"),
            Target::Backlog => write!(f, "backlog"),
            Target::Webhook(n) => write!(f, "webhook:{n}"),
        }
    }
}

/// One step of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// After the previous step (after the chain starts, for the first): 0 for the first.
    pub after: Duration,
    pub notify: Vec<Target>,
    /// Skip role targets whose `hours` do not cover the moment.
    pub when_on_call: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub steps: Vec<Step>,
    /// Page the last step again this often until someone acknowledges.
    pub repeat_last_every: Option<Duration>,
}

/// Every chain, by name.
#[derive(Debug, Clone, Default)]
pub struct Chains {
    chains: Vec<Chain>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationFile {
    #[serde(default)]
    chains: BTreeMap<Spanned<String>, ChainEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainEntry {
    steps: Spanned<Vec<StepEntry>>,
    repeat_last_every: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepEntry {
    after: Option<Spanned<toml::Value>>,
    notify: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    when_on_call: bool,
}

/// A length written in the file, or why not.
fn length(value: &toml::Value) -> Result<Duration, String> {
    match value {
        toml::Value::String(s) => parse_length(s).map(|(secs, _)| Duration::from_secs(secs)),
        toml::Value::Integer(i) if *i < 0 => {
            Err(format!("{i} is negative: use a length such as \"10m\""))
        }
        toml::Value::Integer(i) => Err(format!(
            "{i} is not a length: write it as text with a unit, e.g. \"10m\""
        )),
        other => Err(format!(
            "a {} is not a length: write it as text, e.g. \"10m\"",
            other.type_str()
        )),
    }
}

impl Chains {
    /// Parses the file against the roles and people already loaded. `webhook:NAME` is taken
    /// as written: the settings hold the webhooks, and the caller checks the names.
    pub fn parse(file: &str, text: &str, roles: &Roles, people: &People) -> anyhow::Result<Chains> {
        let parsed: EscalationFile = located::parse(file, text)?;
        let mut problems = Problems::new(file, text);
        let mut chains = Vec::new();
        for (name, e) in parsed.chains {
            let (key_span, name) = (name.span(), name.into_inner());
            if !located::is_name(&name) {
                problems.at(
                    key_span,
                    format!("chains.{name}: the chain name: {}", located::NAME_RULE),
                );
            }
            let steps_span = e.steps.span();
            let entries = e.steps.into_inner();
            if entries.is_empty() {
                problems.at(
                    steps_span,
                    format!("chains.{name}.steps: a chain needs at least one step, e.g. steps = [{{ notify = [\"channel\"] }}]"),
                );
            }
            let mut steps = Vec::new();
            for (i, s) in entries.into_iter().enumerate() {
                let at = format!("chains.{name}.steps[{i}]");
                let after = match &s.after {
                    None => Duration::ZERO,
                    Some(v) => match length(v.get_ref()) {
                        Ok(d) => d,
                        Err(why) => {
                            problems.at(v.span(), format!("{at}.after: {why}"));
                            Duration::ZERO
                        }
                    },
                };
                let notify_span = s.notify.span();
                let list = s.notify.into_inner();
                if list.is_empty() {
                    problems.at(
                        notify_span,
                        format!("{at}.notify: name whom to notify: {}", Target::FORMS),
                    );
                }
                let mut notify = Vec::new();
                for t in list {
                    let span = t.span();
                    let Some(target) = Target::parse(t.get_ref()) else {
                        problems.at(
                            span,
                            format!(
                                "{at}.notify: {:?} is not a target: use {}",
                                t.get_ref(),
                                Target::FORMS
                            ),
                        );
                        continue;
                    };
                    match &target {
                        Target::Role(r) if roles.get(r).is_none() => problems.at(
                            span,
                            format!("{at}.notify: unknown role {r:?} (roles: {})", choices(roles.names())),
                        ),
                        Target::Person(p) if people.get(p).is_none() => problems.at(
                            span,
                            format!("{at}.notify: unknown person {p:?}: add [people.{p}] to people.toml, or use one of: {}", choices(people.ids())),
                        ),
                        _ if notify.contains(&target) => {
                            problems.at(span, format!("{at}.notify: {target} is listed twice"))
                        }
                        _ => {}
                    }
                    notify.push(target);
                }
                steps.push(Step {
                    after,
                    notify,
                    when_on_call: s.when_on_call,
                });
            }
            let repeat_last_every = match &e.repeat_last_every {
                None => None,
                Some(v) => match length(v.get_ref()) {
                    Ok(d) if d.is_zero() => {
                        problems.at(v.span(), format!("chains.{name}.repeat_last_every: 0 would page without pause: use e.g. \"15m\", or remove the key"));
                        None
                    }
                    Ok(d) => Some(d),
                    Err(why) => {
                        problems.at(v.span(), format!("chains.{name}.repeat_last_every: {why}"));
                        None
                    }
                },
            };
            chains.push(Chain {
                name,
                steps,
                repeat_last_every,
            });
        }
        problems.finish()?;
        Ok(Chains { chains })
    }

    pub fn get(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// Every chain, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Chain> {
        self.chains.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().map(|c| c.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.chains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }
}

/// Whom one step reaches at a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// (person id, the role they are paged for), each person once.
    pub people: Vec<(String, Option<String>)>,
    /// Discord role ids to mention, for a role with holders but no people.
    pub discord_roles: Vec<String>,
    pub channel: bool,
    pub backlog: bool,
    /// Names of `[[notify.webhooks]]`.
    pub webhooks: Vec<String>,
    /// Sentences for the card: why a target was left out.
    pub skipped: Vec<String>,
}

impl StepPlan {
    /// Whether the step reaches no one and nothing.
    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
            && self.discord_roles.is_empty()
            && !self.channel
            && !self.backlog
            && self.webhooks.is_empty()
    }
}

impl Policies {
    /// Every chain of `escalation.toml`.
    pub fn chains(&self) -> &Chains {
        &self.inner().chains
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains().get(name)
    }

    /// The chain a runbook entry names, else the severity's (`sev1`…).
    pub fn chain_for(&self, severity: Severity, runbook_chain: Option<&str>) -> Option<&Chain> {
        match runbook_chain {
            Some(name) => self.chain(name),
            None => self.chain(severity.as_str()),
        }
    }

    /// `business hours, Mon-Fri 09:00-18:00 UTC`: when a role is on call, for a skip sentence.
    fn hours_phrase(&self, hours: Hours) -> String {
        let c = self.clock();
        match hours {
            Hours::Always => "24/7".into(),
            Hours::Business => format!("business hours, {} {}", c.business, c.tz.name()),
            Hours::Weekends => format!("weekends, {} {}", c.business.weekend_days(), c.tz.name()),
        }
    }

    /// Whom `step` pages at `at`, with the overrides in force.
    pub fn plan_step(&self, step: &Step, at: DateTime<Utc>, overrides: &[Override]) -> StepPlan {
        let mut plan = StepPlan::default();
        let add = |plan: &mut StepPlan, person: &str, role: Option<&str>| {
            if !plan.people.iter().any(|(p, _)| p == person) {
                plan.people
                    .push((person.to_string(), role.map(str::to_string)));
            }
        };
        for target in &step.notify {
            match target {
                Target::Role(name) => {
                    let Some(role) = self.roles().get(name) else {
                        plan.skipped
                            .push(format!("{name} is no role in roles.toml: skipped"));
                        continue;
                    };
                    if step.when_on_call && !self.clock().covers(role.hours, at) {
                        plan.skipped.push(format!(
                            "{name} is off hours ({}): skipped",
                            self.hours_phrase(role.hours)
                        ));
                        continue;
                    }
                    let duty = self.on_duty(name, at, overrides).expect("the role exists");
                    if !duty.people.is_empty() {
                        for p in &duty.people {
                            add(&mut plan, p, Some(name));
                        }
                    } else if !role.holders.discord_roles.is_empty() {
                        for r in &role.holders.discord_roles {
                            if !plan.discord_roles.contains(r) {
                                plan.discord_roles.push(r.clone());
                            }
                        }
                    } else {
                        plan.skipped.push(format!(
                            "{name} lists nobody to page: add people = [...] to [roles.{name}] in roles.toml: skipped"
                        ));
                    }
                }
                Target::Person(p) => add(&mut plan, p, None),
                Target::Channel => plan.channel = true,
                Target::Backlog => plan.backlog = true,
                Target::Webhook(n) => {
                    if !plan.webhooks.contains(n) {
                        plan.webhooks.push(n.clone());
                    }
                }
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Commands;
    use crate::config::Settings;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn shipped() -> Policies {
        Policies::load_from(
            None,
            &Settings::default().parsed.policy_clock,
            &Commands::load(None).unwrap(),
        )
        .unwrap()
    }

    fn parse_err(text: &str) -> String {
        let roles = Roles::parse(super::super::EMBEDDED_ROLES).unwrap();
        let people = People::parse("p", super::super::EMBEDDED_PEOPLE).unwrap();
        format!(
            "{:#}",
            Chains::parse("policies/escalation.toml", text, &roles, &people).unwrap_err()
        )
    }

    #[test]
    fn the_shipped_chains_follow_the_runbook() {
        let p = shipped();
        let sev1 = p.chain_for(Severity::Sev1, None).unwrap();
        assert_eq!(sev1.steps.len(), 2);
        assert_eq!(sev1.steps[0].after, Duration::ZERO);
        assert_eq!(sev1.steps[0].notify, [Target::Role("devops-lead".into())]);
        assert_eq!(sev1.steps[1].after, Duration::from_secs(600));
        assert_eq!(sev1.steps[1].notify, [Target::Role("cto".into())]);
        assert_eq!(sev1.repeat_last_every, Some(Duration::from_secs(900)));
        let sev2 = p.chain_for(Severity::Sev2, None).unwrap();
        assert!(sev2.steps[0].when_on_call);
        assert_eq!(sev2.steps[0].notify, [Target::Role("backend-lead".into())]);
        assert_eq!(sev2.steps[1].after, Duration::from_secs(900));
        assert_eq!(sev2.steps[1].notify, [Target::Role("devops-lead".into())]);
        assert_eq!(
            p.chain_for(Severity::Sev3, None).unwrap().steps[0].notify,
            [Target::Channel]
        );
        assert_eq!(
            p.chain_for(Severity::Sev4, None).unwrap().steps[0].notify,
            [Target::Backlog]
        );
        let db = p.chain_for(Severity::Sev1, Some("database")).unwrap();
        assert_eq!(db.steps[0].notify, [Target::Role("dba".into())]);
        assert!(p.chain_for(Severity::Sev1, Some("nope")).is_none());
    }

    #[test]
    fn when_on_call_skips_a_role_out_of_its_hours() {
        let p = shipped();
        let sev2 = p.chain("sev2").unwrap();
        // 2026-11-28 is a Saturday; 2026-11-24 a Tuesday (the default clock is UTC).
        let sat = p.plan_step(&sev2.steps[0], utc("2026-11-28T23:00:00Z"), &[]);
        assert!(sat.people.is_empty(), "{sat:?}");
        assert_eq!(
            sat.skipped,
            ["backend-lead is off hours (business hours, Mon-Fri 09:00-18:00 UTC): skipped"]
        );
        let tue = p.plan_step(&sev2.steps[0], utc("2026-11-24T11:00:00Z"), &[]);
        assert!(tue.skipped.is_empty(), "{tue:?}");
        let backend: Vec<String> = p.roles().get("backend-lead").unwrap().people.clone();
        assert!(!backend.is_empty());
        assert_eq!(
            tue.people,
            backend
                .iter()
                .map(|b| (b.clone(), Some("backend-lead".to_string())))
                .collect::<Vec<_>>()
        );
        // The second step has no when_on_call: the devops lead is paged whatever the hour.
        let second = p.plan_step(&sev2.steps[1], utc("2026-11-28T23:00:00Z"), &[]);
        assert!(!second.people.is_empty() && second.skipped.is_empty());
        assert!(second
            .people
            .iter()
            .all(|(_, r)| r.as_deref() == Some("devops-lead")));
    }

    #[test]
    fn a_step_dedupes_people_and_follows_overrides() {
        let p = shipped();
        let step = Step {
            after: Duration::ZERO,
            notify: vec![
                Target::Person("marta".into()),
                Target::Role("cto".into()),
                Target::Channel,
                Target::Webhook("sms".into()),
            ],
            when_on_call: false,
        };
        let at = utc("2026-11-24T11:00:00Z");
        let plan = p.plan_step(&step, at, &[]);
        assert_eq!(plan.people, [("marta".to_string(), None)]);
        assert!(plan.channel && !plan.backlog);
        assert_eq!(plan.webhooks, ["sms"]);
        let taken = Override {
            role: "cto".into(),
            person: "luis".into(),
            from: utc("2026-11-24T10:00:00Z"),
            until: utc("2026-11-24T12:00:00Z"),
        };
        let plan = p.plan_step(&step, at, &[taken]);
        assert_eq!(
            plan.people[1],
            ("luis".to_string(), Some("cto".to_string()))
        );
    }

    #[test]
    fn bad_chains_name_the_line_and_the_fix() {
        let e = parse_err("[chains.sev1]\nsteps = [\n  { notify = [\"role:devops-lead\"] },\n  { after = \"10m\", notify = [\"role:ctoo\"] },\n]\n");
        assert!(
            e.starts_with("policies/escalation.toml:4: chains.sev1.steps[1].notify: unknown role \"ctoo\" (roles: backend-lead, cto, dba"),
            "{e}"
        );
        let e = parse_err(
            "[chains.sev1]\nsteps = [\n  { after = \"-5m\", notify = [\"channel\"] },\n]\n",
        );
        assert!(
            e.contains("escalation.toml:3: chains.sev1.steps[0].after") && e.contains("negative"),
            "{e}"
        );
        let e =
            parse_err("[chains.sev1]\nsteps = [{ after = \"soon\", notify = [\"channel\"] }]\n");
        assert!(
            e.contains("escalation.toml:2:") && e.contains("not a length"),
            "{e}"
        );
        let e = parse_err("[chains.sev1]\nsteps = [{ after = -5, notify = [\"channel\"] }]\n");
        assert!(
            e.contains("escalation.toml:2:") && e.contains("negative"),
            "{e}"
        );
        let e = parse_err("[chains.sev1]\nsteps = [{ notify = [\"person:nobody\"] }]\n");
        assert!(
            e.contains("unknown person \"nobody\"") && e.contains("ana"),
            "{e}"
        );
        let e = parse_err("[chains.sev1]\nsteps = [{ notify = [\"pager\"] }]\n");
        assert!(e.contains("not a target: use role:NAME"), "{e}");
        let e = parse_err("[chains.sev1]\nsteps = []\n");
        assert!(
            e.contains("escalation.toml:2:") && e.contains("at least one step"),
            "{e}"
        );
        let e =
            parse_err("[chains.sev1]\nsteps = [{ notify = [\"channel\"], wen_on_call = true }]\n");
        assert!(
            e.contains("escalation.toml:2:") && e.contains("wen_on_call"),
            "{e}"
        );
        // Every problem at once.
        let e = parse_err("[chains.a]\nsteps = [{ notify = [\"role:x\"] }]\n[chains.b]\nsteps = [{ notify = [\"role:y\"] }]\n");
        assert!(e.contains(":2:") && e.contains(":4:"), "{e}");
        // Webhook names are the settings' to check.
        let roles = Roles::parse(super::super::EMBEDDED_ROLES).unwrap();
        assert!(Chains::parse(
            "f",
            "[chains.x]\nsteps = [{ notify = [\"webhook:sms\"] }]\n",
            &roles,
            &People::default()
        )
        .is_ok());
    }
}
