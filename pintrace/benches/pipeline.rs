//! The agent's pipeline (decode → ledger → model) on a synthetic stream
//! encoded exactly as the probes write it: events per second on one core,
//! and the ledger's memory per tracked folio.
//!
//! `cargo bench -p pintrace --bench pipeline`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pintrace::{
    kernel::flags::FollFlags,
    ledger::{Ledger, LedgerConfig},
    stream::pipeline::Pipeline,
    synth::{folio, Stream, MS},
};

/// Direct I/O as the probes see it: 64-page pin calls by a few processes,
/// each page unpinned by the completion, and a block request per call.
fn dio_stream(calls: u64) -> Vec<Vec<u8>> {
    let mut s = Stream::new(1_000 * MS);
    for c in 0..calls {
        let folios: Vec<u64> = (0..64).map(|i| folio((c % 4096) * 64 + i)).collect();
        s.pin(100 + (c % 4) as u32, "engine", 1, &folios);
        s.wait(10_000);
        s.complete(512);
        s.unpin_all(&folios);
    }
    s.records.into_iter().map(|(_, r)| r).collect()
}

fn pipeline() -> Pipeline {
    Pipeline::new(Ledger::new(FollFlags::FROM_6_3, LedgerConfig::default()))
}

fn bench_pipeline(c: &mut Criterion) {
    let records = dio_stream(2_000);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("decode+ledger+model (dio stream)", |b| {
        b.iter_batched(
            pipeline,
            |mut p| {
                let mut found = Vec::new();
                for r in &records {
                    p.feed(r, &mut found);
                }
                assert!(found.is_empty());
                p
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // The same stream without the model: the ledger's share.
    let events: Vec<pintrace::stream::events::Event> = records
        .iter()
        .map(|r| pintrace::stream::events::decode(r).unwrap())
        .collect();
    g.bench_function("ledger only (dio stream, decoded)", |b| {
        b.iter_batched(
            || Ledger::new(FollFlags::FROM_6_3, LedgerConfig::default()),
            |mut l| {
                let mut found = Vec::new();
                for e in &events {
                    l.apply(e, &mut found);
                }
                l
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("decode only (dio stream)", |b| {
        b.iter(|| {
            records
                .iter()
                .filter(|r| pintrace::stream::events::decode(r).is_ok())
                .count()
        })
    });
    g.finish();
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Not a timing: prints the ledger's memory per outstanding pinned folio.
fn memory_per_folio(_c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let mut s = Stream::new(1_000 * MS);
    let folios: Vec<u64> = (0..N).map(folio).collect();
    for chunk in folios.chunks(256) {
        s.pin(100, "engine", 1, chunk);
    }
    let records: Vec<Vec<u8>> = s.records.into_iter().map(|(_, r)| r).collect();
    let before = rss();
    let mut p = pipeline();
    let mut found = Vec::new();
    for r in &records {
        p.feed(r, &mut found);
    }
    let after = rss();
    println!(
        "ledger memory: {} tracked folios, {:.0} bytes each ({:.1} MiB per million)",
        p.ledger.tracked_folios(),
        (after.saturating_sub(before)) as f64 / N as f64,
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64 * 1e6 / N as f64,
    );
    drop(p);
}

criterion_group!(benches, bench_pipeline, memory_per_folio);
criterion_main!(benches);
