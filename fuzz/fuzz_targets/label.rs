//! Any bytes as a label PNG (first byte: format and class count): an error or success, never a panic, a hang or a huge allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = segnet_bayes::fuzzing::label(data);
});
