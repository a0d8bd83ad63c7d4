//! `cargo xtask setup`: Debian packages, the nightly's rust-src, and
//! bpf-linker built against the nightly toolchain's own LLVM. Idempotent and
//! fast when everything is already there.

use crate::util::{self, display, secs};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Debian packages the build, the VM harness and the guest suites use.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "cpio",
    "busybox-static",
    "e2fsprogs",
    "xz-utils",
    "zstd",
    "kmod",
    "fio",
    "bpftool",
    "tmux",
    "xfsprogs",
    "btrfs-progs",
    "dosfstools",
    // The guests' user space for NFS, device mapper, UDF and SCSI
    // (`vm::DIO_TOOLS`). On a host with systemd, nfs-kernel-server also
    // enables the host's own NFS server unit.
    "nfs-kernel-server",
    "dmsetup",
    "udftools",
    "sg3-utils",
    "gcc-12",
    "make",
    "libelf-dev",
    "dwarves",
    "bc",
    "flex",
    "bison",
];

/// Without these the VM harness cannot work at all.
const REQUIRED: &[&str] = &["qemu-system-x86", "busybox-static", "xz-utils", "kmod"];

const LINKER_SERIES: &str = "0.13";

#[derive(clap::Args, Debug, Default)]
pub struct SetupArgs {
    /// Rebuild bpf-linker even when the installed one works.
    #[arg(long)]
    pub rebuild_linker: bool,
}

pub fn setup(args: &SetupArgs) -> Result<()> {
    let mut failures = Vec::new();
    for (name, step) in [
        (
            "debian packages",
            debian_packages as fn(&SetupArgs) -> Result<String>,
        ),
        ("rust-src (nightly)", rust_src),
        ("bpf-linker", bpf_linker),
    ] {
        let t = Instant::now();
        match step(args) {
            Ok(what) => println!("setup: {name:<20} {what} ({})", secs(t)),
            Err(e) => {
                println!("setup: {name:<20} MISSING ({})", secs(t));
                failures.push(format!("{name}: {e:#}"));
            }
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    bail!("setup is incomplete:\n  {}", failures.join("\n  "))
}

// ---------------------------------------------------------------- apt

fn debian_packages(_: &SetupArgs) -> Result<String> {
    ensure_packages(PACKAGES, REQUIRED)
}

/// What building a kernel tree needs beyond `PACKAGES` (`check-kernel
/// --tree`): the `gcc` the kernel's Makefile calls, OpenSSL for its
/// certificate tools, `patch` for the planted regressions.
pub const KERNEL_BUILD: &[&str] = &["gcc", "libssl-dev", "patch", "python3"];

/// Installs those of `wanted` dpkg lacks (when root), idempotently; fails
/// when one of `required`, or one apt offered, is still missing.
pub fn ensure_packages(wanted: &[&str], required: &[&str]) -> Result<String> {
    let missing = missing_packages(wanted)?;
    if missing.is_empty() {
        return Ok("ok".into());
    }
    let install = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !util::is_root() {
        bail!(
            "not installed: {}\n  as root run: {install}",
            missing.join(" ")
        );
    }
    let mut update = Command::new("apt-get");
    update.args(["-q", "update"]);
    util::run(&mut update).map_err(|e| {
        anyhow!(
            "{e:#}\n  apt is unreachable (offline?); missing: {}",
            missing.join(" ")
        )
    })?;
    let mut policy = Command::new("apt-cache");
    policy.arg("policy").args(&missing);
    let candidates = parse_policy(&util::output(&mut policy)?);
    let (available, absent): (Vec<_>, Vec<_>) = missing
        .iter()
        .cloned()
        .partition(|p| candidates.get(p).is_some_and(|c| c.is_some()));
    for p in &absent {
        println!("setup: warning: `{p}` is not in the apt index; skipping it");
    }
    if !available.is_empty() {
        let kept = keep_installed(&available)?;
        if !kept.names.is_empty() {
            println!(
                "setup: installing {} beside them, which apt would otherwise remove",
                kept.names.join(" ")
            );
        }
        for said in &kept.said {
            println!("setup: replacing {said}: Debian 12's QEMU needs its own");
        }
        println!("setup: installing {} with apt-get", available.join(" "));
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "install", "-y", "--no-install-recommends"])
            .args(kept.flags())
            .args(&available)
            .args(&kept.pins);
        util::run(&mut cmd).map_err(|e| anyhow!("{e:#}\n  retry with: {install}"))?;
    }
    let still = missing_packages(wanted)?;
    let fatal: Vec<_> = still
        .iter()
        .filter(|p| required.contains(&p.as_str()) || available.contains(p))
        .collect();
    if !fatal.is_empty() {
        bail!("still not installed: {fatal:?}");
    }
    let mut what = format!("installed {}", available.join(" "));
    if !absent.is_empty() {
        what += &format!("; unavailable: {}", absent.join(" "));
    }
    Ok(what)
}

/// Packages of `wanted` that dpkg does not report as installed.
fn missing_packages(wanted: &[&str]) -> Result<Vec<String>> {
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\n")
        .args(wanted)
        .output()
        .context("dpkg-query is not available: this setup expects Debian 12 (bookworm)")?;
    // dpkg-query exits 1 when some package is unknown; the others are still listed.
    let installed = parse_dpkg_status(&String::from_utf8_lossy(&out.stdout));
    Ok(wanted
        .iter()
        .filter(|p| !installed.contains(&p.to_string()))
        .map(|p| p.to_string())
        .collect())
}

/// Names whose status reads "install ok installed" in
/// `dpkg-query -W -f='${Package} ${Status}\n'` output.
pub fn parse_dpkg_status(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name.split(':').next().unwrap_or(name).to_string())
        .collect()
}

/// Installed packages apt would remove to install `pkgs` (a newer QEMU
/// whose common files break the machine's older qemu-utils, say): they are
/// installed too, at the archive's version: upgraded with the rest, or,
/// when the machine's copy is newer than the archive's and breaks what
/// the archive offers (a backported qemu-utils beside Debian 12's QEMU),
/// replaced by the archive's (`--allow-downgrades`; said when done).
/// Refuses when apt would still remove something, rather than take away
/// what the machine had.
fn keep_installed(pkgs: &[String]) -> Result<Kept> {
    let mut kept = Kept::default();
    for _ in 0..3 {
        let mut sim = Command::new("apt-get");
        sim.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-s", "-q", "install", "-y", "--no-install-recommends"])
            .args(kept.flags())
            .args(pkgs)
            .args(&kept.pins);
        let removed = parse_removals(&util::output(&mut sim)?);
        if removed.is_empty() {
            return Ok(kept);
        }
        let new: Vec<String> = removed
            .into_iter()
            .filter(|r| !kept.names.contains(r))
            .collect();
        if new.is_empty() {
            break;
        }
        let mut policy = Command::new("apt-cache");
        policy.arg("policy").args(&new);
        let versions = parse_versions(&util::output(&mut policy)?);
        for name in new {
            match versions.get(&name) {
                Some(v) => {
                    if let (Some(have), Some(archive)) = (&v.installed, &v.archive) {
                        if have != archive {
                            kept.downgrades |= v.newer_than_archive;
                            kept.pins.push(format!("{name}={archive}"));
                            kept.said.push(if v.newer_than_archive {
                                format!("{name} {have} (newer than the archive's) with {archive}")
                            } else {
                                format!("{name} {have} with {archive}")
                            });
                        } else {
                            kept.pins.push(name.clone());
                        }
                    } else {
                        kept.pins.push(name.clone());
                    }
                }
                None => kept.pins.push(name.clone()),
            }
            kept.names.push(name);
        }
    }
    bail!(
        "installing {} would remove installed package(s) {} even when installed with them; \
         install by hand, choosing what to keep: apt-get install {}",
        pkgs.join(" "),
        kept.names.join(" "),
        pkgs.join(" ")
    )
}

/// What [`keep_installed`] installs beside the packages asked for.
#[derive(Debug, Default)]
struct Kept {
    /// The packages, as apt-get arguments (`name` or `name=version`).
    pins: Vec<String>,
    names: Vec<String>,
    /// Replacements, for the log.
    said: Vec<String>,
    /// One of them is older than the machine's copy.
    downgrades: bool,
}

impl Kept {
    fn flags(&self) -> &'static [&'static str] {
        if self.downgrades {
            &["--allow-downgrades"]
        } else {
            &[]
        }
    }
}

/// A package's versions in `apt-cache policy`: the installed one and the
/// newest an archive (not only dpkg's status) offers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Versions {
    pub installed: Option<String>,
    pub archive: Option<String>,
    /// The installed version is listed above every archive's: newer.
    pub newer_than_archive: bool,
}

/// `apt-cache policy a b`'s version tables (listed newest first).
pub fn parse_versions(text: &str) -> BTreeMap<String, Versions> {
    let mut map: BTreeMap<String, Versions> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut version: Option<(String, bool)> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            let name = line.trim_end_matches(':').to_string();
            map.insert(name.clone(), Versions::default());
            current = Some(name);
            version = None;
            continue;
        }
        let Some(v) = current.as_ref().and_then(|n| map.get_mut(n)) else {
            continue;
        };
        let t = line.trim();
        if let Some(i) = t.strip_prefix("Installed:") {
            let i = i.trim();
            v.installed = (i != "(none)").then(|| i.to_string());
        } else if t.starts_with("Candidate:") || t.starts_with("Version table:") {
        } else if let Some(rest) = t.strip_prefix("*** ") {
            version = rest
                .split_whitespace()
                .next()
                .map(|s| (s.to_string(), true));
        } else if line.starts_with("     ") && !line.starts_with("        ") {
            version = t.split_whitespace().next().map(|s| (s.to_string(), false));
        } else if let Some((ver, is_installed)) = &version {
            // A source line of the version above: an archive unless it is
            // dpkg's status file alone.
            if !t.ends_with("/var/lib/dpkg/status") && v.archive.is_none() {
                v.archive = Some(ver.clone());
            }
            if *is_installed && v.archive.is_none() {
                v.newer_than_archive = true;
            }
        }
    }
    for v in map.values_mut() {
        if v.archive.is_none() {
            v.newer_than_archive = false;
        }
    }
    map
}

/// The packages an `apt-get -s install` would remove (its `Remv NAME ...` lines).
pub fn parse_removals(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `apt-cache policy a b` → {a: Some("1.2"), b: None}; unknown packages are absent.
pub fn parse_policy(text: &str) -> BTreeMap<String, Option<String>> {
    let mut map = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            let name = line.trim_end_matches(':').to_string();
            map.insert(name.clone(), None);
            current = Some(name);
        } else if let (Some(name), Some(c)) = (&current, line.trim().strip_prefix("Candidate:")) {
            let c = c.trim();
            map.insert(name.clone(), (c != "(none)").then(|| c.to_string()));
        }
    }
    map
}

// ---------------------------------------------------------------- rustup

fn rustup() -> Result<Command> {
    which::which("rustup")
        .map(Command::new)
        .map_err(|_| anyhow!("rustup is not on PATH: install it from https://rustup.rs"))
}

fn rust_src(_: &SetupArgs) -> Result<String> {
    let mut list = rustup()?;
    list.args(["component", "list", "--installed", "--toolchain", "nightly"]);
    let installed = util::try_output(&mut list);
    match installed {
        Some(text) if text.lines().any(|l| l.trim() == "rust-src") => Ok("ok".into()),
        Some(_) => {
            let mut add = rustup()?;
            add.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
            util::run(&mut add)
                .map_err(|e| anyhow!("{e:#}\n  (offline?) run: {}", display(&add)))?;
            Ok("installed".into())
        }
        None => {
            let mut add = rustup()?;
            add.args(["toolchain", "install", "nightly", "--profile", "minimal"])
                .args(["--component", "rust-src"]);
            println!("setup: no nightly toolchain; installing one");
            util::run(&mut add)
                .map_err(|e| anyhow!("{e:#}\n  (offline?) run: {}", display(&add)))?;
            Ok("installed (with a new nightly toolchain)".into())
        }
    }
}

// ---------------------------------------------------------------- bpf-linker

fn cargo_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(h));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo"))
        .ok_or_else(|| anyhow!("neither CARGO_HOME nor HOME is set"))
}

/// The bpf-linker that rustc will find (PATH), else cargo's bin folder.
fn linker_path(cargo_home: &Path) -> Option<PathBuf> {
    which::which("bpf-linker")
        .ok()
        .or_else(|| Some(cargo_home.join("bin/bpf-linker")).filter(|p| p.exists()))
}

fn linker_version(path: &Path) -> Option<String> {
    let out = util::try_output(Command::new(path).arg("--version"))?;
    out.split_whitespace().nth(1).map(str::to_string)
}

fn bpf_linker(args: &SetupArgs) -> Result<String> {
    let home = cargo_home()?;
    let found = linker_path(&home);
    let version = found.as_deref().and_then(linker_version);
    let series_ok = version
        .as_deref()
        .is_some_and(|v| v.starts_with(&format!("{LINKER_SERIES}.")));
    if series_ok && !args.rebuild_linker {
        let path = found.expect("a version implies a path");
        let mut what = format!("ok ({})", version.unwrap_or_default());
        if !links_into(&path, &home) {
            what += "; its libLLVM is outside CARGO_HOME/pintrace-llvm-*, \
                     `cargo xtask setup --rebuild-linker` makes it durable";
        }
        return Ok(what);
    }
    let (major, prefix) = llvm_prefix(&home)?;
    match (&found, &version) {
        _ if args.rebuild_linker => println!("setup: rebuilding bpf-linker (about 80 s)"),
        (None, _) => println!("setup: bpf-linker not found; building it (about 80 s)"),
        (Some(p), None) => println!("setup: {} does not run; rebuilding it", p.display()),
        (Some(_), Some(v)) => {
            println!("setup: bpf-linker {v} is not {LINKER_SERIES}.x; rebuilding")
        }
    }
    let mut install = rustup()?;
    install
        .args([
            "run",
            "nightly",
            "cargo",
            "install",
            "bpf-linker",
            "--force",
        ])
        .args([
            "--version",
            &format!("^{LINKER_SERIES}"),
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{major}")])
        .env("LLVM_PREFIX", &prefix);
    util::run(&mut install).map_err(|e| {
        anyhow!(
            "{e:#}\n  (crates.io unreachable?) run: LLVM_PREFIX={} {}",
            prefix.display(),
            display(&install)
        )
    })?;
    let path =
        linker_path(&home).ok_or_else(|| anyhow!("bpf-linker is not on PATH after install"))?;
    let v = linker_version(&path)
        .ok_or_else(|| anyhow!("{} does not run after install", path.display()))?;
    if which::which("bpf-linker").is_err() {
        println!(
            "setup: warning: {} is not on PATH",
            path.parent().unwrap_or(&path).display()
        );
    }
    Ok(format!("installed {v} (LLVM {major})"))
}

/// Whether the binary's libLLVM resolves into our stable prefix.
fn links_into(binary: &Path, cargo_home: &Path) -> bool {
    let Some(text) = util::try_output(Command::new("ldd").arg(binary)) else {
        return true; // cannot tell; do not nag
    };
    let prefix = cargo_home.join("pintrace-llvm-");
    parse_ldd(&text)
        .iter()
        .filter(|l| l.name.starts_with("libLLVM"))
        .all(|l| {
            l.path
                .as_deref()
                .is_some_and(|p| p.starts_with(&prefix.to_string_lossy()[..]))
        })
}

use crate::initramfs::parse_ldd;

/// Create `$CARGO_HOME/pintrace-llvm-<major>/lib/{libLLVM.so,<soname>}` as
/// symlinks to the nightly toolchain's libLLVM; returns (major, prefix).
fn llvm_prefix(cargo_home: &Path) -> Result<(u32, PathBuf)> {
    let mut vv = rustup()?;
    vv.args(["run", "nightly", "rustc", "-vV"]);
    let major = parse_llvm_major(&util::output(&mut vv)?)?;
    let mut sr = rustup()?;
    sr.args(["run", "nightly", "rustc", "--print", "sysroot"]);
    let sysroot = PathBuf::from(util::output(&mut sr)?.trim());
    let libdir = sysroot.join("lib");
    let want = format!("libLLVM.so.{major}.");
    let mut libs: Vec<_> = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&want))
        .collect();
    libs.sort();
    let soname = libs.pop().ok_or_else(|| {
        anyhow!(
            "no {want}* in {}: is the nightly toolchain complete?",
            libdir.display()
        )
    })?;
    let target = libdir.join(&soname);
    let prefix = cargo_home.join(format!("pintrace-llvm-{major}"));
    let lib = prefix.join("lib");
    util::create_dir(&lib)?;
    for name in ["libLLVM.so", soname.as_str()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    Ok((major, prefix))
}

/// "LLVM version: 22.1.4" in `rustc -vV` → 22.
pub fn parse_llvm_major(text: &str) -> Result<u32> {
    let v = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))
        .ok_or_else(|| anyhow!("`rustc -vV` names no LLVM version"))?;
    v.trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("cannot read the LLVM major from {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major() {
        let t = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(t).unwrap(), 22);
        assert!(parse_llvm_major("rustc 1.0").is_err());
    }

    #[test]
    fn removals_from_a_simulated_install() {
        let t = "Reading package lists...\nThe following packages will be REMOVED:\n  qemu-utils\n\
                 Remv qemu-utils [1:7.2+dfsg-7+deb12u15]\n\
                 Inst qemu-system-common [1:7.2+dfsg-7+deb12u15] (1:7.2+dfsg-7+deb12u18 Debian:12)\n\
                 Conf qemu-system-common (1:7.2+dfsg-7+deb12u18 Debian:12)\n";
        assert_eq!(parse_removals(t), ["qemu-utils"]);
        assert!(parse_removals("Inst fio (3.33-3 Debian:12)\nConf fio (3.33-3)\n").is_empty());
    }

    #[test]
    fn versions_of_a_backport_newer_than_the_archive() {
        let t = "qemu-utils:\n  Installed: 1:10.0.2+ds-2~bpo12+1\n  Candidate: 1:10.0.2+ds-2~bpo12+1\n  \
                 Version table:\n *** 1:10.0.2+ds-2~bpo12+1 100\n        100 /var/lib/dpkg/status\n     \
                 1:7.2+dfsg-7+deb12u18+b3 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n     \
                 1:7.2+dfsg-7+deb12u15 500\n        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n\
                 cpio:\n  Installed: 2.13+dfsg-7.1\n  Candidate: 2.13+dfsg-7.1\n  Version table:\n \
                 *** 2.13+dfsg-7.1 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n        \
                 100 /var/lib/dpkg/status\n\
                 old:\n  Installed: 1.0-1\n  Candidate: 1.1-1\n  Version table:\n     1.1-1 500\n        \
                 500 http://deb.debian.org/debian bookworm/main amd64 Packages\n *** 1.0-1 100\n        100 /var/lib/dpkg/status\n";
        let m = parse_versions(t);
        let q = &m["qemu-utils"];
        assert_eq!(q.installed.as_deref(), Some("1:10.0.2+ds-2~bpo12+1"));
        assert_eq!(q.archive.as_deref(), Some("1:7.2+dfsg-7+deb12u18+b3"));
        assert!(q.newer_than_archive);
        let c = &m["cpio"];
        assert_eq!(c.archive, c.installed);
        assert!(!c.newer_than_archive);
        let o = &m["old"];
        assert_eq!(o.archive.as_deref(), Some("1.1-1"));
        assert!(!o.newer_than_archive);
    }

    #[test]
    fn dpkg_status() {
        let t = "cpio install ok installed\nflex unknown ok not-installed\nbusybox-static:amd64 install ok installed\n";
        assert_eq!(parse_dpkg_status(t), ["cpio", "busybox-static"]);
    }

    #[test]
    fn policy() {
        let t = "xfsprogs:\n  Installed: (none)\n  Candidate: 6.1.0-1\n  Version table:\n     6.1.0-1 500\nghost:\n  Installed: (none)\n  Candidate: (none)\n";
        let m = parse_policy(t);
        assert_eq!(m["xfsprogs"].as_deref(), Some("6.1.0-1"));
        assert_eq!(m["ghost"], None);
        assert!(!m.contains_key("nothere"));
    }
}
