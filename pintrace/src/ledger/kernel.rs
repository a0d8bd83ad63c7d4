//! The kernel books as the ledger sees them (the default; see
//! `pintrace_common::books`). The probes keep each folio's pins while one
//! process of one kind holds them, and the agent hands the ledger a
//! snapshot of them ([`Ledger::set_kernel_books`]) before each judgement.
//! The ledger judges those holders as its own for leaks (at the end, aged,
//! owner exited) and the refcount audit, reports each once across
//! snapshots, and shows them in every view. A folio the probes escalate
//! arrives as an [`Event::Booked`](crate::stream::events::Event::Booked):
//! its holder moves into the ledger's own books, and the records that
//! follow are judged there as in the full event stream.

use super::{finding::leak, Finding, FindingKind, Holder, Kind, Ledger};
use crate::stream::events::{Booked, Comm};
use pintrace_common::{Book, BOOK_ESCALATED, BOOK_LONGTERM};
use rustc_hash::FxHashSet;

/// The last snapshot of the kernel books.
#[derive(Debug, Default)]
pub(super) struct KernelBooks {
    /// Each booked folio's holder, sorted by folio.
    holders: Vec<(u64, Holder)>,
    /// Holders already reported, by (folio, acquired_ns, tgid): once
    /// across snapshots.
    reported: FxHashSet<(u64, u64, u32)>,
    /// Folios whose kernel book the agent should drop: their pins left
    /// without an unpin (the refcount audit), so no unpin will close it.
    drops: Vec<u64>,
    /// Those books, by (folio, acquired_ns, tgid), left out of the
    /// snapshots read before the agent dropped them.
    dropped: FxHashSet<(u64, u64, u32)>,
    /// When the last snapshot was read: its holders are judged as of then
    /// (one read seconds ago may hold pins released since).
    read_ns: u64,
}

impl KernelBooks {
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Holder)> {
        self.holders.iter().map(|(f, h)| (*f, h))
    }

    pub(super) fn len(&self) -> usize {
        self.holders.len()
    }

    fn find_mut(&mut self, folio: u64) -> Option<&mut Holder> {
        let i = self
            .holders
            .binary_search_by_key(&folio, |(f, _)| *f)
            .ok()?;
        Some(&mut self.holders[i].1)
    }

    fn remove(&mut self, folio: u64) {
        if let Ok(i) = self.holders.binary_search_by_key(&folio, |(f, _)| *f) {
            self.holders.remove(i);
        }
    }

    fn report(&mut self, folio: u64, h: &mut Holder) {
        h.reported = true;
        self.reported.insert((folio, h.acquired_ns, h.tgid));
    }

    /// Whether the last snapshot was read at `t` or later.
    pub(super) fn read_since(&self, t: u64) -> bool {
        self.read_ns >= t
    }

    /// Reports the holders of bio `id` not yet reported: their references
    /// and the first of them, of the lowest folio (the books keep no order
    /// of a bio's pages).
    pub(super) fn report_bio(&mut self, id: u64) -> (u64, Option<(Holder, u64)>) {
        let (mut refs, mut first) = (0, None);
        for i in 0..self.holders.len() {
            let (folio, mut h) = self.holders[i];
            if h.bio != id || h.reported || h.refs == 0 {
                continue;
            }
            self.report(folio, &mut h);
            self.holders[i].1 = h;
            refs += h.refs;
            first.get_or_insert((h, folio));
        }
        (refs, first)
    }
}

/// The ledger's holder for a kernel book.
pub fn holder_of(book: &Book) -> Holder {
    Holder {
        kind: if book.flags & BOOK_LONGTERM != 0 {
            Kind::LongtermPin
        } else {
            Kind::Pin
        },
        refs: book.refs.max(0) as u64,
        tgid: book.tgid,
        comm: Comm(book.comm),
        stack_id: book.stack_id,
        acquired_ns: book.acquired_ns,
        reported: false,
        bio: 0,
    }
}

impl Ledger {
    /// The kernel books as read from the probes' map at `read_ns`: every
    /// entry with pins that is not escalated (those are in the ledger's own
    /// books). Replaces the previous snapshot. Bios done with whose pins
    /// it no longer holds are let go.
    pub fn set_kernel_books(&mut self, books: impl IntoIterator<Item = (u64, Book)>, read_ns: u64) {
        let by_fill = &self.bio_of_fill;
        let k = &mut self.kernel;
        k.read_ns = read_ns;
        k.holders.clear();
        k.holders.extend(
            books
                .into_iter()
                .filter(|(_, b)| b.flags & BOOK_ESCALATED == 0 && b.refs > 0)
                .filter(|(f, b)| !k.dropped.contains(&(*f, b.acquired_ns, b.tgid)))
                .map(|(folio, b)| {
                    let mut h = holder_of(&b);
                    h.bio = super::bio::bio_of_fill(by_fill, b.tgid, b.fill_ns);
                    (folio, h)
                }),
        );
        k.holders.sort_unstable_by_key(|(f, _)| *f);
        // A folio can be both here and in the ledger's own books only
        // while its escalation is on its way: the ledger's copy wins.
        let own = &self.folios;
        k.holders.retain(|(f, _)| !own.is_open(*f));
        let keys: FxHashSet<(u64, u64, u32)> = k
            .holders
            .iter()
            .map(|(f, h)| (*f, h.acquired_ns, h.tgid))
            .collect();
        k.reported.retain(|key| keys.contains(key));
        let reported = &k.reported;
        for (f, h) in &mut k.holders {
            h.reported = reported.contains(&(*f, h.acquired_ns, h.tgid));
        }
        // Every pin of a bio is taken before it completes, so a snapshot
        // applied after its completion or release holds its pins if any
        // are still held.
        let held: FxHashSet<u64> = k.holders.iter().map(|(_, h)| h.bio).collect();
        let gone: Vec<u64> = self
            .bios
            .iter()
            .filter(|(id, b)| b.over(read_ns) && !held.contains(id))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.forget_bio(id);
        }
    }

    /// Folios whose kernel book the agent should delete (drained).
    pub fn take_kernel_drops(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.kernel.drops)
    }

    /// Folios booked in the kernel, as of the last snapshot.
    pub fn kernel_booked(&self) -> usize {
        self.kernel.len()
    }

    /// An escalated folio's book: its holder joins the ledger's books
    /// (once, however many CPUs sent it).
    pub(super) fn booked(&mut self, b: &Booked) {
        self.kernel.remove(b.folio);
        let kind = if b.longterm {
            Kind::LongtermPin
        } else {
            Kind::Pin
        };
        let bio = self.fill_bio(b.tgid, b.fill_ns);
        let books = self.folios.open(b.folio);
        if books
            .holders
            .iter()
            .any(|h| h.kind == kind && h.tgid == b.tgid && h.acquired_ns == b.acquired_ns)
        {
            return;
        }
        if books.holders.iter().all(|h| h.kind == Kind::Get) {
            books.exact = b.exact;
        }
        books.holders.push(Holder {
            kind,
            refs: b.refs,
            tgid: b.tgid,
            comm: b.comm,
            stack_id: b.stack_id,
            acquired_ns: b.acquired_ns,
            reported: false,
            bio,
        });
        if bio != 0 {
            self.add_to_bio(bio, b.folio, b.refs);
        }
    }

    /// [`Ledger::tick`]'s judgement of the kernel holders: aged pins and
    /// pins of owners gone a grace period, as of the snapshot's reading.
    pub(super) fn judge_kernel(&mut self, now_ns: u64, findings: &mut Vec<Finding>) {
        let config = self.config;
        let k = &mut self.kernel;
        let as_of = k.read_ns.min(now_ns);
        let mut due = Vec::new();
        for (i, (_, h)) in k.holders.iter().enumerate() {
            if let Some(kind) = (!h.reported)
                .then(|| super::aged_leak(h, as_of, &self.exited, &config))
                .flatten()
            {
                due.push((i, kind));
            }
        }
        self.report_kernel(due, now_ns, findings);
    }

    /// Reports the kernel holders at `due` (index, kind), once each.
    fn report_kernel(
        &mut self,
        due: Vec<(usize, FindingKind)>,
        now_ns: u64,
        findings: &mut Vec<Finding>,
    ) {
        let k = &mut self.kernel;
        for (i, kind) in due {
            let (folio, mut h) = k.holders[i];
            k.report(folio, &mut h);
            k.holders[i].1 = h;
            findings.push(leak(kind, folio, &h, now_ns, &self.bios));
        }
    }

    /// [`Ledger::finish`] for the kernel holders: each pin still held.
    pub(super) fn finish_kernel(&mut self, now_ns: u64, findings: &mut Vec<Finding>) {
        let due = self
            .kernel
            .holders
            .iter()
            .enumerate()
            .filter(|(_, (_, h))| !h.reported)
            .map(|(i, (_, h))| {
                let kind = if h.kind == Kind::LongtermPin {
                    FindingKind::LongtermHeldAtEnd
                } else {
                    FindingKind::LeakAtEnd
                };
                (i, kind)
            })
            .collect();
        self.report_kernel(due, now_ns, findings);
    }

    /// [`Ledger::report_leaks_of`] for the kernel holders.
    pub(super) fn report_kernel_leaks_of(
        &mut self,
        tgid: u32,
        now_ns: u64,
        findings: &mut Vec<Finding>,
    ) {
        let due = self
            .kernel
            .holders
            .iter()
            .enumerate()
            .filter(|(_, (_, h))| h.tgid == tgid && !h.reported)
            .map(|(i, _)| (i, FindingKind::LeakOwnerExited))
            .collect();
        self.report_kernel(due, now_ns, findings);
    }

    /// [`Ledger::audit`] of a folio booked in the kernel: its pins, if
    /// taken before the read, must fit its refcount.
    pub(super) fn audit_kernel(
        &mut self,
        folio: u64,
        refcount: i32,
        read_ns: u64,
        findings: &mut Vec<Finding>,
    ) {
        let k = &mut self.kernel;
        let Some(h) = k.find_mut(folio) else {
            return;
        };
        if h.acquired_ns >= read_ns {
            return;
        }
        let capacity = (refcount.max(0) as i64 / super::GUP_PIN_COUNTING_BIAS) as u64;
        if h.refs <= capacity {
            return;
        }
        let missing = h.refs - capacity;
        let pins = h.refs;
        let holder = *h;
        // Its pins left without an unpin: no unpin will close the book.
        k.remove(folio);
        k.drops.push(folio);
        k.dropped.insert((folio, holder.acquired_ns, holder.tgid));
        findings.push(super::audit::released_as_get(
            folio, missing, pins, refcount, capacity, holder, None, read_ns,
        ));
    }
}
