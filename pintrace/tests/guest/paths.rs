//! The engine's SG_IO mode, sub-page segments and faults on a scsi_debug
//! disk, under `pintrace run`: when the engine expects the kernel to map the
//! user pages (aligned buffer) the pages it pins are the pages its I/O spans
//! (FOLL_PIN from 6.5, FOLL_GET before), all released; when it expects a
//! copy (an offset the queue's DMA alignment does not divide) nothing is
//! pinned; a fault is hit, its errno reported, and every pin taken before
//! the failure comes back. Skipped, saying so, when no scsi_debug disk is
//! present (the guest needs `--module scsi_debug --module sd_mod`).

use super::{kernel_version, pintrace, summary_of};
use serde_json::Value;
use std::fs;

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// /dev/sdX of the scsi_debug disk, if one is there.
fn scsi_debug_disk() -> Option<String> {
    let mut found = None;
    for e in fs::read_dir("/sys/block").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let model = fs::read_to_string(e.path().join("device/model")).unwrap_or_default();
        if name.starts_with("sd") && model.trim() == "scsi_debug" {
            found = Some(format!("/dev/{name}"));
        }
    }
    if found.is_none() {
        eprintln!(
            "skipped: no scsi_debug disk (boot the guest with --module scsi_debug --module sd_mod)"
        );
    }
    found
}

/// The engine's own JSON report among the lines of `pintrace run --json`
/// (the engine prints it pretty, one field a line; the tracer's records are
/// one object a line).
fn engine_report(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "{")
        .expect("the engine's report");
    let end = start + lines[start..].iter().position(|l| *l == "}").unwrap();
    serde_json::from_str(&lines[start..=end].join("\n")).unwrap()
}

struct Traced {
    report: Value,
    summary: Value,
    /// Pages the engine took: FOLL_PIN from 6.5, FOLL_GET before.
    taken: u64,
    /// FOLL_GET pages of futex keys at thread exit (not I/O), at most.
    futex_slack: u64,
}

fn traced(args: &[&str]) -> Traced {
    let mut argv = vec!["run", "--json", "--", "/bin/pintrace", "engine"];
    argv.extend_from_slice(args);
    argv.push("--json");
    let out = pintrace(&argv);
    let summary = summary_of(&out);
    let report = engine_report(&String::from_utf8_lossy(&out.stdout));
    let pid = n(&summary["workload"]["pid"]);
    let engine = summary["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| n(&p["tgid"]) == pid)
        .cloned()
        .unwrap_or(Value::Null);
    let converted = kernel_version() >= (6, 5);
    let kind = if converted { "pin" } else { "get" };
    let mut taken = n(&engine["by_kind"][kind]["pages"]);
    if !converted {
        // exec(2) takes its argument pages with FOLL_GET too.
        taken -= n(&engine["by_site"]["get_user_pages_remote"]["pages"]);
    }
    Traced {
        report,
        summary,
        taken,
        futex_slack: if converted { 0 } else { 4 },
    }
}

fn assert_balanced(t: &Traced, what: &str) {
    let s = &t.summary;
    assert_eq!(s["lossless"], true, "{what}: {s}");
    assert_eq!(n(&s["findings"]), 0, "{what}: {s}");
    for k in ["pin", "longterm_pin"] {
        assert_eq!(n(&s["outstanding"][k]), 0, "{what}: {k} outstanding: {s}");
    }
    if kernel_version() >= (6, 5) {
        let pins: u64 = ["pin", "longterm_pin"]
            .iter()
            .map(|k| n(&s["by_kind"][k]["pages"]))
            .sum();
        assert_eq!(n(&s["releases"]["pin_refs"]), pins, "{what}: {s}");
    }
}

fn assert_taken(t: &Traced, expected: u64, what: &str) {
    assert!(
        t.taken >= expected && t.taken <= expected + t.futex_slack,
        "{what}: {} pages taken, expected {expected} (+{} futex): {}",
        t.taken,
        t.futex_slack,
        t.summary
    );
}

/// Aligned buffers are mapped: pages taken = I/Os x pages per I/O; an
/// offset of 2 bytes (not a multiple of the DMA alignment) is copied and
/// takes none. Sub-page segments take one pin per segment of a shared page.
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn sg_maps_aligned_buffers_and_copies_unaligned_ones() {
    let Some(disk) = scsi_debug_disk() else {
        return;
    };
    let cases: &[(&str, &[&str])] = &[
        ("map", &["--bs", "16k", "--size", "256k"]),
        (
            "copy",
            &["--bs", "16k", "--size", "256k", "--buffer-offset", "2"],
        ),
        (
            "map",
            &[
                "--bs",
                "4k",
                "--size",
                "64k",
                "--iovecs",
                "8",
                "--subpage-iovecs",
            ],
        ),
        (
            "map",
            &[
                "--bs",
                "16k",
                "--size",
                "256k",
                "--rw",
                "write",
                "--allow-overwrite",
            ],
        ),
    ];
    for (expect, extra) in cases {
        let mut args = vec!["-f", disk.as_str(), "--mode", "sg"];
        args.extend_from_slice(extra);
        let t = traced(&args);
        let what = format!("sg {extra:?}");
        let r = &t.report;
        assert_eq!(r["sg"]["expect"], *expect, "{what}: {}", r["sg"]);
        assert_eq!(r["sg"]["node"], "block");
        let ios = n(&r["total"]["read"]["ios"]) + n(&r["total"]["write"]["ios"]);
        assert_eq!(
            ios * n(&r["settings"]["bs"]),
            n(&r["settings"]["size"]),
            "{what}"
        );
        let per_io = n(&r["pages_per_io"]);
        let expected = if *expect == "map" { ios * per_io } else { 0 };
        assert_taken(&t, expected, &what);
        assert_balanced(&t, &what);
    }
}

/// pvsync with sub-page segments: one pin per segment, the merges' extra
/// pins released at once, all pins back.
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn pvsync_subpage_segments_pin_once_per_segment() {
    let Some(disk) = scsi_debug_disk() else {
        return;
    };
    let t = traced(&[
        "-f",
        disk.as_str(),
        "--mode",
        "pvsync",
        "--bs",
        "4k",
        "--size",
        "64k",
        "--iovecs",
        "8",
        "--subpage-iovecs",
    ]);
    let r = &t.report;
    assert_eq!(r["pages_per_io"], 8);
    assert_eq!(r["total"]["read"]["ios"], 16);
    // The engine's O_DIRECT probe read of one logical block adds a page.
    assert_taken(&t, 16 * 8 + 1, "pvsync subpage");
    assert_balanced(&t, "pvsync subpage");
}

/// Faults on the SCSI disk: a hole fails SG_IO with EFAULT after pinning
/// the pages before it (all released); past the end the disk answers LBA
/// out of range; both exit 0 with the outcome reported.
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn sg_faults_are_hit_and_pins_come_back() {
    let Some(disk) = scsi_debug_disk() else {
        return;
    };
    let t = traced(&[
        "-f",
        disk.as_str(),
        "--mode",
        "sg",
        "--bs",
        "16k",
        "--size",
        "64k",
        "--fault",
        "hole",
    ]);
    let f = &t.report["fault"];
    assert_eq!(t.summary["workload"]["exit_code"], 0, "{f}");
    assert_eq!(f["expected"], true, "{f}");
    assert_eq!(f["errno"], "EFAULT", "{f}");
    assert_eq!(f["count"], 4, "{f}");
    // The pages before the hole (2 of the 4) were pinned, then released.
    assert!(
        t.taken >= 4 * 2,
        "hole: {} pages taken: {}",
        t.taken,
        t.summary
    );
    assert_balanced(&t, "sg hole");

    let t = traced(&[
        "-f",
        disk.as_str(),
        "--mode",
        "sg",
        "--bs",
        "4k",
        "--size",
        "16k",
        "--fault",
        "past-end",
    ]);
    let f = &t.report["fault"];
    assert_eq!(f["expected"], true, "{f}");
    assert!(
        f["errno"]
            .as_str()
            .unwrap()
            .starts_with("sense ILLEGAL REQUEST 21h/00h"),
        "{f}"
    );
    assert_eq!(f["count"], 4, "{f}");
    assert_balanced(&t, "sg past-end");
}

/// The last registered io_uring buffer is PROT_NONE: registration fails
/// with EFAULT and releases the long-term pins of the buffers before it.
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn register_last_fault_releases_the_earlier_pins() {
    let Some(disk) = scsi_debug_disk() else {
        return;
    };
    let t = traced(&[
        "-f",
        disk.as_str(),
        "--mode",
        "io_uring",
        "--fixed-buffers",
        "--iodepth",
        "4",
        "--bs",
        "16k",
        "--size",
        "64k",
        "--fault",
        "register-last",
    ]);
    let f = &t.report["fault"];
    assert_eq!(f["expected"], true, "{f}");
    assert_eq!(f["errno"], "EFAULT", "{f}");
    if kernel_version() >= (6, 5) {
        let lt = n(&t.summary["by_kind"]["longterm_pin"]["pages"]);
        assert!(lt >= 3 * 4, "{lt} long-term pins: {}", t.summary);
    }
    assert_balanced(&t, "register-last");
}
