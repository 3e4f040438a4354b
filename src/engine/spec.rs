//! What the engine is asked to create: the compose stack translated, purely, into
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
    ContainerCreateBody, DeviceMapping, DeviceRequest, EndpointSettings, HealthConfig, HostConfig,
    HostConfigLogConfig, Mount, MountType, NetworkingConfig, PortBinding, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};
use docker_compose_types as dct;
use sha2::{Digest as _, Sha256};

use crate::config::RepoFiles;
use crate::config::compose::{ComposeStack, ServiceExtras};
use crate::config::fleet::{ImageSet, PinnedImage, hex};
use crate::config::interpolate::parse_env_file;

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const CONFIG_HASH_LABEL: &str = "com.docker.compose.config-hash";
pub const NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
/// A short hash of each part of the configuration (`Env:1a2b3c4d,HostConfig.Mounts:…`),
/// so that a differing config-hash can say what changed (`gitfleet diff`).
pub const CONFIG_PARTS_LABEL: &str = "dev.gitfleet.config-parts";
/// The Compose version gitfleet's labels follow (docker-compose 1.x warns on, but lists,
/// other versions).
pub const COMPOSE_VERSION: &str = "1.29.2";

/// When a dependent service may start (Compose's `depends_on` conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
}

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
        } else {
            None
        }
    }
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

/// Where the stack's files are: `compose_path` in the repository (for `env_file`, read
/// through `files`), and `host_dir`, the directory on the host holding the compose
/// file's directory (relative binds, secrets and configs resolve against it).
pub struct Sources<'a> {
    pub files: &'a dyn RepoFiles,
    pub compose_path: &'a str,
    pub host_dir: &'a Path,
}

impl Sources<'_> {
    fn host_path(&self, relative: &str) -> PathBuf {
        let relative = relative.strip_prefix("./").unwrap_or(relative);
        self.host_dir.join(relative)
    }
}

/// Translates the stack; every problem is collected (they are defence in depth:
/// validation refused them earlier).
/// A value of the compose file the engine cannot be given, by service.
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

pub fn project_spec(
    project: &str,
    stack: &ComposeStack,
    images: &ImageSet,
    sources: &Sources,
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
            sources,
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
    sources: &'a Sources<'a>,
}

/// The container name Compose gives a service.
pub fn container_name(project: &str, service: &str, explicit: Option<&str>) -> String {
    explicit.map_or_else(|| format!("{project}-{service}-1"), str::to_string)
}

impl ServiceCtx<'_> {
    fn build(&self, s: &dct::Service, image: &PinnedImage) -> Result<ServiceSpec, Vec<String>> {
        let mut errors = Vec::new();
        let mut err = |e: String| errors.push(e);
        // `build` means nothing on a node: the service runs its pinned image.
        if s.privileged || s.pid.is_some() || s.ipc.is_some() {
            err("uses a key gitfleet does not honour (privileged, pid or ipc)".to_string());
        }
        let extras = self
            .stack
            .extras
            .get(self.name)
            .cloned()
            .unwrap_or_default();
        let memory_reservation = match extras.memory_reservation.as_deref().map(bytes).transpose() {
            Ok(size) => size,
            Err(e) => {
                err(format!("deploy.resources.reservations.memory: {e}"));
                None
            }
        };
        let shm_size = match s.shm_size.as_deref().map(bytes).transpose() {
            Ok(size) => size,
            Err(e) => {
                err(format!("shm_size: {e}"));
                None
            }
        };
        let container_name = container_name(self.project, self.name, s.container_name.as_deref());
        let env = self.environment(s, &extras).unwrap_or_else(|e| {
            err(e);
            Vec::new()
        });
        let (exposed, port_bindings) = ports(s).unwrap_or_else(|e| {
            err(e);
            (Vec::new(), HashMap::new())
        });
        let mounts = self.mounts(s).unwrap_or_else(|e| {
            err(e);
            Vec::new()
        });
        let host_dirs = mounts
            .iter()
            .filter(|m| m.typ == Some(MountType::BIND))
            .filter_map(|m| m.source.as_deref().map(PathBuf::from))
            .filter(|source| source.starts_with(self.sources.host_dir))
            .collect();
        let healthcheck = s
            .healthcheck
            .as_ref()
            .map(healthcheck)
            .transpose()
            .unwrap_or_else(|e| {
                err(e);
                None
            });
        // `deploy.restart_policy` wins over `restart`, as under `docker compose`.
        let restart = extras
            .deploy_restart
            .as_deref()
            .or(s.restart.as_deref())
            .map(restart_policy)
            .transpose()
            .unwrap_or_else(|e| {
                err(e);
                None
            });
        let stop_timeout = match s.stop_grace_period.as_deref().map(go_duration).transpose() {
            Ok(d) => d,
            Err(e) => {
                err(format!("stop_grace_period: {e}"));
                None
            }
        };
        let (nano_cpus, memory) = limits(s).unwrap_or_else(|e| {
            err(e);
            (None, None)
        });
        let (network_mode, first_network, extra_networks) = self.networks(s).unwrap_or_else(|e| {
            err(e);
            (None, None, Vec::new())
        });
        let (first_network, links) = self.links(s, first_network).unwrap_or_else(|e| {
            err(e);
            (None, Vec::new())
        });
        let depends_on = self.depends_on(s, &links).unwrap_or_else(|e| {
            err(e);
            Vec::new()
        });
        let ulimits = ulimits(&s.ulimits).unwrap_or_else(|e| {
            err(e);
            Vec::new()
        });
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
                self.sources.host_dir.display().to_string(),
            ),
        ]);
        let host_config = HostConfig {
            mounts: non_empty(mounts),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: restart,
            init: s.init.then_some(true),
            cap_add: non_empty(s.cap_add.clone()),
            cap_drop: non_empty(s.cap_drop.clone()),
            readonly_rootfs: s.read_only.then_some(true),
            tmpfs: tmpfs(s.tmpfs.as_ref()),
            network_mode,
            sysctls: sysctls(&s.sysctls),
            ulimits: non_empty(ulimits),
            log_config: s.logging.as_ref().map(|l| HostConfigLogConfig {
                typ: l.driver.clone(),
                config: l
                    .options
                    .as_ref()
                    .map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()),
            }),
            security_opt: non_empty(s.security_opt.clone()),
            devices: non_empty(s.devices.iter().map(|d| device(d)).collect()),
            extra_hosts: non_empty(
                s.extra_hosts
                    .iter()
                    .map(|h| h.replacen('=', ":", 1))
                    .collect(),
            ),
            nano_cpus,
            memory,
            pids_limit: extras.pids_limit,
            shm_size,
            dns: non_empty(extras.dns),
            dns_search: non_empty(extras.dns_search),
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
            memory_reservation,
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
            ..Default::default()
        };
        let create = ContainerCreateBody {
            image: Some(image.to_string()),
            hostname: s.hostname.clone(),
            domainname: s.domainname.clone(),
            user: s.user.clone(),
            working_dir: s.working_dir.clone(),
            env: non_empty(env),
            cmd: s.command.as_ref().map(|c| match c {
                dct::Command::Simple(text) => shell_words(text),
                dct::Command::Args(args) => args.clone(),
            }),
            entrypoint: s.entrypoint.as_ref().map(|e| match e {
                dct::Entrypoint::Simple(text) => shell_words(text),
                dct::Entrypoint::List(args) => args.clone(),
            }),
            exposed_ports: non_empty(exposed),
            healthcheck,
            stop_signal: s.stop_signal.clone(),
            stop_timeout: stop_timeout.map(|d| d.as_secs() as i64),
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
            // Outside the hash: how the files are split is not the service's config.
            labels.insert(
                "com.docker.compose.project.config_files".to_string(),
                self.config_files(),
            );
        }
        Ok(ServiceSpec {
            service: self.name.to_string(),
            container_name,
            image: image.clone(),
            create,
            extra_networks,
            depends_on,
            config_hash,
            stop_timeout,
            job: false,
            host_dirs,
        })
    }

    /// `env_file` first, then `environment` over it, as Compose does. A bare `KEY`
    /// (take it from the shell) has no meaning on a node and is left out.
    fn environment(&self, s: &dct::Service, extras: &ServiceExtras) -> Result<Vec<String>, String> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for file in &extras.env_files {
            let name = &file.path;
            let path = crate::config::stack_path(self.sources.compose_path, name)
                .map_err(|why| format!("env_file `{name}` {why}"))?;
            match self.sources.files.read(&path)? {
                Some(text) => env.extend(parse_env_file(&text)),
                None if !file.required => {}
                None => {
                    return Err(format!(
                        "env_file `{name}` does not exist in the fleet repository"
                    ));
                }
            }
        }
        match &s.environment {
            dct::Environment::List(list) => {
                for item in list {
                    if let Some((k, v)) = item.split_once('=') {
                        env.insert(k.to_string(), v.to_string());
                    }
                }
            }
            dct::Environment::KvPair(map) => {
                for (k, v) in map {
                    if let Some(v) = v {
                        env.insert(k.clone(), v.to_string());
                    }
                }
            }
        }
        Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
    }

    fn mounts(&self, s: &dct::Service) -> Result<Vec<Mount>, String> {
        let mut mounts = Vec::new();
        for volume in &s.volumes {
            mounts.push(match volume {
                dct::Volumes::Simple(text) => self.short_volume(text)?,
                dct::Volumes::Advanced(v) => self.long_volume(v)?,
            });
        }
        let secrets: Vec<(String, Option<String>)> = match &s.secrets {
            Some(dct::Secrets::Simple(names)) => names.iter().map(|n| (n.clone(), None)).collect(),
            Some(dct::Secrets::Advanced(list)) => list
                .iter()
                .map(|a| (a.source.clone(), a.target.clone()))
                .collect(),
            None => Vec::new(),
        };
        for (name, target) in secrets {
            let file = match self
                .stack
                .compose
                .secrets
                .as_ref()
                .and_then(|all| all.0.get(&name))
            {
                Some(Some(dct::ComposeSecret::File(file))) => file,
                _ => {
                    return Err(format!(
                        "secret `{name}` has no `file:` source under top-level `secrets`"
                    ));
                }
            };
            let target = match target {
                Some(t) if t.starts_with('/') => t,
                Some(t) => format!("/run/secrets/{t}"),
                None => format!("/run/secrets/{name}"),
            };
            mounts.push(self.file_mount(file, target));
        }
        for config in self
            .stack
            .service_configs
            .get(self.name)
            .into_iter()
            .flatten()
        {
            let file = self
                .stack
                .configs
                .get(&config.source)
                .ok_or_else(|| format!("config `{}` is not defined", config.source))?;
            let target = config
                .target
                .clone()
                .unwrap_or_else(|| format!("/{}", config.source));
            mounts.push(self.file_mount(file, target));
        }
        Ok(mounts)
    }

    fn file_mount(&self, file: &str, target: String) -> Mount {
        Mount {
            typ: Some(MountType::BIND),
            source: Some(self.sources.host_path(file).display().to_string()),
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

    /// `[source:]target[:mode]`: a bind when the source is a path, else a named volume;
    /// just `target` is an anonymous volume.
    fn short_volume(&self, text: &str) -> Result<Mount, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [target] => (None, *target, None),
            [source, target] => (Some(*source), *target, None),
            [source, target, mode] => (Some(*source), *target, Some(*mode)),
            _ => return Err(format!("volume `{text}` is not `source:target[:mode]`")),
        };
        let read_only = mode.is_some_and(|m| m.split(',').any(|o| o == "ro"));
        let mount = match source {
            None => Mount {
                typ: Some(MountType::VOLUME),
                target: Some(target.to_string()),
                ..Default::default()
            },
            Some(src) if src.starts_with(['/', '.', '~']) => Mount {
                typ: Some(MountType::BIND),
                source: Some(self.bind_source(src)),
                target: Some(target.to_string()),
                ..Default::default()
            },
            Some(name) => Mount {
                typ: Some(MountType::VOLUME),
                source: Some(self.named_volume(name)?),
                target: Some(target.to_string()),
                ..Default::default()
            },
        };
        Ok(Mount {
            read_only: read_only.then_some(true),
            ..mount
        })
    }

    fn long_volume(&self, v: &dct::AdvancedVolumes) -> Result<Mount, String> {
        let mut mount = Mount {
            target: Some(v.target.clone()),
            read_only: v.read_only.then_some(true),
            ..Default::default()
        };
        match v._type.as_str() {
            "bind" => {
                mount.typ = Some(MountType::BIND);
                let src = v.source.as_deref().ok_or("a bind volume needs `source`")?;
                mount.source = Some(self.bind_source(src));
            }
            "volume" => {
                mount.typ = Some(MountType::VOLUME);
                mount.source = v
                    .source
                    .as_deref()
                    .map(|s| self.named_volume(s))
                    .transpose()?;
            }
            "tmpfs" => {
                mount.typ = Some(MountType::TMPFS);
                mount.tmpfs_options =
                    v.tmpfs
                        .as_ref()
                        .map(|t| bollard::models::MountTmpfsOptions {
                            size_bytes: i64::try_from(t.size).ok(),
                            ..Default::default()
                        });
            }
            other => {
                return Err(format!(
                    "volume type `{other}` is not supported (bind, volume, tmpfs)"
                ));
            }
        }
        Ok(mount)
    }

    fn bind_source(&self, src: &str) -> String {
        if src.starts_with('/') {
            src.to_string()
        } else if let Some(rest) = src.strip_prefix("~/") {
            std::env::var("HOME").map_or_else(|_| src.to_string(), |h| format!("{h}/{rest}"))
        } else {
            self.sources.host_path(src).display().to_string()
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
        s: &dct::Service,
    ) -> Result<
        (
            Option<String>,
            Option<(String, EndpointSettings)>,
            Vec<(String, EndpointSettings)>,
        ),
        String,
    > {
        if let Some(mode) = &s.network_mode {
            let mode = match mode.strip_prefix("service:") {
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
                None => mode.clone(),
            };
            return Ok((Some(mode), None, Vec::new()));
        }
        let endpoint = |aliases: &[String]| EndpointSettings {
            aliases: Some(
                std::iter::once(self.name.to_string())
                    .chain(aliases.iter().cloned())
                    .collect(),
            ),
            ..Default::default()
        };
        let mut list: Vec<(String, EndpointSettings)> = match &s.networks {
            dct::Networks::Simple(names) if names.is_empty() => {
                vec![(self.network_name("default")?, endpoint(&[]))]
            }
            dct::Networks::Simple(names) => names
                .iter()
                .map(|n| Ok((self.network_name(n)?, endpoint(&[]))))
                .collect::<Result<_, String>>()?,
            dct::Networks::Advanced(map) => {
                let mut keys: Vec<&String> = map.0.keys().collect();
                keys.sort();
                keys.into_iter()
                    .map(|k| {
                        let aliases = match &map.0[k] {
                            dct::MapOrEmpty::Map(settings) => settings.aliases.clone(),
                            dct::MapOrEmpty::Empty => Vec::new(),
                        };
                        Ok((self.network_name(k)?, endpoint(&aliases)))
                    })
                    .collect::<Result<_, String>>()?
            }
        };
        let first = list.remove(0);
        let mode = first.0.clone();
        Ok((Some(mode), Some(first), list))
    }

    /// `links` (`service` or `service:alias`), as Compose makes them on a user-defined
    /// network: the linked container is reachable from this one under the alias, on
    /// the first network. Returns that network and the linked services (started first).
    #[allow(clippy::type_complexity)]
    fn links(
        &self,
        s: &dct::Service,
        first_network: Option<(String, EndpointSettings)>,
    ) -> Result<(Option<(String, EndpointSettings)>, Vec<String>), String> {
        if s.links.is_empty() {
            return Ok((first_network, Vec::new()));
        }
        let Some((network, mut endpoint)) = first_network else {
            return Err("links: needs a network (not `network_mode`)".to_string());
        };
        let mut linked = Vec::new();
        let mut links = Vec::new();
        for link in &s.links {
            let (service, alias) = link.split_once(':').unwrap_or((link, link));
            let Some(other) = self.stack.compose.services.0.get(service) else {
                return Err(format!("links: `{service}` is not a service of this file"));
            };
            let explicit = other.as_ref().and_then(|o| o.container_name.as_deref());
            links.push(format!(
                "{}:{alias}",
                container_name(self.project, service, explicit)
            ));
            linked.push(service.to_string());
        }
        endpoint.links = Some(links);
        Ok((Some((network, endpoint)), linked))
    }

    /// `depends_on`, plus what Compose also starts first: the service whose network
    /// this one shares, and linked services.
    fn depends_on(&self, s: &dct::Service, links: &[String]) -> Result<Vec<Dependency>, String> {
        let mut out: Vec<Dependency> = match &s.depends_on {
            dct::DependsOnOptions::Simple(names) => names
                .iter()
                .map(|n| Dependency {
                    service: n.clone(),
                    condition: Condition::Started,
                })
                .collect(),
            dct::DependsOnOptions::Conditional(map) => map
                .iter()
                .map(|(n, c)| {
                    let condition = match c.condition.as_str() {
                        "service_started" => Condition::Started,
                        "service_healthy" => Condition::Healthy,
                        "service_completed_successfully" => Condition::CompletedSuccessfully,
                        other => {
                            return Err(format!("depends_on `{n}`: unknown condition `{other}`"));
                        }
                    };
                    Ok(Dependency {
                        service: n.clone(),
                        condition,
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if let Some(other) = s
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("service:"))
        {
            out.push(Dependency {
                service: other.to_string(),
                condition: Condition::Started,
            });
        }
        for linked in links {
            if !out.iter().any(|d| &d.service == linked) {
                out.push(Dependency {
                    service: linked.clone(),
                    condition: Condition::Started,
                });
            }
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(out)
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// Splits a command string into words as a POSIX shell would (quotes and backslashes),
/// which is what Compose does for `command: echo "a b"`.
pub fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Go-style durations as Compose writes them: `1m30s`, `500ms`, `10s`, `1h`.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".to_string());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 1m30s"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" | "" if rest.len() == unit_len => 1.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => {
                return Err(format!(
                    "`{text}` has unknown unit `{unit}` (use h, m, s, ms)"
                ));
            }
        };
        total += Duration::try_from_secs_f64(number * secs)
            .map_err(|_| format!("`{text}` is out of range"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn nanos(text: &str) -> Result<i64, String> {
    i64::try_from(go_duration(text)?.as_nanos()).map_err(|_| format!("`{text}` is too long"))
}

fn healthcheck(h: &dct::Healthcheck) -> Result<HealthConfig, String> {
    let test = if h.disable {
        Some(vec!["NONE".to_string()])
    } else {
        match &h.test {
            Some(dct::HealthcheckTest::Single(cmd)) => {
                Some(vec!["CMD-SHELL".to_string(), cmd.clone()])
            }
            Some(dct::HealthcheckTest::Multiple(list)) => Some(list.clone()),
            None => None,
        }
    };
    let opt = |d: &Option<String>| {
        d.as_deref()
            .map(nanos)
            .transpose()
            .map_err(|e| format!("healthcheck: {e}"))
    };
    Ok(HealthConfig {
        test,
        interval: opt(&h.interval)?,
        timeout: opt(&h.timeout)?,
        retries: (h.retries > 0).then_some(h.retries),
        start_period: opt(&h.start_period)?,
        start_interval: opt(&h.start_interval)?,
    })
}

fn restart_policy(text: &str) -> Result<RestartPolicy, String> {
    let (name, retries) = match text.split_once(':') {
        Some((n, r)) => (
            n,
            Some(
                r.parse::<i64>()
                    .map_err(|_| format!("restart `{text}`: bad retry count"))?,
            ),
        ),
        None => (text, None),
    };
    let name = match name {
        "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        other => {
            return Err(format!(
                "restart `{other}` is not no, always, on-failure[:N] or unless-stopped"
            ));
        }
    };
    Ok(RestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    })
}

type PortMap = HashMap<String, Option<Vec<PortBinding>>>;

/// `ports` and `expose` → exposed ports and bindings, keyed `8080/tcp`.
fn ports(s: &dct::Service) -> Result<(Vec<String>, PortMap), String> {
    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: PortMap = HashMap::new();
    let mut bind =
        |container: u32, proto: &str, host_ip: Option<String>, host_port: Option<String>| {
            let key = format!("{container}/{proto}");
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(host_ip.unwrap_or_default()),
                    host_port: Some(host_port.unwrap_or_default()),
                });
        };
    match &s.ports {
        dct::Ports::Short(list) => {
            for text in list {
                for (container, proto, ip, host) in short_port(text)? {
                    bind(container, &proto, ip, host);
                }
            }
        }
        dct::Ports::Long(list) => {
            for p in list {
                let host = p.published.as_ref().map(|h| match h {
                    dct::PublishedPort::Single(n) => n.to_string(),
                    dct::PublishedPort::Range(r) => r.clone(),
                });
                bind(
                    u32::from(p.target),
                    p.protocol.as_deref().unwrap_or("tcp"),
                    p.host_ip.clone(),
                    host,
                );
            }
        }
    }
    for e in &s.expose {
        let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
        let key = format!("{port}/{proto}");
        if !exposed.contains(&key) {
            exposed.push(key);
        }
    }
    exposed.sort();
    Ok((exposed, bindings))
}

/// `[ip:][host[-host2]:]container[-container2][/proto]`, expanded per port.
#[allow(clippy::type_complexity)]
fn short_port(text: &str) -> Result<Vec<(u32, String, Option<String>, Option<String>)>, String> {
    let bad = || format!("port `{text}` is not `[ip:][host:]container[/protocol]`");
    let (spec, proto) = text.rsplit_once('/').unwrap_or((text, "tcp"));
    let (ip, rest) = match spec.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6.split_once("]:").ok_or_else(bad)?;
            (Some(ip.to_string()), rest)
        }
        None => match spec.matches(':').count() {
            2 => {
                let (ip, rest) = spec.split_once(':').ok_or_else(bad)?;
                (Some(ip.to_string()), rest)
            }
            _ => (None, spec),
        },
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (if h.is_empty() { None } else { Some(h) }, c),
        None => (None, rest),
    };
    let range = |r: &str| -> Result<(u32, u32), String> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        if a == 0 || b < a || b > 65535 {
            return Err(bad());
        }
        Ok((a, b))
    };
    let (c0, c1) = range(container)?;
    let host_range = host.map(range).transpose()?;
    if let Some((h0, h1)) = host_range
        && h1 - h0 != c1 - c0
        && h0 != h1
    {
        return Err(format!(
            "port `{text}`: host and container ranges differ in size"
        ));
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, c)| {
            let host_port = host_range.map(|(h0, h1)| {
                if h0 == h1 {
                    h0.to_string()
                } else {
                    (h0 + i as u32).to_string()
                }
            });
            (c, proto.to_string(), ip.clone(), host_port)
        })
        .collect())
}

fn tmpfs(t: Option<&dct::Tmpfs>) -> Option<HashMap<String, String>> {
    let list: Vec<&str> = match t? {
        dct::Tmpfs::Simple(s) => vec![s.as_str()],
        dct::Tmpfs::List(l) => l.iter().map(String::as_str).collect(),
    };
    Some(
        list.into_iter()
            .map(|entry| match entry.split_once(':') {
                Some((path, options)) => (path.to_string(), options.to_string()),
                None => (entry.to_string(), String::new()),
            })
            .collect(),
    )
}

fn sysctls(s: &dct::SysCtls) -> Option<HashMap<String, String>> {
    let map: HashMap<String, String> = match s {
        dct::SysCtls::List(list) => list
            .iter()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        dct::SysCtls::Map(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map(ToString::to_string).unwrap_or_default(),
                )
            })
            .collect(),
    };
    (!map.is_empty()).then_some(map)
}

fn ulimits(u: &dct::Ulimits) -> Result<Vec<ResourcesUlimits>, String> {
    let number = |name: &str, v: &dct::StringOrUnsigned| -> Result<i64, String> {
        match v {
            dct::StringOrUnsigned::Unsigned(n) => Ok(*n),
            dct::StringOrUnsigned::String(s) => s
                .parse()
                .map_err(|_| format!("ulimit `{name}`: `{s}` is not a number")),
        }
    };
    let mut out = Vec::new();
    for (name, limit) in &u.0 {
        let (soft, hard) = match limit {
            dct::Ulimit::Single(v) => (number(name, v)?, number(name, v)?),
            dct::Ulimit::SoftHard { soft, hard } => (number(name, soft)?, number(name, hard)?),
        };
        out.push(ResourcesUlimits {
            name: Some(name.clone()),
            soft: Some(soft),
            hard: Some(hard),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn device(text: &str) -> DeviceMapping {
    let parts: Vec<&str> = text.split(':').collect();
    let host = parts.first().copied().unwrap_or(text);
    DeviceMapping {
        path_on_host: Some(host.to_string()),
        path_in_container: Some(parts.get(1).copied().unwrap_or(host).to_string()),
        cgroup_permissions: Some(parts.get(2).copied().unwrap_or("rwm").to_string()),
    }
}

/// `deploy.resources.limits`: cpus → NanoCpus, memory → bytes.
fn limits(s: &dct::Service) -> Result<(Option<i64>, Option<i64>), String> {
    let Some(limits) = s
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref())
    else {
        return Ok((None, None));
    };
    let cpus = limits
        .cpus
        .as_deref()
        .map(|c| {
            c.trim()
                .parse::<f64>()
                .ok()
                .filter(|c| *c > 0.0 && c.is_finite())
                .map(|c| (c * 1e9) as i64)
                .ok_or_else(|| {
                    format!("deploy.resources.limits.cpus `{c}` is not a positive number")
                })
        })
        .transpose()?;
    let memory = limits.memory.as_deref().map(bytes).transpose()?;
    Ok((cpus, memory))
}

/// `512M`, `1g`, `100000`, `1.5GB` → bytes.
pub fn bytes(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("`{text}` has an unknown size unit (b, k, m, g)")),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 512M"))?;
    Ok((n * scale) as i64)
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
                self.sources.host_path(relative).display().to_string()
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

    struct Files(BTreeMap<String, String>);

    impl RepoFiles for Files {
        fn read(&self, path: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(path).cloned())
        }

        fn list(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(self.0.keys().cloned().collect())
        }
    }

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
        let files = Files(BTreeMap::from([(
            "stack/api.env".to_string(),
            "# comment\nexport FROM_FILE=1\nFROM_FILE_OVERRIDDEN=\"no\"\n".to_string(),
        )]));
        let sources = Sources {
            files: &files,
            compose_path: "stack/compose.yaml",
            host_dir: Path::new("/var/lib/gitfleet/shop/stack"),
        };
        project_spec("shop", &stack, &images, &sources).unwrap()
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
        assert_eq!(host.network_mode.as_deref(), Some("shop_front"));
        assert_eq!(web.extra_networks[0].0, "shop_back");
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

    #[test]
    fn small_parsers() {
        assert_eq!(
            shell_words(r#"sh -c 'echo "hi there"' a\ b"#),
            ["sh", "-c", "echo \"hi there\"", "a b"]
        );
        assert_eq!(go_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        assert!(go_duration("5 minutes").is_err());
        assert_eq!(bytes("1.5g").unwrap(), 1_610_612_736);
        assert_eq!(bytes("100000").unwrap(), 100_000);
        assert!(bytes("12q").is_err());
        assert_eq!(
            parse_env_file("A='x y'\n#c\n\nB = 2\n"),
            vec![("A".into(), "x y".into()), ("B".into(), "2".into())]
        );
    }
}
