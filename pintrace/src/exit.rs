//! The process exit codes every command returns: 0 success, 1 findings,
//! 2 could not run.

/// How a command ended, as the process exit code says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: success (nothing failed the run).
    Ok,
    /// 1: findings (leaks, mismatched releases, a failed scenario; for
    /// `doctor`, nothing can be traced).
    Findings,
    /// 2: could not run (bad arguments, missing privileges or kernel
    /// features, a damaged recording, a workload that failed).
    Error,
}

impl Exit {
    /// The number the process exits with.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Findings => 1,
            Exit::Error => 2,
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
}
