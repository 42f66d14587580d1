//! The router driven through `tower::ServiceExt::oneshot` with Graph's documented payloads
//! (tests/fixtures), against the real durable embedded queue.

use async_trait::async_trait;
use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use secrecy::SecretString;
use shadowsync_notifications::{router, MetricsSnapshot, WebhookMetrics, WebhookState};
use shadowsync_queue::{
    ChangeType, DeadLetter, Delivery, Disposition, EmbeddedQueue, Job, JobSource, LifecycleEvent,
    PendingJobs, Queue, QueueError, QueueStats, Receipt,
};
use shadowsync_state::EmbeddedStore;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tower::ServiceExt;

const CLIENT_STATE: &str = "secretClientValue";
const TENANT: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
const SUB_A: &str = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07";
const SUB_B: &str = "c4b5a1f0-9e1d-4a7b-8f3c-2d6e0a9b1c55";
const JSON: &str = "application/json";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Harness {
    app: Router,
    queue: Arc<EmbeddedQueue>,
    pending: Arc<PendingJobs>,
    metrics: Arc<WebhookMetrics>,
    _dir: TempDir,
}

/// As `serve` has it: the marks of waiting jobs in memory.
fn marks() -> Arc<PendingJobs> {
    Arc::new(PendingJobs::new(Arc::new(
        EmbeddedStore::in_memory().unwrap(),
    )))
}

fn state(queue: Arc<dyn Queue>, pending: Arc<PendingJobs>) -> WebhookState {
    let mut state = WebhookState::new(
        queue,
        pending,
        SecretString::from(CLIENT_STATE),
        TENANT.parse().unwrap(),
    );
    // Generous: a slow CI disk must not turn into a 503 here.
    state.enqueue_timeout = Duration::from_secs(60);
    state
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("state.redb")).unwrap();
        let queue = Arc::new(EmbeddedQueue::new(&store, 5).unwrap());
        let pending = marks();
        let state = state(queue.clone(), pending.clone());
        let metrics = state.metrics.clone();
        Self {
            app: router(state),
            queue,
            pending,
            metrics,
            _dir: dir,
        }
    }

    async fn post(&self, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Reply {
        send(&self.app, uri, content_type, body).await
    }

    /// Everything in the queue, acknowledged as it is received (the queue hands out one job per
    /// group at a time).
    async fn drain(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        loop {
            let batch: Vec<Delivery> = self
                .queue
                .receive(100, Duration::from_secs(60))
                .await
                .unwrap();
            if batch.is_empty() {
                return jobs;
            }
            for delivery in batch {
                self.queue.ack(&delivery.receipt).await.unwrap();
                jobs.push(delivery.job);
            }
        }
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(app: &Router, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Reply {
    let mut request = Request::post(uri);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let response = app
        .clone()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn converge(
    user_id: &str,
    change_type: ChangeType,
    subscription_id: &str,
) -> (String, Option<ChangeType>, Option<String>) {
    (
        user_id.into(),
        Some(change_type),
        Some(subscription_id.into()),
    )
}

/// The parts of converge jobs that do not depend on the clock, sorted.
fn converge_parts(jobs: &[Job]) -> Vec<(String, Option<ChangeType>, Option<String>)> {
    let mut parts: Vec<_> = jobs
        .iter()
        .map(|job| match job {
            Job::Converge {
                user_id,
                change_type,
                subscription_id,
                source,
                ..
            } => {
                assert_eq!(*source, JobSource::Notification);
                (user_id.to_string(), *change_type, subscription_id.clone())
            }
            other => panic!("expected a converge job, got {other:?}"),
        })
        .collect();
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    parts
}

#[tokio::test]
async fn handshake_echoes_the_decoded_token_as_plain_text() {
    let h = Harness::new();
    // `+` is a space, `%2B` a plus, and markup comes back as inert text.
    let query = "validationToken=Validation%3A+Testing+client+application+reachability+for+subscription+Request-Id%3A+a%2Bb%20c%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let expected = "Validation: Testing client application reachability for subscription Request-Id: a+b c<script>alert(1)</script>";
    for path in ["/api/notifications", "/api/lifecycle"] {
        // Graph's validation POST carries no JSON; the handshake must not care.
        let reply = h
            .post(&format!("{path}?{query}"), Some("text/plain"), "")
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(reply.body, expected);
    }
    assert_eq!(h.queue.stats().await.unwrap(), QueueStats::default());
    assert_eq!(h.metrics().handshakes, 2);
}

#[tokio::test]
async fn handshake_never_touches_the_queue() {
    let app = router(state(Arc::new(FailingQueue), marks()));
    let reply = send(&app, "/api/notifications?validationToken=abc", None, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "abc");
}

#[tokio::test]
async fn overlong_validation_token_is_400_and_never_echoed() {
    let h = Harness::new();
    // Graph's tokens are short opaque strings; a long one is someone using us as a mirror.
    let at_limit = "t".repeat(1024);
    let reply = h
        .post(
            &format!("/api/notifications?validationToken={at_limit}"),
            None,
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, at_limit);

    // Measured decoded: `%41` is one byte of token.
    for token in ["t".repeat(1025), "%41".repeat(1025), "x".repeat(16 * 1024)] {
        let reply = h
            .post(&format!("/api/lifecycle?validationToken={token}"), None, "")
            .await;
        // Refused, and the token is not in the answer.
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::BAD_REQUEST, "validationToken too long")
        );
    }
    let m = h.metrics();
    assert_eq!((m.handshakes, m.requests_rejected), (1, 3));
    assert_eq!(h.queue.stats().await.unwrap(), QueueStats::default());
}

#[tokio::test]
async fn overlong_subscription_ids_are_never_enqueued() {
    let h = Harness::new();
    // Graph's subscription ids are GUIDs (36 characters); 65 is no id of Graph's.
    let long = "7".repeat(65);
    let body = serde_json::json!({"value": [
        {"subscriptionId": long, "tenantId": TENANT, "clientState": CLIENT_STATE,
         "changeType": "updated", "resource": "Users/8e52ba0a-7a33-4e58-b2b1-7f3f6a3c2d11"},
        {"subscriptionId": long, "tenantId": TENANT, "clientState": CLIENT_STATE,
         "lifecycleEvent": "missed"},
        {"subscriptionId": SUB_A, "tenantId": TENANT, "clientState": CLIENT_STATE,
         "changeType": "updated", "resource": "Users/0b6c7e58-3d2a-4d8e-9a41-5e0f2c7b9a03"},
    ]});
    let reply = h
        .post("/api/notifications", Some(JSON), body.to_string())
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(
        converge_parts(&h.drain().await),
        vec![converge(
            "0b6c7e58-3d2a-4d8e-9a41-5e0f2c7b9a03",
            ChangeType::Updated,
            SUB_A
        )]
    );
    let m = h.metrics();
    assert_eq!((m.rejected_malformed_item, m.jobs_enqueued), (2, 1));
}

#[tokio::test]
async fn users_batch_is_enqueued_before_202() {
    let h = Harness::new();
    let reply = h
        .post(
            "/api/notifications",
            Some("application/json; charset=utf-8"),
            fixture("users_batch.json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);

    // The response is out; the jobs are already durable.
    assert_eq!(h.queue.stats().await.unwrap().depth, 3);
    assert_eq!(
        converge_parts(&h.drain().await),
        vec![
            converge(
                "0b6c7e58-3d2a-4d8e-9a41-5e0f2c7b9a03",
                ChangeType::Deleted,
                SUB_A
            ),
            // No resourceData: the id comes from `resource`.
            converge(
                "5d4c3b2a-1f0e-4d9c-8b7a-6e5f4d3c2b1a",
                ChangeType::Updated,
                SUB_B
            ),
            converge(
                "8e52ba0a-7a33-4e58-b2b1-7f3f6a3c2d11",
                ChangeType::Updated,
                SUB_A
            ),
        ]
    );
    let m = h.metrics();
    assert_eq!((m.items_received, m.jobs_enqueued), (3, 3));
}

#[tokio::test]
async fn a_redelivered_notification_leaves_one_job_until_that_job_starts() {
    let h = Harness::new();
    let deliver = || {
        h.post(
            "/api/notifications",
            Some(JSON),
            fixture("users_batch.json"),
        )
    };
    assert_eq!(deliver().await.status, StatusCode::ACCEPTED);
    // Graph delivers the batch again (our 202 came after its 3 s): the jobs wait, not started.
    assert_eq!(deliver().await.status, StatusCode::ACCEPTED);
    assert_eq!(h.queue.stats().await.unwrap().depth, 3, "one job per item");
    let m = h.metrics();
    assert_eq!((m.jobs_enqueued, m.folded), (3, 3));

    // A worker starts one: it reads Graph from now on, so a later change needs a job of its own.
    let started = h.queue.receive(1, Duration::from_secs(60)).await.unwrap();
    h.pending.started(&started[0].job).await.unwrap();
    assert_eq!(deliver().await.status, StatusCode::ACCEPTED);
    assert_eq!(h.queue.stats().await.unwrap().depth, 4);
    assert_eq!(h.metrics().folded, 5);
}

#[tokio::test]
async fn a_failed_enqueue_leaves_no_mark_so_graph_s_retry_is_queued() {
    let pending = marks();
    let failing = router(state(Arc::new(FailingQueue), pending.clone()));
    let delivery = || fixture("users_batch.json");
    let reply = send(&failing, "/api/notifications", Some(JSON), delivery()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("state.redb")).unwrap();
    let queue = Arc::new(EmbeddedQueue::new(&store, 5).unwrap());
    let working = router(state(queue.clone(), pending));
    let retry = send(&working, "/api/notifications", Some(JSON), delivery()).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert_eq!(queue.stats().await.unwrap().depth, 3);
}

#[tokio::test]
async fn forged_and_foreign_items_are_never_enqueued() {
    let h = Harness::new();
    let reply = h
        .post(
            "/api/notifications",
            Some(JSON),
            fixture("mixed_batch.json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(
        converge_parts(&h.drain().await),
        vec![converge(
            "8e52ba0a-7a33-4e58-b2b1-7f3f6a3c2d11",
            ChangeType::Updated,
            SUB_A
        )]
    );
    assert_eq!(
        h.metrics(),
        MetricsSnapshot {
            items_received: 6,
            jobs_enqueued: 1,
            rejected_bad_client_state: 2,
            rejected_wrong_tenant: 1,
            rejected_unsupported_resource: 1,
            rejected_malformed_item: 1,
            ..MetricsSnapshot::default()
        }
    );
}

#[tokio::test]
async fn all_forged_batch_is_answered_202_and_enqueues_nothing() {
    let h = Harness::new();
    let forged = fixture("users_batch.json").replace(CLIENT_STATE, "guessedClientValue");
    let reply = h.post("/api/notifications", Some(JSON), forged).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(h.queue.stats().await.unwrap(), QueueStats::default());
    let m = h.metrics();
    assert_eq!((m.rejected_bad_client_state, m.jobs_enqueued), (3, 0));

    let empty = h
        .post("/api/notifications", Some(JSON), r#"{"value": []}"#)
        .await;
    assert_eq!(empty.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn lifecycle_notifications_become_lifecycle_jobs() {
    let h = Harness::new();
    let cases = [
        (
            "lifecycle_reauthorization_required.json",
            LifecycleEvent::ReauthorizationRequired,
        ),
        (
            "lifecycle_subscription_removed.json",
            LifecycleEvent::SubscriptionRemoved,
        ),
        ("lifecycle_missed.json", LifecycleEvent::Missed),
    ];
    for (name, expected) in cases {
        let reply = h.post("/api/lifecycle", Some(JSON), fixture(name)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{name}");
        let jobs = h.drain().await;
        assert!(
            matches!(
                jobs.as_slice(),
                [Job::Lifecycle { event, subscription_id, .. }]
                    if *event == expected && subscription_id == SUB_A
            ),
            "{name}: {jobs:?}"
        );
    }
    assert_eq!(h.metrics().jobs_enqueued, 3);
}

#[tokio::test]
async fn lifecycle_items_are_authenticated_and_unknown_events_discarded() {
    let h = Harness::new();
    let body = serde_json::json!({"value": [
        // Some deliveries name the tenant `organizationId`.
        {"subscriptionId": SUB_A, "organizationId": TENANT, "clientState": CLIENT_STATE,
         "lifecycleEvent": "reauthorizationRequired"},
        {"subscriptionId": SUB_A, "tenantId": TENANT, "clientState": CLIENT_STATE,
         "lifecycleEvent": "somethingNew"},
        {"subscriptionId": SUB_B, "tenantId": TENANT, "clientState": "nope",
         "lifecycleEvent": "subscriptionRemoved"},
        {"tenantId": TENANT, "clientState": CLIENT_STATE, "lifecycleEvent": "missed"},
    ]});
    let reply = h.post("/api/lifecycle", Some(JSON), body.to_string()).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let jobs = h.drain().await;
    assert!(
        matches!(
            jobs.as_slice(),
            [Job::Lifecycle { event: LifecycleEvent::ReauthorizationRequired, subscription_id, .. }]
                if subscription_id == SUB_A
        ),
        "{jobs:?}"
    );
    assert_eq!(
        h.metrics(),
        MetricsSnapshot {
            items_received: 4,
            jobs_enqueued: 1,
            rejected_unknown_lifecycle_event: 1,
            rejected_bad_client_state: 1,
            rejected_malformed_item: 1,
            ..MetricsSnapshot::default()
        }
    );
}

/// A valid (empty) delivery padded to `len` bytes.
fn padded_body(len: usize) -> String {
    let mut body = String::from(r#"{"value": [], "padding": ""#);
    body.push_str(&"x".repeat(len - body.len() - 2));
    body.push_str(r#""}"#);
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn oversized_body_is_413() {
    let h = Harness::new();
    let mib = 1024 * 1024;
    // 1 MiB + 1 proves our limit rather than axum's 2 MB default.
    for len in [2 * mib, mib + 1] {
        let reply = h
            .post("/api/notifications", Some(JSON), padded_body(len))
            .await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{len}");
    }
    let at_limit = h
        .post("/api/notifications", Some(JSON), padded_body(mib))
        .await;
    assert_eq!(at_limit.status, StatusCode::ACCEPTED);
    assert_eq!(h.metrics().requests_rejected, 2);
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let h = Harness::new();
    for content_type in [Some("text/plain"), Some("application/jsonx"), None] {
        let reply = h
            .post(
                "/api/notifications",
                content_type,
                fixture("users_batch.json"),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    assert_eq!(h.queue.stats().await.unwrap().depth, 0);
    assert_eq!(h.metrics().requests_rejected, 3);
}

#[tokio::test]
async fn malformed_json_or_no_value_array_is_400() {
    let h = Harness::new();
    for body in [
        "{\"value\": [",
        "not json",
        "{}",
        r#"{"values": []}"#,
        r#"{"value": {"clientState": "secretClientValue"}}"#,
        "[]",
    ] {
        let reply = h.post("/api/notifications", Some(JSON), body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(h.queue.stats().await.unwrap().depth, 0);
    let m = h.metrics();
    assert_eq!((m.requests_rejected, m.items_received), (6, 0));
}

#[tokio::test]
async fn failed_enqueue_is_503_so_graph_retries() {
    let state = state(Arc::new(FailingQueue), marks());
    let metrics = state.metrics.clone();
    let app = router(state);
    let reply = send(
        &app,
        "/api/notifications",
        Some(JSON),
        fixture("users_batch.json"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let reply = send(
        &app,
        "/api/lifecycle",
        Some(JSON),
        fixture("lifecycle_missed.json"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    let m = metrics.snapshot();
    assert_eq!(
        (m.enqueue_failures, m.items_not_enqueued, m.jobs_enqueued),
        (2, 4, 0)
    );
}

#[tokio::test]
async fn metrics_snapshot_serializes() {
    let h = Harness::new();
    h.post(
        "/api/notifications",
        Some(JSON),
        fixture("mixed_batch.json"),
    )
    .await;
    let json = serde_json::to_value(h.metrics()).unwrap();
    assert_eq!(json["items_received"], 6);
    assert_eq!(json["rejected_bad_client_state"], 2);
    assert_eq!(json["enqueue_failures"], 0);
}

/// Fault injection for the one case the real queue cannot produce on demand: storage failing.
struct FailingQueue;

#[async_trait]
impl Queue for FailingQueue {
    async fn send_batch(&self, _: Vec<Job>) -> Result<(), QueueError> {
        Err(QueueError::storage("disk full"))
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Delivery>, QueueError> {
        unreachable!("the webhook only sends")
    }
    async fn ack(&self, _: &Receipt) -> Result<(), QueueError> {
        unreachable!("the webhook only sends")
    }
    async fn retry_later(
        &self,
        _: &Receipt,
        _: Duration,
        _: &str,
    ) -> Result<Disposition, QueueError> {
        unreachable!("the webhook only sends")
    }
    async fn dead_letter(&self, _: &Receipt, _: &str) -> Result<(), QueueError> {
        unreachable!("the webhook only sends")
    }
    async fn extend(&self, _: &Receipt, _: Duration) -> Result<(), QueueError> {
        unreachable!("the webhook only sends")
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        unreachable!("the webhook only sends")
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        unreachable!("the webhook only sends")
    }
    async fn redrive(&self, _: &str) -> Result<(), QueueError> {
        unreachable!("the webhook only sends")
    }
    async fn drop_dead_letter(&self, _: &str) -> Result<(), QueueError> {
        unreachable!("the webhook only sends")
    }
}
