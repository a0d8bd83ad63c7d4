//! `pintrace check`'s newer families on the real kernels: each family runs
//! (no skip on a Debian kernel with the guest's devices and tools), passes,
//! and shows the counts that prove it reached its path: SG_IO maps and
//! pins the pages its buffers span and releases them through the bio, or
//! copies and pins nothing; NFS-Direct takes FOLL_GET pages; legacy Direct
//! I/O adds pins with folio_add_pin; every fault leaves no pin behind;
//! each regression reaches the call it names.

use super::{kernel_version, pintrace};
use serde_json::Value;

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The scratch devices the harness gave the guest, as check flags.
fn scratch_args() -> Vec<String> {
    ["PINTRACE_SCRATCH_NVME", "PINTRACE_SCRATCH_SCSI"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter(|p| !p.is_empty())
        .flat_map(|p| ["--scratch-device".to_owned(), p])
        .collect()
}

/// `pintrace check --scenarios PATTERN --json` with the scratch devices;
/// the scenarios of the report by name. Every one must have run and passed.
fn check(pattern: &str) -> Vec<Value> {
    let mut args = vec!["check", "--json", "--scenarios", pattern];
    let scratch = scratch_args();
    args.extend(scratch.iter().map(String::as_str));
    let out = pintrace(&args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let scenarios = report["scenarios"].as_array().unwrap().clone();
    for s in &scenarios {
        assert_eq!(
            s["status"],
            "pass",
            "{} did not pass: {}",
            s["name"],
            serde_json::to_string_pretty(s).unwrap()
        );
    }
    assert_eq!(out.status.code(), Some(0), "{report}");
    scenarios
}

fn named<'a>(v: &'a [Value], name: &str) -> &'a Value {
    v.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

fn pages(s: &Value, kind: &str) -> u64 {
    n(&s["observed"]["acquired"][kind]["pages"])
}

/// FOLL_GET pages the process takes beside its I/O: exec(2)'s argument
/// pages and futex keys (the judge counts them apart).
fn other_gets(s: &Value) -> u64 {
    n(&s["observed"]["exec_pages"]) + n(&s["observed"]["futex_pages"])
}

fn released(s: &Value, kind: &str) -> u64 {
    n(&s["observed"]["released"][kind])
}

fn pinned_on_this_kernel() -> bool {
    // Direct I/O pins with FOLL_PIN from 6.5 (iov_iter_extract_pages).
    kernel_version() >= (6, 5)
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn sg_io_maps_aligned_buffers_and_copies_misaligned_ones() {
    let v = check("scsi-debug/*");
    let map = named(&v, "scsi-debug/sg/anon/read");
    let exp = n(&map["expected"]["dio_pages"]);
    let setup = n(&map["expected"]["setup_pages"]);
    // 16 commands of 64 KiB: 256 pages by the I/O.
    assert_eq!(exp - setup, 256, "{map}");
    if pinned_on_this_kernel() {
        assert_eq!(pages(map, "pin"), exp, "{map}");
        assert_eq!(released(map, "pin"), exp, "{map}");
    } else {
        assert_eq!(map["dio_kind"], "FOLL_GET", "{map}");
        assert_eq!(pages(map, "get") - other_gets(map), exp, "{map}");
        // put_page is not probed: the bio's release is what releases them.
        assert_eq!(released(map, "get"), exp, "{map}");
    }
    // Each command's bio is named at the end of bio_map_user_iov and
    // followed to blk_rq_unmap_user -> bio_release_pages.
    assert!(n(&map["observed"]["bio_releases"]) >= 16, "{map}");
    for copy in [
        "scsi-debug/sg-copy/anon/read",
        "scsi-debug/sg-copy/anon/write",
    ] {
        let c = named(&v, copy);
        assert_eq!(c["expected"]["copy"], true, "{c}");
        // Only the set-up I/O takes pages: the commands copy.
        let setup = n(&c["expected"]["setup_pages"]);
        assert_eq!(
            pages(c, "pin") + pages(c, "get") - other_gets(c),
            setup,
            "{c}"
        );
    }
    // Sub-page segments: one reference per segment, all released.
    let sub = named(&v, "scsi-debug/sg-subpage/anon/write");
    let exp = n(&sub["expected"]["dio_pages"]) - n(&sub["expected"]["setup_pages"]);
    assert_eq!(exp, 256 * 8, "{sub}");
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn nfs_direct_takes_foll_get_pages_on_debian_kernels() {
    let v = check("nfs/psync/*,nfs/aio/*");
    for s in &v {
        // fs/nfs/direct.c: iov_iter_get_pages_alloc2 on 6.1 and 6.12.
        assert_eq!(s["dio_kind"], "FOLL_GET", "{s}");
        let exp = n(&s["expected"]["dio_pages"]);
        // Beside the I/O's, the process takes exec(2)'s argument pages
        // and futex keys as FOLL_GET; the judge counts them apart.
        assert_eq!(pages(s, "get"), exp + other_gets(s), "{s}");
        assert_eq!(pages(s, "pin"), 0, "{s}");
    }
    assert_eq!(v.len(), 4);
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn legacy_direct_io_balances_the_pins_it_adds() {
    let v = check("vfat/psync/*,udf/psync/*,vfat/aio/*");
    for s in &v {
        if pinned_on_this_kernel() {
            // fs/direct-io.c adds one pin per block section it maps.
            assert!(n(&s["observed"]["added_pins"]) > 0, "{s}");
            assert_eq!(pages(s, "pin"), released(s, "pin"), "{s}");
        } else {
            assert_eq!(s["dio_kind"], "FOLL_GET", "{s}");
        }
    }
    assert_eq!(v.len(), 6);
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn every_fault_leaves_no_pin_and_names_its_errno() {
    let v = check("fault");
    assert!(v.len() >= 13, "{}", v.len());
    for s in &v {
        let fault = s["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "fault")
            .unwrap_or_else(|| panic!("{}: no fault check", s["name"]));
        let detail = fault["detail"].as_str().unwrap();
        // An errno (EFAULT, EIO), a device status or eof: never "never met".
        assert!(
            detail.starts_with("met ") && !detail.contains("never met"),
            "{}: {detail}",
            s["name"]
        );
        for kind in ["pin", "longterm_pin"] {
            assert_eq!(n(&s["observed"]["outstanding"][kind]), 0, "{s}");
        }
    }
    // A hole in the buffer: some pages pinned before it, all released.
    let hole = named(&v, "block/psync/anon/read/hole");
    if pinned_on_this_kernel() {
        assert!(pages(hole, "pin") > 0, "{hole}");
        assert_eq!(pages(hole, "pin"), released(hole, "pin"), "{hole}");
    }
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn regressions_reach_the_calls_they_name() {
    // All but subpage-merge-xfs: the suite's guests carry no xfs (the
    // check-kernel gate does, and runs it).
    let v = check(
        "regress/thp-offset-512,regress/hugetlb-offset-512,regress/subpage-merge-block,\
         regress/subpage-merge-sg,regress/uring-fixed-hugepage-unaligned",
    );
    assert_eq!(v.len(), 5);
    for s in &v {
        let reach = s["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "reaches")
            .unwrap_or_else(|| panic!("{}: no reaches check", s["name"]));
        assert_eq!(reach["ok"], true, "{s}");
        assert!(s["regression"]["bug"].as_str().unwrap().len() > 20, "{s}");
    }
    let merge = named(&v, "regress/subpage-merge-block");
    // 256 one-page I/Os of 8 segments: 2048 references on 256 pages.
    let exp = n(&merge["expected"]["dio_pages"]) - n(&merge["expected"]["setup_pages"]);
    assert_eq!(exp, 2048, "{merge}");
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn nvme_block_and_passthrough() {
    if std::env::var("PINTRACE_SCRATCH_NVME").is_err() {
        eprintln!("no scratch NVMe namespace in this guest (PINTRACE_SCRATCH_NVME): skipped");
        return;
    }
    let v = check("nvme/psync/*,nvme/io_uring/*,nvme/uring-cmd/*,nvme/uring-cmd-fixed/*");
    assert_eq!(v.len(), 8);
    let pt = named(&v, "nvme/uring-cmd/anon/read");
    let exp = n(&pt["expected"]["dio_pages"]);
    if pinned_on_this_kernel() {
        assert_eq!(pages(pt, "pin"), exp, "{pt}");
    }
    let fixed = named(&v, "nvme/uring-cmd-fixed/anon/write");
    assert!(n(&fixed["expected"]["longterm_pages"]) > 0, "{fixed}");
}
