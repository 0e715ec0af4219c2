//! Load for `scripts/bench`: Discord interactions, signed as Discord signs them, sent to
//! runbot's `/discord/interactions` at a fixed rate. Measures the time to runbot's first answer
//! (Discord allows 3 s) and, through a small stand-in for Discord's interaction webhooks, the
//! time until runbot edited its answer with the result.
//!
//! ```text
//! interactions --seed HEX --print public-key
//! interactions --url http://127.0.0.1:PORT/discord/interactions --seed HEX \
//!     --sink 127.0.0.1:PORT2 --rate 200 --duration 10
//! ```
//!
//! The mix, each request from a different user so no per-user limit binds: 40 % `/oncall`
//! (allowed, answered "thinking", then edited), 20 % `/status` by a devops-lead (the same),
//! 20 % `/restart` by a backend-lead (a Confirm prompt, which writes a pending request), 20 %
//! `/deploy` by a developer (denied). Users hold the Discord roles 900000000000000001
//! (devops-lead), …03 (backend-lead) and …04 (developer): map them in roles.toml.

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
  --wait SECS       how long to wait for the last edits after the run (default 5)";

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
            _ => return Err(format!("unknown option {name}")),
        }
    }
    args.seed = seed(&seed_hex.ok_or("--seed is required")?)?;
    if !args.print_public_key && (args.url.is_empty() || args.sink.is_empty()) {
        return Err("--url and --sink are required".into());
    }
    if args.rate.is_nan() || args.rate <= 0.0 || args.rate.is_infinite() {
        return Err("--rate must be positive".into());
    }
    Ok(args)
}

/// What the stand-in for Discord saw: when each interaction's answer was edited.
#[derive(Default)]
struct Sink {
    edited: Mutex<HashMap<String, Instant>>,
}

async fn sink(state: Arc<Sink>, req: axum::extract::Request) -> axum::response::Response {
    let path = req.uri().path().to_string();
    // /api/v10/webhooks/{application}/{token}/messages/@original
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() >= 6 && parts[3] == "webhooks" {
        state
            .edited
            .lock()
            .unwrap()
            .entry(parts[5].to_string())
            .or_insert_with(Instant::now);
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

fn interaction(n: u64) -> (String, Value) {
    let id = (1_500_000_000_000_000_000u64 + n).to_string();
    let token = format!("bench-token-{n}-{}", "x".repeat(40));
    let user = (1_300_000_000_000_000_000u64 + n).to_string();
    let (name, role, options) = match n % 5 {
        0 | 1 => ("oncall", "900000000000000004", json!([])),
        2 => ("status", "900000000000000001", json!([])),
        3 => (
            "restart",
            "900000000000000003",
            json!([{ "name": "service", "type": 3, "value": "backend" }]),
        ),
        _ => (
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
    let state = Arc::new(Sink::default());
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
        let (token, body) = interaction(n);
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
    let mut edits: Vec<Duration> = results
        .iter()
        .filter_map(|r| edited.get(&r.0).map(|at| at.duration_since(r.1)))
        .collect();
    edits.sort();
    let messages = results.iter().filter(|r| r.4 == 4).count();
    println!(
        "interactions: total={total} errors={errors} rate={achieved:.0}/s p50={} p90={} p99={} max={} \
         deferred={deferred} messages={messages} edited={} edit_p50={} edit_p99={}",
        percentile(&first, 0.50),
        percentile(&first, 0.90),
        percentile(&first, 0.99),
        percentile(&first, 1.0),
        edits.len(),
        percentile(&edits, 0.50),
        percentile(&edits, 0.99),
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
