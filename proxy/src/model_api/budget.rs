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

use super::admit::Deferred;
use super::caller::CallerKey;
use super::groups::Group;
use crate::error::RequestError;
use crate::gateway::ClientApi;
use crate::ids::now_secs;
use crate::reload::Runtime;
use crate::routing::Target;

/// Nano-dollars per US dollar.
const NANO: f64 = 1e9;

/// A budget and where its counts go: a configuration's under its name, the control
/// plane's under `@b:<id>` (so renaming or resizing it keeps what it has counted).
#[derive(Debug, Clone)]
pub struct Rule {
    rule: BudgetRule,
    counter: String,
}

impl Rule {
    fn configured(r: &BudgetRule) -> Rule {
        Rule {
            rule: r.clone(),
            counter: r.name.clone(),
        }
    }

    /// A budget the control plane pushed. One this gateway cannot read fully is applied
    /// at its strictest (organisation-wide, monthly, hard) rather than not at all.
    pub(crate) fn pushed(b: &kt_api::BudgetInfo) -> Rule {
        let strict = |what: &str, value: &str| {
            tracing::warn!(
                "organisation budget {} has a {what} '{value}' this gateway does not know; it is applied at its strictest",
                b.id
            );
        };
        let scope = match b.scope.as_str() {
            "organisation" => BudgetScope::Organisation,
            "caller_key" => BudgetScope::CallerKey,
            "consumer_group" => BudgetScope::ConsumerGroup,
            "provider" => BudgetScope::Provider,
            other => {
                strict("scope", other);
                BudgetScope::Organisation
            }
        };
        let period = match b.period.as_str() {
            "hour" => BudgetPeriod::Hour,
            "day" => BudgetPeriod::Day,
            "month" => BudgetPeriod::Month,
            other => {
                strict("period", other);
                BudgetPeriod::Month
            }
        };
        let mode = match b.mode.as_str() {
            "soft" => BudgetMode::Soft,
            "hard" => BudgetMode::Hard,
            other => {
                strict("mode", other);
                BudgetMode::Hard
            }
        };
        let limit_usd = if b.limit_usd.is_finite() {
            b.limit_usd.max(0.0)
        } else {
            0.0
        };
        Rule {
            rule: BudgetRule {
                name: b.name.clone(),
                scope,
                id: b.target.clone().filter(|_| scope != BudgetScope::Organisation),
                limit_usd,
                period,
                mode,
            },
            counter: format!("@b:{}", b.id),
        }
    }
}

/// The budgets of one configuration and this process's counters.
#[derive(Debug)]
pub struct Budgets {
    reserve_output: u64,
    rules: Vec<Rule>,
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
    /// The budget and whose it is (`*`, a key id, a group name, a provider).
    counter: String,
    /// The provider a provider budget covers.
    provider: Option<String>,
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
            rules: b.limits.iter().map(Rule::configured).collect(),
            spent: Arc::default(),
        })
    }

    /// Shares `old`'s counts (budgets are named, and a count of a budget that is gone is
    /// never read): requests still running on `old` reserve and settle on the same counts.
    pub fn carry(&mut self, old: &Budgets) {
        self.spent = Arc::clone(&old.spent);
    }

    /// The budgets (the configuration's, then the organisation's `pushed` ones) a request
    /// of this caller key and group counts against at `now`, with those of every provider
    /// it may go to.
    fn slots(
        &self,
        pushed: &[Rule],
        caller: Option<&str>,
        group: Option<&str>,
        providers: &[&str],
        now: u64,
    ) -> Vec<Slot> {
        let mut out = Vec::new();
        for Rule { rule: r, counter } in self.rules.iter().chain(pushed) {
            let applies = |w: &str| r.id.as_deref().is_none_or(|id| id == w);
            let mut push = |whose: &str, provider: Option<&str>| {
                let (period, ttl) = period_of(r.period, now);
                out.push(Slot {
                    name: r.name.clone(),
                    counter: format!("{counter}:{whose}"),
                    provider: provider.map(str::to_owned),
                    period,
                    ttl,
                    limit: (r.limit_usd * NANO) as u64,
                    hard: r.mode == BudgetMode::Hard,
                });
            };
            let whose = match r.scope {
                BudgetScope::Organisation => Some("*"),
                BudgetScope::CallerKey => caller,
                BudgetScope::ConsumerGroup => group,
                BudgetScope::Provider => {
                    for p in providers.iter().filter(|p| applies(p)) {
                        push(p, Some(p));
                    }
                    continue;
                }
            };
            if let Some(whose) = whose.filter(|w| applies(w)) {
                push(whose, None);
            }
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
            provider: None,
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

    /// Reserves `amount` on every slot, unless a hard one lacks room (its index).
    fn reserve_local(&self, slots: &[Slot], amount: u64) -> Result<Vec<String>, usize> {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        let mut over_soft = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            let used = spent
                .get(&s.counter)
                .filter(|(p, _)| *p == s.period)
                .map_or(0, |(_, n)| *n);
            if used.saturating_add(amount) > s.limit {
                if s.hard {
                    return Err(i);
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
    /// Providers whose hard budget had no room: their targets are not tried.
    pub skipped_providers: Vec<String>,
    /// The output tokens reserved (all choices) when a hard budget holds the request: a
    /// stream going beyond them is ended.
    pub metered_output: Option<u64>,
}

impl Reservation {
    /// Settles to `cost` US dollars (`None`: no usage was reported; the reservation stays)
    /// once `provider` answered. The budgets of the other providers it might have gone to
    /// are given their reservation back, except those of providers an earlier attempt may
    /// have been billed by (`billed`: it timed out or failed with a 5xx), which keep it.
    pub(crate) fn settle(mut self, cost: Option<f64>, provider: &str, billed: &[String]) {
        self.settled = true;
        let (mine, others): (Vec<Slot>, Vec<Slot>) = std::mem::take(&mut self.slots)
            .into_iter()
            .partition(|s| s.provider.as_deref().is_none_or(|p| p == provider));
        let untried = others
            .into_iter()
            .filter(|s| s.provider.as_ref().is_some_and(|p| !billed.contains(p)))
            .collect();
        adjust(&self.rt, untried, -signed(self.amount), self.in_redis);
        if let Some(cost) = cost {
            let actual = ((cost.max(0.0) * NANO).ceil() as u64).min(MAX_AMOUNT);
            let delta = signed(actual) - signed(self.amount);
            adjust(&self.rt, mine, delta, self.in_redis);
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
        Some(shared) => shared.adjust_budgets(&slots, delta),
    }
}

/// The dearest price among the targets a request may go to, and the candidates without a
/// price (model, provider).
fn dearest(
    rt: &Runtime,
    request: &Value,
    candidates: &[Arc<Target>],
) -> (kt_policy::pricing::Price, Vec<(String, String)>) {
    let asked = request.get("model").and_then(Value::as_str).unwrap_or("");
    let mut price = kt_policy::pricing::Price {
        input: 0.0,
        cached_input: 0.0,
        output: 0.0,
        reasoning: 0.0,
    };
    let mut unpriced = Vec::new();
    for t in candidates {
        let model = t.model.as_deref().unwrap_or(asked);
        match rt.price(model) {
            Some(p) => {
                price.input = price.input.max(p.input);
                price.output = price.output.max(p.output).max(p.reasoning);
            }
            None => unpriced.push((model.to_owned(), t.provider.clone())),
        }
    }
    (price, unpriced)
}

/// The dearest price among the request's candidates. A hard budget cannot hold a target
/// without a price (a provider's budget only its own provider's); under soft budgets an
/// unpriced model counts nothing.
fn priced(
    rt: &Runtime,
    request: &Value,
    candidates: &[Arc<Target>],
    slots: &[Slot],
) -> Result<kt_policy::pricing::Price, RequestError> {
    let (price, unpriced) = dearest(rt, request, candidates);
    let held = |provider: &str| {
        slots
            .iter()
            .any(|s| s.hard && s.provider.as_deref().is_none_or(|p| p == provider))
    };
    match unpriced.into_iter().find(|(_, provider)| held(provider)) {
        Some((model, _)) => Err(RequestError::ModelNotPriced(model)),
        None => Ok(price),
    }
}

/// Reserves the request's most possible cost on its budgets; `None` when none applies.
/// Sets the request's output maximum when it names none (the `Rewrite` tells how). A provider
/// budget without room takes that provider's targets out of the request's candidates
/// (`skipped_providers`); only when no provider is left is the request refused.
///
/// Limit windows admission `deferred` are checked and counted in the same Redis round trip
/// as the first reservation attempt (their verdict is left in `deferred.verdict`); a
/// refusal by them reserves nothing.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn reserve(
    rt: &Arc<Runtime>,
    request: &mut Value,
    body_bytes: usize,
    client: ClientApi,
    candidates: &[Arc<Target>],
    caller: Option<&CallerKey>,
    group: Option<&Group>,
    deferred: &mut Deferred,
) -> Result<Option<(Reservation, Rewrite)>, RequestError> {
    let Some(budgets) = rt.budgets.as_ref() else {
        return Ok(None);
    };
    let pushed = rt.fleet.as_ref().map(|f| f.budgets.load_full());
    // A managed gateway keeps budgets for what the control plane may push: most of its
    // requests have none to count against, and nothing is allocated for them.
    if budgets.rules.is_empty()
        && pushed.as_ref().is_none_or(|p| p.is_empty())
        && caller.is_none_or(|c| c.budget.is_none())
    {
        return Ok(None);
    }
    let now = now_secs();
    let mut providers: Vec<&str> = Vec::new();
    for t in candidates {
        if !providers.contains(&t.provider.as_str()) {
            providers.push(&t.provider);
        }
    }
    let mut slots = budgets.slots(
        pushed.as_deref().map_or(&[], Vec::as_slice),
        caller.map(|c| c.id.as_str()),
        group.map(|g| g.name.as_str()),
        &providers,
        now,
    );
    slots.extend(caller.and_then(|c| Budgets::key_slot(c, now)));
    if slots.is_empty() {
        return Ok(None);
    }
    let price = priced(rt, request, candidates, &slots)?;
    let (output, rewrite) = output_maximum(request, client, budgets.reserve_output);
    let cost = (body_bytes as f64 * price.input + output as f64 * price.output) / 1000.0;
    let amount = ((cost * NANO).ceil() as u64).min(MAX_AMOUNT);
    let Some(Reserved {
        over_soft,
        in_redis,
        skipped_providers,
    }) = reserve_in_turn(rt, budgets, deferred, &mut slots, &mut providers, amount).await?
    else {
        return Ok(None);
    };
    let metered_output = (amount > 0 && slots.iter().any(|s| s.hard)).then_some(output);
    let reservation = Reservation {
        rt: Arc::clone(rt),
        slots,
        amount,
        dispatched: false,
        settled: false,
        in_redis,
        over_soft,
        skipped_providers,
        metered_output,
    };
    Ok(Some((reservation, rewrite)))
}

/// What `reserve_in_turn` reserved.
struct Reserved {
    /// The soft budgets the reservation went past.
    over_soft: Vec<String>,
    /// Whether it is held in Redis (else in this gateway's own counters).
    in_redis: bool,
    /// The providers whose own budget had no room.
    skipped_providers: Vec<String>,
}

/// Reserves `amount` on every slot. A provider budget without room takes that provider out
/// (its slots and `providers`) while another is left; any other refusal is the request's.
/// `None` when the deferred windows refused: nothing was reserved.
async fn reserve_in_turn(
    rt: &Arc<Runtime>,
    budgets: &Budgets,
    deferred: &mut Deferred,
    slots: &mut Vec<Slot>,
    providers: &mut Vec<&str>,
    amount: u64,
) -> Result<Option<Reserved>, RequestError> {
    let mut skipped_providers = Vec::new();
    loop {
        let (reserved, in_redis) = match with_limits(rt, deferred, slots, amount).await {
            Some(Ok(r)) => (r, true),
            Some(Err(())) => return Ok(None),
            None => reserve_once(rt, budgets, slots, amount).await?,
        };
        let refused = match reserved {
            Ok(over_soft) => {
                return Ok(Some(Reserved {
                    over_soft,
                    in_redis,
                    skipped_providers,
                }));
            }
            Err(i) => slots.get(i).cloned(),
        };
        let Some(refused) = refused else {
            return Err(RequestError::BudgetExceeded {
                name: String::new(),
                reset: 1,
            });
        };
        // A provider's ceiling: the request may still go to the others.
        match refused.provider {
            Some(p) if providers.len() > 1 => {
                providers.retain(|x| *x != p);
                slots.retain(|s| s.provider.as_deref() != Some(p.as_str()));
                skipped_providers.push(p);
            }
            _ => {
                return Err(RequestError::BudgetExceeded {
                    name: refused.name,
                    reset: refused.ttl,
                });
            }
        }
    }
}

/// The reservation made in the round trip that checks the `deferred` windows, when there
/// are any and Redis answers (`Err` when the windows refused); `None` otherwise, the
/// windows left for the caller.
async fn with_limits(
    rt: &Runtime,
    deferred: &mut Deferred,
    slots: &[Slot],
    amount: u64,
) -> Option<Result<Result<Vec<String>, usize>, ()>> {
    let shared = rt.shared.as_ref()?;
    if deferred.checks.is_empty() {
        return None;
    }
    let (verdicts, reserved) = shared
        .check_and_reserve(&deferred.checks, now_secs(), slots, amount)
        .await?;
    deferred.checks.clear();
    deferred.verdict = Some(crate::limits::decisive(verdicts));
    Some(reserved.ok_or(()))
}

/// One reservation attempt on `slots`: in Redis when `shared_state` is set (else, while
/// Redis is away, as `fail_modes.budgets` says), else in this process; and whether it was
/// made in Redis.
async fn reserve_once(
    rt: &Runtime,
    budgets: &Budgets,
    slots: &[Slot],
    amount: u64,
) -> Result<(Result<Vec<String>, usize>, bool), RequestError> {
    let Some(shared) = rt.shared.as_ref() else {
        return Ok((budgets.reserve_local(slots, amount), false));
    };
    if let Some(r) = shared.reserve_budgets(slots, amount).await {
        return Ok((r, true));
    }
    // Budgets are closed while Redis is away unless `fail_modes.budgets` says otherwise:
    // each replica's own count would let N replicas spend N times.
    match shared.fail_mode_set("budgets").unwrap_or(SharedFailMode::Closed) {
        SharedFailMode::Local => Ok((budgets.reserve_local(slots, amount), false)),
        SharedFailMode::Open => Ok((Ok(Vec::new()), false)),
        SharedFailMode::Closed => Err(RequestError::LimitsUnavailable),
    }
}

/// The most output tokens the request can produce, and whether it was changed to hold
/// to that: every output-maximum field it carries is set to the one reserved (so whichever
/// the target reads holds, a null, fractional or text one included), the client API's own
/// field is set when absent (to `default` when the request names no valid maximum), and a
/// choice count `n` is made a whole number from 1 to 128 and multiplies the maximum.
fn output_maximum(request: &mut Value, client: ClientApi, default: u64) -> (u64, Rewrite) {
    const FIELDS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];
    let own = match client {
        ClientApi::Embeddings => return (0, Rewrite::None),
        ClientApi::Responses => "max_output_tokens",
        ClientApi::OpenAiChat | ClientApi::AnthropicMessages => "max_tokens",
    };
    let max = FIELDS
        .iter()
        .filter_map(|k| request.get(*k).and_then(Value::as_u64))
        .max()
        .unwrap_or(default)
        .min(MAX_OUTPUT);
    let mut rewrite = Rewrite::None;
    for field in FIELDS {
        let present = request.get(field).is_some();
        if (field == own || present) && request.get(field).and_then(Value::as_u64) != Some(max) {
            request[field] = json!(max);
            rewrite = match rewrite {
                Rewrite::None if !present => Rewrite::Added(field, max),
                _ => Rewrite::Other,
            };
        }
    }
    let mut choices = 1;
    if let Some(n) = request.get("n") {
        choices = n.as_u64().filter(|n| (1..=128).contains(n)).unwrap_or(1);
        if n.as_u64() != Some(choices) {
            request["n"] = json!(choices);
            rewrite = Rewrite::Other;
        }
    }
    (max * choices, rewrite)
}

/// How holding a request to its reserved output maximum changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rewrite {
    None,
    /// Only a top-level field the request lacked was added (`field: value`): the client's
    /// bytes can be sent with it spliced in, without serialising the request again.
    Added(&'static str, u64),
    /// Anything else: the request is serialised again.
    Other,
}

impl Rewrite {
    pub(crate) fn changed(self) -> bool {
        self != Rewrite::None
    }

    /// The client's JSON object `body` with the added field spliced in after its opening
    /// brace (the request had no such key, and repeated keys are refused before this, so
    /// the object stays free of duplicates); `None` when there is nothing to splice or the
    /// body is not an object.
    pub(crate) fn splice(self, body: &[u8]) -> Option<Vec<u8>> {
        let Rewrite::Added(field, value) = self else {
            return None;
        };
        let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
        if body[open] != b'{' {
            return None;
        }
        let rest = &body[open + 1..];
        let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
        let member = format!("\"{field}\":{value}{}", if empty { "" } else { "," });
        let mut out = Vec::with_capacity(body.len() + member.len());
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(rest);
        Some(out)
    }
}

/// The largest output maximum a budgeted request keeps (larger ones are lowered to it).
const MAX_OUTPUT: u64 = 10_000_000;

impl Slot {
    /// A slot of `limit` nano-dollars for tests of the Redis scripts.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, limit: u64, hard: bool) -> Slot {
        Slot {
            name: name.into(),
            counter: format!("{name}:*"),
            provider: None,
            period: 1,
            ttl: 3600,
            limit,
            hard,
        }
    }

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
            rules: [
                rule("org", BudgetScope::Organisation, None, 1.0, BudgetMode::Hard),
                rule("per-key", BudgetScope::CallerKey, None, 0.5, BudgetMode::Hard),
                rule(
                    "team-a-soft",
                    BudgetScope::CallerKey,
                    Some("team-a"),
                    0.1,
                    BudgetMode::Soft,
                ),
            ]
            .iter()
            .map(Rule::configured)
            .collect(),
            spent: Arc::default(),
        };
        let now = 86_400 * 10;
        let a = b.slots(&[], Some("team-a"), None, &[], now);
        assert_eq!(
            a.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["org", "per-key", "team-a-soft"]
        );
        let half = (0.4 * NANO) as u64;
        assert_eq!(b.reserve_local(&a, half), Ok(vec!["team-a-soft".to_owned()]));
        // team-a's own 0.5 would be overspent; team-b has its own key budget.
        assert_eq!(
            b.reserve_local(&a, half).map_err(|i| a[i].name.as_str()),
            Err("per-key")
        );
        let bb = b.slots(&[], Some("team-b"), None, &[], now);
        assert_eq!(bb.len(), 2);
        assert_eq!(b.reserve_local(&bb, half), Ok(vec![]));
        // The organisation has 0.2 left: a third reservation of 0.4 is refused for it.
        let c = b.slots(&[], Some("team-c"), None, &[], now);
        assert_eq!(b.reserve_local(&c, half).map_err(|i| c[i].name.as_str()), Err("org"));
        // Giving back makes room again; a new day starts afresh.
        b.adjust_local(&bb, -(half as i64));
        assert_eq!(b.reserve_local(&c, half), Ok(vec![]));
        assert_eq!(
            b.reserve_local(&b.slots(&[], Some("team-a"), None, &[], now + 86_400), half),
            Ok(vec!["team-a-soft".to_owned()])
        );
    }

    #[test]
    fn pushed_and_provider_budgets_count_apart_from_configured_ones() {
        let b = Budgets {
            reserve_output: 10,
            rules: vec![Rule::configured(&rule(
                "org",
                BudgetScope::Organisation,
                None,
                1.0,
                BudgetMode::Hard,
            ))],
            spent: Arc::default(),
        };
        let info = |id: &str, name: &str, scope: &str, target: Option<&str>, period: &str| kt_api::BudgetInfo {
            id: id.into(),
            name: name.into(),
            scope: scope.into(),
            target: target.map(str::to_owned),
            limit_usd: 0.5,
            period: period.into(),
            mode: "hard".into(),
            created_at: 0,
            updated_at: 0,
        };
        let pushed = [
            // Same name as the configured one: counted apart, by the budget's id.
            Rule::pushed(&info("bud_1", "org", "organisation", None, "day")),
            Rule::pushed(&info("bud_2", "openai-cap", "provider", Some("openai"), "day")),
            Rule::pushed(&info("bud_3", "each-provider", "provider", None, "hour")),
            // Unreadable: applied at its strictest, organisation-wide and monthly.
            Rule::pushed(&info("bud_4", "odd", "planet", Some("mars"), "fortnight")),
        ];
        let now = 86_400 * 10;
        let slots = b.slots(&pushed, None, None, &["openai", "anthropic"], now);
        let got: Vec<(&str, &str, Option<&str>)> = slots
            .iter()
            .map(|s| (s.name.as_str(), s.counter.as_str(), s.provider.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("org", "org:*", None),
                ("org", "@b:bud_1:*", None),
                ("openai-cap", "@b:bud_2:openai", Some("openai")),
                ("each-provider", "@b:bud_3:openai", Some("openai")),
                ("each-provider", "@b:bud_3:anthropic", Some("anthropic")),
                ("odd", "@b:bud_4:*", None),
            ]
        );
        assert_eq!(slots[5].period, period_of(BudgetPeriod::Month, now).0);
        // The provider budget refuses once its provider has had its half dollar.
        let third = (0.3 * NANO) as u64;
        assert!(b.reserve_local(&slots[2..3], third).is_ok());
        assert_eq!(b.reserve_local(&slots[2..3], third), Err(0));
    }

    fn om(request: &mut Value, client: ClientApi, default: u64) -> (u64, bool) {
        let (max, rewrite) = output_maximum(request, client, default);
        (max, rewrite.changed())
    }

    #[test]
    fn an_added_maximum_is_spliced_into_the_clients_bytes() {
        for text in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            " \n {\"model\": \"m\"}",
            "{}",
            "{ }",
        ] {
            let mut v: Value = serde_json::from_str(text).expect("json");
            let (_, rewrite) = output_maximum(&mut v, ClientApi::OpenAiChat, 64);
            assert_eq!(rewrite, Rewrite::Added("max_tokens", 64), "{text}");
            let spliced = rewrite.splice(text.as_bytes()).expect("spliced");
            let back: Value = serde_json::from_slice(&spliced).expect("valid JSON");
            assert_eq!(back, v, "{text}");
        }
        // Anything but one added field is serialised again.
        let mut other_named = json!({"max_completion_tokens": 5});
        assert_eq!(
            output_maximum(&mut other_named, ClientApi::OpenAiChat, 64).1,
            Rewrite::Added("max_tokens", 5)
        );
        let mut both = json!({"max_completion_tokens": null});
        assert_eq!(output_maximum(&mut both, ClientApi::OpenAiChat, 64).1, Rewrite::Other);
        let mut n = json!({"n": 0});
        assert_eq!(output_maximum(&mut n, ClientApi::OpenAiChat, 64).1, Rewrite::Other);
        let mut same = json!({"max_tokens": 64});
        assert_eq!(output_maximum(&mut same, ClientApi::OpenAiChat, 64).1, Rewrite::None);
        assert_eq!(Rewrite::Other.splice(b"{}"), None);
        assert_eq!(Rewrite::Added("max_tokens", 1).splice(b"[1]"), None);
    }

    #[test]
    fn a_request_without_an_output_maximum_gets_the_reserved_one() {
        let mut chat = json!({"model": "m", "messages": []});
        assert_eq!(om(&mut chat, ClientApi::OpenAiChat, 64), (64, true));
        assert_eq!(chat["max_tokens"], 64);
        let mut named = json!({"max_tokens": 9});
        assert_eq!(om(&mut named, ClientApi::OpenAiChat, 64), (9, false));
        // Every maximum field holds the reserved one, whichever the target reads.
        let mut both = json!({"max_tokens": 1, "max_completion_tokens": null});
        assert_eq!(om(&mut both, ClientApi::OpenAiChat, 64), (1, true));
        assert_eq!(
            (both["max_tokens"].clone(), both["max_completion_tokens"].clone()),
            (json!(1), json!(1))
        );
        let mut other = json!({"max_output_tokens": 5});
        assert_eq!(om(&mut other, ClientApi::AnthropicMessages, 64), (5, true));
        assert_eq!(
            (other["max_tokens"].clone(), other["max_output_tokens"].clone()),
            (json!(5), json!(5))
        );
        // n choices multiply the output; an odd n is made whole and bounded.
        let mut many = json!({"max_tokens": 10, "n": 4});
        assert_eq!(om(&mut many, ClientApi::OpenAiChat, 64), (40, false));
        let mut odd = json!({"max_tokens": 10, "n": 4.0});
        assert_eq!(om(&mut odd, ClientApi::OpenAiChat, 64), (10, true));
        assert_eq!(odd["n"], 1);
        let mut huge = json!({"max_tokens": 1_000_000_000_000u64});
        assert_eq!(om(&mut huge, ClientApi::OpenAiChat, 64).0, MAX_OUTPUT);
        let mut responses = json!({"input": "x"});
        assert_eq!(om(&mut responses, ClientApi::Responses, 64), (64, true));
        assert_eq!(responses["max_output_tokens"], 64);
        let mut emb = json!({"input": "x"});
        assert_eq!(om(&mut emb, ClientApi::Embeddings, 64), (0, false));
        // A maximum that is not a count is replaced, not trusted.
        let mut odd = json!({"max_tokens": "lots"});
        assert_eq!(om(&mut odd, ClientApi::OpenAiChat, 64), (64, true));
    }
}
