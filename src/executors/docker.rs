//! `/status` and `/logs`: what the stack's containers are doing, read from the Docker engine.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::redact::redact;
use super::{reply, Ctx, Done, ExecError};
use crate::commands::parse_duration;
use crate::docker::{Container, Docker, LogLine, LogQuery};

/// Discord's limit for one message's content, which the reply's text and code block share.
const MESSAGE_MAX: usize = 2000;
/// "\n```\n" before the block and "\n```" after it.
const FENCES: usize = 9;

impl From<crate::docker::DockerError> for ExecError {
    fn from(e: crate::docker::DockerError) -> Self {
        ExecError(e.to_string())
    }
}

/// `/status [service]`: one row per container.
pub async fn status(docker: &Docker, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let containers = match ctx.text("service") {
        Some(service) => docker.service(service).await?,
        None => docker.containers().await?,
    };
    let project = docker.project();
    if containers.is_empty() {
        return Ok(Done {
            reply: reply(
                format!(
                    "Project **{project}** has no containers on Docker at {} (is docker.project right?).",
                    docker.host()
                ),
                true,
            ),
            summary: "no containers".into(),
        });
    }
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

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A fixed-width table: it stays readable in a code block on a phone.
fn status_table(containers: &[Container], now: DateTime<Utc>) -> String {
    let replicas = |service: &str| containers.iter().filter(|c| c.service == service).count();
    let mut rows = vec![[
        "SERVICE".to_string(),
        "STATE".into(),
        "HEALTH".into(),
        "FOR".into(),
        "IMAGE".into(),
        "RESTARTS".into(),
    ]];
    for c in containers {
        let name = match c.number {
            Some(n) if replicas(&c.service) > 1 => format!("{}-{n}", c.service),
            _ => c.service.clone(),
        };
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
            .map(short_duration)
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
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `45s`, `12m`, `3h 5m`, `4d 3h`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
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
pub async fn logs(docker: &Docker, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
    let service = ctx
        .text("service")
        .ok_or_else(|| ExecError("/logs needs service".into()))?;
    let tail = ctx.integer("tail").unwrap_or(100).clamp(1, 5000) as u32;
    let since = ctx.text("since").and_then(parse_duration);
    let grep = ctx.text("grep");
    let containers = docker.service(service).await?;
    let query = LogQuery {
        tail,
        since: since.map(|d| ctx.now - chrono::Duration::from_std(d).unwrap_or_default()),
    };
    let many = containers.len() > 1;
    let mut lines: Vec<(Option<DateTime<Utc>>, String)> = Vec::new();
    for c in &containers {
        let prefix = match c.number {
            Some(n) if many => format!("{}-{n} | ", c.service),
            _ if many => format!("{} | ", c.name),
            _ => String::new(),
        };
        for LogLine { at, text, .. } in docker.logs(&c.id, query).await? {
            lines.push((at, format!("{prefix}{text}")));
        }
    }
    // Replicas' lines interleaved as they were written; the sort is stable for equal times.
    if many {
        lines.sort_by_key(|(at, _)| *at);
    }
    let read = lines.len().saturating_sub(tail as usize);
    let lines: Vec<String> = lines.drain(read..).map(|(_, l)| clean(&l)).collect();
    let read = lines.len();
    let mut redacted = 0;
    let lines: Vec<String> = lines
        .into_iter()
        .map(|l| {
            let masked = match redact(&l) {
                std::borrow::Cow::Owned(r) => Some(r),
                std::borrow::Cow::Borrowed(_) => None,
            };
            redacted += usize::from(masked.is_some());
            masked.unwrap_or(l)
        })
        // After redaction, so that a grep for a secret finds nothing.
        .filter(|l| grep.is_none_or(|g| l.contains(g)))
        .collect();

    let what = describe_query(service, tail, ctx.text("since"), grep);
    let matched = lines.len();
    let header = |shown: usize| {
        let mut t = format!("📜 {what}: ");
        t.push_str(&match (grep.is_some(), matched) {
            (_, 0) => format!("no lines (of {read} read)."),
            (true, m) => format!("{m} of {read} lines match"),
            (false, m) => format!("{m} line{}", plural(m)),
        });
        if matched > 0 {
            if shown < matched {
                t.push_str(&format!("; the last {shown} fit here."));
            } else {
                t.push('.');
            }
        }
        if redacted > 0 {
            t.push_str(&format!(
                " Secrets masked in {redacted} line{}.",
                plural(redacted)
            ));
        }
        t
    };
    // The longest the header can be, so that what is kept fits whatever number it shows.
    let room = MESSAGE_MAX.saturating_sub(header(0).chars().count() + FENCES);
    let block = last_lines_within(&lines, room);
    let shown = block.as_ref().map_or(0, |(n, _)| *n);
    let mut r = reply(header(shown), true);
    r.code_block = block.map(|(_, b)| b);
    Ok(Done {
        reply: r,
        summary: format!(
            "showed {shown} of {matched} lines of {service}{}",
            if redacted > 0 { ", secrets masked" } else { "" }
        ),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(short_duration(Duration::from_secs(12 * 60 + 5)), "12m");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600 + 300)), "3h 5m");
        assert_eq!(
            short_duration(Duration::from_secs(4 * 86_400 + 7200)),
            "4d 2h"
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
