//! The status branch at scale: simulated agents, each with its own mirror and the real
//! status writer (`Mirror::push_record`, the agent's 30 attempts), all pushing at once to
//! a `git daemon` on loopback — the worst case, a whole fleet reporting in the same
//! second. A writer that exhausts its attempts keeps the record in its outbox and tries
//! again (as the agent does on its next reconcile); a record is lost only if it never
//! lands. Then the bytes one idle poll puts on the wire (release + status branch
//! fetches, ref advertisement included), through a counting relay.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::Utc;

use gitfleet::config::fleet::{ImageSetId, NodeId};
use gitfleet::core::status::{NodeState, StatusRecord};
use gitfleet::git::{GitError, Mirror, Pushed};

use crate::progress;
use crate::support::{
    CountingProxy, GitDaemon, Options, TempDir, fmt, git, median, percentile, result,
};

/// The agent's attempts per push (src/agent.rs PUSH_ATTEMPTS).
const ATTEMPTS: u32 = 30;
/// Outbox rounds a simulated agent makes before its record counts as lost.
const OUTBOX_ROUNDS: u32 = 5;

fn record(i: usize, message: &str) -> StatusRecord {
    let now = Utc::now();
    StatusRecord {
        node: NodeId(format!("node-{i:04}")),
        batch: "eu".into(),
        release: "c".repeat(40),
        images: ImageSetId("a".repeat(64)),
        state: NodeState::Healthy,
        since: now,
        message: message.into(),
        agent: "0.1.0".into(),
        updated: now,
    }
}

struct Outcome {
    latency: Duration,
    rounds: u32,
    error: Option<String>,
}

/// Every mirror pushes its record once, after its offset from a common start; returns
/// each push's outcome and the wall time of the whole round.
fn round(
    mirrors: &[Mirror],
    offsets: &[Duration],
    message: &str,
) -> Result<(Vec<Outcome>, Duration), String> {
    let barrier = Arc::new(Barrier::new(mirrors.len() + 1));
    let handles: Vec<_> = mirrors
        .iter()
        .cloned()
        .zip(offsets.iter().copied())
        .enumerate()
        .map(|(i, (mirror, offset))| {
            let barrier = barrier.clone();
            let message = message.to_string();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    std::thread::sleep(offset);
                    let rec = record(i, &message);
                    let start = Instant::now();
                    let mut rounds = 0;
                    loop {
                        rounds += 1;
                        match mirror.push_record("fleet-status", &rec, ATTEMPTS) {
                            Ok(Pushed::Committed | Pushed::Unchanged) => {
                                return Outcome {
                                    latency: start.elapsed(),
                                    rounds,
                                    error: None,
                                };
                            }
                            Err(GitError::Contended { .. }) if rounds < OUTBOX_ROUNDS => {}
                            Err(e) => {
                                return Outcome {
                                    latency: start.elapsed(),
                                    rounds,
                                    error: Some(e.to_string()),
                                };
                            }
                        }
                    }
                })
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    barrier.wait();
    let start = Instant::now();
    let outcomes = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or(Outcome {
                latency: Duration::MAX,
                rounds: 0,
                error: Some("panicked".into()),
            })
        })
        .collect();
    Ok((outcomes, start.elapsed()))
}

/// Prints the `RESULT` line of one round and checks what landed.
fn report(
    case: &str,
    url: &str,
    root: &std::path::Path,
    message: &str,
    outcomes: &[Outcome],
    total: Duration,
    before: f64,
) -> Result<(), String> {
    let agents = outcomes.len();
    let reader =
        Mirror::open(&root.join(format!("reader-{case}.git")), url).map_err(|e| e.to_string())?;
    reader.fetch(&["fleet-status"]).map_err(|e| e.to_string())?;
    let (records, broken) = reader.records("fleet-status").map_err(|e| e.to_string())?;
    let landed = (0..agents)
        .filter(|i| {
            let want = NodeId(format!("node-{i:04}"));
            records
                .iter()
                .any(|r| r.node == want && r.message == message)
        })
        .count();
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    if let Some(first) = errors.first() {
        progress!("{case}: {} writers failed, first: {first}", errors.len());
    }
    let latencies: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .map(|o| o.latency.as_secs_f64() * 1000.0)
        .collect();
    let outboxed = outcomes.iter().filter(|o| o.rounds > 1).count();
    result(
        case,
        agents,
        &[
            ("lost", (agents - landed).to_string()),
            ("broken", broken.len().to_string()),
            ("failed_writers", errors.len().to_string()),
            ("p50_push_ms", fmt(median(&latencies))),
            ("p95_push_ms", fmt(percentile(&latencies, 95.0))),
            ("max_push_ms", fmt(percentile(&latencies, 100.0))),
            ("total_ms", fmt(total.as_secs_f64() * 1000.0)),
            ("outboxed", outboxed.to_string()),
            ("lost_races", fmt(retries_metric() - before)),
            ("target_p95_ms", "10000".into()),
        ],
    );
    Ok(())
}

pub fn run(options: &Options) -> Result<(), String> {
    let agents = options.agents;
    let root = TempDir::new("status");
    let bare = root.path().join("fleet.git");
    std::fs::create_dir_all(&bare).map_err(|e| e.to_string())?;
    git(&bare, &["init", "--bare", "-q", "-b", "release"]);
    git(&bare, &["config", "daemon.receivepack", "true"]);
    // A release branch, so an idle poll has one to fetch.
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    git(&work, &["init", "-q", "-b", "release"]);
    std::fs::write(work.join("fleet.toml"), "version = 1\n").map_err(|e| e.to_string())?;
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "fleet"]);
    git(
        &work,
        &["push", "-q", bare.to_str().unwrap_or_default(), "release"],
    );
    let daemon = GitDaemon::start(root.path())?;
    let url = daemon.url("fleet.git");

    // Each simulated agent's mirror exists before the clock starts (as on a node).
    let mirrors: Vec<Mirror> = (0..agents)
        .map(|i| Mirror::open(&root.path().join(format!("m-{i}.git")), &url))
        .collect::<Result<_, GitError>>()
        .map_err(|e| e.to_string())?;

    // One writer alone, one push after the other: the cost of a push without a race.
    let single: Vec<f64> = (0..10)
        .map(|k| {
            let start = Instant::now();
            mirrors[0]
                .push_record("fleet-status", &record(0, &format!("single {k}")), ATTEMPTS)
                .map(|_| start.elapsed().as_secs_f64() * 1000.0)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    result(
        "status-single-writer",
        1,
        &[("push_ms", fmt(median(&single)))],
    );

    progress!("status: {agents} writers pushing at once to {url}");
    let before = retries_metric();
    let (outcomes, total) = round(&mirrors, &vec![Duration::ZERO; agents], "burst")?;
    report(
        "status-burst",
        &url,
        root.path(),
        "burst",
        &outcomes,
        total,
        before,
    )?;

    // As a fleet reports after a release: spread over one poll interval (60s ±10%).
    let window = if options.quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    };
    progress!("status: {agents} writers spread over {}s", window.as_secs());
    let offsets: Vec<Duration> = (0..agents)
        .map(|i| {
            window.mul_f64(((i as u64).wrapping_mul(2_654_435_761) % 10_007) as f64 / 10_007.0)
        })
        .collect();
    let before = retries_metric();
    let (outcomes, total) = round(&mirrors, &offsets, "spread")?;
    report(
        "status-spread",
        &url,
        root.path(),
        "spread",
        &outcomes,
        total,
        before,
    )?;

    // An idle poll: the agent fetches its release branch, then the status branch.
    let proxy = CountingProxy::start(daemon.port)?;
    let poller = Mirror::open(
        &root.path().join("poller.git"),
        &format!("git://127.0.0.1:{}/fleet.git", proxy.port),
    )
    .map_err(|e| e.to_string())?;
    poller.fetch(&["release"]).map_err(|e| e.to_string())?;
    poller.fetch(&["fleet-status"]).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(100));
    proxy.take();
    let started = Instant::now();
    let a = poller.fetch(&["release"]).map_err(|e| e.to_string())?;
    let b = poller.fetch(&["fleet-status"]).map_err(|e| e.to_string())?;
    let poll_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(100));
    let wire = proxy.take();
    drop(daemon);
    result(
        "idle-poll",
        1,
        &[
            ("wire_bytes", wire.to_string()),
            ("pack_bytes", (a.bytes + b.bytes).to_string()),
            ("objects", (a.objects + b.objects).to_string()),
            ("fetches", "2".into()),
            ("poll_ms", fmt(poll_ms)),
        ],
    );
    Ok(())
}

/// `gitfleet_status_push_retries_total` of this process (the writers' lost races).
fn retries_metric() -> f64 {
    gitfleet::metrics::metrics()
        .encode()
        .lines()
        .find(|l| l.starts_with("gitfleet_status_push_retries_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
