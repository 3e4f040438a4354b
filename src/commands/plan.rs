//! `gitfleet plan --repo URL --node ID`: the node's batch, what blocks it, its windows.

use chrono::Utc;

use super::agent::timezone;
use super::{exit, open_mirror};
use crate::cli::PlanArgs;
use crate::config::fleet::NodeId;
use crate::config::{Interpolation, load_repo};
use crate::core::batch::Tip;
use crate::core::decide::{Desired, Inputs, LocalFacts, decide};
use crate::core::plan::{node_timezone, plan_node};
use crate::core::window::WindowState;
use crate::git::{Mirror, redact_url};
use crate::state::LocalState;

pub fn run(args: &PlanArgs) -> u8 {
    match plan(args) {
        Ok(code) | Err(code) => code,
    }
}

fn fail(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    exit::USAGE
}

fn plan(args: &PlanArgs) -> Result<u8, u8> {
    let node = NodeId(args.remote.node.clone());
    let fallback_tz = timezone(args.remote.timezone.as_deref()).map_err(fail)?;
    let scratch = std::env::temp_dir().join(format!("gitfleet-plan-{}", std::process::id()));
    let mirror_dir = match &args.state_dir {
        Some(dir) => dir.join("mirror.git"),
        None => scratch.clone(),
    };
    let mirror = open_mirror(&args.remote.repo, &mirror_dir).map_err(fail)?;
    let result = plan_with(args, &node, fallback_tz, &mirror);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn plan_with(
    args: &PlanArgs,
    node: &NodeId,
    fallback_tz: chrono_tz::Tz,
    mirror: &Mirror,
) -> Result<u8, u8> {
    let branch = &args.remote.repo.branch;
    mirror.fetch(&[branch]).map_err(fail)?;
    let tip = mirror.tip(branch).map_err(fail)?.ok_or_else(|| {
        fail(format!(
            "branch `{}` does not exist in {}",
            branch,
            redact_url(&args.remote.repo.url)
        ))
    })?;
    let files = mirror.files(&tip).map_err(fail)?;
    let vars = Interpolation {
        env: std::env::vars().collect(),
        node: node.clone(),
        release: tip.clone(),
    };
    let repo = match load_repo(&files, &vars) {
        Ok(repo) => repo,
        Err(diags) => {
            println!("release {}: rejected\n{diags}", &tip[..12.min(tip.len())]);
            return Ok(exit::REJECTED);
        }
    };
    let fleet = &repo.fleet;
    mirror.fetch(&[&fleet.status_branch]).map_err(fail)?;
    let (records, _) = mirror.records(&fleet.status_branch).map_err(fail)?;
    let local = match &args.state_dir {
        Some(dir) => LocalState::load(dir).map_err(fail)?,
        None => LocalState::default(),
    };
    let tz = node_timezone(fleet, node, fallback_tz);
    let now = Utc::now();
    let plan = plan_node(fleet, node, tz, now, 3);
    let images = repo.images.id();
    let facts = LocalFacts {
        running: local.running.clone(),
        known_good: local.known_good.iter().map(|k| k.images.clone()).collect(),
        gate: None,
    };
    let decision = decide(&Inputs {
        desired: Desired::Admitted {
            release: Tip {
                commit: &tip,
                committed: mirror.committed(&tip).map_err(fail)?,
            },
            fleet,
            images: &images,
        },
        node,
        timezone: tz,
        records: &records,
        local: &facts,
        now,
    });
    let both = |t: chrono::DateTime<Utc>| {
        format!(
            "{} ({})",
            t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M %Z"),
            t.format("%a %H:%M UTC")
        )
    };
    println!("node {node} (timezone {tz})");
    println!(
        "  release   {} (image set {})",
        &tip[..12.min(tip.len())],
        images.short()
    );
    println!(
        "  batch     {} ({} of {})",
        plan.batch,
        plan.batch_index + 1,
        fleet.batches.len()
    );
    let window_now = match plan.window_now {
        WindowState::Open { closes_at: None } => "open (always)".to_string(),
        WindowState::Open { closes_at: Some(t) } => format!("open until {}", both(t)),
        WindowState::Closed { opens_at: Some(t) } => format!("closed; opens {}", both(t)),
        WindowState::Closed { opens_at: None } => "closed; never opens again".to_string(),
    };
    println!("  window    {}: {window_now}", plan.window);
    for o in &plan.next {
        println!("            {} .. {}", both(o.start), both(o.end));
    }
    if plan.held {
        println!("  held      yes (hold = true)");
    }
    println!(
        "  decision  {}: {}",
        decision.verdict.state(),
        decision.verdict.message(tz)
    );
    Ok(exit::OK)
}
