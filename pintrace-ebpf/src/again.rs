//! Second programs for the sites an interrupt can call again while the
//! site's program runs on the CPU below it (an unpin in a bio's completion
//! interrupting a task's unpin). The kernel runs a trampoline program at
//! most once per CPU at a time and skips the nested run; the site's second
//! program, attached beside the first, is not running then. The first marks
//! its run in [`RUNNING`]; the second runs the site's body only when it
//! finds that mark, that is, exactly when the kernel skipped the first for
//! this call. User space subtracts what the second sent
//! ([`Counter::Recovered`]) from the first's skipped runs to count what is
//! still lost (a nested call that came between the kernel's mark and the
//! first's own, a few instructions).

use crate::ring::bump;
use aya_ebpf::{macros::map, maps::PerCpuArray};
use pintrace_common::{Counter, Site, SITE_SLOTS};

/// Per site, per CPU: 1 while the site's first program runs its body.
#[map]
static RUNNING: PerCpuArray<u32> = PerCpuArray::with_max_entries(SITE_SLOTS as u32, 0);

/// The site's first program: its body, with its run marked.
#[inline(always)]
pub(crate) fn first(site: Site, body: impl FnOnce() -> u32) -> u32 {
    let mark = RUNNING.get_ptr_mut(site as u32);
    if let Some(p) = mark {
        // SAFETY: this CPU's own slot; the trampoline keeps the program on
        // this CPU until it returns.
        unsafe { core::ptr::write_volatile(p, 1) };
    }
    let ret = body();
    if let Some(p) = mark {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(p, 0) };
    }
    ret
}

/// The site's second program: the body only in place of a skipped first.
#[inline(always)]
pub(crate) fn second(site: Site, body: impl FnOnce() -> u32) -> u32 {
    let Some(p) = RUNNING.get_ptr(site as u32) else {
        return 0;
    };
    // SAFETY: this CPU's own slot.
    if unsafe { core::ptr::read_volatile(p) } == 0 {
        return 0;
    }
    bump(Counter::Recovered);
    body()
}
