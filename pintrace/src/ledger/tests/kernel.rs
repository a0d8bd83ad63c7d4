//! The kernel books in the ledger: snapshots judged as its own holders,
//! escalated folios handed over, and what the books remember of a folio
//! they closed.

use super::*;
use crate::stream::events::{Booked, BooksMark};
use pintrace_common::{Book, BOOK_ESCALATED, BOOK_EXACT};

fn book(tgid: u32, refs: i64, acquired_ns: u64) -> Book {
    Book {
        refs,
        acquired_ns,
        tgid,
        stack_id: 3,
        site: Site::PinUserPagesFast as u16,
        flags: BOOK_EXACT,
        comm: *b"engine\0\0\0\0\0\0\0\0\0\0",
        ..Book::default()
    }
}

fn booked(s: &Stream, folio: u64, b: &Book) -> Event {
    Event::Booked(Booked {
        ts_ns: s.ts,
        folio,
        refs: b.refs as u64,
        acquired_ns: b.acquired_ns,
        tgid: b.tgid,
        stack_id: b.stack_id,
        site: Site::PinUserPagesFast,
        longterm: false,
        exact: true,
        comm: Comm(b.comm),
        fill_ns: b.fill_ns,
    })
}

#[test]
fn kernel_holders_are_judged_like_the_ledgers_own_and_reported_once() {
    let mut s = Stream::new(LedgerConfig::default());
    let escalated = Book {
        flags: BOOK_ESCALATED,
        ..book(10, 1, s.ts)
    };
    s.ledger.set_kernel_books(
        [
            (folio(1), book(10, 2, s.ts)),
            (folio(2), escalated),
            (folio(3), book(11, 0, s.ts)),
        ],
        s.ts,
    );
    // Escalated books are the ledger's own; empty ones hold nothing.
    assert_eq!(s.ledger.outstanding(Kind::Pin), 2);
    assert_eq!(s.ledger.outstanding_of(10)[&Kind::Pin], 2);
    assert_eq!(s.ledger.pinned_folios_of(10), vec![folio(1)]);
    // Its owner exits: a leak once the grace period is over, reported once.
    s.feed(Event::Exit {
        tgid: 10,
        ts_ns: s.ts,
    });
    let grace = LedgerConfig::default().exit_grace_ns;
    // Judged as of the snapshot: one read at the exit cannot tell whether
    // the pins outlived the grace period.
    s.ledger.tick(s.ts + grace, &mut s.findings);
    assert_eq!(s.kinds(), vec![]);
    s.ledger
        .set_kernel_books([(folio(1), book(10, 2, s.ts))], s.ts + grace);
    s.ledger.tick(s.ts + grace, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakOwnerExited]);
    assert_eq!((s.findings[0].folio, s.findings[0].refs), (folio(1), 2));
    s.ledger
        .set_kernel_books([(folio(1), book(10, 2, s.ts))], s.ts + 2 * grace);
    s.ledger.finish(s.ts + 2 * grace, &mut s.findings);
    assert_eq!(s.findings.len(), 1, "{:?}", s.findings);
}

#[test]
fn an_escalated_book_joins_the_ledger_once_and_its_records_balance_it() {
    let mut s = Stream::new(LedgerConfig::default());
    let b = book(10, 2, s.ts);
    s.ledger.set_kernel_books([(folio(1), b)], s.ts);
    // Two CPUs sent the same book: one holder, out of the snapshot.
    s.feed(booked(&s, folio(1), &b));
    s.feed(booked(&s, folio(1), &b));
    assert_eq!(s.ledger.outstanding(Kind::Pin), 2);
    assert_eq!(s.ledger.kernel_booked(), 0);
    // A second process pins it (a record), then all three are unpinned.
    s.pin(11, &[folio(1)]);
    for _ in 0..3 {
        s.unpin(folio(1), 1, 3 * 1024 + 1, false);
    }
    s.ledger.finish(s.ts, &mut s.findings);
    assert_eq!(s.findings, vec![]);
    assert_eq!(s.ledger.tally.released.get(&Kind::Pin), Some(&3));
    // The next unpin is one too many: the books know every pin went.
    s.unpin(folio(1), 1, 1, false);
    assert_eq!(s.kinds(), vec![FindingKind::DoubleUnpin]);
}

#[test]
fn an_unpin_of_a_folio_the_kernel_books_closed_is_a_double_unpin() {
    let mut s = Stream::new(LedgerConfig::default());
    s.release_marked(77, 77, folio(1), 1, 1, false, BooksMark::ClosedExact);
    s.release_marked(77, 77, folio(2), 1, 1, false, BooksMark::None);
    assert_eq!(
        s.kinds(),
        vec![FindingKind::DoubleUnpin, FindingKind::UnpinWithoutPin]
    );
}

#[test]
fn a_kernel_book_whose_pins_left_with_put_page_is_named_and_dropped() {
    let mut s = Stream::new(LedgerConfig::default());
    s.ledger
        .set_kernel_books([(folio(1), book(10, 1, s.ts))], s.ts);
    let read = s.ts + MS;
    assert_eq!(s.ledger.audit_candidates(read), vec![folio(1)]);
    // 1023: the pin's 1024 lost one reference to put_page.
    s.ledger.audit(folio(1), 1023, false, read, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::PinReleasedAsGet]);
    assert_eq!(s.ledger.take_kernel_drops(), vec![folio(1)]);
    // A snapshot read before the agent dropped it still has it: not again.
    s.ledger
        .set_kernel_books([(folio(1), book(10, 1, s.ts))], s.ts);
    assert_eq!(s.ledger.audit_candidates(read), Vec::<u64>::new());
    s.ledger.audit(folio(1), 1023, false, read, &mut s.findings);
    s.ledger.finish(read, &mut s.findings);
    assert_eq!(s.findings.len(), 1);
}

#[test]
fn a_double_unpin_of_a_page_the_ledger_knew_from_an_old_get_holder_is_still_one() {
    // A page an exited process held with FOLL_GET is reused; its new pin
    // and first unpin balance in the kernel books, unseen; the second
    // unpin arrives with the books' mark on a folio the ledger has books
    // for (the stale FOLL_GET holder's).
    let mut s = Stream::new(LedgerConfig::default());
    s.acquire(
        Site::GetUserPagesFast,
        10,
        F.get,
        &[with_evidence(folio(9), true, true)],
    );
    s.ts += MS;
    s.feed(Event::Exit {
        tgid: 10,
        ts_ns: s.ts,
    });
    s.release_marked(11, 11, folio(9), 1, 1025, false, BooksMark::ClosedExact);
    s.ledger.finish(s.ts, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::DoubleUnpin]);
}
