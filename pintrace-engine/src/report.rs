//! The result of a run: serialisable (`--json`) and printable like fio.

use super::config::{EngineConfig, FaultKind};
use super::job::{IoFailure, VerifyFailure};
use super::nvme::NvmeReport;
use super::sg::SgReport;
use super::size::{fmt_bytes, fmt_si};
use super::stats::{DirReport, LatSummary};
use super::target::TargetInfo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The settings a run used (after defaults and adjustments).
///
/// The pages each I/O spans follow from `segments` alone: every I/O buffer
/// (slot) starts on a page boundary of the arena and its segments lie at
/// these `[offset, length]` pairs from that boundary (`buffer_offset` is
/// already in the offsets). A segment spans
/// `(offset + length - 1) / 4096 - offset / 4096 + 1` pages; the report's
/// `pages_per_io` is their sum.
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    pub mode: &'static str,
    pub rw: &'static str,
    pub rwmixread: u8,
    pub bs: u64,
    /// Bytes of the target in use (all jobs).
    pub size: u64,
    pub runtime_s: Option<f64>,
    pub numjobs: u32,
    /// I/Os in flight per job as run (1 for the sync modes).
    pub iodepth: u32,
    /// I/Os gathered per submission (io_uring, aio).
    pub iodepth_batch: Option<u32>,
    pub direct: bool,
    pub buffer: &'static str,
    pub fixed_buffers: bool,
    /// Segments per I/O (pvsync, and sg with `subpage_iovecs`).
    pub iovecs: Option<u32>,
    pub verify: bool,
    pub seed: u64,
    /// Each I/O is `iovecs` adjacent segments of `bs / iovecs` bytes, each
    /// within one page (pvsync, sg).
    pub subpage_iovecs: bool,
    /// Bytes past a page boundary where each I/O buffer starts.
    pub buffer_offset: u32,
    /// `[offset, length]` of each segment of one I/O buffer, from the
    /// page boundary the buffer's slot starts on.
    pub segments: Vec<(usize, usize)>,
    /// The `--fault` provoked: `hole`, `register-last`, `past-end`.
    pub fault: Option<&'static str>,
    /// I/O errors counted (by outcome) rather than ending the job.
    pub allow_errors: bool,
}

/// The outcome of a `--fault` run.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub kind: &'static str,
    /// The outcome seen most: an errno name (`EFAULT`), `short`, `eof`, or a
    /// device status (`sense ILLEGAL REQUEST 21h/00h`, `nvme 0/80h`); null
    /// when the fault was never hit.
    pub errno: Option<String>,
    /// I/Os (or registrations) that hit the fault.
    pub count: u64,
    /// Every outcome with its count.
    pub by_outcome: BTreeMap<String, u64>,
    /// I/Os that completed in full although the fault was laid in them.
    pub completed_ios: u64,
    /// The fault happened on every attempt and was reported (exit 0).
    pub expected: bool,
    pub message: String,
}

/// The buffer memory of a job.
#[derive(Debug, Clone, Serialize)]
pub struct BufferReport {
    pub kind: &'static str,
    pub bytes: u64,
    /// Bytes backed by huge pages, when known (THP from smaps, hugetlb).
    pub huge_bytes: Option<u64>,
    /// Scratch file behind `file-shared` (unlinked after mapping).
    pub scratch_file: Option<String>,
    /// Filesystem of the scratch file.
    pub scratch_fs: Option<String>,
    /// Children forked during I/O (`fork-shared`).
    pub forks: u64,
    pub fork_failures: u64,
}

/// Figures of one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job: u32,
    pub region_offset: u64,
    pub region_size: u64,
    pub passes: u64,
    pub elapsed_ms: f64,
    pub read: DirReport,
    pub write: DirReport,
    /// Reads of the verify phase that follows the writes.
    pub verify_reads: DirReport,
    pub verified_blocks: u64,
    pub verify_failures: u64,
    pub cpu: CpuReport,
    pub buffer: BufferReport,
    /// The error that ended the job.
    pub io_error: Option<IoFailure>,
    /// `--fault` / `--allow-errors`: failed I/Os by outcome (they did not
    /// end the job), and the first of them.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<IoFailure>,
    /// sg node: commands the sg driver did by direct I/O.
    pub direct_io: u64,
}

/// CPU time spent issuing and completing I/O (like fio's `cpu:` line).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuReport {
    pub user_s: f64,
    pub sys_s: f64,
    /// Percent of the elapsed time (per job thread, summed over jobs).
    pub usr_pct: f64,
    pub sys_pct: f64,
    /// CPU microseconds per I/O (user + system).
    pub us_per_io: f64,
}

impl CpuReport {
    pub fn new(user_s: f64, sys_s: f64, elapsed_s: f64, ios: u64) -> Self {
        let pct = |v: f64| {
            if elapsed_s > 0.0 {
                100.0 * v / elapsed_s
            } else {
                0.0
            }
        };
        CpuReport {
            user_s,
            sys_s,
            usr_pct: pct(user_s),
            sys_pct: pct(sys_s),
            us_per_io: if ios > 0 {
                (user_s + sys_s) * 1e6 / ios as f64
            } else {
                0.0
            },
        }
    }
}

/// Figures of all jobs together (bandwidth over the longest job).
#[derive(Debug, Clone, Serialize)]
pub struct TotalReport {
    pub elapsed_ms: f64,
    /// CPU seconds of the job threads during the I/O (all jobs).
    pub cpu: CpuReport,
    pub read: DirReport,
    pub write: DirReport,
    pub verify_reads: DirReport,
}

/// Verification outcome.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub enabled: bool,
    pub blocks_checked: u64,
    pub failures: u64,
    /// The first failures (with the offset of each block).
    pub failed_blocks: Vec<VerifyFailure>,
}

/// Everything a run found; `--json` prints it as one object.
///
/// Besides the figures: `pages_per_io` (pages one I/O's buffer spans, from
/// `settings.segments`), `sg` (SCSI target, and whether the kernel should
/// `map` the user pages or `copy` them), `nvme` (the namespace of
/// uring-cmd), `fault` (what a `--fault` run provoked) and
/// `errors_by_outcome` (I/O errors counted under `--fault` or
/// `--allow-errors`). `io_errors` lists the error that ended each job and,
/// under `--fault` / `--allow-errors`, each job's first counted error.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: RunSettings,
    pub target: TargetInfo,
    pub jobs: Vec<JobReport>,
    pub total: TotalReport,
    pub verify: VerifyReport,
    pub io_errors: Vec<IoFailure>,
    pub interrupted: bool,
    pub warnings: Vec<String>,
    pub pages_per_io: u64,
    pub sg: Option<SgReport>,
    pub nvme: Option<NvmeReport>,
    pub fault: Option<FaultReport>,
    pub errors_by_outcome: BTreeMap<String, u64>,
    /// Jobs ended by an I/O error (counted errors excluded).
    #[serde(skip)]
    pub fatal_errors: usize,
}

impl Report {
    /// No I/O error that ended a job, no verify failure, and with `--fault`
    /// the fault happened as expected.
    pub fn ok(&self) -> bool {
        let faults_ok = self.fault.as_ref().is_none_or(|f| f.expected);
        let tolerated = self.settings.fault.is_some() || self.settings.allow_errors;
        let errors_ok = if tolerated {
            self.fatal_errors == 0
        } else {
            self.io_errors.is_empty()
        };
        errors_ok && faults_ok && self.verify.failures == 0
    }

    /// Judge a `--fault` run: the fault must have been hit by every attempt.
    pub fn finish_faults(&mut self, cfg: &EngineConfig) {
        let Some(kind) = cfg.fault else {
            return;
        };
        let by = self.errors_by_outcome.clone();
        let count: u64 = by.values().sum();
        let errno = by.iter().max_by_key(|(_, v)| **v).map(|(k, _)| k.clone());
        let completed = self.total.read.ios + self.total.write.ios;
        let expected = count > 0 && completed == 0 && self.fatal_errors == 0;
        let message = if expected {
            format!(
                "--fault {}: hit {count} time(s), the kernel answered {}",
                kind.name(),
                by.iter()
                    .map(|(k, v)| format!("{k} x{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if count == 0 {
            format!(
                "--fault {}: the fault was never hit ({completed} I/O(s) completed in full{})",
                kind.name(),
                if kind == FaultKind::RegisterLast {
                    ", the registration went through"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "--fault {}: hit {count} time(s), but {completed} I/O(s) completed in full",
                kind.name()
            )
        };
        self.fault = Some(FaultReport {
            kind: kind.name(),
            errno,
            count,
            by_outcome: by,
            completed_ios: completed,
            expected,
            message,
        });
    }

    /// Process exit code: 0 when ok, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.ok() {
            0
        } else {
            1
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&crate::schema::versioned(self))
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human report, fio style.
    pub fn to_text(&self) -> String {
        let s = &self.settings;
        let t = &self.target;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "pintrace engine: mode={} rw={}{} bs={} iodepth={} numjobs={} direct={} buffer={}{}{}",
            s.mode,
            s.rw,
            if s.rw == "rw" || s.rw == "randrw" {
                format!(" rwmixread={}", s.rwmixread)
            } else {
                String::new()
            },
            fmt_bytes(s.bs),
            s.iodepth,
            s.numjobs,
            u8::from(s.direct),
            s.buffer,
            if s.fixed_buffers {
                " fixed-buffers"
            } else {
                ""
            },
            if s.verify { " verify" } else { "" },
        );
        let what = match (&t.fs_type, &t.device) {
            (Some(fs), _) => format!("file on {fs}"),
            (None, Some(dev)) => format!("block device {dev}"),
            _ => t.kind.to_string(),
        };
        let _ = writeln!(
            o,
            "target: {} ({what}, {}, logical block {}, dma align {} from {}{})",
            t.path.display(),
            fmt_bytes(t.size),
            t.logical_block_size,
            t.dio_mem_align,
            t.align_source,
            if t.created { ", created" } else { "" },
        );
        for j in &self.jobs {
            let _ = writeln!(
                o,
                "job {}: region {}+{}, {} pass(es), {:.0} ms{}",
                j.job,
                j.region_offset,
                fmt_bytes(j.region_size),
                j.passes,
                j.elapsed_ms,
                buffer_note(&j.buffer)
            );
            dir_text(&mut o, "read", &j.read);
            dir_text(&mut o, "write", &j.write);
            dir_text(&mut o, "verify-read", &j.verify_reads);
            cpu_text(&mut o, &j.cpu);
            if let Some(e) = &j.io_error {
                let _ = writeln!(o, "  error: {}", e.message);
            }
        }
        if self.jobs.len() > 1 {
            let _ = writeln!(
                o,
                "total ({} jobs, {:.0} ms):",
                self.jobs.len(),
                self.total.elapsed_ms
            );
            dir_text(&mut o, "read", &self.total.read);
            dir_text(&mut o, "write", &self.total.write);
            dir_text(&mut o, "verify-read", &self.total.verify_reads);
            cpu_text(&mut o, &self.total.cpu);
        }
        if self.verify.enabled {
            let _ = writeln!(
                o,
                "verify: {} blocks checked, {} failed",
                self.verify.blocks_checked, self.verify.failures
            );
            for f in &self.verify.failed_blocks {
                let _ = writeln!(o, "  {}", f.message);
            }
        }
        if self.pages_per_io > 0 {
            let _ = writeln!(o, "pages per I/O: {}", self.pages_per_io);
        }
        if let Some(sg) = &self.sg {
            let _ = writeln!(
                o,
                "sg: {} node, expect {} ({})",
                sg.node, sg.expect, sg.reason
            );
        }
        if let Some(f) = &self.fault {
            let _ = writeln!(o, "{}", f.message);
        } else if !self.errors_by_outcome.is_empty() {
            let list: Vec<String> = self
                .errors_by_outcome
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            let _ = writeln!(o, "I/O errors counted: {}", list.join(", "));
        }
        for w in &self.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
        if self.interrupted {
            let _ = writeln!(o, "interrupted: figures cover the time until the signal");
        }
        o
    }
}

fn buffer_note(b: &BufferReport) -> String {
    let mut s = format!(", buffer {} {}", b.kind, fmt_bytes(b.bytes));
    if let Some(h) = b.huge_bytes {
        let _ = write!(s, " ({} in huge pages)", fmt_bytes(h));
    }
    if let Some(fs) = &b.scratch_fs {
        let _ = write!(s, " (scratch file on {fs})");
    }
    if b.kind == "fork-shared" {
        let _ = write!(s, ", {} forks", b.forks);
    }
    s
}

fn cpu_text(o: &mut String, c: &CpuReport) {
    let _ = writeln!(
        o,
        "  cpu: usr={:.2}%, sys={:.2}%, {:.2} usec/io",
        c.usr_pct, c.sys_pct, c.us_per_io
    );
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn dir_text(o: &mut String, name: &str, d: &DirReport) {
    if d.ios == 0 {
        return;
    }
    let mib = d.bw_bytes_per_sec / (1 << 20) as f64;
    let mb = d.bw_bytes_per_sec / 1e6;
    let _ = writeln!(
        o,
        "  {name}: IOPS={}, BW={mib:.1}MiB/s ({mb:.1}MB/s) ({}/{:.0}msec, {} ios)",
        fmt_si(d.iops),
        fmt_bytes(d.bytes),
        d.runtime_ms,
        d.ios
    );
    let LatSummary {
        min,
        max,
        mean,
        stdev,
        p50,
        p90,
        p99,
        p99_9,
    } = d.lat_ns;
    let _ = writeln!(
        o,
        "    lat (usec): min={}, max={}, avg={:.1}, stdev={:.1}",
        us(min),
        us(max),
        mean / 1000.0,
        stdev / 1000.0
    );
    let _ = writeln!(
        o,
        "    lat percentiles (usec): p50={}, p90={}, p99={}, p99.9={}",
        us(p50),
        us(p90),
        us(p99),
        us(p99_9)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    /// A report of a run that did `reads` full reads and counted `failed`.
    fn run_report(cfg: &EngineConfig, reads: u64, failed: &[(&str, u64)]) -> Report {
        let mut stats = crate::stats::DirStats::default();
        for _ in 0..reads {
            stats.record(4096, 1000);
        }
        let dir = stats.report(std::time::Duration::from_millis(1));
        let empty = crate::stats::DirStats::default().report(std::time::Duration::ZERO);
        let settings = RunSettings {
            mode: cfg.mode.name(),
            rw: cfg.rw.name(),
            rwmixread: 100,
            bs: cfg.bs,
            size: 1 << 20,
            runtime_s: None,
            numjobs: 1,
            iodepth: 1,
            iodepth_batch: None,
            direct: true,
            buffer: "anon",
            fixed_buffers: false,
            iovecs: None,
            verify: false,
            seed: 1,
            subpage_iovecs: false,
            buffer_offset: 0,
            segments: vec![(0, 4096)],
            fault: cfg.fault.map(|f| f.name()),
            allow_errors: cfg.allow_errors,
        };
        let target = TargetInfo {
            path: "/dev/x".into(),
            kind: "block_device",
            fs_type: None,
            device: None,
            size: 1 << 20,
            logical_block_size: 512,
            dio_mem_align: 512,
            align_source: "ioctl",
            created: false,
            setup_io: Default::default(),
        };
        let mut r = Report {
            settings,
            target,
            jobs: Vec::new(),
            total: TotalReport {
                elapsed_ms: 1.0,
                cpu: CpuReport::default(),
                read: dir,
                write: empty.clone(),
                verify_reads: empty,
            },
            verify: VerifyReport {
                enabled: false,
                blocks_checked: 0,
                failures: 0,
                failed_blocks: Vec::new(),
            },
            io_errors: Vec::new(),
            interrupted: false,
            warnings: Vec::new(),
            pages_per_io: 1,
            sg: None,
            nvme: None,
            fault: None,
            errors_by_outcome: failed.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            fatal_errors: 0,
        };
        r.finish_faults(cfg);
        r
    }

    #[test]
    fn a_fault_must_be_hit_by_every_io() {
        let mut cfg = EngineConfig::new("/dev/x");
        cfg.mode = Mode::Sg;
        cfg.fault = Some(FaultKind::PastEnd);
        let hit = run_report(&cfg, 0, &[("sense ILLEGAL REQUEST 21h/00h", 4)]);
        let f = hit.fault.as_ref().unwrap();
        assert!(f.expected && hit.ok(), "{}", f.message);
        assert_eq!(f.errno.as_deref(), Some("sense ILLEGAL REQUEST 21h/00h"));
        assert_eq!(hit.exit_code(), 0);
        let missed = run_report(&cfg, 4, &[]);
        let f = missed.fault.as_ref().unwrap();
        assert!(!f.expected && f.errno.is_none());
        assert!(f.message.contains("never hit"), "{}", f.message);
        assert_eq!(missed.exit_code(), 1);
        let partly = run_report(&cfg, 1, &[("EINVAL", 3)]);
        assert!(partly
            .fault
            .as_ref()
            .unwrap()
            .message
            .contains("completed in full"));
        assert_eq!(partly.exit_code(), 1);
        cfg.fault = Some(FaultKind::RegisterLast);
        let f = run_report(&cfg, 0, &[]).fault.unwrap();
        assert!(
            f.message.contains("registration went through"),
            "{}",
            f.message
        );
        // --allow-errors: counted errors do not fail the run.
        let mut cfg = EngineConfig::new("/dev/x");
        cfg.allow_errors = true;
        let mut r = run_report(&cfg, 3, &[("EIO", 2)]);
        assert!(r.fault.is_none());
        r.io_errors.push(IoFailure {
            job: 0,
            offset: 0,
            op: "read",
            errno: libc::EIO,
            outcome: "EIO".into(),
            message: "counted".into(),
        });
        assert!(r.ok());
        r.fatal_errors = 1;
        assert!(!r.ok());
    }
}
