//! The converge engine against a real dockerd and registry (started by scripts/testenv).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gitfleet::agent::SystemClock;
use gitfleet::agent::gate::{self, GateSettings};
use gitfleet::config::compose::{self, ComposeStack};
use gitfleet::config::diagnostics::{Diagnostics, SourceFile};
use gitfleet::config::fleet::{ImageSet, PinnedImage, Probe, UpdateOrder};
use gitfleet::core::gate::GateRun;
use gitfleet::core::gate::GateVerdict;
use gitfleet::engine::apply::Failure;
use gitfleet::engine::converge::{self, Applied, ConvergeOptions};
use gitfleet::engine::docker::{DockerEngine, EngineError};
use gitfleet::engine::plan::plan;
use gitfleet::engine::spec::{ProjectSpec, project_spec};

use common::{TempDir, free_port, test_images};

/// A project under test: its name, engine, and cleanup of everything it created.
struct Project {
    name: String,
    engine: DockerEngine,
    dir: TempDir,
    /// The node's variables the compose file is read with.
    vars: BTreeMap<String, String>,
}

impl Project {
    async fn new(label: &str) -> Self {
        let name = format!("gft-{label}-{}", std::process::id());
        let engine = DockerEngine::connect()
            .await
            .expect("the test engine is reachable");
        let project = Project {
            name,
            engine,
            dir: TempDir::new(label),
            vars: BTreeMap::new(),
        };
        project.cleanup().await;
        project
    }

    fn spec(&self, compose_yaml: &str) -> (ComposeStack, ImageSet, ProjectSpec) {
        let mut diags = Diagnostics::default();
        let stack = compose::load(
            &SourceFile::new("compose.yaml", compose_yaml),
            &self.vars,
            &mut diags,
        )
        .unwrap_or_else(|| panic!("{diags}"));
        let images = ImageSet(
            stack
                .service_names()
                .into_iter()
                .map(|s| {
                    (
                        s.to_string(),
                        PinnedImage::parse(stack.image_of(s).unwrap()).unwrap(),
                    )
                })
                .collect(),
        );
        let spec = project_spec(
            &self.name,
            &stack,
            &images,
            self.dir.path(),
            &common::test_key(),
        )
        .expect("spec");
        (stack, images, spec)
    }

    async fn converge(
        &self,
        yaml: &str,
        order: UpdateOrder,
    ) -> Result<(ProjectSpec, Applied), EngineError> {
        let (_, images, spec) = self.spec(yaml);
        let local = converge::pull_all(&self.engine, &images, &BTreeMap::new()).await?;
        let options = ConvergeOptions {
            order,
            dependency_timeout: Duration::from_secs(60),
            local_images: &local,
        };
        let applied = converge::converge(&self.engine, &spec, &options)
            .await
            .map_err(|f| f.error)?;
        Ok((spec, applied))
    }

    async fn gate(&self, spec: &ProjectSpec, probes: &BTreeMap<String, Vec<Probe>>) -> GateVerdict {
        let settings = GateSettings {
            probes,
            health_timeout: Duration::from_secs(12),
            monitor: Duration::from_secs(2),
        };
        let mut run = GateRun::new(chrono::Utc::now());
        match gate::hold(
            &self.engine,
            spec,
            &settings,
            &SystemClock,
            &mut run,
            &mut (),
        )
        .await
        {
            Ok(()) => GateVerdict::Passed,
            Err(Failure::Gate { service, reason }) => GateVerdict::Failed { service, reason },
            Err(Failure::Converge(e)) => panic!("the gate could not observe: {e}"),
        }
    }

    async fn ids(&self) -> BTreeMap<String, String> {
        converge::observe(&self.engine, &self.name)
            .await
            .unwrap()
            .into_iter()
            .filter(|o| !o.is_previous())
            .map(|o| (o.service, o.id))
            .collect()
    }

    /// The actions of the engine's events for the project's containers from `since`
    /// (unix seconds) until now.
    async fn container_events_since(&self, since: i64) -> Vec<String> {
        use futures_util::TryStreamExt;
        let options = bollard::query_parameters::EventsOptions {
            since: Some(since.to_string()),
            until: Some((chrono::Utc::now().timestamp() + 1).to_string()),
            filters: Some(std::collections::HashMap::from([
                (
                    "label".to_string(),
                    vec![format!("com.docker.compose.project={}", self.name)],
                ),
                ("type".to_string(), vec!["container".to_string()]),
            ])),
        };
        self.engine
            .client()
            .events(Some(options))
            .map_ok(|e| e.action.unwrap_or_default())
            .try_collect()
            .await
            .unwrap()
    }

    async fn cleanup(&self) {
        for o in converge::observe(&self.engine, &self.name)
            .await
            .unwrap_or_default()
        {
            let _ = self.engine.remove(&o.id).await;
        }
        for suffix in ["default", "back"] {
            let _ = self
                .engine
                .client()
                .remove_network(&format!("{}_{suffix}", self.name))
                .await;
        }
    }
}

fn three_tier(images: &common::TestImages, api_image: &str, web_image: &str) -> String {
    format!(
        r#"services:
  db:
    image: {slow}
    init: true
  api:
    image: {api_image}
    init: true
    depends_on:
      db: {{condition: service_healthy}}
  web:
    image: {web_image}
    init: true
    depends_on:
      api: {{condition: service_healthy}}
"#,
        slow = images.slow
    )
}

#[tokio::test]
async fn cold_start_in_order_then_idempotent_then_only_the_changed_service() {
    let images = test_images();
    let p = Project::new("cold").await;
    let yaml = three_tier(&images, &images.healthy, &images.healthy);
    let (spec, applied) = p
        .converge(&yaml, UpdateOrder::StopFirst)
        .await
        .expect("cold start");
    assert_eq!(applied.swaps.len(), 3);
    let inspect = |name: &str| {
        let engine = p.engine.clone();
        let name = format!("{}-{name}-1", p.name);
        async move { engine.inspect(&name).await.unwrap() }
    };
    let db = inspect("db").await;
    let api = inspect("api").await;
    let started = |i: &bollard::models::ContainerInspectResponse| {
        chrono::DateTime::parse_from_rfc3339(
            i.state.as_ref().unwrap().started_at.as_deref().unwrap(),
        )
        .unwrap()
    };
    assert!(
        started(&api) - started(&db) >= chrono::TimeDelta::seconds(3),
        "api started before db was healthy"
    );
    assert_eq!(p.gate(&spec, &BTreeMap::new()).await, GateVerdict::Passed);
    converge::commit(&p.engine, &applied).await.unwrap();

    // A second converge changes nothing.
    let before = p.ids().await;
    let observed = converge::observe(&p.engine, &p.name).await.unwrap();
    assert!(
        plan(&spec, &observed).is_noop(),
        "{:?}",
        plan(&spec, &observed)
    );
    let since = chrono::Utc::now().timestamp();
    let (_, again) = p.converge(&yaml, UpdateOrder::StopFirst).await.unwrap();
    assert!(again.swaps.is_empty() && again.leftovers.is_empty());
    assert_eq!(p.ids().await, before);
    let mutations = p.container_events_since(since).await;
    let mutations: Vec<&String> = mutations
        .iter()
        .filter(|a| {
            [
                "create", "start", "stop", "kill", "die", "destroy", "rename",
            ]
            .contains(&a.as_str())
        })
        .collect();
    assert!(
        mutations.is_empty(),
        "a no-op converge mutated: {mutations:?}"
    );

    // One digest changed: only that service's container is new.
    let changed = three_tier(&images, &images.healthy, &images.healthy_v2);
    let since = chrono::Utc::now().timestamp();
    let (spec, applied) = p.converge(&changed, UpdateOrder::StopFirst).await.unwrap();
    let actions = p.container_events_since(since).await;
    assert!(
        actions.iter().any(|a| a == "create"),
        "the event query sees a real change: {actions:?}"
    );
    let after = p.ids().await;
    assert_ne!(after["web"], before["web"]);
    assert_eq!(after["api"], before["api"]);
    assert_eq!(after["db"], before["db"]);
    assert_eq!(p.gate(&spec, &BTreeMap::new()).await, GateVerdict::Passed);
    converge::commit(&p.engine, &applied).await.unwrap();
    assert_eq!(
        converge::observe(&p.engine, &p.name).await.unwrap().len(),
        3,
        "previous container removed on commit"
    );
    p.cleanup().await;
}

#[tokio::test]
async fn a_one_shot_job_that_completed_passes_the_gate_and_is_not_run_again() {
    let images = test_images();
    let p = Project::new("job").await;
    let yaml = format!(
        r#"services:
  migrate:
    image: {healthy}
    command: ["/bin/sh", "-c", "exit 0"]
  api:
    image: {healthy}
    init: true
    depends_on:
      migrate: {{condition: service_completed_successfully}}
"#,
        healthy = images.healthy
    );
    let (spec, applied) = p
        .converge(&yaml, UpdateOrder::StopFirst)
        .await
        .expect("converge");
    assert!(spec.services["migrate"].job && !spec.services["api"].job);
    assert_eq!(p.gate(&spec, &BTreeMap::new()).await, GateVerdict::Passed);
    converge::commit(&p.engine, &applied).await.unwrap();

    let observed = converge::observe(&p.engine, &p.name).await.unwrap();
    let migrate = observed.iter().find(|o| o.service == "migrate").unwrap();
    assert!(migrate.completed(), "{migrate:?}");
    assert!(
        plan(&spec, &observed).is_noop(),
        "a completed job is done, not down: {:?}",
        plan(&spec, &observed)
    );
    let since = chrono::Utc::now().timestamp();
    let (_, again) = p.converge(&yaml, UpdateOrder::StopFirst).await.unwrap();
    assert!(again.swaps.is_empty());
    let events = p.container_events_since(since).await;
    assert!(
        !events.iter().any(|a| a == "start"),
        "the job ran again: {events:?}"
    );
    p.cleanup().await;
}

#[tokio::test]
async fn a_failing_healthcheck_fails_the_gate_and_restore_brings_back_the_same_container() {
    let images = test_images();
    let p = Project::new("restore").await;
    let good = format!(
        "services:\n  api:\n    image: {}\n    init: true\n",
        images.healthy
    );
    let (spec, applied) = p.converge(&good, UpdateOrder::StopFirst).await.unwrap();
    assert_eq!(p.gate(&spec, &BTreeMap::new()).await, GateVerdict::Passed);
    converge::commit(&p.engine, &applied).await.unwrap();
    let original = p.ids().await["api"].clone();

    let bad = format!(
        "services:\n  api:\n    image: {}\n    init: true\n",
        images.unhealthy
    );
    let (spec, applied) = p.converge(&bad, UpdateOrder::StopFirst).await.unwrap();
    match p.gate(&spec, &BTreeMap::new()).await {
        GateVerdict::Failed { service, reason } => {
            assert_eq!(service, "api");
            assert!(reason.contains("failing on purpose"), "{reason}");
        }
        v => panic!("gate should fail: {v:?}"),
    }
    converge::restore(&p.engine, &applied).await.unwrap();
    let ids = p.ids().await;
    assert_eq!(
        ids["api"], original,
        "the previous container itself is back"
    );
    let state = p.engine.inspect(&original).await.unwrap().state.unwrap();
    assert_eq!(state.running, Some(true));
    assert_eq!(
        converge::observe(&p.engine, &p.name).await.unwrap().len(),
        1
    );
    p.cleanup().await;
}

#[tokio::test]
async fn a_failing_probe_alone_fails_the_gate() {
    let images = test_images();
    let p = Project::new("probe").await;
    let port = free_port();
    let yaml = format!(
        "services:\n  web:\n    image: {}\n    init: true\n    ports: [\"127.0.0.1:{port}:8080\"]\n",
        images.healthy
    );
    let (spec, _) = p.converge(&yaml, UpdateOrder::StopFirst).await.unwrap();
    let ok = BTreeMap::from([(
        "web".to_string(),
        vec![Probe::Http(format!("http://127.0.0.1:{port}/"))],
    )]);
    assert_eq!(p.gate(&spec, &ok).await, GateVerdict::Passed);
    let missing = BTreeMap::from([(
        "web".to_string(),
        vec![Probe::Http(format!("http://127.0.0.1:{port}/missing"))],
    )]);
    match p.gate(&spec, &missing).await {
        GateVerdict::Failed { service, reason } => {
            assert_eq!(service, "web");
            assert!(reason.contains("HTTP 404"), "{reason}");
        }
        v => panic!("probe should fail the gate: {v:?}"),
    }
    let command = BTreeMap::from([(
        "web".to_string(),
        vec![Probe::Command(vec!["false".into()])],
    )]);
    assert!(matches!(
        p.gate(&spec, &command).await,
        GateVerdict::Failed { .. }
    ));
    p.cleanup().await;
}

#[tokio::test]
async fn a_crash_looping_service_fails_the_gate() {
    let images = test_images();
    let p = Project::new("crash").await;
    let yaml = format!(
        "services:\n  worker:\n    image: {}\n    restart: always\n",
        images.crashloop
    );
    let (spec, _) = p.converge(&yaml, UpdateOrder::StopFirst).await.unwrap();
    match p.gate(&spec, &BTreeMap::new()).await {
        GateVerdict::Failed { service, .. } => assert_eq!(service, "worker"),
        v => panic!("{v:?}"),
    }
    p.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_registry_or_unknown_digest_is_a_clear_error_and_touches_nothing() {
    let images = test_images();
    let p = Project::new("pull").await;
    let good = format!(
        "services:\n  api:\n    image: {}\n    init: true\n",
        images.healthy
    );
    let (_, applied) = p.converge(&good, UpdateOrder::StopFirst).await.unwrap();
    converge::commit(&p.engine, &applied).await.unwrap();
    let before = p.ids().await;

    let down = format!(
        "services:\n  api:\n    image: 127.0.0.1:1/gitfleet-test/healthy@sha256:{}\n",
        "0".repeat(64)
    );
    let error = p
        .converge(&down, UpdateOrder::StopFirst)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot pull") && error.contains("127.0.0.1:1"),
        "{error}"
    );
    let registry = std::env::var("GITFLEET_TEST_REGISTRY").unwrap();
    let unknown = format!(
        "services:\n  api:\n    image: {registry}/gitfleet-test/healthy@sha256:{}\n",
        "1".repeat(64)
    );
    let error = p
        .converge(&unknown, UpdateOrder::StopFirst)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot pull"), "{error}");
    assert_eq!(p.ids().await, before, "the running stack is untouched");
    let _ = Path::new(&registry);
    p.cleanup().await;
}

#[tokio::test]
async fn docker_compose_ps_lists_the_stack() {
    let images = test_images();
    let p = Project::new("ps").await;
    let yaml = format!(
        "services:\n  api:\n    image: {h}\n    init: true\n  worker:\n    image: {h}\n    init: true\n",
        h = images.healthy
    );
    p.converge(&yaml, UpdateOrder::StopFirst).await.unwrap();
    let file = p.dir.path().join("compose.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = std::process::Command::new("docker-compose")
        .args(["-p", &p.name, "-f"])
        .arg(&file)
        .arg("ps")
        .output()
        .expect("Debian's docker-compose is installed by scripts/testenv");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [format!("{}-api-1", p.name), format!("{}-worker-1", p.name)] {
        assert!(listing.contains(&name), "{name} missing from:\n{listing}");
    }
    assert!(listing.contains("Up"), "{listing}");
    p.cleanup().await;
}

#[tokio::test]
async fn a_down_registry_falls_back_to_its_mirror() {
    let images = test_images();
    let p = Project::new("mirror").await;
    let registry = std::env::var("GITFLEET_TEST_REGISTRY").unwrap();
    let digest = images.healthy.rsplit_once("@sha256:").unwrap().1;
    let via_down = PinnedImage::parse(&format!(
        "127.0.0.1:1/gitfleet-test/healthy@sha256:{digest}"
    ))
    .unwrap();
    let mirrors = BTreeMap::from([("127.0.0.1:1".to_string(), vec![registry.clone()])]);
    let set = ImageSet(BTreeMap::from([("api".to_string(), via_down)]));
    let local = converge::pull_all(&p.engine, &set, &mirrors)
        .await
        .expect("the mirror serves it");
    assert_eq!(
        local["api"],
        format!("{registry}/gitfleet-test/healthy@sha256:{digest}")
    );
}

/// A stack whose `client` resolves `web` by its service name and fetches it every 50 ms,
/// printing the page, or `FAIL` when the request fails. (busybox's own `nslookup`: the
/// static busybox's `wget` cannot resolve names itself, and its `-T` crashes.) A client
/// that resolved the old container's address in the instant before it left the network
/// retries once, re-resolving, as real clients do on a refused connection; only a failed
/// retry is logged as `FAIL`.
fn web_and_client(images: &common::TestImages, web_image: &str) -> String {
    format!(
        r#"services:
  web:
    image: {web_image}
    init: true
  client:
    image: {client}
    init: true
    healthcheck:
      disable: true
    depends_on:
      web: {{condition: service_healthy}}
    command:
      - sh
      - -c
      - |
        fetch() {{
          ip=$$(nslookup web | awk '/^Address: [0-9.]+$$/ {{print $$2; exit}}')
          timeout 3 wget -q -O - "http://$$ip:8080/"
        }}
        while true; do
          fetch || fetch || echo "FAIL ($$ip)"
          sleep 0.05
        done
"#,
        client = images.healthy
    )
}

async fn client_log(p: &Project) -> String {
    use futures_util::TryStreamExt;
    let options = bollard::query_parameters::LogsOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    p.engine
        .client()
        .logs(&format!("{}-client-1", p.name), Some(options))
        .map_ok(|chunk| chunk.to_string())
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .concat()
}

#[tokio::test]
async fn start_first_keeps_the_service_reachable_during_the_swap() {
    let images = test_images();
    let p = Project::new("startfirst").await;
    let v1 = web_and_client(&images, &images.healthy);
    let (spec, applied) = p.converge(&v1, UpdateOrder::StartFirst).await.unwrap();
    assert_eq!(p.gate(&spec, &BTreeMap::new()).await, GateVerdict::Passed);
    converge::commit(&p.engine, &applied).await.unwrap();
    let before = p.ids().await;

    let v2 = web_and_client(&images, &images.healthy_v2);
    let (spec, applied) = p.converge(&v2, UpdateOrder::StartFirst).await.unwrap();
    // The old container is kept, stopped, for a restore; the client was not touched.
    let swap = &applied.swaps[0];
    assert_eq!(
        (swap.service.as_str(), swap.previous.as_deref()),
        ("web", Some(before["web"].as_str()))
    );
    let old = p.engine.inspect(&before["web"]).await.unwrap();
    assert_eq!(old.state.unwrap().running, Some(false));
    assert_eq!(p.ids().await["client"], before["client"]);
    assert_eq!(p.gate(&spec, &BTreeMap::new()).await, GateVerdict::Passed);
    converge::commit(&p.engine, &applied).await.unwrap();
    // The client polls every 50 ms; on a loaded machine it may take a while to log
    // enough answers from v2.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = client_log(&p).await;
        if log.matches("healthy v2").count() > 5 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let v1_hits = log.matches("healthy v1").count();
    let v2_hits = log.matches("healthy v2").count();
    assert!(
        !log.contains("FAIL") && !log.contains("refused"),
        "the client saw a failure during the swap:\n{log}"
    );
    assert!(
        v1_hits > 5 && v2_hits > 5,
        "v1 {v1_hits}, v2 {v2_hits}:\n{log}"
    );
    let last = log.lines().rev().find(|l| l.contains("healthy v")).unwrap();
    assert!(
        last.contains("v2"),
        "after the swap only v2 answers: {last}"
    );
    p.cleanup().await;
}

#[tokio::test]
async fn start_first_leaves_the_old_container_serving_when_the_new_one_fails() {
    let images = test_images();
    let p = Project::new("startfirst-fail").await;
    let (spec, applied) = p
        .converge(
            &web_and_client(&images, &images.healthy),
            UpdateOrder::StartFirst,
        )
        .await
        .unwrap();
    assert_eq!(p.gate(&spec, &BTreeMap::new()).await, GateVerdict::Passed);
    converge::commit(&p.engine, &applied).await.unwrap();
    let before = p.ids().await;

    // Never healthy: the converge fails before the old container is touched.
    let error = p
        .converge(
            &web_and_client(&images, &images.unhealthy),
            UpdateOrder::StartFirst,
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("`web`"), "{error}");
    assert_eq!(p.ids().await, before);
    let all = converge::observe(&p.engine, &p.name).await.unwrap();
    assert_eq!(all.len(), 2, "no container left behind: {all:?}");

    // Healthy, then the gate fails: restore puts the old container back on its network.
    let (spec, applied) = p
        .converge(
            &web_and_client(&images, &images.healthy_v2),
            UpdateOrder::StartFirst,
        )
        .await
        .unwrap();
    let failing = BTreeMap::from([(
        "web".to_string(),
        vec![Probe::Command(vec!["false".into()])],
    )]);
    assert!(matches!(
        p.gate(&spec, &failing).await,
        GateVerdict::Failed { .. }
    ));
    converge::restore(&p.engine, &applied).await.unwrap();
    assert_eq!(p.ids().await, before);
    let networks = p
        .engine
        .inspect(&before["web"])
        .await
        .unwrap()
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    let aliases = networks[&format!("{}_default", p.name)].aliases.clone();
    assert!(
        aliases.unwrap_or_default().contains(&"web".to_string()),
        "the restored container answers to `web` again"
    );
    // A request in flight to the removed container times out after 3 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = client_log(&p).await;
    let last = log.lines().rev().find(|l| l.contains("healthy v")).unwrap();
    let tail: Vec<&str> = log.lines().rev().take(8).collect();
    assert!(
        last.contains("v1"),
        "after the restore v1 answers: {tail:?}"
    );
    p.cleanup().await;
}

/// A secret from the node's environment (`secrets: {pw: {environment: PW}}`) is written
/// into its consumer before it starts, readable at `/run/secrets/pw` and at a long-syntax
/// target, and appears nowhere `docker inspect` shows (neither in the service that
/// consumes it nor in the one that does not); rotating it recreates exactly its consumer.
#[tokio::test]
async fn a_secret_from_the_environment_reaches_only_its_consumer_and_rotates_it_alone() {
    let images = test_images();
    let mut p = Project::new("envsecret").await;
    let yaml = format!(
        "services:\n  app:\n    image: {h}\n    init: true\n    secrets: [pw, {{source: pw, target: /etc/app/token}}]\n  other:\n    image: {h}\n    init: true\nsecrets:\n  pw:\n    environment: APP_PASSWORD\n",
        h = images.healthy
    );
    let first = "first-secret-c0ffee";
    p.vars.insert("APP_PASSWORD".into(), first.into());
    let (spec, applied) = p.converge(&yaml, UpdateOrder::StopFirst).await.unwrap();
    converge::commit(&p.engine, &applied).await.unwrap();
    let read = |path: &str| {
        let out = std::process::Command::new("docker")
            .args(["exec", &format!("{}-app-1", p.name), "cat", path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(read("/run/secrets/pw"), first);
    assert_eq!(read("/etc/app/token"), first);
    for service in ["app", "other"] {
        let inspect = std::process::Command::new("docker")
            .args(["inspect", &format!("{}-{service}-1", p.name)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&inspect.stdout);
        assert!(inspect.status.success() && text.contains("secret-digests") == (service == "app"));
        assert!(
            !text.contains(first),
            "{service}: the secret leaks into inspect:\n{text}"
        );
    }
    assert!(
        !format!("{spec:?}").contains(first),
        "the spec's Debug output leaks it"
    );

    let before = p.ids().await;
    p.vars
        .insert("APP_PASSWORD".into(), "rotated-secret-beef".into());
    let (_, rotated) = p.converge(&yaml, UpdateOrder::StopFirst).await.unwrap();
    converge::commit(&p.engine, &rotated).await.unwrap();
    let after = p.ids().await;
    assert_ne!(before["app"], after["app"], "the consumer is recreated");
    assert_eq!(
        before["other"], after["other"],
        "the other service is left alone"
    );
    assert_eq!(read("/run/secrets/pw"), "rotated-secret-beef");
    p.cleanup().await;
}
