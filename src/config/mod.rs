//! A fleet repository turned into a validated model, or into every error it has.
//!
//! Reading goes `files → spanned TOML/YAML → checks → Fleet`, collecting all problems in
//! one pass (see [`diagnostics`]). Nothing here touches Docker or Git: files come through
//! the small [`RepoFiles`] trait, so the same validation runs on a working tree
//! (`gitfleet check`) and on a Git tree (the agent).

pub mod compose;
pub mod diagnostics;
pub mod dotenv;
pub mod duration;
pub mod fleet;
pub mod fleet_toml;
pub mod interpolate;
pub mod policy;
pub mod schedule;
pub mod toml_reader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diagnostics::{Diagnostic, Diagnostics, SourceFile};
use fleet::{Fleet, ImageSet, NodeId, PinnedImage, pinned_example};
use policy::{FleetSource, Policy};
use toml_reader::TableReader;

/// The fleet file at the root of every fleet repository.
pub const FLEET_TOML: &str = "fleet.toml";

/// Largest file gitfleet reads from a fleet repository; larger ones are refused.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Read access to the files of one revision of a fleet repository, by repo path.
pub trait RepoFiles {
    /// `Ok(None)` when the file does not exist; `Err` for anything else (unreadable,
    /// not UTF-8, too large), with a message fit for an operator.
    fn read(&self, path: &str) -> Result<Option<String>, String>;

    /// Every file under the repository directory `dir` ("" for the root), recursively,
    /// as repository paths. Symbolic links are left out: they could point outside.
    fn list(&self, dir: &str) -> Result<Vec<String>, String>;
}

/// A fleet repository's working tree on disk (`gitfleet check DIR`).
pub struct DirFiles(pub PathBuf);

impl RepoFiles for DirFiles {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        // As in a Git tree, symbolic links are not followed: one could point anywhere
        // on the host (and its target would then be mounted into a container).
        let mut walked = self.0.clone();
        for part in Path::new(path).components() {
            walked.push(part);
            if std::fs::symlink_metadata(&walked).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(format!(
                    "{path} is not a regular file (symbolic links are not followed)"
                ));
            }
        }
        let full = self.0.join(path);
        let meta = match std::fs::metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", full.display())),
        };
        if meta.len() > MAX_FILE_BYTES as u64 {
            return Err(format!(
                "{path} is {} bytes; the limit is {MAX_FILE_BYTES}",
                meta.len()
            ));
        }
        let bytes =
            std::fs::read(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| format!("{path} is not valid UTF-8"))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut pending = vec![dir.trim_matches('/').to_string()];
        while let Some(rel) = pending.pop() {
            let full = self.0.join(&rel);
            let entries = std::fs::read_dir(&full)
                .map_err(|e| format!("cannot list {}: {e}", full.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("cannot list {}: {e}", full.display()))?;
                let name = entry.file_name().to_string_lossy().to_string();
                let path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                match entry.file_type() {
                    Ok(t) if t.is_dir() && name != ".git" => pending.push(path),
                    Ok(t) if t.is_file() => out.push(path),
                    _ => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Normalises a path written in the repository to `a/b/c`; refuses absolute paths and
/// `..`, which could read outside the repository.
pub fn normalize_repo_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') || path.contains('\\') || path.contains(':') {
        return Err("must be a relative path inside the fleet repository".to_string());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("must not leave the fleet repository (`..`)".to_string()),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("is empty".to_string());
    }
    Ok(parts.join("/"))
}

/// The directory of a repository path (`stack` for `stack/compose.yaml`; empty at the
/// root).
pub fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// A path written in the compose file, relative to the file as Compose resolves it, as a
/// path in the repository. It may not leave the compose file's directory: that directory
/// is what a node copies to its disk (`state::materialize`), so anything outside it would
/// be missing there, or worse, some other file of the host.
pub fn stack_path(compose_path: &str, written: &str) -> Result<String, String> {
    let dir = parent_dir(compose_path);
    if written.starts_with(['/', '~']) || written.contains('\\') {
        return Err(format!(
            "must be a relative path inside the compose file's directory `{dir}/`"
        ));
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in written.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "must not leave the compose file's directory `{dir}/` (`..`)"
                ));
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Every path the compose file names in the repository resolves inside the compose
/// file's directory, and every file read or mounted from there exists as a regular file
/// (not a symbolic link). Host paths are the policy's to judge.
fn check_stack_files(files: &dyn RepoFiles, stack: &compose::ComposeStack) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for reference in stack.file_references() {
        if reference.is_host_path() && reference.used_as != compose::FileUse::EnvFile {
            continue;
        }
        let problem = match stack_path(&stack.file, &reference.path) {
            Err(why) => Some(why),
            Ok(_) if reference.used_as == compose::FileUse::Bind => None,
            Ok(path) => match files.read(&path) {
                Ok(Some(_)) => None,
                Ok(None) => Some(format!("does not exist in the fleet repository (`{path}`)")),
                Err(why) => Some(why),
            },
        };
        if let Some(why) = problem {
            diags.push(
                stack
                    .diagnostic(&reference.key, format!("`{}`: `{}` {why}", reference.key, reference.path))
                    .help(format!(
                        "keep the file in the fleet repository under `{}/` and refer to it as `./<name>`",
                        parent_dir(&stack.file)
                    )),
            );
        }
    }
    diags
}

/// Each service's `env_file`s, read from the repository as docker-compose reads them
/// ([`dotenv`]), with `${...}` from the stack's variables. A missing one was reported by
/// [`check_stack_files`] (or is optional).
fn read_env_files(
    files: &dyn RepoFiles,
    stack: &mut compose::ComposeStack,
    vars: &BTreeMap<String, String>,
) {
    for (service, values) in stack.values.iter_mut() {
        let Some(extras) = stack.extras.get(service) else {
            continue;
        };
        for file in &extras.env_files {
            let text = stack_path(&stack.file, &file.path)
                .ok()
                .and_then(|path| files.read(&path).ok().flatten());
            if let Some(text) = text {
                values.env_files.extend(dotenv::parse(&text, vars));
            }
        }
    }
}

/// The values `${...}` in the compose file may use: the agent's environment plus the
/// node's identity (`GITFLEET_NODE`, `GITFLEET_BATCH`, `GITFLEET_RELEASE`).
#[derive(Clone, Debug, Default)]
pub struct Interpolation {
    pub env: BTreeMap<String, String>,
    pub node: NodeId,
    pub release: String,
    /// Read for the whole fleet (`status`, the fleet-wide `plan`), not for one node:
    /// `${GITFLEET_NODE}` and friends have no one value there, so a service value that
    /// does not fit is a node's to report (and `check --node ID`'s), not a rejection.
    pub fleet_view: bool,
}

/// A fleet repository that passed every check: what a node may deploy.
#[derive(Clone, Debug)]
pub struct FleetRepo {
    pub fleet: Fleet,
    pub compose: compose::ComposeStack,
    pub policy: Option<Policy>,
    /// The pinned image of every compose service (from `[images]` or its own `image:`).
    pub images: ImageSet,
}

impl FleetRepo {
    /// The images this node runs and pulls: the pinned set without the services
    /// outside its active profiles. The set's id stays the whole release's.
    pub fn running_images(&self) -> ImageSet {
        ImageSet(
            self.images
                .0
                .iter()
                .filter(|(service, _)| !self.compose.inactive.contains_key(*service))
                .map(|(service, image)| (service.clone(), image.clone()))
                .collect(),
        )
    }
}

/// Reads and validates a whole fleet repository, reporting every problem at once.
pub fn load_repo(files: &dyn RepoFiles, vars: &Interpolation) -> Result<FleetRepo, Diagnostics> {
    let mut diags = Diagnostics::default();
    let repo = load_into(files, vars, &mut diags);
    match repo {
        Some(repo) if diags.is_empty() => Ok(repo),
        _ => {
            if diags.is_empty() {
                diags.push(Diagnostic::new(
                    FLEET_TOML,
                    "",
                    "the fleet repository is not usable",
                ));
            }
            Err(diags.sorted())
        }
    }
}

/// Reads a file of the repository; a missing or unreadable one is reported at the key
/// that names it (`named_by`), or as the file itself for `fleet.toml`.
fn read_source(
    files: &dyn RepoFiles,
    path: &str,
    what: &str,
    named_by: Option<&dyn Fn(Diagnostic) -> Diagnostic>,
    diags: &mut Diagnostics,
) -> Option<SourceFile> {
    let problem = match files.read(path) {
        Ok(Some(text)) => return Some(SourceFile::new(path, text)),
        Ok(None) => Diagnostic::new(path, "", format!("{what} `{path}` does not exist"))
            .help(format!("create {path}, or fix the path that names it")),
        Err(why) => Diagnostic::new(path, "", why).help(format!(
            "make {path} a readable UTF-8 file under {MAX_FILE_BYTES} bytes"
        )),
    };
    diags.push(match named_by {
        Some(relocate) => relocate(problem),
        None => problem,
    });
    None
}

fn load_into(
    files: &dyn RepoFiles,
    vars: &Interpolation,
    diags: &mut Diagnostics,
) -> Option<FleetRepo> {
    let fleet_src = read_source(files, FLEET_TOML, "the fleet file", None, diags)?;
    let table = toml_reader::parse(&fleet_src, diags)?;
    let (fleet, spans) = fleet_toml::read_fleet(&TableReader::root(&fleet_src, &table), diags)?;
    let at_key = |key: &str, mut d: Diagnostic| {
        d.file = FLEET_TOML.to_string();
        d.key = key.to_string();
        match spans.get(key) {
            Some(span) => d.at(&fleet_src, span),
            None => d,
        }
    };
    let at_policy_key = |d: Diagnostic| at_key("fleet.policy", d);
    let at_compose_key = |d: Diagnostic| at_key("fleet.compose", d);

    let policy = fleet.policy_path.as_ref().and_then(|path| {
        let src = read_source(files, path, "the policy file", Some(&at_policy_key), diags)?;
        let table = toml_reader::parse(&src, diags)?;
        let policy = policy::read_policy(&TableReader::root(&src, &table), diags);
        if let Some(signers) = &policy.allowed_signers
            && policy.require_signed_commits
            && !matches!(files.read(signers), Ok(Some(_)))
        {
            diags.push(
                Diagnostic::new(path, "admission.allowed_signers", format!("the allowed signers file `{signers}` does not exist"))
                    .help("add it in ssh-keygen's allowed_signers format: `<principal> <key-type> <base64-key>` per line"),
            );
        }
        Some(policy)
    });

    let batch = &fleet.batch_of(&vars.node).name;
    // A `.env` beside the compose file, as Compose reads it; the environment wins.
    let dot_env = stack_path(&fleet.compose_path, ".env")
        .ok()
        .and_then(|path| files.read(&path).ok().flatten())
        .map(|text| dotenv::parse(&text, &vars.env))
        .unwrap_or_default();
    let mut env: BTreeMap<String, String> = dot_env.into_iter().collect();
    env.extend(vars.env.clone());
    // The profiles fleet.toml gives this node win over the environment's.
    if let Some(profiles) = fleet.profiles_of(&vars.node) {
        env.insert("COMPOSE_PROFILES".into(), profiles.join(","));
    }
    env.insert("GITFLEET_NODE".into(), vars.node.0.clone());
    env.insert("GITFLEET_BATCH".into(), batch.clone());
    env.insert("GITFLEET_RELEASE".into(), vars.release.clone());
    // A missing compose file is reported at `fleet.compose`, where it is named.
    let compose_files = fleet.compose_files();
    for path in &compose_files {
        read_source(
            files,
            path,
            "the compose file",
            Some(&at_compose_key),
            diags,
        )?;
    }
    let mut stack = compose::load_files(files, &compose_files, &env, vars.fleet_view, diags)?;
    diags.extend(check_stack_files(files, &stack));
    read_env_files(files, &mut stack, &env);

    let images = pin_every_service(&fleet, &stack, &fleet_src, &spans, diags);
    for (service, probes) in &fleet.health {
        if !probes.is_empty()
            && stack.image_of(service).is_none()
            && !stack.all_service_names().contains(&service.as_str())
        {
            diags.push(at_key(
                &format!("health.{service}"),
                Diagnostic::new(
                    FLEET_TOML,
                    format!("health.{service}"),
                    format!(
                        "[health.{service}] names no service of {}",
                        fleet.compose_path
                    ),
                )
                .help(format!(
                    "services are: {}",
                    stack.all_service_names().join(", ")
                )),
            ));
        }
    }
    // The policy judges a fleet that is otherwise valid: on a broken one (say a window
    // that failed to parse) its verdicts would be about placeholders, not the file.
    if let (Some(policy), Some(path), true) = (&policy, &fleet.policy_path, diags.is_empty()) {
        let src = FleetSource {
            fleet_toml: &fleet_src,
            spans: &spans,
        };
        diags.extend(policy.violations(path, &fleet, &images, &src));
        diags.extend(policy.compose_violations(path, &stack));
    }
    Some(FleetRepo {
        fleet,
        compose: stack,
        policy,
        images,
    })
}

/// Rule 1: every `[images]` key is a compose service, and every service ends up pinned.
fn pin_every_service(
    fleet: &Fleet,
    stack: &compose::ComposeStack,
    fleet_src: &SourceFile,
    spans: &fleet_toml::Spans,
    diags: &mut Diagnostics,
) -> ImageSet {
    // Services this node does not run are pinned too: the image set, a release's
    // identity in every record, must be the same on every node.
    let services = stack.all_service_names();
    for service in fleet.images.keys() {
        if !services.contains(&service.as_str()) {
            let key = format!("images.{service}");
            let mut d = Diagnostic::new(
                FLEET_TOML,
                &key,
                format!(
                    "[images] names `{service}`, which is not a service of {}",
                    fleet.compose_path
                ),
            );
            if let Some(span) = spans.get(&key) {
                d = d.at(fleet_src, span);
            }
            let hint = diagnostics::did_you_mean(service, services.iter().copied())
                .map(|near| format!("did you mean `{near}`? "))
                .unwrap_or_default();
            diags.push(d.help(format!("{hint}services are: {}", services.join(", "))));
        }
    }
    let mut set = ImageSet::default();
    for service in services {
        if let Some(image) = fleet.images.get(service) {
            set.0.insert(service.to_string(), image.clone());
            continue;
        }
        let (key, written) = match stack.image_of(service) {
            Some(image) => (format!("services.{service}.image"), image),
            None => (format!("services.{service}"), ""),
        };
        let problem = match PinnedImage::parse(written) {
            Ok(image) => {
                set.0.insert(service.to_string(), image);
                continue;
            }
            Err(_) if written.is_empty() => format!("service `{service}` has no image"),
            Err(why) => format!("image `{written}` of service `{service}` {why}"),
        };
        diags.push(stack.diagnostic(&key, problem).help(format!(
            "pin it in fleet.toml under [images]: {service} = \"{}\"",
            pinned_example(service)
        )));
    }
    set
}
