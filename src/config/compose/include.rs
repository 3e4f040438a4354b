//! Top-level `include` (compose-spec `14-include.md`): other compose files, each
//! loaded as its own application (its own project directory for relative paths, its
//! own `.env` for variables the node does not set), whose services, networks,
//! volumes, secrets and configs join the model. A service defined twice is an error,
//! as in Compose.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::super::diagnostics::Diagnostics;
use super::super::dotenv;
use super::super::interpolate::interpolate;
use super::super::{parent_dir, stack_path};
use super::merge::{Doc, Loader, forget, graft, merge_doc, rebase_paths};
use super::{interpolate_values, join, key_str, string_or_list};

/// The sections an included file contributes.
const SECTIONS: &[&str] = &["services", "networks", "volumes", "secrets", "configs"];

/// One `include` entry, as written.
struct Entry {
    key: String,
    paths: Vec<(String, String)>,
    project_directory: Option<String>,
    env_files: Option<Vec<String>>,
}

fn entries(include: &Value) -> Result<Vec<Entry>, (String, String)> {
    let Value::Sequence(items) = include else {
        return Err((
            "include".into(),
            "`include` must be a list of paths or of `{path, project_directory, env_file}`".into(),
        ));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("include.{i}");
        let wrong = |what: &str| (key.clone(), format!("`{key}` {what}"));
        let entry = match item {
            Value::String(path) => Entry {
                paths: vec![(path.clone(), key.clone())],
                key: key.clone(),
                project_directory: None,
                env_files: None,
            },
            Value::Mapping(m) => {
                if let Some(other) = m
                    .keys()
                    .map(key_str)
                    .find(|k| !matches!(k.as_str(), "path" | "project_directory" | "env_file"))
                {
                    return Err((
                        join(&key, &other),
                        format!(
                            "`{key}.{other}` is not an `include` key (path, project_directory, env_file)"
                        ),
                    ));
                }
                let paths = match m.get("path") {
                    Some(Value::String(p)) => vec![(p.clone(), format!("{key}.path"))],
                    Some(Value::Sequence(list)) => list
                        .iter()
                        .enumerate()
                        .map(|(j, p)| {
                            p.as_str()
                                .map(|p| (p.to_string(), format!("{key}.path.{j}")))
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            wrong("has a `path` list with something other than paths")
                        })?,
                    _ => return Err(wrong("needs `path`: a compose file, or a list of them")),
                };
                if paths.is_empty() {
                    return Err(wrong("needs `path`: a compose file, or a list of them"));
                }
                let project_directory = match m.get("project_directory") {
                    None => None,
                    Some(Value::String(d)) => Some(d.clone()),
                    Some(_) => return Err(wrong("has a `project_directory` that is not a path")),
                };
                let env_files = match m.get("env_file") {
                    None => None,
                    Some(v) => Some(string_or_list(v).ok_or_else(|| {
                        wrong("has an `env_file` that is not a path or a list of paths")
                    })?),
                };
                Entry {
                    key: key.clone(),
                    paths,
                    project_directory,
                    env_files,
                }
            }
            _ => {
                return Err(wrong(
                    "must be a path or `{path, project_directory, env_file}`",
                ));
            }
        };
        out.push(entry);
    }
    Ok(out)
}

const HELP: &str =
    "e.g. `include: [db/compose.yaml]` or `include: [{path: db/compose.yaml, env_file: db/.env}]`";

/// Brings the files `doc` (read from `file`) includes into it; `chain` holds the files
/// including this one, for cycles. `None` when a problem was reported.
pub(super) fn resolve(
    loader: &mut Loader,
    file: &str,
    mut doc: Doc,
    chain: &[String],
    diags: &mut Diagnostics,
) -> Option<Doc> {
    let Some(include) = doc.value.as_mapping_mut().and_then(|m| m.remove("include")) else {
        return Some(doc);
    };
    let before = diags.len();
    let list = match entries(&include) {
        Ok(list) => list,
        Err((key, message)) => {
            diags.push(loader.context(&doc.positions).error(&key, message, HELP));
            return None;
        }
    };
    let mut chain = chain.to_vec();
    chain.push(file.to_string());
    for entry in list {
        if let Some(included) = load_entry(loader, file, &doc, &entry, &chain, diags) {
            import(loader, &mut doc, included, diags);
        }
    }
    forget(&mut doc.positions, "include");
    (diags.len() == before).then_some(doc)
}

/// The files of one entry, merged in order, their variables interpolated when the
/// entry brings its own (`env_file`, or a `.env` in its project directory).
fn load_entry(
    loader: &mut Loader,
    file: &str,
    doc: &Doc,
    entry: &Entry,
    chain: &[String],
    diags: &mut Diagnostics,
) -> Option<Doc> {
    let at = |loader: &Loader, key: &str, message: String, help: String| {
        Box::new(loader.context(&doc.positions).error(key, message, help))
    };
    let keep_inside = format!(
        "keep included files under `{}/` and name them relative to {file}",
        parent_dir(file)
    );
    let resolve_path = |loader: &Loader, written: &str, key: &str| {
        let written = interpolate(written, loader.vars).map_err(|e| {
            at(
                loader,
                key,
                format!("`{key}`: {e}"),
                "set the variable, or give it a default (`${VAR:-value}`)".into(),
            )
        })?;
        stack_path(file, &written).map_err(|why| {
            at(
                loader,
                key,
                format!("`{key}`: `{written}` {why}"),
                keep_inside.clone(),
            )
        })
    };
    let mut project_dir = None;
    let mut merged: Option<Doc> = None;
    for (written, key) in &entry.paths {
        let path = match resolve_path(loader, written, key) {
            Ok(path) => path,
            Err(d) => {
                diags.push(*d);
                return None;
            }
        };
        if chain.contains(&path) {
            let cycle: Vec<&str> = chain
                .iter()
                .map(String::as_str)
                .chain([path.as_str()])
                .collect();
            diags.push(*at(
                loader,
                key,
                format!("`include` goes round in a cycle: {}", cycle.join(" → ")),
                "remove one of these includes".into(),
            ));
            return None;
        }
        let dir = match (&project_dir, &entry.project_directory) {
            (Some(dir), _) => dir,
            (None, Some(written)) => {
                match resolve_path(loader, written, &format!("{}.project_directory", entry.key)) {
                    Ok(dir) => project_dir.insert(dir),
                    Err(d) => {
                        diags.push(*d);
                        return None;
                    }
                }
            }
            (None, None) => project_dir.insert(parent_dir(&path).to_string()),
        }
        .clone();
        let mut included = match loader.read(&path, diags) {
            Ok(Some(d)) => d,
            Ok(None) => return None,
            Err(why) => {
                diags.push(*at(
                    loader,
                    key,
                    format!("`{key}`: {why}"),
                    format!(
                        "add {path} to the fleet repository, or fix the path (relative to {file})"
                    ),
                ));
                return None;
            }
        };
        rebase_paths(&mut included, &dir, &loader.project_dir.clone());
        let included = super::extends::resolve(loader, &path, included, diags)?;
        let included = resolve(loader, &path, included, chain, diags)?;
        match &mut merged {
            None => merged = Some(included),
            Some(base) => {
                for (key, message) in merge_doc(base, included, "", "") {
                    diags.push(loader.context(&base.positions).error(
                        &key,
                        message,
                        super::merge::OVERRIDE_HELP,
                    ));
                }
            }
        }
    }
    let mut merged = merged?;
    let env = own_variables(
        loader,
        file,
        doc,
        entry,
        project_dir.as_deref().unwrap_or(""),
        diags,
    )?;
    if !env.is_empty() {
        let mut vars = env;
        vars.extend(loader.vars.clone());
        let ctx = loader.context(&merged.positions);
        interpolate_values(&ctx, &mut merged.value, "", &vars, diags);
        // Interpolated here with the entry's variables: the model's own pass must
        // leave the result as it is.
        escape_dollars(&mut merged.value);
    }
    Some(merged)
}

/// The variables an entry's env files define that the node does not (the node's
/// environment and the project's `.env` win, as Compose's local project does).
fn own_variables(
    loader: &Loader,
    file: &str,
    doc: &Doc,
    entry: &Entry,
    project_dir: &str,
    diags: &mut Diagnostics,
) -> Option<BTreeMap<String, String>> {
    let key = format!("{}.env_file", entry.key);
    let (paths, required) = match &entry.env_files {
        Some(written) => {
            let mut paths = Vec::new();
            for w in written {
                match stack_path(file, w) {
                    Ok(p) => paths.push(p),
                    Err(why) => {
                        diags.push(loader.context(&doc.positions).error(
                            &key,
                            format!("`{key}`: `{w}` {why}"),
                            format!("keep env files under `{}/`", parent_dir(file)),
                        ));
                        return None;
                    }
                }
            }
            (paths, true)
        }
        None if project_dir == loader.project_dir => (Vec::new(), false),
        None => (
            vec![
                join(project_dir, ".env")
                    .trim_start_matches('/')
                    .to_string(),
            ],
            false,
        ),
    };
    let mut vars = BTreeMap::new();
    for path in paths {
        match loader.files.read(&path) {
            Ok(Some(text)) => vars.extend(dotenv::parse(&text, loader.vars)),
            Ok(None) if !required => {}
            Ok(None) => {
                diags.push(loader.context(&doc.positions).error(
                    &key,
                    format!("`{key}`: `{path}` does not exist in the fleet repository"),
                    "add it, or remove it from `env_file`".to_string(),
                ));
                return None;
            }
            Err(why) => {
                diags.push(loader.context(&doc.positions).error(
                    &key,
                    format!("`{key}`: {why}"),
                    "make it a readable UTF-8 file".to_string(),
                ));
                return None;
            }
        }
    }
    vars.retain(|name, _| !loader.vars.contains_key(name));
    Some(vars)
}

fn escape_dollars(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        Value::Sequence(items) => items.iter_mut().for_each(escape_dollars),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| escape_dollars(v)),
        Value::Tagged(t) => escape_dollars(&mut t.value),
        _ => {}
    }
}

/// Adds the included sections to `doc`. A service both have is an error; for other
/// resources the including file's definition is kept.
fn import(loader: &Loader, doc: &mut Doc, included: Doc, diags: &mut Diagnostics) {
    let Value::Mapping(mut from) = included.value else {
        return;
    };
    let Value::Mapping(top) = &mut doc.value else {
        return;
    };
    for section in SECTIONS {
        let Some(Value::Mapping(entries)) = from.remove(*section) else {
            continue;
        };
        let target = top
            .entry((*section).into())
            .or_insert_with(|| Value::Mapping(Default::default()));
        if target.is_null() {
            *target = Value::Mapping(Default::default());
        }
        let Value::Mapping(target) = target else {
            continue;
        };
        for (name, value) in entries {
            let path = format!("{section}.{}", key_str(&name));
            if !target.contains_key(&name) {
                graft(&mut doc.positions, &included.positions, &path, &path);
                target.insert(name, value);
            } else if *section == "services" {
                let other = doc
                    .positions
                    .get(&path)
                    .and_then(|o| loader.sources.get(o.file))
                    .map_or("the including file", |s| s.path.as_str());
                let service = key_str(&name);
                diags.push(loader.context(&included.positions).error(
                    &path,
                    format!("service `{service}` is defined twice: here and in {other}"),
                    format!("rename one of them, or keep `{service}` in one file only (Compose refuses a service an include redefines)"),
                ));
            }
        }
    }
}
