//! Where gitfleet keeps its files on a node (the state directory, `--state-dir`,
//! default `/var/lib/gitfleet`).

use std::path::{Path, PathBuf};

use crate::secret::DigestKey;

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

/// The node's [`DigestKey`], made (random, mode 0600) in `state_dir` the first time a
/// stack needs one (it is given a secret's content); a stack that needs none gets
/// [`DigestKey::unused`] and no file is touched. Made whole before it appears (a temporary
/// file linked into place), so a crash never leaves a torn key and two processes agree
/// on one.
pub fn digest_key(state_dir: &Path, needed: bool) -> std::io::Result<DigestKey> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if !needed {
        return Ok(DigestKey::unused());
    }
    let path = state_dir.join("secret-digest.key");
    let read = |path: &Path| -> std::io::Result<DigestKey> {
        let bytes: [u8; 32] = std::fs::read(path)?.try_into().map_err(|_| {
            std::io::Error::other(format!(
                "{} is not 32 bytes: restore it from a backup, or remove it (the services given secrets are then recreated once)",
                path.display()
            ))
        })?;
        Ok(DigestKey::new(bytes))
    };
    match read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        found => return found,
    }
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("secret-digest.key.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut file, &bytes)?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&tmp, &path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(e),
        Ok(()) => Ok(DigestKey::new(bytes)),
    }
}

/// Copies the compose file's directory of the fleet repository into the project
/// directory, where relative binds, secrets and configs are found on the host.
pub fn materialize(
    files: &dyn crate::config::RepoFiles,
    compose_path: &str,
    dest: &Path,
) -> Result<(), String> {
    let dir = crate::config::parent_dir(compose_path);
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

/// What the node remembers between runs, in `<state-dir>/node.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalState {
    /// The image set the stack was last converged to, and the release it came from.
    pub running: Option<crate::config::fleet::ImageSetId>,
    pub running_release: Option<String>,
    /// The last release tip this node admitted (its signature checked): the anchor of
    /// the chain of trust that judges the next tip (crate::trust).
    #[serde(default)]
    pub admitted: Option<String>,
    /// Image sets this node ran healthy, oldest first, with the release each came from
    /// (a rollback re-reads that release's compose file).
    #[serde(default)]
    pub known_good: Vec<KnownGood>,
    /// Image references gitfleet pulled and has not pruned yet.
    #[serde(default)]
    pub pulled: Vec<String>,
    /// The release this node failed (rule 6): it is not tried again here until a new
    /// commit, even when the status branch cannot be read or written.
    #[serde(default)]
    pub failed_release: Option<String>,
    /// A transient failure being retried.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// The health gate in progress: the stack runs `images` of `release`, not yet
    /// committed. A restarted agent resumes this gate rather than starting a new one.
    #[serde(default)]
    pub gate: Option<GateJournal>,
}

/// A health gate in progress, as journaled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GateJournal {
    pub release: String,
    pub images: crate::config::fleet::ImageSetId,
    pub run: crate::core::gate::GateRun,
}

/// A release the node could not apply for a transient reason, and when it tries again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retry {
    pub release: String,
    /// The first transient failure: `health_timeout` after it, the release fails.
    pub since: chrono::DateTime<chrono::Utc>,
    pub attempts: u32,
    pub next_at: chrono::DateTime<chrono::Utc>,
    pub reason: String,
}

/// The first retry waits this long; each next one twice as long, up to [`RETRY_MAX`].
const RETRY_FIRST: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
const RETRY_MAX: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownGood {
    pub release: String,
    pub images: crate::config::fleet::ImageSetId,
    /// The local references its images may be known by (registry and mirrors).
    #[serde(default)]
    pub references: Vec<String>,
}

/// How many known-good sets a node keeps.
const KNOWN_GOOD_KEPT: usize = 10;

impl LocalState {
    pub fn load(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join("node.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalState::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        write_atomic(&state_dir.join("node.toml"), text.as_bytes())
            .map_err(|e| format!("cannot write node.toml: {e}"))
    }

    /// What the decision core needs of the journal; the gate's standing is judged by
    /// `rollout`'s `health_timeout` and `monitor`.
    pub fn facts(
        &self,
        rollout: &crate::config::fleet::Rollout,
    ) -> crate::core::decide::LocalFacts {
        crate::core::decide::LocalFacts {
            // Under the gate the stack runs the new set, not yet committed.
            running: match &self.gate {
                Some(gate) => Some(gate.images.clone()),
                None => self.running.clone(),
            },
            known_good: self.known_good.iter().map(|k| k.images.clone()).collect(),
            gate: self
                .gate
                .as_ref()
                .map(|g| g.run.standing(rollout.health_timeout, rollout.monitor)),
            failed_release: self.failed_release.clone(),
            retry: self
                .retry
                .as_ref()
                .map(|r| crate::core::decide::RetryFacts {
                    release: r.release.clone(),
                    reason: r.reason.clone(),
                    at: r.next_at,
                }),
        }
    }

    /// Remembers references about to be pulled, so they can be pruned later.
    pub fn pulling(&mut self, references: &[String]) {
        for r in references {
            if !self.pulled.contains(r) {
                self.pulled.push(r.clone());
            }
        }
    }

    /// Records that `images` (from `release`, known locally by `references`) runs healthy.
    pub fn healthy(
        &mut self,
        release: &str,
        images: &crate::config::fleet::ImageSetId,
        references: Vec<String>,
    ) {
        self.running = Some(images.clone());
        self.running_release = Some(release.to_string());
        self.known_good.retain(|k| &k.images != images);
        self.known_good.push(KnownGood {
            release: release.to_string(),
            images: images.clone(),
            references,
        });
        let excess = self.known_good.len().saturating_sub(KNOWN_GOOD_KEPT);
        self.known_good.drain(..excess);
        self.retry = None;
        self.gate = None;
    }

    /// Records a transient failure of `release` at `now`. Returns `false` (and forgets
    /// the retry) once `deadline` has passed since the first one: the release has failed.
    pub fn transient_failure(
        &mut self,
        release: &str,
        reason: String,
        now: chrono::DateTime<chrono::Utc>,
        deadline: std::time::Duration,
    ) -> bool {
        self.gate = None;
        let (since, attempts) = match &self.retry {
            Some(r) if r.release == release => (r.since, r.attempts + 1),
            _ => (now, 1),
        };
        let deadline =
            since + chrono::TimeDelta::from_std(deadline).unwrap_or(chrono::TimeDelta::MAX);
        if now >= deadline {
            self.retry = None;
            return false;
        }
        let backoff = RETRY_FIRST
            .checked_mul(1 << attempts.min(10).saturating_sub(1))
            .unwrap_or(RETRY_MAX)
            .min(RETRY_MAX);
        self.retry = Some(Retry {
            release: release.to_string(),
            since,
            attempts,
            next_at: (now + backoff).min(deadline),
            reason,
        });
        true
    }

    /// Records that this node failed `release` for good (rule 6).
    pub fn failed(&mut self, release: &str) {
        self.failed_release = Some(release.to_string());
        self.retry = None;
        self.gate = None;
    }

    /// Pulled references no longer needed: all but those of the running set and of the
    /// known-good set before it (kept so a restore or rollback needs no pull).
    pub fn prunable(&self) -> Vec<String> {
        let keep: Vec<&String> = self
            .known_good
            .iter()
            .rev()
            .take(2)
            .flat_map(|k| &k.references)
            .collect();
        self.pulled
            .iter()
            .filter(|r| !keep.contains(r))
            .cloned()
            .collect()
    }
}

/// An exclusive lock on the state directory, held for the agent's life, so a second
/// agent on the same directory stops with a clear message.
pub struct StateLock(#[allow(dead_code)] std::fs::File);

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let path = state_dir.join("lock");
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        file.try_lock().map_err(|_| {
            format!(
                "another gitfleet agent uses {}; stop it, or give this one its own --state-dir",
                state_dir.display()
            )
        })?;
        Ok(StateLock(file))
    }
}

/// Status records that could not be pushed yet, delivered in order later: no status is
/// ever lost when the remote is down.
pub struct Outbox(PathBuf);

impl Outbox {
    pub fn new(state_dir: &Path) -> Self {
        Outbox(state_dir.join("outbox"))
    }

    pub fn put(&self, record: &crate::core::status::StatusRecord) -> Result<(), String> {
        let name = format!(
            "{}-{}.toml",
            record.updated.format("%Y%m%dT%H%M%S%.9f"),
            record.state
        );
        write_atomic(&self.0.join(name), record.to_toml().as_bytes())
            .map_err(|e| format!("outbox: {e}"))
    }

    /// Pending records, oldest first, with their files.
    pub fn pending(&self) -> Vec<(PathBuf, crate::core::status::StatusRecord)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .filter_map(|p| {
                let text = std::fs::read_to_string(&p).ok()?;
                crate::core::status::StatusRecord::from_toml(&text)
                    .ok()
                    .map(|r| (p, r))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use std::time::Duration;

    #[test]
    fn transient_failures_back_off_until_health_timeout_then_fail() {
        let t = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        let timeout = Duration::from_secs(60);
        let mut local = LocalState::default();
        let next = |local: &LocalState| local.retry.as_ref().map(|r| r.next_at);
        assert!(local.transient_failure("r", "down".into(), t(0), timeout));
        assert_eq!(next(&local), Some(t(10)));
        assert!(local.transient_failure("r", "down".into(), t(10), timeout));
        assert_eq!(next(&local), Some(t(30)));
        assert!(local.transient_failure("r", "down".into(), t(30), timeout));
        // 40 s later would be past the deadline: the last attempt is at the deadline.
        assert_eq!(next(&local), Some(t(60)));
        assert!(!local.transient_failure("r", "down".into(), t(60), timeout));
        assert_eq!(local.retry, None);
        // Another release starts its own count.
        assert!(local.transient_failure("r2", "down".into(), t(61), timeout));
        assert_eq!(local.retry.as_ref().map(|r| r.attempts), Some(1));
        local.failed("r2");
        assert_eq!(
            (local.retry, local.failed_release.as_deref()),
            (None, Some("r2"))
        );
    }
}
