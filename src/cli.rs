//! The command line: clap definitions only. Validation of what the flags mean happens in
//! the commands; parsing errors (exit code 2) are clap's.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Keep a fleet of Docker Compose nodes at the image digests pinned in Git.
///
/// Operators merge fleet.toml changes to the release branch; every node's agent rolls the
/// change out in health-gated batches inside its own maintenance window and reports to
/// the status branch.
#[derive(Debug, Parser)]
#[command(name = "gitfleet", version, propagate_version = true)]
pub struct Cli {
    /// How diagnostics are written to stderr: `text` for people, `json` (one object a
    /// line) for log collectors. User-facing output on stdout is unaffected.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "GITFLEET_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Least severe diagnostics written: error, warn, info, debug or trace.
    #[arg(
        long,
        global = true,
        env = "GITFLEET_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: tracing::Level,

    #[command(subcommand)]
    pub command: Command,
}

/// Shape of the diagnostics on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a fleet repository working tree: fleet.toml, the compose file, the policy.
    ///
    /// Every problem is reported at once, with file, key, line and a fix. Exit codes:
    /// 0 valid, 1 invalid, 2 usage error. Run it in pull-request CI.
    Check(CheckArgs),

    /// Show which services of this node's stack a converge would recreate, and why.
    ///
    /// Read-only: compares the fleet repository working tree with the containers on this
    /// engine (found as the Docker CLI finds it: DOCKER_HOST, else the default socket).
    /// Exit codes: 0 nothing would change, 1 changes would be made, 2 error.
    Diff(NodeStackArgs),

    /// Converge this node's stack to a fleet repository working tree now, health-gated.
    ///
    /// Pulls and verifies every image first, recreates only what changed, holds the
    /// result to the health gate, and restores the previous containers if it fails.
    /// Exit codes: 0 healthy, 1 gate failed (restored) or engine error, 2 usage or
    /// configuration error.
    Apply(NodeStackArgs),

    /// Run this node's agent: follow the release branch, roll out in turn, report status.
    ///
    /// Each reconcile fetches the release branch and the status branch, decides (batch,
    /// window, slot, gate, halt, rollback), converges the stack when it is this node's
    /// turn, and commits its record to the status branch. With --once, exit codes:
    /// 0 healthy or waiting by the rules, 1 failed or rolled back, 2 usage or
    /// configuration error, 3 rejected release.
    Agent(AgentArgs),

    /// When the release reaches whom: with --node, what that node would do now and its
    /// next windows; without, the fleet's timeline, batch by batch, in each node's time
    /// and in UTC.
    Plan(PlanArgs),

    /// Print a shell completion script: `gitfleet completions bash > /etc/bash_completion.d/gitfleet`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Where the release stands across the fleet, from the status branch alone.
    ///
    /// A summary (release, healthy/total, failed, halted, the batch in progress), then
    /// every batch with its nodes. Exit codes: 0 no node failed and the rollout is not
    /// halted, 1 it is halted or a node failed, 2 usage error or unreachable repository.
    Status(StatusArgs),

    /// Resolve the tags in fleet.toml's [images] (and unpinned compose images) to the
    /// digests their registries serve, and rewrite fleet.toml in place, comments kept.
    ///
    /// With --update, images with a `follow` policy move to the newest tag it allows.
    /// Exit codes: 0 done (or nothing to do), 1 --check found something unpinned or
    /// stale, 2 error (bad fleet.toml, unreachable registry, unknown tag): nothing written.
    Pin(PinArgs),
}

#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// The fleet repository's root (where fleet.toml is).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Also move images with a `follow` policy to the newest tag the policy allows.
    #[arg(long)]
    pub update: bool,

    /// Change nothing; exit 1 when something is unpinned or stale (for CI).
    #[arg(long, conflicts_with_all = ["dry_run", "commit"])]
    pub check: bool,

    /// Change nothing; print the diff fleet.toml would get.
    #[arg(long, conflicts_with = "commit")]
    pub dry_run: bool,

    /// Commit the rewrite on a new branch (checked out) for review; see --branch.
    #[arg(long)]
    pub commit: bool,

    /// The new branch for --commit; default `gitfleet/pin-<first 12 hex of the new
    /// fleet.toml's sha256>`, so the same proposal gets the same branch.
    #[arg(long, value_name = "NAME", requires = "commit")]
    pub branch: Option<String>,

    /// A registry host (host:port) spoken to over plain HTTP; loopback ones always are.
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
}

/// Which fleet repository and branch, and how to authenticate to it.
#[derive(Debug, clap::Args)]
pub struct RepoArgs {
    /// The fleet repository: file://, git://, https:// or ssh:// (also user@host:path).
    #[arg(long = "repo", value_name = "URL", env = "GITFLEET_REPO")]
    pub url: String,

    /// The branch nodes follow.
    #[arg(long, default_value = "release", env = "GITFLEET_BRANCH")]
    pub branch: String,

    /// HTTPS user name; default: the URL's, else `x-access-token`.
    #[arg(long, value_name = "NAME", env = "GITFLEET_GIT_USERNAME")]
    pub git_username: Option<String>,

    /// File holding the HTTPS password or access token (or set GITFLEET_GIT_PASSWORD).
    #[arg(long, value_name = "FILE", env = "GITFLEET_GIT_PASSWORD_FILE")]
    pub git_password_file: Option<PathBuf>,

    /// CA certificates (PEM) trusted for an https:// remote, besides the system's.
    #[arg(long, value_name = "FILE", env = "GITFLEET_GIT_CA_FILE")]
    pub git_ca_file: Option<PathBuf>,

    /// SSH private key for an ssh:// remote (OpenSSH format, no passphrase).
    #[arg(long, value_name = "FILE", env = "GITFLEET_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,

    /// known_hosts file the SSH server's key must be listed in; default:
    /// ~/.ssh/known_hosts, then /etc/ssh/ssh_known_hosts.
    #[arg(long, value_name = "FILE", env = "GITFLEET_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
}

/// Which fleet repository, branch and node, shared by `agent` and `plan`.
#[derive(Debug, clap::Args)]
pub struct NodeRemoteArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// The node's id.
    #[arg(long, value_name = "ID", env = "GITFLEET_NODE")]
    pub node: String,

    /// The node's IANA timezone when fleet.toml gives none; default: TZ, else the host's.
    #[arg(long, value_name = "TZ", env = "GITFLEET_TIMEZONE")]
    pub timezone: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// The node to plan for; without it, the whole fleet's timeline.
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,

    /// The node's IANA timezone when fleet.toml gives none; default: TZ, else the host's.
    #[arg(long, value_name = "TZ", env = "GITFLEET_TIMEZONE")]
    pub timezone: Option<String>,

    /// For the fleet timeline: how long a node takes to converge, before `monitor`.
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    pub converge_time: String,

    /// A state directory to read the node's running and known-good image sets from
    /// (on the node itself); without it the node is assumed to run nothing yet.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub remote: NodeRemoteArgs,

    /// One full reconcile (including the health gate), then exit.
    #[arg(long)]
    pub once: bool,

    /// Where the mirror, the node's state and the outbox live.
    #[arg(long, value_name = "DIR", default_value = crate::state::DEFAULT_STATE_DIR, env = "GITFLEET_STATE_DIR")]
    pub state_dir: PathBuf,

    /// How often to poll the repository (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", env = "GITFLEET_INTERVAL")]
    pub interval: String,

    /// Compose project name; default: fleet.name.
    #[arg(long, value_name = "NAME", env = "GITFLEET_PROJECT")]
    pub project: Option<String>,

    /// Address of the HTTP listener (POST /hook, GET /healthz); `none` turns it off.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9469",
        env = "GITFLEET_LISTEN"
    )]
    pub listen: String,

    /// File holding the webhook secret; without it every POST /hook is refused.
    #[arg(long, value_name = "FILE", env = "GITFLEET_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// The node's SSH private key (OpenSSH format, unencrypted): its status commits are
    /// signed with it, and `status` checks them against `key` under `[nodes.<id>]`.
    #[arg(long, value_name = "FILE", env = "GITFLEET_NODE_KEY")]
    pub node_key: Option<PathBuf>,

    /// An allowed_signers file (ssh-keygen format) kept on the node: every release tip
    /// must then be signed by one of its keys, whatever the repository's policy says.
    #[arg(long, value_name = "FILE", env = "GITFLEET_ALLOWED_SIGNERS")]
    pub allowed_signers: Option<PathBuf>,

    /// Configuration file (TOML; keys are the flags' names with `_`, e.g.
    /// `state_dir = "/srv/gitfleet"`). Flags and GITFLEET_* variables override it.
    /// Default: /etc/gitfleet/agent.toml when it exists.
    #[arg(long, value_name = "FILE", env = "GITFLEET_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// `table` for people (coloured on a terminal unless NO_COLOR is set), `json` for
    /// tools (schema in docs/status.md; one object a line with --watch).
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,

    /// Show progress on this release instead of the branch's tip: a commit id or a
    /// revision such as `release~1`.
    #[arg(long, value_name = "REV")]
    pub release: Option<String>,

    /// Keep watching: fetch every --interval and redraw when a branch moves.
    #[arg(long)]
    pub watch: bool,

    /// How often --watch fetches.
    #[arg(long, default_value = "5s")]
    pub interval: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

/// Where a node's stack comes from (a working tree) and where it runs.
#[derive(Debug, clap::Args)]
pub struct NodeStackArgs {
    /// The fleet repository's root (where fleet.toml is).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// This node's id (interpolation, batch).
    #[arg(long, value_name = "ID")]
    pub node: String,

    /// Compose project name on this engine; default: fleet.name.
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,

    /// The agent's state directory (the project's files live under it).
    #[arg(long, value_name = "DIR", default_value = crate::state::DEFAULT_STATE_DIR, env = "GITFLEET_STATE_DIR")]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The fleet repository's root (where fleet.toml is).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Output for people (`human`) or for tools (`json`, on stdout).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Interpolate the compose file as this node would (`GITFLEET_NODE`, `GITFLEET_BATCH`).
    #[arg(long, value_name = "ID", default_value = "check")]
    pub node: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}
