//! The ledger: pure bookkeeping over the event stream. No I/O, no clock, no
//! kernel: it is fed [`Event`]s (and the time, through [`Ledger::tick`]) and
//! answers who holds which folio by which kind of reference, and what went
//! wrong.
//!
//! Design: the ledger is the one place that decides findings. By default
//! it is fed every acquire, release and bio as an event. With the kernel
//! books (the default) the probes keep the simple books in the
//! kernel (`kernel.rs`: a folio pinned by one process with one kind,
//! balanced there without a record) and the ledger judges a snapshot of
//! them; everything else reaches it as events: the folios the probes
//! escalate (shared, or unpinned in a way their book did not cover),
//! FOLL_GET references and exits. The probes only describe what
//! happened (an acquire with its folios, a `gup_put_folio` with the folio's
//! refcount just before); every record they could not deliver is counted,
//! so a lossy run is known to be lossy and its findings are marked
//! uncertain rather than stated as fact. Its own books cost, measured with
//! `cargo bench -p pintrace --bench pipeline` on one core of the 2-core
//! development machine, beside another job: 21 M records/s through the
//! ledger alone (12.6 M with decoding and the live model), 132 bytes per
//! tracked folio (an 88-byte entry of open books and a 16-byte map slot; a
//! folio remembered only as released costs the slot). The books are one
//! folio table (`table.rs`): a pin, an unpin and the release that closes a
//! folio's books cost one hash lookup each.
//!
//! What is certain, and reported as such:
//! - **mismatch, unpin below the bias**: a FOLL_PIN release of `refs` from a
//!   small folio whose refcount was below `refs * 1024`: the folio did not hold
//!   those pins (an unpin of a FOLL_GET page, or a double unpin). Named after
//!   what the ledger saw of that folio during the run.
//! - **leak**: a pin taken during the run and not released when the run ends;
//!   a pin still held a grace period after its owner exited; a non-long-term
//!   pin older than `leak_age`; a reference still held a grace period after
//!   the bio it was taken for completed.
//! - **mismatch, bio released as FOLL_GET**: a bio whose fill pinned its pages
//!   released by `__bio_release_pages` without BIO_PAGE_PINNED (put_page).
//!
//! Bios: the acquires a thread makes inside `bio_iov_iter_get_pages` are the
//! bio's (the probes mark both ends of the call), so each holder knows its
//! bio; `bio_endio` starts the bio's grace period and `__bio_release_pages`
//! releases its FOLL_GET references (put_page, otherwise invisible) and
//! points the unpins that follow on that thread at the bio's own holders.
//!
//! Folios first seen in a release were pinned before tracing began: they are
//! "unknown" and never produce a finding. FOLL_GET references are released
//! with `put_page`, which is inline and invisible: GET holders are kept only
//! to explain a mismatch, never reported as leaks.

mod audit;
mod bio;
mod finding;
mod kernel;
mod table;
mod tally;

use bio::BioBooks;
pub use bio::BioInfo;
use finding::{leak, mismatch, Evidence};
pub use finding::{Finding, FindingKind};
pub use kernel::holder_of;
use kernel::KernelBooks;
use table::{FolioTable, Found};
pub use tally::{BioCounts, Completions, Counts, Kind, ProcessTally, Releases, StackCounts, Tally};

use crate::{
    kernel::flags::FollFlags,
    stream::events::{Acquire, BooksMark, Comm, Event, Folios, Release},
};
use rustc_hash::FxHashMap;
use serde::Serialize;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// A folio's holders.
type Holders = SmallVec<[Holder; 1]>;

/// How long the ledger remembers a fully released folio.
pub const RELEASED_MEMORY_NS: u64 = 60_000_000_000;

/// How long a mismatch known from the books alone waits for an acquire that
/// would explain it (see `Ledger::suspects`).
pub const SUSPECT_NS: u64 = 1_000_000_000;

/// Small folios: each pin adds this to the refcount.
pub const GUP_PIN_COUNTING_BIAS: i64 = 1024;

#[derive(Clone, Copy, Debug)]
pub struct LedgerConfig {
    /// Non-long-term pins older than this are leaks (`--leak-age`).
    pub leak_age_ns: Option<u64>,
    /// How long after its owner exited a pin may still be released.
    pub exit_grace_ns: u64,
    /// How long after its bio completed a reference may still be released.
    pub bio_grace_ns: u64,
    /// The probes keep books of their own (`Ledger::set_kernel_books`):
    /// every bio is followed, for the booked pins it may hold.
    pub kernel_books: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            leak_age_ns: None,
            exit_grace_ns: 5_000_000_000,
            bio_grace_ns: 2_000_000_000,
            kernel_books: false,
        }
    }
}

/// One holder of references on a folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub kind: Kind,
    pub refs: u64,
    pub tgid: u32,
    pub comm: Comm,
    pub stack_id: i32,
    pub acquired_ns: u64,
    /// Already reported as a leak (reported once).
    #[serde(skip)]
    pub reported: bool,
    /// The ledger's number for the bio these references were taken for
    /// (0: none seen).
    #[serde(skip)]
    pub bio: u64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct FolioBooks {
    /// Nearly always one holder: kept inline, no allocation per folio.
    holders: Holders,
    /// A pin on this folio was released during the run.
    released_any: bool,
    /// Every pin on this folio is in the books: an acquire during the run
    /// saw it holding no pin besides its own (refcount evidence; small
    /// folios only). An unpin the books cannot match is then certainly wrong,
    /// whatever the refcount says at the release.
    exact: bool,
}

/// References released from one holder: who held them and since when. The
/// ledger notes these only when asked ([`Ledger::note_lifetimes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Lifetime {
    pub kind: Kind,
    pub refs: u64,
    pub tgid: u32,
    pub stack_id: i32,
    pub acquired_ns: u64,
    pub released_ns: u64,
}

impl Lifetime {
    pub fn ns(&self) -> u64 {
        self.released_ns.saturating_sub(self.acquired_ns)
    }
}

/// Correlates an acquire with its folio batches.
#[derive(Clone, Copy, Debug)]
struct Pending {
    kind: Kind,
    tgid: u32,
    comm: Comm,
    stack_id: i32,
    ts_ns: u64,
    remaining: u32,
    /// The bio being filled by the acquiring thread (0: none).
    bio: u64,
}

pub struct Ledger {
    flags: FollFlags,
    config: LedgerConfig,
    /// Open books and release marks, by folio address. A folio whose last
    /// known pin was released is remembered for [`RELEASED_MEMORY_NS`]
    /// (when, and whether the books were exact): a further unpin then is a
    /// double unpin.
    folios: FolioTable,
    pending: FxHashMap<(u32, u64), Pending>,
    exited: FxHashMap<u32, u64>,
    /// Mismatches known from the books alone, held for [`SUSPECT_NS`] with
    /// the releasing thread: an acquire by that thread arriving meanwhile may
    /// mean GUP dropped a grab of its own inside the call (dropped then:
    /// a missed finding rather than a false one).
    suspects: Vec<(u32, Finding)>,
    pub tally: Tally,
    /// Folio batches that matched no acquire (their acquire record was lost).
    pub orphan_batches: u64,
    /// Releases of folios never seen acquired: pinned before tracing began.
    pub unknown_releases: u64,
    /// Releases matched to their holders, when noted (drained by the caller).
    lifetimes: Option<Vec<Lifetime>>,
    /// Bios with references outstanding, by the ledger's number for them.
    bios: FxHashMap<u64, BioBooks>,
    /// The live bio at each kernel address.
    bio_at: FxHashMap<u64, u64>,
    /// Threads inside `bio_iov_iter_get_pages`, and the bio they fill.
    filling: FxHashMap<u32, u64>,
    /// With the kernel books: each followed bio by its fill's (tgid,
    /// start), which the books of the pins it took carry.
    bio_of_fill: FxHashMap<(u32, u64), u64>,
    /// Threads inside `__bio_release_pages`, and the bio they release.
    releasing: FxHashMap<u32, u64>,
    next_bio: u64,
    /// The kernel books' last snapshot (the default).
    kernel: KernelBooks,
}

impl Ledger {
    pub fn new(flags: FollFlags, config: LedgerConfig) -> Ledger {
        Ledger {
            flags,
            config,
            folios: FolioTable::default(),
            pending: FxHashMap::default(),
            exited: FxHashMap::default(),
            suspects: Vec::new(),
            tally: Tally::new(flags),
            orphan_batches: 0,
            unknown_releases: 0,
            lifetimes: None,
            bios: FxHashMap::default(),
            bio_at: FxHashMap::default(),
            filling: FxHashMap::default(),
            bio_of_fill: FxHashMap::default(),
            releasing: FxHashMap::default(),
            next_bio: 0,
            kernel: KernelBooks::default(),
        }
    }

    /// From now on, note every release matched to a holder as a
    /// [`Lifetime`]; the caller takes them with [`Ledger::take_lifetimes`].
    pub fn note_lifetimes(&mut self) {
        self.lifetimes.get_or_insert_with(Vec::new);
    }

    /// Moves the lifetimes noted so far to the end of `out`.
    pub fn take_lifetimes(&mut self, out: &mut Vec<Lifetime>) {
        if let Some(v) = self.lifetimes.as_mut() {
            out.append(v);
        }
    }

    /// Hands each lifetime noted so far to `f`, and forgets it.
    pub fn drain_lifetimes(&mut self, f: impl FnMut(Lifetime)) {
        if let Some(v) = self.lifetimes.as_mut() {
            v.drain(..).for_each(f);
        }
    }

    /// Every holder with references outstanding (the kernel books' too).
    pub fn holders(&self) -> impl Iterator<Item = &Holder> {
        self.holders_by_folio().map(|(_, h)| h)
    }

    /// Every holder with references outstanding, with its folio.
    pub fn holders_by_folio(&self) -> impl Iterator<Item = (u64, &Holder)> {
        self.folios
            .iter()
            .flat_map(|(folio, b)| b.holders.iter().map(move |h| (folio, h)))
            .chain(self.kernel.iter())
    }

    /// Applies one event; returns the findings it proves, if any.
    pub fn apply(&mut self, event: &Event, findings: &mut Vec<Finding>) {
        self.tally.apply(event);
        match event {
            Event::Acquire(a) => self.acquire(a),
            Event::Folios(f) => self.folios(f),
            Event::Release(r) => self.release(r, findings),
            Event::Exit { tgid, ts_ns } => {
                self.exited.insert(*tgid, *ts_ns);
            }
            Event::RqComplete(_) | Event::Counted(_) => {}
            Event::Bio(b) => self.bio(b, findings),
            Event::Booked(b) => self.booked(b),
        }
    }

    fn acquire(&mut self, a: &Acquire) {
        // An unpin by the thread of a GUP call returning after it: GUP
        // dropping a grab of its own inside the call (gup_fast_fallback puts
        // what it must unshare or recheck, then pins on the slow path, maybe
        // another folio). Not a mismatch the books can prove.
        if !self.suspects.is_empty() {
            self.suspects.retain(|(tid, _)| *tid != a.tid);
        }
        // A tgid seen acquiring after its exit was reused by a new process.
        if self.exited.get(&a.tgid).is_some_and(|&t| a.ts_ns > t) {
            self.exited.remove(&a.tgid);
        }
        if a.ret <= 0 || a.folio_records == 0 {
            return;
        }
        self.pending.insert(
            (a.tid, a.ts_ns),
            Pending {
                kind: Kind::of(a, &self.flags),
                tgid: a.tgid,
                comm: a.comm,
                stack_id: a.stack_id,
                ts_ns: a.ts_ns,
                remaining: a.folio_records,
                bio: self.filling.get(&a.tid).copied().unwrap_or(0),
            },
        );
    }

    fn folios(&mut self, f: &Folios) {
        let key = (f.tid, f.ts_ns);
        let Some(p) = self.pending.get_mut(&key) else {
            self.orphan_batches += 1;
            return;
        };
        p.remaining = p.remaining.saturating_sub(1);
        let p = *p;
        if p.remaining == 0 {
            self.pending.remove(&key);
        }
        for (folio, evidence) in f.entries().filter(|&(x, _)| x != 0) {
            let books = self.folios.open(folio);
            prune_stale_gets(&mut books.holders, &self.exited);
            let pins_before: u64 = books
                .holders
                .iter()
                .filter(|h| h.kind != Kind::Get)
                .map(|h| h.refs)
                .sum();
            if pins_before == 0 {
                books.exact = match p.kind {
                    Kind::Get => evidence.below_1_pin,
                    Kind::Pin | Kind::LongtermPin => evidence.below_2_pins,
                };
            }
            match books.holders.iter_mut().find(|h| {
                h.kind == p.kind && h.tgid == p.tgid && h.stack_id == p.stack_id && h.bio == p.bio
            }) {
                Some(h) => h.refs += 1,
                None => books.holders.push(Holder {
                    kind: p.kind,
                    refs: 1,
                    tgid: p.tgid,
                    comm: p.comm,
                    stack_id: p.stack_id,
                    acquired_ns: p.ts_ns,
                    reported: false,
                    bio: p.bio,
                }),
            }
            if let Some(bio) = (p.bio != 0).then(|| self.bios.get_mut(&p.bio)).flatten() {
                bio.refs += 1;
                if !bio.folios.contains(&folio) {
                    bio.folios.push(folio);
                }
            }
        }
    }

    fn release(&mut self, r: &Release, findings: &mut Vec<Finding>) {
        let is_pin = r.gup_flags & self.flags.pin != 0;
        let refs = r.refs.max(0) as u64;
        let found = self.folios.find(r.folio);
        if !is_pin {
            // A FOLL_GET reference dropped through gup_put_folio (GUP's own
            // error paths): balance a GET holder if there is one.
            if let Some(books) = found.map(Found::into_books) {
                let noted = self.lifetimes.as_mut();
                let mut from_bios = SmallVec::new();
                take(
                    &mut books.holders,
                    refs,
                    |k| k == Kind::Get,
                    r.ts_ns,
                    noted,
                    Some(&mut self.tally),
                    |h| (h.bio != 0) as u8,
                    &mut from_bios,
                );
                self.settle_bios(&from_bios);
            }
            return;
        }
        // Certain evidence: a small folio must hold `refs * bias` references
        // for this unpin to be right.
        let below_bias = !r.large && (r.refcount as i64) < refs as i64 * GUP_PIN_COUNTING_BIAS;
        let Some(mut found) = found else {
            // The kernel books remember what they closed, as the ledger
            // remembers what it did.
            let released_exact = self
                .folios
                .released(r.folio)
                .map(|(_, exact)| exact)
                .or(match r.books {
                    BooksMark::None => None,
                    BooksMark::Closed => Some(false),
                    BooksMark::ClosedExact => Some(true),
                })
                .map(|exact| exact && !r.large);
            if below_bias {
                let kind = match released_exact {
                    Some(_) => FindingKind::DoubleUnpin,
                    None => FindingKind::UnpinWithoutPin,
                };
                findings.push(mismatch(kind, r, refs, None, Evidence::Refcount));
            } else if released_exact == Some(true) {
                let f = mismatch(FindingKind::DoubleUnpin, r, refs, None, Evidence::Books);
                self.suspects.push((r.tid, f));
            } else {
                self.unknown_releases += 1;
            }
            return;
        };
        // Inside __bio_release_pages the unpins are the bio's own; elsewhere
        // holders without a bio go first, then those of released bios. At
        // each rank live owners' holders go before those of exited owners
        // (reported leaks among them), and the releasing process's own
        // before others': a folio can be pinned by several processes at once
        // (the zero page, a page cache page of a shared binary or file, a
        // freed leaker's page reused), and an unpin taken from another's
        // holder leaves that one's pin open after its release. A completion
        // in an interrupt runs in whichever task it interrupted, so its tgid
        // alone cannot tell; an exited owner's pin it takes by mistake would
        // leave the live owner's open, and a leak once reported would take
        // every later release of its folio.
        let scope = match self.releasing.get(&r.tid) {
            Some(&id)
                if self
                    .bios
                    .get(&id)
                    .is_some_and(|b| b.folios.contains(&r.folio)) =>
            {
                id
            }
            Some(_) => {
                self.releasing.remove(&r.tid);
                0
            }
            None => 0,
        };
        let bios = &self.bios;
        let exited = &self.exited;
        let rank = |h: &Holder| -> u8 {
            let by_bio = match h.bio {
                0 => 2,
                b if b == scope => 0,
                b if bios.get(&b).is_some_and(|x| x.released) => 1,
                _ => 3,
            };
            let gone = h.reported || exited.get(&h.tgid).is_some_and(|&t| t <= r.ts_ns);
            by_bio * 4 + u8::from(gone) * 2 + u8::from(h.tgid != r.tgid)
        };
        let noted = self.lifetimes.as_mut();
        let mut from_bios = SmallVec::new();
        let books = found.books();
        let missing = take(
            &mut books.holders,
            refs,
            |k| k != Kind::Get,
            r.ts_ns,
            noted,
            Some(&mut self.tally),
            rank,
            &mut from_bios,
        );
        books.released_any |= refs > missing;
        if missing == 0 {
            if books.holders.is_empty() {
                let exact = books.exact;
                found.close(r.ts_ns, exact);
            }
            self.settle_bios(&from_bios);
            return;
        }
        self.settle_bios(&from_bios);
        let Some(books) = self.folios.get_mut(r.folio) else {
            return;
        };
        let evidence = if below_bias {
            Evidence::Refcount
        } else if books.exact && !r.large {
            Evidence::Books
        } else {
            // More unpins than the pins seen, but the refcount allows them:
            // pins taken before tracing began. Unknown, not a finding.
            self.unknown_releases += 1;
            return;
        };
        prune_stale_gets(&mut books.holders, &self.exited);
        let get_holder = books.holders.iter().find(|h| h.kind == Kind::Get).copied();
        let kind = match get_holder {
            Some(_) => FindingKind::UnpinOfGetPage,
            // The kernel books' mark counts as the release the ledger's own
            // books of the folio (a stale FOLL_GET holder's) never saw.
            None if books.released_any || r.books != BooksMark::None => FindingKind::DoubleUnpin,
            None => FindingKind::UnpinWithoutPin,
        };
        let f = mismatch(kind, r, missing, get_holder, evidence);
        match evidence {
            Evidence::Refcount => findings.push(f),
            Evidence::Books => self.suspects.push((r.tid, f)),
        }
    }

    /// Time passes: reports pins older than `leak_age` and pins whose owner
    /// exited more than the grace period ago.
    pub fn tick(&mut self, now_ns: u64, findings: &mut Vec<Finding>) {
        // Suspects no acquire explained within SUSPECT_NS are findings.
        self.suspects.retain(|(_, f)| {
            let due = now_ns.saturating_sub(f.at_ns) >= SUSPECT_NS;
            if due {
                findings.push(f.clone());
            }
            !due
        });
        self.judge_bios(now_ns, findings);
        // Exits are remembered for as long as anything can depend on them.
        let keep_exits = RELEASED_MEMORY_NS.max(self.config.exit_grace_ns);
        self.exited
            .retain(|_, &mut t| now_ns.saturating_sub(t) < keep_exits);
        let config = self.config;
        let exited = &self.exited;
        let bios = &self.bios;
        // One pass over the books: release marks older than
        // RELEASED_MEMORY_NS are forgotten; FOLL_GET references are dropped
        // by put_page, unseen, so their holders go when their owner has
        // exited or after RELEASED_MEMORY_NS; pins are judged for leaks.
        let mark_kept = |t: u64| now_ns.saturating_sub(t) < RELEASED_MEMORY_NS;
        self.folios.retain(mark_kept, |folio, books| {
            books.holders.retain(|h| {
                h.kind != Kind::Get
                    || !(exited.contains_key(&h.tgid)
                        || now_ns.saturating_sub(h.acquired_ns) >= RELEASED_MEMORY_NS)
            });
            for h in books
                .holders
                .iter_mut()
                .filter(|h| h.kind != Kind::Get && !h.reported)
            {
                let Some(kind) = aged_leak(h, now_ns, exited, &config) else {
                    continue;
                };
                h.reported = true;
                findings.push(leak(kind, folio, h, now_ns, bios));
            }
            !books.holders.is_empty()
        });
        self.judge_kernel(now_ns, findings);
    }

    /// Reports the held suspects now (see `suspects`): for a caller who
    /// knows no acquire is in flight, e.g. `check` once its workload exited.
    pub fn flush_suspects(&mut self, findings: &mut Vec<Finding>) {
        findings.extend(self.suspects.drain(..).map(|(_, f)| f));
    }

    /// The end of the run: every pin still held is reported (long-term pins
    /// of live owners separately).
    pub fn finish(&mut self, now_ns: u64, findings: &mut Vec<Finding>) {
        self.tick(now_ns, findings);
        self.flush_suspects(findings);
        let bios = &self.bios;
        let mut folios: Vec<_> = self.folios.iter_mut().collect();
        folios.sort_by_key(|(f, _)| *f);
        for (folio, books) in folios {
            for h in books
                .holders
                .iter_mut()
                .filter(|h| h.kind != Kind::Get && !h.reported)
            {
                let kind = if h.kind == Kind::LongtermPin {
                    FindingKind::LongtermHeldAtEnd
                } else {
                    FindingKind::LeakAtEnd
                };
                h.reported = true;
                findings.push(leak(kind, folio, h, now_ns, bios));
            }
        }
        self.finish_kernel(now_ns, findings);
    }

    /// Pins (references) the ledger sees outstanding, by kind.
    pub fn outstanding(&self, kind: Kind) -> u64 {
        self.holders()
            .filter(|h| h.kind == kind)
            .map(|h| h.refs)
            .sum()
    }

    /// References `tgid` took that the ledger sees outstanding, by kind.
    pub fn outstanding_of(&self, tgid: u32) -> BTreeMap<Kind, u64> {
        let mut out = BTreeMap::new();
        for ((kind, _), refs) in self.held_by_stack(tgid) {
            *out.entry(kind).or_default() += refs;
        }
        out
    }

    /// References `tgid` holds, by kind and acquiring stack (FOLL_GET ones
    /// stay here: their release is invisible).
    pub fn held_by_stack(&self, tgid: u32) -> BTreeMap<(Kind, i32), u64> {
        let mut out = BTreeMap::new();
        for h in self.holders().filter(|h| h.tgid == tgid) {
            *out.entry((h.kind, h.stack_id)).or_default() += h.refs;
        }
        out
    }

    /// Reports every pin `tgid` still holds as a leak now (its owner has
    /// exited and had its grace time): `check` calls this when a scenario's
    /// workload is over, instead of waiting for [`Ledger::tick`]. Long-term
    /// pins are leaks too: the owner is gone. Each is reported once.
    pub fn report_leaks_of(&mut self, tgid: u32, now_ns: u64, findings: &mut Vec<Finding>) {
        let bios = &self.bios;
        let mut folios: Vec<_> = self.folios.iter_mut().collect();
        folios.sort_by_key(|(f, _)| *f);
        for (folio, books) in folios {
            for h in books
                .holders
                .iter_mut()
                .filter(|h| h.tgid == tgid && h.kind != Kind::Get && !h.reported)
            {
                h.reported = true;
                findings.push(leak(FindingKind::LeakOwnerExited, folio, h, now_ns, bios));
            }
        }
        self.report_kernel_leaks_of(tgid, now_ns, findings);
    }

    /// Folios with books open (memory is proportional to this).
    pub fn tracked_folios(&self) -> usize {
        self.folios.open_len() + self.folios.marked_len()
    }
}

/// The leak a holder is by now, if any: its owner gone a grace period, or
/// (a non-long-term pin) older than `--leak-age`.
fn aged_leak(
    h: &Holder,
    now_ns: u64,
    exited: &FxHashMap<u32, u64>,
    config: &LedgerConfig,
) -> Option<FindingKind> {
    let owner_gone = exited
        .get(&h.tgid)
        .is_some_and(|&t| now_ns.saturating_sub(t) >= config.exit_grace_ns);
    let too_old = h.kind == Kind::Pin
        && config
            .leak_age_ns
            .is_some_and(|age| now_ns.saturating_sub(h.acquired_ns) >= age);
    if owner_gone {
        Some(FindingKind::LeakOwnerExited)
    } else if too_old {
        Some(FindingKind::LeakOld)
    } else {
        None
    }
}

/// Drops FOLL_GET holders whose owner exited: their references were put
/// (unseen) long ago, and the folio may since belong to someone else.
fn prune_stale_gets(holders: &mut Holders, exited: &FxHashMap<u32, u64>) {
    holders.retain(|h| h.kind != Kind::Get || !exited.contains_key(&h.tgid));
}

/// Takes `refs` references from the holders matching `which`, by `rank`
/// then oldest first (noting in `from_bios` what came from which bio)
/// (noting each as a [`Lifetime`] when asked, crediting the release to its
/// taker in the tally when given); returns how many could not be taken.
#[allow(clippy::too_many_arguments)]
fn take(
    holders: &mut Holders,
    mut refs: u64,
    which: impl Fn(Kind) -> bool,
    now_ns: u64,
    mut noted: Option<&mut Vec<Lifetime>>,
    mut tally: Option<&mut Tally>,
    rank: impl Fn(&Holder) -> u8,
    from_bios: &mut SmallVec<[(u64, u64); 2]>,
) -> u64 {
    if holders.len() > 1 {
        holders.sort_by_key(|h| (rank(h), h.acquired_ns));
    }
    for h in holders.iter_mut().filter(|h| which(h.kind)) {
        let n = refs.min(h.refs);
        h.refs -= n;
        refs -= n;
        if h.bio != 0 && n > 0 {
            from_bios.push((h.bio, n));
        }
        if let Some(t) = tally.as_mut().filter(|_| n > 0) {
            t.credit_release(h.tgid, h.kind, n);
        }
        if let Some(v) = noted.as_mut().filter(|_| n > 0) {
            v.push(Lifetime {
                kind: h.kind,
                refs: n,
                tgid: h.tgid,
                stack_id: h.stack_id,
                acquired_ns: h.acquired_ns,
                released_ns: now_ns,
            });
        }
        if refs == 0 {
            break;
        }
    }
    holders.retain(|h| h.refs > 0);
    refs
}

#[cfg(test)]
mod tests;
