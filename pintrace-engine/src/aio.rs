//! `aio` mode: Linux native AIO through the raw syscalls (io_setup,
//! io_submit, io_getevents, io_destroy), `--iodepth` I/Os in flight.

use super::job::{IoReq, Job, Next};
use anyhow::{anyhow, Result};
use std::io;
use std::time::Instant;

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;

/// `struct iocb` of <linux/aio_abi.h> (little endian).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const _: () = assert!(std::mem::size_of::<Iocb>() == 64);
const _: () = assert!(std::mem::size_of::<IoEvent>() == 32);

/// Slots and the iocbs waiting to be submitted.
struct Queue {
    reqs: Vec<IoReq>,
    free: Vec<usize>,
    pending: Vec<*mut Iocb>,
    /// Submitted or pending.
    inflight: usize,
}

pub struct Aio {
    ctx: libc::c_ulong,
}

impl Aio {
    pub fn new(depth: u32) -> Result<Self> {
        let mut ctx: libc::c_ulong = 0;
        let r = unsafe { libc::syscall(libc::SYS_io_setup, depth as libc::c_long, &mut ctx) };
        if r != 0 {
            let e = io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::EAGAIN) => " (/proc/sys/fs/aio-max-nr reached)",
                Some(libc::ENOSYS) => " (kernel without CONFIG_AIO)",
                _ => "",
            };
            return Err(anyhow!("--mode aio: io_setup({depth}) failed: {e}{hint}"));
        }
        Ok(Aio { ctx })
    }

    /// Run the job to its end, submitting every `batch` I/Os.
    pub fn run(&mut self, job: &mut Job<'_>, slots: &[Vec<libc::iovec>], batch: usize) {
        let depth = slots.len();
        let batch = batch.clamp(1, depth);
        let fd = job.fd as u32;
        let mut iocbs = vec![Iocb::default(); depth];
        let iocb_base = iocbs.as_mut_ptr();
        let mut q = Queue {
            reqs: vec![IoReq::default(); depth],
            free: (0..depth).rev().collect(),
            pending: Vec::with_capacity(depth),
            inflight: 0,
        };
        let mut issued = vec![Instant::now(); depth];
        let mut events = vec![IoEvent::default(); depth];
        let mut now = Instant::now();
        loop {
            let mut done = false;
            while q.inflight < depth {
                match job.next_io(now, q.inflight) {
                    Next::Io(req) => {
                        let slot = q.free.pop().expect("a free slot below the depth");
                        if req.write {
                            job.prepare_write(&req, &slots[slot]);
                        }
                        let iov = &slots[slot][0];
                        let cb = Iocb {
                            aio_data: slot as u64,
                            aio_lio_opcode: if req.write {
                                IOCB_CMD_PWRITE
                            } else {
                                IOCB_CMD_PREAD
                            },
                            aio_fildes: fd,
                            aio_buf: iov.iov_base as u64,
                            aio_nbytes: iov.iov_len as u64,
                            aio_offset: req.offset as i64,
                            ..Iocb::default()
                        };
                        // Safety: slot < depth; `iocbs` is neither moved nor resized.
                        let p = unsafe { iocb_base.add(slot) };
                        unsafe { p.write(cb) };
                        q.reqs[slot] = req;
                        q.pending.push(p);
                        q.inflight += 1;
                        issued[slot] = Instant::now();
                        if q.pending.len() >= batch {
                            self.flush(job, &mut q, slots);
                        }
                    }
                    Next::Wait => break,
                    Next::Done => {
                        done = true;
                        break;
                    }
                }
            }
            if q.inflight == 0 {
                if done {
                    break;
                }
                continue;
            }
            self.flush(job, &mut q, slots);
            let submitted = q.inflight - q.pending.len();
            if submitted == 0 {
                // The kernel took nothing (EAGAIN) and nothing is in flight: retry.
                std::thread::yield_now();
                continue;
            }
            let n = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.ctx,
                    1 as libc::c_long,
                    depth as libc::c_long,
                    events.as_mut_ptr(),
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                job.fail_engine("io_getevents", e);
                self.drain(submitted);
                return;
            }
            now = Instant::now();
            for ev in &events[..n as usize] {
                let slot = ev.data as usize;
                let lat = now.duration_since(issued[slot]).as_nanos() as u64;
                job.complete(&q.reqs[slot], ev.res, lat, &slots[slot]);
                q.free.push(slot);
                q.inflight -= 1;
            }
        }
        drop(iocbs);
    }

    /// Submit what is pending; what the kernel does not take yet stays
    /// pending, an iocb it refuses completes with the error.
    fn flush(&mut self, job: &mut Job<'_>, q: &mut Queue, slots: &[Vec<libc::iovec>]) {
        while !q.pending.is_empty() {
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_submit,
                    self.ctx,
                    q.pending.len() as libc::c_long,
                    q.pending.as_ptr(),
                )
            };
            if r > 0 {
                q.pending.drain(..r as usize);
                if job.wants_fork() {
                    // fork-shared: fork while these I/Os are in flight.
                    job.tick(Instant::now());
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                _ if r == 0 => break,
                Some(libc::EAGAIN) | Some(libc::EINTR) => break,
                errno => {
                    // Safety: pointers into the iocb array, valid for the run.
                    let slot = unsafe { (*q.pending[0]).aio_data } as usize;
                    let errno = errno.unwrap_or(libc::EIO);
                    job.complete(&q.reqs[slot], -(errno as i64), 0, &slots[slot]);
                    q.free.push(slot);
                    q.pending.remove(0);
                    q.inflight -= 1;
                }
            }
        }
    }

    /// Wait for `n` submitted I/Os after a failure, so no buffer is freed under DMA.
    fn drain(&mut self, mut n: usize) {
        let mut ev = [IoEvent::default(); 64];
        while n > 0 {
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.ctx,
                    1 as libc::c_long,
                    ev.len() as libc::c_long,
                    ev.as_mut_ptr(),
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            if r <= 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
            n = n.saturating_sub(r.max(0) as usize);
        }
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
    }
}
