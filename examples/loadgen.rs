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
//! Exits non-zero if any request failed or got a non-200 answer.

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
usage: loadgen --mode throughput|rate [options]
  --url URL            webhook URL (default http://127.0.0.1:18080/webhooks/alertmanager)
  --token TOKEN        bearer token (default: env RUNBOT__ALERTMANAGER__WEBHOOK_TOKEN)
  --connections C      concurrent keep-alive connections (default 32)
  --duration SECS      run length in seconds, fractions allowed (default 10)
  --rate R             requests/s for --mode rate (default 1000)
  --groups G           distinct alert groups to cycle through (default 500)
  --threads T          tokio worker threads; 1 = current_thread runtime (default 1)";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Throughput,
    Rate,
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
    threads: usize,
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
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        // Accept both `--flag value` and `--flag=value`.
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("missing value for {flag}"))?;
                (flag, v)
            }
        };
        let bad = |what: &str| format!("invalid {what} for {name}: {value:?}");
        match name.as_str() {
            "--mode" => {
                args.mode = match value.as_str() {
                    "throughput" => Mode::Throughput,
                    "rate" => Mode::Rate,
                    _ => return Err(bad("mode (throughput|rate)")),
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
            }
            "--threads" => {
                args.threads = value.parse().map_err(|_| bad("count"))?;
                if args.threads == 0 {
                    return Err(bad("count"));
                }
            }
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
        let (sev1, sev2) = if n % 2 == 0 {
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
    let req = target.request(payloads.next_body());
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
        let origin = if now < scheduled {
            // Idle connection: wait for the slot and measure from the actual send,
            // so timer granularity is not charged to the server.
            tokio::time::sleep_until(scheduled.into()).await;
            Instant::now()
        } else {
            // Behind schedule: charge the queueing delay to the server.
            scheduled
        };
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
