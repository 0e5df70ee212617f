//! The spend ledger of a managed gateway: what its answers cost, summed per hour, caller
//! key, consumer group, model and provider, and reported to the control plane every few
//! seconds (`POST /v1/gateway/usage`). A report the control plane did not acknowledge is
//! sent again under the same batch id, so it counts once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kt_api::{Client, UsageReport, UsageRow};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::RequestRecord;

/// Distinct rows held between reports; beyond it new combinations count under `other`.
const MAX_ROWS: usize = 10_000;
/// Rows per report: with labels of at most `MAX_LABEL` bytes a report stays well under
/// the control plane's 1 MiB body limit (and its 2,000-row limit).
const ROWS_PER_REPORT: usize = 500;
/// The longest label kept (longer ones are cut at a character boundary).
const MAX_LABEL: usize = 200;
/// The most one row counts of anything (tokens, nano-dollars, requests): a provider's
/// absurd usage figure cannot make a report the control plane refuses.
const MAX_COUNT: u64 = 1_000_000_000_000_000;
/// Unacknowledged reports kept while the control plane is away (an hour at 10 s).
const MAX_PENDING: usize = 360;

type RowKey = (i64, String, String, String, String);

/// Spend not yet reported.
#[derive(Debug, Default)]
pub struct Ledger {
    rows: Mutex<HashMap<RowKey, [u64; 4]>>,
}

impl Ledger {
    /// Counts an answer a provider gave (requests that reached no provider cost nothing).
    pub fn record(&self, r: &RequestRecord<'_>, now_secs: u64) {
        if r.provider == "none" {
            return;
        }
        let hour = (now_secs / 3600 * 3600) as i64;
        let nanos = (r.cost_usd.max(0.0) * 1e9).round() as u64;
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let full = rows.len() >= MAX_ROWS;
        let label = |s: Option<&str>| cut(s.unwrap_or("none")).to_owned();
        let mut key: RowKey = (
            hour,
            label(r.caller),
            label(r.group),
            cut(r.model).to_owned(),
            cut(r.provider).to_owned(),
        );
        if full && !rows.contains_key(&key) {
            key = (hour, "other".into(), "other".into(), "other".into(), "other".into());
        }
        let t = rows.entry(key).or_default();
        for (slot, n) in t.iter_mut().zip([1, r.input_tokens, r.output_tokens, nanos]) {
            *slot = slot.saturating_add(n).min(MAX_COUNT);
        }
    }

    /// Takes every row counted so far.
    fn take(&self) -> Vec<UsageRow> {
        let rows = std::mem::take(&mut *self.rows.lock().unwrap_or_else(|p| p.into_inner()));
        rows.into_iter()
            .map(|((hour, caller_key, consumer_group, model, provider), t)| UsageRow {
                hour,
                caller_key,
                consumer_group,
                model,
                provider,
                requests: t[0],
                input_tokens: t[1],
                output_tokens: t[2],
                cost_nanos: t[3],
            })
            .collect()
    }
}

/// `s` cut to at most `MAX_LABEL` bytes at a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= MAX_LABEL {
        return s;
    }
    let mut end = MAX_LABEL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reports the ledger to the control plane every `every`.
pub(crate) struct SpendSync {
    pub client: Client,
    pub ledger: Arc<Ledger>,
    pub every: Duration,
}

fn batch_id() -> String {
    format!("ub_{:016x}{:016x}", crate::ids::rand_u64(), crate::ids::rand_u64())
}

/// Adds the ledger's rows to `pending` as reports, dropping the oldest beyond the cap.
fn queue(pending: &mut VecDeque<UsageReport>, rows: Vec<UsageRow>) {
    for chunk in rows.chunks(ROWS_PER_REPORT) {
        pending.push_back(UsageReport {
            batch_id: batch_id(),
            rows: chunk.to_vec(),
        });
    }
    while pending.len() > MAX_PENDING {
        pending.pop_front();
        tracing::warn!("spend: the control plane has been away too long; the oldest unreported spend is dropped");
    }
}

#[async_trait]
impl BackgroundService for SpendSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut pending: VecDeque<UsageReport> = VecDeque::new();
        let mut reachable = true;
        loop {
            let stopping = tokio::select! {
                _ = shutdown.changed() => true,
                () = tokio::time::sleep(self.every) => false,
            };
            queue(&mut pending, self.ledger.take());
            while let Some(report) = pending.front().cloned() {
                let c = self.client.clone();
                let sent = tokio::task::spawn_blocking(move || c.report_usage(&report)).await;
                match sent {
                    Ok(Ok(())) => {
                        pending.pop_front();
                        if !reachable {
                            tracing::info!("spend: reports reach the control plane again");
                            reachable = true;
                        }
                    }
                    // Refused as invalid: sending it again would block every later report.
                    Ok(Err(e))
                        if e.status()
                            .is_some_and(|s| (400..500).contains(&s) && ![401, 403, 408, 429].contains(&s)) =>
                    {
                        tracing::error!("spend: the control plane refused a report ({e}); it is dropped");
                        pending.pop_front();
                    }
                    Ok(Err(e)) => {
                        if reachable {
                            tracing::warn!("spend: cannot report to the control plane ({e}); kept to send again");
                            reachable = false;
                        }
                        break;
                    }
                    // The blocking call panicked: keep the report for the next round.
                    Err(_) => break,
                }
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(caller: Option<&'a str>, provider: &'a str, cost: f64) -> RequestRecord<'a> {
        RequestRecord {
            provider,
            model: "m",
            status: 200,
            seconds: 0.0,
            overhead_seconds: 0.0,
            policies: vec![],
            input_tokens: 10,
            output_tokens: 5,
            rate_limited: false,
            caller,
            group: None,
            cost_usd: cost,
        }
    }

    #[test]
    fn answers_sum_per_hour_and_tenant() {
        let l = Ledger::default();
        l.record(&record(Some("gk_a"), "mock", 0.001), 7_300);
        l.record(&record(Some("gk_a"), "mock", 0.002), 10_799);
        l.record(&record(Some("gk_a"), "mock", 0.004), 10_800);
        l.record(&record(Some("gk_b"), "mock", 0.0), 7_300);
        l.record(&record(Some("gk_b"), "none", 1.0), 7_300);
        let mut rows = l.take();
        rows.sort_by(|a, b| (a.hour, &a.caller_key).cmp(&(b.hour, &b.caller_key)));
        let got: Vec<(i64, &str, u64, u64, u64)> = rows
            .iter()
            .map(|r| (r.hour, r.caller_key.as_str(), r.requests, r.input_tokens, r.cost_nanos))
            .collect();
        assert_eq!(
            got,
            [
                (7_200, "gk_a", 2, 20, 3_000_000),
                (7_200, "gk_b", 1, 10, 0),
                (10_800, "gk_a", 1, 10, 4_000_000)
            ]
        );
        assert_eq!(rows[0].consumer_group, "none");
        assert!(l.take().is_empty(), "taken once");
    }

    #[test]
    fn absurd_usage_and_long_labels_stay_reportable() {
        let l = Ledger::default();
        let long = "é".repeat(300);
        let mut r = record(Some(&long), "mock", f64::INFINITY);
        r.input_tokens = u64::MAX;
        l.record(&r, 0);
        l.record(&r, 0);
        let rows = l.take();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].caller_key.len() <= MAX_LABEL && rows[0].caller_key.starts_with('é'));
        assert_eq!((rows[0].input_tokens, rows[0].cost_nanos), (MAX_COUNT, MAX_COUNT));
    }

    #[test]
    fn the_ledger_and_the_queue_are_bounded() {
        let l = Ledger::default();
        let ids: Vec<String> = (0..MAX_ROWS + 5).map(|i| format!("gk_{i}")).collect();
        for id in &ids {
            l.record(&record(Some(id), "mock", 0.0), 0);
        }
        let rows = l.take();
        assert_eq!(rows.len(), MAX_ROWS + 1);
        let other = rows.iter().find(|r| r.caller_key == "other").expect("overflow row");
        assert_eq!(other.requests, 5);
        let mut pending = VecDeque::new();
        queue(&mut pending, rows);
        assert_eq!(pending.len(), MAX_ROWS.div_ceil(ROWS_PER_REPORT) + 1);
        assert!(pending.iter().all(|r| r.rows.len() <= ROWS_PER_REPORT));
        let one = pending[0].rows[0].clone();
        for _ in 0..MAX_PENDING {
            queue(&mut pending, vec![one.clone()]);
        }
        assert_eq!(pending.len(), MAX_PENDING);
    }
}
