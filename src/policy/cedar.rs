//! Cedar: the schema (the shipped `runbot.cedarschema` plus the roles and commands it is
//! generated from), the policies of `runbot.cedar` checked against it, and evaluation.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;

use anyhow::{anyhow, bail};
use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema, SchemaFragment,
    ValidationMode, Validator,
};
use miette::Diagnostic;

use super::roles::Roles;
use crate::commands::{Args, Commands, OptionKind, Risk, Value};

pub const SCHEMA_FILE: &str = "policies/runbot.cedarschema";
pub const POLICY_FILE: &str = "policies/runbot.cedar";

const RISKS: [Risk; 3] = [Risk::Read, Risk::Write, Risk::Destructive];

/// What a policy is for, from its effect and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A permit; `grants` says whom it lets in.
    Permit { grants: String },
    /// A forbid a second person holding one of `roles` can lift.
    Approval { roles: Vec<String>, reason: String },
    /// A forbid nobody can lift.
    Forbid { reason: String },
}

/// One policy of `runbot.cedar`, as runbot explains it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub kind: Kind,
    /// The commands it can apply to, from its action scope.
    pub covers: BTreeSet<String>,
    /// Its condition reads the time (business hours, weekend, hour, on call).
    pub timed: bool,
    /// Its condition reads `context.on_call`.
    pub reads_on_call: bool,
    /// Every annotation but `@id`, as written, for `policy explain`.
    pub annotations: Vec<(String, String)>,
}

/// The context of one request, in Rust terms.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub severity: &'a str,
    pub on_call: bool,
    pub business_hours: bool,
    pub weekend: bool,
    pub hour: u32,
    pub dry_run: bool,
    pub approver_roles: &'a [String],
    pub platform: &'a str,
    /// A cidr argument is wider than the nginx settings allow without approval.
    pub wide_range: bool,
    /// The validated arguments, defaults included; `dry_run` among them is left out of
    /// `context.args` (it is `context.dry_run`).
    pub args: &'a Args,
}

/// What Cedar answered.
#[derive(Debug)]
pub struct Answer {
    pub allowed: bool,
    /// Ids of the policies that decided: satisfied permits when allowed, satisfied forbids when not.
    pub reasons: BTreeSet<String>,
    /// Evaluation errors; runbot refuses when there is any (a forbid that errs must not let a request through).
    pub errors: Vec<String>,
}

pub struct Engine {
    schema: Schema,
    all: PolicySet,
    /// `all` without the approval forbids: tells "needs approval" from "denied".
    without_approvals: PolicySet,
    /// In file order.
    pub rules: Vec<Rule>,
    actions: Entities,
    authorizer: Authorizer,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules.len())
            .finish()
    }
}

fn type_name(name: &str) -> EntityTypeName {
    EntityTypeName::from_str(name).expect("a valid type name")
}

pub fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(ty), EntityId::new(id))
}

/// The Cedar type of an option's validated value: what [`Value`] holds for that kind.
fn cedar_type(kind: OptionKind) -> &'static str {
    match kind {
        OptionKind::Integer => "Long",
        OptionKind::Boolean => "Bool",
        OptionKind::String
        | OptionKind::Ip
        | OptionKind::Cidr
        | OptionKind::Tag
        | OptionKind::Duration => "String",
    }
}

/// Every option name across `commands/` and its Cedar type. `context.args` is one record for
/// all commands, so a name must mean the same type everywhere.
fn arg_types(commands: &Commands) -> anyhow::Result<BTreeMap<&str, &'static str>> {
    // Name → (type, the first command that declares it), for the error.
    let mut seen: BTreeMap<&str, (&'static str, &str)> = BTreeMap::new();
    for c in commands.iter() {
        for o in &c.options {
            let ty = cedar_type(o.kind);
            match seen.get(o.name.as_str()) {
                Some((first_ty, first)) if *first_ty != ty => bail!(
                    "commands/{first}.toml and commands/{}.toml both have an option {:?}, as {first_ty} and {ty} in Cedar: \
                     context.args.{} can have only one type; rename one of them or give both the same type",
                    c.name,
                    o.name,
                    o.name
                ),
                Some(_) => {}
                None => {
                    seen.insert(&o.name, (ty, &c.name));
                }
            }
        }
    }
    Ok(seen.into_iter().map(|(n, (ty, _))| (n, ty)).collect())
}

/// The part of the schema that comes from `roles.toml` and `commands/`.
fn generated_schema(roles: &Roles, commands: &Commands) -> anyhow::Result<String> {
    let quoted = |names: Vec<&str>| {
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "entity Role enum [{}];\naction {};\n",
        quoted(roles.names().collect()),
        quoted(RISKS.iter().map(|r| r.as_str()).collect())
    );
    // Every option is optional: a request holds only its own command's arguments. Names are
    // quoted because options may contain `-`.
    let args: Vec<String> = arg_types(commands)?
        .into_iter()
        .map(|(name, ty)| format!("{name:?}?: {ty}"))
        .collect();
    s.push_str(&format!("type Args = {{ {} }};\n", args.join(", ")));
    for c in commands.iter() {
        s.push_str(&format!(
            "action {:?} in [{:?}] appliesTo {{ principal: [User], resource: [Stack], context: Situation }};\n",
            c.name,
            c.risk.as_str()
        ));
    }
    Ok(s)
}

/// A Cedar error with the line it points at in `src` and its help, on one line each.
fn render(e: &dyn Diagnostic, src: &str) -> String {
    let mut out = e.to_string();
    if let Some(labels) = e.labels().filter(|_| !src.is_empty()) {
        for l in labels {
            let offset = l.offset().min(src.len());
            let line = src[..offset].matches('\n').count() + 1;
            let text = src[offset..].lines().next().unwrap_or_default().trim();
            out.push_str(&format!("\n    at line {line}: {text}"));
        }
    }
    if let Some(help) = e.help() {
        out.push_str(&format!("\n    help: {help}"));
    }
    if let Some(related) = e.related() {
        for r in related {
            out.push_str(&format!("\n  {}", render(r, src)));
        }
    }
    out
}

fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

impl Engine {
    pub fn load(
        schema_src: &str,
        policy_src: &str,
        roles: &Roles,
        commands: &Commands,
    ) -> anyhow::Result<Engine> {
        let (shipped, _) = SchemaFragment::from_cedarschema_str(schema_src)
            .map_err(|e| anyhow!("{SCHEMA_FILE}: {}", render(&e, schema_src)))?;
        let generated_src = generated_schema(roles, commands)?;
        let (generated, _) = SchemaFragment::from_cedarschema_str(&generated_src).map_err(|e| {
            anyhow!(
                "the schema generated from roles.toml and commands/: {}",
                render(&e, &generated_src)
            )
        })?;
        // Its errors may point into either fragment, so no line is given.
        let schema = Schema::from_schema_fragments([shipped, generated]).map_err(|e| {
            anyhow!(
                "{SCHEMA_FILE} with the roles and commands added to it: {}\n    \
                 (it must declare `entity User in [Role]`, `entity Stack` and `type Situation`, which the generated actions use)",
                render(&e, "")
            )
        })?;
        let groups: BTreeSet<&str> = RISKS.iter().map(|r| r.as_str()).collect();
        for a in schema.actions() {
            let name = a.id().unescaped();
            if commands.get(name).is_none() && !groups.contains(name) {
                bail!("{SCHEMA_FILE} declares action {name:?}: actions come from commands/ (one per command file); remove it there");
            }
        }
        let actions = schema
            .action_entities()
            .map_err(|e| anyhow!("the schema's actions: {e}"))?;

        // A policies folder copied before a context field was added (e.g. `args`) would refuse
        // every request when deciding; say so now, with the fix.
        if let Some(c) = commands.iter().next() {
            let none = Args::new();
            let sample = Situation {
                severity: "none",
                on_call: false,
                business_hours: false,
                weekend: false,
                hour: 0,
                dry_run: false,
                approver_roles: &[],
                platform: "cli",
                wide_range: false,
                args: &none,
            };
            let context = context(&sample).map_err(|e| anyhow!(e))?;
            Request::new(
                uid("User", "load-check"),
                uid("Action", &c.name),
                uid("Stack", "default"),
                context,
                Some(&schema),
            )
            .map_err(|e| {
                anyhow!(
                    "{SCHEMA_FILE}: `type Situation` does not match the context runbot sends ({e}); \
                     it needs severity, on_call, business_hours, weekend, hour, dry_run, approver_roles, \
                     platform, wide_range and args: Args, as in the shipped file"
                )
            })?;
        }

        let parsed = PolicySet::from_str(policy_src)
            .map_err(|e| anyhow!("{POLICY_FILE}: {}", render(&e, policy_src)))?;
        if parsed.templates().next().is_some() {
            bail!("{POLICY_FILE}: templates (policies with ?principal or ?resource) are not supported");
        }
        // The parser numbers policies policy0, policy1, … in file order; the map it keeps them
        // in does not remember that order.
        let mut ordered: Vec<&cedar_policy::Policy> = parsed.policies().collect();
        ordered.sort_by_key(|p| {
            AsRef::<str>::as_ref(p.id())
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });

        let mut all = PolicySet::new();
        let mut without_approvals = PolicySet::new();
        let mut rules = Vec::new();
        let mut seen = HashSet::new();
        for (n, p) in ordered.into_iter().enumerate() {
            let text = p.to_cedar().unwrap_or_default();
            let head = text.lines().find(|l| {
                let l = l.trim_start();
                l.starts_with("permit") || l.starts_with("forbid")
            });
            let at = format!(
                "{POLICY_FILE}: policy {} ({})",
                n + 1,
                head.unwrap_or("").trim()
            );
            let id = p.annotation("id").ok_or_else(|| {
                anyhow!("{at} has no @id(\"...\"): give every policy a unique id, e.g. @id(\"deploy-devops-lead\")")
            })?;
            if id.is_empty() || !seen.insert(id.to_string()) {
                bail!("{at}: @id({id:?}) is empty or used twice: ids must be unique");
            }
            let at = format!("{POLICY_FILE}: policy {id:?}");
            check_names(p, &at, roles, commands, &groups)?;
            let kind = match p.effect() {
                cedar_policy::Effect::Permit => Kind::Permit {
                    grants: p.annotation("grants").filter(|g| !g.is_empty()).ok_or_else(|| {
                        anyhow!("{at} has no @grants(\"...\"): say whom it lets in, e.g. @grants(\"devops-lead\"); runbot shows it to people it refuses")
                    })?.to_string(),
                },
                cedar_policy::Effect::Forbid => {
                    let reason = p.annotation("reason").filter(|g| !g.is_empty()).ok_or_else(|| {
                        anyhow!("{at} has no @reason(\"...\"): say what it needs, e.g. @reason(\"needs a dba's approval\"); runbot shows it after the command name")
                    })?.to_string();
                    match p.annotation("approval") {
                        Some(list) => {
                            let roles_list: Vec<String> = list
                                .split(',')
                                .map(|r| r.trim().to_string())
                                .filter(|r| !r.is_empty())
                                .collect();
                            if roles_list.is_empty() {
                                bail!("{at}: @approval names no role: list the roles whose approval lifts it, e.g. @approval(\"devops-lead,cto\")");
                            }
                            for r in &roles_list {
                                if roles.get(r).is_none() {
                                    bail!("{at}: @approval names {r:?}, which is no role in policies/roles.toml{}", closest(r, roles.names()));
                                }
                            }
                            Kind::Approval { roles: roles_list, reason }
                        }
                        None => Kind::Forbid { reason },
                    }
                }
            };
            let covers = covered(p, commands, &actions);
            let reads = |field: &str| text.contains(&format!("context.{field}"));
            let reads_on_call = reads("on_call");
            let timed =
                reads_on_call || reads("business_hours") || reads("weekend") || reads("hour");
            let annotations = p
                .annotations()
                .filter(|(k, _)| *k != "id")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let renamed = p.new_id(PolicyId::new(id));
            all.add(renamed.clone()).map_err(|e| anyhow!("{at}: {e}"))?;
            if !matches!(kind, Kind::Approval { .. }) {
                without_approvals
                    .add(renamed)
                    .map_err(|e| anyhow!("{at}: {e}"))?;
            }
            rules.push(Rule {
                id: id.to_string(),
                kind,
                covers,
                timed,
                reads_on_call,
                annotations,
            });
        }

        let result = Validator::new(schema.clone()).validate(&all, ValidationMode::Strict);
        if !result.validation_passed() {
            let problems: Vec<String> = result
                .validation_errors()
                .map(|e| render(e, policy_src))
                .collect();
            bail!(
                "{POLICY_FILE} does not match {SCHEMA_FILE}:\n  {}",
                problems.join("\n  ")
            );
        }
        Ok(Engine {
            schema,
            all,
            without_approvals,
            rules,
            actions,
            authorizer: Authorizer::new(),
        })
    }

    /// Evaluates one request; `with_approvals = false` leaves out the approval forbids.
    pub fn evaluate(
        &self,
        principal: &str,
        roles: &[String],
        command: &str,
        s: &Situation<'_>,
        with_approvals: bool,
    ) -> Answer {
        match self.try_evaluate(principal, roles, command, s, with_approvals) {
            Ok(a) => a,
            Err(e) => Answer {
                allowed: false,
                reasons: BTreeSet::new(),
                errors: vec![e],
            },
        }
    }

    fn try_evaluate(
        &self,
        principal: &str,
        roles: &[String],
        command: &str,
        s: &Situation<'_>,
        with_approvals: bool,
    ) -> Result<Answer, String> {
        let user = uid("User", principal);
        let parents: HashSet<EntityUid> = roles.iter().map(|r| uid("Role", r)).collect();
        let entities = self
            .actions
            .clone()
            .add_entities(
                [Entity::new_no_attrs(user.clone(), parents)],
                Some(&self.schema),
            )
            .map_err(|e| format!("the requester's entity: {e}"))?;
        let context = context(s)?;
        let request = Request::new(
            user,
            uid("Action", command),
            uid("Stack", "default"),
            context,
            Some(&self.schema),
        )
        .map_err(|e| format!("the request does not match the schema: {e}"))?;
        let set = if with_approvals {
            &self.all
        } else {
            &self.without_approvals
        };
        let response = self.authorizer.is_authorized(&request, set, &entities);
        Ok(Answer {
            allowed: response.decision() == Decision::Allow,
            reasons: response
                .diagnostics()
                .reason()
                .map(|id| id.to_string())
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        })
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    pub fn has_action(&self, command: &str) -> bool {
        self.actions.get(&uid("Action", command)).is_some()
    }
}

/// The request's context, as `type Situation` in the schema declares it.
fn context(s: &Situation<'_>) -> Result<Context, String> {
    let role_set = s
        .approver_roles
        .iter()
        .map(|r| RestrictedExpression::new_entity_uid(uid("Role", r)));
    let args = s
        .args
        .iter()
        .filter(|(name, _)| *name != "dry_run")
        .map(|(name, v)| {
            let v = match v {
                Value::Text(t) => RestrictedExpression::new_string(t.clone()),
                Value::Integer(i) => RestrictedExpression::new_long(*i),
                Value::Boolean(b) => RestrictedExpression::new_bool(*b),
            };
            (name.clone(), v)
        });
    let args = RestrictedExpression::new_record(args)
        .map_err(|e| format!("the request's arguments: {e}"))?;
    Context::from_pairs([
        (
            "severity".to_string(),
            RestrictedExpression::new_string(s.severity.to_string()),
        ),
        (
            "on_call".to_string(),
            RestrictedExpression::new_bool(s.on_call),
        ),
        (
            "business_hours".to_string(),
            RestrictedExpression::new_bool(s.business_hours),
        ),
        (
            "weekend".to_string(),
            RestrictedExpression::new_bool(s.weekend),
        ),
        (
            "hour".to_string(),
            RestrictedExpression::new_long(i64::from(s.hour)),
        ),
        (
            "dry_run".to_string(),
            RestrictedExpression::new_bool(s.dry_run),
        ),
        (
            "approver_roles".to_string(),
            RestrictedExpression::new_set(role_set),
        ),
        (
            "platform".to_string(),
            RestrictedExpression::new_string(s.platform.to_string()),
        ),
        (
            "wide_range".to_string(),
            RestrictedExpression::new_bool(s.wide_range),
        ),
        ("args".to_string(), args),
    ])
    .map_err(|e| format!("the request's context: {e}"))
}

/// Refuses a policy that names a role or action that does not exist, with the name at fault
/// and the closest known one. The validator would refuse it too, less plainly.
fn check_names(
    p: &cedar_policy::Policy,
    at: &str,
    roles: &Roles,
    commands: &Commands,
    groups: &BTreeSet<&str>,
) -> anyhow::Result<()> {
    let mut named = p.entity_literals();
    match p.action_constraint() {
        ActionConstraint::Any => {}
        ActionConstraint::Eq(a) => named.push(a),
        ActionConstraint::In(list) => named.extend(list),
    }
    for e in named {
        let id = e.id().unescaped();
        match e.type_name().to_string().as_str() {
            "Action" if commands.get(id).is_none() && !groups.contains(id) => {
                let known = commands
                    .iter()
                    .map(|c| c.name.as_str())
                    .chain(groups.iter().copied());
                bail!(
                    "{at} names Action::{id:?}, which is no command in commands/ nor a risk group (read, write, destructive){}",
                    closest(id, known)
                );
            }
            "Role" if roles.get(id).is_none() => {
                bail!(
                    "{at} names Role::{id:?}, which is no role in policies/roles.toml{}; known: {}",
                    closest(id, roles.names()),
                    roles.names().collect::<Vec<_>>().join(", ")
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// The commands a policy's action scope can match.
fn covered(p: &cedar_policy::Policy, commands: &Commands, actions: &Entities) -> BTreeSet<String> {
    let scope: Option<Vec<EntityUid>> = match p.action_constraint() {
        ActionConstraint::Any => None,
        ActionConstraint::Eq(a) => Some(vec![a]),
        ActionConstraint::In(list) => Some(list),
    };
    commands
        .iter()
        .filter(|c| {
            let me = uid("Action", &c.name);
            match &scope {
                None => true,
                Some(list) => list
                    .iter()
                    .any(|a| *a == me || actions.is_ancestor_of(a, &me)),
            }
        })
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_typed_from_the_option_kinds_of_every_command() {
        let commands = Commands::load(None).unwrap();
        let types = arg_types(&commands).unwrap();
        assert_eq!(types["backup"], "String");
        assert_eq!(types["tag"], "String");
        assert_eq!(types["address"], "String");
        assert_eq!(types["duration"], "String");
        assert_eq!(types["replicas"], "Long");
        assert_eq!(types["tail"], "Long");
        assert!(!types.contains_key("dry_run"), "dry_run is context.dry_run");
        let roles = Roles::parse(crate::policy::EMBEDDED_ROLES).unwrap();
        let schema = generated_schema(&roles, &commands).unwrap();
        assert!(
            schema.contains(
                "type Args = { \"action\"?: String, \"address\"?: String, \"backup\"?: String, "
            ),
            "{schema}"
        );
    }
}
