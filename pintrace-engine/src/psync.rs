//! Synchronous modes: `psync` (pread / pwrite) and `pvsync` (preadv /
//! pwritev over scattered iovecs). One I/O at a time per job.

use super::job::{Job, Next};
use std::time::Instant;

/// Run the job; `iovs` are the segments of the single slot (one segment for psync).
pub fn run(job: &mut Job<'_>, iovs: &[libc::iovec], vectored: bool) {
    let fd = job.fd;
    let bs = job.bs as usize;
    let buf = iovs[0].iov_base;
    let mut now = Instant::now();
    loop {
        let req = match job.next_io(now, 0) {
            Next::Io(r) => r,
            Next::Wait => continue,
            Next::Done => break,
        };
        if req.write {
            job.prepare_write(&req, iovs);
        }
        let off = req.offset as libc::off_t;
        let t0 = Instant::now();
        let r = loop {
            // Safety: the slot memory belongs to this job and holds bs bytes.
            let r = unsafe {
                match (vectored, req.write) {
                    (false, false) => libc::pread(fd, buf, bs, off),
                    (false, true) => libc::pwrite(fd, buf, bs, off),
                    (true, false) => libc::preadv(fd, iovs.as_ptr(), iovs.len() as i32, off),
                    (true, true) => libc::pwritev(fd, iovs.as_ptr(), iovs.len() as i32, off),
                }
            };
            if r >= 0 {
                break r as i64;
            }
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if e != libc::EINTR {
                break -(e as i64);
            }
        };
        now = Instant::now();
        let lat = now.duration_since(t0).as_nanos() as u64;
        job.complete(&req, r, lat, iovs);
        job.tick(now);
    }
}
