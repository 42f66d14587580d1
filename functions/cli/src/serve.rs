//! `shadowsync serve`: the whole application in one process, on the embedded store and queue:
//! the webhook listener, the workers, the subscription keeper, the reconciler's schedule and the
//! admin API.

use anyhow::{Context, Result};
use shadowsync_app::{App, Roles, Settings, Storage};
use shadowsync_config::Config;
use shadowsync_notifications::WebhookState;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often `serve` logs its counters (when something happened).
const METRICS_EVERY: Duration = Duration::from_secs(60);

pub async fn serve(config: Config) -> Result<()> {
    let (storage, queue) = Storage::embedded(config.state_path()?, config.provisioner.max_attempts)
        .context("opening the state store")?;
    // This process is the queue's only consumer: jobs a previous run held when it died are
    // handed out again now instead of after their visibility timeout.
    let released = queue.release_in_flight().await?;
    if released > 0 {
        tracing::info!(
            released,
            "jobs left in flight by a previous run are queued again"
        );
    }
    let app = Arc::new(
        App::build(&Settings::from_config(&config), storage)
            .await
            .with_context(|| format!("starting (directory at {})", config.directory.url))?,
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    let mut webhook = WebhookState::new(
        app.queue.clone(),
        app.pending.clone(),
        config.webhook.client_state.clone(),
        config.graph.tenant_id,
    );
    webhook.previous_client_state = config.webhook.previous_client_state.clone();
    let webhook_metrics = webhook.metrics.clone();
    let listen = config.webhook.listen;
    let server = serve_http(listen, shadowsync_notifications::router(webhook), &shutdown)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(%listen, notification_url = %config.webhook.notification_url(), "webhook listening");
    if let Some(partners) = &config.partners {
        tracing::info!(mode = ?partners.mode, ous = ?partners.ous, poll_interval = ?partners.poll_interval,
            "partner accounts in AD become guests in Entra ID");
    }
    let token = crate::admin::write_token(&crate::admin::token_path(config.state_path()?))?;
    let counters = crate::admin::WebhookCounters {
        metrics: webhook_metrics.clone(),
        since: chrono::Utc::now(),
    };
    let admin = crate::admin::router(app.clone(), token, counters);
    let admin_server = serve_http(config.admin.listen, admin, &shutdown)
        .await
        .with_context(|| format!("admin API on {}", config.admin.listen))?;

    // The last counters are logged once the workers have stopped: the jobs in hand count too.
    let workers_stopped = CancellationToken::new();
    let stopped = workers_stopped.clone();
    // The keeper starts once the webhook listens: creating a subscription makes Graph call it.
    let tasks = [
        spawn(&app, &shutdown, |app, stop| async move {
            app.run_workers(stop).await;
            stopped.cancel();
        }),
        spawn(&app, &shutdown, |app, stop| async move {
            app.keep_subscription(stop).await
        }),
        spawn(&app, &shutdown, |app, stop| async move {
            app.run_schedule(Roles::ALL, stop).await
        }),
        spawn(&app, &shutdown, |app, stop| async move {
            app.watch_partners(stop).await
        }),
        spawn(&app, &workers_stopped, move |app, stop| async move {
            crate::metrics::log_periodically(&app, Some(&webhook_metrics), METRICS_EVERY, stop)
                .await
        }),
    ];
    server.await?.context("webhook server")?;
    admin_server.await?.context("admin API")?;
    for task in tasks {
        task.await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs one part of the application until shutdown.
fn spawn<F, Fut>(
    app: &Arc<App>,
    shutdown: &CancellationToken,
    part: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnOnce(Arc<App>, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(part(app.clone(), shutdown.clone()))
}

/// Binds `listen` and serves `router` until shutdown.
pub(crate) async fn serve_http(
    listen: std::net::SocketAddr,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let stop = shutdown.clone();
    Ok(tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    }))
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
