//! The bare probe of `cargo xtask bench`: one program on
//! `pin_user_pages_fast` that only bumps a per-CPU counter, the floor any
//! tracer of that call pays. Loaded by the hidden `pintrace bench-probe`.

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{FExit, KProbe},
    Btf, Ebpf,
};

/// The bench object, embedded at build time beside the real probes.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pintrace-bench"));

/// The traced call.
pub const SYMBOL: &str = "pin_user_pages_fast";

/// How the bare probe attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BareAttach {
    /// A kprobe at the call's entry.
    Kprobe,
    /// An fexit program (BPF trampoline) at its return.
    Fexit,
}

impl BareAttach {
    pub fn program(self) -> &'static str {
        match self {
            BareAttach::Kprobe => "bench_kprobe",
            BareAttach::Fexit => "bench_fexit",
        }
    }
}

/// The bare probe, attached; dropping it detaches.
pub struct BareProbe {
    ebpf: Ebpf,
}

impl BareProbe {
    pub fn attach(how: BareAttach) -> Result<BareProbe> {
        super::raise_memlock();
        let mut ebpf = Ebpf::load(OBJECT).context("loading the bench probe object")?;
        let name = how.program();
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the bench object has no program {name}"))?;
        match how {
            BareAttach::Kprobe => {
                let p: &mut KProbe = prog.try_into()?;
                p.load().with_context(|| format!("loading {name}"))?;
                p.attach(SYMBOL, 0)
                    .with_context(|| format!("attaching {name} to {SYMBOL}"))?;
            }
            BareAttach::Fexit => {
                let btf = Btf::from_sys_fs().context("fexit needs kernel BTF")?;
                let p: &mut FExit = prog.try_into()?;
                p.load(SYMBOL, &btf)
                    .with_context(|| format!("loading {name} on {SYMBOL}"))?;
                p.attach()
                    .with_context(|| format!("attaching {name} to {SYMBOL}"))?;
            }
        }
        Ok(BareProbe { ebpf })
    }

    /// Calls counted so far, summed over CPUs.
    pub fn hits(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map("BENCH_HITS")
            .ok_or_else(|| anyhow!("the bench object has no BENCH_HITS map"))?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(array.get(&0, 0)?.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench object has the programs and the map this module names.
    #[test]
    fn the_bench_object_has_what_is_attached_and_read() {
        let obj = aya_obj::Object::parse(OBJECT).unwrap();
        for how in [BareAttach::Kprobe, BareAttach::Fexit] {
            assert!(obj.programs.contains_key(how.program()), "{how:?}");
        }
        assert!(obj.maps.contains_key("BENCH_HITS"));
    }
}
