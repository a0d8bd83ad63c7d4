//! What `check` drives I/O on: a raw loop device, the scratch NVMe and SCSI
//! devices given, a scsi_debug disk, ext4 / xfs / btrfs / vfat / udf made on
//! loop devices, a FUSE passthrough mount with direct_io, NFS over a
//! loopback export. Each is set up in a work directory, torn down when
//! dropped, or skipped with the reason (the kernel lacks the file system,
//! the mkfs tool is missing, no such device was given, ...).

use super::{
    devices::{ScratchDevices, ScsiDebug},
    fuse, nfs, TargetKind,
};
use anyhow::{anyhow, bail, Context as _, Result};
use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    process::Command,
};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// A target ready for the engine.
pub struct Ready {
    /// The block device, or the directory to create files in.
    pub path: PathBuf,
    pub is_block: bool,
    /// The NVMe generic char device of `path`, for passthrough.
    pub generic: Option<PathBuf>,
    /// For a person: "/dev/loop0 (16 MiB over a file)", "xfs on /dev/loop1".
    pub describe: String,
    // Dropped in order: an NFS mount and export before the file system it
    // exports, a mount before its loop device.
    _guards: Vec<Guard>,
}

/// Something set up for a target, undone when dropped.
#[allow(dead_code)] // held for their Drop
enum Guard {
    Nfs(nfs::Loopback),
    Fuse(fuse::Mounted),
    Mount(Mount),
    Loop(LoopDev),
    ScsiDebug(ScsiDebug),
}

impl Ready {
    fn device(path: PathBuf, describe: String, guards: Vec<Guard>) -> Box<Ready> {
        Box::new(Ready {
            path,
            is_block: true,
            generic: None,
            describe,
            _guards: guards,
        })
    }

    fn dir(path: PathBuf, describe: String, guards: Vec<Guard>) -> Box<Ready> {
        Box::new(Ready {
            path,
            is_block: false,
            generic: None,
            describe,
            _guards: guards,
        })
    }
}

/// Set up, skipped with a reason, or failed (an error).
pub enum Prepared {
    Ready(Box<Ready>),
    Skip(String),
}

/// A loop device over a sparse file, detached (and the file removed) on drop.
pub struct LoopDev {
    pub path: PathBuf,
    backing: PathBuf,
    dev: File,
}

impl LoopDev {
    pub fn new(backing: &Path, bytes: u64) -> Result<LoopDev> {
        // Read and write: the loop driver does both through this descriptor.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(backing)
            .with_context(|| format!("creating the loop backing file {}", backing.display()))?;
        file.set_len(bytes)
            .with_context(|| format!("sizing {}", backing.display()))?;
        let ctl = File::open("/dev/loop-control")
            .context("opening /dev/loop-control (is the loop module loaded?)")?;
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            bail!("no free loop device: {}", std::io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: LOOP_SET_FD takes the backing file's descriptor as its argument.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, file.as_raw_fd()) };
        if rc != 0 {
            bail!(
                "attaching {} to {}: {}",
                backing.display(),
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(LoopDev {
            path,
            backing: backing.to_path_buf(),
            dev,
        })
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(self.dev.as_raw_fd(), LOOP_CLR_FD) };
        let _ = fs::remove_file(&self.backing);
    }
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow!("{}: NUL in path", p.display()))
}

/// A mounted file system, unmounted on drop.
pub struct Mount {
    target: PathBuf,
}

impl Mount {
    pub fn new(source: &Path, target: &Path, fstype: &str, data: &str) -> Result<Mount> {
        fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
        let (s, t, f) = (cstr(source)?, cstr(target)?, CString::new(fstype)?);
        let d = CString::new(data)?;
        // SAFETY: all four are valid C strings.
        let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, d.as_ptr().cast()) };
        if rc != 0 {
            bail!(
                "mount -t {fstype} -o '{data}' {} {}: {}",
                source.display(),
                target.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Mount {
            target: target.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Ok(t) = cstr(&self.target) {
            // SAFETY: a valid C string.
            if unsafe { libc::umount2(t.as_ptr(), 0) } != 0 {
                log::warn!(
                    "unmounting {}: {}",
                    self.target.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Whether /proc/filesystems lists `fs` (after trying `modprobe fs` once).
pub fn kernel_has_fs(fs: &str) -> bool {
    let listed = || {
        fs::read_to_string("/proc/filesystems")
            .map(|t| filesystems_list(&t, fs))
            .unwrap_or(false)
    };
    if listed() {
        return true;
    }
    if let Some(modprobe) = find_tool("modprobe") {
        let _ = Command::new(modprobe).args(["-q", fs]).status();
    }
    listed()
}

/// Parses /proc/filesystems ("nodev\tproc", "\text4").
pub fn filesystems_list(text: &str, fs: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
}

/// A tool on PATH or in the sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/bin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Sizes of the loop devices: xfs refuses file systems under 300 MiB, btrfs
/// under about 110 MiB. The backing files are sparse.
fn loop_bytes(kind: TargetKind) -> u64 {
    match kind {
        TargetKind::Block => 16 << 20,
        TargetKind::Ext4 | TargetKind::Vfat | TargetKind::Udf | TargetKind::Nfs => 64 << 20,
        TargetKind::Xfs => 320 << 20,
        TargetKind::Btrfs => 256 << 20,
        _ => 0,
    }
}

/// File system, mkfs tool and its arguments, mount options.
///
/// btrfs is mounted with `nodatasum`: with data checksums, btrfs serves
/// O_DIRECT writes through the page cache (a buffer changed while in flight
/// would fail its checksum), so no user page would be pinned for them.
fn mkfs(
    kind: TargetKind,
) -> (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
) {
    match kind {
        TargetKind::Ext4 | TargetKind::Nfs => ("ext4", "mkfs.ext4", &["-q", "-F"], ""),
        TargetKind::Xfs => ("xfs", "mkfs.xfs", &["-q", "-f"], ""),
        // A named charset: the kernel's default (often ascii) may be a
        // module the system lacks, and the mount then fails with EINVAL.
        TargetKind::Vfat => ("vfat", "mkfs.vfat", &[], "iocharset=iso8859-1"),
        // 512-byte blocks, as the loop device's: udf's Direct I/O needs the
        // buffers aligned to its block size.
        TargetKind::Udf => (
            "udf",
            "mkudffs",
            &["--media-type=hd", "--blocksize=512"],
            "",
        ),
        _ => ("btrfs", "mkfs.btrfs", &["-q", "-f"], "nodatasum"),
    }
}

/// Sets up `kind` under `work`, on the scratch devices given.
pub fn prepare(kind: TargetKind, work: &Path, given: &ScratchDevices) -> Result<Prepared> {
    match kind {
        TargetKind::Block => {
            if let Some(why) = no_loop() {
                return Ok(Prepared::Skip(why.into()));
            }
            let dev = LoopDev::new(&work.join("block.img"), loop_bytes(kind))?;
            Ok(Prepared::Ready(Ready::device(
                dev.path.clone(),
                format!("{} (16 MiB loop device over a file)", dev.path.display()),
                vec![Guard::Loop(dev)],
            )))
        }
        TargetKind::Nvme => {
            let Some((dev, generic)) = &given.nvme else {
                return Ok(Prepared::Skip(
                    "no NVMe namespace given (--scratch-device /dev/nvmeXnY: its data is \
                     destroyed)"
                        .into(),
                ));
            };
            let mut r = Ready::device(
                dev.clone(),
                format!(
                    "{} (NVMe namespace given as scratch{})",
                    dev.display(),
                    generic
                        .as_ref()
                        .map(|g| format!(", passthrough on {}", g.display()))
                        .unwrap_or_default()
                ),
                vec![],
            );
            r.generic = generic.clone();
            Ok(Prepared::Ready(r))
        }
        TargetKind::Scsi => match &given.scsi {
            None => Ok(Prepared::Skip(
                "no SCSI disk given (--scratch-device /dev/sdX: its data is destroyed)".into(),
            )),
            Some(dev) => Ok(Prepared::Ready(Ready::device(
                dev.clone(),
                format!("{} (SCSI disk given as scratch)", dev.display()),
                vec![],
            ))),
        },
        TargetKind::ScsiDebug => match ScsiDebug::find_or_load()? {
            None => Ok(Prepared::Skip(
                "no scsi_debug disk, and the scsi_debug module cannot be loaded \
                 (CONFIG_SCSI_DEBUG)"
                    .into(),
            )),
            Some(d) => Ok(Prepared::Ready(Ready::device(
                d.path.clone(),
                format!("{} (scsi_debug RAM disk)", d.path.display()),
                vec![Guard::ScsiDebug(d)],
            ))),
        },
        TargetKind::Ext4
        | TargetKind::Xfs
        | TargetKind::Btrfs
        | TargetKind::Vfat
        | TargetKind::Udf => match made_fs(kind, work)? {
            Err(why) => Ok(Prepared::Skip(why)),
            Ok((mnt, describe, guards)) => Ok(Prepared::Ready(Ready::dir(mnt, describe, guards))),
        },
        TargetKind::Fuse => {
            if !Path::new("/dev/fuse").exists() {
                return Ok(Prepared::Skip(
                    "/dev/fuse is absent (CONFIG_FUSE_FS, or load the fuse module)".into(),
                ));
            }
            let backing = work.join("fuse-backing");
            let mnt = work.join("fuse");
            fs::create_dir_all(&backing)?;
            fs::create_dir_all(&mnt)?;
            let mounted = fuse::Mounted::mount(&backing, &mnt)
                .with_context(|| format!("mounting the FUSE passthrough at {}", mnt.display()))?;
            Ok(Prepared::Ready(Ready::dir(
                mnt.clone(),
                format!(
                    "FUSE passthrough at {} (direct_io, backed by {})",
                    mnt.display(),
                    backing.display()
                ),
                vec![Guard::Fuse(mounted)],
            )))
        }
        TargetKind::Nfs => {
            if let Some(why) = nfs::missing() {
                return Ok(Prepared::Skip(why));
            }
            // The export is an ext4 of its own: what the server writes
            // through is a real file system, not the guest's tmpfs.
            let (exported, what, mut guards) = match made_fs(kind, work)? {
                Err(why) => return Ok(Prepared::Skip(format!("the exported file system: {why}"))),
                Ok(x) => x,
            };
            let mnt = work.join("nfs");
            let lb = nfs::Loopback::new(&exported, &mnt)?;
            guards.insert(0, Guard::Nfs(lb));
            Ok(Prepared::Ready(Ready::dir(
                mnt.clone(),
                format!(
                    "NFSv4.2 at {} (127.0.0.1:{} exported by the kernel's nfsd; {what})",
                    mnt.display(),
                    exported.display()
                ),
                guards,
            )))
        }
    }
}

/// Why there are no loop devices, or `None`.
fn no_loop() -> Option<&'static str> {
    (!Path::new("/dev/loop-control").exists() && !kernel_has_loop()).then_some(
        "no loop devices (/dev/loop-control is missing: CONFIG_BLK_DEV_LOOP or the loop module)",
    )
}

type MadeFs = std::result::Result<(PathBuf, String, Vec<Guard>), String>;

/// A file system made on a loop device and mounted under `work`, or why
/// it cannot be.
fn made_fs(kind: TargetKind, work: &Path) -> Result<MadeFs> {
    let (fs, tool, args, data) = mkfs(kind);
    if !kernel_has_fs(fs) {
        return Ok(Err(format!(
            "the kernel has no {fs} (not in /proc/filesystems: CONFIG_{}_FS, or load the {fs} \
             module)",
            fs.to_uppercase()
        )));
    }
    let Some(tool_path) = find_tool(tool) else {
        return Ok(Err(format!("{tool} is not installed")));
    };
    if no_loop().is_some() {
        return Ok(Err(format!(
            "{fs} is made on a loop device and there are none (CONFIG_BLK_DEV_LOOP)"
        )));
    }
    let dev = LoopDev::new(&work.join(format!("{}.img", kind.name())), loop_bytes(kind))?;
    let out = Command::new(&tool_path)
        .args(args)
        .arg(&dev.path)
        .output()
        .with_context(|| format!("running {}", tool_path.display()))?;
    if !out.status.success() {
        bail!(
            "{tool} {} failed: {}",
            dev.path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mnt = work.join(kind.name());
    let mount = Mount::new(&dev.path, &mnt, fs, data)?;
    let describe = format!(
        "{fs} on {} ({} MiB{})",
        dev.path.display(),
        loop_bytes(kind) >> 20,
        if data.is_empty() {
            String::new()
        } else {
            format!(", -o {data}")
        }
    );
    Ok(Ok((
        mnt,
        describe,
        vec![Guard::Mount(mount), Guard::Loop(dev)],
    )))
}

fn kernel_has_loop() -> bool {
    if let Some(modprobe) = find_tool("modprobe") {
        let _ = Command::new(modprobe).args(["-q", "loop"]).status();
    }
    Path::new("/dev/loop-control").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_filesystems() {
        let t = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tfuse\n\txfs\n";
        assert!(filesystems_list(t, "ext4"));
        assert!(filesystems_list(t, "fuse"));
        assert!(!filesystems_list(t, "btrfs"));
        assert!(!filesystems_list(t, "ext"));
    }
}
