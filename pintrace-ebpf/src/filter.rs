//! `run -p PID`: the processes watched, filtered in the kernel, so that the
//! ring buffer and the books carry only their events.
//!
//! Acquires, filled bios and exits are theirs when the current thread group
//! is watched. A release is theirs when the folio holds a pin one of them
//! took: unpins run in whatever context completes the I/O (an interrupt, a
//! kworker), so the thread group says nothing about whose pin it drops.
//! [`PINNED`] counts, per folio, the pins watched processes hold.

use crate::{
    kernel::atomic_add,
    maps::{global, FILTER, FILTER_FOLIOS, FILTER_TGIDS},
    ring::bump,
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use pintrace_common::Counter;

/// `BPF_NOEXIST` (UAPI): insert only when the key is not there yet.
const BPF_NOEXIST: u64 = 1;

/// Whether any filter is set (`-p`).
#[inline(always)]
pub(crate) fn active() -> bool {
    global(&FILTER) != 0
}

/// Whether the current thread group is watched (always, without `-p`).
#[inline(always)]
pub(crate) fn current_watched() -> bool {
    if !active() {
        return true;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: only the presence of the key is used.
    unsafe { FILTER_TGIDS.get(&tgid) }.is_some()
}

/// Counts `n` pins of `folio` taken by a watched process (call only with
/// `-p`, for FOLL_PIN acquires). A folio that cannot be counted (map full)
/// is counted as a loss: its release from another context would go unseen.
#[inline(always)]
pub(crate) fn pinned(folio: u64, n: i64) {
    if folio == 0 {
        return;
    }
    if let Some(count) = FILTER_FOLIOS.get_ptr_mut(&folio) {
        atomic_add(count, n);
        return;
    }
    if FILTER_FOLIOS.insert(&folio, &n, BPF_NOEXIST).is_err() {
        // Another CPU inserted it first (add to its count), or the map is full.
        match FILTER_FOLIOS.get_ptr_mut(&folio) {
            Some(count) => atomic_add(count, n),
            None => bump(Counter::FilterFull),
        }
    }
}

/// Whether a release of `refs` pins of `folio` is watched: the releasing
/// process is, or the folio holds pins a watched process took (those are
/// uncounted here; the entry goes when none is left).
#[inline(always)]
pub(crate) fn release_watched(folio: u64, refs: i64, is_pin: bool) -> bool {
    if !active() {
        return true;
    }
    let mine = current_watched();
    let Some(count) = FILTER_FOLIOS.get_ptr_mut(&folio) else {
        return mine;
    };
    if is_pin {
        atomic_add(count, -refs);
        // SAFETY: `count` points into the map's value (read after the add:
        // a pin another CPU took meanwhile keeps the entry).
        if unsafe { core::ptr::read_volatile(count) } <= 0 {
            // A pin taken between the subtraction and the delete loses its
            // entry: its release is then seen only from a watched process.
            let _ = FILTER_FOLIOS.remove(&folio);
        }
    }
    true
}
