//! A real headless Chromium for the console's browser tests, driven through chromedriver
//! (WebDriver over plain HTTP on loopback) with fantoccini.
//!
//! Each `Browser` has its own chromedriver on a free port, its own Chromium with a temporary
//! profile, and its own screenshot folder. `close` ends the session and fails the test if any
//! process it started is still there afterwards; dropping a `Browser` without `close` (a test
//! that failed) still stops chromedriver and kills whatever it started.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long the `wait_for*` helpers poll before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// A phone's viewport (CSS pixels), for the narrow-screen checks.
pub const PHONE: (u32, u32) = (375, 812);
/// A laptop's.
pub const DESKTOP: (u32, u32) = (1280, 900);

fn required_bin(var: &str, default: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.into()));
    assert!(
        path.is_file(),
        "{} not found ({var}): run the tests with scripts/test, which installs Debian's {package}",
        path.display()
    );
    path
}

pub struct Browser {
    client: Option<Client>,
    driver: Child,
    driver_port: u16,
    /// Chromium's profile and chromedriver's log. Chromium's processes name this folder on
    /// their command lines, which is how `leftovers` recognises them.
    dir: tempfile::TempDir,
    screens: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width` x `height` viewport. `test`
    /// names the folder its screenshots go to.
    pub async fn start(test: &str, (width, height): (u32, u32)) -> Browser {
        assert!(
            !test.is_empty()
                && test
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "a browser test's name is a folder name: {test:?}"
        );
        let chromium = required_bin(
            "RUNBOT_TEST_CHROMIUM_BIN",
            "/usr/lib/chromium/chromium",
            "chromium",
        );
        let chromedriver = required_bin(
            "RUNBOT_TEST_CHROMEDRIVER_BIN",
            "/usr/bin/chromedriver",
            "chromium-driver",
        );
        let dir = tempfile::Builder::new()
            .prefix("runbot-chromium.")
            .tempdir()
            .unwrap();
        let port = super::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A process group of its own, which Chromium inherits, so that one signal ends
            // everything a failed test leaves behind.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e})", chromedriver.display()));
        let mut browser = Browser {
            client: None,
            driver,
            driver_port: port,
            dir,
            screens: Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("browser-screens")
                .join(test),
        };
        browser.wait_for_driver().await;

        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                // Downloads (a command's attachment) land in this browser's folder, unasked.
                "prefs": {
                    "download.default_directory": browser.downloads(),
                    "download.prompt_for_download": false,
                },
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", browser.dir.path().join("profile").display()),
                    format!("--window-size={width},{height}"),
                    "--force-device-scale-factor=1",
                    // As on a phone, scrollbars take no width from the page.
                    "--hide-scrollbars",
                    "--no-first-run",
                    "--no-default-browser-check",
                    // Nothing but the pages under test goes on the network.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match client {
            Ok(c) => browser.client = Some(c),
            Err(e) => panic!(
                "chromedriver could not start Chromium: {e}\n{}",
                browser.driver_log()
            ),
        }
        browser.set_viewport(width, height).await;
        browser
    }

    async fn wait_for_driver(&mut self) {
        let url = format!("http://127.0.0.1:{}/status", self.driver_port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.driver.try_wait().unwrap() {
                panic!("chromedriver exited ({status}):\n{}", self.driver_log());
            }
            if let Ok(r) = reqwest::get(&url).await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after 20 s:\n{}",
                self.driver_log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The last lines of chromedriver's log, for failure messages.
    fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("chromedriver.log"))
            .unwrap_or_else(|e| format!("(no chromedriver log: {e})"));
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        lines[from..].join("\n")
    }

    /// The WebDriver client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser is open")
    }

    /// Makes the page area (not the window) `width` x `height` CSS pixels: the window size
    /// includes whatever frame the browser draws, so it is corrected by what the page sees.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        let c = self.client();
        let (mut w, mut h) = (width, height);
        for _ in 0..3 {
            c.set_window_size(w, h).await.unwrap();
            let (iw, ih) = self.viewport().await;
            if (iw, ih) == (width, height) {
                return;
            }
            w = (w + width).saturating_sub(iw);
            h = (h + height).saturating_sub(ih);
        }
        panic!(
            "could not make the viewport {width}x{height}: it is {:?}",
            self.viewport().await
        );
    }

    /// The page area's size in CSS pixels.
    pub async fn viewport(&self) -> (u32, u32) {
        let v = self
            .eval("return [window.innerWidth, window.innerHeight]")
            .await;
        let n = |i: usize| v[i].as_u64().unwrap() as u32;
        (n(0), n(1))
    }

    /// Opens `url` and waits until it has loaded (WebDriver's navigation does).
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    pub async fn current_url(&self) -> String {
        self.client().current_url().await.unwrap().to_string()
    }

    /// Runs `script` in the page (a function body: `return` gives its value) with `args`
    /// as `arguments`.
    pub async fn eval_with(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.eval_with(script, Vec::new()).await
    }

    /// The elements matching `css` now (none is not an error).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("bad selector {css:?}: {e}"))
    }

    /// Polls until `css` matches an element that is displayed, or fails the test after
    /// `WAIT`.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.wait_for_within(css, WAIT).await
    }

    pub async fn wait_for_within(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            for e in self.find_all(css).await {
                if e.is_displayed().await.unwrap_or(false) {
                    return e;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("no visible {css:?} after {timeout:?}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until an element matching `css` shows `text` (a substring of what the user
    /// sees in it), or fails the test after `WAIT`.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            for e in self.find_all(css).await {
                if e.text().await.is_ok_and(|t| t.contains(text)) {
                    return e;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("no {css:?} showing {text:?} after {WAIT:?}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until `script` (a function body) returns `true`, or fails the test after `WAIT`
    /// saying `what` it waited for.
    pub async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {what}")).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for `css` and clicks it.
    pub async fn click(&self, css: &str) {
        let e = self.wait_for(css).await;
        e.click()
            .await
            .unwrap_or_else(|err| panic!("cannot click {css:?}: {err}"));
    }

    /// Waits for the field `css` and types `text` into it (after what it holds).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css).await;
        e.send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("cannot type into {css:?}: {err}"));
    }

    /// What the browser's console received at `SEVERE` level since the last call: script
    /// errors, failed loads, Content-Security-Policy refusals.
    pub async fn console_errors(&self) -> Vec<String> {
        let id = self
            .client()
            .session_id()
            .await
            .unwrap()
            .expect("a session");
        let url = format!("http://127.0.0.1:{}/session/{id}/se/log", self.driver_port);
        let v: Value = reqwest::Client::new()
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"]
            .as_array()
            .unwrap_or_else(|| panic!("chromedriver's log answer: {v}"))
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The folder downloads go to.
    pub fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    /// Polls until the download `name` is complete in `downloads()`, or fails the test after
    /// `WAIT`, and returns its contents.
    pub async fn wait_for_download(&self, name: &str) -> Vec<u8> {
        let path = self.downloads().join(name);
        let partial = self.downloads().join(format!("{name}.crdownload"));
        let deadline = Instant::now() + WAIT;
        loop {
            if path.is_file() && !partial.exists() {
                return std::fs::read(&path).unwrap();
            }
            if Instant::now() > deadline {
                let there: Vec<String> = std::fs::read_dir(self.downloads())
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                self.fail(&format!(
                    "no download {name:?} after {WAIT:?}; the folder holds {there:?}"
                ))
                .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves a screenshot of the viewport as `<name>.png` in this test's folder under
    /// `CARGO_TARGET_TMPDIR/browser-screens/`, prints where, and returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "a screenshot's name is a file name: {name:?}"
        );
        let png = self.client().screenshot().await.unwrap();
        std::fs::create_dir_all(&self.screens).unwrap();
        let path = self.screens.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Fails the test with `why`, the page's address and its text, and a screenshot.
    async fn fail(&self, why: &str) -> ! {
        let url = self.current_url().await;
        let text = self
            .eval("return document.body ? document.body.innerText : ''")
            .await;
        let text: String = text
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(2000)
            .collect();
        let shot = self.screenshot("failure").await;
        panic!(
            "{why}\npage: {url}\nscreenshot: {}\ntext:\n{text}",
            shot.display()
        );
    }

    /// Ends the session (chromedriver quits Chromium), stops chromedriver, and fails the test
    /// if any process either started is still there a few seconds later.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client
                .close()
                .await
                .unwrap_or_else(|e| panic!("closing the session: {e}"));
        }
        let _ = reqwest::get(format!("http://127.0.0.1:{}/shutdown", self.driver_port)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let driver_gone = self.driver.try_wait().unwrap().is_some();
            let left: Vec<String> = self.leftovers().into_iter().map(|(_, p)| p).collect();
            if driver_gone && left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                // Drop kills them; the test still fails, since a clean close must not need it.
                panic!("still running 10 s after closing the browser: chromedriver exited: {driver_gone}, others: {left:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn leftovers(&self) -> Vec<(i32, String)> {
        let (driver, marker) = self.process_key();
        find_processes(driver, &marker)
    }

    /// What recognises this browser's processes once it is gone: chromedriver's pid (its
    /// process group) and the folder Chromium's command lines name.
    pub fn process_key(&self) -> (i32, String) {
        (
            self.driver.id() as i32,
            self.dir.path().to_string_lossy().into_owned(),
        )
    }

    /// The processes, zombies included, that a browser with this `process_key` started and
    /// that are still there, as "pid state command".
    pub fn processes(driver: i32, marker: &str) -> Vec<String> {
        find_processes(driver, marker)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }
}

/// The processes in chromedriver `driver`'s process group, and any that left the group but
/// still name the browser's folder `marker`, as (pid, "pid state command").
fn find_processes(driver: i32, marker: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
        let (Some((_, comm)), Some((_, rest))) = (stat.split_once('('), stat.rsplit_once(')'))
        else {
            continue;
        };
        let comm = comm.rsplit_once(')').map_or(comm, |(c, _)| c);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first().copied().unwrap_or("?");
        let pgrp = fields.get(2).and_then(|f| f.parse::<i32>().ok());
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let names_dir = String::from_utf8_lossy(&cmdline).contains(marker);
        if pid != driver && (pgrp == Some(driver) || names_dir) {
            found.push((pid, format!("{pid} {state} {comm}")));
        }
    }
    found
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.driver.try_wait().ok().flatten().is_none() {
            // chromedriver's own shutdown quits Chromium properly; a plain HTTP request, since
            // a destructor cannot wait for async code.
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.driver_port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(
                    b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                let _ = s.read_to_end(&mut Vec::new());
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.driver.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        // Whatever is left, chromedriver first, then what it started.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        for (pid, _) in self.leftovers() {
            // SAFETY: kill(2) takes no memory; `pid` is a process this browser started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
