//! Integration tests of `pintrace engine`'s reports: the JSON object, the
//! text report, an interrupted run, a verified mix over several passes.

mod engine_util;

use engine_util::{engine, stderr, TempDir};
use std::fs;
use std::process::Command;

#[test]
fn json_report_is_one_object() {
    let dir = TempDir::new("json");
    let p = dir.path("data");
    let out = engine(&[
        "--filename",
        p.to_str().unwrap(),
        "--rw",
        "randrw",
        "--rwmixread",
        "70",
        "--size",
        "8m",
        "--mode",
        "io_uring",
        "--iodepth",
        "16",
        "--numjobs",
        "2",
        "--runtime",
        "500ms",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["settings"]["mode"], "io_uring");
    // Set-up I/O is reported apart: the layout (8 x 1 MiB) and one probe read.
    let setup = &v["target"]["setup_io"];
    assert_eq!(
        (setup["writes"].as_u64(), setup["write_bytes"].as_u64()),
        (Some(8), Some(8 << 20))
    );
    assert_eq!(setup["reads"], 1);
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(v["jobs"][1]["region_offset"], 4 << 20);
    for d in ["read", "write"] {
        let t = &v["total"][d];
        assert!(t["iops"].as_f64().unwrap() > 0.0, "{d}");
        let lat = &t["lat_ns"];
        let (p50, p99, p999) = (
            lat["p50"].as_u64().unwrap(),
            lat["p99"].as_u64().unwrap(),
            lat["p99.9"].as_u64().unwrap(),
        );
        assert!(p50 > 0 && p50 <= p99 && p99 <= p999, "{lat}");
    }
    let ms = v["total"]["elapsed_ms"].as_f64().unwrap();
    assert!((450.0..3000.0).contains(&ms), "{ms}");
    assert!(!p.exists(), "created file removed");
}

#[test]
fn text_report_and_keep() {
    let dir = TempDir::new("text");
    let p = dir.path("data");
    let out = engine(&[
        "--filename",
        p.to_str().unwrap(),
        "--rw",
        "write",
        "--size",
        "1m",
        "--bs",
        "128k",
        "--keep",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "write: IOPS=",
        "BW=",
        "lat percentiles (usec): p50=",
        "p99.9=",
        "file on",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20, "kept");
}

#[test]
fn interrupt_stops_cleanly_and_cleans_up() {
    let dir = TempDir::new("sigint");
    let p = dir.path("data");
    let child = Command::new(engine_util::BIN)
        .args([
            "engine",
            "--filename",
            p.to_str().unwrap(),
            "--rw",
            "randrw",
            "--size",
            "4m",
        ])
        .args([
            "--runtime",
            "60",
            "--mode",
            "io_uring",
            "--iodepth",
            "4",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !p.exists() && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed().as_secs() < 30, "stopped at the signal");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interrupted"], true);
    assert!(v["total"]["read"]["ios"].as_u64().unwrap() > 0);
    assert!(!p.exists(), "created file removed after the interrupt");
}

#[test]
fn sequential_mix_with_verify_over_several_passes() {
    let dir = TempDir::new("rwmix");
    let p = dir.path("data");
    for mode in ["psync", "aio"] {
        let out = engine(&[
            "--filename",
            p.to_str().unwrap(),
            "--rw",
            "rw",
            "--rwmixread",
            "30",
            "--size",
            "256k",
            "--bs",
            "4k",
            "--mode",
            mode,
            "--iodepth",
            "8",
            "--runtime",
            "400ms",
            "--verify",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["jobs"][0]["passes"].as_u64().unwrap() > 1,
            "{mode}: several passes"
        );
        assert_eq!(v["verify"]["failures"], 0);
        assert!(v["verify"]["blocks_checked"].as_u64().unwrap() > 64);
    }
}
