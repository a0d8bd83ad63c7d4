//! The scratch disks every guest gets: an emulated NVMe controller with one
//! namespace and a SCSI disk on virtio-scsi, each backed by a sparse image
//! the harness creates for the run and deletes after it. They belong to the
//! harness, not to anyone's data: guest tests and `pintrace check` may
//! overwrite them freely. The guest finds them by the serial (NVMe) and the
//! model (SCSI) set here, read from /sys, never by guessing a device name,
//! and learns their device nodes from its environment (`ENV_NVME`,
//! `ENV_SCSI`). Optionally an Intel IOMMU sits in front of every PCI device.

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// The NVMe controller's serial (QEMU `nvme,serial=`; at most 20 bytes).
pub const NVME_SERIAL: &str = "pintrace-scratch";
/// The SCSI disk's product (`scsi-hd,product=`; INQUIRY's 16 bytes), read
/// back from /sys/block/sdX/device/model.
pub const SCSI_MODEL: &str = "pintrace-scratch";
/// The guest's environment names the scratch disks' nodes here.
pub const ENV_NVME: &str = "PINTRACE_SCRATCH_NVME";
pub const ENV_SCSI: &str = "PINTRACE_SCRATCH_SCSI";
/// Size of each scratch image (sparse: it costs the host only what the
/// guest writes).
pub const SCRATCH_MIB: u64 = 256;
/// Modules the scratch disks need. Debian's cloud kernels have the NVMe
/// driver built in; virtio_pci is a module on 6.1 and built in on 6.12
/// (docs/kernel.md, "Modules in the guests").
pub const MODULES: &[&str] = &["virtio_pci", "virtio_scsi", "sd_mod"];
/// Kernel parameter that turns the emulated IOMMU on: Debian's kernels are
/// built without CONFIG_INTEL_IOMMU_DEFAULT_ON.
pub const IOMMU_APPEND: &str = "intel_iommu=on";
/// How long the guest waits for the scratch disks to appear (the SCSI scan
/// and the NVMe namespace scan run asynchronously after the modules load).
pub const DISCOVERY_TENTHS: u32 = 150;

/// The devices of one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    pub scratch: bool,
    pub iommu: bool,
}

impl Default for Devices {
    fn default() -> Self {
        Self {
            scratch: true,
            iommu: false,
        }
    }
}

/// The two images of a boot's scratch disks.
#[derive(Debug, Clone, PartialEq)]
pub struct ScratchImages {
    pub nvme: PathBuf,
    pub scsi: PathBuf,
}

impl ScratchImages {
    /// Create both images, sparse and zero, in `dir` (the run's own folder,
    /// removed when the run ends).
    pub fn create(dir: &Path) -> Result<Self> {
        let images = Self {
            nvme: dir.join("scratch-nvme.img"),
            scsi: dir.join("scratch-scsi.img"),
        };
        for p in [&images.nvme, &images.scsi] {
            let f = std::fs::File::create(p)
                .with_context(|| format!("creating the scratch image {}", p.display()))?;
            f.set_len(SCRATCH_MIB << 20)
                .with_context(|| format!("sizing the scratch image {}", p.display()))?;
        }
        Ok(images)
    }
}

/// QEMU's `-drive` file value: commas doubled, as its option parser wants.
fn drive_file(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The QEMU arguments for `devices`. The IOMMU needs the q35 machine and
/// must come before every PCI device it translates for.
pub fn qemu_args(devices: Devices, images: Option<&ScratchImages>) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if devices.iommu {
        a.extend(["-machine", "q35", "-device", "intel-iommu"].map(String::from));
    }
    if let Some(i) = images.filter(|_| devices.scratch) {
        a.extend([
            "-drive".into(),
            format!("file={},if=none,format=raw,id=pt-nvme", drive_file(&i.nvme)),
            "-device".into(),
            format!("nvme,serial={NVME_SERIAL},drive=pt-nvme"),
            "-device".into(),
            "virtio-scsi-pci,id=pt-scsi".into(),
            "-drive".into(),
            format!("file={},if=none,format=raw,id=pt-sd", drive_file(&i.scsi)),
            "-device".into(),
            format!("scsi-hd,bus=pt-scsi.0,drive=pt-sd,product={SCSI_MODEL},serial={SCSI_MODEL}"),
        ]);
    }
    a
}

/// The `/init` fragment that waits for the scratch disks and exports their
/// nodes. `pintrace_scratch SYSFS` sets `scratch_nvme` and `scratch_scsi`
/// to the block devices whose serial or model is the harness's; the
/// per-path nodes of NVMe multipath (`nvmeXcYnZ`, no /dev node) are
/// skipped, the namespace's head (`nvmeXnY`) is the disk.
pub fn guest_script() -> String {
    DISCOVERY
        .replace("@NVME_SERIAL@", NVME_SERIAL)
        .replace("@SCSI_MODEL@", SCSI_MODEL)
        .replace("@ENV_NVME@", ENV_NVME)
        .replace("@ENV_SCSI@", ENV_SCSI)
        .replace("@TENTHS@", &DISCOVERY_TENTHS.to_string())
}

// Builtins only, but for the sleep: every fork costs under TCG.
const DISCOVERY: &str = r#"pintrace_scratch() {
    scratch_nvme= scratch_scsi=
    for b in "$1"/block/nvme*n* "$1"/block/sd*; do
        n=${b##*/}
        case "$n" in
        nvme*c*n*) continue ;;
        nvme*) f=$b/device/serial want=@NVME_SERIAL@ ;;
        *) f=$b/device/model want=@SCSI_MODEL@ ;;
        esac
        v=
        # sysfs pads both fields with blanks; read drops them.
        [ -r "$f" ] && read -r v < "$f"
        [ "$v" = "$want" ] || continue
        case "$n" in
        nvme*) scratch_nvme=${scratch_nvme:-$n} ;;
        *) scratch_scsi=${scratch_scsi:-$n} ;;
        esac
    done
}
i=0
while :; do
    pintrace_scratch /sys
    [ -n "$scratch_nvme" ] && [ -b "/dev/$scratch_nvme" ] &&
        [ -n "$scratch_scsi" ] && [ -b "/dev/$scratch_scsi" ] && break
    i=$((i + 1))
    if [ "$i" -ge @TENTHS@ ]; then
        warn "scratch disks: found only nvme=[$scratch_nvme] scsi=[$scratch_scsi] after $((@TENTHS@ / 10)) s"
        break
    fi
    sleep 0.1
done
[ -n "$scratch_nvme" ] && export @ENV_NVME@=/dev/$scratch_nvme
[ -n "$scratch_scsi" ] && export @ENV_SCSI@=/dev/$scratch_scsi
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn argv_has_both_disks_and_the_iommu_first() {
        let images = ScratchImages {
            nvme: "/t/a,b/n.img".into(),
            scsi: "/t/s.img".into(),
        };
        let a = qemu_args(
            Devices {
                scratch: true,
                iommu: true,
            },
            Some(&images),
        );
        assert_eq!(&a[..4], ["-machine", "q35", "-device", "intel-iommu"]);
        assert!(a.contains(&"file=/t/a,,b/n.img,if=none,format=raw,id=pt-nvme".to_string()));
        assert!(a.contains(&format!("nvme,serial={NVME_SERIAL},drive=pt-nvme")));
        assert!(a.contains(&"virtio-scsi-pci,id=pt-scsi".to_string()));
        let hd = a.iter().find(|x| x.starts_with("scsi-hd,")).unwrap();
        assert!(
            hd.contains("bus=pt-scsi.0") && hd.contains("drive=pt-sd"),
            "{hd}"
        );
        assert!(hd.contains(&format!("product={SCSI_MODEL}")), "{hd}");
        // The IOMMU precedes every PCI device.
        let iommu = a.iter().position(|x| x == "intel-iommu").unwrap();
        let nvme = a.iter().position(|x| x.starts_with("nvme,")).unwrap();
        assert!(iommu < nvme);

        let off = Devices {
            scratch: false,
            iommu: false,
        };
        assert!(qemu_args(off, Some(&images)).is_empty());
        assert!(qemu_args(Devices::default(), None).is_empty());
        assert_eq!(qemu_args(Devices::default(), Some(&images)).len(), 10);
    }

    #[test]
    fn names_fit_the_device_fields() {
        assert!(NVME_SERIAL.len() <= 20);
        assert!(SCSI_MODEL.len() <= 16);
    }

    #[test]
    fn images_are_sparse_and_sized() {
        let dir = std::env::temp_dir().join(format!("xtask-scratch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let i = ScratchImages::create(&dir).unwrap();
        for p in [&i.nvme, &i.scsi] {
            let m = std::fs::metadata(p).unwrap();
            assert_eq!(m.len(), SCRATCH_MIB << 20);
            use std::os::unix::fs::MetadataExt;
            assert!(m.blocks() * 512 < 1 << 20, "not sparse: {}", p.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A /sys as the 6.12 guest shows it: NVMe multipath (the head
    /// nvme0n1 on the subsystem, the path nvme0c0n1), an unrelated NVMe
    /// disk, the harness's SCSI disk after a scsi_debug one.
    #[test]
    fn discovery_finds_the_disks_by_serial_and_model() {
        let Ok(bb) = which::which("busybox") else {
            return;
        };
        let root = std::env::temp_dir().join(format!("xtask-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let put = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("block/nvme0n1/device/serial", "other-disk          \n");
        put(
            "block/nvme1n1/device/serial",
            &format!("{NVME_SERIAL:<20}\n"),
        );
        put(
            "block/nvme1c1n1/device/serial",
            &format!("{NVME_SERIAL:<20}\n"),
        );
        put("block/sda/device/model", "scsi_debug      \n");
        put("block/sdb/device/model", &format!("{SCSI_MODEL:<16}\n"));
        put("block/loop0/size", "0\n");
        let func = guest_script();
        let func = &func[..func.find("\ni=0\n").unwrap()];
        let script =
            format!("{func}\npintrace_scratch \"$1\"; echo \"$scratch_nvme $scratch_scsi\"\n");
        let out = Command::new(&bb)
            .args(["sh", "-c", &script, "sh"])
            .arg(&root)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "nvme1n1 sdb\n");
    }

    #[test]
    fn busybox_sh_parses_the_discovery() {
        let Ok(bb) = which::which("busybox") else {
            return;
        };
        let script = format!("warn() {{ :; }}\n{}", guest_script());
        assert!(!script.contains('@'), "unreplaced placeholder");
        let ok = Command::new(bb)
            .args(["sh", "-n", "-c", &script])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}
