//! Where gitfleet keeps its files on a node (the state directory, `--state-dir`,
//! default `/var/lib/gitfleet`).

use std::path::{Path, PathBuf};

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gitfleet";

/// The directory holding a project's compose files on the host: relative bind mounts,
/// secrets and configs resolve against it, and its path is part of every service's
/// config hash, so the agent and `gitfleet diff` must agree on it.
pub fn project_dir(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join("projects").join(project)
}
