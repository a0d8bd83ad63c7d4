//! `pintrace doctor`.

use super::output::Output;
use crate::{
    exit::Exit,
    trace::plan::{Plan, Preference},
    trace::startup::{ProbeSettings, Startup},
    views::doctor::{render, DoctorReport},
};
use anyhow::Result;

pub fn run(json: bool) -> Result<Exit> {
    // The probes are loaded only to test fentry: the smallest ring will do.
    let settings = ProbeSettings {
        ringbuf_bytes: 1 << 16,
        verbose: false,
        wakeup_bytes: 0,
        stack_interval_ns: 0,
        rq_records: false,
        pids: Vec::new(),
        books_max: None,
    };
    let s = Startup::run(Preference::Auto, &settings)?;
    let can_trace = s.plan.is_ok();
    // Where nothing can be traced, the plan it would attach still shows
    // what this kernel has: its symbols and each site's argument layout.
    let would_attach = (!can_trace).then(|| Plan::would_attach(&s.caps, Preference::Auto));
    let report = DoctorReport {
        kind: "doctor",
        caps: s.caps,
        plan: s.plan.map_err(|e| e.0),
        would_attach,
        actions: s.actions,
    };
    if json {
        Output::stdout().json(&report)?;
    } else {
        Output::stdout().text(&render(&report))?;
    }
    Ok(if can_trace { Exit::Ok } else { Exit::Findings })
}
