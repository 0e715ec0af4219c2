//! nginx's deny list: addresses parsed strictly, refused when blocking them would lock the team
//! or the stack out, and written to the include file runbot owns, which nginx checks (`nginx -t`)
//! before it reloads (`nginx -s reload`: no restart, no downtime).
//!
//! The database holds the blocks; the file is regenerated whole from it under a lock (a mutex
//! in the process and an advisory `flock` on `<deny_file>.lock`, so replicas on one host take
//! turns too). A file nginx refuses is replaced by the previous one and nothing is reloaded.
//!
//! Every replica that owns a deny file (one per `nginx.host_id`) makes its nginx follow the
//! database every `nginx.sync_secs` (`executors::nginx::follow`), so a block made through one
//! replica reaches every host; each records which list it applied ([`version`]).

use crate::domain::net::{canonical, parse_range};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::executors::docker::engine::Docker;

/// One line of the deny file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub network: String,
    pub by: String,
    pub reason: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// Comments hold chat text: nothing in them may end the comment or the line.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The deny file: a header, then one `deny` line per block with a comment naming who, why and
/// until when. Entries are re-parsed here, so only a valid range ever reaches nginx.
pub fn render(entries: &[Entry]) -> String {
    let mut s = String::from(
        "# Written by runbot: every change here is overwritten. Use /block-ip, /unblock-ip and /blocked.\n",
    );
    for e in entries {
        let Ok(net) = parse_range(&e.network) else {
            tracing::error!(network = %e.network, "a stored block is not a valid range; left out of the deny file");
            continue;
        };
        let until = e.expires_at.as_deref().unwrap_or("no expiry");
        let why = e.reason.as_deref().unwrap_or("no reason given");
        s.push_str(&format!(
            "# by {} at {}, until {until}: {}\ndeny {};\n",
            comment_text(&e.by),
            e.created_at,
            comment_text(why),
            canonical(&net)
        ));
    }
    s
}

/// The version of a deny file: SHA-256 of its text, in hex. Every host renders the same text
/// from the same blocks, so equal versions mean the same list.
pub fn version(content: &str) -> String {
    use sha2::Digest;
    crate::domain::text::hex(&sha2::Sha256::digest(content.as_bytes()))
}

/// Why nginx did not take a new deny file.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("nginx refused the new deny list, so the previous one was put back and nothing was reloaded. nginx said: {0}")]
    Invalid(String),
    #[error("nginx did not reload ({0}); the previous deny list was put back")]
    Reload(String),
    #[error("{0}")]
    Other(String),
}

/// Where nginx's commands run.
#[derive(Clone)]
pub enum RunsIn {
    /// On runbot's host.
    Host,
    /// Inside a running container of this compose service of the stack.
    Container { docker: Docker, service: String },
}

/// What [`Nginx`] is built from (`[nginx]`, checked by the settings).
pub struct Options {
    pub deny_file: PathBuf,
    pub runs_in: RunsIn,
    /// Argument vectors, never a shell.
    pub test: Vec<String>,
    pub reload: Vec<String>,
    /// Longest wait for `test` or `reload`.
    pub timeout: Duration,
    pub host_id: String,
    pub sync: Duration,
}

/// How runbot reaches nginx: the deny file, and its test and reload commands.
#[derive(Clone)]
pub struct Nginx {
    pub deny_file: PathBuf,
    runs_in: RunsIn,
    test: Vec<String>,
    reload: Vec<String>,
    timeout: Duration,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// This host, as /blocked names it (`nginx.host_id`).
    pub host_id: String,
    /// How often this runbot follows the database (`nginx.sync_secs`).
    pub sync: Duration,
    /// The last list this nginx refused, and when: tried again only after a while, so a
    /// broken nginx config is not tested at every pass.
    refused: std::sync::Arc<std::sync::Mutex<Option<(String, std::time::Instant)>>>,
}

/// Held while the file is rewritten: the process's mutex and the host-wide `flock`.
pub struct Lock {
    _in_process: tokio::sync::OwnedMutexGuard<()>,
    // Closing the file releases the flock.
    _file: std::fs::File,
}

impl Nginx {
    pub fn new(o: Options) -> Nginx {
        Nginx {
            deny_file: o.deny_file,
            runs_in: o.runs_in,
            test: o.test,
            reload: o.reload,
            timeout: o.timeout,
            lock: Default::default(),
            host_id: o.host_id,
            sync: o.sync,
            refused: Default::default(),
        }
    }

    /// How long a list nginx refused waits before it is tried again (a changed list is tried
    /// at once).
    pub fn retry_refused_after(&self) -> Duration {
        self.sync * 12
    }

    /// Whether `version` is the list nginx refused less than [`Self::retry_refused_after`] ago.
    pub fn refused_recently(&self, version: &str) -> bool {
        // std Mutex: held for a comparison, never across an await.
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused
            .as_ref()
            .is_some_and(|(v, at)| v == version && at.elapsed() < self.retry_refused_after())
    }

    /// Remembers the list nginx refused (None once one applied).
    pub fn note_refused(&self, version: Option<&str>) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) =
            version.map(|v| (v.to_string(), std::time::Instant::now()));
    }

    fn side_file(&self, suffix: &str) -> PathBuf {
        let mut name = self
            .deny_file
            .file_name()
            .unwrap_or_default()
            .to_os_string();
        name.push(suffix);
        self.deny_file.with_file_name(name)
    }

    /// One writer at a time, in this process and across processes on this host.
    pub async fn lock(&self) -> Result<Lock, NginxError> {
        let guard = self.lock.clone().lock_owned().await;
        let path = self.side_file(".lock");
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            f.lock()?;
            Ok(f)
        })
        .await
        .map_err(|e| NginxError::Other(e.to_string()))?
        .map_err(|e| {
            NginxError::Other(format!(
                "cannot lock {}: {e}",
                self.side_file(".lock").display()
            ))
        })?;
        Ok(Lock {
            _in_process: guard,
            _file: file,
        })
    }

    /// The file as it is now (empty when missing).
    pub async fn current(&self) -> String {
        tokio::fs::read_to_string(&self.deny_file)
            .await
            .unwrap_or_default()
    }

    /// Writes `content` atomically, has nginx test it and reloads; on any failure the previous
    /// file is back. Call with the [`Lock`] held.
    pub async fn install(&self, _lock: &Lock, content: &str) -> Result<(), NginxError> {
        let previous = match tokio::fs::read(&self.deny_file).await {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(NginxError::Other(format!(
                    "cannot read {}: {e}; nothing was changed",
                    self.deny_file.display()
                )))
            }
        };
        self.write(content.as_bytes()).await.map_err(|e| {
            NginxError::Other(format!(
                "cannot write {}: {e}; nothing was changed",
                self.deny_file.display()
            ))
        })?;
        let failure = match self.run(&self.test).await {
            Err(out) => Some(NginxError::Invalid(out)),
            Ok(_) => match self.run(&self.reload).await {
                Err(out) => Some(NginxError::Reload(out)),
                Ok(_) => None,
            },
        };
        let Some(failure) = failure else {
            return Ok(());
        };
        let restored = match &previous {
            Some(b) => self.write(b).await,
            None => tokio::fs::remove_file(&self.deny_file).await,
        };
        if let Err(e) = restored {
            tracing::error!(error = %e, file = %self.deny_file.display(), "could not put the previous deny list back");
            return Err(NginxError::Other(format!(
                "{failure}. Putting the previous file back failed too ({e}): check {} by hand",
                self.deny_file.display()
            )));
        }
        Err(failure)
    }

    /// Temp file beside the target, fsync, rename, fsync the folder: nginx never reads half a
    /// file, and a crash leaves the old or the new one.
    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let target = self.deny_file.clone();
        let tmp = self.side_file(".runbot-tmp");
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &target)?;
            if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Runs one of the commands where nginx runs; Err holds what it said.
    async fn run(&self, argv: &[String]) -> Result<String, String> {
        match &self.runs_in {
            RunsIn::Host => run_host(argv, self.timeout).await,
            RunsIn::Container { docker, service } => {
                let containers = docker.service(service).await.map_err(|e| e.to_string())?;
                let c = containers
                    .iter()
                    .find(|c| c.is_running())
                    .ok_or_else(|| format!("no running container of service {service}"))?;
                let (code, out) = docker.exec(&c.id, argv).await.map_err(|e| e.to_string())?;
                if code == 0 {
                    Ok(out)
                } else {
                    Err(clean(&out, code))
                }
            }
        }
    }

    /// The deny file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.deny_file
    }
}

/// nginx's own words, without its timestamps, clipped for a chat message.
fn clean(out: &str, code: i64) -> String {
    let lines: Vec<String> = out
        .lines()
        .map(|l| {
            // "2026/11/28 03:13:45 [emerg] 14641#14641: unexpected …" → "[emerg] unexpected …"
            match (l.find(" ["), l.find("]: "), l.find("#")) {
                (Some(a), _, Some(h)) if a < h => {
                    let level_end = l[a..].find(']').map(|e| a + e + 1).unwrap_or(a);
                    let rest = l[h..].find(": ").map(|c| &l[h + c + 2..]).unwrap_or("");
                    format!("{} {rest}", l[a + 1..level_end].trim())
                }
                _ => l.trim().to_string(),
            }
        })
        .filter(|l| !l.is_empty())
        .collect();
    let text = if lines.is_empty() {
        format!("it exited with code {code} and said nothing")
    } else {
        lines.join(" / ")
    };
    crate::domain::text::clip(&text, 600)
}

async fn run_host(argv: &[String], timeout: Duration) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("an empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(timeout, child).await {
        Err(_) => {
            return Err(format!(
                "{program} did not finish within {} s",
                timeout.as_secs()
            ))
        }
        Ok(Err(e)) => return Err(format!("cannot run {program}: {e}")),
        Ok(Ok(o)) => o,
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(clean(&text, out.status.code().map_or(-1, i64::from)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_who_why_and_until_when_and_nothing_else_gets_in() {
        let e = |n: &str, r: Option<&str>| Entry {
            network: n.into(),
            by: "Dana".into(),
            reason: r.map(str::to_string),
            created_at: "2026-11-28T03:00:00Z".into(),
            expires_at: None,
        };
        let text = render(&[
            e(
                "203.0.113.7",
                Some("credential stuffing\ninclude /etc/passwd;"),
            ),
            e("1.2.3.4; include /etc/passwd", None),
        ]);
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            ["deny 203.0.113.7;"]
        );
        assert!(text.contains("# by Dana at 2026-11-28T03:00:00Z, until no expiry: credential stuffing include /etc/passwd;"));
    }

    #[test]
    fn nginx_words_lose_their_timestamps() {
        let out = "nginx: [emerg] unexpected \"}\" in /etc/nginx/runbot-deny.conf:3\n2026/11/28 03:13:45 [emerg] 14641#14641: unexpected end of file in /x:26\nnginx: configuration file /x test failed\n";
        let c = clean(out, 1);
        assert!(c.contains("[emerg] unexpected end of file in /x:26"), "{c}");
    }
}
