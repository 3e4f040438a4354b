//! The Dockerfile builds, and the image's agent converges a node through the host's
//! engine (the socket mounted) from a fleet repository, as docs/packaging.md tells
//! operators to run it. The base images are local stand-ins (`scripts/testenv
//! base-images`): Docker Hub and gcr.io are unreachable here. The crates are vendored
//! into the build context, since the build container has no network.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TempDir, git, output_text, test_images};

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker CLI");
    (out.status.success(), output_text(&out))
}

/// The repository's tracked files plus vendored crates, as a build context.
fn build_context(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = git(
        root,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    );
    for file in files.split('\0').filter(|f| !f.is_empty()) {
        let (from, to) = (root.join(file), dir.join(file));
        if from.is_file() {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let out = Command::new("cargo")
        .args(["vendor", "--locked", "--versioned-dirs", "vendor"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo vendor: {}", output_text(&out));
    std::fs::create_dir_all(dir.join(".cargo")).unwrap();
    std::fs::write(dir.join(".cargo/config.toml"), &out.stdout).unwrap();
}

#[test]
fn the_image_builds_and_its_agent_converges_a_node_through_the_mounted_socket() {
    let images = test_images();
    for base in ["rust:1.95-bookworm", "gcr.io/distroless/cc-debian12"] {
        let (present, _) = docker(&["image", "inspect", base]);
        assert!(
            present,
            "{base} is missing: run `scripts/testenv base-images` (scripts/test does)"
        );
    }
    let root = TempDir::new("dockerfile");
    let context = root.path().join("context");
    build_context(&context);
    let tag = format!("gitfleet-test:{}", std::process::id());
    let (built, log) = docker(&["build", "-q", "-t", &tag, context.to_str().unwrap()]);
    assert!(built, "docker build:\n{log}");

    // A fleet repository with one node and the healthy test image.
    let bare = root.path().join("fleet.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-q", "-b", "release"]);
    let work = root.path().join("work");
    std::fs::create_dir_all(work.join("stack")).unwrap();
    std::fs::write(
        work.join("fleet.toml"),
        format!(
            "version = 1\n[fleet]\nname = \"shop\"\ncompose = \"stack/compose.yaml\"\n\
             [images]\nweb = \"{}\"\n[rollout]\nmonitor = \"2s\"\nhealth_timeout = \"30s\"\n",
            images.healthy
        ),
    )
    .unwrap();
    std::fs::write(
        work.join("stack/compose.yaml"),
        "services:\n  web:\n    image: x\n    init: true\n",
    )
    .unwrap();
    git(&work, &["init", "-q", "-b", "release"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "First release"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "release"]);

    // As documented: the socket, and the state directory at the same path as outside.
    let socket = std::env::var("DOCKER_HOST").unwrap();
    let socket = socket.trim_start_matches("unix://");
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let project = format!("gft-image-{}", std::process::id());
    let mount = |from: &Path, to: &str| format!("{}:{to}", from.display());
    let (ran, out) = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{socket}:/var/run/docker.sock"),
        "-v",
        &mount(&state, state.to_str().unwrap()),
        "-v",
        &mount(&bare, "/srv/fleet.git"),
        &tag,
        "agent",
        "--once",
        "--repo",
        "file:///srv/fleet.git",
        "--node",
        "n1",
        "--project",
        &project,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let (_, running) = docker(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    let (_, ids) = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    for id in ids.split_whitespace() {
        docker(&["rm", "-f", id]);
    }
    docker(&["network", "rm", &format!("{project}_default")]);
    docker(&["rmi", &tag]);
    assert!(ran, "the agent in the image failed:\n{out}");
    assert!(out.contains("n1: healthy"), "{out}");
    assert!(
        running.contains(&format!("{project}-web-1 Up")),
        "{running}"
    );
}
