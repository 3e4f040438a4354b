//! The pure decision core: what a node must do now.
//!
//! Nothing in here performs I/O, reads the clock, or knows about Git or Docker: every
//! input is plain data (the validated fleet, status records, the node's local facts and
//! `now`), and every output is a value the agent acts on.

pub mod batch;
pub mod decide;
pub mod gate;
pub mod plan;
pub mod status;
pub mod summary;
pub mod window;

#[cfg(test)]
pub(crate) mod testkit;
