//! `gitfleet diff [DIR] --node ID`: what a converge would change on this engine, and why.

use super::exit;
use crate::cli::DiffArgs;
use crate::config::fleet::NodeId;
use crate::config::{self, DirFiles, Interpolation};
use crate::engine::converge::observe;
use crate::engine::docker::DockerEngine;
use crate::engine::plan::{Change, ServiceAction, plan};
use crate::engine::spec::{Sources, project_spec};
use crate::state::project_dir;

pub fn run(args: &DiffArgs) -> u8 {
    let vars = Interpolation {
        env: std::env::vars().collect(),
        node: NodeId(args.node.clone()),
        release: "working-tree".to_string(),
    };
    let files = DirFiles(args.dir.clone());
    let repo = match config::load_repo(&files, &vars) {
        Ok(repo) => repo,
        Err(diags) => {
            eprintln!("{diags}");
            return exit::USAGE;
        }
    };
    let project = args
        .project
        .clone()
        .unwrap_or_else(|| repo.fleet.name.clone());
    let host_dir = project_dir(&args.state_dir, &project);
    let sources = Sources {
        files: &files,
        compose_path: &repo.fleet.compose_path,
        host_dir: &host_dir,
    };
    let spec = match project_spec(&project, &repo.compose, &repo.images, &sources) {
        Ok(spec) => spec,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return exit::USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::USAGE;
        }
    };
    let observed = runtime.block_on(async {
        let engine = DockerEngine::connect().await?;
        observe(&engine, &project).await
    });
    let observed = match observed {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let plan = plan(&spec, &observed);
    println!(
        "project `{project}` (image set {}):",
        repo.images.id().short()
    );
    let width = plan
        .actions
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(7);
    for (service, action) in &plan.actions {
        let (verb, why) = match action {
            ServiceAction::Keep { .. } => ("keep", String::new()),
            ServiceAction::Start { .. } => ("start", "container is stopped".to_string()),
            ServiceAction::Create => ("create", "no container yet".to_string()),
            ServiceAction::Recreate {
                change: Change::Image { from, to },
                ..
            } => ("recreate", format!("image {from} -> {to}")),
            ServiceAction::Recreate {
                change: Change::Configuration,
                ..
            } => (
                "recreate",
                "configuration changed (config-hash differs)".to_string(),
            ),
        };
        println!("  {service:width$}  {verb:8}  {why}");
    }
    for orphan in &plan.orphans {
        println!(
            "  {:width$}  {:8}  {} is not in the compose file (removed once the stack is healthy)",
            orphan.service, "remove", orphan.name
        );
    }
    for previous in &plan.previous {
        println!(
            "  {:width$}  {:8}  {} kept from an earlier converge",
            previous.service, "cleanup", previous.name
        );
    }
    if plan.is_noop() {
        exit::OK
    } else {
        exit::FAILED
    }
}
