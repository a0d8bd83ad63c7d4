//! The kernel books (the default) against the full event stream
//! (`--events`): two agents attached at once watch the same workload, the
//! zoo's planted bugs and Direct I/O, and must name the same findings
//! (kind, process, folio, references) and tally the same pages per process,
//! and the books' totals must be the kernel's own pin counters. Then the
//! books' limits: a map too small for the pins sends the rest as records
//! (slower, nothing lost), and 1 GiB of io_uring fixed buffers books its
//! 262,144 long-term pins and sees each released.

use super::{
    bin,
    zoo::{load_zoo, zoo},
    LoopDev,
};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
};

/// A finding as both modes must tell it. A leak of an exited owner is
/// `leak_at_end`, `leak_owner_exited` or (long-term) `longterm_held_at_end`
/// by when each agent ended (the grace period), so those are one kind here.
fn key(f: &Value) -> (String, u64, String, u64) {
    let kind = match f["kind"].as_str().unwrap() {
        "leak_at_end" | "leak_owner_exited" | "longterm_held_at_end" => "leak",
        k => k,
    };
    (
        kind.to_owned(),
        f["tgid"].as_u64().unwrap(),
        f["folio"].to_string(),
        f["refs"].as_u64().unwrap(),
    )
}

fn lines_of(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn summary_of(lines: &[Value]) -> Value {
    lines
        .iter()
        .find(|v| v["type"] == "summary")
        .cloned()
        .expect("a summary")
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The pages each process took, by kind, as a summary tallies them.
fn pages_by_process(summary: &Value, tgids: &[u64]) -> BTreeMap<(u64, String), u64> {
    let mut out = BTreeMap::new();
    for p in summary["processes"].as_array().unwrap() {
        let tgid = n(&p["tgid"]);
        if !tgids.contains(&tgid) {
            continue;
        }
        for (kind, c) in p["by_kind"].as_object().unwrap() {
            out.insert((tgid, kind.clone()), n(&c["pages"]));
        }
    }
    out
}

#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn kernel_books_and_the_event_stream_find_the_same() {
    load_zoo();
    zoo(&["release-all"]);
    let dev = LoopDev::new(16 << 20);
    let me = bin();
    let tag = std::process::id();
    let ready = PathBuf::from(format!("/tmp/books-events-ready-{tag}"));
    let done = PathBuf::from(format!("/tmp/books-events-done-{tag}"));
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&done);
    // The full event stream: its command starts once its probes are in,
    // and ends when the other agent's workload is over.
    let events = Command::new(&me)
        .args([
            "run",
            "--json",
            "--events",
            "--ringbuf-mib",
            "64",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "touch {r}; while [ ! -e {d} ]; do sleep 0.1; done",
            r = ready.display(),
            d = done.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let scenarios = [
        "balanced",
        "leak",
        "pin-put",
        "double-unpin",
        "get-unpin",
        "hold --longterm",
    ];
    let zoo_runs = scenarios
        .iter()
        .map(|s| format!("{me} zoo run {s} --pages 16"))
        .collect::<Vec<_>>()
        .join("; ");
    // The kernel books: the same workload, once both agents watch.
    let script = format!(
        "while [ ! -e {r} ]; do sleep 0.1; done; {zoo_runs}; \
         {me} engine -f {dev} --bs 4k --size 4m --rw randread >/dev/null; \
         {me} engine -f {dev} --bs 64k --size 4m --mode io_uring --iodepth 8 --rw read >/dev/null; \
         touch {d}",
        r = ready.display(),
        d = done.display(),
        dev = dev.path.display()
    );
    let books = Command::new(&me)
        .args(["run", "--json", "--", "sh", "-c", &script])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let events = events.wait_with_output().unwrap();
    zoo(&["release-all"]);
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&done);
    let (b, e) = (lines_of(&books.stdout), lines_of(&events.stdout));
    let (bs, es) = (summary_of(&b), summary_of(&e));
    assert_eq!(bs["books_mode"], "kernel", "{bs}");
    assert_eq!(es["books_mode"], "events", "{es}");
    assert_eq!(bs["lossless"], true, "{bs}");
    assert_eq!(es["lossless"], true, "{es}");
    // The processes of the workload that took pages other than exec(2)'s
    // arguments: the zoo's scenarios and the engines.
    let tgids: Vec<u64> = bs["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let k = &p["by_kind"];
            k.get("pin").is_some()
                || k.get("longterm_pin").is_some()
                || p["by_site"].get("get_user_pages_fast").is_some()
        })
        .map(|p| n(&p["tgid"]))
        .collect();
    assert!(tgids.len() >= 8, "{bs}");
    let findings = |lines: &[Value]| {
        let mut v: Vec<_> = lines
            .iter()
            .filter(|l| l["type"] == "finding" && tgids.contains(&n(&l["tgid"])))
            .map(key)
            .collect();
        v.sort();
        v
    };
    let (fb, fe) = (findings(&b), findings(&e));
    assert!(!fb.is_empty(), "{b:?}");
    assert_eq!(fb, fe, "kernel books vs the event stream");
    // Every planted kind is among them.
    for kind in [
        "leak",
        "pin_released_as_get",
        "double_unpin",
        "unpin_of_get_page",
    ] {
        assert!(fb.iter().any(|f| f.0 == kind), "no {kind} in {fb:?}");
    }
    assert_eq!(
        pages_by_process(&bs, &tgids),
        pages_by_process(&es, &tgids),
        "pages by process and kind"
    );
    // The books' run saw every pin the kernel counted in its window, and
    // most of them never crossed the ring buffer.
    let kb = &bs["kernel_books"];
    let pins = n(&bs["by_kind"]["pin"]["pages"]) + n(&bs["by_kind"]["longterm_pin"]["pages"]);
    let vm = &bs["vmstat"]["delta"];
    assert_eq!(pins - n(&bs["added_pins"]), n(&vm["acquired"]), "{bs}");
    assert_eq!(n(&bs["releases"]["pin_refs"]), n(&vm["released"]), "{bs}");
    if super::kernel_version() >= (6, 5) {
        // Direct I/O pins from 6.5 (before, its FOLL_GET references are
        // records in both modes).
        assert!(n(&kb["booked"]) >= 1024 + 64, "{kb}");
        assert!(n(&kb["balanced_releases"]) >= 1024, "{kb}");
        // A bio's one record is its completion (four on the event
        // stream); a balanced pin and unpin send none.
        assert!(n(&bs["events"]) < n(&es["events"]) / 4, "{bs}\n{es}");
        assert_eq!(bs["bios"], es["bios"], "{bs}\n{es}");
    }
    assert_eq!(n(&kb["full"]), 0, "{kb}");
}

/// `pintrace run --json EXTRA -- sh -c SCRIPT`, which must succeed: its
/// summary.
fn run_summary(extra: &[&str], script: &str) -> Value {
    let mut args = vec!["run", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = Command::new(bin())
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let s = summary_of(&lines_of(&out.stdout));
    assert!(out.status.success(), "{s}");
    s
}

/// `f` with transparent huge pages off: anonymous buffers are then small
/// folios, a book each (6.12 backs an aligned buffer of 2 MiB or more
/// with one huge folio, whose pins share one book).
fn with_small_pages<T>(f: impl FnOnce() -> T) -> T {
    const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
    /// Puts the mode back however `f` ends (a failed assertion too).
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(mode) = self.0.as_deref().and_then(|b| {
                b.split_whitespace()
                    .find(|w| w.starts_with('['))
                    .map(|w| w.trim_matches(['[', ']']).to_owned())
            }) {
                let _ = std::fs::write(THP, mode);
            }
        }
    }
    let _restore = Restore(std::fs::read_to_string(THP).ok());
    let _ = std::fs::write(THP, "never");
    f()
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn books_too_small_send_the_rest_as_records_and_lose_nothing() {
    let dev = LoopDev::new(16 << 20);
    let me = bin();
    // 8 fixed buffers of 256 KiB: 512 long-term pins at once (on every
    // kernel: Direct I/O pins only from 6.5), 16 of them booked.
    let script = format!(
        "{me} engine -f {} --mode io_uring --fixed-buffers --iodepth 8 --bs 256k \
         --size 4m --rw read >/dev/null",
        dev.path.display()
    );
    let s = with_small_pages(|| run_summary(&["--books-max", "16"], &script));
    let kb = &s["kernel_books"];
    assert_eq!(n(&kb["max"]), 16, "{kb}");
    assert!(n(&kb["full"]) > 0, "{kb}");
    assert!(n(&kb["open_peak"]) <= 16, "{kb}");
    assert_eq!(s["lossless"], true, "{s}");
    assert_eq!(s["findings"], 0, "{s}");
    let vm = &s["vmstat"]["delta"];
    let pins = n(&s["by_kind"]["pin"]["pages"]) + n(&s["by_kind"]["longterm_pin"]["pages"]);
    assert_eq!(pins, n(&vm["acquired"]), "{s}");
    assert_eq!(n(&s["releases"]["pin_refs"]), n(&vm["released"]), "{s}");
    assert!(n(&s["by_kind"]["longterm_pin"]["pages"]) >= 512, "{s}");
    assert_eq!(n(&s["outstanding"]["longterm_pin"]), 0, "{s}");
}

#[test]
#[ignore = "needs a kernel with kprobes/fentry: run by `cargo xtask vm`"]
fn a_1_gib_io_uring_registration_is_booked_and_released() {
    let dev = LoopDev::new(16 << 20);
    let me = bin();
    // 1024 fixed buffers of 1 MiB (anonymous small pages), registered at
    // once: 262,144 long-term pins, held for the 7 s of I/O, released at
    // unregister. Books this large are read every 5 s (`LARGE_SNAPSHOT_NS`),
    // so one reading falls while all are held.
    let script = format!(
        "{me} engine -f {} --mode io_uring --fixed-buffers --iodepth 1024 --bs 1m \
         --size 16m --buffer anon --rw read --runtime 7 >/dev/null",
        dev.path.display()
    );
    let s = with_small_pages(|| run_summary(&[], &script));
    let pins = n(&s["by_kind"]["longterm_pin"]["pages"]);
    assert!(pins >= 262_144, "{s}");
    let kb = &s["kernel_books"];
    assert!(n(&kb["open_peak"]) >= 262_144, "{kb}");
    assert!(n(&kb["booked"]) >= 262_144, "{kb}");
    assert_eq!(n(&kb["full"]), 0, "{kb}");
    assert_eq!(n(&s["released"]["longterm_pin"]), pins, "{s}");
    assert_eq!(n(&s["outstanding"]["longterm_pin"]), 0, "{s}");
    assert_eq!(s["lossless"], true, "{s}");
    assert_eq!(s["findings"], 0, "{s}");
    eprintln!(
        "books: {} folios at most, {} bytes of kernel memory at most ({} per folio)",
        n(&kb["open_peak"]),
        n(&kb["memory_peak_bytes"]),
        n(&kb["memory_peak_bytes"]) / n(&kb["open_peak"]).max(1)
    );
}
