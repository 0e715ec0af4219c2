//! `runbot user add|passwd|disable|list`: console accounts kept from the command line, on
//! SQLite and PostgreSQL, every change audited and no password anywhere but in its hash.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use runbot::audit::{Audit, Step};
use runbot::chat::console::accounts::verify_password;
use runbot::config::DatabaseSettings;
use runbot::store::Store;

use crate::common::{fresh_database, Db, BOTH};

const FIRST: &str = "correct horse battery staple";
const SECOND: &str = "a different long passphrase";

/// `runbot policy explain` of a console user's `/restart backend`, against `url`.
fn explain(url: &str, dir: &std::path::Path, name: &str) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            c.env_remove(k);
        }
    }
    let o = c
        .current_dir(dir)
        .env("RUNBOT__DATABASE__URL", url)
        .args(["policy", "explain", "--platform", "console", "--user", name])
        .args(["--command", "restart", "--arg", "service=backend"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", said(&o));
    said(&o)
}

/// `runbot user ARGS…` against `url`, with `stdin` on standard input (a pipe, not a terminal).
fn user(url: &str, dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbot"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOT") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .current_dir(dir)
        .env("RUNBOT__DATABASE__URL", url)
        .env("USER", "ops-at-terminal")
        .arg("user")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn accounts_are_added_changed_disabled_and_listed_and_every_try_is_audited() {
    for db in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(db, dir.path()).await;
        let run = |args: &[&str], stdin: &str| user(&url, dir.path(), args, stdin);
        let expect = |o: &Output, code: i32, text: &str| {
            assert_eq!(o.status.code(), Some(code), "{db:?} {text}: {}", said(o));
            assert!(
                said(o).contains(text),
                "{db:?}: wanted {text:?} in {}",
                said(o)
            );
            for secret in [FIRST, SECOND, "$argon2"] {
                assert!(!said(o).contains(secret), "{db:?}: printed {secret:?}");
            }
        };

        if db == Db::Sqlite {
            let none = explain(&url, dir.path(), "ana");
            assert!(none.contains("account:  none: no database at"), "{none}");
        }
        // Before any account, on a database `runbot serve` never made.
        expect(&run(&["list"], ""), 0, "No console accounts yet");

        let stdin = format!("{FIRST}\n");
        expect(
            &run(
                &[
                    "add",
                    "ana",
                    "--role",
                    "devops-lead",
                    "--role",
                    "devops-lead",
                    "--password-stdin",
                ],
                &stdin,
            ),
            0,
            "Created console account ana with role devops-lead.",
        );
        expect(
            &run(&["add", "ana", "--password-stdin"], &stdin),
            1,
            "an account named \"ana\" exists already",
        );
        expect(
            &run(
                &["add", "bob", "--role", "wizard", "--password-stdin"],
                &stdin,
            ),
            2,
            "there is no role \"wizard\" in policies/roles.toml: use one of",
        );
        expect(
            &run(&["add", "bob", "--password-stdin"], "tiny-pw\n"),
            2,
            "the password is too short: use at least 12 characters",
        );
        expect(
            &run(&["add", "bob maria", "--password-stdin"], &stdin),
            2,
            "is not an account name",
        );
        // No terminal to ask on, and no --password-stdin: nothing is read from the pipe.
        expect(
            &run(&["add", "bob"], &stdin),
            2,
            "no terminal to ask the password on",
        );

        // Where each role comes from, as a decision on the console would see it.
        let explained = explain(&url, dir.path(), "ana");
        assert!(
            explained.contains("devops-lead (console account)")
                && explained.contains("account:  ana, enabled, holds devops-lead"),
            "{db:?}: {explained}"
        );
        let nobody = explain(&url, dir.path(), "zoe");
        assert!(
            nobody.contains("account:  no console account named \"zoe\""),
            "{nobody}"
        );

        let store = Store::connect(&DatabaseSettings {
            url: url.clone().into(),
            ..DatabaseSettings::default()
        })
        .await
        .unwrap();
        let ana = store.account("ana").await.unwrap().unwrap();
        assert!(ana.password_hash.starts_with("$argon2id$"), "{db:?}");
        assert!(verify_password(&ana.password_hash, FIRST));
        assert_eq!(
            ana.roles, r#"["devops-lead"]"#,
            "a role asked twice is held once"
        );
        assert!(store.account("bob").await.unwrap().is_none(), "{db:?}");

        expect(
            &run(
                &["passwd", "ana", "--password-stdin"],
                &format!("{SECOND}\r\n"),
            ),
            0,
            "Set a new password for ana; its open console sessions ended.",
        );
        let ana = store.account("ana").await.unwrap().unwrap();
        assert!(verify_password(&ana.password_hash, SECOND), "{db:?}");
        assert!(!verify_password(&ana.password_hash, FIRST), "{db:?}");
        expect(
            &run(&["passwd", "nobody", "--password-stdin"], &stdin),
            1,
            "there is no console account named \"nobody\"",
        );

        expect(&run(&["disable", "ana"], ""), 0, "Disabled ana");
        expect(&run(&["disable", "ana"], ""), 1, "ana is disabled (since ");
        expect(
            &run(&["passwd", "ana", "--password-stdin"], &stdin),
            1,
            "ana is disabled",
        );
        let explained = explain(&url, dir.path(), "ana");
        assert!(
            explained.contains("account:  ana is disabled")
                && !explained.contains("console account)"),
            "{db:?}: {explained}"
        );
        let listed = run(&["list"], "");
        expect(&listed, 0, "NAME");
        let line = said(&listed)
            .lines()
            .find(|l| l.starts_with("ana"))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("devops-lead") && line.contains("disabled"),
            "{db:?}: {line}"
        );

        // Every try is in the trail, by the person at the terminal, and no password is.
        let rows = Audit::new(store.clone())
            .recent(50, &Default::default())
            .await
            .unwrap();
        let mut got: Vec<(String, Step)> =
            rows.iter().map(|r| (r.command.clone(), r.step)).collect();
        got.reverse();
        assert_eq!(
            got,
            [
                ("user.add", Step::Succeeded),
                ("user.add", Step::Failed),
                ("user.add", Step::Invalid),
                ("user.add", Step::Invalid),
                ("user.add", Step::Invalid),
                ("user.add", Step::Invalid),
                ("user.passwd", Step::Succeeded),
                ("user.passwd", Step::Failed),
                ("user.disable", Step::Succeeded),
                ("user.disable", Step::Failed),
                ("user.passwd", Step::Failed),
            ]
            .map(|(c, s)| (c.to_string(), s)),
            "{db:?}"
        );
        for r in &rows {
            assert_eq!(r.actor_name, "ops-at-terminal", "{db:?}");
            let text = serde_json::to_string(r).unwrap();
            for secret in [FIRST, SECOND, "tiny-pw", "$argon2"] {
                assert!(
                    !text.contains(secret),
                    "{db:?}: the trail holds {secret:?}: {text}"
                );
            }
        }
        assert_eq!(
            rows.last().unwrap().args["roles"],
            serde_json::json!(["devops-lead", "devops-lead"]),
            "the trail keeps what was asked"
        );
        store.close().await;
    }
}
