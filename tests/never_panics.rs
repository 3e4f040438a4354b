//! Property tests: the parsers and the decision core never panic, on any input, and
//! batch assignment keeps its invariants.

use std::collections::BTreeMap;

use chrono::DateTime;
use gitfleet::config::fleet::{ImageSetId, NodeId};
use gitfleet::config::{Interpolation, load_repo};
use gitfleet::core::batch::Tip;
use gitfleet::core::decide::{Desired, Inputs, LocalFacts, decide};
use gitfleet::core::status::{NodeState, StatusRecord};
use proptest::prelude::*;

#[path = "../fuzz/entry.rs"]
mod entry;

use entry::MemFiles;

const FLEET: &str = r#"version = 1
[fleet]
name = "shop"
compose = "compose.yaml"
[rollout]
batches = ["canary", "eu", "us"]
max_parallel = 2
bake = "1m"
window = "nightly"
max_failure_ratio = 0.3
[windows.nightly]
schedule = "0 2 * * *"
duration = "3h"
[batches.canary]
nodes = ["eu-1", "us-1"]
window = "always"
[batches.eu]
nodes = ["eu-*"]
[batches.us]
nodes = ["us-?", "us-1*"]
[nodes.eu-2]
weight = 3
[nodes.us-3]
hold = true
"#;

const COMPOSE: &str = "services:\n  web:\n    image: r.example/web@sha256:0000000000000000000000000000000000000000000000000000000000000000\n";

fn files(fleet: &str, compose: &str) -> MemFiles {
    MemFiles(BTreeMap::from([
        ("fleet.toml".to_string(), fleet.to_string()),
        ("compose.yaml".to_string(), compose.to_string()),
    ]))
}

fn state() -> impl Strategy<Value = NodeState> {
    prop_oneof![
        Just(NodeState::WaitingWindow),
        Just(NodeState::WaitingBatch),
        Just(NodeState::Converging),
        Just(NodeState::Monitoring),
        Just(NodeState::Healthy),
        Just(NodeState::Failed),
        Just(NodeState::RolledBack),
        Just(NodeState::Halted),
        Just(NodeState::Rejected),
    ]
}

fn node() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("eu-1"),
        Just("eu-2"),
        Just("us-1"),
        Just("us-3"),
        Just("us-10"),
        Just("br-1")
    ]
    .prop_map(String::from)
}

fn set() -> impl Strategy<Value = ImageSetId> {
    prop_oneof![Just('a'), Just('b'), Just('c')].prop_map(|c| ImageSetId(c.to_string().repeat(64)))
}

fn instant() -> impl Strategy<Value = chrono::DateTime<chrono::Utc>> {
    (0i64..4_000_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

fn record() -> impl Strategy<Value = StatusRecord> {
    (
        node(),
        prop_oneof![Just("r1"), Just("r2")],
        set(),
        state(),
        instant(),
        instant(),
    )
        .prop_map(
            |(node, release, images, state, since, updated)| StatusRecord {
                node: NodeId(node),
                batch: String::new(),
                release: release.to_string(),
                images,
                state,
                since,
                message: String::new(),
                agent: "t".into(),
                updated,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decide_never_panics_and_is_deterministic(
        records in proptest::collection::vec(record(), 0..12),
        me in node(),
        running in proptest::option::of(set()),
        known_good in proptest::collection::vec(set(), 0..3),
        now in instant(),
        committed in instant(),
    ) {
        let repo = load_repo(&files(FLEET, COMPOSE), &Interpolation::default()).expect("valid fixture");
        let desired = ImageSetId("b".repeat(64));
        let me = NodeId(me);
        let local = LocalFacts { running, known_good, ..Default::default() };
        let inputs = Inputs {
            desired: Desired::Admitted { release: Tip { commit: "r2", committed }, fleet: &repo.fleet, images: &desired },
            node: &me,
            timezone: chrono_tz::Asia::Kathmandu,
            records: &records,
            local: &local,
            now,
        };
        let first = decide(&inputs);
        prop_assert_eq!(&first, &decide(&inputs));
        let _ = first.verdict.message(chrono_tz::Asia::Kathmandu);
        if let Some(at) = first.recheck_at {
            let monitoring = matches!(first.verdict, gitfleet::core::decide::Verdict::Monitor { .. });
            prop_assert!(at > now || monitoring, "recheck {} not after now {}", at, now);
        }
    }

    #[test]
    fn every_node_lands_in_the_first_matching_batch(id in "[a-z]{2}-[0-9]{1,2}") {
        let repo = load_repo(&files(FLEET, COMPOSE), &Interpolation::default()).expect("valid fixture");
        let id = NodeId(id);
        let index = repo.fleet.batch_index_of(&id);
        prop_assert!(index < repo.fleet.batches.len());
        prop_assert!(repo.fleet.batches[..index].iter().all(|b| !b.matches(&id)));
        if index + 1 < repo.fleet.batches.len() {
            prop_assert!(repo.fleet.batches[index].matches(&id));
        }
    }

    #[test]
    fn loading_arbitrary_fleet_toml_never_panics(text in "\\PC{0,400}") {
        let _ = load_repo(&files(&text, COMPOSE), &Interpolation::default());
    }

    #[test]
    fn loading_mutated_fleet_toml_never_panics(cut in 0usize..FLEET.len(), insert in "[\\[\\]=\"a-z0-9 .\\n*-]{0,12}") {
        let mut text = FLEET.to_string();
        let cut = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.insert_str(cut, &insert);
        if let Err(diags) = load_repo(&files(&text, COMPOSE), &Interpolation::default()) {
            prop_assert!(!diags.is_empty());
            let _ = diags.to_string();
        }
    }

    #[test]
    fn loading_arbitrary_compose_never_panics(text in "\\PC{0,400}") {
        let _ = load_repo(&files(FLEET, &text), &Interpolation::default());
    }

    #[test]
    fn reading_arbitrary_status_records_never_panics(text in "\\PC{0,300}") {
        let _ = StatusRecord::from_toml(&text);
    }

    #[test]
    fn pin_reading_and_rewriting_mutated_images_never_panics(
        cut in 0usize..PIN_FLEET.len(),
        insert in "[\\[\\]{}=\"a-z0-9 .:@/\\n^~*-]{0,12}",
    ) {
        let mut text = PIN_FLEET.to_string();
        text.insert_str(cut, &insert);
        entry::pin(text.as_bytes());
    }
}

/// fleet.toml with both `[images]` forms, for the `pin` properties (ASCII: any cut is a
/// char boundary).
const PIN_FLEET: &str = "version = 1\n[fleet]\ncompose = \"c.yaml\"\n[images]\nweb = \"r.example:5000/web:2.3.1\" # c\napi = { image = \"api:1.0.0@sha256:0000000000000000000000000000000000000000000000000000000000000000\", follow = \"semver:~1.0\" }\n[registries]\n\"r.example:5000\" = [\"m.example\"]\n";
