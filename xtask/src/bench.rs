//! `cargo xtask bench`: tracing overhead and loss onset, measured in one
//! guest run.
//!
//! Overhead: O_DIRECT 4 KiB random reads from a loop device with the engine
//! (psync QD1 and io_uring QD32), in alternating rounds under each
//! condition: no tracing, the bare probe (a per-CPU counter on
//! `pin_user_pages_fast`, as a kprobe and as fexit), and `pintrace run` by
//! default (the kernel books), with `--no-bio`, and with the full event
//! stream (`--books events`); and the peer: Debian's bpftrace with a
//! hand-written per-folio pin count (`PEER_SCRIPT`).
//! Then one pass with BPF statistics on (`kernel.bpf_stats_enabled`) reads
//! every program's run count, run time and translated size with bpftool.
//!
//! Loss onset: `pintrace run` around the engine at rising rates, with the
//! traced totals checked against the vmstat pin counters.
//!
//! The guest writes one JSON file per run; the host reads them back and
//! prints medians and ratios (figures also go to `bench.json`).

use crate::debian::{self, KernelSpec};
use crate::initramfs::{GuestFile, Payload};
use crate::qemu::{self, BootOpts, BootRequest};
use crate::util::{self, Workspace};
use crate::vm;
use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// 6.1 or 6.12 (Debian cloud kernels) or the path of a bzImage.
    #[arg(long, default_value = "6.12", value_name = "6.1|6.12|PATH")]
    pub kernel: String,
    /// Rounds of the overhead part (each runs every condition once, in a
    /// rotating order).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Seconds per engine run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub runtime: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: u32,
    /// Guest memory (MiB).
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Size of the loop device's backing file (MiB, in the guest's RAM).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub loop_mib: u32,
    /// Only the overhead part, or only the loss-onset part.
    #[arg(long, value_enum, default_value_t = Part::All)]
    pub part: Part,
    /// `--ringbuf-mib` of the loss-onset runs (repeat for several).
    #[arg(long = "loss-ringbuf-mib", value_name = "MIB", default_values_t = [4u32])]
    pub loss_ringbuf_mib: Vec<u32>,
    /// Kill the guest after this many seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub timeout: u64,
    #[command(flatten)]
    pub boot: BootOpts,
    /// Where the raw results and bench.json go [default: target/pintrace-bench/<kernel>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Analyse the results already in DIR instead of booting a guest.
    #[arg(long, value_name = "DIR")]
    pub analyse: Option<PathBuf>,
    /// Another pintrace binary (say, a build of the previous commit), run
    /// as one more condition ("baseline": its `pintrace run` with its
    /// defaults), for before/after figures from the same run.
    #[arg(long, value_name = "BINARY")]
    pub baseline: Option<PathBuf>,
}

/// The baseline condition: the other binary's `pintrace run`.
const BASELINE: (&str, &str) = (
    "baseline",
    r#"pintrace-baseline run --json -- sh -c "$E > $F.json""#,
);

/// The conditions of this run: [`CONDITIONS`], and the baseline if given.
fn conditions(args: &BenchArgs) -> Vec<(&'static str, &'static str)> {
    let mut v = CONDITIONS.to_vec();
    if args.baseline.is_some() {
        v.push(BASELINE);
    }
    v
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    All,
    Overhead,
    Loss,
}

/// The overhead workloads: name and engine arguments.
const WORKLOADS: &[(&str, &str)] = &[
    ("psync-qd1", "--bs 4k --mode psync --iodepth 1"),
    ("io_uring-qd32", "--bs 4k --mode io_uring --iodepth 32"),
];

/// Overhead conditions: name, and the command prefix that runs `$E` (the
/// engine) under it with its JSON in `$F.json`; the wrapper's own output
/// goes to `$F.wrap.json`.
const CONDITIONS: &[(&str, &str)] = &[
    ("none", r#"sh -c "$E > $F.json""#),
    (
        "bare-kprobe",
        r#"pintrace bench-probe --attach kprobe -- sh -c "$E > $F.json""#,
    ),
    (
        "bare-fexit",
        r#"pintrace bench-probe --attach fexit -- sh -c "$E > $F.json""#,
    ),
    // The default: the books kept in the kernel, no record for a balanced
    // pin and unpin.
    ("pintrace", r#"pintrace run --json -- sh -c "$E > $F.json""#),
    (
        "pintrace-no-bio",
        r#"pintrace run --json --no-bio -- sh -c "$E > $F.json""#,
    ),
    // The full event stream: every acquire, release and bio a record.
    (
        "pintrace-events",
        r#"pintrace run --json --books events -- sh -c "$E > $F.json""#,
    ),
    // The peer: Debian's bpftrace with the script a kernel developer would
    // write for this by hand ([`PEER_SCRIPT`]). `-c` starts the command once
    // the probes are attached; it splits its argument on spaces, so the
    // engine's command line reaches [`PEER_RUN`] in the environment.
    (
        "bpftrace",
        r#"PEER_CMD="$E > $F.json" bpftrace -f json -c "/bin/sh /peer-run.sh" /peer.bt"#,
    ),
];

/// The peer condition's bpftrace script (0.17 syntax: `kretfunc`/`kfunc`
/// are fexit/fentry), as a kernel developer would write it by hand. Per
/// folio, the pages each `pin_user_pages_fast` returned are counted up, and
/// a release through `gup_put_folio` of a counted folio takes its `refs`
/// off; `END` prints what is still held. Where 0.17 falls short, the script
/// does what one would do at the prompt:
/// - fexit cannot read `pages`: the kernel's BTF check of a context load
///   rejects pointer-to-pointer arguments (`func_arg` in
///   `pintrace-ebpf/src/kernel.rs`), and bpftrace 0.17 has no
///   `bpf_get_func_arg`; so a kprobe at the entry keeps `pages` per thread.
/// - its `[]` takes only literal indices ("only accepts literal integer
///   indices"): the `i`-th page pointer is read at `pages + 8 * i`.
/// - it does not resolve the fields of `struct page`'s unnamed unions
///   ("does not contain a field named 'compound_head'"): the folio is the
///   word after `flags`, `compound_head`, less its tail bit (`page_folio()`).
/// - `retval` is read once, before the `unroll`: read in it, its context
///   load came out at a moved context pointer, which the verifier refuses.
///
/// A call's first 32 pages are read (`unroll` wants a constant; the
/// overhead workloads pin one page per call). bpftrace's map updates are a
/// lookup and an update, not atomic, so with two CPUs the count at `END`
/// may be off by a few; the figure here is the cost, not the count.
const PEER_SCRIPT: &str = include_str!("bench/peer.bt");

/// What bpftrace's `-c` runs: `$PEER_CMD`, with bpftrace's own CPU time
/// (user + system clock ticks of its parent, bpftrace, from
/// `/proc/<pid>/stat`) over that command, as one JSON line beside
/// bpftrace's own (`-f json`) on the same stdout. bpftrace compiles its
/// script before it starts the command, so this is its cost while tracing.
const PEER_RUN: &str = include_str!("bench/peer-run.sh");

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on x86).
const USER_HZ: f64 = 100.0;

/// Loss-onset steps, in rising rate: name and engine arguments.
const LOSS_STEPS: &[(&str, &str)] = &[
    ("psync-4k-qd1", "--mode psync --bs 4k --iodepth 1"),
    ("io_uring-4k-qd32", "--mode io_uring --bs 4k --iodepth 32"),
    ("io_uring-16k-qd32", "--mode io_uring --bs 16k --iodepth 32"),
    ("io_uring-64k-qd32", "--mode io_uring --bs 64k --iodepth 32"),
    (
        "io_uring-256k-qd32",
        "--mode io_uring --bs 256k --iodepth 32",
    ),
    (
        "io_uring-1m-qd16-2jobs",
        "--mode io_uring --bs 1m --iodepth 16 --numjobs 2",
    ),
];

const GUEST_SCRIPT: &str = "/bench.sh";

/// The guest's script: loop device, the overhead rounds, the stats pass,
/// the loss steps. Every run leaves `$OUT/<name>.json` (the engine) and
/// `$OUT/<name>.wrap.json` (the tracer's or bare probe's report).
fn script(args: &BenchArgs) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"set -u
OUT=$PINTRACE_VM_OUT
RUNTIME={runtime}
echo "bench: $(uname -r), $(nproc) CPUs"
dd if=/dev/zero of=/tmp/bench.img bs=1M count={loop_mib} 2>/dev/null
DEV=$(losetup -f) && losetup $DEV /tmp/bench.img || {{ echo "bench: no loop device"; exit 2; }}
echo 0 > /proc/sys/kernel/bpf_stats_enabled
# Warm up: one pass over the device.
pintrace engine -f $DEV --rw read --bs 1m --json > /dev/null || exit 2
runit() {{ # NAME ENGINE-ARGS WRAPPER
    F=$OUT/$1
    E="pintrace engine -f $DEV --rw randread --runtime $RUNTIME --json $2"
    eval "$3 > $F.wrap.json" || echo "bench: $1 failed"
}}"#,
        runtime = args.runtime,
        loop_mib = args.loop_mib,
    );
    if args.part != Part::Loss {
        let conds = conditions(args);
        let n = conds.len();
        for round in 0..args.rounds as usize {
            let _ = writeln!(s, "echo \"bench: overhead round {}\"", round + 1);
            for (w, wargs) in WORKLOADS {
                for k in 0..n {
                    let (c, wrap) = conds[(k + round) % n];
                    let _ = writeln!(s, "runit ov.{w}.{c}.{round} '{wargs}' '{wrap}'");
                }
            }
        }
        // BPF statistics cost a clock read per program run: a pass apart.
        let _ = writeln!(
            s,
            "echo 1 > /proc/sys/kernel/bpf_stats_enabled\necho \"bench: bpf stats pass\""
        );
        for (w, wargs) in WORKLOADS {
            for (c, wrap) in conds.iter().filter(|(c, _)| *c != "none") {
                let wrap = wrap.replace(
                    r#"$E > $F.json""#,
                    r#"$E > $F.json; bpftool prog show --json > $F.progs.json""#,
                );
                let _ = writeln!(s, "runit stats.{w}.{c} '{wargs}' '{wrap}'");
            }
        }
        let _ = writeln!(s, "echo 0 > /proc/sys/kernel/bpf_stats_enabled");
    }
    if args.part != Part::Overhead {
        for mib in &args.loss_ringbuf_mib {
            for (step, sargs) in LOSS_STEPS {
                let _ = writeln!(s, "echo \"bench: loss step {step} ringbuf {mib} MiB\"");
                let _ = writeln!(
                    s,
                    "runit loss.{mib}.{step} '{sargs}' 'pintrace run --json --ringbuf-mib {mib} -- sh -c \"$E > $F.json\"'",
                );
            }
        }
    }
    let _ = writeln!(s, "losetup -d $DEV\necho \"bench: done\"");
    s
}

pub fn bench(ws: &Workspace, args: &BenchArgs) -> Result<bool> {
    if let Some(dir) = &args.analyse {
        let report = analyse(dir, args)?;
        print!("{}", report.text);
        return Ok(true);
    }
    crate::setup::setup(&crate::setup::SetupArgs::default())?;
    let bpftool = ["/usr/sbin/bpftool", "/sbin/bpftool", "/usr/bin/bpftool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if bpftool.is_none() {
        println!("bench: note: no bpftool on this machine (apt-get install bpftool): no per-program statistics");
    }
    // Only the bench needs bpftrace (the peer condition), so `setup` and
    // the test command leave it out.
    crate::setup::ensure_packages(&["bpftrace"], &["bpftrace"])
        .context("the peer condition needs Debian's bpftrace")?;
    let bpftrace = which::which("bpftrace").context("bpftrace is installed but not on PATH")?;
    let built = vm::build(ws, false)?;
    let spec = KernelSpec::parse(&args.kernel);
    let kernel = debian::resolve(ws, &spec, None)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| ws.root.join("target/pintrace-bench").join(&kernel.label));
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    util::create_dir(&out)?;

    let mut req = BootRequest::new(kernel, Payload::new(["sh", GUEST_SCRIPT]));
    req.files.push(GuestFile {
        path: GUEST_SCRIPT.into(),
        mode: 0o755,
        data: script(args).into_bytes(),
    });
    for (path, text) in [("/peer.bt", PEER_SCRIPT), ("/peer-run.sh", PEER_RUN)] {
        req.files.push(GuestFile {
            path: path.into(),
            mode: 0o644,
            data: text.as_bytes().to_vec(),
        });
    }
    req.timeout = Duration::from_secs(args.timeout);
    req.memory_mib = args.memory;
    req.smp = args.smp;
    // The tracer's cost is the question here: its agent runs beside the
    // I/O on the other vCPU, as it would on real CPUs, not in turns with it.
    // A stale patch is booted again (`--retries`).
    req.tcg_thread = qemu::TcgThread::Multi;
    args.boot.apply(&mut req);
    req.binaries
        .push(("pintrace".into(), built.pintrace.clone()));
    // With its shared libraries (LLVM and clang's among them), as ldd names them.
    req.binaries.push(("bpftrace".into(), bpftrace));
    if let Some(b) = bpftool {
        req.binaries.push(("bpftool".into(), b));
    }
    if let Some(b) = &args.baseline {
        if !b.is_file() {
            bail!("--baseline {}: no such file", b.display());
        }
        req.binaries.push(("pintrace-baseline".into(), b.clone()));
    }
    let outcome = qemu::boot(ws, &req)?;
    vm::report(&outcome);
    for e in &outcome.exports {
        let Some(name) = e.file_name() else { continue };
        std::fs::copy(e, out.join(name))
            .with_context(|| format!("copying {} to {}", e.display(), out.display()))?;
    }
    if !outcome.verdict.passed() {
        bail!(
            "the bench did not run to the end (log: {})",
            outcome.log.display()
        );
    }
    let mut report = analyse(&out, args)?;
    report.json["conditions"]["accel"] = json!(outcome.accel);
    report.json["conditions"]["tcg_thread"] = json!(outcome.tcg_thread.name());
    report.json["conditions"]["kernel"] = json!(outcome.release);
    let conditions = format!(
        "kernel {}, {} vCPUs, {} MiB, QEMU {} ({} threading), loop device over {} MiB in guest RAM, {} rounds of {} s per run (medians)\n",
        outcome.release.as_deref().unwrap_or("?"),
        args.smp,
        args.memory,
        outcome.accel,
        outcome.tcg_thread.name(),
        args.loop_mib,
        args.rounds,
        args.runtime
    );
    print!("\n{conditions}{}", report.text);
    let path = out.join("bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report.json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("bench: results {}", path.display());
    Ok(true)
}

pub struct Report {
    pub text: String,
    pub json: Value,
}

/// The JSON values in a file (one object, or several one after another).
fn read_values(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

fn engine_iops(v: &Value) -> Option<f64> {
    let t = &v["total"];
    Some(t["read"]["iops"].as_f64()? + t["write"]["iops"].as_f64().unwrap_or(0.0))
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Reads the results in `dir` and computes the figures.
pub fn analyse(dir: &Path, args: &BenchArgs) -> Result<Report> {
    if !dir.is_dir() {
        bail!("--analyse {}: not a folder", dir.display());
    }
    let mut text = String::new();
    let mut out = json!({ "conditions": {
        "rounds": args.rounds, "runtime_s": args.runtime, "smp": args.smp,
        "memory_mib": args.memory, "loop_mib": args.loop_mib,
    }});

    // Overhead: median IOPS per workload and condition, then ratios: of the
    // medians, and the median of each round's ratio to that round's run
    // without tracing (paired: the host's load drifts between rounds).
    let mut any = false;
    for (w, _) in WORKLOADS {
        let mut med: BTreeMap<&str, f64> = BTreeMap::new();
        let mut lost_any = 0u64;
        let round_iops = |c: &str, r: u32| {
            read_values(&dir.join(format!("ov.{w}.{c}.{r}.json")))
                .first()
                .and_then(engine_iops)
        };
        let mut lines = Vec::new();
        for (c, _) in conditions(args) {
            let mut iops: Vec<f64> = (0..args.rounds).filter_map(|r| round_iops(c, r)).collect();
            let mut paired: Vec<f64> = (0..args.rounds)
                .filter_map(|r| Some(round_iops(c, r)? / round_iops("none", r)?))
                .collect();
            // The agent's own CPU time per I/O while tracing (after its
            // start-up), from the run's summary.
            let mut agent_us: Vec<f64> = Vec::new();
            for r in 0..args.rounds {
                let ios = read_values(&dir.join(format!("ov.{w}.{c}.{r}.json")))
                    .first()
                    .and_then(|e| e["total"]["read"]["ios"].as_f64());
                let f = dir.join(format!("ov.{w}.{c}.{r}.wrap.json"));
                for v in read_values(&f) {
                    if v["type"] == "summary" {
                        lost_any += v["lost"]
                            .as_object()
                            .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>())
                            .unwrap_or(0);
                        let a = &v["agent"];
                        if let (Some(t), Some(n)) = (a["tracing_cpu_s"].as_f64(), ios) {
                            if n > 0.0 {
                                agent_us.push(t * 1e6 / n);
                            }
                        }
                    }
                    // The peer's process: bpftrace's CPU while the engine ran.
                    if v["type"] == "peer_cpu" {
                        if let (Some(t), Some(n)) = (v["ticks"].as_f64(), ios) {
                            if n > 0.0 {
                                agent_us.push(t / USER_HZ * 1e6 / n);
                            }
                        }
                    }
                }
            }
            let runs = iops.len();
            if let Some(m) = median(&mut iops) {
                med.insert(c, m);
                out["overhead"][*w][c] = json!({ "median_iops": m, "runs": runs, "iops": iops });
                let p = median(&mut paired);
                let a = median(&mut agent_us);
                if let Some(p) = p {
                    out["overhead"][*w][c]["paired_ratio"] = json!(p);
                }
                if let Some(a) = a {
                    out["overhead"][*w][c]["agent_cpu_us_per_io"] = json!(a);
                }
                lines.push((c, m, p, a));
            }
        }
        let Some(&base) = med.get("none") else {
            continue;
        };
        any = true;
        let _ = writeln!(
            text,
            "\n{w}: O_DIRECT 4 KiB random read IOPS (median), ratio to no tracing (of the medians; paired: median of per-round ratios), overhead, agent CPU"
        );
        for (c, m, p, a) in lines {
            let ratio = m / base;
            let _ = writeln!(
                text,
                "  {c:<22} {m:>10.0} IOPS  ratio {ratio:.3}  paired {}  overhead {:>5.1}%{}",
                p.map_or("  -  ".into(), |p| format!("{p:.3}")),
                (1.0 - ratio) * 100.0,
                a.map_or(String::new(), |a| format!(
                    "  {} {a:.1} us CPU/IO while tracing",
                    if c == "bpftrace" { "bpftrace" } else { "agent" }
                )),
            );
            out["overhead"][*w][c]["ratio"] = json!(ratio);
        }
        let over = |c: &str| med.get(c).map(|m| 1.0 - m / base);
        // Each tracer's overhead over the floor's, and pintrace's over the
        // peer's (the hand-written bpftrace script).
        for (c, floor) in [
            ("pintrace", "bare-kprobe"),
            ("pintrace", "bare-fexit"),
            ("bpftrace", "bare-kprobe"),
            ("bpftrace", "bare-fexit"),
            ("pintrace", "bpftrace"),
            ("pintrace-events", "bare-fexit"),
            ("pintrace-events", "bpftrace"),
        ] {
            if let (Some(p), Some(b)) = (over(c), over(floor)) {
                if b > 0.0 {
                    let x = p / b;
                    let _ = writeln!(text, "  overhead({c}) / overhead({floor}) = {x:.2}");
                    let key = if c == "pintrace" && floor.starts_with("bare-") {
                        format!("overhead_vs_{floor}")
                    } else {
                        format!("overhead_{c}_vs_{floor}")
                    };
                    out["overhead"][*w][key] = json!(x);
                } else {
                    let _ = writeln!(
                        text,
                        "  overhead({c}) / overhead({floor}): n/a (the floor's overhead is within the noise)"
                    );
                }
            }
        }
        if lost_any > 0 {
            let _ = writeln!(text, "  NOTE: {lost_any} events lost in the traced runs");
        }
    }
    if any {
        text += "\n";
    }

    // Per-program statistics from the stats pass.
    let mut stats_text = String::new();
    for (w, _) in WORKLOADS {
        for (c, _) in conditions(args).into_iter().filter(|(c, _)| *c != "none") {
            let progs = read_values(&dir.join(format!("stats.{w}.{c}.progs.json")));
            let Some(list) = progs.first().and_then(Value::as_array) else {
                continue;
            };
            let engine = read_values(&dir.join(format!("stats.{w}.{c}.json")));
            let ios = engine
                .first()
                .map(|e| e["total"]["read"]["ios"].as_f64().unwrap_or(0.0))
                .unwrap_or(0.0);
            let mut rows = Vec::new();
            for p in list {
                let name = p["name"].as_str().unwrap_or("?");
                let cnt = p["run_cnt"].as_u64().unwrap_or(0);
                if cnt == 0 {
                    continue;
                }
                let ns = p["run_time_ns"].as_u64().unwrap_or(0);
                let insns = p["bytes_xlated"].as_u64().unwrap_or(0) / 8;
                let jited = p["bytes_jited"].as_u64().unwrap_or(0);
                let per = ns as f64 / cnt as f64;
                rows.push(format!(
                    "    {name:<32} {:<10} runs {cnt:>9}  {per:>8.0} ns/run  {insns:>5} insns xlated  {jited:>6} B jited  {:>6.2} runs/IO",
                    p["type"].as_str().unwrap_or(""),
                    if ios > 0.0 { cnt as f64 / ios } else { 0.0 }
                ));
                out["programs"][*w][c][name] = json!({
                    "type": p["type"], "run_cnt": cnt, "run_time_ns": ns, "ns_per_run": per,
                    "xlated_insns": insns, "jited_bytes": jited,
                });
            }
            if !rows.is_empty() {
                let _ = writeln!(stats_text, "  {w} / {c} ({ios:.0} I/Os):");
                stats_text += &rows.join("\n");
                stats_text += "\n";
            }
        }
    }
    if !stats_text.is_empty() {
        text += "BPF programs with kernel.bpf_stats_enabled=1 (run time of the program body, not the kprobe/trampoline around it):\n";
        text += &stats_text;
        text += "\n";
    }

    // Loss onset.
    let mut loss_text = String::new();
    for mib in &args.loss_ringbuf_mib {
        for (step, _) in LOSS_STEPS {
            let name = format!("loss.{mib}.{step}");
            let engine = read_values(&dir.join(format!("{name}.json")));
            let run = read_values(&dir.join(format!("{name}.wrap.json")));
            let (Some(e), Some(s)) = (engine.first(), run.iter().find(|v| v["type"] == "summary"))
            else {
                continue;
            };
            let iops = engine_iops(e).unwrap_or(0.0);
            let secs = e["jobs"][0]["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            let run_s = s["duration_s"].as_f64().unwrap_or(0.0);
            let events = s["events"].as_u64().unwrap_or(0);
            let lost: u64 = s["lost"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            let pages: u64 = ["pin", "longterm_pin", "get"]
                .iter()
                .map(|k| s["by_kind"][k]["pages"].as_u64().unwrap_or(0))
                .sum();
            let pin_pages = s["by_kind"]["pin"]["pages"].as_u64().unwrap_or(0)
                + s["by_kind"]["longterm_pin"]["pages"].as_u64().unwrap_or(0);
            let released = s["releases"]["pin_refs"].as_u64().unwrap_or(0);
            let vm_acq = s["vmstat"]["delta"]["acquired"].as_u64();
            let vm_rel = s["vmstat"]["delta"]["released"].as_u64();
            let agree = vm_acq == Some(pin_pages) && vm_rel == Some(released);
            // Rates over the engine's own runtime: the I/O is what makes the events.
            let ev_s = if secs > 0.0 {
                events as f64 / secs
            } else {
                0.0
            };
            let pg_s = if secs > 0.0 { pages as f64 / secs } else { 0.0 };
            let _ = writeln!(
                loss_text,
                "  {step:<24} {iops:>8.0} IOPS  {ev_s:>9.0} events/s  {pg_s:>9.0} pages/s  lost {lost:>7}  traced +{pin_pages}/+{released} vmstat +{}/+{} {}",
                vm_acq.map_or("?".into(), |v| v.to_string()),
                vm_rel.map_or("?".into(), |v| v.to_string()),
                if agree { "agree" } else { "DIFFER" },
            );
            out["loss"][format!("{mib}")][*step] = json!({
                "iops": iops, "engine_s": secs, "run_s": run_s, "events": events,
                "events_per_s": ev_s, "pages_per_s": pg_s, "lost": lost, "lost_by_cause": s["lost"],
                "traced_pin_pages": pin_pages, "traced_pin_released": released,
                "vmstat_acquired": vm_acq, "vmstat_released": vm_rel, "agree": agree,
            });
        }
        if !loss_text.is_empty() {
            let _ = writeln!(
                text,
                "loss onset, --ringbuf-mib {mib} (rates over the engine's runtime):"
            );
            text += &loss_text;
            loss_text.clear();
        }
    }
    Ok(Report { text, json: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn the_script_rotates_conditions_and_parses() {
        let args = BenchArgs {
            kernel: "6.12".into(),
            rounds: 2,
            runtime: 1,
            smp: 2,
            memory: 2048,
            loop_mib: 64,
            part: Part::All,
            loss_ringbuf_mib: vec![4],
            timeout: 60,
            boot: BootOpts::default(),
            out: None,
            analyse: None,
            baseline: Some("/bin/true".into()),
        };
        let s = script(&args);
        let first: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("runit ov.psync-qd1."))
            .collect();
        let n = CONDITIONS.len() + 1;
        assert_eq!(first.len(), 2 * n);
        assert!(first[0].contains(".none.0 "), "{}", first[0]);
        assert!(first[n].contains(".bare-kprobe.1 "));
        assert!(s.contains("runit ov.io_uring-qd32.baseline.0 "));
        assert!(s.contains("bpftool prog show --json > $F.progs.json"));
        assert!(s.contains("loss.4.io_uring-64k-qd32"));
        // The peer runs in every round, and its stats run reads the
        // programs while bpftrace is still attached (inside its `-c`).
        assert!(s.contains("runit ov.psync-qd1.bpftrace.1 "));
        assert!(s.contains(
            r#"runit stats.io_uring-qd32.bpftrace '--bs 4k --mode io_uring --iodepth 32' 'PEER_CMD="$E > $F.json; bpftool prog show --json > $F.progs.json" bpftrace -f json -c "/bin/sh /peer-run.sh" /peer.bt'"#
        ));
        if let Ok(bb) = which::which("busybox") {
            for text in [s.as_str(), PEER_RUN] {
                let st = std::process::Command::new(&bb)
                    .args(["sh", "-n", "-c", text])
                    .status()
                    .unwrap();
                assert!(st.success(), "{text}");
            }
        }
    }

    #[test]
    fn the_peer_run_reports_the_command_and_its_tracer_cpu() {
        let Ok(bb) = which::which("busybox") else {
            return;
        };
        // `$PPID` is this test's process: its ticks stand in for
        // bpftrace's. The command's status is the run's.
        let out = std::process::Command::new(bb)
            .args(["sh", "-c", PEER_RUN])
            .env("PEER_CMD", "echo ran; (exit 3)")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("ran\n"), "{text}");
        let v: Vec<Value> = serde_json::Deserializer::from_str(&text["ran\n".len()..])
            .into_iter::<Value>()
            .map(Result::unwrap)
            .collect();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["type"], "peer_cpu");
        assert!(v[0]["ticks"].as_u64().is_some(), "{text}");
    }

    #[test]
    fn the_peer_row_is_analysed_like_the_others() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-peer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let engine =
            |iops: f64| json!({ "total": { "read": { "iops": iops, "ios": iops * 3.0 } } });
        let w = "io_uring-qd32";
        for (c, iops) in [
            ("none", 100000.0),
            ("bare-fexit", 98000.0),
            ("pintrace", 40000.0),
            ("bpftrace", 80000.0),
        ] {
            std::fs::write(
                dir.join(format!("ov.{w}.{c}.0.json")),
                engine(iops).to_string(),
            )
            .unwrap();
        }
        // bpftrace's own lines (`-f json`) with the run's CPU line between:
        // 60 ticks over 240000 I/Os is 2.5 µs per I/O.
        std::fs::write(
            dir.join(format!("ov.{w}.bpftrace.0.wrap.json")),
            "{\"type\": \"attached_probes\", \"data\": {\"probes\": 3}}\n\
             {\"type\": \"peer_cpu\", \"ticks\": 60}\n\
             {\"type\": \"printf\", \"data\": \"pins held: 0\\n\"}\n",
        )
        .unwrap();
        let args = BenchArgs {
            kernel: "6.12".into(),
            rounds: 1,
            runtime: 3,
            smp: 2,
            memory: 2048,
            loop_mib: 256,
            part: Part::Overhead,
            loss_ringbuf_mib: vec![4],
            timeout: 60,
            boot: BootOpts::default(),
            out: None,
            analyse: Some(dir.clone()),
            baseline: None,
        };
        let r = analyse(&dir, &args).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let peer = &r.json["overhead"][w]["bpftrace"];
        assert_eq!(peer["median_iops"], 80000.0);
        assert!((peer["ratio"].as_f64().unwrap() - 0.8).abs() < 1e-9);
        assert!((peer["paired_ratio"].as_f64().unwrap() - 0.8).abs() < 1e-9);
        assert!((peer["agent_cpu_us_per_io"].as_f64().unwrap() - 2.5).abs() < 1e-9);
        // 20% over the floor's 2%, and pintrace's 60% over the peer's 20%.
        let o = &r.json["overhead"][w];
        assert!((o["overhead_bpftrace_vs_bare-fexit"].as_f64().unwrap() - 10.0).abs() < 1e-9);
        assert!((o["overhead_pintrace_vs_bpftrace"].as_f64().unwrap() - 3.0).abs() < 1e-9);
        assert!(
            r.text.contains("bpftrace 2.5 us CPU/IO while tracing"),
            "{}",
            r.text
        );
        assert!(r
            .text
            .contains("overhead(pintrace) / overhead(bpftrace) = 3.00"));
    }
}
