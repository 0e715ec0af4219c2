//! Load generator for runbot's Alertmanager webhook endpoint.
//!
//! Every request is an Alertmanager v4 webhook carrying two alerts with fresh,
//! run-unique fingerprints; group keys cycle over `--groups` distinct groups.
//! One keep-alive HTTP/1.1 connection per worker task, one request in flight
//! per connection.
//!
//! ```text
//! cargo run --release --example loadgen -- --mode throughput --connections 32 --duration 10 \
//!     --url http://127.0.0.1:18080/webhooks/alertmanager --token TOKEN
//! cargo run --release --example loadgen -- --mode rate --rate 1000 --connections 32 --duration 10 \
//!     --url http://127.0.0.1:18080/webhooks/alertmanager --token TOKEN
//! ```
//!
//! Modes:
//! - `throughput`: closed loop; each connection sends its next request as soon as the
//!   previous response is read.
//! - `rate`: open loop at a fixed request rate (request `i` is scheduled at
//!   `start + i / rate`, requests are dealt round-robin to the connections). Latency is
//!   measured from the scheduled send time whenever the connection was still busy at
//!   that time, so server stalls are not hidden (no coordinated omission); when the
//!   connection was idle it is measured from the actual send, so the generator's own
//!   timer granularity (~1 ms in tokio) is not charged to the server.
//!
//! - `discord-latency`: open loop at `--rate` like `rate`, but every webhook carries one
//!   alert of a new group (alertname `Lat{run}n{i}`). Records the wall-clock time each 200
//!   arrived, then polls the fake Discord's stats endpoint (`--stats URL`, see
//!   `examples/fake_discord.rs`) until every group's card has arrived or `--timeout` seconds
//!   have passed, and prints `card latency: p50=… p90=… p99=… max=… cards=N/M`, where a
//!   latency is the time the fake received the card's post minus the time the webhook's 200
//!   arrived (both wall clock, same machine; negative when the card beat the 200).
//! - `storm`: `--alerts` alerts over `--groups` groups (default 5000 over 200), sent as fast as
//!   the connections allow. Each group grows one alert at a time, as Alertmanager re-sends a
//!   group whose alerts join: round k sends, for every group, a webhook with its first k alerts
//!   (25 rounds of 200 webhooks: 5,000 webhooks, 5,000 distinct alerts). A group's webhooks go
//!   one after another on one connection. Then polls the stats endpoint until every group is
//!   visible in Discord, as a card of its own or counted by a digest message, or until
//!   `--timeout` seconds after the first webhook, and prints
//!   `storm: groups=… visible=V/G visible_after=…s bound=…s cards=… digest_listed=… 429s=…`.
//!
//! - `console-cards`: opens `--streams` `GET /api/events` streams with `--api-token`, then sends
//!   webhooks at `--rate` for `--duration`, each one alert of a new group, and times, for every
//!   webhook and stream, its 200 to the arrival of the `event: card` whose `group_id` is the one
//!   runbot's answer named. Prints `console cards: p50=… p99=… max=…` over (webhook, stream)
//!   pairs, `all_p99=…` over webhooks (the slowest of the streams), and with `--pid` the
//!   server's RSS before and after opening the streams (`per_stream_kb`).
//! - `console-page`: `--groups` open groups (one webhook each; waits for their cards on a
//!   stream), then `GET /` with `--console-token` for `--duration` one at a time (`s_…`) and
//!   `--concurrency` at a time (`c_…`); latency at the client, and from `/metrics` the server's
//!   own `runbot_http_request_duration_seconds{route="/"}` buckets over each run.
//! - `console-commands`: `POST /api/commands {"command": "oncall"}` open loop at `--rate`, the
//!   `--api-token`s taking turns; every answer must be the core taking it (`deferred`), and
//!   then every request's result (`GET /api/requests/{id}`) must be the on-call list.
//!
//! The console modes take runbot's base from `--url`.
//!
//! Exits non-zero if any request failed or got a non-200 answer.

#[path = "support/console.rs"]
mod console;
#[path = "support/flags.rs"]
mod flags;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const USAGE: &str = "\
usage: loadgen --mode throughput|rate|discord-latency|storm|console-cards|console-page|console-commands [options]
  --url URL            webhook URL (default http://127.0.0.1:18080/webhooks/alertmanager)
  --token TOKEN        bearer token (default: env RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN)
  --connections C      concurrent keep-alive connections (default 32)
  --duration SECS      run length in seconds, fractions allowed (default 10)
  --rate R             requests/s for --mode rate (default 1000)
  --groups G           distinct alert groups to cycle through (default 500)
  --threads T          tokio worker threads; 1 = current_thread runtime (default 1)
  --stats URL          fake Discord stats base URL (discord-latency, storm)
  --alerts N           alerts in the storm (default 5000; --groups defaults to 200 there)
  --timeout SECS       discord-latency: wait this long for the cards after the last webhook;
                       storm: give up this long after the first webhook (default 60);
                       console modes: wait this long for cards and results
  --api-token TOKEN    an API token (runbot token create); repeat to take turns (console-*)
  --console-token T    console.token (console-page)
  --streams N          /api/events streams (console-cards, default 200)
  --concurrency N      requests in flight in the second GET / run (console-page, default 4)
  --pid PID            runbot's process id, to read its memory (console-cards)";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Throughput,
    Rate,
    DiscordLatency,
    Storm,
    ConsoleCards,
    ConsolePage,
    ConsoleCommands,
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    url: String,
    token: String,
    connections: usize,
    duration: Duration,
    rate: f64,
    groups: u64,
    /// Whether `--groups` was given (the storm has its own default).
    groups_given: bool,
    threads: usize,
    stats: Option<String>,
    alerts: u64,
    timeout: Duration,
    api_tokens: Vec<String>,
    console_token: Option<String>,
    streams: usize,
    concurrency: usize,
    pid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: Mode::Throughput,
        url: "http://127.0.0.1:18080/webhooks/alertmanager".to_string(),
        token: std::env::var("RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN").unwrap_or_default(),
        connections: 32,
        duration: Duration::from_secs(10),
        rate: 1000.0,
        groups: 500,
        groups_given: false,
        threads: 1,
        stats: None,
        alerts: 5000,
        timeout: Duration::from_secs(60),
        api_tokens: Vec::new(),
        console_token: None,
        streams: 200,
        concurrency: 4,
        pid: None,
    };
    for (name, value) in flags::pairs()? {
        let bad = |what: &str| format!("invalid {what} for {name}: {value:?}");
        match name.as_str() {
            "--mode" => {
                args.mode = match value.as_str() {
                    "throughput" => Mode::Throughput,
                    "rate" => Mode::Rate,
                    "discord-latency" => Mode::DiscordLatency,
                    "storm" => Mode::Storm,
                    "console-cards" => Mode::ConsoleCards,
                    "console-page" => Mode::ConsolePage,
                    "console-commands" => Mode::ConsoleCommands,
                    _ => return Err(bad(
                        "mode (throughput|rate|discord-latency|storm|console-cards|console-page|console-commands)",
                    )),
                }
            }
            "--url" => args.url = value,
            "--token" => args.token = value,
            "--connections" => {
                args.connections = value.parse().map_err(|_| bad("count"))?;
                if args.connections == 0 {
                    return Err(bad("count"));
                }
            }
            "--duration" => {
                let secs: f64 = value.parse().map_err(|_| bad("seconds"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(bad("seconds"));
                }
                args.duration = Duration::from_secs_f64(secs);
            }
            "--rate" => {
                args.rate = value.parse().map_err(|_| bad("rate"))?;
                if !(args.rate.is_finite() && args.rate > 0.0) {
                    return Err(bad("rate"));
                }
            }
            "--groups" => {
                args.groups = value.parse().map_err(|_| bad("count"))?;
                if args.groups == 0 {
                    return Err(bad("count"));
                }
                args.groups_given = true;
            }
            "--stats" => args.stats = Some(value.trim_end_matches('/').to_string()),
            "--alerts" => {
                args.alerts = value.parse().map_err(|_| bad("count"))?;
                if args.alerts == 0 {
                    return Err(bad("count"));
                }
            }
            "--timeout" => {
                let secs: f64 = value.parse().map_err(|_| bad("seconds"))?;
                if !(secs.is_finite() && secs >= 0.0) {
                    return Err(bad("seconds"));
                }
                args.timeout = Duration::from_secs_f64(secs);
            }
            "--threads" => {
                args.threads = value.parse().map_err(|_| bad("count"))?;
                if args.threads == 0 {
                    return Err(bad("count"));
                }
            }
            "--api-token" => args.api_tokens.push(value),
            "--console-token" => args.console_token = Some(value),
            "--streams" => {
                args.streams = value.parse().map_err(|_| bad("count"))?;
                if args.streams == 0 {
                    return Err(bad("count"));
                }
            }
            "--concurrency" => {
                args.concurrency = value.parse().map_err(|_| bad("count"))?;
                if args.concurrency == 0 {
                    return Err(bad("count"));
                }
            }
            "--pid" => args.pid = Some(value.parse().map_err(|_| bad("process id"))?),
            _ => return Err(format!("unknown argument {name}")),
        }
    }
    Ok(args)
}

/// Connection target and pre-built header values shared by all workers.
struct Target {
    addr: String,
    path: Uri,
    host: HeaderValue,
    auth: HeaderValue,
    json: HeaderValue,
}

impl Target {
    fn new(url: &str, token: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad --url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("--url must be http:// (got {url:?})"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--url has no host: {url:?}"))?;
        let port = authority.port_u16().unwrap_or(80);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|e| format!("bad path in --url: {e}"))?;
        Ok(Target {
            addr: format!("{}:{}", authority.host(), port),
            path,
            host: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
            auth: HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "token contains invalid header characters".to_string())?,
            json: HeaderValue::from_static("application/json"),
        })
    }

    fn request(&self, body: String) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(AUTHORIZATION, self.auth.clone());
        h.insert(CONTENT_TYPE, self.json.clone());
        req
    }
}

/// Renders webhook bodies. Alert ids come from one shared counter, and the
/// fingerprint is a bijective 64-bit mix of `seed + id`, so fingerprints are
/// unique within a run and (with overwhelming probability) across runs.
struct Payloads {
    seed: u64,
    groups: u64,
    next_request: AtomicU64,
}

fn mix64(mut z: u64) -> u64 {
    // splitmix64 finalizer: a bijection on u64.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Payloads {
    fn next_body(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let g = n % self.groups;
        let svc = g % 25;
        let fp1 = mix64(self.seed.wrapping_add(2 * n));
        let fp2 = mix64(self.seed.wrapping_add(2 * n + 1));
        let (sev1, sev2) = if n.is_multiple_of(2) {
            ("critical", "warning")
        } else {
            ("warning", "critical")
        };
        let inst = n % 8;
        let now = rfc3339_now();
        format!(
            concat!(
                r#"{{"receiver":"bot","status":"firing","alerts":["#,
                r#"{{"status":"firing","labels":{{"alertname":"Bench{g}","instance":"bench-{i1}","service":"svc{s}","severity":"{sev1}"}},"#,
                r#""annotations":{{"summary":"Bench alert {g} on bench-{i1}"}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","#,
                r#""generatorURL":"http://prometheus:9090/graph","fingerprint":"{fp1:016x}"}},"#,
                r#"{{"status":"firing","labels":{{"alertname":"Bench{g}","instance":"bench-{i2}","service":"svc{s}","severity":"{sev2}"}},"#,
                r#""annotations":{{"summary":"Bench alert {g} on bench-{i2}"}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","#,
                r#""generatorURL":"http://prometheus:9090/graph","fingerprint":"{fp2:016x}"}}],"#,
                r#""groupLabels":{{"alertname":"Bench{g}","service":"svc{s}"}},"#,
                r#""commonLabels":{{"alertname":"Bench{g}","service":"svc{s}"}},"#,
                r#""commonAnnotations":{{}},"externalURL":"http://am:9093","version":"4","#,
                r#""groupKey":"{{}}:{{alertname=\"Bench{g}\", service=\"svc{s}\"}}","truncatedAlerts":0}}"#
            ),
            g = g,
            s = svc,
            i1 = inst,
            i2 = inst + 8,
            sev1 = sev1,
            sev2 = sev2,
            now = now,
            fp1 = fp1,
            fp2 = fp2,
        )
    }
}

/// Current UTC time as RFC 3339 with microseconds, without pulling in chrono.
fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, sod) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        d.subsec_micros()
    )
}

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    non_200: u64,
    transport_errors: u64,
    unsent: u64,
    first_error: Option<String>,
}

impl Stats {
    fn error(&mut self, msg: String) {
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(&target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        // Errors surface on the next send_request; nothing to do here.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one webhook; returns when the response body is fully read.
/// On a transport error the connection is dropped and re-established.
async fn send_one(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    target: &Target,
    payloads: &Payloads,
    stats: &mut Stats,
) -> bool {
    send_body(sender, target, || payloads.next_body(), stats).await
}

/// Sends the webhook `body()` renders (after connecting, so a failed connection does not
/// use up a body); returns when the response body is fully read.
async fn send_body(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    target: &Target,
    body: impl FnOnce() -> String,
    stats: &mut Stats,
) -> bool {
    if sender.is_none() {
        match connect(target).await {
            Ok(s) => *sender = Some(s),
            Err(e) => {
                stats.transport_errors += 1;
                stats.error(e);
                // Don't spin against a dead server.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return false;
            }
        }
    }
    let s = sender.as_mut().expect("connected above");
    let req = target.request(body());
    let result = async {
        s.ready().await?;
        let resp = s.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    }
    .await;
    match result {
        Ok((StatusCode::OK, _)) => true,
        Ok((status, body)) => {
            stats.non_200 += 1;
            stats.error(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(2000)])
            ));
            false
        }
        Err(e) => {
            *sender = None;
            stats.transport_errors += 1;
            stats.error(format!("request failed: {e}"));
            false
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn throughput_worker(
    mut sender: Option<SendRequest<Full<Bytes>>>,
    target: Arc<Target>,
    payloads: Arc<Payloads>,
    start: Instant,
    deadline: Instant,
) -> (Stats, Instant) {
    let mut stats = Stats {
        latencies_us: Vec::with_capacity(1 << 16),
        ..Stats::default()
    };
    tokio::time::sleep_until(start.into()).await;
    let mut last = start;
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        let ok = send_one(&mut sender, &target, &payloads, &mut stats).await;
        last = Instant::now();
        if ok {
            stats.latencies_us.push(micros(last - t0));
        }
    }
    (stats, last)
}

/// Waits for a request's slot in an open-loop run and answers the time its latency counts
/// from: the actual send when the connection was idle (timer granularity is not the server's),
/// the scheduled time when it was still busy (the queueing delay is: no coordinated omission).
async fn send_at(scheduled: Instant, now: Instant) -> Instant {
    if now < scheduled {
        tokio::time::sleep_until(scheduled.into()).await;
        Instant::now()
    } else {
        scheduled
    }
}

#[allow(clippy::too_many_arguments)]
async fn rate_worker(
    mut sender: Option<SendRequest<Full<Bytes>>>,
    target: Arc<Target>,
    payloads: Arc<Payloads>,
    start: Instant,
    interval: Duration,
    first: u64,
    stride: u64,
    total: u64,
    give_up: Instant,
) -> (Stats, Instant) {
    let mut stats = Stats {
        latencies_us: Vec::with_capacity(((total / stride) + 1) as usize),
        ..Stats::default()
    };
    let mut last = start;
    let mut i = first;
    while i < total {
        let scheduled = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if now >= give_up {
            stats.unsent += (total - i).div_ceil(stride);
            break;
        }
        let origin = send_at(scheduled, now).await;
        let ok = send_one(&mut sender, &target, &payloads, &mut stats).await;
        last = Instant::now();
        if ok {
            stats.latencies_us.push(micros(last - origin));
        }
        i += stride;
    }
    (stats, last)
}

fn fmt_ms(us: u32) -> String {
    let ms = f64::from(us) / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

fn percentile_f64(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

type Sender = Option<SendRequest<Full<Bytes>>>;

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn run(args: Args) -> Result<bool, String> {
    let target = Arc::new(Target::new(&args.url, &args.token)?);
    let seed = mix64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64
            ^ (u64::from(std::process::id()) << 32),
    );
    match args.mode {
        Mode::DiscordLatency => return discord::latency(&args, target, seed).await,
        Mode::Storm => return discord::storm(&args, target, seed).await,
        Mode::ConsoleCards => return console::cards(&args, seed).await,
        Mode::ConsolePage => return console::page(&args, seed).await,
        Mode::ConsoleCommands => return console::commands(&args).await,
        Mode::Throughput | Mode::Rate => {}
    }
    let payloads = Arc::new(Payloads {
        seed,
        groups: args.groups,
        next_request: AtomicU64::new(0),
    });

    // Open all connections before the clock starts.
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(Some(connect(&target).await?));
    }

    let start = Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::with_capacity(args.connections);
    let total_scheduled = (args.rate * args.duration.as_secs_f64()).round() as u64;
    for (w, sender) in senders.into_iter().enumerate() {
        let (target, payloads) = (target.clone(), payloads.clone());
        handles.push(match args.mode {
            Mode::Throughput => tokio::spawn(throughput_worker(
                sender,
                target,
                payloads,
                start,
                start + args.duration,
            )),
            Mode::Rate => tokio::spawn(rate_worker(
                sender,
                target,
                payloads,
                start,
                Duration::from_secs_f64(1.0 / args.rate),
                w as u64,
                args.connections as u64,
                total_scheduled,
                start + args.duration * 2 + Duration::from_secs(5),
            )),
            _ => unreachable!("handled above"),
        });
    }

    let mut all = Stats::default();
    let mut end = start;
    for h in handles {
        let (s, last) = h.await.map_err(|e| format!("worker panicked: {e}"))?;
        all.latencies_us.extend_from_slice(&s.latencies_us);
        all.non_200 += s.non_200;
        all.transport_errors += s.transport_errors;
        all.unsent += s.unsent;
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
        end = end.max(last);
    }
    all.latencies_us.sort_unstable();
    let lat = &all.latencies_us;
    let errors = all.non_200 + all.transport_errors;
    let total = lat.len() as u64 + errors;
    let elapsed = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let pcts = format!(
        "p50={} p90={} p99={} max={}",
        fmt_ms(percentile(lat, 0.50)),
        fmt_ms(percentile(lat, 0.90)),
        fmt_ms(percentile(lat, 0.99)),
        fmt_ms(lat.last().copied().unwrap_or(0)),
    );
    let err_detail = format!(
        "errors={errors} (non200={} transport={})",
        all.non_200, all.transport_errors
    );
    match args.mode {
        Mode::Throughput => println!(
            "throughput: {:.0} req/s  {pcts}  {err_detail}  total={total} connections={} duration={:.1}s",
            lat.len() as f64 / elapsed,
            args.connections,
            elapsed,
        ),
        Mode::Rate => println!(
            "rate: {:.1} req/s (target {})  {pcts}  {err_detail}  total={total} unsent={} connections={} duration={:.1}s",
            lat.len() as f64 / elapsed,
            args.rate,
            all.unsent,
            args.connections,
            elapsed,
        ),
        _ => unreachable!("handled above"),
    }
    if all.unsent > 0 {
        eprintln!(
            "warning: {} scheduled requests were never sent (server could not keep up with {} req/s)",
            all.unsent, args.rate
        );
    }
    if let Some(e) = &all.first_error {
        eprintln!("first error: {e}");
    }
    Ok(errors == 0)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("loadgen: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The Discord modes: webhooks in, then what the fake Discord received, read from its stats
/// endpoint (`examples/fake_discord.rs`).
mod discord {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use serde_json::{json, Value};

    use super::{connect, mix64, percentile_f64, rfc3339_now, send_body, Args, Stats, Target};

    fn epoch_now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    }

    /// An Alertmanager v4 webhook for the group `name` with these (instance, fingerprint) alerts.
    pub(super) fn webhook(
        name: &str,
        severity: &str,
        starts_at: &str,
        alerts: &[(String, u64)],
    ) -> String {
        let alerts: Vec<Value> = alerts
            .iter()
            .map(|(instance, fp)| {
                json!({
                    "status": "firing",
                    "labels": {"alertname": name, "instance": instance, "service": "bench", "severity": severity},
                    "annotations": {"summary": format!("{name} on {instance}")},
                    "startsAt": starts_at,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus:9090/graph",
                    "fingerprint": format!("{fp:016x}"),
                })
            })
            .collect();
        json!({
            "receiver": "bot",
            "status": "firing",
            "alerts": alerts,
            "groupLabels": {"alertname": name},
            "commonLabels": {"alertname": name, "service": "bench", "severity": severity},
            "commonAnnotations": {},
            "externalURL": "http://am:9093",
            "version": "4",
            "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
            "truncatedAlerts": 0,
        })
        .to_string()
    }

    /// The words of a text (runs of letters and digits): group names are found among them.
    fn words(text: &str) -> impl Iterator<Item = &str> {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
    }

    async fn fetch_stats(client: &reqwest::Client, url: &str) -> Result<Value, String> {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("GET {url}: {e}"))
    }

    fn messages(stats: &Value) -> &[Value] {
        stats["messages"].as_array().map_or(&[], Vec::as_slice)
    }

    pub(super) fn fmt_ms(ms: f64) -> String {
        if ms.abs() < 10.0 {
            format!("{ms:.2}ms")
        } else if ms.abs() < 100.0 {
            format!("{ms:.1}ms")
        } else {
            format!("{ms:.0}ms")
        }
    }

    async fn open(target: &Target, n: usize) -> Result<Vec<super::Sender>, String> {
        let mut senders = Vec::with_capacity(n);
        for _ in 0..n {
            senders.push(Some(connect(target).await?));
        }
        Ok(senders)
    }

    fn merge(all: &mut Stats, s: Stats) {
        all.non_200 += s.non_200;
        all.transport_errors += s.transport_errors;
        all.unsent += s.unsent;
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
    }

    /// `--mode discord-latency`.
    pub async fn latency(args: &Args, target: Arc<Target>, seed: u64) -> Result<bool, String> {
        let stats_url = format!(
            "{}/stats?history=0",
            args.stats
                .as_deref()
                .ok_or("--mode discord-latency needs --stats URL")?
        );
        let client = reqwest::Client::new();
        fetch_stats(&client, &stats_url).await?;
        let run = format!("{:06x}", seed & 0xff_ffff);
        let total = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as u64;
        let conns = args.connections.min(total as usize);
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let senders = open(&target, conns).await?;
        let start = Instant::now() + Duration::from_millis(20);
        let give_up = start + args.duration * 2 + Duration::from_secs(5);
        let mut handles = Vec::new();
        for (w, mut sender) in senders.into_iter().enumerate() {
            let (target, run) = (target.clone(), run.clone());
            handles.push(tokio::spawn(async move {
                let mut stats = Stats::default();
                let mut answered = Vec::new();
                let mut i = w as u64;
                while i < total {
                    let scheduled = start + interval.mul_f64(i as f64);
                    if Instant::now() >= give_up {
                        stats.unsent += (total - i).div_ceil(conns as u64);
                        break;
                    }
                    tokio::time::sleep_until(scheduled.into()).await;
                    let body = || {
                        let name = format!("Lat{run}n{i}");
                        let fp = mix64(seed.wrapping_add(i));
                        webhook(&name, "warning", &rfc3339_now(), &[("bench-0".into(), fp)])
                    };
                    if send_body(&mut sender, &target, body, &mut stats).await {
                        answered.push((i, epoch_now()));
                    }
                    i += conns as u64;
                }
                (stats, answered)
            }));
        }
        let mut all = Stats::default();
        let mut answered_at: Vec<Option<f64>> = vec![None; total as usize];
        for h in handles {
            let (s, answered) = h.await.map_err(|e| format!("worker panicked: {e}"))?;
            merge(&mut all, s);
            for (i, t) in answered {
                answered_at[i as usize] = Some(t);
            }
        }
        let sent_for = start.elapsed().as_secs_f64();
        let ok = answered_at.iter().flatten().count();
        let names: HashMap<String, usize> = (0..total)
            .map(|i| (format!("Lat{run}n{i}"), i as usize))
            .collect();

        // Wait for the cards.
        let deadline = Instant::now() + args.timeout;
        let mut card_at: Vec<Option<f64>> = vec![None; total as usize];
        let stats = loop {
            let stats = fetch_stats(&client, &stats_url).await?;
            for m in messages(&stats) {
                let (Some(title), Some(created)) = (m["title"].as_str(), m["created"].as_f64())
                else {
                    continue;
                };
                if let Some(&i) = words(title).find_map(|w| names.get(w)) {
                    let slot = &mut card_at[i];
                    *slot = Some(slot.map_or(created, |c: f64| c.min(created)));
                }
            }
            let cards = (0..total as usize)
                .filter(|&i| answered_at[i].is_some() && card_at[i].is_some())
                .count();
            if cards >= ok || Instant::now() >= deadline {
                break stats;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut lat_ms: Vec<f64> = (0..total as usize)
            .filter_map(|i| Some((card_at[i]? - answered_at[i]?) * 1000.0))
            .collect();
        lat_ms.sort_by(f64::total_cmp);
        let last_card = card_at.iter().flatten().copied().fold(f64::NAN, f64::max);
        let first_sent = answered_at
            .iter()
            .flatten()
            .copied()
            .fold(f64::NAN, f64::min);
        // Digest messages the fake holds (runbot posts one when more new groups wait than
        // `discord.digest_after`).
        let digests = messages(&stats)
            .iter()
            .filter(|m| m["title"].as_str().and_then(digest_title).is_some())
            .count();
        let errors = all.non_200 + all.transport_errors;
        println!(
            "card latency: p50={} p90={} p99={} max={} cards={}/{ok}  min={} webhooks={ok} rate={:.1}/s (target {}) errors={errors} unsent={} cards_for={:.1}s digests={digests} 429s={} requests={}",
            fmt_ms(percentile_f64(&lat_ms, 0.50)),
            fmt_ms(percentile_f64(&lat_ms, 0.90)),
            fmt_ms(percentile_f64(&lat_ms, 0.99)),
            fmt_ms(lat_ms.last().copied().unwrap_or(0.0)),
            lat_ms.len(),
            fmt_ms(lat_ms.first().copied().unwrap_or(0.0)),
            ok as f64 / sent_for.max(1e-9),
            args.rate,
            all.unsent,
            last_card - first_sent,
            stats["count_429"],
            stats["requests"],
        );
        if lat_ms.len() < ok {
            eprintln!(
                "warning: {} of {ok} cards had not arrived {:.0} s after the last webhook",
                ok - lat_ms.len(),
                args.timeout.as_secs_f64()
            );
        }
        if let Some(e) = &all.first_error {
            eprintln!("first error: {e}");
        }
        Ok(errors == 0)
    }

    /// What the timeline of the fake's messages says about the storm's groups.
    #[derive(Debug, Default)]
    struct Visibility {
        /// When every group was first visible, counting the digests' listed names (a group
        /// with a card and in a digest counts once) and their "+K more", and (cards, the
        /// digests' N) then.
        by_names: Option<(f64, usize, usize)>,
        /// When cards + the digests' N first reached every group, and (cards, N) then.
        by_counts: Option<(f64, usize, usize)>,
        /// The most groups visible by names at any time, and when that was first reached.
        best: (usize, f64),
        /// At the end: cards, the digests' N summed, digest messages.
        cards: usize,
        digest_n: usize,
        digests: usize,
    }

    /// `N` from a digest's title, `Some(0)` once every group has its own card.
    fn digest_title(title: &str) -> Option<usize> {
        if title == "Every group has its own card" {
            return Some(0);
        }
        let n = title
            .strip_suffix(" more groups firing")
            .or_else(|| title.strip_suffix(" more group firing"))?;
        n.trim().parse().ok()
    }

    /// Replays every version of every message in time order.
    fn visibility(stats: &Value, names: &HashMap<String, usize>, groups: usize) -> Visibility {
        struct Digest {
            message: usize,
            n: usize,
            listed: Vec<usize>,
            more: usize,
        }
        let msgs = messages(stats);
        let mut events: Vec<(f64, usize, &str, &str)> = Vec::new();
        for (m, msg) in msgs.iter().enumerate() {
            for v in msg["history"].as_array().into_iter().flatten() {
                events.push((
                    v["time"].as_f64().unwrap_or(f64::NAN),
                    m,
                    v["title"].as_str().unwrap_or(""),
                    v["description"].as_str().unwrap_or(""),
                ));
            }
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut carded = vec![false; groups];
        let mut cards = 0;
        let mut digests: HashMap<&str, Digest> = HashMap::new();
        let mut digest_messages = std::collections::HashSet::new();
        let mut vis = Visibility::default();
        let mut mark = vec![0usize; groups];
        for (step, &(t, m, title, description)) in events.iter().enumerate() {
            let channel = msgs[m]["channel_id"].as_str().unwrap_or("");
            if let Some(n) = digest_title(title) {
                digest_messages.insert(m);
                let mut listed = Vec::new();
                let mut more = 0;
                for line in description.lines() {
                    let line = line.trim();
                    if let Some(k) = line
                        .strip_prefix('+')
                        .and_then(|l| l.strip_suffix(" more"))
                        .and_then(|k| k.trim().parse().ok())
                    {
                        more = k;
                    } else if let Some(&g) = words(line).find_map(|w| names.get(w)) {
                        listed.push(g);
                    }
                }
                digests.insert(
                    channel,
                    Digest {
                        message: m,
                        n,
                        listed,
                        more,
                    },
                );
            } else {
                if digests.get(channel).is_some_and(|d| d.message == m) {
                    digests.remove(channel);
                }
                for w in words(title) {
                    if let Some(&g) = names.get(w) {
                        if !carded[g] {
                            carded[g] = true;
                            cards += 1;
                        }
                    }
                }
            }
            let digest_n: usize = digests.values().map(|d| d.n).sum();
            let mut by_names = cards;
            for d in digests.values() {
                for &g in &d.listed {
                    if !carded[g] && mark[g] != step + 1 {
                        mark[g] = step + 1;
                        by_names += 1;
                    }
                }
                by_names += d.more;
            }
            let by_names = by_names.min(groups);
            if by_names > vis.best.0 {
                vis.best = (by_names, t);
            }
            if by_names >= groups && vis.by_names.is_none() {
                vis.by_names = Some((t, cards, digest_n));
            }
            if cards + digest_n >= groups && vis.by_counts.is_none() {
                vis.by_counts = Some((t, cards, digest_n));
            }
            vis.cards = cards;
            vis.digest_n = digest_n;
        }
        vis.digests = digest_messages.len();
        vis
    }

    /// `--mode storm`.
    pub async fn storm(args: &Args, target: Arc<Target>, seed: u64) -> Result<bool, String> {
        let stats_url = format!(
            "{}/stats",
            args.stats
                .as_deref()
                .ok_or("--mode storm needs --stats URL")?
        );
        let client = reqwest::Client::new();
        fetch_stats(&client, &stats_url).await?;
        let groups = if args.groups_given { args.groups } else { 200 };
        let alerts = args.alerts.max(groups);
        let per_group = move |g: u64| alerts / groups + u64::from(g < alerts % groups);
        let rounds = per_group(0);
        let run = format!("{:06x}", seed & 0xff_ffff);
        let names: HashMap<String, usize> = (0..groups)
            .map(|g| (format!("Storm{run}g{g}"), g as usize))
            .collect();
        let conns = args.connections.min(groups as usize);
        let senders = open(&target, conns).await?;
        let starts_at = rfc3339_now();
        let start = Instant::now() + Duration::from_millis(20);
        let start_epoch = epoch_now() + start.duration_since(Instant::now()).as_secs_f64();
        let mut handles = Vec::new();
        for (w, mut sender) in senders.into_iter().enumerate() {
            let (target, run, starts_at) = (target.clone(), run.clone(), starts_at.clone());
            handles.push(tokio::spawn(async move {
                let mut stats = Stats::default();
                let mut known = Vec::new();
                let mut last = f64::NAN;
                let mut sent = 0u64;
                tokio::time::sleep_until(start.into()).await;
                for k in 1..=rounds {
                    for g in (w as u64..groups).step_by(conns) {
                        if k > per_group(g) {
                            continue;
                        }
                        let body = || {
                            let severity = ["critical", "warning", "info"][(g % 3) as usize];
                            let alerts: Vec<(String, u64)> = (0..k)
                                .map(|j| {
                                    let fp = mix64(seed.wrapping_add((g << 24) | j));
                                    (format!("host-{j}"), fp)
                                })
                                .collect();
                            webhook(&format!("Storm{run}g{g}"), severity, &starts_at, &alerts)
                        };
                        sent += 1;
                        if send_body(&mut sender, &target, body, &mut stats).await {
                            last = epoch_now();
                            if !known.iter().any(|&(h, _)| h == g) {
                                known.push((g, last));
                            }
                        }
                    }
                }
                (stats, known, last, sent)
            }));
        }
        let mut all = Stats::default();
        let mut known_at: Vec<Option<f64>> = vec![None; groups as usize];
        let mut last = f64::NAN;
        let mut webhooks = 0;
        for h in handles {
            let (s, known, l, sent) = h.await.map_err(|e| format!("worker panicked: {e}"))?;
            merge(&mut all, s);
            for (g, t) in known {
                known_at[g as usize] = Some(t);
            }
            last = last.max(l);
            webhooks += sent;
        }
        let errors = all.non_200 + all.transport_errors;
        let ingest = last - start_epoch;
        let known_after = if known_at.iter().all(Option::is_some) {
            Some(known_at.iter().flatten().copied().fold(f64::NAN, f64::max) - start_epoch)
        } else {
            None
        };

        // Wait until every group is visible (both ways of counting), or give up.
        let deadline = start + args.timeout;
        let (stats, vis) = loop {
            let stats = fetch_stats(&client, &stats_url).await?;
            let vis = visibility(&stats, &names, groups as usize);
            if (vis.by_names.is_some() && vis.by_counts.is_some()) || Instant::now() >= deadline {
                break (stats, vis);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };

        // The least time Discord's limits allow to make every group visible: one post per
        // group when they fit in one channel window, else one digest post; in the first window
        // that is no wait at all. Nothing can be shown before runbot has the group.
        let limit = |key: &str| {
            let l = &stats["limits"][key];
            (
                l[0].as_u64().unwrap_or(5).max(1),
                l[1].as_f64().unwrap_or(5.0),
            )
        };
        let (route_n, route_secs) = limit("route");
        let (global_n, global_secs) = limit("global");
        let needed = if groups <= route_n { groups } else { 1 };
        let wait = (((needed - 1) / route_n) as f64 * route_secs)
            .max(((needed - 1) / global_n) as f64 * global_secs);
        let bound = known_after.map(|k| k + wait);
        let secs = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.2}s"));
        // Cards and the digests' N when every group was visible, else at the end.
        let (visible, visible_after, cards, digest_listed) = match vis.by_names {
            Some((t, cards, n)) => (groups as usize, Some(t - start_epoch), cards, n),
            None => (vis.best.0, None, vis.cards, vis.digest_n),
        };
        println!(
            "storm: groups={groups} alerts={alerts} webhooks={webhooks} errors={errors} visible={visible}/{groups} visible_after={} counts_after={} bound={} known_after={} ingest={ingest:.2}s cards={cards} digest_listed={digest_listed} digests={} cards_now={} 429s={} requests={} statuses={}",
            secs(visible_after),
            secs(vis.by_counts.map(|(t, _, _)| t - start_epoch)),
            secs(bound),
            secs(known_after),
            vis.digests,
            vis.cards,
            stats["count_429"],
            stats["requests"],
            stats["statuses"].to_string().replace(' ', ""),
        );
        println!(
            "bound: {} = every group known to runbot after {} (the last group's first webhook answered) + {wait:.2}s for {needed} post(s) under {route_n} per {route_secs} s per channel and {global_n} per {global_secs} s overall ({})",
            secs(bound),
            secs(known_after),
            if groups <= route_n {
                "one card per group fits in the first window"
            } else {
                "more groups than one window's posts: one digest post, which fits in the first window"
            },
        );
        if visible_after.is_none() {
            eprintln!(
                "visible {}/{groups} after timeout ({:.0} s after the first webhook; most reached {:.2} s in)",
                vis.best.0,
                args.timeout.as_secs_f64(),
                if vis.best.0 > 0 { vis.best.1 - start_epoch } else { 0.0 },
            );
        }
        if let Some(e) = &all.first_error {
            eprintln!("first error: {e}");
        }
        Ok(errors == 0)
    }
}
