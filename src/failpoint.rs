//! The crash-test hook every layer may call (the Git adapter and the engine both stop at
//! named steps), so it belongs to neither.

/// Crash-safety tests kill the process at named steps: with `GITFLEET_TEST_FAILPOINT`
/// set to a step's name, the process aborts there as `kill -9` would stop it. Unset (as
/// always outside tests), this is one environment lookup per step.
pub fn at(name: &str) {
    if std::env::var("GITFLEET_TEST_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
