#![no_main]
// See regate::fuzzing::scope for what it checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| regate::fuzzing::scope(data));
