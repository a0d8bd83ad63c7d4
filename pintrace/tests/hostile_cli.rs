//! Every flag of every command given bad values (negative, huge, not a
//! number, empty), missing or unreadable files, report paths that cannot be
//! written, damaged recordings: each must end with exit code 2 and a message
//! that names the flag or the file, before anything is set up, and never
//! with a panic. Runs on the host: no kernel features needed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn pintrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args(args)
        .env("PINTRACE_LOG", "off")
        .output()
        .unwrap()
}

fn refused(args: &[&str], needles: &[&str]) {
    let out = pintrace(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: `{n}` not in: {stderr}");
    }
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{args:?}: {stderr}"
    );
}

/// A scratch directory with a few hostile files in it.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.ptrec"), b"").unwrap();
        std::fs::write(dir.path().join("text.ptrec"), b"not a recording\n").unwrap();
        // The right magic, then nothing of the header.
        std::fs::write(dir.path().join("cut.ptrec"), b"PINTREC\n\x01\x00\x01\x00").unwrap();
        // The right magic and a header length of 4 GiB.
        std::fs::write(
            dir.path().join("huge.ptrec"),
            b"PINTREC\n\x01\x00\x01\x00\xff\xff\xff\xff0000",
        )
        .unwrap();
        std::fs::write(dir.path().join("plain"), b"x").unwrap();
        Files { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }
}

#[test]
fn run_refuses_bad_numbers_naming_the_flag() {
    for (flag, values) in [
        (
            "--duration",
            &["-5", "0", "abc", "", "1e400", "nan", "inf", "31536001"][..],
        ),
        ("--leak-age", &["-1", "0", "x", "1e20"][..]),
        (
            "--ringbuf-mib",
            &["-1", "0", "3", "2048", "99999999999", "4.0", ""][..],
        ),
        ("--attach", &["uprobe", ""][..]),
    ] {
        for v in values {
            refused(&["run", flag, v, "--", "true"], &[flag]);
            if flag != "--duration" {
                // top shares the same flags.
                refused(&["top", flag, v], &[flag]);
            }
        }
    }
    for v in ["-1", "0", "0.01", "61", "abc", "1e9"] {
        refused(&["top", "--interval", v], &["--interval"]);
    }
}

/// Every time flag takes one syntax: a bare number of seconds, or a number
/// and a unit; a bad one is refused naming the flag and the value.
#[test]
fn time_flags_take_units_and_name_flag_and_value_when_refused() {
    let capture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dio-6.12-1m.ptrec");
    for (flag, v) in [
        ("--duration", "5s"),
        ("--duration", "500ms"),
        ("--duration", "2m"),
        ("--duration", "1.5"),
        ("--leak-age", "2m"),
        ("--leak-age", "30"),
    ] {
        let out = pintrace(&["run", "--replay", capture, flag, v]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{flag} {v}: {stderr}");
    }
    for (args, flag, v) in [
        (&["run", "--duration", "5x"][..], "--duration", "5x"),
        (&["run", "--duration", "-5s"][..], "--duration", "-5s"),
        (&["run", "--leak-age", "soon"][..], "--leak-age", "soon"),
        (&["top", "--interval", "10ms"][..], "--interval", "10ms"),
        (&["top", "--interval", "2h"][..], "--interval", "2h"),
        (
            &["run", "--metrics", "0", "--linger", "3parsecs"][..],
            "--linger",
            "3parsecs",
        ),
    ] {
        refused(args, &[flag, v]);
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.dat");
    let target = target.to_str().unwrap();
    for flag in ["--runtime", "--fork-interval", "--cmd-timeout"] {
        refused(
            &["engine", "-f", target, "--size", "1m", flag, "5 fortnights"],
            &[flag, "`5 fortnights`"],
        );
    }
}

#[test]
fn replay_refuses_bad_speeds_and_unreadable_or_damaged_files() {
    let f = Files::new();
    let capture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dio-6.12-1m.ptrec");
    for v in ["-3", "0", "1e-300", "nan", "inf", "1e7", "fast", ""] {
        refused(&["run", "--replay", capture, "--speed", v], &["--speed"]);
        refused(&["top", "--replay", capture, "--speed", v], &["--speed"]);
    }
    refused(&["run", "--speed", "2"], &["--replay"]);
    let missing = f.s("missing.ptrec");
    let dir = f.dir.path().to_str().unwrap().to_owned();
    for (file, what) in [
        (missing.as_str(), "No such file"),
        (dir.as_str(), "Is a directory"),
        ("/dev/null", "bad magic"),
        (&f.s("empty.ptrec"), "bad magic"),
        (&f.s("text.ptrec"), "bad magic"),
        (&f.s("cut.ptrec"), "bad magic"),
        (&f.s("huge.ptrec"), "truncated header"),
    ] {
        refused(&["run", "--replay", file], &[file, what]);
        refused(&["run", "--json", "--replay", file], &[file, what]);
        refused(&["top", "--replay", file], &[file, what]);
    }
}

#[test]
fn run_refuses_unwritable_report_paths_before_tracing() {
    let f = Files::new();
    let dir = f.dir.path().to_str().unwrap().to_owned();
    for (path, what) in [
        (f.s("no/such/dir/x.ptrec"), "does not exist"),
        (dir.clone(), "is a directory"),
        ("/proc/x.ptrec".to_owned(), "cannot create a file in /proc"),
        (String::new(), "a value is required"),
    ] {
        // Checked before the kernel is asked for anything: the message is
        // about the file, whatever this kernel can trace.
        refused(
            &["run", "--record", &path, "--", "true"],
            &["--record", what],
        );
    }
    // A recording cannot be recorded again.
    refused(
        &["run", "--record", &f.s("a"), "--replay", &f.s("b")],
        &["--record", "--replay"],
    );
    assert_eq!(
        std::fs::read_dir(f.dir.path()).unwrap().count(),
        5,
        "nothing was left behind"
    );
}

#[test]
fn metrics_addresses_are_checked() {
    for (v, needle) in [
        ("abc", "not an address"),
        ("99999", "not an address"),
        ("0.0.0.0:1", "--metrics-allow-remote"),
        ("[::]:1", "--metrics-allow-remote"),
        ("", "--metrics"),
    ] {
        refused(
            &["run", "--metrics", v, "--", "true"],
            &["--metrics", needle],
        );
    }
    refused(&["run", "--metrics", "0", "--linger", "-1"], &["--linger"]);
    refused(&["run", "--linger", "3"], &["--metrics"]);
    refused(&["run", "--metrics-allow-remote"], &["--metrics"]);
}

#[test]
fn check_refuses_bad_patterns_and_unwritable_reports() {
    let f = Files::new();
    for (v, needle) in [
        ("", "empty"),
        ("[", "not a valid pattern"),
        ("zfs/*", "zfs/*"),
    ] {
        refused(&["check", "--scenarios", v], &["--scenarios", needle]);
    }
    refused(&["check", "--attach", "kretprobe"], &["--attach"]);
    let dir = f.dir.path().to_str().unwrap().to_owned();
    for (path, what) in [
        (f.s("no/such/dir/x.xml"), "does not exist"),
        (dir.clone(), "is a directory"),
        ("/proc/x.xml".to_owned(), "cannot create a file in /proc"),
    ] {
        refused(&["check", "--quick", "--junit", &path], &["--junit", what]);
    }
    for (path, what) in [
        (f.s("plain"), "not a directory"),
        ("/proc".to_owned(), "cannot create a file there"),
    ] {
        refused(&["check", "--quick", "--out", &path], &["--out", what]);
    }
}

#[test]
fn engine_refuses_negative_and_huge_values_naming_the_flag() {
    let f = Files::new();
    let target = f.s("t.dat");
    for (flag, values) in [
        ("--bs", &["-4k", "0", "99999999999999999999", "4q", ""][..]),
        ("--size", &["-1", "0x", "1e", ""][..]),
        ("--runtime", &["-1", "soon", "-5s"][..]),
        ("--numjobs", &["-1", "0", "99999999999"][..]),
        ("--iodepth", &["-1", "0", "99999999"][..]),
        ("--iodepth-batch", &["-1", "0"][..]),
        ("--iovecs", &["-1", "99999999999"][..]),
        ("--rwmixread", &["-1", "101", "x"][..]),
        ("--seed", &["-1", "x", "99999999999999999999999"][..]),
        ("--fork-interval", &["-1", "never"][..]),
        ("--mode", &["mmap"][..]),
        ("--buffer", &["gpu"][..]),
    ] {
        for v in values {
            let mut args = vec!["engine", "--filename", &target, "--rw", "write"];
            if flag != "--size" {
                args.extend(["--size", "1m"]);
            }
            args.extend([flag, v]);
            refused(&args, &[flag]);
        }
    }
    assert!(!Path::new(&target).exists(), "nothing was written");
    refused(
        &[
            "engine",
            "--filename",
            &f.s("no/such/dir/t.dat"),
            "--rw",
            "write",
            "--size",
            "1m",
        ],
        &["no/such/dir"],
    );
    refused(&["engine", "--filename", &f.s("missing")], &["missing"]);
}

#[test]
fn doctor_and_unknown_commands() {
    refused(&["doctor", "--json=3"], &["--json"]);
    refused(&["doctor", "--frobnicate"], &["--frobnicate"]);
    refused(&["frobnicate"], &["frobnicate"]);
    refused(&["zoo", "run", "nothing"], &["nothing"]);
}
