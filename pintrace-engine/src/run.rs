//! A run: open the target, set up every job (buffers, rings), start them
//! together, collect the figures.

use super::aio::Aio;
use super::buffer::{Arena, SegLayout};
use super::config::FaultKind;
use super::config::{BufferKind, EngineConfig, Mode};
use super::fork::Forker;
use super::job::Job;
use super::layout::{arm_buffers, region_base, slot_layout};
use super::nvme::{self, NvmeReport};
use super::report::{
    BufferReport, CpuReport, JobReport, Report, RunSettings, TotalReport, VerifyReport,
};
use super::sg::{self, SgReport};
use super::stats::DirStats;
use super::target::{open_target, TargetInfo};
use super::uring::{register_error, Uring};
use super::uring_cmd::UringCmd;
use super::{psync, size::fmt_bytes};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// What a job thread hands back.
struct JobResult {
    report: JobReport,
    read: DirStats,
    write: DirStats,
    verify_reads: DirStats,
    failures: Vec<super::job::VerifyFailure>,
}

enum Engine {
    Sync { vectored: bool },
    Uring(Box<Uring>),
    Aio(Aio),
    Sg { sg_node: bool },
    UringCmd(Box<UringCmd>),
}

/// What the passthrough modes learnt of their target.
#[derive(Default)]
struct Passthrough {
    sg: Option<SgReport>,
    nvme: Option<NvmeReport>,
}

/// Run the workload. `Err` means it could not run (bad target, refused, set-up
/// failure); I/O errors and verify failures are in the [`Report`].
pub fn run(cfg: &EngineConfig) -> Result<Report> {
    run_until(cfg, &AtomicBool::new(false))
}

/// As [`run`], stopping early (with figures so far) once `stop` is set.
pub fn run_until(cfg: &EngineConfig, stop: &AtomicBool) -> Result<Report> {
    cfg.validate()?;
    let mut pass = Passthrough::default();
    let mut target = match cfg.mode {
        Mode::Sg => {
            let t = sg::open(cfg)?;
            pass.sg = Some(t.report);
            t.target
        }
        Mode::UringCmd => {
            let t = nvme::open(cfg)?;
            pass.nvme = Some(t.report);
            t.target
        }
        _ => open_target(cfg)?,
    };
    let info = target.info.clone();
    if cfg.mode.is_passthrough() {
        check_device_size(cfg, &info)?;
    }
    let layout = slot_layout(cfg, &info)?;
    if let Some(r) = pass.sg.as_mut() {
        let (expect, reason) = sg::expectation(r, &layout);
        r.expect = expect;
        r.reason = reason;
    }
    let base = region_base(cfg, &info)?;
    let bs = cfg.bs;
    let region = cfg.size.unwrap_or(info.size) / bs * bs;
    let total_blocks = region / bs;
    let jobs = u64::from(cfg.numjobs);
    let per_job = if cfg.shared_region {
        total_blocks
    } else {
        total_blocks / jobs
    };
    if per_job == 0 {
        bail!(
            "--numjobs: {} jobs need at least one block of {} each; the region holds {total_blocks}",
            cfg.numjobs,
            fmt_bytes(bs)
        );
    }
    let mut warnings = Vec::new();
    if !cfg.mode.is_async() && cfg.iodepth > 1 {
        warnings.push(format!(
            "--iodepth {} ignored: {} issues one I/O at a time",
            cfg.iodepth,
            cfg.mode.name()
        ));
    }
    if !cfg.shared_region && !total_blocks.is_multiple_of(jobs) {
        warnings.push(format!(
            "{} block(s) at the end of the region unused (not divisible by --numjobs)",
            total_blocks % jobs
        ));
    }
    if cfg.verify && cfg.rw.writes() && per_job > (1 << 26) {
        warnings.push(
            "region too large to track write generations: no verify phase after the writes".into(),
        );
    }
    let scratch = scratch_dir(cfg, &info);
    let fd = target.fd.as_raw_fd();
    let barrier = Barrier::new(cfg.numjobs as usize);
    let setup_failed = AtomicBool::new(false);
    let results: Vec<Result<Option<JobResult>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.numjobs)
            .map(|j| {
                let start = base
                    + if cfg.shared_region {
                        0
                    } else {
                        u64::from(j) * per_job * bs
                    };
                let (barrier, setup_failed, scratch, info, layout, pass) = (
                    &barrier,
                    &setup_failed,
                    &scratch,
                    &target.info,
                    &layout,
                    &pass,
                );
                std::thread::Builder::new()
                    .name(format!("engine-{j}"))
                    .spawn_scoped(s, move || {
                        run_job(
                            cfg,
                            j,
                            fd,
                            start,
                            per_job,
                            info,
                            layout,
                            pass,
                            scratch,
                            barrier,
                            setup_failed,
                            stop,
                        )
                    })
                    .expect("spawning a job thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a job thread panicked")))
            .collect()
    });
    let mut job_results = Vec::new();
    for r in results {
        if let Some(jr) = r? {
            job_results.push(jr);
        }
    }
    if cfg.keep {
        target.keep_file();
    }
    let mut report = build_report(
        cfg,
        info,
        region,
        job_results,
        stop.load(Ordering::Relaxed),
        warnings,
    );
    report.pages_per_io = layout.pages_per_io();
    report.settings.segments = layout.segs.clone();
    if let Some(sg) = pass.sg.as_mut() {
        if sg.direct_io.is_some() {
            sg.direct_io = Some(report.jobs.iter().map(|j| j.direct_io).sum());
        }
    }
    report.sg = pass.sg;
    report.nvme = pass.nvme;
    report.finish_faults(cfg);
    Ok(report)
}

/// The size checks the O_DIRECT targets get when opened, for the devices
/// of the passthrough modes.
fn check_device_size(cfg: &EngineConfig, info: &TargetInfo) -> Result<()> {
    let shown = info.path.display();
    match cfg.size {
        Some(size) if size > info.size && cfg.fault != Some(FaultKind::PastEnd) => bail!(
            "--size: {} is larger than {shown} ({})",
            fmt_bytes(size),
            fmt_bytes(info.size)
        ),
        None if info.size < cfg.bs => bail!(
            "--size: {shown} holds less than one block of {}",
            fmt_bytes(cfg.bs)
        ),
        _ => Ok(()),
    }
}

fn scratch_dir(cfg: &EngineConfig, info: &TargetInfo) -> PathBuf {
    if let Some(d) = &cfg.scratch_dir {
        return d.clone();
    }
    if info.kind == "file" {
        if let Some(p) = info.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            return p.to_path_buf();
        }
        return PathBuf::from(".");
    }
    // A disk-backed directory: the point of file-shared is page-cache pages
    // of a filesystem with writeback, which /tmp on tmpfs would not give.
    let var_tmp = PathBuf::from("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp
    } else {
        std::env::temp_dir()
    }
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    cfg: &EngineConfig,
    id: u32,
    fd: RawFd,
    start: u64,
    blocks: u64,
    info: &TargetInfo,
    layout: &SegLayout,
    pass: &Passthrough,
    scratch: &Path,
    barrier: &Barrier,
    setup_failed: &AtomicBool,
    stop: &AtomicBool,
) -> Result<Option<JobResult>> {
    let slots = cfg.slots() as usize;
    // Set up everything before the common start; a failure still meets the
    // barrier so that no other job waits forever.
    let setup = (|| -> Result<(Arena, Vec<Vec<libc::iovec>>, Engine)> {
        let arena = Arena::new(cfg.buffer, layout.slot_len * slots, scratch, id, cfg.seed)?;
        let iovs = arena.slot_iovecs(layout, slots);
        arm_buffers(cfg, &arena, layout, slots)?;
        // register-last registers after the common start, as the fault itself.
        let register_now = cfg.fixed_buffers && cfg.fault != Some(FaultKind::RegisterLast);
        let engine = match cfg.mode {
            Mode::Psync => Engine::Sync { vectored: false },
            Mode::Pvsync => Engine::Sync { vectored: true },
            Mode::IoUring => {
                Engine::Uring(Box::new(Uring::new(cfg.iodepth, fd, &iovs, register_now)?))
            }
            Mode::Aio => Engine::Aio(Aio::new(cfg.iodepth)?),
            Mode::Sg => Engine::Sg {
                sg_node: pass.sg.as_ref().is_some_and(|s| s.node == "sg"),
            },
            Mode::UringCmd => {
                let ns = pass.nvme.as_ref().expect("the namespace was opened");
                let mut u = UringCmd::new(
                    cfg.iodepth,
                    ns.nsid,
                    ns.logical_block_size,
                    cfg.cmd_timeout.as_millis() as u32,
                )?;
                if register_now {
                    u.register(&iovs)
                        .map_err(|e| register_error(&e, iovs.len()))?;
                }
                Engine::UringCmd(Box::new(u))
            }
        };
        Ok((arena, iovs, engine))
    })();
    if setup.is_err() {
        setup_failed.store(true, Ordering::SeqCst);
    }
    barrier.wait();
    let (arena, iovs, mut engine) = setup?;
    if setup_failed.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let mut job = Job::new(cfg, id, fd, start, blocks, stop);
    if cfg.buffer == BufferKind::ForkShared {
        job.forker = Some(Forker::new(arena.base(), arena.len(), cfg.fork_interval));
    }
    job.start(Instant::now());
    let register_last = cfg.fault == Some(FaultKind::RegisterLast);
    let timeout_ms = cfg.cmd_timeout.as_millis() as u32;
    match &mut engine {
        Engine::Sync { vectored } => psync::run(&mut job, &iovs[0], *vectored),
        Engine::Uring(u) if register_last => {
            // The last buffer is PROT_NONE: the registration pins the
            // earlier ones, fails, and releases them. No I/O follows.
            if let Err(e) = u.register(&iovs) {
                job.fail_setup("register_buffers", &e);
            }
            job.finish_without_io(Instant::now());
        }
        Engine::Uring(u) => {
            u.run(&mut job, &iovs, cfg.iodepth_batch as usize);
            if let Err(e) = u.unregister() {
                job.fail_engine("unregistering the fixed buffers", e);
            }
        }
        Engine::Aio(a) => a.run(&mut job, &iovs, cfg.iodepth_batch as usize),
        Engine::Sg { sg_node } => sg::run(
            &mut job,
            &iovs[0],
            info.logical_block_size,
            *sg_node,
            timeout_ms,
        ),
        Engine::UringCmd(u) if register_last => {
            if let Err(e) = u.register(&iovs) {
                job.fail_setup("register_buffers", &e);
            }
            job.finish_without_io(Instant::now());
        }
        Engine::UringCmd(u) => {
            u.run(&mut job, &iovs, cfg.iodepth_batch as usize);
            if let Err(e) = u.unregister() {
                job.fail_engine("unregistering the fixed buffers", e);
            }
        }
    }
    let (forks, fork_failures) = match job.forker.as_mut() {
        Some(f) => {
            f.finish();
            (f.forks, f.failures)
        }
        None => (0, 0),
    };
    drop(engine);
    let elapsed = job.main_elapsed;
    let report = JobReport {
        job: id,
        region_offset: start,
        region_size: blocks * cfg.bs,
        passes: job.passes(),
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        read: job.read.report_with(elapsed, &cfg.percentiles),
        write: job.write.report_with(elapsed, &cfg.percentiles),
        verify_reads: job
            .verify_reads
            .report_with(job.verify_elapsed, &cfg.percentiles),
        verified_blocks: job.verified,
        verify_failures: job.verify_failed,
        cpu: CpuReport::new(
            job.cpu.0.as_secs_f64(),
            job.cpu.1.as_secs_f64(),
            elapsed.as_secs_f64(),
            job.read.ios + job.write.ios,
        ),
        buffer: BufferReport {
            kind: arena.kind.name(),
            bytes: arena.len() as u64,
            huge_bytes: arena.huge_bytes,
            scratch_file: arena.scratch_file.as_ref().map(|p| p.display().to_string()),
            scratch_fs: arena.scratch_fs.clone(),
            forks,
            fork_failures,
        },
        io_error: job.io_error.clone(),
        errors: std::mem::take(&mut job.errors),
        first_error: job.first_error.take(),
        direct_io: job.direct_io,
    };
    Ok(Some(JobResult {
        report,
        read: std::mem::take(&mut job.read),
        write: std::mem::take(&mut job.write),
        verify_reads: std::mem::take(&mut job.verify_reads),
        failures: std::mem::take(&mut job.failures),
    }))
}

fn build_report(
    cfg: &EngineConfig,
    info: TargetInfo,
    region: u64,
    results: Vec<JobResult>,
    interrupted: bool,
    warnings: Vec<String>,
) -> Report {
    let mut read = DirStats::default();
    let mut write = DirStats::default();
    let mut vr = DirStats::default();
    let mut elapsed = Duration::ZERO;
    let mut velapsed = Duration::ZERO;
    let mut failed_blocks = Vec::new();
    let (mut checked, mut failures) = (0, 0);
    for r in &results {
        read.add(&r.read);
        write.add(&r.write);
        vr.add(&r.verify_reads);
        elapsed = elapsed.max(Duration::from_secs_f64(r.report.elapsed_ms / 1e3));
        velapsed = velapsed.max(Duration::from_secs_f64(
            r.report.verify_reads.runtime_ms / 1e3,
        ));
        checked += r.report.verified_blocks;
        failures += r.report.verify_failures;
        failed_blocks.extend(r.failures.iter().cloned());
    }
    failed_blocks.sort_by_key(|f| f.offset);
    let fatal_errors = results
        .iter()
        .filter(|r| r.report.io_error.is_some())
        .count();
    let io_errors = results
        .iter()
        .flat_map(|r| [r.report.io_error.clone(), r.report.first_error.clone()])
        .flatten()
        .collect();
    let mut errors_by_outcome = BTreeMap::new();
    for r in &results {
        for (k, v) in &r.report.errors {
            *errors_by_outcome.entry(k.clone()).or_insert(0) += v;
        }
    }
    Report {
        settings: RunSettings {
            mode: cfg.mode.name(),
            rw: cfg.rw.name(),
            rwmixread: cfg.rw.read_percent(cfg.rwmixread),
            bs: cfg.bs,
            size: region,
            runtime_s: cfg.runtime.map(|d| d.as_secs_f64()),
            numjobs: cfg.numjobs,
            iodepth: cfg.slots(),
            iodepth_batch: cfg
                .mode
                .is_async()
                .then_some(cfg.iodepth_batch.min(cfg.iodepth)),
            direct: cfg.direct,
            buffer: cfg.buffer.name(),
            fixed_buffers: cfg.fixed_buffers,
            iovecs: (cfg.mode == Mode::Pvsync || cfg.subpage_iovecs).then_some(cfg.iovecs),
            verify: cfg.verify,
            seed: cfg.seed,
            subpage_iovecs: cfg.subpage_iovecs,
            buffer_offset: cfg.buffer_offset,
            segments: Vec::new(),
            fault: cfg.fault.map(|f| f.name()),
            allow_errors: cfg.allow_errors,
        },
        target: info,
        total: TotalReport {
            elapsed_ms: elapsed.as_secs_f64() * 1e3,
            cpu: CpuReport::new(
                results.iter().map(|r| r.report.cpu.user_s).sum(),
                results.iter().map(|r| r.report.cpu.sys_s).sum(),
                elapsed.as_secs_f64(),
                read.ios + write.ios,
            ),
            read: read.report_with(elapsed, &cfg.percentiles),
            write: write.report_with(elapsed, &cfg.percentiles),
            verify_reads: vr.report_with(velapsed, &cfg.percentiles),
        },
        jobs: results.into_iter().map(|r| r.report).collect(),
        verify: VerifyReport {
            enabled: cfg.verify,
            blocks_checked: checked,
            failures,
            failed_blocks,
        },
        io_errors,
        interrupted,
        warnings,
        pages_per_io: 0,
        sg: None,
        nvme: None,
        fault: None,
        errors_by_outcome,
        fatal_errors,
    }
}
