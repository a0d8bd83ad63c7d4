//! `pintrace bench-probe` (hidden): runs a command with only the bare probe
//! attached (a per-CPU counter on `pin_user_pages_fast`), then prints one
//! JSON line with the calls it counted. The floor of `cargo xtask bench`.

use super::output::Output;
use crate::exit::Exit;
use crate::{
    kernel::caps,
    trace::probes::bench::{BareAttach, BareProbe},
};
use anyhow::{bail, Context as _, Result};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct BenchProbeArgs {
    /// How the bare probe attaches.
    #[arg(long, value_enum, default_value_t = BareAttach::Kprobe)]
    pub attach: BareAttach,
    /// The command to run while the probe is attached.
    #[arg(last = true, value_name = "COMMAND", required = true)]
    pub command: Vec<String>,
}

pub fn run(args: &BenchProbeArgs) -> Result<Exit> {
    if let caps::Availability::No(why) = caps::privileges() {
        bail!("pintrace bench-probe: {why}");
    }
    let probe = BareProbe::attach(args.attach)?;
    let (prog, rest) = args.command.split_first().context("no command given")?;
    let status = std::process::Command::new(prog)
        .args(rest)
        .status()
        .with_context(|| format!("starting {prog}"))?;
    let line = serde_json::json!({
        "type": "bench_probe",
        "attach": format!("{:?}", args.attach).to_lowercase(),
        "program": args.attach.program(),
        "hits": probe.hits()?,
        "exit": status.code(),
    });
    Output::stdout().json(&line)?;
    Ok(if status.success() {
        Exit::Ok
    } else {
        Exit::Findings
    })
}
