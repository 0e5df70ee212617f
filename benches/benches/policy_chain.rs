//! Policy engine benchmarks: the realistic input chain on chat bodies of 1, 16, 64 and
//! 256 KiB (evaluation alone, and parse + evaluation), and compiling a configuration with
//! 10,000 blocked terms, and prompt-injection's classifier layer alone. Run with
//! `cargo bench -p kt-benches`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kt_benches::{chat_body, compile, realistic_config};
use kt_policy::config::{Source, load_sources};
use kt_policy::{CompiledPolicy, EvalOptions, Headers};

const SIZES_KIB: &[usize] = &[1, 16, 64, 256];

fn chain(c: &mut Criterion) {
    let policy = compile(&realistic_config(1000));
    let headers = Headers::new();
    let opts = EvalOptions::default();
    let mut group = c.benchmark_group("input_chain");
    for &kib in SIZES_KIB {
        let body = chat_body(kib * 1024, 42);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut parsed = body.clone();
        group.bench_with_input(BenchmarkId::new("evaluate", format!("{kib}KiB")), &kib, |b, _| {
            b.iter(|| policy.evaluate_request(&mut parsed, &headers, opts));
        });
        group.bench_with_input(
            BenchmarkId::new("parse_and_evaluate", format!("{kib}KiB")),
            &kib,
            |b, _| {
                b.iter(|| {
                    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    policy.evaluate_request(&mut v, &headers, opts)
                });
            },
        );
    }
    group.finish();
}

fn compile_10k(c: &mut Criterion) {
    let yaml = realistic_config(10_000);
    let config = load_sources(&[Source {
        name: "bench.yaml".into(),
        text: yaml.clone(),
    }])
    .config
    .unwrap_or_default();
    let mut group = c.benchmark_group("compile");
    group.sample_size(20);
    group.bench_function("compile_10k_terms", |b| {
        b.iter(|| CompiledPolicy::compile(config.clone()))
    });
    group.bench_function("load_and_compile_10k_terms", |b| b.iter(|| compile(&yaml)));
    group.finish();
}

/// prompt-injection's classifier layer alone, on the same prose.
fn classifier(c: &mut Criterion) {
    let Ok(model) = kt_policy::policies::classifier::Classifier::builtin() else {
        return;
    };
    let mut group = c.benchmark_group("classifier");
    for &kib in &[1usize, 64] {
        let text = kt_benches::prose(&mut kt_policy::fuzzing::Rng::new(42), kib * 1024);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("score", format!("{kib}KiB")), &kib, |b, _| {
            b.iter(|| model.score(&text));
        });
    }
    group.finish();
}

criterion_group!(benches, chain, compile_10k, classifier);
criterion_main!(benches);
