//! `gitfleet check` as operators and CI run it: the example passes, and each broken
//! variant exits 1 with a message naming the key and the line.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{TempDir, copy_tree, example_repo};

fn check(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .arg("check")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run gitfleet")
}

#[test]
fn the_example_fleet_repo_is_valid() {
    let out = check(&example_repo(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: fleet `shop` is valid"));
}

/// One broken variant: replace `from` by `to` in `file`, then expect each of `expect`
/// in the output, and a location `file:line:` at the last line of the changed file that
/// contains the first line of `to` (or `at`, when set).
struct Variant {
    name: &'static str,
    file: &'static str,
    from: &'static str,
    to: &'static str,
    expect: &'static [&'static str],
    at: Option<&'static str>,
}

const API_PIN: &str = "api = \"registry.example.com/acme/api:1.4.2@sha256:e9041ef829ded36a52d5ef57ac67a8c78983cb14e5e23ee0ba21f149b23c548a\"";

const VARIANTS: &[Variant] = &[
    Variant {
        name: "host network against the policy",
        file: "stack/compose.yaml",
        from: "    stop_signal: SIGINT",
        to: "    network_mode: host\n    stop_signal: SIGINT",
        expect: &[
            "`services.db.network_mode`",
            "uses the host's network, which the policy policies/production.toml does not allow",
            "allow_host_network = true",
        ],
        at: None,
    },
    Variant {
        name: "host powers against the policy",
        file: "stack/compose.yaml",
        from: "    stop_signal: SIGINT",
        to: "    privileged: true\n    pid: host\n    ipc: host\n    cap_add: [NET_ADMIN, cap_sys_admin, ALL]\n    stop_signal: SIGINT",
        expect: &[
            "`services.db.privileged`",
            "is privileged (every device and capability of the host), which the policy policies/production.toml does not allow",
            "`allow_privileged = true`",
            "`services.db.pid`",
            "`allow_host_pid = true`",
            "`services.db.ipc`",
            "`allow_host_ipc = true`",
            "`services.db.cap_add`",
            "adds capabilities that reach the host (SYS_ADMIN, ALL)",
            "`allow_host_capabilities = true`",
        ],
        at: None,
    },
    Variant {
        name: "a pid mode the engine does not know",
        file: "stack/compose.yaml",
        from: "    stop_signal: SIGINT",
        to: "    pid: hots\n    stop_signal: SIGINT",
        expect: &["`services.db.pid` must be host, `service:<name>` or `container:<name>`"],
        at: None,
    },
    Variant {
        name: "a MAC address that is not one",
        file: "stack/compose.yaml",
        from: "    stop_signal: SIGINT",
        to: "    mac_address: 02:42:ac:11:00\n    stop_signal: SIGINT",
        expect: &["`services.db.mac_address` must be a MAC address"],
        at: None,
    },
    Variant {
        name: "bind mount outside the allowed host paths",
        file: "stack/compose.yaml",
        from: "      - db-data:/var/lib/postgresql/data",
        to: "      - /var/lib/postgresql:/var/lib/postgresql/data",
        expect: &[
            "`services.db.volumes.0`",
            "mounts the host path `/var/lib/postgresql`, outside what the policy policies/production.toml allows (/etc/shop/)",
        ],
        at: None,
    },
    Variant {
        name: "a config file outside the compose directory",
        file: "stack/compose.yaml",
        from: "    file: ./api.toml",
        to: "    file: ../fleet.toml",
        expect: &[
            "`configs.api_config.file`: `../fleet.toml` must not leave the compose file's directory `stack/`",
        ],
        at: None,
    },
    Variant {
        name: "a config file missing from the repository",
        file: "stack/compose.yaml",
        from: "    file: ./api.toml",
        to: "    file: ./api-typo.toml",
        expect: &["does not exist in the fleet repository (`stack/api-typo.toml`)"],
        at: None,
    },
    Variant {
        name: "a host file as a secret, outside the allowed host paths",
        file: "stack/compose.yaml",
        from: "    file: ./api.toml",
        to: "    file: /etc/shadow",
        expect: &["`configs.api_config.file` mounts the host path `/etc/shadow`"],
        at: None,
    },
    Variant {
        name: "a relative bind mount climbing out of the stack",
        file: "stack/compose.yaml",
        from: "      - db-data:/var/lib/postgresql/data",
        to: "      - ../../../../etc:/var/lib/postgresql/data",
        expect: &["`services.db.volumes.0`: `../../../../etc` must not leave"],
        at: None,
    },
    Variant {
        name: "a node key that is not an SSH public key",
        file: "fleet.toml",
        from: "timezone = \"Europe/Amsterdam\"",
        to: "timezone = \"Europe/Amsterdam\"\nkey = \"ssh-ed25519 not-base64!\"",
        expect: &["`key` is not an SSH public key", "`nodes.eu-ams-1.key`"],
        at: Some("key = "),
    },
    Variant {
        name: "unpinned image",
        file: "fleet.toml",
        from: API_PIN,
        to: "api = \"registry.example.com/acme/api:1.4.2\"",
        expect: &[
            "`images.api`",
            "is not pinned by digest",
            "help: pin the image",
        ],
        at: None,
    },
    Variant {
        name: "a follow policy that does not parse",
        file: "fleet.toml",
        from: API_PIN,
        to: "api = { image = \"registry.example.com/acme/api:1.4.2@sha256:e9041ef829ded36a52d5ef57ac67a8c78983cb14e5e23ee0ba21f149b23c548a\", follow = \"semver:~1.x.y\" }",
        expect: &[
            "`images.api.follow`",
            "semver requirement",
            "help: use follow = \"semver:",
        ],
        at: None,
    },
    Variant {
        name: "an image table with a misspelt key",
        file: "fleet.toml",
        from: API_PIN,
        to: "api = { image = \"registry.example.com/acme/api:1.4.2@sha256:e9041ef829ded36a52d5ef57ac67a8c78983cb14e5e23ee0ba21f149b23c548a\", folow = \"semver:^1\" }",
        expect: &["unknown key `images.api.folow`", "did you mean `follow`?"],
        at: None,
    },
    Variant {
        name: "short digest",
        file: "fleet.toml",
        from: "e9041ef829ded36a52d5ef57ac67a8c78983cb14e5e23ee0ba21f149b23c548a",
        to: "e9041ef829",
        expect: &["`images.api`", "not 64 lowercase hex"],
        at: None,
    },
    Variant {
        name: "unknown service",
        file: "fleet.toml",
        from: "[rollout]",
        to: "apii = \"registry.example.com/acme/api@sha256:e9041ef829ded36a52d5ef57ac67a8c78983cb14e5e23ee0ba21f149b23c548a\"\n\n[rollout]",
        expect: &["`images.apii`", "not a service", "did you mean `api`?"],
        at: None,
    },
    Variant {
        name: "bad cron",
        file: "fleet.toml",
        from: "schedule = \"0 2 * * *\"",
        to: "schedule = \"0 25 * * *\"",
        expect: &["`windows.nightly.schedule`", "not a valid cron schedule"],
        at: None,
    },
    Variant {
        name: "unknown timezone",
        file: "fleet.toml",
        from: "timezone = \"Asia/Kathmandu\"",
        to: "timezone = \"Asia/Katmandoo\"",
        expect: &["`nodes.ap-ktm-1.timezone`", "unknown timezone", "IANA"],
        at: None,
    },
    Variant {
        name: "ratio out of range",
        file: "fleet.toml",
        from: "max_failure_ratio = 0.1 ",
        to: "max_failure_ratio = 1.5 ",
        expect: &["`rollout.max_failure_ratio`", "out of range", "0.0"],
        at: None,
    },
    Variant {
        name: "unknown enum value",
        file: "fleet.toml",
        from: "failure_action = \"rollback\"",
        to: "failure_action = \"rollbak\"",
        expect: &["`rollout.failure_action`", "did you mean \"rollback\"?"],
        at: None,
    },
    Variant {
        name: "bad duration",
        file: "fleet.toml",
        from: "monitor = \"2m\"",
        to: "monitor = \"2 minutes\"",
        expect: &["`rollout.monitor`", "\"90s\""],
        at: None,
    },
    Variant {
        name: "batch without definition",
        file: "fleet.toml",
        from: "batches = [\"canary\", \"eu\", \"americas\", \"apac\"]",
        to: "batches = [\"canary\", \"eu\", \"americas\", \"apac\", \"mars\"]",
        expect: &["`rollout.batches`", "no [batches.mars] section"],
        at: None,
    },
    Variant {
        name: "unknown window",
        file: "fleet.toml",
        from: "window = \"weekend\"",
        to: "window = \"weekned\"",
        expect: &[
            "`batches.apac.window`",
            "not defined",
            "did you mean `weekend`?",
        ],
        at: None,
    },
    Variant {
        name: "unknown key",
        file: "fleet.toml",
        from: "health_timeout = \"5m\"",
        to: "helth_timeout = \"5m\"",
        expect: &["`rollout.helth_timeout`", "did you mean `health_timeout`?"],
        at: None,
    },
    Variant {
        name: "wrong version",
        file: "fleet.toml",
        from: "version = 1",
        to: "version = 2",
        expect: &["`version`", "unsupported fleet.toml version 2"],
        at: None,
    },
    Variant {
        name: "missing compose file",
        file: "fleet.toml",
        from: "compose = \"stack/compose.yaml\"",
        to: "compose = \"stack/compose.yml\"",
        expect: &["`fleet.compose`", "stack/compose.yml` does not exist"],
        at: None,
    },
    Variant {
        name: "TOML syntax error",
        file: "fleet.toml",
        from: "[rollout]",
        to: "[rollout",
        expect: &["TOML syntax"],
        at: None,
    },
    Variant {
        name: "YAML syntax error",
        file: "stack/compose.yaml",
        from: "      - \"8080:8080\"",
        to: "      - \"8080:8080\n",
        expect: &["YAML"],
        at: None,
    },
    Variant {
        name: "empty batch",
        file: "fleet.toml",
        from: "nodes = [\"eu-*\"]",
        to: "nodes = []",
        expect: &["`batches.eu.nodes`", "has no nodes"],
        at: None,
    },
    // Values only the engine used to parse, once every node had merged the release.
    Variant {
        name: "a stop grace period no engine takes",
        file: "stack/compose.yaml",
        from: "    stop_grace_period: 30s",
        to: "    stop_grace_period: forever",
        expect: &[
            "`services.api.stop_grace_period`",
            "`forever` is not a duration",
        ],
        at: None,
    },
    Variant {
        name: "a port no engine takes",
        file: "stack/compose.yaml",
        from: "      - \"8080:8080\"",
        to: "      - \"80x80:80\"",
        expect: &["`services.web.ports.0`", "`80x80:80` is not"],
        at: None,
    },
    Variant {
        name: "a memory limit no engine takes",
        file: "stack/compose.yaml",
        from: "          memory: 512M",
        to: "          memory: lots",
        expect: &[
            "`services.api.deploy.resources.limits.memory`",
            "`lots` has an unknown size unit",
        ],
        at: None,
    },
    Variant {
        name: "a healthcheck interval no engine takes",
        file: "stack/compose.yaml",
        from: "      interval: 5s",
        to: "      interval: soon",
        expect: &[
            "`services.db.healthcheck.interval`",
            "`soon` is not a duration",
        ],
        at: None,
    },
    Variant {
        name: "a volume that is not declared",
        file: "stack/compose.yaml",
        from: "      - db-data:/var/lib/postgresql/data",
        to: "      - dbdata:/var/lib/postgresql/data",
        expect: &[
            "`services.db.volumes.0`",
            "volume `dbdata` is not declared under top-level `volumes`",
        ],
        at: None,
    },
    Variant {
        name: "unsupported compose key",
        file: "stack/compose.yaml",
        from: "    image: registry.example.com/acme/api\n",
        to: "    image: registry.example.com/acme/api\n    scale: 2\n",
        expect: &["`services.api.scale`", "gitfleet honours"],
        at: Some("scale: 2"),
    },
    Variant {
        name: "policy: canary too big",
        file: "fleet.toml",
        from: "nodes = [\"eu-fra-1\", \"us-nyc-1\"]",
        to: "nodes = [\"eu-fra-1\", \"us-nyc-1\", \"br-sao-1\"]",
        expect: &["`batches.canary.nodes`", "at most 2"],
        at: None,
    },
    Variant {
        name: "policy: monitor too short",
        file: "fleet.toml",
        from: "monitor = \"2m\"",
        to: "monitor = \"10s\"",
        expect: &[
            "`rollout.monitor`",
            "shorter than the policy",
            "\"1m\" or longer",
        ],
        at: None,
    },
    Variant {
        name: "policy: registry not allowed",
        file: "fleet.toml",
        from: "db = \"registry.example.com/acme/db",
        to: "db = \"docker.io/library/postgres",
        expect: &[
            "`images.db`",
            "registry the policy",
            "registry.example.com/acme/",
        ],
        at: None,
    },
    Variant {
        name: "policy: batch without a window",
        file: "fleet.toml",
        from: "window = \"weekend\"",
        to: "window = \"always\"",
        expect: &["`batches.apac.window`", "requires a maintenance window"],
        at: None,
    },
];

#[test]
fn every_broken_variant_exits_1_naming_key_and_line() {
    let mut failures = Vec::new();
    for v in VARIANTS {
        let dir = TempDir::new("check");
        copy_tree(&example_repo(), dir.path());
        let path = dir.path().join(v.file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains(v.from),
            "{}: `{}` not found in {}",
            v.name,
            v.from,
            v.file
        );
        let changed = text.replacen(v.from, v.to, 1);
        std::fs::write(&path, &changed).expect("write");
        let marker = v.at.unwrap_or_else(|| v.to.lines().next().unwrap_or(v.to));
        let lines: Vec<&str> = changed.lines().collect();
        let line = lines
            .iter()
            .rposition(|l| l.contains(marker))
            .expect("marker in file")
            + 1;
        let location = format!("{}:{line}:", v.file);
        let out = check(dir.path(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut missing: Vec<&str> = v
            .expect
            .iter()
            .copied()
            .filter(|e| !stderr.contains(*e))
            .collect();
        if !stderr.contains(&location) {
            missing.push(&location);
        }
        if out.status.code() != Some(1) || !missing.is_empty() {
            failures.push(format!(
                "{}: exit {:?}, missing {missing:?}\n{stderr}",
                v.name,
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn an_image_with_a_follow_policy_is_valid() {
    let dir = TempDir::new("check-follow");
    copy_tree(&example_repo(), dir.path());
    let path = dir.path().join("fleet.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (_, reference) = API_PIN.split_once(" = ").unwrap();
    let table = format!("api = {{ image = {reference}, follow = \"semver:~1.4\" }}");
    std::fs::write(&path, text.replacen(API_PIN, &table, 1)).unwrap();
    let out = check(dir.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn all_problems_are_reported_at_once_and_json_is_machine_readable() {
    let dir = TempDir::new("check-json");
    copy_tree(&example_repo(), dir.path());
    let path = dir.path().join("fleet.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("monitor = \"2m\"", "monitr = \"2m\"")
        .replace("max_failure_ratio = 0.1 ", "max_failure_ratio = 7 ")
        .replace(
            "timezone = \"Asia/Kathmandu\"",
            "timezone = \"Mars/Olympus\"",
        );
    std::fs::write(&path, text).unwrap();
    let out = check(dir.path(), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["valid"], false);
    let keys: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    for key in [
        "rollout.monitr",
        "rollout.max_failure_ratio",
        "nodes.ap-ktm-1.timezone",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert!(
        report["errors"][0]["location"]["start"]["line"]
            .as_u64()
            .is_some()
    );

    let ok = check(&example_repo(), &["--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["fleet"]["batches"][0]["name"], "canary");
    assert_eq!(report["fleet"]["images"].as_str().map(str::len), Some(64));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        check(Path::new("/nonexistent/fleet"), &[]).status.code(),
        Some(2)
    );
    assert_eq!(
        check(&example_repo(), &["--format", "yaml"]).status.code(),
        Some(2)
    );
}

#[test]
fn a_symbolic_link_out_of_the_repository_is_refused() {
    let dir = TempDir::new("check-symlink");
    copy_tree(&example_repo(), dir.path());
    let config = dir.path().join("stack/api.toml");
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &config).unwrap();
    let out = check(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("symbolic links are not followed"),
        "{stderr}"
    );
}

/// `extends` and `include` gone wrong: each refused with the file and line that names
/// the problem, and the fix. (`files`: extra files under `stack/`; `at`: the expected
/// `file:line:`.)
#[test]
fn extends_and_include_problems_name_the_file_and_line() {
    struct Case {
        name: &'static str,
        to: &'static str,
        files: &'static [(&'static str, &'static str)],
        expect: &'static [&'static str],
        at: &'static str,
    }
    let cases = [
        Case {
            name: "missing extends file",
            to: "services:\n  web:\n    extends: {file: common.yml, service: base}",
            files: &[],
            expect: &[
                "`services.web.extends.file`",
                "`stack/common.yml` does not exist",
                "add stack/common.yml",
            ],
            at: "stack/compose.yaml:14:",
        },
        Case {
            name: "extends cycle",
            to: "services:\n  web:\n    extends: {file: a.yml, service: a}",
            files: &[(
                "a.yml",
                "services:\n  a:\n    extends: b\n  b:\n    extends: {file: compose.yaml, service: web}\n",
            )],
            expect: &[
                "`extends` goes round in a cycle: web (stack/compose.yaml) → a (stack/a.yml) → b (stack/a.yml) → web (stack/compose.yaml)",
            ],
            at: "stack/compose.yaml:",
        },
        Case {
            name: "include outside the repository",
            to: "include: [../../etc/compose.yaml]\nservices:",
            files: &[],
            expect: &[
                "`include.0`: `../../etc/compose.yaml` must not leave the compose file's directory",
            ],
            at: "stack/compose.yaml:12:",
        },
        Case {
            name: "a service in two includes",
            to: "include: [one.yaml, two.yaml]\nservices:",
            files: &[
                ("one.yaml", "services:\n  cache:\n    image: x\n"),
                (
                    "two.yaml",
                    "services:\n  other:\n    image: x\n  cache:\n    image: y\n",
                ),
            ],
            expect: &[
                "service `cache` is defined twice: here and in stack/one.yaml",
                "rename one of them",
            ],
            at: "stack/two.yaml:4:",
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let dir = TempDir::new("check-merge");
        copy_tree(&example_repo(), dir.path());
        let path = dir.path().join("stack/compose.yaml");
        let text = std::fs::read_to_string(&path).expect("read");
        let from = if case.to.starts_with("include") {
            "services:"
        } else {
            "services:\n  web:"
        };
        let changed = text.replacen(from, case.to, 1);
        std::fs::write(&path, changed).expect("write");
        for (name, body) in case.files {
            std::fs::write(dir.path().join("stack").join(name), body).expect("write");
        }
        let out = check(dir.path(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let missing: Vec<&str> = case
            .expect
            .iter()
            .chain([&case.at])
            .copied()
            .filter(|e| !stderr.contains(*e))
            .collect();
        if out.status.code() != Some(1) || !missing.is_empty() {
            failures.push(format!(
                "{}: exit {:?}, missing {missing:?}\n{stderr}",
                case.name,
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}
