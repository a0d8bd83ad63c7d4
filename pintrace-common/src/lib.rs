//! Types shared by pintrace's kernel probes and its user-space agent.
//!
//! Every record the probes put in the ring buffer starts with a `u32` tag
//! naming its type. Records are `#[repr(C)]` with fixed-width fields, no
//! `bool` and no padding, so both sides agree on the layout byte for byte;
//! the sizes are pinned by tests below, and with the `user` feature the
//! records derive zerocopy's byte conversions (whose derive refuses a
//! struct with padding): user space reads and writes them as these structs.
#![no_std]

#[cfg(feature = "user")]
pub use zerocopy::{FromBytes, IntoBytes};

/// Name of the BPF ring buffer carrying every event.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array of [`Counter`] values.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the hash map holding kprobe arguments until the matching kretprobe.
pub const ENTRY_ARGS_MAP: &str = "ENTRY_ARGS";

/// Record tags: the first `u32` of every ring-buffer record.
pub const TAG_ACQUIRE: u32 = 1;
pub const TAG_RQ_COMPLETE: u32 = 2;
pub const TAG_FOLIOS: u32 = 3;
pub const TAG_RELEASE: u32 = 4;
pub const TAG_EXIT: u32 = 5;
pub const TAG_BIO: u32 = 6;
/// An [`AcquireWithFolios`]: a call and its only folio batch in one record.
pub const TAG_ACQUIRE_FOLIOS: u32 = 7;

/// Name of the stack-trace map (kernel stacks of acquires and releases).
pub const STACKS_MAP: &str = "STACKS";

/// Folio addresses carried by one [`FolioBatch`] record.
pub const FOLIOS_PER_RECORD: usize = 32;
/// Batches read per acquire call (256 pages: a bio's worth, which is what the
/// Direct I/O paths grab per call); pages beyond are counted as truncated.
/// Bounded by what the verifier accepts for an unrolled loop on 6.1.
pub const MAX_FOLIO_RECORDS: u32 = 8;

mod books;
mod sites;
pub use books::*;
pub use sites::*;

/// Program name of the `block:block_rq_complete` tracepoint handler.
pub const PROG_RQ_COMPLETE: &str = "block_rq_complete";
/// Program name of the `sched:sched_process_exit` tracepoint handler.
pub const PROG_PROCESS_EXIT: &str = "sched_process_exit";

/// Program name of the refcount audit (`syscalls:sys_enter_getppid`, run
/// only for pintrace's own calls: user space fills [`AUDIT_MAP`] with folio
/// addresses, calls getppid(2) and reads back their refcounts).
pub const PROG_AUDIT: &str = "audit_folios";
/// Name of the audit map: an array of [`AuditSlot`].
pub const AUDIT_MAP: &str = "AUDIT";
/// Folios audited per getppid(2) call.
pub const AUDIT_SLOTS: u32 = 64;
/// Name of the global holding the tgid whose getppid(2) runs the audit.
pub const GLOBAL_AUDIT_TGID: &str = "AUDIT_TGID";

/// One folio of an audit: user space writes `folio`, the probe fills the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditSlot {
    pub folio: u64,
    /// `folio->_refcount` as read.
    pub refcount: i32,
    /// 1 for a large folio, 0 for a small one.
    pub large: u32,
}

/// Per-CPU counters kept by the probes, indexes into [`COUNTERS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A record could not be reserved in the ring buffer: the event is lost.
    RingbufFull = 0,
    /// The kprobe could not store its arguments (map full): the acquire is lost.
    EntryArgsFull = 1,
    /// A kretprobe fired without stored arguments (attached mid-call or map
    /// full): the acquire is lost.
    MissingEntry = 2,
    /// Records successfully submitted.
    Submitted = 3,
    /// Pages of an acquire beyond what one call's records carry.
    FoliosTruncated = 4,
    /// A stack could not be stored (stack map full or collision).
    StackLost = 5,
    /// A filled bio could not be remembered (map update failed): its
    /// completion and release are not reported.
    BiosFull = 6,
    /// Stacks not taken because the sampling policy (`--stacks sampled`)
    /// had just taken one on this CPU: not a loss, the event itself is sent.
    StackSkipped = 7,
    /// Block requests completed, their sectors and those with an error,
    /// counted per CPU by `block:block_rq_complete` when it sends no
    /// record (see [`GLOBAL_RQ_RECORDS`]).
    RqRequests = 8,
    RqSectors = 9,
    RqErrors = 10,
    /// With `-p`, a pin a watched process took could not be remembered
    /// (map full): its release from another context would go unseen.
    FilterFull = 11,
    /// Kernel books: folios booked (a pin that sent no record).
    Booked = 12,
    /// Kernel books: folios escalated to the ring buffer (see `books`).
    Escalated = 13,
    /// Kernel books: pins sent as records because the books were full
    /// (`--books-max`): not a loss, only their cost.
    BooksFull = 14,
    /// Kernel books: `gup_put_folio` calls balanced in the books, and the
    /// references they released.
    BookedReleases = 15,
    BookedReleaseRefs = 16,
    /// Calls an interrupt made into a site while that site's program ran
    /// on the CPU below it: the kernel skipped the program, its second
    /// program sent the record instead (see the sites' `again`). Not a
    /// loss; the kernel's count of skipped runs includes them.
    Recovered = 17,
    /// Kernel books, where bios pin: bios filled from user memory and
    /// released (`__bio_release_pages`), counted without a record (their
    /// completions are [`BioPhase::Done`] records).
    BiosFilled = 18,
    BiosReleased = 19,
}

pub const COUNTER_SLOTS: u32 = 20;

impl Counter {
    pub const ALL: [Counter; COUNTER_SLOTS as usize] = [
        Counter::RingbufFull,
        Counter::EntryArgsFull,
        Counter::MissingEntry,
        Counter::Submitted,
        Counter::FoliosTruncated,
        Counter::StackLost,
        Counter::BiosFull,
        Counter::StackSkipped,
        Counter::RqRequests,
        Counter::RqSectors,
        Counter::RqErrors,
        Counter::FilterFull,
        Counter::Booked,
        Counter::Escalated,
        Counter::BooksFull,
        Counter::BookedReleases,
        Counter::BookedReleaseRefs,
        Counter::Recovered,
        Counter::BiosFilled,
        Counter::BiosReleased,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingbufFull => "ringbuf_full",
            Counter::EntryArgsFull => "entry_args_full",
            Counter::MissingEntry => "missing_entry",
            Counter::Submitted => "submitted",
            Counter::FoliosTruncated => "folios_truncated",
            Counter::StackLost => "stack_lost",
            Counter::BiosFull => "bios_full",
            Counter::StackSkipped => "stack_skipped",
            Counter::RqRequests => "rq_requests",
            Counter::RqSectors => "rq_sectors",
            Counter::RqErrors => "rq_errors",
            Counter::FilterFull => "filter_full",
            Counter::Booked => "booked",
            Counter::Escalated => "escalated",
            Counter::BooksFull => "books_full",
            Counter::BookedReleases => "booked_releases",
            Counter::BookedReleaseRefs => "booked_release_refs",
            Counter::Recovered => "recursion_recovered",
            Counter::BiosFilled => "bios_filled",
            Counter::BiosReleased => "bios_released",
        }
    }

    /// Whether a non-zero value means an event the agent never saw.
    pub const fn is_loss(self) -> bool {
        !matches!(
            self,
            Counter::Submitted
                | Counter::StackLost
                | Counter::StackSkipped
                | Counter::RqRequests
                | Counter::RqSectors
                | Counter::RqErrors
                | Counter::Booked
                | Counter::Escalated
                | Counter::BooksFull
                | Counter::BookedReleases
                | Counter::BookedReleaseRefs
                | Counter::Recovered
                | Counter::BiosFilled
                | Counter::BiosReleased
        )
    }
}

/// Arguments of an acquire call, kept between kprobe and kretprobe.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EntryArgs {
    pub start: u64,
    pub pages: u64,
    pub ts_ns: u64,
    pub nr_pages: i32,
    pub gup_flags: u32,
}

/// One GUP acquire call, seen at its return.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct AcquireEvent {
    pub tag: u32,
    /// A [`Site`] value.
    pub site: u32,
    /// `bpf_ktime_get_ns()` at entry.
    pub ts_ns: u64,
    pub pid_tgid: u64,
    /// User address of the first page asked for.
    pub start: u64,
    /// Kernel address of the caller's `struct page **` array.
    pub pages: u64,
    /// Return value: pages grabbed, or a negative errno.
    pub ret: i64,
    /// Pages asked for.
    pub nr_pages: i32,
    pub gup_flags: u32,
    /// Kernel stack id in [`STACKS_MAP`], a negative errno, or
    /// [`STACK_NOT_TAKEN`].
    pub stack_id: i32,
    /// [`FolioBatch`] records that follow for this call.
    pub folio_records: u32,
    pub comm: [u8; 16],
}

/// The folios of the pages one acquire call grabbed: `folios[i]` is the folio
/// of page `first + i` of the caller's array. Follows its [`AcquireEvent`].
///
/// `struct page` is 64-byte aligned, so the low bits of each entry carry
/// evidence read at the call's return: [`FOLIO_BELOW_1_PIN`] and
/// [`FOLIO_BELOW_2_PINS`] (meaningful for small folios only, where a pin adds
/// 1024 to the refcount). Mask with [`FOLIO_ADDR_MASK`] for the address.
/// The folio's refcount was below 1024 at the acquire's return.
pub const FOLIO_BELOW_1_PIN: u64 = 1;
/// The folio's refcount was below 2048 at the acquire's return.
pub const FOLIO_BELOW_2_PINS: u64 = 2;
pub const FOLIO_ADDR_MASK: u64 = !3;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct FolioBatch {
    pub tag: u32,
    pub count: u32,
    /// `ts_ns` of the acquire call this belongs to.
    pub ts_ns: u64,
    pub pid_tgid: u64,
    pub first: u32,
    pub site: u32,
    pub folios: [u64; FOLIOS_PER_RECORD],
}

/// A call that grabbed at most [`FOLIOS_PER_RECORD`] pages (every 4 KiB
/// to 128 KiB Direct I/O): its [`AcquireEvent`] (tag
/// [`TAG_ACQUIRE_FOLIOS`]) and its one [`FolioBatch`] (tag [`TAG_FOLIOS`])
/// in one ring-buffer record, one reservation instead of two. Decoded as
/// the two events it holds.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct AcquireWithFolios {
    pub acquire: AcquireEvent,
    pub batch: FolioBatch,
}

/// References dropped from one folio (`gup_put_folio`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct ReleaseEvent {
    pub tag: u32,
    pub site: u32,
    pub ts_ns: u64,
    pub pid_tgid: u64,
    pub folio: u64,
    pub refs: i32,
    pub gup_flags: u32,
    /// `folio->_refcount` just before the release.
    pub refcount: i32,
    /// As [`AcquireEvent::stack_id`].
    pub stack_id: i32,
    /// 1 when the folio is large (its first tail page points back at it).
    pub large: u32,
    /// With the kernel books, for a folio without a book:
    /// [`RELEASE_BOOKS_CLOSED`], [`RELEASE_BOOKS_EXACT`].
    pub books: u32,
    pub comm: [u8; 16],
}

/// [`ReleaseEvent::books`]: the kernel books lately closed this folio's
/// last booked pin (or an unpin of it was sent): a further unpin is one
/// too many.
pub const RELEASE_BOOKS_CLOSED: u32 = 1;
/// [`ReleaseEvent::books`]: and that book knew every pin on the folio.
pub const RELEASE_BOOKS_EXACT: u32 = 2;

/// A process (thread-group leader) exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct ExitEvent {
    pub tag: u32,
    pub tgid: u32,
    pub ts_ns: u64,
}

/// A blk-mq request completion (`block:block_rq_complete`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct RqCompleteEvent {
    pub tag: u32,
    /// `dev_t` in the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    pub ts_ns: u64,
    pub sector: u64,
    pub nr_sector: u32,
    pub error: i32,
}

/// What a [`BioEvent`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BioPhase {
    /// A fill entered (`bio_iov_iter_get_pages`, `bio_map_user_iov`):
    /// acquires by this thread until [`BioPhase::FillEnd`] are the bio's.
    /// `bio` is 0 when the fill allocates its bio (`bio_map_user_iov`): the
    /// next bio this thread's fill names (its end, or a release of its pages
    /// on an error path inside it) is that one.
    FillBegin = 1,
    /// The fill returned (`status`: its return value); the bio's sector,
    /// size and device are read here. `bio` is 0 when a fill that allocated
    /// its bio failed (the bio is gone).
    FillEnd = 2,
    /// `bio_endio` of a bio seen filled (`status`: `bi_status`).
    Endio = 3,
    /// `__bio_release_pages` of a bio seen filled (`flags`: `bi_flags`).
    Release = 4,
    /// With the kernel books where bios pin: the one record of a followed
    /// bio, at its completion (a [`crate::BioDoneEvent`]: `ts_ns` the
    /// completion, `pid_tgid` the filler's, the fill's sector, size,
    /// device and operation, `status` its `bi_status`).
    Done = 5,
}

impl BioPhase {
    pub const fn from_u32(v: u32) -> Option<BioPhase> {
        match v {
            1 => Some(BioPhase::FillBegin),
            2 => Some(BioPhase::FillEnd),
            3 => Some(BioPhase::Endio),
            4 => Some(BioPhase::Release),
            5 => Some(BioPhase::Done),
            _ => None,
        }
    }
}

/// One step in the life of a Direct I/O bio.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct BioEvent {
    pub tag: u32,
    /// A [`BioPhase`] value.
    pub phase: u32,
    pub ts_ns: u64,
    pub pid_tgid: u64,
    /// The `struct bio *` (reused by the kernel once the bio is freed).
    pub bio: u64,
    /// `bi_iter.bi_sector` (at FillEnd).
    pub sector: u64,
    /// `bi_iter.bi_size` (at FillEnd).
    pub bytes: u32,
    /// `bi_bdev->bd_dev`, kernel encoding (major << 20 | minor).
    pub dev: u32,
    /// `bi_opf`: the operation is its low 8 bits (0 read, 1 write).
    pub opf: u32,
    /// `bi_flags`.
    pub flags: u32,
    /// FillEnd: the call's return value; Endio: `bi_status`.
    pub status: i32,
    pub _reserved: u32,
}

/// Name of the LRU map of bios seen filled (bio address -> 1): bio_endio and
/// __bio_release_pages report only those.
pub const BIOS_MAP: &str = "BIOS";

/// Offsets in `struct bio` and `struct block_device`, from the kernel's BTF.
pub const GLOBAL_BIO_BDEV_OFF: &str = "BIO_BDEV_OFF";
pub const GLOBAL_BIO_OPF_OFF: &str = "BIO_OPF_OFF";
pub const GLOBAL_BIO_FLAGS_OFF: &str = "BIO_FLAGS_OFF";
pub const GLOBAL_BIO_STATUS_OFF: &str = "BIO_STATUS_OFF";
pub const GLOBAL_BIO_SECTOR_OFF: &str = "BIO_SECTOR_OFF";
pub const GLOBAL_BIO_SIZE_OFF: &str = "BIO_SIZE_OFF";
pub const GLOBAL_BDEV_DEV_OFF: &str = "BDEV_DEV_OFF";
/// Offset of `struct request::biotail`: the bio `bio_map_user_iov` appended.
pub const GLOBAL_REQ_BIOTAIL_OFF: &str = "REQ_BIOTAIL_OFF";

/// Offsets of the `block:block_rq_complete` fields, read from tracefs at
/// start-up and handed to the probe as globals.
pub const GLOBAL_RQ_DEV_OFF: &str = "RQ_DEV_OFF";
pub const GLOBAL_RQ_SECTOR_OFF: &str = "RQ_SECTOR_OFF";
pub const GLOBAL_RQ_NR_SECTOR_OFF: &str = "RQ_NR_SECTOR_OFF";
pub const GLOBAL_RQ_ERROR_OFF: &str = "RQ_ERROR_OFF";
/// Offset of `struct page::compound_head` and of `struct folio::_refcount`.
pub const GLOBAL_PAGE_COMPOUND_HEAD_OFF: &str = "PAGE_COMPOUND_HEAD_OFF";
pub const GLOBAL_FOLIO_REFCOUNT_OFF: &str = "FOLIO_REFCOUNT_OFF";
/// `sizeof(struct page)`: the first tail page of a folio sits right after it.
pub const GLOBAL_PAGE_SIZEOF: &str = "PAGE_SIZEOF";
/// Ring-buffer wake-ups: 0 leaves them to the kernel (the reader is woken by
/// the first record it has not caught up with); otherwise records are
/// submitted without a wake-up until this many bytes wait, and user space
/// also drains on a timer.
pub const GLOBAL_RB_WAKEUP_BYTES: &str = "RB_WAKEUP_BYTES";
/// Stack sampling: 0 takes a stack for every acquire and release; otherwise
/// a CPU takes at most one stack per this many nanoseconds for each process
/// and site (acquires) or releasing process (releases); `u64::MAX`: none. Events without one carry
/// [`STACK_NOT_TAKEN`].
pub const GLOBAL_STACK_INTERVAL_NS: &str = "STACK_INTERVAL_NS";
/// The running kernel's FOLL_PIN: with stack sampling on, an unpin of a
/// small folio whose refcount holds fewer pins than it releases (a certain
/// mismatch) always takes its stack.
pub const GLOBAL_FOLL_PIN: &str = "FOLL_PIN";
/// This kernel's FOLL_LONGTERM value (set by user space), for the books' kind.
pub const GLOBAL_FOLL_LONGTERM: &str = "FOLL_LONGTERM";
/// 1: `block:block_rq_complete` sends a record per request (for `--events`
/// and `--record`); 0: it only counts them per CPU ([`Counter::RqRequests`]).
pub const GLOBAL_RQ_RECORDS: &str = "RQ_RECORDS";
/// 1: only the processes in [`FILTER_TGIDS_MAP`] are watched (`run -p`):
/// their acquires, bios and exits, and the releases of the pins they took,
/// counted per folio in [`FILTER_FOLIOS_MAP`].
pub const GLOBAL_FILTER: &str = "FILTER";
/// Name of the hash map of watched thread-group ids (value unused).
pub const FILTER_TGIDS_MAP: &str = "FILTER_TGIDS";
/// Processes `-p` can name.
pub const FILTER_MAX_TGIDS: u32 = 64;
/// Name of the hash map of the pins watched processes hold, by folio.
pub const FILTER_FOLIOS_MAP: &str = "FILTER_FOLIOS";
/// Folios [`FILTER_FOLIOS_MAP`] can hold at once (256 MiB of small pages
/// pinned at the same time); beyond, [`Counter::FilterFull`] counts them.
pub const FILTER_MAX_FOLIOS: u32 = 65536;
/// Name of the per-CPU array of when each CPU last took a stack: for the
/// acquires, then for the releases, [`STACK_CLOCK_SLOTS`] [`StackClock`]
/// slots each, hashed by (process, site).
pub const STACK_CLOCK_MAP: &str = "STACK_CLOCK";
pub const STACK_CLOCK_ACQUIRE: u32 = 0;
pub const STACK_CLOCK_RELEASE: u32 = 1;
pub const STACK_CLOCK_SLOTS: u32 = 64;

/// One slot of [`STACK_CLOCK_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackClock {
    /// tgid << 32 | site (acquires), tgid (releases).
    pub key: u64,
    pub last_ns: u64,
}
/// The `stack_id` of an event whose stack the sampling policy did not take
/// (distinct from the negative errnos of a failed `bpf_get_stackid`).
pub const STACK_NOT_TAKEN: i32 = i32::MIN;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made of integers only, with no padding.
    unsafe impl aya::Pod for super::EntryArgs {}
    unsafe impl aya::Pod for super::AcquireEvent {}
    unsafe impl aya::Pod for super::RqCompleteEvent {}
    unsafe impl aya::Pod for super::FolioBatch {}
    unsafe impl aya::Pod for super::AcquireWithFolios {}
    unsafe impl aya::Pod for super::ReleaseEvent {}
    unsafe impl aya::Pod for super::ExitEvent {}
    unsafe impl aya::Pod for super::AuditSlot {}
    unsafe impl aya::Pod for super::BioEvent {}
    unsafe impl aya::Pod for super::ArgLayout {}
    unsafe impl aya::Pod for super::Book {}
    unsafe impl aya::Pod for super::BookedEvent {}
    unsafe impl aya::Pod for super::TallyKey {}
    unsafe impl aya::Pod for super::TallyCounts {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<AcquireEvent>(), 4 + 4 + 8 * 5 + 4 * 4 + 16);
        assert_eq!(
            size_of::<FolioBatch>(),
            4 + 4 + 8 + 8 + 4 + 4 + 8 * FOLIOS_PER_RECORD
        );
        assert_eq!(size_of::<ReleaseEvent>(), 4 + 4 + 8 * 3 + 4 * 6 + 16);
        assert_eq!(
            size_of::<AcquireWithFolios>(),
            size_of::<AcquireEvent>() + size_of::<FolioBatch>()
        );
        assert_eq!(size_of::<ExitEvent>(), 16);
        assert_eq!(size_of::<RqCompleteEvent>(), 4 + 4 + 8 + 8 + 4 + 4);
        assert_eq!(size_of::<EntryArgs>(), 8 * 3 + 4 + 4);
        assert_eq!(size_of::<BioEvent>(), 4 + 4 + 8 * 4 + 4 * 6);
    }

    #[test]
    fn builtin_layouts_are_the_table_positions() {
        assert_eq!(size_of::<ArgLayout>(), 4 * (ARG_SLOTS + 1));
        let remote = BUILTIN_ARG_LAYOUTS[Site::PinUserPagesRemote as usize];
        assert_eq!(remote.pos, [1, 2, 3, 4]);
        assert_eq!(remote.ret_long, 1);
        let unlocked = ArgLayout::builtin(Site::GetUserPagesUnlocked);
        // pages before gup_flags: slot order stays start, nr_pages, gup_flags, pages.
        assert_eq!(unlocked.pos, [0, 1, 3, 2]);
        assert_eq!(ArgLayout::builtin(Site::PinUserPagesFast).ret_long, 0);
        let put = ArgLayout::builtin(Site::GupPutFolio);
        assert_eq!((put.pos, put.ret_long), ([0, 1, 2, 0], 0));
        assert_eq!(Site::BioMap.args()[0].name, "rq");
        assert_eq!(Site::FolioAddPin.args()[0].shape, ArgShape::Ptr);
        assert_eq!(BUILTIN_ARG_LAYOUTS[0], ArgLayout::default());
    }

    #[test]
    fn sites_round_trip() {
        for site in Site::ALL {
            assert_eq!(Site::from_u32(site as u32), Some(site));
        }
        assert_eq!(Site::from_u32(0), None);
    }

    #[test]
    fn every_site_and_program_has_its_own_name() {
        let mut values = [0u32; Site::ALL.len()];
        for (i, site) in Site::ALL.into_iter().enumerate() {
            values[i] = site as u32;
            for other in &Site::ALL[..i] {
                assert_ne!(site.symbol(), other.symbol());
                assert_ne!(site.name(), other.name());
                for name in site.programs().names() {
                    assert!(other.programs().names().all(|o| o != name), "{name}");
                }
            }
            let p = site.programs();
            // The program names say their kind.
            let kind = if p.trampoline_is_exit {
                "fexit_"
            } else {
                "fentry_"
            };
            assert!(p.trampoline.starts_with(kind), "{}", p.trampoline);
            assert!(p.trampoline_entry.is_none_or(|n| n.starts_with("fentry_")));
            assert!(p.kprobe.starts_with("kprobe_"));
            assert!(p.kretprobe.is_none_or(|n| n.starts_with("kretprobe_")));
        }
        // Every value a record can carry is a site of the table.
        for v in 0..=64 {
            assert_eq!(Site::from_u32(v).is_some(), values.contains(&v), "{v}");
        }
    }
}
