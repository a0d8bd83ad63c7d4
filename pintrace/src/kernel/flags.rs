//! `gup_flags` values: from the kernel's BTF where it has them (an enum
//! from 6.3 on), else from a table by kernel version (docs/kernel.md):
//! macros up to 6.2, the enum's values from 6.3. A backport or an -rc
//! kernel whose values differ from its version's is then read right
//! wherever it has BTF.

use crate::kernel::layout::{self, BioOffsets};
use btf_rs::Btf;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FollFlags {
    pub get: u32,
    pub pin: u32,
    pub longterm: u32,
    /// `bi_flags` mask of BIO_PAGE_PINNED (6.5 on; from BTF when the kernel
    /// has it): the bio's pages are pinned and its release unpins them. 0
    /// where bios only hold FOLL_GET references, released with put_page.
    pub bio_page_pinned: u32,
}

impl FollFlags {
    pub const UP_TO_6_2: FollFlags = FollFlags {
        get: 0x04,
        pin: 0x40000,
        longterm: 0x10000,
        bio_page_pinned: 0,
    };
    pub const FROM_6_3: FollFlags = FollFlags {
        get: 1 << 1,
        pin: 1 << 19,
        longterm: 1 << 8,
        bio_page_pinned: 0,
    };

    /// The flag values of a kernel release string such as "6.12.117+deb12-cloud-amd64".
    pub fn for_release(release: &str) -> FollFlags {
        match parse_version(release) {
            Some(v) if v < (6, 3) => Self::UP_TO_6_2,
            Some(v) if v < (6, 5) => Self::FROM_6_3,
            // BIO_PAGE_PINNED is the first bio flag from 6.5 on.
            _ => FollFlags {
                bio_page_pinned: 1,
                ..Self::FROM_6_3
            },
        }
    }
}

/// The enumerators read from BTF, in [`FollFlags`] field order.
pub const BTF_NAMES: [&str; 3] = ["FOLL_GET", "FOLL_PIN", "FOLL_LONGTERM"];

/// The running kernel's flag values and where they came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DetectedFlags {
    #[serde(flatten)]
    pub flags: FollFlags,
    /// "BTF", or "version table (6.1)" (with why BTF did not give them,
    /// when it has some).
    pub source: String,
}

impl DetectedFlags {
    /// The running kernel's values: from `btf` where it has all three
    /// enumerators, else the version table of `release`. `bio` is the bio
    /// layout read from the same BTF: its BIO_PAGE_PINNED bit, when BTF
    /// gives the layout.
    pub fn detect(btf: Option<&Btf>, release: &str, bio: Option<&BioOffsets>) -> DetectedFlags {
        let found = match btf {
            Some(btf) => {
                let v = layout::enumerators(btf, &BTF_NAMES);
                [v[0], v[1], v[2]]
            }
            None => [None; 3],
        };
        DetectedFlags::choose(release, found, bio)
    }

    /// The pure choice of [`detect`](Self::detect): `btf` holds FOLL_GET,
    /// FOLL_PIN and FOLL_LONGTERM as found in BTF (`None`: not there).
    /// All three, non-zero and distinct, or the version table.
    pub fn choose(release: &str, btf: [Option<u32>; 3], bio: Option<&BioOffsets>) -> DetectedFlags {
        let table = FollFlags::for_release(release);
        let version = match parse_version(release) {
            Some((major, minor)) => format!("{major}.{minor}"),
            None => format!("release {release:?} unparsed, taken as 6.5 on"),
        };
        let mut out = match btf {
            [Some(get), Some(pin), Some(longterm)]
                if get != 0
                    && pin != 0
                    && longterm != 0
                    && get != pin
                    && pin != longterm
                    && get != longterm =>
            {
                DetectedFlags {
                    flags: FollFlags {
                        get,
                        pin,
                        longterm,
                        ..table
                    },
                    source: "BTF".into(),
                }
            }
            [None, None, None] => DetectedFlags {
                flags: table,
                source: format!("version table ({version})"),
            },
            found => {
                let odd: Vec<String> = BTF_NAMES
                    .iter()
                    .zip(found)
                    .filter_map(|(name, v)| match v {
                        None => Some(format!("no {name}")),
                        Some(0) => Some(format!("{name} = 0")),
                        Some(_) => None,
                    })
                    .collect();
                let why = if odd.is_empty() {
                    "values that are not distinct".to_owned()
                } else {
                    odd.join(", ")
                };
                DetectedFlags {
                    flags: table,
                    source: format!("version table ({version}; BTF has {why})"),
                }
            }
        };
        if let Some(bio) = bio {
            out.flags.bio_page_pinned = bio.page_pinned_bit.map_or(0, |b| 1 << b);
        }
        out
    }
}

/// (major, minor) of a kernel release string.
pub fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::layout::VMLINUX_BTF;

    /// The machine's own kernel (6.3 on) has the flags as enumerators: they
    /// come from BTF, with the values of its headers.
    #[test]
    fn this_kernels_flags_come_from_btf() {
        let path = std::path::Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let bio = layout::StructOffsets::from_btf(&btf).unwrap().bio;
        let f = DetectedFlags::detect(Some(&btf), release.trim(), bio.as_ref());
        assert_eq!(f.source, "BTF");
        assert_eq!(
            (f.flags.get, f.flags.longterm, f.flags.pin),
            (2, 256, 524288)
        );
        assert_eq!(f.flags.bio_page_pinned, 1, "BIO_PAGE_PINNED is bit 0");
    }

    #[test]
    fn without_all_three_in_btf_the_version_table_says_why() {
        let f = DetectedFlags::choose("6.1.0-56-cloud-amd64", [None; 3], None);
        assert_eq!(f.flags, FollFlags::UP_TO_6_2);
        assert_eq!(f.source, "version table (6.1)");
        let f = DetectedFlags::choose("6.12.9", [Some(2), None, Some(256)], None);
        assert_eq!(f.flags, FollFlags::for_release("6.12.9"));
        assert_eq!(f.source, "version table (6.12; BTF has no FOLL_PIN)");
        let f = DetectedFlags::choose("6.12.9", [Some(2), Some(2), Some(256)], None);
        assert_eq!(
            f.source,
            "version table (6.12; BTF has values that are not distinct)"
        );
        let f = DetectedFlags::choose("garbage", [None; 3], None);
        assert!(f.source.contains("\"garbage\" unparsed"), "{}", f.source);
        // A backport whose values differ from its version's table: BTF wins.
        let f = DetectedFlags::choose("6.1.99", [Some(2), Some(1 << 19), Some(1 << 8)], None);
        assert_eq!(
            (f.flags.get, f.flags.pin, f.flags.longterm),
            (2, 1 << 19, 1 << 8)
        );
        assert_eq!(f.source, "BTF");
    }

    #[test]
    fn bio_page_pinned_comes_from_the_bio_layout_when_known() {
        let bio = BioOffsets {
            page_pinned_bit: Some(3),
            ..BioOffsets::FALLBACK
        };
        let f = DetectedFlags::choose("6.12.9", [None; 3], Some(&bio));
        assert_eq!(f.flags.bio_page_pinned, 1 << 3);
        let before = BioOffsets {
            page_pinned_bit: None,
            ..bio
        };
        let f = DetectedFlags::choose("6.1.0", [None; 3], Some(&before));
        assert_eq!(f.flags.bio_page_pinned, 0);
        // Without a bio layout: the version table's.
        let f = DetectedFlags::choose("6.12.9", [None; 3], None);
        assert_eq!(f.flags.bio_page_pinned, 1);
    }

    #[test]
    fn versions_pick_the_right_table() {
        assert_eq!(parse_version("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(parse_version("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(
            FollFlags::for_release("6.1.0-56-cloud-amd64"),
            FollFlags::UP_TO_6_2
        );
        assert_eq!(FollFlags::for_release("6.3.0"), FollFlags::FROM_6_3);
        let f = FollFlags::for_release("6.18.44");
        assert_eq!((f.get, f.pin, f.longterm), (2, 1 << 19, 1 << 8));
        assert_eq!(f.bio_page_pinned, 1);
    }
}
