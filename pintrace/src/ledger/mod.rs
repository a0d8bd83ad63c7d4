//! The ledger: pure bookkeeping over the event stream. No I/O, no clock, no
//! kernel: it is fed [`Event`]s (and the time, through [`Ledger::tick`]) and
//! answers who holds which folio by which kind of reference, and what went
//! wrong.
//!
//! Design: the authoritative books live here, in user space, keyed by folio
//! address. The probes only describe what happened (an acquire with its
//! folios, a `gup_put_folio` with the folio's refcount just before); every
//! record they could not deliver is counted, so a lossy run is known to be
//! lossy and its findings are marked uncertain rather than stated as fact.
//!
//! What is certain, and reported as such:
//! - **mismatch, unpin below the bias**: a FOLL_PIN release of `refs` from a
//!   small folio whose refcount was below `refs * 1024`: the folio did not hold
//!   those pins (an unpin of a FOLL_GET page, or a double unpin). Named after
//!   what the ledger saw of that folio during the run.
//! - **leak**: a pin taken during the run and not released when the run ends;
//!   a pin still held a grace period after its owner exited; a non-long-term
//!   pin older than `leak_age`.
//!
//! Folios first seen in a release were pinned before tracing began: they are
//! "unknown" and never produce a finding. FOLL_GET references are released
//! with `put_page`, which is inline and invisible: GET holders are kept only
//! to explain a mismatch, never reported as leaks.

mod tally;

pub use tally::{Completions, Counts, Kind, ProcessTally, Releases, Tally};

use crate::{
    events::{Acquire, Comm, Event, Folios, Release},
    flags::FollFlags,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// How long the ledger remembers a fully released folio.
pub const RELEASED_MEMORY_NS: u64 = 60_000_000_000;

/// Small folios: each pin adds this to the refcount.
pub const GUP_PIN_COUNTING_BIAS: i64 = 1024;

#[derive(Clone, Copy, Debug)]
pub struct LedgerConfig {
    /// Non-long-term pins older than this are leaks (`--leak-age`).
    pub leak_age_ns: Option<u64>,
    /// How long after its owner exited a pin may still be released.
    pub exit_grace_ns: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            leak_age_ns: None,
            exit_grace_ns: 5_000_000_000,
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
}

#[derive(Clone, Debug, Default)]
struct FolioBooks {
    holders: Vec<Holder>,
    /// Pins released from this folio during the run.
    released_pins: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A pin not released at the end of the run.
    LeakAtEnd,
    /// A long-term pin still held at the end of the run (owner alive).
    LongtermHeldAtEnd,
    /// A pin older than `--leak-age`.
    LeakOld,
    /// A pin still held after its owner exited.
    LeakOwnerExited,
    /// Unpin of a folio that held only FOLL_GET references.
    UnpinOfGetPage,
    /// More unpins than pins: a double unpin.
    DoubleUnpin,
    /// Unpin of a folio with no pin to release, none seen during the run.
    UnpinWithoutPin,
}

impl FindingKind {
    pub fn is_mismatch(self) -> bool {
        matches!(
            self,
            FindingKind::UnpinOfGetPage | FindingKind::DoubleUnpin | FindingKind::UnpinWithoutPin
        )
    }

    /// Whether it fails a check (long-term pins held by a live owner do not).
    pub fn is_failure(self) -> bool {
        !matches!(self, FindingKind::LongtermHeldAtEnd)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub folio: u64,
    pub refs: u64,
    /// Who took the references (for leaks) or released them (for mismatches).
    pub tgid: u32,
    pub comm: Comm,
    pub stack_id: i32,
    /// For mismatches: the holder the ledger knew of, if any.
    pub holder: Option<Holder>,
    pub at_ns: u64,
    pub detail: String,
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
}

pub struct Ledger {
    flags: FollFlags,
    config: LedgerConfig,
    folios: HashMap<u64, FolioBooks>,
    pending: HashMap<(u32, u64), Pending>,
    exited: HashMap<u32, u64>,
    /// Folios whose last known pin was released, and when: a further unpin
    /// within [`RELEASED_MEMORY_NS`] is a double unpin.
    released: HashMap<u64, u64>,
    pub tally: Tally,
    /// Folio batches that matched no acquire (their acquire record was lost).
    pub orphan_batches: u64,
    /// Releases of folios never seen acquired: pinned before tracing began.
    pub unknown_releases: u64,
}

impl Ledger {
    pub fn new(flags: FollFlags, config: LedgerConfig) -> Ledger {
        Ledger {
            flags,
            config,
            folios: HashMap::new(),
            pending: HashMap::new(),
            exited: HashMap::new(),
            released: HashMap::new(),
            tally: Tally::new(flags),
            orphan_batches: 0,
            unknown_releases: 0,
        }
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
            Event::RqComplete(_) => {}
        }
    }

    fn acquire(&mut self, a: &Acquire) {
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
        for folio in f.iter().filter(|&x| x != 0) {
            let books = self.folios.entry(folio).or_default();
            match books
                .holders
                .iter_mut()
                .find(|h| h.kind == p.kind && h.tgid == p.tgid && h.stack_id == p.stack_id)
            {
                Some(h) => h.refs += 1,
                None => books.holders.push(Holder {
                    kind: p.kind,
                    refs: 1,
                    tgid: p.tgid,
                    comm: p.comm,
                    stack_id: p.stack_id,
                    acquired_ns: p.ts_ns,
                    reported: false,
                }),
            }
        }
    }

    fn release(&mut self, r: &Release, findings: &mut Vec<Finding>) {
        let is_pin = r.gup_flags & self.flags.pin != 0;
        let refs = r.refs.max(0) as u64;
        let books = self.folios.get_mut(&r.folio);
        if !is_pin {
            // A FOLL_GET reference dropped through gup_put_folio (GUP's own
            // error paths): balance a GET holder if there is one.
            if let Some(books) = books {
                let before = held_by(&books.holders);
                take(&mut books.holders, refs, |k| k == Kind::Get);
                credit(&mut self.tally, before, &books.holders);
            }
            return;
        }
        // Certain evidence: a small folio must hold `refs * bias` references
        // for this unpin to be right.
        let below_bias = !r.large && (r.refcount as i64) < refs as i64 * GUP_PIN_COUNTING_BIAS;
        let Some(books) = books else {
            if !below_bias {
                self.unknown_releases += 1;
            } else if self.released.contains_key(&r.folio) {
                findings.push(mismatch(FindingKind::DoubleUnpin, r, refs, None));
            } else {
                findings.push(mismatch(FindingKind::UnpinWithoutPin, r, refs, None));
            }
            return;
        };
        let before = held_by(&books.holders);
        let missing = take(&mut books.holders, refs, |k| k != Kind::Get);
        credit(&mut self.tally, before, &books.holders);
        books.released_pins += refs - missing;
        if missing == 0 {
            if books.holders.is_empty() {
                self.folios.remove(&r.folio);
                self.released.insert(r.folio, r.ts_ns);
            }
            return;
        }
        if !below_bias {
            // More unpins than the pins seen, but the refcount allows them:
            // pins taken before tracing began. Unknown, not a finding.
            self.unknown_releases += 1;
            return;
        }
        let get_holder = books.holders.iter().find(|h| h.kind == Kind::Get).copied();
        let kind = match get_holder {
            Some(_) => FindingKind::UnpinOfGetPage,
            None if books.released_pins > 0 => FindingKind::DoubleUnpin,
            None => FindingKind::UnpinWithoutPin,
        };
        findings.push(mismatch(kind, r, missing, get_holder));
    }

    /// Time passes: reports pins older than `leak_age` and pins whose owner
    /// exited more than the grace period ago.
    pub fn tick(&mut self, now_ns: u64, findings: &mut Vec<Finding>) {
        self.released
            .retain(|_, &mut t| now_ns.saturating_sub(t) < RELEASED_MEMORY_NS);
        let config = self.config;
        let exited = &self.exited;
        for (&folio, books) in self.folios.iter_mut() {
            for h in books
                .holders
                .iter_mut()
                .filter(|h| h.kind != Kind::Get && !h.reported)
            {
                let owner_gone = exited
                    .get(&h.tgid)
                    .is_some_and(|&t| now_ns.saturating_sub(t) >= config.exit_grace_ns);
                let too_old = h.kind == Kind::Pin
                    && config
                        .leak_age_ns
                        .is_some_and(|age| now_ns.saturating_sub(h.acquired_ns) >= age);
                let kind = if owner_gone {
                    FindingKind::LeakOwnerExited
                } else if too_old {
                    FindingKind::LeakOld
                } else {
                    continue;
                };
                h.reported = true;
                findings.push(leak(kind, folio, h, now_ns));
            }
        }
    }

    /// The end of the run: every pin still held is reported (long-term pins
    /// of live owners separately).
    pub fn finish(&mut self, now_ns: u64, findings: &mut Vec<Finding>) {
        self.tick(now_ns, findings);
        let mut folios: Vec<_> = self.folios.iter_mut().collect();
        folios.sort_by_key(|(f, _)| **f);
        for (&folio, books) in folios {
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
                findings.push(leak(kind, folio, h, now_ns));
            }
        }
    }

    /// Pins (references) the ledger sees outstanding, by kind.
    pub fn outstanding(&self, kind: Kind) -> u64 {
        self.folios
            .values()
            .flat_map(|b| b.holders.iter())
            .filter(|h| h.kind == kind)
            .map(|h| h.refs)
            .sum()
    }

    /// References `tgid` took that the ledger sees outstanding, by kind.
    pub fn outstanding_of(&self, tgid: u32) -> BTreeMap<Kind, u64> {
        let mut out = BTreeMap::new();
        for h in self
            .folios
            .values()
            .flat_map(|b| b.holders.iter())
            .filter(|h| h.tgid == tgid)
        {
            *out.entry(h.kind).or_default() += h.refs;
        }
        out
    }

    /// References `tgid` holds, by kind and acquiring stack (FOLL_GET ones
    /// stay here: their release is invisible).
    pub fn held_by_stack(&self, tgid: u32) -> BTreeMap<(Kind, i32), u64> {
        let mut out = BTreeMap::new();
        for h in self
            .folios
            .values()
            .flat_map(|b| b.holders.iter())
            .filter(|h| h.tgid == tgid)
        {
            *out.entry((h.kind, h.stack_id)).or_default() += h.refs;
        }
        out
    }

    /// Reports every pin `tgid` still holds as a leak now (its owner has
    /// exited and had its grace time): `check` calls this when a scenario's
    /// workload is over, instead of waiting for [`Ledger::tick`]. Long-term
    /// pins are leaks too: the owner is gone. Each is reported once.
    pub fn report_leaks_of(&mut self, tgid: u32, now_ns: u64, findings: &mut Vec<Finding>) {
        let mut folios: Vec<_> = self.folios.iter_mut().collect();
        folios.sort_by_key(|(f, _)| **f);
        for (&folio, books) in folios {
            for h in books
                .holders
                .iter_mut()
                .filter(|h| h.tgid == tgid && h.kind != Kind::Get && !h.reported)
            {
                h.reported = true;
                findings.push(leak(FindingKind::LeakOwnerExited, folio, h, now_ns));
            }
        }
    }

    /// Folios with books open (memory is proportional to this).
    pub fn tracked_folios(&self) -> usize {
        self.folios.len() + self.released.len()
    }
}

/// References per (taker, kind) of a folio's holders.
fn held_by(holders: &[Holder]) -> Vec<(u32, Kind, u64)> {
    holders.iter().map(|h| (h.tgid, h.kind, h.refs)).collect()
}

/// Credits to their takers the references that went between `before` and
/// the holders now.
fn credit(tally: &mut Tally, before: Vec<(u32, Kind, u64)>, after: &[Holder]) {
    let mut gone: BTreeMap<(u32, Kind), i64> = BTreeMap::new();
    for (tgid, kind, refs) in before {
        *gone.entry((tgid, kind)).or_default() += refs as i64;
    }
    for h in after {
        *gone.entry((h.tgid, h.kind)).or_default() -= h.refs as i64;
    }
    for ((tgid, kind), n) in gone {
        if n > 0 {
            tally.credit_release(tgid, kind, n as u64);
        }
    }
}

/// Takes `refs` references from the holders matching `which`, oldest first;
/// returns how many could not be taken.
fn take(holders: &mut Vec<Holder>, mut refs: u64, which: impl Fn(Kind) -> bool) -> u64 {
    holders.sort_by_key(|h| h.acquired_ns);
    for h in holders.iter_mut().filter(|h| which(h.kind)) {
        let n = refs.min(h.refs);
        h.refs -= n;
        refs -= n;
        if refs == 0 {
            break;
        }
    }
    holders.retain(|h| h.refs > 0);
    refs
}

fn mismatch(kind: FindingKind, r: &Release, refs: u64, holder: Option<Holder>) -> Finding {
    let detail = match kind {
        FindingKind::UnpinOfGetPage => format!(
            "unpin of {refs} ref(s) from a folio held with FOLL_GET (refcount {} < {} x {GUP_PIN_COUNTING_BIAS}): refcount underflow",
            r.refcount, refs
        ),
        FindingKind::DoubleUnpin => format!(
            "unpin of {refs} ref(s) after all pins seen were released (refcount {} < {} x {GUP_PIN_COUNTING_BIAS}): double unpin",
            r.refcount, refs
        ),
        _ => format!(
            "unpin of {refs} ref(s) from a folio holding no pin (refcount {} < {} x {GUP_PIN_COUNTING_BIAS})",
            r.refcount, refs
        ),
    };
    Finding {
        kind,
        folio: r.folio,
        refs,
        tgid: r.tgid,
        comm: r.comm,
        stack_id: r.stack_id,
        holder,
        at_ns: r.ts_ns,
        detail,
    }
}

fn leak(kind: FindingKind, folio: u64, h: &Holder, now_ns: u64) -> Finding {
    let age_ms = now_ns.saturating_sub(h.acquired_ns) / 1_000_000;
    let what = match kind {
        FindingKind::LeakOwnerExited => "held after its owner exited",
        FindingKind::LeakOld => "older than --leak-age",
        FindingKind::LongtermHeldAtEnd => "long-term pin still held at the end of the run",
        _ => "not released by the end of the run",
    };
    Finding {
        kind,
        folio,
        refs: h.refs,
        tgid: h.tgid,
        comm: h.comm,
        stack_id: h.stack_id,
        holder: Some(*h),
        at_ns: now_ns,
        detail: format!(
            "{} {} ref(s) {what} (age {age_ms} ms)",
            h.kind.label(),
            h.refs
        ),
    }
}

#[cfg(test)]
mod tests;
