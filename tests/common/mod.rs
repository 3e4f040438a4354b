//! Helpers shared by the integration tests.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

pub mod corpus;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The digest key tests translate with (a node's is random: `DigestKey::load_or_create`).
pub fn test_key() -> gitfleet::secret::DigestKey {
    gitfleet::secret::DigestKey::new([7; 32])
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("gitfleet-test-{label}-{}-{n}", std::process::id()));
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

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The example fleet repository shipped with gitfleet.
pub fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet-repo")
}

/// A bare remote under `root` whose `release` branch holds the example fleet repository.
pub fn example_remote(root: &Path) -> PathBuf {
    let bare = root.join("fleet.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-q", "-b", "release"]);
    let work = root.join("work");
    copy_tree(&example_repo(), &work);
    git(&work, &["init", "-q", "-b", "release"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "Initial fleet"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "release"]);
    bare
}

/// A healthy status record of `node` in batch `eu`.
pub fn status_record(node: &str) -> gitfleet::core::status::StatusRecord {
    gitfleet::core::status::StatusRecord {
        node: gitfleet::config::fleet::NodeId::from(node),
        batch: "eu".into(),
        release: "0".repeat(40),
        images: gitfleet::config::fleet::ImageSetId("a".repeat(64)),
        state: gitfleet::core::status::NodeState::Healthy,
        since: chrono::Utc::now(),
        message: "in sync".into(),
        agent: "test".into(),
        updated: chrono::Utc::now(),
    }
}

/// The images `scripts/testenv up` pushed to the local registry, pinned by digest.
pub struct TestImages {
    pub healthy: String,
    pub healthy_v2: String,
    pub unhealthy: String,
    pub slow: String,
    pub crashloop: String,
}

/// The real engine and registry the integration tests need. Missing under CI (or
/// anywhere) is a failure, never a skip.
pub fn test_images() -> TestImages {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: these tests need the real Docker engine and registry. \
                 Run them with scripts/test, or `scripts/testenv up && . /tmp/gitfleet-testenv/env` first"
            )
        })
    };
    assert!(
        std::env::var("DOCKER_HOST").is_ok(),
        "DOCKER_HOST is not set: run the tests with scripts/test"
    );
    TestImages {
        healthy: var("GITFLEET_TEST_IMAGE_HEALTHY"),
        healthy_v2: var("GITFLEET_TEST_IMAGE_HEALTHY_V2"),
        unhealthy: var("GITFLEET_TEST_IMAGE_UNHEALTHY"),
        slow: var("GITFLEET_TEST_IMAGE_SLOW"),
        crashloop: var("GITFLEET_TEST_IMAGE_CRASHLOOP"),
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A command's stdout then stderr, as one text for assertions.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the real `git` in `dir` as an operator would; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=op", "-c", "user.email=op@example.com"])
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

/// A `git daemon` serving `root` on a loopback port, with pushes enabled.
pub struct GitDaemon {
    child: std::process::Child,
    pid_file: PathBuf,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(root: &Path) -> Self {
        Self::start_on(root, free_port())
    }

    /// Starts on a given port (to bring a stopped remote back at the same URL).
    pub fn start_on(root: &Path, port: u16) -> Self {
        let pid_file = root.join(format!("daemon-{port}.pid"));
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("git")
            // Its own process group: the connection handlers it forks are stopped with it.
            .process_group(0)
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon {
            child,
            pid_file,
            port,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    /// `git daemon` forks a handler per connection: stop the whole process group it
    /// leads (a handler of a hung connection would otherwise outlive the test).
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// An agent process that is killed if a test ends (or panics) while it still runs.
pub struct AgentProcess(pub std::process::Child);

impl AgentProcess {
    pub fn wait(&mut self) -> Option<i32> {
        self.0.wait().unwrap().code()
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        self.wait()
    }

    /// SIGKILL, as a crash would stop it.
    pub fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Pushes the test image `source` to the test registry as `gitfleet-test/<name>:1`, a
/// repository only the calling test uses (so pruning or pulling it cannot disturb other
/// tests); returns it pinned by digest.
pub fn unique_image(source: &str, name: &str) -> String {
    let registry = std::env::var("GITFLEET_TEST_REGISTRY").unwrap();
    let tag = format!("{registry}/gitfleet-test/{name}:1");
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    docker(&["pull", "-q", source]);
    docker(&["tag", source, &tag]);
    docker(&["push", "-q", &tag]);
    let pinned = docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &tag]);
    let pinned = if pinned.contains(&format!("/{name}@")) {
        pinned
    } else {
        format!(
            "{}@{}",
            tag.rsplit_once(':').unwrap().0,
            source.rsplit_once('@').unwrap().1
        )
    };
    docker(&["rmi", &tag]);
    pinned
}
