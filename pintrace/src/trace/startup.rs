//! Start-up: the kernel's capabilities, the probes loaded (when privileged),
//! the fentry test and the attach plan. Below the commands and the session:
//! `doctor` shows what it learnt, a session attaches from it.

use crate::{
    kernel::caps::{self, Availability, Caps},
    trace::plan::{NoPlan, Plan, Preference},
    trace::probes::{LoadOptions, Probes},
};
use anyhow::Result;

/// What the caller chooses about the probes. What the kernel decides (the
/// `block_rq_complete` layout, the struct offsets, FOLL_PIN, where each
/// site's arguments are) start-up derives from the capabilities it
/// detected, the facts the plan is built from too.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Forward the probes' aya-log diagnostics to the `log` crate.
    pub verbose: bool,
    /// See [`LoadOptions::wakeup_bytes`].
    pub wakeup_bytes: u32,
    /// See [`LoadOptions::stack_interval_ns`].
    pub stack_interval_ns: u64,
    /// A record per completed block request instead of per-CPU totals.
    pub rq_records: bool,
    /// See [`LoadOptions::pids`].
    pub pids: Vec<u32>,
    /// See [`LoadOptions::books_max`].
    pub books_max: Option<u32>,
}

impl ProbeSettings {
    /// The probes' load options on this kernel.
    pub fn load_options(&self, caps: &Caps) -> LoadOptions {
        LoadOptions {
            ringbuf_bytes: self.ringbuf_bytes,
            rq_layout: caps.rq_complete,
            struct_offsets: caps.layout,
            verbose: self.verbose,
            wakeup_bytes: self.wakeup_bytes,
            stack_interval_ns: self.stack_interval_ns,
            foll_pin: caps.flags.flags.pin,
            arg_layouts: caps.protos.globals(),
            rq_records: self.rq_records as u32,
            pids: self.pids.clone(),
            foll_longterm: caps.flags.flags.longterm,
            books_max: self.books_max,
            // Where bios take FOLL_GET references (before 6.5), only their
            // release record releases them: every step stays a record.
            bio_records: !(self.books_max.is_some() && caps.flags.flags.bio_page_pinned != 0)
                as u32,
        }
    }
}

/// What start-up learnt: the kernel's capabilities, the loaded probes (when
/// privileged), the plan or why there is none, and what pintrace did to look.
pub struct Startup {
    pub caps: Caps,
    pub probes: Option<Probes>,
    pub plan: Result<Plan, NoPlan>,
    pub actions: Vec<String>,
}

impl Startup {
    /// Detects capabilities, loads the probes when allowed, tests fentry and
    /// builds the plan. Never attaches anything.
    pub fn run(preference: Preference, settings: &ProbeSettings) -> Result<Startup> {
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
            let mut p = Probes::load(&settings.load_options(&caps))?;
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
            caps.fentry =
                Availability::Unknown("testing needs CAP_BPF and CAP_PERFMON (root)".into());
        }
        let plan = Plan::build(&caps, preference);
        Ok(Startup {
            caps,
            probes,
            plan,
            actions,
        })
    }
}
