//! Refusals that protect data: mounted or busy block devices, filesystems
//! that do not really do O_DIRECT.

use anyhow::{bail, Result};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// statfs magic numbers of the filesystems worth naming.
const FS_MAGICS: &[(i64, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0xF2F5_2010, "f2fs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
    (0x794c_7630, "overlay"),
    (0x6969, "nfs"),
    (0x6573_5546, "fuse"),
    (0x0102_1997, "9p"),
    (0x7371_7368, "squashfs"),
    (0x2fc1_2fc1, "zfs"),
    (0x4d44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x5346_544e, "ntfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x0000_9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6264_6576, "bdev"),
    (0x3153_464a, "jfs"),
    (0x5265_4973, "reiserfs"),
    (0xCA45_1A4E, "bcachefs"),
    (0x7363_6673, "securityfs"),
    (0x0000_4244, "hfs"),
    (0x0000_9660, "iso9660"),
    (0xde5e_81e4, "efivarfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x6a65_6a63, "virtiofs"),
];

/// Name of a filesystem from its statfs magic, or `fs 0x...` when unknown.
pub fn fs_name(magic: i64) -> String {
    FS_MAGICS
        .iter()
        .find(|(m, _)| *m == (magic & 0xffff_ffff))
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| format!("unknown fs (magic {magic:#x})"))
}

/// statfs magic of the filesystem holding `path`.
pub fn statfs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// Whether the filesystem is memory-backed: O_DIRECT there (tmpfs from 6.6)
/// is a copy through the page cache and pins no user pages.
pub fn is_memory_fs(magic: i64) -> bool {
    matches!(magic & 0xffff_ffff, 0x0102_1994 | 0x8584_58f6)
}

/// The overlay mount holding `path`, if any: the directory of its upper
/// layer (or its first lower layer when read-only) and that layer's statfs magic.
pub fn overlay_layer(path: &Path) -> Option<(PathBuf, i64)> {
    let real = fs::canonicalize(path).ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let m = mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|m| real.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.len())?;
    if m.fstype != "overlay" {
        return None;
    }
    let opt = |key: &str| {
        m.super_opts
            .split(',')
            .find_map(|o| o.strip_prefix(key))
            .map(|v| v.split(':').next().unwrap_or(v).to_string())
    };
    let layer = PathBuf::from(unescape(&opt("upperdir=").or_else(|| opt("lowerdir="))?));
    let magic = statfs_magic(&layer).ok()?;
    Some((layer, magic))
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub dev: (u32, u32),
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    /// Superblock options (e.g. overlay's `upperdir=`).
    pub super_opts: String,
}

/// Parse a mountinfo line: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split_whitespace();
    let _id = l.next()?;
    let _parent = l.next()?;
    let (maj, min) = l.next()?.split_once(':')?;
    let _root = l.next()?;
    let mount_point = unescape(l.next()?);
    let mut r = right.split_whitespace();
    let fstype = r.next()?.to_string();
    let source = unescape(r.next().unwrap_or(""));
    let super_opts = r.next().unwrap_or("").to_string();
    Some(MountEntry {
        dev: (maj.parse().ok()?, min.parse().ok()?),
        mount_point,
        fstype,
        source,
        super_opts,
    })
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Block devices (major, minor, name) of the partitions of a disk.
fn partitions_of(dev: (u32, u32)) -> Vec<((u32, u32), String)> {
    let dir = PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1));
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if !p.join("partition").exists() {
                continue;
            }
            if let Ok(s) = fs::read_to_string(p.join("dev")) {
                if let Some((a, b)) = s.trim().split_once(':') {
                    if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                        out.push(((a, b), e.file_name().to_string_lossy().into_owned()));
                    }
                }
            }
        }
    }
    out
}

fn canonical(p: &str) -> Option<PathBuf> {
    fs::canonicalize(p).ok()
}

/// Refuse to write to a block device that is mounted (itself or one of its
/// partitions), used as swap, or held by another driver (dm, md, ...).
pub fn check_block_device_writable(path: &Path, dev: (u32, u32)) -> Result<()> {
    let shown = path.display();
    let mut devs = vec![(dev, String::new())];
    devs.extend(partitions_of(dev));
    let target_real = fs::canonicalize(path).ok();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mountinfo.lines().filter_map(parse_mountinfo_line) {
        let by_dev = devs.iter().find(|(d, _)| *d == m.dev);
        let by_source = m.source.starts_with('/') && canonical(&m.source) == target_real;
        if let Some((_, part)) = by_dev {
            let what = if part.is_empty() {
                String::new()
            } else {
                format!(" (partition {part})")
            };
            bail!(
                "refusing to write to {shown}: it is mounted{what} on {} ({}); unmount it first",
                m.mount_point,
                m.fstype
            );
        }
        if by_source {
            bail!(
                "refusing to write to {shown}: it is mounted on {} ({}); unmount it first",
                m.mount_point,
                m.fstype
            );
        }
    }
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(md) = fs::metadata(name) else {
            continue;
        };
        let swap_dev = (libc::major(md.rdev()), libc::minor(md.rdev()));
        if md.file_type().is_block_device() {
            if let Some((_, part)) = devs.iter().find(|(d, _)| *d == swap_dev) {
                let what = if part.is_empty() {
                    String::new()
                } else {
                    format!(" (partition {part})")
                };
                bail!("refusing to write to {shown}: it is in use as swap{what}");
            }
        }
    }
    for ((maj, min), _) in &devs {
        let holders = PathBuf::from(format!("/sys/dev/block/{maj}:{min}/holders"));
        if let Ok(rd) = fs::read_dir(holders) {
            let names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if !names.is_empty() {
                bail!(
                    "refusing to write to {shown}: it is held by {} (device mapper, md or similar)",
                    names.join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.dev, (98, 0));
        assert_eq!(m.mount_point, "/mnt two");
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.super_opts, "rw,errors=continue");
        let t = parse_mountinfo_line("25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw").unwrap();
        assert_eq!(t.dev, (0, 23));
        assert!(parse_mountinfo_line("garbage").is_none());
    }

    #[test]
    fn names_filesystems() {
        assert_eq!(fs_name(0xEF53), "ext4");
        assert_eq!(fs_name(0x0102_1994), "tmpfs");
        assert_eq!(fs_name(0x794c_7630), "overlay");
        assert!(fs_name(0x1234).contains("0x1234"));
        assert!(is_memory_fs(0x0102_1994));
        assert!(!is_memory_fs(0xEF53));
    }

    #[test]
    fn statfs_of_root() {
        let m = statfs_magic(Path::new("/")).unwrap();
        assert!(!fs_name(m).is_empty());
        assert!(statfs_magic(Path::new("/no/such/dir")).is_err());
    }
}
