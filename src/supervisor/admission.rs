//! What happens before an execution gets a runner: the result cache (a hit costs no runner)
//! and per-plugin rate limits (token buckets).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::execution::ExecutionResult;
use crate::units::Rate;

/// Cached results kept at most, across plugins; the oldest go first.
const CACHE_ENTRIES: usize = 4096;

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
    entries: HashMap<String, (Instant, ExecutionResult)>,
    order: VecDeque<String>,
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
            Some((expires, result)) if *expires > now => Some(result.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&mut self, key: String, ttl: Duration, result: ExecutionResult, now: Instant) {
        if self.entries.insert(key.clone(), (now + ttl, result)).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CACHE_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
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

    #[test]
    fn keys_are_canonical() {
        let a = cache_key("p", "1.0.0", &json!({"a": 1, "b": {"y": 2, "x": [1, {"k": 1, "j": 2}]}}), &json!({}));
        let b = cache_key("p", "1.0.0", &json!({"b": {"x": [1, {"j": 2, "k": 1}], "y": 2}, "a": 1}), &json!({}));
        assert_eq!(a, b);
        assert_ne!(a, cache_key("p", "1.0.1", &json!({"a": 1}), &json!({})));
        assert_ne!(a, cache_key("p", "1.0.0", &json!({"a": 1, "b": {"y": 2, "x": [{"k": 1, "j": 2}, 1]}}), &json!({})));
    }
}
