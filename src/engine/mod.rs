//! The Docker adapter: everything that talks to the engine, plus the pure translation
//! of the compose stack into what the engine is asked to create (`spec`, `plan`).

pub mod apply;
pub mod converge;
pub mod docker;
pub mod gate;
pub mod plan;
pub mod probe;
pub mod spec;

use std::collections::BTreeMap;
use std::future::Future;

use bollard::models::EventMessage;
use futures_util::Stream;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::fleet::{ImageSet, Probe};
use crate::core::gate::ServiceHealth;
use apply::{Converged, Failure, Outcome, Release};
use converge::Applied;
use docker::{DockerEngine, EngineError};
use gate::GateWatch;
use plan::Observed;
use spec::ProjectSpec;

/// The node's container engine as the reconcile loop uses it: what runs, getting images,
/// converging a release, watching it through the gate the loop drives, committing or
/// restoring it, and the events that reveal drift. [`DockerEngine`]
/// is the implementation; the steps themselves live in this module's submodules.
pub trait Stack: Send + Sync {
    /// What observes the stack while the gate runs.
    type Watch<'a>: HealthWatch + 'a
    where
        Self: 'a;
    /// The project's containers.
    fn observe(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<Vec<Observed>, EngineError>> + Send;
    /// Pulls and verifies every image of `images` (mirrors from `registries`); touches no
    /// container. Returns each service's local reference.
    fn pull(
        &self,
        images: &ImageSet,
        registries: &BTreeMap<String, Vec<String>>,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, EngineError>> + Send;
    /// Pulls and converges to `release`; a failed step is undone at once.
    fn converge(
        &self,
        release: &Release<'_>,
    ) -> impl Future<Output = Result<Converged, EngineError>> + Send;
    /// Starts observing a changed stack for the health gate.
    fn watch_gate<'a>(
        &'a self,
        spec: &'a ProjectSpec,
        probes: &'a BTreeMap<String, Vec<Probe>>,
    ) -> impl Future<Output = Self::Watch<'a>> + Send;
    /// Commits a changed converge (`gate` passed) or restores the previous containers.
    fn finish(
        &self,
        applied: &Applied,
        gate: Result<(), Failure>,
    ) -> impl Future<Output = Result<Outcome, EngineError>> + Send;
    /// Removes a local image gitfleet pulled.
    fn remove_image(&self, reference: &str)
    -> impl Future<Output = Result<(), EngineError>> + Send;
    /// The engine's events for the project's containers, from `since` on.
    fn events(
        &self,
        project: &str,
        since: DateTime<Utc>,
    ) -> impl Stream<Item = Result<EventMessage, EngineError>> + Send + 'static;
}

/// The stack's health while the gate runs: one observation per call. The first call
/// looks at once; each later one waits for the engine's next events or at most `wait`.
pub trait HealthWatch: Send {
    fn next(
        &mut self,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<ServiceHealth>, EngineError>> + Send;
}

impl HealthWatch for GateWatch<'_> {
    async fn next(&mut self, wait: Duration) -> Result<Vec<ServiceHealth>, EngineError> {
        GateWatch::next(self, wait).await
    }
}

impl Stack for DockerEngine {
    type Watch<'a> = GateWatch<'a>;

    async fn observe(&self, project: &str) -> Result<Vec<Observed>, EngineError> {
        converge::observe(self, project).await
    }

    async fn pull(
        &self,
        images: &ImageSet,
        registries: &BTreeMap<String, Vec<String>>,
    ) -> Result<BTreeMap<String, String>, EngineError> {
        converge::pull_all(self, images, registries).await
    }

    async fn converge(&self, release: &Release<'_>) -> Result<Converged, EngineError> {
        apply::converge(self, release).await
    }

    async fn watch_gate<'a>(
        &'a self,
        spec: &'a ProjectSpec,
        probes: &'a BTreeMap<String, Vec<Probe>>,
    ) -> GateWatch<'a> {
        GateWatch::open(self, spec, probes).await
    }

    async fn finish(
        &self,
        applied: &Applied,
        gate: Result<(), Failure>,
    ) -> Result<Outcome, EngineError> {
        apply::finish(self, applied, gate).await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        DockerEngine::remove_image(self, reference).await
    }

    fn events(
        &self,
        project: &str,
        since: DateTime<Utc>,
    ) -> impl Stream<Item = Result<EventMessage, EngineError>> + Send + 'static {
        self.project_events(project, Some(since))
    }
}
