//! A relay's bandwidth limits: token buckets, sans-IO (the caller passes the time and sleeps
//! for the delay it is given), so they are tested in virtual time.

use std::time::{Duration, Instant};

/// A token bucket of `rate` bytes a second that holds at most `burst` bytes: a sender may send
/// `burst` bytes at once, then `rate` bytes a second on average.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Bytes that may go now; negative: owed (the caller waits them off).
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` and `burst` are at least 1.
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        let burst = burst.max(1);
        TokenBucket {
            rate: rate.max(1),
            burst,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes `bytes` (already read, about to be sent) and says how long the sender waits first
    /// so that the average stays within the rate.
    pub fn take(&mut self, now: Instant, bytes: usize) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst as f64);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `total` bytes in `chunk`s, sleeping as told, and returns the virtual time taken.
    fn send(bucket: &mut TokenBucket, start: Instant, total: usize, chunk: usize) -> Duration {
        let mut now = start;
        let mut sent = 0;
        while sent < total {
            now += bucket.take(now, chunk);
            sent += chunk;
        }
        now - start
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, 64 << 10, t0);
        assert_eq!(b.take(t0, 64 << 10), Duration::ZERO);
        // 10 MB more at 1 MB/s: 10 s, whatever the chunk size.
        for chunk in [1_000, 65_536] {
            let mut b = TokenBucket::new(1_000_000, 64 << 10, t0);
            b.take(t0, 64 << 10);
            let took = send(&mut b, t0, 10_000_000, chunk);
            assert!(
                (9.9..=10.1).contains(&took.as_secs_f64()),
                "{chunk}: {took:?}"
            );
        }
    }

    #[test]
    fn idle_time_refills_up_to_the_burst_only() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000, 5_000, t0);
        assert_eq!(b.take(t0, 5_000), Duration::ZERO);
        // An hour idle earns one burst, not an hour of bytes.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(later, 5_000), Duration::ZERO);
        assert_eq!(b.take(later, 1_000), Duration::from_secs(1));
    }
}
