//! The ledger on synthetic event streams.

use super::*;
use crate::events::{Acquire, Comm, Event, Folios, Release};
use pintrace_common::{Site, FOLIOS_PER_RECORD};

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

    fn unpin(&mut self, folio: u64, refs: i32, refcount: i32, large: bool) {
        self.ts += MS;
        self.feed(Event::Release(Release {
            site: Site::GupPutFolio,
            ts_ns: self.ts,
            tgid: 77,
            tid: 77,
            folio,
            refs,
            gup_flags: F.pin,
            refcount,
            stack_id: 2,
            large,
            comm: Comm(*b"irq\0\0\0\0\0\0\0\0\0\0\0\0\0"),
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
