//! pintrace's kernel probes.
//!
//! Each acquire site has two ways in: an `fexit` program (one call, arguments
//! and return value together; preferred where BTF trampolines load) and a
//! `kprobe`/`kretprobe` pair (arguments parked in [`ENTRY_ARGS`] by thread
//! until the return). User space attaches exactly one of the two per site, so
//! no call is seen twice.
//!
//! The hot path does no string work and no logging: a record is reserved in
//! the ring buffer, filled and submitted. Every record that cannot be
//! delivered is counted in [`COUNTERS`]; aya-log speaks only on rare paths.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_func_arg, bpf_get_func_ret},
    },
    macros::{fexit, kprobe, kretprobe, map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{FExitContext, ProbeContext, RetProbeContext, TracePointContext},
    EbpfContext as _,
};
use aya_log_ebpf::warn;
use pintrace_common::{
    AcquireEvent, Counter, EntryArgs, RqCompleteEvent, Site, COUNTER_SLOTS, TAG_ACQUIRE,
    TAG_RQ_COMPLETE,
};

/// Ring buffer of events; user space resizes it before load (`--ringbuf-pages`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Arguments of in-flight acquire calls, by thread, for the kprobe pair.
#[map]
static ENTRY_ARGS: HashMap<u64, EntryArgs> = HashMap::with_max_entries(16384, 0);

/// Field offsets of `block:block_rq_complete`, set by user space from tracefs.
#[unsafe(no_mangle)]
static RQ_DEV_OFF: u32 = 8;
#[unsafe(no_mangle)]
static RQ_SECTOR_OFF: u32 = 16;
#[unsafe(no_mangle)]
static RQ_NR_SECTOR_OFF: u32 = 24;
#[unsafe(no_mangle)]
static RQ_ERROR_OFF: u32 = 28;

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the slot is this CPU's own copy; programs on one CPU do not
        // preempt each other for the same map slot in these program types.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn emit_acquire(site: Site, args: &EntryArgs, ret: i64) {
    let Some(mut entry) = EVENTS.reserve::<AcquireEvent>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    entry.write(AcquireEvent {
        tag: TAG_ACQUIRE,
        site: site as u32,
        ts_ns: args.ts_ns,
        pid_tgid: bpf_get_current_pid_tgid(),
        start: args.start,
        pages: args.pages,
        ret,
        nr_pages: args.nr_pages,
        gup_flags: args.gup_flags,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    entry.submit(0);
    bump(Counter::Submitted);
}

/// `(start, int nr_pages, gup_flags, struct page **pages)` of both `*_user_pages_fast`.
#[inline(always)]
fn fast_args_kprobe(ctx: &ProbeContext) -> EntryArgs {
    EntryArgs {
        start: ctx.arg::<u64>(0).unwrap_or(0),
        nr_pages: ctx.arg::<i32>(1).unwrap_or(0),
        gup_flags: ctx.arg::<u32>(2).unwrap_or(0),
        pages: ctx.arg::<u64>(3).unwrap_or(0),
        ts_ns: now_ns(),
    }
}

/// The `n`th raw argument of a traced function. `bpf_get_func_arg` reads the
/// trampoline's saved registers without the BTF type check of a context
/// load, which rejects pointer-to-pointer arguments such as `struct page **`.
#[inline(always)]
fn func_arg(ctx: &FExitContext, n: u32) -> u64 {
    let mut v = 0u64;
    // SAFETY: ctx is the tracing context; the helper bounds-checks n.
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

#[inline(always)]
fn fast_fexit(ctx: &FExitContext, site: Site) -> u32 {
    let args = EntryArgs {
        start: func_arg(ctx, 0),
        nr_pages: func_arg(ctx, 1) as i32,
        gup_flags: func_arg(ctx, 2) as u32,
        pages: func_arg(ctx, 3),
        ts_ns: now_ns(),
    };
    emit_acquire(site, &args, func_ret(ctx) as i32 as i64);
    0
}

#[inline(always)]
fn park_args(ctx: &ProbeContext) -> u32 {
    let args = fast_args_kprobe(ctx);
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
fn finish_kretprobe(ctx: &RetProbeContext, site: Site) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { ENTRY_ARGS.get(&key) }).copied() else {
        bump(Counter::MissingEntry);
        return 0;
    };
    let _ = ENTRY_ARGS.remove(&key);
    let ret: i32 = ctx.ret();
    emit_acquire(site, &args, ret as i64);
    0
}

#[fexit(function = "pin_user_pages_fast")]
pub fn fexit_pin_user_pages_fast(ctx: FExitContext) -> u32 {
    fast_fexit(&ctx, Site::PinUserPagesFast)
}

#[fexit(function = "get_user_pages_fast")]
pub fn fexit_get_user_pages_fast(ctx: FExitContext) -> u32 {
    fast_fexit(&ctx, Site::GetUserPagesFast)
}

#[kprobe]
pub fn kprobe_pin_user_pages_fast(ctx: ProbeContext) -> u32 {
    park_args(&ctx)
}

#[kretprobe]
pub fn kretprobe_pin_user_pages_fast(ctx: RetProbeContext) -> u32 {
    finish_kretprobe(&ctx, Site::PinUserPagesFast)
}

#[kprobe]
pub fn kprobe_get_user_pages_fast(ctx: ProbeContext) -> u32 {
    park_args(&ctx)
}

#[kretprobe]
pub fn kretprobe_get_user_pages_fast(ctx: RetProbeContext) -> u32 {
    finish_kretprobe(&ctx, Site::GetUserPagesFast)
}

#[inline(always)]
fn global(v: &'static u32) -> usize {
    // SAFETY: reading a global the loader may have rewritten; volatile keeps
    // the compiler from folding the default value in.
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<RqCompleteEvent>(0) else {
        bump(Counter::RingbufFull);
        return 0;
    };
    // SAFETY: offsets come from the tracepoint's own format file.
    let ev = unsafe {
        RqCompleteEvent {
            tag: TAG_RQ_COMPLETE,
            dev: ctx.read_at::<u32>(global(&RQ_DEV_OFF)).unwrap_or(0),
            ts_ns: now_ns(),
            sector: ctx.read_at::<u64>(global(&RQ_SECTOR_OFF)).unwrap_or(0),
            nr_sector: ctx.read_at::<u32>(global(&RQ_NR_SECTOR_OFF)).unwrap_or(0),
            error: ctx.read_at::<i32>(global(&RQ_ERROR_OFF)).unwrap_or(0),
        }
    };
    entry.write(ev);
    entry.submit(0);
    bump(Counter::Submitted);
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
