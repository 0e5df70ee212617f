//! Prints per-policy evaluation time for the benchmark workloads (a quick look, not a
//! measurement: use `cargo bench` for numbers).
use kt_benches::{chat_body, compile, realistic_config};
use kt_policy::{EvalOptions, Headers};

fn main() {
    let variants = [
        ("default", String::new()),
        ("no-sim", "  prompt-injection: {embedding_threshold: 1.0}\n".to_owned()),
        (
            "no-sim-no-b64",
            "  prompt-injection: {embedding_threshold: 1.0, encoding: {decode_base64: false}}\n".to_owned(),
        ),
    ];
    for (name, extra) in variants {
        let yaml = realistic_config(1000).replace("policy:\n", &format!("policy:\n{extra}"));
        let policy = compile(&yaml);
        for kib in [1usize, 64] {
            let mut body = chat_body(kib * 1024, 42);
            let mut totals = std::collections::BTreeMap::new();
            let n = if kib == 1 { 2000 } else { 50 };
            for _ in 0..n {
                let d = policy.evaluate_request(&mut body, &Headers::new(), EvalOptions::default());
                for r in d.policy_results {
                    *totals.entry(r.kind).or_insert(0.0) += r.duration_us / n as f64;
                }
            }
            let v: Vec<_> = totals.iter().map(|(k, t)| format!("{k}={t:.1}us")).collect();
            println!("{name:<14}{kib:>3}KiB {}", v.join(" "));
        }
    }
}
