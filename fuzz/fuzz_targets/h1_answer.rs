#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kt_gateway::fuzzing::h1_answer(data));
