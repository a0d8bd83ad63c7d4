//! The probe sites ([`site_table!`]): each hooked kernel function, its
//! role, the arguments its programs read and the programs' names, and the
//! argument layouts user space hands the probes.

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
///   value is needed. User space attaches them by these names;
/// - `again` (the sites an interrupt can call while the same site's
///   program runs in the task below it: releases and bio completions): a
///   second fentry program, attached beside the first. The kernel skips a
///   trampoline program that is already running on the CPU (and counts it
///   in the program's `recursion_misses`); the second one is not running
///   then, sees that the first is, and sends the record in its place.
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
                again: again_gup_put_folio,
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
                again: again_bio_endio,
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
                again: again_bio_release,
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
            $(again: $again:ident,)?
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
                        define_sites!(@name $($again)?),
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
    /// The second fentry program of a site an interrupt can enter again
    /// (the row's `again`): it sends what the first, skipped, could not.
    pub again: Option<&'static str>,
    pub kprobe: &'static str,
    pub kretprobe: Option<&'static str>,
}

impl SitePrograms {
    /// From a row of [`site_table!`]: the fexit program is the trampoline
    /// when there is one (an fentry program beside it marks the entry).
    const fn of_row(
        fentry: Option<&'static str>,
        fexit: Option<&'static str>,
        again: Option<&'static str>,
        kprobe: &'static str,
        kretprobe: Option<&'static str>,
    ) -> SitePrograms {
        let (trampoline, trampoline_entry, trampoline_is_exit) = match (fentry, fexit) {
            (entry, Some(exit)) => (exit, entry, true),
            (Some(entry), None) => (entry, None, false),
            (None, None) => panic!("a site needs an fentry or an fexit program"),
        };
        if again.is_some() && trampoline_is_exit {
            panic!("a second program (`again`) stands beside an fentry program only");
        }
        SitePrograms {
            trampoline,
            trampoline_entry,
            trampoline_is_exit,
            again,
            kprobe,
            kretprobe,
        }
    }

    /// Every program's name.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            Some(self.trampoline),
            self.trampoline_entry,
            self.again,
            Some(self.kprobe),
            self.kretprobe,
        ]
        .into_iter()
        .flatten()
    }
}
