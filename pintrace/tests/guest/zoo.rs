//! The pin-bug zoo (`xtask/pinzoo`) on the real kernel: every scenario runs,
//! the guest survives it, and the kernel's own view (vmstat pin counters,
//! folio refcounts) agrees with what the scenario claims. Then pintrace,
//! attached while the scenarios run, names each bug.

use super::{pintrace, IN_GUEST};
use serde_json::Value;
use std::{path::Path, process::Command, sync::Once};

/// Small folios: one pin adds this to the refcount.
const BIAS: i64 = 1024;
const PAGES: i64 = 16;

/// Loads the module the harness put in the guest (once per test binary).
pub fn load_zoo() {
    static LOAD: Once = Once::new();
    LOAD.call_once(|| {
        if Path::new("/dev/pinzoo").exists() {
            return;
        }
        let ko = std::env::var("PINZOO_KO").expect(
            "PINZOO_KO: the guest has no pinzoo.ko (boot it with `cargo xtask vm --pinzoo`)",
        );
        let out = Command::new("insmod").arg(&ko).output().unwrap();
        assert!(
            out.status.success(),
            "insmod {ko}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Hugetlb scenarios need reserved huge pages.
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", "4");
    });
}

/// `pintrace zoo ARGS`, parsed; panics (with the output) on failure.
pub fn zoo(args: &[&str]) -> Value {
    load_zoo();
    let mut all = vec!["zoo"];
    all.extend_from_slice(args);
    let out = pintrace(&all);
    assert!(out.status.success(), "pintrace zoo {args:?} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().next().expect("one JSON line")).unwrap()
}

/// Runs the zoo `scenarios` one after the other (`--pages PAGES` each)
/// under one `pintrace run --json` with `run_args`, releases whatever they
/// left held, and returns run's exit code and its JSON lines.
fn zoo_session(scenarios: &[&str], run_args: &[&str]) -> (Option<i32>, Vec<Value>) {
    zoo_session_of(scenarios, PAGES, run_args)
}

/// [`zoo_session`] with `pages` pages per scenario.
pub(crate) fn zoo_session_of(
    scenarios: &[&str],
    pages: i64,
    run_args: &[&str],
) -> (Option<i32>, Vec<Value>) {
    let me = super::bin();
    let script = scenarios
        .iter()
        .map(|s| format!("{me} zoo run {s} --pages {pages}"))
        .collect::<Vec<_>>()
        .join(" && ");
    let mut args = vec!["run", "--json"];
    args.extend_from_slice(run_args);
    args.extend_from_slice(&["--", "sh", "-c", &script]);
    let out = pintrace(&args);
    release_all();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.code(), lines)
}

/// The summary's tally of the process that ran `run` (a zoo run's output).
fn process_of(summary: &Value, run: &Value) -> Value {
    summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tgid"] == run["pid"])
        .cloned()
        .unwrap_or_else(|| panic!("no process {} in {summary}", run["pid"]))
}

/// The summary line of a zoo session's output.
pub(crate) fn summary_in(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|v| v["type"] == "summary")
        .expect("a summary")
}

/// The findings of one zoo run's process in a session's output.
fn findings_of<'a>(lines: &'a [Value], run: &Value) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "finding" && v["tgid"] == run["pid"])
        .collect()
}

/// The zoo runs' own lines (one per scenario) of a session's output.
pub(crate) fn runs_in(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| v.get("scenario").is_some())
        .collect()
}

fn num(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn release_all() -> Value {
    zoo(&["release-all"])
}

/// The kernel complained about nothing: no bad page, no BUG, no WARNING.
pub(crate) fn assert_kernel_quiet() {
    let out = Command::new("dmesg").output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["Bad page", "BUG:", "WARNING:", "refcount_t:"]
                .iter()
                .any(|p| l.contains(p))
        })
        .collect();
    assert!(bad.is_empty(), "the kernel complained:\n{}", bad.join("\n"));
}

fn thp_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map(|s| !s.contains("[never]"))
        .unwrap_or(false)
}

/// What each scenario claims, checked against vmstat and refcounts. The
/// guest is otherwise idle, so the pin counters move by exactly what the
/// scenario did.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn zoo_scenarios_match_the_kernels_view() {
    let _ = IN_GUEST;
    release_all();
    let p = PAGES.to_string();

    let b = zoo(&["run", "balanced", "--pages", &p]);
    assert_eq!((num(&b, "acquired"), num(&b, "released")), (PAGES, PAGES));
    assert_eq!(b["large"], false);
    assert_eq!(
        num(&b, "refcount_acquired") - num(&b, "refcount_released"),
        BIAS
    );
    assert_eq!(
        (num(&b, "vmstat_acquired"), num(&b, "vmstat_released")),
        (PAGES, PAGES)
    );

    let l = zoo(&["run", "leak", "--pages", &p]);
    assert_eq!(
        (num(&l, "vmstat_acquired"), num(&l, "vmstat_released")),
        (PAGES, 0)
    );
    assert!(num(&l, "handle") > 0);

    // put_page on a pinned small page drops 1 of its 1024: the pin stays.
    let pp = zoo(&["run", "pin-put", "--pages", &p]);
    assert_eq!(
        num(&pp, "refcount_acquired") - num(&pp, "refcount_released"),
        1
    );
    assert_eq!(
        (num(&pp, "vmstat_acquired"), num(&pp, "vmstat_released")),
        (PAGES, 0)
    );

    let r = release_all();
    assert_eq!(
        (num(&r, "unpinned"), num(&r, "repaired"), num(&r, "held")),
        (PAGES, PAGES, 0)
    );

    // unpin of a FOLL_GET page takes 1024 it never added (padded by the
    // module so that the guest survives) and counts a release of no pin.
    let gu = zoo(&["run", "get-unpin", "--pages", &p]);
    assert_eq!(
        (num(&gu, "vmstat_acquired"), num(&gu, "vmstat_released")),
        (0, PAGES)
    );
    assert_eq!(
        num(&gu, "refcount_acquired") - num(&gu, "refcount_released"),
        BIAS
    );
    assert_eq!(
        num(&gu, "refcount_released") - num(&gu, "refcount_repaired"),
        1
    );

    let du = zoo(&["run", "double-unpin", "--pages", &p]);
    assert_eq!(num(&du, "released"), 2 * PAGES);
    assert_eq!(
        (num(&du, "vmstat_acquired"), num(&du, "vmstat_released")),
        (PAGES, 2 * PAGES)
    );
    assert_eq!(
        num(&du, "refcount_acquired") - num(&du, "refcount_released"),
        2 * BIAS
    );

    // A slow but correct release, by a kernel worker.
    let before = pintrace::kernel::vmstat::read().unwrap();
    let d = zoo(&["run", "delayed", "--pages", &p, "--delay-ms", "300"]);
    assert_eq!(num(&d, "vmstat_released"), 0);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let delta = before.delta_to(&pintrace::kernel::vmstat::read().unwrap());
    assert_eq!(
        (delta.acquired, delta.released),
        (PAGES as u64, PAGES as u64)
    );

    // A long-term pin, held until its explicit release.
    let h = zoo(&["run", "hold", "--longterm", "--pages", &p]);
    assert_eq!(num(&h, "vmstat_released"), 0);
    let handle = num(&h, "handle").to_string();
    let r = zoo(&["release", &handle]);
    assert_eq!((num(&r, "unpinned"), num(&r, "held")), (PAGES, 0));
    assert_kernel_quiet();
}

/// Large folios: a pin adds 1 per page to the folio's refcount (and its
/// pin count), so the same scenarios move refcounts by pages, not by 1024.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn zoo_large_folio_scenarios_match_the_kernels_view() {
    release_all();
    let mut kinds = vec![];
    if thp_available() {
        kinds.push("thp");
    } else {
        eprintln!("skipping thp: transparent hugepages are disabled");
    }
    kinds.push("hugetlb");
    let p = PAGES.to_string();
    for buffer in kinds {
        let b = zoo(&["run", "balanced", "--buffer", buffer, "--pages", &p]);
        assert_eq!(b["large"], true, "{buffer}: {b}");
        assert_eq!(
            num(&b, "refcount_acquired") - num(&b, "refcount_released"),
            PAGES
        );
        assert_eq!(
            (num(&b, "vmstat_acquired"), num(&b, "vmstat_released")),
            (PAGES, PAGES)
        );

        let l = zoo(&["run", "leak", "--buffer", buffer, "--pages", &p]);
        assert_eq!(
            (num(&l, "vmstat_acquired"), num(&l, "vmstat_released")),
            (PAGES, 0)
        );

        let pp = zoo(&["run", "pin-put", "--buffer", buffer, "--pages", &p]);
        assert_eq!(
            num(&pp, "refcount_acquired") - num(&pp, "refcount_released"),
            PAGES
        );
        assert_eq!(
            (num(&pp, "vmstat_acquired"), num(&pp, "vmstat_released")),
            (PAGES, 0)
        );

        let r = release_all();
        assert_eq!(
            (num(&r, "unpinned"), num(&r, "repaired")),
            (PAGES, PAGES),
            "{buffer}"
        );

        // The underflow scenarios are refused on large folios (they could
        // not be made survivable).
        let out = pintrace(&["zoo", "run", "get-unpin", "--buffer", buffer, "--pages", &p]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("small pages"));
    }
    assert_kernel_quiet();
}

/// pintrace attached while the zoo plants every bug in turn names each one,
/// with the process that did it, the folio and a kernel stack in the module,
/// and says nothing about the correct scenarios.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn pintrace_names_each_planted_bug() {
    load_zoo();
    release_all();
    let (code, lines) = zoo_session(
        &[
            "balanced",
            "leak",
            "pin-put",
            "get-unpin",
            "double-unpin",
            "delayed --delay-ms 300",
            "balanced --slow",
            "get-unpin --slow",
            "hold --linger 4",
            "hold --longterm --linger 1",
        ],
        &["--leak-age", "2"],
    );
    assert_eq!(code, Some(1), "findings make run exit 1");
    let summary = summary_in(&lines);
    assert_eq!(summary["lossless"], true, "{summary}");
    assert!(
        summary["audited_folios"].as_u64().unwrap() >= 2 * PAGES as u64,
        "{summary}"
    );
    let runs = runs_in(&lines);
    assert_eq!(runs.len(), 10, "every scenario ran");
    // The slow calls are seen at their own sites (pin_user_pages, get_user_pages).
    let slow = |i: usize| {
        let pid = &runs[i]["pid"];
        let p = summary["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| &p["tgid"] == pid)
            .unwrap_or_else(|| panic!("no process {pid} in {summary}"));
        p["by_kind"].clone()
    };
    assert_eq!(slow(6)["pin"]["pages"], PAGES, "pin_user_pages");
    // exec(2) copies its arguments with get_user_pages_remote: the same
    // process also shows those FOLL_GET pages.
    assert!(
        slow(7)["get"]["pages"].as_i64().unwrap() > PAGES,
        "get_user_pages"
    );
    // ... and its unpins are named (below) only because the ledger saw the
    // FOLL_GET acquire at get_user_pages.

    let of = |run: &Value| findings_of(&lines, run);
    let kinds = |run: &Value| -> Vec<String> {
        let mut k: Vec<String> = of(run)
            .iter()
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let leaks = ["leak_at_end", "leak_old", "leak_owner_exited"];
    for run in &runs {
        let scenario = run["scenario"].as_str().unwrap();
        let mine = of(run);
        let k = kinds(run);
        match scenario {
            "balanced" | "delayed" => assert!(mine.is_empty(), "{scenario}: {mine:?}"),
            "leak" => {
                assert_eq!(mine.len() as i64, PAGES, "{scenario}: {mine:?}");
                assert!(
                    k.iter().all(|k| leaks.contains(&k.as_str())),
                    "{scenario}: {k:?}"
                );
            }
            // put_page is invisible, but the refcount audit at the end sees
            // each pin's 1024 gone (possibly after a leak_old report).
            "pin-put" => {
                let audit: Vec<_> = mine
                    .iter()
                    .filter(|f| f["kind"] == "pin_released_as_get")
                    .collect();
                assert_eq!(audit.len() as i64, PAGES, "{scenario}: {mine:?}");
                assert!(audit.iter().all(|f| f["certain"] == true));
                assert!(
                    k.iter()
                        .all(|k| k == "pin_released_as_get" || leaks.contains(&k.as_str())),
                    "{k:?}"
                );
            }
            "get-unpin" => assert_eq!(k, ["unpin_of_get_page"], "{mine:?}"),
            "double-unpin" => assert_eq!(k, ["double_unpin"], "{mine:?}"),
            "hold" if run["pid"].is_number() && k == ["longterm_held_at_end"] => {}
            "hold" => assert_eq!(k, ["leak_old"], "{mine:?}"),
            other => panic!("unexpected scenario {other}"),
        }
        if matches!(scenario, "get-unpin" | "double-unpin") {
            assert_eq!(
                mine.len() as i64,
                PAGES,
                "{scenario}: one per page: {mine:?}"
            );
            assert!(mine.iter().all(|f| f["certain"] == true));
        }
        if !mine.is_empty() {
            // The first page's folio is named, and the stack is the module's.
            let folio = run["folio"].as_str().unwrap();
            assert!(
                mine.iter()
                    .any(|f| format!("{:#x}", f["folio"].as_u64().unwrap()) == folio),
                "{scenario}: no finding names folio {folio}: {mine:?}"
            );
            let stack = mine[0]["stack"].to_string();
            assert!(stack.contains("pinzoo"), "{scenario}: stack {stack}");
        }
    }
    let longterm = runs
        .iter()
        .filter(|r| r["scenario"] == "hold")
        .map(|r| kinds(r))
        .collect::<Vec<_>>();
    assert_eq!(
        longterm,
        [
            vec!["leak_old".to_string()],
            vec!["longterm_held_at_end".to_string()]
        ]
    );
    assert_kernel_quiet();
}

/// Pins tied to their bio: a Direct I/O bio filled from a buffer and
/// completed without releasing its pages is one finding naming the bio (its
/// device, size and the module's stack), reported while its owner is still
/// alive; the same bio released properly is silent, its references counted
/// as released (6.12: unpins; 6.1: FOLL_GET references put by the bio release).
/// The same with the full event stream and with the kernel books.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn pintrace_ties_pins_to_their_bio() {
    load_zoo();
    release_all();
    let dev = super::LoopDev::new(4 << 20);
    let devpath = dev.path.to_str().unwrap().to_string();
    let me = super::bin();
    let script = format!(
        "{me} zoo run bio-balanced --pages {PAGES} --bdev {devpath} && \
         {me} zoo run bio-leak --pages {PAGES} --bdev {devpath} --linger 4"
    );
    // Pins are tied to their bios on the full event stream and in the
    // kernel books alike.
    for mode in ["events", "kernel"] {
        let out = pintrace(&["run", "--json", "--books", mode, "--", "sh", "-c", &script]);
        release_all();
        assert_eq!(out.status.code(), Some(1), "the leak makes run exit 1");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let summary = lines.iter().find(|v| v["type"] == "summary").unwrap();
        assert_eq!(summary["lossless"], true, "{mode}: {summary}");
        let runs = runs_in(&lines);
        assert_eq!(runs.len(), 2, "{stdout}");
        let of = |run: &Value| findings_of(&lines, run);
        // Balanced: silent, and every reference it took came back.
        assert!(of(runs[0]).is_empty(), "{:?}", of(runs[0]));
        let process = |run: &Value| process_of(summary, run);
        let kind = if super::kernel_version() >= (6, 5) {
            "pin"
        } else {
            "get"
        };
        assert_eq!(process(runs[0])["released"][kind], PAGES, "{summary}");
        // Leak: exactly one finding, the bio's, naming it.
        let mine = of(runs[1]);
        assert_eq!(mine.len(), 1, "{mode}: one finding for one bio: {mine:?}");
        let f = mine[0];
        assert_eq!(f["kind"], "leak_after_bio", "{mode}: {f}");
        assert_eq!(f["refs"], PAGES, "{f}");
        assert_eq!(f["bio"]["bytes"], PAGES * 4096, "{f}");
        let meta = std::fs::metadata(&devpath).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let rdev = meta.rdev();
        assert_eq!(
            (f["bio"]["major"].as_u64(), f["bio"]["minor"].as_u64()),
            (
                Some(libc::major(rdev) as u64),
                Some(libc::minor(rdev) as u64)
            ),
            "{f}"
        );
        // The event stream names the bio's first page's folio, as the zoo
        // does; the kernel books do not keep the order of a bio's pages
        // and name its folio of the lowest address.
        if mode == "events" {
            let folio = runs[1]["folio"].as_str().unwrap();
            assert_eq!(format!("{:#x}", f["folio"].as_u64().unwrap()), folio, "{f}");
        }
        let stack = f["stack"].to_string();
        assert!(stack.contains("pinzoo"), "{stack}");
        assert!(stack.contains("bio_iov_iter_get_pages"), "{stack}");
        assert!(
            summary["bios"]["filled"].as_u64().unwrap() >= 2,
            "{summary}"
        );
    }
    assert_kernel_quiet();
}

/// The CI gate fails on a planted bug: with the zoo unpinning FOLL_GET
/// pages while the scenarios run, `pintrace check` exits 1 and its JUnit
/// report names the failing scenario and the finding, with the module's stack.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn check_fails_on_a_planted_bug() {
    load_zoo();
    let me = super::bin();
    let mut planter = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while true; do {me} zoo run get-unpin --pages 4 >/dev/null; sleep 0.2; done"
        ))
        .spawn()
        .unwrap();
    let junit = format!("/tmp/check-zoo-{}.xml", std::process::id());
    let out = pintrace(&[
        "check",
        "--quick",
        "--scenarios",
        "block/psync/*",
        "--json",
        "--junit",
        &junit,
    ]);
    let _ = planter.kill();
    let _ = planter.wait();
    release_all();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a planted bug must fail the check"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&Value> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "fail")
        .collect();
    assert!(!failed.is_empty(), "{report}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let name = failed[0]["name"].as_str().unwrap();
    assert!(xml.contains(&format!("<testcase name=\"{name}\"")), "{xml}");
    assert!(xml.contains("<failure"), "{xml}");
    assert!(
        xml.contains("unpin of FOLL_GET page") || xml.contains("unpin_of_get_page"),
        "{xml}"
    );
    assert!(xml.contains("pinzoo_ioctl"), "the finding's stack: {xml}");
    let _ = std::fs::remove_file(&junit);
    assert_kernel_quiet();
}

/// The `_unlocked` calls (vfio's, KVM's slow path, some drivers'), with
/// their `pages` array before the flags: a balanced pin and a leak through
/// `pin_user_pages_unlocked` are seen at that site, each page once (on 6.1
/// it enters `get_user_pages_unlocked`, which the plan leaves off there so
/// nothing is counted twice); where `get_user_pages_unlocked` nests in
/// nothing (6.3 on) it is watched too and its unpin of a FOLL_GET page is
/// named.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn pintrace_sees_the_unlocked_calls() {
    load_zoo();
    release_all();
    let nested = super::kernel_version() < (6, 3);
    let mut scenarios = vec!["balanced --unlocked", "leak --unlocked"];
    if !nested {
        scenarios.push("get-unpin --unlocked");
    }
    let (code, lines) = zoo_session(&scenarios, &[]);
    assert_eq!(code, Some(1), "the leak is a finding");
    let summary = summary_in(&lines);
    assert_eq!(summary["lossless"], true, "{summary}");
    let plan = summary["plan"].as_str().unwrap();
    assert!(plan.contains("pin_user_pages_unlocked=fexit"), "{plan}");
    let get_unlocked = if nested { "off" } else { "fexit" };
    assert!(
        plan.contains(&format!("get_user_pages_unlocked={get_unlocked}")),
        "{plan}"
    );
    let runs = runs_in(&lines);
    assert_eq!(runs.len(), scenarios.len(), "every scenario ran");
    let process = |run: &Value| process_of(summary, run);
    let findings = |run: &Value| findings_of(&lines, run);
    for run in &runs[..2] {
        let p = process(run);
        // Each page once, at the site it was taken through.
        assert_eq!(p["by_kind"]["pin"]["pages"], PAGES, "{p}");
        assert_eq!(
            p["by_site"]["pin_user_pages_unlocked"]["pages"], PAGES,
            "{p}"
        );
    }
    assert!(findings(runs[0]).is_empty(), "{:?}", findings(runs[0]));
    let leaks = findings(runs[1]);
    assert_eq!(leaks.len() as i64, PAGES, "{leaks:?}");
    assert!(leaks
        .iter()
        .all(|f| f["kind"].as_str().unwrap().starts_with("leak")));
    let stack = leaks[0]["stack"].to_string();
    assert!(stack.contains("pinzoo"), "{stack}");
    if !nested {
        let p = process(runs[2]);
        assert!(
            p["by_site"]["get_user_pages_unlocked"]["pages"]
                .as_i64()
                .unwrap()
                >= PAGES,
            "{p}"
        );
        let mine = findings(runs[2]);
        assert_eq!(mine.len() as i64, PAGES, "{mine:?}");
        assert!(mine.iter().all(|f| f["kind"] == "unpin_of_get_page"));
    }
    // The kernel's counters: the pins of both runs, taken once each.
    let delta = &summary["vmstat"]["delta"];
    assert_eq!(delta["acquired"], 2 * PAGES, "{delta}");
    assert_kernel_quiet();
}

/// Sampled stacks (the default) and none. A leak of 256 pages is one call:
/// its stack is taken and names the module. The 256 right unpins of the
/// double-unpin scenario come faster than one stack per millisecond, so
/// most go without; each wrong unpin after them takes its stack anyway,
/// because the folio's refcount shows it is wrong. With `--stacks none`
/// the same findings are made, and say they have no stack.
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn sampled_stacks_still_name_each_bug() {
    const N: i64 = 256;
    load_zoo();
    release_all();
    for policy in ["sampled", "none"] {
        let (code, lines) = zoo_session_of(&["leak", "double-unpin"], N, &["--stacks", policy]);
        assert_eq!(code, Some(1), "{policy}: findings make run exit 1");
        let summary = summary_in(&lines);
        assert_eq!(summary["lossless"], true, "{summary}");
        let runs = runs_in(&lines);
        assert_eq!(runs.len(), 2, "{policy}: both scenarios ran");
        let of = |run: &Value| findings_of(&lines, run);
        let (leaks, doubles) = (of(runs[0]), of(runs[1]));
        assert_eq!(leaks.len() as i64, N, "{policy}: {leaks:?}");
        assert_eq!(doubles.len() as i64, N, "{policy}: {doubles:?}");
        assert!(doubles.iter().all(|f| f["kind"] == "double_unpin"));
        let stacks = &summary["stacks"];
        let named = |f: &&Value| f["stack"].to_string().contains("pinzoo");
        match policy {
            "sampled" => {
                assert!(leaks.iter().all(named), "{policy}: {:?}", leaks[0]);
                assert!(doubles.iter().all(named), "{policy}: {doubles:?}");
                assert!(num(stacks, "sampled_out") > 0, "{stacks}");
                assert!(num(stacks, "taken") > N, "{stacks}");
            }
            _ => {
                assert!(!leaks.iter().chain(&doubles).any(named));
                assert_eq!(num(stacks, "taken"), 0, "{stacks}");
                // Each wrong unpin asked for one (the right ones balance
                // in the kernel books without asking).
                assert!(num(stacks, "sampled_out") >= N, "{stacks}");
            }
        }
    }
    assert_kernel_quiet();
}

/// The summary's top stacks table names the stack of a planted leak: the
/// zoo's `leak` pins PAGES pages in one call from the module's ioctl and
/// never unpins them. Its stack is the table's first row: PAGES FOLL_PIN
/// references, held by the zoo's process, with the frames its leak
/// findings carry (the module's named `[pinzoo]`, no probe frame).
#[test]
#[ignore = "needs the pinzoo module in a guest: run by `cargo xtask vm`"]
fn the_top_stacks_table_names_a_planted_leak() {
    load_zoo();
    release_all();
    let (code, lines) = zoo_session(&["balanced", "leak"], &[]);
    assert_eq!(code, Some(1), "the leak fails the run");
    let summary = summary_in(&lines);
    assert_eq!(summary["lossless"], true, "{summary}");
    let runs = runs_in(&lines);
    assert_eq!(runs.len(), 2, "both scenarios ran");
    let leak = runs[1];
    let rows = summary["top_stacks"].as_array().expect("top_stacks");
    let top = &rows[0];
    assert!(top["stack_id"].is_number(), "{top}");
    assert_eq!(num(top, "refs"), PAGES, "{top}");
    assert_eq!(num(&top["by_kind"], "pin"), PAGES, "{top}");
    assert!((1..=PAGES).contains(&num(top, "folios")), "{top}");
    assert_eq!(top["processes"][0]["tgid"], leak["pid"], "{top}");
    assert_eq!(num(top, "process_count"), 1, "{top}");
    assert!(num(top, "oldest_age_ns") > 0, "{top}");
    let frames: Vec<&str> = top["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with("pinzoo_") && f.ends_with(" [pinzoo]")),
        "the module's frame names its module: {frames:?}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| f.starts_with("bpf_prog_") || f.starts_with("bpf_trampoline_")),
        "{frames:?}"
    );
    // The same frames as the leak's findings.
    let finding = lines
        .iter()
        .find(|v| v["type"] == "finding" && v["tgid"] == leak["pid"])
        .expect("the leak's findings");
    assert_eq!(finding["stack"], top["frames"], "{finding}");
    // The table is the books after the end's judgements; `outstanding` was
    // sampled just before them, when FOLL_GET references of processes that
    // had exited could still be in the books: never fewer.
    let held: i64 = rows.iter().map(|r| num(r, "refs")).sum::<i64>()
        + num(&summary["top_stacks_omitted"], "refs");
    let outstanding: i64 = ["pin", "longterm_pin", "get"]
        .iter()
        .map(|k| num(&summary["outstanding"], k))
        .sum();
    assert!(PAGES <= held && held <= outstanding, "{summary}");
    assert_kernel_quiet();
}
