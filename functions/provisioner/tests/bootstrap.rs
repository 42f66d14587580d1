//! The real `shadowsync-provisioner` binary as Lambda runs it: started with the environment
//! infra/template.yaml gives it (secrets as Secrets Manager ARNs), polling a Runtime API, invoked
//! with an SQS event; it converges the guest into the Samba DC, answers the batch response and
//! writes JSON logs with the request id and an embedded-metric line.

use graph_sim::{SimClient, SimConfig};
use shadowsync_e2e::aws::{self, RuntimeApi};
use shadowsync_e2e::serve::CLIENT_STATE;
use shadowsync_e2e::{samba, unique, AdProbe};
use shadowsync_queue::{ChangeType, Job, JobSource, Queue};
use shadowsync_queue_sqs::SqsQueue;
use std::process::Stdio;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync-provisioner");

#[tokio::test]
async fn the_provisioner_binary_answers_an_sqs_invocation() {
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let graph = SimClient::new(sim.base_url(), sim.config());
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let guests = probe.ou("bootstrap-guests").await.unwrap();
    let disabled = probe.ou("bootstrap-disabled").await.unwrap();
    let (queue_url, dlq_url) = aws::fifo_queues("bootstrap", 5).await.unwrap();
    let table = aws::state_table("bootstrap").await.unwrap();
    let sdk = aws::sdk_config().await;
    let c = sim.config();
    let env = [
        ("SHADOWSYNC_DEPLOYMENT_MODE", "lambda".to_string()),
        ("SHADOWSYNC_QUEUE_URL", queue_url.clone()),
        ("SHADOWSYNC_DLQ_URL", dlq_url.clone()),
        ("SHADOWSYNC_TABLE_NAME", table),
        ("SHADOWSYNC_GRAPH_TENANT_ID", c.tenant_id.clone()),
        ("SHADOWSYNC_GRAPH_CLIENT_ID", c.client_id.clone()),
        (
            "SHADOWSYNC_GRAPH_LOGIN_ENDPOINT",
            sim.base_url().to_string(),
        ),
        (
            "SHADOWSYNC_GRAPH_GRAPH_ENDPOINT",
            sim.base_url().to_string(),
        ),
        (
            "SHADOWSYNC_GRAPH_CLIENT_SECRET_ARN",
            aws::secret(&c.client_secret).await,
        ),
        (
            "SHADOWSYNC_WEBHOOK_CLIENT_STATE_SECRET_ARN",
            aws::secret(CLIENT_STATE).await,
        ),
        (
            "SHADOWSYNC_WEBHOOK_PUBLIC_URL",
            "https://example.execute-api.us-east-1.amazonaws.com".to_string(),
        ),
        ("SHADOWSYNC_DIRECTORY_URL", samba().ldaps_url.clone()),
        ("SHADOWSYNC_DIRECTORY_BIND_DN", samba().bind_dn.clone()),
        (
            "SHADOWSYNC_DIRECTORY_BIND_PASSWORD_SECRET_ARN",
            aws::secret(&samba().bind_password).await,
        ),
        ("SHADOWSYNC_DIRECTORY_GUESTS_OU", guests.clone()),
        ("SHADOWSYNC_DIRECTORY_DISABLED_OU", disabled),
        (
            "SHADOWSYNC_DIRECTORY_CA_FILE",
            samba().ca_file.display().to_string(),
        ),
        ("SHADOWSYNC_POLICY_REQUIRE_ACCEPTED", "false".to_string()),
        ("SHADOWSYNC_POLICY_RETENTION", "30d".to_string()),
        ("SHADOWSYNC_PROVISIONER_MAX_ATTEMPTS", "5".to_string()),
        ("RUST_LOG", "info".to_string()),
    ];

    let runtime = RuntimeApi::start().await.unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_clear()
        .envs(env)
        .envs(aws::moto_env())
        .envs(runtime.env("shadowsync-provisioner"))
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();

    // A job as the webhook stores it, handed over as Lambda's SQS event source does.
    let user = graph
        .invite(&format!("boot@{}.example.com", unique()), "Bootstrap Guest")
        .await
        .unwrap();
    let id = shadowsync_core::ObjectId::parse(
        user["invitedUser"]["id"]
            .as_str()
            .or(user["id"].as_str())
            .unwrap(),
    )
    .unwrap();
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        &queue_url,
        &dlq_url,
        5,
        Duration::ZERO,
    );
    queue
        .send_batch(vec![Job::Converge {
            user_id: id.clone(),
            change_type: Some(ChangeType::Updated),
            subscription_id: None,
            received_at: chrono::Utc::now(),
            source: JobSource::Notification,
        }])
        .await
        .unwrap();
    let event = aws::receive_event(&queue_url, 360).await.unwrap();
    assert_eq!(event["Records"].as_array().unwrap().len(), 1);
    let request = runtime.invoke(event.clone());

    let response = tokio::select! {
        r = runtime.response(&request, Duration::from_secs(60)) => r.unwrap(),
        status = child.wait() => panic!("the function exited: {status:?}"),
    };
    let response = response.expect("the invocation succeeds");
    assert_eq!(
        response["batchItemFailures"],
        serde_json::json!([]),
        "{response}"
    );
    aws::complete_batch(&queue_url, &event, &response)
        .await
        .unwrap();
    let (dn, _) = probe
        .by_anchor(&id)
        .await
        .unwrap()
        .expect("the account exists");
    assert!(shadowsync_core::dn::is_within(&dn, &guests), "{dn}");

    // Logs and metrics are on standard output: JSON lines.
    let (out, lines) = aws::stop_and_read_stdout(&mut child).await.unwrap();
    let converged = lines
        .iter()
        .find(|l| l["fields"]["message"] == "converged")
        .unwrap_or_else(|| panic!("a converged line in {out}"));
    assert_eq!(converged["fields"]["user_id"], id.as_str());
    assert_eq!(
        converged["span"]["requestId"],
        request.as_str(),
        "the line carries the invocation's request id: {converged}"
    );
    let metrics = lines
        .iter()
        .find(|l| l.get("_aws").is_some())
        .unwrap_or_else(|| panic!("an embedded-metric line in {out}"));
    assert_eq!(metrics["JobsApplied"], 1.0, "{metrics}");
    assert_eq!(metrics["Function"], "provisioner");
    assert!(metrics["NotificationToAppliedLatency"].as_f64().unwrap() > 0.0);
    assert!(
        !out.contains(&samba().bind_password),
        "the bind password never reaches the logs"
    );
}
