//! Reading the kernel books (the default; see `pintrace_common::books`)
//! into the pipeline: at each tick the per-CPU tally becomes
//! [`Counted`] events (what changed since the last reading), the balanced
//! releases and pin lifetimes their totals, and the open books a snapshot
//! the ledger judges. Pure: the map contents come in as values.

use crate::{
    ledger::Finding,
    stream::{events::Counted, events::Event, pipeline::Pipeline},
};
use pintrace_common::{
    lifetime_bucket_floor, Book, Site, TallyCounts, TallyKey, BOOK_LONGTERM, LIFETIME_BUCKETS,
    TALLY_RELEASED,
};
use rustc_hash::FxHashMap;

/// How often a large snapshot of the books is read: every tick while the
/// books are small, else at most this often (and always before a
/// judgement that needs it: the audit, the end).
pub const LARGE_SNAPSHOT_NS: u64 = 5_000_000_000;
/// Books of at most this many folios are read at every tick.
pub const SMALL_BOOKS: usize = 65_536;

/// What the kernel had counted at the last reading.
#[derive(Debug, Default)]
pub struct BooksReader {
    /// `--books-max`.
    pub max: u32,
    tally: FxHashMap<TallyKey, TallyCounts>,
    lifetimes: Vec<u64>,
    releases: (u64, u64),
    bios: (u64, u64),
    last_snapshot: Option<(u64, usize)>,
    /// Folios in the last snapshot, the largest one and the kernel memory
    /// the books took then.
    pub booked_now: usize,
    pub booked_peak: usize,
    pub memory_peak: u64,
}

/// One reading of the kernel side.
pub struct Reading {
    pub now_ns: u64,
    pub tally: Vec<(TallyKey, TallyCounts)>,
    /// [`pintrace_common::LIFETIMES_MAP`], summed over CPUs.
    pub lifetimes: Vec<u64>,
    /// `Counter::BookedReleases` and `Counter::BookedReleaseRefs`.
    pub releases: (u64, u64),
    /// `Counter::BiosFilled` and `Counter::BiosReleased`.
    pub bios: (u64, u64),
    /// The open books, when read this time.
    pub books: Option<Vec<(u64, Book)>>,
    pub memory: Option<u64>,
}

impl BooksReader {
    pub fn new(max: u32) -> BooksReader {
        BooksReader {
            max,
            ..BooksReader::default()
        }
    }

    /// Whether the books should be read now (see [`LARGE_SNAPSHOT_NS`]).
    pub fn snapshot_due(&self, now_ns: u64, forced: bool) -> bool {
        match self.last_snapshot {
            _ if forced => true,
            None => true,
            Some((_, n)) if n <= SMALL_BOOKS => true,
            Some((t, _)) => now_ns.saturating_sub(t) >= LARGE_SNAPSHOT_NS,
        }
    }

    /// Applies a reading to the pipeline: the counts since the last one,
    /// then the books' snapshot.
    pub fn apply(&mut self, r: Reading, pipeline: &mut Pipeline, found: &mut Vec<Finding>) {
        for (key, now) in r.tally {
            let before = self.tally.insert(key, now).unwrap_or_default();
            if let Some(c) = counted(r.now_ns, &key, &before, &now) {
                pipeline.feed_event(&Event::Counted(c), found);
            }
        }
        let (calls, refs) = r.releases;
        pipeline.ledger.tally.add_booked_releases(
            calls.saturating_sub(self.releases.0),
            refs.saturating_sub(self.releases.1),
        );
        self.releases = r.releases;
        let (filled, released) = r.bios;
        pipeline.ledger.tally.add_booked_bios(
            filled.saturating_sub(self.bios.0),
            released.saturating_sub(self.bios.1),
        );
        self.bios = r.bios;
        self.lifetimes.resize(r.lifetimes.len(), 0);
        for (i, (&now, before)) in r.lifetimes.iter().zip(&mut self.lifetimes).enumerate() {
            let n = now.saturating_sub(*before);
            *before = now;
            if n > 0 {
                let bucket = i as u32 % LIFETIME_BUCKETS;
                pipeline
                    .model
                    .record_lifetimes(lifetime_bucket_floor(bucket), n);
            }
        }
        if let Some(books) = r.books {
            self.booked_now = books.len();
            self.booked_peak = self.booked_peak.max(books.len());
            self.last_snapshot = Some((r.now_ns, books.len()));
            pipeline.ledger.set_kernel_books(books, r.now_ns);
        }
        if let Some(m) = r.memory {
            self.memory_peak = self.memory_peak.max(m);
        }
    }
}

/// What changed for `key` between two readings, as an event.
fn counted(ts_ns: u64, key: &TallyKey, before: &TallyCounts, now: &TallyCounts) -> Option<Counted> {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let c = Counted {
        ts_ns,
        tgid: key.tgid,
        comm: crate::stream::events::Comm(now.comm),
        site: match key.site {
            TALLY_RELEASED => None,
            s => Some(Site::from_u32(s as u32)?),
        },
        longterm: key.flags & BOOK_LONGTERM != 0,
        stack_id: key.stack_id,
        calls: d(now.calls, before.calls),
        pages: d(now.pages, before.pages),
        failed: d(now.failed, before.failed),
        released: d(now.released, before.released),
    };
    (c.calls + c.failed + c.released > 0).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::flags::FollFlags,
        ledger::{Kind, Ledger, LedgerConfig},
    };

    fn key(site: u16, flags: u16) -> TallyKey {
        TallyKey {
            tgid: 42,
            stack_id: 7,
            site,
            flags,
            _reserved: 0,
        }
    }

    fn counts(calls: u64, pages: u64, released: u64) -> TallyCounts {
        TallyCounts {
            calls,
            pages,
            released,
            comm: *b"fio\0\0\0\0\0\0\0\0\0\0\0\0\0",
            ..TallyCounts::default()
        }
    }

    fn reading(
        now_ns: u64,
        tally: Vec<(TallyKey, TallyCounts)>,
        books: Vec<(u64, Book)>,
    ) -> Reading {
        Reading {
            now_ns,
            tally,
            lifetimes: vec![0; 2 * LIFETIME_BUCKETS as usize],
            releases: (0, 0),
            bios: (0, 0),
            books: Some(books),
            memory: None,
        }
    }

    #[test]
    fn each_reading_adds_only_what_changed_since_the_last() {
        let mut p = Pipeline::new(Ledger::new(FollFlags::FROM_6_3, LedgerConfig::default()));
        let mut r = BooksReader::default();
        let mut found = Vec::new();
        let pin = key(Site::PinUserPagesFast as u16, 0);
        let released = key(TALLY_RELEASED, 0);
        r.apply(
            reading(1, vec![(pin, counts(3, 5, 0))], vec![]),
            &mut p,
            &mut found,
        );
        r.apply(
            reading(
                2,
                vec![(pin, counts(4, 9, 0)), (released, counts(0, 0, 6))],
                vec![],
            ),
            &mut p,
            &mut found,
        );
        let t = &p.ledger.tally;
        assert_eq!((t.kind(Kind::Pin).calls, t.kind(Kind::Pin).pages), (4, 9));
        assert_eq!(t.released.get(&Kind::Pin), Some(&6));
        let proc = t.process(42).expect("the process is tallied");
        assert_eq!(proc.comm.as_str(), "fio");
        assert_eq!(proc.released.get(&Kind::Pin), Some(&6));
        assert_eq!(proc.by_site["pin_user_pages_fast"].pages, 9);
        assert!(found.is_empty());
    }

    #[test]
    fn the_snapshot_is_the_ledgers_holders_and_leaks_at_the_end() {
        let mut p = Pipeline::new(Ledger::new(FollFlags::FROM_6_3, LedgerConfig::default()));
        let mut r = BooksReader::default();
        let mut found = Vec::new();
        let book = Book {
            refs: 2,
            acquired_ns: 10,
            tgid: 42,
            stack_id: 7,
            site: Site::PinUserPagesFast as u16,
            flags: BOOK_LONGTERM,
            ..Book::default()
        };
        r.apply(
            reading(20, vec![], vec![(0x1000, book)]),
            &mut p,
            &mut found,
        );
        assert_eq!(p.ledger.outstanding(Kind::LongtermPin), 2);
        assert_eq!(p.ledger.kernel_booked(), 1);
        p.finish(30, &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].folio, 0x1000);
        assert_eq!(found[0].refs, 2);
        assert_eq!(found[0].kind, crate::ledger::FindingKind::LongtermHeldAtEnd);
        // A later snapshot of the same book does not report it again.
        let mut again = Vec::new();
        r.apply(
            reading(40, vec![], vec![(0x1000, book)]),
            &mut p,
            &mut again,
        );
        p.finish(50, &mut again);
        assert!(again.is_empty(), "{again:?}");
    }
}
