//! Reading a fleet repository over Git for the commands that look at the fleet from
//! outside a node (`plan`, `status`): credentials, a mirror, the release at a revision.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::cli::RepoArgs;
use crate::config::diagnostics::Diagnostics;
use crate::config::fleet::NodeId;
use crate::config::{FleetRepo, Interpolation, load_repo};
use crate::git::{GitAuth, Mirror, Records, redact_url};
use crate::secret::Secret;

/// The credentials `args` name, read and checked now so a missing file is a usage error
/// at start rather than a failed fetch later. The password comes from
/// `--git-password-file`, else the `GITFLEET_GIT_PASSWORD` environment variable.
pub(crate) fn git_auth(args: &RepoArgs) -> Result<GitAuth, String> {
    let password = match &args.git_password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--git-password-file {}: {e}", path.display()))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(format!("--git-password-file {} is empty", path.display()));
            }
            Some(Secret::new(text))
        }
        None => std::env::var("GITFLEET_GIT_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .map(Secret::new),
    };
    if let Some(key) = &args.ssh_key
        && !key.is_file()
    {
        return Err(format!(
            "--ssh-key {}: no such file (give the private key's path)",
            key.display()
        ));
    }
    let known_hosts = match &args.ssh_known_hosts {
        Some(file) if !file.is_file() => {
            return Err(format!(
                "--ssh-known-hosts {}: no such file (create it with `ssh-keyscan HOST > FILE`)",
                file.display()
            ));
        }
        Some(file) => vec![file.clone()],
        None => GitAuth::default_known_hosts(),
    };
    if let Some(ca) = &args.git_ca_file {
        if !ca.is_file() {
            return Err(format!("--git-ca-file {}: no such file", ca.display()));
        }
        // SAFETY: libgit2's global TLS settings are changed once, here, while the command
        // starts and before any Git call runs on another thread.
        unsafe { git2::opts::set_ssl_cert_file(ca) }
            .map_err(|e| format!("--git-ca-file {}: {}", ca.display(), e.message()))?;
    }
    Ok(GitAuth {
        username: args.git_username.clone(),
        password,
        ssh_key: args.ssh_key.clone(),
        known_hosts,
    })
}

/// The bare mirror at `dir` of the repository `args` name, with its credentials.
pub(crate) fn open_mirror(args: &RepoArgs, dir: &std::path::Path) -> Result<Mirror, String> {
    let auth = git_auth(args)?;
    Ok(Mirror::open(dir, &args.url)
        .map_err(|e| e.to_string())?
        .with_auth(auth))
}

/// The instant `plan` and `status` evaluate the fleet at: now, or `GITFLEET_NOW`
/// (RFC 3339) to replay a moment or to ask "what if it were then".
pub(crate) fn now() -> Result<DateTime<Utc>, String> {
    match std::env::var("GITFLEET_NOW") {
        Ok(text) if !text.is_empty() => DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                format!("GITFLEET_NOW `{text}`: {e} (give an RFC 3339 time such as 2026-11-24T22:00:00Z)")
            }),
        _ => Ok(Utc::now()),
    }
}

/// A mirror in a temporary directory (or under a state directory), removed when dropped
/// unless it is the state directory's.
pub(crate) struct ScratchMirror {
    pub mirror: Mirror,
    scratch: Option<PathBuf>,
}

impl ScratchMirror {
    pub fn open(args: &RepoArgs, state_dir: Option<&Path>) -> Result<Self, String> {
        let (dir, scratch) = match state_dir {
            Some(dir) => (dir.join("mirror.git"), None),
            None => {
                let dir =
                    std::env::temp_dir().join(format!("gitfleet-mirror-{}", std::process::id()));
                (dir.clone(), Some(dir))
            }
        };
        Ok(ScratchMirror {
            mirror: open_mirror(args, &dir)?,
            scratch,
        })
    }
}

impl Drop for ScratchMirror {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A release as the fleet sees it: the commit, when it was committed, and the validated
/// repository at it (or why it is rejected).
pub(crate) struct FleetRelease {
    pub commit: String,
    pub committed: DateTime<Utc>,
    pub repo: Result<FleetRepo, Diagnostics>,
}

impl FleetRelease {
    pub fn short(&self) -> &str {
        &self.commit[..12.min(self.commit.len())]
    }
}

/// Fetches the release branch and reads the release at `rev` (default: the branch's
/// tip), interpolated as `node` would see it, or for the whole fleet (`None`).
pub(crate) fn read_release(
    mirror: &Mirror,
    args: &RepoArgs,
    rev: Option<&str>,
    node: Option<&NodeId>,
) -> Result<FleetRelease, String> {
    mirror.fetch(&[&args.branch]).map_err(|e| e.to_string())?;
    let commit = match rev {
        Some(rev) => mirror
            .resolve(rev, &args.branch)
            .map_err(|e| e.to_string())?,
        None => mirror
            .tip(&args.branch)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "branch `{}` does not exist in {}",
                    args.branch,
                    redact_url(&args.url)
                )
            })?,
    };
    let files = mirror.files(&commit).map_err(|e| e.to_string())?;
    let vars = Interpolation {
        env: std::env::vars().collect(),
        node: node.cloned().unwrap_or_else(|| NodeId::from("fleet")),
        release: commit.clone(),
        fleet_view: node.is_none(),
    };
    Ok(FleetRelease {
        committed: mirror.committed(&commit).map_err(|e| e.to_string())?,
        repo: load_repo(&files, &vars),
        commit,
    })
}

/// Fetches the status branch and reads every record (and the unreadable ones).
pub(crate) fn read_records(mirror: &Mirror, status_branch: &str) -> Result<Records, String> {
    mirror.fetch(&[status_branch]).map_err(|e| e.to_string())?;
    mirror.records(status_branch).map_err(|e| e.to_string())
}
