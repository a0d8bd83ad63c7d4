//! The block devices `check` runs on besides its own loop devices: scratch
//! devices the user gave (`--scratch-device`: their data is destroyed), a
//! `scsi_debug` RAM disk, and device-mapper targets that fail I/O.

use super::{targets::find_tool, Fault};
use anyhow::{bail, Context as _, Result};
use std::{
    fs,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    process::Command,
};

/// What a given scratch device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// An NVMe namespace, with its generic char device when the kernel made
    /// one (`/dev/ngXnY`, for passthrough).
    Nvme { generic: Option<PathBuf> },
    /// A SCSI disk (SG_IO goes to its block node).
    Scsi,
}

#[derive(Clone, Debug, Default)]
pub struct ScratchDevices {
    pub nvme: Option<(PathBuf, Option<PathBuf>)>,
    pub scsi: Option<PathBuf>,
}

/// The kernel's name of a block device node (`/dev/nvme0n1` -> `nvme0n1`),
/// following symlinks such as /dev/disk/by-id.
fn sys_name(dev: &Path) -> Result<String> {
    let real =
        fs::canonicalize(dev).with_context(|| format!("--scratch-device {}", dev.display()))?;
    let meta =
        fs::metadata(&real).with_context(|| format!("--scratch-device {}", dev.display()))?;
    if !meta.file_type().is_block_device() {
        bail!("--scratch-device {}: not a block device", dev.display());
    }
    Ok(real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default())
}

/// Classifies a device by what /sys says of `name` (under `sys`, which is
/// `/sys` but for tests).
pub fn classify(sys: &Path, name: &str) -> Option<DeviceKind> {
    let block = sys.join("class/block").join(name);
    if !block.exists() {
        return None;
    }
    if block.join("partition").exists() {
        return None;
    }
    // nvmeXnY: the generic char device is ngXnY.
    if let Some(rest) = name.strip_prefix("nvme") {
        if rest.contains('n') && !rest.contains('p') {
            let generic = format!("ng{rest}");
            let has = sys.join("class/nvme-generic").join(&generic).exists();
            return Some(DeviceKind::Nvme {
                generic: has.then(|| PathBuf::from("/dev").join(generic)),
            });
        }
    }
    if block.join("device/scsi_device").exists() || block.join("device/scsi_disk").exists() {
        return Some(DeviceKind::Scsi);
    }
    None
}

/// Sorts the `--scratch-device` paths into an NVMe namespace and a SCSI
/// disk; anything else, a partition or a second of one kind is an error.
pub fn scratch_devices(given: &[PathBuf]) -> Result<ScratchDevices> {
    let mut out = ScratchDevices::default();
    for dev in given {
        let name = sys_name(dev)?;
        match classify(Path::new("/sys"), &name) {
            Some(DeviceKind::Nvme { generic }) if out.nvme.is_none() => {
                out.nvme = Some((dev.clone(), generic));
            }
            Some(DeviceKind::Scsi) if out.scsi.is_none() => out.scsi = Some(dev.clone()),
            Some(_) => bail!(
                "--scratch-device {}: a second device of the same kind (one NVMe namespace and \
                 one SCSI disk are used)",
                dev.display()
            ),
            None => bail!(
                "--scratch-device {}: neither a whole NVMe namespace nor a whole SCSI disk \
                 ({name} in /sys/class/block)",
                dev.display()
            ),
        }
    }
    Ok(out)
}

/// A scsi_debug disk: the first one present, or one made by loading the
/// module (unloaded again on drop).
pub struct ScsiDebug {
    pub path: PathBuf,
    loaded: bool,
}

/// The scsi_debug disks /sys lists (model "scsi_debug").
pub fn scsi_debug_disks(sys: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(sys.join("class/block"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let model = fs::read_to_string(e.path().join("device/model")).ok()?;
            (name.starts_with("sd") && model.trim() == "scsi_debug").then_some(name)
        })
        .collect();
    v.sort();
    v
}

impl ScsiDebug {
    pub fn find_or_load() -> Result<Option<ScsiDebug>> {
        let sys = Path::new("/sys");
        if let Some(name) = scsi_debug_disks(sys).into_iter().next() {
            return Ok(Some(ScsiDebug {
                path: PathBuf::from("/dev").join(name),
                loaded: false,
            }));
        }
        let Some(modprobe) = find_tool("modprobe") else {
            return Ok(None);
        };
        let st = Command::new(&modprobe)
            .args(["-q", "scsi_debug", "dev_size_mb=32"])
            .status()
            .context("running modprobe scsi_debug")?;
        if !st.success() {
            return Ok(None);
        }
        // The disk appears asynchronously once the host is scanned.
        for _ in 0..50 {
            if let Some(name) = scsi_debug_disks(sys).into_iter().next() {
                let path = PathBuf::from("/dev").join(name);
                if path.exists() {
                    return Ok(Some(ScsiDebug { path, loaded: true }));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!("scsi_debug loaded but no disk of model scsi_debug appeared in /sys/class/block")
    }
}

impl Drop for ScsiDebug {
    fn drop(&mut self) {
        if self.loaded {
            if let Some(modprobe) = find_tool("modprobe") {
                let _ = Command::new(modprobe).args(["-r", "scsi_debug"]).status();
            }
        }
    }
}

/// A device-mapper device over `lower` that fails I/O, removed on drop.
pub struct DmDevice {
    pub path: PathBuf,
    name: String,
    dmsetup: PathBuf,
}

/// The table of the fault's target over `sectors` of `lower`: dm-error
/// fails every bio; dm-flakey, always in its down interval (up 0 s, down
/// 1 s) and with no feature, fails every bio it is given after mapping it.
pub fn dm_table(fault: Fault, lower: &Path, sectors: u64) -> Option<String> {
    match fault {
        Fault::DmError => Some(format!("0 {sectors} error")),
        Fault::DmFlakey => Some(format!("0 {sectors} flakey {} 0 0 1", lower.display())),
        _ => None,
    }
}

impl DmDevice {
    pub fn new(fault: Fault, lower: &Path) -> Result<std::result::Result<DmDevice, String>> {
        let Some(dmsetup) = find_tool("dmsetup") else {
            return Ok(Err("dmsetup is not installed (package dmsetup)".into()));
        };
        // The targets are modules on most kernels.
        if let Some(modprobe) = find_tool("modprobe") {
            let m = if fault == Fault::DmFlakey {
                "dm-flakey"
            } else {
                "dm-mod"
            };
            let _ = Command::new(modprobe).args(["-q", m]).status();
        }
        if !Path::new("/dev/mapper/control").exists() {
            return Ok(Err(
                "no device-mapper (/dev/mapper/control is missing: CONFIG_BLK_DEV_DM or the \
                 dm-mod module)"
                    .into(),
            ));
        }
        let name = format!("pintrace-{}-{}", fault.name(), std::process::id());
        let sectors = device_sectors(lower)?;
        let table = dm_table(fault, lower, sectors).expect("a device-mapper fault");
        let out = Command::new(&dmsetup)
            // No udev may run (a guest): do not wait for it, make the node.
            .args(["create", "--noudevsync", &name, "--table", &table])
            .output()
            .with_context(|| format!("running {}", dmsetup.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if fault == Fault::DmFlakey && err.contains("flakey") {
                return Ok(Err(format!(
                    "the kernel has no dm-flakey target (CONFIG_DM_FLAKEY): {err}"
                )));
            }
            bail!("dmsetup create {name} --table '{table}': {err}");
        }
        let _ = Command::new(&dmsetup)
            .args(["mknodes", &name])
            .stdout(std::process::Stdio::null())
            .status();
        let path = PathBuf::from("/dev/mapper").join(&name);
        if !path.exists() {
            let _ = Command::new(&dmsetup)
                .args(["remove", "--noudevsync", &name])
                .status();
            bail!(
                "dmsetup created {name} but {} did not appear",
                path.display()
            );
        }
        Ok(Ok(DmDevice {
            path,
            name,
            dmsetup,
        }))
    }
}

impl Drop for DmDevice {
    fn drop(&mut self) {
        let ok = Command::new(&self.dmsetup)
            .args(["remove", "--noudevsync", "--retry", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            log::warn!("dmsetup remove {} failed", self.name);
        }
    }
}

/// 512-byte sectors of a block device, from /sys.
fn device_sectors(dev: &Path) -> Result<u64> {
    let name = sys_name(dev)?;
    let p = Path::new("/sys/class/block").join(&name).join("size");
    let t = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    t.trim()
        .parse()
        .with_context(|| format!("{}: not a number: {t:?}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "").unwrap();
    }

    #[test]
    fn classifies_devices_by_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        fs::create_dir_all(sys.join("class/block/nvme0n1")).unwrap();
        fs::create_dir_all(sys.join("class/nvme-generic/ng0n1")).unwrap();
        fs::create_dir_all(sys.join("class/block/nvme1n1")).unwrap();
        touch(&sys.join("class/block/nvme0n1p1/partition"));
        fs::create_dir_all(sys.join("class/block/sda/device/scsi_device")).unwrap();
        fs::create_dir_all(sys.join("class/block/loop0")).unwrap();
        assert_eq!(
            classify(sys, "nvme0n1"),
            Some(DeviceKind::Nvme {
                generic: Some(PathBuf::from("/dev/ng0n1"))
            })
        );
        assert_eq!(
            classify(sys, "nvme1n1"),
            Some(DeviceKind::Nvme { generic: None })
        );
        assert_eq!(classify(sys, "nvme0n1p1"), None);
        assert_eq!(classify(sys, "sda"), Some(DeviceKind::Scsi));
        assert_eq!(classify(sys, "loop0"), None);
        assert_eq!(classify(sys, "sdz"), None);
    }

    #[test]
    fn finds_scsi_debug_disks_by_model() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        for (n, m) in [("sdb", "scsi_debug      \n"), ("sda", "QEMU HARDDISK\n")] {
            let p = sys.join("class/block").join(n).join("device/model");
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, m).unwrap();
        }
        assert_eq!(scsi_debug_disks(sys), ["sdb"]);
    }

    #[test]
    fn device_mapper_tables() {
        let lower = Path::new("/dev/loop3");
        assert_eq!(
            dm_table(Fault::DmError, lower, 32768).as_deref(),
            Some("0 32768 error")
        );
        assert_eq!(
            dm_table(Fault::DmFlakey, lower, 32768).as_deref(),
            Some("0 32768 flakey /dev/loop3 0 0 1")
        );
        assert_eq!(dm_table(Fault::Hole, lower, 1), None);
    }
}
