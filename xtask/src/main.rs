//! pintrace's developer and CI tooling, run as `cargo xtask <command>`.

mod bench;
mod check_kernel;
mod console;
mod cpio;
mod debian;
mod devices;
mod flake;
mod initramfs;
mod kconfig;
mod ktree;
mod modules;
mod pinzoo;
mod planted;
mod qemu;
mod setup;
mod soak;
mod stream;
mod test;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "pintrace developer and CI tooling"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make this Debian 12 machine ready: packages, rust-src, bpf-linker.
    Setup(setup::SetupArgs),
    /// Boot a kernel in QEMU and run the guest suite (or `-- CMD ARGS`) in it.
    Vm(vm::VmArgs),
    /// Run every test: setup, host tests, guest suite on 6.1 and 6.12.
    Test(test::TestArgs),
    /// CI gate for a kernel: check its config, boot it, run `pintrace check`
    /// inside, copy the reports out; exit 0 pass, 1 findings, 2 could not run.
    CheckKernel(check_kernel::CheckKernelArgs),
    /// Tracing overhead (vs no tracing and a bare probe) and loss onset,
    /// measured in one guest run; prints ratios and the conditions.
    Bench(bench::BenchArgs),
    /// Show (and fetch) the Debian kernels the VM commands boot.
    Kernels(KernelsArgs),
    /// How often guests die of the emulator: bare boots and runs of one
    /// guest test, each in its own guest without retries, counted by cause.
    Flake(flake::FlakeArgs),
    /// pintrace attached for minutes to a mixed Direct I/O workload in the
    /// 6.12 guest: no finding, no lost event, flat agent memory.
    Soak(soak::SoakArgs),
}

#[derive(clap::Args, Debug)]
struct KernelsArgs {
    /// Ask apt for a newer package even when one is cached.
    #[arg(long)]
    refresh: bool,
    /// Series to show [default: all].
    #[arg(long, value_name = "6.1|6.12")]
    kernel: Vec<String>,
}

fn kernels(ws: &util::Workspace, args: &KernelsArgs) -> Result<bool> {
    let series: Vec<&str> = if args.kernel.is_empty() {
        debian::SERIES.to_vec()
    } else {
        args.kernel.iter().map(String::as_str).collect()
    };
    for s in series {
        if !debian::SERIES.contains(&s) {
            anyhow::bail!("--kernel {s}: the Debian series are {:?}", debian::SERIES);
        }
        let k = debian::debian_kernel(ws, s, args.refresh)?;
        let modules = match k.module_index()? {
            Some(i) => format!("{} modules in {}", i.len(), i.dir.display()),
            None => "no modules".into(),
        };
        println!("{s}: {} — {} — {modules}", k.origin, k.image.display());
    }
    Ok(true)
}

fn run(cli: Cli) -> Result<bool> {
    if let Cmd::Setup(args) = &cli.command {
        setup::setup(args)?;
        return Ok(true);
    }
    let ws = util::Workspace::locate()?;
    match &cli.command {
        Cmd::Setup(_) => unreachable!(),
        Cmd::Vm(args) => vm::vm(&ws, args),
        Cmd::Test(args) => test::test(&ws, args),
        Cmd::Kernels(args) => kernels(&ws, args),
        Cmd::Bench(args) => bench::bench(&ws, args),
        Cmd::Soak(args) => soak::soak(&ws, args),
        Cmd::Flake(args) => flake::flake(&ws, args),
        Cmd::CheckKernel(_) => unreachable!("handled in main"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::CheckKernel(args) = &cli.command {
        // check's own exit code: 0 pass, 1 findings, 2 could not run.
        return match util::Workspace::locate().and_then(|ws| check_kernel::check_kernel(&ws, args))
        {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
