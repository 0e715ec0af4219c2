//! `/deploy tag`, `/rollback [tag] [backup]` and `/deploys`: the runbook's deploy pipeline.
//!
//! lock → image → backup → migrate → recreate → health → smoke, each step shown live by editing
//! the request's message. A failure after the containers changed rolls them back to the images
//! they ran before. The lock and the history are rows in the store (shared by replicas); a
//! running deploy renews its heartbeat, so one whose runbot was killed is found and marked
//! interrupted (see [`recover`]). For its whole run a deploy also holds the stack's lease
//! (see [`crate::executors::lease`]), which `/restart`, `/scale` and `/restore` wait for, and the
//! database's while it backs up or restores.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audit::Audit;
use crate::commands::DeployOp;
use crate::config::{DeploySettings, HttpCheck};
use crate::domain::clock::Clock;
use crate::domain::duration;
use crate::domain::text::plural;
use crate::domain::{format_time, parse_stored_time};
use crate::executors::database::engine::AppDatabase;
use crate::executors::docker::engine::{
    is_set_aside, tag_of, with_tag, Container, Docker, ImageCheck,
};
use crate::executors::format::table;
use crate::executors::lease::{self, Lease, Locks};
use crate::executors::{read_only_plan, reply, Ctx, Done, ExecError, Executor, Failure};
use crate::request::Reply;
use crate::store::{DeployRow, Lock, NewDeploy, Store};

/// `/deploy`, `/rollback` and `/deploys`, and the recovery of deploys a runbot left running.
#[derive(Clone)]
pub struct Deploys {
    /// None when `docker.project` is not set.
    pub docker: Option<Docker>,
    /// For the backup and restore steps; None when `app_database.url` is not set.
    pub app_db: Option<AppDatabase>,
    pub deploy: DeploySettings,
    pub store: Store,
    pub audit: Audit,
    /// For the health checks and smoke tests.
    pub http: reqwest::Client,
    /// This process, as the owner of the deploys it runs (random per start).
    pub owner: String,
    /// The dispatcher's clock (tests drive it), for the times runbot itself decides.
    pub clock: Clock,
    pub locks: Locks,
}

impl Executor for Deploys {
    type Op = DeployOp;

    async fn plan(&self, op: DeployOp, ctx: &Ctx<'_>) -> String {
        match op {
            DeployOp::Run => plan(self, ctx, false).await,
            DeployOp::Rollback => plan(self, ctx, true).await,
            DeployOp::History => read_only_plan(ctx),
        }
    }

    async fn run(&self, op: DeployOp, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        match op {
            DeployOp::Run => deploy(self, ctx).await,
            DeployOp::Rollback => rollback(self, ctx).await,
            DeployOp::History => Ok(history(self, ctx).await?),
        }
    }
}

impl Deploys {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    fn docker(&self) -> Result<&Docker, ExecError> {
        super::configured(&self.docker)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deploy,
    Rollback,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
struct Step {
    name: &'static str,
    state: State,
    detail: String,
    ms: Option<u64>,
    #[serde(skip)]
    began: Option<Instant>,
}

/// What the message shows and the store keeps, shared with the heartbeat task.
struct Board {
    title: String,
    steps: Vec<Step>,
    began: Instant,
    /// The last line, once finished.
    outcome: Option<String>,
}

impl Board {
    fn render(&self) -> Reply {
        let mut text = format!(
            "{} ({})\n",
            self.title,
            duration::short(self.began.elapsed())
        );
        for s in &self.steps {
            let icon = match s.state {
                State::Waiting => "▫️",
                State::Running => "⏳",
                State::Done => "✅",
                State::Failed => "❌",
                State::Skipped => "⏭️",
            };
            let took = match (s.state, s.ms, s.began) {
                (State::Running, _, Some(b)) => format!(" · {}…", secs(b.elapsed())),
                (_, Some(ms), _) => format!(" · {}", secs(Duration::from_millis(ms))),
                _ => String::new(),
            };
            let detail = if s.detail.is_empty() {
                String::new()
            } else {
                format!(" — {}", s.detail)
            };
            let _ = writeln!(text, "{icon} **{}**{took}{detail}", s.name);
        }
        if let Some(o) = &self.outcome {
            text.push_str(o);
        }
        reply(crate::domain::text::clip(&text, 1990), false)
    }

    fn json(&self) -> String {
        serde_json::to_string(&self.steps).unwrap_or_else(|_| "[]".into())
    }
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        duration::short(d)
    }
}

/// One pipeline run: its row, its board, and the task that keeps both fresh.
struct Run<'a> {
    ex: &'a Deploys,
    docker: &'a Docker,
    ctx: &'a Ctx<'a>,
    id: i64,
    board: Arc<Mutex<Board>>,
    /// Set when another runbot marked this run interrupted (our heartbeat stopped reaching
    /// the store): the lock is no longer ours, so no further step may start.
    lost: Arc<AtomicBool>,
    /// The same for the stack's lease, once taken.
    stack_lost: std::sync::OnceLock<Arc<AtomicBool>>,
    /// "deploy #3 of v2 by Dana": who holds the locks this run takes.
    holder: String,
    beat: tokio::task::JoinHandle<()>,
}

impl Drop for Run<'_> {
    /// Also when the pipeline panics: a heartbeat left running would hold the lock forever.
    fn drop(&mut self) {
        self.beat.abort();
    }
}

/// How a step ended badly: what to say, and whether the stack changed.
struct StepError(String);

impl<'a> Run<'a> {
    fn set(&self, name: &str, state: State, detail: impl Into<String>) {
        let mut b = self.board.lock().expect("board lock");
        if let Some(s) = b.steps.iter_mut().find(|s| s.name == name) {
            match state {
                State::Running => s.began = Some(Instant::now()),
                State::Done | State::Failed | State::Skipped => {
                    s.ms = s.began.map(|t| t.elapsed().as_millis() as u64);
                }
                State::Waiting => {}
            }
            s.state = state;
            s.detail = detail.into();
        }
    }

    fn add_step(&self, name: &'static str) {
        self.board.lock().expect("board lock").steps.push(Step {
            name,
            state: State::Waiting,
            detail: String::new(),
            ms: None,
            began: None,
        });
    }

    /// Shows the board now (each step change), besides the heartbeat's periodic refresh, and
    /// saves the steps, so a runbot that finds this deploy interrupted knows where it stopped.
    async fn show(&self) {
        let (r, steps) = {
            let b = self.board.lock().expect("board lock");
            (b.render(), b.json())
        };
        match self
            .ex
            .store
            .deploy_progress(self.id, &self.ex.owner, &steps)
            .await
        {
            Ok(true) => {}
            Ok(false) => self.lost.store(true, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(error = %e, deploy = self.id, "could not save the deploy's steps")
            }
        }
        if let Some(p) = &self.ctx.progress {
            if let Err(e) = p.edit(r).await {
                tracing::debug!(error = %e, "could not show deploy progress");
            }
        }
    }

    fn check_lock(&self) -> Result<(), StepError> {
        let stack_lost = self
            .stack_lost
            .get()
            .is_some_and(|l| l.load(Ordering::SeqCst));
        if self.lost.load(Ordering::SeqCst) || stack_lost {
            return Err(StepError(
                "this runbot lost the deploy lock (its heartbeat did not reach the database, so another runbot took the deploy for interrupted and freed its locks); it stopped here".into(),
            ));
        }
        Ok(())
    }

    async fn step<T>(
        &self,
        name: &'static str,
        running: &str,
        work: impl std::future::Future<Output = Result<(T, String), StepError>>,
    ) -> Result<T, StepError> {
        // Going back to what ran before is always allowed: it is what a lost lock calls for.
        if name != "rollback" {
            self.check_lock()?;
        }
        self.set(name, State::Running, running);
        self.show().await;
        let r = work.await;
        match &r {
            Ok((_, detail)) => self.set(name, State::Done, detail.clone()),
            Err(StepError(why)) => self.set(name, State::Failed, why.clone()),
        }
        self.show().await;
        r.map(|(t, _)| t)
    }

    fn skip(&self, name: &str, why: &str) {
        self.set(name, State::Skipped, why);
    }

    /// Records the outcome (which releases the lock), stops the heartbeat, and gives the final
    /// view of the board.
    async fn finish(self, state: &str, failed_step: Option<&str>, error: Option<&str>) -> Reply {
        self.beat.abort();
        let steps = self.board.lock().expect("board lock").json();
        match self
            .ex
            .store
            .finish_deploy(self.id, &self.ex.owner, state, failed_step, error, &steps)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                deploy = self.id,
                "the deploy was marked interrupted by another runbot before it finished"
            ),
            Err(e) => {
                tracing::error!(error = %e, deploy = self.id, "could not record the deploy's outcome; its lock is released when its heartbeat goes stale")
            }
        }
        let view = self.board.lock().expect("board lock").render();
        view
    }
}

/// A replica as it ran before the deploy touched it.
#[derive(Debug, Clone)]
struct Before {
    container: Container,
    /// Its image reference, to go back to.
    image: String,
    /// Set once it was replaced: the new container's id.
    replaced_by: Option<String>,
}

fn failure(reason: impl Into<String>) -> Failure {
    Failure {
        reason: reason.into(),
        reply: None,
    }
}

/// The services a deploy changes and their containers, in `deploy.services` order.
async fn service_containers(
    ex: &Deploys,
    docker: &Docker,
) -> Result<Vec<(String, Vec<Container>)>, Failure> {
    if ex.deploy.services.is_empty() {
        return Err(failure(
            "runbot does not know which services run your image: set deploy.services (e.g. [\"backend\", \"worker\", \"beat\"]) in runbot.toml. Nothing was changed.",
        ));
    }
    let all = docker
        .containers()
        .await
        .map_err(|e| failure(ExecError::from(e).0))?;
    let mut out = Vec::new();
    for s in &ex.deploy.services {
        let cs: Vec<Container> = all
            .iter()
            .filter(|c| &c.service == s && !is_set_aside(c))
            .cloned()
            .collect();
        if cs.is_empty() {
            let known: std::collections::BTreeSet<&str> =
                all.iter().map(|c| c.service.as_str()).collect();
            return Err(failure(format!(
                "deploy.services names {s:?}, but project {} has no such service (known: {}). Nothing was changed.",
                docker.project(),
                known.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        out.push((s.clone(), cs));
    }
    Ok(out)
}

/// "v1", or "backend v1, worker v0.9" when the services differ.
fn running_versions(services: &[(String, Vec<Container>)]) -> String {
    let tags: Vec<(String, String)> = services
        .iter()
        .map(|(s, cs)| {
            let mut t: Vec<String> = cs.iter().map(|c| tag_of(&c.image)).collect();
            t.sort();
            t.dedup();
            (s.clone(), t.join("+"))
        })
        .collect();
    let first = tags.first().map(|(_, t)| t.clone()).unwrap_or_default();
    if tags.iter().all(|(_, t)| *t == first) {
        first
    } else {
        tags.iter()
            .map(|(s, t)| format!("{s} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `/deploy tag`.
async fn deploy(ex: &Deploys, ctx: &Ctx<'_>) -> Result<Done, Failure> {
    let tag = ctx.text("tag").unwrap_or_default().to_string();
    pipeline(ex, ctx, Kind::Deploy, tag, None).await
}

/// `/rollback [tag] [backup]`: to the named tag, or to the version before the one running.
async fn rollback(ex: &Deploys, ctx: &Ctx<'_>) -> Result<Done, Failure> {
    let backup = ctx.text("backup").map(str::to_string);
    let tag = match ctx.text("tag") {
        Some(t) => t.to_string(),
        None => previous_version(ex).await?,
    };
    pipeline(ex, ctx, Kind::Rollback, tag, backup).await
}

/// The version before the one running: the newest successful deploy of another tag.
async fn previous_version(ex: &Deploys) -> Result<String, Failure> {
    let docker = ex.docker().map_err(Failure::from)?;
    let services = service_containers(ex, docker).await?;
    let running = running_versions(&services);
    let history = ex
        .store
        .recent_deploys(docker.project().as_str(), 200)
        .await
        .map_err(|e| failure(format!("the deploy history cannot be read ({e})")))?;
    // The version the running one was deployed over: only deploys count, so a second
    // /rollback does not go "back" to the version the first one left.
    history
        .iter()
        .find(|d| d.kind == "deploy" && d.state == "succeeded" && d.tag == running)
        .and_then(|d| d.from_tag.clone())
        .filter(|t| is_single_tag(t) && *t != running)
        .ok_or_else(|| {
            failure(format!(
                "runbot has no record of what ran before {running} (no successful /deploy of it); name the version: /rollback tag:v1.2.3. Nothing was changed."
            ))
        })
}

/// A tag as `running_versions` gives it for one version, not "v1+v2" or "backend v1, …".
fn is_single_tag(t: &str) -> bool {
    !t.is_empty() && !t.contains([' ', '+', ','])
}

async fn pipeline(
    ex: &Deploys,
    ctx: &Ctx<'_>,
    kind: Kind,
    tag: String,
    restore: Option<String>,
) -> Result<Done, Failure> {
    let docker = ex.docker().map_err(Failure::from)?;
    if kind == Kind::Deploy && ex.deploy.backup && !backups_configured(ex) {
        return Err(failure(
            "deploy.backup is on, but runbot does not know the application database: set app_database.url (or deploy.backup = false to deploy without a backup). Nothing was changed.",
        ));
    }
    if restore.is_some() && !backups_configured(ex) {
        return Err(failure(
            "restoring a backup needs app_database.url. Nothing was changed.",
        ));
    }
    let services = service_containers(ex, docker).await?;
    let from = running_versions(&services);
    let project = docker.project().as_str().to_string();
    let lock = ex
        .store
        .begin_deploy(&NewDeploy {
            project: &project,
            kind: kind.as_str(),
            tag: &tag,
            from_tag: Some(&from),
            actor: &ctx.actor.name,
            invocation_id: ctx.invocation_id,
            platform: ctx.actor.platform.as_str(),
            channel_id: ctx.channel_id,
            owner: &ex.owner,
        })
        .await
        .map_err(|e| {
            failure(format!(
                "the deploy lock cannot be taken: the database answered {e}. Nothing was changed."
            ))
        })?;
    let id = match lock {
        Lock::Taken(id) => id,
        Lock::HeldBy(d) => {
            // Both times by the database's clock: the holder may run on another host.
            let now = ex.store.database_now().await.ok();
            let since = parse_stored_time(&d.started_at)
                .zip(now)
                .and_then(|(t, now)| (now - t).to_std().ok())
                .map(duration::short)
                .unwrap_or_else(|| "a moment".into());
            return Err(failure(format!(
                "a {} of {} by {} is running (started {since} ago, deploy #{}): one at a time per stack. Nothing was changed; watch it with /deploys.",
                d.kind, d.tag, d.actor, d.id
            )));
        }
    };
    let verb = match kind {
        Kind::Deploy => "🚀 Deploy",
        Kind::Rollback => "↩️ Rollback",
    };
    let mut names = vec!["lock", "image"];
    match kind {
        Kind::Deploy => names.extend(["backup", "migrate"]),
        Kind::Rollback if restore.is_some() => names.push("restore"),
        Kind::Rollback => {}
    }
    names.extend(["recreate", "health", "smoke"]);
    let board = Arc::new(Mutex::new(Board {
        title: format!(
            "{verb} **{tag}** (from {from}) by **{}** · #{id}",
            ctx.actor.name
        ),
        steps: names
            .into_iter()
            .map(|name| Step {
                name,
                state: State::Waiting,
                detail: String::new(),
                ms: None,
                began: None,
            })
            .collect(),
        began: Instant::now(),
        outcome: None,
    }));
    let lost = Arc::new(AtomicBool::new(false));
    let beat = tokio::spawn(heartbeat(
        ex.clone(),
        id,
        board.clone(),
        lost.clone(),
        ctx.progress.clone(),
    ));
    let holder = match kind {
        Kind::Deploy => format!("deploy #{id} of {tag} by {}", ctx.actor.name),
        Kind::Rollback => format!("rollback #{id} to {tag} by {}", ctx.actor.name),
    };
    let run = Run {
        ex,
        docker,
        ctx,
        id,
        board,
        lost,
        stack_lost: std::sync::OnceLock::new(),
        holder,
        beat,
    };
    announce(
        ex,
        ctx,
        &format!(
            "{verb} of **{tag}** (from {from}) started by **{}**.",
            ctx.actor.name
        ),
    )
    .await;
    // The stack's lease, so no /restart, /scale or /restore runs in the middle of it; one of
    // them running now is waited for, on this step.
    let doing = match kind {
        Kind::Deploy => format!("deploying {tag}"),
        Kind::Rollback => format!("rolling back to {tag}"),
    };
    let mut stack = None;
    if let Some(want) = ex.locks.stack(run.holder.clone(), doing) {
        run.set("lock", State::Running, "taking the stack's lock");
        run.show().await;
        let r = &run;
        match Lease::acquire(&ex.locks, want, ctx.invocation_id, move |line| {
            r.set("lock", State::Running, line.trim_start_matches("⏳ "));
            r.show()
        })
        .await
        {
            Ok(l) => {
                let _ = run.stack_lost.set(l.lost_flag());
                stack = Some(l);
            }
            Err(why) => {
                run.set("lock", State::Failed, why.clone());
                let outcome = Outcome::Failed {
                    step: "lock",
                    why,
                    note: None,
                };
                return conclude(run, kind, &tag, &from, outcome).await;
            }
        }
    }
    run.set("lock", State::Done, format!("deploy #{id}"));
    let result = steps(&run, &services, kind, &tag, restore.as_deref()).await;
    let done = conclude(run, kind, &tag, &from, result).await;
    // After the outcome is recorded, so whoever waited finds the deploy finished.
    if let Some(l) = stack {
        l.release().await;
    }
    done
}

/// What the steps came to.
enum Outcome {
    Succeeded,
    /// Failed before the containers changed.
    Failed {
        step: &'static str,
        why: String,
        note: Option<String>,
    },
    /// Failed after: the containers went back to what they ran.
    RolledBack {
        step: &'static str,
        why: String,
        back: Result<String, String>,
        /// What the database keeps: the containers went back, the database did not.
        db_note: Option<String>,
    },
}

async fn steps(
    run: &Run<'_>,
    services: &[(String, Vec<Container>)],
    kind: Kind,
    tag: &str,
    restore: Option<&str>,
) -> Outcome {
    let docker = run.docker;
    let ex = run.ex;
    // image: every service's repository at the new tag, on the engine or pullable.
    let images: Vec<(String, String)> = services
        .iter()
        .map(|(s, cs)| (s.clone(), with_tag(&cs[0].image, tag)))
        .collect();
    let checked = run
        .step("image", "looking for the image", async {
            let mut found = Vec::new();
            for (_, image) in &images {
                let limit = Duration::from_secs(ex.deploy.pull_timeout_secs);
                match docker.ensure_image(image, limit).await {
                    Ok(ImageCheck::Present) => found.push(format!("{image} present")),
                    Ok(ImageCheck::Pulled) => found.push(format!("{image} pulled")),
                    Ok(ImageCheck::Missing(why)) => {
                        return Err(StepError(format!(
                            "{image} is not on the engine and could not be pulled: {why}"
                        )))
                    }
                    Err(e) => return Err(StepError(e.to_string())),
                }
            }
            found.dedup();
            Ok(((), found.join(", ")))
        })
        .await;
    if let Err(StepError(why)) = checked {
        return Outcome::Failed {
            step: "image",
            why,
            note: None,
        };
    }
    let mut backup_name = None;
    let mut db_note = None;
    if kind == Kind::Deploy {
        if ex.deploy.backup {
            match run
                .step("backup", "pg_dump of the application database", async {
                    let (name, size) = take_backup(run).await.map_err(StepError)?;
                    Ok((name.clone(), format!("{name} ({size})")))
                })
                .await
            {
                Ok(name) => backup_name = Some(name),
                Err(StepError(why)) => {
                    return Outcome::Failed {
                        step: "backup",
                        why,
                        note: None,
                    }
                }
            }
        } else {
            run.skip("backup", "deploy.backup = false");
        }
        match &ex.deploy.migrate {
            Some(m) => {
                let template = services
                    .iter()
                    .find(|(s, _)| *s == m.service)
                    .map(|(_, cs)| cs[0].id.clone());
                let image = images
                    .iter()
                    .find(|(s, _)| *s == m.service)
                    .map(|(_, i)| i.clone());
                let migrated = run
                    .step("migrate", &m.command.join(" "), async {
                        let (Some(template), Some(image)) = (template, image) else {
                            return Err(StepError(format!(
                                "deploy.migrate.service = {:?} is not in deploy.services",
                                m.service
                            )));
                        };
                        let done = docker
                            .run_oneoff(
                                &template,
                                &image,
                                &m.command,
                                run.id,
                                Duration::from_secs(m.timeout_secs),
                            )
                            .await
                            .map_err(|e| StepError(e.to_string()))?;
                        let last = done
                            .output
                            .iter()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .map(|l| {
                                crate::domain::text::clip(
                                    &crate::domain::redact::redact(l.trim()),
                                    120,
                                )
                            })
                            .unwrap_or_default();
                        match done.exit_code {
                            Some(0) => Ok(((), last)),
                            Some(code) => Err(StepError(format!("exit code {code}: {last}"))),
                            None => Err(StepError(format!(
                                "still running after {} s, stopped",
                                m.timeout_secs
                            ))),
                        }
                    })
                    .await;
                if migrated.is_ok() {
                    db_note = Some(match &backup_name {
                        Some(b) => format!("The database keeps {tag}'s migrations: a rollback does not undo them. The backup taken before them is {b} (/restore backup:{b})."),
                        None => format!("The database keeps {tag}'s migrations: a rollback does not undo them, and no backup was taken (deploy.backup = false)."),
                    });
                }
                if let Err(StepError(why)) = migrated {
                    let note = Some(match &backup_name {
                        Some(b) => format!("The containers were not changed. The migration may have changed the database partly: the backup taken before it is {b} (/restore backup:{b})."),
                        None => "The containers were not changed. The migration may have changed the database partly, and no backup was taken (deploy.backup = false).".into(),
                    });
                    return Outcome::Failed {
                        step: "migrate",
                        why,
                        note,
                    };
                }
            }
            None => run.skip("migrate", "no deploy.migrate"),
        }
    }
    if let Some(name) = restore {
        match run
            .step("restore", &format!("restoring {name}"), async {
                let safety = restore_backup(run, name).await.map_err(StepError)?;
                Ok((
                    safety.clone(),
                    format!("{name} restored; the state before is {safety}"),
                ))
            })
            .await
        {
            Ok(safety) => db_note = Some(format!("The database stays restored from {name}; the state before that is {safety} (/restore backup:{safety}).")),
            Err(StepError(why)) => {
                return Outcome::Failed {
                    step: "restore",
                    why,
                    note: Some("The containers were not changed.".into()),
                }
            }
        }
    }
    // recreate, one replica at a time, service by service.
    let mut before: Vec<Before> = services
        .iter()
        .flat_map(|(_, cs)| cs.iter())
        .map(|c| Before {
            container: c.clone(),
            image: c.image.clone(),
            replaced_by: None,
        })
        .collect();
    let image_of = |service: &str| {
        images
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, i)| i.clone())
            .unwrap_or_default()
    };
    let total = before.len();
    let recreated = run
        .step("recreate", &format!("0 of {total}"), async {
            for (i, b) in before.iter_mut().enumerate() {
                run.check_lock()?;
                let c = b.container.clone();
                let new = docker
                    .recreate(&c, &image_of(&c.service))
                    .await
                    .map_err(|e| StepError(format!("{}: {e}", c.name)))?;
                b.replaced_by = Some(new.clone());
                let (now, up) = docker
                    .wait_running(&new, Duration::from_secs(ex.deploy.ready_timeout_secs))
                    .await
                    .map_err(|e| StepError(format!("{}: {e}", c.name)))?;
                if !up {
                    return Err(StepError(format!(
                        "{} did not stay up on the new image ({})",
                        c.name,
                        describe(&now)
                    )));
                }
                run.set("recreate", State::Running, format!("{} of {total}", i + 1));
                run.show().await;
            }
            Ok(((), format!("{total} container{} on {tag}", plural(total))))
        })
        .await;
    if let Err(StepError(why)) = recreated {
        return rolled_back(run, "recreate", why, &before, db_note).await;
    }
    let healthy = run
        .step("health", "waiting for health checks", async {
            let detail = health(run, &before).await?;
            Ok(((), detail))
        })
        .await;
    if let Err(StepError(why)) = healthy {
        return rolled_back(run, "health", why, &before, db_note).await;
    }
    if ex.deploy.smoke.is_empty() {
        run.skip("smoke", "no deploy.smoke checks");
    } else {
        let smoked = run
            .step("smoke", "running smoke tests", async {
                let mut passed = Vec::new();
                for c in &ex.deploy.smoke {
                    http_check(&ex.http, c).await.map_err(StepError)?;
                    passed.push(c.label().to_string());
                }
                Ok(((), format!("{} passed", passed.join(", "))))
            })
            .await;
        if let Err(StepError(why)) = smoked {
            return rolled_back(run, "smoke", why, &before, db_note).await;
        }
    }
    Outcome::Succeeded
}

/// Docker health checks of the new containers, then the configured HTTP health checks.
async fn health(run: &Run<'_>, before: &[Before]) -> Result<String, StepError> {
    let limit = Duration::from_secs(run.ex.deploy.ready_timeout_secs);
    let mut with_check = 0;
    for b in before {
        let Some(id) = &b.replaced_by else { continue };
        let (c, ready) = run
            .docker
            .wait_ready_within(id, None, limit)
            .await
            .map_err(|e| StepError(format!("{}: {e}", b.container.name)))?;
        if !ready {
            return Err(StepError(format!(
                "{} is {} (Docker's health check)",
                c.name,
                describe(&c)
            )));
        }
        if c.health.is_some() {
            with_check += 1;
        }
    }
    let mut done = Vec::new();
    if with_check > 0 {
        done.push(format!("{with_check} healthy in Docker"));
    }
    for c in &run.ex.deploy.health {
        http_check(&run.ex.http, c).await.map_err(StepError)?;
        done.push(c.label().to_string());
    }
    if done.is_empty() {
        Ok("all running (no health checks configured)".into())
    } else {
        Ok(done.join(", "))
    }
}

fn describe(c: &Container) -> String {
    match (&c.health, c.exit_code) {
        (_, Some(code)) => format!("{} with exit code {code}", c.state),
        (Some(h), None) => h.clone(),
        (None, None) => c.state.clone(),
    }
}

/// Puts every replaced container back on the image it ran, and checks it.
async fn rolled_back(
    run: &Run<'_>,
    step: &'static str,
    why: String,
    before: &[Before],
    db_note: Option<String>,
) -> Outcome {
    run.add_step("rollback");
    let back = run
        .step("rollback", "going back to the previous images", async {
            let limit = Duration::from_secs(run.ex.deploy.ready_timeout_secs);
            let mut restored = Vec::new();
            for b in before.iter().rev() {
                let Some(id) = &b.replaced_by else { continue };
                let now = run
                    .docker
                    .inspect(id)
                    .await
                    .map_err(|e| StepError(format!("{}: {e}", b.container.name)))?;
                let back = run
                    .docker
                    .recreate(&now, &b.image)
                    .await
                    .map_err(|e| StepError(format!("{}: {e}", b.container.name)))?;
                let (c, ready) = run
                    .docker
                    .wait_ready_within(&back, None, limit)
                    .await
                    .map_err(|e| StepError(format!("{}: {e}", b.container.name)))?;
                if !ready {
                    return Err(StepError(format!(
                        "{} is {} on {} too",
                        c.name,
                        describe(&c),
                        tag_of(&b.image)
                    )));
                }
                restored.push(b.container.name.clone());
            }
            for c in &run.ex.deploy.health {
                http_check(&run.ex.http, c).await.map_err(StepError)?;
            }
            let versions: Vec<String> = {
                let mut v: Vec<String> = before.iter().map(|b| tag_of(&b.image)).collect();
                v.dedup();
                v
            };
            Ok((
                versions.join(", "),
                if restored.is_empty() {
                    "nothing had changed".to_string()
                } else {
                    format!("{} back and healthy", restored.len())
                },
            ))
        })
        .await;
    Outcome::RolledBack {
        step,
        why,
        back: back.map_err(|StepError(e)| e),
        db_note,
    }
}

/// " " and the note, or nothing.
fn after(note: &Option<String>) -> String {
    note.as_ref().map(|n| format!(" {n}")).unwrap_or_default()
}

async fn conclude(
    run: Run<'_>,
    kind: Kind,
    tag: &str,
    from: &str,
    outcome: Outcome,
) -> Result<Done, Failure> {
    let ex = run.ex;
    let ctx = run.ctx;
    let what = kind.as_str();
    let elapsed = duration::short(run.board.lock().expect("board lock").began.elapsed());
    let (state, failed_step, error, line, announce_line) = match &outcome {
        Outcome::Succeeded => (
            "succeeded",
            None,
            None,
            format!("✅ **{tag}** is running (was {from}); took {elapsed}."),
            format!("✅ {what} of **{tag}** by **{}** succeeded in {elapsed} (was {from}).", ctx.actor.name),
        ),
        Outcome::Failed { step, why, note } => (
            "failed",
            Some(*step),
            Some(why.clone()),
            format!(
                "❌ The {what} failed at **{step}**: {why}\n{} Still running: {from}.",
                note.clone().unwrap_or_else(|| "Nothing was changed.".into())
            ),
            format!("❌ {what} of **{tag}** by **{}** failed at {step}: {why}. Still running: {from}.", ctx.actor.name),
        ),
        Outcome::RolledBack { step, why, back: Ok(versions), db_note } => (
            "rolled_back",
            Some(*step),
            Some(why.clone()),
            format!("❌ The {what} failed at **{step}**: {why}\n↩️ Rolled back automatically: {versions} is running again and healthy.{}", after(db_note)),
            format!("↩️ {what} of **{tag}** by **{}** failed at {step} ({why}) and was rolled back to {versions}.{}", ctx.actor.name, after(db_note)),
        ),
        Outcome::RolledBack { step, why, back: Err(e), db_note } => (
            "failed",
            Some(*step),
            Some(format!("{why}; the rollback failed too: {e}")),
            format!("❌ The {what} failed at **{step}**: {why}\n🚨 The automatic rollback failed too: {e}\nCheck /status now; the stack may run a mix of versions.{}", after(db_note)),
            format!("🚨 {what} of **{tag}** by **{}** failed at {step} and the automatic rollback failed too ({e}): check /status.{}", ctx.actor.name, after(db_note)),
        ),
    };
    metrics::counter!(crate::telemetry::DEPLOYS, "kind" => what, "result" => state).increment(1);
    run.board.lock().expect("board lock").outcome = Some(line);
    let id = run.id;
    let reply = run.finish(state, failed_step, error.as_deref()).await;
    announce(ex, ctx, &announce_line).await;
    match outcome {
        Outcome::Succeeded => Ok(Done {
            reply,
            summary: format!("{what} #{id}: {from} → {tag}"),
        }),
        _ => Err(Failure {
            reason: format!(
                "{what} #{id} of {tag} {state} at {}: {}",
                failed_step.unwrap_or("?"),
                error.unwrap_or_default()
            ),
            reply: Some(reply),
        }),
    }
}

/// Renews the lock and saves the steps every `deploy.heartbeat_secs`, and refreshes the
/// message so the elapsed times move.
async fn heartbeat(
    ex: Deploys,
    id: i64,
    board: Arc<Mutex<Board>>,
    lost: Arc<AtomicBool>,
    progress: Option<Arc<dyn crate::request::Responder>>,
) {
    let every = Duration::from_secs(ex.deploy.heartbeat_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last_edit = Instant::now();
    loop {
        tick.tick().await;
        let (steps, view) = {
            let b = board.lock().expect("board lock");
            (b.json(), b.render())
        };
        match ex.store.deploy_progress(id, &ex.owner, &steps).await {
            Ok(true) => {}
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, deploy = id, "could not renew the deploy's heartbeat")
            }
        }
        // Every 5 s at most: each edit counts against the interaction's rate limit.
        if last_edit.elapsed() >= Duration::from_secs(5) {
            if let Some(p) = &progress {
                let _ = p.edit(view).await;
            }
            last_edit = Instant::now();
        }
    }
}

/// A message to the channel the request came from, so the whole team sees deploys (the
/// requester's own message may be visible to them alone), delivered even after a restart.
async fn announce(ex: &Deploys, ctx: &Ctx<'_>, text: &str) {
    let platform = ctx.actor.platform.as_str();
    if let Err(e) = ex
        .store
        .announce(platform, ctx.channel_id, text, &format_time(ex.now()))
        .await
    {
        tracing::warn!(error = %e, "could not queue a deploy announcement");
    }
}

/// GETs the check's URL until it answers as expected or its time runs out.
pub async fn http_check(client: &reqwest::Client, c: &HttpCheck) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(c.timeout_secs);
    let mut tries = 0;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = async {
            let r = client
                .get(&c.url)
                .timeout(left.clamp(Duration::from_millis(200), Duration::from_secs(10)))
                .send()
                .await
                .map_err(crate::domain::redact::request_error)?;
            let status = r.status();
            let ok_status = match c.status {
                Some(want) => status.as_u16() == want,
                None => status.is_success(),
            };
            if !ok_status {
                return Err(format!("answered {status}"));
            }
            if let Some(want) = &c.contains {
                let body = r
                    .text()
                    .await
                    .map_err(crate::domain::redact::request_error)?;
                if !body.contains(want.as_str()) {
                    return Err(format!("answered {status} without {want:?} in the body"));
                }
            }
            Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() + Duration::from_millis(500) >= deadline => {
                // The URL may carry credentials or a key; this text reaches the channel.
                return Err(format!(
                    "{}: GET {} {why} ({tries} tr{} in {} s)",
                    c.label(),
                    crate::domain::redact::shown_url(&c.url),
                    if tries == 1 { "y" } else { "ies" },
                    c.timeout_secs
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// What a deploy (or, with `rollback`, a rollback) would do, for a dry run.
async fn plan(ex: &Deploys, ctx: &Ctx<'_>, rollback: bool) -> String {
    let Ok(docker) = ex.docker() else {
        return "nothing: docker.project is not set".into();
    };
    let services = match service_containers(ex, docker).await {
        Ok(s) => s,
        Err(f) => return format!("nothing: {}", f.reason),
    };
    let from = running_versions(&services);
    let tag = match (rollback, ctx.text("tag")) {
        (_, Some(t)) => t.to_string(),
        (true, None) => match previous_version(ex).await {
            Ok(t) => t,
            Err(f) => return format!("nothing: {}", f.reason),
        },
        _ => return "nothing: no tag".into(),
    };
    let mut steps = vec![format!("take the deploy lock of {}", docker.project())];
    let images: Vec<String> = services
        .iter()
        .map(|(_, cs)| with_tag(&cs[0].image, &tag))
        .collect();
    steps.push(format!("check {} exist (or pull)", images.join(", ")));
    if !rollback {
        if ex.deploy.backup {
            steps.push("back up the application database (pg_dump)".into());
        }
        if let Some(m) = &ex.deploy.migrate {
            steps.push(format!(
                "run `{}` in a one-off {} container of {tag}",
                m.command.join(" "),
                m.service
            ));
        }
    } else if let Some(b) = ctx.text("backup") {
        steps.push(format!(
            "restore {b} (after a safety backup of the current database)"
        ));
    }
    let n: usize = services.iter().map(|(_, cs)| cs.len()).sum();
    steps.push(format!(
        "recreate {n} container{} ({}) on {tag}, one at a time",
        plural(n),
        services
            .iter()
            .map(|(s, cs)| format!("{s} ×{}", cs.len()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    steps.push(format!(
        "health checks ({}), smoke tests ({}); on failure go back to {from}",
        ex.deploy.health.len(),
        ex.deploy.smoke.len()
    ));
    format!("{from} → {tag}: {}", steps.join(" → "))
}

/// `/deploys [limit]`.
async fn history(ex: &Deploys, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let docker = ex.docker()?;
    let limit = ctx.integer("limit").unwrap_or(10).clamp(1, 50);
    let rows = ex
        .store
        .recent_deploys(docker.project().as_str(), limit)
        .await
        .map_err(|e| ExecError(format!("the deploy history cannot be read ({e})")))?;
    if rows.is_empty() {
        return Ok(Done {
            reply: reply(
                format!("No deploys of {} on record yet.", docker.project()),
                true,
            ),
            summary: "no deploys".into(),
        });
    }
    let mut table_rows = vec![[
        "#".to_string(),
        "WHEN (UTC)".into(),
        "WHO".into(),
        "WHAT".into(),
        "RESULT".into(),
        "TOOK".into(),
    ]];
    for d in &rows {
        table_rows.push(history_row(d));
    }
    let mut r = reply(
        format!(
            "The last {} deploy{} of **{}**, newest first:",
            rows.len(),
            plural(rows.len()),
            docker.project()
        ),
        true,
    );
    let mut block = table(&table_rows);
    if let Some(d) = rows.iter().find(|d| d.error.is_some()) {
        let _ = write!(
            block,
            "\n\n#{} {}: {}",
            d.id,
            d.failed_step.as_deref().unwrap_or(&d.state),
            crate::domain::text::clip(d.error.as_deref().unwrap_or_default(), 300)
        );
    }
    r.code_block = Some(block);
    Ok(Done {
        reply: r,
        summary: format!("showed {} deploys", rows.len()),
    })
}

fn history_row(d: &DeployRow) -> [String; 6] {
    let started = parse_stored_time(&d.started_at);
    let took = match (
        started,
        d.finished_at.as_deref().and_then(parse_stored_time),
    ) {
        (Some(a), Some(b)) => (b - a).to_std().map(duration::short).unwrap_or_default(),
        _ => "…".into(),
    };
    let what = match d.kind.as_str() {
        "rollback" => format!("rollback → {}", d.tag),
        _ => format!("{} → {}", d.from_tag.as_deref().unwrap_or("?"), d.tag),
    };
    let result = match (d.state.as_str(), d.failed_step.as_deref()) {
        ("rolled_back", Some(s)) => format!("rolled back ({s})"),
        ("failed", Some(s)) => format!("failed ({s})"),
        (state, _) => state.replace('_', " "),
    };
    [
        d.id.to_string(),
        started
            .map(|t| t.format("%m-%d %H:%M").to_string())
            .unwrap_or_default(),
        d.actor.clone(),
        what,
        result,
        took,
    ]
}

/// Marks deploys whose runbot stopped (no heartbeat for `deploy.lock_stale_secs`) interrupted:
/// appends `interrupted` to their audit trail, removes their one-off containers, and tells
/// their channel which version is running now. Their lock is free again.
pub async fn recover(ex: &Deploys) -> anyhow::Result<usize> {
    // Stale by the database's clock, never this runbot's: the deploy's own runbot may run on
    // a host whose clock differs.
    let interrupted = ex
        .store
        .interrupt_stale_deploys(ex.deploy.lock_stale_secs, &ex.owner)
        .await?;
    for d in &interrupted {
        settle_interrupted(ex, d, true).await;
    }
    Ok(interrupted.len())
}

/// At shutdown, once this runbot's running deploys were interrupted (their runs already
/// recorded `interrupted` in the trail): marks them so, removes their one-off containers and
/// tells their channel, instead of leaving the lock to go stale for the next runbot.
pub async fn interrupt_own(ex: &Deploys) -> anyhow::Result<usize> {
    let interrupted = ex.store.interrupt_own_deploys(&ex.owner).await?;
    for d in &interrupted {
        settle_interrupted(ex, d, false).await;
    }
    Ok(interrupted.len())
}

/// What an interrupted deploy leaves to do: its leftovers removed, the trail's `interrupted`
/// row (when `audit`: nobody wrote it yet), the message to its channel.
async fn settle_interrupted(ex: &Deploys, d: &DeployRow, audit: bool) {
    let now = ex.now();
    let step = serde_json::from_str::<Vec<serde_json::Value>>(&d.steps)
        .ok()
        .and_then(|steps| {
            steps
                .iter()
                .rev()
                .find(|s| s["state"] == "running")
                .or_else(|| steps.iter().rev().find(|s| s["state"] == "done"))
                .and_then(|s| s["name"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| "lock".into());
    let mut running = "unknown (Docker not configured)".to_string();
    if let Some(docker) = &ex.docker {
        if let Err(e) = docker.remove_deploy_leftovers(d.id).await {
            tracing::warn!(error = %e, deploy = d.id, "could not remove an interrupted deploy's one-off containers");
        }
        running = match service_containers(ex, docker).await {
            Ok(s) => describe_running(&s),
            Err(f) => format!("unknown ({})", f.reason),
        };
    }
    if audit {
        let entry = crate::audit::AuditEntry::new(
            d.invocation_id.clone(),
            crate::audit::Step::Interrupted,
            crate::request::Platform::Cli,
            "runbot",
            "runbot",
            d.kind.clone(),
        )
        .reason(format!(
            "runbot stopped during step {step}; found by the next runbot"
        ))
        .detail(serde_json::json!({ "deploy": d.id, "tag": d.tag, "step": step, "running": running, "actor": d.actor }));
        if let Err(e) = ex.audit.append(entry).await {
            tracing::error!(error = %e, deploy = d.id, "could not audit an interrupted deploy");
        }
    }
    let text = format!(
        "⚠️ The {} of **{}** by **{}** (#{}) was interrupted during **{step}**: runbot stopped. The deploy lock is released. Running now: {running}. Check /status, then /deploy or /rollback again.",
        d.kind, d.tag, d.actor, d.id
    );
    if let Err(e) = ex
        .store
        .announce(
            &d.platform,
            d.channel_id.as_deref(),
            &text,
            &format_time(now),
        )
        .await
    {
        tracing::warn!(error = %e, "could not queue the interrupted-deploy message");
    }
    metrics::counter!(crate::telemetry::DEPLOYS, "kind" => d.kind.clone(), "result" => "interrupted").increment(1);
    tracing::warn!(deploy = d.id, tag = %d.tag, step = %step, "found an interrupted deploy; lock released");
}

/// "backend v2 ×1 (running), worker v1 ×2 (running)".
fn describe_running(services: &[(String, Vec<Container>)]) -> String {
    services
        .iter()
        .map(|(s, cs)| {
            let mut by: std::collections::BTreeMap<(String, String), usize> = Default::default();
            for c in cs {
                *by.entry((tag_of(&c.image), c.state.clone())).or_default() += 1;
            }
            by.into_iter()
                .map(|((tag, state), n)| format!("{s} {tag} ×{n} ({state})"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn backups_configured(ex: &Deploys) -> bool {
    ex.app_db.is_some()
}

/// The database's lease for the run's `step`, its wait shown on that step of the board.
async fn database_lease(
    run: &Run<'_>,
    db: &crate::executors::database::engine::AppDatabase,
    step: &'static str,
    doing: String,
) -> Result<Lease, String> {
    let want = lease::database(db, run.holder.clone(), doing);
    Lease::acquire(&run.ex.locks, want, run.ctx.invocation_id, move |line| {
        run.set(step, State::Running, line.trim_start_matches("⏳ "));
        run.show()
    })
    .await
}

/// The deploy's backup, holding the database's lease: its file name and size.
async fn take_backup(run: &Run<'_>) -> Result<(String, String), String> {
    let db = run
        .ex
        .app_db
        .as_ref()
        .ok_or("app_database.url is not set")?;
    let held = database_lease(run, db, "backup", "backing up the database".into()).await?;
    let f = held
        .during(db.backup(run.ex.now()))
        .await
        .map_err(|e| e.to_string())?;
    Ok((f.name, crate::executors::format::bytes(f.bytes)))
}

/// Restores `name` (after the safety backup the restore takes), holding the database's lease;
/// gives the safety backup's name.
async fn restore_backup(run: &Run<'_>, name: &str) -> Result<String, String> {
    let db = run
        .ex
        .app_db
        .as_ref()
        .ok_or("app_database.url is not set")?;
    let held = database_lease(run, db, "restore", format!("restoring {name}")).await?;
    let r = held.during(db.restore(name, run.ex.now())).await;
    Ok(r.map_err(|e| e.to_string())?.safety_backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_check_names_its_url_without_credentials_or_keys() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let check = HttpCheck {
            name: None,
            url: format!("http://ops:hunter2@127.0.0.1:{port}/health?token=s3cr3t&v=1"),
            status: None,
            contains: None,
            timeout_secs: 1,
        };
        let said = http_check(&reqwest::Client::new(), &check)
            .await
            .unwrap_err();
        let shown = format!("http://127.0.0.1:{port}/health?token=***&v=1");
        assert!(
            said.starts_with(&format!("{shown}: GET {shown} ")),
            "{said}"
        );
        assert!(
            !said.contains("hunter2") && !said.contains("s3cr3t"),
            "{said}"
        );
    }
}
