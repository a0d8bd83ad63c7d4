//! Records in, findings out: decode each ring-buffer record and apply it to
//! the ledger. Pure, so the same pipeline runs over a live ring buffer, a
//! replayed capture and a unit test's synthetic stream.

use crate::{
    events::decode,
    ledger::{Finding, Ledger},
};

pub struct Pipeline {
    pub ledger: Ledger,
    /// Records that did not decode (counted, logged, never fatal).
    pub decode_errors: u64,
}

impl Pipeline {
    pub fn new(ledger: Ledger) -> Pipeline {
        Pipeline {
            ledger,
            decode_errors: 0,
        }
    }

    /// Applies one raw record; findings it causes are appended to `found`.
    pub fn feed(&mut self, record: &[u8], found: &mut Vec<Finding>) {
        match decode(record) {
            Ok(ev) => self.ledger.apply(&ev, found),
            Err(e) => {
                self.decode_errors += 1;
                log::warn!("undecodable record: {e}");
            }
        }
    }
}
