//! `gitfleet pin [DIR]`: resolve every tag of fleet.toml's `[images]` (and every unpinned
//! compose image) to the digest its registry serves, follow `follow` policies with
//! `--update`, and rewrite fleet.toml in place (or only check, or print the diff, or commit
//! on a new branch). All or nothing: on any error fleet.toml is left as it was.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::{exit, runtime};
use crate::cli::PinArgs;
use crate::config::FLEET_TOML;
use crate::config::fleet::hex;
use crate::git::propose::commit_file_on_new_branch;
use crate::pin::plan::{self, Change};
use crate::pin::policy::{FOLLOW_HELP, FollowPolicy};
use crate::pin::reference::ImageRef;
use crate::pin::registry::{Credentials, ImageRegistry, Registry, RegistryError};

/// One image to resolve, with where it was written (for messages).
struct Target {
    service: String,
    /// `fleet.toml:12: \`images.web\``, or the compose file's key.
    origin: String,
    image: ImageRef,
    follow: Option<FollowPolicy>,
    /// The reference in `[images]`; `None` for a compose image `[images]` lacks.
    old: Option<String>,
}

pub fn run(args: &PinArgs) -> u8 {
    match pin(args) {
        Ok(code) => code,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            eprintln!("{FLEET_TOML} is unchanged.");
            exit::USAGE
        }
    }
}

fn pin(args: &PinArgs) -> Result<u8, Vec<String>> {
    let path = args.dir.join(FLEET_TOML);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let (inputs, targets) = read_targets(&args.dir, &text)?;
    let credentials = Credentials::from_docker_config().map_err(|e| vec![e])?;
    let registry = Registry::new(credentials, inputs.mirrors, args.insecure_registry.clone());
    let rt = runtime().map_err(|_| vec!["cannot start the async runtime".to_string()])?;
    let (mut changes, mut errors) = (Vec::new(), Vec::new());
    for target in &targets {
        match rt.block_on(resolve(&registry, target, args.update)) {
            Ok(Some(change)) => changes.push(change),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if changes.is_empty() {
        println!("{FLEET_TOML} is up to date");
        return Ok(exit::OK);
    }
    for change in &changes {
        println!("{}", plan::describe(change));
    }
    if args.check {
        println!(
            "{} image(s) unpinned or stale; run `gitfleet pin{}` to rewrite {FLEET_TOML}",
            changes.len(),
            if args.update { " --update" } else { "" }
        );
        return Ok(exit::FAILED);
    }
    write_out(args, &path, &text, &changes)
}

/// What to resolve: every `[images]` entry and unpinned compose image, or every reason
/// one cannot be.
fn read_targets(dir: &Path, text: &str) -> Result<(plan::PinInputs, Vec<Target>), Vec<String>> {
    let inputs = plan::read_inputs(FLEET_TOML, text).map_err(|e| vec![e])?;
    let (mut targets, mut errors) = (Vec::new(), Vec::new());
    for entry in &inputs.entries {
        let origin = format!("{FLEET_TOML}:{}: `images.{}`", entry.line, entry.service);
        let image = ImageRef::parse(&entry.image).map_err(|why| {
            format!("{origin}: image `{}` {why}\n  = help: write it as <registry>/<repository>:<tag>, e.g. registry.example.com/acme/{}:1.4", entry.image, entry.service)
        });
        let follow = entry
            .follow
            .as_deref()
            .map(FollowPolicy::parse)
            .transpose()
            .map_err(|why| {
                format!(
                    "{origin}: `follow` = \"{}\" {why}\n  = help: {FOLLOW_HELP}",
                    entry.follow.as_deref().unwrap_or_default()
                )
            });
        match (image, follow) {
            (Ok(image), Ok(follow)) => targets.push(Target {
                service: entry.service.clone(),
                origin,
                image,
                follow,
                old: Some(entry.image.clone()),
            }),
            (image, follow) => errors.extend(image.err().into_iter().chain(follow.err())),
        }
    }
    compose_targets(dir, &inputs, &mut targets, &mut errors);
    if errors.is_empty() {
        Ok((inputs, targets))
    } else {
        Err(errors)
    }
}

/// The rewrite, printed as a diff (`--dry-run`), or written and maybe committed; a failed
/// commit puts the old file back.
fn write_out(
    args: &PinArgs,
    path: &Path,
    text: &str,
    changes: &[Change],
) -> Result<u8, Vec<String>> {
    let new_text = plan::rewrite(text, changes).map_err(|e| vec![format!("{FLEET_TOML}: {e}")])?;
    if args.dry_run {
        print!("{}", plan::diff(FLEET_TOML, text, &new_text));
        return Ok(exit::OK);
    }
    write_atomic(path, &new_text).map_err(|e| vec![e])?;
    if args.commit {
        let branch = args.branch.clone().unwrap_or_else(|| {
            format!(
                "gitfleet/pin-{}",
                &hex(&Sha256::digest(new_text.as_bytes()))[..12]
            )
        });
        let message = plan::commit_message(changes);
        match commit_file_on_new_branch(
            &args.dir,
            Path::new(FLEET_TOML),
            new_text.as_bytes(),
            &branch,
            &message,
        ) {
            Ok(id) => println!("committed {id} on new branch {branch}"),
            Err(e) => {
                // All or nothing: the rewrite goes too.
                write_atomic(path, text).map_err(|e2| vec![e.clone(), e2])?;
                return Err(vec![e]);
            }
        }
    } else {
        println!("rewrote {}", path.display());
    }
    Ok(exit::OK)
}

/// The compose files' images that are neither in `[images]` nor pinned by digest: `pin`
/// adds them to `[images]` (a compose file is YAML that `pin` does not rewrite).
fn compose_targets(
    dir: &Path,
    inputs: &plan::PinInputs,
    targets: &mut Vec<Target>,
    errors: &mut Vec<String>,
) {
    for file in &inputs.compose {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            errors.push(format!("{FLEET_TOML}: `fleet.compose` names {file}, which cannot be read\n  = help: run `gitfleet check` for the details"));
            continue;
        };
        let Ok(yaml) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            errors.push(format!(
                "{file}: not valid YAML\n  = help: run `gitfleet check` for the details"
            ));
            continue;
        };
        let services = yaml
            .get("services")
            .and_then(|s| s.as_mapping())
            .into_iter()
            .flatten();
        for (name, service) in services {
            let (Some(name), Some(image)) =
                (name.as_str(), service.get("image").and_then(|i| i.as_str()))
            else {
                continue;
            };
            if image.contains('@')
                || image.contains('$')
                || targets.iter().any(|t| t.service == name)
            {
                continue;
            }
            let origin = format!("{file}: `services.{name}.image`");
            match ImageRef::parse(image) {
                Ok(image) => targets.push(Target {
                    service: name.to_string(),
                    origin,
                    image,
                    follow: None,
                    old: None,
                }),
                Err(why) => errors.push(format!("{origin}: image `{image}` {why}")),
            }
        }
    }
}

/// The change `target` needs, if any: its tag (or, with `update`, its policy's newest
/// tag) resolved to the digest the registry serves.
async fn resolve(
    registry: &impl ImageRegistry,
    target: &Target,
    update: bool,
) -> Result<Option<Change>, String> {
    let Target {
        service,
        origin,
        image,
        follow,
        old,
    } = target;
    let fail = |e: RegistryError| {
        let help = match &e {
            RegistryError::Unreachable { .. } => {
                "check the registry's address and the network, or list a mirror for it under [registries]"
            }
            RegistryError::NotFound { .. } => {
                "correct the tag or repository in the file (`docker manifest inspect <image>:<tag>` shows what the registry has)"
            }
            RegistryError::Unauthorized { .. } => {
                "log in with `docker login <registry>`; gitfleet reads the `auths` of ~/.docker/config.json"
            }
            RegistryError::Protocol { .. } => "retry later; the registry's answer was not usable",
        };
        format!("{origin}: {e}\n  = help: {help}")
    };
    let tag = match (follow, update) {
        (Some(policy), true) => {
            let tags = registry.tags(image).await.map_err(fail)?;
            let newest = policy.newest(&tags).map(str::to_string).ok_or_else(|| {
                format!("{origin}: no tag of {} satisfies `follow = \"{policy}\"` ({} tags)\n  = help: loosen the policy or push a matching tag", image.name(), tags.len())
            })?;
            // Never a downgrade: a current tag the policy allows and the list lacks
            // (deleted, or past the pages read) stays.
            if let Some(current) = &image.tag
                && policy.allows(current)
                && policy.is_newer(current, &newest)
            {
                println!(
                    "{service}: {current} is newer than every tag `{policy}` finds ({newest}); left as it is"
                );
                return Ok(None);
            }
            newest
        }
        _ => match (&image.tag, &image.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(_)) => {
                println!(
                    "{service}: pinned by digest only; write its tag too ({}:<tag>@sha256:…) for pin to keep it fresh",
                    image.name()
                );
                return Ok(None);
            }
            // No tag is `latest`, as Docker reads it; pin writes it out.
            (None, None) => "latest".to_string(),
        },
    };
    let resolved = registry.resolve(image, &tag).await.map_err(fail)?;
    if resolved.host != image.api_host() {
        println!(
            "{service}: the registry failed; its mirror {} answered",
            resolved.host
        );
    }
    let new = image.pinned(Some(&tag), &resolved.digest);
    if old.as_deref() == Some(new.as_str()) {
        let arch = if resolved.multi_arch {
            " (multi-arch index)"
        } else {
            ""
        };
        println!("{service}: up to date at {tag} {}{arch}", resolved.digest);
        return Ok(None);
    }
    Ok(Some(Change {
        service: service.clone(),
        old: old.clone(),
        new,
        old_tag: image.tag.clone(),
        new_tag: Some(tag),
        digest: resolved.digest,
        multi_arch: resolved.multi_arch,
    }))
}

/// Replaces `path` with `text` at once (a reader never sees half a file).
fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("toml.pin-tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pin::registry::Resolved;

    /// Tags and their digests; `None` as the map: the registry is unreachable.
    struct FakeRegistry(Option<BTreeMap<&'static str, &'static str>>);

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn unreachable(image: &ImageRef) -> RegistryError {
        RegistryError::Unreachable {
            host: image.api_host().to_string(),
            why: "connection refused".to_string(),
        }
    }

    impl ImageRegistry for FakeRegistry {
        async fn resolve(&self, image: &ImageRef, tag: &str) -> Result<Resolved, RegistryError> {
            let tags = self.0.as_ref().ok_or_else(|| unreachable(image))?;
            let digest = tags.get(tag).ok_or_else(|| RegistryError::NotFound {
                host: image.api_host().to_string(),
                what: format!("tag `{tag}` of {}", image.name()),
            })?;
            Ok(Resolved {
                digest: digest.to_string(),
                multi_arch: tag == "multi",
                host: image.api_host().to_string(),
            })
        }

        async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
            let tags = self.0.as_ref().ok_or_else(|| unreachable(image))?;
            Ok(tags.keys().map(|t| t.to_string()).collect())
        }
    }

    fn registry() -> FakeRegistry {
        FakeRegistry(Some(BTreeMap::from([
            ("1.0.0", A),
            ("1.1.0", B),
            ("2.0.0", A),
            ("latest", B),
            ("multi", A),
        ])))
    }

    fn target(image: &str, follow: Option<&str>) -> Target {
        Target {
            service: "web".to_string(),
            origin: "fleet.toml:9: `images.web`".to_string(),
            image: ImageRef::parse(image).unwrap(),
            follow: follow.map(|f| FollowPolicy::parse(f).unwrap()),
            old: Some(image.to_string()),
        }
    }

    fn run(
        registry: &FakeRegistry,
        target: &Target,
        update: bool,
    ) -> Result<Option<Change>, String> {
        runtime()
            .unwrap()
            .block_on(resolve(registry, target, update))
    }

    #[test]
    fn a_tag_is_pinned_and_a_current_pin_is_left_alone() {
        let change = run(&registry(), &target("r.example/web:1.0.0", None), false)
            .unwrap()
            .unwrap();
        assert_eq!(change.new, format!("r.example/web:1.0.0@{A}"));
        let current = format!("r.example/web:1.0.0@{A}");
        assert_eq!(run(&registry(), &target(&current, None), false), Ok(None));
        let stale = format!("r.example/web:1.1.0@{A}");
        assert_eq!(
            run(&registry(), &target(&stale, None), false)
                .unwrap()
                .unwrap()
                .digest,
            B
        );
    }

    #[test]
    fn a_policy_moves_only_with_update() {
        let t = target(&format!("r.example/web:1.0.0@{A}"), Some("semver:^1"));
        assert_eq!(run(&registry(), &t, false), Ok(None));
        let change = run(&registry(), &t, true).unwrap().unwrap();
        assert_eq!(
            (change.old_tag.as_deref(), change.new_tag.as_deref()),
            (Some("1.0.0"), Some("1.1.0"))
        );
        assert_eq!(change.new, format!("r.example/web:1.1.0@{B}"));
    }

    #[test]
    fn a_policy_never_moves_a_pin_to_an_older_tag() {
        let t = target(&format!("r.example/web:1.5.0@{A}"), Some("semver:^1"));
        assert_eq!(run(&registry(), &t, true), Ok(None));
    }

    #[test]
    fn a_policy_no_tag_satisfies_is_an_error_naming_the_line() {
        let e = run(
            &registry(),
            &target("r.example/web:1.0.0", Some("semver:~9")),
            true,
        )
        .unwrap_err();
        assert!(e.starts_with("fleet.toml:9: `images.web`: no tag of r.example/web satisfies `follow = \"semver:~9\"` (5 tags)"), "{e}");
    }

    #[test]
    fn untagged_is_latest_and_digest_only_is_left_alone() {
        assert_eq!(
            run(&registry(), &target("r.example/web", None), false)
                .unwrap()
                .unwrap()
                .new,
            format!("r.example/web:latest@{B}")
        );
        assert_eq!(
            run(
                &registry(),
                &target(&format!("r.example/web@{A}"), None),
                false
            ),
            Ok(None)
        );
    }

    #[test]
    fn registry_failures_name_the_line_and_the_fix() {
        let e = run(&registry(), &target("r.example/web:9.9.9", None), false).unwrap_err();
        assert!(e.contains("fleet.toml:9: `images.web`: tag `9.9.9` of r.example/web is not in registry r.example") && e.contains("help: correct the tag"), "{e}");
        let e = run(
            &FakeRegistry(None),
            &target("r.example/web:1.0.0", Some("semver:^1")),
            true,
        )
        .unwrap_err();
        assert!(
            e.contains("is unreachable: connection refused") && e.contains("[registries]"),
            "{e}"
        );
    }

    #[test]
    fn a_multi_arch_tag_is_marked() {
        assert!(
            run(&registry(), &target("r.example/web:multi", None), false)
                .unwrap()
                .unwrap()
                .multi_arch
        );
    }
}
