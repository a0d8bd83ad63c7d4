//! The commands: each wires the stages together for one job and returns the
//! process exit code ([`crate::exit::Exit`]: 0 ok, 1 findings, 2 could not run).

pub mod bench_probe;
pub mod check;
pub mod doctor;
pub mod output;
pub mod report_file;
pub mod run;
pub mod signals;
pub mod top;
pub mod tracing;
pub mod vmstat_only;
pub mod zoo;
