//! Login throttling: counters of failed attempts per account and per client address in
//! fixed windows. An attempt is counted before its password is checked, so parallel
//! guesses cannot slip past the limit, and a throttled attempt is refused at once (429
//! with Retry-After) without hashing anything: known and unknown accounts behave alike.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per window.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub per_account: u32,
    pub per_address: u32,
    pub window: Duration,
    /// Keys tracked at most; beyond it expired ones are dropped, and when none are, new
    /// keys are throttled (the table never grows without bound).
    pub max_keys: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            per_account: 10,
            per_address: 50,
            window: Duration::from_secs(15 * 60),
            max_keys: 100_000,
        }
    }
}

#[derive(Debug)]
struct Count {
    started: Instant,
    n: u32,
}

#[derive(Debug, Default)]
pub struct Throttle {
    policy: Policy,
    counts: Mutex<HashMap<String, Count>>,
}

impl Throttle {
    pub fn new(policy: Policy) -> Self {
        Throttle {
            policy,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt for the account and the address; `Err(seconds)` when either is
    /// over its limit (nothing is counted then).
    pub fn attempt(&self, account: &str, address: &str) -> Result<(), u64> {
        let now = Instant::now();
        let p = self.policy;
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = [
            (format!("a:{account}"), p.per_account),
            (format!("i:{address}"), p.per_address),
        ];
        if counts.len() + 2 > p.max_keys {
            counts.retain(|_, c| now.duration_since(c.started) < p.window);
            if counts.len() + 2 > p.max_keys {
                return Err(p.window.as_secs().max(1));
            }
        }
        let mut wait = 0;
        for (key, limit) in &keys {
            if let Some(c) = counts.get(key) {
                let age = now.duration_since(c.started);
                if age < p.window && c.n >= *limit {
                    wait = wait.max((p.window - age).as_secs().max(1));
                }
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for (key, _) in keys {
            let c = counts.entry(key).or_insert(Count { started: now, n: 0 });
            if now.duration_since(c.started) >= p.window {
                *c = Count { started: now, n: 0 };
            }
            c.n += 1;
        }
        Ok(())
    }

    /// A successful login clears the account's count and takes its own attempt back
    /// from the address's (only failures count there).
    pub fn succeeded(&self, account: &str, address: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.remove(&format!("a:{account}"));
        if let Some(c) = counts.get_mut(&format!("i:{address}")) {
            c.n = c.n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            per_account: 3,
            per_address: 5,
            window: Duration::from_secs(60),
            max_keys: 8,
        }
    }

    #[test]
    fn accounts_and_addresses_are_limited_separately() {
        let t = Throttle::new(policy());
        for _ in 0..3 {
            assert!(t.attempt("a@x", "1.1.1.1").is_ok());
        }
        let wait = t.attempt("a@x", "2.2.2.2").expect_err("account over its limit");
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(t.attempt("b@x", "1.1.1.1").is_ok());
        assert!(t.attempt("c@x", "1.1.1.1").is_ok());
        assert!(t.attempt("d@x", "1.1.1.1").is_err(), "address over its limit");
        t.succeeded("a@x", "1.1.1.1");
        assert!(t.attempt("a@x", "3.3.3.3").is_ok(), "success clears the account");
        assert!(
            t.attempt("e@x", "1.1.1.1").is_ok(),
            "and gives the address its attempt back"
        );
        assert!(t.attempt("f@x", "1.1.1.1").is_err());
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = Throttle::new(policy());
        let mut refused = 0;
        for i in 0..20 {
            if t.attempt(&format!("u{i}@x"), &format!("10.0.0.{i}")).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0);
        assert!(t.counts.lock().expect("lock").len() <= 8);
    }

    #[test]
    fn parallel_guesses_cannot_pass_the_limit() {
        let t = std::sync::Arc::new(Throttle::new(policy()));
        let ok: usize = (0..16)
            .map(|i| {
                let t = std::sync::Arc::clone(&t);
                std::thread::spawn(move || t.attempt("victim@x", &format!("9.9.9.{}", i % 2)).is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| usize::from(h.join().expect("thread")))
            .sum();
        assert_eq!(ok, 3);
    }
}
