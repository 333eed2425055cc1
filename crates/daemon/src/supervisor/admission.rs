//! What happens before an execution gets a runner: the result cache (a hit costs no runner)
//! and per-plugin rate limits (token buckets).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::execution::ExecutionResult;
use crate::catalog::units::Rate;

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
