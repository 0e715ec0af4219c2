//! The invocation core: a person asks (a slash command or a button), a policy decides, the
//! audit trail records, then something runs.
//!
//! Platform adapters turn what they receive into a [`Request`] and give a [`Responder`] that
//! can edit their answer later; the core never sees a platform's types. Dispatch:
//! rate limit → validate → decide → audit → confirm or collect approval → execute → reply →
//! audit the outcome. Every refusal is audited and changes nothing else.

mod pending;
pub(crate) mod text;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

use crate::audit::{Audit, AuditEntry, Step};
use crate::commands::{parse_args, Args, CommandSpec, Commands, Risk, Value};
use crate::config::InteractionSettings;
use crate::domain::Severity;
use crate::executors::{self, Executors};
use crate::policy::incident::{incident_for, Basis, Incident, OpenGroup, Target, TARGET_LABELS};
use crate::policy::{Decision, Effect, Identity, Policies, PolicyRequest};
use crate::request::{
    Actor, Answer, ButtonId, ButtonStyle, Origin, RawValue, Reply, ReplyButton, Request, Responder,
    Verb,
};
use crate::runbook::Runbook;
use crate::store::{GroupView, Store};

use crate::domain::clock::Clock;
pub use pending::PendingKind;
use pending::{Approval, Pending};

/// Who a person is to the policy.
fn identity(actor: &Actor) -> Identity {
    Identity {
        platform: actor.platform.as_str().to_string(),
        user_id: actor.user_id.clone(),
        platform_roles: actor.platform_roles.clone(),
        roles: actor.roles.clone(),
    }
}

type Limiter = RateLimiter<
    String,
    governor::state::keyed::HashMapStateStore<String>,
    governor::clock::DefaultClock,
>;

pub struct Dispatcher {
    /// `escalation.verify_after`.
    verify_after: std::time::Duration,
    store: Store,
    audit: Audit,
    commands: Arc<Commands>,
    runbook: Arc<Runbook>,
    policies: Arc<Policies>,
    executors: Executors,
    settings: InteractionSettings,
    limiter: Limiter,
    /// Refusals by the rate limit not written yet, per person: see [`Dispatcher::rate_limited`].
    refused: std::sync::Mutex<HashMap<String, Refused>>,
    clock: Clock,
    /// Commands running now, so a shutdown can wait for them ([`Dispatcher::finish_runs`]).
    runs: tokio_util::task::TaskTracker,
    /// Cancelled when a shutdown's grace runs out: the executors still running are dropped and
    /// their runs record `interrupted`.
    interrupt: tokio_util::sync::CancellationToken,
}

/// A person's refusals by the rate limit since the first one in this window was written.
struct Refused {
    actor: Actor,
    opened: DateTime<Utc>,
    last: DateTime<Utc>,
    /// Refused after the first (which was written at once).
    count: u64,
    /// How many of them asked for each command (names as asked, clipped).
    commands: BTreeMap<String, u64>,
}

/// A window of refusals: the first is written at once, the rest as one row when it ends.
const REFUSED_WINDOW_SECS: i64 = 60;
/// People whose refusals are counted in memory at once; past this, counts are written early.
const REFUSED_KEPT: usize = 10_000;
/// How long interrupted runs get to record their outcome once the grace ran out.
const INTERRUPT_RECORDING: Duration = Duration::from_secs(5);
/// Command names counted one by one per person; the rest are counted together.
const REFUSED_NAMES: usize = 20;

/// One request on its way: what every audit row of it shares.
struct Flight {
    invocation_id: String,
    actor: Actor,
    command: String,
    args: Map<String, Json>,
    origin: Map<String, Json>,
}

impl Flight {
    fn new(actor: &Actor, command: &str, origin: &Origin) -> Flight {
        Flight {
            invocation_id: uuid::Uuid::new_v4().simple().to_string(),
            actor: actor.clone(),
            command: command.to_string(),
            args: Map::new(),
            origin: origin_json(origin),
        }
    }

    /// The flight of a validated request, for the rows of its run.
    fn of_ready(ready: &Ready, spec: &CommandSpec) -> Flight {
        Flight {
            invocation_id: ready.invocation_id.clone(),
            actor: ready.actor.clone(),
            command: spec.name.clone(),
            args: args_json(&ready.args),
            origin: origin_json(&ready.origin),
        }
    }

    fn entry(&self, step: Step) -> AuditEntry {
        AuditEntry::new(
            self.invocation_id.clone(),
            step,
            self.actor.platform,
            self.actor.user_id.clone(),
            self.actor.name.clone(),
            self.command.clone(),
        )
        .args(self.args.clone())
        .origin(self.origin.clone())
    }
}

fn origin_json(origin: &Origin) -> Map<String, Json> {
    let mut map = Map::new();
    if let Some(c) = &origin.channel_id {
        map.insert("channel_id".into(), json!(c));
    }
    if let Some(m) = &origin.message_id {
        map.insert("message_id".into(), json!(m));
    }
    if let Some(g) = origin.group_id {
        map.insert("group_id".into(), json!(g));
    }
    map
}

fn args_json(args: &Args) -> Map<String, Json> {
    args.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Text(t) => json!(t),
                Value::Integer(i) => json!(i),
                Value::Boolean(b) => json!(b),
            };
            (k.clone(), v)
        })
        .collect()
}

fn raw_json(raw: &[(String, RawValue)]) -> Map<String, Json> {
    raw.iter()
        .map(|(k, v)| {
            let v = match v {
                RawValue::Text(t) => json!(crate::domain::text::clip(t, 200)),
                RawValue::Integer(i) => json!(i),
                RawValue::Boolean(b) => json!(b),
            };
            (crate::domain::text::clip(k, 64), v)
        })
        .collect()
}

/// A validated request, ready to decide on and run; stored as JSON while it waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ready {
    pub invocation_id: String,
    pub actor: Actor,
    pub command: String,
    pub args: Args,
    pub origin: Origin,
    /// The alert group it acts on, if any.
    pub group_id: Option<i64>,
    pub severity: Option<Severity>,
    /// The group that set `severity`; absent in requests stored by older versions.
    #[serde(default)]
    pub incident: Option<Incident>,
}

impl Ready {
    /// What the executor gets to plan or run this request.
    fn ctx<'a>(
        &'a self,
        spec: &'a CommandSpec,
        group: Option<&'a GroupView>,
        now: DateTime<Utc>,
        progress: Option<Arc<dyn crate::request::Responder>>,
        approved_by: &'a [String],
    ) -> executors::Ctx<'a> {
        executors::Ctx {
            actor: &self.actor,
            spec,
            args: &self.args,
            group,
            now,
            invocation_id: &self.invocation_id,
            channel_id: self.origin.channel_id.as_deref(),
            progress,
            approved_by,
        }
    }

    /// Which group set the severity, when it is not simply the one the request came from.
    fn incident_note(&self) -> Option<String> {
        self.incident
            .as_ref()
            .filter(|i| i.basis != Basis::Origin)
            .map(Incident::sentence)
    }
}

/// `text`, and the note on its own line.
fn with_note(text: &str, note: Option<String>) -> String {
    match note {
        Some(n) => format!("{text}\n{n}"),
        None => text.to_string(),
    }
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        commands: Arc<Commands>,
        runbook: Arc<Runbook>,
        policies: Arc<Policies>,
        executors: Executors,
        settings: InteractionSettings,
        clock: Clock,
    ) -> Dispatcher {
        let per_minute = NonZeroU32::new(settings.per_user_per_minute.max(1)).unwrap();
        let burst = NonZeroU32::new(settings.per_user_burst.max(1)).unwrap();
        Dispatcher {
            audit: Audit::new(store.clone()),
            store,
            commands,
            runbook,
            policies,
            executors,
            limiter: RateLimiter::hashmap(Quota::per_minute(per_minute).allow_burst(burst)),
            refused: Default::default(),
            settings,
            clock,
            runs: Default::default(),
            interrupt: Default::default(),
            verify_after: std::time::Duration::from_secs(600),
        }
    }

    /// Handles one request: answers at once, and keeps working in the background when the
    /// request runs something, reporting through `responder`.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request,
        responder: Arc<dyn Responder>,
    ) -> Answer {
        let started = Instant::now();
        let answer = match request {
            Request::Command {
                actor,
                command,
                args,
                origin,
            } => {
                self.command(actor, command, args, origin, None, responder)
                    .await
            }
            Request::Button {
                actor,
                custom_id,
                origin,
            } => self.button(actor, custom_id, origin, responder).await,
        };
        metrics::histogram!(crate::telemetry::REQUEST_FIRST_ANSWER)
            .record(started.elapsed().as_secs_f64());
        answer
    }

    /// A request its platform could not even read (a typed line that does not parse): refused
    /// and audited as invalid, like one the core validates and refuses.
    pub async fn refuse_unreadable(
        &self,
        actor: Actor,
        command: &str,
        origin: Origin,
        reason: String,
    ) -> Answer {
        let flight = Flight::new(&actor, &crate::domain::text::clip(command, 64), &origin);
        if let Some(wait) = self.over_limit(&actor) {
            return self.rate_limited(&flight, wait).await;
        }
        self.refuse(&flight, Step::Invalid, reason, None).await
    }

    /// Appends to the audit trail; a trail that cannot be written stops the request, since
    /// nothing may run unrecorded.
    async fn record(&self, entry: AuditEntry) -> Result<(), Answer> {
        let step = entry.step;
        match self.audit.append(entry).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, step = step.as_str(), "audit append failed");
                Err(Answer::Message(text::refusal(
                    "runbot cannot write its audit trail right now, so it runs nothing. Try again in a minute; if it persists, check the database.",
                )))
            }
        }
    }

    /// Records a refusal and answers it to the requester only.
    async fn refuse(
        &self,
        flight: &Flight,
        step: Step,
        reason: String,
        detail: Option<Json>,
    ) -> Answer {
        let mut entry = flight.entry(step).reason(reason.clone());
        if let Some(d) = detail {
            entry = entry.detail(d);
        }
        if let Err(answer) = self.record(entry).await {
            return answer;
        }
        metrics::counter!(crate::telemetry::REQUESTS_REFUSED, "platform" => flight.actor.platform.as_str(), "reason" => step.as_str()).increment(1);
        Answer::Message(text::refusal(&reason))
    }

    fn over_limit(&self, actor: &Actor) -> Option<Duration> {
        self.limiter.check_key(&actor.key()).err().map(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }

    /// `group` is the origin's group when the caller has already read it (a card's button).
    async fn command(
        self: &Arc<Self>,
        actor: Actor,
        command: String,
        raw: Vec<(String, RawValue)>,
        origin: Origin,
        group: Option<GroupView>,
        responder: Arc<dyn Responder>,
    ) -> Answer {
        let mut flight = Flight::new(&actor, &crate::domain::text::clip(&command, 64), &origin);
        flight.args = raw_json(&raw);
        if let Some(wait) = self.over_limit(&actor) {
            return self.rate_limited(&flight, wait).await;
        }
        let Some(spec) = self.commands.get(&command) else {
            let reason = text::unknown_command(&command, &self.commands);
            return self.refuse(&flight, Step::Invalid, reason, None).await;
        };
        let args = match parse_args(spec, raw) {
            Ok(a) => a,
            Err(e) => {
                let reason = format!("/{}: {e}", spec.name);
                return self.refuse(&flight, Step::Invalid, reason, None).await;
            }
        };
        flight.args = args_json(&args);
        // Refusals that need no policy (an address that must never be blocked) come before
        // any prompt: nobody should confirm what will be refused anyway.
        if let Err(why) = self.executors.precheck(spec, &args).await {
            let reason = format!("/{}: {why}. Nothing was changed.", spec.name);
            return self.refuse(&flight, Step::Invalid, reason, None).await;
        }
        self.validated(flight, spec.clone(), args, origin, group, responder)
            .await
    }

    /// A request over the person's limit. The first in a window is written at once; the rest
    /// are counted and written as one row when the window ends (see
    /// [`Dispatcher::flush_rate_limited`]): someone flooding requests must not hold the audit
    /// trail's lock (on SQLite, the one webhooks need too) once per request.
    async fn rate_limited(&self, flight: &Flight, wait: Duration) -> Answer {
        let reason = format!(
            "You are sending requests faster than runbot takes them (at most {} a minute). Try again in {} s.",
            self.settings.per_user_per_minute,
            wait.as_secs().max(1)
        );
        let key = flight.actor.key();
        let now = (self.clock)();
        let (first, full) = {
            let mut refused = self.refused.lock().unwrap();
            let full = refused.len() >= REFUSED_KEPT && !refused.contains_key(&key);
            match refused.get_mut(&key) {
                Some(r) => {
                    r.count += 1;
                    r.last = now;
                    // A flood of made-up names is counted, not kept name by name.
                    let name = if r.commands.len() < REFUSED_NAMES
                        || r.commands.contains_key(&flight.command)
                    {
                        flight.command.clone()
                    } else {
                        "(others)".to_string()
                    };
                    *r.commands.entry(name).or_default() += 1;
                    (false, full)
                }
                None => {
                    refused.insert(
                        key,
                        Refused {
                            actor: flight.actor.clone(),
                            opened: now,
                            last: now,
                            count: 0,
                            commands: BTreeMap::new(),
                        },
                    );
                    (true, full)
                }
            }
        };
        if full {
            // Too many people at once to keep counting in memory: write what is counted now.
            self.flush_rate_limited(true).await;
        }
        if first {
            return self.refuse(flight, Step::RateLimited, reason, None).await;
        }
        metrics::counter!(crate::telemetry::REQUESTS_REFUSED, "platform" => flight.actor.platform.as_str(), "reason" => Step::RateLimited.as_str()).increment(1);
        Answer::Message(text::refusal(&reason))
    }

    /// Writes one `rate_limited` row per person whose window of refusals ended (all of them
    /// with `all`, at shutdown), with how many more were refused, when, and which commands;
    /// and forgets limiter state nobody needs any more. Run every few seconds.
    pub async fn flush_rate_limited(&self, all: bool) -> usize {
        let now = (self.clock)();
        let window = chrono::Duration::seconds(REFUSED_WINDOW_SECS);
        let ended: Vec<Refused> = {
            let mut refused = self.refused.lock().unwrap();
            let keys: Vec<String> = refused
                .iter()
                .filter(|(_, r)| all || now - r.opened >= window)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| refused.remove(k)).collect()
        };
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let mut written = 0;
        for r in ended.into_iter().filter(|r| r.count > 0) {
            let mut flight = Flight::new(&r.actor, "rate-limit", &Origin::default());
            flight.args = Map::new();
            let reason = format!(
                "{} more requests refused by the rate limit (at most {} a minute) between {} and {}",
                r.count,
                self.settings.per_user_per_minute,
                crate::domain::format_time(r.opened),
                crate::domain::format_time(r.last),
            );
            let entry = flight
                .entry(Step::RateLimited)
                .reason(reason)
                .detail(json!({
                    "repeated": r.count,
                    "first_at": crate::domain::format_time(r.opened),
                    "last_at": crate::domain::format_time(r.last),
                    "commands": r.commands,
                }));
            match self.audit.append(entry).await {
                Ok(_) => written += 1,
                Err(e) => {
                    tracing::error!(error = %e, refused = r.count, "could not write a rate-limit summary to the audit trail")
                }
            }
        }
        written
    }

    /// People the rate limiter keeps state for (pruned by [`Dispatcher::flush_rate_limited`]).
    pub fn limiter_len(&self) -> usize {
        self.limiter.len()
    }

    /// A card's button: the runbook action it stands for, run as that command.
    async fn card_action(
        self: &Arc<Self>,
        actor: Actor,
        group_id: i64,
        index: usize,
        mut origin: Origin,
        responder: Arc<dyn Responder>,
    ) -> Answer {
        origin.group_id = Some(group_id);
        let group = match self.store.group_view(group_id).await {
            Ok(g) => g,
            Err(e) => return self.store_failed(e),
        };
        let action = group
            .as_ref()
            .and_then(|g: &GroupView| g.runbook.as_deref())
            .and_then(|key| self.runbook.entry(key))
            .and_then(|(_, entry)| entry.actions.get(index).cloned());
        let Some(action) = action else {
            let flight = Flight::new(&actor, "button", &origin);
            let reason = format!(
                "This button no longer matches an action of alert group #{group_id} (the runbook changed, or the group is gone). Use a slash command instead."
            );
            return self.refuse(&flight, Step::Invalid, reason, None).await;
        };
        let raw = action.raw_args();
        self.command(actor, action.command, raw, origin, group, responder)
            .await
    }

    fn store_failed(&self, e: sqlx::Error) -> Answer {
        tracing::error!(error = %e, "store read failed during a request");
        Answer::Message(text::refusal(
            "runbot cannot read its database right now; nothing was done. Try again in a minute.",
        ))
    }

    /// Arguments are valid: find the group, decide, record, then prompt or run.
    async fn validated(
        self: &Arc<Self>,
        mut flight: Flight,
        spec: CommandSpec,
        args: Args,
        origin: Origin,
        group: Option<GroupView>,
        responder: Arc<dyn Responder>,
    ) -> Answer {
        let group_id = origin.group_id.or(match args.get("group") {
            Some(Value::Integer(g)) => Some(*g),
            _ => None,
        });
        let group = match (group, group_id) {
            (Some(g), Some(id)) if g.id == id => Some(g),
            (_, Some(id)) => match self.store.group_view(id).await {
                Ok(g) => g,
                Err(e) => return self.store_failed(e),
            },
            (_, None) => None,
        };
        if let Some(gid) = group_id {
            if group.is_none() {
                let reason =
                    format!("There is no alert group #{gid}. The number is in each card's footer.");
                return self.refuse(&flight, Step::Invalid, reason, None).await;
            }
            flight.origin.insert("group_id".into(), json!(gid));
        } else if spec.acts_on_group() {
            let reason = format!(
                "/{} needs an alert group: press the button on its card, or give group (the number in the card's footer).",
                spec.name
            );
            return self.refuse(&flight, Step::Invalid, reason, None).await;
        }
        // Decided under the incident it acts in, however it was asked (typed or a button).
        let incident = match self.incident(&spec, group.as_ref(), &args).await {
            Ok(i) => i,
            Err(e) => return self.store_failed(e),
        };
        let ready = Ready {
            invocation_id: flight.invocation_id.clone(),
            actor: flight.actor.clone(),
            command: spec.name.clone(),
            args,
            origin,
            group_id,
            severity: incident.as_ref().map(|i| i.severity),
            incident,
        };
        let decision = self.decide(&ready, &spec, &[]);
        let mut detail = decision_detail(&decision);
        if let Some(i) = &ready.incident {
            detail["incident"] = i.detail();
        }
        match &decision.effect {
            Effect::Deny => {
                let reason = with_note(&decision.reason, ready.incident_note());
                return self
                    .refuse(&flight, Step::Denied, reason, Some(detail))
                    .await;
            }
            Effect::Allow | Effect::NeedsApproval { .. } => {
                if let Err(a) = self
                    .record(flight.entry(Step::Requested).detail(detail))
                    .await
                {
                    return a;
                }
            }
        }
        let dry_run = matches!(ready.args.get("dry_run"), Some(Value::Boolean(true)));
        if dry_run {
            return self.dry_run(&flight, &spec, &ready, group).await;
        }
        if let Effect::NeedsApproval { eligible } = &decision.effect {
            return self
                .ask_approval(
                    &spec,
                    ready,
                    eligible.clone(),
                    decision.reason.clone(),
                    responder,
                )
                .await;
        }
        if spec.confirm || spec.risk == Risk::Destructive {
            return self.ask_confirmation(&spec, ready, responder).await;
        }
        let ephemeral = spec.risk == Risk::Read;
        self.spawn_run(spec, ready, responder, None);
        Answer::Deferred { ephemeral }
    }

    /// The incident a request acts in (see [`crate::policy::incident`]): `origin` is the group
    /// it came from, if any. A store that cannot be read refuses the request: the decision
    /// depends on it.
    async fn incident(
        &self,
        spec: &CommandSpec,
        origin: Option<&GroupView>,
        args: &Args,
    ) -> Result<Option<Incident>, sqlx::Error> {
        let target = Target::of(spec, args);
        let open: Vec<OpenGroup> = if target == Target::Group {
            Vec::new()
        } else {
            self.open_groups().await?
        };
        let origin = origin.map(OpenGroup::from_view);
        Ok(incident_for(origin.as_ref(), target, &open))
    }

    async fn open_groups(&self) -> Result<Vec<OpenGroup>, sqlx::Error> {
        Ok(OpenGroup::from_stored(
            self.store.open_group_targets(&TARGET_LABELS).await?,
        ))
    }

    fn decide(&self, ready: &Ready, spec: &CommandSpec, approver_roles: &[String]) -> Decision {
        let who = identity(&ready.actor);
        let roles = self.policies.roles_of(&who);
        self.policies.decide(&PolicyRequest {
            who: &who,
            roles: &roles,
            command: spec,
            args: &ready.args,
            severity: ready.severity,
            at: (self.clock)(),
            approver_roles,
            wide_range: crate::commands::wide_range(self.executors.guard(), spec, &ready.args),
        })
    }

    async fn dry_run(
        &self,
        flight: &Flight,
        spec: &CommandSpec,
        ready: &Ready,
        group: Option<GroupView>,
    ) -> Answer {
        let ctx = ready.ctx(spec, group.as_ref(), (self.clock)(), None, &[]);
        let plan = self.executors.plan(&ctx).await;
        let entry = flight.entry(Step::DryRun).detail(json!({ "plan": plan }));
        if let Err(a) = self.record(entry).await {
            return a;
        }
        let mut reply = text::dry_run(&text::invocation_line(spec, &ready.args), &plan);
        reply.text = with_note(&reply.text, ready.incident_note());
        Answer::Message(reply)
    }

    /// The group a request acts on, read again when it runs (it may have changed since the
    /// prompt).
    async fn group_for(&self, ready: &Ready) -> Result<Option<GroupView>, sqlx::Error> {
        match ready.group_id {
            Some(id) => self.store.group_view(id).await,
            None => Ok(None),
        }
    }

    async fn ask_confirmation(
        self: &Arc<Self>,
        spec: &CommandSpec,
        ready: Ready,
        responder: Arc<dyn Responder>,
    ) -> Answer {
        let timeout = Duration::from_secs(self.settings.confirm_timeout_secs);
        let pending = match self
            .open_pending(PendingKind::Confirm, &ready, Vec::new(), timeout)
            .await
        {
            Ok(p) => p,
            Err(e) => return self.store_failed(e),
        };
        let line = text::invocation_line(spec, &ready.args);
        let mut reply = text::confirm_prompt(
            &line,
            spec.risk == Risk::Destructive,
            timeout,
            buttons(
                &pending.id,
                &[(Verb::Confirm, spec.risk), (Verb::Cancel, spec.risk)],
            ),
        );
        reply.text = with_note(&reply.text, ready.incident_note());
        self.expire_later(pending.id.clone(), timeout, responder, line);
        Answer::Message(reply)
    }

    async fn ask_approval(
        self: &Arc<Self>,
        spec: &CommandSpec,
        ready: Ready,
        eligible: Vec<String>,
        why: String,
        responder: Arc<dyn Responder>,
    ) -> Answer {
        let timeout = Duration::from_secs(self.settings.approval_timeout_secs);
        let requester = ready.actor.name.clone();
        let pending = match self
            .open_pending(PendingKind::Approval, &ready, eligible.clone(), timeout)
            .await
        {
            Ok(p) => p,
            Err(e) => return self.store_failed(e),
        };
        let line = text::invocation_line(spec, &ready.args);
        let why = with_note(&why, ready.incident_note());
        let reply = text::approval_prompt(
            &requester,
            &line,
            ready.group_id,
            &why,
            &eligible,
            timeout,
            buttons(
                &pending.id,
                &[(Verb::Approve, spec.risk), (Verb::Reject, spec.risk)],
            ),
        );
        self.expire_later(pending.id.clone(), timeout, responder, line);
        Answer::Message(reply)
    }

    async fn open_pending(
        &self,
        kind: PendingKind,
        ready: &Ready,
        eligible: Vec<String>,
        timeout: Duration,
    ) -> Result<Pending, sqlx::Error> {
        let now = (self.clock)();
        let pending = Pending::new(kind, ready.clone(), eligible, now, timeout);
        self.store.insert_pending(&pending.to_row()).await?;
        Ok(pending)
    }

    /// When the prompt's time is up, marks it expired (unless someone answered), records that
    /// and says so on the prompt.
    fn expire_later(
        self: &Arc<Self>,
        id: String,
        timeout: Duration,
        responder: Arc<dyn Responder>,
        line: String,
    ) {
        let this = self.clone();
        // The deadline counts from now, not from when the task first runs.
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            match this.expire(&id, &line).await {
                Ok(Some(reply)) => {
                    if let Err(e) = responder.edit(reply).await {
                        tracing::warn!(error = %e, "could not mark a prompt expired in chat");
                    }
                }
                Ok(None) => {}
                // The prompt-sweeper expires it once the database answers again.
                Err(e) => {
                    crate::telemetry::worker_error("prompt-timer");
                    tracing::warn!(error = %e, "could not mark a prompt expired; the sweep tries again");
                }
            }
        });
    }

    /// Marks one overdue request expired; the text for its prompt if this call did it.
    async fn expire(&self, id: &str, line: &str) -> Result<Option<Reply>, sqlx::Error> {
        let now = (self.clock)();
        let Some(row) = self.store.pending(id).await? else {
            return Ok(None);
        };
        let pending = match Pending::from_row(&row) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, id, "unreadable pending request; it cannot expire");
                return Ok(None);
            }
        };
        if !self
            .store
            .claim_pending(id, "expired", "runbot", &crate::domain::format_time(now))
            .await?
        {
            return Ok(None);
        }
        let flight = pending.flight();
        let entry = flight.entry(Step::Expired).reason(format!(
            "nobody answered within {}",
            crate::domain::duration::span(pending.timeout())
        ));
        if self.record(entry).await.is_err() {
            tracing::error!(id, "a request expired, and its expiry could not be audited");
        }
        Ok(Some(text::expired(line, pending.kind, pending.timeout())))
    }

    /// The commands people may ask for (`commands/`).
    pub fn commands(&self) -> &Commands {
        &self.commands
    }

    /// What runs commands (the deploy recovery sweep uses it).
    pub fn executors(&self) -> &Executors {
        &self.executors
    }

    /// The policies it decides with (the console's on-call page shows their roles).
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Now, by the clock runbot decides its times by (on-call hours, rotations).
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Requests left waiting by a process that stopped: marked expired and recorded, so the
    /// trail says how each ended. (Their prompts cannot be edited any more.)
    pub async fn expire_overdue(&self) -> anyhow::Result<usize> {
        let now = crate::domain::format_time((self.clock)());
        let rows = self.store.overdue_pending(&now).await?;
        let mut n = 0;
        for row in rows {
            if self.expire(&row.id, "").await?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn button(
        self: &Arc<Self>,
        actor: Actor,
        custom_id: String,
        origin: Origin,
        responder: Arc<dyn Responder>,
    ) -> Answer {
        match ButtonId::parse(&custom_id) {
            Some(ButtonId::CardAction { group_id, index }) => {
                let flight = Flight::new(&actor, "button", &origin);
                if let Some(wait) = self.over_limit(&actor) {
                    return self.rate_limited(&flight, wait).await;
                }
                return self
                    .card_action(actor, group_id, index, origin, responder)
                    .await;
            }
            Some(ButtonId::Prompt { pending, verb }) => {
                return self
                    .answer_prompt(actor, &pending, verb, origin, responder)
                    .await;
            }
            Some(ButtonId::Command { command, args }) => {
                let flight = Flight::new(&actor, "button", &origin);
                if let Some(wait) = self.over_limit(&actor) {
                    return self.rate_limited(&flight, wait).await;
                }
                let raw = args
                    .into_iter()
                    .map(|(k, v)| (k, RawValue::Text(v)))
                    .collect();
                return self
                    .command(actor, command, raw, origin, None, responder)
                    .await;
            }
            None => {}
        }
        let flight = Flight::new(&actor, "button", &origin);
        let reason = "This button is not one runbot knows (perhaps from an older version). Use a slash command instead.".to_string();
        self.refuse(
            &flight,
            Step::Invalid,
            reason,
            Some(json!({ "custom_id": crate::domain::text::clip(&custom_id, 100) })),
        )
        .await
    }

    /// Confirm, Cancel, Approve or Reject on a prompt.
    async fn answer_prompt(
        self: &Arc<Self>,
        actor: Actor,
        id: &str,
        verb: Verb,
        origin: Origin,
        responder: Arc<dyn Responder>,
    ) -> Answer {
        let row = match self.store.pending(id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                let flight = Flight::new(&actor, "button", &origin);
                let reason = "This prompt is not known to runbot any more.".to_string();
                return self.refuse(&flight, Step::Invalid, reason, None).await;
            }
            Err(e) => return self.store_failed(e),
        };
        let pending = match Pending::from_row(&row) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, id, "unreadable pending request");
                return Answer::Message(text::refusal(
                    "This prompt cannot be read any more; run the command again.",
                ));
            }
        };
        // Rows of this step carry the original request, with the clicker as actor.
        let mut flight = pending.flight();
        flight.actor = actor.clone();
        let Some(spec) = self.commands.get(&pending.ready.command).cloned() else {
            let reason = format!("/{} is no longer a command here.", pending.ready.command);
            return self.refuse(&flight, Step::Invalid, reason, None).await;
        };
        let line = text::invocation_line(&spec, &pending.ready.args);
        if row.state != "pending" {
            let reason = format!(
                "This request was already {}{}.",
                row.state,
                row.resolved_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            );
            return self.refuse(&flight, Step::Invalid, reason, None).await;
        }
        let now = (self.clock)();
        if now >= pending.expires_at {
            return match self.expire(id, &line).await {
                Ok(Some(reply)) => Answer::Update(reply),
                Ok(None) => {
                    let reason = "This request has expired.".to_string();
                    self.refuse(&flight, Step::Invalid, reason, None).await
                }
                Err(e) => self.store_failed(e),
            };
        }
        if let Some(wait) = self.over_limit(&actor) {
            return self.rate_limited(&flight, wait).await;
        }
        match (pending.kind, verb) {
            (PendingKind::Confirm, Verb::Confirm | Verb::Cancel) => {
                if actor.key() != pending.ready.actor.key() {
                    let reason = format!(
                        "Only {} can confirm or cancel their own request.",
                        pending.ready.actor.name
                    );
                    return self.refuse(&flight, Step::Denied, reason, None).await;
                }
                let (state, step) = match verb {
                    Verb::Confirm => ("confirmed", Step::Confirmed),
                    _ => ("cancelled", Step::Cancelled),
                };
                match self.claim(id, state, &actor, now).await {
                    Ok(true) => {}
                    Ok(false) => return raced(),
                    Err(e) => return self.store_failed(e),
                }
                if let Err(a) = self.record(flight.entry(step)).await {
                    return a;
                }
                if step == Step::Cancelled {
                    return Answer::Update(text::cancelled(&line, &actor.name));
                }
                let running = text::running(&line, &format!("Confirmed by {}", actor.name));
                self.spawn_run(spec, pending.ready, responder, None);
                Answer::Update(running)
            }
            (PendingKind::Approval, Verb::Approve | Verb::Reject) => {
                self.answer_approval(
                    actor,
                    flight,
                    spec,
                    pending,
                    row.approvals,
                    verb,
                    line,
                    responder,
                    now,
                )
                .await
            }
            _ => {
                let reason = "This button does not belong to this prompt.".to_string();
                self.refuse(&flight, Step::Invalid, reason, None).await
            }
        }
    }

    async fn claim(
        &self,
        id: &str,
        state: &str,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        self.store
            .claim_pending(
                id,
                state,
                &format!("{} ({})", actor.name, actor.key()),
                &crate::domain::format_time(now),
            )
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn answer_approval(
        self: &Arc<Self>,
        actor: Actor,
        flight: Flight,
        spec: CommandSpec,
        pending: Pending,
        seen_approvals: String,
        verb: Verb,
        line: String,
        responder: Arc<dyn Responder>,
        now: DateTime<Utc>,
    ) -> Answer {
        let requester = &pending.ready.actor;
        if actor.key() == requester.key() {
            let reason = format!(
                "You cannot approve or reject your own request: it needs another person who holds {}.",
                text::or_list(&pending.eligible)
            );
            return self
                .refuse(
                    &flight,
                    Step::Denied,
                    reason,
                    Some(json!({ "self_approval": true })),
                )
                .await;
        }
        if pending.approvals.iter().any(|a| a.who == actor.key()) {
            let reason =
                "You already approved this request; it needs someone else as well.".to_string();
            return self.refuse(&flight, Step::Denied, reason, None).await;
        }
        let roles = self.policies.roles_of(&identity(&actor));
        let eligible: Vec<String> = roles
            .iter()
            .filter(|r| pending.eligible.contains(r))
            .cloned()
            .collect();
        if eligible.is_empty() {
            let reason = format!(
                "Only someone who holds {} can {} this request; you hold {}.",
                text::or_list(&pending.eligible),
                if verb == Verb::Approve {
                    "approve"
                } else {
                    "reject"
                },
                text::roles_held(&roles)
            );
            return self.refuse(&flight, Step::Denied, reason, None).await;
        }
        if verb == Verb::Reject {
            match self.claim(&pending.id, "rejected", &actor, now).await {
                Ok(true) => {}
                Ok(false) => return raced(),
                Err(e) => return self.store_failed(e),
            }
            if let Err(a) = self
                .record(
                    flight
                        .entry(Step::Rejected)
                        .detail(json!({ "roles": eligible })),
                )
                .await
            {
                return a;
            }
            return Answer::Update(text::rejected(&requester.name, &line, &actor.name));
        }
        let mut approvals = pending.approvals.clone();
        approvals.push(Approval {
            who: actor.key(),
            name: actor.name.clone(),
            roles: eligible.clone(),
        });
        let approver_roles: Vec<String> = approvals.iter().flat_map(|a| a.roles.clone()).collect();
        let decision = self.decide(&pending.ready, &spec, &approver_roles);
        if let Effect::Deny = decision.effect {
            // The rules changed under a waiting request (or the requester lost a role).
            let reason = format!("The request can no longer run: {}", decision.reason);
            // Still pending if this fails: a later click is denied again, or it expires.
            if let Err(e) = self.claim(&pending.id, "rejected", &actor, now).await {
                tracing::warn!(error = %e, id = %pending.id, "a request that can no longer run is still pending");
            }
            return self
                .refuse(
                    &flight,
                    Step::Denied,
                    reason,
                    Some(decision_detail(&decision)),
                )
                .await;
        }
        let detail = json!({ "roles": eligible, "decision": decision_detail(&decision) });
        if let Effect::NeedsApproval { eligible: still } = &decision.effect {
            let json_approvals = serde_json::to_string(&approvals).unwrap_or_default();
            match self
                .store
                .add_approval(
                    &pending.id,
                    &seen_approvals,
                    &json_approvals,
                    &crate::domain::format_time(now),
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return Answer::Message(text::refusal(
                        "Someone answered this request a moment ago; look again.",
                    ))
                }
                Err(e) => return self.store_failed(e),
            }
            if let Err(a) = self
                .record(flight.entry(Step::Approved).detail(detail))
                .await
            {
                return a;
            }
            return Answer::Update(text::approval_progress(
                &requester.name,
                &line,
                &approvals.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                still,
                buttons(
                    &pending.id,
                    &[(Verb::Approve, spec.risk), (Verb::Reject, spec.risk)],
                ),
            ));
        }
        match self.claim(&pending.id, "approved", &actor, now).await {
            Ok(true) => {}
            Ok(false) => return raced(),
            Err(e) => return self.store_failed(e),
        }
        if let Err(a) = self
            .record(flight.entry(Step::Approved).detail(detail))
            .await
        {
            return a;
        }
        let names: Vec<String> = approvals.iter().map(|a| a.name.clone()).collect();
        let running = text::running(
            &line,
            &format!(
                "Asked by {}, approved by {}",
                requester.name,
                names.join(" and ")
            ),
        );
        self.spawn_run(spec, pending.ready, responder, Some(approvals));
        Answer::Update(running)
    }

    /// Runs the executor in the background: started → succeeded or failed, then the result
    /// edits the answer.
    fn spawn_run(
        self: &Arc<Self>,
        spec: CommandSpec,
        ready: Ready,
        responder: Arc<dyn Responder>,
        approvals: Option<Vec<Approval>>,
    ) {
        let this = self.clone();
        self.runs.spawn(async move {
            use futures_util::FutureExt;
            // A panic inside an executor must not leave the request without an outcome: it is
            // recorded as failed, and the requester is told.
            let ran =
                std::panic::AssertUnwindSafe(this.run(&spec, &ready, approvals, responder.clone()))
                    .catch_unwind()
                    .await;
            let reply = match ran {
                Ok(reply) => reply,
                Err(panic) => this.panicked(&spec, &ready, panic).await,
            };
            if let Err(e) = responder.edit(reply).await {
                tracing::warn!(error = %e, command = %spec.name, "could not show a result in chat");
            }
        });
    }

    /// What a run that panicked leaves: a `failed` row and an answer saying so.
    async fn panicked(
        &self,
        spec: &CommandSpec,
        ready: &Ready,
        panic: Box<dyn std::any::Any + Send>,
    ) -> Reply {
        // A panic's text may hold values a secret could be among.
        let message =
            crate::domain::redact::redact(&crate::workers::panic_message(panic)).into_owned();
        tracing::error!(command = %spec.name, panic = %message, "a command panicked");
        let reason = "runbot hit an internal error while running it; what it had done so far is in its log. Check the state before trying again.";
        let detail = json!({ "panic": crate::domain::text::clip(&message, 300) });
        self.cut_short(spec, ready, Step::Failed, reason, detail)
            .await
    }

    /// What a run stopped by a shutdown leaves: an `interrupted` row and an answer saying so.
    async fn interrupted(&self, spec: &CommandSpec, ready: &Ready, began: Instant) -> Reply {
        tracing::warn!(command = %spec.name, invocation = %ready.invocation_id, "runbot is stopping: a running command was interrupted");
        let reason = "runbot stopped before this finished (shutdown.grace_secs ran out); what it had done so far is in its log. Check the state before trying again.";
        let detail = json!({ "duration_ms": began.elapsed().as_millis() as u64 });
        self.cut_short(spec, ready, Step::Interrupted, reason, detail)
            .await
    }

    /// A run that ended without its executor's answer (a panic, a shutdown): counted, audited
    /// as `step` with `reason`, and answered with the reason.
    async fn cut_short(
        &self,
        spec: &CommandSpec,
        ready: &Ready,
        step: Step,
        reason: &str,
        detail: serde_json::Value,
    ) -> Reply {
        let result = if step == Step::Interrupted {
            "interrupted"
        } else {
            "failed"
        };
        metrics::counter!(crate::telemetry::COMMANDS_RUN, "command" => spec.name.clone(), "result" => result).increment(1);
        let entry = Flight::of_ready(ready, spec)
            .entry(step)
            .reason(reason.to_string())
            .detail(detail);
        if self.record(entry).await.is_err() {
            tracing::error!(command = %spec.name, step = step.as_str(), "a run cut short could not be audited");
        }
        text::failed(&text::invocation_line(spec, &ready.args), reason)
    }

    /// At shutdown: waits until `deadline` for the commands running now to finish, then
    /// interrupts those still going (each records `interrupted`) and releases what their
    /// deploys held. Answers how many were interrupted.
    pub async fn finish_runs(&self, deadline: tokio::time::Instant) -> usize {
        self.runs.close();
        if tokio::time::timeout_at(deadline, self.runs.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let left = self.runs.len();
        self.interrupt.cancel();
        // A few database writes and chat edits each; bounded so a dead store cannot hold the exit.
        if tokio::time::timeout(INTERRUPT_RECORDING, self.runs.wait())
            .await
            .is_err()
        {
            tracing::error!(
                left,
                "interrupted commands could not record their outcome in time"
            );
        }
        match executors::docker::deploy::interrupt_own(&self.executors.deploys).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                deploys = n,
                "marked this runbot's running deploys interrupted"
            ),
            Err(e) => {
                tracing::error!(error = %e, "could not mark this runbot's deploys interrupted; the next runbot will")
            }
        }
        left
    }

    async fn run(
        &self,
        spec: &CommandSpec,
        ready: &Ready,
        approvals: Option<Vec<Approval>>,
        responder: Arc<dyn Responder>,
    ) -> Reply {
        let flight = Flight::of_ready(ready, spec);
        let mut started = flight.entry(Step::Started);
        if let Some(a) = &approvals {
            started = started
                .detail(json!({ "approved_by": a.iter().map(|a| &a.who).collect::<Vec<_>>() }));
        }
        if self.record(started).await.is_err() {
            return text::refusal("runbot cannot write its audit trail right now, so it did not run this. Try again in a minute.");
        }
        let began = Instant::now();
        // Fail closed: run without its group, a command could act on nothing or on the wrong
        // thing.
        let group = match self.group_for(ready).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, command = %spec.name, "store read failed before a run");
                let reason = format!(
                    "runbot cannot read alert group #{} from its database right now; nothing was run. Try again in a minute.",
                    ready.group_id.unwrap_or_default()
                );
                return self
                    .cut_short(spec, ready, Step::Failed, &reason, json!({}))
                    .await;
            }
        };
        let approved_by: Vec<String> = approvals.iter().flatten().map(|a| a.name.clone()).collect();
        let ctx = ready.ctx(
            spec,
            group.as_ref(),
            (self.clock)(),
            Some(responder),
            &approved_by,
        );
        let result = tokio::select! {
            biased;
            result = self.executors.run(&ctx) => result,
            // runbot is stopping and its grace ran out: the executor stops at its next await
            // (never an audit write), and the trail says so instead of ending without an outcome.
            () = self.interrupt.cancelled() => return self.interrupted(spec, ready, began).await,
        };
        let ms = began.elapsed().as_millis() as u64;
        metrics::counter!(crate::telemetry::COMMANDS_RUN, "command" => spec.name.clone(), "result" => if result.is_ok() { "ok" } else { "failed" }).increment(1);
        // What changed a group goes in its timeline; reads answer only the asker (their
        // answers may be ephemeral, and a thread of /status lines helps nobody).
        if let (Some(g), false) = (group.as_ref(), spec.risk == crate::commands::Risk::Read) {
            self.note_result(spec, ready, g.id, &result).await;
        }
        match result {
            Ok(done) => {
                let entry = flight
                    .entry(Step::Succeeded)
                    .detail(json!({ "duration_ms": ms, "summary": done.summary }));
                if self.record(entry).await.is_err() {
                    tracing::error!(command = %spec.name, "ran, but the outcome could not be audited");
                }
                if let (true, Some(g)) = (spec.verify, group.as_ref()) {
                    self.watch(spec, ready, g.id).await;
                }
                done.reply
            }
            Err(e) => {
                let entry = flight
                    .entry(Step::Failed)
                    .reason(e.reason.clone())
                    .detail(json!({ "duration_ms": ms }));
                if self.record(entry).await.is_err() {
                    tracing::error!(command = %spec.name, "failed, and the failure could not be audited");
                }
                e.reply.unwrap_or_else(|| {
                    text::failed(&text::invocation_line(spec, &ready.args), &e.reason)
                })
            }
        }
    }
}

impl Dispatcher {
    /// A command's result on a group, as a note on the group: platforms that keep a thread
    /// under each card show it there, so the thread is the incident's timeline.
    async fn note_result(
        &self,
        spec: &CommandSpec,
        ready: &Ready,
        group_id: i64,
        result: &Result<executors::Done, executors::Failure>,
    ) {
        let line = text::invocation_line(spec, &ready.args);
        let who = &ready.actor.name;
        let note = match result {
            Ok(done) => format!("✅ {who} ran {line}: {}", done.summary),
            Err(e) => format!("❌ {who} ran {line}: failed: {}", e.reason),
        };
        let note = crate::domain::text::clip(&note, 1000);
        let now = crate::domain::format_time((self.clock)());
        if let Err(e) = self.store.note_group(group_id, &note, &now).await {
            tracing::warn!(error = %e, group = group_id, "could not queue a note on the group's thread");
        }
    }

    /// `escalation.verify_after`: how long a runbook action gets to resolve its group.
    pub fn with_verify_after(mut self, d: std::time::Duration) -> Dispatcher {
        self.verify_after = d;
        self
    }

    /// Watches a runbook action that ran on a group: did the group resolve after it?
    async fn watch(&self, spec: &CommandSpec, ready: &Ready, group_id: i64) {
        let now = (self.clock)();
        let due = now + chrono::Duration::from_std(self.verify_after).unwrap_or_default();
        let line = text::invocation_line(spec, &ready.args);
        if let Err(e) = self
            .store
            .watch_action(
                group_id,
                &line,
                &ready.actor.name,
                &crate::domain::format_time(now),
                &crate::domain::format_time(due),
            )
            .await
        {
            tracing::error!(error = %e, group = group_id, "could not start watching a runbook action");
        }
    }
}

/// Someone else's click, or the expiry, got to the prompt between our read and our claim.
fn raced() -> Answer {
    Answer::Message(text::refusal(
        "This request was answered or expired a moment ago.",
    ))
}

fn decision_detail(d: &Decision) -> Json {
    let effect = match &d.effect {
        Effect::Allow => json!("allow"),
        Effect::Deny => json!("deny"),
        Effect::NeedsApproval { eligible } => json!({ "needs_approval": eligible }),
    };
    json!({ "effect": effect, "policies": d.policies })
}

fn buttons(id: &str, verbs: &[(Verb, Risk)]) -> Vec<ReplyButton> {
    verbs
        .iter()
        .map(|(verb, risk)| ReplyButton {
            id: ButtonId::Prompt {
                pending: id.to_string(),
                verb: *verb,
            }
            .to_string(),
            label: verb.label().to_string(),
            style: match verb {
                Verb::Confirm | Verb::Approve if *risk == Risk::Destructive => ButtonStyle::Danger,
                Verb::Confirm | Verb::Approve => ButtonStyle::Success,
                Verb::Cancel | Verb::Reject => ButtonStyle::Secondary,
            },
        })
        .collect()
}
