//! Fixed-window rate limits per client IP and per user
//! (`RATE_LIMIT_WINDOW_MS`, `RATE_LIMIT_MAX_REQUESTS`; `0` disables).
//!
//! In memory, per replica: with N replicas behind a balancer a client gets
//! up to N times the limit. That is the price of a stateless API (no shared
//! store on the request path); a balancer with sticky sessions, or a limit
//! at the edge, tightens it when needed. The window counters are soft state:
//! losing them on a restart only forgives some requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Most keys tracked at once. When a shard is full, expired windows are
/// dropped; if every key is still active, the oldest windows are dropped
/// (forgiving their counts) rather than refusing new clients: a flood of
/// distinct addresses must not lock everyone else out.
const KEYS_MAX: usize = 200_000;
/// When a shard is full of active windows, this share of it (the oldest)
/// is dropped at once, so that the scan that finds them is paid rarely.
const EVICT_SHARE_DIVISOR: usize = 16;
/// Independent maps, so that concurrent requests rarely share a lock.
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

/// A rate limiter over string keys (`ip:1.2.3.4`, `ip6:2001:db8:0:1::/64`,
/// `user:<id>`, `email:<address>`).
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    keys_per_shard: usize,
    shards: Vec<Mutex<HashMap<String, Window>>>,
}

/// Refused: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter::with_capacity(limit, KEYS_MAX)
    }

    /// A limiter tracking at most about `keys_max` keys.
    fn with_capacity(limit: RateLimit, keys_max: usize) -> RateLimiter {
        RateLimiter {
            limit,
            keys_per_shard: (keys_max / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
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
        let keys_max = self.keys_per_shard;
        if map.len() >= keys_max {
            map.retain(|_, w| now.duration_since(w.started) < window);
            if map.len() >= keys_max {
                evict_oldest(&mut map, (keys_max / EVICT_SHARE_DIVISOR).max(1));
            }
        }
        map.insert(key.to_string(), Window { started: now, count: 1 });
        Ok(())
    }
}

/// Drops the `count` windows that started first.
fn evict_oldest(map: &mut HashMap<String, Window>, count: usize) {
    let mut starts: Vec<Instant> = map.values().map(|w| w.started).collect();
    if count >= starts.len() {
        map.clear();
        return;
    }
    let (_, threshold, _) = starts.select_nth_unstable(count - 1);
    let threshold = *threshold;
    let mut dropped = 0;
    map.retain(|_, w| {
        // Ties at the threshold: drop only as many as needed.
        let drop = w.started < threshold || (w.started == threshold && dropped < count);
        if drop {
            dropped += 1;
        }
        !drop
    });
}

/// The key of a client address: IPv4 as is; IPv6 by its /64, the block one
/// subscriber gets (one host can use any address of it, so the full
/// address would give it unlimited buckets). An IPv4-mapped IPv6 address
/// is its IPv4 address.
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
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

    #[test]
    fn ipv6_clients_share_the_limit_of_their_64() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("an address");
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip_key(ip("2001:db8:1:2:ffff:1:2:3")));
        assert_ne!(ip_key(ip("2001:db8:1:2::1")), ip_key(ip("2001:db8:1:3::1")));
        assert_eq!(ip_key(ip("::ffff:203.0.113.7")), ip_key(ip("203.0.113.7")));
        assert_ne!(ip_key(ip("203.0.113.7")), ip_key(ip("203.0.113.8")));
        let limiter = RateLimiter::new(RateLimit { window: Duration::from_secs(60), requests_max: 2 });
        let t0 = Instant::now();
        for host in 1..=2 {
            assert!(limiter.check_at(&ip_key(ip(&format!("2001:db8:1:2::{host}"))), t0).is_ok());
        }
        assert!(limiter.check_at(&ip_key(ip("2001:db8:1:2:dead:beef:0:1")), t0).is_err(), "same /64");
        assert!(limiter.check_at(&ip_key(ip("2001:db8:1:3::1")), t0).is_ok(), "another /64");
    }

    #[test]
    fn a_full_table_forgets_the_oldest_clients_instead_of_refusing_new_ones() {
        let limiter =
            RateLimiter::with_capacity(RateLimit { window: Duration::from_secs(600), requests_max: 1 }, SHARDS * 32);
        let t0 = Instant::now();
        // Far more distinct clients than the table holds, all in one window.
        for i in 0..5_000u64 {
            let at = t0 + Duration::from_millis(i);
            assert!(limiter.check_at(&format!("ip:{i}"), at).is_ok(), "client {i} was refused");
        }
        let kept: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(kept <= SHARDS * 32, "{kept} keys");
        // The newest are still limited; the oldest were forgotten.
        let late = t0 + Duration::from_millis(5_000);
        assert!(limiter.check_at("ip:4999", late).is_err());
        assert!(limiter.check_at("ip:0", late).is_ok());
    }
}
