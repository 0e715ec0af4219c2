//! A real Docker engine for tests: the one scripts/test starts, and docker-compose projects
//! of a test's own, made through the engine's API and removed when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HealthStatusEnum, HostConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

/// The engine scripts/test started.
pub fn docker_host() -> String {
    std::env::var("RUNBOT_TEST_DOCKER_HOST").expect(
        "RUNBOT_TEST_DOCKER_HOST is not set: run the tests with scripts/test, which starts Docker and builds the test images",
    )
}

pub async fn engine() -> bollard::Docker {
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
pub struct Project {
    pub name: String,
    pub docker: bollard::Docker,
}

fn unique_project() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "rbt{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A backend container that stops at once: busybox httpd as PID 1 ignores SIGTERM, and
/// waiting Docker's default 10 s for each stop would only make the tests slow.
pub fn quick_stop(c: &mut ContainerCreateBody) {
    c.stop_timeout = Some(1);
}

impl Project {
    pub async fn new() -> Project {
        Project {
            name: unique_project(),
            docker: engine().await,
        }
    }

    /// A project with one healthy backend replica, as the console tests restart it.
    pub async fn with_healthy_backend() -> Project {
        let p = Project::new().await;
        let backend = p
            .run("backend", "runbot-test/backend:v1", 1, quick_stop)
            .await;
        p.wait_health(&backend, HealthStatusEnum::HEALTHY).await;
        p
    }

    /// Settings that point runbot at this project on the test engine.
    pub fn options(&self, db: super::Db) -> super::Options {
        super::Options::new(db)
            .set("RUNBOT__DOCKER__HOST", &docker_host())
            .set("RUNBOT__DOCKER__PROJECT", &self.name)
    }

    /// Creates and starts replica `number` of `service`, as docker-compose would label it.
    /// No network: the engine runs without a bridge, and nothing here needs one.
    pub async fn run(
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
    pub async fn wait_until(
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

    pub async fn wait_health(&self, id: &str, want: HealthStatusEnum) {
        self.wait_until(id, want.as_ref(), |i| {
            i.state.as_ref().and_then(|s| s.health.as_ref()?.status) == Some(want)
        })
        .await;
    }

    /// Waits until the container's newest log line contains `text`.
    pub async fn wait_log(&self, id: &str, text: &str) {
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

/// Every container (running or not) that has all these `key=value` labels.
pub async fn labelled(
    docker: &bollard::Docker,
    labels: &[String],
) -> Result<Vec<ContainerSummary>, bollard::errors::Error> {
    let filters = HashMap::from([("label", labels.to_vec())]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
}

impl Project {
    /// Every container of the project, one-offs included.
    pub async fn containers(&self) -> Vec<ContainerSummary> {
        labelled(
            &self.docker,
            &[format!("com.docker.compose.project={}", self.name)],
        )
        .await
        .unwrap()
    }

    /// The project's containers of `service` that also carry `labels`, inspected.
    pub async fn inspect_service(
        &self,
        service: &str,
        labels: &[&str],
    ) -> Vec<bollard::models::ContainerInspectResponse> {
        let mut wanted = vec![
            format!("com.docker.compose.project={}", self.name),
            format!("com.docker.compose.service={service}"),
        ];
        wanted.extend(labels.iter().map(|l| l.to_string()));
        let mut out = Vec::new();
        for c in labelled(&self.docker, &wanted).await.unwrap() {
            out.push(
                self.docker
                    .inspect_container(&c.id.unwrap(), None)
                    .await
                    .unwrap(),
            );
        }
        out
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
                    let listed = labelled(&docker, &[format!("com.docker.compose.project={name}")])
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
                    // Named volumes a test gave its containers are named after the project.
                    let options = bollard::query_parameters::ListVolumesOptions {
                        filters: Some(HashMap::from([("name".to_string(), vec![name.clone()])])),
                    };
                    let volumes = docker
                        .list_volumes(Some(options))
                        .await
                        .ok()
                        .and_then(|v| v.volumes)
                        .unwrap_or_default();
                    for v in volumes.into_iter().filter(|v| v.name.starts_with(&name)) {
                        let _ = docker
                            .remove_volume(
                                &v.name,
                                None::<bollard::query_parameters::RemoveVolumeOptions>,
                            )
                            .await;
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
