//! `cargo xtask test --kernel-tree`: the proof that the gate catches a
//! regression in a kernel built from source. Debian's kernel source is
//! built with the config fragment and checked as it is (it must pass),
//! then each planted regression of `kernel/planted/` is applied in turn,
//! the tree rebuilt incrementally and checked again: the scenarios that
//! drive the broken path must fail with the finding kinds the patch names,
//! and every other scenario must come out as it did on the unpatched tree.
//!
//! A planted regression is a patch against the Debian source whose header
//! (the text before the diff, which `patch` skips) says what it breaks:
//!
//! ```text
//! Kinds: leak_owner_exited, leak_after_bio   the finding kinds it may cause
//! Fails: */pvsync-subpage/*/*                scenarios that must fail (globs)
//! May-fail: */pvsync-unaligned/*             scenarios that may fail too
//! ```

use crate::check_kernel::{self, CheckKernelArgs};
use crate::debian;
use crate::util::{self, Workspace};
use anyhow::{bail, Context as _, Result};
use clap::Parser;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The Debian package whose tree the proof builds.
pub const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// The planted regressions, relative to the workspace root.
pub const PLANTED_DIR: &str = "kernel/planted";
/// The patch applied to the cached tree, if any: a run that was stopped
/// midway leaves it, and the next run takes it back out first.
const APPLIED_MARK: &str = ".pintrace-planted";

#[derive(Debug)]
pub struct Planted {
    pub name: String,
    pub path: PathBuf,
    /// The header's first line.
    pub title: String,
    pub kinds: BTreeSet<String>,
    pub fails: Vec<glob::Pattern>,
    pub may_fail: Vec<glob::Pattern>,
}

fn globs(name: &str, field: &str, list: &str) -> Result<Vec<glob::Pattern>> {
    list.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| glob::Pattern::new(g).with_context(|| format!("{name}: {field} {g:?}")))
        .collect()
}

/// Reads a planted regression's header.
pub fn parse_planted(name: &str, path: &Path, text: &str) -> Result<Planted> {
    let header: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("--- ") && !l.starts_with("diff "))
        .collect();
    if header.len() == text.lines().count() {
        bail!("{name}: no diff in it");
    }
    let field = |f: &str| {
        header
            .iter()
            .find_map(|l| l.strip_prefix(f).map(str::trim))
            .unwrap_or("")
    };
    let p = Planted {
        name: name.to_owned(),
        path: path.to_path_buf(),
        title: header.first().map_or("", |l| l.trim()).to_owned(),
        kinds: field("Kinds:")
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect(),
        fails: globs(name, "Fails:", field("Fails:"))?,
        may_fail: globs(name, "May-fail:", field("May-fail:"))?,
    };
    if p.kinds.is_empty() || p.fails.is_empty() {
        bail!("{name}: its header needs `Kinds:` and `Fails:` lines");
    }
    Ok(p)
}

/// The planted regressions in file name order.
pub fn load(dir: &Path) -> Result<Vec<Planted>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            parse_planted(&name, p, &text)
        })
        .collect()
}

/// A scenario as check's JSON report tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: String,
    pub kinds: BTreeSet<String>,
}

pub fn outcomes(report: &serde_json::Value) -> BTreeMap<String, Outcome> {
    report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let kinds = s["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["kind"].as_str().map(str::to_owned))
                .collect();
            (
                s["name"].as_str().unwrap_or("?").to_owned(),
                Outcome {
                    status: s["status"].as_str().unwrap_or("?").to_owned(),
                    kinds,
                },
            )
        })
        .collect()
}

/// What a round showed: the scenarios that caught the regression, and
/// what went against the expectation.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub caught: Vec<String>,
    pub problems: Vec<String>,
}

fn kinds_list(k: &BTreeSet<String>) -> String {
    if k.is_empty() {
        "no finding".into()
    } else {
        k.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Judges a patched round against the unpatched one.
pub fn judge(
    base: &BTreeMap<String, Outcome>,
    got: &BTreeMap<String, Outcome>,
    p: &Planted,
) -> Verdict {
    let mut v = Verdict::default();
    let matches = |globs: &[glob::Pattern], n: &str| globs.iter().any(|g| g.matches(n));
    let mut ran_fails = 0;
    for (name, o) in got {
        let own = o.kinds.is_subset(&p.kinds) && !o.kinds.is_empty();
        let was = base.get(name).map(|b| b.status.as_str());
        if o.status == "error" {
            v.problems.push(format!("{name}: could not run"));
        } else if matches(&p.fails, name) {
            if o.status == "skip" {
                continue;
            }
            ran_fails += 1;
            match (o.status.as_str(), own) {
                ("fail", true) => v.caught.push(name.clone()),
                ("fail", false) => v.problems.push(format!(
                    "{name}: failed with {}, not {}",
                    kinds_list(&o.kinds),
                    kinds_list(&p.kinds)
                )),
                _ => v
                    .problems
                    .push(format!("{name}: {}: the regression went unseen", o.status)),
            }
        } else if o.status == "fail" {
            if matches(&p.may_fail, name) && own {
                v.caught.push(name.clone());
            } else {
                v.problems.push(format!(
                    "{name}: failed outside the broken path ({})",
                    kinds_list(&o.kinds)
                ));
            }
        } else if was.is_some_and(|w| w != o.status) {
            v.problems.push(format!(
                "{name}: {} here, {} unpatched",
                o.status,
                was.unwrap_or("?")
            ));
        }
    }
    for name in base.keys().filter(|n| !got.contains_key(*n)) {
        v.problems.push(format!("{name}: missing from the report"));
    }
    if ran_fails == 0 {
        v.problems
            .push("no scenario of its `Fails:` ran: nothing proves it is caught".into());
    }
    v
}

/// The unpatched round: everything passes or is skipped.
pub fn judge_clean(got: &BTreeMap<String, Outcome>) -> Verdict {
    let mut v = Verdict::default();
    for (name, o) in got {
        if o.status != "pass" && o.status != "skip" {
            v.problems
                .push(format!("{name}: {} ({})", o.status, kinds_list(&o.kinds)));
        }
    }
    if got.is_empty() {
        v.problems.push("no scenarios in the report".into());
    }
    v
}

/// Debian's kernel source, extracted once into target/ (pristine but for
/// a planted patch a stopped run left, which is taken out).
fn source_tree(ws: &Workspace) -> Result<PathBuf> {
    let root = ws.target.join("pintrace-kernel/src");
    let tree = root.join(SOURCE_PACKAGE);
    if !tree.join("Makefile").is_file() {
        let deb = debian::download(ws, SOURCE_PACKAGE)?;
        let tmp = root.join(format!(".x.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        util::create_dir(&tmp)?;
        println!("kernel-tree: extracting {}", deb.display());
        // The package holds usr/src/<package>.tar.xz.
        let script = format!(
            "dpkg-deb --fsys-tarfile {deb} | tar -xO ./usr/src/{SOURCE_PACKAGE}.tar.xz | tar -xJ -C {tmp}",
            deb = util::shell_quote(&deb.to_string_lossy()),
            tmp = util::shell_quote(&tmp.to_string_lossy()),
        );
        util::run(Command::new("sh").arg("-c").arg(&script))
            .with_context(|| format!("extracting {SOURCE_PACKAGE}"))?;
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::rename(tmp.join(SOURCE_PACKAGE), &tree)
            .with_context(|| format!("moving the extracted tree to {}", tree.display()))?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let mark = tree.join(APPLIED_MARK);
    if let Ok(left) = std::fs::read_to_string(&mark) {
        let left = PathBuf::from(left.trim());
        println!(
            "kernel-tree: taking out {} (left by a stopped run)",
            left.display()
        );
        patch(&tree, &left, true)?;
        std::fs::remove_file(&mark)?;
    }
    Ok(tree)
}

fn patch(tree: &Path, patch: &Path, reverse: bool) -> Result<()> {
    let mut c = Command::new("patch");
    c.args(["-p1", "-s", "-N", "-i"])
        .arg(patch)
        .current_dir(tree);
    if reverse {
        c.arg("-R");
    }
    util::run(&mut c).with_context(|| {
        format!(
            "{} {}",
            if reverse { "taking out" } else { "applying" },
            patch.display()
        )
    })
}

/// One round of the proof, for the test table.
pub struct Round {
    pub name: String,
    pub release: String,
    pub build_secs: f64,
    pub secs: f64,
    pub verdict: Verdict,
}

/// Builds and checks one round; `None` for the unpatched tree.
fn round(ws: &Workspace, tree: &Path, p: Option<&Planted>) -> Result<(check_kernel::Gate, f64)> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: CheckKernelArgs,
    }
    let out = ws
        .target
        .join("pintrace-check/kernel-tree")
        .join(p.map_or("unpatched", |p| p.name.as_str()));
    let argv = [
        "check-kernel".into(),
        "--tree".into(),
        tree.to_string_lossy().into_owned(),
        "--out".into(),
        out.to_string_lossy().into_owned(),
    ];
    let wrap = Wrap::try_parse_from(argv).context("check-kernel's arguments")?;
    let t = Instant::now();
    let gate = check_kernel::gate(ws, &wrap.args)?;
    Ok((gate, t.elapsed().as_secs_f64()))
}

/// The whole proof; one `Round` per tree checked.
pub fn run(ws: &Workspace) -> Result<Vec<Round>> {
    let planted = load(&ws.root.join(PLANTED_DIR))?;
    let tree = source_tree(ws)?;
    let mut rounds = Vec::new();
    let (gate, secs) = round(ws, &tree, None)?;
    let base = gate.report.as_ref().map(outcomes).unwrap_or_default();
    let mut verdict = judge_clean(&base);
    if gate.code != 0 && verdict.problems.is_empty() {
        verdict.problems.push(format!("check exited {}", gate.code));
    }
    let (release, build_secs) = gate
        .tree
        .as_ref()
        .map_or((String::new(), 0.0), |t| (t.release.clone(), t.build_secs));
    rounds.push(Round {
        name: "unpatched".into(),
        release,
        build_secs,
        secs,
        verdict,
    });
    for p in &planted {
        println!("kernel-tree: planting {}: {}", p.name, p.title);
        patch(&tree, &p.path, false)?;
        std::fs::write(tree.join(APPLIED_MARK), p.path.to_string_lossy().as_bytes())?;
        let res = round(ws, &tree, Some(p));
        patch(&tree, &p.path, true)?;
        std::fs::remove_file(tree.join(APPLIED_MARK))?;
        let (gate, secs) = res?;
        let got = gate.report.as_ref().map(outcomes).unwrap_or_default();
        let mut verdict = judge(&base, &got, p);
        if gate.code != 1 {
            verdict
                .problems
                .push(format!("check exited {}, not 1 (findings)", gate.code));
        }
        rounds.push(Round {
            name: p.name.clone(),
            release: gate
                .tree
                .as_ref()
                .map_or(String::new(), |t| t.release.clone()),
            build_secs: gate.tree.as_ref().map_or(0.0, |t| t.build_secs),
            secs,
            verdict,
        });
    }
    Ok(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planted(header: &str) -> Planted {
        let text = format!("{header}\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n");
        parse_planted("p", Path::new("p.patch"), &text).unwrap()
    }

    fn o(status: &str, kinds: &[&str]) -> Outcome {
        Outcome {
            status: status.into(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn map(v: &[(&str, Outcome)]) -> BTreeMap<String, Outcome> {
        v.iter().map(|(n, o)| (n.to_string(), o.clone())).collect()
    }

    const HEADER: &str = "Planted regression: x\n\nKinds: pin_released_as_get\n\
                          Fails: udf/psync/*, vfat/*/write\nMay-fail: udf/*\n";

    #[test]
    fn the_header_is_read() {
        let p = planted(HEADER);
        assert_eq!(p.title, "Planted regression: x");
        assert_eq!(p.kinds.len(), 1);
        assert_eq!(p.fails.len(), 2);
        assert_eq!(p.may_fail.len(), 1);
        assert!(parse_planted("q", Path::new("q"), "Kinds: a\nFails: b\n").is_err());
        assert!(parse_planted("q", Path::new("q"), "Kinds: a\n--- a/x\n").is_err());
    }

    #[test]
    fn the_repository_patches_have_headers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(PLANTED_DIR);
        let all = load(&dir).unwrap();
        assert!(all.len() >= 4, "{all:?}");
        for p in &all {
            assert!(p.title.starts_with("Planted regression:"), "{}", p.name);
        }
    }

    #[test]
    fn a_caught_regression_passes_and_the_rest_must_be_as_before() {
        let p = planted(HEADER);
        let base = map(&[
            ("udf/psync/anon/read", o("pass", &[])),
            ("vfat/aio/anon/write", o("pass", &[])),
            ("udf/aio/anon/read", o("pass", &[])),
            ("ext4/psync/anon/read", o("pass", &[])),
            ("btrfs/pvsync-unaligned/anon/read", o("skip", &[])),
        ]);
        let good = map(&[
            ("udf/psync/anon/read", o("fail", &["pin_released_as_get"])),
            ("vfat/aio/anon/write", o("fail", &["pin_released_as_get"])),
            ("udf/aio/anon/read", o("pass", &[])),
            ("ext4/psync/anon/read", o("pass", &[])),
            ("btrfs/pvsync-unaligned/anon/read", o("skip", &[])),
        ]);
        let v = judge(&base, &good, &p);
        assert!(v.problems.is_empty(), "{v:?}");
        assert_eq!(v.caught.len(), 2);

        let mut bad = good.clone();
        bad.insert("udf/psync/anon/read".into(), o("pass", &[]));
        bad.insert(
            "vfat/aio/anon/write".into(),
            o("fail", &["leak_owner_exited"]),
        );
        bad.insert(
            "ext4/psync/anon/read".into(),
            o("fail", &["pin_released_as_get"]),
        );
        bad.insert(
            "udf/aio/anon/read".into(),
            o("fail", &["pin_released_as_get"]),
        );
        let v = judge(&base, &bad, &p);
        assert_eq!(v.caught, ["udf/aio/anon/read"], "{v:?}");
        assert_eq!(v.problems.len(), 3, "{v:?}");
        assert!(v.problems[0].contains("ext4/psync/anon/read: failed outside"));
        assert!(v.problems[1].contains("udf/psync/anon/read: pass: the regression went unseen"));
        assert!(v.problems[2].contains("failed with leak_owner_exited, not pin_released_as_get"));
    }

    #[test]
    fn a_regression_no_scenario_drove_is_not_proven() {
        let p = planted(HEADER);
        let base = map(&[("ext4/psync/anon/read", o("pass", &[]))]);
        let v = judge(&base, &base.clone(), &p);
        assert!(v.problems[0].contains("nothing proves it"), "{v:?}");
    }

    #[test]
    fn the_unpatched_round_must_be_clean() {
        assert!(
            judge_clean(&map(&[("a", o("pass", &[])), ("b", o("skip", &[]))]))
                .problems
                .is_empty()
        );
        assert_eq!(
            judge_clean(&map(&[("a", o("fail", &["leak_at_end"]))])).problems,
            ["a: fail (leak_at_end)"]
        );
    }
}
