//! The release site: `gup_put_folio`, every counted unpin.

use crate::{
    again, books, filter,
    kernel::{func_arg, kprobe_args, now_ns, pick, read_u64},
    maps::{
        arg_pos, global, EVENTS, FOLIO_REFCOUNT_OFF, FOLL_PIN, PAGE_COMPOUND_HEAD_OFF, PAGE_SIZEOF,
    },
    ring::{bump, wakeup},
    stacks::{closed_in_books, recently_released, sampling, stack_id},
};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{fentry, kprobe},
    programs::{tracing::StackIdContext, FEntryContext, ProbeContext},
};
use pintrace_common::{
    Counter, ReleaseEvent, Site, RELEASE_BOOKS_CLOSED, RELEASE_BOOKS_EXACT, STACK_CLOCK_RELEASE,
    TAG_RELEASE,
};

/// `gup_put_folio(struct folio *folio, int refs, unsigned int flags)`.
#[inline(always)]
fn emit_release<C: StackIdContext>(ctx: &C, folio: u64, refs: i32, flags: u32) -> u32 {
    let pin = global(&FOLL_PIN) as u32;
    let is_pin = pin != 0 && flags & pin != 0;
    if !filter::release_watched(folio, refs as i64, is_pin) {
        return 0;
    }
    let refcount = read_u64(folio + global(&FOLIO_REFCOUNT_OFF)) as u32 as i32;
    // A large folio's first tail page has compound_head == folio | 1.
    let tail_head = read_u64(folio + global(&PAGE_SIZEOF) + global(&PAGE_COMPOUND_HEAD_OFF));
    let large = (folio != 0 && tail_head == folio + 1) as u32;
    let wrong = is_pin && large == 0 && (refcount as i64) < refs as i64 * 1024;
    // With the kernel books, an unpin of a folio whose book covers it
    // sends nothing; one of a folio without a book says whether the books
    // closed it lately (and knew all its pins then).
    let mut books_mark = 0;
    if is_pin && books::on() {
        if books::release(folio, refs as i64, wrong) {
            return 0;
        }
        if !wrong {
            books::unpinned_in(bpf_get_current_pid_tgid() as u32);
        }
        books_mark = match closed_in_books(folio) {
            Some(true) => RELEASE_BOOKS_CLOSED | RELEASE_BOOKS_EXACT,
            Some(false) => RELEASE_BOOKS_CLOSED,
            None => 0,
        };
    }
    let Some(mut entry) = EVENTS.reserve::<ReleaseEvent>(0) else {
        bump(Counter::RingbufFull);
        return 0;
    };
    let ts_ns = now_ns();
    let pid_tgid = bpf_get_current_pid_tgid();
    // An unpin the refcount shows to be wrong (fewer pins' worth than it
    // releases, on a small folio) is a certain finding: its stack always.
    // So may be a second unpin of a folio not pinned again since the first
    // (as far as the `RELEASED` slots remember): a double unpin the
    // refcount cannot show (another pin still held) keeps its stack. A
    // folio with several pins at once (large folios shared by concurrent
    // I/O, legacy Direct I/O's added pins) takes stacks more often.
    let again = is_pin && sampling() && recently_released(folio);
    entry.write(ReleaseEvent {
        tag: TAG_RELEASE,
        site: Site::GupPutFolio as u32,
        ts_ns,
        pid_tgid,
        folio,
        refs,
        gup_flags: flags,
        refcount,
        stack_id: stack_id(
            ctx,
            STACK_CLOCK_RELEASE,
            pid_tgid >> 32,
            ts_ns,
            wrong || again,
        ),
        large,
        books: books_mark,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    entry.submit(wakeup());
    bump(Counter::Submitted);
    0
}

/// The slots of `gup_put_folio`'s row: `folio`, `refs`, `flags`.
const FOLIO: usize = 0;
const REFS: usize = 1;
const FLAGS: usize = 2;

/// `gup_put_folio`'s arguments, at the positions of its `ArgLayout`.
#[inline(always)]
fn emit_release_args<C: StackIdContext>(ctx: &C, arg: impl Fn(u32) -> u64) -> u32 {
    let at = |slot| arg(arg_pos(Site::GupPutFolio, slot));
    emit_release(ctx, at(FOLIO), at(REFS) as i32, at(FLAGS) as u32)
}

#[fentry(function = "gup_put_folio")]
pub fn fentry_gup_put_folio(ctx: FEntryContext) -> u32 {
    again::first(Site::GupPutFolio, || {
        emit_release_args(&ctx, |n| func_arg(&ctx, n))
    })
}

#[fentry(function = "gup_put_folio")]
pub fn again_gup_put_folio(ctx: FEntryContext) -> u32 {
    again::second(Site::GupPutFolio, || {
        emit_release_args(&ctx, |n| func_arg(&ctx, n))
    })
}

#[kprobe]
pub fn kprobe_gup_put_folio(ctx: ProbeContext) -> u32 {
    let regs = kprobe_args(&ctx);
    emit_release_args(&ctx, |n| pick(&regs, n))
}
