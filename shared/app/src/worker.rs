//! The workers: take jobs off the queue and hand each to the dispatcher.
//!
//! The queue hands out at most one job per user at a time, so per-user order holds however many
//! workers run; different users are handled concurrently, up to `workers`. A job is
//! acknowledged only after it was applied (or had nothing to do); a transient failure goes back
//! on the queue with exponential backoff, a permanent one (or one that exhausted its attempts)
//! is dead-lettered with the reason. Nothing is dropped.

use async_trait::async_trait;
use shadowsync_core::Backoff;
use shadowsync_queue::{Delivery, Disposition, Job, Queue};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Why a job failed, and whether running it again later can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub retryable: bool,
    pub reason: String,
    /// When to try again, where the failure knows (else the backoff decides).
    pub retry_in: Option<Duration>,
}

impl JobError {
    /// A failure that another try may fix, after the backoff.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self {
            retryable: true,
            reason: reason.into(),
            retry_in: None,
        }
    }
}

impl From<crate::AppError> for JobError {
    fn from(e: crate::AppError) -> Self {
        Self {
            retryable: e.is_retryable(),
            reason: e.to_string(),
            retry_in: e.retry_in(),
        }
    }
}

/// What to do with each job.
#[async_trait]
pub trait JobHandler: Send + Sync {
    async fn handle(&self, job: &Job) -> Result<(), JobError>;

    /// Told how each job ended (for metrics).
    fn settled(&self, _settled: Settled) {}
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs (of different users) worked on at the same time.
    pub workers: usize,
    /// How long a received job stays invisible; extended while the job runs.
    pub visibility: Duration,
    /// Pause between polls of an empty queue.
    pub poll_interval: Duration,
    /// Delay before a failed job runs again.
    pub retry: Backoff,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            visibility: Duration::from_secs(60),
            poll_interval: Duration::from_millis(50),
            retry: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
        }
    }
}

/// Runs until `shutdown` is cancelled, then finishes the jobs in hand and returns.
pub async fn run(
    queue: Arc<dyn Queue>,
    handler: Arc<dyn JobHandler>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(config.workers));
    while !shutdown.is_cancelled() {
        let free = slots.available_permits();
        if free == 0 {
            // Wait for a worker to finish (or for shutdown) before asking for more.
            tokio::select! {
                permit = slots.clone().acquire_owned() => drop(permit),
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let deliveries = match queue.receive(free, config.visibility).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the queue");
                idle(&shutdown, config.poll_interval * 20).await;
                continue;
            }
        };
        if deliveries.is_empty() {
            idle(&shutdown, config.poll_interval).await;
            continue;
        }
        for delivery in deliveries {
            let permit = slots.clone().acquire_owned().await.expect("semaphore open");
            let (queue, handler, config) = (queue.clone(), handler.clone(), config.clone());
            tokio::spawn(async move {
                process(queue.as_ref(), handler.as_ref(), &config, delivery).await;
                drop(permit);
            });
        }
    }
    // Graceful stop: wait until every worker has handed its job back.
    let _ = slots.acquire_many(config.workers as u32).await;
    tracing::info!("workers stopped");
}

async fn idle(shutdown: &CancellationToken, pause: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.cancelled() => {}
    }
}

/// How [`process`] left a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Done and acknowledged.
    Done,
    /// Failed; back on the queue after a backoff.
    Retrying,
    /// Failed for good; on the dead-letter queue with its reason.
    DeadLettered,
    /// The queue could not record the outcome; the job comes back after its visibility timeout.
    Unrecorded,
}

/// Handles one job to the end: acknowledged, retried later, or dead-lettered.
pub async fn process(
    queue: &dyn Queue,
    handler: &dyn JobHandler,
    config: &WorkerConfig,
    delivery: Delivery,
) -> Settled {
    let Delivery {
        receipt,
        job,
        attempt,
        ..
    } = delivery;
    let group = job.group();
    // Keep the job invisible while it runs, however long that takes.
    let keep_alive = async {
        loop {
            tokio::time::sleep(config.visibility / 2).await;
            if let Err(e) = queue.extend(&receipt, config.visibility).await {
                tracing::warn!(%group, error = %e, "could not extend the job's visibility");
            }
        }
    };
    let result = tokio::select! {
        r = handler.handle(&job) => r,
        _ = keep_alive => unreachable!("the keep-alive loop never ends"),
    };
    let outcome = match result {
        Ok(()) => queue.ack(&receipt).await.map(|_| Settled::Done),
        Err(e) if e.retryable => {
            let delay = e.retry_in.unwrap_or_else(|| config.retry.delay(attempt));
            match queue.retry_later(&receipt, delay, &e.reason).await {
                Ok(Disposition::Retrying { attempt }) => {
                    tracing::warn!(%group, attempt, delay_ms = delay.as_millis() as u64, reason = %e.reason, "job failed; will retry");
                    Ok(Settled::Retrying)
                }
                Ok(Disposition::DeadLettered) => {
                    tracing::error!(%group, attempt, reason = %e.reason, "job failed too often; dead-lettered");
                    Ok(Settled::DeadLettered)
                }
                Err(q) => Err(q),
            }
        }
        Err(e) => {
            tracing::error!(%group, reason = %e.reason, "job cannot succeed; dead-lettered");
            queue
                .dead_letter(&receipt, &e.reason)
                .await
                .map(|_| Settled::DeadLettered)
        }
    };
    let settled = match outcome {
        Ok(settled) => settled,
        Err(e) => {
            // The job stays on the queue and comes back after its visibility timeout.
            tracing::error!(%group, error = %e, "could not record the job's outcome on the queue");
            Settled::Unrecorded
        }
    };
    handler.settled(settled);
    settled
}
