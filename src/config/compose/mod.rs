//! The Compose file: safe parsing, the supported subset, interpolation, key positions.
//!
//! Steps, each collecting every problem it finds:
//! 0. Every compose file of the stack (the project's, its overrides, what `extends`
//!    and `include` name) is read through the steps 1 and 2 and merged into one
//!    model as Compose merges them ([`merge`]); each key keeps the file and line it
//!    came from.
//! 1. A marked YAML event scan ([`yaml_rust2`]) records where every key sits (for
//!    diagnostics) and refuses hostile input before anything expands it: files over
//!    1 MiB, nesting deeper than 64, alias bombs (more than 100 000 nodes once aliases
//!    are expanded).
//! 2. `serde_yaml` loads the document and resolves `<<:` merge keys.
//! 3. Keys outside the subset gitfleet honours are refused, so `gitfleet check` catches
//!    them in the pull request instead of a node at 02:00.
//! 4. String values are interpolated as Compose does ([`super::interpolate`]).
//! 5. The value is typed as `docker_compose_types::Compose`. That crate has no `configs`,
//!    so those are lifted out first and kept here as [`FileMount`]s.

mod extends;
mod include;
mod merge;

use std::collections::{BTreeMap, HashMap};

use serde_yaml::{Mapping, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::RepoFiles;
use super::diagnostics::{Diagnostic, Diagnostics, Position, SourceFile, did_you_mean};
use super::interpolate::interpolate;

mod host;
pub mod values;

use values::{Declared, ServiceValues};

/// Top-level keys gitfleet honours (plus `x-*` extensions).
pub const SUPPORTED_TOP_LEVEL_KEYS: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "secrets", "configs",
];

/// Service keys gitfleet honours (plus `x-*` extensions). Anything else is refused.
pub const SUPPORTED_SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "healthcheck",
    "depends_on",
    "restart",
    "init",
    "labels",
    "networks",
    "user",
    "working_dir",
    "hostname",
    "extra_hosts",
    "cap_add",
    "cap_drop",
    "read_only",
    "tmpfs",
    "stop_signal",
    "stop_grace_period",
    "container_name",
    "expose",
    "network_mode",
    "sysctls",
    "ulimits",
    "logging",
    "security_opt",
    "devices",
    "tty",
    "stdin_open",
    "deploy",
    "secrets",
    "configs",
    "pids_limit",
    "shm_size",
    "dns",
    "dns_search",
    "dns_opt",
    "links",
    "attach",
    "build",
    "domainname",
    "group_add",
    "oom_score_adj",
    "cgroup_parent",
    "userns_mode",
    "platform",
    "pull_policy",
    "profiles",
    "privileged",
    "pid",
    "ipc",
    "mac_address",
    "storage_opt",
];

/// `deploy` keys accepted. Those only Swarm acts on (`update_config`,
/// `rollback_config`, `placement`, `endpoint_mode`, `labels`) are accepted and have no
/// effect, as under `docker compose`: a fleet's rollout is fleet.toml's.
pub const SUPPORTED_DEPLOY: &[&str] = &[
    "resources",
    "mode",
    "replicas",
    "restart_policy",
    "labels",
    "update_config",
    "rollback_config",
    "placement",
    "endpoint_mode",
];

/// `deploy.resources.limits` keys honoured.
pub const SUPPORTED_LIMITS: &[&str] = &["cpus", "memory"];

/// `deploy.resources.reservations` keys honoured (`cpus` has no engine setting and is
/// accepted without effect, as under `docker compose`).
pub const SUPPORTED_RESERVATIONS: &[&str] = &["cpus", "memory", "devices"];

const MAX_DEPTH: usize = 64;
const MAX_EXPANDED_NODES: usize = 100_000;

/// A secret or config file mounted into a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMount {
    /// Name of the top-level `secrets`/`configs` entry.
    pub source: String,
    /// Where it appears in the container; `None` = Compose's default.
    pub target: Option<String>,
    pub mode: Option<u32>,
}

/// Service keys Compose has and docker-compose-types does not (or types too narrowly:
/// `dns` may be one string), taken out of each service before typing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceExtras {
    pub pids_limit: Option<i64>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub oom_score_adj: Option<i64>,
    /// `os/arch[/variant]`: checked only. A node runs its own platform's image of the
    /// pinned digest (an index digest resolves per node).
    pub platform: Option<String>,
    /// `env_file`, in order (short and long syntax).
    pub env_files: Vec<EnvFile>,
    /// `deploy.restart_policy`, written as `restart:` would be (`on-failure:3`).
    pub deploy_restart: Option<String>,
    /// `deploy.resources.reservations.memory`, as written.
    pub memory_reservation: Option<String>,
    /// `deploy.resources.reservations.devices`: device requests (GPUs).
    pub device_requests: Vec<DeviceRequest>,
    pub mac_address: Option<String>,
    /// `networks.<key>.mac_address`, by network key.
    pub network_macs: BTreeMap<String, String>,
    pub storage_opt: BTreeMap<String, String>,
}

/// An `env_file` entry: a path relative to the compose file, and whether a missing
/// file is an error (`required: false` in the long syntax lets it be absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvFile {
    pub path: String,
    pub required: bool,
}

/// A `deploy.resources.reservations.devices` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceRequest {
    pub driver: Option<String>,
    /// `-1` for `all`.
    pub count: Option<i64>,
    pub device_ids: Vec<String>,
    pub capabilities: Vec<String>,
    pub options: BTreeMap<String, String>,
}

/// A parsed, interpolated Compose file restricted to the subset gitfleet honours.
#[derive(Clone, Debug)]
pub struct ComposeStack {
    /// Path of the compose file relative to the fleet repository root (the first one:
    /// its directory is the project directory).
    pub file: String,
    /// Every compose file merged, in order (the first is `file`).
    pub config_files: Vec<String>,
    pub compose: docker_compose_types::Compose,
    /// Top-level `configs`: name → file path (relative to the compose file).
    pub configs: BTreeMap<String, String>,
    /// Service-level `configs` mounts, by service.
    pub service_configs: BTreeMap<String, Vec<FileMount>>,
    /// Service keys docker-compose-types lacks, by service.
    pub extras: BTreeMap<String, ServiceExtras>,
    /// Every service's values, typed ([`values`]), by service.
    pub values: BTreeMap<String, ServiceValues>,
    /// Services of the file this node does not run (outside the active profiles, or
    /// `deploy.replicas: 0`), with their own `image:`: still pinned, so every node of
    /// a release agrees on its image set.
    pub inactive: BTreeMap<String, Option<String>>,
    /// Where each key is written, by dotted path (`services.web.image`), for
    /// diagnostics: a file of `sources` and a position in it.
    positions: merge::Positions,
    /// Every file the stack was read from (overrides, `extends` and `include` files).
    sources: Vec<SourceFile>,
}

impl ComposeStack {
    /// Service names, sorted.
    pub fn service_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.compose.services.0.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether a service is given a secret's content (which needs the node's digest key).
    pub fn has_secret_content(&self) -> bool {
        self.values
            .values()
            .flat_map(|v| &v.files)
            .any(|f| matches!(f.source, values::FileSource::Content { .. }))
    }

    /// Every service of the file, those this node does not run included, sorted.
    pub fn all_service_names(&self) -> Vec<&str> {
        let mut names = self.service_names();
        names.extend(self.inactive.keys().map(String::as_str));
        names.sort_unstable();
        names
    }

    /// The service's own `image:` after interpolation, if any.
    pub fn image_of(&self, service: &str) -> Option<&str> {
        match self.inactive.get(service) {
            Some(image) => image.as_deref(),
            None => self
                .compose
                .services
                .0
                .get(service)
                .and_then(|s| s.as_ref())
                .and_then(|s| s.image.as_deref()),
        }
    }

    /// Where a key (dotted path, e.g. `services.web.image`) is written, in whichever
    /// file of the stack wrote it.
    pub fn position(&self, key: &str) -> Option<Position> {
        self.positions.get(key).map(|origin| origin.position)
    }

    /// A diagnostic about `key`, in the file that wrote it and pointing at it (or at
    /// the nearest enclosing key that is known).
    pub fn diagnostic(&self, key: &str, message: String) -> Diagnostic {
        let ctx = Context {
            sources: &self.sources,
            positions: &self.positions,
        };
        ctx.locate(Diagnostic::new("", key, message))
    }

    /// Every path the stack names on the node's disk, as written, with the key it is
    /// written at: `env_file`s, `secrets`/`configs` file sources, bind mount sources.
    pub fn file_references(&self) -> Vec<FileReference> {
        let mut out = Vec::new();
        for (name, file) in &self.configs {
            out.push(FileReference::new(
                format!("configs.{name}.file"),
                file,
                FileUse::Mounted,
            ));
        }
        for (name, secret) in self.compose.secrets.iter().flat_map(|s| &s.0) {
            if let Some(docker_compose_types::ComposeSecret::File(file)) = secret {
                out.push(FileReference::new(
                    format!("secrets.{name}.file"),
                    file,
                    FileUse::Mounted,
                ));
            }
        }
        for (service, definition) in &self.compose.services.0 {
            let Some(definition) = definition else {
                continue;
            };
            let env_files = self.extras.get(service).map(|e| e.env_files.as_slice());
            for file in env_files.unwrap_or_default().iter().filter(|f| f.required) {
                let key = format!("services.{service}.env_file");
                out.push(FileReference::new(key, &file.path, FileUse::EnvFile));
            }
            for (i, volume) in definition.volumes.iter().enumerate() {
                let source = match volume {
                    docker_compose_types::Volumes::Simple(text) => text
                        .split_once(':')
                        .map(|(source, _)| source)
                        .filter(|s| s.starts_with(['/', '.', '~'])),
                    docker_compose_types::Volumes::Advanced(v) if v._type == "bind" => {
                        v.source.as_deref()
                    }
                    docker_compose_types::Volumes::Advanced(_) => None,
                };
                if let Some(source) = source {
                    let key = format!("services.{service}.volumes.{i}");
                    out.push(FileReference::new(key, source, FileUse::Bind));
                }
            }
        }
        out
    }
}

/// A path the compose file names (see [`ComposeStack::file_references`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReference {
    /// The compose key it is written at (`services.web.env_file`).
    pub key: String,
    /// The path as written.
    pub path: String,
    pub used_as: FileUse,
}

impl FileReference {
    fn new(key: String, path: &str, used_as: FileUse) -> Self {
        FileReference {
            key,
            path: path.to_string(),
            used_as,
        }
    }

    /// A path on the host itself (absolute or under `~`), not one in the repository.
    pub fn is_host_path(&self) -> bool {
        self.path.starts_with(['/', '~'])
    }
}

/// How the stack uses a referenced path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileUse {
    /// Read by gitfleet for the container's environment; must be in the repository.
    EnvFile,
    /// A `secrets`/`configs` file, bind-mounted read-only; in the repository unless
    /// absolute.
    Mounted,
    /// A bind mount source (a file or directory; created when missing, as Compose does).
    Bind,
}

/// Parses `source` as a Compose file, interpolating `${...}` from `vars`; every problem
/// goes to `diags`, and `None` is returned when the file cannot be used.
pub fn load(
    source: &SourceFile,
    vars: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> Option<ComposeStack> {
    load_files(
        &OneFile(source),
        std::slice::from_ref(&source.path),
        vars,
        false,
        diags,
    )
}

/// A repository of one file (a compose file given as text).
struct OneFile<'a>(&'a SourceFile);

impl RepoFiles for OneFile<'_> {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        Ok((path == self.0.path).then(|| self.0.text.clone()))
    }

    fn list(&self, _: &str) -> Result<Vec<String>, String> {
        Ok(vec![self.0.path.clone()])
    }
}

/// Reads the compose files `paths` of `files` (the project's, then the overrides merged
/// over it) as [`load`] reads one.
pub fn load_files(
    files: &dyn RepoFiles,
    paths: &[String],
    vars: &BTreeMap<String, String>,
    fleet_view: bool,
    diags: &mut Diagnostics,
) -> Option<ComposeStack> {
    let before = diags.len();
    let model = merge::load_model(files, paths, vars, diags)?;
    let (mut value, positions, sources) = (model.value, model.positions, model.sources);
    let ctx = Context {
        sources: &sources,
        positions: &positions,
    };
    let Value::Mapping(top) = &mut value else {
        return None;
    };
    check_subset(&ctx, top, diags);
    let per_node = if fleet_view {
        variable_paths(&value, "")
    } else {
        Vec::new()
    };
    interpolate_values(&ctx, &mut value, "", vars, diags);
    if diags.len() > before {
        return None;
    }
    resolve_bare_environment(&mut value, vars);
    let inactive = drop_inactive(&mut value, vars);
    check_needs_of_the_running(&ctx, &value, &inactive, diags);
    coerce_scalars(&mut value);
    let (configs, service_configs) = lift_configs(&ctx, &mut value, diags);
    let extras = lift_extras(&ctx, &mut value, diags);
    stringify_numbers(&mut value);
    uniform_secret_lists(&mut value);
    // The path to the value that does not fit names the key, and so its line.
    let compose: docker_compose_types::Compose = match serde_path_to_error::deserialize(value) {
        Ok(c) => c,
        Err(e) => {
            let key = e.path().to_string();
            diags.push(ctx.error(
                &key,
                format!("`{key}`: {}", e.inner()),
                "write it as the Compose reference says: https://docs.docker.com/reference/compose-file/",
            ));
            return None;
        }
    };
    let declared = Declared::of(&compose, &configs, &inactive, vars, fleet_view);
    // For the whole fleet, a value written with a variable is each node's to judge.
    let mut value_diags = Diagnostics::default();
    let values = type_values(
        &ctx,
        &compose,
        &declared,
        &service_configs,
        &extras,
        &mut value_diags,
    );
    for d in value_diags.iter() {
        let within =
            |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}."));
        let of_a_node = per_node
            .iter()
            .any(|p| within(p, &d.key) || within(&d.key, p));
        if !of_a_node {
            diags.push(d.clone());
        }
    }
    (diags.len() == before).then(|| ComposeStack {
        file: paths.first().cloned().unwrap_or_default(),
        config_files: paths.to_vec(),
        compose,
        configs,
        service_configs,
        extras,
        values,
        inactive,
        positions,
        sources,
    })
}

/// Types every service's values ([`values::service_values`]); each one that does not fit
/// is reported at its key and line.
fn type_values(
    ctx: &Context,
    compose: &docker_compose_types::Compose,
    declared: &Declared,
    service_configs: &BTreeMap<String, Vec<FileMount>>,
    extras: &BTreeMap<String, ServiceExtras>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, ServiceValues> {
    let no_extras = ServiceExtras::default();
    let mut out = BTreeMap::new();
    for (name, service) in &compose.services.0 {
        let Some(service) = service else {
            diags.push(ctx.error(
                &format!("services.{name}"),
                format!("service `{name}` is empty"),
                "give it at least an `image:`",
            ));
            continue;
        };
        let (typed, invalid) = values::service_values(
            name,
            service,
            extras.get(name).unwrap_or(&no_extras),
            service_configs.get(name).map_or(&[], Vec::as_slice),
            declared,
        );
        for bad in invalid {
            diags.push(ctx.error(&bad.key, bad.message, bad.help));
        }
        out.insert(name.clone(), typed);
    }
    out
}

/// The files and key positions, for building diagnostics.
struct Context<'a> {
    sources: &'a [SourceFile],
    positions: &'a merge::Positions,
}

impl Context<'_> {
    /// A diagnostic at `key` (or the nearest enclosing key that has a position), in
    /// the file that wrote it.
    fn error(&self, key: &str, message: impl Into<String>, help: impl Into<String>) -> Diagnostic {
        self.locate(Diagnostic::new("", key, message).help(help))
    }

    /// `d` placed in the file that wrote its key, at the key (or the nearest enclosing
    /// key that has a position); in the project's compose file when none has.
    fn locate(&self, mut d: Diagnostic) -> Diagnostic {
        let mut path = d.key.clone();
        loop {
            if let Some(origin) = self.positions.get(&path)
                && let Some(source) = self.sources.get(origin.file)
            {
                let width = path.rsplit('.').next().map_or(1, |k| k.chars().count());
                d.file = source.path.clone();
                return d.at_position(source, origin.position, width);
            }
            match path.rsplit_once('.') {
                Some((parent, _)) => path = parent.to_string(),
                None => {
                    d.file = self
                        .sources
                        .first()
                        .map(|s| s.path.clone())
                        .unwrap_or_default();
                    return d;
                }
            }
        }
    }
}

fn yaml_error(source: &SourceFile, e: &serde_yaml::Error) -> Diagnostic {
    let d = Diagnostic::new(&source.path, "", format!("YAML: {e}")).help(
        "fix the YAML; the Compose reference is at https://docs.docker.com/reference/compose-file/",
    );
    match e.location() {
        Some(loc) => d.at_position(
            source,
            Position {
                line: loc.line(),
                column: loc.column(),
            },
            1,
        ),
        None => d,
    }
}

/// Where a node sits while scanning: inside a mapping (maybe after its key) or a sequence.
enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Records key positions and measures depth and alias expansion.
#[derive(Default)]
struct Scanner {
    stack: Vec<Frame>,
    positions: BTreeMap<String, Position>,
    /// Nodes counted with every alias expanded.
    expanded: usize,
    anchor_sizes: HashMap<usize, usize>,
    /// Anchored collections still open: (anchor id, `expanded` at their start, depth).
    open_anchors: Vec<(usize, usize, usize)>,
    too_deep: Option<Position>,
}

fn position(mark: &Marker) -> Position {
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Scanner {
    /// The path of the node starting now, recording its position; `None` for a mapping key.
    fn node_path(&mut self, ev: &Event, mark: &Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => match key {
                Some(k) => Some(join(path, k)),
                None => {
                    let name = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => "?".to_string(),
                    };
                    self.positions
                        .entry(join(path, &name))
                        .or_insert_with(|| position(mark));
                    *key = Some(name);
                    None
                }
            },
            Some(Frame::Seq { path, index }) => {
                let p = join(path, &index.to_string());
                *index += 1;
                self.positions
                    .entry(p.clone())
                    .or_insert_with(|| position(mark));
                Some(p)
            }
        }
    }

    /// A value finished: the enclosing mapping expects its next key.
    fn value_done(&mut self) {
        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
            *key = None;
        }
    }
}

impl MarkedEventReceiver for Scanner {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match &ev {
            Event::Scalar(..)
            | Event::Alias(_)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                self.expanded += 1;
                let Some(path) = self.node_path(&ev, &mark) else {
                    return;
                };
                match ev {
                    Event::Scalar(_, _, anchor, _) => {
                        if anchor > 0 {
                            self.anchor_sizes.insert(anchor, 1);
                        }
                        self.value_done();
                    }
                    Event::Alias(id) => {
                        self.expanded = self
                            .expanded
                            .saturating_add(self.anchor_sizes.get(&id).copied().unwrap_or(1));
                        self.value_done();
                    }
                    Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                        if anchor > 0 {
                            self.open_anchors
                                .push((anchor, self.expanded, self.stack.len()));
                        }
                        let frame = if matches!(ev, Event::MappingStart(..)) {
                            Frame::Map { path, key: None }
                        } else {
                            Frame::Seq { path, index: 0 }
                        };
                        self.stack.push(frame);
                        if self.stack.len() > MAX_DEPTH && self.too_deep.is_none() {
                            self.too_deep = Some(position(&mark));
                        }
                    }
                    _ => {}
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                if let Some(&(anchor, start, depth)) = self.open_anchors.last()
                    && depth == self.stack.len()
                {
                    self.anchor_sizes.insert(anchor, self.expanded - start);
                    self.open_anchors.pop();
                }
                self.value_done();
            }
            _ => {}
        }
    }
}

fn scan(source: &SourceFile, diags: &mut Diagnostics) -> Option<BTreeMap<String, Position>> {
    let mut text = std::borrow::Cow::Borrowed(source.text.as_str());
    let (scanner, loaded) = loop {
        let mut scanner = Scanner::default();
        let mut parser = Parser::new_from_str(&text);
        match parser.load(&mut scanner, false) {
            Err(e) if e.info() == "invalid indentation" => {
                match indent_flow_closer(&text, e.marker().line()) {
                    Some(fixed) => text = std::borrow::Cow::Owned(fixed),
                    None => break (scanner, Err(e)),
                }
            }
            result => break (scanner, result),
        }
    };
    if let Err(e) = loaded {
        diags.push(
            Diagnostic::new(&source.path, "", format!("YAML syntax: {}", e.info()))
                .at_position(source, position(e.marker()), 1)
                .help("fix the YAML syntax (indentation, quotes, `key: value`)"),
        );
        return None;
    }
    if let Some(pos) = scanner.too_deep {
        diags.push(
            Diagnostic::new(
                &source.path,
                "",
                format!("the compose file nests deeper than {MAX_DEPTH} levels"),
            )
            .at_position(source, pos, 1)
            .help("a Compose file never needs this depth; flatten it"),
        );
        return None;
    }
    if scanner.expanded > MAX_EXPANDED_NODES {
        diags.push(
            Diagnostic::new(
                &source.path,
                "",
                format!("YAML aliases expand the compose file to more than {MAX_EXPANDED_NODES} nodes"),
            )
            .help("use anchors and aliases (`&x`, `*x`) for shared blocks only, not to multiply content"),
        );
        return None;
    }
    Some(scanner.positions)
}

/// `text` with line `line` (1-based) indented like the line before it, when that line
/// only closes a flow collection (`]`, `}`, `],`): libyaml, PyYAML, Go's yaml and
/// docker-compose accept a closing bracket indented less than the items, yaml-rust2
/// does not. Inside a flow collection indentation carries no meaning, and no key moves,
/// so the positions found in the result are the file's own. `None` for any other line.
fn indent_flow_closer(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let index = line.checked_sub(1)?;
    let closer = lines.get(index)?;
    let closes = closer.trim().trim_end_matches(',').trim_end();
    if closes.is_empty() || !closes.chars().all(|c| matches!(c, ']' | '}')) {
        return None;
    }
    let before = lines[..index].iter().rev().find(|l| !l.trim().is_empty())?;
    let want = before.len() - before.trim_start().len();
    let have = closer.len() - closer.trim_start().len();
    if want <= have {
        return None;
    }
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
    out[index] = format!("{}{}", " ".repeat(want - have), closer);
    Some(out.join("\n"))
}

/// Resolves `<<:` merge keys, including those a merged block brings in itself
/// (`x-app: {<<: *base}` merged into a service): one pass of `apply_merge` leaves
/// those, so passes repeat until none is left (YAML merges nest only as deep as the
/// anchors, bounded by the depth limit).
fn merge_all(value: &mut Value) -> Result<(), serde_yaml::Error> {
    fn has_merge_key(value: &Value) -> bool {
        match value {
            Value::Mapping(map) => map
                .iter()
                .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
            Value::Sequence(items) => items.iter().any(has_merge_key),
            Value::Tagged(tagged) => has_merge_key(&tagged.value),
            _ => false,
        }
    }
    for _ in 0..MAX_DEPTH {
        value.apply_merge()?;
        if !has_merge_key(value) {
            break;
        }
    }
    Ok(())
}

fn key_str(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Refuses every key outside the subset, with a reason and a fix for each.
fn check_subset(ctx: &Context, top: &Mapping, diags: &mut Diagnostics) {
    for (key, value) in top {
        let key = key_str(key);
        if key.starts_with("x-") {
            continue;
        }
        match key.as_str() {
            "services" => check_services(ctx, value, diags),
            "secrets" | "configs" => check_file_sources(ctx, &key, value, diags),
            k if SUPPORTED_TOP_LEVEL_KEYS.contains(&k) => {}
            _ => diags.push(unsupported(ctx, &key, &key, SUPPORTED_TOP_LEVEL_KEYS)),
        }
    }
    if !top.contains_key("services") {
        diags.push(ctx.error(
            "",
            "the compose file has no `services`",
            "add `services:` with at least one service",
        ));
    }
}

fn unsupported(ctx: &Context, path: &str, key: &str, supported: &[&str]) -> Diagnostic {
    let help = match did_you_mean(key, supported.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!(
            "remove it; gitfleet honours: {} (see docs/fleet-toml.md, \"Compose subset\")",
            supported.join(", ")
        ),
    };
    ctx.error(path, format!("gitfleet does not honour `{path}`"), help)
}

fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_services(ctx: &Context, services: &Value, diags: &mut Diagnostics) {
    let Value::Mapping(services) = services else {
        diags.push(ctx.error(
            "services",
            "`services` must be a mapping of service names",
            "e.g. `services: {web: {image: registry.example.com/acme/web}}`",
        ));
        return;
    };
    if services.is_empty() {
        diags.push(ctx.error(
            "services",
            "`services` is empty",
            "add at least one service",
        ));
    }
    for (name, service) in services {
        let name = key_str(name);
        let path = format!("services.{name}");
        if !is_service_name(&name) {
            diags.push(ctx.error(
                &path,
                format!("`{name}` is not a valid service name"),
                "use letters, digits, `_`, `.` and `-`, starting with a letter or digit",
            ));
        }
        let Value::Mapping(service) = service else {
            diags.push(ctx.error(
                &path,
                format!("service `{name}` must be a mapping"),
                "give it at least `image:` (or pin it under [images] in fleet.toml)",
            ));
            continue;
        };
        for (key, value) in service {
            let key = key_str(key);
            let key_path = format!("{path}.{key}");
            if key.starts_with("x-") {
                continue;
            }
            if !SUPPORTED_SERVICE_KEYS.contains(&key.as_str()) {
                diags.push(unsupported(ctx, &key_path, &key, SUPPORTED_SERVICE_KEYS));
            } else if key == "deploy" {
                check_deploy(ctx, &key_path, value, diags);
            }
        }
    }
}

/// Only `deploy.resources.limits` means anything on a single engine; the rest is Swarm's.
fn check_deploy(ctx: &Context, path: &str, deploy: &Value, diags: &mut Diagnostics) {
    let mut allowed = |path: &str, value: &Value, keys: &[&str]| -> Vec<(String, Value)> {
        let Value::Mapping(map) = value else {
            diags.push(ctx.error(
                path,
                format!("`{path}` must be a mapping"),
                format!("allowed here: {}", keys.join(", ")),
            ));
            return Vec::new();
        };
        let mut inner = Vec::new();
        for (k, v) in map {
            let k = key_str(k);
            if keys.contains(&k.as_str()) {
                inner.push((format!("{path}.{k}"), v.clone()));
            } else {
                diags.push(unsupported(ctx, &format!("{path}.{k}"), &k, keys));
            }
        }
        inner
    };
    for (key, value) in allowed(path, deploy, SUPPORTED_DEPLOY) {
        if !key.ends_with(".resources") {
            continue;
        }
        for (inner, value) in allowed(&key, &value, &["limits", "reservations"]) {
            let keys = if inner.ends_with(".limits") {
                SUPPORTED_LIMITS
            } else {
                SUPPORTED_RESERVATIONS
            };
            allowed(&inner, &value, keys);
        }
    }
}

/// Top-level `secrets` and `configs` come from files in the repository, and secrets also
/// from a variable of the node's environment.
fn check_file_sources(ctx: &Context, section: &str, value: &Value, diags: &mut Diagnostics) {
    let Value::Mapping(entries) = value else {
        diags.push(ctx.error(
            section,
            format!("`{section}` must be a mapping"),
            format!("e.g. `{section}: {{db_password: {{file: ./db_password.txt}}}}`"),
        ));
        return;
    };
    for (name, entry) in entries {
        let name = key_str(name);
        let path = format!("{section}.{name}");
        let source = |key: &str| matches!(entry, Value::Mapping(m) if m.len() == 1 && matches!(m.get(key), Some(Value::String(_))));
        // A secret may also be a variable of the node's environment, as in Compose.
        let ok = source("file") || (section == "secrets" && source("environment"));
        if !ok {
            let sources = if section == "secrets" {
                "exactly `file: <path>` or `environment: <VARIABLE>`"
            } else {
                "exactly `file: <path>`"
            };
            diags.push(ctx.error(
                &path,
                format!("`{path}` must have {sources}"),
                format!("keep the file in the fleet repository next to the compose file: `{name}: {{file: ./{name}.txt}}`"),
            ));
        }
    }
}

/// Interpolates every string value (not keys), reporting each failure at its key.
fn interpolate_values(
    ctx: &Context,
    value: &mut Value,
    path: &str,
    vars: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) {
    match value {
        Value::String(s) => match interpolate(s, vars) {
            Ok(done) => *s = done,
            Err(e) => diags.push(ctx.error(
                path,
                format!("`{path}`: {e}"),
                "set the variable in the agent's environment, give it a default (`${VAR:-value}`), or write `$$` for a literal `$`",
            )),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_values(ctx, item, &join(path, &i.to_string()), vars, diags);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = key_str(k);
                interpolate_values(ctx, v, &join(path, &key), vars, diags);
            }
        }
        Value::Tagged(tagged) => interpolate_values(ctx, &mut tagged.value, path, vars, diags),
        _ => {}
    }
}

/// The dotted paths of the string values that use a variable (`$`), under `path`.
fn variable_paths(value: &Value, path: &str) -> Vec<String> {
    match value {
        Value::String(s) if s.contains('$') => vec![path.to_string()],
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, item)| variable_paths(item, &join(path, &i.to_string())))
            .collect(),
        Value::Mapping(map) => map
            .iter()
            .flat_map(|(k, v)| variable_paths(v, &join(path, &key_str(k))))
            .collect(),
        Value::Tagged(tagged) => variable_paths(&tagged.value, path),
        _ => Vec::new(),
    }
}

/// Removes the services Compose would not run: those with `profiles` none of which is
/// active (`COMPOSE_PROFILES`, comma-separated, `*` for all, read from the agent's
/// environment as Compose reads it), and those with `deploy.replicas: 0`. A container
/// of such a service that runs is removed on the next converge, as any service that
/// left the file.
fn drop_inactive(
    value: &mut Value,
    vars: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    let active: Vec<&str> = vars
        .get("COMPOSE_PROFILES")
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let Some(Value::Mapping(services)) = value.get_mut("services") else {
        return BTreeMap::new();
    };
    let mut dropped = BTreeMap::new();
    services.retain(|name, service| {
        let profiles: Vec<String> = service
            .get("profiles")
            .and_then(string_or_list)
            .unwrap_or_default();
        let enabled = profiles.is_empty()
            || active.contains(&"*")
            || profiles.iter().any(|p| active.contains(&p.as_str()));
        let replicas = service
            .get("deploy")
            .and_then(|d| d.get("replicas"))
            .and_then(whole_number);
        let runs = enabled && replicas != Some(0);
        if !runs {
            let image = service.get("image").and_then(Value::as_str);
            dropped.insert(key_str(name), image.map(str::to_string));
        }
        runs
    });
    for (_, service) in services.iter_mut() {
        if let Some(service) = service.as_mapping_mut() {
            service.remove("profiles");
        }
    }
    dropped
}

/// A bare `environment` entry (`- TZ`, `TZ:`) takes its value from the variables
/// (the agent's environment over `.env`), as Compose takes it from the shell and
/// `.env`; one that is not set there stays bare and is left out of the container.
fn resolve_bare_environment(value: &mut Value, vars: &BTreeMap<String, String>) {
    let Some(Value::Mapping(services)) = value.get_mut("services") else {
        return;
    };
    for service in services.values_mut() {
        match service.get_mut("environment") {
            Some(Value::Sequence(items)) => {
                for item in items.iter_mut() {
                    if let Value::String(key) = item
                        && !key.contains('=')
                        && let Some(v) = vars.get(key.as_str())
                    {
                        *item = Value::String(format!("{key}={v}"));
                    }
                }
            }
            Some(Value::Mapping(map)) => {
                for (key, v) in map.iter_mut() {
                    if v.is_null()
                        && let Some(set) = vars.get(&key_str(key))
                    {
                        *v = Value::String(set.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

/// A service that runs must not need one that does not (Compose refuses such a file
/// too): `depends_on` (unless `required: false`), `links`, `network_mode`, `pid` or
/// `ipc` `service:`.
fn check_needs_of_the_running(
    ctx: &Context,
    value: &Value,
    inactive: &BTreeMap<String, Option<String>>,
    diags: &mut Diagnostics,
) {
    let Some(Value::Mapping(services)) = value.get("services") else {
        return;
    };
    for (name, service) in services {
        let name = key_str(name);
        let mut needs: Vec<(&str, String)> = Vec::new();
        match service.get("depends_on") {
            Some(Value::Sequence(list)) => {
                needs.extend(
                    list.iter()
                        .filter_map(scalar_text)
                        .map(|d| ("depends_on", d)),
                );
            }
            Some(Value::Mapping(map)) => needs.extend(
                map.iter()
                    .filter(|(_, v)| v.get("required").and_then(Value::as_bool) != Some(false))
                    .map(|(k, _)| ("depends_on", key_str(k))),
            ),
            _ => {}
        }
        for link in service
            .get("links")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let Some(link) = scalar_text(link) {
                let target = link.split_once(':').map_or(link.as_str(), |(s, _)| s);
                needs.push(("links", target.to_string()));
            }
        }
        for key in ["network_mode", "pid", "ipc"] {
            if let Some(mode) = service.get(key).and_then(Value::as_str)
                && let Some(other) = mode.strip_prefix("service:")
            {
                needs.push((key, other.to_string()));
            }
        }
        for (key, needed) in needs.into_iter().filter(|(_, n)| inactive.contains_key(n)) {
            let path = format!("services.{name}.{key}");
            diags.push(ctx.error(
                &path,
                format!("`{name}` needs `{needed}`, which does not run on this node (its profiles are not active, or `deploy.replicas` is 0)"),
                format!("activate `{needed}`'s profile for this node (fleet.toml `profiles`), give `{name}` the same profiles, or write `required: false` under depends_on"),
            ));
        }
    }
}

/// Compose reads a value interpolation made text as the type its key takes
/// (`read_only: ${READONLY}` with `READONLY=false` is the boolean): the typed keys
/// real files fill from variables, written back as booleans and numbers.
fn coerce_scalars(value: &mut Value) {
    const BOOLEANS: &[&str] = &["read_only", "init", "tty", "stdin_open", "privileged"];
    fn coerce(v: &mut Value, to_bool: bool) {
        let Value::String(text) = v else { return };
        let typed = if to_bool {
            match text.as_str() {
                "true" | "True" | "TRUE" => Some(Value::Bool(true)),
                "false" | "False" | "FALSE" => Some(Value::Bool(false)),
                _ => None,
            }
        } else {
            text.trim()
                .parse::<i64>()
                .ok()
                .map(|n| Value::Number(n.into()))
        };
        if let Some(typed) = typed {
            *v = typed;
        }
    }
    // `enable_ipv6: ${ENABLE_IPV6:-true}` (mailcow).
    if let Some(Value::Mapping(networks)) = value.get_mut("networks") {
        for network in networks.values_mut().filter_map(Value::as_mapping_mut) {
            for key in ["enable_ipv6", "internal", "attachable"] {
                if let Some(v) = network.get_mut(key) {
                    coerce(v, true);
                }
            }
        }
    }
    let Some(Value::Mapping(services)) = value.get_mut("services") else {
        return;
    };
    for (_, service) in services.iter_mut() {
        let Some(service) = service.as_mapping_mut() else {
            continue;
        };
        for key in BOOLEANS {
            if let Some(v) = service.get_mut(*key) {
                coerce(v, true);
            }
        }
        if let Some(health) = service
            .get_mut("healthcheck")
            .and_then(Value::as_mapping_mut)
        {
            if let Some(v) = health.get_mut("retries") {
                coerce(v, false);
            }
            if let Some(v) = health.get_mut("disable") {
                coerce(v, true);
            }
        }
    }
}

/// Takes the keys of [`ServiceExtras`] out of each service, each checked where it is
/// written.
fn lift_extras(
    ctx: &Context,
    value: &mut Value,
    diags: &mut Diagnostics,
) -> BTreeMap<String, ServiceExtras> {
    let mut out = BTreeMap::new();
    let Some(Value::Mapping(services)) = value.get_mut("services") else {
        return out;
    };
    for (name, service) in services.iter_mut() {
        let name = key_str(name);
        let Some(service) = service.as_mapping_mut() else {
            continue;
        };
        let mut take = |key: &str| {
            service
                .remove(key)
                .map(|v| (format!("services.{name}.{key}"), v))
        };
        let mut extras = ServiceExtras::default();
        let mut wrong = |path: String, what: &str, help: &str| {
            diags.push(ctx.error(&path, format!("`{path}` must be {what}"), help));
        };
        if let Some((path, v)) = take("pids_limit") {
            match whole_number(&v) {
                Some(n) => extras.pids_limit = Some(n),
                None => wrong(
                    path,
                    "a whole number",
                    "e.g. `pids_limit: 200` (-1 for no limit)",
                ),
            }
        }
        if let Some((path, v)) = take("oom_score_adj") {
            match whole_number(&v).filter(|n| (-1000..=1000).contains(n)) {
                Some(n) => extras.oom_score_adj = Some(n),
                None => wrong(
                    path,
                    "a whole number from -1000 to 1000",
                    "e.g. `oom_score_adj: -500`",
                ),
            }
        }
        for (key, list) in [
            ("dns", &mut extras.dns),
            ("dns_search", &mut extras.dns_search),
        ] {
            if let Some((path, v)) = take(key) {
                match string_or_list(&v) {
                    Some(items) => *list = items,
                    None => wrong(
                        path,
                        "a string or a list of strings",
                        &format!("e.g. `{key}: [\"10.0.0.2\", \"10.0.0.3\"]`"),
                    ),
                }
            }
        }
        if let Some((path, v)) = take("platform") {
            match v.as_str() {
                // `${DOCKER_PLATFORM:-}`: empty means the engine's own, as in Compose.
                Some("") => {}
                Some(p) if is_platform(p) => extras.platform = Some(p.to_string()),
                _ => wrong(
                    path,
                    "`os/arch` or `os/arch/variant`",
                    "e.g. `platform: linux/amd64`",
                ),
            }
        }
        if let Some((path, v)) = take("env_file") {
            let entry = |v: &Value| match v {
                Value::String(p) => Some(EnvFile {
                    path: p.clone(),
                    required: true,
                }),
                Value::Mapping(m) => Some(EnvFile {
                    path: m.get("path")?.as_str()?.to_string(),
                    required: m.get("required").is_none_or(|r| r.as_bool() != Some(false)),
                }),
                _ => None,
            };
            let files = match &v {
                Value::Sequence(items) => items.iter().map(entry).collect(),
                other => entry(other).map(|e| vec![e]),
            };
            match files {
                Some(files) => extras.env_files = files,
                None => wrong(
                    path,
                    "a path, a list of paths, or a list of `{path, required}`",
                    "e.g. `env_file: [.env]` or `env_file: [{path: .env, required: false}]`",
                ),
            }
        }
        // Accepted, meaning nothing on a daemon that runs detached.
        take("attach");
        host::lift(ctx, &name, service, &mut extras, diags);
        if let Some(deploy) = service.get_mut("deploy").and_then(Value::as_mapping_mut) {
            lift_deploy(ctx, &name, deploy, &mut extras, diags);
        }
        if extras != ServiceExtras::default() {
            out.insert(name, extras);
        }
    }
    out
}

/// Takes what `docker compose` honours of `deploy` besides the limits out of it:
/// `mode` and `replicas` (one container per service), `restart_policy`, and the
/// reservations; drops what only Swarm acts on.
fn lift_deploy(
    ctx: &Context,
    name: &str,
    deploy: &mut Mapping,
    extras: &mut ServiceExtras,
    diags: &mut Diagnostics,
) {
    let path = format!("services.{name}.deploy");
    for swarm_only in [
        "labels",
        "update_config",
        "rollback_config",
        "placement",
        "endpoint_mode",
    ] {
        deploy.remove(swarm_only);
    }
    if let Some(mode) = deploy.remove("mode")
        && !matches!(mode.as_str(), Some("replicated" | "global"))
    {
        diags.push(ctx.error(
            &format!("{path}.mode"),
            format!("`{path}.mode` must be `replicated` or `global`"),
            "on one engine both mean one container; remove it",
        ));
    }
    if let Some(replicas) = deploy.remove("replicas")
        && whole_number(&replicas) != Some(1)
    {
        diags.push(ctx.error(
            &format!("{path}.replicas"),
            format!("`{path}.replicas` must be 1: gitfleet runs one container per service"),
            "remove it, or run several services (e.g. with YAML anchors) behind one name",
        ));
    }
    if let Some(policy) = deploy.remove("restart_policy") {
        let condition = policy
            .get("condition")
            .and_then(Value::as_str)
            .unwrap_or("any");
        let attempts = policy.get("max_attempts").and_then(whole_number);
        extras.deploy_restart = match (condition, attempts) {
            ("none", _) => Some("no".to_string()),
            ("any", _) => Some("always".to_string()),
            ("on-failure", Some(n)) if n > 0 => Some(format!("on-failure:{n}")),
            ("on-failure", _) => Some("on-failure".to_string()),
            (other, _) => {
                diags.push(ctx.error(
                    &format!("{path}.restart_policy.condition"),
                    format!(
                        "`{path}.restart_policy.condition` `{other}` is not none, on-failure or any"
                    ),
                    "e.g. `condition: on-failure`",
                ));
                None
            }
        };
    }
    let reservations = deploy
        .get_mut("resources")
        .and_then(Value::as_mapping_mut)
        .and_then(|r| r.remove("reservations"));
    let Some(Value::Mapping(reservations)) = reservations else {
        return;
    };
    extras.memory_reservation = reservations.get("memory").and_then(scalar_text);
    for (i, device) in reservations
        .get("devices")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let text_list = |key: &str| -> Vec<String> {
            device
                .get(key)
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(scalar_text)
                .collect()
        };
        let count = match device.get("count") {
            // Unset: every device, unless `device_ids` names them (Compose spec).
            None if device.get("device_ids").is_none() => Some(-1),
            None => None,
            Some(Value::String(all)) if all == "all" => Some(-1),
            Some(n) => match whole_number(n) {
                Some(n) => Some(n),
                None => {
                    diags.push(ctx.error(
                        &format!("{path}.resources.reservations.devices"),
                        format!("device {} of `{path}.resources.reservations.devices`: `count` must be a number or `all`", i + 1),
                        "e.g. `count: 1` or `count: all`",
                    ));
                    None
                }
            },
        };
        extras.device_requests.push(DeviceRequest {
            driver: device.get("driver").and_then(scalar_text),
            count,
            device_ids: text_list("device_ids"),
            capabilities: text_list("capabilities"),
            options: device
                .get("options")
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((key_str(k), scalar_text(v)?)))
                .collect(),
        });
    }
}

/// A whole number, written as one or as text (interpolation yields text).
fn whole_number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A scalar as text.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string, or a list of strings (numbers written as such).
fn string_or_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Sequence(items) => items.iter().map(scalar_text).collect(),
        other => scalar_text(other).map(|s| vec![s]),
    }
}

/// `os/arch` or `os/arch/variant`, each part lower-case letters, digits or `_`.
fn is_platform(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// Compose accepts numbers where docker-compose-types wants strings (`expose: [3306]`,
/// `user: 1000`, `cpus: 0.5`, `labels: {tier: 1}`): write those numbers as strings
/// before typing.
fn stringify_numbers(value: &mut Value) {
    fn stringify(v: &mut Value) {
        if let Value::Number(n) = v {
            *v = Value::String(n.to_string());
        }
    }
    let Some(Value::Mapping(services)) = value.get_mut("services") else {
        return;
    };
    for (_, service) in services.iter_mut() {
        let Some(service) = service.as_mapping_mut() else {
            continue;
        };
        for key in [
            "user",
            "stop_grace_period",
            "hostname",
            "working_dir",
            "container_name",
        ] {
            if let Some(v) = service.get_mut(key) {
                stringify(v);
            }
        }
        for key in [
            "expose",
            "ports",
            "command",
            "entrypoint",
            "cap_add",
            "cap_drop",
            "environment",
            "labels",
        ] {
            match service.get_mut(key) {
                Some(Value::Sequence(items)) => items.iter_mut().for_each(stringify),
                Some(Value::Mapping(map)) if key == "labels" => {
                    map.iter_mut().for_each(|(_, v)| stringify(v))
                }
                _ => {}
            }
        }
        let limits = service
            .get_mut("deploy")
            .and_then(|d| d.get_mut("resources"))
            .and_then(|r| r.get_mut("limits"))
            .and_then(Value::as_mapping_mut);
        for (_, v) in limits.into_iter().flat_map(|l| l.iter_mut()) {
            stringify(v);
        }
    }
}

/// A service's `secrets` may mix names and `{source, target}` entries, as Compose
/// allows; docker-compose-types takes one form per list, so names become entries.
fn uniform_secret_lists(value: &mut Value) {
    let Some(Value::Mapping(services)) = value.get_mut("services") else {
        return;
    };
    for (_, service) in services.iter_mut() {
        if let Some(Value::Sequence(items)) = service.get_mut("secrets")
            && items.iter().any(Value::is_mapping)
        {
            for item in items.iter_mut().filter(|i| i.is_string()) {
                let mut entry = Mapping::new();
                entry.insert("source".into(), item.clone());
                *item = Value::Mapping(entry);
            }
        }
    }
}

/// Takes `configs` out of the document (docker-compose-types cannot represent them).
fn lift_configs(
    ctx: &Context,
    value: &mut Value,
    diags: &mut Diagnostics,
) -> (BTreeMap<String, String>, BTreeMap<String, Vec<FileMount>>) {
    let mut configs = BTreeMap::new();
    let mut mounts = BTreeMap::new();
    let Value::Mapping(top) = value else {
        return (configs, mounts);
    };
    if let Some(Value::Mapping(entries)) = top.remove("configs") {
        for (name, entry) in entries {
            if let Some(Value::String(file)) = entry.get("file") {
                configs.insert(key_str(&name), file.clone());
            }
        }
    }
    let Some(Value::Mapping(services)) = top.get_mut("services") else {
        return (configs, mounts);
    };
    for (name, service) in services.iter_mut() {
        let name = key_str(name);
        let Some(list) = service.as_mapping_mut().and_then(|s| s.remove("configs")) else {
            continue;
        };
        let path = format!("services.{name}.configs");
        let Value::Sequence(items) = list else {
            diags.push(ctx.error(
                &path,
                format!("`{path}` must be a list"),
                "e.g. `configs: [app_config]`",
            ));
            continue;
        };
        let mut list = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mount = match item {
                Value::String(source) => Some(FileMount {
                    source: source.clone(),
                    target: None,
                    mode: None,
                }),
                Value::Mapping(m) => {
                    m.get("source")
                        .and_then(Value::as_str)
                        .map(|source| FileMount {
                            source: source.to_string(),
                            target: m.get("target").and_then(Value::as_str).map(str::to_string),
                            mode: m
                                .get("mode")
                                .and_then(Value::as_u64)
                                .and_then(|n| u32::try_from(n).ok()),
                        })
                }
                _ => None,
            };
            match mount {
                Some(m) if configs.contains_key(&m.source) => list.push(m),
                Some(m) => diags.push(ctx.error(
                    &format!("{path}.{i}"),
                    format!(
                        "config `{}` is not defined under top-level `configs`",
                        m.source
                    ),
                    format!(
                        "add `configs: {{{}: {{file: ./{}}}}}` at the top level",
                        m.source, m.source
                    ),
                )),
                None => diags.push(ctx.error(
                    &format!("{path}.{i}"),
                    format!("`{path}.{i}` must be a config name or {{source, target, mode}}"),
                    "e.g. `- {source: app_config, target: /etc/app.conf}`",
                )),
            }
        }
        mounts.insert(name, list);
    }
    (configs, mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn load_text(text: &str) -> (Option<ComposeStack>, Diagnostics) {
        let mut diags = Diagnostics::default();
        let vars = BTreeMap::from([("GITFLEET_NODE".to_string(), "eu-1".to_string())]);
        let stack = load(
            &SourceFile::new("stack/compose.yaml", text),
            &vars,
            &mut diags,
        );
        (stack, diags)
    }

    /// For the whole fleet (`status`), a value written with a per-node variable, and a
    /// secret each node has in its environment, are the nodes' to judge; a value that
    /// fits no node still refuses the release.
    #[test]
    fn the_fleet_view_leaves_per_node_values_to_the_nodes() {
        let read = |text: &str| {
            let source = SourceFile::new("stack/compose.yaml", text);
            let vars = BTreeMap::from([("GITFLEET_NODE".to_string(), "fleet".to_string())]);
            let mut diags = Diagnostics::default();
            let paths = [source.path.clone()];
            let stack = load_files(&OneFile(&source), &paths, &vars, true, &mut diags);
            (stack, diags)
        };
        let (stack, diags) = read(
            "services:\n  web:\n    image: x\n    ports: [\"127.0.0.1:${GITFLEET_NODE}:8080\"]\n    secrets: [pw]\nsecrets:\n  pw: {environment: NODE_PW}\n",
        );
        assert!(stack.is_some(), "{diags}");
        let (_, diags) = read("services:\n  web:\n    image: x\n    shm_size: lots\n");
        assert!(
            diags.to_string().contains("`services.web.shm_size`"),
            "{diags}"
        );
    }

    fn realistic() -> String {
        format!(
            r#"x-defaults: &defaults
  restart: unless-stopped
  init: true
services:
  web:
    <<: *defaults
    image: registry.example.com/acme/web@sha256:{D}
    ports: ["127.0.0.1:8080:80"]
    depends_on:
      api:
        condition: service_healthy
  api:
    <<: *defaults
    image: registry.example.com/acme/api
    environment:
      NODE: ${{GITFLEET_NODE}}
      LOG_LEVEL: ${{LOG_LEVEL:-info}}
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]
      interval: 5s
    depends_on: [db]
    configs:
      - source: app
        target: /etc/app.conf
    secrets: [db_password]
    deploy:
      resources:
        limits: {{cpus: "0.5", memory: 256M}}
  db:
    image: registry.example.com/acme/db
    volumes: ["data:/var/lib/db"]
volumes:
  data: {{}}
configs:
  app:
    file: ./app.conf
secrets:
  db_password:
    file: ./db_password.txt
"#
        )
    }

    #[test]
    fn loads_a_realistic_stack_with_positions_merge_and_interpolation() {
        let (stack, diags) = load_text(&realistic());
        assert!(diags.is_empty(), "{diags}");
        let stack = stack.unwrap();
        assert_eq!(stack.service_names(), ["api", "db", "web"]);
        assert_eq!(
            stack.position("services.api.image"),
            Some(Position {
                line: 14,
                column: 5
            })
        );
        let api = stack.compose.services.0["api"].as_ref().unwrap();
        assert_eq!(api.restart.as_deref(), Some("unless-stopped"));
        let env = format!("{:?}", api.environment);
        assert!(env.contains("eu-1") && env.contains("info"), "{env}");
        assert_eq!(stack.configs["app"], "./app.conf");
        assert_eq!(
            stack.service_configs["api"][0].target.as_deref(),
            Some("/etc/app.conf")
        );
    }

    #[test]
    fn what_published_files_write_loads_as_docker_compose_reads_it() {
        // A merge of a block that merges itself, a flow list closed less indented
        // than its items, values interpolation makes text, the long env_file syntax.
        let text = "x-base: &base\n  restart: always\nx-app: &app\n  <<: *base\n  init: true\nservices:\n  web:\n    <<: *app\n    image: x\n    command: [\n      sh, -c, \"true\"\n    ]\n    read_only: ${RO:-false}\n    healthcheck:\n      test: [CMD, \"true\"]\n      retries: ${RETRIES:-3}\n    env_file:\n      - path: optional.env\n        required: false\n      - web.env\n    deploy:\n      mode: replicated\n      replicas: 1\n      restart_policy: {condition: on-failure, max_attempts: 3}\n      placement: {constraints: [node.role==manager]}\n      resources:\n        reservations:\n          memory: 64m\n          devices: [{driver: nvidia, count: all, capabilities: [gpu]}]\n  debug:\n    image: x\n    profiles: [debug]\n  off:\n    image: x\n    deploy: {replicas: 0}\n";
        let (stack, diags) = load_text(text);
        let stack = stack.unwrap_or_else(|| panic!("{diags}"));
        assert_eq!(stack.service_names(), ["web"]);
        assert_eq!(stack.inactive.keys().collect::<Vec<_>>(), ["debug", "off"]);
        assert_eq!(stack.all_service_names(), ["debug", "off", "web"]);
        let web = stack.compose.services.0["web"].as_ref().unwrap();
        assert_eq!(web.restart.as_deref(), Some("always"));
        assert!(web.init && !web.read_only);
        assert_eq!(web.healthcheck.as_ref().map(|h| h.retries), Some(3));
        let extras = &stack.extras["web"];
        assert_eq!(
            extras.env_files,
            [
                EnvFile {
                    path: "optional.env".into(),
                    required: false
                },
                EnvFile {
                    path: "web.env".into(),
                    required: true
                },
            ]
        );
        assert_eq!(extras.deploy_restart.as_deref(), Some("on-failure:3"));
        assert_eq!(extras.memory_reservation.as_deref(), Some("64m"));
        assert_eq!(extras.device_requests[0].count, Some(-1));
        assert_eq!(extras.device_requests[0].capabilities, ["gpu"]);

        // COMPOSE_PROFILES, as Compose reads it, runs the `debug` profile too.
        let mut diags = Diagnostics::default();
        let vars = BTreeMap::from([("COMPOSE_PROFILES".to_string(), "debug".to_string())]);
        let stack = load(&SourceFile::new("c.yaml", text), &vars, &mut diags).unwrap();
        assert_eq!(stack.service_names(), ["debug", "web"]);

        let (_, diags) = load_text(
            "services:\n  web:\n    image: x\n    depends_on: [debug]\n  debug:\n    image: x\n    profiles: [debug]\n",
        );
        assert!(
            diags
                .to_string()
                .contains("`web` needs `debug`, which does not run on this node"),
            "{diags}"
        );
        let (_, diags) = load_text("services:\n  web:\n    image: x\n    deploy: {replicas: 3}\n");
        assert!(
            diags.to_string().contains("one container per service"),
            "{diags}"
        );
    }

    #[test]
    fn every_unsupported_key_is_reported_with_its_line_and_a_fix() {
        let text = "services:\n  web:\n    image: x\n    scale: 2\n    enviroment: {A: b}\n    deploy:\n      replica: 3\nprofiles: []\n";
        let (stack, diags) = load_text(text);
        assert!(stack.is_none());
        let all: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        let text = all.join("\n");
        assert_eq!(diags.len(), 4, "{text}");
        assert!(
            text.contains("`services.web.scale`") && text.contains("compose.yaml:4:5"),
            "{text}"
        );
        assert!(text.contains("did you mean `environment`?"), "{text}");
        assert!(text.contains("`services.web.deploy.replica`"), "{text}");
        assert!(
            text.contains("gitfleet does not honour `profiles`"),
            "{text}"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let (_, diags) = load_text("services:\n  web:\n    image: [unclosed\n");
        let d = diags.iter().next().unwrap();
        assert!(d.message.starts_with("YAML"), "{d}");
        assert!(d.location.is_some(), "{d}");
    }

    #[test]
    fn interpolation_errors_name_the_key() {
        let (_, diags) = load_text(
            "services:\n  web:\n    image: x\n    environment:\n      PW: ${DB_PASSWORD:?set the password}\n",
        );
        let d = diags.iter().next().unwrap().to_string();
        assert!(
            d.contains("services.web.environment.PW")
                && d.contains("set the password")
                && d.contains(":5:"),
            "{d}"
        );
    }

    #[test]
    fn hostile_documents_are_refused_fast() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            bomb.push_str(&format!(
                "{}: &{} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
                (b'a' + i) as char,
                (b'a' + i) as char,
                p = (b'a' + i - 1) as char
            ));
        }
        bomb.push_str("services: {web: {image: x}}\n");
        let started = std::time::Instant::now();
        let (_, diags) = load_text(&bomb);
        assert!(
            diags.iter().any(|d| d.message.contains("aliases expand")),
            "{diags}"
        );
        assert!(started.elapsed().as_secs() < 2);
        let deep = format!("services: {}{}", "[".repeat(100), "]".repeat(100));
        let (_, diags) = load_text(&deep);
        assert!(
            diags.iter().any(|d| d.message.contains("nests deeper")),
            "{diags}"
        );
        let (_, diags) = load_text("- just\n- a list\n");
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("must be a mapping")),
            "{diags}"
        );
        let (_, diags) =
            load_text("services:\n  web:\n    image: x\nsecrets:\n  pw:\n    external: true\n");
        assert!(
            diags.iter().any(|d| d
                .message
                .contains("`file: <path>` or `environment: <VARIABLE>`")),
            "{diags}"
        );
    }
}
