//! The process exit codes every command returns: 0 success, 1 findings,
//! 2 could not run; and, for `run -- CMD`, a failed workload's own code.

/// How a command ended, as the process exit code says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: success (nothing failed the run).
    Ok,
    /// 1: findings (leaks, mismatched releases, a failed scenario; for
    /// `doctor`, nothing can be traced).
    Findings,
    /// 2: could not run (bad arguments, missing privileges or kernel
    /// features, a damaged recording).
    Error,
    /// The workload of `run -- CMD` failed and pintrace found nothing: its
    /// exit code passed on (128+N when killed by signal N), as `perf stat`
    /// does, so a script sees the failure it would see without pintrace.
    Workload(u8),
}

impl Exit {
    /// The number the process exits with.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Findings => 1,
            Exit::Error => 2,
            Exit::Workload(code) => code,
        }
    }

    /// The exit of a run with a workload that exited with `workload`:
    /// pintrace's own verdict wins (2 could not run, then 1 findings), then
    /// the workload's failure, else 0.
    pub const fn with_workload(self, workload: Option<u8>) -> Exit {
        match (self, workload) {
            (Exit::Ok, Some(code)) if code != 0 => Exit::Workload(code),
            (e, _) => e,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// An exit compares equal to the number a caller of the process sees.
impl PartialEq<u8> for Exit {
    fn eq(&self, code: &u8) -> bool {
        self.code() == *code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            [Exit::Ok, Exit::Findings, Exit::Error].map(Exit::code),
            [0, 1, 2]
        );
        assert_eq!(Exit::Findings, 1);
    }

    #[test]
    fn pintraces_verdict_wins_over_the_workloads_code() {
        assert_eq!(Exit::Ok.with_workload(Some(7)), 7);
        assert_eq!(Exit::Ok.with_workload(Some(0)), Exit::Ok);
        assert_eq!(Exit::Ok.with_workload(None), Exit::Ok);
        assert_eq!(Exit::Findings.with_workload(Some(7)), Exit::Findings);
        assert_eq!(Exit::Error.with_workload(Some(7)), Exit::Error);
    }
}
