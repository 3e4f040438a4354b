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

use crate::config::fleet::ImageSet;
use apply::{Outcome, Release};
use docker::{DockerEngine, EngineError};
use plan::Observed;

/// The node's container engine as the reconcile loop uses it: what runs, getting images,
/// taking a release through the gate, and the events that reveal drift. [`DockerEngine`]
/// is the implementation; the steps themselves live in this module's submodules.
pub trait Stack: Send + Sync {
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
    /// Converges to `release`, holds it to the gate, and restores on failure.
    fn apply(
        &self,
        release: &Release<'_>,
    ) -> impl Future<Output = Result<Outcome, EngineError>> + Send;
    /// Removes a local image gitfleet pulled.
    fn remove_image(&self, reference: &str)
    -> impl Future<Output = Result<(), EngineError>> + Send;
    /// The engine's events for the project's containers.
    fn events(
        &self,
        project: &str,
    ) -> impl Stream<Item = Result<EventMessage, EngineError>> + Send + 'static;
}

impl Stack for DockerEngine {
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

    async fn apply(&self, release: &Release<'_>) -> Result<Outcome, EngineError> {
        apply::apply(self, release).await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        DockerEngine::remove_image(self, reference).await
    }

    fn events(
        &self,
        project: &str,
    ) -> impl Stream<Item = Result<EventMessage, EngineError>> + Send + 'static {
        self.project_events(project)
    }
}
