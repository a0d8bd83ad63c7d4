//! Bugs planted in the kernel's own Direct I/O release (`pintrace zoo
//! plant`): for a few bios, `__bio_release_pages` unpins nothing (bio-leak)
//! or drops one reference per page with put_page (bio-put). Every family
//! whose I/O is released there must then fail `pintrace check` with the
//! finding that names the bug, its stack the path's acquire. The plant is
//! removed after each run and gives back what it kept: the kernel's pin
//! counters balance again and the kernel complained of nothing.

use super::zoo::{assert_kernel_quiet, load_zoo, zoo};
use super::{kernel_version, pintrace, IN_GUEST};
use serde_json::Value;
use std::process::Command;

/// Bios each plant takes; the scenarios below issue more than that.
const BIOS: u64 = 4;
const LEAKS: [&str; 3] = ["leak_owner_exited", "leak_after_bio", "leak_at_end"];

/// Direct I/O bios pin (and their release unpins) from 6.5 on: before, the
/// module refuses to plant, saying why.
fn plants_refused_here() -> bool {
    load_zoo();
    if kernel_version() >= (6, 5) {
        return false;
    }
    let out = pintrace(&["zoo", "plant", "bio-leak"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("FOLL_GET") && stderr.contains("6.5"),
        "the refusal names the reason: {stderr}"
    );
    true
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The kernel's FOLL_PIN counters, refreshed: (acquired, released).
fn pin_counters() -> (u64, u64) {
    let v = pintrace::kernel::vmstat::read().expect("/proc/vmstat pin counters");
    (v.acquired, v.released)
}

/// Plants `kind`, runs `pintrace check --scenarios SCENARIO --json EXTRA`,
/// removes the plant, and checks that `scenario` failed with the finding
/// `kind` means, its stack naming `acquire`. Returns false (and says why)
/// when check skipped the scenario: its target is not in this guest.
fn fails_with_the_right_finding(kind: &str, scenario: &str, extra: &[&str], acquire: &str) -> bool {
    zoo(&["unplant"]);
    let pins0 = pin_counters();
    let plant = zoo(&["plant", kind, "--count", &BIOS.to_string()]);
    // xtask/pinzoo/pinzoo.h's PINZOO_VERSION.
    assert_eq!(plant["version"], 4, "{plant}");
    let mut args = vec!["check", "--scenarios", scenario, "--json"];
    args.extend_from_slice(extra);
    let out = pintrace(&args);
    let gone = zoo(&["unplant"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check printed no report ({e}): {:?}", out.status));
    let s = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == scenario)
        .unwrap_or_else(|| panic!("no {scenario} in {report}"))
        .clone();
    if s["status"] == "skip" {
        eprintln!("skipping {kind} on {scenario}: {}", s["reason"]);
        return false;
    }
    assert_eq!(out.status.code(), Some(1), "{kind}: check must fail: {s}");
    assert_eq!(s["status"], "fail", "{kind}: {s}");
    // The module planted on the scenario's bios and gave everything back.
    assert_eq!(gone["planted"], true, "{gone}");
    let (bios, pages) = (u(&gone, "bios"), u(&gone, "pages"));
    assert!((1..=BIOS).contains(&bios), "{gone}");
    assert_eq!(gone["armed"], bios < BIOS, "{gone}");
    let (unpinned, repaired) = if kind == "bio-leak" {
        (pages, 0)
    } else {
        (0, pages)
    };
    assert_eq!(
        (u(&gone, "unpinned"), u(&gone, "repaired")),
        (unpinned, repaired),
        "{gone}"
    );
    let findings = s["findings"].as_array().unwrap();
    let kinds: Vec<&str> = findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    let refs = |pred: &dyn Fn(&str) -> bool| -> u64 {
        findings
            .iter()
            .filter(|f| pred(f["kind"].as_str().unwrap()))
            .map(|f| u(f, "refs"))
            .sum()
    };
    match kind {
        // Every pin the plant kept is a leak, and nothing else is found.
        "bio-leak" => {
            assert!(kinds.iter().all(|k| LEAKS.contains(k)), "{kinds:?}: {s}");
            assert_eq!(refs(&|k| LEAKS.contains(&k)), pages, "{s}");
        }
        // Every page put is a pin released as FOLL_GET: not a leak. On
        // fs/direct-io.c a page holds more pins than the bio's one (those
        // folio_add_pin added): the plant puts one per page and skips the
        // bio's unpins of the others, which are then leaked for real.
        _ if s["observed"]["added_pins"].as_u64().unwrap_or(0) > 0 => {
            assert!(
                kinds
                    .iter()
                    .all(|&k| k == "pin_released_as_get" || LEAKS.contains(&k)),
                "{kinds:?}: {s}"
            );
            assert!(kinds.contains(&"pin_released_as_get"), "{kinds:?}: {s}");
        }
        _ => {
            assert!(
                kinds.iter().all(|&k| k == "pin_released_as_get"),
                "{kinds:?}: {s}"
            );
            assert_eq!(refs(&|k| k == "pin_released_as_get"), pages, "{s}");
        }
    }
    assert!(!findings.is_empty(), "{s}");
    for f in findings {
        let stack = f["stack"].to_string();
        assert!(stack.contains(acquire), "{kind}: the acquire's stack: {f}");
    }
    let balance = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "balance")
        .unwrap_or_else(|| panic!("no balance check in {s}"));
    assert_eq!(balance["ok"], false, "{kind}: {balance}");
    // With what the plant kept given back, every pin taken since it was
    // armed has been released (the guest is otherwise idle). folio_add_pin
    // (fs/direct-io.c) does not count in nr_foll_pin_acquired, but the
    // unpin of what it added counts in nr_foll_pin_released.
    let added = s["observed"]["added_pins"].as_u64().unwrap_or(0);
    let pins1 = pin_counters();
    assert_eq!(
        pins1.0 - pins0.0 + added,
        pins1.1 - pins0.1,
        "{pins0:?} -> {pins1:?}, {added} added by folio_add_pin"
    );
    assert_kernel_quiet();
    true
}

/// Both plants on one scenario.
fn each_plant_fails(scenario: &str, extra: &[&str], acquire: &str) {
    let _ = IN_GUEST;
    if plants_refused_here() {
        return;
    }
    for kind in ["bio-leak", "bio-put"] {
        if !fails_with_the_right_finding(kind, scenario, extra, acquire) {
            return;
        }
    }
}

/// A loop device read with O_DIRECT by dd in `sh -c 'PLANT; exec dd'`: the
/// plant's tgid is dd's (exec keeps the shell's pid). Returns what the
/// plant did.
fn dd_under_plant(dev: &str, plant: &str) -> Value {
    let me = super::bin();
    let script = format!(
        "{me} zoo plant bio-leak {plant} >/dev/null && \
         exec dd if={dev} of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    zoo(&["unplant"])
}

/// The plant's own bounds: it takes --count bios and disarms itself, keeps
/// exactly their pages and unpins them at `unplant`; with --tgid it lets
/// other processes' bios through; a second plant is refused while one is
/// in place; unplant with none is a no-op.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn plant_counts_filters_and_gives_back() {
    if plants_refused_here() {
        return;
    }
    zoo(&["unplant"]);
    let dev = super::LoopDev::new(4 << 20);
    let devpath = dev.path.to_str().unwrap().to_string();
    let pins0 = pin_counters();
    // A synchronous block-device read completes in the reader: 4 bios of
    // 256 pages, the first 2 planted on.
    let own = dd_under_plant(&devpath, "--count 2 --tgid $$");
    assert_eq!(
        (own["planted"].clone(), own["armed"].clone()),
        (true.into(), false.into()),
        "{own}"
    );
    assert_eq!((u(&own, "bios"), u(&own, "pages")), (2, 512), "{own}");
    assert_eq!((u(&own, "unpinned"), u(&own, "skipped")), (512, 0), "{own}");
    // Another process's tgid: every bio goes through untouched.
    let other = dd_under_plant(&devpath, "--count 2 --tgid 1");
    assert_eq!(other["armed"], true, "{other}");
    assert_eq!((u(&other, "bios"), u(&other, "pages")), (0, 0), "{other}");
    assert_eq!(u(&other, "skipped"), 4, "{other}");
    let pins1 = pin_counters();
    assert_eq!(
        pins1.0 - pins0.0,
        pins1.1 - pins0.1,
        "{pins0:?} -> {pins1:?}"
    );
    assert!(pins1.0 - pins0.0 >= 2 * 4 * 256, "{pins0:?} -> {pins1:?}");

    zoo(&["plant", "bio-put", "--count", "1"]);
    let again = pintrace(&["zoo", "plant", "bio-leak"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("unplant"));
    let idle = zoo(&["unplant"]);
    assert_eq!(
        (idle["planted"].clone(), idle["armed"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(zoo(&["unplant"])["planted"], false);
    assert_kernel_quiet();
}

/// fs family: a read of the raw loop device (block/fops.c,
/// bio_iov_iter_get_pages).
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn planted_bio_release_fails_the_block_read() {
    each_plant_fails("block/psync/anon/read", &[], "bio_iov_iter_get_pages");
}

/// fault family: the same read through dm-error, every bio failed: its
/// pins still go through the bio release.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn planted_bio_release_fails_the_dm_error_read() {
    each_plant_fails(
        "block/psync/anon/read/dm-error",
        &[],
        "bio_iov_iter_get_pages",
    );
}

/// legacy family: vfat Direct I/O through fs/direct-io.c.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn planted_bio_release_fails_the_vfat_read() {
    each_plant_fails("vfat/psync/anon/read", &[], "__blockdev_direct_IO");
}

/// sg family: SCSI READ through SG_IO on a scsi_debug disk
/// (blk_rq_map_user_iov, released by blk_rq_unmap_user).
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn planted_bio_release_fails_the_sg_read() {
    each_plant_fails("scsi-debug/sg/anon/read", &[], "bio_map_user_iov");
}

/// nvme family: NVMe passthrough (IORING_OP_URING_CMD on /dev/ngXnY) on
/// the scratch namespace PINTRACE_SCRATCH_NVME names.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn planted_bio_release_fails_nvme_passthrough() {
    let Some(dev) = std::env::var("PINTRACE_SCRATCH_NVME")
        .ok()
        .filter(|d| !d.is_empty())
    else {
        eprintln!("skipping: no scratch NVMe namespace (PINTRACE_SCRATCH_NVME)");
        return;
    };
    each_plant_fails(
        "nvme/uring-cmd/anon/read",
        &["--scratch-device", &dev],
        "bio_map_user_iov",
    );
}
