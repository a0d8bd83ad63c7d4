//! Submitting records: the ring buffer's wake-up policy and the per-CPU
//! counters of what was sent and what was lost.

use crate::maps::{global, COUNTERS, EVENTS, RB_WAKEUP_BYTES};
use pintrace_common::Counter;

/// `bpf_ringbuf_submit` and `bpf_ringbuf_query` flags (UAPI).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Flags for `submit`: the kernel's own wake-up policy, or (batched) no
/// wake-up until [`RB_WAKEUP_BYTES`] wait to be read.
#[inline(always)]
pub(crate) fn wakeup() -> u64 {
    let limit = global(&RB_WAKEUP_BYTES);
    if limit == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA) >= limit {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
pub(crate) fn bump(counter: Counter) {
    add(counter, 1);
}

#[inline(always)]
pub(crate) fn add(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the slot is this CPU's own copy.
        unsafe { *slot += n };
    }
}
