//! The agent's configuration file, and the effective configuration it prints.
//!
//! Precedence: a flag, then its `GITFLEET_*` variable, then the file (`--config`, else
//! `/etc/gitfleet/agent.toml` when it exists), then the built-in default. The file's keys
//! are the agent's flag names with `_` (`state_dir`, `webhook_secret_file`, …); each one
//! the command line and environment leave unset becomes that flag, so the file is
//! validated exactly as flags are.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{CommandFactory, Parser};

use crate::cli::{AgentArgs, Cli};
use crate::git::redact_url;

pub const DEFAULT_CONFIG: &str = "/etc/gitfleet/agent.toml";

/// Flags a file may not set: they pick the file or are one-shot actions.
const NOT_IN_FILE: [&str; 5] = ["config", "print_config", "once", "help", "version"];

/// Parses the command line; for `agent`, fills what it leaves unset from the
/// configuration file. An error is clap's (exit 2), or names the file and key.
pub fn parse(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    let command = Cli::command();
    let lenient = command.clone().ignore_errors(true).get_matches_from(&argv);
    let Some(("agent", agent)) = lenient.subcommand() else {
        return Cli::try_parse_from(argv);
    };
    let (path, explicit) = match agent.get_one::<PathBuf>("config") {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    if !explicit && !path.exists() {
        return Cli::try_parse_from(argv);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        file_error(
            &path,
            format!("cannot read it: {e} (check --config / GITFLEET_CONFIG)"),
        )
    })?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| file_error(&path, format!("not valid TOML: {}", e.message())))?;
    let agent_command = command
        .find_subcommand("agent")
        .expect("the agent subcommand exists");
    // (file key, argument id, flag): `state_dir`, `state_dir`, `--state-dir`.
    let known: Vec<(String, String, String)> = agent_command
        .get_arguments()
        .chain(command.get_arguments().filter(|a| a.is_global_set()))
        .filter_map(|a| {
            let long = a.get_long()?;
            Some((
                long.replace('-', "_"),
                a.get_id().to_string(),
                format!("--{long}"),
            ))
        })
        .filter(|(key, _, _)| !NOT_IN_FILE.contains(&key.as_str()))
        .collect();
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let Some((_, id, flag)) = known.iter().find(|(k, _, _)| k == key) else {
            let keys: Vec<&str> = known.iter().map(|(k, _, _)| k.as_str()).collect();
            return Err(file_error(
                &path,
                format!("unknown key `{key}`; the keys are: {}", keys.join(", ")),
            ));
        };
        if matches!(
            agent.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = flag.clone();
        match value {
            toml::Value::String(s) => extra.extend([flag.into(), s.into()]),
            toml::Value::Integer(_) | toml::Value::Float(_) => {
                extra.extend([flag.into(), value.to_string().into()])
            }
            other => {
                return Err(file_error(
                    &path,
                    format!("`{key}` must be a string, got {}", other.type_str()),
                ));
            }
        }
    }
    let mut argv = argv;
    argv.extend(extra);
    Cli::try_parse_from(argv)
}

fn file_error(path: &Path, message: String) -> clap::Error {
    Cli::command().error(
        clap::error::ErrorKind::InvalidValue,
        format!("{}: {message}", path.display()),
    )
}

/// The effective agent configuration as TOML, in the file's keys; secrets masked.
pub fn print(args: &AgentArgs) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| quote(&p.display().to_string()));
    let repo = &args.remote.repo;
    let password_env = std::env::var("GITFLEET_GIT_PASSWORD").is_ok_and(|p| !p.is_empty());
    let lines: Vec<(&str, Option<String>)> = vec![
        ("repo", Some(quote(&redact_url(&repo.url)))),
        ("branch", Some(quote(&repo.branch))),
        ("node", Some(quote(&args.remote.node))),
        ("timezone", args.remote.timezone.as_deref().map(quote)),
        ("state_dir", path(&Some(args.state_dir.clone()))),
        ("interval", Some(quote(&args.interval))),
        ("project", args.project.as_deref().map(quote)),
        ("listen", Some(quote(&args.listen))),
        ("webhook_secret_file", path(&args.webhook_secret_file)),
        ("allowed_signers", path(&args.allowed_signers)),
        ("node_key", path(&args.node_key)),
        ("git_username", repo.git_username.as_deref().map(quote)),
        ("git_password_file", path(&repo.git_password_file)),
        ("git_ca_file", path(&repo.git_ca_file)),
        ("ssh_key", path(&repo.ssh_key)),
        ("ssh_known_hosts", path(&repo.ssh_known_hosts)),
    ];
    let mut out = String::from("# gitfleet agent: effective configuration (secrets masked)\n");
    for (key, value) in lines {
        match value {
            Some(v) => out.push_str(&format!("{key} = {v}\n")),
            None => out.push_str(&format!("# {key} = (unset)\n")),
        }
    }
    if password_env && repo.git_password_file.is_none() {
        out.push_str("# git password: *** (from GITFLEET_GIT_PASSWORD)\n");
    }
    out
}
