//! `run -p PID`: the probes watch only that process. Another process's
//! Direct I/O beside it must reach neither the ring buffer nor the books,
//! while the watched process's pins are released in whatever context its
//! I/O completes (interrupts, kworkers) and must still be seen released.

use super::{bin, kernel_version, LoopDev};
use serde_json::Value;
use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn pid_filters_in_the_kernel_and_the_run_ends_with_the_process() {
    let dev = LoopDev::new(16 << 20);
    let path = dev.path.to_str().unwrap().to_owned();
    let go = PathBuf::from(format!("/tmp/pid-filter-go-{}", std::process::id()));
    let stop = PathBuf::from(format!("/tmp/pid-filter-stop-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let _ = std::fs::remove_file(&stop);
    // The watched process: waits for the probes, then one 8 MiB read in 1 MiB
    // preads (exec keeps its pid), then exits.
    let mut target = Command::new("sh")
        .args([
            "-c",
            &format!(
                "while [ ! -e {g} ]; do sleep 0.1; done; \
                 exec dd if={path} of=/dev/null bs=1M count=8 iflag=direct",
                g = go.display()
            ),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = target.id().to_string();
    let mut agent = Command::new(bin())
        .args(["run", "--json", "--ringbuf-mib", "64", "-p", &pid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = agent.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("pintrace: watching pid") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Start-up (loading and verifying the probes) takes minutes under TCG.
    let attached = rx.recv_timeout(Duration::from_secs(600)).is_ok();
    // Noise: O_DIRECT reads by another process for the rest of the run.
    let mut noise = Command::new("sh")
        .args([
            "-c",
            &format!(
                "while [ ! -e {s} ]; do dd if={path} of=/dev/null bs=64k iflag=direct 2>/dev/null; done",
                s = stop.display()
            ),
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&go, b"").unwrap();
    let started = Instant::now();
    let out = agent.wait_with_output().unwrap();
    let waited = started.elapsed();
    std::fs::write(&stop, b"").unwrap();
    let _ = noise.wait();
    let _ = std::fs::remove_file(&stop);
    let _ = target.wait();
    let _ = std::fs::remove_file(&go);
    let stderr = reader.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{stderr}");
    assert!(attached, "pintrace never said it was watching: {stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The run ended by itself when the process exited (a zombie until this
    // test reaps it).
    assert!(waited < Duration::from_secs(120), "{waited:?}");
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let s = lines
        .iter()
        .rev()
        .find(|v| v["type"] == "summary")
        .expect("a summary");
    assert_eq!(s["lossless"], true, "{s}");
    assert_eq!(s["failures"], 0, "{s}");
    assert_eq!(s["filtered_in_kernel"], format!("pid {pid}"), "{s}");
    // The books hold the watched process alone: its 2048 pages (exec's
    // argument pages aside, taken before the filter saw dd), none of the
    // noise's, which read the device over and over meanwhile.
    let processes = s["processes"].as_array().unwrap();
    assert!(
        processes
            .iter()
            .all(|p| p["tgid"].as_u64() == Some(target.id() as u64)),
        "{processes:?}"
    );
    let converted = kernel_version() >= (6, 5);
    let kind = if converted { "pin" } else { "get" };
    let fast = if converted {
        "pin_user_pages_fast"
    } else {
        "get_user_pages_fast"
    };
    let me = &processes[0];
    assert_eq!(me["by_site"][fast]["pages"], 2048, "{me}");
    let other_pages = s["by_kind"][kind]["pages"].as_u64().unwrap()
        - me["by_kind"][kind]["pages"].as_u64().unwrap_or(0);
    assert_eq!(
        other_pages, 0,
        "the system-wide books saw another process: {s}"
    );
    // Its pins all came back, whichever context released them.
    assert_eq!(me["released"][kind], 2048, "{me}");
    if converted {
        assert_eq!(s["releases"]["pin_refs"], 2048, "{s}");
    }
    if converted {
        assert_eq!(s["outstanding"]["pin"], 0, "{s}");
        // The noise did pin pages meanwhile: the kernel's own counters,
        // system-wide, saw more than the books.
        let acquired = s["vmstat"]["delta"]["acquired"].as_u64().unwrap();
        assert!(acquired > 2048, "no other pins during the watch: {s}");
    }
}
