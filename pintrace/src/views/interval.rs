//! `run --interval`: what changed since the last report, one row per kind
//! of reference (the columns of the summary's table), as `perf stat -I`
//! prints counters. Pure: made from two
//! summaries (the last report's and now's).

use super::summary::Summary;
use crate::ledger::Kind;
use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write as _};

/// One interval's figures (the JSON `interval` object).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Interval {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// 1 for the first interval.
    pub index: u64,
    /// Seconds since tracing began, at the end of this interval.
    pub t_s: f64,
    /// Seconds this interval covers.
    pub interval_s: f64,
    pub by_kind: BTreeMap<Kind, IntervalCounts>,
    /// Events the kernel side could not deliver in this interval, by
    /// cause (only causes with a loss).
    pub lost: BTreeMap<&'static str, u64>,
}

/// A kind's figures: changes over the interval, and what is held at its end.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct IntervalCounts {
    /// Calls that grabbed at least one page.
    pub calls: u64,
    pub pages: u64,
    /// References released (matched to their acquire).
    pub released: u64,
    /// References reported leaked, and released with the wrong call.
    pub leaks: u64,
    pub mismatches: u64,
    /// References held at the end of the interval.
    pub outstanding: u64,
}

impl Interval {
    /// The interval ending at `now`, since `prev` (the last report; `None`
    /// for the first, which counts from the start).
    pub fn between(index: u64, prev: Option<&Summary>, now: &Summary) -> Interval {
        let get = |s: Option<&Summary>, f: &dyn Fn(&Summary) -> u64| s.map_or(0, f);
        let n = |m: &BTreeMap<Kind, u64>, k: Kind| m.get(&k).copied().unwrap_or(0);
        let by_kind = Kind::ALL
            .iter()
            .map(|&k| {
                let calls = |s: &Summary| s.by_kind.get(&k).map_or(0, |c| c.calls);
                let pages = |s: &Summary| s.by_kind.get(&k).map_or(0, |c| c.pages);
                let released = |s: &Summary| n(&s.released, k);
                let leaks = |s: &Summary| n(&s.leaks, k);
                let mismatches = |s: &Summary| n(&s.mismatches, k);
                let delta = |f: &dyn Fn(&Summary) -> u64| f(now).saturating_sub(get(prev, f));
                (
                    k,
                    IntervalCounts {
                        calls: delta(&calls),
                        pages: delta(&pages),
                        released: delta(&released),
                        leaks: delta(&leaks),
                        mismatches: delta(&mismatches),
                        outstanding: n(&now.outstanding, k),
                    },
                )
            })
            .collect();
        let lost = now
            .lost
            .iter()
            .map(|(&cause, &v)| {
                let before = prev.and_then(|p| p.lost.get(cause)).copied().unwrap_or(0);
                (cause, v.saturating_sub(before))
            })
            .filter(|&(_, v)| v > 0)
            .collect();
        Interval {
            kind: "interval",
            index,
            t_s: now.duration_s,
            interval_s: now.duration_s - prev.map_or(0.0, |p| p.duration_s),
            by_kind,
            lost,
        }
    }
}

/// The column header, printed once before the first interval.
pub fn header() -> String {
    format!(
        "#{:>11} {:<22} {:>8} {:>10} {:>10} {:>6} {:>10} {:>11}\n",
        "time", "acquired as", "calls", "pages", "released", "leaks", "mismatches", "outstanding"
    )
}

/// An interval's rows: one per kind, then a line for any loss.
pub fn render(i: &Interval) -> String {
    let mut o = String::new();
    for (kind, c) in &i.by_kind {
        let _ = writeln!(
            o,
            "{:>12.3} {:<22} {:>8} {:>10} {:>10} {:>6} {:>10} {:>11}",
            i.t_s,
            kind.label(),
            c.calls,
            c.pages,
            c.released,
            c.leaks,
            c.mismatches,
            c.outstanding
        );
    }
    if !i.lost.is_empty() {
        let causes: Vec<String> = i.lost.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let total: u64 = i.lost.values().sum();
        let _ = writeln!(
            o,
            "{:>12.3} lost {total} events ({})",
            i.t_s,
            causes.join(", ")
        );
    }
    o
}

/// When intervals end, on the source's clock (the recorded one in a
/// replay): every `every_ns` from `start_ns`, up to `count` of them.
#[derive(Clone, Debug)]
pub struct IntervalClock {
    every_ns: u64,
    next_ns: u64,
    count: Option<u64>,
    /// Intervals reported so far.
    pub done: u64,
}

impl IntervalClock {
    pub fn new(every: std::time::Duration, start_ns: u64, count: Option<u64>) -> IntervalClock {
        let every_ns = (every.as_nanos() as u64).max(1);
        IntervalClock {
            every_ns,
            next_ns: start_ns.saturating_add(every_ns),
            count,
            done: 0,
        }
    }

    /// Whether an interval ended by `now_ns`: counts it and moves on to the
    /// next boundary (several calls catch up after a gap).
    pub fn due(&mut self, now_ns: u64) -> bool {
        if self.finished() || now_ns < self.next_ns {
            return false;
        }
        self.next_ns = self.next_ns.saturating_add(self.every_ns);
        self.done += 1;
        true
    }

    /// All `--count` intervals are reported.
    pub fn finished(&self) -> bool {
        self.count.is_some_and(|c| self.done >= c)
    }

    /// The next boundary, on the source's clock.
    pub fn next_ns(&self) -> u64 {
        self.next_ns
    }

    /// How long until the next boundary from `now_ns`.
    pub fn until_next(&self, now_ns: u64) -> std::time::Duration {
        std::time::Duration::from_nanos(self.next_ns.saturating_sub(now_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kernel::flags::FollFlags, ledger::Tally};

    fn summary(t_s: f64, pin_pages: u64, released: u64, outstanding: u64) -> Summary {
        let t = Tally::new(FollFlags::FROM_6_3);
        let mut s = Summary::new(&t, "6.12".into(), "p".into(), t_s, BTreeMap::new(), 0);
        let c = s.by_kind.entry(Kind::Pin).or_default();
        c.calls = pin_pages;
        c.pages = pin_pages;
        s.released.insert(Kind::Pin, released);
        s.outstanding.insert(Kind::Pin, outstanding);
        s
    }

    #[test]
    fn an_interval_is_the_change_since_the_last_one() {
        let first = summary(1.0, 10, 8, 2);
        let i1 = Interval::between(1, None, &first);
        assert_eq!(i1.by_kind[&Kind::Pin].pages, 10);
        assert_eq!(i1.interval_s, 1.0);
        let mut second = summary(2.0, 25, 24, 1);
        second.leaks.insert(Kind::Pin, 1);
        second.lost.insert("ringbuf_full", 3);
        let i2 = Interval::between(2, Some(&first), &second);
        let pin = i2.by_kind[&Kind::Pin];
        assert_eq!(
            (
                pin.calls,
                pin.pages,
                pin.released,
                pin.leaks,
                pin.outstanding
            ),
            (15, 15, 16, 1, 1),
            "deltas, and what is held at the end"
        );
        assert_eq!(i2.by_kind[&Kind::Get], IntervalCounts::default());
        assert_eq!(i2.lost.get("ringbuf_full"), Some(&3));
        assert!((i2.interval_s - 1.0).abs() < 1e-9);
        let text = render(&i2);
        assert_eq!(text.lines().count(), 4, "three kinds and the loss: {text}");
        assert!(text.contains("lost 3 events (ringbuf_full 3)"), "{text}");
        let json = serde_json::to_value(&i2).unwrap();
        assert_eq!(json["type"], "interval");
        assert_eq!(json["index"], 2);
        assert_eq!(json["by_kind"]["pin"]["released"], 16);
        // A quiet interval reports no loss.
        let i3 = Interval::between(3, Some(&second), &second);
        assert!(i3.lost.is_empty() && !render(&i3).contains("lost"));
    }

    #[test]
    fn the_header_names_the_row_columns() {
        let h = header();
        let row = render(&Interval::between(1, None, &summary(1.0, 1, 1, 0)));
        let first = row.lines().next().unwrap();
        assert_eq!(
            h.split_whitespace().count() - 2,
            first.split_whitespace().count(),
            "the header has `#` and `acquired as` (two words): {h}{first}"
        );
    }

    #[test]
    fn the_clock_counts_boundaries_and_stops_at_count() {
        let s = 1_000_000_000;
        let mut c = IntervalClock::new(std::time::Duration::from_secs(1), 5 * s, Some(2));
        assert!(!c.due(5 * s + s / 2));
        assert_eq!(c.until_next(5 * s + s / 2).as_millis(), 500);
        assert!(c.due(6 * s));
        assert!(!c.due(6 * s + 1));
        // A gap catches up one boundary per call.
        assert!(c.due(9 * s));
        assert!(c.finished());
        assert!(!c.due(20 * s), "no more than --count");
        let mut open = IntervalClock::new(std::time::Duration::from_secs(1), 0, None);
        assert!(open.due(s) && open.due(3 * s) && open.due(3 * s) && !open.due(3 * s));
        assert!(!open.finished());
    }
}
