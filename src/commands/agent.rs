//! `gitfleet agent`: validated settings, the state-directory lock, signals, exit codes.

use std::sync::Arc;

use chrono_tz::Tz;

use super::remote::git_auth;
use super::{exit, runtime};
use crate::agent::{Agent, Settings};
use crate::cli::AgentArgs;
use crate::config::duration::{DURATION_HELP, parse_duration};
use crate::config::fleet::NodeId;
use crate::config::fleet_toml::is_node_id;
use crate::core::status::NodeState;
use crate::listener;
use crate::state::StateLock;

pub fn run(args: &AgentArgs) -> u8 {
    match run_agent(args) {
        Ok(code) | Err(code) => code,
    }
}

fn usage(message: String) -> u8 {
    eprintln!("error: {message}");
    exit::USAGE
}

/// The node's timezone: `--timezone`, else `TZ`, else the host's (`/etc/timezone`,
/// `/etc/localtime`), else UTC.
pub(crate) fn timezone(flag: Option<&str>) -> Result<Tz, String> {
    let parse = |name: &str, from: &str| {
        name.trim().parse::<Tz>().map_err(|_| {
            format!(
                "{from}: unknown timezone `{}`; use an IANA name such as Europe/Berlin",
                name.trim()
            )
        })
    };
    if let Some(name) = flag {
        return parse(name, "--timezone");
    }
    if let Ok(name) = std::env::var("TZ")
        && !name.is_empty()
    {
        return parse(name.trim_start_matches(':'), "TZ");
    }
    if let Ok(name) = std::fs::read_to_string("/etc/timezone")
        && let Ok(tz) = name.trim().parse::<Tz>()
    {
        return Ok(tz);
    }
    if let Ok(link) = std::fs::read_link("/etc/localtime")
        && let Some(name) = link.to_string_lossy().split("zoneinfo/").nth(1)
        && let Ok(tz) = name.parse::<Tz>()
    {
        return Ok(tz);
    }
    Ok(chrono_tz::UTC)
}

fn run_agent(args: &AgentArgs) -> Result<u8, u8> {
    if args.print_config {
        print!("{}", super::agent_config::print(args));
        return Ok(exit::OK);
    }
    if !is_node_id(&args.remote.node) {
        return Err(usage(format!(
            "--node `{}` is not a valid node id (letters, digits, `-`, `_`, `.`)",
            args.remote.node
        )));
    }
    let interval = parse_duration(&args.interval)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| usage(format!("--interval `{}`: {DURATION_HELP}", args.interval)))?;
    let timezone = timezone(args.remote.timezone.as_deref()).map_err(usage)?;
    let auth = git_auth(&args.remote.repo).map_err(usage)?;
    let pinned_signers = match &args.allowed_signers {
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("--allowed-signers {shown}: {e}")))?;
            crate::trust::AllowedSigners::parse(&text, &shown)
                .map_err(|e| usage(format!("--allowed-signers: {e}")))?;
            Some((shown, text))
        }
        None => None,
    };
    let node_key = args
        .node_key
        .as_deref()
        .map(crate::trust::NodeKey::load)
        .transpose()
        .map_err(|e| usage(format!("--node-key {e}")))?;
    let _lock = StateLock::acquire(&args.state_dir).map_err(usage)?;
    let settings = Settings {
        repo_url: args.remote.repo.url.clone(),
        auth,
        node: NodeId(args.remote.node.clone()),
        branch: args.remote.repo.branch.clone(),
        state_dir: args.state_dir.clone(),
        project: args.project.clone(),
        timezone,
        interval,
        pinned_signers,
        node_key,
    };
    let secret = match &args.webhook_secret_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("--webhook-secret-file {}: {e}", path.display())))?;
            let secret = text.trim().as_bytes().to_vec();
            if secret.is_empty() {
                return Err(usage(format!(
                    "--webhook-secret-file {} is empty",
                    path.display()
                )));
            }
            Some(Arc::new(secret))
        }
        None => None,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let agent = Agent::new(settings).await.map_err(usage)?;
        if !args.once {
            if args.listen != "none" {
                let listener = tokio::net::TcpListener::bind(&args.listen)
                    .await
                    .map_err(|e| usage(format!("--listen {}: {e} (another agent there? give each its own --listen, or `none`)", args.listen)))?;
                let endpoints = listener::Endpoints {
                    secret,
                    trigger: agent.trigger(),
                    ready: agent.readiness(),
                };
                tokio::spawn(listener::serve(listener, endpoints));
            }
            agent.run(shutdown_signal()).await;
            agent.settle().await;
            return Ok(exit::OK);
        }
        let result = agent.reconcile().await;
        agent.settle().await;
        match result {
            Ok(r) => {
                println!("{}: {} ({})", args.remote.node, r.state, r.message);
                Ok(match r.state {
                    NodeState::Failed | NodeState::RolledBack => exit::FAILED,
                    NodeState::Rejected => exit::REJECTED,
                    NodeState::Retrying => exit::RETRYING,
                    _ => exit::OK,
                })
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(exit::FAILED)
            }
        }
    })
}

/// SIGTERM or SIGINT: the agent finishes the step in flight, then exits 0.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
