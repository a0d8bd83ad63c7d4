//! Recordings: the raw ring-buffer records of a run, in a compact, versioned
//! file, so a capture taken on a test box can be replayed anywhere (no root,
//! no kernel) through the same pipeline and views.
//!
//! Format (framing little-endian; the records inside are kept exactly as the
//! probes wrote them, in the byte order the header names):
//!
//! ```text
//! header   magic "PINTREC\n" | version u16 | byte order u8 (1 little, 2 big) | 0 u8
//!          | length u32 of the fields below
//!          | start_ns u64 (kernel CLOCK_MONOTONIC) | start_unix_ms u64
//!          | FOLL_GET u32 | FOLL_PIN u32 | FOLL_LONGTERM u32
//!          | kernel release (u16 length + UTF-8) | attach plan (u16 length + UTF-8)
//!          | [BIO_PAGE_PINNED mask u32: absent in older recordings, read as 0]
//!          | crc32 u32 of everything before it
//! entry*   length u32 of the payload | kind u8 | offset_ns u64 since start_ns
//!          | payload | crc32 u32 of kind, offset and payload
//! ```
//!
//! Entry kinds: 1 a ring-buffer record; 2 a kernel stack (id i32, u16 frame
//! count, frames as u16 length + UTF-8); 3 loss counters (u16 count, then
//! u8 length + name and u64 value each); 4 the end of the recording.
//!
//! A recording is appended as the run goes and flushed at every tick, so
//! after a crash it reads up to its last complete entry; the reader says
//! where the damage starts (file and offset).

use crate::kernel::flags::FollFlags;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

pub const MAGIC: &[u8; 8] = b"PINTREC\n";
pub const VERSION: u16 = 1;
/// The largest entry payload accepted; records are far smaller.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The latest entry accepted, after the start: a run lasts at most a year
/// (`--duration`); a later offset is damage, and would make a replay tick
/// through centuries.
pub const MAX_OFFSET_NS: u64 = 366 * 24 * 3600 * 1_000_000_000;

const KIND_RECORD: u8 = 1;
const KIND_STACK: u8 = 2;
const KIND_LOST: u8 = 3;
const KIND_END: u8 = 4;
/// length + kind + offset before the payload, crc after it.
const ENTRY_OVERHEAD: usize = 4 + 1 + 8 + 4;

fn host_order() -> u8 {
    if cfg!(target_endian = "little") {
        1
    } else {
        2
    }
}

/// What the header says about the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The kernel clock at the start of the run.
    pub start_ns: u64,
    /// Wall clock at the start, ms since the Unix epoch.
    pub start_unix_ms: u64,
    pub flags: FollFlags,
    /// The kernel release.
    pub kernel: String,
    /// The attach plan's summary.
    pub plan: String,
}

/// One entry of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A raw ring-buffer record, read `offset_ns` after the start.
    Record { offset_ns: u64, record: Bytes },
    /// A kernel stack, symbolized when it was recorded.
    Stack { id: i32, frames: Vec<String> },
    /// The probes' loss counters so far, by cause.
    Lost {
        offset_ns: u64,
        lost: BTreeMap<String, u64>,
    },
    /// The recording ended cleanly.
    End { offset_ns: u64 },
}

/// Why a recording cannot be read (further), and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub path: PathBuf,
    /// Byte offset of the damage (the start of the bad entry).
    pub offset: u64,
    pub what: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recording {}: {} at byte offset {}",
            self.path.display(),
            self.what,
            self.offset
        )
    }
}

impl std::error::Error for RecordError {}

fn put_str16(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    b.put_u16_le(s.len() as u16);
    b.put_slice(s);
}

/// Encodes the header.
pub fn encode_header(h: &Header) -> BytesMut {
    let mut fields = BytesMut::new();
    fields.put_u64_le(h.start_ns);
    fields.put_u64_le(h.start_unix_ms);
    fields.put_u32_le(h.flags.get);
    fields.put_u32_le(h.flags.pin);
    fields.put_u32_le(h.flags.longterm);
    put_str16(&mut fields, &h.kernel);
    put_str16(&mut fields, &h.plan);
    fields.put_u32_le(h.flags.bio_page_pinned);
    let mut b = BytesMut::new();
    b.put_slice(MAGIC);
    b.put_u16_le(VERSION);
    b.put_u8(host_order());
    b.put_u8(0);
    b.put_u32_le(fields.len() as u32);
    b.put_slice(&fields);
    let crc = crc32fast::hash(&b);
    b.put_u32_le(crc);
    b
}

fn encode_entry(out: &mut BytesMut, kind: u8, offset_ns: u64, payload: &[u8]) {
    let start = out.len();
    out.put_u32_le(payload.len() as u32);
    out.put_u8(kind);
    out.put_u64_le(offset_ns);
    out.put_slice(payload);
    let crc = crc32fast::hash(&out[start + 4..]);
    out.put_u32_le(crc);
}

/// Encodes one entry (appended to `out`).
pub fn encode(out: &mut BytesMut, entry: &Entry) {
    match entry {
        Entry::Record { offset_ns, record } => encode_entry(out, KIND_RECORD, *offset_ns, record),
        Entry::Stack { id, frames } => {
            let mut p = BytesMut::new();
            p.put_i32_le(*id);
            let n = frames.len().min(u16::MAX as usize);
            p.put_u16_le(n as u16);
            for f in &frames[..n] {
                put_str16(&mut p, f);
            }
            encode_entry(out, KIND_STACK, 0, &p);
        }
        Entry::Lost { offset_ns, lost } => {
            let mut p = BytesMut::new();
            p.put_u16_le(lost.len().min(u16::MAX as usize) as u16);
            for (name, v) in lost.iter().take(u16::MAX as usize) {
                let name = &name.as_bytes()[..name.len().min(255)];
                p.put_u8(name.len() as u8);
                p.put_slice(name);
                p.put_u64_le(*v);
            }
            encode_entry(out, KIND_LOST, *offset_ns, &p);
        }
        Entry::End { offset_ns } => encode_entry(out, KIND_END, *offset_ns, &[]),
    }
}

/// Writes a recording as the run goes.
pub struct Recorder {
    path: PathBuf,
    file: BufWriter<File>,
    buf: BytesMut,
    start_ns: u64,
    /// Bytes written so far (the file's size once flushed).
    pub bytes: u64,
    pub records: u64,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<Recorder, RecordError> {
        let err = |e: std::io::Error| RecordError {
            path: path.to_owned(),
            offset: 0,
            what: format!("cannot write: {e}"),
        };
        let file = File::create(path).map_err(err)?;
        let mut r = Recorder {
            path: path.to_owned(),
            file: BufWriter::with_capacity(256 << 10, file),
            buf: BytesMut::with_capacity(4096),
            start_ns: header.start_ns,
            bytes: 0,
            records: 0,
        };
        let h = encode_header(header);
        r.write_raw(&h)?;
        Ok(r)
    }

    fn write_raw(&mut self, b: &[u8]) -> Result<(), RecordError> {
        self.file.write_all(b).map_err(|e| RecordError {
            path: self.path.clone(),
            offset: self.bytes,
            what: format!("cannot write: {e}"),
        })?;
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn offset(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.start_ns)
    }

    /// A raw record read at `now_ns` (kernel clock).
    pub fn record(&mut self, now_ns: u64, record: &[u8]) -> Result<(), RecordError> {
        self.buf.clear();
        let off = self.offset(now_ns);
        encode_entry(&mut self.buf, KIND_RECORD, off, record);
        let b = std::mem::take(&mut self.buf);
        let r = self.write_raw(&b);
        self.buf = b;
        self.records += 1;
        r
    }

    pub fn entry(&mut self, entry: &Entry) -> Result<(), RecordError> {
        let mut b = BytesMut::new();
        encode(&mut b, entry);
        self.write_raw(&b)
    }

    pub fn stack(&mut self, id: i32, frames: Vec<String>) -> Result<(), RecordError> {
        self.entry(&Entry::Stack { id, frames })
    }

    pub fn lost(&mut self, now_ns: u64, lost: &BTreeMap<&str, u64>) -> Result<(), RecordError> {
        let lost = lost.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let offset_ns = self.offset(now_ns);
        self.entry(&Entry::Lost { offset_ns, lost })
    }

    /// Hands what is buffered to the kernel: after a crash the file reads
    /// up to here.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.file.flush().map_err(|e| RecordError {
            path: self.path.clone(),
            offset: self.bytes,
            what: format!("cannot write: {e}"),
        })
    }

    /// Writes the end marker and syncs the file.
    pub fn finish(mut self, now_ns: u64) -> Result<u64, RecordError> {
        let offset_ns = self.offset(now_ns);
        self.entry(&Entry::End { offset_ns })?;
        self.flush()?;
        let _ = self.file.get_ref().sync_all();
        Ok(self.bytes)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A recording read into memory.
#[derive(Clone, Debug)]
pub struct Recording {
    pub path: PathBuf,
    pub header: Header,
    /// Every complete entry, in order.
    pub entries: Vec<Entry>,
    /// Where reading stopped early (truncation or corruption), if it did.
    pub damage: Option<RecordError>,
}

impl Recording {
    /// Reads `path`. A bad header is an error; a damaged entry stops the
    /// reading there and is kept in [`Recording::damage`].
    pub fn load(path: &Path) -> Result<Recording, RecordError> {
        let data = std::fs::read(path).map_err(|e| RecordError {
            path: path.to_owned(),
            offset: 0,
            what: format!("cannot read: {e}"),
        })?;
        Self::parse(path, Bytes::from(data))
    }

    pub fn parse(path: &Path, data: Bytes) -> Result<Recording, RecordError> {
        let err = |offset: usize, what: String| RecordError {
            path: path.to_owned(),
            offset: offset as u64,
            what,
        };
        if data.len() < 16 || &data[..8] != MAGIC {
            return Err(err(0, "not a pintrace recording (bad magic)".into()));
        }
        let mut b = data.slice(8..);
        let version = b.get_u16_le();
        if version != VERSION {
            return Err(err(
                8,
                format!("unsupported version {version} (this pintrace reads {VERSION})"),
            ));
        }
        let order = b.get_u8();
        if order != host_order() {
            return Err(err(
                10,
                format!(
                    "records in {} byte order, this machine is {}",
                    if order == 2 { "big" } else { "little" },
                    if host_order() == 2 { "big" } else { "little" }
                ),
            ));
        }
        b.advance(1);
        let len = b.get_u32_le() as usize;
        let header_end = 16 + len + 4;
        if len < 36 || data.len() < header_end {
            return Err(err(16, format!("truncated header ({len} bytes announced)")));
        }
        let crc = u32::from_le_bytes(data[16 + len..header_end].try_into().unwrap());
        if crc32fast::hash(&data[..16 + len]) != crc {
            return Err(err(0, "corrupted header (checksum mismatch)".into()));
        }
        let mut f = data.slice(16..16 + len);
        let start_ns = f.get_u64_le();
        let start_unix_ms = f.get_u64_le();
        let mut flags = FollFlags {
            get: f.get_u32_le(),
            pin: f.get_u32_le(),
            longterm: f.get_u32_le(),
            bio_page_pinned: 0,
        };
        let bad = || err(16, "corrupted header (bad strings)".into());
        let kernel = get_str16(&mut f).ok_or_else(bad)?;
        let plan = get_str16(&mut f).ok_or_else(bad)?;
        if f.remaining() >= 4 {
            flags.bio_page_pinned = f.get_u32_le();
        }
        let header = Header {
            start_ns,
            start_unix_ms,
            flags,
            kernel,
            plan,
        };
        let mut entries = Vec::new();
        let mut at = header_end;
        let mut damage = None;
        while at < data.len() {
            match parse_entry(&data, at) {
                Ok((entry, next)) => {
                    entries.push(entry);
                    at = next;
                }
                Err(what) => {
                    damage = Some(err(at, what));
                    break;
                }
            }
        }
        if damage.is_none() && !matches!(entries.last(), Some(Entry::End { .. })) {
            log::warn!(
                "recording {}: no end marker (the recording run did not finish); read up to its last complete entry",
                path.display()
            );
        }
        Ok(Recording {
            path: path.to_owned(),
            header,
            entries,
            damage,
        })
    }

    /// The recorded length of the run (the end marker, else the last entry).
    pub fn duration_ns(&self) -> u64 {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Record { offset_ns, .. }
                | Entry::Lost { offset_ns, .. }
                | Entry::End { offset_ns } => Some(*offset_ns),
                Entry::Stack { .. } => None,
            })
            .max()
            .unwrap_or(0)
    }

    pub fn records(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::Record { .. }))
            .count()
    }
}

fn get_str16(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_u16_le() as usize;
    if b.remaining() < n {
        return None;
    }
    let s = String::from_utf8_lossy(&b[..n]).into_owned();
    b.advance(n);
    Some(s)
}

/// Parses the entry at `at`; returns it and where the next one starts.
fn parse_entry(data: &Bytes, at: usize) -> Result<(Entry, usize), String> {
    let rest = data.len() - at;
    if rest < ENTRY_OVERHEAD {
        return Err(format!(
            "truncated entry ({rest} bytes left, an entry needs at least {ENTRY_OVERHEAD})"
        ));
    }
    let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    if len > MAX_PAYLOAD {
        return Err(format!(
            "corrupted entry (length {len} is over {MAX_PAYLOAD})"
        ));
    }
    let end = at + ENTRY_OVERHEAD + len;
    if end > data.len() {
        return Err(format!(
            "truncated entry ({len}-byte payload, {} bytes left)",
            rest - ENTRY_OVERHEAD
        ));
    }
    let body = &data[at + 4..end - 4];
    let crc = u32::from_le_bytes(data[end - 4..end].try_into().unwrap());
    if crc32fast::hash(body) != crc {
        return Err("corrupted entry (checksum mismatch)".into());
    }
    let kind = body[0];
    let offset_ns = u64::from_le_bytes(body[1..9].try_into().unwrap());
    if offset_ns > MAX_OFFSET_NS {
        return Err(format!(
            "corrupted entry (read {} s after the start: more than a year)",
            offset_ns / 1_000_000_000
        ));
    }
    let mut p = data.slice(at + 13..end - 4);
    let bad = |what: &str| format!("corrupted {what} entry");
    let entry = match kind {
        KIND_RECORD => Entry::Record {
            offset_ns,
            record: p,
        },
        KIND_STACK => {
            if p.remaining() < 6 {
                return Err(bad("stack"));
            }
            let id = p.get_i32_le();
            let n = p.get_u16_le();
            let frames = (0..n)
                .map(|_| get_str16(&mut p))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("stack"))?;
            Entry::Stack { id, frames }
        }
        KIND_LOST => {
            if p.remaining() < 2 {
                return Err(bad("loss"));
            }
            let n = p.get_u16_le();
            let mut lost = BTreeMap::new();
            for _ in 0..n {
                if p.remaining() < 1 {
                    return Err(bad("loss"));
                }
                let l = p.get_u8() as usize;
                if p.remaining() < l + 8 {
                    return Err(bad("loss"));
                }
                let name = String::from_utf8_lossy(&p[..l]).into_owned();
                p.advance(l);
                lost.insert(name, p.get_u64_le());
            }
            Entry::Lost { offset_ns, lost }
        }
        KIND_END => Entry::End { offset_ns },
        other => return Err(format!("corrupted entry (unknown kind {other})")),
    };
    Ok((entry, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{demo, MS};

    fn header() -> Header {
        Header {
            start_ns: 5_000 * MS,
            start_unix_ms: 1_700_000_000_000,
            flags: FollFlags::FROM_6_3,
            kernel: "6.12.0-test".into(),
            plan: "pin_user_pages_fast=fexit".into(),
        }
    }

    fn write_demo(path: &Path, finish: bool) -> usize {
        let h = header();
        let s = demo(h.start_ns, 1);
        let mut r = Recorder::create(path, &h).unwrap();
        for (ts, rec) in &s.records {
            r.record(*ts, rec).unwrap();
        }
        r.stack(11, vec!["pin_user_pages_fast+0x0".into(), "dio".into()])
            .unwrap();
        let mut lost = BTreeMap::new();
        lost.insert("ringbuf_full", 3u64);
        r.lost(s.ts, &lost).unwrap();
        if finish {
            r.finish(s.ts + MS).unwrap();
        } else {
            r.flush().unwrap();
        }
        s.records.len()
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ptrec");
        let n = write_demo(&path, true);
        let rec = Recording::load(&path).unwrap();
        assert_eq!(rec.header, header());
        assert!(rec.damage.is_none());
        assert_eq!(rec.records(), n);
        let s = demo(header().start_ns, 1);
        let Entry::Record { offset_ns, record } = &rec.entries[3] else {
            panic!()
        };
        assert_eq!(*offset_ns, s.records[3].0 - header().start_ns);
        assert_eq!(&record[..], &s.records[3].1[..]);
        assert!(rec.entries.contains(&Entry::Stack {
            id: 11,
            frames: vec!["pin_user_pages_fast+0x0".into(), "dio".into()]
        }));
        assert!(matches!(rec.entries.last(), Some(Entry::End { .. })));
        assert_eq!(rec.duration_ns(), s.ts + MS - header().start_ns);
    }

    #[test]
    fn a_crashed_recording_reads_up_to_its_last_complete_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.ptrec");
        let n = write_demo(&path, false);
        let full = std::fs::read(&path).unwrap();
        // No end marker: all entries, no damage.
        let rec = Recording::load(&path).unwrap();
        assert_eq!((rec.records(), rec.damage.is_none()), (n, true));
        // Cut in the middle of an entry: everything before it, and where.
        let cut = full.len() - 10;
        std::fs::write(&path, &full[..cut]).unwrap();
        let rec = Recording::load(&path).unwrap();
        let d = rec.damage.clone().unwrap();
        assert!(d.what.contains("truncated entry"), "{d}");
        assert!(d.offset < cut as u64 && d.offset > 0);
        assert_eq!(rec.records(), n, "the loss counters were cut, not a record");
        let msg = d.to_string();
        assert!(
            msg.contains("b.ptrec") && msg.contains(&format!("offset {}", d.offset)),
            "{msg}"
        );
    }

    #[test]
    fn corruption_is_found_and_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.ptrec");
        write_demo(&path, true);
        let mut data = std::fs::read(&path).unwrap();
        let header_len = encode_header(&header()).len();
        // Flip a byte in the payload of the third entry.
        let mut at = header_len;
        for _ in 0..2 {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            at += ENTRY_OVERHEAD + len;
        }
        data[at + 20] ^= 0xff;
        let rec = Recording::parse(&path, Bytes::from(data.clone())).unwrap();
        let d = rec.damage.unwrap();
        assert_eq!(d.offset, at as u64);
        assert!(d.what.contains("checksum"), "{d}");
        assert_eq!(rec.entries.len(), 2);
        // A bad header is an error at once.
        data[0] = b'X';
        let e = Recording::parse(&path, Bytes::from(data.clone())).unwrap_err();
        assert!(e.what.contains("magic") && e.offset == 0, "{e}");
        data[0] = b'P';
        data[8] = 9;
        let e = Recording::parse(&path, Bytes::from(data)).unwrap_err();
        assert!(e.what.contains("version 9"), "{e}");
        let e = Recording::load(&dir.path().join("missing.ptrec")).unwrap_err();
        assert!(e.to_string().contains("missing.ptrec") && e.what.contains("cannot read"));
    }
}
