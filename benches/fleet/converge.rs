//! The converge cases, side by side: gitfleet (the library, as the agent calls it),
//! Debian's `docker-compose up -d` (1.29.2) and the floor (the same container operations
//! straight through the Engine API with bollard), each on its own project of N busybox
//! services, interleaved repetition by repetition.
//!
//! Per repetition, in this order: no-op; one digest changed (service s01 flips between
//! the v1 and v2 test images); all digests changed (every service flips); cold start
//! (containers and network removed first, untimed). gitfleet's figure is the whole
//! reconcile of the engine side without the health gate: read the fleet repository,
//! translate it, pull-check, converge, commit. The gate is measured by [`gate`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use gitfleet::agent::SystemClock;
use gitfleet::agent::gate::apply;
use gitfleet::agent::gate::{self, GateSettings};
use gitfleet::config::fleet::NodeId;
use gitfleet::config::{DirFiles, FleetRepo, Interpolation, load_repo};
use gitfleet::core::gate::GateRun;
use gitfleet::engine::apply::{Outcome, Release};
use gitfleet::engine::converge::{self, ConvergeOptions};
use gitfleet::engine::docker::DockerEngine;
use gitfleet::engine::plan::plan;
use gitfleet::engine::spec::{PROJECT_LABEL, ProjectSpec, project_spec};

use crate::progress;
use crate::support::{Env, Options, TempDir, Triple, median, ms, result, timed};

/// The image's own HEALTHCHECK, every 30s instead of every 1s: 3 stacks × 20 services
/// probing every second would keep this 2-core machine busy with `exec`s and blur every
/// figure. The gate case uses the image's 1s check.
const SLOW_HEALTHCHECK: &str = "    healthcheck:\n      test: [\"CMD\", \"/bin/wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/\"]\n      interval: 30s\n      timeout: 2s\n      retries: 3\n";

type Res<T> = Result<T, String>;

/// Where the time of a case went: phase name → samples (ms).
type Phases = BTreeMap<&'static str, Vec<f64>>;

fn phase_fields(phases: &Phases) -> Vec<(&str, String)> {
    phases
        .iter()
        .map(|(k, v)| (*k, crate::support::fmt(median(v))))
        .collect()
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn service(i: usize) -> String {
    format!("s{:02}", i + 1)
}

/// A fleet repository on disk for one project, rewritten for every state.
struct FleetDir {
    project: String,
    dir: TempDir,
    host_dir: PathBuf,
    healthcheck: bool,
}

impl FleetDir {
    fn new(project: &str, slow_healthcheck: bool) -> FleetDir {
        let dir = TempDir::new(project);
        let host_dir = dir.path().join("host");
        std::fs::create_dir_all(dir.path().join("repo/stack")).expect("repo dir");
        FleetDir {
            project: project.to_string(),
            dir,
            host_dir,
            healthcheck: slow_healthcheck,
        }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Writes fleet.toml and the compose file for these image versions.
    fn write(&self, env: &Env, versions: &[usize]) {
        let mut fleet = format!(
            "version = 1\n[fleet]\nname = \"{}\"\ncompose = \"stack/compose.yaml\"\n[images]\n",
            self.project
        );
        let mut compose = String::from("services:\n");
        for (i, v) in versions.iter().enumerate() {
            fleet.push_str(&format!("{} = \"{}\"\n", service(i), env.image(*v)));
            compose.push_str(&format!(
                "  {}:\n    image: placeholder\n    init: true\n",
                service(i)
            ));
            if self.healthcheck {
                compose.push_str(SLOW_HEALTHCHECK);
            }
        }
        fleet.push_str("[rollout]\nmonitor = \"0s\"\nhealth_timeout = \"60s\"\n");
        std::fs::write(self.repo().join("fleet.toml"), fleet).expect("write fleet.toml");
        std::fs::write(self.repo().join("stack/compose.yaml"), compose).expect("write compose");
    }

    /// What a reconcile reads first: the validated repository and the engine spec.
    fn load(&self) -> Res<(FleetRepo, ProjectSpec)> {
        let files = DirFiles(self.repo());
        let vars = Interpolation {
            env: BTreeMap::new(),
            node: NodeId::from("bench"),
            release: "bench".into(),
            fleet_view: false,
        };
        let repo = load_repo(&files, &vars).map_err(|d| format!("fleet repo: {d}"))?;
        let spec = project_spec(
            &self.project,
            &repo.compose,
            &repo.images,
            &self.host_dir,
            &gitfleet::secret::DigestKey::new([7; 32]),
        )
        .map_err(|e| format!("spec: {}", gitfleet::engine::spec::joined(&e)))?;
        Ok((repo, spec))
    }
}

/// gitfleet's side: the library calls the agent makes.
struct Gitfleet {
    fleet: FleetDir,
    engine: DockerEngine,
}

impl Gitfleet {
    /// The agent's in-sync reconcile on the engine: read, translate, list, plan.
    async fn noop(&self) -> Res<Duration> {
        let start = Instant::now();
        let (_, spec) = self.fleet.load()?;
        let observed = converge::observe(&self.engine, &spec.project)
            .await
            .map_err(err("observe"))?;
        let noop = plan(&spec, &observed).is_noop();
        let took = start.elapsed();
        if !noop {
            return Err(format!("{}: the no-op plan is not a no-op", spec.project));
        }
        Ok(took)
    }

    /// `engine::apply::apply` on a converged stack (what `gitfleet apply` and a drift
    /// repair run): pull-check every image, converge (nothing to do), no gate.
    async fn noop_apply(&self) -> Res<Duration> {
        let start = Instant::now();
        let (repo, spec) = self.fleet.load()?;
        let release = Release::of(&spec, &repo);
        let outcome = apply(&self.engine, &release, &SystemClock, None, &mut ())
            .await
            .map_err(err("apply"))?;
        let took = start.elapsed();
        if !matches!(outcome, Outcome::Healthy { changed: false }) {
            return Err(format!("no-op apply changed something: {outcome:?}"));
        }
        Ok(took)
    }

    /// A release applied without the gate: pull-check, converge, commit.
    async fn converge(&self) -> Res<(Duration, Duration)> {
        self.converge_with(|_| async { Ok(()) })
            .await
            .map(|(converged, committed, _)| (converged, committed))
    }

    /// As [`converge`], with `between` (untimed) run between converge and commit, where
    /// the gate goes. Returns the time to converge (read, translate, pull-check,
    /// converge), the time to commit, and what `between` returned.
    async fn converge_with<T, F, Fut>(&self, between: F) -> Res<(Duration, Duration, T)>
    where
        F: FnOnce(ProjectSpec) -> Fut,
        Fut: std::future::Future<Output = Res<T>>,
    {
        let start = Instant::now();
        let (repo, spec) = self.fleet.load()?;
        let local = converge::pull_all(&self.engine, &repo.images, &repo.fleet.registries)
            .await
            .map_err(err("pull"))?;
        let options = ConvergeOptions {
            order: repo.fleet.rollout.order,
            dependency_timeout: repo.fleet.rollout.health_timeout,
            local_images: &local,
        };
        let applied = converge::converge(&self.engine, &spec, &options)
            .await
            .map_err(|f| format!("converge: {}", f.error))?;
        let converged = start.elapsed();
        let out = between(spec).await?;
        let start = Instant::now();
        converge::commit(&self.engine, &applied)
            .await
            .map_err(err("commit"))?;
        Ok((converged, start.elapsed(), out))
    }
}

/// The peer: `docker-compose -p <project> -f <file> up -d`.
struct Compose {
    project: String,
    dir: TempDir,
}

impl Compose {
    fn file(&self) -> PathBuf {
        self.dir.path().join("docker-compose.yml")
    }

    fn write(&self, env: &Env, versions: &[usize]) {
        let mut compose = String::from("services:\n");
        for (i, v) in versions.iter().enumerate() {
            compose.push_str(&format!(
                "  {}:\n    image: {}\n    init: true\n{SLOW_HEALTHCHECK}",
                service(i),
                env.image(*v)
            ));
        }
        std::fs::write(self.file(), compose).expect("write docker-compose.yml");
    }

    fn up(&self) -> Res<Duration> {
        let start = Instant::now();
        let out = Command::new("docker-compose")
            .args(["-p", &self.project, "-f"])
            .arg(self.file())
            .args(["up", "-d"])
            .stdin(Stdio::null())
            .output()
            .map_err(err("docker-compose (apt-get install docker-compose)"))?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "docker-compose up -d: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(took)
    }
}

/// The floor: the same containers (gitfleet's create bodies), with nothing but the
/// Engine API calls the change needs.
struct Floor {
    fleet: FleetDir,
    docker: Docker,
}

impl Floor {
    async fn list(&self) -> Res<Duration> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={}", self.fleet.project)],
        )]);
        let (listed, took) = timed(self.docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        })))
        .await;
        listed.map_err(err("list"))?;
        Ok(took)
    }

    /// stop + remove + create + start of `services`, all in parallel; the wall time and
    /// each container's [stop, remove, create+start] times.
    async fn replace(
        &self,
        spec: &ProjectSpec,
        services: &[String],
    ) -> Res<(Duration, Vec<[Duration; 3]>)> {
        let (results, took) = timed(join_all(
            services.iter().map(|name| self.replace_one(spec, name)),
        ))
        .await;
        Ok((took, results.into_iter().collect::<Res<Vec<_>>>()?))
    }

    async fn replace_one(&self, spec: &ProjectSpec, name: &str) -> Res<[Duration; 3]> {
        let c = &spec.services[name].container_name;
        let start = Instant::now();
        self.docker
            .stop_container(c, None::<StopContainerOptions>)
            .await
            .map_err(err("stop"))?;
        let stopped = start.elapsed();
        self.docker
            .remove_container(
                c,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(err("remove"))?;
        let removed = start.elapsed();
        self.create_start(spec, name).await?;
        Ok([stopped, removed - stopped, start.elapsed() - removed])
    }

    async fn create_start(&self, spec: &ProjectSpec, name: &str) -> Res<()> {
        let s = &spec.services[name];
        let mut body = s.create.clone();
        body.image = Some(s.image.to_string());
        let options = CreateContainerOptions {
            name: Some(s.container_name.clone()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(err("create"))?;
        self.docker
            .start_container(&s.container_name, None)
            .await
            .map_err(err("start"))
    }

    /// The network, then every container created and started in parallel.
    async fn cold(&self, spec: &ProjectSpec) -> Res<Duration> {
        let start = Instant::now();
        for network in spec.networks.values() {
            let created = self
                .docker
                .create_network(NetworkCreateRequest {
                    name: network.name.clone(),
                    driver: network.driver.clone(),
                    labels: Some(network.labels.clone().into_iter().collect()),
                    ..Default::default()
                })
                .await;
            match created {
                // A network the engine would not remove (a stale endpoint) is reused,
                // as gitfleet and compose reuse it.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => {}
                other => {
                    other.map_err(err("create network"))?;
                }
            }
        }
        let results = join_all(
            spec.services
                .keys()
                .map(|name| self.create_start(spec, name)),
        )
        .await;
        results.into_iter().collect::<Res<Vec<()>>>()?;
        Ok(start.elapsed())
    }
}

/// Removes every container and network of `project` (untimed; the same for all tools).
pub async fn teardown(docker: &Docker, project: &str) {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{PROJECT_LABEL}={project}")],
    )]);
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
    join_all(listed.iter().filter_map(|c| c.id.as_deref()).map(|id| {
        docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
    }))
    .await;
    // The engine may still hold an endpoint of a container just removed: retry a little.
    let network = format!("{project}_default");
    for _ in 0..10 {
        match docker.remove_network(&network).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 403 | 409 | 500,
                ..
            }) => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => return,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Tool {
    Gitfleet,
    Compose,
    Floor,
}

const TOOLS: [Tool; 3] = [Tool::Gitfleet, Tool::Compose, Tool::Floor];

/// The three tools in an order that rotates with the repetition.
fn order(rep: usize) -> impl Iterator<Item = Tool> {
    (0..3).map(move |i| TOOLS[(i + rep) % 3])
}

struct Side {
    gf: Gitfleet,
    dc: Compose,
    fl: Floor,
    docker: Docker,
    env: Env,
    n: usize,
}

impl Side {
    fn projects(&self) -> [&str; 3] {
        [
            &self.gf.fleet.project,
            &self.dc.project,
            &self.fl.fleet.project,
        ]
    }

    async fn teardown_all(&self) {
        for p in self.projects() {
            teardown(&self.docker, p).await;
        }
    }

    /// Brings one tool to `versions`, measuring what that tool needs to do it; `changed`
    /// names the services whose image differs from the last state (the floor's work).
    async fn step(
        &self,
        tool: Tool,
        versions: &[usize],
        changed: &[String],
        cold: bool,
        phases: &mut Phases,
    ) -> Res<f64> {
        let took = match tool {
            Tool::Gitfleet => {
                self.gf.fleet.write(&self.env, versions);
                let (converged, committed) = self.gf.converge().await?;
                phases
                    .entry("gf_converge_ms")
                    .or_default()
                    .push(ms(converged));
                phases
                    .entry("gf_commit_ms")
                    .or_default()
                    .push(ms(committed));
                converged + committed
            }
            Tool::Compose => {
                self.dc.write(&self.env, versions);
                self.dc.up()?
            }
            Tool::Floor => {
                self.fl.fleet.write(&self.env, versions);
                let (_, spec) = self.fl.fleet.load()?;
                if cold {
                    self.fl.cold(&spec).await?
                } else {
                    let (took, steps) = self.fl.replace(&spec, changed).await?;
                    for [stop, remove, create_start] in steps {
                        phases.entry("fl_stop_ms").or_default().push(ms(stop));
                        phases.entry("fl_remove_ms").or_default().push(ms(remove));
                        phases
                            .entry("fl_create_start_ms")
                            .or_default()
                            .push(ms(create_start));
                    }
                    took
                }
            }
        };
        Ok(ms(took))
    }

    async fn noop(&self, tool: Tool) -> Res<f64> {
        Ok(ms(match tool {
            Tool::Gitfleet => self.gf.noop().await?,
            Tool::Compose => self.dc.up()?,
            Tool::Floor => self.fl.list().await?,
        }))
    }
}

fn push(t: &mut Triple, tool: Tool, value: f64) {
    match tool {
        Tool::Gitfleet => t.gitfleet.push(value),
        Tool::Compose => t.peer.push(value),
        Tool::Floor => t.floor.push(value),
    }
}

pub async fn run(options: &Options, env: &Env) -> Res<()> {
    let engine = DockerEngine::connect().await.map_err(err("engine"))?;
    let docker = engine.client().clone();
    for image in [&env.v1, &env.v2] {
        let out = Command::new("docker")
            .args(["pull", "-q", image])
            .output()
            .map_err(err("docker pull"))?;
        if !out.status.success() {
            return Err(format!(
                "docker pull {image}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    for &n in &options.sizes {
        let side = Side {
            gf: Gitfleet {
                fleet: FleetDir::new(&format!("bench-gf-{n}"), true),
                engine: engine.clone(),
            },
            dc: Compose {
                project: format!("bench-dc-{n}"),
                dir: TempDir::new(&format!("bench-dc-{n}")),
            },
            fl: Floor {
                fleet: FleetDir::new(&format!("bench-fl-{n}"), true),
                docker: docker.clone(),
            },
            docker: docker.clone(),
            env: Env {
                v1: env.v1.clone(),
                v2: env.v2.clone(),
                registry: env.registry.clone(),
            },
            n,
        };
        let outcome = run_size(options, &side).await;
        side.teardown_all().await;
        outcome?;
    }
    Ok(())
}

async fn run_size(options: &Options, side: &Side) -> Res<()> {
    let n = side.n;
    let all: Vec<String> = (0..n).map(service).collect();
    side.teardown_all().await;
    let mut versions = vec![0; n];
    progress!("converge n={n}: cold start of the three projects (untimed)");
    for tool in TOOLS {
        side.step(tool, &versions, &all, true, &mut Phases::new())
            .await?;
    }
    let (mut one_phases, mut every_phases, mut cold_phases) =
        (Phases::new(), Phases::new(), Phases::new());
    let (mut noop, mut one, mut every, mut cold) = (
        Triple::default(),
        Triple::default(),
        Triple::default(),
        Triple::default(),
    );
    let mut noop_apply_samples: Vec<f64> = Vec::new();
    for rep in 0..options.reps {
        progress!("converge n={n}: repetition {}/{}", rep + 1, options.reps);
        for tool in order(rep) {
            push(&mut noop, tool, side.noop(tool).await?);
        }
        noop_apply_samples.push(ms(side.gf.noop_apply().await?));

        versions[0] ^= 1;
        for tool in order(rep) {
            push(
                &mut one,
                tool,
                side.step(tool, &versions, &all[..1], false, &mut one_phases)
                    .await?,
            );
        }

        for v in versions.iter_mut() {
            *v ^= 1;
        }
        for tool in order(rep) {
            push(
                &mut every,
                tool,
                side.step(tool, &versions, &all, false, &mut every_phases)
                    .await?,
            );
        }

        side.teardown_all().await;
        for tool in order(rep) {
            push(
                &mut cold,
                tool,
                side.step(tool, &versions, &all, true, &mut cold_phases)
                    .await?,
            );
        }
    }
    noop.report("noop", n, &[]);
    let apply_noop = Triple {
        gitfleet: noop_apply_samples,
        peer: noop.peer.clone(),
        floor: noop.floor.clone(),
    };
    apply_noop.report("noop-apply", n, &[]);
    one.report("one-changed", n, &phase_fields(&one_phases));
    every.report("all-changed", n, &phase_fields(&every_phases));
    cold.report("cold-start", n, &phase_fields(&cold_phases));
    Ok(())
}

/// The health gate on its own project (the image's own 1s HEALTHCHECK): after all
/// digests change, how long converge → gate passed takes (`gate_ms`, monitor = 0), and
/// how long after the engine's last `health_status: healthy` event the gate knew
/// (`detect_ms`).
pub async fn gate(options: &Options, env: &Env) -> Res<()> {
    let engine = DockerEngine::connect().await.map_err(err("engine"))?;
    let docker = engine.client().clone();
    for &n in &options.sizes {
        let project = format!("bench-gate-{n}");
        teardown(&docker, &project).await;
        let gf = Gitfleet {
            fleet: FleetDir::new(&project, false),
            engine: engine.clone(),
        };
        let mut versions = vec![0; n];
        gf.fleet.write(env, &versions);
        let outcome = async {
            gf.converge().await?;
            let (mut gate_ms, mut detect_ms, mut converge_ms) =
                (Vec::new(), Vec::new(), Vec::new());
            for rep in 0..options.reps {
                progress!("gate n={n}: repetition {}/{}", rep + 1, options.reps);
                for v in versions.iter_mut() {
                    *v ^= 1;
                }
                gf.fleet.write(env, &versions);
                let events = healthy_events(&docker, &project);
                let engine = &gf.engine;
                let (converged, committed, (gate_took, passed_at)) = gf
                    .converge_with(|spec| async move {
                        let start = Instant::now();
                        let settings = GateSettings {
                            probes: &BTreeMap::new(),
                            health_timeout: Duration::from_secs(60),
                            monitor: Duration::ZERO,
                        };
                        let mut run = GateRun::new(chrono::Utc::now());
                        let verdict =
                            gate::hold(engine, &spec, &settings, &SystemClock, &mut run, &mut ())
                                .await;
                        let passed_at = SystemTime::now();
                        if let Err(failure) = verdict {
                            return Err(format!("gate: {failure}"));
                        }
                        Ok((start.elapsed(), passed_at))
                    })
                    .await?;
                let healthy = events.stop().await;
                let passed_ns = passed_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as i64;
                match healthy.iter().max() {
                    Some(last) if healthy.len() >= n => {
                        detect_ms.push((passed_ns - last) as f64 / 1e6);
                    }
                    _ => progress!("gate n={n}: saw {} healthy events of {n}", healthy.len()),
                }
                converge_ms.push(ms(converged + committed));
                gate_ms.push(ms(gate_took));
            }
            result(
                "gate",
                n,
                &[
                    ("gate_ms", crate::support::fmt(median(&gate_ms))),
                    ("detect_ms", crate::support::fmt(median(&detect_ms))),
                    (
                        "detect_max_ms",
                        crate::support::fmt(detect_ms.iter().copied().fold(f64::NAN, f64::max)),
                    ),
                    ("converge_ms", crate::support::fmt(median(&converge_ms))),
                ],
            );
            Ok::<(), String>(())
        }
        .await;
        teardown(&docker, &project).await;
        outcome?;
    }
    Ok(())
}

/// Collects the engine's `health_status: healthy` event times (ns) of a project.
struct HealthyEvents {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<i64>>,
}

fn healthy_events(docker: &Docker, project: &str) -> HealthyEvents {
    let filters = HashMap::from([
        (
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={project}")],
        ),
        ("type".to_string(), vec!["container".to_string()]),
    ]);
    let mut stream = docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }));
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                _ = &mut stopped => return seen,
                event = stream.next() => match event {
                    Some(Ok(e)) => {
                        let action = e.action.unwrap_or_default();
                        if action.starts_with("health_status") && action.ends_with(" healthy") {
                            seen.push(e.time_nano.unwrap_or_default());
                        }
                    }
                    _ => return seen,
                }
            }
        }
    });
    HealthyEvents { stop, task }
}

impl HealthyEvents {
    async fn stop(self) -> Vec<i64> {
        // The stream delivers with a little delay: let the last events arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
