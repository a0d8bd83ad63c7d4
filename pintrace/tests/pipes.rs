//! Every command that prints, with its stdout a pipe whose reader is gone
//! (`pintrace ... | head -1`): it must end quietly, exit 0, with no panic
//! and no backtrace. Runs on the host: no kernel features needed.

use std::{
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    process::{Command, Output, Stdio},
};

const CAPTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dio-6.12-1m.ptrec");

/// A pipe's write end, its read end already closed.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two descriptors it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just made and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

fn into_closed_pipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args(args)
        .env("PINTRACE_LOG", "off")
        .stdout(Stdio::from(closed_pipe()))
        .output()
        .unwrap()
}

fn ends_quietly(args: &[&str]) {
    quiet(args, &into_closed_pipe(args));
}

fn quiet(args: &[&str], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{args:?}: {stderr}"
    );
    assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
}

#[test]
fn listing_and_reports_end_quietly() {
    ends_quietly(&["check", "--list"]);
    ends_quietly(&["run", "--replay", CAPTURE]);
    ends_quietly(&["run", "--replay", CAPTURE, "--json"]);
    ends_quietly(&["run", "--replay", CAPTURE, "--json", "--events"]);
    ends_quietly(&["run", "--replay", CAPTURE, "-i", "10ms"]);
    ends_quietly(&["doctor"]);
    ends_quietly(&["doctor", "--json"]);
}

#[test]
fn the_engine_ends_quietly() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.dat");
    let file = file.to_str().unwrap();
    for json in [false, true] {
        let mut args = vec![
            "engine", "-f", file, "--rw", "write", "--size", "64k", "--create",
        ];
        if json {
            args.push("--json");
        }
        let out = into_closed_pipe(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("O_DIRECT") {
            eprintln!("skipped: no O_DIRECT in {}: {stderr}", dir.display());
            break;
        }
        quiet(&args, &out);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_that_stops_after_one_line() {
    // `| head -1`: the first lines are read, then the pipe closes.
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args(["run", "--replay", CAPTURE, "--json", "--events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
