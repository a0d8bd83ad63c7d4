//! Where each I/O's buffer lies (segments, `--buffer-offset`) and how a
//! `--fault` is laid into the buffers or the offsets, checked against the
//! target once it is open.

use super::buffer::{Arena, SegLayout, PAGE};
use super::config::{EngineConfig, FaultKind, Mode};
use super::target::TargetInfo;
use anyhow::{bail, Result};

/// The segments of one slot for this configuration and target.
pub fn slot_layout(cfg: &EngineConfig, info: &TargetInfo) -> Result<SegLayout> {
    let bs = cfg.bs as usize;
    let off = cfg.buffer_offset as usize;
    let mem_align = info.dio_mem_align.max(1) as usize;
    // O_DIRECT refuses memory that is not aligned to the DMA alignment; the
    // passthrough modes are the point of unaligned offsets (the kernel copies).
    if cfg.direct && !cfg.mode.is_passthrough() && !off.is_multiple_of(mem_align) {
        bail!(
            "--buffer-offset: {off} is not a multiple of the memory alignment O_DIRECT needs \
             on {} ({mem_align} bytes, from {}); the kernel would refuse every I/O (EINVAL)",
            info.path.display(),
            info.align_source
        );
    }
    if cfg.subpage_iovecs {
        let l = SegLayout::subpage(bs, cfg.iovecs, off)
            .map_err(|m| anyhow::anyhow!("--subpage-iovecs: {m}"))?;
        let seg = bs / cfg.iovecs as usize;
        let lbs = info.logical_block_size.max(1) as usize;
        if cfg.direct && cfg.mode == Mode::Pvsync && !seg.is_multiple_of(lbs) {
            bail!(
                "--subpage-iovecs: each segment, bs/N = {seg} bytes, must be a multiple of the \
                 logical block size of {} ({lbs} bytes) for O_DIRECT",
                info.path.display()
            );
        }
        return Ok(l);
    }
    if cfg.mode == Mode::Pvsync {
        let unit = if !cfg.direct {
            512
        } else if cfg.unaligned_iovecs {
            mem_align.max(64)
        } else {
            info.logical_block_size as usize
        };
        return Ok(SegLayout::scattered(bs, cfg.iovecs, unit, mem_align).shifted(off));
    }
    Ok(SegLayout::contiguous_at(bs, off))
}

/// The page of a slot (offset from the slot's start) that `--fault hole`
/// makes inaccessible: the middle page of the buffer, never its first, so
/// that the pages before it are pinned before pinning fails.
pub fn hole_page(layout: &SegLayout) -> usize {
    let (o, l) = layout.segs[0];
    let first = o / PAGE;
    let last = (o + l - 1) / PAGE;
    (first + (last - first).div_ceil(2)) * PAGE
}

/// Lay the fault into the buffers: a PROT_NONE page in every slot (`hole`)
/// or in the last slot (`register-last`).
pub fn arm_buffers(
    cfg: &EngineConfig,
    arena: &Arena,
    layout: &SegLayout,
    slots: usize,
) -> Result<()> {
    let pages: Vec<usize> = match cfg.fault {
        Some(FaultKind::Hole) => (0..slots)
            .map(|s| s * layout.slot_len + hole_page(layout))
            .collect(),
        Some(FaultKind::RegisterLast) => {
            vec![(slots - 1) * layout.slot_len + layout.segs[0].0 / PAGE * PAGE]
        }
        _ => return Ok(()),
    };
    for p in pages {
        arena
            .protect_page(p)
            .map_err(|e| anyhow::anyhow!("--fault: mprotect(PROT_NONE) of a buffer page: {e}"))?;
    }
    Ok(())
}

/// Where the region starts on the target: 0, or with `--fault past-end`
/// the first block boundary at or after the target's end.
pub fn region_base(cfg: &EngineConfig, info: &TargetInfo) -> Result<u64> {
    if cfg.fault != Some(FaultKind::PastEnd) {
        return Ok(0);
    }
    if info.kind == "file" {
        bail!(
            "--fault past-end: {} is a file (reads there end at EOF and writes grow it); \
             use a block device, an sg node or an NVMe namespace",
            info.path.display()
        );
    }
    Ok(info.size.div_ceil(cfg.bs) * cfg.bs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole_is_inside_and_not_first() {
        for (bs, off) in [(8192, 0), (12288, 0), (65536, 0), (4096, 512), (8192, 2)] {
            let l = SegLayout::contiguous_at(bs, off);
            let h = hole_page(&l);
            assert!(h > off, "{bs} {off}");
            assert!(h < off + bs, "{bs} {off}");
            assert!(h + PAGE <= l.slot_len);
        }
        assert_eq!(hole_page(&SegLayout::contiguous(16384)), 2 * PAGE);
    }
}
