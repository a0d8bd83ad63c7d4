//! Tests against a real kernel with kprobes and fentry. They are `#[ignore]`d
//! on the host and run inside the QEMU guests (Debian 6.1 and 6.12) by
//! `cargo xtask vm` / `cargo xtask test`, which put this binary in the guest
//! as /bin/pintrace-guest-tests and set `PINTRACE_BIN`.

use pintrace::kernel::flags::parse_version;
use serde_json::Value;
use std::{
    fs::{self, File, OpenOptions},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Output},
};

#[path = "guest/engine.rs"]
mod engine;
#[path = "guest/zoo.rs"]
mod zoo;

#[path = "guest/robust.rs"]
mod robust;

#[path = "guest/legacy.rs"]
mod legacy;

#[path = "guest/families.rs"]
mod families;

#[path = "guest/paths.rs"]
mod paths;

#[path = "guest/planted.rs"]
mod planted;

#[path = "guest/filter.rs"]
mod filter;

#[path = "guest/books.rs"]
mod books;

#[path = "guest/nested.rs"]
mod nested;

const IN_GUEST: &str = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`";

pub(crate) fn bin() -> String {
    if let Ok(b) = std::env::var("PINTRACE_BIN") {
        return b;
    }
    if std::env::var_os("PINTRACE_VM").is_some() {
        return "/bin/pintrace".into();
    }
    env!("CARGO_BIN_EXE_pintrace").to_owned()
}

pub(crate) fn pintrace(args: &[&str]) -> Output {
    let out = Command::new(bin()).args(args).output().unwrap();
    eprintln!(
        "$ pintrace {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn kernel_version() -> (u32, u32) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    parse_version(release.trim()).unwrap()
}

/// A loop device over a file in the guest's tmpfs, detached on drop.
struct LoopDev {
    path: PathBuf,
    _backing: PathBuf,
    dev: File,
}

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

impl LoopDev {
    fn new(bytes: u64) -> LoopDev {
        let backing = PathBuf::from(format!("/tmp/loop-backing-{}", std::process::id()));
        let file = File::create(&backing).unwrap();
        file.set_len(bytes).unwrap();
        let ctl = File::open("/dev/loop-control").expect("the loop module is loaded");
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        assert!(
            n >= 0,
            "no free loop device: {}",
            std::io::Error::last_os_error()
        );
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let backing_fd = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&backing)
            .unwrap();
        // SAFETY: LOOP_SET_FD takes the backing file's descriptor as its argument.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing_fd.as_raw_fd()) };
        assert_eq!(rc, 0, "LOOP_SET_FD: {}", std::io::Error::last_os_error());
        LoopDev {
            path,
            _backing: backing,
            dev,
        }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(self.dev.as_raw_fd(), LOOP_CLR_FD) };
        let _ = fs::remove_file(&self._backing);
    }
}

fn summary_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "pintrace run failed: {:?}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"type\":\"summary\""))
        .expect("a summary line");
    serde_json::from_str(line).unwrap()
}

fn pages(process: &Value, kind: &str) -> u64 {
    process["by_kind"][kind]["pages"].as_u64().unwrap_or(0)
}

/// One 8 MiB O_DIRECT read from a loop device is 2048 page references taken
/// by the reader: FOLL_PIN from 6.5 on (iov_iter_extract_pages), FOLL_GET
/// before (iov_iter_get_pages). Checked with each attach method.
fn dio_read_is_counted_by_kind(attach: &str) {
    let dev = LoopDev::new(16 << 20);
    let devpath = dev.path.to_str().unwrap();
    // Exactly one 8 MiB O_DIRECT read (8 x 1 MiB preads by busybox dd), so the
    // count is exact; the engine's own runs add its O_DIRECT probe read.
    let input = format!("if={devpath}");
    // The bios are tied to their pins on the full event stream.
    let out = pintrace(&[
        "run",
        "--json",
        "--events",
        "--attach",
        attach,
        "--",
        "dd",
        &input,
        "of=/dev/null",
        "bs=1M",
        "count=8",
        "iflag=direct",
    ]);
    let summary = summary_of(&out);
    let pid = summary["workload"]["pid"].as_u64().unwrap();
    let reader = summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tgid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("the reader (pid {pid}) was not seen: {summary}"));
    let converted = kernel_version() >= (6, 5);
    let (taken, other) = if converted {
        ("pin", "get")
    } else {
        ("get", "pin")
    };
    // Its Direct I/O is all at the _fast entry point; exec(2) adds a few
    // FOLL_GET pages at get_user_pages_remote (its arguments).
    let fast = if converted {
        "pin_user_pages_fast"
    } else {
        "get_user_pages_fast"
    };
    assert_eq!(reader["by_site"][fast]["pages"], 2048, "{reader}");
    let exec_pages = reader["by_site"]["get_user_pages_remote"]["pages"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        pages(reader, taken),
        2048 + if converted { 0 } else { exec_pages },
        "{reader}"
    );
    assert_eq!(
        pages(reader, other),
        if converted { exec_pages } else { 0 },
        "{reader}"
    );
    assert_eq!(pages(reader, "longterm_pin"), 0, "{reader}");
    assert_eq!(summary["lossless"], true, "{summary}");
    assert!(
        summary["completions"]["requests"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let plan = summary["plan"].as_str().unwrap();
    let method = if attach == "fentry" {
        "=fexit"
    } else {
        "=kprobe+kretprobe"
    };
    assert!(
        plan.contains(&format!("pin_user_pages_fast{method}")),
        "{plan}"
    );
    // Every pin was released, through gup_put_folio, and nothing was flagged.
    assert_eq!(summary["failures"], 0, "{summary}");
    if converted {
        assert!(
            summary["releases"]["pin_refs"].as_u64().unwrap() >= 2048,
            "{summary}"
        );
    }
    // Each 1 MiB read is bios filled from the reader's memory: every page
    // reference the reader took is released, pins by unpin (6.5 on), FOLL_GET
    // references by the block layer's bio release (seen at
    // __bio_release_pages, as put_page itself is invisible).
    let bios = &summary["bios"];
    assert!(bios["filled"].as_u64().unwrap() >= 8, "{bios}");
    assert_eq!(bios["filled"], bios["completed"], "{bios}");
    assert_eq!(bios["filled"], bios["released"], "{bios}");
    assert_eq!(reader["released"][taken], 2048, "{reader}");
    if !converted {
        assert_eq!(bios["get_refs_released"], 2048, "{bios}");
    }
    // The kernel's own counters agree: the pins were taken and released.
    let delta = &summary["vmstat"]["delta"];
    if converted {
        assert!(delta["acquired"].as_u64().unwrap() >= 2048, "{delta}");
        assert!(delta["released"].as_u64().unwrap() >= 2048, "{delta}");
    }
}

/// Whether `pintrace doctor` finds that fentry/fexit programs load, and
/// what it says of them.
fn fentry_loads() -> (bool, Value) {
    let out = pintrace(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fentry = report["caps"]["fentry"].clone();
    (fentry["state"] == "yes", fentry)
}

/// With fentry/fexit where the probes load (6.1 and 6.12 with BTF); where
/// they do not, a forced `--attach fentry` must fail cleanly, naming the
/// cause. The doctor is asked once: its answer decides the branch.
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn dio_read_is_counted_by_kind_with_fentry() {
    let (loads, fentry) = fentry_loads();
    if kernel_version() >= (6, 1) {
        assert!(
            loads,
            "fentry/fexit probes must load on 6.1 and on; the doctor says {fentry}"
        );
    }
    if loads {
        dio_read_is_counted_by_kind("fentry");
    } else {
        let out = pintrace(&["run", "--attach", "fentry", "--", "true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("fentry/fexit"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn dio_read_is_counted_by_kind_with_kprobes() {
    dio_read_is_counted_by_kind("kprobe");
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn doctor_sees_kprobes_fentry_and_the_symbols() {
    let out = pintrace(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let caps = &report["caps"];
    assert_eq!(caps["kprobes"]["state"], "yes", "{caps}");
    if kernel_version() >= (6, 12) {
        assert_eq!(caps["fentry"]["state"], "yes", "{caps}");
    }
    assert_eq!(caps["btf"], true);
    let present = |name: &str| {
        caps["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["present"] == true)
            .unwrap()
    };
    assert!(present("pin_user_pages_fast") && present("get_user_pages_fast"));
    // Release API differences of docs/kernel.md, checked on the real kernel.
    let v = kernel_version();
    assert_eq!(
        present("unpin_user_folio"),
        v >= (6, 12),
        "unpin_user_folio on {v:?}"
    );
    assert_eq!(present("iov_iter_extract_pages"), v >= (6, 3));
    let sites = report["plan"]["Ok"]["sites"].as_array().unwrap();
    let expect = if caps["fentry"]["state"] == "yes" {
        "trampoline"
    } else {
        "kprobe"
    };
    // Every site is watched by the preferred method, but for symbols this
    // kernel lacks (folio_add_pin before 6.5) and get_user_pages_unlocked
    // where it nests inside the fast calls (before 6.3).
    assert_eq!(
        present("folio_add_pin"),
        v >= (6, 5),
        "folio_add_pin on {v:?}"
    );
    for site in sites {
        let symbol = site["symbol"].as_str().unwrap();
        let reason = site["reason"].as_str().unwrap();
        let off = !present(symbol) || (symbol == "get_user_pages_unlocked" && v < (6, 3));
        if off {
            assert!(site["method"].is_null(), "{site}");
            assert!(
                reason.contains("not in /proc/kallsyms") || reason.contains("count them twice"),
                "{site}"
            );
        } else {
            assert_eq!(site["method"], expect, "{site}");
        }
    }
    assert!(present("gup_put_folio"), "the unpin choke point");
    // The FOLL_* values: the enum in BTF from 6.3, the macros (the version
    // table) before.
    let flags = &caps["flags"];
    if v >= (6, 3) {
        assert_eq!(flags["source"], "BTF", "{flags}");
    } else {
        assert!(
            flags["source"]
                .as_str()
                .unwrap()
                .starts_with("version table"),
            "{flags}"
        );
    }
    assert_eq!(flags["pin"], if v >= (6, 3) { 1 << 19 } else { 0x40000 });
    // The exported GUP calls' arguments come from their BTF prototypes,
    // at the positions of the kernel's sources.
    for (symbol, positions) in [
        ("pin_user_pages_fast", [0, 1, 2, 3]),
        ("get_user_pages_fast", [0, 1, 2, 3]),
        ("pin_user_pages_remote", [1, 2, 3, 4]),
        ("get_user_pages_remote", [1, 2, 3, 4]),
        ("pin_user_pages_unlocked", [0, 1, 3, 2]),
    ] {
        let site = sites.iter().find(|s| s["symbol"] == symbol).unwrap();
        let args = &site["args"];
        assert_eq!(args["source"], "BTF", "{site}");
        let got: Vec<u64> = args["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["position"].as_u64().unwrap())
            .collect();
        assert_eq!(got, positions, "{site}");
    }
    let _ = IN_GUEST;
}

/// `pintrace check --quick` on the raw block device passes with real
/// numbers: every scenario's Direct I/O pages counted exactly, as FOLL_GET
/// before the conversion (6.1) and FOLL_PIN after (6.12), every pin
/// released, the JUnit report written. (ext4 and FUSE need mkfs and modules
/// the suite's guest does not carry: `cargo xtask check-kernel` runs those.)
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn check_quick_passes_on_the_block_device() {
    let junit = format!("/tmp/check-{}.xml", std::process::id());
    let out = pintrace(&[
        "check",
        "--quick",
        "--scenarios",
        "block/*",
        "--json",
        "--junit",
        &junit,
    ]);
    assert_eq!(out.status.code(), Some(0), "check did not pass");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["type"], "check");
    let all = report["scenarios"].as_array().unwrap();
    // The quick set's faults on the block device are judged on their own
    // (guest/families.rs); here the plain ones.
    assert!(all.iter().all(|s| s["status"] == "pass"), "{report}");
    let scenarios: Vec<&Value> = all.iter().filter(|s| s["fault"].is_null()).collect();
    assert_eq!(scenarios.len(), 8, "{report}");
    let converted = kernel_version() >= (6, 5);
    let kind = if converted { "FOLL_PIN" } else { "FOLL_GET" };
    for s in scenarios {
        assert_eq!(s["status"], "pass", "{s}");
        let exp = &s["expected"];
        let obs = &s["observed"];
        // FOLL_GET pages of futex keys (thread exit and join) and of exec(2)
        // arguments are not I/O.
        let futex = if converted {
            0
        } else {
            obs["futex_pages"].as_u64().unwrap() + obs["exec_pages"].as_u64().unwrap()
        };
        let taken = obs["acquired"][if converted { "pin" } else { "get" }]["pages"]
            .as_u64()
            .unwrap_or(0)
            - futex;
        assert_eq!(taken, exp["dio_pages"].as_u64().unwrap(), "{s}");
        assert!(taken > 0, "{s}");
        assert_eq!(s["dio_kind"], kind, "{s}");
        if converted {
            assert_eq!(obs["released"]["pin"].as_u64(), Some(taken), "{s}");
            assert!(obs["vmstat"]["acquired"].as_u64().unwrap() >= taken, "{s}");
        }
        assert_eq!(obs["lost"], 0, "{s}");
    }
    let xml = fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testcase name=\"block/psync/anon/read\""),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");
    let _ = fs::remove_file(&junit);
}
