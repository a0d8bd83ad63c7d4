//! The pintrace command line.
use clap::{Parser, Subcommand};
use pintrace::{cmd, exit::Exit};
use std::process::ExitCode;

/// Audit the Linux kernel's page-pin balance live: every pin_user_pages and
/// get_user_pages acquire, who took it, and whether it is released right.
///
/// Exit codes: 0 success, 1 findings (or, for doctor, nothing can be traced),
/// 2 could not run (bad arguments, missing privileges or kernel features).
/// A stdout closed early (`| head`) ends a command quietly, with 0.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// More output: -v shows the probes' diagnostics, -vv debug logs.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What this kernel offers for tracing, and the attach plan pintrace would use.
    Doctor {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Trace GUP acquires, optionally around a command: `pintrace run -- CMD ARGS`.
    #[command(after_help = "Modes: by default the probes keep the books in the \
        kernel (--books kernel): a pin and its unpin are booked and balanced there, \
        and only what the ledger must decide crosses to user space, beside one \
        record per bio, at its completion, that ties pins to their bios (--no-bio \
        drops it and the bio programs). \
        --books events (and --events, --record) sends every acquire, release and \
        bio as a record the agent books: several records per I/O and about twice \
        the agent's CPU. docs/performance.md has what each costs.\n\n\
        Exit codes: 0 no finding failed the run, 1 findings \
        (leaks, mismatched releases), 2 could not run (bad arguments, missing \
        privileges or kernel features: the message names which). When pintrace has \
        neither, a workload that failed passes on its own exit code (128+N when \
        killed by signal N), as perf stat does: 2 wins over 1, and 1 over the \
        workload's code. Ctrl-C and SIGTERM end the run with its summary.")]
    Run(cmd::run::RunArgs),
    /// A live dashboard: pin and unpin rates, outstanding pins, holders,
    /// findings and pin lifetimes (`--replay FILE` to watch a recording).
    Top(cmd::top::TopArgs),
    /// Pass/fail gate for a kernel: drive Direct I/O across targets, modes and
    /// buffers, and fail on any pin leaked or released the wrong way.
    Check(cmd::check::CheckArgs),
    /// Drive O_DIRECT I/O on a file or block device (fio-like).
    Engine(pintrace_engine::EngineArgs),
    /// Drive the pin-bug zoo test module (/dev/pinzoo).
    #[command(hide = true)]
    Zoo(cmd::zoo::ZooArgs),
    /// Run a command with only a bare probe attached (a per-CPU counter on
    /// pin_user_pages_fast): the floor `cargo xtask bench` compares against.
    #[command(hide = true)]
    BenchProbe(cmd::bench_probe::BenchProbeArgs),
}

impl Command {
    /// The command's name and where its JSON goes (`None`: stdout), when
    /// it writes JSON: there its error object goes when it cannot run.
    fn json_dest(&self) -> Option<(&'static str, Option<&std::path::Path>)> {
        match self {
            Command::Doctor { json: true } => Some(("doctor", None)),
            Command::Run(a) if a.json => Some(("run", a.output.as_deref())),
            Command::Check(a) if a.json => Some(("check", None)),
            _ => None,
        }
    }
}

/// Whether the command line, which did not parse, asked for JSON: the
/// error object then goes to stdout (a `-o FILE` is not known yet).
fn asks_for_json(args: &[std::ffi::OsString]) -> Option<&'static str> {
    let wants = args
        .iter()
        .any(|a| a == "--json" || a == "--output-format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--output-format" && w[1] == "json");
    if !wants {
        return None;
    }
    let names = ["doctor", "run", "top", "check", "engine"];
    Some(
        args.iter()
            .skip(1)
            .find_map(|a| names.iter().find(|n| a == **n).copied())
            .unwrap_or("pintrace"),
    )
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            // Bad arguments exit 2; --help and --version exit 0.
            if e.exit_code() == 2 {
                if let Some(command) = asks_for_json(&argv) {
                    // clap's first line, without its "error: " and the usage.
                    let text = e.render().to_string();
                    let first = text.lines().next().unwrap_or_default();
                    let message = first.strip_prefix("error: ").unwrap_or(first);
                    cmd::output::write_error(None, command, message);
                }
            }
            e.exit()
        }
    };
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("PINTRACE_LOG")
        .format_timestamp(None)
        .init();
    let result = match &cli.command {
        Command::Doctor { json } => cmd::doctor::run(*json).map(ExitCode::from),
        Command::Run(args) => cmd::run::run(args, cli.verbose > 0).map(ExitCode::from),
        Command::Top(args) => cmd::top::run(args, cli.verbose > 0).map(ExitCode::from),
        Command::Check(args) => cmd::check::run(args, cli.verbose > 0).map(ExitCode::from),
        // The engine's own codes (0 ok, 1 I/O or verify failures, 2 cannot run).
        Command::Engine(args) => pintrace_engine::run_cli(args).map(ExitCode::from),
        Command::Zoo(args) => cmd::zoo::run(args).map(ExitCode::from),
        Command::BenchProbe(args) => cmd::bench_probe::run(args).map(ExitCode::from),
    };
    result.unwrap_or_else(|err| {
        // The reader of stdout is gone (`| head`): nobody is left to tell,
        // and stopping early is what the reader asked for.
        if cmd::output::is_broken_pipe(&err) {
            return Exit::Ok.into();
        }
        eprintln!("pintrace: error: {err:#}");
        if let Some((command, dest)) = cli.command.json_dest() {
            cmd::output::write_error(dest, command, &format!("{err:#}"));
        }
        Exit::Error.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
