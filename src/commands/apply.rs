//! `gitfleet apply [DIR] --node ID`: converge this node's stack to a fleet repository
//! working tree now, hold it to the health gate, and restore the previous containers if
//! the gate fails. No Git, no batches, no windows: the agent adds those.

use super::{exit, load_node_stack, runtime};
use crate::agent::SystemClock;
use crate::agent::gate::apply;
use crate::cli::NodeStackArgs;
use crate::engine::apply::{Outcome, Release};
use crate::engine::docker::DockerEngine;
use crate::state::materialize;

pub fn run(args: &NodeStackArgs) -> u8 {
    match run_apply(args) {
        Ok(code) | Err(code) => code,
    }
}

fn run_apply(args: &NodeStackArgs) -> Result<u8, u8> {
    let stack = load_node_stack(args)?;
    materialize(
        &stack.files,
        &stack.repo.fleet.compose_path,
        &stack.host_dir,
    )
    .map_err(|e| {
        eprintln!("error: {e}");
        exit::USAGE
    })?;
    let release = Release::of(&stack.spec, &stack.repo);
    let outcome = runtime()?.block_on(async {
        let engine = DockerEngine::connect().await?;
        apply(&engine, &release, &SystemClock, None, &mut ()).await
    });
    let project = &stack.spec.project;
    let images = stack.repo.images.id();
    Ok(match outcome {
        Ok(Outcome::Healthy { changed: false }) => {
            println!(
                "{project}: already at image set {}; nothing changed",
                images.short()
            );
            exit::OK
        }
        Ok(Outcome::Healthy { changed: true }) => {
            println!("{project}: healthy at image set {}", images.short());
            exit::OK
        }
        Ok(Outcome::Restored { failure }) => {
            eprintln!("{project}: {failure}; previous containers restored");
            exit::FAILED
        }
        Err(e) => {
            eprintln!("error: {project}: {e}");
            exit::FAILED
        }
    })
}
