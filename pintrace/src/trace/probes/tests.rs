//! The embedded eBPF object against what user space expects of it: the
//! programs of every site (by the names of `pintrace_common::site_table!`)
//! and of the tracepoints, each of the kind it is loaded as; every map it
//! opens; every global it sets, of the size it writes. Nothing else is
//! needed to catch a program, map or global renamed on one side only.

use super::OBJECT;
use aya_obj::{Object, ProgramSection};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use pintrace_common::Site;
use std::collections::BTreeSet;

/// `(constant's name, its value)`, for saying which constant is wrong.
macro_rules! named {
    ($($c:ident),* $(,)?) => {
        &[$((stringify!($c), pintrace_common::$c)),*]
    };
}

/// The tracepoint programs (not tied to a site).
const TRACEPOINTS: &[(&str, &str)] = named!(PROG_RQ_COMPLETE, PROG_PROCESS_EXIT, PROG_AUDIT);

/// The maps user space names.
const MAPS: &[(&str, &str)] = named!(
    EVENTS_MAP,
    COUNTERS_MAP,
    ENTRY_ARGS_MAP,
    STACKS_MAP,
    AUDIT_MAP,
    BIOS_MAP,
    STACK_CLOCK_MAP,
    FILTER_TGIDS_MAP,
    FILTER_FOLIOS_MAP,
    BOOKS_MAP,
    TALLY_MAP,
    LIFETIMES_MAP,
);

/// The globals user space sets before load: all `u32` but two.
const GLOBALS: &[(&str, &str)] = named!(
    GLOBAL_AUDIT_TGID,
    GLOBAL_BIO_BDEV_OFF,
    GLOBAL_BIO_OPF_OFF,
    GLOBAL_BIO_FLAGS_OFF,
    GLOBAL_BIO_STATUS_OFF,
    GLOBAL_BIO_SECTOR_OFF,
    GLOBAL_BIO_SIZE_OFF,
    GLOBAL_BDEV_DEV_OFF,
    GLOBAL_REQ_BIOTAIL_OFF,
    GLOBAL_RQ_DEV_OFF,
    GLOBAL_RQ_SECTOR_OFF,
    GLOBAL_RQ_NR_SECTOR_OFF,
    GLOBAL_RQ_ERROR_OFF,
    GLOBAL_PAGE_COMPOUND_HEAD_OFF,
    GLOBAL_FOLIO_REFCOUNT_OFF,
    GLOBAL_PAGE_SIZEOF,
    GLOBAL_RB_WAKEUP_BYTES,
    GLOBAL_STACK_INTERVAL_NS,
    GLOBAL_FOLL_PIN,
    GLOBAL_RQ_RECORDS,
    GLOBAL_ARG_LAYOUTS,
    GLOBAL_FILTER,
    GLOBAL_FOLL_LONGTERM,
    GLOBAL_BOOKS_ON,
    GLOBAL_BIO_RECORDS,
);
const U64_GLOBALS: &[&str] = &[pintrace_common::GLOBAL_STACK_INTERVAL_NS];

/// The size of a global as the loader writes it.
fn global_size(name: &str) -> u64 {
    if U64_GLOBALS.contains(&name) {
        8
    } else if name == pintrace_common::GLOBAL_ARG_LAYOUTS {
        std::mem::size_of::<[pintrace_common::ArgLayout; pintrace_common::SITE_SLOTS]>() as u64
    } else {
        4
    }
}

/// Each program user space loads, with the kind it takes it as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    FEntry,
    FExit,
    KProbe,
    KRetProbe,
    TracePoint,
}

fn expected_programs() -> Vec<(&'static str, Kind, Option<Site>)> {
    let mut v = Vec::new();
    for site in Site::ALL {
        let p = site.programs();
        let trampoline = if p.trampoline_is_exit {
            Kind::FExit
        } else {
            Kind::FEntry
        };
        v.push((p.trampoline, trampoline, Some(site)));
        v.extend(p.trampoline_entry.map(|n| (n, Kind::FEntry, Some(site))));
        v.extend(p.again.map(|n| (n, Kind::FEntry, Some(site))));
        v.push((p.kprobe, Kind::KProbe, Some(site)));
        v.extend(p.kretprobe.map(|n| (n, Kind::KRetProbe, Some(site))));
    }
    v.extend(
        TRACEPOINTS
            .iter()
            .map(|&(_, n)| (n, Kind::TracePoint, None)),
    );
    v
}

fn kind(section: &ProgramSection) -> Option<Kind> {
    Some(match section {
        ProgramSection::FEntry { sleepable: false } => Kind::FEntry,
        ProgramSection::FExit { sleepable: false } => Kind::FExit,
        ProgramSection::KProbe => Kind::KProbe,
        ProgramSection::KRetProbe => Kind::KRetProbe,
        ProgramSection::TracePoint => Kind::TracePoint,
        _ => return None,
    })
}

#[test]
fn every_program_user_space_attaches_is_in_the_object_as_its_kind() {
    let obj = Object::parse(OBJECT).expect("aya parses the embedded object");
    let expected = expected_programs();
    for &(name, want, site) in &expected {
        let prog = obj
            .programs
            .get(name)
            .unwrap_or_else(|| panic!("no program {name} (of {site:?}) in the object"));
        assert_eq!(
            kind(&prog.section),
            Some(want),
            "{name}: {:?}",
            prog.section
        );
    }
    // And nothing in it that user space would never attach: a program
    // named apart from its row.
    let known: BTreeSet<&str> = expected.iter().map(|&(n, _, _)| n).collect();
    let stray: Vec<&String> = obj
        .programs
        .keys()
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    assert!(stray.is_empty(), "programs no site names: {stray:?}");
    let unique: BTreeSet<&str> = expected.iter().map(|&(n, _, _)| n).collect();
    assert_eq!(unique.len(), expected.len(), "a program named twice");
}

#[test]
fn trampoline_programs_name_their_site_s_function() {
    // User space gives the function at load; the section says it too and
    // must not say another.
    let file = object::File::parse(OBJECT).unwrap();
    let mut seen = 0;
    for (name, kind, site) in expected_programs() {
        let (Some(site), Kind::FEntry | Kind::FExit) = (site, kind) else {
            continue;
        };
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no symbol {name}"));
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        let prefix = if kind == Kind::FExit {
            "fexit"
        } else {
            "fentry"
        };
        assert_eq!(
            section.name().unwrap(),
            format!("{prefix}/{}", site.symbol()),
            "{name}"
        );
        seen += 1;
    }
    assert!(seen >= Site::ALL.len());
}

#[test]
fn every_map_and_global_user_space_names_is_in_the_object() {
    let obj = Object::parse(OBJECT).unwrap();
    for &(constant, name) in MAPS {
        assert!(obj.maps.contains_key(name), "no map {name} ({constant})");
    }
    // Globals are symbols in the object's data sections, of the size the
    // loader writes (aya refuses another).
    let file = object::File::parse(OBJECT).unwrap();
    for &(constant, name) in GLOBALS {
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no global {name} ({constant})"));
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        let section = section.name().unwrap();
        assert!(
            [".rodata", ".data", ".bss"].contains(&section),
            "{name} is in {section}"
        );
        assert_eq!(sym.size(), global_size(name), "{name}");
    }
}

/// The probes' default argument positions are the site table's: a kernel
/// whose layouts are not set (none are, today, without BTF) reads them
/// where the table says.
#[test]
fn the_objects_default_argument_layouts_are_the_site_tables() {
    let file = object::File::parse(OBJECT).unwrap();
    let name = pintrace_common::GLOBAL_ARG_LAYOUTS;
    let sym = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
    let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
    let data = section.data().unwrap();
    let at = (sym.address() - section.address()) as usize;
    let bytes = &data[at..at + sym.size() as usize];
    let expected: Vec<u8> = pintrace_common::BUILTIN_ARG_LAYOUTS
        .iter()
        .flat_map(|l| l.pos.iter().copied().chain([l.ret_long]))
        .flat_map(u32::to_le_bytes)
        .collect();
    assert_eq!(bytes, expected.as_slice());
}

#[test]
fn the_lists_here_hold_every_name_the_probes_module_uses() {
    // What probes.rs names by constant must be checked above.
    let listed: BTreeSet<&str> = [TRACEPOINTS, MAPS, GLOBALS]
        .iter()
        .flat_map(|l| l.iter().map(|&(c, _)| c))
        .collect();
    let source = include_str!("../probes.rs");
    let used: BTreeSet<&str> = source
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("GLOBAL_") || w.starts_with("PROG_") || w.ends_with("_MAP"))
        .collect();
    assert!(used.len() > 20, "{used:?}");
    let missing: Vec<&&str> = used.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "not checked against the object: {missing:?}"
    );
}

/// The running kernel's verifier passes every kprobe and kretprobe program
/// (loaded, not attached: kprobe programs load where the kernel has BPF
/// events, kprobes or uprobes), with the site table's argument positions
/// and with every position moved: the arguments are read at fixed context
/// offsets whatever the position (a context read at a computed offset is
/// refused). Needs root; the fentry/fexit programs are the guests' to check.
#[test]
fn kprobe_programs_pass_this_kernels_verifier_at_any_position() {
    use aya::{programs::KProbe, EbpfLoader};
    use std::path::Path;
    if !crate::kernel::caps::privileges().is_yes() {
        eprintln!("skipped: loading programs needs root");
        return;
    }
    let events = Path::new("/sys/bus/event_source/devices");
    if !events.join("kprobe").exists() && !events.join("uprobe").exists() {
        eprintln!("skipped: no BPF events (neither kprobe nor uprobe PMU)");
        return;
    }
    let builtin = pintrace_common::BUILTIN_ARG_LAYOUTS;
    let mut moved = builtin;
    for l in moved.iter_mut() {
        for p in l.pos.iter_mut() {
            *p = (*p + 1) % 6;
        }
        l.ret_long ^= 1;
    }
    for layouts in [builtin, moved] {
        let mut ebpf = EbpfLoader::new()
            .override_global(pintrace_common::GLOBAL_ARG_LAYOUTS, &layouts, true)
            .load(OBJECT)
            .expect("loading the object's maps");
        let names: Vec<String> = ebpf
            .programs()
            .map(|(n, _)| n.to_owned())
            .filter(|n| n.starts_with("kprobe_") || n.starts_with("kretprobe_"))
            .collect();
        assert!(names.len() > 20, "{names:?}");
        for n in &names {
            let p: &mut KProbe = ebpf.program_mut(n).unwrap().try_into().unwrap();
            if let Err(e) = p.load() {
                panic!("{n} with {:?}: {e:#?}", layouts[1]);
            }
        }
    }
}
