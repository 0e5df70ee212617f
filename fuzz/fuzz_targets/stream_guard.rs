#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kt_policy::fuzzing::stream_guard(data));
