//! Any bytes as a YAML config: an error or success, never a panic, a hang or a huge allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = segnet_bayes::fuzzing::config(data);
});
