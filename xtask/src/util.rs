//! Small helpers shared by the xtask commands: the workspace layout and
//! running external programs with errors that say what was run.

use anyhow::{bail, Context as _, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Where the workspace and its target folder are, asked from cargo (so
/// `CARGO_TARGET_DIR` and friends are honoured).
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
    /// Whether the pintrace package has its `guest` test target yet.
    pub has_guest_tests: bool,
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        let meta = cargo_metadata::MetadataCommand::new()
            .cargo_path(cargo_bin())
            .no_deps()
            .exec()
            .context("running `cargo metadata` to locate the workspace")?;
        let has_guest_tests = meta
            .packages
            .iter()
            .filter(|p| p.name.as_str() == "pintrace")
            .flat_map(|p| &p.targets)
            .any(|t| t.name == "guest" && t.is_test());
        Ok(Self {
            has_guest_tests,
            root: meta.workspace_root.into_std_path_buf(),
            target: meta.target_directory.into_std_path_buf(),
        })
    }

    /// Everything the VM harness keeps: debs, kernels, logs, exports.
    pub fn vm_dir(&self) -> PathBuf {
        self.target.join("pintrace-vm")
    }
}

/// The cargo that runs us (cargo sets `CARGO` for `cargo run`), else the one
/// on PATH. Never use this with `+toolchain`: it may be the toolchain's own
/// binary rather than the rustup proxy.
pub fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

pub fn cargo() -> Command {
    Command::new(cargo_bin())
}

/// `a b 'c d'`, for messages.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![quote(cmd.get_program())];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%^".contains(c))
    {
        s.into_owned()
    } else {
        shell_quote(&s)
    }
}

/// Single-quote a word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Run with inherited stdio; fail with the command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Run and capture stdout (stderr passes through); fail when it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", display(cmd), out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Run quietly and capture stdout; `None` when it cannot start or fails.
pub fn try_output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since `t`, one decimal.
pub fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

pub fn create_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// Write `path` whole: a temporary file beside it, then a rename, so that
/// a reader never sees half of it.
pub fn write_whole(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
