//! Counters of the jobs, for the hosts to publish: the connector's health endpoint, `serve`'s
//! and the connector's log lines, the Lambda provisioner's embedded-metric lines.

use crate::worker::Settled;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency samples kept until taken; older ones are dropped (the counts stay right).
const MAX_LATENCY_SAMPLES: usize = 1000;

/// Counters since the process started, and latency samples since they were last taken.
#[derive(Default)]
pub struct JobMetrics {
    applied: AtomicU64,
    unchanged: AtomicU64,
    conflicts: AtomicU64,
    retries: AtomicU64,
    dead_letters: AtomicU64,
    parked: AtomicU64,
    held: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

/// The counters at one moment (or, from [`MetricsSnapshot::since`], between two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Jobs that changed AD.
    pub applied: u64,
    /// Jobs that found AD already right.
    pub unchanged: u64,
    pub conflicts: u64,
    pub retries: u64,
    pub dead_letters: u64,
    /// Jobs Graph refused (403), kept until it answers again.
    pub parked: u64,
    /// Disables and deletes the safety rails held.
    pub held: u64,
}

impl MetricsSnapshot {
    /// What happened between `earlier` and this snapshot (counters only grow).
    pub fn since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
        MetricsSnapshot {
            applied: self.applied.saturating_sub(earlier.applied),
            unchanged: self.unchanged.saturating_sub(earlier.unchanged),
            conflicts: self.conflicts.saturating_sub(earlier.conflicts),
            retries: self.retries.saturating_sub(earlier.retries),
            dead_letters: self.dead_letters.saturating_sub(earlier.dead_letters),
            parked: self.parked.saturating_sub(earlier.parked),
            held: self.held.saturating_sub(earlier.held),
        }
    }

    /// Every counter with its published name (the metric name in CloudWatch, the field in the
    /// log line), in one place.
    pub fn counters(&self) -> [(&'static str, u64); 7] {
        [
            ("JobsApplied", self.applied),
            ("JobsUnchanged", self.unchanged),
            ("Conflicts", self.conflicts),
            ("Retries", self.retries),
            ("DeadLetters", self.dead_letters),
            ("JobsParked", self.parked),
            ("ChangesHeld", self.held),
        ]
    }

    pub fn is_zero(&self) -> bool {
        *self == MetricsSnapshot::default()
    }
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

    pub fn settled(&self, settled: Settled) {
        match settled {
            Settled::Retrying => self.retries.fetch_add(1, Ordering::Relaxed),
            Settled::DeadLettered => self.dead_letters.fetch_add(1, Ordering::Relaxed),
            Settled::Done | Settled::Unrecorded => 0,
        };
    }

    /// A job Graph refused, parked.
    pub fn parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// A disable or delete the safety rails held.
    pub fn held(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters since the process started.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            applied: get(&self.applied),
            unchanged: get(&self.unchanged),
            conflicts: get(&self.conflicts),
            retries: get(&self.retries),
            dead_letters: get(&self.dead_letters),
            parked: get(&self.parked),
            held: get(&self.held),
        }
    }

    /// Notification → AD latencies of the applied jobs since the last call.
    pub fn take_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.latencies.lock().unwrap())
    }
}
