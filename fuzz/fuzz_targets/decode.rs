//! One ring-buffer record of arbitrary bytes: decoded (stream/events.rs) and fed
//! to a fresh pipeline. An error is fine; a panic is a bug.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pintrace::fuzzing::one_record(data));
