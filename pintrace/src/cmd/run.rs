//! `pintrace run`: attach, optionally run a workload, tally until it ends
//! (or `--duration`, SIGINT, SIGTERM), then print the summary.

use super::{exit, startup};
use crate::{
    caps,
    events::decode,
    flags::FollFlags,
    ledger::{Finding, Ledger, LedgerConfig},
    plan::Preference,
    probes::{EventSource, LoadOptions, Probes},
    symbols::Kallsyms,
    views::{
        findings,
        summary::{render, Summary, VmstatCheck, Workload},
    },
    vmstat,
};
use anyhow::{bail, Context as _, Result};
use clap::Args;
use std::{collections::BTreeMap, time::Duration};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Stop after this many seconds (default: when the command ends, or on Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_hyphen_values = true)]
    pub duration: Option<f64>,
    /// Print the summary as one JSON object (`"type": "summary"`).
    #[arg(long)]
    pub json: bool,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 4, value_parser = parse_ringbuf_mib, allow_hyphen_values = true)]
    pub ringbuf_mib: u32,
    /// Report non-long-term pins held longer than this many seconds as leaks.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_hyphen_values = true)]
    pub leak_age: Option<f64>,
    /// How to attach: fentry/fexit where they load (auto), or force one method.
    #[arg(long, value_enum, default_value_t = Preference::Auto)]
    pub attach: Preference,
    /// A command to run under tracing; the run ends when it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v <= 31_536_000.0) {
        return Err(format!("`{s}` must be more than 0 and at most one year"));
    }
    Ok(v)
}

fn parse_ringbuf_mib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of MiB"))?;
    if v == 0 || v > 1024 || !v.is_power_of_two() {
        return Err(format!("`{s}` must be a power of two from 1 to 1024"));
    }
    Ok(v)
}

pub fn run(args: &RunArgs, verbose: bool) -> Result<u8> {
    if let caps::Availability::No(why) = caps::privileges() {
        bail!("pintrace run: {why}");
    }
    let opts = LoadOptions {
        ringbuf_bytes: args.ringbuf_mib << 20,
        rq_layout: None,
        struct_offsets: Default::default(),
        verbose,
    };
    let mut s = startup(args.attach, &opts)?;
    let plan = s.plan.map_err(anyhow::Error::new)?;
    let mut probes = s.probes.take().context("probes were not loaded")?;
    probes.attach(&plan)?;
    let events = probes.take_events()?;
    let flags = FollFlags::for_release(&s.caps.release);
    let vm_before = vmstat::read();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let config = LedgerConfig {
        leak_age_ns: args.leak_age.map(|s| (s * 1e9) as u64),
        ..LedgerConfig::default()
    };
    let mut out = FindingsOut {
        json: args.json,
        kallsyms: Kallsyms::load(),
        probes: &probes,
        certain: true,
        failures: 0,
        reported: 0,
    };
    let started = std::time::Instant::now();
    let mut outcome = rt.block_on(trace(args, events, Ledger::new(flags, config), &mut out))?;
    let duration_s = started.elapsed().as_secs_f64();

    let lost: BTreeMap<&'static str, u64> = probes
        .counters()?
        .into_iter()
        .filter(|(c, _)| c.is_loss())
        .map(|(c, v)| (c.name(), v))
        .collect();
    // Findings at the end are stated as certain only for a lossless run.
    out.certain = lost.values().all(|&v| v == 0) && outcome.decode_errors == 0;
    let mut last = Vec::new();
    outcome.ledger.finish(monotonic_ns(), &mut last);
    out.emit(&last);
    let mut summary = Summary::new(
        &outcome.ledger.tally,
        s.caps.release.clone(),
        plan.summary(),
        duration_s,
        lost,
        outcome.decode_errors,
    );
    summary.findings = out.reported;
    summary.failures = out.failures;
    summary.unknown_releases = outcome.ledger.unknown_releases;
    if let (Some(before), Some(after)) = (vm_before, vmstat::read()) {
        summary.vmstat = Some(VmstatCheck {
            before,
            after,
            delta: before.delta_to(&after),
        });
    }
    summary.workload = outcome.workload.clone();
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    if out.failures > 0 {
        return Ok(exit::FINDINGS);
    }
    match outcome.workload {
        Some(Workload {
            exit_code: Some(0), ..
        })
        | None => Ok(exit::OK),
        Some(w) => {
            eprintln!(
                "pintrace: the workload `{}` did not succeed ({})",
                w.command.join(" "),
                w.exit_code
                    .map(|c| format!("exit {c}"))
                    .unwrap_or_else(|| "killed by a signal".into())
            );
            Ok(exit::ERROR)
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Where findings go as they are found: stdout, with their stacks resolved.
struct FindingsOut<'a> {
    json: bool,
    kallsyms: Kallsyms,
    probes: &'a Probes,
    certain: bool,
    failures: u64,
    reported: u64,
}

impl FindingsOut<'_> {
    fn emit(&mut self, found: &[Finding]) {
        for f in found {
            let stack: Vec<String> = self
                .probes
                .stack(f.stack_id)
                .unwrap_or_default()
                .into_iter()
                .map(|ip| self.kallsyms.resolve(ip))
                .collect();
            let report = findings::Report {
                kind: "finding",
                certain: self.certain,
                finding: f,
                stack: &stack,
            };
            if self.json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => log::error!("serialising a finding: {e}"),
                }
            } else {
                print!("{}", findings::render(&report));
            }
            self.reported += 1;
            if f.kind.is_failure() {
                self.failures += 1;
            }
        }
    }
}

struct Outcome {
    ledger: Ledger,
    decode_errors: u64,
    workload: Option<Workload>,
}

async fn trace(
    args: &RunArgs,
    events: EventSource,
    mut ledger: Ledger,
    out: &mut FindingsOut<'_>,
) -> Result<Outcome> {
    // SAFETY: EventSource owns the ring buffer map, whose fd stays open and
    // unchanged until the AsyncFd (which owns the EventSource) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
    let mut decode_errors = 0u64;
    let mut found = Vec::new();
    let mut consume =
        |record: &[u8], ledger: &mut Ledger, found: &mut Vec<Finding>| match decode(record) {
            Ok(ev) => ledger.apply(&ev, found),
            Err(e) => {
                decode_errors += 1;
                log::warn!("undecodable record: {e}");
            }
        };
    let mut child = match args.command.split_first() {
        Some((program, rest)) => Some(
            tokio::process::Command::new(program)
                .args(rest)
                .spawn()
                .with_context(|| format!("starting the workload `{}`", args.command.join(" ")))?,
        ),
        None => None,
    };
    let pid = child.as_ref().and_then(|c| c.id()).unwrap_or(0);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut workload = None;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                guard.get_inner_mut().drain(|r| consume(r, &mut ledger, &mut found));
                guard.clear_ready();
            }
            _ = ticker.tick() => ledger.tick(monotonic_ns(), &mut found),
            status = async { child.as_mut().unwrap().wait().await }, if child.is_some() => {
                let status = status.context("waiting for the workload")?;
                workload = Some(Workload {
                    command: args.command.clone(),
                    pid,
                    exit_code: status.code(),
                });
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
        }
        if !found.is_empty() {
            out.emit(&found);
            found.clear();
        }
    }
    if let Some(mut c) = child {
        if workload.is_none() {
            let _ = c.kill().await;
        }
    }
    // Records submitted before the stop are all in the ring by now.
    ring.get_mut()
        .drain(|r| consume(r, &mut ledger, &mut found));
    out.emit(&found);
    Ok(Outcome {
        ledger,
        decode_errors,
        workload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_checked() {
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("abc").unwrap_err().contains("abc"));
        assert_eq!(parse_secs("1.5"), Ok(1.5));
        assert!(parse_ringbuf_mib("3").is_err());
        assert!(parse_ringbuf_mib("0").is_err());
        assert!(parse_ringbuf_mib("2048").is_err());
        assert_eq!(parse_ringbuf_mib("8"), Ok(8));
    }
}
