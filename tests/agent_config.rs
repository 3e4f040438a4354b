//! The agent's configuration: file, environment and flags in that order of precedence,
//! `--print-config` with secrets masked, errors that name the file and key, and shell
//! completions.

mod common;

use std::process::Command;

use common::{TempDir, output_text};

fn gitfleet(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gitfleet"));
    command.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("GITFLEET_")) {
        command.env_remove(key);
    }
    let out = command.envs(env.iter().copied()).output().unwrap();
    (out.status.code(), output_text(&out))
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = TempDir::new("agent-config");
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "repo = \"https://bot:s3cret-in-url@git.example.com/fleet.git\"\n\
         node = \"from-file\"\ninterval = \"5m\"\nproject = \"shop\"\nstate_dir = \"/srv/gf\"\nlog_level = \"warn\"\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let (code, text) = gitfleet(
        &[
            "agent",
            "--config",
            config,
            "--print-config",
            "--node",
            "from-flag",
        ],
        &[
            ("GITFLEET_INTERVAL", "30s"),
            ("GITFLEET_NODE", "from-env"),
            ("GITFLEET_GIT_PASSWORD", "s3cret-in-env"),
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    for line in [
        "node = \"from-flag\"",
        "interval = \"30s\"",
        "project = \"shop\"",
        "state_dir = \"/srv/gf\"",
        "repo = \"https://git.example.com/fleet.git\"",
        "# git password: *** (from GITFLEET_GIT_PASSWORD)",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    assert!(!text.contains("s3cret"), "{text}");

    // GITFLEET_CONFIG names the file too.
    let (code, text) = gitfleet(&["agent", "--print-config"], &[("GITFLEET_CONFIG", config)]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("node = \"from-file\""), "{text}");
}

#[test]
fn a_bad_file_is_named_with_the_key_and_the_fix() {
    let dir = TempDir::new("agent-config-bad");
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "repo = \"file:///x\"\nnode = \"n1\"\nintervall = \"5m\"\n",
    )
    .unwrap();
    let (code, text) = gitfleet(
        &[
            "agent",
            "--config",
            file.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("agent.toml: unknown key `intervall`") && text.contains("interval,"),
        "{text}"
    );
    std::fs::write(&file, "repo = [1]\n").unwrap();
    let (code, text) = gitfleet(
        &[
            "agent",
            "--config",
            file.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("`repo` must be a string, got array"),
        "{text}"
    );
    let missing = dir.path().join("missing.toml");
    let (code, text) = gitfleet(
        &[
            "agent",
            "--config",
            missing.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("missing.toml: cannot read it"), "{text}");
}

#[test]
fn completions_for_the_usual_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, text) = gitfleet(&["completions", shell], &[]);
        assert_eq!(code, Some(0), "{text}");
        assert!(
            text.contains("status") && text.contains("repo"),
            "{shell}: {text}"
        );
    }
}
