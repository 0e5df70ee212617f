#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kt_policy::fuzzing::request_json(data));
