//! `pintrace check` on this machine: listing, selection and refusals. The
//! checks themselves need a kernel with kprobes or fentry and run in the
//! QEMU guests (tests/guest.rs, `cargo xtask check-kernel`).

use std::process::Command;

fn pintrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pintrace"))
}

#[test]
fn list_shows_the_matrix_and_the_quick_set() {
    let out = pintrace().args(["check", "--list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 163, "{text}");
    for name in [
        "btrfs/io_uring-fixed/anon/write",
        "nfs/aio/anon/read",
        "scsi-debug/sg-subpage/anon/write",
        "nvme/uring-cmd-fixed/anon/read",
        "udf/aio/anon/write",
        "block/io_uring-fixed/anon/read/register-last",
        "regress/subpage-merge-sg",
    ] {
        assert!(text.lines().any(|l| l == name), "{name} not listed");
    }
    // A family by its name.
    let out = pintrace()
        .args(["check", "--list", "--scenarios", "legacy"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 16, "{text}");
    assert!(text
        .lines()
        .all(|l| l.starts_with("vfat/") || l.starts_with("udf/")));
    let out = pintrace()
        .args(["check", "--list", "--quick", "--scenarios", "*/aio/*"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "ext4/aio/anon/read",
            "block/aio/hugetlb/read",
            "block/aio/fork-shared/write",
        ]
    );
}

#[test]
fn a_pattern_matching_nothing_is_refused_naming_the_flag() {
    let out = pintrace()
        .args(["check", "--scenarios", "zfs/*"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--scenarios: `zfs/*` matches no scenario"),
        "{stderr}"
    );
}

#[test]
fn a_junit_path_in_a_missing_directory_is_refused() {
    let out = pintrace()
        .args(["check", "--junit", "/nonexistent-dir/x.xml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--junit /nonexistent-dir/x.xml"),
        "{stderr}"
    );
}

#[test]
fn without_privileges_it_exits_2_naming_the_capabilities() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        // Drop to nobody with no capabilities.
        let Ok(setpriv) = which_setpriv() else {
            eprintln!("skipped: running as root and setpriv (util-linux) is missing");
            return;
        };
        let mut c = Command::new(setpriv);
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_pintrace"));
        c
    } else {
        pintrace()
    };
    let out = cmd
        .args(["check", "--quick"])
        .current_dir("/")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CAP_SYS_ADMIN") && stderr.contains("CAP_BPF"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn which_setpriv() -> Result<std::path::PathBuf, ()> {
    ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn a_scratch_device_that_is_not_a_whole_disk_is_refused() {
    let out = pintrace()
        .args(["check", "--scratch-device", "/dev/null"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--scratch-device /dev/null: not a block device"),
        "{stderr}"
    );
    let out = pintrace()
        .args(["check", "--scratch-device", "/nonexistent-disk"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--scratch-device /nonexistent-disk"),
        "{stderr}"
    );
}

/// When the check cannot run here (no privileges, or a kernel it cannot
/// trace: this host's), the reports are written all the same, with one
/// erroring test case holding the reason, and `--out` is made if missing.
#[test]
fn reports_are_written_when_the_check_cannot_run() {
    let doctor = pintrace().arg("doctor").output().unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if doctor.status.code() == Some(0) && root {
        eprintln!("skipped: this kernel can trace, the check would run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("check.xml");
    let out_dir = dir.path().join("made/here");
    let ktap = dir.path().join("check.ktap");
    let out = pintrace()
        .args(["check", "--quick", "--junit"])
        .arg(&junit)
        .arg("--ktap")
        .arg(&ktap)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for xml in [junit, out_dir.join("check.xml")] {
        let xml = std::fs::read_to_string(&xml).unwrap();
        assert!(
            xml.contains("<error") && xml.contains("could-not-run"),
            "{xml}"
        );
    }
    let json = std::fs::read_to_string(out_dir.join("check.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["type"], "check");
    assert_eq!(report["errors"], 1);
    let why = report["error"].as_str().unwrap();
    assert!(!why.is_empty() && stderr.contains(why), "{why} / {stderr}");
    // KTAP: one failed result, the reason in the diagnostic lines before it.
    let ktap = std::fs::read_to_string(&ktap).unwrap();
    let lines: Vec<&str> = ktap.lines().collect();
    assert_eq!(lines[0], "KTAP version 1", "{ktap}");
    assert!(lines.contains(&"1..1"), "{ktap}");
    let result = lines.iter().position(|l| *l == "not ok 1 could-not-run");
    let result = result.unwrap_or_else(|| panic!("no result line: {ktap}"));
    let diag: Vec<&str> = lines[..result]
        .iter()
        .filter_map(|l| l.strip_prefix("# "))
        .collect();
    let first = why.lines().next().unwrap();
    assert!(diag.contains(&first), "{first} not in {diag:?}");
}

#[test]
fn a_ktap_path_in_a_missing_directory_is_refused() {
    let out = pintrace()
        .args(["check", "--quick", "--ktap", "/nonexistent/dir/c.ktap"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--ktap") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn list_as_json() {
    let out = pintrace()
        .args(["check", "--list", "--json", "--scenarios", "legacy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 16, "{text}");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["type"], "scenario");
        assert_eq!(v["scenario"]["family"], "legacy", "{v}");
        assert!(v["name"].as_str().unwrap().contains('/'), "{v}");
    }
}
