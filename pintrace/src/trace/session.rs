//! A tracing session: start-up, the plan attached, the ring buffer watched by
//! tokio, the loss counters and stack resolution. `run`, `check` and `top`
//! each hold one; none of them touches aya directly.

use crate::{
    kernel::caps::{self, Caps},
    kernel::flags::FollFlags,
    kernel::symbols::{without_probe_frames, KernelSymbolizer},
    trace::books::{BooksReader, Reading},
    trace::plan::{Plan, Preference},
    trace::probes::{EventSource, Probes},
    trace::startup::{ProbeSettings, Startup},
};
use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use tokio::io::{unix::AsyncFd, Interest};

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub attach: Preference,
    pub ringbuf_mib: u32,
    /// Forward the probes' diagnostics (aya-log) to the log.
    pub verbose: bool,
    pub wakeup: Wakeup,
    pub stacks: Stacks,
    /// Watch the bios and block completions (off with `--no-bio`).
    pub bios: bool,
    /// A record per completed block request (for `--events` and
    /// `--record`); otherwise the probe only counts them per CPU.
    pub rq_records: bool,
    /// Watch only these processes (`run -p`), filtered in the kernel; empty:
    /// every process.
    pub pids: Vec<u32>,
    /// Keep the books in the kernel for at most this many folios (the
    /// default; `--books-max`); `None`: every event is a record (`--events`,
    /// `--record`, `check`).
    pub books_max: Option<u32>,
}

/// Which events carry a kernel stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Stacks {
    /// Every acquire and every release: exact, and the probes' main cost
    /// (a kernel unwind per event).
    All,
    /// On each CPU, at most one stack per millisecond for each process and
    /// acquire site, and for each releasing process: every event at low
    /// rates (a process's first pin at a site always has one), a bounded
    /// cost at high ones. An unpin the folio's refcount
    /// shows to be wrong always takes its stack. Events without one say so.
    #[default]
    Sampled,
    /// No stacks.
    None,
}

/// The interval of [`Stacks::Sampled`] (its doc comment is `--help` text,
/// which names the value: keep the two equal).
pub const SAMPLED_STACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

impl Stacks {
    /// The probes' `STACK_INTERVAL_NS`.
    pub fn interval_ns(self) -> u64 {
        match self {
            Stacks::All => 0,
            Stacks::Sampled => SAMPLED_STACK_INTERVAL.as_nanos() as u64,
            Stacks::None => u64::MAX,
        }
    }
}

/// When the kernel wakes the agent for new records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Wakeup {
    /// The kernel's default: a wake-up for the first record the agent has
    /// not caught up with, so an idle agent wakes for nearly every record
    /// at low rates.
    Eager,
    /// Records go in without a wake-up until an eighth of the ring buffer
    /// waits; the agent also drains every [`POLL_INTERVAL`].
    #[default]
    Batched,
}

/// The cause under which [`Session::lost`] counts program runs the kernel
/// skipped because a program was already running on the CPU (an unpin in
/// an interrupt that came while a probe ran in the task below it).
pub const RECURSION_MISSES: &str = "recursion_misses";

/// How often a batched session drains the ring buffer without a wake-up.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Probes attached and their ring buffer registered with the running tokio
/// reactor. Dropping it detaches everything.
pub struct Session {
    pub caps: Caps,
    pub plan: Plan,
    pub flags: FollFlags,
    /// What start-up did to the system (mounting tracefs), for the record.
    pub actions: Vec<String>,
    ring: AsyncFd<EventSource>,
    wakeup: Wakeup,
    probes: Probes,
    /// One for the session: it caches kallsyms.
    symbols: KernelSymbolizer,
    /// With the kernel books on: what was read of them last.
    pub books: Option<BooksReader>,
}

/// The way out for `command` on a kernel it cannot trace. The installed
/// binary has no xtask: the QEMU harness is named as the repository's.
fn no_plan_advice(command: &str) -> String {
    if command == "check" {
        "pintrace check judges the running kernel, so run it on one that has them; from a \
         checkout of pintrace's repository, `cargo xtask check-kernel` boots a Debian kernel \
         that has them (or a kernel of yours: --kernel PATH) in QEMU and runs the check there"
            .into()
    } else {
        format!(
            "Run it on a kernel that has them (from a checkout of pintrace's repository, \
             `cargo xtask vm -- pintrace {command} ...` runs it in QEMU on one); here, \
             `pintrace run --vmstat-only` still checks the balance of the kernel's own pin \
             counters"
        )
    }
}

impl Session {
    /// Detects, loads, plans and attaches. Must be called inside a tokio
    /// runtime with I/O enabled.
    pub fn start(opts: &SessionOptions, command: &str) -> Result<Session> {
        if let caps::Availability::No(why) = caps::privileges() {
            bail!("pintrace {command}: {why}");
        }
        let settings = ProbeSettings {
            ringbuf_bytes: opts.ringbuf_mib << 20,
            verbose: opts.verbose,
            wakeup_bytes: match opts.wakeup {
                Wakeup::Eager => 0,
                Wakeup::Batched => (opts.ringbuf_mib << 20) / 8,
            },
            stack_interval_ns: opts.stacks.interval_ns(),
            rq_records: opts.rq_records,
            pids: opts.pids.clone(),
            books_max: opts.books_max,
        };
        let mut s = Startup::run(opts.attach, &settings)?;
        let mut plan = s
            .plan
            .map_err(|e| anyhow::anyhow!("{e}\n{}", no_plan_advice(command)))?;
        if !opts.bios {
            plan.leave_bios_off("--no-bio");
        }
        let mut probes = s.probes.take().context("probes were not loaded")?;
        let kprobe_fallback = opts.attach != Preference::Fentry && s.caps.kprobes.is_yes();
        probes.attach(&mut plan, kprobe_fallback)?;
        let events = probes.take_events()?;
        // SAFETY: EventSource owns the ring buffer map, whose fd stays open
        // and unchanged until the AsyncFd (which owns the EventSource) drops.
        let ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
        Ok(Session {
            flags: s.caps.flags.flags,
            caps: s.caps,
            plan,
            actions: s.actions,
            ring,
            wakeup: opts.wakeup,
            probes,
            symbols: KernelSymbolizer::running(),
            books: opts.books_max.map(BooksReader::new),
        })
    }

    /// Waits until the ring buffer has records, then hands each to `f`.
    /// Batched sessions also look every [`POLL_INTERVAL`], since the
    /// probes wake the agent only when the ring fills up.
    /// Cancel-safe: use it as a `tokio::select!` branch.
    pub async fn next_batch(&mut self, mut f: impl FnMut(&[u8])) -> Result<usize> {
        loop {
            let ready = match self.wakeup {
                Wakeup::Eager => Some(self.ring.readable_mut().await),
                Wakeup::Batched => tokio::time::timeout(POLL_INTERVAL, self.ring.readable_mut())
                    .await
                    .ok(),
            };
            let n = match ready {
                Some(guard) => {
                    let mut guard = guard.context("waiting for events")?;
                    let n = guard.get_inner_mut().drain(&mut f);
                    guard.clear_ready();
                    n
                }
                None => self.ring.get_mut().drain(&mut f),
            };
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Hands every record already in the ring buffer to `f`, without waiting.
    pub fn drain(&mut self, f: impl FnMut(&[u8])) -> usize {
        self.ring.get_mut().drain(f)
    }

    /// Events the kernel side could not deliver so far, by cause: the
    /// probes' own loss counters and the kernel's count of program runs it
    /// skipped ([`RECURSION_MISSES`]).
    pub fn lost(&self) -> Result<BTreeMap<&'static str, u64>> {
        let counters = self.probes.counters()?;
        // A skipped run its site's second program sent in its place is not
        // lost (see the sites' `again`).
        let recovered =
            crate::trace::probes::counter(&counters, pintrace_common::Counter::Recovered);
        // A skipped `block:block_rq_complete` loses one request from the
        // `completions` counts, which no finding rests on: it shows in the
        // summary's `recursion.skipped`, not as a lost event.
        let skipped: u64 = self
            .probes
            .recursion_misses()
            .iter()
            .filter(|(program, _)| program.as_str() != pintrace_common::PROG_RQ_COMPLETE)
            .map(|(_, n)| n)
            .sum();
        let mut lost: BTreeMap<&'static str, u64> = counters
            .into_iter()
            .filter(|(c, _)| c.is_loss())
            .map(|(c, v)| (c.name(), v))
            .collect();
        lost.insert(RECURSION_MISSES, skipped.saturating_sub(recovered));
        Ok(lost)
    }

    /// The runs the kernel skipped, by program (their sites' second
    /// programs sent [`pintrace_common::Counter::Recovered`] of them).
    pub fn recursion_skipped(&self) -> BTreeMap<String, u64> {
        self.probes.recursion_misses()
    }

    /// Reads the kernel books into the pipeline (a no-op without them):
    /// their counts, and a snapshot of the open books when due or
    /// `forced`. Books whose pins the ledger found gone are dropped.
    pub fn sync_books(
        &mut self,
        pipeline: &mut crate::stream::pipeline::Pipeline,
        found: &mut Vec<crate::ledger::Finding>,
        forced: bool,
    ) -> Result<()> {
        let Some(reader) = self.books.as_mut() else {
            return Ok(());
        };
        let now_ns = monotonic_ns();
        let (mut releases, mut bios) = ((0, 0), (0, 0));
        for (c, v) in self.probes.counters()? {
            match c {
                pintrace_common::Counter::BookedReleases => releases.0 = v,
                pintrace_common::Counter::BookedReleaseRefs => releases.1 = v,
                pintrace_common::Counter::BiosFilled => bios.0 = v,
                pintrace_common::Counter::BiosReleased => bios.1 = v,
                _ => {}
            }
        }
        let books = reader
            .snapshot_due(now_ns, forced)
            .then(|| self.probes.books())
            .transpose()?;
        let reading = Reading {
            now_ns,
            tally: self.probes.tally()?,
            lifetimes: self.probes.lifetimes()?,
            releases,
            bios,
            memory: books.as_ref().and_then(|_| self.probes.books_memory()),
            books,
        };
        reader.apply(reading, pipeline, found);
        let drops = pipeline.ledger.take_kernel_drops();
        if !drops.is_empty() {
            self.probes.drop_books(&drops)?;
        }
        Ok(())
    }

    /// The probes' counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(pintrace_common::Counter, u64)>> {
        self.probes.counters()
    }

    /// Block requests the probe counted without a record (per-CPU totals).
    pub fn completions(&self) -> Result<crate::ledger::Completions> {
        let mut c = crate::ledger::Completions::default();
        for (counter, v) in self.probes.counters()? {
            match counter {
                pintrace_common::Counter::RqRequests => c.requests = v,
                pintrace_common::Counter::RqSectors => c.sectors = v,
                pintrace_common::Counter::RqErrors => c.errors = v,
                _ => {}
            }
        }
        Ok(c)
    }

    /// Reads the refcounts of `folios` in the kernel now; `None` when this
    /// kernel has no syscall tracepoints to run the audit from.
    pub fn audit(&mut self, folios: &[u64]) -> Result<Option<Vec<pintrace_common::AuditSlot>>> {
        self.probes.audit(folios)
    }

    /// A kernel stack by id, symbolized, without the probe's own frames
    /// (empty when unknown or evicted).
    pub fn stack(&self, id: i32) -> Vec<String> {
        let addrs = self.probes.stack(id).unwrap_or_default();
        without_probe_frames(self.symbols.frames(&addrs))
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampled_interval_is_the_one_its_help_names() {
        assert_eq!(SAMPLED_STACK_INTERVAL, std::time::Duration::from_millis(1));
    }

    #[test]
    fn check_on_a_kernel_it_cannot_trace_points_at_check_kernel_not_at_vm() {
        let check = no_plan_advice("check");
        assert!(check.contains("cargo xtask check-kernel"), "{check}");
        assert!(check.contains("repository"), "{check}");
        assert!(
            !check.contains("xtask vm") && !check.contains("vmstat-only"),
            "{check}"
        );
        let run = no_plan_advice("run");
        assert!(run.contains("cargo xtask vm -- pintrace run"), "{run}");
        assert!(run.contains("--vmstat-only"), "{run}");
    }
}
