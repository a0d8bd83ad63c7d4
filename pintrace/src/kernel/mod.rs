//! Kernel facts: what the running kernel offers ([`caps`]), the struct
//! offsets the probes read by ([`layout`]), where each site's arguments
//! are ([`protos`]), the FOLL_* flag values ([`flags`]), symbol lookup
//! ([`symbols`]), source lines for frames ([`lines`], with `--vmlinux`)
//! and the pin counters of
//! /proc/vmstat ([`vmstat`]). Read once at start-up; nothing here attaches.

pub mod caps;
pub mod flags;
pub mod layout;
pub mod lines;
pub mod protos;
pub mod symbols;
pub mod vmstat;
