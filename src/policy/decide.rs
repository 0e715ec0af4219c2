//! [`Policies`]: roles, clock and Cedar policies loaded together, and the decision for one
//! request with a reason the requester can act on.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::cedar::{Engine, Kind, Rule, Situation, POLICY_FILE};
use super::escalation::Chains;
use super::oncall::Rotations;
use super::people::People;
use super::roles::Roles;
use crate::commands::{Args, CommandSpec, Commands, Value};
use crate::config::Settings;
use crate::domain::hours::Clock;
use crate::domain::Severity;

/// Who asks, as their platform knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `discord`, `slack`, `console` or `cli`.
    pub platform: String,
    pub user_id: String,
    /// The platform's roles the person holds (Discord role ids); empty elsewhere.
    pub platform_roles: Vec<String>,
    /// runbot roles the platform grants by itself (a console account's own).
    pub roles: Vec<String>,
}

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    pub who: &'a Identity,
    /// Runbot roles: [`Policies::roles_of`] plus any given explicitly. Unknown names are ignored.
    pub roles: &'a [String],
    pub command: &'a CommandSpec,
    /// `dry_run = true` makes a mutating command a dry run.
    pub args: &'a Args,
    /// The alert group's severity, when the command is about one.
    pub severity: Option<Severity>,
    pub at: DateTime<Utc>,
    /// Roles held by the people who approved so far. The caller keeps the requester out of
    /// them: an approval must come from someone else.
    pub approver_roles: &'a [String],
    /// A cidr argument is a range wider than `nginx.max_prefix_v4`/`max_prefix_v6`
    /// (`context.wide_range`); the caller knows the settings.
    pub wide_range: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
    /// Allowed once someone else holding one of `eligible` approves (then decide again with
    /// their roles in `approver_roles`: another approval may still be needed).
    NeedsApproval {
        eligible: Vec<String>,
    },
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Allow => write!(f, "allow"),
            Effect::Deny => write!(f, "deny"),
            Effect::NeedsApproval { eligible } => {
                write!(f, "needs approval from one of: {}", eligible.join(", "))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// One sentence for the requester: what the command needs and what they have.
    pub reason: String,
    /// Ids of the policies that decided, in file order: the permits that allowed it, the
    /// forbids that stand in the way, or (refused for want of a permit) the permits whose
    /// `@grants` make up the reason.
    pub policies: Vec<String>,
}

/// One role's on-call state, for `/oncall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCall {
    /// The role as roles.toml gives it: name, hours and who holds it.
    pub role: super::roles::Role,
    /// For people: `on call in business hours, Mon-Fri 09:00-18:00 Europe/Madrid`.
    pub hours_text: String,
    pub on_call_now: bool,
}

/// Everything `policies/` says about who may do what. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Policies {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) roles: Roles,
    pub(super) people: People,
    pub(super) rotations: Rotations,
    pub(super) chains: Chains,
    clock: Clock,
    engine: Engine,
    source: String,
}

/// The approval forbids among the policies `ids`.
fn approval_rules<'a>(engine: &'a Engine, ids: &BTreeSet<String>) -> Vec<&'a Rule> {
    engine
        .rules
        .iter()
        .filter(|r| ids.contains(&r.id) && matches!(r.kind, Kind::Approval { .. }))
        .collect()
}

impl Policies {
    /// Loads `roles.toml`, `runbot.cedarschema` and `runbot.cedar` from `policy.dir` (unset:
    /// `./policies` when it exists, else the built-in copy) and checks the policies against
    /// the schema generated with the roles and `commands`.
    pub fn load(settings: &Settings, commands: &Commands) -> anyhow::Result<Policies> {
        let dir = settings.policy.resolve_dir();
        Self::load_from(dir.as_deref(), &settings.parsed.policy_clock, commands)
    }

    /// Like [`Policies::load`] from a folder already resolved (None: the built-in copy), with
    /// the clock the settings give (`policy.timezone`, `policy.business_hours`).
    pub fn load_from(
        dir: Option<&Path>,
        clock: &Clock,
        commands: &Commands,
    ) -> anyhow::Result<Policies> {
        let clock = clock.clone();
        let read = |name: &str, embedded: &str| -> anyhow::Result<String> {
            match dir {
                Some(dir) => {
                    let path = dir.join(name);
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))
                }
                None => Ok(embedded.to_string()),
            }
        };
        // The on-call files are optional in a folder of one's own: a team adopts them when
        // it is ready. Errors name the file as the reader finds it.
        let optional = |name: &str, embedded: &str| -> anyhow::Result<(String, String)> {
            match dir {
                Some(dir) => {
                    let path = dir.join(name);
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                        Err(e) => {
                            return Err(e).with_context(|| format!("reading {}", path.display()))
                        }
                    };
                    Ok((path.display().to_string(), text))
                }
                None => Ok((format!("policies/{name}"), embedded.to_string())),
            }
        };
        let roles_text = read("roles.toml", super::EMBEDDED_ROLES)?;
        let schema_text = read("runbot.cedarschema", super::EMBEDDED_SCHEMA)?;
        let policy_text = read("runbot.cedar", super::EMBEDDED_POLICIES)?;
        let mut roles = Roles::parse(&roles_text).context("policies/roles.toml")?;
        let (people_file, people_text) = optional("people.toml", super::EMBEDDED_PEOPLE)?;
        let people = People::parse(&people_file, &people_text)?;
        let roles_file = match dir {
            Some(d) => d.join("roles.toml").display().to_string(),
            None => "policies/roles.toml".into(),
        };
        roles.resolve_people(&roles_file, &roles_text, &people)?;
        let (oncall_file, oncall_text) = optional("oncall.toml", super::EMBEDDED_ONCALL)?;
        let rotations = Rotations::parse(&oncall_file, &oncall_text, &roles, &people, clock.tz)?;
        let (chains_file, chains_text) = optional("escalation.toml", super::EMBEDDED_ESCALATION)?;
        let chains = Chains::parse(&chains_file, &chains_text, &roles, &people)?;
        let engine = Engine::load(&schema_text, &policy_text, &roles, commands)?;
        Ok(Policies {
            inner: Arc::new(Inner {
                roles,
                people,
                rotations,
                chains,
                clock,
                engine,
                source: dir.map_or_else(|| "built-in".into(), |d| d.display().to_string()),
            }),
        })
    }

    /// The runbot roles this identity holds by `roles.toml`, sorted.
    pub fn roles_of(&self, who: &Identity) -> Vec<String> {
        self.inner
            .roles
            .iter()
            .filter(|r| r.held_by(who))
            .map(|r| r.name.clone())
            .collect()
    }

    /// Whether any of these roles is on call at `at`.
    pub fn on_call(&self, roles: &[String], at: DateTime<Utc>) -> bool {
        roles.iter().any(|r| {
            self.inner
                .roles
                .get(r)
                .is_some_and(|role| self.inner.clock.covers(role.hours, at))
        })
    }

    /// Every role, sorted by name, and whether it is on call at `at`.
    pub fn oncall(&self, at: DateTime<Utc>) -> Vec<OnCall> {
        self.inner
            .roles
            .iter()
            .map(|r| OnCall {
                role: r.clone(),
                hours_text: self.hours_text(r.hours),
                on_call_now: self.inner.clock.covers(r.hours, at),
            })
            .collect()
    }

    fn hours_text(&self, h: crate::domain::hours::Hours) -> String {
        let c = &self.inner.clock;
        match h {
            crate::domain::hours::Hours::Always => "on call 24/7".into(),
            crate::domain::hours::Hours::Business => {
                format!("on call in business hours, {} {}", c.business, c.tz.name())
            }
            crate::domain::hours::Hours::Weekends => {
                format!(
                    "on call at weekends, {} {}",
                    c.business.weekend_days(),
                    c.tz.name()
                )
            }
        }
    }

    pub fn roles(&self) -> &Roles {
        &self.inner.roles
    }

    /// Everyone of `people.toml`.
    pub fn people(&self) -> &People {
        &self.inner.people
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The policies of `runbot.cedar`, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.inner.engine.rules
    }

    /// Where the files came from: a folder, or `built-in`.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Allow, deny, or needs approval, decided by the Cedar policies; the reason is built from
    /// their annotations.
    pub fn decide(&self, req: &PolicyRequest<'_>) -> Decision {
        let engine = &self.inner.engine;
        let name = &req.command.name;
        let known = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|r| self.inner.roles.get(r).is_some())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let roles = known(req.roles);
        let approvers = known(req.approver_roles);
        if !engine.has_action(name) {
            return Decision {
                effect: Effect::Deny,
                reason: format!("/{name} is not a command the loaded policies know; restart runbot after adding a command"),
                policies: vec![],
            };
        }
        let moment = self.inner.clock.moment(req.at);
        let principal = format!("{}:{}", req.who.platform, req.who.user_id);
        let on_call = self.on_call(&roles, req.at);
        let dry_run = matches!(req.args.get("dry_run"), Some(Value::Boolean(true)));
        let eval = |approver_roles: &[String], with_approvals: bool| {
            let situation = Situation {
                severity: req.severity.map_or("none", Severity::as_str),
                on_call,
                business_hours: moment.business_hours,
                weekend: moment.weekend,
                hour: moment.hour,
                dry_run,
                approver_roles,
                platform: &req.who.platform,
                wide_range: req.wide_range,
                args: req.args,
            };
            engine.evaluate(&principal, &roles, name, &situation, with_approvals)
        };
        let failed = |errors: Vec<String>| Decision {
            effect: Effect::Deny,
            reason: format!(
                "/{name} refused: a policy could not be evaluated ({}); fix {POLICY_FILE}",
                errors.join("; ")
            ),
            policies: vec![],
        };

        let full = eval(&approvers, true);
        if !full.errors.is_empty() {
            return failed(full.errors);
        }
        if full.allowed {
            return self.allowed(req, &roles, &approvers, &full.reasons, &eval);
        }
        let bare = eval(&approvers, false);
        if !bare.errors.is_empty() {
            return failed(bare.errors);
        }
        if bare.allowed {
            return self.needs_approval(req, &approvers, &full.reasons, &eval);
        }
        if !bare.reasons.is_empty() {
            let forbids: Vec<&Rule> = engine
                .rules
                .iter()
                .filter(|r| bare.reasons.contains(&r.id))
                .collect();
            let why: Vec<&str> = forbids
                .iter()
                .filter_map(|r| match &r.kind {
                    Kind::Forbid { reason } | Kind::Approval { reason, .. } => {
                        Some(reason.as_str())
                    }
                    Kind::Permit { .. } => None,
                })
                .collect();
            return Decision {
                effect: Effect::Deny,
                reason: format!("/{name} {}", why.join(", and ")),
                policies: forbids.iter().map(|r| r.id.clone()).collect(),
            };
        }
        self.needs_a_permit(req, &roles)
    }

    fn allowed(
        &self,
        req: &PolicyRequest<'_>,
        roles: &[String],
        approvers: &[String],
        reasons: &BTreeSet<String>,
        eval: &dyn Fn(&[String], bool) -> super::cedar::Answer,
    ) -> Decision {
        let permits: Vec<&Rule> = self
            .rules()
            .iter()
            .filter(|r| reasons.contains(&r.id))
            .collect();
        let grants: Vec<&str> = permits
            .iter()
            .filter_map(|r| match &r.kind {
                Kind::Permit { grants } => Some(grants.as_str()),
                _ => None,
            })
            .collect();
        let dry_run = matches!(req.args.get("dry_run"), Some(Value::Boolean(true)));
        let mut reason = format!(
            "/{} allowed{}: {}; you hold {}",
            req.command.name,
            if dry_run { " as a dry run" } else { "" },
            grants.join("; "),
            held(roles, None)
        );
        // Name the approvals only when they were needed.
        if !approvers.is_empty() && !eval(&[], true).allowed {
            reason.push_str(&format!(", approved by {}", join_and(approvers)));
        }
        Decision {
            effect: Effect::Allow,
            reason,
            policies: permits.iter().map(|r| r.id.clone()).collect(),
        }
    }

    fn needs_approval(
        &self,
        req: &PolicyRequest<'_>,
        approvers: &[String],
        blocking: &BTreeSet<String>,
        eval: &dyn Fn(&[String], bool) -> super::cedar::Answer,
    ) -> Decision {
        let engine = &self.inner.engine;
        let rules = approval_rules(engine, blocking);
        // Cedar says who can help: a role is eligible when adding it lifts a forbid.
        let eligible: Vec<String> = self
            .inner
            .roles
            .names()
            .filter(|r| !approvers.iter().any(|a| a == r))
            .filter(|r| {
                let mut more = approvers.to_vec();
                more.push(r.to_string());
                let a = eval(&more, true);
                a.errors.is_empty()
                    && (a.allowed || approval_rules(engine, &a.reasons).len() < rules.len())
            })
            .map(str::to_string)
            .collect();
        let why: Vec<&str> = rules
            .iter()
            .filter_map(|r| match &r.kind {
                Kind::Approval { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        let mut reason = format!("/{} {}", req.command.name, why.join(", and "));
        if !approvers.is_empty() {
            reason.push_str(&format!(" (approved so far by {})", join_and(approvers)));
        }
        let policies = rules.iter().map(|r| r.id.clone()).collect();
        if eligible.is_empty() {
            reason.push_str("; no role can approve it");
            return Decision {
                effect: Effect::Deny,
                reason,
                policies,
            };
        }
        Decision {
            effect: Effect::NeedsApproval { eligible },
            reason,
            policies,
        }
    }

    /// Refused because no permit matched: what the permits for this command need.
    fn needs_a_permit(&self, req: &PolicyRequest<'_>, roles: &[String]) -> Decision {
        let name = &req.command.name;
        let permits: Vec<&Rule> = self
            .rules()
            .iter()
            .filter(|r| matches!(r.kind, Kind::Permit { .. }) && r.covers.contains(name))
            .collect();
        if permits.is_empty() {
            return Decision {
                effect: Effect::Deny,
                reason: format!(
                    "/{name} is granted to no one in {POLICY_FILE}; you hold {}",
                    held(roles, None)
                ),
                policies: vec![],
            };
        }
        let grants: Vec<&str> = permits
            .iter()
            .filter_map(|r| match &r.kind {
                Kind::Permit { grants } => Some(grants.as_str()),
                _ => None,
            })
            .collect();
        let time = if permits.iter().any(|r| r.timed) {
            format!(" (now {})", self.inner.clock.describe(req.at))
        } else {
            String::new()
        };
        let hours = permits
            .iter()
            .any(|r| r.reads_on_call)
            .then_some(&self.inner.roles);
        Decision {
            effect: Effect::Deny,
            reason: format!(
                "/{name} needs {}{time}; you hold {}",
                join_or(&grants),
                held(roles, hours)
            ),
            policies: permits.iter().map(|r| r.id.clone()).collect(),
        }
    }
}

/// `developer`, `dba and developer`; with `roles`, each with its hours. None: a hint where to ask.
fn held(roles: &[String], hours: Option<&Roles>) -> String {
    if roles.is_empty() {
        return "no runbot role (ask to be added in policies/roles.toml)".into();
    }
    let Some(all) = hours else {
        return join_and(roles);
    };
    let text = |r: &String| {
        all.get(r)
            .map_or("", |role| role.hours.on_call_text())
            .to_string()
    };
    if let [only] = roles {
        return format!("{only}, {}", text(only));
    }
    let each: Vec<String> = roles.iter().map(|r| format!("{r} ({})", text(r))).collect();
    join_and(&each)
}

/// `a`, `a and b`, `a, b and c`.
fn join_and<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [rest @ .., last] => format!(
            "{} and {}",
            rest.iter()
                .map(|s| s.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
            last.as_ref()
        ),
    }
}

/// `a`, `a, or b`, `a, b, or c`: the grants are phrases, so each alternative stands apart.
fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{}, or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_sentences() {
        assert_eq!(join_and(&["a"]), "a");
        assert_eq!(join_and(&["a", "b", "c"]), "a, b and c");
        assert_eq!(join_or(&["a", "b"]), "a, or b");
        assert_eq!(join_or(&["a", "b", "c"]), "a, b, or c");
        assert_eq!(
            held(&[], None),
            "no runbot role (ask to be added in policies/roles.toml)"
        );
    }

    #[test]
    fn policies_can_be_shared_across_threads() {
        fn shared<T: Send + Sync + Clone>() {}
        shared::<Policies>();
    }

    #[test]
    fn the_shipped_files_load() {
        let commands = Commands::load(None).unwrap();
        let p =
            Policies::load_from(None, &Settings::default().parsed.policy_clock, &commands).unwrap();
        assert_eq!(p.source(), "built-in");
        assert!(p.rules().iter().any(|r| r.id == "sev1-second-approver"));
    }
}
