//! The bio sites: a Direct I/O bio filled from user memory, completed and
//! its pages released, for tying pins to their bios. With `-p`, only the
//! watched processes' bios are followed (their fill runs in their context).

use crate::{
    again, books, filter,
    kernel::{func_arg, func_ret, kprobe_args, now_ns, pick, read_u32, read_u64},
    maps::{
        arg_pos, global, BDEV_DEV_OFF, BIOS, BIO_ARGS, BIO_BDEV_OFF, BIO_FLAGS_OFF, BIO_OPF_OFF,
        BIO_RECORDS, BIO_SECTOR_OFF, BIO_SIZE_OFF, BIO_STATUS_OFF, EVENTS, FILLS, MAPPING,
        REQ_BIOTAIL_OFF,
    },
    ring::{bump, wakeup},
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use pintrace_common::{
    BioDoneEvent, BioEvent, BioPhase, BioSeen, Counter, Site, TAG_BIO, TAG_BIO_DONE,
};

/// The one argument every bio site reads (`bio`, or `bio_map_user_iov`'s
/// `rq`): slot 0 of its row, at the position of its `ArgLayout`.
#[inline(always)]
fn trampoline_arg<C: aya_ebpf::EbpfContext>(ctx: &C, site: Site) -> u64 {
    func_arg(ctx, arg_pos(site, 0))
}

#[inline(always)]
fn kprobe_arg0(ctx: &ProbeContext, site: Site) -> u64 {
    pick(&kprobe_args(ctx), arg_pos(site, 0))
}

/// Whether each step of a bio's life is a record (see
/// `pintrace_common::GLOBAL_BIO_RECORDS`); else only its completion is.
#[inline(always)]
fn records() -> bool {
    global(&BIO_RECORDS) != 0
}

/// One step of a bio's life; the bio's fields are read only at FillEnd
/// (sector and size are final there; the device is set by then).
#[inline(always)]
fn emit_bio(phase: BioPhase, bio: u64, status: i32) {
    emit_bio_at(phase, bio, status, now_ns());
}

/// A fill begins: its record, and with the kernel books the thread's mark
/// ([`FILLS`]) that the pins it takes carry into their books.
#[inline(always)]
fn fill_begin(bio: u64) {
    let ts_ns = now_ns();
    if books::on() && FILLS.insert(bpf_get_current_pid_tgid(), ts_ns, 0).is_err() {
        bump(Counter::EntryArgsFull);
    }
    if records() {
        emit_bio_at(BioPhase::FillBegin, bio, 0, ts_ns);
    }
}

/// A fill returned, its pins taken: its start (0 without the kernel
/// books), forgotten.
#[inline(always)]
fn fill_done() -> u64 {
    if !books::on() {
        return 0;
    }
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let fill_ns = unsafe { FILLS.get(&key) }.copied().unwrap_or(0);
    let _ = FILLS.remove(&key);
    fill_ns
}

/// The bio's sector, size, device and operation.
#[inline(always)]
fn bio_fields(bio: u64) -> (u64, u32, u32, u32) {
    let bdev = read_u64(bio + global(&BIO_BDEV_OFF));
    let dev = if bdev == 0 {
        0
    } else {
        read_u32(bdev + global(&BDEV_DEV_OFF))
    };
    (
        read_u64(bio + global(&BIO_SECTOR_OFF)),
        read_u32(bio + global(&BIO_SIZE_OFF)),
        dev,
        read_u32(bio + global(&BIO_OPF_OFF)),
    )
}

#[inline(always)]
fn emit_bio_at(phase: BioPhase, bio: u64, status: i32, ts_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<BioEvent>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    let (sector, bytes, dev, opf) = if bio != 0 && matches!(phase, BioPhase::FillEnd) {
        bio_fields(bio)
    } else {
        (0, 0, 0, 0)
    };
    let flags = if let BioPhase::Release = phase {
        read_u32(bio + global(&BIO_FLAGS_OFF)) & 0xffff
    } else {
        0
    };
    let status = if let BioPhase::Endio = phase {
        bio_status(bio)
    } else {
        status
    };
    entry.write(BioEvent {
        tag: TAG_BIO,
        phase: phase as u32,
        ts_ns,
        pid_tgid: bpf_get_current_pid_tgid(),
        bio,
        sector,
        bytes,
        dev,
        opf,
        flags,
        status,
        _reserved: 0,
    });
    entry.submit(wakeup());
    bump(Counter::Submitted);
}

#[inline(always)]
fn bio_status(bio: u64) -> i32 {
    (read_u32(bio + global(&BIO_STATUS_OFF)) & 0xff) as i32
}

/// A fill that named its bio returned: the bio is followed. With records,
/// its FillEnd; else its fields are kept for its completion record.
#[inline(always)]
fn bio_fill_end(bio: u64, ret: i32, fill_ns: u64) {
    if records() {
        if BIOS.insert(bio, BioSeen::default(), 0).is_err() {
            bump(Counter::BiosFull);
        }
        emit_bio(BioPhase::FillEnd, bio, ret);
        return;
    }
    let (sector, bytes, dev, opf) = bio_fields(bio);
    let seen = BioSeen {
        fill_ns,
        pid_tgid: bpf_get_current_pid_tgid(),
        sector,
        bytes,
        dev,
        opf,
        done: 0,
    };
    if BIOS.insert(bio, seen, 0).is_err() {
        bump(Counter::BiosFull);
    } else {
        bump(Counter::BiosFilled);
    }
}

/// A followed bio completed, without the per-step records: its one
/// record, once (a split bio completes its parts through it again).
#[inline(always)]
fn bio_done(bio: u64) {
    let Some(seen) = BIOS.get_ptr_mut(bio) else {
        return;
    };
    // SAFETY: the map's value, live for this run; a race between two
    // completions of one bio costs at most a second record, which the
    // ledger takes once.
    let seen = unsafe {
        if (*seen).done != 0 {
            return;
        }
        (*seen).done = 1;
        *seen
    };
    let Some(mut entry) = EVENTS.reserve::<BioDoneEvent>(0) else {
        bump(Counter::RingbufFull);
        return;
    };
    entry.write(BioDoneEvent {
        bio: BioEvent {
            tag: TAG_BIO_DONE,
            phase: BioPhase::Done as u32,
            ts_ns: now_ns(),
            pid_tgid: seen.pid_tgid,
            bio,
            sector: seen.sector,
            bytes: seen.bytes,
            dev: seen.dev,
            opf: seen.opf,
            flags: 0,
            status: bio_status(bio),
            _reserved: 0,
        },
        fill_ns: seen.fill_ns,
    });
    entry.submit(wakeup());
    bump(Counter::Submitted);
}

/// Completion and release are reported for bios seen filled only.
#[inline(always)]
fn bio_seen(bio: u64) -> bool {
    BIOS.get_ptr(bio).is_some()
}

#[fentry(function = "bio_iov_iter_get_pages")]
pub fn fentry_bio_fill(ctx: FEntryContext) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    fill_begin(trampoline_arg(&ctx, Site::BioFill));
    0
}

#[fexit(function = "bio_iov_iter_get_pages")]
pub fn fexit_bio_fill(ctx: FExitContext) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    let fill_ns = fill_done();
    bio_fill_end(
        trampoline_arg(&ctx, Site::BioFill),
        func_ret(&ctx) as i32,
        fill_ns,
    );
    0
}

#[kprobe]
pub fn kprobe_bio_fill(ctx: ProbeContext) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    let bio = kprobe_arg0(&ctx, Site::BioFill);
    if BIO_ARGS.insert(bpf_get_current_pid_tgid(), bio, 0).is_err() {
        bump(Counter::EntryArgsFull);
    }
    fill_begin(bio);
    0
}

#[kretprobe]
pub fn kretprobe_bio_fill(ctx: RetProbeContext) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    let key = bpf_get_current_pid_tgid();
    let fill_ns = fill_done();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(bio) = (unsafe { BIO_ARGS.get(key) }).copied() else {
        bump(Counter::MissingEntry);
        return 0;
    };
    let _ = BIO_ARGS.remove(key);
    let ret: u64 = ctx.ret();
    bio_fill_end(bio, ret as i32, fill_ns);
    0
}

#[inline(always)]
fn bio_map_begin(rq: u64) {
    if MAPPING.insert(bpf_get_current_pid_tgid(), rq, 0).is_err() {
        bump(Counter::EntryArgsFull);
    }
    fill_begin(0);
}

/// The end of `bio_map_user_iov`: on success its bio is the request's
/// last; on failure it is freed already, and the end names none.
#[inline(always)]
fn bio_map_end(rq: u64, ret: i32, fill_ns: u64) {
    let bio = if ret == 0 && rq != 0 {
        read_u64(rq + global(&REQ_BIOTAIL_OFF))
    } else {
        0
    };
    if bio != 0 {
        bio_fill_end(bio, ret, fill_ns);
    } else if records() {
        emit_bio(BioPhase::FillEnd, 0, ret);
    }
}

#[fentry(function = "bio_map_user_iov")]
pub fn fentry_bio_map(ctx: FEntryContext) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    bio_map_begin(trampoline_arg(&ctx, Site::BioMap));
    0
}

#[fexit(function = "bio_map_user_iov")]
pub fn fexit_bio_map(ctx: FExitContext) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    let _ = MAPPING.remove(bpf_get_current_pid_tgid());
    let fill_ns = fill_done();
    bio_map_end(
        trampoline_arg(&ctx, Site::BioMap),
        func_ret(&ctx) as i32,
        fill_ns,
    );
    0
}

#[kprobe]
pub fn kprobe_bio_map(ctx: ProbeContext) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    bio_map_begin(kprobe_arg0(&ctx, Site::BioMap));
    0
}

#[kretprobe]
pub fn kretprobe_bio_map(ctx: RetProbeContext) -> u32 {
    if !filter::current_watched() {
        return 0;
    }
    let key = bpf_get_current_pid_tgid();
    let fill_ns = fill_done();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(rq) = (unsafe { MAPPING.get(key) }).copied() else {
        bump(Counter::MissingEntry);
        return 0;
    };
    let _ = MAPPING.remove(key);
    let ret: u64 = ctx.ret();
    bio_map_end(rq, ret as i32, fill_ns);
    0
}

#[inline(always)]
fn bio_endio(bio: u64) -> u32 {
    if !records() {
        bio_done(bio);
    } else if bio_seen(bio) {
        emit_bio(BioPhase::Endio, bio, 0);
    }
    0
}

#[fentry(function = "bio_endio")]
pub fn fentry_bio_endio(ctx: FEntryContext) -> u32 {
    again::first(Site::BioEndio, || {
        bio_endio(trampoline_arg(&ctx, Site::BioEndio))
    })
}

#[fentry(function = "bio_endio")]
pub fn again_bio_endio(ctx: FEntryContext) -> u32 {
    again::second(Site::BioEndio, || {
        bio_endio(trampoline_arg(&ctx, Site::BioEndio))
    })
}

#[kprobe]
pub fn kprobe_bio_endio(ctx: ProbeContext) -> u32 {
    bio_endio(kprobe_arg0(&ctx, Site::BioEndio))
}

/// A bio seen filled, or one `bio_map_user_iov` releases on its error path
/// before it could be named.
#[inline(always)]
fn bio_release(bio: u64) -> u32 {
    if !records() {
        // Its unpins follow, balanced in the books.
        if BIOS.remove(bio).is_ok() {
            bump(Counter::BiosReleased);
        }
    } else if bio_seen(bio) || MAPPING.get_ptr(bpf_get_current_pid_tgid()).is_some() {
        let _ = BIOS.remove(bio);
        emit_bio(BioPhase::Release, bio, 0);
    }
    0
}

#[fentry(function = "__bio_release_pages")]
pub fn fentry_bio_release(ctx: FEntryContext) -> u32 {
    again::first(Site::BioRelease, || {
        bio_release(trampoline_arg(&ctx, Site::BioRelease))
    })
}

#[fentry(function = "__bio_release_pages")]
pub fn again_bio_release(ctx: FEntryContext) -> u32 {
    again::second(Site::BioRelease, || {
        bio_release(trampoline_arg(&ctx, Site::BioRelease))
    })
}

#[kprobe]
pub fn kprobe_bio_release(ctx: ProbeContext) -> u32 {
    bio_release(kprobe_arg0(&ctx, Site::BioRelease))
}
