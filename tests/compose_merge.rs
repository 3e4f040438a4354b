//! Several compose files and `extends`, merged by gitfleet and by Debian's
//! docker-compose 1.29.2 (`docker-compose -f a -f b config`, no daemon needed), and
//! the two models compared service by service on the keys the merge rules treat
//! differently: replaced (`command`, `entrypoint`), merged by key (`environment`,
//! `labels`), unique by target (`volumes`) or by port, appended (`dns`), scalars.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use common::TempDir;
use gitfleet::config::{DirFiles, Interpolation, load_repo};

const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Writes `files` (path under `stack/` → text) and a fleet.toml merging `compose`.
fn repo(label: &str, compose: &[&str], files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new(label);
    for (path, text) in files {
        let full = dir.path().join("stack").join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
    let list: Vec<String> = compose.iter().map(|c| format!("\"stack/{c}\"")).collect();
    let mut toml = format!(
        "version = 1\n[fleet]\nname = \"merge\"\ncompose = [{}]\n[images]\n",
        list.join(", ")
    );
    let yaml = files.iter().map(|(_, t)| *t).collect::<Vec<_>>().join("\n");
    for service in ["web", "worker", "db", "api", "base"] {
        if yaml.contains(&format!("  {service}:")) {
            toml.push_str(&format!(
                "{service} = \"registry.example.com/acme/{service}@sha256:{D}\"\n"
            ));
        }
    }
    std::fs::write(dir.path().join("fleet.toml"), toml).unwrap();
    dir
}

/// docker-compose's merged model, as JSON.
fn oracle(dir: &Path, compose: &[&str]) -> Value {
    let mut cmd = Command::new("docker-compose");
    for c in compose {
        cmd.arg("-f").arg(dir.join("stack").join(c));
    }
    let out = cmd
        .arg("config")
        .current_dir(dir)
        .output()
        .expect("docker-compose 1.29.2 is the oracle: apt-get install -y docker-compose");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    serde_json::to_value(yaml).unwrap()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `KEY=value` lists and mappings alike, as a mapping.
fn by_key(v: Option<&Value>) -> BTreeMap<String, String> {
    match v {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                let t = text(i);
                let (k, v) = t.split_once('=').unwrap_or((&t, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().map(text).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `published:target` of each port, short or long syntax.
fn ports(v: Option<&Value>) -> BTreeSet<String> {
    let Some(Value::Array(items)) = v else {
        return BTreeSet::new();
    };
    items
        .iter()
        .map(|p| match p {
            Value::Object(m) => format!(
                "{}:{}",
                m.get("published").map(text).unwrap_or_default(),
                m.get("target").map(text).unwrap_or_default()
            ),
            other => text(other),
        })
        .collect()
}

/// `source:target` of each mount, relative sources made absolute against `stack/`.
fn volumes(v: Option<&Value>, stack: &Path) -> BTreeSet<String> {
    let Some(Value::Array(items)) = v else {
        return BTreeSet::new();
    };
    items
        .iter()
        .map(|m| {
            let t = text(m);
            let mut parts = t.splitn(3, ':');
            let (source, target) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            let source = match source.strip_prefix("./") {
                Some(rel) => stack.join(rel).display().to_string(),
                None => source.to_string(),
            };
            format!("{source}:{target}")
        })
        .collect()
}

/// A service as both tools mean it, on the compared keys.
fn normal(service: &Value, env_files: BTreeMap<String, String>, stack: &Path) -> Value {
    let mut env = env_files;
    env.extend(by_key(service.get("environment")));
    let mut caps: Vec<String> = list(service.get("cap_add"));
    caps.sort();
    json!({
        "image": service.get("image"),
        "command": list(service.get("command")),
        "entrypoint": list(service.get("entrypoint")),
        "environment": env,
        "labels": by_key(service.get("labels")),
        "ports": ports(service.get("ports")),
        "volumes": volumes(service.get("volumes"), stack),
        "dns": list(service.get("dns")),
        "cap_add": caps,
        "restart": service.get("restart"),
        "user": service.get("user"),
    })
}

fn compare(label: &str, compose: &[&str], files: &[(&str, &str)]) {
    let dir = repo(label, compose, files);
    let stack = dir.path().join("stack");
    let vars = Interpolation::default();
    let repo = load_repo(&DirFiles(dir.path().to_path_buf()), &vars)
        .unwrap_or_else(|d| panic!("{label}: gitfleet refused it:\n{d}"));
    let ours = serde_json::to_value(&repo.compose.compose.services).unwrap();
    let theirs = oracle(dir.path(), compose);
    let names = repo.compose.service_names();
    let oracle_names: Vec<&str> = theirs["services"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, oracle_names, "{label}: services");
    for name in names {
        // What load_repo read from the service's `env_file`s.
        let env_files: BTreeMap<String, String> = repo.compose.values[name]
            .env_files
            .iter()
            .cloned()
            .collect();
        // gitfleet keeps `dns` beside the typed service.
        let mut service = ours[name].clone();
        if let Some(extras) = repo.compose.extras.get(name) {
            service["dns"] = json!(extras.dns);
        }
        assert_eq!(
            normal(&service, env_files, &stack),
            normal(&theirs["services"][name], BTreeMap::new(), &stack),
            "{label}: service `{name}` differs from docker-compose's"
        );
    }
}

#[test]
fn an_override_file_merges_as_docker_compose_merges_it() {
    compare(
        "override",
        &["compose.yaml", "compose.prod.yaml"],
        &[
            (
                "compose.yaml",
                "services:\n  web:\n    image: web\n    command: [serve]\n    entrypoint: [/init]\n    ports: [\"8080:80\", \"9000:9000\"]\n    environment: {A: \"1\", B: \"2\"}\n    labels: [tier=web, team=a]\n    volumes: [\"./data:/data\", \"./logs:/logs\"]\n    dns: [10.0.0.1]\n    cap_add: [NET_ADMIN]\n    restart: always\n  db:\n    image: db\n",
            ),
            (
                "compose.prod.yaml",
                "services:\n  web:\n    command: [serve, --prod]\n    ports: [\"8443:443\", \"9000:9000\"]\n    environment: [B=3, C=4]\n    labels: {team: b}\n    volumes: [\"./prod:/data\"]\n    dns: 1.1.1.1\n    cap_add: [SYS_TIME, NET_ADMIN]\n    user: \"1000\"\n  db:\n    restart: unless-stopped\n  api:\n    image: api\n",
            ),
        ],
    );
}

#[test]
fn extends_in_the_same_file_and_in_another_merges_as_docker_compose() {
    compare(
        "extends",
        &["compose.yaml"],
        &[
            (
                "compose.yaml",
                "services:\n  web:\n    extends: {file: common/base.yml, service: app}\n    image: web\n    command: [serve]\n    environment: {B: \"2\"}\n    volumes: [\"./data:/data\"]\n    ports: [\"8080:80\"]\n  worker:\n    extends: web\n    command: [work]\n    environment: [C=3]\n",
            ),
            (
                "common/base.yml",
                "services:\n  app:\n    extends: root\n    image: base\n    env_file: ./app.env\n    labels: {tier: web}\n    environment: {A: \"1\", B: \"1\"}\n    volumes: [\"./shared:/shared\", \"./x:/data\"]\n  root:\n    image: root\n    restart: always\n    user: \"7\"\n    dns: [10.0.0.1]\n",
            ),
            ("common/app.env", "FROM_FILE=yes\n"),
        ],
    );
}

#[test]
fn overrides_of_services_that_extend_merge_as_docker_compose() {
    compare(
        "extends-override",
        &["compose.yaml", "compose.override.yaml"],
        &[
            (
                "compose.yaml",
                "services:\n  base:\n    image: base\n    environment: [A=1]\n    labels: [a=1]\n  web:\n    extends: base\n    ports: [\"80:80\"]\n",
            ),
            (
                "compose.override.yaml",
                "services:\n  web:\n    environment: {A: \"2\", B: \"2\"}\n    ports: [\"81:81\"]\n    entrypoint: [sh, -c]\n  base:\n    user: root\n",
            ),
        ],
    );
}
