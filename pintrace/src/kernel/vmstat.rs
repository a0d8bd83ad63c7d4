//! The kernel's own pin counters in /proc/vmstat, the cross-check for every
//! traced total. They are per-CPU batched: writing /proc/sys/vm/stat_refresh
//! folds them before a read (root only; without it the figures may lag).

use serde::Serialize;
use std::fs;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PinCounters {
    pub acquired: u64,
    pub released: u64,
}

impl PinCounters {
    /// Counters of `later` minus `self` (saturating: the counters only grow).
    pub fn delta_to(&self, later: &PinCounters) -> PinCounters {
        PinCounters {
            acquired: later.acquired.saturating_sub(self.acquired),
            released: later.released.saturating_sub(self.released),
        }
    }
}

/// Parses `nr_foll_pin_acquired` / `nr_foll_pin_released` from vmstat text.
pub fn parse(vmstat: &str) -> Option<PinCounters> {
    let mut acquired = None;
    let mut released = None;
    for line in vmstat.lines() {
        let mut it = line.split_ascii_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("nr_foll_pin_acquired"), Some(v)) => acquired = Some(v),
            (Some("nr_foll_pin_released"), Some(v)) => released = Some(v),
            _ => {}
        }
    }
    Some(PinCounters {
        acquired: acquired?,
        released: released?,
    })
}

/// Folds the per-CPU deltas (when allowed) and reads the counters.
pub fn read() -> Option<PinCounters> {
    let _ = fs::write("/proc/sys/vm/stat_refresh", "1");
    parse(&fs::read_to_string("/proc/vmstat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_subtracts() {
        let a =
            parse("nr_free_pages 5\nnr_foll_pin_acquired 10\nnr_foll_pin_released 4\n").unwrap();
        let b = parse("nr_foll_pin_released 2052\nnr_foll_pin_acquired 2058\n").unwrap();
        assert_eq!(
            a.delta_to(&b),
            PinCounters {
                acquired: 2048,
                released: 2048
            }
        );
        assert_eq!(parse("nr_free_pages 5\n"), None);
    }
}
