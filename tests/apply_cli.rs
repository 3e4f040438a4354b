//! `gitfleet apply` on a real engine, killed at every step of a release (failpoints),
//! then run again: the node ends converged, with exactly one container per service.

mod common;

use std::path::Path;
use std::process::Command;

use gitfleet::engine::converge::observe;
use gitfleet::engine::docker::DockerEngine;

use common::{TempDir, test_images};

struct Node {
    project: String,
    repo: TempDir,
    state: TempDir,
}

impl Node {
    fn new(label: &str) -> Self {
        Node {
            project: format!("gft-apply-{label}-{}", std::process::id()),
            repo: TempDir::new(&format!("apply-repo-{label}")),
            state: TempDir::new(&format!("apply-state-{label}")),
        }
    }

    fn release(&self, web: &str, api: &str, order: &str) {
        let dir = self.repo.path();
        std::fs::create_dir_all(dir.join("stack")).unwrap();
        std::fs::write(
            dir.join("fleet.toml"),
            format!(
                "version = 1\n[fleet]\nname = \"{}\"\ncompose = \"stack/compose.yaml\"\n[images]\nweb = \"{web}\"\napi = \"{api}\"\n\
                 [rollout]\nmonitor = \"2s\"\nhealth_timeout = \"20s\"\norder = \"{order}\"\n",
                self.project
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("stack/compose.yaml"),
            "services:\n  api:\n    image: placeholder\n    init: true\n  web:\n    image: placeholder\n    init: true\n    \
             depends_on:\n      api: {condition: service_healthy}\n",
        )
        .unwrap();
    }

    /// Runs `gitfleet apply`; `None` exit code means it was killed (a failpoint abort).
    fn apply(&self, failpoint: Option<&str>) -> (Option<i32>, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitfleet"));
        cmd.arg("apply")
            .arg(self.repo.path())
            .args(["--node", "n1", "--state-dir"])
            .arg(self.state.path());
        if let Some(fp) = failpoint {
            cmd.env("GITFLEET_TEST_FAILPOINT", fp);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), common::output_text(&out))
    }
}

/// (service, running, image) of every container of the project; panics on leftovers.
async fn containers(engine: &DockerEngine, project: &str) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    for o in observe(engine, project).await.unwrap() {
        assert!(
            !o.is_previous(),
            "a previous container was left behind: {}",
            o.name
        );
        let inspect = engine.inspect(&o.id).await.unwrap();
        let image = inspect.config.and_then(|c| c.image).unwrap_or_default();
        out.push((
            o.service,
            inspect.state.and_then(|s| s.running) == Some(true),
            image,
        ));
    }
    out.sort();
    out
}

async fn cleanup(engine: &DockerEngine, project: &str) {
    for o in observe(engine, project).await.unwrap_or_default() {
        let _ = engine.remove(&o.id).await;
    }
    let _ = engine
        .client()
        .remove_network(&format!("{project}_default"))
        .await;
}

async fn killed_at(failpoint: &str, order: &str) {
    let images = test_images();
    let node = Node::new(failpoint);
    let engine = DockerEngine::connect().await.unwrap();
    cleanup(&engine, &node.project).await;
    node.release(&images.healthy, &images.healthy, order);
    let (code, out) = node.apply(None);
    assert_eq!(code, Some(0), "{out}");

    node.release(&images.healthy_v2, &images.healthy, order);
    let (code, out) = node.apply(Some(failpoint));
    assert_eq!(
        code, None,
        "the failpoint {failpoint} should have killed the process: {out}"
    );
    let (code, out) = node.apply(None);
    assert_eq!(code, Some(0), "after a kill at {failpoint}: {out}");

    let state = containers(&engine, &node.project).await;
    assert_eq!(state.len(), 2, "{state:?}");
    assert!(state.iter().all(|(_, running, _)| *running), "{state:?}");
    let web = state.iter().find(|(s, _, _)| s == "web").unwrap();
    assert!(
        images
            .healthy_v2
            .ends_with(web.2.rsplit('@').next().unwrap()),
        "{state:?}"
    );
    cleanup(&engine, &node.project).await;
    let _ = Path::new(&node.project);
}

#[tokio::test]
async fn killed_after_start_first_announced_the_new_container() {
    killed_at("after-announce-new", "start-first").await;
}

#[tokio::test]
async fn killed_after_start_first_gave_the_new_container_the_name() {
    killed_at("after-take-over", "start-first").await;
}

#[tokio::test]
async fn killed_after_pull() {
    killed_at("after-pull", "stop-first").await;
}

#[tokio::test]
async fn killed_after_stop_old() {
    killed_at("after-stop-old", "stop-first").await;
}

#[tokio::test]
async fn killed_after_rename_old() {
    killed_at("after-rename-old", "stop-first").await;
}

#[tokio::test]
async fn killed_after_create_new() {
    killed_at("after-create-new", "stop-first").await;
}

#[tokio::test]
async fn killed_after_start_new() {
    killed_at("after-start-new", "stop-first").await;
}

#[tokio::test]
async fn killed_during_monitor() {
    killed_at("during-monitor", "stop-first").await;
}

#[tokio::test]
async fn killed_after_restore_then_the_bad_release_is_restored_again() {
    let images = test_images();
    let node = Node::new("after-restore");
    let engine = DockerEngine::connect().await.unwrap();
    cleanup(&engine, &node.project).await;
    node.release(&images.healthy, &images.healthy, "stop-first");
    assert_eq!(node.apply(None).0, Some(0));

    node.release(&images.unhealthy, &images.healthy, "stop-first");
    let (code, out) = node.apply(Some("after-restore"));
    assert_eq!(code, None, "{out}");
    let (code, out) = node.apply(None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("service `web`") && out.contains("previous containers restored"),
        "{out}"
    );

    let state = containers(&engine, &node.project).await;
    assert_eq!(state.len(), 2, "{state:?}");
    let web = state.iter().find(|(s, _, _)| s == "web").unwrap();
    assert!(
        web.1 && images.healthy.ends_with(web.2.rsplit('@').next().unwrap()),
        "{state:?}"
    );
    cleanup(&engine, &node.project).await;
}

#[tokio::test]
async fn applying_twice_changes_nothing() {
    let images = test_images();
    let node = Node::new("twice");
    let engine = DockerEngine::connect().await.unwrap();
    cleanup(&engine, &node.project).await;
    node.release(&images.healthy, &images.healthy, "stop-first");
    assert_eq!(node.apply(None).0, Some(0));
    let before = containers(&engine, &node.project).await;
    let (code, out) = node.apply(None);
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(containers(&engine, &node.project).await, before);
    cleanup(&engine, &node.project).await;
}
