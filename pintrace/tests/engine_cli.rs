//! Integration tests of `pintrace engine` as a command: verify against a
//! planted corruption, the safety refusals, bad arguments, the reports (exit
//! codes and messages). Tests that need root (loop devices, mounts, huge
//! pages) say so and return when not run as root.

#[macro_use]
mod engine_util;

use engine_util::{engine, sh, stderr, LoopDev, TempDir, HUGE_LOCK};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn hugetlb_without_reserved_pages_says_so() {
    need_root!();
    let _lock = HUGE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let free: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("HugePages_Free:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    if free > 0 {
        eprintln!("skipped: huge pages are reserved on this machine");
        return;
    }
    let dir = TempDir::new("nohuge");
    let out = engine(&[
        "--filename",
        dir.path("f").to_str().unwrap(),
        "--rw",
        "write",
        "--size",
        "1m",
        "--buffer",
        "hugetlb",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nr_hugepages"), "{}", stderr(&out));
    assert!(!dir.path("f").exists());
}

/// Write with verify, overwrite part of one block behind the engine's back,
/// read back with verify: exit 1 and the block's offset named.
fn planted_corruption(target: &Path, extra: &[&str]) {
    let t = target.to_str().unwrap();
    let mut args = vec![
        "--filename",
        t,
        "--rw",
        "write",
        "--bs",
        "8k",
        "--size",
        "2m",
        "--verify",
        "--keep",
    ];
    args.extend_from_slice(extra);
    let out = engine(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let victim = 37 * 8192u64;
    let f = fs::OpenOptions::new().write(true).open(target).unwrap();
    f.write_all_at(b"corrupted by the test", victim + 1000)
        .unwrap();
    f.sync_all().unwrap();
    drop(f);
    let out = engine(&[
        "--filename",
        t,
        "--rw",
        "randread",
        "--bs",
        "8k",
        "--size",
        "2m",
        "--verify",
        "--mode",
        "io_uring",
        "--iodepth",
        "4",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("offset {victim}")), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(
        err.matches("verify failed").count(),
        1,
        "only the planted block fails: {err}"
    );
}

#[test]
fn verify_catches_planted_corruption_in_a_file() {
    let dir = TempDir::new("corrupt");
    planted_corruption(&dir.path("data"), &[]);
}

#[test]
fn verify_catches_planted_corruption_on_a_loop_device() {
    need_root!("losetup");
    let lo = LoopDev::new(8, 512);
    planted_corruption(
        &lo.dev,
        &["--allow-overwrite", "--mode", "aio", "--iodepth", "8"],
    );
}

#[test]
fn verify_names_a_misplaced_block() {
    // Copy block 3 over block 5: the checksum holds but the offset does not.
    let dir = TempDir::new("misplaced");
    let p = dir.path("data");
    let ps = p.to_str().unwrap();
    let out = engine(&[
        "--filename",
        ps,
        "--rw",
        "write",
        "--bs",
        "4k",
        "--size",
        "64k",
        "--verify",
        "--keep",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let mut b = vec![0u8; 4096];
    f.read_exact_at(&mut b, 3 * 4096).unwrap();
    f.write_all_at(&b, 5 * 4096).unwrap();
    f.sync_all().unwrap();
    let out = engine(&["--filename", ps, "--rw", "read", "--bs", "4k", "--verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("offset 20480") && err.contains("carries offset 12288"),
        "{err}"
    );
}

#[test]
fn refuses_to_overwrite_an_existing_file() {
    let dir = TempDir::new("exists");
    let p = dir.path("precious");
    fs::write(&p, vec![0xabu8; 1 << 20]).unwrap();
    for rw in ["write", "randrw", "randwrite"] {
        let out = engine(&[
            "--filename",
            p.to_str().unwrap(),
            "--rw",
            rw,
            "--size",
            "1m",
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("--allow-overwrite"),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        fs::read(&p).unwrap().iter().all(|&b| b == 0xab),
        "file untouched"
    );
    // Reading it is fine, and it stays.
    let out = engine(&["--filename", p.to_str().unwrap(), "--rw", "randread"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // With the flag it is overwritten, and not removed (the engine did not create it).
    let out = engine(&[
        "--filename",
        p.to_str().unwrap(),
        "--rw",
        "write",
        "--allow-overwrite",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(p.exists());
    assert!(fs::read(&p).unwrap().iter().any(|&b| b != 0xab));
}

#[test]
fn refuses_a_mounted_block_device() {
    need_root!("losetup", "mkfs.ext4", "mount", "e2fsck");
    let lo = LoopDev::new(32, 512);
    sh("mkfs.ext4", &["-q", "-F", lo.dev.to_str().unwrap()]);
    let mnt = TempDir::new("mnt");
    sh(
        "mount",
        &[lo.dev.to_str().unwrap(), mnt.0.to_str().unwrap()],
    );
    let out = engine(&[
        "--filename",
        lo.dev.to_str().unwrap(),
        "--rw",
        "write",
        "--size",
        "1m",
        "--allow-overwrite",
    ]);
    let _ = Command::new("umount").arg(&mnt.0).status();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mounted on") && err.contains(mnt.0.to_str().unwrap()),
        "{err}"
    );
    // The filesystem survived: it still mounts and fsck finds it clean.
    sh("e2fsck", &["-n", "-f", lo.dev.to_str().unwrap()]);
}

#[test]
fn refuses_a_swap_device() {
    need_root!("losetup", "mkswap", "swapon", "swapoff");
    let lo = LoopDev::new(16, 512);
    let dev = lo.dev.to_str().unwrap();
    sh("mkswap", &[dev]);
    if !Command::new("swapon").arg(dev).status().unwrap().success() {
        eprintln!("skipped: swapon refused here");
        return;
    }
    let out = engine(&[
        "--filename",
        dev,
        "--rw",
        "write",
        "--size",
        "1m",
        "--allow-overwrite",
    ]);
    let _ = Command::new("swapoff").arg(dev).status();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("swap"), "{}", stderr(&out));
}

#[test]
fn refuses_a_device_whose_partition_is_mounted() {
    need_root!("losetup", "sfdisk", "mkfs.ext4", "mount");
    let dir = TempDir::new("parts");
    let backing = dir.path("disk");
    fs::File::create(&backing)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mut child = Command::new("sfdisk")
        .args(["-q", backing.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n,16M\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let lo2 = sh(
        "losetup",
        &["--find", "--show", "--partscan", backing.to_str().unwrap()],
    );
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _d = Detach(lo2.clone());
    let part = format!("{lo2}p1");
    for _ in 0..50 {
        if Path::new(&part).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    sh("mkfs.ext4", &["-q", "-F", &part]);
    let mnt = TempDir::new("pmnt");
    sh("mount", &[&part, mnt.0.to_str().unwrap()]);
    let out = engine(&[
        "--filename",
        &lo2,
        "--rw",
        "write",
        "--size",
        "1m",
        "--allow-overwrite",
    ]);
    let _ = Command::new("umount").arg(&mnt.0).status();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("partition"), "{err}");
}

#[test]
fn refuses_tmpfs_for_o_direct() {
    let shm_is_tmpfs = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" /dev/shm ") && l.contains(" - tmpfs "));
    let mut mounted = None;
    let dir = if shm_is_tmpfs {
        PathBuf::from("/dev/shm")
    } else {
        need_root!("mount");
        let d = TempDir::new("tmpfs");
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=8m",
                "tmpfs",
                d.0.to_str().unwrap(),
            ],
        );
        let p = d.0.clone();
        mounted = Some(d);
        p
    };
    let target = dir.join(format!("pintrace-engine-test-{}", std::process::id()));
    let out = engine(&[
        "--filename",
        target.to_str().unwrap(),
        "--rw",
        "write",
        "--size",
        "1m",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tmpfs") && err.contains("O_DIRECT"), "{err}");
    assert!(!target.exists(), "nothing left behind");
    // Buffered I/O there is fine.
    let out = engine(&[
        "--filename",
        target.to_str().unwrap(),
        "--rw",
        "write",
        "--size",
        "1m",
        "--buffered",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!target.exists(), "created file removed");
    if let Some(d) = mounted {
        let _ = Command::new("umount").arg(&d.0).status();
    }
}

#[test]
fn overlay_is_judged_by_its_layers() {
    need_root!("mount", "umount");
    // Upper layer on tmpfs: refused, naming overlay and tmpfs.
    let shm = TempDir::new("ovl-tmpfs");
    sh(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=8m",
            "tmpfs",
            shm.0.to_str().unwrap(),
        ],
    );
    struct Unmount(Vec<PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for p in self.0.iter().rev() {
                let _ = Command::new("umount").arg(p).status();
            }
        }
    }
    let mut mounts = Unmount(vec![shm.0.clone()]);
    let disk = TempDir::new("ovl-disk");
    for (base, name) in [(&shm.0, "on-tmpfs"), (&disk.0, "on-disk")] {
        for d in ["l", "u", "w", "m"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.join("l").display(),
            base.join("u").display(),
            base.join("w").display()
        );
        let m = base.join("m");
        if !Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts, m.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
        {
            eprintln!("skipped: overlay mounts refused here");
            return;
        }
        mounts.0.push(m.clone());
        let out = engine(&[
            "--filename",
            m.join("x").to_str().unwrap(),
            "--rw",
            "write",
            "--size",
            "1m",
        ]);
        if name == "on-tmpfs" {
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains("overlay") && err.contains("tmpfs"), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        }
        assert!(!m.join("x").exists());
    }
    drop(mounts);
}

#[test]
fn reading_a_missing_file_is_a_clear_error() {
    let dir = TempDir::new("missing");
    let p = dir.path("nope");
    let out = engine(&["--filename", p.to_str().unwrap(), "--rw", "randread"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    // --create lays it out first, then removes it.
    let out = engine(&[
        "--filename",
        p.to_str().unwrap(),
        "--rw",
        "randread",
        "--create",
        "--size",
        "1m",
        "--verify",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!p.exists());
}

#[test]
fn bad_arguments_name_the_flag() {
    let dir = TempDir::new("args");
    let f = dir.path("f");
    let f = f.to_str().unwrap();
    for (args, flag) in [
        (vec!["--bs", "0"], "--bs"),
        (vec!["--bs", "1000"], "--bs"),
        (vec!["--bs", "12q"], "--bs"),
        (vec!["--size", "5000"], "--size"),
        (vec!["--mode", "mmap"], "--mode"),
        (vec!["--rw", "sideways"], "--rw"),
        (vec!["--iodepth", "0"], "--iodepth"),
        (vec!["--rwmixread", "101"], "--rwmixread"),
        (vec!["--buffer", "gpu"], "--buffer"),
        (vec!["--runtime", "soon"], "--runtime"),
    ] {
        let mut a = vec!["--filename", f, "--rw", "write", "--size", "1m"];
        if args[0] == "--rw" || args[0] == "--size" {
            a.truncate(2);
            if args[0] == "--size" {
                a.extend(["--rw", "write"]);
            }
        }
        a.extend(args.iter());
        let out = engine(&a);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{args:?}: {}", stderr(&out));
    }
    assert!(!Path::new(f).exists());
}

#[test]
fn block_size_below_the_logical_block_size_is_refused() {
    need_root!("losetup");
    let lo = LoopDev::new(8, 4096);
    let out = engine(&[
        "--filename",
        lo.dev.to_str().unwrap(),
        "--rw",
        "read",
        "--bs",
        "512",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--bs") && err.contains("4096"), "{err}");
    let out = engine(&[
        "--filename",
        lo.dev.to_str().unwrap(),
        "--rw",
        "read",
        "--bs",
        "4k",
        "--mode",
        "pvsync",
        "--size",
        "1m",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // iovecs of 512 bytes on a 4096-byte device: newer kernels take them,
    // older ones refuse with EINVAL, which the engine must explain.
    let out = engine(&[
        "--filename",
        lo.dev.to_str().unwrap(),
        "--rw",
        "randread",
        "--bs",
        "16k",
        "--mode",
        "pvsync",
        "--unaligned-iovecs",
        "--size",
        "1m",
    ]);
    match out.status.code() {
        Some(0) => {}
        Some(1) => assert!(
            stderr(&out).contains("--unaligned-iovecs"),
            "{}",
            stderr(&out)
        ),
        c => panic!("exit {c:?}: {}", stderr(&out)),
    }
}
