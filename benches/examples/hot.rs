//! Evaluates the realistic chain on a 64 KiB body in a loop, for profilers.
use kt_benches::{chat_body, compile, realistic_config};
use kt_policy::{EvalOptions, Headers};

fn main() {
    let policy = compile(&realistic_config(1000));
    let mut body = chat_body(64 * 1024, 42);
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    for _ in 0..n {
        std::hint::black_box(policy.evaluate_request(&mut body, &Headers::new(), EvalOptions::default()));
    }
}
