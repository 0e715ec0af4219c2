//! The console modes of `examples/loadgen.rs`: cards over `GET /api/events` (Server-Sent
//! Events), `GET /` with many open groups, and `POST /api/commands`. Every URL is derived from
//! `--url`'s scheme and authority (runbot's base); times are taken with one monotonic clock,
//! in this process, so webhook answers and stream events compare directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::discord::{fmt_ms, webhook};
use super::{connect, mix64, percentile_f64, rfc3339_now, send_at, Args, Sender, Target};

/// runbot's base URL (`http://host:port`) from `--url`.
fn base(args: &Args) -> Result<String, String> {
    let uri: hyper::Uri = args
        .url
        .parse()
        .map_err(|e| format!("bad --url {:?}: {e}", args.url))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--url has no host: {:?}", args.url))?;
    Ok(format!("http://{authority}"))
}

fn bearer(token: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "a token contains invalid header characters".to_string())
}

/// One request on a keep-alive connection (made on first use, and again after a transport
/// error); the answer's status and body.
async fn call(
    sender: &mut Sender,
    target: &Target,
    method: Method,
    path: &str,
    auth: &HeaderValue,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), String> {
    if sender.is_none() {
        *sender = Some(connect(target).await?);
    }
    let s = sender.as_mut().expect("connected above");
    let mut req = Request::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
    *req.method_mut() = method;
    *req.uri_mut() = path
        .parse()
        .map_err(|e| format!("bad path {path:?}: {e}"))?;
    let h = req.headers_mut();
    h.insert(HOST, target.host.clone());
    h.insert(AUTHORIZATION, auth.clone());
    if body.is_some() {
        h.insert(CONTENT_TYPE, target.json.clone());
    }
    let result = async {
        s.ready().await?;
        let resp = s.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    }
    .await;
    result.map_err(|e| {
        *sender = None;
        format!("request failed: {e}")
    })
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// Cards one stream has received: the first arrival of each group's card.
#[derive(Default)]
struct Seen {
    cards: HashMap<i64, Instant>,
    events: u64,
    bytes: u64,
}

/// A `GET /api/events` stream read by a task of its own.
struct Stream {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// Opens a stream and returns once runbot's `hello` event arrived (the stream is live).
async fn open_stream(target: &Target, auth: &HeaderValue) -> Result<Stream, String> {
    let tcp = TcpStream::connect(&target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = "/api/events".parse().expect("a valid path");
    let h = req.headers_mut();
    h.insert(HOST, target.host.clone());
    h.insert(AUTHORIZATION, auth.clone());
    h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET /api/events: {e}"))?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        return Err(format!(
            "GET /api/events: HTTP {status}: {}",
            body.map(|b| snippet(&b)).unwrap_or_default()
        ));
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (hello_tx, hello_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(read_stream(
        resp.into_body(),
        seen.clone(),
        hello_tx,
        sender,
    ));
    match tokio::time::timeout(Duration::from_secs(10), hello_rx).await {
        Ok(Ok(())) => Ok(Stream { seen, task }),
        _ => Err("no `hello` event on /api/events within 10 s".into()),
    }
}

/// Reads events until the stream ends: splits on blank lines, and for `event: card` takes the
/// group id from its JSON data. The data is runbot's own compact JSON (`serde_json`), where
/// `"group_id":` can only be the top-level key (inside the card's HTML string its quotes are
/// escaped), so a substring search stands in for parsing 20,000 events a second.
async fn read_stream(
    mut body: Incoming,
    seen: Arc<Mutex<Seen>>,
    hello: tokio::sync::oneshot::Sender<()>,
    _keep: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> Result<(), String> {
    let mut hello = Some(hello);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut scanned = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("stream: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        buf.extend_from_slice(&data);
        let mut start = 0;
        let mut i = scanned.max(1);
        let mut guard = seen.lock().unwrap();
        guard.bytes += data.len() as u64;
        while i < buf.len() {
            if buf[i] == b'\n' && buf[i - 1] == b'\n' {
                let block = &buf[start..i];
                start = i + 1;
                i = start + 1;
                guard.events += 1;
                let text = String::from_utf8_lossy(block);
                let mut kind = "";
                let mut payload = "";
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        payload = v.trim_start();
                    }
                }
                match kind {
                    "hello" => {
                        if let Some(h) = hello.take() {
                            let _ = h.send(());
                        }
                    }
                    "card" => {
                        if let Some(id) = group_id(payload) {
                            guard.cards.entry(id).or_insert(now);
                        }
                    }
                    _ => {}
                }
            } else {
                i += 1;
            }
        }
        drop(guard);
        buf.drain(..start);
        scanned = buf.len();
    }
    Err("the stream ended".into())
}

fn group_id(data: &str) -> Option<i64> {
    let at = data.find("\"group_id\":")? + "\"group_id\":".len();
    let digits: &str = &data[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// VmRSS of `pid` in kB, if there is such a process.
fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn kb(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// Open-loop webhooks at `rate` for `duration`, each one alert of a new group named
/// `{prefix}{i}`; answers (group id from runbot's receipt, when the 200 arrived), and errors.
async fn new_groups(
    target: Arc<Target>,
    conns: usize,
    rate: f64,
    total: u64,
    prefix: String,
    seed: u64,
) -> Result<(Vec<(i64, Instant)>, u64, Option<String>), String> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let conns = conns.min(total as usize).max(1);
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(Some(connect(&target).await?));
    }
    let start = Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::new();
    for (w, mut sender) in senders.into_iter().enumerate() {
        let (target, prefix) = (target.clone(), prefix.clone());
        handles.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut i = w as u64;
            while i < total {
                tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
                let body = webhook(
                    &format!("{prefix}{i}"),
                    "warning",
                    &rfc3339_now(),
                    &[("bench-0".into(), mix64(seed.wrapping_add(i)))],
                );
                let path = target.path.to_string();
                match call(
                    &mut sender,
                    &target,
                    Method::POST,
                    &path,
                    &target.auth,
                    Some(body),
                )
                .await
                {
                    Ok((StatusCode::OK, b)) => {
                        let at = Instant::now();
                        match serde_json::from_slice::<Value>(&b)
                            .ok()
                            .and_then(|v| v["group_id"].as_i64())
                        {
                            Some(g) => answered.push((g, at)),
                            None => {
                                errors += 1;
                                first_error
                                    .get_or_insert(format!("no group_id in {}", snippet(&b)));
                            }
                        }
                    }
                    Ok((status, b)) => {
                        errors += 1;
                        first_error.get_or_insert(format!("HTTP {status}: {}", snippet(&b)));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                i += conns as u64;
            }
            (answered, errors, first_error)
        }));
    }
    let mut answered = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        let (a, e, f) = h.await.map_err(|e| format!("worker panicked: {e}"))?;
        answered.extend(a);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok((answered, errors, first_error))
}

/// Waits until every stream has a card of every group in `groups`, or `deadline`.
async fn await_cards(streams: &[Stream], groups: &[(i64, Instant)], deadline: Instant) -> bool {
    loop {
        let all = streams.iter().all(|s| {
            let seen = s.seen.lock().unwrap();
            groups.iter().all(|(g, _)| seen.cards.contains_key(g))
        });
        if all {
            return true;
        }
        if Instant::now() >= deadline || streams.iter().any(|s| s.task.is_finished()) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--mode console-cards`: `--streams` SSE streams with an API token, then new groups at
/// `--rate` for `--duration`; time from each webhook's 200 to its card on every stream.
pub async fn cards(args: &Args, seed: u64) -> Result<bool, String> {
    let base = base(args)?;
    let token = args
        .api_tokens
        .first()
        .ok_or("--mode console-cards needs --api-token")?;
    let events = Target::new(&format!("{base}/api/events"), token)?;
    let auth = bearer(token)?;
    let rss_before = rss_kb(args.pid);
    let mut streams = Vec::with_capacity(args.streams);
    for _ in 0..args.streams {
        streams.push(open_stream(&events, &auth).await?);
    }
    // Let the server's allocations for the streams settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_streams = rss_kb(args.pid);

    let target = Arc::new(Target::new(&args.url, &args.token)?);
    let total = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as u64;
    let started = Instant::now();
    let (answered, errors, first_error) = new_groups(
        target,
        args.connections,
        args.rate,
        total,
        format!("Con{:06x}n", seed & 0xff_ffff),
        seed,
    )
    .await?;
    let sent_for = started.elapsed().as_secs_f64();
    let complete = await_cards(&streams, &answered, Instant::now() + args.timeout).await;
    let rss_after = rss_kb(args.pid);

    // Latency per (webhook, stream), and per webhook the slowest stream ("all had it").
    let mut each = Vec::with_capacity(answered.len() * streams.len());
    let mut all = Vec::with_capacity(answered.len());
    let mut missing = 0u64;
    let (mut events_seen, mut bytes_seen) = (0u64, 0u64);
    let seen: Vec<_> = streams.iter().map(|s| s.seen.lock().unwrap()).collect();
    for &(g, at) in &answered {
        let mut slowest = f64::NEG_INFINITY;
        for s in &seen {
            match s.cards.get(&g) {
                Some(&t) => {
                    let ms = signed_ms(t, at);
                    each.push(ms);
                    slowest = slowest.max(ms);
                }
                None => missing += 1,
            }
        }
        if slowest.is_finite() {
            all.push(slowest);
        }
    }
    for s in &seen {
        events_seen += s.events;
        bytes_seen += s.bytes;
    }
    drop(seen);
    for s in &streams {
        s.task.abort();
    }
    each.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    let per_stream = match (rss_before, rss_streams) {
        (Some(b), Some(a)) => format!("{:.1}", (a as f64 - b as f64) / args.streams as f64),
        _ => "?".into(),
    };
    println!(
        "console cards: p50={} p90={} p99={} max={} all_p50={} all_p99={} all_max={} samples={}/{} webhooks={}/{total} streams={} rate={:.1}/s missing={missing} errors={errors} events={events_seen} mb_read={:.1} rss_before_kb={} rss_streams_kb={} rss_after_kb={} per_stream_kb={per_stream}",
        fmt_ms(percentile_f64(&each, 0.50)),
        fmt_ms(percentile_f64(&each, 0.90)),
        fmt_ms(percentile_f64(&each, 0.99)),
        fmt_ms(each.last().copied().unwrap_or(0.0)),
        fmt_ms(percentile_f64(&all, 0.50)),
        fmt_ms(percentile_f64(&all, 0.99)),
        fmt_ms(all.last().copied().unwrap_or(0.0)),
        each.len(),
        answered.len() * streams.len(),
        answered.len(),
        streams.len(),
        answered.len() as f64 / sent_for.max(1e-9),
        bytes_seen as f64 / 1e6,
        kb(rss_before),
        kb(rss_streams),
        kb(rss_after),
    );
    if !complete {
        eprintln!(
            "warning: {missing} cards had not reached their stream {:.0} s after the last webhook",
            args.timeout.as_secs_f64()
        );
    }
    if let Some(e) = &first_error {
        eprintln!("first error: {e}");
    }
    Ok(errors == 0 && complete)
}

/// `a - b` in milliseconds, negative when `a` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(b - a).as_secs_f64() * 1000.0,
    }
}

/// Latency percentiles of a run, in the result line's style.
fn pcts(prefix: &str, lat_ms: &mut [f64]) -> String {
    lat_ms.sort_by(f64::total_cmp);
    format!(
        "{prefix}p50={} {prefix}p90={} {prefix}p99={} {prefix}max={}",
        fmt_ms(percentile_f64(lat_ms, 0.50)),
        fmt_ms(percentile_f64(lat_ms, 0.90)),
        fmt_ms(percentile_f64(lat_ms, 0.99)),
        fmt_ms(lat_ms.last().copied().unwrap_or(0.0)),
    )
}

/// The `route="/"` buckets of runbot's request histogram, summed over its other labels:
/// (upper bound in s, cumulative count), and (sum, count).
async fn page_histogram(
    sender: &mut Sender,
    target: &Target,
    auth: &HeaderValue,
) -> Result<(Vec<(f64, f64)>, f64, f64), String> {
    let (status, body) = call(sender, target, Method::GET, "/metrics", auth, None).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /metrics: HTTP {status}: {}", snippet(&body)));
    }
    let text = String::from_utf8_lossy(&body);
    let name = "runbot_http_request_duration_seconds";
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        if !labels.contains("route=\"/\"") {
            continue;
        }
        let value: f64 = value.parse().unwrap_or(0.0);
        if labels.starts_with("_sum") {
            sum += value;
        } else if labels.starts_with("_count") {
            count += value;
        } else if let Some(le) = labels.split("le=\"").nth(1) {
            let le = le.split('"').next().unwrap_or("");
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some(b) => b.1 += value,
                None => buckets.push((le, value)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok((buckets, sum, count))
}

/// What the server's histogram says about the requests between two readings: the least
/// bucket bound under which 99 % of them fell, the share under 50 ms, and the mean.
fn server_side(
    before: &(Vec<(f64, f64)>, f64, f64),
    after: &(Vec<(f64, f64)>, f64, f64),
    prefix: &str,
) -> String {
    let n = after.2 - before.2;
    if n <= 0.0 {
        return format!("{prefix}server=none");
    }
    let at = |le: f64, h: &(Vec<(f64, f64)>, f64, f64)| {
        h.0.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c)
    };
    let delta: Vec<(f64, f64)> = after
        .0
        .iter()
        .map(|&(le, c)| (le, c - at(le, before)))
        .collect();
    let p99 = delta
        .iter()
        .find(|(_, c)| *c >= 0.99 * n)
        .map_or(f64::INFINITY, |(le, _)| *le);
    let under_50 = delta
        .iter()
        .find(|(le, _)| (*le - 0.05).abs() < 1e-9)
        .map_or(f64::NAN, |(_, c)| c / n * 100.0);
    format!(
        "{prefix}server_p99_le={} {prefix}server_under_50ms={under_50:.2}% {prefix}server_mean={}",
        if p99.is_finite() {
            fmt_ms(p99 * 1000.0)
        } else {
            "+Inf".into()
        },
        fmt_ms((after.1 - before.1) / n * 1000.0),
    )
}

/// `--mode console-page`: `--groups` open groups (one webhook each), then `GET /` with
/// `--console-token` for `--duration` one at a time, and again `--concurrency` at a time.
pub async fn page(args: &Args, seed: u64) -> Result<bool, String> {
    let base = base(args)?;
    let token = args
        .console_token
        .as_deref()
        .ok_or("--mode console-page needs --console-token")?;
    let auth = bearer(token)?;
    let site = Arc::new(Target::new(&format!("{base}/"), token)?);
    // Every card on one stream first, so the outbox is done before the clock starts.
    let stream = open_stream(&site, &auth).await?;
    let target = Arc::new(Target::new(&args.url, &args.token)?);
    let prefix = format!("Page{:06x}g", seed & 0xff_ffff);
    let fill_start = Instant::now();
    let (groups, errors, first_error) = new_groups(
        target,
        args.connections,
        100_000.0,
        args.groups,
        prefix.clone(),
        seed,
    )
    .await?;
    if errors > 0 {
        return Err(format!(
            "filling {} groups: {errors} webhooks failed: {}",
            args.groups,
            first_error.unwrap_or_default()
        ));
    }
    let streams = [stream];
    if !await_cards(&streams, &groups, Instant::now() + args.timeout).await {
        return Err(format!(
            "the cards of the {} groups had not all reached the feed after {:.0} s",
            args.groups,
            args.timeout.as_secs_f64()
        ));
    }
    streams[0].task.abort();
    let filled_in = fill_start.elapsed().as_secs_f64();

    // The page must show every group.
    let mut sender: Sender = None;
    let (status, body) = call(&mut sender, &site, Method::GET, "/", &auth, None).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /: HTTP {status}: {}", snippet(&body)));
    }
    let html = String::from_utf8_lossy(&body);
    let shown = groups
        .iter()
        .filter(|(g, _)| html.contains(&format!("id=\"group-{g}\"")))
        .count();
    let page_bytes = body.len();

    let mut line = format!(
        "console page: groups={} shown={shown} bytes={page_bytes} filled_in={filled_in:.1}s",
        groups.len()
    );
    let mut errors = 0u64;
    let mut first_error = None;
    for (prefix, concurrency) in [("s_", 1usize), ("c_", args.concurrency)] {
        let before = page_histogram(&mut sender, &site, &auth).await?;
        let start = Instant::now();
        let deadline = start + args.duration;
        let mut handles = Vec::new();
        for _ in 0..concurrency {
            let (site, auth) = (site.clone(), auth.clone());
            handles.push(tokio::spawn(async move {
                let mut sender: Sender = None;
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match call(&mut sender, &site, Method::GET, "/", &auth, None).await {
                        Ok((StatusCode::OK, _)) => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                        Ok((status, b)) => {
                            errors += 1;
                            first_error.get_or_insert(format!("HTTP {status}: {}", snippet(&b)));
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (lat, errors, first_error)
            }));
        }
        let mut lat = Vec::new();
        for h in handles {
            let (l, e, f) = h.await.map_err(|e| format!("worker panicked: {e}"))?;
            lat.extend(l);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let after = page_histogram(&mut sender, &site, &auth).await?;
        line.push_str(&format!(
            "  {} {prefix}rps={:.1} {prefix}requests={} {}",
            pcts(prefix, &mut lat),
            lat.len() as f64 / elapsed,
            lat.len(),
            server_side(&before, &after, prefix),
        ));
    }
    println!("{line} errors={errors} concurrency={}", args.concurrency);
    if let Some(e) = &first_error {
        eprintln!("first error: {e}");
    }
    if shown < groups.len() {
        eprintln!(
            "error: the page shows {shown} of the {} groups",
            groups.len()
        );
    }
    Ok(errors == 0 && shown == groups.len())
}

/// `--mode console-commands`: `POST /api/commands {"command": "oncall"}` at `--rate` for
/// `--duration`, the `--api-token`s taking turns; then every request's result, from
/// `GET /api/requests/{id}`.
pub async fn commands(args: &Args) -> Result<bool, String> {
    let base = base(args)?;
    if args.api_tokens.is_empty() {
        return Err("--mode console-commands needs --api-token".into());
    }
    let auths: Vec<HeaderValue> = args
        .api_tokens
        .iter()
        .map(|t| bearer(t))
        .collect::<Result<_, _>>()?;
    let site = Arc::new(Target::new(
        &format!("{base}/api/commands"),
        &args.api_tokens[0],
    )?);
    let total = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as u64;
    let conns = args.connections.min(total as usize).max(1);
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(Some(connect(&site).await?));
    }
    let body = json!({"command": "oncall"}).to_string();
    let start = Instant::now() + Duration::from_millis(20);
    let give_up = start + args.duration * 2 + Duration::from_secs(5);
    let mut handles = Vec::new();
    for (w, mut sender) in senders.into_iter().enumerate() {
        let (site, auths, body) = (site.clone(), auths.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // (request id, which token) of each command the core took.
            let mut taken = Vec::new();
            let (mut refused, mut errors, mut unsent) = (0u64, 0u64, 0u64);
            let mut first_error = None;
            let mut i = w as u64;
            while i < total {
                let scheduled = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if now >= give_up {
                    unsent += (total - i).div_ceil(conns as u64);
                    break;
                }
                let origin = send_at(scheduled, now).await;
                let who = (i as usize) % auths.len();
                let answer = call(
                    &mut sender,
                    &site,
                    Method::POST,
                    "/api/commands",
                    &auths[who],
                    Some(body.clone()),
                )
                .await;
                let ms = origin.elapsed().as_secs_f64() * 1000.0;
                match answer {
                    Ok((StatusCode::OK, b)) => {
                        lat.push(ms);
                        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                        // The core took it: a run started (deferred), its result comes later.
                        match (v["answer"].as_str(), v["request_id"].as_str()) {
                            (Some("deferred"), Some(id)) => taken.push((id.to_string(), who)),
                            _ => {
                                refused += 1;
                                first_error.get_or_insert(format!(
                                    "not taken: {}",
                                    v["reply"]["text"].as_str().unwrap_or(&snippet(&b))
                                ));
                            }
                        }
                    }
                    Ok((status, b)) => {
                        errors += 1;
                        first_error.get_or_insert(format!("HTTP {status}: {}", snippet(&b)));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                i += conns as u64;
            }
            (lat, taken, refused, errors, unsent, first_error)
        }));
    }
    let mut lat = Vec::new();
    let mut taken = Vec::new();
    let (mut refused, mut errors, mut unsent) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    let mut end = start;
    for h in handles {
        let (l, t, r, e, u, f) = h.await.map_err(|e| format!("worker panicked: {e}"))?;
        lat.extend(l);
        taken.extend(t);
        refused += r;
        errors += e;
        unsent += u;
        if first_error.is_none() {
            first_error = f;
        }
        end = end.max(Instant::now());
    }
    let achieved = lat.len() as f64 / end.duration_since(start).as_secs_f64().max(1e-9);

    // Every result: `On call now (…)`, shown to the token that asked.
    let deadline = Instant::now() + args.timeout;
    let mut results_ok = 0u64;
    let mut sender: Sender = None;
    for (id, who) in &taken {
        loop {
            let path = format!("/api/requests/{id}");
            let (status, b) =
                call(&mut sender, &site, Method::GET, &path, &auths[*who], None).await?;
            let text = serde_json::from_slice::<Value>(&b)
                .ok()
                .and_then(|v| v["reply"]["text"].as_str().map(str::to_string));
            match text {
                Some(t) if status == StatusCode::OK && t.starts_with("On call now") => {
                    results_ok += 1;
                    break;
                }
                Some(t) if status == StatusCode::OK && t.starts_with('⏳') => {}
                _ => {
                    first_error
                        .get_or_insert(format!("result of {id}: HTTP {status}: {}", snippet(&b)));
                    break;
                }
            }
            if Instant::now() >= deadline {
                first_error.get_or_insert(format!("no result for {id} in time"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "console commands: {} rate={achieved:.1}/s (target {}) total={} taken={} refused={refused} results_ok={results_ok}/{} errors={errors} unsent={unsent} tokens={} connections={conns}",
        pcts("", &mut lat),
        args.rate,
        lat.len() as u64 + errors,
        taken.len(),
        taken.len(),
        auths.len(),
    );
    if let Some(e) = &first_error {
        eprintln!("first error: {e}");
    }
    Ok(errors == 0 && refused == 0 && unsent == 0 && results_ok == taken.len() as u64)
}
