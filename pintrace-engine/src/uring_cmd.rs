//! `uring-cmd` mode: NVMe Read / Write through io_uring IORING_OP_URING_CMD
//! (NVME_URING_CMD_IO) on /dev/ngXnY, in a ring of 128-byte SQEs and
//! 32-byte CQEs; with `--fixed-buffers` the buffers are registered and the
//! commands name them (IORING_URING_CMD_FIXED, buf_index).

use super::job::{IoReq, Job, Next};
use super::nvme::{self, NvmeUringCmd, NVME_URING_CMD_IO};
use super::uring::retryable;
use anyhow::{anyhow, Result};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

pub struct UringCmd {
    ring: IoUring<squeue::Entry128, cqueue::Entry32>,
    fixed_buffers: bool,
    nsid: u32,
    lbs: u32,
    timeout_ms: u32,
}

impl UringCmd {
    /// Build the ring (SQE128 + CQE32, which NVMe passthrough needs).
    pub fn new(depth: u32, nsid: u32, lbs: u32, timeout_ms: u32) -> Result<Self> {
        let entries = depth.next_power_of_two();
        let ring = IoUring::<squeue::Entry128, cqueue::Entry32>::builder()
            .build(entries)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOSYS) => anyhow!("--mode uring-cmd: the kernel has no io_uring (ENOSYS)"),
                Some(libc::EPERM) => anyhow!("--mode uring-cmd: io_uring is disabled (EPERM; see /proc/sys/kernel/io_uring_disabled)"),
                Some(libc::EINVAL) => anyhow!("--mode uring-cmd: the kernel refuses a ring with 128-byte SQEs and 32-byte CQEs (IORING_SETUP_SQE128 | IORING_SETUP_CQE32, Linux 5.19+): {e}"),
                _ => anyhow!("--mode uring-cmd: cannot set up a ring of {entries} entries: {e}"),
            })?;
        Ok(UringCmd {
            ring,
            fixed_buffers: false,
            nsid,
            lbs,
            timeout_ms,
        })
    }

    /// Register the first segment of every slot (long-term pins, in order).
    pub fn register(&mut self, slots: &[Vec<libc::iovec>]) -> io::Result<()> {
        let iovs: Vec<libc::iovec> = slots.iter().map(|s| s[0]).collect();
        // SAFETY: the slots stay mapped until the ring is dropped (the arena
        // outlives it) and are unregistered before.
        unsafe { self.ring.submitter().register_buffers(&iovs) }?;
        self.fixed_buffers = true;
        Ok(())
    }

    fn sqe(&self, fd: RawFd, req: &IoReq, slot: usize, iov: &libc::iovec) -> squeue::Entry128 {
        let len = iov.iov_len as u32;
        let cmd = NvmeUringCmd {
            timeout_ms: self.timeout_ms,
            ..NvmeUringCmd::rw(
                req.write,
                self.nsid,
                req.offset / u64::from(self.lbs),
                len / self.lbs,
                iov.iov_base as u64,
                len,
            )
        };
        opcode::UringCmd80::new(types::Fd(fd), NVME_URING_CMD_IO)
            .cmd(cmd.to_bytes())
            .buf_index(self.fixed_buffers.then_some(slot as u16))
            .build()
            .user_data(slot as u64)
    }

    /// Run the job to its end, up to the depth in flight.
    pub fn run(&mut self, job: &mut Job<'_>, slots: &[Vec<libc::iovec>], batch: usize) {
        let depth = slots.len();
        let batch = batch.clamp(1, depth);
        let mut free: Vec<usize> = (0..depth).rev().collect();
        let mut reqs = vec![IoReq::default(); depth];
        let mut issued = vec![Instant::now(); depth];
        let (mut queued, mut inflight) = (0usize, 0usize);
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
                        // SAFETY: the buffer stays valid until the completion.
                        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                            free.push(slot);
                            job.fail_engine(
                                "io_uring submission queue full",
                                io::Error::from_raw_os_error(libc::EBUSY),
                            );
                            break;
                        }
                        reqs[slot] = req;
                        issued[slot] = Instant::now();
                        inflight += 1;
                        queued += 1;
                        if queued >= batch {
                            match self.ring.submit() {
                                Ok(n) => queued = queued.saturating_sub(n),
                                Err(e) if retryable(&e) => {}
                                Err(e) => {
                                    job.fail_engine("io_uring_enter", e);
                                    return;
                                }
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
                let (slot, res) = (cqe.user_data() as usize, cqe.result());
                let lat = now.duration_since(issued[slot]).as_nanos() as u64;
                let req = reqs[slot];
                if res > 0 {
                    // A positive result is the NVMe status of a failed command.
                    let (outcome, what) = nvme::status(res);
                    let op = if req.write { "Write" } else { "Read" };
                    let msg = format!(
                        "NVMe {op} of {} bytes at offset {} failed: {what}",
                        job.bs, req.offset
                    );
                    job.fail_status(&req, outcome, msg);
                } else if res == 0 {
                    job.complete(&req, job.bs as i64, lat, &slots[slot]);
                } else {
                    job.complete(&req, i64::from(res), lat, &slots[slot]);
                }
                free.push(slot);
                inflight -= 1;
            }
        }
    }

    /// Release the registered buffers (and their long-term pins) now.
    pub fn unregister(&mut self) -> io::Result<()> {
        if self.fixed_buffers {
            self.fixed_buffers = false;
            self.ring.submitter().unregister_buffers()?;
        }
        Ok(())
    }
}

impl Drop for UringCmd {
    fn drop(&mut self) {
        let _ = self.unregister();
    }
}
