//! What the core says to people, in one place so the wording stays consistent.

use std::time::Duration;

use crate::commands::{Args, CommandSpec, Commands, Value};
use crate::domain::duration::span;
use crate::domain::text::clip;
use crate::request::{Reply, ReplyButton};

/// `/restart service:backend`, as the person would type it.
pub fn invocation_line(spec: &CommandSpec, args: &Args) -> String {
    let mut line = format!("/{}", spec.name);
    for (k, v) in args {
        if k == "dry_run" && *v == Value::Boolean(false) {
            continue;
        }
        let v = match v {
            Value::Text(t) => clip(t, 60),
            Value::Integer(i) => i.to_string(),
            Value::Boolean(b) => b.to_string(),
        };
        line.push_str(&format!(" {k}:{v}"));
    }
    line
}

pub fn or_list(roles: &[String]) -> String {
    match roles {
        [] => "an eligible role".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

pub fn roles_held(roles: &[String]) -> String {
    if roles.is_empty() {
        "no runbot role".into()
    } else {
        roles.join(", ")
    }
}

fn message(text: String, ephemeral: bool, buttons: Vec<ReplyButton>) -> Reply {
    Reply {
        text,
        ephemeral,
        buttons,
        ..Default::default()
    }
}

/// A refusal, shown only to the person who asked.
pub fn refusal(reason: &str) -> Reply {
    Reply {
        refused: true,
        ..message(format!("🚫 {reason}"), true, Vec::new())
    }
}

pub fn unknown_command(name: &str, commands: &Commands) -> String {
    let name = clip(name, 40);
    let closest = commands
        .iter()
        .map(|c| (strsim::jaro_winkler(&name, &c.name), &c.name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!(" Did you mean /{n}?"))
        .unwrap_or_default();
    let known: Vec<String> = commands.iter().map(|c| format!("/{}", c.name)).collect();
    format!(
        "runbot has no command /{name}.{closest} Known commands: {}.",
        known.join(", ")
    )
}

pub fn dry_run(line: &str, plan: &str) -> Reply {
    message(
        format!("🧪 Dry run of `{line}`: nothing was changed.\nIt would: {plan}"),
        true,
        Vec::new(),
    )
}

pub fn confirm_prompt(
    line: &str,
    destructive: bool,
    timeout: Duration,
    buttons: Vec<ReplyButton>,
) -> Reply {
    let warning = if destructive {
        "⚠️ This may not be undone."
    } else {
        "This changes production."
    };
    message(
        format!(
            "Run `{line}`? {warning}\nConfirm within {}, or it is dropped.",
            span(timeout)
        ),
        true,
        buttons,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn approval_prompt(
    requester: &str,
    line: &str,
    group: Option<i64>,
    why: &str,
    eligible: &[String],
    timeout: Duration,
    buttons: Vec<ReplyButton>,
) -> Reply {
    let on = group
        .map(|g| format!(" on alert group #{g}"))
        .unwrap_or_default();
    message(
        format!(
            "🔐 **{requester}** asks to run `{line}`{on}.\n{why}\nAn approver must hold {} and be someone other than {requester}. Expires in {}.",
            or_list(eligible),
            span(timeout)
        ),
        false,
        buttons,
    )
}

pub fn approval_progress(
    requester: &str,
    line: &str,
    approved_by: &[String],
    still: &[String],
    buttons: Vec<ReplyButton>,
) -> Reply {
    message(
        format!(
            "🔐 **{requester}** asks to run `{line}`.\nApproved by {}; it still needs someone who holds {}.",
            approved_by.join(" and "),
            or_list(still)
        ),
        false,
        buttons,
    )
}

pub fn running(line: &str, by: &str) -> Reply {
    message(format!("⏳ `{line}`: {by}; running…"), false, Vec::new())
}

pub fn cancelled(line: &str, by: &str) -> Reply {
    message(
        format!("✖️ `{line}` cancelled by {by}. Nothing was changed."),
        true,
        Vec::new(),
    )
}

pub fn rejected(requester: &str, line: &str, by: &str) -> Reply {
    message(
        format!("✖️ `{line}` asked by {requester} was rejected by {by}. Nothing was changed."),
        false,
        Vec::new(),
    )
}

pub fn expired(line: &str, kind: super::PendingKind, timeout: Duration) -> Reply {
    let who = match kind {
        super::PendingKind::Confirm => "confirmed",
        super::PendingKind::Approval => "approved",
    };
    message(
        format!(
            "⌛ `{line}` expired: nobody {who} it within {}. Nothing was changed; run the command again if it is still needed.",
            span(timeout)
        ),
        kind == super::PendingKind::Confirm,
        Vec::new(),
    )
}

pub fn failed(line: &str, error: &str) -> Reply {
    message(
        format!("❌ `{line}` failed: {}", clip(error, 1500)),
        false,
        Vec::new(),
    )
}
