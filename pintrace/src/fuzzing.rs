//! Hostile input for the decoders and the ledger: turns arbitrary bytes into
//! what the agent reads (ring-buffer records, recordings) and drives them
//! through the same [`Pipeline`] as a run. The fuzz targets (`fuzz/`) and the
//! host's property tests share these drivers; whatever the bytes, the agent
//! must answer with an error or a result, never a panic or a hang.

use crate::{
    kernel::flags::FollFlags,
    ledger::{Finding, Ledger, LedgerConfig},
    stream::events::{encode, Acquire, Comm, Folios, Release, RqComplete},
    stream::pipeline::Pipeline,
    trace::record::{Entry, Recording},
};
use bytes::Bytes;
use pintrace_common::{AuditSlot, Site, FOLIOS_PER_RECORD};
use std::path::Path;

/// Reads values off the input, zeros once it runs out.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A folio of a small made-up vmemmap, so that acquires, releases and
/// audits meet on the same folios.
fn folio(c: &mut Cursor) -> u64 {
    crate::synth::folio((c.u8() % 16) as u64)
}

fn site(c: &mut Cursor) -> Site {
    Site::ALL[c.u8() as usize % Site::ALL.len()]
}

fn gup_flags(c: &mut Cursor, f: FollFlags) -> u32 {
    match c.u8() % 6 {
        0 => f.pin,
        1 => f.pin | f.longterm,
        2 => f.get,
        3 => f.get | f.longterm,
        4 => 0,
        _ => c.u32(),
    }
}

fn comm(c: &mut Cursor) -> Comm {
    Comm(
        *[
            b"dd\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            b"fio\0\0\0\0\0\0\0\0\0\0\0\0\0",
            &[0xff; 16],
        ][c.u8() as usize % 3],
    )
}

/// What [`stream`] makes of the input: records, each read at a time, and
/// the moments the pipeline is ticked or audited.
#[derive(Debug)]
pub enum Step {
    Record(u64, Vec<u8>),
    Tick(u64),
    Audit(u64, Vec<AuditSlot>),
}

/// Turns arbitrary bytes into a stream of mostly well-formed records (every
/// kind, fields drawn from the input: folios from a small set so that they
/// meet, refs and refcounts of any sign, time running mostly forward but
/// sometimes back, as per-CPU ring-buffer order allows), some of them
/// garbage, with ticks and audits in between.
pub fn stream(data: &[u8], flags: FollFlags) -> Vec<Step> {
    let mut c = Cursor(data);
    let mut steps = Vec::new();
    let mut ts: u64 = 1_000_000_000_000;
    let mut last_acquire = (0u64, 0u32, 0u32);
    while !c.is_empty() && steps.len() < 4096 {
        // Time moves on by up to ~65 ms, jumps, or steps back a little.
        ts = match c.u8() % 8 {
            0 => ts.saturating_sub(c.u16() as u64 * 1000),
            1 => ts.saturating_add(c.u32() as u64 * 1000),
            2 => c.u64(),
            _ => ts.saturating_add(c.u16() as u64 * 1000),
        };
        let tgid = 100 + (c.u8() % 4) as u32;
        let rec = match c.u8() % 10 {
            0 | 1 => {
                let a = Acquire {
                    site: site(&mut c),
                    ts_ns: ts,
                    tgid,
                    tid: tgid + (c.u8() % 2) as u32,
                    start: c.u64(),
                    pages_array: c.u64(),
                    ret: c.u8() as i8 as i64,
                    nr_pages: c.u8() as i8 as i32,
                    gup_flags: gup_flags(&mut c, flags),
                    stack_id: c.u8() as i8 as i32,
                    folio_records: (c.u8() % 10) as u32,
                    comm: comm(&mut c),
                    counted: false,
                };
                last_acquire = (a.ts_ns, a.tgid, a.tid);
                encode::acquire(&a)
            }
            2 | 3 => {
                let mut folios = [0u64; FOLIOS_PER_RECORD];
                let count = (c.u8() % 40) as u32;
                for f in folios.iter_mut().take(count as usize) {
                    *f = folio(&mut c) | (c.u8() % 4) as u64;
                }
                // Mostly the last acquire's batch; sometimes one of nobody's.
                let (ts_ns, tgid, tid) = if c.u8() % 4 == 0 {
                    (ts, tgid, tgid)
                } else {
                    last_acquire
                };
                encode::folios(&Folios {
                    site: site(&mut c),
                    ts_ns,
                    tgid,
                    tid,
                    first: c.u8() as u32 * 8,
                    count,
                    folios,
                })
            }
            4 | 5 => encode::release(&Release {
                site: site(&mut c),
                ts_ns: ts,
                tgid,
                tid: tgid,
                folio: folio(&mut c),
                refs: c.u8() as i8 as i32,
                gup_flags: gup_flags(&mut c, flags),
                refcount: c.u16() as i16 as i32 * 8,
                stack_id: c.u8() as i8 as i32,
                large: c.u8() & 1 == 1,
                comm: comm(&mut c),
                books: Default::default(),
            }),
            6 => encode::exit(tgid, ts),
            7 => encode::rq_complete(&RqComplete {
                ts_ns: ts,
                major: 7,
                minor: c.u8() as u32,
                sector: c.u64(),
                nr_sector: c.u32(),
                error: c.u8() as i8 as i32,
            }),
            8 => {
                let n = c.u8() as usize;
                c.bytes(n).to_vec()
            }
            _ => {
                if c.u8() % 2 == 0 {
                    steps.push(Step::Tick(ts));
                } else {
                    let n = c.u8() % 8;
                    let slots = (0..n)
                        .map(|_| AuditSlot {
                            folio: folio(&mut c),
                            refcount: c.u16() as i16 as i32 * 8,
                            large: (c.u8() & 1) as u32,
                        })
                        .collect();
                    steps.push(Step::Audit(ts, slots));
                }
                continue;
            }
        };
        steps.push(Step::Record(ts, rec));
    }
    steps
}

/// A pipeline as `run` makes one, with a leak age so that ticks judge.
pub fn pipeline(flags: FollFlags) -> Pipeline {
    let config = LedgerConfig {
        leak_age_ns: Some(2_000_000_000),
        ..LedgerConfig::default()
    };
    let mut p = Pipeline::new(Ledger::new(flags, config));
    p.model.start(1_000_000_000_000);
    p
}

/// Feeds the steps through a pipeline and finishes it; returns the
/// findings (the caller may check them against the ledger's promises).
pub fn drive(steps: &[Step], flags: FollFlags) -> (Pipeline, Vec<Finding>) {
    let mut p = pipeline(flags);
    let mut found = Vec::new();
    let mut now = 0;
    for s in steps {
        match s {
            Step::Record(ts, r) => {
                now = now.max(*ts);
                p.feed(r, &mut found);
            }
            Step::Tick(ts) => {
                now = now.max(*ts);
                p.tick(*ts, &mut found);
            }
            Step::Audit(ts, slots) => p.audit(slots, *ts, &mut found),
        }
    }
    p.finish(now, &mut found);
    (p, found)
}

/// Arbitrary bytes as one ring-buffer record: decoded, and fed to a fresh
/// pipeline.
pub fn one_record(data: &[u8]) {
    let _ = crate::stream::events::decode(data);
    let mut p = pipeline(FollFlags::FROM_6_3);
    let mut found = Vec::new();
    p.feed(data, &mut found);
    p.tick(u64::MAX, &mut found);
    p.finish(u64::MAX, &mut found);
}

/// Arbitrary bytes as a recording file: read, and every entry it yields
/// replayed through a pipeline, ticking on the recorded clock (bounded: a
/// recording's offsets are at most [`crate::trace::record::MAX_OFFSET_NS`]).
pub fn recording(data: &[u8]) -> Option<Recording> {
    let rec = Recording::parse(Path::new("fuzz.ptrec"), Bytes::copy_from_slice(data)).ok()?;
    let mut p = pipeline(rec.header.flags);
    let mut found = Vec::new();
    let start = rec.header.start_ns;
    for e in &rec.entries {
        match e {
            Entry::Record { offset_ns, record } => {
                p.feed(record, &mut found);
                p.tick(start.saturating_add(*offset_ns), &mut found);
            }
            Entry::Lost { offset_ns, .. } | Entry::End { offset_ns } => {
                p.tick(start.saturating_add(*offset_ns), &mut found)
            }
            Entry::Stack { .. } => {}
        }
    }
    p.finish(start.saturating_add(rec.duration_ns()), &mut found);
    Some(rec)
}

/// Makes arbitrary bytes pass a recording's outer checks (magic, version,
/// byte order, lengths within the data, every checksum right), so that what
/// is inside the header and the entries reaches the parsers behind them.
pub fn frame_as_recording(data: &mut [u8]) {
    use crate::trace::record::{MAGIC, VERSION};
    const OVERHEAD: usize = 4 + 1 + 8 + 4;
    if data.len() < 20 {
        return;
    }
    data[..8].copy_from_slice(MAGIC);
    data[8..10].copy_from_slice(&VERSION.to_le_bytes());
    data[10] = if cfg!(target_endian = "little") { 1 } else { 2 };
    let put = |d: &mut [u8], at: usize, v: u32| d[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let get = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap()) as usize;
    let len = get(data, 12).min(data.len() - 20);
    put(data, 12, len as u32);
    let crc = crc32fast::hash(&data[..16 + len]);
    put(data, 16 + len, crc);
    let mut at = 16 + len + 4;
    while data.len() - at >= OVERHEAD {
        let plen = get(data, at).min(data.len() - at - OVERHEAD);
        put(data, at, plen as u32);
        let end = at + OVERHEAD + plen;
        let crc = crc32fast::hash(&data[at + 4..end - 4]);
        put(data, end - 4, crc);
        at = end;
    }
}
