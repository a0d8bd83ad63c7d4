//! I/O buffers: one arena per job, mapped the way `--buffer` asks, cut into
//! slots (one per I/O in flight); pvsync slots are scattered iovecs.

use super::config::BufferKind;
use super::verify::fill_random;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const PAGE: usize = 4096;
const HPAGE: usize = 2 << 20;

fn round_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

/// Where each iovec of a slot sits: `(offset in slot, length)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegLayout {
    pub segs: Vec<(usize, usize)>,
    /// Bytes of arena one slot takes (a multiple of the page size).
    pub slot_len: usize,
}

impl SegLayout {
    /// One contiguous, page-aligned segment.
    pub fn contiguous(bs: usize) -> Self {
        Self::contiguous_at(bs, 0)
    }

    /// One contiguous segment starting `offset` bytes past a page boundary.
    pub fn contiguous_at(bs: usize, offset: usize) -> Self {
        SegLayout {
            segs: vec![(offset, bs)],
            slot_len: round_up(offset + bs, PAGE),
        }
    }

    /// `n` adjacent segments of `bs / n` bytes from `offset` on, each lying
    /// within a single page: with `bs` at most a page they all share one
    /// page, so the kernel pins that page once per segment and the bio
    /// merges them (the pins of the merge are released at once). The error
    /// names the rule the sizes break.
    pub fn subpage(bs: usize, n: u32, offset: usize) -> Result<Self, String> {
        let n = n as usize;
        if n < 2 {
            return Err("needs --iovecs 2 or more (segments sharing a page)".into());
        }
        if !bs.is_multiple_of(n) {
            return Err(format!(
                "--bs {bs} is not divisible into --iovecs {n} segments of equal size (bs/N)"
            ));
        }
        let seg = bs / n;
        if !seg.is_multiple_of(512) {
            return Err(format!(
                "each segment, bs/N = {bs}/{n} = {seg} bytes, must be a multiple of 512"
            ));
        }
        let segs: Vec<(usize, usize)> = (0..n).map(|i| (offset + i * seg, seg)).collect();
        if let Some((i, &(o, _))) = segs
            .iter()
            .enumerate()
            .find(|(_, &(o, l))| o % PAGE + l > PAGE)
        {
            return Err(format!(
                "segment {i} (bytes {o}..{} of the buffer) would cross a page boundary: \
                 each segment must lie within one page, so bs/N ({seg}) must divide the \
                 page size ({PAGE}) and --buffer-offset ({offset}) be a multiple of bs/N",
                o + seg
            ));
        }
        Ok(SegLayout {
            segs,
            slot_len: round_up(offset + bs, PAGE),
        })
    }

    /// Pages one I/O's buffer spans, summed over its segments: the pages the
    /// kernel pins (or references) for one I/O when it maps the buffer.
    pub fn pages_per_io(&self) -> u64 {
        self.segs
            .iter()
            .filter(|s| s.1 > 0)
            .map(|&(o, l)| ((o + l - 1) / PAGE - o / PAGE + 1) as u64)
            .sum()
    }

    /// Shift every segment `offset` bytes further into the slot.
    pub fn shifted(mut self, offset: usize) -> Self {
        if offset == 0 {
            return self;
        }
        for s in &mut self.segs {
            s.0 += offset;
        }
        let end = self.segs.iter().map(|s| s.0 + s.1).max().unwrap_or(0);
        self.slot_len = round_up(end, PAGE);
        self
    }

    /// Split `bs` into up to `n` segments, each a multiple of `unit`, of mixed
    /// sizes, placed at mixed alignments (never below `mem_align`): some start
    /// mid-page, some on a page boundary, some right after the previous one,
    /// and some straddle pages.
    pub fn scattered(bs: usize, n: u32, unit: usize, mem_align: usize) -> Self {
        let unit = unit.max(8);
        if !bs.is_multiple_of(unit) || bs / unit < 2 || n < 2 {
            return Self::contiguous(bs);
        }
        let units = bs / unit;
        let n = (n as usize).min(units);
        const WEIGHTS: [usize; 8] = [1, 3, 2, 5, 4, 7, 6, 8];
        let w: Vec<usize> = (0..n).map(|i| WEIGHTS[i % WEIGHTS.len()]).collect();
        let wsum: usize = w.iter().sum();
        let rest = units - n;
        let mut sizes: Vec<usize> = w.iter().map(|wi| 1 + rest * wi / wsum).collect();
        // The first segment starts mid-page; a whole number of pages long, it
        // spans one page more than its length in pages, the count
        // __bio_release_pages() once got wrong (38b43539d64b).
        let per_page = PAGE / unit;
        if PAGE.is_multiple_of(unit) && sizes[0] > per_page {
            sizes[0] -= sizes[0] % per_page;
        }
        let used: usize = sizes.iter().sum();
        *sizes.last_mut().unwrap() += units - used;
        let align = mem_align.max(8);
        let mut pos = if align < PAGE { align } else { 0 };
        let mut segs = Vec::with_capacity(n);
        for (i, s) in sizes.iter().enumerate() {
            if i > 0 {
                pos = match i % 3 {
                    0 => round_up(pos, PAGE),
                    1 => pos + align.min(PAGE),
                    _ => pos,
                };
                pos = round_up(pos, align);
            }
            segs.push((pos, s * unit));
            pos += s * unit;
        }
        SegLayout {
            segs,
            slot_len: round_up(pos, PAGE),
        }
    }
}

/// A job's buffer memory.
#[derive(Debug)]
pub struct Arena {
    map: *mut u8,
    map_len: usize,
    base: *mut u8,
    len: usize,
    pub kind: BufferKind,
    /// Bytes of the arena backed by huge pages (THP or hugetlb), when known.
    pub huge_bytes: Option<u64>,
    /// Where the scratch file of `file-shared` lived (already unlinked).
    pub scratch_file: Option<PathBuf>,
    /// Filesystem of that scratch file.
    pub scratch_fs: Option<String>,
}

// The arena is plain memory owned by one job thread at a time.
unsafe impl Send for Arena {}

fn mmap(len: usize, flags: i32, fd: i32) -> io::Result<*mut u8> {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

fn meminfo_kb(key: &str) -> Option<u64> {
    let s = fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `AnonHugePages` of the mapping that starts at or holds `addr` (/proc/self/smaps).
fn smaps_anon_huge(addr: usize) -> Option<u64> {
    let s = fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in s.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a <= addr && addr < b;
                continue;
            }
        }
        if inside && line.starts_with("AnonHugePages:") {
            return line
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024);
        }
    }
    None
}

impl Arena {
    /// Map `len` bytes of `kind` memory; `scratch_dir` holds the scratch file
    /// of `file-shared`. Every page is touched (and filled with random data).
    pub fn new(
        kind: BufferKind,
        len: usize,
        scratch_dir: &Path,
        job: u32,
        seed: u64,
    ) -> Result<Self> {
        let priv_anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let mut arena = match kind {
            BufferKind::Anon | BufferKind::ForkShared => {
                let l = round_up(len, PAGE);
                let p = mmap(l, priv_anon, -1).context("mapping the I/O buffers")?;
                Arena::plain(p, l, kind)
            }
            BufferKind::Thp => {
                let l = round_up(len, HPAGE);
                let map_len = l + HPAGE;
                let p = mmap(map_len, priv_anon, -1).context("mapping the THP buffers")?;
                let base = round_up(p as usize, HPAGE) as *mut u8;
                if unsafe { libc::madvise(base.cast(), l, libc::MADV_HUGEPAGE) } != 0 {
                    let e = io::Error::last_os_error();
                    unsafe { libc::munmap(p.cast(), map_len) };
                    bail!("--buffer thp: madvise(MADV_HUGEPAGE) failed: {e} (is CONFIG_TRANSPARENT_HUGEPAGE set?)");
                }
                Arena {
                    map: p,
                    map_len,
                    base,
                    len: l,
                    kind,
                    huge_bytes: None,
                    scratch_file: None,
                    scratch_fs: None,
                }
            }
            BufferKind::Hugetlb => {
                let hsize = meminfo_kb("Hugepagesize:")
                    .map(|k| k as usize * 1024)
                    .unwrap_or(HPAGE);
                let l = round_up(len, hsize);
                let p = mmap(l, priv_anon | libc::MAP_HUGETLB, -1).map_err(|e| {
                    let free = meminfo_kb("HugePages_Free:").unwrap_or(0);
                    let need = l / hsize;
                    anyhow::anyhow!(
                        "--buffer hugetlb: cannot map {need} huge page(s) of {} KiB ({e}); {free} free: \
                         reserve some first, e.g. `echo {} > /proc/sys/vm/nr_hugepages`",
                        hsize / 1024,
                        need.max(8)
                    )
                })?;
                let mut a = Arena::plain(p, l, kind);
                a.huge_bytes = Some(l as u64);
                a
            }
            BufferKind::FileShared => Arena::file_shared(len, scratch_dir, job)?,
        };
        // Touch every page (populates THP, page cache pages of the scratch file).
        fill_random(arena.bytes_mut(), seed ^ u64::from(job));
        if kind == BufferKind::Thp {
            arena.huge_bytes = smaps_anon_huge(arena.base as usize);
        }
        Ok(arena)
    }

    fn plain(p: *mut u8, l: usize, kind: BufferKind) -> Self {
        Arena {
            map: p,
            map_len: l,
            base: p,
            len: l,
            kind,
            huge_bytes: None,
            scratch_file: None,
            scratch_fs: None,
        }
    }

    fn file_shared(len: usize, dir: &Path, job: u32) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let l = round_up(len, PAGE);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            ".pintrace-buf-{}-{job}-{nanos}",
            std::process::id()
        ));
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| {
                format!(
                    "--buffer file-shared: cannot create the scratch file {}",
                    path.display()
                )
            })?;
        let r = f
            .set_len(l as u64)
            .map_err(anyhow::Error::from)
            .and_then(|_| mmap(l, libc::MAP_SHARED, f.as_raw_fd()).map_err(anyhow::Error::from));
        // The mapping keeps the pages; the name can go at once.
        let _ = fs::remove_file(&path);
        let p = r.with_context(|| format!("--buffer file-shared: mapping {}", path.display()))?;
        let mut a = Arena::plain(p, l, BufferKind::FileShared);
        a.scratch_fs = super::safety::statfs_magic(dir)
            .ok()
            .map(super::safety::fs_name);
        a.scratch_file = Some(path);
        Ok(a)
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Make the page at `offset` of the arena inaccessible (PROT_NONE), so
    /// that pinning it fails with EFAULT.
    pub fn protect_page(&self, offset: usize) -> io::Result<()> {
        assert!(offset.is_multiple_of(PAGE) && offset + PAGE <= self.len);
        // SAFETY: the page lies inside this arena's own mapping.
        if unsafe { libc::mprotect(self.base.add(offset).cast(), PAGE, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }

    /// The iovecs of every slot: `slots` slots of `layout.slot_len` bytes.
    pub fn slot_iovecs(&self, layout: &SegLayout, slots: usize) -> Vec<Vec<libc::iovec>> {
        assert!(layout.slot_len * slots <= self.len, "arena too small");
        (0..slots)
            .map(|s| {
                layout
                    .segs
                    .iter()
                    .map(|&(off, len)| libc::iovec {
                        iov_base: unsafe { self.base.add(s * layout.slot_len + off) }.cast(),
                        iov_len: len,
                    })
                    .collect()
            })
            .collect()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scattered_layout_adds_up_and_aligns() {
        for &(bs, n, unit, align) in &[
            (4096, 4, 512, 512),
            (16384, 4, 512, 512),
            (131072, 6, 4096, 512),
            (65536, 3, 512, 4),
            (1 << 20, 8, 512, 512),
        ] {
            let l = SegLayout::scattered(bs, n, unit, align);
            let total: usize = l.segs.iter().map(|s| s.1).sum();
            assert_eq!(total, bs, "{bs} {n}");
            assert!(l.segs.len() > 1 && l.segs.len() <= n as usize);
            let mut end = 0;
            for &(off, len) in &l.segs {
                assert_eq!(len % unit, 0);
                assert_eq!(off % align.max(8), 0);
                assert!(off >= end, "segments overlap");
                end = off + len;
            }
            assert!(end <= l.slot_len && l.slot_len.is_multiple_of(PAGE));
            let sizes: Vec<usize> = l.segs.iter().map(|s| s.1).collect();
            assert!(
                sizes.iter().any(|&s| s != sizes[0]),
                "mixed sizes: {sizes:?}"
            );
            assert!(
                l.segs.iter().any(|s| s.0 % PAGE != 0),
                "some segment mid-page"
            );
            if bs >= 16 * PAGE && unit < PAGE {
                let (o, len) = l.segs[0];
                assert!(
                    o % PAGE != 0 && len % PAGE == 0,
                    "{bs}: the first segment is whole pages from mid-page: {o} {len}"
                );
            }
        }
    }

    #[test]
    fn subpage_segments_share_a_page() {
        let l = SegLayout::subpage(4096, 8, 0).unwrap();
        assert_eq!(l.segs.len(), 8);
        assert_eq!(l.segs[1], (512, 512));
        assert_eq!(l.slot_len, PAGE);
        assert_eq!(l.pages_per_io(), 8);
        let l = SegLayout::subpage(2048, 4, 1024).unwrap();
        assert_eq!(l.segs[0], (1024, 512));
        assert_eq!(l.pages_per_io(), 4);
        // Larger blocks: two segments per page over two pages.
        let l = SegLayout::subpage(8192, 4, 0).unwrap();
        assert_eq!(l.pages_per_io(), 4);
        assert_eq!(l.slot_len, 2 * PAGE);
        for (bs, n, off, word) in [
            (4096, 1, 0, "2 or more"),
            (4096, 3, 0, "divisible"),
            (4096, 16, 0, "multiple of 512"),
            (4096, 4, 512, "cross a page"),
            (8192, 2, 512, "cross a page"),
        ] {
            let e = SegLayout::subpage(bs, n, off).unwrap_err();
            assert!(e.contains(word), "{bs} {n} {off}: {e}");
        }
    }

    #[test]
    fn pages_spanned_per_io() {
        assert_eq!(SegLayout::contiguous(4096).pages_per_io(), 1);
        assert_eq!(SegLayout::contiguous_at(4096, 2).pages_per_io(), 2);
        assert_eq!(SegLayout::contiguous_at(4096, 2).slot_len, 2 * PAGE);
        assert_eq!(SegLayout::contiguous(65536).pages_per_io(), 16);
        let s = SegLayout::scattered(16384, 4, 512, 512);
        let shifted = s.clone().shifted(1024);
        assert_eq!(shifted.segs[0].0, s.segs[0].0 + 1024);
        assert!(shifted.pages_per_io() >= 4);
    }

    #[test]
    fn small_blocks_stay_contiguous() {
        assert_eq!(
            SegLayout::scattered(512, 4, 512, 512),
            SegLayout::contiguous(512)
        );
        assert_eq!(SegLayout::contiguous(6000).slot_len, 8192);
    }

    #[test]
    fn anon_and_thp_arenas() {
        let mut a = Arena::new(BufferKind::Anon, 10_000, Path::new("/tmp"), 0, 1).unwrap();
        assert_eq!(a.len(), 12288);
        assert_eq!(a.base() as usize % PAGE, 0);
        a.bytes_mut()[0] = 1;
        let t = Arena::new(BufferKind::Thp, 4096, Path::new("/tmp"), 0, 1).unwrap();
        assert_eq!(t.base() as usize % HPAGE, 0);
        assert_eq!(t.len(), HPAGE);
        let iovs = t.slot_iovecs(&SegLayout::contiguous(4096), 4);
        assert_eq!(iovs.len(), 4);
        assert_eq!(
            iovs[1][0].iov_base as usize - iovs[0][0].iov_base as usize,
            4096
        );
    }
}
