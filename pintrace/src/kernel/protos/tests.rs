use super::*;
use crate::kernel::layout::VMLINUX_BTF;
use std::path::Path;

fn int(name: &str) -> Param {
    Param {
        name: name.into(),
        shape: Shape::Int { bytes: 8 },
    }
}

fn ptr(name: &str) -> Param {
    Param {
        name: name.into(),
        shape: Shape::Pointer,
    }
}

fn proto(symbol: &str, params: Vec<Param>, ret: Shape) -> Proto {
    Proto {
        symbol: symbol.into(),
        params,
        ret,
    }
}

fn positions(a: &SiteArgs) -> Vec<(&'static str, u32)> {
    a.args.iter().map(|p| (p.name, p.position)).collect()
}

/// The running kernel's BTF, when it has one.
fn this_kernel() -> Option<Btf> {
    let path = Path::new(VMLINUX_BTF);
    if !path.exists() {
        eprintln!("skipped: no {VMLINUX_BTF}");
        return None;
    }
    Some(Btf::from_file(path).unwrap())
}

/// On the machine's own kernel every site with a BTF entry is found by
/// name at the positions its prototype has (the kernel's sources: the
/// `_remote` calls take the mm first, the `_unlocked` ones the pages
/// before the flags; the fast calls return an int, the others a long).
#[test]
fn this_kernels_prototypes_give_the_positions() {
    let Some(btf) = this_kernel() else { return };
    let protos = Protos::from_btf(&btf);
    let gup = |site: Site| {
        let a = protos
            .get(site)
            .unwrap_or_else(|m| panic!("{}: {m}", site.symbol()));
        assert_eq!(a.source, "BTF", "{}: {a:?}", site.symbol());
        let p: Vec<u32> = a.args.iter().map(|p| p.position).collect();
        (p, a.ret.unwrap())
    };
    assert_eq!(gup(Site::PinUserPagesFast), (vec![0, 1, 2, 3], "int"));
    assert_eq!(gup(Site::GetUserPagesFast), (vec![0, 1, 2, 3], "int"));
    assert_eq!(gup(Site::PinUserPages), (vec![0, 1, 2, 3], "long"));
    assert_eq!(gup(Site::GetUserPages), (vec![0, 1, 2, 3], "long"));
    assert_eq!(gup(Site::PinUserPagesRemote), (vec![1, 2, 3, 4], "long"));
    assert_eq!(gup(Site::GetUserPagesRemote), (vec![1, 2, 3, 4], "long"));
    // start, nr_pages, gup_flags, pages: the pages before the flags.
    assert_eq!(gup(Site::PinUserPagesUnlocked), (vec![0, 1, 3, 2], "long"));
    assert_eq!(gup(Site::GetUserPagesUnlocked), (vec![0, 1, 3, 2], "long"));
    let btf_args = |site: Site| {
        let a = protos.get(site).unwrap();
        assert_eq!(a.source, "BTF", "{}: {a:?}", site.symbol());
        assert_eq!(a.ret, None);
        positions(a)
    };
    assert_eq!(
        btf_args(Site::GupPutFolio),
        [("folio", 0), ("refs", 1), ("flags", 2)]
    );
    for site in [Site::BioFill, Site::BioEndio, Site::BioRelease] {
        assert_eq!(btf_args(site), [("bio", 0)], "{}", site.symbol());
    }
    assert_eq!(btf_args(Site::FolioAddPin), [("folio", 0)]);
    // Every BTF prototype agrees with the table here, so the globals are
    // the built-in ones; bio_map_user_iov is static and has no BTF entry
    // on some builds: then it keeps the table's positions, saying why.
    assert_eq!(protos.globals(), BUILTIN_ARG_LAYOUTS);
    let map = protos.get(Site::BioMap).unwrap();
    assert_eq!(positions(map), [("rq", 0)]);
    if map.source == "built-in" {
        assert!(
            map.why.as_ref().unwrap().contains("no BTF entry"),
            "{map:?}"
        );
    }
}

#[test]
fn a_renamed_parameter_is_a_misfit_naming_it() {
    let p = proto(
        "pin_user_pages_fast",
        vec![
            int("start"),
            int("nr_pages"),
            int("gup_flags"),
            ptr("pagev"),
        ],
        Shape::Int { bytes: 4 },
    );
    let m = fit(Site::PinUserPagesFast, &p).unwrap_err();
    assert_eq!(
        m.to_string(),
        "pin_user_pages_fast(start, nr_pages, gup_flags, pagev): no parameter `pages`"
    );
}

#[test]
fn a_moved_parameter_is_found_by_name() {
    // A kernel after 6.12 that put the flags first: new positions, no new
    // table entry.
    let p = proto(
        "pin_user_pages",
        vec![
            int("gup_flags"),
            int("start"),
            int("nr_pages"),
            ptr("pages"),
        ],
        Shape::Int { bytes: 8 },
    );
    let a = fit(Site::PinUserPages, &p).unwrap();
    assert_eq!(
        positions(&a),
        [
            ("start", 1),
            ("nr_pages", 2),
            ("gup_flags", 0),
            ("pages", 3)
        ]
    );
    assert_eq!(a.layout().pos, [1, 2, 0, 3]);
    assert_eq!(a.layout().ret_long, 1);
    assert_eq!(
        a.summary(),
        "start=1 nr_pages=2 gup_flags=0 pages=3, returns long (BTF)"
    );
}

#[test]
fn a_wrong_shape_is_a_misfit() {
    let p = proto(
        "gup_put_folio",
        vec![int("folio"), int("refs"), int("flags")],
        Shape::Void,
    );
    let m = fit(Site::GupPutFolio, &p).unwrap_err();
    assert_eq!(
        m.why,
        "`folio` (argument 1) is an integer of 8 bytes, not a pointer"
    );
    let p = proto(
        "gup_put_folio",
        vec![ptr("folio"), ptr("refs"), int("flags")],
        Shape::Void,
    );
    assert!(fit(Site::GupPutFolio, &p)
        .unwrap_err()
        .why
        .starts_with("`refs` (argument 2) is a pointer, not an integer"));
    // A GUP call must return its page count.
    let p = proto(
        "get_user_pages_fast",
        vec![
            int("start"),
            int("nr_pages"),
            int("gup_flags"),
            ptr("pages"),
        ],
        Shape::Pointer,
    );
    let m = fit(Site::GetUserPagesFast, &p).unwrap_err();
    assert!(
        m.why.starts_with("returns a pointer, not an int or a long"),
        "{m}"
    );
}

#[test]
fn a_third_argument_does_not_disturb_the_first() {
    // bio_iov_iter_get_pages(bio, iter, len_align_mask) from 6.18.
    let p = proto(
        "bio_iov_iter_get_pages",
        vec![ptr("bio"), ptr("iter"), int("len_align_mask")],
        Shape::Int { bytes: 4 },
    );
    let a = fit(Site::BioFill, &p).unwrap();
    assert_eq!(positions(&a), [("bio", 0)]);
    assert_eq!(a.ret, None);
}

#[test]
fn positions_beyond_the_registers_are_refused_for_kprobes() {
    let p = proto(
        "pin_user_pages_remote",
        vec![
            ptr("mm"),
            ptr("a"),
            ptr("b"),
            ptr("c"),
            int("start"),
            int("nr_pages"),
            int("gup_flags"),
            ptr("pages"),
        ],
        Shape::Int { bytes: 8 },
    );
    let a = fit(Site::PinUserPagesRemote, &p).unwrap();
    assert_eq!(
        a.kprobe_misfit("pin_user_pages_remote").unwrap(),
        "pin_user_pages_remote(mm, a, b, c, start, nr_pages, gup_flags, pages): `gup_flags` is \
         argument 7, beyond the 6 a kprobe reads from registers"
    );
    assert_eq!(
        SiteArgs::builtin(Site::PinUserPagesRemote, "x").kprobe_misfit("p"),
        None
    );
}

#[test]
fn resolve_keeps_the_table_where_btf_has_no_entry_and_refuses_an_unreadable_one() {
    let protos = Protos::resolve(|symbol| match symbol {
        "bio_endio" => Err(anyhow!("type id 12345 out of range")),
        "pin_user_pages_fast" => Ok(Some(proto(
            symbol,
            vec![
                ptr("pages"),
                int("start"),
                int("nr_pages"),
                int("gup_flags"),
            ],
            Shape::Int { bytes: 4 },
        ))),
        _ => Ok(None),
    });
    let fast = protos.get(Site::PinUserPagesFast).unwrap();
    assert_eq!(fast.source, "BTF");
    let put = protos.get(Site::GupPutFolio).unwrap();
    assert_eq!(put.source, "built-in");
    assert_eq!(put.why.as_deref(), Some("gup_put_folio has no BTF entry"));
    let endio = protos.get(Site::BioEndio).unwrap_err();
    assert!(endio.to_string().contains("type id 12345"), "{endio}");
    let g = protos.globals();
    assert_eq!(g[Site::PinUserPagesFast as usize].pos, [1, 2, 3, 0]);
    assert_eq!(
        g[Site::GupPutFolio as usize],
        BUILTIN_ARG_LAYOUTS[Site::GupPutFolio as usize]
    );
    // No BTF at all: the table everywhere.
    assert_eq!(
        Protos::builtin("no kernel BTF").globals(),
        BUILTIN_ARG_LAYOUTS
    );
}
