//! Kernels to boot: Debian's cloud kernels fetched with `apt-get download`
//! and cached extracted, or any bzImage given by path.

use crate::modules::ModuleIndex;
use crate::setup::parse_policy;
use crate::util::{self, Workspace};
use anyhow::{anyhow, bail, Context as _, Result};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian series the project tests on, oldest first.
pub const SERIES: &[&str] = &["6.1", "6.12"];

/// What `--kernel` asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelSpec {
    Debian(String),
    Path(PathBuf),
}

impl KernelSpec {
    pub fn parse(s: &str) -> Self {
        if SERIES.contains(&s) {
            Self::Debian(s.to_string())
        } else {
            Self::Path(PathBuf::from(s))
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Debian(s) => s.clone(),
            Self::Path(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kernel".into()),
        }
    }
}

/// A bootable kernel and where its modules are.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Short name for logs and tables: "6.12", or the image's file name.
    pub label: String,
    pub image: PathBuf,
    /// `lib/modules/<release>` (or a folder of .ko files), if any.
    pub modules: Option<PathBuf>,
    /// Where it came from, for messages (package name or path).
    pub origin: String,
}

impl Kernel {
    pub fn module_index(&self) -> Result<Option<ModuleIndex>> {
        self.modules.as_deref().map(ModuleIndex::scan).transpose()
    }
}

/// Resolve `--kernel` (+ `--modules`) into a bootable kernel, downloading a
/// Debian package when it is not cached yet.
pub fn resolve(ws: &Workspace, spec: &KernelSpec, modules: Option<&Path>) -> Result<Kernel> {
    match spec {
        KernelSpec::Debian(series) => {
            let mut k = debian_kernel(ws, series, false)?;
            if let Some(m) = modules {
                k.modules = Some(m.to_path_buf());
            }
            Ok(k)
        }
        KernelSpec::Path(p) => {
            if !p.is_file() {
                bail!(
                    "--kernel {}: no such file (give 6.1, 6.12 or the path of a bzImage)",
                    p.display()
                );
            }
            if let Some(m) = modules.filter(|m| !m.is_dir()) {
                bail!("--modules {}: not a folder", m.display());
            }
            Ok(Kernel {
                label: spec.label(),
                image: p.clone(),
                modules: modules.map(Path::to_path_buf),
                origin: p.display().to_string(),
            })
        }
    }
}

fn kernels_dir(ws: &Workspace) -> PathBuf {
    ws.vm_dir().join("kernels")
}

/// The newest cached tree of the series (no apt calls at all), else the
/// newest package apt offers. With `refresh`, ask apt first and fall back to
/// the cache when apt has nothing.
pub fn debian_kernel(ws: &Workspace, series: &str, refresh: bool) -> Result<Kernel> {
    let dir = kernels_dir(ws);
    let mut cached: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| package_version(n, series).is_some())
                .collect()
        })
        .unwrap_or_default();
    sort_packages(&mut cached, series);
    if let Some(pkg) = cached.last().filter(|_| !refresh) {
        return kernel_from_tree(series, pkg, &dir.join(pkg));
    }
    let newest = match (newest_available(series), cached.last()) {
        (Ok(Some(pkg)), _) => Some(pkg),
        (Ok(None), Some(pkg)) => {
            println!("kernel: apt offers no {series} cloud kernel; using the cached {pkg}");
            return kernel_from_tree(series, pkg, &dir.join(pkg));
        }
        (Err(e), Some(pkg)) => {
            println!("kernel: apt failed ({e:#}); using the cached {pkg}");
            return kernel_from_tree(series, pkg, &dir.join(pkg));
        }
        (Ok(None), None) => None,
        (Err(e), None) => return Err(e),
    };
    let pkg = newest.ok_or_else(|| {
        anyhow!(
            "apt offers no linux-image-{series}.*-cloud-amd64 and none is cached in {}; \
             run `apt-get update` (Debian 12 with bookworm and bookworm-security sources)",
            dir.display()
        )
    })?;
    if !dir.join(&pkg).is_dir() {
        fetch(ws, &pkg)?;
    }
    kernel_from_tree(series, &pkg, &dir.join(&pkg))
}

/// Ask apt for the newest package of the series that has a candidate.
pub fn newest_available(series: &str) -> Result<Option<String>> {
    let mut names = Command::new("apt-cache");
    names.args(["pkgnames", &format!("linux-image-{series}.")]);
    let text = util::output(&mut names).context("listing kernel packages with apt-cache")?;
    let mut pkgs: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|n| package_version(n, series).is_some())
        .map(str::to_string)
        .collect();
    if pkgs.is_empty() {
        return Ok(None);
    }
    sort_packages(&mut pkgs, series);
    let mut policy = Command::new("apt-cache");
    policy.arg("policy").args(&pkgs);
    let candidates = parse_policy(&util::output(&mut policy)?);
    Ok(pkgs
        .into_iter()
        .rev()
        .find(|p| candidates.get(p).is_some_and(Option::is_some)))
}

/// The package's .deb in the cache, downloaded with `apt-get download`
/// when it is not there yet.
pub fn download(ws: &Workspace, pkg: &str) -> Result<PathBuf> {
    let debs = ws.vm_dir().join("debs");
    util::create_dir(&debs)?;
    let find_deb = || -> Option<PathBuf> {
        std::fs::read_dir(&debs)
            .ok()?
            .filter_map(|e| e.ok())
            .find_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                (n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb")).then(|| e.path())
            })
    };
    let deb = match find_deb() {
        Some(d) => d,
        None => {
            println!("kernel: downloading {pkg}");
            let mut dl = Command::new("apt-get");
            dl.args(["-q", "download", pkg]).current_dir(&debs);
            util::run(&mut dl).map_err(|e| {
                anyhow!("{e:#}\n  (offline? apt index stale? try `apt-get update`)")
            })?;
            find_deb().ok_or_else(|| {
                anyhow!("apt-get download left no {pkg}_*.deb in {}", debs.display())
            })?
        }
    };
    Ok(deb)
}

/// `apt-get download` + `dpkg-deb -x` into `kernels/<pkg>/` (atomically).
fn fetch(ws: &Workspace, pkg: &str) -> Result<()> {
    let deb = download(ws, pkg)?;
    let kernels = kernels_dir(ws);
    let tmp = kernels.join(format!(".{pkg}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    util::create_dir(&tmp)?;
    println!("kernel: extracting {}", deb.display());
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(&deb).arg(&tmp);
    let res = util::run(&mut x).and_then(|()| {
        let dest = kernels.join(pkg);
        if dest.exists() {
            // Someone else finished first; theirs is as good as ours.
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(());
        }
        std::fs::rename(&tmp, &dest).with_context(|| format!("moving {} into place", tmp.display()))
    });
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    res
}

/// Find `boot/vmlinuz-*` and `lib/modules/<release>` in an extracted package.
fn kernel_from_tree(series: &str, pkg: &str, tree: &Path) -> Result<Kernel> {
    let boot = tree.join("boot");
    let image = std::fs::read_dir(&boot)
        .with_context(|| format!("{}: not an extracted kernel package", tree.display()))?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        .map(|e| e.path())
        .ok_or_else(|| anyhow!("no boot/vmlinuz-* in {}", tree.display()))?;
    let release = image
        .file_name()
        .and_then(|n| {
            n.to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .unwrap_or_default();
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| tree.join(m).join(&release))
        .find(|p| p.is_dir());
    Ok(Kernel {
        label: series.to_string(),
        image,
        modules,
        origin: pkg.to_string(),
    })
}

/// `linux-image-6.12.117+deb12-cloud-amd64` → `6.12.117+deb12` for series
/// 6.12; `None` for other series, metapackages, -dbg and -unsigned.
pub fn package_version<'a>(name: &'a str, series: &str) -> Option<&'a str> {
    let v = name
        .strip_prefix("linux-image-")?
        .strip_suffix("-cloud-amd64")?;
    let rest = v.strip_prefix(series)?.strip_prefix('.')?;
    rest.starts_with(|c: char| c.is_ascii_digit()).then_some(v)
}

/// Oldest first, by Debian version order of the embedded version.
pub fn sort_packages(pkgs: &mut [String], series: &str) {
    pkgs.sort_by(|a, b| {
        let va = package_version(a, series).unwrap_or(a);
        let vb = package_version(b, series).unwrap_or(b);
        dpkg_cmp(va, vb)
    });
}

/// dpkg's version comparison (verrevcmp): digits compare numerically,
/// letters sort before other characters, `~` before everything.
pub fn dpkg_cmp(a: &str, b: &str) -> Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(b'~') => -1,
            Some(c) => c as i32 + 256,
        }
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_like_dpkg() {
        assert_eq!(dpkg_cmp("6.1.0-56", "6.1.0-9"), Ordering::Greater);
        assert_eq!(
            dpkg_cmp("6.12.117+deb12", "6.12.99+deb12"),
            Ordering::Greater
        );
        assert_eq!(dpkg_cmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(dpkg_cmp("1.0a", "1.0"), Ordering::Greater);
        assert_eq!(dpkg_cmp("1.0", "1.0+x"), Ordering::Less);
        assert_eq!(dpkg_cmp("1.01", "1.1"), Ordering::Equal);
        assert_eq!(dpkg_cmp("2", "10"), Ordering::Less);
    }

    #[test]
    fn picks_series_packages_only() {
        let v = |n| package_version(n, "6.1");
        assert_eq!(v("linux-image-6.1.0-56-cloud-amd64"), Some("6.1.0-56"));
        assert_eq!(v("linux-image-6.12.117+deb12-cloud-amd64"), None);
        assert_eq!(v("linux-image-6.1.0-56-cloud-amd64-dbg"), None);
        assert_eq!(v("linux-image-6.1.0-56-cloud-amd64-unsigned"), None);
        assert_eq!(v("linux-image-6.1.0-56-amd64"), None);
        assert_eq!(
            package_version("linux-image-6.12-cloud-amd64", "6.12"),
            None
        );
        assert_eq!(
            package_version("linux-image-6.12.117+deb12-cloud-amd64", "6.12"),
            Some("6.12.117+deb12")
        );
    }

    #[test]
    fn sorts_package_names_by_version() {
        let mut p: Vec<String> = [
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.9+deb12-cloud-amd64",
            "linux-image-6.12.100+deb12-cloud-amd64",
        ]
        .map(String::from)
        .to_vec();
        sort_packages(&mut p, "6.12");
        assert_eq!(p.last().unwrap(), "linux-image-6.12.117+deb12-cloud-amd64");
        assert_eq!(p[0], "linux-image-6.12.9+deb12-cloud-amd64");
        let mut p: Vec<String> = [
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-9-cloud-amd64",
        ]
        .map(String::from)
        .to_vec();
        sort_packages(&mut p, "6.1");
        assert_eq!(p.last().unwrap(), "linux-image-6.1.0-56-cloud-amd64");
    }

    #[test]
    fn kernel_spec() {
        assert_eq!(KernelSpec::parse("6.1"), KernelSpec::Debian("6.1".into()));
        assert_eq!(KernelSpec::parse("/x/bzImage").label(), "bzImage");
    }
}
