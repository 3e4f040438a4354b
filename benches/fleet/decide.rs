//! `core::decide` over a large status branch: 10 000 synthetic node records in three
//! batches (canary, eu-*, us-*/br-*), every one healthy at the release, and the deciding
//! node in the last batch ("rest"), so every earlier batch's progress is computed.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{TimeDelta, Utc};

use gitfleet::config::fleet::{ImageSetId, NodeId};
use gitfleet::config::{DirFiles, Interpolation, load_repo};
use gitfleet::core::batch::{self, Tip};
use gitfleet::core::decide::{Desired, Inputs, LocalFacts, Verdict, decide};
use gitfleet::core::status::{NodeState, StatusRecord};

use crate::support::{Env, TempDir, fmt, median, percentile, result};

pub fn run(records: usize, env: &Env) -> Result<(), String> {
    let dir = TempDir::new("decide");
    std::fs::create_dir_all(dir.path().join("stack")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("fleet.toml"),
        format!(
            "version = 1\n[fleet]\nname = \"shop\"\ncompose = \"stack/compose.yaml\"\n[images]\nweb = \"{}\"\n\
             [rollout]\nbatches = [\"canary\", \"eu\", \"americas\"]\nmonitor = \"60s\"\n\
             [batches.canary]\nnodes = [\"eu-00000\", \"us-00001\"]\n[batches.eu]\nnodes = [\"eu-*\"]\n\
             [batches.americas]\nnodes = [\"us-*\", \"br-*\"]\n",
            env.v1
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("stack/compose.yaml"),
        "services:\n  web:\n    image: placeholder\n",
    )
    .map_err(|e| e.to_string())?;
    let repo = load_repo(
        &DirFiles(dir.path().to_path_buf()),
        &Interpolation::default(),
    )
    .map_err(|d| format!("decide fleet: {d}"))?;
    let images = repo.images.id();
    let commit = "c".repeat(40);
    let now = Utc::now();
    let committed = now - TimeDelta::hours(2);
    let prefixes = ["eu", "us", "br"];
    let mut list: Vec<StatusRecord> = (0..records.saturating_sub(1))
        .map(|i| {
            let at = committed + TimeDelta::seconds(60 + (i % 3000) as i64);
            StatusRecord {
                node: NodeId(format!("{}-{i:05}", prefixes[i % 3])),
                batch: String::new(),
                release: commit.clone(),
                images: images.clone(),
                state: NodeState::Healthy,
                since: at,
                message: "health gate passed".into(),
                agent: "0.1.0".into(),
                updated: at,
            }
        })
        .collect();
    let me = NodeId::from("zz-bench");
    // The deciding node's own record: still at the previous release.
    list.push(StatusRecord {
        node: me.clone(),
        batch: "rest".into(),
        release: "b".repeat(40),
        images: ImageSetId("a".repeat(64)),
        state: NodeState::Healthy,
        since: committed - TimeDelta::hours(1),
        message: "in sync".into(),
        agent: "0.1.0".into(),
        updated: committed - TimeDelta::hours(1),
    });
    let local = LocalFacts {
        running: Some(ImageSetId("a".repeat(64))),
        known_good: vec![ImageSetId("a".repeat(64))],
        gate: None,
        ..Default::default()
    };
    let inputs = Inputs {
        desired: Desired::Admitted {
            release: Tip {
                commit: &commit,
                committed,
            },
            fleet: &repo.fleet,
            images: &images,
        },
        node: &me,
        timezone: chrono_tz::UTC,
        records: &list,
        local: &local,
        now,
    };
    let first = decide(&inputs);
    if !matches!(first.verdict, Verdict::Converge { .. }) {
        return Err(format!(
            "decide over {records} records: expected Converge, got {:?}",
            first.verdict
        ));
    }
    let mut samples = Vec::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    while samples.len() < 20 || (samples.len() < 500 && Instant::now() < deadline) {
        let start = Instant::now();
        let d = decide(&inputs);
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(d);
    }
    // Where the time goes: the two pub building blocks decide calls.
    let time = |f: &dyn Fn()| {
        let mut v = Vec::new();
        for _ in 0..50 {
            let start = Instant::now();
            f();
            v.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        median(&v)
    };
    let latest_ms = time(&|| {
        std::hint::black_box(batch::latest_by_node(&list));
    });
    let progress_ms = time(&|| {
        std::hint::black_box(batch::progress(
            &repo.fleet,
            &list,
            &Tip {
                commit: &commit,
                committed,
            },
            &images,
            now,
        ));
    });
    let mut batches: BTreeMap<String, usize> = BTreeMap::new();
    for r in &list {
        *batches
            .entry(repo.fleet.batch_of(&r.node).name.clone())
            .or_default() += 1;
    }
    result(
        "decide",
        records,
        &[
            ("gitfleet_ms", fmt(median(&samples))),
            ("p95_ms", fmt(percentile(&samples, 95.0))),
            ("calls", samples.len().to_string()),
            ("latest_by_node_ms", fmt(latest_ms)),
            ("progress_ms", fmt(progress_ms)),
            ("target_ms", "5".into()),
        ],
    );
    crate::progress!("decide: records per batch {batches:?}");
    Ok(())
}
