//! `gitfleet diff [DIR] --node ID`: what a converge would change on this engine, and why.

use super::{exit, load_node_stack, runtime};
use crate::cli::NodeStackArgs;
use crate::config::fleet::UpdateOrder;
use crate::engine::converge::observe;
use crate::engine::docker::DockerEngine;
use crate::engine::plan::{Change, ServiceAction, plan};

pub fn run(args: &NodeStackArgs) -> u8 {
    match diff(args) {
        Ok(code) | Err(code) => code,
    }
}

fn diff(args: &NodeStackArgs) -> Result<u8, u8> {
    let stack = load_node_stack(args)?;
    let (repo, spec) = (&stack.repo, &stack.spec);
    let project = &spec.project;
    let observed = runtime()?
        .block_on(async {
            let engine = DockerEngine::connect().await?;
            observe(&engine, project).await
        })
        .map_err(|e| {
            eprintln!("error: {e}");
            exit::USAGE
        })?;
    let plan = plan(spec, &observed);
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
                change: Change::Configuration { keys },
                ..
            } if keys.is_empty() => (
                "recreate",
                "configuration changed (config-hash differs)".to_string(),
            ),
            ServiceAction::Recreate {
                change: Change::Configuration { keys },
                ..
            } => ("recreate", format!("{} changed", keys.join(", "))),
            ServiceAction::Recreate {
                change: Change::Upgrade,
                ..
            } => (
                "recreate",
                "made by an older gitfleet, which hashed its configuration another way (with the next release)".to_string(),
            ),
        };
        println!("  {service:width$}  {verb:8}  {why}");
        let start_first = repo.fleet.rollout.order == UpdateOrder::StartFirst;
        if let (true, ServiceAction::Recreate { .. }, Some(blocker)) = (
            start_first,
            action,
            spec.services[service].start_first_blocker(),
        ) {
            println!(
                "  {:width$}  {:8}  stop-first, not start-first: {blocker}",
                "", ""
            );
        }
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
    Ok(if plan.is_noop() {
        exit::OK
    } else {
        exit::FAILED
    })
}
