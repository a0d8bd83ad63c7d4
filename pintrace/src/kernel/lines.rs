//! Source lines for kernel frames (`--vmlinux FILE`): a frame
//! `symbol+0xoff` becomes `symbol+0xoff (file:line)` from a vmlinux with
//! DWARF debug info. Off by default: stacks are named from kallsyms alone
//! (`symbols.rs` says why).
//!
//! The frame's symbol is looked up by name in the file and its offset
//! added, rather than the frame's address being mapped: no KASLR offset is
//! needed, and a replayed recording (which keeps frames as text) gets the
//! same lines as the live run. Module frames (`[module]`), names the file
//! does not have exactly once (static functions may share one) and frames
//! without a line keep their text.

use blazesym::{
    inspect::{self, Inspector},
    symbolize::{self, Input, Symbolized, Symbolizer},
};
use rustc_hash::FxHashMap;
use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

pub struct LineInfo {
    vmlinux: PathBuf,
    inspector: Inspector,
    symbolizer: Symbolizer,
    /// The line found for each frame (`None`: none), so a stack seen again
    /// costs no lookup.
    cache: Mutex<FxHashMap<String, Option<String>>>,
}

impl LineInfo {
    /// Lines from `vmlinux`; fails (naming the file) when it cannot be read.
    pub fn open(vmlinux: &Path) -> anyhow::Result<LineInfo> {
        std::fs::File::open(vmlinux)
            .map_err(|e| anyhow::anyhow!("--vmlinux {}: {e}", vmlinux.display()))?;
        Ok(LineInfo {
            vmlinux: vmlinux.to_owned(),
            inspector: Inspector::new(),
            symbolizer: Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(false)
                .enable_demangling(false)
                .build(),
            cache: Mutex::new(FxHashMap::default()),
        })
    }

    /// `frames` with ` (file:line)` added where the vmlinux has one.
    pub fn annotate(&self, frames: Vec<String>) -> Vec<String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        frames
            .into_iter()
            .map(|f| {
                let line = cache
                    .entry(f.clone())
                    .or_insert_with(|| self.line(&f))
                    .clone();
                match line {
                    Some(l) => format!("{f} ({l})"),
                    None => f,
                }
            })
            .collect()
    }

    /// `file:line` of a frame of the kernel's own code.
    fn line(&self, frame: &str) -> Option<String> {
        let (name, offset) = parse_frame(frame)?;
        let src = inspect::source::Source::Elf(inspect::source::Elf::new(&self.vmlinux));
        let found = self.inspector.lookup(&src, &[name]).ok()?;
        let [sym] = found.first()?.as_slice() else {
            return None;
        };
        let src = symbolize::source::Source::Elf(symbolize::source::Elf::new(&self.vmlinux));
        let addr = sym.addr.checked_add(offset)?;
        match self
            .symbolizer
            .symbolize_single(&src, Input::VirtOffset(addr))
        {
            Ok(Symbolized::Sym(s)) => {
                let code = s.code_info?;
                let line = code.line?;
                Some(format!("{}:{line}", code.to_path().display()))
            }
            _ => None,
        }
    }
}

/// The symbol and offset of `symbol+0xoff` (also `symbol+0xoff/0xsize`);
/// `None` for a module's frame, a bare address or anything else.
fn parse_frame(frame: &str) -> Option<(&str, u64)> {
    if frame.contains(' ') {
        return None;
    }
    let (name, rest) = frame.split_once('+')?;
    let off = rest.split('/').next()?.strip_prefix("0x")?;
    Some((name, u64::from_str_radix(off, 16).ok()?)).filter(|(n, _)| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function of this test binary, which has DWARF line info as a
    /// vmlinux built with debug info does: the test's stand-in for one.
    #[no_mangle]
    #[inline(never)]
    pub extern "C" fn pintrace_lines_test_target(x: u64) -> u64 {
        // Plain arithmetic: no inlined callee to give the line instead.
        x ^ 0x5a5a
    }

    #[test]
    fn frames_get_their_source_line_from_a_file_with_debug_info() {
        std::hint::black_box(pintrace_lines_test_target(1));
        let exe = std::env::current_exe().unwrap();
        let lines = LineInfo::open(&exe).unwrap();
        let out = lines.annotate(vec![
            "pintrace_lines_test_target+0x0".into(),
            "pintrace_lines_test_target+0x0/0x20".into(),
            "pinzoo_ioctl+0x6ab [pinzoo]".into(),
            "no_such_function_anywhere+0x10".into(),
            "0xffffffff815f3ba0".into(),
        ]);
        let file = "lines.rs:";
        assert!(
            out[0].starts_with("pintrace_lines_test_target+0x0 (") && out[0].contains(file),
            "{out:?}"
        );
        assert!(out[1].contains(file), "{out:?}");
        // A module's frame, an unknown name and a bare address stay as they were.
        assert_eq!(
            out[2..],
            [
                "pinzoo_ioctl+0x6ab [pinzoo]",
                "no_such_function_anywhere+0x10",
                "0xffffffff815f3ba0"
            ]
        );
        // Annotated again: nothing changes.
        assert_eq!(
            lines.annotate(vec![out[0].clone()])[0]
                .matches(file)
                .count(),
            1
        );
    }

    #[test]
    fn a_missing_vmlinux_is_named() {
        let err = LineInfo::open(Path::new("/nonexistent/vmlinux"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("--vmlinux /nonexistent/vmlinux"),
            "{err}"
        );
    }

    #[test]
    fn frames_parse() {
        assert_eq!(
            parse_frame("gup_put_folio+0x10"),
            Some(("gup_put_folio", 0x10))
        );
        assert_eq!(parse_frame("a+0x0/0x60"), Some(("a", 0)));
        assert_eq!(parse_frame("m+0x1 [mod]"), None);
        assert_eq!(parse_frame("0xffff"), None);
        assert_eq!(parse_frame("+0x1"), None);
    }
}
