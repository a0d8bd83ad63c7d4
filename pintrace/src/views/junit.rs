//! `pintrace check --junit FILE`: JUnit XML, one test case per scenario, so
//! that CI systems show the check natively. Skipped scenarios carry their
//! reason; failures carry the failed checks and the findings with stacks.

use crate::check::results::{CheckReport, Status};
use crate::views::check::failure_text;
use anyhow::{Context as _, Result};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::time::Duration;

pub fn render(report: &CheckReport) -> Result<String> {
    let mut suite = TestSuite::new(format!("pintrace check on {}", report.kernel));
    suite.set_time(Duration::from_secs_f64(report.duration_s));
    suite.add_property(("kernel", report.kernel.as_str()));
    suite.add_property(("plan", report.plan.as_str()));
    for r in &report.scenarios {
        let status = match r.status {
            Status::Pass => TestCaseStatus::success(),
            Status::Skip => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(r.reason.clone().unwrap_or_default());
                s
            }
            Status::Fail | Status::Error => {
                let kind = if r.status == Status::Fail {
                    NonSuccessKind::Failure
                } else {
                    NonSuccessKind::Error
                };
                let mut s = TestCaseStatus::non_success(kind);
                let first = r
                    .checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .chain(r.reason.clone())
                    .next()
                    .unwrap_or_else(|| "failed".into());
                s.set_message(first);
                s.set_type(match r.status {
                    Status::Fail if !r.findings.is_empty() => "finding",
                    Status::Fail => "check",
                    _ => "could-not-run",
                });
                s.set_description(failure_text(r));
                s
            }
        };
        let mut case = TestCase::new(r.name.clone(), status);
        // Grouped by family (sg, fault, regress, ...), then by target.
        case.set_classname(match r.scenario.family {
            "" => format!("pintrace.check.{}", r.scenario.target.name()),
            f => format!("pintrace.check.{f}.{}", r.scenario.target.name()),
        });
        case.set_time(Duration::from_secs_f64(r.duration_s));
        let mut out: Vec<String> = Vec::new();
        if let Some(reg) = r.scenario.regression {
            out.push(format!("regression of: {}", reg.bug));
        }
        out.extend(r.checks.iter().map(|c| {
            format!(
                "{} {}: {}",
                if c.ok { "ok" } else { "FAILED" },
                c.name,
                c.detail
            )
        }));
        if !out.is_empty() {
            case.set_system_out(out.join("\n"));
        }
        suite.add_test_case(case);
    }
    if !report.other_findings.is_empty() {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message(format!(
            "{} finding(s) outside every scenario",
            report.other_findings.len()
        ));
        s.set_type("finding");
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
        s.set_description(text);
        let mut case = TestCase::new("outside-scenarios", s);
        case.set_classname("pintrace.check");
        suite.add_test_case(case);
    }
    if let Some(why) = &report.error {
        // A CI's report step has a test case to show, and the reason in it.
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_message(why.clone());
        s.set_type("could-not-run");
        let mut case = TestCase::new("could-not-run", s);
        case.set_classname("pintrace.check");
        suite.add_test_case(case);
    }
    let mut junit = Report::new("pintrace check");
    junit.set_time(Duration::from_secs_f64(report.duration_s));
    junit.add_test_suite(suite);
    junit.to_string().context("serialising the JUnit report")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        check::{
            results::{sample_report, FindingOut, ScenarioResult},
            Dir, Drive, Scenario, TargetKind,
        },
        ledger::{Finding, FindingKind},
        stream::events::Comm,
    };
    use pintrace_engine::BufferKind;

    fn scenario(target: TargetKind) -> Scenario {
        Scenario::new(target, Drive::Aio, BufferKind::Anon, Dir::Write)
    }

    fn report() -> CheckReport {
        let mut r = sample_report("the kernel has no xfs");
        let fail = &mut r.scenarios[2];
        fail.findings = vec![FindingOut {
            finding: Finding {
                bio: None,
                kind: FindingKind::LeakOwnerExited,
                folio: 0xffffea0000042000,
                refs: 1,
                tgid: 321,
                comm: Comm(*b"pintrace\0\0\0\0\0\0\0\0"),
                stack_id: 7,
                holder: None,
                at_ns: 0,
                detail: "FOLL_PIN 1 ref(s) held after its owner exited".into(),
            },
            certain: true,
            stack: vec![
                "pin_user_pages_fast+0x9".into(),
                "iov_iter_extract_pages+0x1".into(),
            ],
        }];
        r
    }

    #[test]
    fn one_case_per_scenario_with_skips_and_failures_explained() {
        let r = report();
        assert_eq!(r.exit_code(), 1);
        let xml = render(&r).unwrap();
        assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
        assert!(
            xml.contains("tests=\"3\"") && xml.contains("failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("<skipped message=\"the kernel has no xfs\""),
            "{xml}"
        );
        assert!(xml.contains("name=\"ext4/aio/anon/write\""), "{xml}");
        assert!(
            xml.contains("message=\"balance: FOLL_PIN: 257 taken, 256 released, 1 held\""),
            "{xml}"
        );
        assert!(xml.contains("type=\"finding\""), "{xml}");
        // The failure text names the finding and carries its stack.
        assert!(
            xml.contains("LEAK (owner exited): folio 0xffffea0000042000"),
            "{xml}"
        );
        assert!(xml.contains("iov_iter_extract_pages+0x1"), "{xml}");
    }

    #[test]
    fn exit_codes() {
        let mut r = CheckReport::new("k".into(), "p".into(), false);
        assert_eq!(r.exit_code(), 2, "nothing ran");
        let mut pass =
            ScenarioResult::not_run(scenario(TargetKind::Block), Status::Pass, "".into());
        pass.reason = None;
        r.push(pass);
        r.push(ScenarioResult::not_run(
            scenario(TargetKind::Nfs),
            Status::Skip,
            "no nfsd".into(),
        ));
        assert_eq!(r.exit_code(), 0);
        r.push(ScenarioResult::not_run(
            scenario(TargetKind::Xfs),
            Status::Error,
            "mkfs failed".into(),
        ));
        assert_eq!(r.exit_code(), 2);
    }
}
