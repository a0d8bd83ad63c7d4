//! The kernel-side books (the default; see `pintrace_common::books`): a
//! pin opens or adds to its folio's [`BOOKS`] entry, an unpin takes from it
//! and drops it at zero, and the calls, pages, releases and lifetimes are
//! counted per CPU. Nothing crosses the ring buffer for a balanced pin and
//! unpin. A folio the books cannot keep alone (a second holder, an unpin
//! its book does not cover or the refcount shows wrong) is escalated: its
//! book is sent once as a [`BookedEvent`] and from then on each of its
//! acquires and releases is a record, judged by the user-space ledger.
//!
//! The updates are compare-and-swaps on a book's `refs` (tracing programs
//! may not take a `bpf_spin_lock`). The unpin that takes the last pins
//! swaps them for [`CLOSING`] before it deletes the entry, so a pin landing
//! on a book another CPU is closing sees it and goes to the ring buffer
//! instead: no pin is ever added to a deleted book, which would let a later
//! unpin of that folio look like a double unpin.

use crate::{
    kernel::{compare_swap, now_ns},
    maps::{global, BOOKS, BOOKS_ON, EVENTS, FOLL_LONGTERM, LIFETIMES, TALLY, UNPINNED_IN},
    ring::{add, bump, wakeup},
    stacks::remember_closed,
};
use core::ptr::{addr_of, addr_of_mut, read_volatile};
use pintrace_common::{
    lifetime_bucket, Book, BookedEvent, Counter, Site, TallyCounts, TallyKey, BOOK_ESCALATED,
    BOOK_EXACT, BOOK_LONGTERM, LIFETIME_BUCKETS, TAG_BOOKED, TALLY_RELEASED,
};

/// `BPF_NOEXIST` (UAPI).
const BPF_NOEXIST: u64 = 1;

/// A book's `refs` while the unpin that emptied it deletes it (user space
/// skips books without pins).
const CLOSING: i64 = i64::MIN;

/// Tries of a compare-and-swap against other CPUs' updates of one book
/// before the folio is escalated instead (its records then decide).
const TRIES: u32 = 4;

/// Whether the probes keep the books (else every event is a record).
#[inline(always)]
pub(crate) fn on() -> bool {
    global(&BOOKS_ON) != 0
}

/// Whether `site` pins (FOLL_PIN): only pins are booked. FOLL_GET
/// references are released by put_page, which no probe sees, so their
/// books would never close: they stay records.
#[inline(always)]
pub(crate) fn books_site(site: Site) -> bool {
    matches!(
        site,
        Site::PinUserPagesFast
            | Site::PinUserPages
            | Site::PinUserPagesRemote
            | Site::PinUserPagesUnlocked
            | Site::FolioAddPin
    )
}

/// [`BOOK_LONGTERM`] when the call's flags hold FOLL_LONGTERM.
#[inline(always)]
pub(crate) fn kind_flags(gup_flags: u32) -> u16 {
    let longterm = global(&FOLL_LONGTERM) as u32;
    if longterm != 0 && gup_flags & longterm != 0 {
        BOOK_LONGTERM
    } else {
        0
    }
}

/// This CPU's counts for `key`, created on first use; `None` when the map
/// is full (the caller then sends records instead).
#[inline(always)]
fn tally(key: &TallyKey, comm: &[u8; 16]) -> Option<*mut TallyCounts> {
    if let Some(p) = TALLY.get_ptr_mut(key) {
        return Some(p);
    }
    let fresh = TallyCounts {
        comm: *comm,
        ..TallyCounts::default()
    };
    let _ = TALLY.insert(key, &fresh, BPF_NOEXIST);
    TALLY.get_ptr_mut(key)
}

/// Counts one acquire call; false when it cannot be counted here.
#[inline(always)]
pub(crate) fn count_call(key: &TallyKey, comm: &[u8; 16], ret: i64) -> bool {
    let Some(t) = tally(key, comm) else {
        return false;
    };
    // SAFETY: this CPU's own value in the per-CPU map.
    unsafe {
        if ret > 0 {
            (*t).calls += 1;
            (*t).pages += ret as u64;
        } else {
            (*t).failed += 1;
        }
    }
    true
}

/// Who is booking: the acquiring call's constants.
#[repr(C)]
pub(crate) struct Booker {
    pub ts_ns: u64,
    pub tgid: u32,
    pub stack_id: i32,
    pub site: u16,
    /// [`BOOK_LONGTERM`] or 0.
    pub flags: u16,
    pub _pad: u32,
    pub comm: [u8; 16],
    /// See [`Book::fill_ns`].
    pub fill_ns: u64,
}

/// Books one pin of `folio` (`refcount`: its refcount at the acquire's
/// return); false when the pin must go to the ring buffer instead (the
/// folio is escalated, or the books are full).
#[inline(always)]
pub(crate) fn book(folio: u64, refcount: u64, who: &Booker) -> bool {
    if folio == 0 {
        return true;
    }
    if let Some(b) = BOOKS.get_ptr_mut(&folio) {
        return join(b, folio, who);
    }
    // This pin's own 1024 is in the refcount: below 2048, no other pin.
    let exact = if refcount < 2048 { BOOK_EXACT } else { 0 };
    let fresh = Book {
        refs: 1,
        acquired_ns: who.ts_ns,
        tgid: who.tgid,
        stack_id: who.stack_id,
        site: who.site,
        flags: who.flags | exact,
        _reserved: 0,
        comm: who.comm,
        fill_ns: who.fill_ns,
    };
    if BOOKS.insert(&folio, &fresh, BPF_NOEXIST).is_ok() {
        bump(Counter::Booked);
        return true;
    }
    // Another CPU opened it first, or the map is full.
    match BOOKS.get_ptr_mut(&folio) {
        Some(b) => join(b, folio, who),
        None => {
            bump(Counter::BooksFull);
            false
        }
    }
}

/// A pin of a folio whose book is open: the same holder adds to it; any
/// other escalates it. False (the pin goes to the ring buffer) when the
/// book is escalated or being closed.
#[inline(always)]
fn join(b: *mut Book, folio: u64, who: &Booker) -> bool {
    // SAFETY: `b` points at the map's value for `folio`, live for this
    // program's run (a deleted entry is freed after an RCU grace period).
    let refs = unsafe { addr_of_mut!((*b).refs) };
    for _ in 0..TRIES {
        // SAFETY: as above.
        let (r, tgid, flags) = unsafe {
            (
                read_volatile(refs),
                read_volatile(addr_of!((*b).tgid)),
                read_volatile(addr_of!((*b).flags)),
            )
        };
        if r <= 0 {
            return false;
        }
        let mine =
            flags & BOOK_ESCALATED == 0 && tgid == who.tgid && flags & BOOK_LONGTERM == who.flags;
        if !mine && flags & BOOK_ESCALATED == 0 {
            escalate(b, folio, who.ts_ns);
            continue;
        }
        // Escalated books still count, to know when to go.
        if compare_swap(refs, r, r + 1) {
            if mine {
                bump(Counter::Booked);
                // Pins of two fills (or of one and none) in one book: no
                // bio is theirs alone. A race here costs only the tie.
                // SAFETY: as above.
                unsafe {
                    let fill = addr_of_mut!((*b).fill_ns);
                    if read_volatile(fill) != who.fill_ns {
                        fill.write_volatile(0);
                    }
                }
            }
            return mine;
        }
    }
    false
}

/// Hands `folio`'s book to user space: a [`BookedEvent`], then its
/// acquires and releases as records. Reserved before the mark is set, so
/// no record of the folio can reach the ring ahead of its book.
#[inline(always)]
fn escalate(b: *mut Book, folio: u64, ts_ns: u64) {
    let rec = EVENTS.reserve::<BookedEvent>(0);
    // SAFETY: as in `join`. Two CPUs escalating at once both send the
    // book; the ledger takes it once.
    unsafe {
        let f = addr_of_mut!((*b).flags);
        f.write_volatile(read_volatile(f) | BOOK_ESCALATED);
    }
    let Some(mut rec) = rec else {
        bump(Counter::RingbufFull);
        return;
    };
    let out = rec.as_mut_ptr();
    // SAFETY: the record is reserved and ours; the book is copied after
    // the mark, straight from the map (no copy on the stack: 6.1 allows a
    // program and its loop callback 512 bytes of stack in all).
    unsafe {
        (*out).tag = TAG_BOOKED;
        (*out)._reserved = 0;
        (*out).ts_ns = ts_ns;
        (*out).folio = folio;
        core::ptr::copy_nonoverlapping(b as *const Book, addr_of_mut!((*out).book), 1);
    }
    rec.submit(wakeup());
    bump(Counter::Submitted);
    bump(Counter::Escalated);
}

/// An unpin of `refs` pins of `folio`; `wrong`: the refcount shows it
/// cannot be right. True when the books balanced it (no record).
#[inline(always)]
pub(crate) fn release(folio: u64, refs: i64, wrong: bool) -> bool {
    let Some(b) = BOOKS.get_ptr_mut(&folio) else {
        return false;
    };
    // SAFETY: as in `join`.
    let count = unsafe { addr_of_mut!((*b).refs) };
    for _ in 0..TRIES {
        // SAFETY: as above.
        let book = unsafe { read_volatile(b) };
        if book.refs <= 0 {
            // Closed by another CPU's unpin: nothing left to take.
            return false;
        }
        let escalated = book.flags & BOOK_ESCALATED != 0;
        if !escalated && (wrong || book.refs < refs) {
            escalate(b, folio, now_ns());
            continue;
        }
        let last = book.refs <= refs;
        if !compare_swap(
            count,
            book.refs,
            if last { CLOSING } else { book.refs - refs },
        ) {
            continue;
        }
        if last {
            let _ = BOOKS.remove(&folio);
            if !escalated {
                remember_closed(folio, book.flags & BOOK_EXACT != 0);
            }
        }
        if escalated {
            return false;
        }
        balanced(&book, refs);
        return true;
    }
    // Other CPUs kept changing the book: the ledger decides from here (the
    // book it is sent still holds this unpin's pins, and the record of the
    // unpin takes them).
    // SAFETY: as above.
    if unsafe { read_volatile(addr_of!((*b).flags)) } & BOOK_ESCALATED == 0 {
        escalate(b, folio, now_ns());
    }
    false
}

/// Counts a release the books balanced: for the holder's process and
/// kind, and its lifetime (from the book's first pin).
#[inline(always)]
fn balanced(book: &Book, refs: i64) {
    add(Counter::BookedReleases, 1);
    add(Counter::BookedReleaseRefs, refs as u64);
    let key = TallyKey {
        tgid: book.tgid,
        stack_id: 0,
        site: TALLY_RELEASED,
        flags: book.flags & BOOK_LONGTERM,
        _reserved: 0,
    };
    if let Some(t) = tally(&key, &book.comm) {
        // SAFETY: this CPU's own value.
        unsafe {
            (*t).released += refs as u64;
            (*t).release_calls += 1;
        }
    }
    let kind = (book.flags & BOOK_LONGTERM != 0) as u32;
    let age = now_ns().saturating_sub(book.acquired_ns);
    if let Some(slot) = LIFETIMES.get_ptr_mut(kind * LIFETIME_BUCKETS + lifetime_bucket(age)) {
        // SAFETY: this CPU's own slot.
        unsafe { *slot += refs as u64 };
    }
}

/// The slot of thread `tid` in [`UNPINNED_IN`].
#[inline(always)]
fn unpinned_slot(tid: u32) -> u32 {
    (tid.wrapping_mul(0x9e37_79b1) >> 22) & (crate::maps::UNPINNED_SLOTS - 1)
}

/// Thread `tid` sent the record of an unpin the books could not balance.
#[inline(always)]
pub(crate) fn unpinned_in(tid: u32) {
    if let Some(slot) = UNPINNED_IN.get_ptr_mut(unpinned_slot(tid)) {
        // SAFETY: a valid array slot; a race only costs one record.
        unsafe { *slot = tid };
    }
}

/// Whether thread `tid` sent one since its last acquire (then forgotten).
#[inline(always)]
pub(crate) fn returning_after_unpin(tid: u32) -> bool {
    let Some(slot) = UNPINNED_IN.get_ptr_mut(unpinned_slot(tid)) else {
        return false;
    };
    // SAFETY: as in `unpinned_in`.
    unsafe {
        if *slot != tid {
            return false;
        }
        *slot = 0;
    }
    true
}
