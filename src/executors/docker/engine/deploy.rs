//! What a deploy asks of the engine: is an image there (or can it be pulled), run a one-off
//! container of a new image (migrations), and recreate a service's containers on another
//! image the way docker-compose does.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HealthConfig, ImageConfig, RestartPolicy};
use bollard::query_parameters::{
    CreateImageOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptions,
};
use futures_util::StreamExt;

use super::{
    Container, Copy, Docker, DockerError, NUMBER_LABEL, ONEOFF_LABEL, POLL, PROJECT_LABEL,
    SERVICE_LABEL,
};

/// Put on the one-off containers a deploy runs, with the deploy's id, so the runbot that finds
/// the deploy interrupted can remove them.
pub const DEPLOY_LABEL: &str = "io.runbot.deploy";
/// Compose records the image id a container was created from.
const IMAGE_LABEL: &str = "com.docker.compose.image";

/// `registry:5000/team/backend:v1@sha256:…` with tag `v2` → `registry:5000/team/backend:v2`.
pub fn with_tag(image: &str, tag: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let last_slash = repo.rfind('/').map(|i| i + 1).unwrap_or(0);
    let repo = match repo[last_slash..].rfind(':') {
        Some(colon) => &repo[..last_slash + colon],
        None => repo,
    };
    format!("{repo}:{tag}")
}

/// The tag of an image reference (`latest` when it names none).
pub fn tag_of(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag.to_string(),
        None if image.contains('@') => "(digest)".into(),
        None => "latest".into(),
    }
}

/// An old container a recreate set aside (`{its short id}_{name}`) and did not get to remove:
/// not one of the service's replicas any more.
pub fn is_set_aside(c: &Container) -> bool {
    c.name.as_bytes().get(12) == Some(&b'_')
        && c.name.get(..12).is_some_and(|p| c.id.starts_with(p))
}

/// Whether an image can be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCheck {
    Present,
    Pulled,
    /// Neither on the engine nor pullable: why, in the engine's words.
    Missing(String),
}

/// How a one-off container ended.
#[derive(Debug, Clone)]
pub struct Oneoff {
    /// None when it was stopped at the time limit.
    pub exit_code: Option<i64>,
    /// Its last lines (stdout and stderr), oldest first.
    pub output: Vec<String>,
}

impl Docker {
    /// Whether the engine has `reference`, pulling it (within `pull_limit`) when it has not.
    pub async fn ensure_image(
        &self,
        reference: &str,
        pull_limit: Duration,
    ) -> Result<ImageCheck, DockerError> {
        let client = self.client().await?;
        match client.inspect_image(reference).await {
            Ok(_) => return Ok(ImageCheck::Present),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(self.error(e)),
        }
        let (repo, tag) = match reference.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => (reference.to_string(), "latest".to_string()),
        };
        let options = CreateImageOptions {
            from_image: Some(repo),
            tag: Some(tag),
            ..Default::default()
        };
        let pulled = async {
            let mut stream = client.create_image(Some(options), None, None);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(e) = info.error_detail.and_then(|d| d.message) {
                            return Err(e);
                        }
                    }
                    Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                        return Err(message)
                    }
                    Err(e) => return Err(super::root_cause(&e)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(pull_limit, pulled).await {
            Ok(Ok(())) => Ok(ImageCheck::Pulled),
            Ok(Err(why)) => Ok(ImageCheck::Missing(why)),
            Err(_) => Ok(ImageCheck::Missing(format!(
                "the pull did not finish within {} s (deploy.pull_timeout_secs)",
                pull_limit.as_secs()
            ))),
        }
    }

    async fn image_config(&self, reference: &str) -> Option<(String, ImageConfig)> {
        let client = self.client().await.ok()?;
        let i = self.timed(client.inspect_image(reference)).await.ok()?;
        Some((i.id.unwrap_or_default(), i.config.unwrap_or_default()))
    }

    /// The container's configuration on another image: what the old image set (env, command,
    /// labels, health check, …) gives way to the new image's; what the container itself set
    /// (compose's env, labels, mounts, networks) stays.
    async fn copy_on_image(&self, id: &str, image: &str) -> Result<Copy, DockerError> {
        let i = self.inspect_raw(id).await?;
        let old = match &i.image {
            Some(old_id) => self.image_config(old_id).await,
            None => None,
        };
        let new_id = self.image_config(image).await.map(|(id, _)| id);
        let mut copy = Copy::of(i);
        let b = &mut copy.body;
        if let Some((_, old)) = old {
            drop_image_defaults(b, &old);
        }
        b.image = Some(image.to_string());
        if let (Some(labels), Some(new_id)) = (b.labels.as_mut(), new_id) {
            if labels.contains_key(IMAGE_LABEL) {
                labels.insert(IMAGE_LABEL.into(), new_id);
            }
        }
        Ok(copy)
    }

    /// Replaces one container by one on `image`, as `docker compose up` does: stop the old
    /// one, set it aside under another name, create and start the new one under the old name,
    /// then remove the old one. If the new one cannot be created or started, the old one is
    /// put back and started. Returns the new container's id.
    pub async fn recreate(&self, old: &Container, image: &str) -> Result<String, DockerError> {
        let copy = self.copy_on_image(&old.id, image).await?;
        let client = self.client().await?.clone();
        let (stopping, limit) = self.stopping_client(&old.id).await?;
        if old.is_running() {
            self.timed_for(limit, stopping.stop_container(&old.id, None))
                .await?;
        }
        let short: String = old.id.chars().take(12).collect();
        let aside = format!("{short}_{}", old.name);
        let rename = |to: String| RenameContainerOptions { name: to };
        if let Err(e) = self
            .timed(client.rename_container(&old.id, rename(aside)))
            .await
        {
            // Still under its own name: start it again rather than leave the replica down.
            if old.is_running() {
                if let Err(again) = self.timed(client.start_container(&old.id, None)).await {
                    tracing::error!(error = %again, container = %old.name, "could not start the old container again");
                }
            }
            return Err(e);
        }
        match self.create_and_start(&old.name, copy).await {
            Ok(new_id) => {
                let remove = RemoveContainerOptionsBuilder::default().force(true).build();
                if let Err(e) = self
                    .timed(client.remove_container(&old.id, Some(remove)))
                    .await
                {
                    tracing::warn!(error = %e, container = %old.name, "the replaced container is left behind, stopped");
                }
                Ok(new_id)
            }
            Err(e) => {
                // Put the old one back as it was.
                let back = async {
                    self.timed(client.rename_container(&old.id, rename(old.name.clone())))
                        .await?;
                    if old.is_running() {
                        self.timed(client.start_container(&old.id, None)).await?;
                    }
                    Ok::<(), DockerError>(())
                };
                if let Err(again) = back.await {
                    tracing::error!(error = %again, container = %old.name, "could not put the old container back");
                }
                Err(e)
            }
        }
    }

    /// Runs `command` once in a new container made like `template` but on `image` (compose's
    /// `run`: no replica number, no restart, no health check), waits at most `limit`, and
    /// removes it. Labelled with the deploy's id so it can be found if runbot dies meanwhile.
    pub async fn run_oneoff(
        &self,
        template: &str,
        image: &str,
        command: &[String],
        deploy_id: i64,
        limit: Duration,
    ) -> Result<Oneoff, DockerError> {
        let mut copy = self.copy_on_image(template, image).await?;
        let b: &mut ContainerCreateBody = &mut copy.body;
        b.cmd = Some(command.to_vec());
        b.healthcheck = Some(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        });
        b.hostname = None;
        let labels = b.labels.get_or_insert_with(HashMap::new);
        let service = labels.get(SERVICE_LABEL).cloned().unwrap_or_default();
        labels.remove(NUMBER_LABEL);
        labels.insert(ONEOFF_LABEL.into(), "True".into());
        labels.insert(PROJECT_LABEL.into(), self.inner.project.to_string());
        labels.insert(DEPLOY_LABEL.into(), deploy_id.to_string());
        if let Some(h) = b.host_config.as_mut() {
            h.restart_policy = Some(RestartPolicy::default());
            h.auto_remove = Some(false);
            // Like compose's `run`: no published ports (the service holds them), and no
            // service aliases (its DNS name must not reach the migration).
            h.port_bindings = None;
            h.publish_all_ports = Some(false);
        }
        let no_aliases = |e: &mut bollard::models::EndpointSettings| e.aliases = None;
        if let Some(n) = b.networking_config.as_mut() {
            n.endpoints_config
                .iter_mut()
                .flatten()
                .for_each(|(_, e)| no_aliases(e));
        }
        copy.more_networks
            .iter_mut()
            .for_each(|(_, e)| no_aliases(e));
        let name = format!(
            "{}-{service}-run-{}",
            self.inner.project,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let id = self.create_and_start(&name, copy).await?;
        let client = self.client().await?.clone();
        let watched = async {
            let deadline = tokio::time::Instant::now() + limit;
            let exit_code = loop {
                let i = self.inspect_raw(&id).await?;
                let state = i.state.unwrap_or_default();
                if !state.running.unwrap_or(false) {
                    break state.exit_code;
                }
                if tokio::time::Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(POLL).await;
            };
            let options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .tail("50")
                .build();
            let mut output = Vec::new();
            let mut logs = client.logs(&id, Some(options));
            while let Some(Ok(chunk)) = logs.next().await {
                output.extend(
                    String::from_utf8_lossy(&chunk.into_bytes())
                        .lines()
                        .map(str::to_string),
                );
            }
            Ok::<_, DockerError>(Oneoff { exit_code, output })
        }
        .await;
        // Removed whatever happened: a failed deploy must not leave a migration running.
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(e) = self.timed(client.remove_container(&id, Some(remove))).await {
            tracing::error!(error = %e, container = %name, "a one-off container could not be removed; it may still run");
            if let Err(why) = watched {
                return Err(DockerError::Engine {
                    host: self.inner.host.to_string(),
                    message: format!("{why}; and the one-off container {name} could not be removed ({e}): it may still be running, stop it by hand"),
                });
            }
        }
        watched
    }

    /// Removes what a deploy left behind: its one-off containers, and old containers it had set
    /// aside (`{id}_{name}`) when a replacement for them is running.
    pub async fn remove_deploy_leftovers(&self, deploy_id: i64) -> Result<usize, DockerError> {
        let client = self.client().await?;
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{PROJECT_LABEL}={}", self.inner.project),
                format!("{DEPLOY_LABEL}={deploy_id}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self.timed(client.list_containers(Some(options))).await?;
        let mut removed = 0;
        for c in listed {
            let Some(id) = c.id else { continue };
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            if self
                .timed(client.remove_container(&id, Some(force)))
                .await
                .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Clears what `image` put in the container's configuration, so the new image's own values
/// apply.
fn drop_image_defaults(b: &mut ContainerCreateBody, image: &ImageConfig) {
    if let (Some(env), Some(from_image)) = (b.env.as_mut(), image.env.as_ref()) {
        env.retain(|e| !from_image.contains(e));
    }
    if let (Some(labels), Some(from_image)) = (b.labels.as_mut(), image.labels.as_ref()) {
        labels.retain(|k, v| from_image.get(k) != Some(v));
    }
    if b.cmd == image.cmd {
        b.cmd = None;
    }
    if b.entrypoint == image.entrypoint {
        b.entrypoint = None;
    }
    if b.healthcheck == image.healthcheck {
        b.healthcheck = None;
    }
    if b.working_dir == image.working_dir {
        b.working_dir = None;
    }
    if b.user == image.user {
        b.user = None;
    }
    if b.stop_signal == image.stop_signal {
        b.stop_signal = None;
    }
    if b.shell == image.shell {
        b.shell = None;
    }
    let sorted = |v: &Option<Vec<String>>| {
        v.clone().map(|mut v| {
            v.sort();
            v
        })
    };
    if sorted(&b.volumes) == sorted(&image.volumes) {
        b.volumes = None;
    }
    if sorted(&b.exposed_ports) == sorted(&image.exposed_ports) {
        b.exposed_ports = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_replace_only_the_tag() {
        assert_eq!(
            with_tag("runbot-test/backend:v1", "v2"),
            "runbot-test/backend:v2"
        );
        assert_eq!(with_tag("backend", "v2"), "backend:v2");
        assert_eq!(
            with_tag("registry:5000/team/backend:v1@sha256:abc", "v2"),
            "registry:5000/team/backend:v2"
        );
        assert_eq!(
            with_tag("registry:5000/backend", "v2"),
            "registry:5000/backend:v2"
        );
        assert_eq!(tag_of("registry:5000/team/backend:v1.2.3"), "v1.2.3");
        assert_eq!(tag_of("registry:5000/backend"), "latest");
    }
}
