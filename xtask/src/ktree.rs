//! A kernel tree built the way `pintrace check` needs it (`cargo xtask
//! check-kernel --tree`): the repository's config fragment merged into the
//! tree's config with the kernel's own `merge_config.sh`, the bzImage built
//! out of tree with every core, incrementally when the build folder is
//! reused.

use crate::setup;
use crate::util::{self, Workspace};
use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The config fragment, relative to the workspace root.
pub const FRAGMENT: &str = "kernel/check.config";

/// A built tree.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: PathBuf,
    pub config: PathBuf,
    /// `lib/modules/<release>` when the config has modules (`=m`).
    pub modules: Option<PathBuf>,
    /// `make kernelrelease`.
    pub release: String,
    /// `git describe --always --dirty` when the tree is a git tree.
    pub describe: Option<String>,
    pub build_secs: f64,
    /// Fragment options the merged config does not have as asked (their
    /// dependencies are not met in this tree), one line each.
    pub not_as_asked: Vec<String>,
}

/// What the fragment asks, option by option: `Some(value)` for
/// `CONFIG_X=value`, `None` for `# CONFIG_X is not set`.
pub fn parse_fragment(text: &str) -> BTreeMap<String, Option<String>> {
    let mut m = BTreeMap::new();
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("# CONFIG_") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                m.insert(name.to_owned(), None);
            }
        } else if let Some((k, v)) = l.strip_prefix("CONFIG_").and_then(|r| r.split_once('=')) {
            m.insert(k.to_owned(), Some(v.trim_matches('"').to_owned()));
        }
    }
    m
}

/// The fragment's options that `config` (the merged .config's `CONFIG_X=v`
/// lines) does not have as asked.
pub fn not_as_asked(
    fragment: &BTreeMap<String, Option<String>>,
    config: &BTreeMap<String, String>,
) -> Vec<String> {
    fragment
        .iter()
        .filter_map(|(k, want)| {
            let got = config.get(k);
            match (want, got) {
                (Some(w), Some(g)) if w == g => None,
                (None, None) => None,
                (Some(w), got) => Some(format!(
                    "CONFIG_{k}={w} asked, {}",
                    got.map_or("not set".to_owned(), |g| format!("={g}"))
                )),
                (None, Some(g)) => Some(format!("CONFIG_{k} asked off, ={g}")),
            }
        })
        .collect()
}

fn make(tree: &Path, build: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C").arg(tree).arg(format!("O={}", build.display()));
    c
}

/// The default build folder of `tree`: under target/, named after it.
pub fn default_build_dir(ws: &Workspace, tree: &Path) -> PathBuf {
    let name = tree
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tree".into());
    ws.target
        .join("pintrace-kernel")
        .join(format!("build-{name}"))
}

/// Configures and builds `tree` in `build` (made when missing).
pub fn build(ws: &Workspace, tree: &Path, build: &Path) -> Result<Built> {
    for f in ["Makefile", "scripts/kconfig/merge_config.sh", "arch/x86"] {
        if !tree.join(f).exists() {
            bail!(
                "--tree {}: not an x86 kernel source tree (no {f})",
                tree.display()
            );
        }
    }
    setup::ensure_packages(setup::KERNEL_BUILD, setup::KERNEL_BUILD)
        .context("the packages a kernel build needs")?;
    util::create_dir(build)?;
    let build = build
        .canonicalize()
        .with_context(|| format!("--build-dir {}", build.display()))?;
    let tree = tree
        .canonicalize()
        .with_context(|| format!("--tree {}", tree.display()))?;
    let config = build.join(".config");
    if !config.is_file() {
        println!(
            "kernel-tree: no .config in {}: starting from x86_64_defconfig",
            build.display()
        );
        util::run(make(&tree, &build).arg("-s").arg("x86_64_defconfig"))?;
    }
    let fragment_path = ws.root.join(FRAGMENT);
    let fragment = std::fs::read_to_string(&fragment_path)
        .with_context(|| format!("reading {}", fragment_path.display()))?;
    // -m: merge only; olddefconfig then settles what the merge implies.
    let mut merge = Command::new(tree.join("scripts/kconfig/merge_config.sh"));
    merge
        .arg("-m")
        .arg("-O")
        .arg(&build)
        .arg(&config)
        .arg(&fragment_path)
        .current_dir(&tree);
    util::output(&mut merge).context("merging the config fragment")?;
    util::run(make(&tree, &build).arg("-s").arg("olddefconfig"))?;
    let merged = crate::kconfig::parse_config(
        &std::fs::read_to_string(&config)
            .with_context(|| format!("reading {}", config.display()))?,
    );
    let misses = not_as_asked(&parse_fragment(&fragment), &merged);
    for m in &misses {
        println!("kernel-tree: note: {m}");
    }

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let with_modules = merged.values().any(|v| v == "m") && merged.contains_key("MODULES");
    let t = Instant::now();
    println!(
        "kernel-tree: building {} in {} with {jobs} job(s)",
        tree.display(),
        build.display()
    );
    let mut mk = make(&tree, &build);
    mk.arg("-s").arg(format!("-j{jobs}")).arg("bzImage");
    if with_modules {
        mk.arg("modules");
    }
    util::run(&mut mk).context("building the kernel")?;
    let release = util::output(make(&tree, &build).arg("-s").arg("kernelrelease"))?
        .trim()
        .to_owned();
    let modules = if with_modules {
        let root = build.join("pintrace-modules");
        let _ = std::fs::remove_dir_all(&root);
        util::run(
            make(&tree, &build)
                .arg("-s")
                .arg(format!("INSTALL_MOD_PATH={}", root.display()))
                .arg("INSTALL_MOD_STRIP=1")
                .arg("modules_install"),
        )?;
        Some(root.join("lib/modules").join(&release))
    } else {
        None
    };
    let build_secs = t.elapsed().as_secs_f64();
    println!("kernel-tree: built {release} in {build_secs:.0} s");
    let describe = util::try_output(
        Command::new("git")
            .arg("-C")
            .arg(&tree)
            .args(["describe", "--always", "--dirty", "--tags"]),
    )
    .map(|s| s.trim().to_owned())
    .filter(|s| !s.is_empty() && tree.join(".git").exists());
    Ok(Built {
        image: build.join("arch/x86/boot/bzImage"),
        config,
        modules,
        release,
        describe,
        build_secs,
        not_as_asked: misses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragment_reads_both_forms() {
        let f =
            parse_fragment("# a comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n\n");
        assert_eq!(f.get("A"), Some(&Some("y".into())));
        assert_eq!(f.get("B"), Some(&None));
        assert_eq!(f.get("C"), Some(&Some("x".into())));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn options_that_did_not_stick_are_named() {
        let f = parse_fragment(
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\nCONFIG_E=y\n",
        );
        let c = crate::kconfig::parse_config("CONFIG_A=y\nCONFIG_B=m\nCONFIG_C=y\n");
        assert_eq!(
            not_as_asked(&f, &c),
            [
                "CONFIG_B=y asked, =m",
                "CONFIG_C asked off, =y",
                "CONFIG_E=y asked, not set"
            ]
        );
    }

    #[test]
    fn the_repository_fragment_has_what_check_kernel_refuses_without() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(FRAGMENT),
        )
        .unwrap();
        let as_config: String = parse_fragment(&text)
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("CONFIG_{k}={v}\n")))
            .collect();
        let v = crate::kconfig::check_config(&crate::kconfig::parse_config(&as_config));
        assert!(v.missing.is_empty(), "{:?}", v.missing);
        assert!(v.skips.is_empty(), "{:?}", v.skips);
        assert!(v.modules.is_empty() && v.on_demand.is_empty(), "{v:?}");
    }
}
