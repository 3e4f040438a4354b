//! Fleet end-to-end: several real agents (one process per node, each with its own
//! project, state directory and timezone) share the test dockerd and registry and follow
//! one Git remote served by `git daemon` on loopback, while the test commits releases as
//! an operator would. Assertions read the status branch's history: its commits are the
//! fleet's ledger, in order.
//!
//! Run one scenario alone with its name, e.g.
//! `scripts/test --test fleet canary_then_waves` (see the README); each prints its
//! timeline with `--no-capture`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitfleet::core::status::{NodeState, StatusRecord};

use common::{AgentProcess, GitDaemon, TempDir, free_port, git, test_images};

/// One service; `extra` is added to its definition (a healthcheck, say).
fn compose(extra: &str) -> String {
    format!("services:\n  web:\n    image: placeholder\n    init: true\n{extra}")
}

/// One status commit: who wrote what, in ledger order.
#[derive(Clone, Debug)]
struct Step {
    node: String,
    state: NodeState,
    release: String,
    since: chrono::DateTime<chrono::Utc>,
    message: String,
}

/// A fleet under test: the remote, the operator's working copy, the agents.
struct Scenario {
    label: String,
    root: TempDir,
    daemon: GitDaemon,
    agents: BTreeMap<String, AgentProcess>,
    /// The engine the agents use, when not the test environment's.
    docker_host: Option<String>,
    /// Every node ever started, for cleanup.
    nodes: Vec<String>,
    started: Instant,
}

impl Scenario {
    fn new(label: &str) -> Self {
        let root = TempDir::new(&format!("fleet-{label}"));
        git(
            root.path(),
            &["init", "--bare", "-q", "-b", "release", "fleet.git"],
        );
        std::fs::create_dir_all(root.path().join("work/stack")).unwrap();
        git(&root.path().join("work"), &["init", "-q", "-b", "release"]);
        let daemon = GitDaemon::start(root.path());
        Scenario {
            label: label.to_string(),
            root,
            daemon,
            agents: BTreeMap::new(),
            docker_host: None,
            nodes: Vec::new(),
            started: Instant::now(),
        }
    }

    fn bare(&self) -> PathBuf {
        self.root.path().join("fleet.git")
    }

    fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    fn project(&self, node: &str) -> String {
        format!("gft-e2e-{}-{node}-{}", self.label, std::process::id())
    }

    /// Commits fleet.toml and the compose file and pushes them to `release`, as a merge
    /// would; returns the commit id.
    fn release(&self, fleet_toml: &str, compose_yaml: &str, message: &str) -> String {
        std::fs::write(self.work().join("fleet.toml"), fleet_toml).unwrap();
        std::fs::write(self.work().join("stack/compose.yaml"), compose_yaml).unwrap();
        git(&self.work(), &["add", "."]);
        git(
            &self.work(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.push()
    }

    fn push(&self) -> String {
        git(
            &self.work(),
            &["push", "-q", "-f", self.bare().to_str().unwrap(), "release"],
        );
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    /// The docker CLI, talking to the agents' engine.
    fn docker(&self) -> Command {
        let mut docker = Command::new("docker");
        if let Some(host) = &self.docker_host {
            docker.env("DOCKER_HOST", host);
        }
        docker
    }

    /// Starts node `id`'s agent: polls every second, in `timezone`.
    fn start(&mut self, id: &str, timezone: &str) {
        let log = std::fs::File::create(self.root.path().join(format!("{id}.log"))).unwrap();
        let mut agent = Command::new(env!("CARGO_BIN_EXE_gitfleet"));
        if let Some(host) = &self.docker_host {
            agent.env("DOCKER_HOST", host);
        }
        let child = agent
            .args(["agent", "--node", id, "--project", &self.project(id)])
            .args(["--repo", &self.daemon.url("fleet.git")])
            .arg("--state-dir")
            .arg(self.root.path().join(format!("state-{id}")))
            .args([
                "--timezone",
                timezone,
                "--interval",
                "1s",
                "--listen",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agents.insert(id.to_string(), AgentProcess(child));
        if !self.nodes.iter().any(|n| n == id) {
            self.nodes.push(id.to_string());
        }
    }

    /// SIGKILL, as a crash or a power cut would stop it.
    fn kill(&mut self, id: &str) {
        self.agents.remove(id).unwrap().kill();
    }

    /// The status branch's commits, oldest first, each as the record it wrote.
    fn history(&self) -> Vec<Step> {
        let bare = self.bare();
        let Ok(commits) = Command::new("git")
            .arg("-C")
            .arg(&bare)
            .args(["rev-list", "--reverse", "fleet-status"])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&commits.stdout)
            .lines()
            .flat_map(|commit| {
                let files = git(
                    &bare,
                    &[
                        "diff-tree",
                        "--no-commit-id",
                        "--name-only",
                        "-r",
                        "--root",
                        commit,
                    ],
                );
                files
                    .lines()
                    .filter(|f| f.starts_with("nodes/"))
                    .map(|f| {
                        let r = StatusRecord::from_toml(&git(
                            &bare,
                            &["show", &format!("{commit}:{f}")],
                        ))
                        .unwrap();
                        Step {
                            node: r.node.to_string(),
                            state: r.state,
                            release: r.release,
                            since: r.since,
                            message: r.message,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Each node's latest record.
    fn records(&self) -> BTreeMap<String, StatusRecord> {
        let bare = self.bare();
        let Ok(out) = Command::new("git")
            .arg("-C")
            .arg(&bare)
            .args(["ls-tree", "--name-only", "fleet-status", "nodes/"])
            .output()
        else {
            return BTreeMap::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|path| {
                let text = git(&bare, &["show", &format!("fleet-status:{path}")]);
                let r = StatusRecord::from_toml(&text).ok()?;
                Some((r.node.to_string(), r))
            })
            .collect()
    }

    /// Waits until every node in `nodes` has the wanted state at `release`.
    fn wait_all(&self, nodes: &[&str], state: NodeState, release: &str, within: Duration) {
        let wanted: Vec<(&str, NodeState)> = nodes.iter().map(|n| (*n, state)).collect();
        self.wait_states(&wanted, release, within);
    }

    /// Waits until each node has its wanted state at `release`; on timeout, fails with
    /// wanted against seen for each node that is not there, and the timeline.
    fn wait_states(&self, wanted: &[(&str, NodeState)], release: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let records = self.records();
            let missing: Vec<String> = wanted
                .iter()
                .filter(|(n, state)| {
                    !records
                        .get(*n)
                        .is_some_and(|r| r.state == *state && r.release == release)
                })
                .map(|(n, state)| {
                    let seen = records.get(*n).map_or("no record".into(), |r| {
                        format!("{} at {}: {}", r.state, &r.release[..8], r.message)
                    });
                    format!("{n}: wanted {state}, seen {seen}")
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for release {}:\n  {}\n{}",
                &release[..8],
                missing.join("\n  "),
                self.timeline()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How `gitfleet status --format json` shows `node` (`pending`, `stale`, …).
    fn status_view(&self, node: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
            .args([
                "status",
                "--repo",
                &self.daemon.url("fleet.git"),
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        let text = common::output_text(&out);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect(&text);
        doc["batches"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|b| b["nodes"].as_array().into_iter().flatten())
            .find(|n| n["node"] == node)
            .and_then(|n| n["view"].as_str())
            .unwrap_or_else(|| panic!("no {node} in {text}"))
            .to_string()
    }

    /// The images the node's `web` container runs (or an empty string).
    fn running_image(&self, node: &str) -> String {
        let out = self
            .docker()
            .args([
                "inspect",
                "--format",
                "{{.Config.Image}} {{.State.Running}}",
            ])
            .arg(format!("{}-web-1", self.project(node)))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The history, one line per status commit, for failure messages and `--no-capture`.
    fn timeline(&self) -> String {
        let mut out = format!(
            "timeline of `{}` ({:.0?} so far):\n",
            self.label,
            self.started.elapsed()
        );
        for (i, s) in self.history().iter().enumerate() {
            out.push_str(&format!(
                "  {i:3} {:4} {:15} {} {}\n",
                s.node,
                s.state.as_str(),
                &s.release[..8],
                s.message
            ));
        }
        out
    }
}

impl Drop for Scenario {
    /// Stops the agents, then removes every node's containers and network.
    fn drop(&mut self) {
        self.agents.clear();
        for project in self.nodes.iter().map(|n| self.project(n)) {
            let ids = self
                .docker()
                .args(["ps", "-aq", "--filter"])
                .arg(format!("label=com.docker.compose.project={project}"))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                let _ = self.docker().args(["rm", "-f", "-v", id]).output();
            }
            let _ = self
                .docker()
                .args(["network", "rm", &format!("{project}_default")])
                .output();
        }
    }
}

/// Index of the first step matching `f`.
fn first(history: &[Step], f: impl Fn(&Step) -> bool) -> Option<usize> {
    history.iter().position(f)
}

/// For each node of `batch`, the ledger interval during which it held a slot for
/// `release`: from its last `converging` claim to the `healthy` (or `failed`) that ended it.
fn active_intervals(
    history: &[Step],
    batch: &[&str],
    release: &str,
) -> Vec<(String, usize, usize)> {
    batch
        .iter()
        .filter_map(|node| {
            let end = first(history, |s| {
                s.node == *node
                    && s.release == release
                    && matches!(s.state, NodeState::Healthy | NodeState::Failed)
            })?;
            let start = history[..end]
                .iter()
                .rposition(|s| s.node == *node && s.state == NodeState::Converging)?;
            Some((node.to_string(), start, end))
        })
        .collect()
}

/// fleet.toml with one image, batches `canary` (c1) and `wave` (a*), the rest after.
fn waves_toml(web: &str, rollout_extra: &str) -> String {
    format!(
        "version = 1\n[fleet]\nname = \"e2e\"\ncompose = \"stack/compose.yaml\"\n\
         [images]\nweb = \"{web}\"\n\
         [rollout]\nbatches = [\"canary\", \"wave\"]\nmonitor = \"2s\"\nhealth_timeout = \"30s\"\n{rollout_extra}\n\
         [batches.canary]\nnodes = [\"c1\"]\n[batches.wave]\nnodes = [\"a*\"]\n"
    )
}

#[test]
fn canary_then_waves() {
    let images = test_images();
    let mut s = Scenario::new("waves");
    let v1 = s.release(&waves_toml(&images.healthy, ""), &compose(""), "v1");
    for node in ["c1", "a1", "a2", "b1", "b2"] {
        s.start(node, "UTC");
    }
    let all = ["c1", "a1", "a2", "b1", "b2"];
    s.wait_all(&all, NodeState::Healthy, &v1, Duration::from_secs(120));
    let v2 = s.release(&waves_toml(&images.healthy_v2, ""), &compose(""), "v2");
    s.wait_all(&all, NodeState::Healthy, &v2, Duration::from_secs(120));
    println!("{}", s.timeline());

    let history = s.history();
    for release in [&v1, &v2] {
        let healthy = |node: &str| {
            first(&history, |s| {
                s.node == node && &s.release == release && s.state == NodeState::Healthy
            })
            .unwrap()
        };
        let starts = |node: &str| {
            first(&history, |s| {
                s.node == node && &s.release == release && s.state == NodeState::Converging
            })
            .unwrap()
        };
        for (earlier, later) in [
            (&["c1"][..], &["a1", "a2", "b1", "b2"][..]),
            (&["c1", "a1", "a2"][..], &["b1", "b2"][..]),
        ] {
            let done = earlier.iter().map(|n| healthy(n)).max().unwrap();
            for node in later {
                assert!(
                    starts(node) > done,
                    "{node} started {} before {earlier:?} were healthy\n{}",
                    &release[..8],
                    s.timeline()
                );
            }
        }
    }
    for node in all {
        assert!(
            s.running_image(node).starts_with(&images.healthy_v2),
            "{node} runs {}",
            s.running_image(node)
        );
    }
}

#[test]
fn max_parallel_one_converges_one_node_of_a_batch_at_a_time() {
    let images = test_images();
    let mut s = Scenario::new("parallel");
    let toml = |web: &str| waves_toml(web, "max_parallel = 1");
    let v1 = s.release(&toml(&images.healthy), &compose(""), "v1");
    let wave = ["a1", "a2", "a3"];
    for node in ["c1"].iter().chain(wave.iter()) {
        s.start(node, "UTC");
    }
    let all = ["c1", "a1", "a2", "a3"];
    s.wait_all(&all, NodeState::Healthy, &v1, Duration::from_secs(120));
    println!("{}", s.timeline());

    let history = s.history();
    let mut intervals = active_intervals(&history, &wave, &v1);
    intervals.sort_by_key(|i| i.1);
    assert_eq!(intervals.len(), 3, "{intervals:?}\n{}", s.timeline());
    for pair in intervals.windows(2) {
        assert!(
            pair[1].1 > pair[0].2,
            "{} converged while {} still did: {intervals:?}\n{}",
            pair[1].0,
            pair[0].0,
            s.timeline()
        );
    }
}

#[test]
fn a_rejected_release_changes_nothing_anywhere() {
    let images = test_images();
    let mut s = Scenario::new("rejected");
    let v1 = s.release(&waves_toml(&images.healthy, ""), &compose(""), "v1");
    let all = ["c1", "a1"];
    for node in all {
        s.start(node, "UTC");
    }
    s.wait_all(&all, NodeState::Healthy, &v1, Duration::from_secs(90));
    let running: Vec<String> = all.iter().map(|n| s.running_image(n)).collect();

    let unpinned = images.healthy.split('@').next().unwrap().to_string();
    let bad = s.release(&waves_toml(&unpinned, ""), &compose(""), "unpinned");
    s.wait_all(&all, NodeState::Rejected, &bad, Duration::from_secs(60));
    let records = s.records();
    assert!(
        records["c1"].message.contains("digest"),
        "the reason names what is wrong: {}",
        records["c1"].message
    );
    assert_eq!(all.map(|n| s.running_image(n)).to_vec(), running);

    // A policy violation: a pinned image from a registry the policy does not allow.
    std::fs::create_dir_all(s.work().join("policies")).unwrap();
    std::fs::write(
        s.work().join("policies/production.toml"),
        "[admission]\nallowed_registries = [\"registry.example.com/acme/\"]\n",
    )
    .unwrap();
    let with_policy = waves_toml(&images.healthy_v2, "").replace(
        "compose = \"stack/compose.yaml\"\n",
        "compose = \"stack/compose.yaml\"\npolicy = \"policies/production.toml\"\n",
    );
    let outside = s.release(&with_policy, &compose(""), "v2 from an unallowed registry");
    s.wait_all(&all, NodeState::Rejected, &outside, Duration::from_secs(60));
    for (node, record) in s.records() {
        assert!(
            record.message.contains(
                "of service `web` is from a registry the policy policies/production.toml does not allow"
            ),
            "{node}: {}",
            record.message
        );
    }
    assert_eq!(
        all.map(|n| s.running_image(n)).to_vec(),
        running,
        "every node keeps running what it ran"
    );
    println!("{}", s.timeline());
}

/// A compose file whose health check fails on node `node` only (the compose file sees
/// `GITFLEET_NODE`).
fn failing_on(node: &str) -> String {
    compose(&format!(
        "    healthcheck:\n      test: [\"CMD\", \"sh\", \"-c\", \"test ${{GITFLEET_NODE}} != {node} && wget -q -O /dev/null http://127.0.0.1:8080/\"]\n      interval: 1s\n      retries: 2\n",
    ))
}

/// A release that fails on one node of the second batch halts: with `action`, which
/// nodes go back, and a later batch never runs it; a new commit clears the halt.
fn bad_release(label: &str, action: &str) {
    let images = test_images();
    let mut s = Scenario::new(label);
    let toml = |web: &str| waves_toml(web, &format!("failure_action = \"{action}\""));
    let v1 = s.release(&toml(&images.healthy), &compose(""), "v1");
    let all = ["c1", "a1", "a2", "b1"];
    for node in all {
        s.start(node, "UTC");
    }
    s.wait_all(&all, NodeState::Healthy, &v1, Duration::from_secs(120));

    let bad = s.release(
        &toml(&images.healthy_v2),
        &failing_on("a2"),
        "v2, bad on a2",
    );
    let applied = if action == "rollback" {
        NodeState::RolledBack
    } else {
        NodeState::Healthy
    };
    s.wait_states(
        &[("c1", applied), ("a1", applied), ("a2", NodeState::Failed)],
        &bad,
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_secs(3));
    println!("{}", s.timeline());
    let history = s.history();
    assert!(
        first(&history, |st| st.node == "b1"
            && st.release == bad
            && st.state.holds_slot())
        .is_none(),
        "b1 must never start a halted release\n{}",
        s.timeline()
    );
    let runs_v1 = |node: &str| s.running_image(node).starts_with(&images.healthy);
    assert!(
        runs_v1("a2") && runs_v1("b1"),
        "the failed node restored, b1 untouched"
    );
    let back = action == "rollback";
    assert_eq!(
        (runs_v1("c1"), runs_v1("a1")),
        (back, back),
        "c1 and a1 after {action}"
    );

    let fixed = s.release(&toml(&images.healthy_v2), &compose(""), "v3, fixed");
    s.wait_all(&all, NodeState::Healthy, &fixed, Duration::from_secs(120));
}

#[test]
fn a_bad_release_halts_and_rollback_returns_every_node_that_applied_it() {
    bad_release("rollback", "rollback");
}

#[test]
fn a_bad_release_halts_and_pause_returns_only_the_failed_node() {
    bad_release("pause", "pause");
}

/// SPEC §3 rule 6 at the first batch: the canary fails the gate and restores; the
/// release is halted before any wave; no other node ever runs the bad digest.
#[test]
fn a_failing_canary_halts_the_release_before_any_wave() {
    let images = test_images();
    let mut s = Scenario::new("canary-fails");
    let toml = |web: &str| waves_toml(web, "failure_action = \"rollback\"");
    let v1 = s.release(&toml(&images.healthy), &compose(""), "v1");
    let all = ["c1", "a1", "a2"];
    for node in all {
        s.start(node, "UTC");
    }
    s.wait_all(&all, NodeState::Healthy, &v1, Duration::from_secs(120));

    let bad = s.release(
        &toml(&images.healthy_v2),
        &failing_on("c1"),
        "v2, bad on c1",
    );
    s.wait_states(&[("c1", NodeState::Failed)], &bad, Duration::from_secs(120));
    s.wait_states(
        &[("a1", NodeState::Halted), ("a2", NodeState::Halted)],
        &bad,
        Duration::from_secs(60),
    );
    println!("{}", s.timeline());
    let history = s.history();
    for node in ["a1", "a2"] {
        assert!(
            first(&history, |st| st.node == node
                && st.release == bad
                && st.state.holds_slot())
            .is_none(),
            "{node} must never start a release the canary failed\n{}",
            s.timeline()
        );
    }
    for node in all {
        assert!(
            s.running_image(node).starts_with(&images.healthy),
            "{node} runs v1"
        );
    }
}

/// A failure other than the gate's, on one node of a batch: two nodes in the first
/// batch (`max_parallel = 1`), a third in the next. The release publishes a host port
/// that is each node's own id (the compose file sees `GITFLEET_NODE`), and another
/// process holds the first node's. That node restores at once and fails naming the
/// port; its slot is free, so the other node takes the release. Within
/// `max_failure_ratio` the next batch follows; beyond it the release halts there and
/// `gitfleet status` shows the cause.
fn port_taken_on_one_node(label: &str, ratio: &str) -> (Scenario, [String; 3], String) {
    let images = test_images();
    let mut s = Scenario::new(label);
    let nodes = [free_port(), free_port(), free_port()].map(|p| p.to_string());
    let toml = |web: &str| {
        format!(
            "version = 1\n[fleet]\nname = \"e2e\"\ncompose = \"stack/compose.yaml\"\n\
             [images]\nweb = \"{web}\"\n\
             [rollout]\nbatches = [\"first\", \"next\"]\nmonitor = \"2s\"\nhealth_timeout = \"30s\"\n\
             max_parallel = 1\nmax_failure_ratio = {ratio}\n\
             [batches.first]\nnodes = [\"{}\", \"{}\"]\n[batches.next]\nnodes = [\"{}\"]\n",
            nodes[0], nodes[1], nodes[2]
        )
    };
    let v1 = s.release(&toml(&images.healthy), &compose(""), "v1");
    for node in &nodes {
        s.start(node, "UTC");
    }
    let all = nodes.each_ref().map(String::as_str);
    s.wait_all(&all, NodeState::Healthy, &v1, Duration::from_secs(120));

    let holder = std::net::TcpListener::bind(("127.0.0.1", nodes[0].parse::<u16>().unwrap()))
        .expect("hold the first node's port");
    let ports = compose("    ports: [\"127.0.0.1:${GITFLEET_NODE}:8080\"]\n");
    let bad = s.release(&toml(&images.healthy_v2), &ports, "v2 publishes a port");
    s.wait_states(
        &[(&nodes[0], NodeState::Failed)],
        &bad,
        Duration::from_secs(120),
    );
    let failed = &s.records()[&nodes[0]];
    assert!(
        failed.message.contains(&nodes[0])
            && failed.message.contains("previous containers restored"),
        "the cause and what was done: {}",
        failed.message
    );
    assert!(
        s.running_image(&nodes[0])
            .starts_with(&format!("{} true", images.healthy)),
        "the failed node runs v1 again: {}",
        s.running_image(&nodes[0])
    );
    drop(holder);
    (s, nodes, bad)
}

#[test]
fn a_port_taken_on_one_node_within_the_failure_ratio_lets_the_fleet_move_on() {
    let (s, nodes, bad) = port_taken_on_one_node("port-ratio", "0.5");
    s.wait_all(
        &[&nodes[1], &nodes[2]],
        NodeState::Healthy,
        &bad,
        Duration::from_secs(120),
    );
    println!("{}", s.timeline());
    assert_eq!(
        s.records()[&nodes[0]].state,
        NodeState::Failed,
        "not retried"
    );
}

#[test]
fn a_port_taken_on_one_node_beyond_the_failure_ratio_halts_with_the_cause_in_status() {
    let (s, nodes, bad) = port_taken_on_one_node("port-halt", "0.0");
    s.wait_states(
        &[(&nodes[2], NodeState::Halted)],
        &bad,
        Duration::from_secs(60),
    );
    println!("{}", s.timeline());
    let history = s.history();
    assert!(
        first(&history, |st| st.node == nodes[2]
            && st.release == bad
            && st.state.holds_slot())
        .is_none(),
        "the next batch never starts a halted release\n{}",
        s.timeline()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(["status", "--repo", &s.daemon.url("fleet.git")])
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert!(text.contains("halted"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", nodes[0])),
        "status names the cause: {text}"
    );
}

#[test]
fn a_revert_returns_everyone_at_once_ignoring_windows_and_batches() {
    let images = test_images();
    let mut s = Scenario::new("revert");
    let v1 = s.release(&waves_toml(&images.healthy, ""), &compose(""), "v1");
    let all = ["c1", "a1", "b1"];
    for node in all {
        s.start(node, "UTC");
    }
    s.wait_all(&all, NodeState::Healthy, &v1, Duration::from_secs(120));
    let v2 = s.release(&waves_toml(&images.healthy_v2, ""), &compose(""), "v2");
    s.wait_all(&all, NodeState::Healthy, &v2, Duration::from_secs(120));
    // Every window closed (it opens on 1 January only), in a commit of its own.
    let closed = waves_toml(
        &images.healthy_v2,
        "window = \"yearly\"\n[windows.yearly]\nschedule = \"0 3 1 1 *\"\nduration = \"1m\"",
    );
    let closed = closed.replace(
        "nodes = [\"c1\"]\n",
        "nodes = [\"c1\"]\nwindow = \"yearly\"\n",
    );
    let windows = s.release(&closed, &compose(""), "close the windows");
    s.wait_all(&all, NodeState::Healthy, &windows, Duration::from_secs(60));

    git(&s.work(), &["revert", "--no-edit", &v2]);
    let revert = s.push();
    s.wait_all(&all, NodeState::Healthy, &revert, Duration::from_secs(60));
    println!("{}", s.timeline());
    for node in all {
        assert!(s.running_image(node).starts_with(&images.healthy), "{node}");
    }
    let history = s.history();
    let canary_done = first(&history, |st| {
        st.node == "c1" && st.release == revert && st.state == NodeState::Healthy
    })
    .unwrap();
    let b1_started = first(&history, |st| {
        st.node == "b1" && st.release == revert && st.state == NodeState::Converging
    })
    .unwrap();
    assert!(
        b1_started < canary_done,
        "the last batch did not wait for the canary\n{}",
        s.timeline()
    );
}

#[test]
fn an_agent_killed_mid_converge_ends_converged_and_the_rollout_goes_on() {
    let images = test_images();
    let mut s = Scenario::new("crash");
    let v1 = s.release(&waves_toml(&images.healthy, ""), &compose(""), "v1");
    let all = ["c1", "a1", "b1"];
    for node in all {
        s.start(node, "UTC");
    }
    s.wait_all(&all, NodeState::Healthy, &v1, Duration::from_secs(120));
    // The slow image takes seconds to become healthy: time to kill the canary mid-way.
    let v2 = s.release(&waves_toml(&images.slow, ""), &compose(""), "v2, slow");
    s.wait_states(
        &[("c1", NodeState::Converging)],
        &v2,
        Duration::from_secs(60),
    );
    s.kill("c1");
    std::thread::sleep(Duration::from_millis(500));
    s.start("c1", "UTC");
    s.wait_all(&all, NodeState::Healthy, &v2, Duration::from_secs(180));
    println!("{}", s.timeline());
    let out = s
        .docker()
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!(
            "label=com.docker.compose.project={}",
            s.project("c1")
        ))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        names,
        format!("{}-web-1", s.project("c1")),
        "exactly one container"
    );
}

#[test]
fn windows_open_in_each_nodes_own_time_and_images_are_pulled_before() {
    use chrono::{DurationRound, TimeDelta, Utc};
    let images = test_images();
    let mut s = Scenario::new("windows");
    let web = common::unique_image(&images.healthy, &s.project("windows"));
    // Both open at UTC minute T: n1 (New York, whole hours from UTC) at local minute T,
    // k1 (Kathmandu, +05:45) at local minute T + 45. An hourly schedule at both local
    // minutes: the other minute of each node fell 15 and 45 minutes ago, and those
    // 10-minute windows have closed.
    let at = (Utc::now() + TimeDelta::seconds(45))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap()
        + TimeDelta::minutes(1);
    let m1 = at.format("%M").to_string().parse::<u32>().unwrap();
    let m2 = (m1 + 45) % 60;
    let toml = format!(
        "version = 1\n[fleet]\nname = \"e2e\"\ncompose = \"stack/compose.yaml\"\n[images]\nweb = \"{web}\"\n\
         [rollout]\nmonitor = \"2s\"\nhealth_timeout = \"30s\"\nwindow = \"shop\"\n\
         [windows.shop]\nschedule = \"{m1},{m2} * * * *\"\nduration = \"10m\"\n"
    );
    let release = s.release(&toml, &compose(""), "v1, in the shops' window");
    s.start("n1", "America/New_York");
    s.start("k1", "Asia/Kathmandu");
    s.wait_all(
        &["n1", "k1"],
        NodeState::WaitingWindow,
        &release,
        Duration::from_secs(30),
    );
    let records = s.records();
    for (node, tz, opens) in [
        ("n1", chrono_tz::America::New_York, at),
        ("k1", chrono_tz::Asia::Kathmandu, at),
    ] {
        let local = opens
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string();
        let utc = opens.format("%Y-%m-%d %H:%M UTC").to_string();
        let message = &records[node].message;
        assert!(
            message.contains(&format!("opens {local} ({utc})")),
            "{node}: {message}"
        );
    }
    // Meanwhile the image is pulled, before the window opens.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s
        .docker()
        .args(["image", "inspect", &web])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the image was not pre-pulled");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        Utc::now() < at,
        "the test was too slow to see the window closed"
    );

    s.wait_all(
        &["n1", "k1"],
        NodeState::Healthy,
        &release,
        Duration::from_secs(200),
    );
    println!("{}", s.timeline());
    let history = s.history();
    for node in ["n1", "k1"] {
        let started = history
            .iter()
            .find(|st| st.node == node && st.state == NodeState::Converging)
            .unwrap();
        assert!(
            started.since >= at,
            "{node} converged at {} before its window opened at {at}",
            started.since
        );
    }
}

#[test]
fn a_listed_node_that_never_reports_holds_its_batch_until_stale() {
    let images = test_images();
    let mut s = Scenario::new("stale");
    let toml = format!(
        "version = 1\n[fleet]\nname = \"e2e\"\ncompose = \"stack/compose.yaml\"\n[images]\nweb = \"{}\"\n\
         [rollout]\nbatches = [\"canary\"]\nmonitor = \"2s\"\nhealth_timeout = \"30s\"\nstale_after = \"20s\"\n\
         [batches.canary]\nnodes = [\"c1\", \"ghost\"]\n",
        images.healthy
    );
    let release = s.release(&toml, &compose(""), "v1; ghost is never set up");
    let committed = chrono::Utc::now();
    s.start("c1", "UTC");
    s.start("r1", "UTC");
    s.wait_all(
        &["c1"],
        NodeState::Healthy,
        &release,
        Duration::from_secs(60),
    );
    s.wait_all(
        &["r1"],
        NodeState::WaitingBatch,
        &release,
        Duration::from_secs(30),
    );
    assert!(
        s.records()["r1"].message.contains("ghost"),
        "{}",
        s.records()["r1"].message
    );
    assert_eq!(s.status_view("ghost"), "pending", "ghost holds its batch");
    s.wait_all(
        &["r1"],
        NodeState::Healthy,
        &release,
        Duration::from_secs(90),
    );
    println!("{}", s.timeline());
    let started = s
        .history()
        .into_iter()
        .find(|st| st.node == "r1" && st.state == NodeState::Converging)
        .unwrap();
    assert!(
        started.since - committed >= chrono::TimeDelta::seconds(19),
        "r1 started {} after the release, before ghost was stale",
        started.since - committed
    );
    assert_eq!(s.status_view("ghost"), "stale", "after stale_after");
}

/// A test environment of its own (scripts/testenv with another directory and port):
/// an engine this test may restart without disturbing the others.
struct PrivateEngine {
    dir: TempDir,
    port: u16,
    /// Its env file: DOCKER_HOST, the registry, the pinned test images.
    env: BTreeMap<String, String>,
}

impl PrivateEngine {
    fn up(label: &str) -> Self {
        let mut engine = PrivateEngine {
            dir: TempDir::new(&format!("engine-{label}")),
            port: common::free_port(),
            env: BTreeMap::new(),
        };
        engine.testenv(&["up"]);
        let env_file = std::fs::read_to_string(engine.dir.path().join("env")).unwrap();
        engine.env = env_file
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        engine
    }

    fn testenv(&self, args: &[&str]) {
        let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testenv"))
            .args(args)
            .env("GITFLEET_TESTENV_DIR", self.dir.path())
            .env("GITFLEET_TEST_REGISTRY_PORT", self.port.to_string())
            .env_remove("GITFLEET_TESTENV_NET")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/testenv {args:?} failed");
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        self.testenv(&["down", "--purge"]);
    }
}

#[test]
fn an_engine_restart_during_monitor_never_reports_a_dead_stack_healthy() {
    let engine = PrivateEngine::up("restart");
    let mut s = Scenario::new("restart");
    s.docker_host = Some(engine.env["DOCKER_HOST"].clone());
    let toml = |web: &str, monitor: &str| {
        format!(
            "version = 1\n[fleet]\nname = \"e2e\"\ncompose = \"stack/compose.yaml\"\n[images]\nweb = \"{web}\"\n\
             [rollout]\nmonitor = \"{monitor}\"\nhealth_timeout = \"30s\"\n"
        )
    };
    let (v1_image, v2_image) = (
        &engine.env["GITFLEET_TEST_IMAGE_HEALTHY"],
        &engine.env["GITFLEET_TEST_IMAGE_HEALTHY_V2"],
    );
    let v1 = s.release(&toml(v1_image, "2s"), &compose(""), "v1");
    s.start("n1", "UTC");
    s.wait_all(&["n1"], NodeState::Healthy, &v1, Duration::from_secs(60));

    let v2 = s.release(
        &toml(v2_image, "15s"),
        &compose(""),
        "v2, monitored for 15 s",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.running_image("n1") != format!("{v2_image} true") {
        assert!(Instant::now() < deadline, "v2 never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    engine.testenv(&["restart-engine"]);

    let deadline = Instant::now() + Duration::from_secs(120);
    let settled = loop {
        let record = s.records().remove("n1").unwrap();
        if record.release == v2 && matches!(record.state, NodeState::Healthy | NodeState::Failed) {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "n1 never settled\n{}",
            s.timeline()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("{}", s.timeline());
    let runs = s.running_image("n1");
    match settled.state {
        NodeState::Healthy => {
            assert_eq!(runs, format!("{v2_image} true"), "healthy means running v2")
        }
        _ => assert_eq!(
            runs,
            format!("{v1_image} true"),
            "failed means v1 restored: {}",
            settled.message
        ),
    }
}
