//! `io_uring` mode: `--iodepth` I/Os in flight, plain buffers or registered
//! fixed buffers (long-term pins, released at unregister).

use super::job::{IoReq, Job, Next};
use anyhow::{anyhow, Result};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

pub struct Uring {
    ring: IoUring,
    fixed_file: bool,
    fixed_buffers: bool,
}

impl Uring {
    /// Build the ring in the job's thread, register the file and, with
    /// `fixed_buffers`, the slots' memory.
    pub fn new(
        depth: u32,
        fd: RawFd,
        slots: &[Vec<libc::iovec>],
        fixed_buffers: bool,
    ) -> Result<Self> {
        let entries = depth.next_power_of_two();
        // Single issuer with deferred task work: completions are run when
        // this thread waits for them, not by interrupting it (kernel 6.1+).
        let ring = match IoUring::builder()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
        {
            Ok(r) => r,
            Err(_) =>                 IoUring::new(entries).map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOSYS) => anyhow!("--mode io_uring: the kernel has no io_uring (ENOSYS)"),
                    Some(libc::EPERM) => anyhow!("--mode io_uring: io_uring is disabled (EPERM; see /proc/sys/kernel/io_uring_disabled)"),
                    _ => anyhow!("--mode io_uring: cannot set up a ring of {entries} entries: {e}"),
                })?,
        };
        let fixed_file = ring.submitter().register_files(&[fd]).is_ok();
        let mut u = Uring {
            ring,
            fixed_file,
            fixed_buffers: false,
        };
        if fixed_buffers {
            u.register(slots)
                .map_err(|e| register_error(&e, slots.len()))?;
        }
        Ok(u)
    }

    /// Register the first segment of every slot as a fixed buffer (each is
    /// pinned long-term, in order; a failure releases the ones pinned).
    pub fn register(&mut self, slots: &[Vec<libc::iovec>]) -> io::Result<()> {
        let iovs: Vec<libc::iovec> = slots.iter().map(|s| s[0]).collect();
        // Safety: the slots stay mapped until the ring is dropped (the
        // arena outlives it) and are unregistered before.
        unsafe { self.ring.submitter().register_buffers(&iovs) }?;
        self.fixed_buffers = true;
        Ok(())
    }
    #[inline]
    fn sqe(&self, fd: RawFd, req: &IoReq, slot: usize, iov: &libc::iovec) -> squeue::Entry {
        let ptr = iov.iov_base as *mut u8;
        let len = iov.iov_len as u32;
        let idx = slot as u16;
        macro_rules! op {
            ($t:expr) => {
                match (req.write, self.fixed_buffers) {
                    (false, false) => opcode::Read::new($t, ptr, len).offset(req.offset).build(),
                    (true, false) => opcode::Write::new($t, ptr, len).offset(req.offset).build(),
                    (false, true) => opcode::ReadFixed::new($t, ptr, len, idx)
                        .offset(req.offset)
                        .build(),
                    (true, true) => opcode::WriteFixed::new($t, ptr, len, idx)
                        .offset(req.offset)
                        .build(),
                }
            };
        }
        let e = if self.fixed_file {
            op!(types::Fixed(0))
        } else {
            op!(types::Fd(fd))
        };
        e.user_data(slot as u64)
    }

    /// Run the job to its end, submitting every `batch` I/Os.
    pub fn run(&mut self, job: &mut Job<'_>, slots: &[Vec<libc::iovec>], batch: usize) {
        let depth = slots.len();
        let batch = batch.clamp(1, depth);
        let mut free: Vec<usize> = (0..depth).rev().collect();
        let mut reqs = vec![IoReq::default(); depth];
        let mut issued = vec![Instant::now(); depth];
        let mut queued = 0usize;
        let mut inflight = 0usize;
        let mut now = Instant::now();
        let fd = job.fd;
        loop {
            let mut done = false;
            while inflight < depth {
                match job.next_io(now, inflight) {
                    Next::Io(req) => {
                        let slot = free.pop().expect("a free slot below the depth");
                        if req.write {
                            job.prepare_write(&req, &slots[slot]);
                        }
                        let sqe = self.sqe(fd, &req, slot, &slots[slot][0]);
                        // Safety: the buffer stays valid until the completion.
                        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                            // Cannot happen: the ring has at least `depth` entries.
                            free.push(slot);
                            job.fail_engine(
                                "io_uring submission queue full",
                                io::Error::from_raw_os_error(libc::EBUSY),
                            );
                            break;
                        }
                        reqs[slot] = req;
                        inflight += 1;
                        queued += 1;
                        issued[slot] = Instant::now();
                        if queued >= batch {
                            match self.ring.submit() {
                                Ok(n) => queued = queued.saturating_sub(n),
                                Err(e) if retryable(&e) => {}
                                Err(e) => {
                                    job.fail_engine("io_uring_enter", e);
                                    return;
                                }
                            }
                            if job.wants_fork() {
                                // fork-shared: fork while these I/Os are in flight.
                                job.tick(Instant::now());
                            }
                        }
                    }
                    Next::Wait => break,
                    Next::Done => {
                        done = true;
                        break;
                    }
                }
            }
            if inflight == 0 {
                if done {
                    break;
                }
                continue;
            }
            if job.wants_fork() {
                let t = Instant::now();
                if job.fork_due(t) {
                    let _ = self.ring.submit();
                    job.tick(t);
                }
            }
            // Submit the rest and wait for a completion.
            loop {
                match self.ring.submit_and_wait(1) {
                    Ok(_) => break,
                    Err(e) if retryable(&e) => {
                        if !self.ring.completion().is_empty() {
                            break;
                        }
                    }
                    Err(e) => {
                        job.fail_engine("io_uring_enter", e);
                        return;
                    }
                }
            }
            queued = 0;
            now = Instant::now();
            for cqe in self.ring.completion() {
                let slot = cqe.user_data() as usize;
                let lat = now.duration_since(issued[slot]).as_nanos() as u64;
                job.complete(&reqs[slot], i64::from(cqe.result()), lat, &slots[slot]);
                free.push(slot);
                inflight -= 1;
            }
        }
    }

    /// Release the registered buffers (and their long-term pins) and the
    /// registered file, now rather than when the ring's teardown runs.
    pub fn unregister(&mut self) -> io::Result<()> {
        if self.fixed_file {
            self.fixed_file = false;
            let _ = self.ring.submitter().unregister_files();
        }
        if self.fixed_buffers {
            self.fixed_buffers = false;
            self.ring.submitter().unregister_buffers()?;
        }
        Ok(())
    }
}

/// The error of a failed registration, with what usually causes it.
pub fn register_error(e: &io::Error, n: usize) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EFAULT) | Some(libc::EOPNOTSUPP) => {
            " (the kernel refuses long-term pins of these pages: file-backed \
             MAP_SHARED memory of a filesystem that needs writeback cannot be \
             registered; use --scratch-dir on tmpfs, or another --buffer)"
        }
        Some(libc::ENOMEM) => " (RLIMIT_MEMLOCK too low?)",
        _ => "",
    };
    anyhow!("--fixed-buffers: register_buffers of {n} buffers failed: {e}{hint}")
}

pub(crate) fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

impl Drop for Uring {
    fn drop(&mut self) {
        let _ = self.unregister();
    }
}
