//! `/status`, `/stats` and `/logs`: what the stack's containers are doing, read from the Docker
//! engine; `/restart` and `/scale`: the changes runbot makes to them.
//!
//! The engine itself is [`engine`]; the deploy pipeline (`/deploy`, `/rollback`, `/deploys`) is [`deploy`].

pub mod deploy;
pub mod engine;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::format::{bytes, percent, table};
use super::lease::{self, Lease, Locks};
use super::{read_only_plan, reply, Ctx, Done, ExecError, Executor, Failure};
use crate::commands::DockerOp;
use crate::domain::duration;
use crate::domain::redact::redact_lines;
use crate::domain::text::plural;
use crate::executors::docker::engine::{Container, Docker, DockerError, LogLine, LogQuery, Usage};
use crate::request::{Attachment, ATTACHMENT_MAX_BYTES};

/// Discord's limit for one message's content, which the reply's text and code block share.
const MESSAGE_MAX: usize = 2000;
/// "\n```\n" before the block and "\n```" after it.
const FENCES: usize = 9;

impl From<crate::executors::docker::engine::DockerError> for ExecError {
    fn from(e: crate::executors::docker::engine::DockerError) -> Self {
        ExecError(e.to_string())
    }
}

/// `/status`, `/stats`, `/logs`, `/restart` and `/scale`.
pub struct DockerOps {
    /// None when `docker.project` is not set.
    pub docker: Option<Docker>,
    pub locks: Locks,
}

impl Executor for DockerOps {
    type Op = DockerOp;

    async fn plan(&self, op: DockerOp, ctx: &Ctx<'_>) -> String {
        let Some(docker) = &self.docker else {
            return match op {
                DockerOp::Restart | DockerOp::Scale => "nothing: docker.project is not set".into(),
                DockerOp::Status | DockerOp::Stats | DockerOp::Logs => read_only_plan(ctx),
            };
        };
        match op {
            DockerOp::Restart => plan_restart(docker, ctx).await,
            DockerOp::Scale => plan_scale(docker, ctx).await,
            DockerOp::Status | DockerOp::Stats | DockerOp::Logs => read_only_plan(ctx),
        }
    }

    async fn run(&self, op: DockerOp, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        let docker = configured(&self.docker)?;
        Ok(match op {
            DockerOp::Status => status(docker, ctx).await?,
            DockerOp::Stats => stats(docker, ctx).await?,
            DockerOp::Logs => logs(docker, ctx).await?,
            DockerOp::Restart => restart(&self.locks, docker, ctx).await?,
            DockerOp::Scale => scale(&self.locks, docker, ctx).await?,
        })
    }
}

/// The engine, or what to set when `docker.project` is not.
fn configured(docker: &Option<Docker>) -> Result<&Docker, ExecError> {
    docker.as_ref().ok_or_else(|| {
        ExecError(
            "runbot does not know which docker-compose project is the stack: set docker.project (RUNBOT__DOCKER__PROJECT) to its name, as `docker compose ls` shows it. Nothing was changed."
                .into(),
        )
    })
}

/// The containers a read asks about (the `service` option's, or all), or the answer that the
/// project has none.
async fn asked(docker: &Docker, ctx: &Ctx<'_>) -> Result<Result<Vec<Container>, Done>, ExecError> {
    let containers = match ctx.text("service") {
        Some(service) => docker.service(service).await?,
        None => docker.containers().await?,
    };
    if !containers.is_empty() {
        return Ok(Ok(containers));
    }
    Ok(Err(Done {
        reply: reply(
            format!(
                "Project **{}** has no containers on Docker at {} (is docker.project right?).",
                docker.project(),
                docker.host()
            ),
            true,
        ),
        summary: "no containers".into(),
    }))
}

/// `/status [service]`: one row per container.
async fn status(docker: &Docker, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let containers = match asked(docker, ctx).await? {
        Ok(c) => c,
        Err(none) => return Ok(none),
    };
    let project = docker.project();
    let running = containers.iter().filter(|c| c.state == "running").count();
    let unhealthy = containers
        .iter()
        .filter(|c| c.health.as_deref() == Some("unhealthy"))
        .count();
    let mut counts = vec![format!("{running} running")];
    let stopped = containers.len() - running;
    if stopped > 0 {
        counts.push(format!("{stopped} not running"));
    }
    if unhealthy > 0 {
        counts.push(format!("{unhealthy} unhealthy"));
    }
    let icon = if stopped == 0 && unhealthy == 0 {
        "🟢"
    } else {
        "🔴"
    };
    let summary = format!(
        "{} container{}: {}",
        containers.len(),
        plural(containers.len()),
        counts.join(", ")
    );
    let mut r = reply(format!("{icon} **{project}**: {summary}."), true);
    r.code_block = Some(status_table(&containers, ctx.now));
    Ok(Done { reply: r, summary })
}

/// `backend`, or `backend-2` when the service runs several replicas.
fn display_name(c: &Container, containers: &[Container]) -> String {
    let replicas = containers.iter().filter(|x| x.service == c.service).count();
    match c.number {
        Some(n) if replicas > 1 => format!("{}-{n}", c.service),
        _ => c.service.clone(),
    }
}

/// `/stats [service]`: CPU, memory and PIDs of each container, as `docker stats --no-stream`.
async fn stats(docker: &Docker, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let containers = match asked(docker, ctx).await? {
        Ok(c) => c,
        Err(none) => return Ok(none),
    };
    let project = docker.project();
    // All at once: the engine takes about 2 s per sample, so one after another would not fit
    // in docker.timeout_secs for a stack of any size.
    let samples = futures_util::future::join_all(containers.iter().map(|c| async move {
        if c.is_running() {
            Some(docker.usage(&c.id).await)
        } else {
            None
        }
    }))
    .await;
    let (body, notes, totals) = stats_table(&containers, &samples);
    let running = containers.iter().filter(|c| c.is_running()).count();
    let mut summary = format!(
        "{} container{}, {running} running",
        containers.len(),
        plural(containers.len())
    );
    if let Some(cpu) = totals.cpu_percent {
        summary.push_str(&format!("; CPU {} in all", percent(cpu)));
    }
    if let Some(memory) = totals.memory {
        summary.push_str(&format!(", memory {} in all", bytes(memory)));
    }
    let mut text = format!("📊 **{project}**: {summary}.");
    for note in &notes {
        text.push('\n');
        text.push_str(note);
    }
    let mut r = reply(text, true);
    r.code_block = Some(body);
    Ok(Done { reply: r, summary })
}

/// The table, notes on figures it lacks (each said once), and the sums of what it has.
fn stats_table(
    containers: &[Container],
    samples: &[Option<Result<Option<Usage>, DockerError>>],
) -> (String, Vec<String>, Usage) {
    let dash = || "-".to_string();
    let mut rows = vec![[
        "SERVICE".to_string(),
        "STATE".into(),
        "CPU %".into(),
        "MEM USAGE".into(),
        "LIMIT".into(),
        "MEM %".into(),
        "PIDS".into(),
    ]];
    let mut no_cgroup = Vec::new();
    let mut gone = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut totals = Usage::default();
    for (c, sample) in containers.iter().zip(samples) {
        let name = display_name(c, containers);
        let state = match c.exit_code {
            Some(code) => format!("{} ({code})", c.state),
            None => c.state.clone(),
        };
        let usage = match sample {
            // Not running: nothing to measure, and the state says why.
            None => None,
            Some(Ok(Some(u))) => {
                if u.is_empty() {
                    no_cgroup.push(name.clone());
                }
                Some(*u)
            }
            Some(Ok(None)) => {
                gone.push(name.clone());
                None
            }
            Some(Err(e)) => {
                failed.push((name.clone(), e.to_string()));
                None
            }
        };
        let u = usage.unwrap_or_default();
        if let Some(cpu) = u.cpu_percent {
            *totals.cpu_percent.get_or_insert(0.0) += cpu;
        }
        if let Some(m) = u.memory {
            *totals.memory.get_or_insert(0) += m;
        }
        rows.push([
            name,
            state,
            u.cpu_percent.map(percent).unwrap_or_else(dash),
            u.memory.map(bytes).unwrap_or_else(dash),
            u.memory_limit.map(bytes).unwrap_or_else(dash),
            u.memory_percent().map(percent).unwrap_or_else(dash),
            u.pids.map(|p| p.to_string()).unwrap_or_else(dash),
        ]);
    }
    let mut notes = Vec::new();
    if !no_cgroup.is_empty() {
        notes.push(format!(
            "`-`: the engine reports no cgroup figures for {} (rootless Docker without cgroup delegation, or the cgroup controllers are not enabled on the host).",
            no_cgroup.join(", ")
        ));
    }
    if !gone.is_empty() {
        notes.push(format!(
            "{} went away while being measured.",
            gone.join(", ")
        ));
    }
    if let Some((_, first)) = failed.first() {
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        notes.push(format!("No figures for {}: {first}.", names.join(", ")));
    }
    (table(&rows), notes, totals)
}

/// A fixed-width table: it stays readable in a code block on a phone.
fn status_table(containers: &[Container], now: DateTime<Utc>) -> String {
    let mut rows = vec![[
        "SERVICE".to_string(),
        "STATE".into(),
        "HEALTH".into(),
        "FOR".into(),
        "IMAGE".into(),
        "RESTARTS".into(),
    ]];
    for c in containers {
        let name = display_name(c, containers);
        let state = match c.exit_code {
            Some(code) => format!("{} ({code})", c.state),
            None => c.state.clone(),
        };
        // How long it has been in its state: up since it started, or down since it stopped.
        let since = if c.state == "running" {
            c.started_at
        } else {
            c.finished_at
        };
        let age = since
            .and_then(|t| (now - t).to_std().ok())
            .map(duration::short)
            .unwrap_or_else(|| "-".into());
        rows.push([
            name,
            state,
            c.health.clone().unwrap_or_else(|| "-".into()),
            age,
            short_image(&c.image),
            c.restart_count.to_string(),
        ]);
    }
    table(&rows)
}

/// `registry.example.com/team/backend:v1.2.3` → `backend:v1.2.3`: the tag is what matters.
fn short_image(image: &str) -> String {
    if let Some(digest) = image.strip_prefix("sha256:") {
        return digest.chars().take(12).collect();
    }
    let (path, digest) = match image.split_once('@') {
        Some((p, d)) => (p, Some(d)),
        None => (image, None),
    };
    let last = path.rsplit('/').next().unwrap_or(path);
    match digest {
        Some(d) if !last.contains(':') => {
            format!(
                "{last}@{}",
                d.trim_start_matches("sha256:").get(..12).unwrap_or(d)
            )
        }
        _ => last.to_string(),
    }
}

/// `/logs service [tail] [since] [grep]`.
async fn logs(docker: &Docker, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let service = ctx
        .text("service")
        .ok_or_else(|| ExecError("/logs needs service".into()))?;
    let tail = ctx.integer("tail").unwrap_or(100).clamp(1, 5000) as u32;
    let since = ctx.text("since").and_then(duration::parse);
    let grep = ctx.text("grep");
    let containers = docker.service(service).await?;
    let query = LogQuery {
        tail,
        since: since.map(|d| ctx.now - chrono::Duration::from_std(d).unwrap_or_default()),
    };
    let many = containers.len() > 1;
    // (time, line, whether a secret was masked in it)
    let mut lines: Vec<(Option<DateTime<Utc>>, String, bool)> = Vec::new();
    for c in &containers {
        let prefix = match c.number {
            Some(n) if many => format!("{}-{n} | ", c.service),
            _ if many => format!("{} | ", c.name),
            _ => String::new(),
        };
        let (ats, mut texts): (Vec<_>, Vec<_>) = docker
            .logs(&c.id, query)
            .await?
            .into_iter()
            .map(|LogLine { at, text, .. }| (at, clean(&text)))
            .unzip();
        // Each container's lines in their order, before replicas interleave: a private key
        // spans lines, and only its first and last say what it is.
        let masked = redact_lines(&mut texts);
        for ((at, text), masked) in ats.into_iter().zip(texts).zip(masked) {
            let text = if prefix.is_empty() {
                text
            } else {
                format!("{prefix}{text}")
            };
            lines.push((at, text, masked));
        }
    }
    // Replicas' lines interleaved as they were written; the sort is stable for equal times.
    if many {
        lines.sort_by_key(|(at, ..)| *at);
    }
    let read = lines.len().saturating_sub(tail as usize);
    let lines = lines.split_off(read);
    let read = lines.len();
    let redacted = lines.iter().filter(|(.., masked)| *masked).count();
    let lines: Vec<String> = lines
        .into_iter()
        .map(|(_, l, _)| l)
        // After redaction, so that a grep for a secret finds nothing.
        .filter(|l| grep.is_none_or(|g| l.contains(g)))
        .collect();

    let what = describe_query(service, tail, ctx.text("since"), grep);
    let matched = lines.len();
    let header = |shown: usize, attached: Attached| {
        let mut t = format!("📜 {what}: ");
        if matched == 0 {
            t.push_str(&format!("no lines (of {read} read)."));
        } else {
            let attached = match attached {
                Attached::Nothing => None,
                Attached::All => Some(format!("all {matched} attached")),
                Attached::Newest(k) => Some(format!(
                    "the newest {k} attached (uploads are limited to {} MiB)",
                    ATTACHMENT_MAX_BYTES >> 20
                )),
            };
            t.push_str(&match (grep.is_some(), attached) {
                (true, None) => format!("{matched} of {read} lines match."),
                (false, None) => format!("{matched} line{}.", plural(matched)),
                (true, Some(a)) => {
                    format!("{matched} of {read} lines match; last {shown} shown, {a}.")
                }
                (false, Some(a)) => format!("last {shown} of {matched} lines shown; {a}."),
            });
        }
        if redacted > 0 {
            t.push_str(&format!(
                " Secrets masked in {redacted} line{}.",
                plural(redacted)
            ));
        }
        t
    };
    // The longest the header can be, so that what is kept fits whatever it says: the same
    // numbers of digits as any it will show.
    let longest = header(matched, Attached::Newest(matched)).chars().count();
    let room = MESSAGE_MAX.saturating_sub(longest + FENCES);
    let block = last_lines_within(&lines, room);
    let shown = block.as_ref().map_or(0, |(n, _)| *n);
    // A single line longer than the room is shown cut: it is not all there either.
    let cut = lines.last().is_some_and(|l| rendered_len(l) > room);
    let (attachment, attached) = if shown < matched || cut {
        let (kept, content) = newest_within(&lines, ATTACHMENT_MAX_BYTES);
        let attachment = Attachment {
            filename: format!("logs-{service}-{}.txt", ctx.now.format("%Y%m%d-%H%M%S")),
            content,
        };
        let attached = if kept == matched {
            Attached::All
        } else {
            Attached::Newest(kept)
        };
        (Some(attachment), attached)
    } else {
        (None, Attached::Nothing)
    };
    let mut summary = format!("showed {shown} of {matched} lines of {service}");
    match attached {
        Attached::Nothing => {}
        Attached::All => summary.push_str(&format!(", attached all {matched}")),
        Attached::Newest(k) => summary.push_str(&format!(", attached the newest {k}")),
    }
    if redacted > 0 {
        summary.push_str(", secrets masked");
    }
    let mut r = reply(header(shown, attached), true);
    r.code_block = block.map(|(_, b)| b);
    r.attachment = attachment;
    Ok(Done { reply: r, summary })
}

/// What of the matched lines goes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attached {
    Nothing,
    All,
    /// Only the newest this many: all would be over the upload limit.
    Newest(usize),
}

/// The newest lines whose text, a newline after each, takes at most `max` bytes: (how many,
/// the text). A last line longer than that alone keeps its first `max` bytes.
fn newest_within(lines: &[String], max: usize) -> (usize, Vec<u8>) {
    let mut used = 0;
    let mut kept = 0;
    for l in lines.iter().rev() {
        if used + l.len() + 1 > max {
            break;
        }
        used += l.len() + 1;
        kept += 1;
    }
    if kept == 0 {
        let Some(last) = lines.last() else {
            return (0, Vec::new());
        };
        let mut end = max.saturating_sub(1).min(last.len());
        while !last.is_char_boundary(end) {
            end -= 1;
        }
        return (1, format!("{}\n", &last[..end]).into_bytes());
    }
    let mut text = String::with_capacity(used);
    for l in &lines[lines.len() - kept..] {
        text.push_str(l);
        text.push('\n');
    }
    (kept, text.into_bytes())
}

/// `Logs of **backend** (tail 100, since 15m, containing `ERROR`)`.
fn describe_query(service: &str, tail: u32, since: Option<&str>, grep: Option<&str>) -> String {
    let mut what = vec![format!("tail {tail}")];
    if let Some(s) = since {
        what.push(format!("since {s}"));
    }
    if let Some(g) = grep {
        what.push(format!("containing `{g}`"));
    }
    format!("Logs of **{service}** ({})", what.join(", "))
}

/// Terminal colours and other control characters would show as noise in chat.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // ESC [ … final byte: an ANSI control sequence.
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Characters a line takes in the block: Discord's adapter breaks up ``` with a zero-width
/// space, and each line after the first takes a newline.
fn rendered_len(line: &str) -> usize {
    line.chars().count() + line.matches("```").count()
}

/// The newest lines that fit in `room` characters, as (how many, the block); None when there
/// are no lines. A last line longer than the room is cut.
fn last_lines_within(lines: &[String], room: usize) -> Option<(usize, String)> {
    let last = lines.last()?;
    let mut used = 0;
    let mut kept = 0;
    for l in lines.iter().rev() {
        let need = rendered_len(l) + usize::from(kept > 0);
        if used + need > room {
            break;
        }
        used += need;
        kept += 1;
    }
    if kept == 0 {
        // Keep its start: that is where a log line says what it is about.
        let cut: String = last.chars().take(room.saturating_sub(2)).collect();
        return Some((1, format!("{}…", cut.replace("```", "``"))));
    }
    Some((kept, lines[lines.len() - kept..].join("\n")))
}

/// The most replicas `/scale` makes, whatever commands/scale.toml allows.
pub const MAX_REPLICAS: i64 = 10;

/// `backend-2`, as people name a replica; the container's name when compose did not number it.
fn replica(c: &Container) -> String {
    match c.number {
        Some(n) => format!("{}-{n}", c.service),
        None => c.name.clone(),
    }
}

fn names<'a>(cs: impl IntoIterator<Item = &'a Container>) -> String {
    cs.into_iter().map(replica).collect::<Vec<_>>().join(", ")
}

fn clock(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `running, healthy`, or just `running` without a health check.
fn condition(c: &Container) -> String {
    match &c.health {
        Some(h) => format!("{}, {h}", c.state),
        None => c.state.clone(),
    }
}

fn service_arg<'a>(ctx: &'a Ctx<'_>) -> Result<&'a str, ExecError> {
    ctx.text("service")
        .ok_or_else(|| ExecError(format!("/{} needs service", ctx.spec.name)))
}

/// Dry run of `/restart`: which containers, read from the engine when it answers.
async fn plan_restart(docker: &Docker, ctx: &Ctx<'_>) -> String {
    let Some(service) = ctx.text("service") else {
        return "restart a service".into();
    };
    let project = docker.project();
    match docker.service(service).await {
        Ok(cs) => format!(
            "restart {} of project {project}, one after another, each waited for until it runs (and is healthy, if it has a health check)",
            names(&cs)
        ),
        Err(e @ crate::executors::docker::engine::DockerError::NoSuchService { .. }) => format!("nothing: {e}"),
        Err(e) => format!(
            "restart every container of service {service} in project {project} (which ones cannot be said now: {e})"
        ),
    }
}

/// Takes the stack's lease for a change of its containers, waiting (and saying so) while a
/// deploy or another change runs.
async fn stack_lease(locks: &Locks, ctx: &Ctx<'_>, doing: String) -> Result<Lease, ExecError> {
    let want = locks
        .stack(lease::holder(ctx), doing)
        .ok_or_else(|| ExecError("docker.project is not set. Nothing was changed.".into()))?;
    locks.for_command(ctx, want).await.map_err(ExecError)
}

/// `/restart service`, holding the stack's lease: the containers are read once it is held,
/// so a deploy that ran meanwhile is seen.
async fn restart(locks: &Locks, docker: &Docker, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let service = service_arg(ctx)?;
    stack_lease(locks, ctx, format!("restarting {service}"))
        .await?
        .during(restart_held(docker, ctx, service))
        .await
}

/// A rolling restart, so that the replicas not yet restarted keep serving. It stops at the
/// first container that does not come back ready: restarting the rest would only take them
/// down too.
async fn restart_held(docker: &Docker, ctx: &Ctx<'_>, service: &str) -> Result<Done, ExecError> {
    let containers = docker.service(service).await?;
    let secs = docker.timeout_secs();
    let mut done: Vec<(&Container, Container)> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let outcome = match docker.restart(&c.id).await {
            Ok(()) => docker.wait_ready(&c.id, c.started_at).await,
            Err(e) => Err(e),
        };
        let problem = match outcome {
            Ok((now, true)) => {
                done.push((c, now));
                continue;
            }
            Ok((now, false)) => format!(
                "{} did not come back ready within {secs} s (docker.timeout_secs): it is {}",
                replica(c),
                condition(&now)
            ),
            Err(e) => format!("restarting {} failed: {e}", replica(c)),
        };
        let mut said = vec![problem];
        if !done.is_empty() {
            said.push(format!(
                "restarted before it: {}",
                names(done.iter().map(|(c, _)| *c))
            ));
        }
        let rest = &containers[i + 1..];
        if !rest.is_empty() {
            said.push(format!(
                "not restarted, so that they keep serving: {}",
                names(rest)
            ));
        }
        return Err(ExecError(format!("{}.", said.join("; "))));
    }
    let table = restart_table(&done);
    let summary = format!(
        "restarted {}: {}",
        names(done.iter().map(|(c, _)| *c)),
        done.iter()
            .map(|(_, now)| condition(now))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut r = reply(
        format!(
            "🔄 **{}** restarted **{service}** of {}: {} container{}, each running again{}.",
            ctx.actor.name,
            docker.project(),
            done.len(),
            plural(done.len()),
            if done.iter().any(|(_, now)| now.health.is_some()) {
                " and healthy"
            } else {
                ""
            }
        ),
        false,
    );
    r.code_block = Some(table);
    Ok(Done { reply: r, summary })
}

fn restart_table(done: &[(&Container, Container)]) -> String {
    let mut rows = vec![[
        "REPLICA".to_string(),
        "STARTED BEFORE".into(),
        "STARTED NOW".into(),
        "STATE".into(),
        "HEALTH".into(),
    ]];
    for (before, now) in done {
        rows.push([
            replica(before),
            clock(before.started_at),
            clock(now.started_at),
            now.state.clone(),
            now.health.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&rows)
}

/// What `/scale` would change: the numbers of the replicas to create (the lowest free ones),
/// or the replicas to remove (the highest numbers first: the newest).
fn scale_steps(containers: &[Container], want: usize) -> (Vec<u32>, Vec<&Container>) {
    if want >= containers.len() {
        let taken: BTreeSet<u32> = containers.iter().filter_map(|c| c.number).collect();
        let free = (1..).filter(|n| !taken.contains(n));
        (free.take(want - containers.len()).collect(), Vec::new())
    } else {
        let mut newest: Vec<&Container> = containers.iter().collect();
        newest.sort_by_key(|c| std::cmp::Reverse(c.number));
        newest.truncate(containers.len() - want);
        (Vec::new(), newest)
    }
}

/// Why a count cannot be asked for; None when it can.
fn refuse_count(service: &str, want: i64) -> Option<String> {
    if want < 1 {
        // At 3 a.m. a 0 is more likely a slip than a wish to take the service down.
        Some(format!(
            "/scale will not take {service} to {want} replicas: that stops the service. To stop it, do so deliberately on the host. Nothing was changed."
        ))
    } else if want > MAX_REPLICAS {
        Some(format!(
            "/scale makes at most {MAX_REPLICAS} replicas; {want} were asked for. Nothing was changed."
        ))
    } else {
        None
    }
}

/// Dry run of `/scale`: the replicas it would create or remove.
async fn plan_scale(docker: &Docker, ctx: &Ctx<'_>) -> String {
    let (Some(service), Some(want)) = (ctx.text("service"), ctx.integer("replicas")) else {
        return "scale a service".into();
    };
    if let Some(no) = refuse_count(service, want) {
        return format!("nothing: {no}");
    }
    let want = want as usize;
    match docker.service(service).await {
        Ok(cs) => {
            let have = cs.len();
            if have == want {
                return format!(
                    "nothing: {service} already runs {have} replica{}",
                    plural(have)
                );
            }
            let (create, remove) = scale_steps(&cs, want);
            let what = if create.is_empty() {
                format!("stop and remove {}", names(remove))
            } else {
                let new: Vec<String> = create.iter().map(|n| format!("{service}-{n}")).collect();
                format!("create {}", new.join(", "))
            };
            format!("scale {service} from {have} to {want}: {what}")
        }
        Err(e @ crate::executors::docker::engine::DockerError::NoSuchService { .. }) => {
            format!("nothing: {e}")
        }
        Err(e) => format!(
            "scale {service} in project {} to {want} replicas (which ones cannot be said now: {e})",
            docker.project()
        ),
    }
}

/// `/scale service replicas`, holding the stack's lease.
async fn scale(locks: &Locks, docker: &Docker, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let service = service_arg(ctx)?;
    let want = ctx
        .integer("replicas")
        .ok_or_else(|| ExecError("/scale needs replicas".into()))?;
    if let Some(no) = refuse_count(service, want) {
        return Err(ExecError(no));
    }
    stack_lease(locks, ctx, format!("scaling {service} to {want}"))
        .await?
        .during(scale_held(docker, ctx, service, want as usize))
        .await
}

/// More replicas are made from the lowest-numbered one's configuration, as
/// `docker compose up --scale` would; fewer stops the newest.
async fn scale_held(
    docker: &Docker,
    ctx: &Ctx<'_>,
    service: &str,
    want: usize,
) -> Result<Done, ExecError> {
    let containers = docker.service(service).await?;
    let have = containers.len();
    if have == want {
        return Ok(Done {
            reply: reply(
                format!(
                    "**{service}** already runs {have} replica{}; nothing changed.",
                    plural(have)
                ),
                false,
            ),
            summary: format!("already {have} replicas"),
        });
    }
    let (create, remove) = scale_steps(&containers, want);
    let mut changed: Vec<String> = Vec::new();
    let partial = |changed: &[String], problem: String| {
        let before = if changed.is_empty() {
            "nothing was changed".to_string()
        } else {
            format!("done before it: {}", changed.join(", "))
        };
        ExecError(format!("{problem}; {before}."))
    };
    // A running replica is the best template: its configuration is known to work.
    let template = containers
        .iter()
        .min_by_key(|c| (!c.is_running(), c.number))
        .expect("a service has containers");
    for n in &create {
        let name = format!("{service}-{n}");
        let id = match docker.create_replica(&template.id, *n).await {
            Ok(id) => id,
            Err(e) => return Err(partial(&changed, format!("creating {name} failed: {e}"))),
        };
        match docker.wait_ready(&id, None).await {
            Ok((_, true)) => changed.push(format!("created {name}")),
            Ok((now, false)) => {
                changed.push(format!("created {name}"));
                return Err(partial(
                    &changed,
                    format!(
                        "{name} did not become ready within {} s (docker.timeout_secs): it is {}; it is left as it is for a look",
                        docker.timeout_secs(),
                        condition(&now)
                    ),
                ));
            }
            Err(e) => return Err(partial(&changed, format!("{name} was created, but {e}"))),
        }
    }
    for c in &remove {
        if let Err(e) = docker.stop_and_remove(&c.id).await {
            return Err(partial(
                &changed,
                format!("removing {} failed: {e}", replica(c)),
            ));
        }
        changed.push(format!("removed {}", replica(c)));
    }
    let after = docker.service(service).await?;
    let icon = if want > have { "📈" } else { "📉" };
    let did = if create.is_empty() {
        format!("stopped and removed {}", names(remove.iter().copied()))
    } else {
        let new: Vec<String> = create.iter().map(|n| format!("{service}-{n}")).collect();
        format!("created {}", new.join(", "))
    };
    let mut r = reply(
        format!(
            "{icon} **{}** scaled **{service}** of {} from {have} to {want}: {did}.",
            ctx.actor.name,
            docker.project()
        ),
        false,
    );
    r.code_block = Some(status_table(&after, ctx.now));
    Ok(Done {
        reply: r,
        summary: format!("scaled {service} from {have} to {want}: {did}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica_numbered(n: Option<u32>) -> Container {
        Container {
            id: format!("id{n:?}"),
            name: format!("p-backend-{n:?}"),
            service: "backend".into(),
            number: n,
            image: "backend:v1".into(),
            state: "running".into(),
            exit_code: None,
            health: None,
            started_at: None,
            finished_at: None,
            restart_count: 0,
        }
    }

    #[test]
    fn scaling_fills_free_numbers_and_removes_the_highest_first() {
        let cs: Vec<Container> = [1, 3, 4].map(|n| replica_numbered(Some(n))).into();
        let (create, remove) = scale_steps(&cs, 5);
        assert_eq!((create, remove.len()), (vec![2, 5], 0));
        let (create, remove) = scale_steps(&cs, 1);
        assert!(create.is_empty());
        assert_eq!(names(remove), "backend-4, backend-3");
        let (create, remove) = scale_steps(&cs, 3);
        assert!(create.is_empty() && remove.is_empty());
    }

    #[test]
    fn zero_and_too_many_replicas_are_refused() {
        assert!(refuse_count("backend", 0)
            .unwrap()
            .contains("stops the service"));
        assert!(refuse_count("backend", 11).unwrap().contains("at most 10"));
        assert_eq!(refuse_count("backend", 1), None);
        assert_eq!(refuse_count("backend", 10), None);
    }

    #[test]
    fn stats_show_dashes_not_zeros_and_say_why_once() {
        let mut cs: Vec<Container> = [1, 2, 3].map(|n| replica_numbered(Some(n))).into();
        cs[2].state = "exited".into();
        cs[2].exit_code = Some(137);
        let full = Usage {
            cpu_percent: Some(12.5),
            memory: Some(540 << 10),
            memory_limit: Some(64 << 20),
            pids: Some(3),
        };
        let samples = vec![Some(Ok(Some(full))), Some(Ok(Some(Usage::default()))), None];
        let (body, notes, totals) = stats_table(&cs, &samples);
        let rows: Vec<Vec<&str>> = body
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[1],
            [
                "backend-1",
                "running",
                "12.50%",
                "540KiB",
                "64MiB",
                "0.82%",
                "3"
            ]
        );
        assert_eq!(rows[2], ["backend-2", "running", "-", "-", "-", "-", "-"]);
        assert_eq!(
            rows[3],
            ["backend-3", "exited", "(137)", "-", "-", "-", "-", "-"]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("no cgroup figures for backend-2"),
            "{notes:?}"
        );
        assert_eq!(
            (totals.cpu_percent, totals.memory),
            (Some(12.5), Some(540 << 10))
        );
    }

    #[test]
    fn the_file_keeps_the_newest_lines_within_the_upload_limit() {
        let lines: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
        let (n, all) = newest_within(&lines, 1000);
        assert_eq!(n, 10);
        assert_eq!(String::from_utf8(all).unwrap(), lines.join("\n") + "\n");
        // "line 8\nline 9\n" is 14 bytes.
        let (n, newest) = newest_within(&lines, 20);
        assert_eq!((n, newest), (2, b"line 8\nline 9\n".to_vec()));
        // One line over the limit alone: its start, cut at a character boundary.
        let (n, cut) = newest_within(&["ééé".to_string()], 5);
        assert_eq!(
            (n, String::from_utf8(cut).unwrap()),
            (1, "éé\n".to_string())
        );
        assert_eq!(newest_within(&[], 5), (0, Vec::new()));
    }

    #[test]
    fn images_show_their_tag() {
        assert_eq!(short_image("runbot-test/backend:v1"), "backend:v1");
        assert_eq!(
            short_image("registry.example.com:5000/team/backend:v1.2.3"),
            "backend:v1.2.3"
        );
        assert_eq!(short_image("redis"), "redis");
        assert_eq!(short_image("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(
            short_image("nginx@sha256:0123456789abcdef0123"),
            "nginx@0123456789ab"
        );
    }

    #[test]
    fn control_characters_and_colours_are_dropped() {
        assert_eq!(
            clean("\u{1b}[31mERROR\u{1b}[0m\tboom\r\u{7}"),
            "ERROR    boom"
        );
    }

    #[test]
    fn the_newest_lines_are_kept_within_the_room() {
        let lines: Vec<String> = (0..100).map(|i| format!("line {i:03}")).collect();
        let (n, block) = last_lines_within(&lines, 30).unwrap();
        assert_eq!(n, 3, "{block}");
        assert_eq!(block, "line 097\nline 098\nline 099");
        assert!(block.chars().count() <= 30);
        assert!(last_lines_within(&[], 30).is_none());
        let (n, block) = last_lines_within(&["x".repeat(50)], 30).unwrap();
        assert_eq!((n, block.chars().count()), (1, 29));
    }
}
