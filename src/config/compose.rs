//! The Compose file: interpolation, the supported subset, and key positions.
//!
//! STUB: to be implemented (see the helper's task).

use std::collections::BTreeMap;

use super::diagnostics::{Diagnostics, Position, SourceFile};

/// A parsed, interpolated Compose file restricted to the subset gitfleet honours.
#[derive(Clone, Debug)]
pub struct ComposeStack {
    /// Path of the compose file relative to the fleet repository root.
    pub file: String,
    pub compose: docker_compose_types::Compose,
    /// Positions of keys, by dotted path (`services.web.image`), for diagnostics.
    positions: BTreeMap<String, Position>,
}

impl ComposeStack {
    /// Service names, sorted.
    pub fn service_names(&self) -> Vec<&str> {
        self.compose.services.0.keys().map(String::as_str).collect()
    }

    /// The service's own `image:` after interpolation, if any.
    pub fn image_of(&self, service: &str) -> Option<&str> {
        self.compose
            .services
            .0
            .get(service)
            .and_then(|s| s.as_ref())
            .and_then(|s| s.image.as_deref())
    }

    /// Where a key (dotted path, e.g. `services.web.image`) is written in the file.
    pub fn position(&self, key: &str) -> Option<Position> {
        self.positions.get(key).copied()
    }
}

/// Parses `source` as a Compose file, interpolating `${...}` from `vars`; every problem
/// goes to `diags`, and `None` is returned when the file cannot be used at all.
pub fn load(
    source: &SourceFile,
    vars: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> Option<ComposeStack> {
    let _ = (vars, diags);
    let compose: docker_compose_types::Compose = serde_yaml::from_str(&source.text).ok()?;
    Some(ComposeStack {
        file: source.path.clone(),
        compose,
        positions: BTreeMap::new(),
    })
}
