//! `pintrace check`: a pass/fail gate for a kernel. A matrix of scenarios,
//! each the engine driving one Direct I/O path (a target, an I/O mode, a
//! buffer kind, reads or writes, maybe a fault) in a child process while one
//! tracing session watches; each is judged on what that child took and
//! released.
//!
//! A scenario is described in [`scenario`]; the scenarios are listed, by
//! family, in [`families`] (the one place to add one); their selection
//! ([`select`]) and the judging ([`judge`]) are pure and tested on the host;
//! [`targets`] and [`fuse`] set up what the I/O runs on.

pub mod devices;
pub mod families;
pub mod fuse;
pub mod judge;
pub mod nfs;
pub mod results;
pub mod scenario;
pub mod targets;

pub use scenario::{Dir, Drive, Fault, Regression, Scenario, TargetKind, SCENARIO_BYTES};

use std::fmt;

/// The scenarios of `--quick`: every engine mode and buffer kind at least
/// once, on the raw block device, ext4 and FUSE, and one of each newer
/// family that needs no device given.
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
    "scsi-debug/sg/anon/read",
    "scsi-debug/sg-copy/anon/write",
    "nvme/uring-cmd/anon/read",
    "vfat/psync/anon/read",
    "nfs/psync/anon/write",
    "block/psync/anon/read/hole",
    "block/psync/anon/write/dm-error",
    "regress/subpage-merge-block",
];

/// Every scenario, family by family.
pub fn matrix() -> Vec<Scenario> {
    families::FAMILIES
        .iter()
        .flat_map(|f| {
            (f.scenarios)().into_iter().map(move |mut s| {
                s.family = f.name;
                s
            })
        })
        .collect()
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
/// `ext4/psync/anon/read`) or the family names (`sg`, `fault`), any of
/// which may match.
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
        globs
            .iter()
            .any(|g| g.matches(&name) || g.matches(s.family))
    });
    if all.is_empty() {
        return Err(SelectError(format!(
            "--scenarios: `{pattern}` matches no scenario{} (see `pintrace check --list`)",
            if quick { " of --quick" } else { "" }
        )));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pintrace_engine::BufferKind;
    use std::path::Path;

    #[test]
    fn names_are_unique_and_the_quick_set_exists() {
        let all = matrix();
        let mut names: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate scenario names");
        for q in QUICK {
            assert!(names.iter().any(|x| x == q), "{q} is not in the matrix");
        }
        assert_eq!(select(true, None).unwrap().len(), QUICK.len());
        // Every family has scenarios, and every scenario knows its family.
        for f in families::FAMILIES {
            assert!(
                all.iter().any(|s| s.family == f.name),
                "{} is empty",
                f.name
            );
        }
        // The families of the first matrix keep their size.
        let fs = all.iter().filter(|s| s.family == "fs").count();
        let buffers = all.iter().filter(|s| s.family == "buffers").count();
        assert_eq!((fs, buffers), (5 * 5 * 2, 4 * 5 * 2));
    }

    #[test]
    fn every_regression_names_a_commit_and_runs_once() {
        let all = matrix();
        for r in &families::REGRESSIONS {
            let hits: Vec<_> = all
                .iter()
                .filter(|s| s.regression.is_some_and(|x| x.name == r.name))
                .collect();
            assert_eq!(hits.len(), 1, "{}", r.name);
            assert_eq!(hits[0].to_string(), format!("regress/{}", r.name));
            let has_commit = r
                .bug
                .split(|c: char| !c.is_ascii_hexdigit())
                .any(|w| w.len() >= 12 && w.chars().any(|c| c.is_ascii_digit()));
            assert!(has_commit, "{}: no commit in {:?}", r.name, r.bug);
        }
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
        // A family by its name.
        let s = select(false, Some("sg")).unwrap();
        assert!(s.iter().all(|x| x.family == "sg") && s.len() == 12);
        let s = select(false, Some("*/dm-*")).unwrap();
        assert!(s.iter().all(|x| x.fault.is_some_and(|f| f.device_mapper())));
        let e = select(false, Some("zfs/*")).unwrap_err();
        assert!(e.0.contains("--scenarios") && e.0.contains("zfs/*"), "{e}");
        let e = select(true, Some("xfs/*")).unwrap_err();
        assert!(e.0.contains("of --quick"), "{e}");
        let e = select(false, Some("[")).unwrap_err();
        assert!(e.0.contains("not a valid pattern"), "{e}");
    }

    #[test]
    fn engine_command_lines() {
        let s = Scenario::new(
            TargetKind::Block,
            Drive::IoUringFixed,
            BufferKind::Thp,
            Dir::Write,
        );
        let a = s.engine_args(Path::new("/dev/loop0"), true, Path::new("/tmp/w"));
        let line = a.join(" ");
        assert!(line.contains("--filename /dev/loop0 --rw write"), "{line}");
        assert!(line.contains("--fixed-buffers") && line.contains("--allow-overwrite"));
        assert!(!line.contains("--create"));
        let s = Scenario::new(
            TargetKind::Ext4,
            Drive::PvsyncUnaligned,
            BufferKind::Anon,
            Dir::Read,
        );
        let line = s
            .engine_args(Path::new("/mnt/ext4"), false, Path::new("/tmp/w"))
            .join(" ");
        assert!(
            line.contains("--filename /mnt/ext4/ext4-pvsync-unaligned-anon-read.dat"),
            "{line}"
        );
        assert!(line.contains("--unaligned-iovecs") && line.contains("--create"));
        assert!(!line.contains("--allow-overwrite"));
        // Faults and regressions add their flags; sub-page drives use one page.
        let s = Scenario::new(TargetKind::Block, Drive::Psync, BufferKind::Anon, Dir::Read)
            .with_fault(Fault::Hole);
        assert_eq!(s.to_string(), "block/psync/anon/read/hole");
        let line = s
            .engine_args(Path::new("/dev/loop0"), true, Path::new("/tmp/w"))
            .join(" ");
        assert!(line.contains("--fault hole"), "{line}");
        let s = Scenario::new(TargetKind::Block, Drive::Psync, BufferKind::Anon, Dir::Read)
            .with_fault(Fault::DmError);
        let line = s
            .engine_args(Path::new("/dev/dm-0"), true, Path::new("/tmp/w"))
            .join(" ");
        assert!(line.contains("--allow-errors"), "{line}");
        let r = &families::REGRESSIONS[0];
        let s = Scenario::new(TargetKind::Block, Drive::Psync, BufferKind::Thp, Dir::Read)
            .regression(r);
        let line = s
            .engine_args(Path::new("/dev/loop0"), true, Path::new("/tmp/w"))
            .join(" ");
        assert!(line.contains("--buffer-offset 512"), "{line}");
        let s = Scenario::new(
            TargetKind::ScsiDebug,
            Drive::SgSubpage,
            BufferKind::Anon,
            Dir::Read,
        );
        let line = s
            .engine_args(Path::new("/dev/sda"), true, Path::new("/tmp/w"))
            .join(" ");
        assert!(
            line.contains("--bs 4096") && line.contains("--subpage-iovecs"),
            "{line}"
        );
    }
}
