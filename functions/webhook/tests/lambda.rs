//! The webhook as Lambda runs it: API Gateway HTTP API events (JSON fixtures shaped like the ones
//! API Gateway sends) through `lambda_http`'s adapter into the router, jobs into an SQS FIFO
//! queue on moto.

use secrecy::SecretString;
use serde_json::Value;
use shadowsync_e2e::aws;
use shadowsync_notifications::WebhookState;
use shadowsync_queue::{Job, PendingJobs, Queue};
use shadowsync_queue_sqs::SqsQueue;
use shadowsync_state_dynamodb::DynamoStore;
use std::sync::Arc;
use std::time::Duration;

const TENANT: &str = "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f";
const CLIENT_STATE: &str = "lambda-fixture-client-state";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn webhook() -> (axum::Router, Arc<SqsQueue>) {
    let (queue_url, dlq_url) = aws::fifo_queues("webhook-lambda", 5).await.unwrap();
    let queue = Arc::new(SqsQueue::new(
        aws_sdk_sqs::Client::new(&aws::sdk_config().await),
        queue_url,
        dlq_url,
        5,
        Duration::ZERO,
    ));
    let table = aws::state_table("webhook-lambda").await.unwrap();
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&aws::sdk_config().await),
        &table,
    ));
    let router = shadowsync_notifications::router(WebhookState::new(
        queue.clone(),
        Arc::new(PendingJobs::new(store)),
        SecretString::from(CLIENT_STATE),
        TENANT.parse().unwrap(),
    ));
    (router, queue)
}

#[tokio::test]
async fn the_validation_handshake_echoes_the_token_as_plain_text() {
    let (router, queue) = webhook().await;
    let response = aws::invoke_http(router, fixture("http-api-validation.json"))
        .await
        .unwrap();
    assert_eq!(response["statusCode"], 200);
    assert_eq!(
        response["body"],
        "Validation: Testing client application reachability for subscription Request-Id: 8f3a1b2c"
    );
    assert_eq!(response["headers"]["content-type"], "text/plain");
    assert_eq!(response["headers"]["x-content-type-options"], "nosniff");
    assert_eq!(queue.stats().await.unwrap().depth, 0);
}

#[tokio::test]
async fn a_notification_is_stored_in_the_fifo_queue_before_the_202() {
    let (router, queue) = webhook().await;
    let event = fixture("http-api-notification.json");
    let response = aws::invoke_http(router.clone(), event.clone())
        .await
        .unwrap();
    assert_eq!(response["statusCode"], 202, "{response}");
    // Graph delivers again (say, our 202 came after its 3 s): the job has not started, so the
    // repeat is folded into it (the mark is in DynamoDB, where the provisioner clears it).
    let again = aws::invoke_http(router, event).await.unwrap();
    assert_eq!(again["statusCode"], 202);
    assert_eq!(
        queue.stats().await.unwrap().depth,
        1,
        "one job for two deliveries"
    );
    let jobs = queue.receive(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    match &jobs[0].job {
        Job::Converge { user_id, .. } => {
            assert_eq!(user_id, "2d2c5a1e-0b4f-4a8e-9d61-0c7f8a3b5e11")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn malformed_or_forged_notifications_are_never_enqueued() {
    let (router, queue) = webhook().await;
    let mut malformed = fixture("http-api-notification.json");
    malformed["body"] = Value::from("{\"value\": 3}");
    let response = aws::invoke_http(router.clone(), malformed).await.unwrap();
    assert_eq!(response["statusCode"], 400, "{response}");

    let mut not_json = fixture("http-api-notification.json");
    not_json["headers"]["content-type"] = Value::from("text/plain");
    let response = aws::invoke_http(router.clone(), not_json).await.unwrap();
    assert_eq!(response["statusCode"], 415, "{response}");

    let mut forged = fixture("http-api-notification.json");
    let body = forged["body"]
        .as_str()
        .unwrap()
        .replace(CLIENT_STATE, "forged-client-state-000");
    forged["body"] = Value::from(body);
    let response = aws::invoke_http(router, forged).await.unwrap();
    // Answered 202 so that nobody learns what passed, but dropped, not stored.
    assert_eq!(response["statusCode"], 202, "{response}");
    assert_eq!(queue.stats().await.unwrap().depth, 0);
}
