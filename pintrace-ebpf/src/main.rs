//! pintrace's kernel probes.
//!
//! Each site has two ways in: a BTF trampoline program (`fexit` for the
//! acquire calls, whose return value and `pages` array are needed; `fentry`
//! for `gup_put_folio`) and a `kprobe` (with a `kretprobe` for acquires, the
//! arguments parked in [`ENTRY_ARGS`] by thread until the return). User space
//! attaches exactly one of the two per site, so no call is seen twice.
//! The sites, their programs' names and where each call's arguments are,
//! are `pintrace_common::site_table!`.
//!
//! The hot path does no string work and no logging: records are reserved in
//! the ring buffer, filled and submitted. Every record that cannot be
//! delivered is counted in [`COUNTERS`]; aya-log speaks only on rare paths.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_func_arg, bpf_get_func_ret, bpf_loop},
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{
        tracing::StackIdContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
    EbpfContext,
};
use aya_log_ebpf::warn;

mod acquire_sites;
use pintrace_common::{
    AcquireEvent, AcquireWithFolios, AuditSlot, BioEvent, BioPhase, Counter, EntryArgs, ExitEvent,
    FolioBatch, ReleaseEvent, RqCompleteEvent, Site, StackClock, AUDIT_SLOTS, COUNTER_SLOTS,
    FOLIOS_PER_RECORD, FOLIO_BELOW_1_PIN, FOLIO_BELOW_2_PINS, MAX_FOLIO_RECORDS,
    STACK_CLOCK_ACQUIRE, STACK_CLOCK_RELEASE, STACK_CLOCK_SLOTS, STACK_NOT_TAKEN, TAG_ACQUIRE,
    TAG_ACQUIRE_FOLIOS, TAG_BIO, TAG_EXIT, TAG_FOLIOS, TAG_RELEASE, TAG_RQ_COMPLETE,
};

/// Ring buffer of events; user space sizes it before load (`--ringbuf-mib`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Arguments of in-flight acquire calls, by thread, for the kprobe pair.
#[map]
static ENTRY_ARGS: HashMap<u64, EntryArgs> = HashMap::with_max_entries(16384, 0);

/// Kernel stacks of acquires and releases, deduplicated by the kernel.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Field offsets of `block:block_rq_complete`, set by user space from tracefs.
#[unsafe(no_mangle)]
static RQ_DEV_OFF: u32 = 8;
#[unsafe(no_mangle)]
static RQ_SECTOR_OFF: u32 = 16;
#[unsafe(no_mangle)]
static RQ_NR_SECTOR_OFF: u32 = 24;
#[unsafe(no_mangle)]
static RQ_ERROR_OFF: u32 = 28;
/// `struct page::compound_head` (bit 0 set on tail pages) and
/// `struct folio::_refcount`, set by user space.
#[unsafe(no_mangle)]
static PAGE_COMPOUND_HEAD_OFF: u32 = 8;
#[unsafe(no_mangle)]
static FOLIO_REFCOUNT_OFF: u32 = 52;
#[unsafe(no_mangle)]
static PAGE_SIZEOF: u32 = 64;
/// `struct bio` and `struct block_device` offsets, set by user space from BTF.
#[unsafe(no_mangle)]
static BIO_BDEV_OFF: u32 = 8;
#[unsafe(no_mangle)]
static BIO_OPF_OFF: u32 = 16;
#[unsafe(no_mangle)]
static BIO_FLAGS_OFF: u32 = 20;
#[unsafe(no_mangle)]
static BIO_STATUS_OFF: u32 = 24;
#[unsafe(no_mangle)]
static BIO_SECTOR_OFF: u32 = 32;
#[unsafe(no_mangle)]
static BIO_SIZE_OFF: u32 = 40;
#[unsafe(no_mangle)]
static BDEV_DEV_OFF: u32 = 36;
/// `bpf_ringbuf_submit` and `bpf_ringbuf_query` flags (UAPI).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Batched wake-ups: see `pintrace_common::GLOBAL_RB_WAKEUP_BYTES`.
#[unsafe(no_mangle)]
static RB_WAKEUP_BYTES: u32 = 0;
/// Stack sampling: see `pintrace_common::GLOBAL_STACK_INTERVAL_NS`.
#[unsafe(no_mangle)]
static STACK_INTERVAL_NS: u64 = 0;
/// Records per block request: see `pintrace_common::GLOBAL_RQ_RECORDS`.
#[unsafe(no_mangle)]
static RQ_RECORDS: u32 = 0;
/// FOLL_PIN: see `pintrace_common::GLOBAL_FOLL_PIN`.
#[unsafe(no_mangle)]
static FOLL_PIN: u32 = 0;
/// When this CPU last took a stack, per (process, site) in
/// [`STACK_CLOCK_SLOTS`] hashed slots per clock (acquire, release).
#[map]
static STACK_CLOCK: PerCpuArray<StackClock> =
    PerCpuArray::with_max_entries(2 * STACK_CLOCK_SLOTS, 0);
/// Folios unpinned and not pinned again since, in hashed 4-way buckets
/// shared by all CPUs (see [`recently_released`]). Racy by design: a lost
/// update only takes or skips one stack.
#[map]
static RELEASED: Array<[u64; 4]> = Array::with_max_entries(RELEASED_BUCKETS, 0);
const RELEASED_BUCKETS: u32 = 4096;

#[inline(always)]
fn released_bucket(folio: u64) -> u32 {
    (folio.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32 & (RELEASED_BUCKETS - 1)
}

/// Stack sampling must not lose the stack of a double unpin: an unpin
/// remembers the folio, an acquire forgets it, and an unpin of a folio
/// still remembered takes its stack. Returns whether this unpin finds its
/// folio remembered.
#[inline(always)]
fn recently_released(folio: u64) -> bool {
    let Some(b) = RELEASED.get_ptr_mut(released_bucket(folio)) else {
        return false;
    };
    // SAFETY: a valid array slot; concurrent writers only race on a hint.
    let b = unsafe { &mut *b };
    if b[0] == folio || b[1] == folio || b[2] == folio || b[3] == folio {
        return true;
    }
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
        (folio >> 6) as usize & 3
    };
    b[way] = folio;
    false
}

/// An acquire of `folio`: it is pinned again, its next unpin is normal.
#[inline(always)]
fn forget_released(folio: u64) {
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

/// The tgid of the pintrace agent, whose getppid(2) runs the audit.
#[unsafe(no_mangle)]
static AUDIT_TGID: u32 = 0;

/// Bios seen filled from user memory: only their completion and release are
/// reported. LRU: a bio freed without either ages out.
#[map]
static BIOS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// The bio of an in-flight `bio_iov_iter_get_pages`, by thread, for the
/// kretprobe.
#[map]
static BIO_ARGS: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Folios to audit, filled by user space (see [`audit_folios`]).
#[map]
static AUDIT: Array<AuditSlot> = Array::with_max_entries(AUDIT_SLOTS, 0);

#[inline(always)]
fn global(v: &'static u32) -> u64 {
    // SAFETY: reading a global the loader may have rewritten; volatile keeps
    // the compiler from folding the default value in.
    unsafe { core::ptr::read_volatile(v) as u64 }
}

#[inline(always)]
fn global_u64(v: &'static u64) -> u64 {
    // SAFETY: as for `global`.
    unsafe { core::ptr::read_volatile(v) }
}

/// Stacks are sampled (not all, not none).
#[inline(always)]
fn sampling() -> bool {
    let interval = global_u64(&STACK_INTERVAL_NS);
    interval != 0 && interval != u64::MAX
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Flags for `submit`: the kernel's own wake-up policy, or (batched) no
/// wake-up until [`RB_WAKEUP_BYTES`] wait to be read.
#[inline(always)]
fn wakeup() -> u64 {
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
fn bump(counter: Counter) {
    add(counter, 1);
}

#[inline(always)]
fn add(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the slot is this CPU's own copy.
        unsafe { *slot += n };
    }
}

/// The event's kernel stack id, unless the sampling policy says this CPU
/// took one for the same process and site (`key`) too recently: an unwind
/// is most of a probe's cost. The slots are hashed: a collision takes a
/// stack, never drops one that was due. `always`: take it regardless (an
/// unpin shown to be wrong).
#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, clock: u32, key: u64, now: u64, always: bool) -> i32 {
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

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn read_u32(addr: u64) -> u32 {
    // SAFETY: as for read_u64.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

/// The folio of a `struct page *`: its head when it is a tail page.
#[inline(always)]
fn folio_of(page: u64) -> u64 {
    if page == 0 {
        return 0;
    }
    let head = read_u64(page + global(&PAGE_COMPOUND_HEAD_OFF));
    if head & 1 != 0 {
        head - 1
    } else {
        page
    }
}

/// What one [`folio_batch`] step needs, on the caller's stack.
#[repr(C)]
struct FolioLoop {
    pid_tgid: u64,
    ts_ns: u64,
    pages: u64,
    n: u64,
    site: u32,
}

/// Emits the folios of the first `n` pages of a `struct page **` array, in
/// batches.
///
/// The batches are a `bpf_loop` (5.17 on): the verifier checks one batch
/// once, however many a call may need. Unrolled, eight batches of 32 slots
/// took 6.1's verifier to its complexity limit (tens of seconds under TCG,
/// then E2BIG, depending on the code around it).
#[inline(always)]
fn emit_folios(site: Site, pid_tgid: u64, ts_ns: u64, pages: u64, n: i64) {
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
        )
    };
    rec.submit(wakeup());
    bump(Counter::Submitted);
    0
}

#[inline(always)]
fn emit_acquire<C: StackIdContext>(ctx: &C, site: Site, args: &EntryArgs, ret: i64) {
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
    emit_folios(site, pid_tgid, args.ts_ns, args.pages, ret);
}

/// The `n`th raw argument of a traced function. `bpf_get_func_arg` reads the
/// trampoline's saved registers without the BTF type check of a context
/// load, which rejects pointer-to-pointer arguments such as `struct page **`.
#[inline(always)]
fn func_arg<C: EbpfContext>(ctx: &C, n: u32) -> u64 {
    let mut v = 0u64;
    // SAFETY: ctx is a tracing context; the helper bounds-checks n.
    unsafe { bpf_get_func_arg(ctx.as_ptr(), n, &mut v) };
    v
}

#[inline(always)]
fn func_ret(ctx: &FExitContext) -> u64 {
    let mut v = 0u64;
    // SAFETY: ctx is an fexit context, where the helper is allowed.
    unsafe { bpf_get_func_ret(ctx.as_ptr(), &mut v) };
    v
}

/// `(start, nr_pages, ...)` from argument `first` on: 0 for the local
/// calls, 1 for `*_remote` (after the mm); `order` says where the flags and
/// the pages array are. `long_ret`: the call returns a long (else an int).
#[inline(always)]
fn acquire_fexit(
    ctx: &FExitContext,
    site: Site,
    first: u32,
    order: (u32, u32),
    long_ret: bool,
) -> u32 {
    let args = EntryArgs {
        start: func_arg(ctx, first),
        nr_pages: func_arg(ctx, first + 1) as i32,
        gup_flags: func_arg(ctx, first + order.0) as u32,
        pages: func_arg(ctx, first + order.1),
        ts_ns: now_ns(),
    };
    let raw = func_ret(ctx);
    let ret = if long_ret {
        raw as i64
    } else {
        raw as i32 as i64
    };
    emit_acquire(ctx, site, &args, ret);
    0
}

/// Parks the arguments (as [`acquire_fexit`] reads them) for the kretprobe.
#[inline(always)]
fn park_args(ctx: &ProbeContext, first: usize, order: (u32, u32)) -> u32 {
    let args = EntryArgs {
        start: ctx.arg::<u64>(first).unwrap_or(0),
        nr_pages: ctx.arg::<i64>(first + 1).unwrap_or(0) as i32,
        gup_flags: ctx.arg::<u32>(first + order.0 as usize).unwrap_or(0),
        pages: ctx.arg::<u64>(first + order.1 as usize).unwrap_or(0),
        ts_ns: now_ns(),
    };
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
fn finish_kretprobe(ctx: &RetProbeContext, site: Site, long_ret: bool) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { ENTRY_ARGS.get(&key) }).copied() else {
        bump(Counter::MissingEntry);
        return 0;
    };
    let _ = ENTRY_ARGS.remove(&key);
    let raw: u64 = ctx.ret();
    let ret = if long_ret {
        raw as i64
    } else {
        raw as i32 as i64
    };
    emit_acquire(ctx, site, &args, ret);
    0
}

/// `gup_put_folio(struct folio *folio, int refs, unsigned int flags)`.
#[inline(always)]
fn emit_release<C: StackIdContext>(ctx: &C, folio: u64, refs: i32, flags: u32) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<ReleaseEvent>(0) else {
        bump(Counter::RingbufFull);
        return 0;
    };
    let refcount = read_u64(folio + global(&FOLIO_REFCOUNT_OFF)) as u32 as i32;
    // A large folio's first tail page has compound_head == folio | 1.
    let tail_head = read_u64(folio + global(&PAGE_SIZEOF) + global(&PAGE_COMPOUND_HEAD_OFF));
    let large = (folio != 0 && tail_head == folio + 1) as u32;
    let ts_ns = now_ns();
    let pid_tgid = bpf_get_current_pid_tgid();
    // An unpin the refcount shows to be wrong (fewer pins' worth than it
    // releases, on a small folio) is a certain finding: its stack always.
    // So may be a second unpin of a folio not pinned again since the first
    // (as far as the `RELEASED` slots remember): a double unpin the
    // refcount cannot show (another pin still held) keeps its stack. A
    // folio with several pins at once (large folios shared by concurrent
    // I/O, legacy Direct I/O's added pins) takes stacks more often.
    let pin = global(&FOLL_PIN) as u32;
    let is_pin = pin != 0 && flags & pin != 0;
    let wrong = is_pin && large == 0 && (refcount as i64) < refs as i64 * 1024;
    let again = is_pin && sampling() && recently_released(folio);
    entry.write(ReleaseEvent {
        tag: TAG_RELEASE,
        site: Site::GupPutFolio as u32,
        ts_ns,
        pid_tgid,
        folio,
        refs,
        gup_flags: flags,
        refcount,
        stack_id: stack_id(
            ctx,
            STACK_CLOCK_RELEASE,
            pid_tgid >> 32,
            ts_ns,
            wrong || again,
        ),
        large,
        _reserved: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    entry.submit(wakeup());
    bump(Counter::Submitted);
    0
}

#[fentry(function = "gup_put_folio")]
pub fn fentry_gup_put_folio(ctx: FEntryContext) -> u32 {
    emit_release(
        &ctx,
        func_arg(&ctx, 0),
        func_arg(&ctx, 1) as i32,
        func_arg(&ctx, 2) as u32,
    )
}

#[kprobe]
pub fn kprobe_gup_put_folio(ctx: ProbeContext) -> u32 {
    emit_release(
        &ctx,
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<i32>(1).unwrap_or(0),
        ctx.arg::<u32>(2).unwrap_or(0),
    )
}

/// One step of a bio's life; the bio's fields are read only at FillEnd
/// (sector and size are final there; the device is set by then).
#[inline(always)]
fn emit_bio(phase: BioPhase, bio: u64, status: i32) {
    let Some(mut entry) = EVENTS.reserve::<BioEvent>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    let (sector, bytes, dev, opf) = if let BioPhase::FillEnd = phase {
        let bdev = read_u64(bio + global(&BIO_BDEV_OFF));
        let dev = if bdev == 0 {
            0
        } else {
            read_u32(bdev + global(&BDEV_DEV_OFF))
        };
        (
            read_u64(bio + global(&BIO_SECTOR_OFF)),
            read_u32(bio + global(&BIO_SIZE_OFF)),
            dev,
            read_u32(bio + global(&BIO_OPF_OFF)),
        )
    } else {
        (0, 0, 0, 0)
    };
    let flags = if let BioPhase::Release = phase {
        read_u32(bio + global(&BIO_FLAGS_OFF)) & 0xffff
    } else {
        0
    };
    let status = if let BioPhase::Endio = phase {
        (read_u32(bio + global(&BIO_STATUS_OFF)) & 0xff) as i32
    } else {
        status
    };
    entry.write(BioEvent {
        tag: TAG_BIO,
        phase: phase as u32,
        ts_ns: now_ns(),
        pid_tgid: bpf_get_current_pid_tgid(),
        bio,
        sector,
        bytes,
        dev,
        opf,
        flags,
        status,
        _reserved: 0,
    });
    entry.submit(wakeup());
    bump(Counter::Submitted);
}

#[inline(always)]
fn bio_fill_end(bio: u64, ret: i32) {
    if BIOS.insert(bio, 1u32, 0).is_err() {
        bump(Counter::BiosFull);
    }
    emit_bio(BioPhase::FillEnd, bio, ret);
}

/// Completion and release are reported for bios seen filled only.
#[inline(always)]
fn bio_seen(bio: u64) -> bool {
    BIOS.get_ptr(bio).is_some()
}

#[fentry(function = "bio_iov_iter_get_pages")]
pub fn fentry_bio_fill(ctx: FEntryContext) -> u32 {
    emit_bio(BioPhase::FillBegin, func_arg(&ctx, 0), 0);
    0
}

#[fexit(function = "bio_iov_iter_get_pages")]
pub fn fexit_bio_fill(ctx: FExitContext) -> u32 {
    bio_fill_end(func_arg(&ctx, 0), func_ret(&ctx) as i32);
    0
}

#[kprobe]
pub fn kprobe_bio_fill(ctx: ProbeContext) -> u32 {
    let bio = ctx.arg::<u64>(0).unwrap_or(0);
    if BIO_ARGS.insert(bpf_get_current_pid_tgid(), bio, 0).is_err() {
        bump(Counter::EntryArgsFull);
    }
    emit_bio(BioPhase::FillBegin, bio, 0);
    0
}

#[kretprobe]
pub fn kretprobe_bio_fill(ctx: RetProbeContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(bio) = (unsafe { BIO_ARGS.get(key) }).copied() else {
        bump(Counter::MissingEntry);
        return 0;
    };
    let _ = BIO_ARGS.remove(key);
    let ret: u64 = ctx.ret();
    bio_fill_end(bio, ret as i32);
    0
}

#[inline(always)]
fn bio_endio(bio: u64) -> u32 {
    if bio_seen(bio) {
        emit_bio(BioPhase::Endio, bio, 0);
    }
    0
}

#[fentry(function = "bio_endio")]
pub fn fentry_bio_endio(ctx: FEntryContext) -> u32 {
    bio_endio(func_arg(&ctx, 0))
}

#[kprobe]
pub fn kprobe_bio_endio(ctx: ProbeContext) -> u32 {
    bio_endio(ctx.arg::<u64>(0).unwrap_or(0))
}

#[inline(always)]
fn bio_release(bio: u64) -> u32 {
    if bio_seen(bio) {
        let _ = BIOS.remove(bio);
        emit_bio(BioPhase::Release, bio, 0);
    }
    0
}

#[fentry(function = "__bio_release_pages")]
pub fn fentry_bio_release(ctx: FEntryContext) -> u32 {
    bio_release(func_arg(&ctx, 0))
}

#[kprobe]
pub fn kprobe_bio_release(ctx: ProbeContext) -> u32 {
    bio_release(ctx.arg::<u64>(0).unwrap_or(0))
}

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
    if tgid != pid_tgid as u32 {
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
