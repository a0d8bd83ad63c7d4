//! Property tests of the decoders against damaged and arbitrary input, the
//! cheap, always-run counterpart of the cargo-fuzz targets in `fuzz/`:
//! every truncation and byte flip of a valid recording (with its checksums
//! left wrong, and made right so the damage reaches the parsers inside),
//! every truncation of every record kind, and pseudo-random streams through
//! the ledger. Each must give an error or a valid result, never a panic.

use bytes::Bytes;
use pintrace::{
    fuzzing,
    kernel::flags::FollFlags,
    stream::events::{decode_each, encode, DecodeError},
    synth::{demo, folio, Stream, MS},
    trace::record::{encode_header, Entry, Header, Recorder, Recording},
};
use std::path::{Path, PathBuf};

fn header() -> Header {
    Header {
        start_ns: 5_000 * MS,
        start_unix_ms: 1_700_000_000_000,
        flags: FollFlags::FROM_6_3,
        kernel: "6.12.0-synthetic".into(),
        plan: "pin_user_pages_fast=fexit".into(),
    }
}

/// A small but complete recording: records of every kind, a stack, the
/// loss counters, the end marker.
fn small_recording(dir: &Path) -> Vec<u8> {
    let path = dir.join("small.ptrec");
    let f = [folio(1), folio(2), folio(3)];
    let mut s = Stream::new(header().start_ns);
    s.wait(MS).pin(149, "dd", 11, &f).wait(MS).complete(8);
    s.unpin_all(&f[..2]).get(151, "vfio", 12, &[folio(9)]);
    s.wait(MS)
        .unpin(folio(9), 1, 2)
        .unpin(folio(3), 1, 1025)
        .exit(149);
    let mut r = Recorder::create(&path, &header()).unwrap();
    for (ts, rec) in &s.records {
        r.record(*ts, rec).unwrap();
    }
    r.stack(11, vec!["pin_user_pages_fast+0x0".into(), "dio".into()])
        .unwrap();
    let lost = [("ringbuf_full", 3u64)].into_iter().collect();
    r.lost(s.ts, &lost).unwrap();
    r.finish(s.ts + MS).unwrap();
    std::fs::read(&path).unwrap()
}

fn parse(data: &[u8]) -> Result<Recording, pintrace::trace::record::RecordError> {
    Recording::parse(Path::new("t.ptrec"), Bytes::copy_from_slice(data))
}

/// Whatever `data` is, reading it and replaying what it yields through a
/// pipeline returns; when it reads, its entries are a prefix of `whole`'s
/// up to the damage.
fn check_prefix(data: &[u8], whole: &Recording) {
    if let Ok(rec) = parse(data) {
        let n = rec.entries.len();
        assert!(n <= whole.entries.len());
        if rec.header == whole.header {
            assert_eq!(rec.entries[..], whole.entries[..n]);
        }
    }
    fuzzing::recording(data);
}

#[test]
fn every_truncation_of_a_recording_reads_up_to_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_recording(dir.path());
    let whole = parse(&data).unwrap();
    assert!(
        whole.damage.is_none() && whole.entries.len() > 10,
        "{}",
        whole.entries.len()
    );
    let header_len = encode_header(&header()).len();
    for cut in 0..data.len() {
        let r = parse(&data[..cut]);
        if cut < header_len {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("t.ptrec"), "{e}");
            continue;
        }
        let rec = r.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        // Cut at an entry boundary: no damage; inside one: damage there.
        if let Some(d) = &rec.damage {
            assert!(d.what.contains("truncated entry"), "cut at {cut}: {d}");
            assert!(d.offset < cut as u64);
        }
        check_prefix(&data[..cut], &whole);
    }
}

#[test]
fn every_byte_flip_of_a_recording_is_found_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_recording(dir.path());
    let whole = parse(&data).unwrap();
    for at in 0..data.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut d = data.clone();
            d[at] ^= mask;
            match parse(&d) {
                // The header is checked whole: any flip there is an error.
                Err(e) => assert!(e.to_string().contains("t.ptrec"), "{e}"),
                Ok(rec) => {
                    // A flip in an entry is caught by its checksum, and the
                    // entries before it are intact.
                    let d_at = rec.damage.as_ref().expect("a flipped entry is damage");
                    assert!(d_at.offset <= at as u64, "{d_at} (flip at {at})");
                }
            }
            check_prefix(&d, &whole);
        }
    }
}

#[test]
fn damage_behind_right_checksums_reaches_the_parsers_and_is_survived() {
    // Flips with every length and checksum made right again: the header's
    // strings, the stack and loss entries and the records themselves are
    // parsed from damaged bytes.
    let dir = tempfile::tempdir().unwrap();
    let data = small_recording(dir.path());
    let mut parsed_damaged = 0;
    for at in 0..data.len() {
        for mask in [0x01u8, 0x10, 0xff] {
            let mut d = data.clone();
            d[at] ^= mask;
            fuzzing::frame_as_recording(&mut d);
            if parse(&d).is_ok_and(|r| r.damage.is_none()) {
                parsed_damaged += 1;
            }
            fuzzing::recording(&d);
        }
    }
    assert!(
        parsed_damaged > data.len(),
        "the damage reached the parsers"
    );
}

#[test]
fn the_real_capture_survives_cuts_and_flips() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/dio-6.12-1m.ptrec");
    let data = std::fs::read(&path).unwrap();
    let whole = parse(&data).unwrap();
    for at in (0..data.len()).step_by(151) {
        check_prefix(&data[..at], &whole);
        let mut d = data.clone();
        d[at] ^= 0x5a;
        check_prefix(&d, &whole);
        fuzzing::frame_as_recording(&mut d);
        fuzzing::recording(&d);
    }
}

#[test]
fn every_truncation_of_every_record_kind_is_an_error() {
    let s = demo(1_000 * MS, 1);
    let mut kinds = std::collections::BTreeSet::new();
    let mut samples: Vec<Vec<u8>> = Vec::new();
    for (_, r) in &s.records {
        if kinds.insert(u32::from_ne_bytes(r[..4].try_into().unwrap())) {
            samples.push(r.clone());
        }
    }
    samples.push(encode::exit(9, 9));
    // The demo's small calls come as combined records: one of the usual
    // two-record kind too.
    let mut two = demo(1_000 * MS, 1);
    two.records.clear();
    two.combine = false;
    two.pin(7, "dd", 1, &[0x1000]);
    samples.extend(two.records.iter().map(|(_, r)| r.clone()));
    assert!(
        samples.len() >= 7,
        "acquire+folios, acquire, folios, release, completion, bio, exit"
    );
    let decode = |r: &[u8]| decode_each(r, |_| {});
    for full in &samples {
        assert!(decode(full).is_ok());
        for cut in 0..full.len() {
            match decode(&full[..cut]) {
                Err(DecodeError::Truncated { len, need, .. }) => {
                    assert_eq!(len, cut);
                    assert!(need > cut);
                }
                other => panic!("{cut} bytes of {full:?}: {other:?}"),
            }
            fuzzing::one_record(&full[..cut]);
        }
        // Longer records (a newer probe) decode by their known prefix.
        let mut longer = full.clone();
        longer.extend_from_slice(&[0xee; 9]);
        assert!(decode(&longer).is_ok());
    }
}

/// xorshift64*: a fixed sequence, so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_records_and_streams_never_panic_the_ledger() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let n = (rng.next() % 400) as usize;
        let data = rng.bytes(n);
        fuzzing::one_record(&data);
        for flags in [FollFlags::FROM_6_3, FollFlags::UP_TO_6_2] {
            let steps = fuzzing::stream(&data, flags);
            let (p, found) = fuzzing::drive(&steps, flags);
            // Whatever came in, every record was counted, decoded or not.
            let _ = found;
            let records = steps
                .iter()
                .filter(|s| matches!(s, fuzzing::Step::Record(..)))
                .count() as u64;
            assert_eq!(p.ledger.tally.events + p.decode_errors, records);
        }
    }
}

#[test]
fn a_stack_entry_claiming_more_frames_than_it_has_is_damage() {
    // Entries built by hand with right checksums but wrong insides.
    let dir = tempfile::tempdir().unwrap();
    let data = small_recording(dir.path());
    let header_len = encode_header(&header()).len();
    let mut d = data[..header_len].to_vec();
    let mut b = bytes::BytesMut::new();
    pintrace::trace::record::encode(
        &mut b,
        &Entry::Stack {
            id: 1,
            frames: vec!["a".into(), "b".into()],
        },
    );
    // The frame count (after length, kind, offset and the id) says 9.
    b[4 + 1 + 8 + 4] = 9;
    d.extend_from_slice(&b);
    fuzzing::frame_as_recording(&mut d);
    let rec = parse(&d).unwrap();
    let damage = rec.damage.unwrap();
    assert!(damage.what.contains("corrupted stack entry"), "{damage}");
    assert_eq!(damage.offset, header_len as u64);
}
