//! The maps and the globals user space sets before load, under the names
//! of `pintrace_common`'s `*_MAP` and `GLOBAL_*` constants; the globals are
//! read through [`global`] and [`global_u64`].

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use pintrace_common::{
    ArgLayout, AuditSlot, BioSeen, Book, EntryArgs, Site, StackClock, TallyCounts, TallyKey,
    AUDIT_SLOTS, BUILTIN_ARG_LAYOUTS, COUNTER_SLOTS, DEFAULT_BOOKS_MAX, FILTER_MAX_FOLIOS,
    FILTER_MAX_TGIDS, LIFETIME_BUCKETS, SITE_SLOTS, STACK_CLOCK_SLOTS, TALLY_MAX,
};

/// Ring buffer of events; user space sizes it before load (`--ringbuf-mib`).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Arguments of in-flight acquire calls, by thread, for the kprobe pair.
#[map]
pub(crate) static ENTRY_ARGS: HashMap<u64, EntryArgs> = HashMap::with_max_entries(16384, 0);

/// Kernel stacks of acquires and releases, deduplicated by the kernel.
#[map]
pub(crate) static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Field offsets of `block:block_rq_complete`, set by user space from tracefs.
#[unsafe(no_mangle)]
pub(crate) static RQ_DEV_OFF: u32 = 8;
#[unsafe(no_mangle)]
pub(crate) static RQ_SECTOR_OFF: u32 = 16;
#[unsafe(no_mangle)]
pub(crate) static RQ_NR_SECTOR_OFF: u32 = 24;
#[unsafe(no_mangle)]
pub(crate) static RQ_ERROR_OFF: u32 = 28;
/// `struct page::compound_head` (bit 0 set on tail pages) and
/// `struct folio::_refcount`, set by user space.
#[unsafe(no_mangle)]
pub(crate) static PAGE_COMPOUND_HEAD_OFF: u32 = 8;
#[unsafe(no_mangle)]
pub(crate) static FOLIO_REFCOUNT_OFF: u32 = 52;
#[unsafe(no_mangle)]
pub(crate) static PAGE_SIZEOF: u32 = 64;
/// `struct bio` and `struct block_device` offsets, set by user space from BTF.
#[unsafe(no_mangle)]
pub(crate) static BIO_BDEV_OFF: u32 = 8;
#[unsafe(no_mangle)]
pub(crate) static BIO_OPF_OFF: u32 = 16;
#[unsafe(no_mangle)]
pub(crate) static BIO_FLAGS_OFF: u32 = 20;
#[unsafe(no_mangle)]
pub(crate) static BIO_STATUS_OFF: u32 = 24;
#[unsafe(no_mangle)]
pub(crate) static BIO_SECTOR_OFF: u32 = 32;
#[unsafe(no_mangle)]
pub(crate) static BIO_SIZE_OFF: u32 = 40;
#[unsafe(no_mangle)]
pub(crate) static BDEV_DEV_OFF: u32 = 36;
/// `struct request::biotail`, set by user space from BTF.
#[unsafe(no_mangle)]
pub(crate) static REQ_BIOTAIL_OFF: u32 = 8;

/// Where each site's arguments are, by `Site` value: see
/// `pintrace_common::GLOBAL_ARG_LAYOUTS`. Set by user space from the
/// kernel's BTF; the site table's positions by default.
#[unsafe(no_mangle)]
pub(crate) static ARG_LAYOUTS: [ArgLayout; SITE_SLOTS] = BUILTIN_ARG_LAYOUTS;

/// Batched wake-ups: see `pintrace_common::GLOBAL_RB_WAKEUP_BYTES`.
#[unsafe(no_mangle)]
pub(crate) static RB_WAKEUP_BYTES: u32 = 0;
/// Stack sampling: see `pintrace_common::GLOBAL_STACK_INTERVAL_NS`.
#[unsafe(no_mangle)]
pub(crate) static STACK_INTERVAL_NS: u64 = 0;
/// Records per block request: see `pintrace_common::GLOBAL_RQ_RECORDS`.
#[unsafe(no_mangle)]
pub(crate) static RQ_RECORDS: u32 = 0;
/// FOLL_PIN: see `pintrace_common::GLOBAL_FOLL_PIN`.
#[unsafe(no_mangle)]
pub(crate) static FOLL_PIN: u32 = 0;
/// FOLL_LONGTERM: see `pintrace_common::GLOBAL_FOLL_LONGTERM`.
#[unsafe(no_mangle)]
pub(crate) static FOLL_LONGTERM: u32 = 0;

/// The kernel books: see `pintrace_common::books` and [`crate::books`].
#[unsafe(no_mangle)]
pub(crate) static BOOKS_ON: u32 = 0;
/// See `pintrace_common::GLOBAL_BIO_RECORDS`.
#[unsafe(no_mangle)]
pub(crate) static BIO_RECORDS: u32 = 1;
/// Allocated as it fills (`BPF_F_NO_PREALLOC`): its memory follows the
/// pins held, not `--books-max`.
#[map]
pub(crate) static BOOKS: HashMap<u64, Book> =
    HashMap::with_max_entries(DEFAULT_BOOKS_MAX, BPF_F_NO_PREALLOC);
#[map]
pub(crate) static TALLY: PerCpuHashMap<TallyKey, TallyCounts> =
    PerCpuHashMap::with_max_entries(TALLY_MAX, 0);
#[map]
pub(crate) static LIFETIMES: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(2 * LIFETIME_BUCKETS, 0);
/// Threads that sent an unpin record with the books on, hashed by tid
/// (see `books::returning_after_unpin`).
#[map]
pub(crate) static UNPINNED_IN: Array<u32> = Array::with_max_entries(UNPINNED_SLOTS, 0);
pub(crate) const UNPINNED_SLOTS: u32 = 1024;
/// `BPF_F_NO_PREALLOC` (UAPI).
const BPF_F_NO_PREALLOC: u32 = 1;
/// When this CPU last took a stack, per (process, site) in
/// [`STACK_CLOCK_SLOTS`] hashed slots per clock (acquire, release).
#[map]
pub(crate) static STACK_CLOCK: PerCpuArray<StackClock> =
    PerCpuArray::with_max_entries(2 * STACK_CLOCK_SLOTS, 0);
/// Folios unpinned and not pinned again since, in hashed 4-way buckets
/// shared by all CPUs (see [`crate::stacks::recently_released`]). Racy by design: a lost
/// update only takes or skips one stack.
#[map]
pub(crate) static RELEASED: Array<[u64; 4]> = Array::with_max_entries(RELEASED_BUCKETS, 0);
pub(crate) const RELEASED_BUCKETS: u32 = 4096;
/// Folios the kernel books closed, and whether each book knew every pin
/// (1): what a later unpin of one without a book says ([`crate::stacks::closed_in_books`]).
/// Its own map, not [`RELEASED`]'s ways, which other folios of a bucket
/// overwrite: a lost mark turned a double unpin into an unpin without pin.
/// LRU: the oldest marks go first.
#[map]
pub(crate) static CLOSED: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// `-p`: see `pintrace_common::GLOBAL_FILTER` and [`crate::filter`].
#[unsafe(no_mangle)]
pub(crate) static FILTER: u32 = 0;
#[map]
pub(crate) static FILTER_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(FILTER_MAX_TGIDS, 0);
#[map]
pub(crate) static FILTER_FOLIOS: HashMap<u64, i64> =
    HashMap::with_max_entries(FILTER_MAX_FOLIOS, 0);

/// The tgid of the pintrace agent, whose getppid(2) runs the audit.
#[unsafe(no_mangle)]
pub(crate) static AUDIT_TGID: u32 = 0;

/// Bios seen filled from user memory: only their completion and release are
/// reported. LRU: a bio freed without either ages out. With the kernel
/// books where bios pin, the fill's fields for its completion record.
#[map]
pub(crate) static BIOS: LruHashMap<u64, BioSeen> = LruHashMap::with_max_entries(65536, 0);

/// The bio of an in-flight `bio_iov_iter_get_pages`, by thread, for the
/// kretprobe.
#[map]
pub(crate) static BIO_ARGS: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// With the kernel books: threads filling a bio from user memory
/// (`bio_iov_iter_get_pages`, `bio_map_user_iov`), and when the fill began
/// (its `FillBegin` record's time). The pins a fill takes carry it into
/// their books, which is how user space ties a booked pin to its bio.
#[map]
pub(crate) static FILLS: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Threads inside `bio_map_user_iov`, and the request it maps into: its
/// bio is named at the exit (the request's last bio), or by a release of
/// its pages inside the call (an error path).
#[map]
pub(crate) static MAPPING: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Folios to audit, filled by user space (see [`crate::tracepoints::audit_folios`]).
#[map]
pub(crate) static AUDIT: Array<AuditSlot> = Array::with_max_entries(AUDIT_SLOTS, 0);

#[inline(always)]
pub(crate) fn global(v: &'static u32) -> u64 {
    // SAFETY: reading a global the loader may have rewritten; volatile keeps
    // the compiler from folding the default value in.
    unsafe { core::ptr::read_volatile(v) as u64 }
}

#[inline(always)]
pub(crate) fn global_u64(v: &'static u64) -> u64 {
    // SAFETY: as for `global`.
    unsafe { core::ptr::read_volatile(v) }
}

/// The position of the argument in `slot` of `site`'s row. `site` and
/// `slot` are constants in every caller, so this is one load at a fixed
/// offset of the read-only globals, whose value the verifier knows (they
/// are frozen before the programs load).
#[inline(always)]
pub(crate) fn arg_pos(site: Site, slot: usize) -> u32 {
    // SAFETY: as for `global`; both indexes are in bounds (the site table's
    // build-time checks).
    unsafe { core::ptr::read_volatile(&ARG_LAYOUTS[site as usize].pos[slot]) }
}

/// Whether `site` returns a `long` (else an `int`): see [`ArgLayout`].
#[inline(always)]
pub(crate) fn ret_is_long(site: Site) -> bool {
    // SAFETY: as for `arg_pos`.
    unsafe { core::ptr::read_volatile(&ARG_LAYOUTS[site as usize].ret_long) != 0 }
}
