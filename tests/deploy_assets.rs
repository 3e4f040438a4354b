//! The monitoring assets shipped in deploy/: Prometheus alert rules (checked and
//! unit-tested with the real promtool) and the Grafana dashboard (valid JSON). Every
//! gitfleet metric they query must be one the agent exports.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool (Debian's prometheus package; scripts/testenv install puts it there)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "gitfleet-alerts.yml"]);
    promtool(&["test", "rules", "gitfleet-alerts.test.yml"]);
}

/// The `gitfleet_*` names in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("gitfleet_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether the agent's exposition has `name` (a family, or one of its series suffixes).
fn exported(name: &str, exposition: &str) -> bool {
    let families: Vec<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    families.iter().any(|f| {
        ["", "_total", "_bucket", "_count", "_sum"]
            .iter()
            .any(|suffix| name == format!("{f}{suffix}"))
    })
}

#[test]
fn the_dashboard_and_the_rules_query_only_metrics_the_agent_exports() {
    // Families without a series are not exposed: give every one a series first.
    let m = gitfleet::metrics::metrics();
    let now = chrono::Utc::now();
    let second = std::time::Duration::from_secs(1);
    m.reconciled(
        Some(gitfleet::core::status::NodeState::Healthy),
        second,
        now,
    );
    m.release("commit", "images");
    m.window(false, Some(now));
    m.fetched(second);
    m.push_retried();
    m.rolled_back();
    m.gate_failed("api");
    let exposition = m.encode();
    let dashboard = std::fs::read_to_string(deploy("grafana/gitfleet-dashboard.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let panels = doc["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= panels.len(), "every panel queries something");
    let rules = std::fs::read_to_string(deploy("prometheus/gitfleet-alerts.yml")).unwrap();
    for name in metric_names(&exprs.join("\n"))
        .into_iter()
        .chain(metric_names(&rules))
    {
        assert!(
            exported(&name, &exposition),
            "{name} is queried but not exported:\n{exposition}"
        );
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(deploy("systemd/gitfleet-agent.service")).unwrap();
    let dir = std::env::temp_dir().join(format!("gitfleet-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("gitfleet-agent.service");
    // The unit names the installed path; verify it with the binary under test.
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/gitfleet", env!("CARGO_BIN_EXE_gitfleet")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stderr);
    // Units it depends on (docker.service) may be absent on a test machine.
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("docker.service") && !l.trim().is_empty())
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}
