//! The folio table: every folio the ledger knows, by address, with its open
//! books (its holders) and, for [`super::RELEASED_MEMORY_NS`] after its last
//! known pin was released, when that was and whether the books were exact.
//!
//! One hash map of small slots (24 bytes a bucket: the address, the release
//! mark and the index of the open books) over a dense array of open books,
//! reused through a free list. A pin, an unpin and the release that closes
//! a folio's books each cost one hash lookup; a closed folio keeps its
//! release mark in its slot (no second map, no remove and insert), and a
//! folio pinned again finds its slot where it was.

use super::FolioBooks;
use rustc_hash::FxHashMap;

/// No open books.
const NONE: u32 = u32::MAX;

/// Below this many open books the array is never compacted.
const COMPACT_MIN: usize = 4096;

#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    /// When the folio's last known pin was released (when `mark` is set).
    released_ns: u64,
    /// Index of the open books in [`FolioTable::open`], or [`NONE`].
    books: u32,
    /// 0: no release remembered; 1: released, the books were not exact;
    /// 2: released, the books were exact.
    mark: u8,
}

impl Slot {
    const EMPTY: Slot = Slot {
        released_ns: 0,
        books: NONE,
        mark: 0,
    };

    fn released(&self) -> Option<(u64, bool)> {
        (self.mark != 0).then_some((self.released_ns, self.mark == 2))
    }
}

/// Open books and the folio they are for (0: a free entry).
#[derive(Debug, Default)]
pub(super) struct Open {
    pub folio: u64,
    pub books: FolioBooks,
}

#[derive(Debug, Default)]
pub(super) struct FolioTable {
    slots: FxHashMap<u64, Slot>,
    open: Vec<Open>,
    /// Free entries of `open`.
    free: Vec<u32>,
    /// Slots with a release mark.
    marked: usize,
}

/// A folio's open books, found by [`FolioTable::find`], and what closing
/// them needs.
pub(super) struct Found<'a> {
    slot: &'a mut Slot,
    pub books: &'a mut FolioBooks,
    folio: &'a mut u64,
    free: &'a mut Vec<u32>,
    marked: &'a mut usize,
}

impl Found<'_> {
    /// Closes the books: the folio's last known pin was released at
    /// `released_ns`.
    pub fn close(self, released_ns: u64, exact: bool) {
        self.free.push(self.slot.books);
        *self.books = FolioBooks::default();
        *self.folio = 0;
        self.slot.books = NONE;
        if self.slot.mark == 0 {
            *self.marked += 1;
        }
        self.slot.released_ns = released_ns;
        self.slot.mark = 1 + exact as u8;
    }
}

impl FolioTable {
    pub fn with_capacity(n: usize) -> FolioTable {
        FolioTable {
            slots: FxHashMap::with_capacity_and_hasher(n, Default::default()),
            ..Default::default()
        }
    }

    /// The open books of `folio`, if any.
    pub fn find(&mut self, folio: u64) -> Option<Found<'_>> {
        let slot = self.slots.get_mut(&folio)?;
        if slot.books == NONE {
            return None;
        }
        let open = &mut self.open[slot.books as usize];
        Some(Found {
            slot,
            books: &mut open.books,
            folio: &mut open.folio,
            free: &mut self.free,
            marked: &mut self.marked,
        })
    }

    pub fn get_mut(&mut self, folio: u64) -> Option<&mut FolioBooks> {
        self.find(folio).map(|f| f.books)
    }

    /// The open books of `folio`, opened empty if there were none.
    pub fn open(&mut self, folio: u64) -> &mut FolioBooks {
        let slot = self.slots.entry(folio).or_insert(Slot::EMPTY);
        if slot.books == NONE {
            slot.books = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.open.push(Open::default());
                    (self.open.len() - 1) as u32
                }
            };
            self.open[slot.books as usize].folio = folio;
        }
        &mut self.open[slot.books as usize].books
    }

    /// Drops the open books of `folio` without a release (its release mark,
    /// if any, stays).
    pub fn discard(&mut self, folio: u64) {
        let Some(slot) = self.slots.get_mut(&folio) else {
            return;
        };
        if slot.books != NONE {
            let open = &mut self.open[slot.books as usize];
            *open = Open::default();
            self.free.push(slot.books);
            slot.books = NONE;
        }
        if slot.mark == 0 {
            self.slots.remove(&folio);
        }
    }

    /// When the last known pin of `folio` was released, and whether its
    /// books were exact then.
    pub fn released(&self, folio: u64) -> Option<(u64, bool)> {
        self.slots.get(&folio).and_then(Slot::released)
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
        let (open, free, marked) = (&mut self.open, &mut self.free, &mut self.marked);
        self.slots.retain(|&folio, slot| {
            if slot.mark != 0 && !keep_mark(slot.released_ns) {
                slot.mark = 0;
                *marked -= 1;
            }
            if slot.books != NONE && !books(folio, &mut open[slot.books as usize].books) {
                open[slot.books as usize] = Open::default();
                free.push(slot.books);
                slot.books = NONE;
            }
            slot.books != NONE || slot.mark != 0
        });
        self.compact();
    }

    /// Gives back memory after a burst: the open books are moved together
    /// when most entries are free, and the map shrinks when mostly empty.
    fn compact(&mut self) {
        let live = self.open.len() - self.free.len();
        if self.open.len() > COMPACT_MIN && self.free.len() > live {
            let mut open = Vec::with_capacity(live * 2);
            for slot in self.slots.values_mut().filter(|s| s.books != NONE) {
                let o = std::mem::take(&mut self.open[slot.books as usize]);
                slot.books = open.len() as u32;
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
