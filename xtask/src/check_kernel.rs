//! `cargo xtask check-kernel`: the CI gate for a (patched) kernel. Checks
//! the kernel's .config for what pintrace needs, boots the kernel in QEMU
//! with the mkfs tools and the file system modules, runs `pintrace check`
//! inside, brings the JSON and JUnit reports out, and exits with check's
//! code (0 pass, 1 findings, 2 could not run).

use crate::debian::{self, Kernel, KernelSpec};
use crate::devices;
use crate::initramfs::Payload;
use crate::kconfig::{check_config, parse_config};
use crate::ktree;
use crate::qemu::{self, BootOpts, BootRequest};
use crate::util::{self, Workspace};
use crate::vm::{self, MachineOpts, GUEST_PINTRACE};
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct CheckKernelArgs {
    /// 6.1 or 6.12 (Debian cloud kernels) or the path of a bzImage.
    #[arg(long, default_value = "6.12", value_name = "6.1|6.12|PATH")]
    pub kernel: String,
    /// The kernel's modules: a lib/modules/<release> tree (`make
    /// modules_install INSTALL_MOD_PATH=...`) or a folder of .ko files.
    /// Leave it out for a kernel with everything check uses built in.
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// A kernel source tree to build and check instead of --kernel:
    /// kernel/check.config is merged into its config (the build folder's
    /// .config, else x86_64_defconfig), the bzImage is built out of tree
    /// with every core, then gated. Reusing the build folder makes the
    /// build after a change incremental.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kernel", "modules", "config"])]
    pub tree: Option<PathBuf>,
    /// The build folder of --tree (`make O=DIR`) [default:
    /// target/pintrace-kernel/build-<tree's folder name>].
    #[arg(long, value_name = "DIR", requires = "tree")]
    pub build_dir: Option<PathBuf>,
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
    pub machine: MachineOpts,
    #[command(flatten)]
    pub boot: BootOpts,
}

/// `pintrace check`'s flag for a block device it may overwrite, given once
/// per scratch disk the guest found (`devices::ENV_NVME`, `ENV_SCSI`).
pub const CHECK_SCRATCH_FLAG: &str = "--scratch-device";

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

/// The check command line for the guest's shell: the scratch disks go to
/// check when the guest found them and its check knows the flag (an older
/// agent would refuse it).
pub fn check_line(quick: bool, scenarios: Option<&str>) -> String {
    let mut check = format!("{GUEST_PINTRACE} check --out {GUEST_OUT}");
    if quick {
        check += " --quick";
    }
    if let Some(p) = scenarios {
        check += &format!(" --scenarios {}", util::shell_quote(p));
    }
    format!(
        "sd=; if {GUEST_PINTRACE} check --help 2>/dev/null | grep -q -e '{CHECK_SCRATCH_FLAG}'; then \
         for d in \"${nvme}\" \"${scsi}\"; do [ -n \"$d\" ] && sd=\"$sd {CHECK_SCRATCH_FLAG} $d\"; done; \
         fi; exec {check} $sd",
        nvme = devices::ENV_NVME,
        scsi = devices::ENV_SCSI,
    )
}

/// A host tool on PATH or in the sbin directories.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What a gate run left: check's exit code, its JSON report when one came
/// back, and the tree it built.
pub struct Gate {
    pub code: u8,
    pub report: Option<serde_json::Value>,
    pub tree: Option<ktree::Built>,
}

impl Gate {
    fn early(code: u8) -> Self {
        Gate {
            code,
            report: None,
            tree: None,
        }
    }
}

/// Runs the gate; returns the process exit code.
pub fn check_kernel(ws: &Workspace, args: &CheckKernelArgs) -> Result<u8> {
    Ok(gate(ws, args)?.code)
}

/// Builds the tree (with `--tree`), checks the config, boots the kernel
/// and runs check in it.
pub fn gate(ws: &Workspace, args: &CheckKernelArgs) -> Result<Gate> {
    let spec = KernelSpec::parse(&args.kernel);
    let default_out = |label: &str| {
        args.out
            .clone()
            .unwrap_or_else(|| ws.root.join("target/pintrace-check").join(label))
    };
    if let Some(m) = &args.modules {
        if !m.is_dir() {
            eprintln!("check-kernel: --modules {}: not a folder", m.display());
            return Ok(Gate::early(2));
        }
    }
    // A fresh machine: packages, rust-src, bpf-linker (quick when present).
    crate::setup::setup(&crate::setup::SetupArgs::default())?;
    let (kernel, config_path, tree) = match &args.tree {
        Some(dir) => {
            let bd = args
                .build_dir
                .clone()
                .unwrap_or_else(|| ktree::default_build_dir(ws, dir));
            let built = ktree::build(ws, dir, &bd)?;
            let kernel = Kernel {
                label: built.release.clone(),
                image: built.image.clone(),
                modules: built.modules.clone(),
                origin: format!("{} ({})", dir.display(), built.release),
            };
            (kernel, built.config.clone(), Some(built))
        }
        None => {
            let kernel = debian::resolve(ws, &spec, args.modules.as_deref())?;
            match find_config(&spec, &kernel.image, args.config.as_deref()) {
                Ok(p) => (kernel, p, None),
                Err(e) => {
                    eprintln!("check-kernel: {e:#}");
                    return Ok(Gate::early(2));
                }
            }
        }
    };
    let out = default_out(&kernel.label);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("--config {}: reading", config_path.display()))?;
    let verdict = check_config(&parse_config(&text));
    println!("check-kernel: config {}", config_path.display());
    if !verdict.missing.is_empty() {
        eprintln!(
            "check-kernel: the kernel lacks what pintrace needs; set:\n  {}",
            verdict.missing.join("\n  ")
        );
        return Ok(Gate {
            tree,
            ..Gate::early(2)
        });
    }
    for s in &verdict.skips {
        println!("check-kernel: note: {s} (skipped)");
    }

    let built = vm::build(ws, false)?;
    util::create_dir(&out)?;

    // check writes check.json and check.xml whole (temporary file, rename):
    // a guest that dies mid-check leaves no half report to copy out.
    let check = check_line(args.quick, args.scenarios.as_deref());
    let payload = Payload::new(["sh", "-c", &check]);
    let mut req = BootRequest::new(kernel, payload);
    req.modules = verdict.modules.clone();
    req.on_demand = verdict.on_demand.clone();
    req.append = verdict.cmdline.clone();
    req.timeout = Duration::from_secs(args.timeout);
    args.machine.apply(&mut req);
    args.boot.apply(&mut req);
    req.binaries
        .push(("pintrace".into(), built.pintrace.clone()));
    for tool in MKFS.iter().chain(vm::DIO_TOOLS) {
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
    annotate_reports(&copied, &annotations(&outcome.retried, tree.as_ref()))?;
    let json = out.join("check.json");
    let code = match &outcome.verdict {
        crate::console::Verdict::Pass => 0,
        crate::console::Verdict::Fail(c @ 1..=2) => *c as u8,
        _ => 2,
    };
    let report = std::fs::read_to_string(&json)
        .ok()
        .filter(|_| copied.contains(&json))
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    match &report {
        Some(report) => print!("{}", summary(report)),
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
    Ok(Gate { code, report, tree })
}

/// What the harness adds to check's reports: JSON members, and JUnit
/// properties of the first suite.
#[derive(Default)]
struct Annotations {
    json: Vec<(&'static str, serde_json::Value)>,
    props: Vec<(String, String)>,
}

/// The boots after a stale patch (`harness`) and the tree built
/// (`tree`), so that a CI page shows them beside the verdict.
fn annotations(retried: &[qemu::Retry], tree: Option<&ktree::Built>) -> Annotations {
    let mut a = Annotations::default();
    if !retried.is_empty() {
        let causes: Vec<String> = retried.iter().map(|r| r.cause.to_string()).collect();
        a.props.extend(
            causes
                .iter()
                .map(|c| ("harness.retried".into(), format!("a boot died of {c}"))),
        );
        a.json.push((
            "harness",
            serde_json::json!({ "boots": retried.len() + 1, "retried_after": causes }),
        ));
    }
    if let Some(t) = tree {
        a.props.push(("tree.release".into(), t.release.clone()));
        if let Some(d) = &t.describe {
            a.props.push(("tree.describe".into(), d.clone()));
        }
        a.props
            .push(("tree.build_seconds".into(), format!("{:.0}", t.build_secs)));
        a.json.push((
            "tree",
            serde_json::json!({
                "release": t.release,
                "describe": t.describe,
                "build_seconds": (t.build_secs * 10.0).round() / 10.0,
                "config": t.config,
                "fragment_not_as_asked": t.not_as_asked,
            }),
        ));
    }
    a
}

/// Adds the annotations to check's reports, each written whole.
fn annotate_reports(reports: &[PathBuf], a: &Annotations) -> Result<()> {
    if a.json.is_empty() && a.props.is_empty() {
        return Ok(());
    }
    for path in reports {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let new = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                for (k, val) in &a.json {
                    v[*k] = val.clone();
                }
                serde_json::to_string_pretty(&v)? + "\n"
            }
            Some("xml") => match junit_with_props(&text, &a.props) {
                Some(t) => t,
                None => continue,
            },
            _ => continue,
        };
        util::write_whole(path, new.as_bytes())?;
    }
    Ok(())
}

/// The JUnit report with `props` in its first `<properties>`.
fn junit_with_props(xml: &str, props: &[(String, String)]) -> Option<String> {
    let at = xml.find("<properties>")? + "<properties>".len();
    let props: String = props
        .iter()
        .map(|(n, v)| {
            format!(
                "\n<property name=\"{}\" value=\"{}\"/>",
                xml_escape(n),
                xml_escape(v)
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

    #[test]
    fn retries_go_into_the_junit_properties() {
        let xml = "<?xml version=\"1.0\"?>\n<testsuites><testsuite name=\"x\"><properties>\n\
                   <property name=\"kernel\" value=\"6.12\"/></properties></testsuite></testsuites>";
        let got = junit_with_props(
            xml,
            &[(
                "harness.retried".into(),
                "a boot died of int3 at f+0x5 over a finished patch (now a \"call\")".into(),
            )],
        )
        .unwrap();
        assert!(
            got.contains("<properties>\n<property name=\"harness.retried\" value=\"a boot died of int3 at f+0x5 over a finished patch (now a &quot;call&quot;)\"/>\n<property name=\"kernel\""),
            "{got}"
        );
        assert_eq!(junit_with_props("<testsuites/>", &[]), None);
    }

    #[test]
    fn check_gets_the_scratch_disks_when_it_knows_the_flag() {
        let line = check_line(true, Some("block/*"));
        assert!(
            line.contains(&format!("grep -q -e '{CHECK_SCRATCH_FLAG}'")),
            "{line}"
        );
        assert!(
            line.contains("\"$PINTRACE_SCRATCH_NVME\" \"$PINTRACE_SCRATCH_SCSI\""),
            "{line}"
        );
        assert!(
            line.ends_with("check --out /tmp/pintrace-out --quick --scenarios 'block/*' $sd"),
            "{line}"
        );
        let Ok(bb) = which::which("busybox") else {
            return;
        };
        // With a stand-in agent that knows the flag, both disks reach it.
        let dir = std::env::temp_dir().join(format!("xtask-check-line-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let agent = dir.join("pintrace");
        std::fs::write(
            &agent,
            format!("#!/bin/sh\n[ \"$2\" = --help ] && echo '  {CHECK_SCRATCH_FLAG} <PATH>' && exit 0\necho \"$@\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let line = line.replace(GUEST_PINTRACE, &agent.display().to_string());
        let out = std::process::Command::new(&bb)
            .args(["sh", "-c", &line])
            .env("PINTRACE_SCRATCH_NVME", "/dev/nvme0n1")
            .env("PINTRACE_SCRATCH_SCSI", "/dev/sda")
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "check --out /tmp/pintrace-out --quick --scenarios block/* \
             --scratch-device /dev/nvme0n1 --scratch-device /dev/sda"
        );
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
