//! Reading `fleet.toml` (version 1) into a [`Fleet`], collecting every problem.

use std::collections::BTreeMap;
use std::ops::Range;

use super::diagnostics::{Diagnostics, did_you_mean};
use super::fleet::{
    Batch, FailureAction, Fleet, NodeFacts, NodeId, NodePattern, Notify, NotifyEvent, NotifyFormat,
    PinnedImage, Probe, REST_BATCH, Rollout, ScheduledWindow, UpdateOrder, Window, pinned_example,
};
use super::toml_reader::{Located, TableReader};
use crate::config::schedule::parse_schedule;
use crate::pin::policy::{FOLLOW_HELP, FollowPolicy};
use toml::de::DeValue;

/// Byte spans of the keys read, by dotted key path, so later checks (the policy, the
/// compose cross-checks) can point at the line that set a value.
#[derive(Clone, Debug, Default)]
pub struct Spans(BTreeMap<String, Range<usize>>);

impl Spans {
    pub fn get(&self, key: &str) -> Option<Range<usize>> {
        self.0.get(key).cloned()
    }

    fn record<T>(&mut self, located: &Located<T>) {
        self.0.insert(located.key.clone(), located.span.clone());
    }
}

const TOP_KEYS: &[&str] = &[
    "version",
    "fleet",
    "images",
    "rollout",
    "registries",
    "windows",
    "batches",
    "nodes",
    "health",
    "notify",
];
const FLEET_KEYS: &[&str] = &["name", "compose", "status_branch", "policy", "profiles"];
const ROLLOUT_KEYS: &[&str] = &[
    "batches",
    "monitor",
    "health_timeout",
    "max_failure_ratio",
    "failure_action",
    "order",
    "window",
    "max_parallel",
    "stale_after",
    "bake",
    "self_heal",
];
const WINDOW_KEYS: &[&str] = &["schedule", "duration"];
const BATCH_KEYS: &[&str] = &["nodes", "window", "profiles"];
const NODE_KEYS: &[&str] = &["timezone", "weight", "hold", "key", "profiles"];
const HEALTH_KEYS: &[&str] = &["http", "tcp", "command"];
const NOTIFY_KEYS: &[&str] = &["url_env", "format", "events"];
const IMAGE_KEYS: &[&str] = &["image", "follow"];

/// Reads the root table of fleet.toml. Returns the fleet when it is usable enough for
/// the cross-checks that follow (they may still add diagnostics).
pub fn read_fleet(root: &TableReader, diags: &mut Diagnostics) -> Option<(Fleet, Spans)> {
    let mut spans = Spans::default();
    root.deny_unknown(TOP_KEYS, diags);

    match root.integer("version", "1", diags) {
        Some(v) if v.value == 1 => {}
        Some(v) => diags.push(
            root.error(
                "version",
                v.span,
                format!("unsupported fleet.toml version {}", v.value),
            )
            .help("this gitfleet reads `version = 1`; upgrade gitfleet for newer versions"),
        ),
        None if !root.contains("version") => diags.push(root.missing("version", "1")),
        None => {}
    }

    let fleet_table = root.table("fleet", diags);
    if fleet_table.is_none() && !root.contains("fleet") {
        diags.push(root.missing(
            "fleet",
            "{ name = \"shop\", compose = \"stack/compose.yaml\" }",
        ));
    }
    let (name, compose_files, status_branch, policy_path) = match &fleet_table {
        Some(t) => read_fleet_table(t, &mut spans, diags),
        None => (
            None,
            None,
            crate::config::fleet::DEFAULT_STATUS_BRANCH.to_string(),
            None,
        ),
    };

    let images = root
        .table("images", diags)
        .map(|t| read_images(&t, &mut spans, diags))
        .unwrap_or_default();
    let windows = root
        .table("windows", diags)
        .map(|t| read_windows(&t, diags))
        .unwrap_or(Windows {
            valid: BTreeMap::new(),
            declared: Vec::new(),
        });
    let (rollout, batch_order, default_window) = match root.table("rollout", diags) {
        Some(t) => read_rollout(&t, &windows, &mut spans, diags),
        None => (Rollout::default(), Vec::new(), Window::Always),
    };
    let batches = match root.table("batches", diags) {
        Some(t) => read_batches(
            &t,
            &batch_order,
            &default_window,
            &windows,
            &mut spans,
            diags,
        ),
        None => {
            for b in &batch_order {
                diags.push(
                    root.error(
                        "rollout.batches",
                        b.span.clone(),
                        format!("batch `{}` has no [batches.{}] section", b.value, b.value),
                    )
                    .help(format!("add [batches.{}] with nodes = [\"...\"]", b.value)),
                );
            }
            vec![rest_batch(&default_window)]
        }
    };
    let nodes = root
        .table("nodes", diags)
        .map(|t| read_nodes(&t, diags))
        .unwrap_or_default();
    let registries = root
        .table("registries", diags)
        .map(|t| read_registries(&t, diags))
        .unwrap_or_default();
    let health = root
        .table("health", diags)
        .map(|t| read_health(&t, &mut spans, diags))
        .unwrap_or_default();
    let notify = root
        .table("notify", diags)
        .and_then(|t| read_notify(&t, diags));

    Some((
        Fleet {
            name: name?,
            compose_path: compose_files.as_ref()?.first()?.clone(),
            compose_overrides: compose_files?.split_off(1),
            status_branch,
            policy_path,
            images,
            rollout,
            registries,
            batches,
            nodes,
            health,
            notify,
            profiles: fleet_table.as_ref().and_then(|t| read_profiles(t, diags)),
        },
        spans,
    ))
}

fn read_fleet_table(
    t: &TableReader,
    spans: &mut Spans,
    diags: &mut Diagnostics,
) -> (Option<String>, Option<Vec<String>>, String, Option<String>) {
    t.deny_unknown(FLEET_KEYS, diags);
    let name = t.string("name", "\"shop\"", diags);
    let name = match name {
        Some(n) if is_project_name(&n.value) => Some(n.value),
        Some(n) => {
            diags.push(
                t.error("name", n.span, format!("`fleet.name` = \"{}\" is not a valid Compose project name", n.value))
                    .help("use lowercase letters, digits, `-` and `_`, starting with a letter or digit, e.g. \"shop\""),
            );
            None
        }
        None => {
            if !t.contains("name") {
                diags.push(t.missing("name", "\"shop\""));
            }
            None
        }
    };
    let example = "\"stack/compose.yaml\" or [\"stack/compose.yaml\", \"stack/compose.prod.yaml\"]";
    let compose = t.string_or_strings("compose", example, diags);
    if compose.is_none() && !t.contains("compose") {
        diags.push(t.missing("compose", "\"stack/compose.yaml\""));
    }
    if compose.as_ref().is_some_and(Vec::is_empty) {
        diags.push(
            t.error(
                "compose",
                t.value_span("compose").unwrap_or_default(),
                "`fleet.compose` names no compose file",
            )
            .help(format!("for example: compose = {example}")),
        );
    }
    // Every file is checked; the first is the project's (its directory is what a node
    // copies), the others are merged over it in order, as `docker compose -f a -f b`.
    let compose = compose.and_then(|list| {
        let mut paths = Vec::new();
        for c in &list {
            spans.record(c);
            paths.push(repo_path(t, c, diags));
        }
        if let Some(first) = list.first() {
            spans.0.insert("fleet.compose".into(), first.span.clone());
        }
        let paths = paths.into_iter().collect::<Option<Vec<String>>>()?;
        let dir = super::parent_dir(&paths[0]).to_string();
        for (path, c) in paths.iter().zip(&list).skip(1) {
            if !dir.is_empty() && !path.starts_with(&format!("{dir}/")) {
                diags.push(
                    t.error("compose", c.span.clone(), format!("`{}` = \"{path}\" is outside `{dir}/`, the directory of the first compose file", c.key))
                        .help(format!("keep every compose file under `{dir}/`: it is the project directory a node copies, and where relative paths resolve")),
                );
            }
        }
        Some(paths)
    });
    let status_branch = match t.string("status_branch", "\"fleet-status\"", diags) {
        Some(b) if is_branch_name(&b.value) => b.value,
        Some(b) => {
            diags.push(
                t.error(
                    "status_branch",
                    b.span,
                    format!(
                        "`fleet.status_branch` = \"{}\" is not a valid branch name",
                        b.value
                    ),
                )
                .help("use a plain branch name such as \"fleet-status\""),
            );
            crate::config::fleet::DEFAULT_STATUS_BRANCH.to_string()
        }
        None => crate::config::fleet::DEFAULT_STATUS_BRANCH.to_string(),
    };
    let policy = t
        .string("policy", "\"policies/production.toml\"", diags)
        .and_then(|p| {
            spans.record(&p);
            repo_path(t, &p, diags)
        });
    (name, compose, status_branch, policy)
}

/// A path inside the fleet repository: relative, without `..`.
fn repo_path(t: &TableReader, path: &Located<String>, diags: &mut Diagnostics) -> Option<String> {
    let key = path.key.rsplit('.').next().unwrap_or(&path.key);
    match super::normalize_repo_path(&path.value) {
        Ok(p) => Some(p),
        Err(why) => {
            diags.push(
                t.error(key, path.span.clone(), format!("`{}` = \"{}\" {why}", path.key, path.value))
                    .help("write a path relative to the fleet repository root, e.g. \"stack/compose.yaml\""),
            );
            None
        }
    }
}

fn is_project_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with(".lock")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.'))
}

fn read_images(
    t: &TableReader,
    spans: &mut Spans,
    diags: &mut Diagnostics,
) -> BTreeMap<String, PinnedImage> {
    let mut images = BTreeMap::new();
    for (service, _, value) in t.entries() {
        let example = format!("\"{}\"", pinned_example(service));
        // `web = { image = "…", follow = "semver:^2" }`: the image, plus the version
        // policy `gitfleet pin --update` follows (docs/pin.md).
        let entry;
        let (reader, key) = match value.get_ref() {
            DeValue::Table(_) => {
                let Some(table) = t.table(service, diags) else {
                    continue;
                };
                entry = table;
                entry.deny_unknown(IMAGE_KEYS, diags);
                read_follow(&entry, diags);
                if !entry.contains("image") {
                    diags.push(entry.missing("image", &example));
                }
                (&entry, "image")
            }
            _ => (t, service),
        };
        let Some(reference) = reader.string(key, &example, diags) else {
            continue;
        };
        spans.record(&Located {
            key: t.key_path(service),
            ..reference.clone()
        });
        match PinnedImage::parse(&reference.value) {
            Ok(image) => {
                images.insert(service.to_string(), image);
            }
            Err(why) => diags.push(
                reader.error(key, reference.span, format!("image `{}` for service `{service}` {why}", reference.value))
                    .help(format!("pin the image by its digest, e.g. {service} = \"{}\" (`gitfleet pin` resolves the tag and writes it; `docker inspect --format '{{{{index .RepoDigests 0}}}}' <image>` shows it after a push or pull)", pinned_example(service))),
            ),
        }
    }
    images
}

/// Checks an image's `follow` policy, so `check` refuses one `pin` could not follow.
fn read_follow(entry: &TableReader, diags: &mut Diagnostics) {
    let Some(follow) = entry.string("follow", "\"semver:^2\"", diags) else {
        return;
    };
    if let Err(why) = FollowPolicy::parse(&follow.value) {
        diags.push(
            entry
                .error(
                    "follow",
                    follow.span,
                    format!("`{}` = \"{}\" {why}", follow.key, follow.value),
                )
                .help(FOLLOW_HELP),
        );
    }
}

/// The `[windows.*]` sections: valid ones, plus the names of invalid ones (already
/// reported) so that batches naming them do not get a second, misleading error.
struct Windows {
    valid: BTreeMap<String, ScheduledWindow>,
    declared: Vec<String>,
}

fn read_windows(t: &TableReader, diags: &mut Diagnostics) -> Windows {
    let mut windows = BTreeMap::new();
    let declared = t.entries().map(|(name, _, _)| name.to_string()).collect();
    for (name, span, _) in t.entries() {
        if name == "always" {
            diags.push(
                t.error(
                    name,
                    span,
                    "`always` is a built-in window and cannot be redefined",
                )
                .help("give your window another name"),
            );
            continue;
        }
        let Some(w) = t.table(name, diags) else {
            continue;
        };
        w.deny_unknown(WINDOW_KEYS, diags);
        let schedule = w.string("schedule", "\"0 2 * * *\"", diags);
        if schedule.is_none() && !w.contains("schedule") {
            diags.push(w.missing("schedule", "\"0 2 * * *\""));
        }
        let schedule = schedule.and_then(|s| match parse_schedule(&s.value) {
            Ok(cron) => Some((s.value, cron)),
            Err(why) => {
                diags.push(
                    w.error("schedule", s.span, format!("`{}` = \"{}\" is not a valid cron schedule: {why}", s.key, s.value))
                        .help("write 5 fields, minute hour day-of-month month day-of-week, in the node's timezone, e.g. \"0 2 * * *\" for 02:00 every day"),
                );
                None
            }
        });
        let duration = w.duration("duration", diags);
        if duration.is_none() && !w.contains("duration") {
            diags.push(w.missing("duration", "\"3h\""));
        }
        let duration = duration.and_then(|d| {
            if d.value.is_zero() {
                diags.push(
                    w.error(
                        "duration",
                        d.span,
                        format!("`{}` must be longer than zero", d.key),
                    )
                    .help("a window needs time to work in, e.g. duration = \"3h\""),
                );
                None
            } else {
                Some(d.value)
            }
        });
        if let (Some((expression, schedule)), Some(duration)) = (schedule, duration) {
            windows.insert(
                name.to_string(),
                ScheduledWindow {
                    name: name.to_string(),
                    expression,
                    schedule,
                    duration,
                },
            );
        }
    }
    Windows {
        valid: windows,
        declared,
    }
}

fn read_rollout(
    t: &TableReader,
    windows: &Windows,
    spans: &mut Spans,
    diags: &mut Diagnostics,
) -> (Rollout, Vec<Located<String>>, Window) {
    t.deny_unknown(ROLLOUT_KEYS, diags);
    let mut rollout = Rollout::default();
    let mut durations = [
        ("monitor", &mut rollout.monitor),
        ("health_timeout", &mut rollout.health_timeout),
        ("stale_after", &mut rollout.stale_after),
        ("bake", &mut rollout.bake),
    ];
    for (key, slot) in durations.iter_mut() {
        let Some(d) = t.duration(key, diags) else {
            continue;
        };
        spans.record(&d);
        if *key == "health_timeout" && d.value.is_zero() {
            diags.push(
                t.error(
                    key,
                    d.span,
                    "`rollout.health_timeout` must be longer than zero",
                )
                .help("give the stack time to become healthy, e.g. health_timeout = \"5m\""),
            );
            continue;
        }
        **slot = d.value;
    }
    if let Some(r) = t.ratio(
        "max_failure_ratio",
        "0.0: any failure halts; 1.0: never halt",
        diags,
    ) {
        spans.record(&r);
        rollout.max_failure_ratio = r.value;
    }
    if let Some(a) = enum_value(
        t,
        "failure_action",
        &[
            ("rollback", FailureAction::Rollback),
            ("pause", FailureAction::Pause),
        ],
        diags,
    ) {
        rollout.failure_action = a;
    }
    if let Some(o) = enum_value(
        t,
        "order",
        &[
            ("stop-first", UpdateOrder::StopFirst),
            ("start-first", UpdateOrder::StartFirst),
        ],
        diags,
    ) {
        rollout.order = o;
    }
    if let Some(n) = t.count(
        "max_parallel",
        0,
        "0 for no limit, else the most nodes of a batch converging at once",
        diags,
    ) {
        rollout.max_parallel = (n.value > 0).then_some(n.value);
    }
    if let Some(b) = t.bool("self_heal", diags) {
        rollout.self_heal = b.value;
    }
    let batches = t
        .strings("batches", "[\"canary\", \"eu\"]", diags)
        .unwrap_or_default();
    let mut seen: Vec<&str> = Vec::new();
    for b in &batches {
        if seen.contains(&b.value.as_str()) {
            diags.push(
                t.error(
                    "batches",
                    b.span.clone(),
                    format!("batch `{}` is listed twice in rollout.batches", b.value),
                )
                .help("list each batch once, in rollout order"),
            );
        } else if b.value == REST_BATCH {
            diags.push(
                t.error(
                    "batches",
                    b.span.clone(),
                    "`rest` is the built-in last batch of unmatched nodes and cannot be listed",
                )
                .help("rename the batch"),
            );
        }
        seen.push(&b.value);
    }
    let window = t.string("window", "\"nightly\"", diags);
    let window = resolve_window(t, window.as_ref(), windows, diags).unwrap_or(Window::Always);
    (rollout, batches, window)
}

/// A window by name: `always`, or a defined `[windows.<name>]`.
fn resolve_window(
    t: &TableReader,
    name: Option<&Located<String>>,
    windows: &Windows,
    diags: &mut Diagnostics,
) -> Option<Window> {
    let name = name?;
    if name.value == "always" {
        return Some(Window::Always);
    }
    if let Some(w) = windows.valid.get(&name.value) {
        return Some(Window::Scheduled(Box::new(w.clone())));
    }
    if windows.declared.contains(&name.value) {
        return None;
    }
    let key = name.key.rsplit('.').next().unwrap_or("window");
    let candidates = windows
        .declared
        .iter()
        .map(String::as_str)
        .chain(["always"]);
    let mut d = t.error(
        key,
        name.span.clone(),
        format!("window `{}` is not defined", name.value),
    );
    d = match did_you_mean(&name.value, candidates) {
        Some(near) => d.help(format!(
            "did you mean `{near}`? Otherwise define [windows.{}] with schedule and duration",
            name.value
        )),
        None => d.help(format!(
            "define [windows.{}] with schedule and duration, or use \"always\"",
            name.value
        )),
    };
    diags.push(d);
    None
}

fn rest_batch(default_window: &Window) -> Batch {
    Batch {
        name: REST_BATCH.to_string(),
        patterns: vec![NodePattern::Glob("*".to_string())],
        window: default_window.clone(),
        profiles: None,
    }
}

fn read_batches(
    t: &TableReader,
    order: &[Located<String>],
    default_window: &Window,
    windows: &Windows,
    spans: &mut Spans,
    diags: &mut Diagnostics,
) -> Vec<Batch> {
    let mut batches = Vec::new();
    for (name, span, _) in t.entries() {
        if !order.iter().any(|b| b.value == name) {
            diags.push(
                t.error(
                    name,
                    span,
                    format!("batch `{name}` is defined but not listed in rollout.batches"),
                )
                .help(format!(
                    "add \"{name}\" to rollout.batches in rollout order, or remove [batches.{name}]"
                )),
            );
        }
    }
    for listed in order {
        let Some(b) = t.table(&listed.value, diags) else {
            if !t.contains(&listed.value) {
                let defined = t.entries().map(|(k, _, _)| k).collect::<Vec<_>>();
                let mut d = t.error(
                    "",
                    listed.span.clone(),
                    format!(
                        "batch `{}` has no [batches.{}] section",
                        listed.value, listed.value
                    ),
                );
                d.key = "rollout.batches".to_string();
                d = match did_you_mean(&listed.value, defined) {
                    Some(near) => d.help(format!("did you mean `{near}`?")),
                    None => d.help(format!(
                        "add [batches.{}] with nodes = [\"...\"]",
                        listed.value
                    )),
                };
                diags.push(d);
            }
            continue;
        };
        b.deny_unknown(BATCH_KEYS, diags);
        let nodes = b.strings("nodes", "[\"eu-1\", \"eu-*\"]", diags);
        if let Some(span) = b.value_span("nodes") {
            spans.record(&Located {
                value: (),
                key: b.key_path("nodes"),
                span,
            });
        }
        let patterns: Vec<NodePattern> = match nodes {
            Some(nodes) if nodes.is_empty() => {
                diags.push(
                    b.error("nodes", b.value_span("nodes").unwrap_or(b.span.clone()), format!("batch `{}` has no nodes", listed.value))
                        .help("list node ids or globs, e.g. nodes = [\"eu-1\", \"eu-*\"], or remove the batch"),
                );
                Vec::new()
            }
            Some(nodes) => nodes
                .iter()
                .filter_map(|n| {
                    if is_node_pattern(&n.value) {
                        Some(NodePattern::parse(&n.value))
                    } else {
                        diags.push(
                            b.error("nodes", n.span.clone(), format!("`{}` is not a valid node id or glob", n.value))
                                .help("node ids use letters, digits, `-`, `_` and `.`; globs add `*` and `?`"),
                        );
                        None
                    }
                })
                .collect(),
            None => {
                if !b.contains("nodes") {
                    diags.push(b.missing("nodes", "[\"eu-1\"]"));
                }
                Vec::new()
            }
        };
        let window_name = b.string("window", "\"nightly\"", diags);
        if let Some(w) = &window_name {
            spans.record(w);
        }
        let window = match &window_name {
            Some(_) => {
                resolve_window(&b, window_name.as_ref(), windows, diags).unwrap_or(Window::Always)
            }
            None => default_window.clone(),
        };
        batches.push(Batch {
            name: listed.value.clone(),
            patterns,
            window,
            profiles: read_profiles(&b, diags),
        });
    }
    batches.push(rest_batch(default_window));
    batches
}

/// Node ids become file names on the status branch: keep them to a safe alphabet.
pub fn is_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_node_pattern(p: &str) -> bool {
    is_node_id(&p.replace(['*', '?'], "x"))
}

fn read_nodes(t: &TableReader, diags: &mut Diagnostics) -> BTreeMap<NodeId, NodeFacts> {
    let mut nodes = BTreeMap::new();
    for (id, span, _) in t.entries() {
        if !is_node_id(id) {
            diags.push(
                t.error(id, span.clone(), format!("`{id}` is not a valid node id"))
                    .help("node ids use letters, digits, `-`, `_` and `.`"),
            );
        }
        let Some(n) = t.table(id, diags) else {
            continue;
        };
        n.deny_unknown(NODE_KEYS, diags);
        let mut facts = NodeFacts::default();
        if let Some(tz) = n.string("timezone", "\"Europe/Berlin\"", diags) {
            match tz.value.parse::<chrono_tz::Tz>() {
                Ok(zone) => facts.timezone = Some(zone),
                Err(_) => {
                    let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
                    let hint = did_you_mean(&tz.value, names)
                        .map(|near| format!("did you mean \"{near}\"? "))
                        .unwrap_or_default();
                    diags.push(
                        n.error("timezone", tz.span, format!("unknown timezone \"{}\"", tz.value))
                            .help(format!("{hint}use an IANA name such as \"Europe/Berlin\" or \"America/Sao_Paulo\"")),
                    );
                }
            }
        }
        if let Some(w) = n.count(
            "weight",
            1,
            "how many times the node counts in its batch's failure ratio",
            diags,
        ) {
            facts.weight = w.value;
        }
        if let Some(h) = n.bool("hold", diags) {
            facts.hold = h.value;
        }
        if let Some(key) = n.string("key", "\"ssh-ed25519 AAAAC3Nza… eu-1\"", diags) {
            match ssh_key::PublicKey::from_openssh(&key.value) {
                Ok(_) => facts.key = Some(key.value),
                Err(e) => diags.push(
                    n.error("key", key.span, format!("`key` is not an SSH public key: {e}"))
                        .help("paste the node's public key as one line, as in its `.pub` file: `ssh-ed25519 AAAA… node`"),
                ),
            }
        }
        facts.profiles = read_profiles(&n, diags);
        nodes.insert(NodeId(id.to_string()), facts);
    }
    nodes
}

/// `profiles = ["monitoring"]`: Compose profile names, as Compose spells them.
fn read_profiles(t: &TableReader, diags: &mut Diagnostics) -> Option<Vec<String>> {
    let list = t.strings("profiles", "[\"monitoring\"]", diags)?;
    let mut profiles = Vec::new();
    for p in list {
        let mut chars = p.value.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            profiles.push(p.value);
        } else {
            diags.push(
                t.error(
                    "profiles",
                    p.span,
                    format!("`{}` is not a Compose profile name", p.value),
                )
                .help("use letters, digits, `_`, `.` and `-`, starting with a letter or digit"),
            );
        }
    }
    Some(profiles)
}

fn read_registries(t: &TableReader, diags: &mut Diagnostics) -> BTreeMap<String, Vec<String>> {
    let mut registries = BTreeMap::new();
    for (host, _, _) in t.entries() {
        if let Some(mirrors) = t.strings(host, "[\"mirror.example.net:5000\"]", diags) {
            registries.insert(
                host.to_string(),
                mirrors.into_iter().map(|m| m.value).collect(),
            );
        }
    }
    registries
}

fn read_health(
    t: &TableReader,
    spans: &mut Spans,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Vec<Probe>> {
    let mut health = BTreeMap::new();
    for (service, span, _) in t.entries() {
        let Some(h) = t.table(service, diags) else {
            continue;
        };
        spans.record(&Located {
            value: (),
            key: h.path.clone(),
            span,
        });
        h.deny_unknown(HEALTH_KEYS, diags);
        let mut probes = Vec::new();
        if let Some(url) = h.string("http", "\"http://127.0.0.1:8080/health\"", diags) {
            if url.value.starts_with("http://") || url.value.starts_with("https://") {
                probes.push(Probe::Http(url.value));
            } else {
                diags.push(
                    h.error(
                        "http",
                        url.span,
                        format!("`{}` = \"{}\" is not an http(s) URL", url.key, url.value),
                    )
                    .help("e.g. http = \"http://127.0.0.1:8080/health\""),
                );
            }
        }
        if let Some(addr) = h.string("tcp", "\"127.0.0.1:5432\"", diags) {
            let port_ok = addr.value.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if port_ok {
                probes.push(Probe::Tcp(addr.value));
            } else {
                diags.push(
                    h.error(
                        "tcp",
                        addr.span,
                        format!("`{}` = \"{}\" is not host:port", addr.key, addr.value),
                    )
                    .help("e.g. tcp = \"127.0.0.1:5432\""),
                );
            }
        }
        if let Some(cmd) = h.strings("command", "[\"pg_isready\"]", diags) {
            if cmd.is_empty() {
                diags.push(
                    h.error(
                        "command",
                        h.span.clone(),
                        format!("`{}.command` is empty", h.path),
                    )
                    .help("e.g. command = [\"pg_isready\", \"-U\", \"postgres\"]"),
                );
            } else {
                probes.push(Probe::Command(cmd.into_iter().map(|c| c.value).collect()));
            }
        }
        if probes.is_empty() && !h.contains("http") && !h.contains("tcp") && !h.contains("command")
        {
            diags.push(
                h.error("", h.span.clone(), format!("[{}] defines no probe", h.path))
                    .help("add http = \"...\", tcp = \"host:port\" or command = [\"...\"]"),
            );
        }
        health.insert(service.to_string(), probes);
    }
    health
}

fn read_notify(t: &TableReader, diags: &mut Diagnostics) -> Option<Notify> {
    t.deny_unknown(NOTIFY_KEYS, diags);
    let url_env = t.string("url_env", "\"GITFLEET_NOTIFY_URL\"", diags);
    if url_env.is_none() && !t.contains("url_env") {
        diags.push(t.missing("url_env", "\"GITFLEET_NOTIFY_URL\""));
    }
    let format = enum_value(
        t,
        "format",
        &[("json", NotifyFormat::Json), ("slack", NotifyFormat::Slack)],
        diags,
    )
    .unwrap_or(NotifyFormat::Json);
    const EVENTS: &[(&str, NotifyEvent)] = &[
        ("healthy", NotifyEvent::Healthy),
        ("failed", NotifyEvent::Failed),
        ("rolled-back", NotifyEvent::RolledBack),
        ("halted", NotifyEvent::Halted),
        ("rejected", NotifyEvent::Rejected),
    ];
    let events = match t.strings("events", "[\"failed\", \"halted\"]", diags) {
        Some(list) => list
            .iter()
            .filter_map(|e| parse_enum(t, "events", e, EVENTS, diags))
            .collect(),
        None => vec![
            NotifyEvent::Failed,
            NotifyEvent::RolledBack,
            NotifyEvent::Halted,
            NotifyEvent::Rejected,
        ],
    };
    Some(Notify {
        url_env: url_env?.value,
        format,
        events,
    })
}

/// A string key with a fixed set of values, e.g. `failure_action = "rollback"`.
fn enum_value<T: Copy>(
    t: &TableReader,
    key: &str,
    values: &[(&str, T)],
    diags: &mut Diagnostics,
) -> Option<T> {
    let example = format!("\"{}\"", values[0].0);
    let text = t.string(key, &example, diags)?;
    parse_enum(t, key, &text, values, diags)
}

fn parse_enum<T: Copy>(
    t: &TableReader,
    key: &str,
    text: &Located<String>,
    values: &[(&str, T)],
    diags: &mut Diagnostics,
) -> Option<T> {
    if let Some((_, v)) = values.iter().find(|(name, _)| *name == text.value) {
        return Some(*v);
    }
    let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
    let hint = did_you_mean(&text.value, names.iter().copied())
        .map(|near| format!("did you mean \"{near}\"? "))
        .unwrap_or_default();
    diags.push(
        t.error(
            key,
            text.span.clone(),
            format!(
                "`{}` = \"{}\" is not one of: {}",
                text.key,
                text.value,
                names.join(", ")
            ),
        )
        .help(format!(
            "{hint}valid values: {}",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    );
    None
}
