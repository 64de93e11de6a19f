//! Token-bucket bandwidth limiting and jittered exponential backoff.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket over bytes per second, shared by every transfer that uses it.
///
/// `acquire(n)` takes `n` tokens, letting the balance go negative and sleeping
/// until it is paid back, so a chunk larger than the burst still passes and the
/// long-run rate is exactly the configured one. A rate of `0` means unlimited.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A bucket of `rate` bytes/s (`0`: unlimited) with a burst of one tenth of a
    /// second's worth (at least 64 KiB).
    pub fn new(rate: u64) -> Self {
        let burst = (rate as f64 / 10.0).max(64.0 * 1024.0);
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// The configured rate (`0`: unlimited).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How long a caller taking `n` tokens now must wait; the tokens are taken.
    pub fn reserve(&self, n: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        st.0 = (st.0 + elapsed * self.rate as f64).min(self.burst);
        st.1 = now;
        st.0 -= n as f64;
        if st.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.0 / self.rate as f64)
        }
    }

    /// Takes `n` tokens, sleeping as long as the rate requires.
    pub async fn acquire(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Exponential backoff with full jitter: attempt `k` waits a uniformly random
/// duration in `[base·2^k / 2, base·2^k]`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based), drawing jitter from `random`
    /// (a uniformly distributed `u64`).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = exp / 2;
        let span = exp.saturating_sub(half).as_nanos() as u64;
        let jitter = if span == 0 { 0 } else { random % (span + 1) };
        half + Duration::from_nanos(jitter)
    }
}

/// A random `u64` from the operating system (0 if unavailable: jitter is best-effort).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_enforces_rate() {
        let b = TokenBucket::new(1_000_000);
        let start = Instant::now();
        // Burst first, then 2 MB must take about 2 s more.
        for _ in 0..(2_000_000 / 50_000 + 2) {
            b.acquire(50_000).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1_900), "{took:?}");
        assert!(took <= Duration::from_millis(2_200), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let b = TokenBucket::new(0);
        assert_eq!(b.reserve(u64::MAX), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn backoff_bounds(attempt in 0u32..100, r in any::<u64>()) {
            let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(30) };
            let d = b.delay(attempt, r);
            let exp = (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(31))).min(Duration::from_secs(30));
            prop_assert!(d <= exp);
            prop_assert!(d >= exp / 2);
        }
    }
}
