//! `gitfleet diff` against a real engine: nothing to do after a converge, the changed
//! service named with its old and new image after a release edits fleet.toml.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gitfleet::config::fleet::{NodeId, UpdateOrder};
use gitfleet::config::{DirFiles, Interpolation, load_repo};
use gitfleet::engine::converge::{self, ConvergeOptions};
use gitfleet::engine::docker::DockerEngine;
use gitfleet::engine::spec::project_spec;
use gitfleet::state::project_dir;

use common::{TempDir, test_images};

fn write_repo(dir: &Path, project: &str, web: &str, api: &str) {
    std::fs::create_dir_all(dir.join("stack")).unwrap();
    std::fs::write(
        dir.join("fleet.toml"),
        format!("version = 1\n[fleet]\nname = \"{project}\"\ncompose = \"stack/compose.yaml\"\n[images]\nweb = \"{web}\"\napi = \"{api}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("stack/compose.yaml"),
        "services:\n  web:\n    image: placeholder\n    init: true\n  api:\n    image: placeholder\n    init: true\n",
    )
    .unwrap();
}

fn diff(repo: &Path, state: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .arg("diff")
        .arg(repo)
        .args(["--node", "n1", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn diff_shows_nothing_after_converge_and_the_changed_service_after_a_release() {
    let images = test_images();
    let project = format!("gft-diff-{}", std::process::id());
    let repo = TempDir::new("diff-repo");
    let state = TempDir::new("diff-state");
    write_repo(repo.path(), &project, &images.healthy, &images.healthy);

    let (code, out) = diff(repo.path(), state.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("create"), "{out}");

    let engine = DockerEngine::connect().await.unwrap();
    let files = DirFiles(repo.path().to_path_buf());
    let vars = Interpolation {
        node: NodeId::from("n1"),
        release: "working-tree".into(),
        ..Interpolation::default()
    };
    let loaded = load_repo(&files, &vars).unwrap();
    let host_dir = project_dir(state.path(), &project);
    let spec = project_spec(
        &project,
        &loaded.compose,
        &loaded.images,
        &host_dir,
        &gitfleet::state::digest_key(state.path(), loaded.compose.has_secret_content()).unwrap(),
    )
    .unwrap();
    let local = converge::pull_all(&engine, &loaded.images, &BTreeMap::new())
        .await
        .unwrap();
    let options = ConvergeOptions {
        order: UpdateOrder::StopFirst,
        dependency_timeout: Duration::from_secs(30),
        local_images: &local,
    };
    converge::converge(&engine, &spec, &options).await.unwrap();

    let (code, out) = diff(repo.path(), state.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("keep") && !out.contains("recreate"), "{out}");

    write_repo(repo.path(), &project, &images.healthy_v2, &images.healthy);
    let (code, out) = diff(repo.path(), state.path());
    assert_eq!(code, Some(1), "{out}");
    let web = out
        .lines()
        .find(|l| l.trim_start().starts_with("web"))
        .unwrap();
    assert!(
        web.contains("recreate") && web.contains(&images.healthy_v2),
        "{out}"
    );
    let api = out
        .lines()
        .find(|l| l.trim_start().starts_with("api"))
        .unwrap();
    assert!(api.contains("keep"), "{out}");

    // A configuration change names the Compose keys that changed.
    write_repo(repo.path(), &project, &images.healthy, &images.healthy);
    let compose = repo.path().join("stack/compose.yaml");
    let text = std::fs::read_to_string(&compose).unwrap();
    let changed = text.replacen(
        "  api:\n    image: placeholder\n    init: true\n",
        "  api:\n    image: placeholder\n    init: true\n    environment: {MODE: fast}\n    restart: always\n",
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(&compose, changed).unwrap();
    let (code, out) = diff(repo.path(), state.path());
    assert_eq!(code, Some(1), "{out}");
    let api = out
        .lines()
        .find(|l| l.trim_start().starts_with("api"))
        .unwrap();
    assert!(
        api.contains("recreate") && api.contains("environment, restart changed"),
        "{out}"
    );

    for o in converge::observe(&engine, &project).await.unwrap() {
        engine.remove(&o.id).await.unwrap();
    }
    let _ = engine
        .client()
        .remove_network(&format!("{project}_default"))
        .await;
}
