//! The stable fuzz driver: every target of `kt_policy::fuzzing` on its saved inputs
//! (`fixtures/fuzz/<target>/`, regressions included), then on seeded random and mutated
//! inputs for a bounded number of cases (`KT_FUZZ_CASES`, default 3000 per target). A
//! failing case is printed as hex: save it under `fixtures/fuzz/<target>/` to keep it.

use std::path::PathBuf;

use kt_policy::fuzzing::{Rng, TARGETS};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/fuzz")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_random_inputs() {
    let cases: usize = std::env::var("KT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("KT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b74_6675_7a7a);
    for (name, target) in TARGETS {
        let saved = corpus(name);
        assert!(!saved.is_empty(), "fixtures/fuzz/{name}/ holds no seed inputs");
        for input in &saved {
            run(name, *target, input);
        }
        let seeds: Vec<&[u8]> = saved.iter().map(Vec::as_slice).collect();
        let mut rng = Rng::new(seed ^ name.len() as u64);
        for _ in 0..cases {
            let input = rng.input(&seeds, 4096);
            run(name, *target, &input);
        }
    }
}

fn run(name: &str, target: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| target(input)).is_err() {
        panic!(
            "fuzz target {name} failed on this input; save it as fixtures/fuzz/{name}/<name> to keep it:\n{}",
            hex(input)
        );
    }
}
