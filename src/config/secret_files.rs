//! `K_file` for every secret setting `K`: Docker and Kubernetes mount secrets as files, so
//! `bot_token_file = "/run/secrets/discord_token"` in `runbot.toml`, or
//! `RUNBOT__DISCORD__BOT_TOKEN_FILE`, reads `discord.bot_token` from that file. Done once, on
//! the merged tree of the file and the environment, before serde sees it; which keys are
//! secrets comes from the settings reference, so a new secret key takes `_file` by itself.

use std::io::Read;
use std::path::Path;

use config::{Value, ValueKind};

use super::reference::SECTIONS;

/// The suffix that turns a secret key into the path of a file holding it.
pub const SUFFIX: &str = "_file";

/// A secret is a token or a password: anything bigger is the wrong file.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Secret keys inside lists of tables, which the reference describes as one `list of tables`.
const LIST_SECRETS: [&str; 1] = ["notify.webhooks[].secret"];

/// Every secret key as a path from the root: `discord.bot_token`,
/// `alertmanager.basic_auth.password`, `notify.webhooks[].secret`.
pub fn secret_keys() -> Vec<String> {
    SECTIONS
        .iter()
        .flat_map(|s| {
            s.keys
                .iter()
                .filter(|k| k.kind.starts_with("secret"))
                .map(|k| format!("{}.{}", s.name, k.name))
        })
        .chain(LIST_SECRETS.iter().map(|k| k.to_string()))
        .collect()
}

/// Replaces each `K_file` of a secret `K` in `tree` with `K` read from the file; returns a
/// sentence per problem (never a secret's text). Other `_file` keys are left for serde to
/// refuse as unknown.
pub fn resolve(tree: &mut Value) -> Vec<String> {
    let secrets = secret_keys();
    let mut problems = Vec::new();
    walk(tree, "", "", &secrets, &mut problems);
    problems
}

/// `pattern` is the key with `[]` for list indexes (to match `secrets`), `shown` with the index.
fn walk(value: &mut Value, pattern: &str, shown: &str, secrets: &[String], out: &mut Vec<String>) {
    let join = |base: &str, key: &str| {
        if base.is_empty() {
            key.to_string()
        } else {
            format!("{base}.{key}")
        }
    };
    match &mut value.kind {
        ValueKind::Table(table) => {
            let files: Vec<String> = table
                .keys()
                .filter(|k| {
                    k.strip_suffix(SUFFIX)
                        .is_some_and(|stem| secrets.contains(&join(pattern, stem)))
                })
                .cloned()
                .collect();
            for file_key in files {
                let stem = file_key[..file_key.len() - SUFFIX.len()].to_string();
                let key = join(shown, &stem);
                let Some(entry) = table.remove(&file_key) else {
                    continue;
                };
                if table
                    .get(&stem)
                    .is_some_and(|v| !matches!(v.kind, ValueKind::Nil))
                {
                    out.push(format!(
                        "{key} and {key}{SUFFIX} are both set: keep one (in the settings file or the environment)"
                    ));
                    continue;
                }
                let ValueKind::String(path) = &entry.kind else {
                    out.push(format!("{key}{SUFFIX} must be a file path"));
                    continue;
                };
                match read_secret(&key, Path::new(path)) {
                    Ok(secret) => {
                        table.insert(
                            stem,
                            Value::new(entry.origin().map(str::to_string).as_ref(), secret),
                        );
                    }
                    Err(problem) => out.push(problem),
                }
            }
            for (k, v) in table.iter_mut() {
                walk(v, &join(pattern, k), &join(shown, k), secrets, out);
            }
        }
        ValueKind::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(
                    v,
                    &format!("{pattern}[]"),
                    &format!("{shown}[{i}]"),
                    secrets,
                    out,
                );
            }
        }
        _ => {}
    }
}

/// The secret in `path`, without its trailing newline. Refused when it is missing, not a
/// regular file, open to others (any permission bit for "others"), empty or too big.
fn read_secret(key: &str, path: &Path) -> Result<String, String> {
    let shown = path.display();
    let fail = |why: String| format!("{key}{SUFFIX} = {shown}: {why}");
    let mut file = std::fs::File::open(path).map_err(|e| {
        fail(format!(
            "cannot open it ({e}): fix the path, or mount the secret there"
        ))
    })?;
    // The open file's metadata, not the path's: the file checked is the file read.
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read it ({e})")))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(fail(format!(
                "is open to every user on the host (mode {mode:o}): `chmod 600` it (640 to share it with a group); a Docker secret: `mode: 0400`; Kubernetes: `defaultMode: 0400`"
            )));
        }
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(fail(format!(
            "is {} bytes; a secret file holds only the secret (at most {MAX_SECRET_BYTES} bytes)",
            meta.len()
        )));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_SECRET_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read it ({e})")))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(fail("is empty: write the secret into it".into()));
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use secrecy::ExposeSecret;

    use super::super::{ConfigError, Settings};
    use super::secret_keys;

    const TOKEN: &str = "discord-bot-token-from-a-file-0123";

    /// A file holding `text` with `mode`, in `dir`.
    fn secret(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn load(toml: &str, env: &[(&str, &Path)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runbot.toml");
        std::fs::write(&file, toml).unwrap();
        let env = env
            .iter()
            .map(|(k, p)| (k.to_string(), p.display().to_string()))
            .collect();
        Settings::load_from(Some(&file), env)
    }

    fn problems(r: Result<Settings, ConfigError>) -> String {
        let Err(e) = r else {
            panic!("settings were accepted")
        };
        let e = e.to_string();
        assert!(!e.contains(TOKEN), "the secret was shown: {e}");
        e
    }

    #[test]
    fn every_secret_key_is_known_and_secrets_only() {
        let keys = secret_keys();
        for k in [
            "discord.bot_token",
            "slack.bot_token",
            "slack.signing_secret",
            "slack.app_token",
            "alertmanager.webhook_token",
            "alertmanager.basic_auth.password",
            "console.token",
            "http.metrics_token",
            "email.password",
            "database.url",
            "app_database.url",
            "notify.webhooks[].secret",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
        assert!(!keys.contains(&"http.listen".to_string()));
    }

    #[test]
    fn a_toml_key_and_an_env_key_are_read_from_their_files_without_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let bot = secret(dir.path(), "discord", &format!("{TOKEN}\n"), 0o600);
        let hook = secret(dir.path(), "am", "am-webhook-token-1\r\n", 0o640);
        let s = load(
            &format!(
                "[discord]\nalert_channel_id = \"123456789012345678\"\nbot_token_file = {:?}\n",
                bot.display().to_string()
            ),
            &[("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN_FILE", &hook)],
        )
        .unwrap();
        assert_eq!(s.discord.bot_token.unwrap().expose_secret(), TOKEN);
        assert_eq!(
            s.alertmanager.webhook_token.unwrap().expose_secret(),
            "am-webhook-token-1"
        );
        // Nested tables and lists of tables too.
        let pass = secret(dir.path(), "pass", "basic-auth-pass", 0o400);
        let sig = secret(dir.path(), "sig", "webhook-signing-secret-123", 0o600);
        let s = load(
            &format!(
                "[alertmanager.basic_auth]\nusername = \"am\"\npassword_file = {:?}\n\
                 [[notify.webhooks]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\nsecret_file = {:?}\n",
                pass.display().to_string(),
                sig.display().to_string()
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.alertmanager.basic_auth.unwrap().password.expose_secret(),
            "basic-auth-pass"
        );
        assert_eq!(
            s.notify.webhooks[0].secret.expose_secret(),
            "webhook-signing-secret-123"
        );
    }

    #[test]
    fn a_missing_file_is_refused_naming_the_key_and_path() {
        let e = problems(load(
            "",
            &[(
                "RUNBOT__DISCORD__BOT_TOKEN_FILE",
                Path::new("/nonexistent/discord_token"),
            )],
        ));
        assert!(
            e.contains("discord.bot_token_file = /nonexistent/discord_token")
                && e.contains("cannot open it"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = problems(load(
            &format!(
                "[console]\ntoken_file = {:?}\n",
                dir.path().display().to_string()
            ),
            &[],
        ));
        assert!(
            e.contains("console.token_file") && e.contains("not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_file_open_to_others_is_refused_in_the_toml_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let open = secret(dir.path(), "open", TOKEN, 0o644);
        let e = problems(load(
            &format!(
                "[discord]\nbot_token_file = {:?}\n",
                open.display().to_string()
            ),
            &[],
        ));
        assert!(
            e.contains("discord.bot_token_file")
                && e.contains("mode 644")
                && e.contains("chmod 600"),
            "{e}"
        );
        let e = problems(load("", &[("RUNBOT__SLACK__APP_TOKEN_FILE", &open)]));
        assert!(
            e.contains("slack.app_token_file") && e.contains("chmod 600"),
            "{e}"
        );
        // Even only writable by others: anyone could swap the secret.
        let writable = secret(dir.path(), "w", TOKEN, 0o602);
        let e = problems(load("", &[("RUNBOT__DISCORD__BOT_TOKEN_FILE", &writable)]));
        assert!(e.contains("mode 602"), "{e}");
    }

    #[test]
    fn both_set_empty_too_big_and_non_secret_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = secret(dir.path(), "good", TOKEN, 0o600);
        let e = problems(load(
            &format!("[discord]\nbot_token = \"{TOKEN}\"\n"),
            &[("RUNBOT__DISCORD__BOT_TOKEN_FILE", &good)],
        ));
        assert!(
            e.contains("discord.bot_token and discord.bot_token_file are both set"),
            "{e}"
        );
        let empty = secret(dir.path(), "empty", "\n", 0o600);
        let e = problems(load("", &[("RUNBOT__EMAIL__PASSWORD_FILE", &empty)]));
        assert!(
            e.contains("email.password_file") && e.contains("is empty"),
            "{e}"
        );
        let big = secret(dir.path(), "big", &"x".repeat(70_000), 0o600);
        let e = problems(load("", &[("RUNBOT__HTTP__METRICS_TOKEN_FILE", &big)]));
        assert!(e.contains("70000 bytes"), "{e}");
        let e = problems(load("", &[("RUNBOT__HTTP__LISTEN_FILE", &good)]));
        assert!(
            e.contains("unknown setting `http.listen_file`")
                && e.contains("only secret settings are read from a file"),
            "{e}"
        );
    }
}
