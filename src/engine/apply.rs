//! One release applied to this engine, in the steps the agent drives: pull and verify
//! every image and converge ([`converge`]); the agent holds the gate
//! (`engine::gate::GateWatch` observes); then commit (remove what was replaced) or
//! restore (put the previous containers back) ([`finish`]).
//!
//! The engine is the converge's journal: a replaced container is renamed, not removed,
//! until the gate passes (the agent journals only the gate's times). Started again after a crash at any step, `converge` runs
//! again (idempotently) and finds the previous containers, which the gate's verdict
//! then commits or restores.

use std::collections::BTreeMap;

use super::converge::{self, Applied, ConvergeOptions};
use super::docker::{DockerEngine, EngineError};
use super::spec::ProjectSpec;
use crate::config::fleet::{ImageSet, Probe, Rollout};
use crate::failpoint;

/// Everything one release needs from the fleet repository.
pub struct Release<'a> {
    pub spec: &'a ProjectSpec,
    /// The images the node runs (pulled before the converge).
    pub images: ImageSet,
    pub registries: &'a BTreeMap<String, Vec<String>>,
    pub rollout: &'a Rollout,
    pub probes: &'a BTreeMap<String, Vec<Probe>>,
}

impl<'a> Release<'a> {
    /// The release of the validated fleet repository `repo`, translated into `spec`.
    pub fn of(spec: &'a ProjectSpec, repo: &'a crate::config::FleetRepo) -> Self {
        Release {
            spec,
            images: repo.running_images(),
            registries: &repo.fleet.registries,
            rollout: &repo.fleet.rollout,
            probes: &repo.fleet.health,
        }
    }
}

/// How an apply ended.
#[derive(Debug)]
pub enum Outcome {
    /// The stack runs the release and passed the gate; `changed` is false when it
    /// already did and nothing was touched.
    Healthy { changed: bool },
    /// The release failed after the stack was touched; the previous containers run
    /// again.
    Restored { failure: Failure },
}

/// Why a release that touched the stack was undone.
#[derive(Debug)]
pub enum Failure {
    /// The health gate failed (rule 5).
    Gate { service: String, reason: String },
    /// The engine refused a step of the converge (create, start, a network…) or a
    /// dependency never became ready.
    Converge(EngineError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Gate { service, reason } => {
                write!(f, "health gate failed: service `{service}`: {reason}")
            }
            Failure::Converge(e) => write!(f, "{e}"),
        }
    }
}

/// How a converge ended.
#[derive(Debug)]
pub enum Converged {
    /// The stack already ran the release and nothing was left over: no gate to hold.
    Unchanged,
    /// The stack was changed: hold it to the gate, then [`finish`] it.
    Changed(Applied),
    /// A step failed after the stack was touched; the previous containers run again.
    Restored(Failure),
}

/// Pulls every image, then converges the stack. `Err` when nothing was changed (an
/// image could not be pulled, the engine could not be reached before acting) or when
/// undoing a failed step failed too (then the error says both).
pub async fn converge(
    engine: &DockerEngine,
    release: &Release<'_>,
) -> Result<Converged, EngineError> {
    let local = converge::pull_all(engine, &release.images, release.registries).await?;
    failpoint::at("after-pull");
    let options = ConvergeOptions {
        order: release.rollout.order,
        dependency_timeout: release.rollout.health_timeout,
        local_images: &local,
    };
    match converge::converge(engine, release.spec, &options).await {
        Ok(applied) if applied.swaps.is_empty() && applied.leftovers.is_empty() => {
            Ok(Converged::Unchanged)
        }
        Ok(applied) => Ok(Converged::Changed(applied)),
        Err(failure) => {
            let cause = Failure::Converge(failure.error);
            Ok(Converged::Restored(
                restore(engine, &failure.applied, cause).await?,
            ))
        }
    }
}

/// Ends a changed converge by the gate's verdict: `Ok` commits it (removes what was
/// replaced), a failure restores the previous containers.
pub async fn finish(
    engine: &DockerEngine,
    applied: &Applied,
    gate: Result<(), Failure>,
) -> Result<Outcome, EngineError> {
    match gate {
        Ok(()) => {
            converge::commit(engine, applied).await?;
            Ok(Outcome::Healthy { changed: true })
        }
        Err(failure) => Ok(Outcome::Restored {
            failure: restore(engine, applied, failure).await?,
        }),
    }
}

/// Undoes `applied` after `failure`: the previous containers run again.
async fn restore(
    engine: &DockerEngine,
    applied: &Applied,
    failure: Failure,
) -> Result<Failure, EngineError> {
    match converge::restore(engine, applied).await {
        Ok(()) => Ok(failure),
        Err(restore) => Err(EngineError::Api {
            action: "restore the previous containers".to_string(),
            reason: format!("{restore} (after: {failure})"),
            transient: restore.is_transient(),
        }),
    }
}
