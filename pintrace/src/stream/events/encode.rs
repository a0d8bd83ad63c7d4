//! Encodes records exactly as the probes write them (for tests, replay and
//! benchmarks; built with the `testing` feature).

use super::*;
use pintrace_common::IntoBytes;

fn pid_tgid(tgid: u32, tid: u32) -> u64 {
    ((tgid as u64) << 32) | tid as u64
}

/// The kernel's internal dev_t: 12 bits of major, 20 of minor.
fn dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

fn acquire_event(a: &Acquire, tag: u32) -> AcquireEvent {
    AcquireEvent {
        tag,
        site: a.site as u32,
        ts_ns: a.ts_ns,
        pid_tgid: pid_tgid(a.tgid, a.tid),
        start: a.start,
        pages: a.pages_array,
        ret: a.ret,
        nr_pages: a.nr_pages,
        gup_flags: a.gup_flags,
        stack_id: a.stack_id,
        folio_records: a.folio_records,
        comm: a.comm.0,
    }
}

fn folio_batch(f: &Folios) -> FolioBatch {
    FolioBatch {
        tag: TAG_FOLIOS,
        count: f.count,
        ts_ns: f.ts_ns,
        pid_tgid: pid_tgid(f.tgid, f.tid),
        first: f.first,
        site: f.site as u32,
        folios: f.folios,
    }
}

pub fn acquire(a: &Acquire) -> Vec<u8> {
    acquire_event(a, TAG_ACQUIRE).as_bytes().to_vec()
}

pub fn folios(f: &Folios) -> Vec<u8> {
    folio_batch(f).as_bytes().to_vec()
}

/// An acquire and its one folio batch in one record, as the probe
/// writes a call of at most 32 pages.
pub fn acquire_with_folios(a: &Acquire, f: &Folios) -> Vec<u8> {
    AcquireWithFolios {
        acquire: acquire_event(a, TAG_ACQUIRE_FOLIOS),
        batch: folio_batch(f),
    }
    .as_bytes()
    .to_vec()
}

pub fn release(r: &Release) -> Vec<u8> {
    ReleaseEvent {
        tag: TAG_RELEASE,
        site: r.site as u32,
        ts_ns: r.ts_ns,
        pid_tgid: pid_tgid(r.tgid, r.tid),
        folio: r.folio,
        refs: r.refs,
        gup_flags: r.gup_flags,
        refcount: r.refcount,
        stack_id: r.stack_id,
        large: r.large as u32,
        books: r.books.bits(),
        comm: r.comm.0,
    }
    .as_bytes()
    .to_vec()
}

pub fn exit(tgid: u32, ts_ns: u64) -> Vec<u8> {
    ExitEvent {
        tag: TAG_EXIT,
        tgid,
        ts_ns,
    }
    .as_bytes()
    .to_vec()
}

pub fn bio(b: &Bio) -> Vec<u8> {
    BioEvent {
        tag: TAG_BIO,
        phase: b.phase as u32,
        ts_ns: b.ts_ns,
        pid_tgid: pid_tgid(b.tgid, b.tid),
        bio: b.bio,
        sector: b.sector,
        bytes: b.bytes,
        dev: dev(b.major, b.minor),
        opf: b.opf,
        flags: b.flags,
        status: b.status,
        _reserved: 0,
    }
    .as_bytes()
    .to_vec()
}

pub fn rq_complete(r: &RqComplete) -> Vec<u8> {
    RqCompleteEvent {
        tag: TAG_RQ_COMPLETE,
        dev: dev(r.major, r.minor),
        ts_ns: r.ts_ns,
        sector: r.sector,
        nr_sector: r.nr_sector,
        error: r.error,
    }
    .as_bytes()
    .to_vec()
}
