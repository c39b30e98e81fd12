#![no_main]
// See regate::fuzzing::token for what it checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| regate::fuzzing::token(data));
