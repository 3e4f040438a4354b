//! Observes a converged stack for the health gate (SPEC §3 rule 5), driven by the
//! engine's event stream: every `health_status`, `die`, `start` or `restart` event of
//! the project is a new look at once; a one-second tick runs the `[health.*]` probes.
//! The verdict is the pure `core::gate`; the agent drives the gate (`agent::gate`).

use std::collections::BTreeMap;
use std::time::Duration;

use std::pin::Pin;

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, EventMessage, HealthStatusEnum,
};
use futures_util::future::join_all;
use futures_util::{FutureExt, Stream, StreamExt};

use super::docker::{DockerEngine, EngineError};
use super::probe;
use super::spec::{ProjectSpec, ServiceSpec};
use crate::config::fleet::Probe;
use crate::core::gate::{HealthCheck, RunState, ServiceHealth};

/// How often every service is looked at again (probes run) when no event comes.
const TICK: Duration = Duration::from_secs(1);
/// The lines of a dead container's own log quoted in the gate's verdict.
const LOG_LINES: usize = 5;

/// The event stream of the project's containers, boxed so a watch can hold it.
type Events = Pin<Box<dyn Stream<Item = Result<EventMessage, EngineError>> + Send>>;

/// Observes a converged stack for the health gate. It only observes: the loop that
/// drives the gate judges each observation (`core::gate`) with its own clock.
///
/// Every service is observed on the first look and on every tick (probes); after that
/// an event re-observes only the services whose containers it names, so the last
/// container of 20 turning healthy is known after one inspect, not after a pass over
/// the whole stack queued behind the previous one.
pub struct GateWatch<'a> {
    stack: Observer<'a>,
    events: Events,
    events_ended: bool,
    /// The last observation, one entry per service.
    observed: Vec<ServiceHealth>,
    looked: bool,
}

/// What a look at the stack needs.
struct Observer<'a> {
    engine: &'a DockerEngine,
    services: Vec<(&'a String, &'a ServiceSpec)>,
    probes: &'a BTreeMap<String, Vec<Probe>>,
    /// Each container's restart count when the watch began, so restarts during the
    /// gate show.
    baseline: BTreeMap<String, i64>,
}

impl<'a> GateWatch<'a> {
    /// Starts watching `spec`'s containers: subscribes to their events first, so none
    /// that happens while the baseline is taken is missed.
    pub async fn open(
        engine: &'a DockerEngine,
        spec: &'a ProjectSpec,
        probes: &'a BTreeMap<String, Vec<Probe>>,
    ) -> Self {
        let events: Events = Box::pin(engine.project_events(&spec.project, None));
        GateWatch {
            stack: Observer {
                engine,
                services: spec.services.iter().collect(),
                probes,
                baseline: restart_counts(engine, spec).await,
            },
            events,
            events_ended: false,
            observed: Vec::new(),
            looked: false,
        }
    }

    /// Every service's health: at once on the first call; afterwards after the next
    /// events of the project, or after `wait` (at most a tick) with every service
    /// looked at again.
    pub async fn next(&mut self, wait: Duration) -> Result<Vec<ServiceHealth>, EngineError> {
        let everything: Vec<usize> = (0..self.stack.services.len()).collect();
        if !self.looked {
            self.looked = true;
            self.observed = self
                .stack
                .observe(everything)
                .await
                .into_iter()
                .map(|(_, health)| health)
                .collect::<Result<_, _>>()?;
            return Ok(self.observed.clone());
        }
        let stale = tokio::select! {
            first = self.events.next(), if !self.events_ended => {
                // A burst of events (20 containers turning healthy) is one look, not 20.
                let mut named = Vec::new();
                let mut next = Some(first);
                while let Some(event) = next {
                    match event {
                        Some(Ok(event)) => named.push(
                            event.actor.and_then(|a| a.attributes?.remove("name")),
                        ),
                        // The stream broke: the tick alone drives the gate from now on.
                        Some(Err(_)) | None => {
                            self.events_ended = true;
                            named.push(None);
                        }
                    }
                    next = self.events.next().now_or_never();
                }
                affected(&self.stack.services, &named)
            }
            () = tokio::time::sleep(wait.min(TICK)) => everything,
        };
        for (i, health) in self.stack.observe(stale).await {
            self.observed[i] = health?;
        }
        Ok(self.observed.clone())
    }
}

impl Observer<'_> {
    /// Observes the services at `which` (indexes into `services`), all at once.
    async fn observe(&self, which: Vec<usize>) -> Vec<(usize, Result<ServiceHealth, EngineError>)> {
        join_all(which.into_iter().map(|i| {
            let (name, service) = self.services[i];
            let health = observe_service(self.engine, name, service, self.probes, &self.baseline);
            async move { (i, health.await) }
        }))
        .await
    }
}

/// The services (indexes into `services`) whose containers the events name; every
/// service when an event names none.
fn affected(services: &[(&String, &ServiceSpec)], named: &[Option<String>]) -> Vec<usize> {
    (0..services.len())
        .filter(|&i| {
            named.iter().any(|name| match name {
                Some(name) => *name == services[i].1.container_name,
                None => true,
            })
        })
        .collect()
}

/// Each service container's restart count now, so restarts during the gate show. All
/// containers at once, as the observations that follow.
async fn restart_counts(engine: &DockerEngine, spec: &ProjectSpec) -> BTreeMap<String, i64> {
    let counts = join_all(spec.services.iter().map(|(name, service)| async move {
        let inspect = engine.inspect(&service.container_name).await.ok()?;
        Some((name.clone(), inspect.restart_count.unwrap_or(0)))
    }))
    .await;
    counts.into_iter().flatten().collect()
}

/// The facts the gate judges about one service.
async fn observe_service(
    engine: &DockerEngine,
    name: &str,
    service: &ServiceSpec,
    probes: &BTreeMap<String, Vec<Probe>>,
    baseline: &BTreeMap<String, i64>,
) -> Result<ServiceHealth, EngineError> {
    let inspect = match engine.inspect(&service.container_name).await {
        Ok(i) => i,
        Err(EngineError::Api {
            transient: false, ..
        }) => {
            return Ok(ServiceHealth {
                service: name.to_string(),
                run: RunState::Down { exit_code: None },
                check: HealthCheck::None,
                restarts: 0,
                probe: None,
                last_log: Some("container is missing".into()),
            });
        }
        Err(e) => return Err(e),
    };
    let mut health = service_health(
        name,
        service.job,
        &inspect,
        baseline.get(name).copied().unwrap_or(0),
    );
    // A container that died or restarted says why in its own output (`exec … failed`,
    // a stack trace): that, not the exit code, is what an operator needs.
    if matches!(health.run, RunState::Down { .. }) || health.restarts > 0 {
        let id = inspect.id.as_deref().unwrap_or(&service.container_name);
        let lines = engine.last_log_lines(id, LOG_LINES).await;
        if !lines.is_empty() {
            health.last_log = Some(lines.join(" | "));
        }
    }
    if let Some(list) = probes.get(name).filter(|l| !l.is_empty()) {
        let mut result = Ok(());
        for p in list {
            if let Err(e) = probe::run(engine, &service.container_name, p).await {
                result = Err(e);
                break;
            }
        }
        health.probe = Some(result);
    }
    Ok(health)
}

fn service_health(
    service: &str,
    job: bool,
    inspect: &ContainerInspectResponse,
    baseline_restarts: i64,
) -> ServiceHealth {
    let state = inspect.state.clone().unwrap_or_default();
    let health = state.health.unwrap_or_default();
    let check = match health.status {
        Some(HealthStatusEnum::STARTING) => HealthCheck::Starting,
        Some(HealthStatusEnum::HEALTHY) => HealthCheck::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => HealthCheck::Unhealthy,
        _ => HealthCheck::None,
    };
    // The last line the check printed, or its exit code when it printed nothing.
    let last_log = health.log.and_then(|log| log.last().cloned()).map(|r| {
        match r
            .output
            .as_deref()
            .map(str::trim)
            .and_then(|o| o.lines().last())
        {
            Some(line) if !line.is_empty() => line.to_string(),
            _ => format!(
                "the check printed nothing, exit code {}",
                r.exit_code.unwrap_or(-1)
            ),
        }
    });
    ServiceHealth {
        service: service.to_string(),
        run: match (state.running, state.status, state.exit_code) {
            (Some(true), ..) => RunState::Running,
            (_, Some(ContainerStateStatusEnum::EXITED), Some(0)) if job => RunState::Completed,
            (_, Some(ContainerStateStatusEnum::EXITED), exit_code) => RunState::Down { exit_code },
            _ => RunState::Down { exit_code: None },
        },
        check,
        restarts: u32::try_from((inspect.restart_count.unwrap_or(0) - baseline_restarts).max(0))
            .unwrap_or(u32::MAX),
        probe: None,
        last_log,
    }
}
