//! A recording file of arbitrary bytes (trace/record.rs): read, and what it yields
//! replayed through a pipeline on its recorded clock. Half the inputs are
//! framed first (magic, lengths and checksums made right) so that the
//! header's and the entries' contents reach their parsers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pintrace::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fuzzing::frame_as_recording(&mut bytes);
    }
    fuzzing::recording(&bytes);
});
