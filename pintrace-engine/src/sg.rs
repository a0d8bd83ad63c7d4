//! `sg` mode: SCSI READ(16) / WRITE(16) through SG_IO on a SCSI disk's block
//! node (/dev/sdX) or its sg node (/dev/sgN), one command at a time per job.
//!
//! Which pages the kernel pins is decided by `blk_rq_map_user_iov()`: it maps
//! the user pages (FOLL_PIN from 6.5, FOLL_GET before) when every segment's
//! address and length are aligned to the queue's DMA alignment and there is
//! no gap against its virt boundary, else it copies through a kernel bounce
//! buffer and pins nothing. The sg driver adds its own rule: it passes user
//! memory down only for SG_FLAG_DIRECT_IO with `allow_dio` set and a single
//! aligned buffer; otherwise it copies through its reserved buffer. The
//! engine works out which of the two the kernel should do and reports it.

use super::config::EngineConfig;
use super::job::{Job, Next};
use super::safety;
use super::sgio::{self, SgIoHdr, SENSE_LEN};
use super::target::{open_raw, Target, TargetInfo, BLKGETSIZE64, BLKSSZGET};
use crate::buffer::SegLayout;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Major number of the sg character devices.
const SCSI_GENERIC_MAJOR: u32 = 21;

/// What the engine knows of the SCSI target and expects of the kernel.
#[derive(Debug, Clone, Serialize)]
pub struct SgReport {
    /// `block` (/dev/sdX) or `sg` (/dev/sgN).
    pub node: &'static str,
    /// The disk's block device (`sda`), when there is one.
    pub block_device: Option<String>,
    /// The queue's DMA alignment in bytes (`queue/dma_alignment` + 1).
    pub dma_alignment: Option<u32>,
    /// The queue's virt boundary mask (`queue/virt_boundary_mask`).
    pub virt_boundary_mask: Option<u64>,
    /// sg node: the sg driver's `allow_dio` (/proc/scsi/sg/allow_dio).
    pub allow_dio: Option<bool>,
    /// `map` (the kernel pins the user pages), `copy` (bounce buffer, no
    /// pin) or `unknown` (the queue limits could not be read).
    pub expect: &'static str,
    /// Why.
    pub reason: String,
    /// sg node: commands the sg driver reported as done by direct I/O
    /// (SG_INFO_DIRECT_IO), summed over jobs.
    pub direct_io: Option<u64>,
}

/// An opened SCSI target and what the engine expects.
pub struct SgTarget {
    pub target: Target,
    pub report: SgReport,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// The block device name of an sg node (`sda` for `/dev/sg0`).
fn block_of_sg(dev: (u32, u32)) -> Option<String> {
    let dir = PathBuf::from(format!("/sys/dev/char/{}:{}/device/block", dev.0, dev.1));
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
}

fn queue_limits(block: &str) -> (Option<u32>, Option<u64>) {
    let q = PathBuf::from(format!("/sys/block/{block}/queue"));
    let dma = read_trim(&q.join("dma_alignment"))
        .and_then(|s| s.parse::<u32>().ok())
        .map(|m| m + 1);
    let vbm = read_trim(&q.join("virt_boundary_mask")).and_then(|s| s.parse::<u64>().ok());
    (dma, vbm)
}

/// Open the target of `--mode sg` after the safety checks of block devices.
pub fn open(cfg: &EngineConfig) -> Result<SgTarget> {
    let path = cfg.filename.as_path();
    let shown = path.display();
    let md = fs::metadata(path).with_context(|| format!("--mode sg: cannot look at {shown}"))?;
    let dev = (libc::major(md.rdev()), libc::minor(md.rdev()));
    let writes = cfg.rw.writes();
    let (node, block) = if md.file_type().is_block_device() {
        let name = read_trim(&PathBuf::from(format!(
            "/sys/dev/block/{}:{}/uevent",
            dev.0, dev.1
        )))
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
        });
        ("block", name)
    } else if md.file_type().is_char_device() && dev.0 == SCSI_GENERIC_MAJOR {
        ("sg", block_of_sg(dev))
    } else {
        bail!(
            "--mode sg: {shown} is neither a SCSI disk's block device (/dev/sdX) nor an sg \
             node (/dev/sgN, character major {SCSI_GENERIC_MAJOR})"
        );
    };
    if writes {
        if !cfg.allow_overwrite {
            bail!(
                "refusing to write to {shown} with SCSI WRITE(16): it would destroy the disk's \
                 contents; pass --allow-overwrite if that is what you want"
            );
        }
        match (&block, node) {
            (_, "block") => safety::check_block_device_writable(path, dev)?,
            (Some(b), _) => {
                let bpath = PathBuf::from(format!("/dev/{b}"));
                let bmd = fs::metadata(&bpath).with_context(|| {
                    format!("checking {} (the disk of {shown})", bpath.display())
                })?;
                let bdev = (libc::major(bmd.rdev()), libc::minor(bmd.rdev()));
                safety::check_block_device_writable(&bpath, bdev)?;
            }
            (None, _) => {}
        }
    }
    let access = if writes { libc::O_RDWR } else { libc::O_RDONLY };
    // O_EXCL on the block node: refused while mounted or claimed.
    let excl = if writes && node == "block" {
        libc::O_EXCL
    } else {
        0
    };
    let fd = open_raw(path, access | excl, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => anyhow!(
            "refusing to write to {shown}: the device is busy (mounted or claimed by another driver)"
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            anyhow!("cannot open {shown}: {e} (SG_IO needs root or CAP_SYS_RAWIO)")
        }
        _ => anyhow!("cannot open {shown}: {e}"),
    })?;
    let (size, lbs) = if node == "block" {
        let mut size: u64 = 0;
        let mut lbs: libc::c_int = 0;
        // SAFETY: both ioctls write one integer of the given type.
        unsafe {
            if libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64 as _, &mut size) != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("BLKGETSIZE64 on {shown}"));
            }
            if libc::ioctl(fd.as_raw_fd(), BLKSSZGET as _, &mut lbs) != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("BLKSSZGET on {shown}"));
            }
        }
        (size, lbs as u32)
    } else {
        let (blocks, lbs) = read_capacity(fd.as_raw_fd(), cfg)
            .with_context(|| format!("READ CAPACITY(16) on {shown}"))?;
        (blocks * u64::from(lbs), lbs)
    };
    if !cfg.bs.is_multiple_of(u64::from(lbs)) {
        bail!(
            "--bs: {} bytes is not a multiple of the logical block size ({lbs} bytes) of {shown}",
            cfg.bs
        );
    }
    let (dma, vbm) = block.as_deref().map(queue_limits).unwrap_or((None, None));
    let allow_dio = (node == "sg")
        .then(|| read_trim(Path::new("/proc/scsi/sg/allow_dio")).is_some_and(|s| s != "0"));
    let info = TargetInfo {
        path: path.to_path_buf(),
        kind: if node == "block" {
            "block_device"
        } else {
            "scsi_generic"
        },
        fs_type: None,
        device: Some(format!("{}:{}", dev.0, dev.1)),
        size,
        logical_block_size: lbs,
        dio_mem_align: dma.unwrap_or(1),
        align_source: if dma.is_some() { "sysfs" } else { "unknown" },
        created: false,
        setup_io: Default::default(),
    };
    let report = SgReport {
        node,
        block_device: block,
        dma_alignment: dma,
        virt_boundary_mask: vbm,
        allow_dio,
        expect: "unknown",
        reason: String::new(),
        direct_io: (node == "sg").then_some(0),
    };
    Ok(SgTarget {
        target: Target::device(fd, info),
        report,
    })
}

fn read_capacity(fd: RawFd, cfg: &EngineConfig) -> Result<(u64, u32)> {
    let mut data = [0u8; 32];
    let mut sense = [0u8; SENSE_LEN];
    let cdb = sgio::read_capacity16(data.len() as u32);
    let mut hdr = SgIoHdr::new(
        &cdb,
        false,
        data.as_mut_ptr().cast(),
        data.len() as u32,
        0,
        &mut sense,
        cfg.cmd_timeout.as_millis() as u32,
    );
    // SAFETY: the header points at `cdb`, `data` and `sense`, all live here.
    unsafe { sgio::sg_io(fd, &mut hdr) }?;
    sgio::outcome(&hdr, &sense).map_err(|f| anyhow!("{}", f.message))?;
    sgio::parse_capacity16(&data).ok_or_else(|| anyhow!("the answer holds no capacity"))
}

/// Whether the kernel should map the user pages of `layout` or copy them,
/// and why: the checks of `blk_rq_map_user_iov()` (and, on an sg node, of
/// the sg driver) done on the engine's own buffer layout. Slots start on
/// page boundaries, so an address's alignment is its segment's offset.
pub fn expectation(report: &SgReport, layout: &SegLayout) -> (&'static str, String) {
    let Some(align) = report.dma_alignment else {
        return (
            "unknown",
            "the queue's dma_alignment could not be read (no block device in sysfs)".into(),
        );
    };
    let mask = u64::from(align.saturating_sub(1));
    let iovecs = layout.segs.len() > 1;
    if report.node == "sg" {
        if !report.allow_dio.unwrap_or(false) {
            return (
                "copy",
                "the sg driver copies through its reserved buffer unless /proc/scsi/sg/allow_dio is 1".into(),
            );
        }
        if iovecs {
            return (
                "copy",
                "the sg driver copies iovec lists through its reserved buffer".into(),
            );
        }
    }
    let bits = layout
        .segs
        .iter()
        .fold(0u64, |a, &(o, l)| a | o as u64 | l as u64);
    if bits & mask != 0 {
        return (
            "copy",
            format!(
                "a segment's address or length is not a multiple of the DMA alignment ({align} bytes)"
            ),
        );
    }
    // iov_iter_gap_alignment(): each segment's start or'd with the previous end.
    let gaps = layout
        .segs
        .windows(2)
        .fold(0u64, |a, w| a | (w[1].0 as u64) | (w[0].0 + w[0].1) as u64);
    let vbm = report.virt_boundary_mask.unwrap_or(0);
    if iovecs && vbm != 0 && gaps & vbm != 0 {
        return (
            "copy",
            format!("the segments leave gaps against the queue's virt boundary (mask {vbm:#x})"),
        );
    }
    (
        "map",
        format!("every segment is aligned to the DMA alignment ({align} bytes) with no virt-boundary gap"),
    )
}

/// Run the job: one SG_IO at a time over the slot's segments.
pub fn run(job: &mut Job<'_>, iovs: &[libc::iovec], lbs: u32, sg_node: bool, timeout_ms: u32) {
    let fd = job.fd;
    let bs = job.bs as u32;
    let mut sense = [0u8; SENSE_LEN];
    let mut iov_list: Vec<libc::iovec> = iovs.to_vec();
    let (dxferp, count) = if iov_list.len() > 1 {
        (iov_list.as_mut_ptr().cast(), iov_list.len() as u16)
    } else {
        (iov_list[0].iov_base, 0)
    };
    let mut now = Instant::now();
    loop {
        let req = match job.next_io(now, 0) {
            Next::Io(r) => r,
            Next::Wait => continue,
            Next::Done => break,
        };
        if req.write {
            job.prepare_write(&req, iovs);
        }
        let cdb = sgio::rw16(req.write, req.offset / u64::from(lbs), bs / lbs);
        let mut hdr = SgIoHdr::new(&cdb, req.write, dxferp, bs, count, &mut sense, timeout_ms);
        if sg_node && count == 0 {
            hdr.flags |= sgio::SG_FLAG_DIRECT_IO;
        }
        let t0 = Instant::now();
        // SAFETY: the header points at this job's slot (bs bytes, or the
        // iovec list of it), the CDB and the sense buffer, all live here.
        let r = unsafe { sgio::sg_io(fd, &mut hdr) };
        now = Instant::now();
        let lat = now.duration_since(t0).as_nanos() as u64;
        match r {
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                job.complete(&req, -(errno as i64), lat, iovs);
            }
            Ok(()) => {
                if hdr.info & sgio::SG_INFO_DIRECT_IO_MASK == sgio::SG_INFO_DIRECT_IO {
                    job.direct_io += 1;
                }
                match sgio::outcome(&hdr, &sense) {
                    Ok(n) => job.complete(&req, n as i64, lat, iovs),
                    Err(f) => {
                        let what = if req.write { "WRITE(16)" } else { "READ(16)" };
                        let msg = format!(
                            "{what} of {bs} bytes at offset {} failed: {}",
                            req.offset, f.message
                        );
                        job.fail_status(&req, f.outcome, msg);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(node: &'static str, dma: Option<u32>, vbm: u64, dio: bool) -> SgReport {
        SgReport {
            node,
            block_device: Some("sda".into()),
            dma_alignment: dma,
            virt_boundary_mask: Some(vbm),
            allow_dio: (node == "sg").then_some(dio),
            expect: "unknown",
            reason: String::new(),
            direct_io: None,
        }
    }

    #[test]
    fn map_or_copy() {
        let block = rep("block", Some(4), 0, false);
        let aligned = SegLayout::contiguous(8192);
        assert_eq!(expectation(&block, &aligned).0, "map");
        assert_eq!(
            expectation(&block, &SegLayout::contiguous_at(8192, 4)).0,
            "map"
        );
        let (e, why) = expectation(&block, &SegLayout::contiguous_at(8192, 2));
        assert_eq!(e, "copy");
        assert!(why.contains("4 bytes"), "{why}");
        let sub = SegLayout::subpage(4096, 8, 0).unwrap();
        assert_eq!(expectation(&block, &sub).0, "map");
        // A 4 KiB virt boundary (NVMe-like) makes sub-page segments gaps.
        let vb = rep("block", Some(4), 4095, false);
        assert_eq!(expectation(&vb, &sub).0, "copy");
        assert_eq!(expectation(&vb, &aligned).0, "map");
        let sg = rep("sg", Some(4), 0, false);
        assert_eq!(expectation(&sg, &aligned).0, "copy");
        let sg_dio = rep("sg", Some(4), 0, true);
        assert_eq!(expectation(&sg_dio, &aligned).0, "map");
        assert_eq!(expectation(&sg_dio, &sub).0, "copy");
        assert_eq!(
            expectation(&rep("block", None, 0, false), &aligned).0,
            "unknown"
        );
    }
}
