//! Integration tests of the O_DIRECT engine through the library on the
//! running kernel: every mode and buffer kind on a file and on a loop device.
//! Tests that need root (loop devices, huge pages) say so and return when not
//! run as root.

#[macro_use]
mod engine_util;

use engine_util::{HugePages, LoopDev, TempDir};
use pintrace_engine::{run, BufferKind, EngineConfig, Mode, Report, RwKind};
use std::fs;
use std::path::{Path, PathBuf};

fn modes() -> Vec<(Mode, bool, u32)> {
    vec![
        (Mode::Psync, false, 1),
        (Mode::Pvsync, false, 1),
        (Mode::IoUring, false, 8),
        (Mode::IoUring, true, 8),
        (Mode::Aio, false, 8),
    ]
}

fn cfg(path: &Path, mode: (Mode, bool, u32), buffer: BufferKind, rw: RwKind) -> EngineConfig {
    let mut c = EngineConfig::new(path);
    c.mode = mode.0;
    c.fixed_buffers = mode.1;
    c.iodepth = mode.2;
    c.buffer = buffer;
    c.rw = rw;
    c.bs = 16 << 10;
    c.verify = true;
    c.fork_interval = std::time::Duration::from_millis(5);
    c
}

fn assert_clean(r: &Report, what: &str) {
    assert!(
        r.ok(),
        "{what}: {:?} {:?}",
        r.io_errors,
        r.verify.failed_blocks
    );
}

/// Random writes with verify on a new file, then random reads checking every block.
fn file_matrix(buffer: BufferKind) {
    let dir = TempDir::new(buffer.name());
    for mode in modes() {
        let what = format!(
            "{} fixed={} buffer={}",
            mode.0.name(),
            mode.1,
            buffer.name()
        );
        let path = dir.path("data");
        let mut w = cfg(&path, mode, buffer, RwKind::RandWrite);
        w.size = Some(4 << 20);
        w.keep = true;
        if buffer == BufferKind::FileShared && mode.1 {
            // Long-term pins of ext4 page-cache pages are refused by the kernel...
            let err = run(&w).expect_err("fixed buffers on a file-backed mapping of ext4");
            assert!(format!("{err:#}").contains("long-term pins"), "{err:#}");
            assert!(!path.exists(), "the refused run removed its file");
            // ...and allowed on shmem.
            if fs::metadata("/dev/shm").is_ok() {
                w.scratch_dir = Some(PathBuf::from("/dev/shm"));
            } else {
                continue;
            }
        }
        let r = run(&w).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_clean(&r, &what);
        assert_eq!(r.total.write.ios, 256, "{what}");
        assert_eq!(r.verify.blocks_checked, 256, "{what}: verify phase");
        if buffer == BufferKind::ForkShared {
            assert!(r.jobs[0].buffer.forks >= 1, "{what}: no fork");
            assert_eq!(r.jobs[0].buffer.fork_failures, 0);
        }
        let mut rd = cfg(&path, mode, buffer, RwKind::RandRead);
        rd.scratch_dir = w.scratch_dir.clone();
        let r = run(&rd).unwrap_or_else(|e| panic!("{what} read: {e:#}"));
        assert_clean(&r, &what);
        assert_eq!(r.total.read.ios, 256, "{what}");
        assert_eq!(r.verify.blocks_checked, 256, "{what}");
        fs::remove_file(&path).unwrap();
    }
}

#[test]
fn file_anon_every_mode() {
    file_matrix(BufferKind::Anon);
}

#[test]
fn file_thp_every_mode() {
    file_matrix(BufferKind::Thp);
}

#[test]
fn file_file_shared_every_mode() {
    file_matrix(BufferKind::FileShared);
}

#[test]
fn file_fork_shared_every_mode() {
    file_matrix(BufferKind::ForkShared);
}

#[test]
fn file_hugetlb_every_mode() {
    need_root!();
    let _huge = HugePages::reserve(8).expect("reserving huge pages");
    file_matrix(BufferKind::Hugetlb);
}

#[test]
fn loop_device_every_mode_and_buffer() {
    need_root!("losetup");
    let lo = LoopDev::new(16, 512);
    let scratch = TempDir::new("loopscratch");
    let _huge = HugePages::reserve(8);
    for buffer in [
        BufferKind::Anon,
        BufferKind::Thp,
        BufferKind::Hugetlb,
        BufferKind::FileShared,
        BufferKind::ForkShared,
    ] {
        for mode in modes() {
            let what = format!(
                "{} fixed={} buffer={} on {}",
                mode.0.name(),
                mode.1,
                buffer.name(),
                lo.dev.display()
            );
            let mut w = cfg(&lo.dev, mode, buffer, RwKind::RandWrite);
            w.allow_overwrite = true;
            w.size = Some(4 << 20);
            w.scratch_dir = Some(if buffer == BufferKind::FileShared && mode.1 {
                PathBuf::from("/dev/shm")
            } else {
                scratch.0.clone()
            });
            let r = run(&w).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_clean(&r, &what);
            assert_eq!(r.target.kind, "block_device");
            assert_eq!(r.total.write.ios, 256, "{what}");
            let mut rd = cfg(&lo.dev, mode, buffer, RwKind::RandRead);
            rd.size = Some(4 << 20);
            rd.scratch_dir = w.scratch_dir.clone();
            let r = run(&rd).unwrap_or_else(|e| panic!("{what} read: {e:#}"));
            assert_clean(&r, &what);
            assert_eq!(r.verify.blocks_checked, 256, "{what}");
        }
    }
}

#[test]
fn buffered_mode_and_shared_region() {
    let dir = TempDir::new("buffered");
    let p = dir.path("data");
    let mut c = EngineConfig::new(&p);
    c.direct = false;
    c.rw = RwKind::RandWrite;
    c.size = Some(1 << 20);
    c.numjobs = 3;
    c.shared_region = true;
    let r = run(&c).unwrap();
    assert_clean(&r, "buffered shared");
    assert_eq!(r.jobs.len(), 3);
    assert!(r
        .jobs
        .iter()
        .all(|j| j.region_offset == 0 && j.write.ios == 256));
    assert!(!p.exists());
}

#[test]
fn batched_submission_with_verify() {
    let dir = TempDir::new("batch");
    for mode in [Mode::IoUring, Mode::Aio] {
        let path = dir.path("data");
        let mut c = EngineConfig::new(&path);
        c.mode = mode;
        c.rw = RwKind::RandRw;
        c.iodepth = 16;
        c.iodepth_batch = 5;
        c.verify = true;
        c.create = true;
        c.size = Some(2 << 20);
        c.runtime = Some(std::time::Duration::from_millis(2000));
        let r = run(&c).unwrap_or_else(|e| panic!("{}: {e:#}", mode.name()));
        assert_clean(&r, mode.name());
        assert_eq!(r.settings.iodepth_batch, Some(5));
        assert!(r.jobs[0].passes > 1, "{}: several passes", mode.name());
        assert!(r.verify.blocks_checked > 512);
    }
}
