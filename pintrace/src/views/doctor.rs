//! `pintrace doctor`: what this kernel offers and the plan pintrace would use.

use crate::{
    kernel::caps::{Availability, Caps},
    trace::plan::Plan,
};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub caps: Caps,
    /// The plan `pintrace run` would use, or why there is none.
    pub plan: Result<Plan, String>,
    /// Things pintrace did to look (e.g. mounting tracefs).
    pub actions: Vec<String>,
}

fn avail(a: &Availability) -> String {
    match a {
        Availability::Yes => "yes".into(),
        Availability::No(why) => format!("NO ({why})"),
        Availability::Unknown(why) => format!("unknown ({why})"),
    }
}

pub fn render(r: &DoctorReport) -> String {
    let c = &r.caps;
    let mut s = String::new();
    let _ = writeln!(s, "kernel              {}", c.release);
    let _ = writeln!(s, "privileges          {}", avail(&c.privileged));
    let _ = writeln!(s, "kprobes             {}", avail(&c.kprobes));
    let _ = writeln!(s, "fentry/fexit        {}", avail(&c.fentry));
    let _ = writeln!(
        s,
        "BTF                 {}",
        if c.btf {
            "yes (/sys/kernel/btf/vmlinux)"
        } else {
            "NO"
        }
    );
    let _ = writeln!(
        s,
        "tracefs             {}",
        c.tracefs
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "NOT MOUNTED".into())
    );
    let _ = writeln!(
        s,
        "block_rq_complete   {}",
        match &c.rq_complete {
            Some(l) => format!(
                "yes (dev@{} sector@{} nr_sector@{} error@{})",
                l.dev, l.sector, l.nr_sector, l.error
            ),
            None => "NO".into(),
        }
    );
    let _ = writeln!(
        s,
        "vmstat pin counters {}",
        if c.vmstat_pin_counters {
            "yes (nr_foll_pin_acquired, nr_foll_pin_released)"
        } else {
            "NO"
        }
    );
    let _ = writeln!(s, "\nsymbols (present / global / traceable by ftrace):");
    for sym in &c.symbols {
        let traceable = match sym.traceable {
            Some(true) => "traceable",
            Some(false) => "not traceable",
            None => "(no ftrace function list)",
        };
        if sym.present {
            let _ = writeln!(
                s,
                "  {:<34} {:<8} {:<6} {}",
                sym.name,
                sym.role,
                if sym.global { "global" } else { "static" },
                traceable
            );
        } else {
            let _ = writeln!(s, "  {:<34} {:<8} absent", sym.name, sym.role);
        }
    }
    let _ = writeln!(s);
    match &r.plan {
        Ok(plan) => {
            let _ = writeln!(s, "attach plan:");
            for site in &plan.sites {
                let how = if site.method.is_some() {
                    site.programs
                } else {
                    "not watched"
                };
                let _ = writeln!(s, "  {:<22} {:<18} {}", site.symbol, how, site.reason);
            }
            let _ = writeln!(
                s,
                "  {:<22} {}",
                "block:block_rq_complete",
                if plan.rq_complete.is_some() {
                    "tracepoint"
                } else {
                    "not watched"
                }
            );
            for note in &plan.notes {
                let _ = writeln!(s, "  note: {note}");
            }
        }
        Err(why) => {
            let _ = writeln!(s, "attach plan: NONE\n  {why}");
        }
    }
    for a in &r.actions {
        let _ = writeln!(s, "(pintrace {a})");
    }
    s
}
