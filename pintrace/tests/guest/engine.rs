//! The engine's every mode and buffer kind under `pintrace run`, on a loop
//! device (6.12: Direct I/O pins with FOLL_PIN). Each run must show the pins
//! its Direct I/O takes (long-term pins for registered io_uring buffers,
//! released at unregister), none left behind, no finding, no lost event, and
//! the vmstat pin counters moving by what was traced.

use super::{kernel_version, pintrace, summary_of, LoopDev};
use serde_json::Value;

/// 1 MiB read in 64 KiB blocks: 16 I/Os of 16 pages each.
const IO_PAGES: u64 = 256;
const BS_PAGES: u64 = 16;
const IODEPTH: u64 = 4;

const MODES: &[(&str, &[&str])] = &[
    ("psync", &["--mode", "psync"]),
    ("pvsync", &["--mode", "pvsync"]),
    ("io_uring", &["--mode", "io_uring", "--iodepth", "4"]),
    (
        "io_uring-fixed",
        &["--mode", "io_uring", "--iodepth", "4", "--fixed-buffers"],
    ),
    ("aio", &["--mode", "aio", "--iodepth", "4"]),
];

const BUFFERS: &[&str] = &["anon", "thp", "hugetlb", "file-shared", "fork-shared"];

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Runs every buffer kind of one mode under one `pintrace run` (a run costs
/// about 20 s of start-up under emulation, most of it verifying the
/// programs), each engine its own process; returns what is wrong.
fn check_mode(dev: &str, mode: &str, margs: &[&str]) -> Vec<String> {
    let pid_file = |buffer: &str| format!("/tmp/engine-{mode}-{buffer}.pid");
    // Each engine in turn; its pid goes to a file, and the script fails
    // with the first engine that does.
    let mut script = String::from("set -e\n");
    for buffer in BUFFERS {
        let _ = std::fs::remove_file(pid_file(buffer));
        script.push_str(&format!(
            "{bin} engine -f {dev} --rw read --bs 64k --size 1m --buffer {buffer} \
             --scratch-dir /tmp --json {margs} >/dev/null & echo $! > {pid}; wait $!\n",
            bin = super::bin(),
            margs = margs.join(" "),
            pid = pid_file(buffer),
        ));
    }
    let out = pintrace(&["run", "--json", "--", "sh", "-c", &script]);
    let s = summary_of(&out);
    let mut wrong = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            wrong.push(format!("{mode}: {what}"));
        }
    };
    expect(
        s["workload"]["exit_code"] == 0,
        format!("an engine exited {}", s["workload"]["exit_code"]),
    );
    expect(s["lossless"] == true, format!("lost events: {}", s["lost"]));
    expect(
        n(&s["findings"]) == 0,
        format!("{} finding(s)", s["findings"]),
    );
    for buffer in BUFFERS {
        let pid: u64 = std::fs::read_to_string(pid_file(buffer))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        let mut expect = |ok: bool, what: String| expect(ok, format!("{buffer}: {what}"));
        // The engine runs in its own process (forked children of
        // fork-shared pin nothing of their own I/O).
        let engine = s["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| n(&p["tgid"]) == pid);
        let Some(engine) = engine else {
            expect(false, format!("the engine (pid {pid}) took no pages: {s}"));
            continue;
        };
        check_engine(mode, engine, &mut expect);
    }
    // Everything traced was released (long-term pins at unregister), and
    // the kernel's own counters moved by what was traced.
    let traced_pins: u64 = ["pin", "longterm_pin"]
        .iter()
        .map(|k| n(&s["by_kind"][k]["pages"]))
        .sum();
    let released = n(&s["releases"]["pin_refs"]);
    expect(
        released == traced_pins,
        format!("{traced_pins} pins traced, {released} released"),
    );
    // FOLL_GET references are dropped by put_page, unseen: only pins count.
    for k in ["pin", "longterm_pin"] {
        let v = n(&s["outstanding"][k]);
        expect(v == 0, format!("{v} {k} reference(s) outstanding"));
    }
    let delta = &s["vmstat"]["delta"];
    expect(
        n(&delta["acquired"]) == traced_pins && n(&delta["released"]) == released,
        format!("vmstat {delta}, traced +{traced_pins}/+{released}"),
    );
    wrong
}

/// What one engine's process took: its Direct I/O's pins, and no FOLL_GET
/// reference but exec(2)'s and the futex keys'; every pin released.
fn check_engine(mode: &str, engine: &Value, expect: &mut impl FnMut(bool, String)) {
    let pin = n(&engine["by_kind"]["pin"]["pages"]);
    let longterm = n(&engine["by_kind"]["longterm_pin"]["pages"]);
    // The Direct I/O takes no FOLL_GET reference. Two other things do:
    // exec(2) takes its argument pages at get_user_pages_remote, and the
    // futex key of a thread's exit (the kernel wakes the joiner on the
    // cleared tid word, a shared futex) is one page at get_user_pages_fast
    // for the wake and one for the join's wait.
    let get = n(&engine["by_kind"]["get"]["pages"]);
    let exec_pages = n(&engine["by_site"]["get_user_pages_remote"]["pages"]);
    let futex = &engine["by_site"]["get_user_pages_fast"];
    let (futex_calls, futex_pages) = (n(&futex["calls"]), n(&futex["pages"]));
    expect(
        get == exec_pages + futex_pages,
        format!("{get} FOLL_GET pages: {exec_pages} exec's, {futex_pages} at get_user_pages_fast"),
    );
    expect(
        futex_pages == futex_calls && futex_calls <= 4,
        format!("get_user_pages_fast: {futex_calls} calls, {futex_pages} pages (futex keys are one page each, two per thread)"),
    );
    if mode == "io_uring-fixed" {
        // The registered buffers are pinned long-term once, then the I/O
        // itself pins nothing (fixed buffers are already pinned).
        expect(
            longterm >= IODEPTH * BS_PAGES,
            format!(
                "{longterm} long-term pins, expected at least {}",
                IODEPTH * BS_PAGES
            ),
        );
        expect(
            pin < IO_PAGES,
            format!("{pin} FOLL_PIN pages: fixed-buffer I/O should not pin per I/O"),
        );
    } else {
        expect(
            pin >= IO_PAGES,
            format!("{pin} FOLL_PIN pages, expected at least {IO_PAGES}"),
        );
        expect(longterm == 0, format!("{longterm} long-term pins"));
    }
    let released = n(&engine["released"]["pin"]) + n(&engine["released"]["longterm_pin"]);
    expect(
        released == pin + longterm,
        format!("{} pins taken, {released} released", pin + longterm),
    );
}

/// Every mode with every buffer kind.
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn engine_modes_and_buffers_pin_and_release() {
    if kernel_version() < (6, 5) {
        eprintln!("Direct I/O takes FOLL_GET references before 6.5: nothing to pin");
        return;
    }
    // hugetlb buffers need reserved huge pages (4 MiB per buffer at most).
    let _ = std::fs::write("/proc/sys/vm/nr_hugepages", "8");
    let dev = LoopDev::new(16 << 20);
    let path = dev.path.to_str().unwrap().to_owned();
    let mut wrong = Vec::new();
    for (mode, margs) in MODES {
        wrong.extend(check_mode(&path, mode, margs));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The stack policies and `--no-bio` on 4 KiB random reads at QD32 (the
/// rate at which sampling matters): each is lossless and finds nothing,
/// its traced pins match vmstat, and the summary says how many events had
/// a stack. `--no-bio` leaves the bio probes and block completions off.
#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn each_stack_policy_and_no_bio_balance() {
    let dev = LoopDev::new(16 << 20);
    let path = dev.path.to_str().unwrap().to_owned();
    let pins = kernel_version() >= (6, 5);
    for extra in [
        &["--stacks", "all"][..],
        &["--stacks", "sampled"],
        &["--stacks", "none"],
        &["--no-bio"],
    ] {
        let mut args = vec!["run", "--json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--",
            "/bin/pintrace",
            "engine",
            "-f",
            &path,
            "--rw",
            "randread",
            "--bs",
            "4k",
            "--mode",
            "io_uring",
            "--iodepth",
            "32",
            "--size",
            "8m",
            "--json",
        ]);
        let s = summary_of(&pintrace(&args));
        let what = format!("{extra:?}");
        assert_eq!(s["workload"]["exit_code"], 0, "{what}: {s}");
        assert_eq!(s["lossless"], true, "{what}: {}", s["lost"]);
        assert_eq!(n(&s["findings"]), 0, "{what}: {s}");
        let traced = n(&s["by_kind"]["pin"]["pages"]);
        let delta = &s["vmstat"]["delta"];
        assert_eq!(n(&delta["acquired"]), traced, "{what}: {delta}");
        assert_eq!(n(&s["releases"]["pin_refs"]), traced, "{what}");
        if pins {
            assert!(traced >= 2048, "{what}: {traced} pins for 2048 I/Os");
        }
        let st = &s["stacks"];
        let (taken, out) = (n(&st["taken"]), n(&st["sampled_out"]));
        match extra {
            ["--stacks", "all"] => assert!(taken > 0 && out == 0, "{what}: {st}"),
            ["--stacks", "none"] => assert!(taken == 0 && out > 0, "{what}: {st}"),
            // 2048 I/Os in well under 2 s: most go without a stack.
            _ if pins => assert!(taken > 0 && out > taken, "{what}: {st}"),
            _ => assert!(taken > 0, "{what}: {st}"),
        }
        let plan = s["plan"].as_str().unwrap();
        if extra == ["--no-bio"] {
            assert!(
                plan.contains("bio_endio=off") && plan.contains("block_rq_complete=off"),
                "{plan}"
            );
            assert_eq!(n(&s["bios"]["filled"]), 0, "{what}");
            assert_eq!(n(&s["completions"]["requests"]), 0, "{what}");
        } else {
            assert!(plan.contains("block_rq_complete=tracepoint"), "{plan}");
            assert!(n(&s["completions"]["requests"]) >= 2048, "{what}");
        }
    }
}
