//! Helpers of the engine's integration tests (here and in pintrace's tests
//! of `pintrace engine`): temp dirs on a real file system, loop devices,
//! huge pages, a root check.
#![allow(dead_code, unused_macros)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! need_root {
    ($($tool:literal),*) => {
        if !$crate::engine_util::is_root() {
            eprintln!("skipped: needs root (loop devices, mounts, huge pages)");
            return;
        }
        for tool in [$($tool),*] {
            if !$crate::engine_util::have(tool) {
                eprintln!("skipped: needs {tool}");
                return;
            }
        }
    };
}

/// Whether a command is on the PATH (or in /sbin, /usr/sbin).
pub fn have(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/sbin", "/usr/sbin"])
        .any(|d| std::path::Path::new(d).join(tool).exists());
    found
}

/// A fresh directory on a filesystem with real O_DIRECT (not tmpfs), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("PINTRACE_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let p = base.join(format!(
            "pintrace-engine-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A loop device over a file in a temp dir; detached on drop.
pub struct LoopDev {
    pub dev: PathBuf,
    _dir: TempDir,
}

impl LoopDev {
    pub fn new(size_mib: u64, sector: u32) -> Self {
        let dir = TempDir::new("loop");
        let backing = dir.path("backing");
        fs::File::create(&backing)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        let sector = sector.to_string();
        let dev = sh(
            "losetup",
            &[
                "--find",
                "--show",
                "--sector-size",
                &sector,
                backing.to_str().unwrap(),
            ],
        );
        LoopDev {
            dev: PathBuf::from(dev),
            _dir: dir,
        }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Reserves huge pages for the duration of a test (serialised), then restores.
pub struct HugePages {
    before: String,
    _lock: std::sync::MutexGuard<'static, ()>,
}

pub static HUGE_LOCK: Mutex<()> = Mutex::new(());

impl HugePages {
    pub fn reserve(extra: u64) -> Option<Self> {
        let lock = HUGE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let knob = "/proc/sys/vm/nr_hugepages";
        let before = fs::read_to_string(knob).ok()?.trim().to_string();
        let want = before.parse::<u64>().ok()? + extra;
        fs::write(knob, want.to_string()).ok()?;
        Some(HugePages {
            before,
            _lock: lock,
        })
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/vm/nr_hugepages", &self.before);
    }
}
