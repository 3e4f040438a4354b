//! Published-style Compose stacks (with `build:` replaced by an image) pass validation
//! and translate into engine specs: the subset covers what real stacks use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gitfleet::config::compose;
use gitfleet::config::diagnostics::{Diagnostics, SourceFile};
use gitfleet::config::fleet::{ImageSet, PinnedImage};
use gitfleet::config::{DirFiles, RepoFiles};
use gitfleet::engine::spec::{Sources, project_spec, start_order};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose")
}

#[test]
fn published_stacks_pass_check_and_translate() {
    let files = DirFiles(fixtures());
    let stacks: Vec<String> = files
        .list("")
        .unwrap()
        .into_iter()
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    assert!(stacks.len() >= 10, "{stacks:?}");
    let mut failures = Vec::new();
    for file in &stacks {
        let text = files.read(file).unwrap().unwrap();
        let mut diags = Diagnostics::default();
        let Some(stack) = compose::load(
            &SourceFile::new(file.as_str(), text),
            &BTreeMap::new(),
            &mut diags,
        ) else {
            failures.push(format!("{file}:\n{diags}"));
            continue;
        };
        let digest = "a".repeat(64);
        let images = ImageSet(
            stack
                .service_names()
                .into_iter()
                .map(|s| {
                    (
                        s.to_string(),
                        PinnedImage::parse(&format!("registry.example.com/{s}@sha256:{digest}"))
                            .unwrap(),
                    )
                })
                .collect(),
        );
        let sources = Sources {
            files: &files,
            compose_path: file,
            host_dir: Path::new("/var/lib/gitfleet/projects/demo"),
        };
        match project_spec("demo", &stack, &images, &sources) {
            Ok(spec) => {
                if let Err(e) = start_order(&spec) {
                    failures.push(format!("{file}: {e}"));
                }
            }
            Err(e) => failures.push(format!("{file}: {e:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} stacks failed:\n{}",
        failures.len(),
        stacks.len(),
        failures.join("\n")
    );
}
