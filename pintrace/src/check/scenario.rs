//! One check scenario: what the I/O runs on ([`TargetKind`]), how the engine
//! issues it ([`Drive`]), the memory behind it, its direction, and the
//! fault it injects, if any; its name and the engine command line it gives.
//! The scenarios themselves are listed in [`super::families`].

use pintrace_engine::BufferKind;
use serde::Serialize;
use std::{fmt, path::Path};

/// What the I/O runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// A raw loop block device.
    Block,
    /// An NVMe namespace given with `--scratch-device` (a real blk-mq driver
    /// with DMA mapping), and its generic char device for passthrough.
    Nvme,
    /// A `scsi_debug` disk (a RAM disk: check may use it without asking).
    ScsiDebug,
    /// A SCSI disk given with `--scratch-device`.
    Scsi,
    Ext4,
    Xfs,
    Btrfs,
    /// vfat and udf: Direct I/O through the legacy fs/direct-io.c.
    Vfat,
    Udf,
    /// pintrace's own passthrough FUSE file system, direct_io.
    Fuse,
    /// NFSv4 over a loopback export of the kernel's nfsd.
    Nfs,
}

impl TargetKind {
    pub const ALL: [TargetKind; 11] = [
        TargetKind::Block,
        TargetKind::Nvme,
        TargetKind::ScsiDebug,
        TargetKind::Scsi,
        TargetKind::Ext4,
        TargetKind::Xfs,
        TargetKind::Btrfs,
        TargetKind::Vfat,
        TargetKind::Udf,
        TargetKind::Fuse,
        TargetKind::Nfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Block => "block",
            TargetKind::Nvme => "nvme",
            TargetKind::ScsiDebug => "scsi-debug",
            TargetKind::Scsi => "scsi",
            TargetKind::Ext4 => "ext4",
            TargetKind::Xfs => "xfs",
            TargetKind::Btrfs => "btrfs",
            TargetKind::Vfat => "vfat",
            TargetKind::Udf => "udf",
            TargetKind::Fuse => "fuse",
            TargetKind::Nfs => "nfs",
        }
    }

    /// The engine runs on the device itself (not a file in a file system).
    pub fn is_device(self) -> bool {
        matches!(
            self,
            TargetKind::Block | TargetKind::Nvme | TargetKind::ScsiDebug | TargetKind::Scsi
        )
    }
}

/// How the engine issues the I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Drive {
    /// pread / pwrite.
    Psync,
    /// preadv / pwritev over iovecs of mixed sizes, aligned only to the DMA
    /// alignment (some start mid-page, some straddle pages).
    PvsyncUnaligned,
    /// preadv / pwritev of adjacent sub-page iovecs inside one page: the
    /// bio merges same-page segments, each of which took its own pin.
    PvsyncSubpage,
    /// io_uring with plain buffers.
    IoUring,
    /// io_uring with registered buffers: long-term pins taken at register,
    /// released by the explicit unregister.
    IoUringFixed,
    /// Linux native AIO.
    Aio,
    /// SCSI READ/WRITE through the SG_IO ioctl (`blk_rq_map_user_iov`),
    /// page-aligned buffers: the kernel maps the user pages.
    Sg,
    /// SG_IO with an iovec list of adjacent sub-page segments in one page.
    SgSubpage,
    /// SG_IO from a buffer misaligned for the queue: the kernel copies
    /// through its own bounce buffer and pins nothing.
    SgCopy,
    /// NVMe passthrough through io_uring (`IORING_OP_URING_CMD` on the
    /// generic char device): `blk_rq_map_user_iov` again.
    UringCmd,
    /// NVMe passthrough on registered buffers.
    UringCmdFixed,
}

impl Drive {
    pub fn name(self) -> &'static str {
        match self {
            Drive::Psync => "psync",
            Drive::PvsyncUnaligned => "pvsync-unaligned",
            Drive::PvsyncSubpage => "pvsync-subpage",
            Drive::IoUring => "io_uring",
            Drive::IoUringFixed => "io_uring-fixed",
            Drive::Aio => "aio",
            Drive::Sg => "sg",
            Drive::SgSubpage => "sg-subpage",
            Drive::SgCopy => "sg-copy",
            Drive::UringCmd => "uring-cmd",
            Drive::UringCmdFixed => "uring-cmd-fixed",
        }
    }

    fn engine_args(self) -> &'static [&'static str] {
        match self {
            Drive::Psync => &["--mode", "psync"],
            Drive::PvsyncUnaligned => &["--mode", "pvsync", "--iovecs", "4", "--unaligned-iovecs"],
            Drive::PvsyncSubpage => &["--mode", "pvsync", "--iovecs", "8", "--subpage-iovecs"],
            Drive::IoUring => &["--mode", "io_uring", "--iodepth", "4"],
            Drive::IoUringFixed => &["--mode", "io_uring", "--iodepth", "4", "--fixed-buffers"],
            Drive::Aio => &["--mode", "aio", "--iodepth", "4"],
            Drive::Sg => &["--mode", "sg"],
            Drive::SgSubpage => &["--mode", "sg", "--iovecs", "8", "--subpage-iovecs"],
            // Two bytes off a page boundary: below any queue's DMA alignment.
            Drive::SgCopy => &["--mode", "sg", "--buffer-offset", "2"],
            Drive::UringCmd => &["--mode", "uring-cmd", "--iodepth", "4"],
            Drive::UringCmdFixed => &["--mode", "uring-cmd", "--iodepth", "4", "--fixed-buffers"],
        }
    }

    /// Registered buffers: long-term pins at register, none per I/O.
    pub fn fixed(self) -> bool {
        matches!(self, Drive::IoUringFixed | Drive::UringCmdFixed)
    }

    /// Block size: 64 KiB, but one page when the segments must share it.
    pub fn bs(self) -> u64 {
        match self {
            Drive::PvsyncSubpage | Drive::SgSubpage => 4096,
            _ => 64 << 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    Read,
    Write,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::Read, Dir::Write];

    pub fn name(self) -> &'static str {
        match self {
            Dir::Read => "read",
            Dir::Write => "write",
        }
    }
}

/// An error path the scenario drives. Each passes when every pin taken is
/// released after the error, and reports the errno seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// An unmapped page in the middle of every I/O's buffer: pinning fails
    /// partway and the pages already pinned must come back.
    Hole,
    /// Every I/O past the end of the device.
    PastEnd,
    /// io_uring buffer registration whose last iovec is unmapped: it fails
    /// after the earlier pages were pinned (the path of e1c75831f682, pins
    /// leaked when `io_sqe_buffer_register` failed).
    RegisterLast,
    /// The device is a dm-error target: every bio completes with EIO.
    DmError,
    /// The device is a dm-flakey target that fails every bio while down.
    DmFlakey,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Hole => "hole",
            Fault::PastEnd => "past-end",
            Fault::RegisterLast => "register-last",
            Fault::DmError => "dm-error",
            Fault::DmFlakey => "dm-flakey",
        }
    }

    /// The engine's flags for it: the device-made faults need only that the
    /// engine goes on after an error.
    fn engine_args(self) -> &'static [&'static str] {
        match self {
            Fault::Hole => &["--fault", "hole"],
            Fault::PastEnd => &["--fault", "past-end"],
            Fault::RegisterLast => &["--fault", "register-last"],
            Fault::DmError | Fault::DmFlakey => &["--allow-errors"],
        }
    }

    /// Set up by wrapping the target's device in device-mapper.
    pub fn device_mapper(self) -> bool {
        matches!(self, Fault::DmError | Fault::DmFlakey)
    }
}

/// A real kernel bug of this class, driven by a named scenario.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Regression {
    pub name: &'static str,
    /// The bug, with the commit that fixed it.
    pub bug: &'static str,
    /// Where the pattern goes in the kernel: the trace must show it.
    pub reaches: &'static str,
    /// Extra engine flags the pattern needs.
    #[serde(skip)]
    pub engine_args: &'static [&'static str],
}

/// One scenario. Its name is `target/drive/buffer/dir`, `/fault` appended
/// when it injects one; a regression is named `regress/NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// The family it belongs to (see [`super::families`]).
    pub family: &'static str,
    pub target: TargetKind,
    pub drive: Drive,
    #[serde(serialize_with = "buffer_name")]
    pub buffer: BufferKind,
    pub dir: Dir,
    pub fault: Option<Fault>,
    pub regression: Option<&'static Regression>,
}

fn buffer_name<S: serde::Serializer>(b: &BufferKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.name())
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = self.regression {
            return write!(f, "regress/{}", r.name);
        }
        write!(
            f,
            "{}/{}/{}/{}",
            self.target.name(),
            self.drive.name(),
            self.buffer.name(),
            self.dir.name()
        )?;
        match self.fault {
            Some(fault) => write!(f, "/{}", fault.name()),
            None => Ok(()),
        }
    }
}

/// Bytes each scenario moves: 16 I/Os of 64 KiB (256 I/Os of one page for
/// the sub-page drives), 256 pages, small enough for an emulated guest and
/// large enough to be seen.
pub const SCENARIO_BYTES: u64 = 1 << 20;

impl Scenario {
    /// A plain scenario (no fault, not a regression).
    pub const fn new(target: TargetKind, drive: Drive, buffer: BufferKind, dir: Dir) -> Scenario {
        Scenario {
            family: "",
            target,
            drive,
            buffer,
            dir,
            fault: None,
            regression: None,
        }
    }

    pub const fn with_fault(mut self, fault: Fault) -> Scenario {
        self.fault = Some(fault);
        self
    }

    pub const fn regression(mut self, r: &'static Regression) -> Scenario {
        self.regression = Some(r);
        self
    }

    /// The engine's command line (after `pintrace engine`). `base` is the
    /// device (or, for passthrough, its char device) or the directory to
    /// create the file in; `scratch` holds the file behind `file-shared`
    /// buffers.
    pub fn engine_args(&self, base: &Path, is_block: bool, scratch: &Path) -> Vec<String> {
        let file = if is_block {
            base.to_path_buf()
        } else {
            let mut stem = self.to_string().replace('/', "-");
            stem.truncate(80);
            base.join(format!("{stem}.dat"))
        };
        let mut a: Vec<String> = vec![
            "--json".into(),
            "--filename".into(),
            file.display().to_string(),
            "--rw".into(),
            self.dir.name().into(),
            "--bs".into(),
            self.drive.bs().to_string(),
            "--size".into(),
            SCENARIO_BYTES.to_string(),
            "--buffer".into(),
            self.buffer.name().into(),
            "--scratch-dir".into(),
            scratch.display().to_string(),
        ];
        a.extend(self.drive.engine_args().iter().map(|s| s.to_string()));
        if let Some(f) = self.fault {
            a.extend(f.engine_args().iter().map(|s| s.to_string()));
        }
        if let Some(r) = self.regression {
            a.extend(r.engine_args.iter().map(|s| s.to_string()));
        }
        if is_block {
            if self.dir == Dir::Write {
                a.push("--allow-overwrite".into());
            }
        } else {
            a.push("--create".into());
        }
        a
    }
}
