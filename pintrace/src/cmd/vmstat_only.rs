//! `pintrace run --vmstat-only`: the balance of the kernel's own pin
//! counters around a workload, for kernels where nothing can be probed.
//! System-wide and approximate (per-CPU batched; refreshed with
//! /proc/sys/vm/stat_refresh first), but needs no BPF at all.

use super::{output::Output, signals::Stop};
use crate::exit::Exit;
use crate::{
    kernel::vmstat,
    views::summary::{VmstatCheck, Workload},
};
use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use std::{path::Path, time::Duration};

#[derive(Debug, Serialize)]
pub struct VmstatOnly {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub duration_s: f64,
    pub vmstat: VmstatCheck,
    /// Pins taken during the run and not released (negative: more released
    /// than taken, e.g. pins from before the run), system-wide.
    pub outstanding: i64,
    pub balanced: bool,
    pub workload: Option<Workload>,
}

/// What `run --vmstat-only` takes from `run`'s options.
pub struct VmstatOnlyArgs<'a> {
    pub json: bool,
    /// `--output`: the report's file, when not stdout.
    pub output: Option<&'a Path>,
    pub duration: Option<Duration>,
    /// The workload, if any.
    pub command: &'a [String],
    /// Whether `--metrics` was given (refused: it needs the probes).
    pub metrics: bool,
}

pub async fn run(args: &VmstatOnlyArgs<'_>) -> Result<Exit> {
    if args.metrics {
        bail!("--metrics needs the probes; it does not go with --vmstat-only");
    }
    let Some(before) = vmstat::read() else {
        bail!(
            "--vmstat-only: /proc/vmstat has no nr_foll_pin_acquired/nr_foll_pin_released \
             on this kernel"
        );
    };
    if let Some(path) = args.output {
        crate::cmd::report_file::check_writable("--output", path)?;
    }
    let started = std::time::Instant::now();
    let (workload, stopped) = wait(args).await?;
    let after = vmstat::read().context("reading /proc/vmstat again")?;
    let delta = before.delta_to(&after);
    let outstanding = delta.acquired as i64 - delta.released as i64;
    let report = VmstatOnly {
        kind: "vmstat_only",
        duration_s: started.elapsed().as_secs_f64(),
        vmstat: VmstatCheck {
            before,
            after,
            delta,
        },
        outstanding,
        balanced: outstanding == 0,
        workload: workload.clone(),
    };
    let mut out = Output::to("--output", args.output)?;
    if args.json {
        out.json(&report)?;
    } else {
        out.text(&render(&report))?;
    }
    // A workload stopped at --duration or by a signal to pintrace did not
    // fail on its own: its code is not passed on.
    let workload = workload.filter(|_| !stopped);
    if let Some(w) = &workload {
        w.report_failure();
    }
    let verdict = if report.balanced {
        Exit::Ok
    } else {
        Exit::Findings
    };
    Ok(verdict.with_workload(workload.as_ref().map(Workload::shell_code)))
}

pub fn render(r: &VmstatOnly) -> String {
    let d = &r.vmstat.delta;
    let verdict = match r.outstanding {
        0 => "balanced".to_string(),
        n if n > 0 => format!("{n} pin(s) taken and not released"),
        n => format!("{} more released than taken (pins from before the run)", -n),
    };
    format!(
        "vmstat only (no probes; system-wide counters, {:.1} s): \
         nr_foll_pin_acquired +{}, nr_foll_pin_released +{}: {verdict}\n",
        r.duration_s, d.acquired, d.released
    )
}

/// Runs the workload (or waits for --duration or a signal); says whether
/// the workload was stopped before it ended on its own.
async fn wait(args: &VmstatOnlyArgs<'_>) -> Result<(Option<Workload>, bool)> {
    let mut stop = Stop::new()?;
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let Some((program, rest)) = args.command.split_first() else {
        tokio::select! {
            _ = deadline => {}
            _ = stop.recv() => {}
        }
        return Ok((None, false));
    };
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .spawn()
        .with_context(|| format!("starting the workload `{}`", args.command.join(" ")))?;
    let pid = child.id().unwrap_or(0);
    let status = tokio::select! {
        s = child.wait() => Some(s.context("waiting for the workload")?),
        _ = deadline => None,
        _ = stop.recv() => None,
    };
    let stopped = status.is_none();
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill().await;
            child.wait().await.context("waiting for the workload")?
        }
    };
    Ok((
        Some(Workload::new(args.command.to_vec(), pid, status)),
        stopped,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::vmstat::PinCounters;

    fn report(acq: u64, rel: u64) -> VmstatOnly {
        let before = PinCounters {
            acquired: 10,
            released: 10,
        };
        let after = PinCounters {
            acquired: 10 + acq,
            released: 10 + rel,
        };
        VmstatOnly {
            kind: "vmstat_only",
            duration_s: 1.0,
            vmstat: VmstatCheck {
                before,
                after,
                delta: before.delta_to(&after),
            },
            outstanding: acq as i64 - rel as i64,
            balanced: acq == rel,
            workload: None,
        }
    }

    #[test]
    fn says_the_balance() {
        assert!(render(&report(256, 256)).contains("+256, nr_foll_pin_released +256: balanced"));
        assert!(render(&report(256, 250)).contains("6 pin(s) taken and not released"));
        assert!(render(&report(0, 3)).contains("3 more released than taken"));
    }
}
