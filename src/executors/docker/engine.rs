//! The Docker engine, through its API (bollard): the containers of one docker-compose project,
//! their logs, and the few changes runbot makes to them (restart, add and remove replicas).
//!
//! Resource use (`/stats`) is read as `docker stats --no-stream` reads it, and computed the way
//! the docker CLI computes it, so the numbers match what people see on the host.
//!
//! Services are found by the labels docker-compose puts on every container it makes, so
//! runbot needs no compose file. The client connects on first use and negotiates the API
//! version with the engine: engines of many ages are in use, and an older one refuses a
//! newer client ("client version 1.53 is too new").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStatsResponse, EndpointSettings,
    NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::domain::names::{DockerHost, ProjectName};

mod deploy;
pub use deploy::{is_set_aside, tag_of, with_tag, ImageCheck, Oneoff, DEPLOY_LABEL};

/// The labels docker-compose sets on the containers it creates.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";

/// How long Docker waits for a container to stop before killing it, when the container does
/// not say (compose's `stop_grace_period` sets the container's own).
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a container is looked at while waiting for it to come up.
const POLL: Duration = Duration::from_millis(250);

/// What went wrong, in words for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    #[error("Docker at {host} cannot be reached: {cause}; nothing was changed")]
    Unreachable { host: String, cause: String },
    #[error("Docker at {host} did not answer within {secs} s (docker.timeout_secs); nothing was changed")]
    Timeout { host: String, secs: u64 },
    #[error("Docker at {host} refused the request: {message}")]
    Engine { host: String, message: String },
    #[error("no service {service} in project {project}; {}", known_list(.known))]
    NoSuchService {
        service: String,
        project: String,
        known: Vec<String>,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "it has no containers on this engine (is docker.project right?)".into()
    } else {
        format!("known: {}", known.join(", "))
    }
}

/// One container of the project, as the engine describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub service: String,
    /// Compose's replica number (`--scale worker=3` makes 1, 2 and 3).
    pub number: Option<u32>,
    /// The image reference it was created from, e.g. `registry/app/backend:v1.2.3`.
    pub image: String,
    /// `running`, `exited`, `restarting`, `paused`, `created`, `dead`.
    pub state: String,
    pub exit_code: Option<i64>,
    /// `healthy`, `unhealthy` or `starting`; None without a health check.
    pub health: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub restart_count: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line a container wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub at: Option<DateTime<Utc>>,
    pub stream: Stream,
    pub text: String,
}

/// Which lines to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogQuery {
    /// The last this many lines.
    pub tail: u32,
    /// Only lines written at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// One sample of a container's resource use, as `docker stats --no-stream` shows it. None where
/// the engine gave no figure: it reads them from the container's cgroup, which some set-ups do
/// not let it see (rootless Docker without cgroup delegation, a controller not enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// 100 is one CPU's worth; a container busy on two CPUs shows 200.
    pub cpu_percent: Option<f64>,
    /// Bytes in use, without the page cache the kernel can reclaim (as the CLI shows it).
    pub memory: Option<u64>,
    /// The container's memory limit, or the host's memory when it has none.
    pub memory_limit: Option<u64>,
    pub pids: Option<u64>,
}

impl Usage {
    /// From the engine's one-shot sample (`stream=false`: `precpu_stats` is the sample before).
    pub fn from_stats(s: &ContainerStatsResponse) -> Usage {
        let memory = s.memory_stats.as_ref();
        Usage {
            cpu_percent: cpu_percent(s),
            memory: memory.and_then(memory_without_cache),
            memory_limit: memory.and_then(|m| m.limit).filter(|&l| l > 0),
            pids: s.pids_stats.as_ref().and_then(|p| p.current),
        }
    }

    pub fn memory_percent(&self) -> Option<f64> {
        Some(self.memory? as f64 / self.memory_limit? as f64 * 100.0)
    }

    /// Whether the engine gave none of the figures a running container has.
    pub fn is_empty(&self) -> bool {
        self.cpu_percent.is_none() && self.memory.is_none() && self.pids.is_none()
    }
}

/// The docker CLI's `calculateCPUPercentUnix`: the container's share of the host's CPU time
/// between the two samples, times the CPUs online. None without two samples to compare.
fn cpu_percent(s: &ContainerStatsResponse) -> Option<f64> {
    let now = s.cpu_stats.as_ref()?;
    let before = s.precpu_stats.as_ref()?;
    let total = now.cpu_usage.as_ref()?.total_usage?;
    let system = now.system_cpu_usage.filter(|&t| t > 0)?;
    // An engine that had no earlier sample sends zeros here.
    let before_system = before.system_cpu_usage.filter(|&t| t > 0)?;
    let before_total = before
        .cpu_usage
        .as_ref()
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    let cpus = now
        .online_cpus
        .filter(|&n| n > 0)
        .map(f64::from)
        .or_else(|| {
            let n = now.cpu_usage.as_ref()?.percpu_usage.as_ref()?.len();
            (n > 0).then_some(n as f64)
        })?;
    let cpu_delta = total as f64 - before_total as f64;
    let system_delta = system as f64 - before_system as f64;
    Some(if cpu_delta > 0.0 && system_delta > 0.0 {
        cpu_delta / system_delta * cpus * 100.0
    } else {
        0.0
    })
}

/// The docker CLI's `calculateMemUsageUnixNoCache`: usage less the inactive page cache,
/// `total_inactive_file` on cgroup v1, `inactive_file` on cgroup v2.
fn memory_without_cache(m: &bollard::models::ContainerMemoryStats) -> Option<u64> {
    let usage = m.usage?;
    let stats = m.stats.as_ref();
    let v1 = stats.and_then(|s| s.get("total_inactive_file")).copied();
    let v2 = stats.and_then(|s| s.get("inactive_file")).copied();
    Some(match (v1, v2) {
        (Some(cache), _) if cache < usage => usage - cache,
        (_, Some(cache)) if cache < usage => usage - cache,
        _ => usage,
    })
}

/// The engine, for one compose project. Cheap to clone.
#[derive(Clone)]
pub struct Docker {
    inner: Arc<Inner>,
}

struct Inner {
    host: DockerHost,
    project: ProjectName,
    timeout: Duration,
    /// Set once connected and negotiated; a failed attempt is tried again on the next request.
    client: tokio::sync::OnceCell<bollard::Docker>,
}

impl Docker {
    /// The engine at `host`, acting on `project`'s containers, each answer awaited at most
    /// `timeout`.
    pub fn new(host: DockerHost, project: ProjectName, timeout: Duration) -> Docker {
        Docker {
            inner: Arc::new(Inner {
                host,
                project,
                timeout,
                client: tokio::sync::OnceCell::new(),
            }),
        }
    }

    pub fn host(&self) -> &DockerHost {
        &self.inner.host
    }

    pub fn project(&self) -> &ProjectName {
        &self.inner.project
    }

    /// `docker.timeout_secs`.
    pub fn timeout_secs(&self) -> u64 {
        self.inner.timeout.as_secs()
    }

    /// Runs one exchange with the engine within `docker.timeout_secs`.
    async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, DockerError> {
        match tokio::time::timeout(self.inner.timeout, work).await {
            Ok(r) => r.map_err(|e| self.error(e)),
            Err(_) => Err(self.timeout()),
        }
    }

    fn timeout(&self) -> DockerError {
        DockerError::Timeout {
            host: self.inner.host.to_string(),
            secs: self.inner.timeout.as_secs(),
        }
    }

    fn error(&self, e: bollard::errors::Error) -> DockerError {
        use bollard::errors::Error as E;
        let host = self.inner.host.to_string();
        match e {
            E::DockerResponseServerError { message, .. } => DockerError::Engine { host, message },
            E::RequestTimeoutError => self.timeout(),
            E::SocketNotFoundError(path) => DockerError::Unreachable {
                host,
                cause: format!("there is no socket at {path}"),
            },
            other => DockerError::Unreachable {
                host,
                cause: root_cause(&other),
            },
        }
    }

    /// The connected client, its API version agreed with the engine.
    async fn client(&self) -> Result<&bollard::Docker, DockerError> {
        self.inner
            .client
            .get_or_try_init(|| async {
                let timeout = self.inner.timeout.as_secs().max(1);
                let client = match &self.inner.host {
                    DockerHost::Unix(path) => {
                        bollard::Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION)
                    }
                    DockerHost::Http(addr) => bollard::Docker::connect_with_http(
                        &format!("http://{addr}"),
                        timeout,
                        bollard::API_DEFAULT_VERSION,
                    ),
                }
                .map_err(|e| self.error(e))?;
                let client = self.timed(client.negotiate_version()).await?;
                tracing::info!(host = %self.inner.host, api = %client.client_version(), "connected to Docker");
                Ok(client)
            })
            .await
    }

    /// Every container of the project (running or not), by service then replica number.
    pub async fn containers(&self) -> Result<Vec<Container>, DockerError> {
        Ok(self.listed(None).await?.1)
    }

    /// The containers of one service; an error naming the known services when it has none.
    /// Only that service's containers are inspected: the list names every container's service.
    pub async fn service(&self, service: &str) -> Result<Vec<Container>, DockerError> {
        let (known, containers) = self.listed(Some(service)).await?;
        if containers.is_empty() {
            return Err(DockerError::NoSuchService {
                service: service.to_string(),
                project: self.inner.project.to_string(),
                known: known.into_iter().collect(),
            });
        }
        Ok(containers)
    }

    /// The services the project's list names (one-off containers left out, as [`container`]
    /// does), and the inspected containers of `only` (of all when None), sorted.
    async fn listed(
        &self,
        only: Option<&str>,
    ) -> Result<(BTreeSet<String>, Vec<Container>), DockerError> {
        let client = self.client().await?;
        let filters = HashMap::from([(
            "label",
            vec![format!("{PROJECT_LABEL}={}", self.inner.project)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self.timed(client.list_containers(Some(options))).await?;
        let mut known = BTreeSet::new();
        let mut ids = Vec::new();
        for c in &listed {
            let labels = c.labels.as_ref();
            let label = |name: &str| labels.and_then(|l| l.get(name)).map(String::as_str);
            let (Some(id), Some(service)) = (c.id.as_ref(), label(SERVICE_LABEL)) else {
                continue;
            };
            if label(ONEOFF_LABEL) == Some("True") {
                continue;
            }
            known.insert(service.to_string());
            if only.is_none_or(|s| s == service) {
                ids.push(id.clone());
            }
        }
        let inspections = futures_util::future::join_all(ids.into_iter().map(|id| async move {
            let inspected =
                tokio::time::timeout(self.inner.timeout, client.inspect_container(&id, None)).await;
            (id, inspected)
        }))
        .await;
        let mut containers = Vec::new();
        for (id, inspected) in inspections {
            match inspected {
                Ok(Ok(i)) => containers.extend(container(id, i)),
                // Removed between the list and the inspection: it is not there any more.
                Ok(Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                })) => {}
                Ok(Err(e)) => return Err(self.error(e)),
                Err(_) => return Err(self.timeout()),
            }
        }
        // What the inspection says decides, as for the whole project.
        if let Some(service) = only {
            containers.retain(|c| c.service == service);
        }
        containers
            .sort_by(|a, b| (&a.service, a.number, &a.name).cmp(&(&b.service, b.number, &b.name)));
        Ok((known, containers))
    }

    /// One container's last lines, stdout and stderr told apart, oldest first.
    pub async fn logs(&self, id: &str, query: LogQuery) -> Result<Vec<LogLine>, DockerError> {
        let client = self.client().await?;
        let mut options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&query.tail.to_string());
        if let Some(since) = query.since {
            options = options.since(since.timestamp().clamp(0, i32::MAX as i64) as i32);
        }
        let stream = client.logs(id, Some(options.build()));
        let frames: Vec<Result<LogOutput, bollard::errors::Error>> =
            match tokio::time::timeout(self.inner.timeout, stream.collect()).await {
                Ok(f) => f,
                Err(_) => return Err(self.timeout()),
            };
        let mut lines = Vec::new();
        for frame in frames {
            let (stream, bytes) = match frame.map_err(|e| self.error(e))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    (Stream::Stdout, message)
                }
                LogOutput::StdErr { message } => (Stream::Stderr, message),
                LogOutput::StdIn { .. } => continue,
            };
            // A frame is usually one line; a very long line comes in several frames.
            for raw in String::from_utf8_lossy(&bytes).split_terminator('\n') {
                let (at, text) = split_timestamp(raw);
                lines.push(LogLine {
                    at,
                    stream,
                    text: text.trim_end_matches('\r').to_string(),
                });
            }
        }
        Ok(lines)
    }
}

impl Docker {
    /// One sample of the container's resource use, within `docker.timeout_secs`. The engine
    /// answers after two of its sampling cycles (about 2 s), so that CPU can be compared.
    /// None when the container is gone.
    pub async fn usage(&self, id: &str) -> Result<Option<Usage>, DockerError> {
        let client = self.client().await?;
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(false)
            .build();
        let mut stream = client.stats(id, Some(options));
        match tokio::time::timeout(self.inner.timeout, stream.next()).await {
            Err(_) => Err(self.timeout()),
            Ok(None) => Ok(None),
            Ok(Some(Ok(s))) => Ok(Some(Usage::from_stats(&s))),
            Ok(Some(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }))) => Ok(None),
            Ok(Some(Err(e))) => Err(self.error(e)),
        }
    }
}

/// Changes to containers. Requests that stop a container get its stop grace period on top of
/// `docker.timeout_secs`: the engine answers only once the container has stopped.
impl Docker {
    async fn timed_for<T>(
        &self,
        limit: Duration,
        work: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, DockerError> {
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r.map_err(|e| self.error(e)),
            Err(_) => Err(DockerError::Timeout {
                host: self.inner.host.to_string(),
                secs: limit.as_secs(),
            }),
        }
    }

    async fn inspect_raw(&self, id: &str) -> Result<ContainerInspectResponse, DockerError> {
        let client = self.client().await?;
        self.timed(client.inspect_container(id, None)).await
    }

    /// A client whose requests may take as long as stopping the container does.
    async fn stopping_client(&self, id: &str) -> Result<(bollard::Docker, Duration), DockerError> {
        let grace = stop_grace(&self.inspect_raw(id).await?);
        let limit = self.inner.timeout + grace;
        let client = self.client().await?.clone().with_timeout(limit);
        Ok((client, limit))
    }

    /// One container as the engine describes it now.
    pub async fn inspect(&self, id: &str) -> Result<Container, DockerError> {
        let i = self.inspect_raw(id).await?;
        container(id.to_string(), i).ok_or_else(|| DockerError::Engine {
            host: self.inner.host.to_string(),
            message: format!("container {id} has lost its compose labels"),
        })
    }

    /// Stops the container (within its own stop grace period) and starts it again.
    pub async fn restart(&self, id: &str) -> Result<(), DockerError> {
        let (client, limit) = self.stopping_client(id).await?;
        self.timed_for(limit, client.restart_container(id, None))
            .await
    }

    /// Waits, at most `docker.timeout_secs`, until the container runs, started after `after`
    /// (when given), and is healthy if it has a health check. Returns how it is at the end and
    /// whether it got there; an unhealthy verdict or a stop ends the wait early.
    pub async fn wait_ready(
        &self,
        id: &str,
        after: Option<DateTime<Utc>>,
    ) -> Result<(Container, bool), DockerError> {
        self.wait_ready_within(id, after, self.inner.timeout).await
    }

    /// [`Docker::wait_ready`] with its own time limit (a deploy's `ready_timeout_secs`).
    pub async fn wait_ready_within(
        &self,
        id: &str,
        after: Option<DateTime<Utc>>,
        limit: Duration,
    ) -> Result<(Container, bool), DockerError> {
        self.wait_until(id, after, limit, true).await
    }

    /// Waits until the container runs, whatever its health check says yet.
    pub async fn wait_running(
        &self,
        id: &str,
        limit: Duration,
    ) -> Result<(Container, bool), DockerError> {
        self.wait_until(id, None, limit, false).await
    }

    async fn wait_until(
        &self,
        id: &str,
        after: Option<DateTime<Utc>>,
        limit: Duration,
        healthy: bool,
    ) -> Result<(Container, bool), DockerError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let c = self.inspect(id).await?;
            let restarted = match (after, c.started_at) {
                (None, _) => true,
                (Some(before), Some(now)) => now > before,
                (Some(_), None) => false,
            };
            if restarted {
                let ready = c.state == "running"
                    && (!healthy || matches!(c.health.as_deref(), None | Some("healthy")));
                let failed = (healthy && c.health.as_deref() == Some("unhealthy"))
                    || matches!(c.state.as_str(), "exited" | "dead");
                if ready || failed {
                    return Ok((c, ready));
                }
            }
            if tokio::time::Instant::now() + POLL > deadline {
                return Ok((c, false));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates and starts replica `number` of the template's service from the template's
    /// configuration, named and labelled as docker-compose v2 would. Returns its id; a replica
    /// that could not be started is removed again.
    pub async fn create_replica(&self, template: &str, number: u32) -> Result<String, DockerError> {
        let i = self.inspect_raw(template).await?;
        let mut copy = Copy::of(i);
        let labels = copy.body.labels.get_or_insert_with(HashMap::new);
        let service = labels.get(SERVICE_LABEL).cloned().unwrap_or_default();
        labels.insert(PROJECT_LABEL.into(), self.inner.project.to_string());
        labels.insert(NUMBER_LABEL.into(), number.to_string());
        labels.insert(ONEOFF_LABEL.into(), "False".into());
        let name = format!("{}-{service}-{number}", self.inner.project);
        self.create_and_start(&name, copy).await
    }

    /// Creates the container, connects its other networks and starts it; one that could not
    /// be started is removed again.
    async fn create_and_start(&self, name: &str, copy: Copy) -> Result<String, DockerError> {
        let client = self.client().await?;
        let created = self
            .timed(client.create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                copy.body,
            ))
            .await?;
        let started = async {
            for (network, endpoint_config) in copy.more_networks {
                let request = NetworkConnectRequest {
                    container: created.id.clone(),
                    endpoint_config: Some(endpoint_config),
                };
                self.timed(client.connect_network(&network, request))
                    .await?;
            }
            self.timed(client.start_container(&created.id, None)).await
        };
        if let Err(e) = started.await {
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            if let Err(gone) = self
                .timed(client.remove_container(&created.id, Some(force)))
                .await
            {
                tracing::warn!(error = %gone, container = %name, "a container that did not start is left behind");
            }
            return Err(e);
        }
        Ok(created.id)
    }

    /// Runs `cmd` (an argument vector, no shell) in a running container and waits for it:
    /// its exit code and what it wrote, stdout and stderr together. Within docker.timeout_secs.
    pub async fn exec(&self, id: &str, cmd: &[String]) -> Result<(i64, String), DockerError> {
        use bollard::exec::StartExecResults;
        let client = self.client().await?;
        let config = bollard::models::ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let created = self.timed(client.create_exec(id, config)).await?;
        let work = async {
            let mut text = String::new();
            if let StartExecResults::Attached { mut output, .. } =
                client.start_exec(&created.id, None).await?
            {
                while let Some(chunk) = output.next().await {
                    text.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
                }
            }
            let inspected = client.inspect_exec(&created.id).await?;
            Ok((inspected.exit_code.unwrap_or(-1), text))
        };
        self.timed(work).await
    }

    /// The subnets of the networks the project's containers are on, and each container's own
    /// addresses: addresses that must never be blocked, or the stack would lock itself out.
    pub async fn stack_networks(&self) -> Result<Vec<String>, DockerError> {
        let client = self.client().await?;
        let mut found = BTreeSet::new();
        let mut names = BTreeSet::new();
        for c in self.containers().await? {
            let i = self.timed(client.inspect_container(&c.id, None)).await?;
            for (name, e) in i
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default()
            {
                names.insert(name);
                for a in [e.ip_address, e.global_ipv6_address].into_iter().flatten() {
                    if !a.is_empty() {
                        found.insert(a);
                    }
                }
            }
        }
        for name in names {
            // host and none have no subnet of their own.
            if name == "host" || name == "none" {
                continue;
            }
            let n = self.timed(client.inspect_network(&name, None)).await?;
            for cfg in n.ipam.and_then(|i| i.config).unwrap_or_default() {
                if let Some(subnet) = cfg.subnet.filter(|s| !s.is_empty()) {
                    found.insert(subnet);
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Stops the container (within its stop grace period) and removes it. Its volumes stay:
    /// data is not runbot's to delete.
    pub async fn stop_and_remove(&self, id: &str) -> Result<(), DockerError> {
        let (client, limit) = self.stopping_client(id).await?;
        match self.timed_for(limit, client.stop_container(id, None)).await {
            Ok(()) => {}
            // Already stopped.
            Err(DockerError::Engine { .. }) if !self.inspect(id).await?.is_running() => {}
            Err(e) => return Err(e),
        }
        self.timed(client.remove_container(id, None)).await
    }
}

/// A container's configuration, ready to create another like it.
struct Copy {
    body: ContainerCreateBody,
    /// Networks beyond the first: older engines take one at creation.
    more_networks: Vec<(String, EndpointSettings)>,
}

impl Copy {
    fn of(i: ContainerInspectResponse) -> Copy {
        let template_id = i.id.clone().unwrap_or_default();
        let config = i.config.unwrap_or_default();
        let template_name = i
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let host_config = i.host_config.unwrap_or_default();
        // Endpoints without the template's own address, MAC and aliases: those are its alone.
        let own = |a: &String| a == &template_name || template_id.starts_with(a.as_str());
        let endpoint = |e: EndpointSettings| EndpointSettings {
            aliases: e
                .aliases
                .map(|a| a.into_iter().filter(|a| !own(a)).collect()),
            links: e.links,
            driver_opts: e.driver_opts,
            gw_priority: e.gw_priority,
            ..Default::default()
        };
        let mut networks: Vec<(String, EndpointSettings)> = i
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let primary = host_config.network_mode.as_deref().and_then(|mode| {
            let at = networks.iter().position(|(n, _)| n == mode)?;
            Some(networks.remove(at))
        });
        let body = ContainerCreateBody {
            // The engine's default hostname is the container's short id: the template's would
            // be wrong here.
            hostname: config
                .hostname
                .filter(|h| !template_id.starts_with(h.as_str())),
            domainname: config.domainname,
            user: config.user,
            exposed_ports: config.exposed_ports,
            tty: config.tty,
            open_stdin: config.open_stdin,
            stdin_once: config.stdin_once,
            env: config.env,
            cmd: config.cmd,
            healthcheck: config.healthcheck,
            args_escaped: config.args_escaped,
            image: config.image.or(i.image),
            volumes: config.volumes,
            working_dir: config.working_dir,
            entrypoint: config.entrypoint,
            network_disabled: config.network_disabled,
            labels: config.labels,
            stop_signal: config.stop_signal,
            stop_timeout: config.stop_timeout,
            shell: config.shell,
            host_config: Some(host_config),
            networking_config: primary.map(|(n, e)| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(n, endpoint(e))])),
            }),
            ..Default::default()
        };
        Copy {
            body,
            more_networks: networks
                .into_iter()
                .map(|(n, e)| (n, endpoint(e)))
                .collect(),
        }
    }
}

impl Container {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// The container's own stop grace period, or Docker's default.
fn stop_grace(i: &ContainerInspectResponse) -> Duration {
    i.config
        .as_ref()
        .and_then(|c| c.stop_timeout)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_STOP_GRACE)
}

/// The innermost error's words: "Connection refused (os error 111)" rather than the client's
/// wrapper around it.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// `2026-11-28T01:30:27.764905413Z text` → (time, text).
fn split_timestamp(raw: &str) -> (Option<DateTime<Utc>>, &str) {
    match raw.split_once(' ') {
        Some((ts, rest)) => match DateTime::parse_from_rfc3339(ts) {
            Ok(t) => (Some(t.with_timezone(&Utc)), rest),
            Err(_) => (None, raw),
        },
        None => match DateTime::parse_from_rfc3339(raw) {
            Ok(t) => (Some(t.with_timezone(&Utc)), ""),
            Err(_) => (None, raw),
        },
    }
}

/// Docker writes `0001-01-01T00:00:00Z` for "never".
fn engine_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}

fn container(id: String, i: ContainerInspectResponse) -> Option<Container> {
    let config = i.config.unwrap_or_default();
    let labels: BTreeMap<String, String> = config.labels.unwrap_or_default().into_iter().collect();
    let service = labels.get(SERVICE_LABEL)?.clone();
    // One-off containers (`compose run`, a deploy's migration) are not the service's replicas;
    // `docker compose ps` leaves them out too.
    if labels.get(ONEOFF_LABEL).is_some_and(|v| v == "True") {
        return None;
    }
    let state = i.state.unwrap_or_default();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let health = state
        .health
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none");
    Some(Container {
        id,
        name: i
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        number: labels.get(NUMBER_LABEL).and_then(|n| n.parse().ok()),
        service,
        image: config.image.or(i.image).unwrap_or_default(),
        exit_code: (status == "exited" || status == "dead")
            .then_some(state.exit_code)
            .flatten(),
        state: if status.is_empty() {
            "unknown".into()
        } else {
            status
        },
        health,
        started_at: engine_time(state.started_at.as_deref()),
        finished_at: engine_time(state.finished_at.as_deref()),
        restart_count: i.restart_count.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_unix_sockets_or_plain_tcp() {
        assert_eq!(
            DockerHost::parse("unix:///var/run/docker.sock"),
            Ok(DockerHost::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            DockerHost::parse("tcp://10.0.0.5:2375"),
            Ok(DockerHost::Http("10.0.0.5:2375".into()))
        );
        assert_eq!(
            DockerHost::parse("http://docker:2375/"),
            Ok(DockerHost::Http("docker:2375".into()))
        );
        for bad in [
            "unix://relative.sock",
            "/var/run/docker.sock",
            "https://docker:2376",
            "tcp://docker",
            "tcp://:2375",
            "tcp://docker:99999",
            "tcp://docker:2375/v1.41",
            "ssh://me@docker",
        ] {
            assert!(DockerHost::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            DockerHost::parse("http://docker:2375").unwrap().to_string(),
            "tcp://docker:2375"
        );
    }

    #[test]
    fn project_names_follow_compose() {
        for good in ["saas", "saas_cafeterias", "prod-2", "0day"] {
            assert!(ProjectName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Saas", "-x", "_x", "my project", "a.b"] {
            assert!(ProjectName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_lines_lose_their_engine_timestamp() {
        let (at, text) = split_timestamp("2026-11-28T01:30:27.764905413Z INFO ready");
        assert_eq!(text, "INFO ready");
        assert_eq!(at.unwrap().timestamp(), 1_795_829_427);
        assert_eq!(
            split_timestamp("no timestamp here"),
            (None, "no timestamp here")
        );
        assert!(engine_time(Some("0001-01-01T00:00:00Z")).is_none());
    }

    fn sample(json: serde_json::Value) -> Usage {
        Usage::from_stats(&serde_json::from_value(json).expect("the engine's shape"))
    }

    #[test]
    fn usage_is_computed_as_the_docker_cli_does_on_cgroup_v1() {
        // Captured from Docker 20.10 (cgroup v1): a busy loop in a container limited to 64 MiB.
        let u = sample(serde_json::json!({
            "read": "2026-11-28T02:34:12.355353522Z",
            "preread": "2026-11-28T02:34:11.351363407Z",
            "pids_stats": {"current": 1},
            "cpu_stats": {
                "cpu_usage": {"total_usage": 5_058_754_148u64, "percpu_usage": [7_652_857, 5_051_101_291u64],
                              "usage_in_kernelmode": 10_000_000, "usage_in_usermode": 5_040_000_000u64},
                "system_cpu_usage": 48_799_040_000_000u64, "online_cpus": 2,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
            },
            "precpu_stats": {
                "cpu_usage": {"total_usage": 4_054_852_439u64, "percpu_usage": [7_652_857, 4_047_199_582u64]},
                "system_cpu_usage": 48_797_040_000_000u64, "online_cpus": 2
            },
            "memory_stats": {
                "usage": 552_960, "max_usage": 4_075_520, "limit": 67_108_864,
                "stats": {"total_inactive_file": 8192, "inactive_file": 4096, "cache": 8192}
            },
            "name": "/rb-stats-probe",
            "id": "c949e3338f3a"
        }));
        // (5058754148 - 4054852439) / (48799040000000 - 48797040000000) × 2 × 100
        let cpu = u.cpu_percent.unwrap();
        assert!((cpu - 100.390_170_9).abs() < 1e-6, "{cpu}");
        // v1: total_inactive_file, not inactive_file.
        assert_eq!(u.memory, Some(552_960 - 8192));
        assert_eq!(u.memory_limit, Some(64 << 20));
        let pct = u.memory_percent().unwrap();
        assert!((pct - 544_768.0 / 67_108_864.0 * 100.0).abs() < 1e-9);
        assert_eq!(u.pids, Some(1));
    }

    #[test]
    fn usage_on_cgroup_v2_leaves_out_inactive_file_and_counts_cpus_from_percpu() {
        let u = sample(serde_json::json!({
            "pids_stats": {"current": 7, "limit": 4096},
            "cpu_stats": {
                "cpu_usage": {"total_usage": 300_000_000u64, "percpu_usage": [1, 2, 3, 4]},
                "system_cpu_usage": 20_000_000_000u64
            },
            "precpu_stats": {
                "cpu_usage": {"total_usage": 100_000_000u64},
                "system_cpu_usage": 16_000_000_000u64
            },
            "memory_stats": {"usage": 10_485_760, "limit": 2_147_483_648u64,
                             "stats": {"inactive_file": 2_097_152, "anon": 8_000_000}}
        }));
        // 200 ms of 4 s of all CPUs, on 4 CPUs (no online_cpus: the per-CPU list counts).
        assert!((u.cpu_percent.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(u.memory, Some(8_388_608));
        assert_eq!(u.pids, Some(7));
    }

    #[test]
    fn an_idle_container_uses_no_cpu_and_a_cache_larger_than_usage_is_not_subtracted() {
        let u = sample(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 500}, "system_cpu_usage": 9000, "online_cpus": 1},
            "precpu_stats": {"cpu_usage": {"total_usage": 500}, "system_cpu_usage": 8000, "online_cpus": 1},
            "memory_stats": {"usage": 1000, "limit": 4000, "stats": {"total_inactive_file": 5000}},
            "pids_stats": {"current": 0}
        }));
        assert_eq!(u.cpu_percent, Some(0.0));
        assert_eq!(u.memory, Some(1000));
        assert_eq!(u.memory_percent(), Some(25.0));
    }

    #[test]
    fn without_cgroup_data_there_are_no_figures_rather_than_zeros() {
        // What an engine that cannot read the cgroup answers (e.g. rootless without
        // delegation): empty memory and pid stats, CPU counters without the system's.
        let u = sample(serde_json::json!({
            "read": "2026-11-28T02:34:12Z",
            "pids_stats": {},
            "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
            "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
            "memory_stats": {}
        }));
        assert_eq!(u, Usage::default());
        assert!(u.is_empty());
        assert_eq!(u.memory_percent(), None);
        // A first sample with no earlier one to compare: no CPU figure, the rest stands.
        let first = sample(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 500}, "system_cpu_usage": 9000, "online_cpus": 1},
            "precpu_stats": {"cpu_usage": {}, "throttling_data": {}},
            "memory_stats": {"usage": 1000, "limit": 4000},
            "pids_stats": {"current": 2}
        }));
        assert_eq!(first.cpu_percent, None);
        assert_eq!(first.memory, Some(1000));
        assert!(!first.is_empty());
    }

    #[test]
    fn an_unknown_service_names_the_known_ones() {
        let e = DockerError::NoSuchService {
            service: "redis".into(),
            project: "saas".into(),
            known: vec!["backend".into(), "worker".into()],
        };
        assert_eq!(
            e.to_string(),
            "no service redis in project saas; known: backend, worker"
        );
    }
}
