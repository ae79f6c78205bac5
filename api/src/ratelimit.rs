//! Fixed-window rate limits per client IP and per user
//! (`RATE_LIMIT_WINDOW_MS`, `RATE_LIMIT_MAX_REQUESTS`; `0` disables).
//!
//! In memory, per replica: with N replicas behind a balancer a client gets
//! up to N times the limit. That is the price of a stateless API (no shared
//! store on the request path); a balancer with sticky sessions, or a limit
//! at the edge, tightens it when needed. The window counters are soft state:
//! losing them on a restart only forgives some requests.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Most keys tracked at once. When full, expired windows are dropped; if
/// every key is still active, new keys are refused (a flood of distinct
/// clients is exactly what a limit is for).
const KEYS_MAX: usize = 200_000;
/// Independent maps, so that concurrent requests rarely share a lock.
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

/// A rate limiter over string keys (`ip:1.2.3.4`, `user:<id>`).
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    shards: Vec<Mutex<HashMap<String, Window>>>,
}

/// Refused: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter { limit, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    /// Counts one request for `key`.
    pub fn check(&self, key: &str) -> Result<(), Refused> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Refused> {
        let shard = &self.shards[shard_of(key)];
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.limit.window;
        if let Some(w) = map.get_mut(key) {
            if now.duration_since(w.started) >= window {
                *w = Window { started: now, count: 1 };
                return Ok(());
            }
            if w.count >= self.limit.requests_max {
                return Err(Refused { retry_after: window.saturating_sub(now.duration_since(w.started)) });
            }
            w.count += 1;
            return Ok(());
        }
        if map.len() >= KEYS_MAX / SHARDS {
            map.retain(|_, w| now.duration_since(w.started) < window);
            if map.len() >= KEYS_MAX / SHARDS {
                return Err(Refused { retry_after: window });
            }
        }
        map.insert(key.to_string(), Window { started: now, count: 1 });
        Ok(())
    }
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap, and good enough to spread keys over a few shards.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(hash % SHARDS as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_max_requests_per_window_then_a_retry_time() {
        let limiter = RateLimiter::new(RateLimit { window: Duration::from_secs(10), requests_max: 3 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("ip:1", t0).is_ok());
        }
        let refused = limiter.check_at("ip:1", t0 + Duration::from_secs(4)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        assert!(limiter.check_at("ip:2", t0).is_ok(), "keys are independent");
        assert!(limiter.check_at("ip:1", t0 + Duration::from_secs(10)).is_ok(), "a new window starts");
    }
}
