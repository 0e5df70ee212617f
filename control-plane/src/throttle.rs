//! Login throttling: counters of attempts in fixed windows, per account from one client
//! address (so a stranger's guesses do not lock the owner out from elsewhere), per
//! account from everywhere (a higher bound on distributed guessing), and per address (an
//! IPv6 address counts by its /64). An attempt is counted before its password is checked,
//! so parallel guesses cannot slip past the limit, and a throttled attempt is refused at
//! once (429 with Retry-After) without hashing anything: known and unknown accounts behave
//! alike.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per window.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// One account from one address.
    pub per_account: u32,
    /// One account from all addresses together.
    pub per_account_total: u32,
    pub per_address: u32,
    pub window: Duration,
    /// Keys tracked at most; beyond it expired ones are dropped, then the oldest windows
    /// (the table never grows without bound, and a full one refuses nobody).
    pub max_keys: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            per_account: 10,
            per_account_total: 100,
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

    /// Counts one attempt for the account and the address; `Err(seconds)` when a limit is
    /// reached (nothing is counted then).
    pub fn attempt(&self, account: &str, address: &str) -> Result<(), u64> {
        let now = Instant::now();
        let p = self.policy;
        let address = address_key(address);
        let keys = [
            (format!("a:{account}|{address}"), p.per_account),
            (format!("t:{account}"), p.per_account_total),
            (format!("i:{address}"), p.per_address),
        ];
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() + keys.len() > p.max_keys {
            counts.retain(|_, c| now.duration_since(c.started) < p.window);
            while counts.len() + keys.len() > p.max_keys {
                let Some(oldest) = counts.iter().min_by_key(|(_, c)| c.started).map(|(k, _)| k.clone()) else {
                    break;
                };
                counts.remove(&oldest);
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

    /// A successful login clears the account's count from this address and takes its own
    /// attempt back from the others (only failures count there).
    pub fn succeeded(&self, account: &str, address: &str) {
        let address = address_key(address);
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.remove(&format!("a:{account}|{address}"));
        for key in [format!("t:{account}"), format!("i:{address}")] {
            if let Some(c) = counts.get_mut(&key) {
                c.n = c.n.saturating_sub(1);
            }
        }
    }
}

/// The address an attempt counts against: an IPv4 address, or an IPv6 address's /64 (one
/// host usually holds a whole /64).
fn address_key(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(|| address.to_owned(), |v4| v4.to_string()),
        _ => address.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            per_account: 3,
            per_account_total: 5,
            per_address: 5,
            window: Duration::from_secs(60),
            max_keys: 12,
        }
    }

    #[test]
    fn a_strangers_guesses_do_not_lock_the_owner_out_from_elsewhere() {
        let t = Throttle::new(policy());
        for _ in 0..3 {
            assert!(t.attempt("owner@x", "6.6.6.6").is_ok());
        }
        let wait = t.attempt("owner@x", "6.6.6.6").expect_err("this address is done");
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(
            t.attempt("owner@x", "1.1.1.1").is_ok(),
            "the owner's own address still works"
        );
        // Guesses from many addresses together meet the account's total.
        assert!(t.attempt("owner@x", "2.2.2.2").is_ok());
        assert!(t.attempt("owner@x", "3.3.3.3").is_err(), "five for the account in all");
        t.succeeded("owner@x", "1.1.1.1");
        assert!(t.attempt("owner@x", "1.1.1.1").is_ok());
    }

    #[test]
    fn addresses_are_limited_and_ipv6_counts_by_its_64() {
        let t = Throttle::new(Policy {
            max_keys: 64,
            ..policy()
        });
        for i in 0..5 {
            assert!(t.attempt(&format!("u{i}@x"), &format!("2001:db8:1:2::{i}")).is_ok());
        }
        assert!(
            t.attempt("u9@x", "2001:db8:1:2:ffff::1").is_err(),
            "one /64 is one address"
        );
        assert!(t.attempt("u9@x", "2001:db8:1:3::1").is_ok(), "another /64 is another");
        assert_eq!(address_key("::ffff:10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn the_table_stays_bounded_and_refuses_nobody_when_full() {
        let t = Throttle::new(policy());
        for i in 0..50 {
            assert!(t.attempt(&format!("u{i}@x"), &format!("10.0.0.{i}")).is_ok(), "{i}");
        }
        assert!(t.counts.lock().expect("lock").len() <= 12);
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
        assert_eq!(ok, 5, "three per address, five for the account in all");
    }
}
