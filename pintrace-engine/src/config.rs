//! The checked engine configuration.

use crate::buffer::{SegLayout, PAGE};
use clap::ValueEnum;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How I/O is issued.
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// pread / pwrite, one I/O at a time.
    Psync,
    /// preadv / pwritev with several iovecs of mixed sizes and alignments.
    #[value(alias = "pvsync2")]
    Pvsync,
    /// io_uring (plain or registered fixed buffers).
    #[value(name = "io_uring", alias = "io-uring", alias = "uring")]
    #[serde(rename = "io_uring")]
    IoUring,
    /// Linux native AIO (io_setup / io_submit / io_getevents).
    #[value(alias = "libaio")]
    Aio,
    /// SCSI READ(16) / WRITE(16) through the SG_IO ioctl (/dev/sdX or /dev/sgN).
    #[value(alias = "sg_io")]
    Sg,
    /// NVMe passthrough through io_uring IORING_OP_URING_CMD (/dev/ngXnY).
    #[value(name = "uring-cmd", alias = "uring_cmd")]
    #[serde(rename = "uring-cmd")]
    UringCmd,
}

/// A fault the engine provokes on purpose (`--fault`).
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A PROT_NONE page in the middle of every I/O's buffer: pinning fails
    /// after the pages before it were pinned.
    Hole,
    /// The last buffer of the registration is PROT_NONE: registering fails
    /// after the earlier buffers were pinned (`--fixed-buffers`).
    RegisterLast,
    /// Every I/O at an offset past the end of the target.
    PastEnd,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Hole => "hole",
            FaultKind::RegisterLast => "register-last",
            FaultKind::PastEnd => "past-end",
        }
    }
}

/// The I/O pattern, as fio's `rw=`.
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RwKind {
    Read,
    Write,
    #[value(name = "randread")]
    RandRead,
    #[value(name = "randwrite")]
    RandWrite,
    #[value(name = "rw", alias = "readwrite")]
    Rw,
    #[value(name = "randrw")]
    RandRw,
}

impl RwKind {
    /// Random offsets (a permutation of the region per pass).
    pub fn is_random(self) -> bool {
        matches!(self, RwKind::RandRead | RwKind::RandWrite | RwKind::RandRw)
    }
    /// Whether the pattern issues reads.
    pub fn reads(self) -> bool {
        !matches!(self, RwKind::Write | RwKind::RandWrite)
    }
    /// Whether the pattern issues writes.
    pub fn writes(self) -> bool {
        !matches!(self, RwKind::Read | RwKind::RandRead)
    }
    /// Percentage of reads given the `--rwmixread` value.
    pub fn read_percent(self, rwmixread: u8) -> u8 {
        match self {
            RwKind::Read | RwKind::RandRead => 100,
            RwKind::Write | RwKind::RandWrite => 0,
            RwKind::Rw | RwKind::RandRw => rwmixread,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            RwKind::Read => "read",
            RwKind::Write => "write",
            RwKind::RandRead => "randread",
            RwKind::RandWrite => "randwrite",
            RwKind::Rw => "rw",
            RwKind::RandRw => "randrw",
        }
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Psync => "psync",
            Mode::Pvsync => "pvsync",
            Mode::IoUring => "io_uring",
            Mode::Aio => "aio",
            Mode::Sg => "sg",
            Mode::UringCmd => "uring-cmd",
        }
    }
    /// Whether the mode keeps more than one I/O in flight.
    pub fn is_async(self) -> bool {
        matches!(self, Mode::IoUring | Mode::Aio | Mode::UringCmd)
    }
    /// Whether the mode sends device commands (SCSI, NVMe) instead of read/write.
    pub fn is_passthrough(self) -> bool {
        matches!(self, Mode::Sg | Mode::UringCmd)
    }
    /// Whether the mode can register fixed buffers.
    pub fn has_fixed_buffers(self) -> bool {
        matches!(self, Mode::IoUring | Mode::UringCmd)
    }
}

/// Memory behind the I/O buffers.
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BufferKind {
    /// Anonymous private memory (small pages).
    Anon,
    /// Anonymous memory, 2 MiB aligned, madvise(MADV_HUGEPAGE): large folios.
    Thp,
    /// MAP_HUGETLB: needs reserved huge pages (vm.nr_hugepages).
    Hugetlb,
    /// MAP_SHARED mapping of a scratch file: GUP on file-backed pages.
    FileShared,
    /// Anonymous memory shared with children forked during I/O (COW vs pins).
    ForkShared,
}

impl BufferKind {
    pub fn name(self) -> &'static str {
        match self {
            BufferKind::Anon => "anon",
            BufferKind::Thp => "thp",
            BufferKind::Hugetlb => "hugetlb",
            BufferKind::FileShared => "file-shared",
            BufferKind::ForkShared => "fork-shared",
        }
    }
}

/// A usage error: which flag is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag at fault, e.g. `--bs`.
    pub flag: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

/// Smallest block that can carry a verify header and some payload.
pub const MIN_VERIFY_BS: u64 = 64;

/// A checked configuration: build one with `EngineConfig::try_from(&args)`
/// (in [`super::args`]) or [`EngineConfig::new`] and [`EngineConfig::validate`].
#[derive(Debug, Clone, Serialize)]
pub struct EngineConfig {
    pub filename: PathBuf,
    pub mode: Mode,
    pub rw: RwKind,
    pub rwmixread: u8,
    pub bs: u64,
    /// Bytes of the target to use; `None`: the whole target.
    pub size: Option<u64>,
    pub runtime: Option<Duration>,
    pub numjobs: u32,
    pub iodepth: u32,
    /// I/Os gathered before each submission (io_uring, aio); 1 like fio.
    pub iodepth_batch: u32,
    pub direct: bool,
    pub buffer: BufferKind,
    pub fixed_buffers: bool,
    pub iovecs: u32,
    pub unaligned_iovecs: bool,
    pub verify: bool,
    pub seed: u64,
    pub create: bool,
    pub allow_overwrite: bool,
    pub keep: bool,
    pub shared_region: bool,
    pub scratch_dir: Option<PathBuf>,
    pub fork_interval: Duration,
    /// pvsync, sg: each I/O is `iovecs` adjacent segments of `bs / iovecs`
    /// bytes, each within a single page (see [`crate::SegLayout::subpage`]).
    pub subpage_iovecs: bool,
    /// Each I/O buffer starts this many bytes past a page boundary.
    pub buffer_offset: u32,
    pub fault: Option<FaultKind>,
    /// Count I/O errors by errno and go on instead of ending the job.
    pub allow_errors: bool,
    /// SCSI / NVMe command timeout.
    pub cmd_timeout: Duration,
    /// The latency percentiles the report lists (fio's `--percentile-list`).
    pub percentiles: Vec<f64>,
}

impl EngineConfig {
    /// Defaults of the command line (4 KiB sequential psync reads, O_DIRECT).
    pub fn new(filename: impl Into<PathBuf>) -> Self {
        EngineConfig {
            filename: filename.into(),
            mode: Mode::Psync,
            rw: RwKind::Read,
            rwmixread: 50,
            bs: 4096,
            size: None,
            runtime: None,
            numjobs: 1,
            iodepth: 1,
            iodepth_batch: 1,
            direct: true,
            buffer: BufferKind::Anon,
            fixed_buffers: false,
            iovecs: 4,
            unaligned_iovecs: false,
            verify: false,
            seed: 0x5eed,
            create: false,
            allow_overwrite: false,
            keep: false,
            shared_region: false,
            scratch_dir: None,
            fork_interval: Duration::from_millis(50),
            subpage_iovecs: false,
            buffer_offset: 0,
            fault: None,
            allow_errors: false,
            cmd_timeout: Duration::from_secs(30),
            percentiles: crate::stats::FIO_PERCENTILES.to_vec(),
        }
    }

    /// Check the values that do not depend on the target.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.filename.as_os_str().is_empty() {
            return Err(err("--filename", "must name a file or block device"));
        }
        if self.bs == 0 {
            return Err(err("--bs", "the block size must not be zero"));
        }
        if self.direct && !self.bs.is_multiple_of(512) {
            return Err(err(
                "--bs",
                format!(
                    "{} bytes is not a multiple of 512, which O_DIRECT needs (or pass --buffered)",
                    self.bs
                ),
            ));
        }
        if self.bs > 1 << 30 {
            return Err(err("--bs", "block sizes above 1 GiB are not supported"));
        }
        if self.verify && !self.bs.is_multiple_of(8) {
            return Err(err(
                "--bs",
                "--verify needs a block size that is a multiple of 8",
            ));
        }
        if self.verify && self.bs < MIN_VERIFY_BS {
            return Err(err(
                "--bs",
                format!("--verify needs blocks of at least {MIN_VERIFY_BS} bytes"),
            ));
        }
        if let Some(size) = self.size {
            if size == 0 {
                return Err(err("--size", "must not be zero"));
            }
            if size % self.bs != 0 {
                return Err(err(
                    "--size",
                    format!(
                        "{size} bytes is not a multiple of the block size ({} bytes)",
                        self.bs
                    ),
                ));
            }
        }
        if self.rwmixread > 100 {
            return Err(err(
                "--rwmixread",
                format!("{} is above 100 (percent)", self.rwmixread),
            ));
        }
        if self.numjobs == 0 {
            return Err(err("--numjobs", "must be at least 1"));
        }
        if self.numjobs > 1024 {
            return Err(err("--numjobs", "at most 1024 jobs"));
        }
        if self.iodepth == 0 {
            return Err(err("--iodepth", "must be at least 1"));
        }
        if self.iodepth_batch == 0 {
            return Err(err("--iodepth-batch", "must be at least 1"));
        }
        if self.iodepth > 4096 {
            return Err(err("--iodepth", "at most 4096"));
        }
        if let Some(size) = self.size {
            if !self.shared_region && size / self.bs < u64::from(self.numjobs) {
                return Err(err(
                    "--numjobs",
                    format!(
                        "{} jobs need at least one block each, but --size holds {} blocks",
                        self.numjobs,
                        size / self.bs
                    ),
                ));
            }
        }
        if let Some(rt) = self.runtime {
            if rt.is_zero() {
                return Err(err("--runtime", "must be above zero"));
            }
        }
        if self.fixed_buffers && !self.mode.has_fixed_buffers() {
            return Err(err(
                "--fixed-buffers",
                "only applies to --mode io_uring and --mode uring-cmd",
            ));
        }
        if self.mode == Mode::Pvsync && (self.iovecs == 0 || self.iovecs > 64) {
            return Err(err("--iovecs", "must be between 1 and 64"));
        }
        self.validate_paths()?;
        if self.unaligned_iovecs && self.mode != Mode::Pvsync {
            return Err(err("--unaligned-iovecs", "only applies to --mode pvsync"));
        }
        if self.shared_region && self.verify && self.rw.writes() && self.numjobs > 1 {
            return Err(err(
                "--shared-region",
                "jobs writing the same blocks cannot be verified (drop --verify or --shared-region)",
            ));
        }
        if self.fork_interval.is_zero() {
            return Err(err("--fork-interval", "must be above zero"));
        }
        Ok(())
    }

    /// The checks of sub-page segments, buffer offsets, faults and the
    /// passthrough modes.
    fn validate_paths(&self) -> Result<(), ConfigError> {
        if self.subpage_iovecs {
            if !matches!(self.mode, Mode::Pvsync | Mode::Sg) {
                return Err(err(
                    "--subpage-iovecs",
                    "only applies to --mode pvsync and --mode sg",
                ));
            }
            if self.unaligned_iovecs {
                return Err(err(
                    "--subpage-iovecs",
                    "cannot be combined with --unaligned-iovecs (two different layouts)",
                ));
            }
            if self.iovecs == 0 || self.iovecs > 64 {
                return Err(err("--iovecs", "must be between 1 and 64"));
            }
            SegLayout::subpage(self.bs as usize, self.iovecs, self.buffer_offset as usize)
                .map_err(|m| err("--subpage-iovecs", m))?;
        }
        if self.buffer_offset as usize >= PAGE {
            return Err(err(
                "--buffer-offset",
                format!(
                    "{} bytes: the offset into a page must be below the page size ({PAGE})",
                    self.buffer_offset
                ),
            ));
        }
        if self.mode.is_passthrough() && !self.direct {
            return Err(err(
                "--buffered",
                format!(
                    "--mode {} sends device commands: there is no page cache to go through",
                    self.mode.name()
                ),
            ));
        }
        if self.mode.is_passthrough() && self.buffer == BufferKind::ForkShared {
            return Err(err(
                "--buffer",
                format!(
                    "fork-shared is not supported by --mode {}",
                    self.mode.name()
                ),
            ));
        }
        if self.cmd_timeout.is_zero() || self.cmd_timeout > Duration::from_secs(3600) {
            return Err(err(
                "--cmd-timeout",
                "must be above zero and at most an hour",
            ));
        }
        let Some(fault) = self.fault else {
            return Ok(());
        };
        if self.verify {
            return Err(err(
                "--fault",
                "cannot be combined with --verify (faulted I/O moves no data to check)",
            ));
        }
        if self.buffer == BufferKind::ForkShared {
            return Err(err(
                "--fault",
                "cannot be combined with --buffer fork-shared",
            ));
        }
        match fault {
            FaultKind::Hole => {
                if self.fixed_buffers {
                    return Err(err(
                        "--fault",
                        "hole: registered buffers are pinned at registration (use --fault register-last)",
                    ));
                }
                if self.mode == Mode::Pvsync || self.subpage_iovecs {
                    return Err(err(
                        "--fault",
                        "hole needs one contiguous buffer per I/O (not --mode pvsync or --subpage-iovecs)",
                    ));
                }
                if self.buffer_offset as u64 + self.bs < 2 * PAGE as u64 {
                    return Err(err(
                        "--bs",
                        format!(
                            "--fault hole needs I/O buffers spanning at least 2 pages \
                             (a page pinned before the hole), not {} bytes",
                            self.bs
                        ),
                    ));
                }
                if matches!(self.buffer, BufferKind::Thp | BufferKind::Hugetlb) {
                    return Err(err(
                        "--fault",
                        "hole needs small pages (a PROT_NONE page inside a huge page would split it)",
                    ));
                }
            }
            FaultKind::RegisterLast => {
                if !self.fixed_buffers {
                    return Err(err(
                        "--fault",
                        "register-last needs --fixed-buffers (--mode io_uring or uring-cmd)",
                    ));
                }
                if self.iodepth < 2 {
                    return Err(err(
                        "--iodepth",
                        "--fault register-last needs at least 2 buffers (--iodepth 2): \
                         one pinned before the failing one",
                    ));
                }
                if matches!(self.buffer, BufferKind::Thp | BufferKind::Hugetlb) {
                    return Err(err(
                        "--fault",
                        "register-last needs small pages (a PROT_NONE page inside a huge page would split it)",
                    ));
                }
            }
            FaultKind::PastEnd => {}
        }
        Ok(())
    }

    /// Number of I/O buffers each job needs.
    pub fn slots(&self) -> u32 {
        if self.mode.is_async() {
            self.iodepth
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_helpers() {
        assert!(RwKind::RandRw.is_random() && RwKind::RandRw.reads() && RwKind::RandRw.writes());
        assert!(!RwKind::Write.reads());
        assert_eq!(RwKind::Write.read_percent(70), 0);
        assert_eq!(RwKind::RandRead.read_percent(0), 100);
    }
}
