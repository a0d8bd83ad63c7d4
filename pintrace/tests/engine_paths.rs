//! Integration tests of the engine's kernel-path options as a command:
//! sub-page iovecs, buffer offsets, faults, and the refusals of the SG_IO
//! and NVMe passthrough modes on targets that are not SCSI or NVMe devices.
//! The faults run against the host's real kernel on a file.

mod engine_util;

use engine_util::{engine, stderr, TempDir};
use serde_json::Value;

fn refused(args: &[&str], words: &[&str]) {
    let out = engine(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for w in words {
        assert!(err.contains(w), "{args:?}: `{w}` not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_path_options_name_the_flag() {
    let f = ["--filename", "/var/tmp/pintrace-no-such-file"];
    let with = |extra: &[&'static str]| {
        let mut v: Vec<&str> = f.to_vec();
        v.extend_from_slice(extra);
        v
    };
    refused(
        &with(&["--subpage-iovecs"]),
        &["--subpage-iovecs", "pvsync"],
    );
    refused(
        &with(&["--mode", "pvsync", "--subpage-iovecs", "--iovecs", "3"]),
        &["--subpage-iovecs", "divisible", "bs/N"],
    );
    refused(
        &with(&["--mode", "pvsync", "--subpage-iovecs", "--iovecs", "16"]),
        &["--subpage-iovecs", "multiple of 512"],
    );
    refused(
        &with(&[
            "--mode",
            "sg",
            "--subpage-iovecs",
            "--iovecs",
            "4",
            "--buffer-offset",
            "512",
        ]),
        &[
            "--subpage-iovecs",
            "cross a page boundary",
            "--buffer-offset",
        ],
    );
    refused(
        &with(&["--buffer-offset", "4096"]),
        &["--buffer-offset", "page size"],
    );
    refused(&with(&["--buffer-offset", "x"]), &["--buffer-offset"]);
    refused(
        &with(&["--mode", "sg", "--buffered"]),
        &["--buffered", "sg"],
    );
    refused(
        &with(&["--fault", "hole", "--bs", "4k"]),
        &["--bs", "2 pages"],
    );
    refused(
        &with(&["--fault", "hole", "--verify", "--bs", "16k"]),
        &["--fault", "--verify"],
    );
    refused(
        &with(&["--fault", "register-last"]),
        &["--fault", "--fixed-buffers"],
    );
    refused(
        &with(&[
            "--fault",
            "register-last",
            "--mode",
            "io_uring",
            "--fixed-buffers",
        ]),
        &["--iodepth", "2 buffers"],
    );
    refused(
        &with(&["--mode", "sg", "--fixed-buffers"]),
        &["--fixed-buffers", "uring-cmd"],
    );
    refused(
        &with(&["--mode", "sg", "--cmd-timeout", "0"]),
        &["--cmd-timeout"],
    );
}

#[test]
fn passthrough_modes_refuse_other_targets() {
    let dir = TempDir::new("passthrough");
    let p = dir.path("plain");
    std::fs::write(&p, vec![0u8; 65536]).unwrap();
    let f = p.to_str().unwrap();
    refused(
        &["-f", f, "--mode", "sg"],
        &["--mode sg", f, "neither a SCSI disk"],
    );
    refused(
        &["-f", f, "--mode", "uring-cmd"],
        &["--mode uring-cmd", "not an NVMe generic character device"],
    );
    refused(
        &["-f", "/dev/ng-pintrace-absent", "--mode", "uring-cmd"],
        &["--mode uring-cmd", "/dev/ng-pintrace-absent"],
    );
    refused(
        &["-f", f, "--fault", "past-end"],
        &["--fault past-end", "is a file"],
    );
    // An offset O_DIRECT refuses is refused before any I/O, naming the flag.
    refused(
        &["-f", f, "--buffer-offset", "1"],
        &["--buffer-offset", "memory alignment"],
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        vec![0u8; 65536],
        "file untouched"
    );
}

fn json(args: &[&str]) -> Value {
    let out = engine(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn subpage_iovecs_and_offsets_are_in_the_report() {
    let dir = TempDir::new("subpage");
    let p = dir.path("data");
    let f = p.to_str().unwrap();
    let v = json(&[
        "-f",
        f,
        "--create",
        "--size",
        "64k",
        "--bs",
        "4k",
        "--mode",
        "pvsync",
        "--iovecs",
        "8",
        "--subpage-iovecs",
        "--json",
    ]);
    let s = &v["settings"];
    assert_eq!(s["subpage_iovecs"], true, "{s}");
    assert_eq!(s["iovecs"], 8);
    let segs = s["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 8);
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(seg[0], i as u64 * 512, "{seg}");
        assert_eq!(seg[1], 512, "{seg}");
    }
    assert_eq!(v["pages_per_io"], 8, "one page, pinned once per segment");
    assert_eq!(v["total"]["read"]["ios"], 16);
    assert!(v["sg"].is_null() && v["fault"].is_null());

    // An aligned offset: a 4 KiB buffer 512 bytes into a page spans two.
    let align = v["target"]["dio_mem_align"].as_u64().unwrap();
    let off = 512u64.max(align).to_string();
    let v = json(&[
        "-f",
        f,
        "--create",
        "--size",
        "64k",
        "--bs",
        "4k",
        "--buffer-offset",
        &off,
        "--json",
    ]);
    assert_eq!(v["settings"]["buffer_offset"], off.parse::<u64>().unwrap());
    assert_eq!(v["settings"]["segments"][0][0], off.parse::<u64>().unwrap());
    assert_eq!(v["pages_per_io"], 2);
    assert_eq!(v["total"]["read"]["ios"], 16);
}

/// A PROT_NONE page inside every buffer: the kernel pins the page before it,
/// then fails; the I/O ends short or with EFAULT, and the engine reports it
/// and exits 0 because every I/O hit the fault.
#[test]
fn hole_fault_is_hit_and_reported() {
    let dir = TempDir::new("hole");
    let p = dir.path("data");
    let f = p.to_str().unwrap();
    for mode in ["psync", "io_uring", "aio"] {
        let v = json(&[
            "-f", f, "--create", "--size", "128k", "--bs", "16k", "--mode", mode, "--fault",
            "hole", "--json",
        ]);
        let fault = &v["fault"];
        assert_eq!(fault["kind"], "hole", "{mode}: {fault}");
        assert_eq!(fault["expected"], true, "{mode}: {fault}");
        assert_eq!(fault["count"], 8, "{mode}: {fault}");
        assert_eq!(fault["completed_ios"], 0, "{mode}: {fault}");
        let errno = fault["errno"].as_str().unwrap();
        assert!(errno == "EFAULT" || errno == "short", "{mode}: {fault}");
        assert_eq!(v["errors_by_outcome"], fault["by_outcome"]);
        let first = &v["io_errors"][0];
        assert_eq!(first["outcome"], errno, "{first}");
        assert_eq!(v["pages_per_io"], 4);
    }
}

/// The last registered buffer is PROT_NONE: io_uring's registration fails
/// with EFAULT after pinning the others; exit 0, errno reported.
#[test]
fn register_last_fault_is_hit_and_reported() {
    let dir = TempDir::new("reglast");
    let p = dir.path("data");
    let f = p.to_str().unwrap();
    let v = json(&[
        "-f",
        f,
        "--create",
        "--size",
        "64k",
        "--bs",
        "16k",
        "--mode",
        "io_uring",
        "--fixed-buffers",
        "--iodepth",
        "4",
        "--fault",
        "register-last",
        "--json",
    ]);
    let fault = &v["fault"];
    assert_eq!(fault["expected"], true, "{fault}");
    assert_eq!(fault["errno"], "EFAULT", "{fault}");
    assert_eq!(fault["count"], 1, "{fault}");
    assert_eq!(v["io_errors"][0]["op"], "register");
    assert_eq!(v["total"]["read"]["ios"], 0);
}
