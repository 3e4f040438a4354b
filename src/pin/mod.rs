//! `gitfleet pin`: tags resolved to digests, version policies followed, fleet.toml
//! rewritten in place. [`reference`], [`policy`] and [`plan`] are pure; [`registry`] is
//! the one adapter (the OCI distribution API); `commands::pin` joins them.

pub mod plan;
pub mod policy;
pub mod reference;
pub mod registry;
