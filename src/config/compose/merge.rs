//! Several Compose documents made into one model, as `docker compose` does, before
//! interpolation and typing: override files merged in order (compose-spec `13-merge.md`,
//! the rules of compose-go's `override` package), `extends` ([`super::extends`]) and
//! top-level `include` ([`super::include`]).
//!
//! Every file goes through the same limits and key scanner as a single compose file,
//! and every key of the result remembers the file and line it came from ([`Origin`]),
//! so a diagnostic about a key an override or a base service brought names that file.

use std::collections::{BTreeMap, HashMap};

use serde_yaml::{Mapping, Value};

use super::super::diagnostics::{Diagnostic, Diagnostics, Position, SourceFile};
use super::super::{MAX_FILE_BYTES, RepoFiles, parent_dir};
use super::{Context, join, key_str, merge_all, scalar_text, scan, yaml_error};

/// Where a key of the merged model is written: which file (an index into the model's
/// sources) and where in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: usize,
    pub position: Position,
}

/// Key positions by dotted path (`services.web.image`).
pub type Positions = BTreeMap<String, Origin>;

/// A compose document: its value and where each of its keys is written, by path from
/// the document's root.
#[derive(Clone, Debug)]
pub(super) struct Doc {
    pub value: Value,
    pub positions: Positions,
}

/// The merged model of every compose file, with the files it was read from.
pub(super) struct Model {
    pub value: Value,
    pub positions: Positions,
    pub sources: Vec<SourceFile>,
}

/// Reads compose files through [`RepoFiles`], keeping each one's text for diagnostics.
pub(super) struct Loader<'a> {
    pub files: &'a dyn RepoFiles,
    pub vars: &'a BTreeMap<String, String>,
    /// The project directory: the first compose file's, where relative paths resolve.
    pub project_dir: String,
    pub sources: Vec<SourceFile>,
    /// Files read for `extends`, unresolved, by path: read once however often named.
    pub extends_cache: HashMap<String, Doc>,
}

impl Loader<'_> {
    /// Reads, scans and parses one file. `Err` says why it could not be read, for the
    /// caller to report at the key naming it; `Ok(None)` when its content was refused
    /// (reported, in that file).
    pub fn read(&mut self, path: &str, diags: &mut Diagnostics) -> Result<Option<Doc>, String> {
        let Some(text) = self.files.read(path)? else {
            return Err(format!("`{path}` does not exist in the fleet repository"));
        };
        let source = SourceFile::new(path, text);
        let doc = parse(&source, self.sources.len(), diags);
        self.sources.push(source);
        Ok(doc)
    }

    /// A diagnostic builder over `positions` (of a document this loader read).
    pub fn context<'c>(&'c self, positions: &'c Positions) -> Context<'c> {
        Context {
            sources: &self.sources,
            positions,
        }
    }
}

/// One file as a document: the hostile-input limits, key positions, `<<:` merge keys.
fn parse(source: &SourceFile, file: usize, diags: &mut Diagnostics) -> Option<Doc> {
    let refuse =
        |message: String, help: &str| Diagnostic::new(&source.path, "", message).help(help);
    if source.text.len() > MAX_FILE_BYTES {
        diags.push(refuse(
            format!(
                "the compose file is {} bytes; the limit is {MAX_FILE_BYTES}",
                source.text.len()
            ),
            "split out what the nodes do not need",
        ));
        return None;
    }
    let positions: Positions = scan(source, diags)?
        .into_iter()
        .map(|(key, position)| (key, Origin { file, position }))
        .collect();
    let mut value: Value = match serde_yaml::from_str(&source.text) {
        Ok(v) => v,
        Err(e) => {
            diags.push(yaml_error(source, &e));
            return None;
        }
    };
    if let Err(e) = merge_all(&mut value) {
        diags.push(refuse(
            format!("YAML merge keys (`<<`): {e}"),
            "merge only mappings, e.g. `<<: *defaults`",
        ));
        return None;
    }
    if !value.is_mapping() {
        diags.push(refuse(
            "the compose file must be a mapping with `services`".into(),
            "start with `services:` and one entry per service",
        ));
        return None;
    }
    Some(Doc { value, positions })
}

/// Reads `paths` (the project's compose file, then its overrides), resolves each
/// one's `extends` and `include`, and merges them in order.
pub(super) fn load_model(
    files: &dyn RepoFiles,
    paths: &[String],
    vars: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> Option<Model> {
    let before = diags.len();
    let mut loader = Loader {
        files,
        vars,
        project_dir: paths.first().map_or("", |p| parent_dir(p)).to_string(),
        sources: Vec::new(),
        extends_cache: HashMap::new(),
    };
    let mut merged: Option<Doc> = None;
    for path in paths {
        let doc = match loader.read(path, diags) {
            Ok(Some(doc)) => doc,
            Ok(None) => continue,
            Err(why) => {
                diags.push(
                    Diagnostic::new(path, "", format!("the compose file {why}")).help(format!(
                        "create {path}, or fix `fleet.compose` in fleet.toml"
                    )),
                );
                continue;
            }
        };
        let Some(doc) = super::extends::resolve(&mut loader, path, doc, diags)
            .and_then(|doc| super::include::resolve(&mut loader, path, doc, &[], diags))
        else {
            continue;
        };
        match &mut merged {
            None => merged = Some(doc),
            Some(base) => {
                let errors = merge_doc(base, doc, "", "");
                let ctx = loader.context(&base.positions);
                for (key, message) in errors {
                    diags.push(ctx.error(&key, message, OVERRIDE_HELP));
                }
            }
        }
    }
    let mut doc = merged?;
    untag(&mut doc.value);
    (diags.len() == before).then_some(Model {
        value: doc.value,
        positions: doc.positions,
        sources: loader.sources,
    })
}

pub(super) const OVERRIDE_HELP: &str = "an override must give a key the same kind of value (a mapping over a mapping, a list over a list), or replace it with `!override`";

/// Merges `over` (its value at `from`, its positions rooted as written) into `base`
/// at `at`; returns the keys that cannot merge, with why.
pub(super) fn merge_doc(base: &mut Doc, over: Doc, at: &str, from: &str) -> Vec<(String, String)> {
    let mut merger = Merger {
        out: &mut base.positions,
        from: over.positions,
        errors: Vec::new(),
    };
    let target = if at.is_empty() {
        Some(&mut base.value)
    } else {
        lookup_mut(&mut base.value, at)
    };
    if let Some(target) = target {
        merger.value(target, over.value, at, from);
    }
    merger.errors
}

/// The value at a dotted path of mapping keys.
fn lookup_mut<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    path.split('.').try_fold(value, |v, key| v.get_mut(key))
}

/// Removes `path` and everything under it from `positions`.
pub(super) fn forget(positions: &mut Positions, path: &str) {
    let under: Vec<String> = subtree(positions, path).map(|(k, _)| k.clone()).collect();
    for key in under {
        positions.remove(&key);
    }
}

/// Copies the positions at and under `from` in `source` to `to` in `positions`.
pub(super) fn graft(positions: &mut Positions, source: &Positions, from: &str, to: &str) {
    for (key, origin) in subtree(source, from) {
        let rest = &key[from.len()..];
        let moved = if from.is_empty() {
            join(to, key)
        } else {
            format!("{to}{rest}")
        };
        positions.insert(moved, *origin);
    }
}

/// The entries at and under `path` (every entry for the root).
fn subtree<'p>(
    positions: &'p Positions,
    path: &'p str,
) -> impl Iterator<Item = (&'p String, &'p Origin)> {
    positions
        .range(path.to_string()..)
        .take_while(move |(k, _)| k.starts_with(path))
        .filter(move |(k, _)| {
            path.is_empty() || k.len() == path.len() || k[path.len()..].starts_with('.')
        })
}

/// How a key merges (compose-go `override.mergeSpecials` and `EnforceUnicity`).
#[derive(Clone, Copy)]
enum Rule {
    /// Mappings key by key, sequences appended, scalars replaced.
    Default,
    /// The override replaces the value (`command`, `entrypoint`, `healthcheck.test`).
    Replace,
    /// `KEY=value` lists or mappings, merged by key (`environment`, `labels`).
    ByName,
    /// Lists whose items are unique by a key (`ports`, `volumes` by target, `dns`):
    /// an item with a key already present replaces it in place, others are appended.
    Unique(fn(&Value) -> Option<String>),
    /// A list of names or a mapping by name (`depends_on`, `networks`), merged as a
    /// mapping; a listed name becomes `default`.
    Named(fn() -> Value),
    /// `logging`: options merge only when the driver stays the same.
    Logging,
    /// `build: ./dir` is `build: {context: ./dir}`.
    Build,
}

fn rule(path: &str) -> Rule {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.first() != Some(&"services") || parts.len() < 3 {
        return Rule::Default;
    }
    match parts[2..].join(".").as_str() {
        "command" | "entrypoint" | "healthcheck.test" => Rule::Replace,
        "environment" | "labels" | "sysctls" | "annotations" | "deploy.labels" | "build.args"
        | "build.labels" => Rule::ByName,
        "ports" => Rule::Unique(port_key),
        "volumes" => Rule::Unique(volume_target),
        // A device, `host[:container[:permissions]]`, is keyed as a volume is.
        "devices" => Rule::Unique(volume_target),
        "secrets" => Rule::Unique(|v| mount_target(v, "/run/secrets")),
        "configs" => Rule::Unique(|v| mount_target(v, "")),
        "env_file" => Rule::Unique(env_file_path),
        "expose" | "cap_add" | "cap_drop" | "dns" | "dns_opt" | "dns_search" | "links"
        | "tmpfs" | "profiles" | "extra_hosts" => Rule::Unique(name_before_equals),
        "depends_on" => Rule::Named(|| {
            let mut m = Mapping::new();
            m.insert("condition".into(), "service_started".into());
            m.insert("required".into(), true.into());
            Value::Mapping(m)
        }),
        "networks" => Rule::Named(|| Value::Null),
        "logging" => Rule::Logging,
        "build" => Rule::Build,
        key if parts.len() == 4 && key.starts_with("ulimits.") => Rule::Replace,
        key if parts.len() == 5 && key.starts_with("networks.") && key.ends_with(".aliases") => {
            Rule::Unique(name_before_equals)
        }
        _ => Rule::Default,
    }
}

/// The YAML tags Compose gives meaning in an override.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// `!reset`: the key is removed.
    Reset,
    /// `!override`: the value replaces the key's, bypassing the merge rules.
    Override,
}

fn merge_tag(value: &Value) -> Option<Tag> {
    let Value::Tagged(t) = value else { return None };
    match t.tag.to_string().trim_start_matches('!') {
        "reset" => Some(Tag::Reset),
        "override" => Some(Tag::Override),
        _ => None,
    }
}

fn untagged(value: Value) -> Value {
    match value {
        Value::Tagged(t) if merge_tag(&Value::Tagged(t.clone())).is_some() => t.value,
        other => other,
    }
}

/// Drops the `!reset`/`!override` tags left in the result (in the first file they
/// mean their value).
fn untag(value: &mut Value) {
    if merge_tag(value).is_some() {
        *value = untagged(std::mem::take(value));
    }
    match value {
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| untag(v)),
        Value::Sequence(items) => items.iter_mut().for_each(untag),
        _ => {}
    }
}

/// Merges one document's values into another's, moving key positions along.
pub(super) struct Merger<'p> {
    /// The result's positions.
    pub out: &'p mut Positions,
    /// The overriding document's.
    pub from: Positions,
    /// Keys that cannot merge, with why.
    pub errors: Vec<(String, String)>,
}

impl Merger<'_> {
    /// `over` replaces what is at `at`.
    fn replace(&mut self, base: &mut Value, over: Value, at: &str, from: &str) {
        forget(self.out, at);
        graft(self.out, &self.from, from, at);
        *base = untagged(over);
    }

    /// Merges `over` (written at `from` in its document) into `base` (at `at`).
    pub fn value(&mut self, base: &mut Value, over: Value, at: &str, from: &str) {
        if merge_tag(&over) == Some(Tag::Override) {
            return self.replace(base, over, at, from);
        }
        let over = untagged(over);
        if over.is_null() {
            return;
        }
        match rule(at) {
            Rule::Replace => self.replace(base, over, at, from),
            Rule::ByName if base.is_mapping() && over.is_mapping() => {
                self.mapping(base, over, at, from);
            }
            Rule::ByName => self.unique(base, over, at, from, name_before_equals),
            Rule::Unique(key) => self.unique(base, over, at, from, key),
            Rule::Named(default) => {
                named_to_mapping(base, default, self.out, at);
                let mut over = over;
                named_to_mapping(&mut over, default, &mut self.from, from);
                self.mapping(base, over, at, from);
            }
            Rule::Logging => {
                let same_driver = match (base.get("driver"), over.get("driver")) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if same_driver {
                    self.mapping(base, over, at, from);
                } else {
                    self.replace(base, over, at, from);
                }
            }
            Rule::Build => {
                let mut over = over;
                build_as_mapping(base);
                build_as_mapping(&mut over);
                self.mapping(base, over, at, from);
            }
            Rule::Default => match (&mut *base, over) {
                (Value::Mapping(_), over @ Value::Mapping(_)) => {
                    self.mapping(base, over, at, from);
                }
                (Value::Sequence(items), Value::Sequence(more)) => {
                    let start = items.len();
                    for (i, item) in more.into_iter().enumerate() {
                        let (here, there) = (index(at, start + i), index(from, i));
                        graft(self.out, &self.from, &there, &here);
                        items.push(untagged(item));
                    }
                }
                (Value::Mapping(_) | Value::Sequence(_), over) => {
                    let kind = kind_of(base);
                    // Pointed at where the override writes it.
                    if let Some(origin) = self.from.get(from) {
                        self.out.insert(at.to_string(), *origin);
                    }
                    self.errors.push((
                        at.to_string(),
                        format!(
                            "`{at}` is {kind} in the file it is first written in; an override cannot make it {}",
                            kind_of(&over)
                        ),
                    ));
                }
                (_, over) => self.replace(base, over, at, from),
            },
        }
    }

    /// Mappings key by key: missing keys are added, present ones merged.
    fn mapping(&mut self, base: &mut Value, over: Value, at: &str, from: &str) {
        let (Value::Mapping(map), Value::Mapping(more)) = (base, over) else {
            return;
        };
        for (key, value) in more {
            let name = key_str(&key);
            let (here, there) = (join(at, &name), join(from, &name));
            if merge_tag(&value) == Some(Tag::Reset) {
                forget(self.out, &here);
                map.remove(&key);
                continue;
            }
            match map.get_mut(&key) {
                Some(existing) => self.value(existing, value, &here, &there),
                None => {
                    graft(self.out, &self.from, &there, &here);
                    let mut value = value;
                    untag(&mut value);
                    map.insert(key, value);
                }
            }
        }
    }

    /// Lists whose items are unique by `key` (a string is a list of one, a `KEY: value`
    /// mapping a list of `KEY=value`): an override's item replaces the one with its
    /// key, in place; the others are appended.
    fn unique(&mut self, base: &mut Value, over: Value, at: &str, from: &str, key: KeyOf) {
        let own = self.out.get(at).copied();
        let mut items: Vec<Value> = Vec::new();
        let mut keys: Vec<Option<String>> = Vec::new();
        let mut moved = Positions::new();
        let lists = [
            (as_items(std::mem::take(base), at), &*self.out),
            (as_items(over, from), &self.from),
        ];
        for (list, positions) in lists {
            for (item, written_at) in list {
                let k = key(&item);
                let known = k
                    .as_ref()
                    .and_then(|k| keys.iter().position(|x| x.as_ref() == Some(k)));
                let i = match known {
                    Some(i) => {
                        forget(&mut moved, &index(at, i));
                        items[i] = item;
                        i
                    }
                    None => {
                        items.push(item);
                        keys.push(k);
                        items.len() - 1
                    }
                };
                graft(&mut moved, positions, &written_at, &index(at, i));
            }
        }
        forget(self.out, at);
        self.out.extend(moved);
        // The list's own key stays where it was first written.
        if let Some(own) = own {
            self.out.insert(at.to_string(), own);
        }
        *base = Value::Sequence(items);
    }
}

/// The key that makes an item of a list unique.
type KeyOf = fn(&Value) -> Option<String>;

fn index(path: &str, i: usize) -> String {
    join(path, &i.to_string())
}

/// A list's items with the path each is written at: a string is one item, a
/// `KEY: value` mapping gives `KEY=value` items (`KEY` alone for a null value).
fn as_items(value: Value, at: &str) -> Vec<(Value, String)> {
    match value {
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| (untagged(item), index(at, i)))
            .collect(),
        Value::Mapping(map) => map
            .into_iter()
            .map(|(k, v)| {
                let name = key_str(&k);
                let item = match scalar_text(&v) {
                    Some(text) => format!("{name}={text}"),
                    None => name.clone(),
                };
                (Value::String(item), join(at, &name))
            })
            .collect(),
        Value::Null => Vec::new(),
        other => vec![(other, at.to_string())],
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Mapping(_) => "a mapping",
        Value::Sequence(_) => "a list",
        _ => "a single value",
    }
}

/// `build: ./dir` as `build: {context: ./dir}`.
fn build_as_mapping(value: &mut Value) {
    if let Value::String(dir) = value {
        let mut m = Mapping::new();
        m.insert("context".into(), Value::String(std::mem::take(dir)));
        *value = Value::Mapping(m);
    }
}

/// `[a, b]` as `{a: default, b: default}`, the positions of `at.0` moved to `at.a`.
fn named_to_mapping(
    value: &mut Value,
    default: fn() -> Value,
    positions: &mut Positions,
    at: &str,
) {
    let Value::Sequence(items) = value else {
        return;
    };
    let mut map = Mapping::new();
    for (i, item) in items.iter().enumerate() {
        let Some(name) = scalar_text(item) else {
            continue;
        };
        if let Some(origin) = positions.remove(&index(at, i)) {
            positions.insert(join(at, &name), origin);
        }
        map.insert(Value::String(name), default());
    }
    *value = Value::Mapping(map);
}

/// `KEY` of `KEY=value` (the whole text when there is no `=`).
fn name_before_equals(item: &Value) -> Option<String> {
    let text = scalar_text(item)?;
    Some(
        text.split_once('=')
            .map_or(text.clone(), |(k, _)| k.to_string()),
    )
}

/// A port's identity: the short syntax as written, the long one as
/// `host_ip:published:target/protocol`.
fn port_key(item: &Value) -> Option<String> {
    match item {
        Value::Mapping(m) => {
            let text = |k: &str, default: &str| {
                m.get(k)
                    .and_then(scalar_text)
                    .unwrap_or_else(|| default.to_string())
            };
            Some(format!(
                "{}:{}:{}/{}",
                text("host_ip", "0.0.0.0"),
                text("published", ""),
                text("target", ""),
                text("protocol", "tcp")
            ))
        }
        other => scalar_text(other),
    }
}

/// A mount's target: `source:target[:mode]` or `target` alone, or `target:` long.
fn volume_target(item: &Value) -> Option<String> {
    match item {
        Value::Mapping(m) => m.get("target").and_then(scalar_text),
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(parts.get(1).unwrap_or(&parts[0]).to_string())
        }
        _ => None,
    }
}

/// A secret's or config's target (by default `<dir>/<source>`).
fn mount_target(item: &Value, dir: &str) -> Option<String> {
    match item {
        Value::Mapping(m) => match m.get("target").and_then(scalar_text) {
            Some(target) => Some(target),
            None => Some(format!("{dir}/{}", m.get("source").and_then(scalar_text)?)),
        },
        other => Some(format!("{dir}/{}", scalar_text(other)?)),
    }
}

fn env_file_path(item: &Value) -> Option<String> {
    match item {
        Value::Mapping(m) => m.get("path").and_then(scalar_text),
        other => scalar_text(other),
    }
}

/// Makes the relative paths of `doc`, written relative to the repository directory
/// `dir`, relative to the project directory instead (a file of another directory,
/// brought in by `extends` or `include`, names its files from where it is).
pub(super) fn rebase_paths(doc: &mut Doc, dir: &str, project_dir: &str) {
    let prefix = dir
        .strip_prefix(project_dir)
        .unwrap_or(dir)
        .trim_start_matches('/');
    if prefix.is_empty() {
        return;
    }
    let Value::Mapping(top) = &mut doc.value else {
        return;
    };
    for section in ["secrets", "configs"] {
        for (_, entry) in top
            .get_mut(section)
            .and_then(Value::as_mapping_mut)
            .into_iter()
            .flatten()
        {
            if let Some(Value::String(file)) = entry.get_mut("file") {
                *file = rebase(prefix, file);
            }
        }
    }
    let services = top.get_mut("services").and_then(Value::as_mapping_mut);
    for (_, service) in services.into_iter().flatten() {
        match service.get_mut("env_file") {
            Some(Value::String(file)) => *file = rebase(prefix, file),
            Some(Value::Sequence(files)) => {
                for file in files {
                    match file {
                        Value::String(file) => *file = rebase(prefix, file),
                        Value::Mapping(m) => {
                            if let Some(Value::String(file)) = m.get_mut("path") {
                                *file = rebase(prefix, file);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let volumes = service.get_mut("volumes").and_then(Value::as_sequence_mut);
        for volume in volumes.into_iter().flatten() {
            match volume {
                Value::String(text) if text.starts_with('.') && text.contains(':') => {
                    let (source, rest) = text.split_once(':').unwrap_or((text.as_str(), ""));
                    let moved = rebase(prefix, source);
                    *text = if rest.is_empty() {
                        moved
                    } else {
                        format!("{moved}:{rest}")
                    };
                }
                Value::Mapping(m) if m.get("type").and_then(Value::as_str) == Some("bind") => {
                    if let Some(Value::String(source)) = m.get_mut("source") {
                        *source = rebase(prefix, source);
                    }
                }
                _ => {}
            }
        }
    }
}

/// `path`, relative to the directory `prefix` (under the project directory), made
/// relative to the project directory. Host paths and `${...}` are left as written; a
/// path that leaves the project directory keeps its `..`, for the file checks to refuse.
fn rebase(prefix: &str, path: &str) -> String {
    if path.starts_with(['/', '~', '$']) {
        return path.to_string();
    }
    let mut parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    let mut up = 0;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    up += 1;
                }
            }
            p => parts.push(p),
        }
    }
    format!("./{}{}", "../".repeat(up), parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::super::{ComposeStack, load_files};
    use super::*;

    struct Files(BTreeMap<&'static str, &'static str>);

    impl RepoFiles for Files {
        fn read(&self, path: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(path).map(|t| t.to_string()))
        }
        fn list(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(self.0.keys().map(|k| k.to_string()).collect())
        }
    }

    fn load(
        files: &[(&'static str, &'static str)],
        paths: &[&str],
    ) -> (Option<ComposeStack>, Diagnostics) {
        let mut diags = Diagnostics::default();
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let stack = load_files(
            &Files(files.iter().copied().collect()),
            &paths,
            &BTreeMap::new(),
            false,
            &mut diags,
        );
        (stack, diags)
    }

    #[test]
    fn keys_an_override_brings_point_at_the_override() {
        let files = [
            (
                "s/a.yaml",
                "services:\n  web:\n    image: x\n    ports: [\"80:80\"]\n    environment: {A: \"1\"}\n",
            ),
            (
                "s/b.yaml",
                "services:\n  web:\n    ports: [\"80:80\", \"81:81\"]\n    environment: {A: !reset null}\n    scale: 2\n",
            ),
        ];
        let (_, diags) = load(&files, &["s/a.yaml", "s/b.yaml"]);
        let text = diags.to_string();
        assert!(
            text.contains("s/b.yaml:5:5 (key `services.web.scale`)"),
            "{text}"
        );
        let files = [
            files[0],
            (
                "s/b.yaml",
                "services:\n  web:\n    ports: [\"80:80\", \"81:81\"]\n    environment: {A: !reset null}\n",
            ),
        ];
        let (stack, diags) = load(&files, &["s/a.yaml", "s/b.yaml"]);
        let stack = stack.unwrap_or_else(|| panic!("{diags}"));
        let web = stack.compose.services.0["web"].as_ref().unwrap();
        assert_eq!(
            format!("{:?}", web.ports).matches("80:80").count(),
            1,
            "{:?}",
            web.ports
        );
        assert!(format!("{:?}", web.ports).contains("81:81"));
        assert!(
            !format!("{:?}", web.environment).contains('A'),
            "{:?}",
            web.environment
        );
        assert_eq!(
            stack.position("services.web.ports.1").map(|p| p.line),
            Some(3)
        );
        assert_eq!(stack.config_files, ["s/a.yaml", "s/b.yaml"]);
    }

    #[test]
    fn an_included_file_brings_its_services_and_paths_from_its_directory() {
        let files = [
            (
                "s/compose.yaml",
                "include: [db/compose.yaml]\nservices:\n  web:\n    image: x\n    depends_on: [db]\n",
            ),
            (
                "s/db/compose.yaml",
                "services:\n  db:\n    image: y\n    volumes: [\"./data:/data\"]\n    env_file: db.env\n",
            ),
            ("s/db/db.env", "A=1\n"),
        ];
        let (stack, diags) = load(&files, &["s/compose.yaml"]);
        let stack = stack.unwrap_or_else(|| panic!("{diags}"));
        assert_eq!(stack.service_names(), ["db", "web"]);
        let db = stack.compose.services.0["db"].as_ref().unwrap();
        assert!(
            format!("{:?}", db.volumes).contains("./db/data:/data"),
            "{:?}",
            db.volumes
        );
        assert_eq!(stack.extras["db"].env_files[0].path, "./db/db.env");
        let d = stack.diagnostic("services.db.image", "here".into());
        assert_eq!(d.file, "s/db/compose.yaml");
    }

    #[test]
    fn rebased_paths_stay_relative_to_the_project() {
        assert_eq!(rebase("db", "./data"), "./db/data");
        assert_eq!(rebase("db", "../x"), "./x");
        assert_eq!(rebase("", "../x"), "./../x");
        assert_eq!(rebase("db", "/abs"), "/abs");
    }
}
