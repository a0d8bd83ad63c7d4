//! One job's state, shared by every I/O mode: what to issue next, what to do
//! with a completion. Nothing here allocates per I/O.

use super::config::EngineConfig;
use super::fork::Forker;
use super::offsets::{splitmix, OffsetGen, Rng};
use super::stats::DirStats;
use super::verify::{self, VerifyError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Most verify failures kept per job (all are counted).
pub const MAX_FAILURES_KEPT: usize = 32;
/// Largest region (in blocks) for which the last written generation is tracked.
const MAX_TRACKED_BLOCKS: u64 = 1 << 26;

/// One I/O to issue.
#[derive(Debug, Clone, Copy, Default)]
pub struct IoReq {
    pub offset: u64,
    pub block: u64,
    pub write: bool,
    /// A read of the verify phase (after the writes).
    pub verify_phase: bool,
}

/// What the I/O loop should do next.
#[derive(Debug)]
pub enum Next {
    Io(IoReq),
    /// Issue nothing now: reap completions, then ask again.
    Wait,
    /// The job is over (nothing in flight).
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Main,
    Verify,
    Done,
}

/// A block that failed verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFailure {
    pub job: u32,
    pub offset: u64,
    pub error: VerifyError,
    pub message: String,
}

/// The I/O error that stopped a job (or, with `--fault` / `--allow-errors`,
/// the first of those counted).
#[derive(Debug, Clone, Serialize)]
pub struct IoFailure {
    pub job: u32,
    pub offset: u64,
    pub op: &'static str,
    /// errno (EIO for a SCSI or NVMe status, 0 for a short transfer).
    pub errno: i32,
    /// What the kernel answered, as counted in `fault.by_outcome`: an errno
    /// name (`EFAULT`), `short` (fewer bytes than asked), `eof` (0 bytes),
    /// or the device status (`sense ILLEGAL REQUEST 21h/00h`, `nvme 0x80`).
    pub outcome: String,
    pub message: String,
}

/// The name of an errno (`EFAULT`), or its number when unknown.
pub fn errno_name(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    if e == nix::errno::Errno::UnknownErrno {
        format!("errno {errno}")
    } else {
        format!("{e:?}")
    }
}

pub struct Job<'a> {
    pub id: u32,
    pub fd: RawFd,
    pub bs: u64,
    pub region_start: u64,
    cfg: &'a EngineConfig,
    gen: OffsetGen,
    rng: Rng,
    read_pct: u8,
    stop: &'a AtomicBool,
    deadline: Option<Instant>,
    phase: Phase,
    /// Last generation written per block (verify), 0: not written by this run.
    generations: Vec<u32>,
    vpos: u64,
    start: Instant,
    pub main_elapsed: Duration,
    /// CPU time of this thread during the main phase: (user, system).
    pub cpu: (Duration, Duration),
    cpu_start: (Duration, Duration),
    pub verify_elapsed: Duration,
    verify_start: Instant,
    pub read: DirStats,
    pub write: DirStats,
    pub verify_reads: DirStats,
    pub verified: u64,
    pub verify_failed: u64,
    pub failures: Vec<VerifyFailure>,
    pub io_error: Option<IoFailure>,
    pub forker: Option<Forker>,
    /// `--fault` / `--allow-errors`: failed I/Os counted by outcome.
    pub errors: BTreeMap<String, u64>,
    /// The first failure counted in `errors`.
    pub first_error: Option<IoFailure>,
    tolerate_errors: bool,
    /// sg node: commands the sg driver reported as done by direct I/O.
    pub direct_io: u64,
}

impl<'a> Job<'a> {
    pub fn new(
        cfg: &'a EngineConfig,
        id: u32,
        fd: RawFd,
        region_start: u64,
        blocks: u64,
        stop: &'a AtomicBool,
    ) -> Self {
        let key = splitmix(cfg.seed ^ splitmix(u64::from(id) + 1));
        let track = cfg.verify && cfg.rw.writes() && blocks <= MAX_TRACKED_BLOCKS;
        let now = Instant::now();
        Job {
            id,
            fd,
            bs: cfg.bs,
            region_start,
            cfg,
            gen: OffsetGen::new(blocks, cfg.rw.is_random(), key),
            rng: Rng::new(key ^ 0x7277),
            read_pct: cfg.rw.read_percent(cfg.rwmixread),
            stop,
            deadline: None,
            phase: Phase::Main,
            generations: if track {
                vec![0; blocks as usize]
            } else {
                Vec::new()
            },
            vpos: 0,
            start: now,
            main_elapsed: Duration::ZERO,
            cpu: (Duration::ZERO, Duration::ZERO),
            cpu_start: (Duration::ZERO, Duration::ZERO),
            verify_elapsed: Duration::ZERO,
            verify_start: now,
            read: DirStats::default(),
            write: DirStats::default(),
            verify_reads: DirStats::default(),
            verified: 0,
            verify_failed: 0,
            failures: Vec::with_capacity(MAX_FAILURES_KEPT),
            io_error: None,
            forker: None,
            errors: BTreeMap::new(),
            first_error: None,
            tolerate_errors: cfg.fault.is_some() || cfg.allow_errors,
            direct_io: 0,
        }
    }

    /// Whether write generations are tracked (the verify phase needs them).
    pub fn tracks_generations(&self) -> bool {
        !self.generations.is_empty()
    }

    pub fn passes(&self) -> u64 {
        self.gen.pass()
    }

    /// Start the clock (after every job is set up).
    pub fn start(&mut self, now: Instant) {
        self.start = now;
        self.cpu_start = thread_cpu();
        self.deadline = self.cfg.runtime.map(|r| now + r);
        if let Some(f) = self.forker.as_mut() {
            f.start(now);
        }
    }

    /// Whether this job forks during I/O (`fork-shared`).
    #[inline]
    pub fn wants_fork(&self) -> bool {
        self.forker.is_some()
    }

    /// Whether a fork is due (`fork-shared`).
    #[inline]
    pub fn fork_due(&self, now: Instant) -> bool {
        self.forker.as_ref().is_some_and(|f| f.due_at(now))
    }

    /// Fork if due (`fork-shared`); call while I/O is in flight.
    #[inline]
    pub fn tick(&mut self, now: Instant) {
        if let Some(f) = self.forker.as_mut() {
            f.tick(now);
        }
    }

    fn halted(&self) -> bool {
        self.io_error.is_some() || self.stop.load(Ordering::Relaxed)
    }

    /// The next I/O, given the latest timestamp and the I/Os in flight.
    #[inline]
    pub fn next_io(&mut self, now: Instant, inflight: usize) -> Next {
        match self.phase {
            Phase::Main => self.next_main(now, inflight),
            Phase::Verify => self.next_verify(now, inflight),
            Phase::Done => self.drain(inflight),
        }
    }

    #[inline]
    fn drain(&self, inflight: usize) -> Next {
        if inflight > 0 {
            Next::Wait
        } else {
            Next::Done
        }
    }

    #[inline]
    fn next_main(&mut self, now: Instant, inflight: usize) -> Next {
        let over = self.halted() || self.deadline.is_some_and(|d| now >= d);
        if !over {
            let block = match self.gen.next_block() {
                Some(b) => Some(b),
                None if self.deadline.is_some() => {
                    // Verify: no I/O of the next pass may overlap one of this pass.
                    if self.cfg.verify && inflight > 0 {
                        return Next::Wait;
                    }
                    self.gen.next_pass();
                    self.gen.next_block()
                }
                None => None,
            };
            if let Some(block) = block {
                let write = self.read_pct < 100
                    && (self.read_pct == 0 || self.rng.percent() >= self.read_pct);
                return Next::Io(IoReq {
                    offset: self.region_start + block * self.bs,
                    block,
                    write,
                    verify_phase: false,
                });
            }
        }
        if inflight > 0 {
            return Next::Wait;
        }
        self.main_elapsed = now.saturating_duration_since(self.start);
        let (u, s) = thread_cpu();
        self.cpu = (
            u.saturating_sub(self.cpu_start.0),
            s.saturating_sub(self.cpu_start.1),
        );
        let wrote = self.write.ios > 0;
        if self.tracks_generations() && wrote && !self.halted() {
            self.phase = Phase::Verify;
            self.verify_start = Instant::now();
            self.next_verify(self.verify_start, 0)
        } else {
            self.phase = Phase::Done;
            Next::Done
        }
    }

    #[inline]
    fn next_verify(&mut self, now: Instant, inflight: usize) -> Next {
        if !self.halted() {
            while (self.vpos as usize) < self.generations.len() {
                let b = self.vpos;
                self.vpos += 1;
                if self.generations[b as usize] != 0 {
                    return Next::Io(IoReq {
                        offset: self.region_start + b * self.bs,
                        block: b,
                        write: false,
                        verify_phase: true,
                    });
                }
            }
        }
        if inflight > 0 {
            return Next::Wait;
        }
        self.verify_elapsed = now.saturating_duration_since(self.verify_start);
        self.phase = Phase::Done;
        Next::Done
    }

    /// End the job without issuing I/O (the fault was the set-up itself).
    pub fn finish_without_io(&mut self, now: Instant) {
        self.main_elapsed = now.saturating_duration_since(self.start);
        self.phase = Phase::Done;
    }

    /// Fill a write's buffer (verify header) just before it is issued.
    #[inline]
    pub fn prepare_write(&mut self, req: &IoReq, segs: &[libc::iovec]) {
        if !self.cfg.verify {
            return;
        }
        let mut generation = 1;
        if let Some(g) = self.generations.get_mut(req.block as usize) {
            *g = g.wrapping_add(1).max(1);
            generation = *g;
        }
        let h = verify::Header {
            offset: req.offset,
            seed: self.cfg.seed,
            generation,
            length: self.bs as u32,
            job: self.id,
        };
        // Safety: the slot's iovecs are this job's memory, not in flight.
        unsafe { verify::fill(segs, &h) };
    }

    /// Account a completion: `res` is the byte count or `-errno`.
    #[inline]
    pub fn complete(&mut self, req: &IoReq, res: i64, lat_ns: u64, segs: &[libc::iovec]) {
        if res < 0 || res as u64 != self.bs {
            self.fail_io(req, res);
            return;
        }
        if req.write {
            self.write.record(self.bs, lat_ns);
            return;
        }
        if req.verify_phase {
            self.verify_reads.record(self.bs, lat_ns);
        } else {
            self.read.record(self.bs, lat_ns);
        }
        if self.cfg.verify {
            let expected = self
                .generations
                .get(req.block as usize)
                .copied()
                .filter(|g| *g != 0);
            // Safety: the read has completed into this slot.
            let r =
                unsafe { verify::check(segs, req.offset, self.cfg.seed, self.bs as u32, expected) };
            self.verified += 1;
            if let Err(e) = r {
                self.verify_fail(req.offset, e);
            }
        }
    }

    #[cold]
    fn verify_fail(&mut self, offset: u64, error: VerifyError) {
        self.verify_failed += 1;
        if self.failures.len() < MAX_FAILURES_KEPT {
            self.failures.push(VerifyFailure {
                job: self.id,
                offset,
                error,
                message: format!(
                    "verify failed at offset {offset} (job {}): {error}",
                    self.id
                ),
            });
        }
    }

    #[cold]
    fn fail_io(&mut self, req: &IoReq, res: i64) {
        if self.io_error.is_some() {
            return;
        }
        let op = if req.write { "write" } else { "read" };
        let (errno, outcome, message) = if res < 0 {
            let e = std::io::Error::from_raw_os_error(-res as i32);
            let hint = match (-res as i32, self.cfg.direct, self.cfg.unaligned_iovecs) {
                (libc::EINVAL, true, true) => {
                    " (the kernel refuses iovecs whose lengths are not multiples of the \
                     logical block size: drop --unaligned-iovecs)"
                }
                (libc::EINVAL, true, false) if !self.cfg.mode.is_passthrough() => {
                    " (O_DIRECT refused the alignment of offset, length or memory)"
                }
                _ => "",
            };
            (
                -res as i32,
                errno_name(-res as i32),
                format!(
                    "{op} of {} bytes at offset {} failed: {e}{hint}",
                    self.bs, req.offset
                ),
            )
        } else {
            (
                0,
                if res == 0 { "eof" } else { "short" }.to_string(),
                format!(
                    "short {op} at offset {}: {res} of {} bytes",
                    req.offset, self.bs
                ),
            )
        };
        self.record_failure(req, errno, outcome, message);
    }

    /// A command that completed with a device status (SCSI sense, NVMe
    /// status): `outcome` names it, `message` explains it.
    #[cold]
    pub fn fail_status(&mut self, req: &IoReq, outcome: String, message: String) {
        if self.io_error.is_none() {
            self.record_failure(req, libc::EIO, outcome, message);
        }
    }

    /// Count a failure outside any I/O (a registration the fault made fail).
    pub fn fail_setup(&mut self, what: &str, err: &std::io::Error) {
        let errno = err.raw_os_error().unwrap_or(0);
        let req = IoReq::default();
        self.record_failure(&req, errno, errno_name(errno), format!("{what}: {err}"));
        if let Some(f) = self.first_error.as_mut().or(self.io_error.as_mut()) {
            f.op = "register";
        }
    }

    fn record_failure(&mut self, req: &IoReq, errno: i32, outcome: String, message: String) {
        let f = IoFailure {
            job: self.id,
            offset: req.offset,
            op: if req.write { "write" } else { "read" },
            errno,
            outcome,
            message,
        };
        if self.tolerate_errors {
            *self.errors.entry(f.outcome.clone()).or_insert(0) += 1;
            if self.first_error.is_none() {
                self.first_error = Some(f);
            }
        } else {
            self.io_error = Some(f);
        }
    }

    /// Record a failure of the I/O machinery itself (submit, ring set-up).
    #[cold]
    pub fn fail_engine(&mut self, what: &str, err: std::io::Error) {
        if self.io_error.is_none() {
            let errno = err.raw_os_error().unwrap_or(0);
            self.io_error = Some(IoFailure {
                job: self.id,
                offset: 0,
                op: "engine",
                errno,
                outcome: errno_name(errno),
                message: format!("{what}: {err}"),
            });
        }
    }
}

/// CPU time used by the calling thread so far: (user, system).
pub fn thread_cpu() -> (Duration, Duration) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RwKind;

    fn drive(cfg: &EngineConfig, blocks: u64) -> (Vec<IoReq>, Job<'_>) {
        static STOP: AtomicBool = AtomicBool::new(false);
        let mut job = Job::new(cfg, 0, -1, 1 << 20, blocks, &STOP);
        job.start(Instant::now());
        let mut out = Vec::new();
        let mut buf = vec![0u8; cfg.bs as usize];
        let iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        loop {
            match job.next_io(Instant::now(), 0) {
                Next::Io(r) => {
                    if r.write {
                        job.prepare_write(&r, &iov);
                    } else if cfg.verify {
                        // Pretend the device returned what was last written.
                        let g = job.generations.get(r.block as usize).copied().unwrap_or(1);
                        let h = verify::Header {
                            offset: r.offset,
                            seed: cfg.seed,
                            generation: g,
                            length: cfg.bs as u32,
                            job: 0,
                        };
                        unsafe { verify::fill(&iov, &h) };
                    }
                    job.complete(&r, cfg.bs as i64, 1000, &iov);
                    out.push(r);
                }
                Next::Wait => panic!("wait with nothing in flight"),
                Next::Done => break,
            }
        }
        (out, job)
    }

    #[test]
    fn one_pass_then_verify_phase() {
        let mut cfg = EngineConfig::new("/x");
        cfg.rw = RwKind::RandWrite;
        cfg.verify = true;
        let (ios, job) = drive(&cfg, 64);
        let writes: Vec<_> = ios.iter().filter(|r| r.write).collect();
        let checks: Vec<_> = ios.iter().filter(|r| r.verify_phase).collect();
        assert_eq!(writes.len(), 64);
        assert_eq!(checks.len(), 64);
        assert!(checks.windows(2).all(|w| w[0].offset < w[1].offset));
        assert_eq!(job.verified, 64);
        assert_eq!(job.verify_failed, 0);
        assert!(ios
            .iter()
            .all(|r| r.offset >= 1 << 20 && r.offset < (1 << 20) + 64 * 4096));
    }

    #[test]
    fn mix_follows_rwmixread() {
        let mut cfg = EngineConfig::new("/x");
        cfg.rw = RwKind::RandRw;
        cfg.rwmixread = 70;
        let (ios, job) = drive(&cfg, 10_000);
        assert_eq!(ios.len(), 10_000);
        let reads = ios.iter().filter(|r| !r.write).count();
        assert!((6_700..7_300).contains(&reads), "{reads}");
        assert_eq!(job.read.ios as usize, reads);
    }

    #[test]
    fn io_errors_stop_the_job() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let cfg = EngineConfig::new("/x");
        let mut job = Job::new(&cfg, 3, -1, 0, 8, &STOP);
        job.start(Instant::now());
        let Next::Io(r) = job.next_io(Instant::now(), 0) else {
            panic!()
        };
        job.complete(&r, -(libc::EIO as i64), 10, &[]);
        assert!(matches!(job.next_io(Instant::now(), 0), Next::Done));
        let e = job.io_error.unwrap();
        assert_eq!((e.job, e.errno, e.op), (3, libc::EIO, "read"));
        assert!(e.message.contains("offset 0"), "{}", e.message);
        assert_eq!(e.outcome, "EIO");
    }

    #[test]
    fn faults_count_errors_and_go_on() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let mut cfg = EngineConfig::new("/x");
        cfg.fault = Some(crate::config::FaultKind::PastEnd);
        let mut job = Job::new(&cfg, 0, -1, 0, 4, &STOP);
        job.start(Instant::now());
        let mut n = 0;
        while let Next::Io(r) = job.next_io(Instant::now(), 0) {
            let res = match n {
                0 => -(libc::EFAULT as i64),
                1 => 0,
                2 => 512,
                _ => -(libc::EFAULT as i64),
            };
            job.complete(&r, res, 10, &[]);
            n += 1;
        }
        assert_eq!(n, 4, "every I/O issued despite the failures");
        assert!(job.io_error.is_none());
        assert_eq!(job.errors.get("EFAULT"), Some(&2));
        assert_eq!(job.errors.get("eof"), Some(&1));
        assert_eq!(job.errors.get("short"), Some(&1));
        assert_eq!(job.first_error.unwrap().errno, libc::EFAULT);
        assert_eq!(errno_name(libc::ENOSPC), "ENOSPC");
    }
}
