//! `runbot user add|passwd|disable|list`: the console's accounts, kept from the command line.
//! Every change, refused or not, is written to the audit trail as a `user.*` command by the
//! person at the terminal (platform `cli`). A password is never printed, logged or audited.

use std::io::{BufRead, IsTerminal, Write};

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::accounts::{check_name, check_password, hash_password};
use super::object;
use crate::audit::{Audit, AuditEntry, Step};
use crate::commands::Commands;
use crate::config::Settings;
use crate::domain::format_time;
use crate::policy::Policies;
use crate::request::Platform;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account that can sign in to the console.
    Add {
        name: String,
        /// A role from policies/roles.toml the account holds on the console, on top of
        /// `console_users` there; repeat it for more.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input instead of asking on the
        /// terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's password.
    Passwd {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account: it can no longer sign in, and its name stays taken.
    Disable { name: String },
    /// List the accounts: roles, state, when made.
    List,
}

/// Why a `runbot user` command stopped: exit 1 (refused: the name is taken, no such account)
/// or 2 (invalid input, or runbot cannot read its settings, data or database).
struct Stop(u8, String);

/// Who runs the command: the operating system's user.
fn operator() -> (String, String) {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let name = std::env::var("USER")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("uid {uid}"));
    (format!("uid:{uid}"), name)
}

/// The database, made and migrated if new (accounts may come before the first `serve`).
async fn open(settings: &Settings) -> Option<Store> {
    match Store::connect(&settings.database).await {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("runbot: cannot open the database: {e:#}");
            None
        }
    }
}

/// Prints a table under `header`, or `empty` when there are no rows; answers the exit code.
fn print_table(out: &mut dyn Write, header: &[&str], rows: Vec<Vec<String>>, empty: &str) -> u8 {
    let text = if rows.is_empty() {
        format!("{empty}\n")
    } else {
        let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        all.extend(rows);
        format!("{}\n", crate::executors::format::table(&all))
    };
    match out.write_all(text.as_bytes()) {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

/// A JSON list of roles as a table cell.
fn roles_cell(roles: &str) -> String {
    let roles: Vec<String> = serde_json::from_str(roles).unwrap_or_default();
    if roles.is_empty() {
        "-".into()
    } else {
        roles.join(",")
    }
}

/// Runs one `runbot user …` command, writing to `out`; answers the exit code.
pub async fn run(settings: &Settings, command: UserCommand, out: &mut dyn Write) -> u8 {
    let Some(store) = open(settings).await else {
        return 2;
    };
    let code = match command {
        UserCommand::List => list(&store, out).await,
        change => {
            let (what, args) = describe(&change);
            let result = apply(settings, &store, change).await;
            record(&store, what, args, result, out).await
        }
    };
    store.close().await;
    code
}

/// Writes a change's outcome to the audit trail, then says it: the answer on `out`, or the
/// reason on stderr. Answers the exit code (2 when the trail did not take it).
async fn record(
    store: &Store,
    what: &'static str,
    args: Map<String, Value>,
    result: Result<String, Stop>,
    out: &mut dyn Write,
) -> u8 {
    let (id, name) = operator();
    let entry = AuditEntry::new(
        uuid::Uuid::new_v4().simple().to_string(),
        match &result {
            Ok(_) => Step::Succeeded,
            Err(Stop(1, _)) => Step::Failed,
            Err(_) => Step::Invalid,
        },
        Platform::Cli,
        id,
        name,
        what,
    )
    .args(args);
    let entry = match &result {
        Ok(_) => entry,
        Err(Stop(_, reason)) => entry.reason(reason.clone()),
    };
    // Beside a busy runbot on the same SQLite file the append may find the database locked
    // for a moment: a whole append is rolled back when it fails, so it is tried again.
    let audit = Audit::new(store.clone());
    let mut tries = 0;
    loop {
        match audit.append(entry.clone()).await {
            Ok(_) => break,
            Err(e) if tries < 5 && e.to_string().contains("database is locked") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
            }
            Err(e) => {
                // Nothing is kept that could not be audited: say so loudly.
                eprintln!("runbot: the audit trail did not take this change: {e}");
                return 2;
            }
        }
    }
    match result {
        Ok(said) => match writeln!(out, "{said}") {
            Ok(()) => 0,
            Err(_) => 2,
        },
        Err(Stop(code, reason)) => {
            eprintln!("runbot: {reason}");
            code
        }
    }
}

/// The audit trail's command name and arguments for a change (never the password).
fn describe(command: &UserCommand) -> (&'static str, Map<String, Value>) {
    let (what, value) = match command {
        UserCommand::Add { name, roles, .. } => {
            ("user.add", json!({ "name": name, "roles": roles }))
        }
        UserCommand::Passwd { name, .. } => ("user.passwd", json!({ "name": name })),
        UserCommand::Disable { name } => ("user.disable", json!({ "name": name })),
        UserCommand::List => ("user.list", json!({})),
    };
    (what, object(value))
}

async fn apply(settings: &Settings, store: &Store, command: UserCommand) -> Result<String, Stop> {
    let now = format_time(chrono::Utc::now());
    let db = |e: sqlx::Error| Stop(2, format!("the database did not answer: {e}"));
    match command {
        UserCommand::Add {
            name,
            roles,
            password_stdin,
        } => {
            check_name(&name).map_err(|e| Stop(2, e))?;
            let roles = known_roles(settings, roles)?;
            let password = read_password(password_stdin)?;
            let hash = hash_password(&password).map_err(|e| Stop(2, e))?;
            let roles_json = serde_json::to_string(&roles).expect("a list of strings serializes");
            if !store
                .add_account(&name, &hash, &roles_json, &now)
                .await
                .map_err(db)?
            {
                return Err(Stop(
                    1,
                    format!("an account named {name:?} exists already (disabled ones keep their name): pick another name, or `runbot user passwd {name}`"),
                ));
            }
            Ok(format!(
                "Created console account {name}{}.",
                if roles.is_empty() {
                    " with no roles of its own (it holds what console_users in policies/roles.toml gives it)".to_string()
                } else {
                    format!(
                        " with role{} {}",
                        crate::domain::text::plural(roles.len()),
                        roles.join(", ")
                    )
                }
            ))
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            check_name(&name).map_err(|e| Stop(2, e))?;
            let password = read_password(password_stdin)?;
            let hash = hash_password(&password).map_err(|e| Stop(2, e))?;
            if !store
                .set_account_password(&name, &hash, &now)
                .await
                .map_err(db)?
            {
                return Err(Stop(1, no_account(store, &name).await));
            }
            // Whoever knew the old password is signed out with it.
            store.end_account_sessions(&name, &now).await.map_err(db)?;
            Ok(format!(
                "Set a new password for {name}; its open console sessions ended."
            ))
        }
        UserCommand::Disable { name } => {
            check_name(&name).map_err(|e| Stop(2, e))?;
            if !store.disable_account(&name, &now).await.map_err(db)? {
                return Err(Stop(1, no_account(store, &name).await));
            }
            // The gate reads the account with every session anyway; ending them says so in
            // the sessions' rows too.
            let ended = store.end_account_sessions(&name, &now).await.map_err(db)?;
            Ok(format!(
                "Disabled {name}: it can no longer sign in to the console{}.",
                match ended {
                    0 => String::new(),
                    n => format!(
                        ", and its {n} open session{} ended",
                        crate::domain::text::plural(n as usize)
                    ),
                }
            ))
        }
        UserCommand::List => unreachable!("listed without a change"),
    }
}

/// Why an account could not be changed: missing, or disabled.
async fn no_account(store: &Store, name: &str) -> String {
    match store.account(name).await {
        Ok(Some(a)) if a.disabled_at.is_some() => {
            format!(
                "{name} is disabled (since {})",
                a.disabled_at.unwrap_or_default()
            )
        }
        _ => format!("there is no console account named {name:?}: `runbot user list` shows them"),
    }
}

/// The roles asked for, each checked against policies/roles.toml, without repeats.
fn known_roles(settings: &Settings, asked: Vec<String>) -> Result<Vec<String>, Stop> {
    if asked.is_empty() {
        return Ok(asked);
    }
    let policies = Commands::from_settings(settings)
        .and_then(|(commands, _)| Policies::load(settings, &commands))
        .map_err(|e| Stop(2, format!("cannot load the policies: {e:#}")))?;
    let known: Vec<&str> = policies.roles().names().collect();
    let mut roles: Vec<String> = Vec::new();
    for role in asked {
        if !known.contains(&role.as_str()) {
            return Err(Stop(
                2,
                format!(
                    "there is no role {role:?} in policies/roles.toml: use one of {}",
                    known.join(", ")
                ),
            ));
        }
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

/// The password, from standard input's first line or asked twice on the terminal.
fn read_password(from_stdin: bool) -> Result<String, Stop> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            Stop(
                2,
                format!("cannot read the password from standard input: {e}"),
            )
        })?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(Stop(
                2,
                "no terminal to ask the password on: pass it on standard input with --password-stdin".into(),
            ));
        }
        let ask = |prompt: &str| {
            rpassword::prompt_password(prompt)
                .map_err(|e| Stop(2, format!("cannot read the password: {e}")))
        };
        let first = ask("Password: ")?;
        if ask("Again: ")? != first {
            return Err(Stop(
                2,
                "the two passwords differ: nothing was changed".into(),
            ));
        }
        first
    };
    check_password(&password).map_err(|e| Stop(2, e))?;
    Ok(password)
}

async fn list(store: &Store, out: &mut dyn Write) -> u8 {
    let accounts = match store.accounts().await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("runbot: cannot read the accounts: {e}");
            return 2;
        }
    };
    let rows = accounts
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                roles_cell(&a.roles),
                match &a.disabled_at {
                    Some(at) => format!("disabled {at}"),
                    None => "enabled".into(),
                },
                a.created_at.clone(),
            ]
        })
        .collect();
    print_table(
        out,
        &["NAME", "ROLES", "STATE", "CREATED"],
        rows,
        "No console accounts yet: `runbot user add NAME --role ROLE` makes one.",
    )
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an API token for scripts (`Authorization: Bearer …` on /api/*); it is printed once.
    Create {
        /// What the token is for, e.g. `grafana`; unique among the tokens in use.
        #[arg(long)]
        name: String,
        /// A role from policies/roles.toml the token holds; repeat it for more.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Revoke the token in use by that name: it stops working at once, on every replica.
    Revoke { name: String },
    /// List the tokens: name, roles, when made, whether revoked (never the token).
    List,
}

/// Runs one `runbot token …` command, writing to `out`; answers the exit code.
pub async fn run_token(settings: &Settings, command: TokenCommand, out: &mut dyn Write) -> u8 {
    let Some(store) = open(settings).await else {
        return 2;
    };
    let code = match command {
        TokenCommand::List => list_tokens(&store, out).await,
        TokenCommand::Create { name, roles } => {
            let args = json!({ "name": name, "roles": roles });
            let result = create_token(settings, &store, name, roles).await;
            record(&store, "token.create", object(args), result, out).await
        }
        TokenCommand::Revoke { name } => {
            let args = json!({ "name": name });
            let result = revoke_token(&store, &name).await;
            record(&store, "token.revoke", object(args), result, out).await
        }
    };
    store.close().await;
    code
}

async fn create_token(
    settings: &Settings,
    store: &Store,
    name: String,
    roles: Vec<String>,
) -> Result<String, Stop> {
    if !crate::policy::roles::is_user_name(&name) {
        return Err(Stop(
            2,
            format!("{name:?} is not a token name: use 1 to 64 characters, no spaces"),
        ));
    }
    let roles = known_roles(settings, roles)?;
    let new = super::tokens::generate();
    let row = crate::store::ApiTokenRow {
        id: new.id.clone(),
        name: name.clone(),
        token_hash: new.hash,
        roles: serde_json::to_string(&roles).expect("a list of strings serializes"),
        created_at: format_time(chrono::Utc::now()),
        revoked_at: None,
    };
    let added = store
        .add_api_token(&row)
        .await
        .map_err(|e| Stop(2, format!("the database did not answer: {e}")))?;
    if !added {
        return Err(Stop(
            1,
            format!("a token named {name:?} is in use: revoke it first (`runbot token revoke {name}`) or pick another name"),
        ));
    }
    // The only time the token is shown; the audit row gets the line before it, not the token.
    Ok(format!(
        "Created API token {name} (id {}). Keep it now, it is not shown again:\n{}",
        new.id, new.token
    ))
}

async fn revoke_token(store: &Store, name: &str) -> Result<String, Stop> {
    let revoked = store
        .revoke_api_token(name, &format_time(chrono::Utc::now()))
        .await
        .map_err(|e| Stop(2, format!("the database did not answer: {e}")))?;
    if revoked {
        Ok(format!(
            "Revoked API token {name}: it no longer opens /api/*."
        ))
    } else {
        Err(Stop(
            1,
            format!("there is no API token in use named {name:?}: `runbot token list` shows them"),
        ))
    }
}

async fn list_tokens(store: &Store, out: &mut dyn Write) -> u8 {
    let tokens = match store.api_tokens().await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("runbot: cannot read the tokens: {e}");
            return 2;
        }
    };
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.id.clone(),
                roles_cell(&t.roles),
                match &t.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "in use".into(),
                },
                t.created_at.clone(),
            ]
        })
        .collect();
    print_table(
        out,
        &["NAME", "ID", "ROLES", "STATE", "CREATED"],
        rows,
        "No API tokens yet: `runbot token create --name NAME --role ROLE` makes one.",
    )
}
