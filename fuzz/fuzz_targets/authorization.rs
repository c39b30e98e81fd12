#![no_main]
// See regate::fuzzing::authorization for what it checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| regate::fuzzing::authorization(data));
