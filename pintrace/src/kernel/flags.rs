//! `gup_flags` values per kernel version (docs/kernel.md): macros up to
//! 6.2, an enum from 6.3 on.

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
