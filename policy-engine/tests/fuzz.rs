//! The stable fuzz driver: every target of `kt_policy::fuzzing` on its saved inputs
//! (`fixtures/fuzz/<target>/`, regressions included), then on seeded random and mutated
//! inputs (`KT_FUZZ_ITERATIONS`, default 3000 per target; see `fuzzing::drive`).

use std::path::PathBuf;

use kt_policy::fuzzing::{TARGETS, drive};

#[test]
fn every_fuzz_target_survives_its_corpus_and_random_inputs() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz");
    for (name, target) in TARGETS {
        drive(name, *target, &fixtures.join(name), 0x6b74_6675_7a7a);
    }
}
