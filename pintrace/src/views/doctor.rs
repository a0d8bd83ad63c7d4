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
    /// Where there is none: the plan pintrace would attach if this kernel
    /// could trace ([`Plan::would_attach`]), with this kernel's symbols
    /// and argument layouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_attach: Option<Plan>,
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
    let f = &c.flags;
    let _ = writeln!(
        s,
        "FOLL_* flags        GET={:#x} PIN={:#x} LONGTERM={:#x} ({})",
        f.flags.get, f.flags.pin, f.flags.longterm, f.source
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
            render_plan(&mut s, plan);
        }
        Err(why) => {
            let _ = writeln!(s, "attach plan: NONE\n  {why}");
            if let Some(plan) = &r.would_attach {
                let _ = writeln!(
                    s,
                    "\nwould-be attach plan (NOT attachable on this kernel; methods assumed):"
                );
                render_plan(&mut s, plan);
            }
        }
    }
    for a in &r.actions {
        let _ = writeln!(s, "(pintrace {a})");
    }
    s
}

/// The sites, each with its argument layout, the tracepoint and the notes.
fn render_plan(s: &mut String, plan: &Plan) {
    for site in &plan.sites {
        let how = if site.method.is_some() {
            site.programs
        } else {
            "not watched"
        };
        let _ = writeln!(s, "  {:<22} {:<18} {}", site.symbol, how, site.reason);
        if let Some(args) = &site.args {
            let _ = writeln!(s, "  {:<22} args {}", "", args.summary());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::protos::{fit, Param, Proto, Shape},
        trace::plan::{tests::caps, Preference},
    };
    use pintrace_common::Site;

    fn report(kprobes: bool) -> DoctorReport {
        let mut c = caps(kprobes, false);
        // gup_put_folio lost its `refs`.
        let put = Proto {
            symbol: "gup_put_folio".into(),
            params: vec![
                Param {
                    name: "folio".into(),
                    shape: Shape::Pointer,
                },
                Param {
                    name: "flags".into(),
                    shape: Shape::Int { bytes: 4 },
                },
            ],
            ret: Shape::Void,
        };
        c.protos
            .set(Site::GupPutFolio, fit(Site::GupPutFolio, &put));
        let plan = Plan::build(&c, Preference::Auto).map_err(|e| e.0);
        let would_attach = plan
            .is_err()
            .then(|| Plan::would_attach(&c, Preference::Auto));
        DoctorReport {
            kind: "doctor",
            caps: c,
            plan,
            would_attach,
            actions: vec![],
        }
    }

    #[test]
    fn shows_the_flags_source_and_each_sites_arguments() {
        let text = render(&report(true));
        assert!(
            text.contains(
                "FOLL_* flags        GET=0x2 PIN=0x80000 LONGTERM=0x100 (version table (6.12))"
            ),
            "{text}"
        );
        assert!(text.contains("attach plan:\n"), "{text}");
        assert!(
            text.contains(
                "args start=1 nr_pages=2 gup_flags=3 pages=4, returns long (built-in: no kernel BTF)"
            ),
            "{text}"
        );
        assert!(
            text.contains("gup_put_folio          not watched        gup_put_folio(folio, flags): no parameter `refs`"),
            "{text}"
        );
        assert!(!text.contains("would-be"), "{text}");
        let json = serde_json::to_value(report(true)).unwrap();
        assert_eq!(json["caps"]["flags"]["source"], "version table (6.12)");
        assert_eq!(json["caps"]["flags"]["pin"], 0x80000);
        let sites = json["plan"]["Ok"]["sites"].as_array().unwrap();
        let remote = sites
            .iter()
            .find(|s| s["symbol"] == "pin_user_pages_remote")
            .unwrap();
        assert_eq!(remote["args"]["source"], "built-in");
        assert_eq!(remote["args"]["args"][3]["name"], "pages");
        assert_eq!(remote["args"]["args"][3]["position"], 4);
        assert_eq!(remote["args"]["ret"], "long");
        assert!(json.get("would_attach").is_none());
    }

    #[test]
    fn a_kernel_that_cannot_trace_shows_the_would_be_plan() {
        let r = report(false);
        let text = render(&r);
        assert!(text.contains("attach plan: NONE"), "{text}");
        let would = text
            .split("would-be attach plan (NOT attachable on this kernel; methods assumed):\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            would.contains("pin_user_pages_fast    fexit              assumed"),
            "{would}"
        );
        assert!(would.contains("args start=0 nr_pages=1"), "{would}");
        assert!(would.contains("note: would-be plan"), "{would}");
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["plan"]["Err"].is_string());
        assert_eq!(json["would_attach"]["would_be"], true);
        assert_eq!(
            json["would_attach"]["sites"][0]["args"]["source"],
            "built-in"
        );
    }
}
