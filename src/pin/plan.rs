//! fleet.toml as `pin` reads and rewrites it, through `toml_edit` so that comments, order
//! and layout survive: the `[images]` entries with their lines, the change to each, the
//! diff and the commit message. Pure.

use std::collections::BTreeMap;

use toml_edit::{Document, DocumentMut, Formatted, Item, Value};

/// One `[images]` entry: `web = "ref"` or `web = { image = "ref", follow = "semver:^2" }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub service: String,
    pub image: String,
    pub follow: Option<String>,
    /// 1-based line of the entry, for messages.
    pub line: usize,
}

/// What fleet.toml says that `pin` needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinInputs {
    pub entries: Vec<Entry>,
    /// `[registries]`: host → mirrors, tried in order.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// `fleet.compose`: the compose files, whose unpinned images `pin` also pins.
    pub compose: Vec<String>,
}

/// Reads `text` (the file `path`); errors name the file, the line and the key.
pub fn read_inputs(path: &str, text: &str) -> Result<PinInputs, String> {
    let doc = Document::parse(text).map_err(|e| format!("{path}: {e}"))?;
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map_or(0, |s| text[..s.start].matches('\n').count() + 1)
    };
    let mut inputs = PinInputs::default();
    if let Some(images) = doc.get("images").and_then(Item::as_table_like) {
        for (service, item) in images.iter() {
            let line = line_of(
                item.span()
                    .or_else(|| images.key(service).and_then(|k| k.span())),
            );
            let bad = |what: &str| {
                format!(
                    "{path}:{line}: `images.{service}` {what}; write {service} = \"<image>:<tag>\" or {service} = {{ image = \"<image>:<tag>\", follow = \"semver:^2\" }}"
                )
            };
            let (image, follow) = match (item.as_str(), item.as_table_like()) {
                (Some(image), _) => (image.to_string(), None),
                (None, Some(t)) => {
                    let image = t
                        .get("image")
                        .and_then(Item::as_str)
                        .ok_or_else(|| bad("has no string `image`"))?;
                    let follow = match t.get("follow") {
                        None => None,
                        Some(f) => Some(
                            f.as_str()
                                .ok_or_else(|| bad("has a `follow` that is not a string"))?
                                .to_string(),
                        ),
                    };
                    (image.to_string(), follow)
                }
                _ => return Err(bad("is neither a string nor a table")),
            };
            inputs.entries.push(Entry {
                service: service.to_string(),
                image,
                follow,
                line,
            });
        }
    }
    if let Some(registries) = doc.get("registries").and_then(Item::as_table_like) {
        for (host, item) in registries.iter() {
            let mirrors = item
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            inputs.mirrors.insert(host.to_string(), mirrors);
        }
    }
    match doc.get("fleet").and_then(|f| f.get("compose")) {
        Some(c) if c.is_str() => inputs
            .compose
            .push(c.as_str().unwrap_or_default().to_string()),
        Some(c) => inputs.compose.extend(
            c.as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string)),
        ),
        None => {}
    }
    Ok(inputs)
}

/// The new reference of one service; `added` for a compose image not yet in `[images]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub service: String,
    pub old: Option<String>,
    pub new: String,
    pub old_tag: Option<String>,
    pub new_tag: Option<String>,
    pub digest: String,
    pub multi_arch: bool,
}

/// `text` with every change applied, all else byte for byte as it was.
pub fn rewrite(text: &str, changes: &[Change]) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    for change in changes {
        let images = doc
            .entry("images")
            .or_insert_with(toml_edit::table)
            .as_table_like_mut()
            .ok_or("`images` is not a table")?;
        let slot = match images.get_mut(&change.service) {
            None => {
                images.insert(&change.service, toml_edit::value(change.new.clone()));
                continue;
            }
            Some(item) if item.is_str() => item.as_value_mut(),
            Some(item) => item
                .as_table_like_mut()
                .and_then(|t| t.get_mut("image"))
                .and_then(Item::as_value_mut),
        };
        let slot =
            slot.ok_or_else(|| format!("`images.{}` has no image to rewrite", change.service))?;
        let decor = slot.decor().clone();
        *slot = Value::String(Formatted::new(change.new.clone()));
        *slot.decor_mut() = decor;
    }
    Ok(doc.to_string())
}

/// A unified diff of the rewrite, as `git diff` shows it.
pub fn diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// One line of a change for people: `web: 2.3.1 → 2.3.4 sha256:… (multi-arch index)`.
pub fn describe(change: &Change) -> String {
    let tag = |t: &Option<String>| t.clone().unwrap_or_else(|| "(no tag)".to_string());
    let what = match (&change.old, change.old_tag == change.new_tag) {
        (None, _) => format!("{} added from the compose file", change.new),
        (Some(_), true) if change.old.as_deref().is_some_and(|o| !o.contains('@')) => {
            format!("{} pinned", tag(&change.new_tag))
        }
        (Some(_), true) => format!("{} moved to a new digest", tag(&change.new_tag)),
        (Some(_), false) => format!("{} → {}", tag(&change.old_tag), tag(&change.new_tag)),
    };
    let arch = if change.multi_arch {
        " (multi-arch: the index digest, which every node's platform resolves)"
    } else {
        ""
    };
    format!("{}: {what} {}{arch}", change.service, change.digest)
}

/// The commit message proposing `changes`: a subject, then one line per image.
pub fn commit_message(changes: &[Change]) -> String {
    let subject: Vec<String> = changes
        .iter()
        .map(|c| match (&c.old_tag, &c.new_tag) {
            (Some(old), Some(new)) if old != new => format!("{} {old} → {new}", c.service),
            _ => c.service.clone(),
        })
        .collect();
    let mut message = format!("pin: {}\n\n", subject.join(", "));
    for change in changes {
        message.push_str(&format!("- {}\n", describe(change)));
    }
    message.push_str("\nProposed by `gitfleet pin`.\n");
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    const FLEET: &str = r#"version = 1 # the format

[fleet]
name = "shop"
compose = "stack/compose.yaml"

# what runs
[images]
web = "reg.example.com/web:2.3.1@sha256:1111111111111111111111111111111111111111111111111111111111111111"  # front
api = { image = "reg.example.com/api:1.0.0", follow = "semver:^1" } # the API

[registries]
"reg.example.com" = ["mirror.example.net"]
"#;

    fn change(service: &str, old: &str, new: &str, old_tag: &str, new_tag: &str) -> Change {
        Change {
            service: service.into(),
            old: Some(old.into()),
            new: new.into(),
            old_tag: Some(old_tag.into()),
            new_tag: Some(new_tag.into()),
            digest: D2.into(),
            multi_arch: false,
        }
    }

    #[test]
    fn reads_both_forms_with_their_lines() {
        let inputs = read_inputs("fleet.toml", FLEET).unwrap();
        assert_eq!(inputs.entries.len(), 2);
        assert_eq!(inputs.entries[0].service, "web");
        assert_eq!(inputs.entries[0].line, 9);
        assert_eq!(inputs.entries[1].follow.as_deref(), Some("semver:^1"));
        assert_eq!(inputs.entries[1].line, 10);
        assert_eq!(
            inputs.mirrors["reg.example.com"],
            vec!["mirror.example.net"]
        );
        assert_eq!(inputs.compose, vec!["stack/compose.yaml"]);
    }

    #[test]
    fn a_bad_entry_names_file_line_and_key() {
        let e = read_inputs("fleet.toml", "[images]\n\nweb = 3\n").unwrap_err();
        assert!(e.starts_with("fleet.toml:3: `images.web`"), "{e}");
    }

    #[test]
    fn rewrite_keeps_comments_and_layout() {
        let web_old = format!("reg.example.com/web:2.3.1@{D1}");
        let web_new = format!("reg.example.com/web:2.3.2@{D2}");
        let api_new = format!("reg.example.com/api:1.2.0@{D2}");
        let out = rewrite(
            FLEET,
            &[
                change("web", &web_old, &web_new, "2.3.1", "2.3.2"),
                change(
                    "api",
                    "reg.example.com/api:1.0.0",
                    &api_new,
                    "1.0.0",
                    "1.2.0",
                ),
            ],
        )
        .unwrap();
        let expected = FLEET
            .replace(&web_old, &web_new)
            .replace("\"reg.example.com/api:1.0.0\"", &format!("\"{api_new}\""));
        assert_eq!(out, expected);
        let d = diff("fleet.toml", FLEET, &out);
        assert!(
            d.contains("--- a/fleet.toml") && d.contains(&format!("+web = \"{web_new}\"  # front")),
            "{d}"
        );
    }

    #[test]
    fn additions_join_the_images_table() {
        let mut add = change("db", "", &format!("postgres:16@{D2}"), "16", "16");
        add.old = None;
        let out = rewrite(FLEET, &[add]).unwrap();
        assert!(
            out.contains(&format!("db = \"postgres:16@{D2}\"\n\n[registries]")),
            "{out}"
        );
        let out = rewrite("version = 1\n", &[change("x", "a", "b:1", "1", "1")]).unwrap();
        assert_eq!(out, "version = 1\n\n[images]\nx = \"b:1\"\n");
    }

    #[test]
    fn the_commit_message_lists_old_and_new_tags_and_digests() {
        let mut c = change("web", "w:1.0.0", &format!("w:1.1.0@{D2}"), "1.0.0", "1.1.0");
        c.multi_arch = true;
        let m = commit_message(&[
            c,
            change("api", &format!("a:2@{D1}"), &format!("a:2@{D2}"), "2", "2"),
        ]);
        assert!(m.starts_with("pin: web 1.0.0 → 1.1.0, api\n\n"), "{m}");
        assert!(
            m.contains(&format!("- web: 1.0.0 → 1.1.0 {D2} (multi-arch")),
            "{m}"
        );
        assert!(
            m.contains(&format!("- api: 2 moved to a new digest {D2}")),
            "{m}"
        );
    }
}
