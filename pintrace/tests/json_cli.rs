//! Every JSON object pintrace writes carries the schema version, and a
//! command that writes JSON writes an error object there when it cannot
//! run (exit 2): to stdout, or to `run -o FILE`.

use serde_json::Value;
use std::process::{Command, Output};

fn pintrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args(args)
        .output()
        .unwrap()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The one error object in `text` (its only line), checked field by field.
fn error_object(text: &str, command: &str) -> Value {
    let v = lines(text);
    assert_eq!(v.len(), 1, "{text}");
    let e = v.into_iter().next().unwrap();
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["schema"], 1, "{e}");
    assert_eq!(e["code"], 2, "{e}");
    assert_eq!(e["command"], command, "{e}");
    assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
    e
}

#[test]
fn check_list_lines_carry_the_schema() {
    let out = pintrace(&["check", "--list", "--json", "--scenarios", "sg"]);
    assert_eq!(out.status.code(), Some(0));
    let v = lines(&String::from_utf8_lossy(&out.stdout));
    assert!(v.len() > 3);
    for l in v {
        assert_eq!(
            (l["schema"].as_u64(), l["type"].as_str()),
            (Some(1), Some("scenario")),
            "{l}"
        );
    }
}

#[test]
fn check_that_cannot_run_writes_the_error_object_on_stdout() {
    let out = pintrace(&["check", "--json", "--scenarios", "zfs/*"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let e = error_object(&String::from_utf8_lossy(&out.stdout), "check");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("zfs/*") && stderr.contains(message),
        "{e} / {stderr}"
    );
    // Without --json, stdout stays empty.
    let out = pintrace(&["check", "--scenarios", "zfs/*"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn check_json_report_file_carries_the_schema_when_check_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    // Without root (or on a kernel that cannot trace) check cannot run; as
    // root on a kernel that can, a scenario pattern for no target of this
    // machine keeps it short: either way check.json is written.
    let out = Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args([
            "check",
            "--json",
            "--scenarios",
            "nvme/psync/anon/read",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("check.json")).unwrap())
            .unwrap();
    assert_eq!(report["schema"], 1, "{report}");
    assert_eq!(report["type"], "check", "{report}");
    if out.status.code() == Some(2) {
        let e = error_object(&String::from_utf8_lossy(&out.stdout), "check");
        assert_eq!(e["message"], report["error"], "{e} / {report}");
    }
}

#[test]
fn run_writes_the_error_object_to_its_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.json");
    let missing = dir.path().join("missing.ptrec");
    let out = Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args(["run", "--json", "-o"])
        .arg(&file)
        .arg("--replay")
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "the JSON goes to -o FILE");
    let e = error_object(&std::fs::read_to_string(&file).unwrap(), "run");
    assert!(
        e["message"].as_str().unwrap().contains("missing.ptrec"),
        "{e}"
    );
}

#[test]
fn run_json_lines_carry_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dio-6.12-1m.ptrec");
    let out = pintrace(&["run", "--json", "--events", "--replay", path]);
    assert_eq!(out.status.code(), Some(0));
    let v = lines(&String::from_utf8_lossy(&out.stdout));
    let types: std::collections::BTreeSet<&str> =
        v.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert!(
        types.contains("summary") && types.contains("acquire"),
        "{types:?}"
    );
    for l in &v {
        assert_eq!(l["schema"], 1, "{l}");
    }
}

#[test]
fn doctor_json_carries_the_schema() {
    let out = pintrace(&["doctor", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0 | 1) => {
            let v = lines(&stdout);
            assert_eq!(v.len(), 1, "{stdout}");
            assert_eq!(
                (v[0]["schema"].as_u64(), v[0]["type"].as_str()),
                (Some(1), Some("doctor"))
            );
        }
        _ => {
            error_object(&stdout, "doctor");
        }
    }
}

#[test]
fn bad_arguments_with_json_write_the_error_object() {
    let out = pintrace(&["run", "--json", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let e = error_object(&String::from_utf8_lossy(&out.stdout), "run");
    assert!(
        e["message"].as_str().unwrap().contains("--no-such-flag"),
        "{e}"
    );
    // --help is not an error.
    let out = pintrace(&["run", "--json", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"type\":\"error\""));
}

#[test]
fn engine_json_carries_the_schema_and_its_error_object() {
    // O_DIRECT needs a disk file system, not the tmpfs /tmp may be.
    let base = std::env::var_os("PINTRACE_TEST_DIR").unwrap_or("/var/tmp".into());
    let dir = tempfile::tempdir_in(base).unwrap();
    let missing = dir.path().join("nope");
    let out = Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args(["engine", "--json", "--rw", "read", "--filename"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = error_object(&String::from_utf8_lossy(&out.stdout), "engine");
    assert!(
        e["message"].as_str().unwrap().contains("does not exist"),
        "{e}"
    );
    let file = dir.path().join("f");
    let out = Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args([
            "engine",
            "--json",
            "--rw",
            "write",
            "--size",
            "256k",
            "--create",
            "--filename",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["schema"], 1, "{v}");
}

/// fio's spellings on the command line, and fio 3.x's figures in the JSON.
#[test]
fn engine_takes_fios_spellings_and_writes_fios_latency_block() {
    let base = std::env::var_os("PINTRACE_TEST_DIR").unwrap_or("/var/tmp".into());
    let dir = tempfile::tempdir_in(base).unwrap();
    let file = dir.path().join("f");
    let out = Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .arg("engine")
        .arg(format!("--filename={}", file.display()))
        .args([
            "--ioengine=pvsync2",
            "--direct=1",
            "--rw=write",
            "--bs=64k",
            "--size=1m",
            "--iodepth=1",
            "--numjobs=1",
            "--create",
            "--output-format=json",
            "--percentile-list=50:99:99.9",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            v["settings"]["mode"].as_str(),
            v["settings"]["direct"].as_bool()
        ),
        (Some("pvsync"), Some(true))
    );
    let w = &v["jobs"][0]["write"];
    assert_eq!(
        (
            w["io_bytes"].as_u64(),
            w["io_kbytes"].as_u64(),
            w["total_ios"].as_u64()
        ),
        (Some(1 << 20), Some(1024), Some(16)),
        "{w}"
    );
    assert!(
        w["bw"].as_u64().unwrap() > 0 && w["iops"].as_f64().unwrap() > 0.0,
        "{w}"
    );
    let clat = &w["clat_ns"];
    let keys: Vec<&String> = clat["percentile"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["50.000000", "99.000000", "99.900000"], "{clat}");
    let (min, max) = (clat["min"].as_u64().unwrap(), clat["max"].as_u64().unwrap());
    let p99 = clat["percentile"]["99.000000"].as_u64().unwrap();
    assert!(min > 0 && min <= p99 && p99 <= max + max / 500, "{clat}");
    assert_eq!(v["jobs"][0]["read"]["io_bytes"], 0);
    // Bad values name the flag.
    for (arg, flag) in [
        ("--direct=2", "--direct"),
        ("--percentile-list=99:0", "--percentile-list"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pintrace"))
            .args(["engine", "--rw=read", arg, "--filename"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {stderr}");
        assert!(stderr.contains(flag), "{arg}: {stderr}");
    }
}
