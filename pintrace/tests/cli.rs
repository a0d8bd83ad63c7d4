//! The pintrace binary on this machine's own kernel: what it says, how it
//! fails, its exit codes. These run as part of the host test suite; the
//! kernel-side behaviour is tested in the QEMU guests (tests/guest.rs).

use std::{path::Path, process::Command};

fn pintrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pintrace"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn kernel_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

#[test]
fn doctor_json_tells_the_truth_about_this_kernel() {
    let out = pintrace().args(["doctor", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["type"], "doctor");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(report["caps"]["release"], release.trim());
    let kprobes = report["caps"]["kprobes"]["state"].as_str().unwrap();
    assert_eq!(kprobes == "yes", kernel_has_kprobes(), "{report}");
    assert_eq!(
        report["caps"]["btf"].as_bool().unwrap(),
        Path::new("/sys/kernel/btf/vmlinux").exists()
    );
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap();
    assert_eq!(
        report["caps"]["vmstat_pin_counters"].as_bool().unwrap(),
        vmstat.contains("nr_foll_pin_acquired")
    );
    // Every symbol the report calls present is in kallsyms (when readable).
    if is_root() {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        for sym in report["caps"]["symbols"].as_array().unwrap() {
            let name = sym["name"].as_str().unwrap();
            let listed = kallsyms
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(name));
            assert_eq!(sym["present"].as_bool().unwrap(), listed, "{name}");
        }
    }
    // Exit code: 0 when a plan exists, 1 when nothing can be traced.
    let has_plan = report["plan"].get("Ok").is_some();
    assert_eq!(out.status.code(), Some(if has_plan { 0 } else { 1 }));
}

#[test]
fn doctor_text_names_missing_features() {
    let out = pintrace().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kprobes") && text.contains("fentry/fexit"),
        "{text}"
    );
    if !kernel_has_kprobes() {
        assert!(text.contains("CONFIG_KPROBES"), "{text}");
    }
}

/// On a kernel with neither kprobes nor fentry (this project's build machines),
/// `run` must fail with the missing features named and the way out, exit 2.
#[test]
fn run_without_kprobes_or_fentry_explains_and_exits_2() {
    if !is_root() || kernel_has_kprobes() {
        eprintln!("skipped: needs root on a kernel without kprobes");
        return;
    }
    let doctor = pintrace().args(["doctor", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    if report["caps"]["fentry"]["state"] == "yes" {
        eprintln!("skipped: fentry works on this kernel");
        return;
    }
    let out = pintrace().args(["run", "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CONFIG_KPROBES"), "{stderr}");
    assert!(stderr.contains("fentry/fexit"), "{stderr}");
    assert!(stderr.contains("cargo xtask vm"), "{stderr}");
    assert!(stderr.contains("--vmstat-only"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

/// Where nothing can be probed, `--vmstat-only` still sees Direct I/O in the
/// kernel's own counters: a 1 MiB O_DIRECT read is at least 256 page pins
/// taken and released on a kernel whose Direct I/O pins (6.5 on). The
/// counters are system-wide, so other activity can only add to them.
#[test]
fn vmstat_only_sees_direct_io_in_the_kernels_counters() {
    if !is_root() {
        eprintln!("skipped: stat_refresh needs root");
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let converted =
        pintrace::kernel::flags::parse_version(release.trim()).is_some_and(|v| v >= (6, 5));
    let file =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vmstat-only-{}", std::process::id()));
    std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
    let out = pintrace()
        .args(["run", "--vmstat-only", "--json", "--", "dd"])
        .arg(format!("if={}", file.display()))
        .args([
            "of=/dev/null",
            "bs=1M",
            "count=1",
            "iflag=direct",
            "status=none",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Invalid argument") {
        eprintln!("skipped: no O_DIRECT on {}: {stderr}", file.display());
        return;
    }
    assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["type"], "vmstat_only");
    let acq = report["vmstat"]["delta"]["acquired"].as_i64().unwrap();
    let rel = report["vmstat"]["delta"]["released"].as_i64().unwrap();
    assert_eq!(report["outstanding"], acq - rel);
    assert_eq!(report["balanced"], acq == rel);
    assert_eq!(report["workload"]["exit_code"], 0);
    if converted {
        assert!(acq >= 256 && rel >= 256, "{report}");
    }
}

#[test]
fn run_unprivileged_names_the_capabilities() {
    if !is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to drop privileges");
        return;
    }
    let out = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_pintrace"))
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"] {
        assert!(stderr.contains(cap), "{stderr}");
    }
}

#[test]
fn bad_flags_name_the_flag_and_exit_2() {
    for (args, needle) in [
        (&["run", "--ringbuf-mib", "3"][..], "--ringbuf-mib"),
        (&["run", "--ringbuf-mib", "-4"][..], "--ringbuf-mib"),
        (&["run", "--duration", "abc"][..], "--duration"),
        (&["run", "--duration", "0"][..], "--duration"),
        (&["run", "--attach", "uprobe"][..], "--attach"),
        (&["frobnicate"][..], "frobnicate"),
    ] {
        let out = pintrace().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

const CAPTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dio-6.12-1m.ptrec");

/// bcc's and perf's spellings: `-p PID`, `-d TIME`; `-o FILE` takes the
/// report, and stdout stays empty.
#[test]
fn short_flags_and_an_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.jsonl");
    let out = pintrace()
        .args([
            "run", "--replay", CAPTURE, "--json", "-p", "1", "-d", "5s", "-o",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    let last: serde_json::Value = serde_json::from_str(written.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary", "{written}");
    // Text too; and an unwritable file is refused naming the flag.
    let out = pintrace()
        .args(["run", "--replay", CAPTURE, "--output"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(std::fs::read_to_string(&file).unwrap().contains("lossless"));
    let out = pintrace()
        .args(["run", "--replay", CAPTURE, "-o", "/nonexistent-dir/r.txt"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--output /nonexistent-dir/r.txt"),
        "{stderr}"
    );
}

/// With `-o FILE` the workload's own stdout is not mixed into the JSON.
#[test]
fn output_file_keeps_the_workloads_stdout_apart() {
    if !is_root() {
        eprintln!("skipped: --vmstat-only's stat_refresh needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    let out = pintrace()
        .args(["run", "--vmstat-only", "--json", "-o"])
        .arg(&file)
        .args(["--", "echo", "from the workload"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("nr_foll_pin_acquired") {
        eprintln!("skipped: no vmstat pin counters: {stderr}");
        return;
    }
    assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the workload\n");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(report["type"], "vmstat_only");
}

/// A workload that fails passes its exit code on (as `perf stat` does)
/// when pintrace found nothing; pintrace's own failure to run wins.
#[test]
fn a_failed_workloads_exit_code_is_passed_on() {
    if !is_root() {
        eprintln!("skipped: --vmstat-only's stat_refresh needs root");
        return;
    }
    for (script, code) in [("exit 7", 7), ("kill -TERM $$", 128 + 15), ("exit 0", 0)] {
        let out = pintrace()
            .args(["run", "--vmstat-only", "--", "sh", "-c", script])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("nr_foll_pin_acquired") {
            eprintln!("skipped: no vmstat pin counters: {stderr}");
            return;
        }
        // 1 when the system-wide counters moved unbalanced meanwhile.
        assert!(
            out.status.code() == Some(code) || out.status.code() == Some(1),
            "{script}: {:?} {stderr}",
            out.status
        );
        if code != 0 {
            assert!(stderr.contains("did not succeed"), "{stderr}");
        }
    }
    // A kernel pintrace cannot trace (doctor exits 1): 2, whatever the
    // workload did.
    if pintrace().arg("doctor").output().unwrap().status.code() == Some(1) {
        let out = pintrace()
            .args(["run", "--", "sh", "-c", "exit 7"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
}

/// `-i/--interval` with `--count`, as `perf stat -I` and bcc's tools take
/// them: N reports on the (recorded) clock's boundaries, then the summary.
#[test]
fn intervals_are_reported_on_their_boundaries_up_to_count() {
    let out = pintrace()
        .args([
            "run", "--replay", CAPTURE, "--json", "-i", "50ms", "--count", "3",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let intervals: Vec<&serde_json::Value> =
        lines.iter().filter(|v| v["type"] == "interval").collect();
    assert_eq!(intervals.len(), 3, "{lines:?}");
    for (n, i) in intervals.iter().enumerate() {
        assert_eq!(i["index"], n as u64 + 1);
        let t = i["t_s"].as_f64().unwrap();
        assert!((t - 0.05 * (n + 1) as f64).abs() < 1e-6, "boundary: {t}");
        assert!(i["schema"].is_u64());
        assert!(i["by_kind"]["pin"]["outstanding"].is_u64());
    }
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert!(
        (last["duration_s"].as_f64().unwrap() - 0.15).abs() < 1e-6,
        "the run ends with the last interval: {last}"
    );

    // What is held at an interval's end is the ledger's count then (the
    // model samples it only at its ticks): the recording's 256 pins are
    // taken before 0.2 s and released after.
    let out = pintrace()
        .args(["run", "--replay", CAPTURE, "--json", "-i", "100ms"])
        .output()
        .unwrap();
    let held: Vec<(f64, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "interval")
        .map(|i| {
            (
                i["t_s"].as_f64().unwrap(),
                i["by_kind"]["pin"]["outstanding"].as_u64().unwrap(),
            )
        })
        .collect();
    // (At 0.2 s the call's record is in, and some of its folio batches.)
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(held[0], (0.1, 0));
    assert!(
        held[1].0 == 0.2 && (1..=256).contains(&held[1].1),
        "{held:?}"
    );

    // Text: one header, three rows (kinds) per interval.
    let out = pintrace()
        .args(["run", "--replay", CAPTURE, "--interval", "100ms"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("#       time acquired as").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("0.200 "))
            .count(),
        3,
        "{text}"
    );

    // --count needs --interval, and is at least 1.
    for bad in [
        &["run", "--replay", CAPTURE, "--count", "2"][..],
        &["run", "--replay", CAPTURE, "-i", "1s", "--count", "0"][..],
        &["run", "--replay", CAPTURE, "-i", "0s"][..],
    ] {
        let out = pintrace().args(bad).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(
            stderr.contains("--interval") || stderr.contains("--count"),
            "{bad:?}: {stderr}"
        );
    }
}
