//! Converge a project to its spec, then restore or commit after the gate (SPEC §3 rules
//! 4 and 6).
//!
//! Nothing is stopped before every image is present and verified (the caller pulls
//! first). Only services whose config hash changed are replaced; a replaced container is
//! stopped and renamed `<name>-gitfleet-previous`, not removed, until the gate passes, so
//! a restore is a rename and a start. Services are started level by level in
//! `depends_on` order; the services of one level in parallel.
//!
//! start-first replaces a service without a moment where its name resolves to nothing
//! or to a container that refuses: the new container starts as `<name>-gitfleet-next`
//! without the service's network aliases; once it is healthy (or running, without a
//! healthcheck) it joins its networks with the aliases, the old container leaves every
//! network (so DNS stops offering it), and only then is the old one stopped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerStateStatusEnum, EndpointSettings, HealthStatusEnum};
use futures_util::future::join_all;

use super::docker::{DockerEngine, EngineError};
use super::plan::{NEXT_SUFFIX, Observed, PREVIOUS_SUFFIX, Plan, ServiceAction, plan};
use super::spec::{ProjectSpec, ServiceSpec, start_order};
use crate::config::compose::values::Condition;
use crate::config::fleet::{ImageSet, PinnedImage, UpdateOrder};
use crate::failpoint;

/// A service whose container converge replaced or created.
#[derive(Clone, Debug, PartialEq)]
pub struct Swap {
    pub service: String,
    pub container_name: String,
    /// The container kept for restore (renamed), if the service had one.
    pub previous: Option<String>,
    /// The container created for the release; `None` when a converge failed before
    /// creating it (the previous container was already set aside).
    pub new: Option<String>,
    /// The networks the previous container joins again on restore, should start-first
    /// have taken it off all of them.
    pub rejoin: Vec<(String, EndpointSettings)>,
}

/// What a converge did: enough to undo it (restore) or finish it (commit).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub swaps: Vec<Swap>,
    /// Removed on commit: containers of services that left the stack, and previous
    /// containers no swap of this converge refers to.
    pub leftovers: Vec<Observed>,
}

/// A converge that stopped part way: the error, and what had been done (to restore).
#[derive(Debug)]
pub struct ConvergeFailure {
    pub error: EngineError,
    pub applied: Applied,
}

pub struct ConvergeOptions<'a> {
    pub order: UpdateOrder,
    /// How long to wait for a `service_healthy` (or completed) dependency.
    pub dependency_timeout: Duration,
    /// Service → the local reference its pinned image was pulled as.
    pub local_images: &'a BTreeMap<String, String>,
}

/// The containers of the project, as the engine lists them.
pub async fn observe(engine: &DockerEngine, project: &str) -> Result<Vec<Observed>, EngineError> {
    Ok(engine
        .list_project(project)
        .await?
        .iter()
        .filter_map(Observed::from_summary)
        .collect())
}

/// Pulls every image of the set (in parallel), falling back to mirrors; returns the
/// local reference of each service's image. Touches no container.
pub async fn pull_all(
    engine: &DockerEngine,
    images: &ImageSet,
    registries: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, String>, EngineError> {
    // Each distinct image once, however many services run it.
    let mut distinct: Vec<&PinnedImage> = images.0.values().collect();
    distinct.sort();
    distinct.dedup();
    let pulls = distinct.into_iter().map(|image| async move {
        let mirrors = registries
            .get(image.registry())
            .map(Vec::as_slice)
            .unwrap_or_default();
        engine
            .pull(image, mirrors)
            .await
            .map(|local| (image, local))
    });
    let pulled: Vec<(&PinnedImage, String)> = join_all(pulls)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(images
        .0
        .iter()
        .filter_map(|(service, image)| {
            let (_, local) = pulled.iter().find(|(pulled, _)| *pulled == image)?;
            Some((service.clone(), local.clone()))
        })
        .collect())
}

/// Creates the service's missing bind mount directories inside the project directory
/// (see [`ServiceSpec::host_dirs`]).
pub async fn make_host_dirs(service: &ServiceSpec) -> Result<(), EngineError> {
    for dir in &service.host_dirs {
        if !dir.exists() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| EngineError::Api {
                    action: format!("create the bind mount directory {}", dir.display()),
                    reason: e.to_string(),
                    transient: false,
                })?;
        }
    }
    Ok(())
}

/// Converges the project to `spec`. On failure, the returned [`ConvergeFailure`] says
/// what was done so the caller can [`restore`].
pub async fn converge(
    engine: &DockerEngine,
    spec: &ProjectSpec,
    options: &ConvergeOptions<'_>,
) -> Result<Applied, ConvergeFailure> {
    let fail = |error, applied| ConvergeFailure { error, applied };
    let levels = start_order(spec).map_err(|reason| {
        fail(
            EngineError::Api {
                action: "order services".into(),
                reason,
                transient: false,
            },
            Applied::default(),
        )
    })?;
    for network in spec.networks.values() {
        let used = spec.services.values().any(|s| {
            s.create
                .host_config
                .as_ref()
                .and_then(|h| h.network_mode.as_deref())
                == Some(network.name.as_str())
                || s.extra_networks.iter().any(|(n, _)| n == &network.name)
        });
        if used {
            engine
                .ensure_network(network)
                .await
                .map_err(|e| fail(e, Applied::default()))?;
        }
    }
    for volume in spec.volumes.values() {
        engine
            .ensure_volume(volume)
            .await
            .map_err(|e| fail(e, Applied::default()))?;
    }
    let observed = observe(engine, &spec.project)
        .await
        .map_err(|e| fail(e, Applied::default()))?;
    let observed = heal_interrupted_swaps(engine, spec, observed)
        .await
        .map_err(|e| fail(e, Applied::default()))?;
    let plan = plan(spec, &observed);

    let mut applied = Applied {
        swaps: recovered_swaps(spec, &plan, &observed),
        leftovers: plan.orphans.clone(),
    };
    for level in &levels {
        let results = join_all(
            level
                .iter()
                .map(|name| apply(engine, &spec.services[name], &plan, options)),
        )
        .await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(swap) => applied.swaps.extend(swap),
                Err(Partial { error, undo }) => {
                    applied.swaps.extend(undo);
                    first_error = first_error.or(Some(error));
                }
            }
        }
        if let Some(error) = first_error {
            return Err(fail(error, applied));
        }
        if let Err(error) = wait_for_dependents(
            engine,
            spec,
            level,
            &plan,
            &applied,
            options.dependency_timeout,
        )
        .await
        {
            return Err(fail(error, applied));
        }
    }
    let kept: Vec<&str> = applied
        .swaps
        .iter()
        .filter_map(|s| s.previous.as_deref())
        .collect();
    let stale: Vec<Observed> = plan
        .previous
        .iter()
        .filter(|p| !kept.contains(&p.id.as_str()))
        .cloned()
        .collect();
    applied.leftovers.extend(stale);
    Ok(applied)
}

/// Swaps an interrupted earlier converge finished before it stopped: the service runs
/// its new container and still keeps its previous one. The previous containers are the
/// journal: they say exactly what a restore gives back and what a commit removes.
fn recovered_swaps(spec: &ProjectSpec, plan: &Plan, observed: &[Observed]) -> Vec<Swap> {
    plan.previous
        .iter()
        .filter_map(|previous| {
            let service = spec.services.get(&previous.service)?;
            let current = match plan.actions.get(&previous.service)? {
                ServiceAction::Keep { id } | ServiceAction::Start { id } => id,
                _ => return None,
            };
            observed.iter().any(|o| &o.id == current).then(|| Swap {
                service: previous.service.clone(),
                container_name: service.container_name.clone(),
                previous: Some(previous.id.clone()),
                new: Some(current.clone()),
                rejoin: service.networks(),
            })
        })
        .collect()
}

/// Finishes or undoes what an interrupted converge left between two names, so nothing
/// is lost and every service has its container under its own name again:
/// - a start-first replacement (`-gitfleet-next`) beside the service's container never
///   took over: it is removed; without one, it was taking over: it gets the name;
/// - a previous container without a current one (a crash between renaming it away and
///   creating its replacement) gets its name back, and its networks if it had left them.
async fn heal_interrupted_swaps(
    engine: &DockerEngine,
    spec: &ProjectSpec,
    observed: Vec<Observed>,
) -> Result<Vec<Observed>, EngineError> {
    let mut healed = false;
    let current = |observed: &[Observed], service: &str| {
        observed
            .iter()
            .any(|o| !o.is_previous() && !o.is_next() && o.service == service)
    };
    for next in observed.iter().filter(|o| o.is_next()) {
        match spec.services.get(&next.service) {
            Some(service) if !current(&observed, &next.service) => {
                engine.rename(&next.id, &service.container_name).await?;
            }
            _ => engine.remove(&next.id).await?,
        }
        healed = true;
    }
    for previous in observed.iter().filter(|o| o.is_previous()) {
        let taken_over = observed
            .iter()
            .any(|o| o.is_next() && o.service == previous.service);
        if let (false, false, Some(service)) = (
            current(&observed, &previous.service),
            taken_over,
            spec.services.get(&previous.service),
        ) {
            engine.rename(&previous.id, &service.container_name).await?;
            rejoin(engine, &previous.id, &service.networks()).await?;
            healed = true;
        }
    }
    if healed {
        observe(engine, &spec.project).await
    } else {
        Ok(observed)
    }
}

/// A service's action that failed part way: the error, and the swap a restore must undo
/// (`None` when nothing was changed).
struct Partial {
    error: EngineError,
    undo: Option<Swap>,
}

impl From<EngineError> for Partial {
    fn from(error: EngineError) -> Self {
        Partial { error, undo: None }
    }
}

/// Carries out one service's action; returns the swap when a container was created. On
/// failure, what was changed so far comes back as a swap to undo, so a restore puts the
/// previous container back whatever step failed (stop, rename, create, connect, start).
async fn apply(
    engine: &DockerEngine,
    service: &ServiceSpec,
    plan: &Plan,
    options: &ConvergeOptions<'_>,
) -> Result<Option<Swap>, Partial> {
    let action = plan
        .actions
        .get(&service.service)
        .cloned()
        .unwrap_or(ServiceAction::Create);
    let kept_previous = plan
        .previous
        .iter()
        .find(|p| p.service == service.service)
        .map(|p| p.id.clone());
    let previous_name = format!("{}{PREVIOUS_SUFFIX}", service.container_name);
    let swap = |previous, new, rejoin| Swap {
        service: service.service.clone(),
        container_name: service.container_name.clone(),
        previous,
        new,
        rejoin,
    };
    match action {
        ServiceAction::Keep { .. } => Ok(None),
        ServiceAction::Start { id } => Ok(engine.start(&id).await.map(|()| None)?),
        ServiceAction::Create => {
            let new = create(engine, service, options, Announce::Now).await;
            let started = match new {
                Ok(new) => engine.start(&new).await.map(|()| new),
                Err(error) => Err(error),
            };
            started
                .map(|new| Some(swap(kept_previous.clone(), Some(new), Vec::new())))
                .map_err(|error| Partial {
                    error,
                    // Whatever the engine made under the service's name goes, by name.
                    undo: Some(swap(
                        kept_previous,
                        Some(service.container_name.clone()),
                        Vec::new(),
                    )),
                })
        }
        ServiceAction::Recreate { old, .. } => {
            // An older previous container is the last known-good one: keep it, and drop
            // the unverified container instead of keeping it as previous.
            let previous = kept_previous.unwrap_or_else(|| old.clone());
            let replace = Replace {
                service,
                old: &old,
                keep_old: previous == old,
                previous_name: &previous_name,
            };
            let start_first =
                options.order == UpdateOrder::StartFirst && service.start_first_blocker().is_none();
            let mut progress = Progress::default();
            let replaced = if start_first {
                replace.start_first(engine, options, &mut progress).await
            } else {
                replace.stop_first(engine, options, &mut progress).await
            };
            let swap = swap(Some(previous), progress.new, progress.left);
            match replaced {
                Ok(()) => Ok(Some(swap)),
                // Nothing changed yet: the old container still serves under its name.
                Err(error) if !progress.touched => Err(error.into()),
                Err(error) => Err(Partial {
                    error,
                    undo: Some(swap),
                }),
            }
        }
    }
}

/// How far a replacement got, so a failure can be undone from any step.
#[derive(Default)]
struct Progress {
    /// The old container was stopped, renamed or removed.
    touched: bool,
    /// The new container, once created.
    new: Option<String>,
    /// The networks start-first took the old container off.
    left: Vec<(String, EndpointSettings)>,
}

/// One container replaced by a new one for `service`.
struct Replace<'a> {
    service: &'a ServiceSpec,
    old: &'a str,
    /// Whether `old` becomes the previous container (else it is dropped: an older
    /// previous container is the known-good one).
    keep_old: bool,
    previous_name: &'a str,
}

impl Replace<'_> {
    /// Renames the old container away (kept for restore) or removes it.
    async fn set_aside(&self, engine: &DockerEngine) -> Result<(), EngineError> {
        if self.keep_old {
            engine.rename(self.old, self.previous_name).await
        } else {
            engine.remove(self.old).await
        }
    }

    /// Stops the old container, sets it aside, creates and starts the new one;
    /// `progress` says how far it got.
    async fn stop_first(
        &self,
        engine: &DockerEngine,
        options: &ConvergeOptions<'_>,
        progress: &mut Progress,
    ) -> Result<(), EngineError> {
        progress.touched = true;
        engine.stop(self.old, self.service.stop_timeout).await?;
        failpoint::at("after-stop-old");
        self.set_aside(engine).await?;
        failpoint::at("after-rename-old");
        // A create that failed after the engine made the container (a network it could
        // not join) leaves it under the service's name: the restore removes it by name.
        progress.new = Some(self.service.container_name.clone());
        let new = create(engine, self.service, options, Announce::Now).await?;
        progress.new = Some(new.clone());
        failpoint::at("after-create-new");
        engine.start(&new).await?;
        failpoint::at("after-start-new");
        Ok(())
    }

    /// See the module's doc. `progress` gets the new container and the networks the old
    /// one left.
    async fn start_first(
        &self,
        engine: &DockerEngine,
        options: &ConvergeOptions<'_>,
        progress: &mut Progress,
    ) -> Result<(), EngineError> {
        let service = self.service;
        let new = create(engine, service, options, Announce::WhenReady).await?;
        let ready = async {
            engine.start(&new).await?;
            wait_ready(engine, service, &new, options.dependency_timeout).await?;
            for (network, endpoint) in service.networks() {
                engine.disconnect_network(&network, &new).await?;
                engine.connect_network(&network, &new, endpoint).await?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = ready {
            // The old container never stopped serving: drop the new one, change nothing.
            engine.remove(&new).await?;
            return Err(error);
        }
        failpoint::at("after-announce-new");
        let networks = engine
            .inspect(self.old)
            .await?
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        progress.new = Some(new.clone());
        progress.touched = true;
        self.set_aside(engine).await?;
        engine.rename(&new, &service.container_name).await?;
        failpoint::at("after-take-over");
        if self.keep_old {
            for (network, endpoint) in networks {
                engine.disconnect_network(&network, self.old).await?;
                progress.left.push((network, rejoin_settings(endpoint)));
            }
            engine.stop(self.old, service.stop_timeout).await?;
        }
        Ok(())
    }
}

/// Whether a new container is reachable under the service's aliases from its start, or
/// only once start-first has seen it ready.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Announce {
    Now,
    WhenReady,
}

/// What of an endpoint is configuration (aliases, fixed addresses, links), not the
/// engine's runtime state, so that joining the network again recreates it.
fn rejoin_settings(endpoint: EndpointSettings) -> EndpointSettings {
    EndpointSettings {
        aliases: endpoint.aliases,
        ipam_config: endpoint.ipam_config,
        links: endpoint.links,
        driver_opts: endpoint.driver_opts,
        ..Default::default()
    }
}

/// Joins `networks` again if the container is on none of its networks (start-first took
/// it off them); a container still on its networks is left as it is.
async fn rejoin(
    engine: &DockerEngine,
    id: &str,
    networks: &[(String, EndpointSettings)],
) -> Result<(), EngineError> {
    let joined = engine
        .inspect(id)
        .await?
        .network_settings
        .and_then(|n| n.networks)
        .is_some_and(|n| !n.is_empty());
    if !joined {
        for (network, endpoint) in networks {
            engine
                .connect_network(network, id, endpoint.clone())
                .await?;
        }
    }
    Ok(())
}

/// Waits until a started container is healthy, or running when it has no healthcheck.
async fn wait_ready(
    engine: &DockerEngine,
    service: &ServiceSpec,
    id: &str,
    timeout: Duration,
) -> Result<(), EngineError> {
    let has_healthcheck = engine
        .inspect(id)
        .await?
        .state
        .and_then(|s| s.health)
        .and_then(|h| h.status)
        .is_some_and(|s| s != HealthStatusEnum::NONE && s != HealthStatusEnum::EMPTY);
    let condition = if has_healthcheck {
        Condition::Healthy
    } else {
        Condition::Started
    };
    wait_until(engine, &service.service, id.to_string(), condition, timeout).await
}

async fn create(
    engine: &DockerEngine,
    service: &ServiceSpec,
    options: &ConvergeOptions<'_>,
    announce: Announce,
) -> Result<String, EngineError> {
    let mut body = service.create.clone();
    if let Some(local) = options.local_images.get(&service.service) {
        body.image = Some(local.clone());
    }
    let unannounced = |endpoint: &EndpointSettings| EndpointSettings {
        aliases: None,
        ..endpoint.clone()
    };
    let name = match announce {
        Announce::Now => service.container_name.clone(),
        Announce::WhenReady => {
            let endpoints = body
                .networking_config
                .as_mut()
                .and_then(|n| n.endpoints_config.as_mut());
            for endpoint in endpoints.into_iter().flat_map(|e| e.values_mut()) {
                *endpoint = unannounced(endpoint);
            }
            format!("{}{NEXT_SUFFIX}", service.container_name)
        }
    };
    make_host_dirs(service).await?;
    let id = engine.create(&name, body).await?;
    if !service.injected.is_empty() {
        engine.write_files(&id, &service.injected).await?;
    }
    for (network, endpoint) in &service.extra_networks {
        let endpoint = match announce {
            Announce::Now => endpoint.clone(),
            Announce::WhenReady => unannounced(endpoint),
        };
        engine.connect_network(network, &id, endpoint).await?;
    }
    Ok(id)
}

/// After a level starts, waits for what later services' `depends_on` conditions need.
async fn wait_for_dependents(
    engine: &DockerEngine,
    spec: &ProjectSpec,
    level: &[String],
    plan: &Plan,
    applied: &Applied,
    timeout: Duration,
) -> Result<(), EngineError> {
    let mut waits = Vec::new();
    for service in level {
        let strongest = spec
            .services
            .values()
            .flat_map(|s| &s.depends_on)
            .filter(|d| &d.service == service)
            .map(|d| d.condition)
            .max_by_key(|c| match c {
                Condition::Started => 0,
                Condition::Healthy => 1,
                Condition::CompletedSuccessfully => 2,
            });
        let id = applied
            .swaps
            .iter()
            .find(|s| &s.service == service)
            .and_then(|s| s.new.clone())
            .or_else(|| match plan.actions.get(service) {
                Some(ServiceAction::Keep { id } | ServiceAction::Start { id }) => Some(id.clone()),
                _ => None,
            });
        if let (Some(condition), Some(id)) = (strongest, id) {
            waits.push(wait_until(engine, service, id, condition, timeout));
        }
    }
    join_all(waits).await.into_iter().collect()
}

/// Polls the container until `condition` holds (the gate proper is event-driven; this
/// only orders startup).
async fn wait_until(
    engine: &DockerEngine,
    service: &str,
    id: String,
    condition: Condition,
    timeout: Duration,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + timeout;
    let failed = |reason: String| EngineError::Api {
        action: format!("start dependency `{service}`"),
        reason,
        transient: false,
    };
    loop {
        let state = engine.inspect(&id).await?.state.unwrap_or_default();
        let exited = state.status == Some(ContainerStateStatusEnum::EXITED);
        let health = state.health.and_then(|h| h.status);
        match condition {
            Condition::Started if state.running == Some(true) || exited => return Ok(()),
            Condition::Healthy if health == Some(HealthStatusEnum::HEALTHY) => return Ok(()),
            Condition::Healthy if health == Some(HealthStatusEnum::UNHEALTHY) => {
                return Err(failed("it became unhealthy".into()));
            }
            Condition::Healthy if health.is_none() || health == Some(HealthStatusEnum::NONE) => {
                return Err(failed(
                    "it has no healthcheck, but a service depends on it with service_healthy"
                        .into(),
                ));
            }
            Condition::Healthy | Condition::Started if exited => {
                return Err(failed(format!(
                    "it exited with code {}",
                    state.exit_code.unwrap_or(-1)
                )));
            }
            Condition::CompletedSuccessfully if exited && state.exit_code == Some(0) => {
                return Ok(());
            }
            Condition::CompletedSuccessfully if exited => {
                return Err(failed(format!(
                    "it exited with code {}",
                    state.exit_code.unwrap_or(-1)
                )));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "its condition {condition:?} did not hold within {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Undoes a converge: removes the new containers and gives each previous container its
/// name back and starts it. Every swap is undone even when one fails (the first error
/// is returned), so one stuck service does not keep the others down.
pub async fn restore(engine: &DockerEngine, applied: &Applied) -> Result<(), EngineError> {
    let mut first_error = None;
    for swap in applied.swaps.iter().rev() {
        if let Err(e) = undo(engine, swap).await {
            first_error = first_error.or(Some(e));
        }
    }
    failpoint::at("after-restore");
    first_error.map_or(Ok(()), Err)
}

/// Puts one service back as it was before its swap.
async fn undo(engine: &DockerEngine, swap: &Swap) -> Result<(), EngineError> {
    if let Some(new) = &swap.new {
        engine.remove(new).await?;
    }
    if let Some(previous) = &swap.previous {
        let name = engine.inspect(previous).await?.name.unwrap_or_default();
        if name.trim_start_matches('/') != swap.container_name {
            engine.rename(previous, &swap.container_name).await?;
        }
        rejoin(engine, previous, &swap.rejoin).await?;
        engine.start(previous).await?;
    }
    Ok(())
}

/// Finishes a converge whose gate passed: removes previous containers and leftovers.
pub async fn commit(engine: &DockerEngine, applied: &Applied) -> Result<(), EngineError> {
    let previous = applied.swaps.iter().filter_map(|s| s.previous.as_deref());
    let leftovers = applied.leftovers.iter().map(|o| o.id.as_str());
    join_all(previous.chain(leftovers).map(|id| engine.remove(id)))
        .await
        .into_iter()
        .collect()
}
