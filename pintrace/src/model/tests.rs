//! The model over synthetic streams, through the real pipeline.

use super::*;
use crate::{
    ledger::{FindingKind, LedgerConfig},
    stream::pipeline::Pipeline,
    synth::{demo, folio, Stream, MS},
};

const T0: u64 = 1_000 * SEC;

fn run(s: &Stream) -> (Pipeline, Vec<Finding>) {
    let mut p = Pipeline::new(Ledger::new(s.flags, LedgerConfig::default()));
    p.model.start(T0);
    let mut found = Vec::new();
    for (_, r) in &s.records {
        p.feed(r, &mut found);
    }
    (p, found)
}

#[test]
fn an_empty_stream_has_empty_views() {
    let (mut p, _) = run(&Stream::new(T0));
    p.tick(T0 + SEC, &mut Vec::new());
    let m = &p.model;
    assert!(m.rates().is_empty());
    assert_eq!(m.outstanding_now(), [0; 3]);
    assert!(m.processes(&p.ledger).is_empty());
    assert_eq!(m.lifetime_summary().count, 0);
    assert_eq!(m.uptime_s(), 1.0);
}

#[test]
fn rates_are_per_second_of_kernel_time_by_kind() {
    let mut s = Stream::new(T0);
    let a: Vec<u64> = (0..256).map(folio).collect();
    s.pin(1, "dd", 5, &a).wait(10 * MS).unpin_all(&a);
    s.wait(SEC).get(2, "g", 6, &[folio(1000), folio(1001)]);
    let (p, _) = run(&s);
    let rates = p.model.rates();
    assert_eq!(
        rates,
        vec![
            (
                0.0,
                Rate {
                    pin: 256,
                    unpin: 256,
                    ..Default::default()
                }
            ),
            (
                1.0,
                Rate {
                    get: 2,
                    ..Default::default()
                }
            ),
        ]
    );
}

#[test]
fn lifetimes_holders_and_findings() {
    let mut s = Stream::new(T0);
    let a: Vec<u64> = (0..4).map(folio).collect();
    s.pin(1, "dd", 5, &a).wait(3 * MS).unpin_all(&a[..3]);
    s.wait(SEC).pin(1, "dd", 7, &[folio(10)]);
    // An unpin of a page never pinned, below the bias: a mismatch.
    s.unpin(folio(20), 1, 1);
    let (mut p, mut found) = run(&s);
    p.tick(s.ts + 2 * SEC, &mut found);
    let m = &p.model;
    let l = m.lifetime_summary();
    assert_eq!(l.count, 3);
    assert!((2990.0..=3010.0).contains(&l.p50_us), "{l:?}");
    let decades = m.lifetime_decades();
    assert_eq!(decades.iter().map(|d| d.1).sum::<u64>(), 3);
    assert_eq!(decades[3], ("<10ms", 3));
    assert_eq!(m.outstanding_now(), [2, 0, 0]);
    let procs = m.processes(&p.ledger);
    assert_eq!(procs.len(), 1);
    let dd = &procs[0];
    assert_eq!((dd.tgid, dd.comm.to_string()), (1, "dd".to_owned()));
    assert_eq!(dd.held.outstanding, [2, 0, 0]);
    assert_eq!(dd.held.total_pages, 5);
    // The oldest is the first pin's last page: 3 ms + 1 s + 2 s old.
    assert_eq!(dd.held.oldest_age_ns, Some(3 * SEC + 3 * MS));
    assert_eq!(
        dd.stacks.iter().map(|s| s.stack_id).collect::<Vec<_>>(),
        vec![5, 7]
    );
    assert_eq!(m.findings_total, 1);
    let f: Vec<_> = m.findings().map(|f| f.kind).collect();
    assert_eq!(f, vec![FindingKind::UnpinWithoutPin]);
    assert_eq!(m.findings_by_kind["unpin_without_pin"], 1);
}

#[test]
fn findings_are_newest_first_and_counted_past_the_cap() {
    let mut s = Stream::new(T0);
    for i in 0..(FINDINGS_KEPT as u64 + 5) {
        s.wait(MS).unpin(folio(i), 1, 1);
    }
    let (p, _) = run(&s);
    let m = &p.model;
    assert_eq!(m.findings_total, FINDINGS_KEPT as u64 + 5);
    assert_eq!(m.findings().count(), FINDINGS_KEPT);
    assert_eq!(
        m.findings().next().unwrap().folio,
        folio(FINDINGS_KEPT as u64 + 4)
    );
}

#[test]
fn pin_rate_is_over_the_last_window() {
    let s = demo(T0, 3);
    let (mut p, mut found) = run(&s);
    p.tick(s.ts, &mut found);
    let procs = p.model.processes(&p.ledger);
    let dd = procs.iter().find(|p| p.tgid == 149).unwrap();
    // 30 reads of 256 pages within the window of 10 s.
    assert_eq!(dd.held.total_pages, 30 * 256);
    assert!((dd.held.rate - 768.0).abs() < 1e-9, "{}", dd.held.rate);
    // The FOLL_GET user holds the most (7 references), then the leaky one.
    assert_eq!((procs[0].tgid, procs[0].held.outstanding), (151, [0, 0, 7]));
    assert_eq!((procs[1].tgid, procs[1].held.outstanding), (150, [2, 0, 0]));
    p.tick(s.ts + 20 * SEC, &mut found);
    let procs = p.model.processes(&p.ledger);
    let dd = procs.iter().find(|p| p.tgid == 149).unwrap();
    assert_eq!(dd.held.rate, 0.0);
}
