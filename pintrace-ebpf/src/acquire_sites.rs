//! The acquire sites' programs: an fexit, a kprobe and a kretprobe for
//! each GUP entry point, made from its row of `pintrace_common::site_table!`
//! (whose arguments are read where the site's `ArgLayout` says), and
//! `folio_add_pin`'s extra pin. The work is in `acquire`'s `acquire_fexit`,
//! `park_args`, `finish_kretprobe` and `emit_acquire`.

use crate::{
    acquire::{acquire_fexit, finish_kretprobe, park_args},
    books::{self, Booker},
    filter,
    kernel::{func_arg, kprobe_args, now_ns, pick, read_u64},
    maps::{arg_pos, global, EVENTS, FOLIO_REFCOUNT_OFF},
    ring::{bump, wakeup},
    stacks::stack_id,
};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{fexit, kprobe, kretprobe},
    programs::{tracing::StackIdContext, FExitContext, ProbeContext, RetProbeContext},
};
use pintrace_common::{
    AcquireEvent, AcquireWithFolios, Counter, Site, TallyKey, FOLIOS_PER_RECORD, FOLIO_BELOW_1_PIN,
    FOLIO_BELOW_2_PINS, STACK_CLOCK_ACQUIRE, TAG_ACQUIRE_FOLIOS, TAG_ACQUIRE_FOLIOS_COUNTED,
    TAG_FOLIOS,
};

/// The programs of every row of `site_table!` with a `gup` argument layout:
/// its fexit program reads the arguments and the return value at once, its
/// kprobe parks the arguments for its kretprobe. Rows without one (the
/// release and bio sites, `folio_add_pin`) get nothing here: their
/// programs are written out, under the names their rows give.
macro_rules! gup_programs {
    (@site [] $($row:tt)*) => {};
    (@site
        [$ret:ident]
        $site:ident $symbol:literal [$fexit:ident] $kprobe:ident [$kretprobe:ident]
    ) => {
        #[fexit(function = $symbol)]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            acquire_fexit(&ctx, Site::$site)
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            park_args(&ctx, Site::$site)
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            finish_kretprobe(&ctx, Site::$site)
        }
    };
    ($(
        $(#[$doc:meta])*
        $site:ident = $value:literal {
            symbol: $symbol:literal,
            name: $name:literal,
            role: $role:ident,
            args: { $($arg:ident: $shape:ident @ $pos:literal),* $(,)? },
            $(gup: $ret:ident,)?
            $(fentry: $fentry:ident,)?
            $(fexit: $fexit:ident,)?
            $(again: $again:ident,)?
            kprobe: $kprobe:ident,
            $(kretprobe: $kretprobe:ident,)?
        }
    )*) => {
        $(gup_programs!(@site
            [$($ret)?]
            $site $symbol [$($fexit)?] $kprobe [$($kretprobe)?]
        );)*
    };
}

pintrace_common::site_table!(gup_programs);

/// `folio_add_pin(struct folio *folio)`: one more pin on a folio already
/// pinned (legacy fs/direct-io.c, 6.5 on), as an acquire of one page with
/// its batch. `after`: the refcount read already holds the new pin (fexit);
/// a kprobe reads it before the add, so the pin's bias is added for the
/// evidence bits (user space ignores them for large folios, where a pin
/// adds 1).
#[inline(always)]
fn emit_add_pin<C: StackIdContext>(ctx: &C, folio: u64, after: bool) -> u32 {
    if folio == 0 || !filter::current_watched() {
        return 0;
    }
    if filter::active() {
        filter::pinned(folio, 1);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let ts_ns = now_ns();
    let stack_id = stack_id(
        ctx,
        STACK_CLOCK_ACQUIRE,
        pid_tgid >> 32 << 32 | Site::FolioAddPin as u64,
        ts_ns,
        false,
    );
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let mut rc = read_u64(folio + global(&FOLIO_REFCOUNT_OFF)) as u32 as u64;
    if !after {
        rc += 1024;
    }
    // With the kernel books: counted and booked like any pin, a record
    // only when the folio's book cannot take it.
    let mut tag = TAG_ACQUIRE_FOLIOS;
    if books::on() {
        let who = Booker {
            ts_ns,
            tgid: (pid_tgid >> 32) as u32,
            stack_id,
            site: Site::FolioAddPin as u16,
            flags: 0,
            _pad: 0,
            comm,
            // Legacy Direct I/O fills no bio from an iterator: no fill.
            fill_ns: 0,
        };
        let key = TallyKey {
            tgid: who.tgid,
            stack_id,
            site: who.site,
            flags: 0,
            _reserved: 0,
        };
        if books::count_call(&key, &comm, 1) {
            if books::book(folio, rc, &who) {
                return 0;
            }
            tag = TAG_ACQUIRE_FOLIOS_COUNTED;
        }
    }
    let Some(mut rec) = EVENTS.reserve::<AcquireWithFolios>(0) else {
        bump(Counter::RingbufFull);
        return 0;
    };
    let below1 = (rc.wrapping_sub(1024) >> 63) & 1;
    let below2 = (rc.wrapping_sub(2048) >> 63) & 1;
    let out = rec.as_mut_ptr();
    // SAFETY: `out` is this reserved record; every field is written.
    unsafe {
        (*out).acquire = AcquireEvent {
            tag,
            site: Site::FolioAddPin as u32,
            ts_ns,
            pid_tgid,
            start: 0,
            pages: 0,
            ret: 1,
            nr_pages: 1,
            gup_flags: 0,
            stack_id,
            folio_records: 1,
            comm,
        };
        let b = &mut (*out).batch;
        b.folios = [0; FOLIOS_PER_RECORD];
        b.folios[0] = folio | (below1 * FOLIO_BELOW_1_PIN) | (below2 * FOLIO_BELOW_2_PINS);
        b.tag = TAG_FOLIOS;
        b.count = 1;
        b.ts_ns = ts_ns;
        b.pid_tgid = pid_tgid;
        b.first = 0;
        b.site = Site::FolioAddPin as u32;
    }
    rec.submit(wakeup());
    bump(Counter::Submitted);
    0
}

/// `folio_add_pin`'s `folio` (slot 0 of its row).
const FOLIO: usize = 0;

#[fexit(function = "folio_add_pin")]
pub fn fexit_folio_add_pin(ctx: FExitContext) -> u32 {
    let folio = func_arg(&ctx, arg_pos(Site::FolioAddPin, FOLIO));
    emit_add_pin(&ctx, folio, true)
}

#[kprobe]
pub fn kprobe_folio_add_pin(ctx: ProbeContext) -> u32 {
    let folio = pick(&kprobe_args(&ctx), arg_pos(Site::FolioAddPin, FOLIO));
    emit_add_pin(&ctx, folio, false)
}
