#![no_main]
// See regate::fuzzing::route for what it checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| regate::fuzzing::route(data));
