//! pintrace: audit the Linux kernel's page-pin balance live.
//!
//! The flow runs one way, and the modules are grouped by its layers:
//! kernel facts ([`kernel`]: capabilities, layouts, flags, symbols, vmstat)
//! → the tracing session ([`trace`]: start-up, attach plan, probes — the only
//! module that touches aya — session, sources and recordings) → the event
//! stream ([`stream`]: decoding and the pipeline) → the books ([`ledger`],
//! pure) and the live [`model`] → views ([`views`], metrics included).
//! [`check`] is the pass/fail gate built on them; [`cmd`] wires them together
//! per command; [`exit`] holds the exit codes. Test support (`synth`,
//! `fuzzing`, `stream::events::encode`) is built only with the `testing`
//! feature. The O_DIRECT workload generator that drives the paths being
//! audited is its own crate, `pintrace-engine`.

pub mod check;
pub mod cmd;
pub mod exit;
#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;
pub mod kernel;
pub mod ledger;
pub mod model;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod synth;
pub mod trace;
pub mod views;
