//! Kernel structure layout: the field offsets the probes read, from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`), and the `bi_flags` bit
//! numbers the ledger interprets. Without BTF the page and folio offsets fall
//! back to the values every 64-bit kernel from 5.10 to 6.18 uses, and the bio
//! probes are left off (`struct bio` changes between releases).

use anyhow::{anyhow, bail, Context as _, Result};
use btf_rs::{Btf, Type};
use fallible_iterator::FallibleIterator as _;
use serde::Serialize;
use std::path::Path;

/// Where the kernel's own BTF lives.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Offsets (bytes) of the fields the probes read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StructOffsets {
    /// `struct page::compound_head` (bit 0 set on tail pages).
    pub page_compound_head: u32,
    /// `struct folio::_refcount`.
    pub folio_refcount: u32,
    /// `sizeof(struct page)`.
    pub page_sizeof: u32,
    /// `struct bio` and `struct block_device`: known from BTF only.
    pub bio: Option<BioOffsets>,
    /// "BTF" or "built-in defaults".
    pub source: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BioOffsets {
    pub bdev: u32,
    pub opf: u32,
    pub flags: u32,
    pub status: u32,
    pub sector: u32,
    pub size: u32,
    pub bdev_dev: u32,
    /// `struct request::biotail`: the bio `bio_map_user_iov` appended.
    pub req_biotail: u32,
    /// Bit number of `BIO_PAGE_PINNED` in `bi_flags` (6.5 on): the bio's
    /// pages are pinned and its release unpins them. `None` before.
    pub page_pinned_bit: Option<u32>,
}

impl BioOffsets {
    /// The probes' defaults for their bio globals (never read: without BTF
    /// the bio probes stay off), also a sample layout for tests.
    pub const FALLBACK: BioOffsets = BioOffsets {
        bdev: 8,
        opf: 16,
        flags: 20,
        status: 24,
        sector: 32,
        size: 40,
        bdev_dev: 36,
        req_biotail: 8,
        page_pinned_bit: None,
    };
}

impl Default for StructOffsets {
    fn default() -> Self {
        StructOffsets {
            page_compound_head: 8,
            folio_refcount: 52,
            page_sizeof: 64,
            bio: None,
            source: "built-in defaults",
        }
    }
}

impl StructOffsets {
    pub fn from_btf_file(path: &Path) -> Result<StructOffsets> {
        let btf = Btf::from_file(path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
        StructOffsets::from_btf(&btf)
    }

    pub fn from_btf(btf: &Btf) -> Result<StructOffsets> {
        let page = find_struct(btf, "page")?;
        let bio = (|| -> Result<BioOffsets> {
            Ok(BioOffsets {
                bdev: offset_of(btf, "bio", &["bi_bdev"])?,
                opf: offset_of(btf, "bio", &["bi_opf"])?,
                flags: offset_of(btf, "bio", &["bi_flags"])?,
                status: offset_of(btf, "bio", &["bi_status"])?,
                sector: offset_of(btf, "bio", &["bi_iter", "bi_sector"])?,
                size: offset_of(btf, "bio", &["bi_iter", "bi_size"])?,
                bdev_dev: offset_of(btf, "block_device", &["bd_dev"])?,
                req_biotail: offset_of(btf, "request", &["biotail"])?,
                page_pinned_bit: enumerator(btf, "BIO_PAGE_PINNED"),
            })
        })();
        let bio = match bio {
            Ok(b) => Some(b),
            Err(e) => {
                log::info!("no bio layout in BTF: {e:#}");
                None
            }
        };
        Ok(StructOffsets {
            page_compound_head: offset_of(btf, "page", &["compound_head"])?,
            folio_refcount: offset_of(btf, "folio", &["_refcount"])?,
            page_sizeof: page.size() as u32,
            bio,
            source: "BTF",
        })
    }
}

fn find_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|e| anyhow!("struct {name}: {e}"))?;
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no struct {name} in BTF"))
}

/// Follows typedefs and qualifiers to a struct or union.
fn aggregate(btf: &Btf, mut t: Type) -> Option<btf_rs::Struct> {
    for _ in 0..16 {
        t = match t {
            Type::Struct(s) | Type::Union(s) => return Some(s),
            Type::Typedef(ref x) => btf.resolve_chained_type(x).ok()?,
            Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => {
                btf.resolve_chained_type(x).ok()?
            }
            Type::TypeTag(ref x) => btf.resolve_chained_type(x).ok()?,
            _ => return None,
        };
    }
    None
}

/// Byte offset of `path` (a field, then fields of that field) in `struct
/// name`, looking through anonymous structs and unions.
pub fn offset_of(btf: &Btf, name: &str, path: &[&str]) -> Result<u32> {
    let mut s = find_struct(btf, name)?;
    let mut bits = 0u32;
    for (i, field) in path.iter().enumerate() {
        let (off, member) = member_bits(btf, &s, field, 0)
            .with_context(|| format!("{name}.{}", path[..=i].join(".")))?;
        bits += off;
        if i + 1 < path.len() {
            let t = btf
                .resolve_chained_type(&member)
                .map_err(|e| anyhow!("type of {field}: {e}"))?;
            s = aggregate(btf, t).ok_or_else(|| anyhow!("{field} is not a struct"))?;
        }
    }
    if !bits.is_multiple_of(8) {
        bail!("{name}.{} is a bit field", path.join("."));
    }
    Ok(bits / 8)
}

/// The bit offset of `field` in `s` (recursing into anonymous members).
fn member_bits(
    btf: &Btf,
    s: &btf_rs::Struct,
    field: &str,
    depth: u32,
) -> Result<(u32, btf_rs::Member)> {
    if depth > 8 {
        bail!("nested too deep");
    }
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == field {
            return Ok((m.bit_offset(), m.clone()));
        }
        if name.is_empty() {
            let inner = btf
                .resolve_chained_type(m)
                .ok()
                .and_then(|t| aggregate(btf, t));
            if let Some(inner) = inner {
                if let Ok((off, found)) = member_bits(btf, &inner, field, depth + 1) {
                    return Ok((m.bit_offset() + off, found));
                }
            }
        }
    }
    bail!("no field {field}")
}

/// The value of an enumerator, searching every enum (kernel flag enums are
/// often anonymous).
pub fn enumerator(btf: &Btf, name: &str) -> Option<u32> {
    enumerators(btf, &[name])[0]
}

/// The values of several enumerators, in one walk over the types (a
/// kernel's BTF has some hundred thousand).
pub fn enumerators(btf: &Btf, names: &[&str]) -> Vec<Option<u32>> {
    let mut found = vec![None; names.len()];
    let mut types = btf.type_iter();
    while let Ok(Some(t)) = types.next() {
        if let Type::Enum(e) = t {
            for m in &e.members {
                let Ok(n) = btf.resolve_name(m) else { continue };
                if let Some(i) = names.iter().position(|&want| want == n) {
                    found[i].get_or_insert(m.val());
                }
            }
            if found.iter().all(Option::is_some) {
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine's own kernel BTF, when it has one: offsets must come out
    /// as the kernel's headers define them on 64-bit (flags first, then the
    /// compound_head word; a 64-byte struct page; bio's fixed head).
    #[test]
    fn reads_this_kernels_layout() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let o = StructOffsets::from_btf_file(path).unwrap();
        assert_eq!(o.source, "BTF");
        assert_eq!(o.page_compound_head, 8);
        assert_eq!(o.page_sizeof, 64);
        assert_eq!(o.folio_refcount, 52);
        let bio = o.bio.expect("struct bio in BTF");
        // struct bio { struct bio *bi_next; struct block_device *bi_bdev; blk_opf_t bi_opf; ...
        assert_eq!(bio.bdev, 8);
        assert_eq!(bio.opf, 16);
        assert_eq!(bio.flags, 20);
        assert_eq!(
            bio.size,
            bio.sector + 8,
            "bvec_iter: bi_sector then bi_size"
        );
        let rq = find_struct(&Btf::from_file(path).unwrap(), "request").unwrap();
        assert!(rq.members.len() > 10);
        assert_eq!(
            bio.req_biotail,
            offset_of(&Btf::from_file(path).unwrap(), "request", &["bio"]).unwrap() + 8,
            "struct request: bio then biotail"
        );
        assert!(
            bio.page_pinned_bit.is_some(),
            "BIO_PAGE_PINNED exists from 6.5"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = StructOffsets::from_btf_file(Path::new("/nonexistent/btf")).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/btf"));
    }
}
