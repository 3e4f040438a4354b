//! `gitfleet agent --once` against a real dockerd, registry and a bare Git repository.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gitfleet::core::status::{NodeState, StatusRecord};
use gitfleet::engine::converge::observe;
use gitfleet::engine::docker::DockerEngine;
use gitfleet::git::Mirror;

use common::{AgentProcess, GitDaemon, TempDir, git, test_images, unique_image};

/// The stack most agent tests run: `web` depends on `api`.
const STACK: &str = "services:\n  api:\n    image: x\n    init: true\n  web:\n    image: x\n    init: true\n    depends_on: [api]\n";

struct Fleet {
    root: TempDir,
    project: String,
}

impl Fleet {
    fn new(label: &str) -> Self {
        let root = TempDir::new(label);
        let fleet = Fleet {
            project: format!("gft-agent-{label}-{}", std::process::id()),
            root,
        };
        std::fs::create_dir_all(fleet.bare()).unwrap();
        git(&fleet.bare(), &["init", "--bare", "-q", "-b", "release"]);
        std::fs::create_dir_all(fleet.work().join("stack")).unwrap();
        git(&fleet.work(), &["init", "-q", "-b", "release"]);
        fleet
    }

    fn bare(&self) -> PathBuf {
        self.root.path().join("fleet.git")
    }

    fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    /// Commits a release with these images and pushes it to `release`; returns its id.
    fn release(&self, web: &str, api: &str, message: &str) -> String {
        self.release_with(web, api, "", message)
    }

    /// [`Fleet::release`] with `rollout_extra` (lines) added to `[rollout]`.
    fn release_with(&self, web: &str, api: &str, rollout_extra: &str, message: &str) -> String {
        self.release_stack(
            web,
            api,
            &format!("monitor = \"2s\"\nhealth_timeout = \"60s\"\n{rollout_extra}"),
            STACK,
            message,
        )
    }

    /// Commits a release with these images, `rollout` (lines of `[rollout]` after
    /// `batches`) and this compose file, and pushes it to `release`; returns its id.
    fn release_stack(
        &self,
        web: &str,
        api: &str,
        rollout: &str,
        compose: &str,
        message: &str,
    ) -> String {
        let work = self.work();
        std::fs::write(
            work.join("fleet.toml"),
            format!(
                "version = 1\n[fleet]\nname = \"shop\"\ncompose = \"stack/compose.yaml\"\n[images]\nweb = \"{web}\"\napi = \"{api}\"\n\
                 [rollout]\nbatches = [\"canary\"]\n{rollout}[batches.canary]\nnodes = [\"n1\"]\n\
                 [notify]\nurl_env = \"GFT_TEST_NOTIFY_URL\"\nformat = \"json\"\nevents = [\"healthy\", \"failed\", \"rejected\"]\n"
            ),
        )
        .unwrap();
        std::fs::write(work.join("stack/compose.yaml"), compose).unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(
            &work,
            &["push", "-q", "-f", self.bare().to_str().unwrap(), "release"],
        );
        git(&work, &["rev-parse", "HEAD"])
    }

    /// `source` under a repository only this test uses (see [`unique_image`]).
    fn unique_image(&self, source: &str, name: &str) -> String {
        unique_image(source, &format!("{}-{name}", self.project))
    }

    fn agent_once(&self) -> (Option<i32>, String) {
        self.agent_once_with(&[])
    }

    fn agent_once_with(&self, env: &[(&str, &str)]) -> (Option<i32>, String) {
        self.agent_once_at(&format!("file://{}", self.bare().display()), env)
    }

    /// `agent --once` against the remote at `url`, with `env` added.
    fn agent_once_at(&self, url: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
            .envs(env.iter().copied())
            .args([
                "agent",
                "--once",
                "--node",
                "n1",
                "--project",
                &self.project,
                "--repo",
                url,
            ])
            .arg("--state-dir")
            .arg(self.state())
            .output()
            .unwrap();
        (out.status.code(), common::output_text(&out))
    }

    fn try_record(&self) -> Option<StatusRecord> {
        let mirror = Mirror::open(
            &self.root.path().join("reader.git"),
            &format!("file://{}", self.bare().display()),
        )
        .ok()?;
        mirror.fetch(&["fleet-status"]).ok()?;
        let (records, _) = mirror.records("fleet-status").ok()?;
        records.into_iter().find(|r| r.node.as_str() == "n1")
    }

    fn record(&self) -> StatusRecord {
        self.try_record().expect("n1 reported")
    }

    /// n1's record, which must have `state` at `release`.
    fn record_is(&self, state: NodeState, release: &str) -> StatusRecord {
        let record = self.record();
        assert_eq!(
            (record.state, record.release.as_str()),
            (state, release),
            "{}",
            record.message
        );
        record
    }

    /// Starts an agent in the background with these extra flags.
    fn spawn_agent(&self, repo_url: &str, extra: &[&str]) -> AgentProcess {
        AgentProcess(
            Command::new(env!("CARGO_BIN_EXE_gitfleet"))
                .args([
                    "agent",
                    "--node",
                    "n1",
                    "--project",
                    &self.project,
                    "--repo",
                    repo_url,
                ])
                .arg("--state-dir")
                .arg(self.state())
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Waits (up to a minute) until n1's record satisfies `ok`.
    fn wait_for_record(&self, what: &str, ok: impl Fn(&StatusRecord) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.try_record().is_some_and(|r| ok(&r)) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Removes the project's containers and default network.
    async fn cleanup(&self, engine: &DockerEngine) {
        for o in observe(engine, &self.project).await.unwrap() {
            engine.remove(&o.id).await.unwrap();
        }
        let _ = engine
            .client()
            .remove_network(&format!("{}_default", self.project))
            .await;
    }

    fn status_commits(&self) -> usize {
        git(&self.bare(), &["rev-list", "--count", "fleet-status"])
            .parse()
            .unwrap()
    }

    /// n1's record as each status commit that changed it left it, oldest first.
    fn n1_history(&self) -> Vec<StatusRecord> {
        let bare = self.bare();
        git(
            &bare,
            &[
                "rev-list",
                "--reverse",
                "fleet-status",
                "--",
                "nodes/n1.toml",
            ],
        )
        .lines()
        .map(|c| {
            StatusRecord::from_toml(&git(&bare, &["show", &format!("{c}:nodes/n1.toml")])).unwrap()
        })
        .collect()
    }

    /// Serves the bare remote over `git daemon` (pushes allowed).
    fn serve(&self) -> GitDaemon {
        git(&self.bare(), &["config", "daemon.receivepack", "true"]);
        GitDaemon::start(self.root.path())
    }
}

/// A webhook receiver on loopback: its URL, and the bodies it was sent.
fn notification_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/notify/T0KEN", listener.local_addr().unwrap());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = sender.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (url, receiver)
}

async fn ids(engine: &DockerEngine, project: &str) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = observe(engine, project)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.service, o.id))
        .collect();
    ids.sort();
    ids
}

/// Exactly one container per service (api, web), each running, none kept as previous.
async fn assert_one_running_container_per_service(engine: &DockerEngine, project: &str) {
    let containers = observe(engine, project).await.unwrap();
    assert_eq!(
        containers.len(),
        2,
        "exactly one container per service: {containers:?}"
    );
    assert!(
        containers.iter().all(|c| c.running && !c.is_previous()),
        "{containers:?}"
    );
}

#[tokio::test]
async fn a_release_converges_reports_healthy_then_rejects_and_fails_safely() {
    let images = test_images();
    let fleet = Fleet::new("once");
    let engine = DockerEngine::connect().await.unwrap();
    let (notify_url, notifications) = notification_receiver();
    let notify_env = [("GFT_TEST_NOTIFY_URL", notify_url.as_str())];
    let notified = |state: &str| {
        let body = notifications
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a notification");
        let doc: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert_eq!(
            (doc["node"].as_str(), doc["state"].as_str()),
            (Some("n1"), Some(state)),
            "{body}"
        );
        assert!(!body.contains(&notify_url));
    };

    let first = fleet.release(&images.healthy, &images.healthy, "First release");
    let (code, out) = fleet.agent_once_with(&notify_env);
    notified("healthy");
    assert_eq!(code, Some(0), "{out}");
    let record = fleet.record();
    assert_eq!(record.state, NodeState::Healthy, "{record:?}");
    assert_eq!(record.release, first);
    assert_eq!(record.images.0.len(), 64);
    let running = ids(&engine, &fleet.project).await;
    assert_eq!(running.len(), 2);

    // A second run changes nothing: no container touched, no status commit.
    let commits = fleet.status_commits();
    let (code, out) = fleet.agent_once();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(ids(&engine, &fleet.project).await, running);
    assert_eq!(fleet.status_commits(), commits);

    // An unpinned image: rejected with the reason, containers untouched.
    let unpinned = fleet.release(
        "registry.example.com/acme/web:latest",
        &images.healthy,
        "Unpinned",
    );
    let (code, out) = fleet.agent_once_with(&notify_env);
    assert_eq!(code, Some(3), "{out}");
    notified("rejected");
    let record = fleet.record();
    assert_eq!(
        (record.state, record.release.as_str()),
        (NodeState::Rejected, unpinned.as_str())
    );
    assert!(
        record.message.contains("not pinned by digest"),
        "{}",
        record.message
    );
    assert_eq!(ids(&engine, &fleet.project).await, running);

    // A release that fails its gate: failed, previous containers restored.
    let bad = fleet.release(&images.unhealthy, &images.healthy, "Bad web");
    let (code, out) = fleet.agent_once_with(&notify_env);
    assert_eq!(code, Some(1), "{out}");
    notified("failed");
    let record = fleet.record();
    assert_eq!(
        (record.state, record.release.as_str()),
        (NodeState::Failed, bad.as_str())
    );
    assert!(record.message.contains("`web`"), "{}", record.message);
    assert_eq!(
        ids(&engine, &fleet.project).await,
        running,
        "the previous containers run again"
    );

    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn older_pulled_images_are_pruned_and_the_previous_release_kept() {
    let images = test_images();
    let fleet = Fleet::new("prune");
    let engine = DockerEngine::connect().await.unwrap();
    let api = fleet.unique_image(&images.healthy, "api");
    let releases: Vec<String> = [
        ("a", &images.healthy),
        ("b", &images.healthy_v2),
        ("c", &images.healthy),
    ]
    .into_iter()
    .map(|(name, source)| fleet.unique_image(source, name))
    .collect();
    for (i, web) in releases.iter().enumerate() {
        fleet.release(web, &api, &format!("release {i}"));
        let (code, out) = fleet.agent_once();
        assert_eq!(code, Some(0), "{out}");
    }
    let present = |reference: &str| {
        let engine = engine.clone();
        let reference = reference.to_string();
        async move { engine.client().inspect_image(&reference).await.is_ok() }
    };
    assert!(
        !present(&releases[0]).await,
        "the oldest release's image is pruned"
    );
    assert!(
        present(&releases[1]).await,
        "the previous release's image is kept for a rollback"
    );
    assert!(
        present(&releases[2]).await && present(&api).await,
        "the running images stay"
    );

    fleet.cleanup(&engine).await;
}

/// POSTs `body` to the agent's /hook with `signature`; returns the HTTP status code.
/// One HTTP request to the agent's listener: (status code, body).
fn http(port: u16, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_string())
}

fn post_hook(port: u16, body: &str, signature: &str) -> u16 {
    let request = format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http(port, &request).0
}

fn get(port: u16, path: &str) -> (u16, String) {
    http(port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

/// A sample's labels: (name, value), in order.
type Labels = Vec<(String, String)>;

/// A Prometheus (OpenMetrics) text exposition, parsed.
struct Exposition {
    /// `# TYPE` of each family.
    types: std::collections::BTreeMap<String, String>,
    /// Every sample: name, labels, value.
    samples: Vec<(String, Labels, f64)>,
}

impl Exposition {
    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    }

    /// Every metric docs/metrics.md lists is exported with its documented type, except
    /// `absent_until_seen`: labelled families with no series yet, which the encoder
    /// leaves out (a counter by service appears with the first gate failure).
    fn assert_documented_families(&self, absent_until_seen: &[&str]) {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
            .unwrap();
        let documented: Vec<(String, String)> = docs
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells
                    .get(1)?
                    .strip_prefix("`gitfleet_")?
                    .strip_suffix('`')?;
                Some((format!("gitfleet_{name}"), cells.get(2)?.to_string()))
            })
            .collect();
        assert_eq!(documented.len(), 11, "{documented:?}");
        for (name, kind) in documented {
            // OpenMetrics names a counter's family without its `_total` suffix.
            let family = match kind.as_str() {
                "counter" => name.strip_suffix("_total").unwrap_or(&name),
                _ => &name,
            };
            let seen = self.samples.iter().any(|(n, _, _)| n.starts_with(family));
            if absent_until_seen.contains(&name.as_str()) && !seen {
                assert_eq!(self.types.get(family), None, "{family}");
                continue;
            }
            assert_eq!(
                self.types.get(family),
                Some(&kind),
                "# TYPE of {family} (docs/metrics.md lists {name})"
            );
            assert!(seen, "no sample of {family}");
        }
    }
}

/// `a="x",b="y\"z"}…` (after the `{`): the labels, and the text after the `}`.
fn parse_labels(mut rest: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        if !labels.is_empty() {
            rest = rest.strip_prefix(',')?;
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = &after[end + 1..];
    }
}

/// Parses the text format strictly: `# HELP`, `# TYPE`, `# UNIT` and a final `# EOF`;
/// every other line `name{label="value",…} value` with a float value, of a family
/// declared by `# TYPE` before it.
fn parse_metrics(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition {
        types: Default::default(),
        samples: Vec::new(),
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("no `# EOF` at the end".into());
    }
    let is_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) if is_name(name) => {
                    exposition.types.insert(name.to_string(), kind.to_string());
                }
                (Some("HELP" | "UNIT"), Some(name), _) if is_name(name) => {}
                _ => return Err(format!("bad comment line `{line}`")),
            }
            continue;
        }
        let bad = || format!("bad sample line `{line}`");
        let name_end = line.find(['{', ' ']).ok_or_else(bad)?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            (labels, rest) = parse_labels(inner).ok_or_else(bad)?;
            if !labels.iter().all(|(k, _)| is_name(k)) {
                return Err(bad());
            }
        }
        let mut fields = rest.strip_prefix(' ').ok_or_else(bad)?.split(' ');
        let value = fields.next().ok_or_else(bad)?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("`{v}` is not a float in `{line}`"))?,
        };
        if fields.next().is_some_and(|t| t.parse::<f64>().is_err()) || fields.next().is_some() {
            return Err(bad());
        }
        let family = ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| exposition.types.contains_key(*f))
            })
            .unwrap_or(name);
        if !is_name(name) || !exposition.types.contains_key(family) {
            return Err(format!("`{name}` has no # TYPE before it"));
        }
        exposition.samples.push((name.to_string(), labels, value));
    }
    Ok(exposition)
}

#[tokio::test]
async fn drift_is_put_back_at_once_a_signed_webhook_fetches_now_and_sigterm_stops_the_agent() {
    let images = test_images();
    let fleet = Fleet::new("drift");
    let engine = DockerEngine::connect().await.unwrap();
    fleet.release(&images.healthy, &images.healthy, "First release");
    // Over git:// so that only the webhook, not a watch on the repository's files,
    // can tell the agent about the second release.
    let daemon = fleet.serve();
    let port = common::free_port();
    let secret_file = fleet.root.path().join("hook-secret");
    std::fs::write(&secret_file, "s3cret\n").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let secret = secret_file.to_string_lossy().to_string();
    let mut agent = fleet.spawn_agent(
        &daemon.url("fleet.git"),
        &[
            "--interval",
            "10m",
            "--listen",
            &listen,
            "--webhook-secret-file",
            &secret,
        ],
    );
    fleet.wait_for_record("healthy", |r| r.state == NodeState::Healthy);

    // A container removed by hand is put back at once.
    let before = ids(&engine, &fleet.project).await;
    let web = before.iter().find(|(s, _)| s == "web").unwrap().1.clone();
    engine.remove(&web).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = ids(&engine, &fleet.project).await;
        if now.len() == 2 && now.iter().all(|(_, id)| id != &web) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web was not put back: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    fleet.wait_for_record("the drift in the status", |r| {
        r.message.contains("drift repaired: `web` was removed")
    });

    // A new release, announced by webhook: a bad signature is refused and fetches
    // nothing; a good one makes the agent fetch and converge at once (poll is 10m).
    let second = fleet.release(&images.healthy_v2, &images.healthy, "Second release");
    let body = r#"{"ref":"refs/heads/release"}"#;
    assert_eq!(post_hook(port, body, "sha256=0000"), 401);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_ne!(
        fleet.record().release,
        second,
        "an unsigned hook triggers nothing"
    );
    let mac = gitfleet::hmac::hmac::<sha2::Sha256>(b"s3cret", body.as_bytes());
    let signature = format!("sha256={}", gitfleet::config::fleet::hex(&mac));
    // `/metrics`, scraped all through the reconcile the hook starts (pull, converge,
    // gate), parses every time as a Prometheus exposition with the documented families.
    let scrape = || {
        let (code, text) = get(port, "/metrics");
        assert_eq!(code, 200, "{text}");
        parse_metrics(&text).unwrap_or_else(|e| panic!("{e} in\n{text}"))
    };
    let reconciles = |m: &Exposition| m.value("gitfleet_reconcile_duration_seconds_count", &[]);
    let before = reconciles(&scrape()).unwrap();
    assert_eq!(post_hook(port, body, &signature), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut during = 0;
    let metrics = loop {
        let metrics = scrape();
        let record = fleet.try_record();
        let converged = record
            .as_ref()
            .is_some_and(|r| r.release == second && r.state == NodeState::Healthy);
        if record.is_some_and(|r| r.release == second && r.state == NodeState::Converging) {
            during += 1;
        }
        if converged && reconciles(&metrics) > Some(before) {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the second release"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(during > 0, "no scrape while the node converged");
    metrics.assert_documented_families(&["gitfleet_gate_failures_total"]);
    let one = |name: &str, labels: &[(&str, &str)]| metrics.value(name, labels);
    assert_eq!(
        one("gitfleet_release_info", &[("release", &second)]),
        Some(1.0)
    );
    assert_eq!(
        one("gitfleet_node_state", &[("state", "healthy")]),
        Some(1.0)
    );
    assert_eq!(
        one("gitfleet_node_state", &[("state", "converging")]),
        Some(0.0)
    );
    assert_eq!(one("gitfleet_window_open", &[]), Some(1.0));
    assert!(one("gitfleet_reconciles_total", &[("result", "healthy")]) >= Some(2.0));
    assert!(one("gitfleet_git_fetch_duration_seconds_count", &[]) > Some(0.0));
    assert!(
        one(
            "gitfleet_git_fetch_duration_seconds_bucket",
            &[("le", "+Inf")]
        ) == one("gitfleet_git_fetch_duration_seconds_count", &[]),
        "the +Inf bucket counts every fetch"
    );
    let last = one("gitfleet_last_reconcile_timestamp_seconds", &[]).unwrap();
    assert!(
        (chrono::Utc::now().timestamp() as f64 - last).abs() < 120.0,
        "{last}"
    );
    assert_eq!(get(port, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(get(port, "/healthz").0, 200);

    assert_eq!(agent.terminate(), Some(0), "SIGTERM ends the agent cleanly");
    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn a_record_the_remote_cannot_take_waits_in_the_outbox_and_is_delivered_later() {
    let images = test_images();
    let fleet = Fleet::new("outbox");
    let engine = DockerEngine::connect().await.unwrap();
    git(&fleet.bare(), &["config", "daemon.receivepack", "true"]);
    let first = fleet.release(&images.healthy, &images.healthy, "First release");
    let daemon = GitDaemon::start(fleet.root.path());
    let (port, url) = (daemon.port, daemon.url("fleet.git"));
    let mut agent = fleet.spawn_agent(&url, &["--once"]);
    // The remote goes down while the node holds its gate, between the `converging`
    // claim and the `healthy` report.
    fleet.wait_for_record("the converging claim", |r| r.state == NodeState::Converging);
    drop(daemon);
    assert_eq!(agent.wait(), Some(0));
    // The `monitoring` report may have landed just before the remote went down.
    assert!(
        [NodeState::Converging, NodeState::Monitoring].contains(&fleet.record().state),
        "the remote never got the healthy report: {:?}",
        fleet.record()
    );
    let outbox = fleet.state().join("outbox");
    let mut waiting: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    waiting.sort();
    assert!(
        waiting.last().is_some_and(|f| f.ends_with("-healthy.toml")) && waiting.len() <= 2,
        "the reports wait in the outbox, `healthy` last: {waiting:?}"
    );

    let _daemon = GitDaemon::start_on(fleet.root.path(), port);
    let mut again = fleet.spawn_agent(&url, &["--once"]);
    assert_eq!(again.wait(), Some(0));
    let record = fleet.record();
    assert_eq!(
        (record.state, record.release.as_str()),
        (NodeState::Healthy, first.as_str())
    );
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        0,
        "the outbox is delivered"
    );
    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn an_agent_killed_mid_converge_ends_converged_and_reported_when_started_again() {
    let images = test_images();
    let fleet = Fleet::new("kill9");
    let engine = DockerEngine::connect().await.unwrap();
    fleet.release(&images.healthy, &images.healthy, "First release");
    assert_eq!(fleet.agent_once().0, Some(0));
    let second = fleet.release(&images.healthy_v2, &images.healthy, "Second release");
    let mut agent = fleet.spawn_agent(&format!("file://{}", fleet.bare().display()), &["--once"]);
    fleet.wait_for_record("the converging claim", |r| {
        r.state == NodeState::Converging && r.release == second
    });
    agent.kill();

    let (code, out) = fleet.agent_once();
    assert_eq!(code, Some(0), "{out}");
    let record = fleet.record();
    assert_eq!(
        (record.state, record.release.as_str()),
        (NodeState::Healthy, second.as_str())
    );
    assert_one_running_container_per_service(&engine, &fleet.project).await;
    fleet.cleanup(&engine).await;
}

/// No two commits of n1 on the status branch carry the same record, and each release
/// was reported healthy exactly once.
fn assert_reported_once(fleet: &Fleet, releases: &[&str]) {
    let history = fleet.n1_history();
    for pair in history.windows(2) {
        assert_ne!(pair[0], pair[1], "an identical record committed twice");
    }
    for release in releases {
        let healthy = history
            .iter()
            .filter(|r| r.release == *release && r.state == NodeState::Healthy)
            .count();
        assert_eq!(
            healthy, 1,
            "healthy at {release} reported once: {history:#?}"
        );
    }
}

#[tokio::test]
async fn an_agent_killed_during_a_status_push_or_the_gate_ends_converged_and_reported_once() {
    let images = test_images();
    let fleet = Fleet::new("killpush");
    let engine = DockerEngine::connect().await.unwrap();
    let daemon = fleet.serve();
    let url = daemon.url("fleet.git");
    let killed_at = |failpoint: &str| {
        let (code, out) = fleet.agent_once_at(&url, &[("GITFLEET_TEST_FAILPOINT", failpoint)]);
        assert_eq!(code, None, "killed at {failpoint}: {out}");
        assert!(out.contains(&format!("failpoint {failpoint}")), "{out}");
    };

    // Killed once its `converging` claim is on the remote, before touching a container.
    let first = fleet.release(&images.healthy, &images.healthy, "First release");
    killed_at("pushed-converging");
    fleet.record_is(NodeState::Converging, &first);
    assert!(ids(&engine, &fleet.project).await.is_empty());
    let (code, out) = fleet.agent_once_at(&url, &[]);
    assert_eq!(code, Some(0), "{out}");
    fleet.record_is(NodeState::Healthy, &first);

    // Killed once its `healthy` report is on the remote, before its mirror or the
    // agent learn that the push landed: the restart reports nothing twice.
    let second = fleet.release(&images.healthy_v2, &images.healthy, "Second release");
    killed_at("pushed-healthy");
    fleet.record_is(NodeState::Healthy, &second);
    let running = ids(&engine, &fleet.project).await;
    let commits = fleet.status_commits();
    let (code, out) = fleet.agent_once_at(&url, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(fleet.status_commits(), commits, "nothing pushed again");
    assert_eq!(
        ids(&engine, &fleet.project).await,
        running,
        "no container touched"
    );
    let record = fleet.record_is(NodeState::Healthy, &second);
    assert_eq!(record.images.0.len(), 64);

    // Killed while holding the gate: `monitoring` is on the remote with the gate's
    // deadline, and the gate is journaled. The restarted agent resumes that gate, with
    // the same deadline, and reports healthy.
    // A monitor long enough that the restarted agent's first look is still inside it.
    let third = fleet.release_stack(
        &images.healthy,
        &images.healthy_v2,
        "monitor = \"8s\"\nhealth_timeout = \"60s\"\n",
        STACK,
        "Third release",
    );
    killed_at("during-monitor");
    let monitoring = fleet.record_is(NodeState::Monitoring, &third);
    assert!(
        monitoring
            .message
            .starts_with("holding the health gate; decides by"),
        "{}",
        monitoring.message
    );
    let converged_at = || {
        let journal = std::fs::read_to_string(fleet.state().join("node.toml")).unwrap();
        let table: toml::Table = toml::from_str(&journal).unwrap();
        table["gate"]["run"]["converged_at"].to_string()
    };
    let gate_began = converged_at();
    // Killed again in the resumed gate: it kept the first gate's times.
    killed_at("during-monitor");
    assert_eq!(
        converged_at(),
        gate_began,
        "the resumed gate keeps its deadline"
    );
    let (code, out) = fleet.agent_once_at(&url, &[]);
    assert_eq!(code, Some(0), "{out}");
    fleet.record_is(NodeState::Healthy, &third);
    let journal = std::fs::read_to_string(fleet.state().join("node.toml")).unwrap();
    assert!(!journal.contains("[gate"), "{journal}");

    assert_one_running_container_per_service(&engine, &fleet.project).await;
    assert_reported_once(&fleet, &[&first, &second, &third]);
    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn with_self_heal_off_drift_is_reported_once_and_not_repaired() {
    let images = test_images();
    let fleet = Fleet::new("noheal");
    let engine = DockerEngine::connect().await.unwrap();
    fleet.release_with(
        &images.healthy,
        &images.healthy,
        "self_heal = false\n",
        "First release",
    );
    let url = format!("file://{}", fleet.bare().display());
    let mut agent = fleet.spawn_agent(&url, &["--interval", "1s", "--listen", "none"]);
    fleet.wait_for_record("healthy", |r| r.state == NodeState::Healthy);

    let before = ids(&engine, &fleet.project).await;
    let web = before.iter().find(|(s, _)| s == "web").unwrap().1.clone();
    engine.remove(&web).await.unwrap();
    fleet.wait_for_record("the drift in the status", |r| {
        r.state == NodeState::Healthy
            && r.message == "drift: `web` was removed (self_heal = false: reported, not repaired)"
    });
    // Several polls later: still not put back, and reported once, not on every poll.
    let commits = fleet.status_commits();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let after = ids(&engine, &fleet.project).await;
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|(s, _)| s == "api")
            .collect::<Vec<_>>(),
        "web stays removed, api untouched"
    );
    assert_eq!(
        fleet.status_commits(),
        commits,
        "the drift is reported once"
    );

    assert_eq!(agent.terminate(), Some(0));
    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn a_tip_with_invalid_toml_on_a_remote_is_rejected_naming_file_and_line() {
    let images = test_images();
    let fleet = Fleet::new("badtoml");
    let engine = DockerEngine::connect().await.unwrap();
    let daemon = fleet.serve();
    let url = daemon.url("fleet.git");
    fleet.release(&images.healthy, &images.healthy, "First release");
    let (code, out) = fleet.agent_once_at(&url, &[]);
    assert_eq!(code, Some(0), "{out}");
    let running = ids(&engine, &fleet.project).await;

    // An unterminated string in [rollout].
    let path = fleet.work().join("fleet.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    let line = toml.lines().position(|l| l == "monitor = \"2s\"").unwrap() + 1;
    std::fs::write(&path, toml.replace("monitor = \"2s\"", "monitor = \"2s")).unwrap();
    let broken = commit_release(&fleet, "Broken fleet.toml", None);
    let (code, out) = fleet.agent_once_at(&url, &[]);
    assert_eq!(code, Some(3), "{out}");
    let record = fleet.record_is(NodeState::Rejected, &broken);
    assert!(
        record.message.contains(&format!("fleet.toml:{line}:")),
        "the reason names the file and line {line}: {}",
        record.message
    );
    assert_eq!(
        ids(&engine, &fleet.project).await,
        running,
        "containers untouched"
    );
    fleet.cleanup(&engine).await;
}

/// Commits everything in `work` (signed with the SSH `key`, if any) and pushes it to
/// `release`; returns the commit id.
fn commit_release(fleet: &Fleet, message: &str, key: Option<&Path>) -> String {
    let work = fleet.work();
    git(&work, &["add", "."]);
    let mut args = vec!["-c".to_string(), "gpg.format=ssh".to_string()];
    if let Some(key) = key {
        args.extend(["-c".into(), format!("user.signingkey={}", key.display())]);
    }
    args.extend(["commit", "-q", "--allow-empty", "-m", message].map(String::from));
    if key.is_some() {
        args.push("-S".into());
    }
    git(&work, &args.iter().map(String::as_str).collect::<Vec<_>>());
    git(
        &work,
        &[
            "push",
            "-q",
            "-f",
            fleet.bare().to_str().unwrap(),
            "release",
        ],
    );
    git(&work, &["rev-parse", "HEAD"])
}

fn ssh_key(fleet: &Fleet, name: &str) -> (PathBuf, String) {
    let path = fleet.root.path().join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

fn signers(fleet: &Fleet, entries: &[(&str, &str)]) {
    let text: String = entries
        .iter()
        .map(|(who, key)| format!("{who} namespaces=\"git\" {key}\n"))
        .collect();
    std::fs::write(fleet.work().join("policies/allowed_signers"), text).unwrap();
}

fn require_signatures(fleet: &Fleet, on: bool) {
    std::fs::write(
        fleet.work().join("policies/production.toml"),
        format!(
            "[admission]\nrequire_signed_commits = {on}\nallowed_signers = \"allowed_signers\"\n"
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn signed_releases_are_admitted_by_the_chain_of_trust() {
    let images = test_images();
    let fleet = Fleet::new("signed");
    let engine = DockerEngine::connect().await.unwrap();
    let (alice, alice_pub) = ssh_key(&fleet, "alice");
    let (mallory, mallory_pub) = ssh_key(&fleet, "mallory");
    let rejected = |why: &str| {
        let (code, out) = fleet.agent_once();
        assert_eq!(code, Some(3), "{out}");
        let record = fleet.record();
        assert_eq!(record.state, NodeState::Rejected, "{record:?}");
        assert!(
            record.message.contains(why),
            "wanted `{why}`: {}",
            record.message
        );
    };
    let admitted = |release: &str| {
        let (code, out) = fleet.agent_once();
        assert_eq!(code, Some(0), "{out}");
        let record = fleet.record();
        assert_eq!(
            (record.state, record.release.as_str()),
            (NodeState::Healthy, release)
        );
    };

    // The policy is introduced by a commit alice signs: it applies to that commit.
    fleet.release(&images.healthy, &images.healthy, "First release");
    let work = fleet.work();
    std::fs::create_dir_all(work.join("policies")).unwrap();
    require_signatures(&fleet, true);
    signers(&fleet, &[("alice@example.com", &alice_pub)]);
    let toml = std::fs::read_to_string(work.join("fleet.toml")).unwrap();
    std::fs::write(
        work.join("fleet.toml"),
        toml.replace(
            "compose = \"stack/compose.yaml\"",
            "compose = \"stack/compose.yaml\"\npolicy = \"policies/production.toml\"",
        ),
    )
    .unwrap();
    let signed = commit_release(&fleet, "Require signatures", Some(&alice));
    admitted(&signed);

    // Unsigned, signed by an unknown key, or a downgrade of the policy in the same
    // unsigned commit: rejected, and nothing runs differently.
    let running = ids(&engine, &fleet.project).await;
    std::fs::write(work.join("NOTES"), "unsigned\n").unwrap();
    commit_release(&fleet, "Unsigned", None);
    rejected("not signed");
    commit_release(&fleet, "Signed by mallory", Some(&mallory));
    rejected("which is not in policies/allowed_signers");
    require_signatures(&fleet, false);
    signers(&fleet, &[("mallory@example.com", &mallory_pub)]);
    commit_release(&fleet, "Switch signing off", Some(&mallory));
    rejected("which is not in policies/allowed_signers");
    assert_eq!(ids(&engine, &fleet.project).await, running);

    // A commit alice signed, altered afterwards (same signature, other message).
    require_signatures(&fleet, true);
    signers(&fleet, &[("alice@example.com", &alice_pub)]);
    let good = commit_release(&fleet, "Signed release", Some(&alice));
    let raw = git(&work, &["cat-file", "commit", &good]);
    let forged = Command::new("git")
        .current_dir(&work)
        .args(["hash-object", "-t", "commit", "-w", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            let text = raw.replace("Signed release", "Signed release, and more") + "\n";
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let forged = String::from_utf8_lossy(&forged.stdout).trim().to_string();
    git(
        &work,
        &[
            "push",
            "-q",
            "-f",
            fleet.bare().to_str().unwrap(),
            &format!("{forged}:refs/heads/release"),
        ],
    );
    rejected("does not match the release commit");

    // Rotation: alice signs the commit that hands over to bob's key; bob signs the next.
    let (bob, bob_pub) = ssh_key(&fleet, "bob");
    signers(&fleet, &[("bob@example.com", &bob_pub)]);
    let rotated = commit_release(&fleet, "Hand over to bob", Some(&alice));
    admitted(&rotated);
    std::fs::write(work.join("NOTES"), "bob\n").unwrap();
    let by_bob = commit_release(&fleet, "Bob's first", Some(&bob));
    admitted(&by_bob);
    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn a_merge_to_a_local_remote_is_noticed_without_waiting_for_the_poll() {
    let images = test_images();
    let fleet = Fleet::new("notify");
    let engine = DockerEngine::connect().await.unwrap();
    fleet.release(&images.healthy, &images.healthy, "First release");
    let url = format!("file://{}", fleet.bare().display());
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut agent = fleet.spawn_agent(&url, &["--interval", "10m", "--listen", &listen]);
    fleet.wait_for_record("healthy", |r| r.state == NodeState::Healthy);
    let second = fleet.release(&images.healthy_v2, &images.healthy, "Second release");
    fleet.wait_for_record("the second release", |r| {
        r.release == second && r.state == NodeState::Healthy
    });
    // Idle, it stays idle: the agent's own fetches read the watched ref, and reading
    // must not wake it (it once did, a reconcile every few milliseconds).
    let reconciles = || -> f64 {
        get(port, "/metrics")
            .1
            .lines()
            .filter(|l| l.starts_with("gitfleet_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = reconciles();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let idle = reconciles() - before;
    assert!(idle <= 1.0, "{idle} reconciles in 3 idle seconds");
    agent.kill();
    fleet.cleanup(&engine).await;
}

#[test]
fn a_second_agent_on_the_same_state_directory_stops_with_a_clear_message() {
    let fleet = Fleet::new("lock");
    std::fs::create_dir_all(fleet.state()).unwrap();
    let lock = std::fs::File::create(fleet.state().join("lock")).unwrap();
    lock.try_lock().unwrap();
    let (code, out) = fleet.agent_once();
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("another gitfleet agent uses"), "{out}");
}

/// Every file under `dir`, read as bytes (lossy text), for the secret-leak greps.
fn every_file_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

#[tokio::test]
async fn secrets_never_reach_logs_status_records_the_state_directory_or_print_config() {
    let images = test_images();
    let fleet = Fleet::new("secrets");
    let engine = DockerEngine::connect().await.unwrap();
    let (notify_url, notifications) = notification_receiver();
    let notify_url = format!("{notify_url}-notify-secret-value");
    let hook_secret = fleet.root.path().join("hook-secret");
    std::fs::write(&hook_secret, "webhook-secret-value\n").unwrap();
    let docker_config = fleet.root.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    // base64("fleet:registry-secret-value")
    let registry_auth = "ZmxlZXQ6cmVnaXN0cnktc2VjcmV0LXZhbHVl";
    std::fs::write(
        docker_config.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{registry_auth}"}}}}}}"#,
            std::env::var("GITFLEET_TEST_REGISTRY").unwrap()
        ),
    )
    .unwrap();
    let env = [
        ("GFT_TEST_NOTIFY_URL", notify_url.as_str()),
        ("GITFLEET_GIT_PASSWORD", "git-secret-value"),
        (
            "GITFLEET_WEBHOOK_SECRET_FILE",
            hook_secret.to_str().unwrap(),
        ),
        ("DOCKER_CONFIG", docker_config.to_str().unwrap()),
        ("GITFLEET_LOG_LEVEL", "trace"),
        ("GITFLEET_LISTEN", "127.0.0.1:0"),
    ];
    let secrets = [
        "notify-secret-value",
        "git-secret-value",
        "webhook-secret-value",
        "registry-secret-value",
        registry_auth,
    ];

    // A healthy release, a failing one and a rejected one: every path that reports.
    let mut logs = String::new();
    let web = fleet.unique_image(&images.healthy, "web");
    fleet.release(&web, &images.healthy, "Good");
    let (code, out) = fleet.agent_once_with(&env);
    assert_eq!(code, Some(0), "{out}");
    logs += &out;
    fleet.release(&images.unhealthy, &images.healthy, "Bad");
    let (code, out) = fleet.agent_once_with(&env);
    assert_eq!(code, Some(1), "{out}");
    logs += &out;
    fleet.release(
        "registry.example.com/acme/web:latest",
        &images.healthy,
        "Unpinned",
    );
    let (code, out) = fleet.agent_once_with(&env);
    assert_eq!(code, Some(3), "{out}");
    logs += &out;
    assert!(
        notifications
            .recv_timeout(std::time::Duration::from_secs(30))
            .is_ok(),
        "the notification URL was used"
    );
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "{logs}");

    let printed = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .envs(env)
        .args(["agent", "--print-config", "--node", "n1", "--repo"])
        .arg(format!("file://{}", fleet.bare().display()))
        .output()
        .unwrap();
    assert_eq!(printed.status.code(), Some(0));
    let history = git(&fleet.bare(), &["log", "-p", "--all"]);
    for (place, text) in [
        ("the agent's logs", logs),
        ("--print-config", common::output_text(&printed)),
        ("the Git history (release and status branch)", history),
        ("the state directory", every_file_text(&fleet.state())),
    ] {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{secret} appears in {place}:\n{text}"
            );
        }
    }
    fleet.cleanup(&engine).await;
}

/// `gitfleet status --format json` of the test fleet.
fn status_json(fleet: &Fleet) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(["status", "--format", "json", "--repo"])
        .arg(format!("file://{}", fleet.bare().display()))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", common::output_text(&out)))
}

#[tokio::test]
async fn a_node_signs_its_status_commits_and_status_marks_a_record_it_did_not_write() {
    let images = test_images();
    let fleet = Fleet::new("nodekey");
    let engine = DockerEngine::connect().await.unwrap();
    let (key, public) = ssh_key(&fleet, "n1-key");
    let nodes = format!("\n[nodes.n1]\nkey = \"{public}\"\n");
    fleet.release_with(&images.healthy, &images.healthy, &nodes, "Keyed");
    let (code, out) = fleet.agent_once_with(&[("GITFLEET_NODE_KEY", key.to_str().unwrap())]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(status_json(&fleet)["authenticity"]["n1"], "signed");
    // Git itself accepts the signature.
    let signers = fleet.root.path().join("node-signers");
    std::fs::write(&signers, format!("n1 {public}\n")).unwrap();
    let shown = git(
        &fleet.bare(),
        &[
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", signers.display()),
            "log",
            "-1",
            "--format=%G?",
            "fleet-status",
        ],
    );
    assert_eq!(shown.trim(), "G", "git verifies the node's signature");

    // Someone else rewrites n1's record with a plain, unsigned commit.
    let forger = fleet.root.path().join("forger");
    git(
        fleet.root.path(),
        &[
            "clone",
            "-q",
            "-b",
            "fleet-status",
            fleet.bare().to_str().unwrap(),
            forger.to_str().unwrap(),
        ],
    );
    let record = forger.join("nodes/n1.toml");
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(
        &record,
        text.replace("health gate passed", "all fine, trust me"),
    )
    .unwrap();
    git(&forger, &["commit", "-q", "-am", "n1: healthy (forged)"]);
    git(&forger, &["push", "-q", "origin", "fleet-status"]);
    assert_eq!(status_json(&fleet)["authenticity"]["n1"], "unsigned");
    let table = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(["status", "--repo"])
        .arg(format!("file://{}", fleet.bare().display()))
        .output()
        .unwrap();
    let table = common::output_text(&table);
    assert!(table.contains("healthy (unsigned)"), "{table}");
    assert!(
        table.contains("the record of n1 was not written by n1"),
        "{table}"
    );

    // A key that is not a key is a configuration error, named.
    let bad = fleet.root.path().join("not-a-key");
    std::fs::write(&bad, "hello").unwrap();
    let (code, out) = fleet.agent_once_with(&[("GITFLEET_NODE_KEY", bad.to_str().unwrap())]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is not an OpenSSH private key"), "{out}");
    fleet.cleanup(&engine).await;
}

// Failure paths (SPEC §3 rule 6): any error after the node starts acting on a release
// restores at once, is recorded with its cause, frees the slot, and is not retried.

/// The stack with `web_extra` (lines indented for `web:`) added to `web`.
fn stack_with_web(web_extra: &str) -> String {
    format!("{STACK}{web_extra}")
}

/// n1 ran `first` healthy; `bad` is released and fails. Checks what every failure path
/// must leave: the previous containers running, a `failed` record naming `cause`, and
/// three more polls that restart nothing and write nothing.
async fn assert_fails_and_restores(fleet: &Fleet, engine: &DockerEngine, bad: &str, cause: &str) {
    let running = ids(engine, &fleet.project).await;
    let (code, out) = fleet.agent_once();
    assert_eq!(code, Some(1), "{out}");
    let record = fleet.record_is(NodeState::Failed, bad);
    assert!(record.message.contains(cause), "{}", record.message);
    assert_eq!(
        ids(engine, &fleet.project).await,
        running,
        "the previous containers run again, nothing left over"
    );
    assert_one_running_container_per_service(engine, &fleet.project).await;
    let commits = fleet.status_commits();
    for _ in 0..3 {
        let (code, out) = fleet.agent_once();
        assert_eq!(code, Some(1), "{out}");
        assert_eq!(ids(engine, &fleet.project).await, running, "{out}");
    }
    assert_eq!(fleet.status_commits(), commits, "no record rewritten");
    fleet.record_is(NodeState::Failed, bad);
}

#[tokio::test]
async fn a_release_whose_host_port_is_taken_restores_at_once_and_fails_naming_the_port() {
    let images = test_images();
    let engine = DockerEngine::connect().await.unwrap();
    for order in ["stop-first", "start-first"] {
        let fleet = Fleet::new(&format!("port-{order}"));
        let rollout = format!("monitor = \"1s\"\nhealth_timeout = \"30s\"\norder = \"{order}\"\n");
        fleet.release_stack(&images.healthy, &images.healthy, &rollout, STACK, "First");
        let (code, out) = fleet.agent_once();
        assert_eq!(code, Some(0), "{out}");

        // Another process holds the port the new release publishes.
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let compose = stack_with_web(&format!("    ports: [\"127.0.0.1:{port}:80\"]\n"));
        let bad = fleet.release_stack(
            &images.healthy_v2,
            &images.healthy,
            &rollout,
            &compose,
            "Port taken",
        );
        assert_fails_and_restores(&fleet, &engine, &bad, &port.to_string()).await;
        fleet.cleanup(&engine).await;
    }
}

#[tokio::test]
async fn a_command_not_found_fails_the_gate_quoting_the_containers_last_log_line() {
    let images = test_images();
    let engine = DockerEngine::connect().await.unwrap();
    let fleet = Fleet::new("exec");
    let rollout = "monitor = \"2s\"\nhealth_timeout = \"30s\"\n";
    fleet.release_stack(&images.healthy, &images.healthy, rollout, STACK, "First");
    assert_eq!(fleet.agent_once().0, Some(0));
    let compose = stack_with_web("    command: [\"/no/such/binary\"]\n");
    let bad = fleet.release_stack(
        &images.healthy_v2,
        &images.healthy,
        rollout,
        &compose,
        "Typo",
    );
    assert_fails_and_restores(&fleet, &engine, &bad, "/no/such/binary").await;
    fleet.cleanup(&engine).await;
}

/// What the engine refuses at create or start, for a host that lacks something the
/// release needs: a bind source (long syntax, which Docker does not create) and a
/// device. Each restores at once and fails naming the path; stop-first and start-first.
#[tokio::test]
async fn a_missing_bind_source_or_device_restores_at_once_and_fails_naming_the_path() {
    let images = test_images();
    let engine = DockerEngine::connect().await.unwrap();
    for order in ["stop-first", "start-first"] {
        let fleet = Fleet::new(&format!("host-{order}"));
        let rollout = format!("monitor = \"1s\"\nhealth_timeout = \"30s\"\norder = \"{order}\"\n");
        fleet.release_stack(&images.healthy, &images.healthy, &rollout, STACK, "First");
        assert_eq!(fleet.agent_once().0, Some(0));
        let missing = fleet.root.path().join("no-such-dir");
        let bind = stack_with_web(&format!(
            "    volumes:\n      - type: bind\n        source: {}\n        target: /data\n",
            missing.display()
        ));
        let bad = fleet.release_stack(
            &images.healthy_v2,
            &images.healthy,
            &rollout,
            &bind,
            "Bind source missing",
        );
        assert_fails_and_restores(&fleet, &engine, &bad, &missing.display().to_string()).await;
        let device = stack_with_web("    devices: [\"/dev/gitfleet-no-such-device:/dev/x\"]\n");
        let bad = fleet.release_stack(
            &images.healthy_v2,
            &images.healthy,
            &rollout,
            &device,
            "Device missing",
        );
        assert_fails_and_restores(&fleet, &engine, &bad, "/dev/gitfleet-no-such-device").await;
        fleet.cleanup(&engine).await;
    }
}

/// A registry on loopback that answers every request 401 (Basic auth, one user the
/// node has no credentials for): Debian's docker-registry with an htpasswd file.
struct LockedRegistry {
    port: u16,
    process: std::process::Child,
}

impl LockedRegistry {
    fn start(dir: &Path) -> Self {
        let port = common::free_port();
        // bcrypt of "secret": the registry takes only bcrypt entries.
        let htpasswd = dir.join("htpasswd");
        std::fs::write(
            &htpasswd,
            "gitfleet:$2b$05$UhuNYoXNUCZDy/2/gcabHeb38xdzkH8oKCx4S8Ldz4gIydekwMoHG\n",
        )
        .unwrap();
        let config = dir.join("locked-registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n\
                 auth:\n  htpasswd:\n    realm: gitfleet-test\n    path: {}\n",
                dir.join("locked-registry-data").display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let process = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/testenv install puts it on PATH)");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        LockedRegistry { port, process }
    }
}

impl Drop for LockedRegistry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test]
async fn a_registry_that_wants_credentials_fails_at_once_without_stopping_anything() {
    let images = test_images();
    let engine = DockerEngine::connect().await.unwrap();
    let fleet = Fleet::new("unauthorized");
    let rollout = "monitor = \"1s\"\nhealth_timeout = \"30s\"\n";
    fleet.release_stack(&images.healthy, &images.healthy, rollout, STACK, "First");
    assert_eq!(fleet.agent_once().0, Some(0));
    let registry = LockedRegistry::start(fleet.root.path());
    let (_, digest) = images.healthy_v2.split_once('@').unwrap();
    let locked = format!("127.0.0.1:{}/gitfleet-test/healthy@{digest}", registry.port);
    let bad = fleet.release_stack(&locked, &images.healthy, rollout, STACK, "No credentials");
    assert_fails_and_restores(&fleet, &engine, &bad, "no basic auth credentials").await;
    assert!(
        fleet.record().message.contains("nothing was stopped"),
        "{}",
        fleet.record().message
    );
    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn a_digest_missing_from_the_registry_fails_without_stopping_anything() {
    let images = test_images();
    let engine = DockerEngine::connect().await.unwrap();
    let fleet = Fleet::new("manifest");
    let rollout = "monitor = \"1s\"\nhealth_timeout = \"30s\"\n";
    fleet.release_stack(&images.healthy, &images.healthy, rollout, STACK, "First");
    assert_eq!(fleet.agent_once().0, Some(0));
    let (repo, _) = images.healthy.split_once('@').unwrap();
    let missing = format!("{repo}@sha256:{}", "0".repeat(64));
    let bad = fleet.release_stack(&missing, &images.healthy, rollout, STACK, "Missing digest");
    assert_fails_and_restores(&fleet, &engine, &bad, "nothing was stopped").await;
    assert!(
        fleet.record().message.contains("manifest unknown"),
        "{}",
        fleet.record().message
    );
    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn an_unreachable_registry_keeps_the_containers_retries_then_fails_after_health_timeout() {
    let images = test_images();
    let engine = DockerEngine::connect().await.unwrap();
    let fleet = Fleet::new("registry-down");
    let rollout = "monitor = \"1s\"\nhealth_timeout = \"4s\"\n";
    fleet.release_stack(&images.healthy, &images.healthy, rollout, STACK, "First");
    assert_eq!(fleet.agent_once().0, Some(0));
    let running = ids(&engine, &fleet.project).await;

    // A registry on a port where nothing listens.
    let closed = common::free_port();
    let (_, digest) = images.healthy_v2.split_once('@').unwrap();
    let unreachable = format!("127.0.0.1:{closed}/gitfleet-test/healthy@{digest}");
    let release = fleet.release_stack(
        &unreachable,
        &images.healthy,
        rollout,
        STACK,
        "Registry down",
    );
    let (code, out) = fleet.agent_once();
    assert_eq!(code, Some(4), "{out}");
    let record = fleet.record_is(NodeState::Retrying, &release);
    assert!(
        record.message.contains("next attempt"),
        "{}",
        record.message
    );
    assert!(
        record.message.contains(&closed.to_string()),
        "{}",
        record.message
    );
    assert_eq!(ids(&engine, &fleet.project).await, running);

    // Before the next attempt: nothing is tried, nothing rewritten.
    let commits = fleet.status_commits();
    assert_eq!(fleet.agent_once().0, Some(4));
    assert_eq!(fleet.status_commits(), commits);

    // Past health_timeout since the first attempt, the release has failed.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (code, out) = fleet.agent_once();
    assert_eq!(code, Some(1), "{out}");
    let record = fleet.record_is(NodeState::Failed, &release);
    assert!(
        record.message.contains("still failing"),
        "{}",
        record.message
    );
    assert_eq!(ids(&engine, &fleet.project).await, running);
    fleet.cleanup(&engine).await;
}

#[tokio::test]
async fn a_value_no_engine_takes_is_rejected_naming_the_key_and_check_refuses_it() {
    let images = test_images();
    let engine = DockerEngine::connect().await.unwrap();
    let fleet = Fleet::new("untranslatable");
    let rollout = "monitor = \"1s\"\nhealth_timeout = \"30s\"\n";
    fleet.release_stack(&images.healthy, &images.healthy, rollout, STACK, "First");
    assert_eq!(fleet.agent_once().0, Some(0));
    let running = ids(&engine, &fleet.project).await;
    let compose = stack_with_web("    stop_grace_period: forever\n");
    let bad = fleet.release_stack(
        &images.healthy_v2,
        &images.healthy,
        rollout,
        &compose,
        "Bad value",
    );

    let check = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .arg("check")
        .arg(fleet.work())
        .output()
        .unwrap();
    let text = common::output_text(&check);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(text.contains("services.web.stop_grace_period"), "{text}");

    let (code, out) = fleet.agent_once();
    assert_eq!(code, Some(3), "{out}");
    let record = fleet.record_is(NodeState::Rejected, &bad);
    assert!(
        record.message.contains("stop_grace_period"),
        "{}",
        record.message
    );
    assert_eq!(ids(&engine, &fleet.project).await, running);
    fleet.cleanup(&engine).await;
}
