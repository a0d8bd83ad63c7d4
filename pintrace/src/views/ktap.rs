//! `pintrace check --ktap FILE`: KTAP version 1, the test output the
//! kernel's selftest runners read (Documentation/dev-tools/ktap.rst in the
//! kernel tree): one result line per scenario, skips with their reason,
//! failures preceded by `#` diagnostic lines that say why.

use crate::check::results::{CheckReport, Status};
use crate::views::check::failure_text;
use std::fmt::Write as _;

pub fn render(report: &CheckReport) -> String {
    // Results, each with its diagnostic lines: the scenarios, then the
    // findings outside them, then why the check could not run.
    let mut results: Vec<(bool, String, Option<String>, String)> = Vec::new();
    for r in &report.scenarios {
        let (ok, directive, diag) = match r.status {
            Status::Pass => (true, None, String::new()),
            Status::Skip => (
                true,
                Some(r.reason.clone().unwrap_or_default()),
                String::new(),
            ),
            Status::Fail | Status::Error => (false, None, failure_text(r)),
        };
        results.push((ok, r.name.clone(), directive, diag));
    }
    if !report.other_findings.is_empty() {
        let text: String = report
            .other_findings
            .iter()
            .map(|f| {
                crate::views::findings::render(&crate::views::findings::Report {
                    kind: "finding",
                    certain: f.certain,
                    finding: &f.finding,
                    stack: &f.stack,
                })
            })
            .collect();
        results.push((false, "outside-scenarios".into(), None, text));
    }
    if let Some(why) = &report.error {
        results.push((false, "could-not-run".into(), None, why.clone()));
    }
    let mut s = String::from("KTAP version 1\n");
    let _ = writeln!(s, "# pintrace check on {}", one_line(&report.kernel));
    let _ = writeln!(s, "1..{}", results.len());
    for (i, (ok, name, skip, diag)) in results.iter().enumerate() {
        for line in diag.lines().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(s, "# {line}");
        }
        let _ = write!(s, "{}ok {} {}", if *ok { "" } else { "not " }, i + 1, name);
        if let Some(why) = skip {
            let _ = write!(s, " # SKIP {}", one_line(why));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "# totals: pass:{} fail:{} skip:{} error:{}",
        report.passed, report.failed, report.skipped, report.errors
    );
    s
}

/// A reason on one line: a result line ends at its newline.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::results::sample_report;

    #[test]
    fn one_result_per_scenario_with_skips_and_failure_diagnostics() {
        let r = sample_report("the kernel has\nno xfs");
        assert_eq!(
            render(&r),
            "KTAP version 1\n\
             # pintrace check on 6.12.0-test\n\
             1..3\n\
             ok 1 block/aio/anon/write\n\
             ok 2 xfs/aio/anon/write # SKIP the kernel has no xfs\n\
             # balance: FOLL_PIN: 257 taken, 256 released, 1 held\n\
             not ok 3 ext4/aio/anon/write\n\
             # totals: pass:1 fail:1 skip:1 error:0\n"
        );
    }

    #[test]
    fn a_check_that_could_not_run_is_one_failed_result_with_the_reason() {
        let r = CheckReport::could_not_run(false, "no kprobes\nand no fentry".into());
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "KTAP version 1");
        assert_eq!(lines[2], "1..1");
        assert_eq!(&lines[3..5], ["# no kprobes", "# and no fentry"]);
        assert_eq!(lines[5], "not ok 1 could-not-run");
    }
}
