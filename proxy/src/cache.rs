//! The exact response cache (`cache:` section): answers the policies let through unchanged,
//! keyed by a SHA-256 over the API, the policy digest, the caller's scope and the request
//! normalized (object keys sorted; `stream`, `stream_options` and the client's `user` tag
//! left out), so a streamed request can be answered from a cached JSON answer and replayed
//! as SSE.
//!
//! With `cache.shared` answers are also kept in `shared_state`'s Redis: a miss here looks
//! there (one round trip, by the leader only) before going upstream, and a stored answer is
//! written there off the request's path, so every replica answers from one cache. While
//! Redis is away the cache is this process's alone.
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

use crate::shared::Shared;

pub type Key = [u8; 32];

/// The largest answer kept in Redis (larger ones stay in the process's own cache), so one
/// client cannot fill Redis or its connection with huge answers.
pub const MAX_SHARED_ENTRY_BYTES: u64 = 1 << 20;

/// How long a follower waits for its leader before going upstream itself.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// One stored answer, in the client's format.
#[derive(Debug, PartialEq)]
pub struct Cached {
    pub body: Bytes,
    /// The target that produced it.
    pub target: String,
    pub usage: Option<kt_policy::usage::Usage>,
}

/// The first bytes of an answer kept in Redis (a format change makes old entries misses).
const MAGIC: &[u8; 4] = b"ktc1";

impl Cached {
    /// `MAGIC`, the target's length (2 bytes) and name, a usage flag and its four counts,
    /// then the body.
    fn encode(&self) -> Vec<u8> {
        let target = &self.target.as_bytes()[..self.target.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(4 + 2 + target.len() + 33 + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(target.len() as u16).to_be_bytes());
        out.extend_from_slice(target);
        match self.usage {
            None => out.push(0),
            Some(u) => {
                out.push(1);
                for n in [u.prompt, u.completion, u.cached, u.reasoning] {
                    out.extend_from_slice(&n.to_be_bytes());
                }
            }
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// An answer read back from Redis; `None` for anything not written by `encode`.
    fn decode(bytes: &[u8]) -> Option<Cached> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let target = std::str::from_utf8(rest.get(..len)?).ok()?.to_owned();
        let (flag, mut rest) = rest.get(len..)?.split_first()?;
        let usage = match flag {
            0 => None,
            1 => {
                let mut n = [0u64; 4];
                for x in &mut n {
                    let (b, r) = rest.split_first_chunk::<8>()?;
                    *x = u64::from_be_bytes(*b);
                    rest = r;
                }
                Some(kt_policy::usage::Usage {
                    prompt: n[0],
                    completion: n[1],
                    cached: n[2],
                    reasoning: n[3],
                })
            }
            _ => return None,
        };
        Some(Cached {
            body: Bytes::copy_from_slice(rest),
            target,
            usage,
        })
    }
}

/// A cache's settings: TTL seconds, entries, largest entry, and whether Redis holds it too.
type Settings = (u64, u64, u64, bool);

#[derive(Debug)]
struct Store {
    /// The settings this store was built for (a reload with equal settings keeps it).
    settings: Option<Settings>,
    entries: Option<Cache<Key, Arc<Cached>>>,
    max_entry_bytes: u64,
    ttl: u64,
    shared: bool,
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

fn settings(config: &PolicyConfig) -> Option<Settings> {
    config
        .cache
        .as_ref()
        .filter(|c| c.enabled)
        .map(|c| (c.ttl_seconds, c.max_entries, c.max_entry_bytes, c.shared))
}

fn store_for(s: Option<Settings>) -> Store {
    Store {
        settings: s,
        entries: s.map(|(ttl, max, _, _)| {
            Cache::builder()
                .max_capacity(max)
                .time_to_live(Duration::from_secs(ttl))
                .build()
        }),
        max_entry_bytes: s.map_or(0, |(_, _, b, _)| b),
        ttl: s.map_or(0, |(t, ..)| t),
        shared: s.is_some_and(|(.., shared)| shared),
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
    /// The leader of a shared cache looks in Redis (`shared`) before going upstream.
    pub async fn lookup(self: &Arc<Self>, key: Key, shared: Option<&Shared>) -> Lookup {
        let store = self.store.load_full();
        let Some(entries) = store.entries.as_ref() else {
            return Lookup::Miss;
        };
        if let Some(hit) = entries.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(hit);
        }
        let lead = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(());
                    map.insert(key, rx);
                    Ok(tx)
                }
            }
        };
        let mut waiting = match lead {
            Ok(tx) => {
                let fill = Fill {
                    key,
                    _done: tx,
                    cache: Arc::clone(self),
                };
                // Another replica's answer: kept here too; the followers find it here once
                // `fill` is dropped.
                let most = store.max_entry_bytes.min(MAX_SHARED_ENTRY_BYTES);
                if let Some(shared) = shared.filter(|_| store.shared)
                    && let Some(bytes) = shared.cache_get(&key, most + 1024).await
                    && let Some(hit) = Cached::decode(&bytes).filter(|c| c.body.len() as u64 <= most)
                {
                    let hit = Arc::new(hit);
                    entries.insert(key, Arc::clone(&hit));
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Hit(hit);
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                return Lookup::Leader(fill);
            }
            Err(rx) => rx,
        };
        // The sender is dropped when the leader finishes: `changed` then errs.
        let _ = tokio::time::timeout(FOLLOW_TIMEOUT, waiting.changed()).await;
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

    /// Stores the leader's answer (if it fits), and in Redis (`shared`) for a shared
    /// cache, off the request's path.
    pub fn fill(&self, fill: &Fill, value: Cached, shared: Option<&Arc<Shared>>) {
        let store = self.store.load();
        if let Some(entries) = store.entries.as_ref()
            && value.body.len() as u64 <= store.max_entry_bytes
        {
            let shareable = value.body.len() as u64 <= MAX_SHARED_ENTRY_BYTES;
            if let Some(shared) = shared.filter(|_| store.shared && shareable).map(Arc::clone) {
                let (key, bytes, ttl) = (fill.key, value.encode(), store.ttl);
                tokio::spawn(async move { shared.cache_set(&key, &bytes, ttl).await });
            }
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

    #[test]
    fn answers_kept_in_redis_read_back_as_written_and_nothing_else_does() {
        let with_usage = Cached {
            body: Bytes::from_static(b"{\"choices\":[]}"),
            target: "primary".into(),
            usage: Some(kt_policy::usage::Usage {
                prompt: 3,
                completion: 4,
                cached: 1,
                reasoning: u64::MAX,
            }),
        };
        assert_eq!(Cached::decode(&with_usage.encode()), Some(with_usage));
        let bare = Cached {
            body: Bytes::new(),
            target: String::new(),
            usage: None,
        };
        let bytes = bare.encode();
        assert_eq!(Cached::decode(&bytes), Some(bare));
        for bad in [
            &b""[..],
            b"ktc1",
            b"ktc1\x00\x09abc",
            b"ktc0\x00\x00\x00",
            b"ktc1\x00\x00\x07",
        ] {
            assert_eq!(Cached::decode(bad), None, "{bad:?}");
        }
        // A cut-off usage block is not read as one.
        let cut = &Cached {
            usage: Some(kt_policy::usage::Usage::default()),
            ..Cached::decode(&bytes).expect("bare")
        }
        .encode()[..12];
        assert_eq!(Cached::decode(cut), None);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_leader() {
        let cache = Arc::new(ResponseCache::new(&config("cache: {ttl_seconds: 60}\n")));
        let k = key("chat", "d", "s", &json!({"q": 1}));
        let Lookup::Leader(fill) = cache.lookup(k, None).await else {
            panic!("first lookup leads")
        };
        let c2 = Arc::clone(&cache);
        let follower = tokio::spawn(async move { c2.lookup(k, None).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!follower.is_finished(), "the follower waits for the leader");
        cache.fill(
            &fill,
            Cached {
                body: Bytes::from_static(b"{}"),
                target: "t".into(),
                usage: None,
            },
            None,
        );
        drop(fill);
        let got = follower.await.expect("join");
        assert!(matches!(got, Lookup::Hit(_)));
        assert!(matches!(cache.lookup(k, None).await, Lookup::Hit(_)));
    }

    #[tokio::test]
    async fn an_uncacheable_answer_releases_followers_to_go_upstream() {
        let cache = Arc::new(ResponseCache::new(&config("cache: {}\n")));
        let k = key("chat", "d", "s", &json!({"q": 2}));
        let Lookup::Leader(fill) = cache.lookup(k, None).await else {
            panic!("leader")
        };
        let c2 = Arc::clone(&cache);
        let follower = tokio::spawn(async move { c2.lookup(k, None).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(fill);
        assert!(matches!(follower.await.expect("join"), Lookup::Miss));
        // The next request leads again.
        assert!(matches!(cache.lookup(k, None).await, Lookup::Leader(_)));
    }

    #[tokio::test]
    async fn disabled_or_absent_cache_always_misses_and_oversized_answers_are_not_kept() {
        let off = Arc::new(ResponseCache::new(&config("")));
        assert!(!off.enabled());
        assert!(matches!(off.lookup([0; 32], None).await, Lookup::Miss));
        let small = Arc::new(ResponseCache::new(&config("cache: {max_entry_bytes: 4}\n")));
        let Lookup::Leader(fill) = small.lookup([1; 32], None).await else {
            panic!("leader")
        };
        small.fill(
            &fill,
            Cached {
                body: Bytes::from_static(b"too large"),
                target: "t".into(),
                usage: None,
            },
            None,
        );
        drop(fill);
        assert!(!matches!(small.lookup([1; 32], None).await, Lookup::Hit(_)));
    }
}
