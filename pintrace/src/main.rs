use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Audit the Linux kernel's page-pin balance live.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Drive O_DIRECT I/O on a file or block device (fio-like).
    Engine(pintrace::engine::EngineArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Engine(args) => pintrace::engine::run_cli(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("pintrace: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
