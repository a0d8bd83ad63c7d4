//! The folio table: every folio the ledger knows, by address, with its open
//! books (its holders) and, for [`super::RELEASED_MEMORY_NS`] after its last
//! known pin was released, when that was and whether the books were exact
//! (its release mark).
//!
//! One hash map of 16-byte buckets (the address and one word: the index of
//! the open books, or the release mark of a folio without open books) over
//! a dense array of open books reused through a free list. A pin, an unpin
//! and the release that closes a folio's books each cost one hash lookup; a
//! closed folio keeps its mark in its slot (no second map, no remove and
//! insert), and a folio pinned again finds its slot where it was.
//!
//! A mark is the release time with the exactness in bit 62; a time that
//! does not fit in 62 bits (146 years of uptime: only a hostile recording)
//! is kept in a side map instead, so every time is remembered exactly.

use super::FolioBooks;
use rustc_hash::FxHashMap;

/// In a slot: the folio has open books, at the index in the low 32 bits.
/// In an open entry's `mark`: no release is remembered.
const OPEN: u64 = 1 << 63;
/// In a mark: the books were exact when the folio was released.
const EXACT: u64 = 1 << 62;
/// A mark whose time is in [`FolioTable::far`].
const FAR: u64 = OPEN | EXACT;
/// The release time bits of a mark.
const TS: u64 = EXACT - 1;
/// An open entry's `mark` when no release is remembered.
const NO_MARK: u64 = OPEN;

/// Below this many open books the array is never compacted.
const COMPACT_MIN: usize = 4096;

/// Open books, the folio they are for (0: a free entry) and its release
/// mark from before they were opened ([`NO_MARK`]: none).
#[derive(Debug)]
pub(super) struct Open {
    pub folio: u64,
    mark: u64,
    pub books: FolioBooks,
}

impl Default for Open {
    fn default() -> Open {
        Open {
            folio: 0,
            mark: NO_MARK,
            books: FolioBooks::default(),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct FolioTable {
    slots: FxHashMap<u64, u64>,
    open: Vec<Open>,
    /// Free entries of `open`.
    free: Vec<u32>,
    /// Folios with a release mark (open or not).
    marked: usize,
    /// Marks whose time does not fit in [`TS`].
    far: FxHashMap<u64, (u64, bool)>,
}

fn is_open(slot: u64) -> bool {
    slot & FAR == OPEN
}

fn encode(far: &mut FxHashMap<u64, (u64, bool)>, folio: u64, ts: u64, exact: bool) -> u64 {
    if ts > TS {
        far.insert(folio, (ts, exact));
        FAR
    } else {
        ts | if exact { EXACT } else { 0 }
    }
}

fn decode(far: &FxHashMap<u64, (u64, bool)>, folio: u64, mark: u64) -> Option<(u64, bool)> {
    match mark {
        NO_MARK => None,
        FAR => far.get(&folio).copied(),
        m => Some((m & TS, m & EXACT != 0)),
    }
}

/// A folio's open books, found by [`FolioTable::find`], and what closing
/// them needs.
pub(super) struct Found<'a> {
    folio: u64,
    slot: &'a mut u64,
    open: &'a mut Open,
    free: &'a mut Vec<u32>,
    marked: &'a mut usize,
    far: &'a mut FxHashMap<u64, (u64, bool)>,
}

impl<'a> Found<'a> {
    pub fn books(&mut self) -> &mut FolioBooks {
        &mut self.open.books
    }

    pub fn into_books(self) -> &'a mut FolioBooks {
        &mut self.open.books
    }

    /// Closes the books: the folio's last known pin was released at
    /// `released_ns`.
    pub fn close(self, released_ns: u64, exact: bool) {
        match self.open.mark {
            NO_MARK => *self.marked += 1,
            FAR => {
                self.far.remove(&self.folio);
            }
            _ => {}
        }
        self.free.push(*self.slot as u32);
        *self.open = Open::default();
        *self.slot = encode(self.far, self.folio, released_ns, exact);
    }
}

impl FolioTable {
    /// The open books of `folio`, if any.
    pub fn find(&mut self, folio: u64) -> Option<Found<'_>> {
        let slot = self.slots.get_mut(&folio)?;
        if !is_open(*slot) {
            return None;
        }
        Some(Found {
            folio,
            open: &mut self.open[*slot as u32 as usize],
            slot,
            free: &mut self.free,
            marked: &mut self.marked,
            far: &mut self.far,
        })
    }

    /// Whether `folio` has books open.
    pub fn is_open(&self, folio: u64) -> bool {
        self.slots.get(&folio).is_some_and(|&s| is_open(s))
    }

    pub fn get_mut(&mut self, folio: u64) -> Option<&mut FolioBooks> {
        let slot = *self.slots.get(&folio)?;
        is_open(slot).then(|| &mut self.open[slot as u32 as usize].books)
    }

    /// The open books of `folio`, opened empty if there were none.
    pub fn open(&mut self, folio: u64) -> &mut FolioBooks {
        use std::collections::hash_map::Entry;
        let (slot, mark) = match self.slots.entry(folio) {
            Entry::Occupied(e) if is_open(*e.get()) => {
                let i = *e.get() as u32 as usize;
                return &mut self.open[i].books;
            }
            // A released folio: its mark goes with the books.
            Entry::Occupied(e) => {
                let mark = *e.get();
                (e.into_mut(), mark)
            }
            Entry::Vacant(e) => (e.insert(0), NO_MARK),
        };
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.open.push(Open::default());
                (self.open.len() - 1) as u32
            }
        };
        *slot = OPEN | i as u64;
        let o = &mut self.open[i as usize];
        o.folio = folio;
        o.mark = mark;
        &mut o.books
    }

    /// Drops the open books of `folio` without a release (its release mark,
    /// if any, stays).
    pub fn discard(&mut self, folio: u64) {
        let Some(slot) = self.slots.get_mut(&folio) else {
            return;
        };
        if !is_open(*slot) {
            return;
        }
        let i = *slot as u32;
        let mark = std::mem::take(&mut self.open[i as usize]).mark;
        self.free.push(i);
        if mark == NO_MARK {
            self.slots.remove(&folio);
        } else {
            *slot = mark;
        }
    }

    /// When the last known pin of `folio` was released, and whether its
    /// books were exact then.
    pub fn released(&self, folio: u64) -> Option<(u64, bool)> {
        let slot = *self.slots.get(&folio)?;
        let mark = match is_open(slot) {
            true => self.open[slot as u32 as usize].mark,
            false => slot,
        };
        decode(&self.far, folio, mark)
    }

    /// Every folio with open books.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &FolioBooks)> {
        self.open
            .iter()
            .filter(|o| o.folio != 0)
            .map(|o| (o.folio, &o.books))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut FolioBooks)> {
        self.open
            .iter_mut()
            .filter(|o| o.folio != 0)
            .map(|o| (o.folio, &mut o.books))
    }

    /// One pass over every folio: release marks for which `keep_mark`
    /// (given the release time) is false are forgotten; open books go
    /// through `books` and are dropped when it returns false.
    pub fn retain(
        &mut self,
        keep_mark: impl Fn(u64) -> bool,
        mut books: impl FnMut(u64, &mut FolioBooks) -> bool,
    ) {
        let (open, free, marked, far) = (
            &mut self.open,
            &mut self.free,
            &mut self.marked,
            &mut self.far,
        );
        self.slots.retain(|&folio, slot| {
            let opened = is_open(*slot);
            let mut mark = match opened {
                true => open[*slot as u32 as usize].mark,
                false => *slot,
            };
            if let Some((t, _)) = decode(far, folio, mark) {
                if !keep_mark(t) {
                    if mark == FAR {
                        far.remove(&folio);
                    }
                    mark = NO_MARK;
                    *marked -= 1;
                }
            }
            if opened {
                let i = *slot as u32 as usize;
                open[i].mark = mark;
                if books(folio, &mut open[i].books) {
                    return true;
                }
                open[i] = Open::default();
                free.push(i as u32);
            }
            *slot = mark;
            mark != NO_MARK
        });
        self.compact();
    }

    /// Gives back memory after a burst: the open books are moved together
    /// when most entries are free, and the map shrinks when mostly empty.
    fn compact(&mut self) {
        let live = self.open_len();
        if self.open.len() > COMPACT_MIN && self.free.len() > live {
            let mut open = Vec::with_capacity(live * 2);
            for slot in self.slots.values_mut().filter(|s| is_open(**s)) {
                let o = std::mem::take(&mut self.open[*slot as u32 as usize]);
                *slot = OPEN | open.len() as u64;
                open.push(o);
            }
            self.open = open;
            self.free = Vec::new();
        }
        if self.slots.capacity() > COMPACT_MIN && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
        }
    }

    /// Folios with open books.
    pub fn open_len(&self) -> usize {
        self.open.len() - self.free.len()
    }

    /// Folios whose last release is remembered.
    pub fn marked_len(&self) -> usize {
        self.marked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_keep_every_time_exactly() {
        let mut t = FolioTable::default();
        for (folio, ts) in [(0x1000, 5), (0x2000, u64::MAX), (0x3000, TS + 1)] {
            t.open(folio);
            t.find(folio).unwrap().close(ts, true);
            assert_eq!(t.released(folio), Some((ts, true)));
            // Pinned again: the mark stays with the books, then is replaced.
            t.open(folio);
            assert_eq!(t.released(folio), Some((ts, true)));
            t.find(folio).unwrap().close(7, false);
            assert_eq!(t.released(folio), Some((7, false)));
        }
        assert_eq!((t.open_len(), t.marked_len(), t.far.len()), (0, 3, 0));
        t.open(0x2000);
        t.find(0x2000).unwrap().close(u64::MAX, false);
        t.retain(|ts| ts != 7, |_, _| true);
        assert_eq!(t.released(0x1000), None);
        assert_eq!(t.released(0x2000), Some((u64::MAX, false)));
        assert_eq!((t.marked_len(), t.far.len()), (1, 1));
        t.retain(|_| false, |_, _| true);
        assert_eq!((t.marked_len(), t.far.len(), t.slots.len()), (0, 0, 0));
    }
}
