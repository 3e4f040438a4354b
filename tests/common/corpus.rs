//! The published deploy files of `tests/fixtures/compose-corpus/`, and how a test
//! loads one as `gitfleet check` and a node do: only `[images]` added, plus the
//! operator's own inputs (the project's published `.env`, its required variables).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gitfleet::config::fleet::NodeId;
use gitfleet::config::{FleetRepo, Interpolation, RepoFiles, load_repo};
use gitfleet::engine::spec::{ProjectSpec, joined, project_spec};

use super::test_key;

/// One file of the published corpus, as tests/fixtures/compose-corpus/SOURCES.toml
/// lists it.
#[derive(serde::Deserialize)]
pub struct CorpusFile {
    pub name: String,
    pub repo: String,
    pub path: String,
    pub commit: String,
    sha256: String,
    /// For a project's published `.env` (or its example): the compose file it goes
    /// beside.
    #[serde(default)]
    beside: Option<String>,
    /// For a project's published override example (which its operators copy beside the
    /// compose file): the compose file it goes over.
    #[serde(default)]
    overrides: Option<String>,
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose-corpus")
}

/// One published compose file, with the `.env` and the override file its project
/// publishes (if any).
pub struct Published {
    pub file: CorpusFile,
    pub text: String,
    pub dotenv: Option<String>,
    pub compose_override: Option<String>,
}

/// Every published compose file, each checked against its recorded digest (byte for
/// byte as published).
pub fn published() -> Vec<Published> {
    #[derive(serde::Deserialize)]
    struct Sources {
        file: Vec<CorpusFile>,
    }
    let dir = corpus_dir();
    let sources: Sources =
        toml::from_str(&std::fs::read_to_string(dir.join("SOURCES.toml")).unwrap()).unwrap();
    let all: Vec<(CorpusFile, String)> = sources
        .file
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f.name)).unwrap();
            use sha2::Digest;
            let digest: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(digest, f.sha256, "{} is not the published file", f.name);
            (f, String::from_utf8(bytes).unwrap())
        })
        .collect();
    let companion = |name: &str, of: fn(&CorpusFile) -> &Option<String>| {
        all.iter()
            .find(|(f, _)| of(f).as_deref() == Some(name))
            .map(|(_, text)| text.clone())
    };
    let companions: Vec<(Option<String>, Option<String>)> = all
        .iter()
        .map(|(f, _)| {
            (
                companion(&f.name, |f| &f.beside),
                companion(&f.name, |f| &f.overrides),
            )
        })
        .collect();
    all.into_iter()
        .zip(companions)
        .filter(|((f, _), _)| f.beside.is_none() && f.overrides.is_none())
        .map(|((file, text), (dotenv, compose_override))| Published {
            file,
            text,
            dotenv,
            compose_override,
        })
        .collect()
}

impl Published {
    /// The operator's environment: each variable the files require
    /// (`${NAME:?message}`), each a secret is read from (`environment: NAME`), and `HOME`.
    pub fn env(&self) -> BTreeMap<String, String> {
        let texts = [Some(&self.text), self.compose_override.as_ref()];
        let mut env: BTreeMap<String, String> = texts
            .iter()
            .flatten()
            .flat_map(|text| secret_variables(text))
            .map(|name| (name, "x".to_string()))
            .collect();
        env.extend(self.text.split("${").skip(1).filter_map(|rest| {
            let end = rest.find(['}', ':', '?', '-', '+'])?;
            let required = rest[end..].starts_with(":?") || rest[end..].starts_with('?');
            required.then(|| (rest[..end].to_string(), "x".to_string()))
        }));
        env.insert("HOME".into(), "/root".into());
        env
    }

    pub fn vars(&self) -> Interpolation {
        Interpolation {
            env: self.env(),
            node: NodeId("n1".into()),
            release: "0".repeat(40),
            fleet_view: false,
        }
    }

    /// The service names of the file (every one: the operator pins them all, and
    /// profiles pick which run), read as plain YAML.
    pub fn services(&self) -> Vec<String> {
        let doc: serde_yaml::Value = serde_yaml::from_str(&self.text).unwrap_or_default();
        doc.get("services")
            .and_then(|s| s.as_mapping())
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.as_str().map(str::to_string))
            .collect()
    }

    /// The fleet repository `check` and a node read: this file, its `.env` and override,
    /// and a fleet.toml pinning every service to `registry.example.com/<service>` at one
    /// digest, for project `demo`.
    pub fn repo(&self) -> PublishedStack {
        let digest = "a".repeat(64);
        PublishedStack {
            fleet_toml: self.fleet_toml("demo", |s| {
                format!("registry.example.com/{s}@sha256:{digest}")
            }),
            compose: self.text.clone(),
            dotenv: self.dotenv.clone(),
            compose_override: self.compose_override.clone(),
        }
    }

    /// A fleet.toml for project `project` pinning every service to `image_of(service)`.
    pub fn fleet_toml(&self, project: &str, image_of: impl Fn(&str) -> String) -> String {
        let images: String = self
            .services()
            .iter()
            .map(|s| format!("\"{s}\" = \"{}\"\n", image_of(s)))
            .collect();
        let compose = match self.compose_override {
            Some(_) => r#"["stack/compose.yaml", "stack/compose.override.yaml"]"#,
            None => r#""stack/compose.yaml""#,
        };
        format!(
            "version = 1\n[fleet]\nname = \"{project}\"\ncompose = {compose}\n[images]\n{images}"
        )
    }
}

/// The variables a file's top-level `secrets` read (`environment: NAME`).
fn secret_variables(text: &str) -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
    doc.get("secrets")
        .and_then(|s| s.as_mapping())
        .into_iter()
        .flatten()
        .filter_map(|(_, s)| Some(s.get("environment")?.as_str()?.to_string()))
        .collect()
}

/// A fleet repository made of one compose file as `stack/compose.yaml`, its project's
/// published `.env` beside it, and a fleet.toml; every other file the stack names (env
/// files, secret and config sources: the operator's own) exists, empty.
pub struct PublishedStack {
    pub fleet_toml: String,
    pub compose: String,
    pub dotenv: Option<String>,
    /// `stack/compose.override.yaml`, when the project publishes one.
    pub compose_override: Option<String>,
}

impl RepoFiles for PublishedStack {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        Ok(Some(match path {
            "fleet.toml" => self.fleet_toml.clone(),
            "stack/compose.yaml" => self.compose.clone(),
            "stack/.env" => self.dotenv.clone().unwrap_or_default(),
            "stack/compose.override.yaml" => match &self.compose_override {
                Some(text) => text.clone(),
                None => return Ok(None),
            },
            _ => String::new(),
        }))
    }

    fn list(&self, _: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// Loads `files` as `check` and a node do and translates it into create bodies for
/// `project`, with the stack's directory at `host_dir`; or why not.
pub fn translate(
    files: &dyn RepoFiles,
    vars: &Interpolation,
    project: &str,
    host_dir: &Path,
) -> Result<(FleetRepo, ProjectSpec), String> {
    let loaded = load_repo(files, vars).map_err(|diags| diags.to_string())?;
    let spec = project_spec(
        project,
        &loaded.compose,
        &loaded.images,
        host_dir,
        &test_key(),
    )
    .map_err(|e| joined(&e))?;
    Ok((loaded, spec))
}
