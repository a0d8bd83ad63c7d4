//! Where records come from: a live tracing session (optionally recorded to a
//! file) or a recording replayed at its recorded pace, N times faster, or as
//! fast as it reads. Either way they go through the same [`Pipeline`], and
//! the ledger's clock is the kernel's (recorded, on replay).

use crate::{
    kernel::{flags::FollFlags, lines::LineInfo, symbols::without_probe_frames},
    ledger::Finding,
    stream::pipeline::Pipeline,
    trace::record::{Entry, Header, RecordError, Recorder, Recording},
    trace::session::{monotonic_ns, Session},
};
use anyhow::{Context as _, Result};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

/// How often the ledger ages pins and the model samples (kernel time).
pub const TICK_NS: u64 = 500_000_000;

/// Replay pace (`--speed`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As recorded.
    Recorded,
    /// As fast as the records can be read.
    Max,
    /// N times the recorded pace.
    Times(f64),
}

impl Speed {
    /// The slowest pace: a second of recording in 1000 s.
    pub const MIN_FACTOR: f64 = 0.001;
    pub const MAX_FACTOR: f64 = 1e6;
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Speed, String> {
        match s {
            "recorded" => Ok(Speed::Recorded),
            "max" => Ok(Speed::Max),
            n => match n.parse::<f64>() {
                Ok(v) if (Speed::MIN_FACTOR..=Speed::MAX_FACTOR).contains(&v) => {
                    Ok(Speed::Times(v))
                }
                _ => Err(format!(
                    "`{s}` is not `recorded`, `max` or a factor from {} to {} (e.g. 10)",
                    Speed::MIN_FACTOR,
                    Speed::MAX_FACTOR
                )),
            },
        }
    }
}

/// What the views say about the run.
#[derive(Clone, Debug)]
pub struct Meta {
    pub kernel: String,
    pub plan: String,
    pub flags: FollFlags,
    /// The kernel clock at the start.
    pub start_ns: u64,
    /// "live", or the recording's file name and speed.
    pub mode: String,
}

/// What one wait for records gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    Records(usize),
    /// A replay reached the end of its recording.
    End,
}

pub enum Source {
    Live(Box<Live>),
    Replay(Box<Replay>),
}

pub struct Live {
    pub session: Session,
    meta: Meta,
    recorder: Option<Recorder>,
    stacks_written: HashSet<i32>,
    /// Source lines for the frames shown (`--vmlinux`); a recording keeps
    /// the frames without them.
    lines: Option<LineInfo>,
}

pub struct Replay {
    meta: Meta,
    recording: Recording,
    speed: Speed,
    /// Next entry to apply.
    next: usize,
    /// The recorded time reached, ns since the start.
    clock_ns: u64,
    next_tick_ns: u64,
    end_ns: u64,
    /// Not past this recorded time (ns since the start) until moved on:
    /// `run --interval` reports each interval at its boundary.
    hold_ns: u64,
    started: Option<Instant>,
    stacks: HashMap<i32, Vec<String>>,
    lost: BTreeMap<&'static str, u64>,
    /// Source lines for the frames shown (`--vmlinux`).
    lines: Option<LineInfo>,
}

/// Loss counter names from a file, as the `&'static str` the summary keys
/// by: a handful per run, kept for the life of the process.
fn intern(name: &str) -> &'static str {
    Box::leak(name.to_owned().into_boxed_str())
}

impl Source {
    /// A live session, its records also written to `record` when given.
    pub fn live(session: Session, record: Option<&Path>) -> Result<Source> {
        let meta = Meta {
            kernel: session.caps.release.clone(),
            plan: session.plan.summary(),
            flags: session.flags,
            start_ns: monotonic_ns(),
            mode: "live".into(),
        };
        let recorder = match record {
            Some(path) => {
                let header = Header {
                    start_ns: meta.start_ns,
                    start_unix_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    flags: meta.flags,
                    kernel: meta.kernel.clone(),
                    plan: meta.plan.clone(),
                };
                Some(Recorder::create(path, &header).context("--record")?)
            }
            None => None,
        };
        Ok(Source::Live(Box::new(Live {
            session,
            meta,
            recorder,
            stacks_written: HashSet::new(),
            lines: None,
        })))
    }

    /// A recording read from `path`.
    pub fn replay(path: &Path, speed: Speed) -> Result<Source, RecordError> {
        let recording = Recording::load(path)?;
        let h = &recording.header;
        let name = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        let pace = match speed {
            Speed::Recorded => "recorded speed".to_owned(),
            Speed::Max => "max speed".to_owned(),
            Speed::Times(n) => format!("{n}x"),
        };
        let meta = Meta {
            kernel: h.kernel.clone(),
            plan: h.plan.clone(),
            flags: h.flags,
            start_ns: h.start_ns,
            mode: format!("replay {name} ({pace})"),
        };
        let stacks = recording
            .entries
            .iter()
            .filter_map(|e| match e {
                // As a live run shows them (recordings made before live
                // runs dropped the probe's frames still hold them).
                Entry::Stack { id, frames } => Some((*id, without_probe_frames(frames.clone()))),
                _ => None,
            })
            .collect();
        Ok(Source::Replay(Box::new(Replay {
            meta,
            end_ns: recording.duration_ns(),
            recording,
            speed,
            next: 0,
            clock_ns: 0,
            next_tick_ns: TICK_NS,
            hold_ns: u64::MAX,
            started: None,
            stacks,
            lost: BTreeMap::new(),
            lines: None,
        })))
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Source::Live(l) => &l.meta,
            Source::Replay(r) => &r.meta,
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Source::Live(_))
    }

    /// The kernel clock now (the recorded clock on replay).
    pub fn now_ns(&self) -> u64 {
        match self {
            Source::Live(_) => monotonic_ns(),
            Source::Replay(r) => r.meta.start_ns.saturating_add(r.clock_ns),
        }
    }

    /// A replay goes no further than `until_ns` (on the source's clock)
    /// until called again; `None` lifts it. A live source cannot wait.
    pub fn hold_at(&mut self, until_ns: Option<u64>) {
        if let Source::Replay(r) = self {
            r.hold_ns = until_ns.map_or(u64::MAX, |t| t.saturating_sub(r.meta.start_ns));
        }
    }

    /// Waits for records and feeds them to the pipeline; a replay also ticks
    /// the pipeline on its recorded clock. Cancel-safe.
    pub async fn next_batch(
        &mut self,
        pipeline: &mut Pipeline,
        found: &mut Vec<Finding>,
    ) -> Result<Batch> {
        match self {
            Source::Live(l) => {
                let Live {
                    session, recorder, ..
                } = &mut **l;
                let mut failed = None;
                let n = session
                    .next_batch(|r| record_and_feed(recorder, &mut failed, pipeline, found, r))
                    .await?;
                if let Some(e) = failed {
                    return Err(e.into());
                }
                Ok(Batch::Records(n))
            }
            Source::Replay(r) => r.next_batch(pipeline, found).await,
        }
    }

    /// The refcount audit at the end of a live run (see
    /// [`crate::ledger::Ledger::audit`]): reads, feeds what the ring holds,
    /// judges. Returns how many folios were read; `None` for a replay or a
    /// kernel without syscall tracepoints.
    pub fn audit(
        &mut self,
        pipeline: &mut Pipeline,
        found: &mut Vec<Finding>,
    ) -> Result<Option<u64>> {
        self.sync_books(pipeline, found, true)?;
        let Source::Live(l) = self else {
            return Ok(None);
        };
        let read_ns = monotonic_ns();
        let candidates = pipeline.ledger.audit_candidates(read_ns);
        let slots = l.session.audit(&candidates)?;
        let Some(slots) = slots else {
            return Ok(None);
        };
        self.drain(pipeline, found)?;
        pipeline.audit(&slots, read_ns, found);
        Ok(Some(slots.len() as u64))
    }

    /// Time passes on a live run: pins of owners that exited are audited
    /// (their refcount read) before the ledger may report them as leaks,
    /// then the pipeline ticks. A replay ticks on its recorded clock.
    pub fn tick(&mut self, pipeline: &mut Pipeline, found: &mut Vec<Finding>) -> Result<()> {
        let now = self.now_ns();
        if self.is_live() {
            // Everything sent before `now` is judged with it: an agent behind
            // its ring buffer (echoing every event, say) would otherwise see
            // a bio complete seconds ago and not yet the unpins that followed.
            self.drain(pipeline, found)?;
        }
        self.sync_books(pipeline, found, false)?;
        let Source::Live(l) = self else {
            return Ok(());
        };
        let candidates = pipeline.ledger.exit_leak_candidates(now);
        if !candidates.is_empty() {
            let read_ns = monotonic_ns();
            if let Some(slots) = l.session.audit(&candidates)? {
                self.drain(pipeline, found)?;
                pipeline.audit(&slots, read_ns, found);
            }
        }
        pipeline.tick(now, found);
        Ok(())
    }

    /// Reads the kernel books of a live session into the pipeline (see
    /// [`Session::sync_books`]); nothing for a replay or the full event
    /// stream.
    pub fn sync_books(
        &mut self,
        pipeline: &mut Pipeline,
        found: &mut Vec<Finding>,
        forced: bool,
    ) -> Result<()> {
        match self {
            Source::Live(l) => l.session.sync_books(pipeline, found, forced),
            Source::Replay(_) => Ok(()),
        }
    }

    /// What the kernel books hold and held at most, and the most kernel
    /// memory they took; `None` without them.
    pub fn books_usage(&self) -> Option<(usize, usize, u64)> {
        match self {
            Source::Live(l) => l
                .session
                .books
                .as_ref()
                .map(|b| (b.booked_now, b.booked_peak, b.memory_peak)),
            Source::Replay(_) => None,
        }
    }

    /// `--books-max` of a live run with the kernel books.
    pub fn books_max(&self) -> Option<u32> {
        match self {
            Source::Live(l) => l.session.books.as_ref().map(|b| b.max),
            Source::Replay(_) => None,
        }
    }

    /// Feeds what is already there, without waiting (live: the ring buffer;
    /// replay: the rest of the recording).
    pub fn drain(&mut self, pipeline: &mut Pipeline, found: &mut Vec<Finding>) -> Result<()> {
        match self {
            Source::Live(l) => {
                let Live {
                    session, recorder, ..
                } = &mut **l;
                let mut failed = None;
                session.drain(|r| record_and_feed(recorder, &mut failed, pipeline, found, r));
                match failed {
                    Some(e) => Err(e.into()),
                    None => Ok(()),
                }
            }
            Source::Replay(r) => {
                r.advance_to(r.end_ns, pipeline, found);
                Ok(())
            }
        }
    }

    /// Periodic housekeeping (live): records the stacks new to the model and
    /// the loss counters, and flushes the recording.
    pub fn checkpoint(&mut self, pipeline: &Pipeline) -> Result<()> {
        let Source::Live(l) = self else {
            return Ok(());
        };
        let Some(rec) = l.recorder.as_mut() else {
            return Ok(());
        };
        for id in pipeline.model.stack_ids() {
            if l.stacks_written.insert(id) {
                rec.stack(id, l.session.stack(id))?;
            }
        }
        rec.lost(monotonic_ns(), &l.session.lost()?)?;
        rec.flush()?;
        Ok(())
    }

    /// The end of a live run: the last stacks, the loss counters and the end
    /// marker go to the recording. Returns (path, bytes, records) if recording.
    pub fn finish(&mut self, pipeline: &Pipeline) -> Result<Option<(String, u64, u64)>> {
        self.checkpoint(pipeline)?;
        let Source::Live(l) = self else {
            return Ok(None);
        };
        match l.recorder.take() {
            Some(rec) => {
                let path = rec.path().display().to_string();
                let records = rec.records;
                let bytes = rec.finish(monotonic_ns())?;
                Ok(Some((path, bytes, records)))
            }
            None => Ok(None),
        }
    }

    /// Probe runs the kernel skipped because the program was already
    /// running on the CPU, by program (live runs only).
    pub fn recursion_skipped(&self) -> Option<BTreeMap<String, u64>> {
        match self {
            Source::Live(l) => Some(l.session.recursion_skipped()),
            Source::Replay(_) => None,
        }
    }

    /// Events the probes could not deliver, by cause (as recorded, on replay).
    pub fn lost(&self) -> Result<BTreeMap<&'static str, u64>> {
        match self {
            Source::Live(l) => l.session.lost(),
            Source::Replay(r) => Ok(r.lost.clone()),
        }
    }

    /// The probes' counters, summed over CPUs (none for a replay).
    pub fn counters(&self) -> Result<Vec<(pintrace_common::Counter, u64)>> {
        match self {
            Source::Live(l) => l.session.counters(),
            Source::Replay(_) => Ok(Vec::new()),
        }
    }

    /// Block requests counted in the kernel without a record (live runs;
    /// the tally holds those that came as records).
    pub fn counted_completions(&self) -> Result<crate::ledger::Completions> {
        match self {
            Source::Live(l) => l.session.completions(),
            Source::Replay(_) => Ok(Default::default()),
        }
    }

    /// A kernel stack, symbolized (empty when unknown), with source lines
    /// when a vmlinux was given ([`Source::set_lines`]).
    pub fn stack(&self, id: i32) -> Vec<String> {
        let (frames, lines) = match self {
            Source::Live(l) => (l.session.stack(id), &l.lines),
            Source::Replay(r) => (r.stacks.get(&id).cloned().unwrap_or_default(), &r.lines),
        };
        match lines {
            Some(lines) => lines.annotate(frames),
            None => frames,
        }
    }

    /// Adds source lines to the stacks shown (`--vmlinux`).
    pub fn set_lines(&mut self, lines: LineInfo) {
        match self {
            Source::Live(l) => l.lines = Some(lines),
            Source::Replay(r) => r.lines = Some(lines),
        }
    }

    /// Where a replayed recording was damaged (read up to there), if it was.
    pub fn damage(&self) -> Option<&RecordError> {
        match self {
            Source::Live(_) => None,
            Source::Replay(r) => r.recording.damage.as_ref(),
        }
    }
}

impl Replay {
    /// Applies the entries up to `target_ns` (recorded time), ticking the
    /// pipeline at each tick boundary on the way. Returns records fed.
    fn advance_to(
        &mut self,
        target_ns: u64,
        pipeline: &mut Pipeline,
        found: &mut Vec<Finding>,
    ) -> usize {
        let start = self.meta.start_ns;
        let mut fed = 0;
        loop {
            let next_at = self
                .recording
                .entries
                .get(self.next)
                .map(entry_offset)
                .unwrap_or(u64::MAX);
            // Ticks due before the next entry come first.
            if self.next_tick_ns <= target_ns && self.next_tick_ns <= next_at {
                self.clock_ns = self.clock_ns.max(self.next_tick_ns);
                pipeline.tick(start.saturating_add(self.next_tick_ns), found);
                self.next_tick_ns += TICK_NS;
                continue;
            }
            if next_at > target_ns {
                break;
            }
            let entry = &self.recording.entries[self.next];
            self.next += 1;
            self.clock_ns = self.clock_ns.max(next_at);
            match entry {
                Entry::Record { record, .. } => {
                    pipeline.feed(record, found);
                    fed += 1;
                }
                Entry::Lost { lost, .. } => {
                    self.lost = lost.iter().map(|(k, v)| (intern(k), *v)).collect();
                }
                Entry::Stack { .. } | Entry::End { .. } => {}
            }
        }
        self.clock_ns = self.clock_ns.max(target_ns.min(self.end_ns));
        fed
    }

    async fn next_batch(
        &mut self,
        pipeline: &mut Pipeline,
        found: &mut Vec<Finding>,
    ) -> Result<Batch> {
        if self.next >= self.recording.entries.len() && self.clock_ns >= self.end_ns {
            return Ok(Batch::End);
        }
        let factor = match self.speed {
            Speed::Max => {
                // A slice of recorded time per call, so the caller's other
                // branches (keys, redraws) get their turn.
                let target = (self.clock_ns + 8 * TICK_NS)
                    .min(self.end_ns)
                    .min(self.hold_ns.max(self.clock_ns));
                let n = self.advance_to(target, pipeline, found);
                tokio::task::yield_now().await;
                return Ok(Batch::Records(n));
            }
            Speed::Recorded => 1.0,
            Speed::Times(n) => n,
        };
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = |clock: u64| started + Duration::from_secs_f64(clock as f64 / 1e9 / factor);
        let next_at = self
            .recording
            .entries
            .get(self.next)
            .map(entry_offset)
            .unwrap_or(self.end_ns);
        // Wake for the next entry or tick, whichever is first.
        let hold = self.hold_ns.max(self.clock_ns);
        let wake = next_at.min(self.next_tick_ns).min(self.end_ns).min(hold);
        tokio::time::sleep_until(due(wake).into()).await;
        let elapsed = started.elapsed().as_secs_f64() * factor;
        let target = ((elapsed * 1e9) as u64)
            .clamp(wake, self.end_ns.max(wake))
            .min(hold);
        Ok(Batch::Records(self.advance_to(target, pipeline, found)))
    }
}

fn entry_offset(e: &Entry) -> u64 {
    match e {
        Entry::Record { offset_ns, .. }
        | Entry::Lost { offset_ns, .. }
        | Entry::End { offset_ns } => *offset_ns,
        Entry::Stack { .. } => 0,
    }
}

/// One live record: written to the recording (the first error kept) and fed.
fn record_and_feed(
    recorder: &mut Option<Recorder>,
    failed: &mut Option<RecordError>,
    pipeline: &mut Pipeline,
    found: &mut Vec<Finding>,
    record: &[u8],
) {
    if let Some(rec) = recorder.as_mut() {
        if let Err(e) = rec.record(monotonic_ns(), record) {
            failed.get_or_insert(e);
        }
    }
    pipeline.feed(record, found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ledger::{FindingKind, Ledger, LedgerConfig},
        synth::{demo, MS},
        trace::record::Recorder,
    };

    fn recording(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("demo.ptrec");
        let s = demo(1_000 * MS, 2);
        let header = Header {
            start_ns: 1_000 * MS,
            start_unix_ms: 0,
            flags: s.flags,
            kernel: "6.12.0-test".into(),
            plan: "plan".into(),
        };
        let mut rec = Recorder::create(&path, &header).unwrap();
        for (ts, r) in &s.records {
            rec.record(*ts, r).unwrap();
        }
        rec.finish(s.ts + 3_000 * MS).unwrap();
        path
    }

    async fn replay(path: &Path, speed: Speed) -> (Pipeline, Vec<Finding>, Source) {
        let mut src = Source::replay(path, speed).unwrap();
        let mut p = Pipeline::new(Ledger::new(src.meta().flags, LedgerConfig::default()));
        p.model.start(src.meta().start_ns);
        let mut found = Vec::new();
        while src.next_batch(&mut p, &mut found).await.unwrap() != Batch::End {}
        (p, found, src)
    }

    #[tokio::test(start_paused = true)]
    async fn replays_are_the_same_at_any_speed() {
        let dir = tempfile::tempdir().unwrap();
        let path = recording(dir.path());
        let (max, f_max, src) = replay(&path, Speed::Max).await;
        assert_eq!(src.meta().kernel, "6.12.0-test");
        assert!(src.meta().mode.contains("demo.ptrec"));
        // The unpin of a FOLL_GET page, found on the way.
        assert_eq!(
            f_max.iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![FindingKind::UnpinOfGetPage]
        );
        // Time is paused: the recorded pace costs no wall-clock time here.
        let (rec, f_rec, src) = replay(&path, Speed::Recorded).await;
        assert_eq!(f_rec, f_max);
        assert_eq!(rec.ledger.tally.events, max.ledger.tally.events);
        assert_eq!(rec.model.rates(), max.model.rates());
        assert_eq!(
            rec.model.outstanding_series(),
            max.model.outstanding_series()
        );
        // The clock ends at the recorded end, 3 s after the last record.
        assert_eq!(src.now_ns(), 1_000 * MS + src_duration(&path));
        let (ten, f_ten, _) = replay(&path, Speed::Times(10.0)).await;
        assert_eq!(f_ten, f_max);
        assert_eq!(ten.model.rates(), max.model.rates());
    }

    fn src_duration(path: &Path) -> u64 {
        Recording::load(path).unwrap().duration_ns()
    }

    /// A recording whose stacks still hold the probe's frames (as the kept
    /// capture in tests/data does) replays with them dropped, as live.
    #[test]
    fn a_replay_drops_the_probes_frames_as_a_live_run_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.ptrec");
        let header = Header {
            start_ns: 1_000 * MS,
            start_unix_ms: 0,
            flags: crate::kernel::flags::FollFlags::FROM_6_3,
            kernel: "6.12.0-test".into(),
            plan: "plan".into(),
        };
        let mut rec = Recorder::create(&path, &header).unwrap();
        let frames = [
            "bpf_prog_50dd19e3348aa70f_fexit_pin_user_pages_fast+0x18c",
            "bpf_trampoline_6442489887+0x7c",
            "pin_user_pages_fast+0x9",
            "pinzoo_ioctl+0x6ab [pinzoo]",
        ];
        rec.stack(4, frames.map(String::from).to_vec()).unwrap();
        rec.finish(2_000 * MS).unwrap();
        let src = Source::replay(&path, Speed::Max).unwrap();
        assert_eq!(
            src.stack(4),
            without_probe_frames(frames.map(String::from)),
            "the one rule for both"
        );
        assert_eq!(
            src.stack(4),
            ["pin_user_pages_fast+0x9", "pinzoo_ioctl+0x6ab [pinzoo]"]
        );
        assert!(src.stack(5).is_empty());
    }

    #[test]
    fn speeds_parse() {
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("recorded".parse(), Ok(Speed::Recorded));
        assert_eq!("2.5".parse(), Ok(Speed::Times(2.5)));
        assert!("0".parse::<Speed>().unwrap_err().contains("`0`"));
        assert!("fast".parse::<Speed>().is_err());
    }
}
