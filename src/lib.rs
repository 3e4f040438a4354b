//! gitfleet: keep a fleet of Docker Compose nodes at the image digests pinned in Git.
//!
//! - [`config`]: a fleet repository → validated [`config::fleet::Fleet`] (or diagnostics).
//! - [`core`]: pure decisions over plain data (no I/O, no clock, no Git, no Docker).
//! - [`cli`] and [`commands`]: the command line; `main.rs` only dispatches.

pub mod agent;
pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod engine;
pub mod failpoint;
pub mod git;
pub mod hmac;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod pin;
pub mod secret;
pub mod state;
pub mod trust;
