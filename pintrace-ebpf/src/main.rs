//! pintrace's kernel probes.
//!
//! Each site has two ways in: a BTF trampoline program (`fexit` for the
//! acquire calls, whose return value and `pages` array are needed; `fentry`
//! for `gup_put_folio`) and a `kprobe` (with a `kretprobe` for acquires, the
//! arguments parked in [`maps::ENTRY_ARGS`] by thread until the return). User
//! space attaches exactly one of the two per site, so no call is seen twice.
//! The sites an interrupt can enter again have a second fentry program
//! beside the first, which sends a record only for a call the kernel
//! skipped the first for ([`again`]).
//! The sites, their programs' names and the arguments each reads (by
//! parameter name, with a built-in position) are
//! `pintrace_common::site_table!`; user space sets where the arguments are
//! on the running kernel, from its BTF, in [`maps::ARG_LAYOUTS`].
//!
//! The hot path does no string work and no logging: records are reserved in
//! the ring buffer, filled and submitted. Every record that cannot be
//! delivered is counted in [`maps::COUNTERS`]; aya-log speaks only on rare
//! paths.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod acquire;
mod acquire_sites;
mod again;
mod bio;
mod books;
mod filter;
mod kernel;
mod maps;
mod release;
mod ring;
mod stacks;
mod tracepoints;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
