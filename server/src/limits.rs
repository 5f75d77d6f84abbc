//! The service's limits: body size, time per request, requests in flight,
//! and requests per client per second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The service's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub body_bytes: usize,
    /// Longest a query or a read may take before a 503 (a write — feedback,
    /// a plugin, an engram, a workflow — runs to its end and says how it
    /// ended; its guest calls are held to their budgets).
    pub request_timeout: Duration,
    /// Most requests running guest code, or waiting for a query thread, at
    /// once; more get a 503 at once.
    pub in_flight: usize,
    /// Threads that run queries and reads (at least 1; default: twice the
    /// cores). Queries beyond them wait in line, within `request_timeout`
    /// and `in_flight`, and after 20 ms run in tokio's blocking pool (a few
    /// slow calls never hold up the rest); writes run there from the start.
    pub query_threads: usize,
    /// Largest plugin component uploaded (`POST /v1/plugins` with a wasm
    /// body), in bytes.
    pub upload_bytes: usize,
    /// Whether `POST /v1/plugins` takes an uploaded component, which is
    /// unsigned: run without a signature check, only when the operator
    /// started the service allowing it.
    pub allow_unsigned: bool,
    /// Requests per second each client may make (0: no limit), a client
    /// being a token's name, or the address of a request without a valid
    /// token; beyond it, 429 with `Retry-After`.
    pub rate_per_second: f64,
    /// Requests a client may make at once before the rate applies (at
    /// least 1).
    pub rate_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            in_flight: 64,
            query_threads: std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
            upload_bytes: 32 << 20,
            allow_unsigned: false,
            rate_per_second: 0.0,
            rate_burst: 1,
        }
    }
}

/// Requests per client per second: a token bucket per client (refilled at
/// the rate, holding at most the burst), the clients kept in a bounded
/// cache so that many addresses cannot grow it without bound.
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    clients: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Clients remembered at once; one forgotten starts with a full bucket.
const MAX_CLIENTS: u64 = 100_000;

impl RateLimiter {
    /// A limiter for `limits`, or `None` when the rate is unlimited.
    pub(crate) fn of(limits: &Limits) -> Option<RateLimiter> {
        (limits.rate_per_second > 0.0 && limits.rate_per_second.is_finite()).then(|| RateLimiter {
            per_second: limits.rate_per_second,
            burst: f64::from(limits.rate_burst.max(1)),
            clients: moka::sync::Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        })
    }

    /// Takes one request of `client`'s, or says how long until it may
    /// make one.
    pub(crate) fn take(&self, client: &str) -> Result<(), Duration> {
        self.take_at(client, Instant::now())
    }

    fn take_at(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let bucket = self
            .clients
            .get_with_by_ref(client, || Arc::new(Mutex::new(Bucket { tokens: self.burst, at: now })));
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_burst_then_its_rate() {
        let limits = Limits { rate_per_second: 2.0, rate_burst: 3, ..Limits::default() };
        let limiter = RateLimiter::of(&limits).unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at("a", t).is_ok());
        }
        let wait = limiter.take_at("a", t).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client is not held back by the first.
        assert!(limiter.take_at("b", t).is_ok());
        // Half a second later, one more.
        assert!(limiter.take_at("a", t + Duration::from_millis(500)).is_ok());
        assert!(limiter.take_at("a", t + Duration::from_millis(500)).is_err());
        // Never more than the burst, however long the pause.
        let later = t + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.take_at("a", later).is_ok());
        }
        assert!(limiter.take_at("a", later).is_err());
        assert!(RateLimiter::of(&Limits::default()).is_none(), "0: unlimited");
    }
}
