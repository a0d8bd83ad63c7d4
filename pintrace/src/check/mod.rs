//! `pintrace check`: a pass/fail gate for a kernel. A matrix of scenarios,
//! each the engine driving one Direct I/O path (a target, an I/O mode, a
//! buffer kind, reads or writes) in a child process while one tracing
//! session watches; each is judged on what that child took and released.
//!
//! The scenario matrix and its selection ([`Scenario`], [`matrix`],
//! [`select`]) and the judging ([`judge`]) are pure and tested on the host;
//! [`targets`] and [`fuse`] set up what the I/O runs on.

pub mod fuse;
pub mod judge;
pub mod results;
pub mod targets;

use pintrace_engine::BufferKind;
use serde::Serialize;
use std::{fmt, path::Path};

/// What the I/O runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A raw loop block device.
    Block,
    Ext4,
    Xfs,
    Btrfs,
    /// pintrace's own passthrough FUSE file system, direct_io.
    Fuse,
    /// NFS over a loopback export.
    Nfs,
}

impl TargetKind {
    pub const ALL: [TargetKind; 6] = [
        TargetKind::Block,
        TargetKind::Ext4,
        TargetKind::Xfs,
        TargetKind::Btrfs,
        TargetKind::Fuse,
        TargetKind::Nfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Block => "block",
            TargetKind::Ext4 => "ext4",
            TargetKind::Xfs => "xfs",
            TargetKind::Btrfs => "btrfs",
            TargetKind::Fuse => "fuse",
            TargetKind::Nfs => "nfs",
        }
    }
}

/// How the engine issues the I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drive {
    /// pread / pwrite.
    Psync,
    /// preadv / pwritev over iovecs of mixed sizes, aligned only to the DMA
    /// alignment (some start mid-page, some straddle pages).
    PvsyncUnaligned,
    /// io_uring with plain buffers.
    IoUring,
    /// io_uring with registered buffers: long-term pins taken at register,
    /// released by the explicit unregister.
    IoUringFixed,
    /// Linux native AIO.
    Aio,
}

impl Drive {
    pub const ALL: [Drive; 5] = [
        Drive::Psync,
        Drive::PvsyncUnaligned,
        Drive::IoUring,
        Drive::IoUringFixed,
        Drive::Aio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Drive::Psync => "psync",
            Drive::PvsyncUnaligned => "pvsync-unaligned",
            Drive::IoUring => "io_uring",
            Drive::IoUringFixed => "io_uring-fixed",
            Drive::Aio => "aio",
        }
    }

    fn engine_args(self) -> &'static [&'static str] {
        match self {
            Drive::Psync => &["--mode", "psync"],
            Drive::PvsyncUnaligned => &["--mode", "pvsync", "--iovecs", "4", "--unaligned-iovecs"],
            Drive::IoUring => &["--mode", "io_uring", "--iodepth", "4"],
            Drive::IoUringFixed => &["--mode", "io_uring", "--iodepth", "4", "--fixed-buffers"],
            Drive::Aio => &["--mode", "aio", "--iodepth", "4"],
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
    pub fn name(self) -> &'static str {
        match self {
            Dir::Read => "read",
            Dir::Write => "write",
        }
    }
}

/// Bytes each scenario moves, and the block size: 16 I/Os of 64 KiB, 256
/// pages, small enough for an emulated guest and large enough to be seen.
pub const SCENARIO_BYTES: u64 = 1 << 20;
pub const SCENARIO_BS: u64 = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Scenario {
    pub target: TargetKind,
    pub drive: Drive,
    #[serde(serialize_with = "buffer_name")]
    pub buffer: BufferKind,
    pub dir: Dir,
}

fn buffer_name<S: serde::Serializer>(b: &BufferKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.name())
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.target.name(),
            self.drive.name(),
            self.buffer.name(),
            self.dir.name()
        )
    }
}

/// The scenarios of `--quick`: every engine mode and buffer kind at least
/// once, on the raw block device, ext4 and FUSE.
pub const QUICK: &[&str] = &[
    "block/psync/anon/read",
    "block/psync/anon/write",
    "block/pvsync-unaligned/anon/read",
    "block/io_uring/thp/read",
    "block/io_uring-fixed/anon/write",
    "block/aio/fork-shared/write",
    "block/psync/file-shared/read",
    "block/aio/hugetlb/read",
    "ext4/psync/anon/write",
    "ext4/aio/anon/read",
    "fuse/psync/anon/read",
    "fuse/psync/anon/write",
];

const BUFFERS: [BufferKind; 4] = [
    BufferKind::Thp,
    BufferKind::Hugetlb,
    BufferKind::FileShared,
    BufferKind::ForkShared,
];

/// The full matrix: every target × every mode × reads and writes on
/// anonymous memory, then every other buffer kind × every mode × reads and
/// writes on the raw block device (the buffer is the process's side: the
/// target does not change how it is pinned).
pub fn matrix() -> Vec<Scenario> {
    let mut v = Vec::new();
    for target in TargetKind::ALL {
        for drive in Drive::ALL {
            for dir in [Dir::Read, Dir::Write] {
                v.push(Scenario {
                    target,
                    drive,
                    buffer: BufferKind::Anon,
                    dir,
                });
            }
        }
        if target == TargetKind::Block {
            for buffer in BUFFERS {
                for drive in Drive::ALL {
                    for dir in [Dir::Read, Dir::Write] {
                        v.push(Scenario {
                            target,
                            drive,
                            buffer,
                            dir,
                        });
                    }
                }
            }
        }
    }
    v
}

/// Bad `--scenarios` value: the message names the flag.
#[derive(Debug, PartialEq, Eq)]
pub struct SelectError(pub String);

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectError {}

/// The scenarios to run: `--quick` keeps [`QUICK`]; `pattern` is a
/// comma-separated list of globs over the names (`block/*`, `*/aio/*`,
/// `ext4/psync/anon/read`), any of which may match.
pub fn select(quick: bool, pattern: Option<&str>) -> Result<Vec<Scenario>, SelectError> {
    let mut all = matrix();
    if quick {
        all.retain(|s| QUICK.contains(&s.to_string().as_str()));
    }
    let Some(pattern) = pattern else {
        return Ok(all);
    };
    let globs = pattern
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            glob::Pattern::new(p)
                .map_err(|e| SelectError(format!("--scenarios: `{p}` is not a valid pattern: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if globs.is_empty() {
        return Err(SelectError("--scenarios: the pattern is empty".into()));
    }
    all.retain(|s| {
        let name = s.to_string();
        globs.iter().any(|g| g.matches(&name))
    });
    if all.is_empty() {
        return Err(SelectError(format!(
            "--scenarios: `{pattern}` matches no scenario{} (see `pintrace check --list`)",
            if quick { " of --quick" } else { "" }
        )));
    }
    Ok(all)
}

impl Scenario {
    /// The engine's command line (after `pintrace engine`). `base` is the
    /// block device or the directory to create the file in; `scratch` holds
    /// the file behind `file-shared` buffers.
    pub fn engine_args(&self, base: &Path, is_block: bool, scratch: &Path) -> Vec<String> {
        let file = if is_block {
            base.to_path_buf()
        } else {
            base.join(format!(
                "{}-{}-{}.dat",
                self.drive.name(),
                self.buffer.name(),
                self.dir.name()
            ))
        };
        let mut a: Vec<String> = vec![
            "--json".into(),
            "--filename".into(),
            file.display().to_string(),
            "--rw".into(),
            self.dir.name().into(),
            "--bs".into(),
            SCENARIO_BS.to_string(),
            "--size".into(),
            SCENARIO_BYTES.to_string(),
            "--buffer".into(),
            self.buffer.name().into(),
            "--scratch-dir".into(),
            scratch.display().to_string(),
        ];
        a.extend(self.drive.engine_args().iter().map(|s| s.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_quick_set_exists() {
        let all = matrix();
        let mut names: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate scenario names");
        assert_eq!(n, 6 * 5 * 2 + 4 * 5 * 2);
        for q in QUICK {
            assert!(names.iter().any(|x| x == q), "{q} is not in the matrix");
        }
        assert_eq!(select(true, None).unwrap().len(), QUICK.len());
    }

    #[test]
    fn patterns_select_and_name_the_flag_when_wrong() {
        let s = select(false, Some("block/*/thp/*")).unwrap();
        assert_eq!(s.len(), 10);
        assert!(s.iter().all(|x| x.buffer == BufferKind::Thp));
        let s = select(false, Some("ext4/psync/anon/read, xfs/aio/*")).unwrap();
        let names: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            names,
            [
                "ext4/psync/anon/read",
                "xfs/aio/anon/read",
                "xfs/aio/anon/write"
            ]
        );
        let s = select(true, Some("fuse/*")).unwrap();
        assert_eq!(s.len(), 2);
        let e = select(false, Some("zfs/*")).unwrap_err();
        assert!(e.0.contains("--scenarios") && e.0.contains("zfs/*"), "{e}");
        let e = select(true, Some("xfs/*")).unwrap_err();
        assert!(e.0.contains("of --quick"), "{e}");
        let e = select(false, Some("[")).unwrap_err();
        assert!(e.0.contains("not a valid pattern"), "{e}");
    }

    #[test]
    fn engine_command_lines() {
        let s = Scenario {
            target: TargetKind::Block,
            drive: Drive::IoUringFixed,
            buffer: BufferKind::Thp,
            dir: Dir::Write,
        };
        let a = s.engine_args(Path::new("/dev/loop0"), true, Path::new("/tmp/w"));
        let line = a.join(" ");
        assert!(line.contains("--filename /dev/loop0 --rw write"), "{line}");
        assert!(line.contains("--fixed-buffers") && line.contains("--allow-overwrite"));
        assert!(!line.contains("--create"));
        let s = Scenario {
            target: TargetKind::Ext4,
            drive: Drive::PvsyncUnaligned,
            buffer: BufferKind::Anon,
            dir: Dir::Read,
        };
        let line = s
            .engine_args(Path::new("/mnt/ext4"), false, Path::new("/tmp/w"))
            .join(" ");
        assert!(
            line.contains("--filename /mnt/ext4/pvsync-unaligned-anon-read.dat"),
            "{line}"
        );
        assert!(line.contains("--unaligned-iovecs") && line.contains("--create"));
        assert!(!line.contains("--allow-overwrite"));
    }
}
