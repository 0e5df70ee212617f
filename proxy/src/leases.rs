//! Leases on shared counters: units of a rate-limit window (requests) or of a budget
//! (nano-dollars) that this replica took from Redis ahead of use. They are counted there
//! already, so spending them here needs no round trip and can never take a counter past
//! its limit: the script that grants a lease grants only room the counter has, a fraction
//! of it (so replicas share what is left), and nothing once little is left, when every
//! request goes to Redis again.
//!
//! What a request gives back (a budget reservation settled below its estimate, a request
//! that never went upstream) goes back into the lease. A lease not used for
//! [`IDLE`] is given back to Redis whole, so units a replica stopped needing reach the
//! others within about a second; one whose window or period has ended is dropped (its
//! counter has expired with it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unused lease is kept before it is given back.
pub const IDLE: Duration = Duration::from_secs(1);

/// The units of one counter this replica holds.
#[derive(Debug)]
struct Lease {
    left: u64,
    /// The limit the lease was granted under: once the limit changes (a budget lowered by
    /// the control plane, say) the lease serves nothing more and goes back when idle.
    limit: u64,
    /// The most the lease keeps: give-backs beyond it go to Redis at once.
    cap: u64,
    /// The counter's value in Redis after the last grant (for the rate-limit headers).
    counted: u64,
    /// Unix time at which the counter's window or period ends.
    until: u64,
    used_at: Instant,
}

/// The leases of one `shared_state`, by Redis key.
#[derive(Debug, Default)]
pub struct Leases {
    map: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spends units of each key's lease when every key holds enough, all or nothing
    /// (`wants`: key, units, the counter's limit now; a want of 0 needs no lease). For each
    /// key, the count in Redis less what this replica still holds: what has been used of
    /// the counter, as far as this replica knows.
    pub fn take(&self, wants: &[(&str, u64, u64)], now: u64) -> Option<Vec<u64>> {
        let mut map = self.lock();
        let enough = wants.iter().all(|(key, units, limit)| {
            // A key wanted twice needs both.
            let total: u64 = wants.iter().filter(|w| w.0 == *key).map(|w| w.1).sum();
            *units == 0
                || map
                    .get(*key)
                    .is_some_and(|l| l.until > now && l.limit == *limit && l.left >= total)
        });
        if !enough {
            return None;
        }
        let at = Instant::now();
        Some(
            wants
                .iter()
                .map(|(key, units, _)| match map.get_mut(*key) {
                    Some(l) if *units > 0 => {
                        l.left -= units;
                        l.used_at = at;
                        l.counted.saturating_sub(l.left)
                    }
                    _ => 0,
                })
                .collect(),
        )
    }

    /// Takes up to `units` out of `key`'s live lease granted under `limit`; how many it
    /// held towards them.
    pub fn take_up_to(&self, key: &str, units: u64, limit: u64, now: u64) -> u64 {
        let mut map = self.lock();
        let Some(lease) = map.get_mut(key).filter(|l| l.until > now && l.limit == limit) else {
            return 0;
        };
        let taken = lease.left.min(units);
        lease.left -= taken;
        lease.used_at = Instant::now();
        taken
    }

    /// Adds `units` granted on `key` under `limit` (its count in Redis is now `counted`),
    /// until Unix time `until`. What a lease granted under another limit still held, to
    /// give back.
    pub fn grant(&self, key: String, units: u64, counted: u64, until: u64, limit: u64) -> u64 {
        if units == 0 {
            return 0;
        }
        let mut map = self.lock();
        let lease = map.entry(key).or_insert(Lease {
            left: 0,
            limit,
            cap: 0,
            counted,
            until,
            used_at: Instant::now(),
        });
        let stale = if lease.limit == limit {
            0
        } else {
            lease.limit = limit;
            lease.cap = 0;
            std::mem::take(&mut lease.left)
        };
        lease.left = lease.left.saturating_add(units);
        lease.cap = lease.cap.max(units.saturating_mul(2));
        lease.counted = counted;
        lease.until = until;
        lease.used_at = Instant::now();
        stale
    }

    /// A change of `delta` units to `key`'s counter, taken in the lease where it can be: a
    /// give-back (negative) is added to a live lease up to its cap, an extra charge
    /// (positive) is taken from it as far as it goes. The part left for Redis.
    pub fn absorb(&self, key: &str, delta: i64, now: u64) -> i64 {
        let mut map = self.lock();
        let Some(lease) = map.get_mut(key).filter(|l| l.until > now) else {
            return delta;
        };
        if delta < 0 {
            let back = delta.unsigned_abs();
            let kept = back.min(lease.cap.saturating_sub(lease.left));
            lease.left += kept;
            return -i64::try_from(back - kept).unwrap_or(i64::MAX);
        }
        let taken = lease.left.min(delta.unsigned_abs());
        lease.left -= taken;
        delta - i64::try_from(taken).unwrap_or(i64::MAX)
    }

    /// Removes the leases idle for [`IDLE`] (at `at`) and those whose counter has ended;
    /// the unused units of the live ones, to give back.
    pub fn sweep(&self, now: u64, at: Instant) -> Vec<(String, u64)> {
        let mut back = Vec::new();
        self.lock().retain(|key, l| {
            if l.until <= now {
                return false;
            }
            if at.saturating_duration_since(l.used_at) < IDLE {
                return true;
            }
            if l.left > 0 {
                back.push((key.clone(), l.left));
            }
            false
        });
        back
    }

    /// Removes every lease; the unused units of live ones, to give back.
    pub fn drain(&self, now: u64) -> Vec<(String, u64)> {
        self.lock()
            .drain()
            .filter(|(_, l)| l.until > now && l.left > 0)
            .map(|(key, l)| (key, l.left))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants<'a>(list: &[(&'a str, u64)]) -> Vec<(&'a str, u64, u64)> {
        list.iter().map(|(k, n)| (*k, *n, 1_000)).collect()
    }

    #[test]
    fn a_request_is_served_from_leases_only_when_every_counter_has_enough() {
        let l = Leases::default();
        let now = 1_000;
        assert_eq!(l.take(&wants(&[("w", 1)]), now), None);
        l.grant("w".into(), 3, 10, 1_060, 1_000);
        l.grant("b".into(), 500, 500, 2_000, 1_000);
        // One counter short: nothing is spent from either.
        assert_eq!(l.take(&wants(&[("w", 1), ("b", 501)]), now), None);
        assert_eq!(l.take(&wants(&[("w", 1), ("b", 200)]), now), Some(vec![8, 200]));
        assert_eq!(l.take(&wants(&[("w", 1), ("b", 200)]), now), Some(vec![9, 400]));
        assert_eq!(l.take(&wants(&[("w", 1), ("b", 200)]), now), None, "b has 100 left");
        assert_eq!(l.take(&wants(&[("w", 1), ("b", 0)]), now), Some(vec![10, 0]));
        assert_eq!(l.take(&wants(&[("w", 1)]), now), None, "w is spent");
        // A lease whose window ended serves nothing.
        l.grant("w".into(), 5, 20, 1_060, 1_000);
        assert_eq!(l.take(&wants(&[("w", 1)]), 1_060), None);
        // What is left of a lease counts towards a larger request.
        assert_eq!(l.take_up_to("b", 250, 1_000, now), 100);
        assert_eq!(l.take_up_to("b", 250, 1_000, now), 0);
        assert_eq!(l.take_up_to("w", 1, 1_000, 1_060), 0);
        // The same key twice needs both.
        l.grant("d".into(), 1, 1, 2_000, 1_000);
        assert_eq!(l.take(&wants(&[("d", 1), ("d", 1)]), now), None);
    }

    #[test]
    fn a_lease_serves_nothing_once_its_limit_changes() {
        let l = Leases::default();
        let now = 1_000;
        l.grant("b".into(), 500, 500, 2_000, 10_000);
        let lowered = vec![("b", 100, 1_000)];
        assert_eq!(l.take(&lowered, now), None);
        assert_eq!(l.take_up_to("b", 100, 1_000, now), 0);
        // A grant under the new limit hands back what the old lease held.
        assert_eq!(l.grant("b".into(), 50, 50, 2_000, 1_000), 500);
        assert_eq!(l.take(&lowered, now), None, "50 < 100");
        assert_eq!(l.take_up_to("b", 100, 1_000, now), 50);
    }

    #[test]
    fn give_backs_go_into_a_live_lease_and_extra_charges_come_out_of_it() {
        let l = Leases::default();
        let now = 1_000;
        assert_eq!(l.absorb("b", -50, now), -50, "no lease: to Redis");
        l.grant("b".into(), 100, 0, 2_000, 1_000);
        assert_eq!(l.absorb("b", -50, now), 0);
        assert_eq!(l.absorb("b", 120, now), 0, "150 held covers 120");
        assert_eq!(l.absorb("b", 40, now), 10, "30 held, 10 to Redis");
        assert_eq!(l.absorb("b", -5, 2_000), -5, "an ended lease takes nothing");
        // A lease keeps at most twice its grant; give-backs beyond go to Redis.
        assert_eq!(l.absorb("b", -250, now), -50);
    }

    #[test]
    fn idle_leases_are_given_back_and_ended_ones_dropped() {
        let l = Leases::default();
        let now = 1_000;
        l.grant("idle".into(), 7, 7, 2_000, 1_000);
        l.grant("ended".into(), 9, 9, 1_001, 1_000);
        l.grant("busy".into(), 4, 4, 2_000, 1_000);
        assert!(l.take(&wants(&[("busy", 1)]), now).is_some());
        let later = Instant::now() + IDLE;
        // Only a moment later: nothing is idle yet.
        assert!(l.sweep(now, Instant::now()).is_empty());
        let mut back = l.sweep(1_001, later);
        back.sort();
        assert_eq!(back, vec![("busy".to_owned(), 3), ("idle".to_owned(), 7)]);
        assert!(l.is_empty());
        l.grant("a".into(), 2, 2, 2_000, 100);
        l.grant("gone".into(), 2, 2, 1_000, 100);
        assert_eq!(l.drain(now), vec![("a".to_owned(), 2)]);
    }
}
