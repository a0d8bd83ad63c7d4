//! Synthetic event streams, encoded exactly as the probes write them: for
//! tests, the dashboard's render tests and recordings made without a kernel.

use crate::{
    kernel::flags::FollFlags,
    stream::events::{encode, Acquire, Comm, Folios, Release, RqComplete},
};
use pintrace_common::{Site, FOLIOS_PER_RECORD};

pub const MS: u64 = 1_000_000;

/// A process name as the kernel keeps it.
pub fn comm(name: &str) -> Comm {
    let mut c = [0u8; 16];
    let n = name.len().min(15);
    c[..n].copy_from_slice(&name.as_bytes()[..n]);
    Comm(c)
}

/// The address of the `i`th folio of a made-up vmemmap.
pub fn folio(i: u64) -> u64 {
    0xffff_ea00_0000_0000 + i * 64
}

/// Builds a stream of raw records with their kernel timestamps.
pub struct Stream {
    pub flags: FollFlags,
    /// The kernel clock of the next record.
    pub ts: u64,
    pub records: Vec<(u64, Vec<u8>)>,
    /// Calls of at most 32 pages as one record with their folios, as the
    /// probes write them (the default); `false`: two records.
    pub combine: bool,
}

impl Stream {
    /// A stream on a 6.3+ kernel starting at `start_ns`.
    pub fn new(start_ns: u64) -> Stream {
        Stream {
            flags: FollFlags::FROM_6_3,
            ts: start_ns,
            records: Vec::new(),
            combine: true,
        }
    }

    /// Moves the clock on.
    pub fn wait(&mut self, ns: u64) -> &mut Self {
        self.ts += ns;
        self
    }

    /// One acquire call grabbing `folios` (one per page).
    pub fn acquire(
        &mut self,
        site: Site,
        gup_flags: u32,
        tgid: u32,
        name: &str,
        stack_id: i32,
        folios: &[u64],
    ) -> &mut Self {
        let records = folios.len().div_ceil(FOLIOS_PER_RECORD) as u32;
        let a = Acquire {
            site,
            ts_ns: self.ts,
            tgid,
            tid: tgid,
            start: 0x7f00_0000_0000,
            pages_array: 0xffff_8880_0000_0000,
            ret: folios.len() as i64,
            nr_pages: folios.len() as i32,
            gup_flags,
            stack_id,
            folio_records: records,
            comm: comm(name),
            counted: false,
        };
        let mut batches = Vec::new();
        for (i, chunk) in folios.chunks(FOLIOS_PER_RECORD).enumerate() {
            let mut arr = [0u64; FOLIOS_PER_RECORD];
            arr[..chunk.len()].copy_from_slice(chunk);
            let f = Folios {
                site,
                ts_ns: self.ts,
                tgid,
                tid: tgid,
                first: (i * FOLIOS_PER_RECORD) as u32,
                count: chunk.len() as u32,
                folios: arr,
            };
            batches.push(f);
        }
        match batches.as_slice() {
            [one] if self.combine => {
                let r = encode::acquire_with_folios(&a, one);
                self.records.push((self.ts, r));
            }
            _ => {
                self.records.push((self.ts, encode::acquire(&a)));
                for f in &batches {
                    self.records.push((self.ts, encode::folios(f)));
                }
            }
        }
        self
    }

    /// FOLL_PIN pages taken by pin_user_pages_fast.
    pub fn pin(&mut self, tgid: u32, name: &str, stack_id: i32, folios: &[u64]) -> &mut Self {
        let flags = self.flags.pin;
        self.acquire(Site::PinUserPagesFast, flags, tgid, name, stack_id, folios)
    }

    /// FOLL_GET pages taken by get_user_pages_fast.
    pub fn get(&mut self, tgid: u32, name: &str, stack_id: i32, folios: &[u64]) -> &mut Self {
        let flags = self.flags.get;
        self.acquire(Site::GetUserPagesFast, flags, tgid, name, stack_id, folios)
    }

    /// One gup_put_folio of FOLL_PIN references, with the refcount before.
    pub fn unpin(&mut self, folio: u64, refs: i32, refcount: i32) -> &mut Self {
        let r = Release {
            site: Site::GupPutFolio,
            ts_ns: self.ts,
            tgid: 0,
            tid: 0,
            folio,
            refs,
            gup_flags: self.flags.pin,
            refcount,
            stack_id: 90,
            large: false,
            comm: comm("swapper/0"),
            books: Default::default(),
        };
        self.records.push((self.ts, encode::release(&r)));
        self
    }

    /// Every folio unpinned correctly (one reference each).
    pub fn unpin_all(&mut self, folios: &[u64]) -> &mut Self {
        for &f in folios {
            self.unpin(f, 1, 1025);
        }
        self
    }

    pub fn complete(&mut self, sectors: u32) -> &mut Self {
        let r = RqComplete {
            ts_ns: self.ts,
            major: 7,
            minor: 0,
            sector: 0,
            nr_sector: sectors,
            error: 0,
        };
        self.records.push((self.ts, encode::rq_complete(&r)));
        self
    }

    pub fn exit(&mut self, tgid: u32) -> &mut Self {
        self.records.push((self.ts, encode::exit(tgid, self.ts)));
        self
    }
}

/// A demo workload over `seconds`: a reader pinning and releasing 256 pages
/// every 100 ms (Direct I/O), a FOLL_GET user, a leaked pin, and a mismatch
/// (an unpin of a FOLL_GET page) near the end.
pub fn demo(start_ns: u64, seconds: u64) -> Stream {
    let mut s = Stream::new(start_ns);
    let mut next = 0u64;
    for step in 0..seconds * 10 {
        let folios: Vec<u64> = (next..next + 256).map(folio).collect();
        next += 256;
        s.wait(100 * MS).pin(149, "dd", 11, &folios);
        s.wait(2 * MS).complete(2048).unpin_all(&folios);
        if step % 5 == 0 {
            s.get(151, "vfio-user", 12, &[folio(1_000_000 + step)]);
        }
    }
    s.wait(10 * MS)
        .pin(150, "leaky", 13, &[folio(2_000_000), folio(2_000_001)]);
    s.get(151, "vfio-user", 12, &[folio(3_000_000)]);
    s.wait(10 * MS).unpin(folio(3_000_000), 1, 2);
    s
}
