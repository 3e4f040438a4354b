//! `gitfleet pin` against the real local registry `scripts/testenv` runs: tags resolved
//! to the digests it serves, a semver policy followed and committed, a multi-arch index
//! pinned by its index digest, comments kept, and errors that change nothing.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{TempDir, copy_tree, example_repo, free_port, git, output_text, test_images};
use sha2::{Digest as _, Sha256};

const WEB: &str = "web = \"registry.example.com/acme/web:2.3.1@sha256:7a6bb05187a47ea6466833d1506dc71024e2909a8e6ce03da57814bfbc635330\"";
const API: &str = "api = \"registry.example.com/acme/api:1.4.2@sha256:e9041ef829ded36a52d5ef57ac67a8c78983cb14e5e23ee0ba21f149b23c548a\"";
const DB: &str = "db = \"registry.example.com/acme/db:16.4@sha256:1e7d1ad284d3fab5b0138a82aa537023049c7f2f2d4b4013ba71712bb14afc8a\"";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').unwrap().1
}

/// Pushes each `(tag, source image)` as `<registry>/gitfleet-test/pin-<name>:<tag>`, a
/// repository only the calling test uses; returns the repository.
fn push_tags(name: &str, tags: &[(&str, &str)]) -> String {
    let registry = std::env::var("GITFLEET_TEST_REGISTRY").unwrap();
    let repo = format!("{registry}/gitfleet-test/pin-{name}");
    for (tag, source) in tags {
        let target = format!("{repo}:{tag}");
        docker(&["pull", "-q", source]);
        docker(&["tag", source, &target]);
        docker(&["push", "-q", &target]);
        docker(&["rmi", &target]);
    }
    repo
}

/// The example fleet with its three `[images]` lines replaced.
fn fleet(web: &str, api: &str, db: &str) -> (TempDir, String) {
    let dir = TempDir::new("pin");
    copy_tree(&example_repo(), dir.path());
    let path = dir.path().join("fleet.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen(WEB, web, 1)
        .replacen(API, api, 1)
        .replacen(DB, db, 1);
    std::fs::write(&path, &text).unwrap();
    (dir, text)
}

fn pin(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .arg("pin")
        .arg(dir)
        .args(args)
        .output()
        .expect("run gitfleet pin")
}

fn read(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("fleet.toml")).unwrap()
}

#[test]
fn tags_resolve_to_the_digests_the_registry_serves_and_comments_survive() {
    let images = test_images();
    let repo = push_tags(
        "resolve",
        &[("1.0.0", &images.healthy), ("1.1.0", &images.healthy_v2)],
    );
    let (v1, v2) = (digest_of(&images.healthy), digest_of(&images.healthy_v2));
    let web = format!("web = \"{repo}:1.0.0\"   # the front end, by tag");
    let api = format!("api = \"{repo}:1.1.0@{v1}\"");
    let db = format!("db = \"{repo}@{v2}\"");
    let (dir, before) = fleet(&web, &api, &db);

    let check = pin(dir.path(), &["--check"]);
    assert_eq!(check.status.code(), Some(1), "{}", output_text(&check));
    let dry = pin(dir.path(), &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", output_text(&dry));
    assert_eq!(
        read(dir.path()),
        before,
        "--check and --dry-run change nothing"
    );
    let diff = String::from_utf8_lossy(&dry.stdout);
    assert!(
        diff.contains(&format!("-{web}"))
            && diff.contains(&format!(
                "+web = \"{repo}:1.0.0@{v1}\"   # the front end, by tag"
            )),
        "{diff}"
    );

    let out = pin(dir.path(), &[]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("web: 1.0.0 pinned") && text.contains("api: 1.1.0 moved to a new digest"),
        "{text}"
    );
    assert!(text.contains("db: pinned by digest only"), "{text}");
    let expected = before
        .replacen(
            &web,
            &format!("web = \"{repo}:1.0.0@{v1}\"   # the front end, by tag"),
            1,
        )
        .replacen(&api, &format!("api = \"{repo}:1.1.0@{v2}\""), 1);
    assert_eq!(
        read(dir.path()),
        expected,
        "only the two lines changed; every comment kept"
    );

    let again = pin(dir.path(), &["--check"]);
    assert_eq!(again.status.code(), Some(0), "{}", output_text(&again));
    assert!(output_text(&again).contains("fleet.toml is up to date"));
}

#[test]
fn a_semver_policy_moves_to_the_newest_allowed_tag_in_one_commit_on_a_new_branch() {
    let images = test_images();
    let (v1, v2) = (&images.healthy, &images.healthy_v2);
    let repo = push_tags(
        "semver",
        &[
            ("2.3.0", v1),
            ("2.3.1", v1),
            ("2.3.5", v2),
            ("2.4.0", v1),
            ("3.0.0", v1),
            ("latest", v1),
        ],
    );
    let api = format!(
        "api = {{ image = \"{repo}:2.3.1@{}\", follow = \"semver:~2.3\" }} # follows patches",
        digest_of(v1)
    );
    let web = format!("web = \"{repo}:2.4.0@{}\"", digest_of(v1));
    let db = format!("db = \"{repo}:3.0.0@{}\"", digest_of(v1));
    let (dir, before) = fleet(&web, &api, &db);
    git(dir.path(), &["init", "-q", "-b", "release"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "fleet"]);

    // Without --update the policy is not followed: the tag's digest is current.
    let plain = pin(dir.path(), &["--check"]);
    assert_eq!(plain.status.code(), Some(0), "{}", output_text(&plain));
    let check = pin(dir.path(), &["--check", "--update"]);
    assert_eq!(check.status.code(), Some(1), "{}", output_text(&check));

    let out = pin(dir.path(), &["--update", "--commit"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let new_api = format!(
        "api = {{ image = \"{repo}:2.3.5@{}\", follow = \"semver:~2.3\" }} # follows patches",
        digest_of(v2)
    );
    assert_eq!(read(dir.path()), before.replacen(&api, &new_api, 1));

    let branch = git(dir.path(), &["rev-parse", "--abbrev-ref", "HEAD"]);
    assert!(branch.starts_with("gitfleet/pin-"), "{branch}");
    let message = git(dir.path(), &["log", "-1", "--format=%B"]);
    assert!(message.starts_with("pin: api 2.3.1 → 2.3.5"), "{message}");
    assert!(
        message.contains(&format!("- api: 2.3.1 → 2.3.5 {}", digest_of(v2))),
        "{message}"
    );
    assert_eq!(
        git(dir.path(), &["rev-list", "--count", "release..HEAD"]),
        "1"
    );
    assert_eq!(
        git(dir.path(), &["status", "--porcelain"]),
        "",
        "the commit holds the rewrite"
    );
    assert_eq!(
        git(dir.path(), &["show", "release:fleet.toml"]),
        before.trim_end()
    );
}

#[test]
fn a_multi_arch_index_is_pinned_by_its_index_digest() {
    let images = test_images();
    let repo = push_tags(
        "index",
        &[("amd64", &images.healthy), ("arm64", &images.healthy_v2)],
    );
    let (host, name) = repo.split_once('/').unwrap();
    // The index, PUT through the registry API: one manifest per platform.
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-fsS"])
            .args(args)
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl {args:?}: {}", output_text(&out));
        out.stdout
    };
    let manifests: Vec<String> = [("amd64", &images.healthy), ("arm64", &images.healthy_v2)]
        .iter()
        .map(|(arch, image)| {
            let digest = digest_of(image);
            let accept = "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
            let url = format!("http://{host}/v2/{name}/manifests/{digest}");
            let body = curl(&["-H", accept, &url]);
            let head = String::from_utf8(curl(&["-I", "-H", accept, &url])).unwrap();
            let media_type = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|t| t.trim().to_string()))
                .unwrap();
            format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#, body.len())
        })
        .collect();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        manifests.join(",")
    );
    let index_file = TempDir::new("pin-index");
    let file = index_file.path().join("index.json");
    std::fs::write(&file, &index).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{host}/v2/{name}/manifests/multi"),
    ]);
    let index_digest = format!(
        "sha256:{}",
        gitfleet::config::fleet::hex(&Sha256::digest(index.as_bytes()))
    );

    let web = format!("web = \"{repo}:multi\"");
    let api = format!("api = \"{repo}:amd64@{}\"", digest_of(&images.healthy));
    let db = format!("db = \"{repo}:arm64@{}\"", digest_of(&images.healthy_v2));
    let (dir, before) = fleet(&web, &api, &db);
    let out = pin(dir.path(), &[]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "web: multi pinned {index_digest} (multi-arch: the index digest"
        )),
        "{text}"
    );
    assert!(text.contains("api: up to date at amd64"), "{text}");
    assert_eq!(
        read(dir.path()),
        before.replacen(&web, &format!("web = \"{repo}:multi@{index_digest}\""), 1)
    );
}

#[test]
fn an_unreachable_registry_changes_nothing_and_says_so() {
    let images = test_images();
    let port = free_port();
    let web = format!("web = \"127.0.0.1:{port}/acme/web:1.0.0\" # nothing listens there");
    let api = format!(
        "api = \"{}\"",
        images.healthy.replace("/healthy@", "/healthy:v1@")
    );
    let (dir, before) = fleet(&web, &api, &format!("db = \"{}\"", images.healthy));
    let out = pin(dir.path(), &[]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "fleet.toml:14: `images.web`: registry 127.0.0.1:{port} is unreachable"
        )),
        "{text}"
    );
    assert!(
        text.contains("help: check the registry's address")
            && text.contains("fleet.toml is unchanged"),
        "{text}"
    );
    assert_eq!(read(dir.path()), before);
}

#[test]
fn an_unknown_tag_changes_nothing_and_names_the_line() {
    let images = test_images();
    let repo = push_tags("unknown", &[("1.0.0", &images.healthy)]);
    let web = format!("web = \"{repo}:1.0.0\"");
    let api = format!("api = \"{repo}:9.9.9\"");
    let (dir, before) = fleet(&web, &api, &format!("db = \"{}\"", images.healthy));
    let out = pin(dir.path(), &["--update", "--commit"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("fleet.toml:15: `images.api`: tag `9.9.9` of"),
        "{text}"
    );
    assert!(
        text.contains("is not in registry") && text.contains("help: correct the tag"),
        "{text}"
    );
    assert_eq!(
        read(dir.path()),
        before,
        "the resolvable web line is not written either"
    );
}

/// The Renovate regex manager in docs/pin.md finds every `[images]` reference of the
/// example, both forms, with its name, tag and digest, and nothing else.
#[test]
fn the_documented_renovate_pattern_finds_the_images_lines() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pin.md")).unwrap();
    let line = doc
        .lines()
        .skip_while(|l| !l.contains("matchStrings"))
        .nth(1)
        .unwrap()
        .trim();
    let pattern: String = serde_json::from_str(line.trim_end_matches(',')).unwrap();
    let re = regex::Regex::new(&pattern).unwrap();
    let example = std::fs::read_to_string(example_repo().join("fleet.toml")).unwrap();
    // The api line in the inline-table form.
    let table = format!(
        "api = {{ image = {}, follow = \"semver:^1\" }}",
        &API["api = ".len()..]
    );
    let text = example.replacen(API, &table, 1);
    let found: Vec<(String, String)> = re
        .captures_iter(&text)
        .map(|c| (c["depName"].to_string(), c["currentValue"].to_string()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "registry.example.com/acme/web".to_string(),
                "2.3.1".to_string()
            ),
            (
                "registry.example.com/acme/api".to_string(),
                "1.4.2".to_string()
            ),
            (
                "registry.example.com/acme/db".to_string(),
                "16.4".to_string()
            ),
        ]
    );
}

/// A fleet repository of its own: `fleet_tail` after `[fleet]`, and `compose`.
fn small_fleet(fleet_tail: &str, compose: &str) -> TempDir {
    let dir = TempDir::new("pin-small");
    let fleet =
        format!("version = 1\n\n[fleet]\nname = \"pin\"\ncompose = \"compose.yaml\"\n{fleet_tail}");
    std::fs::write(dir.path().join("fleet.toml"), fleet).unwrap();
    std::fs::write(dir.path().join("compose.yaml"), compose).unwrap();
    dir
}

#[test]
fn unpinned_compose_images_join_images_and_the_result_passes_check() {
    let images = test_images();
    let repo = push_tags(
        "compose",
        &[("1.0.0", &images.healthy), ("latest", &images.healthy_v2)],
    );
    let compose = format!(
        "services:\n  web:\n    image: {repo}:1.0.0\n  worker:\n    image: {repo}\n  side:\n    image: {}\n",
        images.healthy_v2
    );
    let dir = small_fleet("", &compose);
    let out = pin(dir.path(), &[]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("added from the compose file"), "{text}");
    let fleet = read(dir.path());
    assert!(
        fleet.ends_with(&format!(
            "compose = \"compose.yaml\"\n\n[images]\nweb = \"{repo}:1.0.0@{}\"\nworker = \"{repo}:latest@{}\"\n",
            digest_of(&images.healthy),
            digest_of(&images.healthy_v2)
        )),
        "the untagged image is `latest`, written out; the pinned one is left alone:\n{fleet}"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));
}

#[test]
fn a_mirror_answers_when_the_registry_is_unreachable() {
    let images = test_images();
    let repo = push_tags("mirror", &[("1.0.0", &images.healthy)]);
    let (registry, path) = repo.split_once('/').unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let tail = format!(
        "\n[images]\nweb = \"{dead}/{path}:1.0.0\"\n\n[registries]\n\"{dead}\" = [\"{registry}\"]\n"
    );
    let dir = small_fleet(&tail, "services:\n  web:\n    image: x\n");
    let out = pin(dir.path(), &[]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "web: the registry failed; its mirror {registry} answered"
        )),
        "{text}"
    );
    assert!(
        read(dir.path()).contains(&format!(
            "web = \"{dead}/{path}:1.0.0@{}\"",
            digest_of(&images.healthy)
        )),
        "the reference keeps the registry as written; the mirror only answered"
    );
}

/// tests/fixtures/token-registry.py in front of the test registry: Bearer token auth.
struct TokenRegistry(std::process::Child, u16);

impl TokenRegistry {
    fn start(dir: &Path, password: &str) -> Self {
        let port_file = dir.join("port");
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/token-registry.py"
            ))
            .arg(std::env::var("GITFLEET_TEST_REGISTRY").unwrap())
            .args(["op", password])
            .arg(&port_file)
            .spawn()
            .expect("python3");
        let port = (0..100)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                std::fs::read_to_string(&port_file).ok()?.parse().ok()
            })
            .expect("the token registry writes its port");
        TokenRegistry(child, port)
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pin` with `DOCKER_CONFIG` holding what `docker login 127.0.0.1:<port>` would store.
fn pin_logged_in(dir: &Path, port: u16, password: &str) -> Output {
    use base64::Engine as _;
    let config = dir.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("op:{password}"));
    let json = format!(r#"{{"auths": {{"127.0.0.1:{port}": {{"auth": "{auth}"}}}}}}"#);
    std::fs::write(config.join("config.json"), json).unwrap();
    Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(["pin", "--update"])
        .arg(dir)
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap()
}

#[test]
fn token_auth_uses_the_credentials_docker_login_stored() {
    let images = test_images();
    let repo = push_tags(
        "auth",
        &[("1.0.0", &images.healthy), ("1.1.0", &images.healthy_v2)],
    );
    let path = repo.split_once('/').unwrap().1;
    let server_dir = TempDir::new("pin-token");
    let server = TokenRegistry::start(server_dir.path(), "s3cret");
    let image = format!("127.0.0.1:{}/{path}", server.1);
    let tail =
        format!("\n[images]\nweb = {{ image = \"{image}:1.0.0\", follow = \"semver:^1\" }}\n");
    let dir = small_fleet(&tail, "services:\n  web:\n    image: x\n");

    let refused = pin_logged_in(dir.path(), server.1, "wrong");
    let text = output_text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{text}");
    assert!(
        text.contains("refused the credentials") && text.contains("docker login"),
        "{text}"
    );
    assert!(
        read(dir.path()).contains(&format!("\"{image}:1.0.0\"")),
        "nothing written"
    );

    let out = pin_logged_in(dir.path(), server.1, "s3cret");
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        read(dir.path()).contains(&format!(
            "\"{image}:1.1.0@{}\"",
            digest_of(&images.healthy_v2)
        )),
        "the tag list and the manifest came through the token: {}",
        read(dir.path())
    );
}

#[test]
fn commit_outside_a_git_repository_changes_nothing() {
    let images = test_images();
    let repo = push_tags("nogit", &[("1.0.0", &images.healthy)]);
    let dir = small_fleet(
        &format!("\n[images]\nweb = \"{repo}:1.0.0\"\n"),
        "services:\n  web:\n    image: x\n",
    );
    let before = read(dir.path());
    let out = pin(dir.path(), &["--commit"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("is not in a Git repository") && text.contains("fleet.toml is unchanged"),
        "{text}"
    );
    assert_eq!(read(dir.path()), before);
}

/// The scheduled job in docs/pin.md is a workflow GitHub can read, running the commands
/// this page documents.
#[test]
fn the_documented_github_actions_job_parses_and_proposes_the_change() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pin.md")).unwrap();
    let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let workflow = &doc[start..start + doc[start..].find("```").unwrap()];
    let yaml: serde_yaml::Value = serde_yaml::from_str(workflow).expect("the workflow is YAML");
    assert!(
        yaml["on"]["schedule"][0]["cron"].as_str().is_some(),
        "{workflow}"
    );
    let steps = yaml["jobs"]["pin"]["steps"].as_sequence().unwrap();
    let runs: String = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    for command in [
        "gitfleet pin --check --update",
        "gitfleet pin --update --commit",
        "gh pr create",
    ] {
        assert!(runs.contains(command), "{command} missing from the job");
    }
}
