//! Kernel modules for the guest: find them in a module tree (Debian's
//! packages carry no modules.dep), resolve dependencies with `modinfo`, and
//! produce a load order; decompress them for the initramfs.

use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Module files by name (`-` folded to `_`, as the kernel does) plus the
/// names the kernel has built in (from `modules.builtin`, when present).
#[derive(Debug, Default)]
pub struct ModuleIndex {
    pub dir: PathBuf,
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// Modules to insmod, dependencies first, and requested names that need no
/// file because the kernel has them built in.
#[derive(Debug, Default, PartialEq)]
pub struct LoadPlan {
    pub order: Vec<(String, PathBuf)>,
    pub builtin: Vec<String>,
    /// Each module of `order` → the modules of `order` it needs loaded
    /// first (hard dependencies that are files, not built in).
    pub needs: BTreeMap<String, Vec<String>>,
}

impl LoadPlan {
    /// `modules.dep` for the modules of `order`, files named `<name>.ko`
    /// in one folder: each line the module and every module under it, the
    /// one to load first last (modprobe loads them right to left).
    pub fn modules_dep(&self) -> String {
        let mut text = String::new();
        for (name, _) in &self.order {
            let mut all = BTreeSet::new();
            let mut stack = vec![name.as_str()];
            while let Some(m) = stack.pop() {
                for d in self.needs.get(m).into_iter().flatten() {
                    if all.insert(d.as_str()) {
                        stack.push(d);
                    }
                }
            }
            // Load order is `order`'s: the deepest first, so listed last.
            let mut under: Vec<&str> = self
                .order
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| all.contains(n))
                .collect();
            under.reverse();
            text += &format!("{name}.ko:");
            for u in under {
                text += &format!(" {u}.ko");
            }
            text.push('\n');
        }
        text
    }
}

/// What one module needs before it: hard dependencies and `softdep pre:`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ModDeps {
    pub depends: Vec<String>,
    pub soft_pre: Vec<String>,
}

pub fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// `foo.ko`, `foo.ko.xz`, `foo.ko.zst`, `foo.ko.gz` → `foo`.
pub fn module_name(file: &str) -> Option<String> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .filter(|stem| !stem.is_empty())
        .map(normalize)
}

impl ModuleIndex {
    /// Index a `lib/modules/<release>` tree or a plain folder of modules.
    pub fn scan(dir: &Path) -> Result<Self> {
        let mut index = Self {
            dir: dir.to_path_buf(),
            ..Self::default()
        };
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries =
                std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
            for e in entries {
                let e = e?;
                let path = e.path();
                if e.file_type()?.is_dir() {
                    stack.push(path);
                } else if let Some(name) = module_name(&e.file_name().to_string_lossy()) {
                    index.files.entry(name).or_insert(path);
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("modules.builtin")) {
            index.builtin = text
                .lines()
                .filter_map(|l| module_name(l.rsplit('/').next().unwrap_or(l)))
                .collect();
        }
        if index.files.is_empty() {
            bail!("no kernel modules (*.ko*) under {}", dir.display());
        }
        Ok(index)
    }

    /// Whether the tree has module `name` as a file or built in.
    pub fn has(&self, name: &str) -> bool {
        let n = normalize(name);
        self.files.contains_key(&n) || self.builtin.contains(&n)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Resolve `wanted` with `modinfo` on the files.
    pub fn plan(&self, wanted: &[String]) -> Result<LoadPlan> {
        self.plan_with(wanted, modinfo_deps)
    }

    /// Resolve `wanted` with a dependency oracle (pure; tested below).
    /// Missing hard dependencies are an error unless built in; missing soft
    /// dependencies are skipped.
    pub fn plan_with(
        &self,
        wanted: &[String],
        mut deps_of: impl FnMut(&Path) -> Result<ModDeps>,
    ) -> Result<LoadPlan> {
        let mut plan = LoadPlan::default();
        let mut done = BTreeSet::new();
        for name in wanted {
            let name = normalize(name);
            if !self.files.contains_key(&name) {
                if self.builtin.contains(&name) {
                    if !plan.builtin.contains(&name) {
                        plan.builtin.push(name);
                    }
                    continue;
                }
                bail!("module `{name}` is not in {}", self.dir.display());
            }
            self.visit(
                &name,
                true,
                &mut deps_of,
                &mut done,
                &mut Vec::new(),
                &mut plan,
            )?;
        }
        Ok(plan)
    }

    fn visit(
        &self,
        name: &str,
        hard: bool,
        deps_of: &mut impl FnMut(&Path) -> Result<ModDeps>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        plan: &mut LoadPlan,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            if !hard {
                return Ok(()); // a soft dependency may point back; ignore it
            }
            bail!("module dependency cycle: {} -> {name}", path.join(" -> "));
        }
        let Some(file) = self.files.get(name) else {
            if hard && !self.builtin.contains(name) && !self.builtin.is_empty() {
                bail!(
                    "module `{name}` (needed by `{}`) is not in {}",
                    path.last().map(String::as_str).unwrap_or("?"),
                    self.dir.display()
                );
            }
            // Built in, or no modules.builtin to tell: the insmod of the
            // dependent module will say if it really was missing.
            return Ok(());
        };
        path.push(name.to_string());
        let deps = deps_of(file).with_context(|| format!("reading the dependencies of {name}"))?;
        for d in &deps.soft_pre {
            self.visit(&normalize(d), false, deps_of, done, path, plan)?;
        }
        for d in &deps.depends {
            self.visit(&normalize(d), true, deps_of, done, path, plan)?;
        }
        let needs = deps
            .depends
            .iter()
            .map(|d| normalize(d))
            .filter(|d| self.files.contains_key(d))
            .collect();
        plan.needs.insert(name.to_string(), needs);
        path.pop();
        done.insert(name.to_string());
        plan.order.push((name.to_string(), file.clone()));
        Ok(())
    }
}

/// `modinfo FILE` (kmod reads .ko.xz and .ko.zst itself).
pub fn modinfo_deps(file: &Path) -> Result<ModDeps> {
    let out = Command::new("modinfo")
        .arg(file)
        .output()
        .context("running modinfo (package kmod; `cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!(
            "`modinfo {}` failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_modinfo(&String::from_utf8_lossy(&out.stdout)))
}

/// Read the `depends:` and `softdep:` fields of `modinfo` output.
pub fn parse_modinfo(text: &str) -> ModDeps {
    let mut deps = ModDeps::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "depends" => deps.depends.extend(parse_depends(value)),
            "softdep" => deps.soft_pre.extend(parse_softdep_pre(value)),
            _ => {}
        }
    }
    deps
}

/// `modinfo -F depends` value: "a,b,c" (possibly empty) → [a, b, c].
pub fn parse_depends(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(normalize)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `softdep` value "pre: a b post: c" → [a, b].
pub fn parse_softdep_pre(value: &str) -> Vec<String> {
    let mut pre = false;
    let mut out = Vec::new();
    for word in value.split_whitespace() {
        match word {
            "pre:" => pre = true,
            "post:" => pre = false,
            w if pre => out.push(normalize(w)),
            _ => {}
        }
    }
    out
}

/// The module's bytes, decompressed according to its extension.
pub fn read_module(file: &Path) -> Result<Vec<u8>> {
    let name = file.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return std::fs::read(file).with_context(|| format!("reading {}", file.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(file)
        .output()
        .with_context(|| format!("running {tool} (`cargo xtask setup` installs it)"))?;
    if !out.status.success() {
        return Err(anyhow!(
            "`{tool} -dc {}` failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(names: &[&str], builtin: &[&str]) -> ModuleIndex {
        ModuleIndex {
            dir: PathBuf::from("mods"),
            files: names
                .iter()
                .map(|n| (normalize(n), PathBuf::from(format!("{n}.ko"))))
                .collect(),
            builtin: builtin.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn oracle(table: &'static [(&str, &str, &str)]) -> impl FnMut(&Path) -> Result<ModDeps> {
        move |p: &Path| {
            let n = p.file_stem().unwrap().to_string_lossy().to_string();
            let (_, d, s) = table.iter().find(|(m, _, _)| *m == n).unwrap();
            Ok(ModDeps {
                depends: parse_depends(d),
                soft_pre: parse_softdep_pre(s),
            })
        }
    }

    fn names(plan: &LoadPlan) -> Vec<&str> {
        plan.order.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn parses_modinfo_fields() {
        let text = "filename:       /x/btrfs.ko.xz\nsoftdep:        pre: crc32c post: foo\n\
                    depends:        libcrc32c,xor,raid6_pq,zstd-compress\nintree:         Y\n\
                    name:           btrfs\n";
        let d = parse_modinfo(text);
        assert_eq!(d.depends, ["libcrc32c", "xor", "raid6_pq", "zstd_compress"]);
        assert_eq!(d.soft_pre, ["crc32c"]);
        assert_eq!(parse_modinfo("depends:        \n"), ModDeps::default());
        assert_eq!(parse_depends(""), Vec::<String>::new());
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("loop.ko").as_deref(), Some("loop"));
        assert_eq!(
            module_name("virtio-blk.ko.xz").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(module_name("x.ko.zst").as_deref(), Some("x"));
        assert_eq!(module_name("modules.dep"), None);
        assert_eq!(module_name(".ko"), None);
    }

    #[test]
    fn orders_dependencies_first_without_duplicates() {
        let idx = index(
            &[
                "btrfs",
                "xor",
                "raid6_pq",
                "libcrc32c",
                "crc32c_generic",
                "loop",
            ],
            &[],
        );
        let table: &'static [(&str, &str, &str)] = &[
            ("btrfs", "libcrc32c,xor,raid6_pq", ""),
            ("xor", "", ""),
            ("raid6_pq", "", ""),
            ("libcrc32c", "", "pre: crc32c_generic"),
            ("crc32c_generic", "", ""),
            ("loop", "", ""),
        ];
        let plan = idx
            .plan_with(
                &["loop".into(), "btrfs".into(), "xor".into()],
                oracle(table),
            )
            .unwrap();
        assert_eq!(
            names(&plan),
            [
                "loop",
                "crc32c_generic",
                "libcrc32c",
                "xor",
                "raid6_pq",
                "btrfs"
            ]
        );
    }

    #[test]
    fn modules_dep_lists_every_module_under_each() {
        let idx = index(
            &["nfsv4", "nfs", "sunrpc", "lockd", "grace", "dns_resolver"],
            &[],
        );
        let table: &'static [(&str, &str, &str)] = &[
            ("nfsv4", "sunrpc,nfs,dns_resolver", ""),
            ("nfs", "sunrpc,lockd", ""),
            ("lockd", "sunrpc,grace", ""),
            ("sunrpc", "", ""),
            ("grace", "", ""),
            ("dns_resolver", "", ""),
        ];
        let plan = idx.plan_with(&["nfsv4".into()], oracle(table)).unwrap();
        assert_eq!(
            names(&plan),
            ["sunrpc", "grace", "lockd", "nfs", "dns_resolver", "nfsv4"]
        );
        assert_eq!(
            plan.modules_dep(),
            "sunrpc.ko:\ngrace.ko:\nlockd.ko: grace.ko sunrpc.ko\n\
             nfs.ko: lockd.ko grace.ko sunrpc.ko\ndns_resolver.ko:\n\
             nfsv4.ko: dns_resolver.ko nfs.ko lockd.ko grace.ko sunrpc.ko\n"
        );
    }

    #[test]
    fn builtin_and_missing() {
        let idx = index(&["virtio_blk"], &["virtio_pci", "virtio", "virtio_ring"]);
        let table: &'static [(&str, &str, &str)] = &[("virtio_blk", "virtio,virtio_ring", "")];
        let plan = idx
            .plan_with(&["virtio_pci".into(), "virtio_blk".into()], oracle(table))
            .unwrap();
        assert_eq!(names(&plan), ["virtio_blk"]);
        assert_eq!(plan.builtin, ["virtio_pci"]);
        // virtio_ring is neither a file nor listed as built in
        let idx = index(&["virtio_blk"], &["virtio"]);
        let table: &'static [(&str, &str, &str)] = &[("virtio_blk", "virtio,virtio_ring", "")];
        assert!(idx
            .plan_with(&["virtio_blk".into()], oracle(table))
            .is_err());
        assert!(idx.plan_with(&["nope".into()], oracle(table)).is_err());
    }

    #[test]
    fn detects_cycles() {
        let idx = index(&["a", "b"], &[]);
        let table: &'static [(&str, &str, &str)] = &[("a", "b", ""), ("b", "a", "")];
        let err = idx.plan_with(&["a".into()], oracle(table)).unwrap_err();
        assert!(format!("{err:#}").contains("cycle"), "{err:#}");
    }
}
