//! The provisioner: takes jobs off the queue and converges each guest into AD.
//!
//! The queue hands out at most one job per user at a time, so per-user order holds however many
//! workers run; different users are converged concurrently, up to `workers`. A job is
//! acknowledged only after it was applied (or had nothing to do); a transient failure goes back
//! on the queue with exponential backoff, a permanent one (or one that exhausted its attempts)
//! is dead-lettered with the reason. Nothing is dropped.

mod jobs;
pub mod lambda;
mod metrics;

pub use jobs::ShadowsyncJobs;
pub use metrics::{JobMetrics, MetricsSnapshot};

use async_trait::async_trait;
use rand::Rng;
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
}

/// What to do with each job.
#[async_trait]
pub trait JobHandler: Send + Sync {
    async fn handle(&self, job: &Job) -> Result<(), JobError>;

    /// Told how each job ended (for metrics).
    fn settled(&self, _settled: Settled) {}
}

#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    /// Jobs (of different users) worked on at the same time.
    pub workers: usize,
    /// How long a received job stays invisible; extended while the job runs.
    pub visibility: Duration,
    /// Pause between polls of an empty queue.
    pub poll_interval: Duration,
    /// First retry delay; doubles per attempt, with jitter, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for ProvisionerConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            visibility: Duration::from_secs(60),
            poll_interval: Duration::from_millis(50),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// Delay before attempt `attempt + 1`: exponential from `base`, capped, with "equal jitter"
/// (half fixed, half random) so retries of many jobs spread out but never come too soon.
pub fn backoff(config: &ProvisionerConfig, attempt: u32) -> Duration {
    let exp = config
        .retry_base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
        .min(config.retry_max);
    let half = exp / 2;
    half + half.mul_f64(rand::thread_rng().gen::<f64>())
}

/// Runs until `shutdown` is cancelled, then finishes the jobs in hand and returns.
pub async fn run(
    queue: Arc<dyn Queue>,
    handler: Arc<dyn JobHandler>,
    config: ProvisionerConfig,
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
    tracing::info!("provisioner stopped");
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
    config: &ProvisionerConfig,
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
            let delay = backoff(config, attempt);
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
