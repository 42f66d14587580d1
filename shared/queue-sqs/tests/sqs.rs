//! The SQS queue against a local moto server (started by `tests/moto/moto.sh ensure`, or the
//! endpoint in SHADOWSYNC_TEST_AWS_ENDPOINT). Each test works on queues of its own.

use chrono::Utc;
use shadowsync_queue::{conformance, Job, JobSource, Queue, QueueError};
use shadowsync_queue_sqs::SqsQueue;
use std::collections::HashSet;
use std::time::Duration;

fn endpoint() -> &'static str {
    shadowsync_e2e::aws::moto()
}

/// A queue on fresh FIFO queues with unique names.
async fn fresh_queue(name: &str, max_attempts: u32, max_receive_count: u32) -> SqsQueue {
    let client = SqsQueue::local_client(endpoint()).await;
    let name = format!("{name}-{}", uuid::Uuid::new_v4().simple());
    let (queue_url, dlq_url) = SqsQueue::create_queues(&client, &name, max_receive_count)
        .await
        .expect("create queues");
    SqsQueue::new(client, queue_url, dlq_url, max_attempts, Duration::ZERO)
}

fn job(user: &str) -> Job {
    Job::Converge {
        user_id: shadowsync_core::ObjectId::from_label(user),
        change_type: None,
        subscription_id: None,
        received_at: Utc::now(),
        source: JobSource::Notification,
    }
}

/// Receives until `want` jobs arrived or 5 s passed.
async fn receive_all(q: &SqsQueue, want: usize) -> Vec<shadowsync_queue::Delivery> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < want && std::time::Instant::now() < deadline {
        let batch = q.receive(10, Duration::from_secs(30)).await.unwrap();
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got.extend(batch);
    }
    got
}

#[tokio::test]
async fn conformance() {
    let max_attempts = 3;
    let q = fresh_queue("conformance", max_attempts, max_attempts).await;
    conformance::check(
        &q,
        conformance::Params {
            max_attempts,
            tick: Duration::from_secs(1),
        },
    )
    .await;
}

/// Graph redelivers a notification (same job, same dedup key): the second send is accepted
/// but the job runs once, also when the first copy was already processed.
#[tokio::test]
async fn repeated_notification_is_delivered_once() {
    let q = fresh_queue("dedup", 3, 3).await;
    let j = job("alice");
    q.send_batch(vec![j.clone()]).await.unwrap();
    q.send_batch(vec![j.clone()]).await.unwrap();
    let got = receive_all(&q, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job, j);
    q.ack(&got[0].receipt).await.unwrap();
    q.send_batch(vec![j.clone()]).await.unwrap();
    assert!(q
        .receive(10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(q.stats().await.unwrap().depth, 0);
}

/// More than 10 jobs (SQS's batch limit) go out in several batches, all of them.
#[tokio::test]
async fn large_batches_are_split() {
    let q = fresh_queue("split", 3, 3).await;
    let jobs: Vec<Job> = (0..25).map(|i| job(&format!("user{i}"))).collect();
    q.send_batch(jobs.clone()).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, 25);
    let got = receive_all(&q, 25).await;
    let users: HashSet<String> = got.iter().map(|d| d.job.group()).collect();
    assert_eq!(users.len(), 25, "each job once");
    assert_eq!(users, jobs.iter().map(Job::group).collect());
    for d in &got {
        q.ack(&d.receipt).await.unwrap();
    }
    assert_eq!(q.stats().await.unwrap(), Default::default());
}

/// A job whose consumer never acknowledges it (say it crashes each time) is moved to the DLQ
/// by SQS's redrive policy after maxReceiveCount receives, and listed as a dead letter.
#[tokio::test]
async fn redrive_policy_dead_letters_unacknowledged_jobs() {
    // max_attempts above maxReceiveCount: only the redrive policy can dead-letter it here.
    let q = fresh_queue("redrive-policy", 10, 2).await;
    let j = job("crashy");
    q.send_batch(vec![j.clone()]).await.unwrap();
    for attempt in 1..=2 {
        let got = q.receive(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].attempt, attempt);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(
        q.receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "the third receive finds the job gone to the DLQ"
    );
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead_letters), (0, 1));
    let dead = q.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job, j);
    assert_eq!(dead[0].attempts, 2);
    assert!(
        dead[0].reason.contains("redrive policy"),
        "{}",
        dead[0].reason
    );
    q.redrive(&dead[0].id).await.unwrap();
    let got = receive_all(&q, 1).await;
    assert_eq!(
        (got.len(), got[0].attempt),
        (1, 1),
        "redriven as a fresh job"
    );
    q.ack(&got[0].receipt).await.unwrap();
}

/// A send SQS refuses is an error (the webhook answers 5xx and Graph retries). Per-entry
/// failures are covered by the unit test of `check_batch_result`: moto fails no single entry
/// of a valid batch.
#[tokio::test]
async fn failed_send_is_an_error() {
    let client = SqsQueue::local_client(endpoint()).await;
    let base = endpoint().trim_end_matches('/');
    let q = SqsQueue::new(
        client,
        format!("{base}/123456789012/missing.fifo"),
        format!("{base}/123456789012/missing-dlq.fifo"),
        3,
        Duration::ZERO,
    );
    assert!(matches!(
        q.send_batch(vec![job("x")]).await,
        Err(QueueError::Storage { .. })
    ));
}

/// A receipt of another queue instance (another process) is checked by SQS itself: it works
/// while valid, and a made-up handle in a well-formed receipt is unknown.
#[tokio::test]
async fn receipts_work_across_instances() {
    let q = fresh_queue("instances", 3, 3).await;
    q.send_batch(vec![job("bob")]).await.unwrap();
    let got = receive_all(&q, 1).await;
    let other = SqsQueue::new(
        SqsQueue::local_client(endpoint()).await,
        q_urls(&q).0,
        q_urls(&q).1,
        3,
        Duration::ZERO,
    );
    // A receipt with a handle SQS never issued.
    let mut forged = got[0].receipt.clone();
    forged.handle = "made-up-handle".into();
    assert!(matches!(
        other.ack(&forged).await,
        Err(QueueError::UnknownReceipt(_))
    ));
    other.ack(&got[0].receipt).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, 0);
}

fn q_urls(q: &SqsQueue) -> (String, String) {
    (q.queue_url().to_string(), q.dlq_url().to_string())
}
