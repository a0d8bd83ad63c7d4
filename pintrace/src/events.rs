//! The event stream: ring-buffer records decoded into plain Rust values.
//!
//! Records are the `#[repr(C)]` structs of `pintrace-common`, in the host's
//! byte order (the probes run on the same machine). Decoding goes through
//! `bytes::Buf` and checks every length, so a truncated or foreign record is an
//! error, never a panic.

use bytes::Buf;
use pintrace_common::{AcquireEvent, RqCompleteEvent, Site, TAG_ACQUIRE, TAG_RQ_COMPLETE};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Acquire(Acquire),
    RqComplete(RqComplete),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated { tag: u32, len: usize, need: usize },
    UnknownTag(u32),
    UnknownSite(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { tag, len, need } => {
                write!(f, "record with tag {tag} is {len} bytes, needs {need}")
            }
            DecodeError::UnknownTag(t) => write!(f, "unknown record tag {t}"),
            DecodeError::UnknownSite(s) => write!(f, "unknown acquire site {s}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one ring-buffer record.
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
        other => return Err(DecodeError::UnknownTag(other)),
    };
    if record.len() < need {
        return Err(DecodeError::Truncated {
            tag,
            len: record.len(),
            need,
        });
    }
    Ok(match tag {
        TAG_ACQUIRE => {
            let site_raw = buf.get_u32_ne();
            let site = Site::from_u32(site_raw).ok_or(DecodeError::UnknownSite(site_raw))?;
            let ts_ns = buf.get_u64_ne();
            let pid_tgid = buf.get_u64_ne();
            let start = buf.get_u64_ne();
            let pages_array = buf.get_u64_ne();
            let ret = buf.get_i64_ne();
            let nr_pages = buf.get_i32_ne();
            let gup_flags = buf.get_u32_ne();
            let mut comm = [0u8; 16];
            buf.copy_to_slice(&mut comm);
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
                comm: Comm(comm),
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
        v.put_slice(&a.comm.0);
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
