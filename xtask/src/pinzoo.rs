//! The pin-bug zoo module (`xtask/pinzoo/`), built for the kernel a guest
//! boots: against Debian's `linux-headers-*` packages for Debian kernels
//! (downloaded and extracted, never installed), or against the build tree a
//! custom bzImage came from.

use crate::debian::Kernel;
use crate::util::{self, Workspace};
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the guest finds the module.
pub const GUEST_PATH: &str = "/lib/pinzoo.ko";

const SOURCES: &[&str] = &["pinzoo.c", "pinzoo.h", "Kbuild"];

/// Builds (or reuses) pinzoo.ko for `kernel`.
pub fn build(ws: &Workspace, kernel: &Kernel) -> Result<PathBuf> {
    let (release, tree) = match release_of(&kernel.image) {
        Some(release) if kernel.origin.starts_with("linux-image-") => {
            let tree = debian_headers(ws, &release)?;
            (release, tree)
        }
        _ => {
            let tree = build_tree_of(&kernel.image).ok_or_else(|| {
                anyhow!(
                    "pinzoo: {} is not inside a kernel build tree (no .config and \
                     Module.symvers above it), so the module cannot be built for it",
                    kernel.image.display()
                )
            })?;
            (kernel.label.clone(), tree)
        }
    };
    let out = ws.vm_dir().join("pinzoo").join(&release);
    let ko = out.join("pinzoo.ko");
    let src = ws.root.join("xtask/pinzoo");
    if ko.is_file() && same_sources(&src, &out) {
        return Ok(ko);
    }
    let _ = std::fs::remove_dir_all(&out);
    util::create_dir(&out)?;
    for f in SOURCES {
        std::fs::copy(src.join(f), out.join(f))
            .with_context(|| format!("copying {}", src.join(f).display()))?;
    }
    let cc = compiler_of(&tree.join(".config"))?;
    println!("pinzoo: building for {release} with {cc}");
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&tree)
        .arg(format!("M={}", out.display()))
        .arg(format!("CC={cc}"))
        .arg("modules");
    util::run(&mut make).context(
        "building pinzoo.ko (needs make, the kernel's compiler and pahole: `cargo xtask setup`)",
    )?;
    if !ko.is_file() {
        bail!("building pinzoo left no {}", ko.display());
    }
    Ok(ko)
}

/// `vmlinuz-6.12.117+deb12-cloud-amd64` → `6.12.117+deb12-cloud-amd64`.
fn release_of(image: &Path) -> Option<String> {
    image
        .file_name()?
        .to_str()?
        .strip_prefix("vmlinuz-")
        .map(str::to_string)
}

/// The build tree of a custom kernel: an ancestor of the image holding the
/// `.config` and `Module.symvers` that out-of-tree modules build against.
fn build_tree_of(image: &Path) -> Option<PathBuf> {
    image
        .ancestors()
        .skip(1)
        .take(5)
        .find(|d| d.join(".config").is_file() && d.join("Module.symvers").is_file())
        .map(Path::to_path_buf)
}

fn same_sources(src: &Path, out: &Path) -> bool {
    SOURCES.iter().all(|f| {
        matches!(
            (std::fs::read(src.join(f)), std::fs::read(out.join(f))),
            (Ok(a), Ok(b)) if a == b
        )
    })
}

/// The compiler the kernel was built with, as its `.config` records it
/// (`CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-12 (Debian ...) 12.2.0"`).
fn compiler_of(config: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    parse_compiler(&text).ok_or_else(|| {
        anyhow!(
            "{}: no CONFIG_CC_VERSION_TEXT naming a gcc",
            config.display()
        )
    })
}

fn parse_compiler(config: &str) -> Option<String> {
    let line = config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_CC_VERSION_TEXT="))?;
    let first = line.trim_matches('"').split_whitespace().next()?;
    (first.contains("gcc") || first.contains("clang")).then(|| first.to_string())
}

/// `linux-headers-<release>`, its `-common` twin and `linux-kbuild-*`,
/// extracted into one folder whose arch Makefile points into it.
fn debian_headers(ws: &Workspace, release: &str) -> Result<PathBuf> {
    let root = ws.vm_dir().join("headers").join(release);
    let tree = root.join(format!("usr/src/linux-headers-{release}"));
    if tree.join("Makefile").is_file() && root.join(".complete").is_file() {
        return Ok(tree);
    }
    let debs = ws.vm_dir().join("debs");
    util::create_dir(&debs)?;
    let arch_pkg = format!("linux-headers-{release}");
    let arch_deb = download(&debs, &arch_pkg)?;
    let depends = util::output(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&arch_deb)
            .arg("Depends"),
    )?;
    let mut debs_to_extract = vec![arch_deb];
    for (name, version) in header_dependencies(&depends) {
        let spec = if version.is_empty() {
            name
        } else {
            format!("{name}={version}")
        };
        debs_to_extract.push(download(&debs, &spec)?);
    }
    let tmp = root.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    util::create_dir(&tmp)?;
    for deb in &debs_to_extract {
        util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    }
    // The arch Makefile includes the common one by its installed path.
    let makefile = tmp.join(format!("usr/src/linux-headers-{release}/Makefile"));
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("reading {}", makefile.display()))?;
    let fixed = text.replace(
        "include /usr/src/",
        &format!("include {}/usr/src/", root.display()),
    );
    std::fs::write(&makefile, fixed)?;
    std::fs::write(tmp.join(".complete"), b"")?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root).with_context(|| format!("moving {} into place", tmp.display()))?;
    Ok(tree)
}

/// The packages (name, exact version) a headers package needs besides
/// itself: `linux-headers-*-common` and `linux-kbuild-*`, from its Depends.
fn header_dependencies(depends: &str) -> Vec<(String, String)> {
    depends
        .split(',')
        .filter_map(|d| {
            let d = d.split('|').next()?.trim();
            let (name, rest) = d.split_once(' ').unwrap_or((d, ""));
            if !(name.starts_with("linux-headers-") || name.starts_with("linux-kbuild-")) {
                return None;
            }
            let version = rest
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim_start_matches(['=', '>', '<', ' '])
                .trim();
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

/// `apt-get download PKG[=VERSION]` into `debs` (once) and its path.
fn download(debs: &Path, spec: &str) -> Result<PathBuf> {
    let (name, version) = spec.split_once('=').unwrap_or((spec, ""));
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(debs)
            .ok()?
            .filter_map(|e| e.ok())
            .find_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let rest = n.strip_prefix(&format!("{name}_"))?;
                let v = rest.split('_').next()?.replace("%3a", ":");
                (n.ends_with(".deb") && (version.is_empty() || v == version)).then(|| e.path())
            })
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    println!("pinzoo: downloading {spec}");
    let mut dl = Command::new("apt-get");
    dl.args(["-q", "download", spec]).current_dir(debs);
    util::run(&mut dl)
        .map_err(|e| anyhow!("{e:#}\n  (offline? apt index stale? try `apt-get update`)"))?;
    find().ok_or_else(|| {
        anyhow!(
            "apt-get download left no {name}_*.deb in {}",
            debs.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_from_config() {
        let c = "# x\nCONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\n";
        assert_eq!(
            parse_compiler(c).as_deref(),
            Some("x86_64-linux-gnu-gcc-12")
        );
        assert_eq!(
            parse_compiler("CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian) 12.2.0\"").as_deref(),
            Some("gcc-12")
        );
        assert_eq!(parse_compiler("CONFIG_CC_IS_GCC=y"), None);
    }

    #[test]
    fn dependencies_of_debian_headers() {
        let d61 = "linux-headers-6.1.0-56-common (= 6.1.192-2), linux-kbuild-6.1 (>= 6.1.192-2), linux-compiler-gcc-12-x86";
        assert_eq!(
            header_dependencies(d61),
            vec![
                ("linux-headers-6.1.0-56-common".into(), "6.1.192-2".into()),
                ("linux-kbuild-6.1".into(), "6.1.192-2".into()),
            ]
        );
        let d612 = "linux-base (>= 4.12~), linux-headers-6.12.117+deb12-common (= 6.12.117-1~deb12u1), linux-image-6.12.117+deb12-cloud-amd64 (= 6.12.117-1~deb12u1) | linux-image-6.12.117+deb12-cloud-amd64-unsigned (= 6.12.117-1~deb12u1), linux-kbuild-6.12.117+deb12, gcc-12";
        assert_eq!(
            header_dependencies(d612),
            vec![
                (
                    "linux-headers-6.12.117+deb12-common".into(),
                    "6.12.117-1~deb12u1".into()
                ),
                ("linux-kbuild-6.12.117+deb12".into(), "".into()),
            ]
        );
    }
}
