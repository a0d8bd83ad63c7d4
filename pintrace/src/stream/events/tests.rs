use super::*;

fn comm(s: &str) -> Comm {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    Comm(c)
}

fn sample() -> Acquire {
    Acquire {
        site: Site::PinUserPagesFast,
        ts_ns: 42,
        tgid: 100,
        tid: 101,
        start: 0x7f00_0000_0000,
        pages_array: 0xffff_8880_0000_0000,
        ret: 256,
        nr_pages: 256,
        gup_flags: 1 << 19,
        stack_id: 3,
        folio_records: 8,
        comm: comm("pintrace"),
        counted: false,
    }
}

#[test]
fn acquire_round_trips() {
    let a = sample();
    let bytes = encode::acquire(&a);
    assert_eq!(bytes.len(), size_of::<AcquireEvent>());
    assert_eq!(decode(&bytes), Ok(Event::Acquire(a)));
    assert_eq!(a.comm.to_string(), "pintrace");
}

#[test]
fn a_combined_record_is_its_acquire_then_its_batch() {
    let mut a = sample();
    a.ret = 3;
    a.nr_pages = 3;
    a.folio_records = 1;
    let mut folios = [0u64; FOLIOS_PER_RECORD];
    folios[..3].copy_from_slice(&[0x1000, 0x2000 | FOLIO_BELOW_1_PIN, 0x3000]);
    let f = Folios {
        site: a.site,
        ts_ns: a.ts_ns,
        tgid: a.tgid,
        tid: a.tid,
        first: 0,
        count: 3,
        folios,
    };
    let bytes = encode::acquire_with_folios(&a, &f);
    assert_eq!(bytes.len(), size_of::<AcquireWithFolios>());
    let mut got = Vec::new();
    decode_each(&bytes, |e| got.push(*e)).unwrap();
    assert_eq!(got, [Event::Acquire(a), Event::Folios(f)]);
    // A single-event decode refuses it rather than dropping the batch.
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::UnknownTag(TAG_ACQUIRE_FOLIOS))
    );
    // Cut short, or with something else where the batch should be.
    let short = &bytes[..bytes.len() - 1];
    assert!(matches!(
        decode_each(short, |_| {}),
        Err(DecodeError::Truncated {
            tag: TAG_ACQUIRE_FOLIOS,
            ..
        })
    ));
    let mut wrong = bytes.clone();
    let split = size_of::<AcquireEvent>();
    wrong[split..split + 4].copy_from_slice(&TAG_RELEASE.to_ne_bytes());
    let mut n = 0;
    assert!(decode_each(&wrong, |_| n += 1).is_err());
    assert_eq!(n, 0, "nothing is applied from a bad record");
}

#[test]
fn rq_complete_round_trips() {
    let r = RqComplete {
        ts_ns: 7,
        major: 7,
        minor: 0,
        sector: 2048,
        nr_sector: 16,
        error: 0,
    };
    assert_eq!(decode(&encode::rq_complete(&r)), Ok(Event::RqComplete(r)));
}

#[test]
fn matches_the_kernel_struct_layout() {
    // The probe writes AcquireEvent; decoding its raw bytes must agree.
    let raw = AcquireEvent {
        tag: TAG_ACQUIRE,
        site: Site::GetUserPagesFast as u32,
        ts_ns: 1,
        pid_tgid: (5u64 << 32) | 6,
        start: 2,
        pages: 3,
        ret: -14,
        nr_pages: 4,
        gup_flags: 0x4,
        stack_id: -17,
        folio_records: 0,
        comm: comm("dd").0,
    };
    // SAFETY: AcquireEvent is repr(C) plain integers without padding.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&raw as *const AcquireEvent).cast::<u8>(),
            size_of::<AcquireEvent>(),
        )
    };
    let Event::Acquire(a) = decode(bytes).unwrap() else {
        panic!("not an acquire")
    };
    assert_eq!((a.tgid, a.tid, a.ret, a.pages_grabbed()), (5, 6, -14, 0));
    assert_eq!(a.site, Site::GetUserPagesFast);
}

#[test]
fn folios_release_and_exit_round_trip() {
    let mut folios = [0u64; FOLIOS_PER_RECORD];
    folios[0] = 0xffffea0000001000;
    folios[1] = 0xffffea0000001040;
    let f = Folios {
        site: Site::PinUserPagesFast,
        ts_ns: 9,
        tgid: 1,
        tid: 2,
        first: 32,
        count: 2,
        folios,
    };
    let bytes = encode::folios(&f);
    assert_eq!(bytes.len(), size_of::<FolioBatch>());
    assert_eq!(decode(&bytes), Ok(Event::Folios(f)));
    assert_eq!(f.iter().count(), 2);
    let r = Release {
        site: Site::GupPutFolio,
        ts_ns: 10,
        tgid: 1,
        tid: 2,
        folio: 0xffffea0000001000,
        refs: 1,
        gup_flags: 1 << 19,
        refcount: 1025,
        stack_id: 4,
        large: true,
        comm: comm("fio"),
        books: Default::default(),
    };
    let bytes = encode::release(&r);
    assert_eq!(bytes.len(), size_of::<ReleaseEvent>());
    assert_eq!(decode(&bytes), Ok(Event::Release(r)));
    assert_eq!(
        decode(&encode::exit(7, 11)),
        Ok(Event::Exit { tgid: 7, ts_ns: 11 })
    );
}

#[test]
fn bio_round_trips_and_rejects_unknown_phases() {
    let b = Bio {
        phase: BioPhase::FillEnd,
        ts_ns: 12,
        tgid: 3,
        tid: 4,
        bio: 0xffff_8880_1234_5600,
        sector: 2048,
        bytes: 65536,
        major: 7,
        minor: 1,
        opf: 1,
        flags: 1,
        status: 0,
        fill_ns: 0,
    };
    let bytes = encode::bio(&b);
    assert_eq!(bytes.len(), size_of::<BioEvent>());
    assert_eq!(decode(&bytes), Ok(Event::Bio(b)));
    assert!(b.is_write());
    let mut bad = bytes.clone();
    bad[4] = 9;
    assert_eq!(decode(&bad), Err(DecodeError::UnknownBioPhase(9)));
}

/// One record of `tag` against its struct: the encoder writes the
/// struct's bytes, the decoder reads them (also at an odd address) into
/// `event`, and one byte less is too short by the struct's size.
fn check_record(tag: u32, raw: &[u8], size: usize, encoded: Vec<u8>, event: Event) {
    assert_eq!(raw.len(), size, "tag {tag}");
    assert_eq!(encoded, raw, "tag {tag}");
    assert_eq!(decode(raw), Ok(event), "tag {tag}");
    let mut odd = vec![0u8];
    odd.extend_from_slice(raw);
    assert_eq!(decode(&odd[1..]), Ok(event), "tag {tag}, unaligned");
    assert_eq!(
        decode(&raw[..size - 1]),
        Err(DecodeError::Truncated {
            tag,
            len: size - 1,
            need: size
        })
    );
}

#[test]
fn every_record_matches_its_struct() {
    use pintrace_common::IntoBytes;
    let pid_tgid = (0x0102_0304u64 << 32) | 0x0506_0708;
    let (tgid, tid) = (0x0102_0304, 0x0506_0708);

    let raw = AcquireEvent {
        tag: TAG_ACQUIRE,
        site: Site::GetUserPagesRemote as u32,
        ts_ns: 0x1111,
        pid_tgid,
        start: 0x2222,
        pages: 0x3333,
        ret: -4,
        nr_pages: 5,
        gup_flags: 6,
        stack_id: -7,
        folio_records: 8,
        comm: comm("acquirer").0,
    };
    let a = Acquire {
        site: Site::GetUserPagesRemote,
        ts_ns: 0x1111,
        tgid,
        tid,
        start: 0x2222,
        pages_array: 0x3333,
        ret: -4,
        nr_pages: 5,
        gup_flags: 6,
        stack_id: -7,
        folio_records: 8,
        comm: comm("acquirer"),
        counted: false,
    };
    let size = size_of::<AcquireEvent>();
    check_record(
        TAG_ACQUIRE,
        raw.as_bytes(),
        size,
        encode::acquire(&a),
        Event::Acquire(a),
    );

    let mut folios = [0u64; FOLIOS_PER_RECORD];
    for (i, f) in folios.iter_mut().enumerate() {
        *f = 0xffff_ea00_0000_0000 + 0x40 * i as u64;
    }
    let raw_batch = FolioBatch {
        tag: TAG_FOLIOS,
        count: 9,
        ts_ns: 0x1111,
        pid_tgid,
        first: 10,
        site: Site::PinUserPagesUnlocked as u32,
        folios,
    };
    let f = Folios {
        site: Site::PinUserPagesUnlocked,
        ts_ns: 0x1111,
        tgid,
        tid,
        first: 10,
        count: 9,
        folios,
    };
    let size = size_of::<FolioBatch>();
    check_record(
        TAG_FOLIOS,
        raw_batch.as_bytes(),
        size,
        encode::folios(&f),
        Event::Folios(f),
    );

    // The combined record: its two halves as the two records.
    let combined = AcquireWithFolios {
        acquire: AcquireEvent {
            tag: TAG_ACQUIRE_FOLIOS,
            ..raw
        },
        batch: raw_batch,
    };
    assert_eq!(
        combined.as_bytes().len(),
        size_of::<AcquireEvent>() + size_of::<FolioBatch>()
    );
    assert_eq!(encode::acquire_with_folios(&a, &f), combined.as_bytes());
    let mut got = Vec::new();
    decode_each(combined.as_bytes(), |e| got.push(*e)).unwrap();
    assert_eq!(got, [Event::Acquire(a), Event::Folios(f)]);

    let raw = ReleaseEvent {
        tag: TAG_RELEASE,
        site: Site::GupPutFolio as u32,
        ts_ns: 0x1111,
        pid_tgid,
        folio: 0xffff_ea00_0000_1000,
        refs: 11,
        gup_flags: 12,
        refcount: 13,
        stack_id: 14,
        large: 1,
        books: 0,
        comm: comm("releaser").0,
    };
    let r = Release {
        site: Site::GupPutFolio,
        ts_ns: 0x1111,
        tgid,
        tid,
        folio: 0xffff_ea00_0000_1000,
        refs: 11,
        gup_flags: 12,
        refcount: 13,
        stack_id: 14,
        large: true,
        comm: comm("releaser"),
        books: Default::default(),
    };
    let size = size_of::<ReleaseEvent>();
    check_record(
        TAG_RELEASE,
        raw.as_bytes(),
        size,
        encode::release(&r),
        Event::Release(r),
    );

    let raw = ExitEvent {
        tag: TAG_EXIT,
        tgid: 15,
        ts_ns: 0x1111,
    };
    let size = size_of::<ExitEvent>();
    let exit = Event::Exit {
        tgid: 15,
        ts_ns: 0x1111,
    };
    check_record(
        TAG_EXIT,
        raw.as_bytes(),
        size,
        encode::exit(15, 0x1111),
        exit,
    );

    let raw = BioEvent {
        tag: TAG_BIO,
        phase: BioPhase::Release as u32,
        ts_ns: 0x1111,
        pid_tgid,
        bio: 0xffff_8880_0000_2000,
        sector: 16,
        bytes: 17,
        dev: (259 << 20) | 3,
        opf: 18,
        flags: 19,
        status: -20,
        _reserved: 0,
    };
    let b = Bio {
        phase: BioPhase::Release,
        ts_ns: 0x1111,
        tgid,
        tid,
        bio: 0xffff_8880_0000_2000,
        sector: 16,
        bytes: 17,
        major: 259,
        minor: 3,
        opf: 18,
        flags: 19,
        status: -20,
        fill_ns: 0,
    };
    let size = size_of::<BioEvent>();
    check_record(
        TAG_BIO,
        raw.as_bytes(),
        size,
        encode::bio(&b),
        Event::Bio(b),
    );
    // The kernel books' one record of a bio: its completion and its fill.
    let done = pintrace_common::BioDoneEvent {
        bio: BioEvent {
            tag: pintrace_common::TAG_BIO_DONE,
            phase: BioPhase::Done as u32,
            ..raw
        },
        fill_ns: 0x2222,
    };
    assert_eq!(
        decode(done.as_bytes()),
        Ok(Event::Bio(Bio {
            phase: BioPhase::Done,
            fill_ns: 0x2222,
            ..b
        }))
    );
    assert!(decode(&done.as_bytes()[..size]).is_err());

    let raw = RqCompleteEvent {
        tag: TAG_RQ_COMPLETE,
        dev: (8 << 20) | 16,
        ts_ns: 0x1111,
        sector: 21,
        nr_sector: 22,
        error: -23,
    };
    let rq = RqComplete {
        ts_ns: 0x1111,
        major: 8,
        minor: 16,
        sector: 21,
        nr_sector: 22,
        error: -23,
    };
    let size = size_of::<RqCompleteEvent>();
    let encoded = encode::rq_complete(&rq);
    check_record(
        TAG_RQ_COMPLETE,
        raw.as_bytes(),
        size,
        encoded,
        Event::RqComplete(rq),
    );
}

#[test]
fn bad_records_are_errors() {
    assert!(matches!(
        decode(&[1, 0]),
        Err(DecodeError::Truncated { .. })
    ));
    let mut bytes = encode::acquire(&sample());
    bytes.truncate(20);
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::Truncated { tag: 1, .. })
    ));
    assert_eq!(
        decode(&99u32.to_ne_bytes()),
        Err(DecodeError::UnknownTag(99))
    );
    let mut bytes = encode::acquire(&sample());
    bytes[4] = 77;
    assert_eq!(decode(&bytes), Err(DecodeError::UnknownSite(77)));
}
