//! The tally: acquires per kind (calls and pages), per process, releases and
//! block completions. Totals only; the per-folio books are in [`super::Ledger`].

use crate::{
    kernel::flags::FollFlags,
    stream::events::{Acquire, BioPhase, Comm, Counted, Event},
};
use pintrace_common::Site;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::BTreeMap;

/// How a page reference was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// FOLL_PIN (released with unpin_user_page*).
    Pin,
    /// FOLL_PIN | FOLL_LONGTERM (io_uring fixed buffers, RDMA, vfio).
    LongtermPin,
    /// FOLL_GET (released with put_page).
    Get,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pin, Kind::LongtermPin, Kind::Get];

    pub fn of(acquire: &Acquire, flags: &FollFlags) -> Kind {
        let pin = matches!(
            acquire.site,
            Site::PinUserPagesFast
                | Site::PinUserPages
                | Site::PinUserPagesRemote
                | Site::PinUserPagesUnlocked
                | Site::FolioAddPin
        );
        match pin {
            true if acquire.gup_flags & flags.longterm != 0 => Kind::LongtermPin,
            true => Kind::Pin,
            false => Kind::Get,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Pin => "FOLL_PIN",
            Kind::LongtermPin => "FOLL_PIN|FOLL_LONGTERM",
            Kind::Get => "FOLL_GET",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Calls that grabbed at least one page.
    pub calls: u64,
    /// Pages grabbed.
    pub pages: u64,
    /// Calls that returned an error or zero pages.
    pub failed_calls: u64,
}

impl Counts {
    fn add(&mut self, a: &Acquire) {
        if a.ret > 0 {
            self.calls += 1;
            self.pages += a.pages_grabbed();
        } else {
            self.failed_calls += 1;
        }
    }

    fn add_counted(&mut self, c: &Counted) {
        self.calls += c.calls;
        self.pages += c.pages;
        self.failed_calls += c.failed;
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessTally {
    pub tgid: u32,
    pub comm: Comm,
    pub by_kind: BTreeMap<Kind, Counts>,
    /// The same calls by the kernel function they entered (e.g. exec(2)
    /// copies its arguments through `get_user_pages_remote`).
    pub by_site: BTreeMap<&'static str, Counts>,
    /// Pages taken, by kind and kernel stack id (to tell, say, exec(2)'s
    /// argument pages and futex keys from I/O by their stacks).
    #[serde(skip)]
    pub pages_by_stack: BTreeMap<(Kind, i32), u64>,
    /// References this process took that were released (by anyone: bio
    /// completion runs in whatever context the interrupt found), by the kind
    /// they were taken as. FOLL_GET references released with `put_page` are
    /// invisible and never counted here.
    pub released: BTreeMap<Kind, u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Completions {
    pub requests: u64,
    pub sectors: u64,
    pub errors: u64,
}

/// Pin references dropped through `gup_put_folio`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Releases {
    pub calls: u64,
    /// FOLL_PIN references released (what `nr_foll_pin_released` counts).
    pub pin_refs: u64,
    /// FOLL_GET references released through the same path.
    pub get_refs: u64,
}

/// Direct I/O bios filled from user memory, as the bio probes saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BioCounts {
    pub filled: u64,
    pub completed: u64,
    /// `__bio_release_pages` calls.
    pub released: u64,
    /// FOLL_GET references released by a bio release (put_page there).
    pub get_refs_released: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Tally {
    pub flags: FollFlags,
    pub by_kind: BTreeMap<Kind, Counts>,
    pub releases: Releases,
    #[serde(skip)]
    processes: FxHashMap<u32, ProcessTally>,
    pub completions: Completions,
    pub bios: BioCounts,
    /// References released, by the kind they were taken as (matched to a
    /// holder: through gup_put_folio, or a bio release for FOLL_GET).
    pub released: BTreeMap<Kind, u64>,
    /// Pins added to already pinned folios by `folio_add_pin` (legacy
    /// fs/direct-io.c): in `by_kind`, released like any pin, but not counted
    /// in `nr_foll_pin_acquired`.
    pub added_pins: u64,
    pub stacks: StackCounts,
    pub events: u64,
}

/// Kernel stacks of the acquire and release events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StackCounts {
    pub taken: u64,
    /// Left out by `--stacks sampled` (or none).
    pub sampled_out: u64,
    /// The probe could not store the stack (map full).
    pub failed: u64,
}

impl StackCounts {
    fn add(&mut self, stack_id: i32) {
        self.add_n(stack_id, 1);
    }

    fn add_n(&mut self, stack_id: i32, n: u64) {
        match stack_id {
            pintrace_common::STACK_NOT_TAKEN => self.sampled_out += n,
            id if id < 0 => self.failed += n,
            _ => self.taken += n,
        }
    }
}

impl Tally {
    pub fn new(flags: FollFlags) -> Tally {
        Tally {
            flags,
            by_kind: Kind::ALL.iter().map(|&k| (k, Counts::default())).collect(),
            processes: FxHashMap::default(),
            releases: Releases::default(),
            completions: Completions::default(),
            bios: BioCounts::default(),
            released: BTreeMap::new(),
            added_pins: 0,
            stacks: StackCounts::default(),
            events: 0,
        }
    }

    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        match event {
            // Counted by the kernel books already ([`Event::Counted`]).
            Event::Acquire(a) if a.counted => {}
            Event::Acquire(a) => {
                let kind = Kind::of(a, &self.flags);
                self.by_kind.entry(kind).or_default().add(a);
                self.stacks.add(a.stack_id);
                if a.site == Site::FolioAddPin {
                    self.added_pins += a.pages_grabbed();
                }
                let p = self
                    .processes
                    .entry(a.tgid)
                    .or_insert_with(|| ProcessTally {
                        tgid: a.tgid,
                        comm: a.comm,
                        by_kind: BTreeMap::new(),
                        by_site: BTreeMap::new(),
                        pages_by_stack: BTreeMap::new(),
                        released: BTreeMap::new(),
                    });
                // The name it has now (exec(2) changes it after copying
                // its arguments with get_user_pages_remote).
                p.comm = a.comm;
                p.by_kind.entry(kind).or_default().add(a);
                p.by_site.entry(a.site.symbol()).or_default().add(a);
                *p.pages_by_stack.entry((kind, a.stack_id)).or_default() += a.pages_grabbed();
            }
            Event::Release(r) => {
                self.releases.calls += 1;
                self.stacks.add(r.stack_id);
                let refs = r.refs.max(0) as u64;
                if r.gup_flags & self.flags.pin != 0 {
                    self.releases.pin_refs += refs;
                } else {
                    self.releases.get_refs += refs;
                }
            }
            Event::Counted(c) => self.counted(c),
            Event::Folios(_) | Event::Exit { .. } | Event::Booked(_) => {}
            Event::Bio(b) => match b.phase {
                BioPhase::FillEnd => self.bios.filled += 1,
                BioPhase::Endio | BioPhase::Done => self.bios.completed += 1,
                BioPhase::Release => self.bios.released += 1,
                BioPhase::FillBegin => {}
            },
            Event::RqComplete(r) => {
                self.completions.requests += 1;
                self.completions.sectors += r.nr_sector as u64;
                if r.error != 0 {
                    self.completions.errors += 1;
                }
            }
        }
    }

    /// What the kernel books counted: acquire calls by process, site and
    /// stack, or references released from a process's books.
    fn counted(&mut self, c: &Counted) {
        let p = self
            .processes
            .entry(c.tgid)
            .or_insert_with(|| ProcessTally {
                tgid: c.tgid,
                comm: c.comm,
                ..ProcessTally::default()
            });
        let Some(site) = c.site else {
            let kind = if c.longterm {
                Kind::LongtermPin
            } else {
                Kind::Pin
            };
            add(&mut self.released, kind, c.released);
            add(&mut p.released, kind, c.released);
            return;
        };
        let kind = if c.longterm {
            Kind::LongtermPin
        } else {
            Kind::Pin
        };
        p.comm = c.comm;
        self.stacks.add_n(c.stack_id, c.calls + c.failed);
        self.by_kind.entry(kind).or_default().add_counted(c);
        p.by_kind.entry(kind).or_default().add_counted(c);
        p.by_site.entry(site.symbol()).or_default().add_counted(c);
        *p.pages_by_stack.entry((kind, c.stack_id)).or_default() += c.pages;
        if site == Site::FolioAddPin {
            self.added_pins += c.pages;
        }
    }

    /// Releases the kernel books balanced (the probes' counters), which no
    /// record reports.
    /// Bios the kernel books counted filled and released without records.
    pub fn add_booked_bios(&mut self, filled: u64, released: u64) {
        self.bios.filled += filled;
        self.bios.released += released;
    }

    pub fn add_booked_releases(&mut self, calls: u64, refs: u64) {
        self.releases.calls += calls;
        self.releases.pin_refs += refs;
    }

    /// Credits `refs` released references to the process that took them
    /// (the ledger calls this when a release balances a holder).
    pub fn credit_release(&mut self, tgid: u32, kind: Kind, refs: u64) {
        add(&mut self.released, kind, refs);
        if let Some(p) = self.processes.get_mut(&tgid) {
            add(&mut p.released, kind, refs);
        }
    }

    pub fn kind(&self, kind: Kind) -> Counts {
        self.by_kind.get(&kind).copied().unwrap_or_default()
    }

    pub fn process(&self, tgid: u32) -> Option<&ProcessTally> {
        self.processes.get(&tgid)
    }

    /// Processes, the busiest first.
    pub fn processes(&self) -> Vec<&ProcessTally> {
        let mut v: Vec<&ProcessTally> = self.processes.values().collect();
        let pages = |p: &ProcessTally| p.by_kind.values().map(|c| c.pages).sum::<u64>();
        v.sort_by(|a, b| pages(b).cmp(&pages(a)).then(a.tgid.cmp(&b.tgid)));
        v
    }
}

/// `*map.entry(kind).or_default() += n`, without the entry's cost when
/// the kind is there already (every release but the first of its kind).
fn add(map: &mut BTreeMap<Kind, u64>, kind: Kind, n: u64) {
    match map.get_mut(&kind) {
        Some(v) => *v += n,
        None => {
            map.insert(kind, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::events::RqComplete;

    fn acquire(site: Site, tgid: u32, ret: i64, flags: u32) -> Event {
        Event::Acquire(Acquire {
            site,
            ts_ns: 0,
            tgid,
            tid: tgid,
            start: 0,
            pages_array: 0,
            ret,
            nr_pages: ret.max(1) as i32,
            gup_flags: flags,
            stack_id: -1,
            folio_records: 0,
            comm: Comm::default(),
            counted: false,
        })
    }

    #[test]
    fn counts_pages_per_kind_and_process() {
        let f = FollFlags::FROM_6_3;
        let mut t = Tally::new(f);
        for _ in 0..8 {
            t.apply(&acquire(Site::PinUserPagesFast, 10, 256, f.pin));
        }
        t.apply(&acquire(Site::PinUserPagesFast, 11, 4, f.pin | f.longterm));
        t.apply(&acquire(Site::GetUserPagesFast, 12, 1, f.get));
        t.apply(&acquire(Site::GetUserPagesFast, 12, -14, f.get));
        t.apply(&Event::RqComplete(RqComplete {
            ts_ns: 0,
            major: 7,
            minor: 0,
            sector: 0,
            nr_sector: 8,
            error: -5,
        }));
        assert_eq!(t.kind(Kind::Pin).pages, 2048);
        assert_eq!(t.kind(Kind::Pin).calls, 8);
        assert_eq!(t.kind(Kind::LongtermPin).pages, 4);
        assert_eq!(
            t.kind(Kind::Get),
            Counts {
                calls: 1,
                pages: 1,
                failed_calls: 1
            }
        );
        assert_eq!(t.process(10).unwrap().by_kind[&Kind::Pin].pages, 2048);
        assert_eq!(t.processes()[0].tgid, 10);
        assert_eq!(
            t.completions,
            Completions {
                requests: 1,
                sectors: 8,
                errors: 1
            }
        );
        assert_eq!(t.events, 12);
    }

    #[test]
    fn longterm_flag_value_depends_on_the_kernel() {
        // 0x10000 is FOLL_LONGTERM before 6.3 but not after.
        let old = FollFlags::UP_TO_6_2;
        let ev = acquire(Site::PinUserPagesFast, 1, 1, 0x10000);
        let Event::Acquire(a) = ev else {
            unreachable!()
        };
        assert_eq!(Kind::of(&a, &old), Kind::LongtermPin);
        assert_eq!(Kind::of(&a, &FollFlags::FROM_6_3), Kind::Pin);
    }
}
