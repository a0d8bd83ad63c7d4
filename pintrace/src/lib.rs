//! pintrace: audit the Linux kernel's page-pin balance live.
//!
//! The flow runs one way, and the modules are named after its stages:
//! kernel capabilities ([`caps`]) → attach plan ([`plan`]) → probes
//! ([`probes`], the only module that touches aya) → event stream
//! ([`events`]) → ledger ([`ledger`], pure) → views ([`views`]).
//! [`startup`] takes the first three steps, for [`session`] and `doctor`.
//! [`cmd`] wires them together per command; the O_DIRECT workload generator
//! that drives the paths being audited is its own crate, `pintrace-engine`.

pub mod caps;
pub mod check;
pub mod cmd;
pub mod events;
pub mod exit;
pub mod flags;
pub mod fuzzing;
pub mod layout;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod probes;
pub mod record;
pub mod report_file;
pub mod session;
pub mod source;
pub mod startup;
pub mod symbols;
pub mod synth;
pub mod views;
pub mod vmstat;
