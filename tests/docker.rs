//! `/status` and `/logs` against a real Docker engine (the one scripts/test starts, with the
//! images of scripts/test-images). Each test makes its own docker-compose project: containers
//! with compose's labels, created through the engine's API, then runs the commands through
//! the real dispatcher and checks the answers against what the engine runs.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthStatusEnum, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use common::rig::{devops, Edits, Rig};
use common::Db;
use futures_util::StreamExt;
use runbot::audit::{AuditFilter, Step};
use runbot::chat::Reply;
use runbot::commands::RawValue;
use runbot::invocation::Answer;

/// The engine scripts/test started.
fn docker_host() -> String {
    std::env::var("RUNBOT_TEST_DOCKER_HOST").expect(
        "RUNBOT_TEST_DOCKER_HOST is not set: run the tests with scripts/test, which starts Docker and builds the test images",
    )
}

async fn engine() -> bollard::Docker {
    let host = docker_host();
    let path = host
        .strip_prefix("unix://")
        .expect("RUNBOT_TEST_DOCKER_HOST is a unix socket");
    bollard::Docker::connect_with_unix(path, 60, bollard::API_DEFAULT_VERSION)
        .expect("the test engine's socket exists")
        .negotiate_version()
        .await
        .expect("the test engine answers")
}

/// A docker-compose project of the test's own, removed with all its containers when dropped,
/// also when the test panics.
struct Project {
    name: String,
    docker: bollard::Docker,
}

fn unique_project() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "rbt{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Project {
    async fn new() -> Project {
        Project {
            name: unique_project(),
            docker: engine().await,
        }
    }

    /// Creates and starts replica `number` of `service`, as docker-compose would label it.
    /// No network: the engine runs without a bridge, and nothing here needs one.
    async fn run(
        &self,
        service: &str,
        image: &str,
        number: u32,
        tweak: impl FnOnce(&mut ContainerCreateBody),
    ) -> String {
        let labels = HashMap::from([
            ("com.docker.compose.project".to_string(), self.name.clone()),
            ("com.docker.compose.service".to_string(), service.into()),
            (
                "com.docker.compose.container-number".to_string(),
                number.to_string(),
            ),
            ("com.docker.compose.oneoff".to_string(), "False".into()),
        ]);
        let mut body = ContainerCreateBody {
            image: Some(image.into()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        tweak(&mut body);
        let name = format!("{}-{service}-{number}", self.name);
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("creating {name} from {image}: {e}"));
        self.docker
            .start_container(&created.id, None)
            .await
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        created.id
    }

    /// Waits (at most 30 s) until the engine describes the container as `what` says.
    async fn wait_until(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&ContainerInspectResponse) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let i = self.docker.inspect_container(id, None).await.unwrap();
            if done(&i) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "container {id} is not {what} after 30 s: {:?}",
                i.state
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_health(&self, id: &str, want: HealthStatusEnum) {
        self.wait_until(id, want.as_ref(), |i| {
            i.state.as_ref().and_then(|s| s.health.as_ref()?.status) == Some(want)
        })
        .await;
    }

    /// Waits until the container's newest log line contains `text`.
    async fn wait_log(&self, id: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .tail("1")
                .build();
            let last: Vec<String> = self
                .docker
                .logs(id, Some(options))
                .map(|f| f.map(|f| f.to_string()).unwrap_or_default())
                .collect()
                .await;
            if last.iter().any(|l| l.contains(text)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} has not logged {text:?} within 30 s (last: {last:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be the one dropping: clean up from a
        // thread with a runtime of its own.
        let cleaned = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let docker = engine().await;
                    let filters = HashMap::from([(
                        "label",
                        vec![format!("com.docker.compose.project={name}")],
                    )]);
                    let listed = docker
                        .list_containers(Some(
                            ListContainersOptionsBuilder::default()
                                .all(true)
                                .filters(&filters)
                                .build(),
                        ))
                        .await
                        .unwrap_or_default();
                    for c in listed {
                        if let Some(id) = c.id {
                            let _ = docker
                                .remove_container(
                                    &id,
                                    Some(
                                        RemoveContainerOptionsBuilder::default()
                                            .force(true)
                                            .build(),
                                    ),
                                )
                                .await;
                        }
                    }
                })
        })
        .join();
        if cleaned.is_err() {
            eprintln!(
                "could not remove the containers of test project {}",
                self.name
            );
        }
    }
}

/// The dispatcher with the shipped commands and policies, a fresh SQLite database and the
/// given Docker settings.
async fn rig_with(docker: &[(&str, &str)]) -> Rig {
    Rig::new(Db::Sqlite, docker, runbot::invocation::system_clock()).await
}

/// For the test engine and this project.
async fn rig_on(project: &Project) -> Rig {
    rig_with(&[
        ("RUNBOT__DOCKER__HOST", &docker_host()),
        ("RUNBOT__DOCKER__PROJECT", &project.name),
    ])
    .await
}

/// Runs a read command as the DevOps Lead and returns the result it edits in.
async fn run(rig: &Rig, command: &str, args: &[(&str, RawValue)]) -> Reply {
    let edits = Arc::new(Edits::default());
    let answer = rig.ask(devops(), command, args, &edits).await;
    assert_eq!(
        answer,
        Answer::Deferred { ephemeral: true },
        "/{command} is a read: deferred, seen by the requester only"
    );
    edits.wait(1).await.remove(0)
}

/// The last audit row: its step, reason and summary.
async fn last_audit(rig: &Rig) -> (Step, Option<String>, Option<String>) {
    let row = rig
        .audit
        .recent(1, &AuditFilter::default())
        .await
        .unwrap()
        .remove(0);
    let summary = row
        .detail
        .as_ref()
        .and_then(|d| d.get("summary"))
        .and_then(|s| s.as_str())
        .map(str::to_string);
    (row.step, row.reason, summary)
}

fn text(s: &str) -> RawValue {
    RawValue::Text(s.into())
}

/// The block's rows, each as its words.
fn table(reply: &Reply) -> Vec<Vec<String>> {
    reply
        .code_block
        .as_deref()
        .unwrap_or_else(|| panic!("no table in {reply:?}"))
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], name: &str) -> &'a [String] {
    rows.iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

fn block_lines(reply: &Reply) -> Vec<&str> {
    reply
        .code_block
        .as_deref()
        .map(|b| b.lines().collect())
        .unwrap_or_default()
}

/// The content Discord would get for the reply.
fn discord_content(reply: &Reply) -> String {
    let body = serde_json::to_value(runbot::chat::discord::edit_original_body(reply)).unwrap();
    body["content"].as_str().unwrap_or_default().to_string()
}

const BACKEND_LOG: [&str; 7] = [
    "INFO starting backend v1 on :8000",
    "INFO connecting to postgres://app:***@db/app",
    "INFO cache settings: host=redis password=*** ttl=300",
    "INFO calling billing with Authorization: Bearer ***",
    "WARN slow start: 3 migrations pending",
    "ERROR could not warm the menu cache: redis timeout after 5s",
    "INFO ready",
];

#[tokio::test]
async fn status_shows_what_each_container_runs_and_how_it_is() {
    let p = Project::new().await;
    let backend = p.run("backend", "runbot-test/backend:v2", 1, |_| {}).await;
    let nginx = p.run("nginx", "runbot-test/backend:v3", 1, |_| {}).await;
    p.run("worker", "runbot-test/worker:v1", 1, |_| {}).await;
    p.run("worker", "runbot-test/worker:v1", 2, |_| {}).await;
    // Crashes at once; the engine restarts it twice, then leaves it exited.
    let beat = p
        .run("beat", "runbot-test/worker:v1", 1, |c| {
            c.cmd = Some(vec!["sh".into(), "-c".into(), "echo crash; exit 3".into()]);
            c.host_config.as_mut().unwrap().restart_policy = Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(2),
            });
        })
        .await;
    // Another project's containers are not this stack's.
    let other = Project::new().await;
    other
        .run("backend", "runbot-test/backend:v1", 1, |_| {})
        .await;

    p.wait_health(&backend, HealthStatusEnum::HEALTHY).await;
    p.wait_health(&nginx, HealthStatusEnum::UNHEALTHY).await;
    p.wait_until(&beat, "exited after 2 restarts", |i| {
        i.restart_count == Some(2)
            && i.state.as_ref().and_then(|s| s.running) == Some(false)
            && i.state.as_ref().and_then(|s| s.restarting) == Some(false)
    })
    .await;

    let rig = rig_on(&p).await;
    let reply = run(&rig, "status", &[]).await;
    assert!(reply.ephemeral);
    assert!(
        reply.text.contains(&format!(
            "**{}**: 5 containers: 4 running, 1 not running, 1 unhealthy",
            p.name
        )),
        "{}",
        reply.text
    );
    let rows = table(&reply);
    assert_eq!(
        rows[0],
        ["SERVICE", "STATE", "HEALTH", "FOR", "IMAGE", "RESTARTS"]
    );
    assert_eq!(
        rows.len(),
        6,
        "a header and one row per container: {rows:?}"
    );
    let b = row(&rows, "backend");
    assert_eq!(
        (&b[1], &b[2], &b[4], &b[5]),
        (
            &"running".into(),
            &"healthy".into(),
            &"backend:v2".into(),
            &"0".into()
        ),
        "{b:?}"
    );
    assert!(
        b[3].ends_with('s') || b[3].ends_with('m'),
        "up for seconds: {b:?}"
    );
    let n = row(&rows, "nginx");
    assert_eq!(
        (&n[1], &n[2], &n[4]),
        (&"running".into(), &"unhealthy".into(), &"backend:v3".into()),
        "{n:?}"
    );
    for w in ["worker-1", "worker-2"] {
        let w = row(&rows, w);
        assert_eq!(
            (&w[1], &w[2], &w[4], &w[5]),
            (
                &"running".into(),
                &"-".into(),
                &"worker:v1".into(),
                &"0".into()
            ),
            "{w:?}"
        );
    }
    let beat_row = row(&rows, "beat");
    assert_eq!(
        beat_row.join(" "),
        format!("beat exited (3) - {} worker:v1 2", beat_row[4]),
        "{beat_row:?}"
    );
    assert!(
        !reply.code_block.as_deref().unwrap().contains("backend:v1"),
        "another project's container is not listed"
    );
    assert_eq!(
        last_audit(&rig).await,
        (
            Step::Succeeded,
            None,
            Some("5 containers: 4 running, 1 not running, 1 unhealthy".into())
        )
    );

    let workers = run(&rig, "status", &[("service", text("worker"))]).await;
    let rows = table(&workers);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[1..].iter().all(|r| r[0].starts_with("worker-")));

    // The command's choices allow redis, but this project has none.
    let missing = run(&rig, "status", &[("service", text("redis"))]).await;
    let want = format!(
        "no service redis in project {}; known: backend, beat, nginx, worker",
        p.name
    );
    assert!(missing.text.contains(&want), "{}", missing.text);
    let (step, reason, _) = last_audit(&rig).await;
    assert_eq!(
        (step, reason.as_deref()),
        (Step::Failed, Some(want.as_str()))
    );
}

#[tokio::test]
async fn logs_show_the_newest_lines_with_secrets_masked() {
    let p = Project::new().await;
    let backend = p.run("backend", "runbot-test/backend:v1", 1, |_| {}).await;
    p.wait_log(&backend, "INFO ready").await;
    let rig = rig_on(&p).await;

    let all = run(&rig, "logs", &[("service", text("backend"))]).await;
    assert_eq!(
        block_lines(&all),
        BACKEND_LOG,
        "stdout and stderr, demultiplexed"
    );
    assert!(
        all.text
            .contains("Logs of **backend** (tail 100): 7 lines.")
            && all.text.contains("Secrets masked in 3 lines."),
        "{}",
        all.text
    );
    let content = discord_content(&all);
    assert!(!content.contains("hunter2"), "{content}");
    assert!(
        content.starts_with(&all.text) && content.ends_with("INFO ready\n```"),
        "{content}"
    );
    assert_eq!(
        last_audit(&rig).await,
        (
            Step::Succeeded,
            None,
            Some("showed 7 of 7 lines of backend, secrets masked".into())
        )
    );

    let tail = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("tail", RawValue::Integer(2))],
    )
    .await;
    assert_eq!(block_lines(&tail), BACKEND_LOG[5..]);

    let errors = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("grep", text("ERROR"))],
    )
    .await;
    assert_eq!(block_lines(&errors), [BACKEND_LOG[5]]);
    assert!(
        errors.text.contains("1 of 7 lines match."),
        "{}",
        errors.text
    );

    // Masked before the filter: a guessed password finds nothing.
    let guess = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("grep", text("hunter2"))],
    )
    .await;
    assert_eq!(guess.code_block, None);
    assert!(
        guess.text.contains("no lines (of 7 read)"),
        "{}",
        guess.text
    );
    // A plain substring, not a pattern.
    let plain = run(
        &rig,
        "logs",
        &[("service", text("backend")), ("grep", text("a.e"))],
    )
    .await;
    assert_eq!(plain.code_block, None, "{plain:?}");
}

#[tokio::test]
async fn logs_since_a_duration_leave_out_older_lines() {
    let p = Project::new().await;
    let worker = p.run("worker", "runbot-test/worker:v1", 1, |_| {}).await;
    p.wait_log(&worker, "worker tick 5").await;
    let rig = rig_on(&p).await;

    let ticks = |r: &Reply| -> Vec<u32> {
        block_lines(r)
            .iter()
            .map(|l| {
                l.strip_prefix("INFO worker tick ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected line {l:?}"))
            })
            .collect()
    };
    let hour = ticks(
        &run(
            &rig,
            "logs",
            &[("service", text("worker")), ("since", text("1h"))],
        )
        .await,
    );
    assert_eq!(hour[0], 0, "{hour:?}");
    assert!(hour.len() >= 6, "{hour:?}");

    let recent = ticks(
        &run(
            &rig,
            "logs",
            &[("service", text("worker")), ("since", text("2s"))],
        )
        .await,
    );
    // One line a second: the last two or three seconds' worth, none of the first.
    assert!(
        (1..=4).contains(&recent.len()) && recent[0] >= 3,
        "{recent:?} (of {hour:?})"
    );
}

#[tokio::test]
async fn long_logs_show_the_newest_lines_that_fit_one_discord_message() {
    let p = Project::new().await;
    let bulk = p
        .run("backend", "runbot-test/worker:v1", 1, |c| {
            c.cmd = Some(vec![
                "sh".into(),
                "-c".into(),
                r#"i=0; while [ $i -lt 3000 ]; do echo "bulk line $i of a long log"; i=$((i+1)); done; exec sleep 3600"#.into(),
            ]);
        })
        .await;
    p.wait_log(&bulk, "bulk line 2999 ").await;
    let rig = rig_on(&p).await;

    let reply = run(
        &rig,
        "logs",
        &[
            ("service", text("backend")),
            ("tail", RawValue::Integer(5000)),
        ],
    )
    .await;
    let lines = block_lines(&reply);
    let shown = lines.len();
    assert!(
        shown > 40 && shown < 100,
        "about 2,000 characters of lines: {shown}"
    );
    assert_eq!(lines.last(), Some(&"bulk line 2999 of a long log"));
    assert_eq!(
        lines[0],
        format!("bulk line {} of a long log", 3000 - shown)
    );
    assert!(
        reply.text.contains(&format!(
            "Logs of **backend** (tail 5000): 3000 lines; the last {shown} fit here."
        )),
        "{}",
        reply.text
    );
    let content = discord_content(&reply);
    assert!(content.chars().count() <= 2000, "{}", content.len());
    assert!(
        content.starts_with(&reply.text) && content.contains(&format!("```\n{}\n", lines[0])),
        "nothing was cut by the adapter: {content}"
    );
}

#[tokio::test]
async fn docker_unreachable_is_said_plainly_and_audited_as_a_failure() {
    // A port nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (host, cause) in [
        (
            "unix:///nonexistent/runbot/docker.sock".to_string(),
            "there is no socket at /nonexistent/runbot/docker.sock".to_string(),
        ),
        (
            format!("tcp://127.0.0.1:{closed}"),
            "Connection refused".to_string(),
        ),
    ] {
        let rig = rig_with(&[
            ("RUNBOT__DOCKER__HOST", &host),
            ("RUNBOT__DOCKER__PROJECT", "saas"),
        ])
        .await;
        for (command, args) in [
            ("status", vec![]),
            ("logs", vec![("service", text("backend"))]),
        ] {
            let reply = run(&rig, command, &args).await;
            let said = format!("Docker at {host} cannot be reached: {cause}");
            assert!(
                reply.text.contains(&said) && reply.text.contains("nothing was changed"),
                "{}",
                reply.text
            );
            let (step, reason, _) = last_audit(&rig).await;
            assert_eq!(step, Step::Failed);
            assert!(reason.unwrap().contains(&said));
        }
    }
}

#[tokio::test]
async fn without_a_project_or_its_containers_runbot_says_what_to_check() {
    let rig = rig_with(&[("RUNBOT__DOCKER__HOST", &docker_host())]).await;
    let reply = run(&rig, "status", &[]).await;
    assert!(
        reply
            .text
            .contains("set docker.project (RUNBOT__DOCKER__PROJECT)"),
        "{}",
        reply.text
    );
    assert_eq!(last_audit(&rig).await.0, Step::Failed);

    let empty = Project::new().await;
    let rig = rig_on(&empty).await;
    let status = run(&rig, "status", &[]).await;
    assert!(
        status.text.contains(&format!(
            "Project **{}** has no containers on Docker at {}",
            empty.name,
            docker_host()
        )),
        "{}",
        status.text
    );
    let logs = run(&rig, "logs", &[("service", text("backend"))]).await;
    assert!(
        logs.text.contains(&format!(
            "no service backend in project {}; it has no containers on this engine (is docker.project right?)",
            empty.name
        )),
        "{}",
        logs.text
    );
}
