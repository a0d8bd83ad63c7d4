//! `cargo xtask soak`: the tracer attached for minutes to a mixed Direct
//! I/O workload in the 6.12 guest (the engine in every mode and buffer
//! kind, fork-shared buffers, io_uring buffers registered and unregistered):
//! no finding, no lost event, the agent's memory flat. The test itself is
//! `robust::soak` in pintrace/tests/guest/robust.rs.

use crate::util::Workspace;
use crate::vm::{self, GuestOpts};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// How long the workload runs, in minutes.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub minutes: u64,
    /// The kernel to soak [default: 6.12].
    #[arg(long, value_name = "6.1|6.12|PATH", default_value = "6.12")]
    pub kernel: String,
}

/// Boots the kernel and runs the soak; returns the guest's outcome line
/// for the caller's table and whether it passed.
pub fn run(
    ws: &Workspace,
    minutes: u64,
    kernel: &str,
    built: &vm::Built,
    base: &GuestOpts,
) -> Result<(String, bool)> {
    let secs = minutes * 60;
    let opts = GuestOpts {
        kernel: vec![kernel.to_owned()],
        // The workload, plus boot, attach and the summary on a slow guest.
        timeout: secs + 1200,
        ..base.clone()
    };
    let o = vm::run_guest(ws, &opts, kernel, built, vm::soak_payload(secs))?;
    let line = o
        .console
        .lines()
        .find(|l| l.contains("soak: ") && l.contains("RSS"))
        .map(|l| l[l.find("soak: ").unwrap_or(0)..].trim().to_owned());
    {
        let _whole = std::io::stdout().lock();
        vm::report(&o);
        if let Some(l) = &line {
            println!("{l}");
        }
    }
    let verdict = format!(
        "{}{}{}",
        o.verdict,
        line.map(|l| format!(" ({l})")).unwrap_or_default(),
        o.retried_note()
    );
    Ok((verdict, o.verdict.passed()))
}

pub fn soak(ws: &Workspace, args: &SoakArgs) -> Result<bool> {
    crate::setup::setup(&crate::setup::SetupArgs::default())?;
    let built = vm::build(ws, true)?;
    let t = std::time::Instant::now();
    let (verdict, passed) = run(
        ws,
        args.minutes,
        &args.kernel,
        &built,
        &GuestOpts::default(),
    )?;
    println!(
        "soak: {} minute(s) on {}: {verdict} in {:.0} s",
        args.minutes,
        args.kernel,
        t.elapsed().as_secs_f64()
    );
    Ok(passed)
}
