//! `cargo xtask check-kernel`: the CI gate for a (patched) kernel. Checks
//! the kernel's .config for what pintrace needs, boots the kernel in QEMU
//! with the mkfs tools and the file system modules, runs `pintrace check`
//! inside, brings the JSON and JUnit reports out, and exits with check's
//! code (0 pass, 1 findings, 2 could not run).

use crate::debian::{self, KernelSpec};
use crate::initramfs::Payload;
use crate::qemu::{self, BootOpts, BootRequest};
use crate::util::{self, Workspace};
use crate::vm::{self, GUEST_PINTRACE};
use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct CheckKernelArgs {
    /// 6.1 or 6.12 (Debian cloud kernels) or the path of a bzImage.
    #[arg(long, default_value = "6.12", value_name = "6.1|6.12|PATH")]
    pub kernel: String,
    /// The kernel's modules: a lib/modules/<release> tree (`make
    /// modules_install INSTALL_MOD_PATH=...`) or a folder of .ko files.
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// The kernel's .config [default: the Debian package's, or the .config
    /// of the tree the bzImage was built in].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// `pintrace check --quick` (every mode and buffer kind once).
    #[arg(long)]
    pub quick: bool,
    /// Only the scenarios matching these globs (`pintrace check --list`).
    #[arg(long, value_name = "PATTERN")]
    pub scenarios: Option<String>,
    /// Where check.json and check.xml go [default: target/pintrace-check/<kernel>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Kill the guest after this many seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub timeout: u64,
    #[command(flatten)]
    pub boot: BootOpts,
}

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

/// Optional pieces: the scenarios that need them are skipped without.
const OPTIONAL: &[(&str, &str, Option<&str>)] = &[
    ("EXT4_FS", "ext4 scenarios", Some("ext4")),
    ("XFS_FS", "xfs scenarios", Some("xfs")),
    ("BTRFS_FS", "btrfs scenarios", Some("btrfs")),
    ("FUSE_FS", "FUSE scenarios", Some("fuse")),
    ("NFSD", "NFS scenarios (server)", Some("nfsd")),
    ("NFS_FS", "NFS scenarios (client)", Some("nfs")),
    ("IO_URING", "io_uring scenarios", None),
    ("AIO", "aio scenarios", None),
    ("TRANSPARENT_HUGEPAGE", "thp buffers", None),
    ("HUGETLBFS", "hugetlb buffers", None),
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
}

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
    for (opt, what, module) in OPTIONAL {
        match (set(cfg, opt), module) {
            (None, _) => v.skips.push(format!("CONFIG_{opt} is not set: no {what}")),
            (Some("m"), Some(m)) => v.modules.push((*m).into()),
            _ => {}
        }
    }
    v
}

/// The .config of `spec`: given, the Debian package's, or the build tree's.
fn find_config(spec: &KernelSpec, image: &Path, given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--config {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let candidates: Vec<PathBuf> = match spec {
        KernelSpec::Debian(_) => {
            // boot/vmlinuz-<release> beside boot/config-<release>.
            let name = image.file_name().unwrap_or_default().to_string_lossy();
            let release = name.trim_start_matches("vmlinuz-");
            vec![image.with_file_name(format!("config-{release}"))]
        }
        // arch/x86/boot/bzImage in a build tree: .config three levels up.
        KernelSpec::Path(_) => image
            .ancestors()
            .skip(1)
            .take(4)
            .map(|d| d.join(".config"))
            .collect(),
    };
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
            "no .config found for {} (looked beside it and in the tree above): give --config PATH",
            image.display()
        )
        })
}

const GUEST_OUT: &str = "/tmp/pintrace-out";
const MKFS: &[&str] = &["mkfs.ext4", "mkfs.xfs", "mkfs.btrfs"];

/// A host tool on PATH or in the sbin directories.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs the gate; returns the process exit code.
pub fn check_kernel(ws: &Workspace, args: &CheckKernelArgs) -> Result<u8> {
    let spec = KernelSpec::parse(&args.kernel);
    if let Some(m) = &args.modules {
        if !m.is_dir() {
            eprintln!("check-kernel: --modules {}: not a folder", m.display());
            return Ok(2);
        }
    }
    // A fresh machine: packages, rust-src, bpf-linker (quick when present).
    crate::setup::setup(&crate::setup::SetupArgs::default())?;
    let kernel = debian::resolve(ws, &spec, args.modules.as_deref())?;
    let config_path = match find_config(&spec, &kernel.image, args.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("check-kernel: {e:#}");
            return Ok(2);
        }
    };
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("--config {}: reading", config_path.display()))?;
    let verdict = check_config(&parse_config(&text));
    println!("check-kernel: config {}", config_path.display());
    if !verdict.missing.is_empty() {
        eprintln!(
            "check-kernel: the kernel lacks what pintrace needs; set:\n  {}",
            verdict.missing.join("\n  ")
        );
        return Ok(2);
    }
    for s in &verdict.skips {
        println!("check-kernel: note: {s} (skipped)");
    }

    let built = vm::build(ws, false)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| ws.root.join("target/pintrace-check").join(&kernel.label));
    util::create_dir(&out)?;

    // check writes check.json and check.xml whole (temporary file, rename):
    // a guest that dies mid-check leaves no half report to copy out.
    let mut check = format!("{GUEST_PINTRACE} check --out {GUEST_OUT}");
    if args.quick {
        check += " --quick";
    }
    if let Some(p) = &args.scenarios {
        check += &format!(" --scenarios {}", util::shell_quote(p));
    }
    let payload = Payload::new(["sh", "-c", &check]);
    let mut req = BootRequest::new(kernel, payload);
    req.modules = verdict.modules.clone();
    req.timeout = Duration::from_secs(args.timeout);
    args.boot.apply(&mut req);
    req.binaries
        .push(("pintrace".into(), built.pintrace.clone()));
    for tool in MKFS {
        match find_tool(tool) {
            Some(p) => req.binaries.push(((*tool).into(), p)),
            None => println!("check-kernel: note: {tool} is not on this machine: its scenarios will be skipped (run `cargo xtask setup`)"),
        }
    }
    let outcome = qemu::boot(ws, &req)?;
    vm::report(&outcome);
    let mut copied = Vec::new();
    for e in &outcome.exports {
        let Some(name) = e.file_name() else { continue };
        let dest = out.join(name);
        std::fs::copy(e, &dest)
            .with_context(|| format!("copying {} to {}", e.display(), dest.display()))?;
        copied.push(dest);
    }
    if !outcome.retried.is_empty() {
        annotate_reports(&copied, &outcome.retried)?;
    }
    let json = out.join("check.json");
    let code = match &outcome.verdict {
        crate::console::Verdict::Pass => 0,
        crate::console::Verdict::Fail(c @ 1..=2) => *c as u8,
        _ => 2,
    };
    match std::fs::read_to_string(&json)
        .ok()
        .filter(|_| copied.contains(&json))
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        Some(report) => print!("{}", summary(&report)),
        None => println!("check-kernel: no report came back (see the log above)"),
    }
    for c in &copied {
        println!("check-kernel: report {}", c.display());
    }
    println!(
        "check-kernel: {}",
        match code {
            0 => "pass",
            1 => "FAIL: findings",
            _ => "could not run",
        }
    );
    Ok(code)
}

/// Says in check's reports that the guest was booted again after a stale
/// patch, so that a CI page shows it beside the verdict: `harness` in the
/// JSON, `harness.retried` properties in the JUnit suite. Written whole.
fn annotate_reports(reports: &[PathBuf], retried: &[qemu::Retry]) -> Result<()> {
    let causes: Vec<String> = retried.iter().map(|r| r.cause.to_string()).collect();
    for path in reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let new = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                v["harness"] = serde_json::json!({
                    "boots": retried.len() + 1,
                    "retried_after": causes,
                });
                serde_json::to_string_pretty(&v)? + "\n"
            }
            Some("xml") => match junit_with_retries(&text, &causes) {
                Some(t) => t,
                None => continue,
            },
            _ => continue,
        };
        util::write_whole(path, new.as_bytes())?;
    }
    Ok(())
}

/// The JUnit report with one `harness.retried` property per stale patch in
/// its first `<properties>`.
fn junit_with_retries(xml: &str, causes: &[String]) -> Option<String> {
    let at = xml.find("<properties>")? + "<properties>".len();
    let props: String = causes
        .iter()
        .map(|c| {
            format!(
                "\n<property name=\"harness.retried\" value=\"{}\"/>",
                xml_escape(&format!("a boot died of {c}"))
            )
        })
        .collect();
    Some(format!("{}{props}{}", &xml[..at], &xml[at..]))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The totals and what failed, from check's JSON report.
pub fn summary(r: &serde_json::Value) -> String {
    let mut s = String::new();
    for sc in r["scenarios"].as_array().into_iter().flatten() {
        let status = sc["status"].as_str().unwrap_or("");
        if status == "fail" || status == "error" {
            s += &format!(
                "  {} {}:\n",
                status.to_uppercase(),
                sc["name"].as_str().unwrap_or("?")
            );
            if let Some(why) = sc["reason"].as_str() {
                s += &format!("    {why}\n");
            }
            for c in sc["checks"].as_array().into_iter().flatten() {
                if c["ok"] == false {
                    s += &format!(
                        "    {}: {}\n",
                        c["name"].as_str().unwrap_or(""),
                        c["detail"].as_str().unwrap_or("")
                    );
                }
            }
            for f in sc["findings"].as_array().into_iter().flatten() {
                s += &format!(
                    "    {}: {}\n",
                    f["kind"].as_str().unwrap_or(""),
                    f["detail"].as_str().unwrap_or("")
                );
            }
        }
    }
    s + &format!(
        "check-kernel: {}: {} passed, {} failed, {} skipped, {} could not run\n",
        r["kernel"].as_str().unwrap_or("?"),
        r["passed"],
        r["failed"],
        r["skipped"],
        r["errors"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# comment\nCONFIG_BPF_SYSCALL=y\nCONFIG_BPF_EVENTS=y\nCONFIG_DEBUG_INFO_BTF=y\n\
        CONFIG_KPROBES=y\nCONFIG_BLK_DEV_LOOP=m\nCONFIG_EXT4_FS=y\nCONFIG_XFS_FS=m\n\
        CONFIG_BTRFS_FS=m\nCONFIG_FUSE_FS=y\nCONFIG_NFSD=m\nCONFIG_NFS_FS=m\nCONFIG_IO_URING=y\n\
        CONFIG_AIO=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_HUGETLBFS=y\nCONFIG_LOCALVERSION=\"-x\"\n";

    #[test]
    fn retries_go_into_the_junit_properties() {
        let xml = "<?xml version=\"1.0\"?>\n<testsuites><testsuite name=\"x\"><properties>\n\
                   <property name=\"kernel\" value=\"6.12\"/></properties></testsuite></testsuites>";
        let got = junit_with_retries(
            xml,
            &["int3 at f+0x5 over a finished patch (now a \"call\")".into()],
        )
        .unwrap();
        assert!(
            got.contains("<properties>\n<property name=\"harness.retried\" value=\"a boot died of int3 at f+0x5 over a finished patch (now a &quot;call&quot;)\"/>\n<property name=\"kernel\""),
            "{got}"
        );
        assert_eq!(junit_with_retries("<testsuites/>", &[]), None);
    }

    #[test]
    fn a_complete_config_passes_and_loads_its_modules() {
        let v = check_config(&parse_config(GOOD));
        assert!(v.missing.is_empty() && v.skips.is_empty(), "{v:?}");
        assert_eq!(v.modules, ["loop", "xfs", "btrfs", "nfsd", "nfs"]);
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
                }
            }
        }
    }

    #[test]
    fn summary_names_failures() {
        let r = serde_json::json!({
            "kernel": "6.12.0", "passed": 1, "failed": 1, "skipped": 0, "errors": 0,
            "scenarios": [
                {"name": "block/psync/anon/read", "status": "pass", "checks": []},
                {"name": "ext4/aio/anon/write", "status": "fail",
                 "checks": [{"name": "balance", "ok": false, "detail": "FOLL_PIN: 3 taken, 2 released, 1 held"}],
                 "findings": [{"kind": "leak_owner_exited", "detail": "FOLL_PIN 1 ref(s) held"}]}
            ]
        });
        let s = summary(&r);
        assert!(s.contains("FAIL ext4/aio/anon/write"), "{s}");
        assert!(
            s.contains("balance: FOLL_PIN: 3 taken, 2 released, 1 held"),
            "{s}"
        );
        assert!(s.contains("leak_owner_exited"), "{s}");
        assert!(s.contains("1 passed, 1 failed"), "{s}");
    }
}
