//! Holds a converged stack to the health gate (SPEC §3 rule 5), driven by the engine's
//! event stream: every `health_status`, `die`, `start` or `restart` event of the project
//! re-evaluates at once; a one-second tick runs the `[health.*]` probes and notices the
//! deadlines. The verdict itself is the pure `core::gate::evaluate`.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};

use super::docker::{DockerEngine, EngineError};
use super::probe;
use super::spec::{ProjectSpec, ServiceSpec};
use crate::config::fleet::Probe;
use crate::core::gate::{GateVerdict, HealthCheck, RunState, ServiceHealth, evaluate};

/// How often probes run and deadlines are checked between events.
const TICK: Duration = Duration::from_secs(1);
/// The lines of a dead container's own log quoted in the gate's verdict.
const LOG_LINES: usize = 5;

pub struct GateSettings<'a> {
    pub probes: &'a BTreeMap<String, Vec<Probe>>,
    pub health_timeout: Duration,
    pub monitor: Duration,
}

/// Judges the running stack until the gate passes or fails.
///
/// Every service is observed at the start and on every tick (probes, deadlines); an
/// event re-observes only the services whose containers it names, so the last
/// container of 20 turning healthy is known after one inspect, not after a pass over
/// the whole stack queued behind the previous one.
pub async fn hold(
    engine: &DockerEngine,
    spec: &ProjectSpec,
    settings: &GateSettings<'_>,
) -> Result<GateVerdict, EngineError> {
    let mut events = Box::pin(engine.project_events(&spec.project));
    let mut events_ended = false;
    let converged_at = Utc::now();
    let baseline = restart_counts(engine, spec).await;
    let services: Vec<(&String, &ServiceSpec)> = spec.services.iter().collect();
    let everything: Vec<usize> = (0..services.len()).collect();
    let baseline = &baseline;
    let services = &services;
    let observe = |which: Vec<usize>| {
        join_all(which.into_iter().map(move |i| {
            let (name, service) = services[i];
            async move {
                let health = observe_service(engine, name, service, settings.probes, baseline);
                (i, health.await)
            }
        }))
    };
    let mut observed = observe(everything.clone())
        .await
        .into_iter()
        .map(|(_, health)| health)
        .collect::<Result<Vec<_>, _>>()?;
    let mut healthy_since: Option<DateTime<Utc>> = None;
    loop {
        let now = Utc::now();
        let verdict = evaluate(
            &observed,
            converged_at,
            healthy_since,
            now,
            settings.health_timeout,
            settings.monitor,
        );
        let wake_at = match verdict {
            GateVerdict::Pending { deadline } => deadline,
            GateVerdict::Holding { until } => {
                healthy_since.get_or_insert(now);
                until
            }
            GateVerdict::Passed | GateVerdict::Failed { .. } => return Ok(verdict),
        };
        crate::failpoint::at("during-monitor");
        let until_wake = (wake_at - now).to_std().unwrap_or_default().min(TICK);
        let stale = tokio::select! {
            first = events.next(), if !events_ended => {
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
                            events_ended = true;
                            named.push(None);
                        }
                    }
                    next = events.next().now_or_never();
                }
                affected(services, &named)
            }
            () = tokio::time::sleep(until_wake) => everything.clone(),
        };
        for (i, health) in observe(stale).await {
            observed[i] = health?;
        }
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
