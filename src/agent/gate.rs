//! The health gate as a state the loop drives (SPEC §3 rule 5). The engine converges
//! and observes ([`Stack`]); `core::gate` judges each observation at the loop's clock;
//! this module steps the one through the other until the gate passes or fails, then
//! has the engine commit or restore. The agent journals the gate as it goes
//! ([`GateLog`]), so `monitoring` is reported and a restarted agent resumes the gate
//! with its original deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use super::Clock;
use crate::config::fleet::Probe;
use crate::core::gate::{GateRun, GateVerdict};
use crate::engine::apply::{Converged, Failure, Outcome, Release};
use crate::engine::docker::EngineError;
use crate::engine::spec::ProjectSpec;
use crate::engine::{HealthWatch, Stack};
use crate::failpoint;

/// Where the gate's progress goes.
pub trait GateLog {
    /// The stack changed and the gate begins (or resumes) with `run`.
    fn started(&mut self, run: &GateRun) -> impl Future<Output = ()>;
    /// The run moved on (the stack was first seen healthy together).
    fn progressed(&mut self, run: &GateRun);
    /// The gate decided: there is nothing to resume any more, whether the commit or
    /// the restore that follows completes or not (a crash then converges afresh, and
    /// a new gate judges, rather than a resumed one passing what had failed).
    fn decided(&mut self);
}

/// No journal: a rollback, a drift repair and `gitfleet apply` hold the gate without
/// recording it.
impl GateLog for () {
    async fn started(&mut self, _: &GateRun) {}
    fn progressed(&mut self, _: &GateRun) {}
    fn decided(&mut self) {}
}

/// A release applied start to finish: converge, hold the gate (resuming `resume` when
/// an earlier agent had begun it), then commit or restore. `Err` when nothing was
/// touched, or when the commit or the restore failed.
pub async fn apply<S: Stack>(
    stack: &S,
    release: &Release<'_>,
    clock: &dyn Clock,
    resume: Option<GateRun>,
    log: &mut impl GateLog,
) -> Result<Outcome, EngineError> {
    let applied = match stack.converge(release).await? {
        Converged::Unchanged => return Ok(Outcome::Healthy { changed: false }),
        Converged::Restored(failure) => return Ok(Outcome::Restored { failure }),
        Converged::Changed(applied) => applied,
    };
    let settings = GateSettings {
        probes: release.probes,
        health_timeout: release.rollout.health_timeout,
        monitor: release.rollout.monitor,
    };
    // Watching starts before `monitoring` is reported: a restart during the push counts.
    let mut watch = stack.watch_gate(release.spec, settings.probes).await;
    let mut run = resume.unwrap_or_else(|| GateRun::new(clock.now()));
    log.started(&run).await;
    let verdict = step(&mut watch, &settings, clock, &mut run, log).await;
    log.decided();
    stack.finish(&applied, verdict).await
}

/// What the gate holds a stack to: the `[health.*]` probes and the `[rollout]` times.
pub struct GateSettings<'a> {
    pub probes: &'a BTreeMap<String, Vec<Probe>>,
    pub health_timeout: Duration,
    pub monitor: Duration,
}

/// Steps the gate of `spec` from `run` until it passes (`Ok`) or fails. An engine
/// error while observing fails it too: the stack cannot be judged healthy.
pub async fn hold<S: Stack>(
    stack: &S,
    spec: &ProjectSpec,
    settings: &GateSettings<'_>,
    clock: &dyn Clock,
    run: &mut GateRun,
    log: &mut impl GateLog,
) -> Result<(), Failure> {
    let mut watch = stack.watch_gate(spec, settings.probes).await;
    step(&mut watch, settings, clock, run, log).await
}

/// Judges each look of `watch` until the gate passes or fails.
async fn step(
    watch: &mut impl HealthWatch,
    settings: &GateSettings<'_>,
    clock: &dyn Clock,
    run: &mut GateRun,
    log: &mut impl GateLog,
) -> Result<(), Failure> {
    let mut wait = Duration::ZERO;
    loop {
        let observed = watch.next(wait).await.map_err(Failure::Converge)?;
        let now = clock.now();
        let before = *run;
        let verdict = run.step(&observed, now, settings.health_timeout, settings.monitor);
        if *run != before {
            log.progressed(run);
        }
        let wake_at = match verdict {
            GateVerdict::Passed => return Ok(()),
            GateVerdict::Failed { service, reason } => {
                return Err(Failure::Gate { service, reason });
            }
            pending_or_holding => pending_or_holding.decides_by().unwrap_or(now),
        };
        failpoint::at("during-monitor");
        wait = (wake_at - now).to_std().unwrap_or_default();
    }
}
