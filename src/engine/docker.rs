//! The Docker Engine API adapter (bollard): the only place that talks to dockerd.
//!
//! Found as the Docker CLI finds the engine: `DOCKER_HOST`, else the default socket. The
//! API version is negotiated, so Debian's older engines (API 1.41) work as well as new ones.

use std::collections::HashMap;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, EndpointSettings,
    EventMessage, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::spec::{InjectedFile, PROJECT_LABEL, ResourceSpec};
use crate::config::fleet::{PinnedImage, registry_host};

/// What went wrong talking to the engine, phrased for an operator.
#[derive(Debug)]
pub enum EngineError {
    /// The engine cannot be reached at all.
    Unreachable { host: String, reason: String },
    /// Every source of an image failed (the registry and each mirror).
    Pull {
        image: String,
        attempts: Vec<PullAttempt>,
    },
    /// The local image does not carry the pinned digest.
    DigestMismatch { image: String, found: Vec<String> },
    /// Any other API call failed. `transient`: the engine did not answer (connection,
    /// timeout), so the same call may succeed later; an engine that answered and refused
    /// (port taken, no such file, invalid body) refuses again.
    Api {
        action: String,
        reason: String,
        transient: bool,
    },
}

/// One source of an image that failed to serve it.
#[derive(Clone, Debug)]
pub struct PullAttempt {
    pub source: String,
    pub reason: String,
    /// The registry was unreachable, timed out, or answered 5xx / 429: worth another try.
    pub transient: bool,
}

/// What a registry says when the image is not there or not for us: trying again later
/// gives the same answer. Matched in the engine's message (its status code is often a
/// generic 500 for a registry's 404 or 401).
const PERMANENT_PULL_ANSWERS: &[&str] = &[
    "manifest unknown",
    "not found",
    "unauthorized",
    "denied",
    "authentication required",
    "no basic auth credentials",
    "invalid reference",
    "repository name must",
    "does not exist",
];

impl EngineError {
    /// Whether trying again later may succeed (docs/engine.md, "Failures"): the engine
    /// or a registry could not be reached, timed out or answered 5xx / 429. Everything
    /// else (manifest unknown, unauthorized, digest mismatch, a create or start the
    /// engine refused) fails the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Unreachable { .. } => true,
            EngineError::Pull { attempts, .. } => attempts.iter().any(|a| a.transient),
            EngineError::DigestMismatch { .. } => false,
            EngineError::Api { transient, .. } => *transient,
        }
    }
}

/// Whether a failed pull of one source is worth another try (see [`PullAttempt`]).
fn pull_is_transient(error: &bollard::errors::Error) -> bool {
    use bollard::errors::Error;
    let permanent = |message: &str| {
        let message = message.to_lowercase();
        PERMANENT_PULL_ANSWERS.iter().any(|p| message.contains(p))
    };
    match error {
        Error::DockerResponseServerError {
            status_code,
            message,
        } => !permanent(message) && (*status_code >= 500 || *status_code == 429),
        Error::DockerStreamError { error } => !permanent(error),
        _ => true,
    }
}

/// Whether an API call failed without an answer from the engine (see [`EngineError::Api`]).
fn unanswered(error: &bollard::errors::Error) -> bool {
    use bollard::errors::Error;
    match error {
        Error::DockerResponseServerError { message, .. } => {
            let message = message.to_lowercase();
            ["timeout", "deadline exceeded", "connection refused"]
                .iter()
                .any(|p| message.contains(p))
        }
        Error::JsonDataError { .. }
        | Error::JsonSerdeError { .. }
        | Error::DockerStreamError { .. } => false,
        _ => true,
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Unreachable { host, reason } => write!(
                f,
                "cannot reach the Docker engine at {host}: {reason} (is dockerd running? set DOCKER_HOST to its socket)"
            ),
            EngineError::Pull { image, attempts } => {
                write!(f, "cannot pull {image}:")?;
                for attempt in attempts {
                    write!(f, " [{}: {}]", attempt.source, attempt.reason)?;
                }
                write!(
                    f,
                    " (check the registry is up and reachable, credentials in ~/.docker/config.json, or add a mirror under [registries])"
                )
            }
            EngineError::DigestMismatch { image, found } => write!(
                f,
                "pulled {image}, but the local image carries digests {found:?}, not the pinned one; the release is refused"
            ),
            EngineError::Api { action, reason, .. } => {
                write!(f, "Docker engine refused to {action}: {reason}")
            }
        }
    }
}

impl std::error::Error for EngineError {}

fn api(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let action = action.into();
    move |e| EngineError::Api {
        action,
        transient: unanswered(&e),
        reason: e.to_string(),
    }
}

/// A connection to one Docker engine.
#[derive(Clone)]
pub struct DockerEngine {
    client: Docker,
    host: String,
}

impl DockerEngine {
    /// Connects as the Docker CLI does and negotiates the API version.
    pub async fn connect() -> Result<Self, EngineError> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let unreachable = |reason: String| EngineError::Unreachable {
            host: host.clone(),
            reason,
        };
        let client = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
        let client = client
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        client
            .ping()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(DockerEngine { client, host })
    }

    pub fn client(&self) -> &Docker {
        &self.client
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Every container of the Compose project, running or not.
    pub async fn list_project(&self, project: &str) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={project}")],
        )]);
        self.client
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(api(format!("list the containers of project {project}")))
    }

    /// The engine's events for the project's containers (start, die, health_status, …).
    /// The project's container events from now on, or replayed from `since`.
    pub fn project_events(
        &self,
        project: &str,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> impl Stream<Item = Result<EventMessage, EngineError>> + use<> {
        let filters = HashMap::from([
            (
                "label".to_string(),
                vec![format!("{PROJECT_LABEL}={project}")],
            ),
            ("type".to_string(), vec!["container".to_string()]),
        ]);
        self.client
            .events(Some(EventsOptions {
                filters: Some(filters),
                since: since
                    .map(|t| format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos())),
                ..Default::default()
            }))
            .map_err(|e| api("stream events")(e))
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerInspectResponse, EngineError> {
        self.client
            .inspect_container(id, None)
            .await
            .map_err(api(format!("inspect container {id}")))
    }

    /// Creates a container named `name`; returns its id.
    pub async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, EngineError> {
        for endpoint in body
            .networking_config
            .iter()
            .flat_map(|n| n.endpoints_config.iter().flatten())
        {
            self.endpoint_mac_honoured(endpoint.1, name)?;
        }
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        self.client
            .create_container(Some(options), body)
            .await
            .map(|r| r.id)
            .map_err(api(format!("create container {name}")))
    }

    /// Writes `files` into the created container `id` (before it starts): a tar archive
    /// extracted at `/`, each file with its mode and owner (by default root's, readable
    /// by every user of the container: 0444, as `docker compose` writes secrets from the
    /// environment).
    pub async fn write_files(&self, id: &str, files: &[InjectedFile]) -> Result<(), EngineError> {
        let archive = secret_archive(files).map_err(|e| EngineError::Api {
            action: format!("write secrets into container {id}"),
            transient: false,
            reason: e.to_string(),
        })?;
        let options = bollard::query_parameters::UploadToContainerOptions {
            path: "/".to_string(),
            ..Default::default()
        };
        self.client
            .upload_to_container(id, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(api(format!("write secrets into container {id}")))
    }

    pub async fn connect_network(
        &self,
        network: &str,
        id: &str,
        endpoint: EndpointSettings,
    ) -> Result<(), EngineError> {
        self.endpoint_mac_honoured(&endpoint, id)?;
        let request = NetworkConnectRequest {
            container: id.to_string(),
            endpoint_config: Some(endpoint),
        };
        self.client
            .connect_network(network, request)
            .await
            .map_err(api(format!("connect {id} to network {network}")))
    }

    /// An endpoint's MAC address (`mac_address`) is honoured from Engine API 1.44
    /// (Docker 25) on; older engines drop it without a word, so it is refused there.
    fn endpoint_mac_honoured(
        &self,
        endpoint: &EndpointSettings,
        container: &str,
    ) -> Result<(), EngineError> {
        let version = self.client.client_version();
        if endpoint.mac_address.is_none()
            || (version.major_version, version.minor_version) >= (1, 44)
        {
            return Ok(());
        }
        Err(EngineError::Api {
            action: format!("create container {container}"),
            transient: false,
            reason: format!(
                "mac_address needs Docker Engine API 1.44 (Docker 25) or newer; this engine speaks {version}: upgrade it, or remove mac_address"
            ),
        })
    }

    /// Takes the container off `network`, so the network's DNS stops offering it.
    pub async fn disconnect_network(&self, network: &str, id: &str) -> Result<(), EngineError> {
        let request = NetworkDisconnectRequest {
            container: id.to_string(),
            force: Some(true),
        };
        self.client
            .disconnect_network(network, request)
            .await
            .map_err(api(format!("disconnect {id} from network {network}")))
    }

    /// Starts a container; one already running is not an error.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        match self.client.start_container(id, None).await {
            Ok(()) => Ok(()),
            // 304: already started.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("start container {id}"))(e)),
        }
    }

    /// The last `lines` lines the container wrote (stdout and stderr), for a failure's
    /// message; empty when the engine has none to give.
    pub async fn last_log_lines(&self, id: &str, lines: usize) -> Vec<String> {
        let options = bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let chunks: Vec<_> = self
            .client
            .logs(id, Some(options))
            .take(lines * 4)
            .collect()
            .await;
        let text: String = chunks
            .into_iter()
            .filter_map(Result::ok)
            .map(|chunk| String::from_utf8_lossy(&chunk.into_bytes()).into_owned())
            .collect();
        let all: Vec<String> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        all[all.len().saturating_sub(lines)..].to_vec()
    }

    /// Stops gracefully (the container's stop signal, then SIGKILL after `timeout`).
    pub async fn stop(
        &self,
        id: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), EngineError> {
        let options = StopContainerOptions {
            t: timeout.map(|t| i32::try_from(t.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match self.client.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("stop container {id}"))(e)),
        }
    }

    /// Removes a container (and its anonymous volumes); a missing one is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("remove container {id}"))(e)),
        }
    }

    pub async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        self.client
            .rename_container(
                id,
                RenameContainerOptions {
                    name: name.to_string(),
                },
            )
            .await
            .map_err(api(format!("rename container {id} to {name}")))
    }

    /// Creates the network unless it exists (external ones must exist).
    pub async fn ensure_network(&self, network: &ResourceSpec) -> Result<(), EngineError> {
        if self
            .client
            .inspect_network(&network.name, None)
            .await
            .is_ok()
        {
            return Ok(());
        }
        if network.external {
            return Err(EngineError::Api {
                action: format!("find external network {}", network.name),
                reason: "it does not exist; create it on the node first".to_string(),
                transient: false,
            });
        }
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: network.driver.clone(),
            labels: Some(network.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.client
            .create_network(request)
            .await
            .map(drop)
            .map_err(api(format!("create network {}", network.name)))
    }

    /// Creates the volume unless it exists (external ones must exist).
    pub async fn ensure_volume(&self, volume: &ResourceSpec) -> Result<(), EngineError> {
        if self.client.inspect_volume(&volume.name).await.is_ok() {
            return Ok(());
        }
        if volume.external {
            return Err(EngineError::Api {
                action: format!("find external volume {}", volume.name),
                reason: "it does not exist; create it on the node first".to_string(),
                transient: false,
            });
        }
        let request = VolumeCreateRequest {
            name: Some(volume.name.clone()),
            driver: volume.driver.clone(),
            labels: Some(volume.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.client
            .create_volume(request)
            .await
            .map(drop)
            .map_err(api(format!("create volume {}", volume.name)))
    }

    /// Removes one local reference to an image (the image itself goes with its last
    /// reference). Absent is fine; an image a container still uses is an error.
    pub async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        match self
            .client
            .remove_image(
                reference,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("remove image {reference}"))(e)),
        }
    }

    /// Whether the pinned image is present locally under `reference`.
    pub async fn has_image(&self, reference: &str, image: &PinnedImage) -> bool {
        match self.client.inspect_image(reference).await {
            Ok(inspect) => {
                carries_digest(inspect.repo_digests.as_deref().unwrap_or_default(), image)
            }
            Err(_) => false,
        }
    }

    /// Pulls `image` by digest, from its registry and then from each of `mirrors`, and
    /// checks the local image carries the pinned digest. Returns the reference the image
    /// is known by locally (the mirror's, when a mirror served it). Never touches
    /// containers.
    pub async fn pull(
        &self,
        image: &PinnedImage,
        mirrors: &[String],
    ) -> Result<String, EngineError> {
        let mut attempts = Vec::new();
        for reference in sources(image, mirrors) {
            if self.has_image(&reference, image).await {
                return Ok(reference);
            }
            let options = CreateImageOptions {
                from_image: Some(reference.clone()),
                ..Default::default()
            };
            let pulled = self
                .client
                .create_image(Some(options), None, credentials_for(&reference))
                .try_for_each(|_| async { Ok(()) })
                .await;
            match pulled {
                Ok(()) => {
                    let inspect = self
                        .client
                        .inspect_image(&reference)
                        .await
                        .map_err(api(format!("inspect {reference}")))?;
                    let found = inspect.repo_digests.unwrap_or_default();
                    if carries_digest(&found, image) {
                        return Ok(reference);
                    }
                    return Err(EngineError::DigestMismatch {
                        image: reference,
                        found,
                    });
                }
                Err(e) => attempts.push(PullAttempt {
                    transient: pull_is_transient(&e),
                    source: reference,
                    reason: e.to_string(),
                }),
            }
        }
        Err(EngineError::Pull {
            image: image.to_string(),
            attempts,
        })
    }
}

fn carries_digest(repo_digests: &[String], image: &PinnedImage) -> bool {
    let wanted = format!("@sha256:{}", image.digest);
    repo_digests.iter().any(|d| d.ends_with(&wanted))
}

/// The repository of a reference without its tag: `host:5000/a/b:1.4` → `host:5000/a/b`.
pub fn repository(name: &str) -> &str {
    match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    }
}

/// Where to pull `image` from, in order: its registry, then each mirror, always by digest.
pub fn sources(image: &PinnedImage, mirrors: &[String]) -> Vec<String> {
    let repo = repository(&image.name);
    let digest = format!("@sha256:{}", image.digest);
    let registry = image.registry();
    let path = repo
        .strip_prefix(registry)
        .map(|p| p.trim_start_matches('/'))
        .unwrap_or(repo);
    let path = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    std::iter::once(format!("{repo}{digest}"))
        .chain(
            mirrors
                .iter()
                .map(|m| format!("{}/{path}{digest}", m.trim_end_matches('/'))),
        )
        .collect()
}

/// Registry credentials from `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`),
/// as the Docker CLI stores them; none when absent. Credential helpers (`credsStore`,
/// `credHelpers`) are not consulted: see docs/engine.md.
fn credentials_for(reference: &str) -> Option<DockerCredentials> {
    let home = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker"))
        })?;
    let text = std::fs::read_to_string(home.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let (server, auth) = stored_auth(&config, reference)?;
    Some(DockerCredentials {
        auth: Some(auth.to_string()),
        serveraddress: Some(server.to_string()),
        ..Default::default()
    })
}

/// The `auths` entry of a Docker config for the registry of `reference`: its key and
/// `auth`. Docker Hub's credentials are stored under its v1 index URL.
fn stored_auth<'a>(config: &'a serde_json::Value, reference: &str) -> Option<(&'a str, &'a str)> {
    let host = registry_host(reference);
    let keys: &[&str] = if host == "docker.io" {
        &[
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
        ]
    } else {
        &[host]
    };
    let auths = config.get("auths")?.as_object()?;
    keys.iter().find_map(|key| {
        let (server, entry) = auths.get_key_value(*key)?;
        Some((server.as_str(), entry.get("auth")?.as_str()?))
    })
}

/// The tar archive [`DockerEngine::write_files`] uploads: the files alone, paths relative
/// to `/`. No directory entries: extracting one would re-own and re-mode a directory the
/// image already has (`/tmp`, a home); the engine makes missing parents itself.
fn secret_archive(files: &[InjectedFile]) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for file in files {
        let content = file.content.expose().as_bytes();
        let mut header = tar::Header::new_gnu();
        header.set_mode(file.mode);
        header.set_uid(file.uid);
        header.set_gid(file.gid);
        header.set_size(content.len() as u64);
        archive.append_data(&mut header, file.target.trim_start_matches('/'), content)?;
    }
    archive.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_strip_tags_and_rewrite_mirrors() {
        let d = "1".repeat(64);
        let image =
            PinnedImage::parse(&format!("registry.example.com/acme/api:1.4@sha256:{d}")).unwrap();
        assert_eq!(
            sources(&image, &["mirror.example.net:5000".to_string()]),
            vec![
                format!("registry.example.com/acme/api@sha256:{d}"),
                format!("mirror.example.net:5000/acme/api@sha256:{d}"),
            ]
        );
        let hub = PinnedImage::parse(&format!("nginx@sha256:{d}")).unwrap();
        assert_eq!(
            sources(&hub, &["m:1".into()])[1],
            format!("m:1/library/nginx@sha256:{d}")
        );
        assert_eq!(repository("127.0.0.1:5055/x/y"), "127.0.0.1:5055/x/y");
    }

    #[test]
    fn stored_auth_finds_the_registry_and_docker_hub() {
        let config = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOmh1Yg=="},
            "127.0.0.1:5055": {"auth": "bG9jYWw6bG9jYWw="},
        }});
        let d = "1".repeat(64);
        assert_eq!(
            stored_auth(&config, &format!("nginx@sha256:{d}")),
            Some(("https://index.docker.io/v1/", "aHViOmh1Yg=="))
        );
        assert_eq!(
            stored_auth(&config, &format!("library/nginx@sha256:{d}")).map(|a| a.1),
            Some("aHViOmh1Yg==")
        );
        assert_eq!(
            stored_auth(&config, &format!("127.0.0.1:5055/x/y@sha256:{d}")).map(|a| a.1),
            Some("bG9jYWw6bG9jYWw=")
        );
        assert_eq!(stored_auth(&config, &format!("quay.io/x@sha256:{d}")), None);
    }
}
