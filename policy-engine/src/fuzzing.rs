//! Fuzz targets: functions of arbitrary bytes that must never panic, hang or disagree
//! with a reference. The stable driver (`tests/fuzz.rs` here and in the gateway) runs each
//! on seeded random inputs for a bounded number of cases and replays every saved input in
//! `fixtures/fuzz/<target>/`; the `fuzz/` directory holds `cargo fuzz` harnesses for the
//! same functions, for those with a nightly toolchain.

use serde_json::Value;

use crate::config::{Source, load_sources};
use crate::scan::automaton::LiteralDfa;
use crate::stream::sse::SseParser;
use crate::{CompiledPolicy, EvalOptions, Headers};

/// The YAML loader (and, for what loads, the compiler) on any text.
pub fn yaml_loader(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let outcome = load_sources(&[Source {
        name: "fuzz.yaml".into(),
        text,
    }]);
    if let Some(config) = outcome.config {
        let _ = CompiledPolicy::compile(config);
    }
}

/// Strict request JSON parsing, then every text segment of it as request and answer.
pub fn request_json(data: &[u8]) {
    let Ok(value) = crate::json::parse_strict(data) else {
        return;
    };
    for seg in crate::exchange::request_texts(&value) {
        let _ = seg.text.len();
    }
    for seg in crate::exchange::response_texts(&value) {
        let _ = seg.text.len();
    }
    let _ = crate::exchange::request_tools(&value);
    let _ = crate::exchange::response_tools(&value);
    if let Some(view) = crate::exchange::chat_answer_view(data) {
        let _ = view.texts();
    }
}

/// The SSE framer: any cutting of the same bytes gives the same events as one push.
pub fn sse_framer(data: &[u8]) {
    let Some((&cut_seed, body)) = data.split_first() else {
        return;
    };
    let whole = SseParser::new(1 << 20).push(body);
    let mut parser = SseParser::new(1 << 20);
    let mut pieces = Vec::new();
    let step = usize::from(cut_seed % 7) + 1;
    let mut failed = None;
    for chunk in body.chunks(step) {
        match parser.push(chunk) {
            Ok(events) => pieces.extend(events),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match (whole, failed) {
        (Ok(events), None) => assert_eq!(events, pieces, "cutting changed the events"),
        (Err(_), Some(_)) => {}
        (w, f) => panic!("one push and chunked pushes disagree: {w:?} vs {f:?}"),
    }
}

/// The guard a stream's text passes through, with PII and DLP policies, fed deltas cut
/// from the input: never panics, and its output never holds a detected e-mail address.
pub fn stream_guard(data: &[u8]) {
    static POLICY: std::sync::OnceLock<CompiledPolicy> = std::sync::OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        let yaml = "pack: {name: fuzz, version: 1.0.0, enabled: true}\npolicies: {chain: [pii-detector, dlp-filter]}\npolicy:\n  pii-detector: {action: redact}\n  dlp-filter: {action: redact, blocked_terms: [secret-term], detect_patterns: [\"AKIA[0-9A-Z]{16}\"]}\n";
        let config = load_sources(&[Source {
            name: "fuzz.yaml".into(),
            text: yaml.into(),
        }])
        .config
        .unwrap_or_else(|| unreachable!("the fuzz policy is valid"));
        CompiledPolicy::compile(config).unwrap_or_else(|e| unreachable!("the fuzz policy compiles: {e}"))
    });
    let Some((&cut_seed, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    let request = Value::Null;
    let headers = Headers::new();
    let mut guard = crate::stream::guard::OutputGuard::new(policy, &request, &headers, EvalOptions::default());
    let step = usize::from(cut_seed % 13) + 1;
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let mut cut = step.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let _ = guard.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    let _ = guard.finish();
}

/// The own literal automaton against the `aho-corasick` crate: the first input byte gives
/// the number of patterns, then NUL-separated patterns, then the haystack.
pub fn dfa_differential(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16) + 1;
    let mut parts = rest.splitn(n + 1, |b| *b == 0);
    let patterns: Vec<String> = parts
        .by_ref()
        .take(n)
        .map(|p| String::from_utf8_lossy(&p[..p.len().min(32)]).into_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let hay = parts.next().unwrap_or_default();
    if patterns.is_empty() {
        return;
    }
    let Some(dfa) = LiteralDfa::new(&patterns) else {
        return;
    };
    let mut ours = Vec::new();
    dfa.for_each_match(hay, |p, a, b| ours.push((p as usize, a, b)));
    ours.sort_unstable();
    let reference = aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(&patterns)
        .unwrap_or_else(|e| unreachable!("aho-corasick builds: {e}"));
    let mut theirs: Vec<(usize, usize, usize)> = reference
        .find_overlapping_iter(hay)
        .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
        .collect();
    theirs.sort_unstable();
    assert_eq!(ours, theirs, "patterns {patterns:?}");
}

/// A fuzz target: a function of arbitrary bytes.
pub type Target = fn(&[u8]);

/// Every target, by name: what the drivers iterate.
pub const TARGETS: &[(&str, Target)] = &[
    ("yaml_loader", yaml_loader),
    ("request_json", request_json),
    ("sse_framer", sse_framer),
    ("stream_guard", stream_guard),
    ("dfa_differential", dfa_differential),
];

/// Runs `target` on every input saved in `corpus_dir` (the seeds, regressions included),
/// then on seeded random and mutated inputs: `KT_FUZZ_ITERATIONS` of them (default 3000),
/// from `KT_FUZZ_SEED` (default `seed`). A failing input is reported in hex, to be saved in
/// `corpus_dir` as a regression case. What the stable drivers of every crate call.
pub fn drive(name: &str, target: Target, corpus_dir: &std::path::Path, seed: u64) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env("KT_FUZZ_ITERATIONS").unwrap_or(3000);
    let seed = env("KT_FUZZ_SEED").unwrap_or(seed) ^ name.len() as u64;
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(corpus_dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let saved: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    assert!(!saved.is_empty(), "{} holds no seed inputs", corpus_dir.display());
    let seeds: Vec<&[u8]> = saved.iter().map(Vec::as_slice).collect();
    let mut rng = Rng::new(seed);
    let generated = (0..cases).map(|_| rng.input(&seeds, 4096));
    for input in saved.iter().cloned().chain(generated) {
        if std::panic::catch_unwind(|| target(&input)).is_err() {
            let hex: String = input.iter().map(|x| format!("{x:02x}")).collect();
            panic!(
                "fuzz target {name} failed on this input; save it in {} to keep it:\n{hex}",
                corpus_dir.display()
            );
        }
    }
}

/// A small, dependency-free generator (xorshift64*) for the stable fuzz drivers and the
/// benchmarks' deterministic workloads.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// An input: random bytes, or a seed input with random bytes changed, cut or
    /// repeated (mutations find more than noise does).
    pub fn input(&mut self, seeds: &[&[u8]], max: usize) -> Vec<u8> {
        let pick = self.next_u64();
        let mut out: Vec<u8> = match seeds.get((pick % (seeds.len() as u64 + 1)) as usize) {
            Some(s) => s.to_vec(),
            None => (0..self.next_u64() as usize % max.max(1))
                .map(|_| self.next_u64() as u8)
                .collect(),
        };
        for _ in 0..self.next_u64() % 8 {
            if out.is_empty() {
                break;
            }
            let at = self.next_u64() as usize % out.len();
            match self.next_u64() % 4 {
                0 => out[at] = self.next_u64() as u8,
                1 => out.truncate(at),
                2 => {
                    let piece = out[at..].to_vec();
                    out.extend_from_slice(&piece[..piece.len().min(64)]);
                }
                _ => {
                    const SPICE: &[u8] = b"{}[]\":,\n\\\0 -";
                    out.insert(at, SPICE[self.next_u64() as usize % SPICE.len()]);
                }
            }
        }
        out.truncate(max);
        out
    }
}
