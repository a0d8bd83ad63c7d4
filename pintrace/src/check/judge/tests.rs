use super::*;
use crate::check::{Dir, Fault};
use pintrace_engine::BufferKind;

fn scn(drive: Drive) -> Scenario {
    Scenario::new(TargetKind::Block, drive, BufferKind::Anon, Dir::Read)
}

fn engine(bs: u64, ios: u64, write: bool, setup: EngineSetup) -> EngineOut {
    let dir = EngineDir {
        ios,
        bytes: ios * bs,
    };
    EngineOut {
        settings: EngineSettings {
            bs,
            iodepth: 4,
            numjobs: 1,
            fixed_buffers: false,
            buffer_offset: 0,
            iovecs: Some(4),
        },
        target: EngineTarget {
            logical_block_size: 512,
            dio_mem_align: 512,
            setup_io: setup,
            fs_type: None,
        },
        total: EngineTotal {
            read: if write { EngineDir::default() } else { dir },
            write: if write { dir } else { EngineDir::default() },
            verify_reads: EngineDir::default(),
        },
        io_errors: vec![],
        jobs: vec![],
        pages_per_io: None,
        sg: None,
        fault: None,
        errors_by_outcome: BTreeMap::new(),
    }
}

const PROBE: EngineSetup = EngineSetup {
    writes: 0,
    write_bytes: 0,
    reads: 1,
    read_bytes: 512,
};

fn seen(kind: Kind, pages: u64, released: u64) -> Observed {
    let mut o = Observed {
        tgid: 42,
        vmstat: Some(PinCounters {
            acquired: pages,
            released,
        }),
        ..Observed::default()
    };
    o.acquired.insert(
        kind,
        Counts {
            calls: 1,
            pages,
            failed_calls: 0,
        },
    );
    if kind != Kind::Get {
        o.released.insert(kind, released);
        o.outstanding.insert(kind, pages - released);
    }
    o
}

#[test]
fn a_block_read_counts_io_and_the_probe() {
    let out = engine(65536, 16, false, PROBE);
    let e = expected(&out, &scn(Drive::Psync));
    assert_eq!(
        e,
        Expected {
            dio_pages: 257,
            setup_pages: 1,
            longterm_pages: 0,
            exact: true,
            copy: false,
            fault: None,
        }
    );
    let ok = judge(&scn(Drive::Psync), &e, &seen(Kind::Pin, 257, 257));
    assert!(ok.iter().all(|c| c.ok), "{ok:?}");
    assert!(ok[0].detail.contains("257 pages as FOLL_PIN"), "{ok:?}");
    // One page short, or one pin held: fails, and says which.
    let bad = judge(&scn(Drive::Psync), &e, &seen(Kind::Pin, 256, 256));
    assert!(!bad[0].ok);
    let bad = judge(&scn(Drive::Psync), &e, &seen(Kind::Pin, 257, 256));
    let b = bad.iter().find(|c| c.name == "balance").unwrap();
    assert!(!b.ok && b.detail.contains("1 held"), "{b:?}");
}

#[test]
fn foll_get_releases_are_not_compared_and_say_so() {
    let out = engine(65536, 16, true, PROBE);
    let e = expected(&out, &scn(Drive::Aio));
    let v = judge(&scn(Drive::Psync), &e, &seen(Kind::Get, 257, 0));
    assert!(v.iter().all(|c| c.ok), "{v:?}");
    let b = v.iter().find(|c| c.name == "balance").unwrap();
    assert!(b.detail.contains("cannot be traced"), "{b:?}");
    assert!(v[0].detail.contains("as FOLL_GET"));
    // Futex keys of thread exits are GUP too, but not I/O.
    let mut o = seen(Kind::Pin, 257, 257);
    o.acquired.insert(
        Kind::Get,
        Counts {
            calls: 2,
            pages: 2,
            failed_calls: 0,
        },
    );
    o.futex_pages = 2;
    o.exec_pages = 3;
    let v = judge(&scn(Drive::Psync), &e, &o);
    assert!(v.iter().all(|c| c.ok), "{v:?}");
    assert_eq!(o.dio_kind(), "FOLL_PIN");
    assert!(
        v[0].detail.contains("2 FOLL_GET page(s) of futex keys"),
        "{v:?}"
    );
    assert!(
        v[0].detail
            .contains("3 FOLL_GET page(s) of exec(2) arguments"),
        "{v:?}"
    );
}

#[test]
fn fixed_buffers_are_longterm_and_layout_counts() {
    let mut out = engine(65536, 16, true, PROBE);
    out.settings.fixed_buffers = true;
    out.target.setup_io = EngineSetup {
        writes: 1,
        write_bytes: 1 << 20,
        reads: 1,
        read_bytes: 4096,
    };
    let e = expected(&out, &scn(Drive::IoUringFixed));
    assert_eq!(
        (e.dio_pages, e.setup_pages, e.longterm_pages),
        (257, 257, 64)
    );
    let mut o = seen(Kind::Pin, 257, 257);
    o.acquired.insert(
        Kind::LongtermPin,
        Counts {
            calls: 4,
            pages: 64,
            failed_calls: 0,
        },
    );
    o.released.insert(Kind::LongtermPin, 64);
    o.vmstat = Some(PinCounters {
        acquired: 321,
        released: 321,
    });
    let v = judge(&scn(Drive::Psync), &e, &o);
    assert!(v.iter().all(|c| c.ok), "{v:?}");
    // A kernel whose registering call is not watched: vmstat
    // shows the long-term pins taken and released.
    let mut hidden = seen(Kind::Get, 257, 0);
    hidden.vmstat = Some(PinCounters {
        acquired: 64,
        released: 64,
    });
    hidden.unknown_releases = 64;
    let v = judge(&scn(Drive::Psync), &e, &hidden);
    assert!(v.iter().all(|c| c.ok), "{v:?}");
    assert!(v[1].detail.contains("not traced"), "{v:?}");
    hidden.vmstat = Some(PinCounters {
        acquired: 64,
        released: 63,
    });
    assert!(!judge(&scn(Drive::Psync), &e, &hidden)[1].ok);
    // vmstat below what was traced for the process is inconsistent.
    o.vmstat = Some(PinCounters {
        acquired: 300,
        released: 321,
    });
    assert!(
        !judge(&scn(Drive::Psync), &e, &o)
            .iter()
            .find(|c| c.name == "vmstat")
            .unwrap()
            .ok
    );
}

#[test]
fn scattered_iovecs_count_the_pages_they_straddle() {
    let out = engine(65536, 1, false, EngineSetup::default());
    let n = pages_per_io(&out, Drive::PvsyncUnaligned);
    // 64 KiB in 4 segments, some starting mid-page: more than 16 pages.
    assert!(n > 16 && n <= 16 + 8, "{n}");
    assert_eq!(pages_per_io(&out, Drive::Psync), 16);
    assert_eq!(spanned(4095, 2), 2);
    assert_eq!(spanned(512, 4096), 2);
    assert_eq!(spanned(0, 4096), 1);
}

#[test]
fn lost_events_and_findings_fail() {
    let out = engine(65536, 16, false, PROBE);
    let e = expected(&out, &scn(Drive::Psync));
    let mut o = seen(Kind::Pin, 257, 257);
    o.lost = 3;
    o.findings = 1;
    let v = judge(&scn(Drive::Psync), &e, &o);
    let failed: Vec<&str> = v.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, ["findings", "lossless"]);
}

#[test]
fn legacy_added_pins_are_balanced_but_not_io_pages() {
    let out = engine(65536, 16, false, PROBE);
    let e = expected(&out, &scn(Drive::Psync));
    // fs/direct-io.c: 257 pages pinned, 256 more pins added and all
    // released.
    let mut o = seen(Kind::Pin, 257 + 256, 257 + 256);
    o.added_pins = 256;
    o.vmstat = Some(PinCounters {
        acquired: 257,
        released: 513,
    });
    let v = judge(&scn(Drive::Psync), &e, &o);
    assert!(v.iter().all(|c| c.ok), "{v:?}");
    assert!(
        v[0].detail
            .contains("256 more pin(s) added by folio_add_pin"),
        "{v:?}"
    );
    // One added pin not released: the balance says so.
    let mut o2 = seen(Kind::Pin, 513, 512);
    o2.added_pins = 256;
    let b = judge(&scn(Drive::Psync), &e, &o2);
    assert!(!b.iter().find(|c| c.name == "balance").unwrap().ok);
}

#[test]
fn sg_copy_expects_no_page_and_the_engine_layout_wins() {
    let mut out = engine(65536, 16, false, PROBE);
    out.sg = Some(EngineSg {
        expect: "copy".into(),
    });
    let e = expected(&out, &scn(Drive::SgCopy));
    assert_eq!((e.dio_pages, e.setup_pages), (1, 1));
    assert!(e.copy);
    let v = judge(&scn(Drive::SgCopy), &e, &seen(Kind::Pin, 1, 1));
    assert!(v.iter().all(|c| c.ok), "{v:?}");
    assert!(v[0].detail.contains("the kernel copies"), "{v:?}");
    // Copying but pinning 256 pages is a failure.
    assert!(!judge(&scn(Drive::SgCopy), &e, &seen(Kind::Pin, 257, 257))[0].ok);
    // Sub-page segments: the engine's own figure of pages per I/O.
    let mut out = engine(4096, 256, false, EngineSetup::default());
    out.pages_per_io = Some(8);
    assert_eq!(expected(&out, &scn(Drive::SgSubpage)).dio_pages, 2048);
}

#[test]
fn a_fault_is_judged_on_the_error_met_and_the_balance() {
    let mut out = engine(65536, 16, false, PROBE);
    let s = scn(Drive::Psync).with_fault(Fault::Hole);
    // The fault never met: fails.
    let e = expected(&out, &s);
    let v = judge(&s, &e, &seen(Kind::Pin, 100, 100));
    let f = v.iter().find(|c| c.name == "fault").unwrap();
    assert!(!f.ok && f.detail.contains("never met"), "{f:?}");
    out.fault = Some(EngineFault {
        kind: "hole".into(),
        errno: Some("EFAULT".into()),
        count: 16,
    });
    let e = expected(&out, &s);
    assert!(!e.exact);
    let v = judge(&s, &e, &seen(Kind::Pin, 129, 129));
    assert!(v.iter().all(|c| c.ok), "{v:?}");
    assert!(v[0].detail.contains("EFAULT x16"), "{v:?}");
    // A pin kept after the error fails the balance.
    let v = judge(&s, &e, &seen(Kind::Pin, 129, 121));
    assert!(!v.iter().find(|c| c.name == "balance").unwrap().ok);
    // Device-made errors come as the engine's io_errors.
    let mut out = engine(65536, 16, false, PROBE);
    out.io_errors = vec![
        serde_json::json!({"errno": 5, "outcome": "EIO"}),
        serde_json::json!({"errno": 5, "outcome": "EIO"}),
    ];
    let s = scn(Drive::Psync).with_fault(Fault::DmError);
    assert_eq!(expected(&out, &s).fault.as_deref(), Some("EIO x2"));
    out.errors_by_outcome.insert("EIO".into(), 16);
    assert_eq!(expected(&out, &s).fault.as_deref(), Some("EIO x16"));
}
