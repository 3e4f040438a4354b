//! One release applied to this engine, start to finish: pull and verify every image,
//! converge, hold the gate, then commit (remove what was replaced) or restore (put the
//! previous containers back). The agent and `gitfleet apply` both act through this.
//!
//! Crash safety needs no separate journal: a replaced container is renamed, not removed,
//! until the gate passes. Started again after a crash at any step, `apply` converges
//! (idempotently), finds the previous containers, and gates, commits or restores them.

use std::collections::BTreeMap;

use super::converge::{self, ConvergeOptions};
use super::docker::{DockerEngine, EngineError};
use super::gate::{self, GateSettings};
use super::spec::ProjectSpec;
use crate::config::fleet::{ImageSet, Probe, Rollout};
use crate::core::gate::GateVerdict;
use crate::failpoint;

/// Everything one release needs from the fleet repository.
pub struct Release<'a> {
    pub spec: &'a ProjectSpec,
    pub images: &'a ImageSet,
    pub registries: &'a BTreeMap<String, Vec<String>>,
    pub rollout: &'a Rollout,
    pub probes: &'a BTreeMap<String, Vec<Probe>>,
}

impl<'a> Release<'a> {
    /// The release of the validated fleet repository `repo`, translated into `spec`.
    pub fn of(spec: &'a ProjectSpec, repo: &'a crate::config::FleetRepo) -> Self {
        Release {
            spec,
            images: &repo.images,
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

/// Applies the release. `Err` when nothing was changed (an image could not be pulled,
/// the engine could not be reached before acting) or when undoing a failure failed too
/// (then the error says both).
pub async fn apply(engine: &DockerEngine, release: &Release<'_>) -> Result<Outcome, EngineError> {
    let local = converge::pull_all(engine, release.images, release.registries).await?;
    failpoint::at("after-pull");
    let options = ConvergeOptions {
        order: release.rollout.order,
        dependency_timeout: release.rollout.health_timeout,
        local_images: &local,
    };
    let applied = match converge::converge(engine, release.spec, &options).await {
        Ok(applied) => applied,
        Err(failure) => {
            return restored(engine, &failure.applied, Failure::Converge(failure.error)).await;
        }
    };
    if applied.swaps.is_empty() && applied.leftovers.is_empty() {
        return Ok(Outcome::Healthy { changed: false });
    }
    let settings = GateSettings {
        probes: release.probes,
        health_timeout: release.rollout.health_timeout,
        monitor: release.rollout.monitor,
    };
    match gate::hold(engine, release.spec, &settings).await {
        Ok(GateVerdict::Failed { service, reason }) => {
            restored(engine, &applied, Failure::Gate { service, reason }).await
        }
        Ok(_) => {
            converge::commit(engine, &applied).await?;
            Ok(Outcome::Healthy { changed: true })
        }
        Err(error) => restored(engine, &applied, Failure::Converge(error)).await,
    }
}

/// Undoes `applied` after `failure`: the previous containers run again.
async fn restored(
    engine: &DockerEngine,
    applied: &converge::Applied,
    failure: Failure,
) -> Result<Outcome, EngineError> {
    match converge::restore(engine, applied).await {
        Ok(()) => Ok(Outcome::Restored { failure }),
        Err(restore) => Err(EngineError::Api {
            action: "restore the previous containers".to_string(),
            reason: format!("{restore} (after: {failure})"),
            transient: restore.is_transient(),
        }),
    }
}
