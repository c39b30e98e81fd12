#![no_main]
// See regate::fuzzing::config for what it checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| regate::fuzzing::config(data));
