//! The event stream: ring-buffer records decoded into plain Rust values.
//!
//! Records are the `#[repr(C)]` structs of `pintrace-common`, in the host's
//! byte order (the probes run on the same machine), read and written as
//! those structs (zerocopy, at any alignment): the layout is written once.
//! Decoding checks every length first, so a truncated or foreign record is
//! an error, never a panic.

pub use pintrace_common::BioPhase;
use pintrace_common::{
    AcquireEvent, AcquireWithFolios, BioDoneEvent, BioEvent, BookedEvent, ExitEvent, FolioBatch,
    FromBytes, ReleaseEvent, RqCompleteEvent, Site, BOOK_EXACT, BOOK_LONGTERM, FOLIOS_PER_RECORD,
    FOLIO_ADDR_MASK, FOLIO_BELOW_1_PIN, FOLIO_BELOW_2_PINS, RELEASE_BOOKS_CLOSED,
    RELEASE_BOOKS_EXACT, TAG_ACQUIRE, TAG_ACQUIRE_FOLIOS, TAG_ACQUIRE_FOLIOS_COUNTED, TAG_BIO,
    TAG_BIO_DONE, TAG_BOOKED, TAG_EXIT, TAG_FOLIOS, TAG_RELEASE, TAG_RQ_COMPLETE,
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
    /// The kernel books counted this call already ([`Counted`]): only its
    /// folios are news, the pins the books could not keep.
    pub counted: bool,
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
    /// With the kernel books, for a folio without a book: whether they
    /// closed it lately, and knew every pin on it then.
    pub books: BooksMark,
}

/// What the kernel books remember of a folio they hold no book for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BooksMark {
    #[default]
    None,
    /// Its last booked pin was released lately.
    Closed,
    /// The same, and the book knew every pin on the folio.
    ClosedExact,
}

impl BooksMark {
    pub fn from_bits(v: u32) -> BooksMark {
        match (v & RELEASE_BOOKS_CLOSED != 0, v & RELEASE_BOOKS_EXACT != 0) {
            (false, _) => BooksMark::None,
            (true, false) => BooksMark::Closed,
            (true, true) => BooksMark::ClosedExact,
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            BooksMark::None => 0,
            BooksMark::Closed => RELEASE_BOOKS_CLOSED,
            BooksMark::ClosedExact => RELEASE_BOOKS_CLOSED | RELEASE_BOOKS_EXACT,
        }
    }
}

/// A folio's kernel book, handed to the ledger when the probes escalate
/// the folio: its pins, all of one process and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Booked {
    pub ts_ns: u64,
    pub folio: u64,
    pub refs: u64,
    pub acquired_ns: u64,
    pub tgid: u32,
    pub stack_id: i32,
    pub site: Site,
    pub longterm: bool,
    /// The folio held no other pin when the book opened (small folios).
    pub exact: bool,
    pub comm: Comm,
    /// See [`pintrace_common::Book::fill_ns`].
    pub fill_ns: u64,
}

/// What the kernel books counted for one key since the last reading
/// (made by the agent from the per-CPU tally, not a ring record): calls,
/// pages and failed calls of an acquiring process at a site and stack, or
/// (`site` None) references released from its books.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub ts_ns: u64,
    pub tgid: u32,
    pub comm: Comm,
    pub site: Option<Site>,
    pub longterm: bool,
    pub stack_id: i32,
    pub calls: u64,
    pub pages: u64,
    pub failed: u64,
    pub released: u64,
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
    /// [`BioPhase::Done`]: its fill's start, as the kernel books of its
    /// pins carry it (0 otherwise).
    pub fill_ns: u64,
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
    Booked(Booked),
    Counted(Counted),
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
/// The kernel's internal dev_t: 12 bits of major, 20 of minor.
fn dev_major(dev: u32) -> u32 {
    dev >> 20
}

fn dev_minor(dev: u32) -> u32 {
    dev & 0xfffff
}

/// A bio record's step; `fill_ns` for [`BioPhase::Done`].
fn bio_of(r: &BioEvent, fill_ns: u64) -> Result<Bio, DecodeError> {
    let phase = BioPhase::from_u32(r.phase).ok_or(DecodeError::UnknownBioPhase(r.phase))?;
    let (tgid, tid) = split_pid_tgid(r.pid_tgid);
    Ok(Bio {
        phase,
        ts_ns: r.ts_ns,
        tgid,
        tid,
        bio: r.bio,
        sector: r.sector,
        bytes: r.bytes,
        major: dev_major(r.dev),
        minor: dev_minor(r.dev),
        opf: r.opf,
        flags: r.flags,
        status: r.status,
        fill_ns,
    })
}

fn split_pid_tgid(pid_tgid: u64) -> (u32, u32) {
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

/// Decodes one ring-buffer record into the events it holds, in order: one,
/// or two for a [`TAG_ACQUIRE_FOLIOS`] record (its acquire, then its folio
/// batch).
pub fn decode_each(record: &[u8], mut f: impl FnMut(&Event)) -> Result<(), DecodeError> {
    const SPLIT: usize = size_of::<AcquireEvent>();
    let tag = record.first_chunk::<4>().map(|t| u32::from_ne_bytes(*t));
    if let Some(tag @ (TAG_ACQUIRE_FOLIOS | TAG_ACQUIRE_FOLIOS_COUNTED)) = tag {
        let need = size_of::<AcquireWithFolios>();
        if record.len() < need {
            return Err(DecodeError::Truncated {
                tag,
                len: record.len(),
                need,
            });
        }
        let (acquire, batch) = record.split_at(SPLIT);
        let mut acquire = decode_body(TAG_ACQUIRE, acquire)?;
        if let Event::Acquire(a) = &mut acquire {
            a.counted = tag == TAG_ACQUIRE_FOLIOS_COUNTED;
        }
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
                counted: false,
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
                books: BooksMark::from_bits(r.books),
            })
        }
        TAG_BOOKED => {
            let r: BookedEvent = read(tag, record)?;
            let b = r.book;
            Event::Booked(Booked {
                ts_ns: r.ts_ns,
                folio: r.folio,
                refs: b.refs.max(0) as u64,
                acquired_ns: b.acquired_ns,
                tgid: b.tgid,
                stack_id: b.stack_id,
                site: site(b.site as u32)?,
                longterm: b.flags & BOOK_LONGTERM != 0,
                exact: b.flags & BOOK_EXACT != 0,
                comm: Comm(b.comm),
                fill_ns: b.fill_ns,
            })
        }
        TAG_EXIT => {
            let r: ExitEvent = read(tag, record)?;
            Event::Exit {
                tgid: r.tgid,
                ts_ns: r.ts_ns,
            }
        }
        TAG_BIO => Event::Bio(bio_of(&read::<BioEvent>(tag, record)?, 0)?),
        TAG_BIO_DONE => {
            let r: BioDoneEvent = read(tag, record)?;
            Event::Bio(bio_of(&r.bio, r.fill_ns)?)
        }
        TAG_RQ_COMPLETE => {
            let r: RqCompleteEvent = read(tag, record)?;
            Event::RqComplete(RqComplete {
                ts_ns: r.ts_ns,
                major: dev_major(r.dev),
                minor: dev_minor(r.dev),
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
pub mod encode;

#[cfg(test)]
mod tests;
