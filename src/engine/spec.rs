//! What the engine is asked to create: the typed compose model translated, purely, into
//! container bodies for the Docker Engine API, with Compose's names and labels and a hash
//! of each service's effective configuration.
//!
//! The hash (label `com.docker.compose.config-hash`) decides what converge recreates: a
//! service whose hash equals its running container's label is left alone. It covers the
//! whole create body (image digest included) with every map sorted, so it is stable
//! across runs and YAML key order, and changes only for the service that changed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, EndpointIpamConfig, EndpointSettings,
    HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountType, NetworkingConfig, PortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use docker_compose_types as dct;
use sha2::{Digest as _, Sha256};

use crate::config::compose::values::{Condition, Dependency};
use crate::config::compose::values::{
    FileSource, Healthcheck, Link, MountKind, Network, Restart, ServiceValues, VolumeMount,
};
use crate::config::compose::{ComposeStack, ServiceExtras};
use crate::config::fleet::{ImageSet, PinnedImage, hex};
use crate::secret::{DigestKey, Secret};

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const CONFIG_HASH_LABEL: &str = "com.docker.compose.config-hash";
pub const NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
/// A short hash of each part of the configuration (`Env:1a2b3c4d,HostConfig.Mounts:…`),
/// so that a differing config-hash can say what changed (`gitfleet diff`).
pub const CONFIG_PARTS_LABEL: &str = "dev.gitfleet.config-parts";
/// How this gitfleet reads a service into its config hash. A container labelled with an
/// older scheme (or none) whose hash differs, image unchanged, was made by an older
/// gitfleet that read the same file differently: that is not drift, and it is recreated
/// with the next release, inside its window, not at once on every node after an upgrade.
/// Raise it with any change that moves hashes ([`crate::engine::plan::Change::Upgrade`]).
pub const HASH_SCHEME_LABEL: &str = "dev.gitfleet.hash-scheme";
pub const HASH_SCHEME: &str = "2";
/// `target=<keyed digest>` of each secret written into the container
/// ([`crate::secret::DigestKey`]).
pub const SECRET_DIGESTS_LABEL: &str = "dev.gitfleet.secret-digests";
/// The Compose version gitfleet's labels follow (docker-compose 1.x warns on, but lists,
/// other versions).
pub const COMPOSE_VERSION: &str = "1.29.2";

/// One service, ready to create.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    pub service: String,
    pub container_name: String,
    pub image: PinnedImage,
    /// The complete create body; its first network is in `networking_config`.
    pub create: ContainerCreateBody,
    /// Further networks, connected after create (old engines take one at create).
    pub extra_networks: Vec<(String, EndpointSettings)>,
    pub depends_on: Vec<Dependency>,
    pub config_hash: String,
    pub stop_timeout: Option<Duration>,
    /// A one-shot job: another service waits for it with `service_completed_successfully`,
    /// so it is meant to exit. Exited with code 0 it is done, not down: it is neither
    /// restarted by a converge nor failed by the gate.
    pub job: bool,
    /// Secrets from the node's environment, written into the container after create and
    /// before start (as `docker compose` does), never to a file on the host.
    pub injected: Vec<InjectedFile>,
    /// Bind mount sources inside the project directory: created as directories before
    /// the container when missing, as Compose does for `./data:/data` (a host path
    /// outside the project is the operator's and must exist).
    pub host_dirs: Vec<PathBuf>,
}

impl ServiceSpec {
    /// Every network the container joins, the first one (given at create) first.
    pub fn networks(&self) -> Vec<(String, EndpointSettings)> {
        let first = self
            .create
            .networking_config
            .as_ref()
            .and_then(|n| n.endpoints_config.as_ref())
            .into_iter()
            .flatten()
            .map(|(name, endpoint)| (name.clone(), endpoint.clone()));
        first.chain(self.extra_networks.iter().cloned()).collect()
    }

    /// Why this service cannot run two containers at once, if it cannot: a host port or
    /// the host's network can be bound by one container only, so start-first falls back
    /// to stop-first for it.
    pub fn start_first_blocker(&self) -> Option<&'static str> {
        let host = self.create.host_config.as_ref()?;
        if host.port_bindings.as_ref().is_some_and(|b| !b.is_empty()) {
            Some("it publishes host ports")
        } else if host.network_mode.as_deref() == Some("host") {
            Some("it uses the host's network")
        } else if self.networks().iter().any(|(_, e)| e.mac_address.is_some()) {
            // Two containers with one MAC on one network break both; the host's pid and
            // ipc namespaces take any number of containers.
            Some("it has a fixed MAC address")
        } else {
            None
        }
    }
}

/// A file written into a container before it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectedFile {
    /// Absolute path in the container.
    pub target: String,
    pub content: Secret,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// A network or volume the project needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSpec {
    /// The engine's name (`<project>_<key>`, the `name:` given, or the external name).
    pub name: String,
    /// Exists outside the project: never created or removed by gitfleet.
    pub external: bool,
    pub driver: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The whole stack as the engine should run it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectSpec {
    pub project: String,
    pub services: BTreeMap<String, ServiceSpec>,
    pub networks: BTreeMap<String, ResourceSpec>,
    pub volumes: BTreeMap<String, ResourceSpec>,
}

/// Where `relative` (to the compose file) is on the host: under `host_dir`, the
/// directory holding the compose file's directory on the node.
fn host_path(host_dir: &Path, relative: &str) -> PathBuf {
    host_dir.join(relative.strip_prefix("./").unwrap_or(relative))
}

/// A reference of the compose file the engine cannot be given, by service. The model
/// (`config::compose::values`) already refused every such file, and `gitfleet check` runs
/// this translation as its backstop: these are defence in depth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub service: String,
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service `{}`: {}", self.service, self.message)
    }
}

/// Every [`SpecError`] joined for a one-line message.
pub fn joined(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Translates the stack's typed model into create bodies; every problem is collected.
pub fn project_spec(
    project: &str,
    stack: &ComposeStack,
    images: &ImageSet,
    host_dir: &Path,
    key: &DigestKey,
) -> Result<ProjectSpec, Vec<SpecError>> {
    let mut errors = Vec::new();
    let compose = &stack.compose;
    let networks = top_networks(project, &compose.networks);
    let volumes = top_volumes(project, &compose.volumes);
    let mut services = BTreeMap::new();
    for (name, service) in &compose.services.0 {
        let error = |message: &str| SpecError {
            service: name.clone(),
            message: message.to_string(),
        };
        let Some(service) = service else {
            errors.push(error("the service is empty"));
            continue;
        };
        let Some(image) = images.0.get(name) else {
            errors.push(error("it has no pinned image"));
            continue;
        };
        let ctx = ServiceCtx {
            project,
            name,
            stack,
            networks: &networks,
            volumes: &volumes,
            host_dir,
            key,
        };
        match ctx.build(service, image) {
            Ok(spec) => {
                services.insert(name.clone(), spec);
            }
            Err(e) => errors.extend(e.iter().map(|e| error(e))),
        }
    }
    let jobs: Vec<String> = services
        .values()
        .flat_map(|s: &ServiceSpec| &s.depends_on)
        .filter(|d| d.condition == Condition::CompletedSuccessfully)
        .map(|d| d.service.clone())
        .collect();
    for job in jobs {
        if let Some(service) = services.get_mut(&job) {
            service.job = true;
        }
    }
    if errors.is_empty() {
        Ok(ProjectSpec {
            project: project.to_string(),
            services,
            networks,
            volumes,
        })
    } else {
        Err(errors)
    }
}

fn compose_labels(project: &str, kind: &str, key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PROJECT_LABEL.to_string(), project.to_string()),
        (format!("com.docker.compose.{kind}"), key.to_string()),
        (
            "com.docker.compose.version".to_string(),
            COMPOSE_VERSION.to_string(),
        ),
    ])
}

/// A top-level network or volume as written: what differs between the two kinds.
struct Declared<'a> {
    external: Option<(bool, Option<String>)>,
    name: Option<&'a String>,
    driver: Option<&'a String>,
    labels: Option<&'a dct::Labels>,
}

/// Compose's naming: the external name, else `name:`, else `<project>_<key>` (an
/// external resource without a name is the key itself).
fn resource(project: &str, kind: &str, key: &str, declared: Declared) -> ResourceSpec {
    let (external, external_name) = declared.external.unwrap_or((false, None));
    let name = external_name
        .or_else(|| declared.name.cloned())
        .unwrap_or_else(|| {
            if external {
                key.to_string()
            } else {
                format!("{project}_{key}")
            }
        });
    let mut labels = compose_labels(project, kind, key);
    labels.extend(declared.labels.map(label_map).unwrap_or_default());
    ResourceSpec {
        name,
        external,
        driver: declared.driver.cloned(),
        labels,
    }
}

fn top_networks(project: &str, networks: &dct::ComposeNetworks) -> BTreeMap<String, ResourceSpec> {
    let mut out = BTreeMap::from([(
        "default".to_string(),
        resource(
            project,
            "network",
            "default",
            Declared {
                external: None,
                name: None,
                driver: None,
                labels: None,
            },
        ),
    )]);
    for (key, settings) in &networks.0 {
        let s = match settings {
            dct::MapOrEmpty::Map(s) => Some(s),
            dct::MapOrEmpty::Empty => None,
        };
        let external = s.and_then(|s| s.external.as_ref()).map(|e| match e {
            dct::ComposeNetwork::Bool(b) => (*b, None),
            dct::ComposeNetwork::Detailed(d) => (true, Some(d.name.clone())),
        });
        let declared = Declared {
            external,
            name: s.and_then(|s| s.name.as_ref()),
            driver: s.and_then(|s| s.driver.as_ref()),
            labels: s.map(|s| &s.labels),
        };
        out.insert(key.clone(), resource(project, "network", key, declared));
    }
    out
}

fn top_volumes(project: &str, volumes: &dct::TopLevelVolumes) -> BTreeMap<String, ResourceSpec> {
    let mut out = BTreeMap::new();
    for (key, settings) in &volumes.0 {
        let s = match settings {
            dct::MapOrEmpty::Map(s) => Some(s),
            dct::MapOrEmpty::Empty => None,
        };
        let external = s.and_then(|s| s.external.as_ref()).map(|e| match e {
            dct::ExternalVolume::Bool(b) => (*b, None),
            dct::ExternalVolume::Name { name } => (true, Some(name.clone())),
        });
        let declared = Declared {
            external,
            name: s.and_then(|s| s.name.as_ref()),
            driver: s.and_then(|s| s.driver.as_ref()),
            labels: s.map(|s| &s.labels),
        };
        out.insert(key.clone(), resource(project, "volume", key, declared));
    }
    out
}

fn label_map(labels: &dct::Labels) -> BTreeMap<String, String> {
    match labels {
        dct::Labels::List(list) => list
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.clone(), String::new()),
            })
            .collect(),
        dct::Labels::Map(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

struct ServiceCtx<'a> {
    project: &'a str,
    name: &'a str,
    stack: &'a ComposeStack,
    networks: &'a BTreeMap<String, ResourceSpec>,
    volumes: &'a BTreeMap<String, ResourceSpec>,
    host_dir: &'a Path,
    key: &'a DigestKey,
}

/// The container name Compose gives a service.
pub fn container_name(project: &str, service: &str, explicit: Option<&str>) -> String {
    explicit.map_or_else(|| format!("{project}-{service}-1"), str::to_string)
}

impl ServiceCtx<'_> {
    fn build(&self, s: &dct::Service, image: &PinnedImage) -> Result<ServiceSpec, Vec<String>> {
        let mut errors = Vec::new();
        let mut err = |e: String| errors.push(e);
        let no_extras = ServiceExtras::default();
        let extras = self.stack.extras.get(self.name).unwrap_or(&no_extras);
        let no_values = ServiceValues::default();
        let values = self.stack.values.get(self.name).unwrap_or(&no_values);
        let container_name = container_name(self.project, self.name, s.container_name.as_deref());
        let env = Self::environment(values);
        let mounts = self.mounts(values).unwrap_or_else(|e| {
            err(e);
            Vec::new()
        });
        let host_dirs = mounts
            .iter()
            .filter(|m| m.typ == Some(MountType::BIND))
            .filter_map(|m| m.source.as_deref().map(PathBuf::from))
            .filter(|source| source.starts_with(self.host_dir))
            .collect();
        let (network_mode, first_network, mut extra_networks) =
            self.networks(&values.network).unwrap_or_else(|e| {
                err(e);
                (None, None, Vec::new())
            });
        let mut first_network = self.links(&values.links, first_network);
        if let Err(e) = self.mac_addresses(extras, &mut first_network, &mut extra_networks) {
            err(e);
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut labels = label_map(&s.labels);
        labels.extend([
            (PROJECT_LABEL.to_string(), self.project.to_string()),
            (SERVICE_LABEL.to_string(), self.name.to_string()),
            (NUMBER_LABEL.to_string(), "1".to_string()),
            (ONEOFF_LABEL.to_string(), "False".to_string()),
            (
                "com.docker.compose.version".to_string(),
                COMPOSE_VERSION.to_string(),
            ),
            (
                "com.docker.compose.project.working_dir".to_string(),
                self.host_dir.display().to_string(),
            ),
            // In the hash, as it always was: a fleet of one compose file keeps its
            // hashes across this change; splitting a stack into files recreates it once.
            (
                "com.docker.compose.project.config_files".to_string(),
                self.config_files(),
            ),
        ]);
        let injected = Self::injected(values);
        if !injected.is_empty() {
            // In the hash, so a rotated secret recreates exactly its consumers; keyed, so
            // the label offers nothing to test guesses against.
            let digests: Vec<String> = injected
                .iter()
                .map(|f| {
                    format!(
                        "{}={}",
                        f.target,
                        self.key.digest(f.content.expose().as_bytes())
                    )
                })
                .collect();
            labels.insert(SECRET_DIGESTS_LABEL.to_string(), digests.join(","));
        }
        let (exposed, port_bindings) = ports(values);
        let host_config = HostConfig {
            mounts: non_empty(mounts),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: values.restart.map(restart_policy),
            init: s.init.then_some(true),
            cap_add: non_empty(s.cap_add.clone()),
            cap_drop: non_empty(s.cap_drop.clone()),
            readonly_rootfs: s.read_only.then_some(true),
            tmpfs: values
                .tmpfs
                .as_ref()
                .map(|t| t.clone().into_iter().collect()),
            network_mode,
            sysctls: (!values.sysctls.is_empty())
                .then(|| values.sysctls.clone().into_iter().collect()),
            ulimits: non_empty(
                values
                    .ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect(),
            ),
            log_config: s.logging.as_ref().map(|l| HostConfigLogConfig {
                typ: l.driver.clone(),
                config: l
                    .options
                    .as_ref()
                    .map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()),
            }),
            security_opt: non_empty(s.security_opt.clone()),
            devices: non_empty(
                values
                    .devices
                    .iter()
                    .map(|d| DeviceMapping {
                        path_on_host: Some(d.host.clone()),
                        path_in_container: Some(d.container.clone()),
                        cgroup_permissions: Some(d.permissions.clone()),
                    })
                    .collect(),
            ),
            extra_hosts: non_empty(
                s.extra_hosts
                    .iter()
                    .map(|h| h.replacen('=', ":", 1))
                    .collect(),
            ),
            nano_cpus: values.nano_cpus,
            memory: values.memory,
            pids_limit: extras.pids_limit,
            shm_size: values.shm_size,
            dns: non_empty(extras.dns.clone()),
            dns_search: non_empty(extras.dns_search.clone()),
            dns_options: non_empty(s.dns_opt.clone()),
            group_add: non_empty(
                s.group_add
                    .iter()
                    .map(|g| match g {
                        dct::Group::Named(name) => name.clone(),
                        dct::Group::Gid(gid) => gid.to_string(),
                    })
                    .collect(),
            ),
            oom_score_adj: extras.oom_score_adj,
            memory_reservation: values.memory_reservation,
            device_requests: non_empty(
                extras
                    .device_requests
                    .iter()
                    .map(|d| DeviceRequest {
                        driver: d.driver.clone(),
                        count: d.count,
                        device_ids: non_empty(d.device_ids.clone()),
                        capabilities: (!d.capabilities.is_empty())
                            .then(|| vec![d.capabilities.clone()]),
                        options: (!d.options.is_empty())
                            .then(|| d.options.clone().into_iter().collect()),
                    })
                    .collect(),
            ),
            cgroup_parent: s.cgroup_parent.clone(),
            userns_mode: s.userns_mode.clone(),
            privileged: s.privileged.then_some(true),
            pid_mode: s.pid.as_deref().map(|m| self.namespace_mode(m)),
            ipc_mode: s.ipc.as_deref().map(|m| self.namespace_mode(m)),
            storage_opt: (!extras.storage_opt.is_empty())
                .then(|| extras.storage_opt.clone().into_iter().collect()),
            ..Default::default()
        };
        let create = ContainerCreateBody {
            image: Some(image.to_string()),
            hostname: s.hostname.clone(),
            domainname: s.domainname.clone(),
            user: s.user.clone(),
            working_dir: s.working_dir.clone(),
            env: non_empty(env),
            cmd: values.command.clone(),
            entrypoint: values.entrypoint.clone(),
            exposed_ports: non_empty(exposed),
            healthcheck: values.healthcheck.as_ref().map(healthcheck),
            stop_signal: s.stop_signal.clone(),
            stop_timeout: values.stop_grace_period.map(|d| d.as_secs() as i64),
            tty: s.tty.then_some(true),
            open_stdin: s.stdin_open.then_some(true),
            labels: Some(labels.into_iter().collect()),
            host_config: Some(host_config),
            networking_config: first_network.map(|(name, endpoint)| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(name, endpoint)])),
            }),
            ..Default::default()
        };
        let config_hash = config_hash(&create, &extra_networks);
        let parts = config_parts(&create, &extra_networks);
        let mut create = create;
        if let Some(labels) = create.labels.as_mut() {
            labels.insert(CONFIG_HASH_LABEL.to_string(), config_hash.clone());
            labels.insert(CONFIG_PARTS_LABEL.to_string(), parts);
            // Outside the hash: the scheme says how the hash was made.
            labels.insert(HASH_SCHEME_LABEL.to_string(), HASH_SCHEME.to_string());
        }
        Ok(ServiceSpec {
            service: self.name.to_string(),
            container_name,
            image: image.clone(),
            create,
            extra_networks,
            depends_on: values.depends_on.clone(),
            config_hash,
            stop_timeout: values.stop_grace_period,
            job: false,
            injected,
            host_dirs,
        })
    }

    /// `env_file`s first, then `environment` over them, as Compose does.
    fn environment(values: &ServiceValues) -> Vec<String> {
        let mut env: BTreeMap<&str, &str> = BTreeMap::new();
        env.extend(
            values
                .env_files
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        env.extend(
            values
                .environment
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Volumes, then `secrets` and `configs` files (bind-mounted read-only).
    fn mounts(&self, values: &ServiceValues) -> Result<Vec<Mount>, String> {
        let mut mounts = Vec::new();
        for volume in &values.volumes {
            mounts.push(self.volume(volume)?);
        }
        for file in &values.files {
            if let FileSource::Path(path) = &file.source {
                mounts.push(self.file_mount(path, file.target.clone()));
            }
        }
        Ok(mounts)
    }

    /// Secrets whose content comes from the node's environment.
    fn injected(values: &ServiceValues) -> Vec<InjectedFile> {
        values
            .files
            .iter()
            .filter_map(|file| match &file.source {
                FileSource::Content {
                    content,
                    mode,
                    uid,
                    gid,
                } => Some(InjectedFile {
                    target: file.target.clone(),
                    content: content.clone(),
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                }),
                FileSource::Path(_) => None,
            })
            .collect()
    }

    fn file_mount(&self, file: &str, target: String) -> Mount {
        Mount {
            typ: Some(MountType::BIND),
            source: Some(host_path(self.host_dir, file).display().to_string()),
            target: Some(target),
            read_only: Some(true),
            ..Default::default()
        }
    }

    fn named_volume(&self, key: &str) -> Result<String, String> {
        self.volumes
            .get(key)
            .map(|v| v.name.clone())
            .ok_or_else(|| format!("volume `{key}` is not declared under top-level `volumes`"))
    }

    fn volume(&self, v: &VolumeMount) -> Result<Mount, String> {
        let (typ, source, tmpfs_options) = match &v.kind {
            MountKind::Bind(path) => (MountType::BIND, Some(self.bind_source(path)), None),
            MountKind::Named(key) => (MountType::VOLUME, Some(self.named_volume(key)?), None),
            MountKind::Anonymous => (MountType::VOLUME, None, None),
            MountKind::Tmpfs { size } => (
                MountType::TMPFS,
                None,
                size.map(|size| bollard::models::MountTmpfsOptions {
                    size_bytes: Some(size),
                    ..Default::default()
                }),
            ),
        };
        Ok(Mount {
            typ: Some(typ),
            source,
            target: Some(v.target.clone()),
            read_only: v.read_only.then_some(true),
            tmpfs_options,
            ..Default::default()
        })
    }

    fn bind_source(&self, src: &str) -> String {
        if src.starts_with('/') {
            src.to_string()
        } else if let Some(rest) = src.strip_prefix("~/") {
            std::env::var("HOME").map_or_else(|_| src.to_string(), |h| format!("{h}/{rest}"))
        } else {
            host_path(self.host_dir, src).display().to_string()
        }
    }

    fn network_name(&self, key: &str) -> Result<String, String> {
        self.networks
            .get(key)
            .map(|n| n.name.clone())
            .ok_or_else(|| format!("network `{key}` is not declared under top-level `networks`"))
    }

    /// `network_mode`, the first network (set at create) and the others (connected
    /// after). Every endpoint gets the service name as an alias, so services find each
    /// other by name as under Compose.
    #[allow(clippy::type_complexity)]
    fn networks(
        &self,
        network: &Network,
    ) -> Result<
        (
            Option<String>,
            Option<(String, EndpointSettings)>,
            Vec<(String, EndpointSettings)>,
        ),
        String,
    > {
        let endpoints = match network {
            Network::Mode(mode) => return Ok((Some(mode.clone()), None, Vec::new())),
            Network::Service(other) => {
                let mode = self.namespace_mode(&format!("service:{other}"));
                return Ok((Some(mode), None, Vec::new()));
            }
            Network::Joined(endpoints) => endpoints,
        };
        let list = endpoints
            .iter()
            .map(|e| {
                let ipam = (e.ipv4_address.is_some() || e.ipv6_address.is_some()).then(|| {
                    EndpointIpamConfig {
                        ipv4_address: e.ipv4_address.clone(),
                        ipv6_address: e.ipv6_address.clone(),
                        ..Default::default()
                    }
                });
                let endpoint = EndpointSettings {
                    aliases: Some(
                        std::iter::once(self.name.to_string())
                            .chain(e.aliases.iter().cloned())
                            .collect(),
                    ),
                    ipam_config: ipam,
                    ..Default::default()
                };
                Ok((self.network_name(&e.network)?, endpoint))
            })
            .collect::<Result<Vec<_>, String>>()?;
        // The model joins at least `default`; the first network is given at create.
        let mut list = list.into_iter();
        let first = list.next();
        Ok((first.as_ref().map(|f| f.0.clone()), first, list.collect()))
    }

    /// A `network_mode`, `pid` or `ipc` mode for the engine: `service:x` (another
    /// service's namespace) becomes `container:<x's container name>`.
    fn namespace_mode(&self, mode: &str) -> String {
        match mode.strip_prefix("service:") {
            Some(other) => {
                let explicit = self
                    .stack
                    .compose
                    .services
                    .0
                    .get(other)
                    .and_then(|o| o.as_ref())
                    .and_then(|o| o.container_name.as_deref());
                format!(
                    "container:{}",
                    container_name(self.project, other, explicit)
                )
            }
            None => mode.to_string(),
        }
    }

    /// `networks.<n>.mac_address` on its endpoint, and the service's `mac_address` on
    /// the first network's unless that one has its own, as `docker compose` sets them
    /// for Engine API 1.44 and newer (older engines ignore an endpoint's MAC:
    /// [`super::docker::DockerEngine::create`] refuses there).
    fn mac_addresses(
        &self,
        extras: &ServiceExtras,
        first: &mut Option<(String, EndpointSettings)>,
        others: &mut [(String, EndpointSettings)],
    ) -> Result<(), String> {
        for (key, mac) in &extras.network_macs {
            let name = self.network_name(key)?;
            if let Some((_, endpoint)) = first
                .iter_mut()
                .chain(others.iter_mut())
                .find(|(n, _)| *n == name)
            {
                endpoint.mac_address = Some(mac.clone());
            }
        }
        if let Some(mac) = &extras.mac_address {
            let Some((_, endpoint)) = first else {
                return Err(
                    "mac_address: needs a network of the stack (not `network_mode`)".to_string(),
                );
            };
            endpoint.mac_address.get_or_insert_with(|| mac.clone());
        }
        Ok(())
    }

    /// `links`, as Compose makes them on a user-defined network: the linked container
    /// is reachable from this one under the alias, on the first network (a service with
    /// links has one: the model refuses links beside `network_mode`).
    fn links(
        &self,
        links: &[Link],
        first_network: Option<(String, EndpointSettings)>,
    ) -> Option<(String, EndpointSettings)> {
        let (network, mut endpoint) = first_network?;
        if !links.is_empty() {
            let explicit = |service: &str| {
                self.stack
                    .compose
                    .services
                    .0
                    .get(service)
                    .and_then(|o| o.as_ref())
                    .and_then(|o| o.container_name.as_deref())
            };
            endpoint.links = Some(
                links
                    .iter()
                    .map(|l| {
                        let name = container_name(self.project, &l.service, explicit(&l.service));
                        format!("{name}:{}", l.alias)
                    })
                    .collect(),
            );
        }
        Some((network, endpoint))
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn healthcheck(h: &Healthcheck) -> HealthConfig {
    // The model checked that every duration fits the engine's i64 nanoseconds.
    let nanos = |d: &Option<Duration>| d.map(|d| d.as_nanos() as i64);
    HealthConfig {
        test: h.test.clone(),
        interval: nanos(&h.interval),
        timeout: nanos(&h.timeout),
        retries: h.retries,
        start_period: nanos(&h.start_period),
        start_interval: nanos(&h.start_interval),
    }
}

fn restart_policy(restart: Restart) -> RestartPolicy {
    let (name, maximum_retry_count) = match restart {
        Restart::No => (RestartPolicyNameEnum::NO, None),
        Restart::Always => (RestartPolicyNameEnum::ALWAYS, None),
        Restart::OnFailure { max_retries } => (RestartPolicyNameEnum::ON_FAILURE, max_retries),
        Restart::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count,
    }
}

type PortMap = HashMap<String, Option<Vec<PortBinding>>>;

/// Exposed ports and bindings, keyed `8080/tcp`.
fn ports(values: &ServiceValues) -> (Vec<String>, PortMap) {
    let mut bindings: PortMap = HashMap::new();
    for p in &values.ports {
        bindings
            .entry(p.key())
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.clone()),
            });
    }
    (values.exposed.clone(), bindings)
}

impl ServiceCtx<'_> {
    /// Every compose file merged, on the host, comma-separated as Compose writes it.
    fn config_files(&self) -> String {
        let dir = crate::config::parent_dir(&self.stack.file);
        let files: Vec<String> = self
            .stack
            .config_files
            .iter()
            .map(|f| {
                let relative = f.strip_prefix(dir).unwrap_or(f).trim_start_matches('/');
                host_path(self.host_dir, relative).display().to_string()
            })
            .collect();
        files.join(",")
    }
}

/// sha256 over the canonical JSON of the create body and extra networks (maps sorted).
fn config_hash(create: &ContainerCreateBody, extra: &[(String, EndpointSettings)]) -> String {
    canonical_hash(&serde_json::json!({ "create": create, "networks": extra }))
}

fn canonical_hash(value: &serde_json::Value) -> String {
    let mut canonical = String::new();
    write_canonical(value, &mut canonical);
    hex(&Sha256::digest(canonical.as_bytes()))
}

/// The value of [`CONFIG_PARTS_LABEL`]: each field of the create body (each field of its
/// `HostConfig` on its own) and the extra networks, with the first 8 hex digits of its
/// canonical hash, sorted by name.
fn config_parts(create: &ContainerCreateBody, extra: &[(String, EndpointSettings)]) -> String {
    let mut parts: BTreeMap<String, String> = BTreeMap::new();
    let short = |v: &serde_json::Value| canonical_hash(v)[..8].to_string();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(create) {
        for (name, value) in &fields {
            match value {
                serde_json::Value::Object(host) if name == "HostConfig" => {
                    for (field, value) in host {
                        parts.insert(format!("HostConfig.{field}"), short(value));
                    }
                }
                _ => {
                    parts.insert(name.clone(), short(value));
                }
            }
        }
    }
    if !extra.is_empty() {
        parts.insert("Networks".to_string(), short(&serde_json::json!(extra)));
    }
    let list: Vec<String> = parts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    list.join(",")
}

/// The parts whose hashes differ between two [`CONFIG_PARTS_LABEL`] values (present
/// in only one counts as changed), as the Compose keys they come from.
pub fn changed_keys(old: &str, new: &str) -> Vec<&'static str> {
    let parse = |text: &str| -> BTreeMap<String, String> {
        text.split(',')
            .filter_map(|p| p.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (old, new) = (parse(old), parse(new));
    let mut keys: Vec<&'static str> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| compose_key(k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The Compose key an Engine API create field comes from.
fn compose_key(field: &str) -> &'static str {
    match field {
        "Image" => "image",
        "Cmd" => "command",
        "Entrypoint" => "entrypoint",
        "Env" => "environment",
        "Labels" => "labels",
        "Healthcheck" => "healthcheck",
        "User" => "user",
        "WorkingDir" => "working_dir",
        "Hostname" => "hostname",
        "Tty" => "tty",
        "OpenStdin" => "stdin_open",
        "ExposedPorts" => "expose",
        "StopSignal" => "stop_signal",
        "StopTimeout" => "stop_grace_period",
        "NetworkingConfig" | "Networks" => "networks",
        "HostConfig.PortBindings" => "ports",
        "HostConfig.Mounts" | "HostConfig.Binds" => "volumes",
        "HostConfig.RestartPolicy" => "restart",
        "HostConfig.Init" => "init",
        "HostConfig.ExtraHosts" => "extra_hosts",
        "HostConfig.CapAdd" => "cap_add",
        "HostConfig.CapDrop" => "cap_drop",
        "HostConfig.ReadonlyRootfs" => "read_only",
        "HostConfig.Tmpfs" => "tmpfs",
        "HostConfig.NetworkMode" => "network_mode",
        "HostConfig.Sysctls" => "sysctls",
        "HostConfig.Ulimits" => "ulimits",
        "HostConfig.LogConfig" => "logging",
        "HostConfig.SecurityOpt" => "security_opt",
        "HostConfig.Devices" => "devices",
        "HostConfig.PidsLimit" => "pids_limit",
        "HostConfig.ShmSize" => "shm_size",
        "HostConfig.Dns" => "dns",
        "HostConfig.DnsSearch" => "dns_search",
        "HostConfig.DnsOptions" => "dns_opt",
        "HostConfig.GroupAdd" => "group_add",
        "HostConfig.OomScoreAdj" => "oom_score_adj",
        "HostConfig.MemoryReservation" | "HostConfig.DeviceRequests" => {
            "deploy.resources.reservations"
        }
        "HostConfig.CgroupParent" => "cgroup_parent",
        "HostConfig.UsernsMode" => "userns_mode",
        "Domainname" => "domainname",
        "HostConfig.Memory" | "HostConfig.NanoCpus" | "HostConfig.MemorySwap" => {
            "deploy.resources.limits"
        }
        _ => "other engine settings",
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Services grouped into start levels: each level's dependencies are all in earlier
/// levels, so a level's services can be created and started in parallel.
pub fn start_order(spec: &ProjectSpec) -> Result<Vec<Vec<String>>, String> {
    let mut remaining: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, s) in &spec.services {
        let mut deps = Vec::new();
        for d in &s.depends_on {
            if !spec.services.contains_key(&d.service) {
                return Err(format!(
                    "service `{name}` depends on `{}`, which is not a service",
                    d.service
                ));
            }
            deps.push(d.service.as_str());
        }
        remaining.insert(name, deps);
    }
    let mut levels: Vec<Vec<String>> = Vec::new();
    let mut placed: Vec<&str> = Vec::new();
    while !remaining.is_empty() {
        let ready: Vec<&str> = remaining
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| placed.contains(d)))
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            let cycle: Vec<&str> = remaining.keys().copied().collect();
            return Err(format!(
                "depends_on forms a cycle among: {}",
                cycle.join(", ")
            ));
        }
        for r in &ready {
            remaining.remove(r);
        }
        placed.extend(&ready);
        levels.push(ready.into_iter().map(str::to_string).collect());
    }
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::diagnostics::{Diagnostics, SourceFile};

    fn digest(c: char) -> String {
        c.to_string().repeat(64)
    }

    const COMPOSE: &str = r#"
services:
  web:
    image: r/web
    init: true
    restart: unless-stopped
    ports: ["127.0.0.1:8080:80", "9000-9001:9000-9001/udp"]
    command: httpd -f -p "80 81"
    depends_on:
      api: {condition: service_healthy}
    networks: [front, back]
  api:
    image: r/api
    env_file: api.env
    environment: {LEVEL: debug, FROM_FILE_OVERRIDDEN: yes}
    healthcheck:
      test: wget -q -O- http://127.0.0.1/health
      interval: 1m30s
      timeout: 500ms
      retries: 3
    volumes: ["./data:/data:ro", "cache:/cache", "/var/log/x:/logs"]
    secrets: [pw]
    configs: [{source: conf, target: /etc/api.conf}]
    depends_on: [db]
    stop_grace_period: 1m
    deploy: {resources: {limits: {cpus: 0.5, memory: 512M}}}
    networks: [back]
  db:
    image: r/db
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 65535}
    sysctls: [net.core.somaxconn=1024]
volumes:
  cache: {}
networks:
  front: {}
  back: {}
secrets:
  pw: {file: ./pw.txt}
configs:
  conf: {file: ./conf/api.conf}
"#;

    fn spec_of(text: &str, images: &[(&str, char)]) -> ProjectSpec {
        let mut diags = Diagnostics::default();
        let stack = crate::config::compose::load(
            &SourceFile::new("stack/compose.yaml", text),
            &BTreeMap::new(),
            &mut diags,
        )
        .unwrap_or_else(|| panic!("{diags}"));
        let images = ImageSet(
            images
                .iter()
                .map(|(s, c)| {
                    (
                        s.to_string(),
                        PinnedImage::parse(&format!("127.0.0.1:5055/{s}@sha256:{}", digest(*c)))
                            .unwrap(),
                    )
                })
                .collect(),
        );
        // What `config::load_repo` reads from `env_file: api.env`.
        let mut stack = stack;
        if let Some(api) = stack.values.get_mut("api") {
            api.env_files = crate::config::dotenv::parse(
                "# comment\nexport FROM_FILE=1\nFROM_FILE_OVERRIDDEN=\"no\"\n",
                &BTreeMap::new(),
            );
        }
        project_spec(
            "shop",
            &stack,
            &images,
            Path::new("/var/lib/gitfleet/shop/stack"),
            &DigestKey::new([7; 32]),
        )
        .unwrap()
    }

    fn three() -> ProjectSpec {
        spec_of(COMPOSE, &[("web", 'a'), ("api", 'b'), ("db", 'c')])
    }

    #[test]
    fn changed_keys_name_the_compose_keys() {
        let old = "Env:11111111,HostConfig.Mounts:22222222,Image:33333333";
        let new = "Env:11111111,HostConfig.Mounts:44444444,HostConfig.Init:55555555,Image:33333333";
        assert_eq!(changed_keys(old, new), vec!["init", "volumes"]);
        assert!(changed_keys(old, old).is_empty());
    }

    #[test]
    fn names_labels_and_networks_follow_compose() {
        let spec = three();
        let web = &spec.services["web"];
        assert_eq!(web.container_name, "shop-web-1");
        let labels = web.create.labels.as_ref().unwrap();
        assert_eq!(labels[PROJECT_LABEL], "shop");
        assert_eq!(labels[SERVICE_LABEL], "web");
        assert_eq!(labels[NUMBER_LABEL], "1");
        assert_eq!(labels[ONEOFF_LABEL], "False");
        assert_eq!(labels[CONFIG_HASH_LABEL], web.config_hash);
        assert_eq!(
            labels["com.docker.compose.project.config_files"],
            "/var/lib/gitfleet/shop/stack/compose.yaml"
        );
        assert_eq!(spec.networks["back"].name, "shop_back");
        assert_eq!(spec.volumes["cache"].name, "shop_cache");
        let host = web.create.host_config.as_ref().unwrap();
        // `[front, back]`: in name order, the first created with, as docker-compose does.
        assert_eq!(host.network_mode.as_deref(), Some("shop_back"));
        assert_eq!(web.extra_networks[0].0, "shop_front");
        assert_eq!(
            web.extra_networks[0].1.aliases.as_deref(),
            Some(&["web".to_string()][..])
        );
        assert_eq!(host.init, Some(true));
        assert_eq!(
            host.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(
            web.create.cmd.as_deref().unwrap(),
            ["httpd", "-f", "-p", "80 81"]
        );
        let db = &spec.services["db"];
        assert_eq!(
            db.create
                .host_config
                .as_ref()
                .unwrap()
                .network_mode
                .as_deref(),
            Some("shop_default")
        );
    }

    #[test]
    fn start_first_is_blocked_only_by_host_ports_or_the_host_network() {
        let spec = three();
        assert_eq!(
            spec.services["web"].start_first_blocker(),
            Some("it publishes host ports")
        );
        assert_eq!(spec.services["db"].start_first_blocker(), None);
        let host = spec_of(
            &COMPOSE.replace("  db:\n", "  db:\n    network_mode: host\n"),
            &[("web", 'a'), ("api", 'b'), ("db", 'c')],
        );
        assert_eq!(
            host.services["db"].start_first_blocker(),
            Some("it uses the host's network")
        );
        assert_eq!(
            spec.services["db"].networks()[0].0,
            "shop_default",
            "the first network comes first"
        );
    }

    #[test]
    fn ports_mounts_env_health_and_limits() {
        let spec = three();
        let web = spec.services["web"].create.host_config.clone().unwrap();
        let bindings = web.port_bindings.unwrap();
        let b = bindings["80/tcp"].as_ref().unwrap();
        assert_eq!(
            (b[0].host_ip.as_deref(), b[0].host_port.as_deref()),
            (Some("127.0.0.1"), Some("8080"))
        );
        assert_eq!(
            bindings["9001/udp"].as_ref().unwrap()[0]
                .host_port
                .as_deref(),
            Some("9001")
        );

        let api = &spec.services["api"];
        let env = api.create.env.clone().unwrap();
        assert!(env.contains(&"FROM_FILE=1".to_string()));
        assert!(
            env.contains(&"FROM_FILE_OVERRIDDEN=yes".to_string()),
            "{env:?}"
        );
        assert!(env.contains(&"LEVEL=debug".to_string()));
        let health = api.create.healthcheck.clone().unwrap();
        assert_eq!(health.test.unwrap()[0], "CMD-SHELL");
        assert_eq!(health.interval, Some(90_000_000_000));
        assert_eq!(health.timeout, Some(500_000_000));
        assert_eq!(health.retries, Some(3));
        assert_eq!(api.stop_timeout, Some(Duration::from_secs(60)));
        let host = api.create.host_config.clone().unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(512 * 1024 * 1024));
        let mounts = host.mounts.unwrap();
        let find = |target: &str| {
            mounts
                .iter()
                .find(|m| m.target.as_deref() == Some(target))
                .unwrap()
                .clone()
        };
        let data = find("/data");
        assert_eq!(
            data.source.as_deref(),
            Some("/var/lib/gitfleet/shop/stack/data")
        );
        assert_eq!(
            (data.typ, data.read_only),
            (Some(MountType::BIND), Some(true))
        );
        assert_eq!(find("/cache").source.as_deref(), Some("shop_cache"));
        assert_eq!(find("/logs").source.as_deref(), Some("/var/log/x"));
        assert_eq!(
            find("/run/secrets/pw").source.as_deref(),
            Some("/var/lib/gitfleet/shop/stack/pw.txt")
        );
        assert_eq!(
            find("/etc/api.conf").source.as_deref(),
            Some("/var/lib/gitfleet/shop/stack/conf/api.conf")
        );
        let db = spec.services["db"].create.host_config.clone().unwrap();
        let ulimits = db.ulimits.unwrap();
        assert_eq!((ulimits[0].soft, ulimits[0].hard), (Some(1024), Some(2048)));
        assert_eq!(ulimits[1].soft, Some(65535));
        assert_eq!(db.sysctls.unwrap()["net.core.somaxconn"], "1024");
    }

    #[test]
    fn the_keys_real_stacks_use_reach_the_create_body() {
        let text = "services:\n  db:\n    image: x\n  web:\n    image: x\n    build: .\n    attach: false\n    pull_policy: always\n    platform: linux/amd64\n    shm_size: 256m\n    dns: 10.0.0.2\n    dns_search: [corp.example]\n    dns_opt: [ndots:1]\n    links: [\"db:database\"]\n    domainname: example.com\n    group_add: [audio, 1001]\n    oom_score_adj: -500\n    userns_mode: host\n";
        let spec = spec_of(text, &[("db", 'a'), ("web", 'b')]);
        let web = &spec.services["web"];
        let host = web.create.host_config.clone().unwrap();
        assert_eq!(host.shm_size, Some(256 * 1024 * 1024));
        assert_eq!(host.dns, Some(vec!["10.0.0.2".to_string()]));
        assert_eq!(host.dns_search, Some(vec!["corp.example".to_string()]));
        assert_eq!(host.dns_options, Some(vec!["ndots:1".to_string()]));
        assert_eq!(
            host.group_add,
            Some(vec!["audio".to_string(), "1001".to_string()])
        );
        assert_eq!(host.oom_score_adj, Some(-500));
        assert_eq!(host.userns_mode.as_deref(), Some("host"));
        assert_eq!(web.create.domainname.as_deref(), Some("example.com"));
        let endpoints = web
            .create
            .networking_config
            .clone()
            .unwrap()
            .endpoints_config
            .unwrap();
        let endpoint = &endpoints["shop_default"];
        assert_eq!(endpoint.links, Some(vec!["shop-db-1:database".to_string()]));
        assert_eq!(
            web.depends_on,
            vec![Dependency {
                service: "db".into(),
                condition: Condition::Started
            }],
            "a linked service starts first"
        );
    }

    #[test]
    fn host_powers_macs_and_storage_options_reach_the_create_body() {
        let text = "services:\n  db:\n    image: x\n    ipc: shareable\n    networks: {back: {mac_address: \"02:42:ac:11:00:03\"}, front: {}}\n    mac_address: \"02:42:ac:11:00:02\"\n  web:\n    image: x\n    privileged: true\n    pid: host\n    ipc: service:db\n    cap_add: [ALL]\n    storage_opt: {size: 20G}\nnetworks: {back: {}, front: {}}\n";
        let spec = spec_of(text, &[("db", 'a'), ("web", 'b')]);
        let web = &spec.services["web"];
        let host = web.create.host_config.clone().unwrap();
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.pid_mode.as_deref(), Some("host"));
        assert_eq!(host.ipc_mode.as_deref(), Some("container:shop-db-1"));
        assert_eq!(host.cap_add, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.storage_opt,
            Some(HashMap::from([("size".to_string(), "20G".to_string())]))
        );
        assert_eq!(
            web.depends_on,
            vec![Dependency {
                service: "db".into(),
                condition: Condition::Started
            }],
            "the service whose namespace it shares starts first"
        );
        assert_eq!(
            web.start_first_blocker(),
            None,
            "host pid and ipc take many"
        );
        let db = &spec.services["db"];
        let macs: Vec<(String, Option<String>)> = db
            .networks()
            .into_iter()
            .map(|(n, e)| (n, e.mac_address))
            .collect();
        assert_eq!(
            macs,
            vec![
                (
                    "shop_back".to_string(),
                    Some("02:42:ac:11:00:03".to_string())
                ),
                ("shop_front".to_string(), None),
            ],
            "the network's own MAC wins over the service's on the first network"
        );
        assert_eq!(db.start_first_blocker(), Some("it has a fixed MAC address"));
    }

    /// A container an older gitfleet made (parts label, no or another scheme) whose hash
    /// differs, image unchanged, is an upgrade, not a configuration change (so not
    /// drift); one of this scheme, or another tool's, is a change.
    #[test]
    fn an_older_gitfleets_container_is_an_upgrade_not_drift() {
        use crate::engine::plan::{Change, Observed, ServiceAction, plan};
        let spec = three();
        let db = &spec.services["db"];
        let observed = |scheme: Option<&str>, parts: Option<&str>| Observed {
            id: "c1".into(),
            name: db.container_name.clone(),
            service: "db".into(),
            config_hash: Some("an older hash".into()),
            config_parts: parts.map(str::to_string),
            running: true,
            exit_code: None,
            image: db.image.to_string(),
            hash_scheme: scheme.map(str::to_string),
        };
        let change = |o: Observed| match plan(&spec, &[o]).actions.remove("db") {
            Some(ServiceAction::Recreate { change, .. }) => change,
            other => panic!("{other:?}"),
        };
        assert_eq!(change(observed(None, Some("Env:1"))), Change::Upgrade);
        assert_eq!(change(observed(Some("1"), Some("Env:1"))), Change::Upgrade);
        assert!(matches!(
            change(observed(Some(HASH_SCHEME), Some("Env:1"))),
            Change::Configuration { .. }
        ));
        assert!(matches!(
            change(observed(None, None)),
            Change::Configuration { .. }
        ));
        assert_eq!(
            db.create.labels.as_ref().unwrap()[HASH_SCHEME_LABEL],
            HASH_SCHEME
        );
    }

    #[test]
    fn start_order_is_levels_by_depends_on_and_cycles_are_refused() {
        assert_eq!(
            start_order(&three()).unwrap(),
            vec![vec!["db"], vec!["api"], vec!["web"]]
        );
        let cyclic = "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n  c: {image: x}\n";
        let spec = spec_of(cyclic, &[("a", 'a'), ("b", 'b'), ("c", 'c')]);
        assert!(
            start_order(&spec)
                .unwrap_err()
                .contains("cycle among: a, b")
        );
    }

    #[test]
    fn hashes_are_stable_and_change_only_for_the_changed_service() {
        let a = three();
        let reordered = COMPOSE.replace(
            "environment: {LEVEL: debug, FROM_FILE_OVERRIDDEN: yes}",
            "environment: {FROM_FILE_OVERRIDDEN: yes, LEVEL: debug}",
        );
        let b = spec_of(&reordered, &[("web", 'a'), ("api", 'b'), ("db", 'c')]);
        for s in ["web", "api", "db"] {
            assert_eq!(a.services[s].config_hash, b.services[s].config_hash, "{s}");
        }
        let c = spec_of(COMPOSE, &[("web", 'a'), ("api", 'd'), ("db", 'c')]);
        assert_ne!(a.services["api"].config_hash, c.services["api"].config_hash);
        assert_eq!(a.services["web"].config_hash, c.services["web"].config_hash);
        assert_eq!(a.services["db"].config_hash, c.services["db"].config_hash);
    }
}
