//! The floor for `cargo xtask bench`: the cheapest probe on the GUP path, a
//! per-CPU counter bumped on every `pin_user_pages_fast` call and nothing
//! else. Built with the same toolchain as the real probes; loaded only by
//! the hidden `pintrace bench-probe`.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{fexit, kprobe, map},
    maps::PerCpuArray,
    programs::{FExitContext, ProbeContext},
};

/// Calls seen, slot 0, per CPU.
#[map]
static BENCH_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn hit() -> u32 {
    if let Some(slot) = BENCH_HITS.get_ptr_mut(0) {
        // SAFETY: the slot is this CPU's own copy.
        unsafe { *slot += 1 };
    }
    0
}

#[kprobe]
pub fn bench_kprobe(_ctx: ProbeContext) -> u32 {
    hit()
}

#[fexit(function = "pin_user_pages_fast")]
pub fn bench_fexit(_ctx: FExitContext) -> u32 {
    hit()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
