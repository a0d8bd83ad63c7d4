//! Kernel capabilities: what the running kernel offers for tracing, read from
//! /proc, /sys and tracefs. Nothing here loads a BPF program; the one fact
//! that can only be learnt by trying (whether fentry/fexit programs load) is
//! filled in by the probes module and handed back as [`Availability`].

use crate::kernel::{
    flags::DetectedFlags,
    layout::{StructOffsets, VMLINUX_BTF},
    protos::Protos,
};
use serde::Serialize;
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

/// The kernel symbols pintrace knows about (docs/kernel.md), by role.
pub const KNOWN_SYMBOLS: &[(&str, &str)] = &[
    ("pin_user_pages_fast", "acquire"),
    ("get_user_pages_fast", "acquire"),
    ("pin_user_pages", "acquire"),
    ("get_user_pages", "acquire"),
    ("pin_user_pages_remote", "acquire"),
    ("pin_user_pages_unlocked", "acquire"),
    ("get_user_pages_remote", "acquire"),
    ("get_user_pages_unlocked", "acquire"),
    ("iov_iter_get_pages2", "acquire"),
    ("iov_iter_extract_pages", "acquire"),
    ("bio_iov_iter_get_pages", "bio"),
    ("bio_map_user_iov", "bio"),
    ("blk_rq_map_user_iov", "bio"),
    ("try_grab_page", "grab"),
    ("try_grab_folio", "grab"),
    ("try_grab_folio_fast", "grab"),
    ("try_grab_compound_head", "grab"),
    ("folio_add_pin", "grab"),
    ("unpin_user_page", "release"),
    ("unpin_user_pages", "release"),
    ("unpin_user_pages_dirty_lock", "release"),
    ("unpin_user_page_range_dirty_lock", "release"),
    ("unpin_folio", "release"),
    ("unpin_folios", "release"),
    ("unpin_user_folio", "release"),
    ("gup_put_folio", "release"),
    ("put_compound_head", "release"),
    ("bio_release_pages", "bio"),
    ("__bio_release_pages", "bio"),
    ("bio_endio", "bio"),
    // 6.1's fast calls fall back to get_user_pages_unlocked through it.
    ("__gup_longterm_unlocked", "nest"),
];

/// Whether a feature can be used, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum Availability {
    Yes,
    No(String),
    /// Not tested (for instance: testing needs root).
    Unknown(String),
}

impl Availability {
    pub fn is_yes(&self) -> bool {
        matches!(self, Availability::Yes)
    }
}

/// One kernel symbol as this kernel has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SymbolInfo {
    pub name: &'static str,
    pub role: &'static str,
    /// Present in /proc/kallsyms (as a text symbol).
    pub present: bool,
    /// Global (`T`) rather than static (`t`).
    pub global: bool,
    /// Listed in tracefs `available_filter_functions`: ftrace, and so
    /// fentry/fexit, can hook it. `None` when tracefs could not be read.
    pub traceable: Option<bool>,
}

/// Field offsets of the `block:block_rq_complete` tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RqCompleteLayout {
    pub dev: u32,
    pub sector: u32,
    pub nr_sector: u32,
    pub error: u32,
}

/// Everything pintrace learnt about the running kernel.
#[derive(Clone, Debug, Serialize)]
pub struct Caps {
    pub release: String,
    pub privileged: Availability,
    pub btf: bool,
    pub kprobes: Availability,
    /// fentry/fexit for tracing programs: only known by trying to load one.
    pub fentry: Availability,
    pub tracefs: Option<PathBuf>,
    pub rq_complete: Option<RqCompleteLayout>,
    pub vmstat_pin_counters: bool,
    pub symbols: Vec<SymbolInfo>,
    /// Field offsets the probes read (from BTF, else built-in defaults).
    pub layout: StructOffsets,
    /// FOLL_* values (from BTF, else the version table) and where from.
    pub flags: DetectedFlags,
    /// Where each site's arguments are (from BTF prototypes, else the
    /// site table). Shown through the plan, which carries them per site.
    #[serde(skip)]
    pub protos: Protos,
}

impl Caps {
    /// Reads the running kernel's capabilities. `fentry` starts as unknown.
    pub fn detect() -> Caps {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let tracefs = tracefs_dir();
        let kallsyms = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let traceable = tracefs
            .as_ref()
            .and_then(|t| fs::read_to_string(t.join("available_filter_functions")).ok());
        let kprobes = if Path::new("/sys/bus/event_source/devices/kprobe").exists()
            || tracefs
                .as_ref()
                .is_some_and(|t| t.join("kprobe_events").exists())
        {
            Availability::Yes
        } else {
            Availability::No(
                "no kprobe PMU in /sys/bus/event_source/devices and no kprobe_events in tracefs \
                 (kernel built without CONFIG_KPROBES)"
                    .into(),
            )
        };
        let rq_complete = tracefs.as_ref().and_then(|t| {
            let format =
                fs::read_to_string(t.join("events/block/block_rq_complete/format")).ok()?;
            parse_rq_complete_format(&format)
        });
        let vmstat = fs::read_to_string("/proc/vmstat").unwrap_or_default();
        // The kernel's BTF, read once for the offsets, the flags and the
        // prototypes.
        let btf = btf_rs::Btf::from_file(VMLINUX_BTF)
            .map_err(|e| format!("no kernel BTF (reading {VMLINUX_BTF}: {e})"));
        let layout = match &btf {
            Ok(b) => StructOffsets::from_btf(b).unwrap_or_else(|e| {
                log::info!("struct offsets: built-in defaults ({e:#})");
                StructOffsets::default()
            }),
            Err(e) => {
                log::info!("struct offsets: built-in defaults ({e})");
                StructOffsets::default()
            }
        };
        let flags = DetectedFlags::detect(btf.as_ref().ok(), &release, layout.bio.as_ref());
        let protos = match &btf {
            Ok(b) => Protos::from_btf(b),
            Err(e) => Protos::builtin(e),
        };
        Caps {
            release,
            privileged: privileges(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            kprobes,
            fentry: Availability::Unknown("not tested".into()),
            tracefs,
            rq_complete,
            vmstat_pin_counters: vmstat.contains("nr_foll_pin_acquired"),
            symbols: symbol_table(&kallsyms, traceable.as_deref()),
            layout,
            flags,
            protos,
        }
    }

    pub fn symbol(&self, name: &str) -> Option<&SymbolInfo> {
        self.symbols.iter().find(|s| s.name == name)
    }

    /// Whether `get_user_pages_unlocked` may run inside other acquire
    /// sites. On 6.1 the fast calls' slow path (`__gup_longterm_unlocked`)
    /// and `pin_user_pages_unlocked` call it; on 6.12 neither does (both go
    /// to `__gup_longterm_locked`; the guest suite counts every page once
    /// with it watched). Kernels before 6.3, and any kernel that still has
    /// `__gup_longterm_unlocked`, are taken to nest: leaving the site off
    /// loses its direct callers, watching it there would count pages twice.
    pub fn unlocked_nests(&self) -> bool {
        let old = crate::kernel::flags::parse_version(&self.release).is_none_or(|v| v < (6, 3));
        old || self
            .symbol("__gup_longterm_unlocked")
            .is_some_and(|s| s.present)
    }
}

/// Classifies the known symbols from kallsyms text and the tracefs list of
/// traceable functions.
pub fn symbol_table(kallsyms: &str, traceable: Option<&str>) -> Vec<SymbolInfo> {
    let mut kinds: HashMap<&str, char> = HashMap::new();
    for line in kallsyms.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(_addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        // Module symbols carry a trailing "[module]"; only vmlinux text counts here.
        if it.next().is_some() {
            continue;
        }
        if let Some(c) = kind.chars().next() {
            if c == 'T' || c == 't' {
                kinds.entry(name).or_insert(c);
            }
        }
    }
    let traceable: Option<std::collections::HashSet<&str>> = traceable.map(|t| {
        t.lines()
            .filter_map(|l| l.split_ascii_whitespace().next())
            .collect()
    });
    KNOWN_SYMBOLS
        .iter()
        .map(|&(name, role)| {
            let kind = kinds.get(name).copied();
            SymbolInfo {
                name,
                role,
                present: kind.is_some(),
                global: kind == Some('T'),
                traceable: traceable.as_ref().map(|t| t.contains(name)),
            }
        })
        .collect()
}

/// Parses a tracepoint `format` file for the fields of `block_rq_complete`.
pub fn parse_rq_complete_format(format: &str) -> Option<RqCompleteLayout> {
    let mut offsets: HashMap<String, u32> = HashMap::new();
    for line in format.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next()?.trim();
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?
            .split('[')
            .next()?
            .to_owned();
        let offset = parts
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|o| o.trim().parse().ok())?;
        offsets.insert(name, offset);
    }
    Some(RqCompleteLayout {
        dev: *offsets.get("dev")?,
        sector: *offsets.get("sector")?,
        nr_sector: *offsets.get("nr_sector")?,
        error: *offsets.get("error")?,
    })
}

/// The mounted tracefs, trying the modern and the legacy place.
pub fn tracefs_dir() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("available_events").exists())
}

/// Mounts tracefs at /sys/kernel/tracing when no tracefs is mounted (needs
/// root). Returns what was done, for the report.
pub fn ensure_tracefs() -> Result<Option<PathBuf>, String> {
    if tracefs_dir().is_some() {
        return Ok(None);
    }
    let target = PathBuf::from("/sys/kernel/tracing");
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "tracefs"])
        .arg(&target)
        .status()
        .map_err(|e| format!("running mount: {e}"))?;
    if status.success() && tracefs_dir().is_some() {
        Ok(Some(target))
    } else {
        Err(format!(
            "tracefs is not mounted and `mount -t tracefs tracefs {}` failed ({status})",
            target.display()
        ))
    }
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether this process may load and attach tracing programs.
pub fn privileges() -> Availability {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    privileges_from_capeff(cap_eff)
}

pub fn privileges_from_capeff(cap_eff: u64) -> Availability {
    let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Availability::Yes
    } else {
        Availability::No(
            "loading and attaching probes needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): \
             run as root"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_12: &str = "name: block_rq_complete
ID: 1234
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:int error;\toffset:28;\tsize:4;\tsigned:1;
\tfield:unsigned short ioprio;\toffset:32;\tsize:2;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
\tfield:__data_loc char[] cmd;\toffset:44;\tsize:4;\tsigned:0;
";

    #[test]
    fn parses_rq_complete_offsets() {
        assert_eq!(
            parse_rq_complete_format(FORMAT_6_12),
            Some(RqCompleteLayout {
                dev: 8,
                sector: 16,
                nr_sector: 24,
                error: 28
            })
        );
    }

    #[test]
    fn rq_complete_without_error_field_is_none() {
        let cut: String = FORMAT_6_12
            .lines()
            .filter(|l| !l.contains("error"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse_rq_complete_format(&cut), None);
    }

    #[test]
    fn symbol_table_reads_kinds_and_traceability() {
        let kallsyms = "ffffffff815ee900 t try_grab_folio_fast\n\
                        ffffffff815eed50 t gup_put_folio\n\
                        ffffffff815f3ba0 T pin_user_pages_fast\n\
                        ffffffffc0000000 t unpin_folio\t[some_module]\n\
                        ffffffff81000000 D get_user_pages_fast\n";
        let traceable = "pin_user_pages_fast\ntry_grab_folio_fast\n";
        let table = symbol_table(kallsyms, Some(traceable));
        let get = |n: &str| table.iter().find(|s| s.name == n).unwrap().clone();
        let pin = get("pin_user_pages_fast");
        assert!(pin.present && pin.global && pin.traceable == Some(true));
        let gup_put = get("gup_put_folio");
        assert!(gup_put.present && !gup_put.global && gup_put.traceable == Some(false));
        // A data symbol and a module symbol are not vmlinux text.
        assert!(!get("get_user_pages_fast").present);
        assert!(!get("unpin_folio").present);
        assert_eq!(symbol_table(kallsyms, None)[0].traceable, None);
    }

    #[test]
    fn privileges_name_the_capabilities() {
        assert_eq!(
            privileges_from_capeff(1 << CAP_SYS_ADMIN),
            Availability::Yes
        );
        assert_eq!(
            privileges_from_capeff((1 << CAP_BPF) | (1 << CAP_PERFMON)),
            Availability::Yes
        );
        match privileges_from_capeff(1 << CAP_BPF) {
            Availability::No(why) => {
                assert!(why.contains("CAP_BPF") && why.contains("CAP_PERFMON"));
                assert!(why.contains("CAP_SYS_ADMIN"));
            }
            other => panic!("{other:?}"),
        }
    }
}
