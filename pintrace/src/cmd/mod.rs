//! The commands: each wires the stages together for one job and returns the
//! process exit code (0 ok, 1 findings, 2 could not run).

pub mod bench_probe;
pub mod check;
pub mod doctor;
pub mod run;
pub mod top;
pub mod vmstat_only;
pub mod zoo;

use crate::{
    caps::{self, Availability, Caps},
    plan::{NoPlan, Plan, Preference},
    probes::{LoadOptions, Probes},
};
use anyhow::Result;

/// Exit codes shared by every command.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FINDINGS: u8 = 1;
    pub const ERROR: u8 = 2;
}

/// What start-up learnt: the kernel's capabilities, the loaded probes (when
/// privileged), the plan or why there is none, and what pintrace did to look.
pub struct Startup {
    pub caps: Caps,
    pub probes: Option<Probes>,
    pub plan: Result<Plan, NoPlan>,
    pub actions: Vec<String>,
}

/// Detects capabilities, loads the probes when allowed, tests fentry and
/// builds the plan. Never attaches anything.
pub fn startup(preference: Preference, opts: &LoadOptions) -> Result<Startup> {
    let mut actions = Vec::new();
    if caps::privileges().is_yes() {
        match caps::ensure_tracefs() {
            Ok(Some(p)) => actions.push(format!("mounted tracefs at {}", p.display())),
            Ok(None) => {}
            Err(e) => actions.push(e),
        }
    }
    let mut caps = Caps::detect();
    let mut probes = None;
    if caps.privileged.is_yes() {
        let mut opts = opts.clone();
        opts.rq_layout = caps.rq_complete;
        opts.struct_offsets = caps.layout;
        opts.foll_pin = crate::flags::FollFlags::for_release(&caps.release).pin;
        let mut p = Probes::load(&opts)?;
        let first = caps
            .symbols
            .iter()
            .find(|s| s.role == "acquire" && s.present)
            .map(|s| s.name);
        caps.fentry = match first {
            Some(sym) if preference != Preference::Kprobe => p.probe_fentry(sym),
            Some(_) => Availability::Unknown("not tested (--attach kprobe)".into()),
            None => Availability::Unknown("no acquire symbol to test on".into()),
        };
        probes = Some(p);
    } else {
        caps.fentry = Availability::Unknown("testing needs CAP_BPF and CAP_PERFMON (root)".into());
    }
    let plan = Plan::build(&caps, preference);
    Ok(Startup {
        caps,
        probes,
        plan,
        actions,
    })
}
