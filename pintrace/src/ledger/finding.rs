//! Findings: what a leak or a mismatched release is, and how each is told.

use super::{bio::BioBooks, BioInfo, Holder, GUP_PIN_COUNTING_BIAS};
use crate::stream::events::{Comm, Release};
use rustc_hash::FxHashMap;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A pin not released at the end of the run.
    LeakAtEnd,
    /// A long-term pin still held at the end of the run (owner alive).
    LongtermHeldAtEnd,
    /// A pin older than `--leak-age`.
    LeakOld,
    /// A pin still held after its owner exited.
    LeakOwnerExited,
    /// Unpin of a folio that held only FOLL_GET references.
    UnpinOfGetPage,
    /// More unpins than pins: a double unpin.
    DoubleUnpin,
    /// Unpin of a folio with no pin to release, none seen during the run.
    UnpinWithoutPin,
    /// References still held a grace period after their bio completed.
    LeakAfterBio,
    /// A pin whose references left the folio without an unpin: released
    /// with put_page (a FOLL_GET release of a FOLL_PIN page). Seen by the
    /// refcount audit.
    PinReleasedAsGet,
}

impl FindingKind {
    pub fn is_mismatch(self) -> bool {
        matches!(
            self,
            FindingKind::UnpinOfGetPage
                | FindingKind::DoubleUnpin
                | FindingKind::UnpinWithoutPin
                | FindingKind::PinReleasedAsGet
        )
    }

    /// Whether it fails a check (long-term pins held by a live owner do not).
    pub fn is_failure(self) -> bool {
        !matches!(self, FindingKind::LongtermHeldAtEnd)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub folio: u64,
    pub refs: u64,
    /// Who took the references (for leaks) or released them (for mismatches).
    pub tgid: u32,
    pub comm: Comm,
    pub stack_id: i32,
    /// For mismatches: the holder the ledger knew of, if any.
    pub holder: Option<Holder>,
    /// The bio the references were taken for, when the probes saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bio: Option<BioInfo>,
    pub at_ns: u64,
    pub detail: String,
}

/// Why a mismatch is certain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Evidence {
    /// The refcount at the release was below `refs` pins' worth.
    Refcount,
    /// The books hold every pin of the folio (it was seen holding none
    /// during the run), and none is left to release.
    Books,
}

pub(super) fn mismatch(
    kind: FindingKind,
    r: &Release,
    refs: u64,
    holder: Option<Holder>,
    evidence: Evidence,
) -> Finding {
    let what = match kind {
        FindingKind::UnpinOfGetPage => "from a folio held with FOLL_GET: refcount underflow",
        FindingKind::DoubleUnpin => "after all pins seen were released: double unpin",
        _ => "from a folio holding no pin",
    };
    let why = match evidence {
        Evidence::Refcount => format!(
            "refcount {} < {refs} x {GUP_PIN_COUNTING_BIAS}",
            r.refcount
        ),
        Evidence::Books => format!(
            "refcount {}, but the folio held no pin when acquired during the run and every pin since was seen",
            r.refcount
        ),
    };
    let detail = format!("unpin of {refs} ref(s) {what} ({why})");
    Finding {
        kind,
        folio: r.folio,
        refs,
        tgid: r.tgid,
        comm: r.comm,
        stack_id: r.stack_id,
        holder,
        bio: None,
        at_ns: r.ts_ns,
        detail,
    }
}

pub(super) fn leak(
    kind: FindingKind,
    folio: u64,
    h: &Holder,
    now_ns: u64,
    bios: &FxHashMap<u64, BioBooks>,
) -> Finding {
    let age_ms = now_ns.saturating_sub(h.acquired_ns) / 1_000_000;
    let what = match kind {
        FindingKind::LeakOwnerExited => "held after its owner exited",
        FindingKind::LeakOld => "older than --leak-age",
        FindingKind::LongtermHeldAtEnd => "long-term pin still held at the end of the run",
        _ => "not released by the end of the run",
    };
    Finding {
        kind,
        folio,
        refs: h.refs,
        tgid: h.tgid,
        comm: h.comm,
        stack_id: h.stack_id,
        holder: Some(*h),
        bio: bios.get(&h.bio).map(|b| b.info),
        at_ns: now_ns,
        detail: format!(
            "{} {} ref(s) {what} (age {age_ms} ms)",
            h.kind.label(),
            h.refs
        ),
    }
}
