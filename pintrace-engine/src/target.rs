//! Opening the target: checks, creation and layout, geometry (size, logical
//! block size, DMA alignment), and removal of what the engine created.

use super::config::EngineConfig;
use super::safety::{self, fs_name, is_memory_fs, statfs_magic};
use super::size::fmt_bytes;
use super::verify;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub(crate) const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
pub(crate) const BLKSSZGET: libc::c_ulong = 0x1268;

/// What the engine runs on.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub path: PathBuf,
    /// `file` or `block_device`.
    pub kind: &'static str,
    /// Filesystem of a file (None for a block device).
    pub fs_type: Option<String>,
    /// `major:minor` of a block device.
    pub device: Option<String>,
    /// Size of the target in bytes.
    pub size: u64,
    /// Offset / length alignment O_DIRECT needs (logical block size).
    pub logical_block_size: u32,
    /// Memory alignment O_DIRECT needs (DMA alignment).
    pub dio_mem_align: u32,
    /// Where the alignments come from (statx, ioctl, sysfs, st_blksize).
    pub align_source: &'static str,
    /// Whether this run created (and laid out) the file.
    pub created: bool,
    /// I/O done before the jobs started (the layout of a created file, the
    /// O_DIRECT probe read), for callers that count pins exactly.
    pub setup_io: SetupIo,
}

/// Set-up I/O: syscalls and bytes, outside the jobs' figures.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SetupIo {
    pub writes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub read_bytes: u64,
}

/// An open target; removes the file it created when dropped (unless kept).
#[derive(Debug)]
pub struct Target {
    pub fd: OwnedFd,
    pub info: TargetInfo,
    remove_on_drop: Option<PathBuf>,
}

impl Target {
    /// A device target opened by a passthrough mode (nothing to remove).
    pub fn device(fd: OwnedFd, info: TargetInfo) -> Self {
        Target {
            fd,
            info,
            remove_on_drop: None,
        }
    }

    /// Keep the file this run created (`--keep`, once the run went through).
    pub fn keep_file(&mut self) {
        self.remove_on_drop = None;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(p) = self.remove_on_drop.take() {
            let _ = fs::remove_file(p);
        }
    }
}

pub(crate) fn open_raw(p: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An aligned scratch buffer for set-up I/O (layout, probe).
struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Result<Self> {
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context("allocating a set-up buffer");
        }
        Ok(AlignedBuf {
            ptr: ptr.cast(),
            len,
        })
    }
    fn as_mut(&mut self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn no_odirect(path: &Path, magic: Option<i64>) -> anyhow::Error {
    let fs = magic
        .map(fs_name)
        .unwrap_or_else(|| "its filesystem".into());
    let m = magic
        .map(|m| format!(" (statfs magic {m:#x})"))
        .unwrap_or_default();
    anyhow!(
        "{} is on {fs}{m}, which does not support O_DIRECT; use a file on ext4, xfs or \
         btrfs, or a block device, or pass --buffered",
        path.display()
    )
}

fn memory_fs_refusal(path: &Path, magic: i64) -> anyhow::Error {
    anyhow!(
        "{} is on {} (statfs magic {magic:#x}): memory-backed, O_DIRECT there is served from \
         the page cache and pins no user pages; use a file on ext4, xfs or btrfs, or a block \
         device, or pass --buffered",
        path.display(),
        fs_name(magic)
    )
}

/// Refuse O_DIRECT on memory-backed filesystems, also behind an overlay.
fn refuse_memory_backed(probe: &Path, path: &Path, magic: i64) -> Result<()> {
    if is_memory_fs(magic) {
        return Err(memory_fs_refusal(path, magic));
    }
    if fs_name(magic) == "overlay" {
        if let Some((layer, m)) = safety::overlay_layer(probe).filter(|(_, m)| is_memory_fs(*m)) {
            bail!(
                "{} is on overlay whose layer {} is on {} (statfs magic {m:#x}): memory-backed, \
                 O_DIRECT there is served from the page cache and pins no user pages; use a \
                 file on ext4, xfs or btrfs, or a block device, or pass --buffered",
                path.display(),
                layer.display(),
                fs_name(m)
            );
        }
    }
    Ok(())
}

/// statx(STATX_DIOALIGN): `Some((mem_align, offset_align))`, `Some((0, 0))` when the
/// file does not support direct I/O, `None` when the kernel does not say.
fn statx_dioalign(fd: RawFd) -> Option<(u32, u32)> {
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if r != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align))
}

fn sysfs_dma_align(dev: (u32, u32)) -> Option<u32> {
    let base = PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1));
    for p in [
        base.join("queue/dma_alignment"),
        base.join("../queue/dma_alignment"),
    ] {
        if let Ok(s) = fs::read_to_string(p) {
            if let Ok(v) = s.trim().parse::<u32>() {
                return Some(v + 1);
            }
        }
    }
    None
}

fn block_geometry(
    fd: RawFd,
    path: &Path,
    dev: (u32, u32),
) -> Result<(u64, u32, u32, &'static str)> {
    let mut size: u64 = 0;
    if unsafe { libc::ioctl(fd, BLKGETSIZE64 as _, &mut size) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("BLKGETSIZE64 on {}", path.display()));
    }
    let mut lbs: libc::c_int = 0;
    if unsafe { libc::ioctl(fd, BLKSSZGET as _, &mut lbs) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("BLKSSZGET on {}", path.display()));
    }
    let (mem, src) = match statx_dioalign(fd) {
        Some((m, _)) if m > 0 => (m, "ioctl+statx"),
        _ => match sysfs_dma_align(dev) {
            Some(m) => (m, "ioctl+sysfs"),
            None => (512, "ioctl"),
        },
    };
    Ok((size, lbs as u32, mem, src))
}

/// Open (or create) the target after every safety check. `direct` is the
/// configuration's O_DIRECT choice.
pub fn open_target(cfg: &EngineConfig) -> Result<Target> {
    let path = cfg.filename.as_path();
    let shown = path.display();
    let writes = cfg.rw.writes();
    let direct_flag = if cfg.direct { libc::O_DIRECT } else { 0 };
    let md = match fs::metadata(path) {
        Ok(md) => Some(md),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot look at {shown}")),
    };
    let Some(md) = md else {
        return create_target(cfg);
    };
    let access = if writes { libc::O_RDWR } else { libc::O_RDONLY };
    if md.file_type().is_block_device() {
        let dev = (libc::major(md.rdev()), libc::minor(md.rdev()));
        if writes {
            safety::check_block_device_writable(path, dev)?;
            if !cfg.allow_overwrite {
                bail!(
                    "refusing to write to block device {shown}: it would destroy its contents; \
                     pass --allow-overwrite if that is what you want"
                );
            }
        }
        // O_EXCL on a block device: the kernel refuses it while the device is
        // mounted or claimed, a second guard beside the checks above.
        let excl = if writes { libc::O_EXCL } else { 0 };
        let mut tries = 0;
        let opened = loop {
            // A ring torn down just before may hold its claim a moment longer.
            match open_raw(path, access | direct_flag | excl, 0) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r,
            }
        };
        let fd = opened.map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => anyhow!("refusing to write to {shown}: the device is busy (mounted or claimed by another driver)"),
            Some(libc::EINVAL) if cfg.direct => anyhow!("{shown} does not accept O_DIRECT"),
            _ => anyhow!("cannot open {shown}: {e}"),
        })?;
        let (size, lbs, mem, src) = block_geometry(fd.as_raw_fd(), path, dev)?;
        let info = TargetInfo {
            path: path.to_path_buf(),
            kind: "block_device",
            fs_type: None,
            device: Some(format!("{}:{}", dev.0, dev.1)),
            size,
            logical_block_size: lbs,
            dio_mem_align: mem,
            align_source: src,
            created: false,
            setup_io: SetupIo::default(),
        };
        return finish(cfg, fd, info, None);
    }
    if !md.is_file() {
        bail!("{shown} is neither a regular file nor a block device");
    }
    if writes && !cfg.allow_overwrite {
        bail!(
            "refusing to write to {shown}: the file exists and this run did not create it; \
             pass --allow-overwrite to overwrite it, or name a file that does not exist"
        );
    }
    let magic = statfs_magic(path).ok();
    if cfg.direct {
        if let Some(m) = magic {
            refuse_memory_backed(path, path, m)?;
        }
    }
    let fd = open_raw(path, access | direct_flag, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) if cfg.direct => no_odirect(path, magic),
        _ => anyhow!("cannot open {shown}: {e}"),
    })?;
    let info = file_info(cfg, &fd, path, magic, md.len(), false)?;
    finish(cfg, fd, info, None)
}

fn file_info(
    cfg: &EngineConfig,
    fd: &OwnedFd,
    path: &Path,
    magic: Option<i64>,
    size: u64,
    created: bool,
) -> Result<TargetInfo> {
    let (mem, lbs, src) = match statx_dioalign(fd.as_raw_fd()) {
        Some((0, _)) if cfg.direct => return Err(no_odirect(path, magic)),
        Some((m, o)) if m > 0 => (m, o, "statx"),
        _ => {
            let blk = fs::metadata(path).map(|m| m.blksize()).unwrap_or(4096);
            (512, blk.clamp(512, 4096) as u32, "st_blksize")
        }
    };
    Ok(TargetInfo {
        path: path.to_path_buf(),
        kind: "file",
        fs_type: magic.map(fs_name),
        device: None,
        size,
        logical_block_size: lbs,
        dio_mem_align: mem,
        align_source: src,
        created,
        setup_io: SetupIo::default(),
    })
}

fn create_target(cfg: &EngineConfig) -> Result<Target> {
    let path = cfg.filename.as_path();
    let shown = path.display();
    if !cfg.rw.writes() && !cfg.create {
        bail!(
            "{shown} does not exist: nothing to read (pass --create with --size to lay out a file first)"
        );
    }
    let Some(size) = cfg.size else {
        bail!("--size: needed to create {shown}");
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let magic = statfs_magic(&parent)
        .with_context(|| format!("cannot create {shown}: directory {}", parent.display()))?;
    if cfg.direct {
        refuse_memory_backed(&parent, path, magic)?;
    }
    // Create without O_DIRECT (a refused O_DIRECT open would leave the file
    // behind), remember it for removal, then reopen.
    let created = open_raw(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644)
        .with_context(|| format!("cannot create {shown}"))?;
    drop(created);
    let mut guard = RemoveGuard(Some(path.to_path_buf()));
    let direct_flag = if cfg.direct { libc::O_DIRECT } else { 0 };
    let fd = open_raw(path, libc::O_RDWR | direct_flag, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) if cfg.direct => no_odirect(path, Some(magic)),
        _ => anyhow!("cannot open {shown}: {e}"),
    })?;
    let mut info = file_info(cfg, &fd, path, Some(magic), size, true)?;
    check_alignment(cfg, &info)?;
    layout(cfg, &fd, &mut info, size)?;
    // From here on the Target removes the file (unless the run goes
    // through with --keep).
    finish(cfg, fd, info, guard.disarm())
}

/// Removes a file when dropped unless disarmed.
struct RemoveGuard(Option<PathBuf>);

impl RemoveGuard {
    fn disarm(&mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for RemoveGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn check_alignment(cfg: &EngineConfig, info: &TargetInfo) -> Result<()> {
    if cfg.direct
        && !cfg
            .bs
            .is_multiple_of(u64::from(info.logical_block_size.max(1)))
    {
        bail!(
            "--bs: {} bytes is not a multiple of the logical block size ({} bytes) of {}",
            cfg.bs,
            info.logical_block_size,
            info.path.display()
        );
    }
    Ok(())
}

/// Write the whole file once (verify headers with generation 0, or random
/// data), so that reads hit real blocks and not holes.
fn layout(cfg: &EngineConfig, fd: &OwnedFd, info: &mut TargetInfo, size: u64) -> Result<()> {
    let bs = cfg.bs as usize;
    let chunk = (((1usize << 20) / bs).max(1) * bs).min(size as usize);
    let chunk = chunk.div_ceil(4096) * 4096;
    let mut buf = AlignedBuf::new(chunk)?;
    if !cfg.verify {
        verify::fill_random(buf.as_mut(), cfg.seed);
    }
    let mut off = 0u64;
    while off < size {
        let n = ((size - off) as usize).min(chunk / bs * bs);
        if cfg.verify {
            for (i, b) in buf.as_mut()[..n].chunks_exact_mut(bs).enumerate() {
                let h = verify::Header {
                    offset: off + (i * bs) as u64,
                    seed: cfg.seed,
                    generation: 0,
                    length: bs as u32,
                    job: 0,
                };
                let iov = libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: bs,
                };
                unsafe { verify::fill(&[iov], &h) };
            }
        }
        let w = unsafe { libc::pwrite(fd.as_raw_fd(), buf.ptr.cast(), n, off as i64) };
        if w < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) && cfg.direct {
                bail!(
                    "{} rejects aligned O_DIRECT writes ({e}) on {}",
                    info.path.display(),
                    info.fs_type.clone().unwrap_or_default()
                );
            }
            return Err(e)
                .with_context(|| format!("laying out {} at offset {off}", info.path.display()));
        }
        if w as usize != n {
            bail!(
                "short write laying out {} at offset {off}",
                info.path.display()
            );
        }
        off += n as u64;
        info.setup_io.writes += 1;
        info.setup_io.write_bytes += n as u64;
    }
    if unsafe { libc::fdatasync(fd.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error()).context("fdatasync after layout");
    }
    Ok(())
}

/// Final checks common to every target: alignment, sizes, an O_DIRECT probe read.
fn finish(
    cfg: &EngineConfig,
    fd: OwnedFd,
    info: TargetInfo,
    remove: Option<PathBuf>,
) -> Result<Target> {
    let mut target = Target {
        fd,
        info,
        remove_on_drop: remove,
    };
    let info = &target.info;
    check_alignment(cfg, info)?;
    if let Some(size) = cfg.size {
        let grows = info.kind == "file" && !cfg.rw.reads();
        if size > info.size && !grows {
            bail!(
                "--size: {} is larger than {} ({})",
                fmt_bytes(size),
                info.path.display(),
                fmt_bytes(info.size)
            );
        }
    } else if info.size < cfg.bs {
        bail!(
            "--size: {} holds less than one block of {} (pass --size to write a new region)",
            info.path.display(),
            fmt_bytes(cfg.bs)
        );
    }
    if cfg.direct && info.size >= u64::from(info.logical_block_size) {
        let lbs = info.logical_block_size as usize;
        let mut buf = AlignedBuf::new(lbs.div_ceil(4096) * 4096)?;
        let r = unsafe {
            libc::pread(
                target.fd.as_raw_fd(),
                buf.as_mut().as_mut_ptr().cast(),
                lbs,
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                let magic = statfs_magic(&info.path)
                    .ok()
                    .filter(|_| info.kind == "file");
                return Err(no_odirect(&info.path, magic));
            }
            // A device that fails I/O on purpose (dm-error, dm-flakey) fails
            // the probe too: with --allow-errors that is what was asked for.
            if !cfg.allow_errors {
                return Err(e).with_context(|| format!("probe read of {}", info.path.display()));
            }
        }
        target.info.setup_io.reads += 1;
        target.info.setup_io.read_bytes += lbs as u64;
    }
    Ok(target)
}
