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

/// The probe sites, one row each, in the order plans and reports list them:
/// `site_table!(callback)` hands every row to `callback!`. This crate makes
/// [`Site`] and its names and programs from it; the probes make the
/// programs of every `gup` row from it (`pintrace-ebpf/src/acquire_sites.rs`)
/// and write out the others' by hand, under the names given here.
///
/// A row: the [`Site`] variant and its value in records, then
/// - `symbol`: the kernel function probed;
/// - `name`: the short name of plans and reports;
/// - `role`: a [`SiteRole`];
/// - `args`: the parameters the probes read, by their name in the
///   kernel's prototype, each with its shape (`ptr` or `int`) and its
///   built-in position (`@ n`, counted from 0). User space finds the
///   positions in the kernel's BTF by these names and hands them to the
///   probes before load ([`GLOBAL_ARG_LAYOUTS`]); the built-in ones are
///   used where the kernel has no BTF for the function. At most
///   [`ARG_SLOTS`], read in this order (slot 0 first);
/// - `gup` (the GUP calls, whose programs are made from the row): whether
///   the call returns an `int` or a `long` (where the kernel's BTF does
///   not say). Their `args` are `start`, `nr_pages`, `gup_flags`, `pages`,
///   in the slots [`ARG_START`], [`ARG_NR_PAGES`], [`ARG_GUP_FLAGS`],
///   [`ARG_PAGES`];
/// - the programs, by name: an `fentry` and/or an `fexit` program (the
///   BTF trampoline way in), a `kprobe`, and a `kretprobe` where the return
///   value is needed. User space attaches them by these names.
#[macro_export]
macro_rules! site_table {
    ($callback:ident) => {
        $callback! {
            /// `pin_user_pages_fast(start, nr_pages, gup_flags, pages)`.
            PinUserPagesFast = 1 {
                symbol: "pin_user_pages_fast",
                name: "pin_fast",
                role: Acquire,
                args: { start: int @ 0, nr_pages: int @ 1, gup_flags: int @ 2, pages: ptr @ 3 },
                gup: int,
                fexit: fexit_pin_user_pages_fast,
                kprobe: kprobe_pin_user_pages_fast,
                kretprobe: kretprobe_pin_user_pages_fast,
            }
            /// `get_user_pages_fast(start, nr_pages, gup_flags, pages)`.
            GetUserPagesFast = 2 {
                symbol: "get_user_pages_fast",
                name: "get_fast",
                role: Acquire,
                args: { start: int @ 0, nr_pages: int @ 1, gup_flags: int @ 2, pages: ptr @ 3 },
                gup: int,
                fexit: fexit_get_user_pages_fast,
                kprobe: kprobe_get_user_pages_fast,
                kretprobe: kretprobe_get_user_pages_fast,
            }
            /// `pin_user_pages(start, nr_pages, gup_flags, pages[, vmas])` (io_uring
            /// fixed buffers on 6.1, many drivers).
            PinUserPages = 4 {
                symbol: "pin_user_pages",
                name: "pin",
                role: Acquire,
                args: { start: int @ 0, nr_pages: int @ 1, gup_flags: int @ 2, pages: ptr @ 3 },
                gup: long,
                fexit: fexit_pin_user_pages,
                kprobe: kprobe_pin_user_pages,
                kretprobe: kretprobe_pin_user_pages,
            }
            /// `get_user_pages(start, nr_pages, gup_flags, pages[, vmas])`.
            GetUserPages = 5 {
                symbol: "get_user_pages",
                name: "get",
                role: Acquire,
                args: { start: int @ 0, nr_pages: int @ 1, gup_flags: int @ 2, pages: ptr @ 3 },
                gup: long,
                fexit: fexit_get_user_pages,
                kprobe: kprobe_get_user_pages,
                kretprobe: kretprobe_get_user_pages,
            }
            /// `pin_user_pages_remote(mm, start, nr_pages, gup_flags, pages, ...)` (vfio).
            PinUserPagesRemote = 6 {
                symbol: "pin_user_pages_remote",
                name: "pin_remote",
                role: Acquire,
                args: { start: int @ 1, nr_pages: int @ 2, gup_flags: int @ 3, pages: ptr @ 4 },
                gup: long,
                fexit: fexit_pin_user_pages_remote,
                kprobe: kprobe_pin_user_pages_remote,
                kretprobe: kretprobe_pin_user_pages_remote,
            }
            /// `get_user_pages_remote(mm, start, nr_pages, gup_flags, pages, ...)`.
            GetUserPagesRemote = 7 {
                symbol: "get_user_pages_remote",
                name: "get_remote",
                role: Acquire,
                args: { start: int @ 1, nr_pages: int @ 2, gup_flags: int @ 3, pages: ptr @ 4 },
                gup: long,
                fexit: fexit_get_user_pages_remote,
                kprobe: kprobe_get_user_pages_remote,
                kretprobe: kretprobe_get_user_pages_remote,
            }
            /// `gup_put_folio(folio, refs, flags)`: every counted unpin goes through it.
            GupPutFolio = 3 {
                symbol: "gup_put_folio",
                name: "put_folio",
                role: Release,
                args: { folio: ptr @ 0, refs: int @ 1, flags: int @ 2 },
                fentry: fentry_gup_put_folio,
                kprobe: kprobe_gup_put_folio,
            }
            /// `bio_iov_iter_get_pages(bio, iter)`: a Direct I/O bio filled from user
            /// memory; the acquires inside it are the bio's (entry and exit).
            BioFill = 8 {
                symbol: "bio_iov_iter_get_pages",
                name: "bio_fill",
                role: Bio,
                args: { bio: ptr @ 0 },
                fentry: fentry_bio_fill,
                fexit: fexit_bio_fill,
                kprobe: kprobe_bio_fill,
                kretprobe: kretprobe_bio_fill,
            }
            /// `bio_map_user_iov(rq, iter, gfp)`: SG_IO and NVMe passthrough
            /// (`blk_rq_map_user_iov`) map user memory into a bio of their request;
            /// the acquires inside are that bio's. The bio is allocated inside, so
            /// the exit names it (the request's last bio), or on an error path the
            /// release of its pages inside the call.
            BioMap = 14 {
                symbol: "bio_map_user_iov",
                name: "bio_map",
                role: Bio,
                args: { rq: ptr @ 0 },
                fentry: fentry_bio_map,
                fexit: fexit_bio_map,
                kprobe: kprobe_bio_map,
                kretprobe: kretprobe_bio_map,
            }
            /// `bio_endio(bio)`: a bio the probes saw filled has completed.
            BioEndio = 9 {
                symbol: "bio_endio",
                name: "bio_endio",
                role: Bio,
                args: { bio: ptr @ 0 },
                fentry: fentry_bio_endio,
                kprobe: kprobe_bio_endio,
            }
            /// `__bio_release_pages(bio, mark_dirty)`: the block layer releases the
            /// bio's pages (unpin with BIO_PAGE_PINNED, put_page without it).
            BioRelease = 10 {
                symbol: "__bio_release_pages",
                name: "bio_release",
                role: Bio,
                args: { bio: ptr @ 0 },
                fentry: fentry_bio_release,
                kprobe: kprobe_bio_release,
            }
            /// `folio_add_pin(folio)` (6.5 on): one more pin on a folio already
            /// pinned, taken by the legacy Direct I/O code (fs/direct-io.c: FAT,
            /// hfs, udf, ...) for each block section of a page. It is released with
            /// unpin like any pin, but not counted in `nr_foll_pin_acquired`.
            FolioAddPin = 11 {
                symbol: "folio_add_pin",
                name: "add_pin",
                role: Acquire,
                args: { folio: ptr @ 0 },
                fexit: fexit_folio_add_pin,
                kprobe: kprobe_folio_add_pin,
            }
            /// `pin_user_pages_unlocked(start, nr_pages, pages, gup_flags)`: the
            /// `pages` array before the flags (vfio, some drivers).
            PinUserPagesUnlocked = 12 {
                symbol: "pin_user_pages_unlocked",
                name: "pin_unlocked",
                role: Acquire,
                args: { start: int @ 0, nr_pages: int @ 1, gup_flags: int @ 3, pages: ptr @ 2 },
                gup: long,
                fexit: fexit_pin_user_pages_unlocked,
                kprobe: kprobe_pin_user_pages_unlocked,
                kretprobe: kretprobe_pin_user_pages_unlocked,
            }
            /// `get_user_pages_unlocked(start, nr_pages, pages, gup_flags)` (KVM's
            /// slow path); on 6.1 also the fast calls' own slow path.
            GetUserPagesUnlocked = 13 {
                symbol: "get_user_pages_unlocked",
                name: "get_unlocked",
                role: Acquire,
                args: { start: int @ 0, nr_pages: int @ 1, gup_flags: int @ 3, pages: ptr @ 2 },
                gup: long,
                fexit: fexit_get_user_pages_unlocked,
                kprobe: kprobe_get_user_pages_unlocked,
                kretprobe: kretprobe_get_user_pages_unlocked,
            }
        }
    };
}

/// What a site is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteRole {
    /// It takes references.
    Acquire,
    /// It drops them.
    Release,
    /// It follows bios (association, not references).
    Bio,
}

/// [`Site`] and its tables, from the rows of [`site_table!`].
macro_rules! define_sites {
    (@name) => {
        None
    };
    (@name $program:ident) => {
        Some(stringify!($program))
    };
    (@shape ptr) => {
        ArgShape::Ptr
    };
    (@shape int) => {
        ArgShape::Int
    };
    (@ret) => {
        None
    };
    (@ret int) => {
        Some(GupRet::Int)
    };
    (@ret long) => {
        Some(GupRet::Long)
    };
    ($(
        $(#[$doc:meta])*
        $site:ident = $value:literal {
            symbol: $symbol:literal,
            name: $name:literal,
            role: $role:ident,
            args: { $($arg:ident: $shape:ident @ $pos:literal),* $(,)? },
            $(gup: $ret:ident,)?
            $(fentry: $fentry:ident,)?
            $(fexit: $fexit:ident,)?
            kprobe: $kprobe:ident,
            $(kretprobe: $kretprobe:ident,)?
        }
    )*) => {
        /// Where an event was seen: the kernel function the probe sits on.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Site {
            $($(#[$doc])* $site = $value,)*
        }

        impl Site {
            /// Every site, in the order plans and reports list them.
            pub const ALL: [Site; [$($value),*].len()] = [$(Site::$site),*];

            pub const fn from_u32(v: u32) -> Option<Site> {
                match v {
                    $($value => Some(Site::$site),)*
                    _ => None,
                }
            }

            /// The kernel symbol this site probes.
            pub const fn symbol(self) -> &'static str {
                match self {
                    $(Site::$site => $symbol,)*
                }
            }

            /// The site's short name in plans and reports.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Site::$site => $name,)*
                }
            }

            /// What the site is for.
            pub const fn role(self) -> SiteRole {
                match self {
                    $(Site::$site => SiteRole::$role,)*
                }
            }

            /// The parameters the site's probes read, in slot order.
            pub const fn args(self) -> &'static [SiteArg] {
                match self {
                    $(Site::$site => &[$(SiteArg {
                        name: stringify!($arg),
                        shape: define_sites!(@shape $shape),
                        builtin: $pos,
                    }),*],)*
                }
            }

            /// What a GUP call returns, where the kernel's BTF does not
            /// say; `None` for the other sites.
            pub const fn gup_ret(self) -> Option<GupRet> {
                match self {
                    $(Site::$site => define_sites!(@ret $($ret)?),)*
                }
            }

            /// Names of the programs in the eBPF object that probe this site.
            pub const fn programs(self) -> SitePrograms {
                match self {
                    $(Site::$site => SitePrograms::of_row(
                        define_sites!(@name $($fentry)?),
                        define_sites!(@name $($fexit)?),
                        stringify!($kprobe),
                        define_sites!(@name $($kretprobe)?),
                    ),)*
                }
            }
        }
    };
}

site_table!(define_sites);

// Every row has a trampoline program, a value with a slot in
// [`GLOBAL_ARG_LAYOUTS`] and at most [`ARG_SLOTS`] arguments; the GUP rows
// name theirs in the slots the probes read: a table that does not fails to
// build.
const _: () = {
    let mut i = 0;
    while i < Site::ALL.len() {
        let site = Site::ALL[i];
        site.programs();
        assert!((site as usize) < SITE_SLOTS);
        assert!(site.args().len() <= ARG_SLOTS);
        if site.gup_ret().is_some() {
            let args = site.args();
            assert!(args.len() == 4);
            assert!(str_eq(args[ARG_START].name, "start"));
            assert!(str_eq(args[ARG_NR_PAGES].name, "nr_pages"));
            assert!(str_eq(args[ARG_GUP_FLAGS].name, "gup_flags"));
            assert!(str_eq(args[ARG_PAGES].name, "pages"));
        }
        i += 1;
    }
};

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The shape of a parameter a probe reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgShape {
    /// A pointer (`struct folio *`, `struct page **`, ...).
    Ptr,
    /// An integer or an enum.
    Int,
}

/// One parameter a site's probes read (a row's `args` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteArg {
    /// Its name in the kernel's prototype.
    pub name: &'static str,
    pub shape: ArgShape,
    /// Its position where the kernel's BTF does not say (counted from 0).
    pub builtin: u32,
}

/// What a GUP call returns: pages grabbed or a negative errno, in an `int`
/// or a `long` (the probes sign-extend from its width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GupRet {
    Int,
    Long,
}

/// Arguments read per site, at most.
pub const ARG_SLOTS: usize = 4;
/// Slots of [`GLOBAL_ARG_LAYOUTS`]: one per [`Site`] value (0 unused).
pub const SITE_SLOTS: usize = 16;
/// The slots of a GUP call's arguments.
pub const ARG_START: usize = 0;
pub const ARG_NR_PAGES: usize = 1;
pub const ARG_GUP_FLAGS: usize = 2;
pub const ARG_PAGES: usize = 3;

/// Where one site's arguments are on the running kernel: `pos[slot]` is
/// the position (from 0) of the parameter its row names in that slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgLayout {
    pub pos: [u32; ARG_SLOTS],
    /// 1: the call returns a `long` (sign-extended from 64 bits); 0: an
    /// `int` (from 32), or a site that reads no return value.
    pub ret_long: u32,
}

impl ArgLayout {
    /// The site table's positions for `site`.
    pub const fn builtin(site: Site) -> ArgLayout {
        let args = site.args();
        let mut pos = [0u32; ARG_SLOTS];
        let mut i = 0;
        while i < args.len() {
            pos[i] = args[i].builtin;
            i += 1;
        }
        ArgLayout {
            pos,
            ret_long: matches!(site.gup_ret(), Some(GupRet::Long)) as u32,
        }
    }
}

/// Name of the global holding every site's [`ArgLayout`], indexed by the
/// [`Site`] value; set by user space before load from the kernel's BTF.
pub const GLOBAL_ARG_LAYOUTS: &str = "ARG_LAYOUTS";

/// The site table's argument layouts, the probes' defaults.
pub const BUILTIN_ARG_LAYOUTS: [ArgLayout; SITE_SLOTS] = {
    let mut out = [ArgLayout {
        pos: [0; ARG_SLOTS],
        ret_long: 0,
    }; SITE_SLOTS];
    let mut i = 0;
    while i < Site::ALL.len() {
        out[Site::ALL[i] as usize] = ArgLayout::builtin(Site::ALL[i]);
        i += 1;
    }
    out
};

impl Site {
    /// Whether the site takes references (else it drops them).
    pub const fn is_acquire(self) -> bool {
        matches!(self.role(), SiteRole::Acquire)
    }

    /// Whether the site follows bios (association, not references).
    pub const fn is_bio(self) -> bool {
        matches!(self.role(), SiteRole::Bio)
    }
}

/// The programs able to watch one site: one fentry/fexit program, or a
/// kprobe (with a kretprobe where the return value is needed).
#[derive(Clone, Copy, Debug)]
pub struct SitePrograms {
    pub trampoline: &'static str,
    /// An fentry program attached beside an fexit `trampoline`, for sites
    /// that mark both ends of a call.
    pub trampoline_entry: Option<&'static str>,
    pub trampoline_is_exit: bool,
    pub kprobe: &'static str,
    pub kretprobe: Option<&'static str>,
}

impl SitePrograms {
    /// From a row of [`site_table!`]: the fexit program is the trampoline
    /// when there is one (an fentry program beside it marks the entry).
    const fn of_row(
        fentry: Option<&'static str>,
        fexit: Option<&'static str>,
        kprobe: &'static str,
        kretprobe: Option<&'static str>,
    ) -> SitePrograms {
        let (trampoline, trampoline_entry, trampoline_is_exit) = match (fentry, fexit) {
            (entry, Some(exit)) => (exit, entry, true),
            (Some(entry), None) => (entry, None, false),
            (None, None) => panic!("a site needs an fentry or an fexit program"),
        };
        SitePrograms {
            trampoline,
            trampoline_entry,
            trampoline_is_exit,
            kprobe,
            kretprobe,
        }
    }

    /// Every program's name.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            Some(self.trampoline),
            self.trampoline_entry,
            Some(self.kprobe),
            self.kretprobe,
        ]
        .into_iter()
        .flatten()
    }
}

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
}

pub const COUNTER_SLOTS: u32 = 12;

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
    pub _reserved: u32,
    pub comm: [u8; 16],
}

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
}

impl BioPhase {
    pub const fn from_u32(v: u32) -> Option<BioPhase> {
        match v {
            1 => Some(BioPhase::FillBegin),
            2 => Some(BioPhase::FillEnd),
            3 => Some(BioPhase::Endio),
            4 => Some(BioPhase::Release),
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
