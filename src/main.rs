use std::process::ExitCode;

use clap::Parser;
use gitfleet::cli::{Cli, Command, LogFormat};
use gitfleet::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    };
    ExitCode::from(code)
}
