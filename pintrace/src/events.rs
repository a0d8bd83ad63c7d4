//! The event stream: ring-buffer records decoded into plain Rust values.
//!
//! Records are the `#[repr(C)]` structs of `pintrace-common`, in the host's
//! byte order (the probes run on the same machine). Decoding goes through
//! `bytes::Buf` and checks every length, so a truncated or foreign record is an
//! error, never a panic.

use bytes::Buf;
pub use pintrace_common::BioPhase;
use pintrace_common::{
    AcquireEvent, AcquireWithFolios, BioEvent, ExitEvent, FolioBatch, ReleaseEvent,
    RqCompleteEvent, Site, FOLIOS_PER_RECORD, FOLIO_ADDR_MASK, FOLIO_BELOW_1_PIN,
    FOLIO_BELOW_2_PINS, TAG_ACQUIRE, TAG_ACQUIRE_FOLIOS, TAG_BIO, TAG_EXIT, TAG_FOLIOS,
    TAG_RELEASE, TAG_RQ_COMPLETE,
};
use serde::{Serialize, Serializer};
use std::{fmt, mem::size_of};

/// A task's `comm`, as the kernel keeps it (NUL-padded, at most 16 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.0[..end])
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Comm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

/// One exported GUP call, seen at its return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquire {
    pub site: Site,
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub start: u64,
    pub pages_array: u64,
    /// Pages grabbed, or a negative errno.
    pub ret: i64,
    pub nr_pages: i32,
    pub gup_flags: u32,
    /// Kernel stack id, or a negative errno when the stack was not stored.
    pub stack_id: i32,
    /// [`Folios`] batches that follow for this call.
    pub folio_records: u32,
    pub comm: Comm,
}

/// The folios of pages `first..first + count` of one acquire call, matched to
/// it by `(tid, ts_ns)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folios {
    pub site: Site,
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub first: u32,
    pub count: u32,
    pub folios: [u64; FOLIOS_PER_RECORD],
}

/// What the probe saw of a folio's refcount when the acquire returned;
/// meaningful for small folios only (a pin adds 1024 there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinEvidence {
    /// Refcount below 1024: no pin on the folio.
    pub below_1_pin: bool,
    /// Refcount below 2048: at most one pin on the folio.
    pub below_2_pins: bool,
}

impl Folios {
    /// The folio addresses (entries whose page could not be read are 0).
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries().map(|(f, _)| f)
    }

    /// Folio addresses with the pin evidence the probe packed in their low bits.
    pub fn entries(&self) -> impl Iterator<Item = (u64, PinEvidence)> + '_ {
        self.folios[..(self.count as usize).min(FOLIOS_PER_RECORD)]
            .iter()
            .map(|&x| {
                (
                    x & FOLIO_ADDR_MASK,
                    PinEvidence {
                        below_1_pin: x & FOLIO_BELOW_1_PIN != 0,
                        below_2_pins: x & FOLIO_BELOW_2_PINS != 0,
                    },
                )
            })
    }
}

/// References dropped from one folio by `gup_put_folio`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    pub site: Site,
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub folio: u64,
    pub refs: i32,
    pub gup_flags: u32,
    /// `folio->_refcount` just before the release.
    pub refcount: i32,
    pub stack_id: i32,
    pub large: bool,
    pub comm: Comm,
}

impl Acquire {
    /// Pages actually grabbed by this call.
    pub fn pages_grabbed(&self) -> u64 {
        self.ret.max(0) as u64
    }
}

/// A blk-mq request completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RqComplete {
    pub ts_ns: u64,
    pub major: u32,
    pub minor: u32,
    pub sector: u64,
    pub nr_sector: u32,
    pub error: i32,
}

/// One step of a Direct I/O bio's life (see [`BioPhase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bio {
    pub phase: BioPhase,
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// The kernel's `struct bio *`: an identity only while the bio lives.
    pub bio: u64,
    pub sector: u64,
    pub bytes: u32,
    pub major: u32,
    pub minor: u32,
    pub opf: u32,
    pub flags: u32,
    pub status: i32,
}

impl Bio {
    /// A write (REQ_OP_WRITE), else a read.
    pub fn is_write(&self) -> bool {
        self.opf & 0xff == 1
    }
}

/// Decoded on the stack once per record; boxing the folio batch would put an
/// allocation on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Acquire(Acquire),
    Folios(Folios),
    Release(Release),
    RqComplete(RqComplete),
    /// A process (thread-group leader) exited.
    Exit {
        tgid: u32,
        ts_ns: u64,
    },
    Bio(Bio),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated { tag: u32, len: usize, need: usize },
    UnknownTag(u32),
    UnknownSite(u32),
    UnknownBioPhase(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { tag, len, need } => {
                write!(f, "record with tag {tag} is {len} bytes, needs {need}")
            }
            DecodeError::UnknownTag(t) => write!(f, "unknown record tag {t}"),
            DecodeError::UnknownSite(s) => write!(f, "unknown acquire site {s}"),
            DecodeError::UnknownBioPhase(p) => write!(f, "unknown bio phase {p}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn site(raw: u32) -> Result<Site, DecodeError> {
    Site::from_u32(raw).ok_or(DecodeError::UnknownSite(raw))
}

fn comm(buf: &mut &[u8]) -> Comm {
    let mut c = [0u8; 16];
    buf.copy_to_slice(&mut c);
    Comm(c)
}

/// Decodes one ring-buffer record into the events it holds, in order: one,
/// or two for a [`TAG_ACQUIRE_FOLIOS`] record (its acquire, then its folio
/// batch).
pub fn decode_each(record: &[u8], mut f: impl FnMut(&Event)) -> Result<(), DecodeError> {
    const SPLIT: usize = size_of::<AcquireEvent>();
    if record.len() >= 4 && record[..4] == TAG_ACQUIRE_FOLIOS.to_ne_bytes() {
        let need = size_of::<AcquireWithFolios>();
        if record.len() < need {
            return Err(DecodeError::Truncated {
                tag: TAG_ACQUIRE_FOLIOS,
                len: record.len(),
                need,
            });
        }
        let (acquire, batch) = record.split_at(SPLIT);
        let acquire = decode_body(TAG_ACQUIRE, &acquire[4..])?;
        let batch = decode(batch)?;
        if !matches!(batch, Event::Folios(_)) {
            return Err(DecodeError::UnknownTag(u32::from_ne_bytes(
                record[SPLIT..SPLIT + 4].try_into().unwrap_or_default(),
            )));
        }
        f(&acquire);
        f(&batch);
        return Ok(());
    }
    f(&decode(record)?);
    Ok(())
}

/// Decodes one ring-buffer record of a single event (every tag but
/// [`TAG_ACQUIRE_FOLIOS`], which [`decode_each`] splits).
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    let mut buf = record;
    if buf.remaining() < 4 {
        return Err(DecodeError::Truncated {
            tag: 0,
            len: record.len(),
            need: 4,
        });
    }
    let tag = buf.get_u32_ne();
    let need = match tag {
        TAG_ACQUIRE => size_of::<AcquireEvent>(),
        TAG_RQ_COMPLETE => size_of::<RqCompleteEvent>(),
        TAG_FOLIOS => size_of::<FolioBatch>(),
        TAG_RELEASE => size_of::<ReleaseEvent>(),
        TAG_EXIT => size_of::<ExitEvent>(),
        TAG_BIO => size_of::<BioEvent>(),
        other => return Err(DecodeError::UnknownTag(other)),
    };
    if record.len() < need {
        return Err(DecodeError::Truncated {
            tag,
            len: record.len(),
            need,
        });
    }
    decode_body(tag, buf)
}

/// The fields after the tag of a record of `tag`, long enough already.
fn decode_body(tag: u32, mut buf: &[u8]) -> Result<Event, DecodeError> {
    Ok(match tag {
        TAG_ACQUIRE => {
            let site = site(buf.get_u32_ne())?;
            let ts_ns = buf.get_u64_ne();
            let pid_tgid = buf.get_u64_ne();
            let start = buf.get_u64_ne();
            let pages_array = buf.get_u64_ne();
            let ret = buf.get_i64_ne();
            let nr_pages = buf.get_i32_ne();
            let gup_flags = buf.get_u32_ne();
            let stack_id = buf.get_i32_ne();
            let folio_records = buf.get_u32_ne();
            Event::Acquire(Acquire {
                site,
                ts_ns,
                tgid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
                start,
                pages_array,
                ret,
                nr_pages,
                gup_flags,
                stack_id,
                folio_records,
                comm: comm(&mut buf),
            })
        }
        TAG_FOLIOS => {
            let count = buf.get_u32_ne();
            let ts_ns = buf.get_u64_ne();
            let pid_tgid = buf.get_u64_ne();
            let first = buf.get_u32_ne();
            let site = site(buf.get_u32_ne())?;
            let mut folios = [0u64; FOLIOS_PER_RECORD];
            for f in folios.iter_mut() {
                *f = buf.get_u64_ne();
            }
            Event::Folios(Folios {
                site,
                ts_ns,
                tgid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
                first,
                count: count.min(FOLIOS_PER_RECORD as u32),
                folios,
            })
        }
        TAG_RELEASE => {
            let site = site(buf.get_u32_ne())?;
            let ts_ns = buf.get_u64_ne();
            let pid_tgid = buf.get_u64_ne();
            let folio = buf.get_u64_ne();
            let refs = buf.get_i32_ne();
            let gup_flags = buf.get_u32_ne();
            let refcount = buf.get_i32_ne();
            let stack_id = buf.get_i32_ne();
            let large = buf.get_u32_ne() != 0;
            let _reserved = buf.get_u32_ne();
            Event::Release(Release {
                site,
                ts_ns,
                tgid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
                folio,
                refs,
                gup_flags,
                refcount,
                stack_id,
                large,
                comm: comm(&mut buf),
            })
        }
        TAG_EXIT => {
            let tgid = buf.get_u32_ne();
            let ts_ns = buf.get_u64_ne();
            Event::Exit { tgid, ts_ns }
        }
        TAG_BIO => {
            let raw = buf.get_u32_ne();
            let phase = BioPhase::from_u32(raw).ok_or(DecodeError::UnknownBioPhase(raw))?;
            let ts_ns = buf.get_u64_ne();
            let pid_tgid = buf.get_u64_ne();
            let bio = buf.get_u64_ne();
            let sector = buf.get_u64_ne();
            let bytes = buf.get_u32_ne();
            let dev = buf.get_u32_ne();
            let opf = buf.get_u32_ne();
            let flags = buf.get_u32_ne();
            let status = buf.get_i32_ne();
            Event::Bio(Bio {
                phase,
                ts_ns,
                tgid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
                bio,
                sector,
                bytes,
                major: dev >> 20,
                minor: dev & 0xfffff,
                opf,
                flags,
                status,
            })
        }
        _ => {
            let dev = buf.get_u32_ne();
            let ts_ns = buf.get_u64_ne();
            let sector = buf.get_u64_ne();
            let nr_sector = buf.get_u32_ne();
            let error = buf.get_i32_ne();
            Event::RqComplete(RqComplete {
                ts_ns,
                // The kernel's internal dev_t: 12 bits of major, 20 of minor.
                major: dev >> 20,
                minor: dev & 0xfffff,
                sector,
                nr_sector,
                error,
            })
        }
    })
}

/// Encodes records exactly as the probes write them (for tests, replay and
/// benchmarks).
pub mod encode {
    use super::*;
    use bytes::BufMut;

    pub fn acquire(a: &Acquire) -> Vec<u8> {
        let mut v = Vec::with_capacity(size_of::<AcquireEvent>());
        v.put_u32_ne(TAG_ACQUIRE);
        v.put_u32_ne(a.site as u32);
        v.put_u64_ne(a.ts_ns);
        v.put_u64_ne(((a.tgid as u64) << 32) | a.tid as u64);
        v.put_u64_ne(a.start);
        v.put_u64_ne(a.pages_array);
        v.put_i64_ne(a.ret);
        v.put_i32_ne(a.nr_pages);
        v.put_u32_ne(a.gup_flags);
        v.put_i32_ne(a.stack_id);
        v.put_u32_ne(a.folio_records);
        v.put_slice(&a.comm.0);
        v
    }

    pub fn folios(f: &Folios) -> Vec<u8> {
        let mut v = Vec::with_capacity(size_of::<FolioBatch>());
        v.put_u32_ne(TAG_FOLIOS);
        v.put_u32_ne(f.count);
        v.put_u64_ne(f.ts_ns);
        v.put_u64_ne(((f.tgid as u64) << 32) | f.tid as u64);
        v.put_u32_ne(f.first);
        v.put_u32_ne(f.site as u32);
        for x in f.folios {
            v.put_u64_ne(x);
        }
        v
    }

    /// An acquire and its one folio batch in one record, as the probe
    /// writes a call of at most 32 pages.
    pub fn acquire_with_folios(a: &Acquire, f: &Folios) -> Vec<u8> {
        let mut v = acquire(a);
        v[..4].copy_from_slice(&TAG_ACQUIRE_FOLIOS.to_ne_bytes());
        v.extend_from_slice(&folios(f));
        v
    }

    pub fn release(r: &Release) -> Vec<u8> {
        let mut v = Vec::with_capacity(size_of::<ReleaseEvent>());
        v.put_u32_ne(TAG_RELEASE);
        v.put_u32_ne(r.site as u32);
        v.put_u64_ne(r.ts_ns);
        v.put_u64_ne(((r.tgid as u64) << 32) | r.tid as u64);
        v.put_u64_ne(r.folio);
        v.put_i32_ne(r.refs);
        v.put_u32_ne(r.gup_flags);
        v.put_i32_ne(r.refcount);
        v.put_i32_ne(r.stack_id);
        v.put_u32_ne(r.large as u32);
        v.put_u32_ne(0);
        v.put_slice(&r.comm.0);
        v
    }

    pub fn exit(tgid: u32, ts_ns: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(size_of::<ExitEvent>());
        v.put_u32_ne(TAG_EXIT);
        v.put_u32_ne(tgid);
        v.put_u64_ne(ts_ns);
        v
    }

    pub fn bio(b: &Bio) -> Vec<u8> {
        let mut v = Vec::with_capacity(size_of::<BioEvent>());
        v.put_u32_ne(TAG_BIO);
        v.put_u32_ne(b.phase as u32);
        v.put_u64_ne(b.ts_ns);
        v.put_u64_ne(((b.tgid as u64) << 32) | b.tid as u64);
        v.put_u64_ne(b.bio);
        v.put_u64_ne(b.sector);
        v.put_u32_ne(b.bytes);
        v.put_u32_ne((b.major << 20) | (b.minor & 0xfffff));
        v.put_u32_ne(b.opf);
        v.put_u32_ne(b.flags);
        v.put_i32_ne(b.status);
        v.put_u32_ne(0);
        v
    }

    pub fn rq_complete(r: &RqComplete) -> Vec<u8> {
        let mut v = Vec::with_capacity(size_of::<RqCompleteEvent>());
        v.put_u32_ne(TAG_RQ_COMPLETE);
        v.put_u32_ne((r.major << 20) | (r.minor & 0xfffff));
        v.put_u64_ne(r.ts_ns);
        v.put_u64_ne(r.sector);
        v.put_u32_ne(r.nr_sector);
        v.put_i32_ne(r.error);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(s: &str) -> Comm {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        Comm(c)
    }

    fn sample() -> Acquire {
        Acquire {
            site: Site::PinUserPagesFast,
            ts_ns: 42,
            tgid: 100,
            tid: 101,
            start: 0x7f00_0000_0000,
            pages_array: 0xffff_8880_0000_0000,
            ret: 256,
            nr_pages: 256,
            gup_flags: 1 << 19,
            stack_id: 3,
            folio_records: 8,
            comm: comm("pintrace"),
        }
    }

    #[test]
    fn acquire_round_trips() {
        let a = sample();
        let bytes = encode::acquire(&a);
        assert_eq!(bytes.len(), size_of::<AcquireEvent>());
        assert_eq!(decode(&bytes), Ok(Event::Acquire(a)));
        assert_eq!(a.comm.to_string(), "pintrace");
    }

    #[test]
    fn a_combined_record_is_its_acquire_then_its_batch() {
        let mut a = sample();
        a.ret = 3;
        a.nr_pages = 3;
        a.folio_records = 1;
        let mut folios = [0u64; FOLIOS_PER_RECORD];
        folios[..3].copy_from_slice(&[0x1000, 0x2000 | FOLIO_BELOW_1_PIN, 0x3000]);
        let f = Folios {
            site: a.site,
            ts_ns: a.ts_ns,
            tgid: a.tgid,
            tid: a.tid,
            first: 0,
            count: 3,
            folios,
        };
        let bytes = encode::acquire_with_folios(&a, &f);
        assert_eq!(bytes.len(), size_of::<AcquireWithFolios>());
        let mut got = Vec::new();
        decode_each(&bytes, |e| got.push(*e)).unwrap();
        assert_eq!(got, [Event::Acquire(a), Event::Folios(f)]);
        // A single-event decode refuses it rather than dropping the batch.
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::UnknownTag(TAG_ACQUIRE_FOLIOS))
        );
        // Cut short, or with something else where the batch should be.
        let short = &bytes[..bytes.len() - 1];
        assert!(matches!(
            decode_each(short, |_| {}),
            Err(DecodeError::Truncated {
                tag: TAG_ACQUIRE_FOLIOS,
                ..
            })
        ));
        let mut wrong = bytes.clone();
        let split = size_of::<AcquireEvent>();
        wrong[split..split + 4].copy_from_slice(&TAG_RELEASE.to_ne_bytes());
        let mut n = 0;
        assert!(decode_each(&wrong, |_| n += 1).is_err());
        assert_eq!(n, 0, "nothing is applied from a bad record");
    }

    #[test]
    fn rq_complete_round_trips() {
        let r = RqComplete {
            ts_ns: 7,
            major: 7,
            minor: 0,
            sector: 2048,
            nr_sector: 16,
            error: 0,
        };
        assert_eq!(decode(&encode::rq_complete(&r)), Ok(Event::RqComplete(r)));
    }

    #[test]
    fn matches_the_kernel_struct_layout() {
        // The probe writes AcquireEvent; decoding its raw bytes must agree.
        let raw = AcquireEvent {
            tag: TAG_ACQUIRE,
            site: Site::GetUserPagesFast as u32,
            ts_ns: 1,
            pid_tgid: (5u64 << 32) | 6,
            start: 2,
            pages: 3,
            ret: -14,
            nr_pages: 4,
            gup_flags: 0x4,
            stack_id: -17,
            folio_records: 0,
            comm: comm("dd").0,
        };
        // SAFETY: AcquireEvent is repr(C) plain integers without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const AcquireEvent).cast::<u8>(),
                size_of::<AcquireEvent>(),
            )
        };
        let Event::Acquire(a) = decode(bytes).unwrap() else {
            panic!("not an acquire")
        };
        assert_eq!((a.tgid, a.tid, a.ret, a.pages_grabbed()), (5, 6, -14, 0));
        assert_eq!(a.site, Site::GetUserPagesFast);
    }

    #[test]
    fn folios_release_and_exit_round_trip() {
        let mut folios = [0u64; FOLIOS_PER_RECORD];
        folios[0] = 0xffffea0000001000;
        folios[1] = 0xffffea0000001040;
        let f = Folios {
            site: Site::PinUserPagesFast,
            ts_ns: 9,
            tgid: 1,
            tid: 2,
            first: 32,
            count: 2,
            folios,
        };
        let bytes = encode::folios(&f);
        assert_eq!(bytes.len(), size_of::<FolioBatch>());
        assert_eq!(decode(&bytes), Ok(Event::Folios(f)));
        assert_eq!(f.iter().count(), 2);
        let r = Release {
            site: Site::GupPutFolio,
            ts_ns: 10,
            tgid: 1,
            tid: 2,
            folio: 0xffffea0000001000,
            refs: 1,
            gup_flags: 1 << 19,
            refcount: 1025,
            stack_id: 4,
            large: true,
            comm: comm("fio"),
        };
        let bytes = encode::release(&r);
        assert_eq!(bytes.len(), size_of::<ReleaseEvent>());
        assert_eq!(decode(&bytes), Ok(Event::Release(r)));
        assert_eq!(
            decode(&encode::exit(7, 11)),
            Ok(Event::Exit { tgid: 7, ts_ns: 11 })
        );
    }

    #[test]
    fn bio_round_trips_and_rejects_unknown_phases() {
        let b = Bio {
            phase: BioPhase::FillEnd,
            ts_ns: 12,
            tgid: 3,
            tid: 4,
            bio: 0xffff_8880_1234_5600,
            sector: 2048,
            bytes: 65536,
            major: 7,
            minor: 1,
            opf: 1,
            flags: 1,
            status: 0,
        };
        let bytes = encode::bio(&b);
        assert_eq!(bytes.len(), size_of::<BioEvent>());
        assert_eq!(decode(&bytes), Ok(Event::Bio(b)));
        assert!(b.is_write());
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownBioPhase(9)));
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(matches!(
            decode(&[1, 0]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut bytes = encode::acquire(&sample());
        bytes.truncate(20);
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::Truncated { tag: 1, .. })
        ));
        assert_eq!(
            decode(&99u32.to_ne_bytes()),
            Err(DecodeError::UnknownTag(99))
        );
        let mut bytes = encode::acquire(&sample());
        bytes[4] = 77;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownSite(77)));
    }
}
