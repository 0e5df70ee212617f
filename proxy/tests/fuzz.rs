//! The stable fuzz driver of the gateway's own target (`kt_gateway::fuzzing`): its saved
//! inputs in `fixtures/fuzz/h1_answer/`, then seeded random and mutated inputs
//! (`KT_FUZZ_CASES`, default 3000). A failing case is printed as hex: save it there.

use std::path::PathBuf;

use kt_policy::fuzzing::Rng;

#[test]
fn the_upstream_answer_reader_survives_its_corpus_and_random_inputs() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz/h1_answer");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let saved: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    assert!(!saved.is_empty(), "fixtures/fuzz/h1_answer/ holds no seed inputs");
    let cases: usize = std::env::var("KT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seeds: Vec<&[u8]> = saved.iter().map(Vec::as_slice).collect();
    let mut rng = Rng::new(0x6831_616e_7377);
    let inputs = saved.iter().cloned().chain((0..cases).map(|_| rng.input(&seeds, 4096)));
    for input in inputs {
        if std::panic::catch_unwind(|| kt_gateway::fuzzing::h1_answer(&input)).is_err() {
            let hex: String = input.iter().map(|x| format!("{x:02x}")).collect();
            panic!("h1_answer failed on this input; save it under fixtures/fuzz/h1_answer/ to keep it:\n{hex}");
        }
    }
}
