//! The SQS FIFO queue's event source, as the provisioner function sees it.
//!
//! Each message is settled through the same [`process`] as in the long-running hosts, on the
//! same [`SqsQueue`]: acknowledged when done, handed back with a backoff
//! (`ChangeMessageVisibility`) when it can succeed later, dead-lettered with its reason when it
//! cannot. The batch response (`ReportBatchItemFailures`) lists the failed one, and, because the
//! queue is FIFO, every later message of the batch unprocessed, so that no user's jobs run out
//! of order; those are made visible again at once instead of after the queue's visibility
//! timeout.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use shadowsync_app::worker::{process, JobHandler, Settled, WorkerConfig};
use shadowsync_app::{JobMetrics, MetricsSnapshot};
use shadowsync_aws::emf::{self, Metric};
use shadowsync_ports::Graph;
use shadowsync_queue::Queue;
use shadowsync_queue_sqs::SqsQueue;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl SqsBatchHandler {
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let mut unprocessed = Vec::new();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            if !unprocessed.is_empty() || !response.batch_item_failures.is_empty() {
                response.add_failure(id);
                unprocessed.push(record);
                continue;
            }
            if !self.settle(&record).await {
                response.add_failure(id);
            }
        }
        self.release(&unprocessed).await;
        self.emit_metrics();
        response
    }

    /// Works on one message; false when it must be reported failed.
    async fn settle(&self, record: &SqsMessage) -> bool {
        let (Some(id), Some(handle)) = (&record.message_id, &record.receipt_handle) else {
            tracing::error!("an SQS record without messageId or receiptHandle");
            return false;
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
                return moved.is_ok();
            }
        };
        match process(
            self.queue.as_ref(),
            self.jobs.as_ref(),
            &self.config,
            delivery,
        )
        .await
        {
            Settled::Done | Settled::DeadLettered => true,
            Settled::Retrying | Settled::Unrecorded => false,
        }
    }

    /// Makes the messages skipped after a failure visible again now (best effort: otherwise
    /// they come back after the visibility timeout). Their group order still holds: a group
    /// with a message in flight delivers nothing else.
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
