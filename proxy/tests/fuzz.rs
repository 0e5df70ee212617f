//! The stable fuzz driver of the gateway's own target (`kt_gateway::fuzzing`): its saved
//! inputs in `fixtures/fuzz/h1_answer/`, then seeded random and mutated inputs
//! (`KT_FUZZ_ITERATIONS`, default 3000; see `kt_policy::fuzzing::drive`).

use std::path::PathBuf;

#[test]
fn the_upstream_answer_reader_survives_its_corpus_and_random_inputs() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz/h1_answer");
    kt_policy::fuzzing::drive("h1_answer", kt_gateway::fuzzing::h1_answer, &dir, 0x6831_616e_7377);
}
