//! The Git control plane against real remotes: a bare repository on disk (`file://`) and
//! `git daemon` on loopback (`git://`).

mod common;

use std::path::Path;
use std::process::Command;

use gitfleet::config::{Interpolation, load_repo};
use gitfleet::core::status::NodeState;
use gitfleet::git::{Mirror, Pushed};

use common::{
    GitDaemon, TempDir, example_remote as remote, free_port, git, status_record as record,
};

#[test]
fn reads_the_release_tip_without_a_working_tree() {
    let root = TempDir::new("git-read");
    let bare = remote(root.path());
    let mirror = Mirror::open(
        &root.path().join("mirror.git"),
        &format!("file://{}", bare.display()),
    )
    .unwrap();
    mirror.fetch(&["release", "fleet-status"]).unwrap();
    let tip = mirror.tip("release").unwrap().expect("release exists");
    assert_eq!(mirror.tip("fleet-status").unwrap(), None);
    let files = mirror.files(&tip).unwrap();
    let repo =
        load_repo(&files, &Interpolation::default()).expect("the example is valid at the tip");
    assert_eq!(repo.fleet.name, "shop");
    assert_eq!(
        mirror.records("fleet-status").unwrap(),
        (Vec::new(), Vec::new())
    );
}

fn writers_all_land(url: &str, root: &Path, writers: usize) {
    let handles: Vec<_> = (0..writers)
        .map(|i| {
            let url = url.to_string();
            let dir = root.join(format!("mirror-{i}.git"));
            std::thread::spawn(move || {
                let mirror = Mirror::open(&dir, &url).unwrap();
                mirror.push_record("fleet-status", &record(&format!("node-{i:02}")), 60)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Ok(Pushed::Committed));
    }
    let reader = Mirror::open(&root.join("reader.git"), url).unwrap();
    reader.fetch(&["fleet-status"]).unwrap();
    let (records, broken) = reader.records("fleet-status").unwrap();
    assert!(broken.is_empty(), "{broken:?}");
    assert_eq!(records.len(), writers, "every record present");
    let log = Command::new("git")
        .args(["--git-dir"])
        .arg(root.join("reader.git"))
        .args(["log", "--format=%P", "refs/remotes/origin/fleet-status"])
        .output()
        .unwrap();
    let parents = String::from_utf8_lossy(&log.stdout);
    assert_eq!(parents.lines().count(), writers, "one commit per record");
    assert!(
        parents.lines().all(|p| p.split_whitespace().count() <= 1),
        "history is linear"
    );
    let again = reader.push_record("fleet-status", &records[0], 3).unwrap();
    assert_eq!(
        again,
        Pushed::Unchanged,
        "an identical record makes no commit"
    );
}

#[test]
fn fifty_writers_over_file_url_all_land_in_a_linear_history() {
    let root = TempDir::new("git-file");
    let bare = remote(root.path());
    writers_all_land(&format!("file://{}", bare.display()), root.path(), 50);
}

#[test]
fn fifty_writers_over_git_daemon_all_land_in_a_linear_history() {
    let root = TempDir::new("git-daemon");
    let bare = remote(root.path());
    git(&bare, &["config", "daemon.receivepack", "true"]);
    let daemon = GitDaemon::start(root.path());
    let url = daemon.url("fleet.git");
    writers_all_land(&url, root.path(), 50);
    drop(daemon);
}

#[test]
fn an_unreachable_remote_is_a_clear_error() {
    let root = TempDir::new("git-down");
    let port = free_port();
    let mirror = Mirror::open(
        &root.path().join("m.git"),
        &format!("git://127.0.0.1:{port}/fleet.git"),
    )
    .unwrap();
    let error = mirror
        .push_record("fleet-status", &record("n1"), 3)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot reach the fleet repository"),
        "{error}"
    );
}

#[test]
fn plan_names_the_batch_the_blockers_and_the_window_in_node_time_and_utc() {
    let root = TempDir::new("git-plan");
    let bare = remote(root.path());
    let out = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(["plan", "--node", "ap-ktm-1", "--repo"])
        .arg(format!("file://{}", bare.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("timezone Asia/Kathmandu"), "{text}");
    assert!(text.contains("batch     apac (4 of 5)"), "{text}");
    assert!(
        text.contains("01:30 +0545") && text.contains("19:45 UTC"),
        "{text}"
    );
    assert!(
        text.contains("waiting for batch `canary`; pending (never reported): eu-fra-1, us-nyc-1"),
        "{text}"
    );
}

/// The example remote with a second release on top, and records for the canary: one
/// node healthy at the tip, one failed (the example allows no failure: halted).
fn remote_with_a_failed_canary(root: &Path) -> (std::path::PathBuf, String, String) {
    let bare = remote(root);
    let work = root.join("work");
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("NOTES"), "second release\n").unwrap();
    git(&work, &["add", "NOTES"]);
    git(&work, &["commit", "-q", "-m", "Second release"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "release"]);
    let tip = git(&work, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", bare.display());
    let mirror = Mirror::open(&root.join("writer.git"), &url).unwrap();
    mirror.fetch(&["release"]).unwrap();
    let repo = load_repo(&mirror.files(&tip).unwrap(), &Interpolation::default()).unwrap();
    for (node, state) in [
        ("eu-fra-1", NodeState::Healthy),
        ("us-nyc-1", NodeState::Failed),
    ] {
        let mut r = record(node);
        r.batch = "canary".into();
        r.release = tip.clone();
        r.images = repo.images.id();
        r.state = state;
        mirror.push_record("fleet-status", &r, 3).unwrap();
    }
    (bare, first, tip)
}

fn gitfleet(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (out.status.code(), common::output_text(&out))
}

#[test]
fn status_shows_the_release_per_batch_with_a_halt_and_a_stable_json_schema() {
    let root = TempDir::new("git-status-cmd");
    let (bare, first, tip) = remote_with_a_failed_canary(root.path());
    let url = format!("file://{}", bare.display());

    let (code, text) = gitfleet(&["status", "--repo", &url]);
    assert_eq!(code, Some(1), "a failed node and a halt exit 1: {text}");
    assert!(text.contains(&format!("release {}", &tip[..12])), "{text}");
    assert!(
        text.contains("1/2 healthy, 1 failed; HALTED in batch canary"),
        "{text}"
    );
    let row = |node: &str| {
        text.lines()
            .find(|l| l.contains(node))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("eu-fra-1")[..4], ["canary", "*", "eu-fra-1", "healthy"]);
    assert_eq!(row("us-nyc-1")[..2], ["us-nyc-1", "failed"]);

    let (code, json) = gitfleet(&["status", "--repo", &url, "--format", "json"]);
    assert_eq!(code, Some(1), "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["release"], tip.as_str());
    assert_eq!(doc["halted_in"], "canary");
    assert_eq!(
        (doc["healthy"].as_u64(), doc["total"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(doc["batches"][0]["nodes"][1]["view"], "failed");
    assert_eq!(doc["unreadable_records"], serde_json::json!([]));

    // The previous release: nobody reported it healthy; nothing failed it either.
    let (code, text) = gitfleet(&["status", "--repo", &url, "--release", "release~1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("release {}", &first[..12])),
        "{text}"
    );
    let (code, text) = gitfleet(&["status", "--repo", &url, "--release", "nope"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no commit `nope`"), "{text}");
}

#[test]
fn plan_without_a_node_is_the_fleets_timeline_in_batch_order() {
    let root = TempDir::new("git-timeline");
    let (bare, first, _) = remote_with_a_failed_canary(root.path());
    let url = format!("file://{}", bare.display());
    let (code, text) = gitfleet(&["plan", "--repo", &url, "--converge-time", "1m"]);
    assert_eq!(code, Some(0), "{text}");
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(". ").filter(|(n, _)| n.parse::<u32>().is_ok()))
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(order, ["canary", "eu", "americas", "apac"], "{text}");
    assert!(text.contains("assuming 1m to converge"), "{text}");
    let line = |node: &str| text.lines().find(|l| l.contains(node)).unwrap_or_default();
    assert!(
        line("eu-fra-1").contains("Europe/Berlin") && line("eu-fra-1").contains("healthy since"),
        "{text}"
    );
    assert!(line("us-nyc-1").contains("failed"), "{text}");
    assert!(
        text.contains("2. eu (window nightly): not done: an earlier batch never finishes"),
        "{text}"
    );

    // For one node: what its converge would change (here: the release before had the
    // same images).
    let (code, node_plan) = gitfleet(&["plan", "--repo", &url, "--node", "eu-fra-1"]);
    assert_eq!(code, Some(0), "{node_plan}");
    assert!(
        node_plan.contains(&format!(
            "changes   from {} (the release before):",
            &first[..12]
        )) && node_plan.contains("none (the same image set)"),
        "{node_plan}"
    );
}
