//! `status` and `plan` golden outputs for a fleet in mid-rollout: the canary done, the
//! `eu` batch halted by a failure, a listed node pending, a silent node stale, nodes in
//! time zones on both sides of UTC. Everything is fixed (commit dates, record times, and
//! the evaluation instant through GITFLEET_NOW), so the output is byte for byte stable.
//! After an intended change of output: `GITFLEET_UPDATE_GOLDEN=1 scripts/test --test golden`
//! and review the diff.

mod common;

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Utc};
use gitfleet::config::{Interpolation, load_repo};
use gitfleet::core::status::NodeState;
use gitfleet::git::Mirror;

use common::{TempDir, copy_tree, example_repo, git, output_text, status_record};

const NOW: &str = "2026-11-24T22:00:00Z";

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
}

/// A node's record: node, batch, state, time (HH:MM), message, and whether it is for
/// the release (else an old one, three days before).
type Record = (
    &'static str,
    &'static str,
    NodeState,
    &'static str,
    &'static str,
    bool,
);

/// The canary done, `eu` halted by a failure, a stale node in `eu`.
const HALTED: &[Record] = &[
    (
        "eu-fra-1",
        "canary",
        NodeState::Healthy,
        "20:05",
        "health gate passed",
        true,
    ),
    (
        "us-nyc-1",
        "canary",
        NodeState::Healthy,
        "20:09",
        "health gate passed",
        true,
    ),
    (
        "eu-ams-1",
        "eu",
        NodeState::Failed,
        "20:31",
        "health gate failed: service `web`: unhealthy; previous containers restored",
        true,
    ),
    (
        "eu-ber-1",
        "eu",
        NodeState::Healthy,
        "20:33",
        "health gate passed",
        true,
    ),
    (
        "br-sao-1",
        "americas",
        NodeState::Halted,
        "20:40",
        "release halted in batch `eu`",
        true,
    ),
    (
        "ap-ktm-1",
        "apac",
        NodeState::Halted,
        "20:40",
        "release halted in batch `eu`",
        true,
    ),
    (
        "eu-mad-1",
        "eu",
        NodeState::Healthy,
        "19:00",
        "in sync",
        false,
    ),
];

/// The example fleet, with `eu-lis-1` listed by id in `eu`, released at 20:00 UTC, and
/// these records on its status branch.
fn mid_rollout(root: &Path, records: &[Record]) -> String {
    let bare = root.join("fleet.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-q", "-b", "release"]);
    let work = root.join("work");
    copy_tree(&example_repo(), &work);
    let toml = std::fs::read_to_string(work.join("fleet.toml")).unwrap();
    std::fs::write(
        work.join("fleet.toml"),
        toml.replacen(
            "[batches.eu]\nnodes = [\"eu-*\"]",
            "[batches.eu]\nnodes = [\"eu-*\", \"eu-lis-1\"]",
            1,
        ),
    )
    .unwrap();
    git(&work, &["init", "-q", "-b", "release"]);
    git(&work, &["add", "."]);
    let commit = Command::new("git")
        .current_dir(&work)
        .args(["-c", "user.name=op", "-c", "user.email=op@example.com"])
        .args(["commit", "-q", "-m", "Release web 2.3.1"])
        .env("GIT_AUTHOR_DATE", "2026-11-24T20:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-11-24T20:00:00Z")
        .status()
        .unwrap();
    assert!(commit.success());
    git(&work, &["push", "-q", bare.to_str().unwrap(), "release"]);
    let tip = git(&work, &["rev-parse", "HEAD"]);

    let url = format!("file://{}", bare.display());
    let mirror = Mirror::open(&root.join("writer.git"), &url).unwrap();
    mirror.fetch(&["release"]).unwrap();
    let images = load_repo(&mirror.files(&tip).unwrap(), &Interpolation::default())
        .unwrap()
        .images
        .id();
    for &(node, batch, state, time, message, current) in records {
        let mut r = status_record(node);
        r.batch = batch.into();
        r.state = state;
        r.message = message.into();
        if current {
            r.release = tip.clone();
            r.images = images.clone();
            r.since = at(&format!("2026-11-24T{time}:00Z"));
            r.updated = r.since;
        } else {
            // Silent for three days: stale.
            r.since = at(&format!("2026-11-21T{time}:00Z"));
            r.updated = r.since;
        }
        mirror.push_record("fleet-status", &r, 3).unwrap();
    }
    url
}

fn gitfleet(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(args)
        .env("GITFLEET_NOW", NOW)
        .env("NO_COLOR", "1")
        .env_remove("GITFLEET_TIMEZONE")
        .env_remove("TZ")
        .output()
        .unwrap();
    (out.status.code(), output_text(&out))
}

/// Compares `actual` with tests/golden/`name`, or rewrites it when asked to.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("GITFLEET_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{name} differs from the golden file {}\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn status_and_the_fleet_timeline_of_a_halted_mid_rollout() {
    let root = TempDir::new("golden");
    let url = mid_rollout(root.path(), HALTED);
    // The commit id depends on the example's files; keep it out of the golden text.
    let tip = git(&root.path().join("work"), &["rev-parse", "HEAD"]);
    let stable = |text: String| {
        text.replace(&tip, "<release>")
            .replace(&tip[..12], "<release>")
    };

    let (code, text) = gitfleet(&["status", "--repo", &url]);
    assert_eq!(code, Some(1), "halted: {text}");
    golden("status.txt", &stable(text));

    let (code, json) = gitfleet(&["status", "--repo", &url, "--format", "json"]);
    assert_eq!(code, Some(1), "{json}");
    let images = serde_json::from_str::<serde_json::Value>(&json).expect(&json)["images"]
        .as_str()
        .unwrap()
        .to_string();
    golden("status.json", &stable(json).replace(&images, "<images>"));

    let (code, text) = gitfleet(&["plan", "--repo", &url]);
    assert_eq!(code, Some(0), "{text}");
    golden("plan.txt", &stable(text).replace(&images[..12], "<images>"));

    let (code, text) = gitfleet(&["plan", "--repo", &url, "--node", "ap-ktm-1"]);
    assert_eq!(code, Some(0), "{text}");
    golden(
        "plan-ap-ktm-1.txt",
        &stable(text).replace(&images[..12], "<images>"),
    );
}

#[test]
fn the_fleet_timeline_predicts_each_later_batch_in_node_time_and_utc() {
    // The canary done; `eu` waits for its nightly window (02:00 in each node's zone),
    // one of its nodes already through; the Americas and Asia still to come.
    let root = TempDir::new("golden-upcoming");
    let mut records: Vec<Record> = HALTED
        .iter()
        .filter(|r| ["eu-fra-1", "us-nyc-1", "eu-ber-1"].contains(&r.0))
        .copied()
        .collect();
    let waiting = "waiting for batch `eu`";
    records.extend([
        (
            "eu-ams-1",
            "eu",
            NodeState::WaitingWindow,
            "20:20",
            "window `nightly` opens 2026-11-25 02:00 CET (2026-11-25 01:00 UTC)",
            true,
        ),
        (
            "br-sao-1",
            "americas",
            NodeState::WaitingBatch,
            "20:20",
            waiting,
            true,
        ),
        (
            "ap-ktm-1",
            "apac",
            NodeState::WaitingBatch,
            "20:20",
            waiting,
            true,
        ),
    ]);
    let url = mid_rollout(root.path(), &records);
    let tip = git(&root.path().join("work"), &["rev-parse", "HEAD"]);
    let (code, text) = gitfleet(&["plan", "--repo", &url]);
    assert_eq!(code, Some(0), "{text}");
    let images = text
        .split("(image set ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect(&text)
        .to_string();
    golden(
        "plan-upcoming.txt",
        &text
            .replace(&tip[..12], "<release>")
            .replace(&images, "<images>"),
    );
}
