//! Judging one scenario: what the engine says it did (its JSON report)
//! against what the ledger saw its process take and release. Pure.
//!
//! What is compared, and how exactly:
//! - **pages**: the Direct I/O pages the workload's process took (FOLL_PIN
//!   plus FOLL_GET) equal, exactly, the pages its I/O spans: every I/O of the
//!   jobs, plus the engine's set-up I/O (laying out a new file, one O_DIRECT
//!   probe read), each counted as the pages its buffer segments cover.
//! - **long-term**: io_uring registered buffers are FOLL_PIN|FOLL_LONGTERM,
//!   exactly the registered pages; nothing else is.
//! - **balance**: every FOLL_PIN and long-term pin the process took was
//!   released by the time it was over (long-term ones by the unregister),
//!   and the ledger holds none. FOLL_GET references are released with
//!   `put_page`, which is inline and cannot be traced: for FOLL_GET only
//!   what was taken is compared.
//! - **findings**: no leak, no mismatched release involving the process.
//! - **lossless**: no event lost or undecodable during the scenario.
//! - **vmstat**: the kernel's own counters moved at least by the pins traced
//!   for the process (they are system-wide: anything else pinning in the
//!   same window adds to them, so only the scenario's share is compared).
//!
//! Per family: pins `folio_add_pin` adds (legacy fs/direct-io.c) are
//! balanced like any pin but are not pages of the I/O; a buffer SG_IO must
//! copy takes no page; a scenario with a fault is judged on the error it
//! met (the **fault** check) and on the balance after it, not on a page
//! count; a regression also shows it reached the call it names.

use super::{Drive, Scenario, TargetKind};
use crate::{
    kernel::vmstat::PinCounters,
    ledger::{Counts, Kind},
};
use pintrace_engine::SegLayout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const PAGE: u64 = 4096;

/// The parts of the engine's `--json` report the judge reads.
#[derive(Clone, Debug, Deserialize)]
pub struct EngineOut {
    pub settings: EngineSettings,
    pub target: EngineTarget,
    pub total: EngineTotal,
    #[serde(default)]
    pub io_errors: Vec<serde_json::Value>,
    #[serde(default)]
    pub jobs: Vec<EngineJob>,
    /// Pages one I/O's buffer segments span, by the engine's own layout.
    #[serde(default)]
    pub pages_per_io: Option<u64>,
    /// SG_IO: whether the kernel was expected to map the pages or copy.
    #[serde(default)]
    pub sg: Option<EngineSg>,
    /// The fault injected and the error it met.
    #[serde(default)]
    pub fault: Option<EngineFault>,
    /// What the kernel answered the I/Os that failed (`--allow-errors`):
    /// an errno name, `short`, `eof` or a device status, with counts.
    #[serde(default)]
    pub errors_by_outcome: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EngineSg {
    /// "map" or "copy".
    pub expect: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EngineFault {
    pub kind: String,
    pub errno: Option<String>,
    #[serde(default)]
    pub count: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EngineSettings {
    pub bs: u64,
    /// Bytes each buffer starts past a page boundary.
    #[serde(default)]
    pub buffer_offset: u64,
    pub iodepth: u32,
    pub numjobs: u32,
    pub fixed_buffers: bool,
    pub iovecs: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EngineTarget {
    pub logical_block_size: u32,
    pub dio_mem_align: u32,
    pub setup_io: EngineSetup,
    pub fs_type: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct EngineSetup {
    pub writes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub read_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct EngineDir {
    pub ios: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EngineTotal {
    pub read: EngineDir,
    pub write: EngineDir,
    pub verify_reads: EngineDir,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EngineJob {
    pub buffer: EngineBuffer,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EngineBuffer {
    pub huge_bytes: Option<u64>,
}

/// What the scenario's process should have taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// Direct I/O pages in all (jobs and set-up).
    pub dio_pages: u64,
    /// Of which the engine's set-up I/O (layout and probe read).
    pub setup_pages: u64,
    /// Long-term pins of registered buffers.
    pub longterm_pages: u64,
    /// Whether the count is exact (false when an I/O came back short).
    pub exact: bool,
    /// SG_IO from a buffer the kernel copies: the I/O pins nothing.
    pub copy: bool,
    /// The error the fault met, as the engine reports it ("EFAULT x16"),
    /// or `None` when the scenario injects none.
    pub fault: Option<String>,
}

/// Pages a buffer segment at `off` (from a page boundary) of `len` bytes spans.
fn spanned(off: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    (off + len).div_ceil(PAGE) - off / PAGE
}

/// Pages one I/O of the jobs references through GUP.
pub fn pages_per_io(out: &EngineOut, drive: Drive) -> u64 {
    if let Some(n) = out.pages_per_io {
        return n;
    }
    let s = &out.settings;
    match drive {
        Drive::PvsyncUnaligned => {
            let t = &out.target;
            let unit = (t.dio_mem_align as usize).max(64);
            let layout = SegLayout::scattered(
                s.bs as usize,
                s.iovecs.unwrap_or(4),
                unit,
                t.dio_mem_align as usize,
            );
            layout
                .segs
                .iter()
                .map(|&(off, len)| spanned(off as u64, len as u64))
                .sum()
        }
        _ => spanned(s.buffer_offset, s.bs),
    }
}

/// The error a fault met, from the engine's report: its `fault` entry, or
/// the I/O errors it went on after (the device-made faults).
fn fault_seen(out: &EngineOut) -> String {
    if let Some(f) = &out.fault {
        if let Some(e) = &f.errno {
            return format!("{} x{} ({})", e, f.count.max(1), f.kind);
        }
    }
    let mut by = out.errors_by_outcome.clone();
    if by.is_empty() {
        for e in &out.io_errors {
            let name = ["outcome", "errno", "error"]
                .iter()
                .find_map(|k| e.get(*k).and_then(|v| v.as_str()))
                .unwrap_or("error");
            *by.entry(name.to_owned()).or_default() +=
                e.get("count").and_then(|c| c.as_u64()).unwrap_or(1);
        }
    }
    by.iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the engine's report says the process took.
pub fn expected(out: &EngineOut, scenario: &Scenario) -> Expected {
    let drive = scenario.drive;
    let copy = out.sg.as_ref().is_some_and(|g| g.expect == "copy");
    let s = &out.settings;
    let t = &out.total;
    let ios = t.read.ios + t.write.ios + t.verify_reads.ios;
    let bytes = t.read.bytes + t.write.bytes + t.verify_reads.bytes;
    let setup = &out.target.setup_io;
    // Layout writes come from a page-aligned buffer; the probe read is one
    // logical block from another. vfat serves O_DIRECT writes that extend a
    // file through the page cache (fat_direct_IO returns 0 for them): its
    // layout pins nothing.
    let layout_pages = if scenario.target == TargetKind::Vfat {
        0
    } else {
        setup.write_bytes.div_ceil(PAGE)
    };
    let probe_pages = if setup.reads > 0 {
        setup.reads * spanned(0, setup.read_bytes / setup.reads)
    } else {
        0
    };
    let setup_pages = layout_pages + probe_pages;
    let (job_pages, longterm_pages) = if s.fixed_buffers {
        // Registered buffers are pinned once, long-term; the I/O on them
        // goes through a bvec and takes no user page.
        (
            0,
            u64::from(s.numjobs) * u64::from(s.iodepth) * spanned(s.buffer_offset, s.bs),
        )
    } else if copy {
        (0, 0)
    } else {
        (ios * pages_per_io(out, drive), 0)
    };
    let fault = scenario.fault.map(|_| fault_seen(out));
    Expected {
        dio_pages: job_pages + setup_pages,
        setup_pages,
        longterm_pages,
        exact: fault.is_none() && bytes == ios * s.bs && setup.write_bytes.is_multiple_of(PAGE),
        copy,
        fault,
    }
}

/// What the ledger saw of the scenario's process, and around it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    pub tgid: u32,
    pub acquired: BTreeMap<Kind, Counts>,
    pub released: BTreeMap<Kind, u64>,
    pub outstanding: BTreeMap<Kind, u64>,
    /// Failing findings that involve the process or happened in its window.
    pub findings: u64,
    /// Events lost and records undecodable during the scenario.
    pub lost: u64,
    pub decode_errors: u64,
    /// The vmstat counters' change over the scenario.
    pub vmstat: Option<PinCounters>,
    /// Pin releases of folios the ledger never saw pinned, in the window.
    pub unknown_releases: u64,
    /// FOLL_GET pages taken by `get_futex_key` (shared futex keys: a thread
    /// exiting wakes its joiner through one), not by I/O.
    pub futex_pages: u64,
    /// FOLL_GET pages exec(2) took for its arguments (`get_arg_page`,
    /// through `get_user_pages_remote`): the engine process starting.
    pub exec_pages: u64,
    /// Pins `folio_add_pin` added to folios already pinned (legacy
    /// fs/direct-io.c): balanced like any pin, not pages of the I/O.
    pub added_pins: u64,
    /// Pages taken, by acquiring call.
    pub sites: BTreeMap<&'static str, u64>,
    /// `__bio_release_pages` calls in the scenario's window (system-wide:
    /// the scenario is the only Direct I/O then).
    pub bio_releases: u64,
}

impl Observed {
    fn pages(&self, k: Kind) -> u64 {
        self.acquired.get(&k).map(|c| c.pages).unwrap_or(0)
    }
    fn released(&self, k: Kind) -> u64 {
        self.released.get(&k).copied().unwrap_or(0)
    }
    fn outstanding(&self, k: Kind) -> u64 {
        self.outstanding.get(&k).copied().unwrap_or(0)
    }

    /// FOLL_GET pages taken for I/O (without the futex keys).
    pub fn get_io_pages(&self) -> u64 {
        self.pages(Kind::Get)
            .saturating_sub(self.futex_pages + self.exec_pages)
    }

    /// FOLL_PIN pages of the I/O (without the pins folio_add_pin added).
    pub fn pin_io_pages(&self) -> u64 {
        self.pages(Kind::Pin).saturating_sub(self.added_pins)
    }

    /// How the Direct I/O pages were taken: FOLL_PIN, FOLL_GET, both, none.
    pub fn dio_kind(&self) -> &'static str {
        match (self.pages(Kind::Pin) > 0, self.get_io_pages() > 0) {
            (true, false) => "FOLL_PIN",
            (false, true) => "FOLL_GET",
            (true, true) => "FOLL_PIN+FOLL_GET",
            (false, false) => "none",
        }
    }
}

/// One verdict line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check { name, ok, detail }
}

/// Long-term pins: traced exactly, or, where the call that registers io_uring
/// buffers is not watched on this kernel (6.1 uses `pin_user_pages`: its
/// site off in the plan), proven
/// by the vmstat counters moving by the registered pages beyond the traced
/// pins, both ways.
fn longterm(exp: &Expected, obs: &Observed, pin: u64, lt: u64) -> Check {
    let want = exp.longterm_pages;
    if exp.fault.is_some() && want > 0 {
        // A registration that failed partway pinned some of them; the
        // balance check says whether they came back.
        return check(
            "longterm",
            true,
            format!("{lt} pages pinned FOLL_PIN|FOLL_LONGTERM before the error (up to {want})"),
        );
    }
    if lt == want {
        return check(
            "longterm",
            true,
            format!("{lt} pages pinned FOLL_PIN|FOLL_LONGTERM (expected {want})"),
        );
    }
    if let (0, Some(d)) = (lt, obs.vmstat.filter(|_| want > 0)) {
        let traced_rel = obs.released(Kind::Pin);
        let (acq, rel) = (
            d.acquired.saturating_sub(pin),
            d.released.saturating_sub(traced_rel),
        );
        return check(
            "longterm",
            acq >= want && rel >= want,
            format!(
                "registration not traced on this kernel (its pinning call is not watched); vmstat \
                 beyond the traced pins: +{acq} pinned, +{rel} released (expected {want} each); \
                 {} unpin(s) of folios pinned out of sight",
                obs.unknown_releases
            ),
        );
    }
    check(
        "longterm",
        false,
        format!("{lt} pages pinned FOLL_PIN|FOLL_LONGTERM (expected {want})"),
    )
}

/// The FOLL_GET pages left out of the Direct I/O count, said.
fn not_io_note(obs: &Observed) -> String {
    let mut s = String::new();
    if obs.futex_pages > 0 {
        s += &format!(
            "; {} FOLL_GET page(s) of futex keys (get_futex_key) not counted",
            obs.futex_pages
        );
    }
    if obs.exec_pages > 0 {
        s += &format!(
            "; {} FOLL_GET page(s) of exec(2) arguments (get_arg_page) not counted",
            obs.exec_pages
        );
    }
    s
}

/// Judges a scenario; every check is returned, passed or not.
pub fn judge(scenario: &Scenario, exp: &Expected, obs: &Observed) -> Vec<Check> {
    let mut v = Vec::new();
    let pin_all = obs.pages(Kind::Pin);
    let pin = obs.pin_io_pages();
    let get = obs.get_io_pages();
    let lt = obs.pages(Kind::LongtermPin);
    let dio = pin + get;
    let jobs = exp.dio_pages - exp.setup_pages;
    let added = if obs.added_pins > 0 {
        format!(
            "; {} more pin(s) added by folio_add_pin (legacy Direct I/O), balanced, not counted",
            obs.added_pins
        )
    } else {
        String::new()
    };
    match &exp.fault {
        Some(seen) => v.push(check(
            "fault",
            !seen.is_empty(),
            if seen.is_empty() {
                "the fault was never met: the engine reported no error".into()
            } else {
                format!(
                    "met {seen}; Direct I/O took {dio} pages as {} around the errors (up to {} \
                     without them){added}",
                    obs.dio_kind(),
                    exp.dio_pages
                )
            },
        )),
        None => {
            let how = if exp.exact { "exactly" } else { "at least" };
            let pages_ok = if exp.exact {
                dio == exp.dio_pages
            } else {
                dio >= exp.dio_pages
            };
            let copy = if exp.copy {
                " (SG_IO from a misaligned buffer: the kernel copies, the I/O pins nothing)"
            } else {
                ""
            };
            v.push(check(
                "pages",
                pages_ok,
                format!(
                    "Direct I/O took {dio} pages as {} (expected {how} {}: {jobs} by the I/O{copy}, \
                     {} by the set-up){}{added}",
                    obs.dio_kind(),
                    exp.dio_pages,
                    exp.setup_pages,
                    not_io_note(obs)
                ),
            ));
        }
    }
    v.push(longterm(exp, obs, pin_all, lt));
    if let Some(r) = scenario.regression {
        let sites: Vec<String> = obs
            .sites
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let reached = exp.longterm_pages > 0 && v.iter().any(|c| c.name == "longterm" && c.ok)
            || exp.longterm_pages == 0 && dio >= jobs && jobs > 0;
        v.push(check(
            "reaches",
            reached,
            format!(
                "{}: pages by call: {}",
                r.reaches,
                if sites.is_empty() {
                    "none".into()
                } else {
                    sites.join(", ")
                }
            ),
        ));
    }
    let mut balance = Vec::new();
    let mut balanced = true;
    for (k, taken) in [(Kind::Pin, pin_all), (Kind::LongtermPin, lt)] {
        if taken == 0 && obs.released(k) == 0 && obs.outstanding(k) == 0 {
            continue;
        }
        let (rel, out) = (obs.released(k), obs.outstanding(k));
        balanced &= rel == taken && out == 0;
        balance.push(format!(
            "{}: {taken} taken, {rel} released, {out} held",
            k.label()
        ));
    }
    if get > 0 {
        balance.push(format!(
            "FOLL_GET: {get} taken; their put_page releases cannot be traced, not compared"
        ));
    }
    if balance.is_empty() {
        balance.push("nothing taken".into());
    }
    v.push(check("balance", balanced, balance.join("; ")));
    v.push(check(
        "findings",
        obs.findings == 0,
        if obs.findings == 0 {
            "no leak, no mismatched release".into()
        } else {
            format!("{} failing finding(s)", obs.findings)
        },
    ));
    v.push(check(
        "lossless",
        obs.lost == 0 && obs.decode_errors == 0,
        format!(
            "{} event(s) lost, {} undecodable",
            obs.lost, obs.decode_errors
        ),
    ));
    match obs.vmstat {
        Some(d) => {
            // folio_add_pin does not count in nr_foll_pin_acquired.
            let taken = pin + lt;
            let released = obs.released(Kind::Pin) + obs.released(Kind::LongtermPin);
            v.push(check(
                "vmstat",
                d.acquired >= taken && d.released >= released,
                format!(
                    "nr_foll_pin_acquired +{}, nr_foll_pin_released +{}: cover the {taken} pins \
                     traced for the process and the {released} released (system-wide counters)",
                    d.acquired, d.released
                ),
            ));
        }
        None => v.push(check(
            "vmstat",
            true,
            "no nr_foll_pin_* counters in /proc/vmstat: not compared".into(),
        )),
    }
    v
}

#[cfg(test)]
mod tests;
