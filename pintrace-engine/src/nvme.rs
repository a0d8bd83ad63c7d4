//! NVMe passthrough: `struct nvme_uring_cmd` of linux/nvme_ioctl.h, the
//! NVMe status codes the engine names, and opening the generic character
//! device /dev/ngXnY (with the safety checks of its block device nvmeXnY).

use super::config::EngineConfig;
use super::safety;
use super::target::{open_raw, Target, TargetInfo};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// `NVME_URING_CMD_IO`: `_IOWR('N', 0x80, struct nvme_uring_cmd)`.
pub const NVME_URING_CMD_IO: u32 = 0xc048_4e80;
/// `NVME_IOCTL_ID`: `_IO('N', 0x40)`, returns the namespace id.
pub const NVME_IOCTL_ID: libc::c_ulong = 0x4e40;
/// NVM command set opcodes.
pub const OP_WRITE: u8 = 0x01;
pub const OP_READ: u8 = 0x02;

/// `struct nvme_uring_cmd` (72 bytes), carried in the 80 command bytes of
/// a 128-byte SQE.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmeUringCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    pub rsvd2: u32,
}

impl NvmeUringCmd {
    /// Read or Write of `nlb` logical blocks at `slba` to or from `len`
    /// bytes at `addr`: cdw10/11 hold the starting LBA, cdw12 the number of
    /// blocks minus one (a 0's-based value).
    pub fn rw(write: bool, nsid: u32, slba: u64, nlb: u32, addr: u64, len: u32) -> Self {
        NvmeUringCmd {
            opcode: if write { OP_WRITE } else { OP_READ },
            nsid,
            addr,
            data_len: len,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: nlb.saturating_sub(1) & 0xffff,
            ..Default::default()
        }
    }

    /// The command as the 80 bytes of the SQE's command area (little endian,
    /// the field order of the C struct, no padding).
    pub fn to_bytes(&self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.rsvd1.to_le_bytes());
        b[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        b[8..12].copy_from_slice(&self.cdw2.to_le_bytes());
        b[12..16].copy_from_slice(&self.cdw3.to_le_bytes());
        b[16..24].copy_from_slice(&self.metadata.to_le_bytes());
        b[24..32].copy_from_slice(&self.addr.to_le_bytes());
        let tail = [
            self.metadata_len,
            self.data_len,
            self.cdw10,
            self.cdw11,
            self.cdw12,
            self.cdw13,
            self.cdw14,
            self.cdw15,
            self.timeout_ms,
            self.rsvd2,
        ];
        for (i, v) in tail.iter().enumerate() {
            let o = 32 + 4 * i;
            b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// A positive completion result is the NVMe status field: status code
/// (bits 0-7) and status code type (bits 8-10). The outcome counted, and a
/// sentence.
pub fn status(res: i32) -> (String, String) {
    let sc = (res & 0xff) as u8;
    let sct = ((res >> 8) & 0x7) as u8;
    let name = match (sct, sc) {
        (0, 0x01) => "invalid command opcode",
        (0, 0x02) => "invalid field in command",
        (0, 0x04) => "data transfer error",
        (0, 0x06) => "internal error",
        (0, 0x0b) => "invalid namespace or format",
        (0, 0x80) => "LBA out of range",
        (0, 0x81) => "capacity exceeded",
        (0, 0x82) => "namespace not ready",
        (2, 0x80) => "write fault",
        (2, 0x81) => "unrecovered read error",
        (2, 0x86) => "access denied",
        _ => "",
    };
    let outcome = format!("nvme {sct:x}/{sc:02x}h");
    let message = if name.is_empty() {
        format!("NVMe status type {sct} code {sc:#04x} (status field {res:#x})")
    } else {
        format!("NVMe status type {sct} code {sc:#04x}: {name}")
    };
    (outcome, message)
}

/// What the engine knows of the namespace.
#[derive(Debug, Clone, Serialize)]
pub struct NvmeReport {
    /// The generic character device (`ng0n1`) and its block device (`nvme0n1`).
    pub generic: String,
    pub block_device: String,
    pub nsid: u32,
    pub logical_block_size: u32,
}

pub struct NvmeTarget {
    pub target: Target,
    pub report: NvmeReport,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// The block device of a generic node name: `ng0n1` -> `nvme0n1`.
pub fn block_name(generic: &str) -> Option<String> {
    let rest = generic.strip_prefix("ng")?;
    let (ctrl, ns) = rest.split_once('n')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    (digits(ctrl) && digits(ns)).then(|| format!("nvme{ctrl}n{ns}"))
}

/// Open /dev/ngXnY for `--mode uring-cmd`.
pub fn open(cfg: &EngineConfig) -> Result<NvmeTarget> {
    let path = cfg.filename.as_path();
    let shown = path.display();
    let md = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let any = fs::read_dir("/dev").ok().is_some_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("ng"))
            });
            let none = if any {
                ""
            } else {
                " (there is no /dev/ng* on this machine: no NVMe namespace, or a kernel before 5.13 without NVMe generic char devices)"
            };
            bail!("--mode uring-cmd: cannot look at {shown}: {e}{none}");
        }
    };
    let generic = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let block = match (md.file_type().is_char_device(), block_name(&generic)) {
        (true, Some(b)) => b,
        _ => {
            bail!("--mode uring-cmd: {shown} is not an NVMe generic character device (/dev/ngXnY)")
        }
    };
    let sys = PathBuf::from(format!("/sys/block/{block}"));
    let lbs: u32 = read_trim(&sys.join("queue/logical_block_size"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "--mode uring-cmd: no {} to read the logical block size of {shown} from",
                sys.display()
            )
        })?;
    let sectors: u64 = read_trim(&sys.join("size"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("--mode uring-cmd: cannot read {}/size", sys.display()))?;
    let dev = read_trim(&sys.join("dev"))
        .and_then(|s| {
            let (a, b) = s.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .ok_or_else(|| anyhow!("--mode uring-cmd: cannot read {}/dev", sys.display()))?;
    let bpath = PathBuf::from(format!("/dev/{block}"));
    if cfg.rw.writes() {
        if !cfg.allow_overwrite {
            bail!(
                "refusing to write to {shown}: NVMe passthrough writes the namespace {} and would \
                 destroy its contents; pass --allow-overwrite if that is what you want",
                bpath.display()
            );
        }
        safety::check_block_device_writable(&bpath, dev)?;
    }
    let access = if cfg.rw.writes() {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    let fd = open_raw(path, access, 0).with_context(|| format!("cannot open {shown}"))?;
    // SAFETY: NVME_IOCTL_ID takes no argument.
    let nsid = unsafe { libc::ioctl(fd.as_raw_fd(), NVME_IOCTL_ID as _) };
    if nsid <= 0 {
        let e = std::io::Error::last_os_error();
        bail!("--mode uring-cmd: NVME_IOCTL_ID on {shown} failed: {e} (not an NVMe namespace?)");
    }
    if !cfg.bs.is_multiple_of(u64::from(lbs)) {
        bail!(
            "--bs: {} bytes is not a multiple of the logical block size ({lbs} bytes) of {shown}",
            cfg.bs
        );
    }
    if cfg.bs / u64::from(lbs) > 0x1_0000 {
        bail!("--bs: an NVMe command moves at most 65536 logical blocks");
    }
    let info = TargetInfo {
        path: path.to_path_buf(),
        kind: "nvme_generic",
        fs_type: None,
        device: Some(format!("{}:{}", dev.0, dev.1)),
        size: sectors * 512,
        logical_block_size: lbs,
        dio_mem_align: 4,
        align_source: "sysfs",
        created: false,
        setup_io: Default::default(),
    };
    Ok(NvmeTarget {
        target: Target::device(fd, info),
        report: NvmeReport {
            generic,
            block_device: block,
            nsid: nsid as u32,
            logical_block_size: lbs,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_layout_matches_nvme_ioctl_h() {
        assert_eq!(std::mem::size_of::<NvmeUringCmd>(), 72);
        assert_eq!(std::mem::offset_of!(NvmeUringCmd, addr), 24);
        assert_eq!(std::mem::offset_of!(NvmeUringCmd, data_len), 36);
        assert_eq!(std::mem::offset_of!(NvmeUringCmd, cdw10), 40);
        assert_eq!(std::mem::offset_of!(NvmeUringCmd, timeout_ms), 64);
        // _IOWR('N', 0x80, 72 bytes)
        assert_eq!(
            NVME_URING_CMD_IO,
            (3 << 30) | (72 << 16) | (0x4e << 8) | 0x80
        );
        let c = NvmeUringCmd::rw(false, 1, 0x1_0000_0002, 8, 0xdead_b000, 4096);
        assert_eq!((c.opcode, c.cdw10, c.cdw11, c.cdw12), (OP_READ, 2, 1, 7));
        let b = c.to_bytes();
        assert_eq!(b[0], 0x02);
        assert_eq!(&b[4..8], &1u32.to_le_bytes());
        assert_eq!(&b[24..32], &0xdead_b000u64.to_le_bytes());
        assert_eq!(&b[36..40], &4096u32.to_le_bytes());
        assert_eq!(&b[40..44], &2u32.to_le_bytes());
        assert_eq!(&b[44..48], &1u32.to_le_bytes());
        assert_eq!(&b[48..52], &7u32.to_le_bytes());
        assert!(b[72..].iter().all(|&x| x == 0));
        assert_eq!(NvmeUringCmd::rw(true, 1, 0, 1, 0, 512).opcode, OP_WRITE);
        assert_eq!(NvmeUringCmd::rw(true, 1, 0, 1, 0, 512).cdw12, 0);
    }

    #[test]
    fn statuses_and_names() {
        let (o, m) = status(0x80);
        assert_eq!(o, "nvme 0/80h");
        assert!(m.contains("LBA out of range"), "{m}");
        let (o, m) = status(0x4281); // DNR + media error, unrecovered read
        assert_eq!(o, "nvme 2/81h");
        assert!(m.contains("unrecovered read error"), "{m}");
        assert!(status(0x7f).1.contains("status field"));
        assert_eq!(block_name("ng0n1").as_deref(), Some("nvme0n1"));
        assert_eq!(block_name("ng12n3").as_deref(), Some("nvme12n3"));
        assert_eq!(block_name("nvme0n1"), None);
        assert_eq!(block_name("ngxn1"), None);
    }
}
