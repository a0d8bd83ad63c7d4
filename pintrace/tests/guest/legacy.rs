//! The legacy Direct I/O code (fs/direct-io.c, used by FAT, hfs, udf and
//! others) on a real vfat file system. From 6.5 it pins each page once with
//! `pin_user_pages_fast` and once more per block section with
//! `folio_add_pin`, then unpins both: once when the page is handed to a bio,
//! once at the bio's completion. `folio_add_pin` is not counted in
//! `nr_foll_pin_acquired`, so vmstat's released runs ahead of its acquired by
//! exactly the added pins; pintrace must see them, or each second unpin looks
//! like a double unpin. On 6.1 the same code takes FOLL_GET references.

use super::{kernel_version, pintrace, summary_of, LoopDev};
use serde_json::Value;
use std::{path::Path, process::Command};

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vfat file system on a loop device, unmounted when dropped.
struct Fat {
    mnt: &'static str,
    _dev: LoopDev,
}

impl Fat {
    fn new() -> Option<Fat> {
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if !fs.contains("vfat") || !Path::new("/bin/mkfs.vfat").exists() {
            // The suite's guests of Debian kernels always have both.
            assert!(
                !release.contains("-cloud-amd64"),
                "no vfat module or no mkfs.vfat in this guest"
            );
            return None;
        }
        let dev = LoopDev::new(64 << 20);
        let mnt = "/mnt/legacy-fat";
        let path = dev.path.display().to_string();
        sh(&format!(
            "mkfs.vfat {path} >/dev/null 2>&1 && mkdir -p {mnt} && \
             mount -t vfat -o iocharset=iso8859-1 {path} {mnt} && \
             dd if=/dev/urandom of={mnt}/data bs=1M count=4 2>/dev/null && sync"
        ));
        Some(Fat { mnt, _dev: dev })
    }
}

impl Drop for Fat {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt).status();
    }
}

/// An O_DIRECT read and an O_DIRECT overwrite of a 4 MiB file on vfat, in
/// 64 KiB blocks: no finding, every pin released, and the traced totals
/// equal to the vmstat deltas once the pins `folio_add_pin` added (which
/// vmstat does not count) are told apart.
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn legacy_direct_io_on_vfat_balances() {
    let Some(fat) = Fat::new() else {
        eprintln!("no vfat in this guest: skipped");
        return;
    };
    let file = format!("{}/data", fat.mnt);
    let script = format!(
        "dd if={file} of=/dev/null bs=64k iflag=direct 2>/dev/null && \
         dd if=/dev/zero of={file} bs=64k count=64 oflag=direct conv=notrunc 2>/dev/null"
    );
    let out = pintrace(&["run", "--json", "--", "sh", "-c", &script]);
    let s = summary_of(&out);
    assert_eq!(s["workload"]["exit_code"], 0, "{s}");
    assert_eq!(s["lossless"], true, "{s}");
    assert_eq!(n(&s["findings"]), 0, "{s}");
    let added = n(&s["added_pins"]);
    let pins = n(&s["by_kind"]["pin"]["pages"]);
    let released = n(&s["releases"]["pin_refs"]);
    let delta = &s["vmstat"]["delta"];
    if kernel_version() < (6, 5) {
        // FOLL_GET references, released with put_page: no pin at all.
        assert_eq!((pins, added, released), (0, 0, 0), "{s}");
        assert!(n(&s["by_kind"]["get"]["pages"]) >= 2048, "{s}");
        return;
    }
    // 8 MiB of Direct I/O: every page pinned once by pin_user_pages_fast,
    // and at least once more by folio_add_pin (one per block section).
    assert!(added >= 2048, "{added} pins added: {s}");
    assert!(pins >= 2048 + added, "{pins} pins: {s}");
    assert_eq!(released, pins, "every pin released: {s}");
    assert_eq!(n(&s["outstanding"]["pin"]), 0, "{s}");
    assert_eq!(n(&delta["acquired"]) + added, pins, "vmstat {delta}: {s}");
    assert_eq!(n(&delta["released"]), released, "vmstat {delta}: {s}");
    // The added pins are the dd processes', at folio_add_pin.
    let at_add_pin: u64 = s["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| n(&p["by_site"]["folio_add_pin"]["pages"]))
        .sum();
    assert_eq!(at_add_pin, added, "{s}");
    // And the plain text says why vmstat differs.
    let text = pintrace(&["run", "--", "sh", "-c", &script]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("pins added by folio_add_pin"), "{stdout}");
}
