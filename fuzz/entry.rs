//! One entry point per parser of untrusted input, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/`) and the corpus replay on stable (`tests/fuzz_corpus.rs`). Each
//! takes raw bytes and must return, never panic, whatever they hold.

// Each fuzz binary uses one entry point; the replay test uses them all.
#![allow(dead_code)]

use std::collections::BTreeMap;

use gitfleet::config::{Interpolation, RepoFiles, load_repo};

/// A parser's entry point: raw bytes in, nothing out but "it returned".
pub type Target = fn(&[u8]);

/// The targets, by name (the corpus directory names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("fleet_toml", fleet_toml),
    ("policy", policy),
    ("compose", compose),
    ("status_record", status_record),
    ("allowed_signers", allowed_signers),
    ("known_hosts", known_hosts),
    ("webhook", webhook),
    ("pin", pin),
];

/// A fleet repository in memory (also used by tests/never_panics.rs).
pub struct MemFiles(pub BTreeMap<String, String>);

impl RepoFiles for MemFiles {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        Ok(self.0.get(path).cloned())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        Ok(self
            .0
            .keys()
            .filter(|k| k.starts_with(dir))
            .cloned()
            .collect())
    }
}

const FLEET: &str = "version = 1\n[fleet]\nname = \"shop\"\ncompose = \"stack/compose.yaml\"\npolicy = \"policies/p.toml\"\n[rollout]\nbatches = [\"canary\"]\nmonitor = \"60s\"\n[batches.canary]\nnodes = [\"eu-1\"]\n";
const COMPOSE: &str = "services:\n  web:\n    image: r.example/web@sha256:0000000000000000000000000000000000000000000000000000000000000000\n    env_file: web.env\n";
const POLICY: &str = "[admission]\nallowed_registries = [\"r.example/\"]\n";

fn repo(fleet: &str, compose: &str, policy: &str) {
    let files = MemFiles(
        [
            ("fleet.toml", fleet),
            ("stack/compose.yaml", compose),
            ("stack/web.env", "A=1\n"),
            ("policies/p.toml", policy),
            ("policies/allowed_signers", ""),
        ]
        .into_iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect(),
    );
    if let Err(diags) = load_repo(&files, &Interpolation::default()) {
        // Rendering is part of the path a hostile file takes (status messages, check).
        let _ = diags.to_string();
        let _ = serde_json::to_string(&diags);
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

pub fn fleet_toml(data: &[u8]) {
    repo(&text(data), COMPOSE, POLICY);
}

pub fn policy(data: &[u8]) {
    repo(FLEET, COMPOSE, &text(data));
}

pub fn compose(data: &[u8]) {
    repo(FLEET, &text(data), POLICY);
}

pub fn status_record(data: &[u8]) {
    if let Ok(record) = gitfleet::core::status::StatusRecord::from_toml(&text(data)) {
        let _ = record.to_toml();
    }
}

/// The file parsed, then its text offered as a signature over itself.
pub fn allowed_signers(data: &[u8]) {
    let text = text(data);
    if let Ok(signers) = gitfleet::trust::AllowedSigners::parse(&text, "allowed_signers") {
        let _ = signers.verify(Some(&text), data);
    }
}

pub fn known_hosts(data: &[u8]) {
    let hosts = gitfleet::git::known_hosts::KnownHosts::parse(&text(data));
    let _ = hosts.check("127.0.0.1", 22, b"key");
    let _ = hosts.check("git.example.com", 2222, data);
}

/// First line: the `X-Hub-Signature-256` header; the rest: the body.
pub fn webhook(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let header = text(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let _ = gitfleet::listener::signature_valid(b"secret", body, &header);
}

/// fleet.toml as `gitfleet pin` reads and rewrites it: every entry's reference and policy
/// parsed, and each image rewritten.
pub fn pin(data: &[u8]) {
    use gitfleet::pin::{plan, policy::FollowPolicy, reference::ImageRef};
    let text = text(data);
    let _ = ImageRef::parse(&text);
    let tags: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if let Ok(policy) = FollowPolicy::parse(&text) {
        let _ = policy.newest(&tags);
    }
    let Ok(inputs) = plan::read_inputs("fleet.toml", &text) else {
        return;
    };
    let mut changes = Vec::new();
    for entry in &inputs.entries {
        let _ = entry.follow.as_deref().map(FollowPolicy::parse);
        if let Ok(image) = ImageRef::parse(&entry.image) {
            changes.push(plan::Change {
                service: entry.service.clone(),
                old: Some(entry.image.clone()),
                new: image.pinned(image.tag.as_deref(), "sha256:0"),
                old_tag: image.tag.clone(),
                new_tag: image.tag.clone(),
                digest: "sha256:0".to_string(),
                multi_arch: false,
            });
        }
    }
    if let Ok(new) = plan::rewrite(&text, &changes) {
        let _ = plan::diff("fleet.toml", &text, &new);
        let _ = plan::commit_message(&changes);
    }
}
