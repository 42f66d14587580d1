//! `shadowsync connector`: the on-premises part of a cloud deployment in connector mode.
//!
//! It long-polls the cloud's SQS FIFO job queue (outbound HTTPS only: no inbound port, no VPN),
//! runs the application's workers against the local AD over LDAPS (lifecycle jobs included), and
//! sweeps the managed OUs on the application's schedule (the cloud reconciler cannot reach AD).
//! State is the deployment's DynamoDB table. `GET /health` on a loopback address tells a service
//! manager or monitoring whether it can reach the queue.

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shadowsync_app::{App, MetricsSnapshot, Roles, Settings};
use shadowsync_config::Config;
use shadowsync_queue::{Queue, QueueStats};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// SQS's longest poll: an idle connector makes one request per 20 s.
const LONG_POLL: Duration = Duration::from_secs(20);
/// How long the health check waits for the queue.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the connector logs its counters (when something happened).
const METRICS_EVERY: Duration = Duration::from_secs(60);

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
    let config = Config::load_with_env(path, env, certificate)?;
    config.connector()?;
    Ok(config)
}

pub async fn connector(config: Config) -> Result<()> {
    let section = config.connector()?;
    let (storage, queue) =
        shadowsync_aws::connector_storage(section, config.provisioner.max_attempts, LONG_POLL)
            .await;
    let app = Arc::new(
        App::build(&Settings::from_config(&config), storage)
            .await
            .with_context(|| format!("starting (directory at {})", config.directory.url))?,
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(crate::serve::stop_on_signal(shutdown.clone()));
    let health = health_router(Health {
        queue,
        app: app.clone(),
    });
    let health_server = crate::serve::serve_http(section.health_listen, health, &shutdown)
        .await
        .with_context(|| format!("health endpoint on {}", section.health_listen))?;
    tracing::info!(
        queue = %section.queue_url,
        health = %section.health_listen,
        "connector started: long-polling the job queue"
    );

    // The last counters are logged once the workers have stopped: the jobs in hand count too.
    let workers_stopped = CancellationToken::new();
    let (a, stop, stopped) = (app.clone(), shutdown.clone(), workers_stopped.clone());
    let workers = tokio::spawn(async move {
        a.run_workers(stop).await;
        stopped.cancel();
    });
    // Delta rounds run in the cloud; `missed` waits for the next one.
    let (a, stop) = (app.clone(), shutdown.clone());
    let sweeps = tokio::spawn(async move { a.run_schedule(Roles::SWEEP, stop).await });
    // The AD watcher of the partner direction runs here, beside AD; its jobs go on the
    // cloud queue like every other.
    let (a, stop) = (app.clone(), shutdown.clone());
    let watcher = tokio::spawn(async move { a.watch_partners(stop).await });
    let (a, stop) = (app.clone(), workers_stopped);
    let metrics = tokio::spawn(async move {
        crate::metrics::log_periodically(&a, None, METRICS_EVERY, stop).await
    });

    workers.await?;
    sweeps.await?;
    watcher.await?;
    metrics.await?;
    health_server.await?.context("health endpoint")?;
    tracing::info!("stopped");
    Ok(())
}

struct Health {
    queue: Arc<dyn Queue>,
    app: Arc<App>,
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
    let jobs = health.app.metrics.snapshot();
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
