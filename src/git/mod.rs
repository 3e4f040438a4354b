//! The Git control plane (git2): a bare mirror of the fleet repository in the state
//! directory, files read from a commit's tree with no working tree, and the status
//! writer whose push is the compare-and-swap that serializes nodes (SPEC §3 rule 2, §4).
//!
//! Every call here blocks; the agent runs them off the async runtime.

mod auth;
pub mod known_hosts;
pub mod propose;

pub use auth::{GitAuth, redact_url};

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ErrorCode, FetchOptions, ObjectType, Oid, PushOptions, Repository, Signature};

use crate::config::{MAX_FILE_BYTES, RepoFiles};
use crate::core::status::StatusRecord;

/// What went wrong with Git, phrased for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitError {
    /// The remote cannot be reached or read.
    Unreachable { url: String, reason: String },
    /// The remote refused the push (a hook, permissions), not a race.
    Refused { reason: String },
    /// Every retry lost the race to other writers.
    Contended { attempts: u32 },
    /// The local mirror or a commit is unusable.
    Local { reason: String },
    /// The commit may not be admitted (its signature, by the chain of trust).
    Rejected { reason: String },
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitError::Unreachable { url, reason } => {
                write!(
                    f,
                    "cannot reach the fleet repository {}: {reason} (check the URL, the credentials and that the server is up)",
                    redact_url(url)
                )
            }
            GitError::Refused { reason } => write!(
                f,
                "the remote refused the status push: {reason} (check the branch's protection and the agent's write access)"
            ),
            GitError::Contended { attempts } => write!(
                f,
                "the status push lost the race {attempts} times; it stays in the outbox and is retried"
            ),
            GitError::Local { reason } => write!(f, "local Git mirror: {reason}"),
            GitError::Rejected { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for GitError {}

fn local(e: git2::Error) -> GitError {
    GitError::Local {
        reason: e.message().to_string(),
    }
}

/// A bare mirror of the fleet repository.
#[derive(Clone, Debug)]
pub struct Mirror {
    path: PathBuf,
    url: String,
    auth: std::sync::Arc<GitAuth>,
    /// The node's key: its status commits are SSH-signed with it (`--node-key`).
    signer: Option<std::sync::Arc<ssh_key::PrivateKey>>,
}

/// The records read from the status branch, and the files that are not valid records
/// (path, why).
pub type Records = (Vec<StatusRecord>, Vec<(String, String)>);

/// A commit's signature (its `gpgsig` header; `None` when unsigned) and the bytes it
/// signs.
pub type CommitSignature = (Option<String>, Vec<u8>);

/// What a fetch transferred (the pack; the ref advertisement is not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub objects: usize,
    pub bytes: usize,
}

/// The outcome of writing a status record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A new commit on the status branch.
    Committed,
    /// The branch already held exactly this record.
    Unchanged,
}

/// The control plane as the reconcile loop uses it: the release branch and the status
/// branch of one remote. Calls block (Git); the loop runs them off the async runtime,
/// hence `Clone + Send + 'static`. [`Mirror`] is the implementation.
pub trait ControlPlane: Clone + Send + Sync + 'static {
    type Files: RepoFiles;
    /// Brings `branches` up to date from the remote.
    fn fetch(&self, branches: &[&str]) -> Result<Fetched, GitError>;
    /// The fetched tip of `branch`, if it exists.
    fn tip(&self, branch: &str) -> Result<Option<String>, GitError>;
    /// When `commit` was committed.
    fn committed(&self, commit: &str) -> Result<chrono::DateTime<chrono::Utc>, GitError>;
    /// The files of `commit`.
    fn files(&self, commit: &str) -> Result<Self::Files, GitError>;
    /// The signature of `commit` and the bytes it signs.
    fn signature(&self, commit: &str) -> Result<CommitSignature, GitError>;
    /// Every node's record at the tip of the status branch.
    fn records(&self, status_branch: &str) -> Result<Records, GitError>;
    /// Writes this node's record (a compare-and-swap on the status branch).
    fn push_record(
        &self,
        status_branch: &str,
        record: &StatusRecord,
        attempts: u32,
    ) -> Result<Pushed, GitError>;
}

impl ControlPlane for Mirror {
    type Files = TreeFiles;

    fn fetch(&self, branches: &[&str]) -> Result<Fetched, GitError> {
        Mirror::fetch(self, branches)
    }

    fn tip(&self, branch: &str) -> Result<Option<String>, GitError> {
        Mirror::tip(self, branch)
    }

    fn committed(&self, commit: &str) -> Result<chrono::DateTime<chrono::Utc>, GitError> {
        Mirror::committed(self, commit)
    }

    fn files(&self, commit: &str) -> Result<TreeFiles, GitError> {
        Mirror::files(self, commit)
    }

    fn signature(&self, commit: &str) -> Result<CommitSignature, GitError> {
        Mirror::signature(self, commit)
    }

    fn records(&self, status_branch: &str) -> Result<Records, GitError> {
        Mirror::records(self, status_branch)
    }

    fn push_record(
        &self,
        status_branch: &str,
        record: &StatusRecord,
        attempts: u32,
    ) -> Result<Pushed, GitError> {
        Mirror::push_record(self, status_branch, record, attempts)
    }
}

impl Mirror {
    /// Opens (creating if needed) the bare mirror at `path` for `url`.
    pub fn open(path: &Path, url: &str) -> Result<Self, GitError> {
        if !path.join("HEAD").exists() {
            Repository::init_bare(path).map_err(local)?;
        }
        Ok(Mirror {
            path: path.to_path_buf(),
            url: url.to_string(),
            auth: Default::default(),
            signer: None,
        })
    }

    /// Authenticates to an `https://` or `ssh://` remote with `auth`.
    pub fn with_auth(self, auth: GitAuth) -> Self {
        Mirror {
            auth: std::sync::Arc::new(auth),
            ..self
        }
    }

    /// Signs every status commit with `key` (as `git commit -S` with an SSH key does).
    pub fn with_signer(self, key: ssh_key::PrivateKey) -> Self {
        Mirror {
            signer: Some(std::sync::Arc::new(key)),
            ..self
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn repo(&self) -> Result<Repository, GitError> {
        Repository::open_bare(&self.path).map_err(local)
    }

    /// Fetches `branches` into `refs/remotes/origin/*`. An idle fetch (nothing new)
    /// negotiates and transfers no pack: it reports 0 objects and 0 bytes.
    pub fn fetch(&self, branches: &[&str]) -> Result<Fetched, GitError> {
        let repo = self.repo()?;
        let mut remote = repo.remote_anonymous(&self.url).map_err(local)?;
        let refspecs: Vec<String> = branches
            .iter()
            .map(|b| format!("+refs/heads/{b}:refs/remotes/origin/{b}"))
            .collect();
        let refusal = Cell::new(None);
        let mut options = FetchOptions::new();
        options.download_tags(git2::AutotagOption::None);
        options.remote_callbacks(self.auth.callbacks(&self.url, &refusal));
        let started = std::time::Instant::now();
        let result = remote.fetch(&refspecs, Some(&mut options), None);
        crate::metrics::metrics().fetched(started.elapsed());
        drop(options);
        result.map_err(|e| GitError::Unreachable {
            url: self.url.clone(),
            reason: refusal.take().unwrap_or_else(|| e.message().to_string()),
        })?;
        let stats = remote.stats();
        Ok(Fetched {
            objects: stats.received_objects(),
            bytes: stats.received_bytes(),
        })
    }

    /// The commit id at the tip of the fetched `branch`, if the branch exists.
    pub fn tip(&self, branch: &str) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        match repo.refname_to_id(&format!("refs/remotes/origin/{branch}")) {
            Ok(oid) => Ok(Some(oid.to_string())),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(local(e)),
        }
    }

    /// The commit `rev` names: a commit id (full or abbreviated), or a revision on the
    /// fetched branches (`release~2`, `HEAD^` meaning `branch`'s tip).
    pub fn resolve(&self, rev: &str, branch: &str) -> Result<String, GitError> {
        let repo = self.repo()?;
        let rev = rev.trim();
        let candidates = [
            rev.to_string(),
            format!("refs/remotes/origin/{rev}"),
            rev.replacen("HEAD", &format!("refs/remotes/origin/{branch}"), 1),
        ];
        candidates
            .iter()
            .find_map(|c| repo.revparse_single(c).ok()?.peel_to_commit().ok())
            .map(|c| c.id().to_string())
            .ok_or_else(|| GitError::Local {
                reason: format!(
                    "no commit `{rev}` in the fetched branches (give a commit id or e.g. `{branch}~1`)"
                ),
            })
    }

    /// The commit's signature (its `gpgsig` header) and the bytes it signs; `None` and
    /// nothing when the commit is unsigned.
    pub fn signature(&self, commit: &str) -> Result<CommitSignature, GitError> {
        let repo = self.repo()?;
        let oid = Oid::from_str(commit).map_err(local)?;
        match repo.extract_signature(&oid, None) {
            Ok((signature, signed)) => Ok((
                Some(String::from_utf8_lossy(&signature).into_owned()),
                signed.to_vec(),
            )),
            Err(e) if e.code() == ErrorCode::NotFound => Ok((None, Vec::new())),
            Err(e) => Err(local(e)),
        }
    }

    /// The first parent of `commit` (the release before it), if it has one.
    pub fn parent(&self, commit: &str) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        let commit = repo
            .find_commit(Oid::from_str(commit).map_err(local)?)
            .map_err(local)?;
        Ok(commit.parent_ids().next().map(|id| id.to_string()))
    }

    /// When `commit` was committed (its committer time: for a merge, when it was merged).
    pub fn committed(&self, commit: &str) -> Result<chrono::DateTime<chrono::Utc>, GitError> {
        let repo = self.repo()?;
        let oid = git2::Oid::from_str(commit).map_err(local)?;
        let seconds = repo
            .find_commit(oid)
            .map_err(local)?
            .committer()
            .when()
            .seconds();
        Ok(chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default())
    }

    /// The files of `commit`, read from its tree.
    pub fn files(&self, commit: &str) -> Result<TreeFiles, GitError> {
        let repo = self.repo()?;
        let oid = Oid::from_str(commit).map_err(local)?;
        let tree = repo.find_commit(oid).map_err(local)?.tree_id();
        Ok(TreeFiles { repo, tree })
    }

    /// Every node's record at the tip of the status branch, plus the records that could
    /// not be read (path and why): one broken record never hides the others.
    pub fn records(&self, status_branch: &str) -> Result<Records, GitError> {
        let Some(tip) = self.tip(status_branch)? else {
            return Ok((Vec::new(), Vec::new()));
        };
        let files = self.files(&tip)?;
        let (mut records, mut broken) = (Vec::new(), Vec::new());
        for path in files
            .list("nodes")
            .map_err(|reason| GitError::Local { reason })?
        {
            if !path.ends_with(".toml") {
                continue;
            }
            match files.read(&path) {
                Ok(Some(text)) => match StatusRecord::from_toml(&text) {
                    Ok(r) if StatusRecord::path(&r.node) == path => records.push(r),
                    Ok(r) => {
                        broken.push((path, format!("names node `{}`, not its file name", r.node)))
                    }
                    Err(e) => broken.push((path, e)),
                },
                Ok(None) => {}
                Err(e) => broken.push((path, e)),
            }
        }
        Ok((records, broken))
    }

    /// For each record file at the status branch's tip, the commit that last wrote it:
    /// its signature (`None`: unsigned) and the bytes it signs. The branch's history is
    /// walked from the tip, first parents only, at most `limit` commits; a file last
    /// written further back is left out.
    pub fn record_writers(
        &self,
        status_branch: &str,
        limit: usize,
    ) -> Result<BTreeMap<String, CommitSignature>, GitError> {
        let mut writers = BTreeMap::new();
        let Some(tip) = self.tip(status_branch)? else {
            return Ok(writers);
        };
        let repo = self.repo()?;
        let records_of = |commit: &git2::Commit| -> BTreeMap<String, Oid> {
            let Ok(entry) = commit.tree().and_then(|t| t.get_path(Path::new("nodes"))) else {
                return BTreeMap::new();
            };
            let Ok(tree) = repo.find_tree(entry.id()) else {
                return BTreeMap::new();
            };
            tree.iter()
                .filter_map(|e| e.name().ok().map(|name| (format!("nodes/{name}"), e.id())))
                .collect()
        };
        let mut commit = repo
            .find_commit(Oid::from_str(&tip).map_err(local)?)
            .map_err(local)?;
        let mut pending = records_of(&commit);
        for _ in 0..limit {
            if pending.is_empty() {
                break;
            }
            let parent = commit.parent(0).ok();
            let before = parent.as_ref().map(records_of).unwrap_or_default();
            let written: Vec<String> = pending
                .iter()
                .filter(|(path, id)| before.get(*path) != Some(*id))
                .map(|(path, _)| path.clone())
                .collect();
            for path in written {
                pending.remove(&path);
                let signed = match repo.extract_signature(&commit.id(), None) {
                    Ok((sig, data)) => (
                        Some(String::from_utf8_lossy(&sig).into_owned()),
                        data.to_vec(),
                    ),
                    Err(_) => (None, Vec::new()),
                };
                writers.insert(path, signed);
            }
            match parent {
                Some(parent) => commit = parent,
                None => break,
            }
        }
        Ok(writers)
    }

    /// Commits `record` as `nodes/<node>.toml` on top of the remote's status branch and
    /// pushes it. The push is a compare-and-swap: when another node moved the branch
    /// first, fetch, re-apply this one file and retry, with jittered backoff. Transient
    /// network errors are retried a few times too; then the remote is unreachable.
    pub fn push_record(
        &self,
        status_branch: &str,
        record: &StatusRecord,
        attempts: u32,
    ) -> Result<Pushed, GitError> {
        let mut transient = 0;
        let unreachable = |reason| GitError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        for attempt in 0..attempts {
            let result = match local_path(&self.url) {
                Some(remote) => self.swap_local(&remote, status_branch, record),
                None => self.swap_remote(status_branch, record),
            };
            match result {
                Ok(pushed) => return Ok(pushed),
                Err(PushError::Race) => crate::metrics::metrics().push_retried(),
                Err(PushError::Refused(reason)) => return Err(GitError::Refused { reason }),
                Err(PushError::Unreachable(reason))
                    if transient >= 4 || attempt + 1 == attempts =>
                {
                    return Err(unreachable(reason));
                }
                Err(PushError::Unreachable(_)) => transient += 1,
            }
            std::thread::sleep(backoff(attempt, record.node.as_str()));
        }
        Err(GitError::Contended { attempts })
    }

    /// Over a Git transport: commit in the mirror on top of the fetched tip, push
    /// without force; the server refuses a non-fast-forward.
    fn swap_remote(&self, branch: &str, record: &StatusRecord) -> Result<Pushed, PushError> {
        let unreachable = |e: GitError| PushError::Unreachable(e.to_string());
        self.fetch(&[branch]).map_err(unreachable)?;
        let repo = self.repo().map_err(unreachable)?;
        let base = repo
            .refname_to_id(&format!("refs/remotes/origin/{branch}"))
            .ok()
            .map(|id| repo.find_commit(id))
            .transpose()
            .map_err(|e| PushError::Unreachable(e.message().to_string()))?;
        let Some(commit) = record_commit(&repo, base.as_ref(), record, self.signer.as_deref())
            .map_err(unreachable)?
        else {
            return Ok(Pushed::Unchanged);
        };
        self.push(&repo, commit, branch)?;
        // Crash-safety tests stop here (`GITFLEET_TEST_FAILPOINT=pushed-<state>`): the
        // record is on the remote, but neither the mirror nor the caller knows it yet.
        crate::failpoint::at(&format!("pushed-{}", record.state));
        repo.reference(
            &format!("refs/remotes/origin/{branch}"),
            commit,
            true,
            "gitfleet: pushed",
        )
        .map_err(|e| PushError::Unreachable(e.message().to_string()))?;
        Ok(Pushed::Committed)
    }

    /// A `file://` remote is a repository on this machine: commit in it directly and move
    /// its branch with libgit2's locked compare-and-swap (its local push transport checks
    /// fast-forward against a stale view and can lose a concurrent update).
    fn swap_local(
        &self,
        remote: &Path,
        branch: &str,
        record: &StatusRecord,
    ) -> Result<Pushed, PushError> {
        let repo = Repository::open(remote)
            .map_err(|e| PushError::Unreachable(e.message().to_string()))?;
        let refname = format!("refs/heads/{branch}");
        let base_id = repo.refname_to_id(&refname).ok();
        let base = base_id
            .map(|id| repo.find_commit(id))
            .transpose()
            .map_err(|e| PushError::Unreachable(e.message().to_string()))?;
        let committed = record_commit(&repo, base.as_ref(), record, self.signer.as_deref())
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        if let Some(commit) = committed {
            let moved = match base_id {
                Some(old) => {
                    repo.reference_matching(&refname, commit, true, old, "gitfleet: status")
                }
                None => repo.reference(&refname, commit, false, "gitfleet: status"),
            };
            if let Err(e) = moved {
                return Err(
                    if is_race(e.message())
                        || e.code() == ErrorCode::Modified
                        || e.code() == ErrorCode::Exists
                        || e.code() == ErrorCode::Locked
                    {
                        PushError::Race
                    } else {
                        PushError::Refused(e.message().to_string())
                    },
                );
            }
        }
        self.fetch(&[branch])
            .map_err(|e| PushError::Unreachable(e.to_string()))?;
        Ok(if committed.is_some() {
            Pushed::Committed
        } else {
            Pushed::Unchanged
        })
    }

    fn push(&self, repo: &Repository, commit: Oid, branch: &str) -> Result<(), PushError> {
        let outgoing = "refs/gitfleet/outgoing";
        repo.reference(outgoing, commit, true, "gitfleet: outgoing status")
            .map_err(|e| PushError::Unreachable(e.message().to_string()))?;
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| PushError::Unreachable(e.message().to_string()))?;
        let mut refusal: Option<String> = None;
        let auth_refusal = Cell::new(None);
        let mut callbacks = self.auth.callbacks(&self.url, &auth_refusal);
        // A refused push returns Ok(()): the refusal only shows here (see CRATES.md).
        callbacks.push_update_reference(|_, status| {
            refusal = status.map(str::to_string);
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let result = remote.push(
            &[format!("{outgoing}:refs/heads/{branch}")],
            Some(&mut options),
        );
        drop(options);
        match (result, refusal) {
            (Err(e), _) if e.code() == ErrorCode::NotFastForward || is_race(e.message()) => {
                Err(PushError::Race)
            }
            (Err(e), _) => Err(PushError::Unreachable(
                auth_refusal
                    .take()
                    .unwrap_or_else(|| e.message().to_string()),
            )),
            (Ok(()), Some(r)) if is_race(&r) => Err(PushError::Race),
            (Ok(()), Some(r)) => Err(PushError::Refused(r)),
            (Ok(()), None) => Ok(()),
        }
    }
}

/// Whether a push failure means another writer moved the branch first (retry), as the
/// transports word it: smart servers ("non-fast-forward", "fetch first", "failed to
/// update ref") and libgit2's local transport (a ref created or changed meanwhile).
fn is_race(message: &str) -> bool {
    [
        "fast-forward",
        "fetch first",
        "failed to update ref",
        "already exists",
        "does not match",
        "has changed",
    ]
    .iter()
    .any(|m| message.contains(m))
}

enum PushError {
    Race,
    Refused(String),
    Unreachable(String),
}

/// The on-disk path of a `file://` URL.
fn local_path(url: &str) -> Option<PathBuf> {
    url.strip_prefix("file://").map(PathBuf::from)
}

/// A commit on top of `base` whose tree has the record at `nodes/<node>.toml`; `None`
/// when `base` already holds exactly that record.
fn record_commit(
    repo: &Repository,
    base: Option<&git2::Commit>,
    record: &StatusRecord,
    signer: Option<&ssh_key::PrivateKey>,
) -> Result<Option<Oid>, GitError> {
    let path = StatusRecord::path(&record.node);
    let blob = repo.blob(record.to_toml().as_bytes()).map_err(local)?;
    let base_tree = base.map(|c| c.tree()).transpose().map_err(local)?;
    if let Some(tree) = &base_tree
        && tree
            .get_path(Path::new(&path))
            .is_ok_and(|e| e.id() == blob)
    {
        return Ok(None);
    }
    let tree_id = with_file(
        repo,
        base_tree.as_ref(),
        "nodes",
        &format!("{}.toml", record.node),
        blob,
    )?;
    let tree = repo.find_tree(tree_id).map_err(local)?;
    let who = Signature::now(
        &format!("gitfleet {}", record.node),
        &format!("{}@gitfleet.invalid", record.node),
    )
    .map_err(local)?;
    let message = format!(
        "{}: {} at {}",
        record.node,
        record.state,
        short(&record.release)
    );
    let parents: Vec<&git2::Commit> = base.into_iter().collect();
    let Some(key) = signer else {
        return repo
            .commit(None, &who, &who, &message, &tree, &parents)
            .map(Some)
            .map_err(local);
    };
    let content = repo
        .commit_create_buffer(&who, &who, &message, &tree, &parents)
        .map_err(local)?;
    let signature =
        crate::trust::sign_commit(key, &content).map_err(|reason| GitError::Local { reason })?;
    let content = std::str::from_utf8(&content).map_err(|e| GitError::Local {
        reason: e.to_string(),
    })?;
    repo.commit_signed(content, &signature, None)
        .map(Some)
        .map_err(local)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Exponential backoff with jitter that differs per node, so racing nodes spread out.
fn backoff(attempt: u32, node: &str) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(node.as_bytes());
    h.write_u32(attempt);
    let base = 20u64 << attempt.min(6);
    Duration::from_millis(base + h.finish() % (base * 2))
}

/// The root tree of `base` with `<dir>/<name>` set to `blob`.
fn with_file(
    repo: &Repository,
    base: Option<&git2::Tree>,
    dir: &str,
    name: &str,
    blob: Oid,
) -> Result<Oid, GitError> {
    let existing_dir = base
        .and_then(|t| t.get_name(dir))
        .filter(|e| e.kind() == Some(ObjectType::Tree))
        .map(|e| repo.find_tree(e.id()))
        .transpose()
        .map_err(local)?;
    let mut sub = repo.treebuilder(existing_dir.as_ref()).map_err(local)?;
    sub.insert(name, blob, 0o100644).map_err(local)?;
    let sub_id = sub.write().map_err(local)?;
    let mut root = repo.treebuilder(base).map_err(local)?;
    root.insert(dir, sub_id, 0o040000).map_err(local)?;
    root.write().map_err(local)
}

/// A commit's files, read through the same trait as a working tree.
pub struct TreeFiles {
    repo: Repository,
    tree: Oid,
}

impl RepoFiles for TreeFiles {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        let tree = self
            .repo
            .find_tree(self.tree)
            .map_err(|e| e.message().to_string())?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.message().to_string()),
        };
        if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
            return Err(format!(
                "{path} is not a regular file (symbolic links are not followed)"
            ));
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(|e| e.message().to_string())?;
        if blob.size() > MAX_FILE_BYTES {
            return Err(format!(
                "{path} is {} bytes; the limit is {MAX_FILE_BYTES}",
                blob.size()
            ));
        }
        String::from_utf8(blob.content().to_vec())
            .map(Some)
            .map_err(|_| format!("{path} is not valid UTF-8"))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        let root = self
            .repo
            .find_tree(self.tree)
            .map_err(|e| e.message().to_string())?;
        let dir = dir.trim_matches('/');
        let tree = if dir.is_empty() {
            root
        } else {
            match root.get_path(Path::new(dir)) {
                Ok(e) if e.kind() == Some(ObjectType::Tree) => self
                    .repo
                    .find_tree(e.id())
                    .map_err(|e| e.message().to_string())?,
                Ok(_) => return Ok(Vec::new()),
                Err(e) if e.code() == ErrorCode::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e.message().to_string()),
            }
        };
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(ObjectType::Blob) && entry.filemode() != 0o120000 {
                let name = entry.name().unwrap_or_default();
                let rel = format!("{parent}{name}");
                out.push(if dir.is_empty() {
                    rel
                } else {
                    format!("{dir}/{rel}")
                });
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(|e| e.message().to_string())?;
        out.sort();
        Ok(out)
    }
}
