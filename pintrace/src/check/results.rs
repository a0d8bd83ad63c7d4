//! What `check` found, per scenario and in all: the model the table, the
//! JSON and the JUnit views are made from.

use super::{
    judge::{Check, Expected, Observed},
    Scenario,
};
use crate::{exit::Exit, ledger::Finding};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// A check failed or a finding involves the scenario.
    Fail,
    /// Not run, with the reason (the kernel or the system lacks a piece).
    Skip,
    /// Could not run (set-up failed, the engine refused): not a verdict.
    Error,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
            Status::Error => "ERROR",
        }
    }
}

/// A finding with its kernel stack resolved.
#[derive(Clone, Debug, Serialize)]
pub struct FindingOut {
    #[serde(flatten)]
    pub finding: Finding,
    /// False when events were lost: the finding may be incomplete.
    pub certain: bool,
    pub stack: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    #[serde(flatten)]
    pub scenario: Scenario,
    pub status: Status,
    /// Why it was skipped or could not run.
    pub reason: Option<String>,
    /// What the I/O ran on, for a person.
    pub target: Option<String>,
    /// How Direct I/O took the pages: FOLL_PIN, FOLL_GET, ...
    pub dio_kind: Option<&'static str>,
    pub expected: Option<Expected>,
    pub observed: Option<Observed>,
    pub checks: Vec<Check>,
    pub findings: Vec<FindingOut>,
    /// For a failed scenario: the references its process still holds, by
    /// kind and acquiring stack (FOLL_GET ones always: their release is
    /// invisible), to tell where unexpected pages came from.
    pub held: Vec<Held>,
    pub duration_s: f64,
    /// Events lost in each earlier run of this scenario: a run that lost
    /// any (the kernel skipped a probe nested in another's run, the ring
    /// was full) cannot be judged for certain, so it was run again.
    pub lossy_runs: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Held {
    pub kind: crate::ledger::Kind,
    pub refs: u64,
    pub stack: Vec<String>,
}

impl ScenarioResult {
    pub fn not_run(scenario: Scenario, status: Status, reason: String) -> ScenarioResult {
        ScenarioResult {
            kind: "scenario",
            name: scenario.to_string(),
            scenario,
            status,
            reason: Some(reason),
            target: None,
            dio_kind: None,
            expected: None,
            observed: None,
            checks: Vec::new(),
            findings: Vec::new(),
            held: Vec::new(),
            duration_s: 0.0,
            lossy_runs: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub kernel: String,
    pub plan: String,
    pub quick: bool,
    pub scenarios: Vec<ScenarioResult>,
    /// Failing findings outside every scenario's process and window.
    pub other_findings: Vec<FindingOut>,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
    pub duration_s: f64,
    /// Why the check could not run at all (exit 2), when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckReport {
    pub fn new(kernel: String, plan: String, quick: bool) -> CheckReport {
        CheckReport {
            kind: "check",
            kernel,
            plan,
            quick,
            scenarios: Vec::new(),
            other_findings: Vec::new(),
            passed: 0,
            failed: 0,
            skipped: 0,
            errors: 0,
            duration_s: 0.0,
            error: None,
        }
    }

    /// The report of a check that could not run: its reason, no scenario.
    pub fn could_not_run(quick: bool, why: String) -> CheckReport {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut r = CheckReport::new(release.trim().to_owned(), "none".into(), quick);
        r.errors = 1;
        r.error = Some(why);
        r
    }

    pub fn push(&mut self, r: ScenarioResult) {
        match r.status {
            Status::Pass => self.passed += 1,
            Status::Fail => self.failed += 1,
            Status::Skip => self.skipped += 1,
            Status::Error => self.errors += 1,
        }
        self.scenarios.push(r);
    }

    /// 1 when anything failed or a finding fails the run; else 2 when a
    /// scenario could not run or none ran at all; else 0.
    pub fn exit_code(&self) -> Exit {
        let other = self
            .other_findings
            .iter()
            .any(|f| f.finding.kind.is_failure());
        if self.failed > 0 || other {
            Exit::Findings
        } else if self.errors > 0 || self.passed == 0 {
            Exit::Error
        } else {
            Exit::Ok
        }
    }
}

/// A report the report views' tests share: a pass (block), a skip (xfs,
/// with `skip_reason`) and a failed balance check (ext4).
#[cfg(test)]
pub(crate) fn sample_report(skip_reason: &str) -> CheckReport {
    use super::{judge::Check, Dir, Drive, Scenario, TargetKind};
    use pintrace_engine::BufferKind;
    let scenario = |t| Scenario::new(t, Drive::Aio, BufferKind::Anon, Dir::Write);
    let mut r = CheckReport::new("6.12.0-test".into(), "plan".into(), true);
    let mut pass = ScenarioResult::not_run(scenario(TargetKind::Block), Status::Pass, "".into());
    pass.reason = None;
    r.push(pass);
    r.push(ScenarioResult::not_run(
        scenario(TargetKind::Xfs),
        Status::Skip,
        skip_reason.into(),
    ));
    let mut fail = ScenarioResult::not_run(scenario(TargetKind::Ext4), Status::Fail, "".into());
    fail.reason = None;
    fail.checks = vec![Check {
        name: "balance",
        ok: false,
        detail: "FOLL_PIN: 257 taken, 256 released, 1 held".into(),
    }];
    r.push(fail);
    r
}
