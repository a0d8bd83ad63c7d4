//! The end-of-run summary: its model (serialized as the JSON summary) and, in `text`, its text.

use crate::{
    kernel::vmstat::PinCounters,
    ledger::{BioCounts, Completions, Counts, Kind, ProcessTally, Releases, StackCounts, Tally},
    model::{stacks::TopStacks, LifetimeSummary},
};
use serde::Serialize;
use std::collections::BTreeMap;

mod text;

pub use text::render;

#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    pub command: Vec<String>,
    pub pid: u32,
    /// Exit code, or `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl Workload {
    pub fn new(command: Vec<String>, pid: u32, status: std::process::ExitStatus) -> Workload {
        use std::os::unix::process::ExitStatusExt as _;
        Workload {
            command,
            pid,
            exit_code: status.code(),
            signal: status.signal(),
        }
    }

    /// The code a shell would report for it: its exit code, or 128+N when
    /// killed by signal N.
    pub fn shell_code(&self) -> u8 {
        match (self.exit_code, self.signal) {
            (Some(code), _) => code as u8,
            (None, Some(sig)) => (128 + sig) as u8,
            (None, None) => 128,
        }
    }

    /// Says on stderr that it failed, when it did.
    pub fn report_failure(&self) {
        let how = match (self.exit_code, self.signal) {
            (Some(0), _) => return,
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "killed by a signal".into(),
        };
        eprintln!(
            "pintrace: the workload `{}` did not succeed ({how})",
            self.command.join(" ")
        );
    }
}

/// What the agent itself used (getrusage of its own process, not the
/// workload's).
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct AgentUsage {
    pub user_s: f64,
    pub system_s: f64,
    /// CPU time (user + system) since the probes were attached: without
    /// the start-up (loading and verifying the probes, reading BTF).
    pub tracing_cpu_s: f64,
    pub max_rss_kib: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VmstatCheck {
    pub before: PinCounters,
    pub after: PinCounters,
    pub delta: PinCounters,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub kernel: String,
    pub plan: String,
    pub duration_s: f64,
    pub events: u64,
    pub by_kind: BTreeMap<Kind, Counts>,
    pub processes: Vec<ProcessTally>,
    pub completions: Completions,
    pub bios: BioCounts,
    /// References released (matched to their acquire), by kind.
    pub released: BTreeMap<Kind, u64>,
    /// Leaks and mismatches reported, by the kind of reference involved.
    pub leaks: BTreeMap<Kind, u64>,
    pub mismatches: BTreeMap<Kind, u64>,
    /// Events the kernel side could not deliver, by cause.
    pub lost: BTreeMap<&'static str, u64>,
    pub decode_errors: u64,
    pub lossless: bool,
    /// Findings reported (leaks, mismatches, long-term pins held at the end).
    pub findings: u64,
    /// Findings that fail a check (all but long-term pins of live owners).
    pub failures: u64,
    /// Pin releases of folios pinned before tracing began (never findings).
    pub unknown_releases: u64,
    pub releases: Releases,
    /// Folios whose refcount was audited at the end (`None`: not run: a
    /// replay, or a kernel without syscall tracepoints).
    pub audited_folios: Option<u64>,
    /// References still held when the summary was made, by kind.
    pub outstanding: BTreeMap<Kind, u64>,
    /// How long pins were held (acquire to release).
    pub pin_lifetime: LifetimeSummary,
    pub vmstat: Option<VmstatCheck>,
    /// Pins added by `folio_add_pin` (legacy fs/direct-io.c), included in
    /// `by_kind` but not in `nr_foll_pin_acquired`: the traced pins are the
    /// vmstat delta plus these.
    pub added_pins: u64,
    pub stacks: StackCounts,
    /// The stacks holding the most references at the end (`--top-stacks`;
    /// system-wide, like `outstanding`), with their frames: `top_stacks`
    /// and `top_stacks_omitted` in JSON.
    #[serde(flatten)]
    pub top_stacks: TopStacks,
    /// `--pid` / `--comm` given (`"pid 42, comm dd"`): `processes` and
    /// the findings are those processes' only. `by_kind`, `released`,
    /// `outstanding`, `leaks` and `mismatches` are those of the
    /// processes the probes filtered (`filtered_in_kernel`, `"pid 42"`: a
    /// live `-p`), else system-wide (the books cover every process).
    /// `vmstat` is always system-wide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered_in_kernel: Option<String>,
    pub workload: Option<Workload>,
    /// The agent's own CPU time and memory (live runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentUsage>,
    /// Where the books were kept: `"kernel"` (the default) or `"events"`
    /// (the full event stream: `--events`, `--record`, a replay).
    pub books_mode: &'static str,
    /// With the kernel books: what they held and did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_books: Option<KernelBooksUsage>,
    /// Live runs: the probe runs the kernel skipped because the program
    /// was already running on that CPU (an interrupt nested in it), and how
    /// many of them the sites' second programs sent instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursion: Option<Recursion>,
}

/// Probe runs an interrupt nested in a running probe (see [`Summary`]):
/// `lost.recursion_misses` is what `skipped` holds beyond `recovered`,
/// but for `block_rq_complete`'s (a request missing from `completions`
/// only: no pin or bio event).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recursion {
    /// By program, those with any.
    pub skipped: BTreeMap<String, u64>,
    pub recovered: u64,
}

/// The kernel books of a live run (see `pintrace_common::books`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelBooksUsage {
    /// `--books-max`.
    pub max: u32,
    /// Pins booked in the kernel (no record sent).
    pub booked: u64,
    /// `gup_put_folio` calls the books balanced, and the references.
    pub balanced_releases: u64,
    /// Folios handed to the ledger (shared, or unpinned in a way their
    /// book did not cover).
    pub escalated: u64,
    /// Pins sent as records because the books were full: not lost.
    pub full: u64,
    /// Folios booked at the last reading, and at most.
    pub open_at_end: u64,
    pub open_peak: u64,
    /// The most kernel memory the books map took, as the kernel accounts
    /// it (bytes).
    pub memory_peak_bytes: u64,
}

impl Summary {
    pub fn new(
        tally: &Tally,
        kernel: String,
        plan: String,
        duration_s: f64,
        lost: BTreeMap<&'static str, u64>,
        decode_errors: u64,
    ) -> Summary {
        let lossless = lost.values().all(|&v| v == 0) && decode_errors == 0;
        Summary {
            kind: "summary",
            kernel,
            plan,
            duration_s,
            events: tally.events,
            by_kind: tally.by_kind.clone(),
            processes: tally.processes().into_iter().take(20).cloned().collect(),
            completions: tally.completions,
            bios: tally.bios,
            released: tally.released.clone(),
            leaks: BTreeMap::new(),
            mismatches: BTreeMap::new(),
            lost,
            decode_errors,
            lossless,
            findings: 0,
            failures: 0,
            unknown_releases: 0,
            releases: tally.releases,
            audited_folios: None,
            outstanding: Kind::ALL.iter().map(|&k| (k, 0)).collect(),
            pin_lifetime: LifetimeSummary::default(),
            vmstat: None,
            added_pins: tally.added_pins,
            stacks: tally.stacks,
            top_stacks: TopStacks::default(),
            filter: None,
            filtered_in_kernel: None,
            workload: None,
            agent: None,
            books_mode: "events",
            kernel_books: None,
            recursion: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::flags::FollFlags;

    #[test]
    fn lossy_runs_say_so() {
        let t = Tally::new(FollFlags::FROM_6_3);
        let mut lost = BTreeMap::new();
        lost.insert("ringbuf_full", 3);
        let s = Summary::new(&t, "6.12".into(), "p".into(), 1.0, lost, 0);
        assert!(!s.lossless);
        let text = render(&s);
        assert!(
            text.contains("LOSSY") && text.contains("ringbuf_full=3"),
            "{text}"
        );
        assert!(text.contains("none certain"), "{text}");
        let s = Summary::new(&t, "6.12".into(), "p".into(), 1.0, BTreeMap::new(), 0);
        assert!(s.lossless && render(&s).contains("(lossless)"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["type"], "summary");
        assert_eq!(json["by_kind"]["pin"]["pages"], 0);
    }

    #[test]
    fn a_filtered_run_labels_the_system_wide_table() {
        let t = Tally::new(FollFlags::FROM_6_3);
        let mut s = Summary::new(&t, "6.12".into(), "p".into(), 1.0, BTreeMap::new(), 0);
        let text = render(&s);
        assert!(
            text.contains("\nacquired as") && !text.contains("system-wide"),
            "{text}"
        );
        s.filter = Some("pid 42".into());
        let text = render(&s);
        assert!(
            text.contains("acquired as, every process (system-wide; not filtered by pid 42)"),
            "{text}"
        );
        assert_eq!(serde_json::to_value(&s).unwrap()["filter"], "pid 42");
        s.filtered_in_kernel = Some("pid 42".into());
        let text = render(&s);
        assert!(
            text.contains("acquired as, pid 42 only (filtered in the kernel)"),
            "{text}"
        );
        assert!(text.contains("vmstat") || s.vmstat.is_none());
        assert_eq!(
            serde_json::to_value(&s).unwrap()["filtered_in_kernel"],
            "pid 42"
        );
    }

    /// A leak of 3 pins at stack 13, 1 still held at stack 11, 2 without a
    /// stack; the table through the real ledger, at 2 s.
    fn with_top_stacks(top: usize) -> Summary {
        use crate::{
            ledger::{Ledger, LedgerConfig},
            model::stacks::{top_stacks, StackSort},
            stream::pipeline::Pipeline,
            synth::{folio, Stream, MS},
        };
        let mut st = Stream::new(1_000 * MS);
        st.pin(150, "leaky", 13, &[folio(1), folio(2), folio(3)]);
        st.wait(500 * MS).pin(149, "dd", 11, &[folio(4)]);
        st.wait(10 * MS).pin(
            149,
            "dd",
            pintrace_common::STACK_NOT_TAKEN,
            &[folio(5), folio(6)],
        );
        let mut p = Pipeline::new(Ledger::new(st.flags, LedgerConfig::default()));
        let mut found = Vec::new();
        for (_, r) in &st.records {
            p.feed(r, &mut found);
        }
        let mut s = Summary::new(
            &p.ledger.tally,
            "6.12".into(),
            "p".into(),
            2.0,
            BTreeMap::new(),
            0,
        );
        let mut t = top_stacks(
            p.ledger.holders_by_folio(),
            3_000 * MS,
            StackSort::Refs,
            top,
        );
        t.symbolize(|id| match id {
            13 => vec![
                "pin_user_pages_fast+0x9".into(),
                "pinzoo_ioctl+0x55e [pinzoo]".into(),
            ],
            _ => Vec::new(),
        });
        s.top_stacks = t;
        s
    }

    #[test]
    fn the_top_stacks_are_printed_with_their_frames_as_memleak_does() {
        let text = render(&with_top_stacks(10));
        let want = "\ntop stacks holding references: 6 reference(s) from 2 stack(s), the 1 holding the most shown\n    \
            3 reference(s) (FOLL_PIN 3) in 3 holder(s) on 3 folio(s) by leaky/150, oldest 2.00 s, median 2.00 s, from stack 13:\n        \
            pin_user_pages_fast+0x9\n        \
            pinzoo_ioctl+0x55e [pinzoo]\n    \
            2 reference(s) (FOLL_PIN 2) in 2 holder(s) on 2 folio(s) by dd/149, oldest 1.49 s, median 1.49 s, with no stack (sampled out, --stacks none, or not stored)\n    \
            ... and 1 more stack(s): 1 reference(s) in 1 holder(s)\n";
        let text1 = render(&with_top_stacks(1));
        assert!(text1.contains(want), "{text1}");
        assert!(
            text.contains("1 reference(s) (FOLL_PIN 1) in 1 holder(s) on 1 folio(s) by dd/149, oldest 1.50 s, median 1.50 s, from stack 11:\n        (stack 11 not available)\n"),
            "{text}"
        );
        assert!(!text.contains("more stack(s)"), "{text}");
        // Hidden with 0, as with nothing held.
        assert!(!render(&with_top_stacks(0)).contains("top stacks"));
    }

    #[test]
    fn the_json_summary_carries_the_top_stacks_as_an_array_with_frames() {
        let json =
            serde_json::to_value(pintrace_engine::schema::versioned(&with_top_stacks(1))).unwrap();
        assert_eq!(json["schema"], 1);
        let rows = json["top_stacks"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{json}");
        assert_eq!(rows[0]["stack_id"], 13);
        assert_eq!(rows[0]["refs"], 3);
        assert_eq!(rows[0]["by_kind"]["pin"], 3);
        assert_eq!(rows[0]["by_kind"]["longterm_pin"], 0);
        assert_eq!(
            (rows[0]["holders"].clone(), rows[0]["folios"].clone()),
            (3.into(), 3.into())
        );
        assert_eq!(rows[0]["processes"][0]["comm"], "leaky");
        assert_eq!(rows[0]["processes"][0]["tgid"], 150);
        assert_eq!(rows[0]["process_count"], 1);
        assert_eq!(rows[0]["oldest_age_ns"], 2_000_000_000u64);
        assert_eq!(rows[0]["frames"][1], "pinzoo_ioctl+0x55e [pinzoo]");
        assert!(rows[1]["stack_id"].is_null(), "{json}");
        assert_eq!(json["top_stacks_omitted"]["stacks"], 1);
        assert_eq!(json["top_stacks_omitted"]["refs"], 1);
    }

    #[test]
    fn sampled_out_stacks_are_counted() {
        use crate::{stream::events::Event, synth};
        let mut t = Tally::new(FollFlags::FROM_6_3);
        let acquire = |stack_id| crate::stream::events::Acquire {
            site: pintrace_common::Site::PinUserPagesFast,
            ts_ns: 1,
            tgid: 9,
            tid: 9,
            start: 0,
            pages_array: 0,
            ret: 1,
            nr_pages: 1,
            gup_flags: FollFlags::FROM_6_3.pin,
            stack_id,
            folio_records: 1,
            comm: synth::comm("engine"),
            counted: false,
        };
        let plain = Summary::new(&t, "6.12".into(), "p".into(), 1.0, BTreeMap::new(), 0);
        assert!(!render(&plain).contains("stacks:"));
        t.apply(&Event::Acquire(acquire(4)));
        t.apply(&Event::Acquire(acquire(pintrace_common::STACK_NOT_TAKEN)));
        t.apply(&Event::Acquire(acquire(pintrace_common::STACK_NOT_TAKEN)));
        t.apply(&Event::Acquire(acquire(-17)));
        let s = Summary::new(&t, "6.12".into(), "p".into(), 1.0, BTreeMap::new(), 0);
        assert_eq!(
            (s.stacks.taken, s.stacks.sampled_out, s.stacks.failed),
            (1, 2, 1)
        );
        let text = render(&s);
        assert!(
            text.contains(
                "stacks: 1 of 4 acquires and releases carry one (2 sampled out, 1 not stored)"
            ),
            "{text}"
        );
    }
}
