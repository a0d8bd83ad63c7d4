//! The live model: aggregations over the event stream, the ledger's released
//! pins and its findings, for every view that watches a run (the dashboard,
//! the JSON summary, the Prometheus endpoint). Pure: it is fed events and the
//! time, and never reads a clock or the kernel.
//!
//! Time is the kernel's (CLOCK_MONOTONIC, the clock of the events), so a
//! replayed capture draws the same charts as the live run it came from.

use crate::{
    kernel::flags::FollFlags,
    ledger::{Finding, Kind, Ledger},
    stream::events::{Comm, Event},
};
use hdrhistogram::Histogram;
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

pub mod stacks;

const SEC: u64 = 1_000_000_000;
/// Seconds of rates and outstanding samples kept for the charts.
pub const HISTORY_S: usize = 600;
/// The window of a holder's pin rate, in seconds.
pub const RATE_WINDOW_S: u64 = 10;
/// Findings kept for the findings pane (the count goes on).
pub const FINDINGS_KEPT: usize = 1000;

/// Index of a kind in the `[u64; 3]` arrays: pin, long-term pin, get.
pub fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Pin => 0,
        Kind::LongtermPin => 1,
        Kind::Get => 2,
    }
}

/// References the ledger holds now, by [`slot`], in one pass.
pub fn held_by_kind(ledger: &Ledger) -> [u64; 3] {
    let mut out = [0u64; 3];
    for h in ledger.holders() {
        out[slot(h.kind)] += h.refs;
    }
    out
}

/// Pages acquired and references released in one second, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Pages pinned with FOLL_PIN (long-term pins included).
    pub pin: u64,
    /// Pages taken with FOLL_GET.
    pub get: u64,
    /// FOLL_PIN references released (gup_put_folio).
    pub unpin: u64,
    /// FOLL_GET references released through gup_put_folio (GUP's own error
    /// paths; put_page is invisible).
    pub unget: u64,
}

/// Pages acquired by one holder (process and stack), counted over time.
#[derive(Clone, Debug, Default)]
struct HolderStats {
    comm: Comm,
    total_pages: u64,
    /// (second, pages) over the last [`RATE_WINDOW_S`] seconds.
    recent: VecDeque<(u64, u64)>,
}

impl HolderStats {
    fn add(&mut self, sec: u64, pages: u64) {
        self.total_pages += pages;
        match self.recent.back_mut() {
            Some((s, p)) if *s == sec => *p += pages,
            _ => self.recent.push_back((sec, pages)),
        }
    }

    fn rate(&self, now_sec: u64) -> f64 {
        let from = now_sec.saturating_sub(RATE_WINDOW_S);
        let pages: u64 = self
            .recent
            .iter()
            .filter(|(s, _)| *s > from && *s <= now_sec)
            .map(|(_, p)| p)
            .sum();
        pages as f64 / RATE_WINDOW_S as f64
    }

    fn forget_before(&mut self, now_sec: u64) {
        let from = now_sec.saturating_sub(RATE_WINDOW_S);
        while self.recent.front().is_some_and(|(s, _)| *s <= from) {
            self.recent.pop_front();
        }
    }
}

/// References outstanding for one holder, and its oldest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Held {
    /// Outstanding references by kind: [pin, long-term pin, get].
    pub outstanding: [u64; 3],
    /// Age of the oldest outstanding reference, in ns.
    pub oldest_age_ns: Option<u64>,
    /// Pages acquired per second over the last [`RATE_WINDOW_S`] seconds.
    pub rate: f64,
    /// Pages acquired during the run.
    pub total_pages: u64,
}

impl Held {
    fn merge(&mut self, o: &Held) {
        for i in 0..3 {
            self.outstanding[i] += o.outstanding[i];
        }
        self.oldest_age_ns = self.oldest_age_ns.max(o.oldest_age_ns);
        self.rate += o.rate;
        self.total_pages += o.total_pages;
    }

    pub fn outstanding_total(&self) -> u64 {
        self.outstanding.iter().sum()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StackRow {
    pub stack_id: i32,
    #[serde(flatten)]
    pub held: Held,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessRow {
    pub tgid: u32,
    pub comm: Comm,
    #[serde(flatten)]
    pub held: Held,
    pub stacks: Vec<StackRow>,
}

/// Pin lifetimes (acquire to release) as a person reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LifetimeSummary {
    /// References released with a known acquire time.
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// For the Prometheus histogram: releases per bucket of
    /// [`LIFETIME_BUCKETS_NS`] (up to and including its bound, above the
    /// one before), and the sum of the lifetimes in seconds (from the
    /// histogram, to its 3 significant digits). The JSON keeps the
    /// quantiles above.
    #[serde(skip)]
    pub buckets: [u64; LIFETIME_BUCKETS_NS.len()],
    #[serde(skip)]
    pub sum_s: f64,
}

/// Upper bounds of the lifetime histogram's buckets, in nanoseconds: the
/// decades from 1 us to 10 s (the `+Inf` bucket is the count).
pub const LIFETIME_BUCKETS_NS: [u64; 8] = [
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    SEC,
    10 * SEC,
];

/// The histogram's decades for the dashboard: label and count.
pub const DECADES: [(&str, u64, u64); 7] = [
    ("<10us", 0, 10_000),
    ("<100us", 10_000, 100_000),
    ("<1ms", 100_000, 1_000_000),
    ("<10ms", 1_000_000, 10_000_000),
    ("<100ms", 10_000_000, 100_000_000),
    ("<1s", 100_000_000, SEC),
    (">=1s", SEC, u64::MAX),
];

pub struct Model {
    flags: FollFlags,
    /// The charts' zero (the start of the run or recording), in kernel ns.
    pub base_ns: u64,
    /// The latest time known (an event's or a tick's).
    pub now_ns: u64,
    rates: VecDeque<(u64, Rate)>,
    /// (second, outstanding [pin, long-term, get]) sampled at each tick.
    outstanding: VecDeque<(u64, [u64; 3])>,
    holders: HashMap<(u32, i32), HolderStats>,
    lifetimes: Histogram<u64>,
    /// Newest first.
    findings: VecDeque<Finding>,
    pub findings_total: u64,
    pub failures_total: u64,
    /// Findings by kind name (`leak_at_end`, ...).
    pub findings_by_kind: HashMap<&'static str, u64>,
    /// Leaks and mismatches by the kind of reference involved (the
    /// holder's; an unpin with no holder counts as a FOLL_PIN one).
    pub leaks_by_ref: BTreeMap<Kind, u64>,
    pub mismatches_by_ref: BTreeMap<Kind, u64>,
}

impl Model {
    pub fn new(flags: FollFlags) -> Model {
        Model {
            flags,
            base_ns: 0,
            now_ns: 0,
            rates: VecDeque::new(),
            outstanding: VecDeque::new(),
            holders: HashMap::default(),
            // 1 ns to 1 hour at 3 significant digits (tens of KiB).
            lifetimes: Histogram::new_with_bounds(1, 3600 * SEC, 3).expect("valid bounds"),
            findings: VecDeque::new(),
            findings_total: 0,
            failures_total: 0,
            findings_by_kind: HashMap::default(),
            leaks_by_ref: BTreeMap::new(),
            mismatches_by_ref: BTreeMap::new(),
        }
    }

    /// Sets the charts' zero: the start of the run, in kernel time.
    pub fn start(&mut self, now_ns: u64) {
        self.base_ns = now_ns;
        self.now_ns = self.now_ns.max(now_ns);
    }

    fn rate_mut(&mut self, ts_ns: u64) -> &mut Rate {
        let sec = ts_ns / SEC;
        // Nearly every event falls in the newest second.
        if self.rates.back().is_some_and(|(s, _)| *s == sec) {
            return &mut self.rates.back_mut().expect("not empty").1;
        }
        if self.rates.back().is_none_or(|(s, _)| *s < sec) {
            self.rates.push_back((sec, Rate::default()));
            while self.rates.len() > HISTORY_S {
                self.rates.pop_front();
            }
        }
        // A late event (another CPU's) lands in its own second if kept.
        let i = self.rates.iter().rposition(|(s, _)| *s <= sec).unwrap_or(0);
        &mut self.rates[i].1
    }

    /// One decoded event (before the ledger applies it).
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::Acquire(a) if a.ret > 0 && !a.counted => {
                self.now_ns = self.now_ns.max(a.ts_ns);
                let kind = Kind::of(a, &self.flags);
                let pages = a.pages_grabbed();
                let r = self.rate_mut(a.ts_ns);
                match kind {
                    Kind::Get => r.get += pages,
                    _ => r.pin += pages,
                }
                self.holders
                    .entry((a.tgid, a.stack_id))
                    .or_insert_with(|| HolderStats {
                        comm: a.comm,
                        ..Default::default()
                    })
                    .add(a.ts_ns / SEC, pages);
            }
            Event::Release(rel) => {
                self.now_ns = self.now_ns.max(rel.ts_ns);
                let refs = rel.refs.max(0) as u64;
                let is_pin = rel.gup_flags & self.flags.pin != 0;
                let r = self.rate_mut(rel.ts_ns);
                if is_pin {
                    r.unpin += refs;
                } else {
                    r.unget += refs;
                }
            }
            // The kernel books' counts since their last reading.
            Event::Counted(c) => {
                self.now_ns = self.now_ns.max(c.ts_ns);
                let r = self.rate_mut(c.ts_ns);
                r.pin += c.pages;
                r.unpin += c.released;
                if c.site.is_some() && c.pages > 0 {
                    self.holders
                        .entry((c.tgid, c.stack_id))
                        .or_insert_with(|| HolderStats {
                            comm: c.comm,
                            ..Default::default()
                        })
                        .add(c.ts_ns / SEC, c.pages);
                }
            }
            _ => {}
        }
    }

    /// `n` references that lived `ns` (the kernel books' histogram).
    pub fn record_lifetimes(&mut self, ns: u64, n: u64) {
        let high = self.lifetimes.high();
        let _ = self.lifetimes.record_n(ns.clamp(1, high), n);
    }

    /// The lifetimes the ledger noted since the last call.
    pub fn take_lifetimes(&mut self, ledger: &mut Ledger) {
        let lifetimes = &mut self.lifetimes;
        let high = lifetimes.high();
        ledger.drain_lifetimes(|l| {
            let _ = lifetimes.record_n(l.ns().clamp(1, high), l.refs);
        });
    }

    pub fn note_findings(&mut self, found: &[Finding]) {
        if found.is_empty() {
            return;
        }
        for f in found {
            self.findings_total += 1;
            if f.kind.is_failure() {
                self.failures_total += 1;
            }
            *self.findings_by_kind.entry(kind_name(f)).or_default() += 1;
            let kind = f.holder.map_or(Kind::Pin, |h| h.kind);
            let by = if f.kind.is_mismatch() {
                &mut self.mismatches_by_ref
            } else {
                &mut self.leaks_by_ref
            };
            *by.entry(kind).or_default() += 1;
            self.findings.push_front(f.clone());
        }
        self.findings.truncate(FINDINGS_KEPT);
    }

    /// Time passes: samples what the ledger holds outstanding.
    pub fn tick(&mut self, now_ns: u64, ledger: &Ledger) {
        self.now_ns = self.now_ns.max(now_ns);
        let sec = self.now_ns / SEC;
        let out = held_by_kind(ledger);
        match self.outstanding.back_mut() {
            Some((s, v)) if *s == sec => *v = out,
            _ => self.outstanding.push_back((sec, out)),
        }
        while self.outstanding.len() > HISTORY_S {
            self.outstanding.pop_front();
        }
        for h in self.holders.values_mut() {
            h.forget_before(sec);
        }
    }

    pub fn lifetime_summary(&self) -> LifetimeSummary {
        let h = &self.lifetimes;
        let us = |ns: u64| ns as f64 / 1000.0;
        let mut buckets = [0; LIFETIME_BUCKETS_NS.len()];
        let mut sum_ns = 0.0;
        for v in h.iter_recorded() {
            let (ns, n) = (v.value_iterated_to(), v.count_since_last_iteration());
            sum_ns += h.median_equivalent(ns) as f64 * n as f64;
            if let Some(i) = LIFETIME_BUCKETS_NS.iter().position(|&le| ns <= le) {
                buckets[i] += n;
            }
        }
        LifetimeSummary {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            max_us: us(h.max()),
            buckets,
            sum_s: sum_ns / 1e9,
        }
    }

    /// Lifetimes per decade of [`DECADES`].
    pub fn lifetime_decades(&self) -> Vec<(&'static str, u64)> {
        let mut counts = [0u64; DECADES.len()];
        for v in self.lifetimes.iter_recorded() {
            let ns = v.value_iterated_to();
            if let Some(i) = DECADES.iter().position(|(_, lo, hi)| ns >= *lo && ns < *hi) {
                counts[i] += v.count_since_last_iteration();
            }
        }
        DECADES
            .iter()
            .zip(counts)
            .map(|((l, _, _), c)| (*l, c))
            .collect()
    }

    /// Rates per second, oldest first, as (seconds since the start, rate).
    pub fn rates(&self) -> Vec<(f64, Rate)> {
        self.rates
            .iter()
            .map(|(s, r)| (self.rel_s(*s), *r))
            .collect()
    }

    /// Outstanding references sampled per second: (seconds since the start,
    /// [pin, long-term pin, get]).
    pub fn outstanding_series(&self) -> Vec<(f64, [u64; 3])> {
        self.outstanding
            .iter()
            .map(|(s, v)| (self.rel_s(*s), *v))
            .collect()
    }

    /// The latest outstanding sample.
    pub fn outstanding_now(&self) -> [u64; 3] {
        self.outstanding.back().map(|(_, v)| *v).unwrap_or_default()
    }

    fn rel_s(&self, sec: u64) -> f64 {
        (sec * SEC).saturating_sub(self.base_ns) as f64 / 1e9
    }

    /// Seconds since the start.
    pub fn uptime_s(&self) -> f64 {
        self.now_ns.saturating_sub(self.base_ns) as f64 / 1e9
    }

    /// Findings, newest first.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter()
    }

    /// Holders per process, each with its stacks; every process seen
    /// acquiring is listed, busiest (most outstanding, then most pages) first.
    pub fn processes(&self, ledger: &Ledger) -> Vec<ProcessRow> {
        let now = self.now_ns;
        let now_sec = now / SEC;
        let mut stacks: HashMap<(u32, i32), (Comm, Held)> = self
            .holders
            .iter()
            .map(|(&k, s)| {
                let held = Held {
                    rate: s.rate(now_sec),
                    total_pages: s.total_pages,
                    ..Default::default()
                };
                (k, (s.comm, held))
            })
            .collect();
        for h in ledger.holders() {
            let (_, held) = stacks
                .entry((h.tgid, h.stack_id))
                .or_insert_with(|| (h.comm, Held::default()));
            held.outstanding[slot(h.kind)] += h.refs;
            let age = now.saturating_sub(h.acquired_ns);
            held.oldest_age_ns = held.oldest_age_ns.max(Some(age));
        }
        let mut procs: HashMap<u32, ProcessRow> = HashMap::default();
        for ((tgid, stack_id), (comm, held)) in stacks {
            let p = procs.entry(tgid).or_insert_with(|| ProcessRow {
                tgid,
                comm,
                held: Held::default(),
                stacks: Vec::new(),
            });
            p.held.merge(&held);
            p.stacks.push(StackRow { stack_id, held });
        }
        let mut v: Vec<ProcessRow> = procs.into_values().collect();
        for p in &mut v {
            p.stacks
                .sort_by(|a, b| busiest(&a.held, &b.held).then(a.stack_id.cmp(&b.stack_id)));
        }
        v.sort_by(|a, b| busiest(&a.held, &b.held).then(a.tgid.cmp(&b.tgid)));
        v
    }

    /// Stack ids the model has seen (holders and findings), for recording
    /// their symbols.
    pub fn stack_ids(&self) -> impl Iterator<Item = i32> + '_ {
        self.holders
            .keys()
            .map(|(_, s)| *s)
            .chain(self.findings.iter().map(|f| f.stack_id))
            .filter(|&s| s >= 0)
    }
}

fn busiest(a: &Held, b: &Held) -> std::cmp::Ordering {
    b.outstanding_total()
        .cmp(&a.outstanding_total())
        .then(b.total_pages.cmp(&a.total_pages))
}

fn kind_name(f: &Finding) -> &'static str {
    use crate::ledger::FindingKind as K;
    match f.kind {
        K::LeakAtEnd => "leak_at_end",
        K::LongtermHeldAtEnd => "longterm_held_at_end",
        K::LeakOld => "leak_old",
        K::LeakOwnerExited => "leak_owner_exited",
        K::UnpinOfGetPage => "unpin_of_get_page",
        K::DoubleUnpin => "double_unpin",
        K::UnpinWithoutPin => "unpin_without_pin",
        K::PinReleasedAsGet => "pin_released_as_get",
        K::LeakAfterBio => "leak_after_bio",
    }
}

#[cfg(test)]
mod tests;
