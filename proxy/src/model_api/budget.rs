//! Budgets (`budgets`): before a request goes upstream, its most possible cost is reserved
//! on every budget that applies to it (the whole body counted as input tokens, the
//! request's output maximum, at the dearest price among its candidate targets). A hard
//! budget without room refuses the request (429 `budget_exceeded`). After the answer the
//! reservation is settled to the cost the provider's usage gives; a request that never
//! went upstream gives its reservation back; one that went but reported no usage keeps
//! it (the provider may have billed it). So a hard budget is never overspent, streams
//! included: the provider is held to the reserved output maximum.
//!
//! Amounts are kept in nano-dollars; counters live in this process, or in `shared_state`'s
//! Redis, shared by every replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kt_policy::config::{BudgetMode, BudgetPeriod, BudgetRule, BudgetScope, PolicyConfig, SharedFailMode};
use serde_json::{Value, json};

use super::caller::CallerKey;
use super::groups::Group;
use crate::error::RequestError;
use crate::gateway::ClientApi;
use crate::ids::now_secs;
use crate::reload::Runtime;
use crate::routing::Target;

/// Nano-dollars per US dollar.
const NANO: f64 = 1e9;

/// The budgets of one configuration and this process's counters.
#[derive(Debug)]
pub struct Budgets {
    reserve_output: u64,
    rules: Vec<BudgetRule>,
    /// counter → (period index, nano-dollars spent or reserved); shared with the runtime
    /// a reload replaces, so requests still on it count here too.
    spent: Arc<Mutex<HashMap<String, (u64, u64)>>>,
}

/// The largest amount reserved or settled at once (well inside Redis's signed counters).
const MAX_AMOUNT: u64 = 1 << 60;

/// One budget a request counts against, in the current period.
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    /// The budget and whose it is (`*`, a key id, a group name).
    counter: String,
    period: u64,
    /// Seconds until the period ends.
    ttl: u64,
    limit: u64,
    hard: bool,
}

impl Budgets {
    pub fn of(config: &PolicyConfig) -> Option<Budgets> {
        let b = config.budgets.as_ref()?;
        Some(Budgets {
            reserve_output: b.reserve_output_tokens,
            rules: b.limits.clone(),
            spent: Arc::default(),
        })
    }

    /// Shares `old`'s counts (budgets are named, and a count of a budget that is gone is
    /// never read): requests still running on `old` reserve and settle on the same counts.
    pub fn carry(&mut self, old: &Budgets) {
        self.spent = Arc::clone(&old.spent);
    }

    /// The budgets a request of this caller key and group counts against at `now`.
    fn slots(&self, caller: Option<&str>, group: Option<&str>, now: u64) -> Vec<Slot> {
        let mut out = Vec::new();
        for r in &self.rules {
            let whose = match r.scope {
                BudgetScope::Organisation => Some("*"),
                BudgetScope::CallerKey => caller,
                BudgetScope::ConsumerGroup => group,
            };
            let Some(whose) = whose.filter(|w| r.id.as_deref().is_none_or(|id| id == *w)) else {
                continue;
            };
            let (period, ttl) = period_of(r.period, now);
            out.push(Slot {
                name: r.name.clone(),
                counter: format!("{}:{whose}", r.name),
                period,
                ttl,
                limit: (r.limit_usd * NANO) as u64,
                hard: r.mode == BudgetMode::Hard,
            });
        }
        out
    }

    /// The gateway key's own hard budget (`kt spend gateway-key create --budget-usd`), as a
    /// slot. Its counter starts with `@`, which configured budget names cannot.
    fn key_slot(caller: &CallerKey, now: u64) -> Option<Slot> {
        let (limit, period) = caller.budget?;
        let (index, ttl) = period_of(period, now);
        Some(Slot {
            name: format!("gateway key {}", caller.id),
            counter: format!("@key:{}", caller.id),
            period: index,
            ttl,
            limit,
            hard: true,
        })
    }

    /// Budgets for a configuration without a `budgets` section whose callers' gateway keys
    /// may carry budgets of their own.
    pub fn for_keys() -> Budgets {
        Budgets {
            reserve_output: kt_policy::config::Budgets::default_reserve_output(),
            rules: Vec::new(),
            spent: Arc::default(),
        }
    }

    /// Reserves `amount` on every slot, unless a hard one lacks room (its name).
    fn reserve_local(&self, slots: &[Slot], amount: u64) -> Result<Vec<String>, String> {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        let mut over_soft = Vec::new();
        for s in slots {
            let used = spent
                .get(&s.counter)
                .filter(|(p, _)| *p == s.period)
                .map_or(0, |(_, n)| *n);
            if used.saturating_add(amount) > s.limit {
                if s.hard {
                    return Err(s.name.clone());
                }
                over_soft.push(s.name.clone());
            }
        }
        for s in slots {
            let entry = spent.entry(s.counter.clone()).or_insert((s.period, 0));
            if entry.0 != s.period {
                *entry = (s.period, 0);
            }
            entry.1 = entry.1.saturating_add(amount);
        }
        Ok(over_soft)
    }

    /// Adds `delta` nano-dollars (negative: gives back) to every slot.
    fn adjust_local(&self, slots: &[Slot], delta: i64) {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots {
            if let Some(entry) = spent.get_mut(&s.counter).filter(|(p, _)| *p == s.period) {
                entry.1 = entry.1.saturating_add_signed(delta);
            }
        }
    }
}

/// The index of the period holding Unix time `now`, and the seconds until it ends.
fn period_of(period: BudgetPeriod, now: u64) -> (u64, u64) {
    match period {
        BudgetPeriod::Hour => (now / 3600, 3600 - now % 3600),
        BudgetPeriod::Day => (now / 86_400, 86_400 - now % 86_400),
        BudgetPeriod::Month => {
            let days = now / 86_400;
            let (y, m) = year_month(days);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = days_from_civil(ny, nm) * 86_400;
            (y * 12 + m, next.saturating_sub(now).max(1))
        }
    }
}

/// (year, month 1–12) of a day count since 1970-01-01.
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m)
}

/// Days since 1970-01-01 of the first day of month `m` of year `y` (y ≥ 1970).
fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// A request's reservation. Dropped before the request went upstream, it is given back;
/// after, it stays charged unless settled to the provider's usage.
#[derive(Debug)]
pub(crate) struct Reservation {
    rt: Arc<Runtime>,
    slots: Vec<Slot>,
    amount: u64,
    /// Set once a provider may have billed the request.
    pub dispatched: bool,
    settled: bool,
    /// Whether the reservation was made in Redis (settled there) or in this process.
    in_redis: bool,
    /// Soft budgets this request went over.
    pub over_soft: Vec<String>,
}

impl Reservation {
    /// Settles to `cost` US dollars (`None`: no usage was reported; the reservation stays).
    pub(crate) fn settle(mut self, cost: Option<f64>) {
        self.settled = true;
        if let Some(cost) = cost {
            let actual = ((cost.max(0.0) * NANO).ceil() as u64).min(MAX_AMOUNT);
            let delta = signed(actual) - signed(self.amount);
            adjust(&self.rt, self.slots.clone(), delta, self.in_redis);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled && !self.dispatched {
            adjust(
                &self.rt,
                std::mem::take(&mut self.slots),
                -signed(self.amount),
                self.in_redis,
            );
        }
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Adds `delta` to the slots where the reservation was made: in this process, or in Redis
/// (off the request's path).
fn adjust(rt: &Arc<Runtime>, slots: Vec<Slot>, delta: i64, in_redis: bool) {
    let (Some(b), false) = (rt.budgets.as_ref(), delta == 0 || slots.is_empty()) else {
        return;
    };
    match rt.shared.clone().filter(|_| in_redis) {
        None => b.adjust_local(&slots, delta),
        Some(shared) => {
            tokio::spawn(async move { shared.adjust_budgets(&slots, delta).await });
        }
    }
}

/// Reserves the request's most possible cost on its budgets; `None` when none applies.
/// Sets the request's output maximum when it names none (`changed` tells).
pub(crate) async fn reserve(
    rt: &Arc<Runtime>,
    request: &mut Value,
    body_bytes: usize,
    client: ClientApi,
    candidates: &[Arc<Target>],
    caller: Option<&CallerKey>,
    group: Option<&Group>,
) -> Result<Option<(Reservation, bool)>, RequestError> {
    let Some(budgets) = rt.budgets.as_ref() else {
        return Ok(None);
    };
    let now = now_secs();
    let mut slots = budgets.slots(caller.map(|c| c.id.as_str()), group.map(|g| g.name.as_str()), now);
    slots.extend(caller.and_then(|c| Budgets::key_slot(c, now)));
    if slots.is_empty() {
        return Ok(None);
    }
    let asked = request.get("model").and_then(Value::as_str).map(str::to_owned);
    let mut price: Option<kt_policy::pricing::Price> = None;
    for t in candidates {
        let model = t.model.as_deref().or(asked.as_deref()).unwrap_or("");
        match rt.prices.price(model) {
            Some(p) => {
                let dearest = price.get_or_insert(p);
                dearest.input = dearest.input.max(p.input);
                dearest.output = dearest.output.max(p.output).max(p.reasoning);
            }
            None if slots.iter().any(|s| s.hard) => return Err(RequestError::ModelNotPriced(model.to_owned())),
            None => {}
        }
    }
    let (output, changed) = output_maximum(request, client, budgets.reserve_output);
    let price = price.unwrap_or(kt_policy::pricing::Price {
        input: 0.0,
        cached_input: 0.0,
        output: 0.0,
        reasoning: 0.0,
    });
    let cost = (body_bytes as f64 * price.input + output as f64 * price.output) / 1000.0;
    let amount = ((cost * NANO).ceil() as u64).min(MAX_AMOUNT);
    let mut in_redis = false;
    let reserved = match rt.shared.as_deref() {
        None => budgets.reserve_local(&slots, amount),
        Some(shared) => match shared.reserve_budgets(&slots, amount).await {
            Some(r) => {
                in_redis = true;
                r
            }
            // Budgets are closed while Redis is away unless `fail_modes.budgets` says
            // otherwise: each replica's own count would let N replicas spend N times.
            None => match shared.fail_mode_set("budgets").unwrap_or(SharedFailMode::Closed) {
                SharedFailMode::Local => budgets.reserve_local(&slots, amount),
                SharedFailMode::Open => Ok(Vec::new()),
                SharedFailMode::Closed => return Err(RequestError::LimitsUnavailable),
            },
        },
    };
    let over_soft = reserved.map_err(RequestError::BudgetExceeded)?;
    let reservation = Reservation {
        rt: Arc::clone(rt),
        slots,
        amount,
        dispatched: false,
        settled: false,
        in_redis,
        over_soft,
    };
    Ok(Some((reservation, changed)))
}

/// The most output tokens the request can produce, and whether it was changed to hold
/// to that: every output-maximum field it carries is set to the one reserved (so whichever
/// the target reads holds, a null, fractional or text one included), the client API's own
/// field is set when absent (to `default` when the request names no valid maximum), and a
/// choice count `n` is made a whole number from 1 to 128 and multiplies the maximum.
fn output_maximum(request: &mut Value, client: ClientApi, default: u64) -> (u64, bool) {
    const FIELDS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];
    let own = match client {
        ClientApi::Embeddings => return (0, false),
        ClientApi::Responses => "max_output_tokens",
        ClientApi::OpenAiChat | ClientApi::AnthropicMessages => "max_tokens",
    };
    let max = FIELDS
        .iter()
        .filter_map(|k| request.get(*k).and_then(Value::as_u64))
        .max()
        .unwrap_or(default)
        .min(MAX_OUTPUT);
    let mut changed = false;
    for field in FIELDS {
        if (field == own || request.get(field).is_some()) && request.get(field).and_then(Value::as_u64) != Some(max) {
            request[field] = json!(max);
            changed = true;
        }
    }
    let mut choices = 1;
    if let Some(n) = request.get("n") {
        choices = n.as_u64().filter(|n| (1..=128).contains(n)).unwrap_or(1);
        if n.as_u64() != Some(choices) {
            request["n"] = json!(choices);
            changed = true;
        }
    }
    (max * choices, changed)
}

/// The largest output maximum a budgeted request keeps (larger ones are lowered to it).
const MAX_OUTPUT: u64 = 10_000_000;

impl Slot {
    /// The Redis key of this slot's counter.
    pub(crate) fn redis_key(&self, prefix: &str) -> String {
        format!("{prefix}:budget:{}:{}", self.counter, self.period)
    }
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
    pub(crate) fn hard(&self) -> bool {
        self.hard
    }
    pub(crate) fn ttl(&self) -> u64 {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_end_on_the_first_of_the_next() {
        // 2026-12-06T12:00:00Z → December 2026, 25.5 days left.
        let now = 1_796_558_400;
        let (p, ttl) = period_of(BudgetPeriod::Month, now);
        assert_eq!(p, 2026 * 12 + 12);
        assert_eq!(ttl, 25 * 86_400 + 43_200);
        // 2024-02-29 (leap day) → March starts the next day.
        let leap = days_from_civil(2024, 2) * 86_400 + 28 * 86_400;
        assert_eq!(year_month(leap / 86_400), (2024, 2));
        assert_eq!(period_of(BudgetPeriod::Month, leap).1, 86_400);
        assert_eq!(days_from_civil(1970, 1), 0);
        assert_eq!(period_of(BudgetPeriod::Hour, 7_200 + 5), (2, 3_595));
        assert_eq!(period_of(BudgetPeriod::Day, 86_400 * 3), (3, 86_400));
    }

    fn rule(name: &str, scope: BudgetScope, id: Option<&str>, usd: f64, mode: BudgetMode) -> BudgetRule {
        BudgetRule {
            name: name.into(),
            scope,
            id: id.map(str::to_owned),
            limit_usd: usd,
            period: BudgetPeriod::Day,
            mode,
        }
    }

    #[test]
    fn a_hard_budget_refuses_what_would_overspend_and_a_soft_one_warns() {
        let b = Budgets {
            reserve_output: 10,
            rules: vec![
                rule("org", BudgetScope::Organisation, None, 1.0, BudgetMode::Hard),
                rule("per-key", BudgetScope::CallerKey, None, 0.5, BudgetMode::Hard),
                rule(
                    "team-a-soft",
                    BudgetScope::CallerKey,
                    Some("team-a"),
                    0.1,
                    BudgetMode::Soft,
                ),
            ],
            spent: Arc::default(),
        };
        let now = 86_400 * 10;
        let a = b.slots(Some("team-a"), None, now);
        assert_eq!(
            a.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["org", "per-key", "team-a-soft"]
        );
        let half = (0.4 * NANO) as u64;
        assert_eq!(b.reserve_local(&a, half), Ok(vec!["team-a-soft".to_owned()]));
        // team-a's own 0.5 would be overspent; team-b has its own key budget.
        assert_eq!(b.reserve_local(&a, half), Err("per-key".to_owned()));
        let bb = b.slots(Some("team-b"), None, now);
        assert_eq!(bb.len(), 2);
        assert_eq!(b.reserve_local(&bb, half), Ok(vec![]));
        // The organisation has 0.2 left: a third reservation of 0.4 is refused for it.
        let c = b.slots(Some("team-c"), None, now);
        assert_eq!(b.reserve_local(&c, half), Err("org".to_owned()));
        // Giving back makes room again; a new day starts afresh.
        b.adjust_local(&bb, -(half as i64));
        assert_eq!(b.reserve_local(&c, half), Ok(vec![]));
        assert_eq!(
            b.reserve_local(&b.slots(Some("team-a"), None, now + 86_400), half),
            Ok(vec!["team-a-soft".to_owned()])
        );
    }

    #[test]
    fn a_request_without_an_output_maximum_gets_the_reserved_one() {
        let mut chat = json!({"model": "m", "messages": []});
        assert_eq!(output_maximum(&mut chat, ClientApi::OpenAiChat, 64), (64, true));
        assert_eq!(chat["max_tokens"], 64);
        let mut named = json!({"max_tokens": 9});
        assert_eq!(output_maximum(&mut named, ClientApi::OpenAiChat, 64), (9, false));
        // Every maximum field holds the reserved one, whichever the target reads.
        let mut both = json!({"max_tokens": 1, "max_completion_tokens": null});
        assert_eq!(output_maximum(&mut both, ClientApi::OpenAiChat, 64), (1, true));
        assert_eq!(
            (both["max_tokens"].clone(), both["max_completion_tokens"].clone()),
            (json!(1), json!(1))
        );
        let mut other = json!({"max_output_tokens": 5});
        assert_eq!(output_maximum(&mut other, ClientApi::AnthropicMessages, 64), (5, true));
        assert_eq!(
            (other["max_tokens"].clone(), other["max_output_tokens"].clone()),
            (json!(5), json!(5))
        );
        // n choices multiply the output; an odd n is made whole and bounded.
        let mut many = json!({"max_tokens": 10, "n": 4});
        assert_eq!(output_maximum(&mut many, ClientApi::OpenAiChat, 64), (40, false));
        let mut odd = json!({"max_tokens": 10, "n": 4.0});
        assert_eq!(output_maximum(&mut odd, ClientApi::OpenAiChat, 64), (10, true));
        assert_eq!(odd["n"], 1);
        let mut huge = json!({"max_tokens": 1_000_000_000_000u64});
        assert_eq!(output_maximum(&mut huge, ClientApi::OpenAiChat, 64).0, MAX_OUTPUT);
        let mut responses = json!({"input": "x"});
        assert_eq!(output_maximum(&mut responses, ClientApi::Responses, 64), (64, true));
        assert_eq!(responses["max_output_tokens"], 64);
        let mut emb = json!({"input": "x"});
        assert_eq!(output_maximum(&mut emb, ClientApi::Embeddings, 64), (0, false));
        // A maximum that is not a count is replaced, not trusted.
        let mut odd = json!({"max_tokens": "lots"});
        assert_eq!(output_maximum(&mut odd, ClientApi::OpenAiChat, 64), (64, true));
    }
}
