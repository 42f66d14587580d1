//! `shadowsync connector`: the on-premises provisioner of a cloud deployment in connector mode.
//!
//! It long-polls the cloud's SQS FIFO job queue (outbound HTTPS only: no inbound port, no VPN),
//! converges each job into the local AD over LDAPS, keeps a job invisible while it works on it,
//! handles the subscription's lifecycle jobs, and sweeps the managed OUs on schedule (the cloud
//! reconciler cannot reach AD). State is the deployment's DynamoDB table. `GET /health` on a
//! loopback address tells a service manager or monitoring whether it can reach the queue.

use crate::config::Config;
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shadowsync_converge::Converger;
use shadowsync_core::SystemClock;
use shadowsync_directory::Directory;
use shadowsync_graph::GraphClient;
use shadowsync_provisioner::{JobMetrics, MetricsSnapshot, ProvisionerConfig, ShadowsyncJobs};
use shadowsync_queue::{Queue, QueueStats};
use shadowsync_queue_sqs::SqsQueue;
use shadowsync_reconciler::{ManagedDirectory, Reconciler};
use shadowsync_state::KeyValueStore;
use shadowsync_state_dynamodb::DynamoStore;
use shadowsync_subscriptions::SubscriptionKeeper;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// SQS's longest poll: an idle connector makes one request per 20 s.
const LONG_POLL: Duration = Duration::from_secs(20);
/// How long the health check waits for the queue.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads the configuration, reading `SHADOWSYNC_*_SECRET_ARN` secrets from Secrets Manager
/// first (the deployment's secrets; plain `SHADOWSYNC_*` secret variables work too).
pub async fn load(path: &Path) -> Result<Config> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (env, certificate) = match shadowsync_aws::secrets::region_of_secrets(&env) {
        None => (env, None),
        Some(region) => {
            let sdk = shadowsync_aws::sdk_config(Some(region)).await;
            let client = shadowsync_aws::aws_sdk_secretsmanager::Client::new(&sdk);
            let resolved = shadowsync_aws::secrets::resolve(&client, env).await?;
            (resolved.env, resolved.graph_certificate)
        }
    };
    let mut config = Config::load_with_env(path, env).map_err(|e| anyhow::anyhow!("{e}"))?;
    if certificate.is_some() {
        config.graph.certificate = certificate;
    }
    config.connector().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(config)
}

pub async fn connector(config: Config) -> Result<()> {
    let section = config.connector().map_err(|e| anyhow::anyhow!("{e}"))?;
    let sdk = shadowsync_aws::sdk_config(section.region()).await;
    let queue = Arc::new(SqsQueue::new(
        shadowsync_aws::aws_sdk_sqs::Client::new(&sdk),
        section.queue_url.as_str(),
        section.dead_letter_queue_url.as_str(),
        config.provisioner.max_attempts,
        LONG_POLL,
    ));
    let state: Arc<dyn KeyValueStore> = Arc::new(DynamoStore::new(
        shadowsync_aws::aws_sdk_dynamodb::Client::new(&sdk),
        &section.table_name,
    ));
    let policy = config.policy();
    let graph = Arc::new(GraphClient::new(config.graph_config()?)?);
    let directory = Arc::new(
        Directory::connect(config.directory_config(), &policy)
            .await
            .with_context(|| format!("connecting to the directory at {}", config.directory.url))?,
    );
    let keeper = Arc::new(SubscriptionKeeper::from_config(
        graph.clone(),
        state.clone(),
        &config.webhook,
        &config.subscriptions,
    ));
    let metrics = Arc::new(JobMetrics::new());
    let jobs = Arc::new(ShadowsyncJobs {
        converger: Arc::new(Converger {
            graph: graph.clone(),
            directory: directory.clone(),
            state: state.clone(),
            policy: policy.clone(),
            clock: Arc::new(SystemClock),
        }),
        keeper: Some(keeper),
        // Delta rounds run in the cloud; `missed` waits for the next one.
        reconcile_now: None,
        metrics: metrics.clone(),
    });
    let reconciler = Arc::new(Reconciler {
        graph,
        queue: queue.clone(),
        state,
        managed: Some(ManagedDirectory { directory, policy }),
        clock: Arc::new(SystemClock),
    });

    let shutdown = CancellationToken::new();
    tokio::spawn(crate::serve::stop_on_signal(shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(section.health_listen)
        .await
        .with_context(|| format!("health endpoint on {}", section.health_listen))?;
    let health = health_router(Health {
        queue: queue.clone(),
        metrics,
        totals: Mutex::default(),
    });
    let stop = shutdown.clone();
    let health_server = tokio::spawn(async move {
        axum::serve(listener, health)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    tracing::info!(
        queue = %section.queue_url,
        health = %section.health_listen,
        "connector started: long-polling the job queue"
    );

    let provisioner = tokio::spawn(shadowsync_provisioner::run(
        queue,
        jobs,
        ProvisionerConfig {
            workers: config.provisioner.workers,
            ..Default::default()
        },
        shutdown.clone(),
    ));
    let sweeper = tokio::spawn(sweep(
        reconciler,
        config.reconciler.sweep_interval,
        shutdown.clone(),
    ));

    provisioner.await?;
    sweeper.await?;
    health_server.await?.context("health endpoint")?;
    tracing::info!("stopped");
    Ok(())
}

/// Sweeps the managed OUs at start and every `every`.
async fn sweep(reconciler: Arc<Reconciler>, every: Duration, shutdown: CancellationToken) {
    loop {
        match reconciler.sweep().await {
            Ok(report) => tracing::info!(?report, "sweep done"),
            Err(e) => tracing::error!(error = %e, "sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

struct Health {
    queue: Arc<SqsQueue>,
    metrics: Arc<JobMetrics>,
    /// Jobs since start.
    totals: Mutex<MetricsSnapshot>,
}

#[derive(Serialize)]
struct HealthReport {
    /// `ok`, or `queue unreachable`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<QueueStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Jobs since the connector started.
    jobs: MetricsSnapshot,
}

fn health_router(health: Health) -> Router {
    Router::new()
        .route("/health", get(health_check))
        .with_state(Arc::new(health))
}

/// 200 when the queue answers, 503 when it does not; with the queue's depth and the jobs done.
async fn health_check(State(health): State<Arc<Health>>) -> (StatusCode, Json<HealthReport>) {
    let jobs = {
        let new = health.metrics.take();
        let mut totals = health.totals.lock().unwrap();
        totals.applied += new.applied;
        totals.unchanged += new.unchanged;
        totals.conflicts += new.conflicts;
        totals.retries += new.retries;
        totals.dead_letters += new.dead_letters;
        totals.clone()
    };
    let stats = tokio::time::timeout(HEALTH_TIMEOUT, health.queue.stats()).await;
    let (code, status, queue, error) = match stats {
        Ok(Ok(stats)) => (StatusCode::OK, "ok", Some(stats), None),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "queue unreachable",
            None,
            Some(e.to_string()),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "queue unreachable",
            None,
            Some(format!("no answer within {HEALTH_TIMEOUT:?}")),
        ),
    };
    (
        code,
        Json(HealthReport {
            status,
            queue,
            error,
            jobs,
        }),
    )
}
