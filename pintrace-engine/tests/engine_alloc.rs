//! The engine's per-I/O path does not allocate: a run of 16x more I/Os makes
//! no more heap allocations than a short one (counted by a global allocator).

use pintrace_engine::{run, BufferKind, EngineConfig, Mode, RwKind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(path: &PathBuf, mode: Mode, rw: RwKind, verify: bool, blocks: u64) -> u64 {
    let mut c = EngineConfig::new(path);
    c.mode = mode;
    c.rw = rw;
    c.verify = verify;
    c.iodepth = 8;
    c.bs = 4096;
    c.size = Some(blocks * 4096);
    c.create = true;
    c.buffer = BufferKind::Anon;
    let before = ALLOCS.load(Ordering::SeqCst);
    let r = run(&c).expect("run");
    let after = ALLOCS.load(Ordering::SeqCst);
    assert!(r.ok(), "{:?}", r.io_errors);
    assert_eq!(r.total.read.ios + r.total.write.ios, blocks);
    after - before
}

#[test]
fn per_io_path_does_not_allocate() {
    let dir = std::env::temp_dir().join(format!("pintrace-engine-alloc-{}", std::process::id()));
    let dir = if std::fs::create_dir_all(&dir).is_ok() && !on_tmpfs(&dir) {
        dir
    } else {
        let d =
            PathBuf::from("/var/tmp").join(format!("pintrace-engine-alloc-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let path = dir.join("data");
    for mode in [Mode::Psync, Mode::Pvsync, Mode::IoUring, Mode::Aio] {
        for (rw, verify) in [
            (RwKind::RandRead, false),
            (RwKind::RandRw, true),
            (RwKind::Write, true),
        ] {
            // Warm up lazily initialised state (thread locals, the signal set, ...).
            allocations(&path, mode, rw, verify, 64);
            let short = allocations(&path, mode, rw, verify, 256);
            let long = allocations(&path, mode, rw, verify, 4096);
            assert!(
                long <= short + 8,
                "{} {rw:?} verify={verify}: {short} allocations for 256 I/Os, {long} for 4096",
                mode.name()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn on_tmpfs(p: &std::path::Path) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == 0x0102_1994 }
}
