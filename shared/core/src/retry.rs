//! The one backoff rule, for every retry shadowsync makes (Graph requests, queued jobs).

use rand::Rng;
use std::time::Duration;

/// Exponential backoff with a cap and "equal jitter".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry (before jitter).
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The delay before retry number `retry` (1 for the first): `base · 2^(retry-1)`, capped,
    /// then half of it fixed and half random, so that retries of many callers spread out but
    /// none comes sooner than half the nominal delay.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, rand::thread_rng().gen::<f64>())
    }

    /// [`Backoff::delay`] with the random part given (`unit` in `[0, 1)`), for tests.
    pub fn delay_with(&self, retry: u32, unit: f64) -> Duration {
        let nominal = self
            .base
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1).min(20)))
            .min(self.cap);
        let half = nominal / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_half_jitter() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(b.delay_with(1, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay_with(1, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay_with(3, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay_with(40, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay_with(40, 0.0), Duration::from_secs(30));
        for retry in 0..50 {
            let d = b.delay(retry);
            assert!(d <= b.cap, "{retry}: {d:?}");
        }
        let samples: Vec<_> = (0..50).map(|_| b.delay(5)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "jittered");
    }
}
