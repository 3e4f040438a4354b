//! Merge to canary converging: a release pushed to the fleet repository, until the canary
//! agent's first container operation on the engine (`converging_ms`, from the push's
//! start, so it includes the push) and until the agent finished the reconcile, gate
//! included (`healthy_ms`). Two triggers: by notify (a `file://` remote, the agent
//! watches the branch's ref on disk) and by webhook (a `git://` remote served by `git
//! daemon`, a signed `POST /hook` right after the push). `--interval 1h`: no poll helps.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;

use gitfleet::engine::docker::DockerEngine;
use gitfleet::engine::spec::PROJECT_LABEL;

use crate::footprint::{AgentProcess, FleetRemote, SECRET, cleanup};
use crate::progress;
use crate::support::{Env, GitDaemon, Options, fmt, median, result};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64
}

/// The time (ns) of the project's first container operation at or after `since_ns`.
fn first_operation(
    runtime: &tokio::runtime::Runtime,
    docker: &Docker,
    project: &str,
    since_ns: i64,
) -> tokio::task::JoinHandle<Option<i64>> {
    let filters = HashMap::from([
        (
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={project}")],
        ),
        ("type".to_string(), vec!["container".to_string()]),
    ]);
    // `since` replays what happened before the stream connected: no race with the push.
    let mut stream = docker.events(Some(EventsOptions {
        since: Some((since_ns / 1_000_000_000 - 1).to_string()),
        filters: Some(filters),
        ..Default::default()
    }));
    runtime.spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs(120));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return None,
                event = stream.next() => {
                    let e = event?.ok()?;
                    let at = e.time_nano.unwrap_or_default();
                    let action = e.action.unwrap_or_default();
                    if at >= since_ns
                        && matches!(action.as_str(), "kill" | "stop" | "die" | "create" | "rename" | "destroy")
                    {
                        return Some(at);
                    }
                }
            }
        }
    })
}

pub fn run(options: &Options, env: &Env) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let docker = runtime
        .block_on(DockerEngine::connect())
        .map_err(|e| e.to_string())?
        .client()
        .clone();
    for trigger in ["notify", "webhook"] {
        let project = format!("bench-merge-{trigger}");
        runtime.block_on(cleanup(&project));
        let outcome = merge(options, env, &runtime, &docker, &project, trigger);
        runtime.block_on(cleanup(&project));
        outcome?;
    }
    Ok(())
}

fn merge(
    options: &Options,
    env: &Env,
    runtime: &tokio::runtime::Runtime,
    docker: &Docker,
    project: &str,
    trigger: &str,
) -> Result<(), String> {
    let remote = FleetRemote::new(project);
    let commit = remote.release(env, 0, "release 1");
    let daemon = if trigger == "webhook" {
        Some(GitDaemon::start(remote.root.path())?)
    } else {
        None
    };
    let mut agent = match &daemon {
        Some(daemon) => {
            let secret = remote.root.path().join("secret");
            std::fs::write(&secret, SECRET).map_err(|e| e.to_string())?;
            let secret = secret.display().to_string();
            AgentProcess::spawn(
                &remote,
                &daemon.url("fleet.git"),
                &["--webhook-secret-file", &secret],
            )?
        }
        None => AgentProcess::spawn(&remote, &remote.file_url(), &[])?,
    };
    remote.wait_healthy(&commit, &mut agent, Duration::from_secs(120))?;
    let (mut converging, mut healthy) = (Vec::new(), Vec::new());
    for rep in 0..options.reps {
        progress!(
            "merge by {trigger}: repetition {}/{}",
            rep + 1,
            options.reps
        );
        std::thread::sleep(Duration::from_millis(500));
        let since = now_ns();
        let first = first_operation(runtime, docker, project, since);
        let start = Instant::now();
        let commit = remote.release(env, (rep + 1) % 2, &format!("release {}", rep + 2));
        if trigger == "webhook" {
            let status = agent.hook(SECRET).unwrap_or_default();
            if !status.contains("202") {
                return Err(format!("POST /hook: {status}"));
            }
        }
        remote.wait_healthy(&commit, &mut agent, Duration::from_secs(120))?;
        healthy.push(start.elapsed().as_secs_f64() * 1000.0);
        match runtime.block_on(first) {
            Ok(Some(at)) => converging.push((at - since) as f64 / 1e6),
            _ => progress!("merge by {trigger}: no container operation seen"),
        }
    }
    result(
        &format!("merge-{trigger}"),
        1,
        &[
            ("converging_ms", fmt(median(&converging))),
            ("healthy_ms", fmt(median(&healthy))),
        ],
    );
    drop(agent);
    drop(daemon);
    Ok(())
}
