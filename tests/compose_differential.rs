//! gitfleet against docker-compose on the same engine: one stack brought up by
//! Debian's docker-compose 1.29.2 and by `gitfleet apply`, each under its own project,
//! and every container's `docker inspect` compared field by field. docker-compose is the oracle for what a Compose file means; a difference is
//! either a bug or listed in docs/fleet-toml.md ("Compose subset") with its reason.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::{TempDir, free_port, test_images};

/// The stack: the keys real deploy files use, on the busybox test image.
fn stack(image: &str, port: u16, data: &Path) -> String {
    format!(
        r#"services:
  db:
    image: {image}
    init: true
    user: "1000:1000"
    working_dir: /tmp
    entrypoint: ["sh", "-c"]
    command: ["exec sleep 3600"]
    environment:
      ROLE: db
      EMPTY: ""
    volumes:
      - dbdata:/var/lib/db
    shm_size: 128m
    ulimits:
      nofile: {{soft: 1024, hard: 2048}}
    healthcheck:
      test: ["CMD", "true"]
      interval: 5s
      timeout: 2s
      retries: 3
      start_period: 1s
  web:
    image: {image}
    init: true
    environment: [ROLE=web, "QUOTED=a b"]
    ports: ["127.0.0.1:{port}:8080"]
    expose: ["9000"]
    volumes:
      - {data}:/data:ro
      - type: tmpfs
        target: /scratch
    tmpfs: [/run/web]
    links: ["db:database"]
    depends_on: [db]
    restart: unless-stopped
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    read_only: true
    dns: [10.0.0.2]
    dns_search: [corp.example]
    dns_opt: ["ndots:1"]
    domainname: example.com
    extra_hosts: ["gateway:10.0.0.1"]
    group_add: ["1001"]
    oom_score_adj: 100
    sysctls: {{net.core.somaxconn: "1024"}}
    logging:
      driver: json-file
      options: {{max-size: 10m}}
    stop_signal: SIGINT
    stop_grace_period: 20s
    labels: {{tier: front}}
volumes:
  dbdata: {{}}
"#,
        data = data.display()
    )
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI")
}

/// Each container of `project` by service, as `docker inspect` prints it.
fn inspect_project(project: &str) -> BTreeMap<String, Value> {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]);
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!ids.is_empty(), "no containers in {project}");
    let mut args = vec!["inspect"];
    args.extend(ids.iter().map(String::as_str));
    let out = docker(&args);
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .map(|c| {
            let service = c["Config"]["Labels"]["com.docker.compose.service"]
                .as_str()
                .unwrap()
                .to_string();
            (service, c)
        })
        .collect()
}

/// The fields compared, each normalised so the two projects' own names read `P` and
/// container names read `P-<service>-1` (docker-compose 1.29 writes `P_<service>_1`).
fn fields(container: &Value, project: &str) -> BTreeMap<String, Value> {
    let config = &container["Config"];
    let host = &container["HostConfig"];
    let mut out = BTreeMap::new();
    for key in [
        "Cmd",
        "Entrypoint",
        "User",
        "WorkingDir",
        "ExposedPorts",
        "Domainname",
        "StopSignal",
        "StopTimeout",
        "Healthcheck",
        "Image",
    ] {
        out.insert(key.to_string(), config[key].clone());
    }
    let mut env: Vec<Value> = config["Env"].as_array().cloned().unwrap_or_default();
    env.sort_by_key(|v| v.to_string());
    out.insert("Env".into(), Value::Array(env));
    for key in [
        "PortBindings",
        "Tmpfs",
        "RestartPolicy",
        "Init",
        "CapAdd",
        "CapDrop",
        "Privileged",
        "Sysctls",
        "Ulimits",
        "Devices",
        "ShmSize",
        "Dns",
        "DnsSearch",
        "DnsOptions",
        "ExtraHosts",
        "LogConfig",
        "NanoCpus",
        "Memory",
        "GroupAdd",
        "OomScoreAdj",
        "ReadonlyRootfs",
    ] {
        out.insert(format!("HostConfig.{key}"), host[key].clone());
    }
    let mut mounts: Vec<String> = container["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "{} {} -> {} rw={}",
                m["Type"],
                m["Name"]
                    .as_str()
                    .unwrap_or(m["Source"].as_str().unwrap_or("")),
                m["Destination"],
                m["RW"]
            )
        })
        .collect();
    mounts.sort();
    out.insert("Mounts".into(), mounts.into());
    let labels: BTreeMap<String, Value> = config["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with("com.docker.compose.") && !k.starts_with("dev.gitfleet."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert("Labels".into(), serde_json::to_value(labels).unwrap());
    for (network, endpoint) in container["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let mut aliases: Vec<String> = endpoint["Aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            // Docker adds the container's short id; it differs by nature.
            .filter(|a| {
                !container["Id"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(a.as_str())
            })
            .collect();
        aliases.sort();
        let mut links: Vec<String> = endpoint["Links"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        links.sort();
        out.insert(
            format!("Network {network} aliases"),
            serde_json::to_value(aliases).unwrap(),
        );
        out.insert(
            format!("Network {network} links"),
            serde_json::to_value(links).unwrap(),
        );
    }
    // An empty map or list and an absent one mean the same to the engine.
    for value in out.values_mut() {
        let empty = match value {
            Value::Object(map) => map.is_empty(),
            Value::Array(list) => list.is_empty(),
            _ => false,
        };
        if empty {
            *value = Value::Null;
        }
    }
    let text = serde_json::to_string(&out).unwrap();
    let normalised = text
        .replace(&format!("{project}_db_1"), "P-db-1")
        .replace(&format!("{project}_web_1"), "P-web-1")
        .replace(project, "P");
    serde_json::from_str(&normalised).unwrap()
}

/// Differences docker-compose 1.29 and gitfleet make on purpose (docs/fleet-toml.md):
/// docker-compose also links each container under its own full and short names
/// (`P-db-1:P-db-1`, `P-db-1:db_1`), names a user-defined network reaches anyway.
fn deliberate(key: &str, compose: &Value, gitfleet: &Value) -> bool {
    key.ends_with(" links")
        && gitfleet
            .as_array()
            .is_some_and(|g| g.contains(&Value::from("P-db-1:database")))
        && gitfleet.as_array().is_some_and(|g| {
            g.iter()
                .all(|l| compose.as_array().is_some_and(|c| c.contains(l)))
        })
}

#[test]
fn gitfleet_creates_what_docker_compose_creates() {
    let images = test_images();
    let root = TempDir::new("differential");
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let compose_project = format!("dc{}", std::process::id());
    let gitfleet_project = format!("gf{}", std::process::id());

    // docker-compose's copy: the same file, images as written. The two run one after
    // the other, on the same host port.
    let dc_dir = root.path().join("dc");
    std::fs::create_dir_all(&dc_dir).unwrap();
    // One host port for both: docker-compose only creates its containers.
    let port = free_port();
    let yaml = stack(&images.healthy, port, &data);
    std::fs::write(dc_dir.join("compose.yaml"), &yaml).unwrap();
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .args(["-p", &compose_project, "-f"])
            .arg(dc_dir.join("compose.yaml"))
            .args(args)
            .output()
            .expect("Debian's docker-compose is installed by scripts/testenv")
    };
    // Started, as gitfleet's are: docker-compose joins links to the network at start.
    let up = compose(&["up", "-d"]);
    let dc = up
        .status
        .success()
        .then(|| inspect_project(&compose_project));
    let _ = compose(&["down", "-v"]);
    let dc = dc.unwrap_or_else(|| panic!("docker-compose up: {}", common::output_text(&up)));
    let web = fields(&dc["web"], &compose_project);
    for key in [
        "HostConfig.Dns",
        "HostConfig.DnsSearch",
        "HostConfig.GroupAdd",
        "HostConfig.Tmpfs",
        "Domainname",
        "Network P_default links",
    ] {
        assert!(
            !web[key].is_null(),
            "docker-compose set no {key}: the test compares nothing"
        );
    }

    // gitfleet's: a fleet repository with both services pinned.
    let repo = root.path().join("repo");
    std::fs::create_dir_all(repo.join("stack")).unwrap();
    std::fs::write(
        repo.join("fleet.toml"),
        format!(
            "version = 1\n[fleet]\nname = \"{gitfleet_project}\"\ncompose = \"stack/compose.yaml\"\n\
             [images]\ndb = \"{h}\"\nweb = \"{h}\"\n[rollout]\nmonitor = \"0s\"\nhealth_timeout = \"60s\"\n",
            h = images.healthy
        ),
    )
    .unwrap();
    std::fs::write(repo.join("stack/compose.yaml"), &yaml).unwrap();
    let apply = Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .arg("apply")
        .arg(&repo)
        .args(["--node", "n1", "--state-dir"])
        .arg(root.path().join("state"))
        .output()
        .unwrap();
    let applied = common::output_text(&apply);

    let compared = apply.status.success().then(|| {
        let gf = inspect_project(&gitfleet_project);
        let mut differences = Vec::new();
        for (service, dc_container) in &dc {
            let want = fields(dc_container, &compose_project);
            let got = fields(&gf[service], &gitfleet_project);
            for (key, value) in &want {
                let mine = got.get(key).unwrap_or(&Value::Null);
                if mine != value && !deliberate(key, value, mine) {
                    differences.push(format!(
                        "{service} {key}:\n    docker-compose {value}\n    gitfleet       {mine}"
                    ));
                }
            }
        }
        differences
    });

    for o in inspect_project_ids(&gitfleet_project) {
        let _ = docker(&["rm", "-f", &o]);
    }
    let _ = docker(&["network", "rm", &format!("{gitfleet_project}_default")]);
    let _ = docker(&["volume", "rm", &format!("{gitfleet_project}_dbdata")]);

    let differences = compared.unwrap_or_else(|| panic!("gitfleet apply failed: {applied}"));
    assert!(
        differences.is_empty(),
        "{} difference(s):\n{}",
        differences.len(),
        differences.join("\n")
    );
}

fn inspect_project_ids(project: &str) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]);
    String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
