//! `shadowsync serve`: the webhook listener, the provisioner workers and the subscription keeper
//! in one process, on the embedded store and queue.

use crate::config::{Config, ReconcilerSection};
use anyhow::{Context, Result};
use shadowsync_converge::Converger;
use shadowsync_core::SystemClock;
use shadowsync_directory::Directory;
use shadowsync_graph::GraphClient;
use shadowsync_provisioner::{ProvisionerConfig, ShadowsyncJobs};
use shadowsync_queue::{EmbeddedQueue, Queue};
use shadowsync_reconciler::{ManagedDirectory, Reconciler};
use shadowsync_state::{EmbeddedStore, KeyValueStore};
use shadowsync_subscriptions::SubscriptionKeeper;
use shadowsync_webhook::WebhookState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn serve(config: Config) -> Result<()> {
    let store = EmbeddedStore::open(config.state_path()?).context("opening the state store")?;
    let queue = EmbeddedQueue::new(&store, config.provisioner.max_attempts)?;
    // This process is the queue's only consumer: jobs a previous run held when it died are
    // handed out again now instead of after their visibility timeout.
    let released = queue.release_in_flight().await?;
    if released > 0 {
        tracing::info!(
            released,
            "jobs left in flight by a previous run are queued again"
        );
    }
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let state: Arc<dyn KeyValueStore> = Arc::new(store);
    let policy = config.policy();
    let graph = Arc::new(GraphClient::new(config.graph_config()?)?);
    let directory = Directory::connect(config.directory_config(), &policy)
        .await
        .with_context(|| format!("connecting to the directory at {}", config.directory.url))?;
    let client_state = config.webhook.client_state.clone().expect("validated");
    let tenant_id = config.tenant_uuid();

    let converger = Arc::new(Converger {
        graph: graph.clone(),
        directory: Arc::new(directory),
        state: state.clone(),
        policy,
        clock: Arc::new(SystemClock),
    });
    let keeper = Arc::new(SubscriptionKeeper::from_config(
        graph.clone(),
        state.clone(),
        &config.webhook,
        &config.subscriptions,
    ));

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(config.webhook.listen)
        .await
        .with_context(|| format!("listening on {}", config.webhook.listen))?;
    tracing::info!(listen = %config.webhook.listen, notification_url = %config.notification_url(), "webhook listening");
    let router =
        shadowsync_webhook::router(WebhookState::new(queue.clone(), client_state, tenant_id));
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });

    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin API on {}", config.admin.listen))?;
    let admin = crate::admin::router(crate::admin::AdminState {
        state: state.clone(),
        queue: queue.clone(),
        converger: converger.clone(),
    });
    let stop = shutdown.clone();
    let admin_server = tokio::spawn(async move {
        axum::serve(admin_listener, admin)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });

    let reconciler = Arc::new(Reconciler {
        graph: graph.clone(),
        queue: queue.clone(),
        state: state.clone(),
        managed: Some(ManagedDirectory {
            directory: converger.directory.clone(),
            policy: converger.policy.clone(),
        }),
        clock: Arc::new(SystemClock),
    });
    let reconcile_now = Arc::new(tokio::sync::Notify::new());

    let provisioner = tokio::spawn(shadowsync_provisioner::run(
        queue,
        Arc::new(ShadowsyncJobs {
            converger,
            keeper: Some(keeper.clone()),
            reconcile_now: Some(reconcile_now.clone()),
            metrics: Default::default(),
        }),
        ProvisionerConfig {
            workers: config.provisioner.workers,
            ..Default::default()
        },
        shutdown.clone(),
    ));

    // The keeper runs once the webhook listens: creating a subscription makes Graph call it.
    let every = Duration::from_secs_f64(config.subscriptions.check_interval_minutes * 60.0);
    let keeper_task = tokio::spawn(keep_subscription(keeper, every, shutdown.clone()));
    let reconciler_task = tokio::spawn(reconcile(
        reconciler,
        config.reconciler.clone(),
        reconcile_now,
        shutdown.clone(),
    ));

    server.await?.context("webhook server")?;
    admin_server.await?.context("admin API")?;
    provisioner.await?;
    keeper_task.await?;
    reconciler_task.await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ensures the subscription now and then every `every`; after a failure, tries again sooner.
pub(crate) async fn keep_subscription(
    keeper: Arc<SubscriptionKeeper>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let pause = match keeper.ensure().await {
            Ok(ensured) => {
                tracing::info!(outcome = ?ensured.outcome, "subscription checked");
                every
            }
            Err(e) => {
                tracing::error!(error = %e, "subscription check failed");
                every.min(Duration::from_secs(60))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Delta rounds at start and every `interval` (or at once when a lifecycle event asks), and a
/// sweep of the managed OUs after the first round, after every full sync and every
/// `sweep_interval`.
async fn reconcile(
    reconciler: Arc<Reconciler>,
    schedule: ReconcilerSection,
    now: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        let full = match reconciler.run_delta().await {
            Ok(report) => {
                tracing::info!(?report, "delta round done");
                report.full
            }
            Err(e) => {
                tracing::error!(error = %e, "delta round failed");
                false
            }
        };
        if full || last_sweep.is_none_or(|t| t.elapsed() >= schedule.sweep_interval) {
            match reconciler.sweep().await {
                Ok(report) => {
                    tracing::info!(?report, "sweep done");
                    last_sweep = Some(std::time::Instant::now());
                }
                Err(e) => tracing::error!(error = %e, "sweep failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.interval) => {}
            _ = now.notified() => tracing::info!("lifecycle event: reconciling now"),
            _ = shutdown.cancelled() => return,
        }
    }
}

pub(crate) async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        let mut s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        s.recv().await;
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("stopping: finishing the jobs in hand");
    shutdown.cancel();
}
