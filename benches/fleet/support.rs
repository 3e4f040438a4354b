//! What every case of the bench shares: options, the test environment, timing, medians
//! and the one `RESULT` line per case.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Command-line options (after `cargo bench --bench fleet --`).
#[derive(Clone, Debug)]
pub struct Options {
    /// Stack sizes of the converge cases.
    pub sizes: Vec<usize>,
    /// Repetitions of every measured case.
    pub reps: usize,
    /// Simulated agents of the status-branch case.
    pub agents: usize,
    /// Records `decide` looks at.
    pub records: usize,
    /// Reconciles before the idle agent is measured.
    pub reconciles: usize,
    /// Case groups to run (empty: all).
    pub only: Vec<String>,
    pub quick: bool,
}

pub const GROUPS: &[&str] = &["converge", "gate", "decide", "footprint", "status", "merge"];

impl Options {
    pub fn parse() -> Result<Options, String> {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        let quick_env =
            std::env::var("GITFLEET_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let quick = quick_env || args.iter().any(|a| a == "--quick");
        let mut o = if quick {
            Options {
                sizes: vec![1],
                reps: 2,
                agents: 20,
                records: 10_000,
                reconciles: 3,
                only: Vec::new(),
                quick,
            }
        } else {
            Options {
                sizes: vec![1, 5, 20],
                reps: 7,
                agents: 500,
                records: 10_000,
                reconciles: 10,
                only: Vec::new(),
                quick,
            }
        };
        let mut i = 0;
        while i < args.len() {
            let arg = std::mem::take(&mut args[i]);
            let mut value = |name: &str| {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                // `cargo bench` passes --bench; --quick was read above.
                "--bench" | "--quick" => {}
                "--sizes" => {
                    o.sizes = value("--sizes")?
                        .split(',')
                        .map(|s| {
                            s.trim()
                                .parse()
                                .map_err(|_| format!("--sizes: bad size `{s}`"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--reps" => o.reps = number(&value("--reps")?, "--reps")?,
                "--agents" => o.agents = number(&value("--agents")?, "--agents")?,
                "--records" => o.records = number(&value("--records")?, "--records")?,
                "--reconciles" => o.reconciles = number(&value("--reconciles")?, "--reconciles")?,
                "-h" | "--help" => {
                    return Err(format!(
                        "usage: cargo bench --bench fleet -- [--quick] [--sizes 1,5,20] [--reps 7] \
                         [--agents 500] [--records 10000] [--reconciles 10] [GROUP...]\n\
                         groups: {}\nGITFLEET_BENCH_QUICK=1 is --quick.",
                        GROUPS.join(" ")
                    ));
                }
                group if GROUPS.contains(&group) => o.only.push(group.to_string()),
                // libtest-style filters and flags cargo may pass are ignored.
                _ => {}
            }
            i += 1;
        }
        if o.reps == 0 || o.sizes.is_empty() {
            return Err("--reps and --sizes must not be empty".into());
        }
        Ok(o)
    }

    pub fn runs(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

fn number(text: &str, name: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|_| format!("{name}: `{text}` is not a number"))
}

/// Progress on stderr; `RESULT` lines alone go to stdout.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("bench: {}", format!($($arg)*)) };
}

/// The images `scripts/testenv up` pushed, pinned by digest.
pub struct Env {
    pub v1: String,
    pub v2: String,
    pub registry: String,
}

impl Env {
    pub fn from_environment() -> Result<Env, String> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                format!(
                    "{name} is not set: the bench needs the test engine and registry. \
                     Run `scripts/testenv up && . /tmp/gitfleet-testenv/env` first"
                )
            })
        };
        var("DOCKER_HOST")?;
        Ok(Env {
            v1: var("GITFLEET_TEST_IMAGE_HEALTHY")?,
            v2: var("GITFLEET_TEST_IMAGE_HEALTHY_V2")?,
            registry: var("GITFLEET_TEST_REGISTRY")?,
        })
    }

    /// Image `version` (0 or 1).
    pub fn image(&self, version: usize) -> &str {
        if version.is_multiple_of(2) {
            &self.v1
        } else {
            &self.v2
        }
    }
}

/// A directory under the temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("gitfleet-bench-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The `p`-th percentile (0..=100) by nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// Samples of one converge case, per tool.
#[derive(Default)]
pub struct Triple {
    pub gitfleet: Vec<f64>,
    pub peer: Vec<f64>,
    pub floor: Vec<f64>,
}

impl Triple {
    /// Prints `RESULT <case> n=<N> gitfleet_ms=… peer_ms=… floor_ms=… ratio_peer=… ratio_floor=…`.
    pub fn report(&self, case: &str, n: usize, extra: &[(&str, String)]) {
        let (x, y, z) = (
            median(&self.gitfleet),
            median(&self.peer),
            median(&self.floor),
        );
        let mut line = format!(
            "RESULT {case} n={n} gitfleet_ms={} peer_ms={} floor_ms={} ratio_peer={} ratio_floor={}",
            fmt(x),
            fmt(y),
            fmt(z),
            ratio(x, y),
            ratio(x, z)
        );
        for (k, v) in extra {
            let _ = write!(line, " {k}={v}");
        }
        println!("{line}");
    }
}

/// Prints `RESULT <case> n=<N> k=v…` for a case that is no side-by-side.
pub fn result(case: &str, n: usize, fields: &[(&str, String)]) {
    let mut line = format!("RESULT {case} n={n}");
    for (k, v) in fields {
        let _ = write!(line, " {k}={v}");
    }
    println!("{line}");
}

pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "nan".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

pub fn ratio(x: f64, y: f64) -> String {
    if y > 0.0 && x.is_finite() && y.is_finite() {
        format!("{:.3}", x / y)
    } else {
        "nan".into()
    }
}

/// Runs the real `git` in `dir`; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The gitfleet binary cargo built for this bench, or `GITFLEET_BENCH_BIN` (to measure
/// another build of the agent, e.g. one with other profile settings).
pub fn gitfleet_bin() -> PathBuf {
    std::env::var_os("GITFLEET_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gitfleet")))
}

/// A `git daemon` serving `root` on a free loopback port, pushes enabled and no limit on
/// concurrent clients; stopped by its pids when dropped.
pub struct GitDaemon {
    child: std::process::Child,
    pid_file: PathBuf,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(root: &Path) -> Result<GitDaemon, String> {
        let port = free_port();
        let pid_file = root.join(format!("daemon-{port}.pid"));
        let child = std::process::Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--max-connections=0",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("git daemon: {e}"))?;
        let daemon = GitDaemon {
            child,
            pid_file,
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(daemon);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("git daemon did not listen on 127.0.0.1:{port}"))
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    /// `git daemon` may fork the server: stop the pid it wrote, then the child.
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let pid = pid.trim();
            if !pid.is_empty() && pid != self.child.id().to_string() {
                let _ = std::process::Command::new("kill").arg(pid).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// A TCP relay on a free loopback port to `target`, counting the bytes that pass both
/// ways (what a Git transport puts on the wire, ref advertisement included).
pub struct CountingProxy {
    pub port: u16,
    pub bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    pub fn start(target: u16) -> Result<CountingProxy, String> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = bytes.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream,
                            mut to: std::net::TcpStream,
                            n: Arc<AtomicU64>| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match std::io::Read::read(&mut from, &mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => {
                                    n.fetch_add(k as u64, Ordering::Relaxed);
                                    if std::io::Write::write_all(&mut to, &buf[..k]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                pipe(client, server, counter.clone());
                pipe(s2, c2, counter.clone());
            }
        });
        Ok(CountingProxy { port, bytes })
    }

    pub fn take(&self) -> u64 {
        self.bytes.swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}
