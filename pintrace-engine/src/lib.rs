//! The O_DIRECT engine: a fio-like workload generator that drives the kernel
//! paths pintrace audits (pread/pwrite, preadv/pwritev, io_uring with plain
//! and registered buffers, native AIO) over buffers of every kind that
//! matters to page pinning (anonymous, THP, hugetlb, file-backed shared,
//! shared with forked children).
//!
//! Library use: build an [`EngineConfig`] (from [`EngineArgs`] with
//! `TryFrom`, or [`EngineConfig::new`] and public fields), then [`run`] it;
//! the [`Report`] serialises to JSON. `Err` from [`run`] means the run could
//! not start (bad target, a safety refusal, set-up failure); I/O errors and
//! verify failures are in the report ([`Report::ok`], [`Report::exit_code`]).
//!
//! ```no_run
//! use pintrace_engine::{run, BufferKind, EngineConfig, Mode, RwKind};
//!
//! let mut cfg = EngineConfig::new("/var/tmp/pintrace-check.dat");
//! cfg.mode = Mode::IoUring;
//! cfg.fixed_buffers = true;
//! cfg.buffer = BufferKind::Thp;
//! cfg.rw = RwKind::RandWrite;
//! cfg.size = Some(64 << 20);
//! cfg.iodepth = 32;
//! cfg.verify = true;
//! cfg.validate()?;
//! let report = run(&cfg)?;
//! assert!(report.ok());
//! println!("{}", report.to_json());
//! # Ok::<(), anyhow::Error>(())
//! ```

mod aio;
mod args;
mod buffer;
mod config;
mod fork;
mod job;
mod layout;
mod nvme;
mod offsets;
mod psync;
mod report;
mod run;
mod safety;
pub mod schema;
mod sg;
pub mod sgio;
pub mod size;
mod stats;
mod target;
mod uring;
mod uring_cmd;
pub mod verify;

pub use args::{EngineArgs, OutputFormat};
pub use buffer::Arena;
pub use buffer::SegLayout;
pub use config::{BufferKind, ConfigError, EngineConfig, FaultKind, Mode, RwKind};
pub use job::{errno_name, IoFailure, VerifyFailure};
pub use nvme::{NvmeReport, NvmeUringCmd};
pub use offsets::OffsetGen;
pub use report::{
    BufferReport, CpuReport, FaultReport, JobReport, Report, RunSettings, TotalReport, VerifyReport,
};
pub use run::{run, run_until};
pub use sg::SgReport;
pub use stats::{ClatNs, DirReport, LatSummary, Percentiles};
pub use target::{SetupIo, TargetInfo};

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT / SIGTERM while `run_cli` runs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // Safety: the handler only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Says why the engine cannot run, on stderr and, with JSON output, as
/// the error object on stdout; the exit code is 2.
fn cannot_run(args: &EngineArgs, why: &str) -> anyhow::Result<u8> {
    eprintln!("pintrace engine: {why}");
    if args.wants_json() {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "{}",
            schema::ErrorObject::new("engine", why).to_line()
        )?;
        stdout.flush()?;
    }
    Ok(2)
}

/// Run the engine as a command; returns the process exit code: 0 ok, 1 I/O
/// errors or verify failures, 2 bad usage or cannot run.
pub fn run_cli(args: &EngineArgs) -> anyhow::Result<u8> {
    let cfg = match EngineConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => return cannot_run(args, &e.to_string()),
    };
    catch_signals();
    let report = match run_until(&cfg, &STOP) {
        Ok(r) => r,
        Err(e) => return cannot_run(args, &format!("{e:#}")),
    };
    // A write error (a reader that closed the pipe) is returned, not a
    // panic: the caller decides how quietly to end.
    let mut stdout = std::io::stdout().lock();
    if args.wants_json() {
        writeln!(stdout, "{}", report.to_json())?;
    } else {
        write!(stdout, "{}", report.to_text())?;
    }
    stdout.flush()?;
    drop(stdout);
    for j in &report.jobs {
        if let Some(e) = &j.io_error {
            eprintln!("pintrace engine: I/O error in job {}: {}", e.job, e.message);
        }
        if let Some(e) = &j.first_error {
            let n: u64 = j.errors.values().sum();
            eprintln!(
                "pintrace engine: job {}: {n} I/O error(s) counted, the first: {}",
                e.job, e.message
            );
        }
    }
    if let Some(f) = report.fault.as_ref().filter(|f| !f.expected) {
        eprintln!("pintrace engine: {}", f.message);
    }
    for f in &report.verify.failed_blocks {
        eprintln!("pintrace engine: {}", f.message);
    }
    if report.verify.failures > report.verify.failed_blocks.len() as u64 {
        eprintln!(
            "pintrace engine: {} verify failures in all",
            report.verify.failures
        );
    }
    Ok(report.exit_code())
}
