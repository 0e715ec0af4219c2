//! Escalation under load: 1,000 Sev1 groups fire at once on a two-step chain (`after = "5s"`),
//! each step paging through a signed webhook to a receiver on loopback. Prints how late each
//! second-step page was sent against its due time (p50/p99/max), whether any page arrived
//! twice, and the process's peak RSS. In process (release build), on SQLite.
//!
//!   cargo run --release --example escalation_bench -- [GROUPS]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let groups: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile_dir()?;
    // The receiver: counts each page (Idempotency-Key) it gets.
    let seen: Arc<Mutex<HashMap<String, u32>>> = Default::default();
    let hits = seen.clone();
    let receiver = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let hits = hits.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                *hits.lock().unwrap().entry(key).or_default() += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    // Policies: the shipped ones, with a sev1 chain of two webhook steps 5 s apart.
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))? {
        let path = entry?.path();
        std::fs::copy(&path, policies.join(path.file_name().unwrap()))?;
    }
    std::fs::write(
        policies.join("escalation.toml"),
        "[chains.sev1]\nsteps = [\n  { notify = [\"webhook:bench\"] },\n  { after = \"5s\", notify = [\"webhook:bench\"] },\n]\n\
         [chains.database]\nsteps = [{ notify = [\"webhook:bench\"] }]\n",
    )?;
    let config = dir.join("runbot.toml");
    std::fs::write(
        &config,
        format!(
            "[[notify.webhooks]]\nname = \"bench\"\nurl = \"{hook}\"\nsecret = \"bench-secret-0123456789\"\n"
        ),
    )?;
    let db = dir.join("runbot.db");
    let env = vec![
        (
            "RUNBOT__HTTP__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "RUNBOT__DATABASE__URL".to_string(),
            format!("sqlite://{}", db.display()),
        ),
        (
            "RUNBOT__POLICY__DIR".to_string(),
            policies.display().to_string(),
        ),
        ("RUNBOT__LOG__LEVEL".to_string(), "warn".to_string()),
    ];
    let settings = runbot::config::Settings::load_from(Some(&config), env)?;
    let app = runbot::app::Application::build(settings).await?;
    let url = format!("http://{}/webhooks/alertmanager", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));

    // 1,000 groups at once (32 senders).
    let client = reqwest::Client::new();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..32 {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= groups {
                    break;
                }
                let body = serde_json::json!({
                    "version": "4", "groupKey": format!("{{}}:{{alertname=\"Bench{i}\"}}"),
                    "truncatedAlerts": 0, "status": "firing", "receiver": "runbot",
                    "groupLabels": {"alertname": format!("Bench{i}")},
                    "commonLabels": {"alertname": format!("Bench{i}"), "severity": "critical"},
                    "commonAnnotations": {}, "externalURL": "http://am:9093",
                    "alerts": [{"status": "firing",
                        "labels": {"alertname": format!("Bench{i}"), "severity": "critical"},
                        "annotations": {}, "startsAt": "2026-12-07T05:00:00Z",
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                        "fingerprint": format!("{i:016x}")}],
                });
                let r = client.post(&url).json(&body).send().await;
                assert!(r.is_ok_and(|r| r.status().is_success()));
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    println!(
        "escalation: {groups} groups stored in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    // Wait for every page of both steps.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = seen.lock().unwrap().len();
        if n >= 2 * groups || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await?;
    let rows: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT group_id, step, created_at, sent_at FROM pages WHERE step IS NOT NULL",
    )
    .fetch_all(&pool)
    .await?;
    let mut first: HashMap<i64, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut second: HashMap<i64, chrono::DateTime<chrono::Utc>> = HashMap::new();
    for (g, step, created, sent) in &rows {
        let Some(sent) = sent.as_deref().and_then(runbot::domain::parse_stored_time) else {
            continue;
        };
        match step {
            0 => {
                first.insert(*g, runbot::domain::parse_stored_time(created).unwrap());
            }
            1 => {
                second.insert(*g, sent);
            }
            _ => {}
        }
    }
    let mut late: Vec<f64> = second
        .iter()
        .filter_map(|(g, sent)| {
            let due = *first.get(g)? + chrono::Duration::seconds(5);
            Some((*sent - due).num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    late.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| late[((late.len() as f64 * p) as usize).min(late.len() - 1)];
    let twice = seen.lock().unwrap().values().filter(|&&n| n > 1).count();
    let rss = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    println!(
        "escalation: step-1 pages {} · step-2 pages {} of {groups} · received {} distinct pages, {twice} more than once",
        first.len(),
        late.len(),
        seen.lock().unwrap().len()
    );
    if !late.is_empty() {
        println!(
            "escalation: step 2 sent after its due time: p50 {:.3} s · p99 {:.3} s · max {:.3} s",
            pct(0.50),
            pct(0.99),
            late[late.len() - 1]
        );
    }
    println!(
        "escalation: peak RSS {} MB (runbot and the receiver, one process)",
        rss / 1024
    );
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("runbot-escalation-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
