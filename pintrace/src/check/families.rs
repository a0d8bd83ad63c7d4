//! The scenario families of `pintrace check`: the one place to add a path.
//! Each family names what it covers and lists its scenarios; a new family is
//! one entry in [`FAMILIES`], a new regression one entry in [`REGRESSIONS`].

use super::scenario::{Dir, Drive, Fault, Regression, Scenario, TargetKind};
use pintrace_engine::BufferKind;

/// A family of scenarios.
pub struct Family {
    pub name: &'static str,
    /// What it covers, for `check --list`.
    pub about: &'static str,
    pub scenarios: fn() -> Vec<Scenario>,
}

pub static FAMILIES: &[Family] = &[
    Family {
        name: "fs",
        about: "every plain drive, reads and writes on anonymous memory, on a loop device, \
                ext4, xfs, btrfs and a FUSE passthrough (iomap, bio_iov_iter_get_pages, fuse)",
        scenarios: fs,
    },
    Family {
        name: "buffers",
        about: "THP, hugetlb, file-backed and fork-shared buffers under every plain drive on \
                the loop device",
        scenarios: buffers,
    },
    Family {
        name: "nvme",
        about: "an NVMe namespace given with --scratch-device: the block drives on a blk-mq \
                driver with DMA mapping, and passthrough (IORING_OP_URING_CMD on /dev/ngXnY, \
                blk_rq_map_user_iov) on plain and registered buffers",
        scenarios: nvme,
    },
    Family {
        name: "sg",
        about: "SCSI READ/WRITE through SG_IO (blk_rq_map_user_iov -> bio_map_user_iov) on a \
                scsi_debug disk and on a SCSI disk given with --scratch-device: page-aligned \
                buffers the kernel maps, sub-page iovec lists it merges, misaligned buffers it \
                copies (no pin)",
        scenarios: sg,
    },
    Family {
        name: "legacy",
        about: "vfat and udf: Direct I/O through fs/direct-io.c, whose extra pins \
                (folio_add_pin) are counted apart",
        scenarios: legacy,
    },
    Family {
        name: "nfs",
        about: "NFSv4.2 over a loopback export of the kernel's nfsd: NFS-Direct \
                (fs/nfs/direct.c), which takes FOLL_GET references on Debian's kernels",
        scenarios: nfs,
    },
    Family {
        name: "subpage",
        about: "adjacent sub-page iovecs inside one page through preadv/pwritev on a block \
                device and on iomap file systems: each segment is pinned, the bio merges them",
        scenarios: subpage,
    },
    Family {
        name: "fault",
        about: "error paths: an unmapped page inside the buffer, I/O past the end of the device, \
                a buffer registration failing on its last iovec, bios failed by dm-error and \
                dm-flakey; every pin taken must come back",
        scenarios: faults,
    },
    Family {
        name: "regress",
        about: "the exact patterns of real kernel bugs of this class, each naming its commit",
        scenarios: regressions,
    },
];

const PLAIN: [Drive; 5] = [
    Drive::Psync,
    Drive::PvsyncUnaligned,
    Drive::IoUring,
    Drive::IoUringFixed,
    Drive::Aio,
];

/// `targets` × `drives` × reads and writes on `buffer`.
fn product(targets: &[TargetKind], drives: &[Drive], buffer: BufferKind) -> Vec<Scenario> {
    let mut v = Vec::new();
    for &t in targets {
        for &d in drives {
            for dir in Dir::BOTH {
                v.push(Scenario::new(t, d, buffer, dir));
            }
        }
    }
    v
}

fn fs() -> Vec<Scenario> {
    use TargetKind::*;
    product(&[Block, Ext4, Xfs, Btrfs, Fuse], &PLAIN, BufferKind::Anon)
}

fn buffers() -> Vec<Scenario> {
    [
        BufferKind::Thp,
        BufferKind::Hugetlb,
        BufferKind::FileShared,
        BufferKind::ForkShared,
    ]
    .into_iter()
    .flat_map(|b| product(&[TargetKind::Block], &PLAIN, b))
    .collect()
}

fn nvme() -> Vec<Scenario> {
    // No pvsync-unaligned: NVMe refuses iovec lengths that are not
    // multiples of its logical block size (EINVAL), whatever its DMA
    // alignment allows.
    use Drive::*;
    product(
        &[TargetKind::Nvme],
        &[Psync, IoUring, IoUringFixed, Aio, UringCmd, UringCmdFixed],
        BufferKind::Anon,
    )
}

fn sg() -> Vec<Scenario> {
    product(
        &[TargetKind::ScsiDebug, TargetKind::Scsi],
        &[Drive::Sg, Drive::SgSubpage, Drive::SgCopy],
        BufferKind::Anon,
    )
}

fn legacy() -> Vec<Scenario> {
    use {BufferKind::Anon, Drive::*, TargetKind::*};
    product(&[Udf, Vfat], &[Psync, IoUring, IoUringFixed, Aio], Anon)
}

fn nfs() -> Vec<Scenario> {
    product(
        &[TargetKind::Nfs],
        &[
            Drive::Psync,
            Drive::IoUring,
            Drive::IoUringFixed,
            Drive::Aio,
        ],
        BufferKind::Anon,
    )
}

fn subpage() -> Vec<Scenario> {
    use TargetKind::*;
    product(
        &[Block, Ext4, Xfs],
        &[Drive::PvsyncSubpage],
        BufferKind::Anon,
    )
}

fn faults() -> Vec<Scenario> {
    use {BufferKind::Anon, Dir::*, Drive::*, Fault::*, TargetKind::*};
    [
        (Block, Psync, Read, Hole),
        (Block, Psync, Write, Hole),
        (Block, IoUring, Read, Hole),
        (Block, Aio, Write, Hole),
        (ScsiDebug, Sg, Read, Hole),
        (Block, Psync, Read, PastEnd),
        (ScsiDebug, Sg, Read, PastEnd),
        (ScsiDebug, Sg, Write, PastEnd),
        (Block, IoUringFixed, Read, RegisterLast),
        (Block, Psync, Read, DmError),
        (Block, Psync, Write, DmError),
        (Block, Aio, Read, DmError),
        (Block, IoUring, Write, DmFlakey),
    ]
    .into_iter()
    .map(|(t, d, dir, f)| Scenario::new(t, d, Anon, dir).with_fault(f))
    .collect()
}

/// The real bugs, each with the pattern it needed.
pub static REGRESSIONS: [Regression; 6] = [
    Regression {
        name: "thp-offset-512",
        bug: "__bio_release_pages() released the wrong pages of a large folio when the buffer \
              did not start on a page boundary (fixed by 38b43539d64b, block: Fix page \
              refcounts for unaligned buffers in __bio_release_pages())",
        reaches: "bio_iov_iter_get_pages on a THP folio from offset 512; the bio's release \
                  unpins every page it pinned",
        engine_args: &["--buffer-offset", "512"],
    },
    Regression {
        name: "hugetlb-offset-512",
        bug: "the same unaligned-buffer release (38b43539d64b) on a hugetlb folio",
        reaches: "bio_iov_iter_get_pages on a 2 MiB hugetlb folio from offset 512",
        engine_args: &["--buffer-offset", "512"],
    },
    Regression {
        name: "subpage-merge-block",
        bug: "a bio merging a same-page segment kept the extra pin (fixed by 5905afc2c7bb, \
              block: fix pin count management when merging same-page segments)",
        reaches: "bio_iov_iter_get_pages pinning one page per sub-page iovec, the same-page \
                  merge releasing the extra pins, on a raw block device",
        engine_args: &[],
    },
    Regression {
        name: "subpage-merge-xfs",
        bug: "the same-page merge pin count (5905afc2c7bb) through iomap",
        reaches: "iomap_dio_bio_iter -> bio_iov_iter_get_pages with adjacent sub-page iovecs",
        engine_args: &[],
    },
    Regression {
        name: "subpage-merge-sg",
        bug: "the same-page merge pin count (5905afc2c7bb) through SG_IO",
        reaches: "blk_rq_map_user_iov -> bio_map_user_iov with an iovec list of adjacent \
                  sub-page segments",
        engine_args: &[],
    },
    Regression {
        name: "uring-fixed-hugepage-unaligned",
        bug: "a registered buffer coalesced over huge pages (a8edbb424b13, io_uring/rsrc: \
              enable multi-hugepage buffer coalescing) at an unaligned address unpinned the head \
              page for a pinned tail page (fixed by 5afb4bf9fc62)",
        reaches: "io_sqe_buffer_register pinning a hugetlb buffer that starts 512 bytes into \
                  the folio, FOLL_LONGTERM; the unregister releases every pin",
        engine_args: &["--buffer-offset", "512"],
    },
];

fn regressions() -> Vec<Scenario> {
    use {BufferKind::*, Dir::Read, Drive::*, TargetKind::*};
    let pattern = [
        (Block, Psync, Thp),
        (Block, Psync, Hugetlb),
        (Block, PvsyncSubpage, Anon),
        (Xfs, PvsyncSubpage, Anon),
        (ScsiDebug, SgSubpage, Anon),
        (Block, IoUringFixed, Hugetlb),
    ];
    REGRESSIONS
        .iter()
        .zip(pattern)
        .map(|(r, (t, d, b))| Scenario::new(t, d, b, Read).regression(r))
        .collect()
}
