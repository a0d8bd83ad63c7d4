//! The top outstanding stacks (what bcc's memleak prints for allocations):
//! the ledger's open holders grouped by the kernel stack that acquired them,
//! with the references each stack holds now, on how many folios, for which
//! processes and for how long. Pure: [`top_stacks`] is a function of the
//! holders and the time; the caller symbolizes the rows it keeps
//! ([`TopStacks::symbolize`]).
//!
//! Holders without a stack (sampled out with `--stacks sampled`, none with
//! `--stacks none`, or not stored when the stack map was full) are one row,
//! `stack_id: None`, always kept: with the stacks left out by the top N
//! (counted in [`TopStacks::omitted`]) the rows add up to every reference
//! outstanding.

use crate::{
    ledger::{Holder, Kind},
    model::slot,
    stream::events::Comm,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

/// Rows shown by default (`--top-stacks`).
pub const DEFAULT_TOP_STACKS: usize = 10;

/// Processes named per row; the rest are counted in `process_count`.
pub const PROCESSES_NAMED: usize = 3;

/// The order of the rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StackSort {
    /// Most references held first (the oldest first among equals).
    #[default]
    Refs,
    /// The oldest holder first (most references first among equals).
    Age,
}

/// A process holding references from a stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StackProcess {
    pub tgid: u32,
    pub comm: Comm,
    /// References it holds from this stack.
    pub refs: u64,
}

/// The holders of one acquiring stack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StackHolding {
    /// The acquire's stack id; `None` for the holders without a stack.
    pub stack_id: Option<i32>,
    /// References held, all kinds.
    pub refs: u64,
    /// References held by kind: [pin, long-term pin, get] (in JSON, by
    /// name, as the summary's `by_kind`).
    #[serde(serialize_with = "by_kind_name")]
    pub by_kind: [u64; 3],
    /// Holders: a folio's references from one process at this stack.
    pub holders: u64,
    pub folios: u64,
    /// The processes holding the most references from it (at most
    /// [`PROCESSES_NAMED`]), and how many processes in all.
    pub processes: Vec<StackProcess>,
    pub process_count: u64,
    /// Age of the oldest holder, and the median holder age, in ns.
    pub oldest_age_ns: u64,
    pub median_age_ns: u64,
    /// The stack's frames, innermost first (empty until symbolized, and
    /// for the row without a stack).
    pub frames: Vec<String>,
}

impl StackHolding {
    /// The named processes as `comm/tgid`, and how many more hold from
    /// this stack without being named.
    pub fn process_labels(&self) -> (Vec<String>, u64) {
        let named = self
            .processes
            .iter()
            .map(|p| format!("{}/{}", p.comm, p.tgid))
            .collect();
        let more = self
            .process_count
            .saturating_sub(self.processes.len() as u64);
        (named, more)
    }
}

/// What the top N left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Omitted {
    pub stacks: u64,
    pub refs: u64,
    pub holders: u64,
}

/// The table: the top rows, then the row without a stack (if any holder
/// has none), and what was left out. In the JSON summary its fields are
/// the summary's own (`top_stacks`, an array, and `top_stacks_omitted`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TopStacks {
    #[serde(rename = "top_stacks")]
    pub rows: Vec<StackHolding>,
    #[serde(rename = "top_stacks_omitted")]
    pub omitted: Omitted,
}

fn by_kind_name<S: serde::Serializer>(by_kind: &[u64; 3], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut m = s.serialize_map(Some(3))?;
    for k in Kind::ALL {
        m.serialize_entry(&k, &by_kind[slot(k)])?;
    }
    m.end()
}

impl TopStacks {
    /// Fills each row's frames from `stack` (by stack id).
    pub fn symbolize(&mut self, mut stack: impl FnMut(i32) -> Vec<String>) {
        for r in &mut self.rows {
            if let Some(id) = r.stack_id {
                r.frames = stack(id);
            }
        }
    }

    /// References held in all (rows and omitted).
    pub fn refs(&self) -> u64 {
        self.rows.iter().map(|r| r.refs).sum::<u64>() + self.omitted.refs
    }
}

#[derive(Default)]
struct Group {
    by_kind: [u64; 3],
    folios: FxHashSet<u64>,
    ages: Vec<u64>,
    processes: FxHashMap<u32, (Comm, u64)>,
}

/// The stacks holding references at `now_ns`, from the ledger's open
/// holders (`Ledger::holders_by_folio`): the `top` first by `sort` (ties
/// by stack id, for a stable table), then the row without a stack. `top`
/// 0 gives no row at all (the table is hidden).
pub fn top_stacks<'a>(
    holders: impl IntoIterator<Item = (u64, &'a Holder)>,
    now_ns: u64,
    sort: StackSort,
    top: usize,
) -> TopStacks {
    if top == 0 {
        return TopStacks::default();
    }
    let mut groups: FxHashMap<Option<i32>, Group> = FxHashMap::default();
    for (folio, h) in holders {
        let g = groups
            .entry((h.stack_id >= 0).then_some(h.stack_id))
            .or_default();
        g.by_kind[slot(h.kind)] += h.refs;
        g.folios.insert(folio);
        g.ages.push(now_ns.saturating_sub(h.acquired_ns));
        g.processes.entry(h.tgid).or_insert((h.comm, 0)).1 += h.refs;
    }
    let mut rows: Vec<StackHolding> = groups.into_iter().map(|(id, g)| row(id, g)).collect();
    let refs_then_age = |a: &StackHolding, b: &StackHolding| {
        b.refs
            .cmp(&a.refs)
            .then(b.oldest_age_ns.cmp(&a.oldest_age_ns))
    };
    rows.sort_by(|a, b| {
        let ord = match sort {
            StackSort::Refs => refs_then_age(a, b),
            StackSort::Age => b
                .oldest_age_ns
                .cmp(&a.oldest_age_ns)
                .then(b.refs.cmp(&a.refs)),
        };
        ord.then(a.stack_id.cmp(&b.stack_id))
    });
    let none = rows
        .iter()
        .position(|r| r.stack_id.is_none())
        .map(|i| rows.remove(i));
    let mut omitted = Omitted::default();
    for r in rows.drain(top.min(rows.len())..) {
        omitted.stacks += 1;
        omitted.refs += r.refs;
        omitted.holders += r.holders;
    }
    rows.extend(none);
    TopStacks { rows, omitted }
}

fn row(stack_id: Option<i32>, mut g: Group) -> StackHolding {
    g.ages.sort_unstable();
    let mut processes: Vec<StackProcess> = g
        .processes
        .iter()
        .map(|(&tgid, &(comm, refs))| StackProcess { tgid, comm, refs })
        .collect();
    processes.sort_by(|a, b| b.refs.cmp(&a.refs).then(a.tgid.cmp(&b.tgid)));
    let process_count = processes.len() as u64;
    processes.truncate(PROCESSES_NAMED);
    StackHolding {
        stack_id,
        refs: g.by_kind.iter().sum(),
        by_kind: g.by_kind,
        holders: g.ages.len() as u64,
        folios: g.folios.len() as u64,
        processes,
        process_count,
        oldest_age_ns: g.ages.last().copied().unwrap_or(0),
        // The lower middle of an even count: an age some holder has.
        median_age_ns: g
            .ages
            .get(g.ages.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0),
        frames: Vec::new(),
    }
}

/// The kinds a row holds, as the summary names them: `FOLL_PIN 12,
/// FOLL_GET 3` (kinds it holds none of are left out).
pub fn kinds_label(by_kind: &[u64; 3]) -> String {
    Kind::ALL
        .iter()
        .filter(|&&k| by_kind[slot(k)] > 0)
        .map(|&k| format!("{} {}", k.label(), by_kind[slot(k)]))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    const SEC: u64 = 1_000_000_000;

    fn holder(kind: Kind, refs: u64, tgid: u32, stack_id: i32, acquired_s: u64) -> Holder {
        Holder {
            kind,
            refs,
            tgid,
            comm: synth::comm(&format!("p{tgid}")),
            stack_id,
            acquired_ns: acquired_s * SEC,
            reported: false,
            bio: 0,
        }
    }

    /// Stack 7: 5 refs on 2 folios by two processes; stack 8: 5 refs,
    /// older; stack 9: 1 ref; 2 holders without a stack (sampled out and
    /// not stored); at 100 s.
    fn books() -> Vec<(u64, Holder)> {
        use pintrace_common::STACK_NOT_TAKEN;
        vec![
            (1, holder(Kind::Pin, 3, 10, 7, 90)),
            (2, holder(Kind::Pin, 1, 10, 7, 95)),
            (2, holder(Kind::Get, 1, 11, 7, 99)),
            (3, holder(Kind::LongtermPin, 5, 12, 8, 40)),
            (4, holder(Kind::Pin, 1, 13, 9, 98)),
            (5, holder(Kind::Pin, 2, 14, STACK_NOT_TAKEN, 50)),
            (6, holder(Kind::Pin, 1, 14, -17, 60)),
        ]
    }

    fn table(sort: StackSort, top: usize) -> TopStacks {
        let b = books();
        top_stacks(b.iter().map(|(f, h)| (*f, h)), 100 * SEC, sort, top)
    }

    #[test]
    fn stacks_are_grouped_and_sorted_by_references_then_age() {
        let t = table(StackSort::Refs, 10);
        let ids: Vec<_> = t.rows.iter().map(|r| r.stack_id).collect();
        // 7 and 8 hold 5 each: 8's holder is older. The row without a stack last.
        assert_eq!(ids, [Some(8), Some(7), Some(9), None]);
        let s7 = &t.rows[1];
        assert_eq!((s7.refs, s7.by_kind), (5, [4, 0, 1]));
        assert_eq!((s7.holders, s7.folios, s7.process_count), (3, 2, 2));
        assert_eq!(
            s7.processes
                .iter()
                .map(|p| (p.tgid, p.refs))
                .collect::<Vec<_>>(),
            [(10, 4), (11, 1)]
        );
        // Ages 10 s, 5 s and 1 s: the oldest and the median.
        assert_eq!((s7.oldest_age_ns, s7.median_age_ns), (10 * SEC, 5 * SEC));
        // Sampled out and not stored are one row; the totals add up.
        let none = &t.rows[3];
        assert_eq!(
            (none.refs, none.holders, none.oldest_age_ns),
            (3, 2, 50 * SEC)
        );
        assert_eq!(none.median_age_ns, 40 * SEC, "the lower middle of two");
        assert_eq!((t.refs(), t.omitted), (14, Omitted::default()));
        assert!(t.rows.iter().all(|r| r.frames.is_empty()));
    }

    #[test]
    fn the_top_n_keeps_the_row_without_a_stack_and_counts_the_rest() {
        let t = table(StackSort::Refs, 1);
        let ids: Vec<_> = t.rows.iter().map(|r| r.stack_id).collect();
        assert_eq!(ids, [Some(8), None]);
        assert_eq!(
            t.omitted,
            Omitted {
                stacks: 2,
                refs: 6,
                holders: 4
            }
        );
        assert_eq!(t.refs(), 14, "what is shown and omitted is every reference");
        // 0 hides the table.
        assert_eq!(table(StackSort::Refs, 0), TopStacks::default());
    }

    #[test]
    fn by_age_the_oldest_holder_comes_first() {
        let t = table(StackSort::Age, 10);
        let ids: Vec<_> = t.rows.iter().map(|r| r.stack_id).collect();
        assert_eq!(ids, [Some(8), Some(7), Some(9), None]);
        let t = table(StackSort::Age, 2);
        assert_eq!(t.rows[1].stack_id, Some(7));
        assert_eq!(t.omitted.stacks, 1);
    }

    #[test]
    fn many_processes_are_counted_and_the_busiest_named() {
        let b: Vec<(u64, Holder)> = (0..5)
            .map(|i| (i as u64, holder(Kind::Pin, i as u64 + 1, 20 + i, 3, 1)))
            .collect();
        let t = top_stacks(b.iter().map(|(f, h)| (*f, h)), 2 * SEC, StackSort::Refs, 10);
        let r = &t.rows[0];
        assert_eq!(r.process_count, 5);
        assert_eq!(
            r.processes.iter().map(|p| p.tgid).collect::<Vec<_>>(),
            [24, 23, 22]
        );
    }

    #[test]
    fn rows_are_symbolized_by_stack_id_and_nothing_is_empty() {
        let mut t = table(StackSort::Refs, 10);
        t.symbolize(|id| vec![format!("f{id}+0x0")]);
        assert_eq!(t.rows[0].frames, ["f8+0x0"]);
        assert!(t.rows[3].frames.is_empty(), "no stack, no frames");
        let empty: [(u64, &Holder); 0] = [];
        assert_eq!(
            top_stacks(empty, 0, StackSort::Refs, 10),
            TopStacks::default()
        );
        assert_eq!(kinds_label(&[4, 0, 1]), "FOLL_PIN 4, FOLL_GET 1");
    }
}
