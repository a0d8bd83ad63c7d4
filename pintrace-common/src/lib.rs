//! Types shared by pintrace's kernel probes and its user-space agent.
//!
//! Every record the probes put in the ring buffer starts with a `u32` tag
//! naming its type. Records are `#[repr(C)]` with fixed-width fields, no
//! `bool` and no padding, so both sides agree on the layout byte for byte;
//! the sizes are pinned by tests below.
#![no_std]

/// Name of the BPF ring buffer carrying every event.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array of [`Counter`] values.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the hash map holding kprobe arguments until the matching kretprobe.
pub const ENTRY_ARGS_MAP: &str = "ENTRY_ARGS";

/// Record tags: the first `u32` of every ring-buffer record.
pub const TAG_ACQUIRE: u32 = 1;
pub const TAG_RQ_COMPLETE: u32 = 2;

/// Where an acquire was seen: the kernel function the probe sits on.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    PinUserPagesFast = 1,
    GetUserPagesFast = 2,
}

impl Site {
    pub const ALL: [Site; 2] = [Site::PinUserPagesFast, Site::GetUserPagesFast];

    pub const fn from_u32(v: u32) -> Option<Site> {
        match v {
            1 => Some(Site::PinUserPagesFast),
            2 => Some(Site::GetUserPagesFast),
            _ => None,
        }
    }

    /// The kernel symbol this site probes.
    pub const fn symbol(self) -> &'static str {
        match self {
            Site::PinUserPagesFast => "pin_user_pages_fast",
            Site::GetUserPagesFast => "get_user_pages_fast",
        }
    }

    /// Names of the programs in the eBPF object that probe this site.
    pub const fn programs(self) -> SitePrograms {
        match self {
            Site::PinUserPagesFast => SitePrograms {
                fexit: "fexit_pin_user_pages_fast",
                kprobe: "kprobe_pin_user_pages_fast",
                kretprobe: "kretprobe_pin_user_pages_fast",
            },
            Site::GetUserPagesFast => SitePrograms {
                fexit: "fexit_get_user_pages_fast",
                kprobe: "kprobe_get_user_pages_fast",
                kretprobe: "kretprobe_get_user_pages_fast",
            },
        }
    }
}

/// The programs able to watch one acquire site: one fexit, or a kprobe and
/// kretprobe pair.
#[derive(Clone, Copy, Debug)]
pub struct SitePrograms {
    pub fexit: &'static str,
    pub kprobe: &'static str,
    pub kretprobe: &'static str,
}

/// Program name of the `block:block_rq_complete` tracepoint handler.
pub const PROG_RQ_COMPLETE: &str = "block_rq_complete";

/// Per-CPU counters kept by the probes, indexes into [`COUNTERS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A record could not be reserved in the ring buffer: the event is lost.
    RingbufFull = 0,
    /// The kprobe could not store its arguments (map full): the acquire is lost.
    EntryArgsFull = 1,
    /// A kretprobe fired without stored arguments (attached mid-call or map
    /// full): the acquire is lost.
    MissingEntry = 2,
    /// Records successfully submitted.
    Submitted = 3,
}

pub const COUNTER_SLOTS: u32 = 4;

impl Counter {
    pub const ALL: [Counter; COUNTER_SLOTS as usize] = [
        Counter::RingbufFull,
        Counter::EntryArgsFull,
        Counter::MissingEntry,
        Counter::Submitted,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingbufFull => "ringbuf_full",
            Counter::EntryArgsFull => "entry_args_full",
            Counter::MissingEntry => "missing_entry",
            Counter::Submitted => "submitted",
        }
    }

    /// Whether a non-zero value means an event the agent never saw.
    pub const fn is_loss(self) -> bool {
        !matches!(self, Counter::Submitted)
    }
}

/// Arguments of an acquire call, kept between kprobe and kretprobe.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EntryArgs {
    pub start: u64,
    pub pages: u64,
    pub ts_ns: u64,
    pub nr_pages: i32,
    pub gup_flags: u32,
}

/// One GUP acquire call, seen at its return.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AcquireEvent {
    pub tag: u32,
    /// A [`Site`] value.
    pub site: u32,
    /// `bpf_ktime_get_ns()` at entry.
    pub ts_ns: u64,
    pub pid_tgid: u64,
    /// User address of the first page asked for.
    pub start: u64,
    /// Kernel address of the caller's `struct page **` array.
    pub pages: u64,
    /// Return value: pages grabbed, or a negative errno.
    pub ret: i64,
    /// Pages asked for.
    pub nr_pages: i32,
    pub gup_flags: u32,
    pub comm: [u8; 16],
}

/// A blk-mq request completion (`block:block_rq_complete`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RqCompleteEvent {
    pub tag: u32,
    /// `dev_t` in the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    pub ts_ns: u64,
    pub sector: u64,
    pub nr_sector: u32,
    pub error: i32,
}

/// Offsets of the `block:block_rq_complete` fields, read from tracefs at
/// start-up and handed to the probe as globals.
pub const GLOBAL_RQ_DEV_OFF: &str = "RQ_DEV_OFF";
pub const GLOBAL_RQ_SECTOR_OFF: &str = "RQ_SECTOR_OFF";
pub const GLOBAL_RQ_NR_SECTOR_OFF: &str = "RQ_NR_SECTOR_OFF";
pub const GLOBAL_RQ_ERROR_OFF: &str = "RQ_ERROR_OFF";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made of integers only, with no padding.
    unsafe impl aya::Pod for super::EntryArgs {}
    unsafe impl aya::Pod for super::AcquireEvent {}
    unsafe impl aya::Pod for super::RqCompleteEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<AcquireEvent>(), 4 + 4 + 8 * 5 + 4 + 4 + 16);
        assert_eq!(size_of::<RqCompleteEvent>(), 4 + 4 + 8 + 8 + 4 + 4);
        assert_eq!(size_of::<EntryArgs>(), 8 * 3 + 4 + 4);
    }

    #[test]
    fn sites_round_trip() {
        for site in Site::ALL {
            assert_eq!(Site::from_u32(site as u32), Some(site));
        }
        assert_eq!(Site::from_u32(0), None);
    }
}
