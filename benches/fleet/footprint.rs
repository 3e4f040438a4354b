//! The real agent binary: its footprint when idle after a number of reconciles (RSS from
//! /proc, CPU time over an idle window), and the fixture the merge case shares — a
//! fleet repository in a bare Git repository and `gitfleet agent` processes following it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::progress;
use crate::support::{Env, GitDaemon, Options, TempDir, fmt, free_port, git, gitfleet_bin, result};

/// The webhook secret the agents are given.
pub const SECRET: &[u8] = b"bench-webhook-secret";

/// Services of the agent's stack.
const SERVICES: usize = 2;

/// A fleet repository: a bare repository (the remote) and a working clone.
pub struct FleetRemote {
    pub root: TempDir,
    pub project: String,
}

impl FleetRemote {
    pub fn new(project: &str) -> FleetRemote {
        let remote = FleetRemote {
            root: TempDir::new(project),
            project: project.to_string(),
        };
        std::fs::create_dir_all(remote.bare()).expect("bare dir");
        git(&remote.bare(), &["init", "--bare", "-q", "-b", "release"]);
        git(&remote.bare(), &["config", "daemon.receivepack", "true"]);
        std::fs::create_dir_all(remote.work().join("stack")).expect("work dir");
        git(&remote.work(), &["init", "-q", "-b", "release"]);
        remote
    }

    pub fn bare(&self) -> PathBuf {
        self.root.path().join("fleet.git")
    }

    fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Commits a release with every service at image `version` and pushes it; returns
    /// its commit id.
    pub fn release(&self, env: &Env, version: usize, message: &str) -> String {
        let work = self.work();
        let mut fleet = format!(
            "version = 1\n[fleet]\nname = \"{}\"\ncompose = \"stack/compose.yaml\"\n[images]\n",
            self.project
        );
        let mut compose = String::from("services:\n");
        for i in 0..SERVICES {
            fleet.push_str(&format!("s{i:02} = \"{}\"\n", env.image(version)));
            compose.push_str(&format!("  s{i:02}:\n    image: x\n    init: true\n"));
        }
        fleet.push_str(
            "[rollout]\nbatches = [\"canary\"]\nmonitor = \"1s\"\nhealth_timeout = \"60s\"\n\
             [batches.canary]\nnodes = [\"n1\"]\n",
        );
        std::fs::write(work.join("fleet.toml"), fleet).expect("fleet.toml");
        std::fs::write(work.join("stack/compose.yaml"), compose).expect("compose");
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(
            &work,
            &["push", "-q", "-f", self.bare().to_str().unwrap(), "release"],
        );
        git(&work, &["rev-parse", "HEAD"])
    }

    /// n1's record on the status branch of the remote, if any.
    pub fn record(&self) -> Option<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.bare())
            .args(["show", "fleet-status:nodes/n1.toml"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until n1 reports `healthy` for `commit`.
    pub fn wait_healthy(
        &self,
        commit: &str,
        agent: &mut AgentProcess,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let release = format!("release = \"{commit}\"");
        loop {
            if let Some(record) = self.record()
                && record.contains(&release)
                && record.contains("state = \"healthy\"")
            {
                return Ok(());
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                return Err(format!("the agent exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "n1 did not report healthy for {commit} within {}s; its record: {:?}",
                    timeout.as_secs(),
                    self.record()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A `gitfleet agent` process; killed (by its pid) when dropped.
pub struct AgentProcess {
    child: Child,
    pub port: u16,
}

impl AgentProcess {
    pub fn spawn(remote: &FleetRemote, url: &str, extra: &[&str]) -> Result<AgentProcess, String> {
        let port = free_port();
        let log = std::fs::File::create(remote.root.path().join("agent.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(gitfleet_bin())
            .args([
                "agent",
                "--node",
                "n1",
                "--project",
                &remote.project,
                "--repo",
                url,
            ])
            .arg("--state-dir")
            .arg(remote.root.path().join("state"))
            .args(["--interval", "1h", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn gitfleet agent: {e}"))?;
        Ok(AgentProcess { child, port })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path` on the agent's listener.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// Sends a signed push webhook (`X-Hub-Signature-256`); returns the status line.
    pub fn hook(&self, secret: &[u8]) -> Option<String> {
        let body = br#"{"ref":"refs/heads/release"}"#;
        let signature =
            gitfleet::config::fleet::hex(&gitfleet::hmac::hmac::<sha2::Sha256>(secret, body));
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256={signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .ok()?;
        s.write_all(body).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines().next().map(str::to_string)
    }

    /// Reconciles finished so far (`gitfleet_reconciles_total`, every result).
    pub fn reconciles(&self) -> Option<u64> {
        let text = self.get("/metrics")?;
        let body = text.split("\r\n\r\n").nth(1)?;
        Some(
            body.lines()
                .filter(|l| l.starts_with("gitfleet_reconciles_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        )
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in ms.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1000.0 / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM) or a count (Threads).
pub fn status_field(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn cleanup(project: &str) {
    if let Ok(engine) = gitfleet::engine::docker::DockerEngine::connect().await {
        crate::converge::teardown(engine.client(), project).await;
    }
}

/// Both remotes an agent follows: `file://` (the agent watches the ref on disk) and
/// `git://` through `git daemon` (polls and webhooks only).
pub fn run(options: &Options, env: &Env) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    for remote in ["file", "git"] {
        let project = format!("bench-agent-{remote}");
        runtime.block_on(cleanup(&project));
        let outcome = footprint(options, env, &project, remote);
        runtime.block_on(cleanup(&project));
        outcome?;
    }
    Ok(())
}

fn footprint(options: &Options, env: &Env, project: &str, transport: &str) -> Result<(), String> {
    let remote = FleetRemote::new(project);
    let commit = remote.release(env, 0, "release 1");
    let daemon = match transport {
        "git" => Some(GitDaemon::start(remote.root.path())?),
        _ => None,
    };
    let url = daemon
        .as_ref()
        .map_or_else(|| remote.file_url(), |d| d.url("fleet.git"));
    let secret = remote.root.path().join("secret");
    std::fs::write(&secret, SECRET).map_err(|e| e.to_string())?;
    let secret = secret.display().to_string();
    let mut agent = AgentProcess::spawn(&remote, &url, &["--webhook-secret-file", &secret])?;
    let started = Instant::now();
    remote.wait_healthy(&commit, &mut agent, Duration::from_secs(120))?;
    for i in 1..options.reconciles {
        // Every release flips the images: each reconcile converges and holds the gate.
        let commit = remote.release(env, i % 2, &format!("release {}", i + 1));
        if daemon.is_some() {
            agent.hook(SECRET).ok_or("POST /hook failed")?;
        }
        remote.wait_healthy(&commit, &mut agent, Duration::from_secs(120))?;
    }
    let busy = started.elapsed();
    // A push wakes the watcher more than once; let the extra wake-up finish.
    std::thread::sleep(Duration::from_secs(2));
    let done = agent.reconciles().unwrap_or_default();
    progress!(
        "footprint {transport}://: {} releases applied in {:.1}s ({done} reconciles); idle window follows",
        options.reconciles,
        busy.as_secs_f64()
    );
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(1));
    let total = cpu_ms(pid).ok_or("no /proc/<pid>/stat")?;
    let window = if options.quick { 3 } else { 10 };
    std::thread::sleep(Duration::from_secs(window));
    let after = cpu_ms(pid).ok_or("no /proc/<pid>/stat")?;
    let rss = status_field(pid, "VmRSS").unwrap_or(f64::NAN) / 1024.0;
    let anon = status_field(pid, "RssAnon").unwrap_or(f64::NAN) / 1024.0;
    let file = status_field(pid, "RssFile").unwrap_or(f64::NAN) / 1024.0;
    let hwm = status_field(pid, "VmHWM").unwrap_or(f64::NAN) / 1024.0;
    let threads = status_field(pid, "Threads").unwrap_or(f64::NAN);
    // Proportional: shared library pages (libcrypto, libc) count by their share.
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Pss:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(f64::NAN)
        / 1024.0;
    let idle_reconciles = agent.reconciles().unwrap_or_default() - done;
    result(
        &format!("footprint-{transport}"),
        options.reconciles,
        &[
            ("rss_mib", fmt(rss)),
            ("pss_mib", fmt(pss)),
            ("anon_mib", fmt(anon)),
            ("file_mib", fmt(file)),
            ("hwm_mib", fmt(hwm)),
            ("idle_cpu_ms", fmt(after - total)),
            ("idle_window_s", window.to_string()),
            ("reconciles", done.to_string()),
            ("idle_reconciles", idle_reconciles.to_string()),
            ("busy_cpu_ms", fmt(total)),
            ("threads", fmt(threads)),
            ("target_rss_mib", "12".into()),
        ],
    );
    drop(agent);
    drop(daemon);
    Ok(())
}
