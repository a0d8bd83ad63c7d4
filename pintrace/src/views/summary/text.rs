//! The end-of-run summary as text for a person: [`render`] of a [`Summary`], nothing else.

use super::Summary;
use crate::{
    ledger::{Counts, Kind},
    model::stacks::{kinds_label, StackHolding},
};
use std::{collections::BTreeMap, fmt::Write as _};

pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "pintrace on {} ({:.2} s)", s.kernel, s.duration_s);
    let _ = writeln!(o, "plan: {}", s.plan);
    // With --comm (or -p in a replay) the per-kind figures are still every
    // process's: say so, and say when the probes filtered them.
    match (&s.filter, &s.filtered_in_kernel) {
        (_, Some(k)) => {
            let _ = writeln!(o, "\nacquired as, {k} only (filtered in the kernel):");
        }
        (Some(f), None) => {
            let _ = writeln!(
                o,
                "\nacquired as, every process (system-wide; not filtered by {f}):"
            );
        }
        (None, None) => {}
    }
    let _ = writeln!(
        o,
        "{}{:<22} {:>8} {:>10} {:>10} {:>11} {:>6} {:>10} {:>7}",
        if s.filter.is_some() { "" } else { "\n" },
        "acquired as",
        "calls",
        "pages",
        "released",
        "outstanding",
        "leaks",
        "mismatches",
        "failed"
    );
    let n = |m: &BTreeMap<Kind, u64>, k: &Kind| m.get(k).copied().unwrap_or(0);
    for (kind, c) in &s.by_kind {
        let _ = writeln!(
            o,
            "{:<22} {:>8} {:>10} {:>10} {:>11} {:>6} {:>10} {:>7}",
            kind.label(),
            c.calls,
            c.pages,
            n(&s.released, kind),
            n(&s.outstanding, kind),
            n(&s.leaks, kind),
            n(&s.mismatches, kind),
            c.failed_calls
        );
    }
    if let Some(f) = &s.filter {
        let _ = writeln!(o, "\nprocesses matching {f}: {}", s.processes.len());
    }
    if !s.processes.is_empty() {
        let _ = writeln!(
            o,
            "{}{:>8} {:<16} {:>12} {:>12} {:>12}",
            if s.filter.is_some() { "" } else { "\n" },
            "tgid",
            "comm",
            "pin",
            "longterm",
            "get"
        );
        for p in &s.processes {
            let pages = |k| p.by_kind.get(&k).map(|c: &Counts| c.pages).unwrap_or(0);
            let _ = writeln!(
                o,
                "{:>8} {:<16} {:>12} {:>12} {:>12}",
                p.tgid,
                p.comm.to_string(),
                pages(Kind::Pin),
                pages(Kind::LongtermPin),
                pages(Kind::Get)
            );
        }
    }
    top_stacks(&mut o, s);
    let _ = writeln!(
        o,
        "\nblock requests completed: {} ({} sectors, {} with errors)",
        s.completions.requests, s.completions.sectors, s.completions.errors
    );
    if s.bios.filled > 0 {
        let _ = writeln!(
            o,
            "Direct I/O bios filled from user memory: {}, completed {}, pages released by the block layer in {} ({} FOLL_GET refs put)",
            s.bios.filled, s.bios.completed, s.bios.released, s.bios.get_refs_released
        );
    }
    let _ = writeln!(
        o,
        "pins released (gup_put_folio): {} refs in {} calls; {} from before tracing",
        s.releases.pin_refs, s.releases.calls, s.unknown_releases
    );
    let _ = match s.audited_folios {
        Some(n) => writeln!(o, "refcount audit at the end: {n} folio(s) with pins read"),
        None => writeln!(
            o,
            "refcount audit: not run (a replay, or no syscall tracepoints): pins released with put_page show as leaks"
        ),
    };
    let l = &s.pin_lifetime;
    if l.count > 0 {
        let _ = writeln!(
            o,
            "pin lifetimes: {} released, p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            l.count, l.p50_us, l.p99_us, l.max_us
        );
    }
    if let Some(v) = &s.vmstat {
        let _ = writeln!(
            o,
            "vmstat: nr_foll_pin_acquired +{}, nr_foll_pin_released +{}{}",
            v.delta.acquired,
            v.delta.released,
            if s.filtered_in_kernel.is_some() {
                " (system-wide)"
            } else {
                ""
            }
        );
    }
    if s.added_pins > 0 {
        let _ = writeln!(
            o,
            "pins added by folio_add_pin (legacy Direct I/O): {}, released like any pin but not counted in nr_foll_pin_acquired",
            s.added_pins
        );
    }
    let st = &s.stacks;
    if st.sampled_out + st.failed > 0 {
        let _ = writeln!(
            o,
            "stacks: {} of {} acquires and releases carry one ({} sampled out, {} not stored)",
            st.taken,
            st.taken + st.sampled_out + st.failed,
            st.sampled_out,
            st.failed
        );
    }
    if s.lossless {
        let _ = writeln!(o, "events: {} (lossless)", s.events);
    } else {
        let lost: Vec<String> = s
            .lost
            .iter()
            .filter(|(_, &v)| v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            o,
            "events: {} (LOSSY: lost {}; {} undecodable) - totals above are lower bounds",
            s.events,
            lost.join(" "),
            s.decode_errors
        );
    }
    if s.lossless {
        let _ = writeln!(o, "findings: {} ({} failing)", s.findings, s.failures);
    } else {
        // A lost release makes a false leak, a lost acquire hides a true one.
        let _ = writeln!(
            o,
            "findings: {} ({} failing), none certain: with events lost, leaks may be releases \
             that were not seen, and other findings may be missing",
            s.findings, s.failures
        );
    }
    match &s.kernel_books {
        Some(b) => {
            let _ = writeln!(
                o,
                "books: in the kernel ({} pins booked, {} releases balanced there; {} folios \
                 escalated to the ledger, {} pins sent as records with the books full; \
                 at most {} folios open of --books-max {}, {} KiB of kernel memory)",
                b.booked,
                b.balanced_releases,
                b.escalated,
                b.full,
                b.open_peak,
                b.max,
                b.memory_peak_bytes / 1024
            );
        }
        None => {
            let _ = writeln!(o, "books: in user space, from the full event stream");
        }
    }
    if let Some(a) = &s.agent {
        let _ = writeln!(
            o,
            "agent: {:.2} s CPU ({:.2} user, {:.2} system; {:.2} since the probes were attached), max RSS {} KiB",
            a.user_s + a.system_s,
            a.user_s,
            a.system_s,
            a.tracing_cpu_s,
            a.max_rss_kib
        );
    }
    if let Some(w) = &s.workload {
        let status = w
            .exit_code
            .map(|c| format!("exit {c}"))
            .unwrap_or_else(|| "killed by a signal".into());
        let _ = writeln!(
            o,
            "workload: `{}` pid {} ({status})",
            w.command.join(" "),
            w.pid
        );
    }
    o
}

/// The stacks holding the most references, as bcc's memleak prints its
/// outstanding allocations: a line per stack ("N references in M holders
/// ... from stack"), then its frames.
fn top_stacks(o: &mut String, s: &Summary) {
    let t = &s.top_stacks;
    if t.rows.is_empty() {
        return;
    }
    let stacks = t.rows.iter().filter(|r| r.stack_id.is_some()).count() as u64;
    let _ = writeln!(
        o,
        "\ntop stacks holding references{}: {} reference(s) from {} stack(s){}",
        if s.filter.is_some() {
            ", every process (system-wide)"
        } else {
            ""
        },
        t.refs(),
        stacks + t.omitted.stacks,
        if t.omitted.stacks > 0 {
            format!(", the {stacks} holding the most shown")
        } else {
            String::new()
        }
    );
    for r in &t.rows {
        let _ = writeln!(o, "    {}", holding_line(r));
        match r.stack_id {
            None => {}
            Some(id) if r.frames.is_empty() => {
                let _ = writeln!(o, "        (stack {id} not available)");
            }
            Some(_) => {
                for f in &r.frames {
                    let _ = writeln!(o, "        {f}");
                }
            }
        }
    }
    let m = &t.omitted;
    if m.stacks > 0 {
        let _ = writeln!(
            o,
            "    ... and {} more stack(s): {} reference(s) in {} holder(s)",
            m.stacks, m.refs, m.holders
        );
    }
}

/// `12 references (FOLL_PIN 12) in 3 holders on 3 folios by dd/171,
/// oldest 2.41 s, median 1.20 s, from stack 13:`
fn holding_line(r: &StackHolding) -> String {
    let (mut by, more) = r.process_labels();
    if more > 0 {
        by.push(format!("{more} more"));
    }
    let from = match r.stack_id {
        Some(id) => format!("from stack {id}:"),
        None => "with no stack (sampled out, --stacks none, or not stored)".into(),
    };
    format!(
        "{} reference(s) ({}) in {} holder(s) on {} folio(s) by {}, oldest {}, median {}, {from}",
        r.refs,
        kinds_label(&r.by_kind),
        r.holders,
        r.folios,
        by.join(", "),
        age(r.oldest_age_ns),
        age(r.median_age_ns),
    )
}

/// An age as a person reads it: `850 us`, `12 ms`, `2.41 s`.
fn age(ns: u64) -> String {
    match ns {
        0..1_000_000 => format!("{} us", ns / 1000),
        1_000_000..1_000_000_000 => format!("{} ms", ns / 1_000_000),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}
