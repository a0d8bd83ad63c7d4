//! The refcount audit: which folios a reading of refcounts should cover
//! (pins of exited owners, pins of a finished scenario, every pin at the
//! end), and what a reading proves: pins whose 1024 references are gone
//! were released with put_page.

use super::{take, BioInfo, Finding, FindingKind, Holder, Kind, Ledger, GUP_PIN_COUNTING_BIAS};
use smallvec::SmallVec;

impl Ledger {
    /// Folios with pins the next [`Ledger::tick`] at `now_ns` would report
    /// as leaks of an exited owner: a caller that can read refcounts audits
    /// them first ([`Ledger::audit`]), so that pins released with put_page
    /// are reported as such, with both stacks' worth of evidence, not as
    /// leaks.
    pub fn exit_leak_candidates(&self, now_ns: u64) -> Vec<u64> {
        let grace = self.config.exit_grace_ns;
        let gone = |tgid: u32| {
            self.exited
                .get(&tgid)
                .is_some_and(|&t| now_ns.saturating_sub(t) >= grace)
        };
        self.folios_with_pins(|h| !h.reported && gone(h.tgid))
    }

    /// Folios where `tgid` holds pins not yet reported: what `check` audits
    /// when a scenario's process is over, before [`Ledger::report_leaks_of`].
    pub fn pinned_folios_of(&self, tgid: u32) -> Vec<u64> {
        self.folios_with_pins(|h| !h.reported && h.tgid == tgid)
    }

    /// Folios with a pin (not a FOLL_GET reference) in their books that
    /// `which` picks, sorted.
    fn folios_with_pins(&self, mut which: impl FnMut(&Holder) -> bool) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .holders_by_folio()
            .filter(|(_, h)| h.kind != Kind::Get && which(h))
            .map(|(f, _)| f)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Small or large folios whose books hold pins taken before `before_ns`:
    /// what a refcount audit at that time should read.
    pub fn audit_candidates(&self, before_ns: u64) -> Vec<u64> {
        self.folios_with_pins(|h| h.acquired_ns < before_ns)
    }

    /// Judges one folio of a refcount audit read at `read_ns`, once every
    /// event up to the read has been applied. A small folio must hold 1024
    /// references per pin the books give it; pins whose references are gone
    /// were released with put_page. Pins taken after the read are not
    /// judged; pins released since only lower the books. Large folios keep
    /// their pins in a separate count the audit does not read: skipped.
    pub fn audit(
        &mut self,
        folio: u64,
        refcount: i32,
        large: bool,
        read_ns: u64,
        findings: &mut Vec<Finding>,
    ) {
        if large {
            return;
        }
        let Some(books) = self.folios.get_mut(folio) else {
            self.audit_kernel(folio, refcount, read_ns, findings);
            return;
        };
        let pins: u64 = books
            .holders
            .iter()
            .filter(|h| h.kind != Kind::Get && h.acquired_ns < read_ns)
            .map(|h| h.refs)
            .sum();
        let capacity = (refcount.max(0) as i64 / GUP_PIN_COUNTING_BIAS) as u64;
        if pins <= capacity {
            return;
        }
        let missing = pins - capacity;
        let holder = books
            .holders
            .iter()
            .filter(|h| h.kind != Kind::Get && h.acquired_ns < read_ns)
            .min_by_key(|h| h.acquired_ns)
            .copied();
        let mut from_bios = SmallVec::new();
        take(
            &mut books.holders,
            missing,
            |k| k != Kind::Get,
            read_ns,
            None,
            None,
            |h| (h.bio != 0) as u8,
            &mut from_bios,
        );
        if books.holders.is_empty() {
            self.folios.discard(folio);
        }
        self.settle_bios(&from_bios);
        if let Some(h) = holder {
            let bio = self.bios.get(&h.bio).map(|b| b.info);
            findings.push(released_as_get(
                folio, missing, pins, refcount, capacity, h, bio, read_ns,
            ));
        }
    }
}

/// The refcount audit's finding: `pins` in the books, room for `capacity`
/// in the refcount, `missing` released with put_page.
#[allow(clippy::too_many_arguments)]
pub(super) fn released_as_get(
    folio: u64,
    missing: u64,
    pins: u64,
    refcount: i32,
    capacity: u64,
    h: Holder,
    bio: Option<BioInfo>,
    read_ns: u64,
) -> Finding {
    Finding {
        kind: FindingKind::PinReleasedAsGet,
        folio,
        refs: missing,
        tgid: h.tgid,
        comm: h.comm,
        stack_id: h.stack_id,
        holder: Some(h),
        bio,
        at_ns: read_ns,
        detail: format!(
            "{pins} pin(s) in the books but refcount {refcount} holds at most {capacity} \
             pin(s) of {GUP_PIN_COUNTING_BIAS}: {missing} released with put_page \
             (a FOLL_GET release of a FOLL_PIN page); the stack is the pin's"
        ),
    }
}
