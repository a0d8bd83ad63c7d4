//! The probes: loading the eBPF object and attaching it as the plan says.
//! This is the only module that speaks aya; what leaves it is raw records
//! (through [`EventSource`]) and plain counters.

use crate::{
    kernel::caps::{Availability, RqCompleteLayout},
    kernel::layout::StructOffsets,
    trace::plan::{Method, Plan},
};
use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
    programs::{FEntry, FExit, KProbe, TracePoint},
    Btf, Ebpf, EbpfLoader, VerifierLogLevel,
};
use pintrace_common::{
    ArgLayout, AuditSlot, Book, Counter, Site, TallyCounts, TallyKey, AUDIT_MAP, AUDIT_SLOTS,
    BOOKS_MAP, COUNTERS_MAP, EVENTS_MAP, FILTER_FOLIOS_MAP, FILTER_MAX_FOLIOS, FILTER_MAX_TGIDS,
    FILTER_TGIDS_MAP, GLOBAL_ARG_LAYOUTS, GLOBAL_AUDIT_TGID, GLOBAL_BDEV_DEV_OFF,
    GLOBAL_BIO_BDEV_OFF, GLOBAL_BIO_FLAGS_OFF, GLOBAL_BIO_OPF_OFF, GLOBAL_BIO_RECORDS,
    GLOBAL_BIO_SECTOR_OFF, GLOBAL_BIO_SIZE_OFF, GLOBAL_BIO_STATUS_OFF, GLOBAL_BOOKS_ON,
    GLOBAL_FILTER, GLOBAL_FOLIO_REFCOUNT_OFF, GLOBAL_FOLL_LONGTERM, GLOBAL_FOLL_PIN,
    GLOBAL_PAGE_COMPOUND_HEAD_OFF, GLOBAL_PAGE_SIZEOF, GLOBAL_RB_WAKEUP_BYTES,
    GLOBAL_REQ_BIOTAIL_OFF, GLOBAL_RQ_DEV_OFF, GLOBAL_RQ_ERROR_OFF, GLOBAL_RQ_NR_SECTOR_OFF,
    GLOBAL_RQ_RECORDS, GLOBAL_RQ_SECTOR_OFF, GLOBAL_STACK_INTERVAL_NS, LIFETIMES_MAP,
    LIFETIME_BUCKETS, PROG_AUDIT, PROG_PROCESS_EXIT, PROG_RQ_COMPLETE, SITE_SLOTS, STACKS_MAP,
    TALLY_MAP, TALLY_MAX,
};
use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, AsRawFd, RawFd};

mod batch;
mod info;

pub mod bench;
#[cfg(test)]
mod tests;

/// The compiled probes, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pintrace"));

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ringbuf_bytes: u32,
    pub rq_layout: Option<RqCompleteLayout>,
    pub struct_offsets: StructOffsets,
    /// Forward the probes' aya-log diagnostics to the `log` crate.
    pub verbose: bool,
    /// Submit records without waking the reader until this many bytes wait
    /// (0: the kernel wakes it for the first record it has not caught up
    /// with). The reader must then also drain on a timer.
    pub wakeup_bytes: u32,
    /// `STACK_INTERVAL_NS` (see [`crate::trace::session::Stacks`]).
    pub stack_interval_ns: u64,
    /// This kernel's FOLL_PIN (set by start-up): an unpin that the folio's
    /// refcount shows cannot be right takes its stack even when sampling.
    pub foll_pin: u32,
    /// 1: a record per completed block request; 0: per-CPU totals only.
    pub rq_records: u32,
    /// Watch only these processes, in the kernel (see `pintrace_common::GLOBAL_FILTER`);
    /// empty: all of them.
    pub pids: Vec<u32>,
    /// Where each site's arguments are (`ARG_LAYOUTS`, by site value).
    pub arg_layouts: [ArgLayout; SITE_SLOTS],
    /// This kernel's FOLL_LONGTERM, for the kernel books' kinds.
    pub foll_longterm: u32,
    /// Keep the books in the kernel, for at most this many folios
    /// (`--books-max`); `None`: every event is a record.
    pub books_max: Option<u32>,
    /// See `pintrace_common::GLOBAL_BIO_RECORDS`.
    pub bio_records: u32,
}

pub struct Probes {
    ebpf: Ebpf,
    btf: Option<Btf>,
    /// The refcount audit program is attached.
    audit_ready: bool,
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// The data of the map `name`.
fn map_data<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a MapData> {
    match ebpf.map(name) {
        Some(Map::HashMap(d)) => Ok(d),
        Some(_) => bail!("{name} is not a hash map"),
        None => bail!("the eBPF object has no {name} map"),
    }
}

/// Raises RLIMIT_MEMLOCK for kernels that still account BPF memory there.
/// Kernels from 5.11 account it to the cgroup, so failing is only a warning.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::info!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels from 5.11",
            std::io::Error::last_os_error()
        );
    }
}

/// A filter map's size: 1 (the least a map can have) without a filter.
fn filter_size(opts: &LoadOptions, full: u32) -> u32 {
    if opts.pids.is_empty() {
        1
    } else {
        full
    }
}

/// Fills the probes' set of watched processes.
fn watch_only(ebpf: &mut Ebpf, pids: &[u32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    if pids.len() > FILTER_MAX_TGIDS as usize {
        anyhow::bail!(
            "-p/--pid names {} processes; the probes watch at most {FILTER_MAX_TGIDS}",
            pids.len()
        );
    }
    let mut map: HashMap<_, u32, u32> = HashMap::try_from(
        ebpf.map_mut(FILTER_TGIDS_MAP)
            .context("the probes have no process filter map")?,
    )?;
    for &pid in pids {
        map.insert(pid, 1, 0)
            .with_context(|| format!("adding pid {pid} to the probes' filter"))?;
    }
    Ok(())
}

impl Probes {
    pub fn load(opts: &LoadOptions) -> Result<Probes> {
        raise_memlock();
        let btf = Btf::from_sys_fs().ok();
        let layout = opts.rq_layout.unwrap_or(RqCompleteLayout {
            dev: 8,
            sector: 16,
            nr_sector: 24,
            error: 28,
        });
        let so = &opts.struct_offsets;
        // Without BTF the bio probes stay off (the plan says so); their
        // globals keep the object's defaults.
        let bio = so
            .bio
            .unwrap_or(crate::kernel::layout::BioOffsets::FALLBACK);
        let mut ebpf = EbpfLoader::new()
            .btf(btf.as_ref())
            .override_global(GLOBAL_BIO_BDEV_OFF, &bio.bdev, true)
            .override_global(GLOBAL_BIO_OPF_OFF, &bio.opf, true)
            .override_global(GLOBAL_BIO_FLAGS_OFF, &bio.flags, true)
            .override_global(GLOBAL_BIO_STATUS_OFF, &bio.status, true)
            .override_global(GLOBAL_BIO_SECTOR_OFF, &bio.sector, true)
            .override_global(GLOBAL_BIO_SIZE_OFF, &bio.size, true)
            .override_global(GLOBAL_BDEV_DEV_OFF, &bio.bdev_dev, true)
            .override_global(GLOBAL_REQ_BIOTAIL_OFF, &bio.req_biotail, true)
            .map_max_entries(EVENTS_MAP, opts.ringbuf_bytes)
            // The verifier's log only with -v: a failed load is retried
            // with the log on, and under emulation a logged verification of
            // the acquire program takes minutes.
            .verifier_log_level(if opts.verbose {
                VerifierLogLevel::DEBUG | VerifierLogLevel::STATS
            } else {
                VerifierLogLevel::DISABLE
            })
            .override_global(GLOBAL_RQ_DEV_OFF, &layout.dev, true)
            .override_global(GLOBAL_RQ_SECTOR_OFF, &layout.sector, true)
            .override_global(GLOBAL_RQ_NR_SECTOR_OFF, &layout.nr_sector, true)
            .override_global(GLOBAL_RQ_ERROR_OFF, &layout.error, true)
            .override_global(
                GLOBAL_PAGE_COMPOUND_HEAD_OFF,
                &opts.struct_offsets.page_compound_head,
                true,
            )
            .override_global(
                GLOBAL_FOLIO_REFCOUNT_OFF,
                &opts.struct_offsets.folio_refcount,
                true,
            )
            .override_global(GLOBAL_PAGE_SIZEOF, &opts.struct_offsets.page_sizeof, true)
            .override_global(GLOBAL_AUDIT_TGID, &std::process::id(), true)
            .override_global(GLOBAL_RB_WAKEUP_BYTES, &opts.wakeup_bytes, true)
            .override_global(GLOBAL_STACK_INTERVAL_NS, &opts.stack_interval_ns, true)
            .override_global(GLOBAL_FOLL_PIN, &opts.foll_pin, true)
            .override_global(GLOBAL_FOLL_LONGTERM, &opts.foll_longterm, true)
            .override_global(GLOBAL_BOOKS_ON, &(opts.books_max.is_some() as u32), true)
            .override_global(GLOBAL_BIO_RECORDS, &opts.bio_records, true)
            // The books map allocates as it fills; the tally map up front,
            // so it is full-size only with the books on.
            .map_max_entries(BOOKS_MAP, opts.books_max.unwrap_or(1).max(1))
            .map_max_entries(
                TALLY_MAP,
                if opts.books_max.is_some() {
                    TALLY_MAX
                } else {
                    1
                },
            )
            .override_global(GLOBAL_RQ_RECORDS, &opts.rq_records, true)
            .override_global(GLOBAL_ARG_LAYOUTS, &opts.arg_layouts, true)
            .override_global(GLOBAL_FILTER, &(!opts.pids.is_empty() as u32), true)
            // The filter's maps are kernel memory allocated up front: their
            // full size only when there is a filter.
            .map_max_entries(FILTER_TGIDS_MAP, filter_size(opts, FILTER_MAX_TGIDS))
            .map_max_entries(FILTER_FOLIOS_MAP, filter_size(opts, FILTER_MAX_FOLIOS))
            .load(OBJECT)
            .context("loading the eBPF object (maps)")?;
        watch_only(&mut ebpf, &opts.pids)?;
        let logger = if opts.verbose {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    log::debug!("no probe diagnostics: {e}");
                    None
                }
            }
        } else {
            None
        };
        Ok(Probes {
            ebpf,
            btf,
            audit_ready: false,
            _logger: logger,
        })
    }

    /// Whether fentry/fexit tracing programs load on this kernel: tries to
    /// load (not attach) the fexit program of the first present site.
    pub fn probe_fentry(&mut self, symbol: &str) -> Availability {
        let Some(btf) = self.btf.as_ref() else {
            return Availability::No("no kernel BTF (/sys/kernel/btf/vmlinux)".into());
        };
        let Some(site) = Site::ALL.into_iter().find(|s| s.symbol() == symbol) else {
            return Availability::Unknown(format!("no fexit program for {symbol}"));
        };
        let name = site.programs().trampoline;
        let result = (|| -> Result<()> {
            let prog: &mut FExit = program(&mut self.ebpf, name)?.try_into()?;
            prog.load(symbol, btf)
                .with_context(|| format!("loading fexit program {name} on {symbol}"))?;
            Ok(())
        })();
        match result {
            Ok(()) => Availability::Yes,
            Err(e) => Availability::No(format!("{e:#}")),
        }
    }

    /// Attaches every probe of the plan. Nothing is attached twice: each site
    /// gets either its fexit program or its kprobe pair. A site whose fentry/fexit
    /// program loads but does not attach (6.1 trampolines take at most six
    /// arguments) falls back to kprobes when `kprobe_fallback` allows, and
    /// the plan is updated to say so.
    pub fn attach(&mut self, plan: &mut Plan, kprobe_fallback: bool) -> Result<()> {
        // Everything that observes an end (process exits, block completions,
        // bios, releases) goes in before the acquires: every acquire seen
        // then has its end seen too. The other way round, a pin taken and
        // released while only the acquire probes were attached would stay in
        // the books as held, and the end-of-run audit would take its missing
        // pin for one released with put_page.
        let exit: &mut TracePoint = program(&mut self.ebpf, PROG_PROCESS_EXIT)?.try_into()?;
        exit.load()
            .context("loading the sched_process_exit program")?;
        exit.attach("sched", "sched_process_exit")
            .context("attaching to sched:sched_process_exit")?;
        // The refcount audit is an extra: without syscall tracepoints
        // (CONFIG_FTRACE_SYSCALLS) the run goes on without it.
        let audit: &mut TracePoint = program(&mut self.ebpf, PROG_AUDIT)?.try_into()?;
        self.audit_ready = match audit
            .load()
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(audit.attach("syscalls", "sys_enter_getppid")?))
        {
            Ok(_) => true,
            Err(e) => {
                log::info!("no refcount audit (syscalls:sys_enter_getppid): {e:#}");
                false
            }
        };
        if plan.rq_complete.is_some() {
            let prog: &mut TracePoint = program(&mut self.ebpf, PROG_RQ_COMPLETE)?.try_into()?;
            prog.load()
                .context("loading the block_rq_complete program")?;
            prog.attach("block", "block_rq_complete")
                .context("attaching to block:block_rq_complete")?;
        }
        let order = plan
            .sites
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.acquire)
            .chain(plan.sites.iter().enumerate().filter(|(_, s)| s.acquire))
            .map(|(i, _)| i)
            .collect::<Vec<_>>();
        for i in order {
            let site = &mut plan.sites[i];
            let Some(method) = site.method else { continue };
            match self.attach_site(site.id, site.symbol, method) {
                Ok(()) => {}
                Err(e)
                    if method == Method::Trampoline
                        && kprobe_fallback
                        && site.kprobe_misfit().is_none() =>
                {
                    let why = format!("{e:#}");
                    self.attach_site(site.id, site.symbol, Method::Kprobe)
                        .with_context(|| format!("after {why}"))?;
                    log::info!("{}: kprobes instead of fentry/fexit: {why}", site.symbol);
                    site.method = Some(Method::Kprobe);
                    site.programs = Method::Kprobe.program_kind(site.id);
                    site.reason = format!("fentry/fexit did not attach ({why})");
                }
                Err(e) if method == Method::Trampoline => {
                    // Only fentry/fexit allowed (--attach fentry), or a
                    // kprobe cannot read its arguments: the site goes
                    // unwatched, and the plan says so.
                    let why = match site.kprobe_misfit().filter(|_| kprobe_fallback) {
                        Some(misfit) => format!("{e:#}; no kprobe instead: {misfit}"),
                        None => format!("{e:#}"),
                    };
                    log::warn!("{} is not watched: {why}", site.symbol);
                    site.method = None;
                    site.programs = "off";
                    site.reason = format!("fentry/fexit did not attach ({why})");
                }
                Err(e) if site.id.is_bio() => {
                    // Bio association is an extra: the run goes on without it.
                    let why = format!("{e:#}");
                    log::warn!("{} is not watched: {why}", site.symbol);
                    site.method = None;
                    site.programs = "off";
                    site.reason = why;
                }
                Err(e) => return Err(e),
            }
        }
        if !plan.sites.iter().any(|s| s.acquire && s.method.is_some()) {
            bail!("no acquire site could be attached: {}", plan.summary());
        }
        Ok(())
    }

    fn attach_site(&mut self, id: Site, symbol: &str, method: Method) -> Result<()> {
        let progs = id.programs();
        match method {
            Method::Trampoline => {
                let btf = self
                    .btf
                    .as_ref()
                    .ok_or_else(|| anyhow!("fentry/fexit need kernel BTF"))?;
                let name = progs.trampoline;
                let what = || format!("{name} on {symbol}");
                if let Some(entry) = progs.trampoline_entry {
                    let prog: &mut FEntry = program(&mut self.ebpf, entry)?.try_into()?;
                    if prog.fd().is_err() {
                        prog.load(symbol, btf)
                            .with_context(|| format!("loading {entry} on {symbol}"))?;
                    }
                    prog.attach()
                        .with_context(|| format!("attaching {entry} on {symbol}"))?;
                }
                if progs.trampoline_is_exit {
                    let prog: &mut FExit = program(&mut self.ebpf, name)?.try_into()?;
                    if prog.fd().is_err() {
                        prog.load(symbol, btf)
                            .with_context(|| format!("loading {}", what()))?;
                    }
                    prog.attach()
                        .with_context(|| format!("attaching {}", what()))?;
                } else {
                    let prog: &mut FEntry = program(&mut self.ebpf, name)?.try_into()?;
                    if prog.fd().is_err() {
                        prog.load(symbol, btf)
                            .with_context(|| format!("loading {}", what()))?;
                    }
                    prog.attach()
                        .with_context(|| format!("attaching {}", what()))?;
                }
                if let Some(again) = progs.again {
                    // Without it the site still works; its nested calls
                    // are then only counted as lost, as they were.
                    let second = (|| -> Result<()> {
                        let prog: &mut FEntry = program(&mut self.ebpf, again)?.try_into()?;
                        if prog.fd().is_err() {
                            prog.load(symbol, btf)?;
                        }
                        prog.attach()?;
                        Ok(())
                    })();
                    if let Err(e) = second {
                        log::warn!(
                            "{symbol}: its second program ({again}) did not attach, so calls \
                             an interrupt makes while its first runs are lost (counted): {e:#}"
                        );
                    }
                }
            }
            Method::Kprobe => {
                for name in std::iter::once(progs.kprobe).chain(progs.kretprobe) {
                    let prog: &mut KProbe = program(&mut self.ebpf, name)?.try_into()?;
                    prog.load().with_context(|| format!("loading {name}"))?;
                    prog.attach(symbol, 0)
                        .with_context(|| format!("attaching {name} to {symbol}"))?;
                }
            }
        }
        Ok(())
    }

    /// Takes the ring buffer out, for the reader task.
    pub fn take_events(&mut self) -> Result<EventSource> {
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .ok_or_else(|| anyhow!("the eBPF object has no {EVENTS_MAP} map"))?;
        Ok(EventSource {
            ring: RingBuf::try_from(map)?,
        })
    }

    /// The probes' counters, summed over CPUs, in [`Counter::ALL`] order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or_else(|| anyhow!("the eBPF object has no {COUNTERS_MAP} map"))?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Counter::ALL
            .iter()
            .map(|&c| {
                let values = array.get(&(c as u32), 0)?;
                Ok((c, values.iter().sum()))
            })
            .collect()
    }

    /// The kernel books now: every folio's [`Book`] (escalated ones too).
    pub fn books(&self) -> Result<Vec<(u64, Book)>> {
        let data = map_data(&self.ebpf, BOOKS_MAP)?;
        batch::lookup_all::<u64, Book>(data.fd().as_fd())
            .map_err(|e| anyhow!("reading the kernel books ({BOOKS_MAP}): {e}"))
    }

    /// Deletes the kernel books of `folios` (pins the ledger knows left
    /// without an unpin).
    pub fn drop_books(&mut self, folios: &[u64]) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(BOOKS_MAP)
            .ok_or_else(|| anyhow!("the eBPF object has no {BOOKS_MAP} map"))?;
        let mut books: HashMap<&mut MapData, u64, Book> = HashMap::try_from(map)?;
        for f in folios {
            // Gone already (unpinned meanwhile): nothing to drop.
            let _ = books.remove(f);
        }
        Ok(())
    }

    /// The kernel memory the books take now, as the kernel accounts it
    /// (`memlock` of the map's fdinfo), in bytes.
    pub fn books_memory(&self) -> Option<u64> {
        let data = map_data(&self.ebpf, BOOKS_MAP).ok()?;
        let fd = data.fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The kernel tally: counts by key, summed over CPUs (each key's
    /// `comm` from the first CPU that has one).
    pub fn tally(&self) -> Result<Vec<(TallyKey, TallyCounts)>> {
        let map = self
            .ebpf
            .map(TALLY_MAP)
            .ok_or_else(|| anyhow!("the eBPF object has no {TALLY_MAP} map"))?;
        let tally: PerCpuHashMap<&MapData, TallyKey, TallyCounts> = PerCpuHashMap::try_from(map)?;
        let mut out = Vec::new();
        for entry in tally.iter() {
            // A key deleted meanwhile ends nothing: the map only grows.
            let (key, per_cpu) = entry?;
            let mut sum = TallyCounts::default();
            for c in per_cpu.iter() {
                sum.calls += c.calls;
                sum.pages += c.pages;
                sum.failed += c.failed;
                sum.released += c.released;
                sum.release_calls += c.release_calls;
                if sum.comm[0] == 0 {
                    sum.comm = c.comm;
                }
            }
            out.push((key, sum));
        }
        Ok(out)
    }

    /// The booked pins' lifetimes: references per bucket, FOLL_PIN's then
    /// long-term's, summed over CPUs.
    pub fn lifetimes(&self) -> Result<Vec<u64>> {
        let map = self
            .ebpf
            .map(LIFETIMES_MAP)
            .ok_or_else(|| anyhow!("the eBPF object has no {LIFETIMES_MAP} map"))?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        (0..2 * LIFETIME_BUCKETS)
            .map(|i| Ok(array.get(&i, 0)?.iter().sum()))
            .collect()
    }

    /// Runs of the loaded programs the kernel skipped because the program
    /// was already running on that CPU (an interrupt's release nested in a
    /// task's probe), by program. The sites' second programs are left out:
    /// one of theirs skipped means their first ran.
    pub fn recursion_misses(&self) -> BTreeMap<String, u64> {
        let seconds: Vec<&str> = Site::ALL
            .iter()
            .filter_map(|s| s.programs().again)
            .collect();
        self.ebpf
            .programs()
            .filter(|(name, _)| !seconds.contains(name))
            .filter_map(|(name, p)| Some((name, p.fd().ok()?)))
            .map(|(name, fd)| (name.to_string(), info::recursion_misses(fd.as_fd())))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

impl Probes {
    /// Reads the refcount of each folio now (and whether it is large), in
    /// the kernel; `None` when the audit program could not be attached.
    pub fn audit(&mut self, folios: &[u64]) -> Result<Option<Vec<AuditSlot>>> {
        if !self.audit_ready {
            return Ok(None);
        }
        let map = self
            .ebpf
            .map_mut(AUDIT_MAP)
            .ok_or_else(|| anyhow!("the eBPF object has no {AUDIT_MAP} map"))?;
        let mut array: Array<&mut MapData, AuditSlot> = Array::try_from(map)?;
        let mut out = Vec::with_capacity(folios.len());
        for chunk in folios.chunks(AUDIT_SLOTS as usize) {
            for i in 0..AUDIT_SLOTS {
                let folio = chunk.get(i as usize).copied().unwrap_or(0);
                array.set(
                    i,
                    AuditSlot {
                        folio,
                        ..AuditSlot::default()
                    },
                    0,
                )?;
            }
            // SAFETY: getppid has no arguments and cannot fail; the audit
            // program runs at its entry, for this process only.
            unsafe { libc::syscall(libc::SYS_getppid) };
            for i in 0..chunk.len() as u32 {
                out.push(array.get(&i, 0)?);
            }
        }
        Ok(Some(out))
    }

    /// The kernel addresses of a stack id, innermost first.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        if id < 0 {
            return None;
        }
        let map = self.ebpf.map(STACKS_MAP)?;
        let stacks: StackTraceMap<&MapData> = StackTraceMap::try_from(map).ok()?;
        let trace = stacks.get(&(id as u32), 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }
}

/// One counter's value in a list of [`Probes::counters`] (0 if absent).
pub fn counter(counters: &[(Counter, u64)], which: Counter) -> u64 {
    counters
        .iter()
        .find(|(c, _)| *c == which)
        .map_or(0, |(_, v)| *v)
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
}

/// The ring buffer, read record by record.
pub struct EventSource {
    ring: RingBuf<MapData>,
}

impl EventSource {
    /// Hands every record now in the ring buffer to `f`; returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        n
    }
}

impl AsRawFd for EventSource {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}
