//! `gitfleet check [DIR]`: validate a fleet repository working tree, for PR CI.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::exit;
use crate::cli::{CheckArgs, Format};
use crate::config::diagnostics::{Diagnostic, Diagnostics};
use crate::config::fleet::NodeId;
use crate::config::{self, DirFiles, FleetRepo, Interpolation};
use crate::engine::spec::{project_spec, start_order};
use crate::secret::DigestKey;
use crate::state::{DEFAULT_STATE_DIR, project_dir};

/// What `--format json` prints: stable keys, documented in docs/check.md.
#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    errors: Vec<&'a Diagnostic>,
    fleet: Option<FleetFacts<'a>>,
}

#[derive(Serialize)]
struct FleetFacts<'a> {
    name: &'a str,
    compose: &'a str,
    policy: Option<&'a str>,
    images: String,
    services: Vec<(&'a str, String)>,
    batches: Vec<BatchFacts<'a>>,
}

#[derive(Serialize)]
struct BatchFacts<'a> {
    name: &'a str,
    window: &'a str,
    nodes: Vec<String>,
}

fn facts(repo: &FleetRepo) -> FleetFacts<'_> {
    FleetFacts {
        name: &repo.fleet.name,
        compose: &repo.fleet.compose_path,
        policy: repo.fleet.policy_path.as_deref(),
        images: repo.images.id().0,
        services: repo
            .images
            .0
            .iter()
            .map(|(s, i)| (s.as_str(), i.to_string()))
            .collect(),
        batches: repo
            .fleet
            .batches
            .iter()
            .map(|b| BatchFacts {
                name: &b.name,
                window: b.window.name(),
                nodes: b.patterns.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

/// What a node does next with a loaded release, pure: translate it and order its
/// start. The typed model makes both infallible for what loaded; they run here as the
/// backstop, so a gap in the model shows in the pull request, not on every node.
fn translate(repo: FleetRepo) -> Result<FleetRepo, Diagnostics> {
    let host_dir = project_dir(Path::new(DEFAULT_STATE_DIR), &repo.fleet.name);
    let spec = project_spec(
        &repo.fleet.name,
        &repo.compose,
        &repo.images,
        &host_dir,
        &DigestKey::unused(),
    );
    let problems: Vec<String> = match spec {
        Ok(spec) => start_order(&spec).err().into_iter().collect(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    if problems.is_empty() {
        return Ok(repo);
    }
    let mut diags = Diagnostics::default();
    for problem in problems {
        diags.push(
            Diagnostic::new(&repo.fleet.compose_path, "services", problem)
                .help("every node would refuse this release; fix the service named"),
        );
    }
    Err(diags)
}

pub fn run(args: &CheckArgs) -> u8 {
    if !args.dir.is_dir() {
        eprintln!(
            "error: {} is not a directory\n  = help: pass the root of a fleet repository (where fleet.toml is)",
            args.dir.display()
        );
        return exit::USAGE;
    }
    let vars = Interpolation {
        env: std::env::vars().collect(),
        node: NodeId(args.node.clone()),
        release: "working-tree".to_string(),
        fleet_view: false,
    };
    let files = DirFiles(args.dir.clone());
    let result = config::load_repo(&files, &vars).and_then(translate);
    let mut out = std::io::stdout().lock();
    let written = match (&result, args.format) {
        (Ok(repo), Format::Human) => writeln!(
            out,
            "ok: fleet `{}` is valid: {} service(s) pinned (image set {}), {} batch(es){}",
            repo.fleet.name,
            repo.images.0.len(),
            repo.images.id().short(),
            repo.fleet.batches.len(),
            repo.fleet
                .policy_path
                .as_ref()
                .map(|p| format!(", admitted by {p}"))
                .unwrap_or_default()
        ),
        (Err(diags), Format::Human) => {
            eprintln!("{diags}");
            Ok(())
        }
        (_, Format::Json) => {
            let report = Report {
                valid: result.is_ok(),
                errors: result
                    .as_ref()
                    .err()
                    .map(|d| d.iter().collect())
                    .unwrap_or_default(),
                fleet: result.as_ref().ok().map(facts),
            };
            serde_json::to_writer_pretty(&mut out, &report)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out))
        }
    };
    match (written, result) {
        (Err(e), _) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write output: {e}");
            exit::FAILED
        }
        (_, Ok(_)) => exit::OK,
        (_, Err(_)) => exit::FAILED,
    }
}
