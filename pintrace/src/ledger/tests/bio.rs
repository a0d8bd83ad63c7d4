//! The ledger's bio bookkeeping on synthetic event streams.

use super::*;

impl Stream {
    fn bio_event(&mut self, phase: BioPhase, tid: u32, bio: u64, flags: u32) {
        self.bio_event_with(phase, tid, bio, flags, 0);
    }

    fn bio_event_with(&mut self, phase: BioPhase, tid: u32, bio: u64, flags: u32, status: i32) {
        self.ts += MS;
        self.feed(Event::Bio(Bio {
            phase,
            ts_ns: self.ts,
            tgid: tid,
            tid,
            bio,
            sector: 2048,
            bytes: 8192,
            major: 7,
            minor: 0,
            opf: 0,
            flags,
            status,
            fill_ns: 0,
        }));
    }

    /// `bio_iov_iter_get_pages` by `tgid` pinning `folios` into `bio`.
    fn fill(&mut self, tgid: u32, bio: u64, site: Site, flags: u32, folios: &[u64]) {
        self.bio_event(BioPhase::FillBegin, tgid, bio, 0);
        self.acquire(site, tgid, flags, folios);
        self.bio_event(BioPhase::FillEnd, tgid, bio, 0);
    }

    fn unpin_by(&mut self, tid: u32, folio: u64) {
        self.ts += MS;
        self.feed(Event::Release(Release {
            site: Site::GupPutFolio,
            ts_ns: self.ts,
            tgid: tid,
            tid,
            folio,
            refs: 1,
            gup_flags: F.pin,
            refcount: 2000,
            stack_id: 2,
            large: false,
            comm: Comm::default(),
            books: Default::default(),
        }));
    }
}

const BIO_A: u64 = 0xffff_8880_0100_0000;
const BIO_B: u64 = 0xffff_8880_0200_0000;
/// BIO_PAGE_PINNED as 6.5 on have it.
const PINNED: u32 = 1;

fn stream_with_bios() -> Stream {
    let mut s = Stream::new(LedgerConfig::default());
    s.ledger.flags.bio_page_pinned = PINNED;
    s
}

#[test]
fn a_bio_released_through_unpins_leaves_nothing() {
    let mut s = stream_with_bios();
    s.fill(
        10,
        BIO_A,
        Site::PinUserPagesFast,
        F.pin,
        &[folio(1), folio(2)],
    );
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    s.bio_event(BioPhase::Release, 0, BIO_A, PINNED);
    s.unpin_by(0, folio(1));
    s.unpin_by(0, folio(2));
    let t = s.ts;
    s.ledger.tick(t + 10_000 * MS, &mut s.findings);
    s.ledger.finish(t + 10_000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert_eq!(s.ledger.tracked_bios(), 0);
    assert_eq!(s.ledger.tally.bios.filled, 1);
    assert_eq!(s.ledger.tally.bios.completed, 1);
    assert_eq!(s.ledger.tally.bios.released, 1);
}

#[test]
fn pins_held_after_their_bio_completed_are_one_leak_naming_the_bio() {
    let mut s = stream_with_bios();
    s.fill(
        10,
        BIO_A,
        Site::PinUserPagesFast,
        F.pin,
        &[folio(1), folio(2)],
    );
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    let done = s.ts;
    s.ledger.tick(done + 1000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "within the grace period");
    s.ledger.tick(done + 2500 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAfterBio]);
    let f = &s.findings[0];
    assert_eq!((f.refs, f.tgid), (2, 10));
    let bio = f.bio.expect("the bio is named");
    assert_eq!(
        (bio.major, bio.minor, bio.sector, bio.bytes),
        (7, 0, 2048, 8192)
    );
    assert!(f.detail.contains("after their bio"), "{}", f.detail);
    // Reported once: not again at the end, nor as its owner's leak.
    s.feed(Event::Exit {
        tgid: 10,
        ts_ns: done + 3000 * MS,
    });
    s.ledger.tick(done + 9000 * MS, &mut s.findings);
    s.ledger.finish(done + 9000 * MS, &mut s.findings);
    assert_eq!(s.findings.len(), 1, "{:?}", s.findings);
}

#[test]
fn a_pinned_bio_released_without_bio_page_pinned_is_a_mismatch() {
    let mut s = stream_with_bios();
    s.fill(
        10,
        BIO_A,
        Site::PinUserPagesFast,
        F.pin,
        &[folio(1), folio(2)],
    );
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    s.bio_event(BioPhase::Release, 0, BIO_A, 0);
    assert_eq!(s.kinds(), vec![FindingKind::PinReleasedAsGet]);
    assert_eq!(s.findings[0].refs, 2);
    assert!(s.findings[0].bio.is_some());
    let t = s.ts;
    s.ledger.finish(t + 10_000 * MS, &mut s.findings);
    assert_eq!(s.findings.len(), 1, "the put pins are not leaks too");
}

#[test]
fn get_references_are_released_by_their_bio() {
    // 6.1: Direct I/O takes FOLL_GET references; __bio_release_pages puts them.
    let mut s = Stream::new(LedgerConfig::default());
    s.ledger.flags = FollFlags::UP_TO_6_2;
    let get = FollFlags::UP_TO_6_2.get;
    s.fill(
        10,
        BIO_A,
        Site::GetUserPagesFast,
        get,
        &[folio(1), folio(2), folio(1)],
    );
    assert_eq!(s.ledger.outstanding(Kind::Get), 3);
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    s.bio_event(BioPhase::Release, 0, BIO_A, 0);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert_eq!(s.ledger.outstanding(Kind::Get), 0);
    assert_eq!(s.ledger.tally.bios.get_refs_released, 3);
    let p = s.ledger.tally.process(10).unwrap();
    assert_eq!(p.released.get(&Kind::Get), Some(&3));
    assert_eq!(s.ledger.tracked_bios(), 0);
}

#[test]
fn a_bio_that_took_nothing_is_not_followed() {
    let mut s = stream_with_bios();
    // A kernel-memory iterator (io_uring fixed buffers, loop): no acquire.
    s.bio_event(BioPhase::FillBegin, 10, BIO_A, 0);
    s.bio_event(BioPhase::FillEnd, 10, BIO_A, 0);
    assert_eq!(s.ledger.tracked_bios(), 0);
    // An acquire after the fill is not the bio's.
    s.pin(10, &[folio(3)]);
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    let t = s.ts;
    s.ledger.tick(t + 5000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
}

#[test]
fn interleaved_bio_releases_on_a_shared_folio_balance() {
    // Two bios share folio 1 (two 2 KiB I/Os in one page); their releases
    // run in interrupts on two CPUs, both seen as tid 0, interleaved.
    let mut s = stream_with_bios();
    s.fill(
        10,
        BIO_A,
        Site::PinUserPagesFast,
        F.pin,
        &[folio(1), folio(2)],
    );
    s.fill(
        11,
        BIO_B,
        Site::PinUserPagesFast,
        F.pin,
        &[folio(1), folio(3)],
    );
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    s.bio_event(BioPhase::Endio, 0, BIO_B, 0);
    s.bio_event(BioPhase::Release, 0, BIO_A, PINNED);
    s.bio_event(BioPhase::Release, 0, BIO_B, PINNED);
    s.unpin_by(0, folio(2));
    s.unpin_by(0, folio(1));
    s.unpin_by(0, folio(1));
    s.unpin_by(0, folio(3));
    let t = s.ts;
    s.ledger.tick(t + 5000 * MS, &mut s.findings);
    s.ledger.finish(t + 5000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert_eq!(s.ledger.tracked_bios(), 0);
    let p = |t| {
        s.ledger
            .tally
            .process(t)
            .unwrap()
            .released
            .get(&Kind::Pin)
            .copied()
    };
    assert_eq!((p(10), p(11)), (Some(2), Some(2)));
}

#[test]
fn a_bio_address_reused_starts_new_books() {
    let mut s = stream_with_bios();
    s.fill(10, BIO_A, Site::PinUserPagesFast, F.pin, &[folio(1)]);
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    s.bio_event(BioPhase::Release, 0, BIO_A, PINNED);
    s.unpin_by(0, folio(1));
    // The same struct bio, reused for the next I/O of another process.
    s.fill(12, BIO_A, Site::PinUserPagesFast, F.pin, &[folio(4)]);
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    let t = s.ts;
    s.ledger.tick(t + 3000 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAfterBio]);
    assert_eq!((s.findings[0].tgid, s.findings[0].folio), (12, folio(4)));
}

impl Stream {
    /// `bio_map_user_iov` by `tgid` pinning `folios` into the bio it
    /// allocates, which its end names `bio`.
    fn map_user(&mut self, tgid: u32, bio: u64, flags: u32, folios: &[u64]) {
        self.bio_event(BioPhase::FillBegin, tgid, 0, 0);
        self.acquire(Site::PinUserPagesFast, tgid, flags, folios);
        self.bio_event(BioPhase::FillEnd, tgid, bio, 0);
    }
}

#[test]
fn a_mapped_bio_named_at_its_end_is_followed_to_its_release() {
    let mut s = stream_with_bios();
    s.map_user(10, BIO_A, F.pin, &[folio(1), folio(2)]);
    assert_eq!(s.ledger.tracked_bios(), 1);
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    // blk_rq_unmap_user on the submitter's thread.
    s.bio_event(BioPhase::Release, 10, BIO_A, PINNED);
    s.unpin_by(10, folio(1));
    s.unpin_by(10, folio(2));
    let t = s.ts;
    s.ledger.tick(t + 10_000 * MS, &mut s.findings);
    s.ledger.finish(t + 10_000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert_eq!(s.ledger.tracked_bios(), 0);
    assert_eq!(s.ledger.tally.bios.released, 1);
}

#[test]
fn a_mapped_bio_put_instead_of_unpinned_is_a_mismatch_not_a_leak() {
    let mut s = stream_with_bios();
    s.map_user(10, BIO_A, F.pin, &[folio(1), folio(2)]);
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    s.bio_event(BioPhase::Release, 10, BIO_A, 0);
    s.feed(Event::Exit {
        tgid: 10,
        ts_ns: s.ts + MS,
    });
    let t = s.ts;
    s.ledger.tick(t + 10_000 * MS, &mut s.findings);
    s.ledger.finish(t + 10_000 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::PinReleasedAsGet]);
    assert_eq!(s.findings[0].refs, 2);
    assert!(s.findings[0].bio.is_some());
}

#[test]
fn a_failed_map_releases_its_unnamed_bio_and_balances() {
    // Pinning faults halfway: bio_map_user_iov releases the pages it
    // pinned (its bio's release inside the call) and returns -EFAULT.
    let mut s = stream_with_bios();
    s.bio_event(BioPhase::FillBegin, 10, 0, 0);
    s.acquire(Site::PinUserPagesFast, 10, F.pin, &[folio(1), folio(2)]);
    s.bio_event(BioPhase::Release, 10, BIO_A, PINNED);
    s.unpin_by(10, folio(1));
    s.unpin_by(10, folio(2));
    // -EFAULT, and no bio to name.
    s.bio_event_with(BioPhase::FillEnd, 10, 0, 0, -14);
    let t = s.ts;
    s.ledger.tick(t + 10_000 * MS, &mut s.findings);
    s.ledger.finish(t + 10_000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert_eq!(s.ledger.tracked_bios(), 0);
    assert_eq!(s.ledger.outstanding(Kind::Pin), 0);
    // A later acquire on the thread is nobody's bio.
    s.pin(10, &[folio(3)]);
    assert_eq!(s.ledger.tracked_bios(), 0);
}

#[test]
fn a_failed_map_that_keeps_pins_leaks_them_to_their_owner() {
    // The error path forgets to release what it pinned.
    let mut s = stream_with_bios();
    s.bio_event(BioPhase::FillBegin, 10, 0, 0);
    s.acquire(Site::PinUserPagesFast, 10, F.pin, &[folio(1)]);
    s.bio_event(BioPhase::FillEnd, 10, 0, 0);
    let t = s.ts;
    s.ledger.finish(t + 10_000 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAtEnd]);
    assert_eq!(s.findings[0].tgid, 10);
}

#[test]
fn get_references_of_a_mapped_bio_are_released_by_it() {
    // 6.1: bio_map_user_iov takes FOLL_GET references (iov_iter_get_pages2).
    let mut s = Stream::new(LedgerConfig::default());
    s.ledger.flags = FollFlags::UP_TO_6_2;
    let get = FollFlags::UP_TO_6_2.get;
    s.bio_event(BioPhase::FillBegin, 10, 0, 0);
    s.acquire(Site::GetUserPagesFast, 10, get, &[folio(1), folio(2)]);
    s.bio_event(BioPhase::FillEnd, 10, BIO_B, 0);
    s.bio_event(BioPhase::Endio, 0, BIO_B, 0);
    s.bio_event(BioPhase::Release, 10, BIO_B, 0);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert_eq!(s.ledger.outstanding(Kind::Get), 0);
    assert_eq!(s.ledger.tracked_bios(), 0);
}

/// The kernel books' stream of a fill: its records, the pins in a book.
fn kernel_fill(s: &mut Stream, tgid: u32, bio: u64) -> pintrace_common::Book {
    s.bio_event(BioPhase::FillBegin, tgid, bio, 0);
    let fill_ns = s.ts;
    s.bio_event(BioPhase::FillEnd, tgid, bio, 0);
    pintrace_common::Book {
        refs: 1,
        acquired_ns: fill_ns,
        tgid,
        stack_id: 3,
        site: Site::PinUserPagesFast as u16,
        fill_ns,
        ..Default::default()
    }
}

fn stream_with_kernel_books() -> Stream {
    let mut s = Stream::new(LedgerConfig {
        kernel_books: true,
        ..LedgerConfig::default()
    });
    s.ledger.flags.bio_page_pinned = PINNED;
    s
}

#[test]
fn a_kernel_booked_pin_held_after_its_bio_completed_is_one_leak_naming_the_bio() {
    let mut s = stream_with_kernel_books();
    let book = kernel_fill(&mut s, 10, BIO_A);
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    let done = s.ts;
    s.ledger
        .set_kernel_books([(folio(1), book)], done + 1000 * MS);
    s.ledger.tick(done + 1000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "within the grace period");
    // A snapshot read within the grace period cannot tell, however late
    // the judgement.
    s.ledger.tick(done + 2500 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    s.ledger
        .set_kernel_books([(folio(1), book)], done + 2500 * MS);
    s.ledger.tick(done + 2500 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAfterBio]);
    let f = &s.findings[0];
    assert_eq!((f.folio, f.refs, f.tgid), (folio(1), 1, 10));
    assert_eq!(f.bio.map(|b| b.sector), Some(2048));
    // Reported once: not again at the end.
    s.ledger
        .set_kernel_books([(folio(1), book)], done + 3000 * MS);
    s.ledger.finish(done + 3000 * MS, &mut s.findings);
    assert_eq!(s.findings.len(), 1, "{:?}", s.findings);
}

#[test]
fn a_kernel_booked_bio_is_let_go_once_a_snapshot_holds_none_of_its_pins() {
    let mut s = stream_with_kernel_books();
    let a = kernel_fill(&mut s, 10, BIO_A);
    let b = kernel_fill(&mut s, 10, BIO_B);
    assert_eq!(s.ledger.tracked_bios(), 2, "followed while in flight");
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    s.bio_event(BioPhase::Release, 0, BIO_A, PINNED);
    // B is still in flight; A's pin is still booked.
    s.ledger
        .set_kernel_books([(folio(1), a), (folio(2), b)], s.ts + MS);
    assert_eq!(s.ledger.tracked_bios(), 2);
    // A's unpin closed its book: A goes; B, not done, stays.
    s.ledger.set_kernel_books([(folio(2), b)], s.ts + 2 * MS);
    assert_eq!(s.ledger.tracked_bios(), 1);
    s.bio_event(BioPhase::Endio, 0, BIO_B, 0);
    s.bio_event(BioPhase::Release, 0, BIO_B, PINNED);
    s.ledger.set_kernel_books([], s.ts + MS);
    assert_eq!(s.ledger.tracked_bios(), 0);
    let t = s.ts;
    s.ledger.finish(t + 10_000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
}

#[test]
fn an_escalated_kernel_book_brings_its_pins_to_their_bio() {
    let mut s = stream_with_kernel_books();
    let book = kernel_fill(&mut s, 10, BIO_A);
    s.feed(Event::Booked(crate::stream::events::Booked {
        ts_ns: s.ts,
        folio: folio(1),
        refs: 1,
        acquired_ns: book.acquired_ns,
        tgid: 10,
        stack_id: 3,
        site: Site::PinUserPagesFast,
        longterm: false,
        exact: true,
        comm: Comm::default(),
        fill_ns: book.fill_ns,
    }));
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    let done = s.ts;
    s.ledger.set_kernel_books([], done + 2500 * MS);
    s.ledger.tick(done + 2500 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAfterBio]);
    assert_eq!(s.findings[0].folio, folio(1));
}

#[test]
fn a_kernel_book_of_pins_from_no_followed_fill_is_no_bio_leak() {
    let mut s = stream_with_kernel_books();
    let mut book = kernel_fill(&mut s, 10, BIO_A);
    // Pins of two fills in one book: the probes clear its fill.
    book.fill_ns = 0;
    s.bio_event(BioPhase::Endio, 0, BIO_A, 0);
    let done = s.ts;
    s.ledger
        .set_kernel_books([(folio(1), book)], done + 2500 * MS);
    s.ledger.tick(done + 2500 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    s.ledger.finish(done + 2500 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAtEnd]);
}

#[test]
fn a_bio_known_by_its_completion_record_names_the_booked_pins_it_left() {
    // Where bios pin, the kernel books send one record per bio: its
    // completion, with its fill's start.
    let mut s = stream_with_kernel_books();
    let fill_ns = s.ts + MS;
    let book = pintrace_common::Book {
        refs: 2,
        acquired_ns: fill_ns,
        tgid: 10,
        stack_id: 3,
        site: Site::PinUserPagesFast as u16,
        fill_ns,
        ..Default::default()
    };
    s.ts += 2 * MS;
    let done = s.ts;
    s.feed(Event::Bio(Bio {
        phase: BioPhase::Done,
        ts_ns: done,
        tgid: 10,
        tid: 10,
        bio: BIO_A,
        sector: 4096,
        bytes: 8192,
        major: 259,
        minor: 0,
        opf: 0,
        flags: 0,
        status: 0,
        fill_ns,
    }));
    assert_eq!(s.ledger.tally.bios.completed, 1);
    // Another bio of the same thread, done with: let go at the snapshot.
    s.feed(Event::Bio(Bio {
        fill_ns: fill_ns + MS,
        ..Bio {
            phase: BioPhase::Done,
            ts_ns: done,
            tgid: 10,
            tid: 10,
            bio: BIO_B,
            sector: 0,
            bytes: 4096,
            major: 259,
            minor: 0,
            opf: 0,
            flags: 0,
            status: 0,
            fill_ns: 0,
        }
    }));
    s.ledger
        .set_kernel_books([(folio(1), book)], done + 2500 * MS);
    assert_eq!(s.ledger.tracked_bios(), 1);
    s.ledger.tick(done + 2500 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAfterBio]);
    let f = &s.findings[0];
    assert_eq!((f.folio, f.refs), (folio(1), 2));
    assert_eq!(f.bio.map(|b| (b.major, b.sector)), Some((259, 4096)));
}
