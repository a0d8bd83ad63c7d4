//! `cargo xtask test`: the one command that runs every test. Setup, the
//! host tests, then the guest suite on each Debian kernel, then a table.

use crate::debian::SERIES;
use crate::setup::{self, SetupArgs};
use crate::util::{self, Workspace};
use crate::vm::{self, GuestOpts};
use anyhow::Result;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Only `cargo test --workspace` on the host.
    #[arg(long, conflicts_with = "vm_only")]
    pub host_only: bool,
    /// Only the guest suite in QEMU.
    #[arg(long)]
    pub vm_only: bool,
    /// Minutes of the soak in the 6.12 guest after the suites (0: none).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub soak_minutes: u64,
    /// Guests run side by side [default: the host's CPUs]; 1 runs them in
    /// turn with their consoles live on stdout.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Instead of the suites: the proof of the gate on a kernel built from
    /// source. Builds Debian's linux-source-6.12 with kernel/check.config,
    /// checks it (everything must pass), then applies each planted
    /// regression of kernel/planted in turn, rebuilds incrementally and
    /// checks that the scenarios of the broken path fail with the named
    /// finding kinds and nothing else changes. Builds a kernel: see the
    /// README for its time.
    #[arg(long, conflicts_with_all = ["host_only", "vm_only"])]
    pub kernel_tree: bool,
    #[command(flatten)]
    pub guest: GuestOpts,
}

struct Row {
    suite: &'static str,
    kernel: String,
    verdict: String,
    passed: bool,
    secs: f64,
}

pub fn test(ws: &Workspace, args: &TestArgs) -> Result<bool> {
    setup::setup(&SetupArgs::default())?;
    let mut rows = Vec::new();
    if args.kernel_tree {
        rows.extend(kernel_tree(ws));
        print!("{}", table(&rows));
        return Ok(rows.iter().all(|r| r.passed));
    }

    if !args.vm_only {
        let t = Instant::now();
        let mut cmd = util::cargo();
        // In the release profile, as the guest build that follows: the
        // dependencies and the eBPF object are compiled once, not once per
        // profile.
        cmd.args([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "pintrace-ebpf",
        ])
        .current_dir(&ws.root);
        let res = util::run(&mut cmd);
        let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        rows.push(Row {
            suite: "host",
            kernel: format!("host {}", host.trim()),
            verdict: match &res {
                Ok(()) => "pass".into(),
                Err(e) => format!("fail: {e:#}"),
            },
            passed: res.is_ok(),
            secs: t.elapsed().as_secs_f64(),
        });
    }

    if !args.host_only {
        let kernels: Vec<String> = if args.guest.kernel.is_empty() {
            SERIES.iter().map(|s| s.to_string()).collect()
        } else {
            args.guest.kernel.clone()
        };
        let t = Instant::now();
        match vm::build(ws, true) {
            Err(e) => rows.extend(kernels.iter().map(|k| Row {
                suite: "guest",
                kernel: k.clone(),
                verdict: format!("fail: {e:#}"),
                passed: false,
                secs: t.elapsed().as_secs_f64(),
            })),
            Ok(built) => rows.extend(guests(ws, args, &kernels, &built)),
        }
    }

    print!("{}", table(&rows));
    Ok(rows.iter().all(|r| r.passed))
}

/// One guest of the run: a suite on a kernel, or the soak.
enum Job {
    Suite(String),
    Soak,
}

/// The guest suites and the soak, side by side on `--jobs` lanes (each
/// guest runs TCG on one host thread by default, so one lane per host
/// core), the last `--kernel` first (by default 6.12, the longest suite),
/// the soak last; each guest's console is printed whole when it ends. The
/// rows come back in the order of the jobs.
fn guests(ws: &Workspace, args: &TestArgs, kernels: &[String], built: &vm::Built) -> Vec<Row> {
    let mut jobs: Vec<Job> = kernels.iter().rev().cloned().map(Job::Suite).collect();
    // The short soak, on 6.12 only (CI time).
    if args.soak_minutes > 0 && kernels.iter().any(|k| k == "6.12") {
        jobs.push(Job::Soak);
    }
    // Kernels and the zoo module are fetched and built here, once, before
    // the lanes share them.
    for k in kernels {
        if let Err(e) = vm::prepare(ws, &args.guest, k) {
            println!("vm: preparing {k}: {e:#}");
        }
    }
    let lanes = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len().max(1));
    let mut opts = args.guest.clone();
    opts.quiet = lanes > 1;
    println!(
        "test: {} guest(s) on {lanes} lane(s), each console printed when its guest ends",
        jobs.len()
    );
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: std::sync::Mutex<Vec<(usize, Row)>> = Default::default();
    std::thread::scope(|s| {
        for _ in 0..lanes {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let row = run_job(ws, args, &opts, job, built);
                done.lock().expect("no lane panics").push((i, row));
            });
        }
    });
    let mut done = done.into_inner().expect("no lane panics");
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn run_job(ws: &Workspace, args: &TestArgs, opts: &GuestOpts, job: &Job, built: &vm::Built) -> Row {
    let t = Instant::now();
    match job {
        Job::Suite(k) => {
            let res = vm::run_guest(ws, opts, k, built, vm::suite_payload(&args.guest));
            match res {
                Ok(o) => {
                    vm::report(&o);
                    Row {
                        suite: "guest",
                        kernel: match &o.release {
                            Some(r) => format!("{k} ({r})"),
                            None => k.clone(),
                        },
                        verdict: format!("{} [{}]{}", o.verdict, o.log.display(), o.retried_note()),
                        passed: o.verdict.passed(),
                        secs: t.elapsed().as_secs_f64(),
                    }
                }
                Err(e) => Row {
                    suite: "guest",
                    kernel: k.clone(),
                    verdict: format!("fail: {e:#}"),
                    passed: false,
                    secs: t.elapsed().as_secs_f64(),
                },
            }
        }
        Job::Soak => {
            let (verdict, passed) =
                match crate::soak::run(ws, args.soak_minutes, "6.12", built, opts) {
                    Ok(v) => v,
                    Err(e) => (format!("fail: {e:#}"), false),
                };
            Row {
                suite: "soak",
                kernel: format!("6.12, {} min", args.soak_minutes),
                verdict,
                passed,
                secs: t.elapsed().as_secs_f64(),
            }
        }
    }
}

/// The rows of `--kernel-tree`: one per round, its build and check times
/// and what it caught.
fn kernel_tree(ws: &Workspace) -> Vec<Row> {
    let t = Instant::now();
    match crate::planted::run(ws) {
        Err(e) => vec![Row {
            suite: "tree",
            kernel: crate::planted::SOURCE_PACKAGE.into(),
            verdict: format!("fail: {e:#}"),
            passed: false,
            secs: t.elapsed().as_secs_f64(),
        }],
        Ok(rounds) => rounds
            .into_iter()
            .map(|r| {
                let passed = r.verdict.problems.is_empty();
                let what = if passed {
                    match r.verdict.caught.len() {
                        0 => "pass".to_string(),
                        n => format!("caught in {n} scenario(s): {}", r.verdict.caught.join(" ")),
                    }
                } else {
                    format!("FAIL: {}", r.verdict.problems.join("; "))
                };
                Row {
                    suite: "tree",
                    kernel: format!("{} ({})", r.name, r.release),
                    verdict: format!("built in {:.0} s; {what}", r.build_secs),
                    passed,
                    secs: r.secs,
                }
            })
            .collect(),
    }
}

fn table(rows: &[Row]) -> String {
    let kw = rows
        .iter()
        .map(|r| r.kernel.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut s = format!(
        "\n{:<6}  {:<kw$}  {:>8}  verdict\n",
        "suite", "kernel", "seconds"
    );
    for r in rows {
        s += &format!(
            "{:<6}  {:<kw$}  {:>8.1}  {}\n",
            r.suite, r.kernel, r.secs, r.verdict
        );
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    s += &if failed == 0 {
        format!("all {} passed\n", rows.len())
    } else {
        format!("{failed} of {} failed\n", rows.len())
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_table() {
        let rows = [
            Row {
                suite: "host",
                kernel: "host 6.18".into(),
                verdict: "pass".into(),
                passed: true,
                secs: 3.0,
            },
            Row {
                suite: "guest",
                kernel: "6.1 (6.1.0-56-cloud-amd64)".into(),
                verdict: "fail (payload exited with 101)".into(),
                passed: false,
                secs: 75.25,
            },
        ];
        let t = table(&rows);
        assert!(
            t.contains(
                "guest   6.1 (6.1.0-56-cloud-amd64)      75.2  fail (payload exited with 101)"
            ),
            "{t}"
        );
        assert!(t.ends_with("1 of 2 failed\n"));
    }
}
