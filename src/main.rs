use std::process::ExitCode;

use gitfleet::cli::{Cli, Command, LogFormat};
use gitfleet::commands;

fn main() -> ExitCode {
    let cli = match commands::agent_config::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(cli.log_level);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let code = match &cli.command {
        Command::Check(args) => commands::check::run(args),
        Command::Diff(args) => commands::diff::run(args),
        Command::Apply(args) => commands::apply::run(args),
        Command::Agent(args) => commands::agent::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Status(args) => commands::status::run(args),
        Command::Pin(args) => commands::pin::run(args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "gitfleet", &mut std::io::stdout());
            commands::exit::OK
        }
    };
    ExitCode::from(code)
}
