//! `gitfleet plan --repo URL [--node ID]`: with a node, its batch, what blocks it and its
//! windows; without, the fleet's timeline for the release.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::agent::timezone;
use super::exit;
use super::remote::{FleetRelease, ScratchMirror, now, read_records, read_release};
use crate::cli::PlanArgs;
use crate::config::FleetRepo;
use crate::config::duration::{DURATION_HELP, format_duration, parse_duration};
use crate::config::fleet::{ImageSet, NodeId};
use crate::core::batch::Tip;
use crate::core::decide::{Desired, Inputs, decide};
use crate::core::plan::{Eta, fleet_timeline, node_timezone, plan_node};
use crate::core::status::StatusRecord;
use crate::core::window::WindowState;
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
    let fallback_tz = timezone(args.timezone.as_deref()).map_err(fail)?;
    let converge = parse_duration(&args.converge_time).map_err(|_| {
        fail(format!(
            "--converge-time `{}`: {DURATION_HELP}",
            args.converge_time
        ))
    })?;
    let node = args.node.clone().map(NodeId);
    let scratch = ScratchMirror::open(&args.repo, args.state_dir.as_deref()).map_err(fail)?;
    let mirror = &scratch.mirror;
    let release = read_release(mirror, &args.repo, None, node.as_ref()).map_err(fail)?;
    let repo = match &release.repo {
        Ok(repo) => repo,
        Err(diags) => {
            println!("release {}: rejected\n{diags}", release.short());
            return Ok(exit::REJECTED);
        }
    };
    let (records, _) = read_records(mirror, &repo.fleet.status_branch).map_err(fail)?;
    let now = now().map_err(fail)?;
    match &node {
        Some(node) => {
            let local = match &args.state_dir {
                Some(dir) => LocalState::load(dir).map_err(fail)?,
                None => LocalState::default(),
            };
            let tz = node_timezone(&repo.fleet, node, fallback_tz);
            print_node_plan(&release, repo, &records, &local, node, tz, now);
            // What the node would change: from what it runs (with --state-dir), else
            // from the release before this one.
            let base = match &local.running_release {
                Some(running) => Some((running.clone(), "what this node runs")),
                None => mirror
                    .parent(&release.commit)
                    .map_err(fail)?
                    .map(|p| (p, "the release before")),
            };
            if let Some((commit, what)) = base
                && let Ok(before) = read_release(mirror, &args.repo, Some(&commit), Some(node))
                && let Ok(before_repo) = &before.repo
            {
                print_changes(&before, what, &before_repo.images, &repo.images);
            }
        }
        None => print_fleet_timeline(&release, repo, &records, now, converge),
    }
    Ok(exit::OK)
}

/// `t` in `tz` and, unless `tz` is UTC, in UTC.
fn both(t: DateTime<Utc>, tz: Tz) -> String {
    let local = t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M %Z");
    if tz == chrono_tz::UTC {
        local.to_string()
    } else {
        format!("{local} ({})", t.format("%a %H:%M UTC"))
    }
}

fn print_node_plan(
    release: &FleetRelease,
    repo: &FleetRepo,
    records: &[StatusRecord],
    local: &LocalState,
    node: &NodeId,
    tz: Tz,
    now: DateTime<Utc>,
) {
    let fleet = &repo.fleet;
    let plan = plan_node(fleet, node, tz, now, 3);
    let images = repo.images.id();
    let facts = local.facts(&fleet.rollout);
    let decision = decide(&Inputs {
        desired: Desired::Admitted {
            release: Tip {
                commit: &release.commit,
                committed: release.committed,
            },
            fleet,
            images: &images,
        },
        node,
        timezone: tz,
        records,
        local: &facts,
        now,
    });
    println!("node {node} (timezone {tz})");
    println!(
        "  release   {} (image set {})",
        release.short(),
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
        WindowState::Open { closes_at: Some(t) } => format!("open until {}", both(t, tz)),
        WindowState::Closed { opens_at: Some(t) } => format!("closed; opens {}", both(t, tz)),
        WindowState::Closed { opens_at: None } => "closed; never opens again".to_string(),
    };
    println!("  window    {}: {window_now}", plan.window);
    for o in &plan.next {
        println!("            {} .. {}", both(o.start, tz), both(o.end, tz));
    }
    if plan.held {
        println!("  held      yes (hold = true)");
    }
    println!(
        "  decision  {}: {}",
        decision.verdict.state(),
        decision.verdict.message(tz)
    );
}

/// The images a converge would change, service by service.
fn print_changes(before: &FleetRelease, what: &str, old: &ImageSet, new: &ImageSet) {
    let changes = new.changes_from(old);
    println!("  changes   from {} ({what}):", before.short());
    if changes.is_empty() {
        println!("            none (the same image set)");
    }
    let width = changes.iter().map(|(s, _, _)| s.len()).max().unwrap_or(0);
    for (service, from, to) in changes {
        let show = |i: Option<&crate::config::fleet::PinnedImage>| {
            i.map_or("(none)".to_string(), |i| i.short())
        };
        println!(
            "            {service:<width$}  {} -> {}",
            show(from),
            show(to)
        );
    }
}

fn print_fleet_timeline(
    release: &FleetRelease,
    repo: &FleetRepo,
    records: &[StatusRecord],
    now: DateTime<Utc>,
    converge: std::time::Duration,
) {
    let fleet = &repo.fleet;
    let images = repo.images.id();
    let tip = Tip {
        commit: &release.commit,
        committed: release.committed,
    };
    let timeline = fleet_timeline(fleet, records, &tip, &images, now, converge);
    println!(
        "release {} (image set {}), now {}",
        release.short(),
        images.short(),
        now.format("%a %Y-%m-%d %H:%M UTC")
    );
    println!(
        "assuming {} to converge + {} monitor per node, {} bake between batches",
        format_duration(converge),
        format_duration(fleet.rollout.monitor),
        format_duration(fleet.rollout.bake)
    );
    let width = timeline
        .iter()
        .flat_map(|b| &b.nodes)
        .map(|n| n.node.as_str().len())
        .max()
        .unwrap_or(4);
    for (i, batch) in timeline.iter().enumerate() {
        let when = |t: DateTime<Utc>| t.format("%a %Y-%m-%d %H:%M UTC").to_string();
        let done = match batch.done {
            None => format!("not done: {}", batch.blocked.unwrap_or("unknown")),
            Some(t) if batch.nodes.is_empty() => {
                format!(
                    "open to its nodes from ~{}, each in its own window",
                    when(t)
                )
            }
            Some(t) if t <= now => "done".to_string(),
            Some(t) => format!("done by ~{}", when(t)),
        };
        println!(
            "\n{}. {} (window {}): {done}",
            i + 1,
            batch.name,
            batch.window
        );
        if batch.nodes.is_empty() {
            println!("   no known node (nodes matched by pattern appear once they report)");
        }
        for n in &batch.nodes {
            let tz = n.timezone.unwrap_or(chrono_tz::UTC);
            let zone = match n.timezone {
                Some(tz) => tz.name().to_string(),
                None => "UTC?".to_string(),
            };
            let what = match &n.eta {
                Eta::Done(since) => format!("healthy since {}", both(*since, tz)),
                Eta::Expected { start, done } => format!(
                    "starts {}, through the gate ~{}",
                    both(*start, tz),
                    done.format("%H:%M UTC")
                ),
                Eta::Failed => "failed; waits for a new commit".to_string(),
                Eta::Skipped(why) => format!("skipped ({why})"),
                Eta::Never(why) => format!("never: {why}"),
            };
            println!("   {:<width$}  {zone:<20} {what}", n.node.as_str());
        }
    }
}
