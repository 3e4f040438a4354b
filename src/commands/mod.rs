//! One module per subcommand; each returns the process exit code.

pub mod agent;
pub mod agent_config;
pub mod apply;
pub mod check;
pub mod diff;
pub mod pin;
pub mod plan;
pub(crate) mod remote;
pub mod status;

use std::path::PathBuf;

use crate::cli::NodeStackArgs;

use crate::config::fleet::NodeId;
use crate::config::{self, DirFiles, FleetRepo, Interpolation};
use crate::engine::spec::{ProjectSpec, project_spec};
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
    /// A transient error (registry or engine unreachable) kept the node from the
    /// release; the running containers were kept and a later run tries again (agent
    /// --once).
    pub const RETRYING: u8 = 4;
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
        fleet_view: false,
    };
    let files = DirFiles(dir.clone());
    let repo = config::load_repo(&files, &vars).map_err(|diags| {
        eprintln!("{diags}");
        exit::USAGE
    })?;
    let project = project.clone().unwrap_or_else(|| repo.fleet.name.clone());
    let host_dir = project_dir(state_dir, &project);
    let key =
        crate::state::digest_key(state_dir, repo.compose.has_secret_content()).map_err(|e| {
            eprintln!("error: the state directory's secret digest key: {e}");
            exit::USAGE
        })?;
    let spec =
        project_spec(&project, &repo.compose, &repo.images, &host_dir, &key).map_err(|errors| {
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
