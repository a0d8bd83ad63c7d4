//! The work of every acquire site: its arguments (at an fexit, or parked by
//! a kprobe for its kretprobe), its record and the folios of the pages it
//! grabbed. The programs are in `acquire_sites`.

use core::ffi::c_void;

use crate::{
    books::{self, Booker},
    filter,
    kernel::{folio_of, func_arg, func_ret, kprobe_args, now_ns, pick, read_u64},
    maps::{arg_pos, global, ret_is_long, ENTRY_ARGS, EVENTS, FILLS, FOLIO_REFCOUNT_OFF, FOLL_PIN},
    ring::{bump, wakeup},
    stacks::{forget_released, sampling, stack_id},
};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_loop},
    programs::{tracing::StackIdContext, FExitContext, ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;
use pintrace_common::{
    AcquireEvent, AcquireWithFolios, Counter, EntryArgs, FolioBatch, Site, TallyKey, ARG_GUP_FLAGS,
    ARG_NR_PAGES, ARG_PAGES, ARG_START, FOLIOS_PER_RECORD, FOLIO_BELOW_1_PIN, FOLIO_BELOW_2_PINS,
    MAX_FOLIO_RECORDS, STACK_CLOCK_ACQUIRE, TAG_ACQUIRE, TAG_ACQUIRE_FOLIOS,
    TAG_ACQUIRE_FOLIOS_COUNTED, TAG_FOLIOS,
};

/// What one [`folio_batch`] step needs, on the caller's stack.
#[repr(C)]
struct FolioLoop {
    pid_tgid: u64,
    ts_ns: u64,
    pages: u64,
    n: u64,
    site: u32,
    /// 1: count each folio's pin for `-p` (see [`filter::pinned`]).
    track: u32,
}

/// Emits the folios of the first `n` pages of a `struct page **` array, in
/// batches.
///
/// The batches are a `bpf_loop` (5.17 on): the verifier checks one batch
/// once, however many a call may need. Unrolled, eight batches of 32 slots
/// took 6.1's verifier to its complexity limit (tens of seconds under TCG,
/// then E2BIG, depending on the code around it).
#[inline(always)]
fn emit_folios(site: Site, pid_tgid: u64, ts_ns: u64, pages: u64, n: i64, track: bool) {
    if pages == 0 || n <= 0 {
        return;
    }
    let n = n as u64;
    let per = FOLIOS_PER_RECORD as u64;
    let max = MAX_FOLIO_RECORDS as u64;
    let want = n.div_ceil(per);
    let mut state = FolioLoop {
        pid_tgid,
        ts_ns,
        pages,
        n,
        site: site as u32,
        track: track as u32,
    };
    // SAFETY: `folio_batch` has bpf_loop's callback signature; `state` lives
    // on this stack for the whole loop.
    unsafe {
        bpf_loop(
            if want < max { want as u32 } else { max as u32 },
            folio_batch as *mut c_void,
            &mut state as *mut FolioLoop as *mut c_void,
            0,
        );
    }
    if n > max * per {
        bump(Counter::FoliosTruncated);
    }
}

/// Fills a folio batch with the folios of the `count` (1..=32) pages at
/// `base` (a `struct page **`), their pin evidence in the low bits.
///
/// # Safety
/// `out` points at a reserved ring-buffer record.
#[inline(always)]
unsafe fn fill_batch(
    out: *mut FolioBatch,
    base: u64,
    count: u32,
    first: u32,
    ts_ns: u64,
    pid_tgid: u64,
    site: u32,
    track: bool,
) {
    let sampling = sampling();
    // Kernel reads only for the pages the call grabbed: three per page are
    // most of the probe's cost, and a 4 KiB I/O has one page. Slots past
    // `count` are zero. `count` is bounded and each slot is tested against
    // it with its constant index: the verifier then walks a batch in
    // linear time.
    for j in 0..FOLIOS_PER_RECORD {
        let folio = if (j as u32) < count {
            folio_of(read_u64(base + j as u64 * 8))
        } else {
            0
        };
        // Pin evidence in the low bits, branch-free: a small folio's
        // refcount below 1024 (2048) holds no pin (at most one).
        let rc = if folio != 0 {
            read_u64(folio + global(&FOLIO_REFCOUNT_OFF)) as u32 as u64
        } else {
            0
        };
        let below1 = (rc.wrapping_sub(1024) >> 63) & 1;
        let below2 = (rc.wrapping_sub(2048) >> 63) & 1;
        let entry = folio | (below1 * FOLIO_BELOW_1_PIN) | (below2 * FOLIO_BELOW_2_PINS);
        if sampling && folio != 0 {
            forget_released(folio);
        }
        if track {
            filter::pinned(folio, 1);
        }
        // SAFETY: `out` is a reserved record; j is below the array length.
        unsafe { (*out).folios[j] = entry };
    }
    // SAFETY: as above, for the header fields.
    unsafe {
        (*out).tag = TAG_FOLIOS;
        (*out).count = count;
        (*out).ts_ns = ts_ns;
        (*out).pid_tgid = pid_tgid;
        (*out).first = first;
        (*out).site = site;
    }
}

/// One batch of [`emit_folios`]: batch `chunk` of the array in `ctx`.
#[inline(never)]
extern "C" fn folio_batch(chunk: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `FolioLoop` of `emit_folios`.
    let state = unsafe { &mut *(ctx as *mut FolioLoop) };
    let first = chunk * FOLIOS_PER_RECORD as u64;
    let n = state.n;
    if first >= n {
        return 1;
    }
    let left = n - first;
    // Bounded (1..=32): see `fill_batch`.
    let count = if left < FOLIOS_PER_RECORD as u64 {
        left as u32
    } else {
        FOLIOS_PER_RECORD as u32
    };
    let Some(mut rec) = EVENTS.reserve::<FolioBatch>(0) else {
        bump(Counter::RingbufFull);
        return 0;
    };
    let base = state.pages + first * 8;
    // SAFETY: the record is reserved and ours until submitted.
    unsafe {
        fill_batch(
            rec.as_mut_ptr(),
            base,
            count,
            first as u32,
            state.ts_ns,
            state.pid_tgid,
            state.site,
            state.track != 0,
        )
    };
    rec.submit(wakeup());
    bump(Counter::Submitted);
    0
}

/// Pages one call books at most (4 GiB of small pages); beyond, they are
/// counted as [`Counter::FoliosTruncated`].
const MAX_BOOKED_PAGES: u64 = 1 << 20;

/// What one [`book_page`] step needs, on the caller's stack.
#[repr(C)]
struct BookLoop {
    who: Booker,
    pid_tgid: u64,
    start: u64,
    pages: u64,
    n: u64,
    gup_flags: u32,
    /// 1: count each folio's pin for `-p` (see [`filter::pinned`]).
    track: u32,
}

/// A pin call with the kernel books on: counted in the tally, its folios
/// booked one page at a time (a `bpf_loop`, so a 1 GiB registration is
/// one call of 262,144 steps). False when the tally could not count it:
/// the caller sends it as records.
#[inline(always)]
fn book_acquire<C: StackIdContext>(ctx: &C, site: Site, args: &EntryArgs, ret: i64) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = pid_tgid >> 32 << 32 | site as u64;
    let stack_id = stack_id(ctx, STACK_CLOCK_ACQUIRE, key, args.ts_ns, false);
    let who = Booker {
        ts_ns: args.ts_ns,
        tgid: (pid_tgid >> 32) as u32,
        stack_id,
        site: site as u16,
        flags: books::kind_flags(args.gup_flags),
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        // SAFETY: the value is copied out at once.
        fill_ns: unsafe { FILLS.get(&pid_tgid) }.copied().unwrap_or(0),
    };
    let tally_key = TallyKey {
        tgid: who.tgid,
        stack_id,
        site: who.site,
        flags: who.flags,
        _reserved: 0,
    };
    if !books::count_call(&tally_key, &who.comm, ret) {
        bump(Counter::BooksFull);
        return false;
    }
    let n = ret.max(0) as u64;
    let mut state = BookLoop {
        who,
        pid_tgid,
        start: args.start,
        pages: args.pages,
        n,
        gup_flags: args.gup_flags,
        track: filter::active() as u32,
    };
    // This thread sent an unpin the ledger may hold as a mismatch: GUP
    // drops grabs of its own inside the call (gup_fast_fallback), and this
    // return is what tells the ledger so.
    if books::returning_after_unpin(pid_tgid as u32) {
        emit_counted(&state, 0, ret, 0);
    }
    if ret <= 0 || args.pages == 0 {
        return true;
    }
    // SAFETY: `book_page` has bpf_loop's callback signature; `state` lives
    // on this stack for the whole loop.
    unsafe {
        bpf_loop(
            n.min(MAX_BOOKED_PAGES) as u32,
            book_page as *mut c_void,
            &mut state as *mut BookLoop as *mut c_void,
            0,
        );
    }
    if n > MAX_BOOKED_PAGES {
        bump(Counter::FoliosTruncated);
    }
    true
}

/// Books page `i` of the call in `ctx`; a folio its book cannot take is
/// sent as a one-folio acquire record the tally has already counted.
#[inline(never)]
extern "C" fn book_page(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `BookLoop` of `book_acquire`.
    let state = unsafe { &*(ctx as *const BookLoop) };
    let page = read_u64(state.pages + i * 8);
    let folio = folio_of(page);
    let refcount = read_u64(folio + global(&FOLIO_REFCOUNT_OFF)) as u32 as u64;
    if state.track != 0 {
        filter::pinned(folio, 1);
    }
    if books::book(folio, refcount, &state.who) {
        return 0;
    }
    let below1 = (refcount.wrapping_sub(1024) >> 63) & 1;
    let below2 = (refcount.wrapping_sub(2048) >> 63) & 1;
    let entry = folio | (below1 * FOLIO_BELOW_1_PIN) | (below2 * FOLIO_BELOW_2_PINS);
    emit_counted(state, i, 1, entry);
    0
}

/// An acquire record of a call the tally has counted: `ret` pages from
/// page `i` on, with one folio `entry` (0: none, the call's return only).
#[inline(always)]
fn emit_counted(state: &BookLoop, i: u64, ret: i64, entry: u64) {
    let Some(mut rec) = EVENTS.reserve::<AcquireWithFolios>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    let w = &state.who;
    let out = rec.as_mut_ptr();
    // SAFETY: the record is reserved and ours until submitted. Field by
    // field, in place: 6.1 allows a program and its loop callback 512
    // bytes of stack in all, and a record built on the stack takes most.
    unsafe {
        let a = &mut (*out).acquire;
        a.tag = TAG_ACQUIRE_FOLIOS_COUNTED;
        a.site = w.site as u32;
        a.ts_ns = w.ts_ns;
        a.pid_tgid = state.pid_tgid;
        a.start = state.start;
        a.pages = state.pages + i * 8;
        a.ret = ret;
        a.nr_pages = 1;
        a.gup_flags = state.gup_flags;
        a.stack_id = w.stack_id;
        a.folio_records = 1;
        a.comm = w.comm;
        let b = &mut (*out).batch;
        b.tag = TAG_FOLIOS;
        b.count = (entry != 0) as u32;
        b.ts_ns = w.ts_ns;
        b.pid_tgid = state.pid_tgid;
        b.first = i as u32;
        b.site = w.site as u32;
        b.folios[0] = entry;
        for j in 1..FOLIOS_PER_RECORD {
            b.folios[j] = 0;
        }
    }
    rec.submit(wakeup());
    bump(Counter::Submitted);
}

#[inline(always)]
pub(crate) fn emit_acquire<C: StackIdContext>(ctx: &C, site: Site, args: &EntryArgs, ret: i64) {
    if books::on() && books::books_site(site) && book_acquire(ctx, site, args, ret) {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // Folios are read only for calls that grabbed pages; the acquire record
    // says how many batches to expect after it.
    let batches = if ret > 0 {
        let per = FOLIOS_PER_RECORD as i64;
        let want = (ret + per - 1) / per;
        if want > MAX_FOLIO_RECORDS as i64 {
            MAX_FOLIO_RECORDS
        } else {
            want as u32
        }
    } else {
        0
    };
    let acquire = |tag: u32, stack_id: i32| AcquireEvent {
        tag,
        site: site as u32,
        ts_ns: args.ts_ns,
        pid_tgid,
        start: args.start,
        pages: args.pages,
        ret,
        nr_pages: args.nr_pages,
        gup_flags: args.gup_flags,
        stack_id,
        folio_records: batches,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let key = pid_tgid >> 32 << 32 | site as u64;
    let pin = global(&FOLL_PIN) as u32;
    let track = filter::active() && pin != 0 && args.gup_flags & pin != 0;
    // One batch (most Direct I/O calls): the call and its folios in one
    // record.
    if batches == 1 && args.pages != 0 {
        let Some(mut rec) = EVENTS.reserve::<AcquireWithFolios>(0) else {
            bump(Counter::RingbufFull);
            return;
        };
        let stack_id = stack_id(ctx, STACK_CLOCK_ACQUIRE, key, args.ts_ns, false);
        let out = rec.as_mut_ptr();
        // SAFETY: the record is reserved and ours until submitted; `ret`
        // is 1..=32 here.
        unsafe {
            (*out).acquire = acquire(TAG_ACQUIRE_FOLIOS, stack_id);
            fill_batch(
                &mut (*out).batch,
                args.pages,
                ret as u32,
                0,
                args.ts_ns,
                pid_tgid,
                site as u32,
                track,
            );
        }
        rec.submit(wakeup());
        bump(Counter::Submitted);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<AcquireEvent>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    let stack_id = stack_id(ctx, STACK_CLOCK_ACQUIRE, key, args.ts_ns, false);
    entry.write(acquire(TAG_ACQUIRE, stack_id));
    entry.submit(wakeup());
    bump(Counter::Submitted);
    emit_folios(site, pid_tgid, args.ts_ns, args.pages, ret, track);
}

/// The arguments of a GUP call, at the positions of its [`ArgLayout`]
/// (`pintrace_common::ArgLayout`: from the kernel's BTF, else the site
/// table's), read by `arg(position)`.
#[inline(always)]
fn gup_args(site: Site, arg: impl Fn(u32) -> u64) -> EntryArgs {
    EntryArgs {
        start: arg(arg_pos(site, ARG_START)),
        nr_pages: arg(arg_pos(site, ARG_NR_PAGES)) as i32,
        gup_flags: arg(arg_pos(site, ARG_GUP_FLAGS)) as u32,
        pages: arg(arg_pos(site, ARG_PAGES)),
        ts_ns: now_ns(),
    }
}

/// The return value of a GUP call, sign-extended from its width.
#[inline(always)]
fn gup_ret(site: Site, raw: u64) -> i64 {
    if ret_is_long(site) {
        raw as i64
    } else {
        raw as i32 as i64
    }
}

/// A GUP call at its return: arguments and return value at once.
#[inline(always)]
pub(crate) fn acquire_fexit(ctx: &FExitContext, site: Site) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    let args = gup_args(site, |n| func_arg(ctx, n));
    emit_acquire(ctx, site, &args, gup_ret(site, func_ret(ctx)));
    0
}

/// Parks the arguments (as [`acquire_fexit`] reads them) for the kretprobe.
#[inline(always)]
pub(crate) fn park_args(ctx: &ProbeContext, site: Site) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    let regs = kprobe_args(ctx);
    let args = gup_args(site, |n| pick(&regs, n));
    if ENTRY_ARGS
        .insert(bpf_get_current_pid_tgid(), args, 0)
        .is_err()
    {
        bump(Counter::EntryArgsFull);
        warn!(ctx, "pintrace: entry-args map full, an acquire is lost");
    }
    0
}

#[inline(always)]
pub(crate) fn finish_kretprobe(ctx: &RetProbeContext, site: Site) -> u32 {
    // Unwatched calls parked nothing: not a missing entry.
    if !filter::current_watched() {
        return 0;
    }
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { ENTRY_ARGS.get(&key) }).copied() else {
        bump(Counter::MissingEntry);
        return 0;
    };
    let _ = ENTRY_ARGS.remove(&key);
    let raw: u64 = ctx.ret();
    emit_acquire(ctx, site, &args, gup_ret(site, raw));
    0
}
