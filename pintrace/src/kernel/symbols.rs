//! Kernel stacks: the addresses of a stack-map entry, symbolized to
//! `symbol+0xoff` by blazesym's kernel source from kallsyms (root sees real
//! addresses; others read zeros and get bare addresses back), and
//! `symbol+0xoff [module]` for a module's symbol, as the kernel prints them.

use blazesym::{
    symbolize::{
        source::{Kernel, Source},
        Input, Symbolized, Symbolizer,
    },
    MaybeDefault,
};
use rustc_hash::FxHashMap;
use std::{path::PathBuf, sync::OnceLock};

/// The running kernel's symbols.
const KALLSYMS: &str = "/proc/kallsyms";

/// Symbolizes kernel addresses. Keep one for a session: it reads kallsyms
/// on first use and caches it.
pub struct KernelSymbolizer {
    symbolizer: Symbolizer,
    source: Source<'static>,
    kallsyms: PathBuf,
    /// The module of each module symbol, by address: blazesym's kallsyms
    /// source gives no module name, so kallsyms is read for them once, at
    /// the first stack.
    modules: OnceLock<FxHashMap<u64, Box<str>>>,
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
        let path = match &kallsyms {
            MaybeDefault::Some(p) => p.clone(),
            _ => PathBuf::from(KALLSYMS),
        };
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
        KernelSymbolizer {
            symbolizer,
            source,
            kallsyms: path,
            modules: OnceLock::new(),
        }
    }

    fn modules(&self) -> &FxHashMap<u64, Box<str>> {
        self.modules
            .get_or_init(|| match std::fs::read_to_string(&self.kallsyms) {
                Ok(text) => module_symbols(&text),
                Err(e) => {
                    log::debug!(
                        "module names not read from {}: {e}",
                        self.kallsyms.display()
                    );
                    FxHashMap::default()
                }
            })
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
                    Symbolized::Sym(sym) => match self.modules().get(&sym.addr) {
                        Some(m) => format!("{}+{:#x} [{m}]", sym.name, sym.offset),
                        None => format!("{}+{:#x}", sym.name, sym.offset),
                    },
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

/// The module symbols of a kallsyms text (`ADDR TYPE NAME\t[MODULE]`), by
/// address; the kernel's own symbols have no fourth column. BPF programs
/// show as the module `[bpf]`: their frames are dropped anyway
/// ([`without_probe_frames`]).
fn module_symbols(kallsyms: &str) -> FxHashMap<u64, Box<str>> {
    kallsyms
        .lines()
        .filter_map(|l| {
            let mut it = l.split_ascii_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let module = it.nth(2)?.strip_prefix('[')?.strip_suffix(']')?;
            (addr != 0).then(|| (addr, module.into()))
        })
        .collect()
}

/// Drops the frames of the BPF program and its trampoline (fentry and fexit
/// stacks start inside them): a stack starts at the traced call. The one
/// rule for a live run's stacks and a replayed recording's (recordings made
/// before live runs stripped them keep those frames).
pub fn without_probe_frames(frames: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = frames
        .into_iter()
        .filter(|f| !f.starts_with("bpf_prog_") && !f.starts_with("bpf_trampoline_"))
        .collect();
    // A traced function called through its trampoline shows twice (its
    // body, then its patched entry): keep one. A function is its name and
    // its module (a module's static function may share a kernel name).
    let function = |f: &str| {
        let name = f.split('+').next().unwrap_or("");
        (
            name.to_owned(),
            f.split_once(' ').map(|(_, m)| m.to_owned()),
        )
    };
    out.dedup_by(|later, earlier| function(later) == function(earlier));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn probe_frames_are_dropped() {
        let frames = [
            "bpf_prog_5a0342e6983260c4_fentry_gup_put_folio+0x203",
            "bpf_trampoline_6442489956+0x4b",
            "gup_put_folio+0x5",
            "pinzoo_ioctl+0x55e",
        ]
        .map(String::from);
        assert_eq!(
            without_probe_frames(frames),
            ["gup_put_folio+0x5", "pinzoo_ioctl+0x55e"]
        );
        // Mid-stack: a function with an fentry/fexit program of its own.
        let frames = [
            "pin_user_pages_fast+0x9",
            "iov_iter_extract_pages+0xe9",
            "bio_iov_iter_get_pages+0xba",
            "bpf_trampoline_6442513784+0x79",
            "bio_iov_iter_get_pages+0x9",
            "pinzoo_ioctl+0x6ab",
        ]
        .map(String::from);
        assert_eq!(
            without_probe_frames(frames),
            [
                "pin_user_pages_fast+0x9",
                "iov_iter_extract_pages+0xe9",
                "bio_iov_iter_get_pages+0xba",
                "pinzoo_ioctl+0x6ab"
            ]
        );
    }

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
                "pinzoo_release+0x15e [pinzoo]",
                "pinzoo_ioctl+0x0 [pinzoo]",
                // Below the first symbol (the zero address is no symbol).
                "0x1000",
            ]
        );
        // Later stacks come from the same (cached) table.
        assert_eq!(k.frames(&[0xffffffff815f3ba1]), ["pin_user_pages_fast+0x1"]);
        assert!(k.frames(&[]).is_empty());
    }

    /// A planted leak's acquire stack through the fexit program, against a
    /// kallsyms excerpt with modules (tests/data/kallsyms): module frames
    /// name their module, by address (the loop module's `submit_bio` is
    /// not the kernel's), and the probe's frames go.
    #[test]
    fn module_frames_carry_their_module_name() {
        let k = KernelSymbolizer::from_kallsyms(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/kallsyms"
        ));
        let stack = [
            0xffffffffc000218c,
            0xffffffffc000407c,
            0xffffffff815f3ba9,
            0xffffffff816b2ef9,
            0xffffffff817c0afa,
            0xffffffffc0a016ab,
            0xffffffff812a4cc7,
            0xffffffffc0b10410,
            0xffffffff817c0c10,
        ];
        assert_eq!(
            without_probe_frames(k.frames(&stack)),
            [
                "pin_user_pages_fast+0x9",
                "iov_iter_extract_pages+0xe9",
                "bio_iov_iter_get_pages+0xba",
                "pinzoo_ioctl+0x6ab [pinzoo]",
                "__x64_sys_ioctl+0x97",
                "submit_bio+0x10 [loop]",
                "submit_bio+0x10",
            ]
        );
        let modules = module_symbols(&fs::read_to_string(&k.kallsyms).unwrap());
        assert_eq!(modules.len(), 7, "{modules:?}");
        assert_eq!(
            modules.get(&0xffffffffc0a03000).map(|m| &**m),
            Some("pinzoo")
        );
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
