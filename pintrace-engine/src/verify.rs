//! Verification headers: every block written with `--verify` starts with
//!
//! ```text
//!  0  magic       u64  "PNTRVFY1"
//!  8  offset      u64  byte offset of the block in the target
//! 16  seed        u64  --seed of the writer
//! 24  generation  u32  how many times this run wrote the block (0: layout)
//! 28  length      u32  block size
//! 32  job         u32  writing job
//! 36  reserved    u32  zero
//! 40  checksum    u64  over bytes 0..40 and the payload
//! 48  payload          pseudo-random, from (seed, offset, generation)
//! ```
//!
//! all little endian. A block may be scattered over several iovecs (pvsync):
//! the functions take the segments in order. Every segment length must be a
//! multiple of 8 and the first one must hold the header.

use super::offsets::splitmix;
use serde::Serialize;
use std::fmt;

pub const MAGIC: u64 = u64::from_le_bytes(*b"PNTRVFY1");
pub const HEADER_LEN: usize = 48;

const P1: u64 = 0x9e37_79b9_7f4a_7c15;
const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// Four-lane multiply-rotate hash over 64-bit words. Changing any single word
/// always changes the result (each step is a bijection of the lane).
struct Hasher {
    lanes: [u64; 4],
    n: u64,
}

impl Hasher {
    fn new() -> Self {
        Hasher {
            lanes: [P1, P2, !P1, !P2],
            n: 0,
        }
    }
    #[inline(always)]
    fn word(&mut self, w: u64) {
        let l = &mut self.lanes[(self.n & 3) as usize];
        *l = (*l ^ w).wrapping_mul(P1).rotate_left(31);
        self.n += 1;
    }
    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        let mut rest = b;
        while self.n & 3 != 0 && rest.len() >= 8 {
            self.word(u64::from_le_bytes(rest[..8].try_into().unwrap()));
            rest = &rest[8..];
        }
        let mut chunks = rest.chunks_exact(32);
        let [mut a, mut b2, mut c, mut d] = self.lanes;
        for ch in &mut chunks {
            let w = |i: usize| u64::from_le_bytes(ch[i * 8..i * 8 + 8].try_into().unwrap());
            a = (a ^ w(0)).wrapping_mul(P1).rotate_left(31);
            b2 = (b2 ^ w(1)).wrapping_mul(P1).rotate_left(31);
            c = (c ^ w(2)).wrapping_mul(P1).rotate_left(31);
            d = (d ^ w(3)).wrapping_mul(P1).rotate_left(31);
            self.n += 4;
        }
        self.lanes = [a, b2, c, d];
        for w in chunks.remainder().chunks_exact(8) {
            self.word(u64::from_le_bytes(w.try_into().unwrap()));
        }
    }
    fn finish(self) -> u64 {
        let mut h = self.n.wrapping_mul(P2);
        for l in self.lanes {
            h = (h ^ l).wrapping_mul(P2).rotate_left(27);
        }
        splitmix(h)
    }
}

/// The fields of a block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub offset: u64,
    pub seed: u64,
    pub generation: u32,
    pub length: u32,
    pub job: u32,
}

impl Header {
    fn words(&self) -> [u64; 5] {
        [
            MAGIC,
            self.offset,
            self.seed,
            u64::from(self.generation) | (u64::from(self.length) << 32),
            u64::from(self.job),
        ]
    }
}

/// What is wrong with a block read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VerifyError {
    /// No header: the block was never written with --verify (or was overwritten).
    BadMagic { found: u64 },
    /// The checksum does not match the contents: the data is corrupt.
    Checksum { stored: u64, computed: u64 },
    /// A valid block, but written for another offset (misdirected I/O).
    WrongOffset { found: u64 },
    /// A valid block written with another --seed.
    WrongSeed { found: u64 },
    /// The block length in the header is not --bs.
    WrongLength { found: u32 },
    /// Stale data: an older generation of the block than this run wrote last.
    WrongGeneration { expected: u32, found: u32 },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VerifyError::BadMagic { found } => write!(f, "no verify header (found {found:#018x} where the magic belongs)"),
            VerifyError::Checksum { stored, computed } => write!(f, "checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): data corrupted"),
            VerifyError::WrongOffset { found } => write!(f, "block carries offset {found} (misdirected write or read)"),
            VerifyError::WrongSeed { found } => write!(f, "block written with seed {found:#x}"),
            VerifyError::WrongLength { found } => write!(f, "block written with block size {found}"),
            VerifyError::WrongGeneration { expected, found } => write!(f, "stale data: generation {found}, expected {expected}"),
        }
    }
}

/// View a segment as bytes.
///
/// # Safety
/// `iov` must describe memory valid for reads (and writes for `seg_mut`)
/// and not otherwise accessed while the slice lives.
#[inline]
unsafe fn seg(iov: &libc::iovec) -> &[u8] {
    std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
}

#[inline]
#[allow(clippy::mut_from_ref)]
unsafe fn seg_mut(iov: &libc::iovec) -> &mut [u8] {
    std::slice::from_raw_parts_mut(iov.iov_base as *mut u8, iov.iov_len)
}

fn payload_seed(h: &Header) -> u64 {
    splitmix(h.seed ^ splitmix(h.offset ^ (u64::from(h.generation) << 48)))
}

/// Write a block: header, pseudo-random payload, checksum.
///
/// # Safety
/// The segments must be valid, writable, exclusively owned memory, lengths
/// multiples of 8, the first at least [`HEADER_LEN`] bytes.
pub unsafe fn fill(segs: &[libc::iovec], h: &Header) {
    let mut hasher = Hasher::new();
    let first = seg_mut(&segs[0]);
    for (i, w) in h.words().iter().enumerate() {
        first[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        hasher.word(*w);
    }
    let mut x = payload_seed(h) | 1;
    for (i, iov) in segs.iter().enumerate() {
        let s = seg_mut(iov);
        let s = if i == 0 { &mut s[HEADER_LEN..] } else { s };
        for w in s.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        hasher.bytes(s);
    }
    first[40..48].copy_from_slice(&hasher.finish().to_le_bytes());
}

/// Check a block read back from `offset`.
///
/// `expected_generation`: `Some(g)` when this run knows what it wrote last.
///
/// # Safety
/// As for [`fill`], readable instead of writable.
pub unsafe fn check(
    segs: &[libc::iovec],
    offset: u64,
    seed: u64,
    length: u32,
    expected_generation: Option<u32>,
) -> Result<Header, VerifyError> {
    let first = seg(&segs[0]);
    let word = |i: usize| u64::from_le_bytes(first[i * 8..i * 8 + 8].try_into().unwrap());
    let magic = word(0);
    if magic != MAGIC {
        return Err(VerifyError::BadMagic { found: magic });
    }
    let mut hasher = Hasher::new();
    for i in 0..5 {
        hasher.word(word(i));
    }
    for (i, iov) in segs.iter().enumerate() {
        let s = seg(iov);
        hasher.bytes(if i == 0 { &s[HEADER_LEN..] } else { s });
    }
    let computed = hasher.finish();
    let stored = word(5);
    if computed != stored {
        return Err(VerifyError::Checksum { stored, computed });
    }
    let h = Header {
        offset: word(1),
        seed: word(2),
        generation: word(3) as u32,
        length: (word(3) >> 32) as u32,
        job: word(4) as u32,
    };
    if h.offset != offset {
        return Err(VerifyError::WrongOffset { found: h.offset });
    }
    if h.seed != seed {
        return Err(VerifyError::WrongSeed { found: h.seed });
    }
    if h.length != length {
        return Err(VerifyError::WrongLength { found: h.length });
    }
    if let Some(g) = expected_generation {
        if h.generation != g {
            return Err(VerifyError::WrongGeneration {
                expected: g,
                found: h.generation,
            });
        }
    }
    Ok(h)
}

/// Fill a buffer with pseudo-random bytes (plain writes without --verify).
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = splitmix(seed) | 1;
    for w in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        w.copy_from_slice(&v[..w.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(b: &mut [u8]) -> libc::iovec {
        libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        }
    }

    fn header(offset: u64) -> Header {
        Header {
            offset,
            seed: 0x5eed,
            generation: 3,
            length: 4096,
            job: 1,
        }
    }

    #[test]
    fn round_trip() {
        let mut b = vec![0u8; 4096];
        let segs = [iov(&mut b)];
        unsafe {
            fill(&segs, &header(8192));
            assert_eq!(check(&segs, 8192, 0x5eed, 4096, Some(3)), Ok(header(8192)));
            assert_eq!(check(&segs, 8192, 0x5eed, 4096, None), Ok(header(8192)));
        }
        assert_eq!(&b[..8], b"PNTRVFY1");
    }

    #[test]
    fn scattered_segments_match_contiguous() {
        let mut whole = vec![0u8; 4096];
        unsafe { fill(&[iov(&mut whole)], &header(0)) };
        let mut a = vec![0u8; 512];
        let mut b = vec![0u8; 1536];
        let mut c = vec![0u8; 2048];
        let segs = [iov(&mut a), iov(&mut b), iov(&mut c)];
        unsafe {
            fill(&segs, &header(0));
            assert!(check(&segs, 0, 0x5eed, 4096, Some(3)).is_ok());
        }
        let joined: Vec<u8> = [a, b, c].concat();
        assert_eq!(joined, whole);
        // A contiguous block checks when read back scattered, and vice versa.
        let mut x = whole[..1024].to_vec();
        let mut y = whole[1024..].to_vec();
        unsafe { assert!(check(&[iov(&mut x), iov(&mut y)], 0, 0x5eed, 4096, None).is_ok()) };
    }

    #[test]
    fn detects_every_single_bit_flip() {
        let mut b = vec![0u8; 512];
        unsafe { fill(&[iov(&mut b)], &header(512)) };
        let good = b.clone();
        for byte in 0..512 {
            for bit in 0..8 {
                let mut c = good.clone();
                c[byte] ^= 1 << bit;
                let r = unsafe { check(&[iov(&mut c)], 512, 0x5eed, 4096, None) };
                assert!(r.is_err(), "flip of bit {bit} in byte {byte} not seen");
            }
        }
    }

    #[test]
    fn names_the_fault() {
        let mut b = vec![0u8; 4096];
        unsafe { fill(&[iov(&mut b)], &header(4096)) };
        let segs = [iov(&mut b)];
        unsafe {
            assert_eq!(
                check(&segs, 0, 0x5eed, 4096, None),
                Err(VerifyError::WrongOffset { found: 4096 })
            );
            assert_eq!(
                check(&segs, 4096, 1, 4096, None),
                Err(VerifyError::WrongSeed { found: 0x5eed })
            );
            assert_eq!(
                check(&segs, 4096, 0x5eed, 512, None),
                Err(VerifyError::WrongLength { found: 4096 })
            );
            assert_eq!(
                check(&segs, 4096, 0x5eed, 4096, Some(4)),
                Err(VerifyError::WrongGeneration {
                    expected: 4,
                    found: 3
                })
            );
        }
        b[100] ^= 0xff;
        let r = unsafe { check(&[iov(&mut b)], 4096, 0x5eed, 4096, None) };
        assert!(matches!(r, Err(VerifyError::Checksum { .. })), "{r:?}");
        let mut zero = vec![0u8; 4096];
        let r = unsafe { check(&[iov(&mut zero)], 0, 0x5eed, 4096, None) };
        assert_eq!(r, Err(VerifyError::BadMagic { found: 0 }));
        assert!(r.unwrap_err().to_string().contains("no verify header"));
    }

    #[test]
    fn payload_differs_by_offset_and_generation() {
        let mut a = vec![0u8; 512];
        let mut b = vec![0u8; 512];
        unsafe {
            fill(&[iov(&mut a)], &header(0));
            let mut h = header(0);
            h.generation = 4;
            fill(&[iov(&mut b)], &h);
        }
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }
}
