//! `pintrace top --replay` driven in a real terminal (a private tmux
//! server): keys typed, the screen read back, the terminal restored on quit.
//! Skipped with a reason when tmux is not installed.

use pintrace::{
    kernel::flags::FollFlags,
    synth::{demo, MS},
    trace::record::{Header, Recorder},
};
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("running tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        assert!(self.run(&args).status.success());
    }

    /// Waits (bounded) until the screen shows `what`.
    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(Instant::now() < deadline, "`{what}` never showed:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn recording(dir: &Path) -> PathBuf {
    let path = dir.join("demo.ptrec");
    let start = 5_000 * MS;
    let s = demo(start, 4);
    let header = Header {
        start_ns: start,
        start_unix_ms: 0,
        flags: FollFlags::FROM_6_3,
        kernel: "6.12.0-synthetic".into(),
        plan: "pin_user_pages_fast=fexit gup_put_folio=fentry".into(),
    };
    let mut r = Recorder::create(&path, &header).unwrap();
    for (ts, rec) in &s.records {
        r.record(*ts, rec).unwrap();
    }
    r.stack(
        13,
        vec![
            "pin_user_pages_fast+0x0/0x60".into(),
            "leaky_ioctl+0x2a/0x90".into(),
        ],
    )
    .unwrap();
    r.finish(s.ts + 100 * MS).unwrap();
    path
}

#[test]
fn top_replays_in_a_terminal_and_answers_keys() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path());
    let rc = dir.path().join("rc");
    let script = format!(
        "{} top --interval 0.1 --speed 8 --replay {}; echo \"exit=$?\" > {}; stty -a; sleep 60",
        env!("CARGO_BIN_EXE_pintrace"),
        path.display(),
        rc.display()
    );
    let tmux = Tmux {
        socket: format!("pintrace-test-{}", std::process::id()),
    };
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "100",
        "-y",
        "30",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = tmux.wait_for("end of recording");
    assert!(
        s.contains("pintrace top") && s.contains("6.12.0-synthetic"),
        "{s}"
    );
    assert!(
        s.contains("leaky") && s.contains("vfio-user") && s.contains("dd"),
        "{s}"
    );
    // At the end, the leaked pins are reported as `run --replay` does.
    assert!(s.contains("LEAK") && s.contains("MISMATCH"), "{s}");
    tmux.keys(&["s"]);
    tmux.wait_for("sort rate");
    tmux.keys(&["/", "l", "e", "a", "k", "Enter"]);
    let s = tmux.wait_for("filter /leak");
    assert!(!s.contains("vfio-user "), "filtered out:\n{s}");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("holders of 150 (leaky) by stack");
    assert!(s.contains("leaky_ioctl"), "{s}");
    tmux.keys(&["Escape", "Tab", "Down"]);
    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rc.exists() {
        assert!(
            Instant::now() < deadline,
            "top did not quit:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "exit=0");
    // Restored: the normal screen is back and the terminal is in canonical mode.
    let s = tmux.wait_for("icanon");
    assert!(!s.contains("-icanon"), "still raw:\n{s}");
    assert!(!s.contains("pintrace top │"), "the dashboard is gone:\n{s}");
}

/// `top` ended from outside (SIGTERM, SIGINT sent by another process,
/// SIGHUP) leaves the terminal as it found it. (SIGKILL cannot be caught:
/// `reset` is the remedy there.)
#[test]
fn top_killed_by_a_signal_restores_the_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = recording(dir.path());
    for sig in ["TERM", "INT", "HUP"] {
        let rc = dir.path().join(format!("rc-{sig}"));
        let pid = dir.path().join(format!("pid-{sig}"));
        // The recording at a tenth of its pace: still running when killed.
        let script = format!(
            "sh -c 'echo $$ > {pid}; exec {bin} top --interval 0.1 --speed 0.1 --replay {rec}'; \
             echo \"exit=$?\" > {rc}; stty -a; sleep 60",
            pid = pid.display(),
            bin = env!("CARGO_BIN_EXE_pintrace"),
            rec = path.display(),
            rc = rc.display()
        );
        let tmux = Tmux {
            socket: format!("pintrace-test-{}-{sig}", std::process::id()),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "100",
            "-y",
            "30",
            "sh",
            "-c",
            &script,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux.wait_for("pintrace top │");
        let pid = std::fs::read_to_string(&pid).unwrap();
        let kill = Command::new("kill")
            .args([&format!("-{sig}"), pid.trim()])
            .status()
            .unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !rc.exists() {
            assert!(
                Instant::now() < deadline,
                "SIG{sig}: top did not end:\n{}",
                tmux.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            std::fs::read_to_string(&rc).unwrap().trim(),
            "exit=0",
            "SIG{sig}"
        );
        let s = tmux.wait_for("icanon");
        assert!(!s.contains("-icanon"), "SIG{sig}: still raw:\n{s}");
        assert!(
            !s.contains("pintrace top │"),
            "SIG{sig}: the dashboard stayed:\n{s}"
        );
    }
}
