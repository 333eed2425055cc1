//! What happens before an execution gets a runner, owned by [`Admission`]: the result cache (a
//! hit costs no runner), per-plugin rate limits (token buckets), and a slot (the global and the
//! plugin's concurrency, a bounded queue in front of them, one uid per slot).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::catalog::units::Rate;
use crate::execution_result::ExecutionResult;

/// Why an execution is not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("too many executions in flight; retry later")]
    Overloaded,
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The one owner of what admits an execution.
pub struct Admission {
    max_queued: usize,
    accepting: AtomicBool,
    slots: Arc<Semaphore>,
    /// Per-plugin slots, `(concurrency, slots)`: replaced when a reload changes the limit.
    plugin_slots: Mutex<BTreeMap<String, (u64, Arc<Semaphore>)>>,
    free_uids: Arc<Mutex<Vec<u32>>>,
    waiting: AtomicUsize,
    rate_limiter: Mutex<RateLimiter>,
    cache: Mutex<ResultCache>,
}

/// An admitted execution's place: its uid, and its share of the global and the plugin's
/// concurrency. Dropped, the uid goes back first, then the permits.
pub struct Slot {
    uid: u32,
    free_uids: Arc<Mutex<Vec<u32>>>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Slot {
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.free_uids).push(self.uid);
    }
}

impl Admission {
    /// `max_concurrent` slots with a uid each (`uids` yields at least that many), and a queue
    /// of `max_queued` in front of them.
    pub fn new(max_concurrent: usize, max_queued: usize, uids: impl Iterator<Item = u32>) -> Self {
        Admission {
            max_queued,
            accepting: AtomicBool::new(true),
            slots: Arc::new(Semaphore::new(max_concurrent)),
            plugin_slots: Mutex::new(BTreeMap::new()),
            free_uids: Arc::new(Mutex::new(uids.take(max_concurrent).collect::<Vec<_>>().into_iter().rev().collect())),
            waiting: AtomicUsize::new(0),
            rate_limiter: Mutex::new(RateLimiter::default()),
            cache: Mutex::new(ResultCache::default()),
        }
    }

    pub fn accepting(&self) -> Result<(), Refusal> {
        if self.accepting.load(Ordering::SeqCst) { Ok(()) } else { Err(Refusal::ShuttingDown) }
    }

    /// A cached success for `key`, if one is fresh.
    pub fn cached(&self, key: &str) -> Option<ExecutionResult> {
        lock(&self.cache).get(key, Instant::now())
    }

    /// Keeps a success for `ttl`.
    pub fn remember(&self, key: String, ttl: Duration, result: ExecutionResult) {
        lock(&self.cache).put(key, ttl, result, Instant::now());
    }

    /// The cache's entries and bytes.
    pub fn cache_usage(&self) -> (usize, usize) {
        let cache = lock(&self.cache);
        (cache.entries(), cache.bytes())
    }

    /// A token of `plugin`'s rate, or how long until one is available.
    pub fn take_token(&self, plugin: &str, rate: Rate) -> Result<(), Duration> {
        lock(&self.rate_limiter).acquire(plugin, rate, Instant::now())
    }

    /// A slot now, or after a wait in the bounded queue. The plugin's own slot comes first, so
    /// executions queued behind a busy plugin hold no global slot that other plugins could use.
    pub async fn slot(&self, plugin: &str, concurrency: u64) -> Result<Slot, Refusal> {
        let plugin_permit = self.acquire(self.plugin_slots(plugin, concurrency)).await?;
        let permit = self.acquire(self.slots.clone()).await?;
        let uid = lock(&self.free_uids).pop().expect("one uid per semaphore permit");
        Ok(Slot { uid, free_uids: self.free_uids.clone(), _permits: (permit, plugin_permit) })
    }

    /// A permit of `slots` now, or after a wait in the bounded queue (full: `Overloaded`).
    async fn acquire(&self, slots: Arc<Semaphore>) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::Overloaded);
        }
        let acquired = slots.acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        acquired.map_err(|_| Refusal::ShuttingDown)
    }

    /// The plugin's slots for its current concurrency limit. Executions holding permits of a
    /// replaced semaphore finish on it; new ones use the new limit.
    fn plugin_slots(&self, plugin: &str, concurrency: u64) -> Arc<Semaphore> {
        let mut all = lock(&self.plugin_slots);
        let entry = all.entry(plugin.to_string()).or_insert_with(|| (0, Arc::new(Semaphore::new(0))));
        if entry.0 != concurrency {
            *entry = (concurrency, Arc::new(Semaphore::new(concurrency as usize)));
        }
        entry.1.clone()
    }

    /// Executions waiting in the queue for a slot.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Admits nothing more (on shutdown).
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Wakes every waiter with `ShuttingDown` (once in-flight executions are over).
    pub fn close(&self) {
        self.slots.close();
        for (_, slots) in lock(&self.plugin_slots).values() {
            slots.close();
        }
    }
}

/// Cached results kept at most, across plugins, and their total encoded size; the oldest go
/// first. A result larger than `CACHE_ENTRY_BYTES` is not cached.
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 64 << 20;
const CACHE_ENTRY_BYTES: usize = 1 << 20;

/// Token buckets, one per plugin: `count` tokens, refilled continuously over `per`.
#[derive(Default)]
pub struct RateLimiter {
    buckets: HashMap<String, Bucket>,
}

struct Bucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes a token for `plugin`, or says how long until one is available.
    pub fn acquire(&mut self, plugin: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let bucket =
            self.buckets.entry(plugin.to_string()).or_insert(Bucket { rate, tokens: f64::from(rate.count), at: now });
        if bucket.rate != rate {
            // The limit changed (policy or plugin update): keep the fill level, within the new size.
            bucket.rate = rate;
            bucket.tokens = bucket.tokens.min(f64::from(rate.count));
        }
        let per_token = rate.per.as_secs_f64() / f64::from(rate.count);
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed / per_token).min(f64::from(rate.count));
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) * per_token))
        }
    }
}

/// Successful results by plugin, version and canonical parameters (and the plugin's config,
/// which changes what a result means).
#[derive(Default)]
pub struct ResultCache {
    entries: HashMap<String, CacheEntry>,
    order: VecDeque<String>,
    bytes: usize,
}

struct CacheEntry {
    expires: Instant,
    size: usize,
    result: ExecutionResult,
}

/// The cache key: object keys sorted at every depth, so `{"a":1,"b":2}` and `{"b":2,"a":1}`
/// are the same request.
pub fn cache_key(plugin: &str, version: &str, parameters: &Value, config: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::to_value(sorted).unwrap_or(Value::Null)
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    format!("{plugin}\0{version}\0{}\0{}", canonical(parameters), canonical(config))
}

impl ResultCache {
    pub fn get(&mut self, key: &str, now: Instant) -> Option<ExecutionResult> {
        match self.entries.get(key) {
            Some(entry) if entry.expires > now => Some(entry.result.clone()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&mut self, key: String, ttl: Duration, result: ExecutionResult, now: Instant) {
        let size = key.len() + serde_json::to_vec(&result).map_or(usize::MAX, |v| v.len());
        if size > CACHE_ENTRY_BYTES {
            return;
        }
        self.remove(&key);
        self.bytes += size;
        self.entries.insert(key.clone(), CacheEntry { expires: now + ttl, size, result });
        self.order.push_back(key);
        while self.order.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES {
            match self.order.pop_front() {
                Some(old) => self.remove(&old),
                None => break,
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.size;
            self.order.retain(|k| k != key);
        }
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_bucket() {
        let mut limiter = RateLimiter::default();
        let rate = Rate { count: 2, per: Duration::from_secs(60) };
        let t0 = Instant::now();
        assert!(limiter.acquire("p", rate, t0).is_ok());
        assert!(limiter.acquire("p", rate, t0).is_ok());
        let wait = limiter.acquire("p", rate, t0).unwrap_err();
        assert!((29..=30).contains(&wait.as_secs()), "{wait:?}");
        assert!(limiter.acquire("other", rate, t0).is_ok(), "buckets are per plugin");
        assert!(limiter.acquire("p", rate, t0 + Duration::from_secs(30)).is_ok());
        assert!(limiter.acquire("p", rate, t0 + Duration::from_secs(31)).is_err());
    }

    fn result(data: Value) -> ExecutionResult {
        serde_json::from_value(json!({
            "id": "x", "plugin": "p", "plugin_version": "1.0.0", "status": "success", "data": data,
            "error": null, "duration_ms": 1, "cpu_time_ms": 1, "peak_memory_bytes": 1, "signal": null,
            "layers": {"resources": "fallback", "sandbox": null}, "log": "", "started_at": 0
        }))
        .unwrap()
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let mut cache = ResultCache::default();
        let t0 = Instant::now();
        cache.put("a".into(), Duration::from_secs(10), result(json!(1)), t0);
        assert!(cache.get("a", t0 + Duration::from_secs(9)).is_some());
        assert!(cache.get("a", t0 + Duration::from_secs(10)).is_none(), "expired");
        assert_eq!((cache.entries(), cache.bytes()), (0, 0));
        cache.put("big".into(), Duration::from_secs(10), result(json!("x".repeat(CACHE_ENTRY_BYTES))), t0);
        assert_eq!(cache.entries(), 0, "a result over the per-entry size is not cached");
        let half = json!("y".repeat(CACHE_ENTRY_BYTES / 2));
        for i in 0..(CACHE_BYTES / (CACHE_ENTRY_BYTES / 2)) + 10 {
            cache.put(format!("k{i}"), Duration::from_secs(10), result(half.clone()), t0);
        }
        assert!(cache.bytes() <= CACHE_BYTES, "{}", cache.bytes());
        assert!(cache.get("k0", t0).is_none(), "the oldest went first");
        assert!(cache.get(&format!("k{}", CACHE_BYTES / (CACHE_ENTRY_BYTES / 2) + 9), t0).is_some());
    }

    #[test]
    fn keys_are_canonical() {
        let a = cache_key("p", "1.0.0", &json!({"a": 1, "b": {"y": 2, "x": [1, {"k": 1, "j": 2}]}}), &json!({}));
        let b = cache_key("p", "1.0.0", &json!({"b": {"x": [1, {"j": 2, "k": 1}], "y": 2}, "a": 1}), &json!({}));
        assert_eq!(a, b);
        assert_ne!(a, cache_key("p", "1.0.1", &json!({"a": 1}), &json!({})));
        assert_ne!(a, cache_key("p", "1.0.0", &json!({"a": 1, "b": {"y": 2, "x": [{"k": 1, "j": 2}, 1]}}), &json!({})));
    }
}
