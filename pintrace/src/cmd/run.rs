//! `pintrace run`: attach, optionally run a workload, tally until it ends
//! (or `--duration`, SIGINT, SIGTERM), then print the summary.

use super::{
    output::Output,
    signals::Stop,
    tracing::{open_source, parse_time, pipeline_for, ReplayArgs, SessionArgs, TopStacksArgs},
};
use crate::exit::Exit;
use crate::{
    kernel::vmstat,
    ledger::Finding,
    stream::pipeline::Pipeline,
    trace::source::{Batch, Source, Speed},
    views::metrics::{self, Metrics},
    views::{
        events::{self as event_view, ProcessFilter},
        findings,
        interval::{self, Interval, IntervalClock},
        summary::{render, Summary, VmstatCheck, Workload},
    },
};
use anyhow::{Context as _, Result};
use clap::Args;
use std::{path::PathBuf, sync::Arc, time::Duration};

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Stop after this long: seconds, or with a unit (500ms, 5s, 2m)
    /// (default: when the command ends, or on Ctrl-C).
    #[arg(short, long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// JSON lines: each finding (`"type": "finding"`) as it is found, then
    /// the summary (`"type": "summary"`).
    #[arg(long)]
    pub json: bool,
    /// With --json, also every acquire, release and bio event as it is
    /// decoded (`"type": "acquire"`, `"release"`, `"folios"`, `"bio"`, ...);
    /// the full event stream (it overrides --books kernel).
    #[arg(long)]
    pub events: bool,
    /// Also report every TIME (as `perf stat -I` does): per kind, the
    /// calls, pages, releases and findings of the interval and the
    /// references held at its end; with --json, `"type": "interval"`
    /// objects. On the recorded clock in a replay.
    #[arg(short, long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    pub interval: Option<Duration>,
    /// With --interval: end the run after N intervals.
    #[arg(long, value_name = "N", requires = "interval", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Write the findings and the summary (or the JSON lines) to FILE
    /// instead of stdout, which is left to the workload.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Watch only these processes (thread-group ids; repeatable), filtered
    /// in the kernel: their acquires, bios and exits, and the releases of
    /// the pins they took, in whatever context the I/O completes. Without a
    /// COMMAND the run ends when all of them have exited. In a replay it
    /// filters the report.
    #[arg(short, long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Report only on processes with this command name (repeatable).
    #[arg(long, value_name = "COMM")]
    pub comm: Vec<String>,
    #[command(flatten)]
    pub session: SessionArgs,
    /// Write the raw event stream to FILE as it is traced (read it back with --replay).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub replay: ReplayArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub top_stacks: TopStacksArgs,
    /// No probes: compare the kernel's own pin counters (/proc/vmstat,
    /// system-wide) before and after; for kernels without kprobes and fentry.
    #[arg(long, conflicts_with_all = ["replay", "record", "attach", "stacks", "no_bio"])]
    pub vmstat_only: bool,
    /// A command to run under tracing; the run ends when it exits.
    #[arg(last = true, value_name = "COMMAND", conflicts_with = "replay")]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (ADDR: PORT or
    /// HOST:PORT, port 0 picks one; loopback only unless allowed). The chosen
    /// address is printed on stderr.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Allow --metrics on an address other hosts can reach.
    #[arg(long, requires = "metrics")]
    pub metrics_allow_remote: bool,
    /// Keep serving --metrics this long after the summary (seconds, or with
    /// a unit: 500ms, 5s, 2m), so a last scrape sees the final values
    /// (SIGINT or SIGTERM end it early).
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "metrics", allow_hyphen_values = true)]
    pub linger: Option<Duration>,
}

pub fn run(args: &RunArgs, verbose: bool) -> Result<Exit> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    if args.vmstat_only {
        return rt.block_on(super::vmstat_only::run(
            &super::vmstat_only::VmstatOnlyArgs {
                json: args.json,
                output: args.output.as_deref(),
                duration: args.duration,
                command: &args.command,
                metrics: args.metrics.metrics.is_some(),
            },
        ));
    }
    rt.block_on(run_async(args, verbose))
}

/// The summary of the run so far: the same numbers for the text, the JSON
/// and the metrics.
pub(crate) fn summarize(source: &Source, pipeline: &Pipeline) -> Result<Summary> {
    let meta = source.meta();
    let duration_s = source.now_ns().saturating_sub(meta.start_ns) as f64 / 1e9;
    let mut summary = Summary::new(
        &pipeline.ledger.tally,
        meta.kernel.clone(),
        meta.plan.clone(),
        duration_s,
        source.lost()?,
        pipeline.decode_errors,
    );
    let counted = source.counted_completions()?;
    summary.completions.requests += counted.requests;
    summary.completions.sectors += counted.sectors;
    summary.completions.errors += counted.errors;
    let model = &pipeline.model;
    summary.findings = model.findings_total;
    summary.leaks = model.leaks_by_ref.clone();
    summary.mismatches = model.mismatches_by_ref.clone();
    summary.failures = model.failures_total;
    summary.unknown_releases = pipeline.ledger.unknown_releases;
    summary.pin_lifetime = model.lifetime_summary();
    if let Some(skipped) = source.recursion_skipped() {
        let recovered =
            crate::trace::probes::counter(&source.counters()?, pintrace_common::Counter::Recovered);
        summary.recursion = Some(crate::views::summary::Recursion { skipped, recovered });
    }
    if let Some((open, peak, memory)) = source.books_usage() {
        use pintrace_common::Counter;
        let counters = source.counters()?;
        let c = |which: Counter| crate::trace::probes::counter(&counters, which);
        summary.books_mode = "kernel";
        summary.kernel_books = Some(crate::views::summary::KernelBooksUsage {
            max: source.books_max().unwrap_or(0),
            booked: c(Counter::Booked),
            balanced_releases: c(Counter::BookedReleases),
            escalated: c(Counter::Escalated),
            full: c(Counter::BooksFull),
            open_at_end: open as u64,
            open_peak: peak as u64,
            memory_peak_bytes: memory,
        });
    }
    for k in crate::ledger::Kind::ALL {
        summary
            .outstanding
            .insert(k, model.outstanding_now()[crate::model::slot(k)]);
    }
    Ok(summary)
}

/// This process's own CPU time and peak memory (not the workload's).
fn agent_usage(since_cpu_s: f64) -> Option<crate::views::summary::AgentUsage> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (user_s, system_s) = (secs(ru.ru_utime), secs(ru.ru_stime));
    Some(crate::views::summary::AgentUsage {
        user_s,
        system_s,
        tracing_cpu_s: (user_s + system_s - since_cpu_s).max(0.0),
        max_rss_kib: ru.ru_maxrss as u64,
    })
}

/// Starts `--metrics` when asked.
pub(crate) fn start_metrics(args: &MetricsArgs) -> Result<Option<Arc<Metrics>>> {
    let Some(addr) = &args.metrics else {
        return Ok(None);
    };
    let addr = metrics::parse_addr(addr, args.metrics_allow_remote)?;
    let m = Arc::new(Metrics::new());
    let bound = metrics::serve(addr, m.clone())?;
    eprintln!("pintrace: metrics at http://{bound}/metrics");
    Ok(Some(m))
}

async fn run_async(args: &RunArgs, verbose: bool) -> Result<Exit> {
    let mut opts = args
        .session
        .options(verbose, args.events || args.record.is_some());
    if args.replay.replay.is_none() {
        for &pid in &args.pid {
            if !process_alive(pid) {
                anyhow::bail!("-p/--pid {pid}: no such process");
            }
        }
        opts.pids = args.pid.clone();
    }
    if let Some(path) = &args.record {
        crate::cmd::report_file::check_writable("--record", path)?;
    }
    if let Some(path) = &args.output {
        crate::cmd::report_file::check_writable("--output", path)?;
    }
    let metrics = start_metrics(&args.metrics)?;
    let mut source = open_source(
        &args.replay,
        Speed::Max,
        opts,
        args.record.as_deref(),
        "run",
    )?;
    if source.is_live() && !args.pid.is_empty() && args.command.is_empty() {
        // Attaching takes a while: say when the watch has begun.
        eprintln!(
            "pintrace: watching {} until {} (Ctrl-C ends it sooner)",
            filter_label(&args.pid, &[]),
            if args.pid.len() == 1 {
                "it exits"
            } else {
                "they exit"
            }
        );
    }
    let vm_before = source.is_live().then(vmstat::read).flatten();
    let attached_cpu_s = agent_usage(0.0).map_or(0.0, |a| a.user_s + a.system_s);
    let mut pipeline = pipeline_for(&source, args.session.leak_age);
    if args.events && args.json {
        pipeline.echo = Some(Vec::new());
    }
    let mut out = FindingsOut {
        out: Output::to("--output", args.output.as_deref())?,
        json: args.json,
        certain: true,
        failures: 0,
        reported: 0,
        filter: ProcessFilter::new(&args.pid, &args.comm),
        last_interval: None,
    };
    let workload = trace(
        args,
        &mut source,
        &mut pipeline,
        &mut out,
        metrics.as_deref(),
    )
    .await?;

    let lost = source.lost()?;
    // Findings at the end are stated as certain only for a lossless run.
    out.certain = lost.values().all(|&v| v == 0) && pipeline.decode_errors == 0;
    let mut last = Vec::new();
    // The refcount audit: pins whose references left without an unpin.
    let audited = source.audit(&mut pipeline, &mut last)?;
    pipeline.finish(source.now_ns(), &mut last);
    out.emit(&source, &last)?;
    let recorded = source.finish(&pipeline)?;
    let mut summary = summarize(&source, &pipeline)?;
    summary.audited_folios = audited;
    summary.top_stacks = args.top_stacks.table(&source, &pipeline);
    if out.filter.is_active() {
        let filter = &mut out.filter;
        summary
            .processes
            .retain(|p| filter.matches(p.tgid, Some(&p.comm)));
        summary.findings = out.reported;
        summary.failures = out.failures;
        summary.filter = Some(filter_label(&args.pid, &args.comm));
        if source.is_live() && !args.pid.is_empty() {
            summary.filtered_in_kernel = Some(filter_label(&args.pid, &[]));
        }
    }
    if let (Some(before), Some(after)) = (vm_before, vmstat::read()) {
        summary.vmstat = Some(VmstatCheck {
            before,
            after,
            delta: before.delta_to(&after),
        });
    }
    summary.workload = workload.clone();
    if source.is_live() {
        summary.agent = agent_usage(attached_cpu_s);
    }
    if let Some(m) = &metrics {
        m.update(&summary, &source.meta().mode);
    }
    if args.json {
        out.out.json(&summary)?;
    } else {
        out.out.text(&render(&summary))?;
    }
    if let Some((path, bytes, records)) = recorded {
        eprintln!("pintrace: recorded {records} records ({bytes} bytes) to {path}");
    }
    if let (Some(_), Some(d)) = (&metrics, args.metrics.linger) {
        linger(d).await?;
    }
    if let Some(damage) = source.damage() {
        return Err(anyhow::anyhow!(
            "{damage} (the summary above covers the records before it)"
        ));
    }
    if let Some(w) = &workload {
        w.report_failure();
    }
    let verdict = if out.failures > 0 {
        Exit::Findings
    } else {
        Exit::Ok
    };
    Ok(verdict.with_workload(workload.as_ref().map(Workload::shell_code)))
}

/// Whether a process (thread group) with this id runs: a zombie has
/// exited (its parent has yet to reap it).
fn process_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and
        // may hold any character.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X")),
        Err(_) => false,
    }
}

/// `--pid`/`--comm` as the summary names them: `pid 42, 43, comm dd`.
fn filter_label(pids: &[u32], comms: &[String]) -> String {
    let mut parts = Vec::new();
    if !pids.is_empty() {
        let p: Vec<String> = pids.iter().map(u32::to_string).collect();
        parts.push(format!("pid {}", p.join(", ")));
    }
    if !comms.is_empty() {
        parts.push(format!("comm {}", comms.join(", ")));
    }
    parts.join(", ")
}

/// Keeps the process (and the metrics thread) up for `d`, or until
/// SIGINT or SIGTERM.
async fn linger(d: Duration) -> Result<()> {
    let mut stop = Stop::new()?;
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.recv() => {}
    }
    Ok(())
}

/// Where findings go as they are found, with their stacks resolved.
struct FindingsOut {
    out: Output,
    json: bool,
    certain: bool,
    failures: u64,
    reported: u64,
    filter: ProcessFilter,
    /// The summary at the last `--interval` report.
    last_interval: Option<Summary>,
}

impl FindingsOut {
    /// An `--interval` report: the change since the last one.
    fn interval(&mut self, index: u64, source: &Source, pipeline: &Pipeline) -> Result<()> {
        let mut now = summarize(source, pipeline)?;
        // What the ledger holds now, not the model's last tick's sample.
        let held = crate::model::held_by_kind(&pipeline.ledger);
        for k in crate::ledger::Kind::ALL {
            now.outstanding.insert(k, held[crate::model::slot(k)]);
        }
        let i = Interval::between(index, self.last_interval.as_ref(), &now);
        if self.json {
            self.out.json(&i)?;
        } else {
            if index == 1 {
                self.out.text(&interval::header())?;
            }
            self.out.text(&interval::render(&i))?;
        }
        self.last_interval = Some(now);
        Ok(())
    }

    /// `--events`: the events decoded since the last call.
    fn echo(&mut self, pipeline: &mut Pipeline) -> Result<()> {
        let Some(events) = pipeline.echo.as_mut() else {
            return Ok(());
        };
        for e in events.drain(..) {
            if self.filter.shows(&e) {
                self.out.json(&event_view::to_json(&e))?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, source: &Source, found: &[Finding]) -> Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        // Once the probes lost an event, no finding is stated as certain:
        // the lost event may be the release (or acquire) that explains it.
        let lossless_so_far = source
            .lost()
            .is_ok_and(|lost| lost.values().all(|&v| v == 0));
        for f in found {
            if !self.filter.matches(f.tgid, Some(&f.comm)) {
                continue;
            }
            let stack = source.stack(f.stack_id);
            let report = findings::Report {
                kind: "finding",
                certain: self.certain && lossless_so_far,
                finding: f,
                stack: &stack,
            };
            if self.json {
                self.out.json(&report)?;
            } else {
                self.out.text(&findings::render(&report))?;
            }
            self.reported += 1;
            if f.kind.is_failure() {
                self.failures += 1;
            }
        }
        Ok(())
    }
}

/// Feeds the pipeline until the workload ends, the duration passes, the
/// recording ends or a signal arrives; returns the workload's outcome.
async fn trace(
    args: &RunArgs,
    source: &mut Source,
    pipeline: &mut Pipeline,
    out: &mut FindingsOut,
    metrics: Option<&Metrics>,
) -> Result<Option<Workload>> {
    let mut found = Vec::new();
    let mut child = match args.command.split_first() {
        Some((program, rest)) => Some(
            tokio::process::Command::new(program)
                .args(rest)
                // An error (a closed stdout among them) must not leave the
                // workload running on its own.
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the workload `{}`", args.command.join(" ")))?,
        ),
        None => None,
    };
    let pid = child.as_ref().and_then(|c| c.id()).unwrap_or(0);
    // Made before the loop, so a signal during a batch is kept (signals.rs).
    let mut stop = Stop::new()?;
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let live = source.is_live();
    let mut clock = args
        .interval
        .map(|d| IntervalClock::new(d, source.meta().start_ns, args.count));
    source.hold_at(clock.as_ref().map(IntervalClock::next_ns));
    // `-p` without a command: the run ends with the processes it watches.
    let watched = if live && child.is_none() {
        args.pid.clone()
    } else {
        Vec::new()
    };
    let mut workload = None;
    loop {
        // Live: a timer to the next boundary. A replay is on its recorded
        // clock, checked after each batch.
        let next_interval = match &clock {
            Some(c) if live => c.until_next(source.now_ns()),
            _ => Duration::MAX,
        };
        tokio::select! {
            b = source.next_batch(pipeline, &mut found) => {
                if b? == Batch::End {
                    break;
                }
            }
            _ = tokio::time::sleep(next_interval), if next_interval != Duration::MAX => {}
            _ = ticker.tick() => {
                // A replay ticks the pipeline on its recorded clock.
                if live {
                    source.tick(pipeline, &mut found)?;
                    source.checkpoint(pipeline)?;
                }
                if let Some(m) = metrics {
                    m.update(&summarize(source, pipeline)?, &source.meta().mode);
                }
                if !watched.is_empty() && !watched.iter().any(|&p| process_alive(p)) {
                    break;
                }
            }
            status = async { child.as_mut().unwrap().wait().await }, if child.is_some() => {
                let status = status.context("waiting for the workload")?;
                workload = Some(Workload::new(args.command.clone(), pid, status));
                break;
            }
            _ = stop.recv() => break,
            _ = &mut deadline => break,
        }
        out.echo(pipeline)?;
        if !found.is_empty() {
            out.emit(source, &found)?;
            found.clear();
        }
        if let Some(c) = clock.as_mut() {
            while c.due(source.now_ns()) {
                out.interval(c.done, source, pipeline)?;
            }
            source.hold_at(Some(c.next_ns()));
            if c.finished() {
                break;
            }
        }
    }
    if let Some(mut c) = child {
        if workload.is_none() {
            let _ = c.kill().await;
        }
    }
    // Records submitted before the stop are all in the ring by now.
    if live {
        source.drain(pipeline, &mut found)?;
    }
    out.echo(pipeline)?;
    out.emit(source, &found)?;
    Ok(workload)
}

#[cfg(test)]
mod tests {
    use super::process_alive;

    /// `-p`'s end of run: a process that exited counts as gone even while
    /// its parent has not reaped it.
    #[test]
    fn a_zombie_is_not_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) {
            assert!(std::time::Instant::now() < deadline, "true never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "still a zombie"
        );
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
