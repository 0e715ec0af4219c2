//! Load for `scripts/bench`: Discord interactions, signed as Discord signs them, sent to
//! runbot's `/discord/interactions` at a fixed rate. Measures the time to runbot's first answer
//! (Discord allows 3 s) and, through a small stand-in for Discord's interaction webhooks, the
//! time until runbot edited its answer with the result.
//!
//! ```text
//! interactions --seed HEX --print public-key
//! interactions --url http://127.0.0.1:PORT/discord/interactions --seed HEX \
//!     --sink 127.0.0.1:PORT2 --rate 200 --duration 10
//! interactions ... --command logs --option service=nginx --option tail=1000 \
//!     --expect "all 1000 attached" --rate 10
//! ```
//!
//! The mix, each request from a different user so no per-user limit binds: 40 % `/oncall`
//! (allowed, answered "thinking", then edited), 20 % `/status` by a devops-lead (the same),
//! 20 % `/restart` by a backend-lead (a Confirm prompt, which writes a pending request), 20 %
//! `/deploy` by a developer (denied). Users hold the Discord roles 900000000000000001
//! (devops-lead), …03 (backend-lead) and …04 (developer): map them in roles.toml.
//!
//! With `--command`, every interaction is that command with the `--option`s given (a number is
//! sent as an integer), by a devops-lead, again each from a different user. An edit counts once
//! its whole body has arrived (a result with a file comes as one `multipart/form-data` edit);
//! with `--expect`, an edit whose body lacks that text counts as an error. `--first` shifts the
//! interactions' ids, tokens and users, so that several runs can go to one server.

#[path = "support/flags.rs"]
mod flags;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::response::IntoResponse;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

const USAGE: &str = "\
usage: interactions --seed HEX (--print public-key | --url URL --sink ADDR [options])
  --seed HEX        32-byte Ed25519 seed, 64 hex characters (runbot gets its public key)
  --url URL         runbot's interactions endpoint
  --sink ADDR       address to serve Discord's interaction webhooks on (runbot's discord.api_base)
  --rate R          interactions/s (default 200)
  --duration SECS   length of the run (default 10)
  --wait SECS       how long to wait for the last edits after the run (default 5)
  --command NAME    send only this command (by a devops-lead) instead of the mix
  --option K=V      an option of --command (repeatable)
  --expect TEXT     an edit must contain TEXT, or it counts as an error
  --first N         number of the first interaction (ids, tokens, users; default 0)
  --latencies FILE  write each interaction's times to FILE: number, sent (ms after the
                    start), first answer (ms), edit (ms, or - when none came)";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn seed(s: &str) -> Result<SigningKey, String> {
    if s.len() != 64 {
        return Err("--seed must be 64 hex characters".into());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| "--seed is not hex")?;
    }
    Ok(SigningKey::from_bytes(&out))
}

struct Args {
    seed: SigningKey,
    print_public_key: bool,
    url: String,
    sink: String,
    rate: f64,
    duration: Duration,
    wait: Duration,
    command: Option<String>,
    options: Vec<(String, String)>,
    expect: Option<String>,
    first: u64,
    latencies: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut seed_hex = None;
    let mut args = Args {
        seed: SigningKey::from_bytes(&[0; 32]),
        print_public_key: false,
        url: String::new(),
        sink: String::new(),
        rate: 200.0,
        duration: Duration::from_secs(10),
        wait: Duration::from_secs(5),
        command: None,
        options: Vec::new(),
        expect: None,
        first: 0,
        latencies: None,
    };
    for (name, value) in flags::pairs()? {
        let bad = |what: &str| format!("invalid {what} for {name}: {value:?}");
        match name.as_str() {
            "--seed" => seed_hex = Some(value),
            "--print" if value == "public-key" => args.print_public_key = true,
            "--url" => args.url = value,
            "--sink" => args.sink = value,
            "--rate" => args.rate = value.parse().map_err(|_| bad("rate"))?,
            "--duration" => {
                args.duration = Duration::from_secs_f64(value.parse().map_err(|_| bad("seconds"))?)
            }
            "--wait" => {
                args.wait = Duration::from_secs_f64(value.parse().map_err(|_| bad("seconds"))?)
            }
            "--command" => args.command = Some(value),
            "--option" => {
                let (k, v) = value.split_once('=').ok_or_else(|| bad("NAME=VALUE"))?;
                args.options.push((k.to_string(), v.to_string()));
            }
            "--expect" => args.expect = Some(value),
            "--first" => args.first = value.parse().map_err(|_| bad("number"))?,
            "--latencies" => args.latencies = Some(value),
            _ => return Err(format!("unknown option {name}")),
        }
    }
    args.seed = seed(&seed_hex.ok_or("--seed is required")?)?;
    if !args.print_public_key && (args.url.is_empty() || args.sink.is_empty()) {
        return Err("--url and --sink are required".into());
    }
    if !args.options.is_empty() && args.command.is_none() {
        return Err("--option needs --command".into());
    }
    if args.rate.is_nan() || args.rate <= 0.0 || args.rate.is_infinite() {
        return Err("--rate must be positive".into());
    }
    Ok(args)
}

/// One edit of an interaction's answer, as the stand-in for Discord received it.
struct Edit {
    /// When its whole body had arrived.
    at: Instant,
    /// A `multipart/form-data` edit: the result came with a file.
    multipart: bool,
    /// It contains `--expect` (or none was given).
    expected: bool,
}

/// What the stand-in for Discord saw: each interaction's first edit, by token.
#[derive(Default)]
struct Sink {
    expect: Option<String>,
    edited: Mutex<HashMap<String, Edit>>,
}

async fn sink(state: Arc<Sink>, req: axum::extract::Request) -> axum::response::Response {
    let path = req.uri().path().to_string();
    let multipart = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    // Read to the end: an upload is only there once all of it is.
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let at = Instant::now();
    // /api/v10/webhooks/{application}/{token}/messages/@original
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() >= 6 && parts[3] == "webhooks" {
        let expected = state
            .expect
            .as_deref()
            .is_none_or(|e| body.windows(e.len().max(1)).any(|w| w == e.as_bytes()));
        state
            .edited
            .lock()
            .unwrap()
            .entry(parts[5].to_string())
            .or_insert(Edit {
                at,
                multipart,
                expected,
            });
    }
    axum::Json(json!({
        "id": "1400000000000000000", "channel_id": "111111111111111111", "type": 20,
        "content": "", "embeds": [], "components": [], "attachments": [],
        "author": { "id": "1", "username": "runbot", "discriminator": "0", "avatar": null },
        "timestamp": "2026-11-28T00:00:00.000000+00:00", "edited_timestamp": null,
        "mentions": [], "mention_roles": [], "pinned": false, "mention_everyone": false, "tts": false,
        "flags": 0
    }))
    .into_response()
}

/// `--command`'s options as Discord sends them: a number as an integer, anything else as text.
fn options_json(options: &[(String, String)]) -> Value {
    Value::Array(
        options
            .iter()
            .map(|(k, v)| match v.parse::<i64>() {
                Ok(i) => json!({ "name": k, "type": 4, "value": i }),
                Err(_) => json!({ "name": k, "type": 3, "value": v }),
            })
            .collect(),
    )
}

fn interaction(n: u64, command: Option<(&str, &Value)>) -> (String, Value) {
    let id = (1_500_000_000_000_000_000u64 + n).to_string();
    let token = format!("bench-token-{n}-{}", "x".repeat(40));
    let user = (1_300_000_000_000_000_000u64 + n).to_string();
    let (name, role, options) = match (command, n % 5) {
        (Some((name, options)), _) => (name, "900000000000000001", options.clone()),
        (None, 0 | 1) => ("oncall", "900000000000000004", json!([])),
        (None, 2) => ("status", "900000000000000001", json!([])),
        (None, 3) => (
            "restart",
            "900000000000000003",
            json!([{ "name": "service", "type": 3, "value": "backend" }]),
        ),
        (None, _) => (
            "deploy",
            "900000000000000004",
            json!([{ "name": "tag", "type": 3, "value": "v1.2.3" }]),
        ),
    };
    let body = json!({
        "id": id, "application_id": "1200000000000000001", "type": 2, "token": token, "version": 1,
        "guild_id": "1100000000000000001", "channel_id": "111111111111111111",
        "member": { "user": { "id": user, "username": format!("user{n}"), "global_name": format!("User {n}") },
                    "roles": [role], "permissions": "0" },
        "data": { "id": "1000000000000000001", "name": name, "type": 1, "options": options },
        "locale": "en-US", "app_permissions": "0", "entitlements": [], "context": 0,
    });
    (token, body)
}

fn percentile(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    format!("{:.2}ms", sorted[i].as_secs_f64() * 1000.0)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.print_public_key {
        println!("{}", hex(args.seed.verifying_key().as_bytes()));
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let state = Arc::new(Sink {
        expect: args.expect.clone(),
        ..Sink::default()
    });
    let options = options_json(&args.options);
    let command = args.command.as_deref().map(|c| (c, &options));
    let listener = match tokio::net::TcpListener::bind(&args.sink).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot bind --sink {}: {e}", args.sink);
            return ExitCode::FAILURE;
        }
    };
    let app = axum::Router::new().fallback({
        let state = state.clone();
        move |req| sink(state.clone(), req)
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let key = Arc::new(args.seed);
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until(start + interval.mul_f64(n as f64)).await;
        let (token, body) = interaction(args.first + n, command);
        let (client, key, url) = (client.clone(), key.clone(), args.url.clone());
        tasks.push(tokio::spawn(async move {
            let body = body.to_string();
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .to_string();
            let signature = hex(&key.sign(format!("{ts}{body}").as_bytes()).to_bytes());
            let sent = Instant::now();
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-signature-ed25519", signature)
                .header("x-signature-timestamp", ts)
                .body(body)
                .send()
                .await;
            let (status, kind) = match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    (status, v["type"].as_u64().unwrap_or(0))
                }
                Err(_) => (0, 0),
            };
            (token, sent, sent.elapsed(), status, kind)
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let deferred = results.iter().filter(|r| r.4 == 5).count();
    let deadline = Instant::now() + args.wait;
    while Instant::now() < deadline && state.edited.lock().unwrap().len() < deferred {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let errors = results.iter().filter(|r| r.3 != 200).count();
    let mut first: Vec<Duration> = results.iter().filter(|r| r.3 == 200).map(|r| r.2).collect();
    first.sort();
    let edited = state.edited.lock().unwrap();
    let mine: Vec<(&Edit, Instant)> = results
        .iter()
        .filter_map(|r| edited.get(&r.0).map(|e| (e, r.1)))
        .collect();
    let mut edits: Vec<Duration> = mine
        .iter()
        .filter(|(e, _)| e.expected)
        .map(|(e, sent)| e.at.duration_since(*sent))
        .collect();
    edits.sort();
    if let Some(path) = &args.latencies {
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        let lines: String = results
            .iter()
            .enumerate()
            .map(|(n, r)| {
                let edit = edited
                    .get(&r.0)
                    .map_or("-".into(), |e| ms(e.at.duration_since(r.1)));
                let sent = ms(r.1.duration_since(start.into_std()));
                format!("{} {sent} {} {edit}\n", args.first + n as u64, ms(r.2))
            })
            .collect();
        if let Err(e) = std::fs::write(path, lines) {
            eprintln!("cannot write {path}: {e}");
        }
    }
    let unexpected = mine.iter().filter(|(e, _)| !e.expected).count();
    let multipart = mine.iter().filter(|(e, _)| e.multipart).count();
    // Results per second: the good edits over the time from the first send to the last edit.
    let edit_rate = mine
        .iter()
        .filter(|(e, _)| e.expected)
        .map(|(e, _)| e.at)
        .max()
        .map_or(0.0, |last| {
            edits.len() as f64 / last.duration_since(start.into_std()).as_secs_f64()
        });
    // A deferred answer whose edit never came, or came without --expect's text.
    let edit_errors = deferred.saturating_sub(edits.len());
    let messages = results.iter().filter(|r| r.4 == 4).count();
    println!(
        "interactions: total={total} errors={errors} rate={achieved:.0}/s p50={} p90={} p99={} max={} \
         deferred={deferred} messages={messages} edited={} edit_p50={} edit_p99={} edit_p90={} \
         edit_max={} edit_rate={edit_rate:.1}/s edit_errors={edit_errors} unexpected={unexpected} \
         multipart={multipart}",
        percentile(&first, 0.50),
        percentile(&first, 0.90),
        percentile(&first, 0.99),
        percentile(&first, 1.0),
        edits.len(),
        percentile(&edits, 0.50),
        percentile(&edits, 0.99),
        percentile(&edits, 0.90),
        percentile(&edits, 1.0),
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
