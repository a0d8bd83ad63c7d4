//! `run --replay` and `--metrics` on recordings made here from synthetic
//! event streams: no root, no kernel.

use pintrace::{
    kernel::flags::FollFlags,
    synth::{demo, MS},
    trace::record::{Header, Recorder},
};
use serde_json::Value;
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

fn pintrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pintrace"))
}

/// A recording at `path` of the demo workload over `seconds`, with the
/// frames of its stack 13; `frames` of None gives it one frame.
fn record_demo(path: &Path, seconds: u64, frames: Option<&[&str]>) {
    let start = 5_000 * MS;
    let s = demo(start, seconds);
    let header = Header {
        start_ns: start,
        start_unix_ms: 1_700_000_000_000,
        flags: FollFlags::FROM_6_3,
        kernel: "6.12.0-synthetic".into(),
        plan: "pin_user_pages_fast=fexit gup_put_folio=fentry".into(),
    };
    let mut r = Recorder::create(path, &header).unwrap();
    for (ts, rec) in &s.records {
        r.record(*ts, rec).unwrap();
    }
    let frames = frames.unwrap_or(&["pin_user_pages_fast+0x0/0x60"]);
    r.stack(13, frames.iter().map(|f| f.to_string()).collect())
        .unwrap();
    r.finish(s.ts + 100 * MS).unwrap();
}

/// A recording of the demo workload over `seconds`.
fn recording(dir: &Path, seconds: u64) -> PathBuf {
    let path = dir.join("demo.ptrec");
    record_demo(&path, seconds, None);
    path
}

fn summary(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find(|l| l.contains("\"type\":\"summary\""))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn run_replays_a_recording_without_a_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path(), 2);
    let out = pintrace()
        .args(["run", "--json", "--replay"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The leak and the mismatch fail the run.
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let s = summary(&stdout);
    assert_eq!(s["kernel"], "6.12.0-synthetic");
    assert_eq!(s["by_kind"]["pin"]["pages"], 20 * 256 + 2);
    assert_eq!(s["releases"]["pin_refs"], 20 * 256 + 1);
    assert_eq!(s["pin_lifetime"]["count"], 20 * 256);
    let p50 = s["pin_lifetime"]["p50_us"].as_f64().unwrap();
    assert!((1990.0..=2010.0).contains(&p50), "{p50}");
    assert_eq!(s["outstanding"]["pin"], 2);
    // Two pins leaked (one finding per folio) and one unpin of a FOLL_GET page.
    assert_eq!(s["findings"], 3, "{stdout}");
    // Findings carry the recorded stacks.
    let leak: Value = stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"finding\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|f| f["kind"] == "leak_at_end")
        .expect("the leak");
    assert_eq!(leak["stack"][0], "pin_user_pages_fast+0x0/0x60");
    assert_eq!(leak["tgid"], 150);
}

#[test]
fn damaged_recordings_name_the_file_and_offset_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path(), 1);
    let data = std::fs::read(&path).unwrap();
    // Truncated mid-entry: the records before are replayed, then exit 2.
    std::fs::write(&path, &data[..data.len() - 7]).unwrap();
    let out = pintrace()
        .args(["run", "--json", "--replay"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("demo.ptrec")
            && stderr.contains("truncated entry")
            && stderr.contains("at byte offset"),
        "{stderr}"
    );
    summary(&String::from_utf8_lossy(&out.stdout));
    // Not a recording at all.
    std::fs::write(&path, b"hello").unwrap();
    let out = pintrace()
        .args(["run", "--replay"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("demo.ptrec") && stderr.contains("(bad magic) at byte offset 0"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn replay_flags_are_checked() {
    for (args, needle) in [
        (&["run", "--speed", "2"][..], "--replay"),
        (&["run", "--replay", "x", "--speed", "fast"][..], "--speed"),
        (&["run", "--replay", "x", "--record", "y"][..], "--record"),
        (&["run", "--replay", "x", "--", "true"][..], "--replay"),
        (&["run", "--linger", "3"][..], "--metrics"),
        (&["top", "--interval", "0"][..], "--interval"),
        (
            &["top", "--replay", "/nonexistent.ptrec"][..],
            "/nonexistent.ptrec",
        ),
        (
            &["run", "--replay", "x", "--metrics", "0.0.0.0:0"][..],
            "--metrics-allow-remote",
        ),
    ] {
        let out = pintrace().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split("\r\n\r\n").nth(1).unwrap().to_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
        .parse()
        .unwrap()
}

/// A scrape after the summary (the run lingers) returns the documented
/// names with the summary's values.
#[test]
fn metrics_match_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path(), 2);
    let mut child = pintrace()
        .args([
            "run",
            "--json",
            "--metrics",
            "127.0.0.1:0",
            "--linger",
            "60",
            "--replay",
        ])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("pintrace: metrics at http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let s = loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "no summary");
        if l.contains("\"type\":\"summary\"") {
            break serde_json::from_str::<Value>(&l).unwrap();
        }
    };
    let text = scrape(&addr);
    // SAFETY: kill sends SIGTERM to the child we started; it ends the linger.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let num = |v: &Value| v.as_f64().unwrap();
    for (name, want) in [
        (
            "pintrace_pages_acquired_total{kind=\"pin\"}",
            &s["by_kind"]["pin"]["pages"],
        ),
        (
            "pintrace_pages_acquired_total{kind=\"get\"}",
            &s["by_kind"]["get"]["pages"],
        ),
        (
            "pintrace_acquire_calls_total{kind=\"pin\"}",
            &s["by_kind"]["pin"]["calls"],
        ),
        (
            "pintrace_refs_released_total{kind=\"pin\"}",
            &s["releases"]["pin_refs"],
        ),
        ("pintrace_release_calls_total", &s["releases"]["calls"]),
        (
            "pintrace_outstanding_refs{kind=\"pin\"}",
            &s["outstanding"]["pin"],
        ),
        (
            "pintrace_outstanding_refs{kind=\"get\"}",
            &s["outstanding"]["get"],
        ),
        ("pintrace_findings_total", &s["findings"]),
        ("pintrace_finding_failures_total", &s["failures"]),
        ("pintrace_events_total", &s["events"]),
        (
            "pintrace_block_requests_completed_total",
            &s["completions"]["requests"],
        ),
        ("pintrace_pin_lifetimes_total", &s["pin_lifetime"]["count"]),
        ("pintrace_uptime_seconds", &s["duration_s"]),
        (
            "pintrace_stacks_total{outcome=\"taken\"}",
            &s["stacks"]["taken"],
        ),
    ] {
        assert_eq!(metric(&text, name), num(want), "{name}");
    }
    // Pin lifetimes: a histogram (cumulative buckets, +Inf the count)
    // that agrees with the summary's count and its p99.
    let count = num(&s["pin_lifetime"]["count"]);
    assert!(count > 0.0);
    assert_eq!(metric(&text, "pintrace_pin_lifetime_seconds_count"), count);
    assert!(metric(&text, "pintrace_pin_lifetime_seconds_sum") > 0.0);
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("pintrace_pin_lifetime_seconds_bucket{le=\""))
        .map(|l| {
            let (le, n) = l.split_once("\"} ").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, n.parse().unwrap())
        })
        .collect();
    assert_eq!(buckets.len(), 9, "{text}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{buckets:?}"
    );
    assert_eq!(buckets.last().unwrap().1, count);
    let p99_s = num(&s["pin_lifetime"]["p99_us"]) / 1e6;
    let at_p99 = buckets.iter().find(|(le, _)| *le >= p99_s).unwrap().1;
    assert!(
        at_p99 >= 0.99 * count,
        "{at_p99} of {count} at or below {p99_s} s"
    );
    assert!(!text.contains("quantile="), "{text}");
    assert!(text.contains("pintrace_info{kernel=\"6.12.0-synthetic\""));
    assert_eq!(num(&s["by_kind"]["pin"]["pages"]), (20 * 256 + 2) as f64);
}

/// A real capture: one 1 MiB O_DIRECT read from a loop device (busybox dd),
/// recorded in the 6.12 guest with `pintrace run --record`.
#[test]
fn a_real_capture_replays_balanced() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dio-6.12-1m.ptrec");
    let out = pintrace()
        .args(["run", "--json", "--replay", path])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let s = summary(&stdout);
    assert!(s["kernel"].as_str().unwrap().starts_with("6.12."), "{s}");
    assert!(s["plan"]
        .as_str()
        .unwrap()
        .contains("pin_user_pages_fast=fexit"));
    let dd = s["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == "dd")
        .expect("the reader");
    assert_eq!(dd["by_kind"]["pin"]["pages"], 256);
    assert_eq!(s["releases"]["pin_refs"], 256);
    assert_eq!(s["pin_lifetime"]["count"], 256);
    assert_eq!(s["outstanding"]["pin"], 0);
    assert_eq!(
        (s["findings"].as_u64(), s["lossless"].as_bool()),
        (Some(0), Some(true))
    );
}

/// With `--pid`, the per-kind table (every process's: the books cover
/// them all) says it is not filtered, and the process table is.
#[test]
fn a_pid_filter_labels_the_per_kind_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path(), 1);
    let out = pintrace()
        .args(["run", "--pid", "150", "--replay"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("acquired as, every process (system-wide; not filtered by pid 150):"),
        "{text}"
    );
    assert!(text.contains("processes matching pid 150: 1"), "{text}");
    let out = pintrace()
        .args(["run", "--replay"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("system-wide") && !text.contains("matching"),
        "{text}"
    );
}

/// The table of the stacks holding references at the end: the demo's
/// leaked pins (stack 13) and FOLL_GET references (stack 12), in JSON and
/// as text with their frames; the recorded probe frames are dropped, as a
/// live run drops them.
#[test]
fn the_summary_tables_the_stacks_holding_references() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stacks.ptrec");
    let frames = [
        "bpf_prog_50dd19e3348aa70f_fexit_pin_user_pages_fast+0x18c",
        "bpf_trampoline_6442489887+0x7c",
        "pin_user_pages_fast+0x9",
        "leaky_ioctl+0x2a [leaky]",
    ];
    record_demo(&path, 2, Some(&frames));

    let out = pintrace()
        .args(["run", "--json", "--replay"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sum = summary(&stdout);
    let rows = sum["top_stacks"].as_array().expect("an array");
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| r["stack_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [12, 13], "most references first: {sum}");
    let leak = &rows[1];
    assert_eq!(
        (leak["refs"].as_u64(), leak["folios"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(leak["processes"][0]["comm"], "leaky");
    assert_eq!(
        leak["frames"],
        serde_json::json!(["pin_user_pages_fast+0x9", "leaky_ioctl+0x2a [leaky]"])
    );
    assert_eq!(rows[0]["by_kind"]["get"], rows[0]["refs"]);
    // Every reference outstanding is in the table.
    let held: u64 = rows.iter().map(|r| r["refs"].as_u64().unwrap()).sum();
    let outstanding: u64 = ["pin", "longterm_pin", "get"]
        .iter()
        .map(|k| sum["outstanding"][k].as_u64().unwrap())
        .sum();
    assert_eq!(held, outstanding, "{sum}");

    let text = |args: &[&str]| {
        let out = pintrace()
            .args(["run", "--replay"])
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let t = text(&["--top-stacks", "1", "--top-stacks-sort", "age"]);
    assert!(
        t.contains("top stacks holding references:")
            && t.contains("from stack 12:\n        (stack 12 not available)\n")
            && t.contains("... and 1 more stack(s): 2 reference(s) in 2 holder(s)"),
        "{t}"
    );
    let t = text(&[]);
    assert!(
        t.contains(
            "2 reference(s) (FOLL_PIN 2) in 2 holder(s) on 2 folio(s) by leaky/150, oldest 110 ms, median 110 ms, from stack 13:\n        pin_user_pages_fast+0x9\n        leaky_ioctl+0x2a [leaky]\n"
        ),
        "{t}"
    );
    assert!(!t.contains("bpf_"), "{t}");
    assert!(!text(&["--top-stacks", "0"]).contains("top stacks"));
}

/// `--vmlinux` names a file it cannot read, before any work (exit 2);
/// frames the file has no line for keep their text.
#[test]
fn vmlinux_is_checked_and_optional() {
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path(), 1);
    let missing = dir.path().join("vmlinux");
    let out = pintrace()
        .args(["run", "--replay"])
        .arg(&path)
        .arg("--vmlinux")
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--vmlinux") && stderr.contains(&*missing.to_string_lossy()),
        "{stderr}"
    );
    // A file with debug info but none of these functions: the frames as recorded.
    let out = pintrace()
        .args(["run", "--json", "--replay"])
        .arg(&path)
        .arg("--vmlinux")
        .arg(env!("CARGO_BIN_EXE_pintrace"))
        .output()
        .unwrap();
    let s = summary(&String::from_utf8_lossy(&out.stdout));
    let leak = s["top_stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["stack_id"] == 13)
        .cloned()
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(leak["frames"][0], "pin_user_pages_fast+0x0/0x60");
}
