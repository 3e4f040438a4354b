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

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename. A
/// crash leaves the old content or the new, never a torn file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("gitfleet-tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Copies the compose file's directory of the fleet repository into the project
/// directory, where relative binds, secrets and configs are found on the host.
pub fn materialize(
    files: &dyn crate::config::RepoFiles,
    compose_path: &str,
    dest: &Path,
) -> Result<(), String> {
    let dir = compose_path.rsplit_once('/').map_or("", |(d, _)| d);
    for path in files.list(dir)? {
        let relative = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .trim_start_matches('/');
        let text = files.read(&path)?.unwrap_or_default();
        write_atomic(&dest.join(relative), text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", dest.join(relative).display()))?;
    }
    Ok(())
}
