//! Prometheus metrics, `keeptrusts_gateway_*`, recorded once per request from the logging
//! hook and rendered in the text exposition format on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::cache::ResponseCache;
use crate::routing::Router;

/// Upper bounds (seconds) of the request-duration histogram.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What one finished request contributes.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub status: u16,
    pub seconds: f64,
    pub overhead_seconds: f64,
    /// (policy kind, verdict)
    pub policies: Vec<(&'static str, &'static str)>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub rate_limited: bool,
}

#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    overhead: Mutex<Histogram>,
    evaluations: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    tokens: Mutex<BTreeMap<(&'static str, String), u64>>,
    rate_limited: AtomicU64,
    fallbacks: Mutex<BTreeMap<String, u64>>,
    pub processed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn observe(h: &mut Histogram, v: f64) {
    for (i, b) in BUCKETS.iter().enumerate() {
        if v <= *b {
            h.counts[i] += 1;
        }
    }
    h.count += 1;
    h.sum += v;
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, b) in BUCKETS.iter().enumerate() {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", h.counts[i]);
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            requests: Mutex::default(),
            durations: Mutex::default(),
            overhead: Mutex::default(),
            evaluations: Mutex::default(),
            tokens: Mutex::default(),
            rate_limited: AtomicU64::new(0),
            fallbacks: Mutex::default(),
            processed: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn record(&self, r: &RequestRecord<'_>) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        {
            let mut requests = lock(&self.requests);
            let hit = requests
                .iter_mut()
                .find(|((p, m, st), _)| p == r.provider && m == r.model && *st == r.status);
            match hit {
                Some((_, n)) => *n += 1,
                None => {
                    requests.insert((r.provider.to_owned(), r.model.to_owned(), r.status), 1);
                }
            }
        }
        {
            let mut durations = lock(&self.durations);
            match durations.get_mut(r.provider) {
                Some(h) => observe(h, r.seconds),
                None => observe(durations.entry(r.provider.to_owned()).or_default(), r.seconds),
            }
        }
        observe(&mut lock(&self.overhead), r.overhead_seconds);
        let mut ev = lock(&self.evaluations);
        for p in &r.policies {
            *ev.entry(*p).or_default() += 1;
        }
        drop(ev);
        let mut t = lock(&self.tokens);
        for (direction, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
            if n == 0 {
                continue;
            }
            match t.iter_mut().find(|((d, m), _)| *d == direction && m == r.model) {
                Some((_, total)) => *total += n,
                None => {
                    t.insert((direction, r.model.to_owned()), n);
                }
            }
        }
        drop(t);
        if r.rate_limited {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request moved on from `target` to the next candidate.
    pub fn fallback(&self, target: &str) {
        *lock(&self.fallbacks).entry(target.to_owned()).or_default() += 1;
    }

    /// The text exposition of every metric.
    pub fn render(&self, events_written: u64, events_dropped: u64, router: &Router, cache: &ResponseCache) -> String {
        let mut out = String::new();
        self.render_core(&mut out, events_written, events_dropped);
        out.push_str("# HELP keeptrusts_gateway_fallbacks_total Attempts that failed over from a target to the next.\n# TYPE keeptrusts_gateway_fallbacks_total counter\n");
        for (t, n) in lock(&self.fallbacks).iter() {
            let _ = writeln!(
                out,
                "keeptrusts_gateway_fallbacks_total{{target=\"{}\"}} {n}",
                escape(t)
            );
        }
        out.push_str("# HELP keeptrusts_gateway_circuit_state Circuit state per target: 0 closed, 1 open, 2 half-open.\n# TYPE keeptrusts_gateway_circuit_state gauge\n");
        for t in &router.targets {
            let _ = writeln!(
                out,
                "keeptrusts_gateway_circuit_state{{target=\"{}\"}} {}",
                escape(&t.id),
                t.health.circuit_code()
            );
        }
        out.push_str("# HELP keeptrusts_gateway_upstream_requests_total Upstream attempts per target, and failures.\n# TYPE keeptrusts_gateway_upstream_requests_total counter\n");
        for t in &router.targets {
            let _ = writeln!(
                out,
                "keeptrusts_gateway_upstream_requests_total{{target=\"{}\",outcome=\"ok\"}} {}\nkeeptrusts_gateway_upstream_requests_total{{target=\"{}\",outcome=\"error\"}} {}",
                escape(&t.id),
                t.health
                    .requests
                    .load(Ordering::Relaxed)
                    .saturating_sub(t.health.failures.load(Ordering::Relaxed)),
                escape(&t.id),
                t.health.failures.load(Ordering::Relaxed)
            );
        }
        let (hits, misses, entries) = cache.counters();
        let _ = writeln!(
            out,
            "# HELP keeptrusts_gateway_cache_hits_total Answers served from the response cache.\n# TYPE keeptrusts_gateway_cache_hits_total counter\nkeeptrusts_gateway_cache_hits_total {hits}\n# HELP keeptrusts_gateway_cache_misses_total Cacheable requests not found in the cache.\n# TYPE keeptrusts_gateway_cache_misses_total counter\nkeeptrusts_gateway_cache_misses_total {misses}\n# HELP keeptrusts_gateway_cache_entries Entries in the response cache.\n# TYPE keeptrusts_gateway_cache_entries gauge\nkeeptrusts_gateway_cache_entries {entries}"
        );
        out
    }

    fn render_core(&self, out: &mut String, events_written: u64, events_dropped: u64) {
        out.push_str("# HELP keeptrusts_gateway_requests_total Requests answered, by provider, model and status.\n# TYPE keeptrusts_gateway_requests_total counter\n");
        for ((p, m, s), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "keeptrusts_gateway_requests_total{{provider=\"{}\",model=\"{}\",status=\"{s}\"}} {n}",
                escape(p),
                escape(m)
            );
        }
        out.push_str("# HELP keeptrusts_gateway_request_duration_seconds Time from request to last byte, by provider.\n# TYPE keeptrusts_gateway_request_duration_seconds histogram\n");
        for (p, h) in lock(&self.durations).iter() {
            histogram(
                out,
                "keeptrusts_gateway_request_duration_seconds",
                &format!("provider=\"{}\"", escape(p)),
                h,
            );
        }
        out.push_str("# HELP keeptrusts_gateway_overhead_seconds Time spent in the gateway itself, upstream time excluded.\n# TYPE keeptrusts_gateway_overhead_seconds histogram\n");
        histogram(out, "keeptrusts_gateway_overhead_seconds", "", &lock(&self.overhead));
        out.push_str("# HELP keeptrusts_gateway_policy_evaluations_total Policy evaluations by policy kind and verdict.\n# TYPE keeptrusts_gateway_policy_evaluations_total counter\n");
        for ((p, v), n) in lock(&self.evaluations).iter() {
            let _ = writeln!(
                out,
                "keeptrusts_gateway_policy_evaluations_total{{policy=\"{p}\",result=\"{v}\"}} {n}"
            );
        }
        out.push_str("# HELP keeptrusts_gateway_tokens_total Tokens by direction and model.\n# TYPE keeptrusts_gateway_tokens_total counter\n");
        for ((d, m), n) in lock(&self.tokens).iter() {
            let _ = writeln!(
                out,
                "keeptrusts_gateway_tokens_total{{direction=\"{d}\",model=\"{}\"}} {n}",
                escape(m)
            );
        }
        let _ = writeln!(
            out,
            "# HELP keeptrusts_gateway_rate_limited_total Requests refused by a rate limit.\n# TYPE keeptrusts_gateway_rate_limited_total counter\nkeeptrusts_gateway_rate_limited_total {}",
            self.rate_limited.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP keeptrusts_gateway_events_dropped_total Decision events dropped because the queue was full.\n# TYPE keeptrusts_gateway_events_dropped_total counter\nkeeptrusts_gateway_events_dropped_total {events_dropped}\n# HELP keeptrusts_gateway_events_written_total Decision events written.\n# TYPE keeptrusts_gateway_events_written_total counter\nkeeptrusts_gateway_events_written_total {events_written}"
        );
        let _ = writeln!(
            out,
            "# HELP keeptrusts_gateway_uptime_seconds Seconds since start.\n# TYPE keeptrusts_gateway_uptime_seconds gauge\nkeeptrusts_gateway_uptime_seconds {}",
            self.uptime_seconds()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.record(&RequestRecord {
            provider: "openai",
            model: "gpt\"x",
            status: 200,
            seconds: 0.2,
            overhead_seconds: 0.001,
            policies: vec![("pii-detector", "redact")],
            input_tokens: 3,
            output_tokens: 4,
            rate_limited: false,
        });
        let mut text = String::new();
        m.render_core(&mut text, 1, 0);
        assert!(
            text.contains("keeptrusts_gateway_requests_total{provider=\"openai\",model=\"gpt\\\"x\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("keeptrusts_gateway_request_duration_seconds_bucket{provider=\"openai\",le=\"0.25\"} 1"));
        assert!(text.contains("keeptrusts_gateway_request_duration_seconds_bucket{provider=\"openai\",le=\"0.1\"} 0"));
        assert!(
            text.contains("keeptrusts_gateway_policy_evaluations_total{policy=\"pii-detector\",result=\"redact\"} 1")
        );
        assert!(text.contains("keeptrusts_gateway_tokens_total{direction=\"output\",model=\"gpt\\\"x\"} 4"));
        assert!(text.contains("keeptrusts_gateway_overhead_seconds_count 1"));
    }
}
