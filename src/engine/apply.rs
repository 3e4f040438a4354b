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
use super::failpoint;
use super::gate::{self, GateSettings};
use super::spec::ProjectSpec;
use crate::config::fleet::{ImageSet, Probe, Rollout};
use crate::core::gate::GateVerdict;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The stack runs the release and passed the gate; `changed` is false when it
    /// already did and nothing was touched.
    Healthy { changed: bool },
    /// The gate failed; the previous containers run again.
    Restored { service: String, reason: String },
}

pub async fn apply(engine: &DockerEngine, release: &Release<'_>) -> Result<Outcome, EngineError> {
    let local = converge::pull_all(engine, release.images, release.registries).await?;
    failpoint("after-pull");
    let options = ConvergeOptions {
        order: release.rollout.order,
        dependency_timeout: release.rollout.health_timeout,
        local_images: &local,
    };
    let applied = match converge::converge(engine, release.spec, &options).await {
        Ok(applied) => applied,
        Err(failure) => {
            converge::restore(engine, &failure.applied).await?;
            return Err(failure.error);
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
    match gate::hold(engine, release.spec, &settings).await? {
        GateVerdict::Failed { service, reason } => {
            converge::restore(engine, &applied).await?;
            Ok(Outcome::Restored { service, reason })
        }
        _ => {
            converge::commit(engine, &applied).await?;
            Ok(Outcome::Healthy { changed: true })
        }
    }
}
