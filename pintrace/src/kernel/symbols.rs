//! Kernel stacks: the addresses of a stack-map entry, symbolized to
//! `symbol+0xoff` by blazesym's kernel source from kallsyms (root sees real
//! addresses; others read zeros and get bare addresses back).

use blazesym::{
    symbolize::{
        source::{Kernel, Source},
        Input, Symbolized, Symbolizer,
    },
    MaybeDefault,
};
use std::path::PathBuf;

/// Symbolizes kernel addresses. Keep one for a session: it reads kallsyms
/// on first use and caches it.
pub struct KernelSymbolizer {
    symbolizer: Symbolizer,
    source: Source<'static>,
}

impl KernelSymbolizer {
    /// The running kernel's /proc/kallsyms.
    pub fn running() -> KernelSymbolizer {
        KernelSymbolizer::with_kallsyms(MaybeDefault::Default)
    }

    /// A kallsyms file: a copy from another machine, or a test's.
    pub fn from_kallsyms(path: impl Into<PathBuf>) -> KernelSymbolizer {
        KernelSymbolizer::with_kallsyms(MaybeDefault::Some(path.into()))
    }

    fn with_kallsyms(kallsyms: MaybeDefault<PathBuf>) -> KernelSymbolizer {
        let source = Source::Kernel(Kernel {
            kallsyms,
            // kallsyms alone. With a vmlinux, blazesym looks module
            // addresses up only in the module's file listed by depmod and
            // leaves them unresolved otherwise, so an out-of-tree module's
            // frames (insmod from anywhere) would lose their names; kallsyms
            // lists every loaded module's symbols, BPF programs included.
            vmlinux: MaybeDefault::None,
            debug_syms: false,
            ..Kernel::default()
        });
        let symbolizer = Symbolizer::builder()
            .enable_code_info(false)
            .enable_inlined_fns(false)
            .enable_demangling(false)
            .build();
        KernelSymbolizer { symbolizer, source }
    }

    /// `symbol+0xoff` per address (one lookup for the whole stack), or the
    /// bare address where no symbol covers it or kallsyms cannot be read.
    pub fn frames(&self, addrs: &[u64]) -> Vec<String> {
        let bare = |addr: &u64| format!("{addr:#x}");
        match self
            .symbolizer
            .symbolize(&self.source, Input::AbsAddr(addrs))
        {
            Ok(syms) => addrs
                .iter()
                .zip(syms)
                .map(|(addr, s)| match s {
                    Symbolized::Sym(sym) => format!("{}+{:#x}", sym.name, sym.offset),
                    Symbolized::Unknown(_) => bare(addr),
                })
                .collect(),
            Err(e) => {
                log::debug!("kernel stack not symbolized: {e}");
                addrs.iter().map(bare).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn resolves_to_the_enclosing_symbol() {
        let dir = tempfile::tempdir().unwrap();
        let kallsyms = dir.path().join("kallsyms");
        fs::write(
            &kallsyms,
            "0000000000000000 A fixed_percpu_data\n\
             ffffffff81000000 T _stext\n\
             ffffffff815f3ba0 T pin_user_pages_fast\n\
             ffffffff815f3c00 t gup_put_folio\n\
             ffffffffc0a01000 t pinzoo_ioctl\t[pinzoo]\n\
             ffffffffc0a01400 t pinzoo_release\t[pinzoo]\n",
        )
        .unwrap();
        let k = KernelSymbolizer::from_kallsyms(&kallsyms);
        assert_eq!(
            k.frames(&[
                0xffffffff815f3ba0,
                0xffffffff815f3bb4,
                0xffffffff815f3c10,
                0xffffffffc0a0155e,
                0xffffffffc0a01000,
                0x1000,
            ]),
            [
                "pin_user_pages_fast+0x0",
                "pin_user_pages_fast+0x14",
                "gup_put_folio+0x10",
                "pinzoo_release+0x15e",
                "pinzoo_ioctl+0x0",
                // Below the first symbol (the zero address is no symbol).
                "0x1000",
            ]
        );
        // Later stacks come from the same (cached) table.
        assert_eq!(k.frames(&[0xffffffff815f3ba1]), ["pin_user_pages_fast+0x1"]);
        assert!(k.frames(&[]).is_empty());
    }

    #[test]
    fn an_unreadable_kallsyms_leaves_bare_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let k = KernelSymbolizer::from_kallsyms(dir.path().join("missing"));
        assert_eq!(k.frames(&[0xffffffff815f3ba0]), ["0xffffffff815f3ba0"]);
        // Without root, kallsyms reads as zeros: no symbol at all.
        let zeros = dir.path().join("kallsyms");
        fs::write(&zeros, "0000000000000000 T pin_user_pages_fast\n").unwrap();
        let k = KernelSymbolizer::from_kallsyms(&zeros);
        assert_eq!(k.frames(&[0xffffffff815f3ba0]), ["0xffffffff815f3ba0"]);
    }

    /// A function of this host's kernel, looked up in /proc/kallsyms and
    /// symbolized back from its address and from inside its body.
    #[test]
    fn symbolizes_the_running_kernel() {
        let Ok(text) = fs::read_to_string("/proc/kallsyms") else {
            println!("skipped: /proc/kallsyms is not readable");
            return;
        };
        let syms: Vec<(u64, &str, &str)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_ascii_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                Some((addr, it.next()?, it.next()?))
            })
            .collect();
        let known = ["pin_user_pages_fast", "get_user_pages_fast", "schedule"];
        let Some(&(addr, _, _)) = syms
            .iter()
            .find(|(_, kind, name)| matches!(*kind, "t" | "T") && known.contains(name))
        else {
            println!("skipped: none of {known:?} in /proc/kallsyms");
            return;
        };
        if addr == 0 {
            println!("skipped: /proc/kallsyms shows zero addresses (not root)");
            return;
        }
        // Any name kallsyms gives this address (aliases share one).
        let names: Vec<&str> = syms
            .iter()
            .filter(|(a, _, _)| *a == addr)
            .map(|(_, _, name)| *name)
            .collect();
        let frames = KernelSymbolizer::running().frames(&[addr, addr + 1]);
        let name = frames[0].strip_suffix("+0x0").unwrap_or("");
        assert!(names.contains(&name), "{frames:?} for {names:?}");
        assert_eq!(frames[1], format!("{name}+0x1"));
    }
}
