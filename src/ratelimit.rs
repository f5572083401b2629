//! Rate limiting: a token bucket (pure arithmetic over instants the caller passes in) and the
//! async gate a session's uploaders wait at before sending a run of blocks, and its peer
//! readers after each socket read.
//!
//! The bucket may go into debt: a 256 KiB run is let through whole and the next sender waits
//! until the debt is paid, so a limit below the run size still holds on average.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Bytes per second, and how much unused allowance may accumulate for a burst.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket allowing `rate` bytes/s on average; it starts full with a tenth of a second's
    /// (at least 16 KiB) allowance, which is also the largest burst it saves up.
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Spends `bytes` now; returns how long the sender must wait before sending them (zero
    /// when the allowance covered them).
    pub fn spend(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A session-wide gate for one direction: unlimited, or a shared token bucket.
#[derive(Debug, Default)]
pub struct RateLimit {
    bucket: Option<RefCell<TokenBucket>>,
}

impl RateLimit {
    /// `rate` bytes/s; `None` or 0 means no limit.
    pub fn new(rate: Option<u64>) -> RateLimit {
        RateLimit {
            bucket: rate
                .filter(|&r| r > 0)
                .map(|r| RefCell::new(TokenBucket::new(r, Instant::now()))),
        }
    }

    /// The most one transfer should move at once: the bucket's burst, so that a limited
    /// stream arrives in steps of a tenth of a second rather than in megabyte bursts. None
    /// without a limit.
    pub fn step(&self) -> Option<usize> {
        self.bucket.as_ref().map(|b| b.borrow().burst as usize)
    }

    /// Waits until `bytes` may be moved (sent, or read again after reading them).
    pub async fn admit(&self, bytes: u64) {
        let Some(bucket) = &self.bucket else { return };
        let wait = bucket.borrow_mut().spend(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_paces_to_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1 << 20, t0); // 1 MiB/s, burst ~102 KiB
        assert_eq!(b.spend(100 << 10, t0), Duration::ZERO);
        // The next 256 KiB exceed the allowance: wait for the debt at 1 MiB/s.
        let wait = b.spend(256 << 10, t0);
        assert!((wait.as_secs_f64() - 0.25).abs() < 0.01, "waited {wait:?}");
    }

    #[test]
    fn sending_at_the_rate_never_waits_and_idle_time_saves_only_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, t0);
        let mut now = t0;
        for _ in 0..100 {
            now += Duration::from_millis(10);
            assert_eq!(b.spend(10_000, now), Duration::ZERO);
        }
        // A minute idle saves at most 100 ms worth: 1 MB at once must wait ~0.9 s.
        now += Duration::from_secs(60);
        let wait = b.spend(1_000_000, now);
        assert!((wait.as_secs_f64() - 0.9).abs() < 0.01, "waited {wait:?}");
    }

    #[test]
    fn average_rate_over_many_sends_matches_the_limit() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2_000_000, t0);
        let mut now = t0;
        let mut sent = 0u64;
        while now - t0 < Duration::from_secs(10) {
            now += b.spend(256 << 10, now);
            sent += 256 << 10;
        }
        let rate = sent as f64 / (now - t0).as_secs_f64();
        assert!((rate / 2_000_000.0 - 1.0).abs() < 0.05, "rate {rate}");
    }
}
