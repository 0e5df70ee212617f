//! `shared_state`: limit windows counted in Redis, so every gateway replica pointed at the
//! same Redis enforces one count. A request's windows are checked and counted in one round
//! trip by one script, atomically: either every request window has room and each counts
//! the request, or none counts it. Token usage is charged after the answer, off the
//! request's path. Window boundaries are epoch-aligned, as in memory, so replicas with
//! synchronised clocks agree on them.
//!
//! When Redis cannot be reached (or answers later than `timeout_ms`), each limit follows its
//! fail mode: `local` counts in this process, `open` lets the request through, `closed`
//! refuses it with 503. After a failure Redis is left alone for a second, then tried again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kt_policy::config::{SharedFailMode, SharedState};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::ids::now_secs;
use crate::leases::Leases;
use crate::limits::{Check, Verdict};
use crate::model_api::budget::Slot;
use crate::routing::EnvLookup;

/// How long Redis is left alone after a failed round trip.
const BACKOFF: Duration = Duration::from_secs(1);
/// How long writing a cached answer to Redis may take (in the background).
const CACHE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most nano-dollars ($10,000) one budget lease holds (and well inside the integers a
/// Redis script's numbers keep exactly).
const MAX_BUDGET_LEASE: u64 = 10_000_000_000_000;

/// KEYS: one counter per window. ARGV: per key, its limit and, for a request window, the
/// window's length in seconds (0 for a token window, which is read and not counted).
/// Returns 1 or 0 (all windows had room), then each window's count before this request.
const CHECK: &str = r"
local used = {}
local ok = 1
for i = 1, #KEYS do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used[i] >= tonumber(ARGV[2 * i - 1]) then ok = 0 end
end
if ok == 1 then
  for i = 1, #KEYS do
    local ttl = tonumber(ARGV[2 * i])
    if ttl > 0 and redis.call('INCR', KEYS[i]) == 1 then
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
end
table.insert(used, 1, ok)
return used
";

/// Checks a request's windows and reserves its budgets in one round trip, granting leases
/// (see `crate::leases`). KEYS: the request's limit windows (maybe none), then its budget
/// counters (maybe none). ARGV[1]: how many windows; per window its limit, its length (0
/// for a token window) and the units it may count at once (the request and its lease; 0
/// when the request was counted from this replica's lease, so the window is neither checked
/// nor counted); then the nano-dollars to reserve, the most nano-dollars a budget may lease
/// besides, and per budget the part of the reservation to count here (the rest came out of
/// this replica's lease), its limit, 1 for a hard one and the seconds its period has left.
///
/// The windows are checked as CHECK does; when all have room each counts the request plus
/// a lease of at most a sixteenth of its room. Only then are the budgets looked at: a hard
/// one the reservation would take over its limit refuses the request and nothing is
/// reserved; otherwise every budget counts the reservation plus a lease of at most a
/// sixteenth of the room left after it (none smaller than the reservation, none on a
/// budget the request goes over). Returns 1 or 0 and each window's count before this
/// request; when the windows had room, then 1 or 0 (reserved or refused by a hard budget),
/// per budget 1 when the reservation goes over its limit, per window the units counted and
/// per budget the nano-dollars leased.
///
/// The last KEY is the call's ledger (empty: none): what the call added to each counter is
/// noted there for a minute, so that RELEASE can take it off again if the answer never
/// arrives. Calls that may lease keep one; the others add at most the request itself.
const CHECK_RESERVE: &str = r"
local n = tonumber(ARGV[1])
local m = #KEYS - n - 1
local ledger = KEYS[#KEYS]
if ledger == '' then ledger = nil end
local out = {1}
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  out[i + 1] = used
  if ARGV[3 * i + 1] ~= '0' and used >= tonumber(ARGV[3 * i - 1]) then out[1] = 0 end
end
if out[1] == 0 then return out end
local grants = {}
for i = 1, n do
  local ttl = tonumber(ARGV[3 * i])
  grants[i] = 0
  if ttl > 0 and ARGV[3 * i + 1] ~= '0' then
    local room = tonumber(ARGV[3 * i - 1]) - out[i + 1]
    local grant = math.max(1, math.min(tonumber(ARGV[3 * i + 1]), math.floor(room / 16)))
    if redis.call('INCRBY', KEYS[i], grant) == grant then
      redis.call('EXPIRE', KEYS[i], ttl)
    end
    if ledger then redis.call('HINCRBY', ledger, KEYS[i], grant) end
    grants[i] = grant
  end
end
local base = 3 * n + 2
local amount = tonumber(ARGV[base])
local want = tonumber(ARGV[base + 1])
local ok = 1
local flags = {}
local extras = {}
for j = 1, m do
  local used = tonumber(redis.call('GET', KEYS[n + j]) or '0')
  local here = tonumber(ARGV[base + 4 * j - 2])
  local limit = tonumber(ARGV[base + 4 * j - 1])
  flags[j] = 0
  extras[j] = 0
  if used + here > limit then
    flags[j] = 1
    if ARGV[base + 4 * j] == '1' then ok = 0 end
  elseif amount > 0 then
    local extra = math.min(want, math.floor((limit - used - here) / 16))
    if extra >= amount then extras[j] = extra end
  end
end
out[n + 2] = ok
for j = 1, m do
  out[n + 2 + j] = flags[j]
  if ok == 1 then
    local here = ARGV[base + 4 * j - 2]
    if redis.call('INCRBY', KEYS[n + j], here) == tonumber(here) then
      redis.call('EXPIRE', KEYS[n + j], ARGV[base + 4 * j + 1])
    end
    local added = tonumber(here)
    if extras[j] > 0 then
      redis.call('INCRBY', KEYS[n + j], string.format('%.0f', extras[j]))
      added = added + extras[j]
    end
    if ledger then redis.call('HINCRBY', ledger, KEYS[n + j], string.format('%.0f', added)) end
  else
    extras[j] = 0
  end
end
if ledger then redis.call('EXPIRE', ledger, 60) end
for i = 1, n do out[n + 2 + m + i] = grants[i] end
for j = 1, m do out[2 * n + 2 + m + j] = extras[j] end
return out
";

/// KEYS: ledgers of CHECK_RESERVE calls whose answers were lost (a timeout): what each
/// added to its counters is taken off again (a counter never goes below 0, one that has
/// expired is left alone) and the ledger deleted, so a call answered too late leaks
/// nothing. Idempotent: a ledger is undone once.
const RELEASE: &str = r"
for i = 1, #KEYS do
  local entries = redis.call('HGETALL', KEYS[i])
  redis.call('DEL', KEYS[i])
  for j = 1, #entries, 2 do
    local key = entries[j]
    if redis.call('EXISTS', key) == 1 then
      if redis.call('DECRBY', key, entries[j + 1]) < 0 then
        redis.call('SET', key, 0, 'KEEPTTL')
      end
    end
  end
end
return 1
";

/// KEYS: token windows. ARGV[1]: tokens; ARGV[1 + i]: window i's length in seconds.
const CHARGE: &str = r"
for i = 1, #KEYS do
  if redis.call('INCRBY', KEYS[i], ARGV[1]) == tonumber(ARGV[1]) then
    redis.call('EXPIRE', KEYS[i], ARGV[1 + i])
  end
end
return 1
";

/// KEYS: budget counters. ARGV[i]: nano-dollars to add to KEYS[i] (negative: give back);
/// a counter never goes below 0 and one whose period ended is left alone.
const ADJUST: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('INCRBY', KEYS[i], ARGV[i]) < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    end
  end
end
return 1
";

/// KEYS[1]: a cached answer. ARGV[1]: the most bytes wanted. Returns it, or false when it
/// is absent or larger (an oversized value is never sent).
const CACHE_GET: &str = r"
if redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[1]) then return false end
return redis.call('GET', KEYS[1])
";

/// KEYS[1]: a cached answer. ARGV[1]: its bytes; ARGV[2]: seconds to keep it.
const CACHE_SET: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

/// The Redis behind `shared_state`, connected on first use.
pub struct Shared {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    /// The response cache's own connection.
    cache_conn: tokio::sync::OnceCell<ConnectionManager>,
    /// Until when the response cache leaves Redis alone after a failure.
    cache_retry_at: Mutex<Option<Instant>>,
    /// Whether Redis is away (the request path reads only this while it is not).
    down: AtomicBool,
    /// Until when no round trip is tried, while `down`.
    retry_at: Mutex<Option<Instant>>,
    prefix: String,
    timeout: Duration,
    fail_mode: SharedFailMode,
    fail_modes: HashMap<String, SharedFailMode>,
    check: redis::Script,
    charge: redis::Script,
    adjust: redis::Script,
    check_reserve: redis::Script,
    /// Budget settlements waiting to be written: counter → nano-dollars to add.
    settlements: Mutex<HashMap<String, i64>>,
    /// Whether a task is writing them.
    settling: AtomicBool,
    /// Units of windows and budgets taken from Redis ahead of use.
    leases: Leases,
    /// Requests' worth a lease may hold (`shared_state.lease_requests`; 1: no leases).
    lease_requests: u64,
    /// Whether a task gives idle leases back.
    sweeping: AtomicBool,
    /// Ledgers of round trips whose answers were lost, to undo (and when each was made).
    releases: Mutex<Vec<(String, Instant)>>,
    release: redis::Script,
    /// Set once the gateway shuts down: no more leases are taken.
    closed: AtomicBool,
    /// Whether a timer will start the writer again (Redis away).
    retry_armed: AtomicBool,
    cache_get: redis::Script,
    cache_set: redis::Script,
}

/// One request's counters and what it reserves, as a round trip names them.
struct Counters<'a> {
    checks: &'a [Check],
    /// The Redis key of each check's window.
    windows: Vec<String>,
    slots: &'a [Slot],
    /// The Redis key of each slot's counter.
    budgets: Vec<String>,
    amount: u64,
    now: u64,
}

/// A reservation's outcome from the script's flags (1: the reservation goes over that
/// budget): the soft budgets gone over, or the index of the hard one that refused.
fn outcome(slots: &[Slot], over: &[u64], reserved: bool) -> Result<Vec<String>, usize> {
    let mut over = slots.iter().zip(over).enumerate().filter(|(_, (_, o))| **o == 1);
    if reserved {
        Ok(over.map(|(_, (s, _))| s.name.clone()).collect())
    } else {
        Err(over.find(|(_, (s, _))| s.hard()).map_or(usize::MAX, |(i, _)| i))
    }
}

/// `n` as a signed count (capped).
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Drop for Shared {
    /// A replaced configuration's leases (and settlements not yet written) go back to
    /// Redis in the background, on the connection it opened.
    fn drop(&mut self) {
        let now = now_secs();
        let mut back = std::mem::take(self.settlements.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (key, units) in self.leases.drain(now) {
            let d = back.entry(key).or_insert(0);
            *d = d.saturating_sub(signed(units));
        }
        back.retain(|_, d| *d != 0);
        let ledgers: Vec<String> = std::mem::take(self.releases.get_mut().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let (Ok(handle), Some(conn), false) = (
            tokio::runtime::Handle::try_current(),
            self.conn.get().cloned(),
            back.is_empty() && ledgers.is_empty(),
        ) else {
            return;
        };
        let timeout = self.timeout.max(Duration::from_secs(1));
        handle.spawn(async move {
            let mut conn = conn;
            let (adjust, release) = (redis::Script::new(ADJUST), redis::Script::new(RELEASE));
            let mut call = adjust.prepare_invoke();
            for (key, delta) in &back {
                call.key(key);
                call.arg(delta);
            }
            let mut undo = release.prepare_invoke();
            for key in &ledgers {
                undo.key(key);
            }
            let written = async {
                if !back.is_empty() {
                    call.invoke_async::<i64>(&mut conn).await?;
                }
                if !ledgers.is_empty() {
                    undo.invoke_async::<i64>(&mut conn).await?;
                }
                Ok::<(), redis::RedisError>(())
            };
            if !matches!(tokio::time::timeout(timeout, written).await, Ok(Ok(()))) {
                tracing::warn!("shared_state: leases of a replaced configuration could not be given back to Redis; they stay counted until their windows and periods end");
            }
        });
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What the shared counters said about a request's windows.
pub enum Outcome {
    /// Each window's verdict, in order.
    Counted(Vec<Verdict>),
    /// Redis could not answer: each limit's fail mode applies.
    Unavailable,
}

impl Shared {
    /// The backend `config` asks for; nothing is connected yet.
    pub fn of(config: &SharedState, env: EnvLookup<'_>) -> Result<Shared, String> {
        let url = match &config.redis_url {
            Some(u) => u.clone(),
            None => env("KEEPTRUSTS_REDIS_URL").ok_or_else(|| {
                "shared_state has no redis_url and KEEPTRUSTS_REDIS_URL is not set (export KEEPTRUSTS_REDIS_URL=redis://host:6379)"
                    .to_owned()
            })?,
        };
        let client = redis::Client::open(url.as_str()).map_err(|e| format!("shared_state redis URL: {e}"))?;
        Ok(Shared {
            client,
            conn: tokio::sync::OnceCell::new(),
            cache_conn: tokio::sync::OnceCell::new(),
            cache_retry_at: Mutex::new(None),
            down: AtomicBool::new(false),
            retry_at: Mutex::new(None),
            prefix: config.key_prefix.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            fail_mode: config.fail_mode,
            fail_modes: config.fail_modes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            check: redis::Script::new(CHECK),
            charge: redis::Script::new(CHARGE),
            adjust: redis::Script::new(ADJUST),
            check_reserve: redis::Script::new(CHECK_RESERVE),
            settlements: Mutex::new(HashMap::new()),
            settling: AtomicBool::new(false),
            leases: Leases::default(),
            lease_requests: config.lease_requests.max(1),
            sweeping: AtomicBool::new(false),
            releases: Mutex::new(Vec::new()),
            release: redis::Script::new(RELEASE),
            closed: AtomicBool::new(false),
            retry_armed: AtomicBool::new(false),
            cache_get: redis::Script::new(CACHE_GET),
            cache_set: redis::Script::new(CACHE_SET),
        })
    }

    /// The fail mode `fail_modes` sets for `scope`, if any.
    pub fn fail_mode_set(&self, scope: &str) -> Option<SharedFailMode> {
        self.fail_modes.get(scope).copied()
    }

    /// The fail mode of the limit named `scope`.
    pub fn fail_mode(&self, scope: &str) -> SharedFailMode {
        self.fail_modes.get(scope).copied().unwrap_or(self.fail_mode)
    }

    /// The Redis key of `check`'s counter in the window of Unix time `now`.
    fn key(&self, check: &Check, now: u64) -> String {
        let w = check.window.window;
        format!("{}:{}:{}:{}:{}", self.prefix, check.scope, w, now / w, check.key)
    }

    /// Checks and counts `checks` in one round trip.
    pub async fn check(&self, checks: &[Check], now: u64) -> Outcome {
        let mut call = self.check.prepare_invoke();
        for c in checks {
            call.key(self.key(c, now));
            call.arg(c.window.max);
            call.arg(if c.tokens { 0 } else { c.window.window });
        }
        let Some(v) = self.run::<Vec<u64>>(call).await else {
            return Outcome::Unavailable;
        };
        if v.len() != checks.len() + 1 {
            self.failed::<()>("the limit script answered with the wrong number of counts");
            return Outcome::Unavailable;
        }
        let counted = v[0] == 1;
        Outcome::Counted(
            checks
                .iter()
                .zip(&v[1..])
                .map(|(c, used)| c.verdict_for(*used, counted, now))
                .collect(),
        )
    }

    /// Adds `tokens` to each token window of `checks`; false when Redis could not take them.
    pub async fn charge(&self, checks: &[Check], tokens: u64, now: u64) -> bool {
        let mut call = self.charge.prepare_invoke();
        // Redis counts in signed 64 bits: an absurd reported count is capped, not an error.
        call.arg(tokens.min(1 << 48));
        for c in checks {
            call.key(self.key(c, now));
            call.arg(c.window.window);
        }
        self.run::<i64>(call).await.is_some()
    }

    /// Reserves `amount` nano-dollars on every budget slot: from this replica's leases
    /// when they hold enough, else in one round trip (which may lease more). The soft
    /// budgets it goes over, or the index of the hard one that refused; `None` while Redis
    /// is away.
    pub async fn reserve_budgets(self: &Arc<Self>, slots: &[Slot], amount: u64) -> Option<Result<Vec<String>, usize>> {
        self.check_and_reserve(&[], now_secs(), slots, amount)
            .await
            .and_then(|(_, reserved)| reserved)
    }

    /// What this replica's leases hold towards each want (key, units, the counter's limit
    /// now), taken out of them; the round trip counts the rest.
    fn take_leased<'k>(&self, wants: impl Iterator<Item = (&'k String, u64, u64)>, now: u64) -> Vec<u64> {
        wants
            .map(|(k, units, limit)| match self.lease_requests > 1 {
                true => self.leases.take_up_to(k, units, limit, now),
                false => 0,
            })
            .collect()
    }

    /// Puts back units taken from leases for a request that was not counted (to Redis
    /// when the lease has gone meanwhile: the units are counted there).
    fn give_back_leased(self: &Arc<Self>, keys: &[String], taken: &[u64], now: u64) {
        let rest: Vec<(String, i64)> = keys
            .iter()
            .zip(taken)
            .filter(|(_, t)| **t > 0)
            .map(|(k, t)| (k.clone(), self.leases.absorb(k, -signed(*t), now)))
            .collect();
        self.queue(rest);
    }

    /// The most nano-dollars a budget may lease beside a reservation of `amount`.
    fn budget_lease(&self, amount: u64) -> u64 {
        amount
            .saturating_mul(self.lease_requests.saturating_sub(1))
            .min(MAX_BUDGET_LEASE)
    }

    /// Keeps a lease a script granted, giving back what a lease under an older limit held.
    fn keep_lease(self: &Arc<Self>, key: String, units: u64, counted: u64, until: u64, limit: u64) {
        let stale = self.leases.grant(key.clone(), units, counted, until, limit);
        if stale > 0 {
            self.queue([(key, -signed(stale))]);
        }
        self.sweep_later();
    }

    /// Checks and counts `checks` and, when every window had room, reserves `amount` on
    /// `slots`: from this replica's leases when they hold enough for every window and
    /// budget, else in one round trip. The round trip spends what the leases hold first and
    /// may lease more, but only for requests that can be served from leases later: none
    /// with a token window (its tokens are in Redis) and none that reserves nothing. The
    /// windows' verdicts, and the reservation's outcome (the soft budgets gone over, or
    /// the index of the hard one that refused; `None` when the windows refused); `None`
    /// while Redis is away.
    pub async fn check_and_reserve(
        self: &Arc<Self>,
        checks: &[Check],
        now: u64,
        slots: &[Slot],
        amount: u64,
    ) -> Option<(Vec<Verdict>, Option<Result<Vec<String>, usize>>)> {
        let c = Counters {
            windows: checks.iter().map(|c| self.key(c, now)).collect(),
            budgets: slots.iter().map(|s| s.redis_key(&self.prefix)).collect(),
            checks,
            slots,
            amount,
            now,
        };
        let leasable = self.lease_requests > 1
            && !self.closed.load(Ordering::Acquire)
            && !checks.iter().any(|c| c.tokens)
            && (slots.is_empty() || amount > 0);
        if leasable && let Some(verdicts) = self.served_from_leases(&c) {
            return Some((verdicts, Some(Ok(Vec::new()))));
        }
        // What the leases hold goes first: a window already counted here is neither
        // checked nor counted again, a budget counts only the rest of the reservation.
        let from_windows = self.take_leased(
            checks
                .iter()
                .zip(&c.windows)
                .map(|(ch, k)| (k, u64::from(!ch.tokens), ch.window.max)),
            now,
        );
        let from_budgets = self.take_leased(slots.iter().zip(&c.budgets).map(|(s, k)| (k, amount, s.limit())), now);
        let ledger = match leasable {
            true => format!("{}:grant:{:016x}", self.prefix, crate::ids::rand_u64()),
            false => String::new(),
        };
        let call = self.invocation(&c, &from_windows, &from_budgets, leasable, &ledger);
        let (n, m) = (checks.len(), slots.len());
        let v: Vec<u64> = match self.run::<Vec<u64>>(call).await {
            Some(v) if answer_is_whole(&v, n, m) => v,
            answer => {
                self.give_back_leased(&c.windows, &from_windows, now);
                self.give_back_leased(&c.budgets, &from_budgets, now);
                // The script may have run (an answer too late): undo what it counted.
                if leasable {
                    self.release_later(ledger);
                }
                return match answer {
                    None => None,
                    Some(_) => self.failed("the limit and budget script answered with the wrong number of values"),
                };
            }
        };
        let counted = v[0] == 1;
        if !counted {
            self.give_back_leased(&c.windows, &from_windows, now);
        }
        if !counted || v[n + 1] != 1 {
            self.give_back_leased(&c.budgets, &from_budgets, now);
        }
        let verdicts = window_verdicts(checks, &v[1..=n], &from_windows, counted, now);
        if !counted {
            return Some((verdicts, None));
        }
        let reserved = outcome(slots, &v[n + 2..n + 2 + m], v[n + 1] == 1);
        self.keep_grants(c, &v);
        Some((verdicts, Some(reserved)))
    }

    /// The verdicts of a request served wholly from this replica's leases, when they hold
    /// enough for every window and budget (then spent).
    fn served_from_leases(&self, c: &Counters<'_>) -> Option<Vec<Verdict>> {
        let wants: Vec<(&str, u64, u64)> = c
            .checks
            .iter()
            .zip(&c.windows)
            .map(|(ch, k)| (k.as_str(), 1, ch.window.max))
            .chain(
                c.slots
                    .iter()
                    .zip(&c.budgets)
                    .map(|(s, k)| (k.as_str(), c.amount, s.limit())),
            )
            .collect();
        let counts = self.leases.take(&wants, c.now)?;
        Some(
            c.checks
                .iter()
                .zip(counts)
                .map(|(ch, used)| ch.window.verdict(true, used, c.now, ch.scope))
                .collect(),
        )
    }

    /// The CHECK_RESERVE call for a request, given what its leases already covered.
    fn invocation<'s>(
        &'s self,
        c: &Counters<'_>,
        from_windows: &[u64],
        from_budgets: &[u64],
        leasable: bool,
        ledger: &str,
    ) -> redis::ScriptInvocation<'s> {
        let want = if leasable { self.lease_requests } else { 1 };
        let mut call = self.check_reserve.prepare_invoke();
        call.arg(c.checks.len());
        for ((ch, key), taken) in c.checks.iter().zip(&c.windows).zip(from_windows) {
            call.key(key);
            call.arg(ch.window.max);
            call.arg(if ch.tokens { 0 } else { ch.window.window });
            call.arg(if *taken > 0 { 0 } else { want });
        }
        call.arg(c.amount)
            .arg(if leasable { self.budget_lease(c.amount) } else { 0 });
        for ((s, key), taken) in c.slots.iter().zip(&c.budgets).zip(from_budgets) {
            call.key(key);
            call.arg(c.amount - taken);
            call.arg(s.limit()).arg(u8::from(s.hard())).arg(s.ttl());
        }
        call.key(ledger);
        call
    }

    /// Keeps the leases a counted round trip granted (`v`: its whole answer).
    fn keep_grants(self: &Arc<Self>, c: Counters<'_>, v: &[u64]) {
        let (n, m, now) = (c.checks.len(), c.slots.len(), c.now);
        let used = &v[1..=n];
        let grants = &v[n + 2 + m..2 * n + 2 + m];
        for (((ch, key), used), grant) in c.checks.iter().zip(c.windows).zip(used).zip(grants) {
            if *grant > 1 {
                let until = (now / ch.window.window + 1) * ch.window.window;
                self.keep_lease(key, grant - 1, used + grant, until, ch.window.max);
            }
        }
        for ((s, key), extra) in c.slots.iter().zip(c.budgets).zip(&v[2 * n + 2 + m..]) {
            if *extra > 0 {
                self.keep_lease(key, *extra, 0, now + s.ttl(), s.limit());
            }
        }
    }

    /// Starts the task that gives leases idle for [`crate::leases::IDLE`] back to Redis,
    /// unless it runs; it ends with the last lease (or with this `Shared`, whose drop gives
    /// back what is left).
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::leases::IDLE / 2).await;
                let Some(me) = me.upgrade() else { return };
                let back = me.leases.sweep(now_secs(), Instant::now());
                me.queue(back.into_iter().map(|(key, units)| (key, -signed(units))));
                if me.leases.is_empty() {
                    me.sweeping.store(false, Ordering::Release);
                    // A lease granted after the look and before the flag: this task's.
                    if me.leases.is_empty() || me.sweeping.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
            }
        });
    }

    /// Adds `delta` nano-dollars to every budget slot (negative: gives back), off the
    /// request's path. Settlements are written by one task per process, one script call at
    /// a time: those made while a call is under way go together in the next, so under load
    /// many settle in one round trip, and an idle gateway writes each at once.
    /// A counter this replica holds a lease on takes the change there first (see
    /// [`Leases::absorb`]).
    pub fn adjust_budgets(self: &Arc<Self>, slots: &[Slot], delta: i64) {
        let now = now_secs();
        self.queue(slots.iter().map(|s| {
            let key = s.redis_key(&self.prefix);
            let rest = self.leases.absorb(&key, delta, now);
            (key, rest)
        }));
    }

    /// Queues changes to counters for the settlement writer, starting it unless it runs.
    fn queue(self: &Arc<Self>, changes: impl IntoIterator<Item = (String, i64)>) {
        let mut any = false;
        {
            let mut queue = self.settlements.lock().unwrap_or_else(|p| p.into_inner());
            for (key, delta) in changes.into_iter().filter(|(_, d)| *d != 0) {
                let d = queue.entry(key).or_insert(0);
                *d = d.saturating_add(delta);
                any = true;
            }
        }
        if any {
            self.kick();
        }
    }

    /// Writes queued settlements until none is left.
    async fn settle_queued(self: &Arc<Self>) {
        loop {
            if !self.release_queued().await {
                // Redis is away: the writer ends and is started again by the next change
                // or by the retry.
                self.settling.store(false, Ordering::Release);
                return;
            }
            let batch = std::mem::take(&mut *self.settlements.lock().unwrap_or_else(|p| p.into_inner()));
            if batch.is_empty() {
                self.settling.store(false, Ordering::Release);
                // One queued after the look and before the flag: it is this task's.
                let empty = self.settlements.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
                    && self.releases.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
                if empty || self.settling.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            }
            let mut call = self.adjust.prepare_invoke();
            for (key, delta) in batch.iter().filter(|(_, d)| **d != 0) {
                call.key(key);
                call.arg(*delta);
            }
            // A call certainly not sent (Redis away) waits for Redis with the batch; one
            // that was sent and failed is not made again: it may have been applied.
            if let Err(true) = self.call::<i64>(call).await {
                {
                    let mut queue = self.settlements.lock().unwrap_or_else(|p| p.into_inner());
                    for (key, delta) in batch {
                        let d = queue.entry(key).or_insert(0);
                        *d = d.saturating_add(delta);
                    }
                }
                self.settling.store(false, Ordering::Release);
                self.retry_later();
                return;
            }
        }
    }

    /// Starts the writer again once Redis may be back (one timer at a time).
    fn retry_later(self: &Arc<Self>) {
        if self.retry_armed.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(BACKOFF).await;
            if let Some(me) = me.upgrade() {
                me.retry_armed.store(false, Ordering::Release);
                me.kick();
            }
        });
    }

    /// Undoes the round trips whose answers were lost, once Redis answers (a ledger lives
    /// a minute; older ones are dropped). False when Redis could not take them: they are
    /// kept and tried again after [`BACKOFF`].
    async fn release_queued(self: &Arc<Self>) -> bool {
        let mut ledgers = std::mem::take(&mut *self.releases.lock().unwrap_or_else(|p| p.into_inner()));
        ledgers.retain(|(_, at)| at.elapsed() < Duration::from_secs(55));
        if ledgers.is_empty() {
            return true;
        }
        let mut call = self.release.prepare_invoke();
        for (key, _) in &ledgers {
            call.key(key);
        }
        if self.run::<i64>(call).await.is_some() {
            return true;
        }
        self.releases.lock().unwrap_or_else(|p| p.into_inner()).extend(ledgers);
        self.retry_later();
        false
    }

    /// Queues the undoing of a round trip whose answer was lost.
    fn release_later(self: &Arc<Self>, ledger: String) {
        self.releases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((ledger, Instant::now()));
        self.kick();
    }

    /// Starts the writer unless it runs.
    fn kick(self: &Arc<Self>) {
        if !self.settling.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.settle_queued().await });
        }
    }

    /// The gateway is shutting down: no more leases are taken, and what the leases hold,
    /// the queued settlements and the undoing of lost round trips are written now (within
    /// a few seconds, when Redis answers), so a stopped replica leaves nothing counted that
    /// it did not use.
    pub async fn close(self: &Arc<Self>) {
        self.closed.store(true, Ordering::Release);
        let back = self.leases.drain(now_secs());
        self.queue(back.into_iter().map(|(key, units)| (key, -signed(units))));
        let drained = async {
            while self.settling.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(CACHE_WRITE_TIMEOUT, drained).await;
    }

    /// The Redis key of a cached answer.
    fn cache_key(&self, key: &[u8; 32]) -> String {
        use std::fmt::Write as _;
        let mut k = format!("{}:cache:", self.prefix);
        for b in key {
            let _ = write!(k, "{b:02x}");
        }
        k
    }

    /// A cached answer of at most `max` bytes, in one round trip; `None` when absent,
    /// larger or while Redis is away.
    pub async fn cache_get(&self, key: &[u8; 32], max: u64) -> Option<Vec<u8>> {
        let mut call = self.cache_get.prepare_invoke();
        call.key(self.cache_key(key)).arg(max);
        self.run_cache::<Option<Vec<u8>>>(call, self.timeout).await.flatten()
    }

    /// Keeps a cached answer for `ttl` seconds (off the request's path: it may take up to
    /// [`CACHE_WRITE_TIMEOUT`]).
    pub async fn cache_set(&self, key: &[u8; 32], value: &[u8], ttl: u64) {
        let mut call = self.cache_set.prepare_invoke();
        call.key(self.cache_key(key)).arg(value).arg(ttl.max(1));
        let _: Option<i64> = self.run_cache(call, CACHE_WRITE_TIMEOUT).await;
    }

    /// One cache script call on the cache's own connection, so large answers never queue
    /// ahead of the limit scripts; its failures leave the limits alone (a cache miss goes
    /// upstream) and keep the cache off Redis for [`BACKOFF`].
    async fn run_cache<T: redis::FromRedisValue>(
        &self,
        call: redis::ScriptInvocation<'_>,
        within: Duration,
    ) -> Option<T> {
        if self.backing_off() || self.cache_backing_off() {
            return None;
        }
        let attempt = async {
            let conn = self
                .cache_conn
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(within))
                        .set_number_of_retries(1);
                    self.client
                        .get_connection_manager_with_config(config)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await?;
            let mut conn = conn.clone();
            call.invoke_async::<T>(&mut conn).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(within, attempt).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => self.cache_failed(&e),
            Err(_) => self.cache_failed("no answer in time"),
        }
    }

    fn cache_backing_off(&self) -> bool {
        self.cache_retry_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| Instant::now() < at)
    }

    fn cache_failed<T>(&self, why: &str) -> Option<T> {
        tracing::debug!("shared_state: the response cache could not use Redis ({why})");
        *self.cache_retry_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + BACKOFF);
        None
    }

    /// One script call, connection included, within one `timeout_ms`; `None` (and Redis
    /// marked away) on failure.
    async fn run<T: redis::FromRedisValue>(&self, call: redis::ScriptInvocation<'_>) -> Option<T> {
        self.call(call).await.ok()
    }

    /// As [`Shared::run`]; a failure says whether the call was certainly not sent (no
    /// connection, or the connection refused), so that it may be made again without being
    /// applied twice.
    async fn call<T: redis::FromRedisValue>(&self, call: redis::ScriptInvocation<'_>) -> Result<T, bool> {
        let attempt = async {
            let Some(mut conn) = self.connection().await else {
                return Err((None, true));
            };
            call.invoke_async(&mut conn)
                .await
                .map_err(|e| (Some(e.to_string()), e.is_connection_refusal()))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => {
                self.recovered();
                Ok(v)
            }
            // The connection's failure is already noted.
            Ok(Err((None, unsent))) => Err(unsent),
            Ok(Err((Some(e), unsent))) => {
                self.failed::<()>(&e);
                Err(unsent)
            }
            Err(_) => {
                self.failed::<()>("no answer within shared_state.timeout_ms");
                Err(false)
            }
        }
    }

    /// The connection, opened on first use; `None` while Redis is away.
    async fn connection(&self) -> Option<ConnectionManager> {
        if self.backing_off() {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let opened = self
            .conn
            .get_or_try_init(|| async {
                // A request that waited behind a failed attempt does not try again at once.
                if self.backing_off() {
                    return Err("backing off after a failed attempt".to_owned());
                }
                match tokio::time::timeout(self.timeout, self.client.get_connection_manager_with_config(config)).await {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no connection within shared_state.timeout_ms".to_owned()),
                }
            })
            .await;
        match opened {
            Ok(c) => Some(c.clone()),
            Err(_) if self.backing_off() => None,
            Err(e) => self.failed(&e),
        }
    }

    /// Whether Redis is away and its retry time has not come.
    fn backing_off(&self) -> bool {
        self.down.load(Ordering::Acquire)
            && self
                .retry_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| Instant::now() < at)
    }

    /// Notes a failure: Redis is left alone for [`BACKOFF`]; said once per outage.
    fn failed<T>(&self, why: &str) -> Option<T> {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "shared_state: Redis is unavailable ({why}); limits follow their fail_mode until it returns"
            );
        }
        *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + BACKOFF);
        None
    }

    /// Notes a successful round trip (said once when it ends an outage).
    fn recovered(&self) {
        if self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("shared_state: Redis is back; limits are counted there again");
        }
    }
}

/// Whether the limit and budget script's answer has its full length: the windows' counts
/// after a flag, and when it counted (flag 1) the budgets' outcome and grants as well.
fn answer_is_whole(v: &[u64], windows: usize, budgets: usize) -> bool {
    let want = match v.first() {
        Some(1) => 2 * windows + 2 * budgets + 2,
        _ => windows + 1,
    };
    v.len() == want
}

/// Each window's verdict from its count in Redis (`used`), or from the lease it was taken
/// from (`taken` > 0): Redis's count then already includes what is leased.
fn window_verdicts(checks: &[Check], used: &[u64], taken: &[u64], counted: bool, now: u64) -> Vec<Verdict> {
    checks
        .iter()
        .zip(used)
        .zip(taken)
        .map(|((ch, used), taken)| match taken {
            0 => ch.verdict_for(*used, counted, now),
            _ => ch.window.verdict(true, *used, now, ch.scope),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::limits::FixedWindow;

    /// `KT_TEST_REDIS_URL`, or `None` after saying the test is skipped.
    fn redis_url() -> Option<String> {
        let url = std::env::var("KT_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
        if url.is_none() {
            println!("SKIP redis test: KT_TEST_REDIS_URL is not set");
        }
        url
    }

    /// A key prefix no other run shares.
    fn fresh_prefix() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("kt-test-{}-{nanos}", std::process::id())
    }

    fn shared(url: &str, prefix: &str, yaml_extra: &str) -> Arc<Shared> {
        let yaml = format!("{{redis_url: '{url}', key_prefix: '{prefix}', timeout_ms: 500{yaml_extra}}}");
        let config: SharedState = serde_json::from_value(yaml_value(&yaml)).expect("shared_state");
        Arc::new(Shared::of(&config, &|_| None).expect("backend"))
    }

    fn yaml_value(flow: &str) -> serde_json::Value {
        let text = format!(
            "pack: {{name: s, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\nshared_state: {flow}\n"
        );
        let outcome = kt_policy::config::load_sources(&[kt_policy::config::Source {
            name: "s.yaml".into(),
            text,
        }]);
        let config = outcome.config.unwrap_or_else(|| panic!("{:?}", outcome.diagnostics));
        serde_json::to_value(config.shared_state).expect("json")
    }

    fn counted(o: Outcome) -> Vec<Verdict> {
        match o {
            Outcome::Counted(v) => v,
            Outcome::Unavailable => panic!("redis unavailable"),
        }
    }

    #[tokio::test]
    async fn replicas_share_one_count_and_a_refused_request_counts_nowhere() {
        let Some(url) = redis_url() else { return };
        let prefix = fresh_prefix();
        // Two replicas, each with its own in-memory windows: only Redis joins them.
        let (a, b) = (shared(&url, &prefix, ""), shared(&url, &prefix, ""));
        let global = |max| Arc::new(FixedWindow::new(max, 3600));
        let (ga, gb) = (global(3), global(3));
        let (ua, ub) = (global(100), global(100));
        let now = 7_200;
        let checks = |g: &Arc<FixedWindow>, u: &Arc<FixedWindow>, user: &str| {
            vec![
                Check::new("user_rate_limit", user, u, false),
                Check::new("global_rate_limit", "*", g, false),
            ]
        };
        let mut admitted = 0;
        for i in 0..6 {
            let (s, g, u) = if i % 2 == 0 { (&a, &ga, &ua) } else { (&b, &gb, &ub) };
            let v = counted(s.check(&checks(g, u, "alice"), now).await);
            if v.iter().all(|v| v.allowed) {
                admitted += 1;
            } else {
                assert_eq!(crate::limits::decisive(v).map(|v| v.scope), Some("global_rate_limit"));
            }
        }
        assert_eq!(admitted, 3, "three admitted across both replicas");
        // The refused requests counted nowhere: alice's own window holds the three.
        let v = counted(
            a.check(&[Check::new("user_rate_limit", "alice", &ua, false)], now)
                .await,
        );
        assert_eq!((v[0].allowed, v[0].remaining), (true, 96));
        // A new window starts afresh.
        let v = counted(b.check(&checks(&gb, &ub, "bob"), now + 3600).await);
        assert!(v.iter().all(|v| v.allowed));
    }

    #[tokio::test]
    async fn limits_and_budgets_in_one_round_trip_count_only_what_was_admitted() {
        use crate::model_api::budget::Slot;
        let Some(url) = redis_url() else { return };
        let prefix = fresh_prefix();
        let s = shared(&url, &prefix, "");
        let window = Arc::new(FixedWindow::new(2, 3600));
        let tokens = Arc::new(FixedWindow::new(1_000, 3600));
        let checks = [
            Check::new("caller_key_rate_limit", "k", &window, false),
            Check::new("token_rate_limit", "*", &tokens, true),
        ];
        let hard = [Slot::for_test("hard", 100, true), Slot::for_test("soft", 50, false)];
        let now = 7_200;
        // Room everywhere: the window counts the request and both budgets reserve 40.
        let (v, r) = s.check_and_reserve(&checks, now, &hard, 40).await.expect("redis");
        assert!(v.iter().all(|v| v.allowed));
        assert_eq!(v[0].remaining, 1);
        assert_eq!(r, Some(Ok(vec![])));
        // 80 > soft 50: a warning; hard still has room.
        let (_, r) = s.check_and_reserve(&checks, now, &hard, 40).await.expect("redis");
        assert_eq!(r, Some(Ok(vec!["soft".to_owned()])));
        // The window is spent: refused by it, and nothing is reserved.
        let (v, r) = s.check_and_reserve(&checks, now, &hard, 1).await.expect("redis");
        assert_eq!(
            crate::limits::decisive(v).map(|v| (v.allowed, v.scope)),
            Some((false, "caller_key_rate_limit"))
        );
        assert_eq!(r, None);
        assert_eq!(
            s.reserve_budgets(&hard[..1], 20).await,
            Some(Ok(vec![])),
            "80 + 20 fits in 100"
        );
        // A fresh window, but the hard budget is spent: the window counts, the budget refuses
        // (index 0) and reserves nothing.
        let fresh = [Check::new("caller_key_rate_limit", "k2", &window, false)];
        let (v, r) = s.check_and_reserve(&fresh, now, &hard, 1).await.expect("redis");
        assert_eq!(v[0].remaining, 1);
        assert_eq!(r, Some(Err(0)));
        assert_eq!(
            s.reserve_budgets(&hard[1..], 0).await,
            Some(Ok(vec!["soft".to_owned()]))
        );
    }

    #[tokio::test]
    async fn settlements_made_together_are_all_written() {
        use crate::model_api::budget::Slot;
        let Some(url) = redis_url() else { return };
        let prefix = fresh_prefix();
        // Without leases: every reservation and settlement goes to Redis.
        let s = shared(&url, &prefix, ", lease_requests: 1");
        let slots = [
            Slot::for_test("a", u64::MAX / 4, true),
            Slot::for_test("b", u64::MAX / 4, true),
        ];
        for _ in 0..200 {
            assert_eq!(s.reserve_budgets(&slots, 1_000).await, Some(Ok(vec![])));
        }
        // 200 settlements queued at once, each giving back 990: written in a few calls.
        for _ in 0..200 {
            s.adjust_budgets(&slots, -990);
        }
        let mut conn = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let mut left = Vec::new();
        for _ in 0..100 {
            left.clear();
            for slot in &slots {
                let v: i64 = redis::cmd("GET")
                    .arg(slot.redis_key(&prefix))
                    .query_async(&mut conn)
                    .await
                    .expect("get");
                left.push(v);
            }
            if left == [2_000, 2_000] && !s.settling.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, [2_000, 2_000], "200 × (1000 − 990) on each");
        // A give-back larger than the count stops at 0.
        s.adjust_budgets(&slots[..1], -1_000_000);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v: i64 = redis::cmd("GET")
            .arg(slots[0].redis_key(&prefix))
            .query_async(&mut conn)
            .await
            .expect("get");
        assert_eq!(v, 0);
    }

    /// A counter's value in Redis (0 when absent).
    async fn redis_count(url: &str, key: &str) -> i64 {
        let mut conn = redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let v: Option<i64> = redis::cmd("GET").arg(key).query_async(&mut conn).await.expect("get");
        v.unwrap_or(0)
    }

    #[tokio::test]
    async fn leases_spare_round_trips_and_replicas_still_admit_exactly_the_limit() {
        use crate::model_api::budget::Slot;
        let Some(url) = redis_url() else { return };
        let prefix = fresh_prefix();
        let (a, b) = (shared(&url, &prefix, ""), shared(&url, &prefix, ""));
        let window = Arc::new(FixedWindow::new(100, 3600));
        let checks = [Check::new("caller_key_rate_limit", "k", &window, false)];
        // Room for 100 reservations of 10.
        let budget = [Slot::for_test("team", 1_000, true)];
        let now = now_secs();
        let (mut windows, mut reserved) = (0, 0);
        for i in 0..400 {
            let s = if i % 2 == 0 { &a } else { &b };
            let (v, r) = s.check_and_reserve(&checks, now, &[], 0).await.expect("redis");
            assert_eq!(r, Some(Ok(vec![])).filter(|_| v[0].allowed));
            windows += usize::from(v[0].allowed);
            if s.reserve_budgets(&budget, 10).await == Some(Ok(vec![])) {
                reserved += 1;
            }
            if i == 0 {
                assert!(!a.leases.is_empty(), "the first request leased more");
            }
        }
        // Each replica spends its leases before Redis refuses it: together, exactly the
        // limit and exactly the budget, never more.
        assert_eq!(windows, 100);
        assert_eq!(reserved, 100);
        assert_eq!(redis_count(&url, &budget[0].redis_key(&prefix)).await, 1_000);
        let window_key = a.key(&checks[0], now);
        assert_eq!(redis_count(&url, &window_key).await, 100);
    }

    #[tokio::test]
    async fn round_trips_spend_window_leases_first_and_lease_nothing_they_cannot_use() {
        use crate::model_api::budget::Slot;
        let Some(url) = redis_url() else { return };
        let prefix = fresh_prefix();
        let s = shared(&url, &prefix, "");
        let now = now_secs();
        let window = Arc::new(FixedWindow::new(1_000, 3600));
        let checks = [Check::new("global_rate_limit", "*", &window, false)];
        // A budget too small to lease: every request goes to Redis for it.
        let budget = [Slot::for_test("tight", 1_000_000, true)];
        for _ in 0..10 {
            let (v, r) = s.check_and_reserve(&checks, now, &budget, 60_000).await.expect("redis");
            assert!(v[0].allowed);
            assert_eq!(r, Some(Ok(vec![])));
        }
        // The first round trip counted the request and a lease of 31; the next nine came
        // out of that lease instead of being counted again.
        assert_eq!(redis_count(&url, &s.key(&checks[0], now)).await, 32);
        assert_eq!(redis_count(&url, &budget[0].redis_key(&prefix)).await, 600_000);
        // With a token window the request can never be served from leases: none is taken.
        let tokens = Arc::new(FixedWindow::new(1_000_000, 60));
        let other = Arc::new(FixedWindow::new(1_000, 3600));
        let with_tokens = [
            Check::new("caller_key_rate_limit", "k", &other, false),
            Check::new("token_rate_limit", "*", &tokens, true),
        ];
        let roomy = [Slot::for_test("roomy", 1_000_000_000, true)];
        for _ in 0..3 {
            let (v, _) = s
                .check_and_reserve(&with_tokens, now, &roomy, 100)
                .await
                .expect("redis");
            assert!(v.iter().all(|v| v.allowed));
        }
        assert_eq!(redis_count(&url, &s.key(&with_tokens[0], now)).await, 3);
        assert_eq!(redis_count(&url, &roomy[0].redis_key(&prefix)).await, 300);
    }

    #[tokio::test]
    async fn a_round_trip_answered_too_late_is_undone_and_a_closing_replica_gives_its_leases_back() {
        use crate::model_api::budget::Slot;
        let Some(url) = redis_url() else { return };
        let prefix = fresh_prefix();
        let s = shared(&url, &prefix, "");
        let now = now_secs();
        let window = Arc::new(FixedWindow::new(1_000, 3600));
        let checks = [Check::new("global_rate_limit", "*", &window, false)];
        let budget = [Slot::for_test("team", 1_000_000, true)];
        let (wkey, bkey) = (s.key(&checks[0], now), budget[0].redis_key(&prefix));
        let (v, r) = s.check_and_reserve(&checks, now, &budget, 100).await.expect("redis");
        assert!(v[0].allowed && r == Some(Ok(vec![])));
        assert_eq!(redis_count(&url, &wkey).await, 32);
        assert_eq!(redis_count(&url, &bkey).await, 3_200);
        // The call's ledger notes what it added; undoing it (as for an answer that came
        // too late) takes all of it off, once.
        let mut conn = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let ledgers: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:grant:*"))
            .query_async(&mut conn)
            .await
            .expect("keys");
        assert_eq!(ledgers.len(), 1, "{ledgers:?}");
        for _ in 0..2 {
            s.release_later(ledgers[0].clone());
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(redis_count(&url, &wkey).await, 0);
            assert_eq!(redis_count(&url, &bkey).await, 0);
        }
        // A closing replica gives back what its leases hold and takes no more.
        let s = shared(&url, &prefix, "");
        s.check_and_reserve(&checks, now, &budget, 100).await.expect("redis");
        s.check_and_reserve(&checks, now, &budget, 100).await.expect("redis");
        assert_eq!(redis_count(&url, &bkey).await, 3_200);
        s.close().await;
        assert_eq!(redis_count(&url, &wkey).await, 2);
        assert_eq!(redis_count(&url, &bkey).await, 200);
        s.check_and_reserve(&checks, now, &budget, 100).await.expect("redis");
        assert_eq!(redis_count(&url, &wkey).await, 3, "no lease once closed");
        assert_eq!(redis_count(&url, &bkey).await, 300);
    }

    #[tokio::test]
    async fn an_idle_lease_goes_back_to_redis_and_settlements_come_out_of_leases_first() {
        use crate::model_api::budget::Slot;
        let Some(url) = redis_url() else { return };
        let prefix = fresh_prefix();
        let s = shared(&url, &prefix, "");
        let budget = [Slot::for_test("team", 1_000_000, true)];
        let key = budget[0].redis_key(&prefix);
        assert_eq!(s.reserve_budgets(&budget, 100).await, Some(Ok(vec![])));
        // The reservation and a lease of 31 more.
        assert_eq!(redis_count(&url, &key).await, 3_200);
        // Served from the lease: Redis is not asked.
        assert_eq!(s.reserve_budgets(&budget, 100).await, Some(Ok(vec![])));
        assert_eq!(redis_count(&url, &key).await, 3_200);
        // A settlement below the estimate goes back into the lease, not to Redis.
        s.adjust_budgets(&budget, -60);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(redis_count(&url, &key).await, 3_200);
        // Unused for a second: what the lease holds goes back (3,200 − 100 − 100 + 60 used).
        let mut count = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            count = redis_count(&url, &key).await;
            if count != 3_200 {
                break;
            }
        }
        assert_eq!(count, 140);
        assert!(s.leases.is_empty());
        // A replaced configuration gives its leases back when it is dropped.
        assert_eq!(s.reserve_budgets(&budget, 100).await, Some(Ok(vec![])));
        assert!(redis_count(&url, &key).await > 240);
        drop(s);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(redis_count(&url, &key).await, 240);
    }

    #[tokio::test]
    async fn tokens_charged_by_one_replica_are_seen_by_the_other() {
        let Some(url) = redis_url() else { return };
        let prefix = fresh_prefix();
        let (a, b) = (shared(&url, &prefix, ""), shared(&url, &prefix, ""));
        let w = Arc::new(FixedWindow::new(100, 60));
        let tokens = [Check::new("token_rate_limit", "*", &w, true)];
        let now = 600;
        assert!(counted(a.check(&tokens, now).await)[0].allowed);
        assert!(a.charge(&tokens, 60, now).await);
        let v = counted(b.check(&tokens, now).await);
        assert_eq!((v[0].allowed, v[0].remaining), (true, 40), "reading does not count");
        assert!(b.charge(&tokens, 45, now).await);
        assert!(!counted(a.check(&tokens, now).await)[0].allowed);
        // Only the refusal is kept in memory, until its window ends.
        assert!(!w.peek("*", now, "t").allowed);
        assert!(w.peek("*", now + 60, "t").allowed && w.peek("*", now + 60, "t").remaining == 100);
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_reported_quickly_and_fail_modes_are_per_limit() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let s = shared(
            "redis://127.0.0.1:1",
            "p",
            ", fail_mode: closed, fail_modes: {token_rate_limit: open}",
        );
        let w = Arc::new(FixedWindow::new(1, 60));
        let started = Instant::now();
        assert!(matches!(
            s.check(&[Check::new("global_rate_limit", "*", &w, false)], 0).await,
            Outcome::Unavailable
        ));
        assert!(!s.charge(&[Check::new("token_rate_limit", "*", &w, true)], 5, 0).await);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(s.fail_mode("global_rate_limit"), SharedFailMode::Closed);
        assert_eq!(s.fail_mode("token_rate_limit"), SharedFailMode::Open);
        // A settlement made while Redis is known to be away is kept for when it is back,
        // and so is the undoing of a round trip whose answer was lost.
        use crate::model_api::budget::Slot;
        let slot = [Slot::for_test("b", 1_000, true)];
        s.adjust_budgets(&slot, -40);
        s.release_later("p:grant:0".to_owned());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let kept = || {
            s.settlements
                .lock()
                .map(|q| q.values().copied().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(kept(), vec![-40]);
        assert_eq!(s.releases.lock().map(|r| r.len()).unwrap_or(0), 1);
        // Still away after the back-off: the writer's own try is refused, and both wait on.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert_eq!(kept(), vec![-40]);
        assert_eq!(s.releases.lock().map(|r| r.len()).unwrap_or(0), 1);
    }

    #[test]
    fn a_missing_url_names_the_variable() {
        let config: SharedState = serde_json::from_value(yaml_value("{}")).expect("shared_state");
        let e = Shared::of(&config, &|_| None).expect_err("no URL");
        assert!(e.contains("KEEPTRUSTS_REDIS_URL"), "{e}");
        let ok = Shared::of(&config, &|n| {
            (n == "KEEPTRUSTS_REDIS_URL").then(|| "redis://127.0.0.1:6379".into())
        });
        assert!(ok.is_ok());
    }
}
