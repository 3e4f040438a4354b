//! `extends`: a service built on another one, of the same file or of another
//! (compose-spec `05-services.md#extends`): the base, its own `extends` resolved
//! first, with the service merged over it by the override rules of [`super::merge`].

use serde_yaml::Value;

use super::super::diagnostics::Diagnostics;
use super::super::{parent_dir, stack_path};
use super::key_str;
use super::merge::{Doc, Loader, Merger, Positions, forget, graft, rebase_paths};

/// The services being resolved, as (file, service), outermost first: one met again is
/// a cycle.
type Chain = Vec<(String, String)>;

/// Resolves the `extends` of every service of `doc` (read from `file`); `None` when a
/// problem was reported.
pub(super) fn resolve(
    loader: &mut Loader,
    file: &str,
    mut doc: Doc,
    diags: &mut Diagnostics,
) -> Option<Doc> {
    let before = diags.len();
    for name in service_names(&doc) {
        resolve_service(loader, file, &mut doc, &name, &mut Chain::new(), diags);
    }
    (diags.len() == before).then_some(doc)
}

fn service_names(doc: &Doc) -> Vec<String> {
    doc.value
        .get("services")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .map(|(k, _)| key_str(k))
        .collect()
}

/// The base a service's `extends` names: (file, when another; service).
fn reference(extends: &Value) -> Option<(Option<String>, String)> {
    match extends {
        Value::String(service) => Some((None, service.clone())),
        Value::Mapping(m)
            if m.keys()
                .all(|k| matches!(k.as_str(), Some("service" | "file"))) =>
        {
            let service = m.get("service")?.as_str()?.to_string();
            match m.get("file") {
                None => Some((None, service)),
                Some(Value::String(file)) => Some((Some(file.clone()), service)),
                Some(_) => None,
            }
        }
        _ => None,
    }
}

/// Resolves `name`'s `extends` in `doc` (of `file`) in place; `false` when it cannot.
fn resolve_service(
    loader: &mut Loader,
    file: &str,
    doc: &mut Doc,
    name: &str,
    chain: &mut Chain,
    diags: &mut Diagnostics,
) -> bool {
    let at = format!("services.{name}");
    let key = format!("{at}.extends");
    let Some(extends) = doc
        .value
        .get("services")
        .and_then(|s| s.get(name))
        .and_then(|s| s.get("extends"))
        .cloned()
    else {
        return true;
    };
    let report = |loader: &Loader,
                  doc: &Doc,
                  diags: &mut Diagnostics,
                  key: &str,
                  message: String,
                  help: String| {
        diags.push(loader.context(&doc.positions).error(key, message, help));
    };
    let Some((written_file, base_name)) = reference(&extends) else {
        report(
            loader,
            doc,
            diags,
            &key,
            format!("`{key}` must be a service name or `{{service: <name>, file: <path>}}`"),
            "e.g. `extends: base` or `extends: {file: common.yml, service: base}`".into(),
        );
        return false;
    };
    let here = (file.to_string(), name.to_string());
    if chain.contains(&here) {
        let cycle: Vec<String> = chain
            .iter()
            .chain([&here])
            .map(|(f, s)| format!("{s} ({f})"))
            .collect();
        report(
            loader,
            doc,
            diags,
            &key,
            format!("`extends` goes round in a cycle: {}", cycle.join(" → ")),
            "make one of these services stand on its own, without `extends`".into(),
        );
        return false;
    }
    chain.push(here);
    let base = match &written_file {
        None => base_of(loader, file, doc, &base_name, chain, diags)
            .map_err(|missing| (missing, file.to_string())),
        Some(written) => match stack_path(file, written) {
            Err(why) => {
                report(
                    loader,
                    doc,
                    diags,
                    &format!("{key}.file"),
                    format!("`{key}.file`: `{written}` {why}"),
                    format!(
                        "keep the file under `{}/` and name it relative to {file}",
                        parent_dir(file)
                    ),
                );
                chain.pop();
                return false;
            }
            Ok(path) => match other_file(loader, &path, diags) {
                Err(why) => {
                    report(
                        loader,
                        doc,
                        diags,
                        &format!("{key}.file"),
                        format!("`{key}.file`: {why}"),
                        format!(
                            "add {path} to the fleet repository, or fix the path (relative to {file})"
                        ),
                    );
                    chain.pop();
                    return false;
                }
                Ok(None) => {
                    chain.pop();
                    return false;
                }
                Ok(Some(mut other)) => {
                    let base = base_of(loader, &path, &mut other, &base_name, chain, diags)
                        .map_err(|missing| (missing, path.clone()));
                    loader.extends_cache.insert(path, other);
                    base
                }
            },
        },
    };
    chain.pop();
    let base = match base {
        Ok(Some(base)) => base,
        Ok(None) => return false,
        Err((_, in_file)) => {
            report(
                loader,
                doc,
                diags,
                &key,
                format!("`{key}`: service `{base_name}` is not defined in {in_file}"),
                format!(
                    "define `{base_name}` under `services:` of {in_file}, or name the file that does: `extends: {{file: <path>, service: {base_name}}}`"
                ),
            );
            return false;
        }
    };
    // The base's keys move to this service's path; the service is merged over them.
    let Some(service) = doc.value.get_mut("services").and_then(|s| s.get_mut(name)) else {
        return false;
    };
    let mut current = std::mem::take(service);
    if let Value::Mapping(m) = &mut current {
        m.remove("extends");
    }
    let mut own = Positions::new();
    graft(&mut own, &doc.positions, &at, &at);
    forget(&mut own, &key);
    forget(&mut doc.positions, &at);
    let (mut merged, base_at) = base;
    graft(&mut doc.positions, &merged.positions, &base_at, &at);
    let mut merger = Merger {
        out: &mut doc.positions,
        from: own.clone(),
        errors: Vec::new(),
    };
    merger.value(&mut merged.value, current, &at, &at);
    let errors = std::mem::take(&mut merger.errors);
    if let Some(origin) = own.get(&at) {
        doc.positions.insert(at.clone(), *origin);
    }
    if let Some(slot) = doc.value.get_mut("services").and_then(|s| s.get_mut(name)) {
        *slot = std::mem::take(&mut merged.value);
    }
    for (key, message) in errors {
        report(
            loader,
            doc,
            diags,
            &key,
            message,
            "write the key as the base service does (a mapping over a mapping, a list over a list)"
                .into(),
        );
    }
    true
}

/// Service `name` of `doc` (of `file`), its own `extends` resolved, with its positions
/// and the path they are rooted at. `Err` when the service is not there; `Ok(None)`
/// when resolving it failed (reported).
fn base_of(
    loader: &mut Loader,
    file: &str,
    doc: &mut Doc,
    name: &str,
    chain: &mut Chain,
    diags: &mut Diagnostics,
) -> Result<Option<(Doc, String)>, ()> {
    if doc
        .value
        .get("services")
        .and_then(|s| s.get(name))
        .is_none()
    {
        return Err(());
    }
    if !resolve_service(loader, file, doc, name, chain, diags) {
        return Ok(None);
    }
    let at = format!("services.{name}");
    let value = doc
        .value
        .get("services")
        .and_then(|s| s.get(name))
        .cloned()
        .unwrap_or_default();
    let mut positions = Positions::new();
    graft(&mut positions, &doc.positions, &at, &at);
    Ok(Some((Doc { value, positions }, at)))
}

/// Another compose file named by `extends`, read once; its relative paths made the
/// project directory's.
fn other_file(
    loader: &mut Loader,
    path: &str,
    diags: &mut Diagnostics,
) -> Result<Option<Doc>, String> {
    if let Some(doc) = loader.extends_cache.remove(path) {
        return Ok(Some(doc));
    }
    let mut doc = loader.read(path, diags)?;
    if let Some(doc) = &mut doc {
        rebase_paths(doc, parent_dir(path), &loader.project_dir.clone());
    }
    Ok(doc)
}
