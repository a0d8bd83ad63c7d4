//! The NFS target: the kernel's nfsd exporting a directory (ext4 on a loop
//! device) to 127.0.0.1, mounted back NFSv4.2, so that O_DIRECT on the mount
//! goes through NFS-Direct (fs/nfs/direct.c).
//!
//! Nothing of the system's own NFS set-up is changed: the export is added
//! with `exportfs -o` (not written to /etc/exports) and removed at the end;
//! nfsd and mountd are started only when they are not running, and then
//! stopped again.

use super::targets::{find_tool, kernel_has_fs, Mount};
use anyhow::{bail, Context as _, Result};
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Why NFS cannot be set up here, as precisely as this system tells, or
/// `None` when it can.
pub fn missing() -> Option<String> {
    if !kernel_has_fs("nfsd") {
        return Some(
            "the kernel has no NFS server (no nfsd in /proc/filesystems: CONFIG_NFSD, or load \
             the nfsd module)"
                .into(),
        );
    }
    if !kernel_has_fs("nfs4") && !kernel_has_fs("nfs") {
        return Some("the kernel has no NFS client (CONFIG_NFS_FS with CONFIG_NFS_V4)".into());
    }
    let missing: Vec<&str> = ["rpc.nfsd", "rpc.mountd", "exportfs"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the NFS server's user space is not installed ({} missing: package \
             nfs-kernel-server)",
            missing.join(", ")
        )
    })
}

/// The `exportfs -o` options: `fsid` because the exported file system may
/// have no UUID nfsd can use, `insecure` for the loopback client's port.
pub const EXPORT_OPTIONS: &str = "rw,sync,no_root_squash,insecure,no_subtree_check,fsid=7411";

/// The mount(2) data of the NFSv4.2 mount: the kernel client parses the
/// text options itself, so no mount.nfs is needed.
pub const MOUNT_DATA: &str = "vers=4.2,addr=127.0.0.1,clientaddr=127.0.0.1,proto=tcp,port=2049";

/// A loopback export and its mount, undone on drop in reverse order.
pub struct Loopback {
    pub mountpoint: PathBuf,
    _mount: Option<Mount>,
    export: String,
    exportfs: PathBuf,
    mountd: Option<Child>,
    started_nfsd: Option<PathBuf>,
}

fn nfsd_threads() -> u32 {
    fs::read_to_string("/proc/fs/nfsd/threads")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn run(tool: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}",
            tool.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Loopback {
    /// Exports `dir` and mounts it at `mountpoint`.
    pub fn new(dir: &Path, mountpoint: &Path) -> Result<Loopback> {
        let tool = |t: &str| find_tool(t).with_context(|| format!("{t} is not installed"));
        let (exportfs, mountd, nfsd) = (tool("exportfs")?, tool("rpc.mountd")?, tool("rpc.nfsd")?);
        if !Path::new("/proc/fs/nfsd/threads").exists() {
            fs::create_dir_all("/proc/fs/nfsd").ok();
            // The nfsd control file system: mountd and nfsd talk to the
            // kernel through it. It stays mounted (it is the system's).
            std::mem::forget(
                Mount::new(Path::new("nfsd"), Path::new("/proc/fs/nfsd"), "nfsd", "")
                    .context("mounting the nfsd control file system on /proc/fs/nfsd")?,
            );
        }
        // exportfs and mountd keep their state here; with v4recovery
        // present nfsd tracks its clients itself (no nfsdcld upcall).
        fs::create_dir_all("/var/lib/nfs/v4recovery").context("creating /var/lib/nfs")?;
        for f in ["etab", "rmtab"] {
            let p = Path::new("/var/lib/nfs").join(f);
            if !p.exists() {
                fs::write(&p, "").with_context(|| format!("creating {}", p.display()))?;
            }
        }
        let export = format!("127.0.0.1:{}", dir.display());
        run(&exportfs, &["-o", EXPORT_OPTIONS, &export])?;
        let mut lb = Loopback {
            mountpoint: mountpoint.to_path_buf(),
            _mount: None,
            export,
            exportfs,
            mountd: None,
            started_nfsd: None,
        };
        if nfsd_threads() == 0 {
            // mountd answers the kernel's export upcalls; with NFSv3 off the
            // kernel registers nothing with rpcbind, so none is needed (6.12's
            // nfsd has no NFSv2 to turn off: `-N 2` is not given to it).
            let child = Command::new(&mountd)
                .args(["-F", "-N", "2", "-N", "3"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", mountd.display()))?;
            lb.mountd = Some(child);
            // The port given: without it rpc.nfsd resolves the `nfs`
            // service, and a system may have no /etc/services. The grace
            // period is as short as nfsd takes, then ended at once: there
            // is no client to reclaim anything.
            run(
                &nfsd,
                &[
                    "-p", "2049", "-N", "3", "-V", "4.2", "-G", "10", "-L", "10", "4",
                ],
            )?;
            lb.started_nfsd = Some(nfsd);
            let _ = fs::write("/proc/fs/nfsd/v4_end_grace", "Y");
        }
        // nfsd takes a moment to listen; the first mount may be refused.
        let started = Instant::now();
        let mount = loop {
            match Mount::new(
                Path::new(&format!("127.0.0.1:{}", dir.display())),
                mountpoint,
                "nfs4",
                MOUNT_DATA,
            ) {
                Ok(m) => break m,
                Err(e) if started.elapsed() > Duration::from_secs(15) => {
                    return Err(e).context("mounting the loopback NFS export")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        };
        lb._mount = Some(mount);
        Ok(lb)
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        // The mount goes first, then the export, then what was started.
        drop(self._mount.take());
        let _ = run(&self.exportfs, &["-u", &self.export]);
        if let Some(nfsd) = &self.started_nfsd {
            let _ = run(nfsd, &["0"]);
        }
        if let Some(mut c) = self.mountd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
