//! The kernel-side books (the default; `run --books events` sends every event instead): the probes keep each folio's
//! open pins in [`BOOKS_MAP`] and count calls, pages and releases in
//! [`TALLY_MAP`] and [`LIFETIMES_MAP`], so a balanced pin and unpin send
//! nothing through the ring buffer. What user space must decide goes there
//! as before: a folio shared by two holders or unpinned in a way its book
//! cannot match is *escalated* (a [`BookedEvent`] hands its book over, and
//! from then on its every acquire and release is a record), and so is a pin
//! that finds the map full.

/// Name of the hash map of open books, by folio address ([`Book`]).
pub const BOOKS_MAP: &str = "BOOKS";
/// 1: the probes keep the books (see the module); 0: every acquire and
/// release is a record (`--events`, `--record`).
pub const GLOBAL_BOOKS_ON: &str = "BOOKS_ON";
/// Folios [`BOOKS_MAP`] holds by default (`--books-max`): 2 GiB of small
/// pages pinned at once. The map allocates as it fills.
pub const DEFAULT_BOOKS_MAX: u32 = 1 << 19;
/// Name of the per-CPU hash map of calls, pages and releases by
/// [`TallyKey`].
pub const TALLY_MAP: &str = "TALLY";
/// Keys [`TALLY_MAP`] holds: processes times call sites times sampled stacks.
pub const TALLY_MAX: u32 = 16384;
/// Name of the per-CPU array of booked pin lifetimes: [`LIFETIME_BUCKETS`]
/// counts of references per kind (FOLL_PIN, then FOLL_PIN|FOLL_LONGTERM),
/// bucketed by [`lifetime_bucket`].
pub const LIFETIMES_MAP: &str = "LIFETIMES";
pub const LIFETIME_BUCKETS: u32 = 256;
/// A [`BookedEvent`]: an escalated folio's book.
pub const TAG_BOOKED: u32 = 8;
/// An [`crate::AcquireWithFolios`] whose call [`TALLY_MAP`] has already
/// counted: only its folios are news (those its book could not take).
pub const TAG_ACQUIRE_FOLIOS_COUNTED: u32 = 9;

/// A [`BioDoneEvent`]: a followed bio completed.
pub const TAG_BIO_DONE: u32 = 10;
/// 1: the bio sites send a record at each step of a bio's life (the full
/// event stream, or a kernel whose Direct I/O bios take FOLL_GET
/// references, which only the bio's release record releases); 0: with the
/// kernel books where bios pin, a bio's one record is its completion
/// ([`BioDoneEvent`]), fill and release are counted.
pub const GLOBAL_BIO_RECORDS: &str = "BIO_RECORDS";

/// What the probes keep of a followed bio from its fill to its completion
/// (the value of the bio map), with the kernel books: its fields are read
/// when the fill returns (`bi_iter` is consumed by completion time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct BioSeen {
    /// The fill's start ([`Book::fill_ns`]); 0 without the kernel books.
    pub fill_ns: u64,
    /// The filling thread's.
    pub pid_tgid: u64,
    pub sector: u64,
    pub bytes: u32,
    pub dev: u32,
    pub opf: u32,
    /// 1 once its completion record is sent (a split bio's `bio_endio`
    /// runs more than once).
    pub done: u32,
}

/// A followed bio completed ([`crate::BioPhase::Done`]): the one record of
/// its life with the kernel books where bios pin. `bio.ts_ns` is the
/// completion, `bio.pid_tgid` the filler's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct BioDoneEvent {
    pub bio: crate::BioEvent,
    /// Its fill's start, as the books of its pins carry it.
    pub fill_ns: u64,
}

/// [`Book::flags`]: the pins were taken with FOLL_LONGTERM.
pub const BOOK_LONGTERM: u16 = 1;
/// [`Book::flags`]: escalated; user space keeps this folio's books, the
/// probes send its every acquire and release (and keep `refs` only to
/// know when to drop the entry).
pub const BOOK_ESCALATED: u16 = 2;
/// [`Book::flags`]: when the book opened, the folio's refcount showed no
/// pin besides this one (small folios): every pin on it is in the books.
pub const BOOK_EXACT: u16 = 4;

/// One folio's open pins, all taken by one process with one kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct Book {
    /// Pins held (atomic adds from every CPU).
    pub refs: i64,
    /// When the first of them was taken.
    pub acquired_ns: u64,
    pub tgid: u32,
    /// The first acquire's stack, as [`crate::AcquireEvent::stack_id`].
    pub stack_id: i32,
    /// The first acquire's [`crate::Site`].
    pub site: u16,
    pub flags: u16,
    pub _reserved: u32,
    pub comm: [u8; 16],
    /// The bio fill the pins were taken in: its `FillBegin` record's
    /// `ts_ns` (0: none, or pins of more than one fill).
    pub fill_ns: u64,
}

/// An escalated folio's [`Book`], as it was when the probes handed it over.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct BookedEvent {
    pub tag: u32,
    pub _reserved: u32,
    pub ts_ns: u64,
    pub folio: u64,
    pub book: Book,
}

/// [`TallyKey::site`] of a release's key: references released from books
/// of `tgid` with the key's kind.
pub const TALLY_RELEASED: u16 = 0xffff;

/// What [`TALLY_MAP`] counts by: the acquiring process, its call site, its
/// kind and the (sampled) stack, as the user-space tally does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct TallyKey {
    pub tgid: u32,
    pub stack_id: i32,
    /// A [`crate::Site`], or [`TALLY_RELEASED`].
    pub site: u16,
    /// [`BOOK_LONGTERM`] or 0.
    pub flags: u16,
    pub _reserved: u32,
}

/// One CPU's counts for a [`TallyKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)
)]
pub struct TallyCounts {
    /// Calls that grabbed pages, and the pages.
    pub calls: u64,
    pub pages: u64,
    /// Calls that grabbed none (an error or 0).
    pub failed: u64,
    /// Release keys: references released, and the `gup_put_folio` calls.
    pub released: u64,
    pub release_calls: u64,
    pub comm: [u8; 16],
}

/// The [`LIFETIMES_MAP`] bucket of a lifetime: four per power of two
/// (the two bits below the highest), so a bucket's width is a quarter of
/// its lower bound.
#[inline(always)]
pub const fn lifetime_bucket(ns: u64) -> u32 {
    if ns < 4 {
        return ns as u32;
    }
    let msb = 63 - ns.leading_zeros();
    let sub = (ns >> (msb - 2)) & 3;
    msb * 4 + sub as u32
}

/// The lowest lifetime of a [`lifetime_bucket`].
pub const fn lifetime_bucket_floor(bucket: u32) -> u64 {
    if bucket < 8 {
        return if bucket < 4 { bucket as u64 } else { 4 };
    }
    let msb = bucket / 4;
    let sub = (bucket % 4) as u64;
    (4 | sub) << (msb - 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<Book>(), 8 * 2 + 4 * 2 + 2 * 2 + 4 + 16 + 8);
        assert_eq!(size_of::<BookedEvent>(), 4 * 2 + 8 * 2 + size_of::<Book>());
        assert_eq!(size_of::<TallyKey>(), 16);
        assert_eq!(size_of::<TallyCounts>(), 8 * 5 + 16);
    }

    #[test]
    fn lifetime_buckets_are_monotonic_and_their_floors_fall_in_them() {
        let mut last = 0;
        for ns in (0..20_000u64).chain([1 << 40, u64::MAX / 2, u64::MAX]) {
            let b = lifetime_bucket(ns);
            assert!(b >= last && b < LIFETIME_BUCKETS, "{ns} -> {b}");
            last = b;
            let floor = lifetime_bucket_floor(b);
            assert!(floor <= ns, "{ns}: bucket {b} floor {floor}");
            assert_eq!(lifetime_bucket(floor), b, "{ns}");
        }
        // A quarter of its floor wide: 1000 ns and 1023 ns share a bucket.
        assert_eq!(lifetime_bucket(1000), lifetime_bucket(1023));
        assert_ne!(lifetime_bucket(1023), lifetime_bucket(1024));
    }
}
