//! `pintrace run`: attach, optionally run a workload, tally until it ends
//! (or `--duration`, SIGINT, SIGTERM), then print the summary.

use super::exit;
use crate::{
    ledger::{Finding, Ledger, LedgerConfig},
    pipeline::Pipeline,
    plan::Preference,
    session::{monotonic_ns, Session, SessionOptions},
    views::{
        findings,
        summary::{render, Summary, VmstatCheck, Workload},
    },
    vmstat,
};
use anyhow::{Context as _, Result};
use clap::Args;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(run_async(args, verbose))
}

async fn run_async(args: &RunArgs, verbose: bool) -> Result<u8> {
    let opts = SessionOptions {
        attach: args.attach,
        ringbuf_mib: args.ringbuf_mib,
        verbose,
    };
    let mut session = Session::start(&opts, "run")?;
    let vm_before = vmstat::read();
    let config = LedgerConfig {
        leak_age_ns: args.leak_age.map(|s| (s * 1e9) as u64),
        ..LedgerConfig::default()
    };
    let mut pipeline = Pipeline::new(Ledger::new(session.flags, config));
    let mut out = FindingsOut {
        json: args.json,
        certain: true,
        failures: 0,
        reported: 0,
    };
    let started = std::time::Instant::now();
    let workload = trace(args, &mut session, &mut pipeline, &mut out).await?;
    let duration_s = started.elapsed().as_secs_f64();

    let lost = session.lost()?;
    // Findings at the end are stated as certain only for a lossless run.
    out.certain = lost.values().all(|&v| v == 0) && pipeline.decode_errors == 0;
    let mut last = Vec::new();
    // The refcount audit: pins whose references left without an unpin.
    let read_ns = monotonic_ns();
    let candidates = pipeline.ledger.audit_candidates(read_ns);
    let audited = session.audit(&candidates)?;
    session.drain(|r| pipeline.feed(r, &mut last));
    if let Some(slots) = &audited {
        for s in slots {
            pipeline
                .ledger
                .audit(s.folio, s.refcount, s.large != 0, read_ns, &mut last);
        }
    }
    pipeline.ledger.finish(monotonic_ns(), &mut last);
    out.emit(&session, &last);
    let mut summary = Summary::new(
        &pipeline.ledger.tally,
        session.caps.release.clone(),
        session.plan.summary(),
        duration_s,
        lost,
        pipeline.decode_errors,
    );
    summary.findings = out.reported;
    summary.failures = out.failures;
    summary.unknown_releases = pipeline.ledger.unknown_releases;
    summary.audited_folios = audited.map(|a| a.len() as u64);
    if let (Some(before), Some(after)) = (vm_before, vmstat::read()) {
        summary.vmstat = Some(VmstatCheck {
            before,
            after,
            delta: before.delta_to(&after),
        });
    }
    summary.workload = workload.clone();
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    if out.failures > 0 {
        return Ok(exit::FINDINGS);
    }
    match workload {
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

/// Where findings go as they are found: stdout, with their stacks resolved.
struct FindingsOut {
    json: bool,
    certain: bool,
    failures: u64,
    reported: u64,
}

impl FindingsOut {
    fn emit(&mut self, session: &Session, found: &[Finding]) {
        for f in found {
            let stack = session.stack(f.stack_id);
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

/// Feeds the pipeline until the workload ends, the duration passes or a
/// signal arrives; returns the workload's outcome.
async fn trace(
    args: &RunArgs,
    session: &mut Session,
    pipeline: &mut Pipeline,
    out: &mut FindingsOut,
) -> Result<Option<Workload>> {
    let mut found = Vec::new();
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
            n = session.next_batch(|r| pipeline.feed(r, &mut found)) => { n?; }
            _ = ticker.tick() => pipeline.ledger.tick(monotonic_ns(), &mut found),
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
            out.emit(session, &found);
            found.clear();
        }
    }
    if let Some(mut c) = child {
        if workload.is_none() {
            let _ = c.kill().await;
        }
    }
    // Records submitted before the stop are all in the ring by now.
    session.drain(|r| pipeline.feed(r, &mut found));
    out.emit(session, &found);
    Ok(workload)
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
