//! A stream of mostly well-formed records built from the input (every kind,
//! fields of any value, time out of order) through the ledger, with ticks,
//! refcount audits and the end of the run.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pintrace::{flags::FollFlags, fuzzing};

fuzz_target!(|data: &[u8]| {
    let flags = if data.first().is_some_and(|b| b & 1 == 1) {
        FollFlags::UP_TO_6_2
    } else {
        FollFlags::FROM_6_3
    };
    fuzzing::drive(&fuzzing::stream(data.get(1..).unwrap_or_default(), flags), flags);
});
