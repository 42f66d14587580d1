//! Counters of the provisioner, for the connector's health endpoint and the Lambda function's
//! embedded-metric lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency samples kept between two snapshots; older ones are dropped (the counts stay right).
const MAX_LATENCY_SAMPLES: usize = 1000;

#[derive(Default)]
pub struct JobMetrics {
    applied: AtomicU64,
    unchanged: AtomicU64,
    conflicts: AtomicU64,
    retries: AtomicU64,
    dead_letters: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

/// Counts since the last [`JobMetrics::take`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Jobs that changed AD.
    pub applied: u64,
    /// Jobs that found AD already right.
    pub unchanged: u64,
    pub conflicts: u64,
    pub retries: u64,
    pub dead_letters: u64,
    /// Notification received → AD changed, of the applied jobs.
    #[serde(skip)]
    pub latencies: Vec<Duration>,
}

impl JobMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A converge that ended well: `changed` when it wrote to AD, `latency` since the
    /// notification arrived.
    pub fn converged(&self, changed: bool, conflict: bool, latency: Duration) {
        if conflict {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        if changed {
            self.applied.fetch_add(1, Ordering::Relaxed);
            let mut latencies = self.latencies.lock().unwrap();
            if latencies.len() >= MAX_LATENCY_SAMPLES {
                latencies.remove(0);
            }
            latencies.push(latency);
        } else {
            self.unchanged.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn settled(&self, settled: crate::Settled) {
        match settled {
            crate::Settled::Retrying => self.retries.fetch_add(1, Ordering::Relaxed),
            crate::Settled::DeadLettered => self.dead_letters.fetch_add(1, Ordering::Relaxed),
            crate::Settled::Done | crate::Settled::Unrecorded => 0,
        };
    }

    /// The counts so far, and resets them.
    pub fn take(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            applied: self.applied.swap(0, Ordering::Relaxed),
            unchanged: self.unchanged.swap(0, Ordering::Relaxed),
            conflicts: self.conflicts.swap(0, Ordering::Relaxed),
            retries: self.retries.swap(0, Ordering::Relaxed),
            dead_letters: self.dead_letters.swap(0, Ordering::Relaxed),
            latencies: std::mem::take(&mut *self.latencies.lock().unwrap()),
        }
    }
}
