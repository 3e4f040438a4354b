//! The Git control plane against real remotes: a bare repository on disk (`file://`) and
//! `git daemon` on loopback (`git://`).

mod common;

use std::path::Path;
use std::process::Command;

use gitfleet::config::{Interpolation, load_repo};
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
