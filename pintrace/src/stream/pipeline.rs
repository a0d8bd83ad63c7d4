//! Records in, findings out: decode each ring-buffer record, apply it to the
//! ledger and keep the live [`Model`] up to date. Pure, so the same pipeline
//! runs over a live ring buffer, a replayed capture and a unit test's
//! synthetic stream.

use crate::{
    ledger::{Finding, Ledger},
    model::Model,
    stream::events::{decode_each, Event},
};

pub struct Pipeline {
    pub ledger: Ledger,
    /// Records that did not decode (counted, logged, never fatal).
    pub decode_errors: u64,
    /// Rates, lifetimes, holders and findings for the views.
    pub model: Model,
    /// When set, every decoded event is also kept here for the caller
    /// (`run --events`), who drains it.
    pub echo: Option<Vec<Event>>,
}

impl Pipeline {
    pub fn new(mut ledger: Ledger) -> Pipeline {
        ledger.note_lifetimes();
        Pipeline {
            model: Model::new(ledger.tally.flags),
            ledger,
            decode_errors: 0,
            echo: None,
        }
    }

    /// Applies one raw record; findings it causes are appended to `found`.
    pub fn feed(&mut self, record: &[u8], found: &mut Vec<Finding>) {
        // Each event by reference: moving it out would copy the whole enum
        // (a folio batch is 300 bytes) for every record.
        let (model, ledger, echo) = (&mut self.model, &mut self.ledger, &mut self.echo);
        let decoded = decode_each(record, |ev| {
            let before = found.len();
            model.observe(ev);
            ledger.apply(ev, found);
            model.take_lifetimes(ledger);
            model.note_findings(&found[before..]);
            if let Some(echo) = echo.as_mut() {
                echo.push(*ev);
            }
        });
        if let Err(e) = decoded {
            self.decode_errors += 1;
            log::warn!("undecodable record: {e}");
        }
    }

    /// Applies one event that is not a ring record (the kernel books'
    /// counts), as [`Pipeline::feed`] applies a decoded one.
    pub fn feed_event(&mut self, ev: &Event, found: &mut Vec<Finding>) {
        let before = found.len();
        self.model.observe(ev);
        self.ledger.apply(ev, found);
        self.model.take_lifetimes(&mut self.ledger);
        self.model.note_findings(&found[before..]);
    }

    /// Time passes (kernel clock): ages pins in the ledger, samples the model.
    pub fn tick(&mut self, now_ns: u64, found: &mut Vec<Finding>) {
        let before = found.len();
        self.ledger.tick(now_ns, found);
        self.model.note_findings(&found[before..]);
        self.model.tick(now_ns, &self.ledger);
    }

    /// Judges a refcount audit read at `read_ns` (after every record up to
    /// the read was fed): pins whose references left without an unpin.
    pub fn audit(
        &mut self,
        slots: &[pintrace_common::AuditSlot],
        read_ns: u64,
        found: &mut Vec<Finding>,
    ) {
        let before = found.len();
        for s in slots {
            self.ledger
                .audit(s.folio, s.refcount, s.large != 0, read_ns, found);
        }
        self.model.note_findings(&found[before..]);
    }

    /// The end of the run: every pin still held is reported.
    pub fn finish(&mut self, now_ns: u64, found: &mut Vec<Finding>) {
        let before = found.len();
        self.model.tick(now_ns, &self.ledger);
        self.ledger.finish(now_ns, found);
        self.model.note_findings(&found[before..]);
    }
}
