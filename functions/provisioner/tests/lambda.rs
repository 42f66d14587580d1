//! The provisioner's Lambda handler on SQS FIFO batches (moto), with a handler whose outcome
//! per user the test decides: what is reported failed, what is deleted, retried later or
//! dead-lettered, and that the rest of a batch after a failure is handed back untouched.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsEvent;
use chrono::Utc;
use serde_json::{json, Value};
use shadowsync_app::{JobError, JobHandler, JobMetrics, Settled, WorkerConfig};
use shadowsync_core::{Backoff, ObjectId};
use shadowsync_e2e::aws;
use shadowsync_provisioner::SqsBatchHandler;
use shadowsync_queue::{ChangeType, Job, JobSource, Queue};
use shadowsync_queue_sqs::SqsQueue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The users of these tests, by label (jobs carry object ids).
const LABELS: [&str; 7] = ["u1", "u2", "u3", "u4", "p1", "p2", "r1"];

fn label(id: &ObjectId) -> String {
    LABELS
        .iter()
        .find(|l| ObjectId::from_label(l) == *id)
        .map_or_else(|| id.to_string(), |l| l.to_string())
}

/// Fails the users it was told to (retryable or not), succeeds for the others; records calls.
#[derive(Default)]
struct Scripted {
    failures: HashMap<String, bool>,
    /// Users whose job takes this long.
    slow: HashMap<String, Duration>,
    calls: Mutex<Vec<String>>,
    metrics: JobMetrics,
}

#[async_trait]
impl JobHandler for Scripted {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let Job::Converge { user_id, .. } = job else {
            unreachable!()
        };
        let user = label(user_id);
        self.calls.lock().unwrap().push(user.clone());
        if let Some(delay) = self.slow.get(&user) {
            tokio::time::sleep(*delay).await;
        }
        match self.failures.get(&user) {
            Some(&retryable) => Err(JobError {
                retryable,
                ..JobError::retryable(format!("scripted failure of {user}"))
            }),
            None => Ok(()),
        }
    }

    fn settled(&self, settled: Settled) {
        self.metrics.settled(settled);
    }
}

fn job(user: &str) -> Job {
    Job::Converge {
        user_id: ObjectId::from_label(user),
        change_type: Some(ChangeType::Updated),
        subscription_id: None,
        received_at: Utc::now(),
        source: JobSource::Notification,
    }
}

struct Setup {
    queue: Arc<SqsQueue>,
    queue_url: String,
}

async fn setup(max_attempts: u32) -> Setup {
    let (queue_url, dlq_url) = aws::fifo_queues("lambda-batch", 10).await.unwrap();
    let sdk = aws::sdk_config().await;
    let queue = Arc::new(SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        &queue_url,
        &dlq_url,
        max_attempts,
        Duration::ZERO,
    ));
    Setup { queue, queue_url }
}

fn handler(queue: Arc<SqsQueue>, jobs: Arc<Scripted>) -> SqsBatchHandler {
    SqsBatchHandler {
        queue,
        jobs,
        config: WorkerConfig {
            retry: Backoff::new(Duration::from_secs(30), Duration::from_secs(60)),
            ..Default::default()
        },
        metrics: Arc::new(JobMetrics::new()),
        graph: None,
        published: Default::default(),
        outage: Default::default(),
    }
}

fn ids(event: &Value) -> Vec<String> {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["messageId"].as_str().unwrap().to_string())
        .collect()
}

fn users(event: &Value) -> Vec<String> {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let job: Job = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            match job {
                Job::Converge { user_id, .. } => label(&user_id),
                _ => unreachable!(),
            }
        })
        .collect()
}

/// Receives until the queue hands out `n` messages (moto may split them over receives).
async fn receive(queue_url: &str, n: usize) -> Value {
    let mut records = Vec::new();
    for _ in 0..20 {
        let event = aws::receive_event(queue_url, 300).await.unwrap();
        records.extend(event["Records"].as_array().unwrap().iter().cloned());
        if records.len() >= n {
            break;
        }
    }
    json!({ "Records": records })
}

#[tokio::test]
async fn a_batch_stops_at_the_first_failure_and_reports_the_rest() {
    let Setup { queue, queue_url } = setup(5).await;
    queue
        .send_batch(vec![job("u1"), job("u2"), job("u3"), job("u4")])
        .await
        .unwrap();
    let event = receive(&queue_url, 4).await;
    assert_eq!(users(&event), ["u1", "u2", "u3", "u4"]);
    let jobs = Arc::new(Scripted {
        failures: HashMap::from([("u2".to_string(), true)]),
        ..Default::default()
    });
    let response = handler(queue.clone(), jobs.clone())
        .handle(serde_json::from_value::<SqsEvent>(event.clone()).unwrap())
        .await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    let all = ids(&event);
    assert_eq!(failed, all[1..], "u2 failed; u3 and u4 were not tried");
    assert_eq!(*jobs.calls.lock().unwrap(), ["u1", "u2"]);
    aws::complete_batch(
        &queue_url,
        &event,
        &serde_json::to_value(&response).unwrap(),
    )
    .await
    .unwrap();

    // u3 and u4 are visible again at once (not after 300 s); u2 waits for its backoff.
    let again = receive(&queue_url, 2).await;
    let mut back = users(&again);
    back.sort();
    assert_eq!(back, ["u3", "u4"]);
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.dead_letters, 0);
    assert_eq!(jobs.metrics.snapshot().retries, 1);
}

#[tokio::test]
async fn permanent_failures_and_foreign_bodies_are_dead_lettered_and_the_batch_goes_on() {
    let Setup { queue, queue_url } = setup(5).await;
    queue.send_batch(vec![job("p1"), job("p2")]).await.unwrap();
    // Something that is not a job, put on the queue by hand.
    let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    client
        .send_message()
        .queue_url(&queue_url)
        .message_body("{\"hello\": 1}")
        .message_group_id("stray")
        .message_deduplication_id("stray-1")
        .send()
        .await
        .unwrap();
    let event = receive(&queue_url, 3).await;
    assert_eq!(ids(&event).len(), 3);
    let jobs = Arc::new(Scripted {
        failures: HashMap::from([("p1".to_string(), false)]),
        ..Default::default()
    });
    let response = handler(queue.clone(), jobs.clone())
        .handle(serde_json::from_value::<SqsEvent>(event.clone()).unwrap())
        .await;
    assert!(
        response.batch_item_failures.is_empty(),
        "dead-lettered messages are settled: {response:?}"
    );
    let mut called = jobs.calls.lock().unwrap().clone();
    called.sort();
    assert_eq!(called, ["p1", "p2"]);
    let dead = queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "only jobs are listed: {dead:?}");
    assert!(
        dead[0].reason.contains("scripted failure of p1"),
        "{dead:?}"
    );
    assert_eq!(
        queue.stats().await.unwrap().dead_letters,
        2,
        "p1 and the stray body"
    );
}

#[tokio::test]
async fn the_last_attempt_is_dead_lettered_with_its_reason() {
    let Setup { queue, queue_url } = setup(1).await;
    queue.send_batch(vec![job("r1")]).await.unwrap();
    let event = receive(&queue_url, 1).await;
    let jobs = Arc::new(Scripted {
        failures: HashMap::from([("r1".to_string(), true)]),
        ..Default::default()
    });
    let response = handler(queue.clone(), jobs)
        .handle(serde_json::from_value::<SqsEvent>(event).unwrap())
        .await;
    assert!(response.batch_item_failures.is_empty());
    let dead = queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("scripted failure of r1"));
}

#[tokio::test]
async fn a_job_that_cannot_finish_before_the_deadline_goes_back_to_the_queue() {
    let Setup { queue, queue_url } = setup(5).await;
    queue
        .send_batch(vec![job("u1"), job("u2"), job("u3")])
        .await
        .unwrap();
    let event = receive(&queue_url, 3).await;
    let jobs = Arc::new(Scripted {
        slow: HashMap::from([("u2".to_string(), Duration::from_secs(30))]),
        ..Default::default()
    });
    // Four seconds left: three for the margin, one for the jobs.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let started = std::time::Instant::now();
    let response = handler(queue.clone(), jobs.clone())
        .handle_until(
            serde_json::from_value::<SqsEvent>(event.clone()).unwrap(),
            Some(deadline),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered in time"
    );
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, ids(&event)[1..], "u2 cut short, u3 not reached");
    aws::complete_batch(
        &queue_url,
        &event,
        &serde_json::to_value(&response).unwrap(),
    )
    .await
    .unwrap();
    // Both are visible again at once; nothing was dead-lettered or counted as a retry.
    let mut back = users(&receive(&queue_url, 2).await);
    back.sort();
    assert_eq!(back, ["u2", "u3"]);
    assert_eq!(queue.stats().await.unwrap().dead_letters, 0);
    assert_eq!(jobs.metrics.snapshot().retries, 0);
}
