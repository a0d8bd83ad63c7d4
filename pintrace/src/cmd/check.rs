//! `pintrace check`: attach once, then run each selected scenario (the
//! engine in a child process, on its target) and judge it by what that
//! child's process took and released; print a table, `--json`, `--junit`.

use crate::exit::Exit;
use crate::{
    check::{
        devices::{self, DmDevice, ScratchDevices},
        judge::{self, EngineOut, Observed},
        results::{CheckReport, FindingOut, Held, ScenarioResult, Status},
        select,
        targets::{self, Prepared, Ready},
        Drive, Scenario, TargetKind,
    },
    cmd::{output::Output, report_file},
    kernel::vmstat,
    ledger::{Finding, Kind, Ledger, LedgerConfig},
    stream::pipeline::Pipeline,
    trace::plan::Preference,
    trace::session::{monotonic_ns, Session, SessionOptions},
    views::{check as table, junit, ktap},
};
use anyhow::{anyhow, Context as _, Result};
use clap::Args;
use pintrace_engine::BufferKind;
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

#[derive(Args, Debug, Clone)]
#[command(after_help = "\
Scenario names are TARGET/MODE/BUFFER/DIRECTION[/FAULT], e.g. block/io_uring-fixed/anon/write \
or block/psync/anon/read/hole, and regress/NAME for the patterns of real kernel bugs; `--list` \
shows them all, by family (fs, buffers, nvme, sg, legacy, nfs, subpage, fault, regress). \
Targets: block (a loop device), nvme and scsi (the devices given with --scratch-device), \
scsi-debug (a scsi_debug RAM disk, loaded when absent), ext4, xfs, btrfs, vfat, udf (made on loop \
devices), fuse (a passthrough FUSE file system with direct_io), nfs (NFSv4.2 over a loopback \
export of the kernel's nfsd). A target the kernel or the system lacks is skipped with the reason.

Each scenario passes when the engine's process took exactly the pages its I/O spans, released \
every FOLL_PIN and long-term pin it took, no finding involves it, no event was lost, and the \
vmstat pin counters moved at least as much as the pins traced for it.

Exit status: 0 all passed; 1 a scenario failed or a finding fails the run; 2 could not run \
(bad arguments, missing privileges or kernel features, a scenario that could not be set up).

Examples:
  pintrace check --quick
  pintrace check --scenarios 'ext4/*,*/aio/*' --junit check.xml
  pintrace check --quick --ktap check.ktap
  pintrace check --scenarios sg,fault --scratch-device /dev/sdb
  pintrace check --list")]
pub struct CheckArgs {
    /// Only the scenarios whose names or families match: comma-separated
    /// globs (`block/*`, `*/io_uring-fixed/*`, `ext4/psync/anon/read`, `sg`).
    #[arg(long, value_name = "PATTERN")]
    pub scenarios: Option<String>,
    /// The quick set: every mode and buffer kind at least once, on block,
    /// ext4 and FUSE.
    #[arg(long)]
    pub quick: bool,
    /// List the selected scenarios and exit (with --json: one object per
    /// line, `"type": "scenario"`).
    #[arg(long)]
    pub list: bool,
    /// Print the report as one JSON object (`"type": "check"`); progress
    /// goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Also write a JUnit XML report to FILE (one test case per scenario).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write a KTAP version 1 report to FILE (the kernel selftests'
    /// format: `ok N name`, `not ok N name` after `#` lines saying why,
    /// `ok N name # SKIP reason`); written also when check cannot run.
    #[arg(long, value_name = "FILE")]
    pub ktap: Option<PathBuf>,
    /// Also write the reports to DIR (made if missing): check.json (as
    /// `--json` prints it) and check.xml (JUnit), each replaced whole when
    /// the check ends.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where loop device images, mount points and scratch files go
    /// (default: a new directory under /tmp); removed at the end.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// How to attach: fentry/fexit where they load (auto), or force one method.
    #[arg(long, value_enum, default_value_t = Preference::Auto)]
    pub attach: Preference,
    /// A whole NVMe namespace or SCSI disk the nvme and scsi scenarios may
    /// write: ITS DATA IS DESTROYED. Repeat for one of each.
    #[arg(long = "scratch-device", value_name = "DEV")]
    pub scratch_device: Vec<PathBuf>,
}

const CAP_SYS_ADMIN: u32 = 21;

/// `check` sets up loop devices and mounts besides loading probes.
fn privileges_missing() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    (cap_eff & (1 << CAP_SYS_ADMIN) == 0).then(|| {
        "pintrace check needs CAP_SYS_ADMIN (loop devices, mounts, FUSE) and CAP_BPF with \
         CAP_PERFMON (the probes): run it as root"
            .to_owned()
    })
}

pub fn run(args: &CheckArgs, verbose: bool) -> Result<Exit> {
    // Errors go back to `main`, which says them on stderr and, with
    // --json, as the error object on stdout.
    let selected = select(args.quick, args.scenarios.as_deref()).map_err(|e| anyhow!("{e}"))?;
    if args.list {
        let mut out = Output::stdout();
        for s in &selected {
            if args.json {
                out.json(&serde_json::json!({
                    "type": "scenario",
                    "name": s.to_string(),
                    "scenario": s,
                }))?;
            } else {
                out.line(&s.to_string())?;
            }
        }
        return Ok(Exit::Ok);
    }
    let devices = devices::scratch_devices(&args.scratch_device)?;
    // Report destinations are checked before anything is set up.
    let junit = args
        .junit
        .as_deref()
        .map(|j| report_file::check_writable("--junit", j));
    let ktap = args
        .ktap
        .as_deref()
        .map(|k| report_file::check_writable("--ktap", k));
    let out = args
        .out
        .as_deref()
        .map(|d| report_file::check_dir_writable("--out", d));
    if let Some(Err(e)) = junit
        .into_iter()
        .chain(ktap)
        .chain(out)
        .find(Result::is_err)
    {
        return Err(e);
    }
    let result = match privileges_missing() {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the event loop")
            .and_then(|rt| rt.block_on(run_async(args, selected, &devices, verbose))),
    };
    match result {
        Err(e) if !super::output::is_broken_pipe(&e) => {
            // The report files are written also now: a CI's report step
            // then shows the reason, not an empty file.
            let why = format!("{e:#}");
            write_reports(args, &CheckReport::could_not_run(args.quick, why))?;
            Err(e)
        }
        r => r,
    }
}

/// Writes `--junit FILE`, `--ktap FILE` and `--out DIR`'s reports, when
/// asked.
fn write_reports(args: &CheckArgs, report: &CheckReport) -> Result<()> {
    if let Some(path) = &args.junit {
        report_file::write_atomic("--junit", path, junit::render(report)?.as_bytes())?;
    }
    if let Some(path) = &args.ktap {
        report_file::write_atomic("--ktap", path, ktap::render(report).as_bytes())?;
    }
    if let Some(dir) = &args.out {
        let json = serde_json::to_string(&pintrace_engine::schema::versioned(report))? + "\n";
        report_file::write_atomic("--out", &dir.join("check.json"), json.as_bytes())?;
        let xml = junit::render(report)?;
        report_file::write_atomic("--out", &dir.join("check.xml"), xml.as_bytes())?;
    }
    Ok(())
}

/// The work directory, removed when dropped.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reserves huge pages for the hugetlb scenarios; restores the count on drop.
struct HugePages(Option<u64>);

impl HugePages {
    const PATH: &'static str = "/proc/sys/vm/nr_hugepages";
    const WANT_FREE: u64 = 4;

    fn reserve() -> HugePages {
        let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
        let free = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("HugePages_Free:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        match read(Self::PATH) {
            Some(n) if free < Self::WANT_FREE => {
                let _ = std::fs::write(Self::PATH, (n + Self::WANT_FREE - free).to_string());
                HugePages(Some(n))
            }
            _ => HugePages(None),
        }
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            let _ = std::fs::write(Self::PATH, n.to_string());
        }
    }
}

/// The session, the pipeline and the findings not yet attributed.
struct Tracer {
    session: Session,
    pipeline: Pipeline,
    found: Vec<Finding>,
}

impl Tracer {
    fn drain(&mut self) {
        let (p, f) = (&mut self.pipeline, &mut self.found);
        self.session.drain(|r| p.feed(r, f));
    }

    fn lost(&self) -> u64 {
        self.session
            .lost()
            .map(|m| m.values().sum())
            .unwrap_or(u64::MAX)
    }

    fn out(&self, f: Finding, certain: bool) -> FindingOut {
        FindingOut {
            stack: self.session.stack(f.stack_id),
            certain,
            finding: f,
        }
    }

    /// Feeds events for `d`, or until the ring has been quiet that long.
    async fn pump_for(&mut self, d: Duration) -> Result<()> {
        let deadline = tokio::time::sleep(d);
        tokio::pin!(deadline);
        loop {
            let (p, f) = (&mut self.pipeline, &mut self.found);
            tokio::select! {
                n = self.session.next_batch(|r| p.feed(r, f)) => { n?; }
                _ = &mut deadline => return Ok(()),
            }
        }
    }
}

async fn run_async(
    args: &CheckArgs,
    selected: Vec<Scenario>,
    devices: &ScratchDevices,
    verbose: bool,
) -> Result<Exit> {
    let started = Instant::now();
    let opts = SessionOptions {
        attach: args.attach,
        ringbuf_mib: 16,
        verbose,
        wakeup: Default::default(),
        // The judge tells FOLL_GET pages that are not I/O (futex keys,
        // exec(2)'s arguments) by their stacks: it needs every one.
        stacks: crate::trace::session::Stacks::All,
        bios: true,
        rq_records: false,
        pids: Vec::new(),
        // Every bio and its release is judged: the full event stream.
        books_max: None,
    };
    let session = Session::start(&opts, "check")?;
    let mut report = CheckReport::new(
        session.caps.release.clone(),
        session.plan.summary(),
        args.quick,
    );
    let pipeline = Pipeline::new(Ledger::new(session.flags, LedgerConfig::default()));
    let mut tracer = Tracer {
        session,
        pipeline,
        found: Vec::new(),
    };
    let base = args
        .workdir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let work = Workdir(base.join(format!("pintrace-check.{}", std::process::id())));
    std::fs::create_dir_all(&work.0)
        .with_context(|| format!("--workdir: creating {}", work.0.display()))?;
    let scratch = work.0.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let _huge = selected
        .iter()
        .any(|s| s.buffer == BufferKind::Hugetlb)
        .then(HugePages::reserve);
    let mut out = Output::stdout();
    if !args.json {
        out.text(&table::header(&report.kernel, &report.plan))?;
    }
    for target in TargetKind::ALL {
        let group: Vec<Scenario> = selected
            .iter()
            .copied()
            .filter(|s| s.target == target)
            .collect();
        if group.is_empty() {
            continue;
        }
        let prepared = targets::prepare(target, &work.0, devices);
        let ready = match prepared {
            Ok(Prepared::Ready(r)) => Some(r),
            Ok(Prepared::Skip(why)) => {
                for s in &group {
                    emit(
                        &mut out,
                        &mut report,
                        args,
                        ScenarioResult::not_run(*s, Status::Skip, why.clone()),
                    )?;
                }
                None
            }
            Err(e) => {
                let why = format!("setting up {}: {e:#}", target.name());
                for s in &group {
                    emit(
                        &mut out,
                        &mut report,
                        args,
                        ScenarioResult::not_run(*s, Status::Error, why.clone()),
                    )?;
                }
                None
            }
        };
        let Some(ready) = ready else { continue };
        for s in group {
            let r = match not_applicable(&s) {
                Some(why) => ScenarioResult::not_run(s, Status::Skip, why.into()),
                None => match on_what(&s, &ready) {
                    Ok(Ok(on)) => run_until_lossless(&mut tracer, s, &on, &scratch).await?,
                    Ok(Err(why)) => ScenarioResult::not_run(s, Status::Skip, why),
                    Err(e) => {
                        ScenarioResult::not_run(s, Status::Error, format!("setting up {s}: {e:#}"))
                    }
                },
            };
            emit(&mut out, &mut report, args, r)?;
        }
        drop(ready);
    }
    // Whatever the session saw outside every scenario.
    tracer.drain();
    let lossless = tracer.lost() == 0;
    let rest: Vec<Finding> = std::mem::take(&mut tracer.found);
    report.other_findings = rest
        .into_iter()
        .filter(|f| f.kind.is_failure())
        .map(|f| tracer.out(f, lossless))
        .collect();
    report.duration_s = started.elapsed().as_secs_f64();
    if args.json {
        out.json(&report)?;
    } else {
        out.text(&table::footer(&report))?;
    }
    write_reports(args, &report)?;
    Ok(report.exit_code())
}

fn emit(
    out: &mut Output,
    report: &mut CheckReport,
    args: &CheckArgs,
    r: ScenarioResult,
) -> std::io::Result<()> {
    let text = format!("{}{}", table::line(&r), table::lossy_runs(&r));
    if args.json {
        eprint!("check: {text}");
    } else {
        out.text(&text)?;
    }
    report.push(r);
    Ok(())
}

/// What one scenario's engine runs on: the target's device or directory,
/// the NVMe generic char device for passthrough, or a device-mapper device
/// over the target for the faults made by one.
struct On<'a> {
    path: PathBuf,
    is_block: bool,
    describe: String,
    _dm: Option<DmDevice>,
    _ready: std::marker::PhantomData<&'a Ready>,
}

fn on_what<'a>(s: &Scenario, ready: &'a Ready) -> Result<std::result::Result<On<'a>, String>> {
    let mut on = On {
        path: ready.path.clone(),
        is_block: ready.is_block,
        describe: ready.describe.clone(),
        _dm: None,
        _ready: std::marker::PhantomData,
    };
    if matches!(s.drive, Drive::UringCmd | Drive::UringCmdFixed) {
        match &ready.generic {
            Some(g) => on.path = g.clone(),
            None => {
                return Ok(Err(format!(
                    "{} has no NVMe generic char device (/dev/ngXnY: CONFIG_NVME_CORE 5.13 on)",
                    ready.path.display()
                )))
            }
        }
    }
    if let Some(f) = s.fault.filter(|f| f.device_mapper()) {
        match DmDevice::new(f, &ready.path)? {
            Ok(dm) => {
                on.describe = format!("{} ({} over {})", dm.path.display(), f.name(), on.describe);
                on.path = dm.path.clone();
                on._dm = Some(dm);
            }
            Err(why) => return Ok(Err(why)),
        }
    }
    Ok(Ok(on))
}

/// Scenarios whose I/O never reaches a Direct I/O path on that target.
fn not_applicable(s: &Scenario) -> Option<&'static str> {
    (s.target == TargetKind::Btrfs
        && matches!(s.drive, Drive::PvsyncUnaligned | Drive::PvsyncSubpage))
    .then_some(
        "btrfs serves O_DIRECT through the page cache when the iovecs are not aligned to its \
         sector size: no user page is pinned",
    )
}

/// Why an engine refusal is a skip (the kernel or system does not offer
/// the combination) rather than a failure to run.
fn skip_reason(s: &Scenario, stderr: &str, out: Option<&EngineOut>) -> Option<String> {
    let line = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start_matches("pintrace engine: ")
        .to_owned();
    if s.buffer == BufferKind::Hugetlb && stderr.contains("--buffer hugetlb") {
        return Some(format!("no huge pages: {line}"));
    }
    if s.drive == Drive::IoUringFixed && stderr.contains("register_buffers") {
        return Some(format!("buffers cannot be registered here: {line}"));
    }
    if s.buffer == BufferKind::Thp && stderr.contains("MADV_HUGEPAGE") {
        return Some(line);
    }
    let einval = out.is_some_and(|o| !o.io_errors.is_empty()) && stderr.contains("EINVAL")
        || stderr.contains("Invalid argument");
    if s.drive == Drive::PvsyncUnaligned && einval {
        return Some(format!(
            "the kernel refuses iovecs aligned only to the DMA alignment on this target: {line}"
        ));
    }
    None
}

/// Runs of a scenario after one that lost events: a real bug comes back
/// in a run without loss, a loss of the tracer's own (under emulation an
/// unpin in an interrupt nested in a probe's run is skipped by the kernel
/// now and then) does not.
const LOSSY_RERUNS: usize = 2;

async fn run_until_lossless(
    t: &mut Tracer,
    s: Scenario,
    ready: &On<'_>,
    scratch: &Path,
) -> Result<ScenarioResult> {
    let mut lossy = Vec::new();
    loop {
        let mut r = run_scenario(t, s, ready, scratch).await?;
        let lost = r.observed.as_ref().map_or(0, |o| o.lost);
        if lost == 0 || lossy.len() == LOSSY_RERUNS {
            r.lossy_runs = lossy;
            return Ok(r);
        }
        lossy.push(lost);
    }
}

async fn run_scenario(
    t: &mut Tracer,
    s: Scenario,
    ready: &On<'_>,
    scratch: &Path,
) -> Result<ScenarioResult> {
    let started = Instant::now();
    t.drain();
    let t0 = monotonic_ns();
    let lost0 = t.lost();
    let dec0 = t.pipeline.decode_errors;
    let unknown0 = t.pipeline.ledger.unknown_releases;
    let bios0 = t.pipeline.ledger.tally.bios;
    let vm0 = vmstat::read();
    let args = s.engine_args(&ready.path, ready.is_block, scratch);
    let child = tokio::process::Command::new("/proc/self/exe")
        .arg("engine")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the engine (/proc/self/exe engine)")?;
    let pid = child.id().unwrap_or(0);
    let output = child.wait_with_output();
    tokio::pin!(output);
    let output = loop {
        let (p, f) = (&mut t.pipeline, &mut t.found);
        tokio::select! {
            n = t.session.next_batch(|r| p.feed(r, f)) => { n?; }
            o = &mut output => break o.context("waiting for the engine")?,
        }
    };
    // Completions of the child's last I/O (and teardown in kernel workers)
    // may still be on their way: wait, up to a bound, for its pins to go.
    let settle = Instant::now();
    loop {
        t.pump_for(Duration::from_millis(50)).await?;
        let held = t.pipeline.ledger.outstanding_of(pid);
        let pins = held.get(&Kind::Pin).copied().unwrap_or(0)
            + held.get(&Kind::LongtermPin).copied().unwrap_or(0);
        if pins == 0 || settle.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    t.drain();
    let t1 = monotonic_ns();
    // The workload has exited: no acquire of its is in flight to explain a
    // mismatch the ledger holds as a suspect.
    t.pipeline.ledger.flush_suspects(&mut t.found);
    // Pins it still holds are leaks, unless their references are gone: a
    // pin released with put_page. The refcount tells, read now.
    let folios = t.pipeline.ledger.pinned_folios_of(pid);
    if !folios.is_empty() {
        let read_ns = monotonic_ns();
        if let Some(slots) = t.session.audit(&folios)? {
            t.drain();
            t.pipeline.audit(&slots, read_ns, &mut t.found);
        }
    }
    t.pipeline.ledger.report_leaks_of(pid, t1, &mut t.found);
    let vm1 = vmstat::read();
    let lost = t.lost().saturating_sub(lost0);
    let decode_errors = t.pipeline.decode_errors - dec0;
    let certain = lost == 0 && decode_errors == 0;

    // This scenario's findings: its process took or released the pages, or
    // a mismatch happened in its window (releases run in any context).
    let (mine, others): (Vec<Finding>, Vec<Finding>) =
        std::mem::take(&mut t.found).into_iter().partition(|f| {
            f.tgid == pid
                || f.holder.is_some_and(|h| h.tgid == pid)
                || (f.kind.is_mismatch() && (t0..=t1).contains(&f.at_ns))
        });
    t.found = others;
    let findings: Vec<FindingOut> = mine
        .into_iter()
        .filter(|f| f.kind.is_failure())
        .map(|f| t.out(f, certain))
        .collect();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let engine: Option<EngineOut> = serde_json::from_str(&stdout).ok();
    let code = output.status.code();
    let mut result = ScenarioResult::not_run(s, Status::Pass, String::new());
    result.reason = None;
    result.target = Some(ready.describe.clone());
    result.duration_s = started.elapsed().as_secs_f64();
    result.findings = findings;
    let engine = match (code, engine) {
        (Some(0), Some(e)) => e,
        (_, e) => {
            if let Some(why) = skip_reason(&s, &stderr, e.as_ref()) {
                result.status = Status::Skip;
                result.reason = Some(why);
            } else {
                result.status = Status::Error;
                result.reason = Some(format!(
                    "the engine {}: {}",
                    match code {
                        Some(c) => format!("exited with {c}"),
                        None => "was killed by a signal".into(),
                    },
                    stderr.trim()
                ));
            }
            if !result.findings.is_empty() {
                result.status = Status::Fail;
            }
            return Ok(result);
        }
    };
    let ledger = &t.pipeline.ledger;
    let process = ledger.tally.process(pid);
    // FOLL_GET references stay held in the ledger (put_page is invisible):
    // those of futex keys are told apart by their stack.
    let held: Vec<Held> = ledger
        .held_by_stack(pid)
        .into_iter()
        .map(|((kind, stack_id), refs)| Held {
            kind,
            refs,
            stack: t.session.stack(stack_id),
        })
        .collect();
    // FOLL_GET pages that are not I/O, told apart by their stacks: futex
    // keys (thread exit and join) and exec(2)'s argument pages.
    let not_io = |kind: Kind, stack: &[String], marker: &str| {
        kind == Kind::Get && stack.iter().any(|f| f.starts_with(marker))
    };
    let is_futex = |h: &Held| not_io(h.kind, &h.stack, "get_futex_key");
    let is_exec = |h: &Held| not_io(h.kind, &h.stack, "get_arg_page");
    // Each FOLL_GET stack the process took pages at is resolved once.
    let (mut futex_pages, mut exec_pages) = (0, 0);
    for (&(kind, id), &pages) in process.iter().flat_map(|p| &p.pages_by_stack) {
        if kind != Kind::Get {
            continue;
        }
        let stack = t.session.stack(id);
        if not_io(kind, &stack, "get_futex_key") {
            futex_pages += pages;
        } else if not_io(kind, &stack, "get_arg_page") {
            exec_pages += pages;
        }
    }
    let observed = Observed {
        tgid: pid,
        acquired: process.map(|p| p.by_kind.clone()).unwrap_or_default(),
        released: process.map(|p| p.released.clone()).unwrap_or_default(),
        outstanding: ledger.outstanding_of(pid),
        findings: result.findings.len() as u64,
        lost,
        decode_errors,
        vmstat: vm0.zip(vm1).map(|(a, b)| a.delta_to(&b)),
        unknown_releases: ledger.unknown_releases - unknown0,
        bio_releases: ledger.tally.bios.released - bios0.released,
        futex_pages,
        exec_pages,
        added_pins: process
            .and_then(|p| p.by_site.get("folio_add_pin"))
            .map(|c| c.pages)
            .unwrap_or(0),
        sites: process
            .map(|p| p.by_site.iter().map(|(&k, c)| (k, c.pages)).collect())
            .unwrap_or_default(),
    };
    let expected = judge::expected(&engine, &s);
    result.checks = judge::judge(&s, &expected, &observed);
    result.dio_kind = Some(observed.dio_kind());
    result.status = if result.checks.iter().all(|c| c.ok) {
        Status::Pass
    } else {
        Status::Fail
    };
    if result.status == Status::Fail {
        result.held = held
            .into_iter()
            .filter(|h| !is_futex(h) && !is_exec(h))
            .collect();
    }
    result.expected = Some(expected);
    result.observed = Some(observed);
    Ok(result)
}
