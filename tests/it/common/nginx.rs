//! A real nginx (Debian's nginx-light) of the test's own: its config, port and deny file in a
//! folder under scripts/test's RUNBOT_TEST_NGINX_DIR, stopped when dropped.
//!
//! nginx trusts `X-Forwarded-For` from 127.0.0.1 (`set_real_ip_from`, the realip module), so a
//! request can come "from" any address: `deny` matches the address nginx then sees. Loopback
//! itself could not serve, since runbot refuses to block it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct TestNginx {
    pub bin: String,
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub deny: PathBuf,
    pub port: u16,
    /// Started here (not in a container), so stopped here on drop.
    on_host: bool,
    _tmp: tempfile::TempDir,
}

fn bin() -> String {
    std::env::var("RUNBOT_TEST_NGINX_BIN").expect(
        "RUNBOT_TEST_NGINX_BIN is not set: run the tests with scripts/test, which installs nginx-light",
    )
}

impl TestNginx {
    /// An nginx on this host, running until dropped.
    pub async fn start() -> TestNginx {
        let mut n = Self::files(None);
        let out = Command::new(&n.bin).args(n.args(&[])).output().unwrap();
        assert!(
            out.status.success(),
            "nginx did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        n.on_host = true;
        n.wait_listening().await;
        n
    }

    /// The folder, config and deny file, for an nginx started elsewhere (a container).
    /// `pid`: where that nginx keeps its pid, when not in the folder: a container's pid means
    /// nothing on the host, and scripts/test stops every nginx.pid it finds in the folder.
    pub fn files(pid: Option<&str>) -> TestNginx {
        let root = std::env::var("RUNBOT_TEST_NGINX_DIR").expect(
            "RUNBOT_TEST_NGINX_DIR is not set: run the tests with scripts/test, which owns the nginx folder",
        );
        let tmp = tempfile::Builder::new()
            .prefix("nginx-")
            .tempdir_in(root)
            .unwrap();
        let dir = tmp.path().to_path_buf();
        // Workers run as an unprivileged user: they read www/.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/index.html"), "ok\n").unwrap();
        let deny = dir.join("runbot-deny.conf");
        std::fs::write(&deny, "").unwrap();
        // Included too: a test breaks it to make `nginx -t` fail.
        std::fs::write(dir.join("extra.conf"), "").unwrap();
        // Just enough for `nginx -s stop` to find the master, whatever state the real config
        // is left in (nginx parses -c before it signals).
        std::fs::write(
            dir.join("signal.conf"),
            format!("pid {}/nginx.pid;\nevents {{}}\n", dir.display()),
        )
        .unwrap();
        let port = super::free_port();
        let d = dir.display();
        let conf = dir.join("nginx.conf");
        let pid = pid.map_or_else(|| format!("{d}/nginx.pid"), str::to_string);
        std::fs::write(
            &conf,
            format!(
                r#"pid {pid};
error_log {d}/error.log;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/extra.conf;
    server {{
        listen 127.0.0.1:{port};
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        include {deny};
        # A static file, not `return`: return answers before the access phase that denies.
        location / {{ root {d}/www; }}
    }}
}}
"#,
                deny = deny.display()
            ),
        )
        .unwrap();
        TestNginx {
            bin: bin(),
            conf,
            deny,
            port,
            dir,
            on_host: false,
            _tmp: tmp,
        }
    }

    pub async fn wait_listening(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "nginx did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `-e … -p … -c …` then `extra`: this instance's files, whatever nginx's built-in paths.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            "-e".to_string(),
            self.dir.join("error.log").display().to_string(),
            "-p".into(),
            format!("{}/", self.dir.display()),
            "-c".into(),
            self.conf.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// The `[nginx]` settings that point runbot at this instance (host mode).
    pub fn settings(&self) -> String {
        self.settings_for("host", &self.bin)
    }

    /// `mode` "host" or "container"; `bin` is nginx's path where the commands run.
    pub fn settings_for(&self, mode: &str, bin: &str) -> String {
        let argv = |extra: &[&str]| {
            let mut v = vec![bin.to_string()];
            v.extend(self.args(extra));
            format!(
                "[{}]",
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "[nginx]\ndeny_file = {:?}\nmode = \"{mode}\"\ntest = {}\nreload = {}\nallow_list = [\"198.51.100.0/24\"]\ntimeout_secs = 20\nexpiry_check_secs = 1\n",
            self.deny.display().to_string(),
            argv(&["-t"]),
            argv(&["-s", "reload"]),
        )
    }

    /// The `[nginx]` settings of one replica's host: this instance, named `host_id`, followed
    /// every second.
    pub fn settings_as(&self, host_id: &str) -> String {
        format!("{}host_id = {host_id:?}\nsync_secs = 1\n", self.settings())
    }

    /// The status nginx answers a request "from" `client`.
    pub async fn status(&self, client: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/", self.port))
            .header("X-Forwarded-For", client)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// This instance's master process, as the host sees it (also when it runs in a
    /// container): nginx names its config in the master's title.
    fn master(&self) -> Option<String> {
        let conf = self.conf.display().to_string();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).ok()?;
            (cmd.starts_with("nginx: master process") && cmd.contains(&conf)).then_some(pid)
        })
    }

    /// The master's worker processes (an old one lingers after a reload), sorted.
    fn workers(&self, master: &str) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = dir
            .flatten()
            .filter(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // "pid (comm) state ppid …": the parent is the fourth field, after the ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(master)
            })
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort();
        pids
    }

    /// The worker processes' ids: a reload replaces them.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.master().map_or_else(Vec::new, |m| self.workers(&m))
    }

    /// When the deny file was last written.
    pub fn deny_mtime(&self) -> std::time::SystemTime {
        std::fs::metadata(&self.deny).unwrap().modified().unwrap()
    }

    /// Waits (reloads take a moment) until a request from `client` gets `want`, then until
    /// the workers of the previous configuration are gone: until then a new connection may
    /// still reach one of them and get the old answer.
    pub async fn wait_status(&self, client: &str, want: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.status(client).await;
            if got == want {
                if let Some(master) = self.master() {
                    while self.workers(&master).len() > 1 {
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "the old nginx workers did not leave"
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a request from {client} still gets {got}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `nginx -t` of the current files.
    pub fn config_ok(&self) -> bool {
        Command::new(&self.bin)
            .args(self.args(&["-t"]))
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Someone's broken edit elsewhere in nginx's configuration (`nginx -t` then fails), or,
    /// with `false`, that edit undone.
    pub fn break_config(&self, broken: bool) {
        let text = if broken {
            "this_is_not_a_directive on;\n"
        } else {
            ""
        };
        std::fs::write(self.dir.join("extra.conf"), text).unwrap();
    }

    pub fn deny_file(&self) -> String {
        std::fs::read_to_string(&self.deny).unwrap_or_default()
    }

    /// The `deny` lines of the deny file, in order.
    pub fn denied(&self) -> Vec<String> {
        self.deny_file()
            .lines()
            .filter_map(|l| l.strip_prefix("deny ")?.strip_suffix(';'))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        if !self.on_host {
            return;
        }
        let signal = self.dir.join("signal.conf").display().to_string();
        let _ = Command::new(&self.bin)
            .args(self.args(&[]).into_iter().take(4))
            .args(["-c", &signal, "-s", "stop"])
            .output();
        // Wait for the master to go, so the folder is not removed under it.
        let pid = std::fs::read_to_string(self.dir.join("nginx.pid")).unwrap_or_default();
        let pid = pid.trim();
        if !pid.is_empty() {
            for _ in 0..100 {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
