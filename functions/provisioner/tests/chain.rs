//! The AWS deployment end to end, on real servers: the Graph simulator delivers to the webhook
//! function (through an API Gateway HTTP API front, as `lambda_http` receives it), which stores
//! jobs in an SQS FIFO queue (moto); the provisioner function takes them in batches as Lambda's
//! SQS event source hands them over and converges the guest into the Samba DC.

use aws_lambda_events::event::sqs::SqsEvent;
use graph_sim::{SimClient, SimConfig};
use secrecy::SecretString;
use shadowsync_app::{App, KeeperConfig, Parts, Schedule, WorkerConfig};
use shadowsync_core::{Policy, SystemClock};
use shadowsync_directory::LdapDirectory;
use shadowsync_e2e::serve::CLIENT_STATE;
use shadowsync_e2e::{aws, graph_client, invite_guest, is_enabled, samba, text, AdProbe};
use shadowsync_notifications::WebhookState;
use shadowsync_provisioner::SqsBatchHandler;
use shadowsync_queue::{PendingJobs, Queue};
use shadowsync_queue_sqs::SqsQueue;
use shadowsync_state_dynamodb::DynamoStore;
use std::sync::Arc;
use std::time::Duration;

/// A limit for reaching a state, not a speed target.
const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn lambda_functions_turn_an_invitation_into_an_account() {
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let graph = SimClient::new(sim.base_url(), sim.config());
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let policy = Policy::new(
        probe.ou("lambda-guests").await.unwrap(),
        probe.ou("lambda-disabled").await.unwrap(),
    );
    let (queue_url, dlq_url) = aws::fifo_queues("lambda-e2e", 5).await.unwrap();
    let sdk = aws::sdk_config().await;
    let queue = |attempts| {
        Arc::new(SqsQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            &queue_url,
            &dlq_url,
            attempts,
            Duration::ZERO,
        ))
    };
    let table = aws::state_table("lambda-e2e").await.unwrap();
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &table,
    ));

    // The webhook function behind API Gateway.
    let tenant = sim.config().tenant_id.parse().unwrap();
    // The webhook marks waiting jobs in the state table; the provisioner clears them.
    let pending = Arc::new(PendingJobs::new(store.clone()));
    let webhook = shadowsync_notifications::router(WebhookState::new(
        queue(1),
        pending.clone(),
        SecretString::from(CLIENT_STATE),
        tenant,
    ));
    let api = aws::api_gateway(webhook).await.unwrap();

    // The application as the provisioner function builds it, on the same queue and table.
    let directory = LdapDirectory::connect(samba().directory_config(), &policy)
        .await
        .unwrap();
    let app = App::from_parts(Parts {
        graph: Arc::new(graph_client(&sim).unwrap()),
        state: store.clone(),
        queue: queue(5),
        directory: Some((Arc::new(directory), policy.clone())),
        keeper: Some(KeeperConfig::new(
            format!("http://{api}/api/notifications"),
            format!("http://{api}/api/lifecycle"),
            SecretString::from(CLIENT_STATE),
        )),
        clock: Arc::new(SystemClock),
        schedule: Schedule::default(),
        workers: WorkerConfig::default(),
        safety: Default::default(),
        pending,
        partners: None,
    });
    // The subscription keeper creates the subscription: Graph's validation handshake goes
    // through API Gateway to the webhook function.
    app.keeper()
        .unwrap()
        .ensure()
        .await
        .expect("subscription created through the webhook function");

    let id = invite_guest(&graph, "Lambda Guest", "Lambda Guest")
        .await
        .unwrap();

    // The provisioner function, fed by the SQS event source until the account exists.
    let provisioner = SqsBatchHandler {
        queue: queue(5),
        jobs: app.jobs.clone(),
        config: app.workers.clone(),
        metrics: app.metrics.clone(),
        graph: Some(app.graph.clone()),
        published: Default::default(),
        outage: Default::default(),
    };
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut batches = 0;
    while probe.by_anchor(&id).await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invitation becomes an AD account through the Lambda handlers"
        );
        let event = aws::receive_event(&queue_url, 360).await.unwrap();
        if event["Records"].as_array().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        batches += 1;
        let parsed: SqsEvent = serde_json::from_value(event.clone()).unwrap();
        let response = serde_json::to_value(provisioner.handle(parsed).await).unwrap();
        assert_eq!(
            response["batchItemFailures"],
            serde_json::json!([]),
            "no job fails"
        );
        aws::complete_batch(&queue_url, &event, &response)
            .await
            .unwrap();
    }
    let (dn, entry) = probe.by_anchor(&id).await.unwrap().unwrap();
    assert!(
        shadowsync_core::dn::is_within(&dn, &policy.guests_ou),
        "{dn} is in the managed OU"
    );
    assert!(is_enabled(&entry));
    assert_eq!(text(&entry, "displayName").as_deref(), Some("Lambda Guest"));
    assert!(batches >= 1);
    // Every job was settled: nothing left on the queue or the dead-letter queue.
    let stats = queue(5).stats().await.unwrap();
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
}
