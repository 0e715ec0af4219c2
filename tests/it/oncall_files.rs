//! The on-call files (`people.toml`, `oncall.toml`, `escalation.toml`) through the real binary:
//! `check-config` points at the file, line and fix; `oncall who` and `escalation explain`
//! answer from the files alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn runbot(policy_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbot"));
    // Only what a test sets may reach the binary.
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            c.env_remove(k);
        }
    }
    c.current_dir(policy_dir)
        .env("RUNBOT__POLICY__DIR", policy_dir)
        .env("RUNBOT__POLICY__TIMEZONE", "Europe/Madrid");
    c
}

/// A copy of the shipped `policies/` to edit.
fn shipped_policies() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    (tmp, dir)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_file_line_and_fix_of_each_problem() {
    let (_tmp, dir) = shipped_policies();
    std::fs::write(
        dir.join("escalation.toml"),
        "[chains.sev1]\nsteps = [\n  { notify = [\"role:devops-lead\"] },\n  { after = \"10m\", notify = [\"role:ctoo\"] },\n  { after = \"-5m\", notify = [\"person:nadie\"] },\n]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("oncall.toml"),
        "[rotations.devops-lead]\npeople = []\nturn = \"1w\"\nstart = \"2026-12-07T09:00\"\n",
    )
    .unwrap();
    let out = runbot(&dir).arg("check-config").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let oncall = dir.join("oncall.toml").display().to_string();
    assert!(
        stderr.contains(&format!(
            "{oncall}:2: rotations.devops-lead.people: a rotation needs people"
        )),
        "{stderr}"
    );

    // The rotation fixed, the chain's problems show, all of them.
    std::fs::remove_file(dir.join("oncall.toml")).unwrap();
    let out = runbot(&dir).arg("check-config").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let esc = dir.join("escalation.toml").display().to_string();
    assert!(
        stderr.contains(&format!(
            "{esc}:4: chains.sev1.steps[1].notify: unknown role \"ctoo\" (roles: backend-lead, cto, dba"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{esc}:5: chains.sev1.steps[2].after: \"-5m\" is negative"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{esc}:5: chains.sev1.steps[2].notify: unknown person \"nadie\": add [people.nadie] to people.toml")),
        "{stderr}"
    );

    // A rotation of a role roles.toml does not have, and a syntax error, by line too.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/escalation.toml"),
        dir.join("escalation.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("oncall.toml"),
        "# rotations\n\n[rotations.devops-led]\npeople = [\"ana\"]\nturn = \"1w\"\nstart = \"2026-12-07T09:00\"\n",
    )
    .unwrap();
    let (_, stderr) = text(&runbot(&dir).arg("check-config").output().unwrap());
    assert!(
        stderr.contains(&format!("{oncall}:3: rotations.devops-led: unknown role \"devops-led\": use one of roles.toml's roles")),
        "{stderr}"
    );
    std::fs::write(
        dir.join("people.toml"),
        "[people.ana]\nname = \"Ana\"\nname = \"Ana\"\n",
    )
    .unwrap();
    let (_, stderr) = text(&runbot(&dir).arg("check-config").output().unwrap());
    let people = dir.join("people.toml").display().to_string();
    assert!(stderr.contains(&format!("{people}:3:")), "{stderr}");
}

#[test]
fn check_config_reports_the_files_and_a_folder_without_them_still_loads() {
    let (_tmp, dir) = shipped_policies();
    let out = runbot(&dir).arg("check-config").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("people               6 (ana, carmen"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rotations            1: devops-lead (1w each among ana, luis)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("chains               5: database (2 steps), sev1 (2 steps)"),
        "{stdout}"
    );

    // A team that has not adopted them yet: roles without people, and no on-call files.
    for f in ["people.toml", "oncall.toml", "escalation.toml"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let roles = std::fs::read_to_string(dir.join("roles.toml")).unwrap();
    let roles: String = roles
        .lines()
        .filter(|l| !l.starts_with("people ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("roles.toml"), roles).unwrap();
    // The database alerts name a chain the folder no longer has: said, with the fix.
    let out = runbot(&dir).arg("check-config").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("alert BackupFailed: escalation = \"database\" is no chain of policies/escalation.toml: add [chains.database] there"),
        "{stderr}"
    );
    std::fs::write(
        dir.join("escalation.toml"),
        "[chains.database]\nsteps = [{ notify = [\"role:dba\"] }]\n",
    )
    .unwrap();
    let out = runbot(&dir).arg("check-config").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("people               0 (no people.toml"),
        "{stdout}"
    );
}

#[test]
fn oncall_who_follows_the_rotation_in_local_time() {
    let (_tmp, dir) = shipped_policies();
    // Ana's week ends on Monday 2026-12-14 at 09:00 Madrid (08:00 UTC).
    let out = runbot(&dir)
        .args([
            "oncall",
            "who",
            "--role",
            "devops-lead",
            "--at",
            "2026-12-14T08:59",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("on duty  Ana (ana): their turn in the rotation"),
        "{stdout}"
    );
    assert!(
        stdout.contains("until    2026-12-14 09:00 Mon Europe/Madrid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("next     Luis (luis) at 2026-12-14 09:00 Mon Europe/Madrid"),
        "{stdout}"
    );
    let out = runbot(&dir)
        .args([
            "oncall",
            "who",
            "--role",
            "devops-lead",
            "--at",
            "2026-12-14T08:00:00Z",
        ])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(stdout.contains("on duty  Luis (luis)"), "{stdout}");
    // The DBA is on call at weekends: a Tuesday is outside.
    let out = runbot(&dir)
        .args(["oncall", "who", "--role", "dba", "--at", "2026-11-24T11:00"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("Carmen (carmen)") && stdout.contains("not on call at this moment"),
        "{stdout}"
    );
    // Bad input: exit 2 and the choices.
    let out = runbot(&dir)
        .args(["oncall", "who", "--role", "ctoo"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("roles: backend-lead, cto, dba"), "{stderr}");
    let out = runbot(&dir)
        .args(["oncall", "who", "--role", "cto", "--at", "tomorrow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not a time"), "{}", text(&out).1);
}

#[test]
fn escalation_explain_shows_each_step_its_time_and_whom_it_pages() {
    let (_tmp, dir) = shipped_policies();
    // Saturday 23:00 in Madrid: the Backend Lead is off hours, the DevOps Lead is paged.
    let out = runbot(&dir)
        .args([
            "escalation",
            "explain",
            "--severity",
            "sev2",
            "--at",
            "2026-11-28T23:00",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("backend-lead is off hours (business hours, Mon-Fri 09:00-18:00 Europe/Madrid): skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("step 2  +15m     2026-11-28 23:15 Sat Europe/Madrid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pages Luis (luis) for devops-lead"),
        "{stdout}"
    );
    // Tuesday 11:00: the Backend Lead is paged.
    let out = runbot(&dir)
        .args([
            "escalation",
            "explain",
            "--severity",
            "sev2",
            "--at",
            "2026-11-24T11:00",
        ])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("pages Pablo (pablo) for backend-lead"),
        "{stdout}"
    );
    assert!(!stdout.contains("skipped"), "{stdout}");
    // Sev1, and an alert naming its own chain.
    let out = runbot(&dir)
        .args([
            "escalation",
            "explain",
            "--severity",
            "sev1",
            "--at",
            "2026-12-10T03:00",
        ])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("pages Ana (ana) for devops-lead"),
        "{stdout}"
    );
    assert!(
        stdout.contains("step 2  +10m     2026-12-10 03:10 Thu Europe/Madrid"),
        "{stdout}"
    );
    assert!(stdout.contains("pages Marta (marta) for cto"), "{stdout}");
    assert!(stdout.contains("then step 2 again every 15m"), "{stdout}");
    let out = runbot(&dir)
        .args([
            "escalation",
            "explain",
            "--severity",
            "sev1",
            "--alert",
            "DatabaseConnectionsFull",
            "--at",
            "2026-12-12T03:00",
        ])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(stdout.starts_with("chain database:"), "{stdout}");
    assert!(stdout.contains("pages Carmen (carmen) for dba"), "{stdout}");
    // Unknown severity or alert: exit 2 and the choices.
    let out = runbot(&dir)
        .args(["escalation", "explain", "--severity", "sev9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("use sev1, sev2, sev3 or sev4"));
    let out = runbot(&dir)
        .args([
            "escalation",
            "explain",
            "--severity",
            "sev1",
            "--alert",
            "APIDwn",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("alerts: APIDown, BackupFailed"),
        "{}",
        text(&out).1
    );
}
