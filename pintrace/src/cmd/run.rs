//! `pintrace run`: attach, optionally run a workload, tally until it ends
//! (or `--duration`, SIGINT, SIGTERM), then print the summary.

use super::{exit, startup};
use crate::{
    caps,
    events::decode,
    flags::FollFlags,
    ledger::Tally,
    plan::Preference,
    probes::{EventSource, LoadOptions},
    views::summary::{render, Summary, VmstatCheck, Workload},
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
    /// How to attach: fexit where it loads (auto), or force one method.
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
    let started = std::time::Instant::now();
    let outcome = rt.block_on(trace(args, events, Tally::new(flags)))?;
    let duration_s = started.elapsed().as_secs_f64();

    let lost: BTreeMap<&'static str, u64> = probes
        .counters()?
        .into_iter()
        .filter(|(c, _)| c.is_loss())
        .map(|(c, v)| (c.name(), v))
        .collect();
    let mut summary = Summary::new(
        &outcome.tally,
        s.caps.release.clone(),
        plan.summary(),
        duration_s,
        lost,
        outcome.decode_errors,
    );
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

struct Outcome {
    tally: Tally,
    decode_errors: u64,
    workload: Option<Workload>,
}

async fn trace(args: &RunArgs, events: EventSource, mut tally: Tally) -> Result<Outcome> {
    // SAFETY: EventSource owns the ring buffer map, whose fd stays open and
    // unchanged until the AsyncFd (which owns the EventSource) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
    let mut decode_errors = 0u64;
    let mut consume = |record: &[u8], tally: &mut Tally| match decode(record) {
        Ok(ev) => tally.apply(&ev),
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
    let mut workload = None;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                guard.get_inner_mut().drain(|r| consume(r, &mut tally));
                guard.clear_ready();
            }
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
    }
    if let Some(mut c) = child {
        if workload.is_none() {
            let _ = c.kill().await;
        }
    }
    // Records submitted before the stop are all in the ring by now.
    ring.get_mut().drain(|r| consume(r, &mut tally));
    Ok(Outcome {
        tally,
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
