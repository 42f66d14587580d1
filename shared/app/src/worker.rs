//! The workers: take jobs off the queue and hand each to the dispatcher.
//!
//! The queue hands out at most one job per user at a time, so per-user order holds however many
//! workers run; different users are handled concurrently, up to `workers`. A job is
//! acknowledged only after it was applied (or had nothing to do); a transient failure goes back
//! on the queue with exponential backoff until the job has waited `retry_for` (hours, not a
//! handful of attempts), a permanent one is dead-lettered with the reason. Nothing is dropped.
//!
//! An outage (AD unreachable, Graph failing) would fail every job the same way, so the workers
//! of a process back off together ([`Outage`]): after such a failure they pause, then send one
//! job ahead as a probe, and resume in full when it succeeds. Then the dead letters an outage
//! left (marked [`UNAVAILABLE`]) go back on the queue by themselves.

use async_trait::async_trait;
use shadowsync_core::Backoff;
use shadowsync_queue::{Delivery, Disposition, Job, Queue};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Why a job failed, and whether running it again later can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub retryable: bool,
    pub reason: String,
    /// When to try again, where the failure knows (else the backoff decides).
    pub retry_in: Option<Duration>,
    /// A dependency is down (see [`crate::AppError::is_unavailable`]).
    pub unavailable: bool,
}

impl JobError {
    /// A failure that another try may fix, after the backoff.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self {
            retryable: true,
            reason: reason.into(),
            retry_in: None,
            unavailable: false,
        }
    }

    /// A dependency is down: every job would fail so now.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            unavailable: true,
            ..Self::retryable(reason)
        }
    }
}

impl From<crate::AppError> for JobError {
    fn from(e: crate::AppError) -> Self {
        Self {
            retryable: e.is_retryable(),
            reason: e.to_string(),
            retry_in: e.retry_in(),
            unavailable: e.is_unavailable(),
        }
    }
}

/// Starts the reason of a job dead-lettered while a dependency was down: such a dead letter is
/// put back on the queue once the dependency answers again.
pub const UNAVAILABLE: &str = "dependency unavailable: ";

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
    /// How long a job is retried, from when it was queued, before it is dead-lettered.
    pub retry_for: Duration,
    /// The workers' pause after a failure for want of a dependency, growing while it lasts.
    /// Capped short: once the dependency is back, work resumes within the cap.
    pub outage: Backoff,
}

/// `[provisioner] retry_for`'s default: long enough for a domain controller's patch reboot or a
/// Graph incident, short enough that a dead letter still means something.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(6 * 3600);

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            visibility: Duration::from_secs(60),
            poll_interval: Duration::from_millis(50),
            retry: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            retry_for: DEFAULT_RETRY_FOR,
            outage: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }
}

/// A dependency down, as the workers of one process see it: they pause together, then probe
/// with one job. Shared by the workers (`Arc`).
#[derive(Default)]
pub struct Outage {
    state: Mutex<OutageState>,
}

#[derive(Default)]
struct OutageState {
    /// Failures for want of a dependency since the last success.
    failures: u32,
    paused_until: Option<Instant>,
}

impl Outage {
    /// A job failed for want of a dependency: pause (longer while it lasts).
    pub fn failed(&self, backoff: &Backoff) {
        let mut s = self.state.lock().unwrap();
        s.failures += 1;
        s.paused_until = Some(Instant::now() + backoff.delay(s.failures));
        if s.failures == 1 {
            tracing::warn!(
                "a dependency is unavailable: the workers pause, then probe with one job"
            );
        }
    }

    /// A job succeeded. True if that ends an outage.
    pub fn answered(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        let ended = s.failures > 0;
        *s = OutageState::default();
        ended
    }

    /// How long the workers still pause, if they do.
    pub fn pause(&self) -> Option<Duration> {
        let s = self.state.lock().unwrap();
        s.paused_until
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// During an outage, one job at a time goes ahead.
    pub fn probing(&self) -> bool {
        self.state.lock().unwrap().failures > 0
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
    let outage = Arc::new(Outage::default());
    while !shutdown.is_cancelled() {
        if let Some(pause) = outage.pause() {
            idle(&shutdown, pause).await;
            continue;
        }
        let free = match outage.probing() {
            // One probe at a time: its outcome decides whether the others follow.
            true if slots.available_permits() < config.workers => {
                idle(&shutdown, config.poll_interval).await;
                continue;
            }
            true => 1,
            false => slots.available_permits(),
        };
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
            let outage = outage.clone();
            tokio::spawn(async move {
                process_with(
                    queue.as_ref(),
                    handler.as_ref(),
                    &config,
                    delivery,
                    Some(&outage),
                )
                .await;
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
    process_with(queue, handler, config, delivery, None).await
}

/// [`process`], telling `outage` how the job went (the workers' loop).
pub async fn process_with(
    queue: &dyn Queue,
    handler: &dyn JobHandler,
    config: &WorkerConfig,
    delivery: Delivery,
    outage: Option<&Outage>,
) -> Settled {
    let Delivery {
        receipt,
        job,
        attempt,
        enqueued_at,
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
        Ok(()) => {
            if outage.is_some_and(Outage::answered) {
                redrive_unavailable(queue).await;
            }
            queue.ack(&receipt).await.map(|_| Settled::Done)
        }
        Err(e) if e.retryable => {
            // While a dependency is down the workers pause together, so its jobs are tried
            // again soon (within the outage backoff's cap) rather than after long backoffs:
            // once it answers, everything converges within moments.
            let (backoff, marker) = match e.unavailable {
                true => {
                    if let Some(outage) = outage {
                        outage.failed(&config.outage);
                    }
                    (&config.outage, UNAVAILABLE)
                }
                false => (&config.retry, ""),
            };
            let waited = (chrono::Utc::now() - enqueued_at)
                .to_std()
                .unwrap_or_default();
            if waited >= config.retry_for {
                tracing::error!(%group, attempt, reason = %e.reason, "job retried for {:?}; dead-lettered", config.retry_for);
                let reason = format!(
                    "{marker}retried for {}: {}",
                    humantime::format_duration(config.retry_for),
                    e.reason
                );
                queue
                    .dead_letter(&receipt, &reason)
                    .await
                    .map(|_| Settled::DeadLettered)
            } else {
                let delay = e.retry_in.unwrap_or_else(|| backoff.delay(attempt));
                let reason = format!("{marker}{}", e.reason);
                match queue.retry_later(&receipt, delay, &reason).await {
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

/// Puts back on the queue every dead letter an outage left (its reason starts with
/// [`UNAVAILABLE`]): the dependency answers again.
pub async fn redrive_unavailable(queue: &dyn Queue) -> usize {
    let letters = match queue.dead_letters().await {
        Ok(letters) => letters,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the dead letters to retry those of the outage");
            return 0;
        }
    };
    let mut redriven = 0;
    for letter in letters.iter().filter(|l| l.reason.starts_with(UNAVAILABLE)) {
        match queue.redrive(&letter.id).await {
            Ok(()) => redriven += 1,
            Err(e) => tracing::warn!(id = %letter.id, error = %e, "could not retry a dead letter"),
        }
    }
    if redriven > 0 {
        tracing::warn!(
            redriven,
            "the dependency answers again: the outage's dead letters are back on the queue"
        );
    }
    redriven
}
