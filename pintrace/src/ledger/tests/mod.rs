//! The ledger on synthetic event streams.

use super::*;
use crate::stream::events::{Acquire, Bio, BioPhase, Comm, Event, Folios, Release};
use pintrace_common::{Site, FOLIOS_PER_RECORD};

mod bio;
mod kernel;

const F: FollFlags = FollFlags::FROM_6_3;
const MS: u64 = 1_000_000;

struct Stream {
    ledger: Ledger,
    findings: Vec<Finding>,
    ts: u64,
}

impl Stream {
    fn new(config: LedgerConfig) -> Stream {
        Stream {
            ledger: Ledger::new(F, config),
            findings: Vec::new(),
            ts: 1000 * MS,
        }
    }

    fn feed(&mut self, e: Event) {
        self.ledger.apply(&e, &mut self.findings);
    }

    /// One acquire call by `tgid` grabbing the given folios (one per page).
    fn acquire(&mut self, site: Site, tgid: u32, flags: u32, folios: &[u64]) {
        self.ts += MS;
        let records = folios.len().div_ceil(FOLIOS_PER_RECORD) as u32;
        self.feed(Event::Acquire(Acquire {
            site,
            ts_ns: self.ts,
            tgid,
            tid: tgid,
            start: 0x7f00_0000_0000,
            pages_array: 0xffff_8880_0000_0000,
            ret: folios.len() as i64,
            nr_pages: folios.len() as i32,
            gup_flags: flags,
            stack_id: 1,
            folio_records: records,
            comm: Comm(*b"engine\0\0\0\0\0\0\0\0\0\0"),
            counted: false,
        }));
        for (i, chunk) in folios.chunks(FOLIOS_PER_RECORD).enumerate() {
            let mut arr = [0u64; FOLIOS_PER_RECORD];
            arr[..chunk.len()].copy_from_slice(chunk);
            self.feed(Event::Folios(Folios {
                site,
                ts_ns: self.ts,
                tgid,
                tid: tgid,
                first: (i * FOLIOS_PER_RECORD) as u32,
                count: chunk.len() as u32,
                folios: arr,
            }));
        }
    }

    fn pin(&mut self, tgid: u32, folios: &[u64]) {
        self.acquire(Site::PinUserPagesFast, tgid, F.pin, folios)
    }

    /// One pin's unpin of a small folio by thread `tid` of `tgid`.
    fn unpin_in(&mut self, tgid: u32, tid: u32, folio: u64) {
        self.release(tgid, tid, folio, 1, 2049, false);
    }

    /// An unpin from an interrupt of an unrelated task (tgid 77).
    fn unpin(&mut self, folio: u64, refs: i32, refcount: i32, large: bool) {
        self.release(77, 77, folio, refs, refcount, large);
    }

    fn release(&mut self, tgid: u32, tid: u32, folio: u64, refs: i32, refcount: i32, large: bool) {
        self.release_marked(tgid, tid, folio, refs, refcount, large, Default::default());
    }

    /// [`Stream::release`], with what the kernel books remember of the folio.
    #[allow(clippy::too_many_arguments)]
    fn release_marked(
        &mut self,
        tgid: u32,
        tid: u32,
        folio: u64,
        refs: i32,
        refcount: i32,
        large: bool,
        books: crate::stream::events::BooksMark,
    ) {
        self.ts += MS;
        self.feed(Event::Release(Release {
            site: Site::GupPutFolio,
            ts_ns: self.ts,
            tgid,
            tid,
            folio,
            refs,
            gup_flags: F.pin,
            refcount,
            stack_id: 2,
            large,
            comm: Comm(*b"irq\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            books,
        }));
    }

    fn kinds(&self) -> Vec<FindingKind> {
        self.findings.iter().map(|f| f.kind).collect()
    }
}

fn folio(i: u64) -> u64 {
    0xffff_ea00_0000_0000 + i * 64
}

#[test]
fn balanced_pins_leave_nothing() {
    let mut s = Stream::new(LedgerConfig::default());
    let folios: Vec<u64> = (0..2048).map(folio).collect();
    s.pin(10, &folios);
    assert_eq!(s.ledger.outstanding(Kind::Pin), 2048);
    for &f in &folios {
        s.unpin(f, 1, 1025, false);
    }
    s.ledger.finish(s.ts, &mut s.findings);
    assert_eq!(s.findings, vec![]);
    assert_eq!(s.ledger.outstanding(Kind::Pin), 0);
    // Released folios are remembered for a while (double unpins), then forgotten.
    assert_eq!(s.ledger.tracked_folios(), 2048);
    s.ledger.tick(s.ts + RELEASED_MEMORY_NS, &mut s.findings);
    assert_eq!(s.ledger.tracked_folios(), 0);
    assert_eq!(s.ledger.tally.releases.pin_refs, 2048);
}

#[test]
fn an_unpin_in_a_process_releases_its_own_pin_of_a_shared_folio() {
    // Two processes pin one folio (a shared page); the later one unpins
    // from its own context, exits, and must not be left holding the pin.
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[folio(5)]);
    s.pin(20, &[folio(5)]);
    s.unpin_in(20, 20, folio(5));
    let held: Vec<(u32, u64)> = s.ledger.holders().map(|h| (h.tgid, h.refs)).collect();
    assert_eq!(held, [(10, 1)]);
}

#[test]
fn a_release_from_an_interrupt_goes_to_the_live_owner_not_a_reported_leak() {
    // Process 10 leaks a pin of folio 5 and exits: reported. The folio is
    // pinned again by 20; its completion unpins in an interrupt of some
    // third task (tgid 30). 20's pin is released; 10's stays its leak.
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[folio(5)]);
    s.feed(Event::Exit {
        tgid: 10,
        ts_ns: s.ts,
    });
    s.ts += 10_000 * MS;
    s.ledger.tick(s.ts, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakOwnerExited]);
    s.pin(20, &[folio(5)]);
    s.unpin_in(30, 31, folio(5));
    let held: Vec<(u32, u64)> = s.ledger.holders().map(|h| (h.tgid, h.refs)).collect();
    assert_eq!(held, [(10, 1)]);
    s.feed(Event::Exit {
        tgid: 20,
        ts_ns: s.ts,
    });
    s.ts += 10_000 * MS;
    s.ledger.tick(s.ts, &mut s.findings);
    assert_eq!(
        s.kinds(),
        vec![FindingKind::LeakOwnerExited],
        "no new leak for 20"
    );
}

#[test]
fn a_large_folio_counts_each_page() {
    let mut s = Stream::new(LedgerConfig::default());
    // 512 pages of one 2 MiB folio: one folio, 512 refs.
    s.pin(10, &[folio(0); 512]);
    assert_eq!(s.ledger.tracked_folios(), 1);
    // Released in one gup_put_folio call; large folios are not biased.
    s.unpin(folio(0), 512, 513, true);
    s.ledger.finish(s.ts, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
}

#[test]
fn pin_never_released_is_a_leak_at_the_end() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[folio(1), folio(2)]);
    s.unpin(folio(1), 1, 1025, false);
    s.ledger.finish(s.ts, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAtEnd]);
    let f = &s.findings[0];
    assert_eq!((f.folio, f.refs, f.tgid, f.stack_id), (folio(2), 1, 10, 1));
    assert!(f.kind.is_failure());
}

#[test]
fn longterm_pins_are_reported_apart_and_do_not_fail() {
    let mut s = Stream::new(LedgerConfig {
        leak_age_ns: Some(MS),
        ..Default::default()
    });
    s.acquire(Site::PinUserPagesFast, 10, F.pin | F.longterm, &[folio(3)]);
    s.ledger.tick(s.ts + 1000 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "long-term pins never age out");
    s.ledger.finish(s.ts + 1000 * MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LongtermHeldAtEnd]);
    assert!(!s.findings[0].kind.is_failure());
}

#[test]
fn old_pins_and_pins_of_exited_owners_are_leaks_once() {
    let mut s = Stream::new(LedgerConfig {
        leak_age_ns: Some(100 * MS),
        exit_grace_ns: 50 * MS,
        ..LedgerConfig::default()
    });
    s.pin(10, &[folio(4)]);
    s.acquire(Site::PinUserPagesFast, 11, F.pin | F.longterm, &[folio(5)]);
    let t0 = s.ts;
    s.ledger.tick(t0 + 10 * MS, &mut s.findings);
    assert!(s.findings.is_empty());
    s.feed(Event::Exit {
        tgid: 11,
        ts_ns: t0 + 20 * MS,
    });
    s.ledger.tick(t0 + 30 * MS, &mut s.findings);
    assert!(s.findings.is_empty(), "within the exit grace period");
    s.ledger.tick(t0 + 200 * MS, &mut s.findings);
    let mut kinds = s.kinds();
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        kinds,
        vec![FindingKind::LeakOld, FindingKind::LeakOwnerExited]
    );
    s.ledger.tick(t0 + 300 * MS, &mut s.findings);
    s.ledger.finish(t0 + 300 * MS, &mut s.findings);
    assert_eq!(s.findings.len(), 2, "each holder is reported once");
}

#[test]
fn unpin_of_a_get_page_is_a_mismatch() {
    let mut s = Stream::new(LedgerConfig::default());
    s.acquire(Site::GetUserPagesFast, 10, F.get, &[folio(6)]);
    // A FOLL_GET page holds 1 (+ mapping) refs: far below the pin bias.
    s.unpin(folio(6), 1, 2, false);
    assert_eq!(s.kinds(), vec![FindingKind::UnpinOfGetPage]);
    let f = &s.findings[0];
    assert_eq!(f.holder.unwrap().kind, Kind::Get);
    assert_eq!(f.tgid, 77, "the releaser");
    assert!(f.detail.contains("underflow"), "{}", f.detail);
    s.ledger.finish(s.ts, &mut s.findings);
    assert_eq!(s.findings.len(), 1, "GET holders are never leaks");
}

#[test]
fn double_unpin_is_a_mismatch() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[folio(7)]);
    s.unpin(folio(7), 1, 1025, false);
    s.unpin(folio(7), 1, 1, false);
    assert_eq!(s.kinds(), vec![FindingKind::DoubleUnpin]);
}

#[test]
fn pins_from_before_tracing_are_unknown_not_findings() {
    let mut s = Stream::new(LedgerConfig::default());
    // Never seen acquired, refcount consistent with a pin: unknown.
    s.unpin(folio(8), 1, 1025, false);
    // Seen pinned once, but released twice with the refcount allowing it:
    // the other pin predates tracing.
    s.pin(10, &[folio(9)]);
    s.unpin(folio(9), 1, 2049, false);
    s.unpin(folio(9), 1, 1025, false);
    s.ledger.finish(s.ts, &mut s.findings);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
    assert_eq!(s.ledger.unknown_releases, 2);
}

#[test]
fn an_unpin_below_the_bias_is_certain_even_without_history() {
    let mut s = Stream::new(LedgerConfig::default());
    s.unpin(folio(10), 1, 3, false);
    assert_eq!(s.kinds(), vec![FindingKind::UnpinWithoutPin]);
    // Large folios are not biased: no finding from the refcount alone.
    s.unpin(folio(11), 1, 3, true);
    assert_eq!(s.findings.len(), 1);
}

#[test]
fn batches_without_their_acquire_are_counted() {
    let mut s = Stream::new(LedgerConfig::default());
    s.feed(Event::Folios(Folios {
        site: Site::PinUserPagesFast,
        ts_ns: 5,
        tgid: 1,
        tid: 1,
        first: 0,
        count: 1,
        folios: [folio(12); FOLIOS_PER_RECORD],
    }));
    assert_eq!(s.ledger.orphan_batches, 1);
    assert_eq!(s.ledger.tracked_folios(), 0);
}

/// Evidence bits the probe packs into a folio entry (see FolioBatch).
fn with_evidence(f: u64, below_1: bool, below_2: bool) -> u64 {
    f | (below_1 as u64 * pintrace_common::FOLIO_BELOW_1_PIN)
        | (below_2 as u64 * pintrace_common::FOLIO_BELOW_2_PINS)
}

/// An unpin of a folio acquired with FOLL_GET during the run, whose refcount
/// showed no pin then: certain, even when the refcount at the unpin (padded
/// by extra references) would allow it.
#[test]
fn unpin_of_a_get_page_seen_pinless_is_certain_despite_padding() {
    let mut s = Stream::new(LedgerConfig::default());
    s.acquire(
        Site::GetUserPagesFast,
        10,
        F.get,
        &[with_evidence(folio(1), true, true)],
    );
    s.unpin(folio(1), 1, 1026, false);
    // Held a moment in case an acquire explains it, then reported.
    assert_eq!(s.kinds(), vec![]);
    s.ledger.tick(s.ts + SUSPECT_NS, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::UnpinOfGetPage]);
    assert!(s.findings[0].detail.contains("held no pin when acquired"));
    assert_eq!(s.ledger.unknown_releases, 0);
}

/// Without that evidence (the folio may hold a pin from before tracing) the
/// same stream is unknown, never a finding.
#[test]
fn unpin_of_a_get_page_without_evidence_is_unknown() {
    let mut s = Stream::new(LedgerConfig::default());
    s.acquire(Site::GetUserPagesFast, 10, F.get, &[folio(1)]);
    s.unpin(folio(1), 1, 2050, false);
    assert_eq!(s.kinds(), vec![]);
    assert_eq!(s.ledger.unknown_releases, 1);
}

#[test]
fn double_unpin_after_an_exact_pin_is_certain_despite_padding() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[with_evidence(folio(2), false, true)]);
    s.unpin(folio(2), 1, 2049, false);
    assert_eq!(s.kinds(), vec![]);
    s.unpin(folio(2), 1, 1025, false);
    s.ledger.finish(s.ts, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::DoubleUnpin]);
}

/// GUP's fast path may grab a folio, drop it (gup_put_folio) and retry on
/// the slow path: the drop comes before the call's acquire record, from the
/// same thread. The acquire that returns the folio explains it.
#[test]
fn an_unpin_inside_the_acquiring_call_is_not_a_mismatch() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[with_evidence(folio(12), false, true)]);
    s.unpin(folio(12), 1, 1025, false);
    // The same process pins it again: its fast path drops its grab first...
    s.ts += MS;
    s.feed(Event::Release(Release {
        site: Site::GupPutFolio,
        ts_ns: s.ts,
        tgid: 10,
        tid: 10,
        folio: folio(12),
        refs: 1,
        gup_flags: F.pin,
        refcount: 1025,
        stack_id: 3,
        large: false,
        comm: Comm(*b"engine\0\0\0\0\0\0\0\0\0\0"),
        books: Default::default(),
    }));
    // ... and pins another folio (it had to break COW on the slow path).
    s.pin(10, &[with_evidence(folio(13), false, true)]);
    s.unpin(folio(13), 1, 1025, false);
    s.ledger.finish(s.ts + SUSPECT_NS, &mut s.findings);
    assert_eq!(s.kinds(), vec![]);
}

/// The evidence bits mean nothing for large folios (pins add 1 there).
#[test]
fn evidence_is_ignored_for_large_folios() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[with_evidence(folio(3), true, true); 4]);
    s.unpin(folio(3), 4, 5, true);
    s.unpin(folio(3), 4, 5, true);
    assert_eq!(s.kinds(), vec![]);
    assert_eq!(s.ledger.unknown_releases, 1);
}

/// A folio that already held a pin when acquired is not exact.
#[test]
fn a_pin_on_a_folio_pinned_before_tracing_is_not_exact() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[with_evidence(folio(4), false, false)]);
    s.unpin(folio(4), 1, 2049, false);
    s.unpin(folio(4), 1, 1025, false);
    assert_eq!(s.kinds(), vec![]);
    assert_eq!(s.ledger.unknown_releases, 1);
}

/// The refcount audit: a small folio pinned during the run whose refcount
/// fell below its pins' worth lost them to put_page.
#[test]
fn audit_names_a_pin_released_with_put_page() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[folio(5), folio(6)]);
    let read = s.ts + MS;
    assert_eq!(s.ledger.audit_candidates(read), vec![folio(5), folio(6)]);
    // folio 5: 1024 - 1 (put_page) after the owner unmapped; folio 6 intact.
    s.ledger.audit(folio(5), 1023, false, read, &mut s.findings);
    s.ledger.audit(folio(6), 1025, false, read, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::PinReleasedAsGet]);
    assert_eq!(s.findings[0].tgid, 10);
    assert_eq!(s.ledger.outstanding(Kind::Pin), 1);
    // The lost pin is not reported again as a leak at the end.
    s.ledger.finish(read, &mut s.findings);
    assert_eq!(
        s.kinds(),
        vec![FindingKind::PinReleasedAsGet, FindingKind::LeakAtEnd]
    );
    assert_eq!(s.findings[1].folio, folio(6));
}

/// Pins taken after the audit read are not judged by it, and large folios
/// (pins in a separate count) are skipped.
#[test]
fn audit_ignores_later_pins_and_large_folios() {
    let mut s = Stream::new(LedgerConfig::default());
    let read = s.ts + MS / 2;
    s.pin(10, &[folio(7)]);
    assert!(s.ledger.audit_candidates(read).is_empty());
    s.ledger.audit(folio(7), 1, false, read, &mut s.findings);
    s.pin(10, &[folio(8); 4]);
    s.ledger
        .audit(folio(8), 2, true, s.ts + MS, &mut s.findings);
    assert_eq!(s.kinds(), vec![]);
}

/// A FOLL_GET holder whose owner exited is forgotten: the page may since
/// belong to someone else, whose double unpin is named as such.
#[test]
fn get_holders_of_exited_owners_do_not_explain_later_mismatches() {
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
    // The page is reused by process 11, pinned, and unpinned twice.
    s.pin(11, &[with_evidence(folio(9), false, true)]);
    s.unpin(folio(9), 1, 1025, false);
    s.unpin(folio(9), 1, 1025, false);
    s.ledger.finish(s.ts, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::DoubleUnpin]);
}

/// FOLL_GET holders never see their release: they are dropped with their
/// owner or after a while, so the books stay bounded.
#[test]
fn get_holders_do_not_accumulate() {
    let mut s = Stream::new(LedgerConfig::default());
    let folios: Vec<u64> = (100..200).map(folio).collect();
    s.acquire(Site::GetUserPagesFast, 10, F.get, &folios);
    assert_eq!(s.ledger.tracked_folios(), 100);
    s.ledger.tick(s.ts + RELEASED_MEMORY_NS, &mut s.findings);
    assert_eq!(s.ledger.tracked_folios(), 0);
    s.acquire(Site::GetUserPagesFast, 12, F.get, &folios);
    s.feed(Event::Exit {
        tgid: 12,
        ts_ns: s.ts,
    });
    s.ledger.tick(s.ts, &mut s.findings);
    assert_eq!(s.ledger.tracked_folios(), 0);
    assert!(s.findings.is_empty());
}

#[test]
fn lifetimes_are_noted_only_when_asked() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[folio(20), folio(21)]);
    let acquired = s.ts;
    s.unpin(folio(20), 1, 1025, false);
    let mut out = Vec::new();
    s.ledger.take_lifetimes(&mut out);
    assert!(out.is_empty(), "off by default");
    s.ledger.note_lifetimes();
    s.unpin(folio(21), 1, 1025, false);
    // A release of a folio never pinned is not a lifetime.
    s.unpin(folio(22), 1, 1025, false);
    s.ledger.take_lifetimes(&mut out);
    assert_eq!(
        out,
        vec![Lifetime {
            kind: Kind::Pin,
            refs: 1,
            tgid: 10,
            stack_id: 1,
            acquired_ns: acquired,
            released_ns: s.ts - MS,
        }]
    );
    assert_eq!(out[0].ns(), 2 * MS);
    s.ledger.take_lifetimes(&mut out);
    assert_eq!(out.len(), 1, "taken once");
}

#[test]
fn holders_lists_what_is_outstanding() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[folio(30), folio(31)]);
    s.acquire(Site::GetUserPagesFast, 11, F.get, &[folio(31)]);
    s.unpin(folio(30), 1, 1025, false);
    let mut held: Vec<(u32, Kind, u64)> = s
        .ledger
        .holders()
        .map(|h| (h.tgid, h.kind, h.refs))
        .collect();
    held.sort();
    assert_eq!(held, vec![(10, Kind::Pin, 1), (11, Kind::Get, 1)]);
}

#[test]
fn releases_are_credited_to_the_taker_and_leaks_reported_per_process() {
    let mut s = Stream::new(LedgerConfig::default());
    s.pin(10, &[folio(1), folio(2), folio(3)]);
    s.pin(11, &[folio(4)]);
    // Released in interrupt context (tgid 77): credited to 10, not 77.
    s.unpin(folio(1), 1, 1025, false);
    s.unpin(folio(2), 1, 1025, false);
    let p = s.ledger.tally.process(10).unwrap();
    assert_eq!(p.released.get(&Kind::Pin), Some(&2));
    assert!(s.ledger.tally.process(77).is_none());
    assert_eq!(s.ledger.outstanding_of(10).get(&Kind::Pin), Some(&1));
    assert_eq!(s.ledger.outstanding_of(11).get(&Kind::Pin), Some(&1));
    assert!(s.ledger.outstanding_of(12).is_empty());
    s.ledger.report_leaks_of(10, s.ts, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakOwnerExited]);
    assert_eq!((s.findings[0].folio, s.findings[0].tgid), (folio(3), 10));
    // Reported once: the end of the run does not repeat it.
    s.findings.clear();
    s.ledger.finish(s.ts, &mut s.findings);
    assert_eq!(s.kinds(), vec![FindingKind::LeakAtEnd]);
    assert_eq!(s.findings[0].tgid, 11);
}

#[test]
fn interleaved_acquires_of_two_threads_match_their_batches() {
    // Two CPUs: each acquire's batches follow it, but the two calls'
    // records interleave in the ring.
    let mut s = Stream::new(LedgerConfig::default());
    let acq = |tgid: u32, ts: u64| {
        Event::Acquire(Acquire {
            site: Site::PinUserPagesFast,
            ts_ns: ts,
            tgid,
            tid: tgid,
            start: 0,
            pages_array: 0,
            ret: 1,
            nr_pages: 1,
            gup_flags: F.pin,
            stack_id: tgid as i32,
            folio_records: 1,
            comm: Comm::default(),
            counted: false,
        })
    };
    let batch = |tgid: u32, ts: u64, f: u64| {
        let mut folios = [0u64; FOLIOS_PER_RECORD];
        folios[0] = f;
        Event::Folios(Folios {
            site: Site::PinUserPagesFast,
            ts_ns: ts,
            tgid,
            tid: tgid,
            first: 0,
            count: 1,
            folios,
        })
    };
    s.feed(acq(1, 100));
    s.feed(acq(2, 100));
    s.feed(batch(2, 100, folio(20)));
    s.feed(batch(1, 100, folio(10)));
    let held: Vec<(u32, i32)> = s.ledger.holders().map(|h| (h.tgid, h.stack_id)).collect();
    assert_eq!(held.len(), 2);
    assert!(held.contains(&(1, 1)) && held.contains(&(2, 2)));
    assert_eq!(s.ledger.orphan_batches, 0);
}

/// The ring buffer keeps the order in which records were reserved, but each
/// CPU stamps its record with its own clock read: an unpin from the
/// completing CPU can carry an earlier time than the acquire it follows.
/// The books go by ring order: balanced, no finding, no negative lifetime,
/// and a later tick does not age the pin from the earlier stamp.
#[test]
fn releases_stamped_before_their_acquire_balance() {
    let mut s = Stream::new(LedgerConfig {
        leak_age_ns: Some(10 * MS),
        ..LedgerConfig::default()
    });
    s.ledger.note_lifetimes();
    s.pin(10, &[folio(40), folio(41)]);
    let acquired = s.ts;
    // Stamped 3 ms before the acquire by the other CPU's clock.
    s.ts -= 4 * MS;
    s.unpin(folio(40), 1, 1025, false);
    s.ts = acquired + 5 * MS;
    s.ledger.tick(s.ts, &mut s.findings);
    assert_eq!(s.kinds(), vec![], "within --leak-age of its own stamp");
    s.unpin(folio(41), 1, 1025, false);
    s.ledger.finish(s.ts + SUSPECT_NS, &mut s.findings);
    assert_eq!(s.kinds(), vec![]);
    let mut out = Vec::new();
    s.ledger.take_lifetimes(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].ns(), 0, "saturates, never wraps");
    assert_eq!(out[1].ns(), 6 * MS);
    assert_eq!(s.ledger.holders().count(), 0);
}

/// A pin released with put_page by an exiting owner (a fuse direct I/O
/// converted half-way, say): audited at the owner's exit, it is reported as
/// `pin_released_as_get`, not as a leak; a real leak beside it still is.
#[test]
fn exited_owners_pins_are_audited_before_they_are_called_leaks() {
    let mut s = Stream::new(LedgerConfig {
        exit_grace_ns: 50 * MS,
        ..LedgerConfig::default()
    });
    s.pin(10, &[folio(1), folio(2)]);
    s.pin(11, &[folio(3)]);
    let t0 = s.ts;
    s.feed(Event::Exit {
        tgid: 10,
        ts_ns: t0 + MS,
    });
    assert!(
        s.ledger.exit_leak_candidates(t0 + 10 * MS).is_empty(),
        "in the grace period"
    );
    let now = t0 + 100 * MS;
    assert_eq!(s.ledger.exit_leak_candidates(now), vec![folio(1), folio(2)]);
    assert_eq!(s.ledger.pinned_folios_of(11), vec![folio(3)]);
    // folio 1 lost its pin's 1024 references to a put_page; folio 2 is
    // still pinned: a leak.
    s.ledger.audit(folio(1), 1, false, now, &mut s.findings);
    s.ledger.audit(folio(2), 1025, false, now, &mut s.findings);
    s.ledger.tick(now, &mut s.findings);
    assert_eq!(
        s.kinds(),
        vec![FindingKind::PinReleasedAsGet, FindingKind::LeakOwnerExited]
    );
    assert_eq!(s.findings[0].folio, folio(1));
    assert_eq!(s.findings[1].folio, folio(2));
    // Reported: no longer candidates.
    assert!(s.ledger.exit_leak_candidates(now + MS).is_empty());
}
