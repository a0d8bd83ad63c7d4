//! Kernel stacks: ids from the probes' stack map, resolved to `symbol+off`
//! through /proc/kallsyms (root sees real addresses).

use std::fs;

/// A sorted table of kernel text symbols.
#[derive(Default)]
pub struct Kallsyms {
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Kallsyms {
        Kallsyms::parse(&fs::read_to_string("/proc/kallsyms").unwrap_or_default())
    }

    pub fn parse(text: &str) -> Kallsyms {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_ascii_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_owned()))
            })
            .collect();
        syms.sort_unstable();
        Kallsyms { syms }
    }

    /// `symbol+0xoff` for an address, or the bare address.
    pub fn resolve(&self, addr: u64) -> String {
        match self.syms.partition_point(|(a, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let (base, name) = &self.syms[i - 1];
                format!("{name}+{:#x}", addr - base)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_to_the_enclosing_symbol() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff815f3ba0 T pin_user_pages_fast\n\
             ffffffff815f3c00 t gup_put_folio\nffffffff82000000 D some_data\n",
        );
        assert_eq!(k.resolve(0xffffffff815f3ba0), "pin_user_pages_fast+0x0");
        assert_eq!(k.resolve(0xffffffff815f3bb4), "pin_user_pages_fast+0x14");
        assert_eq!(k.resolve(0xffffffff815f3c10), "gup_put_folio+0x10");
        assert_eq!(k.resolve(0x1000), "0x1000");
    }
}
