//! The webhook's counters, which the hosts publish: `serve` in a periodic log line, the Lambda
//! function as a CloudWatch embedded-metric line per invocation.

use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a notification item was discarded instead of enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// `clientState` missing or not ours: the item did not come from our subscription.
    BadClientState,
    /// `tenantId` missing or another tenant's.
    WrongTenant,
    /// Not an object of the documented shape, or without a usable user or subscription id.
    MalformedItem,
    /// A change notification about something other than a user.
    UnsupportedResource,
    /// A `lifecycleEvent` we do not know.
    UnknownLifecycleEvent,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadClientState => "bad_client_state",
            RejectReason::WrongTenant => "wrong_tenant",
            RejectReason::MalformedItem => "malformed_item",
            RejectReason::UnsupportedResource => "unsupported_resource",
            RejectReason::UnknownLifecycleEvent => "unknown_lifecycle_event",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Monotonic counters, shared by all requests. Each counter stands alone, so `Relaxed` suffices.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    handshakes: AtomicU64,
    requests_rejected: AtomicU64,
    items_received: AtomicU64,
    jobs_enqueued: AtomicU64,
    rejected_bad_client_state: AtomicU64,
    rejected_wrong_tenant: AtomicU64,
    rejected_malformed_item: AtomicU64,
    rejected_unsupported_resource: AtomicU64,
    rejected_unknown_lifecycle_event: AtomicU64,
    enqueue_failures: AtomicU64,
    items_not_enqueued: AtomicU64,
    folded: AtomicU64,
}

/// A point-in-time copy of [`WebhookMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Validation handshakes answered.
    pub handshakes: u64,
    /// Whole requests refused (400, 413, 415) before looking at items.
    pub requests_rejected: u64,
    /// Items in the `value` arrays of accepted requests.
    pub items_received: u64,
    /// Jobs durably enqueued.
    pub jobs_enqueued: u64,
    pub rejected_bad_client_state: u64,
    pub rejected_wrong_tenant: u64,
    pub rejected_malformed_item: u64,
    pub rejected_unsupported_resource: u64,
    pub rejected_unknown_lifecycle_event: u64,
    /// `send_batch` calls that failed or timed out (each answered 503, so Graph retries).
    pub enqueue_failures: u64,
    /// Valid items in those failed batches.
    pub items_not_enqueued: u64,
    /// Valid items folded into a job that waits for the same change (a redelivery).
    pub folded: u64,
}

impl MetricsSnapshot {
    /// What happened between `earlier` and this snapshot (counters only grow).
    pub fn since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        MetricsSnapshot {
            handshakes: d(self.handshakes, earlier.handshakes),
            requests_rejected: d(self.requests_rejected, earlier.requests_rejected),
            items_received: d(self.items_received, earlier.items_received),
            jobs_enqueued: d(self.jobs_enqueued, earlier.jobs_enqueued),
            rejected_bad_client_state: d(
                self.rejected_bad_client_state,
                earlier.rejected_bad_client_state,
            ),
            rejected_wrong_tenant: d(self.rejected_wrong_tenant, earlier.rejected_wrong_tenant),
            rejected_malformed_item: d(
                self.rejected_malformed_item,
                earlier.rejected_malformed_item,
            ),
            rejected_unsupported_resource: d(
                self.rejected_unsupported_resource,
                earlier.rejected_unsupported_resource,
            ),
            rejected_unknown_lifecycle_event: d(
                self.rejected_unknown_lifecycle_event,
                earlier.rejected_unknown_lifecycle_event,
            ),
            enqueue_failures: d(self.enqueue_failures, earlier.enqueue_failures),
            items_not_enqueued: d(self.items_not_enqueued, earlier.items_not_enqueued),
            folded: d(self.folded, earlier.folded),
        }
    }

    /// Every counter with its published name (the metric name in CloudWatch, the field in
    /// `serve`'s log line), in one place.
    pub fn counters(&self) -> [(&'static str, u64); 12] {
        [
            ("Handshakes", self.handshakes),
            ("RequestsRejected", self.requests_rejected),
            ("NotificationsReceived", self.items_received),
            ("JobsEnqueued", self.jobs_enqueued),
            ("RejectedBadClientState", self.rejected_bad_client_state),
            ("RejectedWrongTenant", self.rejected_wrong_tenant),
            ("RejectedMalformedItem", self.rejected_malformed_item),
            (
                "RejectedUnsupportedResource",
                self.rejected_unsupported_resource,
            ),
            (
                "RejectedUnknownLifecycleEvent",
                self.rejected_unknown_lifecycle_event,
            ),
            ("EnqueueFailures", self.enqueue_failures),
            ("NotificationsNotEnqueued", self.items_not_enqueued),
            ("NotificationsFolded", self.folded),
        ]
    }

    pub fn is_zero(&self) -> bool {
        self.counters().iter().all(|(_, n)| *n == 0)
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl WebhookMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn handshake(&self) {
        add(&self.handshakes, 1);
    }

    pub(crate) fn request_rejected(&self) {
        add(&self.requests_rejected, 1);
    }

    pub(crate) fn items_received(&self, n: usize) {
        add(&self.items_received, n as u64);
    }

    pub(crate) fn jobs_enqueued(&self, n: usize) {
        add(&self.jobs_enqueued, n as u64);
    }

    pub(crate) fn folded(&self, n: usize) {
        add(&self.folded, n as u64);
    }

    pub(crate) fn enqueue_failed(&self, items: usize) {
        add(&self.enqueue_failures, 1);
        add(&self.items_not_enqueued, items as u64);
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        let counter = match reason {
            RejectReason::BadClientState => &self.rejected_bad_client_state,
            RejectReason::WrongTenant => &self.rejected_wrong_tenant,
            RejectReason::MalformedItem => &self.rejected_malformed_item,
            RejectReason::UnsupportedResource => &self.rejected_unsupported_resource,
            RejectReason::UnknownLifecycleEvent => &self.rejected_unknown_lifecycle_event,
        };
        add(counter, 1);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            handshakes: get(&self.handshakes),
            requests_rejected: get(&self.requests_rejected),
            items_received: get(&self.items_received),
            jobs_enqueued: get(&self.jobs_enqueued),
            rejected_bad_client_state: get(&self.rejected_bad_client_state),
            rejected_wrong_tenant: get(&self.rejected_wrong_tenant),
            rejected_malformed_item: get(&self.rejected_malformed_item),
            rejected_unsupported_resource: get(&self.rejected_unsupported_resource),
            rejected_unknown_lifecycle_event: get(&self.rejected_unknown_lifecycle_event),
            enqueue_failures: get(&self.enqueue_failures),
            items_not_enqueued: get(&self.items_not_enqueued),
            folded: get(&self.folded),
        }
    }
}
