//! The shipped policies against the runbook's rules, written out here independently of the
//! code and the policy files; reasons people read; files that must not load; and
//! `runbot policy explain|test` run as the real binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Utc};
use runbot::commands::{Args, Commands, Value};
use runbot::config::Settings;
use runbot::domain::hours::Clock;
use runbot::domain::Severity;
use runbot::policy::{Decision, Effect, Identity, Policies, PolicyRequest};
use sqlx::Connection;

const ROLES: [&str; 7] = [
    "devops-lead",
    "backend-lead",
    "dba",
    "security",
    "cto",
    "developer",
    "viewer",
];

/// Every command in commands/, as this table knows them. A new command must be added here,
/// with its rule below.
const COMMANDS: [&str; 27] = [
    "ack",
    "audit",
    "backlog",
    "backup",
    "backups",
    "block-ip",
    "blocked",
    "db",
    "deploy",
    "deploys",
    "disk",
    "disk-cleanup",
    "escalate",
    "logs",
    "oncall",
    "page",
    "report",
    "restart",
    "restore",
    "rollback",
    "scale",
    "security",
    "silence",
    "stats",
    "status",
    "unblock-ip",
    "unsilence",
];

/// Commands that only read (risk "read" in commands/): they take no dry run and never need approval.
const READS: [&str; 13] = [
    "audit", "backlog", "backups", "blocked", "db", "deploys", "disk", "logs", "oncall", "report",
    "security", "stats", "status",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Wednesday 10:00 UTC.
    BusinessHours,
    /// Wednesday 23:00 UTC.
    WeekdayNight,
    /// Saturday 03:00 UTC.
    WeekendNight,
}

impl When {
    const ALL: [When; 3] = [When::BusinessHours, When::WeekdayNight, When::WeekendNight];

    fn at(self) -> DateTime<Utc> {
        match self {
            When::BusinessHours => utc("2026-11-25T10:00:00Z"),
            When::WeekdayNight => utc("2026-11-25T23:00:00Z"),
            When::WeekendNight => utc("2026-11-28T03:00:00Z"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Allow,
    Deny,
    /// Sorted.
    Approval(Vec<&'static str>),
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// The runbook's rules, written plainly: what a person holding `role` alone (None: no role)
/// may do. `backup`: the request names a backup to restore (`/rollback backup:…`); `wide`: it
/// blocks a range wider than nginx.max_prefix_v4 (/16 by default).
fn expected(
    role: Option<&str>,
    command: &str,
    sev: Option<Severity>,
    when: When,
    dry_run: bool,
    backup: bool,
    wide: bool,
) -> Expect {
    let r = role.unwrap_or("");
    let business = when == When::BusinessHours;
    let weekend = when == When::WeekendNight;
    // roles.toml: DevOps Lead, Security and CTO 24/7; Backend Lead, developers and viewers in
    // business hours; DBA at weekends.
    let on_call_now = match r {
        "devops-lead" | "security" | "cto" => true,
        "backend-lead" | "developer" | "viewer" => business,
        "dba" => weekend,
        _ => false,
    };
    let on_call_role = matches!(
        r,
        "devops-lead" | "backend-lead" | "dba" | "security" | "cto"
    );
    let permitted = match command {
        "logs" | "status" | "stats" | "disk" | "deploys" | "blocked" => on_call_role,
        // Every role, like /oncall: how the team answered and what waits are no secret.
        "oncall" | "report" | "backlog" => role.is_some(),
        "audit" => matches!(r, "devops-lead" | "security" | "cto"),
        "restart" | "scale" => matches!(r, "devops-lead" | "backend-lead"),
        "deploy" | "rollback" => r == "devops-lead" || (r == "backend-lead" && business),
        "backup" | "backups" | "db" | "restore" => matches!(r, "dba" | "devops-lead"),
        "block-ip" | "unblock-ip" => matches!(r, "security" | "devops-lead"),
        "security" => matches!(r, "security" | "devops-lead" | "cto"),
        "disk-cleanup" => r == "devops-lead",
        // Acknowledging stops the paging: any on-call role, at any hour.
        "ack" => on_call_now || on_call_role,
        "silence" | "unsilence" | "escalate" => on_call_now,
        // Waking someone by hand: any on-call role, at any hour.
        "page" => on_call_role,
        other => panic!("the table has no rule for /{other}: add one"),
    };
    if !permitted {
        return Expect::Deny;
    }
    let mutating = !READS.contains(&command);
    if mutating && dry_run {
        return Expect::Allow;
    }
    let mut eligible = BTreeSet::new();
    // Restoring the database, alone or as part of a rollback, needs a dba.
    if command == "restore" || (command == "rollback" && backup) {
        eligible.insert("dba");
    }
    // A wide range shuts out many people at once: a second person from security or devops-lead.
    if command == "block-ip" && wide {
        eligible.insert("security");
        eligible.insert("devops-lead");
    }
    // Sev1: a change needs devops-lead or cto as well; acknowledging, lifting a silence,
    // escalating and paging change nothing in the stack and are exempt.
    if sev == Some(Severity::Sev1)
        && mutating
        && !matches!(command, "ack" | "unsilence" | "escalate" | "page")
    {
        eligible.insert("devops-lead");
        eligible.insert("cto");
    }
    if eligible.is_empty() {
        Expect::Allow
    } else {
        Expect::Approval(eligible.into_iter().collect())
    }
}

fn shipped() -> (Policies, Commands) {
    shipped_in("UTC")
}

fn shipped_in(timezone: &str) -> (Policies, Commands) {
    let commands = Commands::load(None).unwrap();
    let settings = Settings::load_from(
        None,
        vec![("RUNBOT__POLICY__TIMEZONE".into(), timezone.into())],
    )
    .unwrap();
    let policies = Policies::load_from(None, &settings.parsed.policy_clock, &commands).unwrap();
    (policies, commands)
}

/// The clock of the default settings (UTC, 09:00-18:00).
fn default_clock() -> Clock {
    Settings::default().parsed.policy_clock
}

fn who() -> Identity {
    Identity {
        platform: "discord".into(),
        user_id: "123456789012345678".into(),
        platform_roles: vec![],
        roles: vec![],
    }
}

struct Ask<'a> {
    roles: &'a [&'a str],
    command: &'a str,
    severity: Option<Severity>,
    at: DateTime<Utc>,
    dry_run: bool,
    approvals: &'a [&'a str],
    /// Validated arguments, as the dispatcher passes them.
    args: &'a [(&'a str, Value)],
}

const BACKUP: &str = "backup_20261127_031500.sql.gz";
/// Wider than the default nginx.max_prefix_v4 (16).
const WIDE: &str = "10.0.0.0/8";

/// `/rollback`'s arguments with and without a backup, `/block-ip`'s with a narrow and a wide
/// range; other commands' none.
fn arg_sets(command: &str) -> Vec<Vec<(&'static str, Value)>> {
    match command {
        "rollback" => vec![vec![], vec![("backup", Value::Text(BACKUP.into()))]],
        "block-ip" => vec![
            vec![("address", Value::Text("203.0.113.0/24".into()))],
            vec![("address", Value::Text(WIDE.into()))],
        ],
        _ => vec![vec![]],
    }
}

fn is_wide(args: &[(&str, Value)]) -> bool {
    args.iter()
        .any(|(k, v)| *k == "address" && *v == Value::Text(WIDE.into()))
}

fn decide(p: &Policies, c: &Commands, a: &Ask<'_>) -> Decision {
    let spec = c.get(a.command).unwrap();
    let mut args: Args = a
        .args
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    if spec.takes_dry_run() {
        args.insert("dry_run".into(), Value::Boolean(a.dry_run));
    }
    let roles: Vec<String> = a.roles.iter().map(|s| s.to_string()).collect();
    let approvals: Vec<String> = a.approvals.iter().map(|s| s.to_string()).collect();
    p.decide(&PolicyRequest {
        who: &who(),
        roles: &roles,
        command: spec,
        args: &args,
        severity: a.severity,
        at: a.at,
        approver_roles: &approvals,
        // As the dispatcher computes it, with the default nginx settings.
        wide_range: runbot::commands::wide_range(&Settings::default().parsed.guard, spec, &args),
    })
}

fn effect_of(d: &Decision) -> Expect {
    match &d.effect {
        Effect::Allow => Expect::Allow,
        Effect::Deny => Expect::Deny,
        Effect::NeedsApproval { eligible } => {
            let mut e: Vec<&'static str> = eligible
                .iter()
                .map(|r| *ROLES.iter().find(|k| *k == r).expect("a known role"))
                .collect();
            e.sort();
            Expect::Approval(e)
        }
    }
}

#[test]
fn the_table_knows_every_shipped_command_and_role() {
    let (p, c) = shipped();
    let names: Vec<&str> = c.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, COMMANDS, "commands/ changed: update this table");
    let reads: Vec<&str> = c
        .iter()
        .filter(|s| !s.takes_dry_run())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(reads, READS);
    let mut roles: Vec<&str> = p.roles().names().collect();
    roles.sort();
    let mut want = ROLES.to_vec();
    want.sort();
    assert_eq!(roles, want);
}

#[test]
fn every_role_command_severity_and_time_decides_as_the_runbook_says() {
    let (p, c) = shipped();
    let severities = [
        None,
        Some(Severity::Sev1),
        Some(Severity::Sev2),
        Some(Severity::Sev3),
        Some(Severity::Sev4),
    ];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for role in ROLES.iter().map(|r| Some(*r)).chain([None]) {
        for command in COMMANDS {
            for sev in severities {
                for when in When::ALL {
                    for dry_run in [false, true] {
                        if dry_run && READS.contains(&command) {
                            continue;
                        }
                        for args in arg_sets(command) {
                            let backup = args.iter().any(|(k, _)| *k == "backup");
                            let roles: Vec<&str> = role.into_iter().collect();
                            let d = decide(
                                &p,
                                &c,
                                &Ask {
                                    roles: &roles,
                                    command,
                                    severity: sev,
                                    at: when.at(),
                                    dry_run,
                                    approvals: &[],
                                    args: &args,
                                },
                            );
                            let want =
                                expected(role, command, sev, when, dry_run, backup, is_wide(&args));
                            checked += 1;
                            if effect_of(&d) != want {
                                wrong.push(format!(
                                    "{role:?} /{command} backup={backup} {sev:?} {when:?} dry_run={dry_run}: expected {want:?}, got {:?}: {}",
                                    d.effect, d.reason
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 3000, "{checked}");
    assert!(
        wrong.is_empty(),
        "{} of {checked} decisions differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn an_eligible_approver_turns_needs_approval_into_allow_and_others_do_not() {
    let (p, c) = shipped();
    for role in ROLES {
        for command in COMMANDS {
            for (when, args) in When::ALL
                .into_iter()
                .flat_map(|w| arg_sets(command).into_iter().map(move |a| (w, a)))
            {
                let backup = args.iter().any(|(k, _)| *k == "backup");
                let ask = |approvals: &[&str]| {
                    decide(
                        &p,
                        &c,
                        &Ask {
                            roles: &[role],
                            command,
                            severity: Some(Severity::Sev1),
                            at: when.at(),
                            dry_run: false,
                            approvals,
                            args: &args,
                        },
                    )
                };
                let Effect::NeedsApproval { eligible } = ask(&[]).effect else {
                    continue;
                };
                // Someone who may not approve changes nothing.
                for other in ROLES.iter().filter(|r| !eligible.iter().any(|e| e == *r)) {
                    assert_eq!(
                        ask(&[other]).effect,
                        Effect::NeedsApproval {
                            eligible: eligible.clone()
                        },
                        "{role} /{command} approved by {other}"
                    );
                }
                // The roles of restore-on-Sev1 (and of rollback with a backup) need one
                // approval each; the others one in all.
                // A wide block on a Sev1 needs security-or-devops-lead and devops-lead-or-cto:
                // devops-lead alone covers both, security or cto one each.
                let needs_both = command == "restore" || (command == "rollback" && backup);
                let may_need_two = is_wide(&args);
                for approver in &eligible {
                    let after = ask(&[approver.as_str()]);
                    let two = needs_both
                        || (may_need_two && matches!(after.effect, Effect::NeedsApproval { .. }));
                    if two {
                        let Effect::NeedsApproval { eligible: rest } = &after.effect else {
                            panic!("{role} /{command} with {approver}: {after:?}");
                        };
                        assert!(!rest.contains(approver), "{rest:?}");
                        let last = rest[0].as_str();
                        assert_eq!(
                            ask(&[approver.as_str(), last]).effect,
                            Effect::Allow,
                            "{role} /{command} with {approver} and {last}"
                        );
                    } else {
                        assert_eq!(
                            after.effect,
                            Effect::Allow,
                            "{role} /{command} with {approver}: {}",
                            after.reason
                        );
                        assert!(
                            after.reason.contains(&format!("approved by {approver}")),
                            "{}",
                            after.reason
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn each_kind_of_refusal_says_what_is_needed_and_what_the_person_has() {
    let (p, c) = shipped_in("Europe/Madrid");
    let sunday_night = utc("2026-11-29T22:10:00Z");
    let ask = |roles: &[&str], command: &str, severity, at, approvals: &[&str]| {
        decide(
            &p,
            &c,
            &Ask {
                roles,
                command,
                severity,
                at,
                dry_run: false,
                approvals,
                args: &[],
            },
        )
    };

    // A role the command needs, at a time it does not cover.
    let d = ask(&["developer"], "deploy", None, sunday_night, &[]);
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.reason,
        "/deploy needs devops-lead, or backend-lead in business hours (now 23:10 Sun Europe/Madrid); you hold developer"
    );
    assert_eq!(
        d.policies,
        [
            "deploy-rollback-devops-lead",
            "deploy-rollback-backend-lead-business-hours"
        ]
    );

    // Someone on call now.
    let d = ask(
        &["backend-lead"],
        "silence",
        Some(Severity::Sev2),
        sunday_night,
        &[],
    );
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.reason,
        "/silence needs someone on call (now 23:10 Sun Europe/Madrid); you hold backend-lead, on call in business hours"
    );
    // Acknowledging stops the paging: any on-call role, also out of its hours.
    let d = ask(
        &["backend-lead"],
        "ack",
        Some(Severity::Sev2),
        sunday_night,
        &[],
    );
    assert_eq!(d.effect, Effect::Allow, "{}", d.reason);

    // A role, at any time: no clock in the reason.
    let d = ask(&["backend-lead", "dba"], "audit", None, sunday_night, &[]);
    assert_eq!(
        d.reason,
        "/audit needs devops-lead, security or cto; you hold backend-lead and dba"
    );

    // No role at all.
    let d = ask(&[], "restart", None, sunday_night, &[]);
    assert_eq!(
        d.reason,
        "/restart needs devops-lead or backend-lead; you hold no runbot role (ask to be added in policies/roles.toml)"
    );

    // A second person on Sev1.
    let d = ask(
        &["devops-lead"],
        "restart",
        Some(Severity::Sev1),
        sunday_night,
        &[],
    );
    assert_eq!(
        d.reason,
        "/restart on a Sev1 group needs a second person's approval: devops-lead or cto"
    );
    assert_eq!(d.policies, ["sev1-second-approver"]);

    // A dba's approval for a restore, and both on Sev1.
    let d = ask(&["devops-lead"], "restore", None, sunday_night, &[]);
    assert_eq!(d.reason, "/restore needs a dba's approval");
    assert_eq!(
        d.effect,
        Effect::NeedsApproval {
            eligible: vec!["dba".into()]
        }
    );
    let d = ask(
        &["devops-lead"],
        "restore",
        Some(Severity::Sev1),
        sunday_night,
        &["dba"],
    );
    assert_eq!(
        d.reason,
        "/restore on a Sev1 group needs a second person's approval: devops-lead or cto (approved so far by dba)"
    );

    // Allowed, and why.
    let d = ask(&["devops-lead"], "deploy", None, sunday_night, &[]);
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(
        d.reason,
        "/deploy allowed: devops-lead; you hold devops-lead"
    );
    assert_eq!(d.policies, ["deploy-rollback-devops-lead"]);
}

#[test]
fn a_rollback_with_a_backup_needs_a_dba_and_says_so() {
    let (p, c) = shipped();
    let backup = [("backup", Value::Text(BACKUP.into()))];
    let ask = |severity, args: &[(&str, Value)], approvals: &[&str]| {
        decide(
            &p,
            &c,
            &Ask {
                roles: &["devops-lead"],
                command: "rollback",
                severity,
                at: When::WeekendNight.at(),
                dry_run: false,
                approvals,
                args,
            },
        )
    };
    let d = ask(None, &backup, &[]);
    assert_eq!(
        d.reason,
        "/rollback with a backup to restore needs a dba's approval"
    );
    assert_eq!(d.policies, ["rollback-restore-dba-approval"]);
    assert_eq!(
        d.effect,
        Effect::NeedsApproval {
            eligible: vec!["dba".into()]
        }
    );
    let d = ask(None, &backup, &["dba"]);
    assert_eq!(d.effect, Effect::Allow);
    assert!(d.reason.ends_with("approved by dba"), "{}", d.reason);

    // A tag alone is the plain rollback.
    let d = ask(None, &[("tag", Value::Text("v1".into()))], &[]);
    assert_eq!(d.effect, Effect::Allow, "{}", d.reason);

    // On a Sev1 both forbids stand, each named.
    let d = ask(Some(Severity::Sev1), &backup, &[]);
    assert_eq!(
        d.reason,
        "/rollback with a backup to restore needs a dba's approval, and on a Sev1 group needs a second person's approval: devops-lead or cto"
    );
    assert_eq!(
        d.policies,
        ["rollback-restore-dba-approval", "sev1-second-approver"]
    );
}

/// A copy of the shipped policies in a folder, with `change` applied to one file.
fn policies_with(file: &str, change: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "roles.toml",
        "runbot.cedarschema",
        "runbot.cedar",
        "severities.toml",
        "tests.toml",
        "people.toml",
        "oncall.toml",
        "escalation.toml",
    ] {
        let text = std::fs::read_to_string(Path::new("policies").join(f)).unwrap();
        let text = if f == file { change(text) } else { text };
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    let commands = Commands::load(None).unwrap();
    format!(
        "{:#}",
        Policies::load_from(Some(dir), &default_clock(), &commands).unwrap_err()
    )
}

#[test]
fn bad_roles_and_policy_files_are_refused_with_the_place_and_the_fix() {
    let dir = policies_with("roles.toml", |t| {
        t.replacen("hours = \"weekends\"", "hours = \"nights\"", 1)
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("roles.toml") && e.contains("[roles.dba]") && e.contains("nights"),
        "{e}"
    );

    let dir = policies_with("roles.toml", |t| {
        t.replacen("\"444444444444444444\"", "\"4444\"", 1)
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("[roles.security]") && e.contains("not a Discord id"),
        "{e}"
    );

    let dir = policies_with("runbot.cedar", |t| {
        t + "\npermit (principal, action, resource) when { ;\n"
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("policies/runbot.cedar") && e.contains("at line"),
        "{e}"
    );

    let dir = policies_with("runbot.cedar", |t| {
        t.replacen(
            "action == Action::\"disk-cleanup\"",
            "action == Action::\"disk-clean\"",
            1,
        )
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("\"disk-cleanup-devops-lead\"")
            && e.contains("Action::\"disk-clean\"")
            && e.contains("no command in commands/")
            && e.contains("did you mean \"disk-cleanup\""),
        "{e}"
    );

    let dir = policies_with("runbot.cedar", |t| {
        t.replacen("Role::\"dba\"", "Role::\"dbaa\"", 1)
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("Role::\"dbaa\"")
            && e.contains("no role in policies/roles.toml")
            && e.contains("did you mean \"dba\""),
        "{e}"
    );

    let dir = policies_with("runbot.cedar", |t| {
        t.replacen("@grants(\"devops-lead or backend-lead\")\n", "", 1)
    });
    let e = load_error(dir.path());
    assert!(e.contains("\"restart-scale-leads\" has no @grants"), "{e}");

    let dir = policies_with("runbot.cedar", |t| {
        t.replacen("context.severity == \"sev1\"", "context.severity == 1", 1)
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("does not match policies/runbot.cedarschema"),
        "{e}"
    );

    let dir = policies_with("runbot.cedar", |t| {
        t.replacen("@approval(\"dba\")", "@approval(\"dbas\")", 1)
    });
    let e = load_error(dir.path());
    assert!(e.contains("@approval names \"dbas\""), "{e}");

    let dir = policies_with("runbot.cedarschema", |t| {
        t + "\naction \"reboot\" appliesTo { principal: [User], resource: [Stack], context: Situation };\n"
    });
    let e = load_error(dir.path());
    assert!(e.contains("declares action \"reboot\""), "{e}");

    // A policies folder copied before context.args existed.
    let dir = policies_with("runbot.cedarschema", |t| {
        let start = t.find("  // The command's validated arguments").unwrap();
        let end = t.find("  args: Args,\n").unwrap() + "  args: Args,\n".len();
        format!("{}{}", &t[..start], &t[end..])
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("`type Situation` does not match the context runbot sends")
            && e.contains("args: Args"),
        "{e}"
    );
}

#[test]
fn a_plain_forbid_and_an_ungranted_command_say_so() {
    let dir = policies_with("runbot.cedar", |t| {
        t + "\n@id(\"release-freeze\")\n@reason(\"is frozen until the release on Friday\")\n\
             forbid (principal, action == Action::\"deploy\", resource);\n"
    });
    let commands = Commands::load(None).unwrap();
    let p = Policies::load_from(Some(dir.path()), &default_clock(), &commands).unwrap();
    let d = decide(
        &p,
        &commands,
        &Ask {
            roles: &["devops-lead"],
            command: "deploy",
            severity: None,
            at: When::BusinessHours.at(),
            dry_run: false,
            approvals: &[],
            args: &[],
        },
    );
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.reason, "/deploy is frozen until the release on Friday");
    assert_eq!(d.policies, ["release-freeze"]);

    let cmds = commands_with(
        "purge.toml",
        "name = \"purge\"\ndescription = \"Purge the caches\"\nrisk = \"write\"\nexecutor = \"docker.disk_cleanup\"\n",
    );
    let commands = Commands::load(Some(cmds.path())).unwrap();
    let p = Policies::load_from(None, &default_clock(), &commands).unwrap();
    let d = decide(
        &p,
        &commands,
        &Ask {
            roles: &["devops-lead"],
            command: "purge",
            severity: None,
            at: When::BusinessHours.at(),
            dry_run: false,
            approvals: &[],
            args: &[],
        },
    );
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.reason,
        "/purge is granted to no one in policies/runbot.cedar; you hold devops-lead"
    );
}

#[test]
fn a_policy_can_read_any_argument_with_its_type() {
    let dir = policies_with("runbot.cedar", |t| {
        t + "\n@id(\"nginx-by-hand\")\n@reason(\"of nginx is done by the nginx reload, not by hand\")\n\
             forbid (principal, action == Action::\"restart\", resource)\n\
             when { context.args has service && context.args.service == \"nginx\" };\n\
             @id(\"scale-wide-cto\")\n@approval(\"cto\")\n@reason(\"to more than 5 replicas needs the cto's approval\")\n\
             forbid (principal, action == Action::\"scale\", resource)\n\
             when { context.args has replicas && context.args.replicas > 5 }\n\
             unless { context.approver_roles.contains(Role::\"cto\") };\n"
    });
    let commands = Commands::load(None).unwrap();
    let p = Policies::load_from(Some(dir.path()), &default_clock(), &commands).unwrap();
    let ask = |command, args: &[(&str, Value)]| {
        decide(
            &p,
            &commands,
            &Ask {
                roles: &["devops-lead"],
                command,
                severity: None,
                at: When::BusinessHours.at(),
                dry_run: false,
                approvals: &[],
                args,
            },
        )
    };
    let text = |s: &str| Value::Text(s.into());

    let d = ask("restart", &[("service", text("nginx"))]);
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.reason,
        "/restart of nginx is done by the nginx reload, not by hand"
    );
    assert_eq!(d.policies, ["nginx-by-hand"]);
    assert_eq!(
        ask("restart", &[("service", text("worker"))]).effect,
        Effect::Allow
    );

    // Integers are Longs: compared as numbers.
    let d = ask(
        "scale",
        &[("service", text("worker")), ("replicas", Value::Integer(8))],
    );
    assert_eq!(
        d.effect,
        Effect::NeedsApproval {
            eligible: vec!["cto".into()]
        },
        "{}",
        d.reason
    );
    let d = ask(
        "scale",
        &[("service", text("worker")), ("replicas", Value::Integer(3))],
    );
    assert_eq!(d.effect, Effect::Allow, "{}", d.reason);

    // A policy that reads an argument with the wrong type does not load.
    let dir = policies_with("runbot.cedar", |t| {
        t + "\n@id(\"odd\")\n@reason(\"x\")\n\
             forbid (principal, action == Action::\"scale\", resource)\n\
             when { context.args has replicas && context.args.replicas == \"8\" };\n"
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("does not match policies/runbot.cedarschema"),
        "{e}"
    );
}

/// The shipped commands in a folder, with one more file.
fn commands_with(file: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("commands").unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join(file), text).unwrap();
    dir
}

#[test]
fn two_commands_may_share_an_option_name_only_with_the_same_type() {
    let purge = "name = \"purge\"\ndescription = \"Purge a service's cache\"\nrisk = \"write\"\nexecutor = \"docker.disk_cleanup\"\n\n\
                 [[options]]\nname = \"service\"\ndescription = \"Which\"\ntype = \"integer\"\n";
    let cmds = commands_with("purge.toml", purge);
    let commands = Commands::load(Some(cmds.path())).unwrap();
    let e = format!(
        "{:#}",
        Policies::load_from(None, &default_clock(), &commands).unwrap_err()
    );
    assert!(
        e.contains("commands/logs.toml and commands/purge.toml both have an option \"service\", as String and Long"),
        "{e}"
    );

    // The same type is fine; so is a name with a dash, read with [\"…\"].
    let purge = purge.replace("type = \"integer\"", "type = \"string\"")
        + "\n[[options]]\nname = \"max-age\"\ndescription = \"Older than\"\ntype = \"duration\"\n";
    let cmds = commands_with("purge.toml", &purge);
    let commands = Commands::load(Some(cmds.path())).unwrap();
    let dir = policies_with("runbot.cedar", |t| {
        t + "\n@id(\"purge-old\")\n@grants(\"anyone, for old entries\")\n\
             permit (principal, action == Action::\"purge\", resource)\n\
             when { context.args has \"max-age\" && context.args[\"max-age\"] == \"7d\" };\n"
    });
    let p = Policies::load_from(Some(dir.path()), &default_clock(), &commands).unwrap();
    let d = decide(
        &p,
        &commands,
        &Ask {
            roles: &["viewer"],
            command: "purge",
            severity: None,
            at: When::BusinessHours.at(),
            dry_run: false,
            approvals: &[],
            args: &[("max-age", Value::Text("7d".into()))],
        },
    );
    assert_eq!(d.effect, Effect::Allow, "{}", d.reason);
}

#[test]
fn roles_come_from_roles_toml_per_platform_and_oncall_lists_them() {
    let (p, _) = shipped();
    let mut who = who();
    who.platform_roles = vec!["111111111111111111".into(), "333333333333333333".into()];
    assert_eq!(p.roles_of(&who), ["dba", "devops-lead"]);
    who.platform = "slack".into();
    assert!(
        p.roles_of(&who).is_empty(),
        "Discord roles mean nothing on Slack"
    );

    let on = p.oncall(When::WeekendNight.at());
    let get = |n: &str| on.iter().find(|o| o.role.name == n).unwrap();
    assert!(get("dba").on_call_now && get("devops-lead").on_call_now);
    assert!(!get("backend-lead").on_call_now);
    assert_eq!(get("backend-lead").role.hours.as_str(), "business");
    assert_eq!(
        get("backend-lead").hours_text,
        "on call in business hours, Mon-Fri 09:00-18:00 UTC"
    );
    assert_eq!(get("dba").hours_text, "on call at weekends, Sat-Sun UTC");
    assert_eq!(
        get("devops-lead").role.holders.discord_roles,
        ["111111111111111111"]
    );
    let on = p.oncall(When::BusinessHours.at());
    assert!(
        !on.iter()
            .find(|o| o.role.name == "dba")
            .unwrap()
            .on_call_now
    );
}

fn runbot(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            c.env_remove(k);
        }
    }
    c.current_dir(cwd);
    c
}

/// `runbot policy explain` of `command` by a cli user holding devops-lead on a Saturday night,
/// with `extra` arguments: the exit code, stdout and stderr.
fn explain_as_devops_lead(
    dir: &Path,
    command: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let out = runbot(dir)
        .args([
            "policy",
            "explain",
            "--user",
            "ops",
            "--platform",
            "cli",
            "--roles",
            "devops-lead",
            "--command",
            command,
            "--at",
            "2026-11-28T03:00:00Z",
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn policy_explain_prints_the_effect_reason_roles_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    let out = runbot(dir.path())
        .args([
            "policy",
            "explain",
            "--user",
            "123456789012345678",
            "--platform-roles",
            "222222222222222222",
            "--command",
            "deploy",
            "--severity",
            "sev2",
            "--at",
            "2026-11-29T22:10:00Z",
        ])
        .env("RUNBOT__POLICY__TIMEZONE", "Europe/Madrid")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "effect:   deny",
        "reason:   /deploy needs devops-lead, or backend-lead in business hours (now 23:10 Sun Europe/Madrid); you hold backend-lead",
        "roles:    backend-lead (roles.toml)",
        "on call:  no",
        "deploy-rollback-backend-lead-business-hours  @grants(\"backend-lead in business hours\")",
    ] {
        assert!(stdout.contains(want), "{want}\n---\n{stdout}");
    }

    let out = runbot(dir.path())
        .args([
            "policy",
            "explain",
            "--user",
            "ops",
            "--platform",
            "cli",
            "--roles",
            "devops-lead",
            "--command",
            "restart",
            "--severity",
            "sev1",
            "--at",
            "2026-11-28T03:00:00Z",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("effect:   needs approval from one of: cto, devops-lead"),
        "{stdout}"
    );
    assert!(
        stdout.contains("roles:    devops-lead (--roles)"),
        "{stdout}"
    );
    assert!(stdout.contains("on call:  yes"), "{stdout}");
    assert!(
        stdout.contains("sev1-second-approver  @approval(\"devops-lead,cto\")"),
        "{stdout}"
    );

    let out = runbot(dir.path())
        .args(["policy", "explain", "--user", "1", "--command", "deplyo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command \"deplyo\""));
}

#[test]
fn policy_explain_takes_arguments_checked_as_in_chat() {
    let dir = tempfile::tempdir().unwrap();
    let explain = |extra: &[&str]| explain_as_devops_lead(dir.path(), "rollback", extra);

    let (code, stdout, stderr) =
        explain(&["--arg", "tag=v1", "--arg", &format!("backup={BACKUP}")]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for want in [
        "effect:   needs approval from one of: dba",
        "reason:   /rollback with a backup to restore needs a dba's approval",
        &format!("args:     backup=\"{BACKUP}\", tag=\"v1\""),
        "rollback-restore-dba-approval  @approval(\"dba\")",
    ] {
        assert!(stdout.contains(want), "{want}\n---\n{stdout}");
    }

    let (code, stdout, _) = explain(&["--arg", "tag=v1"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("effect:   allow"), "{stdout}");
    assert!(stdout.contains("args:     tag=\"v1\""), "{stdout}");
    let (_, stdout, _) = explain(&[]);
    assert!(stdout.contains("args:     none"), "{stdout}");

    // The command's own checks: its pattern, its options, NAME=VALUE.
    let (code, _, stderr) = explain(&["--arg", "backup=../etc/passwd"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("/rollback: backup: \"../etc/passwd\" is not in the expected form"),
        "{stderr}"
    );
    let (code, _, stderr) = explain(&["--arg", "service=nginx"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("/rollback has no option \"service\""),
        "{stderr}"
    );
    let (code, _, stderr) = explain(&["--arg", "backup"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("write NAME=VALUE"), "{stderr}");

    // Values take the option's type: an integer is a number, and defaults are filled in.
    let out = runbot(dir.path())
        .args([
            "policy",
            "explain",
            "--user",
            "ops",
            "--roles",
            "dba",
            "--command",
            "logs",
            "--arg",
            "service=postgres",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("args:     service=\"postgres\", tail=100"),
        "{stdout}"
    );
}

#[test]
fn policy_test_passes_the_shipped_table_and_names_a_wrong_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = runbot(dir.path())
        .args(["policy", "test"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");

    let table = dir.path().join("wrong.toml");
    std::fs::write(
        &table,
        "tests = [\n\
         { roles = [\"devops-lead\"], command = \"deploy\", at = \"2026-11-28T03:00:00Z\", expect = \"allow\" },\n\
         { roles = [\"backend-lead\"], command = \"deploy\", severity = \"sev2\", at = \"2026-11-28T03:00:00Z\", expect = \"allow\" },\n\
         ]\n",
    )
    .unwrap();
    let out = runbot(dir.path())
        .args(["policy", "test", "--file"])
        .arg(&table)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL row 2 (line 3)"), "{stdout}");
    assert!(
        stdout.contains("expected allow, got deny: /deploy needs devops-lead"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");

    // Rows' args are checked as in chat, and named when a row fails.
    std::fs::write(
        &table,
        format!(
            "tests = [\n\
             {{ roles = [\"devops-lead\"], command = \"rollback\", at = \"2026-11-28T03:00:00Z\", args = {{ backup = \"{BACKUP}\" }}, expect = \"allow\" }},\n\
             {{ roles = [\"devops-lead\"], command = \"rollback\", at = \"2026-11-28T03:00:00Z\", args = {{ backup = \"latest\" }}, expect = \"allow\" }},\n\
             {{ roles = [\"devops-lead\"], command = \"rollback\", at = \"2026-11-28T03:00:00Z\", args = {{ tag = \"v2\" }}, expect = \"allow\" }},\n\
             ]\n"
        ),
    )
    .unwrap();
    let out = runbot(dir.path())
        .args(["policy", "test", "--file"])
        .arg(&table)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "FAIL row 1 (line 2): roles [devops-lead], /rollback backup=\"{BACKUP}\", no severity"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected allow, got approval: /rollback with a backup to restore needs a dba's approval"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/rollback: backup: \"latest\" is not in the expected form"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 2 failed"), "{stdout}");
}

#[test]
fn check_config_loads_the_policies_and_names_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = runbot(dir.path()).arg("check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("roles                7"), "{stdout}");
    assert!(stdout.contains("in runbot.cedar"), "{stdout}");

    let policies = policies_with("roles.toml", |t| {
        t.replacen("hours = \"24/7\"", "hours = \"always\"", 1)
    });
    let out = runbot(dir.path())
        .arg("check-config")
        .env("RUNBOT__POLICY__DIR", policies.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("roles.toml") && stderr.contains("[roles.devops-lead]"),
        "{stderr}"
    );

    let out = runbot(dir.path())
        .arg("check-config")
        .env("RUNBOT__POLICY__TIMEZONE", "Europe/Madird")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("policy.timezone") && stderr.contains("Europe/Madrid"),
        "{stderr}"
    );
}

/// `policy explain` applies chat's rule for typed commands: given the open groups (or reading
/// them from the database with --live), it says which group set the severity.
#[tokio::test]
async fn policy_explain_decides_a_typed_command_under_the_open_incident() {
    let dir = tempfile::tempdir().unwrap();
    let explain = |extra: &[&str]| {
        let args: Vec<&str> = ["--arg", "service=backend"]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        explain_as_devops_lead(dir.path(), "restart", &args)
    };
    let (code, stdout, stderr) = explain(&[
        "--open-group",
        "12:sev1:alertname=APIDown,service=backend",
        "--open-group",
        "sev3:service=worker",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for want in [
        "severity sev1",
        "incident: Decided as Sev1: alert group #12 (APIDown) is the most severe open alert group on backend.",
        "effect:   needs approval from one of: cto, devops-lead",
    ] {
        assert!(stdout.contains(want), "{want}\n---\n{stdout}");
    }
    let (code, _, stderr) = explain(&["--open-group", "sev9"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("is not sev1, sev2, sev3 or sev4"),
        "{stderr}"
    );

    // --live reads what `runbot serve` stored: nothing open, then a Sev1 on backend.
    let db = dir.path().join("runbot.db");
    let url = format!("sqlite://{}", db.display());
    let (code, _, stderr) = explain(&["--live"]);
    assert_eq!(
        code,
        Some(2),
        "no database yet is an error, not an empty one"
    );
    assert!(stderr.contains("no database at"), "{stderr}");
    let settings = runbot::config::Settings::load_from(
        None,
        vec![("RUNBOT__DATABASE__URL".to_string(), url.clone())],
    )
    .unwrap();
    let store = runbot::store::Store::connect(&settings.database)
        .await
        .unwrap();
    let (code, stdout, _) = explain(&["--live"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("incident: none: no open alert group in the database"),
        "{stdout}"
    );
    assert!(stdout.contains("effect:   allow"), "{stdout}");
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let labels = r#"{"alertname":"APIDown","service":"backend"}"#;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO alert_groups (receiver, group_key, status, severity, runbook, group_labels, \
         common_labels, common_annotations, external_url, truncated_alerts, started_at, \
         created_at, updated_at) VALUES ('bot', 'k', 'firing', 'sev1', 'APIDown', $1, $1, '{}', \
         'http://am', 0, '2026-11-28T02:50:00Z', '2026-11-28T02:50:00Z', '2026-11-28T02:50:00Z') \
         RETURNING id",
    )
    .bind(labels)
    .fetch_one(&mut c)
    .await
    .unwrap();
    let (code, stdout, _) = explain(&["--live"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains(&format!(
            "incident: Decided as Sev1: alert group #{id} (APIDown)"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("effect:   needs approval"), "{stdout}");
    store.close().await;
}
