//! The event stream: ring-buffer records decoded into plain Rust values.
//!
//! Records are the `#[repr(C)]` structs of `pintrace-common`, in the host's
//! byte order (the probes run on the same machine), read and written as
//! those structs (zerocopy, at any alignment): the layout is written once.
//! Decoding checks every length first, so a truncated or foreign record is
//! an error, never a panic.

pub use pintrace_common::BioPhase;
use pintrace_common::{
    AcquireEvent, AcquireWithFolios, BioEvent, ExitEvent, FolioBatch, FromBytes, ReleaseEvent,
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

/// The record of `tag` at the front of `record`, or `Truncated` when it is
/// shorter than its struct.
fn read<T: FromBytes>(tag: u32, record: &[u8]) -> Result<T, DecodeError> {
    T::read_from_prefix(record)
        .map(|(r, _)| r)
        .map_err(|_| DecodeError::Truncated {
            tag,
            len: record.len(),
            need: size_of::<T>(),
        })
}

/// `bpf_get_current_pid_tgid()`'s halves: (tgid, tid).
fn split_pid_tgid(pid_tgid: u64) -> (u32, u32) {
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
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
        let acquire = decode_body(TAG_ACQUIRE, acquire)?;
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
    let Some(tag) = record.first_chunk::<4>() else {
        return Err(DecodeError::Truncated {
            tag: 0,
            len: record.len(),
            need: 4,
        });
    };
    decode_body(u32::from_ne_bytes(*tag), record)
}

/// A record of `tag` (its own tag, at the front, is not read again): the
/// struct of its tag, at least as long as that (a longer one, from a newer
/// probe, decodes by its known prefix).
fn decode_body(tag: u32, record: &[u8]) -> Result<Event, DecodeError> {
    Ok(match tag {
        TAG_ACQUIRE => {
            let r: AcquireEvent = read(tag, record)?;
            let (tgid, tid) = split_pid_tgid(r.pid_tgid);
            Event::Acquire(Acquire {
                site: site(r.site)?,
                ts_ns: r.ts_ns,
                tgid,
                tid,
                start: r.start,
                pages_array: r.pages,
                ret: r.ret,
                nr_pages: r.nr_pages,
                gup_flags: r.gup_flags,
                stack_id: r.stack_id,
                folio_records: r.folio_records,
                comm: Comm(r.comm),
            })
        }
        TAG_FOLIOS => {
            let r: FolioBatch = read(tag, record)?;
            let (tgid, tid) = split_pid_tgid(r.pid_tgid);
            Event::Folios(Folios {
                site: site(r.site)?,
                ts_ns: r.ts_ns,
                tgid,
                tid,
                first: r.first,
                count: r.count.min(FOLIOS_PER_RECORD as u32),
                folios: r.folios,
            })
        }
        TAG_RELEASE => {
            let r: ReleaseEvent = read(tag, record)?;
            let (tgid, tid) = split_pid_tgid(r.pid_tgid);
            Event::Release(Release {
                site: site(r.site)?,
                ts_ns: r.ts_ns,
                tgid,
                tid,
                folio: r.folio,
                refs: r.refs,
                gup_flags: r.gup_flags,
                refcount: r.refcount,
                stack_id: r.stack_id,
                large: r.large != 0,
                comm: Comm(r.comm),
            })
        }
        TAG_EXIT => {
            let r: ExitEvent = read(tag, record)?;
            Event::Exit {
                tgid: r.tgid,
                ts_ns: r.ts_ns,
            }
        }
        TAG_BIO => {
            let r: BioEvent = read(tag, record)?;
            let phase = BioPhase::from_u32(r.phase).ok_or(DecodeError::UnknownBioPhase(r.phase))?;
            let (tgid, tid) = split_pid_tgid(r.pid_tgid);
            Event::Bio(Bio {
                phase,
                ts_ns: r.ts_ns,
                tgid,
                tid,
                bio: r.bio,
                sector: r.sector,
                bytes: r.bytes,
                major: r.dev >> 20,
                minor: r.dev & 0xfffff,
                opf: r.opf,
                flags: r.flags,
                status: r.status,
            })
        }
        TAG_RQ_COMPLETE => {
            let r: RqCompleteEvent = read(tag, record)?;
            Event::RqComplete(RqComplete {
                ts_ns: r.ts_ns,
                // The kernel's internal dev_t: 12 bits of major, 20 of minor.
                major: r.dev >> 20,
                minor: r.dev & 0xfffff,
                sector: r.sector,
                nr_sector: r.nr_sector,
                error: r.error,
            })
        }
        other => return Err(DecodeError::UnknownTag(other)),
    })
}

/// Encodes records exactly as the probes write them (for tests, replay and
/// benchmarks; built with the `testing` feature).
#[cfg(any(test, feature = "testing"))]
pub mod encode {
    use super::*;
    use pintrace_common::IntoBytes;

    fn pid_tgid(tgid: u32, tid: u32) -> u64 {
        ((tgid as u64) << 32) | tid as u64
    }

    /// The kernel's internal dev_t: 12 bits of major, 20 of minor.
    fn dev(major: u32, minor: u32) -> u32 {
        (major << 20) | (minor & 0xfffff)
    }

    fn acquire_event(a: &Acquire, tag: u32) -> AcquireEvent {
        AcquireEvent {
            tag,
            site: a.site as u32,
            ts_ns: a.ts_ns,
            pid_tgid: pid_tgid(a.tgid, a.tid),
            start: a.start,
            pages: a.pages_array,
            ret: a.ret,
            nr_pages: a.nr_pages,
            gup_flags: a.gup_flags,
            stack_id: a.stack_id,
            folio_records: a.folio_records,
            comm: a.comm.0,
        }
    }

    fn folio_batch(f: &Folios) -> FolioBatch {
        FolioBatch {
            tag: TAG_FOLIOS,
            count: f.count,
            ts_ns: f.ts_ns,
            pid_tgid: pid_tgid(f.tgid, f.tid),
            first: f.first,
            site: f.site as u32,
            folios: f.folios,
        }
    }

    pub fn acquire(a: &Acquire) -> Vec<u8> {
        acquire_event(a, TAG_ACQUIRE).as_bytes().to_vec()
    }

    pub fn folios(f: &Folios) -> Vec<u8> {
        folio_batch(f).as_bytes().to_vec()
    }

    /// An acquire and its one folio batch in one record, as the probe
    /// writes a call of at most 32 pages.
    pub fn acquire_with_folios(a: &Acquire, f: &Folios) -> Vec<u8> {
        AcquireWithFolios {
            acquire: acquire_event(a, TAG_ACQUIRE_FOLIOS),
            batch: folio_batch(f),
        }
        .as_bytes()
        .to_vec()
    }

    pub fn release(r: &Release) -> Vec<u8> {
        ReleaseEvent {
            tag: TAG_RELEASE,
            site: r.site as u32,
            ts_ns: r.ts_ns,
            pid_tgid: pid_tgid(r.tgid, r.tid),
            folio: r.folio,
            refs: r.refs,
            gup_flags: r.gup_flags,
            refcount: r.refcount,
            stack_id: r.stack_id,
            large: r.large as u32,
            _reserved: 0,
            comm: r.comm.0,
        }
        .as_bytes()
        .to_vec()
    }

    pub fn exit(tgid: u32, ts_ns: u64) -> Vec<u8> {
        ExitEvent {
            tag: TAG_EXIT,
            tgid,
            ts_ns,
        }
        .as_bytes()
        .to_vec()
    }

    pub fn bio(b: &Bio) -> Vec<u8> {
        BioEvent {
            tag: TAG_BIO,
            phase: b.phase as u32,
            ts_ns: b.ts_ns,
            pid_tgid: pid_tgid(b.tgid, b.tid),
            bio: b.bio,
            sector: b.sector,
            bytes: b.bytes,
            dev: dev(b.major, b.minor),
            opf: b.opf,
            flags: b.flags,
            status: b.status,
            _reserved: 0,
        }
        .as_bytes()
        .to_vec()
    }

    pub fn rq_complete(r: &RqComplete) -> Vec<u8> {
        RqCompleteEvent {
            tag: TAG_RQ_COMPLETE,
            dev: dev(r.major, r.minor),
            ts_ns: r.ts_ns,
            sector: r.sector,
            nr_sector: r.nr_sector,
            error: r.error,
        }
        .as_bytes()
        .to_vec()
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

    /// One record of `tag` against its struct: the encoder writes the
    /// struct's bytes, the decoder reads them (also at an odd address) into
    /// `event`, and one byte less is too short by the struct's size.
    fn check_record(tag: u32, raw: &[u8], size: usize, encoded: Vec<u8>, event: Event) {
        assert_eq!(raw.len(), size, "tag {tag}");
        assert_eq!(encoded, raw, "tag {tag}");
        assert_eq!(decode(raw), Ok(event), "tag {tag}");
        let mut odd = vec![0u8];
        odd.extend_from_slice(raw);
        assert_eq!(decode(&odd[1..]), Ok(event), "tag {tag}, unaligned");
        assert_eq!(
            decode(&raw[..size - 1]),
            Err(DecodeError::Truncated {
                tag,
                len: size - 1,
                need: size
            })
        );
    }

    #[test]
    fn every_record_matches_its_struct() {
        use pintrace_common::IntoBytes;
        let pid_tgid = (0x0102_0304u64 << 32) | 0x0506_0708;
        let (tgid, tid) = (0x0102_0304, 0x0506_0708);

        let raw = AcquireEvent {
            tag: TAG_ACQUIRE,
            site: Site::GetUserPagesRemote as u32,
            ts_ns: 0x1111,
            pid_tgid,
            start: 0x2222,
            pages: 0x3333,
            ret: -4,
            nr_pages: 5,
            gup_flags: 6,
            stack_id: -7,
            folio_records: 8,
            comm: comm("acquirer").0,
        };
        let a = Acquire {
            site: Site::GetUserPagesRemote,
            ts_ns: 0x1111,
            tgid,
            tid,
            start: 0x2222,
            pages_array: 0x3333,
            ret: -4,
            nr_pages: 5,
            gup_flags: 6,
            stack_id: -7,
            folio_records: 8,
            comm: comm("acquirer"),
        };
        let size = size_of::<AcquireEvent>();
        check_record(
            TAG_ACQUIRE,
            raw.as_bytes(),
            size,
            encode::acquire(&a),
            Event::Acquire(a),
        );

        let mut folios = [0u64; FOLIOS_PER_RECORD];
        for (i, f) in folios.iter_mut().enumerate() {
            *f = 0xffff_ea00_0000_0000 + 0x40 * i as u64;
        }
        let raw_batch = FolioBatch {
            tag: TAG_FOLIOS,
            count: 9,
            ts_ns: 0x1111,
            pid_tgid,
            first: 10,
            site: Site::PinUserPagesUnlocked as u32,
            folios,
        };
        let f = Folios {
            site: Site::PinUserPagesUnlocked,
            ts_ns: 0x1111,
            tgid,
            tid,
            first: 10,
            count: 9,
            folios,
        };
        let size = size_of::<FolioBatch>();
        check_record(
            TAG_FOLIOS,
            raw_batch.as_bytes(),
            size,
            encode::folios(&f),
            Event::Folios(f),
        );

        // The combined record: its two halves as the two records.
        let combined = AcquireWithFolios {
            acquire: AcquireEvent {
                tag: TAG_ACQUIRE_FOLIOS,
                ..raw
            },
            batch: raw_batch,
        };
        assert_eq!(
            combined.as_bytes().len(),
            size_of::<AcquireEvent>() + size_of::<FolioBatch>()
        );
        assert_eq!(encode::acquire_with_folios(&a, &f), combined.as_bytes());
        let mut got = Vec::new();
        decode_each(combined.as_bytes(), |e| got.push(*e)).unwrap();
        assert_eq!(got, [Event::Acquire(a), Event::Folios(f)]);

        let raw = ReleaseEvent {
            tag: TAG_RELEASE,
            site: Site::GupPutFolio as u32,
            ts_ns: 0x1111,
            pid_tgid,
            folio: 0xffff_ea00_0000_1000,
            refs: 11,
            gup_flags: 12,
            refcount: 13,
            stack_id: 14,
            large: 1,
            _reserved: 0,
            comm: comm("releaser").0,
        };
        let r = Release {
            site: Site::GupPutFolio,
            ts_ns: 0x1111,
            tgid,
            tid,
            folio: 0xffff_ea00_0000_1000,
            refs: 11,
            gup_flags: 12,
            refcount: 13,
            stack_id: 14,
            large: true,
            comm: comm("releaser"),
        };
        let size = size_of::<ReleaseEvent>();
        check_record(
            TAG_RELEASE,
            raw.as_bytes(),
            size,
            encode::release(&r),
            Event::Release(r),
        );

        let raw = ExitEvent {
            tag: TAG_EXIT,
            tgid: 15,
            ts_ns: 0x1111,
        };
        let size = size_of::<ExitEvent>();
        let exit = Event::Exit {
            tgid: 15,
            ts_ns: 0x1111,
        };
        check_record(
            TAG_EXIT,
            raw.as_bytes(),
            size,
            encode::exit(15, 0x1111),
            exit,
        );

        let raw = BioEvent {
            tag: TAG_BIO,
            phase: BioPhase::Release as u32,
            ts_ns: 0x1111,
            pid_tgid,
            bio: 0xffff_8880_0000_2000,
            sector: 16,
            bytes: 17,
            dev: (259 << 20) | 3,
            opf: 18,
            flags: 19,
            status: -20,
            _reserved: 0,
        };
        let b = Bio {
            phase: BioPhase::Release,
            ts_ns: 0x1111,
            tgid,
            tid,
            bio: 0xffff_8880_0000_2000,
            sector: 16,
            bytes: 17,
            major: 259,
            minor: 3,
            opf: 18,
            flags: 19,
            status: -20,
        };
        let size = size_of::<BioEvent>();
        check_record(
            TAG_BIO,
            raw.as_bytes(),
            size,
            encode::bio(&b),
            Event::Bio(b),
        );

        let raw = RqCompleteEvent {
            tag: TAG_RQ_COMPLETE,
            dev: (8 << 20) | 16,
            ts_ns: 0x1111,
            sector: 21,
            nr_sector: 22,
            error: -23,
        };
        let rq = RqComplete {
            ts_ns: 0x1111,
            major: 8,
            minor: 16,
            sector: 21,
            nr_sector: 22,
            error: -23,
        };
        let size = size_of::<RqCompleteEvent>();
        let encoded = encode::rq_complete(&rq);
        check_record(
            TAG_RQ_COMPLETE,
            raw.as_bytes(),
            size,
            encoded,
            Event::RqComplete(rq),
        );
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
