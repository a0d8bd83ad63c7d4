//! `pintrace zoo` (hidden): drives the pin-bug zoo test module
//! (`/dev/pinzoo`, built by `cargo xtask vm --pinzoo`) to plant one kind of
//! pin bug on a buffer of this process, and prints what the module did and
//! what the kernel's counters say.
//!
//! `plant` makes the kernel's own Direct I/O bio release wrong for a number
//! of bios, so that whole real I/O paths (`pintrace check`) meet a bug.
//!
//! The scenarios and plants mirror `xtask/pinzoo/pinzoo.h`.

use super::output::Output;
use crate::exit::Exit;
use crate::kernel::vmstat;
use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use pintrace_engine::{Arena, BufferKind};
use serde::Serialize;
use std::{fs::File, os::fd::AsRawFd, path::PathBuf, time::Duration};

#[derive(Args, Debug, Clone)]
pub struct ZooArgs {
    /// The module's control device.
    #[arg(long, default_value = "/dev/pinzoo", global = true)]
    pub device: PathBuf,
    #[command(subcommand)]
    pub command: ZooCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ZooCommand {
    /// Run one scenario on a fresh buffer; prints one JSON object.
    Run(ZooRun),
    /// Release a held scenario by the handle `run` printed.
    Release { handle: u64 },
    /// Release everything the module holds and undo the damage of pin-put.
    ReleaseAll,
    /// Make the kernel's bio release (__bio_release_pages, where every
    /// Direct I/O bio of pinned pages is released) wrong for the next
    /// --count bios, then disarm; needs a kernel whose bios pin (6.5 on)
    /// and kprobes. Prints one JSON object.
    Plant(ZooPlant),
    /// Remove the plant and give back what it kept (leaked pins unpinned,
    /// put references restored); prints what the plant did.
    Unplant,
}

#[derive(Args, Debug, Clone)]
pub struct ZooPlant {
    #[arg(value_enum)]
    pub kind: PlantKind,
    /// Bios to plant on; then the plant disarms itself (what it kept stays
    /// until `unplant`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub count: u32,
    /// Only bios released by a task of this process. Completions in
    /// interrupt context or a worker (iomap, asynchronous I/O) never match.
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub tgid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlantKind {
    /// The release unpins nothing: every pin of the bio leaks.
    BioLeak,
    /// The release drops one reference per page with put_page, as a
    /// half-converted driver would (small pages only).
    BioPut,
}

impl PlantKind {
    fn code(self) -> u32 {
        match self {
            PlantKind::BioLeak => 1,
            PlantKind::BioPut => 2,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ZooRun {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Pages of the buffer to work on.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub pages: u32,
    /// Buffer kind: small pages (anon), THP or hugetlb large folios.
    #[arg(long, value_enum, default_value_t = ZooBuffer::Anon)]
    pub buffer: ZooBuffer,
    /// Pin with FOLL_LONGTERM.
    #[arg(long)]
    pub longterm: bool,
    /// Acquire with pin_user_pages/get_user_pages (under the mmap lock)
    /// instead of the _fast calls.
    #[arg(long, conflicts_with = "unlocked")]
    pub slow: bool,
    /// Acquire with pin_user_pages_unlocked/get_user_pages_unlocked.
    #[arg(long)]
    pub unlocked: bool,
    /// For `delayed`: release after this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub delay_ms: u32,
    /// For the bio scenarios: the block device the bio is for (it is never
    /// submitted; the device only sizes and names it).
    #[arg(long, value_name = "DEV", default_value = "/dev/vda")]
    pub bdev: PathBuf,
    /// Stay alive this long after the scenario (so the owner of held pins
    /// is still running): seconds, or with a unit (500ms, 5s).
    #[arg(long, value_name = "TIME", default_value = "0", value_parser = pintrace_engine::size::parse_duration)]
    pub linger: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// pin_user_pages_fast, then unpin_user_pages.
    Balanced,
    /// A pin never released (until `release-all`).
    Leak,
    /// A pin released with put_page.
    PinPut,
    /// get_user_pages_fast released with unpin_user_page.
    GetUnpin,
    /// One pin, unpinned twice.
    DoubleUnpin,
    /// A pin released by a kernel worker after --delay-ms.
    Delayed,
    /// A pin held until `release HANDLE` (with --longterm: FOLL_LONGTERM).
    Hold,
    /// A Direct I/O bio filled from the buffer, completed, its pages never
    /// released (until `release-all`); at most 256 pages.
    BioLeak,
    /// The same bio, completed and released with bio_release_pages.
    BioBalanced,
    /// Balanced, but a quarter of the pages unpinned from a softirq on the
    /// same CPU while the task unpins the rest: unpins nested in unpins, as
    /// a bio completion's are (correct; for the tracer's nested calls).
    Nested,
}

impl Scenario {
    fn code(self) -> u32 {
        match self {
            Scenario::Balanced => 1,
            Scenario::Leak => 2,
            Scenario::PinPut => 3,
            Scenario::GetUnpin => 4,
            Scenario::DoubleUnpin => 5,
            Scenario::Delayed => 6,
            Scenario::Hold => 7,
            Scenario::BioLeak => 8,
            Scenario::BioBalanced => 9,
            Scenario::Nested => 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZooBuffer {
    Anon,
    Thp,
    Hugetlb,
}

/// `struct pinzoo_req`.
#[repr(C)]
#[derive(Default, Debug)]
struct Req {
    addr: u64,
    nr_pages: u32,
    scenario: u32,
    flags: u32,
    delay_ms: u32,
    acquired: i64,
    released: i64,
    handle: u64,
    folio: u64,
    large: u32,
    version: u32,
    refcount: [i64; 3],
    bdev_fd: i32,
    _pad: u32,
}

/// `struct pinzoo_plant`.
#[repr(C)]
#[derive(Default, Debug)]
struct Plant {
    kind: u32,
    count: u32,
    tgid: u32,
    version: u32,
    bios: u64,
    pages: u64,
    skipped: u64,
    unpinned: u64,
    repaired: u64,
    planted: u32,
    armed: u32,
}

/// `struct pinzoo_release`.
#[repr(C)]
#[derive(Default, Debug, Serialize)]
pub struct ReleaseOut {
    #[serde(skip)]
    handle: u64,
    pub unpinned: i64,
    pub repaired: i64,
    pub held: i64,
}

const fn iowr(nr: u64, size: usize) -> libc::c_ulong {
    ((3u64 << 30) | ((size as u64) << 16) | ((b'Z' as u64) << 8) | nr) as libc::c_ulong
}
const IOC_RUN: libc::c_ulong = iowr(1, std::mem::size_of::<Req>());
const IOC_RELEASE: libc::c_ulong = iowr(2, std::mem::size_of::<ReleaseOut>());
const IOC_RELEASE_ALL: libc::c_ulong = iowr(3, std::mem::size_of::<ReleaseOut>());
const IOC_PLANT: libc::c_ulong = iowr(4, std::mem::size_of::<Plant>());
const IOC_UNPLANT: libc::c_ulong = iowr(5, std::mem::size_of::<Plant>());
const F_LONGTERM: u32 = 1;
const F_SLOW: u32 = 2;
const F_UNLOCKED: u32 = 4;

#[derive(Debug, Serialize)]
pub struct RunOut {
    pub scenario: Scenario,
    pub buffer: ZooBuffer,
    pub pid: u32,
    pub pages: u32,
    pub acquired: i64,
    pub released: i64,
    pub handle: u64,
    /// Kernel address of the first page's folio (as the tracer names it).
    pub folio: String,
    pub large: bool,
    /// Refcount of the first page's folio after the acquire, after the
    /// release(s), after the repair (0: that stage did not happen).
    pub refcount_acquired: i64,
    pub refcount_released: i64,
    pub refcount_repaired: i64,
    /// /proc/vmstat pin counters around the scenario (stat_refresh'd).
    pub vmstat_acquired: Option<u64>,
    pub vmstat_released: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct PlantOut {
    pub plant: PlantKind,
    pub count: u32,
    pub tgid: Option<u32>,
    pub version: u32,
}

#[derive(Debug, Serialize)]
pub struct UnplantOut {
    /// A plant was there to remove.
    pub planted: bool,
    /// It had bios left to plant on (it had not disarmed itself).
    pub armed: bool,
    pub bios: u64,
    pub pages: u64,
    /// Bios let through: no room left, large folios (bio-put), another tgid.
    pub skipped: u64,
    pub unpinned: u64,
    pub repaired: u64,
}

fn open(device: &PathBuf) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .with_context(|| {
            format!(
                "opening {} (load the test module first: `insmod pinzoo.ko`, built by \
                 `cargo xtask vm --pinzoo`)",
                device.display()
            )
        })
}

pub fn run(args: &ZooArgs) -> Result<Exit> {
    let dev = open(&args.device)?;
    let mut stdout = Output::stdout();
    match &args.command {
        ZooCommand::Run(r) => {
            let (out, buffer) = run_scenario(&dev, r)?;
            stdout.json(&out)?;
            std::thread::sleep(r.linger);
            drop(buffer);
        }
        ZooCommand::Release { handle } => {
            let out = release(&dev, IOC_RELEASE, *handle)?;
            stdout.json(&out)?;
        }
        ZooCommand::ReleaseAll => {
            let out = release(&dev, IOC_RELEASE_ALL, 0)?;
            stdout.json(&out)?;
        }
        ZooCommand::Plant(p) => {
            stdout.json(&plant(&dev, p)?)?;
        }
        ZooCommand::Unplant => {
            stdout.json(&unplant(&dev)?)?;
        }
    }
    Ok(Exit::Ok)
}

/// Runs the scenario; the buffer is returned so that it stays mapped as
/// long as the caller wants its owner alive.
fn run_scenario(dev: &File, r: &ZooRun) -> Result<(RunOut, Arena)> {
    let kind = match r.buffer {
        ZooBuffer::Anon => BufferKind::Anon,
        ZooBuffer::Thp => BufferKind::Thp,
        ZooBuffer::Hugetlb => BufferKind::Hugetlb,
    };
    let len = r.pages as usize * 4096;
    let arena = Arena::new(kind, len, std::path::Path::new("/tmp"), 0, 1)?;
    let bdev = matches!(r.scenario, Scenario::BioLeak | Scenario::BioBalanced)
        .then(|| {
            File::open(&r.bdev).with_context(|| format!("opening --bdev {}", r.bdev.display()))
        })
        .transpose()?;
    let mut req = Req {
        bdev_fd: bdev.as_ref().map_or(-1, |f| f.as_raw_fd()),
        addr: arena.base() as u64,
        nr_pages: r.pages,
        scenario: r.scenario.code(),
        flags: (if r.longterm { F_LONGTERM } else { 0 })
            | (if r.slow { F_SLOW } else { 0 })
            | (if r.unlocked { F_UNLOCKED } else { 0 }),
        delay_ms: r.delay_ms,
        ..Req::default()
    };
    let before = vmstat::read();
    // SAFETY: IOC_RUN reads and writes a `struct pinzoo_req`, mirrored by Req.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), IOC_RUN, &mut req as *mut Req) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "pinzoo {:?} on {} pages of {:?}: {e}{}",
            r.scenario,
            r.pages,
            r.buffer,
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                " (this scenario needs small pages)"
            } else {
                ""
            }
        );
    }
    let after = vmstat::read();
    let delta = before.zip(after).map(|(b, a)| b.delta_to(&a));
    let out = RunOut {
        scenario: r.scenario,
        buffer: r.buffer,
        pid: std::process::id(),
        pages: r.pages,
        acquired: req.acquired,
        released: req.released,
        handle: req.handle,
        folio: format!("{:#x}", req.folio),
        large: req.large != 0,
        refcount_acquired: req.refcount[0],
        refcount_released: req.refcount[1],
        refcount_repaired: req.refcount[2],
        vmstat_acquired: delta.map(|d| d.acquired),
        vmstat_released: delta.map(|d| d.released),
    };
    Ok((out, arena))
}

fn release(dev: &File, ioc: libc::c_ulong, handle: u64) -> Result<ReleaseOut> {
    let mut out = ReleaseOut {
        handle,
        ..ReleaseOut::default()
    };
    // SAFETY: the release ioctls read and write a `struct pinzoo_release`.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), ioc, &mut out as *mut ReleaseOut) };
    if rc != 0 {
        bail!("pinzoo release: {}", std::io::Error::last_os_error());
    }
    Ok(out)
}

fn plant(dev: &File, p: &ZooPlant) -> Result<PlantOut> {
    let mut req = Plant {
        kind: p.kind.code(),
        count: p.count,
        tgid: p.tgid.unwrap_or(0),
        ..Plant::default()
    };
    // SAFETY: IOC_PLANT reads and writes a `struct pinzoo_plant`, mirrored by Plant.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), IOC_PLANT, &mut req as *mut Plant) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let why = match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => {
                "this kernel's bio release drops FOLL_GET references with put_page (Direct I/O \
                 bios pin from 6.5 on): there is no pin for a plant to get wrong"
                    .to_owned()
            }
            Some(libc::EBUSY) => "a plant is already in place: `pintrace zoo unplant` first".into(),
            Some(libc::ENOTTY) => {
                "the loaded pinzoo module has no plants: it is older than this pintrace \
                 (rmmod it and load the one `cargo xtask vm --pinzoo` builds)"
                    .into()
            }
            _ => format!(
                "{e} (registering a kprobe on __bio_release_pages: needs CONFIG_KPROBES, root \
                 and the symbol in /proc/kallsyms)"
            ),
        };
        bail!("pinzoo plant {:?}: {why}", p.kind);
    }
    Ok(PlantOut {
        plant: p.kind,
        count: p.count,
        tgid: p.tgid,
        version: req.version,
    })
}

fn unplant(dev: &File) -> Result<UnplantOut> {
    let mut out = Plant::default();
    // SAFETY: IOC_UNPLANT writes a `struct pinzoo_plant`, mirrored by Plant.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), IOC_UNPLANT, &mut out as *mut Plant) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTTY) {
            bail!("pinzoo unplant: the loaded pinzoo module has no plants (an older module)");
        }
        bail!("pinzoo unplant: {e}");
    }
    Ok(UnplantOut {
        planted: out.planted != 0,
        armed: out.armed != 0,
        bios: out.bios,
        pages: out.pages,
        skipped: out.skipped,
        unpinned: out.unpinned,
        repaired: out.repaired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_module_header() {
        // struct pinzoo_req is 96 bytes, struct pinzoo_release 32.
        assert_eq!(std::mem::size_of::<Req>(), 96);
        assert_eq!(std::mem::size_of::<ReleaseOut>(), 32);
        assert_eq!(IOC_RUN, 0xc060_5a01);
        assert_eq!(IOC_RELEASE, 0xc020_5a02);
        assert_eq!(IOC_RELEASE_ALL, 0xc020_5a03);
        // struct pinzoo_plant is 64 bytes.
        assert_eq!(std::mem::size_of::<Plant>(), 64);
        assert_eq!(IOC_PLANT, 0xc040_5a04);
        assert_eq!(IOC_UNPLANT, 0xc040_5a05);
    }

    #[test]
    fn plant_flags_are_checked() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            zoo: ZooArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(["zoo"].iter().chain(args));
        let ok = parse(&["plant", "bio-put", "--count", "3", "--tgid", "7"]).unwrap();
        match ok.zoo.command {
            ZooCommand::Plant(p) => {
                assert_eq!((p.kind, p.count, p.tgid), (PlantKind::BioPut, 3, Some(7)))
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &["plant", "bio-leak", "--count", "0"][..],
            &["plant", "bio-leak", "--count", "4097"],
            &["plant", "bio-leak", "--tgid", "0"],
            &["plant", "bio-drop"],
        ] {
            let e = parse(bad).err().unwrap().to_string();
            assert!(
                e.contains("--count") || e.contains("--tgid") || e.contains("bio-drop"),
                "{bad:?}: {e}"
            );
        }
    }
}
