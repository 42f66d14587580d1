//! Simulated time: real time plus an offset that only moves forward.
//!
//! Every expiry in the simulator (access tokens, subscriptions, delta tokens, delivery retries,
//! endpoint health windows, the deleted-items retention) reads this clock, so a test can jump
//! days ahead with `POST /_sim/time/advance` instead of waiting.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration as ChronoDuration, Utc};

#[derive(Debug, Default)]
pub struct SimClock {
    offset_ms: AtomicI64,
}

impl SimClock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + ChronoDuration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Moves simulated time forward. Negative values are ignored: time never runs backwards,
    /// because nothing in Graph does either and expiry logic relies on it.
    pub fn advance(&self, seconds: f64) {
        if seconds > 0.0 {
            self.offset_ms
                .fetch_add((seconds * 1000.0) as i64, Ordering::SeqCst);
        }
    }

    pub fn offset_seconds(&self) -> f64 {
        self.offset_ms.load(Ordering::SeqCst) as f64 / 1000.0
    }

    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::SeqCst);
    }
}

/// Graph's timestamp format: RFC 3339, UTC, `Z` suffix, whole seconds.
pub fn graph_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Subscription timestamps in Graph carry 7 fractional digits; keep a similar precision.
pub fn graph_time_precise(t: DateTime<Utc>) -> String {
    use chrono::Timelike;
    // chrono has no 7-digit fraction specifier; build it from the nanoseconds.
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.nanosecond() % 1_000_000_000 / 100
    )
}
