//! [`Queue`] on an SQS FIFO queue with a FIFO dead-letter queue, for the AWS host and the
//! on-premises connector (which long-polls the cloud queue over outbound HTTPS).
//!
//! Mapping:
//! - `send_batch`: `SendMessageBatch` in chunks of 10. `MessageGroupId` = [`Job::group`] (one
//!   group per user: per-user order); `MessageDeduplicationId` = hex SHA-256 of
//!   [`Job::dedup_key`] (the job as made, time received included), so a batch sent again after
//!   a failed entry within SQS's 5-minute interval is not queued twice. Any failed entry fails
//!   the call (the webhook then answers 5xx and Graph retries). A *redelivered* notification is
//!   another job by that key; [`shadowsync_queue::PendingJobs`] folds it before it is sent.
//! - `receive`: `ReceiveMessage`, attempt = `ApproximateReceiveCount`.
//! - `ack`: `DeleteMessage`; `extend` and `retry_later`: `ChangeMessageVisibility` (a delayed
//!   job stays in flight, which keeps its group blocked: later jobs of the user wait behind it,
//!   as in the embedded queue).
//! - dead letters: `retry_later` at `max_attempts` and `dead_letter` send the job to the DLQ
//!   with the reason and attempts as message attributes, then delete it. The queue's own
//!   redrive policy (`maxReceiveCount`, best set to `max_attempts`) is the safety net for jobs
//!   whose consumer died every time; those arrive without a reason.
//!
//! Where SQS differs from the embedded queue:
//! - Times are whole seconds: visibility timeouts and delays are rounded up, and capped at SQS's
//!   12 hours.
//! - SQS FIFO hands out several messages of one group in one `ReceiveMessage`; the trait wants
//!   at most one per group. Handing the extras back would count as receives (inflating attempt
//!   numbers and tripping the redrive policy), so `receive` asks for one message per call, up to
//!   `max` calls: while a message is in flight SQS keeps its group blocked, so each call yields
//!   another group.
//! - SQS accepts stale receipt handles (an acknowledged or re-received message's handle still
//!   "works"). This adapter remembers, per message, the last receipt it handed out and whether
//!   it was spent, and answers [`QueueError::UnknownReceipt`] for the others. That memory is per
//!   process: a receipt from another process is left to SQS's own checks.
//! - Dead letters live in a FIFO queue, so listing them means receiving them and making them
//!   visible again: approximate on real SQS (short polls sample servers), and a concurrent
//!   listing (two administrators at once) sees a partial list. Our dead letters each get a
//!   message group of their own so that all of them can be listed; ones moved by the redrive
//!   policy keep the user's group, so only the first of a user's shows until it is handled.
//! - Deduplication holds for 5 minutes (SQS's interval), like the embedded queue's window.

use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use shadowsync_queue::{
    DeadLetter, Delivery, Disposition, Job, Queue, QueueError, QueueStats, Receipt,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use aws_sdk_sqs;

/// SQS's maximum visibility timeout, in seconds.
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;
/// How long a dead-letter listing keeps the DLQ's messages invisible; they are made visible
/// again right after, so this only matters if the listing process dies half-way.
const PEEK_VISIBILITY_SECS: i32 = 30;
/// A spent receipt is remembered this long (a consumer reusing it later than that is a bug SQS
/// may or may not catch).
const SPENT_MEMORY: Duration = Duration::from_secs(15 * 60);
const REASON_ATTR: &str = "shadowsync-reason";
const ATTEMPTS_ATTR: &str = "shadowsync-attempts";
/// SQS counts message attributes against the 256 KiB message size; reasons are short anyway.
const MAX_REASON_CHARS: usize = 4000;

/// The queue: a FIFO queue and its FIFO dead-letter queue.
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    dlq_url: String,
    max_attempts: u32,
    wait: Duration,
    /// Message id → the last receipt handed out for it (see the crate docs).
    receipts: Mutex<HashMap<String, Tracked>>,
}

struct Tracked {
    handle: String,
    spent: bool,
    at: Instant,
}

impl SqsQueue {
    /// `wait` is the long-poll time of `receive` (SQS allows up to 20 s): 0 for tests and
    /// functions that must not block, 20 s for the connector, which then costs one request per
    /// 20 s while idle.
    pub fn new(
        client: Client,
        queue_url: impl Into<String>,
        dlq_url: impl Into<String>,
        max_attempts: u32,
        wait: Duration,
    ) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url: dlq_url.into(),
            max_attempts: max_attempts.max(1),
            wait: wait.min(Duration::from_secs(20)),
            receipts: Mutex::new(HashMap::new()),
        }
    }

    /// A client for a local endpoint (moto): region us-east-1 and static test credentials, so
    /// nothing is read from the environment or instance metadata.
    pub async fn local_client(endpoint_url: &str) -> Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint_url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .load()
            .await;
        Client::new(&config)
    }

    /// [`SqsQueue::new`] with a [`SqsQueue::local_client`].
    pub async fn local(
        endpoint_url: &str,
        queue_url: &str,
        dlq_url: &str,
        max_attempts: u32,
        wait: Duration,
    ) -> Self {
        let client = Self::local_client(endpoint_url).await;
        Self::new(client, queue_url, dlq_url, max_attempts, wait)
    }

    /// Creates `<name>.fifo` and its dead-letter queue `<name>-dlq.fifo`, with a redrive policy
    /// moving a message after `max_receive_count` receives, and returns their URLs (queue,
    /// DLQ). For tests and local setups; production queues come from the infrastructure code.
    pub async fn create_queues(
        client: &Client,
        name: &str,
        max_receive_count: u32,
    ) -> Result<(String, String), QueueError> {
        let dlq = client
            .create_queue()
            .queue_name(format!("{name}-dlq.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            // Keep dead letters as long as SQS allows: 14 days.
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .send()
            .await
            .map_err(storage)?;
        let dlq_url = dlq.queue_url().unwrap_or_default().to_string();
        let attrs = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(storage)?;
        let dlq_arn = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .ok_or_else(|| QueueError::storage("the DLQ has no ARN"))?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": max_receive_count,
        });
        let queue = client
            .create_queue()
            .queue_name(format!("{name}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
            .send()
            .await
            .map_err(storage)?;
        Ok((queue.queue_url().unwrap_or_default().to_string(), dlq_url))
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    pub fn dlq_url(&self) -> &str {
        &self.dlq_url
    }

    /// A message that Lambda's SQS event source received for us, as a [`Delivery`] of this
    /// queue, so that it is settled like any other (`ack`, `retry_later`, `dead_letter`).
    /// `Err` carries the receipt of a body that is not a job, to dead-letter it with the reason.
    pub fn delivery(
        &self,
        message_id: &str,
        receipt_handle: &str,
        body: &str,
        receive_count: u32,
        sent_at: DateTime<Utc>,
    ) -> Result<Delivery, (Receipt, String)> {
        let receipt = Receipt {
            message_id: message_id.to_string(),
            handle: receipt_handle.to_string(),
            attempt: receive_count.max(1),
            body: Some(body.to_string()),
        };
        self.track(message_id, receipt_handle);
        match serde_json::from_str::<Job>(body) {
            Ok(job) => Ok(Delivery {
                attempt: receipt.attempt,
                receipt,
                job,
                enqueued_at: sent_at,
            }),
            Err(e) => Err((receipt, format!("not a shadowsync job: {e}"))),
        }
    }

    /// Refuses a receipt this process knows to be stale or spent.
    fn check(&self, receipt: &Receipt) -> Result<(), QueueError> {
        let receipts = self.receipts.lock().unwrap();
        match receipts.get(&receipt.message_id) {
            Some(t) if t.spent || t.handle != receipt.handle => {
                Err(QueueError::UnknownReceipt(receipt.message_id.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Marks a receipt used up (acknowledged, handed back or dead-lettered).
    fn spend(&self, receipt: &Receipt) {
        self.receipts.lock().unwrap().insert(
            receipt.message_id.clone(),
            Tracked {
                handle: receipt.handle.clone(),
                spent: true,
                at: Instant::now(),
            },
        );
    }

    fn track(&self, message_id: &str, handle: &str) {
        let mut receipts = self.receipts.lock().unwrap();
        let now = Instant::now();
        receipts.retain(|_, t| {
            let age = now.duration_since(t.at);
            if t.spent {
                age < SPENT_MEMORY
            } else {
                age < Duration::from_secs(MAX_VISIBILITY_SECS)
            }
        });
        receipts.insert(
            message_id.to_string(),
            Tracked {
                handle: handle.to_string(),
                spent: false,
                at: now,
            },
        );
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&receipt.handle)
            .visibility_timeout(secs(visibility))
            .send()
            .await
            .map_err(|e| receipt_error(e, receipt))?;
        Ok(())
    }

    /// Sends the job to the DLQ, then deletes it from the queue (in that order: never lost).
    async fn move_to_dlq(&self, receipt: &Receipt, reason: &str) -> Result<(), QueueError> {
        let Some(body) = &receipt.body else {
            // Only a receipt this adapter made carries the body; nothing else can be moved.
            return Err(QueueError::UnknownReceipt(receipt.message_id.clone()));
        };
        let reason: String = match reason.trim() {
            "" => "(no reason given)".into(), // SQS refuses empty attribute values
            r => r.chars().take(MAX_REASON_CHARS).collect(),
        };
        self.client
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(body)
            // A group of its own, so that listing dead letters is never blocked by another.
            .message_group_id(&receipt.message_id)
            // A retried dead_letter (say, the delete below failed) adds no second copy.
            .message_deduplication_id(sha256_hex(&format!(
                "dead|{}|{}",
                receipt.message_id, receipt.attempt
            )))
            .message_attributes(REASON_ATTR, string_attr(&reason)?)
            .message_attributes(ATTEMPTS_ATTR, number_attr(receipt.attempt)?)
            .send()
            .await
            .map_err(storage)?;
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(&receipt.handle)
            .send()
            .await
            .map_err(|e| receipt_error(e, receipt))?;
        Ok(())
    }

    /// Receives every message of the DLQ (they are in flight afterwards: [`Self::release`]
    /// them).
    async fn receive_dead(&self) -> Result<Vec<Message>, QueueError> {
        let wait = if self.wait.is_zero() { 0 } else { 1 };
        let mut all = Vec::new();
        loop {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(PEEK_VISIBILITY_SECS)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(storage)?;
            let batch = out.messages.unwrap_or_default();
            if batch.is_empty() {
                return Ok(all);
            }
            all.extend(batch);
        }
    }

    /// Makes received DLQ messages visible again.
    async fn release(&self, messages: &[Message]) -> Result<(), QueueError> {
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .visibility_timeout(0)
                        .build()
                        .map_err(storage)
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Receives the dead letter `id` (in flight, to delete), releasing all others.
    async fn take_dead(&self, id: &str) -> Result<Message, QueueError> {
        let mut all = self.receive_dead().await?;
        let found = all.iter().position(|m| m.message_id() == Some(id));
        let found = found.map(|i| all.swap_remove(i));
        self.release(&all).await?;
        found.ok_or_else(|| QueueError::UnknownDeadLetter(id.to_string()))
    }

    async fn delete_dead(&self, message: &Message) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.dlq_url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .send()
            .await
            .map_err(storage)?;
        Ok(())
    }

    async fn counts(&self, url: &str) -> Result<(u64, u64), QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(storage)?;
        let attrs = out.attributes();
        let get = |name: QueueAttributeName| {
            attrs
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let not_visible = get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        let total = get(QueueAttributeName::ApproximateNumberOfMessages)
            + not_visible
            + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed);
        Ok((total, not_visible))
    }
}

/// The message group of a job: its [`Job::group`], or a hash of it when SQS would refuse it (at
/// most 128 printable ASCII characters), so that a strange user id cannot make a whole
/// notification batch fail forever. Deterministic, so per-user order holds either way.
pub fn message_group_id(job: &Job) -> String {
    let group = job.group();
    if group.len() <= 128 && group.bytes().all(|b| b.is_ascii_graphic()) {
        group
    } else {
        format!("sha256:{}", sha256_hex(&group))
    }
}

/// The deduplication id of a job: hex SHA-256 of [`Job::dedup_key`] (64 characters, within
/// SQS's 128, and any dedup key fits).
pub fn message_deduplication_id(job: &Job) -> String {
    sha256_hex(&job.dedup_key())
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whole seconds, rounded up (SQS's unit), capped at SQS's 12 hours.
fn secs(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(MAX_VISIBILITY_SECS) as i32
}

/// An SDK failure, described with its whole chain of causes (the SDK's own Display says little
/// more than "service error").
fn storage(e: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Storage {
        message: DisplayErrorContext(&e).to_string(),
        source: Box::new(e),
    }
}

/// SQS's answers for a receipt handle that is not (or no longer) valid are an unknown receipt.
fn receipt_error<E, R>(e: SdkError<E, R>, receipt: &Receipt) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().unwrap_or_default();
    if [
        "ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "InvalidIdFormat",
    ]
    .iter()
    .any(|c| code.ends_with(c))
    {
        QueueError::UnknownReceipt(receipt.message_id.clone())
    } else {
        storage(e)
    }
}

fn string_attr(s: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(s)
        .build()
        .map_err(storage)
}

fn number_attr(n: u32) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(n.to_string())
        .build()
        .map_err(storage)
}

fn system_attr<'a>(m: &'a Message, name: &MessageSystemAttributeName) -> Option<&'a str> {
    m.attributes()?.get(name).map(String::as_str)
}

fn sent_at(m: &Message) -> DateTime<Utc> {
    system_attr(m, &MessageSystemAttributeName::SentTimestamp)
        .and_then(|t| t.parse().ok())
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(Utc::now)
}

fn receive_count(m: &Message) -> u32 {
    system_attr(m, &MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Fails the send if SQS refused any entry: the caller (the webhook) must not acknowledge a
/// notification whose job was not stored. Entries SQS accepted stay queued; the caller's retry
/// resends them and SQS deduplicates them.
pub fn check_batch_result(out: &SendMessageBatchOutput, sent: usize) -> Result<(), QueueError> {
    let failed = out.failed();
    if failed.is_empty() {
        return Ok(());
    }
    let details: Vec<String> = failed
        .iter()
        .map(|f| {
            format!(
                "entry {}: {} {}",
                f.id(),
                f.code(),
                f.message().unwrap_or_default()
            )
        })
        .collect();
    Err(QueueError::storage(format!(
        "SQS refused {} of {sent} jobs: {}",
        failed.len(),
        details.join("; ")
    )))
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, jobs: Vec<Job>) -> Result<(), QueueError> {
        for chunk in jobs.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, job)| {
                    let body = serde_json::to_string(job).map_err(QueueError::storage)?;
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .message_group_id(message_group_id(job))
                        .message_deduplication_id(message_deduplication_id(job))
                        .build()
                        .map_err(storage)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(storage)?;
            check_batch_result(&out, chunk.len())?;
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut deliveries = Vec::new();
        // One message per call (see the crate docs); only the first call long-polls.
        for call in 0..max {
            let wait = if call == 0 {
                self.wait.as_secs() as i32
            } else {
                0
            };
            let out = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(1)
                .visibility_timeout(secs(visibility))
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send()
                .await
                .map_err(storage)?;
            let Some(message) = out.messages.unwrap_or_default().into_iter().next() else {
                break;
            };
            let (Some(id), Some(handle), Some(body)) = (
                message.message_id(),
                message.receipt_handle(),
                message.body(),
            ) else {
                continue;
            };
            // A body that is not a job (put there by hand?) is left alone: it comes back after
            // its visibility timeout until the redrive policy moves it to the DLQ.
            let Ok(job) = serde_json::from_str::<Job>(body) else {
                continue;
            };
            let receipt = Receipt {
                message_id: id.to_string(),
                handle: handle.to_string(),
                attempt: receive_count(&message),
                body: Some(body.to_string()),
            };
            self.track(id, handle);
            deliveries.push(Delivery {
                attempt: receipt.attempt,
                receipt,
                job,
                enqueued_at: sent_at(&message),
            });
        }
        Ok(deliveries)
    }

    async fn ack(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.check(receipt)?;
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(&receipt.handle)
            .send()
            .await
            .map_err(|e| receipt_error(e, receipt))?;
        self.spend(receipt);
        Ok(())
    }

    async fn retry_later(
        &self,
        receipt: &Receipt,
        delay: Duration,
        reason: &str,
    ) -> Result<Disposition, QueueError> {
        self.check(receipt)?;
        if receipt.attempt >= self.max_attempts {
            self.move_to_dlq(receipt, reason).await?;
            self.spend(receipt);
            return Ok(Disposition::DeadLettered);
        }
        // Still in flight, so its group stays blocked until the delay has passed.
        self.change_visibility(receipt, delay).await?;
        self.spend(receipt);
        Ok(Disposition::Retrying {
            attempt: receipt.attempt,
        })
    }

    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<(), QueueError> {
        self.check(receipt)?;
        self.move_to_dlq(receipt, reason).await?;
        self.spend(receipt);
        Ok(())
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        self.check(receipt)?;
        self.change_visibility(receipt, visibility).await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let (depth, in_flight) = self.counts(&self.queue_url).await?;
        let (dead_letters, _) = self.counts(&self.dlq_url).await?;
        Ok(QueueStats {
            depth,
            in_flight,
            dead_letters,
        })
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let all = self.receive_dead().await?;
        let released = self.release(&all).await;
        let mut dead: Vec<DeadLetter> = Vec::new();
        for m in &all {
            let (Some(id), Some(body)) = (m.message_id(), m.body()) else {
                continue;
            };
            // Not a job: only visible in the AWS console (it cannot be shown as a DeadLetter).
            let Ok(job) = serde_json::from_str::<Job>(body) else {
                continue;
            };
            if dead.iter().any(|d| d.id == id) {
                continue; // received twice in one listing (a listing longer than the peek)
            }
            let attr = |name: &str| {
                m.message_attributes()
                    .and_then(|a| a.get(name))
                    .and_then(|v| v.string_value())
            };
            // Moved by the redrive policy: no attributes; the listing itself is one receive.
            let attempts = attr(ATTEMPTS_ATTR)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| receive_count(m).saturating_sub(1));
            let reason = attr(REASON_ATTR).map(str::to_string).unwrap_or_else(|| {
                format!("received {attempts} times without being acknowledged (SQS redrive policy)")
            });
            dead.push(DeadLetter {
                id: id.to_string(),
                job,
                attempts,
                reason,
                dead_at: sent_at(m),
            });
        }
        released?;
        Ok(dead)
    }

    async fn redrive(&self, id: &str) -> Result<(), QueueError> {
        let message = self.take_dead(id).await?;
        let body = message.body().unwrap_or_default();
        let job: Job = match serde_json::from_str(body) {
            Ok(job) => job,
            Err(e) => {
                self.release(std::slice::from_ref(&message)).await?;
                return Err(QueueError::Storage {
                    message: format!("dead letter {id} is not a job: {e}"),
                    source: Box::new(e),
                });
            }
        };
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(message_group_id(&job))
            // Not the job's own dedup id: the first copy may be within the interval, and
            // this must be a fresh job. Keyed on the dead letter, so a retried redrive whose
            // delete failed queues it once.
            .message_deduplication_id(sha256_hex(&format!("redrive|{id}")))
            .send()
            .await
            .map_err(storage)?;
        self.delete_dead(&message).await
    }

    async fn drop_dead_letter(&self, id: &str) -> Result<(), QueueError> {
        let message = self.take_dead(id).await?;
        self.delete_dead(&message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
    use shadowsync_queue::JobSource;

    fn job(user: &str) -> Job {
        Job::Converge {
            user_id: shadowsync_core::ObjectId::from_label(user),
            change_type: None,
            subscription_id: None,
            received_at: Utc::now(),
            source: JobSource::Notification,
        }
    }

    #[test]
    fn a_partial_batch_failure_is_an_error() {
        let ok = SendMessageBatchResultEntry::builder()
            .id("0")
            .message_id("m0")
            .md5_of_message_body("x")
            .build()
            .unwrap();
        let failed = BatchResultErrorEntry::builder()
            .id("1")
            .sender_fault(false)
            .code("InternalError")
            .message("try again")
            .build()
            .unwrap();
        let all_ok = SendMessageBatchOutput::builder()
            .successful(ok.clone())
            .set_failed(Some(Vec::new()))
            .build()
            .unwrap();
        assert!(check_batch_result(&all_ok, 1).is_ok());
        let partial = SendMessageBatchOutput::builder()
            .successful(ok)
            .failed(failed)
            .build()
            .unwrap();
        let err = check_batch_result(&partial, 2).unwrap_err().to_string();
        assert!(
            err.contains("1 of 2") && err.contains("InternalError"),
            "{err}"
        );
    }

    #[test]
    fn ids_fit_sqs() {
        let j = job("alice");
        assert_eq!(message_group_id(&j), j.group());
        let dedup = message_deduplication_id(&j);
        assert_eq!(dedup.len(), 64);
        let odd = Job::Lifecycle {
            event: shadowsync_queue::LifecycleEvent::Missed,
            subscription_id: "ü x".repeat(100),
            received_at: Utc::now(),
        };
        let group = message_group_id(&odd);
        assert!(group.len() <= 128 && group.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(group, message_group_id(&odd), "deterministic");
    }

    #[test]
    fn seconds_round_up_and_cap() {
        assert_eq!(secs(Duration::ZERO), 0);
        assert_eq!(secs(Duration::from_millis(300)), 1);
        assert_eq!(secs(Duration::from_secs(3)), 3);
        assert_eq!(secs(Duration::from_secs(100_000)), 43_200);
    }
}
