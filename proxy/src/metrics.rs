//! Prometheus metrics, `keeptrusts_gateway_*`, through the `prometheus` crate: recorded
//! once per request from the logging hook and rendered in the text exposition format on
//! `GET /metrics`. Every label value comes from a bounded set: configured target ids,
//! configured model names and aliases (anything else is `other`), HTTP status codes,
//! policy kinds and verdicts. What a client sends never becomes a series of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::cache::ResponseCache;
use crate::routing::Router;

/// Upper bounds (seconds) of the request-duration histograms.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The label of a model that is not one of the configuration's names or aliases.
pub const OTHER: &str = "other";

/// What one finished request contributes. `provider` is a configured target id (or
/// `none`) and `model` a configured model name (or [`OTHER`]).
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
    /// With `caller_auth`: the caller key's id, or `none` for a request without a valid
    /// key; `None` when callers are not authenticated.
    pub caller: Option<&'a str>,
    /// With `consumer_groups`: the request's group, or `none`.
    pub group: Option<&'a str>,
    /// What the answer cost in US dollars (0 when unpriced).
    pub cost_usd: f64,
}

#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    overhead: Histogram,
    evaluations: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    rate_limited: IntCounter,
    fallbacks: IntCounterVec,
    circuit: IntGaugeVec,
    upstream: IntCounterVec,
    external: HistogramVec,
    callers: PerTenant,
    groups: PerTenant,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_entries: IntGauge,
    events_written: IntCounter,
    events_dropped: IntCounter,
    uptime: IntGauge,
    pub processed: AtomicU64,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = r.register(Box::new(v.clone()));
    v
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = r.register(Box::new(v.clone()));
    v
}

fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let v =
        HistogramVec::new(histogram_opts(name, help), labels).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = r.register(Box::new(v.clone()));
    v
}

/// Request and token counters per caller key or per consumer group.
#[derive(Debug)]
struct PerTenant {
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
}

fn cost_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let v = CounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = r.register(Box::new(v.clone()));
    v
}

impl PerTenant {
    /// `keeptrusts_gateway_{what}_requests_total{label,status}` and
    /// `keeptrusts_gateway_{what}_tokens_total{label,direction}`.
    fn new(r: &Registry, what: &str, label: &str, help: &str) -> Self {
        PerTenant {
            requests: counter_vec(
                r,
                &format!("keeptrusts_gateway_{what}_requests_total"),
                &format!("Model requests by {help} and status."),
                &[label, "status"],
            ),
            tokens: counter_vec(
                r,
                &format!("keeptrusts_gateway_{what}_tokens_total"),
                &format!("Tokens by {help} and direction."),
                &[label, "direction"],
            ),
            cost: cost_vec(
                r,
                &format!("keeptrusts_gateway_{what}_cost_usd_total"),
                &format!("Cost of answers in US dollars (pricing table) by {help}."),
                &[label],
            ),
        }
    }

    fn record(&self, who: &str, status: &str, r: &RequestRecord<'_>) {
        self.requests.with_label_values(&[who, status]).inc();
        for (direction, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
            if n > 0 {
                self.tokens.with_label_values(&[who, direction]).inc_by(n);
            }
        }
        if r.cost_usd > 0.0 {
            self.cost.with_label_values(&[who]).inc_by(r.cost_usd);
        }
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

/// Brings a counter up to a total kept elsewhere (counters only go up).
fn catch_up(c: &IntCounter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

fn histogram_opts(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(BUCKETS.to_vec())
}

/// Per-target fallbacks, circuit states and upstream attempts.
fn target_metrics(r: &Registry) -> (IntCounterVec, IntGaugeVec, IntCounterVec) {
    let fallbacks = counter_vec(
        r,
        "keeptrusts_gateway_fallbacks_total",
        "Attempts that failed over from a target to the next.",
        &["target"],
    );
    let circuit = gauge_vec(
        r,
        "keeptrusts_gateway_circuit_state",
        "Circuit state per target: 0 closed, 1 open, 2 half-open.",
        &["target"],
    );
    let upstream = counter_vec(
        r,
        "keeptrusts_gateway_upstream_requests_total",
        "Upstream attempts per target, and failures.",
        &["target", "outcome"],
    );
    (fallbacks, circuit, upstream)
}

/// The response cache's hits, misses and entries.
fn cache_metrics(r: &Registry) -> (IntCounter, IntCounter, IntGauge) {
    let hits = counter(
        r,
        "keeptrusts_gateway_cache_hits_total",
        "Answers served from the response cache.",
    );
    let misses = counter(
        r,
        "keeptrusts_gateway_cache_misses_total",
        "Cacheable requests not found in the cache.",
    );
    let entries = int_gauge(r, "keeptrusts_gateway_cache_entries", "Entries in the response cache.");
    (hits, misses, entries)
}

fn event_metrics(r: &Registry) -> (IntCounter, IntCounter) {
    let written = counter(r, "keeptrusts_gateway_events_written_total", "Decision events written.");
    let dropped = counter(
        r,
        "keeptrusts_gateway_events_dropped_total",
        "Decision events dropped because the queue was full.",
    );
    (written, dropped)
}

fn overhead_histogram(r: &Registry) -> Histogram {
    let overhead = Histogram::with_opts(histogram_opts(
        "keeptrusts_gateway_overhead_seconds",
        "Time spent in the gateway itself, upstream time excluded.",
    ))
    .unwrap_or_else(|e| unreachable!("overhead histogram: {e}"));
    let _ = r.register(Box::new(overhead.clone()));
    overhead
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let durations = histogram_vec(
            &r,
            "keeptrusts_gateway_request_duration_seconds",
            "Time from request to last byte, by provider.",
            &["provider"],
        );
        let overhead = overhead_histogram(&r);
        let rate_limited = counter(
            &r,
            "keeptrusts_gateway_rate_limited_total",
            "Requests refused by a rate limit.",
        );
        let external = histogram_vec(
            &r,
            "keeptrusts_gateway_external_classifier_seconds",
            "External injection classifier calls by outcome (passed, flagged, error).",
            &["outcome"],
        );
        let callers = PerTenant::new(&r, "caller", "key", "caller key id (caller_auth; `none`: no valid key)");
        let groups = PerTenant::new(&r, "consumer_group", "group", "consumer group (`none`: no group)");
        let uptime = int_gauge(&r, "keeptrusts_gateway_uptime_seconds", "Seconds since start.");
        let (fallbacks, circuit, upstream) = target_metrics(&r);
        let (cache_hits, cache_misses, cache_entries) = cache_metrics(&r);
        let (events_written, events_dropped) = event_metrics(&r);
        Metrics {
            started: Instant::now(),
            requests: counter_vec(
                &r,
                "keeptrusts_gateway_requests_total",
                "Requests answered, by provider target, model and status.",
                &["provider", "model", "status"],
            ),
            durations,
            overhead,
            evaluations: counter_vec(
                &r,
                "keeptrusts_gateway_policy_evaluations_total",
                "Policy evaluations by policy kind and verdict.",
                &["policy", "result"],
            ),
            tokens: counter_vec(
                &r,
                "keeptrusts_gateway_tokens_total",
                "Tokens by direction and model.",
                &["direction", "model"],
            ),
            cost: cost_vec(
                &r,
                "keeptrusts_gateway_cost_usd_total",
                "Cost of answers in US dollars (pricing table) by model.",
                &["model"],
            ),
            rate_limited,
            fallbacks,
            circuit,
            upstream,
            external,
            callers,
            groups,
            cache_hits,
            cache_misses,
            cache_entries,
            events_written,
            events_dropped,
            uptime,
            registry: r,
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
        self.requests
            .with_label_values(&[r.provider, r.model, &status_label(r.status)])
            .inc();
        self.durations.with_label_values(&[r.provider]).observe(r.seconds);
        self.overhead.observe(r.overhead_seconds);
        for (policy, verdict) in &r.policies {
            self.evaluations.with_label_values(&[policy, verdict]).inc();
        }
        for (direction, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
            if n > 0 {
                self.tokens.with_label_values(&[direction, r.model]).inc_by(n);
            }
        }
        if r.rate_limited {
            self.rate_limited.inc();
        }
        let status = status_label(r.status);
        if r.cost_usd > 0.0 {
            self.cost.with_label_values(&[r.model]).inc_by(r.cost_usd);
        }
        if let Some(key) = r.caller {
            self.callers.record(key, &status, r);
        }
        if let Some(group) = r.group {
            self.groups.record(group, &status, r);
        }
    }

    /// A request moved on from `target` (a configured target id) to the next candidate.
    pub fn fallback(&self, target: &str) {
        self.fallbacks.with_label_values(&[target]).inc();
    }

    /// One call of the external injection classifier; `outcome` is `passed`, `flagged` or
    /// `error`.
    pub fn external_classifier(&self, outcome: &'static str, took: std::time::Duration) {
        self.external.with_label_values(&[outcome]).observe(took.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self, events_written: u64, events_dropped: u64, router: &Router, cache: &ResponseCache) -> String {
        // Circuit states describe the running configuration's targets only.
        self.circuit.reset();
        for t in &router.targets {
            self.circuit
                .with_label_values(&[t.id.as_str()])
                .set(i64::from(t.health.circuit_code()));
            let requests = t.health.requests.load(Ordering::Relaxed);
            let failures = t.health.failures.load(Ordering::Relaxed);
            catch_up(
                &self.upstream.with_label_values(&[t.id.as_str(), "ok"]),
                requests.saturating_sub(failures),
            );
            catch_up(&self.upstream.with_label_values(&[t.id.as_str(), "error"]), failures);
        }
        let (hits, misses, entries) = cache.counters();
        catch_up(&self.cache_hits, hits);
        catch_up(&self.cache_misses, misses);
        self.cache_entries.set(gauge(entries));
        catch_up(&self.events_written, events_written);
        catch_up(&self.events_dropped, events_dropped);
        self.uptime.set(gauge(self.uptime_seconds()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("metrics: cannot encode: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A status code as a label (the common ones without an allocation).
fn status_label(s: u16) -> std::borrow::Cow<'static, str> {
    match s {
        200 => "200".into(),
        400 => "400".into(),
        403 => "403".into(),
        404 => "404".into(),
        422 => "422".into(),
        429 => "429".into(),
        502 => "502".into(),
        503 => "503".into(),
        _ => s.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(m: &Metrics, model: &str) {
        m.record(&RequestRecord {
            provider: "openai",
            model,
            status: 200,
            seconds: 0.2,
            overhead_seconds: 0.001,
            policies: vec![("pii-detector", "redact")],
            input_tokens: 3,
            output_tokens: 4,
            rate_limited: false,
            caller: None,
            group: None,
            cost_usd: 0.0,
        });
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        record(&m, "gpt\"x");
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .expect("encode");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("keeptrusts_gateway_requests_total{model=\"gpt\\\"x\",provider=\"openai\",status=\"200\"} 1"),
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
