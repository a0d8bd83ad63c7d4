//! What every tracing command shares: the options that shape a session
//! ([`SessionArgs`]), replay ([`ReplayArgs`]), the record source they open
//! and the pipeline fed from it. `run` and `top` both build on these.

use crate::{
    kernel::lines::LineInfo,
    ledger::{Ledger, LedgerConfig},
    model::stacks::{top_stacks, StackSort, TopStacks, DEFAULT_TOP_STACKS},
    stream::pipeline::Pipeline,
    trace::{
        plan::Preference,
        session::{Session, SessionOptions, Stacks, Wakeup},
        source::{Source, Speed},
    },
};
use anyhow::Result;
use clap::Args;
use pintrace_common::DEFAULT_BOOKS_MAX;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// Where a live run keeps its books (`--books`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BooksAt {
    /// In a BPF map the probes update: no record for a balanced pin.
    Kernel,
    /// In the agent, from the full event stream.
    Events,
}

/// The options that shape a tracing session; the probe-side ones do nothing
/// on a replay, so they conflict with `--replay`.
#[derive(Args, Debug, Clone)]
pub struct SessionArgs {
    /// How to attach: fentry/fexit where they load (auto), or force one method.
    #[arg(long, value_enum, default_value_t = Preference::Auto)]
    pub attach: Preference,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 4, value_parser = parse_ringbuf_mib, allow_hyphen_values = true)]
    pub ringbuf_mib: u32,
    /// When the probes wake pintrace for new records (for benchmarks).
    #[arg(long, value_enum, default_value_t = Wakeup::Batched, hide = true)]
    pub ringbuf_wakeup: Wakeup,
    /// Which acquires and releases carry a kernel stack. An unwind is the
    /// probes' main cost: `sampled` takes, on each CPU, at most one stack
    /// per millisecond for each process and call site (so every one at low
    /// rates), and always the stack of an unpin the refcount shows to be
    /// wrong.
    #[arg(long, value_enum, default_value_t = Stacks::Sampled, conflicts_with = "replay")]
    pub stacks: Stacks,
    /// Leave the bio probes and block:block_rq_complete off: pins are not
    /// tied to their bios (no "held after its bio completed" leak) and block
    /// completions are not counted, for about half the probes' cost per
    /// Direct I/O.
    #[arg(long, conflicts_with = "replay")]
    pub no_bio: bool,
    /// Where the books are kept. `kernel` (the default): the probes keep
    /// each folio's pins in a BPF map and count calls, pages and releases
    /// per CPU; a balanced pin and unpin send no record (two programs per
    /// Direct I/O, plus the bio programs and one record per bio unless
    /// --no-bio), and the agent reads the books twice a second. `events`: every acquire, release
    /// and bio is a record the agent books (the full event stream, as
    /// --events and --record use): several records and about twice the
    /// agent's CPU per I/O.
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = BooksAt::Kernel,
          conflicts_with = "replay")]
    pub books: BooksAt,
    /// With the kernel books: their capacity, in folios pinned at once (the
    /// map allocates as it fills). Pins beyond it are sent as records:
    /// slower, never lost.
    #[arg(long, value_name = "FOLIOS", default_value_t = DEFAULT_BOOKS_MAX,
          value_parser = clap::value_parser!(u32).range(1..=1 << 26))]
    pub books_max: u32,
    /// Report non-long-term pins held longer than this as leaks (seconds,
    /// or with a unit: 500ms, 5s, 2m).
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    pub leak_age: Option<Duration>,
}

impl SessionArgs {
    /// The session these options ask for; `full_events` when every event
    /// must be a record (to echo or record them): no kernel books then.
    pub fn options(&self, verbose: bool, full_events: bool) -> SessionOptions {
        SessionOptions {
            attach: self.attach,
            ringbuf_mib: self.ringbuf_mib,
            verbose,
            wakeup: self.ringbuf_wakeup,
            stacks: self.stacks,
            bios: !self.no_bio,
            rq_records: full_events,
            pids: Vec::new(),
            books_max: (self.books == BooksAt::Kernel && !full_events).then_some(self.books_max),
        }
    }
}

/// Where the records come from (a recording, or the kernel), and what the
/// stacks' frames are named from.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Read the events from a recording (`run --record`) instead of the
    /// kernel: no root, no probes.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Replay pace: `recorded`, `max`, or a factor such as 10 [default: max
    /// for run, recorded for top].
    #[arg(long, value_name = "SPEED", value_parser = parse_speed, requires = "replay", allow_hyphen_values = true)]
    pub speed: Option<Speed>,
    /// Add file:line to the kernel's frames in stacks, from FILE: a vmlinux
    /// with DWARF debug info (a kernel built with CONFIG_DEBUG_INFO; a
    /// stripped vmlinux or a bzImage has none), live or in a replay. Module
    /// frames keep their names only. Without it stacks are named from
    /// kallsyms alone.
    #[arg(long, value_name = "FILE")]
    pub vmlinux: Option<PathBuf>,
}

/// The table of the stacks holding the most references (`run`'s summary).
#[derive(Args, Debug, Clone)]
pub struct TopStacksArgs {
    /// Show the N kernel stacks holding the most references at the end,
    /// each with its frames, as bcc's memleak does (0 hides the table;
    /// holders without a stack are one more row).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TOP_STACKS as u32,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub top_stacks: u32,
    /// Order of that table: most references held, or the oldest holder first.
    #[arg(long, value_enum, value_name = "ORDER", default_value_t = StackSort::Refs)]
    pub top_stacks_sort: StackSort,
}

impl TopStacksArgs {
    /// The table over the books now, its stacks symbolized by the source
    /// (the recorded frames on a replay).
    pub fn table(&self, source: &Source, pipeline: &Pipeline) -> TopStacks {
        let mut t = top_stacks(
            pipeline.ledger.holders_by_folio(),
            source.now_ns(),
            self.top_stacks_sort,
            self.top_stacks as usize,
        );
        t.symbolize(|id| source.stack(id));
        t
    }
}

/// A time flag's value: the engine's parser (a bare number is seconds,
/// else humantime's units), more than 0 and at most a year. Clap puts the
/// flag and the value before the message.
pub(crate) fn parse_time(s: &str) -> Result<Duration, String> {
    let d = pintrace_engine::size::parse_duration(s)?;
    if d.is_zero() || d > Duration::from_secs(365 * 24 * 3600) {
        return Err(format!("`{s}` must be more than 0 and at most one year"));
    }
    Ok(d)
}

pub(crate) fn parse_ringbuf_mib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of MiB"))?;
    if v == 0 || v > 1024 || !v.is_power_of_two() {
        return Err(format!("`{s}` must be a power of two from 1 to 1024"));
    }
    Ok(v)
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    s.parse()
}

/// Opens the record source: a recording when `--replay` is given, else a
/// live session (recorded to `record` when given); its stacks with source
/// lines when `--vmlinux` is given.
pub(crate) fn open_source(
    replay: &ReplayArgs,
    default_speed: Speed,
    session: SessionOptions,
    record: Option<&Path>,
    command: &str,
) -> Result<Source> {
    // Read before the probes attach: a bad path fails fast.
    let lines = replay.vmlinux.as_deref().map(LineInfo::open).transpose()?;
    let mut source = match &replay.replay {
        Some(path) => Source::replay(path, replay.speed.unwrap_or(default_speed))?,
        None => Source::live(Session::start(&session, command)?, record)?,
    };
    if let Some(lines) = lines {
        source.set_lines(lines);
    }
    Ok(source)
}

/// A pipeline for the source, its model's clock started.
pub(crate) fn pipeline_for(source: &Source, leak_age: Option<Duration>) -> Pipeline {
    let config = LedgerConfig {
        leak_age_ns: leak_age.map(|d| d.as_nanos() as u64),
        kernel_books: source.books_max().is_some(),
        ..LedgerConfig::default()
    };
    let mut pipeline = Pipeline::new(Ledger::new(source.meta().flags, config));
    pipeline.model.start(source.meta().start_ns);
    pipeline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_checked() {
        assert!(parse_time("0").is_err());
        assert!(parse_time("0s").is_err());
        assert!(parse_time("-1").is_err());
        assert!(parse_time("2y").is_err());
        assert!(parse_time("abc").unwrap_err().contains("abc"));
        assert_eq!(parse_time("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_time("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_time("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_time("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_ringbuf_mib("3").is_err());
        assert!(parse_ringbuf_mib("0").is_err());
        assert!(parse_ringbuf_mib("2048").is_err());
        assert_eq!(parse_ringbuf_mib("8"), Ok(8));
    }
}
