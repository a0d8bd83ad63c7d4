//! The ledger's bios: which references a Direct I/O bio took (the acquires
//! inside `bio_iov_iter_get_pages`, or `bio_map_user_iov` for SG_IO and
//! passthrough), its completion (`bio_endio`) and its
//! release (`__bio_release_pages`), and what is wrong when references
//! outlive it or leave it the wrong way.

use super::{take, Finding, FindingKind, Holder, Kind, Ledger};
use crate::stream::events::{Bio, BioPhase};
use rustc_hash::FxHashMap;
use serde::Serialize;
use smallvec::SmallVec;

/// What the probes read of a bio when its fill returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BioInfo {
    pub major: u32,
    pub minor: u32,
    pub sector: u64,
    pub bytes: u32,
    pub write: bool,
}

impl BioInfo {
    /// What a bio record read of its bio at the end of its fill.
    fn of(b: &Bio) -> BioInfo {
        BioInfo {
            major: b.major,
            minor: b.minor,
            sector: b.sector,
            bytes: b.bytes,
            write: b.is_write(),
        }
    }
}

impl std::fmt::Display for BioInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} bytes at sector {} on {}:{}",
            if self.write { "write" } else { "read" },
            self.bytes,
            self.sector,
            self.major,
            self.minor
        )
    }
}

/// One bio's books: the references its fill took, until released.
#[derive(Clone, Debug)]
pub(super) struct BioBooks {
    ptr: u64,
    pub(super) info: BioInfo,
    completed_ns: Option<u64>,
    /// References taken for the bio and not yet released.
    pub(super) refs: u64,
    /// Folios it holds references on (each once).
    pub(super) folios: SmallVec<[u64; 4]>,
    /// `__bio_release_pages` ran: unpins of its folios are expected.
    pub(super) released: bool,
    reported: bool,
    /// Its fill's (tgid, start), by which the kernel books name it.
    fill: (u32, u64),
}

impl BioBooks {
    /// A bio followed from its fill's (tgid, start), holding nothing yet.
    fn new(ptr: u64, info: BioInfo, completed_ns: Option<u64>, fill: (u32, u64)) -> BioBooks {
        BioBooks {
            ptr,
            info,
            completed_ns,
            refs: 0,
            folios: SmallVec::new(),
            released: false,
            reported: false,
            fill,
        }
    }

    /// Done with as far as its own references go, at `now_ns`: completed or
    /// released, or filled longer ago than anything is remembered (its
    /// completion was not seen).
    pub(super) fn over(&self, now_ns: u64) -> bool {
        self.refs == 0
            && (self.released
                || self.completed_ns.is_some()
                || now_ns.saturating_sub(self.fill.1) >= super::RELEASED_MEMORY_NS)
    }
}

impl Ledger {
    pub(super) fn bio(&mut self, b: &Bio, findings: &mut Vec<Finding>) {
        match b.phase {
            BioPhase::FillBegin => {
                self.next_bio += 1;
                let id = self.next_bio;
                let fill = (b.tgid, b.ts_ns);
                self.bios
                    .insert(id, BioBooks::new(b.bio, BioInfo::default(), None, fill));
                if self.config.kernel_books {
                    self.bio_of_fill.insert((b.tgid, b.ts_ns), id);
                }
                // 0: the fill allocates its bio and names it later.
                if b.bio != 0 {
                    self.bind_bio(b.bio, id);
                }
                self.filling.insert(b.tid, id);
            }
            BioPhase::FillEnd => {
                if b.bio == 0 {
                    // A fill that allocated its bio failed: the bio is gone
                    // (released inside, if it held anything). References
                    // still booked to it stay with their holders.
                    if let Some(id) = self.filling.remove(&b.tid) {
                        if self.bios.get(&id).is_some_and(|x| x.refs == 0) {
                            self.forget_bio(id);
                        }
                    }
                    return;
                }
                if let Some(id) = self.unnamed_fill(b.tid) {
                    self.name_bio(b.bio, id);
                }
                if self.filling.get(&b.tid).copied() == self.bio_at.get(&b.bio).copied() {
                    self.filling.remove(&b.tid);
                }
                let Some(&id) = self.bio_at.get(&b.bio) else {
                    return;
                };
                let Some(books) = self.bios.get_mut(&id) else {
                    return;
                };
                books.info = BioInfo::of(b);
                if books.refs == 0 && !self.config.kernel_books {
                    // Nothing taken (a kernel-memory iterator): nothing to
                    // follow. (The kernel books may hold what it took.)
                    self.forget_bio(id);
                }
            }
            BioPhase::Endio => {
                let Some(books) = self.bio_at.get(&b.bio).and_then(|id| self.bios.get_mut(id))
                else {
                    return;
                };
                books.completed_ns.get_or_insert(b.ts_ns);
            }
            BioPhase::Done => self.bio_done(b),
            BioPhase::Release => {
                let id = match self.bio_at.get(&b.bio) {
                    Some(&id) => id,
                    // bio_map_user_iov's error path releases its bio's
                    // pages before the bio could be named.
                    None => match self.unnamed_fill(b.tid) {
                        Some(id) => {
                            self.name_bio(b.bio, id);
                            id
                        }
                        None => return,
                    },
                };
                self.release_bio(id, b, findings);
            }
        }
    }

    /// A bio the kernel books followed completed (its one record): kept,
    /// for the booked pins of its fill, until a snapshot holds none of
    /// them (`Ledger::set_kernel_books`).
    fn bio_done(&mut self, b: &Bio) {
        let key = (b.tgid, b.fill_ns);
        if b.fill_ns == 0 || self.bio_of_fill.contains_key(&key) {
            return;
        }
        self.next_bio += 1;
        let id = self.next_bio;
        self.bios
            .insert(id, BioBooks::new(0, BioInfo::of(b), Some(b.ts_ns), key));
        self.bio_of_fill.insert(key, id);
    }

    /// `__bio_release_pages`: with BIO_PAGE_PINNED the unpins follow on this
    /// thread; without it every page gets put_page, which releases the bio's
    /// FOLL_GET references and is a mismatch for its pins.
    fn release_bio(&mut self, id: u64, b: &Bio, findings: &mut Vec<Finding>) {
        let pinned_flag = b.flags & self.flags.bio_page_pinned != 0;
        let Some(books) = self.bios.get_mut(&id) else {
            return;
        };
        books.completed_ns.get_or_insert(b.ts_ns);
        let folios = books.folios.clone();
        let info = books.info;
        let mut pins_put: Option<(Holder, u64, u64)> = None;
        let mut released = 0u64;
        for folio in folios {
            let Some(mut found) = self.folios.find(folio) else {
                continue;
            };
            let fb = found.books();
            let of_bio = |holders: &[Holder], get: bool| -> u64 {
                holders
                    .iter()
                    .filter(|h| h.bio == id && (h.kind == Kind::Get) == get)
                    .map(|h| h.refs)
                    .sum()
            };
            // put_page on the bio's FOLL_GET references: released.
            let gets = of_bio(&fb.holders, true);
            if gets > 0 {
                let mut from_bios = SmallVec::new();
                take(
                    &mut fb.holders,
                    gets,
                    |k| k == Kind::Get,
                    b.ts_ns,
                    self.lifetimes.as_mut(),
                    Some(&mut self.tally),
                    |h| (h.bio != id) as u8,
                    &mut from_bios,
                );
                self.tally.bios.get_refs_released += gets;
                released += gets;
            }
            // put_page on its pins (no BIO_PAGE_PINNED): a mismatch; the
            // pins are gone from the folio, not unpinned.
            let pins = if pinned_flag {
                0
            } else {
                of_bio(&fb.holders, false)
            };
            if pins > 0 {
                if let Some(h) = fb
                    .holders
                    .iter()
                    .find(|h| h.bio == id && h.kind != Kind::Get)
                {
                    pins_put.get_or_insert((*h, folio, 0)).2 += pins;
                }
                fb.holders.retain(|h| h.bio != id || h.kind == Kind::Get);
                released += pins;
            }
            if fb.holders.is_empty() {
                let exact = fb.exact;
                found.close(b.ts_ns, exact);
            }
        }
        if let Some((h, folio, refs)) = pins_put {
            findings.push(Finding {
                kind: FindingKind::PinReleasedAsGet,
                folio,
                refs,
                tgid: h.tgid,
                comm: h.comm,
                stack_id: h.stack_id,
                holder: Some(h),
                bio: Some(info),
                at_ns: b.ts_ns,
                detail: format!(
                    "{refs} pin(s) of a bio ({info}) released by __bio_release_pages without \
                     BIO_PAGE_PINNED: put_page on FOLL_PIN pages; the stack is the pin's"
                ),
            });
        }
        let books = self.bios.get_mut(&id).expect("bio books");
        books.refs = books.refs.saturating_sub(released);
        books.released = true;
        if books.refs > 0 {
            self.releasing.insert(b.tid, id);
        } else if !self.config.kernel_books {
            self.forget_bio(id);
        }
        // With the kernel books, the next snapshot that holds none of its
        // pins lets it go (`Ledger::set_kernel_books`).
    }

    /// Points the address at the books `id`. The address is reused once a
    /// bio is freed: the old books stay only while they hold references.
    fn bind_bio(&mut self, ptr: u64, id: u64) {
        if let Some(old) = self.bio_at.insert(ptr, id) {
            if old != id && self.bios.get(&old).is_some_and(|x| x.refs == 0) {
                self.bios.remove(&old);
            }
        }
    }

    /// The books of this thread's fill when its bio has no name yet.
    fn unnamed_fill(&self, tid: u32) -> Option<u64> {
        self.filling
            .get(&tid)
            .copied()
            .filter(|id| self.bios.get(id).is_some_and(|x| x.ptr == 0))
    }

    fn name_bio(&mut self, ptr: u64, id: u64) {
        if let Some(books) = self.bios.get_mut(&id) {
            books.ptr = ptr;
        }
        self.bind_bio(ptr, id);
    }

    pub(super) fn forget_bio(&mut self, id: u64) {
        if let Some(books) = self.bios.remove(&id) {
            if self.bio_at.get(&books.ptr) == Some(&id) {
                self.bio_at.remove(&books.ptr);
            }
            if self.bio_of_fill.get(&books.fill) == Some(&id) {
                self.bio_of_fill.remove(&books.fill);
            }
        }
    }

    /// The ledger's number for the bio of a kernel book's fill (0: none
    /// followed).
    pub(super) fn fill_bio(&self, tgid: u32, fill_ns: u64) -> u64 {
        bio_of_fill(&self.bio_of_fill, tgid, fill_ns)
    }

    /// An escalated book's pins join the bio they were taken for, as the
    /// records of its acquire would have.
    pub(super) fn add_to_bio(&mut self, id: u64, folio: u64, refs: u64) {
        if let Some(b) = self.bios.get_mut(&id) {
            b.refs += refs;
            if !b.folios.contains(&folio) {
                b.folios.push(folio);
            }
        }
    }

    /// Lowers the books of the bios references were taken from.
    pub(super) fn settle_bios(&mut self, from_bios: &[(u64, u64)]) {
        for &(id, n) in from_bios {
            if let Some(b) = self.bios.get_mut(&id) {
                b.refs = b.refs.saturating_sub(n);
                if b.refs == 0 {
                    self.forget_bio(id);
                }
            }
        }
    }

    /// Bios completed more than the grace period ago whose references are
    /// still held: one finding per bio, naming it; its holders are then
    /// reported (never again as another kind of leak).
    pub(super) fn judge_bios(&mut self, now_ns: u64, findings: &mut Vec<Finding>) {
        let grace = self.config.bio_grace_ns;
        let due: Vec<u64> = self
            .bios
            .iter()
            .filter(|(_, b)| {
                !b.reported
                    && b.completed_ns
                        .is_some_and(|t| now_ns.saturating_sub(t) >= grace)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(b) = self.bios.get_mut(&id) else {
                continue;
            };
            let (info, completed) = (b.info, b.completed_ns.unwrap_or(now_ns));
            // The kernel books are judged as of their snapshot: one older
            // than the grace period after the completion cannot tell.
            if self.config.kernel_books && !self.kernel.read_since(completed + grace) {
                continue;
            }
            b.reported = true;
            let (mut refs, first_kernel) = self.kernel.report_bio(id);
            let mut first: Option<(Holder, u64)> = None;
            for folio in b.folios.clone() {
                let Some(fb) = self.folios.get_mut(folio) else {
                    continue;
                };
                for h in fb
                    .holders
                    .iter_mut()
                    .filter(|h| h.bio == id && !h.reported && h.refs > 0)
                {
                    h.reported = true;
                    refs += h.refs;
                    first.get_or_insert((*h, folio));
                }
            }
            let first = first.or(first_kernel);
            let Some((h, folio)) = first else {
                // Its holders were reported already, or dropped (FOLL_GET
                // holders of an exited owner): nothing more to say.
                self.forget_bio(id);
                continue;
            };
            let late_ms = now_ns.saturating_sub(completed) / 1_000_000;
            findings.push(Finding {
                kind: FindingKind::LeakAfterBio,
                folio,
                refs,
                tgid: h.tgid,
                comm: h.comm,
                stack_id: h.stack_id,
                holder: Some(h),
                bio: Some(info),
                at_ns: now_ns,
                detail: format!(
                    "{} {refs} ref(s) still held {late_ms} ms after their bio ({info}) \
                     completed; the stack is the acquire's",
                    h.kind.label()
                ),
            });
        }
    }

    /// Bios with references outstanding (memory is proportional to this).
    pub fn tracked_bios(&self) -> usize {
        self.bios.len()
    }
}

/// [`Ledger::fill_bio`] over the ledger's map alone, for callers holding
/// other parts of the ledger.
pub(super) fn bio_of_fill(by_fill: &FxHashMap<(u32, u64), u64>, tgid: u32, fill_ns: u64) -> u64 {
    if fill_ns == 0 {
        return 0;
    }
    by_fill.get(&(tgid, fill_ns)).copied().unwrap_or(0)
}
