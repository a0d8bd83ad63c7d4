//! `pintrace zoo` (hidden): drives the pin-bug zoo test module
//! (`/dev/pinzoo`, built by `cargo xtask vm --pinzoo`) to plant one kind of
//! pin bug on a buffer of this process, and prints what the module did and
//! what the kernel's counters say.
//!
//! The scenarios mirror `xtask/pinzoo/pinzoo.h`.

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
    /// Stay alive this many seconds after the scenario (so the owner of
    /// held pins is still running).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub linger: f64,
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
    match &args.command {
        ZooCommand::Run(r) => {
            let (out, buffer) = run_scenario(&dev, r)?;
            println!("{}", serde_json::to_string(&out)?);
            if r.linger > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(r.linger));
            }
            drop(buffer);
        }
        ZooCommand::Release { handle } => {
            let out = release(&dev, IOC_RELEASE, *handle)?;
            println!("{}", serde_json::to_string(&out)?);
        }
        ZooCommand::ReleaseAll => {
            let out = release(&dev, IOC_RELEASE_ALL, 0)?;
            println!("{}", serde_json::to_string(&out)?);
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
    }
}
