//! The AWS deployment end to end, on real servers: the Graph simulator delivers to the webhook
//! function (through an API Gateway HTTP API front, as `lambda_http` receives it), which stores
//! jobs in an SQS FIFO queue (moto); the provisioner function takes them in batches as Lambda's
//! SQS event source hands them over and converges the guest into the Samba DC. Then the same
//! queue consumed by `shadowsync connector`, the on-premises host, with its bind password read
//! from Secrets Manager.

use aws_lambda_events::event::sqs::SqsEvent;
use graph_sim::{SimClient, SimConfig};
use secrecy::SecretString;
use serde_json::Value;
use shadowsync_converge::Converger;
use shadowsync_core::account::uac;
use shadowsync_core::{Policy, SystemClock};
use shadowsync_directory::Directory;
use shadowsync_e2e::serve::{free_port, wait_until, Cli, CLIENT_STATE};
use shadowsync_e2e::{aws, graph_client, samba, text, unique, AdProbe};
use shadowsync_provisioner::lambda::SqsBatchHandler;
use shadowsync_provisioner::{JobMetrics, ProvisionerConfig, ShadowsyncJobs};
use shadowsync_queue::{ChangeType, Job, JobSource, Queue};
use shadowsync_queue_sqs::SqsQueue;
use shadowsync_state_dynamodb::DynamoStore;
use shadowsync_subscriptions::{KeeperConfig, SubscriptionKeeper};
use shadowsync_webhook::WebhookState;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");
/// A limit for reaching a state, not a speed target.
const SETTLE: Duration = Duration::from_secs(60);

async fn invite(graph: &SimClient, name: &str) -> String {
    let user = graph
        .invite(&format!("{name}@{}.example.com", unique()), name)
        .await
        .unwrap();
    user["invitedUser"]["id"]
        .as_str()
        .or(user["id"].as_str())
        .unwrap()
        .to_string()
}

fn is_enabled(entry: &shadowsync_e2e::RawEntry) -> bool {
    text(entry, "userAccountControl")
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| v & uac::ACCOUNTDISABLE == 0)
}

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
    let webhook = shadowsync_webhook::router(WebhookState::new(
        queue(1),
        SecretString::from(CLIENT_STATE),
        tenant,
    ));
    let api = aws::api_gateway(webhook).await.unwrap();

    // The subscription keeper creates the subscription: Graph's validation handshake goes
    // through API Gateway to the webhook function.
    let graph_client = Arc::new(graph_client(&sim).unwrap());
    let keeper = SubscriptionKeeper {
        graph: graph_client.clone(),
        state: store.clone(),
        config: KeeperConfig::new(
            format!("http://{api}/api/notifications"),
            format!("http://{api}/api/lifecycle"),
            SecretString::from(CLIENT_STATE),
        ),
        clock: graph_client.server_clock(),
    };
    keeper
        .ensure()
        .await
        .expect("subscription created through the webhook function");

    let id = invite(&graph, "Lambda Guest").await;

    // The provisioner function, fed by the SQS event source until the account exists.
    let metrics = Arc::new(JobMetrics::new());
    let provisioner = SqsBatchHandler {
        queue: queue(5),
        jobs: Arc::new(ShadowsyncJobs {
            converger: Arc::new(Converger {
                graph: graph_client.clone(),
                directory: Arc::new(
                    Directory::connect(samba().directory_config(), &policy)
                        .await
                        .unwrap(),
                ),
                state: store.clone(),
                policy: policy.clone(),
                clock: Arc::new(SystemClock),
            }),
            keeper: Some(Arc::new(keeper)),
            reconcile_now: None,
            metrics: metrics.clone(),
        }),
        config: ProvisionerConfig::default(),
        metrics: metrics.clone(),
        graph: Some(graph_client.clone()),
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

#[tokio::test]
async fn the_connector_converges_jobs_from_the_cloud_queue_and_stops_gracefully() {
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let graph = SimClient::new(sim.base_url(), sim.config());
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let ous = (
        probe.ou("connector-guests").await.unwrap(),
        probe.ou("connector-disabled").await.unwrap(),
    );
    let (queue_url, dlq_url) = aws::fifo_queues("connector-e2e", 5).await.unwrap();
    let table = aws::state_table("connector-e2e").await.unwrap();
    let sdk = aws::sdk_config().await;

    // The bind password lives in Secrets Manager, as the stack keeps it.
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let secret = secrets
        .create_secret()
        .name(format!("connector-bind-{}", unique()))
        .secret_string(&samba().bind_password)
        .send()
        .await
        .unwrap();
    let secret_arn = secret.arn().unwrap().to_string();

    let health = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let connector_section = format!(
        "\n[connector]\nqueue_url = \"{queue_url}\"\ndead_letter_queue_url = \"{dlq_url}\"\ntable_name = \"{table}\"\nregion = \"{}\"\nhealth_listen = \"{health}\"\n",
        aws::REGION
    );
    let cli = Cli::new(
        Path::new(BIN),
        &sim,
        samba(),
        (&ous.0, &ous.1),
        dir.path(),
        &connector_section,
    )
    .unwrap();
    let mut command = cli.command(&["connector"], &[]);
    command
        .env_remove("SHADOWSYNC_DIRECTORY_BIND_PASSWORD")
        .env("SHADOWSYNC_DIRECTORY_BIND_PASSWORD_SECRET_ARN", &secret_arn)
        .kill_on_drop(true);
    for (name, value) in aws::moto_env() {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();

    let http = reqwest::Client::new();
    let health_url = format!("http://{health}/health");
    wait_until(SETTLE, || async {
        http.get(&health_url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await
    .expect("the connector's health endpoint answers 200");
    let report: Value = http
        .get(&health_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["status"], "ok", "{report}");

    // A job, as the cloud webhook would store it.
    let id = invite(&graph, "Connector Guest").await;
    let cloud = SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        &queue_url,
        &dlq_url,
        5,
        Duration::ZERO,
    );
    cloud
        .send_batch(vec![Job::Converge {
            user_id: id.clone(),
            change_type: Some(ChangeType::Updated),
            subscription_id: None,
            received_at: chrono::Utc::now(),
            source: JobSource::Notification,
        }])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !probe
        .by_anchor(&id)
        .await
        .unwrap()
        .is_some_and(|(_, e)| is_enabled(&e))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connector creates the account"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (dn, _) = probe.by_anchor(&id).await.unwrap().unwrap();
    assert!(shadowsync_core::dn::is_within(&dn, &ous.0), "{dn}");
    wait_until(SETTLE, || async {
        let report: Value = http
            .get(&health_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        report["jobs"]["applied"].as_u64() >= Some(1)
    })
    .await
    .expect("the health endpoint counts the applied job");

    // SIGTERM: finishes what it holds and exits 0 (within SQS's 20 s long poll).
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("the connector stops")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
