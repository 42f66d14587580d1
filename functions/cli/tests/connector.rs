//! `shadowsync connector`, the on-premises host of a cloud deployment, as a process: it consumes
//! the cloud's SQS FIFO queue (moto), reads its bind password from Secrets Manager, converges
//! into the Samba DC, answers on its health endpoint and stops gracefully.

use graph_sim::{SimClient, SimConfig};
use serde_json::Value;
use shadowsync_e2e::serve::{free_port, wait_until, Cli};
use shadowsync_e2e::{aws, invite_guest, is_enabled, samba, unique, AdProbe};
use shadowsync_queue::{ChangeType, Job, JobSource, Queue};
use shadowsync_queue_sqs::SqsQueue;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");
/// A limit for reaching a state, not a speed target.
const SETTLE: Duration = Duration::from_secs(60);

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
    let id = invite_guest(&graph, "Connector Guest", "Connector Guest")
        .await
        .unwrap();
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
