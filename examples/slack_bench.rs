//! Slack under load, for `scripts/bench`: a release `runbot serve` (`RUNBOT_BIN`) against the
//! test suite's fake Slack (`crates/fake-slack`, in this process), in three parts, each with a
//! fresh server, database and fake:
//!
//! 1. `http`: signed slash commands (`/oncall`, a read whose first answer needs no Docker)
//!    POSTed to `/slack/commands` at `--rate` per second, open loop; each signed afresh with a
//!    new timestamp (runbot refuses a replayed signature) and its own `response_url`. Time from
//!    sending to the HTTP answer (Slack's "first answer", due within 3 s), and whether the
//!    result ("On call now") reached its `response_url`.
//! 2. `socket`: the same command as Socket Mode `slash_commands` envelopes, sent by the fake
//!    on runbot's own WebSocket at `--socket-rate` per second; the fake's own record of each
//!    envelope's delay from delivery to ack ([`fake_slack::Ack::after`]).
//! 3. `cards`: Alertmanager webhooks at `--card-rate` per second, one new group each, routed
//!    by a label over `--channels` channels so that runbot's own pacing (about one post per
//!    second per channel, `src/chat/slack/send.rs`) never binds, and the fake's limits off.
//!    Time from each webhook's 200 to the fake receiving that group's `chat.postMessage`
//!    (both clocks this process's).
//!
//! Each part prints one line of `key=value` fields (`slack-http:`, `slack-socket:`,
//! `slack-cards:`), with runbot's peak RSS (`hwm_kb`, VmHWM) for that part.
//!
//! ```text
//! RUNBOT_BIN=target/release/runbot slack_bench [--part http|socket|cards|all] [--rate 200]
//!     [--socket-rate 200] [--card-rate 50] [--duration 10] [--card-duration 10]
//!     [--channels 100] [--dir DIR]
//! ```
//!
//! Commands come from four people holding devops-lead by Slack member id, with
//! `interactions.per_user_per_minute` at its maximum (6000) and burst 1000, so the per-user
//! limit (30 a minute by default) never binds: the bench measures runbot, not its refusals.

#[path = "support/flags.rs"]
mod flags;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use fake_slack::{FakeSlack, APP_TOKEN, BOT_TOKEN, SIGNING_SECRET};
use serde_json::{json, Value};

const USAGE: &str = "\
usage: RUNBOT_BIN=PATH slack_bench [options]
  --part P            http, socket, cards or all (default all)
  --rate R            signed slash commands/s over HTTP (default 200)
  --socket-rate R     Socket Mode envelopes/s (default 200)
  --card-rate R       webhooks/s, one new group each (default 50)
  --duration SECS     length of the command runs (default 10)
  --card-duration SECS  length of the card run (default 10)
  --channels N        channels the cards are routed over (default 100)
  --timeout SECS      wait this long for the last results and cards (default 30)
  --dir DIR           work directory (server logs, databases); default a temp dir, removed";

/// Where a slash command is typed.
const CHANNEL: &str = "C0BENCHOPS";
/// Where cards go that no route takes (none here).
const ALERT_CHANNEL: &str = "C0BENCHALL";
/// The people typing the commands: devops-leads by member id.
const USERS: [&str; 4] = ["U0BENCH01", "U0BENCH02", "U0BENCH03", "U0BENCH04"];
const WEBHOOK_TOKEN: &str = "slack-bench-webhook-token-0123456789";

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Http,
    Socket,
    Cards,
}

struct Args {
    runbot: PathBuf,
    parts: Vec<Part>,
    rate: f64,
    socket_rate: f64,
    card_rate: f64,
    duration: Duration,
    card_duration: Duration,
    channels: usize,
    timeout: Duration,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        runbot: std::env::var_os("RUNBOT_BIN")
            .map(PathBuf::from)
            .ok_or("RUNBOT_BIN must name the runbot binary (a release build)")?,
        parts: vec![Part::Http, Part::Socket, Part::Cards],
        rate: 200.0,
        socket_rate: 200.0,
        card_rate: 50.0,
        duration: Duration::from_secs(10),
        card_duration: Duration::from_secs(10),
        channels: 100,
        timeout: Duration::from_secs(30),
        dir: None,
    };
    for (name, value) in flags::pairs()? {
        let bad = |what: &str| format!("invalid {what} for {name}: {value:?}");
        let rate = |v: &str| match v.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
            _ => Err(bad("rate (a positive number)")),
        };
        let secs = |v: &str| match v.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(bad("seconds")),
        };
        match name.as_str() {
            "--part" => {
                args.parts = match value.as_str() {
                    "http" => vec![Part::Http],
                    "socket" => vec![Part::Socket],
                    "cards" => vec![Part::Cards],
                    "all" => vec![Part::Http, Part::Socket, Part::Cards],
                    _ => return Err(bad("part (http, socket, cards or all)")),
                }
            }
            "--rate" => args.rate = rate(&value)?,
            "--socket-rate" => args.socket_rate = rate(&value)?,
            "--card-rate" => args.card_rate = rate(&value)?,
            "--duration" => args.duration = secs(&value)?,
            "--card-duration" => args.card_duration = secs(&value)?,
            "--timeout" => args.timeout = secs(&value)?,
            "--channels" => {
                args.channels = match value.parse() {
                    // Channel ids C0BENCH000..C0BENCH999.
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => return Err(bad("number of channels (1 to 1000)")),
                }
            }
            "--dir" => args.dir = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {name}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One thread for the load (the fake has a thread of its own): the machine's other cores
    // are runbot's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("slack_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let _temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?;
            let path = t.path().to_path_buf();
            _temp = t;
            path
        }
    };
    let mut ok = true;
    for part in &args.parts {
        ok &= match part {
            Part::Http => commands_over_http(&args, &dir.join("slack-http")).await?,
            Part::Socket => commands_over_socket(&args, &dir.join("slack-socket")).await?,
            Part::Cards => cards(&args, &dir.join("slack-cards")).await?,
        };
    }
    Ok(ok)
}

// ---------------------------------------------------------------------------------------
// runbot

/// A `runbot serve` of this bench: its own dir, settings file, SQLite database and log.
struct Runbot {
    child: Child,
    base: String,
}

impl Runbot {
    /// Starts runbot in `dir` with `slack` (the `[slack]` table and its routes) and waits until
    /// it is healthy.
    async fn start(bin: &Path, dir: &Path, slack: &str) -> Result<Runbot, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let policies = write_policies(dir)?;
        // A port nobody holds now; runbot binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let config = dir.join("runbot.toml");
        let toml = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [database]\nurl = \"sqlite://{db}\"\n\n\
             [alertmanager]\nwebhook_token = \"{WEBHOOK_TOKEN}\"\n\n\
             [policy]\ndir = \"{policies}\"\n\n\
             [log]\nlevel = \"warn\"\n\n\
             # Pages are not measured here; cards and commands are.\n\
             [escalation]\nenabled = false\n\n\
             # The per-user limit would refuse nearly every command of four people at 200/s.\n\
             [interactions]\nper_user_per_minute = 6000\nper_user_burst = 1000\n\n{slack}",
            db = dir.join("runbot.db").display(),
            policies = policies.display(),
        );
        std::fs::write(&config, toml).map_err(|e| format!("{}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.join("server.log"))
            .map_err(|e| format!("server.log: {e}"))?;
        let mut cmd = Command::new(bin);
        // Hermetic: only this bench's settings, not the caller's.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("RUNBOT__")) {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUNBOT_CONFIG", &config)
            .arg("serve")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut runbot = Runbot {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = runbot.child.try_wait() {
                return Err(format!(
                    "runbot exited during startup ({status}); its log:\n{}",
                    tail(&dir.join("server.log"))
                ));
            }
            let healthy = client
                .get(format!("{}/healthz", runbot.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                break;
            }
            if Instant::now() > deadline {
                runbot.stop().await;
                return Err(format!(
                    "runbot not healthy after 30 s; its log:\n{}",
                    tail(&dir.join("server.log"))
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "[slack_bench] runbot healthy at {} (pid {}, dir {}); settling 1 s",
            runbot.base,
            runbot.child.id(),
            dir.display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(runbot)
    }

    /// A field of /proc/PID/status in kB (`VmHWM`: the peak RSS so far).
    fn status_kb(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// SIGTERM, then SIGKILL after 10 s.
    async fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("[slack_bench] runbot did not exit 10 s after SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Runbot {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The shipped policies, with a roles.toml giving the bench's people devops-lead.
fn write_policies(dir: &Path) -> Result<PathBuf, String> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).map_err(|e| e.to_string())?;
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    for entry in std::fs::read_dir(shipped).map_err(|e| format!("{shipped}: {e}"))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        std::fs::copy(&path, policies.join(path.file_name().unwrap()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let users: Vec<String> = USERS.iter().map(|u| format!("\"{u}\"")).collect();
    let role = |name: &str, hours: &str, users: &str| {
        format!(
            "[roles.{name}]\ndiscord_roles = []\nslack_users = [{users}]\nhours = \"{hours}\"\n\n"
        )
    };
    let roles = [
        role("devops-lead", "24/7", &users.join(", ")),
        role("backend-lead", "24/7", ""),
        role("developer", "24/7", ""),
        role("dba", "weekends", ""),
        role("security", "24/7", ""),
        role("cto", "24/7", ""),
        role("viewer", "business", ""),
    ]
    .concat();
    std::fs::write(policies.join("roles.toml"), roles).map_err(|e| e.to_string())?;
    Ok(policies)
}

fn slack_table(fake: &FakeSlack, mode: &str) -> String {
    let credential = match mode {
        "http" => format!("signing_secret = \"{SIGNING_SECRET}\""),
        _ => format!("app_token = \"{APP_TOKEN}\""),
    };
    format!(
        "[slack]\nbot_token = \"{BOT_TOKEN}\"\nmode = \"{mode}\"\n{credential}\n\
         api_base = \"{}\"\nalert_channel_id = \"{ALERT_CHANNEL}\"\n",
        fake.api_base()
    )
}

// ---------------------------------------------------------------------------------------
// Figures

fn percentile(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    ms(sorted[i])
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

/// `p50=… p90=… p99=… max=…` of `samples` (sorted here).
fn spread(samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "p50={} p90={} p99={} max={}",
        percentile(samples, 0.50),
        percentile(samples, 0.90),
        percentile(samples, 0.99),
        percentile(samples, 1.0)
    )
}

/// Every string in a JSON value, joined (a Slack answer's text, blocks and fields).
fn strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn says(v: &Value, text: &str) -> bool {
    let mut s = String::new();
    strings(v, &mut s);
    s.contains(text)
}

/// The result of `/oncall`.
const RESULT: &str = "On call now";

/// How many of these commands got their result, in the first answer or on their
/// `response_url`; waits up to `timeout` for the last ones.
async fn results(fake: &FakeSlack, sent: &[(String, Option<Value>)], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let n = sent
            .iter()
            .filter(|(url, first)| {
                first.as_ref().is_some_and(|f| says(f, RESULT))
                    || fake.responses(url).iter().any(|b| says(b, RESULT))
            })
            .count();
        if n == sent.len() || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. Slash commands over HTTP

async fn commands_over_http(args: &Args, dir: &Path) -> Result<bool, String> {
    let fake = FakeSlack::start().await;
    let mut runbot = Runbot::start(&args.runbot, dir, &slack_table(&fake, "http")).await?;
    let url = format!("{}/slack/commands", runbot.base);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| e.to_string())?;
    let total = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    eprintln!(
        "[slack_bench] http: {total} signed /oncall at {}/s",
        args.rate
    );
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(total);
    let mut lag = Duration::ZERO;
    for n in 0..total {
        let scheduled = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        lag = lag.max(scheduled.elapsed());
        let response_url = fake.response_url();
        let user = USERS[n % USERS.len()];
        let form =
            fake_slack::slash_command_form("/oncall", "", user, "bench", CHANNEL, &response_url);
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            // Signed now, with the time now: each request's signature is new (runbot refuses
            // one it has seen) and fresh.
            let ts = chrono::Utc::now().timestamp();
            let signature = fake_slack::sign(SIGNING_SECRET, ts, form.as_bytes());
            let sent = Instant::now();
            let r = client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", ts.to_string())
                .header("x-slack-signature", signature)
                .body(form)
                .send()
                .await;
            let answer = match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.unwrap_or_default();
                    (status, serde_json::from_slice::<Value>(&body).ok())
                }
                Err(_) => (0, None),
            };
            (response_url, sent.elapsed(), answer)
        }));
    }
    let mut done = Vec::with_capacity(total);
    for t in tasks {
        done.push(t.await.map_err(|e| format!("a request task: {e}"))?);
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let errors = done
        .iter()
        .filter(|(_, _, (status, body))| *status != 200 || body.is_none())
        .count();
    let mut first: Vec<Duration> = done
        .iter()
        .filter(|(_, _, (status, body))| *status == 200 && body.is_some())
        .map(|(_, d, _)| *d)
        .collect();
    let deferred = done
        .iter()
        .filter(|(_, _, (_, b))| b.as_ref().is_some_and(|b| says(b, "Working on it")))
        .count();
    let sent: Vec<(String, Option<Value>)> = done
        .into_iter()
        .map(|(url, _, (_, body))| (url, body))
        .collect();
    let results = results(&fake, &sent, args.timeout).await;
    let hwm = runbot.status_kb("VmHWM");
    runbot.stop().await;
    println!(
        "slack-http: total={total} errors={errors} rate={achieved:.0}/s {} deferred={deferred} \
         results={results} lag_max={} hwm_kb={hwm} 429s={}",
        spread(&mut first),
        ms(lag),
        fake.rate_limited(),
    );
    Ok(errors == 0 && results == total)
}

// ---------------------------------------------------------------------------------------
// 2. Slash commands over Socket Mode

async fn commands_over_socket(args: &Args, dir: &Path) -> Result<bool, String> {
    let fake = FakeSlack::start().await;
    let mut runbot = Runbot::start(&args.runbot, dir, &slack_table(&fake, "socket")).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.connected() == 0 {
        if Instant::now() > deadline {
            return Err(format!(
                "runbot opened no Socket Mode connection in 10 s; its log:\n{}",
                tail(&dir.join("server.log"))
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = (args.socket_rate * args.duration.as_secs_f64())
        .round()
        .max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.socket_rate);
    eprintln!(
        "[slack_bench] socket: {total} /oncall envelopes at {}/s",
        args.socket_rate
    );
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut envelopes = Vec::with_capacity(total);
    let mut lag = Duration::ZERO;
    for n in 0..total {
        let scheduled = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        lag = lag.max(scheduled.elapsed());
        let response_url = fake.response_url();
        let user = USERS[n % USERS.len()];
        let payload =
            fake_slack::slash_command_payload("/oncall", "", user, "bench", CHANNEL, &response_url);
        // Returns once the envelope is on its way (the fake times the ack from then).
        let id = fake.send_envelope("slash_commands", payload, true).await;
        envelopes.push((id, response_url));
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    // Every envelope's first ack, waiting for the last ones.
    let ids: HashSet<&str> = envelopes.iter().map(|(id, _)| id.as_str()).collect();
    let deadline = Instant::now() + args.timeout;
    let acks = loop {
        let acks: HashMap<String, fake_slack::Ack> = fake
            .acks()
            .into_iter()
            .filter(|(id, a)| a.count == 1 && ids.contains(id.as_str()))
            .collect();
        if acks.len() == total || Instant::now() > deadline {
            break acks;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut after: Vec<Duration> = acks.values().map(|a| a.after).collect();
    let late = after
        .iter()
        .filter(|d| **d >= fake_slack::ACK_DEADLINE)
        .count();
    let sent: Vec<(String, Option<Value>)> = envelopes
        .iter()
        .map(|(id, url)| (url.clone(), acks.get(id).and_then(|a| a.payload.clone())))
        .collect();
    let with_payload = sent.iter().filter(|(_, p)| p.is_some()).count();
    let results = results(&fake, &sent, args.timeout).await;
    let redelivered = fake
        .acks()
        .iter()
        .filter(|(id, a)| a.count > 1 && ids.contains(id.as_str()))
        .count();
    let bad = fake.bad_acks().len();
    let hwm = runbot.status_kb("VmHWM");
    runbot.stop().await;
    println!(
        "slack-socket: total={total} acked={} rate={achieved:.0}/s {} late={late} \
         with_answer={with_payload} results={results} redelivered={redelivered} bad_acks={bad} \
         lag_max={} connections={} hwm_kb={hwm}",
        acks.len(),
        spread(&mut after),
        ms(lag),
        fake.connections_opened(),
    );
    Ok(acks.len() == total && late == 0 && bad == 0 && results == total)
}

// ---------------------------------------------------------------------------------------
// 3. Cards

/// An Alertmanager v4 webhook: one firing alert of a new group `name`, routed by `channel`.
fn webhook(name: &str, channel: &str, fingerprint: u64) -> String {
    let labels = json!({"alertname": name, "instance": "bench-0", "service": "bench",
        "severity": "warning", "bench_channel": channel});
    json!({
        "receiver": "runbot",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": format!("{name} on bench-0")},
            "startsAt": chrono::Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": format!("{fingerprint:016x}"),
        }],
        "groupLabels": {"alertname": name},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
        "truncatedAlerts": 0,
    })
    .to_string()
}

fn channel(k: usize) -> String {
    format!("C0BENCH{k:03}")
}

async fn cards(args: &Args, dir: &Path) -> Result<bool, String> {
    let fake = FakeSlack::start().await;
    fake.set_limits(false);
    let routes: String = (0..args.channels)
        .map(|k| {
            format!(
                "[[slack.routes]]\nchannel_id = \"{c}\"\nmatchers = {{ bench_channel = \"{c}\" }}\n",
                c = channel(k)
            )
        })
        .collect();
    let slack = format!("{}\n{routes}", slack_table(&fake, "http"));
    let mut runbot = Runbot::start(&args.runbot, dir, &slack).await?;
    let url = format!("{}/webhooks/alertmanager", runbot.base);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    let total = (args.card_rate * args.card_duration.as_secs_f64())
        .round()
        .max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.card_rate);
    let per_channel = args.card_rate / args.channels as f64;
    eprintln!(
        "[slack_bench] cards: {total} webhooks at {}/s over {} channels ({per_channel:.2} posts/s per channel)",
        args.card_rate, args.channels
    );
    // Unique across runs: the group names carry this run's time.
    let run = chrono::Utc::now().timestamp_micros() as u64;
    let name = |i: usize| format!("SlackLat{:x}n{i}", run & 0xff_ffff);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(total);
    let mut lag = Duration::ZERO;
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        lag = lag.max(scheduled.elapsed());
        let body = webhook(
            &name(i),
            &channel(i % args.channels),
            run.wrapping_mul(1_000_003).wrapping_add(i as u64),
        );
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(&url)
                .bearer_auth(WEBHOOK_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => Some(Instant::now()),
                _ => None,
            }
        }));
    }
    let mut answered = Vec::with_capacity(total);
    for t in tasks {
        answered.push(t.await.map_err(|e| format!("a webhook task: {e}"))?);
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let ok = answered.iter().flatten().count();
    let names: HashMap<String, usize> = (0..total).map(|i| (name(i), i)).collect();
    // Each group's first chat.postMessage, as the fake received it.
    let deadline = Instant::now() + args.timeout;
    let card_at = loop {
        let mut card_at: Vec<Option<Instant>> = vec![None; total];
        for r in fake.requests() {
            if r.method != "chat.postMessage" || !r.ok {
                continue;
            }
            let mut text = String::new();
            strings(&r.body, &mut text);
            let found = text
                .split(|c: char| !c.is_ascii_alphanumeric())
                .find_map(|w| names.get(w));
            if let Some(&i) = found {
                card_at[i] = Some(card_at[i].map_or(r.at, |c: Instant| c.min(r.at)));
            }
        }
        let cards = card_at.iter().flatten().count();
        if cards >= ok || Instant::now() > deadline {
            break card_at;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // From the 200 to the card; a card may beat the 200 (then 0: it was there first).
    let mut latency: Vec<Duration> = answered
        .iter()
        .zip(&card_at)
        .filter_map(|(a, c)| Some(c.as_ref()?.saturating_duration_since(*a.as_ref()?)))
        .collect();
    let before_200 = answered
        .iter()
        .zip(&card_at)
        .filter(|(a, c)| matches!((a, c), (Some(a), Some(c)) if c < a))
        .count();
    let cards = latency.len();
    let posts = fake.count("chat.postMessage");
    let updates = fake.count("chat.update");
    let hwm = runbot.status_kb("VmHWM");
    runbot.stop().await;
    println!(
        "slack-cards: webhooks={ok} errors={} rate={achieved:.1}/s {} cards={cards}/{ok} \
         before_200={before_200} channels={} per_channel={per_channel:.2}/s posts={posts} \
         updates={updates} 429s={} lag_max={} hwm_kb={hwm}",
        total - ok,
        spread(&mut latency),
        args.channels,
        fake.rate_limited(),
        ms(lag),
    );
    Ok(ok == total && cards == ok && fake.rate_limited() == 0)
}
