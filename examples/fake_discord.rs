//! The test suite's fake Discord API (`crates/fake-discord`) as a standalone server,
//! for `scripts/bench`: runbot posts its cards to it, and the bench reads back what arrived
//! and when from a small stats endpoint on a second port.
//!
//! ```text
//! cargo run --release --example fake_discord -- --token TOKEN --channel 111111111111111111 \
//!     --route-limit 5/5 --global-limit 50/1
//! READY http://127.0.0.1:PORT          <- discord.api_base
//! STATS http://127.0.0.1:PORT2         <- GET /stats
//! ```
//!
//! The fake is as strict as in the tests (schemas, limits, rate limits with Discord's headers
//! and 429s). It serves until killed.
//!
//! `GET /stats` answers JSON:
//! - `requests`, `count_429`, `statuses` (`{"200": n, "429": n, ...}`), `nonce_replays`
//!   (posts answered with an existing message because of their nonce), `now` (epoch seconds);
//! - `limits`: `{"route": [N, SECS], "global": [N, SECS]}` as configured;
//! - `messages`, in creation order: `id`, `channel_id`, the first embed's `title`,
//!   `description` and `footer` (current state), `created` (epoch seconds at which the fake
//!   received the creating request), `edits`, `edit_times` (epoch seconds of each applied
//!   edit), and `history`: `[{"time", "title", "description"}]`, one entry for the creation
//!   and one per applied edit.
//!
//! `GET /stats?history=0` leaves out `history`.

#[path = "support/flags.rs"]
mod flags;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use fake_discord::{FakeDiscord, Recorded};
use serde_json::{json, Value};

const USAGE: &str = "\
usage: fake_discord [options]
  --port P               port of the fake Discord API; 0 = a free one (default 0)
  --stats-port P         port of the stats endpoint; 0 = a free one (default 0)
  --token T              bot token accepted as `Authorization: Bot T` (required)
  --channel ID           a channel that exists; repeatable (at least one)
  --route-limit N/SECS   per-route, per-channel limit (default 5/5, as Discord)
  --global-limit N/SECS  global limit (default 50/1, as Discord)
Prints `READY http://127.0.0.1:PORT` then `STATS http://127.0.0.1:PORT2`, serves until killed.";

#[derive(Debug)]
struct Args {
    port: u16,
    stats_port: u16,
    token: String,
    channels: Vec<u64>,
    route_limit: (u32, f64),
    global_limit: (u32, f64),
}

fn parse_limit(v: &str) -> Option<(u32, f64)> {
    let (n, secs) = v.split_once('/')?;
    let n: u32 = n.trim().parse().ok()?;
    let secs: f64 = secs.trim().parse().ok()?;
    (n > 0 && secs.is_finite() && secs > 0.0).then_some((n, secs))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        stats_port: 0,
        token: String::new(),
        channels: Vec::new(),
        route_limit: (5, 5.0),
        global_limit: (50, 1.0),
    };
    for (name, value) in flags::pairs()? {
        let bad = |what: &str| format!("invalid {what} for {name}: {value:?}");
        match name.as_str() {
            "--port" => args.port = value.parse().map_err(|_| bad("port"))?,
            "--stats-port" => args.stats_port = value.parse().map_err(|_| bad("port"))?,
            "--token" => args.token = value,
            "--channel" => args
                .channels
                .push(value.parse().map_err(|_| bad("channel id"))?),
            "--route-limit" => {
                args.route_limit = parse_limit(&value).ok_or_else(|| bad("N/SECS"))?
            }
            "--global-limit" => {
                args.global_limit = parse_limit(&value).ok_or_else(|| bad("N/SECS"))?
            }
            _ => return Err(format!("unknown argument {name}")),
        }
    }
    if args.token.is_empty() {
        return Err("--token is required".into());
    }
    if args.channels.is_empty() {
        return Err("at least one --channel is required".into());
    }
    Ok(args)
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// What the stats endpoint knows of one message.
struct Tracked {
    id: String,
    channel_id: String,
    created: f64,
    edit_times: Vec<f64>,
    /// (time, title, description, footer) of each version.
    history: Vec<(f64, String, String, String)>,
}

/// Follows the fake's request log and keeps, per message, when it was created and edited.
#[derive(Default)]
struct Tracker {
    seen: usize,
    statuses: BTreeMap<u16, u64>,
    nonce_replays: u64,
    messages: Vec<Tracked>,
    by_id: HashMap<String, usize>,
}

fn embed_text(message: &Value) -> (String, String, String) {
    let e = &message["embeds"][0];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        s(&e["title"]),
        s(&e["description"]),
        s(&e["footer"]["text"]),
    )
}

impl Tracker {
    fn follow(&mut self, requests: Vec<Recorded>) {
        self.seen += requests.len();
        for r in requests {
            *self.statuses.entry(r.status).or_default() += 1;
            if r.status != 200 {
                continue;
            }
            let Some(answer) = r.answer.as_ref() else {
                continue;
            };
            let Some(id) = answer["id"].as_str() else {
                continue;
            };
            let t = epoch(r.time);
            let (title, description, footer) = embed_text(answer);
            match (r.method.as_str(), self.by_id.get(id)) {
                ("POST", None) => {
                    self.by_id.insert(id.to_string(), self.messages.len());
                    self.messages.push(Tracked {
                        id: id.to_string(),
                        channel_id: answer["channel_id"].as_str().unwrap_or("").to_string(),
                        created: t,
                        edit_times: Vec::new(),
                        history: vec![(t, title, description, footer)],
                    });
                }
                ("POST", Some(_)) => self.nonce_replays += 1,
                ("PATCH", Some(&i)) => {
                    let m = &mut self.messages[i];
                    m.edit_times.push(t);
                    m.history.push((t, title, description, footer));
                }
                _ => {}
            }
        }
    }

    fn json(&self, fake: &FakeDiscord, args: &Args, history: bool) -> Value {
        let messages: Vec<Value> = self
            .messages
            .iter()
            .map(|m| {
                let (_, title, description, footer) = m.history.last().expect("one version");
                let mut v = json!({
                    "id": m.id,
                    "channel_id": m.channel_id,
                    "title": title,
                    "description": description,
                    "footer": footer,
                    "created": m.created,
                    "edits": m.edit_times.len(),
                    "edit_times": m.edit_times,
                });
                if history {
                    v["history"] = m
                        .history
                        .iter()
                        .map(|(t, title, description, _)| {
                            json!({"time": t, "title": title, "description": description})
                        })
                        .collect();
                }
                v
            })
            .collect();
        let statuses: serde_json::Map<String, Value> = self
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        json!({
            "requests": self.seen,
            "count_429": fake.count_429(),
            "statuses": statuses,
            "nonce_replays": self.nonce_replays,
            "now": epoch(SystemTime::now()),
            "limits": {
                "route": [args.route_limit.0, args.route_limit.1],
                "global": [args.global_limit.0, args.global_limit.1],
            },
            "messages": messages,
        })
    }
}

#[derive(Clone)]
struct App {
    fake: FakeDiscord,
    args: Arc<Args>,
    tracker: Arc<Mutex<Tracker>>,
}

async fn stats(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let history = q.get("history").map(String::as_str) != Some("0");
    let mut tracker = app.tracker.lock().unwrap_or_else(|e| e.into_inner());
    let new = app.fake.requests_since(tracker.seen);
    tracker.follow(new);
    Json(tracker.json(&app.fake, &app.args, history))
}

async fn run(args: Args) -> Result<(), String> {
    let fake = FakeDiscord::start_on(&args.token, &args.channels, args.port).await;
    let limit = |(n, secs): (u32, f64)| (n, Duration::from_secs_f64(secs));
    let (n, per) = limit(args.route_limit);
    fake.set_route_limit(n, per);
    let (n, per) = limit(args.global_limit);
    fake.set_global_limit(n, per);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.stats_port))
        .await
        .map_err(|e| format!("bind the stats port {}: {e}", args.stats_port))?;
    let stats_port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("READY {}", fake.base_url());
    println!("STATS http://127.0.0.1:{stats_port}");
    eprintln!(
        "fake Discord: channels {:?}, route limit {}/{} s, global limit {}/{} s",
        args.channels,
        args.route_limit.0,
        args.route_limit.1,
        args.global_limit.0,
        args.global_limit.1
    );
    let app = App {
        fake,
        args: Arc::new(args),
        tracker: Arc::default(),
    };
    let router = Router::new().route("/stats", get(stats)).with_state(app);
    axum::serve(listener, router)
        .await
        .map_err(|e| format!("stats server: {e}"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("fake_discord: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake_discord: cannot start tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake_discord: {e}");
            ExitCode::FAILURE
        }
    }
}
