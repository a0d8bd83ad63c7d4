//! The tracepoint programs: block request completions, process exits and
//! the refcount audit.

use crate::{
    filter,
    kernel::{now_ns, read_u64},
    maps::{
        global, AUDIT, AUDIT_TGID, EVENTS, FOLIO_REFCOUNT_OFF, PAGE_COMPOUND_HEAD_OFF, PAGE_SIZEOF,
        RQ_DEV_OFF, RQ_ERROR_OFF, RQ_NR_SECTOR_OFF, RQ_RECORDS, RQ_SECTOR_OFF,
    },
    ring::{add, bump, wakeup},
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use pintrace_common::{
    Counter, ExitEvent, RqCompleteEvent, AUDIT_SLOTS, TAG_EXIT, TAG_RQ_COMPLETE,
};

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    let at = |off: &'static u32| global(off) as usize;
    // SAFETY: offsets come from the tracepoint's own format file.
    let (nr_sector, error) = unsafe {
        (
            ctx.read_at::<u32>(at(&RQ_NR_SECTOR_OFF)).unwrap_or(0),
            ctx.read_at::<i32>(at(&RQ_ERROR_OFF)).unwrap_or(0),
        )
    };
    // Counted per CPU, unless each request is wanted as a record: the
    // ledger needs none of them, only the totals.
    if global(&RQ_RECORDS) == 0 {
        add(Counter::RqRequests, 1);
        add(Counter::RqSectors, nr_sector as u64);
        if error != 0 {
            add(Counter::RqErrors, 1);
        }
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<RqCompleteEvent>(0) else {
        bump(Counter::RingbufFull);
        return 0;
    };
    // SAFETY: as above.
    let ev = unsafe {
        RqCompleteEvent {
            tag: TAG_RQ_COMPLETE,
            dev: ctx.read_at::<u32>(at(&RQ_DEV_OFF)).unwrap_or(0),
            ts_ns: now_ns(),
            sector: ctx.read_at::<u64>(at(&RQ_SECTOR_OFF)).unwrap_or(0),
            nr_sector,
            error,
        }
    };
    entry.write(ev);
    entry.submit(wakeup());
    bump(Counter::Submitted);
    0
}

/// Process exits, for "pin held by a process that exited".
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // Only the thread-group leader's exit ends the process.
    if tgid != pid_tgid as u32 || !filter::current_watched() {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        bump(Counter::RingbufFull);
        return 0;
    };
    entry.write(ExitEvent {
        tag: TAG_EXIT,
        tgid,
        ts_ns: now_ns(),
    });
    entry.submit(wakeup());
    bump(Counter::Submitted);
    0
}

/// The refcount audit: for pintrace's own getppid(2) only, reads the
/// refcount of each folio user space put in [`AUDIT`].
#[tracepoint(category = "syscalls", name = "sys_enter_getppid")]
pub fn audit_folios(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: reading a global the loader may have rewritten.
    if tgid != unsafe { core::ptr::read_volatile(&AUDIT_TGID) } {
        return 0;
    }
    for i in 0..AUDIT_SLOTS {
        let Some(slot) = AUDIT.get_ptr_mut(i) else {
            return 0;
        };
        // SAFETY: `slot` points into the array map's value for index i.
        let folio = unsafe { (*slot).folio };
        let refcount = read_u64(folio + global(&FOLIO_REFCOUNT_OFF)) as u32 as i32;
        let tail_head = read_u64(folio + global(&PAGE_SIZEOF) + global(&PAGE_COMPOUND_HEAD_OFF));
        // SAFETY: as above.
        unsafe {
            (*slot).refcount = refcount;
            (*slot).large = (folio != 0 && tail_head == folio + 1) as u32;
        }
    }
    0
}
