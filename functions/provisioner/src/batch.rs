//! The SQS FIFO queue's event source, as the provisioner function sees it.
//!
//! Each message is settled through the same [`process`] as in the long-running hosts, on the
//! same [`SqsQueue`]: acknowledged when done, handed back with a backoff
//! (`ChangeMessageVisibility`) when it can succeed later, dead-lettered with its reason when it
//! cannot. The batch response (`ReportBatchItemFailures`) lists the failed one, and, because the
//! queue is FIFO, every later message of the batch unprocessed, so that no user's jobs run out
//! of order; those are made visible again at once instead of after the queue's visibility
//! timeout.
//!
//! The invocation has a deadline (the function's timeout). A job is given the time left, less
//! a margin; one that cannot finish in it is handed back to the queue as it is (visible again
//! at once, not dead-lettered, its attempt not counted as a failure), and so is every later
//! message, rather than being cut off by Lambda mid-batch and counted as failed.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use shadowsync_app::worker::{process_with, JobHandler, Outage, Settled, WorkerConfig};
use shadowsync_app::{JobMetrics, MetricsSnapshot};
use shadowsync_aws::emf::{self, Metric};
use shadowsync_ports::Graph;
use shadowsync_queue::Queue;
use shadowsync_queue_sqs::SqsQueue;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kept back from the invocation's deadline: the batch response, the releases and the metric
/// line need it.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

pub struct SqsBatchHandler {
    pub queue: Arc<SqsQueue>,
    pub jobs: Arc<dyn JobHandler>,
    pub config: WorkerConfig,
    /// Emitted as one embedded-metric line per invocation.
    pub metrics: Arc<JobMetrics>,
    /// Counts Graph's throttling answers.
    pub graph: Option<Arc<dyn Graph>>,
    /// The counters as last emitted.
    pub published: Mutex<MetricsSnapshot>,
    /// Outages seen by this instance across invocations: the first job that succeeds after one
    /// puts the outage's dead letters back on the queue.
    pub outage: Outage,
}

/// How one message of the batch ended.
enum Settle {
    Settled,
    /// Must be reported failed (retried later, or not recorded).
    Failed,
    /// Not finished in the time left: handed back as it is.
    OutOfTime,
}

impl SqsBatchHandler {
    /// A batch with no deadline of its own (tests).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handle_until(event, None).await
    }

    /// A batch that must be answered before `deadline` (the invocation's).
    pub async fn handle_until(
        &self,
        event: SqsEvent,
        deadline: Option<Instant>,
    ) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let mut unprocessed = Vec::new();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            if !unprocessed.is_empty() || !response.batch_item_failures.is_empty() {
                response.add_failure(id);
                unprocessed.push(record);
                continue;
            }
            let time_left = deadline.map(|d| {
                d.saturating_duration_since(Instant::now())
                    .saturating_sub(DEADLINE_MARGIN)
            });
            match self.settle(&record, time_left).await {
                Settle::Settled => {}
                Settle::Failed => response.add_failure(id),
                Settle::OutOfTime => {
                    response.add_failure(id);
                    unprocessed.push(record);
                }
            }
        }
        self.release(&unprocessed).await;
        self.emit_metrics();
        response
    }

    /// Works on one message within `time_left`, if given.
    async fn settle(&self, record: &SqsMessage, time_left: Option<Duration>) -> Settle {
        if time_left.is_some_and(|t| t.is_zero()) {
            return Settle::OutOfTime;
        }
        let work = self.settle_now(record);
        match time_left {
            None => work.await,
            Some(t) => match tokio::time::timeout(t, work).await {
                Ok(settled) => settled,
                Err(_) => {
                    tracing::warn!(message_id = record.message_id.as_deref().unwrap_or(""),
                        "the job did not finish before the invocation's deadline; handed back to the queue");
                    Settle::OutOfTime
                }
            },
        }
    }

    /// Works on one message.
    async fn settle_now(&self, record: &SqsMessage) -> Settle {
        let (Some(id), Some(handle)) = (&record.message_id, &record.receipt_handle) else {
            tracing::error!("an SQS record without messageId or receiptHandle");
            return Settle::Failed;
        };
        let attempt = attribute(record, "ApproximateReceiveCount").unwrap_or(1) as u32;
        let sent_at = attribute(record, "SentTimestamp")
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        let body = record.body.as_deref().unwrap_or_default();
        let delivery = match self.queue.delivery(id, handle, body, attempt, sent_at) {
            Ok(delivery) => delivery,
            Err((receipt, reason)) => {
                tracing::error!(message_id = %id, %reason, "dead-lettering a message that is not a job");
                let moved = self.queue.dead_letter(&receipt, &reason).await;
                self.jobs.settled(Settled::DeadLettered);
                return match moved {
                    Ok(()) => Settle::Settled,
                    Err(_) => Settle::Failed,
                };
            }
        };
        match process_with(
            self.queue.as_ref(),
            self.jobs.as_ref(),
            &self.config,
            delivery,
            Some(&self.outage),
        )
        .await
        {
            Settled::Done | Settled::DeadLettered => Settle::Settled,
            Settled::Retrying | Settled::Unrecorded => Settle::Failed,
        }
    }

    /// Makes the messages skipped after a failure (or not finished in time) visible again now
    /// (best effort: otherwise they come back after the visibility timeout). Their group order
    /// still holds: a group with a message in flight delivers nothing else.
    async fn release(&self, records: &[SqsMessage]) {
        for record in records {
            let (Some(id), Some(handle)) = (&record.message_id, &record.receipt_handle) else {
                continue;
            };
            let attempt = attribute(record, "ApproximateReceiveCount").unwrap_or(1) as u32;
            let body = record.body.as_deref().unwrap_or_default();
            let receipt = match self.queue.delivery(id, handle, body, attempt, Utc::now()) {
                Ok(delivery) => delivery.receipt,
                Err((receipt, _)) => receipt,
            };
            if let Err(e) = self.queue.extend(&receipt, Duration::ZERO).await {
                tracing::warn!(message_id = %id, error = %e, "could not release a skipped message");
            }
        }
    }

    /// One embedded-metric line per invocation: what this invocation did.
    fn emit_metrics(&self) {
        let now = self.metrics.snapshot();
        let delta = now.since(&std::mem::replace(
            &mut *self.published.lock().unwrap(),
            now,
        ));
        let mut metrics = emf::counts(&delta.counters());
        let latencies = self.metrics.take_latencies();
        metrics.push(Metric::milliseconds(
            "NotificationToAppliedLatency",
            latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        ));
        if let Some(graph) = &self.graph {
            metrics.push(Metric::count("GraphThrottled", graph.take_throttled()));
        }
        emf::emit("provisioner", &metrics);
    }
}

fn attribute(record: &SqsMessage, name: &str) -> Option<i64> {
    record.attributes.get(name)?.parse().ok()
}
