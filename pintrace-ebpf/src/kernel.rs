//! Reads from the kernel: its memory, a traced call's arguments and return
//! value, the clock.

use crate::maps::{global, PAGE_COMPOUND_HEAD_OFF};
use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_func_arg, bpf_get_func_ret},
    },
    programs::{FExitContext, ProbeContext},
    EbpfContext,
};
use core::ptr::{addr_of, read_volatile};

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub(crate) fn read_u64(addr: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn read_u32(addr: u64) -> u32 {
    // SAFETY: as for read_u64.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

/// The folio of a `struct page *`: its head when it is a tail page.
#[inline(always)]
pub(crate) fn folio_of(page: u64) -> u64 {
    if page == 0 {
        return 0;
    }
    let head = read_u64(page + global(&PAGE_COMPOUND_HEAD_OFF));
    if head & 1 != 0 {
        head - 1
    } else {
        page
    }
}

/// The `n`th raw argument of a traced function. `bpf_get_func_arg` reads the
/// trampoline's saved registers without the BTF type check of a context
/// load, which rejects pointer-to-pointer arguments such as `struct page **`.
#[inline(always)]
pub(crate) fn func_arg<C: EbpfContext>(ctx: &C, n: u32) -> u64 {
    let mut v = 0u64;
    // SAFETY: ctx is a tracing context; the helper bounds-checks n.
    unsafe { bpf_get_func_arg(ctx.as_ptr(), n, &mut v) };
    v
}

/// The six register arguments at a kprobe (x86-64: rdi, rsi, rdx, rcx, r8,
/// r9), read once, for [`pick`]. Volatile reads at the fields' fixed
/// offsets: left to itself the compiler folds "the register picked by a
/// position" into one load at a computed offset of the context, which the
/// verifier refuses ("dereference of modified ctx ptr").
#[inline(always)]
pub(crate) fn kprobe_args(ctx: &ProbeContext) -> [u64; 6] {
    let r = ctx.regs;
    // SAFETY: `regs` is the kprobe's context, a `struct pt_regs`; each
    // read is one of its fields.
    unsafe {
        [
            read_volatile(addr_of!((*r).rdi)),
            read_volatile(addr_of!((*r).rsi)),
            read_volatile(addr_of!((*r).rdx)),
            read_volatile(addr_of!((*r).rcx)),
            read_volatile(addr_of!((*r).r8)),
            read_volatile(addr_of!((*r).r9)),
        ]
    }
}

/// Argument `n` of [`kprobe_args`]; 0 beyond the sixth (the plan never
/// attaches a kprobe that needs one). `n` is a load-time constant
/// (`maps::arg_pos`), so the verifier walks one branch.
#[inline(always)]
pub(crate) fn pick(regs: &[u64; 6], n: u32) -> u64 {
    match n {
        0 => regs[0],
        1 => regs[1],
        2 => regs[2],
        3 => regs[3],
        4 => regs[4],
        5 => regs[5],
        _ => 0,
    }
}

/// `*p += n`, atomically across CPUs (BPF's `lock` add, which every BPF
/// instruction set has). core's atomic types offer no read-modify-write on
/// this target, hence the intrinsic.
#[inline(always)]
pub(crate) fn atomic_add(p: *mut i64, n: i64) {
    // SAFETY: `p` points at an aligned i64 in a map value, live for the
    // program's run.
    unsafe {
        core::intrinsics::atomic_xadd::<i64, i64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, n,
        )
    };
}

/// `*p = new` if `*p == old`, atomically across CPUs (BPF_CMPXCHG, of the
/// v3 instruction set the probes are built for: see `build.rs`); true
/// when it was swapped.
#[inline(always)]
pub(crate) fn compare_swap(p: *mut i64, old: i64, new: i64) -> bool {
    use core::intrinsics::AtomicOrdering::SeqCst;
    // SAFETY: as in `atomic_add`.
    unsafe { core::intrinsics::atomic_cxchg::<i64, { SeqCst }, { SeqCst }>(p, old, new).1 }
}

#[inline(always)]
pub(crate) fn func_ret(ctx: &FExitContext) -> u64 {
    let mut v = 0u64;
    // SAFETY: ctx is an fexit context, where the helper is allowed.
    unsafe { bpf_get_func_ret(ctx.as_ptr(), &mut v) };
    v
}
