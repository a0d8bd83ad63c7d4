//! The kernel .config check of `cargo xtask check-kernel`: what pintrace
//! cannot trace without (refused), and the optional pieces whose scenarios
//! are skipped without, with the modules they put in the guest.

use std::collections::BTreeMap;

/// One requirement: any of `options` set (`=y` or `=m`) satisfies it.
struct Need {
    what: &'static str,
    options: &'static [&'static str],
}

/// Without these pintrace cannot trace at all.
const REQUIRED: &[Need] = &[
    Need {
        what: "BPF system call",
        options: &["BPF_SYSCALL"],
    },
    Need {
        what: "BPF on kprobes and tracepoints",
        options: &["BPF_EVENTS"],
    },
    Need {
        what: "kernel BTF",
        options: &["DEBUG_INFO_BTF"],
    },
    Need {
        what: "kprobes, or fentry (BPF trampolines)",
        options: &["KPROBES", "DYNAMIC_FTRACE_WITH_DIRECT_CALLS"],
    },
    Need {
        what: "loop block devices",
        options: &["BLK_DEV_LOOP"],
    },
];

/// How an optional piece's module goes into the guest when it is `=m`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Load {
    /// Built in or no module of its own.
    No,
    /// insmod at boot.
    Boot(&'static str),
    /// Carried, loaded by whoever needs it (`modprobe NAME PARAMS`): what
    /// only some scenarios use, so that a boot does not pay for it.
    OnDemand(&'static str),
}

/// Optional pieces: the scenarios that need them are skipped without.
const OPTIONAL: &[(&str, &str, Load)] = &[
    ("EXT4_FS", "ext4 scenarios", Load::Boot("ext4")),
    ("XFS_FS", "xfs scenarios", Load::Boot("xfs")),
    ("BTRFS_FS", "btrfs scenarios", Load::Boot("btrfs")),
    ("FUSE_FS", "FUSE scenarios", Load::Boot("fuse")),
    ("NFSD", "NFS scenarios (server)", Load::OnDemand("nfsd")),
    ("NFSD_V4", "NFS scenarios (an NFSv4 server)", Load::No),
    ("NFS_FS", "NFS scenarios (client)", Load::OnDemand("nfs")),
    (
        "NFS_V4",
        "NFS scenarios (an NFSv4 client)",
        Load::OnDemand("nfsv4"),
    ),
    // check mounts its loopback export with vers=4.2.
    ("NFS_V4_2", "NFS scenarios (an NFSv4.2 client)", Load::No),
    ("BLK_DEV_NVME", "the NVMe scratch disk", Load::Boot("nvme")),
    (
        "SCSI_VIRTIO",
        "the SCSI scratch disk",
        Load::Boot("virtio_scsi"),
    ),
    (
        "BLK_DEV_SD",
        "the SCSI scratch disk (sd)",
        Load::Boot("sd_mod"),
    ),
    (
        "CHR_DEV_SG",
        "SCSI generic (sg) scenarios",
        Load::OnDemand("sg"),
    ),
    (
        "SCSI_DEBUG",
        "scsi_debug disks",
        Load::OnDemand("scsi_debug"),
    ),
    (
        "BLK_DEV_DM",
        "device-mapper scenarios (dm-error)",
        Load::OnDemand("dm_mod"),
    ),
    (
        "DM_FLAKEY",
        "dm-flakey scenarios",
        Load::OnDemand("dm_flakey"),
    ),
    ("UDF_FS", "UDF scenarios", Load::OnDemand("udf")),
    (
        "VFAT_FS",
        "vfat scenarios (legacy direct-io)",
        Load::Boot("vfat"),
    ),
    ("IO_URING", "io_uring scenarios", Load::No),
    ("AIO", "aio scenarios", Load::No),
    ("TRANSPARENT_HUGEPAGE", "thp buffers", Load::No),
    ("HUGETLBFS", "hugetlb buffers", Load::No),
];

/// `CONFIG_X=y|m|...` lines of a .config (comments and `is not set` are absent).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

fn set(cfg: &BTreeMap<String, String>, opt: &str) -> Option<&'static str> {
    match cfg.get(opt).map(String::as_str) {
        Some("y") => Some("y"),
        Some("m") => Some("m"),
        _ => None,
    }
}

/// What the config check found.
#[derive(Debug, Default, PartialEq)]
pub struct ConfigVerdict {
    /// Requirements not met, each with the options that would meet it.
    pub missing: Vec<String>,
    /// Optional pieces absent, with what will be skipped.
    pub skips: Vec<String>,
    /// Modules to load in the guest (`=m` options).
    pub modules: Vec<String>,
    /// Modules to carry into the guest unloaded (`=m` options).
    pub on_demand: Vec<String>,
    /// Kernel parameters for what is built in and would otherwise be given
    /// them at `modprobe`.
    pub cmdline: Vec<String>,
}

/// Parameters of built-in (`=y`) pieces that check loads with them when
/// they are modules: scsi_debug's disk is made at boot, and check's
/// scenarios want the size its `modprobe scsi_debug dev_size_mb=32` gives.
const BUILT_IN_PARAMS: &[(&str, &str)] = &[("SCSI_DEBUG", "scsi_debug.dev_size_mb=32")];

pub fn check_config(cfg: &BTreeMap<String, String>) -> ConfigVerdict {
    let mut v = ConfigVerdict::default();
    for n in REQUIRED {
        if !n.options.iter().any(|o| set(cfg, o).is_some()) {
            let names: Vec<String> = n.options.iter().map(|o| format!("CONFIG_{o}")).collect();
            v.missing
                .push(format!("{} ({})", names.join(" or "), n.what));
        }
    }
    if set(cfg, "BLK_DEV_LOOP") == Some("m") {
        v.modules.push("loop".into());
    }
    for (opt, what, load) in OPTIONAL {
        match (set(cfg, opt), load) {
            (None, _) => v.skips.push(format!("CONFIG_{opt} is not set: no {what}")),
            (Some("m"), Load::Boot(m)) => v.modules.push((*m).into()),
            (Some("m"), Load::OnDemand(m)) => v.on_demand.push((*m).into()),
            _ => {}
        }
    }
    for (opt, param) in BUILT_IN_PARAMS {
        if set(cfg, opt) == Some("y") {
            v.cmdline.push((*param).into());
        }
    }
    // vfat's mount needs its character sets (modules when it is one).
    if set(cfg, "VFAT_FS") == Some("m") {
        for (opt, m) in [
            ("NLS_CODEPAGE_437", "nls_cp437"),
            ("NLS_ISO8859_1", "nls_iso8859_1"),
        ] {
            if set(cfg, opt) == Some("m") {
                v.modules.push(m.into());
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# comment\nCONFIG_BPF_SYSCALL=y\nCONFIG_BPF_EVENTS=y\nCONFIG_DEBUG_INFO_BTF=y\n\
        CONFIG_KPROBES=y\nCONFIG_BLK_DEV_LOOP=m\nCONFIG_EXT4_FS=y\nCONFIG_XFS_FS=m\n\
        CONFIG_BTRFS_FS=m\nCONFIG_FUSE_FS=y\nCONFIG_NFSD=m\nCONFIG_NFS_FS=m\nCONFIG_IO_URING=y\n\
        CONFIG_AIO=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_HUGETLBFS=y\nCONFIG_LOCALVERSION=\"-x\"\n\
        CONFIG_NFSD_V4=y\nCONFIG_NFS_V4=m\nCONFIG_NFS_V4_2=y\nCONFIG_BLK_DEV_NVME=y\nCONFIG_SCSI_VIRTIO=m\n\
        CONFIG_BLK_DEV_SD=m\nCONFIG_CHR_DEV_SG=m\nCONFIG_SCSI_DEBUG=m\nCONFIG_BLK_DEV_DM=m\n\
        CONFIG_DM_FLAKEY=m\nCONFIG_UDF_FS=m\nCONFIG_VFAT_FS=m\nCONFIG_NLS_CODEPAGE_437=m\n\
        CONFIG_NLS_ISO8859_1=y\n";

    #[test]
    fn a_complete_config_passes_and_loads_its_modules() {
        let v = check_config(&parse_config(GOOD));
        assert!(v.missing.is_empty() && v.skips.is_empty(), "{v:?}");
        assert_eq!(
            v.modules,
            [
                "loop",
                "xfs",
                "btrfs",
                "virtio_scsi",
                "sd_mod",
                "vfat",
                "nls_cp437"
            ]
        );
        // What only some scenarios use is carried, not loaded; scsi_debug
        // makes a disk as it loads.
        assert_eq!(
            v.on_demand,
            [
                "nfsd",
                "nfs",
                "nfsv4",
                "sg",
                "scsi_debug",
                "dm_mod",
                "dm_flakey",
                "udf"
            ]
        );
        assert_eq!(parse_config(GOOD)["LOCALVERSION"], "-x");
    }

    #[test]
    fn missing_requirements_are_named() {
        let text = GOOD
            .replace(
                "CONFIG_DEBUG_INFO_BTF=y",
                "# CONFIG_DEBUG_INFO_BTF is not set",
            )
            .replace("CONFIG_KPROBES=y", "");
        let v = check_config(&parse_config(&text));
        assert_eq!(v.missing.len(), 2, "{v:?}");
        assert!(v.missing[0].contains("CONFIG_DEBUG_INFO_BTF"), "{v:?}");
        assert!(
            v.missing[1].contains("CONFIG_KPROBES or CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS"),
            "{v:?}"
        );
        // fentry alone is enough.
        let text = GOOD.replace(
            "CONFIG_KPROBES=y",
            "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y",
        );
        assert!(check_config(&parse_config(&text)).missing.is_empty());
    }

    #[test]
    fn missing_file_systems_become_skips() {
        let text = GOOD
            .replace("CONFIG_XFS_FS=m", "")
            .replace("CONFIG_NFSD=m", "");
        let v = check_config(&parse_config(&text));
        assert!(v.missing.is_empty());
        assert_eq!(v.skips.len(), 2, "{v:?}");
        assert!(v.skips[0].contains("CONFIG_XFS_FS") && v.skips[0].contains("xfs"));
        assert!(v.skips[1].contains("CONFIG_NFSD"));
        assert!(!v.modules.contains(&"xfs".to_string()));
    }

    #[test]
    fn a_built_in_scsi_debug_gets_its_size_on_the_command_line() {
        assert!(check_config(&parse_config(GOOD)).cmdline.is_empty());
        let v = check_config(&parse_config(
            &GOOD.replace("CONFIG_SCSI_DEBUG=m", "CONFIG_SCSI_DEBUG=y"),
        ));
        assert_eq!(v.cmdline, ["scsi_debug.dev_size_mb=32"]);
        assert!(!v.on_demand.contains(&"scsi_debug".to_string()));
    }

    #[test]
    fn the_new_direct_io_pieces_are_optional_and_say_what_they_enable() {
        for (opt, want) in [
            ("CONFIG_DM_FLAKEY=m", "dm-flakey"),
            ("CONFIG_UDF_FS=m", "UDF"),
            ("CONFIG_SCSI_DEBUG=m", "scsi_debug"),
            ("CONFIG_BLK_DEV_NVME=y", "NVMe"),
            ("CONFIG_CHR_DEV_SG=m", "sg"),
            ("CONFIG_NFS_V4=m", "NFSv4 client"),
        ] {
            let v = check_config(&parse_config(&GOOD.replace(opt, "")));
            assert!(v.missing.is_empty(), "{opt}: {v:?}");
            assert_eq!(v.skips.len(), 1, "{opt}: {v:?}");
            assert!(v.skips[0].contains(want), "{opt}: {v:?}");
        }
    }

    #[test]
    fn the_debian_configs_pass() {
        // The Debian kernels this project boots, when cached.
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pintrace-vm/kernels");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let boot = e.path().join("boot");
            for f in std::fs::read_dir(&boot).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().starts_with("config-") {
                    let v =
                        check_config(&parse_config(&std::fs::read_to_string(f.path()).unwrap()));
                    assert!(v.missing.is_empty(), "{}: {v:?}", f.path().display());
                    // Every Direct I/O path the guests drive is there.
                    for s in &v.skips {
                        assert!(
                            ![
                                "NVMe",
                                "SCSI",
                                "sg",
                                "scsi_debug",
                                "device-mapper",
                                "flakey",
                                "UDF",
                                "NFS",
                                "vfat"
                            ]
                            .iter()
                            .any(|w| s.contains(w)),
                            "{}: {s}",
                            f.path().display()
                        );
                    }
                }
            }
        }
    }
}
