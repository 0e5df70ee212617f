#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kt_policy::fuzzing::dfa_differential(data));
