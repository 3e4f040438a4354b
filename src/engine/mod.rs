//! The Docker adapter: everything that talks to the engine, plus the pure translation
//! of the compose stack into what the engine is asked to create (`spec`, `plan`).

pub mod apply;
pub mod converge;
pub mod docker;
pub mod gate;
pub mod plan;
pub mod probe;
pub mod spec;

/// Crash-safety tests kill the process at named steps: with `GITFLEET_TEST_FAILPOINT`
/// set to a step's name, the process aborts there as `kill -9` would stop it. Unset (as
/// always outside tests), this is one environment lookup per step.
pub fn failpoint(name: &str) {
    if std::env::var("GITFLEET_TEST_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
