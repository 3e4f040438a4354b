//! One module per subcommand; each returns the process exit code.

pub mod agent;
pub mod apply;
pub mod check;
pub mod diff;
pub mod plan;

use std::path::PathBuf;

use crate::cli::{NodeStackArgs, RepoArgs};

use crate::config::fleet::NodeId;
use crate::config::{self, DirFiles, FleetRepo, Interpolation};
use crate::engine::spec::{ProjectSpec, Sources, project_spec};
use crate::git::{GitAuth, Mirror, Secret};
use crate::state::project_dir;

/// Exit codes scripts can rely on.
pub mod exit {
    /// Success: valid, healthy, or waiting by the rules.
    pub const OK: u8 = 0;
    /// The input is invalid (check), changes are pending (diff), or the node failed /
    /// rolled back (apply, agent).
    pub const FAILED: u8 = 1;
    /// Usage or configuration error (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The release was rejected (agent --once).
    pub const REJECTED: u8 = 3;
}

/// A node's stack read from a fleet repository working tree: the validated repository
/// and the engine spec, with its files where the agent keeps them.
pub(crate) struct NodeStack {
    pub files: DirFiles,
    pub repo: FleetRepo,
    pub spec: ProjectSpec,
    pub host_dir: PathBuf,
}

/// Loads the working tree as the node would; prints what is wrong and returns the exit
/// code otherwise.
pub(crate) fn load_node_stack(args: &NodeStackArgs) -> Result<NodeStack, u8> {
    let NodeStackArgs {
        dir,
        node,
        project,
        state_dir,
    } = args;
    let vars = Interpolation {
        env: std::env::vars().collect(),
        node: NodeId(node.clone()),
        release: "working-tree".to_string(),
    };
    let files = DirFiles(dir.clone());
    let repo = config::load_repo(&files, &vars).map_err(|diags| {
        eprintln!("{diags}");
        exit::USAGE
    })?;
    let project = project.clone().unwrap_or_else(|| repo.fleet.name.clone());
    let host_dir = project_dir(state_dir, &project);
    let sources = Sources {
        files: &files,
        compose_path: &repo.fleet.compose_path,
        host_dir: &host_dir,
    };
    let spec = project_spec(&project, &repo.compose, &repo.images, &sources).map_err(|errors| {
        for e in errors {
            eprintln!("error: {e}");
        }
        exit::USAGE
    })?;
    Ok(NodeStack {
        files,
        repo,
        spec,
        host_dir,
    })
}

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

/// A single-threaded runtime for a command's engine calls.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::USAGE
        })
}
