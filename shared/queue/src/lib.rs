//! The job queue between the webhook (and reconciler) and the provisioner.
//!
//! Semantics follow an SQS FIFO queue, so the embedded queue and the SQS adapter are
//! interchangeable: jobs of one group (one user) are delivered one at a time in order; a received
//! job is invisible until acknowledged or until its visibility timeout passes; a job that failed
//! is retried after a delay and dead-lettered, with the reason, after `max_attempts`.

pub mod conformance;
mod embedded;
mod pending;

pub use embedded::{EmbeddedQueue, DEDUP_WINDOW, FILED_PER_RECEIVE};
pub use pending::{PendingJobs, Sent, FOLD_WINDOW, PENDING};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shadowsync_core::partner::ObjectGuid;
use shadowsync_core::ObjectId;
use std::time::Duration;
use thiserror::Error;

/// Why Graph told us about a user (a hint only: converge re-reads the user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

/// Graph's lifecycle events (`lifecycleEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LifecycleEvent {
    ReauthorizationRequired,
    SubscriptionRemoved,
    Missed,
}

/// Where a converge job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSource {
    Notification,
    Reconciler,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Make AD agree with Graph for one user.
    Converge {
        user_id: ObjectId,
        change_type: Option<ChangeType>,
        subscription_id: Option<String>,
        received_at: DateTime<Utc>,
        source: JobSource,
    },
    /// Make a partner account's guest in Entra agree with the account in AD.
    Partner {
        guid: ObjectGuid,
        received_at: DateTime<Utc>,
        source: JobSource,
    },
    /// A group of the scope tree changed (a member added or removed, the group deleted): what
    /// changed is read with groups delta and becomes converge jobs.
    GroupChanged {
        group_id: ObjectId,
        received_at: DateTime<Utc>,
        source: JobSource,
    },
    /// A subscription needs attention (the subscription keeper and the reconciler act on it).
    Lifecycle {
        event: LifecycleEvent,
        subscription_id: String,
        received_at: DateTime<Utc>,
    },
}

impl Job {
    /// Jobs of one group are processed one at a time, in order: one group per user, one per
    /// partner account in AD, and one for each subscription's lifecycle events.
    pub fn group(&self) -> String {
        match self {
            Job::Converge { user_id, .. } => format!("user:{user_id}"),
            Job::Partner { guid, .. } => format!("partner:{guid}"),
            Job::GroupChanged { group_id, .. } => format!("group:{group_id}"),
            Job::Lifecycle {
                subscription_id, ..
            } => format!("subscription:{subscription_id}"),
        }
    }

    /// Identifies one job as made (the time received included), so that the same job sent
    /// again (a resent batch) is stored once (used as the SQS `MessageDeduplicationId`). A
    /// redelivered notification makes another job: [`PendingJobs`] folds those.
    pub fn dedup_key(&self) -> String {
        match self {
            Job::Converge {
                user_id,
                change_type,
                subscription_id,
                received_at,
                ..
            } => format!(
                "{user_id}|{change_type:?}|{}|{}",
                subscription_id.as_deref().unwrap_or(""),
                received_at.timestamp_micros()
            ),
            Job::Partner {
                guid, received_at, ..
            } => format!("partner|{guid}|{}", received_at.timestamp_micros()),
            Job::GroupChanged {
                group_id,
                received_at,
                ..
            } => format!("group|{group_id}|{}", received_at.timestamp_micros()),
            Job::Lifecycle {
                event,
                subscription_id,
                received_at,
            } => format!(
                "{subscription_id}|{event:?}|{}",
                received_at.timestamp_micros()
            ),
        }
    }
}

/// Handle of one delivery of a job, to acknowledge, extend, retry or dead-letter it. A receipt
/// of an earlier delivery of the same message never settles the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The queue's id of the message (SQS's `MessageId`; the embedded queue's sequence number).
    pub message_id: String,
    /// This delivery's handle (SQS's `ReceiptHandle`; the embedded queue's attempt number).
    pub handle: String,
    /// Which delivery of the message this is (1 for the first).
    pub attempt: u32,
    /// The message as received, for a queue that cannot read a message again by id (SQS) and
    /// resends it to move it to the dead letters. `None` where the queue keeps it (embedded).
    pub body: Option<String>,
}

/// A job handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub receipt: Receipt,
    pub job: Job,
    /// How many times this job has been received, this time included.
    pub attempt: u32,
    pub enqueued_at: DateTime<Utc>,
}

/// A job that failed for good, kept for an administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub job: Job,
    pub attempts: u32,
    pub reason: String,
    pub dead_at: DateTime<Utc>,
}

/// What became of a job handed back with [`Queue::retry_later`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// It will be delivered again; `attempt` is the failed delivery's [`Delivery::attempt`].
    Retrying {
        attempt: u32,
    },
    DeadLettered,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Jobs waiting or being worked on.
    pub depth: u64,
    pub in_flight: u64,
    pub dead_letters: u64,
}

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("unknown or expired receipt {0:?}")]
    UnknownReceipt(String),
    /// `redrive` or `drop_dead_letter` named a dead letter that does not exist (any more).
    #[error("unknown dead letter {0:?}")]
    UnknownDeadLetter(String),
    /// The queue failed; `message` is the cause in words (with the context a bare cause lacks),
    /// `source` the cause itself.
    #[error("queue storage: {message}")]
    Storage {
        message: String,
        #[source]
        source: BoxError,
    },
}

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl QueueError {
    /// A storage failure, described by the cause's own message.
    pub fn storage(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Self::Storage {
            message: source.to_string(),
            source,
        }
    }

    /// Can the same call succeed later? A storage failure, yes; a receipt or dead letter that
    /// is unknown stays unknown.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Storage { .. })
    }
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Stores the jobs durably; when this returns `Ok`, none of them can be lost.
    async fn send_batch(&self, jobs: Vec<Job>) -> Result<(), QueueError>;

    /// Up to `max` visible jobs, at most one per group and none from a group that has a job in
    /// flight. Each is invisible for `visibility` unless acknowledged or retried sooner.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Removes a job that was applied (or had nothing to do).
    async fn ack(&self, receipt: &Receipt) -> Result<(), QueueError>;

    /// Hands a failed job back to run again after `delay`, or dead-letters it with `reason` if it
    /// has been received `max_attempts` times.
    async fn retry_later(
        &self,
        receipt: &Receipt,
        delay: Duration,
        reason: &str,
    ) -> Result<Disposition, QueueError>;

    /// Moves a job that can never succeed straight to the dead letters.
    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<(), QueueError>;

    /// Keeps a job invisible for `visibility` more, for work that takes long.
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError>;

    async fn stats(&self) -> Result<QueueStats, QueueError>;

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError>;

    /// Puts a dead letter back on the queue as a fresh job.
    async fn redrive(&self, id: &str) -> Result<(), QueueError>;

    /// Discards a dead letter.
    async fn drop_dead_letter(&self, id: &str) -> Result<(), QueueError>;
}
