//! Graph's own clock, read from the `Date` header of its responses.
//!
//! Decisions about Graph's objects (is the subscription about to expire?) are made against
//! Graph's time, so a server whose clock is off (common on premises) still renews in time; and
//! against a simulator, simulated time just works.

use chrono::{DateTime, Duration, Utc};
use reqwest::header::{HeaderMap, DATE};
use shadowsync_core::Clock;
use std::sync::atomic::{AtomicI64, Ordering};

/// Local time plus the offset last observed between Graph's `Date` header and the local clock.
/// Before the first response it is the local clock.
#[derive(Debug, Default)]
pub struct ServerClock {
    offset_ms: AtomicI64,
}

impl ServerClock {
    /// Learns the offset from a response's `Date` header (second resolution). Offsets under
    /// two seconds are treated as none, so that the header's rounding adds no jitter.
    pub fn observe(&self, headers: &HeaderMap) {
        let Some(date) = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        else {
            return;
        };
        let offset = (date.with_timezone(&Utc) - Utc::now()).num_milliseconds();
        let offset = if offset.abs() < 2_000 { 0 } else { offset };
        let before = self.offset_ms.swap(offset, Ordering::Relaxed);
        // Said once per change of a minute or more, not at every response.
        if offset.abs() >= 60_000 && (offset - before).abs() >= 60_000 {
            tracing::warn!(
                graph_minus_local_seconds = offset / 1000,
                "this host's clock differs from Microsoft Graph's; decisions about time follow Graph's clock"
            );
        }
    }
}

impl Clock for ServerClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(date: DateTime<Utc>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(DATE, HeaderValue::from_str(&date.to_rfc2822()).unwrap());
        h
    }

    #[test]
    fn follows_the_servers_date() {
        let clock = ServerClock::default();
        let local = Utc::now();
        assert!((clock.now() - local).num_seconds().abs() < 2);
        clock.observe(&headers(local + Duration::days(20)));
        assert!(
            ((clock.now() - local) - Duration::days(20))
                .num_seconds()
                .abs()
                < 3
        );
        clock.observe(&headers(Utc::now()));
        assert!(
            (clock.now() - Utc::now()).num_seconds().abs() < 2,
            "small offsets are none"
        );
        clock.observe(&HeaderMap::new());
        assert!(
            (clock.now() - Utc::now()).num_seconds().abs() < 2,
            "no header, no change"
        );
    }
}
