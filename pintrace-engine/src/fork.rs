//! `--buffer fork-shared`: fork a child while I/O is in flight; the child
//! writes to every page of the buffer (breaking COW against pinned pages) and
//! exits; the parent reaps it and forks the next one an interval later.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Forker {
    interval: Duration,
    next: Instant,
    child: Option<libc::pid_t>,
    base: usize,
    len: usize,
    /// Children forked.
    pub forks: u64,
    /// Children that did not exit cleanly, or forks that failed.
    pub failures: u64,
}

impl Forker {
    pub fn new(base: *mut u8, len: usize, interval: Duration) -> Self {
        Forker {
            interval,
            next: Instant::now(),
            child: None,
            base: base as usize,
            len,
            forks: 0,
            failures: 0,
        }
    }

    /// Start the schedule: the first fork happens at the first tick.
    pub fn start(&mut self, now: Instant) {
        self.next = now;
    }

    /// Whether the next fork is due at `now`.
    #[inline]
    pub fn due_at(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Called from the I/O loop with the latest timestamp; cheap when not due.
    #[inline]
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next {
            self.due(now);
        }
    }

    #[cold]
    fn due(&mut self, now: Instant) {
        self.next = now + self.interval;
        if let Some(pid) = self.child {
            if !self.reap(pid, libc::WNOHANG) {
                return;
            }
        }
        self.fork();
    }

    /// Wait for `pid`; true once it is gone.
    fn reap(&mut self, pid: libc::pid_t, flags: i32) -> bool {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == 0 {
            return false;
        }
        if r < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            self.failures += 1;
        }
        self.child = None;
        true
    }

    fn fork(&mut self) {
        let (base, len) = (self.base as *mut u8, self.len);
        // The child only writes memory and exits: async-signal-safe, so fine
        // in a multi-threaded parent.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                let mut off = 0;
                while off < len {
                    let p = base.add(off);
                    p.write_volatile(p.read_volatile().wrapping_add(1));
                    off += 4096;
                }
                libc::_exit(0);
            }
        } else if pid > 0 {
            self.child = Some(pid);
            self.forks += 1;
        } else {
            self.failures += 1;
        }
    }

    /// Reap the last child (blocking).
    pub fn finish(&mut self) {
        if let Some(pid) = self.child {
            while !self.reap(pid, 0) {}
        }
    }
}

impl Drop for Forker {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forks_touches_and_reaps() {
        let mut buf = vec![7u8; 3 * 4096];
        let mut f = Forker::new(buf.as_mut_ptr(), buf.len(), Duration::from_millis(1));
        let t = Instant::now();
        f.start(t);
        f.tick(t);
        assert_eq!(f.forks, 1);
        f.tick(t); // not due yet
        assert_eq!(f.forks, 1);
        std::thread::sleep(Duration::from_millis(20));
        f.tick(Instant::now());
        f.finish();
        assert_eq!(f.forks, 2);
        assert_eq!(f.failures, 0);
        // The children's writes went to their own copies.
        assert!(buf.iter().all(|&b| b == 7));
    }
}
