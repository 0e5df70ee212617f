//! Prints where evaluation time goes for the benchmark workloads: per policy for the
//! realistic chain and some variants, and the whole chain for single-policy chains. A quick
//! look while optimizing, not a measurement: `cargo bench -p kt-benches` gives the numbers.
use std::collections::BTreeMap;
use std::time::Instant;

use kt_benches::{chat_body, compile, realistic_config};
use kt_policy::{CompiledPolicy, EvalOptions, Headers};

const CHAIN: &str = "chain: [prompt-injection, pii-detector, dlp-filter, audit-logger]";

fn per_policy(name: &str, policy: &CompiledPolicy) {
    for kib in [1usize, 64] {
        let mut body = chat_body(kib * 1024, 42);
        let n = if kib == 1 { 2000 } else { 50 };
        let mut totals = BTreeMap::new();
        for _ in 0..n {
            let d = policy.evaluate_request(&mut body, &Headers::new(), EvalOptions::default());
            for r in d.policy_results {
                *totals.entry(r.kind).or_insert(0.0) += r.duration_us / f64::from(n);
            }
        }
        let v: Vec<_> = totals.iter().map(|(k, t)| format!("{k}={t:.1}us")).collect();
        println!("{name:<16}{kib:>3}KiB {}", v.join(" "));
    }
}

fn main() {
    let variants = [
        ("default", ""),
        ("no-similarity", "  prompt-injection: {embedding_threshold: 1.0}\n"),
        (
            "no-sim-no-b64",
            "  prompt-injection: {embedding_threshold: 1.0, encoding: {decode_base64: false}}\n",
        ),
    ];
    for (name, extra) in variants {
        let yaml = realistic_config(1000).replace("policy:\n", &format!("policy:\n{extra}"));
        per_policy(name, &compile(&yaml));
    }
    for (name, chain) in [
        ("dlp-only", "chain: [dlp-filter]"),
        ("pi-only", "chain: [prompt-injection]"),
        ("pii-only", "chain: [pii-detector]"),
    ] {
        let policy = compile(&realistic_config(1000).replace(CHAIN, chain));
        let mut body = chat_body(64 * 1024, 42);
        let t = Instant::now();
        for _ in 0..50 {
            policy.evaluate_request(&mut body, &Headers::new(), EvalOptions::default());
        }
        println!(
            "{name:<16} 64KiB whole chain {:.1}us",
            t.elapsed().as_secs_f64() * 1e6 / 50.0
        );
    }
}
