//! `cargo xtask flake`: how often guests die of the emulator rather than of
//! the kernel. Boots the kernel bare and runs one guest test, each in a
//! guest of its own and without retries, optionally with a compile loading
//! the host, and counts the deaths by cause (a stale patch of kernel text,
//! anything else).

use crate::console;
use crate::initramfs::Payload;
use crate::qemu::{BootOpts, Outcome};
use crate::util::{self, Workspace};
use crate::vm::{self, GuestOpts};
use anyhow::Result;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The test that switches probes (and the static branches under them) on
/// while Direct I/O runs on the other vCPU.
const DEFAULT_TEST: &str = "robust::a_start_during_direct_io_finds_nothing_wrong";

#[derive(clap::Args, Debug)]
pub struct FlakeArgs {
    /// Bare boots (the payload is `true`).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub boots: u32,
    /// Runs of the guest test, a guest each.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub runs: u32,
    /// The guest test (a name of `pintrace/tests/guest.rs`).
    #[arg(long, default_value = DEFAULT_TEST, value_name = "NAME")]
    pub test: String,
    /// 6.1, 6.12 or the path of a bzImage.
    #[arg(long, default_value = "6.12", value_name = "6.1|6.12|PATH")]
    pub kernel: String,
    /// Keep one host core busy with a compile (a release build of xtask,
    /// `-j 1`, again and again) while the guests run.
    #[arg(long)]
    pub load: bool,
    /// Boot again after a stale patch as every guest command does
    /// (`--retries`, and with `--tcg-thread auto` on one thread): counts the
    /// runs that fail in the end. Without it no death is retried.
    #[arg(long)]
    pub with_retries: bool,
    #[command(flatten)]
    pub boot: BootOpts,
}

#[derive(Default)]
struct Tally {
    passed: u32,
    stale: Vec<String>,
    other: Vec<String>,
    secs: f64,
}

impl Tally {
    fn add(&mut self, o: &Outcome) {
        self.secs += o.total_time.as_secs_f64();
        if o.verdict.passed() {
            self.passed += 1;
        } else if let Some(p) = console::stale_patch(&o.console) {
            self.stale.push(format!("{p} [{}]", o.log.display()));
        } else {
            self.other
                .push(format!("{} [{}]", o.verdict, o.log.display()));
        }
    }

    fn line(&self, what: &str, n: u32, w: usize) -> String {
        format!(
            "{what:<w$} {n:>4} {:>7} {:>12} {:>7} {:>10.1}",
            self.passed,
            self.stale.len(),
            self.other.len(),
            if n == 0 { 0.0 } else { self.secs / n as f64 }
        )
    }
}

/// A compile on one core until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(ws: &Workspace) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let dir = ws.root.join("target/flake-load");
        let root = ws.root.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = std::fs::remove_dir_all(&dir);
                let _ = util::cargo()
                    .args(["build", "-q", "-j", "1", "--release", "-p", "xtask"])
                    .arg("--target-dir")
                    .arg(&dir)
                    .current_dir(&root)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = std::fs::remove_dir_all(&dir);
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The compile in flight ends with the next crate; do not wait for it.
        let _ = Command::new("pkill")
            .args(["-f", "target/flake-load"])
            .status();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn flake(ws: &Workspace, args: &FlakeArgs) -> Result<bool> {
    crate::setup::setup(&crate::setup::SetupArgs::default())?;
    let built = vm::build(ws, args.runs > 0)?;
    let mut boot = args.boot.clone();
    if !args.with_retries {
        // Every death counts: none is booted again.
        boot.retries = 0;
    }
    let opts = GuestOpts {
        kernel: vec![args.kernel.clone()],
        boot,
        quiet: true,
        ..GuestOpts::default()
    };
    let _load = args.load.then(|| Load::start(ws));
    let t = Instant::now();
    let mut tallies = [Tally::default(), Tally::default()];
    let plan = [
        (args.boots, Payload::new(["true"])),
        (args.runs, vm::test_payload(&args.test)),
    ];
    for (tally, (n, payload)) in tallies.iter_mut().zip(plan) {
        for i in 0..n {
            let o = vm::run_guest(ws, &opts, &args.kernel, &built, payload.clone())?;
            tally.add(&o);
            println!(
                "flake: {} {}/{n}: {} ({:.1} s){}",
                payload.argv.last().map_or("", String::as_str),
                i + 1,
                console::stale_patch(&o.console)
                    .filter(|_| !o.verdict.passed())
                    .map_or_else(|| o.verdict.to_string(), |p| format!("died of {p}")),
                o.total_time.as_secs_f64(),
                if o.verdict.passed() {
                    String::new()
                } else {
                    format!(" [{}]", o.log.display())
                } + &o.retried_note()
            );
        }
    }
    let thread = args.boot.tcg_thread.unwrap_or_default();
    println!(
        "\nflake: {} under TCG with {} threading{}{}, {:.0} s in all",
        args.kernel,
        if args.with_retries {
            thread.name()
        } else {
            thread.first().name()
        },
        if args.with_retries {
            format!(", up to {} retries", args.boot.retries)
        } else {
            ", no retries".into()
        },
        if args.load {
            ", the host loaded by a compile"
        } else {
            ""
        },
        t.elapsed().as_secs_f64()
    );
    let w = args.test.len().max(9);
    println!(
        "{:<w$} {:>4} {:>7} {:>12} {:>7} {:>10}",
        "what", "runs", "passed", "stale deaths", "other", "s per run"
    );
    println!("{}", tallies[0].line("bare boot", args.boots, w));
    println!("{}", tallies[1].line(&args.test, args.runs, w));
    for t in &tallies {
        for d in t.stale.iter().chain(&t.other) {
            println!("  {d}");
        }
    }
    Ok(tallies
        .iter()
        .all(|t| t.stale.is_empty() && t.other.is_empty()))
}
