//! The exact response cache (`cache:` section): answers the policies let through unchanged,
//! keyed by a SHA-256 over the API, the policy digest, the caller's scope and the request
//! normalized (object keys sorted; `stream`, `stream_options` and the client's `user` tag
//! left out), so a streamed request can be answered from a cached JSON answer and replayed
//! as SSE.
//!
//! Concurrent identical misses are coalesced: the first becomes the leader and calls the
//! upstream; the others wait (bounded) for its answer and use it when it was stored, or go
//! upstream themselves when it was not (blocked, redacted, escalated, degraded or failed
//! answers are never stored).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use kt_policy::config::PolicyConfig;
use moka::sync::Cache;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub type Key = [u8; 32];

/// How long a follower waits for its leader before going upstream itself.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// One stored answer, in the client's format.
#[derive(Debug)]
pub struct Cached {
    pub body: Bytes,
    /// The target that produced it.
    pub target: String,
    pub usage: Option<kt_policy::usage::Usage>,
}

#[derive(Debug)]
struct Store {
    /// The settings this store was built for (a reload with equal settings keeps it).
    settings: Option<(u64, u64, u64)>,
    entries: Option<Cache<Key, Arc<Cached>>>,
    max_entry_bytes: u64,
}

/// The cache and its single-flight table.
#[derive(Debug)]
pub struct ResponseCache {
    store: ArcSwap<Store>,
    inflight: Mutex<HashMap<Key, watch::Receiver<()>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The outcome of a lookup.
pub enum Lookup {
    Hit(Arc<Cached>),
    /// Call upstream; store the answer with `fill` if it may be cached. Dropping the guard
    /// releases the followers.
    Leader(Fill),
    /// Call upstream without storing (the leader's answer was not cacheable).
    Miss,
}

/// The leader's right to fill one key.
pub struct Fill {
    pub key: Key,
    _done: watch::Sender<()>,
    cache: Arc<ResponseCache>,
}

impl Drop for Fill {
    fn drop(&mut self) {
        let mut map = self.cache.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

fn settings(config: &PolicyConfig) -> Option<(u64, u64, u64)> {
    config
        .cache
        .as_ref()
        .filter(|c| c.enabled)
        .map(|c| (c.ttl_seconds, c.max_entries, c.max_entry_bytes))
}

fn store_for(s: Option<(u64, u64, u64)>) -> Store {
    Store {
        settings: s,
        entries: s.map(|(ttl, max, _)| {
            Cache::builder()
                .max_capacity(max)
                .time_to_live(Duration::from_secs(ttl))
                .build()
        }),
        max_entry_bytes: s.map_or(0, |(_, _, b)| b),
    }
}

impl ResponseCache {
    pub fn new(config: &PolicyConfig) -> Self {
        ResponseCache {
            store: ArcSwap::from_pointee(store_for(settings(config))),
            inflight: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Follows a configuration: a change of settings starts an empty store.
    pub fn configure(&self, config: &PolicyConfig) {
        let s = settings(config);
        if self.store.load().settings != s {
            self.store.store(Arc::new(store_for(s)));
        }
    }

    pub fn enabled(&self) -> bool {
        self.store.load().entries.is_some()
    }

    /// Looks `key` up; on a miss, makes the caller the leader or waits for the one there is.
    pub async fn lookup(self: &Arc<Self>, key: Key) -> Lookup {
        let store = self.store.load_full();
        let Some(entries) = store.entries.as_ref() else {
            return Lookup::Miss;
        };
        if let Some(hit) = entries.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(hit);
        }
        let waiting = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(rx) => Some(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(());
                    map.insert(key, rx);
                    drop(map);
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Leader(Fill {
                        key,
                        _done: tx,
                        cache: Arc::clone(self),
                    });
                }
            }
        };
        if let Some(mut rx) = waiting {
            // The sender is dropped when the leader finishes: `changed` then errs.
            let _ = tokio::time::timeout(FOLLOW_TIMEOUT, rx.changed()).await;
        }
        match entries.get(&key) {
            Some(hit) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(hit)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss
            }
        }
    }

    /// Stores the leader's answer (if it fits).
    pub fn fill(&self, fill: &Fill, value: Cached) {
        let store = self.store.load();
        if let Some(entries) = store.entries.as_ref()
            && value.body.len() as u64 <= store.max_entry_bytes
        {
            entries.insert(fill.key, Arc::new(value));
        }
    }

    pub fn stats_json(&self) -> Value {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        let entries = self.store.load().entries.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        });
        let rate = if hits + misses == 0 {
            0.0
        } else {
            (hits as f64 * 1000.0 / (hits + misses) as f64).round() / 10.0
        };
        json!({"enabled": self.enabled(), "entries": entries, "hit_rate_pct": rate, "hits": hits, "misses": misses})
    }

    /// (hits, misses, entries) for the metrics.
    pub fn counters(&self) -> (u64, u64, u64) {
        let entries = self.store.load().entries.as_ref().map_or(0, |c| c.entry_count());
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            entries,
        )
    }
}

/// The cache key of a request: API, policy digest, caller scope and normalized body.
pub fn key(api: &str, digest: &str, scope: &str, request: &Value) -> Key {
    let mut h = Sha256::new();
    h.update(api.as_bytes());
    h.update([0]);
    h.update(digest.as_bytes());
    h.update([0]);
    h.update(scope.as_bytes());
    h.update([0]);
    if let Value::Object(o) = request {
        let mut keys: Vec<&String> = o
            .keys()
            .filter(|k| !matches!(k.as_str(), "stream" | "stream_options" | "user"))
            .collect();
        keys.sort();
        for k in keys {
            h.update(k.as_bytes());
            h.update([1]);
            canonical(&mut h, &o[k.as_str()]);
        }
    } else {
        canonical(&mut h, request);
    }
    h.finalize().into()
}

fn canonical(h: &mut Sha256, v: &Value) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(k.as_bytes());
                h.update([1]);
                canonical(h, &o[k.as_str()]);
            }
            h.update(b"}");
        }
        Value::Array(a) => {
            h.update(b"[");
            for x in a {
                canonical(h, x);
                h.update([2]);
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kt_policy::config::{Source, load_sources};

    fn config(extra: &str) -> PolicyConfig {
        let text = format!("pack: {{name: c, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\n{extra}");
        load_sources(&[Source {
            name: "c.yaml".into(),
            text,
        }])
        .config
        .expect("valid")
    }

    #[test]
    fn keys_ignore_key_order_and_stream_flags_but_not_content_or_scope() {
        let a = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0});
        let b = json!({"temperature": 0, "stream": true, "stream_options": {"include_usage": true}, "messages": [{"content": "hi", "role": "user"}], "model": "m"});
        let c = json!({"model": "m", "messages": [{"role": "user", "content": "hi!"}], "temperature": 0});
        assert_eq!(key("chat", "d", "s", &a), key("chat", "d", "s", &b));
        assert_ne!(key("chat", "d", "s", &a), key("chat", "d", "s", &c));
        assert_ne!(key("chat", "d", "s", &a), key("chat", "d2", "s", &a), "policy digest");
        assert_ne!(key("chat", "d", "s", &a), key("chat", "d", "s2", &a), "caller scope");
        assert_ne!(key("chat", "d", "s", &a), key("embeddings", "d", "s", &a), "api");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_leader() {
        let cache = Arc::new(ResponseCache::new(&config("cache: {ttl_seconds: 60}\n")));
        let k = key("chat", "d", "s", &json!({"q": 1}));
        let Lookup::Leader(fill) = cache.lookup(k).await else {
            panic!("first lookup leads")
        };
        let c2 = Arc::clone(&cache);
        let follower = tokio::spawn(async move { c2.lookup(k).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!follower.is_finished(), "the follower waits for the leader");
        cache.fill(
            &fill,
            Cached {
                body: Bytes::from_static(b"{}"),
                target: "t".into(),
                usage: None,
            },
        );
        drop(fill);
        let got = follower.await.expect("join");
        assert!(matches!(got, Lookup::Hit(_)));
        assert!(matches!(cache.lookup(k).await, Lookup::Hit(_)));
    }

    #[tokio::test]
    async fn an_uncacheable_answer_releases_followers_to_go_upstream() {
        let cache = Arc::new(ResponseCache::new(&config("cache: {}\n")));
        let k = key("chat", "d", "s", &json!({"q": 2}));
        let Lookup::Leader(fill) = cache.lookup(k).await else {
            panic!("leader")
        };
        let c2 = Arc::clone(&cache);
        let follower = tokio::spawn(async move { c2.lookup(k).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(fill);
        assert!(matches!(follower.await.expect("join"), Lookup::Miss));
        // The next request leads again.
        assert!(matches!(cache.lookup(k).await, Lookup::Leader(_)));
    }

    #[tokio::test]
    async fn disabled_or_absent_cache_always_misses_and_oversized_answers_are_not_kept() {
        let off = Arc::new(ResponseCache::new(&config("")));
        assert!(!off.enabled());
        assert!(matches!(off.lookup([0; 32]).await, Lookup::Miss));
        let small = Arc::new(ResponseCache::new(&config("cache: {max_entry_bytes: 4}\n")));
        let Lookup::Leader(fill) = small.lookup([1; 32]).await else {
            panic!("leader")
        };
        small.fill(
            &fill,
            Cached {
                body: Bytes::from_static(b"too large"),
                target: "t".into(),
                usage: None,
            },
        );
        drop(fill);
        assert!(!matches!(small.lookup([1; 32]).await, Lookup::Hit(_)));
    }
}
