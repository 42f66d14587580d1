//! The real `shadowsync-webhook` binary as Lambda runs it: started with the environment
//! infra/template.yaml gives it (the client states as Secrets Manager ARNs), polling a Runtime
//! API, invoked with API Gateway's event for a Graph notification; it stores the job in the SQS
//! FIFO queue, answers 202, and publishes its counters as an embedded-metric line.

use serde_json::Value;
use shadowsync_e2e::aws::{self, RuntimeApi};
use shadowsync_queue::{Job, Queue};
use shadowsync_queue_sqs::SqsQueue;
use std::process::Stdio;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync-webhook");
/// The tenant and client state the fixtures carry.
const TENANT: &str = "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f";
const CLIENT_STATE: &str = "lambda-fixture-client-state";
/// The client state after a rotation, the fixture's being the previous one.
const NEW_CLIENT_STATE: &str = "lambda-rotated-client-state";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_webhook_binary_enqueues_a_notification_and_publishes_its_counters() {
    let (queue_url, dlq_url) = aws::fifo_queues("webhook-bootstrap", 5).await.unwrap();
    let sdk = aws::sdk_config().await;
    // Mid-rotation: the fixture carries the previous client state, still accepted.
    let env = [
        ("SHADOWSYNC_DEPLOYMENT_MODE", "lambda".to_string()),
        ("SHADOWSYNC_QUEUE_URL", queue_url.clone()),
        (
            "SHADOWSYNC_TABLE_NAME",
            aws::state_table("webhook-bootstrap").await.unwrap(),
        ),
        ("SHADOWSYNC_GRAPH_TENANT_ID", TENANT.to_string()),
        (
            "SHADOWSYNC_WEBHOOK_CLIENT_STATE_SECRET_ARN",
            aws::secret(NEW_CLIENT_STATE).await,
        ),
        (
            "SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE_SECRET_ARN",
            aws::secret(CLIENT_STATE).await,
        ),
        ("RUST_LOG", "info".to_string()),
    ];
    let runtime = RuntimeApi::start().await.unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .envs(env)
        .envs(aws::moto_env())
        .envs(runtime.env("shadowsync-webhook"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Delivered twice (Graph redelivers what it thinks failed): the job waits, so the second is
    // folded into it through the mark in the state table.
    for _ in 0..2 {
        let request = runtime.invoke(fixture("http-api-notification.json"));
        let response = tokio::select! {
            r = runtime.response(&request, Duration::from_secs(60)) => r.unwrap(),
            status = child.wait() => panic!("the function exited: {status:?}"),
        };
        let response = response.expect("the invocation succeeds");
        assert_eq!(response["statusCode"], 202, "{response}");
    }
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        &queue_url,
        &dlq_url,
        5,
        Duration::ZERO,
    );
    assert_eq!(
        queue.stats().await.unwrap().depth,
        1,
        "one job for two deliveries"
    );
    let jobs = queue.receive(10, Duration::from_secs(30)).await.unwrap();
    assert!(
        matches!(jobs.as_slice(), [d] if matches!(&d.job, Job::Converge { user_id, .. } if user_id == "2d2c5a1e-0b4f-4a8e-9d61-0c7f8a3b5e11")),
        "{jobs:?}"
    );

    let (out, lines) = aws::stop_and_read_stdout(&mut child).await.unwrap();
    let published: Vec<_> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    let [metrics, repeat] = published.as_slice() else {
        panic!("an embedded-metric line per invocation in {out}");
    };
    assert_eq!(repeat["NotificationsFolded"], 1.0, "{repeat}");
    assert_eq!(metrics["Function"], "webhook", "{metrics}");
    assert_eq!(metrics["JobsEnqueued"], 1.0, "{metrics}");
    assert_eq!(metrics["NotificationsReceived"], 1.0, "{metrics}");
    assert_eq!(metrics["RejectedBadClientState"], 0.0, "{metrics}");
    assert!(
        !out.contains(CLIENT_STATE) && !out.contains(NEW_CLIENT_STATE),
        "the client state never reaches the logs"
    );
}
