//! The attach plan: from the kernel's capabilities, which probe goes where and
//! by which method. Pure: built from [`Caps`], executed by the probes module.

use crate::kernel::{
    caps::{Availability, Caps, RqCompleteLayout},
    protos::SiteArgs,
};
use pintrace_common::Site;
use serde::Serialize;
use std::fmt;

/// Why `get_user_pages_unlocked` is off where it nests inside other sites.
pub const NESTED_UNLOCKED: &str = "on this kernel the fast calls' slow path \
     (__gup_longterm_unlocked) and pin_user_pages_unlocked enter it, and their pages are \
     counted there: watching it too would count them twice; its own callers (KVM's slow \
     path, some drivers) are not seen";

/// How a function is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// An fentry or fexit program through a BTF trampoline: arguments and
    /// return value in one call (the cheapest).
    Trampoline,
    /// A kprobe (a kprobe parks the arguments and a kretprobe emits the event
    /// where the return value is needed).
    Kprobe,
}

impl Method {
    /// The program kinds this method uses on a site, e.g. "fexit" or "kprobe+kretprobe".
    pub fn program_kind(self, site: Site) -> &'static str {
        let p = site.programs();
        match (self, p.trampoline_is_exit, p.kretprobe.is_some()) {
            (Method::Trampoline, true, _) if p.trampoline_entry.is_some() => "fentry+fexit",
            (Method::Trampoline, true, _) => "fexit",
            (Method::Trampoline, false, _) => "fentry",
            (Method::Kprobe, _, true) => "kprobe+kretprobe",
            (Method::Kprobe, _, false) => "kprobe",
        }
    }
}

/// Which methods the user allows (`--attach`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Preference {
    /// fentry/fexit where they load, kprobes otherwise.
    #[default]
    Auto,
    /// fentry/fexit programs only.
    #[value(alias = "fexit")]
    Fentry,
    /// kprobes (and kretprobes) only.
    Kprobe,
}

#[derive(Clone, Debug, Serialize)]
pub struct SitePlan {
    pub site: &'static str,
    pub symbol: &'static str,
    /// `None`: this site is not watched, see `reason`.
    pub method: Option<Method>,
    /// The program kinds attached: "fexit", "fentry", "kprobe+kretprobe", "kprobe" or "off".
    pub programs: &'static str,
    /// Takes references (else drops them).
    pub acquire: bool,
    pub reason: String,
    /// Where its arguments are on this kernel (from its BTF prototype, or
    /// the site table's); `None` when the prototype no longer fits (then
    /// `reason` says how, and the site is off).
    pub args: Option<SiteArgs>,
    #[serde(skip)]
    pub id: Site,
}

impl SitePlan {
    /// Why a kprobe cannot watch this site (an argument beyond the
    /// registers), if it cannot.
    pub fn kprobe_misfit(&self) -> Option<String> {
        self.args.as_ref()?.kprobe_misfit(self.symbol)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// A would-be plan ([`Plan::would_attach`]): what pintrace would attach
    /// if this kernel could trace; nothing attaches from it.
    pub would_be: bool,
    pub sites: Vec<SitePlan>,
    /// `block:block_rq_complete`, with the field offsets of this kernel.
    pub rq_complete: Option<RqCompleteLayout>,
    pub notes: Vec<String>,
}

/// Why no plan can be made; the message names what is missing and the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPlan(pub String);

impl fmt::Display for NoPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoPlan {}

fn why_not(a: &Availability) -> &str {
    match a {
        Availability::Yes => "available",
        Availability::No(why) | Availability::Unknown(why) => why,
    }
}

impl Plan {
    /// Chooses, per acquire site, fexit where fentry programs load and the
    /// function is traceable, kprobes otherwise. Fails when not a single
    /// acquire site can be watched.
    pub fn build(caps: &Caps, preference: Preference) -> Result<Plan, NoPlan> {
        let plan = Plan::choose(caps, preference, false);
        if plan
            .sites
            .iter()
            .filter(|s| s.acquire)
            .all(|s| s.method.is_none())
        {
            // Say once what the kernel lacks as a whole, then any per-symbol detail.
            let mut missing = Vec::new();
            if preference != Preference::Kprobe && !caps.fentry.is_yes() {
                missing.push(format!("fentry/fexit: {}", why_not(&caps.fentry)));
            }
            if preference != Preference::Fentry && !caps.kprobes.is_yes() {
                missing.push(format!("kprobes: {}", why_not(&caps.kprobes)));
            }
            if missing.is_empty() {
                missing = plan
                    .sites
                    .iter()
                    .map(|s| format!("{}: {}", s.symbol, s.reason))
                    .collect();
            }
            return Err(NoPlan(format!(
                "cannot watch any acquire site on kernel {}.\n  {}\n\
                 pintrace needs kprobes (CONFIG_KPROBES) or fentry/fexit programs (BTF \
                 trampolines).",
                caps.release,
                missing.join("\n  ")
            )));
        }
        Ok(plan)
    }

    /// The plan pintrace would attach if this kernel's fentry/fexit (where
    /// it has BTF) and kprobes worked, for `doctor` on a kernel that
    /// cannot trace: the symbols, argument layouts and every other reason
    /// a site is off are this kernel's; only the methods are assumed.
    /// Marked [`would_be`](Plan::would_be); nothing attaches from it.
    pub fn would_attach(caps: &Caps, preference: Preference) -> Plan {
        let mut plan = Plan::choose(caps, preference, true);
        plan.notes.insert(
            0,
            "would-be plan: this kernel cannot trace; the methods are assumed (fentry/fexit \
             where it has BTF, else kprobes), everything else is this kernel's"
                .into(),
        );
        plan
    }

    /// Each site's method and why. `assume`: as if fentry/fexit (with
    /// kernel BTF) and kprobes were available.
    fn choose(caps: &Caps, preference: Preference, assume: bool) -> Plan {
        let mut sites = Vec::new();
        let mut notes = Vec::new();
        let fentry_yes = caps.fentry.is_yes() || (assume && caps.btf);
        let kprobes_yes = caps.kprobes.is_yes() || assume;
        for site in Site::ALL {
            let symbol = site.symbol();
            let info = caps.symbol(symbol);
            let present = info.is_some_and(|s| s.present);
            let traceable = info.and_then(|s| s.traceable).unwrap_or(present);
            let fexit_ok = preference != Preference::Kprobe && fentry_yes && traceable;
            let kprobe_ok = preference != Preference::Fentry && kprobes_yes && present;
            let args = caps.protos.get(site);
            let (method, reason) = if !present {
                (None, format!("{symbol} is not in /proc/kallsyms"))
            } else if site == Site::GetUserPagesUnlocked && caps.unlocked_nests() {
                (None, NESTED_UNLOCKED.to_owned())
            } else if site.is_bio() && caps.layout.bio.is_none() {
                (
                    None,
                    "the layout of struct bio is unknown without kernel BTF".to_owned(),
                )
            } else if let Err(misfit) = args {
                (None, misfit.to_string())
            } else if fexit_ok {
                let why = if caps.fentry.is_yes() {
                    "fentry/fexit programs load here"
                } else {
                    "assumed: fentry/fexit programs would load"
                };
                (Some(Method::Trampoline), why.into())
            } else if kprobe_ok {
                let why = if preference == Preference::Kprobe {
                    "chosen with --attach kprobe".to_owned()
                } else {
                    format!("fentry/fexit unavailable: {}", why_not(&caps.fentry))
                };
                let why = if caps.kprobes.is_yes() {
                    why
                } else {
                    format!("assumed: kprobes; {why}")
                };
                match args.ok().and_then(|a| a.kprobe_misfit(symbol)) {
                    Some(misfit) => (None, format!("{misfit} ({why})")),
                    None => (Some(Method::Kprobe), why),
                }
            } else {
                let mut missing = Vec::new();
                if preference != Preference::Kprobe {
                    missing.push(format!("fentry/fexit: {}", why_not(&caps.fentry)));
                }
                if preference != Preference::Fentry {
                    missing.push(format!("kprobes: {}", why_not(&caps.kprobes)));
                }
                (None, missing.join("; "))
            };
            sites.push(SitePlan {
                site: site_name(site),
                symbol,
                method,
                programs: method.map(|m| m.program_kind(site)).unwrap_or("off"),
                acquire: site.is_acquire(),
                reason,
                args: args.ok().cloned(),
                id: site,
            });
        }
        if caps.rq_complete.is_none() {
            notes.push(
                "block:block_rq_complete is not readable in tracefs: bio completions are not seen"
                    .into(),
            );
        }
        if !caps.vmstat_pin_counters {
            notes.push("/proc/vmstat has no nr_foll_pin_* counters: no cross-check".into());
        }
        let bio_off: Vec<&str> = sites
            .iter()
            .filter(|s| s.id.is_bio() && s.method.is_none())
            .map(|s| s.symbol)
            .collect();
        if bio_off == [Site::BioMap.symbol()] {
            // Inlined into blk_rq_map_user_iov, or a kernel without it.
            notes.push(format!(
                "{} not watched: SG_IO and passthrough pins are not tied to their bios",
                Site::BioMap.symbol()
            ));
        } else if !bio_off.is_empty() {
            notes.push(format!(
                "{} not watched: pins are not tied to their bios (no \"held after its bio \
                 completed\" leaks, no bio in findings)",
                bio_off.join(", ")
            ));
        }
        if let Some(off) = sites
            .iter()
            .find(|s| s.id == Site::GupPutFolio && s.method.is_none())
        {
            notes.push(format!(
                "{} is not watched ({}): releases are not seen, so no leak or mismatch can be told",
                off.symbol, off.reason
            ));
        }
        Plan {
            would_be: assume,
            sites,
            rq_complete: caps.rq_complete,
            notes,
        }
    }

    /// Leaves the bio probes and `block:block_rq_complete` off (`--no-bio`):
    /// pins are then not tied to their bios and block completions are not
    /// counted, for about half the probes' cost per Direct I/O.
    pub fn leave_bios_off(&mut self, why: &str) {
        let mut off = Vec::new();
        for s in self.sites.iter_mut().filter(|s| s.id.is_bio()) {
            if s.method.take().is_some() {
                off.push(s.symbol);
            }
            s.programs = "off";
            s.reason = why.to_owned();
        }
        if self.rq_complete.take().is_some() {
            off.push("block:block_rq_complete");
        }
        if !off.is_empty() {
            self.notes.push(format!(
                "{} left off ({why}): pins are not tied to their bios (no \"held after its bio \
                 completed\" leaks, no bio in findings) and block completions are not counted",
                off.join(", "),
            ));
        }
    }

    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .sites
            .iter()
            .map(|s| format!("{}={}", s.symbol, s.programs))
            .collect();
        parts.push(format!(
            "block_rq_complete={}",
            if self.rq_complete.is_some() {
                "tracepoint"
            } else {
                "off"
            }
        ));
        parts.join(" ")
    }
}

/// The site's short name in plans and reports (its row of `site_table!`).
pub fn site_name(site: Site) -> &'static str {
    site.name()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::{
        caps::symbol_table,
        flags::DetectedFlags,
        protos::{fit, Param, Proto, Protos, Shape},
    };

    /// A 6.12 kernel with every site present and traceable, the site
    /// table's argument positions, kprobes and fentry as asked.
    pub(crate) fn caps(kprobes: bool, fentry: bool) -> Caps {
        let kallsyms = "ffffffff815f3b40 T get_user_pages_fast\n\
                        ffffffff815f3ba0 T pin_user_pages_fast\n\
                        ffffffff815f3c00 T pin_user_pages\n\
                        ffffffff815f3c40 T get_user_pages\n\
                        ffffffff815f3c80 T pin_user_pages_remote\n\
                        ffffffff815f3cc0 T get_user_pages_remote\n\
                        ffffffff815eed50 t gup_put_folio\n\
                        ffffffff81700000 T bio_iov_iter_get_pages\n\
                        ffffffff81700100 T bio_endio\n\
                        ffffffff81700200 T __bio_release_pages\n\
                        ffffffff81700300 t bio_map_user_iov\n\
                        ffffffff815f4000 T folio_add_pin\n\
                        ffffffff815f4100 T pin_user_pages_unlocked\n\
                        ffffffff815f4200 T get_user_pages_unlocked\n";
        Caps {
            release: "6.12.0-test".into(),
            privileged: Availability::Yes,
            btf: true,
            kprobes: if kprobes {
                Availability::Yes
            } else {
                Availability::No("no CONFIG_KPROBES".into())
            },
            fentry: if fentry {
                Availability::Yes
            } else {
                Availability::No("loading an fexit program failed: EPERM".into())
            },
            tracefs: None,
            rq_complete: None,
            vmstat_pin_counters: true,
            layout: crate::kernel::layout::StructOffsets {
                bio: Some(crate::kernel::layout::BioOffsets {
                    bdev: 8,
                    opf: 16,
                    flags: 20,
                    status: 26,
                    sector: 32,
                    size: 40,
                    bdev_dev: 36,
                    req_biotail: 56,
                    page_pinned_bit: Some(0),
                }),
                ..Default::default()
            },
            symbols: symbol_table(
                kallsyms,
                Some(
                    "pin_user_pages_fast\nget_user_pages_fast\npin_user_pages\nget_user_pages\n\
                     pin_user_pages_remote\nget_user_pages_remote\ngup_put_folio\n\
                     bio_iov_iter_get_pages\nbio_endio\n__bio_release_pages\nfolio_add_pin\n\
                     pin_user_pages_unlocked\nget_user_pages_unlocked\nbio_map_user_iov\n",
                ),
            ),
            flags: DetectedFlags::choose("6.12.0-test", [None; 3], None),
            protos: Protos::builtin("no kernel BTF"),
        }
    }

    fn site(p: &Plan, id: Site) -> &SitePlan {
        p.sites.iter().find(|s| s.id == id).unwrap()
    }

    /// A kernel whose `pin_user_pages_fast` lost its `pages` (renamed) and
    /// whose `pin_user_pages_remote` took four more arguments before its
    /// own: the first is off naming what it found, the second fits a
    /// trampoline but not a kprobe.
    #[test]
    fn a_prototype_that_no_longer_fits_switches_its_site_off() {
        let mut c = caps(true, true);
        let p = |name: &str, ptr: bool| Param {
            name: name.into(),
            shape: if ptr {
                Shape::Pointer
            } else {
                Shape::Int { bytes: 8 }
            },
        };
        let fast = Proto {
            symbol: "pin_user_pages_fast".into(),
            params: vec![
                p("start", false),
                p("nr_pages", false),
                p("gup_flags", false),
                p("pagev", true),
            ],
            ret: Shape::Int { bytes: 4 },
        };
        c.protos
            .set(Site::PinUserPagesFast, fit(Site::PinUserPagesFast, &fast));
        let remote = Proto {
            symbol: "pin_user_pages_remote".into(),
            params: ["mm", "a", "b", "c"]
                .iter()
                .map(|n| p(n, true))
                .chain([
                    p("start", false),
                    p("nr_pages", false),
                    p("gup_flags", false),
                    p("pages", true),
                ])
                .collect(),
            ret: Shape::Int { bytes: 8 },
        };
        c.protos.set(
            Site::PinUserPagesRemote,
            fit(Site::PinUserPagesRemote, &remote),
        );
        let plan = Plan::build(&c, Preference::Auto).unwrap();
        let off = site(&plan, Site::PinUserPagesFast);
        assert_eq!((off.method, off.programs), (None, "off"));
        assert_eq!(
            off.reason,
            "pin_user_pages_fast(start, nr_pages, gup_flags, pagev): no parameter `pages`"
        );
        assert_eq!(off.args, None);
        let r = site(&plan, Site::PinUserPagesRemote);
        assert_eq!(r.method, Some(Method::Trampoline));
        let args = r.args.as_ref().unwrap();
        assert_eq!(args.source, "BTF");
        assert_eq!(
            args.args.iter().map(|a| a.position).collect::<Vec<_>>(),
            [4, 5, 6, 7]
        );
        // The others keep the table's positions.
        assert_eq!(
            site(&plan, Site::GupPutFolio).args.as_ref().unwrap().source,
            "built-in"
        );
        let plan = Plan::build(&c, Preference::Kprobe).unwrap();
        let r = site(&plan, Site::PinUserPagesRemote);
        assert_eq!(r.method, None);
        assert!(
            r.reason.starts_with(
                "pin_user_pages_remote(mm, a, b, c, start, nr_pages, gup_flags, pages): \
                 `gup_flags` is argument 7, beyond the 6 a kprobe reads from registers"
            ),
            "{}",
            r.reason
        );
        assert!(r.kprobe_misfit().is_some());
        assert!(site(&plan, Site::GetUserPagesRemote)
            .kprobe_misfit()
            .is_none());
    }

    #[test]
    fn a_kernel_that_cannot_trace_still_has_a_would_be_plan() {
        let c = caps(false, false);
        assert!(Plan::build(&c, Preference::Auto).is_err());
        let plan = Plan::would_attach(&c, Preference::Auto);
        assert!(plan.would_be);
        assert!(
            plan.notes[0].starts_with("would-be plan"),
            "{:?}",
            plan.notes
        );
        let fast = site(&plan, Site::PinUserPagesFast);
        assert_eq!(fast.method, Some(Method::Trampoline));
        assert!(fast.reason.starts_with("assumed"), "{}", fast.reason);
        assert_eq!(fast.args.as_ref().unwrap().source, "built-in");
        // Without BTF, kprobes are what would be used.
        let mut c = caps(false, false);
        c.btf = false;
        let plan = Plan::would_attach(&c, Preference::Auto);
        let fast = site(&plan, Site::PinUserPagesFast);
        assert_eq!(fast.method, Some(Method::Kprobe));
        assert!(
            fast.reason.starts_with("assumed: kprobes"),
            "{}",
            fast.reason
        );
        // A real plan is not marked.
        assert!(
            !Plan::build(&caps(true, true), Preference::Auto)
                .unwrap()
                .would_be
        );
    }

    #[test]
    fn get_user_pages_unlocked_is_off_where_it_nests() {
        let mut c = caps(true, true);
        let site = |p: &Plan, sym: &str| p.sites.iter().find(|s| s.symbol == sym).cloned().unwrap();
        let plan = Plan::build(&c, Preference::Auto).unwrap();
        assert_eq!(
            site(&plan, "get_user_pages_unlocked").method,
            Some(Method::Trampoline)
        );
        c.release = "6.1.0-57-cloud-amd64".into();
        let plan = Plan::build(&c, Preference::Auto).unwrap();
        let off = site(&plan, "get_user_pages_unlocked");
        assert_eq!(off.method, None);
        assert!(off.reason.contains("count them twice"), "{}", off.reason);
        // Its outer call is still watched.
        assert_eq!(
            site(&plan, "pin_user_pages_unlocked").method,
            Some(Method::Trampoline)
        );
    }

    #[test]
    fn no_bio_leaves_the_bio_probes_and_completions_off() {
        let mut c = caps(true, true);
        c.rq_complete = Some(RqCompleteLayout {
            dev: 8,
            sector: 16,
            nr_sector: 24,
            error: 28,
        });
        let mut plan = Plan::build(&c, Preference::Auto).unwrap();
        assert!(plan.rq_complete.is_some());
        plan.leave_bios_off("--no-bio");
        for s in &plan.sites {
            if s.id.is_bio() {
                assert_eq!((s.method, s.programs), (None, "off"), "{}", s.symbol);
                assert_eq!(s.reason, "--no-bio");
            } else {
                assert_eq!(s.method, Some(Method::Trampoline), "{}", s.symbol);
            }
        }
        assert!(plan.rq_complete.is_none());
        let summary = plan.summary();
        assert!(summary.contains("bio_endio=off") && summary.contains("block_rq_complete=off"));
        assert!(summary.contains("pin_user_pages_fast=fexit"), "{summary}");
        let note = plan.notes.last().unwrap();
        assert!(
            note.contains("bio_iov_iter_get_pages, bio_map_user_iov, bio_endio, __bio_release_pages, block:block_rq_complete left off (--no-bio)"),
            "{note}"
        );
    }

    #[test]
    fn prefers_fexit_then_kprobes() {
        let plan = Plan::build(&caps(true, true), Preference::Auto).unwrap();
        assert!(plan
            .sites
            .iter()
            .all(|s| s.method == Some(Method::Trampoline)));
        assert_eq!(plan.sites[0].programs, "fexit");
        let put = |p: &Plan| {
            p.sites
                .iter()
                .find(|s| s.id == Site::GupPutFolio)
                .unwrap()
                .programs
        };
        assert_eq!(put(&plan), "fentry");
        let plan = Plan::build(&caps(true, false), Preference::Auto).unwrap();
        assert!(plan.sites.iter().all(|s| s.method == Some(Method::Kprobe)));
        assert!(plan.sites[0].reason.contains("EPERM"));
        assert_eq!(plan.sites[0].programs, "kprobe+kretprobe");
        assert_eq!(put(&plan), "kprobe");
        let plan = Plan::build(&caps(true, true), Preference::Kprobe).unwrap();
        assert!(plan.sites.iter().all(|s| s.method == Some(Method::Kprobe)));
    }

    #[test]
    fn no_kprobes_no_fentry_names_both_and_the_way_out() {
        let err = Plan::build(&caps(false, false), Preference::Auto).unwrap_err();
        assert!(err.0.contains("CONFIG_KPROBES"), "{err}");
        assert!(err.0.contains("EPERM"), "{err}");
        // The way out depends on the command: `Session::start` adds it.
        assert!(!err.0.contains("xtask"), "{err}");
        let err = Plan::build(&caps(true, false), Preference::Fentry).unwrap_err();
        assert!(err.0.contains("fentry/fexit"), "{err}");
    }

    #[test]
    fn missing_symbol_is_off_with_reason() {
        let mut c = caps(true, false);
        c.symbols = symbol_table("ffffffff815f3ba0 T pin_user_pages_fast\n", None);
        let plan = Plan::build(&c, Preference::Auto).unwrap();
        let get = plan
            .sites
            .iter()
            .find(|s| s.symbol == "get_user_pages_fast")
            .unwrap();
        assert_eq!(get.method, None);
        assert!(get.reason.contains("kallsyms"));
        assert!(plan.summary().contains("get_user_pages_fast=off"));
        let put = plan
            .sites
            .iter()
            .find(|s| s.symbol == "gup_put_folio")
            .unwrap();
        assert_eq!(put.method, None);
        assert!(plan
            .notes
            .iter()
            .any(|n| n.contains("releases are not seen")));
    }

    #[test]
    fn an_inlined_bio_map_user_iov_says_what_is_not_tied() {
        let full = Plan::build(&caps(true, true), Preference::Auto).unwrap();
        let map = full.sites.iter().find(|s| s.id == Site::BioMap).unwrap();
        assert_eq!(map.programs, "fentry+fexit");
        assert!(
            !full.notes.iter().any(|n| n.contains("not watched")),
            "{:?}",
            full.notes
        );
        let mut c = caps(true, true);
        let kallsyms = "ffffffff815f3ba0 T pin_user_pages_fast\n\
                        ffffffff815eed50 t gup_put_folio\n\
                        ffffffff81700000 T bio_iov_iter_get_pages\n\
                        ffffffff81700100 T bio_endio\n\
                        ffffffff81700200 T __bio_release_pages\n";
        c.symbols = symbol_table(kallsyms, None);
        let plan = Plan::build(&c, Preference::Auto).unwrap();
        let map = plan.sites.iter().find(|s| s.id == Site::BioMap).unwrap();
        assert_eq!(map.method, None);
        let notes: Vec<&String> = plan
            .notes
            .iter()
            .filter(|n| n.contains("not watched"))
            .collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("bio_map_user_iov not watched: SG_IO and passthrough"),
            "{notes:?}"
        );
    }

    #[test]
    fn bio_sites_need_the_bio_layout() {
        let plan = Plan::build(&caps(true, true), Preference::Auto).unwrap();
        let fill = plan.sites.iter().find(|s| s.id == Site::BioFill).unwrap();
        assert_eq!(fill.programs, "fentry+fexit");
        assert!(
            !plan.notes.iter().any(|n| n.contains("bios")),
            "{:?}",
            plan.notes
        );
        let mut c = caps(true, false);
        c.layout.bio = None;
        let plan = Plan::build(&c, Preference::Auto).unwrap();
        for s in plan.sites.iter().filter(|s| s.id.is_bio()) {
            assert_eq!(s.method, None);
            assert!(s.reason.contains("BTF"), "{}", s.reason);
        }
        assert!(plan
            .notes
            .iter()
            .any(|n| n.contains("not tied to their bios")));
        // The rest of the plan stands.
        assert!(plan
            .sites
            .iter()
            .filter(|s| !s.id.is_bio())
            .all(|s| s.method == Some(Method::Kprobe)));
    }
}
