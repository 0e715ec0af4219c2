//! `/block-ip`, `/unblock-ip`, `/blocked`, and the expiry of timed blocks.
//!
//! Each change is made in the store and then to nginx, under the deny file's lock: the file is
//! written from every active block, tested and reloaded, and a change nginx refuses is taken
//! back from the store too, so the two never disagree. Blocking an address that is already
//! blocked changes nothing and says by whom and until when (to change its time, unblock and
//! block again): a second click on the same Block button is harmless.
//!
//! Other replicas' nginx follow the database ([`follow`], every `nginx.sync_secs`), and each
//! host records the version of the list it applied, which `/blocked` compares with the
//! current one.
//!
//! The deny file and nginx itself are [`engine`].

pub mod engine;

use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::format::table;
use super::{read_only_plan, reply, utc_minute, Ctx, Done, ExecError, Executor, Failure};
use crate::audit::Audit;
use crate::commands::{Args, NginxOp, Value};
use crate::domain::duration;
use crate::domain::net::Guard;
use crate::domain::net::{canonical, overlaps, parse_range};
use crate::domain::text::plural;
use crate::domain::{format_time, parse_stored_time};
use crate::executors::docker::engine::Docker;
use crate::executors::nginx::engine::{render, version, Entry, Nginx};
use crate::store::{Added, BlockRow, NewBlock, NginxHost, Store};
use crate::workers::Workers;

/// A claim on an expiring block older than this is taken over: its runbot stopped.
const CLAIM_STALE: Duration = Duration::from_secs(120);

/// A host silent for this many sync periods is shown as not reporting.
const SILENT_PERIODS: u32 = 10;

/// A host silent this long is forgotten (a replica replaced long ago).
const FORGET_AFTER: Duration = Duration::from_secs(7 * 86_400);

/// `/block-ip`, `/unblock-ip` and `/blocked`; this host's nginx following the database, and
/// the expiry of timed blocks.
#[derive(Clone)]
pub struct Blocks {
    /// None when `nginx.deny_file` is not set.
    pub nginx: Option<Nginx>,
    pub store: Store,
    pub audit: Audit,
    /// What may never be blocked, and how wide a block may be without approval.
    pub guard: Guard,
    /// The stack, whose own networks are never blocked; None when `docker.project` is not set.
    pub docker: Option<Docker>,
    /// This process, as the one claiming an expiring block (random per start).
    pub owner: String,
}

impl Executor for Blocks {
    type Op = NginxOp;

    /// An address that must never be blocked is refused before anyone is asked to confirm.
    fn precheck(&self, op: NginxOp, args: &Args) -> Result<(), String> {
        if op == NginxOp::BlockIp {
            if let Some(Value::Text(a)) = args.get("address") {
                let net = parse_range(a)?;
                self.guard.refuse_dangerous(&net, &[])?;
            }
        }
        Ok(())
    }

    async fn plan(&self, op: NginxOp, ctx: &Ctx<'_>) -> String {
        match op {
            NginxOp::BlockIp => plan(self, ctx, false).await,
            NginxOp::UnblockIp => plan(self, ctx, true).await,
            NginxOp::Blocked => read_only_plan(ctx),
        }
    }

    async fn run(&self, op: NginxOp, ctx: &Ctx<'_>) -> Result<Done, Failure> {
        Ok(match op {
            NginxOp::BlockIp => block(self, ctx).await?,
            NginxOp::UnblockIp => unblock(self, ctx).await?,
            NginxOp::Blocked => blocked(self, ctx).await?,
        })
    }
}

impl Blocks {
    fn nginx(&self) -> Result<&Nginx, ExecError> {
        self.nginx.as_ref().ok_or_else(|| {
            ExecError(
                "runbot does not manage an nginx deny list here: set nginx.deny_file (RUNBOT__NGINX__DENY_FILE) to the file nginx includes, e.g. /etc/nginx/runbot-deny.conf. Nothing was changed."
                    .into(),
            )
        })
    }
}

fn address(ctx: &Ctx<'_>) -> Result<IpNet, ExecError> {
    let text = ctx
        .text("address")
        .ok_or_else(|| ExecError(format!("/{} needs address", ctx.spec.name)))?;
    parse_range(text).map_err(ExecError)
}

/// The stack's own networks, from Docker when `docker.project` is set. When Docker cannot be
/// asked, nothing is blocked: the check is what keeps the stack from locking itself out.
async fn stack_networks(ex: &Blocks) -> Result<Vec<IpNet>, ExecError> {
    let Some(docker) = &ex.docker else {
        return Ok(Vec::new());
    };
    let found = docker.stack_networks().await.map_err(|e| {
        ExecError(format!(
            "runbot could not read the stack's own networks from Docker, which it checks so the stack never blocks itself: {e}"
        ))
    })?;
    Ok(found
        .iter()
        .filter_map(|n| {
            n.parse::<IpNet>()
                .ok()
                .or_else(|| n.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        })
        .collect())
}

fn entries(rows: &[BlockRow]) -> Vec<Entry> {
    rows.iter()
        .map(|b| Entry {
            network: b.network.clone(),
            by: b.actor.clone(),
            reason: b.reason.clone(),
            created_at: b.created_at.clone(),
            expires_at: b.expires_at.clone(),
        })
        .collect()
}

/// Writes the deny file from the store's active blocks and has nginx take it; the blocks it
/// wrote.
async fn apply(
    ex: &Blocks,
    nginx: &Nginx,
    lock: &crate::executors::nginx::engine::Lock,
) -> Result<Vec<BlockRow>, String> {
    let rows = ex
        .store
        .active_blocks()
        .await
        .map_err(|e| format!("the blocks cannot be read from the database ({e})"))?;
    let content = render(&entries(&rows));
    nginx
        .install(lock, &content)
        .await
        .map_err(|e| e.to_string())?;
    applied(ex, nginx, &content, rows.len()).await;
    Ok(rows)
}

/// Records that this host's nginx took `content`. Not fatal when it cannot be recorded: the
/// list is applied, and the next pass of [`follow`] records it.
async fn applied(ex: &Blocks, nginx: &Nginx, content: &str, entries: usize) {
    nginx.note_refused(None);
    if let Err(e) = ex
        .store
        .nginx_host_applied(&nginx.host_id, &version(content), entries as i64)
        .await
    {
        tracing::warn!(error = %e, host = %nginx.host_id, "could not record the deny list this host applied");
    }
}

/// What one pass of [`follow`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The deny file was already the database's list, applied: nothing written or reloaded.
    Unchanged,
    /// The file was written from the database, and nginx tested and reloaded it.
    Applied { entries: usize },
    /// nginx did not take the database's list and keeps its previous one: why.
    Refused(String),
    /// nginx refused this same list less than [`Nginx::retry_refused_after`] ago.
    Postponed,
    /// `nginx.deny_file` is not set here.
    NotManaged,
}

/// The deny file the database asks for: its text, version and number of entries.
async fn wanted(ex: &Blocks) -> Result<(String, String, usize), sqlx::Error> {
    let rows = ex.store.active_blocks().await?;
    let content = render(&entries(&rows));
    Ok((version(&content), content, rows.len()))
}

/// One pass: makes this host's nginx deny what the database holds, whichever replica changed
/// it, and records what it applied (or why nginx refused) for `/blocked`. Also puts right a
/// file edited by hand or left behind by a runbot stopped midway. Cheap when nothing changed:
/// two reads and one small write, no file written and no reload.
pub async fn follow(ex: &Blocks) -> anyhow::Result<Followed> {
    let Some(nginx) = &ex.nginx else {
        return Ok(Followed::NotManaged);
    };
    let host = &nginx.host_id;
    let up_to_date = |content: &str, version: &str, on_disk: &str, row: &Option<NginxHost>| {
        on_disk == content && row.as_ref().and_then(|r| r.applied.as_deref()) == Some(version)
    };
    // A first look without the lock, so a pass with nothing to do waits for no one.
    let (version, content, _) = wanted(ex).await?;
    let row = ex.store.nginx_host(host).await?;
    if up_to_date(&content, &version, &nginx.current().await, &row) {
        seen(ex, nginx, &row).await?;
        return Ok(Followed::Unchanged);
    }
    if nginx.refused_recently(&version) {
        ex.store.nginx_host_seen(host, false).await?;
        return Ok(Followed::Postponed);
    }
    let lock = nginx.lock().await?;
    // Again under the lock: a change made through this runbot may have just applied it.
    let (version, content, count) = wanted(ex).await?;
    let row = ex.store.nginx_host(host).await?;
    let on_disk = nginx.current().await;
    if up_to_date(&content, &version, &on_disk, &row) {
        seen(ex, nginx, &row).await?;
        return Ok(Followed::Unchanged);
    }
    let recorded = row.as_ref().and_then(|r| r.applied.as_deref());
    match nginx.install(&lock, &content).await {
        Ok(()) => {
            drop(lock);
            applied(ex, nginx, &content, count).await;
            if recorded == Some(version.as_str()) && on_disk != content {
                tracing::warn!(host = %host, file = %nginx.path().display(), "the nginx deny file did not match the blocks in the database (edited by hand?); rewritten and reloaded");
            } else {
                tracing::info!(host = %host, entries = count, "nginx follows the blocks in the database: deny list applied");
            }
            Ok(Followed::Applied { entries: count })
        }
        Err(e) => {
            drop(lock);
            let why = e.to_string();
            nginx.note_refused(Some(&version));
            ex.store.nginx_host_failed(host, &why).await?;
            tracing::warn!(host = %host, error = %why, retry_in = ?nginx.retry_refused_after(), "this host's nginx did not take the blocks in the database; it keeps its previous deny list");
            Ok(Followed::Refused(why))
        }
    }
}

/// Nothing to do: the host reports in (and an error about a list since replaced is cleared).
async fn seen(ex: &Blocks, nginx: &Nginx, row: &Option<NginxHost>) -> Result<(), sqlx::Error> {
    let error_cleared = row.as_ref().is_some_and(|r| r.error.is_some());
    ex.store
        .nginx_host_seen(&nginx.host_id, error_cleared)
        .await
}

/// Starts the workers that keep this host's nginx following the database: [`follow`] at
/// start and then every `nginx.sync_secs`, and once at start, forgetting hosts silent for a
/// week (replicas replaced or gone). Nothing when `nginx.deny_file` is not set.
pub fn start_following(workers: &Workers, blocks: &Blocks) {
    let Some(every) = blocks.nginx.as_ref().map(|n| n.sync) else {
        return;
    };
    let follower = blocks.clone();
    workers.every("nginx-follow", every, move || {
        let blocks = follower.clone();
        async move { follow(&blocks).await }
    });
    let store = blocks.store.clone();
    workers.spawn("nginx-forget", move || {
        let store = store.clone();
        async move {
            match store.forget_nginx_hosts(FORGET_AFTER).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(hosts = n, "forgot nginx hosts silent for a week"),
                Err(e) => {
                    crate::telemetry::worker_error("nginx-forget");
                    tracing::warn!(error = %e, "could not forget long-silent nginx hosts");
                }
            }
        }
    });
}

/// Where each host stands against the current list.
enum HostState {
    /// Applied the current list this long ago.
    Current(Duration),
    /// Reports in, but has not applied it (yet): when it last applied one, and why not.
    Behind {
        last: Option<Duration>,
        error: Option<String>,
    },
    /// Has not reported for this long: its runbot is down or gone.
    Silent { for_: Duration, current: bool },
}

fn host_states(
    hosts: &[NginxHost],
    now: DateTime<Utc>,
    current: &str,
    sync: Duration,
) -> Vec<(String, HostState)> {
    let ago = |t: &str| parse_stored_time(t).map(|t| (now - t).to_std().unwrap_or_default());
    hosts
        .iter()
        .filter_map(|h| {
            let silent = ago(&h.seen_at).unwrap_or(Duration::MAX);
            if silent >= FORGET_AFTER {
                return None;
            }
            let is_current = h.applied.as_deref() == Some(current);
            let last = h.applied_at.as_deref().and_then(ago);
            let state = if silent > sync * SILENT_PERIODS {
                HostState::Silent {
                    for_: silent,
                    current: is_current,
                }
            } else if is_current {
                HostState::Current(last.unwrap_or_default())
            } else {
                HostState::Behind {
                    last,
                    error: h.error.clone(),
                }
            };
            Some((h.host_id.clone(), state))
        })
        .collect()
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// What `/blocked` says of the hosts: where the current list is applied, and where not and
/// why.
fn hosts_text(states: &[(String, HostState)], sync: Duration) -> String {
    use crate::domain::duration::short as d;
    let applied: Vec<String> = states
        .iter()
        .filter_map(|(id, s)| match s {
            HostState::Current(ago) => Some(format!("{id} ({} ago)", d(*ago))),
            _ => None,
        })
        .collect();
    let mut lines = Vec::new();
    if !applied.is_empty() {
        lines.push(format!("Applied on {}.", and_list(&applied)));
    }
    let last = |l: &Option<Duration>| match l {
        Some(ago) => format!("last applied {} ago", d(*ago)),
        None => "never applied".into(),
    };
    for (id, s) in states {
        match s {
            HostState::Current(_) => {}
            HostState::Behind {
                last: l,
                error: Some(e),
            } => lines.push(format!(
                "⚠ {id} has not applied the last change ({}): {}",
                last(l),
                crate::domain::text::clip(e, 400)
            )),
            HostState::Behind { last: l, error: None } => lines.push(format!(
                "{id} has not applied the last change yet (it follows within {}; {}).",
                d(sync),
                last(l)
            )),
            HostState::Silent { for_, current } => lines.push(format!(
                "⚠ {id} has not reported for {} (is its runbot down?): it {}, and follows no change until its runbot is back.",
                d(*for_),
                if *current { "has the current list" } else { "has an older list" }
            )),
        }
    }
    if lines.is_empty() {
        lines.push("No host has reported applying the list yet.".into());
    }
    lines.join("\n")
}

/// The hosts' state against the current list, for `/blocked`.
async fn hosts_report(ex: &Blocks, nginx: &Nginx, rows: &[BlockRow]) -> Result<String, ExecError> {
    let unreadable = |e: sqlx::Error| {
        ExecError(format!(
            "the hosts' state cannot be read from the database ({e})"
        ))
    };
    let hosts = ex.store.nginx_hosts().await.map_err(unreadable)?;
    let now = ex.store.database_now().await.map_err(unreadable)?;
    let current = version(&render(&entries(rows)));
    Ok(hosts_text(
        &host_states(&hosts, now, &current, nginx.sync),
        nginx.sync,
    ))
}

/// For a /block-ip or /unblock-ip answer: the other hosts, which follow within a sync period.
async fn others_follow(ex: &Blocks, nginx: &Nginx) -> String {
    let (hosts, now) = match (ex.store.nginx_hosts().await, ex.store.database_now().await) {
        (Ok(h), Ok(n)) => (h, n),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "could not read the other nginx hosts");
            return String::new();
        }
    };
    let others: Vec<(String, HostState)> = host_states(&hosts, now, "", nginx.sync)
        .into_iter()
        .filter(|(id, _)| *id != nginx.host_id)
        .collect();
    let following: Vec<String> = others
        .iter()
        .filter(|(_, s)| !matches!(s, HostState::Silent { .. }))
        .map(|(id, _)| id.clone())
        .collect();
    let silent: Vec<String> = others
        .iter()
        .filter_map(|(id, s)| match s {
            HostState::Silent { for_, .. } => {
                Some(format!("{id} (silent for {})", duration::short(*for_)))
            }
            _ => None,
        })
        .collect();
    let mut text = String::new();
    if !following.is_empty() {
        text.push_str(&format!(
            " {} follow{} within {} (/blocked says when).",
            and_list(&following),
            if following.len() == 1 { "s" } else { "" },
            duration::short(nginx.sync)
        ));
    }
    if !silent.is_empty() {
        text.push_str(&format!(
            " ⚠ Not following until their runbot is back: {}.",
            and_list(&silent)
        ));
    }
    text
}

fn until_text(expires_at: Option<&str>) -> String {
    match expires_at.and_then(parse_stored_time) {
        Some(t) => format!("until {}", utc_minute(t)),
        None => "with no expiry".into(),
    }
}

/// `/block-ip address [ttl] [reason]`.
async fn block(ex: &Blocks, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let nginx = ex.nginx()?;
    let net = address(ctx)?;
    let shown = canonical(&net);
    let stack = stack_networks(ex).await?;
    ex.guard
        .refuse_dangerous(&net, &stack)
        .map_err(|e| ExecError(format!("{e}. Nothing was changed.")))?;
    // Beside the policy's approval rule: were that rule edited away, a wide range still waits
    // for a second person.
    if ex.guard.is_wide(&net) && ctx.approved_by.is_empty() {
        return Err(ExecError(format!(
            "{shown} is wider than /{} (nginx.max_prefix_v{}), so it needs a second person's approval first. Nothing was changed.",
            ex.guard.widest_allowed(&net),
            if net.addr().is_ipv4() { 4 } else { 6 }
        )));
    }
    let ttl = ctx.text("ttl").and_then(duration::parse);
    let expires: Option<DateTime<Utc>> =
        ttl.map(|d| ctx.now + chrono::Duration::from_std(d).unwrap_or_default());
    let reason = ctx.text("reason");
    let lock = nginx.lock().await.map_err(|e| ExecError(e.to_string()))?;
    let added = ex
        .store
        .add_block(&NewBlock {
            network: &shown,
            reason,
            actor: &ctx.actor.name,
            invocation_id: ctx.invocation_id,
            platform: ctx.actor.platform.as_str(),
            channel_id: ctx.channel_id,
            now: &format_time(ctx.now),
            expires_at: expires.map(format_time).as_deref(),
        })
        .await
        .map_err(|e| {
            ExecError(format!(
                "the database did not take the block ({e}); nothing was changed"
            ))
        })?;
    let id = match added {
        Added::Added(id) => id,
        Added::Already(b) => {
            let since = parse_stored_time(&b.created_at)
                .map(utc_minute)
                .unwrap_or(b.created_at.clone());
            return Ok(Done {
                reply: reply(
                    format!(
                        "{shown} is already blocked, by **{}** since {since}, {}. Nothing changed (to change its time, /unblock-ip then /block-ip).",
                        b.actor,
                        until_text(b.expires_at.as_deref())
                    ),
                    false,
                ),
                summary: format!("{shown} was already blocked (block #{})", b.id),
            });
        }
    };
    let rows = match apply(ex, nginx, &lock).await {
        Ok(rows) => rows,
        Err(why) => {
            if let Err(e) = ex.store.delete_block(id).await {
                tracing::error!(error = %e, block = id, "nginx refused a block that could not be taken back from the store");
            }
            return Err(ExecError(format!("{shown} was not blocked: {why}")));
        }
    };
    drop(lock);
    let total = rows.len();
    // From the list nginx took: a second read could fail and hide the note.
    let covered = rows
        .into_iter()
        .filter(|b| b.id != id)
        .filter_map(|b| parse_range(&b.network).ok())
        .filter(|other| other.contains(&net))
        .map(|n| canonical(&n))
        .collect::<Vec<_>>();
    let mut text = format!(
        "⛔ **{}** blocked **{shown}** {}{}. nginx checked and reloaded the deny list ({total} entr{}).",
        ctx.actor.name,
        match ttl {
            Some(d) => format!("for {}, {}", duration::span(d), until_text(expires.map(format_time).as_deref())),
            None => until_text(None),
        },
        reason.map(|r| format!(" — {r}")).unwrap_or_default(),
        if total == 1 { "y" } else { "ies" }
    );
    if !covered.is_empty() {
        text.push_str(&format!(" (It was already inside {}.)", covered.join(", ")));
    }
    text.push_str(&others_follow(ex, nginx).await);
    Ok(Done {
        reply: reply(text, false),
        summary: format!(
            "blocked {shown} {}",
            expires.map_or("with no expiry".into(), |t| format!(
                "until {}",
                format_time(t)
            ))
        ),
    })
}

/// `/unblock-ip address`.
async fn unblock(ex: &Blocks, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let nginx = ex.nginx()?;
    let net = address(ctx)?;
    let shown = canonical(&net);
    let lock = nginx.lock().await.map_err(|e| ExecError(e.to_string()))?;
    let store_err = |e: sqlx::Error| {
        ExecError(format!(
            "the blocks cannot be read from the database ({e}); nothing was changed"
        ))
    };
    let Some(b) = ex.store.active_block(&shown).await.map_err(store_err)? else {
        let near: Vec<String> = ex
            .store
            .active_blocks()
            .await
            .map_err(store_err)?
            .iter()
            .filter_map(|b| parse_range(&b.network).ok())
            .filter(|other| overlaps(other, &net))
            .map(|n| canonical(&n))
            .collect();
        let hint = if near.is_empty() {
            "/blocked lists what is".to_string()
        } else {
            format!("it is covered by {}: unblock that", near.join(", "))
        };
        return Err(ExecError(format!(
            "{shown} is not blocked by runbot; {hint}. Nothing was changed."
        )));
    };
    let ended = ex
        .store
        .end_block(b.id, "removed", &ctx.actor.name, &format_time(ctx.now))
        .await
        .map_err(store_err)?;
    if !ended {
        return Err(ExecError(format!(
            "{shown} was unblocked a moment ago (it expired, or someone else lifted it). Nothing was changed."
        )));
    }
    let total = match apply(ex, nginx, &lock).await {
        Ok(rows) => rows.len(),
        Err(why) => {
            if let Err(e) = ex.store.reopen_block(b.id).await {
                tracing::error!(error = %e, block = b.id, "nginx refused an unblock that could not be taken back in the store");
            }
            return Err(ExecError(format!("{shown} is still blocked: {why}")));
        }
    };
    Ok(Done {
        reply: reply(
            format!(
                "✅ **{}** unblocked **{shown}** (blocked by {}{}). nginx reloaded; {total} entr{} left.{}",
                ctx.actor.name,
                b.actor,
                b.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
                if total == 1 { "y" } else { "ies" },
                others_follow(ex, nginx).await
            ),
            false,
        ),
        summary: format!("unblocked {shown} (block #{})", b.id),
    })
}

/// `/blocked`.
async fn blocked(ex: &Blocks, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let nginx = ex.nginx()?;
    let rows = ex
        .store
        .active_blocks()
        .await
        .map_err(|e| ExecError(format!("the blocks cannot be read from the database ({e})")))?;
    let hosts = hosts_report(ex, nginx, &rows).await?;
    if rows.is_empty() {
        return Ok(Done {
            reply: reply(
                format!(
                    "No address is blocked ({} denies nothing). {hosts}",
                    nginx.path().display()
                ),
                true,
            ),
            summary: "no blocks".into(),
        });
    }
    let mut t = vec![[
        "ADDRESS".to_string(),
        "BY".into(),
        "SINCE (UTC)".into(),
        "UNTIL (UTC)".into(),
        "WHY".into(),
    ]];
    for b in &rows {
        let when = |s: &str| {
            parse_stored_time(s)
                .map(|t| t.format("%m-%d %H:%M").to_string())
                .unwrap_or(s.to_string())
        };
        let left = b
            .expires_at
            .as_deref()
            .and_then(parse_stored_time)
            .map(|t| {
                let d = (t - ctx.now).to_std().unwrap_or_default();
                format!("{} ({} left)", when(&format_time(t)), duration::short(d))
            })
            .unwrap_or_else(|| "no expiry".into());
        t.push([
            b.network.clone(),
            b.actor.clone(),
            when(&b.created_at),
            left,
            crate::domain::text::clip(b.reason.as_deref().unwrap_or("—"), 60),
        ]);
    }
    let mut r = reply(
        format!(
            "{} address{} blocked in nginx. {hosts}",
            rows.len(),
            if rows.len() == 1 { "" } else { "es" }
        ),
        true,
    );
    r.code_block = Some(table(&t));
    Ok(Done {
        reply: r,
        summary: format!("listed {} block{}", rows.len(), plural(rows.len())),
    })
}

/// What a block (or, with `unblock`, an unblock) would do, for a dry run.
async fn plan(ex: &Blocks, ctx: &Ctx<'_>, unblock: bool) -> String {
    let Ok(nginx) = ex.nginx() else {
        return "nothing: nginx.deny_file is not set".into();
    };
    let net = match address(ctx) {
        Ok(n) => n,
        Err(e) => return format!("nothing: {e}"),
    };
    let shown = canonical(&net);
    let file = nginx.path().display();
    if unblock {
        return match ex.store.active_block(&shown).await {
            Ok(Some(b)) => format!(
                "remove `deny {shown};` (blocked by {}) from {file}, run nginx -t, reload nginx",
                b.actor
            ),
            Ok(None) => format!("nothing: {shown} is not blocked by runbot"),
            Err(e) => format!("nothing: the database cannot be read ({e})"),
        };
    }
    match stack_networks(ex).await {
        Ok(stack) => {
            if let Err(e) = ex.guard.refuse_dangerous(&net, &stack) {
                return format!("nothing: refused, {e}");
            }
        }
        Err(e) => return format!("nothing: {e}"),
    }
    let ttl = ctx.text("ttl").and_then(duration::parse);
    format!(
        "add `deny {shown};` to {file} {}, run nginx -t (the previous file comes back if it fails), then reload nginx (no restart){}",
        match ttl {
            Some(d) => format!("for {}", duration::span(d)),
            None => "with no expiry".into(),
        },
        if ex.guard.is_wide(&net) {
            format!("; wider than /{}, so a second person approves first", ex.guard.widest_allowed(&net))
        } else {
            String::new()
        }
    )
}

/// Lifts the timed blocks that are due: claims each (so one replica acts), removes it from
/// nginx, audits it with runbot as the actor, and tells the channel the block was made from.
/// A block nginx will not lift stays active and is tried again at the next sweep.
pub async fn expire_due(ex: &Blocks) -> anyhow::Result<usize> {
    let Some(nginx) = &ex.nginx else {
        return Ok(0);
    };
    let now = Utc::now();
    let stale = now - chrono::Duration::from_std(CLAIM_STALE).unwrap_or_default();
    let due = ex
        .store
        .claim_due_blocks(&ex.owner, &format_time(now), &format_time(stale))
        .await?;
    let mut lifted = 0;
    for b in due {
        let lock = nginx.lock().await?;
        if !ex
            .store
            .end_block(b.id, "expired", "runbot", &format_time(Utc::now()))
            .await?
        {
            continue;
        }
        let result = apply(ex, nginx, &lock).await.map(|rows| rows.len());
        drop(lock);
        let invocation_id = uuid::Uuid::new_v4().simple().to_string();
        let entry = |step| {
            crate::audit::AuditEntry::new(
                invocation_id.clone(),
                step,
                crate::request::Platform::Cli,
                "runbot",
                "runbot",
                "unblock-ip".to_string(),
            )
            .args(serde_json::Map::from_iter([(
                "address".to_string(),
                serde_json::json!(b.network),
            )]))
        };
        let detail = serde_json::json!({
            "expired_block": b.id,
            "blocked_by": b.actor,
            "blocked_in": b.invocation_id,
            "expires_at": b.expires_at,
        });
        if let Err(e) = ex
            .audit
            .append(entry(crate::audit::Step::Started).detail(detail.clone()))
            .await
        {
            tracing::error!(error = %e, block = b.id, "could not audit a block's expiry");
        }
        match result {
            Ok(total) => {
                let done = entry(crate::audit::Step::Succeeded).detail(serde_json::json!({
                    "summary": format!("block of {} expired; lifted", b.network),
                    "expired_block": b.id,
                }));
                if let Err(e) = ex.audit.append(done).await {
                    tracing::error!(error = %e, block = b.id, "could not audit a block's expiry");
                }
                let text = format!(
                    "⌛ The block of **{}** by **{}**{} expired: nginx no longer denies it ({total} entr{} left).",
                    b.network,
                    b.actor,
                    b.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
                    if total == 1 { "y" } else { "ies" }
                );
                if let Err(e) = ex
                    .store
                    .announce(
                        &b.platform,
                        b.channel_id.as_deref(),
                        &text,
                        &format_time(Utc::now()),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "could not queue the expiry message");
                }
                tracing::info!(block = b.id, network = %b.network, "timed block expired and lifted");
                lifted += 1;
            }
            Err(why) => {
                let failed = entry(crate::audit::Step::Failed).reason(format!(
                    "the block of {} is due but nginx did not take the list without it: {why}",
                    b.network
                ));
                if let Err(e) = ex.audit.append(failed).await {
                    tracing::error!(error = %e, block = b.id, "could not audit a failed expiry");
                }
                ex.store.reopen_block(b.id).await?;
                tracing::warn!(block = b.id, network = %b.network, error = %why, "could not lift an expired block; trying again later");
            }
        }
    }
    Ok(lifted)
}
