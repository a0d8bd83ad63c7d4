//! A run: open the target, set up every job (buffers, rings), start them
//! together, collect the figures.

use super::aio::Aio;
use super::buffer::{Arena, SegLayout};
use super::config::{BufferKind, EngineConfig, Mode};
use super::fork::Forker;
use super::job::Job;
use super::report::{
    BufferReport, CpuReport, JobReport, Report, RunSettings, TotalReport, VerifyReport,
};
use super::stats::DirStats;
use super::target::{open_target, TargetInfo};
use super::uring::Uring;
use super::{psync, size::fmt_bytes};
use anyhow::{bail, Result};
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
}

/// Run the workload. `Err` means it could not run (bad target, refused, set-up
/// failure); I/O errors and verify failures are in the [`Report`].
pub fn run(cfg: &EngineConfig) -> Result<Report> {
    run_until(cfg, &AtomicBool::new(false))
}

/// As [`run`], stopping early (with figures so far) once `stop` is set.
pub fn run_until(cfg: &EngineConfig, stop: &AtomicBool) -> Result<Report> {
    cfg.validate()?;
    let mut target = open_target(cfg)?;
    let info = target.info.clone();
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
                let start = if cfg.shared_region {
                    0
                } else {
                    u64::from(j) * per_job * bs
                };
                let (barrier, setup_failed, scratch, info) =
                    (&barrier, &setup_failed, &scratch, &target.info);
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
    Ok(build_report(
        cfg,
        info,
        region,
        job_results,
        stop.load(Ordering::Relaxed),
        warnings,
    ))
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
    scratch: &Path,
    barrier: &Barrier,
    setup_failed: &AtomicBool,
    stop: &AtomicBool,
) -> Result<Option<JobResult>> {
    let bs = cfg.bs as usize;
    let slots = cfg.slots() as usize;
    let layout = if cfg.mode == Mode::Pvsync {
        let unit = if !cfg.direct {
            512
        } else if cfg.unaligned_iovecs {
            (info.dio_mem_align as usize).max(64)
        } else {
            info.logical_block_size as usize
        };
        SegLayout::scattered(bs, cfg.iovecs, unit, info.dio_mem_align as usize)
    } else {
        SegLayout::contiguous(bs)
    };
    // Set up everything before the common start; a failure still meets the
    // barrier so that no other job waits forever.
    let setup = (|| -> Result<(Arena, Vec<Vec<libc::iovec>>, Engine)> {
        let arena = Arena::new(cfg.buffer, layout.slot_len * slots, scratch, id, cfg.seed)?;
        let iovs = arena.slot_iovecs(&layout, slots);
        let engine = match cfg.mode {
            Mode::Psync => Engine::Sync { vectored: false },
            Mode::Pvsync => Engine::Sync { vectored: true },
            Mode::IoUring => Engine::Uring(Box::new(Uring::new(
                cfg.iodepth,
                fd,
                &iovs,
                cfg.fixed_buffers,
            )?)),
            Mode::Aio => Engine::Aio(Aio::new(cfg.iodepth)?),
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
    match &mut engine {
        Engine::Sync { vectored } => psync::run(&mut job, &iovs[0], *vectored),
        Engine::Uring(u) => {
            u.run(&mut job, &iovs, cfg.iodepth_batch as usize);
            if let Err(e) = u.unregister() {
                job.fail_engine("unregistering the fixed buffers", e);
            }
        }
        Engine::Aio(a) => a.run(&mut job, &iovs, cfg.iodepth_batch as usize),
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
        read: job.read.report(elapsed),
        write: job.write.report(elapsed),
        verify_reads: job.verify_reads.report(job.verify_elapsed),
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
    let io_errors = results
        .iter()
        .filter_map(|r| r.report.io_error.clone())
        .collect();
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
            iovecs: (cfg.mode == Mode::Pvsync).then_some(cfg.iovecs),
            verify: cfg.verify,
            seed: cfg.seed,
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
            read: read.report(elapsed),
            write: write.report(elapsed),
            verify_reads: vr.report(velapsed),
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
    }
}
