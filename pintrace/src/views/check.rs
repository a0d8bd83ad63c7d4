//! `pintrace check` for a person: one line per scenario, then what failed
//! (the checks and the findings with their stacks), then the totals.

use crate::{
    check::results::{CheckReport, FindingOut, ScenarioResult, Status},
    ledger::Kind,
    views::findings,
};
use std::fmt::Write as _;

/// The header and the line of one scenario (printed as each one ends).
pub fn header(kernel: &str, plan: &str) -> String {
    format!(
        "pintrace check on {kernel}\nplan: {plan}\n\n{:<40} {:<6} {:<14} {:>6} {:>9} {:>9} {:>13} {:>6}\n",
        "scenario", "result", "Direct I/O as", "pages", "long-term", "released", "vmstat +a/+r", "secs"
    )
}

pub fn line(r: &ScenarioResult) -> String {
    let Some(o) = &r.observed else {
        return format!(
            "{:<40} {:<6} {}\n",
            r.name,
            r.status.label(),
            r.reason.as_deref().unwrap_or("")
        );
    };
    let pages = |k| o.acquired.get(&k).map(|c| c.pages).unwrap_or(0);
    let released: u64 = o.released.values().sum();
    let vm = o
        .vmstat
        .map(|d| format!("+{}/+{}", d.acquired, d.released))
        .unwrap_or_else(|| "-".into());
    format!(
        "{:<40} {:<6} {:<14} {:>6} {:>9} {:>9} {:>13} {:>6.1}\n",
        r.name,
        r.status.label(),
        r.dio_kind.unwrap_or("-"),
        pages(Kind::Pin) + o.get_io_pages(),
        pages(Kind::LongtermPin),
        released,
        vm,
        r.duration_s
    )
}

/// The earlier runs of a scenario that lost events, under its line.
pub fn lossy_runs(r: &ScenarioResult) -> String {
    r.lossy_runs
        .iter()
        .enumerate()
        .map(|(i, n)| format!("  run {}: {n} event(s) lost, run again\n", i + 1))
        .collect()
}

fn finding_text(f: &FindingOut) -> String {
    findings::render(&findings::Report {
        kind: "finding",
        certain: f.certain,
        finding: &f.finding,
        stack: &f.stack,
    })
}

/// Why a scenario failed: its failed checks and its findings.
pub fn failure_text(r: &ScenarioResult) -> String {
    let mut s = String::new();
    if let Some(why) = &r.reason {
        let _ = writeln!(s, "{why}");
    }
    for c in r.checks.iter().filter(|c| !c.ok) {
        let _ = writeln!(s, "{}: {}", c.name, c.detail);
    }
    for f in &r.findings {
        s += &finding_text(f);
    }
    for h in &r.held {
        let _ = writeln!(
            s,
            "held at the end: {} {} ref(s) taken at",
            h.kind.label(),
            h.refs
        );
        for frame in &h.stack {
            let _ = writeln!(s, "    {frame}");
        }
    }
    s
}

/// What follows the lines: the failures in detail, the notes, the totals.
pub fn footer(report: &CheckReport) -> String {
    let mut s = String::new();
    for r in report
        .scenarios
        .iter()
        .filter(|r| matches!(r.status, Status::Fail | Status::Error))
    {
        let _ = writeln!(s, "\n{} {}:", r.status.label(), r.name);
        for l in failure_text(r).lines() {
            let _ = writeln!(s, "  {l}");
        }
    }
    if !report.other_findings.is_empty() {
        let _ = writeln!(s, "\nfindings outside every scenario:");
        for f in &report.other_findings {
            s += &finding_text(f);
        }
    }
    let get = report
        .scenarios
        .iter()
        .any(|r| r.dio_kind.is_some_and(|k| k.contains("FOLL_GET")));
    if get {
        let _ = writeln!(
            s,
            "\nnote: FOLL_GET references are released with put_page, which cannot be traced: \
             for them only the pages taken are compared with the engine's I/O."
        );
    }
    let _ = writeln!(
        s,
        "\n{} scenarios: {} passed, {} failed, {} skipped, {} could not run ({:.1} s)",
        report.scenarios.len(),
        report.passed,
        report.failed,
        report.skipped,
        report.errors,
        report.duration_s
    );
    s
}

/// The whole table at once (header, lines, footer).
pub fn render(report: &CheckReport) -> String {
    let mut s = header(&report.kernel, &report.plan);
    for r in &report.scenarios {
        s += &line(r);
    }
    s + &footer(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::scenario::{Dir, Drive, Scenario, TargetKind};
    use pintrace_engine::BufferKind;

    #[test]
    fn earlier_lossy_runs_are_listed_under_the_line() {
        let s = Scenario::new(TargetKind::Udf, Drive::Aio, BufferKind::Anon, Dir::Read);
        let mut r = ScenarioResult::not_run(s, Status::Pass, String::new());
        assert_eq!(lossy_runs(&r), "");
        r.lossy_runs = vec![16, 2];
        assert_eq!(
            lossy_runs(&r),
            "  run 1: 16 event(s) lost, run again\n  run 2: 2 event(s) lost, run again\n"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["lossy_runs"], serde_json::json!([16, 2]));
    }
}
