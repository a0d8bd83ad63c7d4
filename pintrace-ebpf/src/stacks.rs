//! Kernel stacks of events, and the sampling policy that spares most
//! unwinds without losing the stack of a wrong or repeated unpin.

use crate::{
    maps::{
        global_u64, CLOSED, RELEASED, RELEASED_BUCKETS, STACKS, STACK_CLOCK, STACK_INTERVAL_NS,
    },
    ring::bump,
};
use aya_ebpf::programs::tracing::StackIdContext;
use pintrace_common::{Counter, STACK_CLOCK_SLOTS, STACK_NOT_TAKEN};

#[inline(always)]
fn released_bucket(folio: u64) -> u32 {
    (folio.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32 & (RELEASED_BUCKETS - 1)
}

/// Stack sampling must not lose the stack of a double unpin: an unpin
/// remembers the folio, an acquire forgets it, and an unpin of a folio
/// still remembered takes its stack. Returns whether this unpin finds its
/// folio remembered.
#[inline(always)]
pub(crate) fn recently_released(folio: u64) -> bool {
    let Some(b) = RELEASED.get_ptr_mut(released_bucket(folio)) else {
        return false;
    };
    // SAFETY: a valid array slot; concurrent writers only race on a hint.
    let b = unsafe { &mut *b };
    let m = |w: u64| w == folio;
    if m(b[0]) || m(b[1]) || m(b[2]) || m(b[3]) {
        return true;
    }
    remember(b, folio);
    false
}

/// Puts `entry` (a folio) in one of the bucket's ways.
#[inline(always)]
fn remember(b: &mut [u64; 4], entry: u64) {
    // An empty way, else one chosen by the folio's address.
    let way = if b[0] == 0 {
        0
    } else if b[1] == 0 {
        1
    } else if b[2] == 0 {
        2
    } else if b[3] == 0 {
        3
    } else {
        (entry >> 6) as usize & 3
    };
    b[way] = entry;
}

/// The kernel books closed `folio` (its last booked pin released): a
/// further unpin of it, sent as a record, says so ([`closed_in_books`]).
#[inline(always)]
pub(crate) fn remember_closed(folio: u64, exact: bool) {
    let Some(b) = RELEASED.get_ptr_mut(released_bucket(folio)) else {
        return;
    };
    // SAFETY: as in `recently_released`.
    let b = unsafe { &mut *b };
    // Its further unpin keeps its stack, as one after an unpin record does.
    if !b.contains(&folio) {
        remember(b, folio);
    }
    let _ = CLOSED.insert(folio, exact as u32, 0);
}

/// Whether the books closed `folio` (as far as [`CLOSED`] remembers), and
/// whether its book knew every pin: `None`, or `Some(exact)`.
#[inline(always)]
pub(crate) fn closed_in_books(folio: u64) -> Option<bool> {
    // SAFETY: the value is copied out at once.
    unsafe { CLOSED.get(&folio) }.map(|exact| *exact != 0)
}

/// An acquire of `folio`: it is pinned again, its next unpin is normal.
#[inline(always)]
pub(crate) fn forget_released(folio: u64) {
    if let Some(b) = RELEASED.get_ptr_mut(released_bucket(folio)) {
        // SAFETY: as in `recently_released`.
        let b = unsafe { &mut *b };
        for w in b.iter_mut() {
            if *w == folio {
                *w = 0;
            }
        }
    }
}

/// Stacks are sampled (not all, not none).
#[inline(always)]
pub(crate) fn sampling() -> bool {
    let interval = global_u64(&STACK_INTERVAL_NS);
    interval != 0 && interval != u64::MAX
}

/// The event's kernel stack id, unless the sampling policy says this CPU
/// took one for the same process and site (`key`) too recently: an unwind
/// is most of a probe's cost. The slots are hashed: a collision takes a
/// stack, never drops one that was due. `always`: take it regardless (an
/// unpin shown to be wrong).
#[inline(always)]
pub(crate) fn stack_id<C: StackIdContext>(
    ctx: &C,
    clock: u32,
    key: u64,
    now: u64,
    always: bool,
) -> i32 {
    let interval = global_u64(&STACK_INTERVAL_NS);
    if interval == u64::MAX {
        bump(Counter::StackSkipped);
        return STACK_NOT_TAKEN;
    }
    if interval != 0 && !always {
        let slot = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as u32 & (STACK_CLOCK_SLOTS - 1);
        let Some(c) = STACK_CLOCK.get_ptr_mut(clock * STACK_CLOCK_SLOTS + slot) else {
            return STACK_NOT_TAKEN;
        };
        // SAFETY: the slot is this CPU's own copy.
        unsafe {
            if (*c).key == key && now.wrapping_sub((*c).last_ns) < interval {
                bump(Counter::StackSkipped);
                return STACK_NOT_TAKEN;
            }
            (*c).key = key;
            (*c).last_ns = now;
        }
    }
    match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => id as i32,
        Err(e) => {
            bump(Counter::StackLost);
            e
        }
    }
}
