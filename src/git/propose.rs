//! A change proposed for review: one commit of one file on a new branch of a working
//! tree's repository, checked out, so a CI job can push it and open the pull request.

use std::path::Path;

use git2::{BranchType, Index, IndexEntry, IndexTime, Repository, Signature};

/// Commits `contents` as `file` (a path inside the repository at or above `dir`) on a new
/// branch `branch` from HEAD, and checks the branch out; returns the commit id. Anything
/// else staged or changed in the working tree stays out of the commit.
pub fn commit_file_on_new_branch(
    dir: &Path,
    file: &Path,
    contents: &[u8],
    branch: &str,
    message: &str,
) -> Result<String, String> {
    let repo = Repository::discover(dir).map_err(|e| {
        format!(
            "{} is not in a Git repository: {}",
            dir.display(),
            e.message()
        )
    })?;
    let workdir = repo
        .workdir()
        .ok_or("the repository is bare; run pin in a working tree")?;
    let full =
        std::fs::canonicalize(dir.join(file)).map_err(|e| format!("{}: {e}", file.display()))?;
    let workdir =
        std::fs::canonicalize(workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
    let relative = full.strip_prefix(&workdir).map_err(|_| {
        format!(
            "{} is outside the repository {}",
            full.display(),
            workdir.display()
        )
    })?;
    let relative = relative.to_str().ok_or("the file's path is not UTF-8")?;
    let head = repo.head().and_then(|h| h.peel_to_commit()).map_err(|e| {
        format!(
            "the repository has no commit to branch from: {}",
            e.message()
        )
    })?;
    if repo.find_branch(branch, BranchType::Local).is_ok() {
        return Err(format!(
            "branch `{branch}` exists already (this change was proposed before?); delete it or pass --branch NAME"
        ));
    }
    let git = |e: git2::Error| e.message().to_string();
    // The commit's tree: HEAD's with only this file replaced.
    let mut index = Index::new().map_err(git)?;
    index.read_tree(&head.tree().map_err(git)?).map_err(git)?;
    let entry = IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: contents.len() as u32,
        id: repo.blob(contents).map_err(git)?,
        flags: 0,
        flags_extended: 0,
        path: relative.as_bytes().to_vec(),
    };
    index.add(&entry).map_err(git)?;
    let tree = repo
        .find_tree(index.write_tree_to(&repo).map_err(git)?)
        .map_err(git)?;
    let signature = repo
        .signature()
        .or_else(|_| Signature::now("gitfleet pin", "gitfleet@localhost"))
        .map_err(git)?;
    let refname = format!("refs/heads/{branch}");
    let id = repo
        .commit(
            Some(&refname),
            &signature,
            &signature,
            message,
            &tree,
            &[&head],
        )
        .map_err(|e| format!("cannot commit on `{branch}`: {}", e.message()))?;
    repo.set_head(&refname).map_err(git)?;
    // The working tree already holds the file; the real index learns it too, so
    // `git status` shows the branch clean for it.
    let mut real = repo.index().map_err(git)?;
    real.add_path(Path::new(relative)).map_err(git)?;
    real.write().map_err(git)?;
    Ok(id.to_string())
}
