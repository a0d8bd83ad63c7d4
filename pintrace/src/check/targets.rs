//! What `check` drives I/O on: a raw loop device, ext4 / xfs / btrfs made on
//! loop devices, a FUSE passthrough mount with direct_io, NFS over a
//! loopback export. Each is set up in a work directory, torn down when
//! dropped, or skipped with the reason (the kernel lacks the file system,
//! the mkfs tool is missing, ...).

use super::{fuse, TargetKind};
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
    /// For a person: "/dev/loop0 (16 MiB over a file)", "xfs on /dev/loop1".
    pub describe: String,
    // Dropped in order: the mount before its loop device.
    _fuse: Option<fuse::Mounted>,
    _mount: Option<Mount>,
    _loop: Option<LoopDev>,
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
        TargetKind::Ext4 => 64 << 20,
        TargetKind::Xfs => 320 << 20,
        TargetKind::Btrfs => 256 << 20,
        TargetKind::Fuse | TargetKind::Nfs => 0,
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
        TargetKind::Ext4 => ("ext4", "mkfs.ext4", &["-q", "-F"], ""),
        TargetKind::Xfs => ("xfs", "mkfs.xfs", &["-q", "-f"], ""),
        _ => ("btrfs", "mkfs.btrfs", &["-q", "-f"], "nodatasum"),
    }
}

/// Sets up `kind` under `work`.
pub fn prepare(kind: TargetKind, work: &Path) -> Result<Prepared> {
    match kind {
        TargetKind::Block => {
            if !Path::new("/dev/loop-control").exists() && !kernel_has_loop() {
                return Ok(Prepared::Skip(
                    "no loop devices (/dev/loop-control is missing: CONFIG_BLK_DEV_LOOP or the loop module)".into(),
                ));
            }
            let dev = LoopDev::new(&work.join("block.img"), loop_bytes(kind))?;
            Ok(Prepared::Ready(Box::new(Ready {
                path: dev.path.clone(),
                is_block: true,
                describe: format!("{} (16 MiB loop device over a file)", dev.path.display()),
                _fuse: None,
                _mount: None,
                _loop: Some(dev),
            })))
        }
        TargetKind::Ext4 | TargetKind::Xfs | TargetKind::Btrfs => {
            let (fs, tool, args, data) = mkfs(kind);
            if !kernel_has_fs(fs) {
                return Ok(Prepared::Skip(format!(
                    "the kernel has no {fs} (not in /proc/filesystems: CONFIG_{}_FS, or load the {fs} module)",
                    fs.to_uppercase()
                )));
            }
            let Some(tool_path) = find_tool(tool) else {
                return Ok(Prepared::Skip(format!("{tool} is not installed")));
            };
            if !Path::new("/dev/loop-control").exists() && !kernel_has_loop() {
                return Ok(Prepared::Skip(format!(
                    "{fs} is made on a loop device and there are none (CONFIG_BLK_DEV_LOOP)"
                )));
            }
            let dev = LoopDev::new(&work.join(format!("{fs}.img")), loop_bytes(kind))?;
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
            let mnt = work.join(fs);
            let mount = Mount::new(&dev.path, &mnt, fs, data)?;
            Ok(Prepared::Ready(Box::new(Ready {
                describe: format!(
                    "{fs} on {} ({} MiB{})",
                    dev.path.display(),
                    loop_bytes(kind) >> 20,
                    if data.is_empty() {
                        String::new()
                    } else {
                        format!(", -o {data}")
                    }
                ),
                path: mnt,
                is_block: false,
                _fuse: None,
                _mount: Some(mount),
                _loop: Some(dev),
            })))
        }
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
            Ok(Prepared::Ready(Box::new(Ready {
                describe: format!(
                    "FUSE passthrough at {} (direct_io, backed by {})",
                    mnt.display(),
                    backing.display()
                ),
                path: mnt,
                is_block: false,
                _fuse: Some(mounted),
                _mount: None,
                _loop: None,
            })))
        }
        TargetKind::Nfs => Ok(Prepared::Skip(nfs_skip_reason())),
    }
}

fn kernel_has_loop() -> bool {
    if let Some(modprobe) = find_tool("modprobe") {
        let _ = Command::new(modprobe).args(["-q", "loop"]).status();
    }
    Path::new("/dev/loop-control").exists()
}

/// Why NFS is skipped, as precisely as this system tells.
fn nfs_skip_reason() -> String {
    if !kernel_has_fs("nfsd") {
        return "the kernel has no NFS server (no nfsd in /proc/filesystems: CONFIG_NFSD, or load \
                the nfsd module)"
            .into();
    }
    if !kernel_has_fs("nfs") && !kernel_has_fs("nfs4") {
        return "the kernel has no NFS client (CONFIG_NFS_FS, or load the nfs module)".into();
    }
    let missing: Vec<&str> = ["rpc.nfsd", "rpc.mountd", "exportfs"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        return format!(
            "the NFS server's user space is not installed ({} missing: package nfs-kernel-server)",
            missing.join(", ")
        );
    }
    "a loopback NFS export is not set up by this version of pintrace check (nfsd and its tools \
     are present)"
        .into()
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
