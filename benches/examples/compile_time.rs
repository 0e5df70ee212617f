//! Times compiling the realistic configuration with growing term lists.
use std::time::Instant;

use kt_policy::CompiledPolicy;
use kt_policy::config::{Source, load_sources};

fn main() {
    for terms in [10usize, 1000, 10_000] {
        let yaml = kt_benches::realistic_config(terms);
        let t = Instant::now();
        let config = load_sources(&[Source {
            name: "b.yaml".into(),
            text: yaml,
        }])
        .config
        .unwrap_or_default();
        let load = t.elapsed();
        let t = Instant::now();
        let _p = CompiledPolicy::compile(config);
        println!(
            "{terms:>6} terms: load {:.1} ms, compile {:.1} ms",
            load.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
