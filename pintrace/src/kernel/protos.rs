//! Where each site's arguments are on the running kernel: the hooked
//! function's prototype in BTF (its `FUNC`, whose type is a `FUNC_PROTO`),
//! matched by parameter name to the names its row of
//! `pintrace_common::site_table!` gives. A kernel that reorders or adds
//! parameters (`vmas` went in 6.5, `bio_iov_iter_get_pages` took a third in
//! 6.18) then gets the right positions without a new table entry.
//!
//! The matching ([`fit`]) is pure, over a [`Proto`] of (name, shape)
//! parameters; reading BTF ([`proto_of`]) is a thin layer around it. A
//! function without a BTF entry (no kernel BTF, or a static function the
//! compiler did not emit) keeps the table's built-in positions; one whose
//! prototype is in BTF but no longer fits (a named parameter missing, a
//! pointer where an integer is read) is a [`Misfit`], and the plan leaves
//! its site off.

use anyhow::{anyhow, bail, Result};
use btf_rs::{Btf, Type};
use pintrace_common::{ArgLayout, ArgShape, GupRet, Site, BUILTIN_ARG_LAYOUTS, SITE_SLOTS};
use serde::Serialize;
use std::fmt;

/// Argument positions a kprobe can read: the six passed in registers.
pub const KPROBE_ARGS: u32 = 6;

/// The shape of a parameter or return type, typedefs and qualifiers seen
/// through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Pointer,
    /// An integer or an enum of this many bytes.
    Int {
        bytes: u32,
    },
    Void,
    /// Anything else, by its BTF kind ("struct", "array", ...).
    Other(&'static str),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Pointer => f.write_str("a pointer"),
            Shape::Int { bytes } => write!(f, "an integer of {bytes} bytes"),
            Shape::Void => f.write_str("void"),
            Shape::Other(kind) => write!(f, "a {kind}"),
        }
    }
}

/// One parameter of a prototype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub shape: Shape,
}

/// A function's prototype, as far as [`fit`] needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proto {
    pub symbol: String,
    pub params: Vec<Param>,
    pub ret: Shape,
}

impl fmt::Display for Proto {
    /// `pin_user_pages_fast(start, nr_pages, gup_flags, pages)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        write!(f, "{}({})", self.symbol, names.join(", "))
    }
}

/// One argument a site reads and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArgPos {
    pub name: &'static str,
    /// Counted from 0.
    pub position: u32,
}

/// Where one site's arguments are, and from where that is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SiteArgs {
    /// "BTF", or "built-in" (the site table's positions).
    pub source: &'static str,
    /// In the order of the site's row.
    pub args: Vec<ArgPos>,
    /// What a GUP call returns ("int" or "long"); `None` for other sites.
    pub ret: Option<&'static str>,
    /// The prototype in BTF (from BTF only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prototype: Option<String>,
    /// Why the built-in positions are used (built-in only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl SiteArgs {
    /// The site table's positions, and why they are used.
    pub fn builtin(site: Site, why: impl Into<String>) -> SiteArgs {
        SiteArgs {
            source: "built-in",
            args: site
                .args()
                .iter()
                .map(|a| ArgPos {
                    name: a.name,
                    position: a.builtin,
                })
                .collect(),
            ret: site.gup_ret().map(ret_name),
            prototype: None,
            why: Some(why.into()),
        }
    }

    /// The probes' global for this site.
    pub fn layout(&self) -> ArgLayout {
        let mut layout = ArgLayout::default();
        for (slot, a) in self.args.iter().enumerate() {
            layout.pos[slot] = a.position;
        }
        layout.ret_long = (self.ret == Some("long")) as u32;
        layout
    }

    /// The first argument a kprobe cannot read (beyond the six in
    /// registers), if any.
    pub fn beyond_registers(&self) -> Option<&ArgPos> {
        self.args.iter().find(|a| a.position >= KPROBE_ARGS)
    }

    /// Why a kprobe cannot watch this site, if it cannot.
    pub fn kprobe_misfit(&self, symbol: &str) -> Option<String> {
        let a = self.beyond_registers()?;
        let proto = self.prototype.as_deref().unwrap_or(symbol);
        Some(format!(
            "{proto}: `{}` is argument {}, beyond the {KPROBE_ARGS} a kprobe reads from registers",
            a.name,
            a.position + 1
        ))
    }

    /// `start=1 nr_pages=2 gup_flags=3 pages=4, returns long (BTF)`.
    pub fn summary(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| format!("{}={}", a.name, a.position))
            .collect();
        let ret = self
            .ret
            .map(|r| format!(", returns {r}"))
            .unwrap_or_default();
        let why = self
            .why
            .as_ref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        format!("{}{ret} ({}{why})", args.join(" "), self.source)
    }
}

fn ret_name(r: GupRet) -> &'static str {
    match r {
        GupRet::Int => "int",
        GupRet::Long => "long",
    }
}

/// A prototype in BTF that the site's row no longer fits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Misfit {
    /// As BTF has it: `pin_user_pages_fast(start, nr_pages, gup_flags, pages)`.
    pub prototype: String,
    pub why: String,
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.prototype, self.why)
    }
}

/// Matches `site`'s row to a prototype by parameter name: every argument
/// the probes read must be there, with the shape the row gives, and a GUP
/// call must return an `int` or a `long`.
pub fn fit(site: Site, proto: &Proto) -> Result<SiteArgs, Misfit> {
    let misfit = |why: String| Misfit {
        prototype: proto.to_string(),
        why,
    };
    let mut args = Vec::new();
    for want in site.args() {
        let Some(i) = proto.params.iter().position(|p| p.name == want.name) else {
            return Err(misfit(format!("no parameter `{}`", want.name)));
        };
        let shape = proto.params[i].shape;
        let fits = match want.shape {
            ArgShape::Ptr => shape == Shape::Pointer,
            ArgShape::Int => matches!(shape, Shape::Int { .. }),
        };
        if !fits {
            let expected = match want.shape {
                ArgShape::Ptr => "a pointer",
                ArgShape::Int => "an integer",
            };
            return Err(misfit(format!(
                "`{}` (argument {}) is {shape}, not {expected}",
                want.name,
                i + 1
            )));
        }
        args.push(ArgPos {
            name: want.name,
            position: i as u32,
        });
    }
    let ret = match site.gup_ret() {
        None => None,
        Some(_) => match proto.ret {
            Shape::Int { bytes: 4 } => Some("int"),
            Shape::Int { bytes: 8 } => Some("long"),
            other => {
                return Err(misfit(format!(
                    "returns {other}, not an int or a long (pages grabbed or -errno)"
                )))
            }
        },
    };
    Ok(SiteArgs {
        source: "BTF",
        args,
        ret,
        prototype: Some(proto.to_string()),
        why: None,
    })
}

/// Every site's arguments on one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protos {
    sites: Vec<(Site, Result<SiteArgs, Misfit>)>,
}

impl Protos {
    /// The site table's positions for every site (a kernel without BTF).
    pub fn builtin(why: &str) -> Protos {
        Protos {
            sites: Site::ALL
                .into_iter()
                .map(|s| (s, Ok(SiteArgs::builtin(s, why))))
                .collect(),
        }
    }

    /// From the prototypes of `btf`, by [`resolve`].
    pub fn from_btf(btf: &Btf) -> Protos {
        Protos::resolve(|symbol| proto_of(btf, symbol))
    }

    /// Every site from `lookup(symbol)`: a prototype, none (the function
    /// has no BTF entry: built-in positions) or an unreadable one (a
    /// misfit: the site stays off rather than read a guess).
    pub fn resolve(lookup: impl Fn(&str) -> Result<Option<Proto>>) -> Protos {
        let sites = Site::ALL
            .into_iter()
            .map(|site| {
                let symbol = site.symbol();
                let args = match lookup(symbol) {
                    Ok(Some(proto)) => fit(site, &proto),
                    Ok(None) => Ok(SiteArgs::builtin(
                        site,
                        format!("{symbol} has no BTF entry"),
                    )),
                    Err(e) => Err(Misfit {
                        prototype: symbol.to_owned(),
                        why: format!("its BTF prototype cannot be read: {e:#}"),
                    }),
                };
                (site, args)
            })
            .collect();
        Protos { sites }
    }

    /// The arguments of `site`, or why its prototype no longer fits.
    pub fn get(&self, site: Site) -> Result<&SiteArgs, &Misfit> {
        self.sites
            .iter()
            .find(|(s, _)| *s == site)
            .map(|(_, r)| r.as_ref())
            .expect("every site is resolved")
    }

    /// Sets the arguments of `site`: a kernel of a test's making.
    #[cfg(test)]
    pub(crate) fn set(&mut self, site: Site, args: Result<SiteArgs, Misfit>) {
        if let Some(slot) = self.sites.iter_mut().find(|(s, _)| *s == site) {
            slot.1 = args;
        }
    }

    /// The probes' `ARG_LAYOUTS` global: each site's positions; a misfit
    /// keeps the built-in ones (its site is not attached).
    pub fn globals(&self) -> [ArgLayout; SITE_SLOTS] {
        let mut out = BUILTIN_ARG_LAYOUTS;
        for (site, args) in &self.sites {
            if let Ok(a) = args {
                out[*site as usize] = a.layout();
            }
        }
        out
    }
}

/// The prototype of `symbol` in `btf`: `None` when BTF has no `FUNC` of
/// that name. Static functions of the same name in several files would
/// have several; the first is taken.
pub fn proto_of(btf: &Btf, symbol: &str) -> Result<Option<Proto>> {
    let Ok(types) = btf.resolve_types_by_name(symbol) else {
        return Ok(None);
    };
    let Some(func) = types.into_iter().find_map(|t| match t {
        Type::Func(f) => Some(f),
        _ => None,
    }) else {
        return Ok(None);
    };
    let proto = match btf
        .resolve_chained_type(&func)
        .map_err(|e| anyhow!("the type of FUNC {symbol}: {e}"))?
    {
        Type::FuncProto(p) => p,
        other => bail!("FUNC {symbol} has a {} for its prototype", other.name()),
    };
    let mut params = Vec::new();
    for p in &proto.parameters {
        if p.is_variadic() {
            params.push(Param {
                name: "...".into(),
                shape: Shape::Other("variadic"),
            });
            continue;
        }
        let name = btf
            .resolve_name(p)
            .map_err(|e| anyhow!("a parameter name of {symbol}: {e}"))?;
        let t = btf
            .resolve_chained_type(p)
            .map_err(|e| anyhow!("the type of {symbol}'s `{name}`: {e}"))?;
        params.push(Param {
            name,
            shape: shape_of(btf, t),
        });
    }
    let ret = match proto.return_type_id() {
        0 => Shape::Void,
        id => shape_of(
            btf,
            btf.resolve_type_by_id(id)
                .map_err(|e| anyhow!("the return type of {symbol}: {e}"))?,
        ),
    };
    Ok(Some(Proto {
        symbol: symbol.to_owned(),
        params,
        ret,
    }))
}

/// A type's shape, through typedefs and qualifiers.
fn shape_of(btf: &Btf, mut t: Type) -> Shape {
    for _ in 0..16 {
        t = match t {
            Type::Ptr(_) => return Shape::Pointer,
            Type::Int(i) => {
                return Shape::Int {
                    bytes: i.size() as u32,
                }
            }
            Type::Enum(e) => {
                return Shape::Int {
                    bytes: e.size() as u32,
                }
            }
            Type::Enum64(_) => return Shape::Int { bytes: 8 },
            Type::Void => return Shape::Void,
            Type::Typedef(ref x) => match btf.resolve_chained_type(x) {
                Ok(next) => next,
                Err(_) => return Shape::Other("typedef"),
            },
            Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => {
                match btf.resolve_chained_type(x) {
                    Ok(next) => next,
                    Err(_) => return Shape::Other("qualifier"),
                }
            }
            Type::TypeTag(ref x) => match btf.resolve_chained_type(x) {
                Ok(next) => next,
                Err(_) => return Shape::Other("type tag"),
            },
            other => return Shape::Other(other.name()),
        };
    }
    Shape::Other("typedef chain")
}

#[cfg(test)]
mod tests;
